// rope.cu: rotary position embedding on bf16 rows, GPT-NeoX halves, the twin of
// libssm/cpu/rope.c (the same rounding of every intermediate):
//   inv_freq[i] = 1 / base^(2i / rot_dim)       fp32, formed on the host as the CPU forms it
//   angle = p * inv_freq[i]                      fp32 product, p as fp32
//   c, s = cos(angle), sin(angle)                in double, rounded once to fp32
//   x1 <- x1 c - x2 s,  x2 <- x2 c + x1 s        (inverse: s -> -s), fp32, stored as bf16
#include <math.h>

#include "model.cuh"

namespace {

struct Freq { float inv[64]; };

// a thread per (row, i < rot_dim / 2): its angle once, then every head of the row
__global__ void rope_kernel(bf16 *x, int ld, int L, int n_heads, int hd, int half, Freq f, const int64_t *pos0,
                            float sign, size_t items) {
    for (size_t it = (size_t)blockIdx.x * blockDim.x + threadIdx.x; it < items; it += (size_t)gridDim.x * blockDim.x) {
        const size_t t = it / half;
        const int i = (int)(it % half);
        const float p = (float)((pos0 ? pos0[t / L] : 0) + (int64_t)(t % L));
        const double ang = (double)(p * f.inv[i]);
        const float c = (float)cos(ang), s = sign * (float)sin(ang);
        for (int h = 0; h < n_heads; h++) {
            bf16 *xh = x + t * ld + (size_t)h * hd;
            const float x1 = __bfloat162float(xh[i]), x2 = __bfloat162float(xh[i + half]);
            xh[i] = __float2bfloat16(x1 * c - x2 * s);
            xh[i + half] = __float2bfloat16(x2 * c + x1 * s);
        }
    }
}

} // namespace

extern "C" ssm_status cuda_rope_apply(void *x, int ld, int B, int L, int n_heads, int hd, int rot_dim, float base,
                                      const int64_t *pos0, int inverse, cudaStream_t st) {
    if (rot_dim == 0 || B <= 0 || L <= 0 || n_heads <= 0) return SSM_OK;
    if (rot_dim < 0 || rot_dim % 2 || rot_dim > hd || rot_dim / 2 > 64 || ld < n_heads * hd)
        return ssm_set_error(SSM_ERR_ARG, "cuda_rope_apply: rot_dim %d with head_dim %d (at most 128, even)", rot_dim, hd);
    const int half = rot_dim / 2;
    Freq f;
    for (int i = 0; i < half; i++) f.inv[i] = 1.0f / powf(base, (float)(2 * i) / (float)rot_dim);
    const size_t items = (size_t)B * L * half;
    const unsigned blocks = (unsigned)(items < 256 * 4096 ? (items + 255) / 256 : 4096);
    rope_kernel<<<blocks, 256, 0, st>>>((bf16 *)x, ld, L, n_heads, hd, half, f, pos0, inverse ? -1.0f : 1.0f, items);
    SSM_CUDA_CHECK_LAUNCH("cuda_rope_apply");
    return SSM_OK;
}
