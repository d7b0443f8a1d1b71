/* test_heads.c: ssm_forward_io's inputs and heads (config.io) against central finite
 * differences: float inputs through the projection (with patches), the regression head with
 * MSE and MAE, the pooled classify head (mean, last, CLS), the LM head through the same entry,
 * on Mamba and hybrid stacks. For every tensor the directional derivative along a random unit
 * direction must match the difference quotient of the loss. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/checkpoint.h"
#include "testutil.h"

enum { B = 2, L = 6, F = 3 };

typedef struct io_case {
    const char *name;
    const char *pattern;  /* layer pattern */
    ssm_io_config io;
} io_case;

static ssm_model *model_for(const io_case *k, uint64_t seed) {
    ssm_config c = ssm_config_default(11, 16, 2);
    tu_tiny_options(&c);
    TU_OK(ssm_config_set_pattern(&c, k->pattern, SSM_LAYER_MAMBA1));
    c.io = k->io;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    return m;
}

typedef struct batch {
    int32_t tokens[B * L], targets[B * L];
    float features[B * L * 2 * F], values[B * L * 4];
    ssm_io io;
} batch;

static void make_batch(const ssm_model *m, batch *b) {
    const ssm_io_config *c = &m->config.io;
    memset(&b->io, 0, sizeof b->io);
    if (c->features) {
        tu_fill_uniform(b->features, (size_t)B * L * c->patch * c->features, -1, 1, 5);
        b->io.features = b->features;
    } else {
        tu_random_tokens(b->tokens, B * L, 11, 6);
        b->io.tokens = b->tokens;
    }
    if (c->head == SSM_HEAD_REGRESSION) {
        size_t n = (size_t)B * L * c->outputs;
        tu_fill_uniform(b->values, n, -2, 2, 7);
        b->values[1] = NAN; /* not scored */
        b->io.values = b->values;
    } else if (c->head == SSM_HEAD_CLASSIFY) {
        b->targets[0] = 1, b->targets[1] = c->outputs - 1;
        b->io.targets = b->targets;
    } else {
        tu_random_tokens(b->targets, B * L, 11, 8);
        b->targets[3] = -1;
        b->io.targets = b->targets;
    }
}

static double loss_at(ssm_model *m, const batch *b) {
    float loss;
    TU_OK(ssm_forward_io(m, &b->io, B, L, &loss));
    return loss;
}

static int check_case(const io_case *k) {
    printf("%s (%s)\n", k->name, k->pattern);
    ssm_model *m = model_for(k, 11);
    batch b;
    make_batch(m, &b);
    loss_at(m, &b);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *grad = malloc(m->n_params * sizeof(float));
    memcpy(grad, m->grads_blob, m->n_params * sizeof(float));
    int bad = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const ssm_tensor_info *ti = &m->tensors[t];
        float *v = malloc(ti->numel * sizeof(float));
        double an = tu_unit_direction(v, ti->numel, grad + ti->offset, 100 + t);
        float *p = m->params_blob + ti->offset;
        const double eps = 2e-3;
        for (size_t i = 0; i < ti->numel; i++) p[i] += (float)(eps * v[i]);
        double lp = loss_at(m, &b);
        for (size_t i = 0; i < ti->numel; i++) p[i] -= (float)(2 * eps * v[i]);
        double lm = loss_at(m, &b);
        for (size_t i = 0; i < ti->numel; i++) p[i] += (float)(eps * v[i]);
        double fd = (lp - lm) / (2 * eps), err = fabs(fd - an), bound = 2e-2 * fabs(an) + 3e-4;
        if (!(err < bound)) {
            printf("  %-40s analytic % .6e  numeric % .6e  |diff| %.2e\n", ti->name, an, fd, err);
            bad++;
        }
        free(v);
    }
    printf("  %d tensors, %d off\n", m->n_tensors, bad);
    free(grad);
    ssm_model_free(m);
    return bad;
}

static void test_heads_gradients(void **st) {
    (void)st;
    const io_case cases[] = {
        {"features -> regression, MSE", "MM",
         {.features = F, .head = SSM_HEAD_REGRESSION, .outputs = 4, .loss = SSM_LOSS_MSE}},
        {"features in patches of 2 -> regression, MAE", "M*",
         {.features = F, .patch = 2, .head = SSM_HEAD_REGRESSION, .outputs = 2, .loss = SSM_LOSS_MAE}},
        {"features -> classify, mean pool", "*M",
         {.features = F, .head = SSM_HEAD_CLASSIFY, .outputs = 3, .pool = SSM_POOL_MEAN}},
        {"tokens -> classify, last", "M-",
         {.head = SSM_HEAD_CLASSIFY, .outputs = 4, .pool = SSM_POOL_LAST}},
        {"tokens -> classify, CLS", "MM", {.head = SSM_HEAD_CLASSIFY, .outputs = 2, .pool = SSM_POOL_CLS}},
        {"features -> LM head", "MM", {.features = F}},
        {"tokens -> LM head (as ssm_forward)", "MM", {0}},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) bad += check_case(&cases[i]);
    assert_int_equal(bad, 0);
}

