/* test_points.c: the point-cloud task's pieces: the PLY (ASCII, binary both endiannesses),
 * OFF and XYZ readers against hand-made files, the bad inputs (truncated binary PLY, headers
 * whose counts lie, NaN and inf coordinates, fewer points than G k) refused naming the file and
 * the line or byte, normalisation, sampling and augmentation, farthest point sampling and k
 * nearest neighbours against brute force, and the group order a permutation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tasks/points/group.h"
#include "../../tasks/points/points.h"
#include "testutil.h"

/* The cube's 8 corners, the points every hand-made file holds. */
static const float cube[8][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {0, 1, 0},
                                 {0, 0, 1}, {1, 0, 1}, {1, 1, 1}, {0, 1, 1.5f}};

static const char *write_file(const char *name, const void *data, size_t n) {
    static char path[4][4096];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 4096, "%s/%s", tu_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return p;
}

static void expect_cube(const char *path) {
    point_set s;
    TU_OK(points_read(path, &s));
    assert_int_equal(s.n, 8);
    for (int i = 0; i < 8; i++)
        for (int d = 0; d < 3; d++) assert_float_equal(s.xyz[i * 3 + d], cube[i][d], 0);
    point_set_free(&s);
}

static void expect_error(const char *path, const char *message) {
    point_set s;
    ssm_status st = points_read(path, &s);
    if (st == SSM_OK) fail_msg("%s was read, expected '%s'", path, message);
    if (!strstr(ssm_last_error(), message) || !strstr(ssm_last_error(), path))
        fail_msg("error '%s' lacks the path or '%s'", ssm_last_error(), message);
}


/* The cube as ASCII PLY (x, a colour, y, z; then faces), vertex nan_at's y NaN (-1: none). */
static size_t ascii_ply(char *buf, size_t size, const char *vertices, const char *faces, int nan_at) {
    int n = snprintf(buf, size, "ply\nformat ascii 1.0\ncomment made by hand\nelement vertex %s\n"
                     "property float x\nproperty uchar red\nproperty float y\nproperty float z\n"
                     "element face %s\nproperty list uchar int vertex_indices\nend_header\n", vertices, faces);
    for (int i = 0; i < 8; i++)
        n += snprintf(buf + n, size - n, "%g %d %g %g\n", cube[i][0], i * 30, i == nan_at ? NAN : cube[i][1], cube[i][2]);
    n += snprintf(buf + n, size - n, "4 0 1 2 3\n3 4 5 6\n");
    return (size_t)n;
}

static void test_ply_ascii(void **state) {
    (void)state;
    char buf[2048];
    expect_cube(write_file("a.ply", buf, ascii_ply(buf, sizeof buf, "8", "2", -1)));
    /* a header that declares 9 vertices: the 9th is the first face line, one value too long */
    expect_error(write_file("lie9.ply", buf, ascii_ply(buf, sizeof buf, "9", "2", -1)),
                 "lie9.ply:20: element 'vertex' item 9 has more values than its 4 properties");
    /* a vertex line one value short */
    size_t n = ascii_ply(buf, sizeof buf, "8", "2", -1);
    char *v3 = strstr(buf, "\n1 60 1 0\n");
    memcpy(v3, "\n1 60 1  \n", 11);
    expect_error(write_file("short.ply", buf, n), "short.ply:14: element 'vertex' item 3 ends before its 4 properties");
    /* declares 1 face: the second face line (line 21) is data after the last item */
    expect_error(write_file("lie1.ply", buf, ascii_ply(buf, sizeof buf, "8", "1", -1)),
                 "lie1.ply:21: data after the last item");
    /* NaN in vertex 2, on line 14 */
    expect_error(write_file("nan.ply", buf, ascii_ply(buf, sizeof buf, "8", "2", 2)),
                 "nan.ply:14: vertex 2 has a coordinate that is not a finite");
}

