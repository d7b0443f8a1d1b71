// gemv.cu: the decode step's projections at small batch (B <= GV_MAXB rows), one kernel each
// where cuBLAS takes one GEMM plus the kernels around it:
//   out (B, n) = beta * out + x (B, k) . w (n, k)^T      (bf16 w and x, fp32 accumulation)
// with, fused in, the RMSNorm that makes x from the fp32 residual rows (in_proj, the head), the
// causal-conv step that consumes in_proj's x half (out columns [0, E)), and for greedy decode
// the head's argmax and the token's append (argmax_blocks).
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

constexpr int GV_GROUP = 64; // blocks a counter of the fused argmax: atomics on one address serialize

// The best (value, index) pair of row b among the n pairs (pv, pi)[k * B + b], read past L1
// (__ldcg: other blocks wrote them); thread 0 gets it. sv, si: GV_WARPS entries of shared memory.
__device__ void block_best(const float *pv, const int32_t *pi, int n, int B, int b, float *sv, int *si,
                           float &bv, int &bi) {
    const int t = threadIdx.x, warp = t / 32;
    bv = -INFINITY, bi = INT32_MAX;
    for (int k = t; k < n; k += blockDim.x) {
        const float v = __ldcg(pv + (size_t)k * B + b);
        const int i = __ldcg(pi + (size_t)k * B + b);
        if (argmax_better(v, i, bv, bi)) bv = v, bi = i;
    }
    argmax_warp(bv, bi);
    if (t % 32 == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (t == 0)
        for (int w = 1; w < GV_WARPS; w++)
            if (argmax_better(sv[w], si[w], bv, bi)) bv = sv[w], bi = si[w];
    __syncthreads();
}

// With a.argmax (the head of greedy decode): the first index of each row's maximum over the n
// outputs, without a second kernel. Each block writes its rows' best pair among its columns;
// the last block of each group of GV_GROUP blocks to finish (a counter per group, after a
// fence) reduces the group's pairs to one; the last group's reduces the groups' and appends
// the tokens. The order (value, then the lower index) is total, so the result is the same on
// every run.
__device__ void argmax_blocks(const cuda_gemv_argmax &g, int B, int warp, int lane, float v, int o) {
    __shared__ float bv_w[GV_WARPS][GV_MAXB];
    __shared__ int bi_w[GV_WARPS][GV_MAXB];
    __shared__ bool last;
    __shared__ int32_t tok[GV_MAXB];
    const int t = threadIdx.x, blocks = gridDim.x, groups = (blocks + GV_GROUP - 1) / GV_GROUP;
    const int grp = blockIdx.x / GV_GROUP, in_grp = min(GV_GROUP, blocks - grp * GV_GROUP);
    float *gv = g.part_v + (size_t)blocks * B; // (groups, B) after the blocks' (blocks, B)
    int32_t *gi = g.part_i + (size_t)blocks * B;
    if (lane < B) bv_w[warp][lane] = v, bi_w[warp][lane] = o; // this warp's best for row lane
    __syncthreads();
    if (t < B) { // the block's best for row t, its columns in order
        float bv = bv_w[0][t];
        int bi = bi_w[0][t];
        for (int w = 1; w < GV_WARPS; w++)
            if (argmax_better(bv_w[w][t], bi_w[w][t], bv, bi)) bv = bv_w[w][t], bi = bi_w[w][t];
        g.part_v[(size_t)blockIdx.x * B + t] = bv, g.part_i[(size_t)blockIdx.x * B + t] = bi;
        __threadfence(); // the pair is visible before the counter says this block is done
    }
    __syncthreads();
    if (t == 0) last = atomicAdd(g.blocks_done + 1 + grp, 1u) == (unsigned)in_grp - 1;
    __syncthreads();
    if (!last) return;
    // the group's last block: its pairs to one per row
    float *sv = &bv_w[0][0];
    int *si = &bi_w[0][0];
    for (int b = 0; b < B; b++) {
        float bv;
        int bi;
        block_best(g.part_v + (size_t)grp * GV_GROUP * B, g.part_i + (size_t)grp * GV_GROUP * B, in_grp, B, b, sv,
                   si, bv, bi);
        if (t == 0) gv[(size_t)grp * B + b] = bv, gi[(size_t)grp * B + b] = bi;
    }
    if (t == 0) {
        g.blocks_done[1 + grp] = 0; // every block of the group has counted: ready for the next launch
        __threadfence();
        last = atomicAdd(g.blocks_done, 1u) == (unsigned)groups - 1;
    }
    __syncthreads();
    if (!last) return;
    // the last group's: the groups' pairs to the token
    for (int b = 0; b < B; b++) {
        float bv;
        int bi;
        block_best(gv, gi, groups, B, b, sv, si, bv, bi);
        if (t == 0) tok[b] = bi == INT32_MAX ? 0 : bi; // a row of NaNs: 0
    }
    if (t == 0) { // the greedy append (step.cu's append_tokens), and the counter back to 0
        const int c = *g.counter;
        for (int b = 0; b < B; b++) {
            g.tokens[b] = tok[b];
            g.out[(size_t)b * g.out_cap + c] = tok[b];
            g.pos[b] += 1;
        }
        *g.counter = c + 1;
        *g.blocks_done = 0;
    }
}

// One output column: the warp's weight row (wq, this lane's chunks) against the B staged rows;
// lane b returns row b's sum.
__device__ __forceinline__ float column_sum(const uint4 (&wq)[GV_CPL], const uint4 *xs4, int kc, int B, int lane) {
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
            if (b >= B) break;
            float x[8];
            unpack8(xs4[(size_t)b * kc + c], x);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[b] = fmaf(w[i], x[i], acc[b]);
        }
    }
    float mine = 0.0f;
