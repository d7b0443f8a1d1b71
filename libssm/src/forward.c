/* forward.c: the block loop of the parallel forward and of the backward (CPU backend), and the
 * activation planner.
 *   r_0 = embedding[tokens]
 *   r_{i+1} = r_i + mixer_i(RMSNorm_i(r_i))        (pre-norm blocks, fp32 residual stream)
 *   logits = RMSNorm_f(r_n) . embedding^T           (tied head)
 * The mixer is the layer's kind (layers.h): mamba1.c, mamba2.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "patch.h"
#include "layers.h"

void ssm_acts_free(ssm_activations *a) {
    if (!a) return;
    free(a->blob);
    free(a->layers);
    free(a->tokens);
    free(a->targets);
    free(a->io_inputs);
    free(a->io_outputs);
    free(a->io_pooled);
    free(a->io_labels);
    free(a->io_values);
    ssm_patch_acts_free(a->patch);
    free(a);
}

/* Carve the activation blob: first pass counts (base == NULL), second assigns. Each kind
 * carves its layers' activations, and its share of the backward scratch once. */
static size_t carve(ssm_activations *a, const ssm_config *c, size_t T, int L, int threads,
                    float *base) {
    size_t D = c->d_model, V = c->vocab_size;
    ssm_carver cv = {base, 0};
    size_t widest = D + V; /* the largest n_in + n_out of the forward's projections */
    for (int i = 0; i < c->n_layer; i++) {
        ssm_layer_acts *la = &a->layers[i];
        la->resid = ssm_carve(&cv, T * D);
        la->normed = ssm_carve(&cv, T * D);
        la->rstd = ssm_carve(&cv, T);
        ssm_kind_of(c, i)->plan(&cv, c, la, T, L, threads);
        int64_t shape[SSM_MIXER_MAX_TENSORS][3];
        int ndim[SSM_MIXER_MAX_TENSORS];
        const ssm_layer_kind_ops *k = ssm_kind_of(c, i);
        k->shapes(c, shape, ndim);
        for (int j = 0; j < k->n_tensors; j++)
            if (ndim[j] == 2 && (size_t)(shape[j][0] + shape[j][1]) > widest)
                widest = (size_t)(shape[j][0] + shape[j][1]);
    }
    a->resid_f = ssm_carve(&cv, T * D);
    a->normed_f = ssm_carve(&cv, T * D);
    a->rstd_f = ssm_carve(&cv, T);
    a->logits = ssm_carve(&cv, T * V);
    a->bw.d_resid = ssm_carve(&cv, T * D);
    a->bw.d_normed = ssm_carve(&cv, T * D);
    for (int k = 0; k < SSM_LAYER_KIND_COUNT; k++) {
        int present = 0;
        for (int i = 0; i < c->n_layer; i++) present |= c->layer_kind[i] == k;
        if (present) ssm_layer_kinds[k]->plan_scratch(&cv, c, &a->bw, T, L, threads);
    }
    a->matmul_scratch = ssm_carve(&cv, cpu_matmul_exact_scratch(L, 0, (int)widest, threads));
    return cv.off;
}

size_t ssm_acts_floats(const ssm_config *c, int B, int L, int threads) {
    ssm_activations a = {0};
    a.layers = calloc((size_t)c->n_layer, sizeof *a.layers);
    if (!a.layers) return 0;
    B *= c->rcps ? 2 : 1; /* the strands */
    size_t n = carve(&a, c, (size_t)B * L, L, threads, NULL);
    free(a.layers);
    return n;
}

