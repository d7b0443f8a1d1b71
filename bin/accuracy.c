/* accuracy.c: see accuracy.h. */
#include "accuracy.h"

#include <stdlib.h>
#include <string.h>

void accuracy_add(const float *logits, int ld, int V, const int32_t *targets, size_t T,
                  accuracy_count *count) {
    for (size_t t = 0; t < T; t++) {
        if (targets[t] < 0) continue;
        const float *row = logits + t * ld;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        count->scored++;
        count->correct += best == targets[t];
    }
}

ssm_status accuracy_eval(ssm_model *model, const ssm_task_ops *ops, void *task, int L, int B,
                         int n_batches, int window, uint64_t seed, accuracy_count *count) {
    if (L < 1 || B < 1 || n_batches < 1 || window < 1)
        return ssm_set_error(SSM_ERR_ARG, "accuracy: length %d, batch %d, batches %d and window %d "
                             "must all be positive", L, B, n_batches, window);
    int W = window < L ? window : L, V = ops->vocab_size(task), ld = model->config.vocab_size;
    size_t n = (size_t)B * L, nw = (size_t)B * W;
    ssm_batch batch = {.B = B, .L = L, .tokens = malloc(n * sizeof(int32_t)),
                       .targets = malloc(n * sizeof(int32_t))};
    int32_t *wtok = malloc(nw * sizeof(int32_t)), *wtgt = malloc(nw * sizeof(int32_t));
    ssm_state *state = NULL;
    ssm_status s = batch.tokens && batch.targets && wtok && wtgt
                       ? ssm_state_create(&model->config, B, &state)
                       : ssm_set_error(SSM_ERR_NOMEM, "accuracy: out of memory for %d x %d tokens", B, L);
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    *count = (accuracy_count){0, 0};
    for (int k = 0; !s && k < n_batches; k++) {
        if ((s = ops->next_batch(task, SSM_SPLIT_VALID, &rng, &batch))) break;
        ssm_state_reset(state);
        for (int off = 0; !s && off < L; off += W) {
            int w = L - off < W ? L - off : W; /* (B, w) window of each sequence */
            for (int b = 0; b < B; b++) {
                memcpy(wtok + (size_t)b * w, batch.tokens + (size_t)b * L + off, w * sizeof(int32_t));
                memcpy(wtgt + (size_t)b * w, batch.targets + (size_t)b * L + off, w * sizeof(int32_t));
            }
            if (!(s = ssm_forward(model, wtok, NULL, B, w, state, NULL)))
                accuracy_add(ssm_model_logits(model), ld, V, wtgt, (size_t)B * w, count);
        }
    }
    ssm_state_free(state);
    free(wtok);
    free(wtgt);
    free(batch.tokens);
    free(batch.targets);
    return s;
}
