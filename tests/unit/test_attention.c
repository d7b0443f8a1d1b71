/* test_attention.c: causal self-attention (libssm/cpu/attention.c) and rotary embeddings
 * (libssm/cpu/rope.c).
 *
 * The reference is a plain loop in double precision, written here from the equations of
 * attention.h: s_{l,j} = scale q_l . k_j for j <= prefix + l, p = softmax_j(s), o_l = sum_j p v_j,
 * lse_l = log sum_j exp(s_{l,j}); query head h reads kv head h / (H / Hkv).
 * (a) the forward (both kernels: loops and BLAS) against it: B 1 and 3, L 1, 7, 64, 200, MHA and
 *     GQA (H = 2 Hkv, 4 Hkv), hd 8 and 64, without a prefix and with one (the keys in a KV cache
 *     of a larger capacity, prefixes that differ per sequence), and with sharp and huge scores;
 *     relative norm error < 1e-5 (out) and |lse - ref| < 1e-5 (1 + |ref|); the cache rows
 *     beyond each sequence's keys and the inputs' padding columns hold NaN (never read), the
 *     outputs' padding stays untouched, scratch and outputs poisoned with NaN first;
 * (b) L decode steps (L = 1 calls, prefix = the growing cache length, the cache filled here,
 *     two sequences at different lengths) equal one forward over each whole sequence, and two
 *     windows against the cache (prefix lengths that differ per sequence) equal one pass:
 *     bitwise with the loop kernel, to 1e-6 with BLAS;
 * (c) the backward (both kernels) against finite differences: test_ops_grad.c's method
 *     (directional Richardson differences of the fp32 op, J = sum(out * w), the same
 *     tolerances) for q, k, v, MHA and GQA, one and several tiles, hd up to 128; and every
 *     coordinate against central differences (step 1e-5) of the double reference, relative
 *     norm error < 1e-4, by both ways of the backward (two passes, one pass);
 * (d) RoPE against double references (of the documented fp32 angle: < 1e-6; of angles in
 *     exact arithmetic: within the angle's fp32 rounding), partial rot_dim (hd 16, rot_dim 8:
 *     channels 8 .. 15 unchanged bitwise), positions with an offset per sequence, the inverse
 *     undoes it to rounding, scores q(p) . k(p') equal q(p + d) . k(p' + d) to the angles' rounding;
 * (e) forward (loops, BLAS, with and without prefix), backward (its choice and both ways by
 *     force: the same bits) and RoPE bitwise identical with 1 and 2 threads (and when the
 *     runtime grants fewer than asked);
 * (f) L = 1 with prefix 0 (one key: p = 1): out = v bitwise, lse = the scaled score, dv = d_out,
 *     dq = dk = 0 to rounding.
 * Then the benchmark: B 1, L 1024, H 4 (Hkv 4 and 1), hd 64, forward and backward with each
 * kernel (and both ways of the backward), wall ms, tokens/s, GFLOP/s (causal flops:
 * 4 H hd L (L + 1) / 2 forward, 2.5 x that backward), per CPU-second, and the fraction of this
 * machine's SGEMM rate (cblas_sgemm 1024^3, the same threads, measured the same way); and one
 * decode step against 1024 keys. Only printed, never asserted. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "rope.h"
#include "testutil.h"

#define SENTINEL 12345.0f /* padding columns of outputs */
#define FWD_TOL 1e-5
#define BWD_TOL 1e-4
#define U32 (1.0 / 16777216.0) /* 2^-24 */
#define REL_TOL 1e-3           /* test_ops_grad.c's tolerances */
#define NOISE_ULPS 8

static const char *kname[] = {"default", "loops", "blas"};

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

