/* gated_norm.h: Mamba-2's gated RMSNorm (mamba_ssm's RMSNormGated with norm_before_gate = False
 * and group_size = I / G), fp32, statistics accumulated in double as rmsnorm.c does:
 *   v = y * silu(z);   out = v * rstd * w,   rstd = 1 / sqrt(mean over the group of v^2 + eps)
 * over each of the G groups of I / G contiguous channels of a row. T rows; "ld" is a row
 * stride in floats (z is a column block of in_proj's output). The prototypes name I
 * "channels": <complex.h>, which OpenBLAS's cblas.h includes, defines I as a macro. */
#ifndef SSM_CPU_GATED_NORM_H
#define SSM_CPU_GATED_NORM_H

/* v = y * silu(z); out = v * rsqrt(mean over each group of I/G contiguous channels of v^2 + eps) * w */
void cpu_gated_rmsnorm_forward(float *out, int ld_out, float *rstd /* (T, G) kept */, const float *y, int ld_y,
                               const float *z, int ld_z, const float *w /* (I) */, int T, int channels /* I */, int G, float eps);
/* dy (stride ld_dy) and dz (stride ld_dz) written (they must not overlap y, z, d_out); dw (I)
 * ADDED to. Allocates ceil(T / 64) * I floats for dw's partial sums. */
void cpu_gated_rmsnorm_backward(float *dy, int ld_dy, float *dz, int ld_dz, float *dw, const float *d_out, int ld_dout,
                                const float *y, int ld_y, const float *z, int ld_z, const float *w, const float *rstd,
                                int T, int channels /* I */, int G);

#endif
