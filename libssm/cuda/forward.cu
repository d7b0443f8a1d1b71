// forward.cu: the parallel forward and the backward on the GPU, op for op the layer loop of
// libssm/src/forward.c (read them side by side), in mixed precision: the residual stream, the
// norms' statistics, the scan's state and every accumulation are fp32; activations and the
// GEMMs' inputs are bf16; gradients of the parameters are fp32.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.cuh"

static ssm_scan_args scan_args(const ssm_config *c, const ssm_layer_params *p,
                                const cuda_layer_acts *la, int B, int L) {
    int E = c->d_inner, N = c->d_state, R = c->dt_rank;
    ssm_scan_args s = {};
    s.B = B, s.L = L, s.E = E, s.N = N, s.dtype = SSM_DTYPE_BF16;
    s.u = la->u, s.dt = la->dt;
    s.Bm = la->x_dbl + R, s.Cm = la->x_dbl + R + N, s.ld_bc = R + 2 * N;
    s.z = la->xz + E, s.ld_z = 2 * E;
    s.dt_bias = p->mamba1.dt_proj_b, s.A_log = p->mamba1.A_log, s.D = p->mamba1.D;
    return s;
}

// The Mamba-1 mixer of layer i, fused: from la->normed, r_{i+1} = next = r_i + mixer(h).
static ssm_status mamba1_forward(ssm_model *m, int i, int B, int L, float *cs, float *ss, int save,
                                 float *next) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    const ssm_config *c = &m->config;
    cudaStream_t st = g->stream;
    int T = B * L, D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv,
        R = c->dt_rank, XD = R + 2 * N;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    const ssm_layer_params *p = &g->p.layers[i];
    cuda_layer_acts *la = &a->layers[i];
    // [x | z] = in_proj(h)
    SSM_TRY(cuda_matmul_forward(g->blas, la->xz, 2 * E, BF, 0.0f, la->normed, D, w16(g, p->mamba1.in_proj), T, D, 2 * E));
    // u = silu(conv1d(x) + bias)
    SSM_TRY(cuda_conv_forward(la->u, la->xz, 2 * E, p->mamba1.conv_w, p->mamba1.conv_b, cs, B, L, E, K, BF, st));
    if (cs) SSM_TRY(cuda_conv_state_update(cs, la->xz, 2 * E, B, L, E, K, BF, st));
    // [dt | B | C] = x_proj(u), or x_proj(1) without selection
    if (c->non_selective) SSM_TRY(cuda_fixed_x_dbl_forward(la->x_dbl, XD, p->mamba1.x_proj, T, E, XD, st));
    else SSM_TRY(cuda_matmul_forward(g->blas, la->x_dbl, XD, BF, 0.0f, la->u, E, w16(g, p->mamba1.x_proj), T, E, XD));
    // dt = dt_proj(dt) without its bias
    SSM_TRY(cuda_matmul_forward(g->blas, la->dt, E, BF, 0.0f, la->x_dbl, XD, w16(g, p->mamba1.dt_proj_w), T, R, E));
    // gated = (scan(u, softplus(dt + bias), A, B, C) + D u) * silu(z)
    ssm_scan_args sa = scan_args(c, p, la, B, L);
    sa.ckpt = save ? la->ckpt : NULL;
    SSM_TRY(cuda_scan_forward(&sa, la->gated, ss, a->work, a->work_bytes, st));
    // r_{i+1} = r_i + out_proj(gated): the residual add is the GEMM's beta = 1
    SSM_TRY(cuda_matmul_forward(g->blas, next, D, SSM_DTYPE_F32, 1.0f, la->gated, E, w16(g, p->mamba1.out_proj), T, E, D));
    return SSM_OK;
}

