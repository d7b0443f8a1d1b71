/* vcf_score.c: ssm-score --vcf (see vcf_score.h and docs/genomics.md).
 *
 * What a variant's score is
 * -------------------------
 * Each ALT allele is first reduced to its minimal form against REF: common trailing bases,
 * then common leading bases (the VCF padding base of an indel) are dropped, leaving REF' of m
 * bases at position p (0-based) and ALT' of n bases (either may be empty, not both). With
 * LEFT and RIGHT from --flank and the contig's length C:
 *
 *   forward strand: the model reads BOS, then the cl = min(LEFT, p) reference bases before p
 *     (the left context), then the allele, then the f = min(RIGHT, C - p - m) reference bases
 *     after REF' (the right flank: the same reference positions for both alleles).
 *   reverse strand: the same on the reverse complement: BOS, the reverse complement of the
 *     min(LEFT, C - p - m) bases after REF' (the context as the reverse strand reads it), the
 *     reverse-complemented allele, then the reverse complement of the min(RIGHT, p) bases
 *     before p. So the reverse score of a variant is the forward score of the mirrored variant
 *     on the reverse-complemented contig.
 *
 *   score(allele) = sum over the allele's own bases of (log p(base) + H)
 *                 + sum over the right flank of log p(base)
 *   SSM_LLR_FWD = score(ALT) - score(REF) on the forward strand, SSM_LLR_RC on the reverse
 *   strand, SSM_LLR their mean (nats).
 *
 * H is the entropy of the model's prediction at that position, so that an allele base adds its
 * log-probability less the log-probability expected there (zero on average over bases drawn from
 * the model): an insertion is not penalised, nor a deletion rewarded, merely for changing the
 * number of bases predicted. For an SNV (one base each, the same context, the same H) this is
 * exactly log p(ALT) - log p(REF) over the window. Context bases add nothing (the same for both
 * alleles). N bases (and masked lowercase ones with task.mask_lowercase) are read but not
 * scored.
 *
 * How the work is shared
 * ----------------------
 * Records are read in chunks of CHUNK. A site is a (strand, contig, position) whose left context
 * is scored once, with a carried state: ssm_forward_score over the context, its final state
 * forked (ssm_state_copy_row) into one row per allele scored from there: the REF allele (once
 * per site and REF' length) and every ALT allele of every record at that site. Sites of the
 * same context length are batched (B contexts per forward), then their allele rows (B rows per
 * forward, sorted by length so that a batch pads little). A window longer than --window is run
 * in pieces, the state carried. Sharing a state is exact only where the context is the same
 * sequence, so each variant's score depends on its own window only, never on the other
 * variants of the file or on the batch.
 *
 * Nearby variants share one pass (--context-step S)
 * -------------------------------------------------
 * With S > 0 a context starts at a multiple of S bases in the strand's own coordinates
 * (position t of the strand: p on the forward strand, C - p - m on the reverse one):
 * start = max(0, floor((t - LEFT) / S) * S), so it holds LEFT to LEFT + S - 1 bases. The sites of
 * one strand and contig whose contexts start at the same base form a chain: their contexts are
 * prefixes of one another, so the chain is read once, its state snapshotted at each site (the
 * site's row of the bank state), instead of once per site. Up to B chains run side by side, each
 * advancing to its next site; a round advances all of them by the distance to the nearest site.
 * With S = 0 (the default) every context holds exactly min(LEFT, t) bases and a chain is a site.
 */
#include "vcf_score.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <htslib/hts.h>
#include <htslib/hts_log.h>
#include <htslib/khash.h>
#include <htslib/tbx.h>
#include <htslib/vcf.h>

#include "../tasks/dna/dna.h"

KHASH_MAP_INIT_STR(vcf_contig, int)

enum { CHUNK = 4096 };

enum { ST_SCORED = 0, ST_MISMATCH, ST_SYMBOLIC, ST_NO_CONTIG, ST_NO_ALT };

static const char *const INFO_FWD = "SSM_LLR_FWD", *const INFO_RC = "SSM_LLR_RC",
                  *const INFO_LLR = "SSM_LLR";
static const char *const FLT_MISMATCH = "SSM_REF_MISMATCH", *const FLT_SYMBOLIC = "SSM_SYMBOLIC",
                  *const FLT_NO_CONTIG = "SSM_NO_CONTIG";

/* ---- the reference ------------------------------------------------------------------------ */

typedef struct reference {
    fasta_set *set;
    khash_t(vcf_contig) *names; /* contig name -> record of the set (keys owned by the set) */
} reference;

static void reference_close(reference *r) {
    if (r->names) kh_destroy(vcf_contig, r->names);
    fasta_set_free(r->set);
    memset(r, 0, sizeof *r);
}

/* Open the FASTA through the loader's faidx access (an index is built beside it when missing,
 * or kept in memory when the folder is read-only; a plain gzip file is held in memory). */
static ssm_status reference_open(const char *path, reference *r) {
    memset(r, 0, sizeof *r);
    fasta_set_options o = fasta_set_options_default();
    o.valid_fraction = 0;
    const char *files[1] = {path};
    ssm_status s = fasta_set_open(files, 1, NULL, 0, &o, &r->set);
    if (s) return s;
    if (!(r->names = kh_init(vcf_contig))) {
        reference_close(r);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < fasta_set_n_records(r->set); i++) {
        int absent;
        khint_t k = kh_put(vcf_contig, r->names, fasta_set_record(r->set, i)->name, &absent);
        if (absent < 0) {
            reference_close(r);
            return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        }
        kh_val(r->names, k) = i;
    }
    return SSM_OK;
}

static int reference_find(const reference *r, const char *name) {
    khint_t k = kh_get(vcf_contig, r->names, name);
    return k == kh_end(r->names) ? -1 : kh_val(r->names, k);
}

/* ---- a chunk of records and what is scored ------------------------------------------------- */

typedef struct vrec {
    bcf1_t *b;
    int status;
    int contig;        /* record of the reference, or -1 */
    int64_t clen;      /* its length */
    char *win;         /* reference bases [lo, hi) around the record (its windows need no more) */
    int64_t lo, hi;
    int first_job, n_jobs;
} vrec;

typedef struct vjob {   /* one ALT allele to score */
    int rec, alt;       /* the record (in the chunk) and the allele's index (1..) */
    int64_t p;          /* start of REF' */
    int m, n;           /* lengths of REF' and ALT' */
    char *ref, *alt_s;  /* REF' and ALT', uppercase, NUL-terminated (one allocation at ref) */
    int site[2];        /* the site of each strand */
    int row[2][2];      /* [strand][0 REF, 1 ALT]: its row, or -1 when nothing is scored */
} vjob;

