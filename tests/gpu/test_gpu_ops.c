/* test_gpu_ops.c: the CUDA embedding, RMSNorm, MLP activation (relu2, SwiGLU), cross-entropy,
 * argmax, sum, sumsq, AdamW and bf16 conversion ops (libssm/cuda/embedding.cu, rmsnorm.cu,
 * activation.cu, cross_entropy.cu, adamw.cu) against the CPU ops (libssm/cpu/embedding.c,
 * rmsnorm.c, activation.c) or plain double loops (softmax,
 * sums, ssm_adamw_step's arithmetic) on fresh random inputs of awkward sizes: T = 1 and 37,
 * D = 13 (the scalar paths) and 768, 4097, 8192, V = 16 and 50280 with 3 and 1000 rows, a row
 * stride above V, logits aliased by their gradient, repeated tokens (runs of one token over
 * many of the embedding backward's chunks, and the same bits on a second run), argmax ties, misaligned
 * sums, AdamW with and without clipping and with a non-finite norm.
 *
 * Each GPU output is poisoned with all-ones bytes (NaN in fp32 and bf16) before each run, so
 * an unwritten element fails; accumulated outputs (dx, dw, d_table) start from random values
 * on both sides. Errors are relative norms ||gpu - ref|| / ||ref|| in double. Bounds: fp32
 * 1e-5 (sums in another order, ex2.approx in the softmax); bf16 outputs 1e-2 (the store's
 * rounding, 2^-9); exact where the op only moves or rounds data (embedding forward, argmax,
 * bf16 conversion); sums 1e-10 of sum |x| (both sides add 5e7 doubles in different orders) and the same bits on a second run.
 * Exit status: 0 all passed, 1 a check failed, 77 no GPU (meson reports "skipped"). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "activation.h"
#include "cpu_ops.h"
#include "gpu_test.h"
#include "ssm/cuda_ops.h"


static const char *dtname(ssm_dtype d) { return d == SSM_DTYPE_F32 ? "f32" : "bf16"; }

/* ---- embedding ----------------------------------------------------------------------------- */

/* V distinct tokens over T rows: with V < T every token repeats */
static void test_embedding(int T, int D, int V) {
    int32_t *tok = xmalloc((size_t)T * 4);
    for (int t = 0; t < T; t++) tok[t] = irand(V);
    tok[T - 1] = tok[0]; /* a repeat even when T = 2 */
    float *table = falloc((size_t)V * D), *dout = falloc((size_t)T * D);
    float *dtab = falloc((size_t)V * D), *out = falloc((size_t)T * D);
    fill(table, (size_t)V * D, -1, 1), fill(dout, (size_t)T * D, -1, 1), fill(dtab, (size_t)V * D, -1, 1);
    int32_t *g_tok = to_dev_bytes(tok, (size_t)T * 4);
    float *g_table = to_dev(table, (size_t)V * D, SSM_DTYPE_F32);
    float *g_dout = to_dev(dout, (size_t)T * D, SSM_DTYPE_F32);
    float *g_dtab = to_dev(dtab, (size_t)V * D, SSM_DTYPE_F32);
    float *h_dtab0 = falloc((size_t)V * D);
    memcpy(h_dtab0, dtab, (size_t)V * D * 4);
    float *g_out = dev_poisoned((size_t)T * D, SSM_DTYPE_F32);
    const size_t wsb = cuda_embedding_backward_workspace(T, D);
    void *ws = dev_poisoned(wsb, SSM_DTYPE_F32); /* wsb floats: more than enough, all NaN */
    OK(cuda_embedding_forward(g_out, g_tok, g_table, T, D, 0));
    OK(cuda_embedding_backward(g_dtab, g_tok, g_dout, T, D, ws, wsb, 0));
    cpu_embedding_forward(out, tok, table, T, D);
    cpu_embedding_backward(dtab, tok, dout, T, D);
    float *h_out = from_dev(g_out, (size_t)T * D, SSM_DTYPE_F32);
    float *h_dtab = from_dev(g_dtab, (size_t)V * D, SSM_DTYPE_F32);
    /* deterministic: the same start again gives the same bits */
    CK(cudaMemcpy(g_dtab, h_dtab0, (size_t)V * D * 4, cudaMemcpyHostToDevice));
    OK(cuda_embedding_backward(g_dtab, g_tok, g_dout, T, D, ws, wsb, 0));
    float *h_dtab2 = from_dev(g_dtab, (size_t)V * D, SSM_DTYPE_F32);
    int ok = 1;
    printf("embedding     T=%-5d D=%-5d V=%-4d:", T, D, V);
    report("out", rel_err(h_out, out, (size_t)T * D), 0.0, &ok);
    report("d_table", rel_err(h_dtab, dtab, (size_t)V * D), 1e-5, &ok);
    report("d_table bits on a second run", memcmp(h_dtab, h_dtab2, (size_t)V * D * 4) ? 1 : 0, 0, &ok);
    end_case(ok);
    free(tok), free(table), free(dout), free(dtab), free(out), free(h_out), free(h_dtab), free(h_dtab0), free(h_dtab2);
    cudaFree(g_tok), cudaFree(g_table), cudaFree(g_dout), cudaFree(g_dtab), cudaFree(g_out), cudaFree(ws);
}