ssm_status ssm_acts_plan(ssm_model *m, int B, int L) {
    int threads = omp_get_max_threads(), strands = m->config.rcps ? 2 : 1;
    B *= strands; /* the backbone's rows */
    ssm_activations *a = m->acts;
    if (a && a->B == B && a->L == L && a->scratch_threads == threads) return SSM_OK;
    size_t T = (size_t)B * L;
    /* a shape that fits the current allocation is re-carved in place (scoring alternates
     * between batch sizes); only a larger one allocates */
    if (a) {
        ssm_activations probe = *a;
        size_t n = carve(&probe, &m->config, T, L, threads, NULL);
        if (n <= a->capacity && T <= a->capacity_T) {
            carve(a, &m->config, T, L, threads, a->blob);
            a->B = B, a->L = L, a->scratch_threads = threads, a->strands = strands;
            a->has_hidden = 0; /* the buffers now hold nothing of this shape */
            return SSM_OK;
        }
    }
    /* outgrown: half as much again as this shape needs, so that a run of slowly growing
     * shapes (scoring windows of increasing lengths) reallocates a few times, not every call */
    size_t slack = a ? 2 : 0;
    ssm_acts_free(a);
    m->acts = NULL;
    a = calloc(1, sizeof *a);
    if (!a) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for activations");
    a->layers = calloc(m->config.n_layer, sizeof *a->layers);
    size_t n = a->layers ? carve(a, &m->config, T, L, threads, NULL) : 0;
    size_t n_alloc = n + (slack ? n / slack : 0), T_alloc = T + (slack ? T / slack : 0);
    a->blob = aligned_alloc(64, ((n_alloc + 15) & ~(size_t)15) * sizeof(float));
    a->tokens = malloc(T_alloc * sizeof(int32_t));
    a->targets = malloc(T_alloc * sizeof(int32_t));
    if (!a->layers || !a->blob || !a->tokens || !a->targets) {
        ssm_acts_free(a);
        return ssm_set_error(SSM_ERR_NOMEM,
                             "out of memory for the activations of batch %d x length %d "
                             "(%.1f MiB)", B, L, n * 4.0 / (1 << 20));
    }
    carve(a, &m->config, T, L, threads, a->blob);
    a->B = B;
    a->L = L;
    a->strands = strands;
    a->scratch_threads = threads;
    a->capacity = n_alloc;
    a->capacity_T = T_alloc;
    m->acts = a;
    return SSM_OK;
}

ssm_status ssm_check_tokens(const ssm_model *m, const int32_t *tokens, const int32_t *targets,
                               size_t T) {
    int V = m->config.vocab_size;
    for (size_t t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V)
            return ssm_set_error(SSM_ERR_ARG, "token %d at position %zu is outside the vocabulary [0, %d)",
                                 tokens[t], t, V);
        if (targets && targets[t] >= V)
            return ssm_set_error(SSM_ERR_ARG, "target %d at position %zu is outside the vocabulary [0, %d)",
                                 targets[t], t, V);
    }
    return SSM_OK;
}

ssm_status ssm_check_lm(const ssm_model *m, const char *what) {
    if (ssm_io_is_lm(&m->config)) return SSM_OK;
    return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s runs token models with the tied LM head; this "
                         "model's inputs or head (config.io) go through ssm_forward_io", what);
}

ssm_status ssm_check_state(const ssm_model *m, const ssm_state *s, int B) {
    ssm_status st = ssm_check_causal(m, "a carried state");
    if (st) return st;
    if (s->batch != B || !ssm_state_fits(s, &m->config))
        return ssm_set_error(SSM_ERR_SHAPE, "the recurrent state (batch %d) does not fit this "
                             "model and batch %d", s->batch, B);
    return SSM_OK;
}

/* What each kind's pass sees of this batch. */
static ssm_pass pass_of(ssm_model *m) {
    ssm_activations *a = m->acts;
    return (ssm_pass){&m->config, a->B, a->L, (size_t)a->B * a->L, a->scratch_threads,
                      a->exact, a->matmul_scratch, &a->bw};
}

