/* ssm-embed: embeddings of records, windows or BED regions from a trained model's hidden states.
 *
 *   ssm-embed RUN_DIR_OR_CHECKPOINT FILE|-... [--layer N] [--pool mean|max|last]
 *             [--window N | --regions FILE.bed] [--context record|alone] [--strand both]
 *             [--format npy|safetensors] --output PREFIX
 *
 * The records of the files (read through the model's task, one stream as ssm-score reads them)
 * run through the model on the CPU, --chunk symbols per forward pass, --batch records side by
 * side, each row carrying its record's recurrent state from chunk to chunk with
 * ssm_state_copy_row: so a record's hidden states are those of one pass over the whole record,
 * exactly for any batch size or thread count, to rounding for any chunk. The hidden state of
 * symbol i is the chosen layer's output at the position where symbol i is the input (BOS is
 * position 0): it has seen the record's symbols 0..i. An embedding pools (mean, max or last) those states
 * over a segment: the whole record, a window of N symbols, or a BED interval; with
 * --strand both it is the mean of the forward strand's and the reverse complement's pooled
 * vectors over the same bases.
 *
 * Output: PREFIX.npy (NPY 1.0, '<f4', C order, shape (n, D)) or PREFIX.safetensors (one F32
 * tensor 'embeddings' (n, D)), and PREFIX.tsv (index, id, start, end, length, strand[, name]),
 * written to .tmp files and renamed once everything succeeded. docs/genomics.md, 'Embeddings'. */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bed.h"
#include "cli.h"
#include "ssm/checkpoint.h"

enum { POOL_MEAN, POOL_MAX, POOL_LAST };
enum { MODE_RECORD, MODE_WINDOW, MODE_REGIONS };
enum { FORMAT_NPY, FORMAT_SAFETENSORS };
static const char *const pool_names[] = {"mean", "max", "last"};

/* One segment to pool, in the coordinates of its job's symbols [start, end), into output row
 * `row`. */
typedef struct seg {
    size_t start, end;
    size_t row;
} seg;

/* A token sequence that runs through the model in one row of the batch: BOS then n symbols (a
 * record, its reverse complement, or one window/region alone), and the segments pooled over
 * it. Only the first need symbols run (the furthest segment end). */
typedef struct job {
    int32_t *tokens; /* (n + 1) */
    size_t n, need;
    size_t pos;      /* token positions run so far (BOS is position 0) */
    seg *segs;       /* (n_segs) sorted by start */
    size_t n_segs, lo; /* lo: segments before it have ended */
    double *acc;     /* (n_segs, D) the pooling's running value */
} job;

/* What an output row is: a name (a record id, or a contig for regions) and its interval. */
typedef struct row_info {
    size_t name;
    size_t start, end;
} row_info;

typedef struct embedder {
    cli_trained tr;
    int B, C, layer, pool, mode, both, alone, format;
    size_t window;
    const char *bed_path;
    int D;
    char **files;
    int n_files, file;
    void *reader;
    /* names of the output rows (record ids; the contigs with --regions) */
    char **names;
    size_t n_names, cap_names;
    /* the output rows */
    float *out;      /* (cap_rows, D) */
    row_info *rows;
    size_t n_rows, cap_rows, rows_done;
    /* --regions */
    bed_contig *contigs; /* sorted by id */
    size_t n_contigs;
    bed_set bed;         /* in the BED's order: region i is row i */
    /* jobs waiting for a row */
    job *queue;
    size_t q_head, q_n, q_cap;
    int eof;
} embedder;