/* ---- rmsnorm ------------------------------------------------------------------------------- */

static void test_rmsnorm(int T, int D, ssm_dtype dt) {
    const size_t n = (size_t)T * D;
    float *x = falloc(n), *w = falloc(D), *g = falloc(n), *dx = falloc(n), *dw = falloc(D);
    fill(x, n, -2, 2), fill(w, D, 0.5f, 1.5f), fill(g, n, -1, 1), fill(dx, n, -1, 1), fill(dw, D, -1, 1);
    for (int t = 0; t < T; t += 5) /* rows of very different scales */
        for (int i = 0; i < D; i++) x[(size_t)t * D + i] *= 30.0f;
    if (dt == SSM_DTYPE_BF16) round_bf16(g, n);
    float *g_x = to_dev(x, n, SSM_DTYPE_F32), *g_w = to_dev(w, D, SSM_DTYPE_F32);
    void *g_g = to_dev(g, n, dt);
    float *g_dx = to_dev(dx, n, SSM_DTYPE_F32), *g_dw = to_dev(dw, D, SSM_DTYPE_F32);
    void *g_out = dev_poisoned(n, dt);
    float *g_rstd = dev_poisoned(T, SSM_DTYPE_F32);
    const size_t wsb = cuda_rmsnorm_backward_workspace(T, D);
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    CK(cudaMemset(ws, 0xff, wsb));
    OK(cuda_rmsnorm_forward(g_out, g_rstd, g_x, g_w, T, D, 1e-5f, dt, 0));
    float *out = falloc(n), *rstd = falloc(T);
    cpu_rmsnorm_forward(out, rstd, x, w, T, D, 1e-5f);
    float *h_out = from_dev(g_out, n, dt), *h_rstd = from_dev(g_rstd, T, SSM_DTYPE_F32);
    /* the backward from the CPU's rstd on both sides: the forward was checked above */
    CK(cudaMemcpy(g_rstd, rstd, (size_t)T * 4, cudaMemcpyHostToDevice));
    OK(cuda_rmsnorm_backward(g_dx, g_dw, g_g, g_x, g_w, g_rstd, T, D, dt, ws, wsb, 0));
    cpu_rmsnorm_backward(dx, dw, g, x, w, rstd, T, D);
    float *h_dx = from_dev(g_dx, n, SSM_DTYPE_F32), *h_dw = from_dev(g_dw, D, SSM_DTYPE_F32);
    int ok = 1;
    printf("rmsnorm       %-4s T=%-5d D=%-5d:", dtname(dt), T, D);
    report("out", rel_err(h_out, out, n), dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2, &ok);
    report("rstd", rel_err(h_rstd, rstd, T), 1e-5, &ok);
    report("dx", rel_err(h_dx, dx, n), 1e-5, &ok);
    report("dw", rel_err(h_dw, dw, D), 1e-5, &ok);
    end_case(ok);
    free(x), free(w), free(g), free(dx), free(dw), free(out), free(rstd);
    free(h_out), free(h_rstd), free(h_dx), free(h_dw);
    cudaFree(g_x), cudaFree(g_w), cudaFree(g_g), cudaFree(g_dx), cudaFree(g_dw), cudaFree(g_out);
    cudaFree(g_rstd), cudaFree(ws);
}

/* ---- MLP activations ------------------------------------------------------------------------ */

/* T rows of F at row strides F + pad (a, d a) and U + pad (u, d u), U = F or 2F (swiglu); the
 * CPU twin on the same (bf16-rounded) inputs, packed */
