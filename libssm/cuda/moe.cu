// moe.cu: the mixture-of-experts layer kind on the GPU, op for op libssm/src/moe.c (read them
// side by side), in the mixed precision of the other layers: bf16 GEMM inputs (cuBLAS), fp32
// router logits, probabilities, weights, expert outputs, residual stream and parameter
// gradients. Shapes: T rows, D = d_model, X experts, k = top_k, S = T k slots, U/F and Us/Fs
// the experts' and the shared expert's widths.
//   l = h . router^T;  p = softmax(l) | sigmoid(l);  sel = top_k(p + bias);  w = p[sel] (/ sum)
//   out += sum_j w_j expert_{sel_j}(h) + shared(h)
// Routing stays on the device: the slots are grouped by expert (token order within an expert,
// as the CPU's) by one block per expert; only the X + 1 group starts come to the host, to size
// each expert's GEMMs. The decode step, captured in a CUDA graph, cannot wait for them: it runs
// the chosen experts a GEMV per slot up to batch MOE_GEMV_MAXB (each chosen expert's weights
// read once per slot), and above it every expert on the B rows (two batched GEMMs), combining
// the chosen outputs.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <math.h>

#include "model.cuh"

namespace {

constexpr int ROUTE_WARPS = 4; // rows (one warp each) per block of the routing kernels
constexpr int MOE_GEMV_MAXB = 8; // the decode step's batches that run the chosen experts alone
constexpr int GROUP_THREADS = 256;

struct route_args {
    const float *logits;  // (T, X)
    const float *bias;    // (X) the selection bias, or NULL
    float *prob;          // (T, X)
    int32_t *sel;         // (T, k)
    float *w;             // (T, k)
    int32_t *dense_row;   // (T, k) or NULL: the step's output row of each slot: sel T + t (every
                          // expert on every row), or with slot_rows the slot itself
    int slot_rows;
    int T, X, k, softmax, norm_topk;
    float scaling;
};

__device__ float warp_max(float v) {
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ double warp_sum(double v) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// (s, i) better than (so, io): a higher score, equal scores the lower expert; i < 0 is none
__device__ bool better(float s, int i, float so, int io) {
    return io < 0 || (i >= 0 && (s > so || (s == so && i < io)));
}

// One warp per row: prob, then the top k by p + bias (libssm/src/moe.c's route_row).
__global__ void route_kernel(route_args a) {
    extern __shared__ float score_sh[]; // (ROUTE_WARPS, X) the selection scores
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int t = blockIdx.x * ROUTE_WARPS + wid;
    if (t >= a.T) return; // warp-level work only below
    const int X = a.X, k = a.k;
    float *score = score_sh + (size_t)wid * X;
    const float *l = a.logits + (size_t)t * X;
    float *p = a.prob + (size_t)t * X;
    if (a.softmax) {
        float mx = -INFINITY;
        for (int e = lane; e < X; e += 32) mx = fmaxf(mx, l[e]);
        mx = warp_max(mx);
        double z = 0;
        for (int e = lane; e < X; e += 32) z += score[e] = expf(l[e] - mx);
        z = warp_sum(z);
        for (int e = lane; e < X; e += 32) p[e] = (float)(score[e] / z);
    } else {
        for (int e = lane; e < X; e += 32) p[e] = 1.0f / (1.0f + expf(-l[e]));
    }
    for (int e = lane; e < X; e += 32) score[e] = p[e] + (a.bias ? a.bias[e] : 0.0f);
    __syncwarp();
    double sum = 0;
    for (int j = 0; j < k; j++) {
        float bs = 0;
        int bi = -1;
        for (int e = lane; e < X; e += 32)
            if (better(score[e], e, bs, bi)) bs = score[e], bi = e;
        for (int o = 16; o; o >>= 1) {
            float os = __shfl_xor_sync(0xffffffffu, bs, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(os, oi, bs, bi)) bs = os, bi = oi;
        }
        if (lane == 0) {
            a.sel[(size_t)t * k + j] = bi;
            sum += p[bi];
            score[bi] = -INFINITY; // taken: every untaken score is finite
        }
        __syncwarp();
    }
    if (lane) return;
    const float norm = a.norm_topk ? (float)(1.0 / (sum + 1e-20)) : 1.0f;
    for (int j = 0; j < k; j++) {
        const size_t s = (size_t)t * k + j;
        const int e = a.sel[s];
        a.w[s] = p[e] * norm * a.scaling;
        if (a.dense_row) a.dense_row[s] = a.slot_rows ? (int32_t)s : e * a.T + t;
    }
}

struct group_args {
    const int32_t *sel; // (S)
    const float *prob;  // (T, X)
    int32_t *start;     // (X + 1)
    int32_t *slot, *row; // (S)
    float *stats;       // (2X) choices, then probability sums, per expert
    int S, T, X;
};

// One block per expert e: its rows start after the slots that chose a lower expert, and take
// its slots in slot (token) order; its choices and the sum of its probabilities.
__global__ void __launch_bounds__(GROUP_THREADS) group_kernel(group_args a) {
    typedef cub::BlockReduce<int, GROUP_THREADS> IntSum;
    typedef cub::BlockReduce<double, GROUP_THREADS> DoubleSum;
    typedef cub::BlockScan<int, GROUP_THREADS> Scan;
    __shared__ union {
        IntSum::TempStorage isum;
        DoubleSum::TempStorage dsum;
        Scan::TempStorage scan;
    } tmp;
    __shared__ int lower_sh, count_sh;
    const int e = blockIdx.x, tid = threadIdx.x;
    int lower = 0, count = 0;
    for (int s = tid; s < a.S; s += GROUP_THREADS) {
        const int v = a.sel[s];
        lower += v < e, count += v == e;
    }
    lower = IntSum(tmp.isum).Sum(lower);
    __syncthreads();
    count = IntSum(tmp.isum).Sum(count);
    if (tid == 0) lower_sh = lower, count_sh = count;
    __syncthreads();
    lower = lower_sh, count = count_sh;
    if (tid == 0) {
        a.start[e] = lower;
        if (e == a.X - 1) a.start[a.X] = lower + count;
        a.stats[e] = (float)count;
    }
    int base = lower;
    for (int s0 = 0; s0 < a.S; s0 += GROUP_THREADS) {
        const int s = s0 + tid, mine = s < a.S && a.sel[s] == e;
        int off, total;
        __syncthreads(); // tmp reused
        Scan(tmp.scan).ExclusiveSum(mine, off, total);
        if (mine) a.slot[base + off] = s, a.row[s] = base + off;
        base += total;
    }
    double ps = 0;
    for (int t = tid; t < a.T; t += GROUP_THREADS) ps += a.prob[(size_t)t * a.X + e];
    __syncthreads();
    ps = DoubleSum(tmp.dsum).Sum(ps);
    if (tid == 0) a.stats[a.X + e] = (float)ps;
}

// x[g] (D) = h[slot[g] / k]: the grouped rows' inputs
__global__ void gather_kernel(bf16 *x, const bf16 *h, const int32_t *slot, int k, int D) {
    const size_t g = blockIdx.x, t = slot[g] / k;
    for (int d = threadIdx.x; d < D; d += blockDim.x) x[g * D + d] = h[t * D + d];
}

// out[t] (D) += sum_j w[t k + j] y[row[t k + j]]
__global__ void combine_kernel(float *out, const float *y, const float *w, const int32_t *row, int k, int D) {
    const size_t t = blockIdx.x;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc += w[t * k + j] * y[(size_t)row[t * k + j] * D + d];
        out[t * D + d] += acc;
    }
}

// One warp per slot s (token t = s / k, grouped row g): d y[g] = w_s d out[t]; d w_s = d out[t] . y[g]
__global__ void combine_backward_kernel(bf16 *d_y, float *d_w, const float *d_out, const float *y, const float *w,
                                        const int32_t *row, int S, int k, int D) {
    const int lane = threadIdx.x & 31;
    const int s = blockIdx.x * ROUTE_WARPS + (threadIdx.x >> 5);
    if (s >= S) return;
    const size_t t = s / k, g = row[s];
    double dot = 0;
    for (int d = lane; d < D; d += 32) {
        const float go = d_out[t * D + d];
        d_y[g * D + d] = __float2bfloat16_rn(w[s] * go);
        dot += (double)go * y[g * D + d];
    }
    dot = warp_sum(dot);
    if (lane == 0) d_w[s] = (float)dot;
}

struct route_backward_args {
    float *d_logits;      // (T, X)
    bf16 *d_logits16;     // (T, X)
    const float *d_w;     // (T, k)
    const float *prob;    // (T, X)
    const int32_t *sel;   // (T, k)
    const float *aux_grad; // (X) the auxiliary loss's d prob, or NULL
    int T, X, k, softmax, norm_topk;
    float scaling;
};

// One warp per row: the weights -> d prob -> d logits (libssm/src/moe.c's moe_backward)
__global__ void route_backward_kernel(route_backward_args a) {
    extern __shared__ float dp_sh[]; // (ROUTE_WARPS, X) d prob, then d logits
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int t = blockIdx.x * ROUTE_WARPS + wid;
    if (t >= a.T) return;
    const int X = a.X, k = a.k;
    float *dl = dp_sh + (size_t)wid * X;
    const float *p = a.prob + (size_t)t * X;
    const int32_t *sel = a.sel + (size_t)t * k;
    const float *dw = a.d_w + (size_t)t * k;
    for (int e = lane; e < X; e += 32) dl[e] = a.aux_grad ? a.aux_grad[e] : 0.0f;
    __syncwarp();
    if (lane == 0) {
        // w_j = scale p_j / Z (Z = sum_j p_j + 1e-20, or 1): d p_m += scale (dw_m - sum_j dw_j w_j / scale) / Z
        double z = 1, dot = 0;
        if (a.norm_topk) {
            z = 1e-20;
            for (int j = 0; j < k; j++) z += p[sel[j]];
            for (int j = 0; j < k; j++) dot += (double)dw[j] * p[sel[j]] / z;
        }
        for (int j = 0; j < k; j++) dl[sel[j]] += (float)(a.scaling * (dw[j] - dot) / z);
    }
    __syncwarp();
    if (a.softmax) { // d l = p (d p - p . d p)
        double pd = 0;
        for (int e = lane; e < X; e += 32) pd += (double)p[e] * dl[e];
        pd = warp_sum(pd);
        for (int e = lane; e < X; e += 32) dl[e] = (float)(p[e] * (dl[e] - pd));
    } else { // d l = d p p (1 - p)
        for (int e = lane; e < X; e += 32) dl[e] *= p[e] * (1.0f - p[e]);
    }
    for (int e = lane; e < X; e += 32) {
        a.d_logits[(size_t)t * X + e] = dl[e];
        a.d_logits16[(size_t)t * X + e] = __float2bfloat16_rn(dl[e]);
    }
}

// The decode step's chosen experts alone, a GEMV per slot: out[s, r] = w[sel[s]][r, :] .
// in[s / in_div, :] (in_div = k: the slot's token row; 1: the slot's own row). Grid (n / 8, S),
// a warp per output r. VEC: kk a multiple of 8 and 16-byte aligned rows (16-byte loads).
struct expert_gemv_args {
    void *out;          // (S, n) bf16, or fp32 with out_f32
    int out_f32;
    const bf16 *in;     // (rows, kk)
    int in_div;
    const bf16 *w;      // (X, n, kk)
    const int32_t *sel; // (S)
    int n, kk;
};
constexpr int EG_WARPS = 8;
template <bool VEC> __global__ void __launch_bounds__(EG_WARPS * 32) expert_gemv_kernel(expert_gemv_args a) {
    const int lane = threadIdx.x & 31, r = blockIdx.x * EG_WARPS + (threadIdx.x >> 5), s = blockIdx.y;
    if (r >= a.n) return;
    const bf16 *wr = a.w + ((size_t)a.sel[s] * a.n + r) * a.kk, *x = a.in + (size_t)(s / a.in_div) * a.kk;
    float acc = 0.0f;
    if (VEC) {
        for (int c = lane * 8; c < a.kk; c += 256) {
            const uint4 wv = __ldg((const uint4 *)(wr + c)), xv = *(const uint4 *)(x + c);
            const __nv_bfloat162 *w2 = (const __nv_bfloat162 *)&wv, *x2 = (const __nv_bfloat162 *)&xv;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 wf = __bfloat1622float2(w2[i]), xf = __bfloat1622float2(x2[i]);
                acc += wf.x * xf.x + wf.y * xf.y;
            }
        }
    } else {
        for (int c = lane; c < a.kk; c += 32) acc += to_f(wr[c]) * to_f(x[c]);
    }
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane) return;
    if (a.out_f32) ((float *)a.out)[(size_t)s * a.n + r] = acc;
    else ((bf16 *)a.out)[(size_t)s * a.n + r] = __float2bfloat16_rn(acc);
}

