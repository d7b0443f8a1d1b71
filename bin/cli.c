/* cli.c: shared pieces of the programs (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tasks/registry.h"
#include "ssm/checkpoint.h"

static const char *program = "ssm";
int cli_quiet = 0;

void cli_init(const char *p) {
    const char *slash = strrchr(p, '/');
    program = slash ? slash + 1 : p;
}

const char *cli_program(void) { return program; }

static void vmessage(const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int cli_fail(void) {
    fprintf(stderr, "%s: %s\n", program, *ssm_last_error() ? ssm_last_error() : "failed");
    return CLI_EXIT_INPUT;
}

int cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    return CLI_EXIT_INPUT;
}

int cli_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help'.\n", program);
    return CLI_EXIT_USAGE;
}

void cli_note(const char *fmt, ...) {
    if (cli_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vmessage(fmt, ap);
    va_end(ap);
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *cli_duration(double s, char *buf, size_t size) {
    long t = s < 0 ? 0 : (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
    return buf;
}

const char *cli_si(double x, char *buf, size_t size) {
    if (x >= 1e9) snprintf(buf, size, "%.2fG", x / 1e9);
    else if (x >= 1e6) snprintf(buf, size, "%.2fM", x / 1e6);
    else if (x >= 1e4) snprintf(buf, size, "%.1fk", x / 1e3);
    else snprintf(buf, size, "%.0f", x);
    return buf;
}

void cli_progress_start(cli_progress *p, int64_t total, long every, const char *unit) {
    p->tty = isatty(2) && !cli_quiet;
    p->start = p->last_draw = cli_now();
    p->total = total;
    p->every = every > 0 ? every : 1;
    p->calls = 0;
    p->unit = unit;
}

void cli_progress_update(cli_progress *p, int64_t done, const char *extra) {
    if (cli_quiet) return;
    double now = cli_now(), el = now - p->start;
    p->calls++;
    int at_end = p->total > 0 && done >= p->total;
    if (p->tty ? (now - p->last_draw < 0.1 && !at_end) : (p->calls % p->every && !at_end)) return;
    p->last_draw = now;
    char eta[32] = "?", ela[32];
    if (p->total > 0 && done > 0) cli_duration(el * (p->total - done) / done, eta, sizeof eta);
    cli_duration(el, ela, sizeof ela);
    if (p->tty) {
        int width = 24, fill = p->total > 0 ? (int)(width * (double)done / p->total) : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[width] = 0;
        fprintf(stderr, "\r%s %lld/%lld [%s] %s | %s, %s left\033[K", p->unit, (long long)done,
                (long long)p->total, bar, extra ? extra : "", ela, eta);
    } else {
        fprintf(stderr, "%s: %s %lld/%lld %s | %s, %s left\n", program, p->unit, (long long)done,
                (long long)p->total, extra ? extra : "", ela, eta);
    }
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->tty && !cli_quiet) fputc('\n', stderr);
}

int cli_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_exists(const char *path) { return access(path, F_OK) == 0; }

int cli_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

ssm_status cli_device(const char *text, int *device, const char **name) {
    static char buf[32];
    ssm_status s = ssm_parse_device(text, device);
    if (s) return s;
    if (*device < 0) snprintf(buf, sizeof buf, "cpu");
    else snprintf(buf, sizeof buf, "cuda:%d", *device);
    if (name) *name = buf;
    return SSM_OK;
}

void cli_device_fallback(const char *text, const ssm_config *c, int *device, const char **name) {
    if (*device < 0 || (text && strcmp(text, "auto"))) return;
    if (!ssm_device_supports(*device, c)) return;
    cli_note("device auto: %s; running on the CPU", ssm_last_error());
    *device = -1;
    if (name) *name = "cpu";
}

ssm_status cli_task_create(ssm_recipe *recipe, int with_data, const ssm_task_ops **ops, void **task) {
    ssm_node *task_node, *data_node;
    ssm_status s = ssm_node_section(recipe, recipe->root, "task", &task_node);
    if (!s) s = ssm_node_section(recipe, recipe->root, "data", &data_node);
    if (s) return s;
    if (!task_node)
        return ssm_set_error(SSM_ERR_MISSING, "%s: the recipe has no task section (task: {name: dna})",
                             recipe->path);
    const char *name;
    s = ssm_node_string(recipe, task_node, "name", NULL, &name);
    if (s) return s;
    if (!name) {
        char where[256];
        return ssm_set_error(SSM_ERR_MISSING, "%s: the task section needs a name (dna, lm, audio or "
                             "a plugin path)", ssm_node_where(recipe, task_node, where, sizeof where));
    }
    s = ssm_task_find(name, ops);
    if (s) {
        char where[256], msg[1024];
        ssm_node_where(recipe, ssm_node_get(task_node, "name"), where, sizeof where);
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        return ssm_set_error(s, "%s: %s", where, msg);
    }
    return (*ops)->create(recipe, task_node, with_data ? data_node : NULL, task);
}

ssm_status cli_load_trained(const char *path, cli_trained *out) {
    memset(out, 0, sizeof *out);
    char file[4096];
    ssm_status s;
    if (cli_is_dir(path)) {
        snprintf(file, sizeof file, "%s/recipe.yaml", path);
        if (!cli_exists(file))
            return ssm_set_error(SSM_ERR_MISSING, "%s: not a run directory (no recipe.yaml; "
                                 "ssm-train writes one)", path);
        s = ssm_recipe_load(file, &out->recipe);
    } else {
        ssm_safetensors *st;
        s = ssm_safetensors_open(path, &st);
        if (s) return s;
        const char *text = ssm_safetensors_meta(st, "ssm.recipe");
        s = text ? ssm_recipe_parse(path, text, strlen(text), &out->recipe)
                 : ssm_set_error(SSM_ERR_MISSING, "%s: this checkpoint holds no recipe (ssm.recipe), so "
                                 "its task is unknown; give the run directory instead", path);
        ssm_safetensors_close(st);
    }
    if (!s) s = ssm_checkpoint_load(path, &out->model);
    if (!s) s = cli_task_create(out->recipe, 0, &out->ops, &out->task);
    if (s) cli_trained_free(out);
    return s;
}

void cli_trained_free(cli_trained *t) {
    if (t->task) t->ops->destroy(t->task);
    ssm_model_free(t->model);
    ssm_recipe_free(t->recipe);
    memset(t, 0, sizeof *t);
}
