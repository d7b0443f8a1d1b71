// mamba2.cu: the Mamba-2 (SSD) layer kind on the GPU, op for op libssm/src/mamba2.c (read them
// side by side), in the mixed precision of the Mamba-1 path: bf16 activations and GEMM inputs,
// fp32 state, statistics, accumulation and parameter gradients.
//   [z | xBC | dt] = in_proj(h);  xBC = silu(conv1d(xBC));  [x | B | C] = xBC
//   y = SSD(x, clamp(softplus(dt + dt_bias)), A = -exp(A_log), B, C) + D x     (ssd.cu)
//   r += out_proj(RMSNormGated(y, z))                                         (gated_norm.cu)
// Shapes: D = d_model, I = d_inner, H heads of P channels, G groups, N = d_state, K = d_conv,
// CD = I + 2 G N (the conv's channels), ZD = I + CD + H.
#include "model.cuh"

#define M2_NORM_EPS 1e-5f // mamba_ssm fixes the gated norm's eps (as mamba2.c)

namespace {

struct m2_dims { int D, I, H, P, G, N, K, CD, ZD; };
m2_dims dims(const ssm_config *c) {
    const ssm_mamba2_config *m = &c->mamba2;
    m2_dims d = {c->d_model, m->d_inner, m->nheads, m->headdim, m->ngroups, m->d_state, m->d_conv, 0, 0};
    d.CD = d.I + 2 * d.G * d.N;
    d.ZD = d.I + d.CD + d.H;
    return d;
}

// The SSD's arguments over rows of zxbcdt / xbc laid out as the forward lays them.
cuda_ssd_args ssd_args(const ssm_config *c, int B, int L, const bf16 *zxbcdt, const bf16 *xbc,
                       const ssm_mamba2_params *p, bf16 *y) {
    m2_dims d = dims(c);
    cuda_ssd_args s = {};
    s.B = B, s.L = L, s.H = d.H, s.P = d.P, s.G = d.G, s.N = d.N;
    s.dt_min = c->mamba2.dt_limit[0], s.dt_max = c->mamba2.dt_limit[1];
    s.x = xbc, s.Bm = xbc + d.I, s.Cm = xbc + d.I + d.G * d.N, s.ld_x = d.CD;
    s.dt = zxbcdt + d.I + d.CD, s.ld_dt = d.ZD;
    s.dt_bias = p->dt_bias, s.A_log = p->A_log, s.Dskip = p->D;
    s.y = y, s.ld_y = d.I;
    return s;
}

} // namespace

int cuda_model_has_kind(const ssm_config *c, int kind) {
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == kind) return 1;
    return 0;
}

size_t cuda_mamba2_work_bytes(const ssm_config *c, int B, int L, int training) {
    if (!training) return 0; // the forward and the step need no workspace
    m2_dims d = dims(c);
    static const float dummy[1] = {0};
    static const bf16 dummy16[1] = {};
    ssm_mamba2_params p = {};
    p.dt_bias = p.A_log = p.D = (float *)dummy;
    cuda_ssd_args s = ssd_args(c, B, L, dummy16, dummy16, &p, NULL);
    size_t w = cuda_ssd_backward_workspace(&s), T = (size_t)B * L;
    size_t n = cuda_gated_rmsnorm_backward_workspace((int)T, d.I);
    w = w > n ? w : n;
    n = cuda_conv_backward_workspace(B, L, d.CD, d.K);
    return w > n ? w : n;
}

ssm_status cuda_mamba2_forward(ssm_model *m, int i, int B, int L, float *conv, float *ssm, float *r) {
    ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    const ssm_mamba2_params *p = &g->p.layers[i].mamba2;
    cuda_layer_acts *la = &g->a.layers[i];
    cuda_mamba2_acts *a = &la->mamba2;
    cudaStream_t st = g->stream;
    m2_dims d = dims(c);
    const int T = B * L;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // [z | xBC | dt] = in_proj(h)
    SSM_TRY(cuda_matmul_forward(g->blas, a->zxbcdt, d.ZD, BF, 0.0f, la->normed, d.D, w16(g, p->in_proj), T, d.D, d.ZD));
    // xBC = silu(conv1d(xBC) + bias), over x, B and C
    const bf16 *xBC = a->zxbcdt + d.I;
    SSM_TRY(cuda_conv_forward(a->xbc, xBC, d.ZD, p->conv_w, p->conv_b, conv, B, L, d.CD, d.K, BF, st));
    if (conv) SSM_TRY(cuda_conv_state_update(conv, xBC, d.ZD, B, L, d.CD, d.K, BF, st));
    // y = SSD(x, dt, A, B, C) + D x
    cuda_ssd_args s = ssd_args(c, B, L, a->zxbcdt, a->xbc, p, a->y);
    s.state = ssm;
    SSM_TRY(cuda_ssd_forward(&s, st));
    // r += out_proj(RMSNormGated(y, z))
    SSM_TRY(cuda_gated_rmsnorm_forward(a->normed, d.I, a->rstd, a->y, d.I, a->zxbcdt, d.ZD, p->norm, T, d.I, d.G,
                                       M2_NORM_EPS, st));
    return cuda_matmul_forward(g->blas, r, d.D, SSM_DTYPE_F32, 1.0f, a->normed, d.I, w16(g, p->out_proj), T, d.I, d.D);
}

