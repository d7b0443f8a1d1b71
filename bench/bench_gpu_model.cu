// bench_gpu_model: the whole model on the GPU through the public API (what ssm-train,
// ssm-score and ssm-generate run), at the shapes of docs/architecture.md, 'Figures to beat':
//   train    130M (24 x 768, V 50280), B 8 x L 2048: forward + backward + AdamW, tokens/s and
//            peak device memory
//   score    the same model and batch, forward only with per-position log p (scoring)
//   generate the same model, prompt 128 + 256 new tokens, greedy, batch 1 and 64: new tokens
//            over the whole time (prompt included)
//   dna1m    the DNA model of the paper's size (6 x 128, V 16), B 1 x L 1,048,576: one training
//            step, time and peak memory
//   m2train, m2score, m2generate  the same at the 130M Mamba-2 shape (24 x 768, headdim 64,
//            N 128, one group; mamba_ssm's defaults)
//   jtrain, jscore, jgenerate  the same for a Jamba-style hybrid at that width (model_on_gpu):
//            Mamba-1, attention, SwiGLU MLP and MoE layers
// Floors, measured in the same run: matrix flops / the cuBLAS bf16 GEMM rate (8192^3), and for
// decoding the bf16 weights read per step / the device-to-device copy bandwidth.
//
//   bench_gpu_model [train|score|generate|generate1|generate64|dna1m|m2train|m2score|m2generate|
//                    jtrain|jscore|jgenerate ...]
//   (default: all)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "ssm/ssm.h"

#define OK(call)                                                                                \
    do {                                                                                        \
        ssm_status s_ = (call);                                                                 \
        if (s_ != SSM_OK) {                                                                     \
            fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call, ssm_last_error());   \
            exit(1);                                                                            \
        }                                                                                       \
    } while (0)

static double now(void) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static double gemm_rate, copy_bw; // flop/s, bytes/s

