// adamw.cu: the optimizer step on the GPU: the gradient's squared norm (deterministic), AdamW
// with global-norm clipping decided on the device, and the bf16 weight copy; the twin of
// ssm_adamw_step in libssm/src/optimizer.c (same float expressions).
//
// The sums run on a fixed grid that depends only on n (never on the device): each thread
// adds its grid-stride elements in double, each block reduces in a fixed tree into one partial
// in the workspace, and one block adds the partials in a fixed order, so the result is the
// same bits on every run and every GPU. The AdamW kernel reads the norm from device memory
// (no host round trip) and walks the tensors in order, each with a grid-stride loop, so one
// launch covers the whole blob without the host knowing the tensor sizes.
#include <math.h>

#include "common.cuh"

namespace {

constexpr int RT = 256;       // reduction threads per block
constexpr int MAX_RB = 1024;  // reduction blocks (partials) at most
constexpr int AT = 256;       // AdamW threads per block

int reduce_blocks(size_t n) {
    const size_t b = (n + (size_t)RT * 16 - 1) / ((size_t)RT * 16); // >= 16 elements a thread
    return b < 1 ? 1 : b > MAX_RB ? MAX_RB : (int)b;
}

// sum of the block's RT values of v, in a fixed tree; the result in thread 0
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int h = RT / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) sh[threadIdx.x] += sh[threadIdx.x + h];
        __syncthreads();
    }
    return sh[0];
}

// grid (nblk), block (RT): part[blockIdx.x] = sum over this block's elements of x (or x^2).
// VEC: x is 16-byte aligned; the n % 4 tail goes to block 0.
template <bool SQUARE, bool VEC>
__global__ void __launch_bounds__(RT) reduce_kernel(double *part, const float *x, size_t n) {
    __shared__ double sh[RT];
    const size_t stride = (size_t)gridDim.x * RT;
    double acc = 0.0;
    if (VEC) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (size_t i = (size_t)blockIdx.x * RT + threadIdx.x; i < n / 4; i += stride) {
            const float4 q = __ldg(x4 + i);
            acc += SQUARE ? (double)q.x * q.x + (double)q.y * q.y + (double)q.z * q.z +
                                (double)q.w * q.w
                          : (double)q.x + (double)q.y + (double)q.z + (double)q.w;
        }
        if (blockIdx.x == 0 && threadIdx.x < n % 4) {
            const double v = __ldg(x + n / 4 * 4 + threadIdx.x);
            acc += SQUARE ? v * v : v;
        }
    } else {
        for (size_t i = (size_t)blockIdx.x * RT + threadIdx.x; i < n; i += stride) {
            const double v = __ldg(x + i);
            acc += SQUARE ? v * v : v;
        }
    }
    const double s = block_sum(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// grid (1), block (RT): *out = sum of the nblk partials
__global__ void __launch_bounds__(RT) reduce_finish(double *out, const double *part, int nblk) {
    __shared__ double sh[RT];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nblk; i += RT) acc += part[i];
    const double s = block_sum(acc, sh);
    if (threadIdx.x == 0) *out = s;
}

struct AdamW {
    float lr, beta1, beta2, eps, weight_decay, max_norm, bc1, bc2;
};

// grid (any), block (AT): every element of every tensor, tensor by tensor in order
__global__ void __launch_bounds__(AT) adamw_kernel(float *p, __nv_bfloat16 *p_bf16, float *m,
                                                   float *v, const float *grad,
                                                   const cuda_adamw_tensor *tensors,
                                                   int n_tensors, const double *sumsq, AdamW a) {
    const double norm = sqrt(*sumsq);
    if (!isfinite(norm)) return; // the host reports it; the parameters stay as they are
    // clip = max_norm / (norm + 1e-6) when the norm is above max_norm (in double, as the CPU)
    const float clip =
        a.max_norm > 0 && norm > a.max_norm ? (float)(a.max_norm / (norm + 1e-6)) : 1.0f;
    const size_t stride = (size_t)gridDim.x * AT;
    for (int k = 0; k < n_tensors; k++) {
        const cuda_adamw_tensor t = tensors[k];
        const float wd = t.decay ? a.weight_decay : 0.0f;
        for (size_t j = (size_t)blockIdx.x * AT + threadIdx.x; j < t.numel; j += stride) {
            const size_t i = t.offset + j;
            const float gi = grad[i] * clip;
            const float mi = a.beta1 * m[i] + (1.0f - a.beta1) * gi;
            const float vi = a.beta2 * v[i] + (1.0f - a.beta2) * gi * gi;
            m[i] = mi, v[i] = vi;
            const float mhat = mi / a.bc1, vhat = vi / a.bc2;
            // decoupled weight decay: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
            const float pi = p[i] - a.lr * (mhat / (sqrtf(vhat) + a.eps) + wd * p[i]);
            p[i] = pi;
            if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
        }
    }
}

// grid-stride: dst[i] = bf16(src[i]); VEC: 4 at a time (src 16-, dst 8-byte aligned)
template <bool VEC>
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (VEC) {
        for (; i < n / 4; i += stride) {
            const float4 q = __ldg(reinterpret_cast<const float4 *>(src) + i);
            __nv_bfloat162 lo = __floats2bfloat162_rn(q.x, q.y), hi = __floats2bfloat162_rn(q.z, q.w);
            uint2 w;
            w.x = *reinterpret_cast<unsigned *>(&lo);
            w.y = *reinterpret_cast<unsigned *>(&hi);
            reinterpret_cast<uint2 *>(dst)[i] = w;
        }
        if (blockIdx.x == 0 && threadIdx.x < n % 4)
            dst[n / 4 * 4 + threadIdx.x] = __float2bfloat16_rn(src[n / 4 * 4 + threadIdx.x]);
    } else {
        for (; i < n; i += stride) dst[i] = __float2bfloat16_rn(src[i]);
    }
}

