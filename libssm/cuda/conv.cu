// conv.cu: depthwise causal conv1d + SiLU on the GPU (forward with carried state, state
// update, backward, one-token step), the twin of libssm/cpu/conv.c.
//
// A thread owns one channel over a run of TL consecutive steps and slides a window of the
// last KM inputs through registers, so each input is read from memory about once (plus a
// K - 1 halo per run); a warp is 32 consecutive channels of one row, so loads and stores are
// coalesced. The weights are laid into the window's frame once per thread (zeros in front
// when K < KM). The backward recomputes the pre-activation (never stored), keeps a window of
// the last KM gradients g = du * silu'(pre) for dx, and accumulates dw, db per thread; the
// block sums them over its runs and writes one partial row, and a last kernel adds the
// partials in a fixed order (deterministic).
#include "common.cuh"

namespace {

constexpr int TL = 16; // steps per thread
constexpr int TG = 8;  // runs (warps) per block along time: a block covers 32 channels x 128 steps

// The input at time l (>= -K) of sequence b, channel e: x, the carried state or zero.
template <typename T>
__device__ __forceinline__ float x_at(const T *x, int ld_x, const float *state, int b, int L,
                                      int l, int e, int E, int K) {
    if (l >= 0) return ldf(x + ((size_t)b * L + l) * ld_x + e);
    return state ? state[((size_t)b * E + e) * K + K + l] : 0.0f;
}

// grid (ceil(E/32), ceil(L / (TG TL)), B), block (32, TG)
template <typename T, int KM>
__global__ void __launch_bounds__(32 * TG) conv_fwd_kernel(T *u, const T *x, int ld_x, const float *w,
                                                      const float *bias, const float *state,
                                                      int L, int E, int K) {
    const int e = blockIdx.x * 32 + threadIdx.x, b = blockIdx.z;
    const int l0 = (blockIdx.y * TG + threadIdx.y) * TL;
    if (e >= E || l0 >= L) return;
    // wr[KM - K + k] = w[k]: the window's frame, xw[KM - 1] = x[l], xw[KM - 1 - j] = x[l - j]
    float wr[KM], xw[KM];
#pragma unroll
    for (int i = 0; i < KM; i++) {
        const int k = i - (KM - K);
        wr[i] = k >= 0 ? w[(size_t)e * K + k] : 0.0f;
        xw[i] = (k >= 1) ? x_at(x, ld_x, state, b, L, l0 - K + k, e, E, K) : 0.0f;
    }
    const float bb = bias[e];
    const int l1 = min(L, l0 + TL);
    for (int l = l0; l < l1; l++) {
#pragma unroll
        for (int i = 0; i < KM - 1; i++) xw[i] = xw[i + 1];
        xw[KM - 1] = ldf(x + ((size_t)b * L + l) * ld_x + e);
        // pre = b + sum_k w[k] * x[l - K + 1 + k]
        float pre = bb;
#pragma unroll
        for (int i = 0; i < KM; i++) pre = fmaf(wr[i], xw[i], pre);
        u[((size_t)b * L + l) * E + e] = from_f<T>(siluf(pre));
    }
}

// thread per (b, e): state <- the last K inputs of [state | x]
template <typename T>
__global__ void conv_state_kernel(float *state, const T *x, int ld_x, int B, int L, int E, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * E) return;
    const int b = i / E, e = i % E;
    float next[64];
    for (int k = 0; k < K; k++) next[k] = x_at(x, ld_x, state, b, L, L - K + k, e, E, K);
    for (int k = 0; k < K; k++) state[(size_t)i * K + k] = next[k];
}

