/* test_ssd.c: the Mamba-2 SSD op (libssm/cpu/ssd.c) and the gated RMSNorm (gated_norm.c).
 *
 * The reference is a plain sequential loop in double precision, written here straight from the
 * equations of ssd.h:
 *   dt = clamp(softplus(dt_raw + dt_bias), dt_min, dt_max) (softplus(v) = v above 20);  A = -exp(A_log)
 *   S_t = exp(dt A) S_{t-1} + dt x_t B_t^T (per head, B of the head's group);  y_t = S_t C_t + D x_t
 * (a) the chunked forward and the recurrence against it and against each other: L not a multiple
 *     of the chunk, L below the chunk, L = 1, G = 1, 2 and G = H, headdim 8, 16, 64, with and
 *     without an initial state (final states compared), dt_limit default and one that clamps,
 *     and strongly decaying heads (the segment sums far below exp's range);
 * (b) the backward against central differences (double, step 1e-5) of the double reference in
 *     every coordinate of x, B, C, dt, dt_bias, A_log, D, with positions where dt is clamped
 *     (their gradient exactly 0); d_dt_bias, dA_log, dD accumulate; outputs poisoned with NaN
 *     first, the padding of strided buffers untouched;
 * (c) L calls of cpu_ssd_step equal one forward with state; two windows with the carried state
 *     equal one pass;
 * (d) forwards, backward and the gated norm bitwise identical with 1, 2 and 3 threads (and
 *     when the runtime grants fewer than asked);
 * (e) the gated norm forward against double, its backward against central differences, G = 1, 2.
 *
 * Tolerances (relative norm errors, fp32 against double), as test_scan.c: forward 1e-5,
 * backward 1e-4. The fp32 recurrence rounds each step (a few ulps); the state remembers
 * ~1 / (dt |A|) steps, so its error is a random walk of that many steps: at the smallest decay
 * here (dt ~ 1e-3, A = -1) sqrt(1000) * 2 ulp ~ 4e-6. The chunked form sums a chunk's
 * contributions in products of up to chunk terms instead (the same size of error). The
 * backward's sums over B * L positions (dA_log, d_dt_bias, dD) add another such factor, hence
 * 1e-4. The measured errors are printed. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "gated_norm.h"
#include "ssd.h"
#include "testutil.h"

#define SENTINEL 12345.0f /* padding columns of strided buffers */
#define FWD_TOL 1e-5
#define BWD_TOL 1e-4

