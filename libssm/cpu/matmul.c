/* matmul.c: the projections (nn.Linear without bias) through BLAS. */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"

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
