/* ssm.h: the backbone library's public interface.
 *
 * A Mamba-1 language model in fp32 on the CPU (reference) backend: token embedding, n_layer
 * pre-norm blocks (Add -> RMSNorm -> Mamba mixer), final RMSNorm, LM head tied to the
 * embedding. See docs/architecture.md and DESIGN.md section 3 for the equations.
 *
 * Every call returns an ssm_status; on failure ssm_last_error() says what, where and what to do.
 * The library never exits and never prints. */
#ifndef SSM_SSM_H
#define SSM_SSM_H

#include <stddef.h>
#include <stdint.h>

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

const char *ssm_status_name(ssm_status status);
/* The message of the last failure in this thread ("" when none). */
const char *ssm_last_error(void);
/* Record a failure (printf-style) and return status; used by the library and by plugins. */
ssm_status ssm_set_error(ssm_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- random numbers --------------------------------------------------------------------- */

/* Deterministic random numbers (xoshiro256**): initialisation, data sampling, generation.
 * The four words are the whole state, so saving them resumes a stream exactly. */
typedef struct ssm_rng { uint64_t s[4]; } ssm_rng;
void ssm_rng_seed(ssm_rng *rng, uint64_t seed);
uint64_t ssm_rng_next(ssm_rng *rng);
double ssm_rng_uniform(ssm_rng *rng);              /* [0, 1) */
double ssm_rng_normal(ssm_rng *rng);               /* N(0, 1) */
uint64_t ssm_rng_below(ssm_rng *rng, uint64_t n);  /* uniform in [0, n), n > 0, unbiased */

/* ---- configuration ---------------------------------------------------------------------- */

typedef struct ssm_config {
    int vocab_size; /* rows of the embedding (padded to a multiple of 8 by ssm_config_default) */
    int d_model;    /* D */
    int n_layer;
    int d_state;    /* N, 16 in the reference */
    int d_conv;     /* K, 4 in the reference */
    int expand;     /* E = expand * D */
    int dt_rank;    /* R = ceil(D / 16) in the reference */
    int d_inner;    /* E */
    float norm_eps; /* RMSNorm epsilon, 1e-5 */
    /* initialisation only */
    float dt_min, dt_max, dt_init_floor; /* 0.001, 0.1, 1e-4 */
} ssm_config;

/* The reference defaults for a model of this size; vocab_size is padded to a multiple of 8. */
ssm_config ssm_config_default(int vocab_size, int d_model, int n_layer);
/* Check every field (ranges, d_inner == expand * d_model); fills d_inner/dt_rank when 0. */
ssm_status ssm_config_validate(ssm_config *config);

/* ---- parameters ------------------------------------------------------------------------- */

typedef struct ssm_layer_params {
    float *norm;      /* (D)            backbone.layers.{i}.norm.weight */
    float *in_proj;   /* (2E, D)        mixer.in_proj.weight, rows [x | z] */
    float *conv_w;    /* (E, K)         mixer.conv1d.weight, stored (E, 1, K) in files */
    float *conv_b;    /* (E)            mixer.conv1d.bias */
    float *x_proj;    /* (R + 2N, E)    mixer.x_proj.weight, rows [dt | B | C] */
    float *dt_proj_w; /* (E, R)         mixer.dt_proj.weight */
    float *dt_proj_b; /* (E)            mixer.dt_proj.bias, added inside the scan */
    float *A_log;     /* (E, N)         mixer.A_log; A = -exp(A_log) */
    float *D;         /* (E)            mixer.D */
    float *out_proj;  /* (D, E)         mixer.out_proj.weight */
} ssm_layer_params;

typedef struct ssm_params {
    float *embedding;         /* (V, D)  backbone.embeddings.weight, tied LM head */
    ssm_layer_params *layers; /* (n_layer) */
    float *norm_f;            /* (D)     backbone.norm_f.weight */
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
} ssm_model;

/* Allocate a model for this config with all parameters zero. */
ssm_status ssm_model_create(const ssm_config *config, ssm_model **out);
void ssm_model_free(ssm_model *model);
/* The reference initialisation (DESIGN.md 3.5), deterministic in seed. */
ssm_status ssm_model_init(ssm_model *model, uint64_t seed);
/* The tensor of that name, or NULL. */
const ssm_tensor_info *ssm_model_find_tensor(const ssm_model *model, const char *name);
void ssm_model_zero_grad(ssm_model *model);

/* ---- recurrent state -------------------------------------------------------------------- */

typedef struct ssm_state {
    int batch;
    int n_layer, d_inner, d_conv, d_state;
    float *conv; /* (n_layer, batch, E, K): the last K inputs of the conv, oldest first */
    float *ssm;  /* (n_layer, batch, E, N) */
    /* GPU models keep a device copy; after ssm_step on a GPU model the host arrays are stale
     * until ssm_state_to_host (ssm_forward with a state keeps both in step). */
    void *cuda;     /* private: device buffers */
    int on_device;  /* the device copy is the current one */
} ssm_state;

ssm_status ssm_state_create(const ssm_config *config, int batch, ssm_state **out);
void ssm_state_reset(ssm_state *state);
void ssm_state_free(ssm_state *state);
/* Bring the state of a GPU model back to conv/ssm (a no-op for CPU models). */
ssm_status ssm_state_to_host(ssm_state *state);

/* ---- forward, backward, step ------------------------------------------------------------ */

/* Parallel forward over tokens (B, L).
 * targets (B, L) or NULL: when given, *loss receives the mean cross-entropy (nats) over the
 * positions whose target is >= 0 (a negative target is not scored). state: NULL starts from
 * zero; otherwise the forward starts from it and leaves the final state in it (exact carry).
 * The logits (B, L, V) stay readable through ssm_model_logits until the next call. */
ssm_status ssm_forward(ssm_model *model, const int32_t *tokens, const int32_t *targets, int B,
                       int L, ssm_state *state, float *loss);
/* Logits (B, L, V) of the last ssm_forward. */
const float *ssm_model_logits(const ssm_model *model);
/* Backward of the last ssm_forward (which had targets and no state): ACCUMULATES into the
 * gradients (grads_blob). */
ssm_status ssm_backward(ssm_model *model);
/* One token per sequence: tokens (B) -> logits (B, V), updating state. */
ssm_status ssm_step(ssm_model *model, ssm_state *state, const int32_t *tokens, float *logits);

/* Per position t of a forward (B, L): logp[t] = log p(targets[t]) in nats (NaN where
 * targets[t] < 0) and, when entropy != NULL, the entropy (nats) of the predicted distribution.
 * state as in ssm_forward. The GPU backend never keeps all logits at once. */
ssm_status ssm_forward_score(ssm_model *model, const int32_t *tokens, const int32_t *targets,
                             int B, int L, ssm_state *state, float *logp, float *entropy);
/* Greedy decoding: prompt (B, P) with P >= 1, then n_new tokens per sequence into out
 * (B, n_new), each the argmax of the previous step's logits (lowest index on ties). On a GPU the
 * tokens stay on the device and each step runs as one CUDA graph. */
ssm_status ssm_generate_greedy(ssm_model *model, const int32_t *prompt, int B, int P, int n_new,
                               int32_t *out);

/* ---- devices ---------------------------------------------------------------------------- */

/* "auto", "cpu", "cuda" or "cuda:N" -> -1 (CPU) or a CUDA device index. auto takes device 0
 * when a GPU is present; "cuda" on a machine (or build) without one is an error. */
ssm_status ssm_parse_device(const char *text, int *device);
/* Number of CUDA devices this build can use (0 without CUDA). */
int ssm_device_count(void);
/* Run the model on CUDA device `device` (>= 0): copies the parameters there (fp32 master
 * weights and bf16 working copies) and, when opt is given, its moments; from then on
 * ssm_forward, ssm_backward, ssm_step, ssm_adamw_step(opt) and the rest run on that GPU.
 * device -1 brings everything back to the host and frees the GPU copy. */
ssm_status ssm_model_use_device(ssm_model *model, ssm_adamw *opt, int device);
/* Copy the GPU's parameters, gradients and (with opt) moments into params_blob, grads_blob and
 * opt->m/v, e.g. before saving a checkpoint (a no-op for CPU models). */
ssm_status ssm_model_sync_host(ssm_model *model, ssm_adamw *opt);
/* Plan memory for batches of B x L before the first step, so that no step allocates
 * (training = 1 also plans the backward). Optional: a forward plans what it needs. */
ssm_status ssm_model_reserve(ssm_model *model, int B, int L, int training);
/* Peak device memory in bytes so far (0 for CPU models). */
size_t ssm_model_device_peak(const ssm_model *model);

/* Threads used by the CPU backend (and its BLAS); 0 = all cores. */
void ssm_set_threads(int n);
int ssm_get_threads(void);

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
} ssm_adamw_config;

typedef struct ssm_adamw {
    ssm_adamw_config config;
    size_t n;
    float *m; /* (n_params) first moments */
    float *v; /* (n_params) second moments */
    int64_t step; /* steps taken */
} ssm_adamw;

ssm_adamw_config ssm_adamw_config_default(void);
ssm_status ssm_adamw_create(const ssm_adamw_config *config, const ssm_model *model,
                            ssm_adamw **out);
void ssm_adamw_free(ssm_adamw *opt);
/* The learning rate of step `step` (0-based): linear warmup then cosine. */
float ssm_adamw_lr(const ssm_adamw_config *config, int64_t step);
/* Clip the gradients to grad_clip (global L2 norm), apply one AdamW update, advance step.
 * grad_norm (optional) receives the norm before clipping. A non-finite gradient norm is
 * refused (SSM_ERR_NUMERIC) and the parameters are left unchanged. */
ssm_status ssm_adamw_step(ssm_adamw *opt, ssm_model *model, float *grad_norm);

#ifdef __cplusplus
}
#endif
#endif
