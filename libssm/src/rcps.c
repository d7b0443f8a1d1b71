/* rcps.c: Caduceus' model options: bidirectional Mamba-1 layers (the kind is bimamba.c) and
 * reverse-complement parameter sharing (RCPS, caduceus/modeling_rcps.py).
 *
 * Caduceus holds an RCPS hidden state as (B, L, 2D): [x1 | x2], with rc(x) = flip over L and
 * channels. ssm holds it as 2B rows of (L, D), the strands: rows [0, B) are x1 and rows
 * [B, 2B) are rc(x2), so that every RCPS module becomes the plain one on 2B sequences:
 *   embedding  strand 0 = E[ids], strand 1 = E[comp[flip_L(ids)]]  (the reverse complement)
 *   block      each strand through the same norm and mixer (RCPSWrapper, RCPSAddNormWrapper)
 *   fused add-norm (RCPSMambaBlock with fused_add_norm, the released checkpoints): before the
 *              norm, strand 0 <- rc(strand 1) and strand 1 <- rc(strand 0) (the half swap;
 *              rc of a strand is flip over L and D): ssm_rcps_swap
 *   norm_f     each strand (no swap)
 *   LM head    logits[b, l, v] = s0[b, l] . W[v] + s1[b, L-1-l] . W[comp[v]]
 *   classify   (score(pool(s0)) + score(pool(s1))) / 2
 * docs/architecture.md, 'Bidirectional and RC-equivariant models'. */
#include <string.h>

#include "cpu_ops.h"
#include "layers.h"

void ssm_config_set_bidirectional(ssm_config *c, ssm_bidirectional how) {
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_MAMBA1) c->layer_kind[i] = SSM_LAYER_BIMAMBA;
    c->bidirectional = how;
}

void ssm_config_set_rcps(ssm_config *c, const int32_t *complement) {
    c->rcps = 1;
    c->rcps_unfused = 0;
    for (int v = 0; v < SSM_RCPS_MAX_VOCAB; v++) c->complement[v] = (unsigned char)v;
    if (complement) {
        for (int v = 0; v < c->vocab_size && v < SSM_RCPS_MAX_VOCAB; v++)
            c->complement[v] = (unsigned char)complement[v];
        return;
    }
    /* Caduceus' tokenizer and the DNA tasks: A 7, C 8, G 9, T 10 */
    c->complement[7] = 10, c->complement[10] = 7, c->complement[8] = 9, c->complement[9] = 8;
}

int ssm_config_causal(const ssm_config *c) {
    if (c->rcps) return 0;
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_BIMAMBA) return 0;
    return 1;
}

ssm_status ssm_validate_caduceus(const ssm_config *c) {
    int bi = 0;
    for (int i = 0; i < c->n_layer; i++) bi |= c->layer_kind[i] == SSM_LAYER_BIMAMBA;
    if (bi && c->bidirectional != SSM_BIDIR_ADD && c->bidirectional != SSM_BIDIR_MUL)
        return ssm_set_error(SSM_ERR_ARG, "model bidirectional = %d: the bimamba layers combine "
                             "by add or mul", (int)c->bidirectional);
    if (!bi && c->bidirectional)
        return ssm_set_error(SSM_ERR_ARG, "model bidirectional is set but no layer is a Mamba-1 "
                             "layer to run both ways (bimamba)");
    if (c->rcps) {
        if (c->vocab_size > SSM_RCPS_MAX_VOCAB)
            return ssm_set_error(SSM_ERR_ARG, "model rcps: vocab_size %d is more than the %d "
                                 "tokens a complement map holds", c->vocab_size, SSM_RCPS_MAX_VOCAB);
        for (int v = 0; v < c->vocab_size; v++)
            if (c->complement[v] >= c->vocab_size || c->complement[c->complement[v]] != v)
                return ssm_set_error(SSM_ERR_ARG, "model rcps: the complement map sends %d to %d, "
                                     "which is not a pairing of the %d tokens", v,
                                     c->complement[v], c->vocab_size);
        if (c->io.features || c->io.head == SSM_HEAD_REGRESSION)
            return ssm_set_error(SSM_ERR_ARG, "model rcps reads tokens and predicts tokens or "
                                 "classes (not io.features, not a regression head)");
    }
    if (c->io.bidirectional && ssm_config_causal(c))
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the task asks for a bidirectional backbone and "
                             "this model is causal: set model.bidirectional: add (or mul), or "
                             "model.rcps: true");
    return SSM_OK;
}

ssm_status ssm_check_causal(const ssm_model *m, const char *what) {
    if (ssm_config_causal(&m->config)) return SSM_OK;
    return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: this model is bidirectional (%s): each "
                         "position sees the whole sequence, so it has no step mode and no carried "
                         "state; score whole sequences", what,
                         m->config.rcps ? "RCPS" : "bimamba layers");
}

void ssm_cpu_embed(ssm_model *m, const int32_t *tokens, int B, int L) {
    ssm_activations *a = m->acts;
    const ssm_config *c = &m->config;
    size_t T = (size_t)B * L;
    memcpy(a->tokens, tokens, T * sizeof(int32_t));
    if (a->strands == 2) /* strand 1: the reverse complement */
        for (int b = 0; b < B; b++)
            for (int l = 0; l < L; l++)
                a->tokens[T + (size_t)b * L + l] = c->complement[tokens[(size_t)b * L + L - 1 - l]];
    cpu_embedding_forward(a->layers[0].resid, a->tokens, m->params.embedding,
                          (int)(T * a->strands), c->d_model);
}

void ssm_rcps_swap(float *x, int B, int L, int D) {
    size_t T = (size_t)B * L;
    for (size_t t = 0; t < T; t++) {
        size_t b = t / L, l = t % L;
        float *p = x + t * D, *q = x + (T + b * L + (L - 1 - l)) * D;
        for (int d = 0; d < D; d++) {
            float v = p[d];
            p[d] = q[D - 1 - d], q[D - 1 - d] = v;
        }
    }
}

void ssm_rcps_lm_forward(float *logits, const unsigned char *comp, int B, int L, int V) {
    size_t T = (size_t)B * L;
    for (size_t t = 0; t < T; t++) {
        size_t b = t / L, l = t % L;
        float *o = logits + t * V;
        const float *r = logits + (T + b * L + (L - 1 - l)) * V;
        for (int v = 0; v < V; v++) o[v] += r[comp[v]];
    }
}

void ssm_rcps_lm_backward(float *d_logits, const unsigned char *comp, int B, int L, int V) {
    size_t T = (size_t)B * L;
    for (size_t t = 0; t < T; t++) {
        size_t b = t / L, l = t % L;
        const float *o = d_logits + t * V;
        float *r = d_logits + (T + b * L + (L - 1 - l)) * V;
        for (int v = 0; v < V; v++) r[comp[v]] = o[v];
    }
}
