/* model.c: config, the parameter blob and its tensor table, the reference initialisation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers.h"
#include "patch.h"

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
    /* mamba_ssm's Mamba2 defaults */
    c.mamba2 = (ssm_mamba2_config){.d_state = 128, .d_conv = 4, .expand = 2, .headdim = 64,
                                   .ngroups = 1, .chunk_size = 256,
                                   .dt_limit = {0.0f, INFINITY}, .A_init = {1.0f, 16.0f}};
    /* attention: heads of 64 (at least one), no position embedding, as NemotronH and Jamba;
     * MLP: NemotronH's relu2 at 4 D */
    int heads = d_model >= 64 ? d_model / 64 : 1;
    c.attention = (ssm_attention_config){.n_heads = heads, .n_kv_heads = heads, .head_dim = 0,
                                         .rotary_dim = 0, .rope_base = 10000.0f,
                                         .max_context = 8192};
    c.mlp = (ssm_mlp_config){.d_ff = 4 * d_model, .activation = SSM_MLP_RELU2};
    /* MoE: Jamba's routing (softmax, top 2 of 8, no renormalisation, aux coefficient 0.001),
     * SwiGLU experts of 2 D, no shared expert */
    c.moe = (ssm_moe_config){.n_experts = 8, .top_k = 2, .d_ff = 2 * d_model,
                             .activation = SSM_MLP_SWIGLU, .routing = SSM_MOE_SOFTMAX,
                             .norm_topk = 0, .routed_scaling = 1.0f, .aux_loss_coef = 0.001f,
                             .shared_d_ff = 0};
    ssm_config_set_kind(&c, SSM_LAYER_MAMBA1);
    return c;
}

ssm_status ssm_config_set_pattern(ssm_config *c, const char *pattern, ssm_layer_kind mamba) {
    if (!c || !pattern) return ssm_set_error(SSM_ERR_ARG, "ssm_config_set_pattern: NULL argument");
    int n = 0;
    for (size_t i = 0; pattern[i]; i++) {
        char ch = pattern[i];
        int second = ch == '+';
        if (second) ch = pattern[++i];
        int k = ch == 'M' ? (int)mamba : ch == '*' ? SSM_LAYER_ATTENTION : ch == '-' ? SSM_LAYER_MLP
              : ch == 'E' ? SSM_LAYER_MOE : -1;
        if (k < 0)
            return ssm_set_error(SSM_ERR_ARG, "model pattern: '%c' at %zu is not a layer (M = Mamba, "
                                 "* = attention, - = MLP, E = mixture of experts; + before - or E: "
                                 "the block's second sublayer)", ch ? ch : ' ', i + 1);
        if (second && (n == 0 || c->second[n - 1] || (k != SSM_LAYER_MLP && k != SSM_LAYER_MOE)))
            return ssm_set_error(SSM_ERR_ARG, "model pattern: '+%c' at %zu: a second sublayer is "
                                 "an MLP (-) or MoE (E) after a block's mixer", ch, i);
        if (n == SSM_MAX_LAYERS)
            return ssm_set_error(SSM_ERR_ARG, "model pattern: more than %d layers", SSM_MAX_LAYERS);
        c->layer_kind[n] = (unsigned char)k;
        c->second[n++] = (unsigned char)second;
    }
    if (n == 0) return ssm_set_error(SSM_ERR_ARG, "model pattern: no layers");
    c->n_layer = n;
    return SSM_OK;
}

int ssm_config_block(const ssm_config *c, int layer) {
    int b = -1;
    for (int i = 0; i <= layer && i < c->n_layer; i++) b += !c->second[i];
    return b;
}

void ssm_config_set_kind(ssm_config *c, ssm_layer_kind kind) {
    for (int i = 0; i < SSM_MAX_LAYERS; i++) c->layer_kind[i] = (unsigned char)kind, c->second[i] = 0;
}

int ssm_config_all(const ssm_config *c, ssm_layer_kind kind) {
    for (int i = 0; i < c->n_layer && i < SSM_MAX_LAYERS; i++)
        if (c->layer_kind[i] != kind) return 0;
    return 1;
}

static int uses(const ssm_config *c, ssm_layer_kind kind) {
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == kind) return 1;
    return 0;
}

typedef struct range_check { const char *name; long value, lo, hi; } range_check;
static ssm_status check_ranges(const range_check *checks, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (checks[i].value < checks[i].lo || checks[i].value > checks[i].hi)
            return ssm_set_error(SSM_ERR_ARG, "model %s = %ld is out of range [%ld, %ld]",
                                 checks[i].name, checks[i].value, checks[i].lo, checks[i].hi);
    return SSM_OK;
}

