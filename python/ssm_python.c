/* ssm_python.c: libssm-python.so, what the Python module (python/ssm) calls through ctypes
 * besides libssm's own API: a trained model with its task (tokens in and out, files of records)
 * and ssm-train's whole run with a per-step callback. Every function returns an ssm_status;
 * the message is ssm_last_error(), as in libssm. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "../bin/cli.h"
#include "../bin/train.h"

#define PY_API __attribute__((visibility("default")))

PY_API ssm_status ssmpy_load(const char *path, cli_trained **out) {
    cli_trained *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    ssm_status s = cli_load_trained(path, t);
    if (s) free(t), t = NULL;
    *out = t;
    return s;
}

PY_API void ssmpy_free(cli_trained *t) {
    if (!t) return;
    cli_trained_free(t);
    free(t);
}

PY_API void ssmpy_free_buffer(void *p) { free(p); }

PY_API ssm_model *ssmpy_model(cli_trained *t) { return t->model; }
PY_API const ssm_config *ssmpy_config(const ssm_model *m) { return &m->config; }

/* vocab (the model's, padded), task vocab, d_model, n_layer, n_params, bos token */
PY_API void ssmpy_info(cli_trained *t, int64_t out[6]) {
    const ssm_config *c = &t->model->config;
    out[0] = c->vocab_size;
    out[1] = t->ops->vocab_size(t->task);
    out[2] = c->d_model;
    out[3] = c->n_layer;
    out[4] = (int64_t)t->model->n_params;
    out[5] = t->ops->bos_token ? t->ops->bos_token(t->task) : -1;
}

PY_API const char *ssmpy_task_name(cli_trained *t) { return t->ops->name; }
PY_API const char *ssmpy_symbol(cli_trained *t) { return t->ops->symbol; }

/* 1 where token v may be generated (written out by the task) */
PY_API int ssmpy_can_generate(cli_trained *t, int32_t v) {
    if (t->ops->can_generate) return t->ops->can_generate(t->task, v) != 0;
    return !t->ops->bos_token || v != t->ops->bos_token(t->task);
}

PY_API ssm_status ssmpy_encode(cli_trained *t, const char *text, size_t len, int32_t **tokens, size_t *n) {
    if (!t->ops->encode)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the task '%s' cannot encode text", t->ops->name);
    return t->ops->encode(t->task, text, len, tokens, n);
}

/* tokens -> the task's output format (FASTA, text...), malloc'd into *out */
PY_API ssm_status ssmpy_decode(cli_trained *t, const int32_t *tokens, size_t n, char **out, size_t *len) {
    if (!t->ops->write_tokens)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the task '%s' cannot write tokens out", t->ops->name);
    *out = NULL;
    FILE *f = open_memstream(out, len);
    if (!f) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    ssm_status s = t->ops->write_tokens(t->task, tokens, n, f);
    fclose(f);
    if (s) free(*out), *out = NULL;
    return s;
}

PY_API ssm_status ssmpy_open_records(cli_trained *t, const char *path, void **reader) {
    if (!t->ops->open_records)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the task '%s' cannot read files to score", t->ops->name);
    return t->ops->open_records(t->task, path, reader);
}

/* The next record: its arrays stay valid until the next call (the task owns them). */
PY_API ssm_status ssmpy_next_record(cli_trained *t, void *reader, const char **id, size_t *length,
                                    const int32_t **tokens, const uint8_t **scored, int *done) {
    ssm_record r = {0};
    ssm_status s = t->ops->next_record(reader, &r, done);
    if (s || *done) return s;
    *id = r.id, *length = r.length, *tokens = r.tokens, *scored = r.scored;
    return SSM_OK;
}

PY_API void ssmpy_close_records(cli_trained *t, void *reader) {
    if (reader) t->ops->close_records(reader);
}

typedef int (*ssmpy_step_fn)(void *ctx, int64_t step, double loss, double lr, double grad_norm);

/* ssm-train RECIPE [--set KEY=VALUE]... [--output DIR] [--force] | --resume DIR, with cb called
 * after each step; the run directory into run_dir. Returns ssm-train's exit status (0, or 1
 * with ssm_last_error() set). The caller's SIGINT and SIGTERM handlers are restored afterwards. */
PY_API int ssmpy_train(const char *recipe_path, const char *const *sets, int n_sets, const char *output,
                       int force, const char *resume, int quiet, ssmpy_step_fn cb, void *ctx,
                       char *run_dir, size_t run_dir_size) {
    char saved[4200], buf[4200];
    if (resume && !recipe_path) {
        snprintf(saved, sizeof saved, "%s/recipe.yaml", resume);
        recipe_path = saved;
    }
    if (!recipe_path) return ssm_set_error(SSM_ERR_ARG, "no recipe given"), 1;
    cli_init("ssm.train");
    cli_quiet = quiet;
    ssm_recipe *recipe;
    if (ssm_recipe_load(recipe_path, &recipe)) return 1;
    const ssm_task_ops *ops = NULL;
    void *task = NULL;
    train_settings set;
    int rc = 1;
    for (int i = 0; i < n_sets; i++)
        if (ssm_recipe_set(recipe, sets[i])) goto done;
    if (output) {
        snprintf(buf, sizeof buf, "output.dir=%s", output);
        if (ssm_recipe_set(recipe, buf)) goto done;
    }
    if (cli_task_create(recipe, 1, &ops, &task) || train_settings_read(recipe, ops->vocab_size(task), &set))
        goto done;
    if (resume) set.run_dir = resume;
    snprintf(run_dir, run_dir_size, "%s", set.run_dir);
    struct sigaction old_int, old_term;
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    train_options opt = {.resume_dir = resume, .force = force, .on_step = cb, .on_step_ctx = ctx};
    rc = train_run(recipe, ops, task, &set, &opt);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    if (task) ops->destroy(task);
    ssm_recipe_free(recipe);
    return rc;
}
