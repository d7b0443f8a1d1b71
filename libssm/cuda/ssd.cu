// ssd.cu: the state space op of the Mamba-2 mixer on the GPU, the twin of libssm/cpu/ssd.c:
// forward (with a carried state), backward and the one-token step, by the sequential
// recurrence (fp32 state in registers; docs/kernels.md, 'Mamba-2'):
//   dt_t = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max);   A = -exp(A_log)
//   S_t[p, n] = exp(dt_t A) S_{t-1}[p, n] + dt_t x_t[p] B_t[n];   y_t[p] = sum_n C_t[n] S_t[p, n] + D x_t[p]
//
// A block owns one (sequence b, head h) and a tile of PB = 16 channels p of it: warp w holds
// channels 4w .. 4w + 3, lane l the values n = l, l + 32, ... of each, so the state of the tile
// sits in registers (4 x N / 32 floats a thread) for the whole sequence. Rows of x, B, C, dt
// (and dy) are staged in shared memory TC at a time; y's sum over n is a warp reduction.
//
// The backward runs two sweeps over the sequence, with no state stored:
//   forward:  S_t again; dC_t[n] = sum_p dy_t[p] S_t[p, n]; Z_t = dy_t . (C_t S_t) = C_t . dC_t
//   reverse:  dS_t = exp(dt_{t+1} A) dS_{t+1} + dy_t C_t^T
//             r_t[p] = sum_n dS_t[p, n] B_t[n];  dx_t = dt_t r_t + D dy_t;  q_t = x_t . r_t
//             dB_t[n] = dt_t sum_p dS_t[p, n] x_t[p];   d dt_t (through the input) = q_t
// and the gradient of the log-decay l_t = dt_t A, which needs S_{t-1} (not kept), from
//   d l_t = sum_{s >= t} (Z_s - dt_s q_s)
// (every pair of an input at r < t and an output at s >= t passes the decay of step t; Z_s sums
// the pairs r <= s ending at s, dt_s q_s those r = s starting there). All of it is linear in
// the tile's channels, so each tile keeps its own partial sums (T, H, tiles) and a last kernel
// adds them in a fixed order: then d dt = (q + A d l) softplus'(v) where the clamp passes,
// d A_log = A sum_t d l_t dt_t, d dt_bias = sum_t d dt_t, dD = sum x dy. dB and dC sum over the
// heads of a group and the tiles: fp32 atomics into the workspace, rounded to bf16 at the end.
#include "common.cuh"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int WARPS = 4, PPT = 4, PB = WARPS * PPT; // channels a thread, a block
constexpr int TC = 16;                               // rows staged at a time
constexpr int NMAX = 128;                            // d_state at most
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ float bf_at(const void *p, size_t i) {
    return __bfloat162float(__ldg((const bf16 *)p + i));
}

// dt = clamp(softplus(v), lo, hi)
__device__ __forceinline__ float dt_of(float v, float lo, float hi) {
    return fminf(fmaxf(softplusf(v), lo), hi);
}

struct Stage {
    float x[TC][PB], dy[TC][PB]; // the tile's channels (0 past P or L)
    float Bv[TC][NMAX], Cv[TC][NMAX]; // the group's B, C (0 past N or L)
    float dt[TC], dA[TC];        // dt and exp(dt A) (0 and 1 past L)
};

