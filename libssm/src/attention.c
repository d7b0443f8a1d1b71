/* attention.c: the causal self-attention layer kind on the CPU (NemotronH's NemotronHAttention,
 * with mamba_ssm's optional RoPE; docs/architecture.md, 'Attention').
 *   q = q_proj(h); k = k_proj(h); v = v_proj(h)              no biases
 *   q, k = rope(q, k) at positions pos + l                    when rotary_dim > 0
 *   o = softmax(q k^T / sqrt(hd) + causal mask) v per head    GQA: head h reads kv head h / (H / Hkv)
 *   out += o_proj(o)
 * The KV cache is the layer's recurrent state: per sequence, the rotated keys then the values
 * of up to attention.max_context positions, so step mode and carried windows see every earlier
 * position. Shapes: T = B * L rows; QD = H hd, KD = Hkv hd. */
#include <math.h>
#include <string.h>

#include "attention.h"
#include "cpu_ops.h"
#include "layers.h"
#include "rope.h"

enum { ATT_N_TENSORS = 4 };
_Static_assert(sizeof(ssm_attention_params) == ATT_N_TENSORS * sizeof(float *),
               "ssm_attention_params and the attention tensor table must list the same tensors");
static const char *const att_suffix[ATT_N_TENSORS] = {
    "mixer.q_proj.weight", "mixer.k_proj.weight", "mixer.v_proj.weight", "mixer.o_proj.weight"};
static const unsigned char att_decay[ATT_N_TENSORS] = {1, 1, 1, 1};

typedef struct att_dims { int D, H, Hkv, hd, QD, KD; int64_t cap; } att_dims;
static att_dims dims(const ssm_config *c) {
    const ssm_attention_config *a = &c->attention;
    return (att_dims){c->d_model, a->n_heads, a->n_kv_heads, a->head_dim, a->n_heads * a->head_dim,
                      a->n_kv_heads * a->head_dim, a->max_context};
}

static void att_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    att_dims d = dims(c);
    const int64_t s[ATT_N_TENSORS][2] = {{d.QD, d.D}, {d.KD, d.D}, {d.KD, d.D}, {d.D, d.QD}};
    ssm_kind_shapes(s, ATT_N_TENSORS, shape, ndim);
}

/* nn.Linear's default U(+-1/sqrt(fan_in)); o_proj rescaled by 1/sqrt(n_layer) as out_proj */
static void att_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    att_dims d = dims(c);
    const ssm_attention_params *p = &lp->attention;
    ssm_fill_uniform(rng, p->q_proj, (size_t)d.QD * d.D, 1.0 / sqrt(d.D));
    ssm_fill_uniform(rng, p->k_proj, (size_t)d.KD * d.D, 1.0 / sqrt(d.D));
    ssm_fill_uniform(rng, p->v_proj, (size_t)d.KD * d.D, 1.0 / sqrt(d.D));
    ssm_fill_uniform(rng, p->o_proj, (size_t)d.D * d.QD, 1.0 / sqrt(d.QD) / sqrt(c->n_layer));
}

/* the KV cache: per sequence (2, cap, KD), keys then values */
static void att_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    att_dims d = dims(c);
    *conv = 0, *channels = 0;
    *ssm = (size_t)2 * d.cap * d.KD;
}

/* The op's arguments for queries q (rows of this pass) and keys/values either of this pass
 * (kv != NULL: rows (T, KD) each) or of the cache of st. */
static cpu_attention_args att_args(const ssm_config *c, int B, int L, const float *q,
                                   const float *k, const float *v, const ssm_layer_state *st,
                                   float *o, float *lse) {
    att_dims d = dims(c);
    cpu_attention_args a = {0};
    a.B = B, a.L = L, a.H = d.H, a.Hkv = d.Hkv, a.hd = d.hd;
    a.scale = 1.0f / sqrtf((float)d.hd);
    a.q = q, a.ld_q = d.QD;
    a.out = o, a.ld_out = d.QD, a.lse = lse;
    a.ld_kv = d.KD;
    if (st) { /* keys and values from the cache, after this pass's were appended */
        a.k = st->ssm, a.v = st->ssm + (size_t)d.cap * d.KD;
        a.kv_batch_stride = (size_t)2 * d.cap * d.KD;
        a.prefix = st->pos;
    } else {
        a.k = k, a.v = v;
        a.kv_batch_stride = (size_t)L * d.KD;
    }
    return a;
}

