/* scan.c: the selective scan of the Mamba-1 mixer (mamba_ssm's selective_scan_fn with
 * delta_bias and delta_softplus, D skip; the z gate is gate.c). fp32 state.
 * Each line of arithmetic sits under the equation it implements. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

#define SCAN_BLOCK CPU_SCAN_BLOCK /* channels per work item: a 64-byte line of u, dt, y per row */

void cpu_scan_forward(float *y, const float *u, const float *dt, const float *dt_bias,
                      const float *A_log, const float *Bm, const float *Cm, int ld_bc,
                      const float *Dskip, float *state, int B, int L, int E, int N) {
    int n_blocks = (E + SCAN_BLOCK - 1) / SCAN_BLOCK;
#pragma omp parallel
    {
        float *A = malloc(sizeof(float) * SCAN_BLOCK * N); /* (block, N) */
        float *h = malloc(sizeof(float) * SCAN_BLOCK * N); /* (block, N) */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int blk = 0; blk < n_blocks; blk++) {
                int e0 = blk * SCAN_BLOCK, ne = E - e0 < SCAN_BLOCK ? E - e0 : SCAN_BLOCK;
                for (int j = 0; j < ne; j++)
                    for (int n = 0; n < N; n++) {
                        /* A = -exp(A_log) */
                        A[j * N + n] = -expf(A_log[(size_t)(e0 + j) * N + n]);
                        h[j * N + n] = state ? state[((size_t)b * E + e0 + j) * N + n] : 0.0f;
                    }
                for (int l = 0; l < L; l++) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc, *Ct = Cm + t * ld_bc;
                    /* delta = softplus(dt + dt_bias), the block's channels at once */
                    float deltas[SCAN_BLOCK];
#pragma omp simd
                    for (int j = 0; j < ne; j++)
                        deltas[j] = cpu_softplus(dt[t * E + e0 + j] + dt_bias[e0 + j]);
                    for (int j = 0; j < ne; j++) {
                        int e = e0 + j;
                        float uu = u[t * E + e];
                        float delta = deltas[j];
                        float du = delta * uu;
                        float *hj = h + j * N;
                        const float *Aj = A + j * N;
                        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                        for (int n = 0; n < N; n++) {
                            /* h = exp(delta * A) * h + delta * B * u */
                            hj[n] = cpu_exp(delta * Aj[n]) * hj[n] + du * Bt[n];
                            /* y = C . h */
                            acc += hj[n] * Ct[n];
                        }
                        /* y += D * u */
                        y[t * E + e] = acc + Dskip[e] * uu;
                    }
                }
                if (state)
                    for (int j = 0; j < ne; j++)
                        memcpy(state + ((size_t)b * E + e0 + j) * N, h + j * N, N * sizeof(float));
            }
        free(A);
        free(h);
    }
}

