/* hf_written: what transformers is to load from ssm. For each model given (a checkpoint that
 * ssm_checkpoint_load reads: a run directory, a transformers folder, a .safetensors), saves
 * it again through ssm's own writers into OUT/NAME/ (model.safetensors and config.json, as a
 * run directory holds them) and writes there the logits ssm computes for fixed tokens:
 * expected.safetensors with input_ids (1, L) and logits (1, L, V), F32. check_hf_written.py
 * then loads each OUT/NAME/ with transformers' from_pretrained and compares.
 *
 * Usage: hf_written OUT NAME=PATH [NAME=PATH ...] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ssm/checkpoint.h"
#include "ssm/ssm.h"

#define L 24

static int resave(const char *out, const char *arg) {
    const char *eq = strchr(arg, '=');
    if (!eq) return fprintf(stderr, "hf_written: '%s' is not NAME=PATH\n", arg), 1;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/%.*s", out, (int)(eq - arg), arg);
    if (mkdir(dir, 0755) && errno != EEXIST) return perror(dir), 1;
    ssm_model *m = NULL;
    if (ssm_checkpoint_load(eq + 1, &m)) {
        fprintf(stderr, "hf_written: %s: %s\n", eq + 1, ssm_last_error());
        return 1;
    }
    int V = m->config.vocab_size, rc = 1;
    int32_t tokens[L];
    for (int l = 0; l < L; l++) tokens[l] = (int32_t)((l * 7919 + 3) % V);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ssm_status s = ssm_checkpoint_save(m, path, NULL);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!s) s = ssm_checkpoint_write_config(m, path, 0);
    if (!s) s = ssm_forward(m, tokens, NULL, 1, L, NULL, NULL);
    if (!s) {
        float ids[L];
        for (int l = 0; l < L; l++) ids[l] = (float)tokens[l];
        ssm_st_write_item items[] = {
            {"input_ids", 2, {1, L}, ids},
            {"logits", 3, {1, L, V}, ssm_model_logits(m)},
        };
        snprintf(path, sizeof path, "%s/expected.safetensors", dir);
        s = ssm_safetensors_write(path, items, 2, NULL);
    }
    if (s) fprintf(stderr, "hf_written: %s: %s\n", dir, ssm_last_error());
    else printf("%s: %d layers, V %d, from %s\n", dir, m->config.n_layer, V, eq + 1), rc = 0;
    ssm_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: hf_written OUT NAME=PATH [NAME=PATH ...]\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) && errno != EEXIST) return perror(argv[1]), 1;
    int rc = 0;
    for (int i = 2; i < argc; i++) rc |= resave(argv[1], argv[i]);
    return rc;
}