static int padding_damage(const float *buf, size_t rows, int cols, int ld) {
    int bad = 0;
    for (size_t t = 0; t < rows; t++)
        for (int j = cols; j < ld; j++) bad += buf[t * ld + j] != SENTINEL;
    return bad;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- one problem ------------------------------------------------------------------------- */

/* q (T, ld_q); k, v (B, cap, ld_kv): sequence b's keys are rows 0 .. prefix[b] + L - 1 of its
 * cap rows; the rest of the cache and every padding column NaN (must never be read). */
typedef struct {
    int B, L, H, Hkv, hd, cap, ld_q, ld_kv, ld_out;
    float scale;
    int64_t *prefix; /* NULL or (B) */
    float *q, *k, *v;
} prob;

static size_t rows_of(const prob *p) { return (size_t)p->B * p->L; }
static int64_t pre_of(const prob *p, int b) { return p->prefix ? p->prefix[b] : 0; }

/* prefix: NULL or B values (copied); extra: cache rows beyond the longest sequence; qmul
 * scales q (sharper softmax) */
static prob make_prob(int B, int L, int H, int Hkv, int hd, const int64_t *prefix, int extra, float qmul,
                      uint64_t seed) {
    prob p = {B, L, H, Hkv, hd, 0, H * hd + 3, Hkv * hd + 5, H * hd + 2, (float)(1.0 / sqrt(hd)), NULL, NULL, NULL, NULL};
    int64_t maxpre = 0;
    if (prefix) {
        p.prefix = malloc(B * sizeof(int64_t));
        for (int b = 0; b < B; b++) p.prefix[b] = prefix[b], maxpre = prefix[b] > maxpre ? prefix[b] : maxpre;
    }
    p.cap = (int)maxpre + L + extra;
    size_t T = rows_of(&p), KV = (size_t)B * p.cap;
    p.q = falloc(T * p.ld_q), p.k = falloc(KV * p.ld_kv), p.v = falloc(KV * p.ld_kv);
    ffill(p.q, T * p.ld_q, NAN), ffill(p.k, KV * p.ld_kv, NAN), ffill(p.v, KV * p.ld_kv, NAN);
    float *r = falloc((T > KV ? T : KV) * (size_t)H * hd);
    tu_fill_uniform(r, T * H * hd, -qmul, qmul, seed);
    for (size_t t = 0; t < T; t++) memcpy(p.q + t * p.ld_q, r + t * H * hd, (size_t)H * hd * sizeof(float));
    for (int which = 0; which < 2; which++) {
        tu_fill_uniform(r, KV * Hkv * hd, -1, 1, seed + 1 + which);
        float *dst = which ? p.v : p.k;
        for (int b = 0; b < B; b++)
            for (int64_t j = 0; j < pre_of(&p, b) + L; j++) {
                size_t row = (size_t)b * p.cap + j;
                memcpy(dst + row * p.ld_kv, r + row * Hkv * hd, (size_t)Hkv * hd * sizeof(float));
            }
    }
    free(r);
    return p;
}

static void free_prob(prob *p) { free(p->prefix), free(p->q), free(p->k), free(p->v); }

static cpu_attention_args args_of(const prob *p, float *out, float *lse, int threads, int kernel) {
    cpu_attention_args a;
    memset(&a, 0, sizeof a);
    a.B = p->B, a.L = p->L, a.H = p->H, a.Hkv = p->Hkv, a.hd = p->hd, a.scale = p->scale;
    a.q = p->q, a.ld_q = p->ld_q, a.k = p->k, a.v = p->v, a.ld_kv = p->ld_kv;
    a.kv_batch_stride = (size_t)p->cap * p->ld_kv, a.prefix = p->prefix;
    a.out = out, a.ld_out = p->ld_out, a.lse = lse, a.threads = threads, a.kernel = kernel;
    return a;
}

static void give_scratch(cpu_attention_args *a, int threads, int backward) {
    a->scratch_floats = cpu_attention_scratch_floats(a, threads, backward);
    a->scratch = falloc(a->scratch_floats);
    ffill(a->scratch, a->scratch_floats, NAN);
}

/* out (T, ld_out): padding SENTINEL, the rest NaN before the call; lse (B, H, L) NaN */
static void op_forward(const prob *p, float *out, float *lse, int threads, int kernel) {
    size_t T = rows_of(p);
    ffill(out, T * p->ld_out, SENTINEL);
    for (size_t t = 0; t < T; t++) ffill(out + t * p->ld_out, (size_t)p->H * p->hd, NAN);
    if (lse) ffill(lse, (size_t)p->B * p->H * p->L, NAN);
    cpu_attention_args a = args_of(p, out, lse, threads, kernel);
    give_scratch(&a, threads, 0);
    cpu_attention_forward(&a);
    free(a.scratch);
}

/* the gradients, in the layouts of q (dq) and k, v (dk, dv: cap = L, no prefix) */
typedef struct {
    float *dq, *dk, *dv;
} grads;

/* path: 0 cpu_attention_backward's choice, 1 the two passes, 2 the one pass */
static grads op_backward_path(const prob *p, const float *out, const float *lse, const float *dout, int threads,
                              int kernel, int path) {
    assert_true(p->prefix == NULL && p->cap == p->L);
    size_t T = rows_of(p), KV = (size_t)p->B * p->cap;
    grads g = {falloc(T * p->ld_q), falloc(KV * p->ld_kv), falloc(KV * p->ld_kv)};
    ffill(g.dq, T * p->ld_q, SENTINEL), ffill(g.dk, KV * p->ld_kv, SENTINEL), ffill(g.dv, KV * p->ld_kv, SENTINEL);
    for (size_t t = 0; t < T; t++) ffill(g.dq + t * p->ld_q, (size_t)p->H * p->hd, NAN);
    for (size_t t = 0; t < KV; t++) {
        ffill(g.dk + t * p->ld_kv, (size_t)p->Hkv * p->hd, NAN);
        ffill(g.dv + t * p->ld_kv, (size_t)p->Hkv * p->hd, NAN);
    }
    cpu_attention_args a = args_of(p, (float *)out, (float *)lse, threads, kernel);
    a.d_out = dout, a.dq = g.dq, a.dk = g.dk, a.dv = g.dv;
    give_scratch(&a, threads, 1);
    if (path) cpu_attention_backward_path(&a, path);
    else cpu_attention_backward(&a);
    free(a.scratch);
    return g;
}

static grads op_backward(const prob *p, const float *out, const float *lse, const float *dout, int threads, int kernel) {
    return op_backward_path(p, out, lse, dout, threads, kernel, 0);
}

static void free_grads(grads *g) { free(g->dq), free(g->dk), free(g->dv); }

/* ---- the double reference ---------------------------------------------------------------- */

/* dense double copies: q (T, H hd), k, v (B, cap, Hkv hd) */
typedef struct {
    int B, L, H, Hkv, hd, cap;
    double scale;
    const int64_t *prefix;
    double *q, *k, *v;
} dprob;

static dprob to_double(const prob *p) {
    size_t T = rows_of(p), KV = (size_t)p->B * p->cap, Q = (size_t)p->H * p->hd, K = (size_t)p->Hkv * p->hd;
    dprob d = {p->B, p->L, p->H, p->Hkv, p->hd, p->cap, p->scale, p->prefix, dalloc(T * Q), dalloc(KV * K), dalloc(KV * K)};
    for (size_t t = 0; t < T; t++)
        for (size_t c = 0; c < Q; c++) d.q[t * Q + c] = p->q[t * p->ld_q + c];
    for (size_t t = 0; t < KV; t++)
        for (size_t c = 0; c < K; c++) d.k[t * K + c] = p->k[t * p->ld_kv + c], d.v[t * K + c] = p->v[t * p->ld_kv + c];
    return d;
}

static void free_dprob(dprob *d) { free(d->q), free(d->k), free(d->v); }

/* o (T, H hd) dense, lse (B, H, L) (either may be NULL); returns sum(o * w) when w != NULL */
static double ref_forward(const dprob *d, double *o, double *lse, const float *w) {
    const int hd = d->hd, hpg = d->H / d->Hkv;
    const size_t Q = (size_t)d->H * hd, K = (size_t)d->Hkv * hd;
    double J = 0;
    double *s = dalloc((size_t)d->cap), *ov = dalloc(hd);
    for (int b = 0; b < d->B; b++)
        for (int h = 0; h < d->H; h++) {
            const int g = h / hpg;
            const int64_t pre = d->prefix ? d->prefix[b] : 0;
            for (int l = 0; l < d->L; l++) {
                const size_t t = (size_t)b * d->L + l;
                const double *ql = d->q + t * Q + (size_t)h * hd;
                const int64_t n = pre + l + 1; /* keys 0 .. prefix + l */
                double m = -INFINITY;
                for (int64_t j = 0; j < n; j++) {
                    const double *kj = d->k + ((size_t)b * d->cap + j) * K + (size_t)g * hd;
                    double dot = 0;
                    for (int c = 0; c < hd; c++) dot += ql[c] * kj[c];
                    s[j] = d->scale * dot;
                    m = fmax(m, s[j]);
                }
                double sum = 0;
                for (int c = 0; c < hd; c++) ov[c] = 0;
                for (int64_t j = 0; j < n; j++) {
                    double e = exp(s[j] - m);
                    sum += e;
                    const double *vj = d->v + ((size_t)b * d->cap + j) * K + (size_t)g * hd;
                    for (int c = 0; c < hd; c++) ov[c] += e * vj[c];
                }
                for (int c = 0; c < hd; c++) {
                    double oc = ov[c] / sum;
                    if (o) o[t * Q + (size_t)h * hd + c] = oc;
                    if (w) J += oc * w[t * Q + (size_t)h * hd + c];
                }
                if (lse) lse[((size_t)b * d->H + h) * d->L + l] = m + log(sum);
            }
        }
    free(s), free(ov);
    return J;
}

/* relative norm error of a strided fp32 matrix (rows, cols; stride ld) against a dense double one */
static double rel_fd(const float *a, int ld, const double *ref, size_t rows, int cols) {
    double num = 0, den = 0;
    for (size_t t = 0; t < rows; t++)
        for (int c = 0; c < cols; c++) {
            double x = a[t * ld + c], r = ref[t * cols + c];
            if (!isfinite(x)) return INFINITY;
            num += (x - r) * (x - r), den += r * r;
        }
    return sqrt(num) / (sqrt(den) + 1e-300);
}

/* max over rows of |lse - ref| / (1 + |ref|) */
static double lse_err(const float *lse, const double *ref, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)lse[i] - ref[i]) / (1 + fabs(ref[i]));
        worst = fmax(worst, isfinite(e) ? e : INFINITY);
    }
    return worst;
}

/* ---- (a) the forward --------------------------------------------------------------------- */

static int check_forward(int B, int L, int H, int Hkv, int hd, int with_prefix, float qmul, uint64_t seed) {
    static const int64_t pres[3] = {5, 70, 130};
    const int64_t pre1[1] = {37};
    prob p = make_prob(B, L, H, Hkv, hd, with_prefix ? (B == 1 ? pre1 : pres) : NULL, with_prefix ? 9 : 0, qmul, seed);
    dprob d = to_double(&p);
    size_t T = rows_of(&p), nl = (size_t)B * H * L;
    double *o = dalloc(T * H * hd), *lr = dalloc(nl);
    ref_forward(&d, o, lr, NULL);
    float *out = falloc(T * p.ld_out), *lse = falloc(nl);
    int bad = 0;
    printf("forward B %d L %3d H %d Hkv %d hd %2d prefix %-3s q x%-5g", B, L, H, Hkv, hd, with_prefix ? "yes" : "no",
           qmul);
    for (int kernel = 1; kernel <= 2; kernel++) {
        op_forward(&p, out, lse, 0, kernel);
        double e = rel_fd(out, p.ld_out, o, T, H * hd), el = lse_err(lse, lr, nl);
        int dmg = padding_damage(out, T, H * hd, p.ld_out);
        int ok = e < FWD_TOL && el < FWD_TOL && dmg == 0;
        printf("  %s: out %.1e lse %.1e%s", kname[kernel], e, el, ok ? "" : (dmg ? " padding FAIL" : " FAIL"));
        bad += !ok;
    }
    printf("\n");
    free(o), free(lr), free(out), free(lse);
    free_dprob(&d), free_prob(&p);
    return bad;
}

