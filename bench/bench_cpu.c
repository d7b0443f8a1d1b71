/* bench_cpu: tokens/s of the CPU backend, forward and forward+backward(+AdamW), at the small
 * DNA shape and the 130M shape, beside the SGEMM rate of this machine measured in the same run,
 * so that each figure comes with its fraction of the BLAS peak.
 *
 *   bench_cpu [--threads N] [--shape dna|small|130m|dna2|130m2|130mh|decode|all] [--iters N]
 *
 * dna: the model of recipes/dna.yaml (4 x 64) at ssm-score's default shape (8 records side by
 * side, windows of 4096): its forward figure is the scoring speed in bases per second.
 * decode: ssm_step (one token per sequence, the generation loop) beside its memory-bandwidth
 * floor: one step must read every fp32 weight once (4 * n_params bytes) and the recurrent state
 * twice (read and written), so floor = those bytes / the read bandwidth of this machine,
 * measured in the same run (parallel sums over 16 MiB blocks of a 512 MiB buffer, before each
 * model and after the last; the floor takes the best block). Best of --iters x 4 runs of 2 steps
 * (200 for the DNA model) after 4 warm-up steps. Not part of "all". */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchutil.h"
#include "ssm/ssm.h"

/* Matmul flops of one forward token: 2 * (weights of the projections and the head).
 * Mamba-1: in_proj, x_proj, dt_proj, out_proj; Mamba-2: in_proj, out_proj; attention: q, k,
 * v, o; MLP: up (and gate), down. Not counted: the SSD's and the attention's own products
 * (they grow with L), and MoE layers (none in these shapes). */
static double matmul_flops_per_token(const ssm_config *c) {
    double D = c->d_model, E = c->d_inner, N = c->d_state, R = c->dt_rank, sum = 0;
    for (int i = 0; i < c->n_layer; i++) {
        switch (c->layer_kind[i]) {
        case SSM_LAYER_MAMBA1: sum += 2 * E * D + (R + 2 * N) * E + E * R + D * E; break;
        case SSM_LAYER_MAMBA2: {
            const ssm_mamba2_config *m = &c->mamba2;
            double DI = m->d_inner, CD = DI + 2.0 * m->ngroups * m->d_state;
            sum += (DI + CD + m->nheads) * D + D * DI;
            break;
        }
        case SSM_LAYER_ATTENTION: {
            const ssm_attention_config *a = &c->attention;
            double hd = a->head_dim ? a->head_dim : D / a->n_heads;
            sum += 2 * D * hd * (a->n_heads + a->n_kv_heads);
            break;
        }
        case SSM_LAYER_MLP:
            sum += (c->mlp.activation == SSM_MLP_SWIGLU ? 3.0 : 2.0) * D * c->mlp.d_ff;
            break;
        default: break;
        }
    }
    return 2.0 * (sum + (double)c->vocab_size * D);
}

/* kind SSM_LAYER_MAMBA2: headdim 64, d_state 128, ngroups 1, chunk 256 (mamba_ssm's defaults);
 * pattern (or NULL: every layer of that kind) as ssm_config_set_pattern reads it, its Mamba
 * layers of that kind, the other kinds at their defaults (attention: heads of 64, no RoPE;
 * MLP: relu2, d_ff 4 d_model) */
