/* fuzz_config.c: fuzz target for config.json (transformers' config beside a model.safetensors
 * without ssm.* metadata; read through jansson in libssm/src/checkpoint.c).
 *
 * Two directories are made at startup, each with a transformers-style model.safetensors (the
 * tensors of a tiny Mamba-1 model, and of a tiny Mamba-2 one, no ssm.* metadata); each input
 * is written as config.json into both and the directory loaded with ssm_checkpoint_load. Errors
 * are fine; an error without a message, a model whose config breaks ssm_config_check, a crash,
 * a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_config), and
 *   build-fuzz/fuzz_config tests/fuzz/config_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_config'), the standalone driver runs
 * the config.json that ssm_checkpoint_write_config writes for both models, the files of
 * tests/fuzz/config_corpus, and deterministic mutations of each (SSM_FUZZ_MUTATIONS, default
 * 300; SSM_FUZZ_SEED). The corpus holds a config of each dialect the loader reads: transformers'
 * Mamba, Mamba2, Jamba and NemotronH, Caduceus, mamba_ssm's MixerModel (the last four are read
 * through to the end of their dialect's reader, then refused at the tensors, which are neither
 * model's), and the inputs that overflowed an int before (overflow_*.json). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssm/checkpoint.h"
#include "ssm/ssm.h"
#include "fuzz_driver.h"

static char workdir[256], dirs[2][280];
static long n_loaded;

static ssm_config model_config(int mamba2) {
    ssm_config c = ssm_config_default(16, 8, 1);
    c.d_state = 4;
    if (mamba2) {
        ssm_config_set_kind(&c, SSM_LAYER_MAMBA2);
        c.mamba2.headdim = 4, c.mamba2.d_state = 4, c.mamba2.ngroups = 2;
        c.mamba2.chunk_size = 3, c.mamba2.expand = 2;
    }
    return c;
}

static void path_in(char *buf, size_t size, int d, const char *name) {
    snprintf(buf, size, "%s/%s", dirs[d], name);
}

static void remove_workdir(void) {
    char p[600];
    for (int d = 0; d < 2; d++) {
        path_in(p, sizeof p, d, "model.safetensors"), unlink(p);
        path_in(p, sizeof p, d, "config.json"), unlink(p);
        rmdir(dirs[d]);
    }
    rmdir(workdir);
}

/* dirs[d]/model.safetensors: the model's tensors as transformers writes them (no metadata),
 * and dirs[d]/config.json as ssm_checkpoint_write_config writes it */
static void make_dir(int d) {
    snprintf(dirs[d], sizeof dirs[d], "%s/m%d", workdir, d + 1);
    CHECK(mkdir(dirs[d], 0700) == 0, "mkdir %s", dirs[d]);
    ssm_config c = model_config(d);
    ssm_model *m = NULL;
    CHECK(ssm_model_create(&c, &m) == SSM_OK, "model: %s", ssm_last_error());
    ssm_st_write_item *items = calloc((size_t)m->n_tensors, sizeof *items);
    for (int i = 0; i < m->n_tensors; i++) {
        const ssm_tensor_info *t = &m->tensors[i];
        items[i].name = t->name;
        items[i].ndim = t->ndim;
        for (int k = 0; k < t->ndim; k++) items[i].shape[k] = t->shape[k];
        items[i].data = m->params_blob + t->offset;
    }
    char p[600];
    path_in(p, sizeof p, d, "model.safetensors");
    CHECK(ssm_safetensors_write(p, items, m->n_tensors, NULL) == SSM_OK, "write: %s", ssm_last_error());
    path_in(p, sizeof p, d, "config.json");
    CHECK(ssm_checkpoint_write_config(m, p, 0) == SSM_OK, "config: %s", ssm_last_error());
    free(items);
    ssm_model_free(m);
}

static void setup(void) {
    if (workdir[0]) return;
    const char *tmp = getenv("TMPDIR");
    snprintf(workdir, sizeof workdir, "%s/fuzz_config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(workdir) != NULL, "mkdtemp %s", workdir);
    make_dir(0);
    make_dir(1);
    atexit(remove_workdir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    char p[600];
    for (int d = 0; d < 2; d++) {
        path_in(p, sizeof p, d, "config.json");
        FILE *f = fopen(p, "wb");
        CHECK(f && (size == 0 || fwrite(data, 1, size, f) == size) && fclose(f) == 0, "write %s", p);
        ssm_model *m = NULL;
        ssm_status s = ssm_checkpoint_load(dirs[d], &m);
        if (s) {
            FAILED(s);
            continue;
        }
        CHECK(m != NULL, "no model on success");
        ssm_config c = m->config;
        CHECK(ssm_config_validate(&c) == SSM_OK, "loaded config fails its check: %s", ssm_last_error());
        n_loaded++;
        ssm_model_free(m);
    }
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
static const char punct[] = "{}[]:,\"0123456789.-eE \ntruefalsenull\\u";

static size_t mutate(const fuzz_input *in, const fuzz_input *other, unsigned char *buf, size_t cap) {
    return fuzz_mutate_bytes(in, other, buf, cap, punct, sizeof punct - 1);
}

/* the config.json files that setup wrote */
static void seeds(fuzz_input **ins, int *n) {
    setup();
    char p[600];
    for (int d = 0; d < 2; d++) path_in(p, sizeof p, d, "config.json"), fuzz_add_file(p, ins, n);
}

static void summary(int n, int generated, long runs) {
    printf("fuzz_config: %d inputs (%d generated), %ld runs, %ld loads succeeded, no failure\n", n,
           generated, runs, n_loaded);
}

const fuzz_target fuzz_this_target = {.name = "fuzz_config", .mutations = 300, .truncations = 48,
                                      .seeds = seeds, .mutate = mutate, .summary = summary};
#endif