static void test_forward(void **st) {
    (void)st;
    int bad = 0;
    const int Bs[2] = {1, 3}, Ls[4] = {1, 7, 64, 200}, HH[3][2] = {{2, 2}, {8, 2}, {4, 2}}, hds[2] = {8, 64};
    uint64_t seed = 100;
    for (int ib = 0; ib < 2; ib++)
        for (int il = 0; il < 4; il++)
            for (int ih = 0; ih < 3; ih++)
                for (int id = 0; id < 2; id++)
                    for (int pf = 0; pf < 2; pf++)
                        bad += check_forward(Bs[ib], Ls[il], HH[ih][0], HH[ih][1], hds[id], pf, 1.0f, seed++);
    /* sharp softmax (scores of a few units) and huge scores (hundreds: the max subtracted) */
    bad += check_forward(3, 200, 8, 2, 64, 1, 8.0f, 300);
    bad += check_forward(1, 130, 4, 4, 16, 0, 100.0f, 301);
    bad += check_forward(3, 70, 4, 1, 24, 1, 30.0f, 302); /* MQA, hd not a multiple of 16 */
    bad += check_forward(2, 100, 8, 2, 128, 1, 2.0f, 303); /* hd 128 (NemotronH, Jamba) */
    bad += check_forward(1, 70, 2, 1, 80, 0, 1.0f, 304);
    assert_int_equal(bad, 0);
}

/* ---- (b) decode steps and windows -------------------------------------------------------- */

/* bitwise (tol 0) or relative norm error <= tol, over n floats of two strided buffers */
static int same(const float *a, const float *b, size_t rows, int cols, int ld_a, int ld_b, double tol, double *err) {
    double num = 0, den = 0;
    int diff = 0;
    for (size_t t = 0; t < rows; t++)
        for (int c = 0; c < cols; c++) {
            float x = a[t * ld_a + c], y = b[t * ld_b + c];
            diff += memcmp(&x, &y, sizeof x) != 0;
            num += ((double)x - y) * ((double)x - y), den += (double)y * y;
        }
    *err = sqrt(num) / (sqrt(den) + 1e-300);
    return tol == 0 ? diff == 0 : *err <= tol;
}

/* lse values: bitwise (tol 0) or |a - b| <= tol (1 + |b|) */
static int same_lse(const float *a, const float *b, int n, double tol) {
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += tol == 0 ? memcmp(&a[i], &b[i], sizeof(float)) != 0 : !(fabs((double)a[i] - b[i]) <= tol * (1 + fabs(b[i])));
    return bad == 0;
}

/* Two sequences of N0 and N1 = N0 + 5 tokens. One pass: a forward per sequence (B = 1, the
 * keys of the call). Decode: sequence 1's first 5 tokens as a window (B = 1, L = 5), then N0
 * steps of both (B = 2, L = 1, prefix {s, s + 5}), each appending its key and value to the
 * cache first. Windows: W1 = 70 and 75 tokens per sequence, then one call of both with
 * L = N0 - 70 and prefix {70, 75}. */
static int check_decode(int H, int Hkv, int hd, int kernel, uint64_t seed) {
    const int N0 = 150, off = 5, N[2] = {N0, N0 + off}, W1[2] = {70, 70 + off}, cap = N0 + off + 11;
    const double tol = kernel == CPU_ATTENTION_KERNEL_BLAS ? 1e-6 : 0;
    /* full sequences: q (N, H hd), k, v (N, Hkv hd) per sequence, dense */
    const int Qw = H * hd, Kw = Hkv * hd;
    float *qf[2], *kf[2], *vf[2], *ref[2], *rlse[2];
    int bad = 0;
    for (int b = 0; b < 2; b++) {
        prob p = make_prob(1, N[b], H, Hkv, hd, NULL, 0, 2.0f, seed + 10 * b);
        qf[b] = falloc((size_t)N[b] * Qw), kf[b] = falloc((size_t)N[b] * Kw), vf[b] = falloc((size_t)N[b] * Kw);
        for (int l = 0; l < N[b]; l++) {
            memcpy(qf[b] + (size_t)l * Qw, p.q + (size_t)l * p.ld_q, Qw * sizeof(float));
            memcpy(kf[b] + (size_t)l * Kw, p.k + (size_t)l * p.ld_kv, Kw * sizeof(float));
            memcpy(vf[b] + (size_t)l * Kw, p.v + (size_t)l * p.ld_kv, Kw * sizeof(float));
        }
        ref[b] = falloc((size_t)N[b] * p.ld_out), rlse[b] = falloc((size_t)H * N[b]);
        op_forward(&p, ref[b], rlse[b], 0, kernel);
        free_prob(&p);
    }
    /* the cache (2, cap, Kw), NaN where not yet written */
    float *kc = falloc((size_t)2 * cap * Kw), *vc = falloc((size_t)2 * cap * Kw);
    ffill(kc, (size_t)2 * cap * Kw, NAN), ffill(vc, (size_t)2 * cap * Kw, NAN);
    const int ld_out = Qw + 2;
    float *out = falloc((size_t)2 * ld_out * (N0 + off)), *lse = falloc((size_t)2 * H * (N0 + off));
    cpu_attention_args a;
    memset(&a, 0, sizeof a);
    a.H = H, a.Hkv = Hkv, a.hd = hd, a.scale = (float)(1.0 / sqrt(hd)), a.ld_q = Qw, a.ld_kv = Kw;
    a.kv_batch_stride = (size_t)cap * Kw, a.out = out, a.ld_out = ld_out, a.lse = lse, a.kernel = kernel;
    double e, worst = 0;
    int dbad = 0, wbad = 0;
    /* decode: the prefill window of sequence 1 */
    for (int j = 0; j < off; j++) {
        memcpy(kc + ((size_t)cap + j) * Kw, kf[1] + (size_t)j * Kw, Kw * sizeof(float));
        memcpy(vc + ((size_t)cap + j) * Kw, vf[1] + (size_t)j * Kw, Kw * sizeof(float));
    }
    int64_t pre[2] = {0, 0};
    a.B = 1, a.L = off, a.q = qf[1], a.k = kc + (size_t)cap * Kw, a.v = vc + (size_t)cap * Kw, a.prefix = pre;
    give_scratch(&a, 0, 0);
    cpu_attention_forward(&a);
    free(a.scratch);
    dbad += !same(out, ref[1], off, Qw, ld_out, Qw + 2, tol, &e), worst = fmax(worst, e);
    for (int h = 0; h < H; h++) dbad += !same_lse(lse + (size_t)h * off, rlse[1] + (size_t)h * N[1], off, tol);
    /* the steps */
    float *qs = falloc((size_t)2 * Qw);
    a.B = 2, a.L = 1, a.q = qs, a.k = kc, a.v = vc;
    give_scratch(&a, 0, 0);
    for (int s = 0; s < N0; s++) {
        for (int b = 0; b < 2; b++) {
            pre[b] = s + (b ? off : 0);
            memcpy(kc + ((size_t)b * cap + pre[b]) * Kw, kf[b] + (size_t)pre[b] * Kw, Kw * sizeof(float));
            memcpy(vc + ((size_t)b * cap + pre[b]) * Kw, vf[b] + (size_t)pre[b] * Kw, Kw * sizeof(float));
            memcpy(qs + (size_t)b * Qw, qf[b] + (size_t)pre[b] * Qw, Qw * sizeof(float));
        }
        cpu_attention_forward(&a);
        for (int b = 0; b < 2; b++) {
            dbad += !same(out + (size_t)b * ld_out, ref[b] + (size_t)pre[b] * (Qw + 2), 1, Qw, 0, 0, tol, &e);
            worst = fmax(worst, e);
            for (int h = 0; h < H; h++)
                dbad += !same_lse(lse + (size_t)b * H + h, rlse[b] + (size_t)h * N[b] + pre[b], 1, tol);
        }
    }
    free(a.scratch);
    printf("decode H %d Hkv %d hd %2d %-5s: %d steps of 2 sequences (at lengths s and s + %d) vs one pass: %s "
           "(rel %.1e)%s\n", H, Hkv, hd, kname[kernel], N0, off, tol == 0 ? "bitwise" : "to 1e-6", worst,
           dbad ? "  FAIL" : "");
    /* windows: W1[b] tokens of each sequence alone, then N0 - 70 of both with prefix {70, 75} */
    ffill(kc, (size_t)2 * cap * Kw, NAN), ffill(vc, (size_t)2 * cap * Kw, NAN);
    for (int b = 0; b < 2; b++) {
        memcpy(kc + (size_t)b * cap * Kw, kf[b], (size_t)N[b] * Kw * sizeof(float));
        memcpy(vc + (size_t)b * cap * Kw, vf[b], (size_t)N[b] * Kw * sizeof(float));
    }
    worst = 0;
    for (int b = 0; b < 2; b++) {
        pre[0] = 0;
        a.B = 1, a.L = W1[b], a.q = qf[b], a.k = kc + (size_t)b * cap * Kw, a.v = vc + (size_t)b * cap * Kw;
        a.prefix = b ? pre : NULL; /* NULL and {0} alike */
        give_scratch(&a, 0, 0);
        cpu_attention_forward(&a);
        free(a.scratch);
        wbad += !same(out, ref[b], W1[b], Qw, ld_out, Qw + 2, tol, &e), worst = fmax(worst, e);
    }
    const int L2 = N0 - W1[0];
    float *q2 = falloc((size_t)2 * L2 * Qw);
    for (int b = 0; b < 2; b++) memcpy(q2 + (size_t)b * L2 * Qw, qf[b] + (size_t)W1[b] * Qw, (size_t)L2 * Qw * sizeof(float));
    pre[0] = W1[0], pre[1] = W1[1];
    a.B = 2, a.L = L2, a.q = q2, a.k = kc, a.v = vc, a.prefix = pre;
    give_scratch(&a, 0, 0);
    cpu_attention_forward(&a);
    free(a.scratch);
    for (int b = 0; b < 2; b++) {
        wbad += !same(out + (size_t)b * L2 * ld_out, ref[b] + (size_t)W1[b] * (Qw + 2), L2, Qw, ld_out, Qw + 2, tol, &e);
        worst = fmax(worst, e);
        for (int h = 0; h < H; h++)
            wbad += !same_lse(lse + ((size_t)b * H + h) * L2, rlse[b] + (size_t)h * N[b] + W1[b], L2, tol);
    }
    printf("windows H %d Hkv %d hd %2d %-5s: %d + %d and %d + %d tokens vs one pass: %s (rel %.1e)%s\n", H, Hkv, hd,
           kname[kernel], W1[0], L2, W1[1], L2, tol == 0 ? "bitwise" : "to 1e-6", worst, wbad ? "  FAIL" : "");
    bad += dbad + wbad;
    for (int b = 0; b < 2; b++) free(qf[b]), free(kf[b]), free(vf[b]), free(ref[b]), free(rlse[b]);
    free(kc), free(vc), free(out), free(lse), free(qs), free(q2);
    return bad;
}

