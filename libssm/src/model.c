/* model.c: config, the parameter blob and its tensor table, the reference initialisation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "internal.h"

ssm_config ssm_config_default(int vocab_size, int d_model, int n_layer) {
    ssm_config c = {0};
    c.vocab_size = (vocab_size + 7) / 8 * 8; /* padded to a multiple of 8 */
    c.d_model = d_model;
    c.n_layer = n_layer;
    c.d_state = 16;
    c.d_conv = 4;
    c.expand = 2;
    c.dt_rank = (d_model + 15) / 16; /* ceil(d_model / 16) */
    c.d_inner = c.expand * d_model;
    c.norm_eps = 1e-5f;
    c.dt_min = 0.001f;
    c.dt_max = 0.1f;
    c.dt_init_floor = 1e-4f;
    return c;
}

ssm_status ssm_config_validate(ssm_config *c) {
    if (!c) return ssm_set_error(SSM_ERR_ARG, "config is NULL");
    if (c->d_inner == 0) c->d_inner = c->expand * c->d_model;
    if (c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    struct { const char *name; long value, lo, hi; } checks[] = {
        {"vocab_size", c->vocab_size, 1, 1 << 24}, {"d_model", c->d_model, 1, 1 << 16},
        {"n_layer", c->n_layer, 1, 1024},          {"d_state", c->d_state, 1, 1024},
        {"d_conv", c->d_conv, 1, 64},              {"expand", c->expand, 1, 64},
        {"dt_rank", c->dt_rank, 1, 1 << 16},       {"d_inner", c->d_inner, 1, 1 << 20},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i].value < checks[i].lo || checks[i].value > checks[i].hi)
            return ssm_set_error(SSM_ERR_ARG, "model %s = %ld is out of range [%ld, %ld]",
                                 checks[i].name, checks[i].value, checks[i].lo, checks[i].hi);
    if (!(c->norm_eps > 0 && c->norm_eps < 1))
        return ssm_set_error(SSM_ERR_ARG, "model norm_eps = %g must be in (0, 1)", c->norm_eps);
    if (c->dt_min <= 0 || c->dt_max < c->dt_min)
        return ssm_set_error(SSM_ERR_ARG, "model dt_min/dt_max = %g/%g must satisfy 0 < min <= max",
                             c->dt_min, c->dt_max);
    return SSM_OK;
}

/* The tensor table: names, shapes and offsets in the order of the blob. */
static int add_tensor(ssm_tensor_info *t, int *n, size_t *offset, int decay, int ndim,
                      int64_t s0, int64_t s1, const char *fmt, int layer) {
    ssm_tensor_info *ti = &t[(*n)++];
    snprintf(ti->name, sizeof ti->name, fmt, layer);
    ti->ndim = ndim;
    ti->shape[0] = s0;
    ti->shape[1] = s1;
    ti->shape[2] = 0;
    ti->numel = (size_t)s0 * (size_t)(ndim > 1 ? s1 : 1);
    ti->offset = *offset;
    ti->decay = decay;
    *offset += ti->numel;
    return 0;
}

static void build_tensor_table(ssm_model *m) {
    const ssm_config *c = &m->config;
    int64_t V = c->vocab_size, D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv,
            R = c->dt_rank;
    size_t off = 0;
    int n = 0;
    ssm_tensor_info *t = m->tensors;
    add_tensor(t, &n, &off, 1, 2, V, D, "backbone.embeddings.weight", 0);
    for (int i = 0; i < c->n_layer; i++) {
        add_tensor(t, &n, &off, 0, 1, D, 0, "backbone.layers.%d.norm.weight", i);
        add_tensor(t, &n, &off, 1, 2, 2 * E, D, "backbone.layers.%d.mixer.in_proj.weight", i);
        add_tensor(t, &n, &off, 1, 2, E, K, "backbone.layers.%d.mixer.conv1d.weight", i);
        add_tensor(t, &n, &off, 0, 1, E, 0, "backbone.layers.%d.mixer.conv1d.bias", i);
        add_tensor(t, &n, &off, 1, 2, R + 2 * N, E, "backbone.layers.%d.mixer.x_proj.weight", i);
        add_tensor(t, &n, &off, 1, 2, E, R, "backbone.layers.%d.mixer.dt_proj.weight", i);
        add_tensor(t, &n, &off, 0, 1, E, 0, "backbone.layers.%d.mixer.dt_proj.bias", i);
        add_tensor(t, &n, &off, 0, 2, E, N, "backbone.layers.%d.mixer.A_log", i);
        add_tensor(t, &n, &off, 0, 1, E, 0, "backbone.layers.%d.mixer.D", i);
        add_tensor(t, &n, &off, 1, 2, D, E, "backbone.layers.%d.mixer.out_proj.weight", i);
    }
    add_tensor(t, &n, &off, 0, 1, D, 0, "backbone.norm_f.weight", 0);
    m->n_tensors = n;
    m->n_params = off;
}

