/* train_settings.c: the model, train and output sections of a recipe (docs/recipes.md). */
#include <math.h>
#include <string.h>

#include "train.h"

static const char *const train_keys[] = {
    "steps", "batch_size", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
    "beta1", "beta2", "eps", "grad_clip", "seed", "eval_every", "eval_batches", "save_every",
    "log_every", "device", "threads", "max_minutes", "init_from", "freeze_backbone", "lr_backbone", NULL};
static const char *const output_keys[] = {"dir", NULL};
static const char *const sections[] = {"model", "task", "data", "train", "output", NULL};

/* Fine-tuning: init_from (a checkpoint or run directory: its backbone), freeze_backbone, and
 * lr_backbone, the backbone's peak rate beside lr (the head's); as a ratio to lr, which the
 * schedule scales alike. */
static ssm_status read_fine_tuning(ssm_recipe *r, ssm_node *n, double lr, train_settings *t) {
    int freeze;
    double lr_backbone;
    ssm_status s;
    if ((s = ssm_node_string(r, n, "init_from", NULL, &t->init_from)) ||
        (s = ssm_node_bool(r, n, "freeze_backbone", 0, &freeze)) ||
        (s = ssm_node_float(r, n, "lr_backbone", lr, 0, 1, &lr_backbone)))
        return s;
    char where[256];
    if (freeze && ssm_node_get(n, "lr_backbone"))
        return ssm_set_error(SSM_ERR_ARG, "%s: train.lr_backbone and train.freeze_backbone: true do not go "
                             "together (a frozen backbone has no rate)",
                             ssm_node_where(r, ssm_node_get(n, "lr_backbone"), where, sizeof where));
    if (!(lr > 0) && lr_backbone > 0)
        return ssm_set_error(SSM_ERR_ARG, "%s: train.lr_backbone needs train.lr > 0 (the backbone's rate "
                             "follows lr's schedule)", ssm_node_where(r, ssm_node_get(n, "lr_backbone"), where, sizeof where));
    t->backbone_lr_ratio = freeze || !(lr > 0) ? 0.0f : (float)(lr_backbone / lr);
    return SSM_OK;
}

static ssm_status read_train(ssm_recipe *r, train_settings *t) {
    ssm_node *n;
    ssm_status s = ssm_node_section(r, r->root, "train", &n);
    if (s) return s;
    long long steps, batch, seq, warmup, seed, eval_every, eval_batches, save_every, log_every,
        threads;
    double lr, min_lr, wd, b1, b2, eps, clip, max_minutes;
    if ((s = ssm_node_int(r, n, "steps", 1000, 1, 1LL << 40, &steps)) ||
        (s = ssm_node_int(r, n, "batch_size", 8, 1, 1 << 20, &batch)) ||
        (s = ssm_node_int(r, n, "seq_len", 1024, 1, 1 << 24, &seq)) ||
        (s = ssm_node_float(r, n, "lr", 2e-3, 0, 1, &lr)) ||
        (s = ssm_node_float(r, n, "min_lr_ratio", 0.1, 0, 1, &min_lr)) ||
        (s = ssm_node_int(r, n, "warmup_steps", 100, 0, 1LL << 40, &warmup)) ||
        (s = ssm_node_float(r, n, "weight_decay", 0.1, 0, 10, &wd)) ||
        (s = ssm_node_float(r, n, "beta1", 0.9, 0, 0.999999, &b1)) ||
        (s = ssm_node_float(r, n, "beta2", 0.95, 0, 0.999999, &b2)) ||
        (s = ssm_node_float(r, n, "eps", 1e-8, 1e-30, 1, &eps)) ||
        (s = ssm_node_float(r, n, "grad_clip", 1.0, 0, 1e6, &clip)) ||
        (s = ssm_node_int(r, n, "seed", 1, 0, 1LL << 62, &seed)) ||
        (s = ssm_node_int(r, n, "eval_every", 100, 1, 1LL << 40, &eval_every)) ||
        (s = ssm_node_int(r, n, "eval_batches", 8, 1, 1 << 20, &eval_batches)) ||
        (s = ssm_node_int(r, n, "save_every", 500, 1, 1LL << 40, &save_every)) ||
        (s = ssm_node_int(r, n, "log_every", 10, 1, 1LL << 40, &log_every)) ||
        (s = ssm_node_string(r, n, "device", "auto", &t->device)) ||
        (s = ssm_node_int(r, n, "threads", 0, 0, 4096, &threads)) ||
        (s = ssm_node_float(r, n, "max_minutes", 0, 0, 1e7, &max_minutes)) ||
        (s = read_fine_tuning(r, n, lr, t)))
        return s;
    t->steps = steps;
    t->batch_size = (int)batch;
    t->seq_len = (int)seq;
    t->adamw = ssm_adamw_config_default();
    t->adamw.lr = (float)lr;
    t->adamw.min_lr_ratio = (float)min_lr;
    t->adamw.warmup_steps = warmup;
    t->adamw.total_steps = steps;
    t->adamw.weight_decay = (float)wd;
    t->adamw.beta1 = (float)b1;
    t->adamw.beta2 = (float)b2;
    t->adamw.eps = (float)eps;
    t->adamw.grad_clip = (float)clip;
    t->adamw.backbone_lr_ratio = t->backbone_lr_ratio;
    t->seed = (uint64_t)seed;
    t->eval_every = eval_every;
    t->eval_batches = (int)eval_batches;
    t->save_every = save_every;
    t->log_every = log_every;
    t->threads = (int)threads;
    t->max_minutes = max_minutes;
    return n ? ssm_node_check_unknown(r, n, "train", train_keys) : SSM_OK;
}

ssm_status train_settings_read(ssm_recipe *r, int task_vocab, train_settings *t) {
    memset(t, 0, sizeof *t);
    ssm_status s = ssm_config_from_recipe(r, task_vocab, &t->model);
    if (!s) s = read_train(r, t);
    if (s) return s;
    ssm_node *o;
    if ((s = ssm_node_section(r, r->root, "output", &o))) return s;
    if ((s = ssm_node_string(r, o, "dir", "runs/default", &t->run_dir))) return s;
    if (o && (s = ssm_node_check_unknown(r, o, "output", output_keys))) return s;
    /* the task has read its sections by now: anything left over is a typo */
    ssm_node *task = ssm_node_get(r->root, "task"), *data = ssm_node_get(r->root, "data");
    if (task && task->kind == SSM_NODE_MAP && (s = ssm_node_check_unknown(r, task, "task", NULL))) return s;
    if (data && data->kind == SSM_NODE_MAP && (s = ssm_node_check_unknown(r, data, "data", NULL))) return s;
    return ssm_node_check_unknown(r, r->root, "the recipe", sections);
}
