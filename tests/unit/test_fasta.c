/* test_fasta.c: the FASTA/FASTQ loader (loaders/fasta): streaming reader on plain, gzip, bgzip,
 * CRLF and FASTQ input; every bad-input case of tests/data/fasta/ with its message; training
 * sets through faidx (index built beside, or kept in memory) and in memory (plain gzip, layouts
 * faidx cannot index); multi-file sets; the fixed validation split; deterministic, length-weighted
 * window draws; BED regions. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#include "../../loaders/fasta/fasta.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static char *fixture(const char *name) {
    char rel[512];
    snprintf(rel, sizeof rel, "data/fasta/%s", name);
    return strdup(tu_data_path(rel));
}

static char *tmp_new(void) { return strdup(tu_tmpdir()); }

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}
static void tmp_rm(char *dir) {
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static char *path_in(const char *dir, const char *name) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

/* Copy fixture `name` into dir (tests never write index files into the source tree). */
static char *copy_fixture(const char *dir, const char *name) {
    char *src = fixture(name);
    size_t n;
    char *data = read_all(src, &n);
    char *dst = path_in(dir, name);
    write_file(dst, data, n);
    free(data);
    free(src);
    return dst;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int has_file_index(const char *path, const char *ext) {
    char buf[4200];
    snprintf(buf, sizeof buf, "%s%s", path, ext);
    return exists(buf);
}

/* All records of a file through the reader: names joined by ',' and bases joined by '|'. */
static void read_records(const char *path, char **names, char **seqs) {
    fasta_reader *r;
    TU_OK(fasta_reader_open(path, &r));
    size_t cn = 1, cs = 1;
    *names = calloc(1, 1);
    *seqs = calloc(1, 1);
    for (;;) {
        fasta_entry e;
        int done;
        TU_OK(fasta_reader_next(r, &e, &done));
        if (done) break;
        assert_non_null(e.seq);
        assert_int_equal(strlen(e.seq), e.length);
        if (e.qual) assert_int_equal(strlen(e.qual), e.length);
        *names = realloc(*names, cn + strlen(e.name) + 1);
        strcat(*names, e.name), strcat(*names, ","), cn += strlen(e.name) + 1;
        *seqs = realloc(*seqs, cs + e.length + 1);
        strcat(*seqs, e.seq), strcat(*seqs, "|"), cs += e.length + 1;
    }
    fasta_reader_close(r);
}

/* ---- streaming reader --------------------------------------------------------------------- */

static void test_reader_formats(void **st) {
    (void)st;
    char *names0, *seqs0;
    char *p = fixture("ok.fa");
    read_records(p, &names0, &seqs0);
    free(p);
    assert_string_equal(names0, "chr1,chr2,chr3,");
    /* case, N and IUPAC codes are kept as they are */
    assert_non_null(strstr(seqs0, "acgtacgtnn"));
    assert_non_null(strstr(seqs0, "NNNNRYKM"));
    assert_int_equal(strlen(seqs0), 300 + 210 + 37 + 3);
    const char *same[] = {"ok_crlf.fa", "ok.fa.gz", "ok.fa.bgz"};
    for (int i = 0; i < 3; i++) {
        char *names, *seqs;
        p = fixture(same[i]);
        read_records(p, &names, &seqs);
        assert_string_equal(names, names0);
        assert_string_equal(seqs, seqs0);
        free(names), free(seqs), free(p);
    }
    free(names0), free(seqs0);

    /* FASTQ, 4-line and multi-line */
    fasta_reader *r;
    p = fixture("ok.fq");
    TU_OK(fasta_reader_open(p, &r));
    int n = 0, done;
    fasta_entry e;
    for (;;) {
        TU_OK(fasta_reader_next(r, &e, &done));
        if (done) break;
        char want[16];
        snprintf(want, sizeof want, "read%d", n);
        assert_string_equal(e.name, want);
        assert_int_equal(e.length, 50 + 10 * n);
        assert_non_null(e.qual);
        assert_int_equal(strlen(e.qual), e.length);
        n++;
    }
    assert_int_equal(n, 5);
    assert_int_equal(fasta_reader_format(r), '@');
    fasta_reader_close(r);
    free(p);
    p = fixture("ok_multiline.fq");
    TU_OK(fasta_reader_open(p, &r));
    TU_OK(fasta_reader_next(r, &e, &done));
    assert_int_equal(done, 0);
    assert_string_equal(e.name, "long");
    assert_int_equal(e.length, 130);
    assert_int_equal(strlen(e.qual), 130);
    TU_OK(fasta_reader_next(r, &e, &done));
    assert_int_equal(done, 1);
    fasta_reader_close(r);
    free(p);

    /* counting without storing */
    p = fixture("ok.fa.bgz");
    TU_OK(fasta_reader_open(p, &r));
    fasta_reader_store(r, 0);
    size_t total = 0;
    for (;;) {
        TU_OK(fasta_reader_next(r, &e, &done));
        if (done) break;
        assert_null(e.seq);
        total += e.length;
    }
    assert_int_equal(total, 547);
    fasta_reader_close(r);
    free(p);
}

/* Each bad file: an error whose message names the file and says what is wrong where. */
static void test_reader_bad_input(void **st) {
    (void)st;
    static const struct {
        const char *file;
        const char *want[3];
    } cases[] = {
        {"bad_not_fasta.txt", {":1: not a FASTA or FASTQ file", "LOCUS", NULL}},
        {"bad_binary.fa", {":1: not a FASTA or FASTQ file (binary data)", NULL}},
        {"bad_empty.fa", {"not a FASTA or FASTQ file", "empty", NULL}},
        {"bad_empty_record.fa", {":3: record 'b' is empty", NULL}},
        {"bad_no_name.fa", {":3: header with no name", NULL}},
        {"bad_qual_length.fq", {":8: record 'r2'", "quality has 7 characters", "8 bases"}},
        {"bad_fastq_truncated.fq", {"record 'r2'", "without its '+' line", NULL}},
        {"bad_bytes.fa", {":5: record 'b'", "'-' (0x2d) at column 4", "not a nucleotide code"}},
        {"bad_duplicate.fa", {":5: duplicate record name 'a'", "line 1", NULL}},
        {"bad_truncated.fa.gz", {"truncated or corrupt gzip data", NULL}},
        {"bad_truncated.fa.bgz", {"truncated bgzip file", NULL}},
        {"bad_truncated_at_block.fa.bgz", {"truncated bgzip file", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = fixture(cases[i].file);
        fasta_reader *r;
        ssm_status s = fasta_reader_open(p, &r);
        if (s == SSM_OK) {
            for (;;) {
                fasta_entry e;
                int done;
                if ((s = fasta_reader_next(r, &e, &done)) || done) break;
            }
            fasta_reader_close(r);
        }
        const char *msg = ssm_last_error();
        if (s == SSM_OK) fail_msg("%s: accepted", cases[i].file);
        if (!strstr(msg, cases[i].file)) fail_msg("%s: message does not name the file: %s", cases[i].file, msg);
        for (int k = 0; k < 3 && cases[i].want[k]; k++)
            if (!strstr(msg, cases[i].want[k]))
                fail_msg("%s: message lacks \"%s\": %s", cases[i].file, cases[i].want[k], msg);
        /* the training set refuses it too, with the same kind of message */
        char *dir = tmp_new();
        char *q = copy_fixture(dir, cases[i].file);
        fasta_set *set = NULL;
        const char *files[] = {q};
        s = fasta_set_open(files, 1, NULL, 0, NULL, &set);
        if (s == SSM_OK) fail_msg("%s: fasta_set_open accepted it", cases[i].file);
        if (!strstr(ssm_last_error(), cases[i].file))
            fail_msg("%s: set message does not name the file: %s", cases[i].file, ssm_last_error());
        free(q);
        tmp_rm(dir);
        free(p);
    }
    /* from a pipe the end cannot be checked at open: the missing end-of-file block is noticed
     * when the data ends */
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        size_t n;
        char *p = fixture("bad_truncated_at_block.fa.bgz");
        char *data = read_all(p, &n);
        ssize_t w = write(fd[1], data, n);
        _exit(w == (ssize_t)n ? 0 : 1);
    }
    close(fd[1]);
    int saved = dup(0);
    dup2(fd[0], 0);
    close(fd[0]);
    {
        fasta_reader *r;
        TU_OK(fasta_reader_open("-", &r));
        ssm_status s;
        for (;;) {
            fasta_entry e;
            int done;
            if ((s = fasta_reader_next(r, &e, &done)) || done) break;
        }
        assert_int_equal(s, SSM_ERR_FORMAT);
        assert_non_null(strstr(ssm_last_error(), "-: truncated bgzip data"));
        fasta_reader_close(r);
    }
    dup2(saved, 0);
    close(saved);
    waitpid(pid, NULL, 0);

    /* a missing file and a folder */
    fasta_reader *r;
    assert_int_equal(fasta_reader_open("/nonexistent/x.fa", &r), SSM_ERR_IO);
    assert_non_null(strstr(ssm_last_error(), "/nonexistent/x.fa"));
    char *dir = tmp_new();
    assert_int_equal(fasta_reader_open(dir, &r), SSM_ERR_IO);
    assert_non_null(strstr(ssm_last_error(), "folder"));
    tmp_rm(dir);
}

/* ---- training sets ------------------------------------------------------------------------ */

/* The bases of every record fetched from the set equal what the reader reads. */
static void check_set_matches_reader(fasta_set *set, int file, const char *path) {
    char *names, *seqs;
    read_records(path, &names, &seqs);
    size_t off = 0; /* of the record in seqs ("bases|bases|...") */
    for (int i = 0; i < fasta_set_n_records(set); i++) {
        const fasta_record *r = fasta_set_record(set, i);
        if (r->file != file) continue;
        char *buf = malloc((size_t)r->length + 1);
        TU_OK(fasta_set_fetch(set, i, 0, r->length, buf));
        assert_true(off + (size_t)r->length < strlen(seqs) + 1);
        assert_memory_equal(buf, seqs + off, (size_t)r->length);
        assert_int_equal(seqs[off + (size_t)r->length], '|');
        if (r->length > 20) { /* a piece from the middle */
            TU_OK(fasta_set_fetch(set, i, 7, 11, buf));
            assert_memory_equal(buf, seqs + off + 7, 11);
        }
        off += (size_t)r->length + 1;
        free(buf);
    }
    assert_int_equal(off, strlen(seqs));
    free(names), free(seqs);
}

static void test_set_access(void **st) {
    (void)st;
    static const struct {
        const char *file;
        fasta_access access;
        const char *index; /* index files expected beside it */
    } cases[] = {
        {"ok.fa", FASTA_ACCESS_FAIDX, ".fai"},
        {"ok_crlf.fa", FASTA_ACCESS_FAIDX, ".fai"},
        {"ok.fa.bgz", FASTA_ACCESS_FAIDX, ".gzi"},
        {"ok.fq", FASTA_ACCESS_FAIDX, ".fai"},
        {"ok.fa.gz", FASTA_ACCESS_MEMORY, NULL},       /* plain gzip: no random access */
        {"bad_var_lines.fa", FASTA_ACCESS_MEMORY, NULL}, /* valid FASTA, not indexable */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = tmp_new();
        char *p = copy_fixture(dir, cases[i].file);
        const char *files[] = {p};
        fasta_set *set;
        TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
        if (fasta_set_file_access(set, 0) != cases[i].access)
            fail_msg("%s: access %d, want %d", cases[i].file, fasta_set_file_access(set, 0), cases[i].access);
        if (cases[i].index) {
            assert_true(has_file_index(p, ".fai"));
            assert_true(has_file_index(p, cases[i].index));
        } else {
            assert_false(has_file_index(p, ".fai"));
        }
        check_set_matches_reader(set, 0, p);
        fasta_set_free(set);

        /* again: an existing index is used as it is (same records) */
        TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
        assert_int_equal(fasta_set_file_access(set, 0), cases[i].access);
        check_set_matches_reader(set, 0, p);
        fasta_set_free(set);
        free(p);
        tmp_rm(dir);
    }
}

/* write_index 0 (as for a read-only folder): the index is built elsewhere and kept in memory. */
static void test_set_index_in_memory(void **st) {
    (void)st;
    const char *names[] = {"ok.fa", "ok.fa.bgz"};
    for (int i = 0; i < 2; i++) {
        char *dir = tmp_new();
        char *p = copy_fixture(dir, names[i]);
        const char *files[] = {p};
        fasta_set_options o = fasta_set_options_default();
        o.write_index = 0;
        fasta_set *set;
        TU_OK(fasta_set_open(files, 1, NULL, 0, &o, &set));
        assert_int_equal(fasta_set_file_access(set, 0), FASTA_ACCESS_FAIDX);
        assert_false(has_file_index(p, ".fai"));
        assert_false(has_file_index(p, ".gzi"));
        check_set_matches_reader(set, 0, p);
        fasta_set_free(set);
        if (geteuid() != 0) { /* a really read-only folder (root may write anywhere) */
            chmod(dir, 0555);
            TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
            assert_false(has_file_index(p, ".fai"));
            check_set_matches_reader(set, 0, p);
            fasta_set_free(set);
            chmod(dir, 0755);
        }
        free(p);
        tmp_rm(dir);
    }
}

/* An index older than its file is rebuilt; bytes that faidx returns are still checked. */
static void test_set_stale_index_and_fetch_check(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *p = path_in(dir, "x.fa");
    const char *a = ">x\nACGTACGTAC\nGGGGCCCCAA\n";
    write_file(p, a, strlen(a));
    const char *files[] = {p};
    fasta_set *set;
    TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
    assert_int_equal(fasta_set_record(set, 0)->length, 20);
    fasta_set_free(set);
    /* the file grows; its index is now older than it */
    const char *b = ">x\nACGTACGTAC\nGGGGCCCCAA\nTT\n>y\nAAAA\n";
    write_file(p, b, strlen(b));
    char *fai = path_in(dir, "x.fa.fai");
    struct utimbuf old = {1000000000, 1000000000};
    utime(fai, &old);
    TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
    assert_int_equal(fasta_set_n_records(set), 2);
    assert_int_equal(fasta_set_record(set, 0)->length, 22);
    fasta_set_free(set);
    /* a byte changed behind a fresh index: caught when fetched */
    const char *c = ">x\nACGTACGTAC\nGGGGCCXCAA\nTT\n>y\nAAAA\n";
    write_file(p, c, strlen(c));
    struct utimbuf older = {1000000000, 1000000000}, newer = {2000000000, 2000000000};
    utime(p, &older);
    utime(fai, &newer);
    TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
    char buf[32];
    TU_OK(fasta_set_fetch(set, 0, 0, 10, buf));
    assert_int_equal(fasta_set_fetch(set, 0, 10, 10, buf), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "record 'x' position 16"));
    assert_non_null(strstr(ssm_last_error(), "'X'"));
    /* outside the record */
    assert_int_equal(fasta_set_fetch(set, 1, 2, 3, buf), SSM_ERR_ARG);
    fasta_set_free(set);
    free(fai);
    free(p);
    tmp_rm(dir);
}

/* A record whose first line is blanks alone: htslib indexes it with 0 bases per line and then
 * divides by that when it fetches (SIGFPE; fuzz_fasta's finding, tests/fuzz/fasta_corpus/
 * blank_first_line.fa). The index is refused and the bases held in memory; a written .fai with
 * 0 bases per line is refused and rebuilt the same way. */
static void test_set_zero_bases_per_line(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *p = path_in(dir, "z.fa");
    const char *a = ">a\n \nT\n>e\nG\n";
    write_file(p, a, strlen(a));
    const char *files[] = {p};
    for (int round = 0; round < 2; round++) { /* 2: beside a fresh index of 0 bases per line */
        if (round) {
            char *fai = path_in(dir, "z.fa.fai");
            const char *bad = "a\t1\t3\t0\t2\ne\t1\t10\t1\t2\n";
            write_file(fai, bad, strlen(bad));
            struct utimbuf older = {1000000000, 1000000000}, newer = {2000000000, 2000000000};
            utime(p, &older);
            utime(fai, &newer);
            free(fai);
        }
        fasta_set *set;
        TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
        assert_int_equal(fasta_set_n_records(set), 2);
        assert_int_equal(fasta_set_record(set, 0)->length, 1);
        char buf[4] = {0};
        TU_OK(fasta_set_fetch(set, 0, 0, 1, buf));
        assert_int_equal(buf[0], 'T');
        TU_OK(fasta_set_fetch(set, 1, 0, 1, buf));
        assert_int_equal(buf[0], 'G');
        fasta_set_free(set);
    }
    free(p);
    tmp_rm(dir);
}

static void test_set_multi_file(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *a = copy_fixture(dir, "ok.fa"), *b = copy_fixture(dir, "other.fa.gz"),
         *c = copy_fixture(dir, "ok.fq");
    const char *files[] = {a, b, c};
    fasta_set *set;
    TU_OK(fasta_set_open(files, 3, NULL, 0, NULL, &set));
    assert_int_equal(fasta_set_n_files(set), 3);
    assert_int_equal(fasta_set_n_records(set), 3 + 1 + 5);
    const char *want[] = {"chr1", "chr2", "chr3", "plasmid", "read0", "read1", "read2", "read3", "read4"};
    const int file_of[] = {0, 0, 0, 1, 2, 2, 2, 2, 2};
    int64_t total = 0;
    for (int i = 0; i < 9; i++) {
        assert_string_equal(fasta_set_record(set, i)->name, want[i]);
        assert_int_equal(fasta_set_record(set, i)->file, file_of[i]);
        total += fasta_set_record(set, i)->length;
    }
    assert_int_equal(total, 547 + 500 + 350);
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_TRAIN) + fasta_set_split_bases(set, SSM_SPLIT_VALID),
                     total);
    for (int f = 0; f < 3; f++) check_set_matches_reader(set, f, files[f]);
    fasta_set_free(set);

    /* the same names in two files */
    char *d = copy_fixture(dir, "ok_crlf.fa");
    const char *dup[] = {a, d};
    assert_int_equal(fasta_set_open(dup, 2, NULL, 0, NULL, &set), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "duplicate record name 'chr1'"));
    assert_non_null(strstr(ssm_last_error(), "ok_crlf.fa"));
    assert_non_null(strstr(ssm_last_error(), "ok.fa"));

    /* validation files: whole files per split */
    const char *train[] = {a}, *valid[] = {b};
    TU_OK(fasta_set_open(train, 1, valid, 1, NULL, &set));
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_TRAIN), 547);
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_VALID), 500);
    assert_int_equal(fasta_set_n_regions(set, SSM_SPLIT_VALID), 1);
    assert_int_equal(fasta_set_region(set, SSM_SPLIT_VALID, 0)->record, 3);
    fasta_set_free(set);
    free(a), free(b), free(c), free(d);
    tmp_rm(dir);
}