static int run_shape(const char *name, ssm_layer_kind kind, const char *pattern, int vocab,
                     int d_model, int n_layer, int B, int L, int iters, double peak) {
    ssm_config c = ssm_config_default(vocab, d_model, n_layer);
    ssm_config_set_kind(&c, kind);
    if (pattern && ssm_config_set_pattern(&c, pattern, kind)) {
        fprintf(stderr, "bench_cpu: %s\n", ssm_last_error());
        return 1;
    }
    if (kind == SSM_LAYER_MAMBA2 && d_model < 64) c.mamba2.headdim = 16, c.mamba2.d_state = 32;
    ssm_model *m;
    ssm_adamw *opt;
    ssm_adamw_config oc = ssm_adamw_config_default();
    if (ssm_model_create(&c, &m) || ssm_model_init(m, 1) || ssm_adamw_create(&oc, m, &opt)) {
        fprintf(stderr, "bench_cpu: %s\n", ssm_last_error());
        return 1;
    }
    int32_t *tok = malloc(sizeof(int32_t) * B * L), *tgt = malloc(sizeof(int32_t) * B * L);
    for (int i = 0; i < B * L; i++) tok[i] = (i * 7919) % vocab, tgt[i] = (i * 104729 + 1) % vocab;
    float loss;
    double tokens = (double)B * L, f = matmul_flops_per_token(&m->config);
    /* warm-up (plans the activations), then the median-free best of iters */
    ssm_forward(m, tok, tgt, B, L, NULL, &loss);
    double fwd = 1e30, train = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = now();
        ssm_forward(m, tok, tgt, B, L, NULL, &loss);
        double t1 = now();
        ssm_model_zero_grad(m);
        if (ssm_backward(m) || ssm_adamw_step(opt, m, NULL)) {
            fprintf(stderr, "bench_cpu: %s\n", ssm_last_error());
            return 1;
        }
        double t2 = now();
        fwd = fmin(fwd, t1 - t0);
        train = fmin(train, t2 - t0);
    }
    double fwd_tps = tokens / fwd, train_tps = tokens / train;
    double fwd_gf = f * tokens / fwd / 1e9, train_gf = 3 * f * tokens / train / 1e9;
    printf("%-7s %3dx%-4d V=%-6d B=%d L=%-5d params %6.2fM | forward %9.0f tok/s (%5.1f GFLOP/s, %4.1f%% of SGEMM)"
           " | fwd+bwd+AdamW %8.0f tok/s (%5.1f GFLOP/s, %4.1f%% of SGEMM)\n",
           name, n_layer, d_model, c.vocab_size, B, L, m->n_params / 1e6, fwd_tps, fwd_gf,
           100 * fwd_gf / peak, train_tps, train_gf, 100 * train_gf / peak);
    free(tok), free(tgt);
    ssm_adamw_free(opt);
    ssm_model_free(m);
    return 0;
}

/* ---- decode ------------------------------------------------------------------------------ */

/* Read bandwidth, bytes/s: parallel sums over blocks of `block` bytes of a `bytes` buffer
 * (much larger than the caches, so that every block comes from memory), the best block of
 * `passes` passes after an untimed one; 64 lanes per thread, so that the adds are never the
 * bound. Short blocks find the moments when the other jobs of a shared machine leave the memory
 * alone. And the memcpy rate (read + write bytes, same blocks) for reference. */
static double read_bandwidth(size_t bytes, size_t block, int passes, double *copy_bw) {
    size_t n = bytes / sizeof(float) / 64 * 64, nb = block / sizeof(float) / 64 * 64;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    if (!a || !b) {
        free(a), free(b);
        return 0;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023), b[i] = 0.0f;
    double best = 0, best_copy = 0, sink = 0;
    for (int r = 0; r <= passes; r++)
        for (size_t o = 0; o + nb <= n; o += nb) {
            double t0 = now(), s = 0;
#pragma omp parallel reduction(+ : s)
            {
                float acc[64] = {0};
#pragma omp for schedule(static)
                for (size_t i = o; i < o + nb; i += 64)
                    for (int j = 0; j < 64; j++) acc[j] += a[i + j];
                for (int j = 0; j < 64; j++) s += acc[j];
            }
            double t = now() - t0;
            sink += s;
            if (r > 0 && nb * sizeof(float) / t > best) best = nb * sizeof(float) / t;
        }
    for (int r = 0; r <= passes; r++)
        for (size_t o = 0; o + nb <= n; o += nb) {
            double t0 = now();
#pragma omp parallel
            {
                int nt = omp_get_num_threads();
                size_t per = (nb + nt - 1) / nt, i0 = per * omp_get_thread_num();
                if (i0 < nb) memcpy(b + o + i0, a + o + i0, (i0 + per > nb ? nb - i0 : per) * sizeof(float));
            }
            double t = now() - t0;
            if (r > 0 && 2.0 * nb * sizeof(float) / t > best_copy) best_copy = 2.0 * nb * sizeof(float) / t;
        }
    if (sink == 12345.0) printf(" "); /* keep the sums */
    free(a), free(b);
    *copy_bw = best_copy;
    return best;
}

/* Recurrent-state floats per sequence of a model (conv + SSM slots, every layer). */
static double state_floats(const ssm_config *c) {
    double per = 0;
    for (int i = 0; i < c->n_layer; i++) {
        if (c->layer_kind[i] == SSM_LAYER_MAMBA2) {
            const ssm_mamba2_config *m = &c->mamba2;
            double CD = m->d_inner + 2.0 * m->ngroups * m->d_state;
            per += CD * m->d_conv + (double)m->nheads * m->headdim * m->d_state;
        } else {
            per += (double)c->d_inner * c->d_conv + (double)c->d_inner * c->d_state;
        }
    }
    return per;
}

/* Parameters the step's products read from the bf16 copy when it is on
 * (ssm_model_set_decode_weights): the Mamba-1 / Mamba-2 projections and the tied head. */
