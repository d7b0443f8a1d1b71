/* moe.c: the mixture-of-experts layer kind on the CPU (Jamba's JambaSparseMoeBlock,
 * NemotronH's NemotronHMoE). Shapes: T = B * L rows, D = d_model, X = moe.n_experts,
 * k = moe.top_k, S = T k slots, F = moe.d_ff (U = F, or 2F for swiglu: up's rows per expert),
 * Fs, Us the shared expert's.
 *   l     = h . router^T                                (T, X) fp32
 *   p     = softmax(l) (Jamba) | sigmoid(l) (NemotronH)
 *   sel   = top_k(p + bias)                             bias: NemotronH's selection bias only;
 *                                                       equal scores: the lower expert first
 *   w_j   = p[sel_j] (/ sum_j p[sel_j] + 1e-20 when norm_topk) * routed_scaling
 *   out  += sum_j w_j expert_{sel_j}(h) + shared(h)     expert(x) = down_e(act(up_e(x)))
 *   aux   = X sum_e f_e P_e over all MoE layers' rows   (Switch; Jamba's load_balancing_loss_func:
 *           f_e the fraction of choices, P_e the mean p; the loss adds aux_loss_coef aux)
 * The slots are grouped by expert in token order, and every forward product is
 * cpu_matmul_rows, whose rows never depend on the others: a token's result does not depend on
 * the batch, the routing of other tokens or the thread count.
 *
 * Threads: one parallel region runs every expert's rows, in chunks of MOE_CHUNK rows each
 * going through up, the activation and down on one thread (its rows stay in cache between the
 * three), and one runs the experts' backward, an expert per thread. Each expert on its own,
 * products threaded inside, took three parallel regions per expert and layer, and on a loaded
 * machine every region's join waits for the slowest thread (bench/bench_moe.c). */
#include <math.h>
#include <string.h>

#include "activation.h"
#include "cpu_ops.h"
#include "layers.h"

enum { MOE_N_TENSORS = 6 };
_Static_assert(sizeof(ssm_moe_params) == MOE_N_TENSORS * sizeof(float *),
               "ssm_moe_params and the MoE tensor table must list the same tensors");
static const char *const moe_suffix[MOE_N_TENSORS] = {
    "mixer.gate.weight", "mixer.gate.e_score_correction_bias", "mixer.experts.up_proj",
    "mixer.experts.down_proj", "mixer.shared_experts.up_proj.weight",
    "mixer.shared_experts.down_proj.weight"};
static const unsigned char moe_decay[MOE_N_TENSORS] = {1, 0, 1, 1, 1, 1};

static int gated(const ssm_config *c) { return c->moe.activation == SSM_MLP_SWIGLU; }
static int up_rows(const ssm_config *c, int F) { return (gated(c) ? 2 : 1) * F; }
static int has_bias(const ssm_config *c) { return c->moe.routing == SSM_MOE_SIGMOID; }

static void moe_shapes(const ssm_config *c, int64_t shape[][3], int *ndim) {
    const ssm_moe_config *o = &c->moe;
    int X = o->n_experts, D = c->d_model, F = o->d_ff, Fs = o->shared_d_ff;
    const int64_t s[MOE_N_TENSORS][2] = {{X, D},          {has_bias(c) ? X : 0, 0}, {0, 0},
                                         {0, 0},          {up_rows(c, Fs), Fs ? D : 0},
                                         {Fs ? D : 0, Fs}};
    ssm_kind_shapes(s, MOE_N_TENSORS, shape, ndim);
    /* the experts' weights, fused (X, rows, cols) as transformers keeps them */
    const int64_t e[2][3] = {{X, up_rows(c, F), D}, {X, D, F}};
    for (int j = 0; j < 2; j++) {
        memcpy(shape[2 + j], e[j], sizeof e[j]);
        ndim[2 + j] = 3;
    }
    /* an empty (Fs = 0) shared expert: (0) vectors, which files leave out */
    for (int j = 4; j < 6; j++)
        if (!Fs) shape[j][0] = 0, shape[j][1] = 0, ndim[j] = 1;
}

