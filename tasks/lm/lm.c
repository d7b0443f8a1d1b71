/* lm.c: the text task: a byte-level language model of UTF-8 text.
 *
 * Recipe (docs/recipes.md has the whole schema):
 *
 *   task:
 *     name: lm
 *     valid_fraction: 0.05   # [0, 0.5]; held out for validation when data.valid is not given;
 *                            # 0 = no validation split
 *     valid_split: tail      # tail: the last valid_fraction of each file (cut at a line start);
 *                            # documents: whole documents, chosen by a hash of their content,
 *                            # holding valid_fraction of the bytes
 *     documents: file        # file: each file is one document; blank_lines: a run of blank
 *                            # lines ends a document (one blank line between articles/books)
 *   data:
 *     train: [data/text/web.txt.gz]  # files or glob(3) patterns, plain or gzip, relative to
 *                                    # the current directory; a string or a list
 *     valid: [held-out.txt]          # optional: validation files (valid_fraction is not used)
 *
 * Tokens: the bytes 0..255 as they are, BOS = 256 before each document, EOS = 257 after it,
 * PAD = 258 after a document shorter than a window (vocabulary 259, padded by the model to 264).
 * A training window is L + 1 consecutive tokens of one document (BOS included when the window
 * starts at the document's start): tokens are the first L, targets the last L, -1 on padding.
 * Windows never cross documents. The metric is bits per byte (the EOS targets count as bytes).
 *
 * Scoring reads each file as one record: BOS, then its bytes. Generation starts from BOS; a
 * prompt is taken as its bytes; generated tokens are written as bytes, special tokens dropped.
 *
 * Files are held in memory (see loaders/text/text.h for the checks: binary and empty files are
 * refused, a pattern matching nothing is an error). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/task.h"
#include "../../loaders/text/text.h"

enum { LM_BOS = 256, LM_EOS = 257, LM_PAD = 258, LM_VOCAB = 259 };

typedef struct lm_task {
    text_set *set;       /* NULL without a data section (scoring, generation) */
    int32_t *symbols[2]; /* baseline symbols per split, made on demand */
    size_t n_symbols[2], max_symbols[2];
} lm_task;

static const char *const task_keys[] = {"name", "valid_fraction", "valid_split", "documents", NULL};
static const char *const data_keys[] = {"train", "valid", NULL};

/* Prefix the last error with "WHERE: ". */
static ssm_status at(const ssm_recipe *r, const ssm_node *node, ssm_status s) {
    char where[512], msg[2048];
    snprintf(msg, sizeof msg, "%s", ssm_last_error());
    return ssm_set_error(s, "%s: %s", ssm_node_where(r, node, where, sizeof where), msg);
}

static void lm_destroy(void *self) {
    lm_task *t = self;
    if (!t) return;
    text_set_free(t->set);
    free(t->symbols[0]);
    free(t->symbols[1]);
    free(t);
}

static ssm_status lm_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    static const char *const splits[] = {"tail", "documents", NULL};
    static const char *const docs[] = {"file", "blank_lines", NULL};
    text_set_options opt = text_set_options_default();
    int split = 0, doc = 0;
    ssm_status s;
    if ((s = ssm_node_float(r, task, "valid_fraction", opt.valid_fraction, 0.0, 0.5, &opt.valid_fraction)) ||
        (s = ssm_node_choice(r, task, "valid_split", splits, 0, &split)) ||
        (s = ssm_node_choice(r, task, "documents", docs, 0, &doc)) ||
        (s = ssm_node_check_unknown(r, task, "task", task_keys)))
        return s;
    opt.valid_split = split ? TEXT_VALID_DOCUMENTS : TEXT_VALID_TAIL;
    opt.documents = doc ? TEXT_DOCS_BLANK_LINES : TEXT_DOCS_FILE;
    lm_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    if (data) {
        const char **train = NULL, **valid = NULL;
        int n_train = 0, n_valid = 0;
        if ((s = ssm_node_strings(r, data, "train", &train, &n_train)) ||
            (s = ssm_node_strings(r, data, "valid", &valid, &n_valid)) ||
            (s = ssm_node_check_unknown(r, data, "data", data_keys))) {
            free(train);
            free(valid);
            lm_destroy(t);
            return s;
        }
        if (!train || n_train == 0) {
            char where[512];
            free(train);
            free(valid);
            lm_destroy(t);
            return ssm_set_error(SSM_ERR_MISSING, "%s: the data section needs train: a file, a glob or a "
                                 "list of them (train: [data/text/web.txt.gz])",
                                 ssm_node_where(r, data, where, sizeof where));
        }
        /* patterns first, so that one matching nothing is reported at its own list */
        char **paths;
        int np;
        if ((s = text_glob(train, n_train, &paths, &np)))
            s = at(r, ssm_node_get(data, "train"), s);
        else
            text_paths_free(paths);
        if (!s && n_valid) {
            if ((s = text_glob(valid, n_valid, &paths, &np)))
                s = at(r, ssm_node_get(data, "valid"), s);
            else
                text_paths_free(paths);
        }
        if (!s && (s = text_set_open(train, n_train, valid, n_valid, &opt, &t->set))) s = at(r, data, s);
        free(train);
        free(valid);
        if (s) {
            lm_destroy(t);
            return s;
        }
    }
    *self = t;
    return SSM_OK;
}

static int lm_vocab_size(void *self) { return LM_VOCAB; }

/* Token p of a segment: [BOS if it starts a document] bytes [EOS if it ends one]. */
static int32_t token_at(const text_segment *g, size_t p) {
    if (g->starts) {
        if (p == 0) return LM_BOS;
        p--;
    }
    if (p < g->length) return g->bytes[p];
    return LM_EOS; /* p == length, only when g->ends */
}

