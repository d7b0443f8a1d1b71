/* test_recipe.c: YAML recipes: parsing, typed getters, errors and their positions, unknown keys
 * with suggestions, --set overrides, emission that reads back to the same tree. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ssm/recipe.h"
#include "testutil.h"

static ssm_recipe *parse(const char *text) {
    ssm_recipe *r = NULL;
    TU_OK(ssm_recipe_parse("t.yaml", text, strlen(text), &r));
    return r;
}

/* Parsing text fails with status and a message holding every one of the NULL-terminated parts. */
static void expect_parse_error(const char *text, size_t len, ssm_status status, ...) {
    ssm_recipe *r = (ssm_recipe *)1;
    ssm_status s = ssm_recipe_parse("t.yaml", text, len, &r);
    if (s != status) fail_msg("parse of '%s': status %d, expected %d (%s)", text, s, status, ssm_last_error());
    assert_null(r);
    va_list ap;
    va_start(ap, status);
    for (const char *part; (part = va_arg(ap, const char *));)
        if (!strstr(ssm_last_error(), part))
            fail_msg("message '%s' lacks '%s'", ssm_last_error(), part);
    va_end(ap);
}

static void expect_msg(ssm_status s, ssm_status status, const char *part1, const char *part2) {
    if (s != status) fail_msg("status %d, expected %d (%s)", s, status, ssm_last_error());
    if (part1 && !strstr(ssm_last_error(), part1))
        fail_msg("message '%s' lacks '%s'", ssm_last_error(), part1);
    if (part2 && !strstr(ssm_last_error(), part2))
        fail_msg("message '%s' lacks '%s'", ssm_last_error(), part2);
}

static void same_tree(const ssm_node *a, const ssm_node *b) {
    assert_int_equal(a->kind, b->kind);
    if (a->kind == SSM_NODE_SCALAR) {
        assert_string_equal(a->value, b->value);
        return;
    }
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        if (a->kind == SSM_NODE_MAP) assert_string_equal(a->keys[i], b->keys[i]);
        same_tree(a->items[i], b->items[i]);
    }
}

static char *emit(const ssm_recipe *r) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    TU_OK(ssm_recipe_emit(r, f));
    fclose(f);
    return text;
}

static const char full_recipe[] =
    "# a recipe with every kind of value\n"
    "model:\n"
    "  d_model: 64\n"
    "  n_layer: 2\n"
    "  layers: [mamba, mamba]\n"
    "  norm_eps: 1e-5\n"
    "task:\n"
    "  name: dna\n"
    "  mask_lowercase: yes\n"
    "  rc_prob: .5\n"
    "data:\n"
    "  train:\n"
    "    - data/a.fa\n"
    "    - \"data/b c.fa\"\n"
    "  valid: data/v.fa\n"
    "  note: 'null'\n"
    "  empty: ''\n"
    "  nothing:\n"
    "  tilde: ~\n"
    "  text: |\n"
    "    two lines\n"
    "    of text\n"
    "  folded: >\n"
    "    folded\n"
    "    text\n"
    "  colon: \"a: b # not a comment\"\n"
    "  unicode: \"Grüße, 日本\"\n"
    "  escapes: \"tab\\there\\u0001\"\n"
    "  spaces: '  padded  '\n"
    "  dash: '-'\n"
    "  docend: '...'\n"
    "  none: []\n"
    "  nomap: {}\n"
    "  \"odd key: x\": 1\n"
    "train:\n"
    "  lr: 1e-3\n"
    "  offset: -2\n"
    "  steps: 1e6\n"
    "  big: 9223372036854775807\n"
    "  flags: {a: on, b: Off, c: TRUE}\n"
    "  nested:\n"
    "    - {x: 1, y: [1, 2, {z: 3}]}\n"
    "    - - deep\n"
    "      - list\n"
    "output:\n"
    "  dir: runs/dna\n";

