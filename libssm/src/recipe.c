/* recipe.c: YAML recipes (recipe.h) read with libyaml's event parser into a tree of nodes that
 * remember where they came from, typed getters, unknown-key detection with a suggestion,
 * command-line overrides and emission back to YAML.
 *
 * What a recipe may hold: one YAML document whose top is a mapping; mappings, sequences and
 * scalars below it, nested at most MAX_DEPTH deep; keys are scalars and appear once per
 * mapping. Anchors, aliases and explicit tags are refused (a recipe should say what it means
 * where it says it). The text must be UTF-8 without NUL bytes.
 *
 * Scalars keep their text; the getters decide what it means, so "5" and '5' are both the
 * integer 5 where an integer is asked for. A plain null (nothing, ~, null, Null, NULL) is kept
 * as "" with a private flag: the getters treat it like an absent key (the default applies),
 * and the emitter writes it as ~ while it quotes a string that only looks like null.
 *
 * Every node is allocated as an rnode, whose first member is the public ssm_node; the private
 * part holds the position of the key that names the node and, for nodes made by
 * ssm_recipe_set, the dotted key of the override, which messages show instead of a position. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "ssm/recipe.h"

#define MAX_DEPTH 64              /* nesting of mappings and sequences */
#define MAX_BYTES (16u << 20)     /* larger files are not recipes */
#define SHOW 60                   /* characters of a value quoted in a message */
#define SECTIONS "model, task, data, train, output"

typedef struct rnode {
    ssm_node pub;          /* first, so that an ssm_node * of ours is an rnode * */
    int key_line, key_col; /* where the key naming this node is (0: a sequence item, the root) */
    int null;              /* a plain null scalar; value is "" */
    int cap;               /* allocated entries of keys/items */
    char *set_key;         /* "train.lr" for nodes made by ssm_recipe_set, else NULL */
} rnode;

static rnode *priv(const ssm_node *n) { return (rnode *)n; }

static ssm_status nomem(void) { return ssm_set_error(SSM_ERR_NOMEM, "out of memory reading a recipe"); }

/* ---- nodes -------------------------------------------------------------------------------- */

static ssm_node *node_new(ssm_node_kind kind, int line, int col) {
    rnode *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->pub.kind = kind;
    r->pub.line = line;
    r->pub.col = col;
    return &r->pub;
}

static ssm_node *scalar_new(const char *text, size_t len, int null, int line, int col) {
    ssm_node *n = node_new(SSM_NODE_SCALAR, line, col);
    if (!n) return NULL;
    if (null) len = 0;
    n->value = malloc(len + 1);
    if (!n->value) {
        free(n);
        return NULL;
    }
    if (len) memcpy(n->value, text, len);
    n->value[len] = 0;
    priv(n)->null = null;
    return n;
}

static void node_free(ssm_node *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        if (n->keys) free(n->keys[i]);
        node_free(n->items[i]);
    }
    free(n->keys);
    free(n->items);
    free(n->value);
    free(priv(n)->set_key);
    free(n);
}

/* Append child (and, for a map, key, which the parent then owns). 0 on success. */
static int node_append(ssm_node *parent, char *key, ssm_node *child) {
    rnode *p = priv(parent);
    if (parent->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 4;
        ssm_node **items = realloc(parent->items, (size_t)cap * sizeof *items);
        if (!items) return -1;
        parent->items = items;
        if (parent->kind == SSM_NODE_MAP) {
            char **keys = realloc(parent->keys, (size_t)cap * sizeof *keys);
            if (!keys) return -1;
            parent->keys = keys;
        }
        p->cap = cap;
    }
    if (parent->kind == SSM_NODE_MAP) parent->keys[parent->n] = key;
    parent->items[parent->n++] = child;
    return 0;
}

static int find_key(const ssm_node *map, const char *key) {
    if (!map || map->kind != SSM_NODE_MAP || !key) return -1;
    for (int i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i], key)) return i;
    return -1;
}

static int node_depth(const ssm_node *n) {
    int d = 0;
    if (n->kind != SSM_NODE_SCALAR) {
        for (int i = 0; i < n->n; i++) {
            int c = node_depth(n->items[i]);
            if (c > d) d = c;
        }
        d++;
    }
    return d;
}

/* ---- text checks -------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp, min;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* Line and column (1-based, in characters) of byte offset off. */
static void text_position(const unsigned char *s, size_t len, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (s[i] == '\n') l++, c = 1;
        else if ((s[i] & 0xc0) != 0x80) c++;
    }
    *line = l;
    *col = c;
}

/* 0 when s is UTF-8 text without NUL bytes; else the offset of the first bad byte + 1. */
static size_t text_bad_byte(const unsigned char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        if (!s[i]) return i + 1;
        size_t k = utf8_len(s + i, len - i);
        if (!k) return i + 1;
        i += k;
    }
    return 0;
}

/* ---- parsing ------------------------------------------------------------------------------ */

typedef struct frame {
    ssm_node *node;
    char *key;             /* a map's key waiting for its value */
    int key_line, key_col;
} frame;

