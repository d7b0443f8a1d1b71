// attention.cu: causal self-attention with GQA on the GPU, the twin of libssm/cpu/attention.c
// (read them side by side: the same equations, in the same order), flash-attention style: per
// block of 64 query rows of one head, the keys in tiles of 64, the softmax online, so that no
// block holds more than a tile of scores. The products run on tensor cores (WMMA, bf16 inputs,
// fp32 accumulation); the softmax, its running sums and the rows' statistics are fp32.
//
//   s_{l,j} = scale * q_l . k_j        for j <= prefix + l (keys above are masked)
//   m' = max(m, max_j s_j);  alpha = exp(m - m');  l' = alpha l + sum_j exp(s_j - m')
//   O' = alpha O + sum_j exp(s_j - m') v_j;   at the end o = O / l, lse = m + log l
// Backward (J = sum(o * do)), p recomputed from q, k and lse:
//   D_l = do_l . o_l;  dp_{l,j} = do_l . v_j;  ds_{l,j} = p_{l,j} (dp_{l,j} - D_l)
//   dq_l = scale sum_j ds_{l,j} k_j      (one block per query tile: no atomics)
//   dk_j = scale sum_l ds_{l,j} q_l,  dv_j = sum_l p_{l,j} do_l   (one block per key tile and
//          kv head, summing over the query heads of its group in order: no atomics)
// Every output element is written by one block with its sums in a fixed order: the results are
// the same bits on every run. The exps are in base 2 (scores scaled by log2 e once).
//
// Where the GPU rounds where the CPU does not: p (forward) and ds, p (backward) enter their
// products as bf16, as in flash-attention; the sums l and D_l are fp32 (the CPU's: double).
// Head dims up to 128 (padded with zeros to 32, 64 or 128 in shared memory).
#include <mma.h>
#include <type_traits>

#include "model.cuh"

using namespace nvcuda;

namespace {

constexpr int BQ = 64, BK = 64, NW = 8, NT = NW * 32;

template <typename T> __device__ __forceinline__ bf16 to_bf(T v) { return __float2bfloat16(to_f(v)); }

// A tile of `rows` rows of n <= HDP columns from global (row stride ld; rows from r0, up to
// r_end exclusive) into shared bf16 (row stride lds), zeros past the rows or the columns.
// Rows and columns 16-byte aligned (n and ld multiples of 8 bf16 or 4 floats): vector loads.
template <typename T, int HDP>
__device__ void load_tile(bf16 *dst, int lds, const T *src, size_t ld, int r0, int r_end, int n, int rows) {
    constexpr int W = 16 / sizeof(T); // elements per 16 bytes
    if (n % W == 0 && ld % W == 0 && ((uintptr_t)src & 15) == 0) {
        for (int i = threadIdx.x; i < rows * (HDP / W); i += NT) {
            const int r = i / (HDP / W), c = i % (HDP / W) * W;
            const bool in = r0 + r < r_end && c < n;
            if constexpr (sizeof(T) == 2) {
                uint4 v = in ? *(const uint4 *)(src + (size_t)(r0 + r) * ld + c) : make_uint4(0, 0, 0, 0);
                *(uint4 *)(dst + r * lds + c) = v;
            } else {
                float4 v = in ? *(const float4 *)(src + (size_t)(r0 + r) * ld + c) : make_float4(0, 0, 0, 0);
                __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
                *(__nv_bfloat162 *)(dst + r * lds + c) = lo;
                *(__nv_bfloat162 *)(dst + r * lds + c + 2) = hi;
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < rows * HDP; i += NT) {
        int r = i / HDP, c = i % HDP;
        bf16 v = __float2bfloat16(0.0f);
        if (r0 + r < r_end && c < n) v = to_bf(src[(size_t)(r0 + r) * ld + c]);
        dst[r * lds + c] = v;
    }
}

// dst (64 x 64 fp32, row stride ldd) = A (64 x HDP) . B^T (64 x HDP), both row-major bf16:
// 16 tiles of 16 x 16, two per warp
template <int HDP>
__device__ void product_abt(float *dst, int ldd, const bf16 *A, int lda, const bf16 *B, int ldb) {
    const int w = threadIdx.x / 32;
    for (int t = w; t < 16; t += NW) {
        const int tr = t / 4, tc = t % 4;
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
        wmma::fill_fragment(fc, 0.0f);
#pragma unroll
        for (int k = 0; k < HDP; k += 16) {
            wmma::load_matrix_sync(fa, A + tr * 16 * lda + k, lda);
            wmma::load_matrix_sync(fb, B + tc * 16 * ldb + k, ldb);
            wmma::mma_sync(fc, fa, fb, fc);
        }
        wmma::store_matrix_sync(dst + tr * 16 * ldd + tc * 16, fc, ldd, wmma::mem_row_major);
    }
}

// The warp's share of a 64 x HDP accumulator: tiles w, w + NW, ... of 4 x HDP/16
template <int HDP> struct Acc {
    static constexpr int N = 4 * HDP / 16 / NW;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> f[N];
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < N; i++) wmma::fill_fragment(f[i], 0.0f);
    }
    __device__ static int tile(int i) { return threadIdx.x / 32 + i * NW; }
    // f += A (64 x 64 bf16) . B (64 x HDP bf16, row-major); A row-major or, with TA, A^T of a
    // row-major 64 x 64 (the keys' view of the queries' probabilities)
    template <bool TA> __device__ void add(const bf16 *A, int lda, const bf16 *B, int ldb) {
        using LayoutA = typename std::conditional<TA, wmma::col_major, wmma::row_major>::type;
#pragma unroll
        for (int i = 0; i < N; i++) {
            const int t = tile(i), tr = t / (HDP / 16), tc = t % (HDP / 16);
#pragma unroll
            for (int k = 0; k < 64; k += 16) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LayoutA> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, TA ? A + k * lda + tr * 16 : A + tr * 16 * lda + k, lda);
                wmma::load_matrix_sync(fb, B + k * ldb + tc * 16, ldb);
                wmma::mma_sync(f[i], fa, fb, f[i]);
            }
        }
    }
    __device__ void store(float *dst, int ldd) {
#pragma unroll
        for (int i = 0; i < N; i++) {
            const int t = tile(i), tr = t / (HDP / 16), tc = t % (HDP / 16);
            wmma::store_matrix_sync(dst + tr * 16 * ldd + tc * 16, f[i], ldd, wmma::mem_row_major);
        }
    }
};

