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
#include "fuzz_driver.h"

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

static const char punct[] = ">@+\n\r\n ACGTNacgtnRYKM-*.\t\0\x1f\x8b";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

/* The fixtures of tests/data/fasta, good and bad, when SSM_TEST_DATA names tests/. */
static void seeds(fuzz_input **ins, int *n) {
    const char *data = getenv("SSM_TEST_DATA");
    if (data && *data) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/data/fasta", data);
        fuzz_add_path(dir, ins, n);
    }
}

const fuzz_target fuzz_this_target = {.name = "fuzz_fasta", .mutations = 120, .truncations = 16,
                                      .seeds = seeds, .mutate = mutate};
#endif
