/* fuzz_driver.h: the standalone driver shared by the fuzz targets (built with
 * -DSSM_FUZZ_STANDALONE, the meson tests link fuzz_driver.c in). Its main reads the seeds a
 * target makes (seeds hook), then the files and directories named on the command line (index
 * files .fai and .gzi skipped), and runs each input, truncations of it and deterministic
 * mutations of it through LLVMFuzzerTestOneInput, each in a buffer of its exact size so that
 * ASan sees reads past its end. SSM_FUZZ_MUTATIONS sets how many mutations per input (default:
 * the target's), SSM_FUZZ_SEED another deterministic stream of them. */
#ifndef SSM_FUZZ_DRIVER_H
#define SSM_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ssm/ssm.h"

typedef struct fuzz_input {
    unsigned char *data; /* never NULL */
    size_t len;
} fuzz_input;

typedef struct fuzz_target {
    const char *name;    /* for messages */
    long mutations;      /* per input, unless SSM_FUZZ_MUTATIONS says */
    size_t truncations;  /* per input, spread over it (the short ones all) */
    /* optional: inputs made at startup, added with fuzz_add_file/fuzz_add_input */
    void (*seeds)(fuzz_input **ins, int *n);
    /* one mutation of in into buf (cap bytes), other for splices; returns the new length;
     * NULL: fuzz_mutate_bytes with the bytes of punct */
    size_t (*mutate)(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap);
    const char *punct;
    /* optional: the count of inputs the reader took, for the last line ("NAME: N inputs, R
     * runs, K reads succeeded, no failure"; without it the K part is left out) */
    const long *reads;
    /* optional: a last line of the target's own instead, and what to free at the end */
    void (*summary)(int n, int generated, long runs);
    void (*cleanup)(void);
} fuzz_target;

/* Defined by each target. */
extern const fuzz_target fuzz_this_target;
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

uint64_t fuzz_next(void);
void fuzz_add_file(const char *path, fuzz_input **ins, int *n);
void fuzz_add_path(const char *path, fuzz_input **ins, int *n);
/* The byte-level mutation of recipe and FASTA inputs: 1-4 of bit flip, a character of punct,
 * insertion (mostly of punct), deleted span, repeated span, truncation, splice of other. */
size_t fuzz_mutate_bytes(const fuzz_input *in, const fuzz_input *other, unsigned char *buf,
                         size_t cap, const char *punct, size_t n_punct);

/* The path of file in a temporary directory of the target's own (prefix.XXXXXX under $TMPDIR,
 * else /tmp; fuzz_tmp.c), made on the first call. The directory and the files named through
 * here are removed at exit; a failed check aborts and leaves them, the failing input in them. */
const char *fuzz_temp_path(const char *prefix, const char *file);
/* Write data (size bytes) to path, replacing it. */
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* Abort (the fuzzer's crash) when a promise of the code under test is broken. */
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* A failing call must say why. */
#define FAILED(s) CHECK(ssm_last_error()[0] != 0, "status %d without a message", (int)(s))

#endif
