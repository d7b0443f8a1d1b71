/* backend_cuda.h: what the CPU-side library calls in the CUDA backend (libssm/cuda/model.cu).
 * Declared only in CUDA builds (SSM_WITH_CUDA); the public entry points in forward.c, step.c,
 * optimizer.c, model.c and device.c send a model whose m->cuda is set here. */
#ifndef SSM_BACKEND_CUDA_H
#define SSM_BACKEND_CUDA_H

#include "internal.h"

#if defined(SSM_WITH_CUDA) || defined(__CUDACC__)
#ifdef __cplusplus
extern "C" {
#endif
/* SSM_ERR_UNSUPPORTED, with one message, for a config this backend cannot run. */
ssm_status cuda_model_supports(const ssm_config *c);
/* Create m->cuda on `device` and upload the parameters (and opt's moments when opt != NULL). */
ssm_status cuda_model_attach(ssm_model *m, ssm_adamw *opt, int device);
/* Free m->cuda (callers sync first when they need the device's values). */
void cuda_model_detach(ssm_model *m);
ssm_status cuda_model_sync_host(ssm_model *m, ssm_adamw *opt);
ssm_status cuda_model_reserve(ssm_model *m, int B, int L, int training);
size_t cuda_model_peak(const ssm_model *m);
/* ssm_forward and ssm_forward_score in one: loss (with targets) or logp/entropy (score). With
 * neither, the full logits are kept for cuda_model_logits. */
ssm_status cuda_model_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                              int L, ssm_state *state, float *loss, float *logp, float *entropy);
const float *cuda_model_logits(ssm_model *m);
ssm_status cuda_model_backward(ssm_model *m);
void cuda_model_zero_grad(ssm_model *m);
ssm_status cuda_model_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits);
ssm_status cuda_model_adamw_step(ssm_adamw *o, ssm_model *m, float *grad_norm);
ssm_status cuda_model_generate_greedy(ssm_model *m, const int32_t *prompt, int B, int P,
                                      int n_new, int32_t *out);
ssm_status cuda_state_to_host(ssm_state *s);
void cuda_state_free(ssm_state *s);
int cuda_device_count(void);
/* the last forward's routing of MoE layer `layer`, and its Switch auxiliary loss (moe.cu) */
ssm_status cuda_model_routing(const ssm_model *m, int layer, int32_t *experts, float *weights);
double cuda_model_aux_loss(const ssm_model *m);
#ifdef __cplusplus
}
#endif
#endif
#endif