typedef struct vsite {  /* a left context scored once */
    int strand, rec;    /* rec: a record whose window holds the bases */
    int64_t anchor;     /* forward: p (the context ends before it); reverse: p + m */
    int len;            /* context bases */
    int64_t start;      /* where the context starts, in the strand's coordinates (its chain) */
    int rank;           /* position in the processing order */
    int state_row;      /* its row of the context state, while its group runs */
    int first_ref;      /* the site's REF rows: a list through vrow.next_ref */
} vsite;

typedef struct vrow {   /* an allele and its flank, scored from its site's state */
    int site, job, strand, which; /* which: 0 REF, 1 ALT */
    int own, flank;     /* bases of the allele, of the flank; targets = own + flank */
    int next_ref;
    double sum;
} vrow;

typedef struct counts {
    long records, scored_records, alleles, mismatch, symbolic_alleles, symbolic_records,
        no_contig, no_alt;
    char first_mismatch[512];
    char missing[5][128]; /* the first contigs missing from the reference */
    int n_missing;
} counts;

typedef struct vcf_run {
    const vcf_options *opt;
    cli_trained *tr;
    ssm_model *model;
    int mask_lowercase;
    reference ref;
    htsFile *in, *out;
    bcf_hdr_t *hdr;
    int out_kind;           /* 0 VCF text, 1 bgzip VCF + .tbi, 2 BCF + .csi */
    int header_written, nhrec_written;
    char out_tmp[4200], idx_path[4200], idx_tmp[4300];
    /* the chunk */
    vrec *recs;
    int n_recs;
    vjob *jobs;
    int n_jobs, cap_jobs;
    vsite *sites;
    int n_sites, cap_sites;
    vrow *rows;
    int n_rows, cap_rows;
    int *order;             /* sites in processing order: chain after chain, each by length */
    int *chain;             /* chain c is order[chain[c] .. chain[c + 1]) */
    int n_chains;
    int *row_order;
    /* forward buffers and states */
    int B, W;
    int32_t *tokens, *targets;
    float *logp, *ent;
    float *step_logits;     /* (B, V): the chains' step mode */
    ssm_state *ctx_full, *ctx_part, *row_full, *row_part, *chain_full, *chain_part;
    /* sortedness, for the index */
    int last_rid;
    int64_t last_pos;
    char *seen_rid;
    int cap_seen;
    counts n;
    cli_progress pr;
    double t0;
    long done_jobs, done_records; /* scored and written, for the progress line */
} vcf_run;

static const char *shown(const char *path) { return strcmp(path, "-") ? path : "stdin"; }

/* htslib reports on stderr; the messages here say it once, naming the file */
static enum htsLogLevel quiet(void) {
    enum htsLogLevel level = hts_get_log_level();
    hts_set_log_level(HTS_LOG_OFF);
    return level;
}

static int grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap) return 0;
    int c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* ---- tokens ------------------------------------------------------------------------------- */

static int32_t comp_token(int32_t t) {
    return t >= DNA_TOKEN_A && t <= DNA_TOKEN_T ? DNA_TOKEN_A + DNA_TOKEN_T - t : t;
}

static inline char ref_at(const vrec *r, int64_t pos) { return r->win[pos - r->lo]; }

/* The context's tokens: j = 0 is BOS, then the bases in reading order; j = len is the last one,
 * which is the first input of the site's rows. */
static int32_t context_token(const vcf_run *v, const vsite *s, int j) {
    if (j == 0) return DNA_TOKEN_BOS;
    const vrec *r = &v->recs[s->rec];
    if (s->strand == 0) return dna_token((unsigned char)ref_at(r, s->anchor - s->len + j - 1));
    return comp_token(dna_token((unsigned char)ref_at(r, s->anchor + s->len - j)));
}

/* Target i of a row: its token and whether it is scored. */
static int32_t row_target(const vcf_run *v, const vrow *w, int i, int *scored) {
    const vjob *j = &v->jobs[w->job];
    const vrec *r = &v->recs[j->rec];
    int c;
    int32_t t;
    if (i < w->own) {
        const char *allele = w->which ? j->alt_s : j->ref;
        c = (unsigned char)(w->strand ? allele[w->own - 1 - i] : allele[i]);
        t = dna_token(c);
        *scored = dna_scored(c, 0); /* the alleles are uppercase: always scored unless N */
    } else {
        int64_t pos = w->strand ? j->p - 1 - (i - w->own) : j->p + j->m + (i - w->own);
        c = (unsigned char)ref_at(r, pos);
        t = dna_token(c);
        *scored = dna_scored(c, v->mask_lowercase);
    }
    return w->strand ? comp_token(t) : t;
}

/* ---- forward passes ----------------------------------------------------------------------- */

static ssm_status batch_state(vcf_run *v, ssm_state **full, ssm_state **part, int k, ssm_state **out) {
    ssm_state **slot = k == v->B ? full : part;
    if (*slot && ssm_state_batch(*slot) != k) {
        ssm_state_free(*slot);
        *slot = NULL;
    }
    ssm_status s = *slot ? SSM_OK : ssm_state_create(&v->model->config, k, slot);
    if (s) return s;
    ssm_state_reset(*slot); /* zeros on the host: the host copy is the current one */
    *out = *slot;
    return SSM_OK;
}

/* Rounds of at most this many positions run in step mode (a parallel forward costs more to
 * set up than a few steps) */
enum { CHAIN_STEP_MAX = 16 };

/* Read the chains c0..c1 side by side (one row each) and snapshot each one's state at each of
 * its sites into *bank, one row per site (sites order[chain[c0] .. chain[c1])). */
static ssm_status run_chains(vcf_run *v, int c0, int c1, ssm_state **bank) {
    int first = v->chain[c0], k = v->chain[c1] - first, nc = c1 - c0;
    ssm_state *run;
    ssm_status s = batch_state(v, &v->ctx_full, &v->ctx_part, k, bank);
    if (!s) s = batch_state(v, &v->chain_full, &v->chain_part, nc, &run);
    if (s) return s;
    int *next = malloc((size_t)nc * sizeof(int)); /* each chain's next site, in order[] */
    if (!next) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    for (int c = 0; c < nc; c++) next[c] = v->chain[c0 + c];
    int pos = 0; /* context tokens read so far by every chain (BOS is token 0) */
    for (;;) {
        /* snapshot the chains that have reached a site; the distance to the nearest next one */
        int d = -1, synced = 0;
        for (int c = 0; c < nc; c++) {
            for (; next[c] < v->chain[c0 + c + 1]; next[c]++) {
                vsite *site = &v->sites[v->order[next[c]]];
                if (site->len > pos) break;
                if (!synced && pos > 0 && (s = ssm_state_to_host(run))) goto done;
                synced = 1;
                site->state_row = next[c] - first;
                if ((s = ssm_state_copy_row(*bank, site->state_row, run, c))) goto done;
            }
            if (next[c] < v->chain[c0 + c + 1]) {
                int left = v->sites[v->order[next[c]]].len - pos;
                if (d < 0 || left < d) d = left;
            }
        }
        if (d < 0) break;
        int L = d < v->W ? d : v->W;
        for (int c = 0; c < nc; c++) {
            int done_chain = next[c] >= v->chain[c0 + c + 1];
            const vsite *site = done_chain ? NULL : &v->sites[v->order[next[c]]];
            for (int w = 0; w < L; w++) {
                /* a chain that is done rides along on padding: its state is not used again */
                v->tokens[(size_t)c * L + w] = site ? context_token(v, site, pos + w) : DNA_TOKEN_PAD;
                v->targets[(size_t)c * L + w] = -1;
            }
        }
        if (L > CHAIN_STEP_MAX) s = ssm_forward_score(v->model, v->tokens, v->targets, nc, L, run, v->logp, NULL);
        for (int w = 0; L <= CHAIN_STEP_MAX && w < L && !s; w++) { /* a few positions: step mode */
            for (int c = 0; c < nc; c++) v->targets[c] = v->tokens[(size_t)c * L + w];
            s = ssm_step(v->model, run, v->targets, v->step_logits);
        }
        if (s) goto done;
        pos += L;
    }
    s = ssm_state_to_host(*bank); /* the rows are forked from the host copy */
done:
    free(next);
    return s;
}

