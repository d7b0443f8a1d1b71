/* forward.c: the layer orchestration of the parallel forward and the backward (CPU backend).
 *   r_0 = embedding[tokens]
 *   r_{i+1} = r_i + mixer_i(RMSNorm_i(r_i))        (pre-norm blocks, fp32 residual stream)
 *   logits = RMSNorm_f(r_n) . embedding^T           (tied head)
 * mixer: [x | z] = in_proj(h); u = silu(conv1d(x)); [dt | B | C] = x_proj(u);
 *        dt = dt_proj(dt) (no bias); y = scan(u, dt, B, C) (bias + softplus + D inside);
 *        out = out_proj(y * silu(z)). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cpu_ops.h"
#include "internal.h"

void ssm_acts_free(ssm_activations *a) {
    if (!a) return;
    free(a->blob);
    free(a->layers);
    free(a->tokens);
    free(a->targets);
    free(a);
}

/* Carve the activation blob: first pass counts (base == NULL), second assigns. */
static size_t carve(ssm_activations *a, const ssm_config *c, size_t T, int L, int threads,
                    float *base) {
    size_t D = c->d_model, E = c->d_inner, N = c->d_state, R = c->dt_rank, V = c->vocab_size;
    size_t off = 0;
#define TAKE(ptr, count)                          \
    do {                                          \
        if (base) (ptr) = base + off;             \
        off += ((size_t)(count) + 15) / 16 * 16; /* 64-byte aligned pieces */ \
    } while (0)
    for (int i = 0; i < c->n_layer; i++) {
        ssm_layer_acts *la = &a->layers[i];
        TAKE(la->resid, T * D);
        TAKE(la->normed, T * D);
        TAKE(la->rstd, T);
        TAKE(la->xz, T * 2 * E);
        TAKE(la->u, T * E);
        TAKE(la->x_dbl, T * (R + 2 * N));
        TAKE(la->dt, T * E);
        TAKE(la->y, T * E);
        TAKE(la->gated, T * E);
    }
    TAKE(a->resid_f, T * D);
    TAKE(a->normed_f, T * D);
    TAKE(a->rstd_f, T);
    TAKE(a->logits, T * V);
    TAKE(a->d_resid, T * D);
    TAKE(a->d_normed, T * D);
    TAKE(a->d_xz, T * 2 * E);
    TAKE(a->d_u, T * E);
    TAKE(a->d_x_dbl, T * (R + 2 * N));
    TAKE(a->d_dt, T * E);
    TAKE(a->d_y, T * E);
    TAKE(a->d_gated, T * E);
    TAKE(a->scan_scratch, (size_t)threads * CPU_SCAN_SCRATCH(L, N));
    TAKE(a->dBC_partial, (size_t)threads * T * 2 * N);
#undef TAKE
    return off;
}

ssm_status ssm_acts_plan(ssm_model *m, int B, int L) {
    int threads = omp_get_max_threads();
    ssm_activations *a = m->acts;
    if (a && a->B == B && a->L == L && a->scratch_threads == threads) return SSM_OK;
    size_t T = (size_t)B * L;
    /* a shape that fits the current allocation is re-carved in place (scoring alternates
     * between batch sizes); only a larger one allocates */
    if (a) {
        ssm_activations probe = *a;
        size_t n = carve(&probe, &m->config, T, L, threads, NULL);
        if (n <= a->capacity && T <= a->capacity_T) {
            carve(a, &m->config, T, L, threads, a->blob);
            a->B = B, a->L = L, a->scratch_threads = threads;
            return SSM_OK;
        }
    }
    ssm_acts_free(a);
    m->acts = NULL;
    a = calloc(1, sizeof *a);
    if (!a) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for activations");
    a->layers = calloc(m->config.n_layer, sizeof *a->layers);
    size_t n = a->layers ? carve(a, &m->config, T, L, threads, NULL) : 0;
    a->blob = aligned_alloc(64, n * sizeof(float));
    a->tokens = malloc(T * sizeof(int32_t));
    a->targets = malloc(T * sizeof(int32_t));
    if (!a->layers || !a->blob || !a->tokens || !a->targets) {
        ssm_acts_free(a);
        return ssm_set_error(SSM_ERR_NOMEM,
                             "out of memory for the activations of batch %d x length %d "
                             "(%.1f MiB)", B, L, n * 4.0 / (1 << 20));
    }
    carve(a, &m->config, T, L, threads, a->blob);
    a->B = B;
    a->L = L;
    a->scratch_threads = threads;
    a->capacity = n;
    a->capacity_T = T;
    m->acts = a;
    return SSM_OK;
}