/* The last floor(valid_fraction * length) bases of each record, the same every time. */
static void test_valid_split(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *a = copy_fixture(dir, "ok.fa");
    const char *files[] = {a};
    fasta_set_options o = fasta_set_options_default();
    o.valid_fraction = 0.1;
    fasta_set *set;
    TU_OK(fasta_set_open(files, 1, NULL, 0, &o, &set));
    /* lengths 300, 210, 37 -> 30, 21, 3 held out */
    const int64_t len[] = {300, 210, 37}, nv[] = {30, 21, 3};
    assert_int_equal(fasta_set_n_regions(set, SSM_SPLIT_TRAIN), 3);
    assert_int_equal(fasta_set_n_regions(set, SSM_SPLIT_VALID), 3);
    for (int i = 0; i < 3; i++) {
        const fasta_region *t = fasta_set_region(set, SSM_SPLIT_TRAIN, i);
        const fasta_region *v = fasta_set_region(set, SSM_SPLIT_VALID, i);
        assert_int_equal(t->record, i);
        assert_int_equal(t->start, 0);
        assert_int_equal(t->end, len[i] - nv[i]);
        assert_int_equal(v->record, i);
        assert_int_equal(v->start, len[i] - nv[i]);
        assert_int_equal(v->end, len[i]);
    }
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_VALID), 54);
    fasta_set_free(set);
    /* the default is 5% */
    TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_VALID), 15 + 10 + 1);
    fasta_set_free(set);
    /* 0: no validation data, which a draw reports */
    o.valid_fraction = 0;
    TU_OK(fasta_set_open(files, 1, NULL, 0, &o, &set));
    ssm_rng rng;
    ssm_rng_seed(&rng, 1);
    fasta_window w;
    assert_int_equal(fasta_set_draw(set, SSM_SPLIT_VALID, 10, &rng, &w), SSM_ERR_MISSING);
    assert_non_null(strstr(ssm_last_error(), "no validation data"));
    fasta_set_free(set);
    o.valid_fraction = 1.5;
    assert_int_equal(fasta_set_open(files, 1, NULL, 0, &o, &set), SSM_ERR_ARG);
    free(a);
    tmp_rm(dir);
}