static float *falloc(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    assert_non_null(p);
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

/* ---- one problem ------------------------------------------------------------------------- */

/* xbc (T, ld_x) = [x (I) | B (G N) | C (G N) | pad], dt (T, ld_dt) = [dt (H) | pad] */
typedef struct {
    int B, L, H, P, G, N, chunk, I, ld_x, ld_dt, ld_y;
    float dt_min, dt_max;
    float *xbc, *dt, *bias, *A_log, *D;
} problem;

enum { INIT, WIDE, DECAY }; /* regimes of dt and A */

static size_t rows(const problem *p) { return (size_t)p->B * p->L; }

/* INIT: the model's initial values (dt_bias = softplus^-1 of dt log-uniform in [1e-3, 0.1],
 * A_log = log(uniform 1 .. 16), raw dt small); WIDE: dt_raw + dt_bias in [-1, 1] (dt 0.3 .. 1.3),
 * A_log in [-1, 1]; DECAY: WIDE with A_log in [1, 3] (a = dt A down to -26 a step: a chunk's
 * segment sums reach -1000s, the decays underflow). lo, hi: dt_limit. */
static problem make_problem(int B, int L, int H, int P, int G, int N, int chunk, int regime,
                            float lo, float hi, uint64_t seed) {
    problem p = {B, L, H, P, G, N, chunk, H * P, 0, H + 2, H * P + 3, lo, hi, NULL, NULL, NULL, NULL, NULL};
    p.ld_x = p.I + 2 * G * N + 5;
    size_t T = rows(&p);
    p.xbc = falloc(T * p.ld_x);
    p.dt = falloc(T * p.ld_dt);
    p.bias = falloc(H);
    p.A_log = falloc(H);
    p.D = falloc(H);
    tu_fill_uniform(p.xbc, T * p.ld_x, -1, 1, seed);
    for (size_t t = 0; t < T; t++)
        for (int j = p.I + 2 * G * N; j < p.ld_x; j++) p.xbc[t * p.ld_x + j] = SENTINEL;
    tu_fill_uniform(p.dt, T * p.ld_dt, -0.6f, 0.6f, seed + 1);
    tu_fill_uniform(p.D, H, 0.5f, 1.5f, seed + 2);
    if (regime == INIT) {
        float *r = falloc(H);
        tu_fill_uniform(r, H, 0, 1, seed + 3);
        for (int h = 0; h < H; h++) {
            double d = exp(log(1e-3) + r[h] * (log(1e-1) - log(1e-3)));
            p.bias[h] = (float)(d + log(-expm1(-d))); /* softplus^-1(d) */
        }
        tu_fill_uniform(r, H, 1, 16, seed + 4);
        for (int h = 0; h < H; h++) p.A_log[h] = logf(r[h]);
        for (size_t i = 0; i < T * p.ld_dt; i++) p.dt[i] *= 0.5f;
        free(r);
    } else {
        tu_fill_uniform(p.bias, H, -0.4f, 0.4f, seed + 3);
        tu_fill_uniform(p.A_log, H, regime == DECAY ? 1.0f : -1.0f, regime == DECAY ? 3.0f : 1.0f, seed + 4);
    }
    /* keep softplus(dt + bias) at least 1e-3 away from the clamp's edges, so that a central
     * difference of step 1e-5 never crosses one */
    for (size_t t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float *d = &p.dt[t * p.ld_dt + h];
            for (int k = 0; k < 100; k++) {
                double s = log1p(exp((double)*d + p.bias[h]));
                if (!(lo > 0 && fabs(s - lo) <= 1e-3) && !(fabs(s - hi) <= 1e-3)) break;
                *d += 3e-3f;
            }
        }
    for (size_t t = 0; t < T; t++)
        for (int j = H; j < p.ld_dt; j++) p.dt[t * p.ld_dt + j] = SENTINEL;
    return p;
}

static void free_problem(problem *p) { free(p->xbc), free(p->dt), free(p->bias), free(p->A_log), free(p->D); }

static cpu_ssd_args args_of(const problem *p, float *y, float *state, int threads) {
    cpu_ssd_args a;
    memset(&a, 0, sizeof a);
    a.B = p->B, a.L = p->L, a.H = p->H, a.P = p->P, a.G = p->G, a.N = p->N, a.chunk = p->chunk;
    a.dt_min = p->dt_min, a.dt_max = p->dt_max;
    a.x = p->xbc, a.Bm = p->xbc + p->I, a.Cm = p->xbc + p->I + p->G * p->N, a.ld_x = p->ld_x;
    a.dt = p->dt, a.ld_dt = p->ld_dt, a.dt_bias = p->bias, a.A_log = p->A_log, a.Dskip = p->D;
    a.y = y, a.ld_y = p->ld_y, a.state = state, a.threads = threads;
    return a;
}

/* Scratch of the right size, poisoned with NaN (it must be written before it is read). */
static void give_scratch(cpu_ssd_args *a, int threads, int backward) {
    a->scratch_floats = cpu_ssd_scratch_floats(a, threads, backward);
    a->scratch = falloc(a->scratch_floats);
    ffill(a->scratch, a->scratch_floats, NAN);
}

/* which: 0 the recurrence, 1 the chunked form, 2 cpu_ssd_forward. y (T, ld_y) poisoned first,
 * its padding SENTINEL. */
static void op_forward(const problem *p, int which, float *y, float *state, int threads) {
    size_t T = rows(p);
    ffill(y, T * p->ld_y, SENTINEL);
    for (size_t t = 0; t < T; t++) ffill(y + t * p->ld_y, p->I, NAN);
    cpu_ssd_args a = args_of(p, y, state, threads);
    give_scratch(&a, threads, 0);
    if (which == 0) cpu_ssd_forward_recurrent(&a);
    else if (which == 1) cpu_ssd_forward_chunked(&a);
    else cpu_ssd_forward(&a);
    free(a.scratch);
}

static int padding_damage(const float *buf, size_t T, int cols, int ld) {
    int bad = 0;
    for (size_t t = 0; t < T; t++)
        for (int j = cols; j < ld; j++) bad += buf[t * ld + j] != SENTINEL;
    return bad;
}

/* ---- the double reference ---------------------------------------------------------------- */

/* the inputs in double, dense: x (T, I), Bm, Cm (T, G N), dt (T, H) */
typedef struct {
    int B, L, H, P, G, N, I;
    double lo, hi;
    double *x, *Bm, *Cm, *dt, *bias, *A_log, *D;
} dprob;

static dprob to_double(const problem *p) {
    size_t T = rows(p), GN = (size_t)p->G * p->N;
    dprob q = {p->B, p->L, p->H, p->P, p->G, p->N, p->I, p->dt_min, p->dt_max,
               dalloc(T * p->I), dalloc(T * GN), dalloc(T * GN), dalloc(T * p->H),
               dalloc(p->H), dalloc(p->H), dalloc(p->H)};
    for (size_t t = 0; t < T; t++) {
        for (int i = 0; i < p->I; i++) q.x[t * p->I + i] = p->xbc[t * p->ld_x + i];
        for (size_t n = 0; n < GN; n++) {
            q.Bm[t * GN + n] = p->xbc[t * p->ld_x + p->I + n];
            q.Cm[t * GN + n] = p->xbc[t * p->ld_x + p->I + GN + n];
        }
        for (int h = 0; h < p->H; h++) q.dt[t * p->H + h] = p->dt[t * p->ld_dt + h];
    }
    for (int h = 0; h < p->H; h++) q.bias[h] = p->bias[h], q.A_log[h] = p->A_log[h], q.D[h] = p->D[h];
    return q;
}

static void free_dprob(dprob *q) {
    free(q->x), free(q->Bm), free(q->Cm), free(q->dt), free(q->bias), free(q->A_log), free(q->D);
}

static double dt_ref(const dprob *q, size_t t, int h) {
    double v = q->dt[t * q->H + h] + q->bias[h];
    double s = v > 20 ? v : log1p(exp(v));
    return s < q->lo ? q->lo : (s > q->hi ? q->hi : s);
}

/* y (T, I) and the final state (B, H, P, N) from S0 (NULL: zero); either output may be NULL */
static void ref_forward(const dprob *q, const float *S0, double *y, double *Sfin) {
    int P = q->P, N = q->N, GN = q->G * q->N;
    double *S = dalloc((size_t)P * N);
    for (int b = 0; b < q->B; b++)
        for (int h = 0; h < q->H; h++) {
            int g = h / (q->H / q->G);
            double A = -exp(q->A_log[h]);
            size_t s0 = ((size_t)b * q->H + h) * P * N;
            for (int k = 0; k < P * N; k++) S[k] = S0 ? S0[s0 + k] : 0;
            for (int l = 0; l < q->L; l++) {
                size_t t = (size_t)b * q->L + l;
                double dt = dt_ref(q, t, h), dA = exp(dt * A);
                const double *xr = q->x + t * q->I + (size_t)h * P;
                const double *Br = q->Bm + t * GN + (size_t)g * N, *Cr = q->Cm + t * GN + (size_t)g * N;
                for (int p = 0; p < P; p++) {
                    double acc = 0;
                    for (int n = 0; n < N; n++) {
                        double *s = &S[(size_t)p * N + n];
                        *s = dA * *s + dt * xr[p] * Br[n];
                        acc += Cr[n] * *s;
                    }
                    if (y) y[t * q->I + (size_t)h * P + p] = acc + q->D[h] * xr[p];
                }
            }
            if (Sfin)
                for (int k = 0; k < P * N; k++) Sfin[s0 + k] = S[k];
        }
    free(S);
}

/* rel norm error of the (T, cols) block of a strided float buffer against a dense double one */
static double rel_fd(const float *a, int ld, const double *r, size_t T, int cols) {
    double num = 0, den = 0;
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < cols; j++) {
            double x = a[t * ld + j], y = r[t * cols + j];
            if (!isfinite(x)) return INFINITY;
            num += (x - y) * (x - y);
            den += y * y;
        }
    return den > 0 ? sqrt(num / den) : INFINITY; /* never on zeros */
}