__host__ __device__ constexpr size_t pad128(size_t b) { return (b + 127) / 128 * 128; }
// Shared memory carved in 128-byte pieces (WMMA wants 32-byte aligned tiles); carved from a
// null base on the host, it counts the bytes a kernel asks for.
struct Shm {
    char *base;
    size_t off;
    template <typename T> __host__ __device__ T *take(size_t n) {
        T *r = (T *)((uintptr_t)base + off);
        off += pad128(n * sizeof(T));
        return r;
    }
};
template <int HDP> struct Ld {
    static constexpr int H = HDP + 8;   // bf16 rows of head channels
    static constexpr int S = BK + 4;    // fp32 rows of scores
    static constexpr int P = BK + 8;    // bf16 rows of probabilities
    static constexpr int O = HDP + 4;   // fp32 rows of outputs
};
struct Args {
    int B, L, H, Hkv, hd;
    float sl2;               // scale * log2 e
    float scale;
    const bf16 *q;
    int ld_q;
    const void *k, *v;
    int ld_kv;
    size_t kv_bs;
    const int64_t *prefix;
    bf16 *out;
    int ld_out;
    float *lse;
    const bf16 *d_out;
    bf16 *dq, *dk, *dv;
    const float *delta;      // (B, H, L) do . o
};

