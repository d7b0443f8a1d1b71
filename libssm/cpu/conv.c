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
#pragma omp parallel for collapse(2) schedule(static)
    for (int bb = 0; bb < B; bb++)
        for (int l = 0; l < L; l++)
            for (int e = 0; e < E; e++) {
                const float *we = w + (size_t)e * K;
                /* pre = b + sum_k w[k] * x[l - K + 1 + k] */
                float pre = b[e];
                for (int k = 0; k < K; k++)
                    pre += we[k] * x_at(x, ld_x, state, bb, L, l - K + 1 + k, e, E, K);
                u[((size_t)bb * L + l) * E + e] = cpu_silu(pre);
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

void cpu_conv_backward(float *dx, float *dw, float *db, const float *du, const float *x,
                       int ld_x, const float *w, const float *b, int B, int L, int E, int K) {
    /* threads own channels, so dw and db need no reduction */
#pragma omp parallel for schedule(static)
    for (int e = 0; e < E; e++) {
        const float *we = w + (size_t)e * K;
        float *dwe = dw + (size_t)e * K;
        for (int bb = 0; bb < B; bb++) {
            for (int l = 0; l < L; l++) dx[((size_t)bb * L + l) * ld_x + e] = 0.0f;
            for (int l = 0; l < L; l++) {
                /* recompute the pre-activation rather than storing it */
                float pre = b[e];
                for (int k = 0; k < K; k++)
                    pre += we[k] * x_at(x, ld_x, NULL, bb, L, l - K + 1 + k, e, E, K);
                float s = cpu_sigmoid(pre);
                /* d pre = du * silu'(pre) = du * s * (1 + pre * (1 - s)) */
                float g = du[((size_t)bb * L + l) * E + e] * s * (1.0f + pre * (1.0f - s));
                db[e] += g;
                for (int k = 0; k < K; k++) {
                    int src = l - K + 1 + k;
                    if (src < 0) continue;
                    dwe[k] += g * x[((size_t)bb * L + src) * ld_x + e];
                    dx[((size_t)bb * L + src) * ld_x + e] += g * we[k];
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
