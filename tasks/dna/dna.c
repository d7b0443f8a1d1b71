/* dna.c: the DNA task. Next-base prediction over genomes and reads in FASTA/FASTQ (plain, gzip
 * or bgzip; loaders/fasta), character tokens as HyenaDNA and Caduceus use them, random windows
 * weighted by record length, a fixed validation split, reverse-complement augmentation, bits per
 * base as the metric.
 *
 * Recipe keys
 * -----------
 *   task:
 *     name: dna
 *     mask_lowercase: false  # true: soft-masked (lowercase) bases are read but not scored,
 *                            # in training, validation, the baseline and ssm-score
 *     rc_prob: 0.0           # probability that a training window is reverse-complemented
 *     objective: next        # next: next-base prediction; mlm: masked-LM (BERT-style, mlm.c)
 *     mask_rate: 0.15        # mlm: the share of scored bases that are masked and predicted
 *   data:
 *     train: [files or globs]   # FASTA/FASTQ, plain, .gz or bgzip; paths relative to the
 *                               # current folder. Required to train.
 *     valid: [files or globs]   # optional: whole files for validation; then the training
 *                               # files are used whole and valid_fraction does not apply
 *     valid_fraction: 0.05      # the last fraction of each record held out for validation
 *                               # (the same bases on every run); in [0, 0.5]
 *     bed: regions.bed          # optional: only these intervals are used; the 4th column
 *                               # (train, valid or test) assigns an interval to a split, an
 *                               # interval without it is split like a whole record
 *
 * Tokens (dna.h): 0 CLS, 1 SEP, 2 BOS, 3 MASK, 4 PAD, 5 RESERVED, 6 UNK, 7 A, 8 C, 9 G, 10 T,
 * 11 N. IUPAC ambiguity codes become N, U becomes T, lowercase is read as uppercase. N is never
 * scored (target -1), nor is a masked lowercase base.
 *
 * Training batches: a window of L bases from one region of the split, read as the start of a
 * sequence like a scored record: tokens = BOS and the first L - 1 bases, targets = the L bases;
 * a region shorter than that fills the rest with PAD (not scored).
 * Masked LM (objective: mlm): tokens = the L bases themselves (no BOS, no shift), mask_rate of
 * the scored bases chosen and 80/10/10 replaced by MASK / a random base / kept (dna_mlm_mask),
 * targets = the original base at the chosen positions only; validation is bits per masked base.
 * Scoring: each record is BOS followed by its bases (next-base models only). */
#include "dna.h"

#include <stdlib.h>
#include <string.h>

/* ---- bases and tokens -------------------------------------------------------------------- */

int32_t dna_token(int c) {
    switch (c) {
    case 'A': case 'a': return DNA_TOKEN_A;
    case 'C': case 'c': return DNA_TOKEN_C;
    case 'G': case 'g': return DNA_TOKEN_G;
    case 'T': case 't': case 'U': case 'u': return DNA_TOKEN_T;
    default: return fasta_is_base(c) ? DNA_TOKEN_N : -1;
    }
}

int dna_scored(int c, int mask_lowercase) {
    int32_t t = dna_token(c);
    if (t < DNA_TOKEN_A || t > DNA_TOKEN_T) return 0;
    return !(mask_lowercase && c >= 'a' && c <= 'z');
}

static char complement(char c) {
    switch (c) {
    case 'A': return 'T'; case 'T': return 'A'; case 'U': return 'A';
    case 'C': return 'G'; case 'G': return 'C';
    case 'R': return 'Y'; case 'Y': return 'R'; case 'K': return 'M'; case 'M': return 'K';
    case 'B': return 'V'; case 'V': return 'B'; case 'D': return 'H'; case 'H': return 'D';
    case 'a': return 't'; case 't': return 'a'; case 'u': return 'a';
    case 'c': return 'g'; case 'g': return 'c';
    case 'r': return 'y'; case 'y': return 'r'; case 'k': return 'm'; case 'm': return 'k';
    case 'b': return 'v'; case 'v': return 'b'; case 'd': return 'h'; case 'h': return 'd';
    default: return c; /* S, W, N */
    }
}

