/* test_hidden.c: ssm_model_hidden, the hidden states of the last CPU forward.
 *   - layer n_layer (and -1) is the head's input: logits = hidden . embedding^T, and it is
 *     RMSNorm_f(layer n_layer - 1) * norm_f.weight;
 *   - layer i is the residual stream after block i: a model truncated to its first i + 1 blocks
 *     (same tensors, same norm_f) ends on the same stream, and its logits are the head applied
 *     to it; on a Mamba-1 model and on a mixed [mamba1, mamba2, mamba1] one;
 *   - ssm_forward_score leaves what ssm_forward leaves; windows with a carried state give the
 *     states of one long pass; ssm_backward and ssm_step leave them;
 *   - errors: NULL arguments, a layer outside [-1, n_layer], no forward yet, a GPU model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static ssm_config mamba1_config(void) {
    ssm_config c = ssm_config_default(13, 16, 3);
    c.d_state = 4;
    return c;
}

/* [mamba1, mamba2, mamba1]: D 8, the Mamba-2 layer with P 4 (H 4), G 2, N 4, chunk 3 */
static ssm_config mixed_config(void) {
    ssm_config c = ssm_config_default(16, 8, 3);
    c.d_state = 4;
    c.d_conv = 3;
    c.mamba2.headdim = 4;
    c.mamba2.d_state = 4;
    c.mamba2.ngroups = 2;
    c.mamba2.chunk_size = 3;
    c.layer_kind[1] = SSM_LAYER_MAMBA2;
    return c;
}

/* initialised, then moved off the initial values so that every layer and norm matters */
static ssm_model *make_model(const ssm_config *config, uint64_t seed) {
    ssm_config c = *config;
    TU_OK(ssm_config_validate(&c));
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    int D = c.d_model;
    tu_fill_uniform(m->params.norm_f, D, 0.6f, 1.4f, seed + 2);
    for (int l = 0; l < c.n_layer; l++) {
        tu_fill_uniform(m->params.layers[l].norm, D, 0.6f, 1.4f, seed + 3 + l);
        if (c.layer_kind[l] == SSM_LAYER_MAMBA1)
            for (int e = 0; e < c.d_inner; e++) m->params.layers[l].mamba1.dt_proj_b[e] += 1.5f;
    }
    return m;
}

/* The first n blocks of m as a model of their own: every tensor copied by name. */
static ssm_model *truncated(const ssm_model *m, int n) {
    ssm_config c = m->config;
    c.n_layer = n;
    ssm_model *t;
    TU_OK(ssm_model_create(&c, &t));
    for (int i = 0; i < t->n_tensors; i++) {
        const ssm_tensor_info *ti = &t->tensors[i], *mi = ssm_model_find_tensor(m, ti->name);
        assert_non_null(mi);
        assert_int_equal(mi->numel, ti->numel);
        memcpy(t->params_blob + ti->offset, m->params_blob + mi->offset, ti->numel * sizeof(float));
    }
    return t;
}

/* RMSNorm(x) * w in double, row by row: (T, D) */
static void rmsnorm_d(double *out, const float *x, const float *w, size_t T, int D, float eps) {
    for (size_t t = 0; t < T; t++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[t * D + d] * x[t * D + d];
        double r = 1.0 / sqrt(ss / D + eps);
        for (int d = 0; d < D; d++) out[t * D + d] = x[t * D + d] * r * w[d];
    }
}

/* h (T, D) . embedding^T (V, D) -> (T, V) in double */
static void head_d(double *out, const double *h, const float *emb, size_t T, int D, int V) {
    for (size_t t = 0; t < T; t++)
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int d = 0; d < D; d++) s += h[t * D + d] * emb[(size_t)v * D + d];
            out[t * V + v] = s;
        }
}

static double rel_err_fd(const float *a, const double *b, size_t n) {
    double *ad = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) ad[i] = a[i];
    double e = tu_rel_err_d(ad, b, n);
    free(ad);
    return e;
}

static float *hidden_of(const ssm_model *m, int layer, size_t T) {
    float *h = malloc(T * m->config.d_model * sizeof(float));
    TU_OK(ssm_model_hidden(m, layer, h));
    return h;
}