static void test_decode_and_windows(void **st) {
    (void)st;
    int bad = 0;
    for (int kernel = 1; kernel <= 2; kernel++) {
        bad += check_decode(8, 2, 64, kernel, 400);
        bad += check_decode(2, 2, 8, kernel, 410);
        bad += check_decode(4, 1, 24, kernel, 420);
    }
    assert_int_equal(bad, 0);
}

/* ---- (c) the backward -------------------------------------------------------------------- */

/* test_ops_grad.c's machinery: J(x) = sum(out * w) of the fp32 op, Richardson's extrapolation
 * of two central differences (steps eps, eps / 2) along a random unit direction and three
 * coordinates, against g . v within 1e-3 |g . v| + 8 ulps of each output's terms * 3 / eps +
 * 1e-5 ||g||; a random direction must carry a signal. */
typedef double (*objective_fn)(void *ctx, double *mag);

typedef struct {
    const char *name;
    float *x;
    const float *g;
    int rows, cols, ld;
} grad_input;

static double worst_ratio;

static float *frand(size_t n, float lo, float hi, uint64_t seed) {
    float *p = falloc(n);
    tu_fill_uniform(p, n, lo, hi, seed);
    return p;
}

static double eval_at(const grad_input *in, objective_fn f, void *ctx, const float *save, const double *v, double s,
                      float *xs, double *mag) {
    size_t n = (size_t)in->rows * in->cols;
    for (size_t i = 0; i < n; i++) {
        xs[i] = (float)(save[i] + s * v[i]);
        in->x[(i / in->cols) * in->ld + i % in->cols] = xs[i];
    }
    return f(ctx, mag);
}

static int fd_along(const char *op, const grad_input *in, objective_fn f, void *ctx, double eps, const double *v,
                    const char *what, int need_signal) {
    size_t n = (size_t)in->rows * in->cols;
    float *save = falloc(n), *xp = falloc(n), *xm = falloc(n);
    for (size_t i = 0; i < n; i++) save[i] = in->x[(i / in->cols) * in->ld + i % in->cols];
    double an[2] = {0, 0}, d[2], mag = 0, gn = 0;
    for (int h = 0; h < 2; h++) {
        double s = h ? eps / 2 : eps, mp, mm;
        double jp = eval_at(in, f, ctx, save, v, s, xp, &mp);
        double jm = eval_at(in, f, ctx, save, v, -s, xm, &mm);
        d[h] = (jp - jm) / (2 * s);
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
    double noise = NOISE_ULPS * U32 * mag * 3 / eps;
    double err = fabs(fd - a), bound = REL_TOL * fabs(a) + noise + 1e-5 * sqrt(gn);
    int ok = err <= bound;
    int weak = need_signal && !(fabs(a) > 2 * (noise + 1e-5 * sqrt(gn)));
    printf("  %-12s %-3s %-10s analytic % .6e  fd % .6e  |diff| %.2e  bound %.2e%s%s\n", op, in->name, what, a, fd, err,
           bound, ok ? "" : "  FAIL", weak ? "  FAIL (gradient too small to test)" : "");
    if (bound > 0 && err / bound > worst_ratio) worst_ratio = err / bound;
    free(save), free(xp), free(xm);
    return !ok + weak;
}

static int fd_check(const char *op, const grad_input *in, objective_fn f, void *ctx, double eps, uint64_t seed,
                    int need_signal) {
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
    free(v), free(r);
    return bad;
}

typedef struct {
    prob *p;
    float *out, *w; /* w dense (T, H hd) */
    int kernel;
} att_ctx;

/* J = sum(out * w) of the fp32 forward; *mag = || w * S ||, S_{l,c} = sum_j p_{l,j} |v_{j,c}|
 * (1 + scale sum_d |q_{l,d} k_{j,d}|): the terms of o and of the scores behind it */
static double att_obj(void *ctx, double *mag) {
    att_ctx *c = ctx;
    prob *p = c->p;
    op_forward(p, c->out, NULL, 0, c->kernel);
    const int hd = p->hd, hpg = p->H / p->Hkv, Q = p->H * hd;
    double J = 0, m2 = 0;
    double *s = dalloc(p->cap), *sm = dalloc(p->cap), *S = dalloc(hd);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++)
            for (int l = 0; l < p->L; l++) {
                const size_t t = (size_t)b * p->L + l;
                const float *ql = p->q + t * p->ld_q + (size_t)h * hd;
                const int n = l + 1;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    const float *kj = p->k + ((size_t)b * p->cap + j) * p->ld_kv + (size_t)(h / hpg) * hd;
                    double dot = 0, ab = 0;
                    for (int d = 0; d < hd; d++) dot += (double)ql[d] * kj[d], ab += fabs((double)ql[d] * kj[d]);
                    s[j] = p->scale * dot, sm[j] = 1 + p->scale * ab;
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j < n; j++) sum += exp(s[j] - mx);
                for (int d = 0; d < hd; d++) S[d] = 0;
                for (int j = 0; j < n; j++) {
                    const float *vj = p->v + ((size_t)b * p->cap + j) * p->ld_kv + (size_t)(h / hpg) * hd;
                    double pj = exp(s[j] - mx) / sum;
                    for (int d = 0; d < hd; d++) S[d] += pj * fabs((double)vj[d]) * sm[j];
                }
                for (int d = 0; d < hd; d++) {
                    double wi = c->w[t * Q + (size_t)h * hd + d];
                    J += (double)c->out[t * p->ld_out + (size_t)h * hd + d] * wi;
                    m2 += (wi * S[d]) * (wi * S[d]);
                }
            }
    free(s), free(sm), free(S);
    *mag = sqrt(m2);
    return J;
}

