/* internal.h: what the library's source files share and users do not see. */
#ifndef SSM_INTERNAL_H
#define SSM_INTERNAL_H

#include "ssm/ssm.h"
#include <stdio.h>

/* Activations kept by the forward for the backward, planned for one (B, L) and reused.
 * T = B * L rows; D = d_model, V = vocab_size. Mamba-1: E = d_inner, N = d_state,
 * R = dt_rank. Mamba-2: I = d_inner, H heads, G groups, N = d_state, CD = I + 2 G N (the conv's
 * channels), ZD = I + CD + H (in_proj's rows). */
typedef struct ssm_mamba1_acts {
    float *xz;      /* (T, 2E) in_proj output, [x | z] per row */
    float *u;       /* (T, E)  silu(conv1d(x)), input of x_proj and the scan */
    float *x_dbl;   /* (T, R + 2N) x_proj output, [dt | B | C] per row (after the inner norms) */
    float *x_raw;   /* (T, R + 2N) x_proj output before the inner norms (config.inner_norms) */
    float *rstd;    /* (T, 3)  the inner norms' 1 / rms of dt, B, C (config.inner_norms) */
    float *dt;      /* (T, E)  dt_proj(dt) without its bias; the scan adds bias + softplus */
    float *y;       /* (T, E)  scan output, D skip included, before the gate */
    float *gated;   /* (T, E)  y * silu(z), input of out_proj */
} ssm_mamba1_acts;

typedef struct ssm_mamba2_acts {
    float *zxbcdt;  /* (T, ZD) in_proj output, [z | xBC | dt] per row */
    float *xbc;     /* (T, CD) silu(conv1d(xBC)): [x | B | C] per row */
    float *y;       /* (T, I)  SSD output, D skip included, before the gated norm */
    float *rstd;    /* (T, G)  the gated norm's 1 / rms per group */
    float *normed;  /* (T, I)  RMSNormGated(y, z), input of out_proj */
} ssm_mamba2_acts;

typedef struct ssm_attention_acts {
    float *q;       /* (T, H hd)   q_proj(h), rotated */
    float *k, *v;   /* (T, Hkv hd) k_proj(h) rotated, v_proj(h) */
    float *o;       /* (T, H hd)   attention output, input of o_proj */
    float *lse;     /* (B, H, L)   each query row's log-sum-exp, for the backward */
} ssm_attention_acts;

typedef struct ssm_mlp_acts {
    float *u;       /* (T, U)      up(h): F rows, or [value | gate] 2F for swiglu */
    float *a;       /* (T, F)      the activation, input of down */
} ssm_mlp_acts;

/* S = T * top_k slots (row t's j-th choice is slot t k + j), kept grouped by expert */
typedef struct ssm_moe_acts {
    float *logits;    /* (T, X)  router logits */
    float *prob;      /* (T, X)  softmax or sigmoid of the logits */
    int32_t *sel;     /* (T, k)  the chosen experts */
    float *w;         /* (T, k)  their weights */
    int32_t *start;   /* (X + 1) expert e's slots are grouped rows start[e] .. start[e+1]-1 */
    int32_t *slot;    /* (S)     grouped row g -> slot */
    int32_t *row;     /* (S)     slot -> grouped row */
    float *x;         /* (S, D)  the normed input of each grouped row */
    float *u, *a;     /* (S, U), (S, F) the experts' up(x) and activation */
    float *y;         /* (S, D)  the experts' outputs, before the weights */
    float *su, *sa;   /* (T, Us), (T, Fs) the shared expert's */
    float *stats;     /* (2 X)   per expert: the count of choices, the sum of prob */
} ssm_moe_acts;

/* A bimamba layer: fwd first, so that the layer's mamba1 view is the forward direction's. */
typedef struct ssm_bimamba_acts {
    ssm_mamba1_acts fwd;
    ssm_mamba1_acts rev;  /* the reverse mixer's, in flipped order */
    float *flipped;       /* (T, D)  the normed input flipped along L (rev's input) */
    float *y_fwd, *y_rev; /* (T, D)  each direction's output; y_rev flipped back */
} ssm_bimamba_acts;

