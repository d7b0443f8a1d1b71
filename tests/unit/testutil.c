#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tu_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 11) * 0x1.0p-53);
    }
}

double tu_unit_direction(float *v, size_t n, const float *grad, uint64_t seed) {
    tu_fill_uniform(v, n, -1, 1, seed);
    double vn = 0, an = 0;
    for (size_t i = 0; i < n; i++) vn += (double)v[i] * v[i];
    for (size_t i = 0; i < n; i++) v[i] /= (float)sqrt(vn);
    for (size_t i = 0; i < n; i++) an += (double)grad[i] * v[i];
    return an;
}

double tu_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
        if (!isfinite(a[i])) return INFINITY;
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

double tu_rel_err_d(const double *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
        if (!isfinite(a[i])) return INFINITY;
    }
    return sqrt(num) / (sqrt(den) + 1e-300);
}

const char *tu_data_path(const char *rel) {
    static char buf[4096];
    const char *root = getenv("SSM_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : "tests", rel);
    return buf;
}

const char *tu_tmpdir(void) {
    static char buf[4096];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/ssm-test-XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(buf)) fail_msg("mkdtemp failed");
    return buf;
}

void tu_random_tokens(int32_t *tok, int n, int vocab, uint64_t seed) {
    float *r = malloc(n * sizeof(float));
    tu_fill_uniform(r, n, 0, (float)vocab, seed);
    for (int i = 0; i < n; i++) tok[i] = (int32_t)r[i] % vocab;
    free(r);
}

void tu_tiny_options(ssm_config *c) {
    c->d_state = 4;
    c->d_conv = 3;
    c->dt_rank = 2;
    c->attention.n_heads = c->attention.n_kv_heads = 2;
    c->attention.head_dim = 8;
    c->mlp.d_ff = 24;
}
