/* step.c: recurrent (decode) mode, one token per sequence with conv_state and ssm_state
 * (mamba_ssm's Mamba.step); equal to the parallel forward to rounding. */
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "cpu_ops.h"
#include "internal.h"

ssm_status ssm_state_create(const ssm_config *c, int batch, ssm_state **out) {
    if (!c || !out || batch <= 0) return ssm_set_error(SSM_ERR_ARG, "ssm_state_create: bad arguments");
    ssm_state *s = calloc(1, sizeof *s);
    if (!s) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the recurrent state");
    s->batch = batch;
    s->n_layer = c->n_layer;
    s->d_inner = c->d_inner;
    s->d_conv = c->d_conv;
    s->d_state = c->d_state;
    size_t per = (size_t)c->n_layer * batch * c->d_inner;
    s->conv = calloc(per * c->d_conv, sizeof(float));
    s->ssm = calloc(per * c->d_state, sizeof(float));
    if (!s->conv || !s->ssm) {
        ssm_state_free(s);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the recurrent state");
    }
    *out = s;
    return SSM_OK;
}

void ssm_state_reset(ssm_state *s) {
    size_t per = (size_t)s->n_layer * s->batch * s->d_inner;
    memset(s->conv, 0, per * s->d_conv * sizeof(float));
    memset(s->ssm, 0, per * s->d_state * sizeof(float));
    s->on_device = 0; /* the zeros on the host are the current copy */
}

void ssm_state_free(ssm_state *s) {
    if (!s) return;
#ifdef SSM_WITH_CUDA
    cuda_state_free(s);
#endif
    free(s->conv);
    free(s->ssm);
    free(s);
}

ssm_status ssm_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits) {
    if (!m || !state || !tokens || !logits)
        return ssm_set_error(SSM_ERR_ARG, "ssm_step: need a model, a state, tokens and logits");
    const ssm_config *c = &m->config;
    int B = state->batch;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank,
        V = c->vocab_size, XD = R + 2 * N;
    if (state->n_layer != c->n_layer || state->d_inner != E || state->d_conv != K ||
        state->d_state != N)
        return ssm_set_error(SSM_ERR_SHAPE, "ssm_step: the state was made for another model");
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V)
            return ssm_set_error(SSM_ERR_ARG, "token %d is outside the vocabulary [0, %d)", tokens[b], V);
#ifdef SSM_WITH_CUDA
    if (m->cuda) return cuda_model_step(m, state, tokens, logits);
#endif
    ssm_status st = ssm_state_to_host(state); /* it may come from a GPU run of this model */
    if (st) return st;
    /* per step work buffers (B rows): small, and the decode loop reuses the same sizes */
    size_t need = (size_t)B * (2 * D + 1 + 2 * E + 4 * E + XD);
    float *buf = malloc(need * sizeof(float));
    if (!buf) return ssm_set_error(SSM_ERR_NOMEM, "out of memory in ssm_step");
    float *r = buf, *h = r + (size_t)B * D, *rstd = h + (size_t)B * D, *xz = rstd + B,
          *u = xz + (size_t)B * 2 * E, *dt = u + (size_t)B * E, *y = dt + (size_t)B * E,
          *gated = y + (size_t)B * E, *x_dbl = gated + (size_t)B * E;

    cpu_embedding_forward(r, tokens, m->params.embedding, B, D);
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &m->params.layers[i];
        cpu_rmsnorm_forward(h, rstd, r, p->norm, B, D, c->norm_eps);
        cpu_matmul_forward(xz, 2 * E, 0.0f, h, D, p->in_proj, B, D, 2 * E);
        cpu_conv_step(u, state->conv + (size_t)i * B * E * K, xz, 2 * E, p->conv_w, p->conv_b, B,
                      E, K);
        cpu_matmul_forward(x_dbl, XD, 0.0f, u, E, p->x_proj, B, E, XD);
        cpu_matmul_forward(dt, E, 0.0f, x_dbl, XD, p->dt_proj_w, B, R, E);
        cpu_scan_step(y, state->ssm + (size_t)i * B * E * N, u, dt, p->dt_proj_b, p->A_log,
                      x_dbl + R, x_dbl + R + N, XD, p->D, B, E, N);
        cpu_gate_forward(gated, y, xz + E, 2 * E, B, E);
        cpu_matmul_forward(r, D, 1.0f, gated, E, p->out_proj, B, E, D);
    }
    cpu_rmsnorm_forward(h, rstd, r, m->params.norm_f, B, D, c->norm_eps);
    cpu_matmul_forward(logits, V, 0.0f, h, D, m->params.embedding, B, D, V);
    free(buf);
    return SSM_OK;
}