// d normed[t] = d h[t] + sum_j d x[row[t k + j]]: the k choices' d x back to their token, in
// slot order, and one rounding to bf16
__global__ void scatter_kernel(bf16 *d_normed, const float *d_h, const float *d_x, const int32_t *row, int k, int D) {
    const size_t t = blockIdx.x;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = d_h[t * D + d];
        for (int j = 0; j < k; j++) acc += d_x[(size_t)row[t * k + j] * D + d];
        d_normed[t * D + d] = __float2bfloat16_rn(acc);
    }
}

// The Switch loss over the layers' statistics (libssm/src/moe.c's ssm_moe_aux_loss): with
// R = n T rows, aux = X sum_e (count_e / R) (prob_e / R), d aux / d p = X count_e / R^2.
__global__ void aux_kernel(double *aux, float *aux_grad, const float *stats, int n_layer, int X, double rows,
                           float coef) {
    typedef cub::BlockReduce<double, 1024> DoubleSum;
    __shared__ DoubleSum::TempStorage tmp;
    double part = 0;
    for (int e = threadIdx.x; e < X; e += blockDim.x) {
        double count = 0, prob = 0;
        for (int i = 0; i < n_layer; i++) count += stats[(size_t)i * 2 * X + e], prob += stats[(size_t)i * 2 * X + X + e];
        part += count * prob;
        aux_grad[e] = (float)(coef * X * count / (rows * rows));
    }
    part = DoubleSum(tmp).Sum(part);
    if (threadIdx.x == 0) *aux = X * part / (rows * rows);
}