static void test_activation(int swiglu, int T, int F, int pad, ssm_dtype dt) {
    const int U = swiglu ? 2 * F : F, lda = F + pad, ldu = U + pad;
    float *u = falloc((size_t)T * ldu), *da = falloc((size_t)T * lda);
    fill(u, (size_t)T * ldu, -4, 4), fill(da, (size_t)T * lda, -1, 1);
    for (int i = 0; i < T * ldu; i += 11) u[i] = 0.0f; /* relu's kink */
    if (dt == SSM_DTYPE_BF16) round_bf16(u, (size_t)T * ldu), round_bf16(da, (size_t)T * lda);
    float *up = falloc((size_t)T * U), *dap = falloc((size_t)T * F);
    for (int t = 0; t < T; t++) {
        memcpy(up + (size_t)t * U, u + (size_t)t * ldu, U * sizeof(float));
        memcpy(dap + (size_t)t * F, da + (size_t)t * lda, F * sizeof(float));
    }
    float *a = falloc((size_t)T * F), *du = falloc((size_t)T * U);
    if (swiglu) cpu_swiglu_forward(a, up, T, F), cpu_swiglu_backward(du, dap, up, T, F);
    else cpu_relu2_forward(a, up, T, F), cpu_relu2_backward(du, dap, up, T, F);
    void *g_u = to_dev(u, (size_t)T * ldu, dt), *g_da = to_dev(da, (size_t)T * lda, dt);
    void *g_a = dev_poisoned((size_t)T * lda, dt), *g_du = dev_poisoned((size_t)T * ldu, dt);
    if (swiglu) {
        OK(cuda_swiglu_forward(g_a, lda, g_u, ldu, T, F, dt, 0));
        OK(cuda_swiglu_backward(g_du, ldu, g_da, lda, g_u, ldu, T, F, dt, 0));
    } else {
        OK(cuda_relu2_forward(g_a, lda, g_u, ldu, T, F, dt, 0));
        OK(cuda_relu2_backward(g_du, ldu, g_da, lda, g_u, ldu, T, F, dt, 0));
    }
    float *h_a = from_dev(g_a, (size_t)T * lda, dt), *h_du = from_dev(g_du, (size_t)T * ldu, dt);
    /* the padding stays untouched (poisoned) */
    size_t touched = 0;
    for (int t = 0; t < T; t++) {
        for (int f = F; f < lda; f++) touched += !isnan(h_a[(size_t)t * lda + f]);
        for (int f = U; f < ldu; f++) touched += !isnan(h_du[(size_t)t * ldu + f]);
    }
    const double bound = dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2;
    int ok = 1;
    printf("%-13s %-4s T=%-5d F=%-5d ld+%d:", swiglu ? "swiglu" : "relu2", dtname(dt), T, F, pad);
    report("a", rel_err2(h_a, lda, a, F, T, F), bound, &ok);
    report("du", rel_err2(h_du, ldu, du, U, T, U), bound, &ok);
    report("padding written", (double)touched, 0, &ok);
    end_case(ok);
    free(u), free(da), free(up), free(dap), free(a), free(du), free(h_a), free(h_du);
    cudaFree(g_u), cudaFree(g_da), cudaFree(g_a), cudaFree(g_du);
}

/* ---- cross-entropy, argmax ------------------------------------------------------------------ */

/* reference per row in double: nll, entropy and (softmax - onehot) * scale */
static void ce_reference(float *nll, float *ent, float *dl, const float *logits, int ld,
                         const int32_t *tgt, int rows, int V, float scale) {
    for (int r = 0; r < rows; r++) {
        const float *l = logits + (size_t)r * ld;
        double mx = l[0], s = 0, sl = 0;
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        for (int v = 0; v < V; v++) s += exp(l[v] - mx);
        for (int v = 0; v < V; v++) sl += exp(l[v] - mx) / s * (l[v] - mx);
        const double lse = mx + log(s);
        nll[r] = tgt[r] < 0 ? 0.0f : (float)(lse - l[tgt[r]]);
        ent[r] = (float)(log(s) - sl);
        for (int v = 0; v < V; v++)
            dl[(size_t)r * V + v] = tgt[r] < 0 ? 0.0f
                                               : (float)((exp(l[v] - lse) - (v == tgt[r])) * scale);
    }
}

/* alias 1: dlogits written over the fp32 logits; alias 2: bf16 logits (dt bf16) and dlogits
 * over them (cuda_cross_entropy_bf16, the training head's) */
