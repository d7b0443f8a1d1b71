// scan.cu: the selective scan on the GPU (forward, backward, one-token step), the twin of
// libssm/cpu/scan.c. docs/kernels.md explains the design and its costs; in short:
//
// * One thread owns one channel e of one sequence b and keeps its N states in registers; a
//   warp is 32 consecutive channels, so every load of u, dt, z, du... is one coalesced row
//   segment, and the B/C rows (shared by the warp) are staged once per tile in shared memory
//   and read as float4 broadcasts. The time loop is sequential inside a thread.
// * When B * ceil(E / 32) warps are too few to fill the GPU (long sequences at small batch)
//   the sequence is cut into K chunks: a local pass gives each chunk's end state from zero
//   and sum(delta); a combine pass carries the true entry state through the chunks
//   (h_in[c+1] = exp(A * sum delta_c) * h_in[c] + h_loc[c]); the output pass reruns every chunk
//   from its true entry state.
// * exp(delta * A) = ex2(delta * A log2 e) with A log2 e computed once per thread: one MUFU
//   operation per (step, channel, state), which is what bounds the forward.
// * Backward: a forward sweep writes the state every RSUB steps (a checkpoint, in the
//   workspace); then, sub-chunk by sub-chunk from the end, the thread recomputes RSUB states
//   into shared memory and walks them backwards with the adjoint g in registers. dB and dC
//   (sums over channels) are reduced across the warp with a butterfly reduce-scatter and
//   written as one partial row per warp; a last kernel sums the partials in a fixed order, so
//   the result is deterministic.
#include <type_traits>

#include "common.cuh"

namespace {

constexpr int TILE = 8;  // steps per staged tile of B/C rows (forward sweeps, double-buffered)
constexpr int RSUB = 16; // backward: steps per sub-chunk held in shared memory
static_assert(RSUB % TILE == 0, "checkpoints fall on tile starts");

struct ScanP {
    const void *u, *dt, *Bm, *Cm, *z; // activations (T, E) / (T, N) stride ld_bc / (T, E) stride ld_z
    int ld_bc, ld_z;
    const float *dt_bias, *A_log, *D; // (E), (E, N), (E)
    int B, L, E, N;
    int Lc, K, G, nsub; // chunk length, chunks, warps per row (ceil(E/32)), sub-chunks per chunk
    int Gw, split;      // backward: warps per row of the main kernel (ceil(E split / 32)), split
    // forward
    void *y;
    float *state; // (B, E, N)
    // step: dt_proj applied inside (dt is then its (B, R) input, row stride ld_dt)
    const void *dt_w; // (E, R)
    int R, ld_dt;
    bool overlap; // launched with programmatic dependent launch: wait before reading activations
    // chunk workspace, (B, K, N, E) unless said
    float *hin;  // state entering chunk c
    float *hloc; // end state of chunk c from a zero entry
    float *S;    // (B, K, E) sum of delta over chunk c
    float *gin;  // adjoint entering chunk c from its end: dA_{l1} g_{l1} (0 for the last)
    float *gloc; // the same from chunk c + 1 alone (zero beyond it)
    // backward
    const void *dout;
    void *du, *ddt, *dz;
    float *ckpt; // (B, K, G, nsub, NS, 32) state before each sub-chunk
    bool ckpt_given; // backward: the forward wrote ckpt (no sweep); forward: write ckpt
    float *pbc;  // (T, G, 2 NS) per-warp sums of [dB | dC]
    float *pch;  // (B * K, N + 2, E) per-(sequence, chunk) sums of [dA_log | dD | d_dt_bias]
};

__device__ __forceinline__ size_t cidx(const ScanP &p, int b, int c, int n, int e) {
    return (((size_t)b * p.K + c) * p.N + n) * p.E + e;
}

// ---- B/C tiles: rows [lt, lt + TILE) of B and C, zero past column N --------------------------
// Rows past `lend` are clamped to the last row (never read by the steps, which stop there):
// every load is unconditional, so the whole tile's loads are in flight at once.

template <typename T, int NS> struct BCTile {
    using R = typename RawT<T>::type;
    static constexpr int V = TILE * 2 * NS / 32; // values per lane
    R r[V];
    // FULL: all TILE rows exist (no clamping: the offsets are the same for every tile)
    template <bool FULL>
    __device__ __forceinline__ void load(const ScanP &p, size_t row0, int lt, int lend, int lane) {
        const T *pb = (const T *)p.Bm + (row0 + lt) * p.ld_bc;
        const T *pc = (const T *)p.Cm + (row0 + lt) * p.ld_bc;
        const int last = lend - 1 - lt;
#pragma unroll
        for (int k = 0; k < V; k++) {
            const int i = k * 32 + lane, v = i % (2 * NS);
            const int j = FULL ? i / (2 * NS) : min(i / (2 * NS), last);
            const int col = min(v < NS ? v : v - NS, p.N - 1);
            r[k] = ldraw((v < NS ? pb : pc) + j * p.ld_bc + col);
        }
    }
    __device__ __forceinline__ void load(const ScanP &p, size_t row0, int lt, int lend, int lane) {
        if (lt + TILE <= lend) load<true>(p, row0, lt, lend, lane);
        else load<false>(p, row0, lt, lend, lane);
    }
    // into s (TILE, 2 NS): row j = [B_j | C_j], zero in columns >= N
    __device__ __forceinline__ void store(float *s, int lane, int N) const {
#pragma unroll
        for (int k = 0; k < V; k++) {
            const int i = k * 32 + lane, v = i % (2 * NS);
            s[i] = (v < NS ? v : v - NS) < N ? raw2f(r[k]) : 0.0f;
        }
    }
};

// ---- the forward sweep ---------------------------------------------------------------------

enum { SWEEP_OUT = 0, SWEEP_LOCAL = 1, SWEEP_CKPT = 2 };

// One thread: channel e (clamped to E - 1 in lanes past E, whose results are never stored),
// states [n0, n0 + NS / SPLIT) of sequence b; the SPLIT threads of a channel are adjacent lanes.
// Runs steps [l0, l1) from state h (updated in place).
// SWEEP_OUT writes y (with D skip and gate); SWEEP_LOCAL returns sum(delta);
// SWEEP_CKPT (and SWEEP_OUT when ck is given: a training forward saving the backward's sweep)
// writes h to ck[(s * NS + n) * 32 + e % 32] before each RSUB-step sub-chunk s.
template <typename T, int NS, int SPLIT, int MODE, bool GATE>
__device__ __forceinline__ float fwd_sweep(const ScanP &p, int b, int e, int lane, int n0,
                                           bool act, int l0, int l1, float (&h)[NS / SPLIT],
                                           const float (&A2)[NS / SPLIT], float bias, float Dv,
                                           float *sbc /* [2][TILE][2 NS] */, float *ck) {
    constexpr int NT = NS / SPLIT;
    using R = typename RawT<T>::type;
    const int E = p.E, ec = min(e, E - 1);
    const size_t row0 = (size_t)b * p.L;
    constexpr bool gate = MODE == SWEEP_OUT && GATE;
    const T *ub = (const T *)p.u + row0 * E + ec, *dtb = (const T *)p.dt + row0 * E + ec;
    const T *zb = gate ? (const T *)p.z + row0 * p.ld_z + ec : nullptr;
    const bool store = act; // SPLIT == 1: the thread writes y
    const int part = lane % SPLIT;
    T *yb = MODE == SWEEP_OUT ? (T *)p.y + row0 * E + ec : nullptr;
    float S = 0.0f;
    R ru[TILE], rdt[TILE], rz[TILE];
    BCTile<T, NS> bc;

    // loads of tile lt (FULL: all TILE rows exist, so no clamping and loop-invariant offsets)
    auto load = [&](auto full, int lt) {
        constexpr bool FULL = decltype(full)::value;
        const int last = l1 - 1 - lt;
        const T *pu = ub + (size_t)lt * E, *pd = dtb + (size_t)lt * E;
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            const int jj = FULL ? j : min(j, last);
            ru[j] = ldraw(pu + jj * E);
            rdt[j] = ldraw(pd + jj * E);
        }
        if (gate) {
            const T *pz = zb + (size_t)lt * p.ld_z;
#pragma unroll
            for (int j = 0; j < TILE; j++) rz[j] = ldraw(pz + (FULL ? j : min(j, last)) * p.ld_z);
        }
        bc.template load<FULL>(p, row0, lt, l1, lane);
    };
    auto load_tile = [&](int lt) {
        if (lt + TILE <= l1) load(std::true_type{}, lt);
        else load(std::false_type{}, lt);
    };

