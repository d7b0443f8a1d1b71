// model.cu: a model's copy on a GPU: fp32 master weights with bf16 working copies, fp32
// gradients and AdamW moments (each one allocation, made before the first step), the
// activation plan, the recurrent state's device copy, and the optimizer step on the device.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.cuh"
extern "C" {
#include "../src/layers.h" // the kinds' state slot sizes
}

static const size_t BLAS_WORK_BYTES = 32u << 20;

extern "C" int cuda_device_count(void) { return ssm_cuda_device_count(); }

ssm_status cuda_model_alloc(ssm_cuda_model *g, void **ptr, size_t bytes, const char *what) {
    cudaError_t e = cudaMalloc(ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *ptr = NULL;
        cudaGetLastError(); // clear the sticky-free allocation error
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return ssm_set_error(SSM_ERR_NOMEM, "GPU %d: cannot allocate %.1f MiB for %s (%.1f of "
                             "%.1f GiB free); use a smaller batch or sequence length", g->device,
                             bytes / 1048576.0, what, free_b / 1073741824.0, total_b / 1073741824.0);
    }
    g->bytes += bytes;
    if (g->bytes > g->peak) g->peak = g->bytes;
    return SSM_OK;
}

void cuda_model_release(ssm_cuda_model *g, void *ptr, size_t bytes) {
    if (!ptr) return;
    cudaFree(ptr);
    g->bytes -= bytes;
}

ssm_status cuda_model_enter(ssm_cuda_model *g) {
    CUDA_TRY(cudaSetDevice(g->device), "selecting the GPU");
    CUDA_TRY(cudaGetLastError(), "an earlier GPU operation");
    return SSM_OK;
}

// Device pointers for every tensor: the host layout (m->params into params_blob) moved onto base.
static void bind_device(const ssm_model *m, const ssm_params *host, const float *host_base,
                        float *base, ssm_params *out) {
#define MOVE(f) out->f = base + (host->f - host_base)
    MOVE(embedding);
    MOVE(norm_f);
    for (int i = 0; i < m->config.n_layer; i++) {
        MOVE(layers[i].norm);
        // the mixer's tensors, in its kind's table order (mixer[] aliases every kind's struct)
        for (int k = 0; k < ssm_kind_of(&m->config, i)->n_tensors; k++) MOVE(layers[i].mixer[k]);
    }
#undef MOVE
}

static ssm_status alloc_training(ssm_model *m, ssm_adamw *opt) {
    ssm_cuda_model *g = m->cuda;
    size_t n = g->n_params;
    if (!g->grads) {
        SSM_TRY(cuda_model_alloc(g, (void **)&g->grads, n * sizeof(float), "the gradients"));
        CUDA_TRY(cudaMemsetAsync(g->grads, 0, n * sizeof(float), g->stream), "zeroing gradients");
        bind_device(m, &m->params, m->params_blob, g->grads, &g->g);
    }
    if (opt && !g->moments) {
        SSM_TRY(cuda_model_alloc(g, (void **)&g->moments, 2 * n * sizeof(float), "the AdamW moments"));
        CUDA_TRY(cudaMemcpyAsync(g->moments, opt->m, n * sizeof(float), cudaMemcpyHostToDevice, g->stream), "uploading moments");
        CUDA_TRY(cudaMemcpyAsync(g->moments + n, opt->v, n * sizeof(float), cudaMemcpyHostToDevice, g->stream), "uploading moments");
        CUDA_TRY(cudaStreamSynchronize(g->stream), "uploading moments");
    }
    return SSM_OK;
}

void cuda_decode_free(ssm_cuda_model *g) {
    if (g->dec.step_graph) cudaGraphExecDestroy(g->dec.step_graph);
    for (int i = 0; i < 2; i++)
        if (g->dec.gen_graph[i]) cudaGraphExecDestroy(g->dec.gen_graph[i]);
    cuda_model_release(g, g->dec.gen_state, g->dec.gen_state_bytes);
    cuda_model_release(g, g->dec.blob, g->dec.bytes);
    memset(&g->dec, 0, sizeof g->dec);
}