// Rows [t0, t0 + nn) of sequence b into the stage (dy too when the backward asks).
__device__ void load_stage(Stage &s, const cuda_ssd_args &a, int b, int h, int g, int p0, int t0,
                           int nn, float A, bool with_dy) {
    const int P = a.P, N = a.N;
    for (int i = threadIdx.x; i < TC * PB; i += blockDim.x) {
        const int tt = i / PB, j = i % PB, p = p0 + j;
        float v = 0.0f, d = 0.0f;
        if (tt < nn && p < P) {
            const size_t t = (size_t)b * a.L + t0 + tt;
            v = bf_at(a.x, t * a.ld_x + (size_t)h * P + p);
            if (with_dy) d = bf_at(a.dy, t * a.ld_y + (size_t)h * P + p);
        }
        s.x[tt][j] = v, s.dy[tt][j] = d;
    }
    for (int i = threadIdx.x; i < TC * NMAX; i += blockDim.x) {
        const int tt = i / NMAX, n = i % NMAX;
        float bv = 0.0f, cv = 0.0f;
        if (tt < nn && n < N) {
            const size_t t = (size_t)b * a.L + t0 + tt;
            bv = bf_at(a.Bm, t * a.ld_x + (size_t)g * N + n);
            cv = bf_at(a.Cm, t * a.ld_x + (size_t)g * N + n);
        }
        s.Bv[tt][n] = bv, s.Cv[tt][n] = cv;
    }
    if (threadIdx.x < TC) {
        const int tt = threadIdx.x;
        float dt = 0.0f, dA = 1.0f;
        if (tt < nn) {
            const size_t t = (size_t)b * a.L + t0 + tt;
            // dt = clamp(softplus(dt_raw + dt_bias)); the decay exp(dt A)
            dt = dt_of(bf_at(a.dt, t * a.ld_dt + h) + a.dt_bias[h], a.dt_min, a.dt_max);
            dA = expf(dt * A);
        }
        s.dt[tt] = dt, s.dA[tt] = dA;
    }
}

template <int K> __device__ __forceinline__ void warp_sum(float (&v)[K]) {
#pragma unroll
    for (int o = 16; o; o >>= 1)
#pragma unroll
        for (int j = 0; j < K; j++) v[j] += __shfl_xor_sync(FULL, v[j], o);
}

// v[lane] for lane < K without a dynamically indexed (local-memory) array
template <int K> __device__ __forceinline__ float pick(const float (&v)[K], int lane) {
    float r = v[0];
#pragma unroll
    for (int j = 1; j < K; j++) r = lane == j ? v[j] : r;
    return r;
}

// grid (tiles, B * H), block 32 * WARPS
template <int NPL>
__global__ void __launch_bounds__(32 * WARPS) ssd_fwd_kernel(cuda_ssd_args a) {
    __shared__ Stage s;
    const int H = a.H, P = a.P, N = a.N, L = a.L;
    const int b = blockIdx.y / H, h = blockIdx.y % H, g = h / (H / a.G);
    const int p0 = blockIdx.x * PB, lane = threadIdx.x & 31, pw = (threadIdx.x >> 5) * PPT;
    // A = -exp(A_log)
    const float A = -expf(a.A_log[h]), Dh = a.Dskip[h];
    float *state = a.state ? a.state + ((size_t)b * H + h) * P * N : nullptr;
    float S[PPT][NPL];
#pragma unroll
    for (int j = 0; j < PPT; j++)
#pragma unroll
        for (int k = 0; k < NPL; k++) {
            const int p = p0 + pw + j, n = lane + 32 * k;
            S[j][k] = state && p < P && n < N ? state[(size_t)p * N + n] : 0.0f;
        }
    for (int t0 = 0; t0 < L; t0 += TC) {
        const int nn = min(TC, L - t0);
        __syncthreads();
        load_stage(s, a, b, h, g, p0, t0, nn, A, false);
        __syncthreads();
        for (int tt = 0; tt < nn; tt++) {
            const float dt = s.dt[tt], dA = s.dA[tt];
            float acc[PPT];
#pragma unroll
            for (int j = 0; j < PPT; j++) {
                const float xd = dt * s.x[tt][pw + j];
                float y = 0.0f;
#pragma unroll
                for (int k = 0; k < NPL; k++) {
                    // S = exp(dt A) S + dt x B;  y = sum_n C S
                    S[j][k] = fmaf(dA, S[j][k], xd * s.Bv[tt][lane + 32 * k]);
                    y = fmaf(s.Cv[tt][lane + 32 * k], S[j][k], y);
                }
                acc[j] = y;
            }
            warp_sum(acc);
            const int p = p0 + pw + lane;
            if (lane < PPT && p < P) {
                // y += D x
                const float y = pick(acc, lane) + Dh * s.x[tt][pw + lane];
                const size_t t = (size_t)b * L + t0 + tt;
                ((bf16 *)a.y)[t * a.ld_y + (size_t)h * P + p] = __float2bfloat16_rn(y);
            }
        }
    }
    if (state)
#pragma unroll
        for (int j = 0; j < PPT; j++)
#pragma unroll
            for (int k = 0; k < NPL; k++) {
                const int p = p0 + pw + j, n = lane + 32 * k;
                if (p < P && n < N) state[(size_t)p * N + n] = S[j][k];
            }
}