bool gated(const ssm_config *c) { return c->moe.activation == SSM_MLP_SWIGLU; }

// a (rows, F) = act(u (rows, U))
ssm_status activate(const ssm_config *c, bf16 *a, const bf16 *u, int rows, int F, int U, cudaStream_t st) {
    if (gated(c)) return cuda_swiglu_forward(a, F, u, U, rows, F, SSM_DTYPE_BF16, st);
    return cuda_relu2_forward(a, F, u, U, rows, F, SSM_DTYPE_BF16, st);
}
ssm_status activate_backward(const ssm_config *c, bf16 *du, const bf16 *da, const bf16 *u, int rows, int F, int U,
                             cudaStream_t st) {
    if (gated(c)) return cuda_swiglu_backward(du, U, da, F, u, U, rows, F, SSM_DTYPE_BF16, st);
    return cuda_relu2_backward(du, U, da, F, u, U, rows, F, SSM_DTYPE_BF16, st);
}

// T rows' routing from q->logits into q->prob, q->sel, q->w (and dense_row, slot_rows)
ssm_status route(const ssm_config *c, const ssm_moe_params *p, cuda_moe_acts *q, int32_t *dense_row, int slot_rows,
                 int T, cudaStream_t st) {
    const ssm_moe_config *o = &c->moe;
    route_args a = {q->logits, o->routing == SSM_MOE_SIGMOID ? p->bias : NULL, q->prob, q->sel, q->w, dense_row,
                    slot_rows, T, o->n_experts, o->top_k, o->routing == SSM_MOE_SOFTMAX, o->norm_topk,
                    o->routed_scaling};
    const size_t smem = (size_t)ROUTE_WARPS * o->n_experts * sizeof(float); // <= 16 KiB (X <= 1024)
    route_kernel<<<(T + ROUTE_WARPS - 1) / ROUTE_WARPS, 32 * ROUTE_WARPS, smem, st>>>(a);
    SSM_CUDA_CHECK_LAUNCH("the MoE routing");
    return SSM_OK;
}

