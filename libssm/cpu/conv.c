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

/* The step per block of channels: the state roll and the dot (the same products in the same
 * order as a memmove then the sum over k), then SiLU over the block as one vectorised loop.
 * Threads over (sequence, block) items when there is enough work. */
#define CONV_STEP_BLOCK 256         /* channels per work item */
#define CONV_STEP_PARALLEL_MIN 8192 /* B * E below which one thread does it all */

static inline void conv_step_channels(float *u, float *state, const float *x, const float *w,
                                      const float *b, int e0, int e1, int K) {
    if (K == 4) { /* the default d_conv: unrolled, so that the compiler can vectorise over e */
        for (int e = e0; e < e1; e++) {
            float *s = state + (size_t)e * 4;
            const float *we = w + (size_t)e * 4;
            float s1 = s[1], s2 = s[2], s3 = s[3], xn = x[e];
            s[0] = s1, s[1] = s2, s[2] = s3, s[3] = xn;
            float pre = b[e];
            pre += we[0] * s1;
            pre += we[1] * s2;
            pre += we[2] * s3;
            pre += we[3] * xn;
            u[e] = pre;
        }
    } else {
        for (int e = e0; e < e1; e++) {
            float *s = state + (size_t)e * K;
            const float *we = w + (size_t)e * K;
            /* conv_state rolls left and takes the new input */
            memmove(s, s + 1, (K - 1) * sizeof(float));
            s[K - 1] = x[e];
            float pre = b[e];
            for (int k = 0; k < K; k++) pre += we[k] * s[k];
            u[e] = pre;
        }
    }
#pragma omp simd
    for (int e = e0; e < e1; e++) u[e] = cpu_silu(u[e]);
}

void cpu_conv_step(float *u, float *state, const float *x, int ld_x, const float *w,
                   const float *b, int B, int E, int K) {
    const int n_blocks = (E + CONV_STEP_BLOCK - 1) / CONV_STEP_BLOCK;
    const long items = (long)B * n_blocks;
#define CONV_STEP_ITEM(it)                                                                     \
    do {                                                                                       \
        int bb = (int)((it) / n_blocks), e0 = (int)((it) % n_blocks) * CONV_STEP_BLOCK;        \
        int e1 = e0 + CONV_STEP_BLOCK < E ? e0 + CONV_STEP_BLOCK : E;                          \
        conv_step_channels(u + (size_t)bb * E, state + (size_t)bb * E * K,                     \
                           x + (size_t)bb * ld_x, w, b, e0, e1, K);                            \
    } while (0)
    CPU_FOR(it, items, (double)B * E, CONV_STEP_PARALLEL_MIN, 0, CONV_STEP_ITEM(it));
#undef CONV_STEP_ITEM
}