/* Score the rows idx[0..k) (sorted by length), each from its site's row of ctx. */
static ssm_status run_rows(vcf_run *v, const int *idx, int k, ssm_state *ctx) {
    ssm_state *st;
    ssm_status s = batch_state(v, &v->row_full, &v->row_part, k, &st);
    if (s) return s;
    int longest = 0;
    for (int r = 0; r < k; r++) {
        vrow *w = &v->rows[idx[r]];
        if (w->own + w->flank > longest) longest = w->own + w->flank;
        w->sum = 0;
        if ((s = ssm_state_copy_row(st, r, ctx, v->sites[w->site].state_row))) return s;
    }
    for (int a = 0; a < longest; a += v->W) {
        int L = longest - a < v->W ? longest - a : v->W;
        for (int r = 0; r < k; r++) {
            const vrow *w = &v->rows[idx[r]];
            int len = w->own + w->flank;
            int32_t *tk = v->tokens + (size_t)r * L, *tg = v->targets + (size_t)r * L;
            for (int x = 0; x < L; x++) {
                int i = a + x, sc;
                if (i >= len) {
                    tk[x] = DNA_TOKEN_PAD, tg[x] = -1;
                    continue;
                }
                int32_t t = row_target(v, w, i, &sc);
                tg[x] = sc ? t : -1;
                if (i == 0) tk[x] = context_token(v, &v->sites[w->site], v->sites[w->site].len);
                else tk[x] = row_target(v, w, i - 1, &sc);
            }
        }
        if ((s = ssm_forward_score(v->model, v->tokens, v->targets, k, L, st, v->logp, v->ent))) return s;
        for (int r = 0; r < k; r++) {
            vrow *w = &v->rows[idx[r]];
            int len = w->own + w->flank;
            const float *lp = v->logp + (size_t)r * L, *h = v->ent + (size_t)r * L;
            double sum = 0; /* in one fixed order: the same for any batch */
            for (int x = 0; x < L && a + x < len; x++) {
                if (isnan(lp[x])) continue;
                sum += a + x < w->own ? (double)lp[x] + (double)h[x] : (double)lp[x];
            }
            w->sum += sum;
        }
    }
    return SSM_OK;
}

/* ---- building the work of a chunk --------------------------------------------------------- */

static int cmp_site_key(const vcf_run *v, const vsite *a, const vsite *b) {
    if (a->strand != b->strand) return a->strand - b->strand;
    int ca = v->recs[a->rec].contig, cb = v->recs[b->rec].contig;
    if (ca != cb) return ca < cb ? -1 : 1;
    return (a->anchor > b->anchor) - (a->anchor < b->anchor);
}

static const vcf_run *sort_run; /* qsort has no context argument */

static int cmp_site_idx(const void *x, const void *y) {
    const vsite *a = &sort_run->sites[*(const int *)x], *b = &sort_run->sites[*(const int *)y];
    int c = cmp_site_key(sort_run, a, b);
    return c ? c : (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y);
}

/* Where a context starts (strand coordinates) for a site at t: LEFT bases before it, or with a
 * step S, the multiple of S at or before that, so that nearby sites share a start. */
static int64_t context_start(int64_t t, int left, int step) {
    int64_t a = t - left;
    if (a <= 0) return 0;
    return step > 0 ? a / step * step : a;
}

/* chains: sites of one strand, contig and context start, by context length */
static int cmp_site_chain(const void *x, const void *y) {
    const vsite *a = &sort_run->sites[*(const int *)x], *b = &sort_run->sites[*(const int *)y];
    if (a->strand != b->strand) return a->strand - b->strand;
    int ca = sort_run->recs[a->rec].contig, cb = sort_run->recs[b->rec].contig;
    if (ca != cb) return ca < cb ? -1 : 1;
    if (a->start != b->start) return a->start < b->start ? -1 : 1;
    return a->len - b->len;
}

static const int *sort_chain_first; /* chain c starts at order[sort_chain_first[c]], with n sites */
static const int *sort_chain_n;

/* chains in processing order: by the length of their longest context (chains that run side by
 * side end near one another), then where they start in the sorted list */
static int cmp_chain_order(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    int la = sort_run->sites[sort_run->order[sort_chain_first[a] + sort_chain_n[a] - 1]].len;
    int lb = sort_run->sites[sort_run->order[sort_chain_first[b] + sort_chain_n[b] - 1]].len;
    if (la != lb) return la - lb;
    return (a > b) - (a < b);
}

static int cmp_row_order(const void *x, const void *y) {
    const vrow *a = &sort_run->rows[*(const int *)x], *b = &sort_run->rows[*(const int *)y];
    int ra = sort_run->sites[a->site].rank, rb = sort_run->sites[b->site].rank;
    if (ra != rb) return ra - rb;
    int la = a->own + a->flank, lb = b->own + b->flank;
    if (la != lb) return la - lb;
    return (*(const int *)x > *(const int *)y) - (*(const int *)x < *(const int *)y);
}

static int add_row(vcf_run *v, int site, int job, int strand, int which, int own, int flank) {
    if (own + flank == 0) return -1; /* nothing to predict: a score of 0 */
    if (grow((void **)&v->rows, &v->cap_rows, v->n_rows + 1, sizeof(vrow))) return -2;
    v->rows[v->n_rows] = (vrow){site, job, strand, which, own, flank, -1, 0};
    return v->n_rows++;
}

static ssm_status order_chains(vcf_run *v);

/* The sites whose states are held at once (the bank): 4 batches' worth of state */
static int sites_per_group(const vcf_run *v) { return 4 * v->B; }

