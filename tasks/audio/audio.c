/* audio.c: the audio task: next-sample prediction over raw waveforms quantised to 8 bits
 * (mu-law by default, as WaveNet, SaShiMi and the Mamba paper model speech), read from any
 * format libsndfile reads (loaders/wav). The metric is bits per sample.
 *
 * Recipe keys
 * -----------
 *   task:
 *     name: audio
 *     sample_rate: 16000     # Hz the audio is resampled to (libsamplerate, sinc medium
 *                            # quality) and the rate of generated WAVs; in [1000, 192000]
 *     encoding: mulaw        # mulaw (mu = 255, 256 codes) or linear (256 uniform steps)
 *     prompt_seconds: 0      # ssm-generate --prompt-file: the first this many seconds of the
 *                            # prompt audio are kept (0: all of it)
 *   data:
 *     train: [files, folders or globs]  # any format libsndfile reads; a folder stands for the
 *                                       # audio files in it (sorted). Required to train.
 *     valid: [files, folders or globs]  # optional: whole files for validation (then
 *                                       # valid_fraction does not apply)
 *     valid_fraction: 0.1    # [0, 0.5]: the validation split is whole files chosen by a hash
 *                            # of their names (at least one when there are two or more; the
 *                            # same on every run); with a single file, its last fraction
 *
 * Tokens: the 256 codes 0..255, BOS = 256 before each file (vocabulary 257, padded by the
 * model to 264). A training window is L + 1 consecutive positions of one file ([BOS] codes):
 * tokens the first L, targets the last L; a file shorter than that is padded with BOS tokens
 * whose targets are -1 (not scored). Windows are drawn with probability proportional to file
 * length, from the rng only.
 *
 * Scoring: each audio file is one record (BOS + its codes; record.seconds = samples / rate); a
 * folder or glob given to ssm-score stands for its files, one record each. Generation: a prompt
 * (--prompt-file FILE: the file's bytes) is decoded as audio from memory, converted like
 * training data; the output is a 16-bit PCM mono WAV at sample_rate, written whole (stdout may
 * be a pipe), one sample per token (a stray non-code token holds the previous sample). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/task.h"
#include "../../loaders/wav/wav.h"

enum { AUDIO_BOS = 256, AUDIO_VOCAB = 257 };

typedef struct audio_task {
    int rate;
    wav_encoding enc;
    double prompt_seconds;
    wav_set *set;        /* NULL without a data section (scoring, generation) */
    int32_t *symbols[2]; /* baseline symbols per split, made on demand */
    size_t n_symbols[2], max_symbols[2];
} audio_task;

static const char *const task_keys[] = {"name", "sample_rate", "encoding", "prompt_seconds", NULL};
static const char *const data_keys[] = {"train", "valid", "valid_fraction", NULL};

static ssm_status at(const ssm_recipe *r, const ssm_node *node, ssm_status s) {
    char where[512], msg[2048];
    snprintf(msg, sizeof msg, "%s", ssm_last_error());
    return ssm_set_error(s, "%s: %s", ssm_node_where(r, node, where, sizeof where), msg);
}

static void audio_destroy(void *self) {
    audio_task *t = self;
    if (!t) return;
    wav_set_free(t->set);
    free(t->symbols[0]);
    free(t->symbols[1]);
    free(t);
}

static ssm_status audio_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    static const char *const encodings[] = {"mulaw", "linear", NULL};
    long long rate = 16000;
    int enc = 0;
    double prompt_seconds = 0;
    ssm_status s;
    if (task && ((s = ssm_node_int(r, task, "sample_rate", 16000, 1000, 192000, &rate)) ||
                 (s = ssm_node_choice(r, task, "encoding", encodings, 0, &enc)) ||
                 (s = ssm_node_float(r, task, "prompt_seconds", 0, 0, 1e6, &prompt_seconds)) ||
                 (s = ssm_node_check_unknown(r, task, "task", task_keys))))
        return s;
    audio_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    t->rate = (int)rate;
    t->enc = enc ? WAV_LINEAR : WAV_MULAW;
    t->prompt_seconds = prompt_seconds;
    if (data) {
        wav_set_options opt = wav_set_options_default();
        opt.sample_rate = t->rate;
        opt.encoding = t->enc;
        const char **train = NULL, **valid = NULL;
        int n_train = 0, n_valid = 0;
        if ((s = ssm_node_float(r, data, "valid_fraction", opt.valid_fraction, 0.0, 0.5, &opt.valid_fraction)) ||
            (s = ssm_node_strings(r, data, "train", &train, &n_train)) ||
            (s = ssm_node_strings(r, data, "valid", &valid, &n_valid)) ||
            (s = ssm_node_check_unknown(r, data, "data", data_keys)))
            goto fail;
        if (!train || n_train == 0) {
            char where[512];
            s = ssm_set_error(SSM_ERR_MISSING, "%s: the audio task needs data.train: audio files, folders or "
                              "globs (train: [data/audio/allison])", ssm_node_where(r, data, where, sizeof where));
            goto fail;
        }
        /* expand first, so that a pattern matching nothing is reported at its own list */
        char **paths;
        int np;
        if ((s = wav_glob(train, n_train, &paths, &np))) {
            s = at(r, ssm_node_get(data, "train"), s);
            goto fail;
        }
        wav_paths_free(paths);
        if (n_valid) {
            if ((s = wav_glob(valid, n_valid, &paths, &np))) {
                s = at(r, ssm_node_get(data, "valid"), s);
                goto fail;
            }
            wav_paths_free(paths);
        }
        s = wav_set_open(train, n_train, valid, n_valid, &opt, &t->set);
    fail:
        free(train);
        free(valid);
        if (s) {
            audio_destroy(t);
            return s;
        }
    }
    *self = t;
    return SSM_OK;
}