/* the same between two strided float buffers */
static double rel_ff(const float *a, const float *b, int ld, size_t T, int cols) {
    double num = 0, den = 0;
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < cols; j++) {
            double x = a[t * ld + j], y = b[t * ld + j];
            if (!isfinite(x) || !isfinite(y)) return INFINITY;
            num += (x - y) * (x - y);
            den += y * y;
        }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

/* ---- (a) forward ------------------------------------------------------------------------- */

static int check_forward(int B, int L, int H, int P, int G, int N, int chunk, int regime, float lo,
                         float hi, uint64_t seed) {
    problem p = make_problem(B, L, H, P, G, N, chunk, regime, lo, hi, seed);
    dprob q = to_double(&p);
    size_t T = rows(&p), S = (size_t)B * H * P * N;
    float *yr = falloc(T * p.ld_y), *yc = falloc(T * p.ld_y), *sr = falloc(S), *sc = falloc(S), *h0 = falloc(S);
    double *yd = dalloc(T * p.I), *sd = dalloc(S);
    int bad = 0;
    double worst = 0;
    /* count the clamped positions */
    int clamped = 0;
    for (size_t t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            double v = q.dt[t * H + h] + q.bias[h], s = v > 20 ? v : log1p(exp(v));
            clamped += s < lo || s > hi;
        }
    printf("forward B %d L %4d H %d P %2d G %d N %2d chunk %3d %-5s dt_limit (%g, %g) [%d clamped]:\n", B, L,
           H, P, G, N, chunk, regime == INIT ? "init" : regime == WIDE ? "wide" : "decay", lo, hi, clamped);
    for (int mode = 0; mode < 3; mode++) { /* state NULL, zero state, random state */
        if (mode == 2) tu_fill_uniform(h0, S, -1, 1, seed + 9);
        else ffill(h0, S, 0);
        memcpy(sr, h0, S * sizeof(float));
        memcpy(sc, h0, S * sizeof(float));
        op_forward(&p, 0, yr, mode ? sr : NULL, 2);
        op_forward(&p, 1, yc, mode ? sc : NULL, 2);
        ref_forward(&q, mode ? h0 : NULL, yd, sd);
        double e_r = rel_fd(yr, p.ld_y, yd, T, p.I), e_c = rel_fd(yc, p.ld_y, yd, T, p.I);
        double e_rc = rel_ff(yc, yr, p.ld_y, T, p.I);
        int dmg = padding_damage(yr, T, p.I, p.ld_y) + padding_damage(yc, T, p.I, p.ld_y);
        printf("  %-12s y rel: recurrent %.2e chunked %.2e chunked vs recurrent %.2e", mode == 0 ? "state NULL" : mode == 1 ? "zero state" : "random state", e_r, e_c, e_rc);
        bad += !(e_r < FWD_TOL) + !(e_c < FWD_TOL) + !(e_rc < FWD_TOL) + dmg;
        worst = fmax(worst, fmax(e_r, e_c));
        if (mode) {
            double er = rel_fd(sr, (int)S, sd, 1, (int)S), ec = rel_fd(sc, (int)S, sd, 1, (int)S);
            printf("; final state rel: recurrent %.2e chunked %.2e", er, ec);
            bad += !(er < FWD_TOL) + !(ec < FWD_TOL);
            worst = fmax(worst, fmax(er, ec));
        }
        printf("%s\n", bad ? "  FAIL" : "");
    }
    free(yr), free(yc), free(sr), free(sc), free(h0), free(yd), free(sd);
    free_dprob(&q);
    free_problem(&p);
    return bad;
}

static void test_forward(void **st) {
    (void)st;
    int bad = 0;
    bad += check_forward(2, 100, 4, 16, 2, 16, 32, INIT, 0, INFINITY, 1); /* L not a multiple of chunk */
    bad += check_forward(2, 100, 4, 16, 2, 16, 32, WIDE, 0, INFINITY, 2);
    bad += check_forward(2, 20, 4, 8, 1, 16, 64, WIDE, 0, INFINITY, 3);   /* L below the chunk */
    bad += check_forward(3, 1, 4, 8, 2, 8, 16, WIDE, 0, INFINITY, 4);     /* L = 1 */
    bad += check_forward(2, 50, 4, 8, 4, 8, 16, WIDE, 0, INFINITY, 5);    /* G = H */
    bad += check_forward(1, 130, 2, 64, 1, 32, 64, INIT, 0, INFINITY, 6); /* headdim 64 */
    bad += check_forward(1, 130, 2, 64, 2, 32, 48, WIDE, 0, INFINITY, 7);
    bad += check_forward(2, 40, 3, 80, 3, 8, 16, WIDE, 0, INFINITY, 12); /* headdim 64 + 16 */
    bad += check_forward(2, 1000, 2, 8, 1, 16, 64, INIT, 0, INFINITY, 8); /* long memory */
    bad += check_forward(2, 77, 4, 16, 2, 16, 16, WIDE, 0.5f, 0.9f, 9);   /* clamps both ways */
    bad += check_forward(2, 77, 4, 16, 2, 16, 256, INIT, 0.02f, 0.05f, 10);
    bad += check_forward(2, 150, 4, 8, 2, 8, 64, DECAY, 0, INFINITY, 11); /* decays underflow */
    bad += check_forward(2, 450, 4, 8, 2, 8, 200, WIDE, 0, INFINITY, 13); /* several row blocks */
    assert_int_equal(bad, 0);
}

/* ---- (b) backward ------------------------------------------------------------------------ */

typedef struct {
    float *dxbc, *ddt, *dbias, *dA, *dD; /* dxbc (T, ld_x): dx | dB | dC; ddt (T, ld_dt) */
} grads;

