/* linear.c: out = in . W^T + bias (nn.Linear with its bias), through the BLAS matmul. */
#include <string.h>

#include "cpu_ops.h"

void cpu_linear_forward(float *out, const float *in, const float *W, const float *bias, int T,
                        int n_in, int n_out) {
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * n_out, bias, (size_t)n_out * sizeof(float));
    cpu_matmul_forward(out, n_out, 1.0f, in, n_in, W, T, n_in, n_out);
}

void cpu_linear_backward(float *d_in, float *dW, float *d_bias, const float *d_out,
                         const float *in, const float *W, int T, int n_in, int n_out) {
    for (int t = 0; t < T; t++)
        for (int o = 0; o < n_out; o++) d_bias[o] += d_out[(size_t)t * n_out + o];
    cpu_matmul_backward(d_in, n_in, 0.0f, dW, d_out, n_out, in, n_in, W, T, n_in, n_out);
}
