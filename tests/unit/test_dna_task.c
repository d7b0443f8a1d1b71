/* test_dna_task.c: the DNA task (tasks/dna): tokens, reverse complement, training batches (N and
 * lowercase masking, padding, determinism, reverse-complement augmentation), the baseline
 * symbols, records for scoring, prompts, FASTA output, and creation from a recipe. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/dna/dna.h"
#include "../../tasks/registry.h"
#include "ssm/recipe.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
static void tmp_rm(char *dir) {
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static char *write_tmp(const char *dir, const char *name, const char *text) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A random record of n bases with N runs, IUPAC codes and lowercase stretches. */
static char *make_genome(size_t n, uint64_t seed) {
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    char *g = malloc(n + 1);
    for (size_t i = 0; i < n; i++) g[i] = "ACGT"[ssm_rng_below(&rng, 4)];
    for (size_t i = 0; i + 300 < n; i += 500) {
        memcpy(g + i + 100, "NNNNN", 5);
        g[i + 150] = "RYKMSWBDHV"[(i / 500) % 10];
        for (size_t j = i + 200; j < i + 260; j++) g[j] = (char)(g[j] - 'A' + 'a');
    }
    g[n] = 0;
    return g;
}

static char *fasta_text(const char *name, const char *seq) {
    size_t n = strlen(seq);
    char *t = malloc(n + n / 60 + strlen(name) + 8);
    size_t k = (size_t)sprintf(t, ">%s\n", name);
    for (size_t i = 0; i < n; i += 60) {
        size_t m = n - i < 60 ? n - i : 60;
        memcpy(t + k, seq + i, m);
        k += m;
        t[k++] = '\n';
    }
    t[k] = 0;
    return t;
}

/* The bases of a row of tokens as uppercase text (ACGTN). */
static void decode(const int32_t *tok, int n, char *out) {
    for (int i = 0; i < n; i++) out[i] = tok[i] >= DNA_TOKEN_A ? "ACGTN"[tok[i] - DNA_TOKEN_A] : '?';
    out[n] = 0;
}

/* The genome as the tokens see it: uppercase, ambiguity codes as N. */
static char *as_tokens_text(const char *g) {
    size_t n = strlen(g);
    char *u = malloc(n + 1);
    for (size_t i = 0; i < n; i++) u[i] = "ACGTN"[dna_token((unsigned char)g[i]) - DNA_TOKEN_A];
    u[n] = 0;
    return u;
}

/* ---- tokens and reverse complement --------------------------------------------------------- */

static void test_tokens(void **st) {
    (void)st;
    assert_int_equal(dna_token('A'), 7);
    assert_int_equal(dna_token('C'), 8);
    assert_int_equal(dna_token('G'), 9);
    assert_int_equal(dna_token('T'), 10);
    assert_int_equal(dna_token('N'), 11);
    assert_int_equal(dna_token('a'), 7);
    assert_int_equal(dna_token('t'), 10);
    assert_int_equal(dna_token('U'), 10);
    assert_int_equal(dna_token('u'), 10);
    for (const char *p = "RYSWKMBDHVNryswkmbdhvn"; *p; p++) assert_int_equal(dna_token(*p), DNA_TOKEN_N);
    for (const char *p = "-.*X0 >@"; *p; p++) assert_int_equal(dna_token(*p), -1);
    assert_int_equal(ssm_task_dna.vocab_size(NULL), 12);
    assert_int_equal(ssm_task_dna.bos_token(NULL), DNA_TOKEN_BOS);
    /* scored: A C G T (and U), lowercase only without masking; N and ambiguity codes never */
    assert_true(dna_scored('A', 1));
    assert_true(dna_scored('a', 0));
    assert_false(dna_scored('a', 1));
    assert_false(dna_scored('N', 0));
    assert_false(dna_scored('R', 0));
    assert_false(dna_scored('n', 0));
    assert_false(dna_scored('-', 0));
    /* the table: registered under its name, with the ABI version */
    const ssm_task_ops *ops;
    TU_OK(ssm_task_find("dna", &ops));
    assert_ptr_equal(ops, &ssm_task_dna);
    assert_int_equal(ops->abi_version, SSM_TASK_ABI_VERSION);
    assert_string_equal(ops->symbol, "base");
}

