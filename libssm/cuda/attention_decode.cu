// attention_decode.cu: the decode step's attention (L = 1) with split keys, flash-decoding
// style. One query row per (sequence, head) leaves the tiled kernel (attention.cu) 63 of its
// 64 query rows idle and one block per head; here a block takes one part of a sequence's keys
// for one kv head and all the query heads of its group (each key read once for them), so that
// B Hkv S blocks share the cache read. Same equations as attention.cu, in base 2:
//   part s:   m_s = max_j s_j,  l_s = sum_j 2^(s_j - m_s),  o_s = sum_j 2^(s_j - m_s) v_j
//   combined: M = max_s m_s,  l = sum_s 2^(m_s - M) l_s,  o = sum_s 2^(m_s - M) o_s / l
// with s_j = scale log2(e) q . k_j over the keys j <= prefix (the new key is in the cache). The
// parts are a fixed partition and every sum runs in a fixed order: the same bits on every run.
// Scores and p stay fp32 (the tiled kernel rounds both operands of its products to bf16).
#include "model.cuh"

namespace {

constexpr int DW = 4, DT = DW * 32; // warps per block; threads
constexpr int GMAX = 8;             // query heads per pass of a block (larger groups: more passes)

// the parts of each (sequence, kv head)'s keys: enough blocks to fill the GPU twice over
int splits(const cuda_attention_args *a) {
    const int want = (2 * ssm_cuda_sm_count() + a->B * a->Hkv - 1) / (a->B * a->Hkv);
    return want < 1 ? 1 : want > 64 ? 64 : want;
}

struct Parts {
    float *m, *l; // (B, H, S) base-2 max and sum of part s
    float *o;     // (B, H, S, hd) its unnormalised output
};
Parts parts(void *work, const cuda_attention_args *a, int S) {
    const size_t n = (size_t)a->B * a->H * S;
    float *f = (float *)work;
    return {f, f + n, f + 2 * n};
}

// Grid (S, Hkv, B): part s of sequence b's keys for kv head g and its query heads.
// HDW = ceil(hd / 32): a lane holds channels lane + 32 i.
template <typename KV, int HDW>
__global__ void __launch_bounds__(DT) decode_part_kernel(const cuda_attention_args a, Parts pt, int S) {
    __shared__ float ms[DW][GMAX], ls[DW][GMAX], os[DW][GMAX][HDW * 32];
    const int s = blockIdx.x, g = blockIdx.y, b = blockIdx.z, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int G = a.H / a.Hkv, hd = a.hd;
    const int64_t n = a.prefix[b] + 1; // keys 0 .. prefix
    const int64_t per = (n + S - 1) / S, j0 = s * per, j1 = j0 + per < n ? j0 + per : n;
    const float sl2 = a.scale * SSM_LOG2E;
    const KV *kb = (const KV *)a.k + (size_t)b * a.kv_batch_stride + (size_t)g * hd;
    const KV *vb = (const KV *)a.v + (size_t)b * a.kv_batch_stride + (size_t)g * hd;
    const bf16 *qb = (const bf16 *)a.q + (size_t)b * a.ld_q;
    for (int h0 = 0; h0 < G; h0 += GMAX) {
        const int ng = G - h0 < GMAX ? G - h0 : GMAX;
        float q[GMAX][HDW], o[GMAX][HDW], m[GMAX], l[GMAX];
#pragma unroll
        for (int i = 0; i < GMAX; i++) {
            m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
            for (int c = 0; c < HDW; c++) {
                const int ch = lane + 32 * c;
                q[i][c] = i < ng && ch < hd ? to_f(qb[(size_t)(g * G + h0 + i) * hd + ch]) * sl2 : 0.0f;
                o[i][c] = 0.0f;
            }
        }
        // the warps take the part's keys in turn
        for (int64_t j = j0 + w; j < j1; j += DW) {
            float k[HDW], v[HDW];
#pragma unroll
            for (int c = 0; c < HDW; c++) {
                const int ch = lane + 32 * c;
                k[c] = ch < hd ? to_f(kb[j * a.ld_kv + ch]) : 0.0f;
                v[c] = ch < hd ? to_f(vb[j * a.ld_kv + ch]) : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < GMAX; i++) {
                if (i >= ng) break;
                float dot = 0.0f;
#pragma unroll
                for (int c = 0; c < HDW; c++) dot += q[i][c] * k[c];
                for (int x = 16; x; x >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, x);
                const float m_new = fmaxf(m[i], dot), alpha = exp2f(m[i] - m_new), p = exp2f(dot - m_new);
                l[i] = alpha * l[i] + p, m[i] = m_new;
#pragma unroll
                for (int c = 0; c < HDW; c++) o[i][c] = alpha * o[i][c] + p * v[c];
            }
        }
        // the block's warps combined in order, then the part written
        for (int i = 0; i < ng; i++) {
            if (lane == 0) ms[w][i] = m[i], ls[w][i] = l[i];
#pragma unroll
            for (int c = 0; c < HDW; c++) os[w][i][lane + 32 * c] = o[i][c];
        }
        __syncthreads();
        for (int i = w; i < ng; i += DW) {
            float mx = -INFINITY;
            for (int x = 0; x < DW; x++) mx = fmaxf(mx, ms[x][i]);
            float wt[DW], sum = 0.0f;
            for (int x = 0; x < DW; x++) wt[x] = ms[x][i] == -INFINITY ? 0.0f : exp2f(ms[x][i] - mx), sum += wt[x] * ls[x][i];
            const size_t r = ((size_t)b * a.H + g * G + h0 + i) * S + s;
            if (lane == 0) pt.m[r] = mx, pt.l[r] = sum;
            for (int ch = lane; ch < hd; ch += 32) {
                float acc = 0.0f;
                for (int x = 0; x < DW; x++) acc += wt[x] * os[x][i][ch];
                pt.o[r * hd + ch] = acc;
            }
        }
        __syncthreads();
    }
}

// Grid (H, B): the S parts of one query row combined; out bf16, lse natural log.
__global__ void decode_combine_kernel(const cuda_attention_args a, Parts pt, int S) {
    const int h = blockIdx.x, b = blockIdx.y;
    const size_t r0 = ((size_t)b * a.H + h) * S;
    float mx = -INFINITY;
    for (int s = 0; s < S; s++) mx = fmaxf(mx, pt.m[r0 + s]); // finite: part 0 holds key 0
    float l = 0.0f;
    for (int s = 0; s < S; s++) l += pt.m[r0 + s] == -INFINITY ? 0.0f : exp2f(pt.m[r0 + s] - mx) * pt.l[r0 + s];
    const float inv = 1.0f / l;
    bf16 *out = (bf16 *)a.out + (size_t)b * a.ld_out + (size_t)h * a.hd;
    for (int ch = threadIdx.x; ch < a.hd; ch += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; s++)
            if (pt.m[r0 + s] != -INFINITY) acc += exp2f(pt.m[r0 + s] - mx) * pt.o[(r0 + s) * a.hd + ch];
        out[ch] = __float2bfloat16(acc * inv);
    }
    if (threadIdx.x == 0 && a.lse) a.lse[(size_t)b * a.H + h] = (mx + log2f(l)) * SSM_LN2;
}