static void check_model(const ssm_config *config, const char *what) {
    enum { B = 3, L = 11 };
    ssm_model *m = make_model(config, 5);
    const ssm_config *c = &m->config;
    int D = c->d_model, V = c->vocab_size, n = c->n_layer;
    size_t T = (size_t)B * L;
    int32_t tok[B * L];
    tu_random_tokens(tok, B * L, V, 9);
    TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
    float *logits = malloc(T * V * sizeof(float));
    memcpy(logits, ssm_model_logits(m), T * V * sizeof(float));

    /* the last layer: the head's input; -1 is the same */
    float *last = hidden_of(m, n, T), *minus1 = hidden_of(m, -1, T);
    assert_memory_equal(last, minus1, T * D * sizeof(float));
    double *hd = malloc(T * D * sizeof(double)), *want = malloc(T * V * sizeof(double));
    for (size_t i = 0; i < T * D; i++) hd[i] = last[i];
    head_d(want, hd, m->params.embedding, T, D, V);
    double e_head = rel_err_fd(logits, want, T * V);
    /* ... and the final norm of the last block's stream */
    float *before = hidden_of(m, n - 1, T);
    rmsnorm_d(hd, before, m->params.norm_f, T, D, c->norm_eps);
    double e_norm = rel_err_fd(last, hd, T * D);
    print_message("%s: logits vs hidden . emb^T %.2e; hidden[n] vs norm_f(hidden[n-1]) %.2e\n", what,
                  e_head, e_norm);
    assert_true(e_head < 1e-5);
    assert_true(e_norm < 1e-5);

    /* layer i: the stream a model of the first i + 1 blocks ends on, the head applied to it
     * gives that model's logits */
    for (int i = 0; i < n; i++) {
        float *h = hidden_of(m, i, T);
        ssm_model *t = truncated(m, i + 1);
        TU_OK(ssm_forward(t, tok, NULL, B, L, NULL, NULL));
        float *th = hidden_of(t, i, T); /* its last block's output */
        double e_stream = tu_rel_err(h, th, T * D);
        rmsnorm_d(hd, h, m->params.norm_f, T, D, c->norm_eps);
        head_d(want, hd, m->params.embedding, T, D, V);
        double e_logits = rel_err_fd(ssm_model_logits(t), want, T * V);
        print_message("%s: layer %d (%s): stream vs truncated model %.2e; its logits vs the head on "
                      "hidden[%d] %.2e\n", what, i, ssm_layer_kind_name(c->layer_kind[i]), e_stream,
                      i, e_logits);
        assert_true(e_stream < 1e-6);
        assert_true(e_logits < 1e-5);
        /* and the layers differ from each other (each block adds something) */
        if (i > 0) {
            float *prev = hidden_of(m, i - 1, T);
            assert_true(tu_rel_err(h, prev, T * D) > 1e-3);
            free(prev);
        }
        ssm_model_free(t);
        free(th);
        free(h);
    }
    free(hd);
    free(want);
    free(before);
    free(last);
    free(minus1);
    free(logits);
    ssm_model_free(m);
}

static void test_hidden_mamba1(void **unused) {
    (void)unused;
    ssm_config c = mamba1_config();
    check_model(&c, "mamba1");
}

static void test_hidden_mixed(void **unused) {
    (void)unused;
    ssm_config c = mixed_config();
    check_model(&c, "mixed");
}

/* ssm_forward_score leaves the states ssm_forward leaves; windows with the carried state give
 * the states of one pass; ssm_backward and ssm_step leave them as they are */