static size_t att_scratch(const ssm_config *c, int B, int L, int threads) {
    cpu_attention_args a = att_args(c, B, L, NULL, NULL, NULL, NULL, NULL, NULL);
    a.kv_batch_stride = (size_t)2 * dims(c).cap * dims(c).KD; /* the most keys a pass can see */
    size_t f = cpu_attention_scratch_floats(&a, threads, 0), b = cpu_attention_scratch_floats(&a, threads, 1);
    return f > b ? f : b;
}

static void att_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                     int threads) {
    att_dims d = dims(c);
    ssm_attention_acts *a = &la->attention;
    a->q = ssm_carve(cv, T * d.QD);
    a->k = ssm_carve(cv, T * d.KD);
    a->v = ssm_carve(cv, T * d.KD);
    a->o = ssm_carve(cv, T * d.QD);
    a->lse = ssm_carve(cv, T * d.H);
}

static void att_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                             size_t T, int L, int threads) {
    att_dims d = dims(c);
    bw->attention.d_q = ssm_carve(cv, T * d.QD);
    bw->attention.d_k = ssm_carve(cv, T * d.KD);
    bw->attention.d_v = ssm_carve(cv, T * d.KD);
    bw->attention.d_o = ssm_carve(cv, T * d.QD);
    bw->attention.scratch_floats = att_scratch(c, (int)(T / L), L, threads);
    bw->attention.scratch = ssm_carve(cv, bw->attention.scratch_floats);
}

/* q, k rotated in place at positions pos0[b] + l (pos0 NULL: from 0) */
static void rotate(const ssm_config *c, float *q, float *k, int B, int L, const int64_t *pos0,
                   int inverse) {
    att_dims d = dims(c);
    int rot = c->attention.rotary_dim;
    if (!rot) return;
    cpu_rope_apply(q, d.QD, B, L, d.H, d.hd, rot, c->attention.rope_base, pos0, inverse);
    cpu_rope_apply(k, d.KD, B, L, d.Hkv, d.hd, rot, c->attention.rope_base, pos0, inverse);
}

/* the new keys and values of each sequence into its cache at positions pos[b] .. + L */
static void cache_append(const ssm_config *c, const ssm_layer_state *st, const float *k,
                         const float *v, int B, int L) {
    att_dims d = dims(c);
    for (int b = 0; b < B; b++) {
        float *ck = st->ssm + (size_t)b * 2 * d.cap * d.KD, *cvv = ck + (size_t)d.cap * d.KD;
        size_t at = (size_t)st->pos[b] * d.KD, n = (size_t)L * d.KD;
        memcpy(ck + at, k + (size_t)b * n, n * sizeof(float));
        memcpy(cvv + at, v + (size_t)b * n, n * sizeof(float));
    }
}

static void att_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                        float *out, const ssm_layer_state *st) {
    const ssm_config *c = ps->c;
    const ssm_attention_params *p = &lp->attention;
    ssm_attention_acts *a = &la->attention;
    att_dims d = dims(c);
    int B = ps->B, L = ps->L;
    /* q, k, v = projections of h */
    ssm_pass_matmul(ps, a->q, d.QD, 0.0f, la->normed, d.D, p->q_proj, d.D, d.QD);
    ssm_pass_matmul(ps, a->k, d.KD, 0.0f, la->normed, d.D, p->k_proj, d.D, d.KD);
    ssm_pass_matmul(ps, a->v, d.KD, 0.0f, la->normed, d.D, p->v_proj, d.D, d.KD);
    rotate(c, a->q, a->k, B, L, st ? st->pos : NULL, 0);
    if (st) cache_append(c, st, a->k, a->v, B, L);
    /* o = softmax(q k^T * scale, causal) v */
    cpu_attention_args args = att_args(c, B, L, a->q, a->k, a->v, st, a->o, a->lse);
    args.scratch = ps->bw->attention.scratch, args.scratch_floats = ps->bw->attention.scratch_floats;
    args.threads = ps->threads;
    cpu_attention_forward(&args);
    /* out += o_proj(o) */
    ssm_pass_matmul(ps, out, d.D, 1.0f, a->o, d.QD, p->o_proj, d.QD, d.D);
}