/* nn.Linear's default U(+-1/sqrt(fan_in)) for the router and the experts; the down
 * projections rescaled by 1/sqrt(n_layer) as out_proj; the selection bias 0 */
static void moe_init(const ssm_config *c, ssm_rng *rng, const ssm_layer_params *lp) {
    const ssm_moe_config *o = &c->moe;
    int X = o->n_experts, D = c->d_model, F = o->d_ff, Fs = o->shared_d_ff;
    double rescale = 1.0 / sqrt(c->n_layer);
    ssm_fill_uniform(rng, lp->moe.router, (size_t)X * D, 1.0 / sqrt(D));
    if (has_bias(c)) memset(lp->moe.bias, 0, (size_t)X * sizeof(float));
    ssm_fill_uniform(rng, lp->moe.up, (size_t)X * up_rows(c, F) * D, 1.0 / sqrt(D));
    ssm_fill_uniform(rng, lp->moe.down, (size_t)X * D * F, 1.0 / sqrt(F) * rescale);
    if (Fs) {
        ssm_fill_uniform(rng, lp->moe.shared_up, (size_t)up_rows(c, Fs) * D, 1.0 / sqrt(D));
        ssm_fill_uniform(rng, lp->moe.shared_down, (size_t)D * Fs, 1.0 / sqrt(Fs) * rescale);
    }
}

static void moe_state_size(const ssm_config *c, size_t *conv, size_t *ssm, int *channels) {
    *conv = 0, *ssm = 0, *channels = 0; /* no recurrent state */
}

static void moe_plan(ssm_carver *cv, const ssm_config *c, ssm_layer_acts *la, size_t T, int L,
                     int threads) {
    const ssm_moe_config *o = &c->moe;
    size_t X = o->n_experts, S = T * o->top_k, D = c->d_model;
    ssm_moe_acts *a = &la->moe;
    a->logits = ssm_carve(cv, T * X);
    a->prob = ssm_carve(cv, T * X);
    a->sel = (int32_t *)ssm_carve(cv, S);
    a->w = ssm_carve(cv, S);
    a->start = (int32_t *)ssm_carve(cv, X + 1);
    a->slot = (int32_t *)ssm_carve(cv, S);
    a->row = (int32_t *)ssm_carve(cv, S);
    a->x = ssm_carve(cv, S * D);
    a->u = ssm_carve(cv, S * up_rows(c, o->d_ff));
    a->a = ssm_carve(cv, S * o->d_ff);
    a->y = ssm_carve(cv, S * D);
    a->su = ssm_carve(cv, T * up_rows(c, o->shared_d_ff));
    a->sa = ssm_carve(cv, T * o->shared_d_ff);
    a->stats = ssm_carve(cv, 2 * X);
}

static void moe_plan_scratch(ssm_carver *cv, const ssm_config *c, ssm_backward_scratch *bw,
                             size_t T, int L, int threads) {
    const ssm_moe_config *o = &c->moe;
    size_t X = o->n_experts, S = T * o->top_k, D = c->d_model;
    bw->moe.d_logits = ssm_carve(cv, T * X);
    bw->moe.d_w = ssm_carve(cv, S);
    bw->moe.d_y = ssm_carve(cv, S * D);
    bw->moe.d_u = ssm_carve(cv, S * up_rows(c, o->d_ff));
    bw->moe.d_a = ssm_carve(cv, S * o->d_ff);
    bw->moe.d_x = ssm_carve(cv, S * D);
    bw->moe.d_su = ssm_carve(cv, T * up_rows(c, o->shared_d_ff));
    bw->moe.d_sa = ssm_carve(cv, T * o->shared_d_ff);
    bw->moe.aux_grad = ssm_carve(cv, X);
}

