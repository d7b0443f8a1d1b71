/* cpu_ops.h: the CPU backend's ops, fp32, one file each (libssm/cpu/<op>.c).
 * The CUDA backend has the same op names in libssm/cuda/<op>.cu.
 * Shapes: T = B * L rows (batch-major: row t = b * L + l); D = d_model, E = d_inner,
 * N = d_state, K = d_conv, V = vocab. "ld" is the row stride of a matrix, in floats. */
#ifndef SSM_CPU_OPS_H
#define SSM_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/scan_args.h"

/* for (long i = 0; i < n; i++) body; on `threads` threads (0: all) when `work` reaches `min`
 * and there are two items or more, else on this thread alone. A serial loop rather than an
 * OpenMP `if` clause: libgomp allocates a team for every region, even one that runs on one
 * thread, which costs more than a small op's work (the decode step's norms, gates, scans). */
#define CPU_FOR(i, n, work, min, threads, body)                                                \
    do {                                                                                       \
        const long cpu_for_n_ = (n);                                                           \
        if ((double)(work) < (double)(min) || cpu_for_n_ < 2) {                                \
            for (long i = 0; i < cpu_for_n_; i++) body;                                        \
        } else {                                                                               \
            const int cpu_for_t_ = (threads) > 0 ? (threads) : cpu_max_threads();             \
            _Pragma("omp parallel for schedule(static) num_threads(cpu_for_t_)")               \
            for (long i = 0; i < cpu_for_n_; i++) body;                                        \
        }                                                                                      \
    } while (0)
int cpu_max_threads(void);

/* matmul.c: out (T, n_out) = in (T, n_in) . W^T with W (n_out, n_in) (nn.Linear without bias).
 * beta = 0 overwrites out, beta = 1 adds to it. */
void cpu_matmul_forward(float *out, int ld_out, float beta, const float *in, int ld_in,
                        const float *W, int T, int n_in, int n_out);
/* The same product, row-exact: each sequence of L rows (B of them, T = B * L) in tiles of
 * cpu_matmul_tile_rows(L) rows, one single-threaded SGEMM of one shape per tile (threads over
 * tiles), so that a row's result does not depend on B or the thread count. scratch: at least
 * cpu_matmul_exact_scratch(L, n_in, n_out, threads) floats (used for the last, partial tile). */
#define CPU_MATMUL_TILE 64
int cpu_matmul_tile_rows(int L);
size_t cpu_matmul_exact_scratch(int L, int n_in, int n_out, int threads);
void cpu_matmul_forward_exact(float *out, int ld_out, float beta, const float *in, int ld_in,
                              const float *W, int B, int L, int n_in, int n_out,
                              float *scratch);
/* The same product for a few rows (the decode step: B rows, one token per sequence): W is read
 * from memory once for all B rows (a plain pass at B = 1, where SGEMM would pack W first).
 * Deterministic: each out[b, o] depends only on in[b], W[o] and n_in, never on B, the position
 * of the row or the thread count. Threads over blocks of W's rows when the product is large. */
void cpu_matmul_rows(float *out, int ld_out, float beta, const float *in, int ld_in,
                     const float *W, int B, int n_in, int n_out);
/* The same from bf16 weights (the decode step's opt-in copy, ssm_model_set_decode_weights):
 * W packed by cpu_bf16_pack_rows, each element widened to fp32 on the fly, products and sums
 * in fp32 in cpu_matmul_rows' order, so each output is bitwise cpu_matmul_rows' on the fp32
 * values of bf16(W), and just as deterministic. */
void cpu_matmul_rows_bf16(float *out, int ld_out, float beta, const float *in, int ld_in,
                          const uint16_t *W, int B, int n_in, int n_out);
/* dst (rows, n_in) = bf16(W) rounded to nearest even, in the layout cpu_matmul_rows_bf16 reads
 * (within each row, groups of 32 elements interleaved: matmul.c) */
