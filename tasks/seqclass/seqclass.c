/* seqclass.c: the dna-classify task: one class per DNA sequence (promoter or not, say), read
 * from TSV or FASTA (labelled.c), through ABI v2's pooled classification head; validation is
 * one fold of a stratified k-fold split (or data.valid), with accuracy, MCC and AUROC
 * (metrics.c); ssm-score writes each sequence's class probabilities as TSV.
 *
 * Recipe keys
 * -----------
 *   task:
 *     name: dna-classify
 *     classes: [-, +]   # the class names, in id order; default: the training labels sorted
 *                       # (strcmp). Written into the run's recipe, as is `length`, so that
 *                       # ssm-score knows them without the data.
 *     length: 57        # positions per sequence (with the CLS token for pool cls); default:
 *                       # the longest training sequence; shorter ones are padded at the end
 *                       # with PAD (which mean pooling counts), longer ones are refused
 *     pool: mean        # mean | last | cls (a CLS token in front; the head reads it)
 *     folds: 5          # stratified folds of data.train (sc_folds), deterministic in fold_seed
 *     fold: 0           # the fold held out for validation, in [0, folds)
 *     fold_seed: 1
 *     rc_prob: 0.0      # probability that a training sequence is reverse-complemented
 *   data:
 *     train: labelled.tsv   # TSV (sequence<TAB>label) or FASTA (label=NAME or the last word
 *                           # of the header); one file
 *     valid: other.tsv      # optional: validate on this file instead of a fold
 *
 * Batches draw sequences uniformly (with replacement) from the run's rng: training ones from the
 * training folds, validation ones from the held-out fold. ssm-train asks for each row alone
 * (with a row's own rng), so its validation metrics are those of train.batch_size x
 * train.eval_batches draws from the fold; the exact figures of a fold come from ssm-score on
 * the fold's sequences (bench/kmer_baseline --write-folds writes them; scripts/promoters-cv). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dna/dna.h"
#include "seqclass.h"

typedef struct sc_task {
    char **classes;     /* (n_classes) */
    int n_classes;
    int length;         /* L, backbone positions */
    ssm_pool pool;
    double rc_prob;
    sc_set train, valid;
    int *train_idx, *valid_idx; /* records of `train` (or of `valid`) in each split */
    int n_train, n_valid;
    const sc_set *valid_set;
    double *probs;      /* scratch (B, C) */
    size_t probs_cap;
} sc_task;

static const char *const task_keys[] = {"name", "classes", "length", "pool", "folds", "fold",
                                        "fold_seed", "rc_prob", NULL};
static const char *const data_keys[] = {"train", "valid", NULL};
static const char *const pools[] = {"mean", "last", "cls", NULL};

static void sc_destroy(void *self) {
    sc_task *t = self;
    if (!t) return;
    for (int k = 0; k < t->n_classes; k++) free(t->classes[k]);
    free(t->classes);
    sc_set_free(&t->train);
    sc_set_free(&t->valid);
    free(t->train_idx), free(t->valid_idx), free(t->probs);
    free(t);
}

/* The one file of data.KEY, or NULL when absent. */
static ssm_status one_file(const ssm_recipe *r, ssm_node *data, const char *key, const char **path) {
    const char **v = NULL;
    int n = 0;
    *path = NULL;
    ssm_status s = ssm_node_strings(r, data, key, &v, &n);
    if (s || !v) return s;
    *path = n == 1 ? v[0] : NULL;
    free(v);
    if (n != 1) {
        char where[256];
        return ssm_set_error(SSM_ERR_ARG, "%s: data.%s takes one file of labelled sequences (TSV or "
                             "FASTA)", ssm_node_where(r, ssm_node_get(data, key), where, sizeof where), key);
    }
    return SSM_OK;
}

/* Record what the data decided (the classes, the length) in the run's recipe: ssm-train writes
 * it beside the model, and ssm-score reads it back without the data. The recipe is ssm-train's
 * own, which lets the task add keys to its section. */
static ssm_status record_in_recipe(const ssm_recipe *r, ssm_node *task, const sc_task *t,
                                   int set_classes, int set_length) {
    char buf[8192];
    ssm_status s = SSM_OK;
    if (set_classes) {
        int n = snprintf(buf, sizeof buf, "task.classes=[");
        for (int k = 0; k < t->n_classes && n < (int)sizeof buf; k++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"%s\"", k ? ", " : "", t->classes[k]);
        if (n + 2 >= (int)sizeof buf)
            return ssm_set_error(SSM_ERR_ARG, "too many class names to record (give task.classes)");
        strcat(buf, "]");
        if ((s = ssm_recipe_set((ssm_recipe *)r, buf))) return s;
        ssm_node_get(task, "classes"); /* read: not an unknown key */
    }
    if (set_length) {
        snprintf(buf, sizeof buf, "task.length=%d", t->length);
        if ((s = ssm_recipe_set((ssm_recipe *)r, buf))) return s;
        ssm_node_get(task, "length");
    }
    return s;
}