// grid (tiles, B * H), block 32 * WARPS. dBC (T, 2 G N) fp32 [dB | dC], zeroed; part
// (T, H, tiles, 2) and partD (B, H, tiles) the tiles' partial sums.
template <int NPL>
__global__ void __launch_bounds__(32 * WARPS) ssd_bwd_kernel(cuda_ssd_args a, float *dBC,
                                                            float *part, float *partD) {
    __shared__ Stage s;
    __shared__ float accn[TC][NMAX]; // sum over the block's channels, per row and n
    __shared__ float sw[WARPS][TC];  // per warp and row: Z (first sweep), q (second)
    __shared__ float red[WARPS];
    const int H = a.H, P = a.P, N = a.N, L = a.L, G = a.G, GN = G * N;
    const int b = blockIdx.y / H, h = blockIdx.y % H, g = h / (H / G);
    const int tiles = gridDim.x, tile = blockIdx.x;
    const int p0 = tile * PB, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, pw = warp * PPT;
    const float A = -expf(a.A_log[h]), Dh = a.Dskip[h];
    auto part_at = [&](int t0, int tt) {
        return part + ((((size_t)b * L + t0 + tt) * H + h) * tiles + tile) * 2;
    };
    // ---- the forward sweep: S_t; dC_t = sum_p dy_t[p] S_t[p, :]; Z_t = C_t . dC_t
    float S[PPT][NPL];
#pragma unroll
    for (int j = 0; j < PPT; j++)
#pragma unroll
        for (int k = 0; k < NPL; k++) S[j][k] = 0.0f;
    for (int t0 = 0; t0 < L; t0 += TC) {
        const int nn = min(TC, L - t0);
        __syncthreads();
        load_stage(s, a, b, h, g, p0, t0, nn, A, true);
        for (int i = threadIdx.x; i < TC * NMAX; i += blockDim.x) (&accn[0][0])[i] = 0.0f;
        __syncthreads();
        for (int tt = 0; tt < nn; tt++) {
            const float dt = s.dt[tt], dA = s.dA[tt];
            float dc[NPL];
#pragma unroll
            for (int k = 0; k < NPL; k++) dc[k] = 0.0f;
#pragma unroll
            for (int j = 0; j < PPT; j++) {
                const float xd = dt * s.x[tt][pw + j], dyj = s.dy[tt][pw + j];
#pragma unroll
                for (int k = 0; k < NPL; k++) {
                    S[j][k] = fmaf(dA, S[j][k], xd * s.Bv[tt][lane + 32 * k]);
                    dc[k] = fmaf(dyj, S[j][k], dc[k]);
                }
            }
            float z[1] = {0.0f};
#pragma unroll
            for (int k = 0; k < NPL; k++) {
                z[0] = fmaf(s.Cv[tt][lane + 32 * k], dc[k], z[0]);
                atomicAdd(&accn[tt][lane + 32 * k], dc[k]);
            }
            warp_sum(z);
            if (lane == 0) sw[warp][tt] = z[0];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < nn * N; i += blockDim.x) {
            const int tt = i / N, n = i % N;
            atomicAdd(&dBC[((size_t)b * L + t0 + tt) * 2 * GN + GN + (size_t)g * N + n], accn[tt][n]);
        }
        if (threadIdx.x < nn) {
            float z = 0.0f;
            for (int w = 0; w < WARPS; w++) z += sw[w][threadIdx.x];
            part_at(t0, threadIdx.x)[0] = z;
        }
    }
    // ---- the reverse sweep
    float dS[PPT][NPL];
#pragma unroll
    for (int j = 0; j < PPT; j++)
#pragma unroll
        for (int k = 0; k < NPL; k++) dS[j][k] = 0.0f;
    float dA_next = 1.0f, dD = 0.0f, R = 0.0f; // R: thread 0's suffix sum of Z - dt q
    for (int t0 = (L - 1) / TC * TC; t0 >= 0; t0 -= TC) {
        const int nn = min(TC, L - t0);
        __syncthreads();
        load_stage(s, a, b, h, g, p0, t0, nn, A, true);
        for (int i = threadIdx.x; i < TC * NMAX; i += blockDim.x) (&accn[0][0])[i] = 0.0f;
        __syncthreads();
        for (int tt = nn - 1; tt >= 0; tt--) {
            const float dt = s.dt[tt];
            float r[PPT], db[NPL];
#pragma unroll
            for (int k = 0; k < NPL; k++) db[k] = 0.0f;
#pragma unroll
            for (int j = 0; j < PPT; j++) {
                const float xj = s.x[tt][pw + j], dyj = s.dy[tt][pw + j];
                float rj = 0.0f;
#pragma unroll
                for (int k = 0; k < NPL; k++) {
                    // dS_t = exp(dt_{t+1} A) dS_{t+1} + dy_t C_t^T
                    dS[j][k] = fmaf(dA_next, dS[j][k], dyj * s.Cv[tt][lane + 32 * k]);
                    rj = fmaf(dS[j][k], s.Bv[tt][lane + 32 * k], rj);
                    db[k] = fmaf(dS[j][k], xj, db[k]);
                }
                r[j] = rj;
                if (lane == 0) dD = fmaf(xj, dyj, dD);
            }
            warp_sum(r);
            float q = 0.0f;
#pragma unroll
            for (int j = 0; j < PPT; j++) q = fmaf(s.x[tt][pw + j], r[j], q);
            const int p = p0 + pw + lane;
            if (lane < PPT && p < P) {
                // dx = dt r + D dy
                const float dx = dt * pick(r, lane) + Dh * s.dy[tt][pw + lane];
                const size_t t = (size_t)b * L + t0 + tt;
                ((bf16 *)a.dx)[t * a.ld_x + (size_t)h * P + p] = __float2bfloat16_rn(dx);
            }
            if (lane == 0) sw[warp][tt] = q;
#pragma unroll
            for (int k = 0; k < NPL; k++) atomicAdd(&accn[tt][lane + 32 * k], dt * db[k]);
            dA_next = s.dA[tt];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < nn * N; i += blockDim.x) {
            const int tt = i / N, n = i % N;
            atomicAdd(&dBC[((size_t)b * L + t0 + tt) * 2 * GN + (size_t)g * N + n], accn[tt][n]);
        }
        if (threadIdx.x == 0)
            for (int tt = nn - 1; tt >= 0; tt--) {
                float q = 0.0f;
                for (int w = 0; w < WARPS; w++) q += sw[w][tt];
                float *pp = part_at(t0, tt);
                // d l_t = sum_{s >= t} (Z_s - dt_s q_s);  d dt (before softplus') = q + A d l
                R += pp[0] - s.dt[tt] * q;
                pp[0] = q + A * R;
                pp[1] = R * s.dt[tt];
            }
    }
    // dD: the tile's sum of x dy
    if (lane == 0) red[warp] = dD;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < WARPS; w++) t += red[w];
        partD[((size_t)b * H + h) * tiles + tile] = t;
    }
}

