/* modelcheck.h: checks of a whole model through the public API, shared by the tests of the
 * layer kinds: the backward against finite differences, step mode and carried windows against
 * the parallel forward. */
#ifndef SSM_MODELCHECK_H
#define SSM_MODELCHECK_H

#include "testutil.h"

/* ssm_forward's loss, checked against the mean cross-entropy of its logits computed in double
 * plus moe.aux_loss_coef times ssm_model_aux_loss; returns the double value. */
double tu_loss_at(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L);

/* For each tensor: `samples` entries (half the largest |gradient|, the rest spread), each
 * against (loss(p + h) - loss(p - h)) / 2h, h = 1e-2 max(|p|, rms of the tensor): relative
 * norm error < tol and a nonzero sampled gradient; then the directional derivative along a
 * random unit direction of the whole tensor. A perturbation that changes a MoE layer's routing
 * (the loss jumps there) is left out and counted; a MoE selection bias must have gradient 0;
 * empty tensors are skipped. */
void tu_check_gradients(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L,
                        int samples, double tol);

/* The logits (B, L, V) of a forward without state, in a new array. */
float *tu_logits_of(ssm_model *m, const int32_t *tok, int B, int L);
/* L steps of B random sequences = the parallel forward (rel err < 1e-5), and the state
 * mattered. */
void tu_check_step(ssm_model *m, int B, int L, uint64_t seed);
/* Windows of these sizes with a carried state = one pass (rel err < 1e-5); a step after them
 * continues like the longer forward. */
void tu_check_windows(ssm_model *m, int B, const int *windows, int nw, uint64_t seed);

/* A model of this config, initialised from seed and every parameter moved by U(-0.1, 0.1). */
ssm_model *tu_noisy_model(const ssm_config *c, uint64_t seed);
/* Both models give bitwise the same logits on random tokens (B, L). */
void tu_assert_same_logits(ssm_model *a, ssm_model *b, int B, int L, uint64_t seed);
/* The safetensors file again without its metadata (as transformers or a conversion of a
 * torch state_dict leaves it), F32. */
void tu_copy_without_metadata(const char *from, const char *to);
/* A config.json of this text beside a one-tensor model.safetensors in the group's dir/name:
 * ssm_checkpoint_load refuses it with a message naming key. */
void tu_expect_config_refused(const char *name, const char *json, const char *key);
/* A fresh temporary directory for a test group (setup) and its removal (teardown). */
int tu_group_tmpdir(void **state);
int tu_group_rmdir(void **state);
/* tu_group_tmpdir's directory / name (one of a few rotating buffers) */
const char *tu_group_path(const char *name);

#endif