    if (l0 < l1) load_tile(l0);
    int buf = 0;
    for (int lt = l0; lt < l1; lt += TILE, buf ^= 1) {
        float *s = sbc + buf * TILE * 2 * NS;
        bc.store(s, lane, p.N);
        __syncwarp();
        R cu[TILE], cdt[TILE], cz[TILE];
#pragma unroll
        for (int j = 0; j < TILE; j++) cu[j] = ru[j], cdt[j] = rdt[j], cz[j] = rz[j];
        if (lt + TILE < l1) load_tile(lt + TILE); // the next tile's loads fly while this one computes
        if ((MODE == SWEEP_CKPT || (MODE == SWEEP_OUT && ck)) && (lt - l0) % RSUB == 0) {
            float *c = ck + ((size_t)((lt - l0) / RSUB) * NS + n0) * 32 + (e & 31);
#pragma unroll
            for (int n = 0; n < NT; n++) c[n * 32] = h[n];
        }
        T *py = MODE == SWEEP_OUT ? yb + (size_t)lt * E : nullptr;
        auto step = [&](int j) {
            const float uv = raw2f(cu[j]);
            // delta = softplus(dt + dt_bias)
            const float delta = softplusf(raw2f(cdt[j]) + bias);
            const float dBu = delta * uv;
            const float4 *Bs = (const float4 *)(s + j * 2 * NS + n0);
            const float4 *Cs = (const float4 *)(s + j * 2 * NS + NS + n0);
            float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
            for (int q = 0; q < NT / 4; q++) {
                const float4 bb = Bs[q];
                // h = exp(delta * A) * h + delta * B * u
                h[4 * q + 0] = fmaf(ex2f(delta * A2[4 * q + 0]), h[4 * q + 0], dBu * bb.x);
                h[4 * q + 1] = fmaf(ex2f(delta * A2[4 * q + 1]), h[4 * q + 1], dBu * bb.y);
                h[4 * q + 2] = fmaf(ex2f(delta * A2[4 * q + 2]), h[4 * q + 2], dBu * bb.z);
                h[4 * q + 3] = fmaf(ex2f(delta * A2[4 * q + 3]), h[4 * q + 3], dBu * bb.w);
                if (MODE == SWEEP_OUT) {
                    // y = C . h
                    const float4 cc = Cs[q];
                    y0 = fmaf(h[4 * q + 0], cc.x, y0);
                    y1 = fmaf(h[4 * q + 1], cc.y, y1);
                    y0 = fmaf(h[4 * q + 2], cc.z, y0);
                    y1 = fmaf(h[4 * q + 3], cc.w, y1);
                }
            }
            if (MODE == SWEEP_LOCAL) S += delta;
            if (MODE == SWEEP_OUT) {
                float yv = y0 + y1;
                // y += D * u;  out = y * silu(z)
                float out = fmaf(Dv, uv, yv);
                if (gate) {
                    const float zz = raw2f(cz[j]);
                    out *= zz * sigmoidf_(zz);
                }
                T *dst = py + j * E;
                const T val = from_f<T>(out);
                if (store) *dst = val;
            }
        };
        // SPLIT > 1: the SPLIT threads of a channel take a group of SPLIT steps together; thread
        // `part` takes the softplus (and gate) of step j0 + part alone and shuffles hand the
        // results round, so the special-function work per channel and step stays that of one
        // thread (16 + 4 for N = 16), while the warps are SPLIT times as many.
        auto group = [&](int j0, int nvalid /* steps of the group inside the chunk, uniform */) {
            const int base = lane & ~(SPLIT - 1);
            float xm = raw2f(cdt[j0]), zm = gate ? raw2f(cz[j0]) : 0.0f;
#pragma unroll
            for (int k = 1; k < SPLIT; k++) {
                xm = part == k ? raw2f(cdt[j0 + k]) : xm;
                if (gate) zm = part == k ? raw2f(cz[j0 + k]) : zm;
            }
            // delta = softplus(dt + dt_bias);  silu(z)
            const float dm = softplusf(xm + bias);
            const float gm = gate ? zm * sigmoidf_(zm) : 1.0f;
            float outm = 0.0f;
#pragma unroll
            for (int k = 0; k < SPLIT; k++) {
                const float delta = __shfl_sync(0xffffffffu, dm, base + k);
                const float gk = gate ? __shfl_sync(0xffffffffu, gm, base + k) : 1.0f;
                if (k < nvalid) {
                    const int j = j0 + k;
                    const float uv = raw2f(cu[j]), dBu = delta * uv;
                    const float4 *Bs = (const float4 *)(s + j * 2 * NS + n0);
                    const float4 *Cs = (const float4 *)(s + j * 2 * NS + NS + n0);
                    float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
                    for (int q = 0; q < NT / 4; q++) {
                        const float4 bb = Bs[q];
                        // h = exp(delta * A) * h + delta * B * u
                        h[4 * q + 0] = fmaf(ex2f(delta * A2[4 * q + 0]), h[4 * q + 0], dBu * bb.x);
                        h[4 * q + 1] = fmaf(ex2f(delta * A2[4 * q + 1]), h[4 * q + 1], dBu * bb.y);
                        h[4 * q + 2] = fmaf(ex2f(delta * A2[4 * q + 2]), h[4 * q + 2], dBu * bb.z);
                        h[4 * q + 3] = fmaf(ex2f(delta * A2[4 * q + 3]), h[4 * q + 3], dBu * bb.w);
                        if (MODE == SWEEP_OUT) {
                            // y = C . h
                            const float4 cc = Cs[q];
                            y0 = fmaf(h[4 * q + 0], cc.x, y0);
                            y1 = fmaf(h[4 * q + 1], cc.y, y1);
                            y0 = fmaf(h[4 * q + 2], cc.z, y0);
                            y1 = fmaf(h[4 * q + 3], cc.w, y1);
                        }
                    }
                    if (MODE == SWEEP_LOCAL) S += delta;
                    if (MODE == SWEEP_OUT) {
                        float yv = y0 + y1;
#pragma unroll
                        for (int o = 1; o < SPLIT; o *= 2) yv += __shfl_xor_sync(0xffffffffu, yv, o);
                        // y += D * u;  out = y * silu(z)
                        const float out = fmaf(Dv, uv, yv) * gk;
                        outm = part == k ? out : outm;
                    }
                }
            }
            if (MODE == SWEEP_OUT) { // thread `part` writes step j0 + part
                T *dst = py + (j0 + part) * E;
                const T val = from_f<T>(outm);
                if (act && part < nvalid) *dst = val;
            }
        };
        if constexpr (SPLIT == 1) {
            if (lt + TILE <= l1) { // a whole tile: no branch between the steps, so they interleave
#pragma unroll
                for (int j = 0; j < TILE; j++) step(j);
            } else {
#pragma unroll
                for (int j = 0; j < TILE; j++)
                    if (lt + j < l1) step(j);
            }
        } else {
            static_assert(TILE % SPLIT == 0 && NT % 4 == 0, "groups of SPLIT steps, float4 states");
            if (lt + TILE <= l1) {
#pragma unroll
                for (int j0 = 0; j0 < TILE; j0 += SPLIT) group(j0, SPLIT);
            } else {
#pragma unroll
                for (int j0 = 0; j0 < TILE; j0 += SPLIT) {
                    const int nv = min(SPLIT, l1 - (lt + j0));
                    if (nv > 0) group(j0, nv);
                }
            }
        }
    }
    return S;
}

template <int NT>
__device__ __forceinline__ void load_A2(const ScanP &p, int e, int n0, bool act, float (&A2)[NT]) {
#pragma unroll
    for (int i = 0; i < NT; i++) { // A = -exp(A_log), pre-scaled by log2(e) for ex2
        const int n = n0 + i;
        A2[i] = (act && n < p.N) ? -expf(p.A_log[(size_t)e * p.N + n]) * SSM_LOG2E : 0.0f;
    }
}