void dna_revcomp(char *seq, size_t n) {
    /* i < j-- also visits the middle of an odd length once (i == j), complementing it */
    for (size_t i = 0, j = n; i < j--; i++) {
        char a = complement(seq[i]);
        seq[i] = complement(seq[j]);
        seq[j] = a;
    }
}

static int32_t complement_token(int32_t t) {
    return t >= DNA_TOKEN_A && t <= DNA_TOKEN_T ? DNA_TOKEN_A + DNA_TOKEN_T - t : t;
}

void dna_revcomp_tokens(int32_t *tokens, size_t n) {
    for (size_t i = 0, j = n; i < j--; i++) {
        int32_t a = complement_token(tokens[i]);
        tokens[i] = complement_token(tokens[j]);
        tokens[j] = a;
    }
}

/* ---- the task ---------------------------------------------------------------------------- */

typedef struct dna_task {
    int mask_lowercase;
    double rc_prob;
    double mask_rate;    /* > 0: masked-LM batches (objective mlm) */
    fasta_set *set;      /* NULL when created without data (scoring, generation) */
    char *window;        /* (window_cap) bases of the window being encoded */
    size_t window_cap;
    int32_t *symbols;    /* baseline symbols handed out last */
} dna_task;

static const char *const task_keys[] = {"name", "mask_lowercase", "rc_prob", "objective", "mask_rate",
                                        NULL};
static const char *const objectives[] = {"next", "mlm", NULL};
static const char *const data_keys[] = {"train", "valid", "valid_fraction", "bed", NULL};

static void dna_destroy(void *self) {
    dna_task *t = self;
    if (!t) return;
    fasta_set_free(t->set);
    free(t->window);
    free(t->symbols);
    free(t);
}

/* A list of files or globs from data.KEY, expanded; NULL when the key is absent. */
static ssm_status read_files(const ssm_recipe *r, ssm_node *data, const char *key, char ***paths,
                             int *n) {
    const char **patterns = NULL;
    int np = 0;
    *paths = NULL;
    *n = 0;
    ssm_status s = ssm_node_strings(r, data, key, &patterns, &np);
    if (s || !patterns) return s;
    if (np == 0) {
        free(patterns);
        char where[256];
        return ssm_set_error(SSM_ERR_ARG, "%s: data.%s lists no file",
                             ssm_node_where(r, ssm_node_get(data, key), where, sizeof where), key);
    }
    s = fasta_glob(patterns, np, paths, n);
    free(patterns);
    if (s) {
        char where[256], msg[1024];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        return ssm_set_error(s, "%s: %s", ssm_node_where(r, ssm_node_get(data, key), where, sizeof where),
                             msg);
    }
    return SSM_OK;
}

ssm_status dna_task_open(const char *const *train, int n_train, const char *const *valid,
                         int n_valid, const fasta_set_options *opt, int mask_lowercase,
                         double rc_prob, void **self) {
    *self = NULL;
    if (!(rc_prob >= 0 && rc_prob <= 1))
        return ssm_set_error(SSM_ERR_ARG, "rc_prob must be in [0, 1], got %g", rc_prob);
    dna_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    t->mask_lowercase = mask_lowercase != 0;
    t->rc_prob = rc_prob;
    if (n_train > 0) {
        ssm_status s = fasta_set_open(train, n_train, valid, n_valid, opt, &t->set);
        if (s) {
            dna_destroy(t);
            return s;
        }
    }
    *self = t;
    return SSM_OK;
}