typedef struct ssm_layer_acts {
    float *resid;   /* (T, D)  residual stream entering the layer (block input) */
    float *normed;  /* (T, D)  RMSNorm(resid) * norm.weight, input of the mixer */
    float *rstd;    /* (T)     1 / sqrt(mean(resid^2) + eps) */
    union {         /* the mixer's, by the layer's kind */
        ssm_mamba1_acts mamba1;
        ssm_mamba2_acts mamba2;
        ssm_attention_acts attention;
        ssm_mlp_acts mlp;
        ssm_moe_acts moe;
        ssm_bimamba_acts bimamba;
    };
} ssm_layer_acts;

/* The backward's scratch, shared by all layers of a kind (carved once per kind present). */
typedef struct ssm_backward_scratch {
    float *d_resid;       /* (T, D) gradient of the residual stream */
    float *d_normed;      /* (T, D) */
    struct {
        float *d_xz;          /* (T, 2E) */
        float *d_u;           /* (T, E) */
        float *d_x_dbl;       /* (T, R + 2N) */
        float *d_dt;          /* (T, E) */
        float *d_y;           /* (T, E) */
        float *d_gated;       /* (T, E) */
        float *scan_scratch;  /* (threads, CPU_SCAN_SCRATCH(L, N)) the scan backward's recomputation */
        float *dBC_partial;   /* (threads, T, 2N) per-thread dB, dC sums over channels */
    } mamba1;
    struct {
        float *d_zxbcdt;      /* (T, ZD) */
        float *d_xbc;         /* (T, CD) */
        float *d_y;           /* (T, I) */
        float *d_normed;      /* (T, I) */
        float *ssd_scratch;   /* cpu_ssd_scratch_floats(..., backward) */
        size_t ssd_scratch_floats;
    } mamba2;
    struct {
        float *d_q, *d_k, *d_v, *d_o; /* as q, k, v, o */
        float *scratch;               /* cpu_attention_scratch_floats(..., backward) */
        size_t scratch_floats;
    } attention;
    struct {
        float *d_u, *d_a;             /* as u, a */
    } mlp;
    struct {
        float *d_logits, *d_w;        /* (T, X), (T, k) */
        float *d_y, *d_u, *d_a, *d_x; /* as y, u, a, x */
        float *d_su, *d_sa;           /* as su, sa */
        float *aux_grad;              /* (X) d (coef aux) / d prob, the same for every row and layer */
    } moe;
    struct {
        float *d_dir, *d_in;          /* (T, D) one direction's d out, its d normed */
    } bimamba;
} ssm_backward_scratch;

struct ssm_activations {
    int B, L;             /* the rows the backbone runs: 2 B' for an RCPS model of B' sequences */
    int strands;          /* 2 for RCPS (rows [0, B') the sequences, [B', 2 B') their reverse
                           * complements, rcps.c), else 1 */
    float *blob;          /* one allocation for everything below */
    size_t capacity;      /* floats in blob */
    size_t capacity_T;    /* rows the tokens/targets arrays hold */
    ssm_layer_acts *layers; /* (n_layer) */
    float *resid_f;       /* (T, D)  final residual stream */
    float *normed_f;      /* (T, D)  norm_f output */
    float *rstd_f;        /* (T) */
    float *logits;        /* (T, V)  logits; the backward turns them into dlogits in place */
    int32_t *tokens;      /* (T) */
    int32_t *targets;     /* (T) */
    int has_targets;
    int has_state;        /* the last forward started from a carried state */
    int backward_ready;   /* a forward with targets ran since the last backward */
    double aux_loss;      /* the last forward's Switch auxiliary loss (ssm_model_aux_loss) */
    int has_hidden;       /* a CPU forward filled the buffers for this (B, L) (ssm_model_hidden) */
    ssm_backward_scratch bw;
    /* ssm_forward_io (forward_io.c): its own buffers, grown as needed */
    int io_forward;       /* the last forward was ssm_forward_io: ssm_backward goes there */
    float *io_inputs;     /* (T, P F) the float inputs */
    float *io_outputs;    /* (T, F') values or (B, C) class logits; their gradient after backward */
    float *io_pooled;     /* (B, D) the classify head's pooled rows */
    int32_t *io_labels;   /* (B) class targets */
    float *io_values;     /* (T, F') regression targets */
    size_t io_capacity;   /* floats each of inputs, outputs, values hold */
    float io_count;       /* scored elements of the last loss */
    struct ssm_patch_acts *patch; /* config.patch's (patch.h), grown as needed */
    float *matmul_scratch; /* (threads, tile rows, widest n_in + n_out) row-exact matmuls */
    int exact;            /* this forward's rows must not depend on B or threads (ssm_pass_matmul) */
    int scratch_threads;
};