/* Sites and rows for the jobs of the chunk. */
static ssm_status plan(vcf_run *v) {
    v->n_sites = v->n_rows = 0;
    int L = v->opt->left, R = v->opt->right;
    if (grow((void **)&v->sites, &v->cap_sites, 2 * v->n_jobs + 1, sizeof(vsite)))
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    /* one site per job and strand, then the duplicates merged */
    for (int i = 0; i < v->n_jobs; i++) {
        const vjob *j = &v->jobs[i];
        const vrec *r = &v->recs[j->rec];
        int64_t e = j->p + j->m;
        int64_t t[2] = {j->p, r->clen - e}; /* the site in each strand's own coordinates */
        for (int strand = 0; strand < 2; strand++) {
            int64_t start = context_start(t[strand], L, v->opt->context_step);
            v->sites[v->n_sites++] = (vsite){strand, j->rec, strand ? e : j->p, (int)(t[strand] - start),
                                             start, 0, 0, -1};
        }
    }
    int n = v->n_sites;
    int *idx = malloc(((size_t)n + 1) * sizeof(int)), *uniq = malloc(((size_t)n + 1) * sizeof(int));
    if (!idx || !uniq) {
        free(idx);
        free(uniq);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) idx[i] = i;
    sort_run = v;
    qsort(idx, n, sizeof(int), cmp_site_idx);
    int u = 0;
    for (int i = 0; i < n; i++) {
        if (!u || cmp_site_key(v, &v->sites[idx[i]], &v->sites[uniq[u - 1]])) uniq[u++] = idx[i];
        v->jobs[idx[i] / 2].site[idx[i] % 2] = u - 1; /* site 2i + strand belongs to job i */
    }
    /* the merged sites, in the order of uniq */
    vsite *merged = malloc(((size_t)u + 1) * sizeof(vsite));
    if (!merged) {
        free(idx);
        free(uniq);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < u; i++) merged[i] = v->sites[uniq[i]];
    memcpy(v->sites, merged, (size_t)u * sizeof(vsite));
    free(merged);
    free(uniq);
    free(idx);
    v->n_sites = u;
    /* rows: REF once per site and REF' length, each ALT */
    for (int i = 0; i < v->n_jobs; i++) {
        vjob *j = &v->jobs[i];
        const vrec *r = &v->recs[j->rec];
        for (int strand = 0; strand < 2; strand++) {
            int64_t room = strand ? j->p : r->clen - j->p - j->m;
            int flank = (int)(room < R ? room : R);
            vsite *site = &v->sites[j->site[strand]];
            int ref_row = -1;
            for (int k = site->first_ref; k >= 0; k = v->rows[k].next_ref)
                if (v->rows[k].own == j->m) ref_row = k;
            if (ref_row < 0 && j->m + flank > 0) {
                if ((ref_row = add_row(v, j->site[strand], i, strand, 0, j->m, flank)) == -2)
                    return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
                v->rows[ref_row].next_ref = site->first_ref;
                site->first_ref = ref_row;
            }
            j->row[strand][0] = ref_row;
            if ((j->row[strand][1] = add_row(v, j->site[strand], i, strand, 1, j->n, flank)) == -2)
                return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        }
    }
    return order_chains(v);
}

/* The processing order of the sites: chain after chain, each chain's sites by context length.
 * A chain has at most sites_per_group() sites: a longer one is cut, and each part reads the
 * context again from the same start (the same state, so the same scores). */

static ssm_status order_chains(vcf_run *v) {
    int n = v->n_sites;
    v->order = realloc(v->order, ((size_t)n + 1) * sizeof(int));
    v->chain = realloc(v->chain, ((size_t)n + 2) * sizeof(int));
    int *first = malloc(((size_t)n + 1) * sizeof(int)), *cnt = malloc(((size_t)n + 1) * sizeof(int));
    int *corder = malloc(((size_t)n + 1) * sizeof(int)), *sorted = malloc(((size_t)n + 1) * sizeof(int));
    v->row_order = realloc(v->row_order, ((size_t)v->n_rows + 1) * sizeof(int));
    if (!v->order || !v->chain || !first || !cnt || !corder || !sorted || !v->row_order) {
        free(first), free(cnt), free(corder), free(sorted);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) v->order[i] = i;
    sort_run = v;
    qsort(v->order, n, sizeof(int), cmp_site_chain);
    int nc = 0;
    for (int i = 0; i < n; i++) {
        const vsite *a = &v->sites[v->order[i]];
        const vsite *b = i ? &v->sites[v->order[i - 1]] : NULL;
        int same = b && a->strand == b->strand && a->start == b->start &&
                   v->recs[a->rec].contig == v->recs[b->rec].contig && cnt[nc - 1] < sites_per_group(v);
        if (!same) first[nc] = i, cnt[nc++] = 0;
        cnt[nc - 1]++;
    }
    for (int c = 0; c < nc; c++) corder[c] = c;
    sort_chain_first = first, sort_chain_n = cnt;
    qsort(corder, nc, sizeof(int), cmp_chain_order);
    int k = 0;
    for (int c = 0; c < nc; c++) {
        v->chain[c] = k;
        for (int i = 0; i < cnt[corder[c]]; i++) sorted[k++] = v->order[first[corder[c]] + i];
    }
    v->chain[nc] = k;
    v->n_chains = nc;
    memcpy(v->order, sorted, (size_t)n * sizeof(int));
    free(first), free(cnt), free(corder), free(sorted);
    for (int i = 0; i < n; i++) v->sites[v->order[i]].rank = i;
    for (int i = 0; i < v->n_rows; i++) v->row_order[i] = i;
    qsort(v->row_order, v->n_rows, sizeof(int), cmp_row_order);
    return SSM_OK;
}

/* records: done so far (the current chunk's in proportion to its sites scored) */
static void progress(vcf_run *v, long jobs_done, long records) {
    char extra[128], r[32];
    double el = cli_now() - v->t0;
    snprintf(extra, sizeof extra, "%s variants/s", cli_si(el > 0 ? jobs_done / el : 0, r, sizeof r));
    cli_progress_update(&v->pr, records, extra);
}

/* Score the jobs of the chunk: the chains B at a time (at most sites_per_group() sites), then
 * the rows of their sites, B at a time. */

static ssm_status score_chunk(vcf_run *v) {
    ssm_status s = plan(v);
    if (s) return s;
    int ri = 0;
    for (int c = 0; c < v->n_chains;) {
        int c1 = c + 1;
        while (c1 < v->n_chains && c1 - c < v->B && v->chain[c1 + 1] - v->chain[c] <= sites_per_group(v)) c1++;
        int j = v->chain[c1]; /* the group's sites end at order[j] */
        ssm_state *ctx;
        if ((s = run_chains(v, c, c1, &ctx))) return s;
        int rj = ri;
        while (rj < v->n_rows && v->sites[v->rows[v->row_order[rj]].site].rank < j) rj++;
        for (int a = ri; a < rj; a += v->B) {
            int k = rj - a < v->B ? rj - a : v->B;
            if ((s = run_rows(v, v->row_order + a, k, ctx))) return s;
        }
        ri = rj;
        c = c1;
        double part = (double)j / v->n_sites;
        progress(v, v->done_jobs + (long)(v->n_jobs * part), v->done_records + (long)(v->n_recs * part));
    }
    v->done_jobs += v->n_jobs;
    return SSM_OK;
}