/* d_out (T, ld_out) = w, NaN padding (never read) */
static float *dout_of(const prob *p, const float *w) {
    size_t T = rows_of(p);
    const int Q = p->H * p->hd;
    float *g = falloc(T * p->ld_out);
    ffill(g, T * p->ld_out, NAN);
    for (size_t t = 0; t < T; t++) memcpy(g + t * p->ld_out, w + t * Q, Q * sizeof(float));
    return g;
}

static int check_backward_fd(int B, int L, int H, int Hkv, int hd, float qmul, uint64_t seed) {
    int bad = 0;
    for (int kernel = 1; kernel <= 2; kernel++) {
        prob p = make_prob(B, L, H, Hkv, hd, NULL, 0, qmul, seed);
        size_t T = rows_of(&p), KV = (size_t)B * p.cap;
        float *w = frand(T * H * hd, -1, 1, seed + 7), *out = falloc(T * p.ld_out), *lse = falloc((size_t)B * H * L);
        op_forward(&p, out, lse, 0, kernel);
        float *dout = dout_of(&p, w);
        grads g = op_backward(&p, out, lse, dout, 0, kernel);
        bad += padding_damage(g.dq, T, H * hd, p.ld_q) + padding_damage(g.dk, KV, Hkv * hd, p.ld_kv) +
               padding_damage(g.dv, KV, Hkv * hd, p.ld_kv);
        printf("backward vs finite differences (%s) B %d L %d H %d Hkv %d hd %d q x%g\n", kname[kernel], B, L, H, Hkv,
               hd, qmul);
        att_ctx c = {&p, falloc(T * p.ld_out), w, kernel};
        grad_input ins[3] = {{"q", p.q, g.dq, (int)T, H * hd, p.ld_q},
                             {"k", p.k, g.dk, (int)KV, Hkv * hd, p.ld_kv},
                             {"v", p.v, g.dv, (int)KV, Hkv * hd, p.ld_kv}};
        worst_ratio = 0;
        /* L = 1: one key per row, p = 1, dq = dk = 0: nothing to detect along q and k */
        for (int i = 0; i < 3; i++) bad += fd_check("attention", &ins[i], att_obj, &c, 1e-2, seed + 20 + i, L > 1 || i == 2);
        printf("  attention worst |diff| / bound %.3f\n", worst_ratio);
        free(w), free(out), free(lse), free(dout), free(c.out);
        free_grads(&g), free_prob(&p);
    }
    return bad;
}

/* every coordinate against central differences (step 1e-5) of the double reference */
static int check_backward_ref(int B, int L, int H, int Hkv, int hd, uint64_t seed) {
    prob p = make_prob(B, L, H, Hkv, hd, NULL, 0, 2.0f, seed);
    size_t T = rows_of(&p), KV = (size_t)B * p.cap;
    const int Q = H * hd, K = Hkv * hd;
    float *w = frand(T * Q, -1, 1, seed + 7);
    dprob d = to_double(&p);
    double *fq = dalloc(T * Q), *fk = dalloc(KV * K), *fv = dalloc(KV * K);
    struct {
        double *x, *out;
        size_t n;
    } ins[3] = {{d.q, fq, T * Q}, {d.k, fk, KV * K}, {d.v, fv, KV * K}};
    for (int i = 0; i < 3; i++)
        for (size_t e = 0; e < ins[i].n; e++) {
            double save = ins[i].x[e], h = 1e-5;
            ins[i].x[e] = save + h;
            double jp = ref_forward(&d, NULL, NULL, w);
            ins[i].x[e] = save - h;
            double jm = ref_forward(&d, NULL, NULL, w);
            ins[i].x[e] = save;
            ins[i].out[e] = (jp - jm) / (2 * h);
        }
    int bad = 0;
    printf("backward vs central differences of the double reference B %d L %d H %d Hkv %d hd %d:\n", B, L, H, Hkv, hd);
    /* loops by both ways (the one pass needs hd % 16 == 0), BLAS by the two passes */
    const int ways[3][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (int w0 = 0; w0 < 3; w0++) {
        const int kernel = ways[w0][0], path = ways[w0][1];
        if (path == 2 && hd % 16) continue;
        float *out = falloc(T * p.ld_out), *lse = falloc((size_t)B * H * L), *dout = dout_of(&p, w);
        op_forward(&p, out, lse, 0, kernel);
        grads g = op_backward_path(&p, out, lse, dout, 0, kernel, path);
        double eq = rel_fd(g.dq, p.ld_q, fq, T, Q), ek = rel_fd(g.dk, p.ld_kv, fk, KV, K), ev = rel_fd(g.dv, p.ld_kv, fv, KV, K);
        int dmg = padding_damage(g.dq, T, Q, p.ld_q) + padding_damage(g.dk, KV, K, p.ld_kv) + padding_damage(g.dv, KV, K, p.ld_kv);
        int ok = eq < BWD_TOL && ek < BWD_TOL && ev < BWD_TOL && dmg == 0;
        printf("  %s, %s: dq %.1e dk %.1e dv %.1e%s\n", kname[kernel], path == 1 ? "two passes" : "one pass", eq, ek, ev,
               ok ? "" : (dmg ? " padding FAIL" : " FAIL"));
        bad += !ok;
        free(out), free(lse), free(dout), free_grads(&g);
    }
    free(w), free(fq), free(fk), free(fv), free_dprob(&d), free_prob(&p);
    return bad;
}

static void test_backward(void **st) {
    (void)st;
    int bad = 0;
    bad += check_backward_fd(2, 7, 4, 2, 8, 2.0f, 500);    /* GQA 2, one tile */
    bad += check_backward_fd(1, 70, 4, 1, 16, 2.0f, 510);  /* MQA, two tiles of queries and keys */
    bad += check_backward_fd(1, 130, 2, 2, 32, 2.0f, 520); /* MHA, three tiles */
    bad += check_backward_fd(3, 1, 4, 2, 8, 1.0f, 530);    /* one key */
    bad += check_backward_fd(1, 16, 2, 1, 128, 3.0f, 531); /* hd 128 */
    bad += check_backward_ref(2, 7, 4, 2, 8, 540);
    bad += check_backward_ref(1, 70, 4, 1, 8, 541);
    bad += check_backward_ref(2, 66, 2, 2, 20, 542);
    bad += check_backward_ref(2, 70, 4, 2, 16, 543); /* GQA, both ways */
    bad += check_backward_ref(2, 10, 2, 1, 128, 544);
    assert_int_equal(bad, 0);
}

/* ---- (d) RoPE ---------------------------------------------------------------------------- */

/* the double reference; fp32_angle: the angle as rope.h documents it (fp32 inv_freq and
 * product), else everything in double */
static void rope_ref(double *y, const float *x, int ld, int B, int L, int nh, int hd, int rot, float base,
                     const int64_t *pos0, int inverse, int fp32_angle) {
    const int half = rot / 2;
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            const size_t t = (size_t)b * L + l;
            const int64_t pos = (pos0 ? pos0[b] : 0) + l;
            for (int h = 0; h < nh; h++) {
                const float *xh = x + t * ld + (size_t)h * hd;
                double *yh = y + t * nh * hd + (size_t)h * hd;
                for (int c = 0; c < hd; c++) yh[c] = xh[c];
                for (int i = 0; i < half; i++) {
                    double ang;
                    if (fp32_angle) {
                        float inv = 1.0f / powf(base, (float)(2 * i) / (float)rot);
                        ang = (double)((float)pos * inv);
                    } else
                        ang = (double)pos * pow((double)base, -2.0 * i / rot);
                    double c = cos(ang), s = inverse ? -sin(ang) : sin(ang), x1 = xh[i], x2 = xh[i + half];
                    yh[i] = x1 * c - x2 * s, yh[i + half] = x2 * c + x1 * s;
                }
            }
        }
}

