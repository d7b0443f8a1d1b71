/* fuzz_checkpoint.c: fuzz target for the safetensors reader and the checkpoint loaders
 * (libssm/src/safetensors.c, libssm/src/checkpoint.c).
 *
 * Each input is written to a temporary file, which is then opened with ssm_safetensors_open
 * (every tensor read with read_f32 and read_i32, whatever succeeds), loaded with
 * ssm_checkpoint_load as a file and, when it has no ssm.* metadata, as a directory
 * (model.safetensors) with a fixed valid config.json beside it, and loaded with ssm_adamw_load
 * into the optimizer of a small model. Errors are fine; an error without a message, a crash,
 * a leak or undefined behaviour is a bug.
 *
 * With libFuzzer (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilibssm/include \
 *     tests/fuzz/fuzz_checkpoint.c libssm/src/[a-z]*.c -ljansson -lm -fopenmp -o fuzz_checkpoint
 *   ./fuzz_checkpoint tests/fuzz/checkpoint_corpus
 * (the seeds that the standalone driver generates can be written out with
 * SSM_FUZZ_WRITE_SEEDS=DIR). Built with -DSSM_FUZZ_STANDALONE (as the meson test
 * 'fuzz_checkpoint' is), a main of its own generates seeds (a tiny model saved with
 * ssm_checkpoint_save with and without metadata, and its optimizer state saved with
 * ssm_adamw_save), adds the files and directories named on the command line, and runs each and,
 * deterministically, mutations of each (truncations, bit flips, header-length and JSON edits,
 * deleted and repeated spans, splices); SSM_FUZZ_MUTATIONS sets how many per seed (default 400)
 * and SSM_FUZZ_SEED picks another stream of them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssm/checkpoint.h"
#include "ssm/ssm.h"
#include "fuzz_driver.h"

/* The small model of the seeds and of ssm_adamw_load: vocab 8, d_model 8, one layer. */
static const char config_json[] =
    "{\"model_type\": \"mamba\", \"hidden_act\": \"silu\", \"use_bias\": false,\n"
    " \"use_conv_bias\": true, \"vocab_size\": 8, \"hidden_size\": 8, \"num_hidden_layers\": 1,\n"
    " \"state_size\": 4, \"conv_kernel\": 4, \"expand\": 2, \"time_step_rank\": \"auto\",\n"
    " \"layer_norm_epsilon\": 1e-5}\n";

static char workdir[256];        /* private temporary folder */
static char file_path[320];      /* workdir/input.safetensors */
static char dir_path[320];       /* workdir/dir (config.json and model.safetensors) */
static char dir_model[352];      /* workdir/dir/model.safetensors */
static ssm_model *small;         /* the small model */
static ssm_adamw *opt;           /* its optimizer */
static long n_opened, n_loaded, n_adamw; /* successes, for the driver's summary */

static ssm_config small_config(void) {
    ssm_config c = ssm_config_default(8, 8, 1);
    c.d_state = 4;
    return c;
}

static void write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot create %s", path);
    CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    CHECK(fclose(f) == 0, "cannot write %s", path);
}

static void remove_workdir(void) {
    unlink(file_path);
    unlink(dir_model);
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", dir_path);
    unlink(p);
    rmdir(dir_path);
    rmdir(workdir);
}

