/* test_timeseries.c: the time-series task end to end through task ABI v2: the CSV loader's
 * errors (file:line:column) and missing values, chronological splits that never leak (a
 * marker planted in the last rows), the baselines against values computed by hand, and a
 * small model trained through ssm_forward_io on the task's batches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../loaders/csv/csv.h"
#include "../../tasks/registry.h"
#include "../../tasks/timeseries/timeseries.h"
#include "ssm/recipe.h"
#include "testutil.h"

static const char *write_file(const char *name, const char *text) {
    static char path[8][4096];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 4096, "%s/%s", tu_tmpdir(), name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static void expect_error(ssm_status got, ssm_status want, const char *fragment) {
    assert_int_equal(got, want);
    if (!strstr(ssm_last_error(), fragment)) fail_msg("'%s' lacks '%s'", ssm_last_error(), fragment);
}

static void test_csv_errors(void **st) {
    (void)st;
    csv_options o = {.date_column = "date"};
    csv_table t;
    char want[4200];
    const char *p = write_file("ragged.csv", "date,a,b\n2000,1,2\n2001,3\n");
    snprintf(want, sizeof want, "%s:3:3: the row has 2 fields, the header 3", p);
    expect_error(csv_read(p, &o, &t), SSM_ERR_FORMAT, want);
    p = write_file("word.csv", "date,a,b\n2000,1,2\n\n2001,3,x7\n");
    snprintf(want, sizeof want, "%s:4:3: 'x7' in column 'b' is not a number", p);
    expect_error(csv_read(p, &o, &t), SSM_ERR_FORMAT, want);
    p = write_file("empty.csv", "");
    expect_error(csv_read(p, &o, &t), SSM_ERR_FORMAT, "the file is empty");
    p = write_file("header.csv", "date,a\n");
    expect_error(csv_read(p, &o, &t), SSM_ERR_FORMAT, "a header and no rows");
    p = write_file("gap.csv", "date,a,b\n1,1,10\n2,NA,\n3,,40\n4,4,50\n");
    snprintf(want, sizeof want, "%s:3:2: missing value in column 'a'", p);
    expect_error(csv_read(p, &o, &t), SSM_ERR_FORMAT, want);
    o.missing = CSV_MISSING_LINEAR;
    TU_OK(csv_read(p, &o, &t));
    assert_int_equal(t.rows, 4);
    double linear[8] = {1, 10, 2, 25, 3, 40, 4, 50};
    for (int i = 0; i < 8; i++) assert_true(fabs(t.values[i] - linear[i]) < 1e-12);
    assert_string_equal(t.dates[2], "3");
    assert_int_equal(t.lines[3], 5);
    csv_table_free(&t);
    o.missing = CSV_MISSING_PREVIOUS;
    const char *cols[] = {"b", NULL};
    o.columns = cols;
    TU_OK(csv_read(p, &o, &t));
    double previous[4] = {10, 10, 40, 50};
    assert_int_equal(t.cols, 1);
    for (int i = 0; i < 4; i++) assert_true(t.values[i] == previous[i]);
    csv_table_free(&t);
    /* TSV by its extension, quoted fields by libcsv */
    p = write_file("tab.tsv", "x\t\"y z\"\n1\t2\n");
    o = (csv_options){0};
    TU_OK(csv_read(p, &o, &t));
    assert_string_equal(t.names[1], "y z");
    csv_table_free(&t);
}

/* a recipe for the task on the file at path */
typedef struct fixture {
    ssm_recipe *recipe;
    const ssm_task_ops *ops;
    void *task;
} fixture;

static ssm_status open_task(const char *path, const char *options, fixture *f) {
    char yaml[8192];
    memset(f, 0, sizeof *f);
    snprintf(yaml, sizeof yaml, "task:\n  name: timeseries\n%sdata:\n  train: %s\n", options, path);
    TU_OK(ssm_recipe_parse("ts.yaml", yaml, strlen(yaml), &f->recipe));
    TU_OK(ssm_task_find("timeseries", &f->ops));
    return f->ops->create(f->recipe, ssm_node_get(f->recipe->root, "task"),
                          ssm_node_get(f->recipe->root, "data"), &f->task);
}

static void close_task(fixture *f) {
    if (f->task) f->ops->destroy(f->task);
    ssm_recipe_free(f->recipe);
}

/* n rows of 2 channels, a period-12 wave and a slower one; markers in the last rows: 12345 in
 * both channels of the last test_rows rows, -777 in channel b of the valid_rows before them */
