/* optimizer.c: AdamW with the reference's no-decay set, global gradient-norm clipping,
 * linear warmup then cosine decay (the schedule of mamba_ssm's and llm.c's trainers). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

ssm_adamw_config ssm_adamw_config_default(void) {
    return (ssm_adamw_config){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                              .weight_decay = 0.1f, .grad_clip = 1.0f, .warmup_steps = 0,
                              .total_steps = 0, .min_lr_ratio = 0.1f, .backbone_lr_ratio = 1.0f};
}

ssm_status ssm_adamw_create(const ssm_adamw_config *config, const ssm_model *model,
                            ssm_adamw **out) {
    if (!config || !model || !out) return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_create: NULL argument");
    const ssm_adamw_config *c = config;
    if (!(c->lr >= 0) || !(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) ||
        !(c->eps > 0) || !(c->weight_decay >= 0) || c->warmup_steps < 0 || c->total_steps < 0 ||
        !(c->min_lr_ratio >= 0 && c->min_lr_ratio <= 1) || !(c->backbone_lr_ratio >= 0))
        return ssm_set_error(SSM_ERR_ARG, "AdamW settings out of range (lr >= 0, 0 <= betas < 1, "
                             "eps > 0, weight_decay >= 0, 0 <= min_lr_ratio <= 1, backbone_lr_ratio >= 0)");
    ssm_adamw *o = calloc(1, sizeof *o);
    if (!o) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the optimizer");
    o->config = *c;
    o->n = model->n_params;
    o->m = calloc(o->n, sizeof(float));
    o->v = calloc(o->n, sizeof(float));
    if (!o->m || !o->v) {
        ssm_adamw_free(o);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the optimizer moments");
    }
    *out = o;
    return SSM_OK;
}

void ssm_adamw_free(ssm_adamw *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o);
}

float ssm_adamw_lr(const ssm_adamw_config *c, int64_t step) {
    /* linear warmup over warmup_steps: lr * (step + 1) / warmup */
    if (step < c->warmup_steps) return c->lr * (float)(step + 1) / (float)c->warmup_steps;
    if (c->total_steps <= c->warmup_steps) return c->lr;
    /* cosine from lr to min_lr_ratio * lr between warmup_steps and total_steps */
    double p = (double)(step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    if (p > 1) p = 1;
    double min_lr = c->lr * c->min_lr_ratio;
    return (float)(min_lr + 0.5 * (c->lr - min_lr) * (1 + cos(M_PI * p)));
}

ssm_status ssm_adamw_step(ssm_adamw *o, ssm_model *model, float *grad_norm) {
    if (!o || !model || o->n != model->n_params)
        return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_step: optimizer made for another model");
    return model->backend->adamw_step(o, model, grad_norm);
}

ssm_status ssm_cpu_adamw_step(ssm_adamw *o, ssm_model *model, float *grad_norm) {
    const ssm_adamw_config *c = &o->config;
    float *g = model->grads_blob, *p = model->params_blob;
    /* global L2 norm of all gradients, in double */
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static)
    for (size_t i = 0; i < o->n; i++) ss += (double)g[i] * g[i];
    double norm = sqrt(ss);
    if (grad_norm) *grad_norm = (float)norm;
    if (!isfinite(norm))
        return ssm_set_error(SSM_ERR_NUMERIC, "the gradient norm is not finite at step %lld: "
                             "parameters left unchanged; lower the learning rate",
                             (long long)o->step);
    float clip = c->grad_clip > 0 && norm > c->grad_clip ? (float)(c->grad_clip / (norm + 1e-6)) : 1.0f;
    float lr = ssm_adamw_lr(c, o->step);
    o->step++;
    /* bias corrections of the moments */
    float bc1 = 1.0f - powf(c->beta1, (float)o->step), bc2 = 1.0f - powf(c->beta2, (float)o->step);
    for (int k = 0; k < model->n_tensors; k++) {
        const ssm_tensor_info *t = &model->tensors[k];
        float wd = t->decay ? c->weight_decay : 0.0f;
        /* fine-tuning: the backbone at its own rate (a frozen one, 0, neither moves nor decays) */
        float lr_t = strncmp(t->name, "head.", 5) ? lr * c->backbone_lr_ratio : lr;
#pragma omp parallel for schedule(static)
        for (size_t i = t->offset; i < t->offset + t->numel; i++) {
            float gi = g[i] * clip;
            o->m[i] = c->beta1 * o->m[i] + (1.0f - c->beta1) * gi;
            o->v[i] = c->beta2 * o->v[i] + (1.0f - c->beta2) * gi * gi;
            float mhat = o->m[i] / bc1, vhat = o->v[i] / bc2;
            /* decoupled weight decay: p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p) */
            p[i] -= lr_t * (mhat / (sqrtf(vhat) + c->eps) + wd * p[i]);
        }
    }
    return SSM_OK;
}