template <typename KV, int HDW> ssm_status run(const cuda_attention_args *a, cudaStream_t st) {
    const int S = splits(a);
    const Parts pt = parts(a->split_work, a, S);
    decode_part_kernel<KV, HDW><<<dim3(S, a->Hkv, a->B), DT, 0, st>>>(*a, pt, S);
    SSM_CUDA_CHECK_LAUNCH("cuda_attention_decode (parts)");
    decode_combine_kernel<<<dim3(a->H, a->B), 128, 0, st>>>(*a, pt, S);
    SSM_CUDA_CHECK_LAUNCH("cuda_attention_decode (combine)");
    return SSM_OK;
}

template <typename KV> ssm_status run_kv(const cuda_attention_args *a, cudaStream_t st) {
    const int hdw = (a->hd + 31) / 32;
    return hdw == 1 ? run<KV, 1>(a, st) : hdw == 2 ? run<KV, 2>(a, st) : hdw == 3 ? run<KV, 3>(a, st) : run<KV, 4>(a, st);
}

} // namespace

extern "C" size_t cuda_attention_decode_workspace(const cuda_attention_args *a) {
    return ssm_align_up((size_t)a->B * a->H * splits(a) * (a->hd + 2) * sizeof(float), 256);
}

extern "C" ssm_status cuda_attention_decode(const cuda_attention_args *a, cudaStream_t st) {
    if (a->L != 1 || !a->prefix || !a->split_work || a->hd > 128 || a->H % a->Hkv)
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention_decode: needs L = 1, the caches' lengths, hd <= 128 and "
                             "its workspace");
    if (a->split_work_bytes < cuda_attention_decode_workspace(a))
        return ssm_set_error(SSM_ERR_ARG, "cuda_attention_decode: workspace of %zu bytes, needs %zu",
                             a->split_work_bytes, cuda_attention_decode_workspace(a));
    return a->kv_dtype == SSM_DTYPE_F32 ? run_kv<float>(a, st) : run_kv<bf16>(a, st);
}