static int audio_vocab_size(void *self) {
    (void)self;
    return AUDIO_VOCAB;
}

static ssm_status no_data(void) {
    return ssm_set_error(SSM_ERR_MISSING, "the audio task has no training data: the recipe needs "
                         "data: {train: [FILES, FOLDERS OR GLOBS]}");
}

/* Position p of a segment: [BOS if the file starts here] codes. */
static int32_t token_at(const wav_segment *g, size_t p) {
    if (g->starts) {
        if (p == 0) return AUDIO_BOS;
        p--;
    }
    return g->codes[p];
}

static ssm_status audio_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    audio_task *t = self;
    if (!t->set) return no_data();
    if (batch->B < 1 || batch->L < 1)
        return ssm_set_error(SSM_ERR_ARG, "audio: batch shape (%d, %d) must be positive", batch->B, batch->L);
    size_t L = (size_t)batch->L;
    for (int b = 0; b < batch->B; b++) {
        int seg;
        size_t start;
        ssm_status s = wav_set_draw(t->set, split, L + 1, rng, &seg, &start);
        if (s) return s;
        const wav_segment *g = wav_set_segment(t->set, split, seg);
        size_t n = g->length + (size_t)g->starts;
        int32_t *tok = batch->tokens + (size_t)b * L, *tgt = batch->targets + (size_t)b * L;
        for (size_t l = 0; l < L; l++) {
            size_t p = start + l;
            tok[l] = p < n ? token_at(g, p) : AUDIO_BOS;
            tgt[l] = p + 1 < n ? token_at(g, p + 1) : -1;
        }
    }
    return SSM_OK;
}

static ssm_status audio_baseline_symbols(void *self, ssm_split split, size_t max, const int32_t **symbols,
                                         size_t *n, int *alphabet) {
    audio_task *t = self;
    if (!t->set) return no_data();
    *alphabet = 256;
    if (!t->symbols[split] || t->max_symbols[split] != max) {
        free(t->symbols[split]);
        t->symbols[split] = NULL;
        int ns = wav_set_n_segments(t->set, split);
        size_t total = wav_set_split_samples(t->set, split) + (size_t)ns;
        size_t cap = total < max ? total : max, k = 0;
        int32_t *out = malloc((cap ? cap : 1) * sizeof *out);
        if (!out) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the baseline");
        for (int i = 0; i < ns && k < cap; i++) {
            const wav_segment *g = wav_set_segment(t->set, split, i);
            if (i > 0) out[k++] = -1; /* a new file: the context restarts */
            for (size_t j = 0; j < g->length && k < cap; j++) out[k++] = g->codes[j];
        }
        t->symbols[split] = out;
        t->n_symbols[split] = k;
        t->max_symbols[split] = max;
    }
    *symbols = t->symbols[split];
    *n = t->n_symbols[split];
    return SSM_OK;
}

/* ---- scoring: each audio file is one record -------------------------------------------------- */

typedef struct audio_reader {
    audio_task *t;
    char **paths;
    int n_paths, next;
    int32_t *tokens;
    size_t cap;
} audio_reader;

static void audio_close_records(void *reader) {
    audio_reader *rd = reader;
    if (!rd) return;
    wav_paths_free(rd->paths);
    free(rd->tokens);
    free(rd);
}

static ssm_status audio_open_records(void *self, const char *path, void **reader) {
    *reader = NULL;
    audio_reader *rd = calloc(1, sizeof *rd);
    if (!rd) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    rd->t = self;
    ssm_status s = wav_glob(&path, 1, &rd->paths, &rd->n_paths);
    if (s) {
        audio_close_records(rd);
        return s;
    }
    *reader = rd;
    return SSM_OK;
}

