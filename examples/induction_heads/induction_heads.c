/* induction_heads.c: the Induction Heads task of the Mamba paper (Gu and Dao 2023, section
 * 4.1.2 and Table 2) as an external ssm task plugin, built like examples/selective_copy.
 *
 * A sequence of L random tokens holds one trigger token at a random position p; the token
 * after it (p + 1) is the answer. The last position holds the trigger again, and there the
 * model must output the answer: it must recall what followed the trigger, however far back.
 * Only that last position is scored. The paper trains at L = 256 and tests at every power of
 * two up to 2^20; a selective SSM that has learnt the rule keeps it at any length.
 *
 *   tokens   5 9 3 0 7 2 ... 4 11 0        (0 = the trigger)
 *   targets  - - - - - - ... -  - 7
 *
 * Tokens (vocab 16 by default, as in the paper): 0 = trigger, 1 .. vocab-1 = ordinary tokens.
 * The sequence length is the batch's (train.seq_len in training, any length >= 3 when
 * evaluating: ssm-accuracy --lengths), so one task serves every test length.
 *
 * Recipe:
 *   task:
 *     name: build/examples/induction_heads/induction_heads.so   # or induction_heads on SSM_PLUGIN_PATH
 *     vocab: 16
 * It reads no files: there is no data section. */
#include <stdlib.h>

#include <ssm/task.h>

enum { TOKEN_TRIGGER = 0, FIRST_ORDINARY = 1, MIN_LEN = 3 };

typedef struct induction_task {
    int vocab;
} induction_task;

static const char *const known_keys[] = {"name", "vocab", NULL};

static void induction_destroy(void *self) { free(self); }

static ssm_status induction_create(const ssm_recipe *r, ssm_node *task, ssm_node *data,
                                   void **self) {
    long long vocab;
    ssm_status s;
    *self = NULL;
    if ((s = ssm_node_int(r, task, "vocab", 16, 3, 1 << 16, &vocab)) ||
        (s = ssm_node_check_unknown(r, task, "task", known_keys)))
        return s;
    induction_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "induction_heads: out of memory");
    t->vocab = (int)vocab;
    *self = t;
    return SSM_OK;
}

static int induction_vocab_size(void *self) { return ((induction_task *)self)->vocab; }

/* Everything comes from the rng handed in (a fixed one for validation): the same rng state
 * gives the same batch, at any length. */
static ssm_status induction_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    induction_task *t = self;
    int L = batch->L;
    if (L < MIN_LEN)
        return ssm_set_error(SSM_ERR_ARG, "induction_heads: sequences of %d tokens are too short: the "
                             "trigger, its answer and the final trigger need at least %d", L, MIN_LEN);
    uint64_t ordinary = (uint64_t)(t->vocab - FIRST_ORDINARY);
    for (int b = 0; b < batch->B; b++) {
        int32_t *tok = batch->tokens + (size_t)b * L, *tgt = batch->targets + (size_t)b * L;
        for (int l = 0; l < L; l++) {
            tok[l] = FIRST_ORDINARY + (int32_t)ssm_rng_below(rng, ordinary);
            tgt[l] = -1; /* only the last position is scored */
        }
        int p = (int)ssm_rng_below(rng, (uint64_t)L - 2); /* the trigger in [0, L - 3] */
        tok[p] = TOKEN_TRIGGER;
        tok[L - 1] = TOKEN_TRIGGER;
        tgt[L - 1] = tok[p + 1]; /* the answer: what followed the first trigger */
    }
    return SSM_OK;
}

static const ssm_task_ops induction_heads_ops = {
    SSM_TASK_OPS_HEADER,
    .name = "induction_heads",
    .description = "Induction Heads (Mamba paper): recall the token that followed the trigger",
    .symbol = "token",
    .baseline_order = -1, /* no Markov baseline: the answer is not in the local context */
    .create = induction_create,
    .destroy = induction_destroy,
    .vocab_size = induction_vocab_size,
    .next_batch = induction_next_batch,
};

SSM_TASK_PLUGIN(induction_heads_ops)