static const char *shown(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

/* ---- names, rows, jobs ---------------------------------------------------------------------- */

static ssm_status add_name(embedder *e, const char *name, size_t *index) {
    if (e->n_names == e->cap_names) {
        size_t cap = e->cap_names ? 2 * e->cap_names : 64;
        char **v = realloc(e->names, cap * sizeof *v);
        if (!v) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the record names");
        e->names = v, e->cap_names = cap;
    }
    if (!(e->names[e->n_names] = strdup(name)))
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the record names");
    *index = e->n_names++;
    return SSM_OK;
}

static ssm_status reserve_rows(embedder *e, size_t n) {
    if (n <= e->cap_rows) return SSM_OK;
    size_t cap = e->cap_rows ? e->cap_rows : 256;
    while (cap < n) cap *= 2;
    float *out = realloc(e->out, cap * e->D * sizeof(float));
    if (out) e->out = out;
    row_info *rows = out ? realloc(e->rows, cap * sizeof *rows) : NULL;
    if (!out || !rows)
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu embeddings of %d floats", n, e->D);
    e->rows = rows;
    memset(e->out + e->cap_rows * e->D, 0, (cap - e->cap_rows) * e->D * sizeof(float));
    e->cap_rows = cap;
    return SSM_OK;
}

static ssm_status add_row(embedder *e, size_t name, size_t start, size_t end, size_t *row) {
    ssm_status s = reserve_rows(e, e->n_rows + 1);
    if (s) return s;
    e->rows[e->n_rows] = (row_info){name, start, end};
    *row = e->n_rows++;
    return SSM_OK;
}

static void job_free(job *j) {
    free(j->tokens);
    free(j->segs);
    free(j->acc);
    memset(j, 0, sizeof *j);
}

static int by_start(const void *a, const void *b) {
    const seg *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : (x->row > y->row) - (x->row < y->row);
}

/* A job over BOS + symbols (n), reverse-complemented when strand is 1, pooling segs (forward
 * coordinates, mapped to the job's own). Takes over nothing; copies what it needs. */
static ssm_status push_job(embedder *e, int32_t bos, const int32_t *symbols, size_t n, int strand,
                           const seg *segs, size_t n_segs) {
    if (e->q_n == e->q_cap) {
        size_t cap = e->q_cap ? 2 * e->q_cap : 16;
        job *q = malloc(cap * sizeof *q);
        if (!q) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the jobs");
        for (size_t i = 0; i < e->q_n; i++) q[i] = e->queue[(e->q_head + i) % e->q_cap];
        free(e->queue);
        e->queue = q, e->q_cap = cap, e->q_head = 0;
    }
    job j = {0};
    j.n = n;
    j.tokens = malloc((n + 1) * sizeof(int32_t));
    j.segs = malloc((n_segs ? n_segs : 1) * sizeof(seg));
    j.acc = malloc((n_segs ? n_segs : 1) * e->D * sizeof(double));
    if (!j.tokens || !j.segs || !j.acc) {
        job_free(&j);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a sequence of %zu symbols", n);
    }
    j.tokens[0] = bos;
    memcpy(j.tokens + 1, symbols, n * sizeof(int32_t));
    if (strand) e->tr.ops->reverse_complement(e->tr.task, j.tokens + 1, n);
    j.n_segs = n_segs;
    for (size_t k = 0; k < n_segs; k++) {
        j.segs[k] = segs[k];
        /* [a, b) of the forward strand is [n - b, n - a) of its reverse complement */
        if (strand) j.segs[k].start = n - segs[k].end, j.segs[k].end = n - segs[k].start;
        if (j.segs[k].end > j.need) j.need = j.segs[k].end;
    }
    qsort(j.segs, n_segs, sizeof(seg), by_start);
    double init = e->pool == POOL_MEAN ? 0.0 : e->pool == POOL_MAX ? -INFINITY : NAN;
    for (size_t i = 0; i < n_segs * e->D; i++) j.acc[i] = init;
    e->queue[(e->q_head + e->q_n++) % e->q_cap] = j;
    return SSM_OK;
}

/* The jobs of one record: its segments (forward coordinates), per strand either the whole
 * record (the segments see their left context) or each segment alone. */
static ssm_status push_record(embedder *e, const ssm_record *rec, const seg *segs, size_t n_segs) {
    ssm_status s = SSM_OK;
    for (int strand = 0; strand <= e->both && !s; strand++) {
        if (!e->alone) {
            s = push_job(e, rec->tokens[0], rec->tokens + 1, rec->length, strand, segs, n_segs);
            continue;
        }
        for (size_t k = 0; k < n_segs && !s; k++) {
            seg one = {0, segs[k].end - segs[k].start, segs[k].row};
            s = push_job(e, rec->tokens[0], rec->tokens + 1 + segs[k].start, one.end, strand, &one, 1);
        }
    }
    return s;
}

/* ---- reading the files -------------------------------------------------------------------- */

/* The task's messages name their file; make sure. */
static ssm_status about_file(ssm_status st, const char *path) {
    const char *msg = ssm_last_error();
    if (strstr(msg, path) || strstr(msg, shown(path))) return st;
    char copy[2048];
    snprintf(copy, sizeof copy, "%s", msg);
    return ssm_set_error(st, "%s: %s", shown(path), copy);
}

static ssm_status next_input(embedder *e, ssm_record *rec, int *eof) {
    for (*eof = 0; e->file < e->n_files; e->file++) {
        const char *path = e->files[e->file];
        ssm_status st = SSM_OK;
        if (!e->reader && (st = e->tr.ops->open_records(e->tr.task, path, &e->reader)))
            return about_file(st, path);
        if ((st = e->tr.ops->next_record(e->reader, rec, eof))) return about_file(st, path);
        if (!*eof) return SSM_OK;
        e->tr.ops->close_records(e->reader);
        e->reader = NULL;
    }
    *eof = 1;
    return SSM_OK;
}

/* 1 when a record id already names its file (the audio and text tasks name a record by its
 * path), as ssm-score decides. */
static int names_file(const char *id, const char *path) {
    size_t n = strlen(path);
    if (!strcmp(id, shown(path))) return 1;
    if (n && !strncmp(id, path, n) && id[n] && (id[n] == '/' || path[n - 1] == '/')) return 1;
    return strpbrk(path, "*?[") && !fnmatch(path, id, FNM_PATHNAME);
}

/* Read the next record and queue its jobs; *eof when every file is read. Records without a
 * region (with --regions) are skipped. */
static ssm_status refill(embedder *e) {
    for (;;) {
        ssm_record rec;
        int eof;
        ssm_status s = next_input(e, &rec, &eof);
        if (s) return s;
        if (eof) {
            e->eof = 1;
            return SSM_OK;
        }
        const char *id = rec.id ? rec.id : "";
        const char *path = e->files[e->file];
        if (e->mode == MODE_REGIONS) {
            ssize_t c = bed_find_contig(e->contigs, e->n_contigs, id);
            if (c < 0)
                return ssm_set_error(SSM_ERR_ARG, "%s: the record %s was not there when the regions "
                                     "were checked (did the file change?)", shown(path), id);
            size_t a = e->bed.contig_first[c], b = e->bed.contig_first[c + 1];
            if (a == b) continue; /* no region on this record */
            if (e->contigs[c].length != rec.length)
                return ssm_set_error(SSM_ERR_ARG, "%s: the record %s changed length since the regions "
                                     "were checked", shown(path), id);
            seg *segs = malloc((b - a) * sizeof *segs);
            if (!segs) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu regions", b - a);
            for (size_t k = a; k < b; k++) {
                const bed_region *r = &e->bed.regions[e->bed.by_contig[k]];
                segs[k - a] = (seg){r->start, r->end, e->bed.by_contig[k]};
            }
            s = push_record(e, &rec, segs, b - a);
            free(segs);
            return s;
        }
        /* the id in the TSV: the record's own with one file; FILE:ID with several, unless the
         * id names its file already */
        char *name = NULL;
        size_t len = strlen(shown(path)) + strlen(id) + 2, ni = 0;
        if (!(name = malloc(len))) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        if (e->n_files == 1 || names_file(id, path)) snprintf(name, len, "%s", id);
        else snprintf(name, len, "%s:%s", shown(path), id);
        s = add_name(e, name, &ni);
        free(name);
        if (s) return s;
        size_t n = rec.length, w = e->mode == MODE_WINDOW ? e->window : (n ? n : 1);
        size_t n_segs = e->mode == MODE_WINDOW ? (n + w - 1) / w : 1;
        seg *segs = malloc((n_segs ? n_segs : 1) * sizeof *segs);
        if (!segs) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu windows", n_segs);
        for (size_t k = 0; k < n_segs && !s; k++) {
            size_t a = k * w, b = a + w < n ? a + w : n;
            segs[k] = (seg){a, b, 0};
            s = add_row(e, ni, a, b, &segs[k].row);
        }
        if (!s && n_segs) s = push_record(e, &rec, segs, n_segs);
        free(segs);
        if (s || n_segs) return s;
        /* an empty record has no window: nothing to run */
    }
}

/* The next job for a row: *got 0 when every record is done. */
static ssm_status take_job(embedder *e, job *j, int *got) {
    *got = 0;
    while (e->q_n == 0 && !e->eof) {
        ssm_status s = refill(e);
        if (s) return s;
    }
    if (e->q_n == 0) return SSM_OK;
    *j = e->queue[e->q_head];
    e->q_head = (e->q_head + 1) % e->q_cap;
    e->q_n--;
    *got = 1;
    return SSM_OK;
}

/* ---- pooling ---------------------------------------------------------------------------- */

/* Hidden states h (c, D) of token positions [j->pos, j->pos + c) into the segments. */
static void accumulate(const embedder *e, job *j, const float *h, size_t c) {
    const int D = e->D;
    size_t q0 = j->pos, q1 = j->pos + c;
    /* symbol i is the input at position i + 1 */
    size_t s0 = q0 ? q0 - 1 : 0, s1 = q1 - 1 < j->need ? q1 - 1 : j->need;
    if (s1 <= s0) return;
    while (j->lo < j->n_segs && j->segs[j->lo].end <= s0) j->lo++;
    for (size_t k = j->lo; k < j->n_segs && j->segs[k].start < s1; k++) {
        const seg *g = &j->segs[k];
        if (g->end <= s0) continue;
        size_t a = g->start > s0 ? g->start : s0, b = g->end < s1 ? g->end : s1;
        double *acc = j->acc + k * D;
        if (e->pool == POOL_MEAN) {
            for (size_t i = a; i < b; i++) {
                const float *row = h + (i + 1 - q0) * D;
                for (int d = 0; d < D; d++) acc[d] += row[d];
            }
        } else if (e->pool == POOL_MAX) {
            for (size_t i = a; i < b; i++) {
                const float *row = h + (i + 1 - q0) * D;
                for (int d = 0; d < D; d++)
                    if (row[d] > acc[d]) acc[d] = row[d];
            }
        } else if (b == g->end) { /* last: the state after the segment's last symbol */
            const float *row = h + (b - q0) * D;
            for (int d = 0; d < D; d++) acc[d] = row[d];
        }
    }
}

/* A finished job's pooled vectors added into their rows (both strands: the two are added, then
 * halved at the end). */
static void finish_job(embedder *e, job *j) {
    const int D = e->D;
    for (size_t k = 0; k < j->n_segs; k++) {
        const seg *g = &j->segs[k];
        size_t len = g->end - g->start;
        float *out = e->out + g->row * D;
        for (int d = 0; d < D; d++) {
            double v = j->acc[k * D + d];
            if (len == 0) v = NAN;
            else if (e->pool == POOL_MEAN) v /= (double)len;
            out[d] += (float)v;
        }
        e->rows_done++;
    }
    job_free(j);
}

/* ---- the run ------------------------------------------------------------------------------ */

static int run(embedder *e) {
    ssm_model *m = e->tr.model;
    const int B = e->B, C = e->C, D = e->D;
    int rc = CLI_EXIT_INPUT;
    int32_t *tokens = malloc((size_t)B * C * sizeof(int32_t));
    float *hid = malloc((size_t)B * C * D * sizeof(float));
    ssm_state **slot_st = calloc(B, sizeof *slot_st), **batch_st = calloc(B, sizeof *batch_st);
    job *slots = calloc(B, sizeof *slots);
    int *active = calloc(B, sizeof *active), *rows = malloc(B * sizeof(int));
    int oom = !tokens || !hid || !slot_st || !batch_st || !slots || !active || !rows;
    for (int b = 0; b < B && !oom; b++) oom = ssm_state_create(&m->config, 1, &slot_st[b]) != SSM_OK;
    if (oom) {
        rc = cli_error("out of memory for batch %d x chunk %d", B, C);
        goto done;
    }
    cli_progress pr;
    cli_progress_start(&pr, 0, 100, e->tr.ops->symbol);
    size_t total = 0;
    double t0 = cli_now();
    for (;;) {
        int k = 0;
        for (int b = 0; b < B; b++) {
            while (!active[b]) {
                int got;
                if (take_job(e, &slots[b], &got)) goto fail;
                if (!got) break;
                ssm_state_reset(slot_st[b]);
                if (slots[b].need == 0) finish_job(e, &slots[b]); /* nothing to run */
                else active[b] = 1;
            }
            if (active[b]) rows[k++] = b;
        }
        if (!k) break;
        /* positions this pass: the chunk, or less when every active row ends before it */
        size_t c = 0;
        for (int r = 0; r < k; r++) {
            const job *j = &slots[rows[r]];
            size_t left = j->need + 1 - j->pos;
            if (left > c) c = left;
        }
        if (c > (size_t)C) c = C;
        if (!batch_st[k - 1] && ssm_state_create(&m->config, k, &batch_st[k - 1])) goto fail;
        for (int r = 0; r < k; r++) {
            const job *j = &slots[rows[r]];
            for (size_t w = 0; w < c; w++) {
                size_t q = j->pos + w;
                tokens[(size_t)r * c + w] = q <= j->need ? j->tokens[q] : 0; /* padding: not pooled */
            }
            if (ssm_state_copy_row(batch_st[k - 1], r, slot_st[rows[r]], 0)) goto fail;
        }
        if (ssm_forward(m, tokens, NULL, k, (int)c, batch_st[k - 1], NULL) ||
            ssm_state_to_host(batch_st[k - 1]) || ssm_model_hidden(m, e->layer, hid))
            goto fail;
        for (int r = 0; r < k; r++) {
            job *j = &slots[rows[r]];
            if (ssm_state_copy_row(slot_st[rows[r]], 0, batch_st[k - 1], r)) goto fail;
            accumulate(e, j, hid + (size_t)r * c * D, c);
            size_t run_now = j->need + 1 - j->pos < c ? j->need + 1 - j->pos : c;
            total += run_now - (j->pos == 0); /* symbols: BOS is not one */
            j->pos += run_now;
            if (j->pos > j->need) {
                finish_job(e, j);
                active[rows[r]] = 0;
            }
        }
        char extra[256], r1[32];
        snprintf(extra, sizeof extra, "%s %ss/s, %zu embeddings",
                 cli_si(total / (cli_now() - t0), r1, sizeof r1),
                 e->tr.ops->symbol, e->rows_done / (e->both ? 2 : 1));
        cli_progress_update(&pr, (int64_t)total, extra);
    }
    cli_progress_end(&pr);
    if (e->both)
        for (size_t i = 0; i < e->n_rows * D; i++) e->out[i] *= 0.5f;
    rc = 0;
    goto done;
fail:
    rc = cli_fail();
done:
    for (int b = 0; b < B; b++) {
        if (slots) job_free(&slots[b]);
        if (slot_st) ssm_state_free(slot_st[b]);
        if (batch_st) ssm_state_free(batch_st[b]);
    }
    free(slots);
    free(active);
    free(rows);
    free(slot_st);
    free(batch_st);
    free(tokens);
    free(hid);
    return rc;
}

/* ---- --regions ------------------------------------------------------------------------------ */

/* Every record's name and length (the files are read once before the run, so that a region's
 * contig and bounds are checked before anything is computed). */
static int read_contigs(embedder *e) {
    size_t cap = 0;
    for (int f = 0; f < e->n_files; f++) {
        const char *path = e->files[f];
        void *reader;
        ssm_status st = e->tr.ops->open_records(e->tr.task, path, &reader);
        if (st) {
            about_file(st, path);
            return cli_fail();
        }
        for (;;) {
            ssm_record rec;
            int eof;
            if ((st = e->tr.ops->next_record(reader, &rec, &eof))) {
                about_file(st, path);
                e->tr.ops->close_records(reader);
                return cli_fail();
            }
            if (eof) break;
            if (e->n_contigs == cap) {
                cap = cap ? 2 * cap : 64;
                bed_contig *v = realloc(e->contigs, cap * sizeof *v);
                if (!v) {
                    e->tr.ops->close_records(reader);
                    return cli_error("out of memory for the record names");
                }
                e->contigs = v;
            }
            bed_contig *c = &e->contigs[e->n_contigs];
            c->id = strdup(rec.id ? rec.id : "");
            c->length = rec.length;
            c->file = f;
            if (!c->id) {
                e->tr.ops->close_records(reader);
                return cli_error("out of memory for the record names");
            }
            e->n_contigs++;
        }
        e->tr.ops->close_records(reader);
    }
    bed_sort_contigs(e->contigs, e->n_contigs);
    for (size_t i = 1; i < e->n_contigs; i++)
        if (!strcmp(e->contigs[i].id, e->contigs[i - 1].id)) {
            const char *a = e->files[e->contigs[i - 1].file], *b = e->files[e->contigs[i].file];
            return a == b ? cli_error("%s: the record name %s comes twice; --regions needs each name "
                                      "once", a, e->contigs[i].id)
                          : cli_error("%s: the record %s is in %s too; --regions needs each record "
                                      "name once across the files", b, e->contigs[i].id, a);
        }
    return 0;
}

/* The BED file (bed.h), checked against the records; the output rows are its intervals, named
 * by their contigs. */
static int read_bed(embedder *e) {
    if (bed_read(e->bed_path, e->contigs, e->n_contigs, e->tr.ops->symbol, &e->bed)) return cli_fail();
    int rc = 0;
    for (size_t c = 0; c < e->n_contigs && !rc; c++) {
        size_t ni;
        if (add_name(e, e->contigs[c].id, &ni)) rc = cli_fail();
    }
    if (!rc && reserve_rows(e, e->bed.n)) rc = cli_fail();
    for (size_t i = 0; i < e->bed.n && !rc; i++)
        e->rows[i] = (row_info){e->bed.regions[i].contig, e->bed.regions[i].start, e->bed.regions[i].end};
    if (!rc) e->n_rows = e->bed.n;
    return rc;
}

/* ---- output --------------------------------------------------------------------------------- */

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* NPY version 1.0: magic, version, header length (uint16 LE), a Python dict literal padded with
 * spaces to a multiple of 64 bytes with its newline, then the data ('<f4', C order). */
static int write_npy(const char *path, const float *x, size_t n, int D) {
    char dict[256];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %d), }",
                       n, D);
    size_t total = (10 + (size_t)len + 1 + 63) / 64 * 64, hlen = total - 10;
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                              (unsigned char)(hlen >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f) return cli_error("%s: cannot write: %s", path, strerror(errno));
    int bad = fwrite(head, 1, 10, f) != 10 || fwrite(dict, 1, len, f) != (size_t)len;
    for (size_t i = 10 + len; i + 1 < total && !bad; i++) bad = fputc(' ', f) == EOF;
    if (!bad) bad = fputc('\n', f) == EOF;
    if (host_is_little_endian()) {
        if (!bad && n) bad = fwrite(x, sizeof(float), n * D, f) != n * D;
    } else {
        for (size_t i = 0; i < n * D && !bad; i++) {
            uint32_t b;
            memcpy(&b, &x[i], 4);
            unsigned char le[4] = {b & 0xff, (b >> 8) & 0xff, (b >> 16) & 0xff, b >> 24};
            bad = fwrite(le, 1, 4, f) != 4;
        }
    }
    if (!bad) bad = fflush(f) || fsync(fileno(f));
    int err = errno;
    if (fclose(f) && !bad) bad = 1, err = errno;
    return bad ? cli_error("%s: cannot write: %s", path, strerror(err)) : 0;
}

