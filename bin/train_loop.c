/* train_loop.c: ssm-train's run: model summary, Markov baseline, the loop (batch -> forward
 * -> backward -> AdamW), validation, metrics.jsonl, checkpoints, Ctrl-C and exact resume. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ssm/checkpoint.h"
#include "report.h"
#include "ssm/markov.h"
#include "run_dir.h"
#include "task_io.h"
#include "train.h"
#include "train_dist.h"

static volatile sig_atomic_t stop_signal = 0;
enum { TASK_METRICS_MAX = 16 };

static void on_signal(int sig) {
    stop_signal = sig;
    signal(sig, SIG_DFL); /* a second Ctrl-C stops at once */
}

typedef struct run {
    ssm_recipe *recipe;
    const ssm_task_ops *ops;
    void *task;
    train_settings *set;
    int lock_fd;      /* the run directory's lock (run_dir.h), or -1 */
    ssm_model *model;
    ssm_adamw *opt;
    ssm_rng data_rng; /* the data position: the only source of randomness of the batches */
    ssm_batch batch;
    FILE *metrics;
    double baseline_bits;
    int baseline_order;
    train_dist dist; /* the ranks of a data-parallel run (train_dist.h) */
    double metric_sum[TASK_METRICS_MAX]; /* the task's metrics (ops->metric_names), mean over validation */
    char path[4096];
} run;

static const char *run_file(run *r, const char *name) {
    snprintf(r->path, sizeof r->path, "%s/%s", r->set->run_dir, name);
    return r->path;
}

/* The recipe as YAML text (malloc'd), for the checkpoint's metadata. */
static char *recipe_text(const ssm_recipe *recipe) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    ssm_status s = ssm_recipe_emit(recipe, f);
    fclose(f);
    if (s) free(buf), buf = NULL;
    return buf;
}

/* config.json beside model.safetensors, so that transformers' from_pretrained(run_dir) loads
 * our runs. */
static ssm_status write_hf_config(run *r) {
    return ssm_checkpoint_write_config(r->model, run_file(r, "config.json"),
                                       r->ops->bos_token ? r->ops->bos_token(r->task) : 0);
}

/* train_state.next, then model.safetensors, then the state renamed into place (the order that
 * makes the pair atomic: run_dir.h), then config.json; the step recorded in both. */
static ssm_status save_checkpoint(run *r) {
    char step[32], rng[96];
    snprintf(step, sizeof step, "%" PRId64, r->opt->step);
    snprintf(rng, sizeof rng, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64,
             r->data_rng.s[0], r->data_rng.s[1], r->data_rng.s[2], r->data_rng.s[3]);
    /* a GPU run keeps the current values on the device: bring them home first */
    ssm_status s = ssm_model_sync_host(r->model, r->opt);
    if (s) return s;
    const char *state_meta[] = {"ssm.data_rng", rng, NULL};
    char *text = recipe_text(r->recipe);
    if (!text) return ssm_set_error(SSM_ERR_NOMEM, "cannot serialise the recipe");
    const char *model_meta[] = {"ssm.recipe", text, "ssm.step", step, "ssm.task", r->ops->name, NULL};
    s = ssm_adamw_save(r->opt, r->model, run_file(r, RUN_STATE_NEXT), state_meta);
    if (!s) s = ssm_checkpoint_save(r->model, run_file(r, "model.safetensors"), model_meta);
    if (!s) s = run_dir_commit_state(r->set->run_dir);
    if (!s) s = write_hf_config(r); /* the same file every time: a failure leaves the old one */
    free(text);
    if (s) { /* a full disk, say */
        char msg[900];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        unlink(run_file(r, RUN_STATE_NEXT)); /* present only when the model was not replaced */
        s = ssm_set_error(s, "%s; the run directory keeps its last complete checkpoint", msg);
    }
    return s;
}

