/* cuda_ops.h: the CUDA backend's ops (libssm/cuda/<op>.cu), the GPU twins of the CPU ops of
 * libssm/cpu/cpu_ops.h, with the same names, shapes and layouts:
 * T = B * L rows (row t = b * L + l), channels contiguous; E = d_inner, N = d_state,
 * K = d_conv; "ld" is a row stride in elements.
 *
 * Activations (u, dt, x, B, C, z, outputs and their gradients) are fp32 or bf16 as `dtype`
 * says; parameters (dt_bias, A_log, D, conv weights) and recurrent states are fp32; all
 * arithmetic and accumulation is fp32 and rounding to bf16 happens only at a store.
 * Every pointer is a device pointer; every call only enqueues work on `stream` and returns
 * SSM_OK, or a status with ssm_last_error() set (bad arguments, a workspace too small, a
 * failed launch). See docs/kernels.md for how the kernels work and what they cost. */
#ifndef SSM_CUDA_OPS_H
#define SSM_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>
#include <cublas_v2.h>

#include "ssm/scan_args.h"
#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif


/* Number of CUDA devices, 0 when there is none or the driver cannot be loaded. */
int ssm_cuda_device_count(void);

/* ---- scan.cu: the selective scan (ssm/scan_args.h: the equations and the argument struct,
 * shared with the CPU twin). d_state N <= 32. */

/* out (T, E). state (B, E, N) or NULL: initial state read, final state written (carry).
 * workspace: cuda_scan_forward_workspace(args) bytes (0 when the sequence is not chunked). */
size_t cuda_scan_forward_workspace(const ssm_scan_args *args);
ssm_status cuda_scan_forward(const ssm_scan_args *args, void *out, float *state,
                             void *workspace, size_t workspace_bytes, cudaStream_t stream);

/* Backward from zero initial state, recomputing the states (never stored by the forward).
 * d_out (T, E): gradient of the output (of the gated output when z != NULL).
 * Writes du, ddt (T, E), dBm, dCm (row stride ld_bc, may be columns of one buffer) and, with
 * z, dz (row stride ld_z); ADDS to d_dt_bias (E), dA_log (E, N), dD (E). Deterministic. */
size_t cuda_scan_backward_workspace(const ssm_scan_args *args);
/* Bytes for args->ckpt: the state every 16 steps of every channel (0 when this shape cannot
 * save them: a long sequence that either pass cuts into chunks). */
size_t cuda_scan_checkpoint_bytes(const ssm_scan_args *args);
ssm_status cuda_scan_backward(const ssm_scan_args *args, const void *d_out, void *du,
                              void *ddt, void *dBm, void *dCm, void *dz, float *d_dt_bias,
                              float *dA_log, float *dD, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream);

/* One token per sequence (mamba_ssm's selective_state_update): args->L is ignored (1), rows
 * are sequences: u, dt, out (B, E); Bm, Cm (B, N) stride ld_bc; z (B, E) stride ld_z.
 * state (B, E, N) updated in place (16-byte aligned, like A_log, when N is a multiple of 4). */
ssm_status cuda_scan_step(const ssm_scan_args *args, void *out, float *state,
                          cudaStream_t stream);

/* ---- conv.cu: depthwise causal conv1d + SiLU (mamba_ssm's causal_conv1d_fn, "silu"):
 *   u[t, e] = silu(b[e] + sum_k w[e, k] * x[t - K + 1 + k, e])
 * with zero left padding, or the carried inputs of state (B, E, K) (the last K inputs,
 * oldest first). x has row stride ld_x; u is (T, E). w (E, K), b (E) fp32. K <= 64. */
ssm_status cuda_conv_forward(void *u, const void *x, int ld_x, const float *w, const float *b,
                             const float *state, int B, int L, int E, int K, ssm_dtype dtype,
                             cudaStream_t stream);
/* state (B, E, K) <- the last K inputs of [state | x] per sequence (after the forward). */
ssm_status cuda_conv_state_update(float *state, const void *x, int ld_x, int B, int L, int E,
                                  int K, ssm_dtype dtype, cudaStream_t stream);