/* Two records of 9000 and 1000 bases: draws land in proportion to length, stay inside the
 * split's regions, and repeat exactly from the same rng state. */
static void test_draws(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *p = path_in(dir, "two.fa");
    FILE *f = fopen(p, "w");
    fprintf(f, ">big\n");
    for (int i = 0; i < 9000; i++) fputc("ACGT"[i % 4], f), (i % 60 == 59) ? fputc('\n', f) : 0;
    fprintf(f, "\n>small\n");
    for (int i = 0; i < 1000; i++) fputc("ACGT"[(i / 3) % 4], f), (i % 60 == 59) ? fputc('\n', f) : 0;
    fprintf(f, "\n");
    fclose(f);
    const char *files[] = {p};
    fasta_set *set;
    TU_OK(fasta_set_open(files, 1, NULL, 0, NULL, &set));
    ssm_rng a, b;
    ssm_rng_seed(&a, 42);
    ssm_rng_seed(&b, 42);
    int n_big = 0;
    enum { draws = 20000, width = 33 };
    for (int i = 0; i < draws; i++) {
        fasta_window w, v;
        TU_OK(fasta_set_draw(set, SSM_SPLIT_TRAIN, width, &a, &w));
        TU_OK(fasta_set_draw(set, SSM_SPLIT_TRAIN, width, &b, &v));
        assert_memory_equal(&w, &v, sizeof w);
        const fasta_region *r = fasta_set_region(set, SSM_SPLIT_TRAIN, w.region);
        assert_int_equal(r->record, w.record);
        assert_int_equal(w.length, width);
        assert_true(w.start >= r->start && w.start + w.length <= r->end);
        n_big += w.record == 0;
    }
    double frac = (double)n_big / draws;
    assert_true(frac > 0.88 && frac < 0.92); /* 8550 / (8550 + 950) = 0.9 */
    /* validation draws stay in the held-out tails */
    for (int i = 0; i < 1000; i++) {
        fasta_window w;
        TU_OK(fasta_set_draw(set, SSM_SPLIT_VALID, width, &a, &w));
        int64_t len = fasta_set_record(set, w.record)->length;
        assert_true(w.start >= len - len / 20 && w.start + w.length <= len);
    }
    /* a window wider than the region: the whole region */
    fasta_window w;
    TU_OK(fasta_set_draw(set, SSM_SPLIT_VALID, 100000, &a, &w));
    assert_int_equal(w.length, fasta_set_record(set, w.record)->length / 20);
    assert_int_equal(fasta_set_draw(set, SSM_SPLIT_TRAIN, 0, &a, &w), SSM_ERR_ARG);
    fasta_set_free(set);
    free(p);
    tmp_rm(dir);
}

