/* test_ops_grad.c: every CPU op's backward against finite differences.
 *
 * For an op with output out and an input x, the objective is J(x) = sum(out * w) with a fixed
 * random w, summed in double from the op's fp32 output; the op's backward given d out = w
 * yields the analytic gradient g. Along a random unit direction v of each input tensor, and
 * along three single coordinates, the derivative of J is estimated by Richardson's
 * extrapolation of two central differences (steps 1e-2 and 5e-3; truncation O(eps^4), so
 * what is left is fp32 rounding), and must match g . v within
 *     1e-3 |g . v|                                  fp32 error of g
 *   + 8 * 2^-24 * || w * S ||_2 * 3 / eps           rounding of the four fp32 forwards
 *   + 1e-5 ||g||                                    fp32 cancellation in one coordinate of g
 * where S is the magnitude of the terms that make up each output (sum |in W| for matmul,
 * |b| + sum |w x| for conv, ...): 8 ulps per output of the size of its terms, independent
 * between outputs. The measured |diff| stays under 7% of that bound (printed per op as
 * "worst |diff| / bound"). The perturbed inputs are the fp32 values x +- eps v as stored
 * and g . v uses the stored difference, so the rounding of the step itself costs nothing.
 * Every random direction must also carry a signal (|g . v| above twice the rounding terms),
 * so that a gradient wrong by 100% can not pass.
 *
 * Besides: the ops that accumulate (matmul dW and beta = 1, embedding, rmsnorm dx/dw, conv
 * dw/db, scan d_dt_bias/dA_log/dD) are run again on prefilled buffers; outputs that are
 * written are poisoned with NaN first; the padding of strided buffers (ld > columns) must
 * stay untouched; the carried-state forms of conv and scan equal running on [prefix | x];
 * cpu_conv_step / cpu_scan_step token by token equal the parallel forward; the scan backward
 * gives the same gradient with 1, 2 and 3 threads and when granted fewer than it asks for. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "testutil.h"

#define U32 (1.0 / 16777216.0) /* 2^-24, the fp32 unit roundoff */
#define SENTINEL 12345.0f      /* padding columns of strided buffers */
#define REL_TOL 1e-3           /* relative tolerance of the directional derivative */
#define NOISE_ULPS 8           /* rounding allowance per output element, in ulps */

/* ---- helpers ----------------------------------------------------------------------------- */

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static float *frand(size_t n, float lo, float hi, uint64_t seed) {
    float *p = falloc(n);
    tu_fill_uniform(p, n, lo, hi, seed);
    return p;
}

static void ffill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static float *fcopy(const float *x, size_t n) {
    float *p = falloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

/* A (rows, ld) buffer: the first cols of every row random, the rest SENTINEL. */
static float *strided_rand(int rows, int cols, int ld, float lo, float hi, uint64_t seed) {
    float *p = falloc((size_t)rows * ld);
    ffill(p, (size_t)rows * ld, SENTINEL);
    float *r = frand((size_t)rows * cols, lo, hi, seed);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) p[(size_t)i * ld + j] = r[(size_t)i * cols + j];
    free(r);
    return p;
}

/* Fill the logical part of a strided buffer with v, leaving the padding alone. */
static void strided_fill(float *p, int rows, int cols, int ld, float v) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) p[(size_t)i * ld + j] = v;
}

/* Number of padding entries (column >= cols) that are not SENTINEL any more. */
static int padding_damage(const float *p, int rows, int cols, int ld) {
    int bad = 0;
    for (int i = 0; i < rows; i++)
        for (int j = cols; j < ld; j++) bad += p[(size_t)i * ld + j] != SENTINEL;
    return bad;
}

/* got == base + add to rounding, over the logical part of a strided buffer. The tolerance is
 * 1e-5 of the largest magnitude involved (a sum of up to a few hundred fp32 terms whose
 * order changes when the accumulator starts from base). */
static int accumulates(const char *what, const float *got, const float *base, const float *add,
                       int rows, int cols, int ld) {
    double scale = 0, worst = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * ld + j;
            scale = fmax(scale, fabs(base[k]) + fabs(add[k]));
        }
    int bad = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * ld + j;
            double d = fabs((double)got[k] - ((double)base[k] + add[k]));
            if (!(d <= 1e-5 * scale)) bad++;
            worst = fmax(worst, isfinite(d) ? d : INFINITY);
        }
    printf("    accumulate %-22s max |got - (prefill + grad)| %.2e (scale %.2e)%s\n", what, worst,
           scale, bad ? "  FAIL" : "");
    return bad;
}

/* Relative max difference of two same-layout strided buffers (logical part). */
static double strided_rel(const float *a, const float *b, int rows, int cols, int ld) {
    double num = 0, den = 0;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * ld + j;
            if (!isfinite(a[k]) || !isfinite(b[k])) return INFINITY;
            num = fmax(num, fabs((double)a[k] - b[k]));
            den = fmax(den, fabs((double)b[k]));
        }
    return num / (den + 1e-30);
}

/* ---- the finite-difference machinery ----------------------------------------------------- */

typedef double (*objective_fn)(void *ctx, double *mag);

typedef struct grad_input {
    const char *name;
    float *x;       /* perturbed in place, restored afterwards */
    const float *g; /* its analytic gradient, same layout */
    int rows, cols, ld;
} grad_input;

static double worst_ratio; /* the largest |fd - an| / bound of the current op */

/* J at x + s v (v over the logical elements); the stored perturbed values go to xs */
static double eval_at(const grad_input *in, objective_fn f, void *ctx, const float *save,
                      const double *v, double s, float *xs, double *mag) {
    size_t n = (size_t)in->rows * in->cols;
    for (size_t i = 0; i < n; i++) {
        xs[i] = (float)(save[i] + s * v[i]);
        in->x[(i / in->cols) * in->ld + i % in->cols] = xs[i];
    }
    return f(ctx, mag);
}

/* One finite difference along v: Richardson's extrapolation of the central differences with
 * steps eps and eps / 2, (4 D(eps / 2) - D(eps)) / 3, whose truncation error is O(eps^4). */
