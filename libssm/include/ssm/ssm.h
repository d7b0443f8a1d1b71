/* ssm.h: the backbone library's public interface.
 *
 * A Mamba-1 language model: token embedding, n_layer pre-norm blocks (Add -> RMSNorm -> Mamba
 * mixer), final RMSNorm, LM head tied to the embedding. docs/architecture.md, 'The model', has
 * the equations. Two backends run the same calls (training, scoring, step mode, generation):
 *   - the CPU backend, the fp32 reference (OpenMP and BLAS), checked against transformers;
 *   - the CUDA backend (ssm_model_use_device): the whole model on one GPU, bf16 activations and
 *     weight copies with fp32 master weights, residual stream, state and optimizer moments,
 *     checked against the CPU backend (docs/architecture.md, 'Devices' and 'Accuracy').
 *
 * Only the functions marked SSM_API are exported by libssm.so.
 *
 * Every call returns an ssm_status; on failure ssm_last_error() says what, where and what to do.
 * The library never exits and never prints. */
#ifndef SSM_SSM_H
#define SSM_SSM_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SSM_VERSION "0.1.0"

typedef enum ssm_status {
    SSM_OK = 0,
    SSM_ERR_ARG = -1,         /* a bad argument from the caller */
    SSM_ERR_NOMEM = -2,       /* an allocation failed */
    SSM_ERR_IO = -3,          /* open/read/write/rename failed */
    SSM_ERR_FORMAT = -4,      /* a malformed file (header, JSON, offsets) */
    SSM_ERR_SHAPE = -5,       /* a tensor shape does not match the config */
    SSM_ERR_DTYPE = -6,       /* a tensor dtype we cannot read */
    SSM_ERR_MISSING = -7,     /* a required tensor or key is absent */
    SSM_ERR_UNSUPPORTED = -8, /* valid request this build cannot do */
    SSM_ERR_NUMERIC = -9,     /* a NaN or infinity where a finite number is required */
    SSM_ERR_DEVICE = -10,     /* the GPU or its driver failed (or none is present) */
} ssm_status;