static ssm_status dna_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    int mask_lowercase = 0, objective = 0;
    double rc_prob = 0, mask_rate = 0.15;
    ssm_status s = SSM_OK;
    char **train = NULL, **valid = NULL;
    int n_train = 0, n_valid = 0;
    fasta_set_options opt = fasta_set_options_default();
    if (task) {
        if ((s = ssm_node_bool(r, task, "mask_lowercase", 0, &mask_lowercase)) ||
            (s = ssm_node_float(r, task, "rc_prob", 0.0, 0.0, 1.0, &rc_prob)) ||
            (s = ssm_node_choice(r, task, "objective", objectives, 0, &objective)) ||
            (s = ssm_node_float(r, task, "mask_rate", 0.15, 1e-6, 1.0, &mask_rate)) ||
            (s = ssm_node_check_unknown(r, task, "task", task_keys)))
            return s;
        if (!objective && ssm_node_get(task, "mask_rate")) {
            char where[256];
            return ssm_set_error(SSM_ERR_ARG, "%s: task.mask_rate goes with task.objective: mlm",
                                 ssm_node_where(r, ssm_node_get(task, "mask_rate"), where, sizeof where));
        }
    }
    if (data) {
        if ((s = ssm_node_float(r, data, "valid_fraction", opt.valid_fraction, 0.0, 0.5,
                                &opt.valid_fraction)) ||
            (s = ssm_node_string(r, data, "bed", NULL, &opt.bed)) ||
            (s = read_files(r, data, "train", &train, &n_train)) ||
            (s = read_files(r, data, "valid", &valid, &n_valid)) ||
            (s = ssm_node_check_unknown(r, data, "data", data_keys)))
            goto done;
        if (!train) {
            char where[256];
            s = ssm_set_error(SSM_ERR_MISSING, "%s: the dna task needs data.train: a list of FASTA or "
                              "FASTQ files (or globs)", ssm_node_where(r, data, where, sizeof where));
            goto done;
        }
    }
    s = dna_task_open((const char *const *)train, n_train, (const char *const *)valid, n_valid, &opt,
                      mask_lowercase, rc_prob, self);
    if (!s && objective) dna_task_set_mlm(*self, mask_rate);
done:
    fasta_paths_free(train);
    fasta_paths_free(valid);
    return s;
}

void dna_task_set_mlm(void *self, double mask_rate) { ((dna_task *)self)->mask_rate = mask_rate; }

static int dna_vocab_size(void *self) {
    (void)self;
    return DNA_VOCAB_SIZE;
}

static ssm_status need_data(const dna_task *t) {
    if (t->set) return SSM_OK;
    return ssm_set_error(SSM_ERR_ARG, "the dna task was opened without data (data.train), so it cannot "
                         "serve batches");
}

static ssm_status grow_window(dna_task *t, size_t n) {
    if (n <= t->window_cap) return SSM_OK;
    char *w = realloc(t->window, n);
    if (!w) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a window of %zu bases", n);
    t->window = w;
    t->window_cap = n;
    return SSM_OK;
}

static ssm_status dna_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    dna_task *t = self;
    ssm_status s = need_data(t);
    if (s) return s;
    if (batch->B <= 0 || batch->L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "batch shape (%d, %d) must be positive", batch->B, batch->L);
    const int L = batch->L;
    /* every window is a sequence start, as ssm-score reads a record: tokens = BOS and the
     * first L - 1 bases, targets = the L bases; so the model learns to predict from BOS and
     * from short contexts, which scoring asks of it */
    const int64_t width = (int64_t)L;
    if ((s = grow_window(t, (size_t)width))) return s;
    for (int b = 0; b < batch->B; b++) {
        fasta_window w;
        if ((s = fasta_set_draw(t->set, split, width, rng, &w)) ||
            (s = fasta_set_fetch(t->set, w.record, w.start, w.length, t->window)))
            return s;
        if (split == SSM_SPLIT_TRAIN && t->rc_prob > 0 && ssm_rng_uniform(rng) < t->rc_prob)
            dna_revcomp(t->window, (size_t)w.length);
        int32_t *tok = batch->tokens + (size_t)b * L, *tgt = batch->targets + (size_t)b * L;
        if (t->mask_rate > 0) { /* masked LM: the bases at their own positions */
            for (int l = 0; l < L; l++) {
                int c = l < w.length ? (unsigned char)t->window[l] : 0;
                tok[l] = c ? dna_token(c) : DNA_TOKEN_PAD;
                tgt[l] = c && dna_scored(c, t->mask_lowercase) ? tok[l] : -1;
            }
            dna_mlm_mask(tok, tgt, L, t->mask_rate, rng);
            continue;
        }
        for (int l = 0; l < L; l++) {
            tok[l] = l == 0 ? DNA_TOKEN_BOS
                   : l - 1 < w.length ? dna_token((unsigned char)t->window[l - 1]) : DNA_TOKEN_PAD;
            int c = l < w.length ? (unsigned char)t->window[l] : 0;
            tgt[l] = c && dna_scored(c, t->mask_lowercase) ? dna_token(c) : -1;
        }
    }
    return SSM_OK;
}

/* Bases as 0..3 (A C G T) for the Markov baseline; -1 for N, masked lowercase and between
 * regions. */