ssm_status ssm_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B, int L,
                       ssm_state *state, float *loss) {
    if (!m || !tokens || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_forward: need a model, tokens and B, L > 0");
    if (targets && !loss) return ssm_set_error(SSM_ERR_ARG, "ssm_forward: targets without loss");
    ssm_status s = ssm_check_lm(m, "ssm_forward");
    if (!s) s = ssm_check_tokens(m, tokens, targets, (size_t)B * L);
    if (!s && state) s = ssm_check_state(m, state, B);
    if (!s && state) s = ssm_check_context(m, state, L);
    if (!s) s = m->backend->forward(m, tokens, targets, B, L, state, loss, NULL, NULL);
    if (!s && state) ssm_state_advance(state, L);
    return s;
}

ssm_status ssm_check_context(const ssm_model *m, const ssm_state *s, int L) {
    const ssm_config *c = &m->config;
    int attention = 0;
    for (int i = 0; i < c->n_layer; i++) attention |= c->layer_kind[i] == SSM_LAYER_ATTENTION;
    if (!attention) return SSM_OK;
    for (int b = 0; b < s->batch; b++)
        if (s->pos[b] + L > c->attention.max_context)
            return ssm_set_error(SSM_ERR_ARG, "sequence %d would reach %lld positions, past the "
                                 "attention layers' KV cache of attention.max_context = %d "
                                 "positions; score shorter records or raise model.max_context", b,
                                 (long long)(s->pos[b] + L), c->attention.max_context);
    return SSM_OK;
}

/* The block loop on the CPU, r_0 (acts->layers[0].resid) -> h_f = RMSNorm_f(r_n) (normed_f). */
void ssm_cpu_blocks_forward(ssm_model *m, ssm_state *state) {
    const ssm_config *c = &m->config;
    ssm_activations *a = m->acts;
    ssm_pass ps = pass_of(m);
    size_t T = ps.T;
    int D = c->d_model;
    for (int i = 0; i < c->n_layer; i++) {
        ssm_layer_acts *la = &a->layers[i];
        ssm_layer_state st = state ? ssm_state_layer(state, i) : (ssm_layer_state){0};
        /* RCPS's fused add-norm: the strands swap, each reverse-complemented (rcps.c) */
        if (c->rcps && !c->rcps_unfused) ssm_rcps_swap(la->resid, ps.B / 2, ps.L, D);
        /* h = RMSNorm(r) * w */
        cpu_rmsnorm_forward(la->normed, la->rstd, la->resid, m->params.layers[i].norm, (int)T, D,
                            c->norm_eps);
        /* r_{i+1} = r_i + mixer(h) */
        float *next = i + 1 < c->n_layer ? a->layers[i + 1].resid : a->resid_f;
        memcpy(next, la->resid, T * D * sizeof(float));
        ssm_kind_of(c, i)->forward(&ps, &m->params.layers[i], la, next, state ? &st : NULL);
    }
    cpu_rmsnorm_forward(a->normed_f, a->rstd_f, a->resid_f, m->params.norm_f, (int)T, D,
                        c->norm_eps);
}

/* Its backward: d h_f (bw.d_normed) -> d r_0 (bw.d_resid), accumulating the gradients. */
void ssm_cpu_blocks_backward(ssm_model *m) {
    const ssm_config *c = &m->config;
    ssm_activations *a = m->acts;
    ssm_pass ps = pass_of(m);
    ssm_backward_scratch *bw = &a->bw;
    int T = (int)ps.T, D = c->d_model;
    memset(bw->d_resid, 0, (size_t)T * D * sizeof(float));
    cpu_rmsnorm_backward(bw->d_resid, m->grads.norm_f, bw->d_normed, a->resid_f, m->params.norm_f,
                         a->rstd_f, T, D);
    for (int i = c->n_layer - 1; i >= 0; i--) {
        ssm_layer_acts *la = &a->layers[i];
        /* r_{i+1} = r_i + mixer(h): d h from d r_{i+1} (the residual path keeps d r) */
        ssm_kind_of(c, i)->backward(&ps, &m->params.layers[i], &m->grads.layers[i], la,
                                    bw->d_resid, bw->d_normed);
        /* h = RMSNorm(r): d r += ... */
        cpu_rmsnorm_backward(bw->d_resid, m->grads.layers[i].norm, bw->d_normed, la->resid,
                             m->params.layers[i].norm, la->rstd, T, D);
        if (c->rcps && !c->rcps_unfused) ssm_rcps_swap(bw->d_resid, ps.B / 2, ps.L, D);
    }
}

/* The tied LM head: logits = RMSNorm_f(r_n) . embedding^T (row-exact in an exact pass: a
 * row's result never depends on B or the thread count). */
void ssm_cpu_lm_head_forward(ssm_model *m) {
    ssm_activations *a = m->acts;
    int D = m->config.d_model, V = m->config.vocab_size;
    ssm_pass ps = pass_of(m);
    ssm_pass_matmul(&ps, a->logits, V, 0.0f, a->normed_f, D, m->params.embedding, D, V);
    if (a->strands == 2) ssm_rcps_lm_forward(a->logits, m->config.complement, a->B / 2, a->L, V);
}

/* Its backward from the cross-entropy on acts->targets: d logits = (softmax - onehot) * scale
 * in place; d h_f (bw.d_normed) = d logits . emb; d emb += d logits^T . h_f. */
void ssm_cpu_lm_head_backward(ssm_model *m, float scale) {
    ssm_activations *a = m->acts;
    int T = a->B * a->L, D = m->config.d_model, V = m->config.vocab_size;
    cpu_cross_entropy_backward(a->logits, a->targets, T / a->strands, V, scale);
    if (a->strands == 2) ssm_rcps_lm_backward(a->logits, m->config.complement, a->B / 2, a->L, V);
    cpu_matmul_backward(a->bw.d_normed, D, 0.0f, m->grads.embedding, a->logits, V, a->normed_f, D,
                        m->params.embedding, T, D, V);
}

/* The block loop on the CPU. With logp: per-position scores of targets (ssm_forward_score);
 * else with targets: the mean cross-entropy into *loss. */
ssm_status ssm_cpu_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                           int L, ssm_state *state, float *loss, float *logp, float *entropy) {
    const ssm_config *c = &m->config;
    size_t T = (size_t)B * L;
    ssm_status s;
    if (state && (s = ssm_state_to_host(state))) return s;
    if ((s = ssm_acts_plan(m, B, L))) return s;
    ssm_activations *a = m->acts;
    int V = c->vocab_size;

    a->io_forward = 0;
    /* a training forward (a loss, no carried state) need not be row-exact */
    a->exact = logp || !targets || state;
    /* r_0 = embedding[tokens] (RCPS: and of their reverse complements) */
    ssm_cpu_embed(m, tokens, B, L);
    ssm_cpu_blocks_forward(m, state);
    ssm_cpu_lm_head_forward(m);

    /* the MoE layers' Switch auxiliary loss (and its gradient for the backward) */
    a->aux_loss = ssm_moe_aux_loss(c, a->layers, (size_t)a->B * L, a->bw.moe.aux_grad);
    a->has_hidden = 1;
    if (logp) { /* scoring: no loss, nothing for a backward */
        a->has_targets = 0;
        a->has_state = state != NULL;
        a->backward_ready = 0;
        ssm_cpu_score_rows(m, targets, T, logp, entropy);
        return SSM_OK;
    }
    a->has_targets = targets != NULL;
    a->has_state = state != NULL;
    a->backward_ready = 0;
    if (targets) {
        memcpy(a->targets, targets, T * sizeof(int32_t));
        int64_t count;
        double l = cpu_cross_entropy_forward(a->logits, targets, (int)T, V, &count);
        if (!isfinite(l))
            return ssm_set_error(SSM_ERR_NUMERIC, "the loss is not finite (%g): the model "
                                 "diverged; lower the learning rate", l);
        *loss = (float)(l + c->moe.aux_loss_coef * a->aux_loss);
        a->backward_ready = count > 0;
    }
    return SSM_OK;
}

