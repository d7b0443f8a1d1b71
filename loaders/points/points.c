/* points.c: see points.h. The common part: reading a file whole, the text cursor, dispatch by
 * extension, normalisation, sampling and augmentation. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "reader.h"

ssm_status points_slurp(const char *path, char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; buf; n += got) {
        if (n == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) break;
            buf = b, cap *= 2;
        }
        if (!(got = fread(buf + n, 1, cap - n, f))) break;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || n == cap) {
        free(buf);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory reading it", path);
    }
    if (err) {
        free(buf);
        return ssm_set_error(SSM_ERR_IO, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf, *size = n;
    return SSM_OK;
}

void text_skip(text_cursor *c) {
    for (;;) {
        while (c->p < c->end && isspace((unsigned char)*c->p)) c->line += *c->p++ == '\n';
        if (c->p < c->end && c->comment && *c->p == c->comment) {
            while (c->p < c->end && *c->p != '\n') c->p++;
            continue;
        }
        break;
    }
}

int text_token(text_cursor *c, const char **tok, size_t *len, int *line_of) {
    text_skip(c);
    if (c->p >= c->end) return 0;
    const char *s = c->p;
    while (c->p < c->end && !isspace((unsigned char)*c->p) && !(c->comment && *c->p == c->comment)) c->p++;
    *tok = s, *len = (size_t)(c->p - s), *line_of = c->line;
    return 1;
}

int text_number(const char *tok, size_t len, double *out) {
    char buf[64], *end;
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, tok, len);
    buf[len] = 0;
    *out = strtod(buf, &end);
    return *end == 0;
}

ssm_status points_store(const char *path, const char *where, point_set *set, int i, const double v[3]) {
    for (int d = 0; d < 3; d++)
        if (!isfinite(v[d]) || fabs(v[d]) > 3e38)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%s: vertex %d has a coordinate that is not a finite "
                                 "number (%c = %g)", path, where, i, "xyz"[d], v[d]);
    for (int d = 0; d < 3; d++) set->xyz[(size_t)i * 3 + d] = (float)v[d];
    return SSM_OK;
}

static const char *extension(const char *path) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot + 1 : "";
}

int points_is_point_file(const char *path) {
    const char *e = extension(path);
    return !strcasecmp(e, "ply") || !strcasecmp(e, "off") || !strcasecmp(e, "xyz") ||
           !strcasecmp(e, "txt") || !strcasecmp(e, "pts");
}

ssm_status points_read(const char *path, point_set *out) {
    memset(out, 0, sizeof *out);
    if (!points_is_point_file(path))
        return ssm_set_error(SSM_ERR_FORMAT, "%s: not a point file this reader knows (.ply, .off, .xyz, "
                             ".txt, .pts)", path);
    char *data;
    size_t size;
    ssm_status s = points_slurp(path, &data, &size);
    if (s) return s;
    const char *e = extension(path);
    s = !strcasecmp(e, "ply")   ? points_read_ply(path, data, size, out)
        : !strcasecmp(e, "off") ? points_read_off(path, data, size, out)
                                : points_read_xyz(path, data, size, out);
    free(data);
    if (!s && out->n == 0) s = ssm_set_error(SSM_ERR_FORMAT, "%s: holds no points", path);
    if (s) point_set_free(out);
    return s;
}

void point_set_free(point_set *set) {
    free(set->xyz);
    memset(set, 0, sizeof *set);
}

ssm_status points_normalize(const char *path, point_set *set) {
    double c[3] = {0, 0, 0}, r = 0;
    for (int i = 0; i < set->n; i++)
        for (int d = 0; d < 3; d++) c[d] += set->xyz[(size_t)i * 3 + d] / (double)set->n;
    for (int i = 0; i < set->n; i++) {
        double s = 0;
        for (int d = 0; d < 3; d++) s += pow(set->xyz[(size_t)i * 3 + d] - c[d], 2);
        if (s > r) r = s;
    }
    r = sqrt(r);
    if (!(r > 1e-30))
        return ssm_set_error(SSM_ERR_FORMAT, "%s: its %d points all coincide: no shape to normalise", path, set->n);
    for (int i = 0; i < set->n; i++)
        for (int d = 0; d < 3; d++) set->xyz[(size_t)i * 3 + d] = (float)((set->xyz[(size_t)i * 3 + d] - c[d]) / r);
    return SSM_OK;
}

void points_sample(const point_set *set, int N, ssm_rng *rng, float *out) {
    int n = set->n;
    int *idx = malloc((size_t)n * sizeof *idx);
    if (!idx) { /* no room for the shuffle: the first points, in order */
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * 3, set->xyz + (size_t)(i % n) * 3, 3 * sizeof(float));
        return;
    }
    for (int i = 0; i < n; i++) idx[i] = i;
    int take = N < n ? N : n;
    for (int i = 0; i < take; i++) { /* partial Fisher-Yates: a uniform subset */
        int j = i + (int)ssm_rng_below(rng, (uint64_t)(n - i)), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
    }
    for (int i = 0; i < N; i++) {
        int k = i < take ? idx[i] : (int)ssm_rng_below(rng, (uint64_t)n);
        memcpy(out + (size_t)i * 3, set->xyz + (size_t)k * 3, 3 * sizeof(float));
    }
    free(idx);
}

void points_augment(float *xyz, int N, const points_augment_options *o, ssm_rng *rng) {
    double a = o->rotate * (2 * ssm_rng_uniform(rng) - 1), ca = cos(a), sa = sin(a), s[3];
    for (int d = 0; d < 3; d++) s[d] = o->scale_lo + (o->scale_hi - o->scale_lo) * ssm_rng_uniform(rng);
    for (int i = 0; i < N; i++) {
        float *p = xyz + (size_t)i * 3;
        double x = ca * p[0] + sa * p[2], z = -sa * p[0] + ca * p[2]; /* about y */
        double v[3] = {x * s[0], p[1] * s[1], z * s[2]};
        for (int d = 0; d < 3; d++) {
            double j = o->jitter_sigma * ssm_rng_normal(rng);
            if (j > o->jitter_clip) j = o->jitter_clip;
            if (j < -o->jitter_clip) j = -o->jitter_clip;
            p[d] = (float)(v[d] + j);
        }
    }
}