typedef struct builder {
    const char *name;
    int set_mode;          /* parsing the value of a --set: positions are 0 */
    frame stack[MAX_DEPTH];
    int depth;
    ssm_node *root;
    int docs;
} builder;

__attribute__((format(printf, 5, 6)))
static ssm_status fail_at(ssm_status st, const char *name, int line, int col, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0) return ssm_set_error(st, "%s:%d:%d: %s", name, line, col, msg);
    return ssm_set_error(st, "%s: %s", name, msg);
}

static int is_null_text(const char *s, size_t len) {
    return len == 0 || (len == 1 && s[0] == '~') ||
           (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

/* Place node in the tree under the frame on top (or as the root). Takes node. */
static ssm_status attach(builder *b, ssm_node *node) {
    if (b->depth == 0) {
        b->root = node; /* a second document is refused before its first node */
        return SSM_OK;
    }
    frame *f = &b->stack[b->depth - 1];
    if (f->node->kind == SSM_NODE_SEQ) {
        if (node_append(f->node, NULL, node)) goto oom;
        return SSM_OK;
    }
    if (!f->key) { /* the key: a scalar (checked by the caller) */
        f->key = node->value;
        f->key_line = node->line;
        f->key_col = node->col;
        node->value = NULL;
        node_free(node);
        return SSM_OK;
    }
    if (node_append(f->node, f->key, node)) goto oom;
    priv(node)->key_line = f->key_line;
    priv(node)->key_col = f->key_col;
    f->key = NULL;
    return SSM_OK;
oom:
    node_free(node);
    return nomem();
}

typedef struct keyref {
    const char *key;
    int index;
} keyref;

static int keyref_cmp(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Duplicate keys of a finished map: the earliest second occurrence is reported. */
static ssm_status check_duplicates(builder *b, ssm_node *map) {
    if (map->n < 2) return SSM_OK;
    keyref *refs = malloc((size_t)map->n * sizeof *refs);
    if (!refs) return nomem();
    for (int i = 0; i < map->n; i++) refs[i] = (keyref){map->keys[i], i};
    qsort(refs, (size_t)map->n, sizeof *refs, keyref_cmp);
    int first = -1, second = -1;
    for (int i = 1; i < map->n; i++)
        if (!strcmp(refs[i].key, refs[i - 1].key) && (i < 2 || strcmp(refs[i].key, refs[i - 2].key)) &&
            (second < 0 || refs[i].index < second))
            first = refs[i - 1].index, second = refs[i].index;
    free(refs);
    if (second < 0) return SSM_OK;
    const rnode *a = priv(map->items[first]), *d = priv(map->items[second]);
    return fail_at(SSM_ERR_FORMAT, b->name, d->key_line, d->key_col,
                   "duplicate key '%.*s' (first given at line %d, column %d)", SHOW, map->keys[second],
                   a->key_line, a->key_col);
}

static ssm_status yaml_failure(builder *b, const yaml_parser_t *p, const unsigned char *text,
                               size_t len) {
    if (p->error == YAML_MEMORY_ERROR) return nomem();
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        text_position(text, len, p->problem_offset, &line, &col);
    } else {
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
    }
    if (b->set_mode) line = col = 0;
    const char *problem = p->problem ? p->problem : "not valid YAML";
    if (p->context && !b->set_mode)
        return fail_at(SSM_ERR_FORMAT, b->name, line, col, "%s (%s started at line %d, column %d)",
                       problem, p->context, (int)p->context_mark.line + 1,
                       (int)p->context_mark.column + 1);
    if (p->context) return fail_at(SSM_ERR_FORMAT, b->name, line, col, "%s (%s)", problem, p->context);
    return fail_at(SSM_ERR_FORMAT, b->name, line, col, "%s", problem);
}

/* Refuse anchors and explicit tags on a node. */
static ssm_status plain_node(builder *b, const yaml_char_t *anchor, const yaml_char_t *tag,
                             int line, int col) {
    if (anchor)
        return fail_at(SSM_ERR_FORMAT, b->name, line, col, "anchors (&%.*s) are not supported in "
                       "recipes: write the value out where it is used", SHOW, (const char *)anchor);
    if (tag) {
        const char *t = (const char *)tag, *std = "tag:yaml.org,2002:";
        int shorten = !strncmp(t, std, strlen(std)); /* !!float resolves to tag:yaml.org,2002:float */
        return fail_at(SSM_ERR_FORMAT, b->name, line, col, "tags (%s%.*s) are not supported in "
                       "recipes: write the plain value", shorten ? "!!" : "", SHOW,
                       shorten ? t + strlen(std) : t);
    }
    return SSM_OK;
}

static ssm_status on_event(builder *b, const yaml_event_t *ev, int *done) {
    int line = b->set_mode ? 0 : (int)ev->start_mark.line + 1;
    int col = b->set_mode ? 0 : (int)ev->start_mark.column + 1;
    frame *top = b->depth ? &b->stack[b->depth - 1] : NULL;
    int want_key = top && top->node->kind == SSM_NODE_MAP && !top->key;
    ssm_status s;
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        *done = 1;
        return SSM_OK;
    case YAML_DOCUMENT_START_EVENT:
        if (b->docs++)
            return fail_at(SSM_ERR_FORMAT, b->name, line, col, "a second YAML document: a recipe is "
                           "one document (remove the '---' or split the file)");
        return SSM_OK;
    case YAML_ALIAS_EVENT:
        return fail_at(SSM_ERR_FORMAT, b->name, line, col, "aliases (*%.*s) are not supported in "
                       "recipes: write the value out where it is used", SHOW,
                       (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT: {
        const char *v = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        if ((s = plain_node(b, ev->data.scalar.anchor, ev->data.scalar.tag, line, col))) return s;
        if (memchr(v, 0, len))
            return fail_at(SSM_ERR_FORMAT, b->name, line, col, "a NUL character in a string is not "
                           "supported in recipes");
        int null = !want_key && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text(v, len);
        ssm_node *n = scalar_new(v, len, null, line, col);
        if (!n) return nomem();
        return attach(b, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        int map = ev->type == YAML_MAPPING_START_EVENT;
        if (map) s = plain_node(b, ev->data.mapping_start.anchor, ev->data.mapping_start.tag, line, col);
        else s = plain_node(b, ev->data.sequence_start.anchor, ev->data.sequence_start.tag, line, col);
        if (s) return s;
        if (want_key)
            return fail_at(SSM_ERR_FORMAT, b->name, line, col, "a %s used as a key: keys must be "
                           "names", map ? "mapping" : "list");
        if (b->depth == MAX_DEPTH)
            return fail_at(SSM_ERR_FORMAT, b->name, line, col, "nested deeper than %d levels", MAX_DEPTH);
        ssm_node *n = node_new(map ? SSM_NODE_MAP : SSM_NODE_SEQ, line, col);
        if (!n) return nomem();
        if ((s = attach(b, n))) return s;
        b->stack[b->depth++] = (frame){n, NULL, 0, 0};
        return SSM_OK;
    }
    case YAML_MAPPING_END_EVENT:
        if ((s = check_duplicates(b, top->node))) return s;
        /* fall through */
    case YAML_SEQUENCE_END_EVENT:
        b->depth--;
        return SSM_OK;
    default:
        return SSM_OK;
    }
}

/* Parse text into a tree (*out: NULL for an empty stream). */
static ssm_status build(const char *name, const unsigned char *text, size_t len, int set_mode,
                        ssm_node **out) {
    *out = NULL;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return nomem();
    yaml_parser_set_input_string(&p, text, len);
    yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
    builder *b = calloc(1, sizeof *b);
    if (!b) {
        yaml_parser_delete(&p);
        return nomem();
    }
    b->name = name;
    b->set_mode = set_mode;
    ssm_status s = SSM_OK;
    for (int done = 0; !done && !s;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            s = yaml_failure(b, &p, text, len);
            break;
        }
        s = on_event(b, &ev, &done);
        yaml_event_delete(&ev);
    }
    for (int i = 0; i < b->depth; i++) free(b->stack[i].key);
    if (s) node_free(b->root);
    else *out = b->root;
    free(b);
    yaml_parser_delete(&p);
    return s;
}

ssm_status ssm_recipe_parse(const char *name, const char *text, size_t len, ssm_recipe **out) {
    if (!out) return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_parse: out is NULL");
    *out = NULL;
    if (!name) name = "recipe";
    if (!text && len) return ssm_set_error(SSM_ERR_ARG, "%s: ssm_recipe_parse: text is NULL", name);
    const unsigned char *u = (const unsigned char *)(text ? text : "");
    if (len > MAX_BYTES)
        return ssm_set_error(SSM_ERR_FORMAT, "%s: %zu bytes is too large for a recipe (at most %u)",
                             name, len, MAX_BYTES);
    size_t bad = text_bad_byte(u, len);
    if (bad--) {
        int line, col;
        text_position(u, len, bad, &line, &col);
        if (!u[bad])
            return fail_at(SSM_ERR_FORMAT, name, line, col, "a NUL byte: this is not a text file "
                           "(a recipe is UTF-8 YAML text)");
        return fail_at(SSM_ERR_FORMAT, name, line, col, "invalid UTF-8 (byte 0x%02x): this is not a "
                       "UTF-8 text file (a recipe is UTF-8 YAML text)", u[bad]);
    }
    ssm_node *root;
    ssm_status s = build(name, u, len, 0, &root);
    if (s) return s;
    if (!root || (root->kind == SSM_NODE_SCALAR && priv(root)->null)) {
        node_free(root);
        return fail_at(SSM_ERR_FORMAT, name, 1, 1, "the recipe is empty: a recipe is a YAML mapping "
                       "of sections (" SECTIONS ")");
    }
    if (root->kind != SSM_NODE_MAP) {
        int line = root->line, col = root->col;
        const char *what = root->kind == SSM_NODE_SEQ ? "a list" : "a single value";
        node_free(root);
        return fail_at(SSM_ERR_FORMAT, name, line, col, "a recipe must be a YAML mapping of sections "
                       "(" SECTIONS "), not %s", what);
    }
    ssm_recipe *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(name))) {
        free(r);
        node_free(root);
        return nomem();
    }
    r->root = root;
    *out = r;
    return SSM_OK;
}

ssm_status ssm_recipe_load(const char *path, ssm_recipe **out) {
    if (!out) return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_load: out is NULL");
    *out = NULL;
    if (!path) return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_load: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return nomem();
    }
    for (;;) {
        if (len == cap) {
            if (cap > MAX_BYTES) {
                free(buf);
                fclose(f);
                return ssm_set_error(SSM_ERR_FORMAT, "%s: too large for a recipe (more than %u bytes)",
                                     path, MAX_BYTES);
            }
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return nomem();
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        return ssm_set_error(SSM_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    fclose(f);
    ssm_status s = ssm_recipe_parse(path, buf, len, out);
    free(buf);
    return s;
}

void ssm_recipe_free(ssm_recipe *r) {
    if (!r) return;
    node_free(r->root);
    free(r->path);
    free(r);
}

/* ---- where -------------------------------------------------------------------------------- */

static const char *rpath(const ssm_recipe *r) { return r && r->path ? r->path : "recipe"; }

const char *ssm_node_where(const ssm_recipe *r, const ssm_node *node, char *buf, size_t size) {
    if (!buf || !size) return "";
    if (!node) snprintf(buf, size, "%s", rpath(r));
    else if (node->line <= 0)
        snprintf(buf, size, "--set %s", priv(node)->set_key ? priv(node)->set_key : "(override)");
    else snprintf(buf, size, "%s:%d:%d", rpath(r), node->line, node->col);
    return buf;
}

/* Where the key naming node is (a --set override: "--set KEY"). */
static const char *key_where(const ssm_recipe *r, const ssm_node *node, char *buf, size_t size) {
    const rnode *p = priv(node);
    if (node->line <= 0 || p->key_line <= 0) return ssm_node_where(r, node, buf, size);
    snprintf(buf, size, "%s:%d:%d", rpath(r), p->key_line, p->key_col);
    return buf;
}

/* ---- getters ------------------------------------------------------------------------------ */

ssm_node *ssm_node_get(ssm_node *map, const char *key) {
    int i = find_key(map, key);
    if (i < 0) return NULL;
    map->items[i]->used = 1;
    return map->items[i];
}

/* The value of key, or NULL when absent or null (then the default applies). */
static ssm_node *value_of(ssm_node *map, const char *key) {
    ssm_node *n = ssm_node_get(map, key);
    return n && n->kind == SSM_NODE_SCALAR && priv(n)->null ? NULL : n;
}

/* "'text'" (shortened) or "a list" / "a mapping". */
static const char *describe(const ssm_node *n, char *buf, size_t size) {
    if (n->kind == SSM_NODE_MAP) return "a mapping";
    if (n->kind == SSM_NODE_SEQ) return "a list";
    size_t len = strlen(n->value);
    if (len > SHOW) snprintf(buf, size, "'%.*s...'", SHOW, n->value);
    else snprintf(buf, size, "'%s'", n->value);
    return buf;
}

static ssm_status value_error(const ssm_recipe *r, const ssm_node *n, const char *key,
                              const char *expected) {
    char where[512], got[SHOW + 8];
    if (n->kind == SSM_NODE_SCALAR) ssm_node_where(r, n, where, sizeof where);
    else key_where(r, n, where, sizeof where);
    return ssm_set_error(SSM_ERR_ARG, "%s: key '%.*s' must be %s, got %s", where, SHOW, key, expected,
                         describe(n, got, sizeof got));
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

/* A decimal number written out in full: 0 ok, -1 not a number, -2 not finite. */
static int parse_double(const char *s, double *v) {
    const char *p = s + (*s == '+' || *s == '-');
    if (!(isdigit((unsigned char)p[0]) || (p[0] == '.' && isdigit((unsigned char)p[1])))) return -1;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) return -1;
    pthread_once(&c_locale_once, make_c_locale);
    char *end;
    double d = c_locale ? strtod_l(s, &end, c_locale) : strtod(s, &end);
    if (end == s || *end) return -1;
    if (!isfinite(d)) return -2;
    *v = d;
    return 0;
}

/* An integer (also 1e6 or 2.0, integral values written as floats): 0 ok, -1 not, -2 too big. */
static int parse_integer(const char *s, long long *v) {
    const char *p = s + (*s == '+' || *s == '-');
    if (isdigit((unsigned char)*p)) {
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (*end == 0) {
            if (errno == ERANGE) return -2;
            *v = x;
            return 0;
        }
    }
    double d;
    int rc = parse_double(s, &d);
    if (rc) return rc;
    if (d != floor(d)) return -1;
    if (d < -0x1p63 || d >= 0x1p63) return -2;
    *v = (long long)d;
    return 0;
}

ssm_status ssm_node_int(const ssm_recipe *r, ssm_node *map, const char *key, long long def,
                        long long lo, long long hi, long long *out) {
    ssm_node *n = value_of(map, key);
    if (!n) {
        *out = def;
        return SSM_OK;
    }
    char expected[128];
    if (lo == LLONG_MIN && hi == LLONG_MAX) snprintf(expected, sizeof expected, "an integer");
    else if (hi == LLONG_MAX) snprintf(expected, sizeof expected, "an integer >= %lld", lo);
    else if (lo == LLONG_MIN) snprintf(expected, sizeof expected, "an integer <= %lld", hi);
    else snprintf(expected, sizeof expected, "an integer in [%lld, %lld]", lo, hi);
    long long v;
    if (n->kind != SSM_NODE_SCALAR || parse_integer(n->value, &v) || v < lo || v > hi)
        return value_error(r, n, key, expected);
    *out = v;
    return SSM_OK;
}

ssm_status ssm_node_float(const ssm_recipe *r, ssm_node *map, const char *key, double def,
                          double lo, double hi, double *out) {
    ssm_node *n = value_of(map, key);
    if (!n) {
        *out = def;
        return SSM_OK;
    }
    char expected[128];
    int has_lo = lo > -DBL_MAX, has_hi = hi < DBL_MAX;
    if (has_lo && has_hi) snprintf(expected, sizeof expected, "a number in [%g, %g]", lo, hi);
    else if (has_lo) snprintf(expected, sizeof expected, "a number >= %g", lo);
    else if (has_hi) snprintf(expected, sizeof expected, "a number <= %g", hi);
    else snprintf(expected, sizeof expected, "a finite number");
    double v;
    if (n->kind != SSM_NODE_SCALAR || parse_double(n->value, &v) || !(v >= lo && v <= hi))
        return value_error(r, n, key, expected);
    *out = v;
    return SSM_OK;
}

ssm_status ssm_node_bool(const ssm_recipe *r, ssm_node *map, const char *key, int def, int *out) {
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    ssm_node *n = value_of(map, key);
    if (!n) {
        *out = def;
        return SSM_OK;
    }
    if (n->kind == SSM_NODE_SCALAR)
        for (int i = 0; i < 3; i++) {
            if (!strcasecmp(n->value, yes[i])) return *out = 1, SSM_OK;
            if (!strcasecmp(n->value, no[i])) return *out = 0, SSM_OK;
        }
    return value_error(r, n, key, "true or false (also yes/no, on/off)");
}

ssm_status ssm_node_string(const ssm_recipe *r, ssm_node *map, const char *key, const char *def,
                           const char **out) {
    ssm_node *n = value_of(map, key);
    if (!n) {
        *out = def;
        return SSM_OK;
    }
    if (n->kind != SSM_NODE_SCALAR) return value_error(r, n, key, "a string");
    *out = n->value;
    return SSM_OK;
}

/* ---- edit distance and suggestions -------------------------------------------------------- */

/* Optimal string alignment distance (Damerau: a swap of neighbours counts 1), ignoring case;
 * stops early (returns limit + 1) once every alignment costs more than limit. */
static size_t edit_distance(const char *a, const char *b, size_t limit) {
    size_t n = strlen(a), m = strlen(b);
    if ((n > m ? n - m : m - n) > limit) return limit + 1;
    size_t *rows = malloc(3 * (m + 1) * sizeof *rows);
    if (!rows) return limit + 1;
    size_t *pp = rows, *prev = rows + m + 1, *cur = rows + 2 * (m + 1);
    for (size_t j = 0; j <= m; j++) prev[j] = j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = i;
        size_t best = cur[0];
        for (size_t j = 1; j <= m; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t c = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < c) c = prev[j] + 1;
            if (cur[j - 1] + 1 < c) c = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && pp[j - 2] + 1 < c)
                c = pp[j - 2] + 1;
            cur[j] = c;
            if (c < best) best = c;
        }
        size_t *t = pp;
        pp = prev, prev = cur, cur = t;
        if (best > limit) {
            free(rows);
            return limit + 1;
        }
    }
    size_t d = prev[m];
    free(rows);
    return d;
}