/* The cube as binary PLY of the given endianness: double x, short junk, float y z, then faces. */
static size_t binary_ply(int big, char *buf, int vertices_declared, int faces) {
    int n = snprintf(buf, 4096, "ply\nformat binary_%s_endian 1.0\nelement vertex %d\nproperty double x\n"
                     "property short junk\nproperty float y\nproperty float z\nelement face %d\n"
                     "property list uchar uint vertex_indices\nend_header\n",
                     big ? "big" : "little", vertices_declared, faces);
    size_t p = (size_t)n;
    for (int i = 0; i < 8 + faces; i++) {
        unsigned char v[32];
        int len = 0;
        if (i < 8) {
            double x = cube[i][0];
            float y = cube[i][1], z = cube[i][2];
            short j = (short)(-i);
            memcpy(v, &x, 8), memcpy(v + 8, &j, 2), memcpy(v + 10, &y, 4), memcpy(v + 14, &z, 4);
            int sizes[] = {8, 2, 4, 4};
            for (int f = 0, o = 0; f < 4; o += sizes[f++])
                if (big)
                    for (int a = 0; a < sizes[f] / 2; a++) {
                        unsigned char t = v[o + a];
                        v[o + a] = v[o + sizes[f] - 1 - a], v[o + sizes[f] - 1 - a] = t;
                    }
            len = 18;
        } else { /* 3 vertex indices */
            v[0] = 3;
            for (int k = 0; k < 3; k++) {
                unsigned idx = (unsigned)k;
                for (int b = 0; b < 4; b++) v[1 + 4 * k + b] = (unsigned char)(idx >> 8 * (big ? 3 - b : b));
            }
            len = 13;
        }
        memcpy(buf + p, v, (size_t)len);
        p += (size_t)len;
    }
    return p;
}

static void test_ply_binary(void **state) {
    (void)state;
    char buf[4096];
    for (int big = 0; big < 2; big++) {
        size_t n = binary_ply(big, buf, 8, 2);
        expect_cube(write_file(big ? "be.ply" : "le.ply", buf, n));
        /* truncated in the 8th vertex: 18 bytes an item, the header then 7 items */
        size_t header = (size_t)(strstr(buf, "end_header\n") + 11 - buf);
        const char *cut = write_file("cut.ply", buf, header + 7 * 18 + 5);
        char want[128];
        snprintf(want, sizeof want, "cut.ply: byte %zu: the file ends in element 'vertex' item 8 of the 8 "
                 "its header declares (line 3), after %zu bytes", header + 7 * 18, header + 7 * 18 + 5);
        expect_error(cut, want);
        /* a header that declares fewer faces than there are: bytes left over */
        n = binary_ply(big, buf, 8, 2);
        memcpy(strstr(buf, "face 2"), "face 1", 6);
        snprintf(want, sizeof want, "byte %zu: 13 bytes after the last item", header + 8 * 18 + 13);
        expect_error(write_file("extra.ply", buf, n), want);
        /* a header that declares a million vertices */
        n = binary_ply(big, buf, 8, 2);
        char *c = strstr(buf, "vertex 8");
        char big_buf[4096];
        size_t pre = (size_t)(c - buf);
        memcpy(big_buf, buf, pre);
        int m = sprintf(big_buf + pre, "vertex 1000000");
        memcpy(big_buf + pre + m, c + 8, n - pre - 8);
        expect_error(write_file("million.ply", big_buf, n + (size_t)m - 8), "million.ply:3: the header declares 1000000 'vertex' items");
    }
    /* an infinite coordinate in a binary file names the item's byte */
    size_t n = binary_ply(0, buf, 8, 2), header = (size_t)(strstr(buf, "end_header\n") + 11 - buf);
    float inf = INFINITY;
    memcpy(buf + header + 3 * 18 + 14, &inf, 4);
    char want[96];
    snprintf(want, sizeof want, "inf.ply: byte %zu: vertex 3 has a coordinate", header + 3 * 18);
    expect_error(write_file("inf.ply", buf, n), want);
    expect_error(write_file("nohead.ply", "ply\nformat ascii 1.0\n", 21), "nohead.ply:3: the header has no end_header");
    expect_error(write_file("noxyz.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", 66),
                 "no 'vertex' element with properties x, y and z");
}

