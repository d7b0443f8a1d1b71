/* bigwig.h: ssm-score --bigwig, per-base values as a bigWig track through libBigWig.
 *
 * A bigWig declares its chromosomes and their sizes before any value, and ssm-score learns a
 * record's length only once it has read it. So the values are kept in a scratch file beside the
 * output (4 bytes a base, removed from its folder as soon as it is opened) and the bigWig is
 * written at the end: the chromosomes (the records, their lengths from the records) sorted by
 * name as UCSC's tools expect, each base with a value as one item of span 1, a base without a
 * value (NaN: not scored) absent. */
#ifndef SSM_BIN_BIGWIG_H
#define SSM_BIN_BIGWIG_H

#include <stddef.h>

#include "ssm/ssm.h"

typedef struct bw_track bw_track;

/* 1 when this build writes bigWig (libBigWig was found). */
int bw_available(void);
/* Start a track to be written at path (the scratch file goes beside it). */
ssm_status bw_track_open(const char *path, bw_track **out);
/* One chromosome: its name and length values (NaN: no value). */
ssm_status bw_track_add(bw_track *t, const char *chrom, size_t length, const float *values);
/* Write the bigWig to path. */
ssm_status bw_track_write(bw_track *t, const char *path);
void bw_track_free(bw_track *t);

#endif