ssm_status ssm_check_tokens(const ssm_model *m, const int32_t *tokens, const int32_t *targets,
                               size_t T) {
    int V = m->config.vocab_size;
    for (size_t t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V)
            return ssm_set_error(SSM_ERR_ARG, "token %d at position %zu is outside the vocabulary [0, %d)",
                                 tokens[t], t, V);
        if (targets && targets[t] >= V)
            return ssm_set_error(SSM_ERR_ARG, "target %d at position %zu is outside the vocabulary [0, %d)",
                                 targets[t], t, V);
    }
    return SSM_OK;
}

static ssm_status check_state(const ssm_model *m, const ssm_state *s, int B) {
    const ssm_config *c = &m->config;
    if (s->batch != B || s->n_layer != c->n_layer || s->d_inner != c->d_inner ||
        s->d_conv != c->d_conv || s->d_state != c->d_state)
        return ssm_set_error(SSM_ERR_SHAPE, "the recurrent state (batch %d) does not fit this "
                             "model and batch %d", s->batch, B);
    return SSM_OK;
}

ssm_status ssm_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B, int L,
                       ssm_state *state, float *loss) {
    if (!m || !tokens || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward: need a model, tokens and B, L > 0");
    if (targets && !loss) return ssm_set_error(SSM_ERR_ARG, "ssm_forward: targets without loss");
    const ssm_config *c = &m->config;
    size_t T = (size_t)B * L;
    ssm_status s = ssm_check_tokens(m, tokens, targets, T);
    if (!s && state) s = check_state(m, state, B);
    if (s) return s;
#ifdef SSM_WITH_CUDA
    if (m->cuda) return cuda_model_forward(m, tokens, targets, B, L, state, loss, NULL, NULL);
#endif
    if ((s = ssm_acts_plan(m, B, L))) return s;
    ssm_activations *a = m->acts;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank,
        V = c->vocab_size, XD = R + 2 * N;
    memcpy(a->tokens, tokens, T * sizeof(int32_t));

    /* r_0 = embedding[tokens] */
    cpu_embedding_forward(a->layers[0].resid, tokens, m->params.embedding, (int)T, D);
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &m->params.layers[i];
        ssm_layer_acts *la = &a->layers[i];
        float *conv_state = state ? state->conv + (size_t)i * B * E * K : NULL;
        float *ssm_state = state ? state->ssm + (size_t)i * B * E * N : NULL;
        /* h = RMSNorm(r) * w */
        cpu_rmsnorm_forward(la->normed, la->rstd, la->resid, p->norm, (int)T, D, c->norm_eps);
        /* [x | z] = in_proj(h) */
        cpu_matmul_forward(la->xz, 2 * E, 0.0f, la->normed, D, p->in_proj, (int)T, D, 2 * E);
        /* u = silu(conv1d(x) + bias) */
        cpu_conv_forward(la->u, la->xz, 2 * E, p->conv_w, p->conv_b, conv_state, B, L, E, K);
        if (conv_state) cpu_conv_state_update(conv_state, la->xz, 2 * E, B, L, E, K);
        /* [dt | B | C] = x_proj(u) */
        cpu_matmul_forward(la->x_dbl, XD, 0.0f, la->u, E, p->x_proj, (int)T, E, XD);
        /* dt = dt_proj(dt) without its bias */
        cpu_matmul_forward(la->dt, E, 0.0f, la->x_dbl, XD, p->dt_proj_w, (int)T, R, E);
        /* y = scan(u, softplus(dt + bias), A, B, C) + D u */
        cpu_scan_forward(la->y, la->u, la->dt, p->dt_proj_b, p->A_log, la->x_dbl + R,
                         la->x_dbl + R + N, XD, p->D, ssm_state, B, L, E, N);
        /* out = out_proj(y * silu(z)); r_{i+1} = r_i + out */
        cpu_gate_forward(la->gated, la->y, la->xz + E, 2 * E, (int)T, E);
        float *next = i + 1 < c->n_layer ? a->layers[i + 1].resid : a->resid_f;
        memcpy(next, la->resid, T * D * sizeof(float));
        cpu_matmul_forward(next, D, 1.0f, la->gated, E, p->out_proj, (int)T, E, D);
    }
    /* logits = RMSNorm_f(r_n) . embedding^T */
    cpu_rmsnorm_forward(a->normed_f, a->rstd_f, a->resid_f, m->params.norm_f, (int)T, D,
                        c->norm_eps);
    cpu_matmul_forward(a->logits, V, 0.0f, a->normed_f, D, m->params.embedding, (int)T, D, V);

    a->has_targets = targets != NULL;
    a->has_state = state != NULL;
    a->backward_ready = 0;
    if (targets) {
        memcpy(a->targets, targets, T * sizeof(int32_t));
        int64_t count;
        double l = cpu_cross_entropy_forward(a->logits, targets, (int)T, V, &count);
        if (!isfinite(l))
            return ssm_set_error(SSM_ERR_NUMERIC, "the loss is not finite (%g): the model "
                                 "diverged; lower the learning rate", l);
        *loss = (float)l;
        a->backward_ready = count > 0;
    }
    return SSM_OK;
}