/* Zero initial state. Writes dx (row stride ld_x); ADDS to dw (E, K), db (E).
 * Deterministic (partial sums in the workspace, reduced in a fixed order). */
size_t cuda_conv_backward_workspace(int B, int L, int E, int K);
ssm_status cuda_conv_backward(void *dx, float *dw, float *db, const void *du, const void *x,
                              int ld_x, const float *w, const float *b, int B, int L, int E,
                              int K, ssm_dtype dtype, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream);
/* One token per sequence: state rolls left and takes x (B, E) (row stride ld_x); u (B, E). */
ssm_status cuda_conv_step(void *u, float *state, const void *x, int ld_x, const float *w,
                          const float *b, int B, int E, int K, ssm_dtype dtype,
                          cudaStream_t stream);

/* ---- matmul.cu: the projections through cuBLAS, row-major like cpu_matmul_* -------------
 * in, w, d_out bf16; fp32 accumulation; out / d_in in out_dtype; d_w fp32.
 * out (T, n) = beta * out + in (T, k) . w (n, k)^T */
ssm_status cuda_matmul_forward(cublasHandle_t blas, void *out, int ld_out, ssm_dtype out_dtype,
                               float beta, const void *in, int ld_in, const void *w, int T, int k,
                               int n);
/* the same for b < batch: out_b = beta * out_b + in_b . w_b^T, each operand stride_* elements
 * after the one before it (stride_in 0: one input for every w_b) */
ssm_status cuda_matmul_forward_batched(cublasHandle_t blas, void *out, int ld_out, long long stride_out,
                                       ssm_dtype out_dtype, float beta, const void *in, int ld_in,
                                       long long stride_in, const void *w, long long stride_w, int T,
                                       int k, int n, int batch);
/* d_in (T, k) = beta_in * d_in + d_out (T, n) . w (n, k)   (skipped when d_in is NULL)
 * d_w (n, k) += d_out^T . in                                (skipped when d_w is NULL) */
ssm_status cuda_matmul_backward(cublasHandle_t blas, void *d_in, int ld_din, ssm_dtype din_dtype,
                                float beta_in, float *d_w, const void *d_out, int ld_dout,
                                const void *in, int ld_in, const void *w, int T, int k, int n);

/* ---- ssd.cu: the state space op of the Mamba-2 mixer, the twin of libssm/cpu/ssd.c ------
 * (its equations: dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max), A = -exp(A_log),
 *  S_t = exp(dt A) S_{t-1} + dt x_t B_t^T, y_t = S_t C_t + D x_t; head h reads group
 *  h / (H / G)). The fields are cpu_ssd_args' (libssm/cpu/ssd.h), the activations bf16 (x, B, C,
 *  dt, y and their gradients), the parameters and the state fp32. N <= 128. */
typedef struct cuda_ssd_args {
    int B, L;             /* T = B * L rows, row t = b * L + l */
    int H, P, G, N;       /* heads, headdim, groups, d_state */
    float dt_min, dt_max; /* dt_limit */
    const void *x, *Bm, *Cm; /* (T, H*P), (T, G*N), (T, G*N) bf16, row stride ld_x */
    int ld_x;
    const void *dt;       /* (T, H) bf16, row stride ld_dt: raw dt */
    int ld_dt;
    const float *dt_bias, *A_log, *Dskip; /* (H) each */
    void *y;              /* (T, H*P) bf16, row stride ld_y */
    int ld_y;
    float *state;         /* (B, H, P, N) or NULL: initial state read, final state written */
    /* backward: dy (stride ld_y) in; dx, dBm, dCm (stride ld_x), ddt (stride ld_dt) written;
     * d_dt_bias, dA_log, dD (H) ADDED to */
    const void *dy;
    void *dx, *dBm, *dCm, *ddt;
    float *d_dt_bias, *dA_log, *dD;
} cuda_ssd_args;
/* y; the state carried when args->state is set. No workspace. */
ssm_status cuda_ssd_forward(const cuda_ssd_args *args, cudaStream_t stream);
/* From zero initial state (state must be NULL): recomputes the states forward, then runs the
 * adjoint recurrence backward. workspace: cuda_ssd_backward_workspace(args) bytes. */
