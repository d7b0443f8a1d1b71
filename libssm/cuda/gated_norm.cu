// gated_norm.cu: Mamba-2's gated RMSNorm on the GPU (mamba_ssm's RMSNormGated,
// norm_before_gate = False, group_size = I / G), the twin of libssm/cpu/gated_norm.c:
//   v = y * silu(z);   out = v * rstd * w,   rstd = 1 / sqrt(mean over the group of v^2 + eps)
// A block per (row, group) for the forward and for dy, dz; dw sums per block of RT rows into
// the workspace, then the blocks in order (deterministic). bf16 in and out, fp32 arithmetic.
#include "common.cuh"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int NT = 256, RT = 64;

__global__ void __launch_bounds__(NT) gnorm_fwd(bf16 *out, int ld_out, float *rstd, const bf16 *y, int ld_y,
                                                const bf16 *z, int ld_z, const float *w, int I, int G, float eps) {
    __shared__ float sh[NT / 32];
    const size_t t = blockIdx.x;
    const int g = blockIdx.y, gs = I / G, i0 = g * gs;
    float ss = 0.0f;
    for (int i = i0 + threadIdx.x; i < i0 + gs; i += NT) {
        // v = y * silu(z)
        const float v = __bfloat162float(y[t * ld_y + i]) * siluf(__bfloat162float(z[t * ld_z + i]));
        ss = fmaf(v, v, ss);
    }
    // rstd = 1 / sqrt(mean(v^2) + eps) over the group
    const float r = 1.0f / sqrtf(block_sum<NT>(ss, sh) / gs + eps);
    if (threadIdx.x == 0) rstd[t * G + g] = r;
    for (int i = i0 + threadIdx.x; i < i0 + gs; i += NT) {
        const float v = __bfloat162float(y[t * ld_y + i]) * siluf(__bfloat162float(z[t * ld_z + i]));
        // out = v * rstd * w
        out[t * ld_out + i] = __float2bfloat16_rn(v * r * w[i]);
    }
}

__global__ void __launch_bounds__(NT) gnorm_bwd(bf16 *dy, int ld_dy, bf16 *dz, int ld_dz, const bf16 *gout, int ld_g,
                                                const bf16 *y, int ld_y, const bf16 *z, int ld_z, const float *w,
                                                const float *rstd, int I, int G) {
    __shared__ float sh[NT / 32];
    const size_t t = blockIdx.x;
    const int g = blockIdx.y, gs = I / G, i0 = g * gs;
    const float r = rstd[t * G + g];
    float dot = 0.0f;
    for (int i = i0 + threadIdx.x; i < i0 + gs; i += NT) {
        const float v = __bfloat162float(y[t * ld_y + i]) * siluf(__bfloat162float(z[t * ld_z + i]));
        dot = fmaf(__bfloat162float(gout[t * ld_g + i]) * w[i], v, dot);
    }
    // dv = rstd (g w) - v rstd^3 mean(g w v)
    const float c = block_sum<NT>(dot, sh) / gs * r * r * r;
    for (int i = i0 + threadIdx.x; i < i0 + gs; i += NT) {
        const float yv = __bfloat162float(y[t * ld_y + i]), zv = __bfloat162float(z[t * ld_z + i]);
        const float s = sigmoidf_(zv), v = yv * zv * s;
        const float dv = r * __bfloat162float(gout[t * ld_g + i]) * w[i] - c * v;
        // dy = dv silu(z);  dz = dv y silu'(z), silu'(z) = s (1 + z (1 - s))
        dy[t * ld_dy + i] = __float2bfloat16_rn(dv * zv * s);
        dz[t * ld_dz + i] = __float2bfloat16_rn(dv * yv * s * fmaf(zv, 1.0f - s, 1.0f));
    }
}

// grid (ceil(I / NT), ceil(T / RT)): part[blk, i] = sum over the block's rows of g v rstd
__global__ void __launch_bounds__(NT) gnorm_dw_part(float *part, const bf16 *gout, int ld_g, const bf16 *y, int ld_y,
                                                    const bf16 *z, int ld_z, const float *rstd, int T, int I, int G) {
    const int i = blockIdx.x * NT + threadIdx.x;
    if (i >= I) return;
    const int g = i / (I / G);
    float acc = 0.0f;
    for (int t = blockIdx.y * RT; t < T && t < (int)(blockIdx.y + 1) * RT; t++) {
        const size_t tt = t;
        const float v = __bfloat162float(y[tt * ld_y + i]) * siluf(__bfloat162float(z[tt * ld_z + i]));
        // dw += g v rstd
        acc = fmaf(__bfloat162float(gout[tt * ld_g + i]) * v, rstd[tt * G + g], acc);
    }
    part[(size_t)blockIdx.y * I + i] = acc;
}

