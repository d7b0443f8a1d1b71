/* conv.c: depthwise causal conv1d + SiLU over the x half of in_proj's output (mamba_ssm's
 * causal_conv1d_fn with activation "silu"). Accumulation in fp32. */
#include <string.h>

#include "cpu_ops.h"

/* The input at time l - j (j = 1..K-1 before the start) of sequence b, channel e:
 * the carried state's entries (oldest first) or zero padding. */
static inline float x_at(const float *x, int ld_x, const float *state, int b, int L, int l, int e,
                         int E, int K) {
    if (l >= 0) return x[((size_t)b * L + l) * ld_x + e];
    return state ? state[((size_t)b * E + e) * K + K + l] : 0.0f;
}

void cpu_conv_forward(float *u, const float *x, int ld_x, const float *w, const float *b,
                      const float *state, int B, int L, int E, int K) {
    /* rows in parallel, channels contiguous in the inner loops */
#pragma omp parallel for collapse(2) schedule(static)
    for (int bb = 0; bb < B; bb++)
        for (int l = 0; l < L; l++) {
            float *ut = u + ((size_t)bb * L + l) * E;
            /* pre = b + sum_k w[k] * x[l - K + 1 + k] */
            for (int e = 0; e < E; e++) ut[e] = b[e];
            for (int k = 0; k < K; k++) {
                int src = l - K + 1 + k;
                if (src >= 0) {
                    const float *xs = x + ((size_t)bb * L + src) * ld_x;
                    for (int e = 0; e < E; e++) ut[e] += w[(size_t)e * K + k] * xs[e];
                } else if (state) {
                    for (int e = 0; e < E; e++)
                        ut[e] += w[(size_t)e * K + k] * x_at(x, ld_x, state, bb, L, src, e, E, K);
                }
            }
            for (int e = 0; e < E; e++) ut[e] = cpu_silu(ut[e]);
        }
}

void cpu_conv_state_update(float *state, const float *x, int ld_x, int B, int L, int E, int K) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int bb = 0; bb < B; bb++)
        for (int e = 0; e < E; e++) {
            float *s = state + ((size_t)bb * E + e) * K;
            float next[64]; /* d_conv <= 64 (ssm_config_validate) */
            for (int k = 0; k < K; k++) next[k] = x_at(x, ld_x, state, bb, L, L - K + k, e, E, K);
            memcpy(s, next, K * sizeof(float));
        }
}

#define CONV_BLOCK 16 /* channels per work item of the backward */

void cpu_conv_backward(float *dx, float *dw, float *db, const float *du, const float *x,
                       int ld_x, const float *w, const float *b, int B, int L, int E, int K) {
    /* threads own blocks of channels, so dw and db need no reduction */
    int n_blocks = (E + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < n_blocks; blk++) {
        int e0 = blk * CONV_BLOCK, e1 = e0 + CONV_BLOCK < E ? e0 + CONV_BLOCK : E;
        float g[CONV_BLOCK];
        for (int bb = 0; bb < B; bb++) {
            for (int l = 0; l < L; l++)
                for (int e = e0; e < e1; e++) dx[((size_t)bb * L + l) * ld_x + e] = 0.0f;
            for (int l = 0; l < L; l++) {
                /* recompute the pre-activation rather than storing it */
                for (int e = e0; e < e1; e++) g[e - e0] = b[e];
                for (int k = 0; k < K; k++) {
                    int src = l - K + 1 + k;
                    if (src < 0) continue;
                    const float *xs = x + ((size_t)bb * L + src) * ld_x;
                    for (int e = e0; e < e1; e++) g[e - e0] += w[(size_t)e * K + k] * xs[e];
                }
                /* d pre = du * silu'(pre) = du * s * (1 + pre * (1 - s)) */
                const float *dut = du + ((size_t)bb * L + l) * E;
                for (int e = e0; e < e1; e++) {
                    float pre = g[e - e0], s = cpu_sigmoid(pre);
                    g[e - e0] = dut[e] * s * (1.0f + pre * (1.0f - s));
                    db[e] += g[e - e0];
                }
                for (int k = 0; k < K; k++) {
                    int src = l - K + 1 + k;
                    if (src < 0) continue;
                    const float *xs = x + ((size_t)bb * L + src) * ld_x;
                    float *dxs = dx + ((size_t)bb * L + src) * ld_x;
                    for (int e = e0; e < e1; e++) {
                        dw[(size_t)e * K + k] += g[e - e0] * xs[e];
                        dxs[e] += g[e - e0] * w[(size_t)e * K + k];
                    }
                }
            }
        }
    }
}

void cpu_conv_step(float *u, float *state, const float *x, int ld_x, const float *w,
                   const float *b, int B, int E, int K) {
    for (int bb = 0; bb < B; bb++)
        for (int e = 0; e < E; e++) {
            float *s = state + ((size_t)bb * E + e) * K;
            /* conv_state rolls left and takes the new input */
            memmove(s, s + 1, (K - 1) * sizeof(float));
            s[K - 1] = x[(size_t)bb * ld_x + e];
            float pre = b[e];
            for (int k = 0; k < K; k++) pre += w[(size_t)e * K + k] * s[k];
            u[(size_t)bb * E + e] = cpu_silu(pre);
        }
}
