/* fuzz_points.c: fuzz target for the point-file readers (loaders/points: PLY ASCII and binary
 * little and big endian, OFF, XYZ).
 *
 * Each input is written to a temporary file under each extension (.ply, .off, .xyz) and read
 * with points_read, then normalised. Errors are fine; an error without a message, a set that
 * breaks points.h's promises (n > 0, every coordinate finite; after points_normalize, every
 * point inside the unit sphere), a crash, a leak or undefined behaviour is a bug.
 *
 * With libFuzzer: tests/fuzz/libfuzzer.sh builds it (build-fuzz/fuzz_points), and
 *   build-fuzz/fuzz_points tests/fuzz/points_corpus
 * Built with -DSSM_FUZZ_STANDALONE (the meson test 'fuzz_points'), the standalone driver runs
 * tests/fuzz/points_corpus (PLY ASCII, binary little and big endian with extra properties and
 * faces, OFF, XYZ with comments and extra columns, a few near-valid ones) and deterministic
 * mutations of each (SSM_FUZZ_MUTATIONS, default 200; SSM_FUZZ_SEED). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../loaders/points/points.h"
#include "fuzz_driver.h"

static const char *const files[] = {"in.ply", "in.off", "in.xyz"}, *const exts[] = {"ply", "off", "xyz"};
static long n_read;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int k = 0; k < 3; k++) {
        const char *path = fuzz_temp_path("fuzz_points", files[k]);
        fuzz_write_file(path, data, size);
        point_set set;
        ssm_status s = points_read(path, &set);
        if (s) {
            FAILED(s);
            continue;
        }
        CHECK(set.n > 0 && set.xyz, "%s: %d points", exts[k], set.n);
        for (long i = 0; i < 3L * set.n; i++) CHECK(isfinite(set.xyz[i]), "%s: coordinate %ld", exts[k], i);
        s = points_normalize(path, &set);
        if (s) FAILED(s);
        else
            for (int i = 0; i < set.n; i++) {
                const float *p = set.xyz + 3L * i;
                double r = sqrt((double)p[0] * p[0] + (double)p[1] * p[1] + (double)p[2] * p[2]);
                CHECK(isfinite(r) && r <= 1 + 1e-4, "%s: point %d at radius %g", exts[k], i, r);
            }
        n_read++;
        point_set_free(&set);
    }
    return 0;
}

#ifdef SSM_FUZZ_STANDALONE
const fuzz_target fuzz_this_target = {
    .name = "fuzz_points", .mutations = 200, .truncations = 48, .reads = &n_read,
    .punct = " \n\r#-.eE0123456789plyformatelementpropertyfloatuchar\xff"};
#endif