static ssm_status audio_next_record(void *reader, ssm_record *record, int *done) {
    audio_reader *rd = reader;
    memset(record, 0, sizeof *record);
    *done = 0;
    if (rd->next >= rd->n_paths) {
        *done = 1;
        return SSM_OK;
    }
    const char *path = rd->paths[rd->next++];
    int rate = rd->t ? rd->t->rate : 16000;
    wav_audio a;
    ssm_status s = wav_read_file(path, rate, rd->t ? rd->t->enc : WAV_MULAW, 0, &a);
    if (s) return s;
    if (a.n + 1 > rd->cap) {
        int32_t *tk = realloc(rd->tokens, (a.n + 1) * sizeof *tk);
        if (!tk) {
            free(a.codes);
            return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %zu samples", path, a.n);
        }
        rd->tokens = tk;
        rd->cap = a.n + 1;
    }
    rd->tokens[0] = AUDIO_BOS;
    for (size_t i = 0; i < a.n; i++) rd->tokens[i + 1] = a.codes[i];
    free(a.codes);
    record->id = strcmp(path, "-") ? path : "stdin";
    record->length = a.n;
    record->tokens = rd->tokens;
    record->scored = NULL;
    record->seconds = (double)a.n / rate;
    return SSM_OK;
}

/* ---- generation ------------------------------------------------------------------------------ */

static int32_t audio_bos_token(void *self) {
    (void)self;
    return AUDIO_BOS;
}

/* The prompt is audio: the bytes of a file in any format libsndfile reads (ssm-generate
 * --prompt-file FILE), decoded from memory. */
static ssm_status audio_encode(void *self, const char *text, size_t len, int32_t **tokens, size_t *n) {
    audio_task *t = self;
    *tokens = NULL;
    *n = 0;
    int rate = t ? t->rate : 16000;
    size_t max = t && t->prompt_seconds > 0 ? (size_t)(t->prompt_seconds * rate + 0.5) : 0;
    if (t && t->prompt_seconds > 0 && max == 0) max = 1;
    wav_audio a;
    ssm_status s = wav_read_memory("the audio prompt", text, len, rate, t ? t->enc : WAV_MULAW, max, &a);
    if (s) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        return ssm_set_error(s, "%s (an audio prompt is an audio file: --prompt-file FILE.wav)", msg);
    }
    int32_t *out = malloc(a.n * sizeof *out);
    if (!out) {
        free(a.codes);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a prompt of %zu samples", a.n);
    }
    for (size_t i = 0; i < a.n; i++) out[i] = a.codes[i];
    free(a.codes);
    *tokens = out;
    *n = a.n;
    return SSM_OK;
}

/* A 16-bit PCM WAV at sample_rate. A BOS first is dropped; any other token that is not a code
 * (a sampled BOS or padding token, which a trained model makes rarely) holds the previous
 * sample (silence at the start), so that the WAV keeps one sample per generated token. */
static ssm_status audio_write_tokens(void *self, const int32_t *tokens, size_t n, FILE *out) {
    audio_task *t = self;
    uint8_t *codes = malloc(n ? n : 1);
    if (!codes) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu samples", n);
    size_t k = 0;
    uint8_t last = wav_encode_sample(0.0f, t ? t->enc : WAV_MULAW);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && tokens[i] == AUDIO_BOS) continue;
        if (tokens[i] >= 0 && tokens[i] < 256) last = (uint8_t)tokens[i];
        codes[k++] = last;
    }
    ssm_status s = wav_write_codes(out, codes, k, t ? t->rate : 16000, t ? t->enc : WAV_MULAW);
    free(codes);
    return s;
}

/* generation writes samples: the 256 codes */
static int audio_can_generate(void *self, int32_t token) {
    (void)self;
    return token >= 0 && token < 256;
}

const ssm_task_ops ssm_task_audio = {
    SSM_TASK_OPS_HEADER,
    .name = "audio",
    .description = "raw audio: next-sample prediction of 8-bit mu-law (or linear) codes, any format "
                   "libsndfile reads",
    .symbol = "sample",
    .baseline_order = 2, /* best Witten-Bell order on recipes/audio.yaml's validation file: orders
                          * 1..5 give 5.572, 5.411, 5.645, 5.757, 5.801 bits/sample (256 symbols:
                          * higher orders have too few counts per context on 3 minutes) */
    .create = audio_create,
    .destroy = audio_destroy,
    .vocab_size = audio_vocab_size,
    .next_batch = audio_next_batch,
    .baseline_symbols = audio_baseline_symbols,
    .open_records = audio_open_records,
    .next_record = audio_next_record,
    .close_records = audio_close_records,
    .bos_token = audio_bos_token,
    .encode = audio_encode,
    .write_tokens = audio_write_tokens,
    .can_generate = audio_can_generate,
};