void cpu_scan_backward(float *du, float *ddt, float *dBm, float *dCm, float *d_dt_bias,
                       float *dA_log, float *dD, const float *dy, const float *u,
                       const float *dt, const float *dt_bias, const float *A_log,
                       const float *Bm, const float *Cm, int ld_bc, const float *Dskip, int B,
                       int L, int E, int N, float *scratch, float *partial, int threads) {
    size_t T = (size_t)B * L;
    const int BL = SCAN_BLOCK;
    int n_blocks = (E + BL - 1) / BL;
    /* the runtime may grant fewer than `threads` (OMP_THREAD_LIMIT, OMP_DYNAMIC, a caller's
     * parallel region): only the partials of the threads that ran are zeroed and summed */
    int team = 1;
#pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
        float *hs = scratch + (size_t)tid * CPU_SCAN_SCRATCH(L, N); /* (L + 1, BL, N) h_{l-1} */
        float *dAs = hs + (size_t)(L + 1) * BL * N;                   /* (L, BL, N) exp(delta A) */
        float *deltas = dAs + (size_t)L * BL * N;                     /* (L, BL) */
        float *pBC = partial + (size_t)tid * T * 2 * N; /* (T, 2N) this thread's dB | dC */
        memset(pBC, 0, T * 2 * N * sizeof(float));
        memset(hs, 0, (size_t)BL * N * sizeof(float)); /* row 0: h_{-1} = 0, never written */
        float *A = malloc(sizeof(float) * 3 * BL * N); /* (BL, N) each */
        float *g = A + BL * N, *dA_acc = A + 2 * BL * N;
#pragma omp for schedule(static)
        for (int blk = 0; blk < n_blocks; blk++) {
            int e0 = blk * BL, ne = E - e0 < BL ? E - e0 : BL;
            float dD_acc[SCAN_BLOCK] = {0}, dbias_acc[SCAN_BLOCK] = {0};
            for (int j = 0; j < ne; j++)
                for (int n = 0; n < N; n++) {
                    A[j * N + n] = -expf(A_log[(size_t)(e0 + j) * N + n]);
                    dA_acc[j * N + n] = 0;
                }
            for (int b = 0; b < B; b++) {
                /* recompute h_l (row l + 1 of hs) and exp(delta_l A) for every l */
                for (int l = 0; l < L; l++) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc;
                    float *dl = deltas + (size_t)l * BL;
#pragma omp simd
                    for (int j = 0; j < ne; j++)
                        dl[j] = cpu_softplus(dt[t * E + e0 + j] + dt_bias[e0 + j]);
                    for (int j = 0; j < ne; j++) {
                        int e = e0 + j;
                        float delta = dl[j];
                        float dBu = delta * u[t * E + e];
                        const float *hp = hs + ((size_t)l * BL + j) * N, *Aj = A + j * N;
                        float *h = hs + ((size_t)(l + 1) * BL + j) * N;
                        float *dA = dAs + ((size_t)l * BL + j) * N;
#pragma omp simd
                        for (int n = 0; n < N; n++) {
                            dA[n] = cpu_exp(delta * Aj[n]);
                            h[n] = dA[n] * hp[n] + dBu * Bt[n];
                        }
                    }
                }
                /* walk back: g = dL/dh_l, carried through h_l = dA h_{l-1} + delta B u */
                for (int i = 0; i < ne * N; i++) g[i] = 0;
                for (int l = L - 1; l >= 0; l--) {
                    size_t t = (size_t)b * L + l;
                    const float *Bt = Bm + t * ld_bc, *Ct = Cm + t * ld_bc;
                    float *pB = pBC + t * 2 * N, *pC = pB + N;
                    float ddeltas[SCAN_BLOCK];
                    for (int j = 0; j < ne; j++) {
                        int e = e0 + j;
                        float delta = deltas[l * BL + j];
                        float uu = u[t * E + e], dyv = dy[t * E + e];
                        const float *hp = hs + ((size_t)l * BL + j) * N;
                        const float *h = hs + ((size_t)(l + 1) * BL + j) * N;
                        const float *dA = dAs + ((size_t)l * BL + j) * N, *Aj = A + j * N;
                        float *gj = g + j * N, *dAj = dA_acc + j * N;
                        /* y = C . h + D u */
                        dD_acc[j] += dyv * uu;
                        float ddelta = 0, gB = 0;
#pragma omp simd reduction(+ : ddelta, gB)
                        for (int n = 0; n < N; n++) {
                            float gn = gj[n] + dyv * Ct[n];
                            pC[n] += dyv * h[n];
                            /* d(delta A) through dA = exp(delta A): g h_{l-1} dA */
                            float gdA = gn * hp[n] * dA[n];
                            ddelta += gdA * Aj[n] + gn * Bt[n] * uu;
                            dAj[n] += gdA * delta;
                            pB[n] += gn * delta * uu;
                            gB += gn * Bt[n];
                            gj[n] = gn * dA[n];
                        }
                        du[t * E + e] = dyv * Dskip[e] + gB * delta;
                        ddeltas[j] = ddelta;
                    }
                    /* delta = softplus(x): d x = d delta * sigmoid(x), 1 above the threshold */
#pragma omp simd
                    for (int j = 0; j < ne; j++) {
                        float x = dt[t * E + e0 + j] + dt_bias[e0 + j];
                        float gx = ddeltas[j] * (x > 20.0f ? 1.0f : 1.0f / (1.0f + cpu_exp(-x)));
                        ddt[t * E + e0 + j] = gx;
                        dbias_acc[j] += gx;
                    }
                }
            }
            for (int j = 0; j < ne; j++) {
                int e = e0 + j;
                /* A = -exp(A_log): dA_log = dA * A */
                for (int n = 0; n < N; n++)
                    dA_log[(size_t)e * N + n] += dA_acc[j * N + n] * A[j * N + n];
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

void cpu_scan_step(float *y, float *state, const float *u, const float *dt,
                   const float *dt_bias, const float *A_log, const float *Bm,
                   const float *Cm, int ld_bc, const float *Dskip, int B, int E, int N) {
    /* mamba_ssm's selective_state_update: one step of the recurrence per (b, e) */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            size_t t = (size_t)b * E + e;
            float uu = u[t];
            float delta = cpu_softplus(dt[t] + dt_bias[e]);
            const float *Bt = Bm + (size_t)b * ld_bc, *Ct = Cm + (size_t)b * ld_bc;
            float *h = state + t * N, acc = 0;
            for (int n = 0; n < N; n++) {
                float A = -expf(A_log[(size_t)e * N + n]);
                /* h = exp(delta * A) * h + delta * B * u;  y = C . h + D u */
                h[n] = cpu_exp(delta * A) * h[n] + delta * Bt[n] * uu;
                acc += h[n] * Ct[n];
            }
            y[t] = acc + Dskip[e] * uu;
        }
}