static void activate(const ssm_config *c, float *a, const float *u, int rows, int F) {
    if (gated(c)) cpu_swiglu_forward(a, u, rows, F);
    else cpu_relu2_forward(a, u, rows, F);
}

static void activate_backward(const ssm_config *c, float *du, const float *da, const float *u,
                              int rows, int F) {
    if (gated(c)) cpu_swiglu_backward(du, da, u, rows, F);
    else cpu_relu2_backward(du, da, u, rows, F);
}

/* One row's routing: logits (X) -> prob (X), sel (k), w (k). */
static void route_row(const ssm_config *c, const float *bias, const float *logits, float *prob,
                      int32_t *sel, float *w) {
    const ssm_moe_config *o = &c->moe;
    int X = o->n_experts, k = o->top_k;
    if (o->routing == SSM_MOE_SOFTMAX) {
        float mx = logits[0];
        for (int e = 1; e < X; e++) mx = logits[e] > mx ? logits[e] : mx;
        double z = 0;
        for (int e = 0; e < X; e++) z += prob[e] = expf(logits[e] - mx);
        for (int e = 0; e < X; e++) prob[e] = (float)(prob[e] / z);
    } else {
        for (int e = 0; e < X; e++) prob[e] = 1.0f / (1.0f + expf(-logits[e]));
    }
    /* top_k by selection score, highest first; a strictly greater score displaces, so of equal
     * scores the lower index wins */
    double sum = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        float best_score = 0;
        for (int e = 0; e < X; e++) {
            int taken = 0;
            for (int q = 0; q < j; q++) taken |= sel[q] == e;
            float score = prob[e] + (bias ? bias[e] : 0.0f);
            if (!taken && (best < 0 || score > best_score)) best = e, best_score = score;
        }
        sel[j] = best;
        sum += prob[best];
    }
    float norm = o->norm_topk ? (float)(1.0 / (sum + 1e-20)) : 1.0f;
    for (int j = 0; j < k; j++) w[j] = prob[sel[j]] * norm * o->routed_scaling;
}

/* Route T rows (logits already in a->logits), group the slots by expert (token order within
 * an expert), and count the choices and the probabilities per expert. */
static void route(const ssm_config *c, const float *bias, ssm_moe_acts *a, int T) {
    int X = c->moe.n_experts, k = c->moe.top_k;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        route_row(c, bias, a->logits + (size_t)t * X, a->prob + (size_t)t * X, a->sel + (size_t)t * k,
                  a->w + (size_t)t * k);
    /* the slots grouped by expert, in slot (token) order within each */
    int g = 0;
    for (int e = 0; e < X; e++) {
        a->start[e] = g;
        for (int s = 0; s < T * k; s++)
            if (a->sel[s] == e) a->slot[g++] = s;
        a->stats[e] = (float)(g - a->start[e]);
    }
    a->start[X] = g;
    for (g = 0; g < T * k; g++) a->row[a->slot[g]] = g;
    for (int e = 0; e < X; e++) {
        double sum = 0;
        for (int t = 0; t < T; t++) sum += a->prob[(size_t)t * X + e];
        a->stats[X + e] = (float)sum;
    }
}

