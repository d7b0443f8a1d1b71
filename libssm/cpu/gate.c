/* gate.c: the output gate of the mixer, out = y * silu(z). */
#include "cpu_ops.h"

#define GATE_PARALLEL_MIN 32768 /* T * E below which one thread does it all */

static void gate_row(float *out, const float *y, const float *z, int ld_z, long t, int E) {
    for (int e = 0; e < E; e++)
        out[(size_t)t * E + e] = y[(size_t)t * E + e] * cpu_silu(z[(size_t)t * ld_z + e]);
}

void cpu_gate_forward(float *out, const float *y, const float *z, int ld_z, int T, int E) {
    CPU_FOR(t, T, (double)T * E, GATE_PARALLEL_MIN, 0, gate_row(out, y, z, ld_z, t, E));
}

void cpu_gate_backward(float *dy, float *dz, int ld_z, const float *d_out, const float *y,
                       const float *z, int T, int E) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)t * E + e;
            float zv = z[(size_t)t * ld_z + e], s = cpu_sigmoid(zv);
            /* silu(z) = z s;  silu'(z) = s (1 + z (1 - s)) */
            dy[i] = d_out[i] * zv * s;
            dz[(size_t)t * ld_z + e] = d_out[i] * y[i] * s * (1.0f + zv * (1.0f - s));
        }
}