static ssm_status check_lengths(const sc_task *t, const sc_set *s) {
    int room = t->length - (t->pool == SSM_POOL_CLS);
    for (int i = 0; i < s->n; i++)
        if (s->lens[i] > room)
            return ssm_set_error(SSM_ERR_ARG, "%s:%d: a sequence of %d bases, longer than the model's %d "
                                 "(task.length%s)", s->path, s->lines[i], s->lens[i], room,
                                 t->pool == SSM_POOL_CLS ? " less the CLS token" : "");
    return SSM_OK;
}

static ssm_status sc_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    sc_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    const char **names = NULL, *train_path = NULL, *valid_path = NULL;
    long long length, folds, fold, fold_seed;
    int pool, n_names = 0;
    char where[256];
    ssm_status s;
    if ((s = ssm_node_strings(r, task, "classes", &names, &n_names)) ||
        (s = ssm_node_int(r, task, "length", 0, 0, 1 << 24, &length)) ||
        (s = ssm_node_choice(r, task, "pool", pools, 0, &pool)) ||
        (s = ssm_node_int(r, task, "folds", 5, 2, 1000, &folds)) ||
        (s = ssm_node_int(r, task, "fold", 0, 0, 999, &fold)) ||
        (s = ssm_node_int(r, task, "fold_seed", 1, 0, 1LL << 62, &fold_seed)) ||
        (s = ssm_node_float(r, task, "rc_prob", 0.0, 0.0, 1.0, &t->rc_prob)) ||
        (s = ssm_node_check_unknown(r, task, "task", task_keys)))
        goto fail;
    if (fold >= folds) {
        s = ssm_set_error(SSM_ERR_ARG, "%s: task.fold = %lld must be below task.folds = %lld (folds "
                          "count from 0)", ssm_node_where(r, ssm_node_get(task, "fold"), where, sizeof where),
                          fold, folds);
        goto fail;
    }
    t->pool = pool == 0 ? SSM_POOL_MEAN : pool == 1 ? SSM_POOL_LAST : SSM_POOL_CLS;
    t->length = (int)length;
    if (data && ((s = one_file(r, data, "train", &train_path)) || (s = one_file(r, data, "valid", &valid_path)) ||
                 (s = ssm_node_check_unknown(r, data, "data", data_keys))))
        goto fail;
    if (data && !train_path) {
        s = ssm_set_error(SSM_ERR_MISSING, "%s: the dna-classify task needs data.train: a TSV "
                          "(sequence<TAB>label) or FASTA file", ssm_node_where(r, data, where, sizeof where));
        goto fail;
    }
    if (train_path && (s = sc_set_read(train_path, 1, &t->train))) goto fail;
    if (valid_path && (s = sc_set_read(valid_path, 1, &t->valid))) goto fail;
    const char **from_data = NULL;
    if (!names && train_path) {
        if ((s = sc_set_label_names(&t->train, &from_data, &n_names))) goto fail;
        names = from_data;
    }
    if (!names || n_names < 2) {
        if (names == from_data) names = NULL; /* freed once, here */
        free(from_data);
        s = ssm_set_error(SSM_ERR_ARG, "%s: the dna-classify task needs two classes or more (task.classes, "
                          "or the labels of data.train)", ssm_node_where(r, task, where, sizeof where));
        goto fail;
    }
    t->classes = calloc((size_t)n_names, sizeof *t->classes);
    for (int k = 0; t->classes && k < n_names; k++) t->classes[k] = strdup(names[k]);
    t->n_classes = n_names;
    if (names != from_data) free(names); /* the recipe's list (its strings are the tree's) */
    free(from_data);
    names = NULL;
    for (int k = 0; k < t->n_classes; k++)
        if (!t->classes || !t->classes[k]) {
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            goto fail;
        }
    int given_classes = ssm_node_get(task, "classes") != NULL;
    if (train_path) {
        if ((s = sc_set_classes(&t->train, (const char *const *)t->classes, t->n_classes, 1)) ||
            (valid_path && (s = sc_set_classes(&t->valid, (const char *const *)t->classes, t->n_classes, 1))))
            goto fail;
        int longest = 0;
        for (int i = 0; i < t->train.n; i++) longest = t->train.lens[i] > longest ? t->train.lens[i] : longest;
        if (!t->length) t->length = longest + (t->pool == SSM_POOL_CLS);
        if ((s = check_lengths(t, &t->train)) || (valid_path && (s = check_lengths(t, &t->valid)))) goto fail;
        /* the splits: a fold of data.train, or data.valid whole */
        t->train_idx = malloc((size_t)t->train.n * sizeof(int));
        t->valid_idx = malloc((size_t)(valid_path ? t->valid.n : t->train.n) * sizeof(int));
        int *fold_of = malloc((size_t)t->train.n * sizeof(int));
        if (!t->train_idx || !t->valid_idx || !fold_of) {
            free(fold_of);
            s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        sc_folds(t->train.classes, t->train.n, t->n_classes, (int)folds, (uint64_t)fold_seed, fold_of);
        for (int i = 0; i < t->train.n; i++) {
            if (valid_path || fold_of[i] != fold) t->train_idx[t->n_train++] = i;
            else t->valid_idx[t->n_valid++] = i;
        }
        for (int i = 0; valid_path && i < t->valid.n; i++) t->valid_idx[t->n_valid++] = i;
        free(fold_of);
        t->valid_set = valid_path ? &t->valid : &t->train;
        if (!t->n_train || !t->n_valid) {
            s = ssm_set_error(SSM_ERR_ARG, "%s: %d sequences make no %s split with task.folds = %lld",
                              train_path, t->train.n, t->n_train ? "validation" : "training", folds);
            goto fail;
        }
        if ((s = record_in_recipe(r, task, t, !given_classes, !ssm_node_get(task, "length")))) goto fail;
    } else if (!t->length) {
        s = ssm_set_error(SSM_ERR_ARG, "%s: no task.length: a dna-classify model needs the length its "
                          "recipe recorded (train it with ssm-train)", ssm_node_where(r, task, where, sizeof where));
        goto fail;
    }
    *self = t;
    return SSM_OK;
fail:
    free(names);
    sc_destroy(t);
    return s;
}

