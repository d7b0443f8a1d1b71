/* group.c: see group.h. O(N G) sampling and O(N k) per neighbourhood: shapes are small. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"

static float dist2(const float *a, const float *b) {
    float dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return dx * dx + dy * dy + dz * dz;
}

void points_fps(const float *xyz, int N, int G, int *centres) {
    float *d = malloc((size_t)N * sizeof *d);
    if (!d) { /* no room: evenly spaced points instead */
        for (int g = 0; g < G; g++) centres[g] = (int)((long long)g * N / G);
        return;
    }
    for (int i = 0; i < N; i++) d[i] = FLT_MAX;
    int last = 0;
    for (int g = 0; g < G; g++) {
        centres[g] = last;
        int next = 0;
        float best = -1;
        for (int i = 0; i < N; i++) {
            float e = dist2(xyz + (size_t)i * 3, xyz + (size_t)last * 3);
            if (e < d[i]) d[i] = e;
            if (d[i] > best) best = d[i], next = i;
        }
        last = next;
    }
    free(d);
}

void points_knn(const float *xyz, int N, const float *q, int k, int *nn) {
    float best[k];
    int n = 0;
    for (int i = 0; i < N; i++) { /* insertion into the sorted list of the k nearest so far */
        float e = dist2(xyz + (size_t)i * 3, q);
        if (n == k && e >= best[k - 1]) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && best[j - 1] > e) best[j] = best[j - 1], nn[j] = nn[j - 1], j--;
        best[j] = e, nn[j] = i;
    }
}

void points_order(const float *xyz, const int *centres, int G, int *order) {
    for (int g = 0; g < G; g++) { /* insertion sort: stable, G is small */
        const float *c = xyz + (size_t)centres[g] * 3;
        float r = c[0] * c[0] + c[1] * c[1] + c[2] * c[2];
        int j = g;
        while (j > 0) {
            const float *p = xyz + (size_t)centres[order[j - 1]] * 3;
            if (p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= r) break;
            order[j] = order[j - 1], j--;
        }
        order[j] = g;
    }
}

void points_group_features(const float *xyz, int N, int G, int k, int both, int *work, float *features) {
    int *centres = work, *order = work + G, *nn = work + 2 * G;
    int F = 3 + 3 * k;
    points_fps(xyz, N, G, centres);
    points_order(xyz, centres, G, order);
    for (int s = 0; s < G; s++) {
        const float *c = xyz + (size_t)centres[order[s]] * 3;
        float *f = features + (size_t)s * F;
        points_knn(xyz, N, c, k, nn);
        for (int d = 0; d < 3; d++) f[d] = c[d];
        for (int j = 0; j < k; j++)
            for (int d = 0; d < 3; d++) f[3 + 3 * j + d] = xyz[(size_t)nn[j] * 3 + d] - c[d];
        if (both) memcpy(features + (size_t)(2 * G - 1 - s) * F, f, (size_t)F * sizeof(float));
    }
}