// grid (ceil(E/32), nTB, B), block (32, TG). Thread: outputs [l0, l0 + TL) for dw, db; inputs
// [l0, l0 + TL) for dx, which needs g up to l0 + TL + K - 2.
template <typename T, int KM>
__global__ void __launch_bounds__(32 * TG) conv_bwd_kernel(T *dx, const T *du, const T *x, int ld_x,
                                                      const float *w, const float *bias, int L,
                                                      int E, int K, float *part) {
    __shared__ float red[TG][32];
    const int e = blockIdx.x * 32 + threadIdx.x, b = blockIdx.z, ty = threadIdx.y;
    const int l0 = (blockIdx.y * TG + ty) * TL;
    const bool act = e < E && l0 < L;
    float dwacc[KM], dbacc = 0.0f;
#pragma unroll
    for (int i = 0; i < KM; i++) dwacc[i] = 0.0f;
    if (act) {
        float wr[KM], wrev[KM], xw[KM], gw[KM];
#pragma unroll
        for (int i = 0; i < KM; i++) {
            const int k = i - (KM - K);
            wr[i] = k >= 0 ? w[(size_t)e * K + k] : 0.0f;
            // wrev[KM - 1 - k] = w[k]: dx[l] = sum_k g[l + K - 1 - k] w[k] = sum_i gw[i] wrev[i]
            const int kr = KM - 1 - i;
            wrev[i] = kr < K ? w[(size_t)e * K + kr] : 0.0f;
            const int src = l0 - K + k; // zero initial state
            xw[i] = (k >= 1 && src >= 0) ? ldf(x + ((size_t)b * L + src) * ld_x + e) : 0.0f;
            gw[i] = 0.0f;
        }
        const float bb = bias[e];
        const int lend = min(L, l0 + TL); // owned outputs and inputs end here
        for (int l = l0; l < lend + K - 1; l++) {
            // g[l] = du[l] * silu'(pre[l]) (0 past the sequence)
#pragma unroll
            for (int i = 0; i < KM - 1; i++) xw[i] = xw[i + 1], gw[i] = gw[i + 1];
            float g = 0.0f;
            if (l < L) {
                xw[KM - 1] = ldf(x + ((size_t)b * L + l) * ld_x + e);
                float pre = bb;
#pragma unroll
                for (int i = 0; i < KM; i++) pre = fmaf(wr[i], xw[i], pre);
                // d pre = du * silu'(pre) = du * s * (1 + pre * (1 - s))
                const float s = sigmoidf_(pre);
                g = ldf(du + ((size_t)b * L + l) * E + e) * s * fmaf(pre, 1.0f - s, 1.0f);
            } else {
                xw[KM - 1] = 0.0f;
            }
            gw[KM - 1] = g;
            if (l < lend) {
                // dw[k] += g[l] x[l - K + 1 + k]; db += g[l]
                dbacc += g;
#pragma unroll
                for (int i = 0; i < KM; i++) dwacc[i] = fmaf(g, xw[i], dwacc[i]);
            }
            const int li = l - K + 1; // the input whose gradient is complete now
            if (li >= l0) {
                float d = 0.0f;
#pragma unroll
                for (int i = 0; i < KM; i++) d = fmaf(gw[i], wrev[i], d);
                dx[((size_t)b * L + li) * ld_x + e] = from_f<T>(d);
            }
        }
    }
    // block sum over the TG runs, then one partial row per block: part[(blk, j), e] with
    // j < K: dw[k = j] (frame index KM - K + j), j == K: db
    const int E0 = blockIdx.x * 32;
    const size_t blk = (size_t)b * gridDim.y + blockIdx.y;
#pragma unroll
    for (int i = 0; i <= KM; i++) {
        if (i < KM - K) continue; // frame slots in front of the K taps (uniform)
        red[ty][threadIdx.x] = i < KM ? dwacc[i] : dbacc;
        __syncthreads();
        if (ty == 0) {
            float s = 0.0f;
            for (int r = 0; r < TG; r++) s += red[r][threadIdx.x];
            const int j = i < KM ? i - (KM - K) : K;
            if (E0 + threadIdx.x < E) part[(blk * (K + 1) + j) * E + E0 + threadIdx.x] = s;
        }
        __syncthreads();
    }
}

__global__ void conv_bwd_finish(float *dw, float *db, const float *part, int nblk, int E, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (K + 1) * E) return;
    const int e = i % E, j = i / E;
    float s = 0.0f;
    for (int r = 0; r < nblk; r++) s += part[((size_t)r * (K + 1) + j) * E + e];
    if (j < K) dw[(size_t)e * K + j] += s;
    else db[e] += s;
}