/* The closest of known to word (NULL when none is close: within max(2, len/3) edits and not
 * a complete rewrite). */
static const char *suggest(const char *word, const char *const *known) {
    if (!known) return NULL;
    size_t len = strlen(word), limit = len / 3 > 2 ? len / 3 : 2, best_d = limit + 1;
    const char *best = NULL;
    for (int i = 0; known[i]; i++) {
        size_t d = edit_distance(word, known[i], limit);
        size_t longest = len > strlen(known[i]) ? len : strlen(known[i]);
        if (d < best_d && d < longest) best_d = d, best = known[i];
    }
    return best;
}

static void join(char *buf, size_t size, const char *const *words) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; words && words[i]; i++) {
        int w = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", words[i]);
        if (w < 0 || (size_t)w >= size - used) {
            if (size > 4) strcpy(buf + size - 4, "...");
            return;
        }
        used += (size_t)w;
    }
}

ssm_status ssm_node_choice(const ssm_recipe *r, ssm_node *map, const char *key,
                           const char *const *choices, int def, int *out) {
    ssm_node *n = value_of(map, key);
    if (!n) {
        *out = def;
        return SSM_OK;
    }
    if (n->kind == SSM_NODE_SCALAR)
        for (int i = 0; choices && choices[i]; i++)
            if (!strcmp(n->value, choices[i])) return *out = i, SSM_OK;
    char list[512], expected[600];
    join(list, sizeof list, choices);
    snprintf(expected, sizeof expected, "one of %s", list);
    const char *near = n->kind == SSM_NODE_SCALAR ? suggest(n->value, choices) : NULL;
    if (near) {
        char where[512], got[SHOW + 8];
        return ssm_set_error(SSM_ERR_ARG, "%s: key '%.*s' must be %s, got %s (did you mean '%s'?)",
                             ssm_node_where(r, n, where, sizeof where), SHOW, key, expected,
                             describe(n, got, sizeof got), near);
    }
    return value_error(r, n, key, expected);
}