// The forward's tiles: q, k, v (bf16), scores (fp32), p (bf16), the output accumulator (fp32),
// the rows' running max and sum
template <int HDP> struct FwdTiles {
    using D = Ld<HDP>;
    bf16 *Q, *K, *V;
    float *S;
    bf16 *P;
    float *O, *m, *l;
    __host__ __device__ explicit FwdTiles(Shm &sh)
        : Q(sh.take<bf16>(BQ * D::H)), K(sh.take<bf16>(BK * D::H)), V(sh.take<bf16>(BK * D::H)),
          S(sh.take<float>(BQ * D::S)), P(sh.take<bf16>(BQ * D::P)), O(sh.take<float>(BQ * D::O)),
          m(sh.take<float>(BQ)), l(sh.take<float>(BQ)) {}
};
// The backward's: q, do, k, v (bf16), s, dp (fp32), ds, p (bf16), an fp32 output tile, the rows'
// lse (base 2) and D
template <int HDP> struct BwdTiles {
    using D = Ld<HDP>;
    bf16 *Q, *dO, *K, *V;
    float *S, *dP;
    bf16 *dS, *P;
    float *O, *lse2, *Dr;
    __host__ __device__ explicit BwdTiles(Shm &sh)
        : Q(sh.take<bf16>(BQ * D::H)), dO(sh.take<bf16>(BQ * D::H)), K(sh.take<bf16>(BK * D::H)),
          V(sh.take<bf16>(BK * D::H)), S(sh.take<float>(BQ * D::S)), dP(sh.take<float>(BQ * D::S)),
          dS(sh.take<bf16>(BQ * D::P)), P(sh.take<bf16>(BQ * D::P)), O(sh.take<float>(BQ * D::O)),
          lse2(sh.take<float>(BQ)), Dr(sh.take<float>(BQ)) {}
};
// bytes of dynamic shared memory of a kernel whose tiles are Tiles
template <typename Tiles> size_t smem_bytes() {
    Shm sh = {NULL, 0};
    Tiles t(sh);
    (void)t;
    return sh.off;
}

// Grid (query tiles, H, B): one block per 64 query rows of head h of sequence b.
template <typename KV, int HDP>
__global__ void __launch_bounds__(NT) attention_forward_kernel(const Args a) {
    using D = Ld<HDP>;
    extern __shared__ __align__(128) char smem[];
    Shm sh = {smem, 0};
    const FwdTiles<HDP> t(sh);
    bf16 *Qs = t.Q, *Ks = t.K, *Vs = t.V, *Ps = t.P;
    float *Ss = t.S, *Os = t.O, *ms = t.m, *ls = t.l;
    // the last query tiles (the most keys) first: the causal grid's tail is then short ones
    const int l0 = (gridDim.x - 1 - blockIdx.x) * BQ, h = blockIdx.y, b = blockIdx.z, g = h / (a.H / a.Hkv);
    const int64_t pre = a.prefix ? a.prefix[b] : 0;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t row0 = (size_t)b * a.L;
    load_tile<bf16, HDP>(Qs, D::H, a.q + row0 * a.ld_q + (size_t)h * a.hd, a.ld_q, l0, a.L, a.hd, BQ);
    for (int i = threadIdx.x; i < BQ * D::O; i += NT) Os[i] = 0.0f;
    for (int i = threadIdx.x; i < BQ; i += NT) ms[i] = -INFINITY, ls[i] = 0.0f;
    const KV *kb = (const KV *)a.k + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    const KV *vb = (const KV *)a.v + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    // keys 0 .. the block's last query's absolute position
    const int last = (int)(pre + min(l0 + BQ, a.L) - 1);
    const int n_keys = (int)pre + a.L;
    for (int j0 = 0; j0 <= last; j0 += BK) {
        load_tile<KV, HDP>(Ks, D::H, kb, a.ld_kv, j0, n_keys, a.hd, BK);
        load_tile<KV, HDP>(Vs, D::H, vb, a.ld_kv, j0, n_keys, a.hd, BK);
        __syncthreads();
        // s = q k^T (unscaled)
        product_abt<HDP>(Ss, D::S, Qs, D::H, Ks, D::H);
        __syncthreads();
        // the online softmax, a warp per row: m', alpha, l', p (bf16), O *= alpha
        for (int r = w; r < BQ; r += NW) {
            // rows past the sequence see key 0 only (never written; keeps their sums finite)
            const int64_t pos = pre + min(l0 + r, a.L - 1);
            const int lim = l0 + r < a.L ? (int)(pos - j0) : -j0; // keys j0 + c, c <= lim
            float s0 = lane <= lim ? Ss[r * D::S + lane] * a.sl2 : -INFINITY;
            float s1 = lane + 32 <= lim ? Ss[r * D::S + lane + 32] * a.sl2 : -INFINITY;
            float mx = fmaxf(s0, s1);
            for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_old = ms[r], m_new = fmaxf(m_old, mx); // finite: tile 0 has key 0
            const float alpha = exp2f(m_old - m_new);
            const float p0 = exp2f(s0 - m_new), p1 = exp2f(s1 - m_new);
            float sum = p0 + p1;
            for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            Ps[r * D::P + lane] = __float2bfloat16(p0);
            Ps[r * D::P + lane + 32] = __float2bfloat16(p1);
            for (int c = lane; c < HDP; c += 32) Os[r * D::O + c] *= alpha;
            __syncwarp();
            if (lane == 0) ls[r] = alpha * ls[r] + sum, ms[r] = m_new;
        }
        __syncthreads();
        // O += p v
        Acc<HDP> acc;
#pragma unroll
        for (int i = 0; i < Acc<HDP>::N; i++) {
            const int t = Acc<HDP>::tile(i), tr = t / (HDP / 16), tc = t % (HDP / 16);
            wmma::load_matrix_sync(acc.f[i], Os + tr * 16 * D::O + tc * 16, D::O, wmma::mem_row_major);
        }
        acc.template add<false>(Ps, D::P, Vs, D::H);
        acc.store(Os, D::O);
        __syncthreads();
    }
    // o = O / l, lse = m + log l (natural log, as the CPU's)
    for (int r = w; r < BQ; r += NW) {
        const int l = l0 + r;
        if (l >= a.L) break;
        const float inv = 1.0f / ls[r];
        bf16 *o = a.out + (row0 + l) * a.ld_out + (size_t)h * a.hd;
        for (int c = lane; c < a.hd; c += 32) o[c] = __float2bfloat16(Os[r * D::O + c] * inv);
        if (lane == 0 && a.lse) a.lse[((size_t)b * a.H + h) * a.L + l] = (ms[r] + log2f(ls[r])) * SSM_LN2;
    }
}