static void free_acts(ssm_cuda_model *g) {
    cuda_model_release(g, g->a.blob, g->a.bytes);
    free(g->a.layers);
    free(g->a.moe_start_host);
    memset(&g->a, 0, sizeof g->a);
}

extern "C" void cuda_model_detach(ssm_model *m) {
    ssm_cuda_model *g = m ? m->cuda : NULL;
    if (!g) return;
    cudaSetDevice(g->device);
    cudaStreamSynchronize(g->stream);
    cuda_decode_free(g);
    free_acts(g);
    cudaFree(g->params);
    cudaFree(g->params16);
    cudaFree(g->grads);
    cudaFree(g->moments);
    cudaFree(g->tensors);
    cudaFree(g->blas_work);
    if (g->blas) cublasDestroy(g->blas);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g->p.layers);
    free(g->g.layers);
    free(g->host_logits);
    free(g);
    m->cuda = NULL;
}

// What this backend can run, decided from the config before anything is allocated.
extern "C" ssm_status cuda_model_supports(const ssm_config *c) {
    for (int i = 0; i < c->n_layer; i++)
        if (!ssm_kind_of(c, i)->cuda)
            return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend runs Mamba-1, Mamba-2, MLP, MoE and attention layers; "
                                 "layer %d is %s: use --device cpu for this model", i,
                                 ssm_layer_kind_name(c->layer_kind[i]));
    if (cuda_model_has_kind(c, SSM_LAYER_MAMBA1) && c->d_state > 32)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend supports d_state <= 32 (the model has %d): "
                             "use --device cpu for this model", c->d_state);
    if (cuda_model_has_kind(c, SSM_LAYER_MAMBA2) && (c->mamba2.d_state > 128 || c->mamba2.d_conv > 64))
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend supports Mamba-2 with d_state <= 128 and "
                             "d_conv <= 64 (the model has %d and %d): use --device cpu for this model",
                             c->mamba2.d_state, c->mamba2.d_conv);
    if (cuda_model_has_kind(c, SSM_LAYER_ATTENTION) && c->attention.head_dim > 128)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend supports attention with head_dim <= 128 (the "
                             "model has %d): use --device cpu for this model", c->attention.head_dim);
    return SSM_OK;
}

extern "C" ssm_status cuda_model_attach(ssm_model *m, ssm_adamw *opt, int device) {
    SSM_TRY(cuda_model_supports(&m->config));
    ssm_cuda_model *g = (ssm_cuda_model *)calloc(1, sizeof *g);
    if (!g) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    m->cuda = g;
    g->device = device;
    g->n_params = m->n_params;
    int nl = m->config.n_layer;
    g->p.layers = (ssm_layer_params *)calloc(nl, sizeof(ssm_layer_params));
    g->g.layers = (ssm_layer_params *)calloc(nl, sizeof(ssm_layer_params));
    ssm_status s = SSM_OK;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) s = ssm_cuda_fail(e, "starting the GPU");
    if (!s && (!g->p.layers || !g->g.layers)) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    if (!s && cublasCreate(&g->blas) != CUBLAS_STATUS_SUCCESS)
        s = ssm_set_error(SSM_ERR_DEVICE, "GPU %d: cuBLAS would not start", device);
    size_t n = m->n_params;
    if (!s) s = cuda_model_alloc(g, (void **)&g->params, n * sizeof(float), "the parameters");
    if (!s) s = cuda_model_alloc(g, (void **)&g->params16, n * sizeof(bf16), "the bf16 weights");
    if (!s) s = cuda_model_alloc(g, &g->blas_work, BLAS_WORK_BYTES, "the cuBLAS workspace");
    if (!s) s = cuda_model_alloc(g, (void **)&g->tensors, m->n_tensors * sizeof(cuda_adamw_tensor), "the tensor table");
    if (!s) {
        cublasSetStream(g->blas, g->stream);
        cublasSetWorkspace(g->blas, g->blas_work, BLAS_WORK_BYTES);
        bind_device(m, &m->params, m->params_blob, g->params, &g->p);
        cuda_adamw_tensor *t = (cuda_adamw_tensor *)malloc(m->n_tensors * sizeof *t);
        if (!t) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        for (int k = 0; t && k < m->n_tensors; k++)
            t[k] = {m->tensors[k].offset, m->tensors[k].numel, m->tensors[k].decay};
        // on the model's stream: a cudaMemcpy from pageable memory may return before its DMA
        // lands, and this non-blocking stream would not wait for it (the bf16 copy below would
        // read stale weights)
        if (t && ((e = cudaMemcpyAsync(g->tensors, t, m->n_tensors * sizeof *t, cudaMemcpyHostToDevice, g->stream)) ||
                  (e = cudaMemcpyAsync(g->params, m->params_blob, n * sizeof(float), cudaMemcpyHostToDevice, g->stream)) ||
                  (e = cudaStreamSynchronize(g->stream))))
            s = ssm_cuda_fail(e, "uploading the parameters");
        free(t);
    }
    if (!s) s = cuda_to_bf16(g->params16, g->params, n, g->stream);
    if (!s && cuda_model_has_kind(&m->config, SSM_LAYER_ATTENTION)) s = cuda_attention_prepare();
    if (!s && opt) s = alloc_training(m, opt);
    if (!s && (e = cudaStreamSynchronize(g->stream))) s = ssm_cuda_fail(e, "uploading the parameters");
    if (s) cuda_model_detach(m);
    return s;
}