const float *ssm_model_logits(const ssm_model *m) {
#ifdef SSM_WITH_CUDA
    if (m && m->cuda) return cuda_model_logits((ssm_model *)m);
#endif
    return m && m->acts ? m->acts->logits : NULL;
}

ssm_status ssm_backward(ssm_model *m) {
#ifdef SSM_WITH_CUDA
    if (m && m->cuda) return cuda_model_backward(m);
#endif
    ssm_activations *a = m ? m->acts : NULL;
    if (!a || !a->has_targets || !a->backward_ready)
        return ssm_set_error(SSM_ERR_ARG, "ssm_backward needs a forward with targets (with at "
                             "least one scored position) just before it");
    if (a->has_state)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm_backward after a forward from a carried "
                             "state is not supported");
    const ssm_config *c = &m->config;
    int B = a->B, L = a->L, T = B * L;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank,
        V = c->vocab_size, XD = R + 2 * N;
    int64_t count = 0;
    for (int t = 0; t < T; t++) count += a->targets[t] >= 0;

    /* d logits = (softmax - onehot) / count, in place */
    cpu_cross_entropy_backward(a->logits, a->targets, T, V, 1.0f / (float)count);
    /* logits = h_f . emb^T: d h_f = d logits . emb; d emb += d logits^T . h_f */
    cpu_matmul_backward(a->d_normed, D, 0.0f, m->grads.embedding, a->logits, V, a->normed_f, D,
                        m->params.embedding, T, D, V);
    memset(a->d_resid, 0, (size_t)T * D * sizeof(float));
    cpu_rmsnorm_backward(a->d_resid, m->grads.norm_f, a->d_normed, a->resid_f, m->params.norm_f,
                         a->rstd_f, T, D);
    for (int i = c->n_layer - 1; i >= 0; i--) {
        const ssm_layer_params *p = &m->params.layers[i];
        ssm_layer_params *g = &m->grads.layers[i];
        ssm_layer_acts *la = &a->layers[i];
        /* r_{i+1} = r_i + out_proj(gated): d gated = d r . out_proj */
        cpu_matmul_backward(a->d_gated, E, 0.0f, g->out_proj, a->d_resid, D, la->gated, E,
                            p->out_proj, T, E, D);
        /* gated = y * silu(z) */
        cpu_gate_backward(a->d_y, a->d_xz + E, 2 * E, a->d_gated, la->y, la->xz + E, T, E);
        /* the scan: d u, d dt, d B, d C and the scan's own parameters */
        cpu_scan_backward(a->d_u, a->d_dt, a->d_x_dbl + R, a->d_x_dbl + R + N, g->dt_proj_b,
                          g->A_log, g->D, a->d_y, la->u, la->dt, p->dt_proj_b, p->A_log,
                          la->x_dbl + R, la->x_dbl + R + N, XD, p->D, B, L, E, N,
                          a->scan_scratch, a->dBC_partial, a->scratch_threads);
        /* dt = dt_proj(x_dbl[:, :R]) */
        cpu_matmul_backward(a->d_x_dbl, XD, 0.0f, g->dt_proj_w, a->d_dt, E, la->x_dbl, XD,
                            p->dt_proj_w, T, R, E);
        /* x_dbl = x_proj(u): d u += d x_dbl . x_proj */
        cpu_matmul_backward(a->d_u, E, 1.0f, g->x_proj, a->d_x_dbl, XD, la->u, E, p->x_proj, T,
                            E, XD);
        /* u = silu(conv1d(x)) */
        cpu_conv_backward(a->d_xz, g->conv_w, g->conv_b, a->d_u, la->xz, 2 * E, p->conv_w,
                          p->conv_b, B, L, E, K);
        /* [x | z] = in_proj(h) */
        cpu_matmul_backward(a->d_normed, D, 0.0f, g->in_proj, a->d_xz, 2 * E, la->normed, D,
                            p->in_proj, T, D, 2 * E);
        /* h = RMSNorm(r): d r += ... (the residual path keeps its gradient) */
        cpu_rmsnorm_backward(a->d_resid, g->norm, a->d_normed, la->resid, p->norm, la->rstd, T,
                             D);
    }
    cpu_embedding_backward(m->grads.embedding, a->tokens, a->d_resid, T, D);
    a->backward_ready = 0; /* the logits now hold their gradient */
    return SSM_OK;
}