// The shared expert on T rows of h: r += down(act(up(h))) (the residual add is the GEMM's beta)
ssm_status shared_forward(ssm_model *m, const ssm_moe_params *p, bf16 *su, bf16 *sa, const bf16 *h, int T, float *r) {
    ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    const cuda_moe_widths w = cuda_moe_width(c);
    const int D = c->d_model, Fs = (int)w.Fs, Us = (int)w.Us;
    if (!Fs) return SSM_OK;
    SSM_TRY(cuda_matmul_forward(g->blas, su, Us, SSM_DTYPE_BF16, 0.0f, h, D, w16(g, p->shared_up), T, D, Us));
    SSM_TRY(activate(c, sa, su, T, Fs, Us, g->stream));
    return cuda_matmul_forward(g->blas, r, D, SSM_DTYPE_F32, 1.0f, sa, Fs, w16(g, p->shared_down), T, Fs, D);
}

ssm_status expert_gemv(const expert_gemv_args &a, int S, cudaStream_t st) {
    const bool vec = a.kk % 8 == 0 && ((uintptr_t)a.w & 15) == 0 && ((uintptr_t)a.in & 15) == 0;
    const dim3 grid((a.n + EG_WARPS - 1) / EG_WARPS, S);
    if (vec) expert_gemv_kernel<true><<<grid, EG_WARPS * 32, 0, st>>>(a);
    else expert_gemv_kernel<false><<<grid, EG_WARPS * 32, 0, st>>>(a);
    SSM_CUDA_CHECK_LAUNCH("the MoE step's experts");
    return SSM_OK;
}

