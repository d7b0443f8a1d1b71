/* activation.h: the MLP layers' activations (activation.c), fp32.
 * T rows of F hidden channels; backward writes (never adds to) the input's gradient. */
#ifndef SSM_CPU_ACTIVATION_H
#define SSM_CPU_ACTIVATION_H

/* relu2 (NemotronH): out = relu(u)^2.  out, u: (T, F) */
void cpu_relu2_forward(float *out, const float *u, int T, int F);
/* du = d_out * 2 relu(u) */
void cpu_relu2_backward(float *du, const float *d_out, const float *u, int T, int F);

/* swiglu (mamba_ssm's GatedMLP): out = y * silu(g) with yg (T, 2F) = [y | g] per row. */
void cpu_swiglu_forward(float *out, const float *yg, int T, int F);
/* d_yg (T, 2F): dy = d_out * silu(g); dg = d_out * y * silu'(g) */
void cpu_swiglu_backward(float *d_yg, const float *d_out, const float *yg, int T, int F);

#endif