template <typename T>
__global__ void conv_step_kernel(T *u, float *state, const T *x, int ld_x, const float *w,
                                 const float *bias, int B, int E, int K) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * E) return;
    const int b = i / E, e = i % E;
    float *s = state + (size_t)i * K;
    // conv_state rolls left and takes the new input
    for (int k = 0; k < K - 1; k++) s[k] = s[k + 1];
    s[K - 1] = ldf(x + (size_t)b * ld_x + e);
    float pre = bias[e];
    for (int k = 0; k < K; k++) pre = fmaf(w[(size_t)e * K + k], s[k], pre);
    u[i] = from_f<T>(siluf(pre));
}

static int km_for(int K) { return K <= 4 ? 4 : K <= 16 ? 16 : 64; }

static ssm_status check(const char *fn, int B, int L, int E, int K, ssm_dtype dtype, int ld_x) {
    if (B < 1 || L < 1 || E < 1 || K < 1)
        return ssm_set_error(SSM_ERR_ARG, "%s: B=%d L=%d E=%d K=%d must all be >= 1", fn, B, L, E, K);
    if (K > 64) return ssm_set_error(SSM_ERR_UNSUPPORTED, "%s: d_conv K=%d, at most 64", fn, K);
    if (ld_x < E) return ssm_set_error(SSM_ERR_ARG, "%s: ld_x=%d < E=%d", fn, ld_x, E);
    if (dtype != SSM_DTYPE_F32 && dtype != SSM_DTYPE_BF16)
        return ssm_set_error(SSM_ERR_DTYPE, "%s: unknown dtype %d", fn, (int)dtype);
    if ((long)B * L > INT32_MAX / 2)
        return ssm_set_error(SSM_ERR_ARG, "%s: B * L is too large", fn);
    return SSM_OK;
}

static unsigned time_blocks(int L) { return (unsigned)((L + TG * TL - 1) / (TG * TL)); }

template <typename T>
static ssm_status fwd_run(void *u, const void *x, int ld_x, const float *w, const float *b,
                          const float *state, int B, int L, int E, int K, cudaStream_t s) {
    const dim3 grid((E + 31) / 32, time_blocks(L), B), blk(32, TG);
    switch (km_for(K)) {
    case 4: conv_fwd_kernel<T, 4><<<grid, blk, 0, s>>>((T *)u, (const T *)x, ld_x, w, b, state, L, E, K); break;
    case 16: conv_fwd_kernel<T, 16><<<grid, blk, 0, s>>>((T *)u, (const T *)x, ld_x, w, b, state, L, E, K); break;
    default: conv_fwd_kernel<T, 64><<<grid, blk, 0, s>>>((T *)u, (const T *)x, ld_x, w, b, state, L, E, K); break;
    }
    SSM_CUDA_CHECK_LAUNCH("cuda_conv_forward");
    return SSM_OK;
}