static ssm_status load_checkpoint(run *r) {
    ssm_status s = run_dir_recover(r->set->run_dir); /* a save cut short by a crash */
    if (!s) s = ssm_checkpoint_load(run_file(r, "model.safetensors"), &r->model);
    if (s) return s;
    const ssm_config *a = &r->model->config, *b = &r->set->model;
    int mamba2 = 0; /* the Mamba-2 options are stored (and compared) only with Mamba-2 layers */
    for (int i = 0; i < a->n_layer; i++) mamba2 |= a->layer_kind[i] == SSM_LAYER_MAMBA2;
    if (a->vocab_size != b->vocab_size || a->d_model != b->d_model || a->n_layer != b->n_layer ||
        a->d_state != b->d_state || a->d_conv != b->d_conv || a->d_inner != b->d_inner ||
        a->dt_rank != b->dt_rank || memcmp(a->layer_kind, b->layer_kind, (size_t)a->n_layer) ||
        (mamba2 && memcmp(&a->mamba2, &b->mamba2, sizeof a->mamba2)) ||
        memcmp(&a->io, &b->io, sizeof a->io) || memcmp(&a->patch, &b->patch, sizeof a->patch))
        return ssm_set_error(SSM_ERR_SHAPE, "%s: the saved model does not match the recipe's model "
                             "section", r->path);
    if ((s = ssm_adamw_create(&r->set->adamw, r->model, &r->opt))) return s;
    ssm_safetensors *st;
    if ((s = ssm_adamw_load(r->opt, r->model, run_file(r, RUN_STATE_FILE), &st))) return s;
    const char *rng = ssm_safetensors_meta(st, "ssm.data_rng");
    int ok = rng && strlen(rng) == 64;
    for (int i = 0; ok && i < 4; i++) {
        char word[17];
        memcpy(word, rng + 16 * i, 16);
        word[16] = 0;
        char *end;
        r->data_rng.s[i] = strtoull(word, &end, 16);
        ok = *end == 0;
    }
    ssm_safetensors_close(st);
    if (!ok) return ssm_set_error(SSM_ERR_FORMAT, "%s: no valid ssm.data_rng in its metadata", r->path);
    r->opt->config = r->set->adamw; /* the recipe may extend train.steps */
    return SSM_OK;
}

/* The auxiliary loss (MoE routers) that ssm_forward's loss holds besides the cross-entropy. */
static double aux_part(const ssm_model *m) {
    return m->config.moe.aux_loss_coef * ssm_model_aux_loss(m);
}

/* Mean cross-entropy (nats per scored token) over a fixed set of validation batches (of the
 * global batch's rows, each rank scoring its own). */
static ssm_status evaluate(run *r, double *loss_out) {
    ssm_rng rng;
    ssm_rng_seed(&rng, r->set->seed ^ 0x5eed0fda7a5e7ULL); /* the same batches every time */
    double sum = 0, count = 0;
    const char *const *names = r->ops->metrics ? r->ops->metric_names : NULL;
    int n_names = 0;
    for (; names && names[n_names] && n_names < TASK_METRICS_MAX; n_names++) r->metric_sum[n_names] = 0;
    /* each rank scores its share of the validation rows: the metrics are the ranks' mean */
    for (int i = 0; i < r->set->eval_batches; i++) {
        ssm_status s = train_dist_next_batch(&r->dist, r->ops, r->task, SSM_SPLIT_VALID, &rng,
                                             &r->model->config.io, &r->batch);
        if (s) return s;
        int64_t n;
        float loss;
        if ((s = task_batch_forward(r->model, &r->batch, &loss, &n))) return s;
        if (!n) continue;
        sum += ((double)loss - aux_part(r->model)) * n;
        count += n;
        double values[TASK_METRICS_MAX];
        if (names && (s = r->ops->metrics(r->task, &r->batch, ssm_model_outputs(r->model), values)))
            return s;
        for (int k = 0; k < n_names; k++) r->metric_sum[k] += values[k] / r->set->eval_batches;
    }
    ssm_status s = train_dist_sum(&r->dist, &sum, &count);
    if (!s) s = train_dist_mean(&r->dist, r->metric_sum, n_names);
    *loss_out = count ? sum / count : NAN;
    return s;
}

