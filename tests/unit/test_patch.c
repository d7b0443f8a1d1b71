/* test_patch.c: the PointNet patch encoder and its learned importance order (config.patch,
 * libssm/src/patch.c) through ssm_forward_io: every tensor's gradient against central finite
 * differences (the score's and the group attention's weights element by element too, and
 * nonzero), the order a
 * permutation sorted by the score with ties by index, the reversed second half, the embedding
 * invariant to the order of a group's points, a checkpoint round trip, bad configs refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "patch.h"
#include "ssm/checkpoint.h"
#include "testutil.h"

enum { B = 2, G = 5, K = 4, F = 3 + 3 * K, D = 16, C = 3 };

static ssm_model *model_for(const char *pattern, int score_order, int both, int attention, uint64_t seed) {
    ssm_config c = ssm_config_default(8, D, 2);
    tu_tiny_options(&c);
    TU_OK(ssm_config_set_pattern(&c, pattern, SSM_LAYER_MAMBA1));
    c.io = (ssm_io_config){.features = F, .head = SSM_HEAD_CLASSIFY, .outputs = C, .pool = SSM_POOL_MEAN};
    c.patch = (ssm_patch_config){SSM_PATCH_POINTNET, {8, 12, 10}, score_order, both, attention};
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float)); /* the score too: it starts at 0 */
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    if (attention) /* sharper scores: q's and k's gradients well above the float loss's resolution */
        for (int t = PATCH_ATT_Q; t <= PATCH_ATT_K; t++)
            for (int i = 0; i < 12 * 12; i++) m->params.patch[t][i] *= 6;
    return m;
}

typedef struct batch {
    float x[B * G * F];
    int32_t targets[B];
    ssm_io io;
} batch;

static void make_batch(batch *b, uint64_t seed) {
    tu_fill_uniform(b->x, sizeof b->x / sizeof b->x[0], -1, 1, seed);
    b->targets[0] = 1, b->targets[1] = C - 1;
    b->io = (ssm_io){.features = b->x, .targets = b->targets};
}

static double loss_at(ssm_model *m, const batch *b) {
    float loss;
    TU_OK(ssm_forward_io(m, &b->io, B, G, &loss));
    return loss;
}

/* The discrete choices of the last forward: the order, each max's point, each ReLU's side. The
 * encoder is piecewise linear in them; a difference quotient is only valid when a perturbation
 * leaves them all as they were. */
static uint64_t choices(const ssm_model *m) {
    const ssm_patch_acts *a = m->acts->patch;
    const int *w = m->config.patch.widths;
    size_t T = (size_t)a->B * a->L, Tk = T * a->k;
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
    for (size_t i = 0; i < T; i++) MIX(a->order[i]);
    for (size_t i = 0; i < T * w[1]; i++) MIX(a->arg_f[i]);
    for (size_t i = 0; i < T * D; i++) MIX(a->arg_y[i]);
    for (size_t i = 0; i < Tk * w[0]; i++) MIX(a->h1[i] > 0);
    for (size_t i = 0; i < Tk * w[2]; i++) MIX(a->h3[i] > 0);
#undef MIX
    return h;
}

/* (loss(p + h v) - loss(p - h v)) / 2h with h = 2e-3, or a quarter or a sixteenth of it when a
 * kink lies closer; NAN when even the smallest step crosses one */
static double quotient(ssm_model *m, const batch *b, float *p, const float *v, size_t n, uint64_t at) {
    for (double h = 2e-3; h > 1e-4; h /= 4) {
        for (size_t i = 0; i < n; i++) p[i] += (float)(h * v[i]);
        double lp = loss_at(m, b);
        uint64_t cp = choices(m);
        for (size_t i = 0; i < n; i++) p[i] -= (float)(2 * h * v[i]);
        double lm = loss_at(m, b);
        uint64_t cm = choices(m);
        for (size_t i = 0; i < n; i++) p[i] += (float)(h * v[i]);
        if (cp == at && cm == at) return (lp - lm) / (2 * h);
    }
    return NAN;
}