static int check_rope(int B, int L, int nh, int hd, int rot, float base, const int64_t *pos0, uint64_t seed) {
    const int ld = nh * hd + 3;
    const size_t T = (size_t)B * L;
    float *x = falloc(T * ld);
    ffill(x, T * ld, SENTINEL);
    float *r = frand(T * nh * hd, -1, 1, seed);
    for (size_t t = 0; t < T; t++) memcpy(x + t * ld, r + t * nh * hd, (size_t)nh * hd * sizeof(float));
    double *y = dalloc(T * nh * hd), *ye = dalloc(T * nh * hd);
    int64_t pmax = 0;
    for (int b = 0; b < B; b++) pmax = (pos0 ? pos0[b] : 0) + L - 1 > pmax ? (pos0 ? pos0[b] : 0) + L - 1 : pmax;
    int bad = 0;
    float *x0 = fcopy(x, T * ld);
    for (int inverse = 0; inverse < 2; inverse++) {
        memcpy(x, x0, T * ld * sizeof(float));
        rope_ref(y, x, ld, B, L, nh, hd, rot, base, pos0, inverse, 1);
        rope_ref(ye, x, ld, B, L, nh, hd, rot, base, pos0, inverse, 0);
        cpu_rope_apply(x, ld, B, L, nh, hd, rot, base, pos0, inverse);
        double e = rel_fd(x, ld, y, T, nh * hd), ee = rel_fd(x, ld, ye, T, nh * hd);
        /* the angle's fp32 rounding: inv_freq within an ulp or two, the product half an ulp of
         * pmax: |d angle| <= 2^-24 pmax (3 + ...), the output moves by that */
        double etol = 1e-6 + 4 * U32 * (double)pmax;
        int unchanged = 0;
        for (size_t t = 0; t < T; t++)
            for (int h = 0; h < nh; h++)
                for (int c = rot; c < hd; c++) unchanged += memcmp(&x[t * ld + h * hd + c], &x0[t * ld + h * hd + c], 4) != 0;
        int dmg = padding_damage(x, T, nh * hd, ld);
        int ok = e < 1e-6 && ee < etol && unchanged == 0 && dmg == 0;
        printf("rope B %d L %d heads %d hd %d rot %d base %g pos0 %s%s: vs double (fp32 angle) %.1e, vs exact angles %.1e "
               "(bound %.1e), channels >= rot %s%s\n", B, L, nh, hd, rot, base, pos0 ? "offset" : "0",
               inverse ? " inverse" : "", e, ee, etol, unchanged ? "CHANGED" : "unchanged", ok ? "" : "  FAIL");
        bad += !ok;
    }
    /* inverse(apply(x)) = x to rounding */
    memcpy(x, x0, T * ld * sizeof(float));
    cpu_rope_apply(x, ld, B, L, nh, hd, rot, base, pos0, 0);
    cpu_rope_apply(x, ld, B, L, nh, hd, rot, base, pos0, 1);
    double ei = 0, den = 0;
    for (size_t t = 0; t < T; t++)
        for (int c = 0; c < nh * hd; c++) {
            double d = (double)x[t * ld + c] - x0[t * ld + c];
            ei += d * d, den += (double)x0[t * ld + c] * x0[t * ld + c];
        }
    ei = sqrt(ei / den);
    printf("  inverse(apply(x)) vs x: %.1e%s\n", ei, ei < 1e-6 ? "" : "  FAIL");
    bad += !(ei < 1e-6);
    /* 1 and 2 threads bitwise */
    int max_threads = omp_get_max_threads(), tbad = 0;
    float *x1 = fcopy(x0, T * ld);
    cpu_rope_apply(x1, ld, B, L, nh, hd, rot, base, pos0, 0);
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        memcpy(x, x0, T * ld * sizeof(float));
        cpu_rope_apply(x, ld, B, L, nh, hd, rot, base, pos0, 0);
        tbad += memcmp(x, x1, T * ld * sizeof(float)) != 0;
    }
    omp_set_num_threads(max_threads);
    bad += tbad;
    free(x), free(r), free(y), free(ye), free(x0), free(x1);
    return bad;
}

/* q . k after RoPE at positions (p, p') and (p + d, p' + d): equal up to the angles' fp32
 * rounding (|d angle| <= 2^-24 * 2 pos per angle, four angles per pair of channels) */
static int check_rope_relative(int hd, int rot, float base, uint64_t seed) {
    const int n = 200;
    float qk[2 * 64];
    assert_true(hd <= 64);
    tu_fill_uniform(qk, (size_t)2 * hd, -1, 1, seed);
    float *pr = frand((size_t)4 * n, 0, 1, seed + 1);
    double worst = 0, worst_ref = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int64_t p = (int64_t)(pr[4 * i] * 300), pp = (int64_t)(pr[4 * i + 1] * 300), d = (int64_t)(pr[4 * i + 2] * 700);
        /* rows: q at p, q at p + d, k at p', k at p' + d (B = 4 sequences of one row each) */
        int64_t pos[4] = {p, p + d, pp, pp + d};
        float x[4 * 64];
        for (int r = 0; r < 4; r++) memcpy(x + r * hd, qk + (r < 2 ? 0 : hd), hd * sizeof(float));
        double y[4 * 64];
        rope_ref(y, x, hd, 4, 1, 1, hd, rot, base, pos, 0, 0);
        cpu_rope_apply(x, hd, 4, 1, 1, hd, rot, base, pos, 0);
        double s1 = 0, s2 = 0, r1 = 0, r2 = 0, nq = 0, nk = 0;
        for (int c = 0; c < hd; c++) {
            s1 += (double)x[c] * x[2 * hd + c], s2 += (double)x[hd + c] * x[3 * hd + c];
            r1 += y[c] * y[2 * hd + c], r2 += y[hd + c] * y[3 * hd + c];
            nq += (double)qk[c] * qk[c], nk += (double)qk[hd + c] * qk[hd + c];
        }
        double scale = sqrt(nq * nk), pm = (double)(p > pp ? p : pp) + d;
        double tol = 1e-6 + 8 * U32 * pm; /* four fp32 angles */
        double e = fabs(s1 - s2) / scale;
        worst = fmax(worst, e / tol), worst_ref = fmax(worst_ref, fabs(r1 - r2) / scale);
        bad += !(e <= tol);
    }
    bad += !(worst_ref < 1e-12);
    printf("rope hd %d rot %d: q(p) . k(p') vs q(p + d) . k(p' + d), %d pairs (positions < 1000): worst |diff| / bound "
           "%.3f (double reference %.1e)%s\n", hd, rot, n, worst, worst_ref, bad ? "  FAIL" : "");
    free(pr);
    return bad;
}

