// matmul.cu: the projections through cuBLAS (bf16 inputs, fp32 accumulation), row-major like
// libssm/cpu/matmul.c:  out (T, n) = beta * out + in (T, k) . w (n, k)^T.
// cuBLAS is column-major: a row-major (T, n) matrix is a column-major (n, T) one, so
//   out^T = w^T-as-stored . in^T  ->  gemm(op_w = T, op_in = N, m = n, n = T, k = k).
#include <cublas_v2.h>

#include "common.cuh"

static cudaDataType_t cuda_type(ssm_dtype d) { return d == SSM_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static ssm_status blas_fail(cublasStatus_t st, const char *where) {
    return ssm_set_error(st == CUBLAS_STATUS_ALLOC_FAILED ? SSM_ERR_NOMEM : SSM_ERR_DEVICE,
                         "%s: cuBLAS error %d (%s)", where, (int)st, cublasGetStatusString(st));
}

// C (m x n, col-major, ldc) = alpha * op(A) . op(B) + beta * C, A and B bf16.
static ssm_status gemm(cublasHandle_t h, cublasOperation_t opa, cublasOperation_t opb, int m,
                       int n, int k, const void *A, int lda, const void *Bm, int ldb, float beta,
                       void *C, ssm_dtype c_type, int ldc, const char *where) {
    const float alpha = 1.0f;
    cublasStatus_t st = cublasGemmEx(h, opa, opb, m, n, k, &alpha, A, CUDA_R_16BF, lda, Bm,
                                     CUDA_R_16BF, ldb, &beta, C, cuda_type(c_type), ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? SSM_OK : blas_fail(st, where);
}

extern "C" ssm_status cuda_matmul_forward(cublasHandle_t h, void *out, int ld_out,
                                          ssm_dtype out_dtype, float beta, const void *in,
                                          int ld_in, const void *w, int T, int k, int n) {
    if (!out || !in || !w || T <= 0 || k <= 0 || n <= 0 || ld_out < n || ld_in < k)
        return ssm_set_error(SSM_ERR_ARG, "cuda_matmul_forward: bad arguments (T=%d k=%d n=%d)", T, k, n);
    // out^T (n x T) = w^T (n x k) . in^T (k x T)
    return gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, T, k, w, k, in, ld_in, beta, out, out_dtype,
                ld_out, "cuda_matmul_forward");
}

extern "C" ssm_status cuda_matmul_forward_batched(cublasHandle_t h, void *out, int ld_out,
                                                  long long stride_out, ssm_dtype out_dtype, float beta,
                                                  const void *in, int ld_in, long long stride_in,
                                                  const void *w, long long stride_w, int T, int k, int n,
                                                  int batch) {
    if (!out || !in || !w || T <= 0 || k <= 0 || n <= 0 || batch <= 0 || ld_out < n || ld_in < k)
        return ssm_set_error(SSM_ERR_ARG, "cuda_matmul_forward_batched: bad arguments (T=%d k=%d n=%d batch=%d)",
                             T, k, n, batch);
    const float alpha = 1.0f;
    // as cuda_matmul_forward, the batch's b-th operands stride_* elements after the (b-1)-th
    cublasStatus_t st = cublasGemmStridedBatchedEx(
        h, CUBLAS_OP_T, CUBLAS_OP_N, n, T, k, &alpha, w, CUDA_R_16BF, k, stride_w, in, CUDA_R_16BF, ld_in,
        stride_in, &beta, out, cuda_type(out_dtype), ld_out, stride_out, batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT);
    return st == CUBLAS_STATUS_SUCCESS ? SSM_OK : blas_fail(st, "cuda_matmul_forward_batched");
}

extern "C" ssm_status cuda_matmul_backward(cublasHandle_t h, void *d_in, int ld_din,
                                           ssm_dtype din_dtype, float beta_in, float *d_w,
                                           const void *d_out, int ld_dout, const void *in,
                                           int ld_in, const void *w, int T, int k, int n) {
    if (!d_out || T <= 0 || k <= 0 || n <= 0 || ld_dout < n || (d_in && ld_din < k) ||
        (d_w && (!in || ld_in < k)) || (d_in && !w))
        return ssm_set_error(SSM_ERR_ARG, "cuda_matmul_backward: bad arguments (T=%d k=%d n=%d)", T, k, n);
    ssm_status s = SSM_OK;
    // d_in (T, k) = d_out (T, n) . w (n, k):  d_in^T (k x T) = w-as-stored (k x n) . d_out^T (n x T)
    if (d_in)
        s = gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, k, T, n, w, k, d_out, ld_dout, beta_in, d_in,
                 din_dtype, ld_din, "cuda_matmul_backward (input)");
    // d_w (n, k) += d_out^T (n x T) . in (T x k):  d_w^T (k x n) = in^T (k x T) . d_out (T x n)
    if (!s && d_w)
        s = gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, k, n, T, in, ld_in, d_out, ld_dout, 1.0f, d_w,
                 SSM_DTYPE_F32, k, "cuda_matmul_backward (weight)");
    return s;
}