static void measure_floors(void) {
    int n = 8192;
    void *a, *b, *c;
    cudaMalloc(&a, (size_t)n * n * 2), cudaMalloc(&b, (size_t)n * n * 2), cudaMalloc(&c, (size_t)n * n * 2);
    cudaMemset(a, 0, (size_t)n * n * 2), cudaMemset(b, 0, (size_t)n * n * 2);
    cublasHandle_t h;
    cublasCreate(&h);
    float one = 1, zero = 0;
    double best = 1e9;
    for (int r = 0; r < 6; r++) {
        cudaDeviceSynchronize();
        double t = now();
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaDeviceSynchronize();
        t = now() - t;
        if (r && t < best) best = t;
    }
    gemm_rate = 2.0 * n * n * (double)n / best;
    size_t bytes = (size_t)1 << 30;
    void *x, *y;
    cudaMalloc(&x, bytes), cudaMalloc(&y, bytes);
    best = 1e9;
    for (int r = 0; r < 6; r++) {
        cudaDeviceSynchronize();
        double t = now();
        cudaMemcpy(y, x, bytes, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        t = now() - t;
        if (r && t < best) best = t;
    }
    copy_bw = 2.0 * bytes / best;
    cublasDestroy(h);
    cudaFree(a), cudaFree(b), cudaFree(c), cudaFree(x), cudaFree(y);
    printf("floors: cuBLAS bf16 GEMM %.0f TFLOP/s, copy %.0f GB/s\n", gemm_rate / 1e12, copy_bw / 1e9);
}

static int mamba2 = 0; // the models' layers: Mamba-1, or Mamba-2 (m2train, m2score, m2generate)
static int jamba = 0;  // or the Jamba-style hybrid (jtrain, jscore, jgenerate)
static const char *label(void) { return jamba ? " Jamba-style" : mamba2 ? " Mamba-2" : ""; }

// Matrix flops of one forward per token at length L: each layer's projections (a MoE layer's
// router, top_k experts and shared expert; an attention layer's q k^T and p v over L / 2 keys on
// average) and the tied head.
static double forward_flops_per_token(const ssm_config *c, double L) {
    double D = c->d_model, E = c->d_inner, R = c->dt_rank, XD = R + 2 * c->d_state, sum = 0;
    const double g = 1 + (c->mlp.activation == SSM_MLP_SWIGLU), gm = 1 + (c->moe.activation == SSM_MLP_SWIGLU);
    const double QD = (double)c->attention.n_heads * c->attention.head_dim;
    const double KD = (double)c->attention.n_kv_heads * c->attention.head_dim;
    const ssm_moe_config *o = &c->moe;
    const ssm_mamba2_config *m = &c->mamba2;
    for (int i = 0; i < c->n_layer; i++) {
        double layer = 2 * E * D + XD * E + E * R + D * E; // Mamba-1
        switch (c->layer_kind[i]) {
        case SSM_LAYER_MAMBA2: // in_proj (I + CD + H rows) and out_proj
            layer = (2.0 * m->d_inner + 2.0 * m->ngroups * m->d_state + m->nheads) * D + D * m->d_inner;
            break;
        case SSM_LAYER_ATTENTION: layer = (2 * QD + 2 * KD) * D + QD * L; break;
        case SSM_LAYER_MLP: layer = (g + 1) * c->mlp.d_ff * D; break;
        case SSM_LAYER_MOE: layer = o->n_experts * D + (gm + 1) * D * ((double)o->top_k * o->d_ff + o->shared_d_ff); break;
        default: break;
        }
        sum += layer;
    }
    return 2.0 * (sum + (double)c->vocab_size * D);
}

static ssm_model *model_on_gpu(int V, int D, int n_layer, ssm_adamw **opt) {
    ssm_config c = ssm_config_default(V, D, n_layer);
    if (mamba2) { // mamba_ssm's Mamba2 defaults: headdim 64, N 128, one group
        ssm_config_set_kind(&c, SSM_LAYER_MAMBA2);
        c.mamba2.d_inner = 0, c.mamba2.nheads = 0;
        OK(ssm_config_validate(&c));
    }
    if (jamba) { // Jamba's layout at the 130M width: 12 Mamba-1 / attention blocks (one in four
                 // attention, GQA 12/4 heads of 64), each with a SwiGLU MLP or a MoE of 8
                 // experts, top 2 (Jamba's routing), every FFN 2048 wide
        OK(ssm_config_set_pattern(&c, "M+-M+E*+-M+EM+-M+E*+-M+EM+-M+E*+-M+E", SSM_LAYER_MAMBA1));
        c.attention.n_heads = 12, c.attention.n_kv_heads = 4, c.attention.head_dim = 0;
        c.attention.rotary_dim = 0, c.attention.max_context = 4096;
        c.mlp.d_ff = 2048, c.mlp.activation = SSM_MLP_SWIGLU;
        c.moe.n_experts = 8, c.moe.top_k = 2, c.moe.d_ff = 2048, c.moe.activation = SSM_MLP_SWIGLU;
        c.moe.routing = SSM_MOE_SOFTMAX, c.moe.norm_topk = 0, c.moe.routed_scaling = 1.0f;
        c.moe.aux_loss_coef = 0.001f, c.moe.shared_d_ff = 0;
        OK(ssm_config_validate(&c));
    }
    ssm_model *m;
    OK(ssm_model_create(&c, &m));
    OK(ssm_model_init(m, 1));
    if (opt) {
        ssm_adamw_config ac = ssm_adamw_config_default();
        ac.lr = 1e-4f;
        OK(ssm_adamw_create(&ac, m, opt));
    }
    OK(ssm_model_use_device(m, opt ? *opt : NULL, 0));
    return m;
}

static void fill_batch(int32_t *tok, int32_t *tgt, size_t T, int V) {
    uint64_t x = 88172645463325252ull;
    for (size_t t = 0; t < T; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tok[t] = (int32_t)(x % (uint64_t)V);
        if (t) tgt[t - 1] = tok[t];
    }
    tgt[T - 1] = -1;
}

static double gib(size_t b) { return b / 1073741824.0; }

static void train(const char *name, int V, int D, int n_layer, int B, int L, int reps, double ref_tps) {
    size_t free0, total;
    cudaMemGetInfo(&free0, &total);
    ssm_adamw *opt;
    ssm_model *m = model_on_gpu(V, D, n_layer, &opt);
    size_t T = (size_t)B * L;
    int32_t *tok = (int32_t *)malloc(T * 4), *tgt = (int32_t *)malloc(T * 4);
    fill_batch(tok, tgt, T, m->config.vocab_size);
    OK(ssm_model_reserve(m, B, L, 1));
    double t0 = 0;
    float loss = 0, gn;
    for (int r = 0; r < reps + 2; r++) {
        if (r == 2) t0 = now(); // two warm-up steps
        ssm_model_zero_grad(m);
        OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
        OK(ssm_backward(m));
        OK(ssm_adamw_step(opt, m, &gn)); // reads the norm back: the step is finished
    }
    double dt = (now() - t0) / reps;
    size_t free1;
    cudaMemGetInfo(&free1, &total);
    double flops = 3 * forward_flops_per_token(&m->config, L) * T;
    char ref[64] = "";
    if (ref_tps > 0) snprintf(ref, sizeof ref, " (reference %.0f: %.2fx)", ref_tps, T / dt / ref_tps);
    printf("%-9s %zu params, B %d x L %d: %.2f ms/step, %.0f tokens/s%s; "
           "matrix floor %.2f ms (%.0f%% of the step); peak memory %.2f GiB (library) / %.2f GiB (device, "
           "with CUDA context); loss %.3f\n", name, m->n_params, B, L, dt * 1e3, T / dt, ref,
           flops / gemm_rate * 1e3, 100 * flops / gemm_rate / dt,
           gib(ssm_model_device_peak(m)), gib(free0 - free1), loss);
    free(tok), free(tgt);
    ssm_adamw_free(opt);
    ssm_model_free(m);
}

static void score(int reps) {
    ssm_model *m = model_on_gpu(50280, 768, 24, NULL);
    int B = 8, L = 2048;
    size_t T = (size_t)B * L;
    int32_t *tok = (int32_t *)malloc(T * 4), *tgt = (int32_t *)malloc(T * 4);
    float *lp = (float *)malloc(T * 4);
    fill_batch(tok, tgt, T, m->config.vocab_size);
    double t0 = 0;
    for (int r = 0; r < reps + 2; r++) {
        if (r == 2) t0 = now();
        OK(ssm_forward_score(m, tok, tgt, B, L, NULL, lp, NULL));
    }
    double dt = (now() - t0) / reps, flops = forward_flops_per_token(&m->config, L) * T;
    printf("score     130M%s, B %d x L %d: %.2f ms, %.0f tokens/s (Mamba-1 reference 771000: %.2fx); matrix floor "
           "%.2f ms (%.0f%%); peak %.2f GiB; mean log p %.3f\n", label(), B, L, dt * 1e3, T / dt, T / dt / 771000,
           flops / gemm_rate * 1e3, 100 * flops / gemm_rate / dt, gib(ssm_model_device_peak(m)), lp[0]);
    free(tok), free(tgt), free(lp);
    ssm_model_free(m);
}

static void generate(int B, double ref) {
    ssm_model *m = model_on_gpu(50280, 768, 24, NULL);
    int P = 128, n_new = 256;
    int32_t *prompt = (int32_t *)malloc((size_t)B * P * 4), *out = (int32_t *)malloc((size_t)B * n_new * 4),
            *tgt = (int32_t *)malloc((size_t)B * P * 4);
    fill_batch(prompt, tgt, (size_t)B * P, m->config.vocab_size);
    OK(ssm_generate_greedy(m, prompt, B, P, n_new, out)); // warm-up: plans, graph, cuBLAS heuristics
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        OK(ssm_generate_greedy(m, prompt, B, P, n_new, out));
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    double step_floor = m->n_params * 2.0 / copy_bw; // bf16 weights read once per step
    printf("generate  130M%s, batch %2d, prompt %d + %d new: %.1f ms, %.0f tokens/s (Mamba-1 reference %.0f: %.2fx); "
           "%.3f ms/token step vs weight-read floor %.3f ms\n", label(), B, P, n_new, best * 1e3, B * n_new / best, ref,
           B * n_new / best / ref, best * 1e3 / n_new, step_floor * 1e3);
    free(prompt), free(out), free(tgt);
    ssm_model_free(m);
}

int main(int argc, char **argv) {
    if (ssm_device_count() == 0) {
        printf("bench_gpu_model: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s\n", prop.name);
    measure_floors();
    for (int i = argc > 1 ? 1 : 0; i < (argc > 1 ? argc : 1); i++) {
        const char *w = argc > 1 ? argv[i] : "all";
        int all = !strcmp(w, "all");
        if (all || !strcmp(w, "train")) train("train", 50280, 768, 24, 8, 2048, 8, 137000);
        if (all || !strcmp(w, "score")) score(8);
        if (all || !strcmp(w, "generate") || !strcmp(w, "generate1")) generate(1, 1150);
        if (all || !strcmp(w, "generate") || !strcmp(w, "generate64")) generate(64, 62400);
        if (all || !strcmp(w, "dna1m")) train("dna1m", 16, 128, 6, 1, 1 << 20, 2, 0);
        mamba2 = 1;
        if (all || !strcmp(w, "m2train")) train("m2train", 50280, 768, 24, 8, 2048, 4, 0);
        if (all || !strcmp(w, "m2score")) score(4);
        if (all || !strcmp(w, "m2generate")) generate(1, 1150), generate(64, 62400);
        mamba2 = 0;
        jamba = 1;
        if (all || !strcmp(w, "jtrain")) train("jtrain", 50280, 768, 24, 8, 2048, 4, 0);
        if (all || !strcmp(w, "jscore")) score(4);
        if (all || !strcmp(w, "jgenerate")) generate(1, 1150), generate(64, 62400);
        jamba = 0;
    }
    return 0;
}
