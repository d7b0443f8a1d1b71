// step.cu: recurrent decode on the GPU, one token per sequence (libssm/src/step.c's loop), with
// the per-token work captured once in a CUDA graph and replayed; and greedy generation that
// keeps the tokens on the device (step + argmax + append, all in the graph). At small batch
// the step's projections go through gemv.cu (4 launches a layer instead of 6).
#include <stdlib.h>
#include <string.h>

#include "model.cuh"

ssm_status cuda_forward_prompt(ssm_model *m, const int32_t *tokens, int B, int L, float *conv,
                               float *ssm);

static cuda_gemv_args gemv_args(void *out, int ld_out, ssm_dtype out_dtype, const void *in, int ld_in,
                                const bf16 *w, int B, int k, int n) {
    cuda_gemv_args a = {};
    a.out = out, a.ld_out = ld_out, a.out_dtype = out_dtype, a.in = in, a.ld_in = ld_in;
    a.w = w, a.B = B, a.k = k, a.n = n;
    return a;
}

static ssm_status run_gemv(const cuda_decode *d, cuda_gemv_args a, cudaStream_t st) {
    a.overlap = d->gemv == 2;
    return cuda_gemv(&a, st);
}

ssm_status cuda_step_project(ssm_model *m, void *out, int ld_out, ssm_dtype out_dtype, float beta, const void *in,
                             int ld_in, const float *norm_w, const bf16 *w, int k, int n) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *d = &g->dec;
    const int B = d->batch;
    cuda_gemv_args a = gemv_args(out, ld_out, out_dtype, in, ld_in, w, B, k, n);
    a.beta = beta, a.norm_w = norm_w, a.eps = m->config.norm_eps;
    if (d->gemv && cuda_gemv_fits(&a)) return run_gemv(d, a, g->stream);
    if (norm_w) { // the norm into dec.h first, then the GEMM from it
        SSM_TRY(cuda_rmsnorm_forward(d->h, d->rstd, (const float *)in, norm_w, B, k, m->config.norm_eps,
                                     SSM_DTYPE_BF16, g->stream));
        in = d->h, ld_in = k;
    }
    return cuda_matmul_forward(g->blas, out, ld_out, out_dtype, beta, in, ld_in, w, B, k, n);
}

// Whether every projection of the step fits cuda_gemv at batch B (the shapes and the weights'
// alignment; the decode buffers are 256-byte aligned): 2 (with programmatic dependent launch,
// sm_90 and later), 1, or 0. SSM_CUDA_DECODE=cublas keeps cuBLAS, =gemv-serial launches
// without the overlap (bench-decode in scripts/run-on-device times all three).
static int gemv_fits_model(const ssm_model *m, int B) {
    const char *env = getenv("SSM_CUDA_DECODE");
    if (env && !strcmp(env, "cublas")) return 0;
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    const int mode = major >= 9 && !(env && !strcmp(env, "gemv-serial")) ? 2 : 1;
    const ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    const int D = c->d_model, E = c->d_inner, XD = c->dt_rank + 2 * c->d_state;
    alignas(16) static const float act[4] = {0}; // a 16-byte-aligned stand-in for the activations
    cuda_gemv_args a = gemv_args(NULL, 0, SSM_DTYPE_BF16, act, D, w16(g, g->p.embedding), B, D, c->vocab_size);
    a.norm_w = g->p.norm_f;
    if (!cuda_gemv_fits(&a)) return 0;
    for (int i = 0; i < c->n_layer; i++) {
        if (c->layer_kind[i] != SSM_LAYER_MAMBA1) continue; // Mamba-2's step runs on cuBLAS
        const ssm_layer_params *p = &g->p.layers[i];
        cuda_gemv_args in = gemv_args(NULL, 0, SSM_DTYPE_BF16, act, D, w16(g, p->mamba1.in_proj), B, D, 2 * E);
        in.norm_w = p->norm, in.u = (void *)act, in.E = E, in.K = c->d_conv; // with the conv step
        cuda_gemv_args xp = gemv_args(NULL, 0, SSM_DTYPE_BF16, act, E, w16(g, p->mamba1.x_proj), B, E, XD);
        cuda_gemv_args op = gemv_args(NULL, 0, SSM_DTYPE_F32, act, E, w16(g, p->mamba1.out_proj), B, E, D);
        if (!cuda_gemv_fits(&in) || !cuda_gemv_fits(&xp) || !cuda_gemv_fits(&op)) return 0;
    }
    return mode;
}