// grid (ceil(E SPLIT / 32), chunks, B), one warp of 32 / SPLIT channels: chunk c = blockIdx.y.
template <typename T, int NS, int SPLIT, int MODE, bool GATE>
__global__ void __launch_bounds__(32) scan_fwd_kernel(const ScanP p) {
    constexpr int NT = NS / SPLIT;
    __shared__ __align__(16) float sbc[2 * TILE * 2 * NS];
    const int lane = threadIdx.x, part = lane % SPLIT, n0 = part * NT;
    const int e = blockIdx.x * (32 / SPLIT) + lane / SPLIT, c = blockIdx.y, b = blockIdx.z;
    const bool act = e < p.E;
    const int l0 = c * p.Lc, l1 = min(p.L, l0 + p.Lc);
    float A2[NT], h[NT];
    load_A2<NT>(p, e, n0, act, A2);
#pragma unroll
    for (int i = 0; i < NT; i++) {
        const int n = n0 + i;
        float h0 = 0.0f;
        if (MODE == SWEEP_OUT && act && n < p.N) {
            if (p.hin) h0 = p.hin[cidx(p, b, c, n, e)];
            else if (p.state) h0 = p.state[((size_t)b * p.E + e) * p.N + n];
        }
        h[i] = h0;
    }
    const float bias = act ? p.dt_bias[e] : 0.0f;
    const float Dv = (MODE == SWEEP_OUT && act) ? p.D[e] : 0.0f;
    float *ck = MODE == SWEEP_OUT && p.ckpt_given
                    ? p.ckpt + ((size_t)b * ((p.E + 31) / 32) + e / 32) * p.nsub * NS * 32
                    : nullptr;
    const float S = fwd_sweep<T, NS, SPLIT, MODE, GATE>(p, b, e, lane, n0, act, l0, l1, h, A2,
                                                        bias, Dv, sbc, ck);
    if (!act) return;
    if (MODE == SWEEP_LOCAL) {
#pragma unroll
        for (int i = 0; i < NT; i++)
            if (n0 + i < p.N) p.hloc[cidx(p, b, c, n0 + i, e)] = h[i];
        if (part == 0) p.S[((size_t)b * p.K + c) * p.E + e] = S;
    } else if (p.state && c == p.K - 1) {
#pragma unroll
        for (int i = 0; i < NT; i++)
            if (n0 + i < p.N) p.state[((size_t)b * p.E + e) * p.N + n0 + i] = h[i];
    }
}

// hin[c] for every chunk: the entry state (state or 0) carried through the chunks.
__global__ void scan_fwd_combine(const ScanP p, const float *state) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.B * p.N * p.E) return;
    const int e = (int)(i % p.E), n = (int)(i / p.E % p.N), b = (int)(i / ((size_t)p.E * p.N));
    const float a2 = -expf(p.A_log[(size_t)e * p.N + n]) * SSM_LOG2E;
    float h = state ? state[((size_t)b * p.E + e) * p.N + n] : 0.0f;
    for (int c = 0; c < p.K; c++) {
        p.hin[cidx(p, b, c, n, e)] = h;
        // h_in[c+1] = prod(dA over chunk c) h_in[c] + h_loc[c];  prod dA = exp(A sum delta)
        if (c + 1 < p.K)
            h = fmaf(ex2f(a2 * p.S[((size_t)b * p.K + c) * p.E + e]), h, p.hloc[cidx(p, b, c, n, e)]);
    }
}

// ---- backward ------------------------------------------------------------------------------

// The output gradient at row t: dy = d_out * silu(z) with the gate (dz written elsewhere).
// Local reverse pass of chunk c = blockIdx.y + 1 from zero beyond its end:
//   g = (g + dy_l C_l) * exp(delta_l A) for l from the end down to the chunk's first step.
template <typename T, int NS, bool GATE>
__global__ void __launch_bounds__(32) scan_bwd_local_kernel(const ScanP p) {
    __shared__ __align__(16) float sbc[2 * TILE * 2 * NS];
    const int lane = threadIdx.x, e = blockIdx.x * 32 + lane, c = blockIdx.y + 1, b = blockIdx.z;
    const bool act = e < p.E;
    const int E = p.E;
    const int l0 = c * p.Lc, l1 = min(p.L, l0 + p.Lc);
    const size_t row0 = (size_t)b * p.L;
    const int ec = min(e, E - 1);
    const T *dtb = (const T *)p.dt + row0 * E + ec, *dob = (const T *)p.dout + row0 * E + ec;
    constexpr bool gate = GATE;
    const T *zb = gate ? (const T *)p.z + row0 * p.ld_z + ec : nullptr;
    using R = typename RawT<T>::type;
    float A2[NS], g[NS];
    load_A2<NS>(p, e, 0, act, A2);
#pragma unroll
    for (int n = 0; n < NS; n++) g[n] = 0.0f;
    const float bias = act ? p.dt_bias[e] : 0.0f;
    R rdt[TILE], rdo[TILE], rz[TILE];
    BCTile<T, NS> bc;
    auto load = [&](int lt) {
        const int last = l1 - 1 - lt;
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            const int jj = min(j, last);
            rdt[j] = ldraw(dtb + (size_t)lt * E + jj * E);
            rdo[j] = ldraw(dob + (size_t)lt * E + jj * E);
            if (gate) rz[j] = ldraw(zb + (size_t)lt * p.ld_z + jj * p.ld_z);
        }
        bc.load(p, row0, lt, l1, lane);
    };
    const int ntiles = (l1 - l0 + TILE - 1) / TILE;
    load(l0 + (ntiles - 1) * TILE);
    int buf = 0;
    for (int m = ntiles - 1; m >= 0; m--, buf ^= 1) {
        const int lt = l0 + m * TILE;
        float *s = sbc + buf * TILE * 2 * NS;
        bc.store(s, lane, p.N);
        __syncwarp();
        float cdt[TILE], cdy[TILE];
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            cdt[j] = raw2f(rdt[j]);
            float d = act ? raw2f(rdo[j]) : 0.0f;
            if (gate) { // dy = d_out * silu(z)
                const float zz = raw2f(rz[j]);
                d *= zz * sigmoidf_(zz);
            }
            cdy[j] = d;
        }
        if (m > 0) load(lt - TILE);
#pragma unroll
        for (int j = TILE - 1; j >= 0; j--) {
            if (lt + j < l1) {
                const float delta = softplusf(cdt[j] + bias);
                const float4 *Cs = (const float4 *)(s + j * 2 * NS + NS);
#pragma unroll
                for (int q = 0; q < NS / 4; q++) {
                    const float4 cc = Cs[q];
                    g[4 * q + 0] = fmaf(cdy[j], cc.x, g[4 * q + 0]) * ex2f(delta * A2[4 * q + 0]);
                    g[4 * q + 1] = fmaf(cdy[j], cc.y, g[4 * q + 1]) * ex2f(delta * A2[4 * q + 1]);
                    g[4 * q + 2] = fmaf(cdy[j], cc.z, g[4 * q + 2]) * ex2f(delta * A2[4 * q + 2]);
                    g[4 * q + 3] = fmaf(cdy[j], cc.w, g[4 * q + 3]) * ex2f(delta * A2[4 * q + 3]);
                }
            }
        }
    }
    if (!act) return;
#pragma unroll
    for (int n = 0; n < NS; n++)
        if (n < p.N) p.gloc[cidx(p, b, c, n, e)] = g[n];
}

// gin[c] for every chunk: gin[K-1] = 0; gin[c-1] = gloc[c] + exp(A sum delta_c) gin[c].
__global__ void scan_bwd_combine(const ScanP p) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)p.B * p.N * p.E) return;
    const int e = (int)(i % p.E), n = (int)(i / p.E % p.N), b = (int)(i / ((size_t)p.E * p.N));
    const float a2 = -expf(p.A_log[(size_t)e * p.N + n]) * SSM_LOG2E;
    float g = 0.0f;
    p.gin[cidx(p, b, p.K - 1, n, e)] = 0.0f;
    for (int c = p.K - 1; c >= 1; c--) {
        g = fmaf(ex2f(a2 * p.S[((size_t)b * p.K + c) * p.E + e]), g, p.gloc[cidx(p, b, c, n, e)]);
        p.gin[cidx(p, b, c - 1, n, e)] = g;
    }
}