#pragma unroll
    for (int b = 0; b < GV_MAXB; b++) {
        if (b >= B) break;
        const float s = warp_sum(acc[b]);
        if (lane == b) mine = s;
    }
    return mine;
}

__device__ __forceinline__ void load_row(uint4 (&wq)[GV_CPL], const bf16 *w, int o, int k, int kc, int lane) {
    const uint4 *wr = (const uint4 *)(w + (size_t)o * k);
#pragma unroll
    for (int j = 0; j < GV_CPL; j++) wq[j] = lane + 32 * j < kc ? __ldg(wr + lane + 32 * j) : make_uint4(0, 0, 0, 0);
}

// grid (ceil(n / GV_WARPS)), block (32 * GV_WARPS), dynamic shared memory B * k bf16. LOOP (fp32
// out: the heads, out_proj): a smaller grid whose warps step over the columns, the next row's
// loads in flight while one is summed, so that the input is staged (and normalized) once a block
// rather than once for every GV_WARPS columns.
template <bool NORM, bool CONV, bool ARGMAX, bool LOOP, typename TO>
__global__ void __launch_bounds__(32 * GV_WARPS) gemv_kernel(GemvP p) {
    extern __shared__ uint4 xs4[]; // (B, kc) the input rows as bf16
    const cuda_gemv_args &a = p.a;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, k = a.k, kc = p.kc;
    int o = blockIdx.x * GV_WARPS + warp;
    const bool valid = o < a.n;
    // the weights never change during decode: their loads go out before the wait for the
    // previous kernel (programmatic dependent launch, a.overlap), which also lets the next
    // kernel launch early; nothing is written and no activation read before the wait
    uint4 wq[GV_CPL];
    load_row(wq, a.w, min(o, a.n - 1), k, kc, lane);
    // the conv step's weights for (lane, o) too (lane b < B and o < E do the step)
    const bool conv = CONV && valid && lane < a.B && o < a.E;
    float cw[GV_KMAX], cb = 0.0f;
    if (CONV) {
#pragma unroll
        for (int j = 0; j < GV_KMAX; j++) cw[j] = conv && j < a.K ? __ldg(a.conv_w + (size_t)o * a.K + j) : 0.0f;
        if (conv) cb = __ldg(a.conv_b + o);
    }
#if __CUDA_ARCH__ >= 900
    if (a.overlap) asm volatile("griddepcontrol.launch_dependents;\n\tgriddepcontrol.wait;" ::: "memory");
#endif
    // what this lane adds to or rolls once the sum is done, loaded now so that its latency
    // hides behind the staging below: the conv state's last K - 1 values, or fp32 out's old value
    float cs[GV_KMAX] = {}, old = 0.0f;
    float *state = conv ? a.conv_state + ((size_t)lane * a.E + o) * a.K : nullptr;
    if (CONV) {
#pragma unroll
        for (int j = 0; j < GV_KMAX - 1; j++) cs[j] = conv && j + 1 < a.K ? state[j + 1] : 0.0f;
    }
    if constexpr (std::is_same<TO, float>::value) // the first column's
        if (valid && lane < a.B && a.beta != 0.0f) old = ((const float *)a.out)[(size_t)lane * a.ld_out + o];
    for (int b = warp; NORM && b < a.B; b += GV_WARPS) {
        // rms_fwd_kernel's W = 4 loop: the same sums in the same order
        bf16 *xr = (bf16 *)(xs4 + (size_t)b * kc);
        const float *in = (const float *)a.in + (size_t)b * a.ld_in;
        float ss = 0.0f;
#pragma unroll 4
        for (int c = lane * 4; c < k; c += 128) {
            const float4 v = __ldg((const float4 *)(in + c));
            ss = fmaf(v.x, v.x, ss), ss = fmaf(v.y, v.y, ss);
            ss = fmaf(v.z, v.z, ss), ss = fmaf(v.w, v.w, ss);
        }
        ss = warp_sum(ss);
        const float r = 1.0f / sqrtf(ss / (float)k + a.eps);
#pragma unroll 4
        for (int c = lane * 4; c < k; c += 128) {
            const float4 v = __ldg((const float4 *)(in + c));
            const float4 w = __ldg((const float4 *)(a.norm_w + c));
            *(uint2 *)(xr + c) = make_uint2(bf16bits(v.x * r * w.x) | bf16bits(v.y * r * w.y) << 16,
                                            bf16bits(v.z * r * w.z) | bf16bits(v.w * r * w.w) << 16);
        }
    }
    if (!NORM) // bf16 rows: the whole block copies, one 16-byte chunk a thread at a time
        for (int i = threadIdx.x; i < a.B * kc; i += blockDim.x)
            xs4[i] = __ldg((const uint4 *)((const bf16 *)a.in + (size_t)(i / kc) * a.ld_in) + i % kc);
    __syncthreads();
    if constexpr (std::is_same<TO, float>::value) {
        float bv = -INFINITY; // ARGMAX: lane b's best (value, column) of row b so far
        int bi = INT32_MAX;
        for (int first = 1; o < a.n; first = 0) {
            const int next = LOOP ? o + gridDim.x * GV_WARPS : a.n;
            uint4 wn[GV_CPL]; // LOOP: the next column's row
            if (LOOP && next < a.n) load_row(wn, a.w, next, k, kc, lane);
            const float mine = column_sum(wq, xs4, kc, a.B, lane);
            if (lane < a.B) {
                float *out = (float *)a.out + (size_t)lane * a.ld_out + o;
                if (a.beta != 0.0f && !first) old = *out; // the first column's was loaded early
                const float r = a.beta != 0.0f ? fmaf(a.beta, old, mine) : mine;
                *out = r;
                if (ARGMAX && argmax_better(r, o, bv, bi)) bv = r, bi = o;
            }
            o = next;
            if (LOOP)
#pragma unroll
                for (int j = 0; j < GV_CPL; j++) wq[j] = wn[j];
        }
        if constexpr (ARGMAX) argmax_blocks(a.argmax, a.B, warp, lane, bv, bi);
        return;
    }
    const float mine = column_sum(wq, xs4, kc, a.B, lane);
    if (!valid || lane >= a.B) return;
    const int b = lane;
    const TO v = from_f<TO>(mine);
    ((TO *)a.out)[(size_t)b * a.ld_out + o] = v;
    if constexpr (CONV) if (conv) { // cuda_conv_step for (b, o): the state rolls left, takes v
        float pre = cb;
#pragma unroll
        for (int j = 0; j < GV_KMAX; j++) { // s[j] = old s[j + 1] (cs[j]) for j < K - 1, s[K - 1] = v
            if (j >= a.K) break;
            const float sj = j == a.K - 1 ? to_f(v) : cs[j];
            pre = fmaf(cw[j], sj, pre);
            state[j] = sj;
        }
        ((TO *)a.u)[(size_t)b * a.E + o] = from_f<TO>(siluf(pre));
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

} // namespace

extern "C" bool cuda_gemv_fits(const cuda_gemv_args *a) {
    const size_t in_elem = a->norm_w ? sizeof(float) : sizeof(bf16);
    return a->B >= 1 && a->B <= GV_MAXB && a->k % 8 == 0 && a->k <= 8 * 32 * GV_CPL && a->n >= 1 &&
           aligned16(a->w) && aligned16(a->in) && (a->ld_in * in_elem) % 16 == 0 &&
           (!a->norm_w || aligned16(a->norm_w)) && (!a->u || (a->out_dtype == SSM_DTYPE_BF16 && a->K >= 1 &&
           a->K <= GV_KMAX)) && (!a->argmax.tokens || a->out_dtype == SSM_DTYPE_F32);
}

static int gemv_blocks(int n) { return (n + GV_WARPS - 1) / GV_WARPS; }

// the blocks of kern that the device holds at once (0 on an error: the caller's launch reports it)
static unsigned resident_blocks(void (*kern)(GemvP), unsigned blk, size_t smem) {
    int dev = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, (int)blk, smem);
    return (unsigned)(sms * per_sm > 0 ? sms * per_sm : 1);
}