static void test_revcomp(void **st) {
    (void)st;
    char s[] = "ACGTNacgtn";
    dna_revcomp(s, strlen(s));
    assert_string_equal(s, "nacgtNACGT");
    char t[] = "AAAC";
    dna_revcomp(t, 4);
    assert_string_equal(t, "GTTT");
    char u[] = "RYKMBVDHSWU";
    dna_revcomp(u, strlen(u));
    assert_string_equal(u, "AWSDHBVKMRY");
    char one[] = "G";
    dna_revcomp(one, 1);
    assert_string_equal(one, "C");
    /* rc(rc(x)) == x, odd and even lengths */
    ssm_rng rng;
    ssm_rng_seed(&rng, 3);
    const char *alphabet = "ACGTNRYSWKMBDHVacgtnryswkmbdhv";
    for (size_t n = 0; n < 40; n++) {
        char a[64], b[64];
        for (size_t i = 0; i < n; i++) a[i] = alphabet[ssm_rng_below(&rng, strlen(alphabet))];
        a[n] = 0;
        memcpy(b, a, n + 1);
        dna_revcomp(b, n);
        for (size_t i = 0; i < n; i++) /* complement of the mirrored base, case kept */
            assert_int_equal(!!(b[i] >= 'a'), !!(a[n - 1 - i] >= 'a'));
        dna_revcomp(b, n);
        assert_string_equal(a, b);
    }
    /* tokens: A<->T, C<->G, N and specials unchanged */
    int32_t tk[] = {DNA_TOKEN_BOS, DNA_TOKEN_A, DNA_TOKEN_C, DNA_TOKEN_G, DNA_TOKEN_T, DNA_TOKEN_N, DNA_TOKEN_A};
    int32_t want[] = {DNA_TOKEN_T, DNA_TOKEN_N, DNA_TOKEN_A, DNA_TOKEN_C, DNA_TOKEN_G, DNA_TOKEN_T, DNA_TOKEN_BOS};
    dna_revcomp_tokens(tk, 7);
    assert_memory_equal(tk, want, sizeof tk);
    for (size_t n = 0; n < 20; n++) {
        int32_t a[20], b[20];
        for (size_t i = 0; i < n; i++) a[i] = (int32_t)ssm_rng_below(&rng, DNA_VOCAB_SIZE);
        memcpy(b, a, sizeof a);
        dna_revcomp_tokens(b, n);
        dna_revcomp_tokens(b, n);
        assert_memory_equal(a, b, n * sizeof(int32_t));
    }
}

/* ---- batches ------------------------------------------------------------------------------ */

typedef struct fixture {
    char *dir, *path, *genome, *upper;
    size_t n;
} fixture;

static void fixture_make(fixture *f, size_t n) {
    f->dir = strdup(tu_tmpdir());
    f->n = n;
    f->genome = make_genome(n, 11);
    f->upper = as_tokens_text(f->genome);
    char *text = fasta_text("g1", f->genome);
    f->path = write_tmp(f->dir, "g.fa", text);
    free(text);
}

static void fixture_free(fixture *f) {
    free(f->path), free(f->genome), free(f->upper);
    tmp_rm(f->dir);
}

/* Check one row: a window of L bases read as a sequence start: tokens are BOS then
 * window[0..L-1), targets window[0..L) with -1 where not scored. */
static void check_row(const char *window, int L, const int32_t *tok, const int32_t *tgt, int mask) {
    assert_int_equal(tok[0], DNA_TOKEN_BOS);
    for (int l = 0; l < L; l++) {
        if (l > 0) assert_int_equal(tok[l], dna_token((unsigned char)window[l - 1]));
        int c = (unsigned char)window[l];
        assert_int_equal(tgt[l], dna_scored(c, mask) ? dna_token(c) : -1);
    }
}