static int check_model(const char *name, ssm_model *m) {
    printf("%s\n", name);
    batch b;
    make_batch(&b, 5);
    loss_at(m, &b);
    uint64_t at = choices(m);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *grad = malloc(m->n_params * sizeof(float));
    memcpy(grad, m->grads_blob, m->n_params * sizeof(float));
    int bad = 0, kinks = 0;
    for (int t = 0; t < m->n_tensors; t++) { /* along a random unit direction of each tensor */
        const ssm_tensor_info *ti = &m->tensors[t];
        float *v = malloc(ti->numel * sizeof(float));
        double an = tu_unit_direction(v, ti->numel, grad + ti->offset, 100 + t);
        double fd = quotient(m, &b, m->params_blob + ti->offset, v, ti->numel, at);
        free(v);
        if (isnan(fd)) {
            kinks++;
            continue;
        }
        double err = fabs(fd - an), bound = 2e-2 * fabs(an) + 3e-4;
        if (!(err < bound)) {
            printf("  %-34s analytic % .6e  numeric % .6e  |diff| %.2e\n", ti->name, an, fd, err);
            bad++;
        }
    }
    /* the learned score and the group attention: each element, and the gradient is not zero */
    const char *const each[] = {"score.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight",
                                "attn.o.weight"};
    int element_kinks = 0;
    for (int n = 0; n < (int)(sizeof each / sizeof *each); n++) {
        char name[64];
        snprintf(name, sizeof name, "backbone.patch.%s", each[n]);
        const ssm_tensor_info *ti = ssm_model_find_tensor(m, name);
        if (!ti) continue;
        double norm = 0;
        for (size_t d = 0; d < ti->numel; d++) {
            double an = grad[ti->offset + d];
            float one = 1;
            double fd = quotient(m, &b, m->params_blob + ti->offset + d, &one, 1, at);
            if (isnan(fd)) {
                element_kinks++;
            } else if (!(fabs(fd - an) < 2e-2 * fabs(an) + 6e-5)) { /* 2 steps of the float loss / 2h */
                printf("  %s[%zu] analytic % .6e  numeric % .6e\n", each[n], d, an, fd);
                bad++;
            }
            norm += an * an;
        }
        printf("  |d loss / d %s| = %.3e\n", each[n], sqrt(norm));
        assert_true(sqrt(norm) > 1e-6);
    }
    printf("  %d tensors, %d off, %d + %d element checks left out (a kink within the smallest step)\n",
           m->n_tensors, bad, kinks, element_kinks);
    assert_true(kinks <= 2);
    assert_true(element_kinks <= 20);
    free(grad);
    return bad;
}

static void test_patch_gradients(void **st) {
    (void)st;
    int bad = 0;
    ssm_model *m = model_for("*M", 1, 1, 0, 3);
    bad += check_model("pointnet, score order, both ways (*M)", m);
    ssm_model_free(m);
    m = model_for("M-", 0, 0, 0, 4);
    bad += check_model("pointnet, input order, forward (M-)", m);
    ssm_model_free(m);
    m = model_for("*M", 1, 1, 1, 5);
    assert_non_null(ssm_model_find_tensor(m, "backbone.patch.attn.o.weight"));
    bad += check_model("pointnet with attention in the groups, score order, both ways (*M)", m);
    ssm_model_free(m);
    assert_int_equal(bad, 0);
}

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* r_0 is the groups sorted by score, each times sigmoid(score), then the same reversed */
static void test_patch_order(void **st) {
    (void)st;
    ssm_model *m = model_for("M", 1, 1, 0, 7);
    batch b;
    make_batch(&b, 9);
    loss_at(m, &b);
    const ssm_patch_acts *a = m->acts->patch;
    const float *r0 = m->acts->layers[0].resid;
    for (int row = 0; row < B; row++) {
        int seen[G] = {0};
        const int *order = a->order + row * G;
        for (int l = 0; l < G; l++) {
            assert_true(order[l] >= 0 && order[l] < G);
            seen[order[l]]++;
            const float s = a->score[row * G + order[l]];
            if (l) assert_true(a->score[row * G + order[l - 1]] >= s);
            const float *e = a->e + ((size_t)row * G + order[l]) * D;
            for (int d = 0; d < D; d++) {
                float want = sigmoid(s) * e[d];
                assert_true(fabsf(r0[((size_t)row * 2 * G + l) * D + d] - want) < 1e-6f * (1 + fabsf(want)));
                assert_true(r0[((size_t)row * 2 * G + 2 * G - 1 - l) * D + d] ==
                            r0[((size_t)row * 2 * G + l) * D + d]);
            }
        }
        for (int g = 0; g < G; g++) assert_int_equal(seen[g], 1);
    }
    /* ties (every score equal): the groups in their input order */
    float *w = m->params.patch[PATCH_SCORE_W];
    memset(w, 0, D * sizeof(float));
    loss_at(m, &b);
    for (int i = 0; i < B * G; i++) assert_int_equal(a->order[i], i % G);
    ssm_model_free(m);
}