ssm_status ssm_node_strings(const ssm_recipe *r, ssm_node *map, const char *key,
                            const char ***out, int *n) {
    *out = NULL;
    *n = 0;
    ssm_node *v = value_of(map, key);
    if (!v) return SSM_OK;
    if (v->kind == SSM_NODE_MAP) return value_error(r, v, key, "a string or a list of strings");
    int count = v->kind == SSM_NODE_SCALAR ? 1 : v->n;
    for (int i = 0; v->kind == SSM_NODE_SEQ && i < v->n; i++) {
        ssm_node *it = v->items[i];
        if (it->kind != SSM_NODE_SCALAR || priv(it)->null) {
            char where[512], got[SHOW + 8];
            ssm_node_where(r, it, where, sizeof where);
            return ssm_set_error(SSM_ERR_ARG, "%s: item %d of '%.*s' must be a string, got %s", where,
                                 i + 1, SHOW, key,
                                 it->kind == SSM_NODE_SCALAR ? "nothing" : describe(it, got, sizeof got));
        }
    }
    const char **list = malloc(((size_t)count + 1) * sizeof *list);
    if (!list) return nomem();
    if (v->kind == SSM_NODE_SCALAR) list[0] = v->value;
    else
        for (int i = 0; i < v->n; i++) list[i] = v->items[i]->value;
    list[count] = NULL;
    *out = list;
    *n = count;
    return SSM_OK;
}

