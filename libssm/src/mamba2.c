/* mamba2.c: the Mamba-2 (SSD) layer kind on the CPU (mamba_ssm's Mamba2, transformers'
 * Mamba2Mixer; docs/architecture.md, 'Mamba-2').
 *   [z | xBC | dt] = in_proj(h);  xBC = silu(conv1d(xBC));  [x | B | C] = xBC
 *   y = SSD(x, softplus(dt + dt_bias) clamped to dt_limit, A = -exp(A_log), B, C) + D x
 *   out += out_proj(RMSNormGated(y, z))   (v = y * silu(z), normalised per group of I / G)
 * Shapes: T = B * L rows; D = d_model, I = d_inner, H heads of P channels, G groups,
 * N = d_state, K = d_conv, CD = I + 2 G N (the conv's channels), ZD = I + CD + H. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu_ops.h"
#include "gated_norm.h"
#include "layers.h"
#include "ssd.h"

#define M2_NORM_EPS 1e-5f /* mamba_ssm fixes the gated norm's eps, whatever norm_eps is */

enum { M2_N_TENSORS = 8 };
_Static_assert(sizeof(ssm_mamba2_params) == M2_N_TENSORS * sizeof(float *),
               "ssm_mamba2_params and the Mamba-2 tensor table must list the same tensors");
static const char *const m2_suffix[M2_N_TENSORS] = {
    "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.dt_bias",
    "mixer.A_log",          "mixer.D",             "mixer.norm.weight", "mixer.out_proj.weight"};
static const unsigned char m2_decay[M2_N_TENSORS] = {1, 1, 0, 0, 0, 0, 0, 1};

typedef struct m2_dims { int D, I, H, P, G, N, K, CD, ZD; } m2_dims;
static m2_dims dims(const ssm_config *c) {
    const ssm_mamba2_config *m = &c->mamba2;
    m2_dims d = {c->d_model, m->d_inner, m->nheads, m->headdim, m->ngroups, m->d_state, m->d_conv, 0, 0};
    d.CD = d.I + 2 * d.G * d.N;
    d.ZD = d.I + d.CD + d.H;
    return d;
}

static void m2_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    m2_dims d = dims(c);
    const int64_t s[M2_N_TENSORS][2] = {{d.ZD, d.D}, {d.CD, d.K}, {d.CD, 0}, {d.H, 0},
                                        {d.H, 0},    {d.H, 0},    {d.I, 0},  {d.D, d.I}};
    ssm_kind_shapes(s, M2_N_TENSORS, shape, ndim);
}

/* mamba_ssm's Mamba2.__init__ and _init_weights (out_proj rescaled by 1/sqrt(n_layer)) */
static void m2_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    const ssm_mamba2_params *p = &lp->mamba2;
    const ssm_mamba2_config *m = &c->mamba2;
    m2_dims d = dims(c);
    ssm_fill_uniform(rng, p->in_proj, (size_t)d.ZD * d.D, 1.0 / sqrt(d.D));
    ssm_fill_uniform(rng, p->conv_w, (size_t)d.CD * d.K, 1.0 / sqrt(d.K));
    ssm_fill_uniform(rng, p->conv_b, (size_t)d.CD, 1.0 / sqrt(d.K));
    for (int h = 0; h < d.H; h++) {
        /* dt = exp(U(log dt_min, log dt_max)) clamped >= floor; dt_bias = softplus^-1(dt) */
        p->dt_bias[h] = ssm_init_dt_bias(c, rng);
        /* A_log = log(U(A_init_range)); D = 1 */
        double a = m->A_init[0] + ssm_rng_uniform(rng) * (m->A_init[1] - m->A_init[0]);
        p->A_log[h] = (float)log(a);
        p->D[h] = 1.0f;
    }
    for (int i = 0; i < d.I; i++) p->norm[i] = 1.0f;
    ssm_fill_uniform(rng, p->out_proj, (size_t)d.D * d.I, 1.0 / sqrt(d.I) / sqrt(c->n_layer));
}

static void m2_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    m2_dims d = dims(c);
    *conv = (size_t)d.CD * d.K;             /* (CD, K): raw xBC inputs, oldest first */
    *ssm = (size_t)d.H * d.P * d.N;         /* (H, P, N) */
    *channels = d.CD;
}

