/* text.c: the line-based point formats. OFF (Geomview's Object File Format, as ModelNet ships
 * it): 'OFF' (COFF and NOFF too: values after x y z on a vertex line are ignored), the counts
 * 'vertices faces edges', the vertex lines, then the face lines 'k i_1 .. i_k', which are read
 * to check the counts; ModelNet's 'OFF490 518 0' (counts on the first line) is accepted. XYZ:
 * 'x y z' per line, separated by blanks or commas, further columns ignored. '#' starts a
 * comment in both. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

/* The next line holding something other than blanks and a comment: [*s, *e). 0 at the end. */
static int next_line(text_cursor *c, const char **s, const char **e) {
    while (c->p < c->end) {
        const char *a = c->p, *nl = memchr(a, '\n', (size_t)(c->end - a)), *b = nl ? nl : c->end;
        c->p = nl ? nl + 1 : c->end;
        c->line++;
        const char *hash = memchr(a, '#', (size_t)(b - a));
        if (hash) b = hash;
        while (a < b && (isspace((unsigned char)*a) || *a == ',')) a++;
        if (a < b) {
            *s = a, *e = b;
            return 1;
        }
    }
    return 0;
}

/* Up to max numbers of the line [s, e) into v; *bad names the first token that is not one.
 * Returns how many were read. */
static int line_numbers(const char *s, const char *e, double *v, int max, const char **bad, int *bad_len) {
    int n = 0;
    *bad = NULL;
    while (n < max) {
        while (s < e && (isspace((unsigned char)*s) || *s == ',')) s++;
        if (s >= e) break;
        const char *t = s;
        while (s < e && !isspace((unsigned char)*s) && *s != ',') s++;
        if (!text_number(t, (size_t)(s - t), &v[n])) {
            *bad = t, *bad_len = (int)(s - t < 40 ? s - t : 40);
            break;
        }
        n++;
    }
    return n;
}

static ssm_status alloc_points(const char *path, point_set *out, long long n) {
    if (n > (1 << 28)) return ssm_set_error(SSM_ERR_FORMAT, "%s: %lld points: more than this reader takes", path, n);
    out->n = (int)n;
    out->xyz = malloc((size_t)n * 3 * sizeof(float) + 1);
    return out->xyz ? SSM_OK : ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory for %lld points", path, n);
}

ssm_status points_read_off(const char *path, const char *data, size_t size, point_set *out) {
    text_cursor c = {.p = data, .end = data + size, .line = 0};
    const char *s, *e, *bad;
    int bad_len;
    double v[4];
    const char *off = NULL;
    if (next_line(&c, &s, &e)) {
        const char *word = s;
        while (word < e && !isspace((unsigned char)*word)) word++;
        off = memmem(s, (size_t)(word - s), "OFF", 3); /* OFF, COFF, NOFF, OFF490 */
    }
    if (!off) return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: not an OFF file (it does not start with 'OFF')", path, c.line);
    const char *after = off + 3;
    int n = line_numbers(after, e, v, 3, &bad, &bad_len); /* ModelNet's counts on the OFF line */
    if (n == 0 && !bad) {
        if (!next_line(&c, &s, &e)) return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: no counts after 'OFF'", path, c.line);
        n = line_numbers(s, e, v, 3, &bad, &bad_len);
    }
    if (n < 2 || !text_whole(v[0], 0, 0x1p53) || !text_whole(v[1], 0, 0x1p53))
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: expected the counts 'vertices faces edges'", path, c.line);
    long long nv = (long long)v[0], nf = (long long)v[1];
    if ((unsigned long long)nv > size / 6 + 1 || (unsigned long long)nf > size / 4 + 1)
        return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: %lld vertices and %lld faces are more than the file's "
                             "%zu bytes can hold: the counts are wrong", path, c.line, nv, nf, size);
    ssm_status st = alloc_points(path, out, nv);
    for (long long i = 0; !st && i < nv + nf; i++) {
        int vertex = i < nv;
        if (!next_line(&c, &s, &e))
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: the file ends at %s %lld of the %lld its counts declare: "
                                 "truncated, or the counts are wrong", path, c.line, vertex ? "vertex" : "face",
                                 (vertex ? i : i - nv) + 1, vertex ? nv : nf);
        char at[32];
        snprintf(at, sizeof at, "%d", c.line);
        if (vertex) {
            if (line_numbers(s, e, v, 3, &bad, &bad_len) < 3)
                return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: vertex %lld: expected 'x y z'%s%.*s%s", path, c.line,
                                     i + 1, bad ? ", got '" : "", bad ? bad_len : 0, bad ? bad : "", bad ? "'" : "");
            st = points_store(path, at, out, (int)i, v);
            continue;
        }
        double k;
        if (line_numbers(s, e, &k, 1, &bad, &bad_len) < 1 || !text_whole(k, 1, 0x1p53))
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: face %lld: expected 'k i_1 .. i_k' (the counts "
                                 "may not match the data)", path, c.line, i - nv + 1);
        double idx[64];
        int m = k <= 64 ? (int)k : 64, got = line_numbers(s, e, idx, m + 1, &bad, &bad_len) - 1;
        for (int j = 0; j < got; j++)
            if (!text_whole(idx[j + 1], 0, (double)(nv - 1))) got = -1;
        if (got < m)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: face %lld: expected %lld vertex indices in [0, %lld) "
                                 "(the counts may not match the data)", path, c.line, i - nv + 1, (long long)k, nv);
    }
    if (!st && next_line(&c, &s, &e))
        st = ssm_set_error(SSM_ERR_FORMAT, "%s:%d: data after the %lld vertices and %lld faces the counts "
                           "declare (the counts do not match the data)", path, c.line, nv, nf);
    return st;
}

ssm_status points_read_xyz(const char *path, const char *data, size_t size, point_set *out) {
    text_cursor c = {.p = data, .end = data + size, .line = 0};
    const char *s, *e, *bad;
    int bad_len;
    long long lines = 0;
    while (next_line(&c, &s, &e)) lines++;
    ssm_status st = alloc_points(path, out, lines);
    c = (text_cursor){.p = data, .end = data + size, .line = 0};
    for (int i = 0; !st && next_line(&c, &s, &e); i++) {
        double v[3];
        if (line_numbers(s, e, v, 3, &bad, &bad_len) < 3)
            return ssm_set_error(SSM_ERR_FORMAT, "%s:%d: expected 'x y z'%s%.*s%s", path, c.line,
                                 bad ? ", got '" : "", bad ? bad_len : 0, bad ? bad : "", bad ? "'" : "");
        char at[32];
        snprintf(at, sizeof at, "%d", c.line);
        st = points_store(path, at, out, i, v);
    }
    return st;
}