static ssm_status dna_baseline_symbols(void *self, ssm_split split, size_t max, const int32_t **symbols,
                                       size_t *n, int *alphabet) {
    dna_task *t = self;
    ssm_status s = need_data(t);
    if (s) return s;
    if (t->mask_rate > 0)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the Markov baseline predicts the next base; a "
                             "masked-LM run (task.objective: mlm) has none to compare with");
    *symbols = NULL;
    *n = 0;
    *alphabet = 4;
    free(t->symbols);
    t->symbols = NULL;
    int n_regions = fasta_set_n_regions(t->set, split);
    uint64_t total = (uint64_t)fasta_set_split_bases(t->set, split) + (uint64_t)n_regions;
    size_t cap = total < max ? (size_t)total : max;
    t->symbols = malloc((cap ? cap : 1) * sizeof(int32_t));
    if (!t->symbols) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu baseline symbols", cap);
    const int64_t chunk = 1 << 20;
    if ((s = grow_window(t, (size_t)chunk))) return s;
    size_t k = 0;
    for (int i = 0; i < n_regions && k < cap; i++) {
        const fasta_region *r = fasta_set_region(t->set, split, i);
        for (int64_t pos = r->start; pos < r->end && k < cap; pos += chunk) {
            int64_t len = r->end - pos < chunk ? r->end - pos : chunk;
            if ((s = fasta_set_fetch(t->set, r->record, pos, len, t->window))) return s;
            for (int64_t j = 0; j < len && k < cap; j++) {
                int c = (unsigned char)t->window[j];
                t->symbols[k++] = dna_scored(c, t->mask_lowercase) ? dna_token(c) - DNA_TOKEN_A : -1;
            }
        }
        if (k < cap) t->symbols[k++] = -1;
    }
    *symbols = t->symbols;
    *n = k;
    return SSM_OK;
}

/* ---- scoring ----------------------------------------------------------------------------- */

typedef struct dna_reader {
    fasta_reader *in;
    int mask_lowercase;
    int32_t *tokens; /* (cap + 1) */
    uint8_t *scored; /* (cap) */
    size_t cap;
} dna_reader;

static void dna_close_records(void *reader) {
    dna_reader *d = reader;
    if (!d) return;
    fasta_reader_close(d->in);
    free(d->tokens);
    free(d->scored);
    free(d);
}

static ssm_status dna_open_records(void *self, const char *path, void **reader) {
    dna_task *t = self;
    *reader = NULL;
    if (t && t->mask_rate > 0)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm-score scores next-base predictions; this model "
                             "was trained as a masked LM (task.objective: mlm): fine-tune it, or embed "
                             "with ssm-embed");
    dna_reader *d = calloc(1, sizeof *d);
    if (!d) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    d->mask_lowercase = t ? t->mask_lowercase : 0;
    ssm_status s = fasta_reader_open(path, &d->in);
    if (s) {
        dna_close_records(d);
        return s;
    }
    *reader = d;
    return SSM_OK;
}

static ssm_status dna_next_record(void *reader, ssm_record *rec, int *done) {
    dna_reader *d = reader;
    memset(rec, 0, sizeof *rec);
    fasta_entry e;
    ssm_status s = fasta_reader_next(d->in, &e, done);
    if (s || *done) return s;
    if (e.length > d->cap) {
        size_t cap = e.length + e.length / 4 + 64;
        int32_t *tk = realloc(d->tokens, (cap + 1) * sizeof *tk);
        if (tk) d->tokens = tk;
        uint8_t *sc = realloc(d->scored, cap);
        if (sc) d->scored = sc;
        if (!tk || !sc)
            return ssm_set_error(SSM_ERR_NOMEM, "out of memory for record '%s' (%zu bases)", e.name, e.length);
        d->cap = cap;
    }
    int all = 1;
    d->tokens[0] = DNA_TOKEN_BOS;
    for (size_t i = 0; i < e.length; i++) {
        int c = (unsigned char)e.seq[i];
        d->tokens[i + 1] = dna_token(c);
        all &= d->scored[i] = (uint8_t)dna_scored(c, d->mask_lowercase);
    }
    rec->id = e.name;
    rec->length = e.length;
    rec->tokens = d->tokens;
    rec->scored = all ? NULL : d->scored;
    rec->seconds = 0;
    return SSM_OK;
}

