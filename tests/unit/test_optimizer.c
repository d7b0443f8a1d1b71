/* test_optimizer.c: AdamW (ssm_adamw_step) and its schedule (ssm_adamw_lr) against a hand
 * computation in double; the reference's no-decay set; global-norm clipping; refusal of a
 * non-finite gradient; and a tiny training run that must learn.
 *
 * The update checked is PyTorch's AdamW (decoupled decay):
 *   g' = g * min(1, clip / (||g|| + 1e-6))        (torch.nn.utils.clip_grad_norm_)
 *   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
 *   p = p - lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)
 * with wd = 0 for the tensors that do not decay. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static ssm_model *tiny_model(int vocab, int d_model, int n_layer, uint64_t seed) {
    ssm_config c = ssm_config_default(vocab, d_model, n_layer);
    c.d_state = 4;
    c.d_conv = 3;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    return m;
}

/* The reference's decay rule, from the name alone: the embedding and the weight matrices of
 * in_proj, conv1d, x_proj, dt_proj and out_proj decay; norm weights, biases, A_log and D
 * (mamba_ssm's _no_weight_decay, plus the usual biases-and-norms group) do not. */
static int expected_decay(const char *name) {
    static const char *decayed[] = {"embeddings.weight", "in_proj.weight", "conv1d.weight",
                                    "x_proj.weight", "dt_proj.weight", "out_proj.weight"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof decayed / sizeof decayed[0]; i++) {
        size_t k = strlen(decayed[i]);
        if (n > k && strcmp(name + n - k, decayed[i]) == 0 && name[n - k - 1] == '.') return 1;
    }
    return 0;
}

/* ---- the schedule ------------------------------------------------------------------------ */

static double lr_ref(double lr, int64_t warmup, int64_t total, double min_ratio, int64_t step) {
    if (step < warmup) return lr * (step + 1) / warmup; /* lr / warmup .. lr */
    if (total <= warmup) return lr;
    double p = (double)(step - warmup) / (total - warmup);
    if (p > 1) p = 1;
    double lo = lr * min_ratio;
    return lo + 0.5 * (lr - lo) * (1 + cos(M_PI * p));
}

static void test_lr_schedule(void **st) {
    (void)st;
    ssm_adamw_config c = ssm_adamw_config_default();
    c.lr = 3e-3f;
    c.warmup_steps = 10;
    c.total_steps = 110;
    c.min_lr_ratio = 0.1f;
    double lr = c.lr, lo = (double)c.lr * c.min_lr_ratio;
    /* the landmarks */
    struct { int64_t step; double want; } marks[] = {
        {0, lr / 10},            /* first step: lr / warmup */
        {4, lr * 5 / 10},        /* linear */
        {9, lr},                 /* last warmup step reaches the peak */
        {10, lr},                /* peak at warmup */
        {60, (lr + lo) / 2},     /* half way down the cosine */
        {110, lo},               /* min_lr_ratio * lr at total_steps */
        {111, lo}, {100000, lo}, /* flat after */
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        double got = ssm_adamw_lr(&c, marks[i].step);
        int ok = fabs(got - marks[i].want) <= 1e-6 * marks[i].want;
        printf("lr(%6lld) = %.8e, expected %.8e%s\n", (long long)marks[i].step, got, marks[i].want,
               ok ? "" : "  FAIL");
        bad += !ok;
    }
    /* every step against the formula; non-decreasing in warmup, non-increasing after */
    double prev = 0, worst = 0;
    for (int64_t s = 0; s < 200; s++) {
        double got = ssm_adamw_lr(&c, s), want = lr_ref(lr, 10, 110, c.min_lr_ratio, s);
        worst = fmax(worst, fabs(got - want) / want);
        if (s > 0 && s < 10) bad += !(got > prev);
        if (s > 10) bad += !(got <= prev);
        prev = got;
    }
    printf("lr(0..199) vs formula: worst relative difference %.2e\n", worst);
    bad += !(worst < 1e-6);
    /* no warmup, no decay: constant; warmup only: constant after it */
    ssm_adamw_config k = c;
    k.warmup_steps = 0;
    k.total_steps = 0;
    for (int64_t s = 0; s < 50; s += 7) bad += ssm_adamw_lr(&k, s) != c.lr;
    k.warmup_steps = 4;
    bad += fabs(ssm_adamw_lr(&k, 0) - lr / 4) > 1e-6 * lr;
    for (int64_t s = 3; s < 50; s += 7) bad += ssm_adamw_lr(&k, s) != c.lr;
    /* cosine without warmup: lr at step 0 */
    k.warmup_steps = 0;
    k.total_steps = 100;
    bad += ssm_adamw_lr(&k, 0) != c.lr;
    bad += fabs(ssm_adamw_lr(&k, 100) - lo) > 1e-6 * lo;
    assert_int_equal(bad, 0);
}

