/* fuzz_wav.c: fuzz target for the audio loader (loaders/wav/wav.c) through libsndfile and
 * libsamplerate.
 *
 * Each input is read from memory (wav_read_memory) at the file's own rate and at 16 kHz
 * (resampled unless the file has it), with both encodings, at most 4096 samples; and once from
 * a temporary file (wav_read_file). Errors are fine; an error without a message, a result that
 * breaks the loader's promises (codes for at most max_samples, a positive rate and channel
 * count when it succeeds), a crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_wav), and
 *   build-fuzz/fuzz_wav tests/fuzz/wav_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_wav'), the standalone driver runs the
 * seeds of tests/fuzz/wav_corpus (PCM 8/16/24-bit, float, mu-law, stereo, a NaN sample, a
 * header only) and deterministic mutations of each; SSM_FUZZ_MUTATIONS sets how many per seed
 * (default 300), SSM_FUZZ_SEED another stream of them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../loaders/wav/wav.h"
#include "fuzz_driver.h"

enum { MAX_SAMPLES = 4096 };

static void read_one(const uint8_t *data, size_t size, int rate, wav_encoding enc) {
    wav_audio a;
    memset(&a, 0x55, sizeof a);
    ssm_status s = wav_read_memory("fuzz.wav", data, size, rate, enc, MAX_SAMPLES, &a);
    if (s) {
        FAILED(s);
        return;
    }
    CHECK(a.n > 0 && a.n <= MAX_SAMPLES, "%zu samples", a.n);
    CHECK(a.codes != NULL && a.file_rate > 0 && a.channels > 0, "rate %d channels %d", a.file_rate, a.channels);
    unsigned sum = 0;
    for (size_t i = 0; i < a.n; i++) sum += a.codes[i]; /* every code written (MSan/valgrind) */
    (void)sum;
    free(a.codes);
}

static void read_from_file(const uint8_t *data, size_t size) {
    char path[] = "/tmp/ssm-fuzz-wav-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    CHECK(size == 0 || write(fd, data, size) == (ssize_t)size, "write");
    close(fd);
    wav_audio a;
    ssm_status s = wav_read_file(path, 8000, WAV_MULAW, MAX_SAMPLES, &a);
    if (s) FAILED(s);
    else free(a.codes);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    wav_audio probe;
    /* the file's own rate: read it once without resampling */
    if (wav_read_memory("fuzz.wav", data, size, 16000, WAV_MULAW, 1, &probe) == SSM_OK) {
        int own = probe.file_rate;
        free(probe.codes);
        if (own <= 192000) read_one(data, size, own, WAV_LINEAR);
    } else {
        FAILED(1);
    }
    read_one(data, size, 16000, WAV_MULAW);
    read_from_file(data, size);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
/* RIFF/fmt/data chunk bytes, little-endian length fields and the values they hold */
static const char punct[] = "RIFFWAVEfmt data\x00\x01\x02\x03\x7f\x80\xff\x10\x40\x3e";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_wav", .mutations = 300, .truncations = 48, .mutate = mutate};
#endif