static int fd_along(const char *op, const grad_input *in, objective_fn f, void *ctx, double eps,
                    const double *v, const char *what, int need_signal) {
    size_t n = (size_t)in->rows * in->cols;
    float *save = falloc(n), *xp = falloc(n), *xm = falloc(n);
    for (size_t i = 0; i < n; i++) save[i] = in->x[(i / in->cols) * in->ld + i % in->cols];
    double an[2] = {0, 0}, d[2], mag = 0, gn = 0;
    for (int h = 0; h < 2; h++) {
        double s = h ? eps / 2 : eps, mp, mm;
        double jp = eval_at(in, f, ctx, save, v, s, xp, &mp);
        double jm = eval_at(in, f, ctx, save, v, -s, xm, &mm);
        d[h] = (jp - jm) / (2 * s);
        /* g . v over the stored step (so that its rounding costs nothing) */
        for (size_t i = 0; i < n; i++)
            an[h] += (double)in->g[(i / in->cols) * in->ld + i % in->cols] * ((double)xp[i] - xm[i]);
        an[h] /= 2 * s;
        mag = fmax(mag, fmax(mp, mm));
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = (i / in->cols) * in->ld + i % in->cols;
        in->x[k] = save[i];
        gn += (double)in->g[k] * in->g[k];
    }
    double fd = (4 * d[1] - d[0]) / 3, a = (4 * an[1] - an[0]) / 3;
    /* rounding: up to NOISE_ULPS ulps of each output's magnitude, independent between outputs
     * (mag = || w * |out| ||_2), in the four evaluations: (4 * 2 / eps + 2 / (2 eps)) / 3 */
    double noise = NOISE_ULPS * U32 * mag * 3 / eps;
    double err = fabs(fd - a), bound = REL_TOL * fabs(a) + noise + 1e-5 * sqrt(gn);
    int ok = err <= bound;
    /* a gradient of the wrong size by 100% must be detectable along a random direction */
    int weak = need_signal && !(fabs(a) > 2 * (noise + 1e-5 * sqrt(gn)));
    printf("  %-8s %-10s %-10s analytic % .6e  fd % .6e  |diff| %.2e  bound %.2e%s%s\n", op,
           in->name, what, a, fd, err, bound, ok ? "" : "  FAIL",
           weak ? "  FAIL (gradient too small to test)" : "");
    if (bound > 0 && err / bound > worst_ratio) worst_ratio = err / bound;
    free(save);
    free(xp);
    free(xm);
    return !ok + weak;
}

/* A random unit direction and three single coordinates (first, last, one in between). */
static int fd_check(const char *op, const grad_input *in, objective_fn f, void *ctx, double eps,
                    uint64_t seed, int need_signal) {
    size_t n = (size_t)in->rows * in->cols;
    double *v = calloc(n, sizeof(double));
    float *r = frand(n, -1, 1, seed);
    double norm = 0;
    for (size_t i = 0; i < n; i++) norm += (double)r[i] * r[i];
    for (size_t i = 0; i < n; i++) v[i] = r[i] / sqrt(norm);
    int bad = fd_along(op, in, f, ctx, eps, v, "direction", need_signal);
    size_t coords[3] = {0, n - 1, (size_t)(seed * 2654435761u) % n};
    for (int c = 0; c < 3 && c < (int)n; c++) {
        memset(v, 0, n * sizeof(double));
        v[coords[c]] = 1;
        char what[32];
        snprintf(what, sizeof what, "coord %zu", coords[c]);
        bad += fd_along(op, in, f, ctx, eps, v, what, 0);
    }
    free(v);
    free(r);
    return bad;
}

/* J = sum over the logical part of out (row stride ld_out) of out * w (dense), and
 * *mag = || w * S ||_2, where S (dense, NULL: |out|) is the magnitude of the terms that make up
 * each output, the scale of its rounding error */
static double weighted_sum(const float *out, int ld_out, const float *w, int rows, int cols,
                           const double *S, double *mag) {
    double j = 0, m = 0;
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < cols; c++) {
            double o = out[(size_t)i * ld_out + c], wi = w[(size_t)i * cols + c];
            double si = S ? S[(size_t)i * cols + c] : fabs(o);
            j += o * wi;
            m += (wi * si) * (wi * si);
        }
    *mag = sqrt(m);
    return j;
}

/* ---- matmul ------------------------------------------------------------------------------ */

typedef struct {
    int T, n_in, n_out, ld_in, ld_out;
    float beta;
    float *in, *W, *out, *out0, *w;
    int damage;
} mm_ctx;

static double mm_obj(void *p, double *mag) {
    mm_ctx *c = p;
    memcpy(c->out, c->out0, (size_t)c->T * c->ld_out * sizeof(float));
    cpu_matmul_forward(c->out, c->ld_out, c->beta, c->in, c->ld_in, c->W, c->T, c->n_in, c->n_out);
    c->damage += padding_damage(c->out, c->T, c->n_out, c->ld_out);
    double *S = calloc((size_t)c->T * c->n_out, sizeof(double));
    for (int t = 0; t < c->T; t++)
        for (int o = 0; o < c->n_out; o++) {
            double s = c->beta ? fabs(c->out0[(size_t)t * c->ld_out + o]) : 0;
            for (int k = 0; k < c->n_in; k++)
                s += fabs((double)c->in[(size_t)t * c->ld_in + k] * c->W[(size_t)o * c->n_in + k]);
            S[(size_t)t * c->n_out + o] = s;
        }
    double j = weighted_sum(c->out, c->ld_out, c->w, c->T, c->n_out, S, mag);
    free(S);
    return j;
}

static int check_matmul(int T, int n_in, int n_out, int ld_in, int ld_out, int ld_dout,
                        int ld_din, float beta, uint64_t seed) {
    printf("matmul T %d n_in %d n_out %d ld_in %d ld_out %d ld_dout %d ld_din %d beta %g\n", T,
           n_in, n_out, ld_in, ld_out, ld_dout, ld_din, beta);
    mm_ctx c = {T, n_in, n_out, ld_in, ld_out, beta, NULL, NULL, NULL, NULL, NULL, 0};
    c.in = strided_rand(T, n_in, ld_in, -1, 1, seed);
    c.W = frand((size_t)n_out * n_in, -1, 1, seed + 1);
    c.w = frand((size_t)T * n_out, -1, 1, seed + 2);
    c.out = falloc((size_t)T * ld_out);
    /* beta = 0 must overwrite (NaN in out must not leak); beta = 1 adds to random values */
    c.out0 = strided_rand(T, n_out, ld_out, -1, 1, seed + 3);
    if (beta == 0) strided_fill(c.out0, T, n_out, ld_out, NAN);
    /* d_out = w with its own stride; NaN padding must never be read */
    float *dout = falloc((size_t)T * ld_dout);
    ffill(dout, (size_t)T * ld_dout, NAN);
    for (int t = 0; t < T; t++)
        memcpy(dout + (size_t)t * ld_dout, c.w + (size_t)t * n_out, n_out * sizeof(float));
    float *din = falloc((size_t)T * ld_din), *dW = falloc((size_t)n_out * n_in);
    ffill(din, (size_t)T * ld_din, SENTINEL);
    strided_fill(din, T, n_in, ld_din, NAN); /* beta 0: written, never read */
    ffill(dW, (size_t)n_out * n_in, 0);
    cpu_matmul_backward(din, ld_din, 0.0f, dW, dout, ld_dout, c.in, ld_in, c.W, T, n_in, n_out);
    int bad = padding_damage(din, T, n_in, ld_din);

    worst_ratio = 0;
    /* the input's gradient has row stride ld_din; present it with the input's stride */
    float *gin = falloc((size_t)T * ld_in);
    for (int t = 0; t < T; t++)
        memcpy(gin + (size_t)t * ld_in, din + (size_t)t * ld_din, n_in * sizeof(float));
    grad_input ins[] = {{"in", c.in, gin, T, n_in, ld_in}, {"W", c.W, dW, n_out, n_in, n_in}};
    for (int k = 0; k < 2; k++) bad += fd_check("matmul", &ins[k], mm_obj, &c, 1e-2, seed + 10 + k, 1);
    bad += c.damage;

    /* accumulation: beta = 1 adds d_out . W to d_in, and dW always adds */
    float *din0 = strided_rand(T, n_in, ld_din, -1, 1, seed + 20), *dW0 = frand((size_t)n_out * n_in, -1, 1, seed + 21);
    float *din1 = fcopy(din0, (size_t)T * ld_din), *dW1 = fcopy(dW0, (size_t)n_out * n_in);
    cpu_matmul_backward(din1, ld_din, 1.0f, dW1, dout, ld_dout, c.in, ld_in, c.W, T, n_in, n_out);
    bad += accumulates("matmul d_in (beta 1)", din1, din0, din, T, n_in, ld_din);
    bad += accumulates("matmul dW", dW1, dW0, dW, n_out, n_in, n_in);
    bad += padding_damage(din1, T, n_in, ld_din);
    /* d_in NULL: only dW */
    memcpy(dW1, dW0, (size_t)n_out * n_in * sizeof(float));
    cpu_matmul_backward(NULL, ld_din, 0.0f, dW1, dout, ld_dout, c.in, ld_in, c.W, T, n_in, n_out);
    bad += accumulates("matmul dW (d_in NULL)", dW1, dW0, dW, n_out, n_in, n_in);
    printf("  matmul worst |diff| / bound %.3f\n", worst_ratio);
    free(c.in), free(c.W), free(c.w), free(c.out), free(c.out0), free(dout), free(din), free(dW);
    free(gin), free(din0), free(dW0), free(din1), free(dW1);
    return bad;
}

