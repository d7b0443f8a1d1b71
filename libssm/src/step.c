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
    ssm_status s0 = ssm_check_lm(m, "ssm_step");
    if (!s0) s0 = ssm_check_causal(m, "ssm_step");
    if (s0) return s0;
    if (!ssm_state_fits(state, c)) return ssm_set_error(SSM_ERR_SHAPE, "ssm_step: the state was made for another model");
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V)
            return ssm_set_error(SSM_ERR_ARG, "token %d is outside the vocabulary [0, %d)", tokens[b], V);
    ssm_status s = ssm_check_context(m, state, 1);
    if (!s) s = m->backend->step(m, state, tokens, logits);
    if (!s) ssm_state_advance(state, 1);
    return s;
}

ssm_status ssm_cpu_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits) {
    const ssm_config *c = &m->config;
    int B = state->batch, D = c->d_model, V = c->vocab_size;
    ssm_status st = ssm_state_to_host(state); /* it may come from a GPU run of this model */
    if (st) return st;
    /* the step's work buffer (B rows): the block's r, h, rstd, then the largest kind's; kept
     * in the state (allocated on its first step, reallocated only if a step needs more), so
     * that decoding allocates nothing per token */
    size_t rows = ((size_t)B * D + 15) & ~(size_t)15, rstd_n = ((size_t)B + 15) & ~(size_t)15;
    size_t work = 0;
    for (int i = 0; i < c->n_layer; i++) {
        size_t w = ssm_kind_of(c, i)->step_floats(c, B);
        work = w > work ? w : work;
    }
    size_t need = 2 * rows + rstd_n + work;
    if (state->step_work_floats < need) {
        free(state->step_work);
        state->step_work_floats = 0;
        state->step_work = aligned_alloc(64, ((need + 15) & ~(size_t)15) * sizeof(float));
        if (!state->step_work) return ssm_set_error(SSM_ERR_NOMEM, "out of memory in ssm_step");
        state->step_work_floats = need;
    }
    float *r = state->step_work, *h = r + rows, *rstd = h + rows, *w = rstd + rstd_n;
    /* the products' weights: fp32, or the bf16 copy (ssm_model_set_decode_weights) */
    ssm_step_weights sw = {m->params_blob, m->decode_bf16, m->decode_A};

    cpu_embedding_forward(r, tokens, m->params.embedding, B, D);
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &m->params.layers[i];
        ssm_layer_state ls = ssm_state_layer(state, i);
        ls.weights = &sw;
        /* h = RMSNorm(r); r += mixer(h) */
        cpu_rmsnorm_forward(h, rstd, r, p->norm, B, D, c->norm_eps);
        ssm_kind_of(c, i)->step(c, p, h, r, &ls, B, w);
    }
    cpu_rmsnorm_forward(h, rstd, r, m->params.norm_f, B, D, c->norm_eps);
    /* the head (tied to the embedding): V x D read once for the B rows */
    ssm_step_rows(&sw, logits, V, 0.0f, h, D, m->params.embedding, B, D, V);
    return SSM_OK;
}
