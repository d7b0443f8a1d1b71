/* vcf_score.h: ssm-score --vcf: the log-likelihood ratio of each variant of a VCF/BCF file under
 * a trained DNA model, written back into the file as INFO fields (docs/genomics.md). */
#ifndef SSM_BIN_VCF_SCORE_H
#define SSM_BIN_VCF_SCORE_H

#include "cli.h"

typedef struct vcf_options {
    const char *vcf;        /* input: VCF, VCF.gz or BCF; "-" is stdin */
    const char *reference;  /* FASTA (plain, gzip or bgzip), read through faidx */
    const char *output;     /* NULL or "-": VCF text on stdout; *.vcf.gz: bgzip + .tbi; *.bcf: + .csi */
    int left, right;        /* --flank LEFT:RIGHT: bases of context before the allele, of flank after */
    int context_step;       /* --context-step S: contexts start at multiples of S (0: LEFT bases) */
    int batch;              /* rows of a forward pass */
    int window;             /* positions of a forward pass at most (the state is carried past it) */
    const char *command;    /* the command line, for the ##ssm-score_command header line */
} vcf_options;

/* The defaults of --flank. */
enum { VCF_DEFAULT_LEFT = 512, VCF_DEFAULT_RIGHT = 64, VCF_DEFAULT_BATCH = 64 };

/* Score every variant of opt->vcf with the trained model tr (a dna task) and write the records,
 * with the scores added, to opt->output. Returns the exit status (0, CLI_EXIT_INPUT); messages go
 * to stderr. Nothing is left at opt->output (nor its index) unless the whole run succeeded. */
int vcf_score_run(cli_trained *tr, const vcf_options *opt);

#endif
