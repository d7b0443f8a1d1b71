/* fuzz_tmp.c: the temporary files of the targets that read a path (fuzz_driver.h); linked into
 * both builds of every target (standalone and libFuzzer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_driver.h"

enum { MAX_FILES = 8 };
static char dir[256], paths[MAX_FILES][320];
static int n_paths;

static void remove_all(void) {
    for (int i = 0; i < n_paths; i++) unlink(paths[i]);
    rmdir(dir);
}

const char *fuzz_temp_path(const char *prefix, const char *file) {
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
        CHECK(mkdtemp(dir) != NULL, "mkdtemp %s", dir);
        atexit(remove_all);
    }
    char p[sizeof paths[0]];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    for (int i = 0; i < n_paths; i++)
        if (!strcmp(paths[i], p)) return paths[i];
    CHECK(n_paths < MAX_FILES, "more than %d temporary files", MAX_FILES);
    memcpy(paths[n_paths], p, sizeof p);
    return paths[n_paths++];
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f && (size == 0 || fwrite(data, 1, size, f) == size) && fclose(f) == 0, "write %s", path);
}