/* The SSD's arguments for rows of zxbcdt / xbc laid out as the forward lays them. */
static cpu_ssd_args ssd_args(const ssm_config *c, int B, int L, const float *zxbcdt,
                             const float *xbc, const ssm_mamba2_params *p, float *y) {
    m2_dims d = dims(c);
    cpu_ssd_args s = {0};
    s.B = B, s.L = L, s.H = d.H, s.P = d.P, s.G = d.G, s.N = d.N;
    /* chunking changes rounding only; on the CPU the backward is fastest at 64 to 128 rows
     * (bench/bench_ssd.c), whatever the model was trained with */
    s.chunk = c->mamba2.chunk_size < 128 ? c->mamba2.chunk_size : 128;
    s.dt_min = c->mamba2.dt_limit[0], s.dt_max = c->mamba2.dt_limit[1];
    s.x = xbc, s.ld_x = d.CD;
    if (xbc) s.Bm = xbc + d.I, s.Cm = xbc + d.I + d.G * d.N;
    s.dt = zxbcdt ? zxbcdt + d.I + d.CD : NULL, s.ld_dt = d.ZD;
    if (p) s.dt_bias = p->dt_bias, s.A_log = p->A_log, s.Dskip = p->D;
    s.y = y, s.ld_y = d.I;
    return s;
}

static size_t ssd_scratch(const ssm_config *c, int B, int L, int threads) {
    cpu_ssd_args s = ssd_args(c, B, L, NULL, NULL, NULL, NULL);
    size_t f = cpu_ssd_scratch_floats(&s, threads, 0), b = cpu_ssd_scratch_floats(&s, threads, 1);
    return f > b ? f : b;
}

static void m2_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                    int threads) {
    m2_dims d = dims(c);
    ssm_mamba2_acts *a = &la->mamba2;
    a->zxbcdt = ssm_carve(cv, T * d.ZD);
    a->xbc = ssm_carve(cv, T * d.CD);
    a->y = ssm_carve(cv, T * d.I);
    a->rstd = ssm_carve(cv, T * d.G);
    a->normed = ssm_carve(cv, T * d.I);
}

static void m2_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                            size_t T, int L, int threads) {
    m2_dims d = dims(c);
    bw->mamba2.d_zxbcdt = ssm_carve(cv, T * d.ZD);
    bw->mamba2.d_xbc = ssm_carve(cv, T * d.CD);
    bw->mamba2.d_y = ssm_carve(cv, T * d.I);
    bw->mamba2.d_normed = ssm_carve(cv, T * d.I);
    bw->mamba2.ssd_scratch_floats = ssd_scratch(c, (int)(T / L), L, threads);
    bw->mamba2.ssd_scratch = ssm_carve(cv, bw->mamba2.ssd_scratch_floats);
}

static void m2_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                       float *out, const ssm_layer_state *st) {
    const ssm_config *c = ps->c;
    const ssm_mamba2_params *p = &lp->mamba2;
    ssm_mamba2_acts *a = &la->mamba2;
    m2_dims d = dims(c);
    int B = ps->B, L = ps->L;
    /* [z | xBC | dt] = in_proj(h) */
    ssm_pass_matmul(ps, a->zxbcdt, d.ZD, 0.0f, la->normed, d.D, p->in_proj, d.D, d.ZD);
    /* xBC = silu(conv1d(xBC) + bias), over x, B and C */
    const float *xBC = a->zxbcdt + d.I;
    cpu_conv_forward(a->xbc, xBC, d.ZD, p->conv_w, p->conv_b, st ? st->conv : NULL, B, L, d.CD, d.K);
    if (st) cpu_conv_state_update(st->conv, xBC, d.ZD, B, L, d.CD, d.K);
    /* y = SSD(x, dt, A, B, C) + D x */
    cpu_ssd_args s = ssd_args(c, B, L, a->zxbcdt, a->xbc, p, a->y);
    s.state = st ? st->ssm : NULL;
    s.scratch = ps->bw->mamba2.ssd_scratch, s.scratch_floats = ps->bw->mamba2.ssd_scratch_floats;
    s.threads = ps->threads;
    cpu_ssd_forward(&s);
    /* out += out_proj(RMSNormGated(y, z)) */
    cpu_gated_rmsnorm_forward(a->normed, d.I, a->rstd, a->y, d.I, a->zxbcdt, d.ZD, p->norm,
                              (int)ps->T, d.I, d.G, M2_NORM_EPS);
    ssm_pass_matmul(ps, out, d.D, 1.0f, a->normed, d.I, p->out_proj, d.I, d.D);
}

