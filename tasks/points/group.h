/* group.h: a point set as a sequence of groups (Point-BERT, PointMamba, PoinTramba): farthest
 * point sampling of G centres, the k nearest neighbours of each, and the order of the groups. */
#ifndef SSM_TASK_POINTS_GROUP_H
#define SSM_TASK_POINTS_GROUP_H

/* G centres (indices into xyz (N, 3)) by farthest point sampling: the first is point 0, each
 * next the point farthest from those chosen (squared distance; ties: the lower index). */
void points_fps(const float *xyz, int N, int G, int *centres);
/* The k nearest points of xyz to q (3), nearest first (ties: the lower index), into nn (k). */
void points_knn(const float *xyz, int N, const float *q, int k, int *nn);
/* The fixed geometric importance order of the G groups: by the distance of the centre from
 * the shape's centre (the origin after normalisation), nearest first (ties: the lower index).
 * order (G) is a permutation of 0..G-1. */
void points_order(const float *xyz, const int *centres, int G, int *order);
/* One shape's backbone input (G or 2G, 3 + 3k): the groups in importance order, then (both)
 * the same in reverse order (the bi-directional reading); per group its centre, then its k
 * neighbours relative to the centre, nearest first. xyz (N, 3); work holds 2G + k ints. */
void points_group_features(const float *xyz, int N, int G, int k, int both, int *work, float *features);

#endif