extern "C" ssm_status cuda_model_sync_host(ssm_model *m, ssm_adamw *opt) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_model_enter(g));
    size_t n = g->n_params * sizeof(float);
    CUDA_TRY(cudaStreamSynchronize(g->stream), "finishing GPU work");
    CUDA_TRY(cudaMemcpy(m->params_blob, g->params, n, cudaMemcpyDeviceToHost), "downloading parameters");
    if (g->grads) CUDA_TRY(cudaMemcpy(m->grads_blob, g->grads, n, cudaMemcpyDeviceToHost), "downloading gradients");
    if (opt && g->moments) {
        CUDA_TRY(cudaMemcpy(opt->m, g->moments, n, cudaMemcpyDeviceToHost), "downloading moments");
        CUDA_TRY(cudaMemcpy(opt->v, g->moments + g->n_params, n, cudaMemcpyDeviceToHost), "downloading moments");
    }
    return SSM_OK;
}

extern "C" size_t cuda_model_peak(const ssm_model *m) { return m->cuda ? m->cuda->peak : 0; }

extern "C" void cuda_model_zero_grad(ssm_model *m) {
    ssm_cuda_model *g = m->cuda;
    if (g->grads) cudaMemsetAsync(g->grads, 0, g->n_params * sizeof(float), g->stream);
}

// ---- the activation plan -----------------------------------------------------------------

