/* mlp.c: the MLP layer kind on the CPU (a layer of its own, as NemotronH's '-').
 *   relu2  (NemotronH's NemotronHMLP):  out += down(relu(up(h))^2)
 *   swiglu (mamba_ssm's GatedMLP):      [y | g] = fc1(h); out += fc2(y * silu(g))
 * Shapes: T = B * L rows; D = d_model, F = mlp.d_ff (U = F, or 2F for swiglu: up's rows). */
#include <math.h>
#include <string.h>

#include "activation.h"
#include "cpu_ops.h"
#include "layers.h"

enum { MLP_N_TENSORS = 2 };
_Static_assert(sizeof(ssm_mlp_params) == MLP_N_TENSORS * sizeof(float *),
               "ssm_mlp_params and the MLP tensor table must list the same tensors");
/* the names follow the activation (NemotronH's up/down, mamba_ssm's fc1/fc2): see suffix_of */
static const char *const relu2_suffix[MLP_N_TENSORS] = {"mixer.up_proj.weight", "mixer.down_proj.weight"};
static const char *const swiglu_suffix[MLP_N_TENSORS] = {"mixer.fc1.weight", "mixer.fc2.weight"};
static const unsigned char mlp_decay[MLP_N_TENSORS] = {1, 1};

static int gated(const ssm_config *c) { return c->mlp.activation == SSM_MLP_SWIGLU; }
static int up_rows(const ssm_config *c) { return (gated(c) ? 2 : 1) * c->mlp.d_ff; }

static void mlp_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    const int64_t s[MLP_N_TENSORS][2] = {{up_rows(c), c->d_model}, {c->d_model, c->mlp.d_ff}};
    ssm_kind_shapes(s, MLP_N_TENSORS, shape, ndim);
}

static const char *const *mlp_suffix(const ssm_config *c) {
    return gated(c) ? swiglu_suffix : relu2_suffix;
}

/* nn.Linear's default U(+-1/sqrt(fan_in)); down rescaled by 1/sqrt(n_layer) as out_proj */
static void mlp_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    int D = c->d_model, F = c->mlp.d_ff;
    ssm_fill_uniform(rng, lp->mlp.up, (size_t)up_rows(c) * D, 1.0 / sqrt(D));
    ssm_fill_uniform(rng, lp->mlp.down, (size_t)D * F, 1.0 / sqrt(F) / sqrt(c->n_layer));
}

static void mlp_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    *conv = 0, *ssm = 0, *channels = 0; /* no recurrent state */
}

static void mlp_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                     int threads) {
    la->mlp.u = ssm_carve(cv, T * up_rows(c));
    la->mlp.a = ssm_carve(cv, T * c->mlp.d_ff);
}

static void mlp_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                             size_t T, int L, int threads) {
    bw->mlp.d_u = ssm_carve(cv, T * up_rows(c));
    bw->mlp.d_a = ssm_carve(cv, T * c->mlp.d_ff);
}

/* a = act(u) for T rows */
static void activate(const ssm_config *c, float *a, const float *u, int T) {
    if (gated(c)) cpu_swiglu_forward(a, u, T, c->mlp.d_ff);
    else cpu_relu2_forward(a, u, T, c->mlp.d_ff);
}

static void mlp_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                        float *out, const ssm_layer_state *st) {
    const ssm_config *c = ps->c;
    int D = c->d_model, F = c->mlp.d_ff, U = up_rows(c);
    /* u = up(h) */
    ssm_pass_matmul(ps, la->mlp.u, U, 0.0f, la->normed, D, lp->mlp.up, D, U);
    activate(c, la->mlp.a, la->mlp.u, (int)ps->T);
    /* out += down(a) */
    ssm_pass_matmul(ps, out, D, 1.0f, la->mlp.a, F, lp->mlp.down, F, D);
}

static void mlp_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                         const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    int T = (int)ps->T, D = c->d_model, F = c->mlp.d_ff, U = up_rows(c);
    typeof(ps->bw->mlp) *w = &ps->bw->mlp;
    /* out = down(a): d a = d out . down */
    cpu_matmul_backward(w->d_a, F, 0.0f, lg->mlp.down, d_out, D, la->mlp.a, F, lp->mlp.down, T, F, D);
    if (gated(c)) cpu_swiglu_backward(w->d_u, w->d_a, la->mlp.u, T, F);
    else cpu_relu2_backward(w->d_u, w->d_a, la->mlp.u, T, F);
    /* u = up(h) */
    cpu_matmul_backward(d_normed, D, 0.0f, lg->mlp.up, w->d_u, U, la->normed, D, lp->mlp.up, T, D, U);
}

static size_t mlp_step_floats(const ssm_config *c, int B) {
    return (size_t)B * (up_rows(c) + c->mlp.d_ff);
}

static void mlp_step(const ssm_config *c, const ssm_layer_params *lp, const float *h, float *r,
                     const ssm_layer_state *st, int B, float *work) {
    int D = c->d_model, F = c->mlp.d_ff, U = up_rows(c);
    float *u = work, *a = u + (size_t)B * U;
    cpu_matmul_forward(u, U, 0.0f, h, D, lp->mlp.up, B, D, U);
    activate(c, a, u, B);
    cpu_matmul_forward(r, D, 1.0f, a, F, lp->mlp.down, B, F, D);
}

const ssm_layer_kind_ops ssm_mlp_kind = {
    .name = "mlp",
    .n_tensors = MLP_N_TENSORS,
    .suffix = relu2_suffix,
    .suffix_of = mlp_suffix,
    .decay = mlp_decay,
    .cuda = 1,
    .shapes = mlp_shapes,
    .init = mlp_init,
    .state_size = mlp_state_size,
    .plan = mlp_plan,
    .plan_scratch = mlp_plan_scratch,
    .forward = mlp_forward,
    .backward = mlp_backward,
    .step_floats = mlp_step_floats,
    .step = mlp_step,
};