static double bf16_params(const ssm_model *m) {
    static const char *const suffix[] = {"in_proj.weight", "x_proj.weight", "dt_proj.weight",
                                         "out_proj.weight", "embeddings.weight"};
    double n = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        size_t len = strlen(m->tensors[t].name);
        for (int j = 0; j < 5; j++) {
            size_t ls = strlen(suffix[j]);
            if (len >= ls && !strcmp(m->tensors[t].name + len - ls, suffix[j])) {
                n += (double)m->tensors[t].numel;
                break;
            }
        }
    }
    return n;
}

typedef struct decode_result {
    const char *name;
    int bf16; /* the step's weights: 0 fp32, 1 bf16 */
    int n_layer, d_model, V, B;
    double params, step_s, bytes; /* best step time; bytes a step must move */
} decode_result;

/* ssm_step at batch B: best over `reps` runs of `steps` steps (after 4 warm-up steps) of the
 * mean step time, each step followed by the argmax of its logits (as greedy generation does).
 * bytes: the weights once (2 bytes for those read from the bf16 copy when bf16) + the state
 * read and written. */
static int run_decode(const char *name, ssm_layer_kind kind, int vocab, int d_model, int n_layer,
                      int B, int bf16, int reps, decode_result *res) {
    ssm_config c = ssm_config_default(vocab, d_model, n_layer);
    ssm_config_set_kind(&c, kind);
    ssm_model *m;
    ssm_state *st;
    if (ssm_model_create(&c, &m) || ssm_model_init(m, 1) || ssm_state_create(&m->config, B, &st) ||
        ssm_model_set_decode_weights(m, bf16 ? SSM_DECODE_BF16 : SSM_DECODE_F32)) {
        fprintf(stderr, "bench_cpu: %s\n", ssm_last_error());
        return 1;
    }
    int V = m->config.vocab_size;
    float *logits = malloc(sizeof(float) * B * V);
    int32_t *tok = malloc(sizeof(int32_t) * B);
    for (int b = 0; b < B; b++) tok[b] = (b * 7919 + 3) % vocab;
    int steps = m->n_params > 10000000 ? 2 : 200;
    for (int i = 0; i < 4; i++)
        if (ssm_step(m, st, tok, logits)) {
            fprintf(stderr, "bench_cpu: %s\n", ssm_last_error());
            return 1;
        }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < steps; i++) {
            ssm_step(m, st, tok, logits);
            /* the next token from the logits, as generation does (argmax) */
            for (int b = 0; b < B; b++) {
                const float *row = logits + (size_t)b * V;
                int best_v = 0;
                for (int v = 1; v < V; v++) best_v = row[v] > row[best_v] ? v : best_v;
                tok[b] = best_v;
            }
        }
        double t = (now() - t0) / steps;
        best = t < best ? t : best;
    }
    double half = bf16 ? bf16_params(m) : 0;
    *res = (decode_result){name, bf16, n_layer, d_model, V, B, m->n_params / 1e6, best,
                           4.0 * m->n_params - 2.0 * half + 2.0 * 4.0 * state_floats(&m->config) * B};
    free(logits), free(tok);
    ssm_state_free(st);
    ssm_model_free(m);
    return 0;
}

/* The bandwidth is measured before each model and after the last, and the floor takes the
 * best of them (on a shared machine the other jobs take some of it at times). */
static int run_decode_all(int iters) {
    enum { N_RUNS = 8 }; /* each model with fp32, then bf16 weights */
    int reps = 4 * (iters > 5 ? iters : 5), rc = 0;
    decode_result res[N_RUNS];
    double bw = 0, copy_bw = 0;
    printf("decode: read bandwidth (GB/s: parallel sums over 16 MiB blocks of 512 MiB, the best "
           "block of 3 passes) before each model and after:");
    for (int k = 0; k <= N_RUNS; k++) {
        double cb = 0, b = read_bandwidth((size_t)1 << 29, (size_t)1 << 24, 3, &cb);
        bw = b > bw ? b : bw;
        copy_bw = cb > copy_bw ? cb : copy_bw;
        printf(" %.1f", b / 1e9);
        fflush(stdout);
        int bf16 = k % 2;
        if (k / 2 == 0) rc |= run_decode("130m", SSM_LAYER_MAMBA1, 50280, 768, 24, 1, bf16, reps, &res[k]);
        if (k / 2 == 1) rc |= run_decode("130m", SSM_LAYER_MAMBA1, 50280, 768, 24, 8, bf16, reps, &res[k]);
        if (k / 2 == 2) rc |= run_decode("dna", SSM_LAYER_MAMBA1, 12, 64, 4, 1, bf16, reps, &res[k]);
        if (k / 2 == 3) rc |= run_decode("130m2", SSM_LAYER_MAMBA2, 50280, 768, 24, 1, bf16, reps, &res[k]);
        if (rc) return rc;
    }
    printf("\ndecode: floor at %.1f GB/s (memcpy %.1f GB/s read + write); best of %d runs of 2 steps "
           "(200 for dna)\n", bw / 1e9, copy_bw / 1e9, reps);
    for (int k = 0; k < N_RUNS; k++) {
        const decode_result *r = &res[k];
        double floor_s = r->bytes / bw;
        printf("%-6s %-4s %3dx%-4d V=%-6d B=%d  params %6.2fM  step %8.3f ms  %9.1f tok/s | floor %7.3f ms "
               "(%6.1f MB) -> %5.2fx the floor\n",
               r->name, r->bf16 ? "bf16" : "f32", r->n_layer, r->d_model, r->V, r->B, r->params, r->step_s * 1e3,
               r->B / r->step_s, floor_s * 1e3, r->bytes / 1e6, r->step_s / floor_s);
    }
    return rc;
}