static void test_matmul(void **st) {
    (void)st;
    int bad = 0;
    bad += check_matmul(14, 5, 7, 9, 11, 8, 6, 0.0f, 100);
    bad += check_matmul(14, 5, 7, 5, 7, 7, 5, 1.0f, 200);  /* dense strides, beta 1 */
    bad += check_matmul(23, 37, 19, 41, 20, 21, 38, 0.0f, 300); /* past BLAS block edges */
    assert_int_equal(bad, 0);
}

/* ---- embedding --------------------------------------------------------------------------- */

typedef struct {
    int T, D;
    const int32_t *tok;
    float *table, *out, *w;
} emb_ctx;

static double emb_obj(void *p, double *mag) {
    emb_ctx *c = p;
    ffill(c->out, (size_t)c->T * c->D, NAN);
    cpu_embedding_forward(c->out, c->tok, c->table, c->T, c->D);
    return weighted_sum(c->out, c->D, c->w, c->T, c->D, NULL, mag);
}

static void test_embedding(void **st) {
    (void)st;
    enum { T = 14, D = 37, V = 9 };
    /* repeated tokens (their gradients add up) and unused rows (gradient zero) */
    int32_t tok[T] = {3, 1, 3, 8, 0, 3, 5, 1, 1, 8, 0, 3, 5, 5};
    emb_ctx c = {T, D, tok, frand((size_t)V * D, -1, 1, 1), falloc((size_t)T * D),
                 frand((size_t)T * D, -1, 1, 2)};
    float *g = falloc((size_t)V * D);
    ffill(g, (size_t)V * D, 0);
    cpu_embedding_backward(g, tok, c.w, T, D);
    worst_ratio = 0;
    grad_input in = {"table", c.table, g, V, D, D};
    int bad = fd_check("embed", &in, emb_obj, &c, 1e-2, 3, 1);
    /* rows 2, 4, 6, 7 are not used: exactly zero */
    for (int j = 0; j < D; j++) bad += g[2 * D + j] != 0 || g[4 * D + j] != 0 || g[7 * D + j] != 0;
    float *g0 = frand((size_t)V * D, -1, 1, 4), *g1 = fcopy(g0, (size_t)V * D);
    cpu_embedding_backward(g1, tok, c.w, T, D);
    bad += accumulates("embedding d_table", g1, g0, g, V, D, D);
    printf("  embed worst |diff| / bound %.3f\n", worst_ratio);
    free(c.table), free(c.out), free(c.w), free(g), free(g0), free(g1);
    assert_int_equal(bad, 0);
}

/* ---- rmsnorm ----------------------------------------------------------------------------- */

typedef struct {
    int T, D;
    float eps;
    float *x, *w, *out, *rstd, *wobj;
} rms_ctx;

static double rms_obj(void *p, double *mag) {
    rms_ctx *c = p;
    ffill(c->out, (size_t)c->T * c->D, NAN);
    ffill(c->rstd, c->T, NAN);
    cpu_rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->T, c->D, c->eps);
    return weighted_sum(c->out, c->D, c->wobj, c->T, c->D, NULL, mag);
}

static int check_rmsnorm(int T, int D, uint64_t seed) {
    printf("rmsnorm T %d D %d\n", T, D);
    rms_ctx c = {T, D, 1e-5f, frand((size_t)T * D, -1, 1, seed), frand(D, 0.5f, 1.5f, seed + 1),
                 falloc((size_t)T * D), falloc(T), frand((size_t)T * D, -1, 1, seed + 2)};
    /* rows of different scales (0.1 .. 3), so that rstd differs from row to row */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) c.x[(size_t)t * D + i] *= 0.1f + 2.9f * t / (T - 1);
    double mag;
    rms_obj(&c, &mag);
    int bad = 0;
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)c.x[(size_t)t * D + i] * c.x[(size_t)t * D + i];
        double r = 1 / sqrt(ss / D + (double)c.eps);
        if (!(fabs(c.rstd[t] - r) <= 1e-6 * r)) bad++, printf("  rstd[%d] %g, expected %g  FAIL\n", t, c.rstd[t], r);
    }
    /* backward ADDS: start from zero for the gradient itself */
    float *dx = falloc((size_t)T * D), *dw = falloc(D);
    ffill(dx, (size_t)T * D, 0);
    ffill(dw, D, 0);
    cpu_rmsnorm_backward(dx, dw, c.wobj, c.x, c.w, c.rstd, T, D);
    worst_ratio = 0;
    grad_input ins[] = {{"x", c.x, dx, T, D, D}, {"w", c.w, dw, 1, D, D}};
    for (int k = 0; k < 2; k++) bad += fd_check("rmsnorm", &ins[k], rms_obj, &c, 1e-2, seed + 10 + k, 1);
    rms_obj(&c, &mag); /* rstd of the unperturbed x again */
    float *dx0 = frand((size_t)T * D, -1, 1, seed + 20), *dw0 = frand(D, -1, 1, seed + 21);
    float *dx1 = fcopy(dx0, (size_t)T * D), *dw1 = fcopy(dw0, D);
    cpu_rmsnorm_backward(dx1, dw1, c.wobj, c.x, c.w, c.rstd, T, D);
    bad += accumulates("rmsnorm dx", dx1, dx0, dx, T, D, D);
    bad += accumulates("rmsnorm dw", dw1, dw0, dw, 1, D, D);
    printf("  rmsnorm worst |diff| / bound %.3f\n", worst_ratio);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.wobj);
    free(dx), free(dw), free(dx0), free(dw0), free(dx1), free(dw1);
    return bad;
}

