/* mamba1.c: the Mamba-1 layer kind on the CPU (mamba_ssm's Mamba, transformers' MambaMixer).
 *   [x | z] = in_proj(h); u = silu(conv1d(x)); [dt | B | C] = x_proj(u);
 *   dt = dt_proj(dt) (no bias); y = scan(u, dt, B, C) (bias + softplus + D inside);
 *   out += out_proj(y * silu(z)).
 * Shapes: T = B * L rows; D = d_model, E = d_inner, N = d_state, K = d_conv, R = dt_rank.
 *
 * config.non_selective (the Mamba paper's ablation without selection, recipe key
 * model.selective: false): x_proj is applied to a constant input of ones instead of u, so
 * [dt | B | C] are the same learned values at every position: dt fixed per channel (after
 * dt_proj), B and C fixed (N), and the layer is a time-invariant SSM. Same tensors, same shapes.
 *
 * config.inner_norms (Jamba's JambaMambaMixer): RMSNorms over each of dt (R), B (N) and C (N)
 * right after x_proj, before dt_proj and the scan, eps norm_eps, with the weights
 * mixer.dt_layernorm, b_layernorm, c_layernorm (empty tensors otherwise). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu_ops.h"
#include "layers.h"

enum { M1_N_TENSORS = 12 };
_Static_assert(sizeof(ssm_mamba1_params) == M1_N_TENSORS * sizeof(float *),
               "ssm_mamba1_params and the Mamba-1 tensor table must list the same tensors");
static const char *const m1_suffix[M1_N_TENSORS] = {
    "mixer.in_proj.weight", "mixer.conv1d.weight", "mixer.conv1d.bias",
    "mixer.x_proj.weight",  "mixer.dt_proj.weight", "mixer.dt_proj.bias",
    "mixer.A_log",          "mixer.D",             "mixer.out_proj.weight",
    "mixer.dt_layernorm.weight", "mixer.b_layernorm.weight", "mixer.c_layernorm.weight"};
/* no weight decay on biases, A_log, D (the reference's _no_weight_decay) nor norms */
static const unsigned char m1_decay[M1_N_TENSORS] = {1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0};

static void m1_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    int64_t D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    int64_t in = c->inner_norms ? 1 : 0; /* empty (0) norms, which files leave out */
    const int64_t s[M1_N_TENSORS][2] = {{2 * E, D}, {E, K}, {E, 0},     {R + 2 * N, E},
                                        {E, R},     {E, 0}, {E, N},     {E, 0},
                                        {D, E},     {in * R, 0}, {in * N, 0}, {in * N, 0}};
    ssm_kind_shapes(s, M1_N_TENSORS, shape, ndim);
}

/* mamba_ssm's Mamba.__init__ and MambaLMHeadModel._init_weights */
static void m1_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    const ssm_mamba1_params *p = &lp->mamba1;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank;
    /* nn.Linear default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)) */
    ssm_fill_uniform(rng, p->in_proj, (size_t)2 * E * D, 1.0 / sqrt(D));
    /* nn.Conv1d default (fan_in = K for depthwise): weight and bias U(+-1/sqrt(K)) */
    ssm_fill_uniform(rng, p->conv_w, (size_t)E * K, 1.0 / sqrt(K));
    ssm_fill_uniform(rng, p->conv_b, (size_t)E, 1.0 / sqrt(K));
    ssm_fill_uniform(rng, p->x_proj, (size_t)(R + 2 * N) * E, 1.0 / sqrt(E));
    /* dt_proj.weight ~ U(+-dt_rank^-0.5) (dt_init "random", dt_scale 1) */
    ssm_fill_uniform(rng, p->dt_proj_w, (size_t)E * R, 1.0 / sqrt(R));
    for (int e = 0; e < E; e++) {
        /* dt = exp(U(log dt_min, log dt_max)) clamped >= floor; bias = softplus^-1(dt) */
        p->dt_proj_b[e] = ssm_init_dt_bias(c, rng);
        /* S4D-real: A_log = log(1..N) on every row; D = 1 */
        for (int n = 0; n < N; n++) p->A_log[(size_t)e * N + n] = (float)log(n + 1.0);
        p->D[e] = 1.0f;
    }
    /* out_proj: U(+-1/sqrt(E)) then rescaled by 1/sqrt(n_layer) (one residual per layer) */
    ssm_fill_uniform(rng, p->out_proj, (size_t)D * E, 1.0 / sqrt(E) / sqrt(c->n_layer));
    if (c->inner_norms) { /* JambaRMSNorm: ones */
        for (int r = 0; r < R; r++) p->dt_norm[r] = 1.0f;
        for (int n = 0; n < N; n++) p->b_norm[n] = p->c_norm[n] = 1.0f;
    }
}

