/* layers.h: the table of layer kinds (ssm_layer_kinds[], layers.c) and what each kind
 * provides. A model is a stack of pre-norm blocks
 *     r_{i+1} = r_i + mixer_i(RMSNorm_i(r_i))
 * whose mixer is one of these kinds. The block loop (forward.c, step.c) is written once; it
 * calls the kind's functions, and a kind declares its tensors, activations and recurrent
 * state here, each once. docs/architecture.md describes the design. */
#ifndef SSM_LAYERS_H
#define SSM_LAYERS_H

#include "internal.h"

/* A bump allocator over the activation blob: a first pass with base == NULL counts, a second
 * with the blob assigns the same pieces (64-byte aligned). */
typedef struct ssm_carver {
    float *base;
    size_t off; /* floats taken so far */
} ssm_carver;
float *ssm_carve(ssm_carver *cv, size_t count);

/* What a kind's pass sees of the batch. T = B * L rows, batch-major. */
typedef struct ssm_pass {
    const ssm_config *c;
    int B, L;
    size_t T;
    int threads;           /* OpenMP threads the scratch was planned for */
    int exact;             /* 1: a row's result may not depend on B or the thread count */
    float *mm;             /* scratch of the row-exact matmuls (cpu_matmul_forward_exact) */
    ssm_backward_scratch *bw; /* the backward's shared scratch */
} ssm_pass;

/* One recurrent-state slot pair of a layer for a batch: conv (B, conv_channels, K) holds the
 * last K mixer inputs of the conv (oldest first); ssm (B, ssm_floats) the SSM state. */
typedef struct ssm_step_weights ssm_step_weights;
typedef struct ssm_layer_state {
    float *conv;
    float *ssm;
    const int64_t *pos; /* (B) positions seen before this pass (a KV cache's length) */
    const ssm_step_weights *weights; /* the step's products' weights (NULL: fp32) */
    int layer;          /* its index in the model */
} ssm_layer_state;

/* Where the decode step's products read W (ssm_model_set_decode_weights, decode_weights.c):
 * bf16 NULL: W itself; else element (W - blob) onwards of the bf16 copy of the blob.
 * ssm_step_rows: cpu_matmul_rows from there (sw NULL: fp32). */
struct ssm_step_weights {
    const float *blob;
    const uint16_t *bf16;
    const float *A; /* NULL, or with bf16: (n_layer, E, N) -exp(A_log) of the Mamba-1 layers */
};
void ssm_step_rows(const ssm_step_weights *sw, float *out, int ld_out, float beta,
                   const float *in, int ld_in, const float *W, int B, int n_in, int n_out);

typedef struct ssm_layer_kind_ops {
    const char *name;           /* as recipes and ssm.* metadata write it */
    int n_tensors;              /* of the mixer; the block's norm.weight comes first */
    const char *const *suffix;  /* (n_tensors) after "backbone.layers.{i}.", as transformers names them */
    /* or NULL: the names depend on the options (the MLP's on its activation) */
    const char *const *(*suffix_of)(const ssm_config *c);
    const unsigned char *decay; /* (n_tensors) 1 when AdamW's weight decay applies */
    int cuda;                   /* the CUDA backend runs this kind */
    /* tensor shapes from the config: shape[j][0..ndim[j]-1] */
    void (*shapes)(const ssm_config *c, int64_t shape[][3], int *ndim);
    /* the reference initialisation of the mixer's tensors */
    void (*init)(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *p);
    /* floats per sequence of the conv and SSM state slots, and the conv's channel count */
    void (*state_size)(const ssm_config *c, size_t *conv, size_t *ssm, int *conv_channels);
    /* carve the per-layer activations the backward needs, and (once per kind) its share of
     * the backward scratch */
    void (*plan)(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                 int threads);
    void (*plan_scratch)(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                         size_t T, int L, int threads);
    /* CPU: out (T, D) += mixer(la->normed); st: carried state or NULL (zero start) */
    void (*forward)(const ssm_pass *ps, const ssm_layer_params *p, ssm_layer_acts *la,
                    float *out, const ssm_layer_state *st);
    /* CPU: from d_out (T, D): writes d_normed (T, D), adds to the layer's gradients */
    void (*backward)(const ssm_pass *ps, const ssm_layer_params *p, ssm_layer_params *g,
                     const ssm_layer_acts *la, const float *d_out, float *d_normed);
    /* CPU decode: h (B, D) -> r (B, D) += mixer(h), one token per sequence, state updated;
     * work: step_floats(c, B) floats */
    size_t (*step_floats)(const ssm_config *c, int B);
    void (*step)(const ssm_config *c, const ssm_layer_params *p, const float *h, float *r,
                 const ssm_layer_state *st, int B, float *work);
} ssm_layer_kind_ops;

/* The forward's projections: out (T, n_out) = beta out + in (T, n_in) . W^T, row-exact
 * (cpu_matmul_forward_exact) when the pass is exact, else one multithreaded SGEMM. */
void ssm_pass_matmul(const ssm_pass *ps, float *out, int ld_out, float beta, const float *in,
                     int ld_in, const float *W, int n_in, int n_out);

/* What the kinds share: (rows, cols) pairs -> shapes (cols 0: a vector); U(+-bound) fills;
 * dt_bias = softplus^-1(dt), dt = exp(U(log dt_min, log dt_max)) clamped >= dt_init_floor
 * (mamba_ssm's dt init, one draw of rng). */
void ssm_kind_shapes(const int64_t (*rows_cols)[2], int n, int64_t shape[][3], int *ndim);
void ssm_fill_uniform(ssm_rng *rng, float *x, size_t n, double bound);
float ssm_init_dt_bias(const ssm_config *c, ssm_rng *rng);

/* The table, indexed by ssm_layer_kind. */
extern const ssm_layer_kind_ops *const ssm_layer_kinds[SSM_LAYER_KIND_COUNT];
extern const ssm_layer_kind_ops ssm_mamba1_kind, ssm_mamba2_kind, ssm_attention_kind,
    ssm_mlp_kind, ssm_moe_kind, ssm_bimamba_kind;

/* The Switch auxiliary loss of the MoE layers of a forward of T rows (their routing in
 * layers[i].moe), unscaled; aux_grad (X, or NULL) receives d (aux_loss_coef aux) / d prob. */
#define SSM_MOE_MAX_EXPERTS 1024
double ssm_moe_aux_loss(const ssm_config *c, const ssm_layer_acts *layers, size_t T,
                        float *aux_grad);

static inline const ssm_layer_kind_ops *ssm_kind_of(const ssm_config *c, int layer) {
    return ssm_layer_kinds[c->layer_kind[layer]];
}

static inline const char *const *ssm_kind_suffixes(const ssm_layer_kind_ops *k,
                                                   const ssm_config *c) {
    return k->suffix_of ? k->suffix_of(c) : k->suffix;
}

/* 1 when the state was made for a model of this config (the kinds and their state's options). */
int ssm_state_fits(const ssm_state *state, const ssm_config *config);

/* The layer's state slots for a batch of state->batch sequences. */
ssm_layer_state ssm_state_layer(const ssm_state *state, int layer);

#endif