static void test_rmsnorm(void **st) {
    (void)st;
    int bad = check_rmsnorm(14, 5, 10);
    bad += check_rmsnorm(9, 37, 20); /* dw is split in blocks of 16 columns */
    assert_int_equal(bad, 0);
}

/* ---- conv -------------------------------------------------------------------------------- */

typedef struct {
    int B, L, E, K, ld_x;
    float *x, *w, *b, *u, *wobj;
} conv_ctx;

static double conv_obj(void *p, double *mag) {
    conv_ctx *c = p;
    size_t T = (size_t)c->B * c->L;
    ffill(c->u, T * c->E, NAN);
    cpu_conv_forward(c->u, c->x, c->ld_x, c->w, c->b, NULL, c->B, c->L, c->E, c->K);
    /* S = |u| + |b| + sum_k |w x| (silu' <= 1.1) */
    double *S = calloc(T * c->E, sizeof(double));
    for (int bb = 0; bb < c->B; bb++)
        for (int l = 0; l < c->L; l++)
            for (int e = 0; e < c->E; e++) {
                size_t t = (size_t)bb * c->L + l;
                double s = fabs(c->u[t * c->E + e]) + fabs(c->b[e]);
                for (int k = 0; k < c->K; k++) {
                    int src = l - c->K + 1 + k;
                    if (src >= 0)
                        s += fabs((double)c->w[(size_t)e * c->K + k] * c->x[((size_t)bb * c->L + src) * c->ld_x + e]);
                }
                S[t * c->E + e] = s;
            }
    double j = weighted_sum(c->u, c->E, c->wobj, (int)T, c->E, S, mag);
    free(S);
    return j;
}

static int check_conv(int B, int L, int E, int K, int ld_x, uint64_t seed) {
    printf("conv B %d L %d E %d K %d ld_x %d\n", B, L, E, K, ld_x);
    int T = B * L;
    conv_ctx c = {B, L, E, K, ld_x, strided_rand(T, E, ld_x, -1, 1, seed),
                  frand((size_t)E * K, -1, 1, seed + 1), frand(E, -0.5f, 0.5f, seed + 2),
                  falloc((size_t)T * E), frand((size_t)T * E, -1, 1, seed + 3)};
    float *dx = falloc((size_t)T * ld_x), *dw = falloc((size_t)E * K), *db = falloc(E);
    ffill(dx, (size_t)T * ld_x, SENTINEL);
    strided_fill(dx, T, E, ld_x, NAN); /* written, never read */
    ffill(dw, (size_t)E * K, 0);
    ffill(db, E, 0);
    cpu_conv_backward(dx, dw, db, c.wobj, c.x, ld_x, c.w, c.b, B, L, E, K);
    int bad = padding_damage(dx, T, E, ld_x);
    worst_ratio = 0;
    grad_input ins[] = {{"x", c.x, dx, T, E, ld_x}, {"w", c.w, dw, E, K, K}, {"b", c.b, db, 1, E, E}};
    for (int k = 0; k < 3; k++) bad += fd_check("conv", &ins[k], conv_obj, &c, 1e-2, seed + 10 + k, 1);
    float *dw0 = frand((size_t)E * K, -1, 1, seed + 20), *db0 = frand(E, -1, 1, seed + 21);
    float *dw1 = fcopy(dw0, (size_t)E * K), *db1 = fcopy(db0, E), *dx1 = fcopy(dx, (size_t)T * ld_x);
    strided_fill(dx1, T, E, ld_x, NAN);
    cpu_conv_backward(dx1, dw1, db1, c.wobj, c.x, ld_x, c.w, c.b, B, L, E, K);
    bad += accumulates("conv dw", dw1, dw0, dw, E, K, K);
    bad += accumulates("conv db", db1, db0, db, 1, E, E);
    double e = strided_rel(dx1, dx, T, E, ld_x);
    printf("    conv dx written, not accumulated: rel diff %.2e\n", e);
    bad += !(e == 0);
    printf("  conv worst |diff| / bound %.3f\n", worst_ratio);
    free(c.x), free(c.w), free(c.b), free(c.u), free(c.wobj);
    free(dx), free(dw), free(db), free(dw0), free(db0), free(dw1), free(db1), free(dx1);
    return bad;
}

static void test_conv(void **st) {
    (void)st;
    int bad = check_conv(2, 7, 5, 3, 13, 30);
    bad += check_conv(1, 11, 19, 4, 39, 40); /* two channel blocks of the backward */
    bad += check_conv(3, 2, 6, 4, 6, 50);    /* L < K, dense x */
    assert_int_equal(bad, 0);
}

/* x rows (B, L, ld) of [prefix | x] per sequence: (B, P + L, ld) */
static float *concat_seq(const float *pre, int P, const float *x, int L, int B, int cols, int ld) {
    float *out = falloc((size_t)B * (P + L) * ld);
    ffill(out, (size_t)B * (P + L) * ld, SENTINEL);
    for (int b = 0; b < B; b++) {
        for (int l = 0; l < P; l++)
            memcpy(out + ((size_t)b * (P + L) + l) * ld, pre + ((size_t)b * P + l) * ld, cols * sizeof(float));
        for (int l = 0; l < L; l++)
            memcpy(out + ((size_t)b * (P + L) + P + l) * ld, x + ((size_t)b * L + l) * ld, cols * sizeof(float));
    }
    return out;
}

/* rows [P, P + L) of every sequence of a (B, P + L, cols) dense array */
static float *tail_seq(const float *full, int P, int L, int B, int cols) {
    float *out = falloc((size_t)B * L * cols);
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * L * cols, full + ((size_t)b * (P + L) + P) * cols,
               (size_t)L * cols * sizeof(float));
    return out;
}

/* conv_forward with a carried state = conv_forward over [prefix | x], tail; the state is the
 * last K inputs (oldest first) that cpu_conv_state_update leaves, also when L < K. */
