/* patch.h: the trainable patch encoder of the input stage (config.patch, ssm.h; patch.c):
 * PointNet over each group's points, the learned importance score and the order it gives. */
#ifndef SSM_PATCH_H
#define SSM_PATCH_H

#include "internal.h"

/* The tensors' slots in ssm_params.patch (backbone.patch.*); the score's two only with
 * score_order, the attention's four only with attention. */
enum {
    PATCH_MLP1_0_W, PATCH_MLP1_0_B, /* (w0, 3), (w0) */
    PATCH_MLP1_2_W, PATCH_MLP1_2_B, /* (w1, w0), (w1) */
    PATCH_MLP2_0_W, PATCH_MLP2_0_B, /* (w2, 2 w1), (w2) */
    PATCH_MLP2_2_W, PATCH_MLP2_2_B, /* (D, w2), (D) */
    PATCH_CENTRE_W,                 /* (D, 3) */
    PATCH_SCORE_W, PATCH_SCORE_B,   /* (1, D), (1) */
    PATCH_ATT_Q, PATCH_ATT_K, PATCH_ATT_V, PATCH_ATT_O, /* (w1, w1) each, no biases */
};
_Static_assert(PATCH_ATT_O + 1 == SSM_PATCH_TENSORS, "the slots fill ssm_params.patch");

typedef struct ssm_patch_tensor {
    const char *name;
    int ndim;
    int64_t shape[2];
    int decay;
    int slot; /* PATCH_*: where ssm_params.patch points at it */
} ssm_patch_tensor;

/* The tensors of config.patch into out (SSM_PATCH_TENSORS), in table order, their number (0: no encoder). */
int ssm_patch_tensors(const ssm_config *c, ssm_patch_tensor *out);
ssm_status ssm_patch_validate(const ssm_config *c);
/* as torch's nn.Linear: U(+-1/sqrt(fan_in)), weights and biases */
void ssm_patch_init(const ssm_config *c, ssm_rng *rng, float *const *p);
/* the backbone's positions for L input positions (2 L when it reads both ways) */
int ssm_patch_positions(const ssm_config *c, int L);

/* What the forward keeps for the backward, grown as needed; T = B L groups of k points. */
typedef struct ssm_patch_acts {
    int B, L, k;
    size_t cap_points, cap_groups; /* rows the buffers hold */
    float *pts;    /* (T k, 3) the points relative to their centre */
    float *h1;     /* (T k, w0) relu(mlp1.0) */
    float *z;      /* (T k, 2 w1) [max_j f ; f_j] */
    float *h3;     /* (T k, w2) relu(mlp2.0) */
    float *y;      /* (T k, D) mlp2's output; the backward's d y */
    float *d_a;    /* (T k, max(w0, w2)) scratch of the backward */
    float *d_z;    /* (T k, 2 w1) */
    /* attention only: f_j = f0_j + Wo o_j, o_j = sum_i p_ji v_i over the group's points */
    float *f0;     /* (T k, w1) mlp1's output, the attention's input */
    float *qkv;    /* (T k, 3 w1) q, k, v per point */
    float *prob;   /* (T, k, k) p_ji = softmax_i(q_j . k_i / sqrt(w1)) */
    float *o;      /* (T k, w1) */
    float *d_qkv;  /* (T k, 3 w1) */
    float *d_o;    /* (T k, w1) */
    float *f_max;  /* (T, w1) the max over each group's f */
    int *arg_f;    /* (T, w1) the point j of each channel's max over f */
    int *arg_y;    /* (T, D)  the point j of each channel's max over y */
    float *e;      /* (T, D) the groups' embeddings (before the sigmoid weight) */
    float *d_e;    /* (T, D) */
    float *score;  /* (T) s = e . w + b */
    int *order;    /* (B, L) the group read at sorted position l of row b */
} ssm_patch_acts;

void ssm_patch_acts_free(ssm_patch_acts *a);
/* x (B L, 3 + 3 k) -> r0 (B, ssm_patch_positions(L), D) */
ssm_status ssm_patch_forward(ssm_model *m, const float *x, int B, int L, float *r0);
/* d r0 (B, positions, D) -> the gradients of backbone.patch.* (accumulated) */
void ssm_patch_backward(ssm_model *m, const float *x, const float *d_r0);

#endif