size_t cuda_ssd_backward_workspace(const cuda_ssd_args *args);
ssm_status cuda_ssd_backward(const cuda_ssd_args *args, void *workspace, size_t workspace_bytes,
                             cudaStream_t stream);
/* L == 1, state set: one token per sequence (row b), the state updated in place. */
ssm_status cuda_ssd_step(const cuda_ssd_args *args, cudaStream_t stream);

/* ---- gated_norm.cu: Mamba-2's gated RMSNorm, the twin of libssm/cpu/gated_norm.c -------
 *   v = y * silu(z);  out = v * rstd * w,  rstd = 1 / sqrt(mean over each group of I / G
 *   contiguous channels of v^2 + eps).   y, z, out, d_out, dy, dz bf16; w, dw, rstd fp32. */
ssm_status cuda_gated_rmsnorm_forward(void *out, int ld_out, float *rstd /* (T, G) */,
                                      const void *y, int ld_y, const void *z, int ld_z,
                                      const float *w, int T, int channels, int G, float eps,
                                      cudaStream_t stream);
/* dy, dz written; dw (I) ADDED to. Deterministic (partial sums in the workspace). */
size_t cuda_gated_rmsnorm_backward_workspace(int T, int channels);
ssm_status cuda_gated_rmsnorm_backward(void *dy, int ld_dy, void *dz, int ld_dz, float *dw,
                                       const void *d_out, int ld_dout, const void *y, int ld_y,
                                       const void *z, int ld_z, const float *w,
                                       const float *rstd, int T, int channels, int G,
                                       void *workspace, size_t workspace_bytes,
                                       cudaStream_t stream);

/* ---- activation.cu: the MLP layers' activations, the twins of libssm/cpu/activation.c ---
 * T rows of F hidden channels at row strides ld_*; u, a, d_a, d_u in dtype (fp32 or bf16).
 * relu2 (NemotronH): a = relu(u)^2, u (T, F).  swiglu (mamba_ssm's GatedMLP): a = y * silu(g),
 * u = yg (T, 2F) rows [y | g]. The backward WRITES d u (its rows as wide as u's). */
ssm_status cuda_relu2_forward(void *a, int ld_a, const void *u, int ld_u, int T, int F,
                              ssm_dtype dtype, cudaStream_t stream);
ssm_status cuda_relu2_backward(void *du, int ld_du, const void *da, int ld_da, const void *u,
                               int ld_u, int T, int F, ssm_dtype dtype, cudaStream_t stream);
ssm_status cuda_swiglu_forward(void *a, int ld_a, const void *yg, int ld_yg, int T, int F,
                               ssm_dtype dtype, cudaStream_t stream);
ssm_status cuda_swiglu_backward(void *d_yg, int ld_dyg, const void *da, int ld_da,
                                const void *yg, int ld_yg, int T, int F, ssm_dtype dtype,
                                cudaStream_t stream);

/* ---- attention.cu: causal self-attention with GQA, the twin of libssm/cpu/attention.c -----
 * The shapes and masks of cpu_attention_args (libssm/cpu/attention.h): B sequences of L query
 * rows, H query heads and Hkv kv heads of hd <= 128 channels; query l of sequence b (absolute
 * position prefix[b] + l) attends to keys 0 .. prefix[b] + l. q, out, d_out, dq, dk, dv bf16;
 * k, v bf16 (this pass's keys) or fp32 (a KV cache: kv_dtype); lse (B, H, L) fp32. */