static ssm_status validate_mamba2(ssm_config *c) {
    ssm_mamba2_config *m = &c->mamba2;
    if (m->d_inner == 0) m->d_inner = m->expand * c->d_model;
    range_check checks[] = {
        {"mamba2.d_state", m->d_state, 1, 1024}, {"mamba2.d_conv", m->d_conv, 1, 64},
        {"mamba2.expand", m->expand, 1, 64},     {"mamba2.headdim", m->headdim, 1, 1 << 16},
        {"mamba2.ngroups", m->ngroups, 1, 1 << 16}, {"mamba2.chunk_size", m->chunk_size, 1, 1 << 16},
        {"mamba2.d_inner", m->d_inner, 1, 1 << 20},
    };
    ssm_status s = check_ranges(checks, sizeof checks / sizeof checks[0]);
    if (s) return s;
    if (m->d_inner % m->headdim)
        return ssm_set_error(SSM_ERR_ARG, "model mamba2.headdim = %d does not divide d_inner = %d "
                             "(expand %d x d_model %d)", m->headdim, m->d_inner, m->expand,
                             c->d_model);
    int H = m->d_inner / m->headdim;
    if (m->nheads && m->nheads != H)
        return ssm_set_error(SSM_ERR_ARG, "model mamba2.nheads = %d but d_inner / headdim = %d",
                             m->nheads, H);
    m->nheads = H;
    if (H % m->ngroups)
        return ssm_set_error(SSM_ERR_ARG, "model mamba2.ngroups = %d does not divide the %d heads "
                             "(d_inner %d / headdim %d)", m->ngroups, H, m->d_inner, m->headdim);
    if (!(m->dt_limit[0] >= 0) || !(m->dt_limit[1] > m->dt_limit[0]))
        return ssm_set_error(SSM_ERR_ARG, "model mamba2.dt_limit = [%g, %g] must satisfy 0 <= min "
                             "< max", m->dt_limit[0], m->dt_limit[1]);
    if (!(m->A_init[0] > 0) || !(m->A_init[1] >= m->A_init[0]) || !isfinite(m->A_init[1]))
        return ssm_set_error(SSM_ERR_ARG, "model mamba2.A_init_range = [%g, %g] must satisfy 0 < "
                             "min <= max", m->A_init[0], m->A_init[1]);
    return SSM_OK;
}

static ssm_status validate_attention(ssm_config *c) {
    ssm_attention_config *a = &c->attention;
    if (a->head_dim == 0 && a->n_heads > 0) a->head_dim = c->d_model / a->n_heads;
    range_check checks[] = {
        {"attention.n_heads", a->n_heads, 1, 1 << 12}, {"attention.n_kv_heads", a->n_kv_heads, 1, 1 << 12},
        {"attention.head_dim", a->head_dim, 1, 1 << 12}, {"attention.rotary_dim", a->rotary_dim, 0, a->head_dim},
        {"attention.max_context", a->max_context, 1, 1 << 26},
    };
    ssm_status s = check_ranges(checks, sizeof checks / sizeof checks[0]);
    if (s) return s;
    if (a->n_heads % a->n_kv_heads)
        return ssm_set_error(SSM_ERR_ARG, "model attention.n_kv_heads = %d does not divide "
                             "attention.n_heads = %d", a->n_kv_heads, a->n_heads);
    if (a->rotary_dim % 2)
        return ssm_set_error(SSM_ERR_ARG, "model attention.rotary_dim = %d must be even",
                             a->rotary_dim);
    if (!(a->rope_base > 1))
        return ssm_set_error(SSM_ERR_ARG, "model attention.rope_base = %g must be > 1",
                             a->rope_base);
    return SSM_OK;
}