static void test_conv_state(void **st) {
    (void)st;
    int bad = 0;
    const int B = 2, E = 5, K = 4, ld = 13;
    int cases[][2] = {{6, 7}, {1, 7}, {3, 2}, {9, 1}}; /* prefix P, length L */
    for (int ci = 0; ci < 4; ci++) {
        int P = cases[ci][0], L = cases[ci][1];
        float *pre = strided_rand(B * P, E, ld, -1, 1, 60 + ci), *x = strided_rand(B * L, E, ld, -1, 1, 70 + ci);
        float *w = frand((size_t)E * K, -1, 1, 80), *b = frand(E, -0.5f, 0.5f, 81);
        float *full = concat_seq(pre, P, x, L, B, E, ld);
        float *u_full = falloc((size_t)B * (P + L) * E), *u = falloc((size_t)B * L * E);
        ffill(u_full, (size_t)B * (P + L) * E, NAN);
        cpu_conv_forward(u_full, full, ld, w, b, NULL, B, P + L, E, K);
        /* the state after the prefix, from zero (= zero padding) */
        float *state = falloc((size_t)B * E * K);
        ffill(state, (size_t)B * E * K, 0);
        cpu_conv_state_update(state, pre, ld, B, P, E, K);
        for (int bb = 0; bb < B; bb++)
            for (int e = 0; e < E; e++)
                for (int k = 0; k < K; k++) {
                    int l = P - K + k; /* the input it must hold, 0 before the start */
                    float want = l >= 0 ? pre[((size_t)bb * P + l) * ld + e] : 0.0f;
                    bad += state[((size_t)bb * E + e) * K + k] != want;
                }
        ffill(u, (size_t)B * L * E, NAN);
        cpu_conv_forward(u, x, ld, w, b, state, B, L, E, K);
        float *tail = tail_seq(u_full, P, L, B, E);
        double err = tu_rel_err(u, tail, (size_t)B * L * E);
        /* the state after x too: the last K inputs of [prefix | x] */
        cpu_conv_state_update(state, x, ld, B, L, E, K);
        int sbad = 0;
        for (int bb = 0; bb < B; bb++)
            for (int e = 0; e < E; e++)
                for (int k = 0; k < K; k++) {
                    int l = P + L - K + k;
                    float want = l >= 0 ? full[((size_t)bb * (P + L) + l) * ld + e] : 0.0f;
                    sbad += state[((size_t)bb * E + e) * K + k] != want;
                }
        /* step mode from the same state (after the prefix): one token at a time */
        float *s2 = falloc((size_t)B * E * K), *us = falloc((size_t)B * L * E), *ut = falloc((size_t)B * E);
        ffill(s2, (size_t)B * E * K, 0);
        cpu_conv_state_update(s2, pre, ld, B, P, E, K);
        for (int l = 0; l < L; l++) {
            ffill(ut, (size_t)B * E, NAN);
            /* token l of every sequence: rows b * L + l, i.e. stride L * ld */
            cpu_conv_step(ut, s2, x + (size_t)l * ld, L * ld, w, b, B, E, K);
            for (int bb = 0; bb < B; bb++) memcpy(us + ((size_t)bb * L + l) * E, ut + (size_t)bb * E, E * sizeof(float));
        }
        double serr = tu_rel_err(us, tail, (size_t)B * L * E);
        int s2bad = memcmp(s2, state, (size_t)B * E * K * sizeof(float)) != 0;
        printf("conv state P %d L %d: forward(state) vs [prefix|x] rel %.2e; step vs parallel rel "
               "%.2e; state mismatches %d, step state %s\n", P, L, err, serr, sbad, s2bad ? "differs" : "equal");
        bad += !(err < 1e-6) + !(serr < 1e-6) + sbad + s2bad;
        free(pre), free(x), free(w), free(b), free(full), free(u_full), free(u), free(state);
        free(tail), free(s2), free(us), free(ut);
    }
    assert_int_equal(bad, 0);
}

/* ---- scan -------------------------------------------------------------------------------- */

typedef struct {
    int B, L, E, N, R, ld_bc;
    float *u, *dt, *bias, *A_log, *xdbl, *D, *y, *w;
} scan_ctx;

/* the scan's arguments over u, dt (T, E) and xdbl = [dt_in (R) | B (N) | C (N)], rows of ld,
 * with c's parameters */
static ssm_scan_args scan_args(const scan_ctx *c, const float *u, const float *dt,
                               const float *xdbl, int ld, int B, int L) {
    return (ssm_scan_args){.B = B, .L = L, .E = c->E, .N = c->N, .u = u, .dt = dt,
                           .Bm = xdbl + c->R, .Cm = xdbl + c->R + c->N, .ld_bc = ld,
                           .dt_bias = c->bias, .A_log = c->A_log, .D = c->D};
}

static double scan_obj(void *p, double *mag) {
    scan_ctx *c = p;
    size_t T = (size_t)c->B * c->L;
    ffill(c->y, T * c->E, NAN);
    ssm_scan_args a = scan_args(c, c->u, c->dt, c->xdbl, c->ld_bc, c->B, c->L);
    cpu_scan_forward(&a, c->y, NULL);
    /* S = |y| + |D u| + sum_n |C_n| (the states are O(1) at these inputs) */
    double *S = calloc(T * c->E, sizeof(double));
    for (size_t t = 0; t < T; t++) {
        double cs = 0;
        for (int n = 0; n < c->N; n++) cs += fabs(c->xdbl[t * c->ld_bc + c->R + c->N + n]);
        for (int e = 0; e < c->E; e++)
            S[t * c->E + e] = fabs(c->y[t * c->E + e]) + fabs((double)c->D[e] * c->u[t * c->E + e]) + cs;
    }
    double j = weighted_sum(c->y, c->E, c->w, (int)T, c->E, S, mag);
    free(S);
    return j;
}

/* The scan's inputs at a scale where every gradient matters: dt + dt_bias in [-1, 1], so
 * delta = softplus(.) in 0.31 .. 1.31, A_log in [-1, 1] (A in -2.7 .. -0.37). */
static scan_ctx scan_make(int B, int L, int E, int N, int R, int pad, uint64_t seed) {
    size_t T = (size_t)B * L;
    scan_ctx c = {B, L, E, N, R, R + 2 * N + pad, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    c.u = frand(T * E, -1, 1, seed);
    c.dt = frand(T * E, -0.6f, 0.6f, seed + 1);
    c.bias = frand(E, -0.4f, 0.4f, seed + 2);
    c.A_log = frand((size_t)E * N, -1, 1, seed + 3);
    c.xdbl = strided_rand((int)T, R + 2 * N, c.ld_bc, -1, 1, seed + 4);
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < R; j++) c.xdbl[t * c.ld_bc + j] = SENTINEL; /* the dt columns */
    c.D = frand(E, 0.5f, 1.5f, seed + 5);
    c.y = falloc(T * E);
    c.w = frand(T * E, -1, 1, seed + 6);
    return c;
}

static void scan_free(scan_ctx *c) {
    free(c->u), free(c->dt), free(c->bias), free(c->A_log), free(c->xdbl), free(c->D), free(c->y), free(c->w);
}

typedef struct {
    float *du, *ddt, *dx, *dbias, *dA, *dD; /* dx: (T, ld_bc), dB at R, dC at R + N */
} scan_grads;