/* ---- records ------------------------------------------------------------------------------ */

static int is_symbolic(const char *a) {
    size_t n = strlen(a);
    if (!n || !strcmp(a, "*") || !strcmp(a, ".") || a[0] == '<' || strchr(a, '[') || strchr(a, ']'))
        return 1;
    if (a[0] == '.' || a[n - 1] == '.') return 1; /* single breakends */
    for (size_t i = 0; i < n; i++)
        if (!strchr("ACGTNacgtn", a[i])) return 1; /* not a sequence of bases */
    return 0;
}

static ssm_status add_job(vcf_run *v, int ri, int alt, const char *ref, const char *alt_s) {
    if (grow((void **)&v->jobs, &v->cap_jobs, v->n_jobs + 1, sizeof(vjob)))
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    vjob *j = &v->jobs[v->n_jobs];
    memset(j, 0, sizeof *j);
    size_t m = strlen(ref), n = strlen(alt_s);
    char *buf = malloc(m + n + 2);
    if (!buf) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < m; i++) buf[i] = (char)toupper((unsigned char)ref[i]);
    for (size_t i = 0; i < n; i++) buf[m + 1 + i] = (char)toupper((unsigned char)alt_s[i]);
    buf[m] = buf[m + 1 + n] = 0;
    char *r = buf, *a = buf + m + 1;
    /* the minimal form: common trailing bases, then common leading ones, go to the reference */
    while (m > 0 && n > 0 && r[m - 1] == a[n - 1]) r[--m] = 0, a[--n] = 0;
    size_t k = 0;
    while (k < m && k < n && r[k] == a[k]) k++;
    j->rec = ri;
    j->alt = alt;
    j->p = v->recs[ri].b->pos + (int64_t)k;
    j->ref = buf;
    memmove(buf, r + k, m - k + 1);
    j->m = (int)(m - k);
    j->alt_s = a + k;
    j->n = (int)(n - k);
    j->row[0][0] = j->row[0][1] = j->row[1][0] = j->row[1][1] = -1;
    v->n_jobs++;
    return SSM_OK;
}

static void remember_missing(vcf_run *v, const char *name) {
    for (int i = 0; i < v->n.n_missing; i++)
        if (!strcmp(v->n.missing[i], name)) return;
    if (v->n.n_missing < 5) snprintf(v->n.missing[v->n.n_missing++], sizeof v->n.missing[0], "%s", name);
}

/* What a record is: scored (its jobs added), or why not. */
static ssm_status classify(vcf_run *v, int ri) {
    vrec *r = &v->recs[ri];
    bcf1_t *b = r->b;
    bcf_hdr_t *h = v->hdr;
    /* the fields of an earlier run go: this run writes its own */
    bcf_update_info_float(h, b, INFO_FWD, NULL, 0);
    bcf_update_info_float(h, b, INFO_RC, NULL, 0);
    bcf_update_info_float(h, b, INFO_LLR, NULL, 0);
    const char *flts[3] = {FLT_MISMATCH, FLT_SYMBOLIC, FLT_NO_CONTIG};
    for (int i = 0; i < 3; i++) {
        int id = bcf_hdr_id2int(h, BCF_DT_ID, flts[i]);
        if (bcf_has_filter(h, b, (char *)flts[i]) == 1) bcf_remove_filter(h, b, id, 0);
    }
    r->first_job = v->n_jobs;
    r->n_jobs = 0;
    r->contig = reference_find(&v->ref, bcf_seqname_safe(h, b));
    if (r->contig < 0) {
        r->status = ST_NO_CONTIG;
        v->n.no_contig++;
        remember_missing(v, bcf_seqname_safe(h, b));
        return SSM_OK;
    }
    r->clen = fasta_set_record(v->ref.set, r->contig)->length;
    const char *ref = b->d.allele[0];
    int64_t rlen = (int64_t)strlen(ref), pos = b->pos, M = v->opt->left + v->opt->context_step > v->opt->right ? v->opt->left + v->opt->context_step : v->opt->right;
    int match = pos >= 0 && rlen > 0 && pos + rlen <= r->clen;
    if (match) {
        r->lo = pos - M > 0 ? pos - M : 0;
        r->hi = pos + rlen + M < r->clen ? pos + rlen + M : r->clen;
        if (!(r->win = malloc((size_t)(r->hi - r->lo) + 1))) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        ssm_status s = fasta_set_fetch(v->ref.set, r->contig, r->lo, r->hi - r->lo, r->win);
        if (s) return s;
        for (int64_t i = 0; i < rlen && match; i++)
            match = toupper((unsigned char)ref[i]) == toupper((unsigned char)ref_at(r, pos + i));
    }
    if (!match) {
        r->status = ST_MISMATCH;
        if (!v->n.mismatch++) {
            char *at = v->n.first_mismatch;
            size_t size = sizeof v->n.first_mismatch;
            int k = snprintf(at, size, "%s:%lld REF %.40s%s", bcf_seqname_safe(h, b), (long long)pos + 1,
                             ref, rlen > 40 ? "..." : "");
            if (pos < 0)
                snprintf(at + k, size - k, ": POS is not a position of the contig");
            else if (!r->win)
                snprintf(at + k, size - k, " runs past the end of the contig (%lld bases)", (long long)r->clen);
            else
                snprintf(at + k, size - k, ", the reference has %.*s%s", (int)(rlen < 40 ? rlen : 40),
                         r->win + (pos - r->lo), rlen > 40 ? "..." : "");
        }
        return SSM_OK;
    }
    if (b->n_allele < 2) {
        r->status = ST_NO_ALT;
        v->n.no_alt++;
        return SSM_OK;
    }
    int symbolic = 0;
    for (int a = 1; a < b->n_allele; a++) {
        if (is_symbolic(b->d.allele[a])) {
            symbolic++;
            continue;
        }
        ssm_status s = add_job(v, ri, a, ref, b->d.allele[a]);
        if (s) return s;
        r->n_jobs++;
    }
    v->n.symbolic_alleles += symbolic;
    r->status = r->n_jobs ? ST_SCORED : ST_SYMBOLIC;
    if (!r->n_jobs) v->n.symbolic_records++;
    else v->n.scored_records++, v->n.alleles += r->n_jobs;
    return SSM_OK;
}

static double row_sum(const vcf_run *v, int row) { return row >= 0 ? v->rows[row].sum : 0; }