/* ---- the decay set ----------------------------------------------------------------------- */

static void test_decay_flags(void **st) {
    (void)st;
    ssm_model *m = tiny_model(20, 16, 3, 1);
    int L = m->config.n_layer;
    assert_int_equal(m->n_tensors, 2 + 13 * L); /* 3 of them Jamba's inner norms, empty here */
    /* every name the Hugging Face Mamba classes write, once, with the reference's flag */
    const char *layer_names[] = {"norm.weight", "mixer.in_proj.weight", "mixer.conv1d.weight",
                                 "mixer.conv1d.bias", "mixer.x_proj.weight", "mixer.dt_proj.weight",
                                 "mixer.dt_proj.bias", "mixer.A_log", "mixer.D",
                                 "mixer.out_proj.weight"};
    const int layer_decay[] = {0, 1, 1, 0, 1, 1, 0, 0, 0, 1};
    int bad = 0;
    char name[128];
    const ssm_tensor_info *t = ssm_model_find_tensor(m, "backbone.embeddings.weight");
    bad += !t || t->decay != 1;
    t = ssm_model_find_tensor(m, "backbone.norm_f.weight");
    bad += !t || t->decay != 0;
    for (int i = 0; i < L; i++)
        for (int k = 0; k < 10; k++) {
            snprintf(name, sizeof name, "backbone.layers.%d.%s", i, layer_names[k]);
            t = ssm_model_find_tensor(m, name);
            if (!t || t->decay != layer_decay[k]) {
                printf("%s: %s\n", name, t ? "wrong decay flag" : "missing");
                bad++;
            }
        }
    size_t total = 0;
    for (int k = 0; k < m->n_tensors; k++) {
        t = &m->tensors[k];
        if (t->decay != expected_decay(t->name)) printf("%s: decay %d  FAIL\n", t->name, t->decay), bad++;
        total += t->numel;
    }
    assert_int_equal(total, m->n_params);
    ssm_model_free(m);
    assert_int_equal(bad, 0);
}

/* ---- one update against the hand computation --------------------------------------------- */

/* One AdamW step in double from the float state before it (p, m, v), for one element. */
typedef struct { double m, v; } moments;

static double adamw_ref(const ssm_adamw_config *c, double lr, int64_t t, int decay, double p,
                        double g, moments *mo) {
    double b1 = c->beta1, b2 = c->beta2;
    mo->m = b1 * mo->m + (1 - b1) * g;
    mo->v = b2 * mo->v + (1 - b2) * g * g;
    double mhat = mo->m / (1 - pow(b1, (double)t)), vhat = mo->v / (1 - pow(b2, (double)t));
    double wd = decay ? c->weight_decay : 0;
    return p - lr * (mhat / (sqrt(vhat) + c->eps) + wd * p);
}