/* Point the ssm_params fields at a blob, in the order of the tensor table. */
static void bind_params(const ssm_model *m, float *blob, ssm_params *p) {
    const ssm_tensor_info *t = m->tensors;
    int k = 0;
    p->embedding = blob + t[k++].offset;
    for (int i = 0; i < m->config.n_layer; i++) {
        ssm_layer_params *lp = &p->layers[i];
        lp->norm = blob + t[k++].offset;
        lp->in_proj = blob + t[k++].offset;
        lp->conv_w = blob + t[k++].offset;
        lp->conv_b = blob + t[k++].offset;
        lp->x_proj = blob + t[k++].offset;
        lp->dt_proj_w = blob + t[k++].offset;
        lp->dt_proj_b = blob + t[k++].offset;
        lp->A_log = blob + t[k++].offset;
        lp->D = blob + t[k++].offset;
        lp->out_proj = blob + t[k++].offset;
    }
    p->norm_f = blob + t[k++].offset;
}

ssm_status ssm_model_create(const ssm_config *config, ssm_model **out) {
    if (!out) return ssm_set_error(SSM_ERR_ARG, "ssm_model_create: out is NULL");
    *out = NULL;
    ssm_config c = config ? *config : (ssm_config){0};
    ssm_status s = ssm_config_validate(&c);
    if (s) return s;
    ssm_model *m = calloc(1, sizeof *m);
    if (!m) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the model");
    m->config = c;
    m->device = -1;
    m->tensors = calloc((size_t)c.n_layer * 10 + 2, sizeof *m->tensors);
    m->params.layers = calloc((size_t)c.n_layer, sizeof(ssm_layer_params));
    m->grads.layers = calloc((size_t)c.n_layer, sizeof(ssm_layer_params));
    if (m->tensors) build_tensor_table(m);
    if (m->tensors) {
        m->params_blob = calloc(m->n_params, sizeof(float));
        m->grads_blob = calloc(m->n_params, sizeof(float));
    }
    if (!m->tensors || !m->params.layers || !m->grads.layers || !m->params_blob ||
        !m->grads_blob) {
        ssm_model_free(m);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a model of %d layers x %d",
                             c.n_layer, c.d_model);
    }
    bind_params(m, m->params_blob, &m->params);
    bind_params(m, m->grads_blob, &m->grads);
    *out = m;
    return SSM_OK;
}

void ssm_model_free(ssm_model *m) {
    if (!m) return;
#ifdef SSM_WITH_CUDA
    cuda_model_detach(m);
#endif
    ssm_acts_free(m->acts);
    free(m->tensors);
    free(m->params.layers);
    free(m->grads.layers);
    free(m->params_blob);
    free(m->grads_blob);
    free(m);
}

const ssm_tensor_info *ssm_model_find_tensor(const ssm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void ssm_model_zero_grad(ssm_model *m) {
#ifdef SSM_WITH_CUDA
    if (m->cuda) {
        cuda_model_zero_grad(m);
        return;
    }
#endif
    memset(m->grads_blob, 0, m->n_params * sizeof(float));
}

static void fill_uniform(ssm_rng *rng, float *x, size_t n, double bound) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * ssm_rng_uniform(rng) - 1.0) * bound);
}

/* The reference initialisation: mamba_ssm's MambaLMHeadModel._init_weights and Mamba.__init__. */
ssm_status ssm_model_init(ssm_model *m, uint64_t seed) {
    const ssm_config *c = &m->config;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    ssm_params *p = &m->params;
    /* embeddings ~ N(0, 0.02) */
    for (size_t i = 0; i < (size_t)c->vocab_size * D; i++)
        p->embedding[i] = (float)(0.02 * ssm_rng_normal(&rng));
    for (int i = 0; i < D; i++) p->norm_f[i] = 1.0f;
    for (int l = 0; l < c->n_layer; l++) {
        ssm_layer_params *lp = &p->layers[l];
        for (int i = 0; i < D; i++) lp->norm[i] = 1.0f;
        /* nn.Linear default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) */
        fill_uniform(&rng, lp->in_proj, (size_t)2 * E * D, 1.0 / sqrt(D));
        /* nn.Conv1d default (fan_in = K for depthwise): weight and bias U(+-1/sqrt(K)) */
        fill_uniform(&rng, lp->conv_w, (size_t)E * K, 1.0 / sqrt(K));
        fill_uniform(&rng, lp->conv_b, (size_t)E, 1.0 / sqrt(K));
        fill_uniform(&rng, lp->x_proj, (size_t)(R + 2 * N) * E, 1.0 / sqrt(E));
        /* dt_proj.weight ~ U(+-dt_rank^-0.5) (dt_init "random", dt_scale 1) */
        fill_uniform(&rng, lp->dt_proj_w, (size_t)E * R, 1.0 / sqrt(R));
        for (int e = 0; e < E; e++) {
            /* dt = exp(U(log dt_min, log dt_max)) clamped >= floor; bias = softplus^-1(dt) */
            double lo = log(c->dt_min), hi = log(c->dt_max);
            double dt = exp(lo + ssm_rng_uniform(&rng) * (hi - lo));
            if (dt < c->dt_init_floor) dt = c->dt_init_floor;
            lp->dt_proj_b[e] = (float)(dt + log(-expm1(-dt)));
            /* S4D-real: A_log = log(1..N) on every row; D = 1 */
            for (int n = 0; n < N; n++) lp->A_log[(size_t)e * N + n] = (float)log(n + 1.0);
            lp->D[e] = 1.0f;
        }
        /* out_proj: U(+-1/sqrt(E)) then rescaled by 1/sqrt(n_layer) (one residual per layer) */
        fill_uniform(&rng, lp->out_proj, (size_t)D * E, 1.0 / sqrt(E) / sqrt(c->n_layer));
    }
    return SSM_OK;
}
