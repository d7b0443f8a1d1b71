/* scan.c: the selective scan of the Mamba-1 mixer (mamba_ssm's selective_scan_fn with
 * delta_bias and delta_softplus, D skip; the z gate is gate.c). fp32 state.
 * Each line of arithmetic sits under the equation it implements. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

#define BL CPU_SCAN_BLOCK /* channels per work item, one SIMD lane each (a 64-byte row piece) */

/* Layout inside a block: (N, BL), channels innermost, so that every update below is one
 * vector operation over the block's channels and the forward needs no horizontal sums.
 * The lanes past the last channel (E not a multiple of BL) carry u = dy = delta = 0, which
 * makes every one of their contributions exactly 0. */

/* this row's u, delta = softplus(dt + dt_bias) and (optionally) dy for the block's lanes */
static inline void load_row(float *uu, float *delta, float *dyv, const float *u, const float *dt,
                            const float *dy, const float *dt_bias, size_t t, int E, int e0,
                            int ne) {
#pragma omp simd
    for (int j = 0; j < BL; j++) {
        int ok = j < ne;
        size_t i = t * E + e0 + (ok ? j : 0);
        uu[j] = ok ? u[i] : 0.0f;
        /* delta = softplus(dt + dt_bias) */
        if (delta) delta[j] = ok ? cpu_softplus(dt[i] + dt_bias[e0 + j]) : 0.0f;
        if (dyv) dyv[j] = ok ? dy[i] : 0.0f;
    }
}

/* A = -exp(A_log) as (N, BL) */
static void load_A(float *A, const float *A_log, int e0, int ne, int N) {
    for (int n = 0; n < N; n++)
        for (int j = 0; j < BL; j++) A[n * BL + j] = j < ne ? -expf(A_log[(size_t)(e0 + j) * N + n]) : -1.0f;
}

/* the fp32 inputs of the CPU twin */
#define SCAN_INPUTS(a)                                                                        \
    const float *u = (const float *)(a)->u, *dt = (const float *)(a)->dt,                      \
                *Bm = (const float *)(a)->Bm, *Cm = (const float *)(a)->Cm,                    \
                *dt_bias = (a)->dt_bias, *A_log = (a)->A_log, *Dskip = (a)->D;                 \
    const int ld_bc = (a)->ld_bc, B = (a)->B, E = (a)->E, N = (a)->N

void cpu_scan_forward(const ssm_scan_args *a, float *y, float *state) {
    SCAN_INPUTS(a);
    const int L = a->L;
    int n_blocks = (E + BL - 1) / BL;
#pragma omp parallel
    {
        float *A = aligned_alloc(64, sizeof(float) * BL * N); /* (N, BL) */
        float *h = aligned_alloc(64, sizeof(float) * BL * N); /* (N, BL) */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int blk = 0; blk < n_blocks; blk++) {
                int e0 = blk * BL, ne = E - e0 < BL ? E - e0 : BL;
                load_A(A, A_log, e0, ne, N);
                for (int n = 0; n < N; n++)
                    for (int j = 0; j < BL; j++)
                        h[n * BL + j] = state && j < ne ? state[((size_t)b * E + e0 + j) * N + n] : 0.0f;
                for (int l = 0; l < L; l++) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc, *Ct = Cm + t * ld_bc;
                    float uu[BL], delta[BL], du[BL], acc[BL];
                    load_row(uu, delta, NULL, u, dt, NULL, dt_bias, t, E, e0, ne);
                    for (int j = 0; j < BL; j++) du[j] = delta[j] * uu[j], acc[j] = 0.0f;
                    for (int n = 0; n < N; n++) {
                        float bn = Bt[n], cn = Ct[n];
                        float *hn = h + n * BL;
                        const float *An = A + n * BL;
#pragma omp simd
                        for (int j = 0; j < BL; j++) {
                            /* h = exp(delta * A) * h + delta * B * u */
                            hn[j] = cpu_exp(delta[j] * An[j]) * hn[j] + du[j] * bn;
                            /* y = C . h */
                            acc[j] += hn[j] * cn;
                        }
                    }
                    /* y += D * u */
                    for (int j = 0; j < ne; j++) y[t * E + e0 + j] = acc[j] + Dskip[e0 + j] * uu[j];
                }
                if (state)
                    for (int j = 0; j < ne; j++)
                        for (int n = 0; n < N; n++)
                            state[((size_t)b * E + e0 + j) * N + n] = h[n * BL + j];
            }
        free(A);
        free(h);
    }
}