static scan_grads scan_grads_make(const scan_ctx *c, uint64_t prefill_seed) {
    size_t T = (size_t)c->B * c->L;
    scan_grads g = {falloc(T * c->E), falloc(T * c->E), falloc(T * c->ld_bc), falloc(c->E),
                    falloc((size_t)c->E * c->N), falloc(c->E)};
    ffill(g.du, T * c->E, NAN);
    ffill(g.ddt, T * c->E, NAN);
    ffill(g.dx, T * c->ld_bc, SENTINEL);
    for (size_t t = 0; t < T; t++)
        for (int n = 0; n < 2 * c->N; n++) g.dx[t * c->ld_bc + c->R + n] = NAN;
    if (prefill_seed) {
        tu_fill_uniform(g.dbias, c->E, -1, 1, prefill_seed);
        tu_fill_uniform(g.dA, (size_t)c->E * c->N, -1, 1, prefill_seed + 1);
        tu_fill_uniform(g.dD, c->E, -1, 1, prefill_seed + 2);
    } else {
        ffill(g.dbias, c->E, 0);
        ffill(g.dA, (size_t)c->E * c->N, 0);
        ffill(g.dD, c->E, 0);
    }
    return g;
}

static void scan_grads_free(scan_grads *g) {
    free(g->du), free(g->ddt), free(g->dx), free(g->dbias), free(g->dA), free(g->dD);
}

static void scan_bwd(const scan_ctx *c, scan_grads *g, int threads) {
    size_t T = (size_t)c->B * c->L;
    size_t ns = (size_t)threads * CPU_SCAN_SCRATCH(c->L, c->N), np = (size_t)threads * T * 2 * c->N;
    float *scratch = falloc(ns), *partial = falloc(np);
    ffill(scratch, ns, NAN); /* must be written before it is read */
    ffill(partial, np, NAN);
    ssm_scan_args a = scan_args(c, c->u, c->dt, c->xdbl, c->ld_bc, c->B, c->L);
    cpu_scan_backward(&a, c->w, g->du, g->ddt, g->dx + c->R, g->dx + c->R + c->N, g->dbias, g->dA,
                      g->dD, scratch, partial, threads);
    free(scratch);
    free(partial);
}

static int check_scan(int B, int L, int E, int N, int R, int pad, uint64_t seed) {
    scan_ctx c = scan_make(B, L, E, N, R, pad, seed);
    int T = B * L;
    printf("scan B %d L %d E %d N %d ld_bc %d\n", B, L, E, N, c.ld_bc);
    int threads = omp_get_max_threads();
    scan_grads g = scan_grads_make(&c, 0);
    scan_bwd(&c, &g, threads);
    int bad = padding_damage(g.dx, T, c.R + 2 * c.N, c.ld_bc);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < c.R; j++) bad += g.dx[(size_t)t * c.ld_bc + j] != SENTINEL;
    worst_ratio = 0;
    grad_input ins[] = {
        {"u", c.u, g.du, T, E, E},
        {"dt", c.dt, g.ddt, T, E, E},
        {"dt_bias", c.bias, g.dbias, 1, E, E},
        {"A_log", c.A_log, g.dA, E, N, N},
        {"B", c.xdbl + R, g.dx + R, T, N, c.ld_bc},
        {"C", c.xdbl + R + N, g.dx + R + N, T, N, c.ld_bc},
        {"D", c.D, g.dD, 1, E, E},
    };
    /* with L = 1 the state starts at zero, so A never matters: its gradient is exactly 0 */
    for (int k = 0; k < 7; k++)
        bad += fd_check("scan", &ins[k], scan_obj, &c, 1e-2, seed + 10 + k, !(L == 1 && k == 3));
    if (L == 1)
        for (int i = 0; i < E * N; i++) bad += g.dA[i] != 0.0f;
    /* accumulation into d_dt_bias, dA_log, dD; du, ddt, dB, dC written */
    scan_grads g1 = scan_grads_make(&c, seed + 20), g0 = scan_grads_make(&c, seed + 20);
    scan_bwd(&c, &g1, threads);
    bad += accumulates("scan d_dt_bias", g1.dbias, g0.dbias, g.dbias, 1, E, E);
    bad += accumulates("scan dA_log", g1.dA, g0.dA, g.dA, E, N, N);
    bad += accumulates("scan dD", g1.dD, g0.dD, g.dD, 1, E, E);
    /* any number of threads gives the same gradient (to the order of the dB, dC sums) */
    for (int th = 1; th <= 3; th += 2) {
        scan_grads gt = scan_grads_make(&c, 0);
        scan_bwd(&c, &gt, th);
        double e = fmax(fmax(strided_rel(gt.du, g.du, T, E, E), strided_rel(gt.ddt, g.ddt, T, E, E)),
                        fmax(strided_rel(gt.dx + R, g.dx + R, T, 2 * N, c.ld_bc),
                             fmax(strided_rel(gt.dA, g.dA, E, N, N),
                                  fmax(strided_rel(gt.dbias, g.dbias, 1, E, E), strided_rel(gt.dD, g.dD, 1, E, E)))));
        printf("    scan backward with %d threads vs %d: max rel diff %.2e\n", th, threads, e);
        bad += !(e < 1e-5);
        scan_grads_free(&gt);
    }
    /* called from inside a caller's parallel region, the backward asks for 2 threads and is
     * granted 1: the partial sums of the thread that never ran must not be read */
    {
        scan_grads gt = scan_grads_make(&c, 0);
        int levels = omp_get_max_active_levels();
        omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
#pragma omp single
        scan_bwd(&c, &gt, 2);
        omp_set_max_active_levels(levels);
        double e = fmax(strided_rel(gt.dx + R, g.dx + R, T, 2 * N, c.ld_bc), strided_rel(gt.du, g.du, T, E, E));
        printf("    scan backward granted fewer threads than asked: max rel diff %.2e\n", e);
        bad += !(e < 1e-5);
        scan_grads_free(&gt);
    }
    printf("  scan worst |diff| / bound %.3f\n", worst_ratio);
    scan_grads_free(&g), scan_grads_free(&g0), scan_grads_free(&g1);
    scan_free(&c);
    return bad;
}

static void test_scan_grad(void **st) {
    (void)st;
    int bad = check_scan(2, 7, 5, 3, 2, 1, 90);
    bad += check_scan(1, 13, 19, 4, 1, 2, 91); /* two channel blocks */
    bad += check_scan(3, 1, 3, 1, 0, 0, 92);   /* L = 1, N = 1, dense B | C */
    assert_int_equal(bad, 0);
}

/* scan_forward with a carried state = scan over [prefix | x], tail; cpu_scan_step token by
 * token from the same state = the parallel forward, final states included. */
