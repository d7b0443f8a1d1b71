/* bed.h: the intervals of a BED file on named records (ssm-embed --regions): chrom, start, end
 * (0-based, half-open) and an optional name; further columns are ignored; blank lines, '#'
 * comments and track/browser lines are skipped. Every interval must lie on one of the records
 * given: an unknown record or an interval past its end is an error naming the line
 * ("r.bed:2: chr3:10-40 ends past the end of chr3 (37 bases)"). */
#ifndef SSM_BIN_BED_H
#define SSM_BIN_BED_H

#include <stddef.h>
#include <sys/types.h>

#include "ssm/ssm.h"

typedef struct bed_contig {
    char *id;
    size_t length;
    int file; /* the caller's: which input file holds it */
} bed_contig;

typedef struct bed_region {
    size_t contig, start, end;
    char *name; /* the BED's 4th column, or NULL */
} bed_region;

typedef struct bed_set {
    bed_region *regions; /* (n) in the file's order */
    size_t n;
    size_t *by_contig, *contig_first; /* regions of contig c: by_contig[contig_first[c]..[c + 1]) */
} bed_set;

/* Contigs sorted by id: the order bed_find_contig and bed_read need. */
void bed_sort_contigs(bed_contig *contigs, size_t n);
/* The index of the contig of that id, or -1. */
ssize_t bed_find_contig(const bed_contig *contigs, size_t n, const char *id);
/* Read path against the contigs (sorted); symbol names what their lengths count ("base"), for
 * the messages. On error *out is empty and the message says why. */
ssm_status bed_read(const char *path, const bed_contig *contigs, size_t n_contigs, const char *symbol,
                    bed_set *out);
void bed_set_free(bed_set *s);

#endif
