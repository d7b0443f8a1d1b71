/* forward_io.c: ssm_forward_io, any input and any head (config.io), on the CPU.
 *
 *   r_0 = embedding[tokens]                     tokens
 *       | x . input_proj^T + input_bias         x (T, P F): P steps of F floats per position
 *       | patch(x)                              config.patch (patch.c): PointNet per group, in
 *                                               the learned order; (B, 2 L, D) when both ways
 *   h_f = blocks(r_0)                           (T, D)  the block loop of forward.c
 *   LM:         logits (T, V) = h_f . embedding^T,         cross-entropy on targets >= 0
 *   regression: y (T, F')     = h_f . head^T + head_bias,  MSE or MAE on values not NaN
 *   classify:   logits (B, C) = pool(h_f) . head^T + bias, cross-entropy on targets >= 0
 * RCPS (rcps.c): the backbone runs 2B rows, the sequences and their reverse complements; the
 * LM head folds them; the classify head scores each strand's pooled rows and averages.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "internal.h"
#include "patch.h"

static ssm_status grow(float **p, size_t n) {
    float *q = realloc(*p, (n ? n : 1) * sizeof(float));
    if (!q) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the head's buffers");
    *p = q;
    return SSM_OK;
}

/* io_inputs, io_outputs and io_values hold n floats each; io_pooled, io_labels B rows */
static ssm_status io_buffers(ssm_activations *a, size_t n, int B, int D) {
    ssm_status s = SSM_OK;
    if (n > a->io_capacity || !a->io_inputs) {
        if ((s = grow(&a->io_inputs, n)) || (s = grow(&a->io_outputs, n)) ||
            (s = grow(&a->io_values, n)))
            return s;
        a->io_capacity = n;
    }
    int32_t *labels = realloc(a->io_labels, (size_t)B * sizeof(int32_t));
    if (!labels) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the head's buffers");
    a->io_labels = labels;
    return grow(&a->io_pooled, (size_t)B * D);
}

static ssm_status check_io(const ssm_model *m, const ssm_io *io, int B, int L, float *loss) {
    const ssm_io_config *c = &m->config.io;
    if (!io || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward_io: need inputs and B, L > 0 (got B %d, L %d)", B, L);
    if (m->device >= 0)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm_forward_io runs on the CPU backend only "
                             "(use --device cpu)");
    if (c->features ? !io->features : !io->tokens)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward_io: this model reads %s", c->features ?
                             "float features (io.features)" : "tokens (io.tokens)");
    int want_values = c->head == SSM_HEAD_REGRESSION;
    if ((want_values && io->targets) || (!want_values && io->values))
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward_io: the %s head takes %s", want_values ?
                             "regression" : "token and class", want_values ? "values" : "targets");
    if ((io->targets || io->values) && !loss)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward_io: targets without loss");
    size_t T = (size_t)B * L;
    if (!c->features) {
        ssm_status s = ssm_check_tokens(m, io->tokens, c->head == SSM_HEAD_LM ? io->targets : NULL, T);
        if (s) return s;
    } else {
        size_t n = T * c->patch * c->features;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(io->features[i]))
                return ssm_set_error(SSM_ERR_NUMERIC, "feature %zu of the batch is not finite", i);
    }
    if (c->head == SSM_HEAD_CLASSIFY && io->targets)
        for (int b = 0; b < B; b++)
            if (io->targets[b] >= c->outputs)
                return ssm_set_error(SSM_ERR_ARG, "class %d of sequence %d is outside [0, %d)",
                                     io->targets[b], b, c->outputs);
    return SSM_OK;
}

