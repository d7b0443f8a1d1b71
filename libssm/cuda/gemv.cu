// gemv.cu: the decode step's projections at small batch (B <= GV_MAXB rows), one kernel each
// where cuBLAS takes one GEMM plus the kernels around it:
//   out (B, n) = beta * out + x (B, k) . w (n, k)^T      (bf16 w and x, fp32 accumulation)
// with, fused in, the RMSNorm that makes x from the fp32 residual rows (in_proj, the head) and
// the causal-conv step that consumes in_proj's x half (out columns [0, E)).
//
// A block of GV_WARPS warps stages the B input rows in shared memory as bf16 (normalizing them
// first with the same expressions, order and butterfly as rms_fwd_kernel, so x is the same bits
// as the unfused path's); then each warp owns one output column o and streams w's row o once
// (16-byte loads, all of a lane's chunks in flight before the first use) against the B rows, a
// butterfly sum per row, and lane b writes row b's value. At batch 1 the step is bound by
// launch latency (about 150 launches a token with cuBLAS), not by its 0.06 ms of weight reads:
// this path makes it 4 launches a layer instead of 6, and (on sm_90, a.overlap) launches each
// with programmatic dependent launch so that its weight loads and launch overlap the kernel
// before it.
#include <type_traits>

#include "model.cuh"