// D_l = do_l . o_l per (row, head): a warp each
__global__ void attention_delta_kernel(const Args a) {
    const size_t item = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const size_t T = (size_t)a.B * a.L;
    if (item >= T * a.H) return;
    const size_t t = item / a.H;
    const int h = (int)(item % a.H);
    const bf16 *d = a.d_out + t * a.ld_out + (size_t)h * a.hd, *o = a.out + t * a.ld_out + (size_t)h * a.hd;
    float s = 0.0f;
    for (int c = lane; c < a.hd; c += 32) s += to_f(d[c]) * to_f(o[c]);
    for (int k = 16; k; k >>= 1) s += __shfl_xor_sync(0xffffffffu, s, k);
    const size_t b = t / a.L, l = t % a.L;
    if (lane == 0) ((float *)a.delta)[(b * a.H + h) * a.L + l] = s;
}

// p and ds of the 64 x 64 tile (queries l0.., keys j0..) from s, dp, lse and D (fp32), to bf16:
// zero where masked (key after the query, query past the sequence)
template <int HDP>
__device__ void probs_and_dscores(bf16 *Ps, bf16 *dSs, const float *Ss, const float *dPs, const float *lse2,
                                  const float *Dr, int l0, int j0, int L, float sl2) {
    using D = Ld<HDP>;
    for (int i = threadIdx.x; i < BQ * BK; i += NT) {
        const int r = i / BK, c = i % BK, l = l0 + r, j = j0 + c;
        float p = 0.0f, ds = 0.0f;
        if (l < L && j <= l) {
            p = exp2f(Ss[r * D::S + c] * sl2 - lse2[r]);
            ds = p * (dPs[r * D::S + c] - Dr[r]);
        }
        if (Ps) Ps[r * D::P + c] = __float2bfloat16(p);
        dSs[r * D::P + c] = __float2bfloat16(ds);
    }
}

// lse (natural log) of the block's rows to log2, and their D
__device__ void load_rows(float *lse2, float *Dr, const Args &a, int b, int h, int l0) {
    for (int r = threadIdx.x; r < BQ; r += NT) {
        const int l = l0 + r;
        const size_t at = ((size_t)b * a.H + h) * a.L + l;
        lse2[r] = l < a.L ? a.lse[at] * SSM_LOG2E : 0.0f;
        Dr[r] = l < a.L ? a.delta[at] : 0.0f;
    }
}

