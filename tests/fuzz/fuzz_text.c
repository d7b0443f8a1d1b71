/* fuzz_text.c: fuzz target for the text loader (loaders/text/text.c): plain and gzip files.
 *
 * Each input is checked from memory (text_check), written to a temporary file and read back
 * (text_read_file, through zlib's gzread: plain or gzip), and opened as a training set with
 * each document mode and validation split; windows are drawn from both splits. Errors are fine;
 * an error without a message, a segment outside its file, a window outside its segment, a
 * crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_text), and
 *   build-fuzz/fuzz_text tests/fuzz/text_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_text'), the standalone driver runs
 * tests/fuzz/text_corpus (documents, UTF-8 with a BOM and CRLF, Latin-1, blank, gzip) and
 * deterministic mutations of each; SSM_FUZZ_MUTATIONS sets how many per seed (default 100). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../loaders/text/text.h"
#include "fuzz_driver.h"

static void check_set(const text_set *set) {
    for (int sp = 0; sp < 2; sp++) {
        ssm_split split = sp ? SSM_SPLIT_VALID : SSM_SPLIT_TRAIN;
        int n = text_set_n_segments(set, split);
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            const text_segment *g = text_set_segment(set, split, i);
            CHECK(g->file >= 0 && g->file < text_set_n_files(set), "segment file %d", g->file);
            CHECK(g->offset + g->length <= text_set_file_size(set, g->file), "segment past its file");
            total += g->length;
        }
        CHECK(total == text_set_split_bytes(set, split), "split bytes %zu vs %zu", total,
              text_set_split_bytes(set, split));
        if (!n) continue;
        ssm_rng rng;
        ssm_rng_seed(&rng, 42);
        for (int k = 0; k < 8; k++) {
            int seg;
            size_t start;
            ssm_status s = text_set_draw(set, split, 1 + (size_t)k * 7, &rng, &seg, &start);
            if (s) {
                FAILED(s);
                continue;
            }
            CHECK(seg >= 0 && seg < n, "drawn segment %d of %d", seg, n);
            const text_segment *g = text_set_segment(set, split, seg);
            CHECK(start <= g->length + (size_t)g->starts + (size_t)g->ends, "start %zu past its segment", start);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ssm_status s = text_check("fuzz.txt", data, size);
    if (s) FAILED(s);
    char path[] = "/tmp/ssm-fuzz-text-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    CHECK(size == 0 || write(fd, data, size) == (ssize_t)size, "write");
    close(fd);
    uint8_t *text = NULL;
    size_t len = 0;
    if ((s = text_read_file(path, &text, &len))) {
        FAILED(s);
    } else {
        CHECK(text[len] == 0, "not NUL-terminated");
        free(text);
    }
    const char *train[] = {path};
    for (int mode = 0; mode < 4; mode++) {
        text_set_options opt = text_set_options_default();
        opt.documents = mode & 1 ? TEXT_DOCS_BLANK_LINES : TEXT_DOCS_FILE;
        opt.valid_split = mode & 2 ? TEXT_VALID_DOCUMENTS : TEXT_VALID_TAIL;
        opt.valid_fraction = mode == 3 ? 0.5 : 0.2;
        text_set *set = NULL;
        if ((s = text_set_open(train, 1, NULL, 0, &opt, &set))) {
            FAILED(s);
            continue;
        }
        check_set(set);
        text_set_free(set);
    }
    unlink(path);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
static const char punct[] = " \n\r\t\x00\xc3\xa9\xe2\x82\xac\xef\xbb\xbf\x1f\x8b\x08.";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_text", .mutations = 100, .truncations = 32, .mutate = mutate};
#endif