// The layers and the final norm over tokens already in a.tokens: a.resid_f, a.normed_f.
// conv_state and ssm_state: device state buffers in ssm_state's layout (cuda_state_slots), or
// NULL; with them, a.pos holds each sequence's position (the KV caches' lengths). save: a training forward, whose Mamba-1 scan saves the states its backward needs.
static ssm_status forward_layers(ssm_model *m, int B, int L, float *conv_state, float *ssm_state,
                                 int save) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    const ssm_config *c = &m->config;
    cudaStream_t st = g->stream;
    int T = B * L, D = c->d_model;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // r_0 = embedding[tokens]
    SSM_TRY(cuda_embedding_forward(a->layers[0].resid, a->tokens, g->p.embedding, T, D, st));
    if (a->moe_stats) // the layers that are not MoE count nothing
        CUDA_TRY(cudaMemsetAsync(a->moe_stats, 0, (size_t)c->n_layer * 2 * c->moe.n_experts * sizeof(float), st),
                 "the MoE statistics");
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &g->p.layers[i];
        cuda_layer_acts *la = &a->layers[i];
        size_t co, so;
        cuda_state_slots(c, B, i, &co, &so);
        float *cs = conv_state ? conv_state + co : NULL;
        float *ss = ssm_state ? ssm_state + so : NULL;
        // h = RMSNorm(r) * w
        SSM_TRY(cuda_rmsnorm_forward(la->normed, la->rstd, la->resid, p->norm, T, D, c->norm_eps, BF, st));
        // r_{i+1} = r_i + mixer(h) (in place when no backward needs r_i: the plan then gives
        // every layer the same buffer)
        float *next = i + 1 < c->n_layer ? a->layers[i + 1].resid : a->resid_f;
        if (next != la->resid)
            CUDA_TRY(cudaMemcpyAsync(next, la->resid, (size_t)T * D * sizeof(float), cudaMemcpyDeviceToDevice, st), "the residual stream");
        switch (c->layer_kind[i]) {
        case SSM_LAYER_MAMBA2: SSM_TRY(cuda_mamba2_forward(m, i, B, L, cs, ss, next)); break;
        case SSM_LAYER_MLP: SSM_TRY(cuda_mlp_forward(m, i, T, next)); break;
        case SSM_LAYER_MOE: SSM_TRY(cuda_moe_forward(m, i, T, next)); break;
        case SSM_LAYER_ATTENTION: SSM_TRY(cuda_attention_layer_forward(m, i, B, L, ss, a->pos, next)); break;
        default: SSM_TRY(mamba1_forward(m, i, B, L, cs, ss, save, next)); // cuda_model_supports
        }
    }
    // the MoE layers' Switch auxiliary loss (and its gradient for the backward)
    SSM_TRY(cuda_moe_aux_loss(m, T));
    return cuda_rmsnorm_forward(a->normed_f, a->rstd_f, a->resid_f, g->p.norm_f, T, D, c->norm_eps, BF, st);
}

// The tied head, a block of rows at a time so that the fp32 logits of the whole batch never
// exist at once: logits = normed_f . embedding^T, then per mode the per-row nll (and entropy),
// or a copy of the logits to the host. A training forward (HEAD_TRAIN) takes the head's
// backward at once, while each block's logits are at hand (the backward would otherwise
// compute them again): d normed_f into d_normed, d embedding into head_dw.
ssm_status cuda_head(ssm_model *m, int T, int mode) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    int D = m->config.d_model, V = m->config.vocab_size;
    const bf16 *emb16 = w16(g, g->p.embedding);
    if (mode == HEAD_TRAIN)
        CUDA_TRY(cudaMemsetAsync(a->head_dw, 0, (size_t)V * D * sizeof(float), g->stream), "the head");
    for (int r0 = 0; r0 < T; r0 += a->head_rows) {
        int n = T - r0 < a->head_rows ? T - r0 : a->head_rows;
        const bf16 *h = a->normed_f + (size_t)r0 * D;
        int bwd = mode == HEAD_TRAIN;
        if (bwd) { // bf16 logits, as the reference's autocast head; d logits in their place
            SSM_TRY(cuda_matmul_forward(g->blas, a->dlogits, V, SSM_DTYPE_BF16, 0.0f, h, D, emb16, n, D, V));
            SSM_TRY(cuda_cross_entropy_bf16(a->nll + r0, NULL, a->dlogits, a->dlogits, V, a->targets + r0, n, V,
                                            g->count ? 1.0f / (float)g->count : 0.0f, g->stream));
            // d h = d logits . emb;  d emb (head_dw) += d logits^T . h
            SSM_TRY(cuda_matmul_backward(g->blas, a->d_normed + (size_t)r0 * D, D, SSM_DTYPE_BF16, 0.0f,
                                         a->head_dw, a->dlogits, V, h, D, emb16, n, D, V));
            continue;
        }
        SSM_TRY(cuda_matmul_forward(g->blas, a->logits, V, SSM_DTYPE_F32, 0.0f, h, D, emb16, n, D, V));
        if (mode == HEAD_LOGITS) {
            CUDA_TRY(cudaMemcpyAsync(g->host_logits + (size_t)r0 * V, a->logits, (size_t)n * V * sizeof(float),
                                     cudaMemcpyDeviceToHost, g->stream), "downloading logits");
            CUDA_TRY(cudaStreamSynchronize(g->stream), "downloading logits");
            continue;
        }
        SSM_TRY(cuda_cross_entropy(a->nll + r0, mode == HEAD_SCORE ? a->entropy + r0 : NULL, NULL,
                                   SSM_DTYPE_F32, a->logits, V, a->targets + r0, n, V, 1.0f, g->stream));
    }
    return SSM_OK;
}