/* The scores (or the filter) into a record. */
static ssm_status annotate(vcf_run *v, int ri) {
    vrec *r = &v->recs[ri];
    bcf1_t *b = r->b;
    const char *flt = r->status == ST_MISMATCH ? FLT_MISMATCH : r->status == ST_SYMBOLIC ? FLT_SYMBOLIC
                    : r->status == ST_NO_CONTIG ? FLT_NO_CONTIG : NULL;
    if (flt && bcf_add_filter(v->hdr, b, bcf_hdr_id2int(v->hdr, BCF_DT_ID, flt)) < 0)
        return ssm_set_error(SSM_ERR_NOMEM, "cannot add FILTER %s", flt);
    if (r->status != ST_SCORED) return SSM_OK;
    int n_alt = b->n_allele - 1;
    float *val = malloc(3 * (size_t)n_alt * sizeof(float));
    if (!val) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < 3 * n_alt; i++) bcf_float_set_missing(val[i]);
    for (int k = 0; k < r->n_jobs; k++) {
        const vjob *j = &v->jobs[r->first_job + k];
        double fwd = row_sum(v, j->row[0][1]) - row_sum(v, j->row[0][0]);
        double rc = row_sum(v, j->row[1][1]) - row_sum(v, j->row[1][0]);
        if (j->m == 0 && j->n == 0) fwd = rc = 0; /* ALT = REF */
        val[j->alt - 1] = (float)fwd;
        val[n_alt + j->alt - 1] = (float)rc;
        val[2 * n_alt + j->alt - 1] = (float)(0.5 * (fwd + rc));
    }
    int bad = bcf_update_info_float(v->hdr, b, INFO_FWD, val, n_alt) < 0 ||
              bcf_update_info_float(v->hdr, b, INFO_RC, val + n_alt, n_alt) < 0 ||
              bcf_update_info_float(v->hdr, b, INFO_LLR, val + 2 * n_alt, n_alt) < 0;
    free(val);
    return bad ? ssm_set_error(SSM_ERR_NOMEM, "cannot write the INFO fields") : SSM_OK;
}

/* ---- the header and the output ------------------------------------------------------------ */

static ssm_status check_declared(vcf_run *v, const char *tag) {
    int id = bcf_hdr_id2int(v->hdr, BCF_DT_ID, tag);
    if (!bcf_hdr_idinfo_exists(v->hdr, BCF_HL_INFO, id)) return SSM_OK;
    if (bcf_hdr_id2type(v->hdr, BCF_HL_INFO, id) == BCF_HT_REAL &&
        bcf_hdr_id2length(v->hdr, BCF_HL_INFO, id) == BCF_VL_A)
        return SSM_OK;
    return ssm_set_error(SSM_ERR_FORMAT, "%s: its header declares INFO %s otherwise than ssm-score "
                         "writes it (Number=A, Type=Float): remove it first (bcftools annotate -x "
                         "INFO/%s)", shown(v->opt->vcf), tag, tag);
}

