/* bigwig.c: see bigwig.h. */
#include "bigwig.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SSM_HAVE_BIGWIG
#include <bigWig.h>

typedef struct bw_chrom {
    char *name;
    uint64_t length;
    off_t offset; /* of its values in the scratch file */
} bw_chrom;

struct bw_track {
    FILE *scratch;
    bw_chrom *chroms;
    size_t n, cap;
    off_t end;
};

int bw_available(void) { return 1; }

ssm_status bw_track_open(const char *path, bw_track **out) {
    *out = NULL;
    bw_track *t = calloc(1, sizeof *t);
    size_t n = strlen(path) + 16;
    char *scratch = malloc(n);
    if (!t || !scratch) {
        free(t);
        free(scratch);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    snprintf(scratch, n, "%s.values.tmp", path);
    t->scratch = fopen(scratch, "w+b");
    int err = errno;
    if (t->scratch) unlink(scratch); /* it lives while open, and goes with the process */
    ssm_status s = t->scratch ? SSM_OK : ssm_set_error(SSM_ERR_IO, "%s: cannot write: %s", scratch, strerror(err));
    free(scratch);
    if (s) {
        free(t);
        return s;
    }
    *out = t;
    return SSM_OK;
}

ssm_status bw_track_add(bw_track *t, const char *chrom, size_t length, const float *values) {
    if (length == 0) return SSM_OK; /* nothing to declare */
    if ((uint64_t)length > UINT32_MAX)
        return ssm_set_error(SSM_ERR_ARG, "%s: %zu positions, more than a bigWig chromosome can hold "
                             "(%u)", chrom, length, UINT32_MAX);
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        bw_chrom *c = realloc(t->chroms, cap * sizeof *c);
        if (!c) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        t->chroms = c, t->cap = cap;
    }
    bw_chrom *c = &t->chroms[t->n];
    if (!(c->name = strdup(chrom))) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    c->length = length;
    c->offset = t->end;
    t->n++;
    if (fwrite(values, sizeof(float), length, t->scratch) != length)
        return ssm_set_error(SSM_ERR_IO, "cannot write the bigWig's scratch file: %s", strerror(errno));
    t->end += (off_t)(length * sizeof(float));
    return SSM_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const bw_chrom *)a)->name, ((const bw_chrom *)b)->name);
}

ssm_status bw_track_write(bw_track *t, const char *path) {
    /* UCSC's readers look chromosomes up by binary search over their names: sort them */
    qsort(t->chroms, t->n, sizeof *t->chroms, by_name);
    for (size_t i = 1; i < t->n; i++)
        if (!strcmp(t->chroms[i].name, t->chroms[i - 1].name))
            return ssm_set_error(SSM_ERR_ARG, "%s: two records are named '%s', and a bigWig holds each "
                                 "chromosome once", path, t->chroms[i].name);
    if (fflush(t->scratch))
        return ssm_set_error(SSM_ERR_IO, "cannot write the bigWig's scratch file: %s", strerror(errno));
    enum { PIECE = 1 << 16 };
    const char **names = malloc((t->n + 1) * sizeof *names);
    uint32_t *lengths = malloc((t->n + 1) * sizeof *lengths), *starts = malloc(PIECE * sizeof *starts);
    float *in = malloc(PIECE * sizeof *in), *vals = malloc(PIECE * sizeof *vals);
    ssm_status s = SSM_OK;
    bigWigFile_t *fp = NULL;
    int init = 0;
    if (!names || !lengths || !starts || !in || !vals) {
        s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < t->n; i++) names[i] = t->chroms[i].name, lengths[i] = (uint32_t)t->chroms[i].length;
    if (bwInit(1 << 17)) {
        s = ssm_set_error(SSM_ERR_IO, "libBigWig cannot start (bwInit)");
        goto done;
    }
    init = 1;
    if (!(fp = bwOpen((char *)path, NULL, "w")) || bwCreateHdr(fp, 10) ||
        !(fp->cl = bwCreateChromList(names, lengths, (int64_t)t->n)) || bwWriteHdr(fp)) {
        s = ssm_set_error(SSM_ERR_IO, "%s: cannot write the bigWig header", path);
        goto done;
    }
    for (size_t i = 0; i < t->n && !s; i++) {
        const bw_chrom *c = &t->chroms[i];
        if (fseeko(t->scratch, c->offset, SEEK_SET)) {
            s = ssm_set_error(SSM_ERR_IO, "cannot read the bigWig's scratch file: %s", strerror(errno));
            break;
        }
        int first = 1;
        for (uint64_t a = 0; a < c->length && !s; a += PIECE) {
            size_t len = c->length - a < PIECE ? (size_t)(c->length - a) : PIECE, k = 0;
            if (fread(in, sizeof(float), len, t->scratch) != len) {
                s = ssm_set_error(SSM_ERR_IO, "cannot read the bigWig's scratch file");
                break;
            }
            for (size_t x = 0; x < len; x++)
                if (!isnan(in[x])) starts[k] = (uint32_t)(a + x), vals[k++] = in[x];
            if (!k) continue;
            int bad = first ? bwAddIntervalSpans(fp, c->name, starts, 1, vals, (uint32_t)k)
                            : bwAppendIntervalSpans(fp, starts, vals, (uint32_t)k);
            first = 0;
            if (bad) s = ssm_set_error(SSM_ERR_IO, "%s: cannot write the values of %s", path, c->name);
        }
    }
done:
    if (fp) bwClose(fp); /* writes the index and the zoom levels */
    if (init) bwCleanup();
    free(names);
    free(lengths);
    free(starts);
    free(in);
    free(vals);
    return s;
}

void bw_track_free(bw_track *t) {
    if (!t) return;
    if (t->scratch) fclose(t->scratch);
    for (size_t i = 0; i < t->n; i++) free(t->chroms[i].name);
    free(t->chroms);
    free(t);
}

#else /* no libBigWig in this build */

struct bw_track {
    int unused;
};

int bw_available(void) { return 0; }

ssm_status bw_track_open(const char *path, bw_track **out) {
    *out = NULL;
    return ssm_set_error(SSM_ERR_ARG, "%s: this build writes no bigWig: it was built without "
                         "libBigWig (Debian: apt-get install libbigwig-dev, then rebuild)", path);
}

ssm_status bw_track_add(bw_track *t, const char *chrom, size_t length, const float *values) {
    return ssm_set_error(SSM_ERR_ARG, "no bigWig support");
}

ssm_status bw_track_write(bw_track *t, const char *path) {
    return ssm_set_error(SSM_ERR_ARG, "no bigWig support");
}

void bw_track_free(bw_track *t) { free(t); }

#endif
