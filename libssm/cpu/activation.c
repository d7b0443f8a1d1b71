/* activation.c: the MLP layers' activations (activation.h). */
#include "activation.h"

#include <stddef.h>

#include "cpu_ops.h"

void cpu_relu2_forward(float *out, const float *u, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            float x = u[(size_t)t * F + f], r = x > 0.0f ? x : 0.0f;
            out[(size_t)t * F + f] = r * r; /* relu(u)^2 */
        }
}

void cpu_relu2_backward(float *du, const float *d_out, const float *u, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int f = 0; f < F; f++) {
            size_t i = (size_t)t * F + f;
            float x = u[i];
            du[i] = x > 0.0f ? d_out[i] * 2.0f * x : 0.0f; /* d relu(u)^2 = 2 relu(u) */
        }
}

void cpu_swiglu_forward(float *out, const float *yg, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *y = yg + (size_t)t * 2 * F, *g = y + F;
        for (int f = 0; f < F; f++) out[(size_t)t * F + f] = y[f] * cpu_silu(g[f]); /* y * silu(g) */
    }
}

void cpu_swiglu_backward(float *d_yg, const float *d_out, const float *yg, int T, int F) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *y = yg + (size_t)t * 2 * F, *g = y + F, *d = d_out + (size_t)t * F;
        float *dy = d_yg + (size_t)t * 2 * F, *dg = dy + F;
        for (int f = 0; f < F; f++) {
            /* silu'(g) = s (1 + g (1 - s)), s = sigmoid(g) */
            float s = cpu_sigmoid(g[f]);
            dy[f] = d[f] * g[f] * s;
            dg[f] = d[f] * y[f] * s * (1.0f + g[f] * (1.0f - s));
        }
    }
}