static void test_off_xyz(void **state) {
    (void)state;
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "OFF\n# a cube\n8 2 0\n");
    for (int i = 0; i < 8; i++) n += snprintf(buf + n, sizeof buf - n, "%g %g %g\n", cube[i][0], cube[i][1], cube[i][2]);
    n += snprintf(buf + n, sizeof buf - n, "4 0 1 2 3\n3 4 5 6\n");
    expect_cube(write_file("a.off", buf, (size_t)n));
    char modelnet[2048]; /* ModelNet's counts on the OFF line */
    snprintf(modelnet, sizeof modelnet, "OFF8 2 0\n%s", strstr(buf, "8 2 0\n") + 6);
    expect_cube(write_file("m.off", modelnet, strlen(modelnet)));
    char lie[2048];
    snprintf(lie, sizeof lie, "%s", buf);
    memcpy(strstr(lie, "8 2 0"), "8 3 0", 5);
    expect_error(write_file("short.off", lie, strlen(lie)), "short.off:13: the file ends at face 3 of the 3");
    memcpy(strstr(lie, "8 3 0"), "9 2 0", 5); /* a face line read as the 9th vertex, a face short */
    expect_error(write_file("nine.off", lie, strlen(lie)), "nine.off:");
    memcpy(strstr(lie, "9 2 0"), "8 1 0", 5);
    expect_error(write_file("extra.off", lie, strlen(lie)), "extra.off:13: data after the 8 vertices and 1 faces");
    n = 0;
    for (int i = 0; i < 8; i++) n += snprintf(buf + n, sizeof buf - n, "%g,%g,%g,0.5\n%s", cube[i][0], cube[i][1], cube[i][2], i == 3 ? "\n# gap\n" : "");
    expect_cube(write_file("a.xyz", buf, (size_t)n));
    expect_error(write_file("bad.xyz", "1 2 3\n4 five 6\n", 15), "bad.xyz:2: expected 'x y z', got 'five'");
    expect_error(write_file("nan.xyz", "1 2 3\n4 5 6\n7 inf 9\n", 20), "nan.xyz:3: vertex 2 has a coordinate");
    expect_error(write_file("empty.xyz", "# nothing\n", 10), "empty.xyz: holds no points");
}

static void test_normalise_sample_augment(void **state) {
    (void)state;
    char buf[256];
    int n = 0;
    for (int i = 0; i < 8; i++) n += snprintf(buf + n, sizeof buf - n, "%g %g %g\n", cube[i][0], cube[i][1], cube[i][2]);
    const char *path = write_file("c.xyz", buf, (size_t)n);
    point_set s;
    pt_options o = {.points = 8, .groups = 2, .neighbours = 4};
    TU_OK(pt_load(&o, path, &s));
    double c[3] = {0}, r = 0;
    for (int i = 0; i < 8; i++) {
        double q = 0;
        for (int d = 0; d < 3; d++) c[d] += s.xyz[i * 3 + d] / 8, q += s.xyz[i * 3 + d] * s.xyz[i * 3 + d];
        if (q > r) r = q;
    }
    for (int d = 0; d < 3; d++) assert_true(fabs(c[d]) < 1e-6);
    assert_true(fabs(sqrt(r) - 1) < 1e-6);
    /* sampling every point gives a permutation; more than there are repeats some */
    float out[16 * 3];
    ssm_rng rng;
    ssm_rng_seed(&rng, 7);
    points_sample(&s, 8, &rng, out);
    int seen[8] = {0};
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++)
            if (!memcmp(out + i * 3, s.xyz + j * 3, 3 * sizeof(float))) seen[j]++;
    for (int j = 0; j < 8; j++) assert_int_equal(seen[j], 1);
    /* a rotation about y keeps y and the distance from the axis; the same rng state repeats it */
    points_augment_options a = {.rotate = M_PI, .scale_lo = 1, .scale_hi = 1};
    memcpy(out, s.xyz, sizeof(float) * 24);
    ssm_rng again = rng;
    points_augment(out, 8, &a, &rng);
    for (int i = 0; i < 8; i++) {
        const float *p = s.xyz + i * 3, *q = out + i * 3;
        assert_float_equal(q[1], p[1], 1e-6);
        assert_float_equal(hypot(q[0], q[2]), hypot(p[0], p[2]), 1e-5);
    }
    float twice[24];
    memcpy(twice, s.xyz, sizeof twice);
    points_augment(twice, 8, &a, &again);
    assert_memory_equal(twice, out, sizeof twice);
    /* fewer points than G k */
    o.groups = 3, o.neighbours = 4;
    ssm_status st = pt_load(&o, path, &(point_set){0});
    assert_int_equal(st, SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "c.xyz: 8 points, fewer than G k = 12"));
    point_set_free(&s);
    const char *same = write_file("same.xyz", "1 1 1\n1 1 1\n", 12);
    assert_int_equal(pt_load(&o, same, &(point_set){0}), SSM_ERR_FORMAT);
    assert_non_null(strstr(ssm_last_error(), "same.xyz: its 2 points all coincide"));
}