static void test_next_batch(void **st) {
    (void)st;
    fixture f;
    fixture_make(&f, 20000);
    const char *files[] = {f.path};
    void *task;
    TU_OK(dna_task_open(files, 1, NULL, 0, NULL, 1, 0.0, &task));
    enum { B = 6, L = 96 };
    int32_t tok[B * L], tgt[B * L], tok2[B * L], tgt2[B * L];
    ssm_batch batch = {.B = B, .L = L, .tokens = tok, .targets = tgt}, batch2 = {.B = B, .L = L, .tokens = tok2, .targets = tgt2};
    ssm_rng rng, rng2;
    ssm_rng_seed(&rng, 7);
    ssm_rng_seed(&rng2, 7);
    size_t train_end = f.n - f.n / 20;
    int saw_n = 0, saw_lower = 0;
    for (int it = 0; it < 20; it++) {
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &batch));
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng2, &batch2));
        assert_memory_equal(tok, tok2, sizeof tok); /* same rng state, same batch */
        assert_memory_equal(tgt, tgt2, sizeof tgt);
        for (int b = 0; b < B; b++) {
            char s[L + 1];
            decode(tok + b * L + 1, L - 1, s);
            char *at = strstr(f.upper, s);
            assert_non_null(at);
            size_t p = (size_t)(at - f.upper);
            assert_true(p + L <= train_end); /* inside the training split */
            check_row(f.genome + p, L, tok + b * L, tgt + b * L, 1);
            for (int l = 0; l < L; l++) {
                char c = f.genome[p + l];
                saw_n += dna_token(c) == DNA_TOKEN_N;
                saw_lower += c >= 'a';
            }
        }
    }
    assert_true(saw_n > 0 && saw_lower > 0); /* the masking was exercised */
    /* validation windows come from the held-out tail */
    for (int it = 0; it < 5; it++) {
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_VALID, &rng, &batch));
        for (int b = 0; b < B; b++) {
            char s[L + 1];
            decode(tok + b * L + 1, L - 1, s);
            char *at = strstr(f.upper + train_end, s);
            assert_non_null(at);
            check_row(f.genome + (at - f.upper), L, tok + b * L, tgt + b * L, 1);
        }
    }
    ssm_task_dna.destroy(task);

    /* without masking, lowercase bases are scored */
    TU_OK(dna_task_open(files, 1, NULL, 0, NULL, 0, 0.0, &task));
    TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &batch));
    for (int b = 0; b < B; b++) {
        char s[L + 1];
        decode(tok + b * L + 1, L - 1, s);
        char *at = strstr(f.upper, s);
        assert_non_null(at);
        check_row(f.genome + (at - f.upper), L, tok + b * L, tgt + b * L, 0);
    }
    ssm_task_dna.destroy(task);
    fixture_free(&f);
}

/* rc_prob 1: every training window is the reverse complement of a stretch of the genome, with
 * the masks of the complemented bases; validation windows are never flipped. */
static void test_reverse_complement_windows(void **st) {
    (void)st;
    fixture f;
    fixture_make(&f, 20000);
    const char *files[] = {f.path};
    void *task;
    TU_OK(dna_task_open(files, 1, NULL, 0, NULL, 1, 1.0, &task));
    enum { B = 4, L = 80 };
    int32_t tok[B * L], tgt[B * L];
    ssm_batch batch = {.B = B, .L = L, .tokens = tok, .targets = tgt};
    ssm_rng rng;
    ssm_rng_seed(&rng, 9);
    for (int it = 0; it < 10; it++) {
        TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &batch));
        for (int b = 0; b < B; b++) {
            /* the window is rc(genome[p .. p + L)); tokens 1.. hold its first L - 1 bases,
             * rc(genome[p + 1 .. p + L)) */
            char s[L + 1];
            decode(tok + b * L + 1, L - 1, s);
            dna_revcomp(s, L - 1);
            char *at = strstr(f.upper, s);
            assert_non_null(at);
            size_t p = (size_t)(at - f.upper) - 1;
            char w[L + 1];
            memcpy(w, f.genome + p, L);
            w[L] = 0;
            dna_revcomp(w, L);
            check_row(w, L, tok + b * L, tgt + b * L, 1);
        }
    }
    TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_VALID, &rng, &batch));
    for (int b = 0; b < B; b++) {
        char s[L + 1];
        decode(tok + b * L + 1, L - 1, s);
        assert_non_null(strstr(f.upper, s));
    }
    ssm_task_dna.destroy(task);
    fixture_free(&f);
}

