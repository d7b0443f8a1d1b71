/* ssm-score: score the records of one or more files with a trained model.
 *
 *   ssm-score RUN_DIR_OR_CHECKPOINT FILE|-... [--files-from LIST] [options] > scores.tsv
 *
 * The files are read one after the other as one stream of records (a batch may hold records
 * of two files) and written as one TSV. With several files each id names its file too.
 *
 * Records longer than the window are scored exactly: the recurrent state (conv and SSM) is
 * carried from window to window, so the result equals one pass over the whole record. Records
 * are scored `--batch` at a time, each in its own row of the batch; the output keeps the input
 * order, and a record's scores do not depend on the batch size or thread count.
 *
 *   ssm-score RUN --vcf IN.vcf[.gz]|IN.bcf --reference GENOME.fa [--output OUT] [--flank L:R]
 *
 * scores variants instead (vcf_score.c, docs/genomics.md). */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bigwig.h"
#include "cli.h"
#include "score_plot.h"
#ifdef SSM_HAVE_VCF
#include "vcf_score.h"
enum { VCF_LEFT = VCF_DEFAULT_LEFT, VCF_RIGHT = VCF_DEFAULT_RIGHT, VCF_BATCH = VCF_DEFAULT_BATCH };
#else
enum { VCF_LEFT = 512, VCF_RIGHT = 64, VCF_BATCH = 64 }; /* for --help only */
#endif

typedef struct slot {
    int active;
    long seq;          /* input order of the record */
    char *id;
    size_t length;     /* symbols */
    int32_t *tokens;   /* (length + 1) BOS + symbols */
    uint8_t *scored;   /* (length) or NULL */
    size_t pos;        /* symbols predicted so far */
    double sum_logp;
    size_t n_scored;
    float *per_symbol; /* (length) log p or entropy, for --bedgraph; NAN where not scored */
    int strand;        /* 0: as read; 1: its reverse complement (--strand both) */
    double seconds;    /* duration (audio), else 0 */
} slot;

/* A set of strings (open addressing, at most half full): the ids that name their own file,
 * to catch a file reached twice (output_id). */
typedef struct id_set {
    char **v; /* cap entries; NULL: free */
    size_t cap, n;
} id_set;

static size_t hash_id(const char *s) { /* FNV-1a */
    size_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static char **id_set_find(char **v, size_t cap, const char *id) {
    size_t j = hash_id(id) & (cap - 1);
    while (v[j] && strcmp(v[j], id)) j = (j + 1) & (cap - 1);
    return &v[j];
}

/* Add a copy of id: 0, or 1 when it was there already, -1 when out of memory. */
static int id_set_add(id_set *set, const char *id) {
    if (2 * (set->n + 1) > set->cap) {
        size_t cap = set->cap ? 2 * set->cap : 64;
        char **v = calloc(cap, sizeof *v);
        if (!v) return -1;
        for (size_t i = 0; i < set->cap; i++)
            if (set->v[i]) *id_set_find(v, cap, set->v[i]) = set->v[i];
        free(set->v);
        set->v = v, set->cap = cap;
    }
    char **e = id_set_find(set->v, set->cap, id);
    if (*e) return 1;
    if (!(*e = strdup(id))) return -1;
    set->n++;
    return 0;
}

static void id_set_free(id_set *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->v[i]);
    free(set->v);
    memset(set, 0, sizeof *set);
}

typedef struct scorer {
    cli_trained tr;
    int B, W, V_task, entropy;
    FILE *out, *bed;
    bw_track *bw;      /* --bigwig: the per-symbol values, written at the end */
    float *bw_values;  /* (bw_cap) one record's values for it */
    size_t bw_cap;
    ssm_status bw_status; /* the first failure adding to it (or to the plot) */
    slot *slots;
    slot *done;        /* finished records waiting for their turn in the output */
    int n_done, cap_done;
    long next_seq, next_out;
    const char *symbol;
    int both;          /* --strand both: every record is followed by its reverse complement */
    slot pending_rc;   /* the reverse complement of the record just taken, to be taken next */
    slot held;         /* a forward strand waiting for its reverse complement in the output */
    int timed;         /* the task's records have a duration (audio): a seconds column */
    double window_s;   /* --per-window: one line per this many seconds instead of per record */
    char **files;      /* the files to score, in order ("-": stdin) */
    int n_files, file; /* file: the one being read (n_files once all are read) */
    void *reader;      /* the records of files[file]; NULL between files */
    id_set kept;       /* with several files: the ids that name their file (see output_id) */
    score_plot *plot;  /* --plot: the records' curves, drawn at the end */
} scorer;

static void slot_free(slot *s) {
    free(s->id);
    free(s->tokens);
    free(s->scored);
    free(s->per_symbol);
    memset(s, 0, sizeof *s);
}

static void write_line(scorer *sc, const slot *s, double sum, size_t n_scored, const char *extra) {
    double mean = n_scored ? sum / n_scored : NAN;
    fprintf(sc->out, "%s\t%zu\t", s->id, s->length);
    if (sc->timed) fprintf(sc->out, "%.3f\t", s->seconds);
    fprintf(sc->out, "%zu\t%s%.6f\t%.6f\t%.6f\t%.6f\n", n_scored, extra, sum, mean, -mean / M_LN2,
            exp(-mean));
}

