/* internal.h: what the library's source files share and users do not see. */
#ifndef SSM_INTERNAL_H
#define SSM_INTERNAL_H

#include "ssm/ssm.h"

/* Activations kept by the forward for the backward, planned for one (B, L) and reused.
 * T = B * L rows; D = d_model, E = d_inner, N = d_state, R = dt_rank, V = vocab_size. */
typedef struct ssm_layer_acts {
    float *resid;   /* (T, D)  residual stream entering the layer (block input) */
    float *normed;  /* (T, D)  RMSNorm(resid) * norm.weight, input of in_proj */
    float *rstd;    /* (T)     1 / sqrt(mean(resid^2) + eps) */
    float *xz;      /* (T, 2E) in_proj output, [x | z] per row */
    float *u;       /* (T, E)  silu(conv1d(x)), input of x_proj and the scan */
    float *x_dbl;   /* (T, R + 2N) x_proj output, [dt | B | C] per row */
    float *dt;      /* (T, E)  dt_proj(dt) without its bias; the scan adds bias + softplus */
    float *y;       /* (T, E)  scan output, D skip included, before the gate */
    float *gated;   /* (T, E)  y * silu(z), input of out_proj */
} ssm_layer_acts;

struct ssm_activations {
    int B, L;
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
    /* scratch for the backward */
    float *d_resid;       /* (T, D) gradient of the residual stream */
    float *d_normed;      /* (T, D) */
    float *d_xz;          /* (T, 2E) */
    float *d_u;           /* (T, E) */
    float *d_x_dbl;       /* (T, R + 2N) */
    float *d_dt;          /* (T, E) */
    float *d_y;           /* (T, E) */
    float *d_gated;       /* (T, E) */
    float *scan_scratch;  /* (threads, CPU_SCAN_SCRATCH(L, N)) the scan backward's recomputation */
    float *dBC_partial;   /* (threads, T, 2N) per-thread dB, dC sums over channels */
    int scratch_threads;
};

/* (Re)plan the activations for (B, L): allocates only when the shape grows. */
ssm_status ssm_acts_plan(ssm_model *model, int B, int L);
void ssm_acts_free(ssm_activations *acts);


/* Every token in [0, V) and every target < V (negative targets are not scored). */
ssm_status ssm_check_tokens(const ssm_model *m, const int32_t *tokens, const int32_t *targets,
                            size_t T);

/* An error whose message starts with the file's path, as every reader error should. */
ssm_status ssm_fail_file(const char *path, ssm_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "[2, 3]" */
void ssm_format_shape(char *buf, size_t size, const int64_t *shape, int ndim);

#endif
