/* step.c: recurrent (decode) mode, one token per sequence, the block loop over the layers'
 * kinds with their state slots (mamba_ssm's Mamba.step, Mamba2.step); equal to the parallel
 * forward to rounding. */
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "layers.h"

ssm_status ssm_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits) {
    if (!m || !state || !tokens || !logits)
        return ssm_set_error(SSM_ERR_ARG, "ssm_step: need a model, a state, tokens and logits");
    const ssm_config *c = &m->config;
    int B = state->batch, V = c->vocab_size;
    int same = state->n_layer == c->n_layer && state->d_inner == c->d_inner &&
               state->d_conv == c->d_conv && state->d_state == c->d_state &&
               !memcmp(&state->config.mamba2, &c->mamba2, sizeof c->mamba2);
    for (int i = 0; same && i < c->n_layer; i++)
        same = state->config.layer_kind[i] == c->layer_kind[i];
    if (!same) return ssm_set_error(SSM_ERR_SHAPE, "ssm_step: the state was made for another model");
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V)
            return ssm_set_error(SSM_ERR_ARG, "token %d is outside the vocabulary [0, %d)", tokens[b], V);
    return m->backend->step(m, state, tokens, logits);
}

ssm_status ssm_cpu_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits) {
    const ssm_config *c = &m->config;
    int B = state->batch, D = c->d_model, V = c->vocab_size;
    ssm_status st = ssm_state_to_host(state); /* it may come from a GPU run of this model */
    if (st) return st;
    /* per step work buffers (B rows): the block's, then the largest kind's */
    size_t work = 0;
    for (int i = 0; i < c->n_layer; i++) {
        size_t w = ssm_kind_of(c, i)->step_floats(c, B);
        work = w > work ? w : work;
    }
    float *buf = malloc(((size_t)B * (2 * D + 1) + work) * sizeof(float));
    if (!buf) return ssm_set_error(SSM_ERR_NOMEM, "out of memory in ssm_step");
    float *r = buf, *h = r + (size_t)B * D, *rstd = h + (size_t)B * D, *w = rstd + B;

    cpu_embedding_forward(r, tokens, m->params.embedding, B, D);
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &m->params.layers[i];
        ssm_layer_state ls = ssm_state_layer(state, i);
        /* h = RMSNorm(r); r += mixer(h) */
        cpu_rmsnorm_forward(h, rstd, r, p->norm, B, D, c->norm_eps);
        ssm_kind_of(c, i)->step(c, p, h, r, &ls, B, w);
    }
    cpu_rmsnorm_forward(h, rstd, r, m->params.norm_f, B, D, c->norm_eps);
    cpu_matmul_forward(logits, V, 0.0f, h, D, m->params.embedding, B, D, V);
    free(buf);
    return SSM_OK;
}