static void test_step_matches_hand_computation(void **st) {
    (void)st;
    ssm_model *m = tiny_model(16, 8, 2, 2);
    size_t n = m->n_params;
    tu_fill_uniform(m->params_blob, n, -1, 1, 3); /* every parameter non-zero */
    ssm_adamw_config c = ssm_adamw_config_default();
    c.lr = 1e-2f;
    c.weight_decay = 0.1f;
    c.grad_clip = 0; /* no clipping here */
    c.warmup_steps = 2;
    c.total_steps = 8;
    ssm_adamw *o;
    TU_OK(ssm_adamw_create(&c, m, &o));
    moments *mo = calloc(n, sizeof *mo);
    float *before = malloc(n * sizeof(float));
    const char *watch[] = {"backbone.layers.0.mixer.in_proj.weight", "backbone.layers.1.norm.weight",
                           "backbone.layers.0.mixer.conv1d.bias", "backbone.layers.1.mixer.dt_proj.bias",
                           "backbone.layers.0.mixer.A_log", "backbone.layers.1.mixer.D",
                           "backbone.embeddings.weight", "backbone.norm_f.weight"};
    int bad = 0;
    for (int64_t step = 1; step <= 4; step++) {
        /* gradients of varied size, some exactly zero */
        tu_fill_uniform(m->grads_blob, n, -1e-2f, 1e-2f, 10 + step);
        for (size_t i = 0; i < n; i += 17) m->grads_blob[i] = 0;
        memcpy(before, m->params_blob, n * sizeof(float));
        float gn;
        TU_OK(ssm_adamw_step(o, m, &gn));
        assert_int_equal(o->step, step);
        double lr = lr_ref(c.lr, c.warmup_steps, c.total_steps, c.min_lr_ratio, step - 1);
        double worst_all = 0;
        for (int k = 0; k < m->n_tensors; k++) {
            const ssm_tensor_info *t = &m->tensors[k];
            int decay = expected_decay(t->name);
            double worst = 0;
            for (size_t i = t->offset; i < t->offset + t->numel; i++) {
                double want = adamw_ref(&c, lr, step, decay, before[i], m->grads_blob[i], &mo[i]);
                /* the change p_new - p_old to 1e-5 of itself, plus the rounding of p */
                double d_got = (double)m->params_blob[i] - before[i], d_want = want - before[i];
                double err = fabs(d_got - d_want) / (1e-5 * fabs(d_want) + 2.4e-7 * fabs(before[i]) + 1e-30);
                worst = fmax(worst, err);
            }
            worst_all = fmax(worst_all, worst);
            for (size_t w = 0; w < sizeof watch / sizeof watch[0]; w++)
                if (step == 1 && strcmp(t->name, watch[w]) == 0)
                    printf("step %lld %-44s decay %d: |got - hand| / tolerance %.3f\n", (long long)step,
                           t->name, decay, worst);
            if (!(worst <= 1)) printf("step %lld %s: |got - hand| / tolerance %.3f  FAIL\n", (long long)step, t->name, worst), bad++;
        }
        printf("step %lld (lr %.3e): worst |got - hand| / tolerance over all tensors %.3f\n",
               (long long)step, lr, worst_all);
    }
    free(mo);
    free(before);
    ssm_adamw_free(o);
    ssm_model_free(m);
    assert_int_equal(bad, 0);
}

/* With zero gradients, a no-decay tensor stays exactly as it was, and a decay tensor shrinks
 * by lr * wd * p. */