// dq: grid (query tiles, H, B); the keys of this pass (no prefix)
template <int HDP>
__global__ void __launch_bounds__(NT) attention_dq_kernel(const Args a) {
    using D = Ld<HDP>;
    extern __shared__ __align__(128) char smem[];
    Shm sh = {smem, 0};
    const BwdTiles<HDP> t(sh);
    bf16 *Qs = t.Q, *dOs = t.dO, *Ks = t.K, *Vs = t.V, *dSs = t.dS;
    float *Ss = t.S, *dPs = t.dP, *Os = t.O, *lse2 = t.lse2, *Dr = t.Dr;
    const int l0 = (gridDim.x - 1 - blockIdx.x) * BQ, h = blockIdx.y, b = blockIdx.z, g = h / (a.H / a.Hkv);
    const size_t row0 = (size_t)b * a.L;
    load_tile<bf16, HDP>(Qs, D::H, a.q + row0 * a.ld_q + (size_t)h * a.hd, a.ld_q, l0, a.L, a.hd, BQ);
    load_tile<bf16, HDP>(dOs, D::H, a.d_out + row0 * a.ld_out + (size_t)h * a.hd, a.ld_out, l0, a.L, a.hd, BQ);
    load_rows(lse2, Dr, a, b, h, l0);
    const bf16 *kb = (const bf16 *)a.k + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    const bf16 *vb = (const bf16 *)a.v + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    Acc<HDP> acc;
    acc.zero();
    const int last = min(l0 + BQ, a.L) - 1;
    for (int j0 = 0; j0 <= last; j0 += BK) {
        load_tile<bf16, HDP>(Ks, D::H, kb, a.ld_kv, j0, a.L, a.hd, BK);
        load_tile<bf16, HDP>(Vs, D::H, vb, a.ld_kv, j0, a.L, a.hd, BK);
        __syncthreads();
        product_abt<HDP>(Ss, D::S, Qs, D::H, Ks, D::H);   // s = q k^T
        product_abt<HDP>(dPs, D::S, dOs, D::H, Vs, D::H); // dp = do v^T
        __syncthreads();
        probs_and_dscores<HDP>(NULL, dSs, Ss, dPs, lse2, Dr, l0, j0, a.L, a.sl2);
        __syncthreads();
        acc.template add<false>(dSs, D::P, Ks, D::H); // dq += ds k
        __syncthreads();
    }
    acc.store(Os, D::O);
    __syncthreads();
    for (int i = threadIdx.x; i < BQ * HDP; i += NT) {
        const int r = i / HDP, c = i % HDP, l = l0 + r;
        if (l < a.L && c < a.hd)
            a.dq[(row0 + l) * a.ld_q + (size_t)h * a.hd + c] = __float2bfloat16(Os[r * D::O + c] * a.scale);
    }
}

// dk, dv: grid (key tiles, Hkv, B); sums over the group's query heads, then its query tiles
template <int HDP>
__global__ void __launch_bounds__(NT) attention_dkdv_kernel(const Args a) {
    using D = Ld<HDP>;
    extern __shared__ __align__(128) char smem[];
    Shm sh = {smem, 0};
    const BwdTiles<HDP> t(sh);
    bf16 *Qs = t.Q, *dOs = t.dO, *Ks = t.K, *Vs = t.V, *dSs = t.dS, *Ps = t.P;
    float *Ss = t.S, *dPs = t.dP, *Os = t.O, *lse2 = t.lse2, *Dr = t.Dr;
    const int j0 = blockIdx.x * BK, g = blockIdx.y, b = blockIdx.z, group = a.H / a.Hkv;
    const size_t row0 = (size_t)b * a.L;
    const bf16 *kb = (const bf16 *)a.k + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    const bf16 *vb = (const bf16 *)a.v + (size_t)b * a.kv_bs + (size_t)g * a.hd;
    load_tile<bf16, HDP>(Ks, D::H, kb, a.ld_kv, j0, a.L, a.hd, BK);
    load_tile<bf16, HDP>(Vs, D::H, vb, a.ld_kv, j0, a.L, a.hd, BK);
    Acc<HDP> dk, dv;
    dk.zero(), dv.zero();
    for (int h = g * group; h < (g + 1) * group; h++)
        for (int l0 = j0 / BQ * BQ; l0 < a.L; l0 += BQ) { // the query tiles that see these keys
            load_tile<bf16, HDP>(Qs, D::H, a.q + row0 * a.ld_q + (size_t)h * a.hd, a.ld_q, l0, a.L, a.hd, BQ);
            load_tile<bf16, HDP>(dOs, D::H, a.d_out + row0 * a.ld_out + (size_t)h * a.hd, a.ld_out, l0, a.L, a.hd, BQ);
            load_rows(lse2, Dr, a, b, h, l0);
            __syncthreads();
            product_abt<HDP>(Ss, D::S, Qs, D::H, Ks, D::H);
            product_abt<HDP>(dPs, D::S, dOs, D::H, Vs, D::H);
            __syncthreads();
            probs_and_dscores<HDP>(Ps, dSs, Ss, dPs, lse2, Dr, l0, j0, a.L, a.sl2);
            __syncthreads();
            dv.template add<true>(Ps, D::P, dOs, D::H); // dv += p^T do
            dk.template add<true>(dSs, D::P, Qs, D::H); // dk += ds^T q
            __syncthreads();
        }
    bf16 *dkb = a.dk + row0 * a.ld_kv + (size_t)g * a.hd, *dvb = a.dv + row0 * a.ld_kv + (size_t)g * a.hd;
    for (int pass = 0; pass < 2; pass++) {
        (pass ? dv : dk).store(Os, D::O);
        __syncthreads();
        const float f = pass ? 1.0f : a.scale;
        bf16 *dst = pass ? dvb : dkb;
        for (int i = threadIdx.x; i < BK * HDP; i += NT) {
            const int r = i / HDP, c = i % HDP, j = j0 + r;
            if (j < a.L && c < a.hd) dst[(size_t)j * a.ld_kv + c] = __float2bfloat16(Os[r * D::O + c] * f);
        }
        __syncthreads();
    }
}