/* Records shorter than the window (reads): the rest of the row is PAD, not scored. */
static void test_padding(void **st) {
    (void)st;
    char *dir = strdup(tu_tmpdir());
    char *p = write_tmp(dir, "r.fq", "@r1\nACGTACGTAC\n+\nIIIIIIIIII\n@r2\nGGGGGCCCCCAAAAATTTTT\n+\nIIIIIIIIIIIIIIIIIIII\n");
    const char *files[] = {p};
    fasta_set_options o = fasta_set_options_default();
    o.valid_fraction = 0;
    void *task;
    TU_OK(dna_task_open(files, 1, NULL, 0, &o, 0, 0.0, &task));
    enum { B = 8, L = 32 };
    int32_t tok[B * L], tgt[B * L];
    ssm_batch batch = {.B = B, .L = L, .tokens = tok, .targets = tgt};
    ssm_rng rng;
    ssm_rng_seed(&rng, 1);
    TU_OK(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &batch));
    for (int b = 0; b < B; b++) {
        const int32_t *t = tok + b * L, *g = tgt + b * L;
        int n = t[1] == DNA_TOKEN_A ? 10 : 20;
        assert_int_equal(t[0], DNA_TOKEN_BOS);
        assert_int_equal(t[1], n == 10 ? DNA_TOKEN_A : DNA_TOKEN_G);
        for (int l = 1; l < L; l++) {
            if (l <= n) assert_true(t[l] >= DNA_TOKEN_A && t[l] <= DNA_TOKEN_T);
            else assert_int_equal(t[l], DNA_TOKEN_PAD);
        }
        for (int l = 0; l < L; l++) {
            if (l < n - 1) assert_int_equal(g[l], t[l + 1]);
            else if (l >= n) assert_int_equal(g[l], -1);
        }
    }
    ssm_batch bad = {.B = 0, .L = L, .tokens = tok, .targets = tgt};
    assert_int_equal(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &bad), SSM_ERR_ARG);
    /* no validation data (valid_fraction 0): a clear error */
    assert_int_equal(ssm_task_dna.next_batch(task, SSM_SPLIT_VALID, &rng, &batch), SSM_ERR_MISSING);
    assert_non_null(strstr(ssm_last_error(), "no validation data"));
    ssm_task_dna.destroy(task);
    free(p);
    tmp_rm(dir);
}

static void test_baseline_symbols(void **st) {
    (void)st;
    char *dir = strdup(tu_tmpdir());
    char *p = write_tmp(dir, "b.fa", ">a\nACGTNacgt\n>b\nGGCY\n");
    const char *files[] = {p};
    fasta_set_options o = fasta_set_options_default();
    o.valid_fraction = 0;
    for (int mask = 0; mask < 2; mask++) {
        void *task;
        TU_OK(dna_task_open(files, 1, NULL, 0, &o, mask, 0.0, &task));
        const int32_t *sym;
        size_t n;
        int alphabet;
        TU_OK(ssm_task_dna.baseline_symbols(task, SSM_SPLIT_TRAIN, 1000, &sym, &n, &alphabet));
        assert_int_equal(alphabet, 4);
        const int32_t want0[] = {0, 1, 2, 3, -1, 0, 1, 2, 3, -1, 2, 2, 1, -1, -1};
        const int32_t want1[] = {0, 1, 2, 3, -1, -1, -1, -1, -1, -1, 2, 2, 1, -1, -1};
        assert_int_equal(n, 15);
        assert_memory_equal(sym, mask ? want1 : want0, sizeof want0);
        TU_OK(ssm_task_dna.baseline_symbols(task, SSM_SPLIT_TRAIN, 3, &sym, &n, &alphabet));
        assert_int_equal(n, 3);
        assert_memory_equal(sym, want0, 3 * sizeof(int32_t));
        ssm_task_dna.destroy(task);
    }
    free(p);
    tmp_rm(dir);
}

/* ---- scoring, prompts, output -------------------------------------------------------------- */

