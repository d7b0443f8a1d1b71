/* ssm-score: score the records of a file with a trained model.
 *
 *   ssm-score RUN_DIR_OR_CHECKPOINT FILE|- [options] > scores.tsv
 *
 * Records longer than the window are scored exactly: the recurrent state (conv and SSM) is
 * carried from window to window, so the result equals one pass over the whole record. Records
 * are scored `--batch` at a time, each in its own row of the batch; the output keeps the input
 * order, and a record's scores do not depend on the batch size or thread count. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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

typedef struct scorer {
    cli_trained tr;
    int B, W, V_task, entropy;
    FILE *out, *bed;
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
    if (sc->bed)
        for (size_t i = 0; i < f->length; i++) {
            /* with both strands: the mean of the forward value and the reverse strand's value
             * for the same base (position length - 1 - i of the reverse complement) */
            float v = f->per_symbol[i];
            if (sc->both) v = 0.5f * (v + s->per_symbol[f->length - 1 - i]);
            if (!isnan(v)) fprintf(sc->bed, "%s\t%zu\t%zu\t%.5f\n", f->id, i, i + 1, v);
        }
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

static ssm_status take_record(scorer *sc, void *reader, slot *s, int *eof) {
    if (sc->pending_rc.active) { /* the reverse strand of the record taken last */
        *s = sc->pending_rc;
        memset(&sc->pending_rc, 0, sizeof sc->pending_rc);
        s->seq = sc->next_seq++;
        return SSM_OK;
    }
    ssm_record rec;
    ssm_status st = sc->tr.ops->next_record(reader, &rec, eof);
    if (st || *eof) return st;
    for (int strand = 0; strand <= sc->both; strand++) {
        slot *d = strand ? &sc->pending_rc : s;
        memset(d, 0, sizeof *d);
        d->active = 1;
        d->strand = strand;
        d->seq = strand ? 0 : sc->next_seq++;
        d->id = strdup(rec.id ? rec.id : "");
        d->length = rec.length;
        d->tokens = malloc((rec.length + 1) * sizeof(int32_t));
        d->seconds = rec.seconds;
        int per = sc->bed || sc->window_s > 0;
        d->per_symbol = per ? malloc((rec.length + 1) * sizeof(float)) : NULL;
        if (rec.scored) d->scored = malloc(rec.length + 1);
        if (!d->id || !d->tokens || (per && !d->per_symbol) || (rec.scored && !d->scored))
            return ssm_set_error(SSM_ERR_NOMEM, "out of memory for record %s (%zu symbols)", rec.id, rec.length);
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

/* Copy row `from` of one state into row `to` of another (every layer's conv and SSM state). */
static void state_copy_row(ssm_state *dst, int to, const ssm_state *src, int from) {
    size_t E = src->d_inner, K = src->d_conv, N = src->d_state;
    for (int l = 0; l < src->n_layer; l++) {
        memcpy(dst->conv + ((size_t)l * dst->batch + to) * E * K,
               src->conv + ((size_t)l * src->batch + from) * E * K, E * K * sizeof(float));
        memcpy(dst->ssm + ((size_t)l * dst->batch + to) * E * N,
               src->ssm + ((size_t)l * src->batch + from) * E * N, E * N * sizeof(float));
    }
}

static int run(scorer *sc, const char *path) {
    void *reader;
    ssm_model *m = sc->tr.model;
    int B = sc->B, W = sc->W;
    if (sc->tr.ops->open_records(sc->tr.task, path, &reader)) return cli_fail();
    int rc = CLI_EXIT_INPUT;
    size_t BW = (size_t)B * W;
    int32_t *tokens = malloc(BW * sizeof(int32_t)), *targets = malloc(BW * sizeof(int32_t));
    /* per position: log p(target), and the entropy when the bedGraph or windows show it */
    int want_h = sc->entropy && (sc->bed || sc->window_s > 0);
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
                if (take_record(sc, reader, &sc->slots[b], &eof)) goto fail;
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
            state_copy_row(batch_st[k - 1], r, slot_st[rows[r]], 0);
        }
        /* the host copy of the batch state is the current one (rows were just copied in) */
        if (ssm_forward_score(m, tokens, targets, k, W, batch_st[k - 1], logp, ent) ||
            ssm_state_to_host(batch_st[k - 1]))
            goto fail;
        for (int r = 0; r < k; r++) {
            slot *s = &sc->slots[rows[r]];
            state_copy_row(slot_st[rows[r]], 0, batch_st[k - 1], r);
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
        char extra[96], r[32];
        snprintf(extra, sizeof extra, "%s %ss/s, %ld records", cli_si(total / (cli_now() - t0), r, sizeof r),
                 sc->symbol, sc->next_out);
        cli_progress_update(&pr, (int64_t)total, extra);
    }
    flush_done(sc);
    cli_progress_end(&pr);
    rc = 0;
    goto done;
fail:
    rc = cli_fail();
done:
    sc->tr.ops->close_records(reader);
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

static void usage(void) {
    printf("usage: ssm-score RUN_DIR_OR_CHECKPOINT FILE|- [options]\n"
           "\n"
           "Score every record of FILE (FASTA/FASTQ, text, audio: whatever the model's task reads)\n"
           "and write one TSV line per record on stdout:\n"
           "  id length n_scored sum_logp mean_logp bits_per_<symbol> perplexity\n"
           "(natural logs; unscored symbols such as N bases are not counted).\n"
           "\n"
           "  --bedgraph FILE   per-symbol scores as bedGraph (0-based, half-open)\n"
           "  --per-base KIND   logp (default) or entropy (the predictive entropy, nats)\n"
           "  --per-window S    audio: one line per S seconds of each file (id, start_s, end_s,\n"
           "                    n_scored, bits_per_sample) instead of one per file\n"
           "  --strand WHICH    forward (default) or both: also score the reverse complement\n"
           "                    (strand-aware tasks: dna); the line then has sum_logp_forward,\n"
           "                    sum_logp_reverse, and the other columns over both strands; the\n"
           "                    bedGraph has the mean of the two strands' values per base\n"
           "  --output FILE     the TSV to FILE instead of stdout\n"
           "  --window N        symbols per forward pass (default 4096); the state is carried\n"
           "  --batch N         records scored side by side (default 8)\n"
           "  --threads N       CPU threads (default: all cores)\n"
           "  --device DEV      auto, cpu, cuda or cuda:N\n"
           "  --quiet           no progress on stderr\n");
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
        {0, 0, 0, 0}};
    scorer sc = {.B = 8, .W = 4096, .out = stdout};
    const char *bed_path = NULL, *out_path = NULL, *device = "auto";
    int threads = 0;
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end;
        switch (o) {
        case 'g': bed_path = optarg; break;
        case 'p':
            if (!strcmp(optarg, "entropy")) sc.entropy = 1;
            else if (strcmp(optarg, "logp")) return cli_usage("--per-base takes logp or entropy, not '%s'", optarg);
            break;
        case 'o': out_path = optarg; break;
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
    if (argc - optind != 2) return cli_usage("need a run directory (or checkpoint) and a file to score");
    int dev;
    if (cli_device(device, &dev, NULL)) return cli_fail();
    ssm_set_threads(threads);
    if (cli_load_trained(argv[optind], &sc.tr)) return cli_fail();
    int rc = CLI_EXIT_INPUT;
    char out_tmp[4200] = "", bed_tmp[4200] = "";
    if (dev >= 0 && ssm_model_use_device(sc.tr.model, NULL, dev)) {
        rc = cli_fail();
        goto done;
    }
    if (!sc.tr.ops->open_records) {
        rc = cli_error("the task '%s' cannot score files", sc.tr.ops->name);
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
    /* outputs go to FILE.tmp and are renamed only when the whole run succeeded */
    if (out_path && strcmp(out_path, "-")) {
        snprintf(out_tmp, sizeof out_tmp, "%s.tmp", out_path);
        if (!(sc.out = fopen(out_tmp, "w"))) { rc = cli_error("%s: cannot write", out_tmp); goto done; }
    }
    if (bed_path) {
        snprintf(bed_tmp, sizeof bed_tmp, "%s.tmp", bed_path);
        if (!(sc.bed = fopen(bed_tmp, "w"))) { rc = cli_error("%s: cannot write", bed_tmp); goto done; }
    }
    sc.slots = calloc(sc.B, sizeof(slot));
    rc = run(&sc, argv[optind + 1]);
    if (sc.bed && (fclose(sc.bed) || (rc == 0 && rename(bed_tmp, bed_path)))) rc = cli_error("%s: cannot write", bed_path);
    sc.bed = NULL;
    if (sc.out != stdout && (fclose(sc.out) || (rc == 0 && rename(out_tmp, out_path)))) rc = cli_error("%s: cannot write", out_path);
    sc.out = stdout;
    if (rc) { /* nothing half-written under the real names */
        if (*out_tmp) remove(out_tmp);
        if (*bed_tmp) remove(bed_tmp);
    }
done:
    if (sc.bed) fclose(sc.bed);
    if (sc.out != stdout) fclose(sc.out);
    for (int b = 0; sc.slots && b < sc.B; b++) slot_free(&sc.slots[b]);
    for (int i = 0; i < sc.n_done; i++) slot_free(&sc.done[i]);
    slot_free(&sc.pending_rc);
    slot_free(&sc.held);
    free(sc.slots);
    free(sc.done);
    cli_trained_free(&sc.tr);
    return rc;
}
