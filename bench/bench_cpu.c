/* bench_cpu: tokens/s of the CPU backend, forward and forward+backward(+AdamW), at the small
 * DNA shape and the 130M shape, beside the SGEMM rate of this machine measured in the same run,
 * so that each figure comes with its fraction of the BLAS peak.
 *
 *   bench_cpu [--threads N] [--shape dna|small|130m|all] [--iters N]
 *
 * dna: the model of recipes/dna.yaml (4 x 64) at ssm-score's default shape (8 records side by
 * side, windows of 4096): its forward figure is the scoring speed in bases per second. */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssm/ssm.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* SGEMM GFLOP/s on square matrices (the BLAS ceiling for the matmul-bound part). */
static double sgemm_gflops(int n) {
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double g = 2.0 * n * n * n / (now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    free(a), free(b), free(c);
    return best;
}

/* Matmul flops of one forward token: 2 * (weights of the projections and the head).
 * Mamba-1: in_proj, x_proj, dt_proj, out_proj; Mamba-2: in_proj, out_proj (the SSD's own
 * products are not counted). */
static double matmul_flops_per_token(const ssm_config *c) {
    double D = c->d_model, E = c->d_inner, N = c->d_state, R = c->dt_rank;
    double layer = 2 * E * D + (R + 2 * N) * E + E * R + D * E;
    if (c->layer_kind[0] == SSM_LAYER_MAMBA2) {
        const ssm_mamba2_config *m = &c->mamba2;
        double DI = m->d_inner, CD = DI + 2.0 * m->ngroups * m->d_state;
        layer = (DI + CD + m->nheads) * D + D * DI;
    }
    return 2.0 * (c->n_layer * layer + (double)c->vocab_size * D);
}

/* kind SSM_LAYER_MAMBA2: headdim 64, d_state 128, ngroups 1, chunk 256 (mamba_ssm's defaults) */
static int run_shape(const char *name, ssm_layer_kind kind, int vocab, int d_model, int n_layer,
                     int B, int L, int iters, double peak) {
    ssm_config c = ssm_config_default(vocab, d_model, n_layer);
    ssm_config_set_kind(&c, kind);
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
            printf("usage: bench_cpu [--threads N] [--shape dna|small|130m|dna2|130m2|all] [--iters N]\n"
                   "  dna2, 130m2: the same shapes with Mamba-2 layers (130m2: headdim 64, d_state 128)\n");
            return o == 'h' ? 0 : 2;
        }
    }
    ssm_set_threads(threads);
    double peak = sgemm_gflops(1536);
    printf("bench_cpu: %d threads, SGEMM %.1f GFLOP/s (1536^3, best of 5)\n", ssm_get_threads(), peak);
    int rc = 0;
    if (!strcmp(shape, "dna") || !strcmp(shape, "all"))
        rc |= run_shape("dna", SSM_LAYER_MAMBA1, 12, 64, 4, 8, 4096, iters, peak);
    if (!strcmp(shape, "dna2") || !strcmp(shape, "all"))
        rc |= run_shape("dna2", SSM_LAYER_MAMBA2, 12, 64, 4, 8, 4096, iters, peak);
    if (!strcmp(shape, "small") || !strcmp(shape, "all"))
        rc |= run_shape("small", SSM_LAYER_MAMBA1, 16, 128, 6, 1, 1024, iters, peak) |
              run_shape("small", SSM_LAYER_MAMBA1, 16, 128, 6, 8, 1024, iters, peak);
    if (!strcmp(shape, "130m") || !strcmp(shape, "all"))
        rc |= run_shape("130m", SSM_LAYER_MAMBA1, 50280, 768, 24, 1, 512, iters > 2 ? 2 : iters, peak);
    if (!strcmp(shape, "130m2") || !strcmp(shape, "all"))
        rc |= run_shape("130m2", SSM_LAYER_MAMBA2, 50280, 768, 24, 1, 512, iters > 2 ? 2 : iters, peak);
    return rc;
}