template <int NS, int SPLIT> struct BwdSmem {
    static constexpr int NT = NS / SPLIT, CH = 32 / SPLIT; // states per thread, channels per warp
    // hs: (RSUB + 1, NT / 4, 32) float4: row 0 the checkpoint h_{ls-1}, row j + 1 = h_{ls+j}
    static constexpr size_t HS = (size_t)(RSUB + 1) * NT * 32 * sizeof(float);
    static constexpr size_t BC = (size_t)2 * TILE * 2 * NS * sizeof(float); // >= RSUB * 2 NS
    static constexpr size_t COL = (size_t)RSUB * CH * sizeof(float);
    // sred: (32, 2 NT + 4): each lane's [dB | dC] of its states for one step, a row per lane
    // (padded so that the row writes and the column reads are free of bank conflicts)
    static constexpr int RED_LD = 2 * NT + 4;
    static constexpr size_t RED = (size_t)32 * RED_LD * sizeof(float);
    static constexpr size_t BYTES = HS + BC + 4 * COL + RED;
    static_assert(2 * TILE >= RSUB, "the B/C tile buffer holds one sub-chunk");
};

// The main backward kernel: grid (Gw, K, B), one warp of 32 / SPLIT channels; the SPLIT threads
// of a channel (adjacent lanes) keep NS / SPLIT of its states each, sum their partial
// d delta and g . B with a shuffle, and share the channel's per-step values through shared
// memory. SPLIT = 2 halves the states (and the shared memory) a warp holds, so twice the
// warps fit on an SM: the walk is bound by the latency of its shared-memory loads.
template <typename T, int NS, bool GATE, int SPLIT>
__global__ void __launch_bounds__(32) scan_bwd_kernel(const ScanP p) {
    using SM = BwdSmem<NS, SPLIT>;
    extern __shared__ __align__(16) float smem[];
    float4 *hs = (float4 *)smem;
    float *sbc = smem + SM::HS / sizeof(float);
    constexpr int NT = SM::NT, CH = SM::CH, NQ = NT / 4, V = 2 * NS;
    float *sdl = sbc + SM::BC / sizeof(float); // (RSUB, CH) delta
    float *su = sdl + RSUB * CH;               // u
    float *sdy = su + RSUB * CH;               // dy (after the gate)
    float *ssg = sdy + RSUB * CH;              // d delta / d dt = sigmoid(dt + bias)
    float *sred = ssg + RSUB * CH;             // (32, RED_LD) the dB, dC transpose

    const int lane = threadIdx.x, part = lane % SPLIT, n0 = part * NT, slot = lane / SPLIT;
    const int grp = blockIdx.x, e = grp * CH + slot, c = blockIdx.y, b = blockIdx.z;
    const bool act = e < p.E, lead = part == 0; // the lead thread stores the channel's values
    const int E = p.E, N = p.N;
    const int l0 = c * p.Lc, l1 = min(p.L, l0 + p.Lc);
    const size_t row0 = (size_t)b * p.L;
    const int ec = min(e, E - 1);
    const T *ub = (const T *)p.u + row0 * E + ec, *dtb = (const T *)p.dt + row0 * E + ec;
    const T *dob = (const T *)p.dout + row0 * E + ec;
    constexpr bool gate = GATE;
    const T *zb = gate ? (const T *)p.z + row0 * p.ld_z + ec : nullptr;
    using R = typename RawT<T>::type;
    const float msk = act ? 1.0f : 0.0f; // lanes past E contribute nothing to dB, dC
    // checkpoints: (B, K, ceil(E / 32), nsub, NS, 32), the state of channel e at lane e % 32
    float *ck = p.ckpt + (((size_t)b * p.K + c) * ((E + 31) / 32) + e / 32) * (size_t)p.nsub * NS * 32;

    float A2[NT], h[NT];
    load_A2<NT>(p, e, n0, act, A2);
#pragma unroll
    for (int i = 0; i < NT; i++)
        h[i] = (p.hin && act && n0 + i < N) ? p.hin[cidx(p, b, c, n0 + i, e)] : 0.0f;
    const float bias = act ? p.dt_bias[e] : 0.0f, Dv = act ? p.D[e] : 0.0f;

    // (a) forward sweep: the state before every sub-chunk (unless a training forward saved them)
    if (!p.ckpt_given)
        fwd_sweep<T, NS, SPLIT, SWEEP_CKPT, false>(p, b, e, lane, n0, act, l0, l1, h, A2, bias, 0.0f,
                                                   sbc, ck);

    // (b) sub-chunks from the last: recompute their states, then walk them backwards
    float gf[NT], dAacc[NT];
#pragma unroll
    for (int i = 0; i < NT; i++) {
        gf[i] = (p.gin && act && n0 + i < N) ? p.gin[cidx(p, b, c, n0 + i, e)] : 0.0f;
        dAacc[i] = 0.0f;
    }
    float accD = 0.0f, accBias = 0.0f;
    const int nsub_c = (l1 - l0 + RSUB - 1) / RSUB;
    for (int sidx = nsub_c - 1; sidx >= 0; sidx--) {
        const int ls = l0 + sidx * RSUB, ns = min(RSUB, l1 - ls);
        __syncwarp(); // every lane is done with the previous sub-chunk's B/C rows
        // every load of the sub-chunk at once (rows past the end clamped, never used)
        R ru[RSUB], rdt[RSUB], rdo[RSUB], rz[RSUB];
        {
            const int last = ns - 1;
            const T *pu = ub + (size_t)ls * E, *pd = dtb + (size_t)ls * E, *po = dob + (size_t)ls * E;
#pragma unroll
            for (int j = 0; j < RSUB; j++) {
                const int jj = min(j, last);
                ru[j] = ldraw(pu + jj * E);
                rdt[j] = ldraw(pd + jj * E);
                rdo[j] = ldraw(po + jj * E);
            }
            if (gate) {
                const T *pz = zb + (size_t)ls * p.ld_z;
#pragma unroll
                for (int j = 0; j < RSUB; j++) rz[j] = ldraw(pz + min(j, last) * p.ld_z);
            }
        }
        {
            BCTile<T, NS> t0, t1;
            t0.load(p, row0, ls, ls + ns, lane);
            t1.load(p, row0, ls + TILE, ls + ns, lane);
            t0.store(sbc, lane, N);
            t1.store(sbc + TILE * 2 * NS, lane, N);
        }
        const float *c0 = ck + ((size_t)sidx * NS + n0) * 32 + (e & 31);
#pragma unroll
        for (int i = 0; i < NT; i++) h[i] = act ? c0[i * 32] : 0.0f; // lanes past E: 0, not stale
#pragma unroll
        for (int q = 0; q < NQ; q++)
            hs[q * 32 + lane] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
        __syncwarp();
        // recompute h_{ls..ls+ns-1}; the gate's dz and dy on the way
        T *dzs = gate ? (T *)p.dz + (row0 + ls) * p.ld_z + ec : nullptr;
        auto recompute = [&](int j) {
            const float uj = msk * raw2f(ru[j]), doj = msk * raw2f(rdo[j]);
            const float x = raw2f(rdt[j]) + bias;
            const float delta = softplusf(x), dBu = delta * uj;
            const float4 *Bs = (const float4 *)(sbc + j * 2 * NS + n0);
            const float4 *Cs = (const float4 *)(sbc + j * 2 * NS + NS + n0);
            float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
            for (int q = 0; q < NQ; q++) {
                const float4 bb = Bs[q];
                h[4 * q + 0] = fmaf(ex2f(delta * A2[4 * q + 0]), h[4 * q + 0], dBu * bb.x);
                h[4 * q + 1] = fmaf(ex2f(delta * A2[4 * q + 1]), h[4 * q + 1], dBu * bb.y);
                h[4 * q + 2] = fmaf(ex2f(delta * A2[4 * q + 2]), h[4 * q + 2], dBu * bb.z);
                h[4 * q + 3] = fmaf(ex2f(delta * A2[4 * q + 3]), h[4 * q + 3], dBu * bb.w);
                hs[((j + 1) * NQ + q) * 32 + lane] =
                    make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
                if (gate) {
                    const float4 cc = Cs[q];
                    y0 = fmaf(h[4 * q + 0], cc.x, y0);
                    y1 = fmaf(h[4 * q + 1], cc.y, y1);
                    y0 = fmaf(h[4 * q + 2], cc.z, y0);
                    y1 = fmaf(h[4 * q + 3], cc.w, y1);
                }
            }
            float dy = doj;
            if (gate) {
                float yp = y0 + y1;
#pragma unroll
                for (int o = 1; o < SPLIT; o *= 2) yp += __shfl_xor_sync(0xffffffffu, yp, o);
                // out = y * silu(z): dy = d_out silu(z); dz = d_out y silu'(z)
                const float zz = raw2f(rz[j]), sg = sigmoidf_(zz);
                const float y = fmaf(Dv, uj, yp);
                T *dst = dzs + j * p.ld_z;
                const T val = from_f<T>(doj * y * sg * fmaf(zz, 1.0f - sg, 1.0f));
                if (act && lead) *dst = val;
                dy = doj * zz * sg;
            }
            if (lead) {
                sdl[j * CH + slot] = delta;
                su[j * CH + slot] = uj;
                sdy[j * CH + slot] = dy;
                ssg[j * CH + slot] = dsoftplusf(x);
            }
        };
        if (ns == RSUB) { // a whole sub-chunk: no branch between the steps
#pragma unroll
            for (int j = 0; j < RSUB; j++) recompute(j);
        } else {
#pragma unroll
            for (int j = 0; j < RSUB; j++)
                if (j < ns) recompute(j);
        }
        if (SPLIT > 1) __syncwarp(); // the lead's per-channel values, for the other threads
        // walk back: g = dL/dh_l = dy_l C_l + dA_{l+1} g_{l+1} (rolled: all it reads is in
        // shared memory, and the body is large)
#pragma unroll 1
        for (int j = ns - 1; j >= 0; j--) {
            const float dl = sdl[j * CH + slot], uv = su[j * CH + slot];
            const float dyv = sdy[j * CH + slot], dlu = dl * uv;
            const float4 *Bs = (const float4 *)(sbc + j * 2 * NS + n0);
            const float4 *Cs = (const float4 *)(sbc + j * 2 * NS + NS + n0);
            float v[2 * NT];
            float dd = 0.0f, gB = 0.0f;
#pragma unroll
            for (int q = 0; q < NQ; q++) {
                const float4 hp4 = hs[(j * NQ + q) * 32 + lane];       // h_{l-1}
                const float4 hc4 = hs[((j + 1) * NQ + q) * 32 + lane]; // h_l
                const float4 bb = Bs[q], cc = Cs[q];
                const float hp[4] = {hp4.x, hp4.y, hp4.z, hp4.w};
                const float hc[4] = {hc4.x, hc4.y, hc4.z, hc4.w};
                const float bv[4] = {bb.x, bb.y, bb.z, bb.w};
                const float cv[4] = {cc.x, cc.y, cc.z, cc.w};
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int i = 4 * q + k;
                    // y = C . h: dL/dh_l gains dy C
                    const float g = fmaf(dyv, cv[k], gf[i]);
                    const float dA = ex2f(dl * A2[i]);
                    // h = dA h_{l-1} + delta B u, dA = exp(delta A)
                    const float gdA = g * hp[k] * dA;
                    dd = fmaf(gdA, A2[i], dd);          // d delta through dA (x ln 2 below)
                    dAacc[i] = fmaf(gdA, dl, dAacc[i]); // d A
                    gB = fmaf(g, bv[k], gB);            // d(delta u) = g . B
                    v[i] = g * dlu;                     // dB = g delta u
                    v[NT + i] = dyv * hc[k];            // dC = dy h
                    gf[i] = g * dA;                     // to step l - 1
                }
            }
#pragma unroll
            for (int o = 1; o < SPLIT; o *= 2) { // the channel's sums over all its states
                dd += __shfl_xor_sync(0xffffffffu, dd, o);
                gB += __shfl_xor_sync(0xffffffffu, gB, o);
            }
            // delta = softplus(x): d x = d delta * sigmoid(x)
            const float ddelta = fmaf(dd, SSM_LN2, gB * uv);
            const float gx = ddelta * ssg[j * CH + slot];
            accBias += gx;
            accD = fmaf(dyv, uv, accD);
            const size_t t = row0 + ls + j;
            if (act && lead) {
                // y += D u: du = D dy + delta (g . B)
                const size_t o = (row0 + ls) * E + ec + (size_t)j * E;
                ((T *)p.du)[o] = from_f<T>(fmaf(gB, dl, Dv * dyv));
                ((T *)p.ddt)[o] = from_f<T>(gx);
            }
            // dB, dC summed over the warp's channels: a row per lane in shared memory, then
            // lane i sums column i over the lanes that hold that state (cheaper than a
            // shuffle butterfly's selects)
            constexpr int RL = SM::RED_LD;
            __syncwarp(); // the previous step's column reads are done
#pragma unroll
            for (int q = 0; q < 2 * NT / 4; q++)
                *(float4 *)(sred + lane * RL + 4 * q) =
                    make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
            __syncwarp();
            float *dst = p.pbc + (t * p.Gw + grp) * V;
#pragma unroll
            for (int c0 = 0; c0 < V; c0 += 32) {
                const int col = c0 + lane; // [dB | dC] column: kind, state n
                if (col < V) {
                    const int kind = col / NS, n = col % NS, src = n / NT;
                    const int k = kind * NT + n % NT;
                    float a0 = 0.0f, a1 = 0.0f;
#pragma unroll
                    for (int r = 0; r < 32; r += 2 * SPLIT) {
                        a0 += sred[(r + src) * RL + k];
                        a1 += sred[(r + SPLIT + src) * RL + k];
                    }
                    dst[col] = a0 + a1;
                }
            }
        }
    }
    if (!act) return;
    float *pc = p.pch + ((size_t)b * p.K + c) * (N + 2) * E + e;
