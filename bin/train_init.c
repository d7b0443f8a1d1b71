/* train_init.c: fine-tuning starts from a pretrained backbone (train.init_from; train.h). */
#include <string.h>

#include "ssm/checkpoint.h"
#include "train.h"

/* "(16, 32)" */
static const char *shape_text(const ssm_tensor_info *t, char *buf, size_t size) {
    int n = snprintf(buf, size, "(");
    for (int d = 0; d < t->ndim && n < (int)size; d++)
        n += snprintf(buf + n, size - (size_t)n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < (int)size) snprintf(buf + n, size - (size_t)n, ")");
    return buf;
}

ssm_status train_init_from(ssm_model *m, const char *path) {
    char file[4200];
    snprintf(file, sizeof file, cli_is_dir(path) ? "%s/model.safetensors" : "%s", path);
    ssm_model *src = NULL;
    ssm_status s = ssm_checkpoint_load(file, &src);
    if (s) return s;
    int copied = 0;
    for (int k = 0; k < m->n_tensors && !s; k++) {
        const ssm_tensor_info *t = &m->tensors[k];
        if (!strncmp(t->name, "head.", 5)) continue; /* the task's head: fresh */
        const ssm_tensor_info *f = ssm_model_find_tensor(src, t->name);
        if (!f)
            s = ssm_set_error(SSM_ERR_SHAPE, "train.init_from %s has no tensor %s: pretrain with the "
                              "same model section", file, t->name);
        else if (f->ndim != t->ndim || memcmp(f->shape, t->shape, (size_t)t->ndim * sizeof *t->shape)) {
            char a[64], b[64];
            s = ssm_set_error(SSM_ERR_SHAPE, "train.init_from %s: %s is %s there, %s here: pretrain with "
                              "the same model section", file, t->name, shape_text(f, a, sizeof a),
                              shape_text(t, b, sizeof b));
        } else
            memcpy(m->params_blob + t->offset, src->params_blob + f->offset, t->numel * sizeof(float)), copied++;
    }
    ssm_model_free(src);
    if (!s) cli_note("train.init_from: %d tensors of the backbone from %s; the head starts fresh", copied, file);
    return s;
}