// Decode buffers for B rows (and out_cap greedy tokens per row); a new shape drops the graphs.
static ssm_status decode_plan(ssm_model *m, int B, int out_cap) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *d = &g->dec;
    if (d->blob && d->batch == B && d->out_cap >= out_cap) return SSM_OK;
    cuda_decode_free(g);
    const ssm_config *c = &m->config;
    size_t D = c->d_model, E = c->d_inner, XD = c->dt_rank + 2 * c->d_state, V = c->vocab_size;
    const cuda_mamba2_widths w2 = cuda_mamba2_width(c);
    const size_t I = w2.I, G = w2.G, CD = w2.CD, ZD = w2.ZD;
    const cuda_mlp_widths wm = cuda_mlp_width(c);
    const int has2 = cuda_model_has_kind(c, SSM_LAYER_MAMBA2), has_mlp = cuda_model_has_kind(c, SSM_LAYER_MLP);
    const int has_att = cuda_model_has_kind(c, SSM_LAYER_ATTENTION);
    const size_t QD = (size_t)c->attention.n_heads * c->attention.head_dim;
    const size_t KD = (size_t)c->attention.n_kv_heads * c->attention.head_dim;
    const int has_moe = cuda_model_has_kind(c, SSM_LAYER_MOE);
    const cuda_moe_widths we = cuda_moe_width(c);
    const size_t X = we.X, S = B * we.k;
    int pairs, counters;
    cuda_gemv_argmax_scratch((int)V, &pairs, &counters);
    // two passes over the same list: the first counts, the second hands out the pointers
    for (int pass = 0; pass < 2; pass++) {
        Carve cv = {(char *)d->blob, 0};
        d->tokens = cv.take<int32_t>(B);
        d->r = cv.take<float>(B * D);
        d->h = cv.take<bf16>(B * D);
        d->rstd = cv.take<float>(B);
        d->xz = cv.take<bf16>(B * 2 * E);
        d->u = cv.take<bf16>(B * E);
        d->dt = cv.take<bf16>(B * E);
        d->y = cv.take<bf16>(B * E);
        d->x_dbl = cv.take<bf16>(B * XD);
        if (has2) {
            d->mamba2.zxbcdt = cv.take<bf16>(B * ZD);
            d->mamba2.xbc = cv.take<bf16>(B * CD);
            d->mamba2.y = cv.take<bf16>(B * I);
            d->mamba2.normed = cv.take<bf16>(B * I);
            d->mamba2.rstd = cv.take<float>(B * G);
        }
        if (has_mlp) {
            d->mlp.u = cv.take<bf16>(B * wm.U);
            d->mlp.a = cv.take<bf16>(B * wm.F);
        }
        if (has_att) {
            d->attention.q = cv.take<bf16>(B * QD), d->attention.k = cv.take<bf16>(B * KD);
            d->attention.v = cv.take<bf16>(B * KD), d->attention.o = cv.take<bf16>(B * QD);
            d->attention_split_bytes = cuda_attention_step_work_bytes(c, B);
            d->attention_split = cv.take<char>(d->attention_split_bytes);
        }
        if (has_moe) { // every expert on the B rows
            cuda_moe_acts *q = &d->moe;
            q->logits = cv.take<float>(B * X), q->prob = cv.take<float>(B * X);
            q->sel = cv.take<int32_t>(S), q->w = cv.take<float>(S), q->row = cv.take<int32_t>(S);
            q->u = cv.take<bf16>(X * B * we.U), q->a = cv.take<bf16>(X * B * we.F), q->y = cv.take<float>(X * B * D);
            q->su = cv.take<bf16>(B * we.Us), q->sa = cv.take<bf16>(B * we.Fs);
        }
        d->pos = cv.take<int64_t>(B);
        d->logits = cv.take<float>(B * V);
        d->out = cv.take<int32_t>((size_t)B * (out_cap > 0 ? out_cap : 1));
        d->counter = cv.take<int>(1);
        d->part_v = cv.take<float>((size_t)pairs * B);
        d->part_i = cv.take<int32_t>((size_t)pairs * B);
        d->blocks_done = cv.take<unsigned>(counters);
        if (!pass) {
            SSM_TRY(cuda_model_alloc(g, &d->blob, cv.off, "the decode buffers"));
            d->bytes = cv.off;
        }
    }
    d->batch = B;
    d->out_cap = out_cap;
    d->gemv = gemv_fits_model(m, B);
    CUDA_TRY(cudaMemsetAsync(d->blocks_done, 0, counters * sizeof(unsigned), g->stream), "the decode buffers");
    return SSM_OK;
}