ssm_status ssm_node_section(const ssm_recipe *r, ssm_node *map, const char *key, ssm_node **out) {
    *out = NULL;
    ssm_node *n = value_of(map, key);
    if (!n) return SSM_OK;
    if (n->kind != SSM_NODE_MAP) {
        char where[512], got[SHOW + 8];
        key_where(r, n, where, sizeof where);
        return ssm_set_error(SSM_ERR_ARG, "%s: '%.*s' must be a section (a mapping of keys, "
                             "e.g. %.*s: {key: value}), got %s", where, SHOW, key, SHOW, key,
                             describe(n, got, sizeof got));
    }
    *out = n;
    return SSM_OK;
}

ssm_status ssm_node_check_unknown(const ssm_recipe *r, ssm_node *map, const char *section,
                                  const char *const *known) {
    if (!map || map->kind != SSM_NODE_MAP) return SSM_OK;
    int first = -1;
    for (int i = 0; i < map->n; i++) {
        const ssm_node *c = map->items[i];
        if (c->used) continue;
        int listed = 0;
        for (int k = 0; known && known[k] && !listed; k++) listed = !strcmp(known[k], map->keys[i]);
        if (listed) continue;
        if (first < 0) {
            first = i;
            continue;
        }
        /* the earliest in the file; overrides (line 0) after the file's keys */
        const rnode *a = priv(c), *b = priv(map->items[first]);
        long long pa = c->line > 0 && a->key_line > 0 ? (long long)a->key_line << 32 | a->key_col
                                                      : LLONG_MAX;
        long long pb = map->items[first]->line > 0 && b->key_line > 0
                           ? (long long)b->key_line << 32 | b->key_col
                           : LLONG_MAX;
        if (pa < pb) first = i;
    }
    if (first < 0) return SSM_OK;
    char where[512], list[512];
    const char *key = map->keys[first];
    key_where(r, map->items[first], where, sizeof where);
    const char *in = section && *section ? section : "the recipe";
    const char *near = suggest(key, known);
    if (near)
        return ssm_set_error(SSM_ERR_ARG, "%s: unknown key '%.*s' in %s (did you mean '%s'?)", where,
                             SHOW, key, in, near);
    if (!known || !known[0])
        return ssm_set_error(SSM_ERR_ARG, "%s: unknown key '%.*s' in %s (it takes no keys)", where,
                             SHOW, key, in);
    join(list, sizeof list, known);
    return ssm_set_error(SSM_ERR_ARG, "%s: unknown key '%.*s' in %s (valid keys: %s)", where, SHOW,
                         key, in, list);
}

