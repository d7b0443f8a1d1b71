/* backend_cpu.c: the CPU backend's table (fp32, OpenMP threads, BLAS). */
#include <string.h>

#include "internal.h"

static void cpu_zero_grad(ssm_model *m) { memset(m->grads_blob, 0, m->n_params * sizeof(float)); }
static ssm_status cpu_sync_host(ssm_model *m, ssm_adamw *opt) { return SSM_OK; } /* it is the host */
/* the CPU plan always holds the backward's buffers */
static ssm_status cpu_reserve(ssm_model *m, int B, int L, int training) { return ssm_acts_plan(m, B, L); }
static size_t cpu_peak(const ssm_model *m) { return 0; }
static void cpu_release(ssm_model *m) {}
static ssm_status cpu_supports(const ssm_config *c) { return SSM_OK; } /* every kind */

const ssm_backend ssm_backend_cpu = {
    .name = "cpu",
    .supports = cpu_supports,
    .forward = ssm_cpu_forward,
    .logits = ssm_cpu_logits,
    .backward = ssm_cpu_backward,
    .zero_grad = cpu_zero_grad,
    .step = ssm_cpu_step,
    .adamw_step = ssm_cpu_adamw_step,
    .generate_greedy = ssm_cpu_generate_greedy,
    .sync_host = cpu_sync_host,
    .reserve = cpu_reserve,
    .peak = cpu_peak,
    .release = cpu_release,
    .routing = ssm_cpu_moe_routing,
    .aux_loss = ssm_cpu_moe_aux_loss,
};