static void test_round_trip(void **state) {
    (void)state;
    ssm_recipe *r = parse(full_recipe);
    char *text = emit(r);
    ssm_recipe *back = NULL;
    TU_OK(ssm_recipe_parse("emitted", text, strlen(text), &back));
    same_tree(r->root, back->root);
    /* emission is a fixed point, nulls and strings that look like null included */
    char *again = emit(back);
    assert_string_equal(text, again);
    ssm_node *data = ssm_node_get(back->root, "data");
    const char *s = "x";
    TU_OK(ssm_node_string(back, data, "note", NULL, &s));
    assert_string_equal(s, "null");
    TU_OK(ssm_node_string(back, data, "nothing", "default", &s));
    assert_string_equal(s, "default");
    TU_OK(ssm_node_string(back, data, "tilde", NULL, &s));
    assert_null(s);
    TU_OK(ssm_node_string(back, data, "empty", "default", &s));
    assert_string_equal(s, "");
    TU_OK(ssm_node_string(back, data, "text", NULL, &s));
    assert_string_equal(s, "two lines\nof text\n");
    TU_OK(ssm_node_string(back, data, "folded", NULL, &s));
    assert_string_equal(s, "folded text\n");
    TU_OK(ssm_node_string(back, data, "escapes", NULL, &s));
    assert_string_equal(s, "tab\there\001");
    TU_OK(ssm_node_string(back, data, "unicode", NULL, &s));
    assert_string_equal(s, "Grüße, 日本");
    TU_OK(ssm_node_string(back, data, "odd key: x", NULL, &s));
    assert_string_equal(s, "1");
    /* plain values stay plain where that is safe */
    assert_non_null(strstr(text, "dir: runs/dna\n"));
    assert_non_null(strstr(text, "lr: 1e-3\n"));
    assert_non_null(strstr(text, "nothing: ~\n"));

    /* and through a file, via a temporary that is renamed */
    char dir[4096], path[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    snprintf(path, sizeof path, "%s/recipe.yaml", dir);
    TU_OK(ssm_recipe_write(r, path));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(access(tmp, F_OK), 0);
    ssm_recipe *loaded = NULL;
    TU_OK(ssm_recipe_load(path, &loaded));
    same_tree(r->root, loaded->root);
    assert_string_equal(loaded->path, path);
    unlink(path);
    rmdir(dir);
    free(text);
    free(again);
    ssm_recipe_free(r);
    ssm_recipe_free(back);
    ssm_recipe_free(loaded);
}

static void test_getters(void **state) {
    (void)state;
    ssm_recipe *r = parse(full_recipe);
    ssm_node *model, *train, *task, *data, *none;
    TU_OK(ssm_node_section(r, r->root, "model", &model));
    TU_OK(ssm_node_section(r, r->root, "train", &train));
    TU_OK(ssm_node_section(r, r->root, "task", &task));
    TU_OK(ssm_node_section(r, r->root, "data", &data));
    TU_OK(ssm_node_section(r, r->root, "absent", &none));
    assert_non_null(model);
    assert_null(none);
    assert_int_equal(model->line, 3);
    assert_int_equal(model->col, 3);
    long long v;
    TU_OK(ssm_node_int(r, model, "d_model", 1, 1, 1024, &v));
    assert_int_equal(v, 64);
    TU_OK(ssm_node_int(r, model, "absent", 7, 1, 3, &v)); /* the default is not range checked */
    assert_int_equal(v, 7);
    TU_OK(ssm_node_int(r, none, "anything", 5, 0, 10, &v)); /* an absent section */
    assert_int_equal(v, 5);
    TU_OK(ssm_node_int(r, train, "steps", 0, 0, LLONG_MAX, &v)); /* 1e6 is an integer */
    assert_int_equal(v, 1000000);
    TU_OK(ssm_node_int(r, train, "offset", 0, -2, -2, &v)); /* inclusive range */
    assert_int_equal(v, -2);
    TU_OK(ssm_node_int(r, train, "big", 0, LLONG_MIN, LLONG_MAX, &v));
    assert_true(v == LLONG_MAX);
    double d;
    TU_OK(ssm_node_float(r, train, "lr", 0, 0, 1, &d));
    assert_true(d == 1e-3);
    TU_OK(ssm_node_float(r, task, "rc_prob", 0, 0.5, 0.5, &d));
    assert_true(d == 0.5);
    TU_OK(ssm_node_float(r, train, "offset", 0, -10, 10, &d));
    assert_true(d == -2);
    TU_OK(ssm_node_float(r, model, "norm_eps", 0, 0, 1, &d));
    assert_true(d == 1e-5);
    TU_OK(ssm_node_float(r, model, "absent", 0.25, 0, 1, &d));
    assert_true(d == 0.25);
    int b = -1;
    TU_OK(ssm_node_bool(r, task, "mask_lowercase", 0, &b));
    assert_int_equal(b, 1);
    TU_OK(ssm_node_bool(r, task, "absent", 1, &b));
    assert_int_equal(b, 1);
    const char **files = NULL;
    int n = -1;
    TU_OK(ssm_node_strings(r, data, "train", &files, &n));
    assert_int_equal(n, 2);
    assert_string_equal(files[0], "data/a.fa");
    assert_string_equal(files[1], "data/b c.fa");
    assert_null(files[2]);
    free(files);
    TU_OK(ssm_node_strings(r, data, "valid", &files, &n));
    assert_int_equal(n, 1);
    assert_string_equal(files[0], "data/v.fa");
    free(files);
    TU_OK(ssm_node_strings(r, data, "none", &files, &n)); /* [] : an empty list, not absent */
    assert_non_null(files);
    assert_int_equal(n, 0);
    assert_null(files[0]);
    free(files);
    TU_OK(ssm_node_strings(r, data, "absent", &files, &n));
    assert_null(files);
    assert_int_equal(n, 0);
    static const char *const devices[] = {"auto", "cpu", "cuda", NULL};
    int c = -1;
    TU_OK(ssm_node_choice(r, task, "absent", devices, 1, &c));
    assert_int_equal(c, 1);
    const char *name;
    TU_OK(ssm_node_string(r, task, "name", NULL, &name));
    assert_string_equal(name, "dna");
    /* getters mark what they read */
    assert_true(ssm_node_get(task, "name")->used);
    assert_false(ssm_node_get(data, "colon") == NULL);
    ssm_recipe_free(r);
}

static void test_bools(void **state) {
    (void)state;
    ssm_recipe *r = parse("t: {a: true, b: True, c: yes, d: YES, e: on, f: On,\n"
                          "    g: false, h: FALSE, i: no, j: No, k: off, l: OFF, m: maybe, n: 1, o: [x]}\n");
    ssm_node *t = ssm_node_get(r->root, "t");
    const char *yes = "abcdef", *no = "ghijkl";
    int b;
    for (const char *k = yes; *k; k++) {
        char key[2] = {*k, 0};
        b = -1;
        TU_OK(ssm_node_bool(r, t, key, 0, &b));
        assert_int_equal(b, 1);
    }
    for (const char *k = no; *k; k++) {
        char key[2] = {*k, 0};
        b = -1;
        TU_OK(ssm_node_bool(r, t, key, 1, &b));
        assert_int_equal(b, 0);
    }
    expect_msg(ssm_node_bool(r, t, "m", 0, &b), SSM_ERR_ARG, "t.yaml:2:58:", "key 'm' must be true or false");
    expect_msg(ssm_node_bool(r, t, "m", 0, &b), SSM_ERR_ARG, "got 'maybe'", NULL);
    expect_msg(ssm_node_bool(r, t, "n", 0, &b), SSM_ERR_ARG, "got '1'", NULL);
    expect_msg(ssm_node_bool(r, t, "o", 0, &b), SSM_ERR_ARG, "got a list", NULL);
    ssm_recipe_free(r);
}

static void test_wrong_types_and_ranges(void **state) {
    (void)state;
    ssm_recipe *r = parse("train:\n"
                          "  steps: abc\n"
                          "  batch: 1.5\n"
                          "  seq: {a: 1}\n"
                          "  lr: 2\n"
                          "  eps: nan\n"
                          "  clip: inf\n"
                          "  wd: .inf\n"
                          "  big: 99999999999999999999\n"
                          "  hex: 0x10\n"
                          "  partial: 12abc\n"
                          "  spaced: ' 12'\n"
                          "  huge: 1e999\n"
                          "  name: [a, b]\n"
                          "  files: [a, {b: c}]\n"
                          "  holes:\n"
                          "    - a\n"
                          "    -\n"
                          "  device: gpu\n"
                          "  model: cpu\n");
    ssm_node *t = ssm_node_get(r->root, "train");
    long long v;
    double d;
    expect_msg(ssm_node_int(r, t, "steps", 0, 1, 100, &v), SSM_ERR_ARG,
               "t.yaml:2:10: key 'steps' must be an integer in [1, 100], got 'abc'", NULL);
    expect_msg(ssm_node_int(r, t, "batch", 0, 1, 100, &v), SSM_ERR_ARG, "t.yaml:3:10:", "got '1.5'");
    expect_msg(ssm_node_int(r, t, "seq", 0, 1, 100, &v), SSM_ERR_ARG, "t.yaml:4:3: key 'seq'",
               "got a mapping");
    expect_msg(ssm_node_int(r, t, "lr", 0, 0, 1, &v), SSM_ERR_ARG, "t.yaml:5:7:", "in [0, 1], got '2'");
    expect_msg(ssm_node_int(r, t, "big", 0, LLONG_MIN, LLONG_MAX, &v), SSM_ERR_ARG,
               "key 'big' must be an integer, got '99999999999999999999'", NULL);
    expect_msg(ssm_node_int(r, t, "lr", 0, 5, LLONG_MAX, &v), SSM_ERR_ARG, "an integer >= 5", NULL);
    expect_msg(ssm_node_int(r, t, "hex", 0, LLONG_MIN, LLONG_MAX, &v), SSM_ERR_ARG, "got '0x10'", NULL);
    expect_msg(ssm_node_int(r, t, "partial", 0, LLONG_MIN, LLONG_MAX, &v), SSM_ERR_ARG, "got '12abc'", NULL);
    expect_msg(ssm_node_int(r, t, "spaced", 0, LLONG_MIN, LLONG_MAX, &v), SSM_ERR_ARG, "got ' 12'", NULL);
    expect_msg(ssm_node_float(r, t, "lr", 0, 0, 1, &d), SSM_ERR_ARG,
               "t.yaml:5:7: key 'lr' must be a number in [0, 1], got '2'", NULL);
    expect_msg(ssm_node_float(r, t, "lr", 0, 0, 1.5, &d), SSM_ERR_ARG, "in [0, 1.5]", NULL);
    expect_msg(ssm_node_float(r, t, "steps", 0, 0, 1, &d), SSM_ERR_ARG, "got 'abc'", NULL);
    expect_msg(ssm_node_float(r, t, "eps", 0, -HUGE_VAL, HUGE_VAL, &d), SSM_ERR_ARG,
               "must be a finite number, got 'nan'", NULL);
    expect_msg(ssm_node_float(r, t, "clip", 0, -HUGE_VAL, HUGE_VAL, &d), SSM_ERR_ARG, "got 'inf'", NULL);
    expect_msg(ssm_node_float(r, t, "wd", 0, -HUGE_VAL, HUGE_VAL, &d), SSM_ERR_ARG, "got '.inf'", NULL);
    expect_msg(ssm_node_float(r, t, "huge", 0, -HUGE_VAL, HUGE_VAL, &d), SSM_ERR_ARG, "got '1e999'", NULL);
    expect_msg(ssm_node_float(r, t, "partial", 0, -HUGE_VAL, HUGE_VAL, &d), SSM_ERR_ARG, "got '12abc'", NULL);
    expect_msg(ssm_node_float(r, t, "seq", 0, 0, 1, &d), SSM_ERR_ARG, "got a mapping", NULL);
    const char *s;
    expect_msg(ssm_node_string(r, t, "name", NULL, &s), SSM_ERR_ARG,
               "t.yaml:14:3: key 'name' must be a string, got a list", NULL);
    const char **list;
    int n;
    expect_msg(ssm_node_strings(r, t, "files", &list, &n), SSM_ERR_ARG,
               "t.yaml:15:14: item 2 of 'files' must be a string, got a mapping", NULL);
    assert_null(list);
    expect_msg(ssm_node_strings(r, t, "holes", &list, &n), SSM_ERR_ARG, "item 2 of 'holes'", NULL);
    expect_msg(ssm_node_strings(r, t, "seq", &list, &n), SSM_ERR_ARG,
               "must be a string or a list of strings, got a mapping", NULL);
    static const char *const devices[] = {"auto", "cpu", "cuda", NULL};
    int c;
    expect_msg(ssm_node_choice(r, t, "device", devices, 0, &c), SSM_ERR_ARG,
               "t.yaml:19:11: key 'device' must be one of auto, cpu, cuda, got 'gpu'", "did you mean 'cpu'?");
    TU_OK(ssm_node_choice(r, t, "model", devices, 0, &c));
    assert_int_equal(c, 1);
    ssm_node *sec;
    expect_msg(ssm_node_section(r, r->root, "train", &sec), SSM_OK, NULL, NULL);
    expect_msg(ssm_node_section(r, t, "steps", &sec), SSM_ERR_ARG, "t.yaml:2:3: 'steps' must be a section",
               "got 'abc'");
    assert_null(sec);
    ssm_recipe_free(r);
}

static void test_unknown_keys(void **state) {
    (void)state;
    static const char *const train_keys[] = {"steps", "lr", "lr_schedule", "warmup_steps", NULL};
    static const char *const sections[] = {"model", "task", "data", "train", "output", NULL};
    ssm_recipe *r = parse("# the training section\n"
                          "train:\n"
                          "  steps: 10\n"
                          "    \n"
                          "  zzz_quux: 3\n"
                          "  lr_shedule: cosine\n"
                          "  warmupsteps: 5\n"
                          "trian:\n"
                          "  x: 1\n");
    ssm_node *t;
    TU_OK(ssm_node_section(r, r->root, "train", &t));
    long long v;
    TU_OK(ssm_node_int(r, t, "steps", 1, 1, 100, &v));
    /* zzz_quux comes first in the file and has no close key: the valid keys are listed */
    expect_msg(ssm_node_check_unknown(r, t, "train", train_keys), SSM_ERR_ARG,
               "t.yaml:5:3: unknown key 'zzz_quux' in train (valid keys: steps, lr, lr_schedule, "
               "warmup_steps)", NULL);
    ssm_node_get(t, "zzz_quux");
    expect_msg(ssm_node_check_unknown(r, t, "train", train_keys), SSM_ERR_ARG,
               "t.yaml:6:3: unknown key 'lr_shedule' in train (did you mean 'lr_schedule'?)", NULL);
    ssm_node_get(t, "lr_shedule");
    expect_msg(ssm_node_check_unknown(r, t, "train", train_keys), SSM_ERR_ARG,
               "t.yaml:7:3: unknown key 'warmupsteps' in train (did you mean 'warmup_steps'?)", NULL);
    ssm_node_get(t, "warmupsteps");
    TU_OK(ssm_node_check_unknown(r, t, "train", train_keys));
    /* a listed key that was not read is not unknown */
    ssm_recipe *r2 = parse("train: {lr: 1}\n");
    TU_OK(ssm_node_check_unknown(r2, ssm_node_get(r2->root, "train"), "train", train_keys));
    ssm_recipe_free(r2);
    /* sections at the top; a swap of two letters counts one edit */
    expect_msg(ssm_node_check_unknown(r, r->root, NULL, sections), SSM_ERR_ARG,
               "t.yaml:8:1: unknown key 'trian' in the recipe (did you mean 'train'?)", NULL);
    /* a section that takes no keys */
    ssm_node *tr = ssm_node_get(r->root, "trian");
    expect_msg(ssm_node_check_unknown(r, tr, "trian", NULL), SSM_ERR_ARG,
               "t.yaml:9:3: unknown key 'x' in trian (it takes no keys)", NULL);
    TU_OK(ssm_node_check_unknown(r, NULL, "nothing", sections));
    ssm_recipe_free(r);
}

static void test_syntax_errors(void **state) {
    (void)state;
    const char *t;
    t = "a: [1, 2";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:2:1: did not find expected ',' or ']'",
                       "(while parsing a flow sequence started at line 1, column 4)", NULL);
    t = "model:\n  d_model: 4\n   bad: indentation\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:3:", NULL);
    t = "a: b: c\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:5: mapping values are not allowed", NULL);
    t = "a: \"unterminated\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:", "quoted scalar", NULL);
    t = "- model\n- train\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT,
                       "t.yaml:1:1: a recipe must be a YAML mapping of sections (model, task, data, "
                       "train, output)", "not a list", NULL);
    t = "just text\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:1: a recipe must be a YAML mapping", NULL);
    t = "train:\n  lr: 1\n  steps: 2\n  lr: 3\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT,
                       "t.yaml:4:3: duplicate key 'lr' (first given at line 2, column 3)", NULL);
    t = "model: {a: 1, b: 2}\ntrain: {}\nmodel: {}\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:3:1: duplicate key 'model'", NULL);
    t = "base: &b {lr: 1}\ntrain: *b\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:7: anchors (&b) are not supported", NULL);
    t = "train: *b\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:8: aliases (*b) are not supported", NULL);
    t = "train:\n  lr: !!float 1\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:2:7: tags (!!float) are not "
                       "supported", NULL);
    t = "train: !custom {a: 1}\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:8: tags (!custom)", NULL);
    t = "[a]: 1\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:1: a list used as a key", NULL);
    t = "a: 1\n---\nb: 2\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:2:1: a second YAML document", NULL);
    t = "a: \"x\\0y\"\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "t.yaml:1:4: a NUL character", NULL);
    /* nesting is bounded */
    char deep[400];
    memset(deep, '[', 300);
    strcpy(deep + 300, "\n");
    char doc[420];
    snprintf(doc, sizeof doc, "a: %s", deep);
    expect_parse_error(doc, strlen(doc), SSM_ERR_FORMAT, "nested deeper than", NULL);
}

