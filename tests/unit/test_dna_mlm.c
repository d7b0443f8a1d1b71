/* test_dna_mlm.c: the DNA task's masked-LM objective (tasks/dna/mlm.c): the masking rates,
 * targets only at the chosen positions, reproducibility from the rng, and the task's MLM
 * batches (no BOS, no shift) and refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/dna/dna.h"
#include "ssm/recipe.h"
#include "testutil.h"

enum { N = 200000 };

/* Bases with every 7th position unscored (target -1, as N or padding would be). */
static void make_row(int32_t *tok, int32_t *tgt, int n, uint64_t seed) {
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    for (int l = 0; l < n; l++) {
        tok[l] = DNA_TOKEN_A + (int32_t)ssm_rng_below(&rng, 4);
        if (l % 7 == 3) tok[l] = DNA_TOKEN_N;
        tgt[l] = l % 7 == 3 ? -1 : tok[l];
    }
}

static void test_mask_statistics(void **st) {
    (void)st;
    int32_t *tok = malloc(N * sizeof *tok), *tgt = malloc(N * sizeof *tgt);
    int32_t *orig = malloc(N * sizeof *orig);
    make_row(tok, tgt, N, 3);
    memcpy(orig, tok, N * sizeof *tok);
    ssm_rng rng;
    ssm_rng_seed(&rng, 11);
    dna_mlm_mask(tok, tgt, N, 0.15, &rng);
    long scored = 0, chosen = 0, masked = 0, same = 0, other = 0;
    for (int l = 0; l < N; l++) {
        int was_scored = l % 7 != 3;
        scored += was_scored;
        if (tgt[l] < 0) { /* not chosen: the input is untouched */
            assert_int_equal(tok[l], orig[l]);
            continue;
        }
        assert_true(was_scored);            /* only scored positions are chosen */
        assert_int_equal(tgt[l], orig[l]);  /* the target is the original base */
        chosen++;
        if (tok[l] == DNA_TOKEN_MASK) masked++;
        else if (tok[l] == orig[l]) same++;
        else {
            assert_true(tok[l] >= DNA_TOKEN_A && tok[l] <= DNA_TOKEN_T);
            other++;
        }
    }
    /* binomial standard errors: chosen ~ 0.15 +- 0.0009; each share of ~25,700 chosen
     * +- 0.0025 at most: 5 sigma bounds */
    double rate = (double)chosen / scored;
    printf("chosen %.4f, of which mask %.4f, kept %.4f, other base %.4f\n", rate,
           (double)masked / chosen, (double)same / chosen, (double)other / chosen);
    assert_true(rate > 0.15 - 0.005 && rate < 0.15 + 0.005);
    assert_true(fabs((double)masked / chosen - 0.8) < 0.013);
    /* kept: 10% kept plus the random base that drew itself (10% x 1/4) */
    assert_true(fabs((double)same / chosen - 0.125) < 0.011);
    assert_true(fabs((double)other / chosen - 0.075) < 0.009);
    free(tok), free(tgt), free(orig);
}

static void test_mask_reproducible(void **st) {
    (void)st;
    enum { n = 5000 };
    int32_t a[n], ta[n], b[n], tb[n], c[n], tc[n];
    make_row(a, ta, n, 5), make_row(b, tb, n, 5), make_row(c, tc, n, 5);
    ssm_rng r1, r2, r3;
    ssm_rng_seed(&r1, 42), ssm_rng_seed(&r2, 42), ssm_rng_seed(&r3, 43);
    dna_mlm_mask(a, ta, n, 0.15, &r1);
    dna_mlm_mask(b, tb, n, 0.15, &r2);
    dna_mlm_mask(c, tc, n, 0.15, &r3);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(ta, tb, sizeof ta);
    assert_memory_equal(&r1, &r2, sizeof r1); /* the same number of draws */
    assert_true(memcmp(ta, tc, sizeof ta) != 0); /* another seed, other positions */
    /* rate 1: every scored position chosen */
    make_row(a, ta, n, 5);
    dna_mlm_mask(a, ta, n, 1.0, &r1);
    for (int l = 0; l < n; l++) assert_true((ta[l] >= 0) == (l % 7 != 3));
}

/* ---- the task's MLM batches ---------------------------------------------------------------- */