static float d2(const float *a, const float *b) {
    return (a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) + (a[2] - b[2]) * (a[2] - b[2]);
}

static void test_fps_knn_order(void **state) {
    (void)state;
    enum { N = 300, G = 24, K = 10 };
    float xyz[N * 3];
    tu_fill_uniform(xyz, N * 3, -1, 1, 3);
    int centres[G];
    points_fps(xyz, N, G, centres);
    /* brute force: each next centre maximises the distance to the nearest chosen one */
    assert_int_equal(centres[0], 0);
    for (int g = 1; g < G; g++) {
        float best = -1;
        int arg = -1;
        for (int i = 0; i < N; i++) {
            float m = INFINITY;
            for (int h = 0; h < g; h++) m = fminf(m, d2(xyz + i * 3, xyz + centres[h] * 3));
            if (m > best) best = m, arg = i;
        }
        assert_int_equal(centres[g], arg);
    }
    /* kNN: the k smallest distances, in order, by a full sort of all N */
    for (int g = 0; g < G; g++) {
        const float *q = xyz + centres[g] * 3;
        int nn[K], idx[N];
        points_knn(xyz, N, q, K, nn);
        for (int i = 0; i < N; i++) idx[i] = i;
        for (int i = 0; i < K; i++) /* selection sort of the first K: ties by index */
            for (int j = i + 1; j < N; j++) {
                float a = d2(xyz + idx[i] * 3, q), b = d2(xyz + idx[j] * 3, q);
                if (b < a || (b == a && idx[j] < idx[i])) {
                    int t = idx[i];
                    idx[i] = idx[j], idx[j] = t;
                }
            }
        for (int i = 0; i < K; i++) assert_int_equal(nn[i], idx[i]);
        assert_int_equal(nn[0], centres[g]);
    }
    /* the order: a permutation, by distance from the origin */
    int order[G], seen[G] = {0};
    points_order(xyz, centres, G, order);
    for (int g = 0; g < G; g++) seen[order[g]]++;
    for (int g = 0; g < G; g++) assert_int_equal(seen[g], 1);
    float zero[3] = {0, 0, 0};
    for (int g = 1; g < G; g++)
        assert_true(d2(xyz + centres[order[g - 1]] * 3, zero) <= d2(xyz + centres[order[g]] * 3, zero));
    /* the features: the sequence then its reverse; neighbours relative to the centre */
    int work[2 * G + K];
    float *f = malloc(sizeof(float) * 2 * G * (3 + 3 * K));
    points_group_features(xyz, N, G, K, 1, work, f);
    int F = 3 + 3 * K;
    for (int s = 0; s < G; s++) {
        assert_memory_equal(f + s * F, f + (2 * G - 1 - s) * F, sizeof(float) * F);
        assert_memory_equal(f + s * F, xyz + centres[order[s]] * 3, sizeof(float) * 3);
        for (int d = 0; d < 3; d++) assert_float_equal(f[s * F + 3 + d], 0, 0); /* the centre itself */
    }
    free(f);
}

/* Every truncation of a binary and an ASCII PLY, and random bytes changed: read or refused
 * with a message naming the file, never a crash (run under ASan in CI). */
static void test_mutations(void **state) {
    (void)state;
    char good[2][4096], buf[4096];
    size_t n[2] = {binary_ply(0, good[0], 8, 2), ascii_ply(good[1], sizeof good[1], "8", "2", -1)};
    ssm_rng rng;
    ssm_rng_seed(&rng, 5);
    for (int f = 0; f < 2; f++)
        for (int trial = 0; trial < (int)n[f] + 400; trial++) {
            size_t len = n[f];
            memcpy(buf, good[f], len);
            if (trial < (int)n[f]) len = (size_t)trial; /* a truncation */
            else
                for (int k = 0; k < 3; k++) buf[ssm_rng_below(&rng, len)] = (char)ssm_rng_below(&rng, 256);
            const char *path = write_file("m.ply", buf, len);
            point_set s;
            if (points_read(path, &s) == SSM_OK) {
                assert_true(s.n > 0);
                point_set_free(&s);
            } else if (!strstr(ssm_last_error(), path)) {
                fail_msg("the error '%s' does not name the file", ssm_last_error());
            }
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ply_ascii),
        cmocka_unit_test(test_ply_binary),
        cmocka_unit_test(test_off_xyz),
        cmocka_unit_test(test_normalise_sample_augment),
        cmocka_unit_test(test_fps_knn_order),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