template <typename T>
static ssm_status bwd_run(void *dx, float *dw, float *db, const void *du, const void *x, int ld_x,
                          const float *w, const float *b, int B, int L, int E, int K, float *part,
                          cudaStream_t s) {
    const dim3 grid((E + 31) / 32, time_blocks(L), B), blk(32, TG);
    switch (km_for(K)) {
    case 4: conv_bwd_kernel<T, 4><<<grid, blk, 0, s>>>((T *)dx, (const T *)du, (const T *)x, ld_x, w, b, L, E, K, part); break;
    case 16: conv_bwd_kernel<T, 16><<<grid, blk, 0, s>>>((T *)dx, (const T *)du, (const T *)x, ld_x, w, b, L, E, K, part); break;
    default: conv_bwd_kernel<T, 64><<<grid, blk, 0, s>>>((T *)dx, (const T *)du, (const T *)x, ld_x, w, b, L, E, K, part); break;
    }
    SSM_CUDA_CHECK_LAUNCH("cuda_conv_backward");
    const int nblk = B * (int)time_blocks(L);
    conv_bwd_finish<<<((K + 1) * E + 255) / 256, 256, 0, s>>>(dw, db, part, nblk, E, K);
    SSM_CUDA_CHECK_LAUNCH("cuda_conv_backward (dw, db)");
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_conv_forward(void *u, const void *x, int ld_x, const float *w,
                                        const float *b, const float *state, int B, int L, int E,
                                        int K, ssm_dtype dtype, cudaStream_t stream) {
    ssm_status st = check("cuda_conv_forward", B, L, E, K, dtype, ld_x);
    if (st != SSM_OK) return st;
    if (!u || !x || !w || !b) return ssm_set_error(SSM_ERR_ARG, "cuda_conv_forward: NULL pointer");
    return dtype == SSM_DTYPE_F32
               ? fwd_run<float>(u, x, ld_x, w, b, state, B, L, E, K, stream)
               : fwd_run<__nv_bfloat16>(u, x, ld_x, w, b, state, B, L, E, K, stream);
}

extern "C" ssm_status cuda_conv_state_update(float *state, const void *x, int ld_x, int B, int L,
                                             int E, int K, ssm_dtype dtype, cudaStream_t stream) {
    ssm_status st = check("cuda_conv_state_update", B, L, E, K, dtype, ld_x);
    if (st != SSM_OK) return st;
    if (!state || !x) return ssm_set_error(SSM_ERR_ARG, "cuda_conv_state_update: NULL pointer");
    const int n = B * E;
    if (dtype == SSM_DTYPE_F32)
        conv_state_kernel<float><<<(n + 127) / 128, 128, 0, stream>>>(state, (const float *)x, ld_x, B, L, E, K);
    else
        conv_state_kernel<__nv_bfloat16><<<(n + 127) / 128, 128, 0, stream>>>(
            state, (const __nv_bfloat16 *)x, ld_x, B, L, E, K);
    SSM_CUDA_CHECK_LAUNCH("cuda_conv_state_update");
    return SSM_OK;
}

extern "C" size_t cuda_conv_backward_workspace(int B, int L, int E, int K) {
    if (B < 1 || L < 1 || E < 1 || K < 1) return 0;
    return (size_t)B * time_blocks(L) * (K + 1) * E * sizeof(float);
}

extern "C" ssm_status cuda_conv_backward(void *dx, float *dw, float *db, const void *du,
                                         const void *x, int ld_x, const float *w, const float *b,
                                         int B, int L, int E, int K, ssm_dtype dtype, void *ws,
                                         size_t ws_bytes, cudaStream_t stream) {
    ssm_status st = check("cuda_conv_backward", B, L, E, K, dtype, ld_x);
    if (st != SSM_OK) return st;
    if (!dx || !dw || !db || !du || !x || !w || !b)
        return ssm_set_error(SSM_ERR_ARG, "cuda_conv_backward: NULL pointer");
    const size_t need = cuda_conv_backward_workspace(B, L, E, K);
    if (!ws || ws_bytes < need)
        return ssm_set_error(SSM_ERR_ARG,
                             "cuda_conv_backward: workspace of %zu bytes, %zu needed "
                             "(cuda_conv_backward_workspace)", ws_bytes, need);
    return dtype == SSM_DTYPE_F32
               ? bwd_run<float>(dx, dw, db, du, x, ld_x, w, b, B, L, E, K, (float *)ws, stream)
               : bwd_run<__nv_bfloat16>(dx, dw, db, du, x, ld_x, w, b, B, L, E, K, (float *)ws, stream);
}

extern "C" ssm_status cuda_conv_step(void *u, float *state, const void *x, int ld_x,
                                     const float *w, const float *b, int B, int E, int K,
                                     ssm_dtype dtype, cudaStream_t stream) {
    ssm_status st = check("cuda_conv_step", B, 1, E, K, dtype, ld_x);
    if (st != SSM_OK) return st;
    if (!u || !state || !x || !w || !b) return ssm_set_error(SSM_ERR_ARG, "cuda_conv_step: NULL pointer");
    const int n = B * E;
    if (dtype == SSM_DTYPE_F32)
        conv_step_kernel<float><<<(n + 127) / 128, 128, 0, stream>>>((float *)u, state, (const float *)x, ld_x, w, b, B, E, K);
    else
        conv_step_kernel<__nv_bfloat16><<<(n + 127) / 128, 128, 0, stream>>>(
            (__nv_bfloat16 *)u, state, (const __nv_bfloat16 *)x, ld_x, w, b, B, E, K);
    SSM_CUDA_CHECK_LAUNCH("cuda_conv_step");
    return SSM_OK;
}
