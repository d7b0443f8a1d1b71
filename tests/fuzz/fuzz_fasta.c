/* fuzz_fasta.c: fuzz target for the FASTA/FASTQ loader (loaders/fasta/fasta.c) and the DNA
 * task's record reader (tasks/dna/dna.c).
 *
 * Each input is written to a temporary file (and, for some inputs, gzip-compressed with zlib
 * into a .gz file too), then every record is read with the streaming reader (with and without
 * keeping the bases), the file is opened as a training set (fasta_set_open, index kept in
 * memory) and windows are drawn from both splits and fetched, and the records are read through
 * the dna task's open_records/next_record. Errors are fine; an error without a message, a
 * record that breaks the loader's promises (a name, IUPAC bases, a quality of the same length),
 * a crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilibssm/include \
 *     tests/fuzz/fuzz_fasta.c loaders/fasta/fasta.c tasks/dna/dna.c libssm/src/[a-z]*.c \
 *     -lhts -lz -ljansson -lyaml -lm -fopenmp -o fuzz_fasta
 *   ./fuzz_fasta tests/data/fasta tests/fuzz/fasta_corpus
 * Built with -DSSM_FUZZ_STANDALONE (as the meson test 'fuzz_fasta' is), a main of its own runs
 * the fixtures of $SSM_TEST_DATA/data/fasta (when SSM_TEST_DATA is set), the files and
 * directories named on the command line and, deterministically, mutations of
 * each (truncations, bit flips, inserted FASTA/FASTQ punctuation, deleted and repeated spans,
 * splices); SSM_FUZZ_MUTATIONS sets how many per file (default 120) and SSM_FUZZ_SEED picks
 * another stream of them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../../loaders/fasta/fasta.h"
#include "../../tasks/dna/dna.h"

#define CHECK(cond, ...)                                                                         \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "fuzz_fasta: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fputc('\n', stderr);                                                                 \
            abort();                                                                             \
        }                                                                                        \
    } while (0)

#define FAILED(s) CHECK(ssm_last_error()[0] != 0, "status %d without a message", (int)(s))

static char workdir[256];
static unsigned long serial; /* a new file name per input: no index or cache outlives its file */

static void remove_workdir(void) { rmdir(workdir); }