typedef struct cuda_attention_args {
    int B, L, H, Hkv, hd;
    float scale;              /* usually 1 / sqrt(hd) */
    const void *q;            /* (T, H hd) row stride ld_q */
    int ld_q;
    const void *k, *v;        /* sequence b's keys: rows of k + b * kv_batch_stride, stride ld_kv */
    int ld_kv;
    size_t kv_batch_stride;   /* elements: L * ld_kv for this pass's keys, cap * ld_kv for a cache */
    ssm_dtype kv_dtype;
    const int64_t *prefix;    /* device (B) keys before this pass's first query, or NULL = 0 */
    void *out;                /* (T, H hd) row stride ld_out */
    int ld_out;
    float *lse;               /* (B, H, L) natural-log sums of the scaled scores, or NULL */
    /* backward only (prefix NULL, bf16 keys of this pass): d_out (stride ld_out), out (the
     * forward's), lse; writes dq (stride ld_q), dk, dv (the layout of k, v) */
    const void *d_out;
    void *dq, *dk, *dv;
    /* the decode step (L = 1, prefix set): cuda_attention_decode_workspace bytes for the
     * split-key kernel (attention_decode.cu), or NULL for the tiled one */
    void *split_work;
    size_t split_work_bytes;
} cuda_attention_args;
/* out and lse (when non-NULL). Also the decode step: L = 1, prefix = the caches' lengths, the
 * new keys and values already in the cache (with split_work: the split-key kernel). */
ssm_status cuda_attention_forward(const cuda_attention_args *args, cudaStream_t stream);
/* The kernels' shared-memory limits raised on the current device (done by the first launch
 * otherwise): call before capturing a CUDA graph that launches them. */
ssm_status cuda_attention_prepare(void);
/* The decode step's split-key attention (attention_decode.cu; cuda_attention_forward sends it
 * a decode step with split_work): each (sequence, kv head) has its keys cut into parts spread
 * over the GPU, each part's softmax sums and output kept, then the parts combined. Its
 * workspace depends on B, H, Hkv and hd only (a CUDA graph's step keeps one). */
size_t cuda_attention_decode_workspace(const cuda_attention_args *args);
ssm_status cuda_attention_decode(const cuda_attention_args *args, cudaStream_t stream);
/* dq, dk, dv of J = sum(out * d_out); deterministic (no atomics). Workspace: B H L floats. */
size_t cuda_attention_backward_workspace(const cuda_attention_args *args);
ssm_status cuda_attention_backward(const cuda_attention_args *args, void *workspace, size_t workspace_bytes,
                                   cudaStream_t stream);

/* ---- rope.cu: rotary embedding, GPT-NeoX halves, the twin of libssm/cpu/rope.c -------------
 * x (T, n_heads hd) bf16, row stride ld, in place; rows of sequence b at positions pos0[b] + l
 * (pos0: device (B), or NULL = 0); inverse = 1 rotates back (the backward). rot_dim even,
 * <= hd, rot_dim / 2 <= 64. */
ssm_status cuda_rope_apply(void *x, int ld, int B, int L, int n_heads, int hd, int rot_dim, float base,
                           const int64_t *pos0, int inverse, cudaStream_t stream);

/* ---- fixed_x_dbl.cu: x_dbl without selection (model.selective: false), the twin of
 * m1_fixed_x_dbl in mamba1.c: x_dbl (T, XD) bf16 = x_proj (XD, E) fp32 applied to ones, the
 * same row at every t; the backward ADDS sum_t d_x_dbl[t, j] to every g_x_proj[j, e]. */
ssm_status cuda_fixed_x_dbl_forward(void *x_dbl, int ld, const float *x_proj, int T, int E,
                                    int XD, cudaStream_t stream);
ssm_status cuda_fixed_x_dbl_backward(float *g_x_proj, const void *d_x_dbl, int ld, int T, int E,
                                     int XD, cudaStream_t stream);

/* ---- embedding.cu ----------------------------------------------------------------------- */
/* out (T, D) fp32 = table[tokens[t]], table (V, D) fp32, tokens (T) int32 on the device. */
ssm_status cuda_embedding_forward(float *out, const int32_t *tokens, const float *table, int T,
                                  int D, cudaStream_t stream);
/* d_table (V, D) += sum over the rows t with tokens[t] == v of d_out[t] (fp32), each token's
 * rows added in order of t in chunks of 256 (deterministic: no atomics). workspace:
 * cuda_embedding_backward_workspace(T, D) bytes (about T (D + 3) floats). */
size_t cuda_embedding_backward_workspace(int T, int D);
ssm_status cuda_embedding_backward(float *d_table, const int32_t *tokens, const float *d_out,
                                   int T, int D, void *workspace, size_t workspace_bytes,
                                   cudaStream_t stream);