static void test_zero_gradient_decay_only(void **st) {
    (void)st;
    ssm_model *m = tiny_model(16, 8, 2, 4);
    size_t n = m->n_params;
    tu_fill_uniform(m->params_blob, n, -1, 1, 5);
    ssm_model_zero_grad(m);
    ssm_adamw_config c = ssm_adamw_config_default();
    c.lr = 0.05f;
    c.weight_decay = 0.1f;
    ssm_adamw *o;
    TU_OK(ssm_adamw_create(&c, m, &o));
    float *before = malloc(n * sizeof(float));
    memcpy(before, m->params_blob, n * sizeof(float));
    float gn = -1;
    TU_OK(ssm_adamw_step(o, m, &gn));
    assert_true(gn == 0.0f);
    int bad = 0;
    double lr = ssm_adamw_lr(&c, 0);
    for (int k = 0; k < m->n_tensors; k++) {
        const ssm_tensor_info *t = &m->tensors[k];
        const float *p = m->params_blob + t->offset, *p0 = before + t->offset;
        int tb = 0;
        if (expected_decay(t->name)) {
            for (size_t i = 0; i < t->numel; i++) {
                double want = p0[i] * (1 - lr * c.weight_decay);
                tb += !(fabs(p[i] - want) <= 2.4e-7 * fabs(p0[i]) && fabs(p[i]) < fabs(p0[i]));
            }
        } else {
            tb += memcmp(p, p0, t->numel * sizeof(float)) != 0;
        }
        if (tb) printf("%s: %s  FAIL\n", t->name, expected_decay(t->name) ? "did not shrink by lr * wd * p" : "changed");
        bad += tb;
    }
    printf("zero gradient: no-decay tensors unchanged, decay tensors times (1 - lr * wd) = %.4f: %s\n",
           1 - lr * c.weight_decay, bad ? "FAIL" : "ok");
    free(before);
    ssm_adamw_free(o);
    ssm_model_free(m);
    assert_int_equal(bad, 0);
}

/* ---- clipping ---------------------------------------------------------------------------- */

static double blob_norm(const float *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

/* The first moment after one step from zero is (1 - b1) g', so it shows the clipped g'. */
static void check_clip(double target_norm, float clip, int expect_clipped) {
    ssm_model *m = tiny_model(16, 8, 2, 6);
    size_t n = m->n_params;
    tu_fill_uniform(m->grads_blob, n, -1, 1, 7);
    double s = target_norm / blob_norm(m->grads_blob, n);
    for (size_t i = 0; i < n; i++) m->grads_blob[i] = (float)(m->grads_blob[i] * s);
    double norm = blob_norm(m->grads_blob, n);
    float *g = malloc(n * sizeof(float));
    memcpy(g, m->grads_blob, n * sizeof(float));
    ssm_adamw_config c = ssm_adamw_config_default();
    c.grad_clip = clip;
    ssm_adamw *o;
    TU_OK(ssm_adamw_create(&c, m, &o));
    float gn;
    TU_OK(ssm_adamw_step(o, m, &gn));
    double scale = expect_clipped ? clip / (norm + 1e-6) : 1.0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (1 - (double)c.beta1) * g[i] * scale;
        worst = fmax(worst, fabs(o->m[i] - want) / (fabs(want) + 1e-30));
    }
    double clipped = blob_norm(o->m, n) / (1 - (double)c.beta1);
    printf("clip %g, gradient norm %.6f: grad_norm out %.6f, norm after clipping %.6f, "
           "m vs (1 - b1) g' worst rel %.2e\n", clip, norm, gn, clipped, worst);
    assert_true(fabs(gn - norm) <= 1e-6 * norm); /* the norm before clipping */
    assert_true(worst < 1e-5);
    if (expect_clipped) assert_true(fabs(clipped - clip) <= 1e-5 * clip);
    else assert_true(fabs(clipped - norm) <= 1e-5 * norm);
    free(g);
    ssm_adamw_free(o);
    ssm_model_free(m);
}

static void test_clipping(void **st) {
    (void)st;
    check_clip(10.0, 1.0f, 1);  /* above: scaled to the clip */
    check_clip(0.5, 1.0f, 0);   /* below: untouched */
    check_clip(3.0, 2.5f, 1);
    check_clip(50.0, 0.0f, 0);  /* clip <= 0: disabled */
}

/* ---- non-finite gradients ---------------------------------------------------------------- */