ssm_status cuda_mamba2_backward(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *ac = &g->a;
    const ssm_config *c = &m->config;
    const ssm_mamba2_params *p = &g->p.layers[i].mamba2;
    ssm_mamba2_params *gr = &g->g.layers[i].mamba2;
    const cuda_layer_acts *la = &ac->layers[i];
    const cuda_mamba2_acts *a = &la->mamba2;
    const cuda_mamba2_scratch *w = &ac->mamba2;
    cudaStream_t st = g->stream;
    m2_dims d = dims(c);
    const int B = ac->B, L = ac->L, T = B * L;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // out = out_proj(normed): d normed = d r . out_proj; d out_proj += d r^T . normed
    SSM_TRY(cuda_matmul_backward(g->blas, w->d_normed, d.I, BF, 0.0f, gr->out_proj, ac->d_resid16, d.D, a->normed, d.I,
                                 w16(g, p->out_proj), T, d.I, d.D));
    // normed = RMSNormGated(y, z): d y, d z (into d zxbcdt's z part), d norm.weight
    SSM_TRY(cuda_gated_rmsnorm_backward(w->d_y, d.I, w->d_zxbcdt, d.ZD, gr->norm, w->d_normed, d.I, a->y, d.I,
                                        a->zxbcdt, d.ZD, p->norm, a->rstd, T, d.I, d.G, ac->work, ac->work_bytes, st));
    // the SSD: d x, d B, d C (into d xbc), d dt (into d zxbcdt's dt part), its parameters
    cuda_ssd_args s = ssd_args(c, B, L, a->zxbcdt, a->xbc, p, NULL);
    s.dy = w->d_y;
    s.dx = w->d_xbc, s.dBm = w->d_xbc + d.I, s.dCm = w->d_xbc + d.I + d.G * d.N;
    s.ddt = w->d_zxbcdt + d.I + d.CD;
    s.d_dt_bias = gr->dt_bias, s.dA_log = gr->A_log, s.dD = gr->D;
    SSM_TRY(cuda_ssd_backward(&s, ac->work, ac->work_bytes, st));
    // xbc = silu(conv1d(xBC)): d xBC into d zxbcdt's middle
    SSM_TRY(cuda_conv_backward(w->d_zxbcdt + d.I, gr->conv_w, gr->conv_b, w->d_xbc, a->zxbcdt + d.I, d.ZD, p->conv_w,
                               p->conv_b, B, L, d.CD, d.K, BF, ac->work, ac->work_bytes, st));
    // zxbcdt = in_proj(h)
    return cuda_matmul_backward(g->blas, ac->d_normed, d.D, BF, 0.0f, gr->in_proj, w->d_zxbcdt, d.ZD, la->normed, d.D,
                                w16(g, p->in_proj), T, d.D, d.ZD);
}

ssm_status cuda_mamba2_step(ssm_model *m, int i, float *conv, float *ssm) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *dc = &g->dec;
    cuda_mamba2_decode *a = &dc->mamba2;
    const ssm_config *c = &m->config;
    const ssm_mamba2_params *p = &g->p.layers[i].mamba2;
    cudaStream_t st = g->stream;
    m2_dims d = dims(c);
    const int B = dc->batch;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // [z | xBC | dt] = in_proj(RMSNorm(r))
    SSM_TRY(cuda_step_project(m, a->zxbcdt, d.ZD, BF, 0.0f, dc->r, d.D, g->p.layers[i].norm, w16(g, p->in_proj), d.D,
                              d.ZD));
    // conv_state rolls left and takes the raw xBC; xbc = silu(conv)
    SSM_TRY(cuda_conv_step(a->xbc, conv, a->zxbcdt + d.I, d.ZD, p->conv_w, p->conv_b, B, d.CD, d.K, BF, st));
    cuda_ssd_args s = ssd_args(c, B, 1, a->zxbcdt, a->xbc, p, a->y);
    s.state = ssm;
    SSM_TRY(cuda_ssd_step(&s, st));
    SSM_TRY(cuda_gated_rmsnorm_forward(a->normed, d.I, a->rstd, a->y, d.I, a->zxbcdt, d.ZD, p->norm, B, d.I, d.G,
                                       M2_NORM_EPS, st));
    return cuda_step_project(m, dc->r, d.D, SSM_DTYPE_F32, 1.0f, a->normed, d.I, NULL, w16(g, p->out_proj), d.I, d.D);
}