// f(e, g0, n) for each expert e with rows: its grouped rows [g0, g0 + n) (start: the host copy)
template <typename F> ssm_status per_expert(const int32_t *start, int X, F f) {
    for (int e = 0; e < X; e++) {
        const int n = start[e + 1] - start[e];
        if (n) SSM_TRY(f(e, (size_t)start[e], n));
    }
    return SSM_OK;
}

ssm_status combine(float *r, const cuda_moe_acts *q, int T, int k, int D, cudaStream_t st) {
    combine_kernel<<<T, 128, 0, st>>>(r, q->y, q->w, q->row, k, D);
    SSM_CUDA_CHECK_LAUNCH("the MoE combine");
    return SSM_OK;
}

} // namespace

ssm_status cuda_moe_forward(ssm_model *m, int i, int T, float *r) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *ac = &g->a;
    const ssm_config *c = &m->config;
    const ssm_moe_params *p = &g->p.layers[i].moe;
    cuda_layer_acts *la = &ac->layers[i];
    cuda_moe_acts *q = &la->moe;
    const cuda_moe_widths w = cuda_moe_width(c);
    const int D = c->d_model, X = (int)w.X, k = (int)w.k, F = (int)w.F, U = (int)w.U, S = T * k;
    cudaStream_t st = g->stream;
    // l = h . router^T (fp32 logits)
    SSM_TRY(cuda_matmul_forward(g->blas, q->logits, X, SSM_DTYPE_F32, 0.0f, la->normed, D, w16(g, p->router), T, D, X));
    SSM_TRY(route(c, p, q, NULL, 0, T, st));
    // the slots grouped by expert, and the grouped rows' inputs
    group_args ga = {q->sel, q->prob, q->start, q->slot, q->row, ac->moe_stats + (size_t)i * 2 * X, S, T, X};
    group_kernel<<<X, GROUP_THREADS, 0, st>>>(ga);
    SSM_CUDA_CHECK_LAUNCH("the MoE grouping");
    gather_kernel<<<S, 128, 0, st>>>(q->x, la->normed, q->slot, k, D);
    SSM_CUDA_CHECK_LAUNCH("the MoE gather");
    // each expert's GEMMs need its row count on the host
    int32_t *start = ac->moe_start_host + (size_t)i * (X + 1);
    CUDA_TRY(cudaMemcpyAsync(start, q->start, (X + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost, st), "the MoE groups");
    CUDA_TRY(cudaStreamSynchronize(st), "the MoE groups");
    const bf16 *up16 = w16(g, p->up), *down16 = w16(g, p->down);
    // u = up_e(x) on each expert's rows, a = act(u) on all, y = down_e(a)
    SSM_TRY(per_expert(start, X, [&](int e, size_t g0, int n) {
        return cuda_matmul_forward(g->blas, q->u + g0 * U, U, SSM_DTYPE_BF16, 0.0f, q->x + g0 * D, D,
                                   up16 + (size_t)e * U * D, n, D, U);
    }));
    SSM_TRY(activate(c, q->a, q->u, S, F, U, st));
    SSM_TRY(per_expert(start, X, [&](int e, size_t g0, int n) {
        return cuda_matmul_forward(g->blas, q->y + g0 * D, D, SSM_DTYPE_F32, 0.0f, q->a + g0 * F, F,
                                   down16 + (size_t)e * D * F, n, F, D);
    }));
    // out += shared(h) + sum_j w_j y_j
    SSM_TRY(shared_forward(m, p, q->su, q->sa, la->normed, T, r));
    return combine(r, q, T, k, D, st);
}