#pragma unroll
    for (int i = 0; i < NT; i++) // A = -exp(A_log): dA_log = dA * A
        if (n0 + i < N) pc[(size_t)(n0 + i) * E] = dAacc[i] * A2[i] * SSM_LN2;
    if (!lead) return;
    pc[(size_t)N * E] = accD;
    pc[(size_t)(N + 1) * E] = accBias;
}

// dB, dC = sums of the warps' partials; row t, column v of [dB | dC].
template <typename T, int NS> __global__ void scan_bwd_finish_bc(const ScanP p, T *dB, T *dC) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int N = p.N;
    if (i >= (size_t)p.B * p.L * 2 * N) return;
    const size_t t = i / (2 * N);
    const int v = (int)(i % (2 * N));
    const int col = v < N ? v : NS + v - N;
    const float *src = p.pbc + t * p.Gw * 2 * NS + col;
    float s = 0.0f;
    for (int g = 0; g < p.Gw; g++) s += src[(size_t)g * 2 * NS];
    if (v < N) dB[t * p.ld_bc + v] = from_f<T>(s);
    else dC[t * p.ld_bc + v - N] = from_f<T>(s);
}

// d_dt_bias, dA_log, dD += sums over (sequence, chunk) of the partials.
__global__ void scan_bwd_finish_ch(const ScanP p, float *d_dt_bias, float *dA_log, float *dD) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int N = p.N, E = p.E;
    if (i >= (size_t)(N + 2) * E) return;
    const int e = (int)(i % E), j = (int)(i / E);
    float s = 0.0f;
    for (int bc = 0; bc < p.B * p.K; bc++) s += p.pch[((size_t)bc * (N + 2) + j) * E + e];
    if (j < N) dA_log[(size_t)e * N + j] += s;
    else if (j == N) dD[e] += s;
    else d_dt_bias[e] += s;
}

// ---- step (decode) -------------------------------------------------------------------------

