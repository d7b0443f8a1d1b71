/* score.c: ssm-score on point files: a file, a folder (its point files and those of its
 * subfolders), or a list (--files-from). One TSV row a file: the file, the predicted class and
 * the probability of each class. A folder whose subfolders are named by class (the layout of
 * data.valid) also gets its accuracy, on stderr. Each file's N points are drawn from an rng
 * seeded the same way for every file, so a file's row depends on nothing else. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "points.h"

enum { CHUNK = 32 };

static const char *class_name(const char *const *classes, int n, int c, char *buf) {
    if (c < n) return classes[c];
    snprintf(buf, 16, "%d", c);
    return buf;
}

/* The class its folder names, or -1. */
static int folder_label(const char *path, const char *const *classes, int n) {
    const char *slash = strrchr(path, '/');
    if (!slash) return -1;
    const char *start = slash;
    while (start > path && start[-1] != '/') start--;
    for (int c = 0; c < n; c++)
        if (strlen(classes[c]) == (size_t)(slash - start) && !strncmp(start, classes[c], (size_t)(slash - start))) return c;
    return -1;
}

ssm_status pt_score_file(const pt_options *o, const char *const *classes, int n_classes,
                         ssm_model *m, const char *path, FILE *out, int *header_done) {
    const ssm_io_config *io = &m->config.io;
    int L = pt_positions(o), F = pt_features(o), C = io->outputs;
    if (io->head != SSM_HEAD_CLASSIFY || io->features != F || (n_classes && C != n_classes))
        return ssm_set_error(SSM_ERR_ARG, "%s: the model does not read this task's shapes (%d floats a group, "
                             "%d classes; it has %d and %d): score with the run that trained it", path, F,
                             n_classes, io->features, C);
    struct stat st;
    char **files = NULL;
    int n = 1, folder = !stat(path, &st) && S_ISDIR(st.st_mode);
    ssm_status s = folder ? pt_list_folder(path, &files, &n) : SSM_OK;
    if (!s && folder && !n) s = ssm_set_error(SSM_ERR_ARG, "%s: no point files in this folder or its subfolders", path);
    float *features = malloc((size_t)CHUNK * L * F * sizeof(float)), *xyz = malloc((size_t)o->points * 3 * sizeof(float));
    int *work = malloc((size_t)(2 * o->groups + o->neighbours) * sizeof(int));
    if (!s && (!features || !xyz || !work)) s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    char name[16];
    if (!s && !*header_done) {
        fprintf(out, "file\tpredicted");
        for (int c = 0; c < C; c++) fprintf(out, "\tp_%s", class_name(classes, n_classes, c, name));
        fputc('\n', out);
        *header_done = 1;
    }
    int right = 0, labelled = 0;
    for (int i = 0; !s && i < n; i += CHUNK) {
        int k = n - i < CHUNK ? n - i : CHUNK;
        for (int j = 0; !s && j < k; j++) {
            point_set set;
            if ((s = pt_load(o, folder ? files[i + j] : path, &set))) break;
            ssm_rng rng;
            ssm_rng_seed(&rng, 1);
            pt_shape_features(o, &set, 0, &rng, xyz, work, features + (size_t)j * L * F);
            point_set_free(&set);
        }
        if (s || (s = ssm_forward_io(m, &(ssm_io){.features = features}, k, L, NULL))) break;
        const float *logits = ssm_model_outputs(m);
        for (int j = 0; j < k; j++) {
            const float *z = logits + (size_t)j * C;
            int best = 0;
            double max = z[0], sum = 0;
            for (int c = 1; c < C; c++)
                if (z[c] > z[best]) best = c, max = z[c];
            for (int c = 0; c < C; c++) sum += exp(z[c] - max);
            const char *file = folder ? files[i + j] : path;
            fprintf(out, "%s\t%s", file, class_name(classes, n_classes, best, name));
            for (int c = 0; c < C; c++) fprintf(out, "\t%.4f", exp(z[c] - max) / sum);
            fputc('\n', out);
            int label = folder ? folder_label(file, classes, n_classes) : -1;
            if (label >= 0) labelled++, right += best == label;
        }
    }
    if (!s && labelled)
        fprintf(stderr, "points: %s: accuracy %.3f (%d of the %d files in class folders)\n", path,
                (double)right / labelled, right, labelled);
    for (int i = 0; files && i < n; i++) free(files[i]);
    free(files), free(features), free(xyz), free(work);
    return s;
}