/* --per-window: bits per symbol over consecutive windows of window_s seconds */
static void write_windows(scorer *sc, const slot *s) {
    double rate = s->seconds > 0 ? s->length / s->seconds : 0;
    size_t step = rate > 0 ? (size_t)fmax(1, llround(sc->window_s * rate)) : s->length;
    for (size_t a = 0; a < s->length; a += step) {
        size_t b = a + step < s->length ? a + step : s->length, n = 0;
        double sum = 0;
        for (size_t i = a; i < b; i++)
            if (!isnan(s->per_symbol[i])) sum += s->per_symbol[i], n++;
        fprintf(sc->out, "%s\t%.3f\t%.3f\t%zu\t%.6f\n", s->id, a / rate, b / rate, n,
                n ? -sum / n / M_LN2 : NAN);
    }
}

/* Write a finished record (with --strand both: a forward strand is held until its reverse
 * complement comes, then one line reports both). Takes ownership of s. */
static void write_record(scorer *sc, slot *s) {
    if (sc->both && s->strand == 0) {
        sc->held = *s;
        memset(s, 0, sizeof *s);
        return;
    }
    slot *f = sc->both ? &sc->held : s; /* the forward strand */
    if (sc->both) {
        /* columns: sum_logp_forward, sum_logp_reverse, then both strands together */
        char extra[96];
        snprintf(extra, sizeof extra, "%.6f\t%.6f\t", f->sum_logp, s->sum_logp);
        write_line(sc, f, f->sum_logp + s->sum_logp, f->n_scored + s->n_scored, extra);
    } else if (sc->window_s > 0) {
        write_windows(sc, s);
    } else {
        write_line(sc, s, s->sum_logp, s->n_scored, "");
    }
    if (sc->bw && !sc->bw_status && f->length > sc->bw_cap) {
        float *b = realloc(sc->bw_values, f->length * sizeof(float));
        if (b) sc->bw_values = b, sc->bw_cap = f->length;
        else sc->bw_status = ssm_set_error(SSM_ERR_NOMEM, "out of memory for the bigWig values of %s", f->id);
    }
    int to_bw = sc->bw && !sc->bw_status;
    if (sc->bed || to_bw)
        for (size_t i = 0; i < f->length; i++) {
            /* with both strands: the mean of the forward value and the reverse strand's value
             * for the same base (position length - 1 - i of the reverse complement) */
            float v = f->per_symbol[i];
            if (sc->both) v = 0.5f * (v + s->per_symbol[f->length - 1 - i]);
            if (sc->bed && !isnan(v)) fprintf(sc->bed, "%s\t%zu\t%zu\t%.5f\n", f->id, i, i + 1, v);
            if (to_bw) sc->bw_values[i] = v; /* NaN: not scored, absent from the track */
        }
    if (to_bw) sc->bw_status = bw_track_add(sc->bw, f->id, f->length, sc->bw_values);
    if (sc->plot && !sc->bw_status)
        sc->bw_status = score_plot_add(sc->plot, f->id, f->per_symbol, sc->both ? s->per_symbol : NULL,
                                       f->length, f->seconds);
    if (sc->both) slot_free(&sc->held);
    slot_free(s);
}

/* Queue a finished record for the output (which keeps the input order); takes s over. */
static ssm_status queue_done(scorer *sc, slot *s) {
    if (sc->n_done == sc->cap_done) {
        int cap = sc->cap_done ? 2 * sc->cap_done : 16;
        slot *d = realloc(sc->done, cap * sizeof(slot));
        if (!d) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for finished records");
        sc->done = d, sc->cap_done = cap;
    }
    sc->done[sc->n_done++] = *s;
    memset(s, 0, sizeof *s);
    return SSM_OK;
}

/* Emit finished records in input order. */
static void flush_done(scorer *sc) {
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < sc->n_done; i++)
            if (sc->done[i].seq == sc->next_out) {
                write_record(sc, &sc->done[i]);
                sc->done[i] = sc->done[--sc->n_done];
                sc->next_out++;
                again = 1;
                break;
            }
    }
    fflush(sc->out);
}