/* PointNet's max pooling: a group's embedding does not depend on the order of its points (the
 * attention within a group has no positions: it keeps this) */
static void point_order_invariant(int attention) {
    ssm_model *m = model_for("M", 0, 0, attention, 8);
    batch b;
    make_batch(&b, 10);
    loss_at(m, &b);
    float *e = malloc(sizeof(float) * B * G * D);
    memcpy(e, m->acts->patch->e, sizeof(float) * B * G * D);
    for (int t = 0; t < B * G; t++) /* reverse each group's points */
        for (int j = 0; j < K / 2; j++)
            for (int c = 0; c < 3; c++) {
                float *x = b.x + t * F + 3;
                float tmp = x[3 * j + c];
                x[3 * j + c] = x[3 * (K - 1 - j) + c];
                x[3 * (K - 1 - j) + c] = tmp;
            }
    loss_at(m, &b);
    for (int i = 0; i < B * G * D; i++) assert_true(fabsf(e[i] - m->acts->patch->e[i]) < 1e-5f);
    free(e);
    ssm_model_free(m);
}

static void test_patch_point_order_invariant(void **st) {
    (void)st;
    point_order_invariant(0);
    point_order_invariant(1);
}

static void patch_checkpoint(int attention) {
    ssm_model *m = model_for("*M", 1, 1, attention, 11), *back;
    batch b;
    make_batch(&b, 12);
    double l1 = loss_at(m, &b);
    assert_non_null(ssm_model_find_tensor(m, "backbone.patch.mlp2.0.weight"));
    assert_null(ssm_model_find_tensor(m, "backbone.input_proj.weight"));
    char path[4096];
    snprintf(path, sizeof path, "%s/patch.safetensors", tu_tmpdir());
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    TU_OK(ssm_checkpoint_load(path, &back));
    assert_int_equal(back->config.patch.kind, SSM_PATCH_POINTNET);
    assert_int_equal(back->config.patch.widths[1], 12);
    assert_int_equal(back->config.patch.score_order, 1);
    assert_int_equal(back->config.patch.both, 1);
    assert_int_equal(back->config.patch.attention, attention);
    assert_true(!ssm_model_find_tensor(back, "backbone.patch.attn.q.weight") == !attention);
    assert_int_equal(back->n_params, m->n_params);
    assert_true(loss_at(back, &b) == l1);
    ssm_model_free(back);
    ssm_model_free(m);
}

static void test_patch_checkpoint(void **st) {
    (void)st;
    patch_checkpoint(0);
    patch_checkpoint(1);
}

static void test_patch_bad_configs(void **st) {
    (void)st;
    ssm_config c = ssm_config_default(8, D, 1);
    c.patch = (ssm_patch_config){SSM_PATCH_POINTNET, {8, 12, 10}, 1, 1, 0};
    ssm_model *m = NULL;
    c.io = (ssm_io_config){.features = 7, .head = SSM_HEAD_CLASSIFY, .outputs = 2};
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "3 + 3 k"));
    c.io = (ssm_io_config){.features = F, .head = SSM_HEAD_REGRESSION, .outputs = 2, .loss = SSM_LOSS_MSE};
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "classify head"));
    c.io = (ssm_io_config){.features = F, .head = SSM_HEAD_CLASSIFY, .outputs = 2};
    c.patch.widths[2] = 0;
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "patch_widths[2]"));
    c.patch = (ssm_patch_config){SSM_PATCH_NONE, {0}, 0, 0, 1}; /* attention without the encoder */
    assert_int_equal(ssm_model_create(&c, &m), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "patch_attention needs model patch: pointnet"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_gradients),
        cmocka_unit_test(test_patch_order),
        cmocka_unit_test(test_patch_point_order_invariant),
        cmocka_unit_test(test_patch_checkpoint),
        cmocka_unit_test(test_patch_bad_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