static ssm_status validate_moe(const ssm_config *c) {
    const ssm_moe_config *o = &c->moe;
    range_check checks[] = {
        {"moe.n_experts", o->n_experts, 1, SSM_MOE_MAX_EXPERTS}, {"moe.top_k", o->top_k, 1, o->n_experts},
        {"moe.d_ff", o->d_ff, 1, 1 << 20}, {"moe.shared_d_ff", o->shared_d_ff, 0, 1 << 20},
        {"moe.norm_topk", o->norm_topk, 0, 1},
    };
    ssm_status s = check_ranges(checks, sizeof checks / sizeof checks[0]);
    if (s) return s;
    if (o->activation != SSM_MLP_RELU2 && o->activation != SSM_MLP_SWIGLU)
        return ssm_set_error(SSM_ERR_ARG, "model moe.activation %d is not relu2 or swiglu",
                             (int)o->activation);
    if (o->routing != SSM_MOE_SOFTMAX && o->routing != SSM_MOE_SIGMOID)
        return ssm_set_error(SSM_ERR_ARG, "model moe.routing %d is not softmax or sigmoid",
                             (int)o->routing);
    if (!(o->routed_scaling > 0) || !isfinite(o->routed_scaling))
        return ssm_set_error(SSM_ERR_ARG, "model moe.routed_scaling = %g must be > 0",
                             o->routed_scaling);
    if (!(o->aux_loss_coef >= 0) || !isfinite(o->aux_loss_coef))
        return ssm_set_error(SSM_ERR_ARG, "model moe.aux_loss_coef = %g must be >= 0",
                             o->aux_loss_coef);
    if (o->routing == SSM_MOE_SIGMOID && o->aux_loss_coef != 0)
        return ssm_set_error(SSM_ERR_ARG, "model moe.aux_loss_coef = %g: the Switch auxiliary "
                             "loss needs softmax routing (moe.routing sigmoid has none; set 0)",
                             o->aux_loss_coef);
    return SSM_OK;
}

int ssm_io_is_lm(const ssm_config *c) {
    return !c->io.features && c->io.head == SSM_HEAD_LM && !c->io.bidirectional;
}

/* config.io: the input and the head agree with each other and with the loss */
static ssm_status validate_io(ssm_config *c) {
    ssm_io_config *io = &c->io;
    if (io->patch == 0) io->patch = 1;
    range_check checks[] = {
        {"io.features", io->features, 0, 1 << 20}, {"io.patch", io->patch, 1, 1 << 16},
        {"io.head", io->head, SSM_HEAD_LM, SSM_HEAD_CLASSIFY}, {"io.pool", io->pool, 0, SSM_POOL_CLS},
        {"io.loss", io->loss, SSM_LOSS_CE, SSM_LOSS_MAE},
        {"io.outputs", io->outputs, io->head == SSM_HEAD_LM ? 0 : 1, 1 << 20},
    };
    ssm_status s = check_ranges(checks, sizeof checks / sizeof checks[0]);
    if (s) return s;
    if (io->patch > 1 && !io->features)
        return ssm_set_error(SSM_ERR_ARG, "model io.patch = %d needs float inputs (io.features > 0)",
                             io->patch);
    int regression = io->head == SSM_HEAD_REGRESSION;
    if (regression == (io->loss == SSM_LOSS_CE))
        return ssm_set_error(SSM_ERR_ARG, "model io.loss: the %s head takes %s", regression ?
                             "regression" : "token and class", regression ? "mse or mae" : "ce");
    return SSM_OK; /* io.bidirectional: ssm_validate_caduceus */
}

ssm_status ssm_config_validate(ssm_config *c) {
    if (!c) return ssm_set_error(SSM_ERR_ARG, "config is NULL");
    if (c->d_inner == 0) c->d_inner = c->expand * c->d_model;
    if (c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    range_check checks[] = {
        {"vocab_size", c->vocab_size, 1, 1 << 24}, {"d_model", c->d_model, 1, 1 << 16},
        {"n_layer", c->n_layer, 1, SSM_MAX_LAYERS}, {"d_state", c->d_state, 1, 1024},
        {"d_conv", c->d_conv, 1, 64},              {"expand", c->expand, 1, 64},
        {"dt_rank", c->dt_rank, 1, 1 << 16},       {"d_inner", c->d_inner, 1, 1 << 20},
    };
    ssm_status s = check_ranges(checks, sizeof checks / sizeof checks[0]);
    if (s) return s;
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] >= SSM_LAYER_KIND_COUNT || !ssm_layer_kinds[c->layer_kind[i]])
            return ssm_set_error(SSM_ERR_ARG, "model layer %d has an unknown kind (%d)", i,
                                 c->layer_kind[i]);
    for (int i = 0; i < c->n_layer; i++)
        if (c->second[i] && (i == 0 || c->second[i - 1] || (c->layer_kind[i] != SSM_LAYER_MLP &&
                                                            c->layer_kind[i] != SSM_LAYER_MOE)))
            return ssm_set_error(SSM_ERR_ARG, "model layer %d (%s) cannot be a second sublayer: "
                                 "that is an MLP or MoE after a block's mixer", i,
                                 ssm_layer_kind_name(c->layer_kind[i]));
    if (c->inner_norms != 0 && c->inner_norms != 1)
        return ssm_set_error(SSM_ERR_ARG, "model inner_norms = %d must be 0 or 1", c->inner_norms);
    for (int i = 0; c->inner_norms && i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_BIMAMBA)
            return ssm_set_error(SSM_ERR_UNSUPPORTED, "model inner_norms (Jamba's) with a "
                                 "bidirectional layer (%d) is not supported: Caduceus has none", i);
    if (!(c->norm_eps > 0 && c->norm_eps < 1))
        return ssm_set_error(SSM_ERR_ARG, "model norm_eps = %g must be in (0, 1)", c->norm_eps);
    if (c->dt_min <= 0 || c->dt_max < c->dt_min)
        return ssm_set_error(SSM_ERR_ARG, "model dt_min/dt_max = %g/%g must satisfy 0 < min <= max",
                             c->dt_min, c->dt_max);
    if ((s = validate_io(c)) || (s = ssm_patch_validate(c))) return s;
    if (uses(c, SSM_LAYER_MAMBA2) && (s = validate_mamba2(c))) return s;
    if (uses(c, SSM_LAYER_ATTENTION) && (s = validate_attention(c))) return s;
    if (uses(c, SSM_LAYER_MLP)) {
        range_check m[] = {{"mlp.d_ff", c->mlp.d_ff, 1, 1 << 20}};
        if ((s = check_ranges(m, 1))) return s;
        if (c->mlp.activation != SSM_MLP_RELU2 && c->mlp.activation != SSM_MLP_SWIGLU)
            return ssm_set_error(SSM_ERR_ARG, "model mlp.activation %d is not relu2 or swiglu",
                                 (int)c->mlp.activation);
    }
    if (uses(c, SSM_LAYER_MOE) && (s = validate_moe(c))) return s;
    return ssm_validate_caduceus(c);
}