static void test_cross_entropy(int rows, int V, int ld, ssm_dtype dt, int alias) {
    const size_t n = (size_t)rows * ld;
    float *logits = falloc(n);
    fill(logits, n, -4, 4);
    int32_t *tgt = xmalloc((size_t)rows * 4);
    int scored = 0;
    for (int r = 0; r < rows; r++) {
        tgt[r] = r % 7 == 3 ? -1 : irand(V); /* unscored rows too */
        scored += tgt[r] >= 0;
        float *l = logits + (size_t)r * ld;
        if (r % 4 == 1) /* a confident row: one large logit */
            l[irand(V)] += 25.0f;
        if (r % 4 == 2) /* a shifted row */
            for (int v = 0; v < V; v++) l[v] += 60.0f;
    }
    const float scale = 1.0f / (scored ? scored : 1);
    const int bf_in = alias == 2;
    if (bf_in) round_bf16(logits, n); /* the reference sees the bf16 values */
    float *nll = falloc(rows), *ent = falloc(rows), *dl = falloc((size_t)rows * V);
    ce_reference(nll, ent, dl, logits, ld, tgt, rows, V, scale);
    float *g_logits = to_dev(logits, n, bf_in ? SSM_DTYPE_BF16 : SSM_DTYPE_F32);
    int32_t *g_tgt = to_dev_bytes(tgt, (size_t)rows * 4);
    float *g_nll = dev_poisoned(rows, SSM_DTYPE_F32), *g_ent = dev_poisoned(rows, SSM_DTYPE_F32);
    void *g_dl = alias ? (void *)g_logits : dev_poisoned(n, dt);
    if (bf_in) OK(cuda_cross_entropy_bf16(g_nll, g_ent, g_dl, g_logits, ld, g_tgt, rows, V, scale, 0));
    else OK(cuda_cross_entropy(g_nll, g_ent, g_dl, dt, g_logits, ld, g_tgt, rows, V, scale, 0));
    float *h_nll = from_dev(g_nll, rows, SSM_DTYPE_F32), *h_ent = from_dev(g_ent, rows, SSM_DTYPE_F32);
    float *h_dl = from_dev(g_dl, n, dt);
    /* the nll alone, no entropy, no gradient */
    CK(cudaMemset(g_nll, 0xff, (size_t)rows * 4));
    if (alias) {
        cudaFree(g_logits);
        g_logits = to_dev(logits, n, bf_in ? SSM_DTYPE_BF16 : SSM_DTYPE_F32);
    }
    if (bf_in) OK(cuda_cross_entropy_bf16(g_nll, NULL, NULL, g_logits, ld, g_tgt, rows, V, scale, 0));
    else OK(cuda_cross_entropy(g_nll, NULL, NULL, dt, g_logits, ld, g_tgt, rows, V, scale, 0));
    float *h_nll2 = from_dev(g_nll, rows, SSM_DTYPE_F32);
    int ok = 1;
    printf("cross_entropy %-4s rows=%-4d V=%-5d ld=%-5d%s:", dtname(dt), rows, V, ld,
           bf_in ? " bf16 in, aliased" : alias ? " aliased" : "");
    report("nll", rel_err(h_nll, nll, rows), 1e-5, &ok);
    report("entropy", rel_err(h_ent, ent, rows), 1e-5, &ok);
    report("dlogits", rel_err2(h_dl, ld, dl, V, rows, V), dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2, &ok);
    report("nll-only", rel_err(h_nll2, nll, rows), 1e-5, &ok);
    end_case(ok);
    free(logits), free(tgt), free(nll), free(ent), free(dl), free(h_nll), free(h_ent), free(h_dl);
    free(h_nll2);
    cudaFree(g_logits), cudaFree(g_tgt), cudaFree(g_nll), cudaFree(g_ent);
    if (!alias) cudaFree(g_dl);
}