static void m1_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    *conv = (size_t)c->d_inner * c->d_conv;  /* (E, K) */
    *ssm = (size_t)c->d_inner * c->d_state;  /* (E, N) */
    *channels = c->d_inner;
}

static void m1_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                    int threads) {
    size_t E = c->d_inner, N = c->d_state, R = c->dt_rank;
    ssm_mamba1_acts *a = &la->mamba1;
    a->xz = ssm_carve(cv, T * 2 * E);
    a->u = ssm_carve(cv, T * E);
    a->x_dbl = ssm_carve(cv, T * (R + 2 * N));
    a->x_raw = ssm_carve(cv, c->inner_norms ? T * (R + 2 * N) : 0);
    a->rstd = ssm_carve(cv, c->inner_norms ? T * 3 : 0);
    a->dt = ssm_carve(cv, T * E);
    a->y = ssm_carve(cv, T * E);
    a->gated = ssm_carve(cv, T * E);
}

static void m1_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                            size_t T, int L, int threads) {
    size_t E = c->d_inner, N = c->d_state, R = c->dt_rank;
    bw->mamba1.d_xz = ssm_carve(cv, T * 2 * E);
    bw->mamba1.d_u = ssm_carve(cv, T * E);
    bw->mamba1.d_x_dbl = ssm_carve(cv, T * (R + 2 * N));
    bw->mamba1.d_dt = ssm_carve(cv, T * E);
    bw->mamba1.d_y = ssm_carve(cv, T * E);
    bw->mamba1.d_gated = ssm_carve(cv, T * E);
    bw->mamba1.scan_scratch = ssm_carve(cv, (size_t)threads * CPU_SCAN_SCRATCH(L, N));
    bw->mamba1.dBC_partial = ssm_carve(cv, (size_t)threads * T * 2 * N);
}

/* non-selective: x_dbl (T, XD) = x_proj . 1, the same row at every position */
static void m1_fixed_x_dbl(float *x_dbl, const float *x_proj, size_t T, int E, int XD) {
    for (int j = 0; j < XD; j++) {
        double s = 0;
        for (int e = 0; e < E; e++) s += x_proj[(size_t)j * E + e];
        x_dbl[j] = (float)s;
    }
    for (size_t t = 1; t < T; t++) memcpy(x_dbl + t * XD, x_dbl, (size_t)XD * sizeof *x_dbl);
}

/* its backward: d x_proj[j, e] += sum_t d x_dbl[t, j] (the input is ones; u gets nothing) */
static void m1_fixed_x_dbl_backward(float *g_x_proj, const float *d_x_dbl, size_t T, int E, int XD) {
    for (int j = 0; j < XD; j++) {
        double s = 0;
        for (size_t t = 0; t < T; t++) s += d_x_dbl[t * XD + j];
        for (int e = 0; e < E; e++) g_x_proj[(size_t)j * E + e] += (float)s;
    }
}

/* the scan's arguments (ssm/scan_args.h) over u, dt and x_dbl = [dt | B | C], as forward.cu's
 * scan_args() for the CUDA twin */
static ssm_scan_args m1_scan_args(const ssm_config *c, const ssm_mamba1_params *p, const float *u,
                                  const float *dt, const float *x_dbl, int B, int L) {
    int R = c->dt_rank, N = c->d_state;
    return (ssm_scan_args){.B = B, .L = L, .E = c->d_inner, .N = N, .dtype = SSM_DTYPE_F32,
                           .u = u, .dt = dt, .Bm = x_dbl + R, .Cm = x_dbl + R + N,
                           .ld_bc = R + 2 * N, .dt_bias = p->dt_proj_b, .A_log = p->A_log,
                           .D = p->D};
}

