/* fuzz_driver.c: the standalone main of the fuzz targets; see fuzz_driver.h. */
#include "fuzz_driver.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

uint64_t fuzz_next(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static int read_file(const char *path, fuzz_input *in) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    in->data = malloc(1); /* never NULL, so that an empty file can be copied from */
    in->len = 0;
    size_t cap = 1;
    for (int c; (c = fgetc(f)) != EOF;) {
        if (in->len == cap) in->data = realloc(in->data, cap = 2 * cap < 1024 ? 1024 : 2 * cap);
        in->data[in->len++] = (unsigned char)c;
    }
    fclose(f);
    return 0;
}

void fuzz_add_file(const char *path, fuzz_input **ins, int *n) {
    *ins = realloc(*ins, (size_t)(*n + 1) * sizeof **ins);
    if (read_file(path, &(*ins)[*n])) {
        fprintf(stderr, "%s: cannot read %s\n", fuzz_this_target.name, path);
        exit(1);
    }
    (*n)++;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Files of a directory in name order, skipping index files (.fai, .gzi): they are not inputs. */
void fuzz_add_path(const char *path, fuzz_input **ins, int *n) {
    DIR *d = opendir(path);
    if (!d) {
        fuzz_add_file(path, ins, n);
        return;
    }
    char **names = NULL;
    int m = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.') continue;
        if (l > 4 && (!strcmp(e->d_name + l - 4, ".fai") || !strcmp(e->d_name + l - 4, ".gzi"))) continue;
        names = realloc(names, (size_t)(m + 1) * sizeof *names);
        size_t len = strlen(path) + l + 2;
        names[m] = malloc(len);
        snprintf(names[m++], len, "%s/%s", path, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)m, sizeof *names, by_name);
    for (int i = 0; i < m; i++) {
        fuzz_add_path(names[i], ins, n);
        free(names[i]);
    }
    free(names);
}

size_t fuzz_mutate_bytes(const fuzz_input *in, const fuzz_input *other, unsigned char *buf,
                         size_t cap, const char *punct, size_t n_punct) {
    size_t len = in->len < cap ? in->len : cap;
    memcpy(buf, in->data, len);
    int ops = 1 + (int)(fuzz_next() % 4);
    for (int k = 0; k < ops; k++) {
        size_t at = len ? fuzz_next() % len : 0;
        switch (fuzz_next() % 7) {
        case 0: /* bit flip */
            if (len) buf[at] ^= (unsigned char)(1u << (fuzz_next() % 8));
            break;
        case 1: /* punctuation */
            if (len) buf[at] = (unsigned char)punct[fuzz_next() % n_punct];
            break;
        case 2: /* insert */
            if (len < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = fuzz_next() % 4 ? (unsigned char)punct[fuzz_next() % n_punct] : (unsigned char)fuzz_next();
                len++;
            }
            break;
        case 3: { /* delete a span */
            size_t n = len - at < 16 ? len - at : 1 + fuzz_next() % 16;
            memmove(buf + at, buf + at + n, len - at - n);
            len -= n;
            break;
        }
        case 4: { /* repeat a span */
            size_t n = 1 + fuzz_next() % 32;
            if (at + n > len) n = len - at;
            if (len + n <= cap) {
                memmove(buf + at + n, buf + at, len - at);
                len += n;
            }
            break;
        }
        case 5: /* truncate */
            len = at;
            break;
        case 6: { /* splice a span of another input */
            if (!other->len) break;
            size_t from = fuzz_next() % other->len, n = 1 + fuzz_next() % 64;
            if (from + n > other->len) n = other->len - from;
            if (at + n > cap) n = cap - at;
            memcpy(buf + at, other->data + from, n);
            if (at + n > len) len = at + n;
            break;
        }
        }
    }
    return len;
}

/* The input in a buffer of its exact size, so that ASan sees reads past its end. */
static void run_copy(const unsigned char *data, size_t len) {
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}

int main(int argc, char **argv) {
    const fuzz_target *t = &fuzz_this_target;
    fuzz_input *ins = NULL;
    int n = 0;
    if (t->seeds) t->seeds(&ins, &n);
    int generated = n;
    for (int i = 1; i < argc; i++) fuzz_add_path(argv[i], &ins, &n);
    if (!n) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    const char *seed = getenv("SSM_FUZZ_SEED"); /* another deterministic stream of mutations */
    if (seed && strtoull(seed, NULL, 0)) rng ^= strtoull(seed, NULL, 0) * 0xbf58476d1ce4e5b9ULL;
    if (!rng) rng = 1;
    const char *env = getenv("SSM_FUZZ_MUTATIONS");
    long mutations = env ? atol(env) : t->mutations;
    size_t cap = 1 << 16, tr = t->truncations;
    unsigned char *buf = malloc(cap);
    long runs = 0;
    for (int i = 0; i < n; i++) {
        run_copy(ins[i].data, ins[i].len), runs++;
        for (size_t k = 0; k < tr && k < ins[i].len; k++) { /* truncations, the short ones all */
            size_t len = ins[i].len <= tr ? k : k * ins[i].len / tr;
            run_copy(ins[i].data, len), runs++;
        }
        for (long m = 0; m < mutations; m++) {
            const fuzz_input *other = &ins[fuzz_next() % (uint64_t)n];
            size_t len = t->mutate ? t->mutate(&ins[i], other, buf, cap)
                                   : fuzz_mutate_bytes(&ins[i], other, buf, cap, t->punct, strlen(t->punct));
            run_copy(buf, len), runs++;
        }
    }
    if (t->summary)
        t->summary(n, generated, runs);
    else if (t->reads)
        printf("%s: %d inputs, %ld runs, %ld reads succeeded, no failure\n", t->name, n, runs, *t->reads);
    else
        printf("%s: %d inputs, %ld runs, no failure\n", t->name, n, runs);
    for (int i = 0; i < n; i++) free(ins[i].data);
    free(ins);
    free(buf);
    if (t->cleanup) t->cleanup();
    return 0;
}