static int write_tsv(const embedder *e, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return cli_error("%s: cannot write: %s", path, strerror(errno));
    int regions = e->mode == MODE_REGIONS;
    fprintf(f, "index\tid\tstart\tend\tlength\tstrand%s\n", regions ? "\tname" : "");
    for (size_t i = 0; i < e->n_rows; i++) {
        const row_info *r = &e->rows[i];
        fprintf(f, "%zu\t%s\t%zu\t%zu\t%zu\t%s", i, e->names[r->name], r->start, r->end,
                r->end - r->start, e->both ? "both" : "forward");
        if (regions) fprintf(f, "\t%s", e->bed.regions[i].name ? e->bed.regions[i].name : ".");
        fputc('\n', f);
    }
    int bad = ferror(f) || fflush(f) || fsync(fileno(f));
    int err = errno;
    if (fclose(f) && !bad) bad = 1, err = errno;
    return bad ? cli_error("%s: cannot write: %s", path, strerror(err)) : 0;
}

/* PREFIX.npy or PREFIX.safetensors and PREFIX.tsv, through .tmp files renamed at the end: a
 * failure leaves neither (and older files of those names as they were). */
static int write_outputs(const embedder *e, const char *prefix, const char *run_path) {
    size_t n = strlen(prefix) + 32;
    char *data = malloc(n), *data_tmp = malloc(n), *tsv = malloc(n), *tsv_tmp = malloc(n);
    int rc = 0;
    if (!data || !data_tmp || !tsv || !tsv_tmp) rc = cli_error("out of memory");
    if (!rc) {
        snprintf(data, n, "%s.%s", prefix, e->format == FORMAT_NPY ? "npy" : "safetensors");
        snprintf(data_tmp, n, "%s.tmp", data);
        snprintf(tsv, n, "%s.tsv", prefix);
        snprintf(tsv_tmp, n, "%s.tmp", tsv);
        rc = write_tsv(e, tsv_tmp);
    }
    if (!rc && e->format == FORMAT_NPY) {
        rc = write_npy(data_tmp, e->out, e->n_rows, e->D);
        if (!rc && rename(data_tmp, data)) rc = cli_error("%s: cannot write: %s", data, strerror(errno));
        if (rc) remove(data_tmp);
    } else if (!rc) {
        char layer[32], window[48], d[16], count[32];
        snprintf(layer, sizeof layer, "%d", e->layer);
        snprintf(window, sizeof window, "%zu", e->window);
        snprintf(d, sizeof d, "%d", e->D);
        snprintf(count, sizeof count, "%zu", e->n_rows);
        const char *slash = strrchr(tsv, '/'), *meta[32];
        int k = 0;
#define META(key, value) (meta[k++] = "ssm.embed." key, meta[k++] = (value))
        META("model", run_path);
        META("layer", layer);
        META("pool", pool_names[e->pool]);
        META("segments", e->mode == MODE_RECORD ? "record" : e->mode == MODE_WINDOW ? "window" : "regions");
        if (e->mode == MODE_WINDOW) META("window", window);
        if (e->mode == MODE_REGIONS) META("regions", e->bed_path);
        META("context", e->alone ? "alone" : "record");
        META("strand", e->both ? "both" : "forward");
        META("count", count);
        META("d_model", d);
        META("ids", slash ? slash + 1 : tsv);
#undef META
        meta[k] = NULL;
        ssm_st_write_item item = {"embeddings", 2, {(int64_t)e->n_rows, e->D}, e->out};
        if (ssm_safetensors_write(data, &item, 1, meta)) rc = cli_fail();
    }
    if (!rc && rename(tsv_tmp, tsv)) rc = cli_error("%s: cannot write: %s", tsv, strerror(errno));
    if (rc && tsv_tmp) remove(tsv_tmp);
    if (!rc) {
        const ssm_config *c = &e->tr.model->config;
        char what[128];
        if (e->mode == MODE_WINDOW) snprintf(what, sizeof what, "window of %zu %ss", e->window, e->tr.ops->symbol);
        else snprintf(what, sizeof what, "%s", e->mode == MODE_REGIONS ? "region" : "record");
        cli_note("%zu embeddings of %d floats (layer %d of %d: %s; %s over each %s%s%s): %s and %s",
                 e->n_rows, e->D, e->layer, c->n_layer,
                 e->layer == c->n_layer ? "the final norm's output" : "a block's output",
                 pool_names[e->pool], what, e->alone && e->mode != MODE_RECORD ? " read alone" : "",
                 e->both ? ", both strands" : "", data, tsv);
    }
    free(data);
    free(data_tmp);
    free(tsv);
    free(tsv_tmp);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void) {
    printf("Usage: ssm-embed RUN_DIR_OR_CHECKPOINT FILE|-... --output PREFIX [options]\n"
           "\n"
           "Embeddings from a trained model's hidden states: one vector of d_model floats per record\n"
           "of each FILE (FASTA/FASTQ, text, audio: whatever the model's task reads; - is stdin), per\n"
           "window of N symbols (--window) or per BED interval (--regions). Symbol i's hidden state is\n"
           "the layer's output where symbol i is the input (it has seen the record up to and with\n"
           "symbol i); an embedding pools those states over the segment's symbols (N bases included).\n"
           "Long records run --chunk symbols at a time with the recurrent state carried, as\n"
           "ssm-score does: the states equal one pass over the whole record. Runs on the CPU.\n"
           "\n"
           "  -o, --output PREFIX  write PREFIX.npy (or PREFIX.safetensors) and PREFIX.tsv (required;\n"
           "                       a PREFIX ending in the format's extension loses it)\n"
           "  --layer N            0..n_layer-1: the residual stream after block N; n_layer or -1\n"
           "                       (the default): the final norm's output, what the LM head reads\n"
           "  --pool P             mean (default), max (per dimension) or last (the state after the\n"
           "                       segment's last symbol, which has seen the whole segment)\n"
           "  --window N           one embedding per window of N symbols of each record (the last\n"
           "                       window may be shorter) instead of one per record\n"
           "  --regions FILE.bed   one embedding per BED interval (chrom start end [name]; 0-based,\n"
           "                       half-open; further columns ignored), in the BED's order; chrom\n"
           "                       names a record of the FILEs (not stdin); an unknown record or an\n"
           "                       interval past its record's end is an error (exit 1), found before\n"
           "                       anything is computed\n"
           "  --context C          record (default): a window or region is read inside its record\n"
           "                       (its hidden states have seen everything before it); alone: each\n"
           "                       window or region is read as a record of its own (BOS, zero state)\n"
           "  --strand S           forward (default) or both: the mean of the forward strand's and the\n"
           "                       reverse complement's embeddings of the same bases (strand-aware\n"
           "                       tasks: dna); with last, the reverse strand's last symbol is the\n"
           "                       segment's first base\n"
           "  --format F           npy (default: NPY 1.0, '<f4', shape (n, d_model)) or safetensors\n"
           "                       (one F32 tensor 'embeddings' (n, d_model) and ssm.embed.* metadata)\n"
           "  --chunk N            symbols per forward pass (default 4096); the state is carried\n"
           "  --batch N            sequences run side by side (default 8)\n"
           "  --threads N          CPU threads (default: all cores)\n"
           "  --device DEV         auto or cpu: the CPU (the CUDA backend does not keep the hidden\n"
           "                       states, so cuda is refused)\n"
           "  --quiet              no progress on stderr\n"
           "\n"
           "PREFIX.tsv has one line per embedding (row i of the array), after a header:\n"
           "  index id start end length strand [name]\n"
           "id is the record's (FILE:ID with several files, as ssm-score names them; the BED's chrom\n"
           "with --regions), start and end the segment (0-based, half-open), strand forward or both,\n"
           "name the BED's 4th column (. when absent; --regions only). Both files are written as\n"
           "FILE.tmp and renamed when everything succeeded.\n"
           "\nExamples (run from the source tree):\n"
           "  ssm-embed runs/try data/ecoli/held_out_50kb.fa --window 5000 --output emb\n");
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Each file once (its records would come twice under the same ids), stdin at most once. */
static int check_files(char **files, int n) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(files[i], files[j]))
                return strcmp(files[i], "-") ? cli_usage("%s: given twice", files[i])
                                             : cli_usage("- (stdin) can be read only once");
    return 0;
}

