/* test_induction_heads.c: the induction-heads plugin (examples/induction_heads) and the
 * accuracy metric of ssm-accuracy (bin/accuracy.c): the batches at several lengths, the argmax
 * count, and the windowed evaluation (state carried) against one pass. tests/meson.build passes
 * the plugin's path in SSM_INDUCTION_HEADS_SO. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "../../bin/accuracy.h"
#include "../../tasks/registry.h"
#include "ssm/recipe.h"
#include "ssm/task.h"

typedef struct fixture {
    ssm_recipe *recipe;
    const ssm_task_ops *ops;
    void *task;
} fixture;

static ssm_status open_task(const char *options, fixture *f) {
    const char *so = getenv("SSM_INDUCTION_HEADS_SO");
    if (!so || !*so) fail_msg("SSM_INDUCTION_HEADS_SO is not set (tests/meson.build sets it)");
    char yaml[4096];
    memset(f, 0, sizeof *f);
    snprintf(yaml, sizeof yaml, "task:\n  name: \"%s\"\n%s", so, options);
    TU_OK(ssm_recipe_parse("induction.yaml", yaml, strlen(yaml), &f->recipe));
    TU_OK(ssm_task_find(so, &f->ops));
    assert_string_equal(f->ops->name, "induction_heads");
    return f->ops->create(f->recipe, ssm_node_get(f->recipe->root, "task"), NULL, &f->task);
}

static void close_task(fixture *f) {
    if (f->task) f->ops->destroy(f->task);
    ssm_recipe_free(f->recipe);
}

/* At every length: one trigger inside, one at the end, the answer scored there only. */
static void test_batches(void **state) {
    fixture f;
    TU_OK(open_task("  vocab: 16\n", &f));
    assert_int_equal(f.ops->vocab_size(f.task), 16);
    const int lengths[] = {3, 4, 64, 256, 1000};
    enum { B = 8, MAX_L = 1000 };
    static int32_t tok[B * MAX_L], tgt[B * MAX_L], tok2[B * MAX_L], tgt2[B * MAX_L];
    ssm_rng rng;
    ssm_rng_seed(&rng, 3);
    int early = 0, late = 0; /* where the first trigger falls: both halves are drawn */
    for (int i = 0; i < 5; i++) {
        int L = lengths[i];
        ssm_batch b = {.B = B, .L = L, .tokens = tok, .targets = tgt},
                  b2 = {.B = B, .L = L, .tokens = tok2, .targets = tgt2};
        ssm_rng again = rng;
        TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_VALID, &rng, &b));
        TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_VALID, &again, &b2)); /* same rng, same batch */
        assert_memory_equal(tok, tok2, (size_t)B * L * sizeof *tok);
        assert_memory_equal(tgt, tgt2, (size_t)B * L * sizeof *tgt);
        for (int r = 0; r < B; r++) {
            const int32_t *t = tok + r * L, *g = tgt + r * L;
            int first = -1, triggers = 0;
            for (int l = 0; l < L; l++) {
                assert_true(t[l] >= 0 && t[l] < 16);
                if (t[l] == 0) {
                    triggers++;
                    if (first < 0) first = l;
                }
                if (l < L - 1) assert_int_equal(g[l], -1);
            }
            assert_int_equal(triggers, 2);
            assert_int_equal(t[L - 1], 0);
            assert_true(first <= L - 3);
            assert_int_equal(g[L - 1], t[first + 1]); /* the token after the first trigger */
            assert_true(g[L - 1] >= 1);
            if (L == 1000 && first < L / 2) early++;
            else if (L == 1000) late++;
        }
    }
    assert_true(early > 0 && late > 0);
    ssm_batch shorter = {.B = 1, .L = 2, .tokens = tok, .targets = tgt};
    assert_int_equal(f.ops->next_batch(f.task, SSM_SPLIT_TRAIN, &rng, &shorter), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "at least 3"));
    close_task(&f);
    assert_int_not_equal(open_task("  vocab: 2\n", &f), SSM_OK);
    close_task(&f);
    assert_int_not_equal(open_task("  vocb: 8\n", &f), SSM_OK);
    assert_non_null(strstr(ssm_last_error(), "vocab"));
    close_task(&f);
}

/* argmax over the task's ids (not the padding), lowest id on ties, unscored rows skipped */
static void test_accuracy_count(void **state) {
    enum { LD = 8, V = 5 };
    const float logits[4 * LD] = {
        0, 3, 1, 0, 0, 0, 0, 0,  /* argmax 1 */
        2, 0, 2, 0, 0, 0, 0, 0,  /* a tie of 0 and 2: 0 */
        0, 0, 0, 1, 0, 0, 0, 9,  /* 3 (id 7 is padding, beyond V) */
        5, 0, 0, 0, 0, 0, 0, 0}; /* not scored */
    const int32_t targets[4] = {1, 2, 3, -1};
    accuracy_count c = {0, 0};
    accuracy_add(logits, LD, V, targets, 4, &c);
    assert_int_equal(c.scored, 3);
    assert_int_equal(c.correct, 2);
    accuracy_add(logits, LD, V, targets, 1, &c); /* counts add up */
    assert_int_equal(c.scored, 4);
    assert_int_equal(c.correct, 3);
}

/* Windows of any size with the state carried count exactly as one pass; every sequence is
 * scored once. */
static void test_windowed_eval(void **state) {
    fixture f;
    TU_OK(open_task("  vocab: 16\n", &f));
    ssm_config c = ssm_config_default(16, 16, 2);
    c.d_state = 4;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, 4));
    enum { L = 300, B = 5, BATCHES = 8 };
    accuracy_count one, windows;
    TU_OK(accuracy_eval(m, f.ops, f.task, L, B, BATCHES, L, 7, &one));
    assert_int_equal(one.scored, B * BATCHES);
    assert_true(one.correct >= 0 && one.correct <= one.scored);
    const int sizes[] = {7, 64, 299};
    for (int i = 0; i < 3; i++) {
        TU_OK(accuracy_eval(m, f.ops, f.task, L, B, BATCHES, sizes[i], 7, &windows));
        assert_int_equal(windows.scored, one.scored);
        assert_int_equal(windows.correct, one.correct);
    }
    assert_int_equal(accuracy_eval(m, f.ops, f.task, L, B, BATCHES, 0, 7, &windows), SSM_ERR_ARG);
    ssm_model_free(m);
    close_task(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_accuracy_count),
        cmocka_unit_test(test_windowed_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