template <typename T, int NS> __global__ void scan_step_kernel(const ScanP p) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.B * p.E) return;
    const int b = i / p.E, e = i % p.E, N = p.N;
    const float uv = ldf((const T *)p.u + i), x = ldf((const T *)p.dt + i) + p.dt_bias[e];
    const T *Bm = (const T *)p.Bm + (size_t)b * p.ld_bc, *Cm = (const T *)p.Cm + (size_t)b * p.ld_bc;
    float *h = p.state + (size_t)i * N;
    // delta = softplus(dt + dt_bias)
    const float delta = softplusf(x), dBu = delta * uv;
    float y = 0.0f;
    for (int n = 0; n < N; n++) {
        const float a2 = -expf(p.A_log[(size_t)e * N + n]) * SSM_LOG2E;
        // h = exp(delta * A) * h + delta * B * u;  y = C . h
        const float hn = fmaf(ex2f(delta * a2), h[n], dBu * ldf(Bm + n));
        h[n] = hn;
        y = fmaf(hn, ldf(Cm + n), y);
    }
    // y += D u;  out = y * silu(z)
    y = fmaf(p.D[e], uv, y);
    if (p.z) {
        const float zz = ldf((const T *)p.z + (size_t)b * p.ld_z + e);
        y *= zz * sigmoidf_(zz);
    }
    ((T *)p.y)[i] = from_f<T>(y);
}

constexpr int STEP_RMAX = 16; // dt_proj weights a thread keeps in registers: R <= STEP_RMAX * TPC

// The step with TPC = NS / 4 threads per channel, 4 states each (N a multiple of 4): the state
// moves as float4, a warp's loads cover 32 / TPC whole channels (coalesced), and the partial
// C . h are summed with shuffles. With dt_w, dt_proj runs here too (a dot of R per channel,
// shared by the channel's threads), which saves decode a GEMM launch per layer. With p.overlap
// (programmatic dependent launch) the weights are loaded before the wait for the kernel ahead.
template <typename T, int TPC> __global__ void scan_step_vec_kernel(const ScanP p) {
    const int gid = blockIdx.x * blockDim.x + threadIdx.x, q = gid % TPC;
    const int n_ch = p.B * p.E, i = min(gid / TPC, n_ch - 1); // clamped: all lanes shuffle
    const bool act = gid / TPC < n_ch;
    const int b = i / p.E, e = i % p.E, N = p.N, n0 = 4 * q;
    // the weights first: under programmatic dependent launch (p.overlap) these loads overlap
    // the kernel before; no activation or state is read before the wait
    const float bias = p.dt_bias[e], Dv = p.D[e];
    const float4 a4 = n0 < N ? *(const float4 *)(p.A_log + (size_t)e * N + n0) : make_float4(0, 0, 0, 0);
    const T *w = p.dt_w ? (const T *)p.dt_w + (size_t)e * p.R : nullptr;
    const bool wreg = w && p.R <= STEP_RMAX * TPC;
    float wr[STEP_RMAX]; // this thread's r = q, q + TPC, ... of dt_w's row e
#pragma unroll
    for (int j = 0; j < STEP_RMAX; j++) wr[j] = wreg && q + TPC * j < p.R ? ldf(w + q + TPC * j) : 0.0f;
#if __CUDA_ARCH__ >= 900
    if (p.overlap) asm volatile("griddepcontrol.launch_dependents;\n\tgriddepcontrol.wait;" ::: "memory");
#endif
    // every activation and the state at once, before the dt dot needs the first of them
    const float uv = ldf((const T *)p.u + i);
    const float zz = p.z ? ldf((const T *)p.z + (size_t)b * p.ld_z + e) : 0.0f;
    float bm[4] = {}, cm[4] = {}, h[4] = {};
    float4 *hp = (float4 *)(p.state + (size_t)i * N + n0);
    if (n0 < N) {
        const T *Bm = (const T *)p.Bm + (size_t)b * p.ld_bc + n0, *Cm = (const T *)p.Cm + (size_t)b * p.ld_bc + n0;
        const float4 h4 = *hp;
        h[0] = h4.x, h[1] = h4.y, h[2] = h4.z, h[3] = h4.w;
#pragma unroll
        for (int k = 0; k < 4; k++) bm[k] = ldf(Bm + k), cm[k] = ldf(Cm + k);
    }
    float x;
    if (w) { // dt = dt_proj(x_dbl[:, :R]) without its bias
        const T *xd = (const T *)p.dt + (size_t)b * p.ld_dt;
        x = 0.0f;
        if (wreg) {
#pragma unroll
            for (int j = 0; j < STEP_RMAX; j++)
                if (q + TPC * j < p.R) x = fmaf(wr[j], ldf(xd + q + TPC * j), x);
        } else {
            for (int r = q; r < p.R; r += TPC) x = fmaf(ldf(w + r), ldf(xd + r), x);
        }
#pragma unroll
        for (int o = TPC / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o, TPC);
        x = to_f(from_f<T>(x)); // rounded like the parallel path's stored dt
    } else {
        x = ldf((const T *)p.dt + i);
    }
    x += bias;
    const float delta = softplusf(x), dBu = delta * uv;
    float y = 0.0f;
    if (n0 < N) {
        const float al[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
        for (int k = 0; k < 4; k++) { // h = exp(delta * A) * h + delta * B * u;  y = C . h
            const float a2 = -expf(al[k]) * SSM_LOG2E;
            h[k] = fmaf(ex2f(delta * a2), h[k], dBu * bm[k]);
            y = fmaf(h[k], cm[k], y);
        }
        if (act) *hp = make_float4(h[0], h[1], h[2], h[3]);
    }
#pragma unroll
    for (int o = TPC / 2; o > 0; o /= 2) y += __shfl_xor_sync(0xffffffffu, y, o, TPC);
    if (!act || q) return;
    // y += D u;  out = y * silu(z)
    y = fmaf(Dv, uv, y);
    if (p.z) y *= zz * sigmoidf_(zz);
    ((T *)p.y)[i] = from_f<T>(y);
}

// ---- host side -----------------------------------------------------------------------------

struct Plan {
    int Lc, K, G, nsub, NS;
    int split; // forward: threads per channel (1, or 2 with NS / 2 states each)
};

static int ns_for(int N) { return N <= 8 ? 8 : N <= 16 ? 16 : 32; }

// Split (forward): with fewer than two warps of 32 channels per SM sub-partition (4 per SM),
// 2 or 4 threads share a channel's states (and take turns at its softplus and gate), which
// multiplies the warps that hide each other's latency at no extra special-function work.
// Chunking: one pass over the whole sequence when the warps already give every sub-partition
// at least half a warp: chunking costs a second pass over the data. Otherwise cut into chunks
// so that about 16 (forward) or 2 (backward, shared-memory bound) warps per sub-partition
// exist (at least 256 steps a chunk).
static Plan make_plan(const ssm_scan_args *a, bool bwd) {
    Plan pl;
    pl.G = (a->E + 31) / 32;
    pl.NS = ns_for(a->N);
    const int L = a->L > 0 ? a->L : 1;
    const long smsp = 4L * ssm_cuda_sm_count();
    pl.split = 1;
    if (bwd) {
        // two threads per channel unless forced to one: half the states and shared memory per
        // warp, so twice the warps fit on an SM (measured: see docs/kernels.md)
        // (when the sequence is not cut into chunks: with few channels, B = 1, the chunks
        // already give the warps, and one thread per channel measured faster there)
        const long warps1 = (long)a->B * pl.G;
        pl.split = a->split == 1 ? 1 : a->split == 2 || 4 * warps1 >= smsp ? 2 : 1;
    } else {
        const int smax = pl.NS >= 16 ? 4 : 2; // a thread keeps a multiple of 4 states
        if (a->split == 1 || a->split == 2 || a->split == 4) {
            pl.split = a->split < smax ? a->split : smax;
        } else {
            // more threads per channel when one would leave sub-partitions without a warp of
            // their own (measured on an H100 at B=8, E=1536, with the training forward's
            // checkpoint writes compiled in: split 1 0.510 ms, 2 0.441 ms, 4 0.396 ms)
            // (4 only where the sequence is not cut into chunks: at B=1, L=131072 with chunks,
            // 2 takes 3.51 ms and 4 takes 4.73)
            const long warps1 = (long)a->B * pl.G;
            if (warps1 < 2 * smsp) pl.split = 2 * smax * warps1 >= smsp ? smax : 2;
        }
    }
    int Lc;
    if (a->chunk > 0) {
        Lc = a->chunk;
    } else {
        const long warps = (long)a->B * ((a->E * pl.split + 31) / 32);
        if (2 * warps >= smsp) {
            Lc = L;
        } else {
            // many more chunks than sub-partitions: at B=1, L=131072 chunks of 1024 (12288 warps)
            // beat chunks of 6000 (2100 warps), 3.99 ms against 4.54 ms
            const long target = (bwd ? 2 : 16) * smsp;
            long K = (target + warps - 1) / warps;
            Lc = (int)((L + K - 1) / K);
            Lc = (Lc + RSUB - 1) / RSUB * RSUB;
            if (Lc < 256) Lc = 256;
        }
    }
    if (Lc > L) Lc = L;
    if ((L + Lc - 1) / Lc > 65535) Lc = (L + 65534) / 65535; // grid.y limit
    pl.Lc = Lc;
    pl.K = (L + Lc - 1) / Lc;
    pl.nsub = (Lc + RSUB - 1) / RSUB;
    return pl;
}

static ssm_status check_args(const ssm_scan_args *a, const char *fn) {
    if (!a) return ssm_set_error(SSM_ERR_ARG, "%s: args is NULL", fn);
    if (a->B < 1 || a->L < 1 || a->E < 1 || a->N < 1)
        return ssm_set_error(SSM_ERR_ARG, "%s: B=%d L=%d E=%d N=%d must all be >= 1", fn, a->B,
                             a->L, a->E, a->N);
    if (a->N > 32)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: d_state N=%d, the CUDA scan supports N <= 32",
                             fn, a->N);
    if (a->dtype != SSM_DTYPE_F32 && a->dtype != SSM_DTYPE_BF16)
        return ssm_set_error(SSM_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)a->dtype);
    if (!a->u || !a->dt || !a->Bm || !a->Cm || !a->dt_bias || !a->A_log || !a->D)
        return ssm_set_error(SSM_ERR_ARG, "%s: a required input pointer is NULL", fn);
    if (a->ld_bc < a->N || (a->z && a->ld_z < a->E))
        return ssm_set_error(SSM_ERR_ARG, "%s: row strides ld_bc=%d (>= N=%d), ld_z=%d (>= E=%d)",
                             fn, a->ld_bc, a->N, a->ld_z, a->E);
    if ((long)a->B * a->L > INT32_MAX / 2)
        return ssm_set_error(SSM_ERR_ARG, "%s: B * L = %ld rows is too many", fn, (long)a->B * a->L);
    return SSM_OK;
}

