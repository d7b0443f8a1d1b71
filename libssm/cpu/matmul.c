/* matmul.c: the projections (nn.Linear without bias) through BLAS. */
#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

int cpu_max_threads(void) { return omp_get_max_threads(); } /* for CPU_FOR (cpu_ops.h) */

void cpu_matmul_forward(float *out, int ld_out, float beta, const float *in, int ld_in,
                        const float *W, int T, int n_in, int n_out) {
    /* out (T, n_out) = in (T, n_in) . W^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_out, n_in, 1.0f, in, ld_in, W, n_in, beta,
                out, ld_out);
}

/* Why tiles: an optimised SGEMM sums a row's products in an order that depends on where the
 * row falls in the kernel's register blocks and thread partition, i.e. on how many rows are
 * computed beside it (OpenBLAS's Haswell kernels, which every AVX2 and AMD Zen machine runs,
 * differ in the last bits). Here every call has the same shape (R rows, one thread), and a
 * row always sits at position l mod R of its tile, so its result depends only on its data and
 * on l: never on B, on the other sequences or on the thread count. */
int cpu_matmul_tile_rows(int L) {
    return L >= CPU_MATMUL_TILE ? CPU_MATMUL_TILE : (L + 7) / 8 * 8;
}

size_t cpu_matmul_exact_scratch(int L, int n_in, int n_out, int threads) {
    return (size_t)threads * cpu_matmul_tile_rows(L) * ((size_t)n_in + n_out);
}

void cpu_matmul_forward_exact(float *out, int ld_out, float beta, const float *in, int ld_in,
                              const float *W, int B, int L, int n_in, int n_out,
                              float *scratch) {
    int R = cpu_matmul_tile_rows(L), tiles = (L + R - 1) / R;
    size_t per_thread = (size_t)R * ((size_t)n_in + n_out);
#pragma omp parallel for schedule(dynamic)
    for (long k = 0; k < (long)B * tiles; k++) {
        int b = (int)(k / tiles), l0 = (int)(k % tiles) * R, rows = L - l0 < R ? L - l0 : R;
        size_t t0 = (size_t)b * L + l0;
        if (rows == R) { /* a full tile: in place */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, n_out, n_in, 1.0f,
                        in + t0 * ld_in, ld_in, W, n_in, beta, out + t0 * ld_out, ld_out);
            continue;
        }
        /* the last, partial tile of a sequence: padded with zero rows, same call shape */
        float *tin = scratch + (size_t)omp_get_thread_num() * per_thread;  /* (R, n_in) */
        float *tout = tin + (size_t)R * n_in;                                /* (R, n_out) */
        memset(tin, 0, (size_t)R * n_in * sizeof(float));
        for (int r = 0; r < rows; r++) {
            memcpy(tin + (size_t)r * n_in, in + (t0 + r) * ld_in, n_in * sizeof(float));
            if (beta != 0.0f)
                memcpy(tout + (size_t)r * n_out, out + (t0 + r) * ld_out, n_out * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, n_out, n_in, 1.0f, tin, n_in, W,
                    n_in, beta, tout, n_out);
        for (int r = 0; r < rows; r++)
            memcpy(out + (t0 + r) * ld_out, tout + (size_t)r * n_out, n_out * sizeof(float));
    }
}

void cpu_matmul_backward(float *d_in, int ld_din, float beta, float *dW, const float *d_out,
                         int ld_dout, const float *in, int ld_in, const float *W, int T, int n_in,
                         int n_out) {
    /* d_in (T, n_in) = beta * d_in + d_out (T, n_out) . W (n_out, n_in) */
    if (d_in)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, n_in, n_out, 1.0f, d_out, ld_dout, W,
                    n_in, beta, d_in, ld_din);
    /* dW (n_out, n_in) += d_out^T (n_out, T) . in (T, n_in) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, T, 1.0f, d_out, ld_dout, in,
                ld_in, 1.0f, dW, n_in);
}

/* ---- few rows: the decode step's products ----------------------------------------------- */

/* Why not SGEMM for one row: OpenBLAS packs W (the large operand) into its kernel layout on
 * every call, so a product with one or a few rows reads W twice and writes it once; at one row
 * (the decode step) that costs 2-5x a plain pass over W. Here each block of CPU_ROWS_R rows of W
 * is read from memory once and used for every one of the B rows while it sits in L1.
 *
 * Each output out[b, o] is the same sequence of operations whatever B, the thread count, its
 * position in a block or the block sizes around it: 16 lanes of multiply-adds over the
 * columns in order (lane j takes columns j, j + 16, ...; the last partial vector zero-padded),
 * then a fixed tree over the lanes. So the result depends only on in[b], W[o] and n_in. */
#define CPU_ROWS_R 4 /* rows of W per block */
typedef float cpu_v16 __attribute__((vector_size(64)));

#if defined(__GNUC__) && !defined(__clang__)
/* the helpers below are static and inlined: no vector crosses a call, whatever the target */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

static inline cpu_v16 v16_load(const float *p) {
    cpu_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline cpu_v16 v16_load_tail(const float *p, int n) {
    cpu_v16 v = {0};
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

typedef float cpu_v8 __attribute__((vector_size(32)));
typedef float cpu_v4 __attribute__((vector_size(16)));

/* lanes (0..15) -> one sum, in a fixed tree: a[i] + a[i + 8], then + [i + 4], then
 * (a0 + a2) + (a1 + a3); as vector halves, so that it costs a few instructions */
static inline float v16_sum(cpu_v16 v) {
    cpu_v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    cpu_v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* W's elements: fp32, or bf16 (the upper half of an fp32, so widening is a shift left by 16;
 * the products then run in fp32 as for fp32 weights). A bf16 row is stored in groups of 32
 * (cpu_bf16_pack_rows): 32-bit word j of a group holds element j in its low half and element
 * j + 16 in its high half, so that one 64-byte load gives both 16-lane vectors with a shift and
 * a mask (no lane shuffles, which cost more than the multiply-adds); the last n_in % 32
 * elements of a row are in order. */
typedef uint16_t cpu_u16x16 __attribute__((vector_size(32)));
typedef uint32_t cpu_u32x16 __attribute__((vector_size(64)));

void cpu_bf16_pack_rows(uint16_t *dst, const float *W, size_t rows, int n_in) {
    for (size_t r = 0; r < rows; r++) {
        const float *w = W + r * n_in;
        uint16_t *d = dst + r * n_in;
        int k = 0;
        for (; k + 32 <= n_in; k += 32)
            for (int j = 0; j < 16; j++) {
                d[k + 2 * j] = cpu_bf16_from_float(w[k + j]);
                d[k + 2 * j + 1] = cpu_bf16_from_float(w[k + 16 + j]);
            }
        for (; k < n_in; k++) d[k] = cpu_bf16_from_float(w[k]);
    }
}

/* one packed group of 32 bf16 elements: lo = elements 0..15, hi = 16..31 */
static inline void bf16_group(const uint16_t *p, cpu_v16 *lo, cpu_v16 *hi) {
    cpu_u32x16 u, l, h;
    memcpy(&u, p, sizeof u);
    l = u << 16;
    h = u & 0xffff0000u;
    memcpy(lo, &l, sizeof l);
    memcpy(hi, &h, sizeof h);
}

static inline cpu_v16 bf16_widen(cpu_u16x16 h) {
    cpu_u32x16 u = __builtin_convertvector(h, cpu_u32x16) << 16;
    cpu_v16 v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* 16 elements of W from element i (bf16: W holds uint16_t), the last n < 16 zero-padded */
static inline __attribute__((always_inline)) cpu_v16 w_load(const void *W, size_t i, int bf16) {
    if (!bf16) return v16_load((const float *)W + i);
    cpu_u16x16 h;
    memcpy(&h, (const uint16_t *)W + i, sizeof h);
    return bf16_widen(h);
}

static inline __attribute__((always_inline)) cpu_v16 w_load_tail(const void *W, size_t i, int n,
                                                                 int bf16) {
    if (!bf16) return v16_load_tail((const float *)W + i, n);
    cpu_u16x16 h = {0};
    memcpy(&h, (const uint16_t *)W + i, (size_t)n * sizeof(uint16_t));
    return bf16_widen(h);
}

/* out[b0 + q, o0 + r] (q < NB, r < R) = beta * out + in[b0 + q] . W[o0 + r]; R <= 4, NB <= 8,
 * R NB <= 16 accumulators (the shapes used: 4 x 1, 4 x 2, 2 x 8, 1 x 8, 1 x 2, 1 x 1);
 * bf16 (a constant at every call): W's elements are bf16 */
#define CPU_ROWS_NB 8
static inline __attribute__((always_inline)) void rows_block(float *out, int ld_out, float beta,
                                                             const float *in, int ld_in,
                                                             const void *W, int bf16, int n_in,
                                                             int o0, int R, int b0, int NB,
                                                             long pf) {
    cpu_v16 acc[CPU_ROWS_R][CPU_ROWS_NB];
    size_t w[CPU_ROWS_R]; /* the rows' first elements */
    const float *x[CPU_ROWS_NB];
    const char *Wb = W;
    size_t esize = bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int r = 0; r < R; r++) w[r] = (size_t)(o0 + r) * n_in;
    for (int q = 0; q < NB; q++) x[q] = in + (size_t)(b0 + q) * ld_in;
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NB; q++) acc[r][q] = (cpu_v16){0};
    int k = 0;
    /* bf16: the packed groups of 32, as two steps of 16 columns (the same sums as below) */
    for (; bf16 && k + 32 <= n_in; k += 32) {
        cpu_v16 xlo[CPU_ROWS_NB], xhi[CPU_ROWS_NB];
        for (int q = 0; q < NB; q++) xlo[q] = v16_load(x[q] + k), xhi[q] = v16_load(x[q] + k + 16);
        for (int r = 0; r < R; r++) {
            cpu_v16 lo, hi;
            bf16_group((const uint16_t *)W + w[r] + k, &lo, &hi);
            if (pf) __builtin_prefetch(Wb + (w[r] + k + pf) * esize, 0, 3);
            for (int q = 0; q < NB; q++) acc[r][q] += lo * xlo[q];
            for (int q = 0; q < NB; q++) acc[r][q] += hi * xhi[q];
        }
    }
    for (; k + 16 <= n_in; k += 16) {
        cpu_v16 xv[CPU_ROWS_NB];
        for (int q = 0; q < NB; q++) xv[q] = v16_load(x[q] + k);
        for (int r = 0; r < R; r++) {
            cpu_v16 wv = w_load(W, w[r] + k, bf16);
            if (pf) __builtin_prefetch(Wb + (w[r] + k + pf) * esize, 0, 3);
            for (int q = 0; q < NB; q++) acc[r][q] += wv * xv[q];
        }
    }
    if (k < n_in) {
        int n = n_in - k;
        cpu_v16 xv[CPU_ROWS_NB];
        for (int q = 0; q < NB; q++) xv[q] = v16_load_tail(x[q] + k, n);
        for (int r = 0; r < R; r++) {
            cpu_v16 wv = w_load_tail(W, w[r] + k, n, bf16);
            for (int q = 0; q < NB; q++) acc[r][q] += wv * xv[q];
        }
    }
    for (int q = 0; q < NB; q++)
        for (int r = 0; r < R; r++) {
            float s = v16_sum(acc[r][q]), *o = out + (size_t)(b0 + q) * ld_out + o0 + r;
            *o = beta == 0.0f ? s : s + beta * *o;
        }
}

/* rows o0 .. o0 + R - 1 of W against every row of in: groups of 8 rows of in against 2 rows
 * of W at a time (16 accumulators, each W vector used 8 times), then pairs against 4 */
static inline __attribute__((always_inline)) void rows_blocks(float *out, int ld_out, float beta,
                                                              const float *in, int ld_in,
                                                              const void *W, int bf16, int B,
                                                              int n_in, int n_out, int o0, int R) {
    int b = 0;
    /* the first pass over the block's rows prefetches the block after next (the same columns,
     * 8 rows on): the hardware prefetchers alone keep too few lines in flight for one core's
     * share of the memory's bandwidth, with several rows of in per W vector (fp32) and at one
     * row with bf16 W (half the bytes per multiply-add; 130M step at B=1: 11.9 -> 7.8 ms,
     * bench/RESULTS.md) */
    long pf = o0 + 3 * CPU_ROWS_R <= n_out ? 2L * CPU_ROWS_R * n_in : 0;
    if (R == CPU_ROWS_R) {
        for (; b + 8 <= B; b += 8, pf = 0) {
            rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0, 2, b, 8, pf);
            rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0 + 2, 2, b, 8, pf);
        }
        for (; b + 2 <= B; b += 2, pf = 0)
            rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0, CPU_ROWS_R, b, 2, pf);
        if (b < B) rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0, CPU_ROWS_R, b, 1, pf);
        return;
    }
    for (int r = 0; r < R; r++) {
        for (b = 0; b + 8 <= B; b += 8) rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0 + r, 1, b, 8, 0);
        for (; b + 2 <= B; b += 2) rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0 + r, 1, b, 2, 0);
        if (b < B) rows_block(out, ld_out, beta, in, ld_in, W, bf16, n_in, o0 + r, 1, b, 1, 0);
    }
}

