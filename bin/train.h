/* train.h: ssm-train's settings (from the recipe) and its training loop. */
#ifndef SSM_TRAIN_H
#define SSM_TRAIN_H

#include "cli.h"
#include "ssm/ssm.h"

typedef struct train_settings {
    /* model: */
    ssm_config model;
    /* train: */
    int64_t steps;
    int batch_size, seq_len;
    ssm_adamw_config adamw;
    uint64_t seed;
    int64_t eval_every, save_every, log_every;
    int eval_batches;
    const char *device;
    int threads;
    double max_minutes; /* stop (and save) after this wall time; 0 = no limit */
    const char *init_from;   /* fine-tuning: the checkpoint whose backbone starts the model */
    float backbone_lr_ratio; /* the backbone's lr over lr (train.lr_backbone; 0: frozen) */
    /* output: */
    const char *run_dir;
} train_settings;

/* Read the model, train and output sections (task and data are the task's). */
ssm_status train_settings_read(ssm_recipe *recipe, int task_vocab, train_settings *out);

typedef struct train_options {
    const char *resume_dir; /* NULL: a new run */
    int force;              /* overwrite an existing run directory */
    int64_t stop_after;     /* stop (and save, as Ctrl-C would) after this many steps; 0 = no */
    /* called after every step (the Python module's ssm.train); nonzero stops the run as
     * --stop-after does. NULL: none. */
    int (*on_step)(void *ctx, int64_t step, double loss, double lr, double grad_norm);
    void *on_step_ctx;
} train_options;

/* The whole run: summary, baseline, loop with evaluation and checkpoints, SIGINT/SIGTERM.
 * Returns the program's exit status. */
int train_run(ssm_recipe *recipe, const ssm_task_ops *ops, void *task, train_settings *set,
              const train_options *opt);
/* Fine-tuning (bin/train_init.c): every tensor of the model but the task head's (head.*) from
 * the checkpoint at path (a model.safetensors or a run directory), which must have each of them
 * with the same shape; the head keeps its fresh initialisation. */
ssm_status train_init_from(ssm_model *model, const char *path);
/* Refuse a plan larger than the memory left (bin/train_memory.c); gpu: activations on the GPU. */
ssm_status train_check_memory(const char *recipe_path, const train_settings *set, int gpu);

#endif
