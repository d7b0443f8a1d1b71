// model.cuh: the model's copy on a GPU (ssm_cuda_model) that model.cu, forward.cu and step.cu
// share: the mixed-precision parameter blobs, the activation plan and the decode buffers.
// The layer loop itself reads like libssm/src/forward.c, op for op.
#ifndef SSM_CUDA_MODEL_CUH
#define SSM_CUDA_MODEL_CUH

#include <cublas_v2.h>

#include "../src/backend_cuda.h"
#include "common.cuh"

typedef __nv_bfloat16 bf16;

// A Mamba-2 layer's activations (mamba2.cu; libssm/src/mamba2.c's ssm_mamba2_acts): T rows,
// I = d_inner, G groups, CD = I + 2 G N (the conv's channels), ZD = I + CD + H.
struct cuda_mamba2_acts {
    bf16 *zxbcdt;  // (T, ZD) in_proj output [z | xBC | dt]
    bf16 *xbc;     // (T, CD) silu(conv1d(xBC)) = [x | B | C]
    bf16 *y;       // (T, I) SSD output (D skip included)
    float *rstd;   // (T, G) the gated norm's 1 / rms per group
    bf16 *normed;  // (T, I) RMSNormGated(y, z), input of out_proj
};
// Its widths: I, G, CD = I + 2 G N, ZD = I + CD + H
struct cuda_mamba2_widths { size_t I, G, CD, ZD; };
static inline cuda_mamba2_widths cuda_mamba2_width(const ssm_config *c) {
    const ssm_mamba2_config *m = &c->mamba2;
    size_t I = m->d_inner, G = m->ngroups, CD = I + 2 * G * m->d_state;
    return {I, G, CD, I + CD + m->nheads};
}
// The Mamba-2 backward's scratch, shared by its layers.
struct cuda_mamba2_scratch {
    bf16 *d_zxbcdt; // (T, ZD)
    bf16 *d_xbc;    // (T, CD)
    bf16 *d_y;      // (T, I)
    bf16 *d_normed; // (T, I)
};
// The Mamba-2 decode buffers for B rows (the block's h, r, rstd are cuda_decode's).
struct cuda_mamba2_decode {
    bf16 *zxbcdt, *xbc, *y, *normed; // (B, ZD), (B, CD), (B, I), (B, I)
    float *rstd;                     // (B, G)
};

// An MLP layer's activations (mlp.cu; libssm/src/mlp.c's): U = F, or 2F for swiglu.
struct cuda_mlp_acts {
    bf16 *u; // (T, U) up(h) (swiglu: [y | g])
    bf16 *a; // (T, F) act(u), input of down
};
// Its widths: F = d_ff, U = up's rows
struct cuda_mlp_widths { size_t F, U; };
static inline cuda_mlp_widths cuda_mlp_width(const ssm_config *c) {
    size_t F = c->mlp.d_ff;
    return {F, (c->mlp.activation == SSM_MLP_SWIGLU ? 2 : 1) * F};
}

// An attention layer's activations (attention_layer.cu; libssm/src/attention.c's): QD = H hd,
// KD = Hkv hd. The backward's scratch has the same shape (d q, d k, d v, d o; no lse).
struct cuda_attention_acts {
    bf16 *q, *k, *v; // (T, QD), (T, KD), (T, KD) projections, q and k rotated
    bf16 *o;         // (T, QD) attention output, input of o_proj
    float *lse;      // (B, H, L) the softmax's log-sum-exp per query row
};