/* ---- overrides ---------------------------------------------------------------------------- */

/* Mark node and everything below it as made by "--set prefix". 0 on success. */
static int mark_override(ssm_node *node, const char *prefix) {
    rnode *p = priv(node);
    node->line = node->col = 0;
    p->key_line = p->key_col = 0;
    free(p->set_key);
    if (!(p->set_key = strdup(prefix))) return -1;
    for (int i = 0; i < node->n; i++) {
        size_t len = strlen(prefix) + (node->keys ? strlen(node->keys[i]) : 12) + 4;
        char *sub = malloc(len);
        if (!sub) return -1;
        if (node->kind == SSM_NODE_MAP) snprintf(sub, len, "%s.%s", prefix, node->keys[i]);
        else snprintf(sub, len, "%s.%d", prefix, i);
        int rc = mark_override(node->items[i], sub);
        free(sub);
        if (rc) return -1;
    }
    return 0;
}

/* The value of an override: YAML when it parses (1e-3, "a b", [x.fa, y.fa], {k: v}), else the
 * text as it is. */
static ssm_status override_value(const char *text, const char *key, ssm_node **out) {
    ssm_node *n = NULL;
    ssm_status s = build("--set", (const unsigned char *)text, strlen(text), 1, &n);
    if (s == SSM_ERR_NOMEM) return s;
    if (s) n = scalar_new(text, strlen(text), 0, 0, 0);
    else if (!n) n = scalar_new("", 0, 1, 0, 0);
    if (!n) return nomem();
    if (mark_override(n, key)) {
        node_free(n);
        return nomem();
    }
    *out = n;
    return SSM_OK;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

ssm_status ssm_recipe_set(ssm_recipe *r, const char *assignment) {
    if (!r || !r->root || !assignment)
        return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_set: no recipe or no assignment");
    if (text_bad_byte((const unsigned char *)assignment, strlen(assignment)))
        return ssm_set_error(SSM_ERR_ARG, "--set: the assignment is not valid UTF-8 text");
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return ssm_set_error(SSM_ERR_ARG, "--set '%.*s': expected KEY=VALUE (e.g. --set train.lr=1e-3)",
                             SHOW, assignment);
    size_t klen = (size_t)(eq - assignment);
    char *buf = malloc(2 * klen + 2);
    if (!buf) return nomem();
    memcpy(buf, assignment, klen);
    buf[klen] = 0;
    char *key = trim(buf), *full = buf + klen + 1; /* key is cut at dots as we walk; full is not */
    strcpy(full, key);
    ssm_status s = SSM_OK;
    char where[512];
    if (!*key) {
        s = ssm_set_error(SSM_ERR_ARG, "--set '%.*s': the key is empty (expected KEY=VALUE, e.g. "
                          "--set train.lr=1e-3)", SHOW, assignment);
        goto done;
    }
    if (key[0] == '.' || key[strlen(key) - 1] == '.' || strstr(key, "..")) {
        s = ssm_set_error(SSM_ERR_ARG, "--set %s: an empty name in the dotted key (write "
                          "section.key=value)", full);
        goto done;
    }
    /* walk down, making sections as needed; when at name, key reads as the path up to it */
    ssm_node *node = r->root;
    char *name = key;
    for (int depth = 1;; depth++) {
        char *dot = strchr(name, '.');
        if (dot) *dot = 0;
        int idx;
        if (node->kind == SSM_NODE_SEQ) {
            idx = all_digits(name) && strlen(name) < 10 ? atoi(name) : -1;
            if (idx < 0 || idx >= node->n) {
                name[-1] = 0; /* key: the list's path */
                s = ssm_set_error(SSM_ERR_ARG, "--set %s: %s is a list of %d items (%s); name an item "
                                  "by its index from 0", full, key, node->n,
                                  ssm_node_where(r, node, where, sizeof where));
                goto done;
            }
        } else {
            idx = find_key(node, name);
        }
        if (!dot) { /* the last name: the value goes here */
            ssm_node *value = NULL;
            if ((s = override_value(eq + 1, full, &value))) goto done;
            if (depth + node_depth(value) > MAX_DEPTH) {
                node_free(value);
                s = ssm_set_error(SSM_ERR_ARG, "--set %s: nested deeper than %d levels", full, MAX_DEPTH);
                goto done;
            }
            if (idx >= 0) {
                node_free(node->items[idx]);
                node->items[idx] = value;
            } else {
                char *k = strdup(name);
                if (!k || node_append(node, k, value)) {
                    free(k);
                    node_free(value);
                    s = nomem();
                }
            }
            goto done;
        }
        ssm_node *child = idx >= 0 ? node->items[idx] : NULL;
        if (child && child->kind == SSM_NODE_SCALAR && !priv(child)->null) {
            char got[SHOW + 8];
            s = ssm_set_error(SSM_ERR_ARG, "--set %s: %s is a value (%s at %s), not a section: no key "
                              "can be set below it", full, key, describe(child, got, sizeof got),
                              ssm_node_where(r, child, where, sizeof where));
            goto done;
        }
        if (depth >= MAX_DEPTH) {
            s = ssm_set_error(SSM_ERR_ARG, "--set %s: nested deeper than %d levels", full, MAX_DEPTH);
            goto done;
        }
        if (!child || child->kind == SSM_NODE_SCALAR) { /* absent or null: a new section */
            ssm_node *map = node_new(SSM_NODE_MAP, 0, 0);
            if (!map || mark_override(map, key)) {
                node_free(map);
                s = nomem();
                goto done;
            }
            if (child) {
                node_free(child);
                node->items[idx] = map;
            } else {
                char *k = strdup(name);
                if (!k || node_append(node, k, map)) {
                    free(k);
                    node_free(map);
                    s = nomem();
                    goto done;
                }
            }
            child = map;
        }
        *dot = '.';
        node = child;
        name = dot + 1;
    }
done:
    free(buf);
    return s;
}

/* ---- emission ----------------------------------------------------------------------------- */

/* Text that reads back as the same string when written plain, in any position. */
static int plain_safe(const char *s) {
    size_t n = strlen(s);
    if (!n || is_null_text(s, n)) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_./+-", s[i])) return 0;
    if (s[0] == '-' && (n == 1 || !strncmp(s, "---", 3))) return 0;
    if (!strncmp(s, "...", 3)) return 0;
    return 1;
}

typedef struct emitter {
    yaml_emitter_t e;
    yaml_event_t ev;
} emitter;

static int emit_scalar(emitter *m, const char *text, int null) {
    const char *v = null ? "~" : text;
    yaml_scalar_style_t style = null || plain_safe(text) ? YAML_PLAIN_SCALAR_STYLE
                                                         : YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    return yaml_scalar_event_initialize(&m->ev, NULL, NULL, (yaml_char_t *)v, (int)strlen(v), 1, 1,
                                        style) &&
           yaml_emitter_emit(&m->e, &m->ev);
}

static int emit_node(emitter *m, const ssm_node *n) {
    if (n->kind == SSM_NODE_SCALAR) return emit_scalar(m, n->value, priv(n)->null);
    int map = n->kind == SSM_NODE_MAP;
    if (map ? !yaml_mapping_start_event_initialize(&m->ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)
            : !yaml_sequence_start_event_initialize(&m->ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE))
        return 0;
    if (!yaml_emitter_emit(&m->e, &m->ev)) return 0;
    for (int i = 0; i < n->n; i++) {
        if (map && !emit_scalar(m, n->keys[i], 0)) return 0;
        if (!emit_node(m, n->items[i])) return 0;
    }
    if (map ? !yaml_mapping_end_event_initialize(&m->ev) : !yaml_sequence_end_event_initialize(&m->ev))
        return 0;
    return yaml_emitter_emit(&m->e, &m->ev);
}

ssm_status ssm_recipe_emit(const ssm_recipe *r, FILE *f) {
    if (!r || !r->root || !f) return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_emit: no recipe or no stream");
    emitter *m = calloc(1, sizeof *m);
    if (!m) return nomem();
    if (!yaml_emitter_initialize(&m->e)) {
        free(m);
        return nomem();
    }
    yaml_emitter_set_output_file(&m->e, f);
    yaml_emitter_set_unicode(&m->e, 1);
    yaml_emitter_set_width(&m->e, -1);
    yaml_emitter_set_indent(&m->e, 2);
    errno = 0;
    int ok = yaml_stream_start_event_initialize(&m->ev, YAML_UTF8_ENCODING) &&
             yaml_emitter_emit(&m->e, &m->ev) &&
             yaml_document_start_event_initialize(&m->ev, NULL, NULL, NULL, 1) &&
             yaml_emitter_emit(&m->e, &m->ev) && emit_node(m, r->root) &&
             yaml_document_end_event_initialize(&m->ev, 1) && yaml_emitter_emit(&m->e, &m->ev) &&
             yaml_stream_end_event_initialize(&m->ev) && yaml_emitter_emit(&m->e, &m->ev) &&
             yaml_emitter_flush(&m->e);
    int e = errno;
    ssm_status s = SSM_OK;
    if (!ok) {
        if (m->e.error == YAML_WRITER_ERROR || ferror(f))
            s = ssm_set_error(SSM_ERR_IO, "%s: cannot write the recipe: %s", rpath(r),
                              e ? strerror(e) : "write error");
        else if (m->e.error == YAML_MEMORY_ERROR || m->e.error == YAML_NO_ERROR)
            s = nomem(); /* event initialisation fails only for memory (text is checked UTF-8) */
        else
            s = ssm_set_error(SSM_ERR_FORMAT, "%s: cannot write the recipe as YAML: %s", rpath(r),
                              m->e.problem ? m->e.problem : "emitter error");
    }
    yaml_emitter_delete(&m->e);
    free(m);
    return s;
}

ssm_status ssm_recipe_write(const ssm_recipe *r, const char *path) {
    if (!r || !path) return ssm_set_error(SSM_ERR_ARG, "ssm_recipe_write: no recipe or no path");
    size_t len = strlen(path) + 5;
    char *tmp = malloc(len);
    if (!tmp) return nomem();
    snprintf(tmp, len, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ssm_status s = ssm_set_error(SSM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    ssm_status s = ssm_recipe_emit(r, f);
    int e = 0;
    if (!s && (fflush(f) || fsync(fileno(f)))) e = errno;
    if (fclose(f) && !s && !e) e = errno;
    if (!s && e) s = ssm_set_error(SSM_ERR_IO, "%s: cannot write: %s", tmp, strerror(e));
    if (!s && rename(tmp, path))
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp, strerror(errno));
    if (s) unlink(tmp);
    free(tmp);
    return s;
}