/* With several files: open each one before the run, so that a missing third file stops it
 * before anything is computed. */
static int check_readable(const embedder *e) {
    for (int i = 0; i < e->n_files; i++) {
        const char *p = e->files[i];
        if (!strcmp(p, "-")) continue;
        void *reader;
        ssm_status st = e->tr.ops->open_records(e->tr.task, p, &reader);
        if (st) {
            about_file(st, p);
            return cli_fail();
        }
        e->tr.ops->close_records(reader);
        if (strpbrk(p, "*?[")) continue;
        FILE *f = fopen(p, "rb");
        if (!f) return cli_error("%s: cannot open: %s", p, strerror(errno));
        fclose(f);
    }
    return 0;
}

/* A folder that cannot take PREFIX.tsv is found before the run, not after it. */
static int probe_output(const char *prefix) {
    size_t n = strlen(prefix) + 16;
    char *tmp = malloc(n);
    if (!tmp) return cli_error("out of memory");
    snprintf(tmp, n, "%s.tsv.tmp", prefix);
    FILE *f = fopen(tmp, "w");
    int rc = f ? 0 : cli_error("%s: cannot write: %s", tmp, strerror(errno));
    if (f) {
        fclose(f);
        remove(tmp);
    }
    free(tmp);
    return rc;
}