static void test_argmax(int rows, int V, int ld) {
    const size_t n = (size_t)rows * ld;
    float *logits = falloc(n);
    int32_t *ref = xmalloc((size_t)rows * 4), *got = xmalloc((size_t)rows * 4);
    fill(logits, n, -3, 3);
    for (int r = 0; r < rows; r++) {
        float *l = logits + (size_t)r * ld;
        if (r % 3 == 0) { /* a tie of the maximum at two or three places */
            const int a = irand(V), b = irand(V), c = irand(V);
            l[a] = l[b] = 10.0f;
            if (r % 2) l[c] = 10.0f;
        }
        if (r % 5 == 4) /* a constant row: index 0 */
            for (int v = 0; v < V; v++) l[v] = -1.5f;
        int best = 0;
        for (int v = 1; v < V; v++) best = l[v] > l[best] ? v : best;
        ref[r] = best;
    }
    float *g_logits = to_dev(logits, n, SSM_DTYPE_F32);
    int32_t *g_out = dev_poisoned(rows, SSM_DTYPE_F32);
    OK(cuda_argmax(g_out, g_logits, ld, rows, V, 0));
    from_dev_bytes(got, g_out, (size_t)rows * 4);
    int wrong = 0;
    for (int r = 0; r < rows; r++) wrong += got[r] != ref[r];
    int ok = 1;
    printf("argmax        rows=%-4d V=%-5d ld=%-5d:", rows, V, ld);
    report("wrong rows", wrong, 0, &ok);
    end_case(ok);
    free(logits), free(ref), free(got);
    cudaFree(g_logits), cudaFree(g_out);
}

/* ---- sum, sumsq ---------------------------------------------------------------------------- */

/* the sums of x[off .. off + n) (off != 0: a misaligned start) */
static void test_sums(size_t n, int off) {
    float *x = falloc(n + off);
    fill(x, n + off, -1, 1);
    double s = 0, ss = 0, sa = 0;
    for (size_t i = 0; i < n; i++) {
        const double v = x[off + i];
        s += v, ss += v * v, sa += fabs(v);
    }
    float *g_x = to_dev(x, n + off, SSM_DTYPE_F32);
    const size_t wsb = cuda_sum_workspace(n) > cuda_sumsq_workspace(n) ? cuda_sum_workspace(n)
                                                                     : cuda_sumsq_workspace(n);
    void *ws;
    double *g_out;
    CK(cudaMalloc(&ws, wsb));
    CK(cudaMalloc((void **)&g_out, 4 * sizeof(double)));
    CK(cudaMemset(g_out, 0xff, 4 * sizeof(double)));
    OK(cuda_sum(g_out, g_x + off, n, ws, wsb, 0));
    OK(cuda_sumsq(g_out + 1, g_x + off, n, ws, wsb, 0));
    OK(cuda_sum(g_out + 2, g_x + off, n, ws, wsb, 0));
    OK(cuda_sumsq(g_out + 3, g_x + off, n, ws, wsb, 0));
    double h[4];
    from_dev_bytes(h, g_out, sizeof h);
    int ok = 1;
    printf("sum, sumsq    n=%-8zu offset=%d:", n, off);
    report("sum", fabs(h[0] - s) / (sa > 0 ? sa : 1), 1e-10, &ok);
    report("sumsq", fabs(h[1] - ss) / (ss > 0 ? ss : 1), 1e-10, &ok);
    report("rerun bits differ", (double)(memcmp(h, h + 2, 2 * sizeof(double)) != 0), 0, &ok);
    end_case(ok);
    free(x);
    cudaFree(g_x), cudaFree(ws), cudaFree(g_out);
}

/* ---- AdamW, bf16 conversion ------------------------------------------------------------------ */

/* ssm_adamw_step's arithmetic (libssm/src/optimizer.c) over the tensors; 0 if norm not finite */
static int adamw_reference(float *p, float *m, float *v, const float *g, const cuda_adamw_tensor *t,
                           int nt, double sumsq, const cuda_adamw_args *a) {
    double norm = sqrt(sumsq);
    if (!isfinite(norm)) return 0;
    float clip = a->max_norm > 0 && norm > a->max_norm ? (float)(a->max_norm / (norm + 1e-6)) : 1.0f;
    for (int k = 0; k < nt; k++) {
        float wd = t[k].decay ? a->weight_decay : 0.0f;
        for (size_t i = t[k].offset; i < t[k].offset + t[k].numel; i++) {
            float gi = g[i] * clip;
            m[i] = a->beta1 * m[i] + (1.0f - a->beta1) * gi;
            v[i] = a->beta2 * v[i] + (1.0f - a->beta2) * gi * gi;
            float mhat = m[i] / a->bc1, vhat = v[i] / a->bc2;
            p[i] -= a->lr * (mhat / (sqrtf(vhat) + a->eps) + wd * p[i]);
        }
    }
    return 1;
}

/* mode 0: no clipping (max_norm above the norm), 1: clipped, 2: clipping off (max_norm 0),
 * 3: an infinite gradient (nothing may change); with_bf16: p_bf16 written too */
