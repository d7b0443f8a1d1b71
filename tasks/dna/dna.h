/* dna.h: the DNA task's tokens and helpers (the task itself is the table ssm_task_dna, see
 * dna.c). Exposed for the tests and for programs that want the same encoding. */
#ifndef SSM_TASKS_DNA_H
#define SSM_TASKS_DNA_H

#include <stddef.h>
#include <stdint.h>

#include "ssm/task.h"

#include "../../loaders/fasta/fasta.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The character vocabulary of HyenaDNA and Caduceus (their CharacterTokenizer with the
 * characters A C G T N): 7 special tokens, then the bases. 12 tokens; the model pads to 16. */
enum {
    DNA_TOKEN_CLS = 0,
    DNA_TOKEN_SEP = 1,
    DNA_TOKEN_BOS = 2,      /* starts every scored record and every generated sequence */
    DNA_TOKEN_MASK = 3,
    DNA_TOKEN_PAD = 4,      /* fills a window longer than its region */
    DNA_TOKEN_RESERVED = 5,
    DNA_TOKEN_UNK = 6,
    DNA_TOKEN_A = 7,
    DNA_TOKEN_C = 8,
    DNA_TOKEN_G = 9,
    DNA_TOKEN_T = 10,
    DNA_TOKEN_N = 11,       /* N and every IUPAC ambiguity code; never scored */
    DNA_VOCAB_SIZE = 12,
};

extern const ssm_task_ops ssm_task_dna;

/* The task without a recipe (what ssm_task_dna.create does after reading the recipe): training
 * files (n_train 0: no data, for scoring and generation), optional validation files, the split
 * options, and the task options. *self is used with the functions of ssm_task_dna. */
ssm_status dna_task_open(const char *const *train, int n_train, const char *const *valid,
                         int n_valid, const fasta_set_options *opt, int mask_lowercase,
                         double rc_prob, void **self);

/* Make the task's batches masked-LM ones (task.objective: mlm): mask_rate of the scored bases
 * are chosen (0 turns it back to next-base prediction). */
void dna_task_set_mlm(void *self, double mask_rate);
/* BERT's masking of one sequence, in place (mlm.c): tokens (n) hold the bases, targets (n) the
 * base to predict at each scored position (-1 elsewhere). Each scored position is chosen with
 * probability rate; a chosen one becomes MASK with probability 0.8, a uniformly random base
 * (A C G T, perhaps its own) with 0.1, and stays with 0.1; an unchosen one gets target -1.
 * Draws only from rng: one uniform per scored position, two more per chosen one. */
void dna_mlm_mask(int32_t *tokens, int32_t *targets, int n, double rate, ssm_rng *rng);

/* The token of a base byte: A C G T (either case; U as T) -> 7..10, IUPAC ambiguity codes and
 * N -> 11; -1 for a byte that is not a nucleotide code. */
int32_t dna_token(int c);
/* 1 when a base counts in the loss: A C G T U, and uppercase only when mask_lowercase. */
int dna_scored(int c, int mask_lowercase);
/* Reverse complement in place, keeping case: A<->T, C<->G, U->A, R<->Y, K<->M, B<->V, D<->H;
 * S, W and N map to themselves. */
void dna_revcomp(char *seq, size_t n);
/* Reverse complement of tokens in place: A<->T, C<->G, N and special tokens unchanged. */
void dna_revcomp_tokens(int32_t *tokens, size_t n);

#ifdef __cplusplus
}
#endif
#endif
