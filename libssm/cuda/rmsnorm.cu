// rmsnorm.cu: RMSNorm on the GPU (forward, backward), the twin of libssm/cpu/rmsnorm.c, with
// the same fp32 expressions in the same order.
//
// Forward: one warp per row (8 rows per block), two passes over the row (the second from L1).
// Backward: a block of 256 threads per row, each thread owning the same columns on every row
// of the block's run of rows, so it keeps w and its dw sums in registers; the row's dot
// product goes through one block reduction (double-buffered, one barrier per row). Each block
// writes its dw sums as one partial row of the workspace and a last kernel adds the partials
// in a fixed order (deterministic). Columns move 4 at a time (float4, or 4 bf16 in 8 bytes)
// when D is a multiple of 4 and the pointers are aligned, else one at a time.
#include "common.cuh"

namespace {

constexpr int FWD_WARPS = 8;    // rows per forward block
constexpr int BT = 256;         // backward threads per block
constexpr int MAX_ELEMS = 32;   // backward columns per thread: D <= BT * MAX_ELEMS
constexpr int MAX_PARTS = 1024; // backward blocks (partial dw rows) at most
constexpr int MAX_D_BWD = BT * MAX_ELEMS;

// W consecutive activations to and from fp32 registers (W = 1 or 4; 4 needs the pointer
// aligned to 4 elements).
template <int W> __device__ __forceinline__ void ldv(const float *p, float *v) {
    if (W == 4) {
        const float4 q = __ldg(reinterpret_cast<const float4 *>(p));
        v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
    } else {
        v[0] = __ldg(p);
    }
}
template <int W> __device__ __forceinline__ void ldv(const __nv_bfloat16 *p, float *v) {
    if (W == 4) {
        const uint2 q = __ldg(reinterpret_cast<const uint2 *>(p));
        v[0] = __uint_as_float(q.x << 16), v[1] = __uint_as_float(q.x & 0xffff0000u);
        v[2] = __uint_as_float(q.y << 16), v[3] = __uint_as_float(q.y & 0xffff0000u);
    } else {
        v[0] = ldf(p);
    }
}

__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}

// grid (ceil(T / FWD_WARPS)), block (32, FWD_WARPS): a warp per row
template <typename T, int W>
__global__ void __launch_bounds__(32 * FWD_WARPS) rms_fwd_kernel(T *out, float *rstd,
                                                                 const float *x, const float *w,
                                                                 int nrows, int D, float eps) {
    const int t = blockIdx.x * FWD_WARPS + threadIdx.y, lane = threadIdx.x;
    if (t >= nrows) return;
    const float *xr = x + (size_t)t * D; // (D)
    T *orow = out + (size_t)t * D;       // (D)
    float ss = 0.0f;
    for (int c = lane * W; c < D; c += 32 * W) {
        float v[W];
        ldv<W>(xr + c, v);
#pragma unroll
        for (int k = 0; k < W; k++) ss = fmaf(v[k], v[k], ss);
    }
    ss = warp_sum(ss);
    // rstd = 1 / sqrt(mean(x^2) + eps)
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    if (lane == 0) rstd[t] = r;
    for (int c = lane * W; c < D; c += 32 * W) {
        float v[W], wv[W];
        ldv<W>(xr + c, v);
        ldv<W>(w + c, wv);
#pragma unroll
        for (int k = 0; k < W; k++) v[k] = v[k] * r * wv[k];
        st_vec<W>(orow + c, v);
    }
}

// grid (nblk), block (BT): rows [blockIdx.x * rpb, + rpb). Thread columns: (j * BT + tid) * W
// + k for j < NV, k < W. dx += r g w - (mean(g w x) r^3) x; part[blk, :] = sum_rows g x r.
template <typename T, int W, int NV>
__global__ void __launch_bounds__(BT) rms_bwd_kernel(float *dx, const T *dout, const float *x,
                                                     const float *w, const float *rstd,
                                                     int nrows, int D, int rpb, float *part) {
    constexpr bool CACHE = NV * W < MAX_ELEMS; // keep g, x of the row in registers
    __shared__ float red[2][BT / 32];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float wr[NV][W], acc[NV][W];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int c = (j * BT + tid) * W;
        if (c < D) ldv<W>(w + c, wr[j]);
#pragma unroll
        for (int k = 0; k < W; k++) acc[j][k] = 0.0f;
    }
    const int r0 = blockIdx.x * rpb, r1 = min(nrows, r0 + rpb);
    for (int t = r0; t < r1; t++) {
        const float *xr = x + (size_t)t * D; // (D)
        const T *gr = dout + (size_t)t * D;  // (D)
        float g[NV][W], xv[NV][W], dot = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = (j * BT + tid) * W;
            if (c < D) {
                ldv<W>(gr + c, g[j]);
                ldv<W>(xr + c, xv[j]);
#pragma unroll
                for (int k = 0; k < W; k++) dot = fmaf(g[j][k] * wr[j][k], xv[j][k], dot);
            }
        }
        dot = warp_sum(dot);
        const int buf = (t - r0) & 1; // double buffer: a barrier per row suffices
        if (lane == 0) red[buf][warp] = dot;
        __syncthreads();
        dot = 0.0f;