/* The experts on their grouped rows: y = down_e(act(up_e(x))), chunk by chunk */
enum { MOE_CHUNK = 256 };
static void run_experts(const ssm_config *c, const ssm_layer_params *lp, ssm_moe_acts *a) {
    int X = c->moe.n_experts, D = c->d_model, F = c->moe.d_ff, U = up_rows(c, F);
    int chunks = 0; /* chunk q of expert e: rows start[e] + q MOE_CHUNK .. */
    for (int e = 0; e < X; e++) chunks += (a->start[e + 1] - a->start[e] + MOE_CHUNK - 1) / MOE_CHUNK;
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < chunks; i++) {
        int e = 0, q = i, n_e;
        while (q >= (n_e = (a->start[e + 1] - a->start[e] + MOE_CHUNK - 1) / MOE_CHUNK)) q -= n_e, e++;
        int g0 = a->start[e] + q * MOE_CHUNK, n = a->start[e + 1] - g0;
        n = n < MOE_CHUNK ? n : MOE_CHUNK;
        float *u = a->u + (size_t)g0 * U, *act = a->a + (size_t)g0 * F;
        cpu_matmul_rows(u, U, 0.0f, a->x + (size_t)g0 * D, D, lp->moe.up + (size_t)e * U * D, n, D, U);
        activate(c, act, u, n, F);
        cpu_matmul_rows(a->y + (size_t)g0 * D, D, 0.0f, act, F, lp->moe.down + (size_t)e * D * F, n, F, D);
    }
}

/* out (T, D) += sum_j w_j y[slot t k + j] + the shared expert's (already in su/sa) */
static void combine(const ssm_config *c, const ssm_layer_params *lp, ssm_moe_acts *a,
                    const float *shared, float *out, int T) {
    int D = c->d_model, k = c->moe.top_k;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * D;
        for (int d = 0; d < D; d++) {
            float acc = shared ? shared[(size_t)t * D + d] : 0.0f;
            for (int j = 0; j < k; j++)
                acc += a->w[(size_t)t * k + j] * a->y[(size_t)a->row[t * k + j] * D + d];
            o[d] += acc;
        }
    }
}

/* The whole layer on T rows of h; shared_out: (T, D) scratch for the shared expert's output. */
static void moe_rows(const ssm_config *c, const ssm_layer_params *lp, ssm_moe_acts *a,
                     const float *h, float *out, int T, float *shared_out) {
    int X = c->moe.n_experts, D = c->d_model, k = c->moe.top_k, Fs = c->moe.shared_d_ff;
    /* l = h . router^T */
    cpu_matmul_rows(a->logits, X, 0.0f, h, D, lp->moe.router, T, D, X);
    route(c, has_bias(c) ? lp->moe.bias : NULL, a, T);
    for (int g = 0; g < T * k; g++)
        memcpy(a->x + (size_t)g * D, h + (size_t)(a->slot[g] / k) * D, D * sizeof(float));
    run_experts(c, lp, a);
    if (Fs) { /* shared(h) = down(act(up(h))) */
        int Us = up_rows(c, Fs);
        cpu_matmul_rows(a->su, Us, 0.0f, h, D, lp->moe.shared_up, T, D, Us);
        activate(c, a->sa, a->su, T, Fs);
        cpu_matmul_rows(shared_out, D, 0.0f, a->sa, Fs, lp->moe.shared_down, T, Fs, D);
    }
    combine(c, lp, a, Fs ? shared_out : NULL, out, T);
}

static void moe_forward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_acts *la,
                        float *out, const ssm_layer_state *st) {
    /* the shared expert's output goes through the backward's d_x scratch (S D >= T D floats),
     * which nothing reads between passes */
    moe_rows(ps->c, lp, &la->moe, la->normed, out, (int)ps->T, ps->bw->moe.d_x);
}

static void moe_backward(const ssm_pass *ps, const ssm_layer_params *lp, ssm_layer_params *lg,
                         const ssm_layer_acts *la, const float *d_out, float *d_normed) {
    const ssm_config *c = ps->c;
    const ssm_moe_config *o = &c->moe;
    const ssm_moe_acts *a = &la->moe;
    typeof(ps->bw->moe) *w = &ps->bw->moe;
    int T = (int)ps->T, D = c->d_model, X = o->n_experts, k = o->top_k, S = T * k;
    int F = o->d_ff, U = up_rows(c, F), Fs = o->shared_d_ff;

    /* out += sum_j w_j y_j: d y_j = w_j d out; d w_j = d out . y_j */
#pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        const float *dout = d_out + (size_t)(s / k) * D;
        size_t g = (size_t)a->row[s];
        double dw = 0;
        for (int d = 0; d < D; d++) {
            w->d_y[g * D + d] = a->w[s] * dout[d];
            dw += (double)dout[d] * a->y[g * D + d];
        }
        w->d_w[s] = (float)dw;
    }
    /* the experts, each on its grouped rows, one per thread (SGEMM on one thread inside) */