/* x_dbl = [dt_norm(dt) | b_norm(B) | c_norm(C)] of x_raw (T rows of XD); rstd (T, 3) */
static void m1_inner_norms(const ssm_config *c, const ssm_mamba1_params *p, float *x_dbl,
                           float *rstd, const float *x_raw, int T) {
    int R = c->dt_rank, N = c->d_state, XD = R + 2 * N;
    const float *w[3] = {p->dt_norm, p->b_norm, p->c_norm};
    int col[3] = {0, R, R + N}, width[3] = {R, N, N};
    for (int j = 0; j < 3; j++)
        cpu_rmsnorm_cols_forward(x_dbl + col[j], rstd + j, 3, x_raw + col[j], XD, w[j], T,
                                 width[j], c->norm_eps);
}

static void m1_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                       float *out, const ssm_layer_state *st) {
    const ssm_config *c = ps->c;
    const ssm_mamba1_params *p = &lp->mamba1;
    ssm_mamba1_acts *a = &la->mamba1;
    int B = ps->B, L = ps->L, D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv,
        R = c->dt_rank, XD = R + 2 * N;
    /* [x | z] = in_proj(h) */
    ssm_pass_matmul(ps, a->xz, 2 * E, 0.0f, la->normed, D, p->in_proj, D, 2 * E);
    /* u = silu(conv1d(x) + bias) */
    cpu_conv_forward(a->u, a->xz, 2 * E, p->conv_w, p->conv_b, st ? st->conv : NULL, B, L, E, K);
    if (st) cpu_conv_state_update(st->conv, a->xz, 2 * E, B, L, E, K);
    /* [dt | B | C] = x_proj(u), or x_proj(1) without selection */
    float *x_raw = c->inner_norms ? a->x_raw : a->x_dbl;
    if (c->non_selective) m1_fixed_x_dbl(x_raw, p->x_proj, ps->T, E, XD);
    else ssm_pass_matmul(ps, x_raw, XD, 0.0f, a->u, E, p->x_proj, E, XD);
    /* Jamba: dt, B, C each through its RMSNorm */
    if (c->inner_norms) m1_inner_norms(c, p, a->x_dbl, a->rstd, x_raw, (int)ps->T);
    /* dt = dt_proj(dt) without its bias */
    ssm_pass_matmul(ps, a->dt, E, 0.0f, a->x_dbl, XD, p->dt_proj_w, R, E);
    /* y = scan(u, softplus(dt + bias), A, B, C) + D u */
    ssm_scan_args sa = m1_scan_args(c, p, a->u, a->dt, a->x_dbl, B, L);
    cpu_scan_forward(&sa, a->y, st ? st->ssm : NULL);
    /* out += out_proj(y * silu(z)) */
    cpu_gate_forward(a->gated, a->y, a->xz + E, 2 * E, (int)ps->T, E);
    ssm_pass_matmul(ps, out, D, 1.0f, a->gated, E, p->out_proj, E, D);
}

static void m1_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                        const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    const ssm_mamba1_params *p = &lp->mamba1;
    ssm_mamba1_params *g = &lg->mamba1;
    const ssm_mamba1_acts *a = &la->mamba1;
    int B = ps->B, L = ps->L, T = (int)ps->T, D = c->d_model, E = c->d_inner, N = c->d_state,
        K = c->d_conv, R = c->dt_rank, XD = R + 2 * N;
    typeof(ps->bw->mamba1) *w = &ps->bw->mamba1;
    /* out = out_proj(gated): d gated = d out . out_proj */
    cpu_matmul_backward(w->d_gated, E, 0.0f, g->out_proj, d_out, D, a->gated, E, p->out_proj, T,
                        E, D);
    /* gated = y * silu(z) */
    cpu_gate_backward(w->d_y, w->d_xz + E, 2 * E, w->d_gated, a->y, a->xz + E, T, E);
    /* the scan: d u, d dt, d B, d C and the scan's own parameters */
    ssm_scan_args sa = m1_scan_args(c, p, a->u, a->dt, a->x_dbl, B, L);
    cpu_scan_backward(&sa, w->d_y, w->d_u, w->d_dt, w->d_x_dbl + R, w->d_x_dbl + R + N,
                      g->dt_proj_b, g->A_log, g->D, w->scan_scratch, w->dBC_partial, ps->threads);
    /* dt = dt_proj(x_dbl[:, :R]) */
    cpu_matmul_backward(w->d_x_dbl, XD, 0.0f, g->dt_proj_w, w->d_dt, E, a->x_dbl, XD,
                        p->dt_proj_w, T, R, E);
    /* the inner norms: d x_dbl (after them) -> d x_raw, in place */
    if (c->inner_norms) {
        float *gw[3] = {g->dt_norm, g->b_norm, g->c_norm};
        const float *pw[3] = {p->dt_norm, p->b_norm, p->c_norm};
        int col[3] = {0, R, R + N}, width[3] = {R, N, N};
        for (int j = 0; j < 3; j++)
            cpu_rmsnorm_cols_backward(w->d_x_dbl + col[j], gw[j], w->d_x_dbl + col[j],
                                      a->x_raw + col[j], XD, pw[j], a->rstd + j, 3, T, width[j]);
    }
    /* x_dbl = x_proj(u): d u += d x_dbl . x_proj (without selection x_dbl does not see u) */
    if (c->non_selective) m1_fixed_x_dbl_backward(g->x_proj, w->d_x_dbl, (size_t)T, E, XD);
    else cpu_matmul_backward(w->d_u, E, 1.0f, g->x_proj, w->d_x_dbl, XD, a->u, E, p->x_proj, T,
                             E, XD);
    /* u = silu(conv1d(x)) */
    cpu_conv_backward(w->d_xz, g->conv_w, g->conv_b, w->d_u, a->xz, 2 * E, p->conv_w, p->conv_b,
                      B, L, E, K);
    /* [x | z] = in_proj(h) */
    cpu_matmul_backward(d_normed, D, 0.0f, g->in_proj, w->d_xz, 2 * E, la->normed, D, p->in_proj,
                        T, D, 2 * E);
}