static const char *series_file(const char *name, int n, int valid_rows, int test_rows) {
    size_t cap = (size_t)n * 64 + 64;
    char *text = malloc(cap);
    size_t k = (size_t)snprintf(text, cap, "t,a,b\n");
    for (int i = 0; i < n; i++) {
        double a = sin(2 * M_PI * i / 12) + i / 1000.0, b = cos(2 * M_PI * i / 30);
        if (i >= n - test_rows) a = b = 12345;
        else if (i >= n - test_rows - valid_rows) b = -777;
        k += (size_t)snprintf(text + k, cap - k, "%d,%.6f,%.6f\n", i, a, b);
    }
    const char *p = write_file(name, text);
    free(text);
    return p;
}

static void test_task_errors(void **st) {
    (void)st;
    fixture f;
    const char *p = series_file("short.csv", 100, 0, 0);
    expect_error(open_task(p, "  date_column: t\n  lookback: 32\n  horizon: 40\n", &f), SSM_ERR_ARG,
                 "the horizon is too long for the series");
    close_task(&f);
    p = write_file("flat.csv", "t,a,b\n1,1,5\n2,2,5\n3,3,5\n4,4,5\n5,5,5\n6,6,5\n7,7,5\n8,8,5\n9,9,5\n10,1,5\n");
    char want[4200];
    snprintf(want, sizeof want, "%s:2: column 'b' is constant", p);
    expect_error(open_task(p, "  date_column: t\n  lookback: 2\n  horizon: 1\n  test_fraction: 0.1\n", &f),
                 SSM_ERR_ARG, want);
    close_task(&f);
    expect_error(open_task(p, "  lookback: 6\n  patch: 4\n", &f), SSM_ERR_ARG, "does not divide");
    close_task(&f);
}

/* Chronological splits never leak: markers fill the last rows (the test split, 20 %) and the
 * validation rows before them (10 %, channel b). Training batches see neither; validation
 * batches never see the test rows, and every target they score lies in the validation rows. */
static void test_splits_never_leak(void **st) {
    (void)st;
    enum { N = 400, L = 24, H = 6, B = 16 };
    const char *p = series_file("marked.csv", N, 40, 80);
    fixture f;
    TU_OK(open_task(p, "  date_column: t\n  lookback: 24\n  horizon: 6\n", &f));
    ssm_io_config io;
    int seq = 0;
    TU_OK(f.ops->model_io(f.task, &io, &seq));
    assert_int_equal(seq, L);
    assert_int_equal(io.features, 2);
    assert_int_equal(io.outputs, H * 2);
    static float feat[B * L * 2], vals[B * L * H * 2];
    ssm_batch b = {.B = B, .L = L, .features = feat, .values = vals};
    ssm_rng rng;
    ssm_rng_seed(&rng, 1);
    /* normalised by the training rows (|x| < 2 there): the test marker is ~1e4, the
     * validation marker ~ -1e3 */
    int64_t valid_targets = 0;
    for (int round = 0; round < 300; round++) {
        TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_TRAIN, &rng, &b));
        for (int i = 0; i < B * L * 2; i++) assert_true(fabsf(feat[i]) < 10);
        for (int i = 0; i < B * L * H * 2; i++) assert_true(fabsf(vals[i]) < 10);
        TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_VALID, &rng, &b));
        for (int i = 0; i < B * L * 2; i++) assert_true(fabsf(feat[i]) < 5000);
        for (int i = 0; i < B * L * H * 2; i++) {
            if (isnan(vals[i])) continue;
            assert_true(fabsf(vals[i]) < 5000);
            if (i % 2) assert_true(vals[i] < -100), valid_targets++; /* channel b: a validation row */
        }
    }
    assert_true(valid_targets == 300 * B * H); /* one scored position per window */
    close_task(&f);
}