int main(int argc, char **argv) {
    int threads = 0, iters = 3;
    const char *shape = "all";
    static struct option opts[] = {{"threads", required_argument, 0, 't'},
                                   {"shape", required_argument, 0, 's'},
                                   {"iters", required_argument, 0, 'i'},
                                   {"help", no_argument, 0, 'h'},
                                   {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 't') threads = atoi(optarg);
        else if (o == 's') shape = optarg;
        else if (o == 'i') iters = atoi(optarg);
        else {
            printf("usage: bench_cpu [--threads N] [--shape dna|small|130m|dna2|130m2|130mh|decode|all] [--iters N]\n"
                   "  dna2, 130m2: the same shapes with Mamba-2 layers (130m2: headdim 64, d_state 128)\n"
                   "  130mh: the Mamba-2-Hybrid layout at that width (12 Mamba-2, 2 attention, 14 MLP)\n"
                   "  decode: ssm_step at 130m (B 1 and 8), dna (4 x 64, V 16, B 1) and 130m2 (B 1)\n"
                   "          beside the memory-bandwidth floor measured in the same run\n");
            return o == 'h' ? 0 : 2;
        }
    }
    ssm_set_threads(threads);
    if (!strcmp(shape, "decode")) {
        printf("bench_cpu: %d threads\n", ssm_get_threads());
        return run_decode_all(iters);
    }
    double peak = sgemm_gflops(1536);
    printf("bench_cpu: %d threads, SGEMM %.1f GFLOP/s (1536^3, best of 5)\n", ssm_get_threads(), peak);
    int rc = 0;
    if (!strcmp(shape, "dna") || !strcmp(shape, "all"))
        rc |= run_shape("dna", SSM_LAYER_MAMBA1, NULL, 12, 64, 4, 8, 4096, iters, peak);
    if (!strcmp(shape, "dna2") || !strcmp(shape, "all"))
        rc |= run_shape("dna2", SSM_LAYER_MAMBA2, NULL, 12, 64, 4, 8, 4096, iters, peak);
    if (!strcmp(shape, "small") || !strcmp(shape, "all"))
        rc |= run_shape("small", SSM_LAYER_MAMBA1, NULL, 16, 128, 6, 1, 1024, iters, peak) |
              run_shape("small", SSM_LAYER_MAMBA1, NULL, 16, 128, 6, 8, 1024, iters, peak);
    if (!strcmp(shape, "130m") || !strcmp(shape, "all"))
        rc |= run_shape("130m", SSM_LAYER_MAMBA1, NULL, 50280, 768, 24, 1, 512, iters > 2 ? 2 : iters, peak);
    if (!strcmp(shape, "130m2") || !strcmp(shape, "all"))
        rc |= run_shape("130m2", SSM_LAYER_MAMBA2, NULL, 50280, 768, 24, 1, 512, iters > 2 ? 2 : iters, peak);
    /* the Mamba-2-Hybrid layout (NVIDIA's 24 Mamba-2, 4 attention, 28 MLP, scaled): 12 Mamba-2
     * and 2 attention layers, each followed by an MLP layer */
    if (!strcmp(shape, "130mh") || !strcmp(shape, "all"))
        rc |= run_shape("130mh", SSM_LAYER_MAMBA2, "M-M-M-*-M-M-M-M-M-*-M-M-M-M-", 50280, 768, 28,
                        1, 512, iters > 2 ? 2 : iters, peak);
    return rc;
}