// A mixture-of-experts layer's activations (moe.cu; libssm/src/moe.c's ssm_moe_acts): T rows,
// X experts, S = T k slots (slot t k + j: token t's j-th choice), grouped by expert into rows
// [start[e], start[e + 1]). U = F or 2F (swiglu) up's rows per expert; Us, Fs the shared
// expert's. The decode step runs every expert on all B rows instead (S = X B dense rows,
// row e B + b; start and slot unused there).
struct cuda_moe_acts {
    float *logits, *prob; // (T, X) router logits, probabilities
    int32_t *sel;         // (S) the chosen experts
    float *w;             // (S) their weights
    int32_t *start;       // (X + 1)
    int32_t *slot;        // (S) grouped row -> slot
    int32_t *row;         // (S) slot -> grouped row
    bf16 *x;              // (S, D) the grouped rows' inputs
    bf16 *u;              // (S, U) up_e(x)
    bf16 *a;              // (S, F) act(u), input of down_e
    float *y;             // (S, D) the experts' outputs
    bf16 *su, *sa;        // (T, Us), (T, Fs) the shared expert's u and a
};
// Its widths
struct cuda_moe_widths { size_t X, k, F, U, Fs, Us; };
static inline cuda_moe_widths cuda_moe_width(const ssm_config *c) {
    const ssm_moe_config *o = &c->moe;
    size_t g = o->activation == SSM_MLP_SWIGLU ? 2 : 1;
    return {(size_t)o->n_experts, (size_t)o->top_k, (size_t)o->d_ff, g * o->d_ff, (size_t)o->shared_d_ff,
            g * o->shared_d_ff};
}
// The MoE backward's scratch, shared by its layers.
struct cuda_moe_scratch {
    float *d_logits;  // (T, X)
    bf16 *d_logits16; // (T, X) the router GEMM's input
    float *d_w;       // (S)
    bf16 *d_y;        // (S, D)
    bf16 *d_u, *d_a;  // (S, U), (S, F)
    float *d_x;       // (S, D)
    bf16 *d_su, *d_sa; // (T, Us), (T, Fs)
    float *d_h;       // (T, D) d normed summed in fp32 (router, shared expert, the k choices)
};

// Activations kept by the forward for the backward: bf16 except the residual stream and rstd
// (fp32). T = B * L rows; D, E, N, R, XD = R + 2N as in forward.c. The block's first three;
// then the Mamba-1 layer's (the fused path) or the Mamba-2 layer's, as the layer's kind says.
struct cuda_layer_acts {
    float *resid;  // (T, D) fp32 residual stream entering the layer
    bf16 *normed;  // (T, D) input of in_proj
    float *rstd;   // (T)
    bf16 *xz;      // (T, 2E) in_proj output [x | z]
    bf16 *u;       // (T, E) silu(conv1d(x))
    bf16 *x_dbl;   // (T, XD) x_proj output [dt | B | C]
    bf16 *dt;      // (T, E) dt_proj output without its bias
    bf16 *gated;   // (T, E) scan output y * silu(z), input of out_proj
    float *ckpt;   // training: the scan's saved states (cuda_scan_checkpoint_bytes), or NULL
    cuda_mamba2_acts mamba2;
    cuda_mlp_acts mlp;
    cuda_attention_acts attention;
    cuda_moe_acts moe;
};

// Without training (scoring, prompts) nothing is kept for a backward: every layer gets layer 0's
// buffers and the residual stream is one buffer updated in place.
struct cuda_acts {
    int B, L, training;
    size_t bytes;              // of blob
    void *blob;                // one allocation for everything below
    cuda_layer_acts *layers;   // (n_layer) host array of device pointers
    float *resid_f;            // (T, D)
    bf16 *normed_f;            // (T, D)
    float *rstd_f;             // (T)
    int32_t *tokens, *targets; // (T)
    int64_t *pos;              // (B) a carried state's positions (attention's KV cache lengths)
    float *nll, *entropy;      // (T) per-position losses of the head
    int head_rows;             // rows of logits the head computes at once
    float *logits;             // (head_rows, V) fp32
    bf16 *dlogits;             // (head_rows, V) training only
    float *head_dw;            // (V, D) training: the head's share of d embedding (forward)
    // backward scratch (training only), shared by the layers
    float *d_resid;            // (T, D)
    bf16 *d_resid16;           // (T, D) bf16 copy: the GEMMs take bf16 inputs
    bf16 *d_normed;            // (T, D)
    bf16 *d_xz;                // (T, 2E)
    bf16 *d_u;                 // (T, E)
    bf16 *d_x_dbl;             // (T, XD)
    bf16 *d_dt;                // (T, E)
    bf16 *d_gated;             // (T, E)
    cuda_mamba2_scratch mamba2; // Mamba-2 layers' (when the model has them)
    cuda_mlp_acts d_mlp;       // MLP layers' d u (T, U), d a (T, F)
    cuda_attention_acts d_attention; // attention layers' d q, d k, d v, d o
    cuda_moe_scratch d_moe;    // MoE layers'
    float *moe_stats;          // (n_layer, 2X) each MoE layer's choices and probability sums
                               // per expert (0 for other layers): the Switch auxiliary loss
    float *moe_aux_grad;       // (X) d loss / d prob of that loss
    double *moe_aux;           // (1) the loss itself
    int32_t *moe_start_host;   // (n_layer, X + 1) host copies of the layers' start
    void *work;                // scan, conv, rmsnorm and reduction workspace
    size_t work_bytes;
    double *sum;               // (1) reductions' results
};

