/* test_scan.c: cpu_scan_forward and cpu_scan_backward against a plain sequential loop in
 * double precision, written here straight from the equations of cpu_ops.h:
 *   delta = softplus(dt + dt_bias) (x above 20 returned as is);  A = -exp(A_log)
 *   h_l = exp(delta * A) * h_{l-1} + delta * B_l * u_l;   y_l = C_l . h_l + D * u_l
 * and its reverse-mode derivative, itself checked against double finite differences.
 *
 * Tolerances (fp32 against double, relative norm error): forward 1e-5, backward 1e-4.
 * The fp32 scan rounds each step (a few ulps, 6e-8 each); the state forgets at the rate
 * exp(delta * A), so the error of h_l is a random walk over the ~1 / (delta |A|) steps it
 * remembers: at the smallest decay used here (delta ~ 1e-3, A = -1: ~1000 steps) about
 * sqrt(1000) * 2 ulp ~ 4e-6, under 1e-5. The backward sums L such terms again (dA_log,
 * d_dt_bias, dD are sums over B * L positions), hence 1e-4. The measured errors are printed:
 * at most 6e-7 (forward, final state of L = 300 at the initial dt) and 1e-6 (backward, dA_log
 * and dD at L = 1000). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "testutil.h"

/* ---- inputs ------------------------------------------------------------------------------ */

/* One problem: u, dt (T, E); Bm, Cm columns [R, R + N) and [R + N, R + 2N) of xdbl (T, ld). */
typedef struct {
    int B, L, E, N, R, ld;
    float *u, *dt, *bias, *A_log, *xdbl, *D;
} problem;

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static void ffill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

/* regime "init": the model's initial values (delta = dt in 0.001 .. 0.1 through the inverse
 * softplus of dt_proj.bias, A_log = log(1..N)); regime "wide": dt + bias in [-1, 1] (delta
 * 0.3 .. 1.3) and A_log in [-1, 1]. */