__global__ void gnorm_dw_finish(float *dw, const float *part, int nblk, int I) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= I) return;
    float s = 0.0f;
    for (int r = 0; r < nblk; r++) s += part[(size_t)r * I + i];
    dw[i] += s;
}

ssm_status check(const char *fn, int T, int I, int G) {
    if (T < 1 || I < 1 || G < 1 || I % G)
        return ssm_set_error(SSM_ERR_ARG, "%s: T=%d I=%d G=%d (G must divide I)", fn, T, I, G);
    if (G > 65535) return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: G=%d groups, at most 65535", fn, G);
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_gated_rmsnorm_forward(void *out, int ld_out, float *rstd, const void *y, int ld_y,
                                                 const void *z, int ld_z, const float *w, int T, int I, int G,
                                                 float eps, cudaStream_t st) {
    ssm_status s = check("cuda_gated_rmsnorm_forward", T, I, G);
    if (s) return s;
    if (!out || !rstd || !y || !z || !w) return ssm_set_error(SSM_ERR_ARG, "cuda_gated_rmsnorm_forward: NULL pointer");
    gnorm_fwd<<<dim3(T, G), NT, 0, st>>>((bf16 *)out, ld_out, rstd, (const bf16 *)y, ld_y, (const bf16 *)z, ld_z, w, I, G, eps);
    SSM_CUDA_CHECK_LAUNCH("cuda_gated_rmsnorm_forward");
    return SSM_OK;
}

extern "C" size_t cuda_gated_rmsnorm_backward_workspace(int T, int I) {
    if (T < 1 || I < 1) return 0;
    return (size_t)((T + RT - 1) / RT) * I * sizeof(float);
}

extern "C" ssm_status cuda_gated_rmsnorm_backward(void *dy, int ld_dy, void *dz, int ld_dz, float *dw,
                                                  const void *d_out, int ld_dout, const void *y, int ld_y,
                                                  const void *z, int ld_z, const float *w, const float *rstd,
                                                  int T, int I, int G, void *ws, size_t ws_bytes,
                                                  cudaStream_t st) {
    ssm_status s = check("cuda_gated_rmsnorm_backward", T, I, G);
    if (s) return s;
    if (!dy || !dz || !dw || !d_out || !y || !z || !w || !rstd)
        return ssm_set_error(SSM_ERR_ARG, "cuda_gated_rmsnorm_backward: NULL pointer");
    const size_t need = cuda_gated_rmsnorm_backward_workspace(T, I);
    if (!ws || ws_bytes < need)
        return ssm_set_error(SSM_ERR_ARG, "cuda_gated_rmsnorm_backward: workspace of %zu bytes, %zu needed", ws_bytes, need);
    // dw first: dy and dz may share a buffer with nothing it reads, but keep the order simple
    const int nblk = (T + RT - 1) / RT;
    gnorm_dw_part<<<dim3((I + NT - 1) / NT, nblk), NT, 0, st>>>((float *)ws, (const bf16 *)d_out, ld_dout,
                                                               (const bf16 *)y, ld_y, (const bf16 *)z, ld_z, rstd, T, I, G);
    SSM_CUDA_CHECK_LAUNCH("cuda_gated_rmsnorm_backward (dw)");
    gnorm_dw_finish<<<(I + 255) / 256, 256, 0, st>>>(dw, (const float *)ws, nblk, I);
    SSM_CUDA_CHECK_LAUNCH("cuda_gated_rmsnorm_backward (dw sum)");
    gnorm_bwd<<<dim3(T, G), NT, 0, st>>>((bf16 *)dy, ld_dy, (bf16 *)dz, ld_dz, (const bf16 *)d_out, ld_dout,
                                        (const bf16 *)y, ld_y, (const bf16 *)z, ld_z, w, rstd, I, G);
    SSM_CUDA_CHECK_LAUNCH("cuda_gated_rmsnorm_backward");
    return SSM_OK;
}