static fasta_set *open_with_bed(const char *dir, const char *fa, const char *bed_text, ssm_status *s) {
    char *bed = path_in(dir, "regions.bed");
    write_file(bed, bed_text, strlen(bed_text));
    const char *files[] = {fa};
    fasta_set_options o = fasta_set_options_default();
    o.bed = bed;
    fasta_set *set = NULL;
    *s = fasta_set_open(files, 1, NULL, 0, &o, &set);
    free(bed);
    return set;
}

static void test_bed(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *a = copy_fixture(dir, "ok.fa");
    ssm_status s;
    fasta_set *set = open_with_bed(dir, a,
                                   "track name=x\r\n# comment\r\n"
                                   "chr1\t0\t100\ttrain\r\n"
                                   "chr1\t100\t150\tvalid\r\n"
                                   "chr1\t150\t300\ttest\r\n"
                                   "chr2\t10\t210\r\n"
                                   "chr3 0 37 validation\r\n", &s);
    TU_OK(s);
    /* train: chr1 0-100, chr2 10-200 (unnamed: its last 5% = 10 bases to validation) */
    assert_int_equal(fasta_set_n_regions(set, SSM_SPLIT_TRAIN), 2);
    const fasta_region *r = fasta_set_region(set, SSM_SPLIT_TRAIN, 1);
    assert_int_equal(r->record, 1);
    assert_int_equal(r->start, 10);
    assert_int_equal(r->end, 200);
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_TRAIN), 100 + 190);
    assert_int_equal(fasta_set_n_regions(set, SSM_SPLIT_VALID), 3);
    assert_int_equal(fasta_set_split_bases(set, SSM_SPLIT_VALID), 50 + 10 + 37);
    r = fasta_set_region(set, SSM_SPLIT_VALID, 1);
    assert_int_equal(r->record, 1);
    assert_int_equal(r->start, 200);
    fasta_set_free(set);

    static const struct {
        const char *bed, *want;
    } bad[] = {
        {"chr1\t0\t10\nchrX\t0\t10\n", "regions.bed:2: 'chrX' is not the name of a record"},
        {"chr1\t0\t301\n", "regions.bed:1: end 301 is past the end of 'chr1' (300 bases)"},
        {"chr1\t10\t10\n", "regions.bed:1: start '10' and end '10'"},
        {"chr1\tx\t10\n", "regions.bed:1: start 'x'"},
        {"chr1\t0\n", "regions.bed:1: a BED line needs chrom, start and end"},
        {"chr1\t0\t10\texon\n", "regions.bed:1: the name column must be train, valid or test, got 'exon'"},
        {"chr1\t0\t100\ttrain\nchr1\t50\t60\tvalid\n", "regions.bed:2: this validation interval overlaps "
                                                      "the training interval on line 1"},
        {"chr1\t0\t100\ttest\n", "no training bases"},
        {"# nothing\n", "holds no interval"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set = open_with_bed(dir, a, bad[i].bed, &s);
        assert_null(set);
        if (s == SSM_OK || !strstr(ssm_last_error(), bad[i].want))
            fail_msg("BED case %zu: want \"%s\", got: %s", i, bad[i].want, ssm_last_error());
    }
    free(a);
    tmp_rm(dir);
}

