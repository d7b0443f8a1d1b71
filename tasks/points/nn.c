/* nn.c: points-nn, the task's classical baseline: a 1-nearest-neighbour classifier on simple
 * shape descriptors (Osada et al.'s D2 shape distribution: the histogram of the distances
 * between all pairs of the N sampled points, beside the histogram of the points' distances
 * from the centre), L1 distance between descriptors. The same readers, normalisation and
 * sampling (rng seeded 1 per file) as ssm-score.
 *   points-nn [--points N] TRAIN_DIR TEST_DIR     (folders with one subfolder per class) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "points.h"

enum { D2_BINS = 32, R_BINS = 16, DESC = D2_BINS + R_BINS };

typedef struct labelled { double (*desc)[DESC]; char **label; int n; } labelled;

static void describe(const float *p, int N, double *d) {
    memset(d, 0, DESC * sizeof *d);
    for (int i = 0; i < N; i++) {
        const float *a = p + (size_t)i * 3;
        double r = sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
        d[D2_BINS + (r >= 1 ? R_BINS - 1 : (int)(r * R_BINS))] += 1.0 / N;
        for (int j = i + 1; j < N; j++) {
            const float *b = p + (size_t)j * 3;
            double e = sqrt(pow(a[0] - b[0], 2) + pow(a[1] - b[1], 2) + pow(a[2] - b[2], 2));
            d[e >= 2 ? D2_BINS - 1 : (int)(e / 2 * D2_BINS)] += 2.0 / ((double)N * (N - 1));
        }
    }
}

static int load(const char *dir, int N, labelled *out) {
    char **files;
    int n;
    pt_options o = {.points = N, .groups = 1, .neighbours = 1};
    if (pt_list_folder(dir, &files, &n)) return fprintf(stderr, "points-nn: %s\n", ssm_last_error()), 1;
    out->desc = malloc((size_t)n * sizeof *out->desc);
    out->label = calloc((size_t)n, sizeof *out->label);
    float *xyz = malloc((size_t)N * 3 * sizeof(float));
    out->n = 0;
    for (int i = 0; i < n; i++) {
        point_set set;
        if (pt_load(&o, files[i], &set)) return fprintf(stderr, "points-nn: %s\n", ssm_last_error()), 1;
        ssm_rng rng;
        ssm_rng_seed(&rng, 1);
        points_sample(&set, N, &rng, xyz);
        point_set_free(&set);
        describe(xyz, N, out->desc[out->n]);
        char *slash = strrchr(files[i], '/');
        *slash = 0; /* the class: the file's folder name */
        out->label[out->n++] = strdup(strrchr(files[i], '/') ? strrchr(files[i], '/') + 1 : files[i]);
        free(files[i]);
    }
    free(files), free(xyz);
    return 0;
}

int main(int argc, char **argv) {
    int N = 512, a = 1;
    if (argc > 2 && !strcmp(argv[1], "--points")) N = atoi(argv[2]), a = 3;
    if (argc - a != 2 || N < 2) {
        fprintf(stderr, "usage: points-nn [--points N] TRAIN_DIR TEST_DIR\n");
        return 2;
    }
    labelled train, test;
    if (load(argv[a], N, &train) || load(argv[a + 1], N, &test)) return 1;
    int right = 0;
    for (int i = 0; i < test.n; i++) {
        int best = 0;
        double best_d = INFINITY;
        for (int j = 0; j < train.n; j++) {
            double d = 0;
            for (int b = 0; b < DESC; b++) d += fabs(test.desc[i][b] - train.desc[j][b]);
            if (d < best_d) best_d = d, best = j;
        }
        right += !strcmp(train.label[best], test.label[i]);
    }
    for (int i = 0; i < train.n; i++) free(train.label[i]);
    for (int i = 0; i < test.n; i++) free(test.label[i]);
    free(train.label), free(train.desc), free(test.label), free(test.desc);
    printf("points-nn: 1-NN on D2 + radial histograms: accuracy %.3f (%d of %d test shapes; %d training shapes)\n",
           test.n ? (double)right / test.n : NAN, right, test.n, train.n);
    return 0;
}