static grads grads_make(const problem *p, uint64_t prefill) {
    size_t T = rows(p);
    grads g = {falloc(T * p->ld_x), falloc(T * p->ld_dt), falloc(p->H), falloc(p->H), falloc(p->H)};
    ffill(g.dxbc, T * p->ld_x, SENTINEL);
    ffill(g.ddt, T * p->ld_dt, SENTINEL);
    for (size_t t = 0; t < T; t++) {
        ffill(g.dxbc + t * p->ld_x, p->I + 2 * p->G * p->N, NAN); /* written, never read */
        ffill(g.ddt + t * p->ld_dt, p->H, NAN);
    }
    if (prefill) {
        tu_fill_uniform(g.dbias, p->H, -1, 1, prefill);
        tu_fill_uniform(g.dA, p->H, -1, 1, prefill + 1);
        tu_fill_uniform(g.dD, p->H, -1, 1, prefill + 2);
    } else {
        ffill(g.dbias, p->H, 0), ffill(g.dA, p->H, 0), ffill(g.dD, p->H, 0);
    }
    return g;
}

static void grads_free(grads *g) { free(g->dxbc), free(g->ddt), free(g->dbias), free(g->dA), free(g->dD); }

/* dy (T, ld_y) */
static void op_backward(const problem *p, const float *dy, grads *g, int threads) {
    cpu_ssd_args a = args_of(p, NULL, NULL, threads);
    a.dy = dy;
    a.dx = g->dxbc, a.dBm = g->dxbc + p->I, a.dCm = g->dxbc + p->I + p->G * p->N;
    a.ddt = g->ddt, a.d_dt_bias = g->dbias, a.dA_log = g->dA, a.dD = g->dD;
    give_scratch(&a, threads, 1);
    cpu_ssd_backward(&a);
    free(a.scratch);
}

static double objective(const dprob *q, const float *dy, int ld_y, double *y) {
    ref_forward(q, NULL, y, NULL);
    size_t T = (size_t)q->B * q->L;
    double j = 0;
    for (size_t t = 0; t < T; t++)
        for (int i = 0; i < q->I; i++) j += y[t * q->I + i] * dy[t * ld_y + i];
    return j;
}

/* central differences of J = sum(y * dy) in every coordinate of arr (n values) */
static void fd_grad(dprob *q, double *arr, size_t n, const float *dy, int ld_y, double *out) {
    double *y = dalloc((size_t)q->B * q->L * q->I);
    const double h = 1e-5;
    for (size_t k = 0; k < n; k++) {
        double save = arr[k];
        arr[k] = save + h;
        double jp = objective(q, dy, ld_y, y);
        arr[k] = save - h;
        double jm = objective(q, dy, ld_y, y);
        arr[k] = save;
        out[k] = (jp - jm) / (2 * h);
    }
    free(y);
}

static double rel_vec(const float *a, const double *r, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += (a[i] - r[i]) * (a[i] - r[i]);
        den += r[i] * r[i];
    }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

static int check_backward(int B, int L, int H, int P, int G, int N, int chunk, int regime, float lo,
                          float hi, uint64_t seed) {
    problem p = make_problem(B, L, H, P, G, N, chunk, regime, lo, hi, seed);
    dprob q = to_double(&p);
    size_t T = rows(&p), GN = (size_t)G * N;
    float *dy = falloc(T * p.ld_y);
    tu_fill_uniform(dy, T * p.ld_y, -1, 1, seed + 5);
    grads g = grads_make(&p, 0);
    op_backward(&p, dy, &g, 2);
    int bad = padding_damage(g.dxbc, T, p.I + 2 * (int)GN, p.ld_x) + padding_damage(g.ddt, T, H, p.ld_dt);
    /* the finite differences */
    double *fx = dalloc(T * p.I), *fB = dalloc(T * GN), *fC = dalloc(T * GN), *fdt = dalloc(T * H);
    double *fbias = dalloc(H), *fA = dalloc(H), *fD = dalloc(H);
    fd_grad(&q, q.x, T * p.I, dy, p.ld_y, fx);
    fd_grad(&q, q.Bm, T * GN, dy, p.ld_y, fB);
    fd_grad(&q, q.Cm, T * GN, dy, p.ld_y, fC);
    fd_grad(&q, q.dt, T * H, dy, p.ld_y, fdt);
    fd_grad(&q, q.bias, H, dy, p.ld_y, fbias);
    fd_grad(&q, q.A_log, H, dy, p.ld_y, fA);
    fd_grad(&q, q.D, H, dy, p.ld_y, fD);
    double e[7] = {rel_fd(g.dxbc, p.ld_x, fx, T, p.I), rel_fd(g.dxbc + p.I, p.ld_x, fB, T, (int)GN),
                   rel_fd(g.dxbc + p.I + GN, p.ld_x, fC, T, (int)GN), rel_fd(g.ddt, p.ld_dt, fdt, T, H),
                   rel_vec(g.dbias, fbias, H), rel_vec(g.dA, fA, H), rel_vec(g.dD, fD, H)};
    /* L = 1 from zero state: A never matters, its gradient is exactly 0 (nothing to compare) */
    int a_zero = L == 1;
    if (a_zero) {
        for (int h = 0; h < H; h++) bad += g.dA[h] != 0.0f || fA[h] != 0.0;
        e[5] = 0;
    }
    /* where dt is clamped, its gradient is exactly 0 (and so is the difference quotient) */
    int clamped = 0, cbad = 0;
    for (size_t t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            double v = q.dt[t * H + h] + q.bias[h], s = v > 20 ? v : log1p(exp(v));
            if (s < lo || s > hi) {
                clamped++;
                cbad += g.ddt[t * p.ld_dt + h] != 0.0f || fdt[t * H + h] != 0.0;
            }
        }
    for (int k = 0; k < 7; k++) bad += !(e[k] < BWD_TOL);
    bad += cbad;
    printf("backward B %d L %3d H %d P %2d G %d N %2d chunk %2d %-5s dt_limit (%g, %g) rel vs central "
           "differences: dx %.1e dB %.1e dC %.1e ddt %.1e d_dt_bias %.1e dA_log %.1e%s dD %.1e; "
           "%d clamped (gradient 0: %s)%s\n", B, L, H, P, G, N, chunk,
           regime == INIT ? "init" : regime == WIDE ? "wide" : "decay", lo, hi, e[0], e[1], e[2], e[3],
           e[4], e[5], a_zero ? " (exactly 0)" : "", e[6], clamped, cbad ? "NO" : "yes", bad ? "  FAIL" : "");
    /* d_dt_bias, dA_log, dD accumulate; the rest is written, never read */
    grads g1 = grads_make(&p, seed + 20), g0 = grads_make(&p, seed + 20);
    op_backward(&p, dy, &g1, 2);
    int acc = 0;
    for (int h = 0; h < H; h++) {
        float w[3] = {g.dbias[h], g.dA[h], g.dD[h]}, got[3] = {g1.dbias[h], g1.dA[h], g1.dD[h]};
        float base[3] = {g0.dbias[h], g0.dA[h], g0.dD[h]};
        for (int k = 0; k < 3; k++) acc += !(fabs((double)got[k] - ((double)base[k] + w[k])) <= 1e-6 * (fabs(base[k]) + fabs(w[k])));
    }
    acc += memcmp(g1.dxbc, g.dxbc, T * p.ld_x * sizeof(float)) != 0;
    acc += memcmp(g1.ddt, g.ddt, T * p.ld_dt * sizeof(float)) != 0;
    if (acc) printf("  accumulation into d_dt_bias, dA_log, dD: %d mismatches  FAIL\n", acc);
    bad += acc;
    free(dy), free(fx), free(fB), free(fC), free(fdt), free(fbias), free(fA), free(fD);
    grads_free(&g), grads_free(&g0), grads_free(&g1);
    free_dprob(&q);
    free_problem(&p);
    return bad;
}

