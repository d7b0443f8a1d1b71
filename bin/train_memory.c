/* train_memory.c: a training plan larger than the memory left is refused before anything is
 * allocated, with the figures and what to lower (docs/reliability.md). */
#include <stdio.h>

#include "train.h"

/* "3.2 GiB", "612.0 MiB", "40.0 KiB" */
static const char *human(double bytes, char *buf, size_t size) {
    const char *unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    for (; u < 4 && bytes >= 1024; u++) bytes /= 1024;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

ssm_status train_check_memory(const char *recipe_path, const train_settings *set, int gpu) {
    ssm_memory_plan p;
    ssm_status s = ssm_plan_training_memory(&set->model, set->batch_size, set->seq_len, &p);
    if (s) return s;
    /* on a GPU the activations live on the device (its backend plans them); the host keeps
     * the parameters, gradients and moments */
    double need = gpu ? p.total - p.activations : p.total, have = ssm_available_memory();
    if (have <= 0 || need <= have) return SSM_OK;
    const char *lower = !gpu && p.activations > need / 2
        ? "lower train.batch_size or train.seq_len (the activations grow with both)"
        : "lower model.d_model or model.n_layer (the parameters, their gradients and AdamW's two "
          "moments are 16 bytes a parameter)";
    char b[6][32];
    return ssm_set_error(SSM_ERR_NOMEM, "%s: this training needs %s of memory (parameters %s, "
                         "gradients %s, AdamW moments %s, activations of batch %d x length %d %s%s) "
                         "but %s are available; %s", recipe_path, human(need, b[0], 32),
                         human(p.params, b[1], 32), human(p.grads, b[2], 32),
                         human(p.optimizer, b[3], 32), set->batch_size, set->seq_len,
                         human(p.activations, b[4], 32), gpu ? ", on the GPU" : "",
                         human(have, b[5], 32), lower);
}