static void att_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                         const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    const ssm_attention_params *p = &lp->attention;
    ssm_attention_params *g = &lg->attention;
    const ssm_attention_acts *a = &la->attention;
    typeof(ps->bw->attention) *w = &ps->bw->attention;
    att_dims d = dims(c);
    int B = ps->B, L = ps->L, T = (int)ps->T;
    /* out = o_proj(o): d o = d out . o_proj */
    cpu_matmul_backward(w->d_o, d.QD, 0.0f, g->o_proj, d_out, d.D, a->o, d.QD, p->o_proj, T, d.QD, d.D);
    /* the attention: d q, d k, d v (from zero state: keys are this pass's) */
    cpu_attention_args args = att_args(c, B, L, a->q, a->k, a->v, NULL, (float *)a->o, (float *)a->lse);
    args.d_out = w->d_o, args.dq = w->d_q, args.dk = w->d_k, args.dv = w->d_v;
    args.scratch = w->scratch, args.scratch_floats = w->scratch_floats, args.threads = ps->threads;
    cpu_attention_backward(&args);
    /* the rotation's transpose takes d q, d k back to the projections' outputs */
    rotate(c, w->d_q, w->d_k, B, L, NULL, 1);
    /* q, k, v = projections of h: d h sums the three */
    cpu_matmul_backward(d_normed, d.D, 0.0f, g->q_proj, w->d_q, d.QD, la->normed, d.D, p->q_proj, T, d.D, d.QD);
    cpu_matmul_backward(d_normed, d.D, 1.0f, g->k_proj, w->d_k, d.KD, la->normed, d.D, p->k_proj, T, d.D, d.KD);
    cpu_matmul_backward(d_normed, d.D, 1.0f, g->v_proj, w->d_v, d.KD, la->normed, d.D, p->v_proj, T, d.D, d.KD);
}

static size_t att_step_floats(const ssm_config *c, int B) {
    att_dims d = dims(c);
    return (size_t)B * (2 * d.QD + 2 * d.KD + d.H) + att_scratch(c, B, 1, 0);
}

static void att_step(const ssm_config *c, const ssm_layer_params *lp, const float *h, float *r,
                     const ssm_layer_state *st, int B, float *work) {
    const ssm_attention_params *p = &lp->attention;
    att_dims d = dims(c);
    float *q = work, *k = q + (size_t)B * d.QD, *v = k + (size_t)B * d.KD,
          *o = v + (size_t)B * d.KD, *lse = o + (size_t)B * d.QD, *scratch = lse + (size_t)B * d.H;
    cpu_matmul_forward(q, d.QD, 0.0f, h, d.D, p->q_proj, B, d.D, d.QD);
    cpu_matmul_forward(k, d.KD, 0.0f, h, d.D, p->k_proj, B, d.D, d.KD);
    cpu_matmul_forward(v, d.KD, 0.0f, h, d.D, p->v_proj, B, d.D, d.KD);
    rotate(c, q, k, B, 1, st->pos, 0);
    cache_append(c, st, k, v, B, 1);
    cpu_attention_args args = att_args(c, B, 1, q, k, v, st, o, lse);
    args.scratch = scratch, args.scratch_floats = att_scratch(c, B, 1, 0);
    cpu_attention_forward(&args);
    cpu_matmul_forward(r, d.D, 1.0f, o, d.QD, p->o_proj, B, d.QD, d.D);
}

const ssm_layer_kind_ops ssm_attention_kind = {
    .name = "attention",
    .n_tensors = ATT_N_TENSORS,
    .suffix = att_suffix,
    .decay = att_decay,
    .cuda = 1,
    .shapes = att_shapes,
    .init = att_init,
    .state_size = att_state_size,
    .plan = att_plan,
    .plan_scratch = att_plan_scratch,
    .forward = att_forward,
    .backward = att_backward,
    .step_floats = att_step_floats,
    .step = att_step,
};