/* At the 130M model's head shape (P 64, N 128) the backward with chunk 256 (three row blocks
 * of the triangular products) and with chunk 32 give the same gradients to rounding. */
static int check_backward_chunks(void) {
    problem p = make_problem(2, 300, 4, 64, 2, 128, 256, INIT, 0, INFINITY, 40);
    size_t T = rows(&p);
    float *dy = falloc(T * p.ld_y);
    tu_fill_uniform(dy, T * p.ld_y, -1, 1, 41);
    grads g1 = grads_make(&p, 0), g2 = grads_make(&p, 0);
    op_backward(&p, dy, &g1, 2);
    p.chunk = 32;
    op_backward(&p, dy, &g2, 2);
    int GN = p.G * p.N;
    double e[7] = {rel_ff(g1.dxbc, g2.dxbc, p.ld_x, T, p.I), rel_ff(g1.dxbc + p.I, g2.dxbc + p.I, p.ld_x, T, GN),
                   rel_ff(g1.dxbc + p.I + GN, g2.dxbc + p.I + GN, p.ld_x, T, GN), rel_ff(g1.ddt, g2.ddt, p.ld_dt, T, p.H),
                   rel_ff(g1.dbias, g2.dbias, p.H, 1, p.H), rel_ff(g1.dA, g2.dA, p.H, 1, p.H), rel_ff(g1.dD, g2.dD, p.H, 1, p.H)};
    int bad = 0;
    for (int k = 0; k < 7; k++) bad += !(e[k] < 1e-5);
    printf("backward B 2 L 300 H 4 P 64 G 2 N 128, chunk 256 vs chunk 32 rel: dx %.1e dB %.1e dC %.1e ddt %.1e "
           "d_dt_bias %.1e dA_log %.1e dD %.1e%s\n", e[0], e[1], e[2], e[3], e[4], e[5], e[6], bad ? "  FAIL" : "");
    free(dy);
    grads_free(&g1), grads_free(&g2);
    free_problem(&p);
    return bad;
}

static void test_backward(void **st) {
    (void)st;
    int bad = 0;
    bad += check_backward(2, 11, 4, 3, 2, 5, 4, WIDE, 0, INFINITY, 30);   /* 3 chunks, the last short */
    bad += check_backward(2, 11, 4, 3, 2, 5, 4, INIT, 0, INFINITY, 31);
    bad += check_backward(3, 37, 4, 8, 1, 8, 4, WIDE, 0, INFINITY, 32);   /* 10 chunks, slabs of 1 */
    bad += check_backward(2, 37, 4, 8, 2, 8, 16, WIDE, 0.5f, 0.9f, 33);   /* clamped positions */
    bad += check_backward(3, 9, 4, 4, 4, 6, 64, WIDE, 0.4f, 1.0f, 34);    /* L below the chunk, G = H */
    bad += check_backward(3, 1, 2, 4, 1, 6, 8, WIDE, 0, INFINITY, 35);    /* L = 1 */
    bad += check_backward(1, 40, 2, 16, 1, 8, 16, DECAY, 0, INFINITY, 36); /* decays underflow */
    bad += check_backward(1, 33, 2, 64, 2, 4, 16, INIT, 0, INFINITY, 37); /* headdim 64 */
    /* chunks longer than the row blocks (64) of the triangular products */
    bad += check_backward(1, 150, 2, 4, 1, 4, 128, WIDE, 0, INFINITY, 38);
    bad += check_backward(2, 130, 2, 4, 2, 3, 100, INIT, 0.01f, 0.05f, 39);
    bad += check_backward_chunks();
    assert_int_equal(bad, 0);
}

/* ---- (c) step mode and windows ----------------------------------------------------------- */

/* rows [l0, l0 + n) of every sequence of a (B, L, cols) strided array, as (B, n, cols) */
static float *window_rows(const float *src, int B, int L, int l0, int n, int ld) {
    float *out = falloc((size_t)B * n * ld);
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * n * ld, src + ((size_t)b * L + l0) * ld, (size_t)n * ld * sizeof(float));
    return out;
}

/* the problem restricted to rows [l0, l0 + n) of every sequence */
static problem window(const problem *p, int l0, int n) {
    problem w = *p;
    w.L = n;
    w.xbc = window_rows(p->xbc, p->B, p->L, l0, n, p->ld_x);
    w.dt = window_rows(p->dt, p->B, p->L, l0, n, p->ld_dt);
    w.bias = fcopy(p->bias, p->H), w.A_log = fcopy(p->A_log, p->H), w.D = fcopy(p->D, p->H);
    return w;
}