static int sc_vocab(void *self) {
    (void)self;
    return DNA_VOCAB_SIZE;
}

static ssm_status sc_model_io(void *self, ssm_io_config *io, int *seq_len) {
    sc_task *t = self;
    *io = (ssm_io_config){.head = SSM_HEAD_CLASSIFY, .outputs = t->n_classes, .pool = t->pool,
                          .loss = SSM_LOSS_CE};
    *seq_len = t->length;
    return SSM_OK;
}

/* Record i of s as a row of L tokens: [CLS] bases PAD... */
static void encode_row(const sc_task *t, const sc_set *s, int i, int32_t *row) {
    int at = 0;
    if (t->pool == SSM_POOL_CLS) row[at++] = DNA_TOKEN_CLS;
    for (int k = 0; k < s->lens[i]; k++) row[at++] = dna_token((unsigned char)s->seqs[i][k]);
    while (at < t->length) row[at++] = DNA_TOKEN_PAD;
}

static ssm_status sc_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *b) {
    sc_task *t = self;
    if (!t->train_idx) return ssm_set_error(SSM_ERR_ARG, "dna-classify: opened without data (data.train)");
    if (b->L != t->length)
        return ssm_set_error(SSM_ERR_ARG, "dna-classify: a batch of length %d, the task's sequences are "
                             "%d positions (task.length)", b->L, t->length);
    int cls = t->pool == SSM_POOL_CLS;
    for (int r = 0; r < b->B; r++) {
        int32_t *row = b->tokens + (size_t)r * b->L;
        if (split == SSM_SPLIT_TRAIN) {
            int i = t->train_idx[ssm_rng_below(rng, (uint64_t)t->n_train)];
            encode_row(t, &t->train, i, row);
            if (t->rc_prob > 0 && ssm_rng_uniform(rng) < t->rc_prob) dna_revcomp_tokens(row + cls, (size_t)t->train.lens[i]);
            b->targets[r] = t->train.classes[i];
        } else {
            int i = t->valid_idx[ssm_rng_below(rng, (uint64_t)t->n_valid)];
            encode_row(t, t->valid_set, i, row);
            b->targets[r] = t->valid_set->classes[i];
        }
    }
    return SSM_OK;
}

