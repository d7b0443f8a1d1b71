/* test_model_grad.c: the whole model's backward against central finite differences.
 * For every parameter tensor, the directional derivative along a random direction v,
 * grad . v, must match (loss(p + eps v) - loss(p - eps v)) / (2 eps). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static ssm_model *small_model(uint64_t seed, int non_selective) {
    ssm_config c = ssm_config_default(11, 12, 2);
    c.non_selective = non_selective;
    c.d_state = 4;
    c.d_conv = 3;
    c.dt_rank = 2;
    c.d_inner = 0;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    /* move every parameter off its initial value so that no term is trivially zero */
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    /* larger steps (delta ~ 0.1..1) than at initialisation, so that the scan's own
     * parameters (A_log, dt) move the loss well above fp32 rounding */
    for (int l = 0; l < c.n_layer; l++)
        for (int e = 0; e < m->config.d_inner; e++) m->params.layers[l].mamba1.dt_proj_b[e] += 3.0f;
    return m;
}

static double loss_at(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L) {
    float loss;
    TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
    return loss;
}

static void check_whole_model_gradient(int non_selective) {
    ssm_model *m = small_model(7, non_selective);
    enum { B = 2, L = 9 };
    int32_t tok[B * L], tgt[B * L];
    for (int i = 0; i < B * L; i++) {
        tok[i] = (i * 7 + 3) % 11;
        tgt[i] = (i % 5 == 4) ? -1 : (i * 5 + 1) % 11; /* some positions unscored */
    }
    loss_at(m, tok, tgt, B, L);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *grad = malloc(m->n_params * sizeof(float));
    memcpy(grad, m->grads_blob, m->n_params * sizeof(float));

    int bad = 0;
    for (int k = 0; k < m->n_tensors; k++) {
        const ssm_tensor_info *t = &m->tensors[k];
        float *v = malloc(t->numel * sizeof(float));
        tu_fill_uniform(v, t->numel, -1.0f, 1.0f, 100 + k);
        double vn = 0;
        for (size_t i = 0; i < t->numel; i++) vn += (double)v[i] * v[i];
        for (size_t i = 0; i < t->numel; i++) v[i] /= (float)sqrt(vn); /* unit direction */
        double an = 0;
        for (size_t i = 0; i < t->numel; i++) an += (double)grad[t->offset + i] * v[i];
        float *p = m->params_blob + t->offset;
        /* a step of 3e-3 along v: the curvature error (~eps^2) stays under 1%, and the
         * loss's fp32 rounding (~3e-7) costs at most 1e-4 in the difference quotient */
        const double eps = 3e-3;
        for (size_t i = 0; i < t->numel; i++) p[i] += (float)(eps * v[i]);
        double lp = loss_at(m, tok, tgt, B, L);
        for (size_t i = 0; i < t->numel; i++) p[i] -= (float)(2 * eps * v[i]);
        double lm = loss_at(m, tok, tgt, B, L);
        for (size_t i = 0; i < t->numel; i++) p[i] += (float)(eps * v[i]);
        double fd = (lp - lm) / (2 * eps);
        double err = fabs(fd - an), bound = 2e-2 * fabs(an) + 2e-4;
        printf("  %-48s analytic % .6e  numeric % .6e  |diff| %.2e (bound %.2e)\n", t->name,
               an, fd, err, bound);
        if (!(err < bound)) bad++;
        free(v);
    }
    if (non_selective) { /* x_proj sees a constant input: each row's gradient is one value */
        const ssm_config *c = &m->config;
        const float *g = grad + (m->params.layers[0].mamba1.x_proj - m->params_blob);
        for (int j = 0; j < c->dt_rank + 2 * c->d_state; j++)
            for (int e = 1; e < c->d_inner; e++)
                assert_float_equal(g[j * c->d_inner + e], g[j * c->d_inner], 0.0f);
    }
    free(grad);
    ssm_model_free(m);
    assert_int_equal(bad, 0);
}

static void test_whole_model_gradient(void **st) {
    (void)st;
    check_whole_model_gradient(0);
}

/* the ablation without selection (model.selective: false): dt, B, C from x_proj(1) */
static void test_non_selective_gradient(void **st) {
    (void)st;
    check_whole_model_gradient(1);
}

/* gradients accumulate over two backward passes */
static void test_backward_accumulates(void **st) {
    (void)st;
    ssm_model *m = small_model(3, 0);
    int32_t tok[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, 4, 5, 6, 7};
    loss_at(m, tok, tgt, 1, 6);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *once = malloc(m->n_params * sizeof(float));
    memcpy(once, m->grads_blob, m->n_params * sizeof(float));
    loss_at(m, tok, tgt, 1, 6);
    TU_OK(ssm_backward(m));
    for (size_t i = 0; i < m->n_params; i++) once[i] *= 2;
    assert_true(tu_rel_err(m->grads_blob, once, m->n_params) < 1e-6);
    /* a second backward without a forward is refused */
    assert_int_equal(ssm_backward(m), SSM_ERR_ARG);
    free(once);
    ssm_model_free(m);
}

static void test_bad_tokens_refused(void **st) {
    (void)st;
    ssm_model *m = small_model(3, 0);
    int32_t tok[3] = {1, 99, 2};
    float loss;
    assert_int_equal(ssm_forward(m, tok, NULL, 1, 3, NULL, &loss), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "outside the vocabulary"));
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_model_gradient),
        cmocka_unit_test(test_non_selective_gradient),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_bad_tokens_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