static void test_hidden_score_windows_backward(void **unused) {
    (void)unused;
    enum { B = 2, L = 24, W = 7 };
    ssm_config c = mixed_config();
    ssm_model *m = make_model(&c, 11);
    int D = m->config.d_model, V = m->config.vocab_size, n = m->config.n_layer;
    size_t T = (size_t)B * L;
    int32_t tok[B * L], tgt[B * L];
    tu_random_tokens(tok, B * L, V, 3);
    tu_random_tokens(tgt, B * L, V, 4);
    for (int layer = 0; layer <= n; layer++) {
        TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
        float *a = hidden_of(m, layer, T);
        float lp[B * L];
        TU_OK(ssm_forward_score(m, tok, tgt, B, L, NULL, lp, NULL));
        float *b = hidden_of(m, layer, T);
        assert_memory_equal(a, b, T * D * sizeof(float));

        /* windows of W (the last one shorter) from a carried state */
        ssm_state *st;
        TU_OK(ssm_state_create(&m->config, B, &st));
        float *win = malloc(T * D * sizeof(float)), *h = malloc((size_t)B * W * D * sizeof(float));
        int32_t part[B * W];
        for (int p = 0; p < L; p += W) {
            int w = p + W <= L ? W : L - p;
            for (int r = 0; r < B; r++) memcpy(part + r * w, tok + r * L + p, w * sizeof(int32_t));
            TU_OK(ssm_forward(m, part, NULL, B, w, st, NULL));
            TU_OK(ssm_model_hidden(m, layer, h));
            for (int r = 0; r < B; r++)
                memcpy(win + ((size_t)r * L + p) * D, h + (size_t)r * w * D, (size_t)w * D * sizeof(float));
        }
        double e = tu_rel_err(win, a, T * D);
        print_message("layer %d: windows of %d with the carried state vs one pass %.2e\n", layer, W, e);
        assert_true(e < 1e-6);
        ssm_state_free(st);
        free(win);
        free(h);

        /* the backward turns the logits into their gradient, not the hidden states */
        float loss;
        TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
        TU_OK(ssm_backward(m));
        float *after = hidden_of(m, layer, T);
        assert_memory_equal(a, after, T * D * sizeof(float));
        /* nor does a step */
        TU_OK(ssm_state_create(&m->config, B, &st));
        float *lg = malloc((size_t)B * V * sizeof(float));
        TU_OK(ssm_step(m, st, tok, lg));
        float *after_step = hidden_of(m, layer, T);
        assert_memory_equal(a, after_step, T * D * sizeof(float));
        ssm_state_free(st);
        free(lg);
        free(after_step);
        free(after);
        free(a);
        free(b);
    }
    ssm_model_free(m);
}

static void test_hidden_errors(void **unused) {
    (void)unused;
    ssm_config c = mamba1_config();
    ssm_model *m = make_model(&c, 2);
    int n = m->config.n_layer, D = m->config.d_model;
    float out[4 * 16 * 2];
    /* no forward yet */
    assert_int_equal(ssm_model_hidden(m, n, out), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "no forward yet"));
    assert_int_equal(ssm_model_hidden(NULL, 0, out), SSM_ERR_ARG);
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    TU_OK(ssm_forward(m, tok, NULL, 2, 4, NULL, NULL));
    assert_true(D * 8 <= (int)(sizeof out / sizeof out[0]));
    TU_OK(ssm_model_hidden(m, 0, out));
    assert_int_equal(ssm_model_hidden(m, 0, NULL), SSM_ERR_ARG);
    assert_int_equal(ssm_model_hidden(m, n + 1, out), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "layer 4 is outside [0, 3]"));
    assert_int_equal(ssm_model_hidden(m, -2, out), SSM_ERR_ARG);
    /* a GPU model: the CUDA backend keeps no hidden states */
    if (ssm_device_count() > 0) {
        TU_OK(ssm_model_use_device(m, NULL, 0));
        TU_OK(ssm_forward(m, tok, NULL, 2, 4, NULL, NULL));
        assert_int_equal(ssm_model_hidden(m, n, out), SSM_ERR_UNSUPPORTED);
        assert_non_null(strstr(ssm_last_error(), "CUDA backend does not keep the hidden states"));
        print_message("GPU model: %s\n", ssm_last_error());
        /* back on the CPU, the next forward's are there again */
        TU_OK(ssm_model_use_device(m, NULL, -1));
        TU_OK(ssm_forward(m, tok, NULL, 2, 4, NULL, NULL));
        TU_OK(ssm_model_hidden(m, n, out));
    } else {
        print_message("no CUDA device: the GPU case is not run\n");
    }
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hidden_mamba1),
        cmocka_unit_test(test_hidden_mixed),
        cmocka_unit_test(test_hidden_score_windows_backward),
        cmocka_unit_test(test_hidden_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