static void test_scan_state_and_step(void **st) {
    (void)st;
    int bad = 0;
    const int B = 2, E = 5, N = 3, R = 2;
    int cases[][2] = {{6, 7}, {1, 9}, {4, 1}};
    for (int ci = 0; ci < 3; ci++) {
        int P = cases[ci][0], L = cases[ci][1], S = P + L;
        scan_ctx f = scan_make(B, S, E, N, R, 1, 300 + ci); /* the whole [prefix | x] */
        int ld = f.ld_bc;
        /* split every input into the prefix and x parts */
        float *pu = falloc((size_t)B * P * E), *pdt = falloc((size_t)B * P * E), *px = falloc((size_t)B * P * ld);
        float *xu = falloc((size_t)B * L * E), *xdt = falloc((size_t)B * L * E), *xx = falloc((size_t)B * L * ld);
        for (int b = 0; b < B; b++) {
            memcpy(pu + (size_t)b * P * E, f.u + (size_t)b * S * E, (size_t)P * E * sizeof(float));
            memcpy(pdt + (size_t)b * P * E, f.dt + (size_t)b * S * E, (size_t)P * E * sizeof(float));
            memcpy(px + (size_t)b * P * ld, f.xdbl + (size_t)b * S * ld, (size_t)P * ld * sizeof(float));
            memcpy(xu + (size_t)b * L * E, f.u + ((size_t)b * S + P) * E, (size_t)L * E * sizeof(float));
            memcpy(xdt + (size_t)b * L * E, f.dt + ((size_t)b * S + P) * E, (size_t)L * E * sizeof(float));
            memcpy(xx + (size_t)b * L * ld, f.xdbl + ((size_t)b * S + P) * ld, (size_t)L * ld * sizeof(float));
        }
        size_t ns = (size_t)B * E * N;
        float *s_full = falloc(ns), *s = falloc(ns), *y_full = falloc((size_t)B * S * E), *y = falloc((size_t)B * L * E);
        ffill(s_full, ns, 0);
        ffill(y_full, (size_t)B * S * E, NAN);
        ssm_scan_args a_full = scan_args(&f, f.u, f.dt, f.xdbl, ld, B, S);
        cpu_scan_forward(&a_full, y_full, s_full);
        /* NULL state = zero state */
        float *y_null = falloc((size_t)B * S * E);
        ffill(y_null, (size_t)B * S * E, NAN);
        cpu_scan_forward(&a_full, y_null, NULL);
        bad += memcmp(y_null, y_full, (size_t)B * S * E * sizeof(float)) != 0;
        /* prefix from zero, then x from the carried state */
        float *yp = falloc((size_t)B * P * E);
        ffill(s, ns, 0);
        ssm_scan_args a_prefix = scan_args(&f, pu, pdt, px, ld, B, P);
        cpu_scan_forward(&a_prefix, yp, s);
        float *s_after_prefix = fcopy(s, ns);
        ffill(y, (size_t)B * L * E, NAN);
        ssm_scan_args a_x = scan_args(&f, xu, xdt, xx, ld, B, L);
        cpu_scan_forward(&a_x, y, s);
        float *tail = tail_seq(y_full, P, L, B, E);
        double ey = tu_rel_err(y, tail, (size_t)B * L * E), es = tu_rel_err(s, s_full, ns);
        /* step mode from the state after the prefix */
        float *s2 = s_after_prefix, *ys = falloc((size_t)B * L * E);
        float *ut = falloc((size_t)B * E), *dtt = falloc((size_t)B * E), *yt = falloc((size_t)B * E);
        for (int l = 0; l < L; l++) {
            for (int b = 0; b < B; b++) {
                memcpy(ut + (size_t)b * E, xu + ((size_t)b * L + l) * E, E * sizeof(float));
                memcpy(dtt + (size_t)b * E, xdt + ((size_t)b * L + l) * E, E * sizeof(float));
            }
            ffill(yt, (size_t)B * E, NAN);
            /* B, C of token l of every sequence: rows b * L + l, stride L * ld */
            ssm_scan_args a_step = scan_args(&f, ut, dtt, xx + (size_t)l * ld, L * ld, B, 1);
            cpu_scan_step(&a_step, yt, s2);
            for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * L + l) * E, yt + (size_t)b * E, E * sizeof(float));
        }
        double sy = tu_rel_err(ys, tail, (size_t)B * L * E), ss = tu_rel_err(s2, s_full, ns);
        printf("scan state P %d L %d: forward(state) vs [prefix|x] rel y %.2e state %.2e; step vs "
               "parallel rel y %.2e state %.2e\n", P, L, ey, es, sy, ss);
        bad += !(ey < 1e-6) + !(es < 1e-6) + !(sy < 1e-5) + !(ss < 1e-5);
        free(pu), free(pdt), free(px), free(xu), free(xdt), free(xx), free(s_full), free(s);
        free(y_full), free(y), free(y_null), free(yp), free(tail), free(s2), free(ys), free(ut), free(dtt), free(yt);
        scan_free(&f);
    }
    assert_int_equal(bad, 0);
}

/* ---- gate -------------------------------------------------------------------------------- */

typedef struct {
    int T, E, ld_z;
    float *y, *z, *out, *w;
} gate_ctx;

static double gate_obj(void *p, double *mag) {
    gate_ctx *c = p;
    ffill(c->out, (size_t)c->T * c->E, NAN);
    cpu_gate_forward(c->out, c->y, c->z, c->ld_z, c->T, c->E);
    return weighted_sum(c->out, c->E, c->w, c->T, c->E, NULL, mag);
}

static void test_gate(void **st) {
    (void)st;
    enum { T = 14, E = 5, LDZ = 11 };
    gate_ctx c = {T, E, LDZ, frand(T * E, -1, 1, 1), strided_rand(T, E, LDZ, -3, 3, 2),
                  falloc(T * E), frand(T * E, -1, 1, 3)};
    float *dy = falloc(T * E), *dz = falloc(T * LDZ);
    ffill(dy, T * E, NAN);
    ffill(dz, T * LDZ, SENTINEL);
    strided_fill(dz, T, E, LDZ, NAN);
    cpu_gate_backward(dy, dz, LDZ, c.w, c.y, c.z, T, E);
    int bad = padding_damage(dz, T, E, LDZ);
    worst_ratio = 0;
    grad_input ins[] = {{"y", c.y, dy, T, E, E}, {"z", c.z, dz, T, E, LDZ}};
    for (int k = 0; k < 2; k++) bad += fd_check("gate", &ins[k], gate_obj, &c, 1e-2, 10 + k, 1);
    printf("  gate worst |diff| / bound %.3f\n", worst_ratio);
    free(c.y), free(c.z), free(c.out), free(c.w), free(dy), free(dz);
    assert_int_equal(bad, 0);
}

/* ---- cross-entropy ----------------------------------------------------------------------- */

typedef struct {
    int T, V;
    const int32_t *tgt;
    float *logits;
    double scale; /* the objective is scale * mean loss */
    int64_t count;
} ce_ctx;

static double ce_obj(void *p, double *mag) {
    ce_ctx *c = p;
    double l = cpu_cross_entropy_forward(c->logits, c->tgt, c->T, c->V, &c->count);
    *mag = fabs(c->scale * l);
    return c->scale * l;
}