static ScanP make_params(const ssm_scan_args *a, const Plan &pl) {
    ScanP p = {};
    p.u = a->u, p.dt = a->dt, p.Bm = a->Bm, p.Cm = a->Cm, p.z = a->z;
    p.ld_bc = a->ld_bc, p.ld_z = a->ld_z;
    p.dt_bias = a->dt_bias, p.A_log = a->A_log, p.D = a->D;
    p.B = a->B, p.L = a->L, p.E = a->E, p.N = a->N;
    p.Lc = pl.Lc, p.K = pl.K, p.G = pl.G, p.nsub = pl.nsub;
    p.Gw = (a->E * pl.split + 31) / 32, p.split = pl.split;
    return p;
}

static size_t fwd_layout(const Plan &pl, const ssm_scan_args *a, ScanP *p, void *ws) {
    Carve cv = {(char *)ws, 0};
    if (pl.K > 1) {
        const size_t bkne = (size_t)a->B * pl.K * a->N * a->E;
        float *hin = cv.take(bkne), *hloc = cv.take(bkne), *S = cv.take((size_t)a->B * pl.K * a->E);
        if (p) p->hin = hin, p->hloc = hloc, p->S = S;
    }
    return cv.off;
}

// Bytes of the states a training forward saves for the backward (0: this shape does not, when
// either pass cuts the sequence into chunks).
static size_t ckpt_bytes(const ssm_scan_args *a) {
    const Plan pf = make_plan(a, false), pb = make_plan(a, true);
    if (pf.K != 1 || pb.K != 1) return 0;
    return (size_t)a->B * pb.G * pb.nsub * pb.NS * 32 * sizeof(float);
}

static size_t bwd_layout(const Plan &pl, const ssm_scan_args *a, ScanP *p, void *ws) {
    Carve cv = {(char *)ws, 0};
    const bool given = a->ckpt && ckpt_bytes(a) > 0;
    const size_t bkne = (size_t)a->B * pl.K * a->N * a->E;
    if (pl.K > 1) {
        float *hin = cv.take(bkne), *hloc = cv.take(bkne), *gin = cv.take(bkne),
              *gloc = cv.take(bkne), *S = cv.take((size_t)a->B * pl.K * a->E);
        if (p) p->hin = hin, p->hloc = hloc, p->gin = gin, p->gloc = gloc, p->S = S;
    }
    float *ck = given ? a->ckpt : cv.take((size_t)a->B * pl.K * pl.G * pl.nsub * pl.NS * 32);
    float *pbc = cv.take((size_t)a->B * a->L * ((a->E * pl.split + 31) / 32) * 2 * pl.NS);
    float *pch = cv.take((size_t)a->B * pl.K * (a->N + 2) * a->E);
    if (p) p->ckpt = ck, p->ckpt_given = given, p->pbc = pbc, p->pch = pch;
    return cv.off;
}

static unsigned blocks_for(size_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

template <typename T, int NS, int SPLIT>
static ssm_status fwd_run(ScanP p, float *state, cudaStream_t s) {
    const dim3 blk(32);
    const unsigned gx = (unsigned)((p.E * SPLIT + 31) / 32);
    if (p.K > 1) {
        scan_fwd_kernel<T, NS, SPLIT, SWEEP_LOCAL, false><<<dim3(gx, p.K - 1, p.B), blk, 0, s>>>(p);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_forward (local pass)");
        const size_t n = (size_t)p.B * p.N * p.E;
        scan_fwd_combine<<<blocks_for(n, 256), 256, 0, s>>>(p, state);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_forward (combine)");
    }
    p.state = state;
    if (p.z)
        scan_fwd_kernel<T, NS, SPLIT, SWEEP_OUT, true><<<dim3(gx, p.K, p.B), blk, 0, s>>>(p);
    else
        scan_fwd_kernel<T, NS, SPLIT, SWEEP_OUT, false><<<dim3(gx, p.K, p.B), blk, 0, s>>>(p);
    SSM_CUDA_CHECK_LAUNCH("cuda_scan_forward");
    return SSM_OK;
}

// The main backward kernel with SPLIT threads per channel (its shared memory set once).
template <typename T, int NS, int SPLIT> static ssm_status bwd_main(const ScanP &p, cudaStream_t s) {
    const size_t smem = BwdSmem<NS, SPLIT>::BYTES;
    static bool attr_set = false; // per instantiation; setting it twice is harmless
    if (!attr_set) {
        cudaError_t err = cudaFuncSetAttribute(scan_bwd_kernel<T, NS, true, SPLIT>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err == cudaSuccess)
            err = cudaFuncSetAttribute(scan_bwd_kernel<T, NS, false, SPLIT>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err != cudaSuccess) return ssm_cuda_fail(err, "cuda_scan_backward (shared memory)");
        attr_set = true;
    }
    const dim3 grid(p.Gw, p.K, p.B);
    if (p.z) scan_bwd_kernel<T, NS, true, SPLIT><<<grid, 32, smem, s>>>(p);
    else scan_bwd_kernel<T, NS, false, SPLIT><<<grid, 32, smem, s>>>(p);
    SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward");
    return SSM_OK;
}
#define SSM_TRY_BWD(call)                \
    do {                                 \
        ssm_status st_ = call;           \
        if (st_ != SSM_OK) return st_;   \
    } while (0)

template <typename T, int NS>
static ssm_status bwd_run(ScanP p, void *dBm, void *dCm, float *d_dt_bias, float *dA_log,
                          float *dD, cudaStream_t s) {
    const dim3 blk(32);
    if (p.K > 1) {
        scan_fwd_kernel<T, NS, 1, SWEEP_LOCAL, false><<<dim3(p.G, p.K, p.B), blk, 0, s>>>(p);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (forward local pass)");
        const size_t n = (size_t)p.B * p.N * p.E;
        scan_fwd_combine<<<blocks_for(n, 256), 256, 0, s>>>(p, nullptr);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (forward combine)");
        if (p.z) scan_bwd_local_kernel<T, NS, true><<<dim3(p.G, p.K - 1, p.B), blk, 0, s>>>(p);
        else scan_bwd_local_kernel<T, NS, false><<<dim3(p.G, p.K - 1, p.B), blk, 0, s>>>(p);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (backward local pass)");
        scan_bwd_combine<<<blocks_for(n, 256), 256, 0, s>>>(p);
        SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (backward combine)");
    }
    if (p.split == 1) SSM_TRY_BWD((bwd_main<T, NS, 1>(p, s)));
    else SSM_TRY_BWD((bwd_main<T, NS, 2>(p, s)));
    const size_t nbc = (size_t)p.B * p.L * 2 * p.N;
    scan_bwd_finish_bc<T, NS><<<blocks_for(nbc, 256), 256, 0, s>>>(p, (T *)dBm, (T *)dCm);
    SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (dB, dC)");
    const size_t nch = (size_t)(p.N + 2) * p.E;
    scan_bwd_finish_ch<<<blocks_for(nch, 256), 256, 0, s>>>(p, d_dt_bias, dA_log, dD);
    SSM_CUDA_CHECK_LAUNCH("cuda_scan_backward (parameter gradients)");
    return SSM_OK;
}

template <typename T, int NS> static ssm_status step_run(ScanP p, cudaStream_t s) {
    const size_t n = (size_t)p.B * p.E;
    if (p.N % 4 == 0) { // the state as float4 (every (b, e) row starts 16-byte aligned)
        constexpr int TPC = NS / 4;
        cudaError_t e = ssm_cuda_launch(scan_step_vec_kernel<T, TPC>, dim3(blocks_for(n * TPC, 128)), dim3(128), 0, s,
                                        p.overlap, p);
        if (e != cudaSuccess) return ssm_cuda_fail(e, "cuda_scan_step");
    } else if (p.dt_w) {
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "cuda_scan_step: a fused dt_proj needs d_state a multiple of 4");
    } else {
        scan_step_kernel<T, NS><<<blocks_for(n, 128), 128, 0, s>>>(p);
    }
    SSM_CUDA_CHECK_LAUNCH("cuda_scan_step");
    return SSM_OK;
}