static problem make_problem(int B, int L, int E, int N, int wide, uint64_t seed) {
    problem p = {B, L, E, N, 3, 3 + 2 * N + 1, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t T = (size_t)B * L;
    p.u = falloc(T * E);
    p.dt = falloc(T * E);
    p.bias = falloc(E);
    p.A_log = falloc((size_t)E * N);
    p.xdbl = falloc(T * p.ld);
    p.D = falloc(E);
    tu_fill_uniform(p.u, T * E, -1, 1, seed);
    tu_fill_uniform(p.xdbl, T * p.ld, -1, 1, seed + 1);
    tu_fill_uniform(p.D, E, 0.5f, 1.5f, seed + 2);
    if (wide) {
        tu_fill_uniform(p.dt, T * E, -0.6f, 0.6f, seed + 3);
        tu_fill_uniform(p.bias, E, -0.4f, 0.4f, seed + 4);
        tu_fill_uniform(p.A_log, (size_t)E * N, -1, 1, seed + 5);
    } else {
        tu_fill_uniform(p.dt, T * E, -0.3f, 0.3f, seed + 3); /* dt_proj(.) of small values */
        float *r = falloc(E);
        tu_fill_uniform(r, E, 0, 1, seed + 4);
        for (int e = 0; e < E; e++) {
            double d = exp(log(1e-3) + r[e] * (log(1e-1) - log(1e-3)));
            p.bias[e] = (float)(d + log(-expm1(-d))); /* softplus^-1(d) */
        }
        free(r);
        for (int e = 0; e < E; e++)
            for (int n = 0; n < N; n++) p.A_log[(size_t)e * N + n] = (float)log(n + 1.0);
    }
    return p;
}

static void free_problem(problem *p) {
    free(p->u), free(p->dt), free(p->bias), free(p->A_log), free(p->xdbl), free(p->D);
}

static const float *Bcol(const problem *p) { return p->xdbl + p->R; }
static const float *Ccol(const problem *p) { return p->xdbl + p->R + p->N; }
static ssm_scan_args scan_args(const problem *p) {
    return (ssm_scan_args){.B = p->B, .L = p->L, .E = p->E, .N = p->N, .u = p->u, .dt = p->dt,
                           .Bm = Bcol(p), .Cm = Ccol(p), .ld_bc = p->ld, .dt_bias = p->bias,
                           .A_log = p->A_log, .D = p->D};
}

/* ---- the double-precision reference ------------------------------------------------------ */

static double softplus_d(double x) { return x > 20 ? x : log1p(exp(x)); }
static double sigmoid_d(double x) { return 1 / (1 + exp(-x)); }

/* y (T, E) and the final state (B, E, N) from the initial state h0 (NULL: zero). */
static void ref_forward(const problem *p, const float *h0, double *y, double *hT) {
    int E = p->E, N = p->N;
    double *h = malloc(N * sizeof(double));
    for (int b = 0; b < p->B; b++)
        for (int e = 0; e < E; e++) {
            double A_[64];
            for (int n = 0; n < N; n++) {
                A_[n] = -exp((double)p->A_log[(size_t)e * N + n]);
                h[n] = h0 ? h0[((size_t)b * E + e) * N + n] : 0;
            }
            for (int l = 0; l < p->L; l++) {
                size_t t = (size_t)b * p->L + l;
                double delta = softplus_d((double)p->dt[t * E + e] + p->bias[e]);
                double u = p->u[t * E + e], acc = 0;
                for (int n = 0; n < N; n++) {
                    h[n] = exp(delta * A_[n]) * h[n] + delta * Bcol(p)[t * p->ld + n] * u;
                    acc += Ccol(p)[t * p->ld + n] * h[n];
                }
                y[t * E + e] = acc + (double)p->D[e] * u;
            }
            if (hT)
                for (int n = 0; n < N; n++) hT[((size_t)b * E + e) * N + n] = h[n];
        }
    free(h);
}

/* The gradients of J = sum(y * dy) from zero initial state, by reverse mode in double. */
typedef struct {
    double *du, *ddt, *dB, *dC; /* (T, E), (T, E), (T, N), (T, N) */
    double *dbias, *dA_log, *dD; /* (E), (E, N), (E) */
} ref_grads;

static ref_grads ref_grads_alloc(const problem *p) {
    size_t T = (size_t)p->B * p->L;
    ref_grads g = {calloc(T * p->E, 8), calloc(T * p->E, 8), calloc(T * p->N, 8), calloc(T * p->N, 8),
                   calloc(p->E, 8), calloc((size_t)p->E * p->N, 8), calloc(p->E, 8)};
    return g;
}

static void ref_grads_free(ref_grads *g) {
    free(g->du), free(g->ddt), free(g->dB), free(g->dC), free(g->dbias), free(g->dA_log), free(g->dD);
}

static void ref_backward(const problem *p, const float *dy, ref_grads *g) {
    int E = p->E, N = p->N, L = p->L;
    double *hs = malloc((size_t)(L + 1) * N * sizeof(double)); /* row l + 1: h_l; row 0: 0 */
    double *gh = malloc(N * sizeof(double)), A_[64], dA[64];
    for (int b = 0; b < p->B; b++)
        for (int e = 0; e < E; e++) {
            for (int n = 0; n < N; n++) {
                A_[n] = -exp((double)p->A_log[(size_t)e * N + n]);
                hs[n] = 0;
                gh[n] = 0;
                dA[n] = 0;
            }
            /* forward again, keeping every state */
            for (int l = 0; l < L; l++) {
                size_t t = (size_t)b * L + l;
                double delta = softplus_d((double)p->dt[t * E + e] + p->bias[e]);
                for (int n = 0; n < N; n++)
                    hs[(size_t)(l + 1) * N + n] = exp(delta * A_[n]) * hs[(size_t)l * N + n] +
                                                  delta * Bcol(p)[t * p->ld + n] * p->u[t * E + e];
            }
            for (int l = L - 1; l >= 0; l--) {
                size_t t = (size_t)b * L + l;
                double x = (double)p->dt[t * E + e] + p->bias[e], delta = softplus_d(x);
                double u = p->u[t * E + e], gy = dy[t * E + e], ddelta = 0, du = gy * p->D[e];
                g->dD[e] += gy * u;
                for (int n = 0; n < N; n++) {
                    double Bn = Bcol(p)[t * p->ld + n], Cn = Ccol(p)[t * p->ld + n];
                    double hp = hs[(size_t)l * N + n], h = hs[(size_t)(l + 1) * N + n];
                    double a = exp(delta * A_[n]);
                    gh[n] += gy * Cn; /* dJ/dh_l */
                    g->dC[t * N + n] += gy * h;
                    /* h_l = a h_{l-1} + delta B u, a = exp(delta A) */
                    ddelta += gh[n] * (hp * a * A_[n] + Bn * u);
                    dA[n] += gh[n] * hp * a * delta;
                    g->dB[t * N + n] += gh[n] * delta * u;
                    du += gh[n] * delta * Bn;
                    gh[n] *= a;
                }
                double dx = ddelta * (x > 20 ? 1 : sigmoid_d(x));
                g->du[t * E + e] = du;
                g->ddt[t * E + e] = dx;
                g->dbias[e] += dx;
            }
            for (int n = 0; n < N; n++) g->dA_log[(size_t)e * N + n] += dA[n] * A_[n];
        }
    free(hs);
    free(gh);
}

/* ---- the op under test ------------------------------------------------------------------- */

static void op_forward(const problem *p, float *y, float *state) {
    ffill(y, (size_t)p->B * p->L * p->E, NAN); /* an unwritten element fails */
    ssm_scan_args a = scan_args(p);
    cpu_scan_forward(&a, y, state);
}

static double rel_f_d(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-300);
}