#pragma unroll
        for (int i = 0; i < BT / 32; i++) dot += red[buf][i];
        const float r = __ldg(rstd + t);
        const float cc = dot / (float)D * r * r * r;
        float *dxr = dx + (size_t)t * D; // (D)
#pragma unroll
        for (int j = 0; j < NV; j++) {
            const int c = (j * BT + tid) * W;
            if (c < D) {
                if (!CACHE) { // 32 columns a thread: reread (L1) rather than spill
                    ldv<W>(gr + c, g[j]);
                    ldv<W>(xr + c, xv[j]);
                }
                float d[W];
                if (W == 4) {
                    const float4 q = *reinterpret_cast<const float4 *>(dxr + c);
                    d[0] = q.x, d[1] = q.y, d[2] = q.z, d[3] = q.w;
                } else {
                    d[0] = dxr[c];
                }
#pragma unroll
                for (int k = 0; k < W; k++) {
                    d[k] += r * g[j][k] * wr[j][k] - cc * xv[j][k];
                    acc[j][k] += g[j][k] * xv[j][k] * r;
                }
                st_vec<W>(dxr + c, d);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < NV; j++) {
        const int c = (j * BT + tid) * W;
        if (c < D) st_vec<W>(part + (size_t)blockIdx.x * D + c, acc[j]);
    }
}

// grid (ceil(D / 32)), block (32, 8): dw[c] += sum over the nblk partial rows, fixed order
__global__ void rms_dw_finish(float *dw, const float *part, int nblk, int D) {
    __shared__ float red[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < D)
        for (int r = threadIdx.y; r < nblk; r += 8) s += part[(size_t)r * D + c];
    red[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < D) {
        for (int i = 1; i < 8; i++) s += red[i][threadIdx.x];
        dw[c] += s;
    }
}

bool aligned(const void *p, unsigned a) { return ((uintptr_t)p & (a - 1)) == 0; }

// The backward's partition of the T rows: nblk blocks of rpb rows (the last may be short).
void bwd_blocks(int T, int *rpb, int *nblk) {
    const int parts = T < MAX_PARTS ? T : MAX_PARTS;
    *rpb = (T + parts - 1) / parts;
    *nblk = (T + *rpb - 1) / *rpb;
}