Args device_args(const cuda_attention_args *x) {
    Args a = {};
    a.B = x->B, a.L = x->L, a.H = x->H, a.Hkv = x->Hkv, a.hd = x->hd;
    a.scale = x->scale, a.sl2 = x->scale * SSM_LOG2E;
    a.q = (const bf16 *)x->q, a.ld_q = x->ld_q;
    a.k = x->k, a.v = x->v, a.ld_kv = x->ld_kv, a.kv_bs = x->kv_batch_stride, a.prefix = x->prefix;
    a.out = (bf16 *)x->out, a.ld_out = x->ld_out, a.lse = x->lse;
    a.d_out = (const bf16 *)x->d_out, a.dq = (bf16 *)x->dq, a.dk = (bf16 *)x->dk, a.dv = (bf16 *)x->dv;
    return a;
}

ssm_status check_args(const cuda_attention_args *x, int backward) {
    if (x->B <= 0 || x->L <= 0 || x->H <= 0 || x->Hkv <= 0 || x->H % x->Hkv || x->hd <= 0)
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention: bad shape B %d L %d H %d Hkv %d hd %d", x->B, x->L,
                             x->H, x->Hkv, x->hd);
    if (x->hd > 128) return ssm_set_error(SSM_ERR_UNSUPPORTED, "cuda_attention: head_dim %d > 128", x->hd);
    if (x->ld_q < x->H * x->hd || x->ld_out < x->H * x->hd || x->ld_kv < x->Hkv * x->hd)
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention: a row stride is narrower than its heads");
    if (!x->q || !x->k || !x->v || !x->out)
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention: q, k, v and out are needed");
    if (backward && (x->prefix || x->kv_dtype != SSM_DTYPE_BF16 || !x->lse || !x->d_out || !x->dq || !x->dk ||
                     !x->dv || x->kv_batch_stride != (size_t)x->L * x->ld_kv))
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention_backward: needs this pass's bf16 keys (no prefix), "
                             "lse, d_out, dq, dk and dv");
    return SSM_OK;
}

int padded(int hd) { return hd <= 32 ? 32 : hd <= 64 ? 64 : 128; }

// Above 48 KiB of dynamic shared memory a kernel must ask for it, once per device: before a
// CUDA graph captures it (cuda_attention_prepare, from cuda_model_attach), or at its first launch.
// (a kernel and device once set stay set; setting one twice is harmless)
struct SmemSet { const void *kernel; int device; };
SmemSet smem_set[256];
int n_smem_set;
ssm_status allow_smem(void (*kernel)(const Args), size_t smem, const char *what) {
    int dev = 0;
    cudaGetDevice(&dev);
    for (int i = 0; i < n_smem_set; i++)
        if (smem_set[i].kernel == (const void *)kernel && smem_set[i].device == dev) return SSM_OK;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return ssm_cuda_fail(e, what);
    if (n_smem_set < 256) smem_set[n_smem_set++] = {(const void *)kernel, dev};
    return SSM_OK;
}