static void test_adamw(int mode, int with_bf16) {
    /* tensors of awkward sizes with a gap of 5 elements after each (never touched) */
    const size_t sizes[6] = {1, 13, 768, 77777, 3, 50280};
    cuda_adamw_tensor t[6];
    size_t n = 0;
    for (int k = 0; k < 6; k++) {
        t[k] = (cuda_adamw_tensor){n, sizes[k], k % 2};
        n += sizes[k] + 5;
    }
    float *p = falloc(n), *m = falloc(n), *v = falloc(n), *g = falloc(n);
    fill(p, n, -1, 1), fill(m, n, -0.1f, 0.1f), fill(v, n, 0, 0.01f), fill(g, n, -0.05f, 0.05f);
    if (mode == 3) g[t[3].offset + 100] = INFINITY;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    const float norm = (float)sqrt(ss);
    const float step = 7;
    cuda_adamw_args a = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                         .weight_decay = 0.1f,
                         .max_norm = mode == 0 ? 2 * norm + 1 : mode == 1 ? 0.25f * norm : mode == 2 ? 0 : 1,
                         .bc1 = 1.0f - powf(0.9f, step), .bc2 = 1.0f - powf(0.95f, step)};
    float *g_p = to_dev(p, n, SSM_DTYPE_F32), *g_m = to_dev(m, n, SSM_DTYPE_F32);
    float *g_v = to_dev(v, n, SSM_DTYPE_F32), *g_g = to_dev(g, n, SSM_DTYPE_F32);
    void *g_pb = with_bf16 ? dev_poisoned(n, SSM_DTYPE_BF16) : NULL;
    cuda_adamw_tensor *g_t = to_dev_bytes(t, sizeof t);
    const size_t wsb = cuda_sumsq_workspace(n);
    void *ws;
    double *g_ss;
    CK(cudaMalloc(&ws, wsb));
    CK(cudaMalloc((void **)&g_ss, sizeof(double)));
    OK(cuda_sumsq(g_ss, g_g, n, ws, wsb, 0));
    OK(cuda_adamw(g_p, g_pb, g_m, g_v, g_g, g_t, 6, g_ss, &a, 0));
    float *p0 = falloc(n);
    memcpy(p0, p, n * 4);
    const int stepped = adamw_reference(p, m, v, g, t, 6, ss, &a);
    float *hp = from_dev(g_p, n, SSM_DTYPE_F32), *hm = from_dev(g_m, n, SSM_DTYPE_F32);
    float *hv = from_dev(g_v, n, SSM_DTYPE_F32);
    double h_ss;
    from_dev_bytes(&h_ss, g_ss, sizeof h_ss);
    int ok = 1;
    static const char *modes[4] = {"no clip", "clipped", "clip off", "inf grad"};
    printf("adamw         %-8s bf16=%d n=%zu:", modes[mode], with_bf16, n);
    report("sumsq", mode == 3 ? (isinf(h_ss) ? 0 : 1) : fabs(h_ss - ss) / ss, 1e-10, &ok);
    if (stepped) {
        report("p", rel_err(hp, p, n), 1e-6, &ok);
        report("m", rel_err(hm, m, n), 1e-6, &ok);
        report("v", rel_err(hv, v, n), 1e-6, &ok);
        /* the update itself, not just p: (p - p0) on both sides */
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
            const double dg = (double)hp[i] - p0[i], dc = (double)p[i] - p0[i];
            num += (dg - dc) * (dg - dc), den += dc * dc;
        }
        report("update", den > 0 ? sqrt(num / den) : INFINITY, 1e-3, &ok);
    } else { /* exactly as they were */
        report("p changed", (double)(memcmp(hp, p, n * 4) != 0), 0, &ok);
        report("m changed", (double)(memcmp(hm, m, n * 4) != 0), 0, &ok);
        report("v changed", (double)(memcmp(hv, v, n * 4) != 0), 0, &ok);
    }
    if (with_bf16) { /* bf16(p) inside the tensors, the poison in the gaps and when not stepped */
        uint16_t *hb = xmalloc(n * 2);
        from_dev_bytes(hb, g_pb, n * 2);
        size_t wrong = 0, k = 0;
        for (size_t i = 0; i < n; i++) {
            while (k < 5 && i >= t[k].offset + t[k].numel + 5) k++;
            const int inside = i >= t[k].offset && i < t[k].offset + t[k].numel;
            wrong += hb[i] != (stepped && inside ? f2bf(hp[i]) : 0xffff);
        }
        report("p_bf16 wrong", (double)wrong, 0, &ok);
        free(hb);
    }
    end_case(ok);
    free(p), free(m), free(v), free(g), free(p0), free(hp), free(hm), free(hv);
    cudaFree(g_p), cudaFree(g_m), cudaFree(g_v), cudaFree(g_g), cudaFree(g_t), cudaFree(ws);
    cudaFree(g_ss);
    if (g_pb) cudaFree(g_pb);
}