static void test_not_text(void **state) {
    (void)state;
    static const char nul[] = "model:\n  d_model: 4\x00\x01\x02";
    expect_parse_error(nul, sizeof nul - 1, SSM_ERR_FORMAT, "t.yaml:2:13: a NUL byte: this is not a text file",
                       NULL);
    static const char latin1[] = "model:\n  name: caf\xe9\n";
    expect_parse_error(latin1, sizeof latin1 - 1, SSM_ERR_FORMAT,
                       "t.yaml:2:12: invalid UTF-8 (byte 0xe9)", NULL);
    static const char utf16[] = "\xff\xfem\x00o\x00";
    expect_parse_error(utf16, sizeof utf16 - 1, SSM_ERR_FORMAT, "t.yaml:1:1: invalid UTF-8 (byte 0xff)",
                       NULL);
    static const char surrogate[] = "a: \xed\xa0\x80\n";
    expect_parse_error(surrogate, sizeof surrogate - 1, SSM_ERR_FORMAT, "invalid UTF-8", NULL);
    static const char control[] = "a: b\x07\n";
    expect_parse_error(control, sizeof control - 1, SSM_ERR_FORMAT, "t.yaml:1:", "control characters",
                       NULL);
    /* a UTF-8 byte order mark is fine */
    ssm_recipe *r = parse("\xef\xbb\xbf" "a: 1\n");
    ssm_recipe_free(r);
    /* a binary file on disk */
    char path[4200];
    snprintf(path, sizeof path, "%s/model.bin", tu_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 256; i++) fputc(i, f);
    fclose(f);
    ssm_recipe *out = (ssm_recipe *)1;
    expect_msg(ssm_recipe_load(path, &out), SSM_ERR_FORMAT, path, "not a text file");
    assert_null(out);
    unlink(path);
    *strrchr(path, '/') = 0;
    rmdir(path);
}