void cpu_bf16_pack_rows(uint16_t *dst, const float *W, size_t rows, int n_in);
/* fp32 -> bf16 rounded to nearest even (NaN stays NaN), and back (exact) */
uint16_t cpu_bf16_from_float(float x);
float cpu_bf16_to_float(uint16_t h);
/* d_in (T, n_in) = beta * d_in + d_out . W (skipped when d_in is NULL);
 * dW (n_out, n_in) += d_out^T . in. */
void cpu_matmul_backward(float *d_in, int ld_din, float beta, float *dW, const float *d_out,
                         int ld_dout, const float *in, int ld_in, const float *W, int T, int n_in,
                         int n_out);

/* embedding.c: out (T, D) = table[tokens[t]]; backward: d_table[tokens[t]] += d_out[t]. */
void cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int T, int D);
void cpu_embedding_backward(float *d_table, const int32_t *tokens, const float *d_out, int T,
                            int D);

/* rmsnorm.c: out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); rstd (T) kept.
 * backward ADDS to dx (the residual path already holds a gradient) and to dw. */
void cpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int T, int D,
                         float eps);
void cpu_rmsnorm_backward(float *dx, float *dw, const float *d_out, const float *x,
                          const float *w, const float *rstd, int T, int D);
/* The same over D columns of rows of stride ld (Jamba's inner norms of dt, B and C inside
 * x_proj's rows): rstd[t * ld_rstd]. The backward WRITES dx, which may be d_out (in place),
 * and adds to dw. */
void cpu_rmsnorm_cols_forward(float *out, float *rstd, int ld_rstd, const float *x, int ld,
                              const float *w, int T, int D, float eps);
void cpu_rmsnorm_cols_backward(float *dx, float *dw, const float *d_out, const float *x, int ld,
                               const float *w, const float *rstd, int ld_rstd, int T, int D);

/* conv.c: depthwise causal conv1d + SiLU over each sequence of L rows:
 * u[t, e] = silu(b[e] + sum_k w[e, k] * x[t - K + 1 + k, e]), zero left padding, or the
 * carried inputs of state (B, E, K) (the last K inputs, oldest first) when state != NULL.
 * x has row stride ld_x (it is the x half of in_proj's output). */
void cpu_conv_forward(float *u, const float *x, int ld_x, const float *w, const float *b,
                      const float *state, int B, int L, int E, int K);
/* state (B, E, K) <- the last K inputs of [state | x] per sequence (after the forward). */
void cpu_conv_state_update(float *state, const float *x, int ld_x, int B, int L, int E, int K);
/* dx (row stride ld_x) = conv^T(du * silu'(pre)); dw, db += ...; zero initial state only. */
void cpu_conv_backward(float *dx, float *dw, float *db, const float *du, const float *x,
                       int ld_x, const float *w, const float *b, int B, int L, int E, int K);
/* One token per sequence: state rolls left and takes x (B, E); u (B, E). */
void cpu_conv_step(float *u, float *state, const float *x, int ld_x, const float *w,
                   const float *b, int B, int E, int K);

/* scan.c: the selective scan (ssm/scan_args.h: the equations and the argument struct, shared
 * with the CUDA twin; here fp32 and no gate: dtype F32, z NULL, the gate is gate.c).
 * u, dt, y: (T, E); Bm, Cm: (T, N) with row stride ld_bc (columns of x_proj's output);
 * state (B, E, N): initial state read and final state written when != NULL. */
void cpu_scan_forward(const ssm_scan_args *a, float *y, float *state);
/* Backward from zero initial state. Writes du, ddt (T, E) and dB, dC (row stride ld_bc);
 * adds to d_dt_bias (E), dA_log (E, N), dD (E). Recomputes the states (never stored).
 * scratch: threads * CPU_SCAN_SCRATCH(L, N) floats; partial: threads * T * 2N floats. */