static void test_step_and_windows(void **st) {
    (void)st;
    int bad = 0;
    struct { int B, L, H, P, G, N, chunk, regime; float lo, hi; } cs[] = {
        {2, 37, 4, 16, 2, 16, 16, WIDE, 0, INFINITY},
        {3, 20, 4, 8, 1, 8, 64, INIT, 0, INFINITY},
        {2, 30, 4, 8, 4, 8, 8, WIDE, 0.5f, 0.9f},
    };
    for (int ci = 0; ci < 3; ci++) {
        problem p = make_problem(cs[ci].B, cs[ci].L, cs[ci].H, cs[ci].P, cs[ci].G, cs[ci].N, cs[ci].chunk,
                                 cs[ci].regime, cs[ci].lo, cs[ci].hi, 50 + ci);
        int B = p.B, L = p.L;
        size_t T = rows(&p), S = (size_t)B * p.H * p.P * p.N;
        float *h0 = falloc(S);
        tu_fill_uniform(h0, S, -1, 1, 60 + ci);
        /* one pass from h0, by both algorithms */
        float *yr = falloc(T * p.ld_y), *yc = falloc(T * p.ld_y), *sr = fcopy(h0, S), *sc = fcopy(h0, S);
        op_forward(&p, 0, yr, sr, 2);
        op_forward(&p, 2, yc, sc, 2);
        /* L steps from h0 */
        float *ss = fcopy(h0, S), *ys = falloc(T * p.ld_y);
        ffill(ys, T * p.ld_y, NAN);
        for (int l = 0; l < L; l++) {
            problem w = window(&p, l, 1);
            float *yt = falloc((size_t)B * p.ld_y);
            ffill(yt, (size_t)B * p.ld_y, NAN);
            cpu_ssd_args a = args_of(&w, yt, ss, 2);
            cpu_ssd_step(&a); /* no scratch */
            for (int b = 0; b < B; b++) memcpy(ys + ((size_t)b * L + l) * p.ld_y, yt + (size_t)b * p.ld_y, p.I * sizeof(float));
            free(yt);
            free_problem(&w);
        }
        int step_bits = 0;
        for (size_t t = 0; t < T; t++) step_bits += memcmp(ys + t * p.ld_y, yr + t * p.ld_y, p.I * sizeof(float)) != 0;
        step_bits += memcmp(ss, sr, S * sizeof(float)) != 0;
        double ey = rel_ff(ys, yc, p.ld_y, T, p.I), es = rel_ff(ss, sc, (int)S, 1, (int)S);
        printf("step x %d from a random state: %s to the recurrent forward; vs cpu_ssd_forward rel y %.2e state %.2e\n",
               L, step_bits ? "DIFFERS" : "bitwise equal", ey, es);
        bad += step_bits + !(ey < FWD_TOL) + !(es < FWD_TOL);
        /* two windows carrying the state = one pass, split inside a chunk */
        int L1 = L / 2 + 3, L2 = L - L1;
        problem w1 = window(&p, 0, L1), w2 = window(&p, L1, L2);
        for (int which = 0; which < 3; which += 2) {
            float *s = fcopy(h0, S), *y1 = falloc((size_t)B * L1 * p.ld_y), *y2 = falloc((size_t)B * L2 * p.ld_y);
            op_forward(&w1, which, y1, s, 2);
            op_forward(&w2, which, y2, s, 2);
            float *yw = falloc(T * p.ld_y);
            for (int b = 0; b < B; b++) {
                memcpy(yw + (size_t)b * L * p.ld_y, y1 + (size_t)b * L1 * p.ld_y, (size_t)L1 * p.ld_y * sizeof(float));
                memcpy(yw + ((size_t)b * L + L1) * p.ld_y, y2 + (size_t)b * L2 * p.ld_y, (size_t)L2 * p.ld_y * sizeof(float));
            }
            const float *yo = which ? yc : yr, *so = which ? sc : sr;
            double e1 = rel_ff(yw, yo, p.ld_y, T, p.I), e2 = rel_ff(s, so, (int)S, 1, (int)S);
            int bits = memcmp(s, so, S * sizeof(float)) != 0;
            for (size_t t = 0; t < T; t++) bits += memcmp(yw + t * p.ld_y, yo + t * p.ld_y, p.I * sizeof(float)) != 0;
            printf("  windows %d + %d (%s): rel y %.2e state %.2e%s\n", L1, L2, which ? "cpu_ssd_forward" : "recurrent",
                   e1, e2, bits ? "" : " (bitwise equal)");
            /* the recurrence does the same arithmetic in the same order: bitwise; the chunked
             * form splits the chunks elsewhere: to rounding */
            bad += which ? !(e1 < 1e-6) + !(e2 < 1e-6) : bits;
            free(s), free(y1), free(y2), free(yw);
        }
        free_problem(&w1), free_problem(&w2);
        free(h0), free(yr), free(yc), free(sr), free(sc), free(ss), free(ys);
        free_problem(&p);
    }
    assert_int_equal(bad, 0);
}

/* ---- (d) thread counts ------------------------------------------------------------------- */

