/* points_task.c: the task's table: options, the labelled folders, batches, the model's inputs
 * and head, and the accuracy metric. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "group.h"
#include "points.h"

typedef struct pt_task {
    pt_options opt;
    const char **classes;  /* (n_classes), into the recipe tree or owned_classes */
    char **owned_classes;  /* found as the training folder's subfolders */
    int n_classes;
    pt_shapes split[2];    /* SSM_SPLIT_TRAIN, SSM_SPLIT_VALID */
    float *xyz;            /* (N, 3) scratch */
    int *work;             /* 2G + k */
    int header_done;       /* ssm-score's TSV header */
} pt_task;

static const char *const task_keys[] = {"name", "points", "groups", "neighbours", "reading", "classes",
    "rotate_degrees", "scale_min", "scale_max", "jitter", "jitter_clip", NULL};
static const char *const data_keys[] = {"train", "valid", NULL};

ssm_status pt_load(const pt_options *o, const char *path, point_set *set) {
    ssm_status s = points_read(path, set);
    if (!s) s = points_normalize(path, set);
    if (!s && set->n < o->groups * o->neighbours)
        s = ssm_set_error(SSM_ERR_FORMAT, "%s: %d points, fewer than G k = %d (task.groups %d x "
                          "task.neighbours %d)", path, set->n, o->groups * o->neighbours, o->groups, o->neighbours);
    if (s) point_set_free(set);
    return s;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_dir(const char *path) {
    struct stat st;
    return !stat(path, &st) && S_ISDIR(st.st_mode);
}

/* The entries of dir that are folders (want_dirs) or point files, sorted, as "dir/name". */
static ssm_status list_dir(const char *dir, int want_dirs, char ***out, int *n) {
    *out = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return ssm_set_error(SSM_ERR_IO, "%s: cannot open the folder", dir);
    int cap = 0;
    ssm_status s = SSM_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(len);
        if (!path) { s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", dir); break; }
        snprintf(path, len, "%s/%s", dir, e->d_name);
        if (want_dirs ? !is_dir(path) : is_dir(path) || !points_is_point_file(path)) {
            free(path);
            continue;
        }
        if (*n == cap) {
            char **v = realloc(*out, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *v);
            if (!v) { free(path); s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", dir); break; }
            *out = v;
        }
        (*out)[(*n)++] = path;
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof **out, by_string);
    return s;
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

ssm_status pt_list_folder(const char *dir, char ***names, int *n) {
    char **subs = NULL;
    int n_subs = 0;
    ssm_status s = list_dir(dir, 0, names, n);
    if (!s) s = list_dir(dir, 1, &subs, &n_subs);
    for (int i = 0; !s && i < n_subs; i++) {
        char **more;
        int m;
        if ((s = list_dir(subs[i], 0, &more, &m))) break;
        char **v = realloc(*names, (size_t)(*n + m + 1) * sizeof *v);
        if (!v) { free_names(more, m); s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", dir); break; }
        memcpy(v + *n, more, (size_t)m * sizeof *more);
        free(more);
        *names = v, *n += m;
    }
    free_names(subs, n_subs);
    return s;
}

/* dir/CLASS/FILE for every class: the shapes of a split. */
static ssm_status load_split(pt_task *t, const char *dir, pt_shapes *out) {
    char **subs;
    int n_subs;
    ssm_status s = list_dir(dir, 1, &subs, &n_subs);
    for (int i = 0; !s && i < n_subs; i++) {
        const char *name = strrchr(subs[i], '/') + 1;
        int label = -1;
        for (int c = 0; c < t->n_classes; c++)
            if (!strcmp(t->classes[c], name)) label = c;
        if (label < 0) {
            s = ssm_set_error(SSM_ERR_ARG, "%s: the folder '%s' names no class of task.classes", dir, name);
            break;
        }
        char **files;
        int n;
        if ((s = list_dir(subs[i], 0, &files, &n))) break;
        for (int f = 0; !s && f < n; f++) {
            if (out->n == out->cap) {
                pt_shape *v = realloc(out->v, (size_t)(out->cap = out->cap ? 2 * out->cap : 256) * sizeof *v);
                if (!v) { s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", dir); break; }
                out->v = v;
            }
            pt_shape *sh = &out->v[out->n];
            if ((s = pt_load(&t->opt, files[f], &sh->set))) break;
            sh->label = label, sh->path = files[f], files[f] = NULL, out->n++;
        }
        free_names(files, n);
    }
    free_names(subs, n_subs);
    if (!s && !out->n) s = ssm_set_error(SSM_ERR_ARG, "%s: no point files in its class folders", dir);
    return s;
}

static void free_shapes(pt_shapes *s) {
    for (int i = 0; i < s->n; i++) point_set_free(&s->v[i].set), free(s->v[i].path);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void pt_destroy(void *self) {
    pt_task *t = self;
    if (!t) return;
    free_shapes(&t->split[0]), free_shapes(&t->split[1]);
    free(t->classes);
    free_names(t->owned_classes, t->owned_classes ? t->n_classes : 0);
    free(t->xyz), free(t->work);
    free(t);
}

static ssm_status read_options(pt_task *t, const ssm_recipe *r, ssm_node *task) {
    pt_options *o = &t->opt;
    static const char *const readings[] = {"both", "forward", NULL};
    long long N, G, k;
    double rot;
    int reading;
    ssm_status s;
    /* model.patch: pointnet orders and reads the groups itself: each group once, here */
    ssm_node *model = ssm_node_get(r->root, "model"), *patch = model ? ssm_node_get(model, "patch") : NULL;
    int patched = patch && patch->kind == SSM_NODE_SCALAR && !strcmp(patch->value, "pointnet");
    char where[256];
    if (patched && task && ssm_node_get(task, "reading") && strcmp(ssm_node_get(task, "reading")->value, "forward"))
        return ssm_set_error(SSM_ERR_ARG, "%s: task.reading: both with model.patch: pointnet: the patch "
                             "encoder sorts the groups and reads them both ways itself "
                             "(model.patch_reading); use task.reading: forward (its default)",
                             ssm_node_where(r, ssm_node_get(task, "reading"), where, sizeof where));
    if ((s = ssm_node_int(r, task, "points", 512, 1, 1 << 16, &N)) ||
        (s = ssm_node_int(r, task, "groups", 32, 1, 4096, &G)) ||
        (s = ssm_node_int(r, task, "neighbours", 16, 1, 256, &k)) ||
        (s = ssm_node_choice(r, task, "reading", readings, patched, &reading)) ||
        (s = ssm_node_strings(r, task, "classes", &t->classes, &t->n_classes)) ||
        (s = ssm_node_float(r, task, "rotate_degrees", 0, 0, 180, &rot)) ||
        (s = ssm_node_float(r, task, "scale_min", 0.8, 0.01, 100, &o->augment.scale_lo)) ||
        (s = ssm_node_float(r, task, "scale_max", 1.25, 0.01, 100, &o->augment.scale_hi)) ||
        (s = ssm_node_float(r, task, "jitter", 0.01, 0, 1, &o->augment.jitter_sigma)) ||
        (s = ssm_node_float(r, task, "jitter_clip", 0.05, 0, 1, &o->augment.jitter_clip)) ||
        (s = ssm_node_check_unknown(r, task, "task", task_keys)))
        return s;
    o->points = (int)N, o->groups = (int)G, o->neighbours = (int)k, o->both_ways = reading == 0;
    o->augment.rotate = rot * M_PI / 180;
    if (G * k > N || G > N)
        return ssm_set_error(SSM_ERR_ARG, "%s: task.groups x task.neighbours = %lld x %lld is more than "
                             "task.points = %lld", ssm_node_where(r, task, where, sizeof where), G, k, N);
    if (o->augment.scale_lo > o->augment.scale_hi)
        return ssm_set_error(SSM_ERR_ARG, "%s: task.scale_min is above task.scale_max",
                             ssm_node_where(r, task, where, sizeof where));
    return SSM_OK;
}

static ssm_status pt_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    pt_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the points task");
    ssm_status s = read_options(t, r, task);
    const char **dirs[2] = {NULL, NULL};
    int n_dirs[2] = {0, 0};
    if (!s && data &&
        !(s = ssm_node_strings(r, data, "train", &dirs[0], &n_dirs[0])) &&
        !(s = ssm_node_strings(r, data, "valid", &dirs[1], &n_dirs[1])) &&
        !(s = ssm_node_check_unknown(r, data, "data", data_keys)) && (!n_dirs[0] || !n_dirs[1])) {
        char where[256];
        s = ssm_set_error(SSM_ERR_ARG, "%s: the points task needs data.train and data.valid: folders "
                          "with one subfolder of point files per class", ssm_node_where(r, data, where, sizeof where));
    }
    if (!s && !data) { /* scoring: data.train names the classes when task.classes does not */
        ssm_node *d = ssm_node_get(r->root, "data");
        if (d && !t->n_classes) s = ssm_node_strings(r, d, "train", &dirs[0], &n_dirs[0]);
        if (!s && n_dirs[0] && !is_dir(dirs[0][0])) n_dirs[0] = 0; /* gone: the classes by number */
    }
    if (!s && !t->n_classes && n_dirs[0]) { /* the classes: the first training folder's subfolders */
        char **subs;
        if (!(s = list_dir(dirs[0][0], 1, &subs, &t->n_classes))) {
            t->owned_classes = subs;
            t->classes = malloc((size_t)(t->n_classes + 1) * sizeof *t->classes);
            if (!t->classes) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
            for (int c = 0; !s && c < t->n_classes; c++) t->classes[c] = strrchr(subs[c], '/') + 1;
            if (!s && t->n_classes < 2) s = ssm_set_error(SSM_ERR_ARG, "%s: fewer than 2 class folders", dirs[0][0]);
        }
    }
    for (int sp = 0; sp < 2 && !s && data; sp++)
        for (int i = 0; !s && i < n_dirs[sp]; i++) s = load_split(t, dirs[sp][i], &t->split[sp]);
    free(dirs[0]), free(dirs[1]);
    const pt_options *o = &t->opt;
    if (!s && (!(t->xyz = malloc((size_t)o->points * 3 * sizeof(float))) ||
               !(t->work = malloc((size_t)(2 * o->groups + o->neighbours) * sizeof(int)))))
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory for the points task");
    if (s) {
        pt_destroy(t);
        return s;
    }
    *self = t;
    return SSM_OK;
}

static int pt_vocab(void *self) { return 1; } /* no tokens: the embedding stays unused */

static ssm_status pt_model_io(void *self, ssm_io_config *io, int *seq_len) {
    pt_task *t = self;
    if (t->n_classes < 2)
        return ssm_set_error(SSM_ERR_ARG, "points: the model's head needs the classes (task.classes or data.train)");
    *io = (ssm_io_config){.features = pt_features(&t->opt), .patch = 1, .head = SSM_HEAD_CLASSIFY,
                          .outputs = t->n_classes, .pool = SSM_POOL_MEAN, .loss = SSM_LOSS_CE};
    *seq_len = pt_positions(&t->opt);
    return SSM_OK;
}

void pt_shape_features(const pt_options *o, const point_set *set, int train, ssm_rng *rng,
                       float *xyz, int *work, float *features) {
    points_sample(set, o->points, rng, xyz);
    if (train) points_augment(xyz, o->points, &o->augment, rng);
    points_group_features(xyz, o->points, o->groups, o->neighbours, o->both_ways, work, features);
}

/* Training: shapes drawn at random, augmented. Validation: held-out shapes drawn by the fixed
 * validation rng, as they are. */
static ssm_status pt_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *b) {
    pt_task *t = self;
    const pt_options *o = &t->opt;
    const pt_shapes *sh = &t->split[split == SSM_SPLIT_TRAIN ? 0 : 1];
    int L = pt_positions(o), F = pt_features(o);
    if (!sh->n) return ssm_set_error(SSM_ERR_ARG, "points: no shapes (data.train, data.valid)");
    if (b->L != L)
        return ssm_set_error(SSM_ERR_ARG, "points: a batch of length %d, the task makes %d (2 x task.groups "
                             "for reading: both, else task.groups): leave train.seq_len unset", b->L, L);
    for (int i = 0; i < b->B; i++) {
        const pt_shape *s = &sh->v[ssm_rng_below(rng, (uint64_t)sh->n)];
        pt_shape_features(o, &s->set, split == SSM_SPLIT_TRAIN, rng, t->xyz, t->work,
                          b->features + (size_t)i * L * F);
        b->targets[i] = s->label;
    }
    return SSM_OK;
}

static const char *const pt_metric_names[] = {"accuracy", NULL};

static ssm_status pt_metrics(void *self, const ssm_batch *b, const float *logits, double *values) {
    pt_task *t = self;
    int C = t->n_classes, right = 0, n = 0;
    for (int i = 0; i < b->B; i++) {
        if (b->targets[i] < 0) continue;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (logits[(size_t)i * C + c] > logits[(size_t)i * C + best]) best = c;
        right += best == b->targets[i], n++;
    }
    values[0] = n ? (double)right / n : NAN;
    return SSM_OK;
}

static ssm_status pt_score(void *self, ssm_model *model, const char *path, FILE *out) {
    pt_task *t = self;
    return pt_score_file(&t->opt, t->classes, t->n_classes, model, path, out, &t->header_done);
}

const ssm_task_ops ssm_task_points = {
    SSM_TASK_OPS_HEADER,
    .name = "points",
    .description = "point-cloud classification: FPS + kNN groups in importance order, a pooled class head",
    .symbol = "shape",
    .baseline_order = -1, /* its baseline is points-nn (D2 shape distributions, 1-NN) */
    .create = pt_create,
    .destroy = pt_destroy,
    .vocab_size = pt_vocab,
    .next_batch = pt_next_batch,
    .model_io = pt_model_io,
    .metric_names = pt_metric_names,
    .metrics = pt_metrics,
    .score_file = pt_score,
};
