// cross_entropy.cu: the LM head's softmax cross-entropy (nll, entropy, d logits), argmax and a
// deterministic sum on the GPU; the twin of libssm/cpu/cross_entropy.c.
//
// One block per row. A thread folds its logits into an online softmax state (max m, sum of
// exp(l - m), sum of exp(l - m) (l - m)), the block merges the states in a fixed order, and a
// second pass writes (softmax - onehot) * scale. Logits are read 4 at a time when V and ld
// are multiples of 4 and the pointers aligned. Plain loads, not __ldg: dlogits may alias the
// logits (fp32), and every element is read before it is written, by the same thread (the
// target's logit is read before the block's first barrier).
#include <math.h>

#include "common.cuh"

// Deterministic double sum of x (or of x^2) over a fixed grid: adamw.cu.
size_t ssm_cuda_reduce_workspace(size_t n);
ssm_status ssm_cuda_reduce(double *out, const float *x, size_t n, bool square, void *ws,
                           size_t ws_bytes, cudaStream_t s, const char *fn);

namespace {

constexpr int BT = 256; // threads per row

// online softmax state of a set of logits: m = max, s = sum exp(l - m),
// t = sum exp(l - m) (l - m); empty: s = 0 (m = -inf)
struct Soft {
    float m, s, t;
};

__device__ __forceinline__ float expf_(float x) { return ex2f(x * SSM_LOG2E); }

__device__ __forceinline__ void soft_add(Soft &a, float l) {
    if (l > a.m) { // a new max: rescale what is there (nothing when empty)
        const float f = expf_(a.m - l);
        a.t = a.s > 0.0f ? f * (a.t + a.s * (a.m - l)) : 0.0f;
        a.s = fmaf(f, a.s, 1.0f);
        a.m = l;
    } else {
        const float e = expf_(l - a.m);
        a.s += e;
        a.t = fmaf(e, l - a.m, a.t);
    }
}

__device__ __forceinline__ Soft soft_merge(Soft a, Soft b) {
    if (b.s == 0.0f) return a;
    if (a.s == 0.0f) return b;
    const float m = fmaxf(a.m, b.m), fa = expf_(a.m - m), fb = expf_(b.m - m);
    return {m, fa * a.s + fb * b.s,
            fa * fmaf(a.s, a.m - m, a.t) + fb * fmaf(b.s, b.m - m, b.t)};
}

// W consecutive fp32 logits (W = 4 needs 16-byte alignment)
template <int W> __device__ __forceinline__ void ld_logits(const float *p, float *v) {
    if (W == 4) {
        const float4 q = *reinterpret_cast<const float4 *>(p);
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
        v[0] = *p;
    }
}
// W consecutive bf16 logits (a training head's; W = 4 needs 8-byte alignment)
template <int W> __device__ __forceinline__ void ld_logits(const __nv_bfloat16 *p, float *v) {
    if (W == 4) {
        const uint2 q = *reinterpret_cast<const uint2 *>(p);
        v[0] = __uint_as_float(q.x << 16), v[1] = __uint_as_float(q.x & 0xffff0000u);
        v[2] = __uint_as_float(q.y << 16), v[3] = __uint_as_float(q.y & 0xffff0000u);
    } else {
        v[0] = __bfloat162float(*p);
    }
}

// grid (rows), block (BT)
template <typename T, int W, typename TL = float>
__global__ void __launch_bounds__(BT) ce_kernel(float *nll, float *entropy, T *dlogits,
                                                const TL *logits, int ld,
                                                const int32_t *targets, int V, float scale) {
    __shared__ Soft red[BT / 32];
    const int tid = threadIdx.x;
    const size_t row = blockIdx.x;
    const TL *lr = logits + row * ld; // (V)
    const int tgt = targets[row];
    const bool scored = tgt >= 0 && tgt < V;
    const float lt = tid == 0 && scored ? to_f(lr[tgt]) : 0.0f; // before any write (aliasing)
    Soft a = {-INFINITY, 0.0f, 0.0f};
    for (int c = tid * W; c < V; c += BT * W) {
        float v[W];
        ld_logits<W>(lr + c, v);
#pragma unroll
        for (int k = 0; k < W; k++) soft_add(a, v[k]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const Soft b = {__shfl_xor_sync(0xffffffffu, a.m, o), __shfl_xor_sync(0xffffffffu, a.s, o),
                        __shfl_xor_sync(0xffffffffu, a.t, o)};
        a = soft_merge(a, b);
    }
    if (tid % 32 == 0) red[tid / 32] = a;
    __syncthreads();
    a = red[0];
#pragma unroll
    for (int i = 1; i < BT / 32; i++) a = soft_merge(a, red[i]);
    const float log_s = logf(a.s);
    if (tid == 0) {
        // -log softmax[target] = m + log s - l[target]; an out-of-range target gives NaN
        nll[row] = tgt < 0 ? 0.0f : tgt < V ? a.m + log_s - lt : NAN;
        // entropy = lse - sum p l = log s - sum p (l - m)
        if (entropy) entropy[row] = log_s - a.t / a.s;
    }
    if (!dlogits) return;
    T *dr = dlogits + row * ld; // (V)
    const float inv = tgt < 0 ? 0.0f : scale / a.s; // p * scale = exp(l - m) * scale / s
    for (int c = tid * W; c < V; c += BT * W) {
        float v[W];
        ld_logits<W>(lr + c, v);
#pragma unroll
        for (int k = 0; k < W; k++) {
            v[k] = expf_(v[k] - a.m) * inv;
            if (c + k == tgt) v[k] -= scale;
        }
        st_vec<W>(dr + c, v);
    }
}

// grid (rows), block (BT): the first index of the row's maximum. W = 4: float4 loads (V and
// ld multiples of 4, 16-byte aligned rows), four in flight per thread before the compares.
template <int W> __global__ void __launch_bounds__(BT) argmax_kernel(int32_t *out, const float *logits, int ld,
                                                                     int V) {
    __shared__ float rv[BT / 32];
    __shared__ int ri[BT / 32];
    const int tid = threadIdx.x;
    const float *lr = logits + (size_t)blockIdx.x * ld; // (V)
    float bv = -INFINITY;
    int bi = INT32_MAX;
#pragma unroll 4
    for (int c = tid * W; c < V; c += BT * W) {
        float v[W];
        ld_logits<W>(lr + c, v);
#pragma unroll
        for (int k = 0; k < W; k++) // c rises within a thread: argmax_better keeps the first
            if (argmax_better(v[k], c + k, bv, bi)) bv = v[k], bi = c + k;
    }
    argmax_warp(bv, bi);
    if (tid % 32 == 0) rv[tid / 32] = bv, ri[tid / 32] = bi;
    __syncthreads();
    if (tid == 0) {
        for (int i = 1; i < BT / 32; i++)
            if (argmax_better(rv[i], ri[i], bv, bi)) bv = rv[i], bi = ri[i];
        out[blockIdx.x] = bi == INT32_MAX ? 0 : bi; // a row of NaNs: 0
    }
}

bool aligned(const void *p, unsigned a) { return ((uintptr_t)p & (a - 1)) == 0; }

template <typename T, typename TL = float>
void ce_launch(float *nll, float *entropy, void *dlogits, const TL *logits, int ld,
               const int32_t *targets, int rows, int V, float scale, cudaStream_t s) {
    const bool vec = V % 4 == 0 && ld % 4 == 0 && aligned(logits, 4 * sizeof(TL)) &&
                     (!dlogits || aligned(dlogits, 4 * sizeof(T)));
    if (vec)
        ce_kernel<T, 4><<<rows, BT, 0, s>>>(nll, entropy, (T *)dlogits, logits, ld, targets, V, scale);
    else
        ce_kernel<T, 1><<<rows, BT, 0, s>>>(nll, entropy, (T *)dlogits, logits, ld, targets, V, scale);
}

} // namespace

extern "C" ssm_status cuda_cross_entropy(float *nll, float *entropy, void *dlogits,
                                         ssm_dtype dtype, const float *logits, int ld,
                                         const int32_t *targets, int rows, int V, float scale,
                                         cudaStream_t stream) {
    if (!nll || !logits || !targets)
        return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy: NULL pointer");
    if (rows < 1 || V < 1 || ld < V)
        return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy: rows=%d V=%d ld=%d (need >= 1, ld >= V)",
                             rows, V, ld);
    if (dtype != SSM_DTYPE_F32 && dtype != SSM_DTYPE_BF16)
        return ssm_set_error(SSM_ERR_DTYPE, "cuda_cross_entropy: unknown dtype %d", (int)dtype);
    if (dlogits == (const void *)logits && dtype != SSM_DTYPE_F32)
        return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy: bf16 dlogits may not alias the logits");
    if (!isfinite(scale)) return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy: scale is not finite");
    if (dtype == SSM_DTYPE_F32)
        ce_launch<float>(nll, entropy, dlogits, logits, ld, targets, rows, V, scale, stream);
    else
        ce_launch<__nv_bfloat16>(nll, entropy, dlogits, logits, ld, targets, rows, V, scale, stream);
    SSM_CUDA_CHECK_LAUNCH("cuda_cross_entropy");
    return SSM_OK;
}