ssm_status ssm_forward_io(ssm_model *m, const ssm_io *io, int B, int L, float *loss) {
    if (!m) return ssm_set_error(SSM_ERR_ARG, "ssm_forward_io: model is NULL");
    ssm_status s = check_io(m, io, B, L, loss);
    const ssm_config *c = &m->config;
    int L_in = L; /* the task's positions; the backbone's are L */
    L = ssm_patch_positions(c, L_in);
    if (s || (s = ssm_acts_plan(m, B, L))) return s;
    const ssm_io_config *ioc = &c->io;
    ssm_activations *a = m->acts;
    int D = c->d_model, T = B * L, PF = ioc->patch * ioc->features, F = ioc->outputs;
    int rows = a->B; /* B, or 2B for RCPS's two strands */
    size_t widest = (size_t)T * a->strands * (PF > F ? PF : F);
    if ((s = io_buffers(a, widest, rows, D))) return s;
    const ssm_params *p = &m->params;

    if (c->patch.kind != SSM_PATCH_NONE) { /* r_0 = patch(x) */
        memcpy(a->io_inputs, io->features, (size_t)B * L_in * PF * sizeof(float));
        if ((s = ssm_patch_forward(m, a->io_inputs, B, L_in, a->layers[0].resid))) return s;
    } else if (ioc->features) { /* r_0 = x . input_proj^T + input_bias */
        memcpy(a->io_inputs, io->features, (size_t)T * PF * sizeof(float));
        cpu_linear_forward(a->layers[0].resid, a->io_inputs, p->input_proj, p->input_bias, T, PF, D);
    } else { /* r_0 = embedding[tokens] */
        ssm_cpu_embed(m, io->tokens, B, L);
    }
    /* as ssm_forward: a training forward (a loss) need not be row-exact; scores and classes
     * (ssm-score, without a loss) must not depend on the batch */
    a->exact = !(io->targets || io->values);
    ssm_cpu_blocks_forward(m, NULL);

    double l = 0;
    int64_t count = 0;
    int scored = io->targets || io->values;
    if (ioc->head == SSM_HEAD_LM) {
        ssm_cpu_lm_head_forward(m);
        if (io->targets) {
            memcpy(a->targets, io->targets, (size_t)T * sizeof(int32_t));
            l = cpu_cross_entropy_forward(a->logits, io->targets, T, c->vocab_size, &count);
        }
    } else if (ioc->head == SSM_HEAD_REGRESSION) {
        cpu_linear_forward(a->io_outputs, a->normed_f, p->head, p->head_bias, T, D, F);
        if (io->values) {
            memcpy(a->io_values, io->values, (size_t)T * F * sizeof(float));
            l = cpu_regression_loss_forward(a->io_outputs, io->values, (size_t)T * F,
                                            ioc->loss == SSM_LOSS_MAE, &count);
        }
    } else {
        cpu_pool_forward(a->io_pooled, a->normed_f, rows, L, D, (int)ioc->pool);
        cpu_linear_forward(a->io_outputs, a->io_pooled, p->head, p->head_bias, rows, D, F);
        if (a->strands == 2) /* RCPS: the mean of both strands' scores */
            for (size_t i = 0; i < (size_t)B * F; i++)
                a->io_outputs[i] = 0.5f * (a->io_outputs[i] + a->io_outputs[(size_t)B * F + i]);
        if (io->targets) {
            memcpy(a->io_labels, io->targets, (size_t)B * sizeof(int32_t));
            l = cpu_cross_entropy_forward(a->io_outputs, io->targets, B, F, &count);
        }
    }
    a->io_forward = 1;
    a->has_hidden = 1;
    a->has_state = 0;
    a->has_targets = scored;
    a->backward_ready = scored && count > 0;
    a->io_count = (float)count;
    if (scored) {
        if (!isfinite(l))
            return ssm_set_error(SSM_ERR_NUMERIC, "the loss is not finite (%g): the model "
                                 "diverged; lower the learning rate", l);
        *loss = (float)l;
    }
    return SSM_OK;
}

const float *ssm_model_outputs(const ssm_model *m) {
    if (!m || !m->acts || m->device >= 0) return NULL;
    return m->acts->io_forward && m->config.io.head != SSM_HEAD_LM ? m->acts->io_outputs
                                                                   : m->acts->logits;
}

ssm_status ssm_cpu_io_backward(ssm_model *m) {
    ssm_activations *a = m->acts;
    if (!a->has_targets || !a->backward_ready)
        return ssm_set_error(SSM_ERR_ARG, "ssm_backward needs a forward with targets (with at "
                             "least one scored position) just before it");
    const ssm_config *c = &m->config;
    const ssm_io_config *ioc = &c->io;
    const ssm_params *p = &m->params;
    ssm_params *g = &m->grads;
    ssm_backward_scratch *bw = &a->bw;
    int rows = a->B, B = rows / a->strands, L = a->L, T = rows * L, D = c->d_model,
        F = ioc->outputs;
    float inv = 1.0f / a->io_count;

    /* the head: d h_f into bw->d_normed */
    if (ioc->head == SSM_HEAD_LM) {
        ssm_cpu_lm_head_backward(m, inv);
    } else if (ioc->head == SSM_HEAD_REGRESSION) {
        cpu_regression_loss_backward(a->io_outputs, a->io_outputs, a->io_values, (size_t)T * F,
                                     ioc->loss == SSM_LOSS_MAE, inv);
        cpu_linear_backward(bw->d_normed, g->head, g->head_bias, a->io_outputs, a->normed_f,
                            p->head, T, D, F);
    } else { /* d pooled (B, D) in bw->d_resid, free until the blocks' backward */
        cpu_cross_entropy_backward(a->io_outputs, a->io_labels, B, F, inv);
        if (a->strands == 2) /* each strand's scores got half */
            for (size_t i = 0; i < (size_t)B * F; i++)
                a->io_outputs[(size_t)B * F + i] = a->io_outputs[i] *= 0.5f;
        cpu_linear_backward(bw->d_resid, g->head, g->head_bias, a->io_outputs, a->io_pooled,
                            p->head, rows, D, F);
        cpu_pool_backward(bw->d_normed, bw->d_resid, rows, L, D, (int)ioc->pool);
    }
    ssm_cpu_blocks_backward(m);
    /* the input: d r_0 (bw->d_resid) into the projection or the embedding */
    if (c->patch.kind != SSM_PATCH_NONE) {
        ssm_patch_backward(m, a->io_inputs, bw->d_resid);
    } else if (ioc->features) {
        int PF = ioc->patch * ioc->features;
        cpu_linear_backward(NULL, g->input_proj, g->input_bias, bw->d_resid, a->io_inputs,
                            p->input_proj, T, PF, D);
    } else {
        cpu_embedding_backward(g->embedding, a->tokens, bw->d_resid, T, D);
    }
    a->backward_ready = 0;
    return SSM_OK;
}
