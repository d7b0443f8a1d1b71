/* test_wav.c: the audio loader (loaders/wav): mu-law and linear codes, reading every sample type
 * and a few formats (generated here with libsndfile), mixing to mono, resampling across block
 * boundaries, reading from memory, writing WAVs, file lists, the validation split, window
 * draws, and every kind of bad input. */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../loaders/wav/wav.h"
#include "testutil.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ---- helpers ------------------------------------------------------------------------------ */

static char *path_in(const char *dir, const char *name) {
    if (!dir) abort();
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (!p) abort();
    snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* Write frames x channels interleaved samples with libsndfile. */
static void write_audio(const char *path, int format, int rate, int channels, const float *x, size_t frames) {
    SF_INFO info = {0};
    info.samplerate = rate;
    info.channels = channels;
    info.format = format;
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    if (!sf) fail_msg("cannot write %s: %s", path, sf_strerror(NULL));
    if (frames) assert_int_equal(sf_writef_float(sf, x, (sf_count_t)frames), (sf_count_t)frames);
    sf_close(sf);
}

static float *sine(size_t n, int channels, double freq, double rate, double amp) {
    float *x = malloc(n * (size_t)channels * sizeof *x);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < channels; c++) x[i * channels + c] = (float)(amp * sin(2 * M_PI * freq * i / rate));
    return x;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void expect_error(ssm_status s, ssm_status want, const char *needle1, const char *needle2) {
    if (s != want) fail_msg("status %d, wanted %d (%s)", s, want, ssm_last_error());
    const char *m = ssm_last_error();
    if (needle1 && !strstr(m, needle1)) fail_msg("message '%s' lacks '%s'", m, needle1);
    if (needle2 && !strstr(m, needle2)) fail_msg("message '%s' lacks '%s'", m, needle2);
}

/* Amplitude of the component of x (n samples at rate) at freq, by projection. */
static double amplitude_at(const float *x, size_t n, double freq, double rate) {
    double s = 0, c = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i] * sin(2 * M_PI * freq * i / rate);
        c += x[i] * cos(2 * M_PI * freq * i / rate);
    }
    return 2 * sqrt(s * s + c * c) / (double)n;
}

/* ---- codes -------------------------------------------------------------------------------- */

static void test_mulaw(void **st) {
    (void)st;
    /* the round trip error is half a code step, which grows with |x| (mu-law is logarithmic) */
    double worst = 0;
    for (int i = -20000; i <= 20000; i++) {
        float x = (float)i / 20000.0f;
        float y = wav_decode_sample(wav_encode_sample(x, WAV_MULAW), WAV_MULAW);
        double err = fabs((double)y - x), bound = 1e-4 + 0.025 * fabs(x);
        if (err > bound) fail_msg("mu-law round trip of %g gave %g (error %g > %g)", x, y, err, bound);
        if (err / bound > worst) worst = err / bound;
    }
    assert_true(worst > 0.3); /* the bound is not loose by orders of magnitude */
    /* every code decodes to a value that encodes back to it; the codes are monotonic */
    for (int c = 0; c < 256; c++) {
        assert_int_equal(wav_encode_sample(wav_decode_sample((uint8_t)c, WAV_MULAW), WAV_MULAW), c);
        assert_int_equal(wav_encode_sample(wav_decode_sample((uint8_t)c, WAV_LINEAR), WAV_LINEAR), c);
        if (c) assert_true(wav_decode_sample((uint8_t)c, WAV_MULAW) > wav_decode_sample((uint8_t)(c - 1), WAV_MULAW));
    }
    assert_int_equal(wav_encode_sample(-1.0f, WAV_MULAW), 0);
    assert_int_equal(wav_encode_sample(1.0f, WAV_MULAW), 255);
    assert_int_equal(wav_encode_sample(5.0f, WAV_MULAW), 255);  /* clipped */
    assert_int_equal(wav_encode_sample(-5.0f, WAV_MULAW), 0);
    assert_int_equal(wav_encode_sample(0.0f, WAV_MULAW), 128);
    assert_true(fabsf(wav_decode_sample(255, WAV_MULAW) - 1.0f) < 1e-6f);
    assert_true(fabsf(wav_decode_sample(0, WAV_MULAW) + 1.0f) < 1e-6f);
    /* mu-law spends its codes near zero: 0.01 and 0.02 are many codes apart, linear ~1 */
    assert_true(wav_encode_sample(0.02f, WAV_MULAW) - wav_encode_sample(0.01f, WAV_MULAW) >= 5);
    assert_true(wav_encode_sample(0.02f, WAV_LINEAR) - wav_encode_sample(0.01f, WAV_LINEAR) <= 2);
    for (int i = -1000; i <= 1000; i++) {
        float x = (float)i / 1000.0f;
        assert_true(fabsf(wav_decode_sample(wav_encode_sample(x, WAV_LINEAR), WAV_LINEAR) - x) <= 1.0f / 256 + 1e-6f);
    }
}

