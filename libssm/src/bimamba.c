/* bimamba.c: the bidirectional Mamba-1 layer kind (Caduceus' BiMambaWrapper).
 *   out += M_fwd(h) (+ or *) flip_L(M_rev(flip_L(h)))
 * M_fwd and M_rev are Mamba-1 mixers (mamba1.c, run through its table) sharing in_proj and
 * out_proj; each has its own conv1d, x_proj, dt_proj, A_log and D. "add" is Caduceus'
 * bidirectional_strategy "add", "mul" its "ew_multiply" (config.bidirectional).
 * Shapes: T = B * L rows, batch-major; D = d_model. */
#include <string.h>

#include "layers.h"

enum { M1_N = 12, REV_N = 7, BI_N = M1_N + REV_N }; /* fwd: Mamba-1's 12 (its inner norms empty) */
_Static_assert(sizeof(ssm_bimamba_params) == BI_N * sizeof(float *),
               "ssm_bimamba_params and the bimamba tensor table must list the same tensors");
/* Caduceus' names under backbone.layers.{i}. (mamba_rev's in_proj/out_proj are fwd's) */
static const char *const bi_suffix[BI_N] = {
    "mixer.mamba_fwd.in_proj.weight", "mixer.mamba_fwd.conv1d.weight",
    "mixer.mamba_fwd.conv1d.bias",    "mixer.mamba_fwd.x_proj.weight",
    "mixer.mamba_fwd.dt_proj.weight", "mixer.mamba_fwd.dt_proj.bias",
    "mixer.mamba_fwd.A_log",          "mixer.mamba_fwd.D",
    "mixer.mamba_fwd.out_proj.weight",
    "mixer.mamba_fwd.dt_layernorm.weight", "mixer.mamba_fwd.b_layernorm.weight",
    "mixer.mamba_fwd.c_layernorm.weight", /* empty: ssm_config_validate refuses inner_norms here */
    "mixer.mamba_rev.conv1d.weight",  "mixer.mamba_rev.conv1d.bias",
    "mixer.mamba_rev.x_proj.weight",  "mixer.mamba_rev.dt_proj.weight",
    "mixer.mamba_rev.dt_proj.bias",   "mixer.mamba_rev.A_log",
    "mixer.mamba_rev.D"};
static const unsigned char bi_decay[BI_N] = {1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0,
                                             1, 0, 1, 1, 0, 0, 0};

#define M1 ssm_mamba1_kind

/* The reverse mixer as a Mamba-1 mixer: fwd's in_proj and out_proj, its own others. */
static ssm_layer_params rev_view(const ssm_bimamba_params *p) {
    ssm_layer_params r = {0};
    r.mamba1 = (ssm_mamba1_params){.in_proj = p->fwd.in_proj, .conv_w = p->rev.conv_w,
                                   .conv_b = p->rev.conv_b, .x_proj = p->rev.x_proj,
                                   .dt_proj_w = p->rev.dt_proj_w, .dt_proj_b = p->rev.dt_proj_b,
                                   .A_log = p->rev.A_log, .D = p->rev.D,
                                   .out_proj = p->fwd.out_proj};
    return r;
}

static void bi_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    M1.shapes(c, shape, ndim); /* fwd's 9, then rev's = fwd's 1..7 */
    for (int j = 0; j < REV_N; j++) {
        memcpy(shape[M1_N + j], shape[1 + j], sizeof shape[0]);
        ndim[M1_N + j] = ndim[1 + j];
    }
}

static void bi_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    /* rev first: its in_proj/out_proj draws are then replaced by fwd's, as Caduceus ties them */
    ssm_layer_params rev = rev_view(&lp->bimamba);
    M1.init(c, rng, &rev);
    M1.init(c, rng, lp);
}

static void bi_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    (void)c;
    *conv = *ssm = 0; /* no recurrent state: a bidirectional layer has no step mode */
    *channels = 0;
}

static void bi_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                    int threads) {
    M1.plan(cv, c, la, T, L, threads); /* la->mamba1 is la->bimamba.fwd */
    ssm_layer_acts rev;
    M1.plan(cv, c, &rev, T, L, threads);
    ssm_bimamba_acts *a = &la->bimamba;
    a->rev = rev.mamba1;
    a->flipped = ssm_carve(cv, T * c->d_model);
    a->y_fwd = ssm_carve(cv, T * c->d_model);
    a->y_rev = ssm_carve(cv, T * c->d_model);
}

static void bi_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                            size_t T, int L, int threads) {
    M1.plan_scratch(cv, c, bw, T, L, threads);
    bw->bimamba.d_dir = ssm_carve(cv, T * c->d_model);
    bw->bimamba.d_in = ssm_carve(cv, T * c->d_model);
}