extern "C" void cuda_gemv_argmax_scratch(int n, int *pairs, int *counters) {
    const int blocks = gemv_blocks(n), groups = (blocks + GV_GROUP - 1) / GV_GROUP;
    *pairs = blocks + groups, *counters = 1 + groups;
}

extern "C" ssm_status cuda_gemv(const cuda_gemv_args *a, cudaStream_t st) {
    if (!a->out || !a->in || !a->w || !cuda_gemv_fits(a) || a->ld_out < a->n)
        return ssm_set_error(SSM_ERR_ARG, "cuda_gemv: bad arguments (B=%d k=%d n=%d)", a->B, a->k, a->n);
    GemvP p = {*a, a->k / 8};
    unsigned grid = (unsigned)gemv_blocks(a->n);
    const unsigned blk = 32 * GV_WARPS;
    const size_t smem = (size_t)a->B * a->k * sizeof(bf16);
    const bool norm = a->norm_w != NULL, conv = a->u != NULL;
    const bool argmax = a->argmax.tokens != NULL;
    void (*kern)(GemvP);
    if (a->out_dtype == SSM_DTYPE_F32) {
        // more blocks than stay resident at once: the LOOP kernel over as many as do
        void (*const loops[2][2])(GemvP) = {
            {gemv_kernel<false, false, false, true, float>, gemv_kernel<false, false, true, true, float>},
            {gemv_kernel<true, false, false, true, float>, gemv_kernel<true, false, true, true, float>}};
        void (*const once[2][2])(GemvP) = {
            {gemv_kernel<false, false, false, false, float>, gemv_kernel<false, false, true, false, float>},
            {gemv_kernel<true, false, false, false, float>, gemv_kernel<true, false, true, false, float>}};
        const unsigned resident = resident_blocks(loops[norm][argmax], blk, smem);
        kern = grid > resident ? loops[norm][argmax] : once[norm][argmax];
        if (grid > resident) grid = resident;
    } else if (norm) {
        kern = conv ? gemv_kernel<true, true, false, false, bf16> : gemv_kernel<true, false, false, false, bf16>;
    } else {
        kern = conv ? gemv_kernel<false, true, false, false, bf16> : gemv_kernel<false, false, false, false, bf16>;
    }
    cudaError_t e = ssm_cuda_launch(kern, dim3(grid), dim3(blk), smem, st, a->overlap != 0, p);
    if (e != cudaSuccess) return ssm_cuda_fail(e, "cuda_gemv");
    SSM_CUDA_CHECK_LAUNCH("cuda_gemv");
    return SSM_OK;
}