/* the LM head through ssm_forward_io is ssm_forward, bit for bit */
static void test_lm_same_as_forward(void **st) {
    (void)st;
    io_case k = {"lm", "M*", {0}};
    ssm_model *m = model_for(&k, 3);
    batch b;
    make_batch(m, &b);
    float a, c;
    TU_OK(ssm_forward(m, b.tokens, b.targets, B, L, NULL, &a));
    TU_OK(ssm_forward_io(m, &b.io, B, L, &c));
    assert_true(a == c);
    ssm_model_free(m);
}

/* MSE and MAE by hand; the regression outputs are the head applied to the final hidden rows */
static void test_losses_by_hand(void **st) {
    (void)st;
    io_case k = {"mse", "M", {.features = 1, .head = SSM_HEAD_REGRESSION, .outputs = 1, .loss = SSM_LOSS_MSE}};
    ssm_model *m = model_for(&k, 4);
    float x[4] = {0.1f, -0.3f, 0.7f, 0.2f}, y[4] = {1, NAN, -1, 0.5f}, loss;
    ssm_io io = {.features = x, .values = y};
    TU_OK(ssm_forward_io(m, &io, 1, 4, &loss));
    const float *out = ssm_model_outputs(m);
    double want = (pow(out[0] - 1, 2) + pow(out[2] + 1, 2) + pow(out[3] - 0.5, 2)) / 3;
    assert_true(fabs(loss - want) < 1e-5 * (1 + want));
    float h[4 * 16];
    TU_OK(ssm_model_hidden(m, -1, h));
    for (int t = 0; t < 4; t++) {
        double o = m->params.head_bias[0];
        for (int d = 0; d < 16; d++) o += (double)h[t * 16 + d] * m->params.head[d];
        assert_true(fabs(o - out[t]) < 1e-5);
    }
    m->config.io.loss = SSM_LOSS_MAE;
    TU_OK(ssm_forward_io(m, &io, 1, 4, &loss));
    want = (fabs(out[0] - 1) + fabs(out[2] + 1) + fabs(out[3] - 0.5)) / 3;
    assert_true(fabs(loss - want) < 1e-5 * (1 + want));
    ssm_model_free(m);
}

/* config.io and the head's tensors survive a checkpoint */
static void test_checkpoint_round_trip(void **st) {
    (void)st;
    io_case k = {"ckpt", "M*", {.features = F, .patch = 2, .head = SSM_HEAD_REGRESSION, .outputs = 4,
                                .loss = SSM_LOSS_MAE}};
    ssm_model *m = model_for(&k, 9), *back;
    batch b;
    make_batch(m, &b);
    float l1, l2;
    TU_OK(ssm_forward_io(m, &b.io, B, L, &l1));
    char path[4096];
    snprintf(path, sizeof path, "%s/heads.safetensors", tu_tmpdir());
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    TU_OK(ssm_checkpoint_load(path, &back));
    assert_int_equal(back->config.io.patch, 2);
    assert_int_equal(back->config.io.loss, SSM_LOSS_MAE);
    TU_OK(ssm_forward_io(back, &b.io, B, L, &l2));
    assert_true(l1 == l2);
    ssm_model_free(back);
    ssm_model_free(m);
}

static void test_bad_configs_refused(void **st) {
    (void)st;
    ssm_config c = ssm_config_default(8, 16, 1);
    ssm_model *m = NULL;
    c.io = (ssm_io_config){.features = 2, .head = SSM_HEAD_REGRESSION, .outputs = 1, .loss = SSM_LOSS_CE};
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "mse or mae"));
    c.io = (ssm_io_config){.patch = 4};
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "io.patch"));
    c.io = (ssm_io_config){.bidirectional = 1};
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_UNSUPPORTED);
    c.io = (ssm_io_config){.features = 2, .head = SSM_HEAD_REGRESSION, .outputs = 1, .loss = SSM_LOSS_MSE};
    TU_OK(ssm_model_create(&c, &m));
    float x[4] = {0, 1, INFINITY, 2}, loss;
    ssm_io io = {.features = x};
    assert_int_equal(ssm_forward_io(m, &io, 1, 2, &loss), SSM_ERR_NUMERIC);
    int32_t tok[2] = {1, 2};
    assert_int_equal(ssm_forward(m, tok, NULL, 1, 2, NULL, NULL), SSM_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssm_last_error(), "ssm_forward_io"));
    io = (ssm_io){.tokens = tok};
    assert_int_equal(ssm_forward_io(m, &io, 1, 2, &loss), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "float features"));
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heads_gradients),
        cmocka_unit_test(test_lm_same_as_forward),
        cmocka_unit_test(test_losses_by_hand),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_bad_configs_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