template <typename K> ssm_status launch(K kernel, dim3 grid, size_t smem, const Args &a, cudaStream_t st,
                                        const char *what) {
    SSM_TRY(allow_smem(kernel, smem, what));
    kernel<<<grid, NT, smem, st>>>(a);
    SSM_CUDA_CHECK_LAUNCH(what);
    return SSM_OK;
}

template <typename KV, int HDP> ssm_status forward_as(const Args &a, cudaStream_t st) {
    dim3 grid((a.L + BQ - 1) / BQ, a.H, a.B);
    return launch(attention_forward_kernel<KV, HDP>, grid, smem_bytes<FwdTiles<HDP>>(), a, st, "cuda_attention_forward");
}

template <int HDP> ssm_status backward_as(const Args &a, cudaStream_t st) {
    SSM_TRY(launch(attention_dq_kernel<HDP>, dim3((a.L + BQ - 1) / BQ, a.H, a.B), smem_bytes<BwdTiles<HDP>>(), a, st,
                   "cuda_attention_backward (dq)"));
    return launch(attention_dkdv_kernel<HDP>, dim3((a.L + BK - 1) / BK, a.Hkv, a.B), smem_bytes<BwdTiles<HDP>>(), a, st,
                  "cuda_attention_backward (dk, dv)");
}

} // namespace

template <int HDP> ssm_status prepare_as() {
    SSM_TRY(allow_smem(attention_forward_kernel<bf16, HDP>, smem_bytes<FwdTiles<HDP>>(), "cuda_attention_prepare"));
    SSM_TRY(allow_smem(attention_forward_kernel<float, HDP>, smem_bytes<FwdTiles<HDP>>(), "cuda_attention_prepare"));
    SSM_TRY(allow_smem(attention_dq_kernel<HDP>, smem_bytes<BwdTiles<HDP>>(), "cuda_attention_prepare"));
    return allow_smem(attention_dkdv_kernel<HDP>, smem_bytes<BwdTiles<HDP>>(), "cuda_attention_prepare");
}

extern "C" ssm_status cuda_attention_prepare(void) {
    SSM_TRY(prepare_as<32>());
    SSM_TRY(prepare_as<64>());
    return prepare_as<128>();
}

extern "C" ssm_status cuda_attention_forward(const cuda_attention_args *x, cudaStream_t st) {
    SSM_TRY(check_args(x, 0));
    if (x->L == 1 && x->prefix && x->split_work) return cuda_attention_decode(x, st);
    const Args a = device_args(x);
    const int p = padded(x->hd);
    if (x->kv_dtype == SSM_DTYPE_F32)
        return p == 32 ? forward_as<float, 32>(a, st) : p == 64 ? forward_as<float, 64>(a, st) : forward_as<float, 128>(a, st);
    return p == 32 ? forward_as<bf16, 32>(a, st) : p == 64 ? forward_as<bf16, 64>(a, st) : forward_as<bf16, 128>(a, st);
}

extern "C" size_t cuda_attention_backward_workspace(const cuda_attention_args *x) {
    return ssm_align_up((size_t)x->B * x->H * x->L * sizeof(float), 256);
}

extern "C" ssm_status cuda_attention_backward(const cuda_attention_args *x, void *work, size_t work_bytes,
                                              cudaStream_t st) {
    SSM_TRY(check_args(x, 1));
    if (work_bytes < cuda_attention_backward_workspace(x))
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention_backward: workspace of %zu bytes, needs %zu", work_bytes,
                             cuda_attention_backward_workspace(x));
    Args a = device_args(x);
    a.delta = (const float *)work;
    const size_t items = (size_t)x->B * x->L * x->H;
    attention_delta_kernel<<<(unsigned)((items + 7) / 8), 256, 0, st>>>(a);
    SSM_CUDA_CHECK_LAUNCH("cuda_attention_backward (D)");
    const int p = padded(x->hd);
    return p == 32 ? backward_as<32>(a, st) : p == 64 ? backward_as<64>(a, st) : backward_as<128>(a, st);
}