static ssm_status enqueue_argmax_append(ssm_model *m);

// One step: d.tokens (B) -> d.logits (B, V), the states in ssm_state's layout (cuda_state_slots);
// with greedy, then d.tokens = each row's argmax, appended to d.out.
static ssm_status enqueue_step(ssm_model *m, float *conv, float *ssm, int greedy) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *d = &g->dec;
    const ssm_config *c = &m->config;
    cudaStream_t st = g->stream;
    int B = d->batch, D = c->d_model, E = c->d_inner, N = c->d_state, K = c->d_conv,
        R = c->dt_rank, XD = R + 2 * N, V = c->vocab_size;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    SSM_TRY(cuda_embedding_forward(d->r, d->tokens, g->p.embedding, B, D, st));
    for (int i = 0; i < c->n_layer; i++) {
        const ssm_layer_params *p = &g->p.layers[i];
        size_t co, so;
        cuda_state_slots(c, B, i, &co, &so);
        float *conv_i = conv + co;
        if (c->layer_kind[i] != SSM_LAYER_MAMBA1) { // r += mixer(RMSNorm(r))
            if (c->layer_kind[i] == SSM_LAYER_MLP) SSM_TRY(cuda_mlp_step(m, i));
            else if (c->layer_kind[i] == SSM_LAYER_MOE) SSM_TRY(cuda_moe_step(m, i));
            else if (c->layer_kind[i] == SSM_LAYER_ATTENTION) SSM_TRY(cuda_attention_layer_step(m, i, ssm + so));
            else SSM_TRY(cuda_mamba2_step(m, i, conv_i, ssm + so));
            continue;
        }
        if (d->gemv) { // RMSNorm + in_proj + conv step in one launch, then x_proj
            cuda_gemv_args in = gemv_args(d->xz, 2 * E, BF, d->r, D, w16(g, p->mamba1.in_proj), B, D, 2 * E);
            in.norm_w = p->norm, in.eps = c->norm_eps;
            in.u = d->u, in.conv_state = conv_i, in.conv_w = p->mamba1.conv_w, in.conv_b = p->mamba1.conv_b;
            in.E = E, in.K = K;
            SSM_TRY(run_gemv(d, in, st));
        } else {
            SSM_TRY(cuda_step_project(m, d->xz, 2 * E, BF, 0.0f, d->r, D, p->norm, w16(g, p->mamba1.in_proj), D, 2 * E));
            SSM_TRY(cuda_conv_step(d->u, conv_i, d->xz, 2 * E, p->mamba1.conv_w, p->mamba1.conv_b, B, E, K, BF, st));
        }
        // [dt | B | C] = x_proj(u), or x_proj(1) without selection
        if (c->non_selective) SSM_TRY(cuda_fixed_x_dbl_forward(d->x_dbl, XD, p->mamba1.x_proj, B, E, XD, st));
        else SSM_TRY(cuda_step_project(m, d->x_dbl, XD, BF, 0.0f, d->u, E, NULL, w16(g, p->mamba1.x_proj), E, XD));
        ssm_scan_args sa = {};
        sa.B = B, sa.L = 1, sa.E = E, sa.N = N, sa.dtype = BF;
        sa.u = d->u, sa.Bm = d->x_dbl + R, sa.Cm = d->x_dbl + R + N, sa.ld_bc = XD;
        if (N % 4 == 0) { // the step applies dt_proj itself: one launch fewer per layer
            sa.dt = d->x_dbl, sa.ld_dt = XD, sa.dt_rank = R, sa.dt_w = w16(g, p->mamba1.dt_proj_w);
        } else {
            SSM_TRY(cuda_matmul_forward(g->blas, d->dt, E, BF, 0.0f, d->x_dbl, XD, w16(g, p->mamba1.dt_proj_w), B, R, E));
            sa.dt = d->dt;
        }
        sa.z = d->xz + E, sa.ld_z = 2 * E;
        sa.dt_bias = p->mamba1.dt_proj_b, sa.A_log = p->mamba1.A_log, sa.D = p->mamba1.D;
        sa.overlap = d->gemv == 2;
        SSM_TRY(cuda_scan_step(&sa, d->y, ssm + so, st));
        SSM_TRY(cuda_step_project(m, d->r, D, SSM_DTYPE_F32, 1.0f, d->y, E, NULL, w16(g, p->mamba1.out_proj), E, D));
    }
    // the final RMSNorm and the tied head: one launch on the gemv path, greedy's argmax and
    // append in it too
    if (greedy && d->gemv) {
        cuda_gemv_args a = gemv_args(d->logits, V, SSM_DTYPE_F32, d->r, D, w16(g, g->p.embedding), B, D, V);
        a.norm_w = g->p.norm_f, a.eps = c->norm_eps;
        a.argmax = {d->tokens, d->part_v, d->part_i, d->blocks_done, d->out, d->out_cap, d->counter, d->pos};
        if (cuda_gemv_fits(&a)) return run_gemv(d, a, st);
    }
    SSM_TRY(cuda_step_project(m, d->logits, V, SSM_DTYPE_F32, 0.0f, d->r, D, g->p.norm_f, w16(g, g->p.embedding), D, V));
    return greedy ? enqueue_argmax_append(m) : SSM_OK;
}

