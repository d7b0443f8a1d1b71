/* bench_context.c: generation speed against the context length, the hybrids' claim (NVIDIA's
 * Mamba-2-Hybrid: faster generation than a Transformer at long contexts). Three models of
 * equal width and depth (16 layers x d_model 256, byte vocabulary), each layer a pre-norm
 * block:
 *   attention   "*-*-*-*-*-*-*-*-"   8 attention + 8 MLP layers (a Transformer)
 *   hybrid      "M-M-M*-M-M-M*-M-"   6 Mamba-2, 2 attention, 8 MLP (the Mamba-2-Hybrid mix)
 *   mamba2      "M-M-M-M-M-M-M-M-"   8 Mamba-2 + 8 MLP
 * For each context C (1k, 8k, 32k) the state is set as if C tokens had been seen (the KV caches
 * hold C positions; their values do not change the work), then ssm_step + argmax (greedy
 * generation, batch 1) is timed. The floor is the bytes a step must read (the weights, the
 * KV caches' C positions, the Mamba states twice) over this machine's read bandwidth,
 * measured in the same run. KV cache: the attention layers' bytes at C.
 *   bench_context [--threads N] */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* GB/s of a parallel sum over 512 MiB, best of 3 */
static double read_bandwidth(void) {
    size_t n = (size_t)128 << 20;
    float *x = malloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = now(), s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
        for (size_t i = 0; i < n; i++) s += x[i];
        double bw = n * sizeof(float) / (now() - t0) / 1e9;
        best = bw > best ? bw : best;
        sink += s;
    }
    free(x);
    return sink > 0 ? best : best;
}

enum { D = 256, VOCAB = 256, MAX_CTX = 32768 + 64 };

typedef struct result { double step_s, bytes, kv_bytes, state_bytes; } result;

static int run(const char *pattern, int ctx, result *res) {
    ssm_config c = ssm_config_default(VOCAB, D, 1);
    c.attention.max_context = MAX_CTX;
    c.mlp.d_ff = 4 * D;
    ssm_model *m;
    ssm_state *st;
    if (ssm_config_set_pattern(&c, pattern, SSM_LAYER_MAMBA2) || ssm_model_create(&c, &m) ||
        ssm_model_init(m, 1) || ssm_state_create(&m->config, 1, &st)) {
        fprintf(stderr, "bench_context: %s\n", ssm_last_error());
        return 1;
    }
    const ssm_config *mc = &m->config;
    int n_att = 0;
    for (int i = 0; i < mc->n_layer; i++) n_att += mc->layer_kind[i] == SSM_LAYER_ATTENTION;
    const ssm_attention_config *a = &mc->attention;
    double kv = 2.0 * a->n_kv_heads * a->head_dim * 4.0 * ctx * n_att;
    double mamba_state = 0; /* the Mamba-2 layers' conv and SSM states */
    for (int i = 0; i < mc->n_layer; i++)
        if (mc->layer_kind[i] == SSM_LAYER_MAMBA2) mamba_state += 4.0 * (st->conv_per[i] + st->ssm_per[i]);
    float *logits = malloc(sizeof(float) * mc->vocab_size);
    int32_t tok = 7;
    st->pos[0] = ctx - 8; /* as if ctx - 8 tokens had been seen: the caches' rows are zeros */
    if (ssm_step(m, st, &tok, logits)) { /* warm-up: plans the step's work buffer */
        fprintf(stderr, "bench_context: %s\n", ssm_last_error());
        return 1;
    }
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        st->pos[0] = ctx - 8;
        double t0 = now();
        for (int i = 0; i < 4; i++) {
            ssm_step(m, st, &tok, logits);
            int v = 0; /* greedy: the argmax is the next token */
            for (int k = 1; k < mc->vocab_size; k++) v = logits[k] > logits[v] ? k : v;
            tok = v;
        }
        double t = (now() - t0) / 4;
        best = t < best ? t : best;
    }
    *res = (result){best, 4.0 * m->n_params + kv + 2 * mamba_state, kv, mamba_state};
    free(logits);
    ssm_state_free(st);
    ssm_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    static struct option opts[] = {{"threads", required_argument, 0, 't'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 't') ssm_set_threads(atoi(optarg));
        else {
            printf("usage: bench_context [--threads N]\n");
            return 2;
        }
    }
    const char *names[3] = {"attention", "hybrid", "mamba2"};
    const char *patterns[3] = {"*-*-*-*-*-*-*-*-", "M-M-M*-M-M-M*-M-", "M-M-M-M-M-M-M-M-"};
    const int ctxs[3] = {1024, 8192, 32768};
    double bw = read_bandwidth();
    printf("generation (ssm_step + argmax, batch 1), 16 layers x d_model %d, %d threads; read "
           "bandwidth %.1f GB/s (the floor: bytes a step reads / bandwidth)\n", D,
           omp_get_max_threads(), bw);
    printf("%-9s %-18s %7s %10s %9s %8s %12s %12s\n", "model", "pattern", "context", "tokens/s",
           "vs attn", "floor%", "KV cache", "Mamba state");
    double attn_tps[3] = {0};
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 3; j++) {
            result r;
            if (run(patterns[k], ctxs[j], &r)) return 1;
            double tps = 1 / r.step_s, floor_s = r.bytes / (bw * 1e9);
            if (k == 0) attn_tps[j] = tps;
            printf("%-9s %-18s %7d %10.1f %8.2fx %7.1f%% %9.1f MiB %9.2f MiB\n", names[k],
                   patterns[k], ctxs[j], tps, tps / attn_tps[j], 100 * floor_s / r.step_s,
                   r.kv_bytes / 1048576, r.state_bytes / 1048576);
        }
    return 0;
}
