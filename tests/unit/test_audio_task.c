/* test_audio_task.c: the audio task (tasks/audio) through its table: creation from a recipe,
 * training batches (determinism, targets, padding of short files, the validation split), the
 * baseline symbols, records for scoring, prompts decoded from memory, WAV output, and bad
 * recipes and data. Audio files are generated here with libsndfile. */
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../loaders/wav/wav.h"
#include "ssm/recipe.h"
#include "../../tasks/registry.h"
#include "ssm/task.h"
#include "testutil.h"

extern const ssm_task_ops ssm_task_audio;

static char *path_in(const char *dir, const char *name) {
    if (!dir) abort();
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = malloc(len);
    if (!p) abort();
    snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* A mono 16-bit WAV of n frames at rate: a chirp-ish tone that differs from file to file. */
static void write_wav(const char *path, int rate, size_t n, double freq) {
    SF_INFO info = {0};
    info.samplerate = rate;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE *sf = sf_open(path, SFM_WRITE, &info);
    assert_non_null(sf);
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.4 * sin(2 * 3.14159265358979 * freq * i / rate) * (1 + 0.5 * sin(0.001 * i)) / 1.5);
    if (n) assert_int_equal(sf_writef_float(sf, x, (sf_count_t)n), (sf_count_t)n);
    sf_close(sf);
    free(x);
}

/* Create the task from recipe text; returns the status (self set on success). */
static ssm_status create(const char *yaml, int with_data, void **self, ssm_recipe **rp) {
    ssm_recipe *r;
    TU_OK(ssm_recipe_parse("test.yaml", yaml, strlen(yaml), &r));
    ssm_node *task = NULL, *data = NULL;
    TU_OK(ssm_node_section(r, r->root, "task", &task));
    TU_OK(ssm_node_section(r, r->root, "data", &data));
    if (task) ssm_node_get(task, "name");
    ssm_status s = ssm_task_audio.create(r, task, with_data ? data : NULL, self);
    *rp = r;
    return s;
}

static char *recipe(const char *fmt, const char *a, const char *b) {
    size_t len = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 1;
    char *y = malloc(len);
    if (!y) abort();
    snprintf(y, len, fmt, a, b ? b : "");
    return y;
}

static const char *make_corpus(void) {
    const char *dir = tu_tmpdir();
    char name[64];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "speech%d.wav", i);
        char *p = path_in(dir, name);
        write_wav(p, 8000, 3000 + 700 * (size_t)i, 200 + 50 * i);
        free(p);
    }
    char *p = path_in(dir, "tiny.wav"); /* shorter than a window: padded, not an error */
    write_wav(p, 8000, 20, 300);
    free(p);
    p = path_in(dir, "README");
    FILE *f = fopen(p, "w");
    fputs("not audio\n", f);
    fclose(f);
    free(p);
    return dir;
}

static void test_table(void **st) {
    (void)st;
    const ssm_task_ops *ops;
    TU_OK(ssm_task_find("audio", &ops));
    assert_ptr_equal(ops, &ssm_task_audio);
    assert_int_equal(ops->abi_version, SSM_TASK_ABI_VERSION);
    assert_string_equal(ops->symbol, "sample");
    assert_int_equal(ops->vocab_size(NULL), 257);
    assert_int_equal(ops->bos_token(NULL), 256);
    assert_true(ops->baseline_order >= 1);
}