/* block ib: rows 4 ib .. 4 ib + 3 of W (fewer in the last) */
static inline __attribute__((always_inline)) void rows_item(float *out, int ld_out, float beta,
                                                            const float *in, int ld_in,
                                                            const void *W, int bf16, int B,
                                                            int n_in, int n_out, long ib) {
    int o0 = (int)ib * CPU_ROWS_R, R = n_out - o0 < CPU_ROWS_R ? n_out - o0 : CPU_ROWS_R;
    rows_blocks(out, ld_out, beta, in, ld_in, W, bf16, B, n_in, n_out, o0, R);
}

/* below this many multiply-adds a product runs on the calling thread (a parallel region costs
 * more than it saves) */
#define CPU_ROWS_PARALLEL_MIN (1 << 16)

void cpu_matmul_rows(float *out, int ld_out, float beta, const float *in, int ld_in,
                     const float *W, int B, int n_in, int n_out) {
    if (B <= 0 || n_out <= 0) return;
    long blocks = (n_out + CPU_ROWS_R - 1) / CPU_ROWS_R;
    CPU_FOR(ib, blocks, (double)B * n_in * n_out, CPU_ROWS_PARALLEL_MIN, 0,
            rows_item(out, ld_out, beta, in, ld_in, W, 0, B, n_in, n_out, ib));
}

void cpu_matmul_rows_bf16(float *out, int ld_out, float beta, const float *in, int ld_in,
                          const uint16_t *W, int B, int n_in, int n_out) {
    if (B <= 0 || n_out <= 0) return;
    long blocks = (n_out + CPU_ROWS_R - 1) / CPU_ROWS_R;
    CPU_FOR(ib, blocks, (double)B * n_in * n_out, CPU_ROWS_PARALLEL_MIN, 0,
            rows_item(out, ld_out, beta, in, ld_in, W, 1, B, n_in, n_out, ib));
}

/* round to nearest, ties to even; NaN stays NaN (quiet) */
uint16_t cpu_bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

float cpu_bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