/* A file's name in ids and messages: "-" is stdin (as the tasks call it). */
static const char *shown(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

/* 1 when a record id already names the file it came from: tasks with one record per file
 * (audio, text) name it by its path: FILE itself, a file of the folder FILE or a file the
 * pattern FILE matched (the audio task reads folders and globs). */
static int names_file(const char *id, const char *path) {
    size_t n = strlen(path);
    if (!strcmp(id, shown(path))) return 1;
    if (n && !strncmp(id, path, n) && id[n] && (id[n] == '/' || path[n - 1] == '/')) return 1;
    return strpbrk(path, "*?[") && !fnmatch(path, id, FNM_PATHNAME);
}

/* The id a record has in the outputs. With one file: the record's own, as it always was.
 * With several: FILE:ID, unique since a file repeats no record name and a file is given only
 * once; or the id as it is when it already names its file, unique unless the same file was
 * reached twice (as a folder and by its own name, say), which is refused. */
static ssm_status output_id(scorer *sc, const char *path, const char *id, char **out) {
    int keep = sc->n_files == 1 || names_file(id, path);
    if (keep && sc->n_files > 1) {
        int seen = id_set_add(&sc->kept, id);
        if (seen < 0) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", id);
        if (seen && strcmp(id, path))
            return ssm_set_error(SSM_ERR_ARG, "%s: would be scored twice (%s reaches it again); give "
                                 "each file once", id, path);
        if (seen)
            return ssm_set_error(SSM_ERR_ARG, "%s: would be scored twice (a folder or pattern given "
                                 "before it holds it); give each file once", id);
    }
    size_t n = strlen(shown(path)) + strlen(id) + 2;
    if (!(*out = malloc(n))) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", shown(path));
    if (keep) snprintf(*out, n, "%s", id);
    else snprintf(*out, n, "%s:%s", shown(path), id);
    return SSM_OK;
}

/* The tasks' messages name their file; make sure, since with several files the user must
 * know which one is wrong. */
static ssm_status about_file(ssm_status st, const char *path) {
    const char *msg = ssm_last_error();
    if (strstr(msg, path) || strstr(msg, shown(path))) return st;
    char copy[2048];
    snprintf(copy, sizeof copy, "%s", msg);
    return ssm_set_error(st, "%s: %s", shown(path), copy);
}

static ssm_status open_file(scorer *sc) {
    const char *path = sc->files[sc->file];
    ssm_status st = sc->tr.ops->open_records(sc->tr.task, path, &sc->reader);
    return st ? about_file(st, path) : SSM_OK;
}

/* The next record of all the files, in order: each file is opened when the one before it has
 * given its last record. *eof once the last file has. */
static ssm_status next_input(scorer *sc, ssm_record *rec, int *eof) {
    for (*eof = 0; sc->file < sc->n_files; sc->file++) {
        ssm_status st = sc->reader ? SSM_OK : open_file(sc);
        if (st) return st;
        if ((st = sc->tr.ops->next_record(sc->reader, rec, eof))) return about_file(st, sc->files[sc->file]);
        if (!*eof) return SSM_OK;
        sc->tr.ops->close_records(sc->reader);
        sc->reader = NULL;
    }
    *eof = 1;
    return SSM_OK;
}

static ssm_status take_record(scorer *sc, slot *s, int *eof) {
    if (sc->pending_rc.active) { /* the reverse strand of the record taken last */
        *s = sc->pending_rc;
        memset(&sc->pending_rc, 0, sizeof sc->pending_rc);
        s->seq = sc->next_seq++;
        return SSM_OK;
    }
    ssm_record rec;
    ssm_status st = next_input(sc, &rec, eof);
    if (st || *eof) return st;
    const char *path = sc->files[sc->file];
    char *id;
    if ((st = output_id(sc, path, rec.id ? rec.id : "", &id))) return st;
    for (int strand = 0; strand <= sc->both; strand++) {
        slot *d = strand ? &sc->pending_rc : s;
        memset(d, 0, sizeof *d);
        d->active = 1;
        d->strand = strand;
        d->seq = strand ? 0 : sc->next_seq++;
        d->id = strand ? strdup(id) : id; /* the forward strand owns id */
        d->length = rec.length;
        d->tokens = malloc((rec.length + 1) * sizeof(int32_t));
        d->seconds = rec.seconds;
        int per = sc->bed || sc->bw || sc->plot || sc->window_s > 0;
        d->per_symbol = per ? malloc((rec.length + 1) * sizeof(float)) : NULL;
        if (rec.scored) d->scored = malloc(rec.length + 1);
        if (!d->id || !d->tokens || (per && !d->per_symbol) || (rec.scored && !d->scored))
            return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for record %s (%zu symbols)",
                                 shown(path), rec.id, rec.length);
        memcpy(d->tokens, rec.tokens, (rec.length + 1) * sizeof(int32_t));
        if (rec.scored) memcpy(d->scored, rec.scored, rec.length);
        if (strand) { /* BOS, then the reverse complement; the mask reversed with it */
            sc->tr.ops->reverse_complement(sc->tr.task, d->tokens + 1, rec.length);
            for (size_t i = 0; d->scored && i < rec.length / 2; i++) {
                uint8_t t = d->scored[i];
                d->scored[i] = d->scored[rec.length - 1 - i];
                d->scored[rec.length - 1 - i] = t;
            }
        }
    }
    return SSM_OK;
}

/* The progress line's text: the file being read (with several), speed and records done. */
static void progress_text(const scorer *sc, size_t total, double t0, char *buf, size_t size) {
    char where[512] = "", r[32];
    if (sc->n_files > 1) {
        int i = sc->file < sc->n_files ? sc->file : sc->n_files - 1;
        snprintf(where, sizeof where, "[%d/%d %s] ", i + 1, sc->n_files, shown(sc->files[i]));
    }
    snprintf(buf, size, "%s%s %ss/s, %ld records", where, cli_si(total / (cli_now() - t0), r, sizeof r),
             sc->symbol, sc->next_out);
}

