// common.cuh: what the CUDA ops share: activation loads/stores (fp32 or bf16, always fp32
// arithmetic), the fast special functions, launch checking and the device's properties.
// Device code only sees this file; the public interface is ssm/cuda_ops.h.
#ifndef SSM_CUDA_COMMON_CUH
#define SSM_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "ssm/cuda_ops.h"

#define SSM_LOG2E 1.4426950408889634f
#define SSM_LN2 0.6931471805599453f

// ---- activations: fp32 or bf16 in memory, fp32 in registers -------------------------------

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
// Read-only loads through the non-coherent cache (inputs never alias outputs in these ops).
template <typename T> __device__ __forceinline__ float ldf(const T *p) { return to_f(__ldg(p)); }

// Raw loads for software pipelining: the bits go to a register now and are converted where
// they are used, so that no instruction waits on the load until then (a conversion right
// after a load makes the thread wait the whole memory latency there).
template <typename T> struct RawT { using type = float; };
template <> struct RawT<__nv_bfloat16> { using type = unsigned short; };
__device__ __forceinline__ float ldraw(const float *p) { return __ldg(p); }
__device__ __forceinline__ unsigned short ldraw(const __nv_bfloat16 *p) {
    return __ldg(reinterpret_cast<const unsigned short *>(p));
}
__device__ __forceinline__ float raw2f(float r) { return r; }
__device__ __forceinline__ float raw2f(unsigned short r) { return __uint_as_float((unsigned)r << 16); }

// W consecutive values stored as fp32 or bf16 (W = 4: one 16- or 8-byte store, aligned)
template <int W> __device__ __forceinline__ void st_vec(float *p, const float *v) {
    if (W == 4) *reinterpret_cast<float4 *>(p) = make_float4(v[0], v[1], v[2], v[3]);
    else p[0] = v[0];
}
__device__ __forceinline__ unsigned bf16bits(float v) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
template <int W> __device__ __forceinline__ void st_vec(__nv_bfloat16 *p, const float *v) {
    if (W == 4)
        *reinterpret_cast<uint2 *>(p) = make_uint2(bf16bits(v[0]) | bf16bits(v[1]) << 16,
                                                   bf16bits(v[2]) | bf16bits(v[3]) << 16);
    else
        p[0] = __float2bfloat16_rn(v[0]);
}

// ---- reductions ---------------------------------------------------------------------------

// The sum of v over a block of NT threads (a multiple of 32), in a fixed order (deterministic);
// every thread gets it. sh: NT / 32 floats of shared memory, free again on return.
template <int NT> __device__ __forceinline__ float block_sum(float v, float *sh) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < NT / 32; w++) t += sh[w];
    __syncthreads();
    return t;
}

// Argmax order: (v, i) beats (bv, bi) when larger, or equal at a smaller index; NaN never wins
// (a row of NaNs keeps bi = INT32_MAX, which callers write as index 0).
__device__ __forceinline__ bool argmax_better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}
// The warp's best (value, index) pair in every lane.
__device__ __forceinline__ void argmax_warp(float &bv, int &bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (argmax_better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
}

// ---- special functions -------------------------------------------------------------------

// 2^x on the special-function unit (MUFU.EX2): ~2 ulp, 0 below -126 (flushed).
__device__ __forceinline__ float ex2f(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// 1/x on the special-function unit (MUFU.RCP): ~1 ulp.
__device__ __forceinline__ float rcpf(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// softplus(x) = log(1 + exp(x)), x above 20 returned as is (the reference's threshold), as
// max(x, 0) + log1p(exp(-|x|)) with log1p(y) = 2 atanh(y / (2 + y)) summed to s^11 like
// cpu_softplus (truncation < 2e-7): two MUFU operations, no libm call.
__device__ __forceinline__ float softplusf(float x) {
    float y = ex2f(-fabsf(x) * SSM_LOG2E);
    float s = y * rcpf(2.0f + y), s2 = s * s;
    float p = fmaf(s2, 1.0f / 11, 1.0f / 9);
    p = fmaf(s2, p, 1.0f / 7);
    p = fmaf(s2, p, 1.0f / 5);
    p = fmaf(s2, p, 1.0f / 3);
    p = fmaf(s2, p, 1.0f);
    float r = fmaxf(x, 0.0f) + 2.0f * s * p;
    return x > 20.0f ? x : r;
}
// sigmoid(x) = 1 / (1 + exp(-x)), accurate at both ends.
__device__ __forceinline__ float sigmoidf_(float x) {
    float y = ex2f(-fabsf(x) * SSM_LOG2E);
    float r = rcpf(1.0f + y);
    return x >= 0.0f ? r : y * r;
}
__device__ __forceinline__ float siluf(float x) { return x * sigmoidf_(x); }
// d softplus / dx = sigmoid(x), 1 above the threshold
__device__ __forceinline__ float dsoftplusf(float x) { return x > 20.0f ? 1.0f : sigmoidf_(x); }

// ---- host side ---------------------------------------------------------------------------

// Multiprocessors of the current device (cached per device).
int ssm_cuda_sm_count(void);
// The status for a failed CUDA call (and its message): "<where>: <what CUDA said>".
ssm_status ssm_cuda_fail(cudaError_t err, const char *where);

#define SSM_CUDA_CHECK_LAUNCH(where)                                                         \
    do {                                                                                     \
        cudaError_t ssm_err_ = cudaGetLastError();                                           \
        if (ssm_err_ != cudaSuccess) return ssm_cuda_fail(ssm_err_, where);                  \
    } while (0)

// Launch kern<<<grid, block, smem, st>>>(p), with programmatic dependent launch when overlap
// (sm_90 and later): the kernel may then start before the one ahead of it finishes, and must
// execute griddepcontrol.wait before it reads anything that kernel writes.
template <typename P>
static inline cudaError_t ssm_cuda_launch(void (*kern)(P), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                          bool overlap, const P &p) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    cudaLaunchAttribute at[1] = {};
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at, cfg.numAttrs = overlap ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kern, p);
}

static inline size_t ssm_align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// A bump allocator over one device allocation (256-byte aligned pieces): with base == NULL it
// only counts (a plan's first pass), with base set it hands out the pointers.
struct Carve {
    char *base;
    size_t off;
    template <typename T = float> T *take(size_t n) {
        T *r = base ? (T *)(base + off) : nullptr;
        off += ssm_align_up(n * sizeof(T), 256);
        return r;
    }
};

#endif