/* (T, N) columns of a strided (T, ld) float buffer vs a dense double one */
static double rel_cols(const float *a, int ld, const double *b, size_t T, int N) {
    double num = 0, den = 0;
    for (size_t t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double x = a[t * ld + n], r = b[t * N + n];
            if (!isfinite(x)) return INFINITY;
            num += (x - r) * (x - r);
            den += r * r;
        }
    return sqrt(num) / (sqrt(den) + 1e-300);
}

/* ---- forward ----------------------------------------------------------------------------- */

static int check_forward(int B, int L, int E, int N, int wide, uint64_t seed) {
    problem p = make_problem(B, L, E, N, wide, seed);
    size_t T = (size_t)B * L, TE = T * E, S = (size_t)B * E * N;
    float *y = falloc(TE), *state = falloc(S), *h0 = falloc(S);
    double *yr = malloc(TE * 8), *hr = malloc(S * 8);
    /* from zero (state NULL), and from zero through a state buffer */
    op_forward(&p, y, NULL);
    ref_forward(&p, NULL, yr, hr);
    double e0 = rel_f_d(y, yr, TE);
    ffill(state, S, 0);
    op_forward(&p, y, state);
    double e1 = rel_f_d(y, yr, TE), es1 = rel_f_d(state, hr, S);
    /* from a random initial state */
    tu_fill_uniform(h0, S, -1, 1, seed + 9);
    memcpy(state, h0, S * sizeof(float));
    op_forward(&p, y, state);
    ref_forward(&p, h0, yr, hr);
    double e2 = rel_f_d(y, yr, TE), es2 = rel_f_d(state, hr, S);
    printf("forward B %d L %4d E %2d N %2d %-4s: y rel %.2e (state NULL) %.2e (zero state) "
           "%.2e (random state); final state rel %.2e %.2e\n", B, L, E, N, wide ? "wide" : "init",
           e0, e1, e2, es1, es2);
    int bad = !(e0 < 1e-5) + !(e1 < 1e-5) + !(e2 < 1e-5) + !(es1 < 1e-5) + !(es2 < 1e-5);
    free(y), free(state), free(h0), free(yr), free(hr);
    free_problem(&p);
    return bad;
}

static void test_forward_against_reference(void **st) {
    (void)st;
    int bad = 0;
    bad += check_forward(1, 1, 13, 16, 1, 1);
    bad += check_forward(2, 2, 13, 1, 1, 2);
    bad += check_forward(3, 1000, 13, 16, 0, 3);
    bad += check_forward(3, 1000, 13, 16, 1, 4);
    bad += check_forward(2, 37, 40, 16, 0, 5); /* three channel blocks, the last partial */
    bad += check_forward(3, 50, 5, 1, 1, 6);
    bad += check_forward(1, 300, 17, 3, 0, 7);
    assert_int_equal(bad, 0);
}