static void setup(void) {
    if (small) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(workdir, sizeof workdir, "%s/fuzz_checkpoint.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(workdir) != NULL, "mkdtemp %s", workdir);
    snprintf(file_path, sizeof file_path, "%s/input.safetensors", workdir);
    snprintf(dir_path, sizeof dir_path, "%s/dir", workdir);
    snprintf(dir_model, sizeof dir_model, "%s/model.safetensors", dir_path);
    CHECK(mkdir(dir_path, 0700) == 0, "mkdir %s", dir_path);
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", dir_path);
    write_bytes(p, config_json, sizeof config_json - 1);
    ssm_config c = small_config();
    CHECK(ssm_model_create(&c, &small) == SSM_OK, "model: %s", ssm_last_error());
    ssm_adamw_config oc = ssm_adamw_config_default();
    CHECK(ssm_adamw_create(&oc, small, &opt) == SSM_OK, "optimizer: %s", ssm_last_error());
    atexit(remove_workdir);
}

/* Every tensor read both ways; the header must describe what it said it would. */
static void read_all(const ssm_safetensors *st) {
    int n = ssm_safetensors_count(st);
    CHECK(n >= 0, "count %d", n);
    for (int i = 0; i < n; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        CHECK(t && t->name, "tensor %d", i);
        CHECK(ssm_safetensors_find(st, t->name) == t, "find '%s'", t->name);
        CHECK(t->begin <= t->end && t->ndim >= 0 && t->ndim <= 8, "tensor '%s'", t->name);
        if (t->numel > (1u << 22)) continue; /* a valid header may still describe a big tensor */
        void *buf = malloc(t->numel ? t->numel * 4 : 1);
        CHECK(buf != NULL, "malloc");
        ssm_status s = ssm_safetensors_read_f32(st, t->name, buf, t->numel);
        if (s) FAILED(s);
        s = ssm_safetensors_read_i32(st, t->name, buf, t->numel);
        if (s) FAILED(s);
        if (t->numel) { /* a wrong count is refused */
            s = ssm_safetensors_read_f32(st, t->name, buf, t->numel - 1);
            CHECK(s != SSM_OK, "read_f32 with a wrong count");
            FAILED(s);
        }
        free(buf);
    }
    CHECK(ssm_safetensors_tensor(st, n) == NULL && ssm_safetensors_tensor(st, -1) == NULL, "index");
    ssm_status s = ssm_safetensors_read_f32(st, "no such tensor \x01", NULL, 0);
    CHECK(s != SSM_OK, "missing tensor read");
    FAILED(s);
    ssm_safetensors_meta(st, "ssm.vocab_size");
    ssm_safetensors_meta(st, "format");
}

static int has_ssm_meta(const ssm_safetensors *st) {
    static const char *const keys[] = {"ssm.vocab_size", "ssm.d_model", "ssm.n_layer",
                                       "ssm.d_state", "ssm.d_conv", "ssm.expand",
                                       "ssm.dt_rank", "ssm.d_inner", "ssm.norm_eps"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (ssm_safetensors_meta(st, keys[i])) return 1;
    return 0;
}

static void load_model(const char *path) {
    ssm_model *m = (ssm_model *)(uintptr_t)1;
    ssm_status s = ssm_checkpoint_load(path, &m);
    if (s) {
        FAILED(s);
        return;
    }
    CHECK(m != NULL, "no model on success");
    CHECK(m->config.vocab_size >= 1 && m->config.d_model >= 1 && m->config.n_layer >= 1, "config");
    n_loaded++;
    ssm_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    write_bytes(file_path, data, size);
    ssm_safetensors *st = NULL;
    ssm_status s = ssm_safetensors_open(file_path, &st);
    int meta = 1;
    if (s) {
        CHECK(st == NULL, "file on failure");
        FAILED(s);
    } else {
        CHECK(st != NULL, "no file on success");
        n_opened++;
        read_all(st);
        meta = has_ssm_meta(st);
        ssm_safetensors_close(st);
    }
    load_model(file_path);
    if (!meta) { /* a transformers-style file: the config comes from config.json */
        write_bytes(dir_model, data, size);
        load_model(dir_path);
        unlink(dir_model);
    }
    st = NULL;
    s = ssm_adamw_load(opt, small, file_path, &st);
    if (s) {
        FAILED(s);
        CHECK(st == NULL, "file on a failed ssm_adamw_load");
    } else {
        CHECK(st != NULL, "no file from ssm_adamw_load");
        n_adamw++;
        ssm_safetensors_close(st);
    }
    s = ssm_adamw_load(opt, small, file_path, NULL);
    if (s) FAILED(s);
    unlink(file_path);
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE

/* Seeds made here: the small model with its ssm.* metadata, the same tensors without it (a
 * transformers-style file), a model with another shape, and the optimizer state. */
static void generate_seeds(fuzz_input **ins, int *n) {
    setup();
    char path[400];
    const char *out = getenv("SSM_FUZZ_WRITE_SEEDS");
    const char *extra[] = {"recipe", "model: {d_model: 8}\n", NULL};
    snprintf(path, sizeof path, "%s/seed.safetensors", workdir);
    /* with metadata */
    CHECK(ssm_checkpoint_save(small, path, extra) == SSM_OK, "save: %s", ssm_last_error());
    fuzz_add_file(path, ins, n);
    /* the same tensors without ssm.* metadata */
    ssm_st_write_item *items = calloc((size_t)small->n_tensors, sizeof *items);
    ssm_safetensors *st = NULL;
    CHECK(ssm_safetensors_open(path, &st) == SSM_OK, "open seed: %s", ssm_last_error());
    float **bufs = calloc((size_t)ssm_safetensors_count(st), sizeof *bufs);
    int k = ssm_safetensors_count(st);
    for (int i = 0; i < k; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        bufs[i] = malloc(t->numel * 4 + 4);
        CHECK(ssm_safetensors_read_f32(st, t->name, bufs[i], t->numel) == SSM_OK, "read seed");
        items = realloc(items, (size_t)(i + 1) * sizeof *items);
        items[i].name = t->name;
        items[i].ndim = t->ndim;
        memcpy(items[i].shape, t->shape, sizeof t->shape);
        items[i].data = bufs[i];
    }
    char path2[400];
    snprintf(path2, sizeof path2, "%s/seed2.safetensors", workdir);
    CHECK(ssm_safetensors_write(path2, items, k, NULL) == SSM_OK, "write: %s", ssm_last_error());
    fuzz_add_file(path2, ins, n);
    for (int i = 0; i < k; i++) free(bufs[i]);
    free(bufs);
    free(items);
    ssm_safetensors_close(st);
    /* another shape: two layers, d_model 16 */
    ssm_config c = ssm_config_default(5, 16, 2);
    c.d_state = 2;
    ssm_model *other = NULL;
    CHECK(ssm_model_create(&c, &other) == SSM_OK, "model: %s", ssm_last_error());
    CHECK(ssm_checkpoint_save(other, path, NULL) == SSM_OK, "save: %s", ssm_last_error());
    ssm_model_free(other);
    fuzz_add_file(path, ins, n);
    /* the optimizer state of the small model */
    opt->step = 3;
    for (size_t i = 0; i < opt->n; i++) opt->m[i] = 0.01f * (float)(i % 7), opt->v[i] = 0.001f;
    const char *state[] = {"data.position", "12", NULL};
    CHECK(ssm_adamw_save(opt, small, path, state) == SSM_OK, "save: %s", ssm_last_error());
    fuzz_add_file(path, ins, n);
    unlink(path);
    unlink(path2);
    if (out)
        for (int i = 0; i < *n; i++) {
            snprintf(path, sizeof path, "%s/generated-%d.safetensors", out, i);
            write_bytes(path, (*ins)[i].data, (*ins)[i].len);
        }
}

static const char *const tokens[] = {"\"F32\"", "\"F16\"", "\"BF16\"", "\"F64\"", "\"I64\"",
                                     "\"I32\"", "\"U8\"", "\"X\"", "[]", "[0]", "[1, 0]",
                                     "[0, 4]", "-1", "0", "99999999999999999999", "{}", "null",
                                     "\"__metadata__\"", "\"ssm.d_model\"", "\"ssm.norm_eps\"",
                                     "\"nan\"", "\"0\"", ",", ":", "\"", "1e999"};
#define N_TOKENS ((int)(sizeof tokens / sizeof *tokens))

/* Where the JSON header ends (its first 8 bytes are its length), or 8. */
static size_t header_end(const unsigned char *b, size_t len) {
    if (len < 8) return len;
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    return h <= len - 8 ? 8 + (size_t)h : len;
}

/* One mutation of in into buf (mostly inside the header, where the parsing is); returns the new
 * length. Edits that change the header's size fix its length up most of the time. */
static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    size_t len = in->len < cap ? in->len : cap;
    memcpy(buf, in->data, len);
    int ops = 1 + (int)(fuzz_next() % 3);
    for (int k = 0; k < ops; k++) {
        size_t hend = header_end(buf, len), before = len;
        size_t at = fuzz_next() % 4 && hend > 8 ? 8 + fuzz_next() % (hend - 8) : (len ? fuzz_next() % len : 0);
        switch (fuzz_next() % 9) {
        case 0: /* bit flip */
            if (len) buf[at] ^= (unsigned char)(1u << (fuzz_next() % 8));
            break;
        case 1: /* a digit changed */
            if (len) buf[at] = (unsigned char)('0' + fuzz_next() % 10);
            break;
        case 2: { /* a JSON token inserted */
            const char *t = tokens[fuzz_next() % N_TOKENS];
            size_t n = strlen(t);
            if (len + n <= cap) {
                memmove(buf + at + n, buf + at, len - at);
                memcpy(buf + at, t, n);
                len += n;
            }
            break;
        }
        case 3: { /* delete a span */
            size_t n = len - at < 16 ? len - at : 1 + fuzz_next() % 16;
            memmove(buf + at, buf + at + n, len - at - n);
            len -= n;
            break;
        }
        case 4: { /* repeat a span */
            size_t n = 1 + fuzz_next() % 32;
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
            size_t from = fuzz_next() % other->len, n = 1 + fuzz_next() % 64;
            if (from + n > other->len) n = other->len - from;
            if (at + n > cap) n = cap - at;
            memcpy(buf + at, other->data + from, n);
            if (at + n > len) len = at + n;
            break;
        }
        case 7: /* a byte of the header length */
            if (len >= 8) buf[fuzz_next() % 8] = (unsigned char)fuzz_next();
            break;
        case 8: /* a byte of the data section */
            if (len > hend) buf[hend + fuzz_next() % (len - hend)] = (unsigned char)fuzz_next();
            break;
        }
        /* keep the header length in step with an edit of the header, mostly */
        if (len != before && len >= 8 && at >= 8 && at < hend && fuzz_next() % 4) {
            uint64_t h = (uint64_t)(hend - 8) + len - before;
            if (len < before) h = (uint64_t)(hend - 8) - (before - len);
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(h >> (8 * i));
        }
    }
    return len;
}

static void summary(int n, int generated, long runs) {
    printf("fuzz_checkpoint: %d inputs (%d generated), %ld runs (%ld opened, %ld models loaded, "
           "%ld optimizer states loaded), no failure\n", n, generated, runs, n_opened, n_loaded, n_adamw);
}

static void cleanup(void) {
    ssm_adamw_free(opt);
    ssm_model_free(small);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_checkpoint", .mutations = 400, .truncations = 32,
                                      .seeds = generate_seeds, .mutate = mutate, .summary = summary,
                                      .cleanup = cleanup};
#endif
