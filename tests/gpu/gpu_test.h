/* gpu_test.h: what the GPU op tests share: checked CUDA and library calls (a failure ends the
 * test), random inputs, bf16 rounding as the GPU does it, device copies (bf16 or fp32, with 16
 * bytes of slack), buffers poisoned with NaN so that an unwritten element fails, and the
 * relative norm error ||a - b|| / ||b|| of docs/architecture.md, 'Accuracy'. C and C++ (the
 * benchmarks). */
#ifndef SSM_GPU_TEST_H
#define SSM_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "ssm/cuda_ops.h"

#define CK(call)                                                                                \
    do {                                                                                        \
        cudaError_t e_ = (call);                                                                \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)
#define OK(call)                                                                                \
    do {                                                                                        \
        ssm_status s_ = (call);                                                                 \
        if (s_ != SSM_OK) {                                                                     \
            fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, s_, ssm_last_error()); \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull; /* a test may reseed it */
static inline double urand(void) { /* splitmix64 -> [0, 1) */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}
static inline int irand(int n) { return (int)(urand() * n); }
static inline void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}
static inline float *falloc(size_t n) { return (float *)xmalloc(n * sizeof(float)); }
static inline void fill(float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)urand();
}
static inline uint16_t f2bf(float f) { /* round to nearest even */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* Round x in place to the values bf16 can hold (what the GPU will see). */
static inline void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = bf2f(f2bf(x[i]));
}
static inline size_t esize(ssm_dtype dt) { return dt == SSM_DTYPE_F32 ? 4 : 2; }

/* A device copy of host x (n floats) in dtype. */
static inline void *to_dev(const float *x, size_t n, ssm_dtype dt) {
    void *d;
    CK(cudaMalloc(&d, n * esize(dt) + 16));
    if (dt == SSM_DTYPE_F32) {
        CK(cudaMemcpy(d, x, n * 4, cudaMemcpyHostToDevice));
    } else {
        uint16_t *h = (uint16_t *)xmalloc(n * 2);
        for (size_t i = 0; i < n; i++) h[i] = f2bf(x[i]);
        CK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
        free(h);
    }
    return d;
}
static inline void *to_dev_bytes(const void *x, size_t bytes) {
    void *d;
    CK(cudaMalloc(&d, bytes + 16));
    CK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    return d;
}
/* n elements of dtype, every byte 0xff (NaN in fp32 and in bf16) */
static inline void *dev_poisoned(size_t n, ssm_dtype dt) {
    void *d;
    CK(cudaMalloc(&d, n * esize(dt) + 16));
    CK(cudaMemset(d, 0xff, n * esize(dt) + 16));
    return d;
}
static inline float *from_dev(const void *d, size_t n, ssm_dtype dt) {
    float *x = falloc(n);
    CK(cudaDeviceSynchronize());
    if (dt == SSM_DTYPE_F32) {
        CK(cudaMemcpy(x, d, n * 4, cudaMemcpyDeviceToHost));
    } else {
        uint16_t *h = (uint16_t *)xmalloc(n * 2);
        CK(cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i++) x[i] = bf2f(h[i]);
        free(h);
    }
    return x;
}
static inline void from_dev_bytes(void *h, const void *d, size_t bytes) {
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* ||a - b|| / ||b|| over rows x cols with row strides lda, ldb; NaN if any a is. */
static inline double rel_err2(const float *a, size_t lda, const float *b, size_t ldb,
                              size_t rows, size_t cols) {
    double num = 0, den = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            double x = a[r * lda + c], y = b[r * ldb + c];
            if (isnan(x) || isinf(x)) return NAN;
            num += (x - y) * (x - y);
            den += y * y;
        }
    return den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
}
static inline double rel_err(const float *a, const float *b, size_t n) {
    return rel_err2(a, 0, b, 0, 1, n);
}

/* The op tests' tally: report() prints one error beside its bound and counts it; end_case()
 * ends the case's line; main returns gpu_test_result(). */
static int failures = 0, checks = 0;
static inline void report(const char *name, double err, double bound, int *case_ok) {
    int ok = err <= bound; /* NaN fails */
    checks++;
    if (!ok) failures++, *case_ok = 0;
    printf(" %s %.2e%s", name, err, ok ? "" : " FAIL");
}
static inline void end_case(int ok) { printf("%s\n", ok ? "  ok" : ""); }
static inline int gpu_test_result(void) {
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

#endif