#pragma omp parallel for schedule(dynamic)
    for (int e = 0; e < X; e++) {
        int g0 = a->start[e], n = a->start[e + 1] - g0;
        if (!n) continue;
        size_t gu = (size_t)g0 * U, gf = (size_t)g0 * F, gd = (size_t)g0 * D;
        cpu_matmul_backward(w->d_a + gf, F, 0.0f, lg->moe.down + (size_t)e * D * F, w->d_y + gd, D,
                            a->a + gf, F, lp->moe.down + (size_t)e * D * F, n, F, D);
        activate_backward(c, w->d_u + gu, w->d_a + gf, a->u + gu, n, F);
        cpu_matmul_backward(w->d_x + gd, D, 0.0f, lg->moe.up + (size_t)e * U * D, w->d_u + gu, U,
                            a->x + gd, D, lp->moe.up + (size_t)e * U * D, n, D, U);
    }
    /* the weights -> d prob -> d logits, per row */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *p = a->prob + (size_t)t * X;
        const int32_t *sel = a->sel + (size_t)t * k;
        const float *dw = w->d_w + (size_t)t * k;
        float *dl = w->d_logits + (size_t)t * X; /* d prob first, then d logits in place */
        for (int e = 0; e < X; e++) dl[e] = o->routing == SSM_MOE_SOFTMAX ? w->aux_grad[e] : 0.0f;
        /* w_j = scale p_j / Z (Z = sum_j p_j + 1e-20, or 1): d p_m += scale (dw_m - sum_j dw_j w_j / scale) / Z */
        double z = 1, dot = 0;
        if (o->norm_topk) {
            z = 1e-20;
            for (int j = 0; j < k; j++) z += p[sel[j]];
            for (int j = 0; j < k; j++) dot += (double)dw[j] * p[sel[j]] / z;
        }
        for (int j = 0; j < k; j++) dl[sel[j]] += (float)(o->routed_scaling * (dw[j] - dot) / z);
        if (o->routing == SSM_MOE_SOFTMAX) { /* d l = p (d p - p . d p) */
            double pd = 0;
            for (int e = 0; e < X; e++) pd += (double)p[e] * dl[e];
            for (int e = 0; e < X; e++) dl[e] = (float)(p[e] * (dl[e] - pd));
        } else { /* d l = d p p (1 - p) */
            for (int e = 0; e < X; e++) dl[e] *= p[e] * (1.0f - p[e]);
        }
    }
    /* l = h . router^T */
    cpu_matmul_backward(d_normed, D, 0.0f, lg->moe.router, w->d_logits, X, la->normed, D,
                        lp->moe.router, T, D, X);
    if (Fs) {
        int Us = up_rows(c, Fs);
        cpu_matmul_backward(w->d_sa, Fs, 0.0f, lg->moe.shared_down, d_out, D, a->sa, Fs,
                            lp->moe.shared_down, T, Fs, D);
        activate_backward(c, w->d_su, w->d_sa, a->su, T, Fs);
        cpu_matmul_backward(d_normed, D, 1.0f, lg->moe.shared_up, w->d_su, Us, la->normed, D,
                            lp->moe.shared_up, T, D, Us);
    }
    /* the grouped rows' d x back to their tokens, in slot order */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const float *dx = w->d_x + (size_t)a->row[t * k + j] * D;
            for (int d = 0; d < D; d++) d_normed[(size_t)t * D + d] += dx[d];
        }
}

