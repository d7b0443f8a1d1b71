// attention_layer.cu: the causal self-attention layer kind on the GPU, op for op
// libssm/src/attention.c (read them side by side), in the mixed precision of the other kinds:
// bf16 activations and GEMM inputs, fp32 residual stream, softmax statistics, KV cache and
// parameter gradients.
//   q = q_proj(h); k = k_proj(h); v = v_proj(h)              no biases
//   q, k = rope(q, k) at positions pos + l                    when rotary_dim > 0
//   o = softmax(q k^T / sqrt(hd) + causal mask) v per head    GQA (attention.cu)
//   r += o_proj(o)
// The KV cache is the layer's state slot, as on the CPU: per sequence (2, cap, KD) fp32, the
// rotated keys then the values. T = B * L rows; QD = H hd, KD = Hkv hd.
#include <math.h>

#include "model.cuh"

namespace {

struct Dims { int D, H, Hkv, hd, QD, KD, rot; float base; size_t cap; };
Dims dims(const ssm_config *c) {
    const ssm_attention_config *a = &c->attention;
    return {c->d_model, a->n_heads, a->n_kv_heads, a->head_dim, a->n_heads * a->head_dim,
            a->n_kv_heads * a->head_dim, a->rotary_dim, a->rope_base, (size_t)a->max_context};
}

// q (rows of QD), k (rows of KD) rotated in place at positions pos[b] + l (pos NULL: from 0)
ssm_status rotate(const Dims &d, bf16 *q, bf16 *k, int B, int L, const int64_t *pos, int inverse, cudaStream_t st) {
    SSM_TRY(cuda_rope_apply(q, d.QD, B, L, d.H, d.hd, d.rot, d.base, pos, inverse, st));
    return cuda_rope_apply(k, d.KD, B, L, d.Hkv, d.hd, d.rot, d.base, pos, inverse, st);
}

// the new keys and values of each sequence into its cache at positions pos[b] .. + L
__global__ void cache_append_kernel(float *cache, const bf16 *k, const bf16 *v, const int64_t *pos, int L, int KD,
                                    size_t cap, size_t items) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < items; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / KD, c = i % KD, b = t / L, l = t % L;
        float *ck = cache + b * 2 * cap * KD + ((size_t)pos[b] + l) * KD + c;
        ck[0] = __bfloat162float(k[i]);
        ck[cap * KD] = __bfloat162float(v[i]);
    }
}
ssm_status cache_append(const Dims &d, float *cache, const bf16 *k, const bf16 *v, const int64_t *pos, int B, int L,
                        cudaStream_t st) {
    const size_t items = (size_t)B * L * d.KD;
    const unsigned blocks = (unsigned)(items < 256 * 4096 ? (items + 255) / 256 : 4096);
    cache_append_kernel<<<blocks, 256, 0, st>>>(cache, k, v, pos, L, d.KD, d.cap, items);
    SSM_CUDA_CHECK_LAUNCH("the KV cache");
    return SSM_OK;
}

// The op's arguments for queries q of this pass and the keys of this pass (cache NULL) or of
// the cache, after this pass's were appended
cuda_attention_args op_args(const Dims &d, int B, int L, const bf16 *q, const bf16 *k, const bf16 *v,
                            const float *cache, const int64_t *pos, bf16 *o, float *lse) {
    cuda_attention_args a = {};
    a.B = B, a.L = L, a.H = d.H, a.Hkv = d.Hkv, a.hd = d.hd;
    a.scale = 1.0f / sqrtf((float)d.hd);
    a.q = q, a.ld_q = d.QD, a.out = o, a.ld_out = d.QD, a.lse = lse, a.ld_kv = d.KD;
    if (cache) {
        a.k = cache, a.v = cache + d.cap * d.KD, a.kv_dtype = SSM_DTYPE_F32;
        a.kv_batch_stride = 2 * d.cap * d.KD, a.prefix = pos;
    } else {
        a.k = k, a.v = v, a.kv_dtype = SSM_DTYPE_BF16, a.kv_batch_stride = (size_t)L * d.KD;
    }
    return a;
}

} // namespace

