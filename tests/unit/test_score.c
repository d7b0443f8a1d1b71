/* test_score.c: ssm_forward_score equals the log-softmax of ssm_forward's logits (NaN where a
 * target is negative, the entropy right), ssm_generate_greedy equals a hand loop of forward +
 * argmax, and ssm_parse_device on a machine without a GPU (as CI is). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static ssm_model *tiny_model(int vocab, uint64_t seed) {
    ssm_config c = ssm_config_default(vocab, 16, 2);
    c.d_state = 4;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    return m;
}

static void test_score_matches_log_softmax(void **unused) {
    (void)unused;
    enum { B = 3, L = 17 };
    ssm_model *m = tiny_model(13, 7);
    int V = m->config.vocab_size;
    assert_int_equal(m->device, -1);
    int32_t tok[B * L], tgt[B * L];
    tu_random_tokens(tok, B * L, 13, 1);
    tu_random_tokens(tgt, B * L, 13, 2);
    for (int t = 0; t < B * L; t += 5) tgt[t] = -1; /* not scored */
    TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
    float *logits = malloc((size_t)B * L * V * sizeof(float));
    memcpy(logits, ssm_model_logits(m), (size_t)B * L * V * sizeof(float));
    float lp[B * L], h[B * L], lp2[B * L];
    TU_OK(ssm_forward_score(m, tok, tgt, B, L, NULL, lp, h));
    TU_OK(ssm_forward_score(m, tok, tgt, B, L, NULL, lp2, NULL)); /* entropy is optional */
    for (int t = 0; t < B * L; t++) {
        const float *row = logits + (size_t)t * V;
        double z = 0, p_log_p = 0;
        for (int v = 0; v < V; v++) z += exp((double)row[v]);
        for (int v = 0; v < V; v++) {
            double lpv = (double)row[v] - log(z);
            p_log_p += exp(lpv) * lpv;
        }
        if (tgt[t] < 0) {
            assert_true(isnan(lp[t]) && isnan(h[t]) && isnan(lp2[t]));
            continue;
        }
        double want = (double)row[tgt[t]] - log(z);
        assert_true(fabs(lp[t] - want) < 1e-5 * (1 + fabs(want)));
        assert_true(fabs(h[t] + p_log_p) < 1e-5);
        assert_true(h[t] >= -1e-6 && h[t] <= log(V) + 1e-5);
        assert_true(lp2[t] == lp[t]);
    }
    free(logits);
    ssm_model_free(m);
}

/* zero parameters: every logit is 0, so log p = -log V and the entropy is log V */
static void test_score_uniform(void **unused) {
    (void)unused;
    ssm_config c = ssm_config_default(10, 16, 1);
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    int V = m->config.vocab_size;
    int32_t tok[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, -1, 5, 6, 0};
    float lp[6], h[6];
    TU_OK(ssm_forward_score(m, tok, tgt, 2, 3, NULL, lp, h));
    for (int t = 0; t < 6; t++) {
        if (tgt[t] < 0) {
            assert_true(isnan(lp[t]) && isnan(h[t]));
            continue;
        }
        assert_true(fabs(lp[t] + log(V)) < 1e-6);
        assert_true(fabs(h[t] - log(V)) < 1e-6);
    }
    ssm_model_free(m);
}

static void test_score_bad_arguments(void **unused) {
    (void)unused;
    ssm_model *m = tiny_model(8, 3);
    int V = m->config.vocab_size;
    int32_t tok[4] = {1, 2, 3, 4}, tgt[4] = {2, 3, V, 5};
    float lp[4];
    assert_int_equal(ssm_forward_score(m, tok, NULL, 2, 2, NULL, lp, NULL), SSM_ERR_ARG);
    assert_int_equal(ssm_forward_score(m, tok, tgt, 0, 2, NULL, lp, NULL), SSM_ERR_ARG);
    assert_int_equal(ssm_forward_score(m, tok, tgt, 2, 2, NULL, lp, NULL), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "outside the vocabulary"));
    int32_t out[4];
    assert_int_equal(ssm_generate_greedy(m, tok, 2, 0, 2, out), SSM_ERR_ARG);
    assert_int_equal(ssm_generate_greedy(m, tok, 2, 2, 2, NULL), SSM_ERR_ARG);
    ssm_model_free(m);
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* greedy decoding = forward over the prompt and what was generated so far, argmax of the last */
static void test_greedy_matches_hand_loop(void **unused) {
    (void)unused;
    enum { B = 2, P = 5, NEW = 9 };
    ssm_model *m = tiny_model(11, 11);
    /* larger steps than at initialisation, so that the state matters */
    for (int l = 0; l < m->config.n_layer; l++)
        for (int e = 0; e < m->config.d_inner; e++) m->params.layers[l].mamba1.dt_proj_b[e] += 3.0f;
    int V = m->config.vocab_size;
    int32_t prompt[B * P], out[B * NEW];
    tu_random_tokens(prompt, B * P, 11, 5);
    TU_OK(ssm_generate_greedy(m, prompt, B, P, NEW, out));
    for (int b = 0; b < B; b++) {
        int32_t seq[P + NEW];
        memcpy(seq, prompt + b * P, P * sizeof(int32_t));
        for (int i = 0; i < NEW; i++) {
            int len = P + i;
            TU_OK(ssm_forward(m, seq, NULL, 1, len, NULL, NULL));
            seq[len] = argmax(ssm_model_logits(m) + (size_t)(len - 1) * V, V);
            assert_int_equal(out[b * NEW + i], seq[len]);
        }
    }
    int32_t zero_new[1] = {-7};
    TU_OK(ssm_generate_greedy(m, prompt, B, P, 0, zero_new)); /* nothing to do */
    assert_int_equal(zero_new[0], -7);
    ssm_model_free(m);
}

static void test_parse_device(void **unused) {
    (void)unused;
    int d = 5;
    TU_OK(ssm_parse_device("cpu", &d));
    assert_int_equal(d, -1);
    d = 5;
    TU_OK(ssm_parse_device("auto", &d));
    assert_int_equal(d, ssm_device_count() > 0 ? 0 : -1);
    if (ssm_device_count() == 0) {
        assert_int_equal(ssm_parse_device("cuda", &d), SSM_ERR_DEVICE);
        assert_non_null(strstr(ssm_last_error(), "'cuda'"));
        assert_int_equal(ssm_parse_device("cuda:1", &d), SSM_ERR_DEVICE);
        ssm_model *m = tiny_model(8, 1);
        assert_int_equal(ssm_model_use_device(m, NULL, 0), SSM_ERR_DEVICE);
        TU_OK(ssm_model_use_device(m, NULL, -1));
        assert_int_equal(m->device, -1);
        TU_OK(ssm_model_sync_host(m, NULL));
        TU_OK(ssm_model_reserve(m, 2, 8, 1));
        assert_int_equal(ssm_model_device_peak(m), 0);
        ssm_model_free(m);
    }
    assert_int_equal(ssm_parse_device("gpu", &d), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "cuda:N"));
    assert_int_equal(ssm_parse_device("cuda:", &d), SSM_ERR_ARG);
    assert_int_equal(ssm_parse_device("cuda:x", &d), SSM_ERR_ARG);
    assert_int_equal(ssm_parse_device("cuda:-1", &d), SSM_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_score_matches_log_softmax),
        cmocka_unit_test(test_score_uniform),
        cmocka_unit_test(test_score_bad_arguments),
        cmocka_unit_test(test_greedy_matches_hand_loop),
        cmocka_unit_test(test_parse_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
