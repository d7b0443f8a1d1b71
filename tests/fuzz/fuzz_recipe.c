/* fuzz_recipe.c: fuzz target for the recipe parser (libssm/src/recipe.c).
 *
 * Each input is parsed; when it is a recipe, every getter is called on every key of every
 * mapping, unknown keys are checked, overrides are applied, and the recipe is emitted, parsed
 * again and compared: the tree must come back the same and emission must be a fixed point.
 * Anything else is a bug and aborts.
 *
 * With libFuzzer (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilibssm/include \
 *     tests/fuzz/fuzz_recipe.c libssm/src/recipe.c libssm/src/error.c -lyaml -o fuzz_recipe
 *   ./fuzz_recipe tests/fuzz/recipe_corpus
 * Built with -DSSM_FUZZ_STANDALONE (as the meson test 'fuzz_recipe' is), a main of its own runs
 * the files and directories named on the command line and, deterministically, mutations of
 * each (truncations, bit flips, inserted YAML punctuation, deleted and repeated spans, splices);
 * SSM_FUZZ_MUTATIONS sets how many per file (default 300). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/recipe.h"
#include "fuzz_driver.h"

static const char *const known[] = {"model", "task", "data", "train", "output", "lr", "steps",
                                    "name", "lr_schedule", "d_model", NULL};

/* Every getter on every key of every map below node. */
static void exercise(ssm_recipe *r, ssm_node *node, int depth) {
    char where[512];
    CHECK(ssm_node_where(r, node, where, sizeof where) == where, "where");
    CHECK(depth <= 64, "depth %d", depth);
    if (node->kind == SSM_NODE_SCALAR) {
        CHECK(node->value != NULL, "scalar without text");
        return;
    }
    for (int i = 0; i < node->n; i++) {
        ssm_node *child = node->items[i];
        CHECK(child != NULL, "NULL child");
        if (node->kind == SSM_NODE_MAP) {
            const char *key = node->keys[i];
            CHECK(key != NULL, "NULL key");
            CHECK(ssm_node_get(node, key) != NULL, "key '%s' not found", key);
            long long v;
            double d;
            int b, c;
            const char *s;
            const char **list = NULL;
            int n = 0;
            ssm_node *sec;
            ssm_node_int(r, node, key, 0, -1000, 1000, &v);
            ssm_node_int(r, node, key, 0, INT64_MIN, INT64_MAX, &v);
            ssm_node_float(r, node, key, 0, 0, 1, &d);
            ssm_node_float(r, node, key, 0, -1e308, 1e308, &d);
            ssm_node_bool(r, node, key, 0, &b);
            ssm_node_string(r, node, key, NULL, &s);
            ssm_node_choice(r, node, key, known, -1, &c);
            if (ssm_node_strings(r, node, key, &list, &n) == SSM_OK) {
                CHECK(n == 0 || list != NULL, "strings");
                for (int k = 0; k < n; k++) CHECK(list[k] != NULL, "strings item");
                CHECK(!list || list[n] == NULL, "strings end");
                free(list);
            } else {
                CHECK(list == NULL, "strings on error");
            }
            ssm_node_section(r, node, key, &sec);
        }
        exercise(r, child, depth + 1);
    }
    if (node->kind == SSM_NODE_MAP) {
        ssm_node_check_unknown(r, node, "section", known);
        ssm_node_check_unknown(r, node, NULL, NULL);
    }
}

static void same_tree(const ssm_node *a, const ssm_node *b) {
    CHECK(a->kind == b->kind, "kind %d vs %d", a->kind, b->kind);
    if (a->kind == SSM_NODE_SCALAR) {
        CHECK(!strcmp(a->value, b->value), "value '%s' vs '%s'", a->value, b->value);
        return;
    }
    CHECK(a->n == b->n, "size %d vs %d", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        if (a->kind == SSM_NODE_MAP) CHECK(!strcmp(a->keys[i], b->keys[i]), "key '%s' vs '%s'", a->keys[i], b->keys[i]);
        same_tree(a->items[i], b->items[i]);
    }
}

static char *emit(const ssm_recipe *r, size_t *len) {
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    CHECK(f != NULL, "open_memstream");
    ssm_status s = ssm_recipe_emit(r, f);
    fclose(f);
    CHECK(s == SSM_OK, "emit: %s", ssm_last_error());
    return text;
}

/* Emit, parse back, compare, emit again: the same text. */
static void round_trip(const ssm_recipe *r) {
    size_t len, len2;
    char *text = emit(r, &len);
    ssm_recipe *back = NULL;
    ssm_status s = ssm_recipe_parse("emitted", text, len, &back);
    CHECK(s == SSM_OK, "emitted recipe does not parse: %s\n%s", ssm_last_error(), text);
    same_tree(r->root, back->root);
    char *again = emit(back, &len2);
    CHECK(len == len2 && !memcmp(text, again, len), "emission is not a fixed point:\n%s\n---\n%s", text, again);
    free(text);
    free(again);
    ssm_recipe_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ssm_recipe *r = NULL;
    ssm_status s = ssm_recipe_parse("fuzz", (const char *)data, size, &r);
    if (s != SSM_OK) {
        CHECK(r == NULL, "recipe on failure");
        CHECK(ssm_last_error()[0] != 0, "failure without a message");
        return 0;
    }
    CHECK(r && r->root && r->root->kind == SSM_NODE_MAP, "root is not a map");
    exercise(r, r->root, 0);
    round_trip(r);
    /* overrides: fixed ones, and the input's first line as one */
    ssm_recipe_set(r, "train.lr=1e-3");
    ssm_recipe_set(r, "model.layers.0=mamba");
    ssm_recipe_set(r, "new.section.key=[a, {b: c}]");
    char line[256];
    size_t n = 0;
    while (n < size && n < sizeof line - 1 && data[n] && data[n] != '\n') line[n] = (char)data[n], n++;
    line[n] = 0;
    ssm_recipe_set(r, line);
    if (r->root->n) {
        snprintf(line, sizeof line, "%.100s.x=%.100s", r->root->keys[0], (const char *)r->root->keys[0]);
        ssm_recipe_set(r, line);
    }
    exercise(r, r->root, 0);
    round_trip(r);
    ssm_recipe_free(r);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE

static const char punct[] = ":-[]{},#&*!|>'\"%@`? \n\t\\.~0";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_recipe", .mutations = 300, .truncations = 64, .mutate = mutate};
#endif