static size_t m1_step_floats(const ssm_config *c, int B) {
    size_t E = c->d_inner, XD = c->dt_rank + 2 * c->d_state;
    return (size_t)B * (2 * E + 4 * E + 2 * XD + 3);
}

static void m1_step(const ssm_config *c, const ssm_layer_params *lp, const float *h, float *r,
                    const ssm_layer_state *st, int B, float *work) {
    const ssm_mamba1_params *p = &lp->mamba1;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank,
        XD = R + 2 * N;
    float *xz = work, *u = xz + (size_t)B * 2 * E, *dt = u + (size_t)B * E,
          *y = dt + (size_t)B * E, *gated = y + (size_t)B * E, *x_dbl = gated + (size_t)B * E,
          *x_raw = x_dbl + (size_t)B * XD, *rstd = x_raw + (size_t)B * XD;
    /* the products read each weight once for the B rows (ssm_step_rows) */
    ssm_step_rows(st->weights, xz, 2 * E, 0.0f, h, D, p->in_proj, B, D, 2 * E);
    cpu_conv_step(u, st->conv, xz, 2 * E, p->conv_w, p->conv_b, B, E, K);
    if (!c->inner_norms) x_raw = x_dbl;
    if (c->non_selective) m1_fixed_x_dbl(x_raw, p->x_proj, (size_t)B, E, XD);
    else ssm_step_rows(st->weights, x_raw, XD, 0.0f, u, E, p->x_proj, B, E, XD);
    if (c->inner_norms) m1_inner_norms(c, p, x_dbl, rstd, x_raw, B);
    ssm_step_rows(st->weights, dt, E, 0.0f, x_dbl, XD, p->dt_proj_w, B, R, E);
    ssm_scan_args sa = m1_scan_args(c, p, u, dt, x_dbl, B, 1);
    if (st->weights && st->weights->A) /* A = -exp(A_log), taken with the decode weights */
        sa.A = st->weights->A + (size_t)st->layer * E * N;
    cpu_scan_step(&sa, y, st->ssm);
    cpu_gate_forward(gated, y, xz + E, 2 * E, B, E);
    ssm_step_rows(st->weights, r, D, 1.0f, gated, E, p->out_proj, B, E, D);
}

const ssm_layer_kind_ops ssm_mamba1_kind = {
    .name = "mamba1",
    .n_tensors = M1_N_TENSORS,
    .suffix = m1_suffix,
    .decay = m1_decay,
    .cuda = 1,
    .shapes = m1_shapes,
    .init = m1_init,
    .state_size = m1_state_size,
    .plan = m1_plan,
    .plan_scratch = m1_plan_scratch,
    .forward = m1_forward,
    .backward = m1_backward,
    .step_floats = m1_step_floats,
    .step = m1_step,
};
