/* matmul.c: the projections (nn.Linear without bias) through BLAS. */
#include <cblas.h>

#include "cpu_ops.h"

void cpu_matmul_forward(float *out, int ld_out, float beta, const float *in, int ld_in,
                        const float *W, int T, int n_in, int n_out) {
    /* out (T, n_out) = in (T, n_in) . W^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_out, n_in, 1.0f, in, ld_in, W, n_in, beta,
                out, ld_out);
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