/* ---- reading ------------------------------------------------------------------------------ */

static void test_read_types(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    const size_t n = 3 * WAV_BLOCK_FRAMES + 123; /* several blocks, a partial one at the end */
    float *x = sine(n, 1, 440, 16000, 0.6);
    const int formats[] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_WAV | SF_FORMAT_PCM_24,
                           SF_FORMAT_WAV | SF_FORMAT_FLOAT, SF_FORMAT_WAV | SF_FORMAT_DOUBLE,
                           SF_FORMAT_AIFF | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
                           SF_FORMAT_OGG | SF_FORMAT_VORBIS};
    const char *names[] = {"a.wav", "b.wav", "c.wav", "d.wav", "e.aiff", "f.flac", "g.ogg"};
    for (int k = 0; k < 7; k++) {
        SF_INFO probe = {0, 16000, 1, formats[k], 0, 0};
        if (!sf_format_check(&probe)) continue; /* a libsndfile built without FLAC/Vorbis */
        char *p = path_in(dir, names[k]);
        write_audio(p, formats[k], 16000, 1, x, n);
        wav_audio a;
        TU_OK(wav_read_file(p, 16000, WAV_MULAW, 0, &a));
        assert_int_equal(a.file_rate, 16000);
        assert_int_equal(a.channels, 1);
        int lossy = (formats[k] & SF_FORMAT_SUBMASK) == SF_FORMAT_VORBIS;
        if (!lossy) assert_int_equal(a.n, n);
        double worst = 0;
        for (size_t i = 0; i < a.n && i < n; i++) {
            double err = fabs(wav_decode_sample(a.codes[i], WAV_MULAW) - x[i]);
            double bound = 2e-4 + 0.03 * fabs(x[i]);
            if (err / bound > worst) worst = err / bound;
        }
        if (!lossy && worst > 1) fail_msg("%s: decoded samples off by %g of the bound", names[k], worst);
        if (lossy) { /* Vorbis: the tone survives */
            float *y = malloc(a.n * sizeof *y);
            for (size_t i = 0; i < a.n; i++) y[i] = wav_decode_sample(a.codes[i], WAV_MULAW);
            assert_true(fabs(amplitude_at(y, a.n, 440, 16000) - 0.6) < 0.05);
            free(y);
        }
        /* the same bytes from memory give the same codes */
        FILE *f = fopen(p, "rb");
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)len);
        assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
        fclose(f);
        wav_audio b;
        TU_OK(wav_read_memory(p, buf, (size_t)len, 16000, WAV_MULAW, 0, &b));
        assert_int_equal(b.n, a.n);
        assert_memory_equal(a.codes, b.codes, a.n);
        /* max_samples stops early */
        wav_audio c;
        TU_OK(wav_read_file(p, 16000, WAV_MULAW, 1000, &c));
        assert_int_equal(c.n, 1000);
        assert_memory_equal(a.codes, c.codes, 1000);
        free(a.codes);
        free(b.codes);
        free(c.codes);
        free(buf);
        free(p);
    }
    free(x);
}