// Decode (one token per sequence) buffers for `batch` rows, and the CUDA graphs of one step.
struct cuda_decode {
    int batch;
    void *blob;
    size_t bytes;          // of blob
    int32_t *tokens;       // (B) input tokens of the step
    float *r;              // (B, D) residual stream
    bf16 *h;               // (B, D)
    float *rstd;           // (B)
    bf16 *xz;              // (B, 2E)
    bf16 *u, *dt, *y;      // (B, E)
    bf16 *x_dbl;           // (B, XD)
    cuda_mamba2_decode mamba2; // Mamba-2 layers' (when the model has them)
    cuda_mlp_acts mlp;     // MLP layers' u (B, U), a (B, F)
    cuda_attention_acts attention; // attention layers' q, k, v, o (B rows; no lse)
    void *attention_split; // their split-key kernel's workspace (cuda_attention_decode)
    size_t attention_split_bytes;
    cuda_moe_acts moe;     // MoE layers' (dense: every expert on the B rows)
    int64_t *pos;          // (B) positions of the step's tokens (the KV caches' lengths)
    float *logits;         // (B, V)
    int32_t *out;          // (B, out_cap) greedy tokens
    int out_cap;
    int *counter;          // (1) tokens appended to out so far
    float *part_v;         // (pairs, B) greedy's fused head argmax (cuda_gemv_argmax_scratch):
    int32_t *part_i;       // (pairs, B) the blocks' best values and their indices
    unsigned *blocks_done; // (counters) its finished blocks and groups (0 between launches)
    const void *graph_state;   // the state the step graph was captured with
    cudaGraphExec_t step_graph;   // ssm_step: tokens -> logits
    float *gen_state;      // greedy generation's own state (B rows), NULL until the first
    size_t gen_state_bytes;
    cudaGraphExec_t gen_graph[2]; // greedy steps over gen_state: GRAPH_STEPS of them, and one
    int gemv;              // the step's projections through cuda_gemv (small B), see step.cu:
                           // 0 no (cuBLAS), 1 yes, 2 yes with programmatic dependent launch
};

struct ssm_cuda_model {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_work;        // cuBLAS workspace (so that graph capture never allocates)
    size_t n_params;
    float *params;          // (n_params) fp32 master weights
    bf16 *params16;         // (n_params) bf16 working copies
    float *grads;           // (n_params) fp32, NULL until training
    float *moments;         // (2, n_params) AdamW m then v, NULL until training
    cuda_adamw_tensor *tensors; // (n_tensors) device table for the fused AdamW
    ssm_params p, g;        // device pointers into params / grads, like model->params
    cuda_acts a;
    cuda_decode dec;
    float *host_logits;     // (T, V) host copy after a forward without targets
    size_t host_logits_cap;
    int has_targets, backward_ready, has_state;
    int routed;             // a forward since the plan: the MoE layers' routing is in the acts
    double aux_loss;        // the last forward with targets' Switch auxiliary loss
    int64_t count;          // scored positions of the last forward with targets
    size_t bytes, peak;     // device bytes held now / at most
};

// bf16 working copy of a parameter tensor given by its fp32 device pointer
static inline const bf16 *w16(const ssm_cuda_model *g, const float *p) {
    return g->params16 + (p - g->params);
}