/* x[off .. off + n) to bf16 at dst + doff, against the host's round to nearest even */
static void test_to_bf16(size_t n, int off, int doff) {
    float *x = falloc(n + off);
    fill(x, n + off, -3, 3);
    for (size_t i = 0; i < n + off; i += 97) x[i] *= 1e37f; /* large values */
    if (n + off > 4) x[1] = INFINITY, x[2] = -INFINITY, x[3] = -0.0f;
    if (n + off > 5) x[4] = 1.0f + 1.0f / 256; /* a tie: to even (1.0) */
    float *g_x = to_dev(x, n + off, SSM_DTYPE_F32);
    uint16_t *g_d = dev_poisoned(n + doff + 4, SSM_DTYPE_BF16);
    OK(cuda_to_bf16(g_d + doff, g_x + off, n, 0));
    uint16_t *h = xmalloc((n + doff + 4) * 2);
    from_dev_bytes(h, g_d, (n + doff + 4) * 2);
    size_t wrong = 0;
    for (size_t i = 0; i < n + doff + 4; i++) {
        const int inside = i >= (size_t)doff && i < n + doff;
        wrong += h[i] != (inside ? f2bf(x[off + i - doff]) : 0xffff);
    }
    int ok = 1;
    printf("to_bf16       n=%-8zu src+%d dst+%d:", n, off, doff);
    report("wrong", (double)wrong, 0, &ok);
    end_case(ok);
    free(x), free(h);
    cudaFree(g_x), cudaFree(g_d);
}

/* ---- argument checks (no launch) ------------------------------------------------------------ */

static void expect_arg_error(const char *what, ssm_status st, int *ok) {
    checks++;
    if (st == SSM_OK) failures++, *ok = 0, printf(" %s accepted FAIL", what);
}

static void test_arguments(void) {
    int ok = 1;
    float *f;
    CK(cudaMalloc((void **)&f, 4096));
    int32_t *i32 = (int32_t *)f;
    cuda_adamw_args a = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 0.1f, 0.05f};
    printf("arguments:");
    expect_arg_error("embedding T=0", cuda_embedding_forward(f, i32, f, 0, 4, 0), &ok);
    expect_arg_error("embedding NULL", cuda_embedding_backward(NULL, i32, f, 1, 4, f, 4096, 0), &ok);
    expect_arg_error("embedding workspace", cuda_embedding_backward(f, i32, f, 64, 4, f, 16, 0), &ok);
    expect_arg_error("rmsnorm dtype", cuda_rmsnorm_forward(f, f, f, f, 1, 4, 1e-5f, (ssm_dtype)7, 0), &ok);
    expect_arg_error("rmsnorm workspace",
                     cuda_rmsnorm_backward(f, f, f, f, f, f, 64, 8, SSM_DTYPE_F32, f, 4, 0), &ok);
    expect_arg_error("ce ld<V", cuda_cross_entropy(f, NULL, NULL, SSM_DTYPE_F32, f, 8, i32, 1, 16, 1, 0), &ok);
    expect_arg_error("ce bf16 alias", cuda_cross_entropy(f, NULL, f, SSM_DTYPE_BF16, f, 16, i32, 1, 16, 1, 0), &ok);
    expect_arg_error("argmax V=0", cuda_argmax(i32, f, 16, 1, 0, 0), &ok);
    expect_arg_error("sum workspace", cuda_sum((double *)f, f, 1 << 20, f, 0, 0), &ok);
    expect_arg_error("sumsq NULL", cuda_sumsq(NULL, f, 4, f, 4096, 0), &ok);
    expect_arg_error("adamw NULL", cuda_adamw(f, NULL, f, NULL, f, (cuda_adamw_tensor *)f, 1, (double *)f, &a, 0), &ok);
    a.bc1 = 0;
    expect_arg_error("adamw bc1=0", cuda_adamw(f, NULL, f, f, f, (cuda_adamw_tensor *)f, 1, (double *)f, &a, 0), &ok);
    expect_arg_error("to_bf16 NULL", cuda_to_bf16(NULL, f, 4, 0), &ok);
    expect_arg_error("relu2 ld<F", cuda_relu2_forward(f, 4, f, 8, 1, 8, SSM_DTYPE_F32, 0), &ok);
    expect_arg_error("swiglu ld<2F", cuda_swiglu_forward(f, 8, f, 8, 1, 8, SSM_DTYPE_F32, 0), &ok);
    expect_arg_error("swiglu dtype", cuda_swiglu_backward(f, 16, f, 8, f, 16, 1, 8, (ssm_dtype)7, 0), &ok);
    end_case(ok);
    CK(cudaDeviceSynchronize());
    cudaFree(f);
}

