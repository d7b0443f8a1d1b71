/* bench_moe: the CPU cost of mixture-of-experts layers against dense MLP layers of the same
 * multiply-adds per token, beside this machine's SGEMM rate (the floor: matmul flops over the
 * SGEMM GFLOP/s measured in the same run).
 *
 *   bench_moe [--threads N] [--iters N]
 *
 * Models of recipes/text-hybrid.yaml's widths (d_model 128, vocabulary 256), 4 layers each:
 * "EEEE" (4 SwiGLU experts of 128, top 2: Jamba's routing) and "----" (SwiGLU MLPs of 256);
 * B = 16, L = 256. Best of --iters forwards and forward+backward passes after one warm-up. */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "benchutil.h"
#include "ssm/ssm.h"

int main(int argc, char **argv) {
    int iters = 5, threads = 0;
    static struct option opts[] = {{"threads", 1, 0, 't'}, {"iters", 1, 0, 'i'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 't') threads = atoi(optarg);
        else if (o == 'i') iters = atoi(optarg);
        else return printf("usage: bench_moe [--threads N] [--iters N]\n"), 2;
    }
    if (threads > 0) ssm_set_threads(threads);
    enum { B = 16, L = 256, D = 128 };
    double peak = sgemm_gflops(512);
    printf("threads %d, SGEMM %.1f GFLOP/s (512^3)\n", ssm_get_threads(), peak);
    const char *patterns[2] = {"EEEE", "----"};
    double fwd_best[2] = {1e30, 1e30}, fb_best[2] = {1e30, 1e30};
    ssm_model *models[2];
    int32_t *tok = malloc(sizeof(int32_t) * B * L);
    for (int i = 0; i < B * L; i++) tok[i] = (int32_t)((i * 2654435761u) >> 24); /* bytes */
    for (int p = 0; p < 2; p++) {
        ssm_config c = ssm_config_default(256, D, 4);
        c.mlp = (ssm_mlp_config){.d_ff = 256, .activation = SSM_MLP_SWIGLU};
        c.moe.n_experts = 4, c.moe.top_k = 2, c.moe.d_ff = 128, c.moe.aux_loss_coef = 0.01f;
        if (ssm_config_set_pattern(&c, patterns[p], SSM_LAYER_MAMBA1) ||
            ssm_model_create(&c, &models[p]) || ssm_model_init(models[p], 1))
            return fprintf(stderr, "bench_moe: %s\n", ssm_last_error()), 1;
    }
    /* the two models in turn, so that a change of the machine's load hits both alike */
    for (int it = 0; it <= iters; it++)
        for (int p = 0; p < 2; p++) {
            float loss;
            double t0 = now();
            ssm_forward(models[p], tok, tok, B, L, NULL, &loss);
            double t1 = now();
            ssm_model_zero_grad(models[p]);
            ssm_backward(models[p]);
            double t2 = now();
            if (it) { /* the first is the warm-up */
                fwd_best[p] = t1 - t0 < fwd_best[p] ? t1 - t0 : fwd_best[p];
                fb_best[p] = t2 - t0 < fb_best[p] ? t2 - t0 : fb_best[p];
            }
        }
    double again = sgemm_gflops(512);
    peak = again > peak ? again : peak;
    printf("SGEMM after: %.1f GFLOP/s; the floor below takes the better\n", again);
    for (int p = 0; p < 2; p++) {
        /* the layers' matmul flops per token (forward): 3 products of D x 256 either way; the
         * router's 2 D X besides; the head 2 V D */
        double per_tok = 4 * (3 * 2.0 * D * 256 + (p ? 0 : 2.0 * D * 4)) + 2.0 * 256 * D;
        double fwd_floor = per_tok * B * L / (peak * 1e9), fb_floor = 3 * fwd_floor;
        printf("%s  forward %7.0f tokens/s (%5.1f%% of SGEMM)   forward+backward %7.0f tokens/s "
               "(%5.1f%%)\n", patterns[p], B * L / fwd_best[p], 100 * fwd_floor / fwd_best[p],
               B * L / fb_best[p], 100 * fb_floor / fb_best[p]);
        ssm_model_free(models[p]);
    }
    free(tok);
    printf("MoE / MLP time: forward %.2fx, forward+backward %.2fx\n", fwd_best[0] / fwd_best[1],
           fb_best[0] / fb_best[1]);
    return 0;
}
