/* test_step.c: the recurrent step mode equals the parallel forward, and a forward from a
 * carried state equals one long forward (how long records are scored window by window). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static ssm_model *model_for(int vocab, int d_model, int n_layer, int d_state, int d_conv,
                            uint64_t seed, int non_selective) {
    ssm_config c = ssm_config_default(vocab, d_model, n_layer);
    c.non_selective = non_selective;
    c.d_state = d_state;
    c.d_conv = d_conv;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    /* larger steps than at initialisation, so that the state carries real information */
    for (int l = 0; l < n_layer; l++)
        for (int e = 0; e < c.expand * d_model; e++) m->params.layers[l].mamba1.dt_proj_b[e] += 3.0f;
    return m;
}

/* logits of one forward over (B, L) copied out */
static float *parallel_logits(ssm_model *m, const int32_t *tok, int B, int L) {
    TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
    size_t n = (size_t)B * L * m->config.vocab_size;
    float *out = malloc(n * sizeof(float));
    memcpy(out, ssm_model_logits(m), n * sizeof(float));
    return out;
}

static void check_step_equals_parallel(int d_model, int n_layer, int d_state, int d_conv,
                                       int non_selective) {
    enum { B = 3, L = 23 };
    ssm_model *m = model_for(21, d_model, n_layer, d_state, d_conv, 5, non_selective);
    int V = m->config.vocab_size;
    int32_t tok[B * L];
    tu_random_tokens(tok, B * L, 21, 9);
    float *ref = parallel_logits(m, tok, B, L);
    ssm_state *st;
    TU_OK(ssm_state_create(&m->config, B, &st));
    float *step = malloc((size_t)B * L * V * sizeof(float)), *lg = malloc((size_t)B * V * sizeof(float));
    for (int l = 0; l < L; l++) {
        int32_t col[B];
        for (int b = 0; b < B; b++) col[b] = tok[b * L + l];
        TU_OK(ssm_step(m, st, col, lg));
        for (int b = 0; b < B; b++)
            memcpy(step + ((size_t)b * L + l) * V, lg + (size_t)b * V, V * sizeof(float));
    }
    double err = tu_rel_err(step, ref, (size_t)B * L * V);
    print_message("step vs parallel (d_model %d, N %d, K %d): rel err %.2e\n", d_model, d_state,
                  d_conv, err);
    assert_true(err < 1e-5);
    free(step);
    free(lg);
    free(ref);
    ssm_state_free(st);
    ssm_model_free(m);
}

static void test_step_equals_parallel(void **s) {
    (void)s;
    check_step_equals_parallel(16, 2, 16, 4, 0);
    check_step_equals_parallel(13, 3, 5, 2, 0); /* odd sizes, other d_state and d_conv */
    check_step_equals_parallel(16, 2, 16, 4, 1); /* without selection (model.selective: false) */
}

/* Windows of uneven sizes, carrying the state, give the logits of one long forward. */
static void test_carried_state_equals_one_pass(void **s) {
    (void)s;
    enum { B = 2, L = 50 };
    ssm_model *m = model_for(17, 24, 2, 16, 4, 11, 0);
    int V = m->config.vocab_size;
    int32_t tok[B * L];
    tu_random_tokens(tok, B * L, 17, 3);
    float *ref = parallel_logits(m, tok, B, L);
    ssm_state *st;
    TU_OK(ssm_state_create(&m->config, B, &st));
    float *got = malloc((size_t)B * L * V * sizeof(float));
    const int windows[] = {1, 2, 3, 13, 31}; /* 1 and 2 are shorter than d_conv */
    int pos = 0;
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        int n = windows[w];
        int32_t *part = malloc((size_t)B * n * sizeof(int32_t));
        for (int b = 0; b < B; b++) memcpy(part + b * n, tok + b * L + pos, n * sizeof(int32_t));
        TU_OK(ssm_forward(m, part, NULL, B, n, st, NULL));
        const float *lg = ssm_model_logits(m);
        for (int b = 0; b < B; b++)
            memcpy(got + ((size_t)b * L + pos) * V, lg + (size_t)b * n * V, (size_t)n * V * sizeof(float));
        pos += n;
        free(part);
    }
    assert_int_equal(pos, L);
    double err = tu_rel_err(got, ref, (size_t)B * L * V);
    print_message("windows with carried state vs one pass: rel err %.2e\n", err);
    assert_true(err < 1e-5);

    /* the state after the windows continues exactly like step mode would */
    int32_t next[B] = {4, 7};
    float *lg = malloc((size_t)B * V * sizeof(float));
    TU_OK(ssm_step(m, st, next, lg));
    int32_t *ext = malloc((size_t)B * (L + 1) * sizeof(int32_t));
    for (int b = 0; b < B; b++) {
        memcpy(ext + b * (L + 1), tok + b * L, L * sizeof(int32_t));
        ext[b * (L + 1) + L] = next[b];
    }
    TU_OK(ssm_forward(m, ext, NULL, B, L + 1, NULL, NULL));
    for (int b = 0; b < B; b++) {
        double e = tu_rel_err(lg + (size_t)b * V, ssm_model_logits(m) + ((size_t)b * (L + 1) + L) * V, V);
        assert_true(e < 1e-5);
    }
    free(ext);
    free(lg);
    free(got);
    free(ref);
    ssm_state_free(st);
    ssm_model_free(m);
}

static void test_state_mismatch_refused(void **s) {
    (void)s;
    ssm_model *m = model_for(17, 16, 2, 16, 4, 1, 0);
    ssm_state *st;
    TU_OK(ssm_state_create(&m->config, 2, &st));
    int32_t tok[3] = {1, 2, 3};
    assert_int_equal(ssm_forward(m, tok, NULL, 1, 3, st, NULL), SSM_ERR_SHAPE);
    /* backward from a carried state is refused, not silently wrong */
    int32_t tok2[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, 4, 5, 6, 7};
    float loss;
    TU_OK(ssm_forward(m, tok2, tgt, 2, 3, st, &loss));
    assert_int_equal(ssm_backward(m), SSM_ERR_UNSUPPORTED);
    ssm_state_free(st);
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_equals_parallel),
        cmocka_unit_test(test_carried_state_equals_one_pass),
        cmocka_unit_test(test_state_mismatch_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
