/* points.h: point sets from PLY (ASCII, binary little and big endian), OFF and XYZ text files,
 * their normalisation (centred, inside the unit sphere), sampling and training augmentation.
 * Debian has no PLY library (rply is not packaged; assimp reads PLY and OFF but its errors name
 * neither the line nor the byte), so the readers are here. Errors name the file and the line
 * (text) or the byte offset (binary PLY): "shape.ply: byte 1234: the file ends in element
 * 'vertex' item 41 of 100 the header declares". */
#ifndef SSM_LOADERS_POINTS_H
#define SSM_LOADERS_POINTS_H

#include "ssm/ssm.h"

typedef struct point_set {
    int n;        /* points */
    float *xyz;   /* (n, 3), every coordinate finite */
} point_set;

/* The format from the name's extension: .ply, .off, or .xyz / .txt / .pts (x y z per line,
 * further columns ignored). */
ssm_status points_read(const char *path, point_set *out);
/* 1 when points_read knows the extension. */
int points_is_point_file(const char *path);
void point_set_free(point_set *set);

/* Centre on the mean and scale so that the farthest point lies on the unit sphere (PointNet's
 * pc_normalize). A set whose points all coincide is refused, naming path. */
ssm_status points_normalize(const char *path, point_set *set);

/* N points of the set into out (N, 3): a random subset without replacement when the set has
 * at least N points, else every point once and the rest drawn again at random. rng only. */
void points_sample(const point_set *set, int N, ssm_rng *rng, float *out);

/* Training augmentation, drawn from rng: a rotation about the vertical (y) axis by an angle
 * uniform in [-rotate, rotate] radians, a scale per axis uniform in [scale_lo, scale_hi], and a
 * Gaussian jitter of sigma per coordinate clipped to [-clip, clip]. */
typedef struct points_augment_options {
    double rotate, scale_lo, scale_hi, jitter_sigma, jitter_clip;
} points_augment_options;
void points_augment(float *xyz, int N, const points_augment_options *o, ssm_rng *rng);

#endif