SSM_API const char *ssm_status_name(ssm_status status);
/* The message of the last failure in this thread ("" when none). */
SSM_API const char *ssm_last_error(void);
/* Record a failure (printf-style) and return status; used by the library and by plugins. */
SSM_API ssm_status ssm_set_error(ssm_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- random numbers --------------------------------------------------------------------- */

/* Deterministic random numbers (xoshiro256**): initialisation, data sampling, generation.
 * The four words are the whole state, so saving them resumes a stream exactly. */
typedef struct ssm_rng { uint64_t s[4]; } ssm_rng;
SSM_API void ssm_rng_seed(ssm_rng *rng, uint64_t seed);
SSM_API uint64_t ssm_rng_next(ssm_rng *rng);
SSM_API double ssm_rng_uniform(ssm_rng *rng);             /* [0, 1) */
SSM_API double ssm_rng_normal(ssm_rng *rng);              /* N(0, 1) */
SSM_API uint64_t ssm_rng_below(ssm_rng *rng, uint64_t n); /* uniform in [0, n), n > 0, unbiased */

/* ---- configuration ---------------------------------------------------------------------- */

/* The layer kinds, one line each: the enum, the names (recipes, ssm.* metadata) and the table
 * of libssm/src/layers.c all come from this list. */
#define SSM_LAYER_KIND_MAP(X)   \
    X(MAMBA1, "mamba1")         \
    X(MAMBA2, "mamba2")         \
    X(ATTENTION, "attention")   \
    X(MLP, "mlp")               \
    X(MOE, "moe")              \
    X(BIMAMBA, "bimamba")
typedef enum ssm_layer_kind {
#define SSM_KIND_ENUM(id, name) SSM_LAYER_##id,
    SSM_LAYER_KIND_MAP(SSM_KIND_ENUM)
#undef SSM_KIND_ENUM
    SSM_LAYER_KIND_COUNT
} ssm_layer_kind;
#define SSM_MAX_LAYERS 1024

/* Mamba-2 (SSD) mixer options (mamba_ssm's Mamba2; docs/architecture.md, 'Mamba-2'). */
typedef struct ssm_mamba2_config {
    int d_state;       /* N, 128 */
    int d_conv;        /* K, 4 */
    int expand;        /* I = expand * D */
    int headdim;       /* P, 64: H = I / P heads */
    int ngroups;       /* G, 1: head h reads B, C of group h / (H / G) */
    int chunk_size;    /* 256: the chunked SSD's block length (changes rounding only) */
    float dt_limit[2]; /* clamp of dt after softplus: (0, INFINITY) = none */
    float A_init[2];   /* A_log = log(U(A_init)) at initialisation: (1, 16) */
    int d_inner;       /* I (derived: expand * d_model) */
    int nheads;        /* H (derived: I / headdim) */
} ssm_mamba2_config;

/* Causal self-attention options (NemotronH's and Jamba's attention; docs/architecture.md,
 * 'Attention'). The KV cache is the layer's recurrent state, up to max_context positions. */
typedef struct ssm_attention_config {
    int n_heads;       /* H query heads */
    int n_kv_heads;    /* Hkv key/value heads (GQA: query head h reads kv head h / (H / Hkv)) */
    int head_dim;      /* hd (0: d_model / n_heads) */
    int rotary_dim;    /* RoPE (GPT-NeoX style) on the first rotary_dim channels of each head; 0: none */
    float rope_base;   /* 10000 */
    int max_context;   /* positions a carried state (KV cache) holds per sequence */
} ssm_attention_config;

typedef enum ssm_mlp_activation {
    SSM_MLP_RELU2,  /* NemotronH: down(relu(up(x))^2) */
    SSM_MLP_SWIGLU, /* mamba_ssm's GatedMLP: fc2(y * silu(g)), [y | g] = fc1(x) */
} ssm_mlp_activation;

/* MLP layer options (a layer of its own, as NemotronH's '-'). */
typedef struct ssm_mlp_config {
    int d_ff;                       /* hidden width F */
    ssm_mlp_activation activation;
} ssm_mlp_config;

typedef enum ssm_moe_routing {
    SSM_MOE_SOFTMAX, /* Jamba: fp32 softmax, top-k; the Switch auxiliary loss */
    SSM_MOE_SIGMOID, /* NemotronH: sigmoid, top-k of sigmoid + selection bias */
} ssm_moe_routing;

/* Mixture-of-experts layer options (Jamba's JambaSparseMoeBlock, NemotronH's NemotronHMoE;
 * docs/architecture.md, 'Mixture of experts'). Each token goes to the top_k experts of its
 * router scores (ties to the lower expert index); the output is the weighted sum of those
 * experts' MLPs, plus the shared expert's MLP when shared_d_ff > 0. */
typedef struct ssm_moe_config {
    int n_experts;         /* X routed experts */
    int top_k;             /* experts per token */
    int d_ff;              /* each expert's hidden width F */
    ssm_mlp_activation activation; /* of the experts and the shared expert */
    ssm_moe_routing routing;
    int norm_topk;         /* 1: the top_k weights renormalised to sum 1 (NemotronH), 0: Jamba */
    float routed_scaling;  /* the weights times this (NemotronH's routed_scaling_factor), 1 */
    float aux_loss_coef;   /* Jamba's router_aux_loss_coef (0.001): loss += coef * Switch aux */
    int shared_d_ff;       /* the shared expert's hidden width; 0: none */
} ssm_moe_config;
/* What the model reads and what it predicts (docs/architecture.md, 'Inputs and heads'). The
 * zero value is a language model: tokens through the embedding, the tied LM head,
 * cross-entropy, causal. */
typedef enum ssm_head_kind {
    SSM_HEAD_LM = 0,         /* logits (T, V) = h . embedding^T (tied) */
    SSM_HEAD_REGRESSION = 1, /* values (T, F') = h . head^T + head_bias, per position */
    SSM_HEAD_CLASSIFY = 2,   /* logits (B, C) = pool(h) . head^T + head_bias, per sequence */
} ssm_head_kind;
typedef enum ssm_pool {
    SSM_POOL_MEAN = 0,       /* mean over the L positions */
    SSM_POOL_LAST = 1,       /* the last position (a causal model's summary) */
    SSM_POOL_CLS = 2,        /* the first position, where the task puts a CLS token */
} ssm_pool;
typedef enum ssm_loss_kind {
    SSM_LOSS_CE = 0,         /* cross-entropy over token or class targets >= 0 */
    SSM_LOSS_MSE = 1,        /* mean of (y - target)^2 over the targets that are not NaN */
    SSM_LOSS_MAE = 2,        /* mean of |y - target| over the same */
} ssm_loss_kind;
typedef struct ssm_io_config {
    int features;            /* F float inputs per step through a learned projection (with bias);
                              * 0: tokens through the embedding */
    int patch;               /* steps per backbone position (0 or 1: none): the projection reads
                              * patch * F values, PatchTST-style */
    ssm_head_kind head;
    int outputs;             /* regression: F' values per position; classify: C classes */
    ssm_pool pool;           /* classify only */
    ssm_loss_kind loss;      /* CE for the LM and classify heads; MSE or MAE for regression */
    int bidirectional;       /* the task asks for a non-causal backbone (a model with bimamba
                              * layers or RCPS; refused for a causal one) */
} ssm_io_config;

/* How a bidirectional Mamba-1 layer (kind bimamba, Caduceus' BiMambaWrapper) combines the
 * forward mixer's output with the reverse mixer's (run on the flipped sequence, flipped back). */
typedef enum ssm_bidirectional {
    SSM_BIDIR_NONE = 0,
    SSM_BIDIR_ADD = 1,       /* fwd + rev ("add") */
    SSM_BIDIR_MUL = 2,       /* fwd * rev ("ew_multiply") */
} ssm_bidirectional;
#define SSM_RCPS_MAX_VOCAB 256

/* A trainable patch encoder in the input stage (docs/points.md, 'The PointNet patch encoder';
 * patch.c): each position's F = 3 + 3 k floats are a group's centre and its k points relative
 * to it (the points task's layout). PointNet (Point-BERT's two-stage encoder, no batch norm):
 *   f_j = mlp1(p_j)             3 -> w0 -> w1, ReLU between         per point j of the group
 *   f_j += Wo softmax_i(q_j . k_i / sqrt(w1)) v_i                  attention only: over the group's
 *          points, q, k, v = Wq f, Wk f, Wv f (no positions: the max stays order-free)
 *   y_j = mlp2([max_j f ; f_j]) 2 w1 -> w2 -> D, ReLU between
 *   e   = max_j y_j + centre . W_c^T                               (D) the group's embedding
 * order = score: s = e . w + b per group; the groups sorted by s (descending, ties by index),
 * each e scaled by sigmoid(s) (so the score is trained; w and b start at 0, i.e. the input's
 * order); reading = both: the backbone reads the
 * sorted groups, then the same reversed (L = 2 G from G inputs). */
typedef enum ssm_patch_kind { SSM_PATCH_NONE = 0, SSM_PATCH_POINTNET = 1 } ssm_patch_kind;
typedef struct ssm_patch_config {
    ssm_patch_kind kind;
    int widths[3];           /* w0, w1, w2 */
    int score_order;         /* 1: the learned importance order; 0: the input's order */
    int both;                /* 1: sorted, then reversed (2 L positions); 0: L */
    int attention;           /* 1: f_j += Wo softmax(q k^T / sqrt(w1)) v over the group's k points */
} ssm_patch_config;

typedef struct ssm_config {
    int vocab_size; /* rows of the embedding (padded to a multiple of 8 by ssm_config_default) */
    int d_model;    /* D */
    int n_layer;
    float norm_eps; /* RMSNorm epsilon of the blocks and norm_f, 1e-5 */
    unsigned char layer_kind[SSM_MAX_LAYERS]; /* (n_layer) each block's mixer: ssm_layer_kind */
    /* (n_layer) 1: layer i is the second sublayer of the block that layer i - 1 begins (an MLP
     * or MoE after the mixer: mamba_ssm's norm2 + mlp with d_intermediate, Jamba's
     * pre_ff_layernorm + feed_forward), named backbone.layers.{block}.norm2 / .mlp.* */
    unsigned char second[SSM_MAX_LAYERS];
    /* Mamba-1 mixer options */
    int d_state;    /* N, 16 in the reference */
    int d_conv;     /* K, 4 in the reference */
    int expand;     /* E = expand * D */
    int dt_rank;    /* R = ceil(D / 16) in the reference */
    int d_inner;    /* E */
    int non_selective; /* 1: dt, B, C fixed, not functions of the input (the paper's ablation) */
    int inner_norms;   /* 1: Jamba's RMSNorms on dt, B and C after x_proj (dt_layernorm,
                        * b_layernorm, c_layernorm; eps norm_eps) */
    /* initialisation only (both Mamba kinds) */
    float dt_min, dt_max, dt_init_floor; /* 0.001, 0.1, 1e-4 */
    /* Mamba-2 mixer options */
    ssm_mamba2_config mamba2;
    ssm_attention_config attention;
    ssm_mlp_config mlp;
    ssm_moe_config moe;
    ssm_io_config io;
    /* Caduceus (docs/architecture.md, 'Bidirectional and RC-equivariant models') */
    ssm_bidirectional bidirectional; /* how the bimamba layers combine their two directions */
    int rcps;          /* 1: reverse-complement parameter sharing (two strands, tied weights) */
    int rcps_unfused;  /* 1: Caduceus' fused_add_norm false (no half swap in the blocks) */
    unsigned char complement[SSM_RCPS_MAX_VOCAB]; /* (vocab_size) token -> its complement */
    ssm_patch_config patch; /* kind none: x . input_proj^T + bias (or the embedding) */
} ssm_config;

/* The reference defaults for a Mamba-1 model of this size (every layer SSM_LAYER_MAMBA1, the
 * Mamba-2 options at mamba_ssm's defaults); vocab_size is padded to a multiple of 8. */
SSM_API ssm_config ssm_config_default(int vocab_size, int d_model, int n_layer);
/* 1 when config.io is a language model's: tokens in, the tied LM head, causal. */
SSM_API int ssm_io_is_lm(const ssm_config *config);
/* Set every layer's kind. */
SSM_API void ssm_config_set_kind(ssm_config *config, ssm_layer_kind kind);
/* The one validator: ranges and divisibility of every field that a layer present uses, named
 * by its key (e.g. "mamba2.headdim = 24 does not divide d_inner = 64"); fills the derived
 * fields (d_inner, dt_rank, mamba2.d_inner, mamba2.nheads) when 0. */
SSM_API ssm_status ssm_config_validate(ssm_config *config);
/* The kinds from a layer pattern, one character a layer, as NemotronH and Megatron write it:
 * M = a Mamba layer (of kind mamba), * = attention, - = MLP, E = mixture of experts; a '+'
 * before - or E makes that layer the second sublayer of the block before it (config.second),
 * e.g. Jamba's "M+-M+E*+-M+E". Sets n_layer (the sublayers, each a pre-norm residual). */
SSM_API ssm_status ssm_config_set_pattern(ssm_config *config, const char *pattern,
                                          ssm_layer_kind mamba);
/* "mamba1" ("mamba" too), "mamba2", "attention", "mlp" -> the kind; -1 when unknown. */
SSM_API int ssm_layer_kind_parse(const char *name);
SSM_API const char *ssm_layer_kind_name(int kind);
/* The block of layer i (its first sublayer's index among the blocks), for the names. */
SSM_API int ssm_config_block(const ssm_config *config, int layer);
/* 1 when every layer has this kind. */
SSM_API int ssm_config_all(const ssm_config *config, ssm_layer_kind kind);
/* Every Mamba-1 layer becomes a bidirectional one (kind bimamba) combining by `how`. */
SSM_API void ssm_config_set_bidirectional(ssm_config *config, ssm_bidirectional how);
/* Reverse-complement parameter sharing (Caduceus' RCPS, with the fused add-norm path) with
 * this complement map of vocab_size entries; NULL: the DNA tasks' (and Caduceus' tokenizer's)
 * A 7 <-> T 10, C 8 <-> G 9, every other id its own complement. */
SSM_API void ssm_config_set_rcps(ssm_config *config, const int32_t *complement);
/* 0 when a position's output depends on later positions (bimamba layers, RCPS): such a model
 * has no step mode and no carried state. */
SSM_API int ssm_config_causal(const ssm_config *config);

/* ---- parameters ------------------------------------------------------------------------- */

/* A Mamba-1 mixer's tensors (backbone.layers.{i}.mixer.*), in the order of its kind's table. */
typedef struct ssm_mamba1_params {
    float *in_proj;   /* (2E, D)        mixer.in_proj.weight, rows [x | z] */
    float *conv_w;    /* (E, K)         mixer.conv1d.weight, stored (E, 1, K) in files */
    float *conv_b;    /* (E)            mixer.conv1d.bias */
    float *x_proj;    /* (R + 2N, E)    mixer.x_proj.weight, rows [dt | B | C] */
    float *dt_proj_w; /* (E, R)         mixer.dt_proj.weight */
    float *dt_proj_b; /* (E)            mixer.dt_proj.bias, added inside the scan */
    float *A_log;     /* (E, N)         mixer.A_log; A = -exp(A_log) */
    float *D;         /* (E)            mixer.D */
    float *out_proj;  /* (D, E)         mixer.out_proj.weight */
    /* config.inner_norms (Jamba), else empty: */
    float *dt_norm;   /* (R)            mixer.dt_layernorm.weight */
    float *b_norm;    /* (N)            mixer.b_layernorm.weight */
    float *c_norm;    /* (N)            mixer.c_layernorm.weight */
} ssm_mamba1_params;

/* A Mamba-2 mixer's tensors. I = d_inner, H heads, G groups, N = d_state, CD = I + 2 G N. */
typedef struct ssm_mamba2_params {
    float *in_proj;   /* (I + CD + H, D) mixer.in_proj.weight, rows [z | x | B | C | dt] */
    float *conv_w;    /* (CD, K)        mixer.conv1d.weight, stored (CD, 1, K) in files */
    float *conv_b;    /* (CD)           mixer.conv1d.bias */
    float *dt_bias;   /* (H)            mixer.dt_bias */
    float *A_log;     /* (H)            mixer.A_log; A = -exp(A_log) */
    float *D;         /* (H)            mixer.D */
    float *norm;      /* (I)            mixer.norm.weight (the gated RMSNorm) */
    float *out_proj;  /* (D, I)         mixer.out_proj.weight */
} ssm_mamba2_params;

/* An attention layer's tensors (NemotronH's names). H heads, Hkv kv heads of hd channels. */
typedef struct ssm_attention_params {
    float *q_proj;    /* (H hd, D)      mixer.q_proj.weight */
    float *k_proj;    /* (Hkv hd, D)    mixer.k_proj.weight */
    float *v_proj;    /* (Hkv hd, D)    mixer.v_proj.weight */
    float *o_proj;    /* (D, H hd)      mixer.o_proj.weight */
} ssm_attention_params;

/* A mixture-of-experts layer's tensors (NemotronH's names). X experts; U = F, or 2F rows
 * [value | gate] for swiglu; Us, Fs likewise for the shared expert (empty when none). */
typedef struct ssm_moe_params {
    float *router;      /* (X, D)    mixer.gate.weight */
    float *bias;        /* (X)       mixer.gate.e_score_correction_bias: selection only, not
                         *           trained (sigmoid routing; empty for softmax) */
    float *up;          /* (X, U, D) mixer.experts.up_proj */
    float *down;        /* (X, D, F) mixer.experts.down_proj */
    float *shared_up;   /* (Us, D)   mixer.shared_experts.up_proj.weight */
    float *shared_down; /* (D, Fs)   mixer.shared_experts.down_proj.weight */
} ssm_moe_params;

/* An MLP layer's tensors: relu2 (NemotronH) up (F, D), down (D, F); swiglu (mamba_ssm's
 * GatedMLP) fc1 (2F, D) rows [value | gate], fc2 (D, F). The names follow the activation. */
typedef struct ssm_mlp_params {
    float *up;        /* (F, D) mixer.up_proj.weight, or (2F, D) mixer.fc1.weight */
    float *down;      /* (D, F) mixer.down_proj.weight, or mixer.fc2.weight */
} ssm_mlp_params;

/* A bidirectional Mamba-1 mixer (Caduceus' BiMambaWrapper): mixer.mamba_fwd.* as a Mamba-1
 * mixer's, and mixer.mamba_rev.* without in_proj and out_proj, which are fwd's (tied). */
typedef struct ssm_bimamba_params {
    ssm_mamba1_params fwd;
    struct {
        float *conv_w, *conv_b, *x_proj, *dt_proj_w, *dt_proj_b, *A_log, *D;
    } rev;
} ssm_bimamba_params;

#define SSM_MIXER_MAX_TENSORS 20
#define SSM_PATCH_TENSORS 15
typedef struct ssm_layer_params {
    float *norm;      /* (D)            backbone.layers.{i}.norm.weight */
    union {           /* the mixer's, by config.layer_kind[i] */
        ssm_mamba1_params mamba1;
        ssm_mamba2_params mamba2;
        ssm_attention_params attention;
        ssm_mlp_params mlp;
        ssm_moe_params moe;
        ssm_bimamba_params bimamba;
        float *mixer[SSM_MIXER_MAX_TENSORS]; /* the same pointers, in table order */
    };
} ssm_layer_params;

typedef struct ssm_params {
    float *embedding;         /* (V, D)  backbone.embeddings.weight, tied LM head */
    ssm_layer_params *layers; /* (n_layer) */
    float *norm_f;            /* (D)     backbone.norm_f.weight */
    /* config.io: NULL when absent (token input; the tied LM head) */
    float *input_proj;        /* (D, P F) backbone.input_proj.weight, float inputs */
    float *input_bias;        /* (D)      backbone.input_proj.bias */
    float *head;              /* (F' or C, D) head.weight, regression and classify heads */
    float *head_bias;         /* (F' or C)    head.bias */
    float *patch[SSM_PATCH_TENSORS]; /* config.patch's, backbone.patch.* (patch.c), else NULL */
} ssm_params;

/* One named tensor of the parameter blob, in the Hugging Face Mamba naming. */
typedef struct ssm_tensor_info {
    char name[96];
    int ndim;
    int64_t shape[3];
    size_t offset; /* in floats, into params_blob (and grads_blob, moments) */
    size_t numel;
    int decay;     /* 1 when AdamW weight decay applies (matrices and embedding only) */
} ssm_tensor_info;

typedef struct ssm_activations ssm_activations; /* private: planned per (B, L) */
typedef struct ssm_cuda_model ssm_cuda_model;   /* private: the model's copy on a GPU */
typedef struct ssm_adamw ssm_adamw;             /* the optimizer, below */
typedef struct ssm_backend ssm_backend;         /* private: the backend's table of functions */

typedef struct ssm_model {
    ssm_config config;
    size_t n_params;
    float *params_blob; /* (n_params) one allocation */
    float *grads_blob;  /* (n_params) one allocation */
    ssm_params params;  /* pointers into params_blob */
    ssm_params grads;   /* pointers into grads_blob */
    ssm_tensor_info *tensors;
    int n_tensors;
    ssm_activations *acts;
    int device;           /* -1: the CPU backend; N >= 0: CUDA device N (ssm_model_use_device) */
    ssm_cuda_model *cuda; /* the GPU copy when device >= 0 */
    const ssm_backend *backend; /* private: the backend that runs it (CPU or CUDA) */
    uint16_t *decode_bf16;      /* (n_params) bf16 copy of params_blob for the CPU step, or NULL
                                 * (ssm_model_set_decode_weights) */
    float *decode_A;            /* (n_layer, d_inner, d_state) A = -exp(A_log) of the Mamba-1
                                 * layers, taken with decode_bf16 for the CPU step, or NULL */
} ssm_model;

/* Allocate a model for this config with all parameters zero. */
SSM_API ssm_status ssm_model_create(const ssm_config *config, ssm_model **out);
SSM_API void ssm_model_free(ssm_model *model);
/* The reference initialisation (docs/architecture.md, 'Initialisation'), deterministic in seed. */
SSM_API ssm_status ssm_model_init(ssm_model *model, uint64_t seed);
/* The tensor of that name, or NULL. */
SSM_API const ssm_tensor_info *ssm_model_find_tensor(const ssm_model *model, const char *name);
SSM_API void ssm_model_zero_grad(ssm_model *model);

/* ---- recurrent state -------------------------------------------------------------------- */

/* The recurrent state of a batch of sequences (opaque): per layer, its kind's slots (Mamba:
 * the last d_conv inputs of the conv and the SSM state). */
typedef struct ssm_state ssm_state;

/* A zero state for `batch` sequences of a model of this config. */
SSM_API ssm_status ssm_state_create(const ssm_config *config, int batch, ssm_state **out);
SSM_API void ssm_state_reset(ssm_state *state);
SSM_API void ssm_state_free(ssm_state *state);
SSM_API int ssm_state_batch(const ssm_state *state);
/* Sequence `from` of src -> sequence `to` of dst (every layer), e.g. to carry one record's
 * state between batches of different sizes. Both on the host: call ssm_state_to_host first
 * for a GPU model's state. */
SSM_API ssm_status ssm_state_copy_row(ssm_state *dst, int to, const ssm_state *src, int from);
/* Positions sequence `row` has seen (0 after create or reset). */
SSM_API int64_t ssm_state_position(const ssm_state *state, int row);
/* Zero one sequence's state. */
SSM_API ssm_status ssm_state_reset_row(ssm_state *state, int row);
/* Bring the state of a GPU model back to the host (a no-op for CPU models). */
SSM_API ssm_status ssm_state_to_host(ssm_state *state);

/* ---- forward, backward, step ------------------------------------------------------------ */

/* Parallel forward over tokens (B, L).
 * targets (B, L) or NULL: when given, *loss receives the mean cross-entropy (nats) over the
 * positions whose target is >= 0 (a negative target is not scored). state: NULL starts from
 * zero; otherwise the forward starts from it and leaves the final state in it (exact carry).
 * The logits (B, L, V) stay readable through ssm_model_logits until the next call. */
SSM_API ssm_status ssm_forward(ssm_model *model, const int32_t *tokens, const int32_t *targets,
                               int B, int L, ssm_state *state, float *loss);
/* Logits (B, L, V) of the last ssm_forward. */
SSM_API const float *ssm_model_logits(const ssm_model *model);
/* Backward of the last ssm_forward (which had targets and no state): ACCUMULATES into the
 * gradients (grads_blob). */
SSM_API ssm_status ssm_backward(ssm_model *model);
/* One token per sequence: tokens (B) -> logits (B, V), updating state. */
SSM_API ssm_status ssm_step(ssm_model *model, ssm_state *state, const int32_t *tokens,
                            float *logits);
/* The weights the CPU step reads (ssm_step, and ssm_generate_greedy's steps). F32, the
 * default: the parameters themselves. BF16: the projections of the Mamba-1 and Mamba-2 layers
 * (in_proj, x_proj, dt_proj, out_proj) and the tied LM head read a bf16 copy of the weights,
 * made by this call (2 bytes a parameter), widened to fp32 as they are read; every sum, the
 * state, the scan and the norms stay fp32. A step then moves about half the bytes (decode is
 * bound by memory bandwidth), and its logits differ from fp32's by the weights' rounding
 * (relative 2^-8 each at most; docs/decode.md). The copy is of the weights at this call:
 * call again after changing them (training, loading). F32 frees it. The parallel forward, the
 * other layer kinds and the GPU backend ignore the setting. */
typedef enum ssm_decode_weights { SSM_DECODE_F32 = 0, SSM_DECODE_BF16 = 1 } ssm_decode_weights;
SSM_API ssm_status ssm_model_set_decode_weights(ssm_model *model, ssm_decode_weights weights);

/* Per position t of a forward (B, L): logp[t] = log p(targets[t]) in nats (NaN where
 * targets[t] < 0) and, when entropy != NULL, the entropy (nats) of the predicted distribution.
 * state as in ssm_forward. The GPU backend never keeps all logits at once. */
SSM_API ssm_status ssm_forward_score(ssm_model *model, const int32_t *tokens,
                                     const int32_t *targets, int B, int L, ssm_state *state,
                                     float *logp, float *entropy);
/* Any input, any head (config.io): one batch of B sequences of L backbone positions.
 *   tokens   (B, L)                 when config.io.features == 0
 *   features (B, L * patch, F)      otherwise (patch consecutive steps make one position)
 *   targets  LM head: (B, L) token ids, -1 not scored; classify: (B) classes, -1 not scored
 *   values   regression: (B, L, F') float targets, NaN not scored
 * With targets or values, *loss receives the head's loss (config.io.loss) and ssm_backward may
 * follow. No targets: a forward only (ssm_model_outputs). CPU models; no carried state. */
typedef struct ssm_io {
    const int32_t *tokens;
    const float *features;
    const int32_t *targets;
    const float *values;
} ssm_io;
SSM_API ssm_status ssm_forward_io(ssm_model *model, const ssm_io *io, int B, int L, float *loss);
/* The head's outputs of the last ssm_forward_io: logits (B, L, V), values (B, L, F') or class
 * logits (B, C). */
SSM_API const float *ssm_model_outputs(const ssm_model *model);

/* Greedy decoding: prompt (B, P) with P >= 1, then n_new tokens per sequence into out
 * (B, n_new), each the argmax of the previous step's logits (lowest index on ties). On a GPU the
 * tokens stay on the device and each step runs as one CUDA graph. */
SSM_API ssm_status ssm_generate_greedy(ssm_model *model, const int32_t *prompt, int B, int P,
                                       int n_new, int32_t *out);
/* Hidden states (B, L, D) of the last ssm_forward or ssm_forward_score on the CPU into out:
 * layer 0 .. n_layer - 1: the residual stream after block `layer` (r_{layer + 1}, before any
 * norm); layer n_layer (or -1): the final norm's output RMSNorm_f(r_n) * norm_f.weight, the rows
 * the tied head multiplies (logits = out . embedding^T). Rows batch-major as the tokens. A
 * forward from a carried state gives the states of that window. ssm_backward and ssm_step
 * leave them; ssm_generate_greedy leaves the prompt's; ssm_model_reserve alone, or for another
 * shape, leaves them unspecified; a model brought back from a GPU has its last CPU forward's.
 * SSM_ERR_ARG before the first forward or for a layer outside [-1, n_layer];
 * SSM_ERR_UNSUPPORTED for a model on a GPU (the CUDA backend keeps no hidden states). */
SSM_API ssm_status ssm_model_hidden(const ssm_model *model, int layer, float *out);
/* The routing of mixture-of-experts layer `layer` in the last forward: experts and weights
 * (B, L, top_k), batch-major as the tokens, each row's experts in the order selected (highest
 * score first; equal scores: the lower expert index first); either may be NULL.
 * SSM_ERR_ARG before a forward or for a layer that is not a MoE layer; on a GPU also for any
 * but the last MoE layer after a forward without targets (which keeps one layer's buffers). */
SSM_API ssm_status ssm_model_routing(const ssm_model *model, int layer, int32_t *experts,
                                     float *weights);
/* The Switch auxiliary loss of the last forward (on a GPU: with targets) over all MoE layers with softmax routing
 * (Jamba's load_balancing_loss_func, unscaled); the forward's loss includes
 * moe.aux_loss_coef times it. 0 when the model has none. */
SSM_API double ssm_model_aux_loss(const ssm_model *model);

/* ---- devices ---------------------------------------------------------------------------- */

/* "auto", "cpu", "cuda" or "cuda:N" -> -1 (CPU) or a CUDA device index. auto takes device 0
 * when a GPU is present; "cuda" on a machine (or build) without one is an error. */
SSM_API ssm_status ssm_parse_device(const char *text, int *device);
/* SSM_OK when device (-1: the CPU, N: CUDA device N) can run a model of this config; else
 * why not, in one message (the CUDA backend runs Mamba-1, Mamba-2, MLP and attention layers, for now). */
SSM_API ssm_status ssm_device_supports(int device, const ssm_config *config);
/* Number of CUDA devices this build can use (0 without CUDA). */
SSM_API int ssm_device_count(void);
/* Run the model on CUDA device `device` (>= 0): copies the parameters there (fp32 master
 * weights and bf16 working copies) and, when opt is given, its moments; from then on
 * ssm_forward, ssm_backward, ssm_step, ssm_adamw_step(opt) and the rest run on that GPU.
 * device -1 brings everything back to the host and frees the GPU copy. */
SSM_API ssm_status ssm_model_use_device(ssm_model *model, ssm_adamw *opt, int device);
/* Copy the GPU's parameters, gradients and (with opt) moments into params_blob, grads_blob and
 * opt->m/v, e.g. before saving a checkpoint (a no-op for CPU models). */
SSM_API ssm_status ssm_model_sync_host(ssm_model *model, ssm_adamw *opt);
/* Plan memory for batches of B x L before the first step, so that no step allocates
 * (training = 1 also plans the backward). Optional: a forward plans what it needs. */
SSM_API ssm_status ssm_model_reserve(ssm_model *model, int B, int L, int training);
/* What training a model of this config on batches of B x L holds in host memory, in bytes,
 * before anything is allocated (libssm/src/memory.c; docs/reliability.md). */
typedef struct ssm_memory_plan {
    double params, grads, optimizer, activations, total; /* bytes (doubles: absurd plans fit) */
} ssm_memory_plan;
SSM_API ssm_status ssm_plan_training_memory(const ssm_config *config, int B, int L,
                                            ssm_memory_plan *out);
/* Bytes this process may still allocate: the least of MemAvailable (/proc/meminfo), the
 * cgroup's memory.max less its memory.current, and RLIMIT_AS/RLIMIT_DATA; 0 when unknown. */
SSM_API double ssm_available_memory(void);
/* Peak device memory in bytes so far (0 for CPU models). */
SSM_API size_t ssm_model_device_peak(const ssm_model *model);

/* Threads used by the CPU backend (and its BLAS); 0 = all cores. */
SSM_API void ssm_set_threads(int n);
SSM_API int ssm_get_threads(void);

/* ---- optimizer -------------------------------------------------------------------------- */

typedef struct ssm_adamw_config {
    float lr;           /* peak learning rate */
    float beta1, beta2; /* 0.9, 0.95 */
    float eps;          /* 1e-8 */
    float weight_decay; /* 0.1; not applied to tensors with decay == 0 */
    float grad_clip;    /* global norm clip; <= 0 disables */
    int64_t warmup_steps;
    int64_t total_steps; /* cosine decay to min_lr_ratio * lr at total_steps */
    float min_lr_ratio;  /* 0.1 */
    /* the backbone's learning rate over lr (1; 0 freezes it), for fine-tuning: every tensor
     * but the task head's (head.*); the CPU backend (the CUDA one runs heads of none) */
    float backbone_lr_ratio;
} ssm_adamw_config;

typedef struct ssm_adamw {
    ssm_adamw_config config;
    size_t n;
    float *m; /* (n_params) first moments */
    float *v; /* (n_params) second moments */
    int64_t step; /* steps taken */
} ssm_adamw;

SSM_API ssm_adamw_config ssm_adamw_config_default(void);
SSM_API ssm_status ssm_adamw_create(const ssm_adamw_config *config, const ssm_model *model,
                                    ssm_adamw **out);
SSM_API void ssm_adamw_free(ssm_adamw *opt);
/* The learning rate of step `step` (0-based): linear warmup then cosine. */
SSM_API float ssm_adamw_lr(const ssm_adamw_config *config, int64_t step);
/* Clip the gradients to grad_clip (global L2 norm), apply one AdamW update, advance step.
 * grad_norm (optional) receives the norm before clipping. A non-finite gradient norm is
 * refused (SSM_ERR_NUMERIC) and the parameters are left unchanged. */
SSM_API ssm_status ssm_adamw_step(ssm_adamw *opt, ssm_model *model, float *grad_norm);

#ifdef __cplusplus
}
#endif
#endif
