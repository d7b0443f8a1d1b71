/* points.h: the point-cloud classification task (PoinTramba's pipeline on ssm's backbone,
 * docs/points.md): labelled point sets from folders (one subfolder per class), each shape a
 * sequence of G groups in a fixed geometric importance order read forward then reversed, a
 * pooled classification head. What its files share. */
#ifndef SSM_TASK_POINTS_H
#define SSM_TASK_POINTS_H

#include "../../loaders/points/points.h"
#include "ssm/task.h"

typedef struct pt_options {
    int points;       /* N sampled from each shape */
    int groups;       /* G centres by farthest point sampling */
    int neighbours;   /* k per group */
    int both_ways;    /* 1: the sequence is the G groups then the same reversed (L = 2G) */
    points_augment_options augment;
} pt_options;

/* A labelled shape: normalised, with the file it came from. */
typedef struct pt_shape { point_set set; int label; char *path; } pt_shape;
typedef struct pt_shapes { pt_shape *v; int n, cap; } pt_shapes;

/* The backbone positions of one shape and the floats per position. */
static inline int pt_positions(const pt_options *o) { return o->both_ways ? 2 * o->groups : o->groups; }
static inline int pt_features(const pt_options *o) { return 3 + 3 * o->neighbours; }

/* Read, normalise and check one file (at least G k points). */
ssm_status pt_load(const pt_options *o, const char *path, point_set *set);
/* The point files of a folder: its own and those of its subfolders (one level), sorted;
 * *names (n) are malloc'ed. */
ssm_status pt_list_folder(const char *dir, char ***names, int *n);
/* One shape's model input (L, F) from N points drawn from the set (and augmented when train). */
void pt_shape_features(const pt_options *o, const point_set *set, int train, ssm_rng *rng,
                       float *xyz_work, int *int_work, float *features);

/* ssm-score on a point file, a folder of them, or a list: TSV of the predicted class and the
 * class probabilities; a folder whose subfolders are named by class also gets its accuracy
 * (score.c). header_done is the task's: the TSV header is written once. */
ssm_status pt_score_file(const pt_options *o, const char *const *classes, int n_classes,
                         ssm_model *model, const char *path, FILE *out, int *header_done);

#endif