static void baseline(run *r) {
    r->baseline_bits = NAN;
    r->baseline_order = r->ops->baseline_order;
    if (!r->ops->baseline_symbols || r->baseline_order < 0) return;
    const int32_t *train, *valid;
    size_t n_train, n_valid;
    int alphabet;
    ssm_markov *m = NULL;
    double t0 = cli_now();
    if (r->ops->baseline_symbols(r->task, SSM_SPLIT_TRAIN, 20000000, &train, &n_train, &alphabet) ||
        ssm_markov_fit(train, n_train, alphabet, r->baseline_order, &m) ||
        r->ops->baseline_symbols(r->task, SSM_SPLIT_VALID, 5000000, &valid, &n_valid, &alphabet) ||
        ssm_markov_bits(m, valid, n_valid, &r->baseline_bits, NULL)) {
        cli_note("baseline skipped: %s", ssm_last_error());
        ssm_markov_free(m);
        return;
    }
    r->baseline_order = ssm_markov_order(m);
    ssm_markov_free(m);
    cli_note("baseline: order-%d Markov model (Witten-Bell) fitted on %zu training %ss: %.4f bits "
             "per %s on validation (%.1fs)", r->baseline_order, n_train, r->ops->symbol,
             r->baseline_bits, r->ops->symbol, cli_now() - t0);
}

/* "1.9468", or "none" for a task without one */
static const char *baseline_text(run *r) {
    static char buf[32];
    if (isnan(r->baseline_bits)) return "none";
    snprintf(buf, sizeof buf, "%.4f", r->baseline_bits);
    return buf;
}

static void summary(run *r, int device, const char *device_name) {
    const ssm_config *c = &r->model->config;
    char p[32], tok[32], threads[32] = "", batch[64];
    if (device < 0) snprintf(threads, sizeof threads, ", %d threads", ssm_get_threads());
    if (ssm_config_all(c, SSM_LAYER_MAMBA1)) {
        cli_note("model: Mamba, %d layers x d_model %d (d_inner %d, d_state %d, d_conv %d, dt_rank %d), "
                 "vocab %d, %s parameters", c->n_layer, c->d_model, c->d_inner, c->d_state,
                 c->d_conv, c->dt_rank, c->vocab_size, cli_si((double)r->model->n_params, p, sizeof p));
    } else if (ssm_config_all(c, SSM_LAYER_MAMBA2)) {
        const ssm_mamba2_config *m2 = &c->mamba2;
        cli_note("model: Mamba-2, %d layers x d_model %d (d_inner %d, %d heads of %d, d_state %d, "
                 "%d groups, d_conv %d, chunk %d), vocab %d, %s parameters", c->n_layer,
                 c->d_model, m2->d_inner, m2->nheads, m2->headdim, m2->d_state, m2->ngroups,
                 m2->d_conv, m2->chunk_size, c->vocab_size,
                 cli_si((double)r->model->n_params, p, sizeof p));
    } else { /* a hybrid: how many layers of each kind */
        char kinds[256] = "";
        for (int k = 0; k < SSM_LAYER_KIND_COUNT; k++) {
            int n = 0;
            for (int i = 0; i < c->n_layer; i++) n += c->layer_kind[i] == k;
            if (n)
                snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%d %s",
                         kinds[0] ? ", " : "", n, ssm_layer_kind_name(k));
        }
        cli_note("model: hybrid, %d layers (%s) x d_model %d, vocab %d, %s parameters", c->n_layer,
                 kinds, c->d_model, c->vocab_size, cli_si((double)r->model->n_params, p, sizeof p));
    }
    cli_note("task: %s (%s); %s tokens per step (%s); %" PRId64 " steps; "
             "device %s%s; run directory %s", r->ops->name, r->ops->description,
             cli_si((double)r->batch.B * r->batch.L * r->dist.size, tok, sizeof tok),
             train_dist_batch_text(&r->dist, r->batch.B, r->batch.L, batch, sizeof batch),
             r->set->steps, device_name, threads, r->set->run_dir);
}

static ssm_status prepare_run_dir(run *r, const train_options *opt) {
    const char *dir = r->set->run_dir;
    if (!opt->resume_dir && cli_exists(dir) && !opt->force) {
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/recipe.yaml", dir);
        int has_run = cli_exists(probe);
        snprintf(probe, sizeof probe, "%s/model.safetensors", dir);
        has_run |= cli_exists(probe);
        if (has_run)
            return ssm_set_error(SSM_ERR_ARG, "%s: a run is already there; continue it with --resume %s, "
                                 "or start over with --force", dir, dir);
    }
    if (cli_mkdirs(dir)) return ssm_set_error(SSM_ERR_IO, "%s: cannot create the run directory", dir);
    return SSM_OK;
}

