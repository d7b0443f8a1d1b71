/* cli.h: what the programs share: messages in the "program: where: what" form, exit codes,
 * progress display, run directories, loading a trained model with its task. */
#ifndef SSM_CLI_H
#define SSM_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "ssm/recipe.h"
#include "ssm/ssm.h"
#include "ssm/task.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_INPUT = 1, CLI_EXIT_USAGE = 2 };

void cli_init(const char *program);
const char *cli_program(void);
/* "program: <ssm_last_error()>" on stderr; returns CLI_EXIT_INPUT. */
int cli_fail(void);
/* "program: <message>" on stderr; returns CLI_EXIT_INPUT. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "program: <message>\nTry 'program --help'." on stderr; returns CLI_EXIT_USAGE. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Informational line on stderr ("program: ..."), unless quiet. */
void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int cli_quiet;

double cli_now(void); /* monotonic seconds */
/* "1h02m", "4m10s", "12s" */
const char *cli_duration(double seconds, char *buf, size_t size);
/* 12345 -> "12.3k", 1.2e6 -> "1.20M" */
const char *cli_si(double x, char *buf, size_t size);

/* Progress of a long job on stderr: a live line on a terminal (redrawn at most 10 times a
 * second), else a plain line every `every` calls (and at the end). */
typedef struct cli_progress {
    int tty;
    double start, last_draw;
    int64_t total;
    long every, calls;
    const char *unit; /* "step", "base"... */
} cli_progress;
void cli_progress_start(cli_progress *p, int64_t total, long every, const char *unit);
/* done items so far; extra: a short text shown after the bar (loss, speed...) */
void cli_progress_update(cli_progress *p, int64_t done, const char *extra);
void cli_progress_end(cli_progress *p);

/* mkdir -p */
int cli_mkdirs(const char *path);
int cli_is_dir(const char *path);
int cli_exists(const char *path);

/* Device choice: "auto" | "cpu" | "cuda" | "cuda:N" (ssm_parse_device; NULL = auto) ->
 * *device (-1: the CPU, else a CUDA device index) and, when name != NULL, its printable name
 * ("cpu", "cuda:0") in a static buffer. */
ssm_status cli_device(const char *text, int *device, const char **name);
/* --device auto chose a GPU whose backend cannot run this model: the CPU instead, with a note
 * (an explicit cuda is refused by ssm_model_use_device, never moved silently). */
void cli_device_fallback(const char *text, const ssm_config *config, int *device,
                         const char **name);

/* A trained model with its task: path is a run directory (model.safetensors + recipe.yaml)
 * or a checkpoint file whose metadata holds the recipe (ssm.recipe). */
typedef struct cli_trained {
    ssm_model *model;
    ssm_recipe *recipe;
    const ssm_task_ops *ops;
    void *task;
} cli_trained;
ssm_status cli_load_trained(const char *path, cli_trained *out);
void cli_trained_free(cli_trained *t);
/* Create the task named in a recipe (task.name) with its task section, and its data section
 * when with_data (training); scoring and generation open no training data. */
ssm_status cli_task_create(ssm_recipe *recipe, int with_data, const ssm_task_ops **ops,
                           void **task);

#endif