/* dst[b, l] = src[b, L - 1 - l] (rows of D floats); dst != src */
static void flip_rows(float *dst, const float *src, int B, int L, int D) {
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++)
            memcpy(dst + ((size_t)b * L + l) * D, src + ((size_t)b * L + L - 1 - l) * D,
                   (size_t)D * sizeof(float));
}

/* acc[b, l] += src[b, L - 1 - l] */
static void add_flipped(float *acc, const float *src, int B, int L, int D) {
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            float *a = acc + ((size_t)b * L + l) * D;
            const float *s = src + ((size_t)b * L + L - 1 - l) * D;
            for (int d = 0; d < D; d++) a[d] += s[d];
        }
}

/* The reverse direction's view of the layer's activations: its input is the flipped rows. */
static ssm_layer_acts rev_acts(const ssm_layer_acts *la) {
    ssm_layer_acts r = {0};
    r.normed = la->bimamba.flipped;
    r.mamba1 = la->bimamba.rev;
    return r;
}

static void bi_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                       float *out, const ssm_layer_state *st) {
    (void)st; /* never a carried state (ssm_check_state refuses one) */
    const ssm_config *c = ps->c;
    ssm_bimamba_acts *a = &la->bimamba;
    int B = ps->B, L = ps->L, D = c->d_model;
    size_t n = ps->T * D;
    /* y_fwd = M_fwd(h) */
    memset(a->y_fwd, 0, n * sizeof(float));
    M1.forward(ps, lp, la, a->y_fwd, NULL);
    /* y_rev = flip(M_rev(flip(h))): computed in flipped order, then flipped back in place */
    flip_rows(a->flipped, la->normed, B, L, D);
    ssm_layer_params rev = rev_view(&lp->bimamba);
    ssm_layer_acts ra = rev_acts(la);
    float *rev_out = a->y_rev;
    memset(rev_out, 0, n * sizeof(float));
    M1.forward(ps, &rev, &ra, rev_out, NULL);
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L / 2; l++) {
            float *x = rev_out + ((size_t)b * L + l) * D, *y = rev_out + ((size_t)b * L + L - 1 - l) * D;
            for (int d = 0; d < D; d++) {
                float t = x[d];
                x[d] = y[d], y[d] = t;
            }
        }
    /* out += y_fwd + y_rev, or y_fwd * y_rev */
    if (c->bidirectional == SSM_BIDIR_MUL)
        for (size_t i = 0; i < n; i++) out[i] += a->y_fwd[i] * a->y_rev[i];
    else
        for (size_t i = 0; i < n; i++) out[i] += a->y_fwd[i] + a->y_rev[i];
}

static void bi_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                        const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    const ssm_bimamba_acts *a = &la->bimamba;
    int B = ps->B, L = ps->L, D = c->d_model, mul = c->bidirectional == SSM_BIDIR_MUL;
    size_t n = ps->T * D;
    float *d_dir = ps->bw->bimamba.d_dir, *d_in = ps->bw->bimamba.d_in;
    /* forward direction: d y_fwd = d out (* y_rev) */
    const float *d_fwd = d_out;
    if (mul) {
        for (size_t i = 0; i < n; i++) d_dir[i] = d_out[i] * a->y_rev[i];
        d_fwd = d_dir;
    }
    M1.backward(ps, lp, lg, la, d_fwd, d_normed);
    /* reverse direction, in flipped order: d y_rev = d out (* y_fwd), flipped */
    if (mul) {
        for (size_t i = 0; i < n; i++) d_in[i] = d_out[i] * a->y_fwd[i];
        flip_rows(d_dir, d_in, B, L, D);
    } else {
        flip_rows(d_dir, d_out, B, L, D);
    }
    ssm_layer_params rev = rev_view(&lp->bimamba), grev = rev_view(&lg->bimamba);
    ssm_layer_acts ra = rev_acts(la);
    M1.backward(ps, &rev, &grev, &ra, d_dir, d_in);
    /* d h += flip(d flipped) */
    add_flipped(d_normed, d_in, B, L, D);
}

static size_t bi_step_floats(const ssm_config *c, int B) {
    (void)c, (void)B;
    return 0;
}

const ssm_layer_kind_ops ssm_bimamba_kind = {
    .name = "bimamba",
    .n_tensors = BI_N,
    .suffix = bi_suffix,
    .decay = bi_decay,
    .cuda = 0,
    .shapes = bi_shapes,
    .init = bi_init,
    .state_size = bi_state_size,
    .plan = bi_plan,
    .plan_scratch = bi_plan_scratch,
    .forward = bi_forward,
    .backward = bi_backward,
    .step_floats = bi_step_floats,
    .step = NULL, /* ssm_step refuses a bidirectional model first */
};
