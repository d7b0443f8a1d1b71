/* score.c: per-position scores (ssm_forward_score) and greedy decoding (ssm_generate_greedy).
 * The CPU backend reduces each row of the forward's logits in double; the CUDA backend does
 * both on the device without keeping all the logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* log softmax at target and the entropy (nats) of one row of logits, in double */
static void row_stats(const float *row, int V, int target, double *logp, double *entropy) {
    float mx = row[0];
    for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    double z = 0, ez = 0;
    for (int v = 0; v < V; v++) {
        double d = (double)row[v] - mx, e = exp(d);
        z += e;
        ez += e * d;
    }
    double lz = log(z);
    *logp = (double)row[target] - mx - lz;
    *entropy = lz - ez / z;
}

ssm_status ssm_forward_score(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                             int L, ssm_state *state, float *logp, float *entropy) {
    if (!m || !tokens || !targets || !logp || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward_score: need a model, tokens, targets, logp "
                             "and B, L > 0 (got B %d, L %d)", B, L);
    ssm_status s = ssm_check_lm(m, "ssm_forward_score");
    if (!s) s = ssm_check_tokens(m, tokens, targets, (size_t)B * L);
    if (!s && state) s = ssm_check_state(m, state, B);
    if (!s && state) s = ssm_check_context(m, state, L);
    if (!s) s = m->backend->forward(m, tokens, targets, B, L, state, NULL, logp, entropy);
    if (!s && state) ssm_state_advance(state, L);
    return s;
}

void ssm_cpu_score_rows(const ssm_model *m, const int32_t *targets, size_t T, float *logp,
                        float *entropy) {
    const float *logits = m->acts->logits;
    int V = m->config.vocab_size;
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        double lp = NAN, h = NAN;
        if (targets[t] >= 0) row_stats(logits + t * V, V, targets[t], &lp, &h);
        logp[t] = (float)lp;
        if (entropy) entropy[t] = (float)h;
    }
}

/* the first index of the largest value */
static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

ssm_status ssm_generate_greedy(ssm_model *m, const int32_t *prompt, int B, int P, int n_new,
                               int32_t *out) {
    if (!m || !prompt || B <= 0 || P < 1 || n_new < 0 || (n_new > 0 && !out))
        return ssm_set_error(SSM_ERR_ARG, "ssm_generate_greedy: need a model, a prompt (B, P) with "
                             "B >= 1 and P >= 1, n_new >= 0 and out (got B %d, P %d, n_new %d)",
                             B, P, n_new);
    ssm_status s = ssm_check_causal(m, "ssm_generate_greedy");
    if (!s) s = ssm_check_tokens(m, prompt, NULL, (size_t)B * P);
    if (s || n_new == 0) return s;
    return m->backend->generate_greedy(m, prompt, B, P, n_new, out);
}

/* prefill with the parallel forward, then one step per token */
ssm_status ssm_cpu_generate_greedy(ssm_model *m, const int32_t *prompt, int B, int P, int n_new,
                                   int32_t *out) {
    ssm_status s = SSM_OK;
    int V = m->config.vocab_size;
    ssm_state *st = NULL;
    float *logits = malloc((size_t)B * V * sizeof(float));
    int32_t *col = malloc((size_t)B * sizeof(int32_t));
    if (!logits || !col) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory for greedy decoding");
    if (!s) s = ssm_state_create(&m->config, B, &st);
    if (!s) s = ssm_forward(m, prompt, NULL, B, P, st, NULL);
    if (!s) {
        const float *pl = ssm_model_logits(m);
        for (int b = 0; b < B; b++)
            memcpy(logits + (size_t)b * V, pl + ((size_t)b * P + P - 1) * V, V * sizeof(float));
    }
    for (int i = 0; !s && i < n_new; i++) {
        for (int b = 0; b < B; b++) col[b] = out[(size_t)b * n_new + i] = argmax(logits + (size_t)b * V, V);
        if (i + 1 < n_new) s = ssm_step(m, st, col, logits);
    }
    ssm_state_free(st);
    free(col);
    free(logits);
    return s;
}
