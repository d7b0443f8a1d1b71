/* scan.c: the selective scan of the Mamba-1 mixer (mamba_ssm's selective_scan_fn with
 * delta_bias and delta_softplus, D skip; the z gate is gate.c). fp32 state.
 * Each line of arithmetic sits under the equation it implements. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

/* exp(x) for x <= 0 in the inner loops: Cephes' expf (range reduction by ln 2, degree-6
 * polynomial, relative error ~1e-7), written so that the compiler vectorises it. */
static inline float scan_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; int32_t i; } scale = {.i = ((int32_t)k + 127) << 23};
    return p * scale.f;
}

#define SCAN_BLOCK 8 /* channels per work item: 8 contiguous floats of u, dt and y per row */

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
                    for (int j = 0; j < ne; j++) {
                        int e = e0 + j;
                        float uu = u[t * E + e];
                        /* delta = softplus(dt + dt_bias) */
                        float delta = cpu_softplus(dt[t * E + e] + dt_bias[e]);
                        float du = delta * uu;
                        float *hj = h + j * N;
                        const float *Aj = A + j * N;
                        float acc = 0.0f;
                        for (int n = 0; n < N; n++) {
                            /* h = exp(delta * A) * h + delta * B * u */
                            hj[n] = scan_exp(delta * Aj[n]) * hj[n] + du * Bt[n];
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
#pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num();
        float *hs = scratch + (size_t)tid * L * N;     /* (L, N) recomputed states */
        float *pBC = partial + (size_t)tid * T * 2 * N; /* (T, 2N) this thread's dB | dC */
        memset(pBC, 0, T * 2 * N * sizeof(float));
        float *A = malloc(sizeof(float) * 4 * N);
        float *g = A + N, *dA_acc = A + 2 * N;
#pragma omp for schedule(static)
        for (int e = 0; e < E; e++) {
            for (int n = 0; n < N; n++) A[n] = -expf(A_log[(size_t)e * N + n]), dA_acc[n] = 0;
            float dD_acc = 0, dbias_acc = 0;
            for (int b = 0; b < B; b++) {
                /* recompute h_l for every l, from h_{-1} = 0 */
                float *h = hs;
                for (int l = 0; l < L; l++, h += N) {
                    size_t t = (size_t)b * L + l;
                    float delta = cpu_softplus(dt[t * E + e] + dt_bias[e]);
                    float dBu = delta * u[t * E + e];
                    const float *Bt = Bm + t * ld_bc, *hp = l ? h - N : NULL;
                    for (int n = 0; n < N; n++)
                        h[n] = (hp ? scan_exp(delta * A[n]) * hp[n] : 0.0f) + dBu * Bt[n];
                }
                /* walk back: g = dL/dh_l, carried through h_l = dA h_{l-1} + delta B u */
                for (int n = 0; n < N; n++) g[n] = 0;
                for (int l = L - 1; l >= 0; l--) {
                    size_t t = (size_t)b * L + l;
                    float x = dt[t * E + e] + dt_bias[e];
                    float delta = cpu_softplus(x);
                    float uu = u[t * E + e], dyv = dy[t * E + e];
                    const float *Bt = Bm + t * ld_bc, *Ct = Cm + t * ld_bc;
                    const float *h = hs + (size_t)l * N, *hp = l ? h - N : NULL;
                    float *pB = pBC + t * 2 * N, *pC = pB + N;
                    /* y = C . h + D u */
                    dD_acc += dyv * uu;
                    float du_acc = dyv * Dskip[e], ddelta = 0;
                    for (int n = 0; n < N; n++) {
                        g[n] += dyv * Ct[n];
                        pC[n] += dyv * h[n];
                        float dA = scan_exp(delta * A[n]);
                        /* d(delta A) from h = dA h_prev + ...: g h_prev dA */
                        float gdA = hp ? g[n] * hp[n] * dA : 0.0f;
                        ddelta += gdA * A[n] + g[n] * Bt[n] * uu;
                        dA_acc[n] += gdA * delta;
                        pB[n] += g[n] * delta * uu;
                        du_acc += g[n] * delta * Bt[n];
                        g[n] *= dA;
                    }
                    du[t * E + e] = du_acc;
                    /* delta = softplus(x): d x = d delta * sigmoid(x), 1 above the threshold */
                    float gx = ddelta * (x > 20.0f ? 1.0f : cpu_sigmoid(x));
                    ddt[t * E + e] = gx;
                    dbias_acc += gx;
                }
            }
            /* A = -exp(A_log): dA_log = dA * A */
            for (int n = 0; n < N; n++) dA_log[(size_t)e * N + n] += dA_acc[n] * A[n];
            dD[e] += dD_acc;
            d_dt_bias[e] += dbias_acc;
        }
        free(A);
    }
    /* sum the threads' dB, dC over channels */
#pragma omp parallel for schedule(static)
    for (size_t t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            float sb = 0, sc = 0;
            for (int k = 0; k < threads; k++) {
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
                h[n] = scan_exp(delta * A) * h[n] + delta * Bt[n] * uu;
                acc += h[n] * Ct[n];
            }
            y[t] = acc + Dskip[e] * uu;
        }
}