static int check_threads(problem p) {
    int bad = 0;
    size_t T = rows(&p), S = (size_t)p.B * p.H * p.P * p.N;
    float *dy = falloc(T * p.ld_y), *h0 = falloc(S);
    tu_fill_uniform(dy, T * p.ld_y, -1, 1, 71);
    tu_fill_uniform(h0, S, -1, 1, 72);
    printf("threads: B %d L %d H %d P %d G %d N %d chunk %d\n", p.B, p.L, p.H, p.P, p.G, p.N, p.chunk);
    float *y[3][3], *s[3][3];
    grads g[3];
    int max_threads = omp_get_max_threads();
    for (int th = 1; th <= 3; th++) {
        omp_set_num_threads(th);
        for (int which = 0; which < 3; which++) {
            y[th - 1][which] = falloc(T * p.ld_y);
            s[th - 1][which] = fcopy(h0, S);
            op_forward(&p, which, y[th - 1][which], s[th - 1][which], th);
        }
        g[th - 1] = grads_make(&p, 0);
        op_backward(&p, dy, &g[th - 1], th);
    }
    omp_set_num_threads(max_threads);
    const char *names[3] = {"recurrent", "chunked", "cpu_ssd_forward"};
    for (int th = 2; th <= 3; th++) {
        for (int which = 0; which < 3; which++) {
            int d = memcmp(y[th - 1][which], y[0][which], T * p.ld_y * sizeof(float)) != 0;
            d += memcmp(s[th - 1][which], s[0][which], S * sizeof(float)) != 0;
            printf("forward %-15s %d threads vs 1: %s\n", names[which], th, d ? "DIFFERS" : "bitwise equal");
            bad += d;
        }
        int d = memcmp(g[th - 1].dxbc, g[0].dxbc, T * p.ld_x * sizeof(float)) != 0;
        d += memcmp(g[th - 1].ddt, g[0].ddt, T * p.ld_dt * sizeof(float)) != 0;
        d += memcmp(g[th - 1].dbias, g[0].dbias, p.H * sizeof(float)) != 0;
        d += memcmp(g[th - 1].dA, g[0].dA, p.H * sizeof(float)) != 0;
        d += memcmp(g[th - 1].dD, g[0].dD, p.H * sizeof(float)) != 0;
        printf("backward %d threads vs 1: %s\n", th, d ? "DIFFERS" : "bitwise equal");
        bad += d;
    }
    /* called from inside a caller's parallel region: asks for 2 threads, granted 1 */
    {
        grads gt = grads_make(&p, 0);
        float *yt = falloc(T * p.ld_y);
        int levels = omp_get_max_active_levels();
        omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
#pragma omp single
        {
            op_backward(&p, dy, &gt, 2);
            op_forward(&p, 2, yt, NULL, 2);
        }
        omp_set_max_active_levels(levels);
        float *yn = falloc(T * p.ld_y);
        op_forward(&p, 2, yn, NULL, 2);
        int d = memcmp(gt.dxbc, g[1].dxbc, T * p.ld_x * sizeof(float)) != 0;
        d += memcmp(gt.ddt, g[1].ddt, T * p.ld_dt * sizeof(float)) != 0;
        d += memcmp(yt, yn, T * p.ld_y * sizeof(float)) != 0;
        printf("granted fewer threads than asked: %s\n", d ? "DIFFERS" : "bitwise equal");
        bad += d;
        grads_free(&gt);
        free(yt), free(yn);
    }
    for (int th = 0; th < 3; th++) {
        for (int which = 0; which < 3; which++) free(y[th][which]), free(s[th][which]);
        grads_free(&g[th]);
    }
    free(dy), free(h0);
    free_problem(&p);
    return bad;
}

static void test_threads_bitwise(void **st) {
    (void)st;
    int bad = check_threads(make_problem(3, 45, 6, 8, 2, 8, 16, WIDE, 0.4f, 1.1f, 70));
    bad += check_threads(make_problem(2, 70, 4, 64, 1, 32, 32, INIT, 0, INFINITY, 73));
    assert_int_equal(bad, 0);
}

/* ---- (e) the gated norm ------------------------------------------------------------------ */

static double silu_d(double z) { return z / (1 + exp(-z)); }

/* out (T, I) and rstd (T, G) in double */
static void gn_ref(const double *y, const double *z, const double *w, int T, int I, int G, double eps,
                   double *out, double *rstd) {
    int gs = I / G;
    for (int t = 0; t < T; t++)
        for (int g = 0; g < G; g++) {
            double ss = 0;
            for (int i = g * gs; i < (g + 1) * gs; i++) {
                double v = y[t * I + i] * silu_d(z[t * I + i]);
                ss += v * v;
            }
            double r = 1 / sqrt(ss / gs + eps);
            if (rstd) rstd[t * G + g] = r;
            for (int i = g * gs; i < (g + 1) * gs; i++) out[t * I + i] = y[t * I + i] * silu_d(z[t * I + i]) * r * w[i];
        }
}

static double gn_obj(const double *y, const double *z, const double *w, int T, int I, int G, double eps,
                     const float *wo, double *out) {
    gn_ref(y, z, w, T, I, G, eps, out, NULL);
    double j = 0;
    for (int k = 0; k < T * I; k++) j += out[k] * wo[k];
    return j;
}