static void test_batches(void **st) {
    (void)st;
    const char *dir = make_corpus();
    char *y = recipe("task: {name: audio, sample_rate: 8000}\ndata: {train: [%s], valid_fraction: 0.2}\n", dir, NULL);
    void *t;
    ssm_recipe *r;
    TU_OK(create(y, 1, &t, &r));
    const int B = 6, L = 128;
    int32_t *tok = malloc(2 * B * L * sizeof *tok), *tgt = malloc(2 * B * L * sizeof *tgt);
    ssm_batch b1 = {.B = B, .L = L, .tokens = tok, .targets = tgt}, b2 = {.B = B, .L = L, .tokens = tok + B * L, .targets = tgt + B * L};
    for (int split = 0; split < 2; split++) {
        ssm_rng r1, r2;
        ssm_rng_seed(&r1, 5);
        ssm_rng_seed(&r2, 5);
        for (int rep = 0; rep < 20; rep++) {
            TU_OK(ssm_task_audio.next_batch(t, (ssm_split)split, &r1, &b1));
            TU_OK(ssm_task_audio.next_batch(t, (ssm_split)split, &r2, &b2));
            assert_memory_equal(tok, tok + B * L, B * L * sizeof *tok);
            assert_memory_equal(tgt, tgt + B * L, B * L * sizeof *tgt);
            for (int i = 0; i < B; i++)
                for (int l = 0; l < L; l++) {
                    int32_t k = tok[i * L + l], g = tgt[i * L + l];
                    assert_true(k >= 0 && k <= 256);
                    assert_true(g >= -1 && g <= 255);
                    if (l + 1 < L && g >= 0) assert_int_equal(g, tok[i * L + l + 1]);
                    if (g < 0) assert_true(l + 1 == L || tok[i * L + l + 1] == 256); /* padding */
                }
        }
    }
    /* the tiny file (20 samples) is padded: BOS, its 20 codes, then BOS tokens scored -1 */
    ssm_rng rng;
    ssm_rng_seed(&rng, 1);
    int seen = 0;
    for (int rep = 0; rep < 40000 && !seen; rep++) { /* tiny.wav is in one split or the other */
        ssm_batch one = {.B = 1, .L = L, .tokens = tok, .targets = tgt};
        TU_OK(ssm_task_audio.next_batch(t, (ssm_split)(rep & 1), &rng, &one));
        int scored = 0;
        for (int l = 0; l < L; l++) scored += tgt[l] >= 0;
        if (scored < L) {
            seen = 1;
            assert_int_equal(scored, 20);
            assert_int_equal(tok[0], 256);
            for (int l = 21; l < L; l++) assert_int_equal(tok[l], 256);
        }
    }
    const int32_t *sym;
    size_t n;
    int alphabet;
    assert_true(seen);
    /* every sample of the 7 files once, in one split or the other, a -1 between files */
    size_t total = 20, counted = 0;
    for (int i = 0; i < 6; i++) total += 3000 + 700 * (size_t)i;
    int files = 0;
    for (int split = 0; split < 2; split++) {
        TU_OK(ssm_task_audio.baseline_symbols(t, (ssm_split)split, 1u << 30, &sym, &n, &alphabet));
        assert_int_equal(alphabet, 256);
        assert_true(n > 0); /* valid_fraction 0.2 of 7 files: at least one validation file */
        files++;
        for (size_t i = 0; i < n; i++) {
            assert_true(sym[i] >= -1 && sym[i] < 256);
            if (sym[i] < 0) files++;
            else counted++;
        }
    }
    assert_int_equal(counted, total);
    assert_int_equal(files, 7);
    TU_OK(ssm_task_audio.baseline_symbols(t, SSM_SPLIT_TRAIN, 100, &sym, &n, &alphabet));
    assert_int_equal(n, 100);
    ssm_task_audio.destroy(t);
    ssm_recipe_free(r);
    free(y);
    free(tok);
    free(tgt);
}

static void test_records(void **st) {
    (void)st;
    const char *dir = make_corpus();
    char *y = recipe("task: {name: audio, sample_rate: 16000, encoding: linear}\n%s%s", "", NULL);
    void *t;
    ssm_recipe *r;
    TU_OK(create(y, 0, &t, &r));
    void *rd;
    TU_OK(ssm_task_audio.open_records(t, dir, &rd));
    int records = 0, done = 0;
    for (;;) {
        ssm_record rec;
        TU_OK(ssm_task_audio.next_record(rd, &rec, &done));
        if (done) break;
        records++;
        assert_non_null(strstr(rec.id, dir));
        assert_int_equal(rec.tokens[0], 256);
        assert_null(rec.scored);
        assert_true(fabs(rec.seconds - (double)rec.length / 16000) < 1e-9);
        /* 8 kHz files upsampled to 16 kHz */
        if (strstr(rec.id, "speech0.wav")) assert_true(labs((long)rec.length - 6000) <= 2);
        if (strstr(rec.id, "tiny.wav")) assert_true(labs((long)rec.length - 40) <= 2);
        for (size_t i = 1; i <= rec.length; i++) assert_true(rec.tokens[i] >= 0 && rec.tokens[i] < 256);
    }
    assert_int_equal(records, 7); /* README skipped */
    ssm_task_audio.close_records(rd);
    /* a missing file names it */
    char *missing = path_in(dir, "nope.wav");
    TU_OK(ssm_task_audio.open_records(t, missing, &rd));
    ssm_record rec;
    assert_int_equal(ssm_task_audio.next_record(rd, &rec, &done), SSM_ERR_IO);
    assert_non_null(strstr(ssm_last_error(), missing));
    ssm_task_audio.close_records(rd);
    free(missing);
    ssm_task_audio.destroy(t);
    ssm_recipe_free(r);
    free(y);
}