static void setup(void) {
    if (workdir[0]) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(workdir, sizeof workdir, "%s/fuzz_fasta.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(workdir) != NULL, "mkdtemp %s", workdir);
    atexit(remove_workdir);
}

static void write_plain(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot create %s", path);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    CHECK(fclose(f) == 0, "cannot write %s", path);
}

static void write_gzip(const char *path, const uint8_t *data, size_t size) {
    gzFile g = gzopen(path, "wb6");
    CHECK(g != NULL, "cannot create %s", path);
    CHECK(size == 0 || gzwrite(g, data, (unsigned)size) == (int)size, "cannot write %s", path);
    CHECK(gzclose(g) == Z_OK, "cannot write %s", path);
}

/* Every record through the streaming reader. */
static void stream(const char *path, int store) {
    fasta_reader *r = NULL;
    ssm_status s = fasta_reader_open(path, &r);
    if (s) {
        FAILED(s);
        CHECK(r == NULL, "reader on failure");
        return;
    }
    fasta_reader_store(r, store);
    CHECK(fasta_reader_format(r) == 0, "format before the first record");
    int64_t last_line = 0;
    for (int n = 0;; n++) {
        fasta_entry e;
        int done = 0;
        s = fasta_reader_next(r, &e, &done);
        if (s) {
            FAILED(s);
            break;
        }
        if (done) {
            CHECK(n > 0, "a file without records was accepted");
            /* reading on after the end stays at the end (or is an error with a message) */
            s = fasta_reader_next(r, &e, &done);
            CHECK(s != SSM_OK || done, "a record after the end");
            if (s) FAILED(s);
            break;
        }
        int fmt = fasta_reader_format(r);
        CHECK(fmt == '>' || fmt == '@', "format %d", fmt);
        CHECK(e.name && e.name[0], "a record without a name");
        CHECK(e.length > 0, "an empty record '%s'", e.name);
        CHECK(e.line > last_line, "line %lld after %lld", (long long)e.line, (long long)last_line);
        last_line = e.line;
        if (store) {
            CHECK(e.seq != NULL && e.seq[e.length] == 0, "bases of '%s'", e.name);
            for (size_t i = 0; i < e.length; i++)
                CHECK(fasta_is_base((unsigned char)e.seq[i]), "byte %d in '%s'", e.seq[i], e.name);
            CHECK(strlen(e.seq) == e.length, "length of '%s'", e.name);
            if (fmt == '@') CHECK(e.qual && strlen(e.qual) == e.length, "quality of '%s'", e.name);
            else CHECK(e.qual == NULL, "quality in FASTA");
        } else {
            CHECK(e.seq == NULL && e.qual == NULL, "bases kept with store 0");
        }
    }
    fasta_reader_close(r);
}

/* The file as a training set: every record, the splits, and a few windows drawn and fetched. */
static void training_set(const char *path, unsigned long seed) {
    fasta_set_options opt = fasta_set_options_default();
    opt.write_index = 0;
    opt.valid_fraction = seed % 3 == 0 ? 0.5 : 0.05;
    fasta_set *set = NULL;
    const char *files[] = {path};
    ssm_status s = fasta_set_open(files, 1, NULL, 0, &opt, &set);
    if (s) {
        FAILED(s);
        CHECK(set == NULL, "set on failure");
        return;
    }
    CHECK(fasta_set_n_files(set) == 1, "files");
    CHECK(fasta_set_file_path(set, 0) != NULL, "path");
    fasta_access a = fasta_set_file_access(set, 0);
    CHECK(a == FASTA_ACCESS_FAIDX || a == FASTA_ACCESS_MEMORY, "access %d", (int)a);
    int nr = fasta_set_n_records(set);
    CHECK(nr > 0, "a set without records");
    for (int i = 0; i < nr; i++) {
        const fasta_record *rec = fasta_set_record(set, i);
        CHECK(rec && rec->name && rec->name[0] && rec->length > 0 && rec->file == 0, "record %d", i);
    }
    ssm_rng rng;
    ssm_rng_seed(&rng, seed);
    char buf[80];
    for (int split = 0; split < 2; split++) {
        int64_t total = 0;
        for (int i = 0; i < fasta_set_n_regions(set, (ssm_split)split); i++) {
            const fasta_region *g = fasta_set_region(set, (ssm_split)split, i);
            CHECK(g && g->record >= 0 && g->record < nr, "region");
            CHECK(g->start >= 0 && g->start < g->end && g->end <= fasta_set_record(set, g->record)->length,
                  "region [%lld, %lld)", (long long)g->start, (long long)g->end);
            total += g->end - g->start;
        }
        CHECK(total == fasta_set_split_bases(set, (ssm_split)split), "split bases");
        for (int k = 0; k < 4; k++) {
            fasta_window w;
            int64_t width = 1 + (int64_t)ssm_rng_below(&rng, sizeof buf);
            s = fasta_set_draw(set, (ssm_split)split, width, &rng, &w);
            if (s) {
                FAILED(s);
                CHECK(total == 0, "draw from a split of %lld bases", (long long)total);
                break;
            }
            CHECK(w.record >= 0 && w.record < nr && w.length > 0 && w.length <= width, "window");
            CHECK(w.start >= 0 && w.start + w.length <= fasta_set_record(set, w.record)->length, "window");
            s = fasta_set_fetch(set, w.record, w.start, w.length, buf);
            if (s) {
                FAILED(s);
                continue;
            }
            for (int64_t i = 0; i < w.length; i++)
                CHECK(fasta_is_base((unsigned char)buf[i]), "fetched byte %d", buf[i]);
        }
    }
    /* out of range is refused */
    const fasta_record *r0 = fasta_set_record(set, 0);
    s = fasta_set_fetch(set, 0, r0->length, 1, buf);
    CHECK(s != SSM_OK, "fetch past the end");
    FAILED(s);
    fasta_set_free(set);
}

/* The dna task's scoring reader. */
static void dna_records(const char *path) {
    void *task = NULL, *reader = NULL;
    ssm_status s = dna_task_open(NULL, 0, NULL, 0, NULL, 1, 0, &task);
    CHECK(s == SSM_OK, "dna task: %s", ssm_last_error());
    s = ssm_task_dna.open_records(task, path, &reader);
    if (s) {
        FAILED(s);
    } else {
        for (;;) {
            ssm_record rec;
            int done = 0;
            s = ssm_task_dna.next_record(reader, &rec, &done);
            if (s) {
                FAILED(s);
                break;
            }
            if (done) break;
            CHECK(rec.id && rec.length > 0 && rec.tokens[0] == DNA_TOKEN_BOS, "record");
            for (size_t i = 1; i <= rec.length; i++)
                CHECK(rec.tokens[i] >= DNA_TOKEN_A && rec.tokens[i] <= DNA_TOKEN_N, "token %d",
                      (int)rec.tokens[i]);
        }
        ssm_task_dna.close_records(reader);
    }
    ssm_task_dna.destroy(task);
}

static void one_file(const char *path, unsigned long seed) {
    stream(path, 1);
    if (seed % 4 == 1) stream(path, 0);
    training_set(path, seed);
    if (seed % 2 == 0) dna_records(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    unsigned long id = serial++;
    char path[400], gz[400];
    snprintf(path, sizeof path, "%s/in%lu.fa", workdir, id);
    write_plain(path, data, size);
    one_file(path, id);
    unlink(path);
    if (id % 5 == 0) {
        snprintf(gz, sizeof gz, "%s/in%lu.fa.gz", workdir, id);
        write_gzip(gz, data, size);
        one_file(gz, id);
        unlink(gz);
    }
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
#include <dirent.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

typedef struct input {
    unsigned char *data;
    size_t len;
} input;

static int read_file(const char *path, input *in) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    in->data = malloc(1); /* never NULL, so that an empty file can be copied from */
    in->len = 0;
    size_t cap = 1;
    for (int c; (c = fgetc(f)) != EOF;) {
        if (in->len == cap) in->data = realloc(in->data, cap = cap ? 2 * cap : 1024);
        in->data[in->len++] = (unsigned char)c;
    }
    fclose(f);
    return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Files of a directory, skipping index files (.fai, .gzi): they are not inputs. */
static void add_path(const char *path, input **ins, int *n) {
    DIR *d = opendir(path);
    if (!d) {
        *ins = realloc(*ins, (size_t)(*n + 1) * sizeof **ins);
        if (read_file(path, &(*ins)[*n])) {
            fprintf(stderr, "fuzz_fasta: cannot read %s\n", path);
            exit(1);
        }
        (*n)++;
        return;
    }
    char **names = NULL;
    int m = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.') continue;
        if (l > 4 && (!strcmp(e->d_name + l - 4, ".fai") || !strcmp(e->d_name + l - 4, ".gzi"))) continue;
        names = realloc(names, (size_t)(m + 1) * sizeof *names);
        size_t len = strlen(path) + l + 2;
        names[m] = malloc(len);
        snprintf(names[m++], len, "%s/%s", path, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)m, sizeof *names, by_name);
    for (int i = 0; i < m; i++) {
        add_path(names[i], ins, n);
        free(names[i]);
    }
    free(names);
}

static const char punct[] = ">@+\n\r\n ACGTNacgtnRYKM-*.\t\0\x1f\x8b";

/* One mutation of in (from a copy) into buf; returns the new length. */
static size_t mutate(const input *in, const input *other, unsigned char *buf, size_t cap) {
    size_t len = in->len < cap ? in->len : cap;
    memcpy(buf, in->data, len);
    int ops = 1 + (int)(next() % 4);
    for (int k = 0; k < ops; k++) {
        size_t at = len ? next() % len : 0;
        switch (next() % 7) {
        case 0: /* bit flip */
            if (len) buf[at] ^= (unsigned char)(1u << (next() % 8));
            break;
        case 1: /* FASTA punctuation or a base */
            if (len) buf[at] = (unsigned char)punct[next() % (sizeof punct - 1)];
            break;
        case 2: /* insert */
            if (len < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = next() % 4 ? (unsigned char)punct[next() % (sizeof punct - 1)] : (unsigned char)next();
                len++;
            }
            break;
        case 3: { /* delete a span */
            size_t n = len - at < 16 ? len - at : 1 + next() % 16;
            memmove(buf + at, buf + at + n, len - at - n);
            len -= n;
            break;
        }
        case 4: { /* repeat a span */
            size_t n = 1 + next() % 32;
            if (at + n > len) n = len - at;
            if (len + n <= cap) {
                memmove(buf + at + n, buf + at, len - at);
                len += n;
            }
            break;
        }
        case 5: /* truncate */
            len = at;
            break;
        case 6: { /* splice a span of another input */
            if (!other->len) break;
            size_t from = next() % other->len, n = 1 + next() % 64;
            if (from + n > other->len) n = other->len - from;
            if (at + n > cap) n = cap - at;
            memcpy(buf + at, other->data + from, n);
            if (at + n > len) len = at + n;
            break;
        }
        }
    }
    return len;
}

int main(int argc, char **argv) {
    input *ins = NULL;
    int n = 0;
    const char *data = getenv("SSM_TEST_DATA"); /* tests/: the fixtures, good and bad */
    if (data && *data) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/data/fasta", data);
        add_path(dir, &ins, &n);
    }
    for (int i = 1; i < argc; i++) add_path(argv[i], &ins, &n);
    if (!n) {
        fprintf(stderr, "usage: [SSM_TEST_DATA=tests] %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    const char *seed = getenv("SSM_FUZZ_SEED"); /* another deterministic stream of mutations */
    if (seed && strtoull(seed, NULL, 0)) rng ^= strtoull(seed, NULL, 0) * 0xbf58476d1ce4e5b9ULL;
    if (!rng) rng = 1;
    const char *env = getenv("SSM_FUZZ_MUTATIONS");
    long mutations = env ? atol(env) : 120;
    size_t cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    long runs = 0;
    for (int i = 0; i < n; i++) {
        LLVMFuzzerTestOneInput(ins[i].data, ins[i].len), runs++;
        for (size_t k = 0; k < 16 && k < ins[i].len; k++) { /* truncations */
            size_t len = ins[i].len <= 16 ? k : k * ins[i].len / 16;
            LLVMFuzzerTestOneInput(ins[i].data, len), runs++;
        }
        for (long m = 0; m < mutations; m++) {
            size_t len = mutate(&ins[i], &ins[next() % (uint64_t)n], buf, cap);
            LLVMFuzzerTestOneInput(buf, len), runs++;
        }
    }
    printf("fuzz_fasta: %d inputs, %ld runs, no failure\n", n, runs);
    for (int i = 0; i < n; i++) free(ins[i].data);
    free(ins);
    free(buf);
    return 0;
}
#endif
