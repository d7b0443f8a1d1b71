/* bad_abi.c: for the tests only: a plugin that claims another task ABI version, which
 * ssm_task_find must refuse with SSM_ERR_UNSUPPORTED (and a message saying to rebuild it). */
#include <ssm/task.h>

static ssm_status never_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    return ssm_set_error(SSM_ERR_ARG, "bad_abi: must never be created");
}
static void never_destroy(void *self) {}
static int never_vocab(void *self) { return 16; }
static ssm_status never_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *batch) {
    return ssm_set_error(SSM_ERR_ARG, "bad_abi: must never be asked for a batch");
}

static const ssm_task_ops bad_abi_ops = {
    .abi_version = SSM_TASK_ABI_VERSION + 1,
    .name = "bad_abi",
    .description = "a plugin built for another ABI version (tests only)",
    .symbol = "token",
    .create = never_create,
    .destroy = never_destroy,
    .vocab_size = never_vocab,
    .next_batch = never_batch,
};

SSM_TASK_PLUGIN(bad_abi_ops)