static void test_baselines_by_hand(void **st) {
    (void)st;
    /* one channel (C = 1): x = 1 2 3 4 5 6 7 8 */
    double x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[4];
    ts_last_value(x, 1, 0, 6, 3, out);
    for (int h = 0; h < 3; h++) assert_true(out[h] == 6);
    ts_seasonal_naive(x, 1, 0, 6, 4, 3, out); /* the season before row 6 is rows 3 4 5 */
    double want[4] = {4, 5, 6, 4};
    for (int h = 0; h < 4; h++) assert_true(out[h] == want[h]);
    /* an exact AR(2): y_t = 1 + 0.5 y_{t-1} - 0.25 y_{t-2} (two channels, fitted on c = 1) */
    double y[2 * 40];
    y[1] = 0.3, y[3] = -1.2;
    for (int t = 0; t < 40; t++) y[2 * t] = t;
    for (int t = 2; t < 40; t++) y[2 * t + 1] = 1 + 0.5 * y[2 * t - 1] - 0.25 * y[2 * t - 3];
    /* not quite exact: a little noise so the problem is well posed */
    for (int t = 2; t < 40; t++) y[2 * t + 1] += 1e-3 * sin(7.0 * t);
    double coef[3];
    TU_OK(ts_ar_fit(y, 30, 2, 1, 2, coef));
    assert_true(fabs(coef[0] - 1) < 1e-2 && fabs(coef[1] - 0.5) < 1e-2 && fabs(coef[2] + 0.25) < 1e-2);
    double a[3] = {1, 0.5, -0.25};
    ts_ar_forecast(y, 2, 1, 30, 3, 2, a, out);
    double f0 = 1 + 0.5 * y[2 * 29 + 1] - 0.25 * y[2 * 28 + 1], f1 = 1 + 0.5 * f0 - 0.25 * y[2 * 29 + 1];
    assert_true(fabs(out[0] - f0) < 1e-12 && fabs(out[1] - f1) < 1e-12);
    assert_true(fabs(out[2] - (1 + 0.5 * f1 - 0.25 * f0)) < 1e-12);
    /* the period of a wave of period 7 */
    double w[3 * 200];
    for (int t = 0; t < 200; t++)
        for (int c = 0; c < 3; c++) w[3 * t + c] = sin(2 * M_PI * t / 7 + c) + 0.01 * c * t;
    assert_int_equal(ts_detect_period(w, 200, 3, 20), 7);
}

/* the ABI v2 path end to end: the task's io sizes the model, its batches train it with
 * ssm_forward_io, and the validation forecast error falls well below where it started */
static void test_trains_through_v2(void **st) {
    (void)st;
    const char *p = series_file("wave.csv", 600, 0, 0);
    fixture f;
    TU_OK(open_task(p, "  date_column: t\n  lookback: 24\n  horizon: 4\n  patch: 2\n", &f));
    ssm_config c = ssm_config_default(f.ops->vocab_size(f.task), 32, 2);
    TU_OK(ssm_config_set_pattern(&c, "M*", SSM_LAYER_MAMBA1));
    c.attention.n_heads = c.attention.n_kv_heads = 2, c.attention.head_dim = 16;
    int seq = 0;
    TU_OK(f.ops->model_io(f.task, &c.io, &seq));
    assert_int_equal(seq, 12);
    ssm_model *m;
    ssm_adamw *opt;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, 1));
    ssm_adamw_config ac = ssm_adamw_config_default();
    ac.lr = 3e-3, ac.warmup_steps = 10, ac.total_steps = 150, ac.weight_decay = 0;
    TU_OK(ssm_adamw_create(&ac, m, &opt));
    enum { B = 16 };
    static float feat[B * 24 * 2], vals[B * 12 * 8];
    ssm_batch b = {.B = B, .L = seq, .features = feat, .values = vals};
    ssm_rng rng;
    ssm_rng_seed(&rng, 2);
    double first = NAN, last = NAN;
    for (int step = 0; step <= 150; step++) {
        if (step % 75 == 0) { /* validation forecast MSE, the task's metric */
            ssm_rng vr;
            ssm_rng_seed(&vr, 9);
            TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_VALID, &vr, &b));
            ssm_io io = {.features = feat, .values = vals};
            float loss;
            double metrics[2];
            TU_OK(ssm_forward_io(m, &io, B, seq, &loss));
            TU_OK(f.ops->metrics(f.task, &b, ssm_model_outputs(m), metrics));
            assert_true(fabs(metrics[0] - loss) < 1e-4 * (1 + loss)); /* only the last position scored */
            printf("  step %d: validation forecast mse %.4f\n", step, metrics[0]);
            if (step == 0) first = metrics[0];
            last = metrics[0];
        }
        TU_OK(f.ops->next_batch(f.task, SSM_SPLIT_TRAIN, &rng, &b));
        ssm_io io = {.features = feat, .values = vals};
        float loss;
        TU_OK(ssm_forward_io(m, &io, B, seq, &loss));
        ssm_model_zero_grad(m);
        TU_OK(ssm_backward(m));
        TU_OK(ssm_adamw_step(opt, m, NULL));
    }
    assert_true(last < 0.25 * first);
    ssm_adamw_free(opt);
    ssm_model_free(m);
    close_task(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_task_errors),
        cmocka_unit_test(test_splits_never_leak),
        cmocka_unit_test(test_baselines_by_hand),
        cmocka_unit_test(test_trains_through_v2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
