/* seqclass.h: labelled DNA sequences, cross-validation folds and classification metrics, shared
 * by the dna-classify task (seqclass.c) and the k-mer baseline (bench/kmer_baseline.c).
 *
 * Files (labelled.c), detected by their first non-blank byte:
 *   TSV    one sequence a line, `sequence<TAB>label`; a first line whose first field is not
 *          nucleotide codes (`sequence<TAB>label`) is a header; blank lines are skipped.
 *   FASTA  `>id ... label=NAME ...` or, without label=, the header's last word when it has two
 *          or more (`>seq7 promoter`); the sequence lines follow.
 * Bases: A C G T U, N and the IUPAC codes, either case (dna_token). Errors: FILE:LINE:COL. */
#ifndef SSM_TASKS_SEQCLASS_H
#define SSM_TASKS_SEQCLASS_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/ssm.h"

typedef struct sc_set {
    int n;
    char **ids;       /* (n) FASTA name, or the TSV line number */
    char **seqs;      /* (n) the bases as read */
    int *lens;        /* (n) */
    char **labels;    /* (n) as read; NULL where the record has none (scoring only) */
    int *lines;       /* (n) the line each record starts on */
    int32_t *classes; /* (n) the class id of each label, -1 for none (sc_set_classes) */
    char *path;
} sc_set;

/* Read a file; labels_required: every record must have a label (training data). */
ssm_status sc_set_read(const char *path, int labels_required, sc_set *out);
void sc_set_free(sc_set *s);
/* Class names: the distinct labels, sorted by strcmp (malloc'd array of strings into s). */
ssm_status sc_set_label_names(const sc_set *s, const char ***names, int *n);
/* s->classes from the names; a label not among them is an error at its FILE:LINE:COL when
 * strict, else class -1. */
ssm_status sc_set_classes(sc_set *s, const char *const *names, int n_names, int strict);

/* Stratified folds, deterministic in seed: each class's records shuffled (Fisher-Yates on
 * ssm_rng) and dealt round-robin, one counter across the classes, so that the fold sizes
 * differ by at most one and each fold holds each class in proportion. fold_of (n) in [0, k). */
void sc_folds(const int32_t *classes, int n, int n_classes, int k, uint64_t seed, int *fold_of);

/* Metrics of n predictions: probs (n, C) row-major, truth (n) in [0, C) (rows with truth < 0
 * are left out). predicted = the argmax (the lower class on ties).
 *   accuracy  the share predicted right
 *   mcc       Matthews' correlation; for C > 2 Gorodkin's R_K (sklearn's matthews_corrcoef);
 *             0 when a marginal is constant
 *   auroc     C = 2: the area under the ROC of probs[:, 1] (ties count one half, the
 *             Mann-Whitney U); C > 2: the mean over classes of one-vs-rest areas (classes
 *             without positives or negatives left out); NaN when none can be computed */
typedef struct sc_metrics {
    double accuracy, mcc, auroc;
    int n;
} sc_metrics;
sc_metrics sc_evaluate(const double *probs, const int32_t *truth, int n, int C);
/* The binary area: scores (n), positive (n) 0/1. NaN without positives or negatives. */
double sc_auroc_binary(const double *scores, const int *positive, int n);

#endif