static void test_stereo_mono(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    const size_t n = 5000;
    /* left = s, right = -s: the mix is silence */
    float *x = malloc(2 * n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[2 * i] = (float)(0.5 * sin(0.01 * i));
        x[2 * i + 1] = -x[2 * i];
    }
    char *p = path_in(dir, "st.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 8000, 2, x, n);
    wav_audio a;
    TU_OK(wav_read_file(p, 8000, WAV_MULAW, 0, &a));
    assert_int_equal(a.channels, 2);
    assert_int_equal(a.n, n);
    for (size_t i = 0; i < n; i++) assert_int_equal(a.codes[i], 128);
    free(a.codes);
    /* left = s, right = 0: the mix is s / 2 */
    for (size_t i = 0; i < n; i++) x[2 * i + 1] = 0;
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 8000, 2, x, n);
    TU_OK(wav_read_file(p, 8000, WAV_MULAW, 0, &a));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a.codes[i], wav_encode_sample(0.5f * x[2 * i], WAV_MULAW));
    free(a.codes);
    free(x);
    free(p);
}

/* 44.1 kHz stereo float -> 16 kHz: the tone keeps its frequency and amplitude, the length is
 * scaled, and the blocks join without glitches (the whole signal matches the ideal sine). */
static void test_resample(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    const size_t n = 44100 + 3 * WAV_BLOCK_FRAMES / 2; /* 1.28 s */
    float *x = sine(n, 2, 1000, 44100, 0.5);
    char *p = path_in(dir, "cd.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 2, x, n);
    wav_audio a;
    TU_OK(wav_read_file(p, 16000, WAV_LINEAR, 0, &a));
    assert_int_equal(a.file_rate, 44100);
    assert_int_equal(a.frames, (int64_t)n);
    double want = (double)n * 16000 / 44100;
    if (fabs((double)a.n - want) > 2) fail_msg("resampled to %zu samples, wanted ~%.1f", a.n, want);
    float *y = malloc(a.n * sizeof *y);
    for (size_t i = 0; i < a.n; i++) y[i] = wav_decode_sample(a.codes[i], WAV_LINEAR);
    assert_true(fabs(amplitude_at(y, a.n, 1000, 16000) - 0.5) < 0.01);
    assert_true(amplitude_at(y, a.n, 1500, 16000) < 0.01);
    assert_true(amplitude_at(y, a.n, 700, 16000) < 0.01);
    /* sample by sample against the ideal sine, away from the filter's edges */
    double worst = 0;
    for (size_t i = 200; i + 200 < a.n; i++) {
        double err = fabs(y[i] - 0.5 * sin(2 * M_PI * 1000 * i / 16000.0));
        if (err > worst) worst = err;
    }
    if (worst > 1.0 / 256 + 0.005) fail_msg("resampled sine off by %g", worst);
    /* upsampling 8 kHz -> 16 kHz doubles the length and keeps the tone */
    float *z = sine(8000, 1, 440, 8000, 0.5);
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, z, 8000);
    wav_audio b;
    TU_OK(wav_read_file(p, 16000, WAV_LINEAR, 0, &b));
    assert_true(labs((long)b.n - 16000) <= 2);
    float *w = malloc(b.n * sizeof *w);
    for (size_t i = 0; i < b.n; i++) w[i] = wav_decode_sample(b.codes[i], WAV_LINEAR);
    assert_true(fabs(amplitude_at(w, b.n, 440, 16000) - 0.5) < 0.01);
    free(w);
    free(z);
    free(b.codes);
    free(y);
    free(a.codes);
    free(x);
    free(p);
}

/* ---- writing ------------------------------------------------------------------------------- */

