// embedding.cu: the token embedding lookup and its scatter-add backward on the GPU, the twin
// of libssm/cpu/embedding.c.
//
// One block per row; columns move as float4 when D is a multiple of 4 and the pointers are
// 16-byte aligned (each row then starts aligned too). The backward adds with fp32 atomics
// because rows may repeat a token: the sums are correct, their rounding order is not fixed.
// Token ids are trusted to lie in [0, V) (V is not passed; the caller's data loader checks).
#include "common.cuh"

namespace {

constexpr int THREADS = 128;

// grid (T), block (THREADS)
template <bool VEC>
__global__ void __launch_bounds__(THREADS) embed_fwd_kernel(float *out, const int32_t *tokens,
                                                            const float *table, int D) {
    const size_t t = blockIdx.x;
    const float *src = table + (size_t)__ldg(tokens + t) * D; // (D)
    float *dst = out + t * D;                                  // (D)
    if (VEC) {
        for (int c = threadIdx.x; c < D / 4; c += THREADS)
            reinterpret_cast<float4 *>(dst)[c] = __ldg(reinterpret_cast<const float4 *>(src) + c);
    } else {
        for (int c = threadIdx.x; c < D; c += THREADS) dst[c] = __ldg(src + c);
    }
}

// grid (T), block (THREADS): d_table[tokens[t]] += d_out[t]
template <bool VEC>
__global__ void __launch_bounds__(THREADS) embed_bwd_kernel(float *d_table, const int32_t *tokens,
                                                            const float *d_out, int D) {
    const size_t t = blockIdx.x;
    float *dst = d_table + (size_t)__ldg(tokens + t) * D; // (D)
    const float *src = d_out + t * D;                      // (D)
    if (VEC) {
        for (int c = threadIdx.x; c < D / 4; c += THREADS) {
            const float4 g = __ldg(reinterpret_cast<const float4 *>(src) + c);
            atomicAdd(dst + 4 * c + 0, g.x);
            atomicAdd(dst + 4 * c + 1, g.y);
            atomicAdd(dst + 4 * c + 2, g.z);
            atomicAdd(dst + 4 * c + 3, g.w);
        }
    } else {
        for (int c = threadIdx.x; c < D; c += THREADS) atomicAdd(dst + c, __ldg(src + c));
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

ssm_status check(const char *fn, const void *a, const int32_t *tokens, const void *b, int T,
                 int D) {
    if (!a || !tokens || !b) return ssm_set_error(SSM_ERR_ARG, "%s: NULL pointer", fn);
    if (T < 1 || D < 1) return ssm_set_error(SSM_ERR_ARG, "%s: T=%d D=%d must be >= 1", fn, T, D);
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_embedding_forward(float *out, const int32_t *tokens, const float *table,
                                             int T, int D, cudaStream_t stream) {
    ssm_status st = check("cuda_embedding_forward", out, tokens, table, T, D);
    if (st != SSM_OK) return st;
    if (D % 4 == 0 && aligned16(out) && aligned16(table))
        embed_fwd_kernel<true><<<T, THREADS, 0, stream>>>(out, tokens, table, D);
    else
        embed_fwd_kernel<false><<<T, THREADS, 0, stream>>>(out, tokens, table, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_forward");
    return SSM_OK;
}

extern "C" ssm_status cuda_embedding_backward(float *d_table, const int32_t *tokens,
                                              const float *d_out, int T, int D,
                                              cudaStream_t stream) {
    ssm_status st = check("cuda_embedding_backward", d_table, tokens, d_out, T, D);
    if (st != SSM_OK) return st;
    if (D % 4 == 0 && aligned16(d_out))
        embed_bwd_kernel<true><<<T, THREADS, 0, stream>>>(d_table, tokens, d_out, D);
    else
        embed_bwd_kernel<false><<<T, THREADS, 0, stream>>>(d_table, tokens, d_out, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_backward");
    return SSM_OK;
}