void cpu_scan_backward(const ssm_scan_args *a, const float *dy, float *du, float *ddt,
                       float *dBm, float *dCm, float *d_dt_bias, float *dA_log, float *dD,
                       float *scratch, float *partial, int threads) {
    SCAN_INPUTS(a);
    const int L = a->L;
    size_t T = (size_t)B * L;
    int n_blocks = (E + BL - 1) / BL;
    /* the runtime may grant fewer than `threads` (OMP_THREAD_LIMIT, OMP_DYNAMIC, a caller's
     * parallel region): only the partials of the threads that ran are zeroed and summed */
    int team = 1;
#pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
        float *hs = scratch + (size_t)tid * CPU_SCAN_SCRATCH(L, N); /* (L + 1, N, BL) h_{l-1} */
        float *dAs = hs + (size_t)(L + 1) * BL * N;                   /* (L, N, BL) exp(delta A) */
        float *deltas = dAs + (size_t)L * BL * N;                     /* (L, BL) */
        float *pBC = partial + (size_t)tid * T * 2 * N; /* (T, 2N) this thread's dB | dC */
        memset(pBC, 0, T * 2 * N * sizeof(float));
        memset(hs, 0, (size_t)BL * N * sizeof(float)); /* row 0: h_{-1} = 0, never written */
        float *A = aligned_alloc(64, sizeof(float) * 3 * BL * N); /* (N, BL) each */
        float *g = A + BL * N, *dA_acc = A + 2 * BL * N;
#pragma omp for schedule(static)
        for (int blk = 0; blk < n_blocks; blk++) {
            int e0 = blk * BL, ne = E - e0 < BL ? E - e0 : BL;
            float dD_acc[BL] = {0}, dbias_acc[BL] = {0};
            load_A(A, A_log, e0, ne, N);
            memset(dA_acc, 0, sizeof(float) * BL * N);
            for (int b = 0; b < B; b++) {
                /* recompute h_l (row l + 1 of hs) and exp(delta_l A) for every l */
                for (int l = 0; l < L; l++) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc;
                    float uu[BL], dBu[BL], *delta = deltas + (size_t)l * BL;
                    load_row(uu, delta, NULL, u, dt, NULL, dt_bias, t, E, e0, ne);
                    for (int j = 0; j < BL; j++) dBu[j] = delta[j] * uu[j];
                    const float *hp = hs + (size_t)l * N * BL;
                    float *h = hs + (size_t)(l + 1) * N * BL, *dA = dAs + (size_t)l * N * BL;
                    for (int n = 0; n < N; n++) {
                        float bn = Bt[n];
#pragma omp simd
                        for (int j = 0; j < BL; j++) {
                            int i = n * BL + j;
                            dA[i] = cpu_exp(delta[j] * A[i]);
                            h[i] = dA[i] * hp[i] + dBu[j] * bn;
                        }
                    }
                }
                /* walk back: g = dL/dh_l, carried through h_l = dA h_{l-1} + delta B u */
                memset(g, 0, sizeof(float) * BL * N);
                for (int l = L - 1; l >= 0; l--) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc, *Ct = Cm + t * ld_bc;
                    float *pB = pBC + t * 2 * N, *pC = pB + N;
                    const float *delta = deltas + (size_t)l * BL;
                    const float *hp = hs + (size_t)l * N * BL, *h = hp + N * BL;
                    const float *dA = dAs + (size_t)l * N * BL;
                    float uu[BL], dyv[BL], ddelta[BL], gB[BL], du_l[BL];
                    load_row(uu, NULL, dyv, u, dt, dy, dt_bias, t, E, e0, ne);
                    for (int j = 0; j < BL; j++) {
                        /* y = C . h + D u */
                        dD_acc[j] += dyv[j] * uu[j];
                        ddelta[j] = 0.0f, gB[j] = 0.0f, du_l[j] = delta[j] * uu[j];
                    }
                    for (int n = 0; n < N; n++) {
                        float bn = Bt[n], cn = Ct[n], sB = 0.0f, sC = 0.0f;
#pragma omp simd reduction(+ : sB, sC)
                        for (int j = 0; j < BL; j++) {
                            int i = n * BL + j;
                            float gn = g[i] + dyv[j] * cn;
                            sC += dyv[j] * h[i];
                            /* d(delta A) through dA = exp(delta A): g h_{l-1} dA */
                            float gdA = gn * hp[i] * dA[i];
                            ddelta[j] += gdA * A[i] + gn * bn * uu[j];
                            dA_acc[i] += gdA * delta[j];
                            sB += gn * du_l[j];
                            gB[j] += gn * bn;
                            g[i] = gn * dA[i];
                        }
                        pB[n] += sB;
                        pC[n] += sC;
                    }
                    for (int j = 0; j < ne; j++) {
                        size_t i = t * E + e0 + j;
                        du[i] = dyv[j] * Dskip[e0 + j] + gB[j] * delta[j];
                        /* delta = softplus(x): d x = d delta * sigmoid(x), 1 above the threshold */
                        float x = dt[i] + dt_bias[e0 + j];
                        float gx = ddelta[j] * (x > 20.0f ? 1.0f : 1.0f / (1.0f + cpu_exp(-x)));
                        ddt[i] = gx;
                        dbias_acc[j] += gx;
                    }
                }
            }
            for (int j = 0; j < ne; j++) {
                int e = e0 + j;
                /* A = -exp(A_log): dA_log = dA * A */
                for (int n = 0; n < N; n++)
                    dA_log[(size_t)e * N + n] += dA_acc[n * BL + j] * A[n * BL + j];
                dD[e] += dD_acc[j];
                d_dt_bias[e] += dbias_acc[j];
            }
        }
        free(A);
    }
    /* sum the threads' dB, dC over channels */
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            float sb = 0, sc = 0;
            for (int k = 0; k < team; k++) {
                const float *p = partial + (size_t)k * T * 2 * N + t * 2 * N;
                sb += p[n];
                sc += p[N + n];
            }
            dBm[t * ld_bc + n] = sb;
            dCm[t * ld_bc + n] = sc;
        }
}