// Carve the activation blob: the first pass (base == NULL) counts, the second assigns.
static size_t carve(cuda_acts *a, const ssm_config *c, size_t T, int training, size_t work,
                    size_t ckpt, char *base) {
    size_t D = c->d_model, E = c->d_inner, N = c->d_state, R = c->dt_rank, V = c->vocab_size;
    size_t XD = R + 2 * N, rows = a->head_rows;
    const cuda_mamba2_widths w2 = cuda_mamba2_width(c);
    const size_t I = w2.I, G = w2.G, CD = w2.CD, ZD = w2.ZD;
    const cuda_mlp_widths wm = cuda_mlp_width(c);
    const int has1 = cuda_model_has_kind(c, SSM_LAYER_MAMBA1), has2 = cuda_model_has_kind(c, SSM_LAYER_MAMBA2);
    const int has_mlp = cuda_model_has_kind(c, SSM_LAYER_MLP);
    const int has_att = cuda_model_has_kind(c, SSM_LAYER_ATTENTION);
    const size_t QD = (size_t)c->attention.n_heads * c->attention.head_dim;
    const size_t KD = (size_t)c->attention.n_kv_heads * c->attention.head_dim;
    const int has_moe = cuda_model_has_kind(c, SSM_LAYER_MOE);
    const cuda_moe_widths we = cuda_moe_width(c);
    const size_t X = we.X, S = T * we.k;
    Carve cv = {base, 0};
    for (int i = 0; i < c->n_layer; i++) {
        cuda_layer_acts *la = &a->layers[i];
        if (!training && i > 0) { // nothing is kept for a backward: every layer reuses layer 0's
            *la = a->layers[0];   // buffers (those of every kind present), and the residual
            continue;             // stream adds in place
        }
        la->resid = cv.take<float>(T * D);
        la->normed = cv.take<bf16>(T * D);
        la->rstd = cv.take<float>(T);
        // the kind's own: layer i's in training, every kind present's otherwise
        int kind = c->layer_kind[i];
        if (training ? kind == SSM_LAYER_MAMBA1 : has1) {
            la->xz = cv.take<bf16>(T * 2 * E);
            la->u = cv.take<bf16>(T * E);
            la->x_dbl = cv.take<bf16>(T * XD);
            la->dt = cv.take<bf16>(T * E);
            la->gated = cv.take<bf16>(T * E);
            if (training && ckpt) la->ckpt = cv.take<float>(ckpt / sizeof(float));
        }
        if (training ? kind == SSM_LAYER_MAMBA2 : has2) {
            cuda_mamba2_acts *q = &la->mamba2;
            q->zxbcdt = cv.take<bf16>(T * ZD);
            q->xbc = cv.take<bf16>(T * CD);
            q->y = cv.take<bf16>(T * I);
            q->rstd = cv.take<float>(T * G);
            q->normed = cv.take<bf16>(T * I);
        }
        if (training ? kind == SSM_LAYER_MLP : has_mlp) {
            la->mlp.u = cv.take<bf16>(T * wm.U);
            la->mlp.a = cv.take<bf16>(T * wm.F);
        }
        if (training ? kind == SSM_LAYER_ATTENTION : has_att) {
            cuda_attention_acts *q = &la->attention;
            q->q = cv.take<bf16>(T * QD), q->k = cv.take<bf16>(T * KD), q->v = cv.take<bf16>(T * KD);
            q->o = cv.take<bf16>(T * QD);
            q->lse = cv.take<float>(T * c->attention.n_heads);
        }
        if (training ? kind == SSM_LAYER_MOE : has_moe) {
            cuda_moe_acts *q = &la->moe;
            q->logits = cv.take<float>(T * X), q->prob = cv.take<float>(T * X);
            q->sel = cv.take<int32_t>(S), q->w = cv.take<float>(S);
            q->start = cv.take<int32_t>(X + 1), q->slot = cv.take<int32_t>(S), q->row = cv.take<int32_t>(S);
            q->x = cv.take<bf16>(S * D), q->u = cv.take<bf16>(S * we.U), q->a = cv.take<bf16>(S * we.F);
            q->y = cv.take<float>(S * D);
            q->su = cv.take<bf16>(T * we.Us), q->sa = cv.take<bf16>(T * we.Fs);
        }
    }
    if (has_moe) {
        a->moe_stats = cv.take<float>((size_t)c->n_layer * 2 * X);
        a->moe_aux_grad = cv.take<float>(X);
        a->moe_aux = cv.take<double>(1);
    }
    a->resid_f = training ? cv.take<float>(T * D) : a->layers[0].resid;
    a->normed_f = cv.take<bf16>(T * D);
    a->rstd_f = cv.take<float>(T);
    a->tokens = cv.take<int32_t>(T);
    a->targets = cv.take<int32_t>(T);
    a->pos = cv.take<int64_t>(T); // B <= T entries
    a->nll = cv.take<float>(T);
    a->entropy = cv.take<float>(T);
    a->logits = cv.take<float>(rows * V);
    a->sum = cv.take<double>(1);
    a->work = cv.take<char>(work);
    if (training) {
        a->dlogits = cv.take<bf16>(rows * V);
        a->head_dw = cv.take<float>(V * D);
        a->d_resid = cv.take<float>(T * D);
        a->d_resid16 = cv.take<bf16>(T * D);
        a->d_normed = cv.take<bf16>(T * D);
        if (has1) {
            a->d_xz = cv.take<bf16>(T * 2 * E);
            a->d_u = cv.take<bf16>(T * E);
            a->d_x_dbl = cv.take<bf16>(T * XD);
            a->d_dt = cv.take<bf16>(T * E);
            a->d_gated = cv.take<bf16>(T * E);
        }
        if (has2) {
            a->mamba2.d_zxbcdt = cv.take<bf16>(T * ZD);
            a->mamba2.d_xbc = cv.take<bf16>(T * CD);
            a->mamba2.d_y = cv.take<bf16>(T * I);
            a->mamba2.d_normed = cv.take<bf16>(T * I);
        }
        if (has_mlp) {
            a->d_mlp.u = cv.take<bf16>(T * wm.U);
            a->d_mlp.a = cv.take<bf16>(T * wm.F);
        }
        if (has_att) {
            cuda_attention_acts *q = &a->d_attention;
            q->q = cv.take<bf16>(T * QD), q->k = cv.take<bf16>(T * KD), q->v = cv.take<bf16>(T * KD);
            q->o = cv.take<bf16>(T * QD);
        }
        if (has_moe) {
            cuda_moe_scratch *q = &a->d_moe;
            q->d_logits = cv.take<float>(T * X), q->d_logits16 = cv.take<bf16>(T * X);
            q->d_w = cv.take<float>(S), q->d_y = cv.take<bf16>(S * D);
            q->d_u = cv.take<bf16>(S * we.U), q->d_a = cv.take<bf16>(S * we.F), q->d_x = cv.take<float>(S * D);
            q->d_su = cv.take<bf16>(T * we.Us), q->d_sa = cv.take<bf16>(T * we.Fs);
            q->d_h = cv.take<float>(T * D);
        }
    }
    return cv.off;
}

