/* bed.c: see bed.h. */
#include "bed.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_id(const void *a, const void *b) {
    return strcmp(((const bed_contig *)a)->id, ((const bed_contig *)b)->id);
}

void bed_sort_contigs(bed_contig *contigs, size_t n) { qsort(contigs, n, sizeof *contigs, by_id); }

ssize_t bed_find_contig(const bed_contig *contigs, size_t n, const char *id) {
    bed_contig key = {.id = (char *)id};
    const bed_contig *c = bsearch(&key, contigs, n, sizeof key, by_id);
    return c ? c - contigs : -1;
}

/* a non-negative integer of the whole field (digits only: strtoull alone would take leading
 * blanks such as \v or \f, and a sign after them) */
static int parse_size(const char *s, size_t *out) {
    if (*s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return -1;
    *out = (size_t)v;
    return 0;
}

/* a UCSC header line: the word, then a blank or the end */
static int header_line(const char *p, const char *word) {
    size_t n = strlen(word);
    return !strncmp(p, word, n) && (!p[n] || p[n] == ' ' || p[n] == '\t');
}

void bed_set_free(bed_set *s) {
    for (size_t i = 0; i < s->n; i++) free(s->regions[i].name);
    free(s->regions);
    free(s->by_contig);
    free(s->contig_first);
    memset(s, 0, sizeof *s);
}

/* the regions of each contig, in the BED's order */
static ssm_status index_regions(bed_set *s, size_t n_contigs) {
    s->contig_first = calloc(n_contigs + 1, sizeof(size_t));
    s->by_contig = malloc(s->n * sizeof(size_t));
    size_t *fill = calloc(n_contigs + 1, sizeof(size_t));
    if (!s->contig_first || !s->by_contig || !fill) {
        free(fill);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the regions");
    }
    for (size_t i = 0; i < s->n; i++) s->contig_first[s->regions[i].contig + 1]++;
    for (size_t c = 0; c < n_contigs; c++) s->contig_first[c + 1] += s->contig_first[c];
    for (size_t i = 0; i < s->n; i++) {
        size_t c = s->regions[i].contig;
        s->by_contig[s->contig_first[c] + fill[c]++] = i;
    }
    free(fill);
    return SSM_OK;
}

ssm_status bed_read(const char *path, const bed_contig *contigs, size_t n_contigs, const char *symbol,
                    bed_set *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, rcap = 0;
    ssize_t len;
    long no = 0;
    ssm_status s = SSM_OK;
    while (!s && (len = getline(&line, &cap, f)) >= 0) {
        no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (memchr(line, 0, (size_t)len)) { /* the fields would end there, the rest unread */
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%ld: a NUL byte in the line (a binary file?)", path, no);
            break;
        }
        char *p = line + strspn(line, " \t");
        if (!*p || *p == '#' || header_line(p, "track") || header_line(p, "browser")) continue;
        char *field[4] = {0};
        int nf = 0;
        char *save = NULL;
        for (char *t = strtok_r(line, "\t ", &save); t && nf < 4; t = strtok_r(NULL, "\t ", &save))
            field[nf++] = t;
        size_t start, end;
        if (nf < 3) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%ld: needs chrom, start and end (tab-separated), got "
                              "%d field%s", path, no, nf, nf == 1 ? "" : "s");
            break;
        }
        if (parse_size(field[1], &start) || parse_size(field[2], &end)) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%ld: start and end must be integers >= 0, got '%s' "
                              "and '%s'", path, no, field[1], field[2]);
            break;
        }
        if (end <= start) {
            s = ssm_set_error(SSM_ERR_FORMAT, "%s:%ld: %s:%zu-%zu is empty or reversed (end must be > "
                              "start; BED is 0-based, half-open)", path, no, field[0], start, end);
            break;
        }
        ssize_t c = bed_find_contig(contigs, n_contigs, field[0]);
        if (c < 0) {
            s = ssm_set_error(SSM_ERR_ARG, "%s:%ld: no record named '%s' in the input files (%zu "
                              "record%s, e.g. '%s')", path, no, field[0], n_contigs,
                              n_contigs == 1 ? "" : "s", n_contigs ? contigs[0].id : "");
            break;
        }
        if (end > contigs[c].length) {
            s = ssm_set_error(SSM_ERR_ARG, "%s:%ld: %s:%zu-%zu ends past the end of %s (%zu %ss)", path,
                              no, field[0], start, end, field[0], contigs[c].length, symbol);
            break;
        }
        if (out->n == rcap) {
            rcap = rcap ? 2 * rcap : 256;
            bed_region *v = realloc(out->regions, rcap * sizeof *v);
            if (!v) {
                s = ssm_set_error(SSM_ERR_NOMEM, "out of memory for the regions");
                break;
            }
            out->regions = v;
        }
        bed_region *r = &out->regions[out->n++];
        *r = (bed_region){(size_t)c, start, end, field[3] ? strdup(field[3]) : NULL};
    }
    if (!s && ferror(f)) s = ssm_set_error(SSM_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (!s && out->n == 0) s = ssm_set_error(SSM_ERR_FORMAT, "%s: lists no interval", path);
    if (!s) s = index_regions(out, n_contigs);
    if (s) bed_set_free(out);
    return s;
}