/* A resumed run must use the recipe it was started with (model, task and data sections). */
static ssm_status check_same_recipe(run *r) {
    ssm_recipe *saved;
    ssm_status s = ssm_recipe_load(run_file(r, "recipe.yaml"), &saved);
    if (s) return s;
    const char *names[] = {"model", "task", "data"};
    for (int i = 0; i < 3 && !s; i++) {
        ssm_recipe a = {.path = saved->path}, b = {.path = r->recipe->path};
        ssm_node *na = ssm_node_get(saved->root, names[i]), *nb = ssm_node_get(r->recipe->root, names[i]);
        ssm_node empty = {.kind = SSM_NODE_MAP};
        a.root = na ? na : &empty;
        b.root = nb ? nb : &empty;
        char *ta = recipe_text(&a), *tb = recipe_text(&b);
        if (!ta || !tb || strcmp(ta, tb))
            s = ssm_set_error(SSM_ERR_ARG, "%s: this run was started from another recipe (its %s section "
                              "differs from %s); resume with the run's own recipe: ssm-train --resume %s",
                              r->set->run_dir, names[i], r->recipe->path, r->set->run_dir);
        free(ta);
        free(tb);
    }
    ssm_recipe_free(saved);
    return s;
}

static void log_metrics(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_metrics(run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->metrics, fmt, ap);
    va_end(ap);
    fputc('\n', r->metrics);
    fflush(r->metrics);
}

/* A task with its own head: the validation loss and the task's metrics, printed and logged. */
static void note_task_metrics(run *r, int64_t step, double loss) {
    static const char *const loss_names[] = {"cross-entropy", "mse", "mae"};
    char text[512];
    int n = snprintf(text, sizeof text, "validation loss %.5f (%s)", loss,
                     loss_names[r->model->config.io.loss]);
    fprintf(r->metrics, "{\"step\":%" PRId64 ",\"valid_loss\":%.9g", step, loss);
    const char *const *names = r->ops->metrics ? r->ops->metric_names : NULL;
    for (int k = 0; names && names[k] && k < TASK_METRICS_MAX; k++) {
        n += snprintf(text + n, sizeof text - (size_t)n, ", %s %.5f", names[k], r->metric_sum[k]);
        fprintf(r->metrics, ",\"valid_%s\":%.9g", names[k], r->metric_sum[k]);
        if (n >= (int)sizeof text) break;
    }
    log_metrics(r, "}");
    cli_note("step %" PRId64 ": %s", step, text);
}