extern "C" ssm_status cuda_cross_entropy_bf16(float *nll, float *entropy, void *dlogits,
                                              const void *logits, int ld, const int32_t *targets,
                                              int rows, int V, float scale, cudaStream_t stream) {
    if (!nll || !logits || !targets)
        return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy_bf16: NULL pointer");
    if (rows < 1 || V < 1 || ld < V)
        return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy_bf16: rows=%d V=%d ld=%d (need >= 1, ld >= V)",
                             rows, V, ld);
    if (!isfinite(scale)) return ssm_set_error(SSM_ERR_ARG, "cuda_cross_entropy_bf16: scale is not finite");
    ce_launch<__nv_bfloat16, __nv_bfloat16>(nll, entropy, dlogits, (const __nv_bfloat16 *)logits, ld,
                                           targets, rows, V, scale, stream);
    SSM_CUDA_CHECK_LAUNCH("cuda_cross_entropy_bf16");
    return SSM_OK;
}

extern "C" ssm_status cuda_argmax(int32_t *out, const float *logits, int ld, int rows, int V,
                                  cudaStream_t stream) {
    if (!out || !logits) return ssm_set_error(SSM_ERR_ARG, "cuda_argmax: NULL pointer");
    if (rows < 1 || V < 1 || ld < V)
        return ssm_set_error(SSM_ERR_ARG, "cuda_argmax: rows=%d V=%d ld=%d (need >= 1, ld >= V)",
                             rows, V, ld);
    if (V % 4 == 0 && ld % 4 == 0 && aligned(logits, 16)) argmax_kernel<4><<<rows, BT, 0, stream>>>(out, logits, ld, V);
    else argmax_kernel<1><<<rows, BT, 0, stream>>>(out, logits, ld, V);
    SSM_CUDA_CHECK_LAUNCH("cuda_argmax");
    return SSM_OK;
}

extern "C" size_t cuda_sum_workspace(size_t n) { return ssm_cuda_reduce_workspace(n); }

extern "C" ssm_status cuda_sum(double *out, const float *x, size_t n, void *workspace,
                               size_t workspace_bytes, cudaStream_t stream) {
    return ssm_cuda_reduce(out, x, n, false, workspace, workspace_bytes, stream, "cuda_sum");
}