int main(void) {
    rng_state = 0x2545F4914F6CDD1Dull; /* this test's own random stream */
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_gpu_ops: skipped: no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    test_arguments();
    /* embedding: T, D, V (V < T: repeated tokens) */
    test_embedding(1, 13, 50);
    test_embedding(37, 13, 5);
    test_embedding(37, 768, 50280);
    test_embedding(4096, 768, 16);
    test_embedding(70000, 13, 4);   /* runs of ~17500 rows: many chunks each, odd D */
    test_embedding(300, 257, 300);  /* mostly single rows; D over one column tile */
    const ssm_dtype dts[2] = {SSM_DTYPE_F32, SSM_DTYPE_BF16};
    for (int di = 0; di < 2; di++) {
        const ssm_dtype dt = dts[di];
        /* rmsnorm: T, D (13, 4097: the scalar path; the rest 4 at a time) */
        test_rmsnorm(1, 13, dt);
        test_rmsnorm(37, 13, dt);
        test_rmsnorm(37, 768, dt);
        test_rmsnorm(1, 768, dt);
        test_rmsnorm(2000, 768, dt);  /* several rows per backward block */
        test_rmsnorm(37, 1100, dt);   /* 8 columns a thread, vector */
        test_rmsnorm(37, 4097, dt);   /* odd: 32 columns a thread, scalar */
        test_rmsnorm(37, 8192, dt);
        /* MLP activations: T, F, row padding */
        for (int swiglu = 0; swiglu < 2; swiglu++) {
            test_activation(swiglu, 1, 1, 0, dt);
            test_activation(swiglu, 37, 72, 3, dt);
            test_activation(swiglu, 300, 3072, 0, dt);
            test_activation(swiglu, 5, 4099, 1, dt);
        }
        /* cross-entropy: rows, V, ld, alias */
        test_cross_entropy(3, 16, 16, dt, 0);
        test_cross_entropy(1000, 16, 16, dt, 0);
        test_cross_entropy(3, 50280, 50280, dt, 0);
        test_cross_entropy(1000, 50280, 50280, dt, 0);
        test_cross_entropy(37, 37, 41, dt, 0); /* odd V and stride: the scalar path */
        test_cross_entropy(37, 1000, 1004, dt, 0);
    }
    test_cross_entropy(1000, 50280, 50280, SSM_DTYPE_F32, 1);
    test_cross_entropy(37, 37, 41, SSM_DTYPE_F32, 1);
    test_cross_entropy(1000, 50280, 50280, SSM_DTYPE_BF16, 2); /* the training head */
    test_cross_entropy(37, 37, 41, SSM_DTYPE_BF16, 2);
    test_cross_entropy(3, 16, 16, SSM_DTYPE_BF16, 2);
    /* argmax: rows, V, ld */
    test_argmax(3, 16, 16);
    test_argmax(1000, 16, 16);
    test_argmax(1000, 50280, 50280);
    test_argmax(37, 37, 41);
    /* sums: n, misalignment of the start */
    test_sums(0, 0);
    test_sums(1, 0);
    test_sums(7, 1);
    test_sums(4099, 0);
    test_sums(1000003, 0);
    test_sums(1000003, 3);
    test_sums(50000000, 1);
    /* AdamW: mode, with bf16 copy */
    for (int mode = 0; mode < 4; mode++) {
        test_adamw(mode, 1);
        test_adamw(mode, 0);
    }
    /* bf16 conversion: n, source and destination offsets (misaligned: the scalar path) */
    test_to_bf16(1, 0, 0);
    test_to_bf16(13, 0, 0);
    test_to_bf16(1000003, 0, 0);
    test_to_bf16(1000003, 1, 0);
    test_to_bf16(4099, 0, 3);
    return gpu_test_result();
}