const float *ssm_model_logits(const ssm_model *m) {
    return m ? m->backend->logits((ssm_model *)m) : NULL;
}

const float *ssm_cpu_logits(ssm_model *m) { return m->acts ? m->acts->logits : NULL; }

ssm_status ssm_backward(ssm_model *m) {
    if (!m) return ssm_set_error(SSM_ERR_ARG, "ssm_backward: model is NULL");
    return m->backend->backward(m);
}

ssm_status ssm_cpu_backward(ssm_model *m) {
    ssm_activations *a = m->acts;
    if (a && a->io_forward) return ssm_cpu_io_backward(m);
    if (!a || !a->has_targets || !a->backward_ready)
        return ssm_set_error(SSM_ERR_ARG, "ssm_backward needs a forward with targets (with at "
                             "least one scored position) just before it");
    if (a->has_state)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm_backward after a forward from a carried "
                             "state is not supported");
    const ssm_config *c = &m->config;
    int rows = a->B * a->L, T = rows / a->strands, D = c->d_model;
    ssm_backward_scratch *bw = &a->bw;
    int64_t count = 0;
    for (int t = 0; t < T; t++) count += a->targets[t] >= 0;
    ssm_cpu_lm_head_backward(m, 1.0f / (float)count);
    ssm_cpu_blocks_backward(m);
    cpu_embedding_backward(m->grads.embedding, a->tokens, bw->d_resid, rows, D);
    a->backward_ready = 0; /* the logits now hold their gradient */
    return SSM_OK;
}
