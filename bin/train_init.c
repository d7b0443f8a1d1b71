/* train_init.c: fine-tuning starts from a pretrained backbone (train.init_from; train.h). */
#include <string.h>

#include "ssm/checkpoint.h"
#include "train.h"

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
        else if (f->ndim != t->ndim || memcmp(f->shape, t->shape, sizeof t->shape))
            s = ssm_set_error(SSM_ERR_SHAPE, "train.init_from %s: %s is (%lld, %lld, %lld) there, (%lld, "
                              "%lld, %lld) here: pretrain with the same model section", file, t->name,
                              (long long)f->shape[0], (long long)f->shape[1], (long long)f->shape[2],
                              (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2]);
        else
            memcpy(m->params_blob + t->offset, src->params_blob + f->offset, t->numel * sizeof(float)), copied++;
    }
    ssm_model_free(src);
    if (!s) cli_note("train.init_from: %d tensors of the backbone from %s; the head starts fresh", copied, file);
    return s;
}