// out[b, *counter] = tokens[b]; then *counter += 1 (one block: B is a decode batch),
// and each sequence's position moves on by one (the next step's KV cache length)
__global__ void append_tokens(int32_t *out, int cap, int *counter, const int32_t *tokens, int64_t *pos, int B) {
    int c = *counter;
    for (int b = threadIdx.x; b < B; b += blockDim.x) out[(size_t)b * cap + c] = tokens[b], pos[b] += 1;
    __syncthreads();
    if (threadIdx.x == 0) *counter = c + 1;
}

// pos[b] = P for every sequence (after a prompt of P tokens)
__global__ void fill_positions(int64_t *pos, int B, int64_t P) {
    for (int b = threadIdx.x; b < B; b += blockDim.x) pos[b] = P;
}
static ssm_status set_positions(int64_t *pos, int B, int P, cudaStream_t st) {
    fill_positions<<<1, 128, 0, st>>>(pos, B, P);
    SSM_CUDA_CHECK_LAUNCH("the positions");
    return SSM_OK;
}

// d.tokens = argmax of d.logits per row, appended to d.out
static ssm_status enqueue_argmax_append(ssm_model *m) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *d = &g->dec;
    int V = m->config.vocab_size;
    SSM_TRY(cuda_argmax(d->tokens, d->logits, V, d->batch, V, g->stream));
    append_tokens<<<1, 128, 0, g->stream>>>(d->out, d->out_cap, d->counter, d->tokens, d->pos, d->batch);
    SSM_CUDA_CHECK_LAUNCH("append_tokens");
    return SSM_OK;
}

// Greedy generation replays a graph of GRAPH_STEPS steps: a graph launch costs more than the
// boundary between two kernels inside one
#define GRAPH_STEPS 8

// Capture `steps` decode steps (greedy or not) on the model's stream into an executable graph.
static ssm_status capture(ssm_model *m, int greedy, int steps, float *conv, float *ssm, cudaGraphExec_t *exec) {
    ssm_cuda_model *g = m->cuda;
    cudaGraph_t graph = NULL;
    CUDA_TRY(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal), "capturing the decode step");
    ssm_status s = SSM_OK;
    for (int i = 0; !s && i < steps; i++) s = enqueue_step(m, conv, ssm, greedy);
    cudaError_t e = cudaStreamEndCapture(g->stream, &graph);
    if (s) {
        if (graph) cudaGraphDestroy(graph);
        return s;
    }
    if (e == cudaSuccess) e = cudaGraphInstantiate(exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess) return ssm_cuda_fail(e, "capturing the decode step");
    return SSM_OK;
}

extern "C" ssm_status cuda_model_step(ssm_model *m, ssm_state *state, const int32_t *tokens, float *logits) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_model_enter(g));
    int B = state->batch, V = m->config.vocab_size;
    float *conv, *ssm;
    SSM_TRY(decode_plan(m, B, g->dec.out_cap));
    SSM_TRY(cuda_state_device(g, state, &conv, &ssm));
    cuda_decode *d = &g->dec;
    if (d->step_graph && d->graph_state != conv) {
        cudaGraphExecDestroy(d->step_graph);
        d->step_graph = NULL;
    }
    if (!d->step_graph) {
        SSM_TRY(capture(m, 0, 1, conv, ssm, &d->step_graph));
        d->graph_state = conv;
    }
    CUDA_TRY(cudaMemcpyAsync(d->tokens, tokens, B * sizeof(int32_t), cudaMemcpyHostToDevice, g->stream), "uploading tokens");
    CUDA_TRY(cudaMemcpyAsync(d->pos, state->pos, B * sizeof(int64_t), cudaMemcpyHostToDevice, g->stream), "uploading positions");
    CUDA_TRY(cudaGraphLaunch(d->step_graph, g->stream), "the decode step");
    CUDA_TRY(cudaMemcpyAsync(logits, d->logits, (size_t)B * V * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "downloading logits");
    CUDA_TRY(cudaStreamSynchronize(g->stream), "the decode step");
    return SSM_OK;
}