static int run(scorer *sc) {
    ssm_model *m = sc->tr.model;
    int B = sc->B, W = sc->W;
    if (open_file(sc)) return cli_fail(); /* before the header: a first bad file writes nothing */
    int rc = CLI_EXIT_INPUT;
    size_t BW = (size_t)B * W;
    int32_t *tokens = malloc(BW * sizeof(int32_t)), *targets = malloc(BW * sizeof(int32_t));
    /* per position: log p(target), and the entropy when the bedGraph or windows show it */
    int want_h = sc->entropy && (sc->bed || sc->bw || sc->plot || sc->window_s > 0);
    float *logp = malloc(BW * sizeof(float)), *ent = want_h ? malloc(BW * sizeof(float)) : NULL;
    /* each row of the batch keeps its record's state (slot_st); a window runs only the active
     * rows, packed into a batch state of that many rows (batch_st[k - 1]) */
    ssm_state **slot_st = calloc(B, sizeof *slot_st), **batch_st = calloc(B, sizeof *batch_st);
    int *rows = malloc(B * sizeof(int));
    int oom = !tokens || !targets || !logp || (want_h && !ent) || !slot_st || !batch_st || !rows;
    for (int b = 0; b < B && !oom; b++) oom = ssm_state_create(&m->config, 1, &slot_st[b]) != SSM_OK;
    if (oom) {
        rc = cli_error("out of memory for batch %d x window %d", B, W);
        goto done;
    }
    if (sc->window_s > 0)
        fprintf(sc->out, "id\tstart_s\tend_s\tn_scored\tbits_per_%s\n", sc->symbol);
    else
        fprintf(sc->out, "id\tlength\t%sn_scored\t%ssum_logp\tmean_logp\tbits_per_%s\tperplexity\n",
                sc->timed ? "seconds\t" : "", sc->both ? "sum_logp_forward\tsum_logp_reverse\t" : "",
                sc->symbol);
    cli_progress pr;
    cli_progress_start(&pr, 0, 100, sc->symbol);
    size_t total = 0;
    double t0 = cli_now();
    int eof = 0;
    for (;;) {
        /* fill empty rows with new records */
        int any = 0;
        for (int b = 0; b < B; b++) {
            while (!sc->slots[b].active && (!eof || sc->pending_rc.active)) {
                if (take_record(sc, &sc->slots[b], &eof)) goto fail;
                if (!sc->slots[b].active) break;
                ssm_state_reset(slot_st[b]);
                /* nothing to predict: report it at once */
                if (sc->slots[b].length == 0 && queue_done(sc, &sc->slots[b])) goto fail;
            }
            any |= sc->slots[b].active;
        }
        if (!any) break;
        /* the next window of every active row: the symbols before the ones it predicts */
        int k = 0;
        for (int b = 0; b < B; b++)
            if (sc->slots[b].active) rows[k++] = b;
        if (!batch_st[k - 1] && ssm_state_create(&m->config, k, &batch_st[k - 1])) goto fail;
        for (int r = 0; r < k; r++) {
            slot *s = &sc->slots[rows[r]];
            for (int w = 0; w < W; w++) {
                size_t i = s->pos + w; /* predicting symbol i = tokens[i + 1], where scored */
                tokens[(size_t)r * W + w] = i < s->length ? s->tokens[i] : 0;
                targets[(size_t)r * W + w] =
                    i < s->length && (!s->scored || s->scored[i]) ? s->tokens[i + 1] : -1;
            }
            if (ssm_state_copy_row(batch_st[k - 1], r, slot_st[rows[r]], 0)) goto fail;
        }
        /* the host copy of the batch state is the current one (rows were just copied in) */
        if (ssm_forward_score(m, tokens, targets, k, W, batch_st[k - 1], logp, ent) ||
            ssm_state_to_host(batch_st[k - 1]))
            goto fail;
        for (int r = 0; r < k; r++) {
            slot *s = &sc->slots[rows[r]];
            if (ssm_state_copy_row(slot_st[rows[r]], 0, batch_st[k - 1], r)) goto fail;
            size_t n = s->length - s->pos < (size_t)W ? s->length - s->pos : (size_t)W;
            const float *lp = logp + (size_t)r * W, *h = ent ? ent + (size_t)r * W : NULL;
            /* added in one fixed order per window: the same for any batch size or threads */
            double sum = 0;
            size_t count = 0;
            for (size_t w = 0; w < n; w++) {
                size_t i = s->pos + w;
                int ok = !isnan(lp[w]);
                if (ok) sum += lp[w], count++;
                if (s->per_symbol) s->per_symbol[i] = ok ? (h ? h[w] : lp[w]) : NAN;
            }
            s->sum_logp += sum;
            s->n_scored += count;
            s->pos += n;
            total += n;
            if (s->pos >= s->length && queue_done(sc, s)) goto fail;
        }
        flush_done(sc);
        if (sc->bw_status) goto fail;
        char extra[640];
        progress_text(sc, total, t0, extra, sizeof extra);
        cli_progress_update(&pr, (int64_t)total, extra);
    }
    flush_done(sc);
    cli_progress_end(&pr);
    rc = 0;
    goto done;
fail:
    rc = cli_fail();
done:
    if (sc->reader) sc->tr.ops->close_records(sc->reader);
    sc->reader = NULL;
    for (int b = 0; b < B; b++) {
        if (slot_st) ssm_state_free(slot_st[b]);
        if (batch_st) ssm_state_free(batch_st[b]);
    }
    free(slot_st);
    free(batch_st);
    free(rows);
    free(tokens);
    free(targets);
    free(logp);
    free(ent);
    return rc;
}

/* The files to score, in order: copies of their names. */
typedef struct file_list {
    char **v;
    int n, cap;
} file_list;

static int add_file(file_list *l, const char *path) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(path))) return -1;
    l->n++;
    return 0;
}