ssm_status cuda_moe_backward(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *ac = &g->a;
    const ssm_config *c = &m->config;
    const ssm_moe_config *o = &c->moe;
    const ssm_moe_params *p = &g->p.layers[i].moe;
    ssm_moe_params *gr = &g->g.layers[i].moe;
    const cuda_layer_acts *la = &ac->layers[i];
    const cuda_moe_acts *q = &la->moe;
    const cuda_moe_scratch *d = &ac->d_moe;
    const cuda_moe_widths w = cuda_moe_width(c);
    const int T = ac->B * ac->L, D = c->d_model, X = (int)w.X, k = (int)w.k, F = (int)w.F, U = (int)w.U, S = T * k;
    const int Fs = (int)w.Fs, Us = (int)w.Us;
    const ssm_dtype BF = SSM_DTYPE_BF16, F32 = SSM_DTYPE_F32;
    cudaStream_t st = g->stream;
    const int32_t *start = ac->moe_start_host + (size_t)i * (X + 1); // the forward's
    // out += sum_j w_j y_j: d y_j = w_j d out; d w_j = d out . y_j
    combine_backward_kernel<<<(S + ROUTE_WARPS - 1) / ROUTE_WARPS, 32 * ROUTE_WARPS, 0, st>>>(
        d->d_y, d->d_w, ac->d_resid, q->y, q->w, q->row, S, k, D);
    SSM_CUDA_CHECK_LAUNCH("the MoE combine's backward");
    const bf16 *up16 = w16(g, p->up), *down16 = w16(g, p->down);
    // y = down_e(a): d a = d y . down_e; d down_e += d y^T . a
    SSM_TRY(per_expert(start, X, [&](int e, size_t g0, int n) {
        return cuda_matmul_backward(g->blas, d->d_a + g0 * F, F, BF, 0.0f, gr->down + (size_t)e * D * F, d->d_y + g0 * D,
                                    D, q->a + g0 * F, F, down16 + (size_t)e * D * F, n, F, D);
    }));
    SSM_TRY(activate_backward(c, d->d_u, d->d_a, q->u, S, F, U, st));
    // u = up_e(x): d x = d u . up_e; d up_e += d u^T . x
    SSM_TRY(per_expert(start, X, [&](int e, size_t g0, int n) {
        return cuda_matmul_backward(g->blas, d->d_x + g0 * D, D, F32, 0.0f, gr->up + (size_t)e * U * D, d->d_u + g0 * U,
                                    U, q->x + g0 * D, D, up16 + (size_t)e * U * D, n, D, U);
    }));
    // the weights -> d logits
    route_backward_args rb = {d->d_logits, d->d_logits16, d->d_w, q->prob, q->sel,
                              o->routing == SSM_MOE_SOFTMAX ? ac->moe_aux_grad : NULL, T, X, k,
                              o->routing == SSM_MOE_SOFTMAX, o->norm_topk, o->routed_scaling};
    route_backward_kernel<<<(T + ROUTE_WARPS - 1) / ROUTE_WARPS, 32 * ROUTE_WARPS,
                            (size_t)ROUTE_WARPS * X * sizeof(float), st>>>(rb);
    SSM_CUDA_CHECK_LAUNCH("the MoE routing's backward");
    // l = h . router^T: d h = d l . router; d router += d l^T . h
    SSM_TRY(cuda_matmul_backward(g->blas, d->d_h, D, F32, 0.0f, gr->router, d->d_logits16, X, la->normed, D,
                                 w16(g, p->router), T, D, X));
    if (Fs) { // shared(h) = down(act(up(h)))
        SSM_TRY(cuda_matmul_backward(g->blas, d->d_sa, Fs, BF, 0.0f, gr->shared_down, ac->d_resid16, D, q->sa, Fs,
                                     w16(g, p->shared_down), T, Fs, D));
        SSM_TRY(activate_backward(c, d->d_su, d->d_sa, q->su, T, Fs, Us, st));
        SSM_TRY(cuda_matmul_backward(g->blas, d->d_h, D, F32, 1.0f, gr->shared_up, d->d_su, Us, la->normed, D,
                                     w16(g, p->shared_up), T, D, Us));
    }
    // the grouped rows' d x back to their tokens
    scatter_kernel<<<T, 128, 0, st>>>(ac->d_normed, d->d_h, d->d_x, q->row, k, D);
    SSM_CUDA_CHECK_LAUNCH("the MoE scatter");
    return SSM_OK;
}