static int n_tensors_of(const ssm_config *c) {
    ssm_patch_tensor patch[SSM_PATCH_TENSORS];
    int n_patch = ssm_patch_tensors(c, patch);
    int n = 2 + 2 * (c->io.features > 0 && !n_patch) + n_patch + 2 * (c->io.head != SSM_HEAD_LM);
    for (int i = 0; i < c->n_layer; i++) n += 1 + ssm_kind_of(c, i)->n_tensors;
    return n;
}

static void add_tensor(ssm_model *m, size_t *offset, int decay, int ndim, const int64_t *shape,
                       const char *name) {
    ssm_tensor_info *ti = &m->tensors[m->n_tensors++];
    snprintf(ti->name, sizeof ti->name, "%s", name);
    ti->ndim = ndim;
    ti->numel = 1;
    for (int d = 0; d < 3; d++) {
        ti->shape[d] = d < ndim ? shape[d] : 0;
        if (d < ndim) ti->numel *= (size_t)shape[d];
    }
    ti->offset = *offset;
    ti->decay = decay;
    *offset += ti->numel;
}

/* The tensor table, from the kinds' lists: names, shapes and offsets in the order of the blob
 * (embedding; per layer its norm then its mixer's tensors; norm_f). */
static void build_tensor_table(ssm_model *m) {
    const ssm_config *c = &m->config;
    size_t off = 0;
    char name[96];
    int64_t emb[2] = {c->vocab_size, c->d_model}, norm[1] = {c->d_model};
    m->n_tensors = 0;
    add_tensor(m, &off, 1, 2, emb, "backbone.embeddings.weight");
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_kind_ops *k = ssm_kind_of(c, i);
        int64_t shape[SSM_MIXER_MAX_TENSORS][3];
        int ndim[SSM_MIXER_MAX_TENSORS];
        k->shapes(c, shape, ndim);
        /* a block's second sublayer: norm2 and mlp.* (mamba_ssm's names) */
        int b = ssm_config_block(c, i), second = c->second[i];
        snprintf(name, sizeof name, "backbone.layers.%d.%s.weight", b, second ? "norm2" : "norm");
        add_tensor(m, &off, 0, 1, norm, name);
        for (int j = 0; j < k->n_tensors; j++) {
            const char *suffix = ssm_kind_suffixes(k, c)[j];
            if (second && !strncmp(suffix, "mixer.", 6))
                snprintf(name, sizeof name, "backbone.layers.%d.mlp.%s", b, suffix + 6);
            else
                snprintf(name, sizeof name, "backbone.layers.%d.%s", b, suffix);
            add_tensor(m, &off, k->decay[j], ndim[j], shape[j], name);
        }
    }
    add_tensor(m, &off, 0, 1, norm, "backbone.norm_f.weight");
    /* config.io's, after the backbone's so a language model's offsets never move */
    const ssm_io_config *io = &c->io;
    ssm_patch_tensor patch[SSM_PATCH_TENSORS];
    int n_patch = ssm_patch_tensors(c, patch); /* the patch encoder replaces input_proj */
    for (int i = 0; i < n_patch; i++)
        add_tensor(m, &off, patch[i].decay, patch[i].ndim, patch[i].shape, patch[i].name);
    if (io->features && !n_patch) {
        int64_t w[2] = {c->d_model, (int64_t)io->patch * io->features};
        add_tensor(m, &off, 1, 2, w, "backbone.input_proj.weight");
        add_tensor(m, &off, 0, 1, norm, "backbone.input_proj.bias");
    }
    if (io->head != SSM_HEAD_LM) {
        int64_t w[2] = {io->outputs, c->d_model}, b[1] = {io->outputs};
        add_tensor(m, &off, 1, 2, w, "head.weight");
        add_tensor(m, &off, 0, 1, b, "head.bias");
    }
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
        for (int j = 0; j < ssm_kind_of(&m->config, i)->n_tensors; j++)
            lp->mixer[j] = blob + t[k++].offset;
    }
    p->norm_f = blob + t[k++].offset;
    p->input_proj = p->input_bias = p->head = p->head_bias = NULL;
    ssm_patch_tensor patch[SSM_PATCH_TENSORS];
    int n_patch = ssm_patch_tensors(&m->config, patch);
    for (int i = 0; i < SSM_PATCH_TENSORS; i++) p->patch[i] = NULL;
    for (int i = 0; i < n_patch; i++) p->patch[patch[i].slot] = blob + t[k++].offset;
    if (m->config.io.features && !n_patch) {
        p->input_proj = blob + t[k++].offset;
        p->input_bias = blob + t[k++].offset;
    }
    if (m->config.io.head != SSM_HEAD_LM) {
        p->head = blob + t[k++].offset;
        p->head_bias = blob + t[k++].offset;
    }
}