static void test_records(void **st) {
    (void)st;
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_data_path("data/fasta/ok_crlf.fa"));
    for (int mask = 0; mask < 2; mask++) {
        void *task, *reader;
        TU_OK(dna_task_open(NULL, 0, NULL, 0, NULL, mask, 0.0, &task));
        TU_OK(ssm_task_dna.open_records(task, path, &reader));
        ssm_record rec;
        int done, n = 0;
        const char *names[] = {"chr1", "chr2", "chr3"};
        const size_t lengths[] = {300, 210, 37};
        for (;;) {
            TU_OK(ssm_task_dna.next_record(reader, &rec, &done));
            if (done) break;
            assert_string_equal(rec.id, names[n]);
            assert_int_equal(rec.length, lengths[n]);
            assert_int_equal(rec.tokens[0], DNA_TOKEN_BOS);
            size_t n_scored = 0, n_lower = 0, n_amb = 0;
            for (size_t i = 0; i < rec.length; i++) {
                int32_t t = rec.tokens[i + 1];
                assert_true(t >= DNA_TOKEN_A && t <= DNA_TOKEN_N);
                int s = rec.scored ? rec.scored[i] : 1;
                n_scored += s;
                if (t == DNA_TOKEN_N) assert_int_equal(s, 0), n_amb++;
            }
            if (n == 1) { /* chr2: acgtacgtnn, NNNNRYKM */
                assert_non_null(rec.scored);
                n_lower = 8;
                assert_int_equal(n_amb, 2 + 8);
                assert_int_equal(n_scored, 210 - n_amb - (mask ? n_lower : 0));
            } else {
                assert_null(rec.scored);
                assert_int_equal(n_scored, rec.length);
            }
            n++;
        }
        assert_int_equal(n, 3);
        ssm_task_dna.close_records(reader);
        /* without data the task cannot serve batches */
        int32_t tk[4], tg[4];
        ssm_batch b = {.B = 1, .L = 4, .tokens = tk, .targets = tg};
        ssm_rng rng;
        ssm_rng_seed(&rng, 1);
        assert_int_equal(ssm_task_dna.next_batch(task, SSM_SPLIT_TRAIN, &rng, &b), SSM_ERR_ARG);
        ssm_task_dna.destroy(task);
    }
    /* a bad file fails with its message */
    void *task, *reader;
    TU_OK(dna_task_open(NULL, 0, NULL, 0, NULL, 0, 0.0, &task));
    snprintf(path, sizeof path, "%s", tu_data_path("data/fasta/bad_qual_length.fq"));
    TU_OK(ssm_task_dna.open_records(task, path, &reader));
    ssm_record rec;
    int done;
    TU_OK(ssm_task_dna.next_record(reader, &rec, &done));
    assert_int_equal(ssm_task_dna.next_record(reader, &rec, &done), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "bad_qual_length.fq:8"));
    ssm_task_dna.close_records(reader);
    assert_int_equal(ssm_task_dna.open_records(task, "/nonexistent.fa", &reader), SSM_ERR_IO);
    ssm_task_dna.destroy(task);
}

static void test_encode_and_write(void **st) {
    (void)st;
    int32_t *tk;
    size_t n;
    const char *raw = "  ACGT\nNRa\r\nu\n";
    TU_OK(ssm_task_dna.encode(NULL, raw, strlen(raw), &tk, &n));
    const int32_t want[] = {7, 8, 9, 10, 11, 11, 7, 10};
    assert_int_equal(n, 8);
    assert_memory_equal(tk, want, sizeof want);
    free(tk);
    const char *fa = ">x some description\r\nACG\r\nT\r\n";
    TU_OK(ssm_task_dna.encode(NULL, fa, strlen(fa), &tk, &n));
    assert_int_equal(n, 4);
    assert_memory_equal(tk, want, 4 * sizeof(int32_t));
    free(tk);
    TU_OK(ssm_task_dna.encode(NULL, "", 0, &tk, &n));
    assert_int_equal(n, 0);
    free(tk);
    assert_int_equal(ssm_task_dna.encode(NULL, "ACGX", 4, &tk, &n), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "'X' at byte 3"));
    assert_null(tk);
    const char *two = ">a\nACGT\n>b\nACGT\n";
    assert_int_equal(ssm_task_dna.encode(NULL, two, strlen(two), &tk, &n), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "more than one FASTA record"));

    /* 130 bases (after a BOS and with a PAD inside): lines of 60, 60, 10 */
    int32_t out[133];
    out[0] = DNA_TOKEN_BOS;
    for (int i = 1; i < 133; i++) out[i] = DNA_TOKEN_A + (i % 5);
    out[50] = DNA_TOKEN_PAD;
    out[51] = DNA_TOKEN_SEP;
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    TU_OK(ssm_task_dna.write_tokens(NULL, out, 133, mf));
    fclose(mf);
    assert_int_equal(len, 130 + 3);
    assert_int_equal(buf[60], '\n');
    assert_int_equal(buf[121], '\n');
    assert_int_equal(buf[132], '\n');
    assert_int_equal(buf[0], "ACGTN"[1]);
    /* it reads back to the same bases */
    TU_OK(ssm_task_dna.encode(NULL, buf, len, &tk, &n));
    assert_int_equal(n, 130);
    for (size_t i = 0, j = 1; i < n; i++, j++) {
        while (out[j] < DNA_TOKEN_A) j++;
        assert_int_equal(tk[i], out[j]);
    }
    free(tk);
    free(buf);
    mf = open_memstream(&buf, &len);
    int32_t bad[] = {DNA_TOKEN_A, 12};
    assert_int_equal(ssm_task_dna.write_tokens(NULL, bad, 2, mf), SSM_ERR_ARG);
    fclose(mf);
    free(buf);
}