/* Two forwards carrying the state equal one forward: same y, same final state. */
static void test_split_equals_whole(void **st) {
    (void)st;
    int bad = 0;
    const int B = 3, E = 13, N = 16;
    int splits[][2] = {{400, 600}, {1, 99}, {99, 1}, {7, 8}};
    for (int s = 0; s < 4; s++) {
        int L1 = splits[s][0], L2 = splits[s][1], L = L1 + L2;
        problem p = make_problem(B, L, E, N, s & 1, 20 + s);
        problem a = make_problem(B, L1, E, N, 0, 1), b = make_problem(B, L2, E, N, 0, 1);
        /* a, b: the first L1 and the last L2 positions of every sequence of p */
        for (int bb = 0; bb < B; bb++) {
            size_t o = (size_t)bb * L, oa = (size_t)bb * L1, ob = (size_t)bb * L2;
            memcpy(a.u + oa * E, p.u + o * E, (size_t)L1 * E * 4);
            memcpy(a.dt + oa * E, p.dt + o * E, (size_t)L1 * E * 4);
            memcpy(a.xdbl + oa * p.ld, p.xdbl + o * p.ld, (size_t)L1 * p.ld * 4);
            memcpy(b.u + ob * E, p.u + (o + L1) * E, (size_t)L2 * E * 4);
            memcpy(b.dt + ob * E, p.dt + (o + L1) * E, (size_t)L2 * E * 4);
            memcpy(b.xdbl + ob * p.ld, p.xdbl + (o + L1) * p.ld, (size_t)L2 * p.ld * 4);
        }
        for (problem *q = &a; q; q = q == &a ? &b : NULL) {
            memcpy(q->bias, p.bias, E * 4);
            memcpy(q->A_log, p.A_log, (size_t)E * N * 4);
            memcpy(q->D, p.D, E * 4);
        }
        size_t S = (size_t)B * E * N;
        float *y = falloc((size_t)B * L * E), *ya = falloc((size_t)B * L1 * E), *yb = falloc((size_t)B * L2 * E);
        float *hs = falloc(S), *hw = falloc(S);
        ffill(hw, S, 0);
        op_forward(&p, y, hw);
        ffill(hs, S, 0);
        op_forward(&a, ya, hs);
        op_forward(&b, yb, hs);
        int diff = 0;
        for (int bb = 0; bb < B; bb++) {
            diff += memcmp(ya + (size_t)bb * L1 * E, y + (size_t)bb * L * E, (size_t)L1 * E * 4) != 0;
            diff += memcmp(yb + (size_t)bb * L2 * E, y + ((size_t)bb * L + L1) * E, (size_t)L2 * E * 4) != 0;
        }
        diff += memcmp(hs, hw, S * 4) != 0;
        /* the same arithmetic in the same order: bitwise equal */
        printf("split %d + %d: %s\n", L1, L2, diff ? "DIFFERS" : "bitwise equal to one forward");
        bad += diff;
        free(y), free(ya), free(yb), free(hs), free(hw);
        free_problem(&p), free_problem(&a), free_problem(&b);
    }
    assert_int_equal(bad, 0);
}

/* dt + bias above the softplus threshold (delta = x, exactly), around it, and far beyond
 * (delta * A down to -1e5: exp underflows, h = delta * B * u, finite everywhere). */