/* mean -log softmax[target] over the scored rows, in double from the fp32 logits */
static double ce_ref(const float *logits, const int32_t *tgt, int T, int V, int64_t *count) {
    double total = 0;
    int64_t n = 0;
    for (int t = 0; t < T; t++) {
        if (tgt[t] < 0) continue;
        const float *r = logits + (size_t)t * V;
        double mx = r[0], s = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, r[v]);
        for (int v = 0; v < V; v++) s += exp(r[v] - mx);
        total += log(s) + mx - r[tgt[t]];
        n++;
    }
    *count = n;
    return n ? total / n : 0;
}

static void test_cross_entropy(void **st) {
    (void)st;
    enum { T = 13, V = 11 };
    int32_t tgt[T] = {3, -1, 0, 10, 7, 7, -1, 2, 5, 10, 1, -1, 4};
    ce_ctx c = {T, V, tgt, frand(T * V, -3, 3, 1), 1.7, 0};
    int bad = 0;
    int64_t cnt;
    double ref = ce_ref(c.logits, tgt, T, V, &cnt), mag;
    double l = ce_obj(&c, &mag) / c.scale;
    printf("cross_entropy: loss %.12f, double reference %.12f, count %lld (expected %lld)\n", l, ref,
           (long long)c.count, (long long)cnt);
    bad += !(fabs(l - ref) <= 1e-12 * ref) + (c.count != cnt) + (cnt != 10);
    float *g = fcopy(c.logits, T * V);
    cpu_cross_entropy_backward(g, tgt, T, V, (float)(c.scale / (double)cnt));
    for (int t = 0; t < T; t++) {
        double rs = 0;
        for (int v = 0; v < V; v++) {
            rs += g[t * V + v];
            if (tgt[t] < 0) bad += g[t * V + v] != 0.0f; /* unscored rows: exactly zero */
        }
        bad += !(fabs(rs) < 1e-6); /* softmax - onehot sums to zero */
    }
    worst_ratio = 0;
    grad_input in = {"logits", c.logits, g, T, V, V};
    bad += fd_check("xent", &in, ce_obj, &c, 1e-2, 5, 1);
    printf("  xent worst |diff| / bound %.3f\n", worst_ratio);
    /* large logits: no overflow, the same loss as the reference on those fp32 values */
    float *big = fcopy(c.logits, T * V);
    for (int i = 0; i < T * V; i++) big[i] = big[i] * 30 + 1000;
    double lb = cpu_cross_entropy_forward(big, tgt, T, V, &c.count), rb = ce_ref(big, tgt, T, V, &cnt);
    cpu_cross_entropy_backward(big, tgt, T, V, 1.0f / cnt);
    int finite = 1;
    for (int i = 0; i < T * V; i++) finite &= isfinite(big[i]);
    printf("  logits * 30 + 1000: loss %.9f reference %.9f, gradient finite %d\n", lb, rb, finite);
    bad += !(fabs(lb - rb) <= 1e-9 * rb) + !finite;
    /* nothing scored: loss 0, count 0, gradient zero */
    int32_t none[T];
    for (int t = 0; t < T; t++) none[t] = -1;
    double l0 = cpu_cross_entropy_forward(c.logits, none, T, V, &c.count);
    bad += l0 != 0 || c.count != 0;
    free(c.logits), free(g), free(big);
    assert_int_equal(bad, 0);
}

/* cpu_matmul_forward_exact: each row bit-identical whatever the batch and the thread count
 * (B sequences at once against each alone, 1 and 2 threads), for lengths under a tile, of
 * whole tiles and with a partial last tile, narrow and wide outputs,
 * beta 0 and 1; and within fp32 rounding of the plain product. */
static void test_matmul_exact(void **unused) {
    (void)unused;
    const int lengths[] = {5, 13, 64, 256, 263, 300, 517}, B = 3;
    const int widths[][2] = {{37, 29}, {19, 4103}}; /* (n_in, n_out) */
    int bad = 0, threads = omp_get_max_threads();
    for (size_t li = 0; li < 2 * sizeof lengths / sizeof *lengths; li++) {
        int L = lengths[li / 2], n_in = widths[li % 2][0], n_out = widths[li % 2][1];
        size_t T = (size_t)B * L;
        float *in = malloc(T * n_in * sizeof(float)), *W = malloc((size_t)n_out * n_in * sizeof(float));
        float *init = malloc(T * n_out * sizeof(float)), *all = malloc(T * n_out * sizeof(float));
        float *one = malloc(T * n_out * sizeof(float)), *plain = malloc(T * n_out * sizeof(float));
        float *scratch = malloc(cpu_matmul_exact_scratch(L, n_in, n_out, 2) * sizeof(float));
        for (size_t i = 0; i < T * n_in; i++) in[i] = (float)(((i * 2654435761u) >> 8) % 2001) / 1000.0f - 1.0f;
        for (int i = 0; i < n_out * n_in; i++) W[i] = (float)(((i * 40503u) >> 3) % 1999) / 999.0f - 1.0f;
        for (size_t i = 0; i < T * n_out; i++) init[i] = (float)(i % 7) - 3.0f;
        for (int beta = 0; beta <= 1; beta++) {
            memcpy(all, init, T * n_out * sizeof(float));
            memcpy(one, init, T * n_out * sizeof(float));
            memcpy(plain, init, T * n_out * sizeof(float));
            omp_set_num_threads(2);
            cpu_matmul_forward_exact(all, n_out, (float)beta, in, n_in, W, B, L, n_in, n_out, scratch);
            omp_set_num_threads(1);
            for (int b = 0; b < B; b++)
                cpu_matmul_forward_exact(one + (size_t)b * L * n_out, n_out, (float)beta,
                                         in + (size_t)b * L * n_in, n_in, W, 1, L, n_in, n_out, scratch);
            cpu_matmul_forward(plain, n_out, (float)beta, in, n_in, W, (int)T, n_in, n_out);
            int same = memcmp(all, one, T * n_out * sizeof(float)) == 0;
            double worst = 0;
            for (size_t i = 0; i < T * n_out; i++) {
                double d = fabs((double)all[i] - plain[i]);
                worst = d > worst ? d : worst;
            }
            /* |terms| <= n_in, so 1e-5 n_in is a few ulps of the sum */
            int close = worst <= 1e-5 * n_in;
            printf("  matmul exact L %d n_out %d beta %d: batched == alone %d, vs plain %.1e\n", L,
                   n_out, beta, same, worst);
            bad += !same + !close;
        }
        free(in), free(W), free(init), free(all), free(one), free(plain), free(scratch);
    }
    omp_set_num_threads(threads);
    assert_int_equal(bad, 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the report in order with cmocka's */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),        cmocka_unit_test(test_matmul_exact),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_rmsnorm),       cmocka_unit_test(test_conv),
        cmocka_unit_test(test_conv_state),    cmocka_unit_test(test_scan_grad),
        cmocka_unit_test(test_scan_state_and_step), cmocka_unit_test(test_gate),
        cmocka_unit_test(test_cross_entropy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