static void free_files(file_list *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* --files-from LIST: one path a line (relative to the current folder, like a FILE argument);
 * blank lines and lines starting with # are skipped. */
static int read_list(const char *list, file_list *l) {
    FILE *f = strcmp(list, "-") ? fopen(list, "r") : stdin;
    if (!f) return cli_error("%s: cannot open: %s", list, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!line[strspn(line, " \t")] || line[0] == '#') continue;
        if (add_file(l, line)) rc = cli_error("%s: out of memory for its file names", shown(list));
    }
    if (!rc && ferror(f)) rc = cli_error("%s: cannot read: %s", shown(list), strerror(errno));
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Each file once: a file given twice would have its records scored twice under the same ids.
 * stdin at most once, and not at all when it holds the list. */
static int check_files(char **files, int n, const char *list) {
    char **sorted = malloc(n * sizeof *sorted);
    if (!sorted) return cli_error("out of memory for %d file names", n);
    memcpy(sorted, files, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, by_name);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int is_stdin = !strcmp(sorted[i], "-");
        if (is_stdin && list && !strcmp(list, "-"))
            rc = cli_usage("--files-from - reads the list from stdin, so no file can be - (stdin) too");
        else if (i && !strcmp(sorted[i], sorted[i - 1]))
            rc = is_stdin ? cli_usage("- (stdin) can be read only once")
                          : cli_usage("%s: given twice (its records would be scored twice under the same ids)", sorted[i]);
    }
    free(sorted);
    return rc;
}

/* With several files: open each one (and close it again) before scoring, so that a missing or
 * unreadable third file stops the run before anything is written, not after the first two
 * were scored. stdin is read only when its turn comes, and a file found malformed further in
 * stops the run there. */
static int check_readable(const scorer *sc) {
    for (int i = 0; i < sc->n_files; i++) {
        const char *p = sc->files[i];
        if (!strcmp(p, "-")) continue;
        void *reader;
        ssm_status st = sc->tr.ops->open_records(sc->tr.task, p, &reader);
        if (st) {
            about_file(st, p);
            return cli_fail();
        }
        sc->tr.ops->close_records(reader);
        if (strpbrk(p, "*?[")) continue; /* a pattern: open_records found its files */
        /* the audio task opens a file only to read its record: see now that it opens */
        FILE *f = fopen(p, "rb");
        if (!f) return cli_error("%s: cannot open: %s", p, strerror(errno));
        fclose(f);
    }
    return 0;
}

static void usage(void) {
    printf("Usage: ssm-score RUN_DIR_OR_CHECKPOINT FILE|-... [options]\n"
           "  or:  ssm-score RUN_DIR_OR_CHECKPOINT --files-from LIST [FILE...] [options]\n"
           "  or:  ssm-score RUN_DIR_OR_CHECKPOINT --vcf VCF --reference FASTA [--output OUT] [--flank L:R]\n"
           "\n"
           "Score every record of each FILE (FASTA/FASTQ, text, audio: whatever the model's task\n"
           "reads; - is stdin) and write one TSV on stdout, one line per record, the files' records\n"
           "in the order the files are given:\n"
           "  id length n_scored sum_logp mean_logp bits_per_<symbol> perplexity\n"
           "(natural logs; unscored symbols such as N bases are not counted).\n"
           "\n"
           "With one file the ids are the records' own. With several, each id becomes FILE:ID\n"
           "(a.fa:chr1; stdin:chr1 for -), so that ids stay unique across files, unless the id\n"
           "already names its file: the audio and text tasks name each record by its path (a.wav;\n"
           "dir/a.wav for a file of a folder or glob), and that is kept as it is. The bedGraph and\n"
           "--per-window lines use the same ids. A file may be given only once. Every file is\n"
           "opened before scoring starts: one that cannot be read (or, later, turns out malformed)\n"
           "stops the run with exit status 1, and no --output or --bedgraph file is left.\n"
           "\n"
           "  --files-from LIST score the files listed in LIST too, after the FILEs: one path a\n"
           "                    line, blank lines and lines starting with # skipped; - reads the\n"
           "                    list from stdin\n"
           "  --bedgraph FILE   per-symbol scores as bedGraph (0-based, half-open; chrom: the id)\n"
           "  --bigwig FILE     the same values as a bigWig track (chromosomes: the records, sizes:\n"
           "                    their lengths; unscored symbols have no value)\n"
           "  --plot FILE       draw the per-symbol scores (--per-base's kind, in bits) of the first\n"
           "                    8 records as FILE.svg or FILE.png: one curve per record, the mean\n"
           "                    over windows (at most 1000 per record; --per-window's with audio)\n"
           "  --per-base KIND   logp (default) or entropy (the predictive entropy, nats)\n"
           "  --per-window S    audio: one line per S seconds of each file (id, start_s, end_s,\n"
           "                    n_scored, bits_per_sample) instead of one per file\n"
           "  --strand WHICH    forward (default) or both: also score the reverse complement\n"
           "                    (strand-aware tasks: dna); the line then has sum_logp_forward,\n"
           "                    sum_logp_reverse, and the other columns over both strands; the\n"
           "                    bedGraph has the mean of the two strands' values per base\n"
           "  -o, --output FILE the TSV to FILE instead of stdout (FILE.tmp until the end)\n"
           "  --window N        symbols per forward pass (default 4096); the state is carried\n"
           "  --batch N         records scored side by side (default 8)\n"
           "  --threads N       CPU threads (default: all cores)\n"
           "  --device DEV      auto, cpu, cuda or cuda:N\n"
           "  --quiet           no progress on stderr (it counts over all the files and names\n"
           "                    the one being read: [2/5 b.wav])\n"
           "\n"
           "Variants (a DNA model; docs/genomics.md):\n"
           "  --vcf FILE        score every variant of a VCF, VCF.gz or BCF (- is stdin) and write\n"
           "                    its records with INFO SSM_LLR_FWD, SSM_LLR_RC and SSM_LLR (per ALT:\n"
           "                    the log-likelihood ratio ALT vs REF in nats, forward strand, reverse\n"
           "                    strand, their mean); each allele counts its own bases (log p +\n"
           "                    entropy: length-neutral) and the RIGHT reference bases after REF\n"
           "  --reference FASTA the genome (plain, gzip or bgzip; a missing .fai is built beside it)\n"
           "  -o, --output OUT  OUT.vcf, OUT.vcf.gz (bgzip + .tbi index) or OUT.bcf (+ .csi);\n"
           "                    default: VCF text on stdout\n"
           "  --flank L:R       L bases of context before the allele, R of flank after it\n"
           "                    (default %d:%d; --flank N is N:N)\n"
           "  --context-step S  contexts start at multiples of S bases (L to L+S-1 bases of\n"
           "                    context), so that variants within S bases of one another share\n"
           "                    one pass over it: much faster on dense VCFs (default 0: L bases)\n"
           "  --batch N         allele windows scored side by side (default %d with --vcf)\n"
           "A REF that differs from the reference gets FILTER SSM_REF_MISMATCH, a record whose ALTs\n"
           "are all symbolic (<DEL>, breakends, *) SSM_SYMBOLIC, one on a contig the reference lacks\n"
           "SSM_NO_CONTIG; none is scored, and stderr counts them.\n"
           "\nExamples (run from the source tree):\n"
           "  ssm-score runs/try data/ecoli/held_out_50kb.fa > scores.tsv\n"
           "  ssm-score runs/try data/ecoli/held_out_50kb.fa --per-base entropy --plot entropy.svg --output scores.tsv\n",
           VCF_LEFT, VCF_RIGHT, VCF_BATCH);
}