/* Softmax of each row of logits (n, C) into t->probs. */
static ssm_status softmax_rows(sc_task *t, const float *logits, int n) {
    int C = t->n_classes;
    size_t need = (size_t)n * C;
    if (need > t->probs_cap) {
        double *p = realloc(t->probs, need * sizeof *p);
        if (!p) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        t->probs = p, t->probs_cap = need;
    }
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * C;
        double *p = t->probs + (size_t)i * C, top = z[0], sum = 0;
        for (int k = 1; k < C; k++) top = z[k] > top ? z[k] : top;
        for (int k = 0; k < C; k++) sum += p[k] = exp(z[k] - top);
        for (int k = 0; k < C; k++) p[k] /= sum;
    }
    return SSM_OK;
}

static const char *const sc_metric_names[] = {"accuracy", "mcc", "auroc", NULL};

static ssm_status sc_batch_metrics(void *self, const ssm_batch *b, const float *outputs, double *values) {
    sc_task *t = self;
    ssm_status s = softmax_rows(t, outputs, b->B);
    if (s) return s;
    sc_metrics m = sc_evaluate(t->probs, b->targets, b->B, t->n_classes);
    values[0] = m.accuracy, values[1] = m.mcc, values[2] = m.auroc;
    return SSM_OK;
}

/* ssm-score: `id  label  p_CLASS...  predicted` a sequence (label "." when the file has none),
 * and the metrics on stderr when every record has one of the classes. */
static ssm_status sc_score_file(void *self, ssm_model *model, const char *path, FILE *out) {
    sc_task *t = self;
    const ssm_io_config *io = &model->config.io;
    if (io->head != SSM_HEAD_CLASSIFY || io->outputs != t->n_classes)
        return ssm_set_error(SSM_ERR_ARG, "%s: the model is not a %d-class sequence classifier",
                             path, t->n_classes);
    sc_set s;
    ssm_status st = sc_set_read(path, 0, &s);
    if (st) return st;
    enum { CHUNK = 64 };
    int L = t->length, C = t->n_classes, all_known = 1;
    int32_t *tokens = malloc((size_t)CHUNK * L * sizeof *tokens);
    double *probs = malloc((size_t)s.n * C * sizeof *probs);
    if (!tokens || !probs) st = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) st = check_lengths(t, &s);
    if (!st) st = sc_set_classes(&s, (const char *const *)t->classes, C, 0);
    fprintf(out, "id\tlabel");
    for (int k = 0; !st && k < C; k++) fprintf(out, "\tp_%s", t->classes[k]);
    if (!st) fprintf(out, "\tpredicted\n");
    for (int i0 = 0; !st && i0 < s.n; i0 += CHUNK) {
        int n = s.n - i0 < CHUNK ? s.n - i0 : CHUNK;
        for (int r = 0; r < n; r++) encode_row(t, &s, i0 + r, tokens + (size_t)r * L);
        ssm_io in = {.tokens = tokens};
        if ((st = ssm_forward_io(model, &in, n, L, NULL)) || (st = softmax_rows(t, ssm_model_outputs(model), n)))
            break;
        memcpy(probs + (size_t)i0 * C, t->probs, (size_t)n * C * sizeof *probs);
        for (int r = 0; r < n; r++) {
            const double *p = t->probs + (size_t)r * C;
            int best = 0, i = i0 + r;
            fprintf(out, "%s\t%s", s.ids[i], s.labels[i] ? s.labels[i] : ".");
            for (int k = 0; k < C; k++) {
                fprintf(out, "\t%.6f", p[k]);
                best = p[k] > p[best] ? k : best;
            }
            fprintf(out, "\t%s\n", t->classes[best]);
            all_known &= s.classes[i] >= 0;
        }
    }
    if (!st && ferror(out)) st = ssm_set_error(SSM_ERR_IO, "cannot write the scores");
    if (!st && all_known) {
        sc_metrics m = sc_evaluate(probs, s.classes, s.n, C);
        fprintf(stderr, "%s: %d sequences: accuracy %.4f, MCC %.4f, AUROC %.4f\n", path, m.n, m.accuracy,
                m.mcc, m.auroc);
    }
    free(tokens), free(probs);
    sc_set_free(&s);
    return st;
}

const ssm_task_ops ssm_task_seqclass = {
    SSM_TASK_OPS_HEADER,
    .name = "dna-classify",
    .description = "DNA sequence classification from TSV or FASTA (one class a sequence)",
    .symbol = "sequence",
    .baseline_order = -1, /* its baseline is bench/kmer_baseline (k-mer logistic regression) */
    .create = sc_create,
    .destroy = sc_destroy,
    .vocab_size = sc_vocab,
    .next_batch = sc_next_batch,
    .model_io = sc_model_io,
    .metric_names = sc_metric_names,
    .metrics = sc_batch_metrics,
    .score_file = sc_score_file,
};