/* The recurrent state: per layer, its kind's conv and SSM slots for `batch` sequences. */
struct ssm_state {
    int batch;
    int n_layer;
    ssm_config config;    /* of the model it was made for */
    size_t *conv_off;     /* (n_layer) offset of layer i's conv slot (B, conv per sequence) */
    size_t *ssm_off;      /* (n_layer) offset of layer i's SSM slot */
    size_t *conv_per;     /* (n_layer) floats per sequence */
    size_t *ssm_per;      /* (n_layer) */
    size_t conv_total, ssm_total;
    /* Mamba-1 models: layer i's conv slot is (B, E, K) at conv + i * B * E * K and its SSM
     * slot (B, E, N) at ssm + i * B * E * N, the layout the CUDA backend uses. */
    int d_inner, d_conv, d_state;
    float *conv;          /* (conv_total) */
    float *ssm;           /* (ssm_total) */
    int64_t *pos;         /* (batch) positions each sequence has seen (the KV caches' lengths) */
    /* GPU models keep a device copy; after ssm_step on a GPU model the host arrays are stale
     * until ssm_state_to_host (ssm_forward with a state keeps both in step). */
    void *cuda;           /* private: device buffers */
    int on_device;        /* the device copy is the current one */
    /* ssm_cpu_step's work buffer (step.c): allocated on the first step with the floats the
     * model needs (the block's 2 D + 1 per row, then the largest kind's step_floats), grown only
     * if a later step needs more, freed by ssm_state_free; never allocated per step */
    float *step_work;
    size_t step_work_floats;
};

/* A backend: the model-level operations, one table per backend, set on the model
 * (model->backend) by ssm_model_create (the CPU's) and ssm_model_use_device. The public entry
 * points check their arguments and call through it. */
struct ssm_backend {
    const char *name;
    /* SSM_OK when this backend runs a model of this config; else why not (one message) */
    ssm_status (*supports)(const ssm_config *c);
    /* ssm_forward (loss, when targets) and ssm_forward_score (logp, entropy) in one */
    ssm_status (*forward)(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                          int L, ssm_state *state, float *loss, float *logp, float *entropy);
    const float *(*logits)(ssm_model *m);
    ssm_status (*backward)(ssm_model *m);
    void (*zero_grad)(ssm_model *m);
    ssm_status (*step)(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits);
    ssm_status (*adamw_step)(ssm_adamw *opt, ssm_model *m, float *grad_norm);
    ssm_status (*generate_greedy)(ssm_model *m, const int32_t *prompt, int B, int P, int n_new,
                                  int32_t *out);
    ssm_status (*sync_host)(ssm_model *m, ssm_adamw *opt);
    ssm_status (*reserve)(ssm_model *m, int B, int L, int training);
    size_t (*peak)(const ssm_model *m);
    void (*release)(ssm_model *m); /* free the backend's copy of the model */
    /* the last forward's routing of MoE layer `layer` (B, L, top_k), either output may be NULL;
     * and its Switch auxiliary loss (moe.c's ssm_model_routing, ssm_model_aux_loss) */
    ssm_status (*routing)(const ssm_model *m, int layer, int32_t *experts, float *weights);
    double (*aux_loss)(const ssm_model *m);
};
extern const ssm_backend ssm_backend_cpu;  /* backend_cpu.c */
extern const ssm_backend ssm_backend_cuda; /* device.c, in CUDA builds */

/* The CPU backend's functions (forward.c, score.c, step.c, optimizer.c). */
ssm_status ssm_cpu_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                           int L, ssm_state *state, float *loss, float *logp, float *entropy);
const float *ssm_cpu_logits(ssm_model *m);
ssm_status ssm_cpu_backward(ssm_model *m);
ssm_status ssm_cpu_moe_routing(const ssm_model *m, int layer, int32_t *experts, float *weights);
double ssm_cpu_moe_aux_loss(const ssm_model *m);
ssm_status ssm_cpu_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits);
ssm_status ssm_cpu_adamw_step(ssm_adamw *opt, ssm_model *m, float *grad_norm);
ssm_status ssm_cpu_generate_greedy(ssm_model *m, const int32_t *prompt, int B, int P,
                                   int n_new, int32_t *out);
