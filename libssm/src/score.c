/* score.c: per-position scores (ssm_forward_score) and greedy decoding (ssm_generate_greedy).
 * The CPU path runs ssm_forward and reduces each row of logits in double; a GPU model
 * (model->cuda) does both on the device without keeping all the logits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
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
    size_t T = (size_t)B * L;
    ssm_status s = ssm_check_tokens(m, tokens, targets, T);
    if (s) return s;
#ifdef SSM_WITH_CUDA
    if (m->cuda) return cuda_model_forward(m, tokens, targets, B, L, state, NULL, logp, entropy);
#endif
    if ((s = ssm_forward(m, tokens, NULL, B, L, state, NULL))) return s;
    const float *logits = ssm_model_logits(m);
    int V = m->config.vocab_size;
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++) {
        double lp = NAN, h = NAN;
        if (targets[t] >= 0) row_stats(logits + t * V, V, targets[t], &lp, &h);
        logp[t] = (float)lp;
        if (entropy) entropy[t] = (float)h;
    }
    return SSM_OK;
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
    ssm_status s = ssm_check_tokens(m, prompt, NULL, (size_t)B * P);
    if (s || n_new == 0) return s;
#ifdef SSM_WITH_CUDA
    if (m->cuda) return cuda_model_generate_greedy(m, prompt, B, P, n_new, out);
#endif
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