// One block per head: d dt per row (the tiles' sums, through softplus' and the clamp), and
// the head's parameter gradients, summed in a fixed order.
__global__ void ssd_params_kernel(cuda_ssd_args a, const float *part, const float *partD, int tiles) {
    __shared__ float rb[256], ra[256];
    const int h = blockIdx.x, H = a.H;
    const size_t T = (size_t)a.B * a.L;
    const float A = -expf(a.A_log[h]), bias = a.dt_bias[h];
    float sb = 0.0f, sa = 0.0f;
    for (size_t t = threadIdx.x; t < T; t += blockDim.x) {
        float pre = 0.0f, dl = 0.0f;
        for (int i = 0; i < tiles; i++) {
            const float *pp = part + ((t * H + h) * tiles + i) * 2;
            pre += pp[0], dl += pp[1];
        }
        // dt = clamp(softplus(v)): d v = d dt softplus'(v) where the clamp passes
        const float v = bf_at(a.dt, t * a.ld_dt + h) + bias, sp = softplusf(v);
        const float d = sp < a.dt_min || sp > a.dt_max ? 0.0f : pre * dsoftplusf(v);
        ((bf16 *)a.ddt)[t * a.ld_dt + h] = __float2bfloat16_rn(d);
        sb += d, sa += dl;
    }
    rb[threadIdx.x] = sb, ra[threadIdx.x] = sa;
    __syncthreads();
    for (int o = blockDim.x / 2; o; o >>= 1) {
        if (threadIdx.x < o) rb[threadIdx.x] += rb[threadIdx.x + o], ra[threadIdx.x] += ra[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float sD = 0.0f;
        for (int b = 0; b < a.B; b++)
            for (int i = 0; i < tiles; i++) sD += partD[((size_t)b * H + h) * tiles + i];
        a.d_dt_bias[h] += rb[0];
        // A = -exp(A_log): dA_log = A sum_t d l_t dt_t
        a.dA_log[h] += ra[0] * A;
        a.dD[h] += sD;
    }
}

// dBm, dCm (bf16, stride ld_x) <- dBC (T, 2 G N) fp32
__global__ void ssd_bc_store(cuda_ssd_args a, const float *dBC) {
    const int GN = a.G * a.N;
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, T = (size_t)a.B * a.L;
    if (i >= T * 2 * GN) return;
    const size_t t = i / (2 * GN);
    const int c = (int)(i % (2 * GN));
    bf16 *dst = c < GN ? (bf16 *)a.dBm + c : (bf16 *)a.dCm + (c - GN);
    dst[t * a.ld_x] = __float2bfloat16_rn(dBC[i]);
}

int tiles_of(const cuda_ssd_args *a) { return (a->P + PB - 1) / PB; }

ssm_status check(const cuda_ssd_args *a, const char *fn) {
    if (!a || a->B < 1 || a->L < 1 || a->H < 1 || a->P < 1 || a->G < 1 || a->N < 1 || a->H % a->G)
        return ssm_set_error(SSM_ERR_ARG, "%s: bad shape (B, L, H, P, G, N must be >= 1, G dividing H)", fn);
    if (a->N > NMAX)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: d_state %d, at most %d", fn, a->N, NMAX);
    if ((size_t)a->B * a->H > 65535)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: batch x heads = %d, at most 65535", fn, a->B * a->H);
    if (!a->x || !a->Bm || !a->Cm || !a->dt || !a->dt_bias || !a->A_log || !a->Dskip)
        return ssm_set_error(SSM_ERR_ARG, "%s: NULL input", fn);
    return SSM_OK;
}

template <int NPL> void launch_fwd(const cuda_ssd_args *a, cudaStream_t st) {
    ssd_fwd_kernel<NPL><<<dim3(tiles_of(a), a->B * a->H), 32 * WARPS, 0, st>>>(*a);
}
template <int NPL> void launch_bwd(const cuda_ssd_args *a, float *dBC, float *part, float *partD, cudaStream_t st) {
    ssd_bwd_kernel<NPL><<<dim3(tiles_of(a), a->B * a->H), 32 * WARPS, 0, st>>>(*a, dBC, part, partD);
}

struct BwdWork { size_t dBC, part, partD; };
BwdWork bwd_work(const cuda_ssd_args *a) {
    const size_t T = (size_t)a->B * a->L, tiles = tiles_of(a);
    return {ssm_align_up(T * 2 * a->G * a->N * sizeof(float), 256),
            ssm_align_up(T * a->H * tiles * 2 * sizeof(float), 256),
            ssm_align_up((size_t)a->B * a->H * tiles * sizeof(float), 256)};
}

} // namespace

