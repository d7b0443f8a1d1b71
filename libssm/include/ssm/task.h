/* task.h: the task plugin ABI. A task brings everything modality-specific: it reads its data,
 * encodes it to tokens, serves training/validation batches, reads records to score and decodes
 * generated tokens. The backbone sees only tokens.
 *
 * A task is one table of functions (ssm_task_ops) with its name, the ABI version it was built
 * for and the table's size. Built-in tasks register in tasks/registry.c; an external task is a
 * shared object that defines the table and exports it with SSM_TASK_PLUGIN(table); ssm-train
 * loads it with dlopen (a path in the recipe, or a name searched on SSM_PLUGIN_PATH). Version 2
 * (this one) reads version 1 tables as they are; fields past a plugin's struct_size are NULL,
 * so a later ssm that appends fields keeps loading today's plugins, and a newer version is
 * refused with a message to rebuild. The programs find a task (built in or a plugin) with
 * ssm_task_find, which the tasks define (tasks/registry.h), not libssm.
 * docs/writing-a-task.md walks through two.
 *
 * Version 2 adds what the backbone reads and predicts besides tokens (model_io: float inputs,
 * regression or classify heads, their losses), float features and targets in the batch, the
 * task's own validation metrics, and scoring and generating whole files by the task.
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

#define SSM_TASK_ABI_VERSION 2
/* Start every table with it: .abi_version and .struct_size of the task.h compiled against. */
#define SSM_TASK_OPS_HEADER .abi_version = SSM_TASK_ABI_VERSION, .struct_size = sizeof(ssm_task_ops)

typedef enum ssm_split { SSM_SPLIT_TRAIN = 0, SSM_SPLIT_VALID = 1 } ssm_split;

/* One batch of B sequences of L backbone positions, owned by the caller, who allocates what the
 * task's model_io asks for (the rest is NULL):
 *   tokens    (B, L)            token inputs (io.features == 0)
 *   targets   (B, L)            LM head: the token to predict at each position (the next one, or
 *                               the original under a mask), -1 where not scored (N bases,
 *                               padding, masked lowercase...); classify head: (B) one class per
 *                               sequence, -1 not scored
 *   features  (B, L * P, F)     float inputs (io.features = F, io.patch = P)
 *   values    (B, L, F')        regression targets (io.outputs = F'), NaN where not scored */
typedef struct ssm_batch {
    int B, L;
    int32_t *tokens;
    int32_t *targets;
    float *features;  /* v2 */
    float *values;    /* v2 */
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
    uint32_t abi_version;    /* SSM_TASK_ABI_VERSION (SSM_TASK_OPS_HEADER sets both) */
    uint32_t struct_size;    /* sizeof(ssm_task_ops) when built; 0 in version 1 tables */
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

    /* ---- version 2 ---- */
    /* What the model reads and predicts (ssm.h, ssm_io_config), and the backbone positions of
     * its sequences: *seq_len comes in as train.seq_len; a task whose sequences have their own
     * length (a lookback window in patches) sets it. NULL: tokens in, the tied LM head. */
    ssm_status (*model_io)(void *self, ssm_io_config *io, int *seq_len);
    /* Validation metrics of the task's own (NULL-terminated names, e.g. {"mse", "mae"}):
     * metrics() fills values[i] for one validation batch from the head's outputs
     * (ssm_model_outputs); ssm-train prints and logs the mean over the validation batches
     * beside the loss. */
    const char *const *metric_names;
    ssm_status (*metrics)(void *self, const ssm_batch *batch, const float *outputs,
                          double *values);
    /* ssm-score and ssm-generate hand a whole file to the task when it scores or generates
     * its own way (a forecast of a CSV, a table of errors beside baselines): the task runs the
     * model (ssm_forward_io) and writes its report or its output to out. */
    ssm_status (*score_file)(void *self, ssm_model *model, const char *path, FILE *out);
    ssm_status (*generate_file)(void *self, ssm_model *model, const char *path, FILE *out);
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
