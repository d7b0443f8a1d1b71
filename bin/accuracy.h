/* accuracy.h: token accuracy of a model on its task's validation batches, at any length, in
 * windows that carry the recurrent state (ssm-accuracy; tests/unit/test_induction_heads.c). */
#ifndef SSM_ACCURACY_H
#define SSM_ACCURACY_H

#include <stdint.h>

#include "ssm/ssm.h"
#include "ssm/task.h"

typedef struct accuracy_count {
    int64_t correct, scored;
} accuracy_count;

/* Count the scored rows (targets >= 0) of logits (T, ld) whose argmax over the first V ids
 * (the lowest id on ties) is the target. */
void accuracy_add(const float *logits, int ld, int V, const int32_t *targets, size_t T,
                  accuracy_count *count);

/* n_batches validation batches of B sequences of length L, drawn from an rng seeded with seed
 * (the same batches every call), each run through the model in windows of at most `window`
 * positions with the state carried from one window to the next: memory is that of a window,
 * whatever L, and the logits are those of one pass over the whole sequence. */
ssm_status accuracy_eval(ssm_model *model, const ssm_task_ops *ops, void *task, int L, int B,
                         int n_batches, int window, uint64_t seed, accuracy_count *count);

#endif
