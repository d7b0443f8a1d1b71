/* rmsnorm.c: RMSNorm in fp32 (mamba_ssm's RMSNorm, eps 1e-5), forward and backward. */
#include <math.h>

#include "cpu_ops.h"

#define RMSNORM_PARALLEL_MIN 32768 /* T * D below which one thread does it all */

static void rmsnorm_row(float *out, float *rstd, const float *x, const float *w, long t, int D, float eps) {
    const float *xt = x + (size_t)t * D;
    float *ot = out + (size_t)t * D;
    double ss = 0;
    for (int i = 0; i < D; i++) ss += (double)xt[i] * xt[i];
    /* rstd = 1 / sqrt(mean(x^2) + eps) */
    float r = 1.0f / sqrtf((float)(ss / D) + eps);
    rstd[t] = r;
    for (int i = 0; i < D; i++) ot[i] = xt[i] * r * w[i];
}

void cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int D,
                         float eps) {
    CPU_FOR(t, T, (double)T * D, RMSNORM_PARALLEL_MIN, 0, rmsnorm_row(out, rstd, x, w, t, D, eps));
}

void cpu_rmsnorm_backward(float *dx, float *dw, const float *d_out, const float *x,
                          const float *w, const float *rstd, int T, int D) {
    /* dx += rstd * (g * w) - x * rstd^3 * mean(g * w * x) */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D, *gt = d_out + (size_t)t * D;
        float *dxt = dx + (size_t)t * D;
        float r = rstd[t];
        double dot = 0;
        for (int i = 0; i < D; i++) dot += (double)gt[i] * w[i] * xt[i];
        float c = (float)(dot / D) * r * r * r;
        for (int i = 0; i < D; i++) dxt[i] += r * gt[i] * w[i] - c * xt[i];
    }
    /* dw += sum_t g * x * rstd: threads split the columns */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < D; c0 += 16) {
        int c1 = c0 + 16 < D ? c0 + 16 : D;
        for (int t = 0; t < T; t++)
            for (int i = c0; i < c1; i++)
                dw[i] += d_out[(size_t)t * D + i] * x[(size_t)t * D + i] * rstd[t];
    }
}

void cpu_rmsnorm_cols_forward(float *out, float *rstd, int ld_rstd, const float *x, int ld,
                              const float *w, int T, int D, float eps) {
#pragma omp parallel for schedule(static) if ((double)T * D >= RMSNORM_PARALLEL_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ld;
        float *ot = out + (size_t)t * ld;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xt[i] * xt[i];
        float r = 1.0f / sqrtf((float)(ss / D) + eps);
        rstd[(size_t)t * ld_rstd] = r;
        for (int i = 0; i < D; i++) ot[i] = xt[i] * r * w[i];
    }
}

void cpu_rmsnorm_cols_backward(float *dx, float *dw, const float *d_out, const float *x, int ld,
                               const float *w, const float *rstd, int ld_rstd, int T, int D) {
    /* dw += sum_t g * x * rstd, in row order, before dx may overwrite g */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            dw[i] += d_out[(size_t)t * ld + i] * x[(size_t)t * ld + i] * rstd[(size_t)t * ld_rstd];
    /* dx = rstd * (g * w) - x * rstd^3 * mean(g * w * x) */
#pragma omp parallel for schedule(static) if ((double)T * D >= RMSNORM_PARALLEL_MIN)
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * ld, *gt = d_out + (size_t)t * ld;
        float *dxt = dx + (size_t)t * ld;
        float r = rstd[(size_t)t * ld_rstd];
        double dot = 0;
        for (int i = 0; i < D; i++) dot += (double)gt[i] * w[i] * xt[i];
        float c = (float)(dot / D) * r * r * r;
        for (int i = 0; i < D; i++) dxt[i] = r * gt[i] * w[i] - c * xt[i];
    }
}