static void test_write(void **st) {
    (void)st;
    const size_t n = 10000;
    uint8_t *codes = malloc(n);
    for (size_t i = 0; i < n; i++) codes[i] = (uint8_t)(128 + 100 * sin(0.05 * i));
    /* a stream that cannot seek (as a pipe) */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    TU_OK(wav_write_codes(f, codes, n, 11025, WAV_MULAW));
    fclose(f);
    assert_int_equal(len, 44 + 2 * n);
    wav_audio a;
    TU_OK(wav_read_memory("written", buf, len, 11025, WAV_MULAW, 0, &a));
    assert_int_equal(a.file_rate, 11025);
    assert_int_equal(a.n, n);
    for (size_t i = 0; i < n; i++) assert_true(abs((int)a.codes[i] - codes[i]) <= 1);
    free(a.codes);
    free(buf);
    /* an empty output is still a valid WAV header */
    buf = NULL;
    f = open_memstream(&buf, &len);
    TU_OK(wav_write_codes(f, codes, 0, 8000, WAV_LINEAR));
    fclose(f);
    assert_int_equal(len, 44);
    free(buf);
    free(codes);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static void test_bad_input(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    wav_audio a;
    char *p = path_in(dir, "missing.wav");
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_IO, p, NULL);
    free(p);
    /* zero bytes */
    p = path_in(dir, "empty.wav");
    write_text(p, "");
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, p, "empty");
    free(p);
    /* not audio */
    p = path_in(dir, "notes.wav");
    write_text(p, "these are not the samples you are looking for\n");
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, p, "not an audio file");
    free(p);
    /* a header and no samples */
    p = path_in(dir, "header.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, NULL, 0);
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, p, "no samples");
    free(p);
    /* NaN and infinity in a float WAV, in the second block: the frame index is reported */
    const size_t n = WAV_BLOCK_FRAMES + 1000;
    float *x = sine(n, 2, 300, 16000, 0.3);
    x[2 * 9000 + 1] = NAN;
    p = path_in(dir, "nan.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 2, x, n);
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, p, "sample 9000 (channel 1) is NaN");
    free(p);
    x[2 * 9000 + 1] = 0;
    x[2 * 17] = -INFINITY;
    p = path_in(dir, "inf.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_DOUBLE, 16000, 2, x, n);
    expect_error(wav_read_file(p, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, p, "sample 17 (channel 0) is infinite");
    free(p);
    /* a sample rate of 0 in the header (and byte rate 0): a clear error, whatever libsndfile says */
    p = path_in(dir, "rate0.wav");
    write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, x, 1000);
    FILE *f = fopen(p, "r+b");
    fseek(f, 24, SEEK_SET);
    unsigned char zero[8] = {0};
    fwrite(zero, 1, 8, f);
    fclose(f);
    ssm_status s = wav_read_file(p, 16000, WAV_MULAW, 0, &a);
    assert_int_equal(s, SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), p));
    assert_non_null(strstr(ssm_last_error(), "sample rate"));
    free(p);
    free(x);
    /* memory: empty and not audio */
    expect_error(wav_read_memory("prompt", "", 0, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, "prompt", "empty");
    expect_error(wav_read_memory("prompt", "hello", 5, 16000, WAV_MULAW, 0, &a), SSM_ERR_FORMAT, "prompt",
                 "not an audio file");
    /* a folder where a file is wanted */
    expect_error(wav_read_file(dir, 16000, WAV_MULAW, 0, &a), SSM_ERR_ARG, dir, "folder");
}

/* ---- file lists ---------------------------------------------------------------------------- */

