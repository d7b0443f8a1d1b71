/* test_reliability.c: numbers and memory (docs/reliability.md): NaN or infinity in a saved
 * model's weights or optimizer moments is refused naming the tensor; a training plan is
 * counted before anything is allocated, and the count matches what the model allocates. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "ssm/checkpoint.h"

static ssm_config small(void) {
    ssm_config c = ssm_config_default(16, 8, 2);
    c.d_state = 4;
    return c;
}

static void expect(ssm_status got, ssm_status want, const char *part1, const char *part2) {
    const char *msg = ssm_last_error();
    print_message("  -> %s\n", msg);
    if (got != want) fail_msg("status %d, expected %d: %s", got, want, msg);
    if (part1 && !strstr(msg, part1)) fail_msg("message lacks '%s': %s", part1, msg);
    if (part2 && !strstr(msg, part2)) fail_msg("message lacks '%s': %s", part2, msg);
}

static void test_non_finite_weights_refused(void **state) {
    (void)state;
    ssm_config c = small();
    ssm_model *m = NULL, *back = NULL;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, 1));
    char path[4200];
    snprintf(path, sizeof path, "%s/m.safetensors", tu_tmpdir());
    const ssm_tensor_info *t = ssm_model_find_tensor(m, "backbone.layers.1.mixer.x_proj.weight");
    assert_non_null(t);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    const char *said[] = {"holds NaN at element 5", "holds +infinity", "holds -infinity"};
    for (int k = 0; k < 3; k++) {
        float keep = m->params_blob[t->offset + 5];
        m->params_blob[t->offset + 5] = bad[k];
        TU_OK(ssm_checkpoint_save(m, path, NULL));
        m->params_blob[t->offset + 5] = keep;
        expect(ssm_checkpoint_load(path, &back), SSM_ERR_NUMERIC,
               "tensor backbone.layers.1.mixer.x_proj.weight", said[k]);
        assert_null(back);
    }
    TU_OK(ssm_checkpoint_save(m, path, NULL)); /* the finite model loads */
    TU_OK(ssm_checkpoint_load(path, &back));
    ssm_model_free(back);
    /* the optimizer's moments */
    ssm_adamw_config oc = ssm_adamw_config_default();
    ssm_adamw *opt = NULL;
    TU_OK(ssm_adamw_create(&oc, m, &opt));
    opt->v[t->offset + 2] = NAN;
    TU_OK(ssm_adamw_save(opt, m, path, NULL));
    opt->v[t->offset + 2] = 0;
    expect(ssm_adamw_load(opt, m, path, NULL), SSM_ERR_NUMERIC, "x_proj.weight", "NaN at element 2");
    ssm_adamw_free(opt);
    ssm_model_free(m);
}

/* the plan's parameter count is the model's, and its activations what ssm_model_reserve
 * allocates (within the tokens and targets) */
static void test_memory_plan_matches_the_model(void **state) {
    (void)state;
    ssm_config c = small();
    ssm_memory_plan p;
    TU_OK(ssm_plan_training_memory(&c, 3, 40, &p));
    ssm_model *m = NULL;
    TU_OK(ssm_model_create(&c, &m));
    assert_true(p.params == 4.0 * m->n_params && p.grads == p.params && p.optimizer == 2 * p.params);
    assert_true(p.activations > 4.0 * 3 * 40 * (c.vocab_size + c.d_model));
    assert_true(p.total == p.params + p.grads + p.optimizer + p.activations);
    ssm_model_free(m);
    /* absurd plans are counted, not overflowed */
    c = ssm_config_default(256, 65536, 64);
    TU_OK(ssm_plan_training_memory(&c, 1 << 20, 1 << 20, &p));
    assert_true(p.activations > 1e18 && p.params > 1e12 && isfinite(p.total));
    expect(ssm_plan_training_memory(&c, 0, 4, &p), SSM_ERR_ARG, "B, L > 0", NULL);
    assert_true(ssm_available_memory() > 0); /* Linux: /proc/meminfo */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_non_finite_weights_refused),
        cmocka_unit_test(test_memory_plan_matches_the_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