static size_t max_z(size_t a, size_t b) { return a > b ? a : b; }

// The scan's arguments for (B, L) with stand-in pointers: what its plan and sizes depend on.
static ssm_scan_args scan_shape(const ssm_config *c, int B, int L) {
    static const float dummy[1] = {0};
    ssm_scan_args sa = {};
    sa.B = B, sa.L = L, sa.E = c->d_inner, sa.N = c->d_state, sa.dtype = SSM_DTYPE_BF16;
    sa.u = sa.dt = sa.Bm = sa.Cm = sa.z = dummy;
    sa.ld_bc = c->dt_rank + 2 * c->d_state, sa.ld_z = 2 * c->d_inner;
    sa.dt_bias = sa.A_log = sa.D = dummy;
    return sa;
}

// Workspace the ops need for (B, L): the largest of them, used one at a time.
static size_t work_bytes(const ssm_model *m, int B, int L, int training) {
    const ssm_config *c = &m->config;
    ssm_scan_args sa = scan_shape(c, B, L);
    // the backward reads the forward's saved states: its workspace then has no room for them
    static float ck_dummy[1];
    if (training && cuda_scan_checkpoint_bytes(&sa)) sa.ckpt = ck_dummy;
    const int has1 = cuda_model_has_kind(c, SSM_LAYER_MAMBA1);
    size_t T = (size_t)B * L, w = has1 ? cuda_scan_forward_workspace(&sa) : 0;
    w = max_z(w, cuda_sum_workspace(T));
    if (cuda_model_has_kind(c, SSM_LAYER_MAMBA2)) w = max_z(w, cuda_mamba2_work_bytes(c, B, L, training));
    if (training) {
        if (has1) {
            w = max_z(w, cuda_scan_backward_workspace(&sa));
            w = max_z(w, cuda_conv_backward_workspace(B, L, c->d_inner, c->d_conv));
        }
        w = max_z(w, cuda_rmsnorm_backward_workspace((int)T, c->d_model));
        w = max_z(w, cuda_embedding_backward_workspace((int)T, c->d_model));
        w = max_z(w, cuda_sumsq_workspace(m->n_params));
        if (cuda_model_has_kind(c, SSM_LAYER_ATTENTION)) w = max_z(w, cuda_attention_work_bytes(c, B, L));
    }
    return w;
}

