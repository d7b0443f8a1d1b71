/* test_seqclass.c: the dna-classify task (tasks/seqclass): the TSV and FASTA readers and their
 * errors, the metrics against values computed by hand, the folds (a stratified partition,
 * deterministic in the seed), the task from a recipe (classes and length recorded in it), and
 * the backbone's own learning rate of fine-tuning (AdamW's backbone_lr_ratio). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/seqclass/seqclass.h"
#include "../../tasks/registry.h"
#include "ssm/recipe.h"
#include "ssm/task.h"
#include "testutil.h"

static const char *write_file(const char *name, const char *text) {
    static char path[8][4096];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 4096, "%s/%s", tu_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* ---- readers ----------------------------------------------------------------------------- */

static void test_tsv(void **st) {
    (void)st;
    sc_set s;
    const char *p = write_file("a.tsv", "sequence\tlabel\nACGT\tyes\n\nacgn\tno\r\nRYKM\tyes\n");
    TU_OK(sc_set_read(p, 1, &s));
    assert_int_equal(s.n, 3);
    assert_string_equal(s.seqs[1], "acgn");
    assert_string_equal(s.labels[1], "no"); /* \r dropped */
    assert_int_equal(s.lines[2], 5);
    assert_string_equal(s.ids[0], "2"); /* the line number */
    const char **names;
    int n;
    TU_OK(sc_set_label_names(&s, &names, &n));
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "no"); /* sorted */
    assert_string_equal(names[1], "yes");
    TU_OK(sc_set_classes(&s, names, n, 1));
    assert_int_equal(s.classes[0], 1), assert_int_equal(s.classes[1], 0);
    free(names);
    sc_set_free(&s);
    /* no header; a file to score without labels */
    p = write_file("b.tsv", "ACGT\nGGCC\tx\n");
    TU_OK(sc_set_read(p, 0, &s));
    assert_int_equal(s.n, 2);
    assert_null(s.labels[0]);
    sc_set_free(&s);
    /* errors, each at its line and column */
    struct { const char *text, *where; } bad[] = {
        {"ACGT\tyes\nACXT\tno\n", "c.tsv:2:3: 'X' is not a nucleotide code"},
        {"ACGT\tyes\nACGT\n", "c.tsv:2:5: no label"},
        {"ACGT\tyes\tmore\n", "c.tsv:1:9: a third column"},
        {"ACGT\t\n", "c.tsv:1:6: the label is empty"},
        {"sequence\tlabel\n\tyes\n", "c.tsv:2:1: no sequence"},
        {"sequence\tlabel\n", "no sequences"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = write_file("c.tsv", bad[i].text);
        assert_int_equal(sc_set_read(p, 1, &s), SSM_ERR_FORMAT);
        if (!strstr(ssm_last_error(), bad[i].where)) fail_msg("%s: got %s", bad[i].where, ssm_last_error());
    }
    assert_int_equal(sc_set_read("/nonexistent/x.tsv", 1, &s), SSM_ERR_IO);
}

static void test_fasta(void **st) {
    (void)st;
    sc_set s;
    const char *p = write_file("a.fa", ">s1 label=promoter some text\nACGT\nAC\n>s2 from E. coli +\nGGGG\n"
                                       ">s3 label=no\nTTTT\n");
    TU_OK(sc_set_read(p, 1, &s));
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], "s1");
    assert_string_equal(s.seqs[0], "ACGTAC");
    assert_int_equal(s.lens[0], 6);
    assert_string_equal(s.labels[0], "promoter"); /* label= wins */
    assert_string_equal(s.labels[1], "+");        /* else the last word */
    assert_string_equal(s.labels[2], "no");
    assert_int_equal(s.lines[1], 4);
    sc_set_free(&s);
    p = write_file("b.fa", ">only_a_name\nACGT\n");
    TU_OK(sc_set_read(p, 0, &s)); /* to score: no label is fine */
    assert_null(s.labels[0]);
    sc_set_free(&s);
    struct { const char *text, *where; } bad[] = {
        {">only_a_name\nACGT\n", "c.fa:1:13: no label in the header"},
        {">a x\nACGT\n>b label=\nAC\n", "c.fa:3:10: the label is empty"},
        {">a x\nAC GT\n", "c.fa:2:3: byte 0x20 is not"},
        {">a x\n>b y\nAC\n", "c.fa:1:1: record 'a' has no bases"},
        {"\n>\nAC\n", "c.fa:2:2: a FASTA header without a name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = write_file("c.fa", bad[i].text);
        assert_int_equal(sc_set_read(p, 1, &s), SSM_ERR_FORMAT);
        if (!strstr(ssm_last_error(), bad[i].where)) fail_msg("%s: got %s", bad[i].where, ssm_last_error());
    }
}

