/* layers.c: the table of layer kinds, their names, and the recurrent state built from the
 * kinds' slot sizes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cpu_ops.h"
#include "layers.h"

/* one entry per SSM_LAYER_KIND_MAP line, in its order */
const ssm_layer_kind_ops *const ssm_layer_kinds[SSM_LAYER_KIND_COUNT] = {
    [SSM_LAYER_MAMBA1] = &ssm_mamba1_kind,
    [SSM_LAYER_MAMBA2] = &ssm_mamba2_kind,
    [SSM_LAYER_ATTENTION] = &ssm_attention_kind,
    [SSM_LAYER_MLP] = &ssm_mlp_kind,
    [SSM_LAYER_MOE] = &ssm_moe_kind,
    [SSM_LAYER_BIMAMBA] = &ssm_bimamba_kind,
};

static const char *const kind_names[SSM_LAYER_KIND_COUNT] = {
#define SSM_KIND_NAME(id, name) [SSM_LAYER_##id] = name,
    SSM_LAYER_KIND_MAP(SSM_KIND_NAME)
#undef SSM_KIND_NAME
};

const char *ssm_layer_kind_name(int kind) {
    return kind >= 0 && kind < SSM_LAYER_KIND_COUNT ? kind_names[kind] : "unknown";
}

int ssm_layer_kind_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "mamba")) return SSM_LAYER_MAMBA1; /* the first version's name */
    for (int k = 0; k < SSM_LAYER_KIND_COUNT; k++)
        if (!strcmp(name, kind_names[k])) return k;
    return -1;
}

void ssm_kind_shapes(const int64_t (*rows_cols)[2], int n, int64_t shape[][3], int *ndim) {
    for (int j = 0; j < n; j++) {
        shape[j][0] = rows_cols[j][0], shape[j][1] = rows_cols[j][1], shape[j][2] = 0;
        ndim[j] = rows_cols[j][1] ? 2 : 1;
    }
}

void ssm_fill_uniform(ssm_rng *rng, float *x, size_t n, double bound) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * ssm_rng_uniform(rng) - 1.0) * bound);
}

float ssm_init_dt_bias(const ssm_config *c, ssm_rng *rng) {
    double lo = log(c->dt_min), hi = log(c->dt_max);
    double dt = exp(lo + ssm_rng_uniform(rng) * (hi - lo));
    if (dt < c->dt_init_floor) dt = c->dt_init_floor;
    return (float)(dt + log(-expm1(-dt)));
}

float *ssm_carve(ssm_carver *cv, size_t count) {
    float *p = cv->base ? cv->base + cv->off : NULL;
    cv->off += (count + 15) / 16 * 16; /* 64-byte aligned pieces */
    return p;
}

/* ---- recurrent state -------------------------------------------------------------------- */

ssm_status ssm_state_create(const ssm_config *config, int batch, ssm_state **out) {
    if (!config || !out || batch <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_state_create: need a config, out and batch > 0");
    *out = NULL;
    ssm_config c = *config;
    ssm_status st = ssm_config_validate(&c);
    if (st) return st;
    ssm_state *s = calloc(1, sizeof *s);
    if (!s) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the recurrent state");
    s->batch = batch;
    s->n_layer = c.n_layer;
    s->config = c;
    s->d_inner = c.d_inner, s->d_conv = c.d_conv, s->d_state = c.d_state;
    size_t nl = (size_t)c.n_layer;
    s->conv_off = calloc(nl, sizeof(size_t));
    s->ssm_off = calloc(nl, sizeof(size_t));
    s->conv_per = calloc(nl, sizeof(size_t));
    s->ssm_per = calloc(nl, sizeof(size_t));
    if (s->conv_off && s->ssm_off && s->conv_per && s->ssm_per) {
        for (int i = 0; i < c.n_layer; i++) {
            int channels;
            ssm_kind_of(&c, i)->state_size(&c, &s->conv_per[i], &s->ssm_per[i], &channels);
            s->conv_off[i] = s->conv_total;
            s->ssm_off[i] = s->ssm_total;
            s->conv_total += s->conv_per[i] * batch;
            s->ssm_total += s->ssm_per[i] * batch;
        }
        s->conv = calloc(s->conv_total ? s->conv_total : 1, sizeof(float));
        s->ssm = calloc(s->ssm_total ? s->ssm_total : 1, sizeof(float));
        s->pos = calloc((size_t)batch, sizeof(int64_t));
    }
    if (!s->conv || !s->ssm || !s->pos) {
        ssm_state_free(s);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the recurrent state of %d "
                             "sequences", batch);
    }
    *out = s;
    return SSM_OK;
}

void ssm_state_reset(ssm_state *s) {
    if (!s) return;
    memset(s->conv, 0, s->conv_total * sizeof(float));
    memset(s->ssm, 0, s->ssm_total * sizeof(float));
    memset(s->pos, 0, (size_t)s->batch * sizeof(int64_t));
    s->on_device = 0; /* the zeros on the host are the current copy */
}