/* Open the outputs as FILE.tmp (renamed by finish_outputs when the whole run succeeded). */
static int open_outputs(scorer *sc, const char *out_path, char *out_tmp, const char *bed_path,
                        char *bed_tmp, const char *bw_path, size_t size) {
    if (out_path && strcmp(out_path, "-")) {
        snprintf(out_tmp, size, "%s.tmp", out_path);
        if (!(sc->out = fopen(out_tmp, "w"))) return cli_error("%s: cannot write: %s", out_tmp, strerror(errno));
    }
    if (bed_path) {
        snprintf(bed_tmp, size, "%s.tmp", bed_path);
        if (!(sc->bed = fopen(bed_tmp, "w"))) return cli_error("%s: cannot write: %s", bed_tmp, strerror(errno));
    }
    if (bw_path && bw_track_open(bw_path, &sc->bw)) return cli_fail();
    return 0;
}

/* Close the outputs; on success rename them to their real names, else remove them, so that
 * nothing half-written is left (an older file of that name stays as it was). */
static int finish_outputs(scorer *sc, int rc, const char *out_path, const char *out_tmp,
                          const char *bed_path, const char *bed_tmp, const char *bw_path) {
    char bw_tmp[4200] = "";
    if (!rc && sc->bw) { /* the bigWig is written now that every record's length is known */
        snprintf(bw_tmp, sizeof bw_tmp, "%s.tmp", bw_path);
        if (bw_track_write(sc->bw, bw_tmp)) rc = cli_fail();
    }
    bw_track_free(sc->bw);
    sc->bw = NULL;
    /* a full disk shows at the latest here, when the buffers are flushed */
    if (sc->bed && (ferror(sc->bed) | fclose(sc->bed)) && !rc)
        rc = cli_error("%s: cannot write: %s", bed_tmp, strerror(errno ? errno : EIO));
    if (sc->out != stdout && (ferror(sc->out) | fclose(sc->out)) && !rc)
        rc = cli_error("%s: cannot write: %s", out_tmp, strerror(errno ? errno : EIO));
    sc->bed = NULL;
    sc->out = stdout;
    if (!rc && *bw_tmp && rename(bw_tmp, bw_path)) rc = cli_error("%s: cannot write: %s", bw_path, strerror(errno));
    if (!rc && *bed_tmp && rename(bed_tmp, bed_path)) rc = cli_error("%s: cannot write: %s", bed_path, strerror(errno));
    if (!rc && *out_tmp && rename(out_tmp, out_path)) rc = cli_error("%s: cannot write: %s", out_path, strerror(errno));
    if (rc) {
        if (*out_tmp) remove(out_tmp);
        if (*bed_tmp) remove(bed_tmp);
        if (*bw_tmp) remove(bw_tmp);
    }
    return rc;
}

#ifdef SSM_HAVE_VCF
/* --flank L:R (or N: N:N) */
static int parse_flank(const char *text, int *left, int *right) {
    char *end;
    errno = 0;
    long l = strtol(text, &end, 10), r = l;
    if (end != text && *end == ':') {
        const char *b = end + 1;
        r = strtol(b, &end, 10);
        if (end == b) return -1;
    }
    if (errno || *end || end == text || l < 0 || r < 0 || l > 1000000 || r > 1000000) return -1;
    *left = (int)l, *right = (int)r;
    return 0;
}
#endif