/* the step carves a batch's activations (and the shared expert's output) from its work */
static size_t step_layout(const ssm_config *c, int B, ssm_layer_acts *la, float **shared,
                          float *base) {
    ssm_carver cv = {base, 0};
    moe_plan(&cv, c, la, (size_t)B, 1, 1);
    *shared = ssm_carve(&cv, (size_t)B * c->d_model);
    return cv.off;
}

static size_t moe_step_floats(const ssm_config *c, int B) {
    ssm_layer_acts la;
    float *shared;
    return step_layout(c, B, &la, &shared, NULL);
}

static void moe_step(const ssm_config *c, const ssm_layer_params *lp, const float *h, float *r,
                     const ssm_layer_state *st, int B, float *work) {
    ssm_layer_acts la;
    float *shared;
    step_layout(c, B, &la, &shared, work);
    moe_rows(c, lp, &la.moe, h, r, B, shared);
}

const ssm_layer_kind_ops ssm_moe_kind = {
    .name = "moe",
    .n_tensors = MOE_N_TENSORS,
    .suffix = moe_suffix,
    .decay = moe_decay,
    .cuda = 1,
    .shapes = moe_shapes,
    .init = moe_init,
    .state_size = moe_state_size,
    .plan = moe_plan,
    .plan_scratch = moe_plan_scratch,
    .forward = moe_forward,
    .backward = moe_backward,
    .step_floats = moe_step_floats,
    .step = moe_step,
};

/* ---- the auxiliary loss, over all MoE layers ------------------------------------------- */

double ssm_moe_aux_loss(const ssm_config *c, const ssm_layer_acts *layers, size_t T,
                        float *aux_grad) {
    const ssm_moe_config *o = &c->moe;
    int X = o->n_experts, n = 0;
    if (o->routing != SSM_MOE_SOFTMAX) return 0.0;
    double count[SSM_MOE_MAX_EXPERTS] = {0}, prob[SSM_MOE_MAX_EXPERTS] = {0};
    for (int i = 0; i < c->n_layer; i++) {
        if (c->layer_kind[i] != SSM_LAYER_MOE) continue;
        for (int e = 0; e < X; e++)
            count[e] += layers[i].moe.stats[e], prob[e] += layers[i].moe.stats[X + e];
        n++;
    }
    if (!n) return 0.0;
    /* aux = X sum_e (count_e / R) (prob_e / R), R = n T rows; d aux / d p = X count_e / R^2 */
    double rows = (double)n * T, aux = 0;
    for (int e = 0; e < X; e++) {
        aux += count[e] * prob[e];
        if (aux_grad) aux_grad[e] = (float)(o->aux_loss_coef * X * count[e] / (rows * rows));
    }
    return X * aux / (rows * rows);
}

ssm_status ssm_model_routing(const ssm_model *m, int layer, int32_t *experts, float *weights) {
    if (!m || layer < 0 || layer >= m->config.n_layer || m->config.layer_kind[layer] != SSM_LAYER_MOE)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_routing: layer %d is not a mixture-of-experts "
                             "layer", layer);
    return m->backend->routing(m, layer, experts, weights);
}

ssm_status ssm_cpu_moe_routing(const ssm_model *m, int layer, int32_t *experts, float *weights) {
    const ssm_activations *a = m->acts;
    if (!a || !a->has_hidden)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_routing: no CPU forward of this shape yet");
    size_t n = (size_t)a->B * a->L * m->config.moe.top_k;
    if (experts) memcpy(experts, a->layers[layer].moe.sel, n * sizeof(int32_t));
    if (weights) memcpy(weights, a->layers[layer].moe.w, n * sizeof(float));
    return SSM_OK;
}

double ssm_model_aux_loss(const ssm_model *m) { return m ? m->backend->aux_loss(m) : 0.0; }

double ssm_cpu_moe_aux_loss(const ssm_model *m) { return m->acts ? m->acts->aux_loss : 0.0; }