static void test_rope(void **st) {
    (void)st;
    const int64_t off[2] = {1000, 3}, off3[3] = {17, 0, 250};
    int bad = 0;
    bad += check_rope(2, 9, 3, 16, 8, 10000.0f, off, 600); /* partial rot_dim */
    bad += check_rope(3, 40, 2, 64, 64, 10000.0f, off3, 601);
    bad += check_rope(1, 33, 4, 64, 32, 500000.0f, NULL, 602);
    bad += check_rope(2, 5, 2, 10, 6, 10000.0f, off, 603);
    bad += check_rope_relative(16, 8, 10000.0f, 610);
    bad += check_rope_relative(64, 64, 10000.0f, 611);
    assert_int_equal(bad, 0);
}

/* ---- (e) thread counts ------------------------------------------------------------------- */

static int check_threads(int B, int L, int H, int Hkv, int hd, int with_prefix, int kernel, uint64_t seed) {
    const int64_t pres[3] = {3, 100, 64};
    prob p = make_prob(B, L, H, Hkv, hd, with_prefix ? pres : NULL, with_prefix ? 4 : 0, 2.0f, seed);
    size_t T = rows_of(&p), nl = (size_t)B * H * L, KV = (size_t)B * p.cap;
    float *o1 = falloc(T * p.ld_out), *l1 = falloc(nl), *o2 = falloc(T * p.ld_out), *l2 = falloc(nl);
    int max_threads = omp_get_max_threads(), bad = 0;
    omp_set_num_threads(1);
    op_forward(&p, o1, l1, 0, kernel);
    float *w = frand(T * H * hd, -1, 1, seed + 3), *dout = dout_of(&p, w);
    grads g1 = {NULL, NULL, NULL};
    if (!with_prefix) g1 = op_backward(&p, o1, l1, dout, 0, kernel);
    omp_set_num_threads(max_threads);
    const char *what[2] = {"omp_set_num_threads(2)", "threads = 2"};
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 0) omp_set_num_threads(2);
        int th = mode == 0 ? 0 : 2;
        op_forward(&p, o2, l2, th, kernel);
        int d = memcmp(o1, o2, T * p.ld_out * sizeof(float)) != 0 || memcmp(l1, l2, nl * sizeof(float)) != 0;
        int db = 0;
        if (!with_prefix) {
            /* the choice, and both ways by force where both exist (loops, hd % 16 == 0) */
            for (int path = 0; path <= 2; path++) {
                if (path == 2 && (kernel != CPU_ATTENTION_KERNEL_LOOPS || hd % 16)) continue;
                grads g2 = op_backward_path(&p, o1, l1, dout, th, kernel, path);
                db += memcmp(g1.dq, g2.dq, T * p.ld_q * sizeof(float)) != 0 ||
                      memcmp(g1.dk, g2.dk, KV * p.ld_kv * sizeof(float)) != 0 ||
                      memcmp(g1.dv, g2.dv, KV * p.ld_kv * sizeof(float)) != 0;
                free_grads(&g2);
            }
        }
        omp_set_num_threads(max_threads);
        printf("threads B %d L %d H %d Hkv %d hd %d prefix %s %-5s, %s vs 1: forward %s%s%s\n", B, L, H, Hkv, hd,
               with_prefix ? "yes" : "no", kname[kernel], what[mode], d ? "DIFFERS" : "bitwise equal",
               with_prefix ? "" : ", backward (chosen, two passes, one pass) ",
               with_prefix ? "" : (db ? "DIFFERS" : "bitwise equal"));
        bad += d + db;
    }
    /* called from inside a caller's parallel region: asks for 2 threads, granted 1 */
    {
        cpu_attention_args a = args_of(&p, o2, l2, 2, kernel);
        give_scratch(&a, 2, 0);
        int levels = omp_get_max_active_levels();
        omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
        {
#pragma omp single
            cpu_attention_forward(&a);
        }
        omp_set_max_active_levels(levels);
        free(a.scratch);
        int d = memcmp(o1, o2, T * p.ld_out * sizeof(float)) != 0 || memcmp(l1, l2, nl * sizeof(float)) != 0;
        printf("  granted fewer threads than asked: %s\n", d ? "DIFFERS" : "bitwise equal");
        bad += d;
    }
    free(o1), free(l1), free(o2), free(l2), free(w), free(dout);
    if (!with_prefix) free_grads(&g1);
    free_prob(&p);
    return bad;
}

static void test_threads_bitwise(void **st) {
    (void)st;
    int bad = 0;
    for (int kernel = 1; kernel <= 2; kernel++) {
        bad += check_threads(3, 150, 8, 2, 64, 0, kernel, 700);
        bad += check_threads(3, 150, 8, 2, 64, 1, kernel, 701);
        bad += check_threads(2, 97, 4, 4, 24, 0, kernel, 702);
        bad += check_threads(3, 1, 6, 1, 16, 1, kernel, 703); /* decode, MQA */
        bad += check_threads(2, 130, 4, 2, 128, 0, kernel, 704);
    }
    assert_int_equal(bad, 0);
}

/* ---- (f) one key ------------------------------------------------------------------------- */

static void test_one_key(void **st) {
    (void)st;
    int bad = 0;
    for (int kernel = 1; kernel <= 2; kernel++) {
        prob p = make_prob(3, 1, 4, 2, 24, NULL, 0, 3.0f, 800);
        const int hd = p.hd, hpg = p.H / p.Hkv;
        size_t T = rows_of(&p);
        float *out = falloc(T * p.ld_out), *lse = falloc((size_t)p.B * p.H);
        op_forward(&p, out, lse, 0, kernel);
        float *w = frand(T * p.H * hd, -1, 1, 801), *dout = dout_of(&p, w);
        grads g = op_backward(&p, out, lse, dout, 0, kernel);
        int vbits = 0;
        double le = 0, dvb = 0, dqk = 0;
        for (int b = 0; b < p.B; b++)
            for (int h = 0; h < p.H; h++) {
                const float *v = p.v + (size_t)b * p.ld_kv + (size_t)(h / hpg) * hd, *o = out + (size_t)b * p.ld_out + (size_t)h * hd;
                vbits += memcmp(v, o, hd * sizeof(float)) != 0;
                double dot = 0;
                for (int d = 0; d < hd; d++)
                    dot += (double)p.q[(size_t)b * p.ld_q + h * hd + d] * p.k[(size_t)b * p.ld_kv + (h / hpg) * hd + d];
                le = fmax(le, fabs(lse[(size_t)b * p.H + h] - p.scale * dot) / (1 + fabs(p.scale * dot)));
            }
        /* dv = sum over the group's heads of d_out; dq = dk = 0 */
        for (int b = 0; b < p.B; b++)
            for (int g0 = 0; g0 < p.Hkv; g0++)
                for (int d = 0; d < hd; d++) {
                    double s = 0;
                    for (int h = g0 * hpg; h < (g0 + 1) * hpg; h++) s += w[(size_t)b * p.H * hd + h * hd + d];
                    dvb = fmax(dvb, fabs(g.dv[(size_t)b * p.ld_kv + g0 * hd + d] - s));
                    dqk = fmax(dqk, fabs(g.dk[(size_t)b * p.ld_kv + g0 * hd + d]));
                }
        for (size_t t = 0; t < T; t++)
            for (int c = 0; c < p.H * hd; c++) dqk = fmax(dqk, fabs(g.dq[t * p.ld_q + c]));
        int ok = vbits == 0 && le < 1e-6 && dvb < 1e-6 && dqk < 1e-5;
        printf("one key (L 1, prefix 0) %s: out = v %s, lse vs scale q . k %.1e, dv vs sum d_out %.1e, max |dq|, |dk| "
               "%.1e%s\n", kname[kernel], vbits ? "NO" : "bitwise", le, dvb, dqk, ok ? "" : "  FAIL");
        bad += !ok;
        free(out), free(lse), free(w), free(dout), free_grads(&g), free_prob(&p);
    }
    assert_int_equal(bad, 0);
}

