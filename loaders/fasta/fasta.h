/* fasta.h: FASTA and FASTQ through htslib, for training and for scoring.
 *
 * Two ways in:
 *
 *  - fasta_set: a set of files opened for training. It knows every record's name and length,
 *    splits them into training and validation regions (the last valid_fraction of each record,
 *    or a BED file), draws random windows weighted by region length from an ssm_rng, and
 *    fetches bases by position. Plain and bgzip files are read through a faidx index (.fai,
 *    and .gzi for bgzip): an existing index is used as it is; a missing or stale one is built
 *    beside the file when its folder is writable, else in a private temporary folder that is
 *    removed at once (the index then lives only in memory). Such files are never loaded whole.
 *    A plain gzip file (not bgzip) cannot be indexed: its bases are held in memory (one byte
 *    per base), which is fine for genomes that fit; recompress large ones with `bgzip`.
 *
 *  - fasta_reader: records one after the other from a file or stdin ("-"), plain, gzip or
 *    bgzip, for scoring: name, bases and (FASTQ) quality.
 *
 * Everything read is checked: a file that is not FASTA/FASTQ, an empty record, a header with no
 * name, a FASTQ quality of the wrong length, bytes that are not IUPAC nucleotide codes, truncated
 * or corrupt compressed data and duplicate record names are errors whose message names the file
 * and the line ("data/x.fa:12: record 'chr2': ..."). Windows (CRLF) line endings are accepted.
 * Bases are returned as they are in the file (case kept, IUPAC codes kept): the task decides
 * what they mean. */
#ifndef SSM_LOADERS_FASTA_H
#define SSM_LOADERS_FASTA_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/ssm.h"
#include "ssm/task.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 for the bytes a sequence may hold: the IUPAC nucleotide codes A C G T U R Y S W K M B D H
 * V N in either case. */
int fasta_is_base(int c);

/* ---- streaming reader (scoring) ---------------------------------------------------------- */

typedef struct fasta_reader fasta_reader;

typedef struct fasta_entry {
    const char *name;  /* the first word of the header */
    const char *seq;   /* (length) bases, NUL-terminated; NULL when opened with store_seq 0 */
    size_t length;
    const char *qual;  /* (length) FASTQ qualities, NUL-terminated; NULL for FASTA */
    int64_t line;      /* line of the header (1-based) */
} fasta_entry;

/* Open path ("-" = stdin); plain, gzip and bgzip are recognised from the content. */
ssm_status fasta_reader_open(const char *path, fasta_reader **out);
/* The next record (valid until the next call), or *done = 1 after the last one. A file with no
 * record at all is an error. */
ssm_status fasta_reader_next(fasta_reader *r, fasta_entry *e, int *done);
/* 0: count and check the bases without keeping them (e->seq and e->qual are NULL). */
void fasta_reader_store(fasta_reader *r, int store_seq);
/* '>' for FASTA, '@' for FASTQ, 0 before the first record. */
int fasta_reader_format(const fasta_reader *r);
void fasta_reader_close(fasta_reader *r);

/* ---- training set ------------------------------------------------------------------------ */

typedef struct fasta_set fasta_set;

typedef struct fasta_set_options {
    double valid_fraction; /* tail of each record held out for validation; 0.05 by default */
    const char *bed;       /* NULL, or a BED file of regions: chrom start end [train|valid|test] */
    int write_index;       /* 1 (default): write a missing or stale .fai/.gzi beside the file when
                            * its folder is writable; 0: never write, keep the index in memory */
} fasta_set_options;

/* A record of the set. */
typedef struct fasta_record {
    const char *name;
    int64_t length;
    int file; /* index into the set's files (training files first, then validation files) */
} fasta_record;

/* A half-open interval [start, end) of a record. */
typedef struct fasta_region {
    int record;
    int64_t start, end;
} fasta_region;

/* A window drawn by fasta_set_draw: length bases of record from start; length < the width
 * asked for only when the whole region is shorter. */
typedef struct fasta_window {
    int region, record;
    int64_t start, length;
} fasta_window;

typedef enum fasta_access {
    FASTA_ACCESS_FAIDX = 0,  /* random access through a .fai (and .gzi) index */
    FASTA_ACCESS_MEMORY = 1, /* held in memory: plain gzip, or a layout faidx cannot index */
} fasta_access;

/* The defaults: valid_fraction 0.05, no BED, write_index 1. */
fasta_set_options fasta_set_options_default(void);

/* Open training files (and optional validation files, whose records then all go to the
 * validation split, while the training files' records all go to training). Without validation
 * files and without a BED, each record's last floor(valid_fraction * length) bases are the
 * validation split: the same on every run. With a BED file only its intervals are used: those
 * named 'train' or 'valid' (or 'validation') go to that split, 'test' to neither, unnamed ones
 * are split as whole records are. A record name may appear only once across all files. */
ssm_status fasta_set_open(const char *const *train, int n_train, const char *const *valid,
                          int n_valid, const fasta_set_options *opt, fasta_set **out);
void fasta_set_free(fasta_set *set);

int fasta_set_n_files(const fasta_set *set);
const char *fasta_set_file_path(const fasta_set *set, int file);
fasta_access fasta_set_file_access(const fasta_set *set, int file);
int fasta_set_n_records(const fasta_set *set);
const fasta_record *fasta_set_record(const fasta_set *set, int i);
/* Regions of a split, in file/record/position order. */
int fasta_set_n_regions(const fasta_set *set, ssm_split split);
const fasta_region *fasta_set_region(const fasta_set *set, ssm_split split, int i);
/* Bases in a split (the sum of its regions' lengths). */
int64_t fasta_set_split_bases(const fasta_set *set, ssm_split split);

/* A random window of width bases from the split: a region with probability proportional to
 * its length, then a uniform start inside it. Draws only from rng. */
ssm_status fasta_set_draw(const fasta_set *set, ssm_split split, int64_t width, ssm_rng *rng,
                          fasta_window *w);
/* Copy len bases of record from start into buf (len bytes, no NUL added). */
ssm_status fasta_set_fetch(fasta_set *set, int record, int64_t start, int64_t len, char *buf);

/* ---- file lists --------------------------------------------------------------------------- */

/* Expand shell patterns (*, ?, [...]) into sorted paths; a name without pattern characters is
 * kept as it is (so that opening it reports a missing file). A pattern matching nothing is an
 * error. *paths (NULL-terminated) is freed with fasta_paths_free. */
ssm_status fasta_glob(const char *const *patterns, int n, char ***paths, int *n_paths);
void fasta_paths_free(char **paths);

#ifdef __cplusplus
}
#endif
#endif