size_t cuda_attention_work_bytes(const ssm_config *c, int B, int L) {
    const Dims d = dims(c);
    cuda_attention_args a = op_args(d, B, L, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    return cuda_attention_backward_workspace(&a);
}

size_t cuda_attention_step_work_bytes(const ssm_config *c, int B) {
    const Dims d = dims(c);
    cuda_attention_args a = op_args(d, B, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    return cuda_attention_decode_workspace(&a);
}

ssm_status cuda_attention_layer_forward(ssm_model *m, int i, int B, int L, float *cache, const int64_t *pos, float *r) {
    ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    const ssm_attention_params *p = &g->p.layers[i].attention;
    cuda_attention_acts *a = &g->a.layers[i].attention;
    const bf16 *h = g->a.layers[i].normed;
    const Dims d = dims(c);
    const int T = B * L;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // q, k, v = projections of h
    SSM_TRY(cuda_matmul_forward(g->blas, a->q, d.QD, BF, 0.0f, h, d.D, w16(g, p->q_proj), T, d.D, d.QD));
    SSM_TRY(cuda_matmul_forward(g->blas, a->k, d.KD, BF, 0.0f, h, d.D, w16(g, p->k_proj), T, d.D, d.KD));
    SSM_TRY(cuda_matmul_forward(g->blas, a->v, d.KD, BF, 0.0f, h, d.D, w16(g, p->v_proj), T, d.D, d.KD));
    SSM_TRY(rotate(d, a->q, a->k, B, L, cache ? pos : NULL, 0, g->stream));
    if (cache) SSM_TRY(cache_append(d, cache, a->k, a->v, pos, B, L, g->stream));
    // o = softmax(q k^T * scale, causal) v
    cuda_attention_args args = op_args(d, B, L, a->q, a->k, a->v, cache, pos, a->o, a->lse);
    SSM_TRY(cuda_attention_forward(&args, g->stream));
    // r += o_proj(o): the residual add is the GEMM's beta = 1
    return cuda_matmul_forward(g->blas, r, d.D, SSM_DTYPE_F32, 1.0f, a->o, d.QD, w16(g, p->o_proj), T, d.QD, d.D);
}

ssm_status cuda_attention_layer_backward(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *ac = &g->a;
    const ssm_config *c = &m->config;
    const ssm_attention_params *p = &g->p.layers[i].attention;
    ssm_attention_params *gr = &g->g.layers[i].attention;
    const cuda_attention_acts *a = &ac->layers[i].attention;
    const cuda_attention_acts *w = &ac->d_attention;
    const bf16 *h = ac->layers[i].normed;
    const Dims d = dims(c);
    const int B = ac->B, L = ac->L, T = B * L;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // out = o_proj(o): d o = d r . o_proj; d o_proj += d r^T . o
    SSM_TRY(cuda_matmul_backward(g->blas, w->o, d.QD, BF, 0.0f, gr->o_proj, ac->d_resid16, d.D, a->o, d.QD,
                                 w16(g, p->o_proj), T, d.QD, d.D));
    // the attention: d q, d k, d v (from zero state: the keys are this pass's)
    cuda_attention_args args = op_args(d, B, L, a->q, a->k, a->v, NULL, NULL, a->o, a->lse);
    args.d_out = w->o, args.dq = w->q, args.dk = w->k, args.dv = w->v;
    SSM_TRY(cuda_attention_backward(&args, ac->work, ac->work_bytes, g->stream));
    // the rotation's transpose takes d q, d k back to the projections' outputs
    SSM_TRY(rotate(d, w->q, w->k, B, L, NULL, 1, g->stream));
    // q, k, v = projections of h: d h sums the three
    SSM_TRY(cuda_matmul_backward(g->blas, ac->d_normed, d.D, BF, 0.0f, gr->q_proj, w->q, d.QD, h, d.D,
                                 w16(g, p->q_proj), T, d.D, d.QD));
    SSM_TRY(cuda_matmul_backward(g->blas, ac->d_normed, d.D, BF, 1.0f, gr->k_proj, w->k, d.KD, h, d.D,
                                 w16(g, p->k_proj), T, d.D, d.KD));
    return cuda_matmul_backward(g->blas, ac->d_normed, d.D, BF, 1.0f, gr->v_proj, w->v, d.KD, h, d.D,
                                w16(g, p->v_proj), T, d.D, d.KD);
}

ssm_status cuda_attention_layer_step(ssm_model *m, int i, float *cache) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *dc = &g->dec;
    const ssm_config *c = &m->config;
    const ssm_layer_params *lp = &g->p.layers[i];
    const ssm_attention_params *p = &lp->attention;
    cuda_attention_acts *a = &dc->attention;
    const Dims d = dims(c);
    const int B = dc->batch;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // h = RMSNorm(r) once for the three projections
    SSM_TRY(cuda_rmsnorm_forward(dc->h, dc->rstd, dc->r, lp->norm, B, d.D, c->norm_eps, BF, g->stream));
    SSM_TRY(cuda_step_project(m, a->q, d.QD, BF, 0.0f, dc->h, d.D, NULL, w16(g, p->q_proj), d.D, d.QD));
    SSM_TRY(cuda_step_project(m, a->k, d.KD, BF, 0.0f, dc->h, d.D, NULL, w16(g, p->k_proj), d.D, d.KD));
    SSM_TRY(cuda_step_project(m, a->v, d.KD, BF, 0.0f, dc->h, d.D, NULL, w16(g, p->v_proj), d.D, d.KD));
    SSM_TRY(rotate(d, a->q, a->k, B, 1, dc->pos, 0, g->stream));
    SSM_TRY(cache_append(d, cache, a->k, a->v, dc->pos, B, 1, g->stream));
    cuda_attention_args args = op_args(d, B, 1, a->q, a->k, a->v, cache, dc->pos, a->o, NULL);
    args.split_work = dc->attention_split, args.split_work_bytes = dc->attention_split_bytes;
    SSM_TRY(cuda_attention_forward(&args, g->stream));
    return cuda_step_project(m, dc->r, d.D, SSM_DTYPE_F32, 1.0f, a->o, d.QD, NULL, w16(g, p->o_proj), d.QD, d.D);
}