/* ssm-score RUN --vcf ...: the variants mode (vcf_score.c). */
static int vcf_main(int argc, char **argv, const char *run, const char *vcf, const char *reference,
                    const char *out_path, const char *flank, const char *step, const char *device,
                    int threads, int batch, int window) {
#ifdef SSM_HAVE_VCF
    vcf_options o = {.vcf = vcf, .reference = reference, .output = out_path,
                     .left = VCF_DEFAULT_LEFT, .right = VCF_DEFAULT_RIGHT,
                     .batch = batch ? batch : VCF_DEFAULT_BATCH, .window = window};
    if (flank && parse_flank(flank, &o.left, &o.right))
        return cli_usage("--flank takes LEFT:RIGHT or N (bases, 0..1000000), not '%s'", flank);
    if (step) {
        char *end;
        long k = strtol(step, &end, 10);
        if (*end || end == step || k < 0 || k > 1000000)
            return cli_usage("--context-step takes a number of bases in [0, 1000000], not '%s'", step);
        o.context_step = (int)k;
    }
    if (out_path && strcmp(out_path, "-") && !strcmp(out_path, vcf))
        return cli_usage("--output %s is the input VCF itself: write to another file", out_path);
    /* the command line, for the output's header */
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += strlen(argv[i]) + 1;
    char *command = malloc(n);
    if (!command) return cli_error("out of memory");
    *command = 0;
    for (int i = 0; i < argc; i++) {
        if (i) strcat(command, " ");
        strcat(command, i ? argv[i] : cli_program());
    }
    o.command = command;
    int dev, rc = 0;
    cli_trained tr;
    if (cli_device(device, &dev, NULL)) rc = cli_fail();
    ssm_set_threads(threads);
    if (!rc && cli_load_trained(run, &tr)) rc = cli_fail();
    if (rc) {
        free(command);
        return rc;
    }
    if (strcmp(tr.ops->name, "dna")) {
        rc = cli_error("--vcf needs a DNA model; %s was trained on the task '%s'", run, tr.ops->name);
    } else {
        cli_device_fallback(device, &tr.model->config, &dev, NULL);
        if (dev >= 0 && ssm_model_use_device(tr.model, NULL, dev)) rc = cli_fail();
        else rc = vcf_score_run(&tr, &o);
    }
    cli_trained_free(&tr);
    free(command);
    return rc;
#else
    (void)argc, (void)argv, (void)run, (void)vcf, (void)reference, (void)out_path, (void)flank, (void)step;
    (void)device, (void)threads, (void)batch, (void)window;
    return cli_error("--vcf: this build has no htslib, so no DNA task and no VCF support "
                     "(Debian: apt-get install libhts-dev, then rebuild)");
#endif
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    static struct option opts[] = {
        {"bedgraph", required_argument, 0, 'g'}, {"per-base", required_argument, 0, 'p'},
        {"output", required_argument, 0, 'o'},   {"window", required_argument, 0, 'w'},
        {"batch", required_argument, 0, 'b'},    {"threads", required_argument, 0, 't'},
        {"device", required_argument, 0, 'd'},   {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {"version", no_argument, 0, 'V'},
        {"strand", required_argument, 0, 's'},   {"per-window", required_argument, 0, 'W'},
        {"files-from", required_argument, 0, 'f'}, {"bigwig", required_argument, 0, 'G'},
        {"vcf", required_argument, 0, 'v'},      {"reference", required_argument, 0, 'r'},
        {"flank", required_argument, 0, 'F'},    {"context-step", required_argument, 0, 'C'},
        {"plot", required_argument, 0, 'P'},     {0, 0, 0, 0}};
    scorer sc = {.B = 8, .W = 4096, .out = stdout};
    const char *bed_path = NULL, *out_path = NULL, *device = "auto", *list = NULL, *bw_path = NULL;
    const char *vcf = NULL, *reference = NULL, *flank = NULL, *per_base = NULL, *step = NULL;
    const char *plot_path = NULL;
    int threads = 0, batch_given = 0;
    for (int o; (o = getopt_long(argc, argv, "o:", opts, NULL)) != -1;) {
        char *end;
        switch (o) {
        case 'g': bed_path = optarg; break;
        case 'G': bw_path = optarg; break;
        case 'P': plot_path = optarg; break;
        case 'v': vcf = optarg; break;
        case 'r': reference = optarg; break;
        case 'F': flank = optarg; break;
        case 'C': step = optarg; break;
        case 'p':
            per_base = optarg;
            if (!strcmp(optarg, "entropy")) sc.entropy = 1;
            else if (strcmp(optarg, "logp")) return cli_usage("--per-base takes logp or entropy, not '%s'", optarg);
            break;
        case 'o': out_path = optarg; break;
        case 'f':
            if (list) return cli_usage("--files-from is given twice (put all the paths in one list)");
            list = optarg;
            break;
        case 'W':
            sc.window_s = strtod(optarg, &end);
            if (*end || !(sc.window_s > 0)) return cli_usage("--per-window takes a positive number of seconds, not '%s'", optarg);
            break;
        case 's':
            if (!strcmp(optarg, "both")) sc.both = 1;
            else if (strcmp(optarg, "forward")) return cli_usage("--strand takes forward or both, not '%s'", optarg);
            break;
        case 'w': sc.W = (int)strtol(optarg, &end, 10);
            if (*end || sc.W < 1) return cli_usage("--window takes a positive integer, not '%s'", optarg);
            break;
        case 'b': sc.B = (int)strtol(optarg, &end, 10);
            if (*end || sc.B < 1 || sc.B > 4096) return cli_usage("--batch takes an integer in [1, 4096], not '%s'", optarg);
            batch_given = 1;
            break;
        case 't': threads = (int)strtol(optarg, &end, 10);
            if (*end || threads < 0) return cli_usage("--threads takes an integer >= 0, not '%s'", optarg);
            break;
        case 'd': device = optarg; break;
        case 'q': cli_quiet = 1; break;
        case 'h': usage(); return 0;
        case 'V': printf("ssm-score %s\n", SSM_VERSION); return 0;
        default: return cli_usage("unknown option");
        }
    }
    if (vcf || reference || flank || step) {
        /* variants: none of the per-record outputs */
        const char *other = bed_path ? "--bedgraph" : bw_path ? "--bigwig" : plot_path ? "--plot" : per_base ? "--per-base"
                          : sc.window_s > 0 ? "--per-window" : sc.both ? "--strand" : list ? "--files-from" : NULL;
        if (!vcf) return cli_usage("--%s goes with --vcf", reference ? "reference" : flank ? "flank" : "context-step");
        if (!reference) return cli_usage("--vcf needs --reference FASTA (the genome the variants are on)");
        if (other) return cli_usage("%s does not go with --vcf (the scores go into the VCF)", other);
        if (argc - optind != 1)
            return cli_usage(argc - optind ? "--vcf scores one VCF; '%s' is one file too many"
                                           : "need a run directory (or checkpoint)", argv[argc - 1]);
        return vcf_main(argc, argv, argv[optind], vcf, reference, out_path, flank, step, device, threads,
                        batch_given ? sc.B : 0, sc.W);
    }
    if (argc - optind < 2 && !(argc - optind == 1 && list))
        return cli_usage("need a run directory (or checkpoint) and files to score");
    file_list files = {0};
    int rc = 0;
    for (int i = optind + 1; i < argc && !rc; i++)
        if (add_file(&files, argv[i])) rc = cli_error("out of memory for the file names");
    if (!rc && list) rc = read_list(list, &files);
    if (!rc && files.n == 0) rc = cli_error("%s: lists no file to score", shown(list));
    if (!rc) rc = check_files(files.v, files.n, list);
    if (rc) {
        free_files(&files);
        return rc;
    }
    sc.files = files.v, sc.n_files = files.n;
    int dev;
    if (cli_device(device, &dev, NULL)) rc = cli_fail();
    ssm_set_threads(threads);
    if (!rc && cli_load_trained(argv[optind], &sc.tr)) rc = cli_fail();
    if (rc) {
        free_files(&files);
        return rc;
    }
    rc = CLI_EXIT_INPUT;
    char out_tmp[4200] = "", bed_tmp[4200] = "";
    /* what the model cannot score is refused before a device is chosen, in one line */
    if (!sc.tr.ops->score_file) {
        if (!sc.tr.ops->open_records) {
            rc = cli_error("the task '%s' cannot score files", sc.tr.ops->name);
            goto done;
        }
        if (!ssm_config_causal(&sc.tr.model->config)) { /* next-symbol scores, state carried */
            rc = cli_error("%s: the model is bidirectional (%s): each position sees the symbols it "
                           "would predict, so it has no next-symbol scores and no carried state",
                           argv[optind], sc.tr.model->config.rcps ? "RCPS" : "bimamba layers");
            goto done;
        }
    }
    cli_device_fallback(device, &sc.tr.model->config, &dev, NULL);
    if (dev >= 0 && ssm_model_use_device(sc.tr.model, NULL, dev)) {
        rc = cli_fail();
        goto done;
    }
    if (sc.tr.ops->score_file) { /* the task scores its files itself (task ABI v2) */
        if (open_outputs(&sc, out_path, out_tmp, NULL, bed_tmp, NULL, sizeof out_tmp)) goto done;
        rc = 0;
        for (int i = 0; i < sc.n_files && !rc; i++)
            if (sc.tr.ops->score_file(sc.tr.task, sc.tr.model, sc.files[i], sc.out)) rc = cli_fail();
        goto done;
    }
    sc.symbol = sc.tr.ops->symbol;
    sc.timed = !strcmp(sc.symbol, "sample"); /* audio records have a duration */
    if (sc.window_s > 0 && !sc.timed) {
        rc = cli_error("--per-window: the task '%s' has no time axis (audio has)", sc.tr.ops->name);
        goto done;
    }
    if (sc.window_s > 0 && sc.both) {
        rc = cli_error("--per-window and --strand both do not go together");
        goto done;
    }
    if (sc.both && !sc.tr.ops->reverse_complement) {
        rc = cli_error("--strand both: the task '%s' has no strands", sc.tr.ops->name);
        goto done;
    }
    if (sc.n_files > 1 && check_readable(&sc)) goto done;
    if (plot_path && score_plot_create(sc.entropy, sc.symbol, sc.window_s, &sc.plot)) {
        rc = cli_fail();
        goto done;
    }
    if (open_outputs(&sc, out_path, out_tmp, bed_path, bed_tmp, bw_path, sizeof out_tmp)) goto done;
    if (!(sc.slots = calloc(sc.B, sizeof(slot)))) {
        rc = cli_error("out of memory for %d records", sc.B);
        goto done;
    }
    rc = run(&sc);
    if (!rc && sc.plot && score_plot_write(sc.plot, plot_path)) rc = cli_fail();
done:
    rc = finish_outputs(&sc, rc, out_path, out_tmp, bed_path, bed_tmp, bw_path);
    for (int b = 0; sc.slots && b < sc.B; b++) slot_free(&sc.slots[b]);
    for (int i = 0; i < sc.n_done; i++) slot_free(&sc.done[i]);
    slot_free(&sc.pending_rc);
    slot_free(&sc.held);
    free(sc.slots);
    free(sc.done);
    free(sc.bw_values);
    free_files(&files);
    id_set_free(&sc.kept);
    score_plot_free(sc.plot);
    cli_trained_free(&sc.tr);
    return rc;
}
