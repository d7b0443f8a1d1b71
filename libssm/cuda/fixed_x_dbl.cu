// fixed_x_dbl.cu: x_dbl of the Mamba paper's ablation without selection (model.selective:
// false) on the GPU, the twin of m1_fixed_x_dbl and m1_fixed_x_dbl_backward in
// libssm/src/mamba1.c. x_proj is applied to a constant input of ones instead of u, so
// x_dbl[t] = [dt | B | C] is the same row at every position:
//   forward:  x_dbl[t, j] = sum_e x_proj[j, e]               (every t)
//   backward: d x_proj[j, e] += sum_t d x_dbl[t, j]          (every e; u gets nothing)
// A block per column j, sums in a fixed order (deterministic). x_proj and its gradient fp32
// (the master weights, as the CPU), x_dbl and d x_dbl bf16.
#include "common.cuh"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int NT = 256;

__global__ void __launch_bounds__(NT) fixed_fwd(bf16 *x_dbl, int ld, const float *x_proj, size_t T, int E) {
    __shared__ float sh[NT / 32];
    const int j = blockIdx.x;
    float s = 0.0f;
    for (int e = threadIdx.x; e < E; e += NT) s += x_proj[(size_t)j * E + e];
    const bf16 v = __float2bfloat16_rn(block_sum<NT>(s, sh));
    for (size_t t = threadIdx.x; t < T; t += NT) x_dbl[t * ld + j] = v;
}

__global__ void __launch_bounds__(NT) fixed_bwd(float *g_x_proj, const bf16 *d_x_dbl, int ld, size_t T, int E) {
    __shared__ float sh[NT / 32];
    const int j = blockIdx.x;
    float s = 0.0f;
    for (size_t t = threadIdx.x; t < T; t += NT) s += __bfloat162float(d_x_dbl[t * ld + j]);
    const float total = block_sum<NT>(s, sh);
    for (int e = threadIdx.x; e < E; e += NT) g_x_proj[(size_t)j * E + e] += total;
}

ssm_status check(const char *fn, const void *a, const void *b, int ld, int T, int E, int XD) {
    if (!a || !b) return ssm_set_error(SSM_ERR_ARG, "%s: NULL pointer", fn);
    if (T < 1 || E < 1 || XD < 1 || ld < XD)
        return ssm_set_error(SSM_ERR_ARG, "%s: T=%d E=%d XD=%d ld=%d", fn, T, E, XD, ld);
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_fixed_x_dbl_forward(void *x_dbl, int ld, const float *x_proj, int T, int E, int XD,
                                               cudaStream_t st) {
    ssm_status s = check("cuda_fixed_x_dbl_forward", x_dbl, x_proj, ld, T, E, XD);
    if (s) return s;
    fixed_fwd<<<XD, NT, 0, st>>>((bf16 *)x_dbl, ld, x_proj, (size_t)T, E);
    SSM_CUDA_CHECK_LAUNCH("cuda_fixed_x_dbl_forward");
    return SSM_OK;
}

extern "C" ssm_status cuda_fixed_x_dbl_backward(float *g_x_proj, const void *d_x_dbl, int ld, int T, int E, int XD,
                                                cudaStream_t st) {
    ssm_status s = check("cuda_fixed_x_dbl_backward", g_x_proj, d_x_dbl, ld, T, E, XD);
    if (s) return s;
    fixed_bwd<<<XD, NT, 0, st>>>(g_x_proj, (const bf16 *)d_x_dbl, ld, (size_t)T, E);
    SSM_CUDA_CHECK_LAUNCH("cuda_fixed_x_dbl_backward");
    return SSM_OK;
}
