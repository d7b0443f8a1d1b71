/* embedding.c: token embedding lookup; its transpose is the tied LM head (in forward.c). */
#include <string.h>

#include "cpu_ops.h"

void cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int T, int D) {
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * D, table + (size_t)tokens[t] * D, D * sizeof(float));
}

void cpu_embedding_backward(float *d_table, const int32_t *tokens, const float *d_out, int T,
                            int D) {
    /* rows may repeat a token: threads split the columns, never the rows */
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < D; c0 += 16) {
        int c1 = c0 + 16 < D ? c0 + 16 : D;
        for (int t = 0; t < T; t++) {
            float *dst = d_table + (size_t)tokens[t] * D;
            const float *src = d_out + (size_t)t * D;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}
