/* benchutil.h: what the CPU benchmarks share: a monotonic clock and this machine's SGEMM rate
 * (the BLAS ceiling a matmul-bound figure is a fraction of). */
#ifndef SSM_BENCHUTIL_H
#define SSM_BENCHUTIL_H

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* SGEMM GFLOP/s on square n x n matrices, best of 5 after a warm-up, timed by clock (a
 * benchmark that times by CPU time passes its own). */
static inline double sgemm_gflops_clock(int n, double (*clock)(void)) {
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = clock();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double g = 2.0 * n * n * n / (clock() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a), free(b), free(c);
    return best;
}
static inline double sgemm_gflops(int n) { return sgemm_gflops_clock(n, now); }

#endif