bool aligned(const void *p, unsigned a) { return ((uintptr_t)p & (a - 1)) == 0; }

// enough blocks to fill the device, fewer for small n
unsigned fill_blocks(size_t n, int threads) {
    const size_t want = (n + threads - 1) / threads, cap = (size_t)ssm_cuda_sm_count() * 8;
    return (unsigned)(want < 1 ? 1 : want > cap ? cap : want);
}

} // namespace

// Shared with cuda_sum (cross_entropy.cu): workspace for and the sum of x or x^2 over n.
size_t ssm_cuda_reduce_workspace(size_t n) { return (size_t)reduce_blocks(n) * sizeof(double); }

ssm_status ssm_cuda_reduce(double *out, const float *x, size_t n, bool square, void *ws,
                           size_t ws_bytes, cudaStream_t s, const char *fn) {
    if (!out || (!x && n > 0)) return ssm_set_error(SSM_ERR_ARG, "%s: NULL pointer", fn);
    const size_t need = ssm_cuda_reduce_workspace(n);
    if (!ws || ws_bytes < need || !aligned(ws, 8))
        return ssm_set_error(SSM_ERR_ARG, "%s: workspace of %zu bytes, %zu needed (8-byte aligned)",
                             fn, ws_bytes, need);
    const int nblk = reduce_blocks(n);
    double *part = (double *)ws;
    const bool vec = aligned(x, 16);
    if (square) {
        if (vec) reduce_kernel<true, true><<<nblk, RT, 0, s>>>(part, x, n);
        else reduce_kernel<true, false><<<nblk, RT, 0, s>>>(part, x, n);
    } else {
        if (vec) reduce_kernel<false, true><<<nblk, RT, 0, s>>>(part, x, n);
        else reduce_kernel<false, false><<<nblk, RT, 0, s>>>(part, x, n);
    }
    SSM_CUDA_CHECK_LAUNCH(fn);
    reduce_finish<<<1, RT, 0, s>>>(out, part, nblk);
    SSM_CUDA_CHECK_LAUNCH(fn);
    return SSM_OK;
}

extern "C" size_t cuda_sumsq_workspace(size_t n) { return ssm_cuda_reduce_workspace(n); }

extern "C" ssm_status cuda_sumsq(double *out, const float *g, size_t n, void *workspace,
                                 size_t workspace_bytes, cudaStream_t stream) {
    return ssm_cuda_reduce(out, g, n, true, workspace, workspace_bytes, stream, "cuda_sumsq");
}

extern "C" ssm_status cuda_adamw(float *p, void *p_bf16, float *m, float *v, const float *grad,
                                 const cuda_adamw_tensor *tensors, int n_tensors,
                                 const double *sumsq, const cuda_adamw_args *args,
                                 cudaStream_t stream) {
    if (!p || !m || !v || !grad || !sumsq || !args || (!tensors && n_tensors > 0))
        return ssm_set_error(SSM_ERR_ARG, "cuda_adamw: NULL pointer");
    if (n_tensors < 0) return ssm_set_error(SSM_ERR_ARG, "cuda_adamw: n_tensors=%d", n_tensors);
    const cuda_adamw_args *c = args;
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1))
        return ssm_set_error(SSM_ERR_ARG, "cuda_adamw: beta1=%g beta2=%g must lie in [0, 1)",
                             (double)c->beta1, (double)c->beta2);
    if (!(c->bc1 > 0 && c->bc1 <= 1 && c->bc2 > 0 && c->bc2 <= 1))
        return ssm_set_error(SSM_ERR_ARG, "cuda_adamw: bias corrections bc1=%g bc2=%g must lie in (0, 1]",
                             (double)c->bc1, (double)c->bc2);
    if (!isfinite(c->lr) || !isfinite(c->weight_decay) || !isfinite(c->max_norm) ||
        !(c->eps >= 0) || isinf(c->eps))
        return ssm_set_error(SSM_ERR_ARG, "cuda_adamw: lr=%g eps=%g weight_decay=%g max_norm=%g "
                             "must be finite (eps >= 0)", (double)c->lr, (double)c->eps,
                             (double)c->weight_decay, (double)c->max_norm);
    if (n_tensors == 0) return SSM_OK;
    const AdamW a = {c->lr, c->beta1, c->beta2, c->eps, c->weight_decay, c->max_norm, c->bc1, c->bc2};
    // the tensor sizes live on the device: a full device of blocks, each looping
    adamw_kernel<<<(unsigned)ssm_cuda_sm_count() * 4, AT, 0, stream>>>(p, (__nv_bfloat16 *)p_bf16, m, v, grad, tensors,
                                          n_tensors, sumsq, a);
    SSM_CUDA_CHECK_LAUNCH("cuda_adamw");
    return SSM_OK;
}

extern "C" ssm_status cuda_to_bf16(void *dst, const float *src, size_t n, cudaStream_t stream) {
    if (!dst || !src) return ssm_set_error(SSM_ERR_ARG, "cuda_to_bf16: NULL pointer");
    if (n == 0) return SSM_OK;
    const bool vec = aligned(src, 16) && aligned(dst, 8);
    if (vec)
        to_bf16_kernel<true><<<fill_blocks(n / 4 + 1, 256), 256, 0, stream>>>((__nv_bfloat16 *)dst, src, n);
    else
        to_bf16_kernel<false><<<fill_blocks(n, 256), 256, 0, stream>>>((__nv_bfloat16 *)dst, src, n);
    SSM_CUDA_CHECK_LAUNCH("cuda_to_bf16");
    return SSM_OK;
}