/* ---- metrics, by hand -------------------------------------------------------------------- */

static void test_metrics_binary(void **st) {
    (void)st;
    /* p(class 1) and the truth; predicted 1 when p > 0.5: TP 3, FP 1, FN 1, TN 3 */
    double p1[8] = {0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1}, probs[16];
    int32_t truth[8] = {1, 1, 0, 1, 0, 1, 0, 0};
    for (int i = 0; i < 8; i++) probs[2 * i] = 1 - p1[i], probs[2 * i + 1] = p1[i];
    sc_metrics m = sc_evaluate(probs, truth, 8, 2);
    assert_int_equal(m.n, 8);
    assert_true(fabs(m.accuracy - 0.75) < 1e-12);
    /* (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / 16 */
    assert_true(fabs(m.mcc - 0.5) < 1e-12);
    /* positives {.9 .8 .6 .3} over negatives {.7 .4 .2 .1}: 4 + 4 + 3 + 2 of 16 pairs */
    assert_true(fabs(m.auroc - 13.0 / 16) < 1e-12);
    /* ties count one half: positives {.6 .4}, negatives {.4 .2}: (2 + 1.5) / 4 */
    double s[4] = {0.6, 0.4, 0.4, 0.2};
    int pos[4] = {1, 1, 0, 0};
    assert_true(fabs(sc_auroc_binary(s, pos, 4) - 0.875) < 1e-12);
    double flat[4] = {0.5, 0.5, 0.5, 0.5};
    assert_true(fabs(sc_auroc_binary(flat, pos, 4) - 0.5) < 1e-12);
    assert_true(isnan(sc_auroc_binary(s, (int[]){1, 1, 1, 1}, 4))); /* no negatives */
    /* a constant prediction: MCC 0; rows with truth -1 are left out */
    double same[6] = {0.8, 0.2, 0.7, 0.3, 0.1, 0.9};
    m = sc_evaluate(same, (int32_t[]){0, 1, -1}, 3, 2);
    assert_int_equal(m.n, 2);
    assert_true(fabs(m.accuracy - 0.5) < 1e-12 && m.mcc == 0);
}

static void test_metrics_multiclass(void **st) {
    (void)st;
    double probs[18] = {0.7, 0.2, 0.1,  0.3, 0.5, 0.2,  0.1, 0.8, 0.1,
                        0.2, 0.6, 0.2,  0.1, 0.3, 0.6,  0.5, 0.1, 0.4};
    int32_t truth[6] = {0, 0, 1, 1, 2, 2}; /* predicted 0 1 1 1 2 0 */
    sc_metrics m = sc_evaluate(probs, truth, 6, 3);
    assert_true(fabs(m.accuracy - 4.0 / 6) < 1e-12);
    /* Gorodkin: c = 4, s = 6, t = (2 2 2), p = (2 3 1): (24 - 12) / sqrt((36 - 14)(36 - 12)) */
    assert_true(fabs(m.mcc - 12 / sqrt(22.0 * 24)) < 1e-12);
    /* one-vs-rest: class 0 (.7 .3 vs .1 .2 .1 .5) 7/8, classes 1 and 2 separated: 1 */
    assert_true(fabs(m.auroc - (0.875 + 1 + 1) / 3) < 1e-12);
}

/* ---- folds ------------------------------------------------------------------------------- */