ssm_status cuda_moe_step(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *dc = &g->dec;
    const ssm_config *c = &m->config;
    const ssm_layer_params *lp = &g->p.layers[i];
    const ssm_moe_params *p = &lp->moe;
    cuda_moe_acts *q = &dc->moe;
    const cuda_moe_widths w = cuda_moe_width(c);
    const int B = dc->batch, D = c->d_model, X = (int)w.X, k = (int)w.k, F = (int)w.F, U = (int)w.U;
    cudaStream_t st = g->stream;
    // h = RMSNorm(r); l = h . router^T; the routing, with the dense rows e B + b
    SSM_TRY(cuda_rmsnorm_forward(dc->h, dc->rstd, dc->r, lp->norm, B, D, c->norm_eps, SSM_DTYPE_BF16, st));
    SSM_TRY(cuda_matmul_forward(g->blas, q->logits, X, SSM_DTYPE_F32, 0.0f, dc->h, D, w16(g, p->router), B, D, X));
    const int few = B <= MOE_GEMV_MAXB;
    SSM_TRY(route(c, p, q, q->row, few, B, st));
    if (few) { // the chosen experts alone: u (S, U), a (S, F), y (S, D), row s = slot s
        const int S = B * k;
        SSM_TRY(expert_gemv({q->u, 0, dc->h, k, w16(g, p->up), q->sel, U, D}, S, st));
        SSM_TRY(activate(c, q->a, q->u, S, F, U, st));
        SSM_TRY(expert_gemv({q->y, 1, q->a, 1, w16(g, p->down), q->sel, D, F}, S, st));
    } else { // every expert on the B rows: u (X, B, U), a (X, B, F), y (X, B, D)
        SSM_TRY(cuda_matmul_forward_batched(g->blas, q->u, U, (long long)B * U, SSM_DTYPE_BF16, 0.0f, dc->h, D, 0,
                                            w16(g, p->up), (long long)U * D, B, D, U, X));
        SSM_TRY(activate(c, q->a, q->u, X * B, F, U, st));
        SSM_TRY(cuda_matmul_forward_batched(g->blas, q->y, D, (long long)B * D, SSM_DTYPE_F32, 0.0f, q->a, F,
                                            (long long)B * F, w16(g, p->down), (long long)D * F, B, F, D, X));
    }
    SSM_TRY(shared_forward(m, p, q->su, q->sa, dc->h, B, dc->r));
    return combine(dc->r, q, B, k, D, st);
}