#define CPU_SCAN_BLOCK 16
#define CPU_SCAN_SCRATCH(L, N) (((size_t)(2 * (L) + 1) * (N) + (size_t)(L)) * CPU_SCAN_BLOCK)
void cpu_scan_backward(const ssm_scan_args *a, const float *dy, float *du, float *ddt,
                       float *dBm, float *dCm, float *d_dt_bias, float *dA_log, float *dD,
                       float *scratch, float *partial, int threads);
/* One token per sequence (a->L ignored): state (B, E, N) updated; y (B, E). */
void cpu_scan_step(const ssm_scan_args *a, float *y, float *state);

/* gate.c: out = y * silu(z); z has row stride ld_z. backward writes dy and dz. */
void cpu_gate_forward(float *out, const float *y, const float *z, int ld_z, int T, int E);
void cpu_gate_backward(float *dy, float *dz, int ld_z, const float *d_out, const float *y,
                       const float *z, int T, int E);

/* cross_entropy.c: mean over rows with target >= 0 of -log softmax(logits)[target], in nats
 * (accumulated in double); *count receives the number of scored rows. backward turns the
 * logits (T, V) into d logits in place: (softmax - onehot) * scale, 0 on unscored rows. */
double cpu_cross_entropy_forward(const float *logits, const int32_t *targets, int T, int V,
                                 int64_t *count);
void cpu_cross_entropy_backward(float *logits, const int32_t *targets, int T, int V,
                                float scale);

/* regression_loss.c: the mean over elements whose target is not NaN of (pred - target)^2, or of
 * |pred - target| when mae, in double; *count receives the scored elements. backward writes
 * d_pred = scale * d(loss term)/d pred (0 where the target is NaN); d_pred may be pred. */
double cpu_regression_loss_forward(const float *pred, const float *target, size_t n, int mae,
                                   int64_t *count);
void cpu_regression_loss_backward(float *d_pred, const float *pred, const float *target,
                                  size_t n, int mae, float scale);

/* linear.c: out (T, n_out) = in (T, n_in) . W^T + bias; backward: d_in (T, n_in) = d_out . W
 * (skipped when NULL), dW += d_out^T . in, d_bias += column sums of d_out. */
void cpu_linear_forward(float *out, const float *in, const float *W, const float *bias, int T,
                        int n_in, int n_out);
void cpu_linear_backward(float *d_in, float *dW, float *d_bias, const float *d_out,
                         const float *in, const float *W, int T, int n_in, int n_out);

/* pool.c: out (B, D) from h (B, L, D): the mean over L, the last row or the first (CLS);
 * backward overwrites d_h (B, L, D). pool is ssm_pool's value. */
enum { CPU_POOL_MEAN = 0, CPU_POOL_LAST = 1, CPU_POOL_CLS = 2 };
void cpu_pool_forward(float *out, const float *h, int B, int L, int D, int pool);
void cpu_pool_backward(float *d_h, const float *d_out, int B, int L, int D, int pool);

/* Shared scalar helpers of the ops, written so that loops over them vectorise. */

/* exp(x): Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1e-7 relative), with
 * no call and no branch so that the compiler vectorises it; clamped to [-87, 88]. */
static inline float cpu_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; int32_t i; } scale = {.i = ((int32_t)k + 127) << 23};
    return p * scale.f;
}

static inline float cpu_sigmoid(float x) { return 1.0f / (1.0f + cpu_exp(-x)); }
static inline float cpu_silu(float x) { return x * cpu_sigmoid(x); }

/* softplus(x) = log(1 + exp(x)) with the reference's threshold (x > 20 returns x), as
 * max(x, 0) + log1p(exp(-|x|)); log1p(y) for y in (0, 1] = 2 atanh(y / (2 + y)), series to
 * s^11 (truncation < 2e-7). Vectorisable, no libm call. */
static inline float cpu_softplus(float x) {
    float y = cpu_exp(-__builtin_fabsf(x));
    float s = y / (2.0f + y), s2 = s * s;
    float p = 2.0f * s *
              (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11))))));
    float r = (x > 0.0f ? x : 0.0f) + p;
    return x > 20.0f ? x : r;
}

#endif