int train_run(ssm_recipe *recipe, const ssm_task_ops *ops, void *task, train_settings *set,
              const train_options *opt) {
    run r = {.recipe = recipe, .ops = ops, .task = task, .set = set, .lock_fd = -1};
    int rc = CLI_EXIT_INPUT;
    const char *device_name;
    int device;
    ssm_status s = cli_device(set->device, &device, &device_name);
    if (s) return cli_fail();
    ssm_set_threads(set->threads);
    if ((s = train_check_memory(recipe->path, set, device >= 0))) return cli_fail();
    if ((s = train_dist_open(&r.dist, recipe))) goto fail;
    int root = train_dist_root(&r.dist); /* rank 0 alone reads, writes and locks the run directory */
    if (root && ((s = prepare_run_dir(&r, opt)) || (s = run_dir_lock(set->run_dir, &r.lock_fd)))) goto fail;
    if (opt->resume_dir) {
        if (root ? (s = check_same_recipe(&r)) || (s = load_checkpoint(&r))
                 : (s = train_dist_blank(&r.dist, &set->model, &set->adamw, &r.model, &r.opt)))
            goto fail;
        cli_note("resuming %s at step %" PRId64, set->run_dir, r.opt->step);
    } else {
        if ((s = ssm_model_create(&set->model, &r.model)) || (s = ssm_model_init(r.model, set->seed)) ||
            (s = ssm_adamw_create(&set->adamw, r.model, &r.opt)))
            goto fail;
        if (set->init_from && (s = train_init_from(r.model, set->init_from))) goto fail;
        ssm_rng_seed(&r.data_rng, set->seed * 0x9e3779b97f4a7c15ULL + 7);
        if (root && (s = ssm_recipe_write(recipe, run_file(&r, "recipe.yaml")))) goto fail;
    }
    if (set->adamw.backbone_lr_ratio != 1 && !r.model->params.head) {
        s = ssm_set_error(SSM_ERR_ARG, "%s: train.lr_backbone and train.freeze_backbone need a task with "
                          "a head of its own (dna-classify, timeseries); this model's head is its "
                          "embedding", recipe->path);
        goto fail;
    }
    if ((s = train_dist_share(&r.dist, r.model, r.opt, &r.data_rng))) goto fail;
    size_t T = (size_t)set->batch_size * set->seq_len;
    if ((s = task_batch_alloc(&r.batch, &r.model->config, set->batch_size, set->seq_len))) goto fail;
    r.metrics = fopen(root ? run_file(&r, "metrics.jsonl") : "/dev/null", opt->resume_dir ? "a" : "w");
    if (!r.metrics) {
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot open (or out of memory)", r.path);
        goto fail;
    }
    /* the model and its optimizer (new or resumed) move to the GPU together; memory for the
     * batch shape is planned once, before the first step */
    cli_device_fallback(set->device, &r.model->config, &device, &device_name);
    device = train_dist_gpu(&r.dist, device);
    if (device >= 0 && (s = ssm_model_use_device(r.model, r.opt, device))) goto fail;
    if ((s = ssm_model_reserve(r.model, r.batch.B, r.batch.L, 1))) goto fail;
    summary(&r, device, device_name);
    if (root) baseline(&r);
    if (!opt->resume_dir)
        log_metrics(&r, "{\"event\":\"start\",\"params\":%zu,\"baseline_order\":%d,\"baseline_bits\":%.6g,"
                    "\"symbol\":\"%s\"}", r.model->n_params, r.baseline_order,
                    isnan(r.baseline_bits) ? -1.0 : r.baseline_bits, ops->symbol);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    cli_progress pr;
    cli_progress_start(&pr, set->steps, set->log_every, "step");
    double t_start = cli_now(), t_last = t_start, loss_ema = NAN, valid_loss = NAN;
    int64_t tokens_since = 0, steps_here = 0;
    const char *stopped = NULL;
    while (r.opt->step < set->steps) {
        if ((s = train_dist_next_batch(&r.dist, ops, task, SSM_SPLIT_TRAIN, &r.data_rng,
                                       &r.model->config.io, &r.batch)))
            goto fail;
        float loss, gnorm;
        /* scored: this rank's targets, then every rank's (a step is skipped on all ranks or none) */
        int64_t scored, local;
        if ((s = task_batch_forward(r.model, &r.batch, &loss, &local))) goto fail;
        scored = local;
        if ((s = train_dist_loss(&r.dist, &scored, &loss))) goto fail;
        if (!scored) continue; /* nothing to learn from this batch */
        float lr = ssm_adamw_lr(&r.opt->config, r.opt->step);
        ssm_model_zero_grad(r.model);
        /* a rank with no target this step adds zero gradients (no forward ran to go back through) */
        if ((local && (s = ssm_backward(r.model))) || (s = train_dist_grads(&r.dist, r.model)) ||
            (s = ssm_adamw_step(r.opt, r.model, &gnorm)))
            goto fail;
        int64_t step = r.opt->step;
        tokens_since += (int64_t)T * r.dist.size;
        loss_ema = isnan(loss_ema) ? loss : 0.9 * loss_ema + 0.1 * loss;
        if (step % set->log_every == 0 || step == set->steps) {
            double now = cli_now(), tps = tokens_since / (now - t_last);
            t_last = now, tokens_since = 0;
            /* loss: what is minimised (with the MoE auxiliary loss); bits: the cross-entropy's */
            double aux = aux_part(r.model);
            log_metrics(&r, "{\"step\":%" PRId64 ",\"loss\":%.9g,\"bits_per_%s\":%.6f,\"aux_loss\":%.6g,"
                        "\"lr\":%.6g,\"grad_norm\":%.6g,\"tokens_per_s\":%.1f,\"elapsed_s\":%.2f}",
                        step, loss, ops->symbol, (loss - aux) / M_LN2, ssm_model_aux_loss(r.model), lr,
                        gnorm, tps, now - t_start);
            char extra[160], tp[32];
            if (ssm_io_is_lm(&r.model->config))
                snprintf(extra, sizeof extra, "loss %.4f (%.3f bits/%s) lr %.2e %s tok/s", loss_ema,
                         loss_ema / M_LN2, ops->symbol, lr, cli_si(tps, tp, sizeof tp));
            else
                snprintf(extra, sizeof extra, "loss %.4f lr %.2e %s positions/s", loss_ema, lr,
                         cli_si(tps, tp, sizeof tp));
            cli_progress_update(&pr, step, extra);
        }
        int timed_out = set->max_minutes > 0 && cli_now() - t_start > set->max_minutes * 60;
        if (timed_out) stopped = "time limit (train.max_minutes)";
        if (opt->stop_after && ++steps_here >= opt->stop_after) stopped = "stopped (--stop-after)";
        if (opt->on_step && opt->on_step(opt->on_step_ctx, step, loss, lr, gnorm))
            stopped = "stopped by the step callback";
        if (stop_signal) stopped = stop_signal == SIGINT ? "interrupted (Ctrl-C)" : "terminated (SIGTERM)";
        if ((s = train_dist_agree_stop(&r.dist, &stopped, &timed_out))) goto fail;
        if ((step % set->eval_every == 0 || step == set->steps || timed_out)) {
            if ((s = evaluate(&r, &valid_loss))) goto fail;
            if (pr.tty) fputc('\n', stderr);
            if (ssm_io_is_lm(&r.model->config)) {
                log_metrics(&r, "{\"step\":%" PRId64 ",\"valid_loss\":%.9g,\"valid_bits_per_%s\":%.6f,"
                            "\"baseline_bits_per_%s\":%.6g}", step, valid_loss, ops->symbol,
                            valid_loss / M_LN2, ops->symbol, isnan(r.baseline_bits) ? -1.0 : r.baseline_bits);
                cli_note("step %" PRId64 ": validation %.4f bits per %s (baseline %s)", step,
                         valid_loss / M_LN2, ops->symbol, baseline_text(&r));
            } else {
                note_task_metrics(&r, step, valid_loss);
            }
            train_report(set->run_dir, r.model, set->steps); /* report.html */
        }
        if (step % set->save_every == 0 || step == set->steps || stopped) {
            if ((s = train_dist_check_weights(&r.dist, r.model, step)) || (root && (s = save_checkpoint(&r))))
                goto fail;
        }
        if (stopped) break;
    }
    cli_progress_end(&pr);
    if (stopped && root) {
        /* said even with --quiet: the user must know how to continue */
        fprintf(stderr, "%s: %s at step %" PRId64 ": saved; continue with: ssm-train --resume %s\n",
                cli_program(), stopped, r.opt->step, set->run_dir);
    }
    if (stopped) {
        rc = stop_signal == SIGINT ? 130 : stop_signal == SIGTERM ? 143 : 0;
    } else {
        char peak[64] = "";
        if (device >= 0)
            snprintf(peak, sizeof peak, "; peak GPU memory %.2f GiB",
                     ssm_model_device_peak(r.model) / 1073741824.0);
        if (ssm_io_is_lm(&r.model->config))
            cli_note("done: %" PRId64 " steps in %.1fs; validation %.4f bits per %s (baseline %s); "
                     "model in %s%s", r.opt->step, cli_now() - t_start, valid_loss / M_LN2, ops->symbol,
                     baseline_text(&r), set->run_dir, peak);
        else
            cli_note("done: %" PRId64 " steps in %.1fs; validation loss %.5f; model in %s%s",
                     r.opt->step, cli_now() - t_start, valid_loss, set->run_dir, peak);
        rc = 0;
    }
    goto done;
fail:
    rc = train_dist_fail(&r.dist);
done:
    train_dist_close(&r.dist);
    if (r.metrics) fclose(r.metrics);
    run_dir_unlock(r.lock_fd);
    task_batch_free(&r.batch);
    ssm_adamw_free(r.opt);
    ssm_model_free(r.model);
    return rc;
}
