/* gated_norm.c: the gated RMSNorm of the Mamba-2 mixer (mamba_ssm's RMSNormGated,
 * norm_before_gate = False, group_size = I / G), forward and backward, fp32 with the sums of
 * squares and of products in double (as rmsnorm.c). Rows are independent (threads over rows);
 * dw is split by columns, each summed over the rows in order: the results do not depend on the
 * number of threads. */
#include "gated_norm.h"

#include <math.h>

#include "cpu_ops.h"

void cpu_gated_rmsnorm_forward(float *out, int ld_out, float *rstd, const float *y, int ld_y,
                               const float *z, int ld_z, const float *w, int T, int I, int G, float eps) {
    const int gs = I / G;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *yt = y + (size_t)t * ld_y, *zt = z + (size_t)t * ld_z;
        float *ot = out + (size_t)t * ld_out;
        for (int g = 0; g < G; g++) {
            const int i0 = g * gs;
            double ss = 0;
#pragma omp simd reduction(+ : ss)
            for (int i = i0; i < i0 + gs; i++) {
                /* v = y * silu(z) */
                float v = yt[i] * cpu_silu(zt[i]);
                ot[i] = v;
                ss += (double)v * v;
            }
            /* rstd = 1 / sqrt(mean(v^2) + eps) over the group */
            float r = 1.0f / sqrtf((float)(ss / gs) + eps);
            rstd[(size_t)t * G + g] = r;
            /* out = v * rstd * w */
            for (int i = i0; i < i0 + gs; i++) ot[i] = ot[i] * r * w[i];
        }
    }
}

void cpu_gated_rmsnorm_backward(float *dy, int ld_dy, float *dz, int ld_dz, float *dw, const float *d_out, int ld_dout,
                                const float *y, int ld_y, const float *z, int ld_z, const float *w, const float *rstd,
                                int T, int I, int G) {
    const int gs = I / G;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *yt = y + (size_t)t * ld_y, *zt = z + (size_t)t * ld_z, *gt = d_out + (size_t)t * ld_dout;
        float *dyt = dy + (size_t)t * ld_dy, *dzt = dz + (size_t)t * ld_dz;
        for (int g = 0; g < G; g++) {
            const int i0 = g * gs;
            const float r = rstd[(size_t)t * G + g];
            double dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int i = i0; i < i0 + gs; i++) dot += (double)gt[i] * w[i] * (yt[i] * cpu_silu(zt[i]));
            /* dv = rstd * (g * w) - v * rstd^3 * mean(g * w * v) */
            float c = (float)(dot / gs) * r * r * r;
            for (int i = i0; i < i0 + gs; i++) {
                float zv = zt[i], s = cpu_sigmoid(zv), v = yt[i] * (zv * s); /* = y * silu(z) as above */
                float dv = r * gt[i] * w[i] - c * v;
                /* v = y silu(z): silu(z) = z s, silu'(z) = s (1 + z (1 - s)) */
                dyt[i] = dv * zv * s;
                dzt[i] = dv * yt[i] * s * (1.0f + zv * (1.0f - s));
            }
        }
    }
    /* dw += sum_t g * v * rstd: threads split the columns */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < I; c0 += 16) {
        int c1 = c0 + 16 < I ? c0 + 16 : I;
        for (int t = 0; t < T; t++) {
            const float *yt = y + (size_t)t * ld_y, *zt = z + (size_t)t * ld_z, *gt = d_out + (size_t)t * ld_dout;
            for (int s0 = c0; s0 < c1;) { /* the block's pieces within one group */
                int g = s0 / gs, s1 = (g + 1) * gs < c1 ? (g + 1) * gs : c1;
                float r = rstd[(size_t)t * G + g];
#pragma omp simd
                for (int i = s0; i < s1; i++) dw[i] += gt[i] * (yt[i] * cpu_silu(zt[i])) * r;
                s0 = s1;
            }
        }
    }
}