size_t ssm_config_n_params(const ssm_config *c) {
    ssm_model m = {.config = *c};
    m.tensors = calloc((size_t)n_tensors_of(c), sizeof *m.tensors);
    if (!m.tensors) return 0;
    build_tensor_table(&m);
    free(m.tensors);
    return m.n_params;
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
    m->backend = &ssm_backend_cpu;
    m->tensors = calloc((size_t)n_tensors_of(&c), sizeof *m->tensors);
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
    m->backend->release(m);
    ssm_acts_free(m->acts);
    free(m->tensors);
    free(m->params.layers);
    free(m->grads.layers);
    free(m->params_blob);
    free(m->grads_blob);
    free(m->decode_bf16);
    free(m->decode_A);
    free(m);
}

const ssm_tensor_info *ssm_model_find_tensor(const ssm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void ssm_model_zero_grad(ssm_model *m) {
    if (m) m->backend->zero_grad(m);
}

/* The reference initialisation: mamba_ssm's MambaLMHeadModel._init_weights and each mixer's
 * __init__ (the kinds' init), drawing from one stream in layer order. */
ssm_status ssm_model_init(ssm_model *m, uint64_t seed) {
    const ssm_config *c = &m->config;
    int D = c->d_model;
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    ssm_params *p = &m->params;
    /* embeddings ~ N(0, 0.02) */
    for (size_t i = 0; i < (size_t)c->vocab_size * D; i++)
        p->embedding[i] = (float)(0.02 * ssm_rng_normal(&rng));
    for (int i = 0; i < D; i++) p->norm_f[i] = 1.0f;
    for (int l = 0; l < c->n_layer; l++) {
        for (int i = 0; i < D; i++) p->layers[l].norm[i] = 1.0f;
        ssm_kind_of(c, l)->init(c, &rng, &p->layers[l]);
    }
    /* the input projection and the head as torch's nn.Linear: U(+-1/sqrt(fan_in)), bias too */
    const ssm_io_config *io = &c->io;
    if (io->features && c->patch.kind == SSM_PATCH_NONE) {
        int fan_in = io->patch * io->features;
        ssm_fill_uniform(&rng, p->input_proj, (size_t)D * fan_in, 1.0 / sqrt(fan_in));
        ssm_fill_uniform(&rng, p->input_bias, (size_t)D, 1.0 / sqrt(fan_in));
    }
    if (io->head != SSM_HEAD_LM) {
        ssm_fill_uniform(&rng, p->head, (size_t)io->outputs * D, 1.0 / sqrt(D));
        ssm_fill_uniform(&rng, p->head_bias, (size_t)io->outputs, 1.0 / sqrt(D));
    }
    ssm_patch_init(c, &rng, p->patch); /* after the others: their draws stay as they were */
    return SSM_OK;
}