void ssm_state_free(ssm_state *s) {
    if (!s) return;
#ifdef SSM_WITH_CUDA
    cuda_state_free(s);
#endif
    free(s->conv);
    free(s->ssm);
    free(s->conv_off);
    free(s->ssm_off);
    free(s->conv_per);
    free(s->ssm_per);
    free(s->pos);
    free(s->step_work); /* ssm_cpu_step's work buffer */
    free(s);
}

int ssm_state_batch(const ssm_state *s) { return s ? s->batch : 0; }

int64_t ssm_state_position(const ssm_state *s, int row) {
    return s && row >= 0 && row < s->batch ? s->pos[row] : 0;
}

void ssm_state_advance(ssm_state *s, int L) {
    for (int b = 0; b < s->batch; b++) s->pos[b] += L;
}

ssm_layer_state ssm_state_layer(const ssm_state *s, int layer) {
    return (ssm_layer_state){s->conv + s->conv_off[layer], s->ssm + s->ssm_off[layer], s->pos, NULL,
                             layer};
}

int ssm_state_fits(const ssm_state *s, const ssm_config *c) {
    const ssm_config *a = &s->config;
    if (a->n_layer != c->n_layer || memcmp(a->layer_kind, c->layer_kind, (size_t)c->n_layer))
        return 0;
    /* the options of each kind present: the ones its state depends on */
    int kinds[SSM_LAYER_KIND_COUNT] = {0};
    for (int i = 0; i < c->n_layer; i++) kinds[c->layer_kind[i]] = 1;
    if (kinds[SSM_LAYER_MAMBA1] && (a->d_inner != c->d_inner || a->d_conv != c->d_conv ||
                                    a->d_state != c->d_state))
        return 0;
    if (kinds[SSM_LAYER_MAMBA2] && memcmp(&a->mamba2, &c->mamba2, sizeof c->mamba2)) return 0;
    if (kinds[SSM_LAYER_ATTENTION] && memcmp(&a->attention, &c->attention, sizeof c->attention))
        return 0;
    return 1;
}

ssm_status ssm_state_copy_row(ssm_state *dst, int to, const ssm_state *src, int from) {
    if (!dst || !src || to < 0 || to >= dst->batch || from < 0 || from >= src->batch)
        return ssm_set_error(SSM_ERR_ARG, "ssm_state_copy_row: row %d of %d -> row %d of %d is "
                             "out of range", from, src ? src->batch : 0, to, dst ? dst->batch : 0);
    if (!ssm_state_fits(dst, &src->config))
        return ssm_set_error(SSM_ERR_SHAPE, "ssm_state_copy_row: the states were made for "
                             "different models");
    if (src->on_device || dst->on_device)
        return ssm_set_error(SSM_ERR_ARG, "ssm_state_copy_row: a state is on the GPU; call "
                             "ssm_state_to_host first");
    for (int i = 0; i < src->n_layer; i++) {
        ssm_layer_state a = ssm_state_layer(dst, i), b = ssm_state_layer(src, i);
        memcpy(a.conv + to * dst->conv_per[i], b.conv + from * src->conv_per[i],
               src->conv_per[i] * sizeof(float));
        memcpy(a.ssm + to * dst->ssm_per[i], b.ssm + from * src->ssm_per[i],
               src->ssm_per[i] * sizeof(float));
    }
    dst->pos[to] = src->pos[from];
    return SSM_OK;
}

ssm_status ssm_state_reset_row(ssm_state *s, int row) {
    if (!s || row < 0 || row >= s->batch)
        return ssm_set_error(SSM_ERR_ARG, "ssm_state_reset_row: row %d is out of range", row);
    if (s->on_device)
        return ssm_set_error(SSM_ERR_ARG, "ssm_state_reset_row: the state is on the GPU; call "
                             "ssm_state_to_host first");
    for (int i = 0; i < s->n_layer; i++) {
        ssm_layer_state a = ssm_state_layer(s, i);
        memset(a.conv + row * s->conv_per[i], 0, s->conv_per[i] * sizeof(float));
        memset(a.ssm + row * s->ssm_per[i], 0, s->ssm_per[i] * sizeof(float));
    }
    s->pos[row] = 0;
    return SSM_OK;
}

/* Why two: scores, logits and hidden states must not depend on the batch they were computed in
 * (ssm-score, ssm-embed), which the row-exact tiles give at about 15% of the forward's time at
 * the 130M shape (they pack W again for every 64 rows). A training forward (a loss with
 * targets, no carried state) needs no such guarantee, and takes the plain SGEMM. */
void ssm_pass_matmul(const ssm_pass *ps, float *out, int ld_out, float beta, const float *in,
                     int ld_in, const float *W, int n_in, int n_out) {
    if (ps->exact)
        cpu_matmul_forward_exact(out, ld_out, beta, in, ld_in, W, ps->B, ps->L, n_in, n_out, ps->mm);
    else
        cpu_matmul_forward(out, ld_out, beta, in, ld_in, W, (int)ps->T, n_in, n_out);
}