static void test_nonfinite_gradient_refused(void **st) {
    (void)st;
    ssm_model *m = tiny_model(16, 8, 2, 8);
    size_t n = m->n_params;
    ssm_adamw_config c = ssm_adamw_config_default();
    ssm_adamw *o;
    TU_OK(ssm_adamw_create(&c, m, &o));
    float *before = malloc(n * sizeof(float));
    memcpy(before, m->params_blob, n * sizeof(float));
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        tu_fill_uniform(m->grads_blob, n, -1, 1, 9);
        m->grads_blob[n / 3] = bad_values[k];
        float gn;
        assert_int_equal(ssm_adamw_step(o, m, &gn), SSM_ERR_NUMERIC);
        printf("gradient %g: refused (%s)\n", bad_values[k], ssm_last_error());
        assert_true(strlen(ssm_last_error()) > 0);
        assert_memory_equal(m->params_blob, before, n * sizeof(float));
        assert_int_equal(o->step, 0);
        for (size_t i = 0; i < n; i++) assert_true(o->m[i] == 0 && o->v[i] == 0);
    }
    /* a finite gradient afterwards is taken as usual */
    tu_fill_uniform(m->grads_blob, n, -1, 1, 9);
    TU_OK(ssm_adamw_step(o, m, NULL));
    assert_int_equal(o->step, 1);
    assert_true(memcmp(m->params_blob, before, n * sizeof(float)) != 0);
    /* an optimizer made for a model of another size is refused (the check is by the number
     * of parameters: (16, 12, 1 layer) would have the same 1560 as this one) */
    ssm_model *other = tiny_model(16, 12, 2, 8);
    assert_true(other->n_params != m->n_params);
    assert_int_equal(ssm_adamw_step(o, other, NULL), SSM_ERR_ARG);
    /* settings out of range are refused */
    ssm_adamw *o2 = NULL;
    ssm_adamw_config bad = c;
    bad.beta1 = 1.0f;
    assert_int_equal(ssm_adamw_create(&bad, m, &o2), SSM_ERR_ARG);
    bad = c;
    bad.eps = 0;
    assert_int_equal(ssm_adamw_create(&bad, m, &o2), SSM_ERR_ARG);
    bad = c;
    bad.lr = NAN;
    assert_int_equal(ssm_adamw_create(&bad, m, &o2), SSM_ERR_ARG);
    assert_null(o2);
    free(before);
    ssm_adamw_free(o);
    ssm_model_free(m);
    ssm_model_free(other);
}

/* ---- a tiny training run ----------------------------------------------------------------- */

static void test_training_memorises_a_batch(void **st) {
    (void)st;
    enum { B = 2, L = 24, STEPS = 60 };
    ssm_model *m = tiny_model(32, 32, 2, 10);
    int V = 32;
    int32_t tok[B * L], tgt[B * L];
    float r[B * L];
    tu_fill_uniform(r, B * L, 0, (float)V, 11);
    for (int i = 0; i < B * L; i++) tok[i] = (int32_t)r[i] % V;
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) tgt[b * L + l] = l + 1 < L ? tok[b * L + l + 1] : -1;
    ssm_adamw_config c = ssm_adamw_config_default();
    c.lr = 1e-2f;
    c.warmup_steps = 5;
    c.total_steps = STEPS;
    ssm_adamw *o;
    TU_OK(ssm_adamw_create(&c, m, &o));
    float first = 0, loss = 0, gn = 0;
    for (int s = 0; s < STEPS; s++) {
        TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
        if (s == 0) first = loss;
        ssm_model_zero_grad(m);
        TU_OK(ssm_backward(m));
        TU_OK(ssm_adamw_step(o, m, &gn));
        if (s % 10 == 0) printf("step %2d loss %.4f grad norm %.3f\n", s, loss, gn);
    }
    TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
    printf("loss %.4f -> %.4f after %d steps (%.0f%% lower; log V = %.4f)\n", first, loss, STEPS,
           100 * (1 - loss / first), log(V));
    assert_true(fabs(first - log(V)) < 0.5); /* starts near uniform */
    assert_true(loss <= 0.5f * first);
    ssm_adamw_free(o);
    ssm_model_free(m);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_decay_flags),
        cmocka_unit_test(test_step_matches_hand_computation),
        cmocka_unit_test(test_zero_gradient_decay_only),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_nonfinite_gradient_refused),
        cmocka_unit_test(test_training_memorises_a_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