namespace {

constexpr int GV_WARPS = 8; // output columns per block
constexpr int GV_CPL = 8;   // 16-byte chunks of a weight row per lane: k <= 8 * 32 * GV_CPL

struct GemvP {
    cuda_gemv_args a;
    int kc; // k / 8: 16-byte chunks per row
};

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

__device__ __forceinline__ void unpack8(uint4 q, float (&f)[8]) {
    f[0] = __uint_as_float(q.x << 16), f[1] = __uint_as_float(q.x & 0xffff0000u);
    f[2] = __uint_as_float(q.y << 16), f[3] = __uint_as_float(q.y & 0xffff0000u);
    f[4] = __uint_as_float(q.z << 16), f[5] = __uint_as_float(q.z & 0xffff0000u);
    f[6] = __uint_as_float(q.w << 16), f[7] = __uint_as_float(q.w & 0xffff0000u);
}

// grid (ceil(n / GV_WARPS)), block (32 * GV_WARPS), dynamic shared memory B * k bf16
template <bool NORM, bool CONV, typename TO>
__global__ void __launch_bounds__(32 * GV_WARPS) gemv_kernel(GemvP p) {
    extern __shared__ uint4 xs4[]; // (B, kc) the input rows as bf16
    const cuda_gemv_args &a = p.a;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, k = a.k, kc = p.kc;
    const int o = blockIdx.x * GV_WARPS + warp;
    // the weights never change during decode: their loads go out before the wait for the
    // previous kernel (programmatic dependent launch, a.overlap), which also lets the next
    // kernel launch early; nothing is written and no activation read before the wait
    const uint4 *wr = (const uint4 *)(a.w + (size_t)min(o, a.n - 1) * k);
    uint4 wq[GV_CPL];
#pragma unroll
    for (int j = 0; j < GV_CPL; j++) wq[j] = lane + 32 * j < kc ? __ldg(wr + lane + 32 * j) : make_uint4(0, 0, 0, 0);
#if __CUDA_ARCH__ >= 900
    if (a.overlap) asm volatile("griddepcontrol.launch_dependents;\n\tgriddepcontrol.wait;" ::: "memory");
#endif
    for (int b = warp; b < a.B; b += GV_WARPS) {
        bf16 *xr = (bf16 *)(xs4 + (size_t)b * kc);
        if (NORM) { // rms_fwd_kernel's W = 4 loop: the same sums in the same order
            const float *in = (const float *)a.in + (size_t)b * a.ld_in;
            float ss = 0.0f;
            for (int c = lane * 4; c < k; c += 128) {
                const float4 v = __ldg((const float4 *)(in + c));
                ss = fmaf(v.x, v.x, ss), ss = fmaf(v.y, v.y, ss);
                ss = fmaf(v.z, v.z, ss), ss = fmaf(v.w, v.w, ss);
            }
            ss = warp_sum(ss);
            const float r = 1.0f / sqrtf(ss / (float)k + a.eps);
            for (int c = lane * 4; c < k; c += 128) {
                const float4 v = __ldg((const float4 *)(in + c));
                const float4 w = __ldg((const float4 *)(a.norm_w + c));
                *(uint2 *)(xr + c) = make_uint2(bf16bits(v.x * r * w.x) | bf16bits(v.y * r * w.y) << 16,
                                                bf16bits(v.z * r * w.z) | bf16bits(v.w * r * w.w) << 16);
            }
        } else {
            const uint4 *in = (const uint4 *)((const bf16 *)a.in + (size_t)b * a.ld_in);
            for (int c = lane; c < kc; c += 32) xs4[(size_t)b * kc + c] = __ldg(in + c);
        }
    }
    __syncthreads();
    if (o >= a.n) return;
    float acc[GV_MAXB];
#pragma unroll
    for (int b = 0; b < GV_MAXB; b++) acc[b] = 0.0f;
#pragma unroll
    for (int j = 0; j < GV_CPL; j++) {
        const int c = lane + 32 * j;
        if (c >= kc) break;
        float w[8];
        unpack8(wq[j], w);
#pragma unroll
        for (int b = 0; b < GV_MAXB; b++) {
            if (b >= a.B) break;
            float x[8];
            unpack8(xs4[(size_t)b * kc + c], x);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[b] = fmaf(w[i], x[i], acc[b]);
        }
    }
    float mine = 0.0f; // lane b keeps row b's sum
#pragma unroll
    for (int b = 0; b < GV_MAXB; b++) {
        if (b >= a.B) break;
        const float s = warp_sum(acc[b]);
        if (lane == b) mine = s;
    }
    if (lane >= a.B) return;
    const int b = lane;
    TO *out = (TO *)a.out + (size_t)b * a.ld_out + o;
    if constexpr (std::is_same<TO, float>::value) {
        *out = from_f<TO>(a.beta != 0.0f ? fmaf(a.beta, to_f(*out), mine) : mine);
        return;
    }
    const TO v = from_f<TO>(mine);
    *out = v;
    if constexpr (CONV) if (o < a.E) { // cuda_conv_step for (b, o): the state rolls left, takes v
        float *s = a.conv_state + ((size_t)b * a.E + o) * a.K;
        for (int j = 0; j < a.K - 1; j++) s[j] = s[j + 1];
        s[a.K - 1] = to_f(v);
        float pre = a.conv_b[o];
        for (int j = 0; j < a.K; j++) pre = fmaf(a.conv_w[(size_t)o * a.K + j], s[j], pre);
        ((TO *)a.u)[(size_t)b * a.E + o] = from_f<TO>(siluf(pre));
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

} // namespace

extern "C" bool cuda_gemv_fits(const cuda_gemv_args *a) {
    const size_t in_elem = a->norm_w ? sizeof(float) : sizeof(bf16);
    return a->B >= 1 && a->B <= GV_MAXB && a->k % 8 == 0 && a->k <= 8 * 32 * GV_CPL && a->n >= 1 &&
           aligned16(a->w) && aligned16(a->in) && (a->ld_in * in_elem) % 16 == 0 &&
           (!a->norm_w || aligned16(a->norm_w)) && (!a->u || a->out_dtype == SSM_DTYPE_BF16);
}

extern "C" ssm_status cuda_gemv(const cuda_gemv_args *a, cudaStream_t st) {
    if (!a->out || !a->in || !a->w || !cuda_gemv_fits(a) || a->ld_out < a->n)
        return ssm_set_error(SSM_ERR_ARG, "cuda_gemv: bad arguments (B=%d k=%d n=%d)", a->B, a->k, a->n);
    GemvP p = {*a, a->k / 8};
    const unsigned grid = (unsigned)((a->n + GV_WARPS - 1) / GV_WARPS), blk = 32 * GV_WARPS;
    const size_t smem = (size_t)a->B * a->k * sizeof(bf16);
    const bool norm = a->norm_w != NULL, conv = a->u != NULL;
    void (*kern)(GemvP);
    if (a->out_dtype == SSM_DTYPE_F32) kern = norm ? gemv_kernel<true, false, float> : gemv_kernel<false, false, float>;
    else if (norm) kern = conv ? gemv_kernel<true, true, bf16> : gemv_kernel<true, false, bf16>;
    else kern = conv ? gemv_kernel<false, true, bf16> : gemv_kernel<false, false, bf16>;
    cudaError_t e = ssm_cuda_launch(kern, dim3(grid), dim3(blk), smem, st, a->overlap != 0, p);
    if (e != cudaSuccess) return ssm_cuda_fail(e, "cuda_gemv");
    SSM_CUDA_CHECK_LAUNCH("cuda_gemv");
    return SSM_OK;
}