static void test_threshold_and_underflow(void **st) {
    (void)st;
    const int B = 2, L = 40, E = 13, N = 16;
    problem p = make_problem(B, L, E, N, 1, 40);
    size_t T = (size_t)B * L, TE = T * E, S = (size_t)B * E * N;
    for (size_t t = 0; t < T; t++)
        for (int e = 0; e < E; e++) {
            float *d = &p.dt[t * E + e];
            if (e < 4) *d = 19.0f + 2.0f * (float)((t * 7 + e) % 11) / 10.0f; /* 19 .. 21 */
            else if (e < 8) *d = 25.0f + (float)(t % 5);                       /* 25 .. 29 */
            else if (e < 10) *d = 1000.0f;                                     /* delta 1000 */
        }
    for (int e = 0; e < E; e++) {
        if (e < 10) p.bias[e] = 0.0f;
        for (int n = 0; n < N; n++) {
            float *a = &p.A_log[(size_t)e * N + n];
            if (e < 4) *a = -6.0f + 0.5f * n;      /* delta * A from -0.05 to -150 */
            else if (e < 8) *a = -8.0f + 0.7f * n; /* from -0.009 to -1e4 */
            else if (e < 10) *a = 2.0f + 0.3f * n; /* -7e3 .. -6e5: underflow */
        }
    }
    float *y = falloc(TE), *state = falloc(S);
    double *yr = malloc(TE * 8), *hr = malloc(S * 8);
    ffill(state, S, 0);
    op_forward(&p, y, state);
    ref_forward(&p, NULL, yr, hr);
    int finite = 1;
    for (size_t i = 0; i < TE; i++) finite &= isfinite(y[i]);
    for (size_t i = 0; i < S; i++) finite &= isfinite(state[i]);
    double ey = rel_f_d(y, yr, TE), es = rel_f_d(state, hr, S);
    /* the underflowing channels alone: y = C . (delta B u) + D u */
    double *yu = malloc(T * 2 * 8);
    float *yo = falloc(T * 2);
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < 2; j++) {
            yu[t * 2 + j] = yr[t * E + 8 + j];
            yo[t * 2 + j] = y[t * E + 8 + j];
        }
    double eu = rel_f_d(yo, yu, T * 2);
    printf("threshold/underflow: all finite %d; y rel %.2e, state rel %.2e, underflowing channels "
           "rel %.2e\n", finite, ey, es, eu);
    assert_true(finite);
    assert_true(ey < 1e-5 && es < 1e-5 && eu < 1e-5);
    /* the backward there too: finite and equal to the reference */
    float *dy = falloc(TE);
    tu_fill_uniform(dy, TE, -1, 1, 41);
    ref_grads g = ref_grads_alloc(&p);
    ref_backward(&p, dy, &g);
    int threads = omp_get_max_threads();
    float *du = falloc(TE), *ddt = falloc(TE), *dx = falloc(T * p.ld);
    float *dbias = calloc(E, 4), *dA = calloc((size_t)E * N, 4), *dD = calloc(E, 4);
    float *scratch = falloc(threads * CPU_SCAN_SCRATCH(L, N)), *partial = falloc((size_t)threads * T * 2 * N);
    ffill(scratch, threads * CPU_SCAN_SCRATCH(L, N), NAN);
    ffill(partial, (size_t)threads * T * 2 * N, NAN);
    ffill(du, TE, NAN), ffill(ddt, TE, NAN), ffill(dx, T * p.ld, NAN);
    ssm_scan_args a = scan_args(&p);
    cpu_scan_backward(&a, dy, du, ddt, dx + p.R, dx + p.R + N, dbias, dA, dD, scratch, partial, threads);
    double e[7] = {rel_f_d(du, g.du, TE), rel_f_d(ddt, g.ddt, TE), rel_cols(dx + p.R, p.ld, g.dB, T, N),
                   rel_cols(dx + p.R + N, p.ld, g.dC, T, N), rel_f_d(dbias, g.dbias, E),
                   rel_f_d(dA, g.dA_log, (size_t)E * N), rel_f_d(dD, g.dD, E)};
    printf("threshold/underflow backward rel: du %.1e ddt %.1e dB %.1e dC %.1e d_dt_bias %.1e "
           "dA_log %.1e dD %.1e\n", e[0], e[1], e[2], e[3], e[4], e[5], e[6]);
    for (int k = 0; k < 7; k++) assert_true(e[k] < 1e-4);
    free(y), free(state), free(yr), free(hr), free(yu), free(yo), free(dy), free(du), free(ddt), free(dx);
    free(dbias), free(dA), free(dD), free(scratch), free(partial);
    ref_grads_free(&g);
    free_problem(&p);
}

/* ---- backward ---------------------------------------------------------------------------- */

/* The reference's reverse mode against double central differences of the reference forward
 * (so that the comparison below stands on a checked gradient). */
static void test_reference_gradient(void **st) {
    (void)st;
    const int B = 2, L = 9, E = 3, N = 4;
    problem p = make_problem(B, L, E, N, 1, 50);
    p.dt[5] = 24.0f; /* one position above the softplus threshold */
    size_t T = (size_t)B * L, TE = T * E;
    float *dy = falloc(TE);
    tu_fill_uniform(dy, TE, -1, 1, 51);
    ref_grads g = ref_grads_alloc(&p);
    ref_backward(&p, dy, &g);
    double *y = malloc(TE * 8);
    /* J as a function of each float input in turn, every coordinate, step 2^-12 */
    struct { const char *name; float *x; size_t n, stride, cols, off; const double *g; } in[] = {
        {"u", p.u, TE, 1, 1, 0, g.du},           {"dt", p.dt, TE, 1, 1, 0, g.ddt},
        {"dt_bias", p.bias, E, 1, 1, 0, g.dbias}, {"A_log", p.A_log, (size_t)E * N, 1, 1, 0, g.dA_log},
        {"B", p.xdbl, T * N, p.ld, N, p.R, g.dB}, {"C", p.xdbl, T * N, p.ld, N, p.R + N, g.dC},
        {"D", p.D, E, 1, 1, 0, g.dD},
    };
    double worst = 0;
    for (int k = 0; k < 7; k++)
        for (size_t i = 0; i < in[k].n; i++) {
            size_t idx = in[k].cols > 1 ? (i / in[k].cols) * in[k].stride + in[k].off + i % in[k].cols : i;
            float save = in[k].x[idx], xs[2];
            double j[2];
            for (int s = 0; s < 2; s++) {
                in[k].x[idx] = xs[s] = save + (s ? -0x1p-12f : 0x1p-12f);
                ref_forward(&p, NULL, y, NULL);
                j[s] = 0;
                for (size_t q = 0; q < TE; q++) j[s] += y[q] * dy[q];
            }
            in[k].x[idx] = save;
            /* over the step as stored in float */
            double fd = (j[0] - j[1]) / ((double)xs[0] - xs[1]), an = in[k].g[i];
            double err = fabs(fd - an) / (fabs(an) + 1e-3);
            worst = fmax(worst, err);
            if (!(err < 1e-4)) printf("  reference gradient %s[%zu]: %g vs fd %g  FAIL\n", in[k].name, i, an, fd);
        }
    printf("reference reverse mode vs double finite differences: worst |diff| / (|g| + 1e-3) %.2e\n", worst);
    assert_true(worst < 1e-4);
    free(dy), free(y);
    ref_grads_free(&g);
    free_problem(&p);
}