// Dispatch on (dtype, NS): F is a function template name taking <T, NS>.
#define SCAN_DISPATCH(dtype, NS, CALL)                                                        \
    do {                                                                                      \
        if ((dtype) == SSM_DTYPE_F32) {                                                      \
            if ((NS) == 8) { using T = float; constexpr int NSC = 8; CALL; }                  \
            else if ((NS) == 16) { using T = float; constexpr int NSC = 16; CALL; }           \
            else { using T = float; constexpr int NSC = 32; CALL; }                           \
        } else {                                                                              \
            if ((NS) == 8) { using T = __nv_bfloat16; constexpr int NSC = 8; CALL; }          \
            else if ((NS) == 16) { using T = __nv_bfloat16; constexpr int NSC = 16; CALL; }   \
            else { using T = __nv_bfloat16; constexpr int NSC = 32; CALL; }                   \
        }                                                                                     \
    } while (0)

} // namespace

extern "C" size_t cuda_scan_forward_workspace(const ssm_scan_args *a) {
    if (check_args(a, "cuda_scan_forward_workspace") != SSM_OK) return 0;
    return fwd_layout(make_plan(a, false), a, nullptr, nullptr);
}

extern "C" ssm_status cuda_scan_forward(const ssm_scan_args *a, void *out, float *state,
                                        void *ws, size_t ws_bytes, cudaStream_t stream) {
    ssm_status st = check_args(a, "cuda_scan_forward");
    if (st != SSM_OK) return st;
    if (!out) return ssm_set_error(SSM_ERR_ARG, "cuda_scan_forward: out is NULL");
    const Plan pl = make_plan(a, false);
    const size_t need = fwd_layout(pl, a, nullptr, nullptr);
    if (need > 0 && (!ws || ws_bytes < need))
        return ssm_set_error(SSM_ERR_ARG,
                             "cuda_scan_forward: workspace of %zu bytes, %zu needed "
                             "(cuda_scan_forward_workspace)", ws_bytes, need);
    ScanP p = make_params(a, pl);
    fwd_layout(pl, a, &p, ws);
    p.y = out;
    if (a->ckpt && ckpt_bytes(a) > 0) {
        if (state)
            return ssm_set_error(SSM_ERR_ARG, "cuda_scan_forward: checkpoints for the backward "
                                 "need a forward from the zero state");
        p.ckpt = a->ckpt, p.ckpt_given = true;
    }
    if (pl.split == 4)
        SCAN_DISPATCH(a->dtype, pl.NS, return (fwd_run<T, NSC, (NSC >= 16 ? 4 : 2)>(p, state, stream)));
    else if (pl.split == 2)
        SCAN_DISPATCH(a->dtype, pl.NS, return (fwd_run<T, NSC, 2>(p, state, stream)));
    else
        SCAN_DISPATCH(a->dtype, pl.NS, return (fwd_run<T, NSC, 1>(p, state, stream)));
    return SSM_OK;
}

extern "C" size_t cuda_scan_checkpoint_bytes(const ssm_scan_args *a) {
    if (check_args(a, "cuda_scan_checkpoint_bytes") != SSM_OK) return 0;
    return ckpt_bytes(a);
}

extern "C" size_t cuda_scan_backward_workspace(const ssm_scan_args *a) {
    if (check_args(a, "cuda_scan_backward_workspace") != SSM_OK) return 0;
    return bwd_layout(make_plan(a, true), a, nullptr, nullptr);
}

extern "C" ssm_status cuda_scan_backward(const ssm_scan_args *a, const void *d_out, void *du,
                                         void *ddt, void *dBm, void *dCm, void *dz,
                                         float *d_dt_bias, float *dA_log, float *dD, void *ws,
                                         size_t ws_bytes, cudaStream_t stream) {
    ssm_status st = check_args(a, "cuda_scan_backward");
    if (st != SSM_OK) return st;
    if (!d_out || !du || !ddt || !dBm || !dCm || !d_dt_bias || !dA_log || !dD || (a->z && !dz))
        return ssm_set_error(SSM_ERR_ARG, "cuda_scan_backward: a required gradient pointer is NULL");
    const Plan pl = make_plan(a, true);
    const size_t need = bwd_layout(pl, a, nullptr, nullptr);
    if (!ws || ws_bytes < need)
        return ssm_set_error(SSM_ERR_ARG,
                             "cuda_scan_backward: workspace of %zu bytes, %zu needed "
                             "(cuda_scan_backward_workspace)", ws_bytes, need);
    ScanP p = make_params(a, pl);
    bwd_layout(pl, a, &p, ws);
    p.dout = d_out, p.du = du, p.ddt = ddt, p.dz = dz;
    SCAN_DISPATCH(a->dtype, pl.NS,
                  return (bwd_run<T, NSC>(p, dBm, dCm, d_dt_bias, dA_log, dD, stream)));
    return SSM_OK;
}

extern "C" ssm_status cuda_scan_step(const ssm_scan_args *a, void *out, float *state,
                                     cudaStream_t stream) {
    ssm_scan_args a1 = a ? *a : ssm_scan_args{};
    a1.L = 1;
    ssm_status st = check_args(a ? &a1 : nullptr, "cuda_scan_step");
    if (st != SSM_OK) return st;
    if (!out || !state) return ssm_set_error(SSM_ERR_ARG, "cuda_scan_step: out or state is NULL");
    Plan pl = {1, 1, (a1.E + 31) / 32, 1, ns_for(a1.N), 1};
    if (a1.dt_w && (a1.dt_rank < 1 || a1.ld_dt < a1.dt_rank))
        return ssm_set_error(SSM_ERR_ARG, "cuda_scan_step: dt_rank=%d, ld_dt=%d", a1.dt_rank, a1.ld_dt);
    if (a1.N % 4 == 0 && ((uintptr_t)state % 16 || (uintptr_t)a1.A_log % 16))
        return ssm_set_error(SSM_ERR_ARG, "cuda_scan_step: state and A_log must be 16-byte aligned");
    ScanP p = make_params(&a1, pl);
    p.y = out, p.state = state;
    p.dt_w = a1.dt_w, p.R = a1.dt_rank, p.ld_dt = a1.ld_dt, p.overlap = a1.overlap != 0;
    SCAN_DISPATCH(a1.dtype, pl.NS, return (step_run<T, NSC>(p, stream)));
    return SSM_OK;
}
