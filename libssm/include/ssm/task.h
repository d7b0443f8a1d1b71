/* task.h: the task plugin ABI. A task brings everything modality-specific: it reads its data,
 * encodes it to tokens, serves training/validation batches, reads records to score and decodes
 * generated tokens. The backbone sees only tokens.
 *
 * A task is one table of functions (ssm_task_ops) with its name and the ABI version it was
 * built for. Built-in tasks register in tasks/registry.c; an external task is a shared object
 * that defines the table and exports it with SSM_TASK_PLUGIN(table); ssm-train loads it with
 * dlopen (a path in the recipe, or a name searched on SSM_PLUGIN_PATH) and refuses it when its
 * abi_version differs from SSM_TASK_ABI_VERSION. The programs find a task (built in or a
 * plugin) with ssm_task_find, which the tasks define (tasks/registry.h), not libssm.
 * docs/writing-a-task.md walks through one.
 *
 * Functions a task cannot do are NULL (a task with no encode cannot take text prompts, say);
 * the programs say so to the user. Every function returns an ssm_status and sets the message
 * with ssm_set_error, naming the file (and record or line) it is about. */
#ifndef SSM_TASK_H
#define SSM_TASK_H

#include <stdio.h>

#include "ssm/export.h"
#include "ssm/recipe.h"
#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SSM_TASK_ABI_VERSION 1

typedef enum ssm_split { SSM_SPLIT_TRAIN = 0, SSM_SPLIT_VALID = 1 } ssm_split;

/* One batch (B, L): targets[b, l] is the token that follows tokens[b, l], or -1 where the
 * position is not scored (N bases, padding, masked lowercase...). Owned by the caller. */
typedef struct ssm_batch {
    int B, L;
    int32_t *tokens;  /* (B, L) */
    int32_t *targets; /* (B, L) */
} ssm_batch;

/* One record to score (a FASTA record, an audio file, a text file...). The task owns the
 * arrays until the next call of next_record. */
typedef struct ssm_record {
    const char *id;          /* record name or file path */
    size_t length;           /* symbols in the record (tokens is length + 1 long: BOS first) */
    const int32_t *tokens;   /* (length + 1): BOS, then the record's symbols */
    const uint8_t *scored;   /* (length) 1 where symbol i is scored, or NULL when all are */
    double seconds;          /* duration for audio, else 0 */
} ssm_record;

typedef struct ssm_task_ops {
    uint32_t abi_version;    /* SSM_TASK_ABI_VERSION */
    const char *name;        /* the recipe's task.name: "dna", "lm", "audio", ... */
    const char *description; /* one line for --help and the model summary */
    const char *symbol;      /* what one token is, for metrics: "base", "byte", "sample" */
    int baseline_order;      /* k of the order-k Markov baseline ssm-train prints */

    /* Create from the recipe: the task section (options; name is already read) and the data
     * section. Read every key you accept with the ssm_node_* getters: ssm-train reports keys
     * left unread as unknown. May open the data files now. data is NULL when the program only
     * scores or generates (ssm-score, ssm-generate): then open no training data. */
    ssm_status (*create)(const ssm_recipe *recipe, ssm_node *task, ssm_node *data, void **self);
    void (*destroy)(void *self);
    /* Tokens the model must embed (the model pads it to a multiple of 8). */
    int (*vocab_size)(void *self);
    /* Fill batch (B, L already set) from the split, drawing only from rng, so that the same
     * rng state gives the same batch (exact resume, fixed validation batches). */
    ssm_status (*next_batch)(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch);
    /* The symbols of a split for the Markov baseline (at most max symbols, in order; -1 marks
     * a boundary or an unscored symbol), and the alphabet size. The task owns *symbols. */
    ssm_status (*baseline_symbols)(void *self, ssm_split split, size_t max,
                                   const int32_t **symbols, size_t *n, int *alphabet);

    /* Scoring: open a file of records ("-" for stdin), then next_record until it gives
     * *done = 1. NULL when the task cannot score files. */
    ssm_status (*open_records)(void *self, const char *path, void **reader);
    ssm_status (*next_record)(void *reader, ssm_record *record, int *done);
    void (*close_records)(void *reader);

    /* Generation: the token that starts a sequence; the prompt text turned into tokens (task
     * allocates *tokens, caller frees); tokens written out in the task's format (FASTA,
     * text, WAV...). */
    int32_t (*bos_token)(void *self);
    ssm_status (*encode)(void *self, const char *text, size_t len, int32_t **tokens, size_t *n);
    ssm_status (*write_tokens)(void *self, const int32_t *tokens, size_t n, FILE *out);

    /* Strand-aware tasks (DNA): the reverse complement of a record's symbols (no BOS), in
     * place; ssm-score --strand both scores it too. NULL for tasks without strands. */
    void (*reverse_complement)(void *self, int32_t *symbols, size_t n);
    /* 1 when ssm-generate may produce this token (a symbol the task writes out: not BOS,
     * padding or other special tokens). NULL: every token but bos_token. */
    int (*can_generate)(void *self, int32_t token);
} ssm_task_ops;

/* The entry point an external plugin exports: `SSM_TASK_PLUGIN(my_task_ops)`. */
#define SSM_TASK_PLUGIN(ops)                                                          \
    __attribute__((visibility("default"))) const ssm_task_ops *ssm_task_plugin_entry(void) { \
        return &(ops);                                                                \
    }
typedef const ssm_task_ops *(*ssm_task_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