static ssm_status add_header_lines(vcf_run *v) {
    bcf_hdr_t *h = v->hdr;
    const vcf_options *o = v->opt;
    const char *tags[3] = {INFO_FWD, INFO_RC, INFO_LLR};
    for (int i = 0; i < 3; i++) {
        ssm_status s = check_declared(v, tags[i]);
        if (s) return s;
    }
    char line[2048];
    const char *what[3] = {"forward strand", "reverse strand (the model reading the reverse complement)",
                           "mean of SSM_LLR_FWD and SSM_LLR_RC"};
    char step[64] = "";
    if (o->context_step > 1) snprintf(step, sizeof step, " to %d", o->left + o->context_step - 1);
    for (int i = 0; i < 3; i++) {
        snprintf(line, sizeof line, "##INFO=<ID=%s,Number=A,Type=Float,Description=\"ssm-score: "
                 "log-likelihood ratio ALT vs REF (nats), %s: over the allele's bases (log p + "
                 "entropy each) and the %d bases after REF (log p), after %d%s bases of context "
                 "(docs/genomics.md)\">", tags[i], what[i], o->right, o->left, step);
        if (bcf_hdr_append(h, line)) return ssm_set_error(SSM_ERR_FORMAT, "cannot add INFO %s to the header", tags[i]);
    }
    struct { const char *id, *what; } f[3] = {
        {FLT_MISMATCH, "REF does not match the reference sequence: not scored by ssm-score"},
        {FLT_SYMBOLIC, "no ALT allele is a sequence of bases (symbolic, breakend, * or missing): not "
                       "scored by ssm-score"},
        {FLT_NO_CONTIG, "the contig is not in the reference: not scored by ssm-score"}};
    for (int i = 0; i < 3; i++) {
        snprintf(line, sizeof line, "##FILTER=<ID=%s,Description=\"%s\">", f[i].id, f[i].what);
        if (bcf_hdr_append(h, line)) return ssm_set_error(SSM_ERR_FORMAT, "cannot add FILTER %s to the header", f[i].id);
    }
    snprintf(line, sizeof line, "##ssm-score_version=%s", SSM_VERSION);
    bcf_hdr_append(h, line);
    if (o->command) {
        snprintf(line, sizeof line, "##ssm-score_command=%s", o->command);
        bcf_hdr_append(h, line);
    }
    /* a BCF names contigs by their header line: declare the reference's where the VCF did not */
    if (v->out_kind == 2)
        for (int i = 0; i < fasta_set_n_records(v->ref.set); i++) {
            const fasta_record *fr = fasta_set_record(v->ref.set, i);
            if (bcf_hdr_name2id(h, fr->name) >= 0) continue;
            snprintf(line, sizeof line, "##contig=<ID=%s,length=%lld>", fr->name, (long long)fr->length);
            bcf_hdr_append(h, line); /* a name that a VCF cannot hold stays undeclared */
        }
    if (bcf_hdr_sync(h)) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the header");
    return SSM_OK;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

static ssm_status open_output(vcf_run *v) {
    const char *out = v->opt->output;
    if (!out || !strcmp(out, "-")) {
        v->out_kind = 0;
        enum htsLogLevel level = quiet();
        v->out = hts_open("-", "w");
        hts_set_log_level(level);
        return v->out ? SSM_OK : ssm_set_error(SSM_ERR_IO, "cannot write VCF to stdout");
    }
    v->out_kind = ends_with(out, ".bcf") ? 2 : ends_with(out, ".gz") || ends_with(out, ".bgz") ? 1 : 0;
    snprintf(v->out_tmp, sizeof v->out_tmp, "%s.tmp", out);
    if (v->out_kind) {
        snprintf(v->idx_path, sizeof v->idx_path, "%s.%s", out, v->out_kind == 2 ? "csi" : "tbi");
        snprintf(v->idx_tmp, sizeof v->idx_tmp, "%s.tmp", v->idx_path);
    }
    errno = 0;
    enum htsLogLevel level = quiet();
    v->out = hts_open(v->out_tmp, v->out_kind == 2 ? "wb" : v->out_kind == 1 ? "wz" : "w");
    hts_set_log_level(level);
    if (!v->out) {
        ssm_status s = ssm_set_error(SSM_ERR_IO, "%s: cannot write: %s", v->out_tmp,
                                     errno ? strerror(errno) : "htslib cannot open it");
        *v->out_tmp = 0;
        return s;
    }
    return SSM_OK;
}

static ssm_status write_header(vcf_run *v) {
    enum htsLogLevel level = quiet();
    int bad = bcf_hdr_write(v->out, v->hdr) < 0;
    if (!bad && v->out_kind) bad = bcf_idx_init(v->out, v->hdr, v->out_kind == 2 ? 14 : 0, v->idx_tmp) < 0;
    hts_set_log_level(level);
    if (bad) return ssm_set_error(SSM_ERR_IO, "%s: cannot write the header", v->opt->output ? v->opt->output : "stdout");
    v->header_written = 1;
    v->nhrec_written = v->hdr->nhrec;
    return SSM_OK;
}

/* An index needs the records of a contig together, by position. */
static ssm_status check_sorted(vcf_run *v, const bcf1_t *b) {
    if (!v->out_kind) return SSM_OK;
    if (b->rid != v->last_rid) {
        if (b->rid >= v->cap_seen) {
            int cap = b->rid + 1024;
            char *seen = realloc(v->seen_rid, (size_t)cap);
            if (!seen) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            memset(seen + v->cap_seen, 0, (size_t)(cap - v->cap_seen));
            v->seen_rid = seen, v->cap_seen = cap;
        }
        if (v->seen_rid[b->rid]) goto unsorted;
        v->seen_rid[b->rid] = 1;
        v->last_rid = b->rid;
    } else if (b->pos < v->last_pos) {
        goto unsorted;
    }
    v->last_pos = b->pos;
    return SSM_OK;
unsorted:
    return ssm_set_error(SSM_ERR_FORMAT, "%s: the records are not sorted (%s:%lld comes after %s:%lld), "
                         "so %s cannot be indexed: sort it first (bcftools sort) or write plain VCF "
                         "(.vcf)", shown(v->opt->vcf), bcf_seqname_safe(v->hdr, b), (long long)b->pos + 1,
                         bcf_hdr_id2name(v->hdr, v->last_rid), (long long)v->last_pos + 1, v->opt->output);
}

static ssm_status write_chunk(vcf_run *v) {
    for (int i = 0; i < v->n_recs; i++) {
        ssm_status s = annotate(v, i);
        if (!s) s = check_sorted(v, v->recs[i].b);
        if (s) return s;
        enum htsLogLevel level = quiet();
        int bad = bcf_write(v->out, v->hdr, v->recs[i].b) < 0;
        hts_set_log_level(level);
        if (bad) return ssm_set_error(SSM_ERR_IO, "%s: cannot write", v->opt->output ? v->opt->output : "stdout");
    }
    return SSM_OK;
}

static void free_chunk(vcf_run *v) {
    for (int i = 0; i < v->n_recs; i++) {
        free(v->recs[i].win);
        v->recs[i].win = NULL;
    }
    for (int i = 0; i < v->n_jobs; i++) free(v->jobs[i].ref);
    v->n_jobs = 0;
    v->n_recs = 0;
}

/* Read up to CHUNK records; *eof at the end of the file. */
static ssm_status read_chunk(vcf_run *v, int *eof) {
    v->n_recs = 0;
    while (v->n_recs < CHUNK) {
        vrec *r = &v->recs[v->n_recs];
        enum htsLogLevel level = quiet();
        int ret = bcf_read(v->in, v->hdr, r->b);
        hts_set_log_level(level);
        if (ret == -1) {
            *eof = 1;
            break;
        }
        if (ret == 0) bcf_unpack(r->b, BCF_UN_ALL);
        /* htslib reads leniently; a record without even a REF (a line of one column) is broken */
        if (ret < 0 || r->b->n_allele < 1 || !r->b->d.allele || !r->b->d.allele[0] ||
            (r->b->errcode & ~(BCF_ERR_CTG_UNDEF | BCF_ERR_TAG_UNDEF))) {
            char after[300] = "";
            if (v->n_recs) snprintf(after, sizeof after, " (after %s:%lld)", bcf_seqname_safe(v->hdr, v->recs[v->n_recs - 1].b),
                                    (long long)v->recs[v->n_recs - 1].b->pos + 1);
            return ssm_set_error(SSM_ERR_FORMAT, "%s: record %ld%s cannot be read: not a valid VCF "
                                 "record (or the file is truncated)", shown(v->opt->vcf), v->n.records + 1, after);
        }
        v->n.records++;
        v->n_recs++;
        if (v->header_written && v->out_kind == 2 && v->hdr->nhrec != v->nhrec_written)
            return ssm_set_error(SSM_ERR_FORMAT, "%s: record %ld (%s:%lld) uses a contig or tag that its "
                                 "header does not declare; a BCF output needs every one declared at "
                                 "its start: declare it in the input's header, or write VCF (.vcf, "
                                 ".vcf.gz)", shown(v->opt->vcf), v->n.records, bcf_seqname_safe(v->hdr, r->b),
                                 (long long)r->b->pos + 1);
    }
    return SSM_OK;
}

/* The end: index, close, rename (or remove everything on failure). */
static int finish(vcf_run *v, int rc) {
    if (v->out) {
        enum htsLogLevel level = quiet();
        if (!rc && v->out_kind && bcf_idx_save(v->out) < 0)
            rc = cli_error("%s: cannot write its index %s", v->opt->output, v->idx_path);
        if (hts_close(v->out) < 0 && !rc) rc = cli_error("%s: cannot write", v->opt->output ? v->opt->output : "stdout");
        hts_set_log_level(level);
        v->out = NULL;
    }
    if (!rc && *v->out_tmp && rename(v->out_tmp, v->opt->output))
        rc = cli_error("%s: cannot write: %s", v->opt->output, strerror(errno));
    if (!rc && *v->idx_tmp && rename(v->idx_tmp, v->idx_path))
        rc = cli_error("%s: cannot write: %s", v->idx_path, strerror(errno));
    if (rc) {
        if (*v->out_tmp) remove(v->out_tmp);
        if (*v->idx_tmp) remove(v->idx_tmp);
    }
    return rc;
}

/* The number of records, from an index beside the input (for the progress line), else 0. */
static int64_t indexed_records(const char *path) {
    if (!strcmp(path, "-")) return 0;
    enum htsLogLevel level = quiet();
    hts_idx_t *idx = NULL;
    tbx_t *tbx = NULL;
    if (ends_with(path, ".bcf")) idx = bcf_index_load3(path, NULL, HTS_IDX_SILENT_FAIL);
    else if ((tbx = tbx_index_load3(path, NULL, HTS_IDX_SILENT_FAIL))) idx = tbx->idx;
    int64_t total = 0;
    if (idx) {
        int n = hts_idx_nseq(idx);
        for (int i = 0; i < n; i++) {
            uint64_t mapped, unmapped;
            if (hts_idx_get_stat(idx, i, &mapped, &unmapped) == 0) total += (int64_t)(mapped + unmapped);
        }
    }
    if (tbx) tbx_destroy(tbx);
    else if (idx) hts_idx_destroy(idx);
    hts_set_log_level(level);
    return total;
}

static void report(const vcf_run *v) {
    const char *in = shown(v->opt->vcf);
    const counts *n = &v->n;
    /* these describe the input, so --quiet does not hide them */
    if (n->mismatch)
        fprintf(stderr, "%s: %s: %ld record%s with a REF that does not match %s, not scored (FILTER "
                "%s); the first: %s\n", cli_program(), in, n->mismatch, n->mismatch > 1 ? "s" : "",
                v->opt->reference, FLT_MISMATCH, n->first_mismatch);
    if (n->symbolic_alleles)
        fprintf(stderr, "%s: %s: %ld ALT allele%s not scored: symbolic (<DEL>, <*>...), breakends, * or "
                "not bases; %ld record%s with no other ALT (FILTER %s)\n", cli_program(), in,
                n->symbolic_alleles, n->symbolic_alleles > 1 ? "s" : "", n->symbolic_records,
                n->symbolic_records == 1 ? "" : "s", FLT_SYMBOLIC);
    if (n->no_contig) {
        char names[800] = "";
        for (int i = 0; i < n->n_missing; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", n->missing[i]);
        fprintf(stderr, "%s: %s: %ld record%s on contigs that %s does not have, not scored (FILTER %s): "
                "%s%s\n", cli_program(), in, n->no_contig, n->no_contig > 1 ? "s" : "",
                v->opt->reference, FLT_NO_CONTIG, names, n->n_missing == 5 ? ", ..." : "");
    }
    if (n->no_alt)
        fprintf(stderr, "%s: %s: %ld record%s without an ALT allele, left as %s\n", cli_program(), in,
                n->no_alt, n->no_alt > 1 ? "s" : "", n->no_alt > 1 ? "they were" : "it was");
    double el = cli_now() - v->t0;
    char r[32];
    cli_note("%s: %ld variants scored in %ld of %ld records, %.1fs (%s variants/s)", in, n->alleles,
             n->scored_records, n->records, el, cli_si(el > 0 ? n->alleles / el : 0, r, sizeof r));
}

int vcf_score_run(cli_trained *tr, const vcf_options *opt) {
    vcf_run v = {.opt = opt, .tr = tr, .model = tr->model, .B = opt->batch, .W = opt->window, .last_rid = -1};
    int rc = CLI_EXIT_INPUT;
    ssm_status s;
    /* the task's option: masked lowercase bases are read but not scored */
    ssm_node *task;
    if (!ssm_node_section(tr->recipe, tr->recipe->root, "task", &task) && task)
        ssm_node_bool(tr->recipe, task, "mask_lowercase", 0, &v.mask_lowercase);
    if ((s = reference_open(opt->reference, &v.ref))) return cli_fail();
    errno = 0;
    enum htsLogLevel level = quiet();
    v.in = hts_open(opt->vcf, "r");
    hts_set_log_level(level);
    if (!v.in) {
        cli_error("%s: cannot open: %s", shown(opt->vcf), errno ? strerror(errno) : "unreadable");
        goto done;
    }
    const htsFormat *fmt = hts_get_format(v.in);
    if (fmt->format != vcf && fmt->format != bcf) {
        cli_error("%s: not a VCF or BCF file: no VCF header (a VCF starts with '##fileformat=VCFv4.x' "
                  "and its header ends with the '#CHROM POS ID REF ALT QUAL FILTER INFO' line)",
                  shown(opt->vcf));
        goto done;
    }
    level = quiet();
    v.hdr = bcf_hdr_read(v.in);
    hts_set_log_level(level);
    if (!v.hdr) {
        cli_error("%s: cannot read its VCF header (it must end with the '#CHROM POS ID REF ALT QUAL "
                  "FILTER INFO' line)", shown(opt->vcf));
        goto done;
    }
    if ((s = open_output(&v)) || (s = add_header_lines(&v))) {
        rc = cli_fail();
        goto done;
    }
    size_t BW = (size_t)v.B * v.W;
    v.tokens = malloc(BW * sizeof(int32_t));
    v.targets = malloc(BW * sizeof(int32_t));
    v.logp = malloc(BW * sizeof(float));
    v.ent = malloc(BW * sizeof(float));
    v.step_logits = malloc((size_t)v.B * v.model->config.vocab_size * sizeof(float));
    v.recs = calloc(CHUNK, sizeof(vrec));
    int oom = !v.tokens || !v.targets || !v.logp || !v.ent || !v.step_logits || !v.recs;
    for (int i = 0; i < CHUNK && !oom; i++) oom = !(v.recs[i].b = bcf_init());
    if (oom) {
        cli_error("out of memory for batch %d x window %d", v.B, v.W);
        goto done;
    }
    cli_progress_start(&v.pr, indexed_records(opt->vcf), 20, "record");
    v.t0 = cli_now();
    for (int eof = 0; !eof;) {
        if ((s = read_chunk(&v, &eof))) goto fail;
        if (!v.header_written && (s = write_header(&v))) goto fail;
        for (int i = 0; i < v.n_recs; i++)
            if ((s = classify(&v, i))) goto fail;
        if (v.n_jobs && (s = score_chunk(&v))) goto fail;
        if ((s = write_chunk(&v))) goto fail;
        v.done_records += v.n_recs;
        free_chunk(&v);
        if (eof) v.pr.total = v.n.records; /* the last line says so, even unindexed */
        progress(&v, v.done_jobs, v.done_records);
    }
    cli_progress_end(&v.pr);
    rc = 0;
    goto done;
fail:
    cli_progress_end(&v.pr);
    rc = cli_fail();
done:
    free_chunk(&v);
    rc = finish(&v, rc);
    if (!rc) report(&v);
    if (v.recs)
        for (int i = 0; i < CHUNK; i++)
            if (v.recs[i].b) bcf_destroy(v.recs[i].b);
    free(v.recs);
    if (v.hdr) bcf_hdr_destroy(v.hdr);
    if (v.in) hts_close(v.in);
    reference_close(&v.ref);
    free(v.jobs);
    free(v.sites);
    free(v.rows);
    free(v.order);
    free(v.chain);
    free(v.row_order);
    free(v.tokens);
    free(v.targets);
    free(v.logp);
    free(v.ent);
    free(v.step_logits);
    free(v.seen_rid);
    ssm_state_free(v.ctx_full);
    ssm_state_free(v.ctx_part);
    ssm_state_free(v.chain_full);
    ssm_state_free(v.chain_part);
    ssm_state_free(v.row_full);
    ssm_state_free(v.row_part);
    return rc;
}