static void test_empty_and_missing(void **state) {
    (void)state;
    expect_parse_error("", 0, SSM_ERR_FORMAT, "t.yaml:1:1: the recipe is empty", "(model, task, data", NULL);
    expect_parse_error(NULL, 0, SSM_ERR_FORMAT, "the recipe is empty", NULL);
    const char *t = "# only a comment\n\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "the recipe is empty", NULL);
    t = "---\n";
    expect_parse_error(t, strlen(t), SSM_ERR_FORMAT, "the recipe is empty", NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/empty.yaml", tu_tmpdir());
    FILE *f = fopen(path, "w");
    fclose(f);
    ssm_recipe *r = (ssm_recipe *)1;
    expect_msg(ssm_recipe_load(path, &r), SSM_ERR_FORMAT, path, ":1:1: the recipe is empty");
    assert_null(r);
    unlink(path);
    *strrchr(path, '/') = 0;
    expect_msg(ssm_recipe_load(path, &r), SSM_ERR_IO, path, "cannot read: Is a directory");
    rmdir(path);
    expect_msg(ssm_recipe_load("/nonexistent/recipe.yaml", &r), SSM_ERR_IO,
               "/nonexistent/recipe.yaml: cannot open: No such file or directory", NULL);
    assert_null(r);
    assert_int_equal(ssm_recipe_parse("x", "a: 1", 4, NULL), SSM_ERR_ARG);
}

static void test_set(void **state) {
    (void)state;
    ssm_recipe *r = parse("model:\n  d_model: 64\ntrain:\n  lr: 0.1\n  steps: 5\nempty:\n"
                          "list: [a, b]\n");
    TU_OK(ssm_recipe_set(r, "train.lr=1e-3"));          /* an existing key */
    TU_OK(ssm_recipe_set(r, "train.batch_size=8"));     /* a new key of an existing section */
    TU_OK(ssm_recipe_set(r, "optim.adam.beta1=0.95"));  /* new sections on the way */
    TU_OK(ssm_recipe_set(r, "empty.x=on"));             /* below a null: it becomes a section */
    TU_OK(ssm_recipe_set(r, " output.dir = 'my runs'")); /* spaces around, a quoted value */
    TU_OK(ssm_recipe_set(r, "data.train=[a.fa, b.fa]")); /* a flow list */
    TU_OK(ssm_recipe_set(r, "list.1=c"));               /* an item of a list by index */
    TU_OK(ssm_recipe_set(r, "task.name=a: b: c"));      /* not YAML: the text as it is */
    TU_OK(ssm_recipe_set(r, "train.steps="));           /* nothing: back to the default */
    TU_OK(ssm_recipe_set(r, "model.d_model=x=y"));      /* the first '=' splits */
    ssm_node *train = ssm_node_get(r->root, "train"), *model = ssm_node_get(r->root, "model");
    double d;
    long long v;
    int b;
    const char *s;
    TU_OK(ssm_node_float(r, train, "lr", 0, 0, 1, &d));
    assert_true(d == 1e-3);
    assert_int_equal(ssm_node_get(train, "lr")->line, 0);
    TU_OK(ssm_node_int(r, train, "batch_size", 1, 1, 100, &v));
    assert_int_equal(v, 8);
    TU_OK(ssm_node_int(r, train, "steps", 77, 1, 100, &v));
    assert_int_equal(v, 77);
    ssm_node *adam = ssm_node_get(ssm_node_get(r->root, "optim"), "adam");
    assert_non_null(adam);
    assert_int_equal(adam->kind, SSM_NODE_MAP);
    TU_OK(ssm_node_float(r, adam, "beta1", 0, 0, 1, &d));
    assert_true(d == 0.95);
    TU_OK(ssm_node_bool(r, ssm_node_get(r->root, "empty"), "x", 0, &b));
    assert_int_equal(b, 1);
    TU_OK(ssm_node_string(r, ssm_node_get(r->root, "output"), "dir", NULL, &s));
    assert_string_equal(s, "my runs");
    TU_OK(ssm_node_string(r, ssm_node_get(r->root, "task"), "name", NULL, &s));
    assert_string_equal(s, "a: b: c");
    TU_OK(ssm_node_string(r, model, "d_model", NULL, &s));
    assert_string_equal(s, "x=y");
    const char **files;
    int n;
    TU_OK(ssm_node_strings(r, ssm_node_get(r->root, "data"), "train", &files, &n));
    assert_int_equal(n, 2);
    assert_string_equal(files[1], "b.fa");
    free(files);
    TU_OK(ssm_node_strings(r, r->root, "list", &files, &n));
    assert_string_equal(files[0], "a");
    assert_string_equal(files[1], "c");
    free(files);

    /* messages about overrides name the override, not a position */
    char where[256];
    assert_string_equal(ssm_node_where(r, ssm_node_get(train, "lr"), where, sizeof where), "--set train.lr");
    assert_string_equal(ssm_node_where(r, adam, where, sizeof where), "--set optim.adam");
    assert_string_equal(ssm_node_where(r, ssm_node_get(r->root, "model"), where, sizeof where), "t.yaml:2:3");
    assert_string_equal(ssm_node_where(r, NULL, where, sizeof where), "t.yaml");
    expect_msg(ssm_node_int(r, model, "d_model", 0, 1, 10, &v), SSM_ERR_ARG,
               "--set model.d_model: key 'd_model' must be an integer in [1, 10], got 'x=y'", NULL);
    TU_OK(ssm_recipe_set(r, "train.lr_shedule=cosine"));
    static const char *const train_keys[] = {"lr", "lr_schedule", "steps", "batch_size", NULL};
    expect_msg(ssm_node_check_unknown(r, train, "train", train_keys), SSM_ERR_ARG,
               "--set train.lr_shedule: unknown key 'lr_shedule' in train (did you mean 'lr_schedule'?)",
               NULL);

    /* the resolved recipe, overrides included, reads back the same */
    char *text = emit(r);
    ssm_recipe *back = NULL;
    TU_OK(ssm_recipe_parse("back", text, strlen(text), &back));
    same_tree(r->root, back->root);
    assert_non_null(strstr(text, "lr: 1e-3\n"));
    assert_non_null(strstr(text, "steps: ~\n"));
    free(text);
    ssm_recipe_free(back);
    ssm_recipe_free(r);
}

static void test_set_errors(void **state) {
    (void)state;
    ssm_recipe *r = parse("train:\n  lr: 0.1\nlist: [a, b]\n");
    expect_msg(ssm_recipe_set(r, "train.lr"), SSM_ERR_ARG, "--set 'train.lr': expected KEY=VALUE", NULL);
    expect_msg(ssm_recipe_set(r, "=5"), SSM_ERR_ARG, "the key is empty", NULL);
    expect_msg(ssm_recipe_set(r, "  =5"), SSM_ERR_ARG, "the key is empty", NULL);
    expect_msg(ssm_recipe_set(r, "train..lr=5"), SSM_ERR_ARG, "--set train..lr: an empty name", NULL);
    expect_msg(ssm_recipe_set(r, ".lr=5"), SSM_ERR_ARG, "an empty name", NULL);
    expect_msg(ssm_recipe_set(r, "train.=5"), SSM_ERR_ARG, "an empty name", NULL);
    expect_msg(ssm_recipe_set(r, "train.lr.x=5"), SSM_ERR_ARG,
               "--set train.lr.x: train.lr is a value ('0.1' at t.yaml:2:7), not a section", NULL);
    expect_msg(ssm_recipe_set(r, "list.2=c"), SSM_ERR_ARG, "--set list.2: list is a list of 2 items", NULL);
    expect_msg(ssm_recipe_set(r, "list.x=c"), SSM_ERR_ARG, "list is a list of 2 items (t.yaml:3:7)", NULL);
    expect_msg(ssm_recipe_set(r, "train.lr=\xff"), SSM_ERR_ARG, "not valid UTF-8", NULL);
    expect_msg(ssm_recipe_set(NULL, "a=1"), SSM_ERR_ARG, NULL, NULL);
    expect_msg(ssm_recipe_set(r, NULL), SSM_ERR_ARG, NULL, NULL);
    /* nothing changed */
    double d;
    TU_OK(ssm_node_float(r, ssm_node_get(r->root, "train"), "lr", 0, 0, 1, &d));
    assert_true(d == 0.1);
    assert_int_equal(r->root->n, 2);
    ssm_recipe_free(r);
}

static void test_write_errors(void **state) {
    (void)state;
    ssm_recipe *r = parse("a: 1\n");
    expect_msg(ssm_recipe_write(r, "/nonexistent/dir/recipe.yaml"), SSM_ERR_IO,
               "/nonexistent/dir/recipe.yaml.tmp: cannot create", NULL);
    FILE *full = fopen("/dev/full", "w");
    if (full) {
        setvbuf(full, NULL, _IONBF, 0);
        expect_msg(ssm_recipe_emit(r, full), SSM_ERR_IO, "cannot write the recipe", NULL);
        fclose(full);
    }
    ssm_recipe_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_wrong_types_and_ranges),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_not_text),
        cmocka_unit_test(test_empty_and_missing),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_set_errors),
        cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