static int check_backward(int B, int L, int E, int N, int wide, int threads, uint64_t seed) {
    problem p = make_problem(B, L, E, N, wide, seed);
    size_t T = (size_t)B * L, TE = T * E;
    float *dy = falloc(TE);
    tu_fill_uniform(dy, TE, -1, 1, seed + 7);
    ref_grads g = ref_grads_alloc(&p);
    ref_backward(&p, dy, &g);
    float *du = falloc(TE), *ddt = falloc(TE), *dx = falloc(T * p.ld);
    float *dbias = calloc(E, 4), *dA = calloc((size_t)E * N, 4), *dD = calloc(E, 4);
    size_t ns = threads * CPU_SCAN_SCRATCH(L, N), np = (size_t)threads * T * 2 * N;
    float *scratch = falloc(ns), *partial = falloc(np);
    ffill(scratch, ns, NAN);
    ffill(partial, np, NAN);
    ffill(du, TE, NAN), ffill(ddt, TE, NAN), ffill(dx, T * p.ld, NAN);
    ssm_scan_args a = scan_args(&p);
    cpu_scan_backward(&a, dy, du, ddt, dx + p.R, dx + p.R + N, dbias, dA, dD, scratch, partial, threads);
    double e[7] = {rel_f_d(du, g.du, TE), rel_f_d(ddt, g.ddt, TE), rel_cols(dx + p.R, p.ld, g.dB, T, N),
                   rel_cols(dx + p.R + N, p.ld, g.dC, T, N), rel_f_d(dbias, g.dbias, E),
                   rel_f_d(dA, g.dA_log, (size_t)E * N), rel_f_d(dD, g.dD, E)};
    int bad = 0;
    for (int k = 0; k < 7; k++) bad += !(e[k] < 1e-4);
    /* the dt columns of x_dbl are not touched */
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < p.R; j++) bad += !isnan(dx[t * p.ld + j]);
    for (size_t t = 0; t < T; t++) bad += !isnan(dx[t * p.ld + p.ld - 1]);
    printf("backward B %d L %4d E %2d N %2d %-4s threads %d rel: du %.1e ddt %.1e dB %.1e dC %.1e "
           "d_dt_bias %.1e dA_log %.1e dD %.1e%s\n", B, L, E, N, wide ? "wide" : "init", threads,
           e[0], e[1], e[2], e[3], e[4], e[5], e[6], bad ? "  FAIL" : "");
    free(dy), free(du), free(ddt), free(dx), free(dbias), free(dA), free(dD), free(scratch), free(partial);
    ref_grads_free(&g);
    free_problem(&p);
    return bad;
}

static void test_backward_against_reference(void **st) {
    (void)st;
    int bad = 0, th = omp_get_max_threads();
    bad += check_backward(1, 1, 13, 16, 1, th, 60);
    bad += check_backward(2, 2, 13, 1, 1, th, 61);
    bad += check_backward(3, 1000, 13, 16, 0, th, 62);
    bad += check_backward(3, 1000, 13, 16, 1, th, 63);
    bad += check_backward(2, 37, 40, 16, 1, th, 64);
    bad += check_backward(2, 37, 40, 16, 1, 1, 64);
    bad += check_backward(2, 37, 40, 16, 0, 3, 65);
    assert_int_equal(bad, 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_against_reference),
        cmocka_unit_test(test_split_equals_whole),
        cmocka_unit_test(test_threshold_and_underflow),
        cmocka_unit_test(test_reference_gradient),
        cmocka_unit_test(test_backward_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