/* ---- rmsnorm.cu: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), fp32 arithmetic ---- */
/* x (T, D) fp32 (the residual stream); out (T, D) in dtype; rstd (T) fp32. */
ssm_status cuda_rmsnorm_forward(void *out, float *rstd, const float *x, const float *w, int T,
                                int D, float eps, ssm_dtype dtype, cudaStream_t stream);
/* d_out (T, D) in dtype. ADDS to dx (T, D) fp32 (the residual gradient) and to dw (D).
 * Deterministic (per-block partial sums of dw in the workspace, reduced in a fixed order). */
size_t cuda_rmsnorm_backward_workspace(int T, int D);
ssm_status cuda_rmsnorm_backward(float *dx, float *dw, const void *d_out, const float *x,
                                 const float *w, const float *rstd, int T, int D,
                                 ssm_dtype dtype, void *workspace, size_t workspace_bytes,
                                 cudaStream_t stream);

/* ---- cross_entropy.cu: the head's softmax over rows of fp32 logits ---------------------- */
/* logits (rows, V) fp32 with row stride ld; targets (rows) int32 (negative: not scored).
 * nll (rows): lse - logits[target], 0 where target < 0.
 * entropy (rows) or NULL: lse - sum softmax * logits.
 * dlogits (rows, V, row stride ld) in dtype or NULL: (softmax - onehot(target)) * scale, all
 * zeros on rows whose target < 0. dlogits may alias logits only when dtype is fp32. */
ssm_status cuda_cross_entropy(float *nll, float *entropy, void *dlogits, ssm_dtype dtype,
                              const float *logits, int ld, const int32_t *targets, int rows,
                              int V, float scale, cudaStream_t stream);
/* The same over bf16 logits (a training head's, the reference's autocast precision): dlogits
 * (bf16, or NULL) may alias the logits. */
ssm_status cuda_cross_entropy_bf16(float *nll, float *entropy, void *dlogits, const void *logits,
                                   int ld, const int32_t *targets, int rows, int V, float scale,
                                   cudaStream_t stream);
/* out[r] = argmax over v < V of logits[r, v] (the lowest index on ties); logits (rows, V)
 * fp32, row stride ld. */
ssm_status cuda_argmax(int32_t *out, const float *logits, int ld, int rows, int V,
                       cudaStream_t stream);
/* *out = sum of x[0 .. n) in a fixed order (deterministic), fp32 in, accumulated in double,
 * stored as double. */
size_t cuda_sum_workspace(size_t n);
ssm_status cuda_sum(double *out, const float *x, size_t n, void *workspace,
                    size_t workspace_bytes, cudaStream_t stream);

/* ---- adamw.cu: gradient clipping and AdamW, all on the device --------------------------- */
/* *out = sum of g[i]^2 over i < n, accumulated in double in a fixed order (deterministic). */
size_t cuda_sumsq_workspace(size_t n);
ssm_status cuda_sumsq(double *out, const float *g, size_t n, void *workspace,
                      size_t workspace_bytes, cudaStream_t stream);
/* One tensor of the parameter blob: elements [offset, offset + numel), decay 0 or 1. */
typedef struct cuda_adamw_tensor {
    size_t offset, numel;
    int decay;
} cuda_adamw_tensor;
/* One AdamW step over every tensor (one launch), the same arithmetic as ssm_adamw_step:
 *   norm = sqrt(*sumsq); clip = max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1
 *   g = grad * clip; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
 *   p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * decay * p)
 * and p_bf16 (n, or NULL) receives bf16(p). When norm is not finite nothing is changed.
 * tensors: a DEVICE array of n_tensors entries. */
typedef struct cuda_adamw_args {
    float lr, beta1, beta2, eps, weight_decay, max_norm;
    float bc1, bc2; /* 1 - beta^step, step counted from 1 */
} cuda_adamw_args;
ssm_status cuda_adamw(float *p, void *p_bf16, float *m, float *v, const float *grad,
                      const cuda_adamw_tensor *tensors, int n_tensors, const double *sumsq,
                      const cuda_adamw_args *args, cudaStream_t stream);
/* dst (n) bf16 = src (n) fp32 rounded to nearest even. */
ssm_status cuda_to_bf16(void *dst, const float *src, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
