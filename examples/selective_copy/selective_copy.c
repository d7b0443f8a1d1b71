/* selective_copy.c: the Selective Copying task of the Mamba paper (Gu and Dao 2023, section 3.1
 * and appendix E.1) as an external ssm task plugin. docs/writing-a-task.md walks through this
 * file; it is the example to copy for a task of your own.
 *
 * A sequence of seq_len tokens (4096 by default): n_data data tokens (16) at random positions
 * of the first seq_len - n_data positions, every other position there a noise (blank) token;
 * then n_data marker tokens. At the k-th marker the model must output the k-th data token. Only
 * those n_data positions are scored: a model can solve it only by remembering what it saw
 * and skipping the noise, which is what the selection mechanism (input-dependent dt, B, C)
 * makes possible and what a time-invariant convolution or recurrence cannot do.
 *
 * Tokens (vocab 16 by default, as in the paper): 0 = noise, 1 = marker, 2 .. vocab-1 = data.
 *
 * Recipe:
 *   task:
 *     name: selective_copy      # or a path: build/examples/selective_copy/selective_copy.so
 *     seq_len: 4096             # tokens per sequence; train.seq_len must be the same
 *     n_data: 16                # data tokens to copy
 *     vocab: 16                 # noise + marker + (vocab - 2) data tokens
 * It reads no files: there is no data section (the data are drawn from the rng).
 *
 * This file includes only ssm/task.h (and what it includes); the few libssm functions it
 * calls (ssm_set_error, ssm_rng_below, the ssm_node_* getters) are found at load time in the
 * program that loads it. */
#include <stdlib.h>
#include <string.h>

#include <ssm/task.h>

enum { TOKEN_NOISE = 0, TOKEN_MARKER = 1, FIRST_DATA = 2 };

typedef struct copy_task {
    int seq_len, n_data, vocab;
    int *positions; /* (n_data) scratch: where the data tokens go */
} copy_task;

static const char *const known_keys[] = {"name", "seq_len", "n_data", "vocab", NULL};

static void copy_destroy(void *self) {
    copy_task *t = self;
    if (!t) return;
    free(t->positions);
    free(t);
}

static ssm_status copy_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    long long seq_len, n_data, vocab;
    ssm_status s;
    *self = NULL;
    if ((s = ssm_node_int(r, task, "seq_len", 4096, 2, 1 << 24, &seq_len)) ||
        (s = ssm_node_int(r, task, "n_data", 16, 1, 1 << 20, &n_data)) ||
        (s = ssm_node_int(r, task, "vocab", 16, 3, 1 << 16, &vocab)) ||
        (s = ssm_node_check_unknown(r, task, "task", known_keys)))
        return s;
    if (2 * n_data > seq_len)
        return ssm_set_error(SSM_ERR_ARG, "%s: selective_copy: n_data (%lld) must be at most half of "
                             "seq_len (%lld): the data and their copy must both fit", r->path, n_data,
                             seq_len);
    copy_task *t = calloc(1, sizeof *t);
    if (t) t->positions = malloc((size_t)n_data * sizeof *t->positions);
    if (!t || !t->positions) {
        copy_destroy(t);
        return ssm_set_error(SSM_ERR_NOMEM, "selective_copy: out of memory");
    }
    t->seq_len = (int)seq_len;
    t->n_data = (int)n_data;
    t->vocab = (int)vocab;
    *self = t;
    return SSM_OK;
}

static int copy_vocab_size(void *self) { return ((copy_task *)self)->vocab; }

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* n distinct positions in [0, range), sorted (Floyd's algorithm: n draws, no rejection loop). */
static void draw_positions(ssm_rng *rng, int range, int n, int *out) {
    int k = 0;
    for (int j = range - n; j < range; j++) {
        int p = (int)ssm_rng_below(rng, (uint64_t)j + 1), seen = 0;
        for (int i = 0; i < k && !seen; i++) seen = out[i] == p;
        out[k++] = seen ? j : p;
    }
    qsort(out, (size_t)n, sizeof *out, cmp_int);
}

/* Both splits come from the same generator: the rng the trainer hands in (a fixed one for
 * validation) decides everything, so the same rng state gives the same batch. */
static ssm_status copy_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    copy_task *t = self;
    if (batch->L != t->seq_len)
        return ssm_set_error(SSM_ERR_ARG, "selective_copy: the batch has sequence length %d but the task "
                             "makes sequences of %d (set train.seq_len and task.seq_len alike)",
                             batch->L, t->seq_len);
    int L = t->seq_len, n = t->n_data, body = L - n;
    for (int b = 0; b < batch->B; b++) {
        int32_t *tok = batch->tokens + (size_t)b * L, *tgt = batch->targets + (size_t)b * L;
        for (int l = 0; l < L; l++) {
            tok[l] = l < body ? TOKEN_NOISE : TOKEN_MARKER;
            tgt[l] = -1; /* only the copy-out positions are scored */
        }
        draw_positions(rng, body, n, t->positions);
        for (int k = 0; k < n; k++) {
            int32_t d = FIRST_DATA + (int32_t)ssm_rng_below(rng, (uint64_t)(t->vocab - FIRST_DATA));
            tok[t->positions[k]] = d;
            tgt[body + k] = d; /* at the k-th marker: the k-th data token */
        }
    }
    return SSM_OK;
}

static const ssm_task_ops selective_copy_ops = {
    SSM_TASK_OPS_HEADER,
    .name = "selective_copy",
    .description = "Selective Copying (Mamba paper): copy the data tokens scattered among noise",
    .symbol = "token",
    .baseline_order = -1, /* no Markov baseline: the answer is not in the local context */
    .create = copy_create,
    .destroy = copy_destroy,
    .vocab_size = copy_vocab_size,
    .next_batch = copy_next_batch,
    /* everything else stays NULL: no baseline symbols, no files to score, no generation */
};

SSM_TASK_PLUGIN(selective_copy_ops)