static void test_folds(void **st) {
    (void)st;
    char path[4096];
    snprintf(path, sizeof path, "%s/../data/promoters/promoters.tsv", tu_data_path(""));
    sc_set s;
    const char **names;
    int C;
    TU_OK(sc_set_read(path, 1, &s));
    TU_OK(sc_set_label_names(&s, &names, &C));
    TU_OK(sc_set_classes(&s, names, C, 1));
    assert_int_equal(s.n, 106);
    assert_int_equal(C, 2);
    int a[106], b[106], c[106];
    sc_folds(s.classes, s.n, C, 5, 1, a);
    sc_folds(s.classes, s.n, C, 5, 1, b);
    sc_folds(s.classes, s.n, C, 5, 2, c);
    assert_memory_equal(a, b, sizeof a);        /* deterministic in the seed */
    assert_true(memcmp(a, c, sizeof a) != 0);   /* another seed, other folds */
    int size[5] = {0}, per_class[5][2] = {{0}};
    for (int i = 0; i < s.n; i++) {
        assert_true(a[i] >= 0 && a[i] < 5);     /* every record in exactly one fold */
        size[a[i]]++, per_class[a[i]][s.classes[i]]++;
    }
    for (int f = 0; f < 5; f++) {
        assert_true(size[f] == 21 || size[f] == 22); /* 106 = 22 + 4 x 21 */
        for (int k = 0; k < 2; k++) assert_true(per_class[f][k] == 10 || per_class[f][k] == 11);
    }
    free(names);
    sc_set_free(&s);
}

/* ---- the task from a recipe -------------------------------------------------------------- */

static ssm_status create(const char *yaml, int with_data, ssm_recipe **r, void **task) {
    const ssm_task_ops *ops;
    TU_OK(ssm_task_find("dna-classify", &ops));
    TU_OK(ssm_recipe_parse("t.yaml", yaml, strlen(yaml), r));
    ssm_node *tn = ssm_node_get((*r)->root, "task"), *dn = ssm_node_get((*r)->root, "data");
    ssm_node_get(tn, "name");
    *task = NULL;
    return ops->create(*r, tn, with_data ? dn : NULL, task);
}

static void test_task(void **st) {
    (void)st;
    const ssm_task_ops *ops;
    TU_OK(ssm_task_find("dna-classify", &ops));
    const char *p = write_file("t.tsv", "ACGTAC\ta\nCCGT\tb\nGGTT\ta\nTTTTTT\tb\nACAC\ta\nGTGT\tb\n");
    char yaml[4096];
    snprintf(yaml, sizeof yaml, "task: {name: dna-classify, folds: 3, fold: 1, pool: cls}\n"
             "data: {train: %s}\n", p);
    ssm_recipe *r;
    void *task;
    TU_OK(create(yaml, 1, &r, &task));
    ssm_io_config io;
    int L = 0;
    TU_OK(ops->model_io(task, &io, &L));
    assert_int_equal(io.head, SSM_HEAD_CLASSIFY);
    assert_int_equal(io.outputs, 2);
    assert_int_equal(io.pool, SSM_POOL_CLS);
    assert_int_equal(L, 7); /* CLS + the longest, 6 */
    /* the classes and the length are now in the recipe */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    TU_OK(ssm_recipe_emit(r, f));
    fclose(f);
    assert_non_null(strstr(text, "length: 7"));
    assert_non_null(strstr(text, "classes:"));
    free(text);
    int32_t tok[4 * 7], tgt[4];
    ssm_batch b = {.B = 4, .L = 7, .tokens = tok, .targets = tgt};
    ssm_rng rng;
    ssm_rng_seed(&rng, 3);
    TU_OK(ops->next_batch(task, SSM_SPLIT_TRAIN, &rng, &b));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(tok[i * 7], 0); /* CLS first */
        assert_true(tgt[i] == 0 || tgt[i] == 1);
    }
    /* metrics from logits: rows right, wrong, right, right */
    tgt[0] = 0, tgt[1] = 1, tgt[2] = 1, tgt[3] = 0;
    float logits[8] = {2, 0, 1, 0, -1, 1, 0, -3};
    double v[3];
    TU_OK(ops->metrics(task, &b, logits, v));
    assert_true(fabs(v[0] - 0.75) < 1e-12);
    ops->destroy(task);
    /* scoring without data: the recorded classes and length suffice */
    char *again = NULL;
    f = open_memstream(&again, &len);
    TU_OK(ssm_recipe_emit(r, f));
    fclose(f);
    ssm_recipe_free(r);
    TU_OK(create(again, 0, &r, &task));
    TU_OK(ops->model_io(task, &io, &L));
    assert_int_equal(L, 7);
    ops->destroy(task);
    ssm_recipe_free(r);
    free(again);
    /* refused: fold out of range, a label not among task.classes, too long, no length */
    const char *bad[] = {"task: {name: dna-classify, folds: 3, fold: 3}\ndata: {train: %s}\n",
                         "task: {name: dna-classify, classes: [a, c]}\ndata: {train: %s}\n",
                         "task: {name: dna-classify, length: 5}\ndata: {train: %s}\n",
                         "task: {name: dna-classify, classes: [a, b]}\n%s"};
    const char *want[] = {"t.yaml:1:44: task.fold = 3 must be below", "t.tsv:2: the label 'b' is not one",
                          "t.tsv:1: a sequence of 6 bases", "no task.length"};
    for (int i = 0; i < 4; i++) {
        snprintf(yaml, sizeof yaml, bad[i], i < 3 ? p : "");
        assert_true(create(yaml, i < 3, &r, &task) != SSM_OK);
        if (!strstr(ssm_last_error(), want[i])) fail_msg("%s: got %s", want[i], ssm_last_error());
        ssm_recipe_free(r);
    }
}