static void m2_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                        const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    const ssm_mamba2_params *p = &lp->mamba2;
    ssm_mamba2_params *g = &lg->mamba2;
    const ssm_mamba2_acts *a = &la->mamba2;
    typeof(ps->bw->mamba2) *w = &ps->bw->mamba2;
    m2_dims d = dims(c);
    int B = ps->B, L = ps->L, T = (int)ps->T;
    /* out = out_proj(normed): d normed = d out . out_proj */
    cpu_matmul_backward(w->d_normed, d.I, 0.0f, g->out_proj, d_out, d.D, a->normed, d.I,
                        p->out_proj, T, d.I, d.D);
    /* normed = RMSNormGated(y, z): d y, d z (into d zxbcdt's z part), d norm.weight */
    cpu_gated_rmsnorm_backward(w->d_y, d.I, w->d_zxbcdt, d.ZD, g->norm, w->d_normed, d.I, a->y,
                               d.I, a->zxbcdt, d.ZD, p->norm, a->rstd, T, d.I, d.G);
    /* the SSD: d x, d B, d C (into d xbc), d dt (into d zxbcdt's dt part), its parameters */
    cpu_ssd_args s = ssd_args(c, B, L, a->zxbcdt, a->xbc, p, NULL);
    s.dy = w->d_y;
    s.dx = w->d_xbc, s.dBm = w->d_xbc + d.I, s.dCm = w->d_xbc + d.I + d.G * d.N;
    s.ddt = w->d_zxbcdt + d.I + d.CD;
    s.d_dt_bias = g->dt_bias, s.dA_log = g->A_log, s.dD = g->D;
    s.scratch = w->ssd_scratch, s.scratch_floats = w->ssd_scratch_floats;
    s.threads = ps->threads;
    cpu_ssd_backward(&s);
    /* xbc = silu(conv1d(xBC)): d xBC into d zxbcdt's middle */
    cpu_conv_backward(w->d_zxbcdt + d.I, g->conv_w, g->conv_b, w->d_xbc, a->zxbcdt + d.I, d.ZD,
                      p->conv_w, p->conv_b, B, L, d.CD, d.K);
    /* zxbcdt = in_proj(h) */
    cpu_matmul_backward(d_normed, d.D, 0.0f, g->in_proj, w->d_zxbcdt, d.ZD, la->normed, d.D,
                        p->in_proj, T, d.D, d.ZD);
}

static size_t m2_step_floats(const ssm_config *c, int B) {
    m2_dims d = dims(c);
    return (size_t)B * (d.ZD + d.CD + 2 * d.I + d.G);
}

static void m2_step(const ssm_config *c, const ssm_layer_params *lp, const float *h, float *r,
                    const ssm_layer_state *st, int B, float *work) {
    const ssm_mamba2_params *p = &lp->mamba2;
    m2_dims d = dims(c);
    float *zxbcdt = work, *xbc = zxbcdt + (size_t)B * d.ZD, *y = xbc + (size_t)B * d.CD,
          *normed = y + (size_t)B * d.I, *rstd = normed + (size_t)B * d.I;
    /* the products read each weight once for the B rows (ssm_step_rows) */
    ssm_step_rows(st->weights, zxbcdt, d.ZD, 0.0f, h, d.D, p->in_proj, B, d.D, d.ZD);
    /* conv_state rolls left and takes the raw xBC; xbc = silu(conv) */
    cpu_conv_step(xbc, st->conv, zxbcdt + d.I, d.ZD, p->conv_w, p->conv_b, B, d.CD, d.K);
    cpu_ssd_args s = ssd_args(c, B, 1, zxbcdt, xbc, p, y);
    s.state = st->ssm; /* the step needs no scratch: it works on the state in place */
    cpu_ssd_step(&s);
    cpu_gated_rmsnorm_forward(normed, d.I, rstd, y, d.I, zxbcdt, d.ZD, p->norm, B, d.I, d.G,
                              M2_NORM_EPS);
    ssm_step_rows(st->weights, r, d.D, 1.0f, normed, d.I, p->out_proj, B, d.I, d.D);
}

const ssm_layer_kind_ops ssm_mamba2_kind = {
    .name = "mamba2",
    .n_tensors = M2_N_TENSORS,
    .suffix = m2_suffix,
    .decay = m2_decay,
    .cuda = 1,
    .shapes = m2_shapes,
    .init = m2_init,
    .state_size = m2_state_size,
    .plan = m2_plan,
    .plan_scratch = m2_plan_scratch,
    .forward = m2_forward,
    .backward = m2_backward,
    .step_floats = m2_step_floats,
    .step = m2_step,
};
