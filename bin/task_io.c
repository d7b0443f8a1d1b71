/* task_io.c: see task_io.h. */
#include <math.h>
#include <stdlib.h>

#include "task_io.h"

ssm_status task_model_io(const ssm_task_ops *ops, void *task, ssm_config *c, int *seq_len) {
    if (!ops->model_io) return SSM_OK;
    ssm_status s = ops->model_io(task, &c->io, seq_len);
    if (!s) s = ssm_config_validate(c);
    return s;
}

ssm_status task_batch_alloc(ssm_batch *b, const ssm_config *c, int B, int L) {
    const ssm_io_config *io = &c->io;
    size_t T = (size_t)B * L;
    *b = (ssm_batch){.B = B, .L = L};
    int ok = 1;
    if (io->features) ok &= !!(b->features = malloc(T * io->patch * io->features * sizeof(float)));
    else ok &= !!(b->tokens = malloc(T * sizeof(int32_t)));
    if (io->head == SSM_HEAD_REGRESSION) ok &= !!(b->values = malloc(T * io->outputs * sizeof(float)));
    else ok &= !!(b->targets = malloc((io->head == SSM_HEAD_CLASSIFY ? (size_t)B : T) * sizeof(int32_t)));
    if (!ok) {
        task_batch_free(b);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for a batch of %d x %d", B, L);
    }
    return SSM_OK;
}

ssm_batch task_batch_row(const ssm_batch *b, const ssm_io_config *io, int row) {
    size_t L = (size_t)b->L;
    ssm_batch r = {.B = 1, .L = b->L};
    if (b->tokens) r.tokens = b->tokens + row * L;
    if (b->features) r.features = b->features + row * L * io->patch * io->features;
    if (b->targets) r.targets = b->targets + (io->head == SSM_HEAD_CLASSIFY ? (size_t)row : row * L);
    if (b->values) r.values = b->values + row * L * io->outputs;
    return r;
}

void task_batch_free(ssm_batch *b) {
    free(b->tokens);
    free(b->targets);
    free(b->features);
    free(b->values);
}

ssm_status task_batch_forward(ssm_model *m, const ssm_batch *b, float *loss, int64_t *scored) {
    const ssm_io_config *io = &m->config.io;
    size_t T = (size_t)b->B * b->L;
    int64_t n = 0;
    if (io->head == SSM_HEAD_REGRESSION)
        for (size_t i = 0; i < T * io->outputs; i++) n += !isnan(b->values[i]);
    else
        for (size_t i = 0; i < (io->head == SSM_HEAD_CLASSIFY ? (size_t)b->B : T); i++) n += b->targets[i] >= 0;
    *scored = n;
    *loss = NAN;
    if (!n) return SSM_OK;
    if (ssm_io_is_lm(&m->config))
        return ssm_forward(m, b->tokens, b->targets, b->B, b->L, NULL, loss);
    ssm_io in = {.tokens = b->tokens, .features = b->features, .targets = b->targets, .values = b->values};
    return ssm_forward_io(m, &in, b->B, b->L, loss);
}