static void test_glob(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    float *x = sine(100, 1, 300, 8000, 0.3);
    const char *names[] = {"b.wav", "a.flac", "c.aiff", ".hidden.wav"};
    const int formats[] = {SF_FORMAT_WAV | SF_FORMAT_PCM_16, SF_FORMAT_FLAC | SF_FORMAT_PCM_16,
                           SF_FORMAT_AIFF | SF_FORMAT_PCM_16, SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    int have_flac = 0;
    for (int i = 0; i < 4; i++) {
        SF_INFO probe = {0, 8000, 1, formats[i], 0, 0};
        if (!sf_format_check(&probe)) continue;
        have_flac |= i == 1;
        char *p = path_in(dir, names[i]);
        write_audio(p, formats[i], 8000, 1, x, 100);
        free(p);
    }
    char *p = path_in(dir, "LICENSE");
    write_text(p, "not audio\n");
    free(p);
    p = path_in(dir, "sub");
    mkdir(p, 0700);
    free(p);
    char **paths;
    int np;
    const char *pat[] = {dir};
    TU_OK(wav_glob(pat, 1, &paths, &np));
    assert_int_equal(np, 2 + have_flac);
    int k = 0;
    if (have_flac) assert_non_null(strstr(paths[k++], "/a.flac"));
    assert_non_null(strstr(paths[k++], "/b.wav"));
    assert_non_null(strstr(paths[k++], "/c.aiff"));
    assert_null(paths[k]);
    wav_paths_free(paths);
    /* a pattern, and duplicates dropped */
    char *g = path_in(dir, "*.wav"), *b = path_in(dir, "b.wav");
    const char *pat2[] = {g, b};
    TU_OK(wav_glob(pat2, 2, &paths, &np));
    assert_int_equal(np, 1);
    assert_string_equal(paths[0], b);
    wav_paths_free(paths);
    free(g);
    /* nothing matches; a folder without audio */
    g = path_in(dir, "*.mp9");
    const char *pat3[] = {g};
    expect_error(wav_glob(pat3, 1, &paths, &np), SSM_ERR_MISSING, g, "matches no file");
    free(g);
    g = path_in(dir, "sub");
    const char *pat4[] = {g};
    expect_error(wav_glob(pat4, 1, &paths, &np), SSM_ERR_MISSING, g, "no audio");
    p = path_in(g, "readme.txt");
    write_text(p, "still no audio\n");
    expect_error(wav_glob(pat4, 1, &paths, &np), SSM_ERR_MISSING, g, "no audio");
    /* and opening a set from it says the same */
    wav_set *set;
    expect_error(wav_set_open(pat4, 1, NULL, 0, NULL, &set), SSM_ERR_MISSING, g, "no audio");
    free(p);
    free(g);
    free(b);
    free(x);
}

/* ---- training set: split and draws ---------------------------------------------------------- */

static void test_split(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    float *x = sine(2000, 1, 300, 8000, 0.3);
    char name[64];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "clip%02d.wav", i);
        char *p = path_in(dir, name);
        write_audio(p, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, x, 1000 + 50 * (size_t)i);
        free(p);
    }
    wav_set_options opt = wav_set_options_default();
    opt.sample_rate = 8000;
    opt.valid_fraction = 0.2;
    const char *pat[] = {dir};
    wav_set *a, *b;
    TU_OK(wav_set_open(pat, 1, NULL, 0, &opt, &a));
    TU_OK(wav_set_open(pat, 1, NULL, 0, &opt, &b));
    assert_int_equal(wav_set_n_files(a), 20);
    int nv = wav_set_n_segments(a, SSM_SPLIT_VALID), nt = wav_set_n_segments(a, SSM_SPLIT_TRAIN);
    assert_int_equal(nv + nt, 20);
    assert_true(nv >= 1 && nv <= 10); /* ~20% of 20 files */
    assert_int_equal(nv, wav_set_n_segments(b, SSM_SPLIT_VALID));
    size_t total = 0;
    for (int i = 0; i < nv; i++) {
        const wav_segment *g = wav_set_segment(a, SSM_SPLIT_VALID, i);
        assert_int_equal(g->file, wav_set_segment(b, SSM_SPLIT_VALID, i)->file);
        assert_int_equal(g->offset, 0);
        assert_int_equal(g->starts, 1);
        /* by the name's hash, whatever the folder */
        assert_true((double)wav_name_hash(wav_set_file_path(a, g->file)) < 0.2 * 18446744073709551616.0 || nv == 1);
        total += g->length;
    }
    assert_int_equal(total, wav_set_split_samples(a, SSM_SPLIT_VALID));
    assert_int_equal(wav_name_hash("x/y/clip03.wav"), wav_name_hash("clip03.wav"));
    /* draws: weighted, inside the segment, the same from the same rng state */
    ssm_rng r1, r2;
    ssm_rng_seed(&r1, 9);
    ssm_rng_seed(&r2, 9);
    int hits[64] = {0};
    for (int k = 0; k < 2000; k++) {
        int s1, s2;
        size_t p1, p2;
        TU_OK(wav_set_draw(a, SSM_SPLIT_TRAIN, 257, &r1, &s1, &p1));
        TU_OK(wav_set_draw(b, SSM_SPLIT_TRAIN, 257, &r2, &s2, &p2));
        assert_int_equal(s1, s2);
        assert_int_equal(p1, p2);
        const wav_segment *g = wav_set_segment(a, SSM_SPLIT_TRAIN, s1);
        assert_true(p1 + 257 <= g->length + 1);
        hits[s1]++;
    }
    for (int i = 0; i < nt; i++) assert_true(hits[i] > 0);
    wav_set_free(b);
    /* valid_fraction 0: no validation split, and drawing from it is an error */
    opt.valid_fraction = 0;
    TU_OK(wav_set_open(pat, 1, NULL, 0, &opt, &b));
    assert_int_equal(wav_set_n_segments(b, SSM_SPLIT_VALID), 0);
    int sg;
    size_t sp;
    expect_error(wav_set_draw(b, SSM_SPLIT_VALID, 10, &r1, &sg, &sp), SSM_ERR_MISSING, "validation", NULL);
    wav_set_free(b);
    /* validation files given: those, and the training files whole */
    char *v = path_in(dir, "clip00.wav"), *t = path_in(dir, "clip01.wav");
    const char *tp[] = {t}, *vp[] = {v};
    opt.valid_fraction = 0.3;
    TU_OK(wav_set_open(tp, 1, vp, 1, &opt, &b));
    assert_int_equal(wav_set_split_samples(b, SSM_SPLIT_TRAIN), 1050);
    assert_int_equal(wav_set_split_samples(b, SSM_SPLIT_VALID), 1000);
    wav_set_free(b);
    /* one file: its tail */
    TU_OK(wav_set_open(tp, 1, NULL, 0, &opt, &b));
    assert_int_equal(wav_set_split_samples(b, SSM_SPLIT_VALID), 315);
    assert_int_equal(wav_set_split_samples(b, SSM_SPLIT_TRAIN), 735);
    const wav_segment *g = wav_set_segment(b, SSM_SPLIT_VALID, 0);
    assert_int_equal(g->offset, 735);
    assert_int_equal(g->starts, 0);
    wav_set_free(b);
    /* two files: one goes to validation even if neither hash is low enough */
    char *u = path_in(dir, "clip02.wav");
    const char *two[] = {t, u};
    opt.valid_fraction = 0.01;
    TU_OK(wav_set_open(two, 2, NULL, 0, &opt, &b));
    assert_int_equal(wav_set_n_segments(b, SSM_SPLIT_VALID), 1);
    assert_int_equal(wav_set_n_segments(b, SSM_SPLIT_TRAIN), 1);
    wav_set_free(b);
    /* a bad file among good ones names it */
    char *bad = path_in(dir, "bad.wav");
    write_text(bad, "RIFF....WAVEjunk");
    const char *withbad[] = {t, bad};
    expect_error(wav_set_open(withbad, 2, NULL, 0, &opt, &b), SSM_ERR_FORMAT, bad, NULL);
    free(bad);
    free(u);
    free(v);
    free(t);
    wav_set_free(a);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mulaw),     cmocka_unit_test(test_read_types), cmocka_unit_test(test_stereo_mono),
        cmocka_unit_test(test_resample),  cmocka_unit_test(test_write),      cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_glob),      cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