/* ---- the benchmark ----------------------------------------------------------------------- */

/* Wall time and CPU time of one call, the best of reps. The machine this runs on may be
 * shared: with one thread the CPU time counts only the cycles the thread got, so its rates
 * hold under load where the wall time's do not (with more threads the process CPU time
 * reaches the other threads' cycles only at the scheduler's ticks: not used). */
typedef struct {
    double wall, cpu;
} timing;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static timing best_time(void (*fn)(const cpu_attention_args *), const cpu_attention_args *a, int reps) {
    timing best = {INFINITY, INFINITY};
    for (int r = 0; r < reps; r++) {
        double t = now(), c = cpu_now();
        fn(a);
        t = now() - t, c = cpu_now() - c;
        best.wall = t < best.wall ? t : best.wall;
        best.cpu = c < best.cpu ? c : best.cpu;
    }
    return best;
}

/* with nt threads: wall time; with one: CPU time */
typedef struct {
    double wall, core;
} rates;

static rates time_both(void (*fn)(const cpu_attention_args *), cpu_attention_args *a, int nt, int reps) {
    const int th = a->threads; /* the scratch was sized for nt threads: enough for one */
    omp_set_num_threads(nt);
    a->threads = nt;
    timing w = best_time(fn, a, reps);
    omp_set_num_threads(1);
    a->threads = 1;
    timing c = best_time(fn, a, reps);
    omp_set_num_threads(nt);
    a->threads = th;
    return (rates){w.wall, c.cpu};
}

static void backward_two(const cpu_attention_args *a) { cpu_attention_backward_path(a, 1); }
static void backward_one(const cpu_attention_args *a) { cpu_attention_backward_path(a, 2); }

static float *gA, *gB, *gC;
static void sgemm_1024(const cpu_attention_args *a) {
    (void)a;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1024, 1024, 1024, 1.0f, gA, 1024, gB, 1024, 0.0f, gC, 1024);
}

/* B 1, L 1024, H 4 (Hkv 4 and 1), hd 64, forward and backward: with the test's threads, wall
 * ms, tokens/s and causal GFLOP/s (forward 4 hd per (row, key) pair, backward 10: its 5
 * products) as a fraction of cblas_sgemm 1024^3's rate with the same threads; with one thread,
 * the CPU time's GFLOP/s and its fraction of the one-thread SGEMM's */
static void test_benchmark(void **st) {
    (void)st;
    const int B = 1, L = 1024, H = 4, hd = 64, reps = 7, nt = omp_get_max_threads();
    gA = frand((size_t)1024 * 1024, -1, 1, 1), gB = frand((size_t)1024 * 1024, -1, 1, 2), gC = falloc((size_t)1024 * 1024);
    cpu_attention_args none;
    memset(&none, 0, sizeof none);
    const rates tg = time_both(sgemm_1024, &none, nt, 5);
    const double gfl = 2.0 * 1024 * 1024 * 1024 / 1e9, sg_wall = gfl / tg.wall, sg_core = gfl / tg.core;
    free(gA), free(gB), free(gC);
    const double pairs = (double)H * L * (L + 1) / 2, ffl = 4.0 * hd * pairs / 1e9, bfl = 10.0 * hd * pairs / 1e9;
    printf("benchmark B %d L %d H %d hd %d. SGEMM 1024^3: %.1f GFLOP/s (%d threads, wall), %.1f (1 thread, CPU time). "
           "Causal GFLOP: forward %.3f, backward %.3f (5 products)\n", B, L, H, hd, sg_wall, nt, sg_core, ffl, bfl);
    for (int Hkv = H; Hkv >= 1; Hkv /= 4) {
        prob p = make_prob(B, L, H, Hkv, hd, NULL, 0, 1.0f, 900);
        size_t T = rows_of(&p);
        float *out = falloc(T * p.ld_out), *lse = falloc((size_t)B * H * L);
        float *w = frand(T * H * hd, -1, 1, 901), *dout = dout_of(&p, w);
        float *dq = falloc(T * p.ld_q), *dk = falloc((size_t)B * p.cap * p.ld_kv), *dv = falloc((size_t)B * p.cap * p.ld_kv);
        const int items = B * Hkv, one = 7 * items >= 5 * ((items + nt - 1) / nt) * nt;
        /* the loops with the backward by its choice, by the other way, BLAS (two passes) */
        for (int run = 0; run < 3; run++) {
            const int kernel = run < 2 ? CPU_ATTENTION_KERNEL_LOOPS : CPU_ATTENTION_KERNEL_BLAS;
            cpu_attention_args a = args_of(&p, out, lse, 0, kernel);
            a.d_out = dout, a.dq = dq, a.dk = dk, a.dv = dv;
            a.scratch_floats = cpu_attention_scratch_floats(&a, nt, 1), a.threads = nt;
            a.scratch = falloc(a.scratch_floats);
            const int way = run == 2 ? 1 : (run == 0 ? (one ? 2 : 1) : (one ? 1 : 2)); /* 1 two passes, 2 one pass */
            rates tf = time_both(cpu_attention_forward, &a, nt, reps);
            rates tb = time_both(way == 2 ? backward_one : backward_two, &a, nt, reps);
            printf("  Hkv %d %-5s fwd %5.2f ms %6.0f tok/s %5.1f GFLOP/s %.2f SGEMM, 1 thread %5.1f GFLOP/s %.2f SGEMM | "
                   "bwd %-10s %5.2f ms %6.0f tok/s %5.1f GFLOP/s %.2f SGEMM, 1 thread %5.1f GFLOP/s %.2f SGEMM%s\n", Hkv,
                   kname[kernel], tf.wall * 1e3, B * L / tf.wall, ffl / tf.wall, ffl / tf.wall / sg_wall, ffl / tf.core,
                   ffl / tf.core / sg_core, way == 2 ? "one pass" : "two passes", tb.wall * 1e3, B * L / tb.wall,
                   bfl / tb.wall, bfl / tb.wall / sg_wall, bfl / tb.core, bfl / tb.core / sg_core,
                   run == 0 ? " (the default)" : "");
            free(a.scratch);
        }
        free(out), free(lse), free(w), free(dout), free(dq), free(dk), free(dv), free_prob(&p);
        if (Hkv == 1) break;
    }
    /* one decode step against a cache of 1024 keys, B 1 */
    {
        const int64_t pre[1] = {L - 1};
        prob p = make_prob(1, 1, H, H, hd, pre, 0, 1.0f, 902);
        float *out = falloc(p.ld_out), *lse = falloc(H);
        for (int kernel = 1; kernel <= 2; kernel++) {
            cpu_attention_args a = args_of(&p, out, lse, nt, kernel);
            give_scratch(&a, nt, 0);
            rates t = time_both(cpu_attention_forward, &a, nt, 50);
            printf("  decode step, %d keys, %-5s: %.1f us (%d threads, wall), %.1f us (1 thread, CPU time)\n", L,
                   kname[kernel], t.wall * 1e6, nt, t.core * 1e6);
            free(a.scratch);
        }
        free(out), free(lse), free_prob(&p);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),         cmocka_unit_test(test_decode_and_windows),
        cmocka_unit_test(test_backward),        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_threads_bitwise), cmocka_unit_test(test_one_key),
        cmocka_unit_test(test_benchmark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