// The decode step's small-batch projection (gemv.cu): out (B, n) = beta * out + x . w^T, x the
// bf16 rows in (B, k), or, with norm_w, RMSNorm(eps, norm_w) of the fp32 rows in; with u set,
// the causal-conv step on out columns [0, E) too (u (B, E) = silu(conv), conv_state (B, E, K)).
#define GV_MAXB 8
#define GV_KMAX 8 // the fused conv step's widest kernel (d_conv)
// Greedy decode's head (fp32 out): tokens[b] = the first index of row b's maximum, then the
// append of step.cu's append_tokens (out[b, *counter] = tokens[b], pos[b] += 1, *counter += 1).
// part_v, part_i, blocks_done: scratch of cuda_gemv_argmax_scratch's sizes, the counters 0
// before the first launch (and 0 again after each).
struct cuda_gemv_argmax {
    int32_t *tokens;       // (B), or NULL: no argmax
    float *part_v;
    int32_t *part_i;
    unsigned *blocks_done;
    int32_t *out;          // (B, out_cap)
    int out_cap;
    int *counter;
    int64_t *pos;          // (B)
};
struct cuda_gemv_args {
    void *out;
    int ld_out;
    ssm_dtype out_dtype;
    float beta;            // fp32 out only
    const void *in;        // (B, k) row stride ld_in: bf16, or fp32 with norm_w
    int ld_in;
    const float *norm_w;   // (k) or NULL
    float eps;
    const bf16 *w;         // (n, k)
    int B, k, n;
    void *u;               // (B, E) bf16, or NULL: no conv
    float *conv_state;     // (B, E, K)
    const float *conv_w, *conv_b; // (E, K), (E)
    int E, K;
    int overlap;           // programmatic dependent launch (sm_90 and later)
    cuda_gemv_argmax argmax;
};
// B <= GV_MAXB, k a multiple of 8 (at most 2048), 16-byte aligned rows: else use cuBLAS
extern "C" bool cuda_gemv_fits(const cuda_gemv_args *a);
extern "C" ssm_status cuda_gemv(const cuda_gemv_args *a, cudaStream_t st);
// the fused argmax's scratch for n outputs: part_v and part_i hold pairs * B, blocks_done counters
extern "C" void cuda_gemv_argmax_scratch(int n, int *pairs, int *counters);

// A projection of the decode step (step.cu): out (B, n) = beta * out + x . w^T over dec.batch
// rows, x the bf16 rows in (B, k) or, with norm_w, RMSNorm(norm_eps, norm_w) of the fp32 rows
// in; through cuda_gemv where the step's plan takes it and the shape fits, else cuBLAS (the
// norm then into dec.h first).
ssm_status cuda_step_project(ssm_model *m, void *out, int ld_out, ssm_dtype out_dtype, float beta, const void *in,
                             int ld_in, const float *norm_w, const bf16 *w, int k, int n);

// device allocation counted in bytes/peak
ssm_status cuda_model_alloc(ssm_cuda_model *g, void **ptr, size_t bytes, const char *what);
void cuda_model_release(ssm_cuda_model *g, void *ptr, size_t bytes);
// the decode buffers and graph
void cuda_decode_free(ssm_cuda_model *g);
// make the device current and check for an earlier asynchronous failure
ssm_status cuda_model_enter(ssm_cuda_model *g);
// plan activations for (B, L) (training: with the backward's scratch)
ssm_status cuda_acts_plan(ssm_model *m, int B, int L, int training);
// the state's device copy, uploaded when the host copy is the current one
ssm_status cuda_state_device(ssm_cuda_model *g, ssm_state *s, float **conv, float **ssm);
// the head over rows [0, T) of normed_f: per-row nll (and entropy), with HEAD_TRAIN also the
// head's gradients (d normed_f into d_normed, d embedding into head_dw), or all logits to the host
ssm_status cuda_head(ssm_model *m, int T, int mode);
enum { HEAD_LOSS = 0, HEAD_SCORE = 1, HEAD_TRAIN = 2, HEAD_LOGITS = 3 };