/* logp[t] = log p(targets[t]) (NaN where targets[t] < 0), entropy[t] (optional), from the
 * logits of the last CPU forward. */
void ssm_cpu_score_rows(const ssm_model *m, const int32_t *targets, size_t T, float *logp,
                        float *entropy);

/* The block loop, r_0 (acts->layers[0].resid) -> h_f (acts->normed_f), and its backward
 * d h_f (bw.d_normed) -> d r_0 (bw.d_resid); forward.c. */
void ssm_cpu_blocks_forward(ssm_model *m, ssm_state *state);
void ssm_cpu_blocks_backward(ssm_model *m);
/* The tied LM head on h_f: logits into acts->logits; its backward from the cross-entropy on
 * acts->targets (scale = 1 / scored rows) into bw.d_normed and the embedding's gradient. */
void ssm_cpu_lm_head_forward(ssm_model *m);
void ssm_cpu_lm_head_backward(ssm_model *m, float scale);
/* The backward of the last ssm_forward_io (forward_io.c). */
ssm_status ssm_cpu_io_backward(ssm_model *m);

/* (Re)plan the activations for (B, L): allocates only when the shape grows. */
ssm_status ssm_acts_plan(ssm_model *model, int B, int L);
/* Floats ssm_acts_plan would allocate for a validated config (0 when out of memory). */
size_t ssm_acts_floats(const ssm_config *config, int B, int L, int threads);
/* The parameters a model of this (validated) config has, without allocating them; 0 when even
 * its tensor table cannot be allocated. */
size_t ssm_config_n_params(const ssm_config *config);
void ssm_acts_free(ssm_activations *acts);


/* SSM_ERR_SHAPE unless the state was made for this model and batch B; SSM_ERR_ARG when L more
 * positions would overflow an attention layer's KV cache (attention.max_context). */
ssm_status ssm_check_state(const ssm_model *m, const ssm_state *s, int B);
ssm_status ssm_check_context(const ssm_model *m, const ssm_state *s, int L);
/* After a pass of L positions with this state. */
void ssm_state_advance(ssm_state *s, int L);

/* SSM_ERR_UNSUPPORTED unless config.io is a language model's (ssm_forward, _score, ssm_step). */
ssm_status ssm_check_lm(const ssm_model *m, const char *what);

/* Every token in [0, V) and every target < V (negative targets are not scored). */
ssm_status ssm_check_tokens(const ssm_model *m, const int32_t *tokens, const int32_t *targets,
                            size_t T);

/* Caduceus' options (rcps.c): the validator's part for bidirectional and RCPS models;
 * SSM_ERR_UNSUPPORTED naming `what` for a model that is not causal (step mode, carried state). */
ssm_status ssm_validate_caduceus(const ssm_config *c);
ssm_status ssm_check_causal(const ssm_model *m, const char *what);
/* r_0 = embedding[tokens] for the backbone's rows (acts->tokens and layers[0].resid): tokens
 * (B, L), and for RCPS their reverse complements as rows [B, 2B). */
void ssm_cpu_embed(ssm_model *m, const int32_t *tokens, int B, int L);
/* RCPS on 2B rows of (L, D): the fused add-norm's half swap, rows b <-> B + b flipped over L
 * and D (in place, its own inverse); the LM head's logits (2B rows of (L, V)) into rows
 * [0, B): += strand 1's flipped over L and complemented; its backward fills rows [B, 2B). */
void ssm_rcps_swap(float *x, int B, int L, int D);
void ssm_rcps_lm_forward(float *logits, const unsigned char *comp, int B, int L, int V);
void ssm_rcps_lm_backward(float *d_logits, const unsigned char *comp, int B, int L, int V);

/* An error whose message starts with the file's path, as every reader error should. */
/* The end of writing a file atomically: f (holding tmp's content; bad: a write failed, errno
 * says why) flushed, fsync'd and closed, renamed to path, the directory fsync'd; on failure
 * tmp is removed and the message names it with the reason ("No space left on device"). */
ssm_status ssm_file_commit(FILE *f, int bad, const char *tmp, const char *path);
/* data written to tmp, then as above. */
ssm_status ssm_write_file_atomic(const char *path, const char *tmp, const void *data, size_t len);
ssm_status ssm_fail_file(const char *path, ssm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "[2, 3]" */
void ssm_format_shape(char *buf, size_t size, const int64_t *shape, int ndim);

#endif