/* The step in blocks of BL channels, one SIMD lane each (as the forward): the block's state
 * (BL channels x N per sequence, n innermost in memory) is taken NC values of n at a time into
 * (NC, BL) registers' layout, updated there and put back. A = -exp(A_log) of the block is taken
 * once for all B sequences (when N <= SCAN_STEP_NMAX). Each channel does exactly the arithmetic
 * of the one-channel loop (the same products, the sum over n in order), so only the speed
 * changes. Threads over the channel blocks when there is enough work. */
#define SCAN_STEP_NC 16
#define SCAN_STEP_NMAX 64            /* A of the whole block kept when N is at most this */
#define SCAN_STEP_PARALLEL_MIN 16384 /* B * E * N below which one thread does it all */

/* r (16 x 16) <- its transpose: rows i and i + k swap their off-diagonal k-blocks, k = 8, 4, 2,
 * 1 (as ssd.c's step) */
typedef float scan_v16 __attribute__((vector_size(64)));
_Static_assert(BL == 16 && SCAN_STEP_NC == 16, "the step's tiles are 16 x 16");
static inline void scan_transpose16(scan_v16 r[16]) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (!(i & 8)) {
            scan_v16 x0 = r[i], x1 = r[i + 8];
            r[i] = __builtin_shufflevector(x0, x1, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
            r[i + 8] = __builtin_shufflevector(x0, x1, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
        }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (!(i & 4)) {
            scan_v16 x0 = r[i], x1 = r[i + 4];
            r[i] = __builtin_shufflevector(x0, x1, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
            r[i + 4] = __builtin_shufflevector(x0, x1, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (!(i & 2)) {
            scan_v16 x0 = r[i], x1 = r[i + 2];
            r[i] = __builtin_shufflevector(x0, x1, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
            r[i + 2] = __builtin_shufflevector(x0, x1, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
        }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        if (!(i & 1)) {
            scan_v16 x0 = r[i], x1 = r[i + 1];
            r[i] = __builtin_shufflevector(x0, x1, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
            r[i + 1] = __builtin_shufflevector(x0, x1, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
        }
}

/* A = -exp(A_log) for channels e0 .. e0 + ne - 1 (-1 in the lanes past them), values
 * n0 .. n0 + nn - 1, as A[n][j]; Ac: A already taken (E, N), or NULL */
static inline void scan_step_A(float (*A)[BL], const float *A_log, const float *Ac, int e0, int ne,
                               int N, int n0, int nn) {
    for (int j = 0; j < BL; j++)
        for (int n = 0; n < nn; n++) {
            const size_t i = (size_t)(e0 + j) * N + n0 + n;
            A[n][j] = j >= ne ? -1.0f : Ac ? Ac[i] : -expf(A_log[i]);
        }
}

/* sequence b, channels e0 .. e0 + BL - 1; Aall: the block's A (N <= SCAN_STEP_NMAX) or NULL */
static inline void scan_step_seq(float *y, float *state, const float *u, const float *dt,
                                 const float *dt_bias, const float *A_log, const float *Ac,
                                 const float *Bm, const float *Cm, int ld_bc, const float *Dskip,
                                 int E, int N, int b, int e0, float (*Aall)[BL]) {
    const int ne = E - e0 < BL ? E - e0 : BL;
    const float *Bt = Bm + (size_t)b * ld_bc, *Ct = Cm + (size_t)b * ld_bc;
    float *hb = state + ((size_t)b * E + e0) * N; /* (ne, N) */
    float uu[BL], delta[BL], acc[BL];
#pragma omp simd
    for (int j = 0; j < BL; j++) {
        int ok = j < ne;
        size_t t = (size_t)b * E + e0 + (ok ? j : 0);
        uu[j] = ok ? u[t] : 0.0f;
        /* delta = softplus(dt + dt_bias) */
        delta[j] = ok ? cpu_softplus(dt[t] + dt_bias[e0 + j]) : 0.0f;
        acc[j] = 0.0f;
    }
    for (int n0 = 0; n0 < N; n0 += SCAN_STEP_NC) {
        const int nn = N - n0 < SCAN_STEP_NC ? N - n0 : SCAN_STEP_NC;
        float h[SCAN_STEP_NC][BL] __attribute__((aligned(64))), Abuf[SCAN_STEP_NC][BL], (*A)[BL] = Abuf;
        if (Aall) A = Aall + n0;
        else scan_step_A(Abuf, A_log, Ac, e0, ne, N, n0, nn); /* A = -exp(A_log) */
        const int whole = nn == SCAN_STEP_NC && ne == BL; /* a 16 x 16 tile: in registers */
        if (whole) {
            scan_v16 r[16];
            for (int j = 0; j < BL; j++) memcpy(&r[j], hb + (size_t)j * N + n0, sizeof r[j]);
            scan_transpose16(r);
            memcpy(h, r, sizeof h);
        } else {
            for (int j = 0; j < BL; j++)
                for (int n = 0; n < nn; n++) h[n][j] = j < ne ? hb[(size_t)j * N + n0 + n] : 0.0f;
        }
        for (int n = 0; n < nn; n++) {
            const float bn = Bt[n0 + n], cn = Ct[n0 + n];
#pragma omp simd
            for (int j = 0; j < BL; j++) {
                /* h = exp(delta * A) * h + delta * B * u;  y = C . h + D u */
                h[n][j] = cpu_exp(delta[j] * A[n][j]) * h[n][j] + delta[j] * bn * uu[j];
                acc[j] += h[n][j] * cn;
            }
        }
        if (whole) {
            scan_v16 r[16];
            memcpy(r, h, sizeof h);
            scan_transpose16(r);
            for (int j = 0; j < BL; j++) memcpy(hb + (size_t)j * N + n0, &r[j], sizeof r[j]);
        } else {
            for (int j = 0; j < ne; j++)
                for (int n = 0; n < nn; n++) hb[(size_t)j * N + n0 + n] = h[n][j];
        }
    }
    for (int j = 0; j < ne; j++) y[(size_t)b * E + e0 + j] = acc[j] + Dskip[e0 + j] * uu[j];
}

/* channels e0 .. e0 + BL - 1 of every sequence */
static inline void scan_step_block(float *y, float *state, const float *u, const float *dt,
                                   const float *dt_bias, const float *A_log, const float *Ac,
                                   const float *Bm, const float *Cm, int ld_bc,
                                   const float *Dskip, int B, int E, int N, int e0) {
    float Aall[SCAN_STEP_NMAX][BL];
    int keep = N <= SCAN_STEP_NMAX;
    if (keep) scan_step_A(Aall, A_log, Ac, e0, E - e0 < BL ? E - e0 : BL, N, 0, N);
    for (int b = 0; b < B; b++)
        scan_step_seq(y, state, u, dt, dt_bias, A_log, Ac, Bm, Cm, ld_bc, Dskip, E, N, b, e0,
                      keep ? Aall : NULL);
}

void cpu_scan_step(const ssm_scan_args *a, float *y, float *state) {
    SCAN_INPUTS(a);
    /* mamba_ssm's selective_state_update: one step of the recurrence per (b, e) */
    const int n_blocks = (E + BL - 1) / BL;
    CPU_FOR(blk, n_blocks, (double)B * E * N, SCAN_STEP_PARALLEL_MIN, 0,
            scan_step_block(y, state, u, dt, dt_bias, A_log, a->A, Bm, Cm, ld_bc, Dskip, B, E, N,
                            (int)blk * BL));
}