ssm_status cuda_acts_plan(ssm_model *m, int B, int L, int training) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *a = &g->a;
    if (a->blob && a->B == B && a->L == L && a->training >= training) return SSM_OK;
    const ssm_config *c = &m->config;
    size_t T = (size_t)B * L;
    // the head's rows at a time: all of them for small vocabularies, else ~512 MiB of logits
    size_t rows = ((size_t)512 << 20) / ((size_t)c->vocab_size * sizeof(float));
    cuda_acts next = {};
    next.head_rows = (int)(rows < 64 ? 64 : rows > T ? T : rows);
    next.layers = (cuda_layer_acts *)calloc(c->n_layer, sizeof(cuda_layer_acts));
    if (cuda_model_has_kind(c, SSM_LAYER_MOE))
        next.moe_start_host = (int32_t *)calloc((size_t)c->n_layer * (c->moe.n_experts + 1), sizeof(int32_t));
    if (!next.layers || (cuda_model_has_kind(c, SSM_LAYER_MOE) && !next.moe_start_host)) {
        free(next.layers), free(next.moe_start_host);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    }
    size_t work = work_bytes(m, B, L, training);
    ssm_scan_args sa = scan_shape(c, B, L);
    size_t ckpt = cuda_model_has_kind(c, SSM_LAYER_MAMBA1) ? cuda_scan_checkpoint_bytes(&sa) : 0;
    size_t need = carve(&next, c, T, training, work, ckpt, NULL);
    if (a->blob && need <= a->bytes) { // a smaller shape fits: re-carve in place
        next.blob = a->blob, next.bytes = a->bytes;
        free(a->layers), free(a->moe_start_host);
    } else {
        free_acts(g);
        ssm_status s = cuda_model_alloc(g, &next.blob, need, "the activations");
        if (s) {
            free(next.layers), free(next.moe_start_host);
            char msg[512];
            snprintf(msg, sizeof msg, "%s (batch %d x length %d)", ssm_last_error(), B, L);
            return ssm_set_error(s, "%s", msg);
        }
        next.bytes = need;
    }
    carve(&next, c, T, training, work, ckpt, (char *)next.blob);
    next.B = B, next.L = L, next.training = training, next.work_bytes = work;
    *a = next;
    g->backward_ready = 0;
    g->routed = 0;
    return SSM_OK;
}

extern "C" ssm_status cuda_model_reserve(ssm_model *m, int B, int L, int training) {
    SSM_TRY(cuda_model_enter(m->cuda));
    if (training) SSM_TRY(alloc_training(m, NULL));
    return cuda_acts_plan(m, B, L, training);
}

// ---- the recurrent state's device copy ---------------------------------------------------

struct cuda_state_buf {
    int device;
    float *conv, *ssm;
};

void cuda_state_slots(const ssm_config *c, int B, int layer, size_t *conv_off, size_t *ssm_off) {
    size_t co = 0, so = 0;
    for (int i = 0; i < layer; i++) {
        size_t conv, ssm;
        int channels;
        ssm_kind_of(c, i)->state_size(c, &conv, &ssm, &channels);
        co += conv * B, so += ssm * B;
    }
    *conv_off = co, *ssm_off = so;
}

ssm_status cuda_state_device(ssm_cuda_model *g, ssm_state *s, float **conv, float **ssm) {
    cuda_state_buf *d = (cuda_state_buf *)s->cuda;
    size_t nc = s->conv_total, ns = s->ssm_total;
    if (d && d->device != g->device) {
        SSM_TRY(ssm_state_to_host(s));
        cuda_state_free(s);
        d = NULL;
    }
    if (!d) {
        d = (cuda_state_buf *)calloc(1, sizeof *d);
        if (!d) return ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        d->device = g->device;
        s->cuda = d;
        CUDA_TRY(cudaMalloc((void **)&d->conv, (nc + ns) * sizeof(float)), "allocating a recurrent state");
        d->ssm = d->conv + nc;
        s->on_device = 0;
    }
    if (!s->on_device) {
        CUDA_TRY(cudaMemcpyAsync(d->conv, s->conv, nc * sizeof(float), cudaMemcpyHostToDevice, g->stream), "uploading a state");
        CUDA_TRY(cudaMemcpyAsync(d->ssm, s->ssm, ns * sizeof(float), cudaMemcpyHostToDevice, g->stream), "uploading a state");
        s->on_device = 1;
    }
    *conv = d->conv, *ssm = d->ssm;
    return SSM_OK;
}