extern "C" ssm_status cuda_ssd_forward(const cuda_ssd_args *a, cudaStream_t st) {
    ssm_status s = check(a, "cuda_ssd_forward");
    if (s) return s;
    if (!a->y) return ssm_set_error(SSM_ERR_ARG, "cuda_ssd_forward: NULL y");
    if (a->N <= 32) launch_fwd<1>(a, st);
    else if (a->N <= 64) launch_fwd<2>(a, st);
    else launch_fwd<4>(a, st);
    SSM_CUDA_CHECK_LAUNCH("cuda_ssd_forward");
    return SSM_OK;
}

extern "C" ssm_status cuda_ssd_step(const cuda_ssd_args *a, cudaStream_t st) {
    if (!a || a->L != 1 || !a->state)
        return ssm_set_error(SSM_ERR_ARG, "cuda_ssd_step: one row per sequence (L = 1) and a state");
    return cuda_ssd_forward(a, st); // the forward over one row, from and into the state
}

extern "C" size_t cuda_ssd_backward_workspace(const cuda_ssd_args *a) {
    if (check(a, "cuda_ssd_backward_workspace")) return 0;
    BwdWork w = bwd_work(a);
    return w.dBC + w.part + w.partD;
}

extern "C" ssm_status cuda_ssd_backward(const cuda_ssd_args *a, void *ws, size_t ws_bytes,
                                        cudaStream_t st) {
    ssm_status s = check(a, "cuda_ssd_backward");
    if (s) return s;
    if (a->state)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "cuda_ssd_backward: from a zero state only");
    if (!a->dy || !a->dx || !a->dBm || !a->dCm || !a->ddt || !a->d_dt_bias || !a->dA_log || !a->dD)
        return ssm_set_error(SSM_ERR_ARG, "cuda_ssd_backward: NULL gradient");
    BwdWork w = bwd_work(a);
    if (!ws || ws_bytes < w.dBC + w.part + w.partD)
        return ssm_set_error(SSM_ERR_ARG, "cuda_ssd_backward: workspace of %zu bytes, %zu needed",
                             ws_bytes, w.dBC + w.part + w.partD);
    float *dBC = (float *)ws, *part = (float *)((char *)ws + w.dBC),
          *partD = (float *)((char *)ws + w.dBC + w.part);
    const size_t T = (size_t)a->B * a->L, nbc = T * 2 * a->G * a->N;
    cudaError_t e = cudaMemsetAsync(dBC, 0, nbc * sizeof(float), st);
    if (e) return ssm_cuda_fail(e, "cuda_ssd_backward");
    if (a->N <= 32) launch_bwd<1>(a, dBC, part, partD, st);
    else if (a->N <= 64) launch_bwd<2>(a, dBC, part, partD, st);
    else launch_bwd<4>(a, dBC, part, partD, st);
    SSM_CUDA_CHECK_LAUNCH("cuda_ssd_backward");
    ssd_params_kernel<<<a->H, 256, 0, st>>>(*a, part, partD, tiles_of(a));
    SSM_CUDA_CHECK_LAUNCH("cuda_ssd_backward (parameters)");
    ssd_bc_store<<<(unsigned)((nbc + 255) / 256), 256, 0, st>>>(*a, dBC);
    SSM_CUDA_CHECK_LAUNCH("cuda_ssd_backward (dB, dC)");
    return SSM_OK;
}