ssm_status check(const char *fn, int T, int D, ssm_dtype dtype) {
    if (T < 1 || D < 1) return ssm_set_error(SSM_ERR_ARG, "%s: T=%d D=%d must be >= 1", fn, T, D);
    if (dtype != SSM_DTYPE_F32 && dtype != SSM_DTYPE_BF16)
        return ssm_set_error(SSM_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
    return SSM_OK;
}

template <typename T>
ssm_status fwd_run(void *out, float *rstd, const float *x, const float *w, int nrows, int D,
                   float eps, cudaStream_t s) {
    const dim3 grid((nrows + FWD_WARPS - 1) / FWD_WARPS), blk(32, FWD_WARPS);
    const bool vec = D % 4 == 0 && aligned(out, 4 * sizeof(T)) && aligned(x, 16) && aligned(w, 16);
    if (vec) rms_fwd_kernel<T, 4><<<grid, blk, 0, s>>>((T *)out, rstd, x, w, nrows, D, eps);
    else rms_fwd_kernel<T, 1><<<grid, blk, 0, s>>>((T *)out, rstd, x, w, nrows, D, eps);
    SSM_CUDA_CHECK_LAUNCH("cuda_rmsnorm_forward");
    return SSM_OK;
}

template <typename T, int W, int NV>
void bwd_launch(float *dx, const void *dout, const float *x, const float *w, const float *rstd,
                int nrows, int D, int rpb, int nblk, float *part, cudaStream_t s) {
    rms_bwd_kernel<T, W, NV><<<nblk, BT, 0, s>>>(dx, (const T *)dout, x, w, rstd, nrows, D, rpb,
                                                part);
}

template <typename T>
ssm_status bwd_run(float *dx, float *dw, const void *dout, const float *x, const float *w,
                   const float *rstd, int nrows, int D, float *part, cudaStream_t s) {
    int rpb, nblk;
    bwd_blocks(nrows, &rpb, &nblk);
    const bool vec = D % 4 == 0 && aligned(dx, 16) && aligned(dout, 4 * sizeof(T)) &&
                     aligned(x, 16) && aligned(w, 16) && aligned(part, 16);
    // columns per thread, rounded up to 4, 8, 16 or 32
    const int per = (D + BT - 1) / BT, elems = per <= 4 ? 4 : per <= 8 ? 8 : per <= 16 ? 16 : 32;
    if (vec) {
        switch (elems) {
        case 4: bwd_launch<T, 4, 1>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        case 8: bwd_launch<T, 4, 2>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        case 16: bwd_launch<T, 4, 4>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        default: bwd_launch<T, 4, 8>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        }
    } else {
        switch (elems) {
        case 4: bwd_launch<T, 1, 4>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        case 8: bwd_launch<T, 1, 8>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        case 16: bwd_launch<T, 1, 16>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        default: bwd_launch<T, 1, 32>(dx, dout, x, w, rstd, nrows, D, rpb, nblk, part, s); break;
        }
    }
    SSM_CUDA_CHECK_LAUNCH("cuda_rmsnorm_backward");
    rms_dw_finish<<<(D + 31) / 32, dim3(32, 8), 0, s>>>(dw, part, nblk, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_rmsnorm_backward (dw)");
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_rmsnorm_forward(void *out, float *rstd, const float *x, const float *w,
                                           int T, int D, float eps, ssm_dtype dtype,
                                           cudaStream_t stream) {
    ssm_status st = check("cuda_rmsnorm_forward", T, D, dtype);
    if (st != SSM_OK) return st;
    if (!out || !rstd || !x || !w) return ssm_set_error(SSM_ERR_ARG, "cuda_rmsnorm_forward: NULL pointer");
    if (!(eps >= 0.0f) || isinf(eps))
        return ssm_set_error(SSM_ERR_ARG, "cuda_rmsnorm_forward: eps=%g must be finite and >= 0", (double)eps);
    return dtype == SSM_DTYPE_F32 ? fwd_run<float>(out, rstd, x, w, T, D, eps, stream)
                                   : fwd_run<__nv_bfloat16>(out, rstd, x, w, T, D, eps, stream);
}

extern "C" size_t cuda_rmsnorm_backward_workspace(int T, int D) {
    if (T < 1 || D < 1) return 0;
    int rpb, nblk;
    bwd_blocks(T, &rpb, &nblk);
    return (size_t)nblk * D * sizeof(float);
}

extern "C" ssm_status cuda_rmsnorm_backward(float *dx, float *dw, const void *d_out, const float *x,
                                            const float *w, const float *rstd, int T, int D,
                                            ssm_dtype dtype, void *workspace,
                                            size_t workspace_bytes, cudaStream_t stream) {
    ssm_status st = check("cuda_rmsnorm_backward", T, D, dtype);
    if (st != SSM_OK) return st;
    if (!dx || !dw || !d_out || !x || !w || !rstd)
        return ssm_set_error(SSM_ERR_ARG, "cuda_rmsnorm_backward: NULL pointer");
    if (D > MAX_D_BWD)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "cuda_rmsnorm_backward: D=%d, at most %d", D, MAX_D_BWD);
    const size_t need = cuda_rmsnorm_backward_workspace(T, D);
    if (!workspace || workspace_bytes < need)
        return ssm_set_error(SSM_ERR_ARG,
                             "cuda_rmsnorm_backward: workspace of %zu bytes, %zu needed "
                             "(cuda_rmsnorm_backward_workspace)", workspace_bytes, need);
    return dtype == SSM_DTYPE_F32
               ? bwd_run<float>(dx, dw, d_out, x, w, rstd, T, D, (float *)workspace, stream)
               : bwd_run<__nv_bfloat16>(dx, dw, d_out, x, w, rstd, T, D, (float *)workspace, stream);
}