/* ---- recipe --------------------------------------------------------------------------------- */

static ssm_status create_from(const char *yaml, int with_data, ssm_recipe **r, void **task) {
    TU_OK(ssm_recipe_parse("test.yaml", yaml, strlen(yaml), r));
    ssm_node *t = ssm_node_get((*r)->root, "task"), *d = ssm_node_get((*r)->root, "data");
    return ssm_task_dna.create(*r, t, with_data ? d : NULL, task);
}

static void test_recipe(void **st) {
    (void)st;
    fixture f;
    fixture_make(&f, 5000);
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "task:\n  name: dna\n  mask_lowercase: true\n  rc_prob: 0.5\n"
             "data:\n  train: ['%s/*.fa']\n  valid_fraction: 0.1\n", f.dir);
    ssm_recipe *r;
    void *task;
    TU_OK(create_from(yaml, 1, &r, &task));
    const int32_t *sym;
    size_t n;
    int alphabet;
    TU_OK(ssm_task_dna.baseline_symbols(task, SSM_SPLIT_VALID, 1 << 20, &sym, &n, &alphabet));
    assert_int_equal(n, 500 + 1);
    ssm_task_dna.destroy(task);
    ssm_recipe_free(r);

    /* scoring only: data is not opened */
    TU_OK(create_from(yaml, 0, &r, &task));
    ssm_task_dna.destroy(task);
    ssm_recipe_free(r);

    static const struct {
        const char *yaml, *want;
    } bad[] = {
        {"task:\n  name: dna\n  rc_prb: 0.5\ndata:\n  train: [x.fa]\n", "rc_prob"},
        {"task:\n  name: dna\n  rc_prob: 2\ndata:\n  train: [x.fa]\n", "test.yaml:3"},
        {"task:\n  name: dna\ndata:\n  valid_fraction: 0.1\n", "needs data.train"},
        {"task:\n  name: dna\ndata:\n  train: [/nonexistent/x.fa]\n", "/nonexistent/x.fa"},
        {"task:\n  name: dna\ndata:\n  train: ['/nonexistent/*.fa']\n", "no file matches"},
        {"task:\n  name: dna\ndata:\n  train: [x.fa]\n  valid_fraction: 0.9\n", "valid_fraction"},
        {"task:\n  name: dna\ndata:\n  train: [x.fa]\n  bedd: x.bed\n", "bed"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ssm_status s = create_from(bad[i].yaml, 1, &r, &task);
        if (s == SSM_OK) fail_msg("recipe case %zu accepted", i);
        if (!strstr(ssm_last_error(), bad[i].want))
            fail_msg("recipe case %zu: want \"%s\" in: %s", i, bad[i].want, ssm_last_error());
        ssm_recipe_free(r);
    }
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_revcomp),
        cmocka_unit_test(test_next_batch),
        cmocka_unit_test(test_reverse_complement_windows),
        cmocka_unit_test(test_padding),
        cmocka_unit_test(test_baseline_symbols),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_encode_and_write),
        cmocka_unit_test(test_recipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