static int check_gated_norm(int T, int I, int G, uint64_t seed) {
    const int ldy = I + 1, ldz = 2 * I + 3, ldo = I + 2, ldg = I + 4; /* z: a block of in_proj's output */
    const float eps = 1e-5f;
    float *y = falloc((size_t)T * ldy), *z = falloc((size_t)T * ldz), *w = falloc(I);
    tu_fill_uniform(y, (size_t)T * ldy, -1, 1, seed);
    tu_fill_uniform(z, (size_t)T * ldz, -3, 3, seed + 1);
    tu_fill_uniform(w, I, 0.5f, 1.5f, seed + 2);
    /* rows of different scales (0.05 .. 3), so that rstd differs from row to row */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) y[(size_t)t * ldy + i] *= 0.05f + 2.95f * t / (T - 1);
    double *yd = dalloc((size_t)T * I), *zd = dalloc((size_t)T * I), *wd = dalloc(I);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) yd[t * I + i] = y[(size_t)t * ldy + i], zd[t * I + i] = z[(size_t)t * ldz + i];
    for (int i = 0; i < I; i++) wd[i] = w[i];
    double *od = dalloc((size_t)T * I), *rd = dalloc((size_t)T * G);
    gn_ref(yd, zd, wd, T, I, G, eps, od, rd);
    float *out = falloc((size_t)T * ldo), *rstd = falloc((size_t)T * G);
    ffill(out, (size_t)T * ldo, SENTINEL);
    for (int t = 0; t < T; t++) ffill(out + (size_t)t * ldo, I, NAN);
    ffill(rstd, (size_t)T * G, NAN);
    cpu_gated_rmsnorm_forward(out, ldo, rstd, y, ldy, z, ldz, w, T, I, G, eps);
    double e_out = rel_fd(out, ldo, od, T, I), e_r = rel_fd(rstd, G, rd, T, G);
    int bad = !(e_out < FWD_TOL) + !(e_r < FWD_TOL) + padding_damage(out, T, I, ldo);
    /* backward */
    float *wo = falloc((size_t)T * I), *dout = falloc((size_t)T * ldg);
    tu_fill_uniform(wo, (size_t)T * I, -1, 1, seed + 3);
    ffill(dout, (size_t)T * ldg, NAN); /* the padding of d_out is never read */
    for (int t = 0; t < T; t++) memcpy(dout + (size_t)t * ldg, wo + (size_t)t * I, I * sizeof(float));
    float *dy = falloc((size_t)T * ldy), *dz = falloc((size_t)T * ldz), *dw = falloc(I);
    ffill(dy, (size_t)T * ldy, SENTINEL), ffill(dz, (size_t)T * ldz, SENTINEL);
    for (int t = 0; t < T; t++) ffill(dy + (size_t)t * ldy, I, NAN), ffill(dz + (size_t)t * ldz, I, NAN);
    ffill(dw, I, 0);
    cpu_gated_rmsnorm_backward(dy, ldy, dz, ldz, dw, dout, ldg, y, ldy, z, ldz, w, rstd, T, I, G);
    bad += padding_damage(dy, T, I, ldy) + padding_damage(dz, T, I, ldz);
    double *fy = dalloc((size_t)T * I), *fz = dalloc((size_t)T * I), *fw = dalloc(I), *tmp = dalloc((size_t)T * I);
    struct { double *arr, *out; size_t n; } ins[3] = {{yd, fy, (size_t)T * I}, {zd, fz, (size_t)T * I}, {wd, fw, I}};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < ins[k].n; i++) {
            double save = ins[k].arr[i], h = 1e-5;
            ins[k].arr[i] = save + h;
            double jp = gn_obj(yd, zd, wd, T, I, G, eps, wo, tmp);
            ins[k].arr[i] = save - h;
            double jm = gn_obj(yd, zd, wd, T, I, G, eps, wo, tmp);
            ins[k].arr[i] = save;
            ins[k].out[i] = (jp - jm) / (2 * h);
        }
    double e_dy = rel_fd(dy, ldy, fy, T, I), e_dz = rel_fd(dz, ldz, fz, T, I), e_dw = rel_vec(dw, fw, I);
    bad += !(e_dy < BWD_TOL) + !(e_dz < BWD_TOL) + !(e_dw < BWD_TOL);
    /* dw accumulates */
    float *dw0 = falloc(I), *dw1 = falloc(I);
    tu_fill_uniform(dw0, I, -1, 1, seed + 4);
    memcpy(dw1, dw0, I * sizeof(float));
    float *dy2 = fcopy(dy, (size_t)T * ldy), *dz2 = fcopy(dz, (size_t)T * ldz);
    cpu_gated_rmsnorm_backward(dy2, ldy, dz2, ldz, dw1, dout, ldg, y, ldy, z, ldz, w, rstd, T, I, G);
    int acc = 0;
    for (int i = 0; i < I; i++) acc += !(fabs((double)dw1[i] - ((double)dw0[i] + dw[i])) <= 1e-6 * (fabs(dw0[i]) + fabs(dw[i])));
    /* bitwise the same with 1 and 2 threads */
    int max_threads = omp_get_max_threads(), tbits = 0;
    float *o1 = falloc((size_t)T * ldo), *r1 = falloc((size_t)T * G), *dy1 = falloc((size_t)T * ldy);
    float *dz1 = falloc((size_t)T * ldz), *dwt = falloc(I);
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        memcpy(o1, out, (size_t)T * ldo * sizeof(float));
        cpu_gated_rmsnorm_forward(o1, ldo, r1, y, ldy, z, ldz, w, T, I, G, eps);
        memcpy(dy1, dy, (size_t)T * ldy * sizeof(float)), memcpy(dz1, dz, (size_t)T * ldz * sizeof(float));
        ffill(dwt, I, 0);
        cpu_gated_rmsnorm_backward(dy1, ldy, dz1, ldz, dwt, dout, ldg, y, ldy, z, ldz, w, r1, T, I, G);
        tbits += memcmp(o1, out, (size_t)T * ldo * sizeof(float)) != 0;
        tbits += memcmp(r1, rstd, (size_t)T * G * sizeof(float)) != 0;
        tbits += memcmp(dy1, dy, (size_t)T * ldy * sizeof(float)) != 0;
        tbits += memcmp(dz1, dz, (size_t)T * ldz * sizeof(float)) != 0;
        tbits += memcmp(dwt, dw, I * sizeof(float)) != 0;
    }
    omp_set_num_threads(max_threads);
    bad += acc + tbits;
    printf("gated norm T %d I %d G %d: out rel %.2e rstd rel %.2e; vs central differences: dy %.1e dz %.1e "
           "dw %.1e; dw accumulates %s; 1 and 2 threads %s%s\n", T, I, G, e_out, e_r, e_dy, e_dz, e_dw,
           acc ? "NO" : "yes", tbits ? "DIFFER" : "bitwise equal", bad ? "  FAIL" : "");
    free(y), free(z), free(w), free(yd), free(zd), free(wd), free(od), free(rd), free(out), free(rstd);
    free(wo), free(dout), free(dy), free(dz), free(dw), free(fy), free(fz), free(fw), free(tmp);
    free(dw0), free(dw1), free(dy2), free(dz2), free(o1), free(r1), free(dy1), free(dz1), free(dwt);
    return bad;
}

static void test_gated_norm(void **st) {
    (void)st;
    int bad = check_gated_norm(9, 24, 1, 80);
    bad += check_gated_norm(9, 24, 2, 81);
    bad += check_gated_norm(5, 70, 2, 82);
    bad += check_gated_norm(150, 32, 2, 83); /* dw summed over three blocks of rows (64 each) */
    assert_int_equal(bad, 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),          cmocka_unit_test(test_backward),
        cmocka_unit_test(test_step_and_windows), cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_gated_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
