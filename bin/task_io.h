/* task_io.h: the programs' side of task ABI v2: the model's inputs and head from the task, the
 * batch arrays they need, and one forward for any batch. */
#ifndef SSM_TASK_IO_H
#define SSM_TASK_IO_H

#include "ssm/task.h"

/* config->io and *seq_len (train.seq_len in, the task's out) from ops->model_io, if any. */
ssm_status task_model_io(const ssm_task_ops *ops, void *task, ssm_config *config, int *seq_len);
/* The arrays a batch of B x L needs for this config (free with task_batch_free). */
ssm_status task_batch_alloc(ssm_batch *batch, const ssm_config *config, int B, int L);
void task_batch_free(ssm_batch *batch);
/* Row b of a batch as a batch of one (views into its arrays). */
ssm_batch task_batch_row(const ssm_batch *batch, const ssm_io_config *io, int b);
/* The forward of one batch with its targets: *loss, and *scored the targets it averaged. A
 * language model goes through ssm_forward (any backend), the rest through ssm_forward_io. */
ssm_status task_batch_forward(ssm_model *model, const ssm_batch *batch, float *loss,
                              int64_t *scored);

#endif
