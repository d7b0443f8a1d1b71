/* gated_norm.c: the gated RMSNorm of the Mamba-2 mixer (mamba_ssm's RMSNormGated,
 * norm_before_gate = False, group_size = I / G), forward and backward, fp32 with the sums of
 * squares and of products in double (as rmsnorm.c). Rows are independent (threads over rows);
 * the backward sums dw per fixed block of RT rows, then adds the blocks in order: the results
 * do not depend on the number of threads. dy and dz must not overlap the inputs (the backward
 * keeps sigmoid(z) and v in their rows before it writes them). */
#include "gated_norm.h"

#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"

#define RT 64 /* rows per block of dw's partial sums in the backward */

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
    const int gs = I / G, nblk = (T + RT - 1) / RT;
    /* dw's partial sums per block of RT rows (a fixed split, whatever the number of threads) */
    float *part = malloc(((size_t)nblk * I + 1) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        float *pw = part + (size_t)blk * I;
        for (int i = 0; i < I; i++) pw[i] = 0.0f;
        for (int t = blk * RT; t < T && t < (blk + 1) * RT; t++) {
            const float *yt = y + (size_t)t * ld_y, *zt = z + (size_t)t * ld_z, *gt = d_out + (size_t)t * ld_dout;
            float *dyt = dy + (size_t)t * ld_dy, *dzt = dz + (size_t)t * ld_dz;
            for (int g = 0; g < G; g++) {
                const int i0 = g * gs;
                const float r = rstd[(size_t)t * G + g];
                double dot = 0;
                /* v = y silu(z), silu(z) = z s: s and v kept in the rows of dy and dz until
                 * they are overwritten below */
#pragma omp simd reduction(+ : dot)
                for (int i = i0; i < i0 + gs; i++) {
                    float s = cpu_sigmoid(zt[i]), v = yt[i] * (zt[i] * s); /* = y * silu(z) as above */
                    dyt[i] = s, dzt[i] = v;
                    dot += (double)gt[i] * w[i] * v;
                }
                /* dv = rstd * (g * w) - v * rstd^3 * mean(g * w * v) */
                float c = (float)(dot / gs) * r * r * r;
#pragma omp simd
                for (int i = i0; i < i0 + gs; i++) {
                    float zv = zt[i], s = dyt[i], v = dzt[i];
                    float dv = r * gt[i] * w[i] - c * v;
                    /* silu'(z) = s (1 + z (1 - s)) */
                    dyt[i] = dv * zv * s;
                    dzt[i] = dv * yt[i] * s * (1.0f + zv * (1.0f - s));
                    /* dw += g * v * rstd */
                    pw[i] += gt[i] * v * r;
                }
            }
        }
    }
    /* dw += the blocks' sums, in the order of the blocks */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < I; c0 += 64) {
        int c1 = c0 + 64 < I ? c0 + 64 : I;
        for (int blk = 0; blk < nblk; blk++) {
            const float *pw = part + (size_t)blk * I;
#pragma omp simd
            for (int i = c0; i < c1; i++) dw[i] += pw[i];
        }
    }
    free(part);
}