extern "C" ssm_status cuda_model_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets,
                                         int B, int L, ssm_state *state, float *loss, float *logp,
                                         float *entropy) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_model_enter(g));
    size_t T = (size_t)B * L;
    int V = m->config.vocab_size;
    if (T > INT32_MAX / 4) return ssm_set_error(SSM_ERR_ARG, "batch x length = %zu tokens is too many", T);
    int mode = logp ? HEAD_SCORE : targets ? HEAD_LOSS : HEAD_LOGITS;
    if (mode != HEAD_LOGITS && !targets) return ssm_set_error(SSM_ERR_ARG, "scoring needs targets");
    // a forward with targets plans the backward's memory too (the same plan serves both) and
    // takes the head's backward on the way
    if (mode == HEAD_LOSS && !state) {
        SSM_TRY(cuda_model_reserve(m, B, L, 1)); // the plan, and the gradients from the first one
        mode = HEAD_TRAIN;
    } else {
        SSM_TRY(cuda_acts_plan(m, B, L, 0));
    }
    cuda_acts *a = &g->a;
    g->backward_ready = 0;
    g->has_targets = targets != NULL;
    g->has_state = state != NULL;
    g->count = 0;
    if (targets)
        for (size_t t = 0; t < T; t++) g->count += targets[t] >= 0;
    CUDA_TRY(cudaMemcpyAsync(a->tokens, tokens, T * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream), "uploading tokens");
    if (targets)
        CUDA_TRY(cudaMemcpyAsync(a->targets, targets, T * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream), "uploading targets");
    float *conv = NULL, *ssm = NULL;
    if (state) {
        SSM_TRY(cuda_state_device(g, state, &conv, &ssm));
        CUDA_TRY(cudaMemcpyAsync(a->pos, state->pos, (size_t)B * sizeof(int64_t), cudaMemcpyHostToDevice, g->stream),
                 "uploading positions");
    }
    SSM_TRY(forward_layers(m, B, L, conv, ssm, mode == HEAD_TRAIN));
    g->routed = 1;
    if (mode == HEAD_LOGITS && g->host_logits_cap < T * V) {
        free(g->host_logits);
        g->host_logits = (float *)malloc(T * V * sizeof(float));
        g->host_logits_cap = g->host_logits ? T * V : 0;
        if (!g->host_logits) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for %zu x %d logits", T, V);
    }
    SSM_TRY(cuda_head(m, (int)T, mode));
    if (state) SSM_TRY(cuda_state_to_host(state)); // the host copy stays the current one
    if (mode == HEAD_LOSS || mode == HEAD_TRAIN) {
        double sum = 0, aux = 0;
        SSM_TRY(cuda_sum(a->sum, a->nll, T, a->work, a->work_bytes, g->stream));
        CUDA_TRY(cudaMemcpyAsync(&sum, a->sum, sizeof sum, cudaMemcpyDeviceToHost, g->stream), "the loss");
        const ssm_config *c = &m->config;
        if (a->moe_aux && c->moe.routing == SSM_MOE_SOFTMAX) // loss += coef * the Switch loss
            CUDA_TRY(cudaMemcpyAsync(&aux, a->moe_aux, sizeof aux, cudaMemcpyDeviceToHost, g->stream), "the loss");
        CUDA_TRY(cudaStreamSynchronize(g->stream), "the loss");
        double l = g->count ? sum / (double)g->count : 0.0;
        if (!isfinite(l))
            return ssm_set_error(SSM_ERR_NUMERIC, "the loss is not finite (%g): the model "
                                 "diverged; lower the learning rate", l);
        *loss = (float)(l + c->moe.aux_loss_coef * aux);
        g->aux_loss = aux;
        g->backward_ready = g->count > 0 && mode == HEAD_TRAIN;
    } else if (mode == HEAD_SCORE) {
        CUDA_TRY(cudaMemcpyAsync(logp, a->nll, T * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "the scores");
        if (entropy)
            CUDA_TRY(cudaMemcpyAsync(entropy, a->entropy, T * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "the scores");
        CUDA_TRY(cudaStreamSynchronize(g->stream), "the scores");
        for (size_t t = 0; t < T; t++) {
            int ok = targets[t] >= 0;
            logp[t] = ok ? -logp[t] : NAN;
            if (entropy && !ok) entropy[t] = NAN;
        }
    }
    return SSM_OK;
}

extern "C" const float *cuda_model_logits(ssm_model *m) {
    ssm_cuda_model *g = m->cuda;
    return g->has_targets ? NULL : g->host_logits;
}

static ssm_status mamba1_backward(ssm_model *m, int i);

extern "C" ssm_status cuda_model_backward(ssm_model *m) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    if (!g->has_targets || !g->backward_ready) {
        if (g->has_state)
            return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm_backward after a forward from a carried "
                                 "state is not supported");
        return ssm_set_error(SSM_ERR_ARG, "ssm_backward needs a training forward with targets "
                             "(at least one scored position) just before it");
    }
    SSM_TRY(cuda_model_enter(g));
    const ssm_config *c = &m->config;
    cudaStream_t st = g->stream;
    int B = a->B, L = a->L, T = B * L, D = c->d_model;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // the head's backward ran in the forward: d normed_f is in d_normed, d embedding in head_dw
    const float one = 1.0f;
    if (cublasSaxpy(g->blas, c->vocab_size * D, &one, a->head_dw, 1, g->g.embedding, 1) != CUBLAS_STATUS_SUCCESS)
        return ssm_set_error(SSM_ERR_DEVICE, "the head's gradient: cuBLAS axpy failed");
    // norm_f: d r_n
    CUDA_TRY(cudaMemsetAsync(a->d_resid, 0, (size_t)T * D * sizeof(float), st), "the backward");
    SSM_TRY(cuda_rmsnorm_backward(a->d_resid, g->g.norm_f, a->d_normed, a->resid_f, g->p.norm_f,
                                  a->rstd_f, T, D, BF, a->work, a->work_bytes, st));
    for (int i = c->n_layer - 1; i >= 0; i--) {
        const ssm_layer_params *p = &g->p.layers[i];
        cuda_layer_acts *la = &a->layers[i];
        // r_{i+1} = r_i + mixer(h): d h from d r (the GEMMs take its bf16 copy)
        SSM_TRY(cuda_to_bf16(a->d_resid16, a->d_resid, (size_t)T * D, st));
        switch (c->layer_kind[i]) {
        case SSM_LAYER_MAMBA2: SSM_TRY(cuda_mamba2_backward(m, i)); break;
        case SSM_LAYER_MLP: SSM_TRY(cuda_mlp_backward(m, i)); break;
        case SSM_LAYER_MOE: SSM_TRY(cuda_moe_backward(m, i)); break;
        case SSM_LAYER_ATTENTION: SSM_TRY(cuda_attention_layer_backward(m, i)); break;
        default: SSM_TRY(mamba1_backward(m, i));
        }
        // h = RMSNorm(r): d r += ... (the residual path keeps its gradient)
        SSM_TRY(cuda_rmsnorm_backward(a->d_resid, g->g.layers[i].norm, a->d_normed, la->resid, p->norm, la->rstd,
                                      T, D, BF, a->work, a->work_bytes, st));
    }
    SSM_TRY(cuda_embedding_backward(g->g.embedding, a->tokens, a->d_resid, T, D, a->work, a->work_bytes, st));
    g->backward_ready = 0;
    return SSM_OK;
}

