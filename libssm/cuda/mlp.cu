// mlp.cu: the MLP layer kind on the GPU, op for op libssm/src/mlp.c (read them side by side),
// in the mixed precision of the Mamba paths: bf16 activations and GEMM inputs (cuBLAS), fp32
// residual stream, accumulation and parameter gradients.
//   relu2  (NemotronH):           r += down(relu(up(h))^2)
//   swiglu (mamba_ssm's GatedMLP): [y | g] = fc1(h); r += fc2(y * silu(g))
// Shapes: T rows; D = d_model, F = mlp.d_ff, U = F (relu2) or 2F (swiglu): up's rows.
#include "model.cuh"

namespace {

bool gated(const ssm_config *c) { return c->mlp.activation == SSM_MLP_SWIGLU; }

// a (T, F) = act(u (T, U))
ssm_status activate(const ssm_config *c, bf16 *a, const bf16 *u, int T, cudaStream_t st) {
    const cuda_mlp_widths w = cuda_mlp_width(c);
    const int F = (int)w.F, U = (int)w.U;
    if (gated(c)) return cuda_swiglu_forward(a, F, u, U, T, F, SSM_DTYPE_BF16, st);
    return cuda_relu2_forward(a, F, u, U, T, F, SSM_DTYPE_BF16, st);
}

} // namespace

ssm_status cuda_mlp_forward(ssm_model *m, int i, int T, float *r) {
    ssm_cuda_model *g = m->cuda;
    const ssm_config *c = &m->config;
    const ssm_mlp_params *p = &g->p.layers[i].mlp;
    cuda_layer_acts *la = &g->a.layers[i];
    const cuda_mlp_widths w = cuda_mlp_width(c);
    const int D = c->d_model, F = (int)w.F, U = (int)w.U;
    // u = up(h)
    SSM_TRY(cuda_matmul_forward(g->blas, la->mlp.u, U, SSM_DTYPE_BF16, 0.0f, la->normed, D, w16(g, p->up), T, D, U));
    SSM_TRY(activate(c, la->mlp.a, la->mlp.u, T, g->stream));
    // r += down(a): the residual add is the GEMM's beta = 1
    return cuda_matmul_forward(g->blas, r, D, SSM_DTYPE_F32, 1.0f, la->mlp.a, F, w16(g, p->down), T, F, D);
}

ssm_status cuda_mlp_backward(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_acts *ac = &g->a;
    const ssm_config *c = &m->config;
    const ssm_mlp_params *p = &g->p.layers[i].mlp;
    ssm_mlp_params *gr = &g->g.layers[i].mlp;
    const cuda_layer_acts *la = &ac->layers[i];
    const cuda_mlp_acts *d = &ac->d_mlp;
    const cuda_mlp_widths w = cuda_mlp_width(c);
    const int D = c->d_model, F = (int)w.F, U = (int)w.U, T = ac->B * ac->L;
    const ssm_dtype BF = SSM_DTYPE_BF16;
    // r += down(a): d a = d r . down; d down += d r^T . a
    SSM_TRY(cuda_matmul_backward(g->blas, d->a, F, BF, 0.0f, gr->down, ac->d_resid16, D, la->mlp.a, F,
                                 w16(g, p->down), T, F, D));
    // a = act(u): d u
    if (gated(c)) SSM_TRY(cuda_swiglu_backward(d->u, U, d->a, F, la->mlp.u, U, T, F, BF, g->stream));
    else SSM_TRY(cuda_relu2_backward(d->u, U, d->a, F, la->mlp.u, U, T, F, BF, g->stream));
    // u = up(h): d h = d u . up; d up += d u^T . h
    return cuda_matmul_backward(g->blas, ac->d_normed, D, BF, 0.0f, gr->up, d->u, U, la->normed, D, w16(g, p->up),
                                T, D, U);
}

ssm_status cuda_mlp_step(ssm_model *m, int i) {
    ssm_cuda_model *g = m->cuda;
    cuda_decode *dc = &g->dec;
    const ssm_config *c = &m->config;
    const ssm_mlp_params *p = &g->p.layers[i].mlp;
    const cuda_mlp_widths w = cuda_mlp_width(c);
    const int D = c->d_model, F = (int)w.F, U = (int)w.U;
    // u = up(RMSNorm(r)); r += down(act(u))
    SSM_TRY(cuda_step_project(m, dc->mlp.u, U, SSM_DTYPE_BF16, 0.0f, dc->r, D, g->p.layers[i].norm, w16(g, p->up), D, U));
    SSM_TRY(activate(c, dc->mlp.a, dc->mlp.u, dc->batch, g->stream));
    return cuda_step_project(m, dc->r, D, SSM_DTYPE_F32, 1.0f, dc->mlp.a, F, NULL, w16(g, p->down), F, D);
}