ssm_status cuda_moe_aux_loss(ssm_model *m, int T) {
    ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    int n = 0;
    for (int i = 0; i < c->n_layer; i++) n += c->layer_kind[i] == SSM_LAYER_MOE;
    if (!n || c->moe.routing != SSM_MOE_SOFTMAX) return SSM_OK;
    aux_kernel<<<1, 1024, 0, g->stream>>>(g->a.moe_aux, g->a.moe_aux_grad, g->a.moe_stats, c->n_layer,
                                          c->moe.n_experts, (double)n * T, c->moe.aux_loss_coef);
    SSM_CUDA_CHECK_LAUNCH("the MoE auxiliary loss");
    return SSM_OK;
}

extern "C" ssm_status cuda_model_routing(const ssm_model *m, int layer, int32_t *experts, float *weights) {
    ssm_cuda_model *g = m->cuda;
    const cuda_acts *a = &g->a;
    const ssm_config *c = &m->config;
    if (!g->routed) return ssm_set_error(SSM_ERR_ARG, "ssm_model_routing: no forward of this shape on the GPU yet");
    int last = -1;
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_MOE) last = i;
    if (!a->training && layer != last) // every layer shares the buffers of one
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_routing: on a GPU, a forward without targets keeps only the "
                             "last MoE layer's routing (layer %d); run it with targets for layer %d's", last, layer);
    SSM_TRY(cuda_model_enter(g));
    const cuda_moe_acts *q = &a->layers[layer].moe;
    const size_t n = (size_t)a->B * a->L * c->moe.top_k;
    if (experts) CUDA_TRY(cudaMemcpyAsync(experts, q->sel, n * sizeof(int32_t), cudaMemcpyDeviceToHost, g->stream), "the routing");
    if (weights) CUDA_TRY(cudaMemcpyAsync(weights, q->w, n * sizeof(float), cudaMemcpyDeviceToHost, g->stream), "the routing");
    CUDA_TRY(cudaStreamSynchronize(g->stream), "the routing");
    return SSM_OK;
}

extern "C" double cuda_model_aux_loss(const ssm_model *m) { return m->cuda->aux_loss; }