extern "C" ssm_status cuda_model_generate_greedy(ssm_model *m, const int32_t *prompt, int B, int P,
                                                 int n_new, int32_t *out) {
    ssm_cuda_model *g = m->cuda;
    SSM_TRY(cuda_model_enter(g));
    const ssm_config *c = &m->config;
    int D = c->d_model, V = c->vocab_size;
    // the prompt and every new token but the last enter the KV caches (as ssm_step would check)
    if (cuda_model_has_kind(c, SSM_LAYER_ATTENTION) && (int64_t)P + n_new - 1 > c->attention.max_context)
        return ssm_set_error(SSM_ERR_ARG, "a prompt of %d and %d new tokens would reach %lld positions, past the "
                             "attention layers' KV cache of attention.max_context = %d positions", P, n_new,
                             (long long)P + n_new - 1, c->attention.max_context);
    SSM_TRY(decode_plan(m, B, n_new));
    cuda_decode *d = &g->dec;
    // the generation's own state (kept with the decode buffers, so that the graphs captured over
    // it serve the next generation of this shape too), zero at the start, never leaves the device
    size_t conv_total, ssm_total;
    cuda_state_slots(c, B, c->n_layer, &conv_total, &ssm_total);
    if (!d->gen_state) {
        d->gen_state_bytes = (conv_total + ssm_total) * sizeof(float);
        SSM_TRY(cuda_model_alloc(g, (void **)&d->gen_state, d->gen_state_bytes, "the generation state"));
    }
    float *conv = d->gen_state, *ssm = conv + conv_total;
    ssm_status s = SSM_OK;
    cudaError_t e = cudaMemsetAsync(conv, 0, d->gen_state_bytes, g->stream);
    if (!e) e = cudaMemsetAsync(d->counter, 0, sizeof(int), g->stream);
    if (e) s = ssm_cuda_fail(e, "the generation state");
    // the prompt in one parallel pass; the first new token from its last position
    if (!s) s = cuda_forward_prompt(m, prompt, B, P, conv, ssm);
    if (!s) s = cuda_matmul_forward(g->blas, d->logits, V, SSM_DTYPE_F32, 0.0f,
                                    g->a.normed_f + (size_t)(P - 1) * D, P * D,
                                    w16(g, g->p.embedding), B, D, V);
    if (!s) s = enqueue_argmax_append(m);
    // the first step's token sits at position P (append_tokens moves pos on after each step)
    if (!s) s = set_positions(d->pos, B, P, g->stream);
    // then the n_new - 1 further tokens: a graph of GRAPH_STEPS steps, one of a single step for
    // the rest (each captured once for the decode buffers)
    const int full = (n_new - 1) / GRAPH_STEPS, rest = (n_new - 1) % GRAPH_STEPS;
    if (!s && full && !d->gen_graph[0]) s = capture(m, 1, GRAPH_STEPS, conv, ssm, &d->gen_graph[0]);
    if (!s && rest && !d->gen_graph[1]) s = capture(m, 1, 1, conv, ssm, &d->gen_graph[1]);
    for (int i = 0; !s && i < full + rest; i++)
        if ((e = cudaGraphLaunch(d->gen_graph[i < full ? 0 : 1], g->stream))) s = ssm_cuda_fail(e, "the decode steps");
    if (!s && (e = cudaMemcpy2DAsync(out, n_new * sizeof(int32_t), d->out, d->out_cap * sizeof(int32_t),
                                     n_new * sizeof(int32_t), B, cudaMemcpyDeviceToHost, g->stream)))
        s = ssm_cuda_fail(e, "downloading tokens");
    if (!s && (e = cudaStreamSynchronize(g->stream))) s = ssm_cuda_fail(e, "the generation");
    cudaStreamSynchronize(g->stream);
    return s;
}