static void test_glob(void **st) {
    (void)st;
    char *dir = tmp_new();
    char *x = copy_fixture(dir, "other.fa"), *y = copy_fixture(dir, "ok.fa"),
         *z = copy_fixture(dir, "ok.fq");
    char pat[4200], lit[4200];
    snprintf(pat, sizeof pat, "%s/*.fa", dir);
    snprintf(lit, sizeof lit, "%s/missing.fa", dir);
    const char *pats[] = {pat, lit};
    char **paths;
    int n;
    TU_OK(fasta_glob(pats, 2, &paths, &n));
    assert_int_equal(n, 3);
    assert_string_equal(paths[0], y); /* sorted */
    assert_string_equal(paths[1], x);
    assert_string_equal(paths[2], lit); /* kept: opening it reports the missing file */
    assert_null(paths[3]);
    fasta_paths_free(paths);
    snprintf(pat, sizeof pat, "%s/*.fasta", dir);
    const char *none[] = {pat};
    assert_int_equal(fasta_glob(none, 1, &paths, &n), SSM_ERR_IO);
    assert_non_null(strstr(ssm_last_error(), "no file matches"));
    free(x), free(y), free(z);
    tmp_rm(dir);
}

static void test_bases(void **st) {
    (void)st;
    const char *ok = "ACGTURYSWKMBDHVNacgturyswkmbdhvn";
    for (const char *p = ok; *p; p++) assert_true(fasta_is_base(*p));
    const char *bad = "-.*XxEeFfIiJjLlOoPpQqZz0123456789 \t\r\n>@";
    for (const char *p = bad; *p; p++) assert_false(fasta_is_base(*p));
    assert_false(fasta_is_base(0));
    assert_false(fasta_is_base(0xC3));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bases),
        cmocka_unit_test(test_reader_formats),
        cmocka_unit_test(test_reader_bad_input),
        cmocka_unit_test(test_set_access),
        cmocka_unit_test(test_set_index_in_memory),
        cmocka_unit_test(test_set_stale_index_and_fetch_check),
        cmocka_unit_test(test_set_zero_bases_per_line),
        cmocka_unit_test(test_set_multi_file),
        cmocka_unit_test(test_valid_split),
        cmocka_unit_test(test_draws),
        cmocka_unit_test(test_bed),
        cmocka_unit_test(test_glob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