// ---- Mamba-2 layers (mamba2.cu) ----------------------------------------------------------
// r (T, D) += mixer_i(la->normed); conv (B, CD, K) and ssm (B, H, P, N) the layer's state
// slots or NULL (zero start)
ssm_status cuda_mamba2_forward(ssm_model *m, int i, int B, int L, float *conv, float *ssm, float *r);
// from a.d_resid16 (d r, bf16): d normed into a.d_normed, the layer's gradients added to
ssm_status cuda_mamba2_backward(ssm_model *m, int i);
// decode: dec.r (B, D) += mixer_i(RMSNorm(dec.r)), the state slots updated
ssm_status cuda_mamba2_step(ssm_model *m, int i, float *conv, float *ssm);
// workspace bytes of the Mamba-2 ops for (B, L)
size_t cuda_mamba2_work_bytes(const ssm_config *c, int B, int L, int training);
// ---- MLP layers (mlp.cu) -------------------------------------------------------------------
// r (T, D) += mlp_i(la->normed)
ssm_status cuda_mlp_forward(ssm_model *m, int i, int T, float *r);
// from a.d_resid16 (d r, bf16): d normed into a.d_normed, the layer's gradients added to
ssm_status cuda_mlp_backward(ssm_model *m, int i);
// decode: dec.r (B, D) += mlp_i(RMSNorm(dec.r))
ssm_status cuda_mlp_step(ssm_model *m, int i);

// ---- attention layers (attention_layer.cu) ---------------------------------------------------
// r (T, D) += attention_i(la->normed); cache: the layer's state slot (B, 2, cap, KD) with pos
// (device, B) its lengths, or NULL (keys of this pass only)
ssm_status cuda_attention_layer_forward(ssm_model *m, int i, int B, int L, float *cache, const int64_t *pos,
                                        float *r);
// from a.d_resid16 (d r, bf16): d normed into a.d_normed, the layer's gradients added to
ssm_status cuda_attention_layer_backward(ssm_model *m, int i);
// decode: dec.r (B, D) += attention_i(RMSNorm(dec.r)) at positions dec.pos, the cache appended to
ssm_status cuda_attention_layer_step(ssm_model *m, int i, float *cache);
// workspace bytes of the attention backward for (B, L), and of the decode step's for B rows
size_t cuda_attention_work_bytes(const ssm_config *c, int B, int L);
size_t cuda_attention_step_work_bytes(const ssm_config *c, int B);

// ---- mixture-of-experts layers (moe.cu) ---------------------------------------------------------
// r (T, D) += moe_i(la->normed); the layer's routing statistics into a.moe_stats
ssm_status cuda_moe_forward(ssm_model *m, int i, int T, float *r);
// from a.d_resid (d r): d normed into a.d_normed, the layer's gradients added to
ssm_status cuda_moe_backward(ssm_model *m, int i);
// decode: dec.r (B, D) += moe_i(RMSNorm(dec.r))
ssm_status cuda_moe_step(ssm_model *m, int i);
// after the forward's layers: the Switch auxiliary loss over the MoE layers (softmax routing)
// into a.moe_aux, and its gradient into a.moe_aux_grad
ssm_status cuda_moe_aux_loss(ssm_model *m, int T);

// whether the model has a layer of this kind
int cuda_model_has_kind(const ssm_config *c, int kind);
// offsets (floats) of layer i's conv and SSM state slots in state buffers for B sequences,
// the layout of ssm_state (layer i = n_layer: the totals)
void cuda_state_slots(const ssm_config *c, int B, int i, size_t *conv_off, size_t *ssm_off);

#define CUDA_TRY(call, where)                                         \
    do {                                                              \
        cudaError_t e_ = (call);                                      \
        if (e_ != cudaSuccess) return ssm_cuda_fail(e_, where);      \
    } while (0)
#define SSM_TRY(call)                  \
    do {                               \
        ssm_status s_ = (call);        \
        if (s_ != SSM_OK) return s_;   \
    } while (0)

#endif