static void test_prompt_and_output(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    char *p = path_in(dir, "prompt.wav");
    write_wav(p, 8000, 12000, 440); /* 1.5 s */
    FILE *f = fopen(p, "rb");
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *y = recipe("task: {name: audio, sample_rate: 8000, prompt_seconds: 0.5}\n%s%s", "", NULL);
    void *t;
    ssm_recipe *r;
    TU_OK(create(y, 0, &t, &r));
    int32_t *tok;
    size_t n;
    TU_OK(ssm_task_audio.encode(t, buf, len, &tok, &n));
    assert_int_equal(n, 4000);
    wav_audio a;
    TU_OK(wav_read_file(p, 8000, WAV_MULAW, 0, &a));
    assert_int_equal(a.n, 12000);
    for (size_t i = 0; i < n; i++) assert_int_equal(tok[i], a.codes[i]);
    /* text is not audio */
    int32_t *bad;
    size_t nb;
    assert_int_equal(ssm_task_audio.encode(t, "hello", 5, &bad, &nb), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "prompt"));
    /* output: BOS dropped, a WAV at 8000 Hz of n samples that parses back */
    int32_t *all = malloc((n + 1) * sizeof *all);
    all[0] = 256;
    memcpy(all + 1, tok, n * sizeof *tok);
    char *out = path_in(dir, "out.wav");
    f = fopen(out, "wb");
    TU_OK(ssm_task_audio.write_tokens(t, all, n + 1, f));
    fclose(f);
    SF_INFO info = {0};
    SNDFILE *sf = sf_open(out, SFM_READ, &info);
    assert_non_null(sf);
    assert_int_equal(info.samplerate, 8000);
    assert_int_equal(info.channels, 1);
    assert_int_equal(info.frames, (sf_count_t)n);
    assert_int_equal(info.format, SF_FORMAT_WAV | SF_FORMAT_PCM_16);
    sf_close(sf);
    wav_audio b;
    TU_OK(wav_read_file(out, 8000, WAV_MULAW, 0, &b));
    assert_int_equal(b.n, n);
    for (size_t i = 0; i < n; i++) assert_true(abs((int)b.codes[i] - tok[i]) <= 1);
    free(b.codes);
    /* a non-code token inside (a sampled BOS or padding token) holds the previous sample */
    all[100] = 256;
    all[101] = 263;
    char *mem = NULL;
    size_t mlen = 0;
    f = open_memstream(&mem, &mlen);
    TU_OK(ssm_task_audio.write_tokens(t, all, n + 1, f));
    fclose(f);
    TU_OK(wav_read_memory("out", mem, mlen, 8000, WAV_MULAW, 0, &b));
    assert_int_equal(b.n, n);
    /* sample j is token j + 1 (the BOS first is dropped): samples 99 and 100 repeat sample 98 */
    assert_true(abs((int)b.codes[98] - all[99]) <= 1);
    assert_int_equal(b.codes[99], b.codes[98]);
    assert_int_equal(b.codes[100], b.codes[98]);
    assert_true(abs((int)b.codes[101] - all[102]) <= 1);
    free(b.codes);
    free(mem);
    free(a.codes);
    free(all);
    free(tok);
    free(out);
    free(p);
    ssm_task_audio.destroy(t);
    ssm_recipe_free(r);
    free(y);
}

static void test_bad_recipes(void **st) {
    (void)st;
    void *t;
    ssm_recipe *r;
    /* unknown key, bad encoding, bad rate */
    assert_int_equal(create("task: {name: audio, sampel_rate: 8000}\n", 0, &t, &r), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "sample_rate"));
    ssm_recipe_free(r);
    assert_int_equal(create("task: {name: audio, encoding: alaw}\n", 0, &t, &r), SSM_ERR_ARG);
    ssm_recipe_free(r);
    assert_int_equal(create("task: {name: audio, sample_rate: 0}\n", 0, &t, &r), SSM_ERR_ARG);
    ssm_recipe_free(r);
    /* no train list; a folder without audio; a pattern matching nothing */
    assert_int_equal(create("task: {name: audio}\ndata: {valid_fraction: 0.1}\n", 1, &t, &r), SSM_ERR_MISSING);
    ssm_recipe_free(r);
    const char *dir = tu_tmpdir();
    char *y = recipe("task: {name: audio}\ndata: {train: [%s]}\n", dir, NULL);
    assert_int_equal(create(y, 1, &t, &r), SSM_ERR_MISSING);
    assert_non_null(strstr(ssm_last_error(), dir));
    assert_non_null(strstr(ssm_last_error(), "test.yaml:2:"));
    ssm_recipe_free(r);
    free(y);
    y = recipe("task: {name: audio}\ndata: {train: [%s/*.flac]}\n", dir, NULL);
    assert_int_equal(create(y, 1, &t, &r), SSM_ERR_MISSING);
    assert_non_null(strstr(ssm_last_error(), "matches no file"));
    ssm_recipe_free(r);
    free(y);
    /* a zero-length file among good ones: an error naming it */
    char *good = path_in(dir, "good.wav"), *empty = path_in(dir, "empty.wav");
    write_wav(good, 8000, 1000, 300);
    FILE *f = fopen(empty, "wb");
    fclose(f);
    y = recipe("task: {name: audio}\ndata: {train: [%s, %s]}\n", good, empty);
    assert_int_equal(create(y, 1, &t, &r), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), empty));
    ssm_recipe_free(r);
    free(y);
    free(good);
    free(empty);
    /* no data: batches say so */
    TU_OK(create("task: {name: audio}\n", 0, &t, &r));
    int32_t tk[4], tg[4];
    ssm_batch b = {.B = 1, .L = 4, .tokens = tk, .targets = tg};
    ssm_rng rng;
    ssm_rng_seed(&rng, 1);
    assert_int_equal(ssm_task_audio.next_batch(t, SSM_SPLIT_TRAIN, &rng, &b), SSM_ERR_MISSING);
    ssm_task_audio.destroy(t);
    ssm_recipe_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),   cmocka_unit_test(test_batches),          cmocka_unit_test(test_records),
        cmocka_unit_test(test_prompt_and_output), cmocka_unit_test(test_bad_recipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