/* ---- fine-tuning: the backbone's own rate ----------------------------------------------- */

static void test_backbone_lr(void **st) {
    (void)st;
    ssm_config c = ssm_config_default(12, 16, 1);
    c.io = (ssm_io_config){.head = SSM_HEAD_CLASSIFY, .outputs = 3};
    TU_OK(ssm_config_validate(&c));
    ssm_model *m[3];
    float ratio[3] = {1, 0.5f, 0};
    for (int k = 0; k < 3; k++) {
        TU_OK(ssm_model_create(&c, &m[k]));
        TU_OK(ssm_model_init(m[k], 5));
        tu_fill_uniform(m[k]->grads_blob, m[k]->n_params, -1, 1, 9);
        ssm_adamw_config ac = ssm_adamw_config_default();
        ac.lr = 1e-2f, ac.grad_clip = 0, ac.backbone_lr_ratio = ratio[k];
        ssm_adamw *opt;
        TU_OK(ssm_adamw_create(&ac, m[k], &opt));
        TU_OK(ssm_adamw_step(opt, m[k], NULL));
        ssm_adamw_free(opt);
    }
    ssm_model *init;
    TU_OK(ssm_model_create(&c, &init));
    TU_OK(ssm_model_init(init, 5));
    for (int t = 0; t < init->n_tensors; t++) {
        const ssm_tensor_info *ti = &init->tensors[t];
        int head = !strncmp(ti->name, "head.", 5);
        for (size_t i = ti->offset; i < ti->offset + ti->numel; i++) {
            double full = m[0]->params_blob[i] - init->params_blob[i];
            double half = m[1]->params_blob[i] - init->params_blob[i];
            double none = m[2]->params_blob[i] - init->params_blob[i];
            assert_true(full != 0);
            if (head) { /* the head at lr whatever the backbone does */
                assert_true(half == full && none == full);
            } else {      /* the backbone at ratio x lr; frozen: unchanged, bit for bit */
                /* to the rounding of p - delta in float */
                assert_true(fabs(half - 0.5 * full) <= 2e-7 * (fabs(init->params_blob[i]) + fabs(full)));
                assert_true(none == 0);
            }
        }
    }
    ssm_adamw_config bad = ssm_adamw_config_default();
    bad.backbone_lr_ratio = -1;
    ssm_adamw *opt;
    assert_int_equal(ssm_adamw_create(&bad, init, &opt), SSM_ERR_ARG);
    for (int k = 0; k < 3; k++) ssm_model_free(m[k]);
    ssm_model_free(init);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsv),
        cmocka_unit_test(test_fasta),
        cmocka_unit_test(test_metrics_binary),
        cmocka_unit_test(test_metrics_multiclass),
        cmocka_unit_test(test_folds),
        cmocka_unit_test(test_task),
        cmocka_unit_test(test_backbone_lr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