extern "C" ssm_status cuda_state_to_host(ssm_state *s) {
    cuda_state_buf *d = (cuda_state_buf *)s->cuda;
    if (!d || !s->on_device) return SSM_OK;
    CUDA_TRY(cudaSetDevice(d->device), "selecting the GPU");
    CUDA_TRY(cudaDeviceSynchronize(), "finishing GPU work");
    CUDA_TRY(cudaMemcpy(s->conv, d->conv, s->conv_total * sizeof(float), cudaMemcpyDeviceToHost), "downloading a state");
    CUDA_TRY(cudaMemcpy(s->ssm, d->ssm, s->ssm_total * sizeof(float), cudaMemcpyDeviceToHost), "downloading a state");
    s->on_device = 0;
    return SSM_OK;
}

extern "C" void cuda_state_free(ssm_state *s) {
    cuda_state_buf *d = (cuda_state_buf *)s->cuda;
    if (!d) return;
    cudaSetDevice(d->device);
    cudaFree(d->conv);
    free(d);
    s->cuda = NULL;
    s->on_device = 0;
}

// ---- the optimizer step ------------------------------------------------------------------

extern "C" ssm_status cuda_model_adamw_step(ssm_adamw *o, ssm_model *m, float *grad_norm) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_model_enter(g));
    SSM_TRY(alloc_training(m, o));
    const ssm_adamw_config *c = &o->config;
    // the reduction's workspace is the activations' (planned with training = 1)
    size_t need = cuda_sumsq_workspace(g->n_params);
    void *work = g->a.work;
    size_t have = g->a.work_bytes;
    int own = 0;
    if (!work || have < need) { // no training plan yet (a direct call): a one-off workspace
        SSM_TRY(cuda_model_alloc(g, &work, need + sizeof(double), "the gradient norm"));
        have = need, own = 1;
    }
    double *sumsq = own ? (double *)((char *)work + need) : g->a.sum;
    ssm_status s = cuda_sumsq(sumsq, g->grads, g->n_params, work, have, g->stream);
    double ss = NAN;
    cudaError_t e = cudaSuccess;
    if (!s) e = cudaMemcpyAsync(&ss, sumsq, sizeof ss, cudaMemcpyDeviceToHost, g->stream);
    if (!s && !e) e = cudaStreamSynchronize(g->stream);
    if (!s && e) s = ssm_cuda_fail(e, "the gradient norm");
    double norm = sqrt(ss);
    if (!s && grad_norm) *grad_norm = (float)norm;
    if (!s && !isfinite(norm))
        s = ssm_set_error(SSM_ERR_NUMERIC, "the gradient norm is not finite at step %lld: "
                          "parameters left unchanged; lower the learning rate", (long long)o->step);
    if (!s) {
        cuda_adamw_args args;
        args.lr = ssm_adamw_lr(c, o->step);
        args.beta1 = c->beta1, args.beta2 = c->beta2, args.eps = c->eps;
        args.weight_decay = c->weight_decay, args.max_norm = c->grad_clip;
        args.bc1 = 1.0f - powf(c->beta1, (float)(o->step + 1));
        args.bc2 = 1.0f - powf(c->beta2, (float)(o->step + 1));
        s = cuda_adamw(g->params, g->params16, g->moments, g->moments + g->n_params, g->grads,
                       g->tensors, m->n_tensors, sumsq, &args, g->stream);
        if (!s) o->step++;
    }
    if (own) {
        cudaStreamSynchronize(g->stream);
        cuda_model_release(g, work, need + sizeof(double));
    }
    return s;
}
