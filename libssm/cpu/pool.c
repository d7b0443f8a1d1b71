/* pool.c: one row per sequence from its L rows, for the classify head: the mean, the last row
 * or the first (a CLS position). */
#include <string.h>

#include "cpu_ops.h"

void cpu_pool_forward(float *out, const float *h, int B, int L, int D, int pool) {
    for (int b = 0; b < B; b++) {
        const float *rows = h + (size_t)b * L * D;
        float *o = out + (size_t)b * D;
        if (pool != CPU_POOL_MEAN) {
            memcpy(o, rows + (size_t)(pool == CPU_POOL_LAST ? L - 1 : 0) * D, (size_t)D * sizeof(float));
            continue;
        }
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int l = 0; l < L; l++) s += rows[(size_t)l * D + d];
            o[d] = (float)(s / L);
        }
    }
}

void cpu_pool_backward(float *d_h, const float *d_out, int B, int L, int D, int pool) {
    memset(d_h, 0, (size_t)B * L * D * sizeof(float));
    for (int b = 0; b < B; b++) {
        float *rows = d_h + (size_t)b * L * D;
        const float *g = d_out + (size_t)b * D;
        if (pool != CPU_POOL_MEAN) {
            memcpy(rows + (size_t)(pool == CPU_POOL_LAST ? L - 1 : 0) * D, g, (size_t)D * sizeof(float));
            continue;
        }
        for (int l = 0; l < L; l++)
            for (int d = 0; d < D; d++) rows[(size_t)l * D + d] = g[d] / (float)L;
    }
}