static const char *write_genome(const char *dir, int n) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/g.fa", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    ssm_rng rng;
    ssm_rng_seed(&rng, 9);
    fputs(">g\n", f);
    for (int i = 0; i < n; i++) {
        fputc(i % 1000 >= 500 && i % 1000 < 510 ? 'N' : "ACGT"[ssm_rng_below(&rng, 4)], f);
        if (i % 60 == 59) fputc('\n', f);
    }
    fputc('\n', f);
    fclose(f);
    return path;
}

static void *create(const char *yaml, ssm_recipe **r, ssm_status *status) {
    TU_OK(ssm_recipe_parse("test.yaml", yaml, strlen(yaml), r));
    ssm_node *task = ssm_node_get((*r)->root, "task"), *data = ssm_node_get((*r)->root, "data");
    ssm_node_get(task, "name");
    void *self = NULL;
    *status = ssm_task_dna.create(*r, task, data, &self);
    return self;
}

static void test_task_batches(void **st) {
    (void)st;
    const char *path = write_genome(tu_tmpdir(), 40000);
    char yaml[8192];
    snprintf(yaml, sizeof yaml, "task: {name: dna, objective: mlm, mask_rate: 0.15}\n"
             "data: {train: [%s]}\n", path);
    ssm_recipe *r;
    ssm_status s;
    void *task = create(yaml, &r, &s);
    TU_OK(s);
    enum { B = 8, L = 256 };
    int32_t tok[B * L], tgt[B * L], tok2[B * L], tgt2[B * L];
    ssm_batch b1 = {.B = B, .L = L, .tokens = tok, .targets = tgt};
    ssm_batch b2 = {.B = B, .L = L, .tokens = tok2, .targets = tgt2};
    ssm_rng r1, r2;
    ssm_rng_seed(&r1, 1), ssm_rng_seed(&r2, 1);
    long scored = 0, chosen = 0, masked = 0;
    for (int it = 0; it < 20; it++) {
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &r1, &b1));
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &r2, &b2));
        assert_memory_equal(tok, tok2, sizeof tok); /* the same rng, the same batch */
        assert_memory_equal(tgt, tgt2, sizeof tgt);
        for (int i = 0; i < B * L; i++) {
            assert_true(tok[i] != DNA_TOKEN_BOS); /* no BOS: the input is not shifted */
            if (tgt[i] < 0) {
                assert_true(tok[i] >= DNA_TOKEN_A && tok[i] <= DNA_TOKEN_N); /* a base as read */
                scored += tok[i] != DNA_TOKEN_N;
                continue;
            }
            assert_true(tgt[i] >= DNA_TOKEN_A && tgt[i] <= DNA_TOKEN_T);
            /* at its own position: a masked token, or a base */
            assert_true(tok[i] == DNA_TOKEN_MASK || (tok[i] >= DNA_TOKEN_A && tok[i] <= DNA_TOKEN_T));
            scored++, chosen++, masked += tok[i] == DNA_TOKEN_MASK;
        }
    }
    double rate = (double)chosen / scored; /* 40,960 positions, ~6,100 chosen */
    assert_true(rate > 0.135 && rate < 0.165);
    assert_true(fabs((double)masked / chosen - 0.8) < 0.03);
    /* no Markov baseline (it predicts the next base) and no next-base scoring */
    const int32_t *sym;
    size_t n;
    int alphabet;
    assert_int_equal(ssm_task_dna.baseline_symbols(task, SSM_SPLIT_TRAIN, 100, &sym, &n, &alphabet),
                     SSM_ERR_UNSUPPORTED);
    void *reader;
    assert_int_equal(ssm_task_dna.open_records(task, path, &reader), SSM_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssm_last_error(), "masked LM"));
    ssm_task_dna.destroy(task);
    ssm_recipe_free(r);
    /* mask_rate without the mlm objective, and out of range */
    const char *bad[] = {"task: {name: dna, mask_rate: 0.2}\n",
                         "task: {name: dna, objective: mlm, mask_rate: 1.5}\n",
                         "task: {name: dna, objective: bert}\n"};
    for (int i = 0; i < 3; i++) {
        task = create(bad[i], &r, &s);
        assert_int_equal(s, SSM_ERR_ARG);
        assert_non_null(strstr(ssm_last_error(), "test.yaml:1:"));
        ssm_task_dna.destroy(task);
        ssm_recipe_free(r);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_statistics),
        cmocka_unit_test(test_mask_reproducible),
        cmocka_unit_test(test_task_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