/* ---- generation -------------------------------------------------------------------------- */

static int32_t dna_bos_token(void *self) {
    (void)self;
    return DNA_TOKEN_BOS;
}

/* A prompt: raw bases (whitespace and line ends ignored) or one FASTA record (its header is
 * skipped). The tokens are the bases only: the caller puts bos_token in front. */
static ssm_status dna_encode(void *self, const char *text, size_t len, int32_t **tokens, size_t *n) {
    (void)self;
    *tokens = NULL;
    *n = 0;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) i++;
    if (i < len && text[i] == '>') {
        while (i < len && text[i] != '\n') i++;
    }
    int32_t *out = malloc((len - i + 1) * sizeof *out);
    if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory encoding %zu bytes", len);
    size_t k = 0;
    for (; i < len; i++) {
        int c = (unsigned char)text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '>') {
            free(out);
            return ssm_set_error(SSM_ERR_FORMAT, "the DNA prompt holds more than one FASTA record "
                                 "(a second header at byte %zu); give one", i);
        }
        int32_t tk = dna_token(c);
        if (tk < 0) {
            free(out);
            if (c > 0x20 && c < 0x7f)
                return ssm_set_error(SSM_ERR_FORMAT, "the DNA prompt has '%c' at byte %zu: not a "
                                     "nucleotide code (A C G T N, or IUPAC)", c, i);
            return ssm_set_error(SSM_ERR_FORMAT, "the DNA prompt has byte 0x%02x at byte %zu: not a "
                                 "nucleotide code (A C G T N, or IUPAC)", c, i);
        }
        out[k++] = tk;
    }
    *tokens = out;
    *n = k;
    return SSM_OK;
}

/* Sequence lines of 60 bases (the header is the caller's); special tokens are skipped. */
static ssm_status dna_write_tokens(void *self, const int32_t *tokens, size_t n, FILE *out) {
    (void)self;
    static const char bases[] = "ACGTN";
    enum { columns = 60 };
    char line[columns + 1];
    int col = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t tk = tokens[i];
        if (tk < 0 || tk >= DNA_VOCAB_SIZE)
            return ssm_set_error(SSM_ERR_ARG, "token %d at %zu is not a DNA token (0..%d)", (int)tk, i,
                                 DNA_VOCAB_SIZE - 1);
        if (tk < DNA_TOKEN_A) continue;
        line[col++] = bases[tk - DNA_TOKEN_A];
        if (col == columns) {
            line[col++] = '\n';
            if (fwrite(line, 1, (size_t)col, out) != (size_t)col) goto io;
            col = 0;
        }
    }
    if (col) {
        line[col++] = '\n';
        if (fwrite(line, 1, (size_t)col, out) != (size_t)col) goto io;
    }
    if (ferror(out)) goto io;
    return SSM_OK;
io:
    return ssm_set_error(SSM_ERR_IO, "cannot write the FASTA output");
}

static void dna_reverse_complement(void *self, int32_t *symbols, size_t n) {
    (void)self;
    dna_revcomp_tokens(symbols, n);
}

/* generation writes bases: A C G T (N is never a training target, so it is not learnt) */
static int dna_can_generate(void *self, int32_t token) {
    (void)self;
    return token >= DNA_TOKEN_A && token <= DNA_TOKEN_T;
}

const ssm_task_ops ssm_task_dna = {
    SSM_TASK_OPS_HEADER,
    .name = "dna",
    .description = "DNA: next-base prediction over FASTA/FASTQ genomes and reads (A C G T N)",
    .symbol = "base",
    .baseline_order = 6, /* best Witten-Bell order on E. coli 536 validation: 1.947 bits/base */
    .create = dna_create,
    .destroy = dna_destroy,
    .vocab_size = dna_vocab_size,
    .next_batch = dna_next_batch,
    .baseline_symbols = dna_baseline_symbols,
    .open_records = dna_open_records,
    .next_record = dna_next_record,
    .close_records = dna_close_records,
    .bos_token = dna_bos_token,
    .encode = dna_encode,
    .write_tokens = dna_write_tokens,
    .can_generate = dna_can_generate,
    .reverse_complement = dna_reverse_complement,
};