static ssm_status no_data(void) {
    return ssm_set_error(SSM_ERR_MISSING, "the lm task has no training data: the recipe needs "
                         "data: {train: [FILES OR GLOBS]}");
}

static ssm_status lm_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    lm_task *t = self;
    if (!t->set) return no_data();
    if (batch->B < 1 || batch->L < 1) return ssm_set_error(SSM_ERR_ARG, "lm: batch %d x %d", batch->B, batch->L);
    size_t L = (size_t)batch->L;
    for (int b = 0; b < batch->B; b++) {
        int seg;
        size_t start;
        ssm_status s = text_set_draw(t->set, split, L + 1, rng, &seg, &start);
        if (s) return s;
        const text_segment *g = text_set_segment(t->set, split, seg);
        size_t n = g->length + (size_t)g->starts + (size_t)g->ends;
        int32_t *tok = batch->tokens + (size_t)b * L, *tgt = batch->targets + (size_t)b * L;
        for (size_t l = 0; l < L; l++) {
            size_t p = start + l;
            tok[l] = p < n ? token_at(g, p) : LM_PAD;
            tgt[l] = p + 1 < n ? token_at(g, p + 1) : -1;
        }
    }
    return SSM_OK;
}

static ssm_status lm_baseline_symbols(void *self, ssm_split split, size_t max, const int32_t **symbols,
                                      size_t *n, int *alphabet) {
    lm_task *t = self;
    if (!t->set) return no_data();
    *alphabet = 256;
    if (!t->symbols[split] || t->max_symbols[split] != max) {
        free(t->symbols[split]);
        t->symbols[split] = NULL;
        size_t total = text_set_split_bytes(t->set, split) + (size_t)text_set_n_segments(t->set, split);
        size_t cap = total < max ? total : max, k = 0;
        int32_t *out = malloc((cap ? cap : 1) * sizeof *out);
        if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the baseline");
        for (int i = 0; i < text_set_n_segments(t->set, split) && k < cap; i++) {
            const text_segment *g = text_set_segment(t->set, split, i);
            if (i > 0) out[k++] = -1; /* a new document: the context restarts */
            for (size_t j = 0; j < g->length && k < cap; j++) out[k++] = g->bytes[j];
        }
        t->symbols[split] = out;
        t->n_symbols[split] = k;
        t->max_symbols[split] = max;
    }
    *symbols = t->symbols[split];
    *n = t->n_symbols[split];
    return SSM_OK;
}

/* ---- scoring: each file is one record ---------------------------------------------------- */

typedef struct lm_reader {
    char *path;
    int32_t *tokens;
    size_t length;
    int served;
} lm_reader;

static void lm_close_records(void *reader) {
    lm_reader *rd = reader;
    if (!rd) return;
    free(rd->path);
    free(rd->tokens);
    free(rd);
}

static ssm_status lm_open_records(void *self, const char *path, void **reader) {
    *reader = NULL;
    uint8_t *data;
    size_t len;
    ssm_status s = text_read_file(path, &data, &len);
    if (s) return s;
    lm_reader *rd = calloc(1, sizeof *rd);
    if (rd) {
        rd->path = strdup(strcmp(path, "-") ? path : "stdin");
        rd->tokens = malloc((len + 1) * sizeof *rd->tokens);
    }
    if (!rd || !rd->path || !rd->tokens) {
        free(data);
        lm_close_records(rd);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, len);
    }
    rd->tokens[0] = LM_BOS;
    for (size_t i = 0; i < len; i++) rd->tokens[i + 1] = data[i];
    rd->length = len;
    free(data);
    *reader = rd;
    return SSM_OK;
}

static ssm_status lm_next_record(void *reader, ssm_record *record, int *done) {
    lm_reader *rd = reader;
    memset(record, 0, sizeof *record);
    if (rd->served) {
        *done = 1;
        return SSM_OK;
    }
    rd->served = 1;
    *done = 0;
    record->id = rd->path;
    record->length = rd->length;
    record->tokens = rd->tokens;
    record->scored = NULL;
    return SSM_OK;
}

/* ---- generation -------------------------------------------------------------------------- */

static int32_t lm_bos_token(void *self) { return LM_BOS; }

static ssm_status lm_encode(void *self, const char *text, size_t len, int32_t **tokens, size_t *n) {
    int32_t *out = malloc((len ? len : 1) * sizeof *out);
    if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a prompt of %zu bytes", len);
    for (size_t i = 0; i < len; i++) out[i] = (uint8_t)text[i];
    *tokens = out;
    *n = len;
    return SSM_OK;
}

static ssm_status lm_write_tokens(void *self, const int32_t *tokens, size_t n, FILE *out) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= 0 && tokens[i] < 256) putc(tokens[i], out);
    if (ferror(out)) return ssm_set_error(SSM_ERR_IO, "cannot write the generated text");
    return SSM_OK;
}

/* generation writes bytes (and may end a document) */
static int lm_can_generate(void *self, int32_t token) {
    (void)self;
    return (token >= 0 && token < 256) || token == LM_EOS;
}

const ssm_task_ops ssm_task_lm = {
    SSM_TASK_OPS_HEADER,
    .name = "lm",
    .description = "byte-level language model of UTF-8 text (plain or gzip files)",
    .symbol = "byte",
    .baseline_order = 4,
    .create = lm_create,
    .destroy = lm_destroy,
    .vocab_size = lm_vocab_size,
    .next_batch = lm_next_batch,
    .baseline_symbols = lm_baseline_symbols,
    .open_records = lm_open_records,
    .next_record = lm_next_record,
    .close_records = lm_close_records,
    .bos_token = lm_bos_token,
    .encode = lm_encode,
    .write_tokens = lm_write_tokens,
    .can_generate = lm_can_generate,
};