static void embedder_free(embedder *e) {
    if (e->reader) e->tr.ops->close_records(e->reader);
    for (size_t i = 0; i < e->q_n; i++) job_free(&e->queue[(e->q_head + i) % e->q_cap]);
    free(e->queue);
    for (size_t i = 0; i < e->n_names; i++) free(e->names[i]);
    free(e->names);
    for (size_t i = 0; i < e->n_contigs; i++) free(e->contigs[i].id);
    free(e->contigs);
    bed_set_free(&e->bed);
    free(e->out);
    free(e->rows);
    cli_trained_free(&e->tr);
}

int main(int argc, char **argv) {
    cli_init(argv[0]);
    static struct option opts[] = {
        {"output", required_argument, 0, 'o'},  {"layer", required_argument, 0, 'l'},
        {"pool", required_argument, 0, 'p'},    {"window", required_argument, 0, 'w'},
        {"regions", required_argument, 0, 'r'}, {"context", required_argument, 0, 'c'},
        {"strand", required_argument, 0, 's'},  {"format", required_argument, 0, 'f'},
        {"chunk", required_argument, 0, 'C'},   {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"device", required_argument, 0, 'd'},
        {"quiet", no_argument, 0, 'q'},         {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},       {0, 0, 0, 0}};
    embedder e = {.B = 8, .C = 4096, .pool = POOL_MEAN, .mode = MODE_RECORD, .format = FORMAT_NPY};
    const char *out_prefix = NULL, *device = "auto", *layer_text = NULL;
    long v, threads = 0;
    for (int o; (o = getopt_long(argc, argv, "o:", opts, NULL)) != -1;) {
        switch (o) {
        case 'o': out_prefix = optarg; break;
        case 'l':
            if (parse_int(optarg, -1, SSM_MAX_LAYERS, &v))
                return cli_usage("--layer takes a layer number (0..n_layer, or -1 for the last), not '%s'", optarg);
            layer_text = optarg;
            e.layer = (int)v;
            break;
        case 'p':
            if (!strcmp(optarg, "mean")) e.pool = POOL_MEAN;
            else if (!strcmp(optarg, "max")) e.pool = POOL_MAX;
            else if (!strcmp(optarg, "last")) e.pool = POOL_LAST;
            else return cli_usage("--pool takes mean, max or last, not '%s'", optarg);
            break;
        case 'w':
            if (parse_int(optarg, 1, 1L << 40, &v))
                return cli_usage("--window takes a positive integer, not '%s'", optarg);
            if (e.mode == MODE_REGIONS) return cli_usage("--window and --regions do not go together");
            e.mode = MODE_WINDOW;
            e.window = (size_t)v;
            break;
        case 'r':
            if (e.mode == MODE_WINDOW) return cli_usage("--window and --regions do not go together");
            if (e.bed_path) return cli_usage("--regions is given twice (put all the intervals in one BED file)");
            e.mode = MODE_REGIONS;
            e.bed_path = optarg;
            break;
        case 'c':
            if (!strcmp(optarg, "alone")) e.alone = 1;
            else if (strcmp(optarg, "record")) return cli_usage("--context takes record or alone, not '%s'", optarg);
            break;
        case 's':
            if (!strcmp(optarg, "both")) e.both = 1;
            else if (strcmp(optarg, "forward")) return cli_usage("--strand takes forward or both, not '%s'", optarg);
            break;
        case 'f':
            if (!strcmp(optarg, "npy")) e.format = FORMAT_NPY;
            else if (!strcmp(optarg, "safetensors")) e.format = FORMAT_SAFETENSORS;
            else return cli_usage("--format takes npy or safetensors, not '%s'", optarg);
            break;
        case 'C':
            if (parse_int(optarg, 1, 1 << 24, &v))
                return cli_usage("--chunk takes an integer in [1, 16777216], not '%s'", optarg);
            e.C = (int)v;
            break;
        case 'b':
            if (parse_int(optarg, 1, 4096, &v))
                return cli_usage("--batch takes an integer in [1, 4096], not '%s'", optarg);
            e.B = (int)v;
            break;
        case 't':
            if (parse_int(optarg, 0, 1 << 16, &threads))
                return cli_usage("--threads takes an integer >= 0, not '%s'", optarg);
            break;
        case 'd': device = optarg; break;
        case 'q': cli_quiet = 1; break;
        case 'h': usage(); return 0;
        case 'V': printf("ssm-embed %s\n", SSM_VERSION); return 0;
        default: return cli_usage("unknown option");
        }
    }
    if (argc - optind < 2) return cli_usage("need a run directory (or checkpoint) and files to embed");
    if (!out_prefix || !*out_prefix) return cli_usage("need --output PREFIX (PREFIX.npy and PREFIX.tsv are written)");
    e.files = argv + optind + 1;
    e.n_files = argc - optind - 1;
    int rc = check_files(e.files, e.n_files);
    if (rc) return rc;
    for (int i = 0; i < e.n_files && e.mode == MODE_REGIONS; i++)
        if (!strcmp(e.files[i], "-"))
            return cli_usage("--regions reads the files twice (the regions are checked first), so "
                             "stdin (-) cannot be one of them");
    /* PREFIX.npy given for PREFIX */
    char *prefix = strdup(out_prefix);
    if (!prefix) return cli_error("out of memory");
    const char *ext = e.format == FORMAT_NPY ? ".npy" : ".safetensors";
    size_t pl = strlen(prefix), el = strlen(ext);
    if (pl > el && !strcmp(prefix + pl - el, ext)) prefix[pl - el] = 0;

    int dev;
    if (cli_device(device, &dev, NULL)) {
        free(prefix);
        return cli_fail();
    }
    if (dev >= 0 && strcmp(device, "auto")) {
        free(prefix);
        return cli_error("--device %s: the CUDA backend does not keep the hidden states; ssm-embed "
                         "runs on the CPU (--device cpu)", device);
    }
    /* auto: the CPU, the one backend that keeps the hidden states (no note: nothing to choose) */
    ssm_set_threads((int)threads);
    rc = CLI_EXIT_INPUT;
    if (cli_load_trained(argv[optind], &e.tr)) {
        rc = cli_fail();
        goto done;
    }
    const ssm_config *c = &e.tr.model->config;
    e.D = c->d_model;
    if (!layer_text || e.layer == -1) e.layer = c->n_layer;
    if (e.layer > c->n_layer) {
        rc = cli_usage("--layer %s: the model has %d layers: 0..%d (the residual stream after that "
                       "block) or %d / -1 (the final norm's output, the default)", layer_text,
                       c->n_layer, c->n_layer - 1, c->n_layer);
        goto done;
    }
    if (!e.tr.ops->open_records) {
        rc = cli_error("the task '%s' cannot read files of records", e.tr.ops->name);
        goto done;
    }
    if (e.both && !e.tr.ops->reverse_complement) {
        rc = cli_error("--strand both: the task '%s' has no strands (the dna task has)", e.tr.ops->name);
        goto done;
    }
    if (e.mode == MODE_REGIONS) {
        if (read_contigs(&e) || read_bed(&e)) goto done;
    } else if (e.n_files > 1 && check_readable(&e)) {
        goto done;
    }
    if ((rc = probe_output(prefix)) || (rc = run(&e))) goto done;
    rc = write_outputs(&e, prefix, argv[optind]);
done:
    embedder_free(&e);
    free(prefix);
    return rc;
}