// The fused Mamba-1 mixer's backward, layer i: from d r (a->d_resid16) to d h (a->d_normed).
static ssm_status mamba1_backward(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    const ssm_config *c = &m->config;
    cudaStream_t st = g->stream;
    int B = a->B, L = a->L, T = B * L;
    int D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv, R = c->dt_rank,
        XD = R + 2 * N;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    const ssm_layer_params *p = &g->p.layers[i];
    ssm_layer_params *gr = &g->g.layers[i];
    cuda_layer_acts *la = &a->layers[i];
    // r_{i+1} = r_i + out_proj(gated): d gated = d r . out_proj; d out_proj += d r^T . gated
    SSM_TRY(cuda_matmul_backward(g->blas, a->d_gated, E, BF, 0.0f, gr->mamba1.out_proj, a->d_resid16, D,
                                 la->gated, E, w16(g, p->mamba1.out_proj), T, E, D));
    // the scan with its gate: d u, d dt, d B, d C, d z and the scan's own parameters
    ssm_scan_args sa = scan_args(c, p, la, B, L);
    sa.ckpt = la->ckpt; // saved by the training forward
    SSM_TRY(cuda_scan_backward(&sa, a->d_gated, a->d_u, a->d_dt, a->d_x_dbl + R, a->d_x_dbl + R + N,
                               a->d_xz + E, gr->mamba1.dt_proj_b, gr->mamba1.A_log, gr->mamba1.D, a->work, a->work_bytes, st));
    // dt = dt_proj(x_dbl[:, :R])
    SSM_TRY(cuda_matmul_backward(g->blas, a->d_x_dbl, XD, BF, 0.0f, gr->mamba1.dt_proj_w, a->d_dt, E,
                                 la->x_dbl, XD, w16(g, p->mamba1.dt_proj_w), T, R, E));
    // x_dbl = x_proj(u): d u += d x_dbl . x_proj (without selection x_dbl does not see u)
    if (c->non_selective) SSM_TRY(cuda_fixed_x_dbl_backward(gr->mamba1.x_proj, a->d_x_dbl, XD, T, E, XD, st));
    else SSM_TRY(cuda_matmul_backward(g->blas, a->d_u, E, BF, 1.0f, gr->mamba1.x_proj, a->d_x_dbl, XD, la->u, E,
                                      w16(g, p->mamba1.x_proj), T, E, XD));
    // u = silu(conv1d(x))
    SSM_TRY(cuda_conv_backward(a->d_xz, gr->mamba1.conv_w, gr->mamba1.conv_b, a->d_u, la->xz, 2 * E, p->mamba1.conv_w,
                               p->mamba1.conv_b, B, L, E, K, BF, a->work, a->work_bytes, st));
    // [x | z] = in_proj(h)
    SSM_TRY(cuda_matmul_backward(g->blas, a->d_normed, D, BF, 0.0f, gr->mamba1.in_proj, a->d_xz, 2 * E,
                                 la->normed, D, w16(g, p->mamba1.in_proj), T, D, 2 * E));
    return SSM_OK;
}

// Used by step.cu: the prompt of a greedy generation, from device state buffers.
ssm_status cuda_forward_prompt(ssm_model *m, const int32_t *tokens, int B, int L, float *conv,
                               float *ssm) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_acts_plan(m, B, L, 0));
    CUDA_TRY(cudaMemcpyAsync(g->a.tokens, tokens, (size_t)B * L * sizeof(int32_t), cudaMemcpyHostToDevice,
                             g->stream), "uploading tokens");
    g->backward_ready = 0;
    g->has_targets = 1; // no logits to show
    CUDA_TRY(cudaMemsetAsync(g->a.pos, 0, (size_t)B * sizeof(int64_t), g->stream), "the prompt's positions");
    g->routed = 1;
    return forward_layers(m, B, L, conv, ssm, 0);
}
