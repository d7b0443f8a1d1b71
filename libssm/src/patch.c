/* patch.c: the PointNet patch encoder and the learned importance order (config.patch, ssm.h).
 *
 *   x_g = [c_g ; p_g1 ... p_gk]          (T, 3 + 3k)  a group's centre, its points minus it
 *   f_j = W12 relu(W10 p_j + b10) + b12   (k, w1)      mlp1, shared by every point
 *   f_j += Wo sum_i softmax_i(q_j . k_i / sqrt(w1)) v_i   attention: over the group's k points,
 *         q, k, v = Wq f_j, Wk f_j, Wv f_j                one head, no positions (order-free)
 *   z_j = [max_j f ; f_j]                 (k, 2 w1)    Point-BERT's global + local feature
 *   y_j = W22 relu(W20 z_j + b20) + b22   (k, D)       mlp2
 *   e_g = max_j y_j + W_c c_g             (D)          the group's embedding
 *   s_g = w . e_g + b                     score_order: the learned importance score
 *   r_0[b, l] = sigmoid(s_g) e_g,  g = order[b, l]    the groups of row b sorted by s, descending
 *   r_0[b, L + l] = r_0[b, L - 1 - l]                  both: then the same reversed
 * The sort is a permutation, piecewise constant in the parameters: the gradient reaches the
 * score through the sigmoid weight (PoinTramba's importance-weighted features).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "layers.h"
#include "patch.h"

int ssm_patch_tensors(const ssm_config *c, ssm_patch_tensor *out) {
    const ssm_patch_config *p = &c->patch;
    if (p->kind == SSM_PATCH_NONE) return 0;
    int64_t w0 = p->widths[0], w1 = p->widths[1], w2 = p->widths[2], D = c->d_model;
    const ssm_patch_tensor t[SSM_PATCH_TENSORS] = {
        {"backbone.patch.mlp1.0.weight", 2, {w0, 3}, 1, PATCH_MLP1_0_W}, {"backbone.patch.mlp1.0.bias", 1, {w0}, 0, PATCH_MLP1_0_B},
        {"backbone.patch.mlp1.2.weight", 2, {w1, w0}, 1, PATCH_MLP1_2_W}, {"backbone.patch.mlp1.2.bias", 1, {w1}, 0, PATCH_MLP1_2_B},
        {"backbone.patch.mlp2.0.weight", 2, {w2, 2 * w1}, 1, PATCH_MLP2_0_W}, {"backbone.patch.mlp2.0.bias", 1, {w2}, 0, PATCH_MLP2_0_B},
        {"backbone.patch.mlp2.2.weight", 2, {D, w2}, 1, PATCH_MLP2_2_W}, {"backbone.patch.mlp2.2.bias", 1, {D}, 0, PATCH_MLP2_2_B},
        {"backbone.patch.centre.weight", 2, {D, 3}, 1, PATCH_CENTRE_W},
        {"backbone.patch.score.weight", 2, {1, D}, 0, PATCH_SCORE_W}, {"backbone.patch.score.bias", 1, {1}, 0, PATCH_SCORE_B},
        {"backbone.patch.attn.q.weight", 2, {w1, w1}, 1, PATCH_ATT_Q}, {"backbone.patch.attn.k.weight", 2, {w1, w1}, 1, PATCH_ATT_K},
        {"backbone.patch.attn.v.weight", 2, {w1, w1}, 1, PATCH_ATT_V}, {"backbone.patch.attn.o.weight", 2, {w1, w1}, 1, PATCH_ATT_O},
    };
    int n = 0;
    for (int i = 0; i < SSM_PATCH_TENSORS; i++) {
        if ((i == PATCH_SCORE_W || i == PATCH_SCORE_B) && !p->score_order) continue;
        if (i >= PATCH_ATT_Q && !p->attention) continue;
        out[n++] = t[i];
    }
    return n;
}

ssm_status ssm_patch_validate(const ssm_config *c) {
    const ssm_patch_config *p = &c->patch;
    if (p->kind == SSM_PATCH_NONE && p->attention)
        return ssm_set_error(SSM_ERR_ARG, "model patch_attention needs model patch: pointnet (the "
                             "attention runs within the encoder's groups)");
    if (p->kind == SSM_PATCH_NONE) return SSM_OK;
    if (p->kind != SSM_PATCH_POINTNET)
        return ssm_set_error(SSM_ERR_ARG, "model patch = %d is not none or pointnet", (int)p->kind);
    for (int i = 0; i < 3; i++)
        if (p->widths[i] < 1 || p->widths[i] > 4096)
            return ssm_set_error(SSM_ERR_ARG, "model patch_widths[%d] = %d is outside [1, 4096]", i,
                                 p->widths[i]);
    const ssm_io_config *io = &c->io;
    int F = io->features;
    if (F < 6 || (F - 3) % 3 || io->patch > 1)
        return ssm_set_error(SSM_ERR_ARG, "model patch: pointnet reads groups of 3 + 3 k floats per "
                             "position (a centre and k points), one position a step; the task gives "
                             "%d floats in patches of %d", F, io->patch);
    if (io->head != SSM_HEAD_CLASSIFY)
        return ssm_set_error(SSM_ERR_ARG, "model patch: pointnet reorders the positions: it needs the "
                             "pooled classify head");
    if (c->rcps)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "model patch: pointnet with RCPS is not supported");
    return SSM_OK;
}

void ssm_patch_init(const ssm_config *c, ssm_rng *rng, float *const *p) {
    ssm_patch_tensor t[SSM_PATCH_TENSORS];
    int n = ssm_patch_tensors(c, t);
    double bound = 1; /* a bias takes its weight's: 1/sqrt(the weight's fan_in) */
    for (int i = 0; i < n; i++) {
        if (t[i].slot == PATCH_SCORE_W || t[i].slot == PATCH_SCORE_B) continue;
        if (t[i].ndim == 2) bound = 1.0 / sqrt((double)t[i].shape[1]);
        ssm_fill_uniform(rng, p[t[i].slot], (size_t)(t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1)), bound);
    }
    /* the score starts at 0: every group ties, so the first order is the task's (ties go by
     * index) and every weight sigmoid(0) = 1/2; its gradient is not 0, and training moves it */
    if (c->patch.score_order) {
        memset(p[PATCH_SCORE_W], 0, (size_t)c->d_model * sizeof(float));
        p[PATCH_SCORE_B][0] = 0;
    }
}

int ssm_patch_positions(const ssm_config *c, int L) {
    return c->patch.kind != SSM_PATCH_NONE && c->patch.both ? 2 * L : L;
}

void ssm_patch_acts_free(ssm_patch_acts *a) {
    if (!a) return;
    free(a->pts), free(a->h1), free(a->z), free(a->h3), free(a->y), free(a->d_a), free(a->d_z);
    free(a->f0), free(a->qkv), free(a->prob), free(a->o), free(a->d_qkv), free(a->d_o);
    free(a->arg_f), free(a->f_max), free(a->arg_y), free(a->e), free(a->d_e), free(a->score), free(a->order);
    free(a);
}

static int grow(void **p, size_t n, size_t size) {
    void *q = realloc(*p, (n ? n : 1) * size);
    if (q) *p = q;
    return q != NULL;
}

static ssm_status patch_buffers(ssm_model *m, int B, int L, int k) {
    ssm_activations *a = m->acts;
    if (!a->patch && !(a->patch = calloc(1, sizeof *a->patch)))
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the patch encoder");
    ssm_patch_acts *p = a->patch;
    const int *w = m->config.patch.widths;
    int D = m->config.d_model, wa = w[0] > w[2] ? w[0] : w[2];
    size_t T = (size_t)B * L, Tk = T * k;
    p->B = B, p->L = L, p->k = k;
    int ok = 1;
    if (Tk > p->cap_points) {
        ok = grow((void **)&p->pts, Tk * 3, sizeof(float)) && grow((void **)&p->h1, Tk * w[0], sizeof(float)) &&
             grow((void **)&p->z, Tk * 2 * w[1], sizeof(float)) && grow((void **)&p->h3, Tk * w[2], sizeof(float)) &&
             grow((void **)&p->y, Tk * D, sizeof(float)) && grow((void **)&p->d_a, Tk * wa, sizeof(float)) &&
             grow((void **)&p->d_z, Tk * 2 * w[1], sizeof(float));
        if (ok && m->config.patch.attention)
            ok = grow((void **)&p->f0, Tk * w[1], sizeof(float)) && grow((void **)&p->qkv, Tk * 3 * w[1], sizeof(float)) &&
                 grow((void **)&p->prob, Tk * k, sizeof(float)) && grow((void **)&p->o, Tk * w[1], sizeof(float)) &&
                 grow((void **)&p->d_qkv, Tk * 3 * w[1], sizeof(float)) && grow((void **)&p->d_o, Tk * w[1], sizeof(float));
        if (ok) p->cap_points = Tk;
    }
    if (ok && T > p->cap_groups) {
        ok = grow((void **)&p->arg_f, T * w[1], sizeof(int)) && grow((void **)&p->f_max, T * w[1], sizeof(float)) &&
             grow((void **)&p->arg_y, T * D, sizeof(int)) &&
             grow((void **)&p->e, T * D, sizeof(float)) && grow((void **)&p->d_e, T * D, sizeof(float)) &&
             grow((void **)&p->score, T, sizeof(float)) && grow((void **)&p->order, T, sizeof(int));
        if (ok) p->cap_groups = T;
    }
    return ok ? SSM_OK : ssm_set_error(SSM_ERR_NOMEM, "out of memory for the patch encoder's "
                                       "activations (%zu groups of %d points)", T, k);
}

/* out (T, n) = the max over each group's k rows of v (T k, n, row stride ld); arg: which row */
static void max_over_points(float *out, int *arg, const float *v, int ld, size_t T, int k, int n) {
    for (size_t t = 0; t < T; t++)
        for (int c = 0; c < n; c++) {
            const float *col = v + t * k * ld + c;
            int best = 0;
            for (int j = 1; j < k; j++)
                if (col[(size_t)j * ld] > col[(size_t)best * ld]) best = j;
            out[t * n + c] = col[(size_t)best * ld];
            arg[t * n + c] = best;
        }
}

static void relu(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = v[i] > 0 ? v[i] : 0;
}

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The attention within each group (T groups of k points, width n): f0 (T k, n) -> f (T k, n, row
 * stride ld) += Wo o. Every point attends to every point of its group (no mask, no positions:
 * a permutation of the points permutes f, so the max over the group is unchanged). */
static void group_attention_forward(ssm_patch_acts *a, float *const *P, float *f, int ld, size_t T,
                                    int k, int n) {
    size_t Tk = T * k;
    float scale = 1.0f / sqrtf((float)n);
    cpu_matmul_forward(a->qkv, 3 * n, 0.0f, a->f0, n, P[PATCH_ATT_Q], (int)Tk, n, n);
    cpu_matmul_forward(a->qkv + n, 3 * n, 0.0f, a->f0, n, P[PATCH_ATT_K], (int)Tk, n, n);
    cpu_matmul_forward(a->qkv + 2 * n, 3 * n, 0.0f, a->f0, n, P[PATCH_ATT_V], (int)Tk, n, n);
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const float *q = a->qkv + (t * k + j) * 3 * n;
            float *p = a->prob + (t * k + j) * k, *o = a->o + (t * k + j) * n, mx = -INFINITY;
            for (int i = 0; i < k; i++) { /* p_ji = softmax_i(s_ji), the row's max subtracted */
                const float *key = a->qkv + (t * k + i) * 3 * n + n;
                float s = 0;
                for (int c = 0; c < n; c++) s += q[c] * key[c];
                p[i] = s * scale;
                mx = p[i] > mx ? p[i] : mx;
            }
            double sum = 0;
            for (int i = 0; i < k; i++) sum += p[i] = expf(p[i] - mx);
            memset(o, 0, (size_t)n * sizeof(float));
            for (int i = 0; i < k; i++) {
                p[i] = (float)(p[i] / sum);
                const float *v = a->qkv + (t * k + i) * 3 * n + 2 * n;
                for (int c = 0; c < n; c++) o[c] += p[i] * v[c];
            }
        }
    cpu_matmul_forward(f, ld, 1.0f, a->o, n, P[PATCH_ATT_O], (int)Tk, n, n);
}

/* d f (T k, n, stride ld) -> the attention's gradients, and d f0 added into d f in place */
static void group_attention_backward(ssm_patch_acts *a, float *const *P, float *const *G, float *d_f,
                                     int ld, size_t T, int k, int n) {
    size_t Tk = T * k;
    float scale = 1.0f / sqrtf((float)n);
    cpu_matmul_backward(a->d_o, n, 0.0f, G[PATCH_ATT_O], d_f, ld, a->o, n, P[PATCH_ATT_O], (int)Tk, n, n);
    memset(a->d_qkv, 0, Tk * 3 * n * sizeof(float));
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const float *p = a->prob + (t * k + j) * k, *d_o = a->d_o + (t * k + j) * n;
            const float *q = a->qkv + (t * k + j) * 3 * n;
            float *d_q = a->d_qkv + (t * k + j) * 3 * n, d_s[k];
            double dot = 0; /* sum_i p_ji d p_ji */
            for (int i = 0; i < k; i++) { /* d p_ji = d o_j . v_i; d v_i += p_ji d o_j */
                const float *v = a->qkv + (t * k + i) * 3 * n + 2 * n;
                float *d_v = a->d_qkv + (t * k + i) * 3 * n + 2 * n, dp = 0;
                for (int c = 0; c < n; c++) dp += d_o[c] * v[c], d_v[c] += p[i] * d_o[c];
                d_s[i] = dp;
                dot += (double)p[i] * dp;
            }
            for (int i = 0; i < k; i++) { /* d s_ji = p_ji (d p_ji - dot), times the scale */
                float ds = p[i] * (d_s[i] - (float)dot) * scale;
                const float *key = a->qkv + (t * k + i) * 3 * n + n;
                float *d_k = a->d_qkv + (t * k + i) * 3 * n + n;
                for (int c = 0; c < n; c++) d_q[c] += ds * key[c], d_k[c] += ds * q[c];
            }
        }
    /* q, k, v = projections of f0: d f0 = d f (the residual) plus the three */
    cpu_matmul_backward(d_f, ld, 1.0f, G[PATCH_ATT_Q], a->d_qkv, 3 * n, a->f0, n, P[PATCH_ATT_Q], (int)Tk, n, n);
    cpu_matmul_backward(d_f, ld, 1.0f, G[PATCH_ATT_K], a->d_qkv + n, 3 * n, a->f0, n, P[PATCH_ATT_K], (int)Tk, n, n);
    cpu_matmul_backward(d_f, ld, 1.0f, G[PATCH_ATT_V], a->d_qkv + 2 * n, 3 * n, a->f0, n, P[PATCH_ATT_V], (int)Tk, n, n);
}

typedef struct { float s; int g; } ranked;

static int by_score(const void *a, const void *b) { /* descending; ties by index: deterministic */
    const ranked *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->g > y->g) - (x->g < y->g);
}

ssm_status ssm_patch_forward(ssm_model *m, const float *x, int B, int L, float *r0) {
    const ssm_config *c = &m->config;
    const int *w = c->patch.widths;
    int D = c->d_model, F = c->io.features, k = (F - 3) / 3, w1 = w[1];
    ssm_status s = patch_buffers(m, B, L, k);
    if (s) return s;
    ssm_patch_acts *a = m->acts->patch;
    float *const *P = m->params.patch;
    size_t T = (size_t)B * L, Tk = T * k;
    for (size_t t = 0; t < T; t++) memcpy(a->pts + t * k * 3, x + t * F + 3, (size_t)k * 3 * sizeof(float));
    /* mlp1 per point: f lands in z's second half */
    cpu_linear_forward(a->h1, a->pts, P[PATCH_MLP1_0_W], P[PATCH_MLP1_0_B], (int)Tk, 3, w[0]);
    relu(a->h1, Tk * w[0]);
    for (size_t r = 0; r < Tk; r++) memcpy(a->z + r * 2 * w1 + w1, P[PATCH_MLP1_2_B], (size_t)w1 * sizeof(float));
    cpu_matmul_forward(a->z + w1, 2 * w1, 1.0f, a->h1, w[0], P[PATCH_MLP1_2_W], (int)Tk, w[0], w1);
    if (c->patch.attention) { /* f += Wo attention(f) within each group */
        for (size_t r = 0; r < Tk; r++) memcpy(a->f0 + r * w1, a->z + r * 2 * w1 + w1, (size_t)w1 * sizeof(float));
        group_attention_forward(a, P, a->z + w1, 2 * w1, T, k, w1);
    }
    /* the group's max of f beside each point's f */
    max_over_points(a->f_max, a->arg_f, a->z + w1, 2 * w1, T, k, w1);
    for (size_t r = 0; r < Tk; r++) memcpy(a->z + r * 2 * w1, a->f_max + (r / k) * w1, (size_t)w1 * sizeof(float));
    /* mlp2 per point, then the max over the group and the centre's embedding */
    cpu_linear_forward(a->h3, a->z, P[PATCH_MLP2_0_W], P[PATCH_MLP2_0_B], (int)Tk, 2 * w1, w[2]);
    relu(a->h3, Tk * w[2]);
    cpu_linear_forward(a->y, a->h3, P[PATCH_MLP2_2_W], P[PATCH_MLP2_2_B], (int)Tk, w[2], D);
    max_over_points(a->e, a->arg_y, a->y, D, T, k, D);
    cpu_matmul_forward(a->e, D, 1.0f, x, F, P[PATCH_CENTRE_W], (int)T, 3, D);
    /* the order, and r_0 */
    int Lo = ssm_patch_positions(c, L), scored = c->patch.score_order;
    ranked *rk = scored ? malloc((size_t)L * sizeof *rk) : NULL;
    if (scored && !rk) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the patch order");
    for (int b = 0; b < B; b++) {
        int *order = a->order + (size_t)b * L;
        for (int l = 0; l < L; l++) order[l] = l;
        if (scored) {
            for (int g = 0; g < L; g++) {
                const float *e = a->e + ((size_t)b * L + g) * D;
                double v = P[PATCH_SCORE_B][0];
                for (int d = 0; d < D; d++) v += (double)P[PATCH_SCORE_W][d] * e[d];
                a->score[(size_t)b * L + g] = (float)v;
                rk[g] = (ranked){(float)v, g};
            }
            qsort(rk, (size_t)L, sizeof *rk, by_score);
            for (int l = 0; l < L; l++) order[l] = rk[l].g;
        }
        for (int l = 0; l < L; l++) {
            size_t g = (size_t)b * L + order[l];
            float weight = scored ? sigmoid(a->score[g]) : 1.0f;
            float *out = r0 + ((size_t)b * Lo + l) * D;
            for (int d = 0; d < D; d++) out[d] = weight * a->e[g * D + d];
        }
        for (int l = L; l < Lo; l++) /* both: the sorted groups reversed */
            memcpy(r0 + ((size_t)b * Lo + l) * D, r0 + ((size_t)b * Lo + (2 * L - 1 - l)) * D,
                   (size_t)D * sizeof(float));
    }
    free(rk);
    return SSM_OK;
}

void ssm_patch_backward(ssm_model *m, const float *x, const float *d_r0) {
    const ssm_config *c = &m->config;
    const int *w = c->patch.widths;
    ssm_patch_acts *a = m->acts->patch;
    float *const *P = m->params.patch;
    float *const *G = m->grads.patch;
    int B = a->B, L = a->L, k = a->k, D = c->d_model, F = c->io.features, w1 = w[1];
    int Lo = ssm_patch_positions(c, L), scored = c->patch.score_order;
    size_t T = (size_t)B * L, Tk = T * k;
    /* r_0 -> d e (through the sigmoid weight) and d s */
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            size_t g = (size_t)b * L + a->order[(size_t)b * L + l];
            const float *d1 = d_r0 + ((size_t)b * Lo + l) * D;
            const float *d2 = Lo > L ? d_r0 + ((size_t)b * Lo + (2 * L - 1 - l)) * D : NULL;
            float *de = a->d_e + g * D;
            const float *e = a->e + g * D;
            float weight = scored ? sigmoid(a->score[g]) : 1.0f;
            double dw = 0; /* d loss / d weight */
            for (int d = 0; d < D; d++) {
                float dr = d1[d] + (d2 ? d2[d] : 0.0f);
                de[d] = weight * dr;
                dw += (double)dr * e[d];
            }
            if (!scored) continue;
            float ds = (float)(dw * weight * (1 - weight)); /* sigmoid' */
            G[PATCH_SCORE_B][0] += ds;
            for (int d = 0; d < D; d++) {
                G[PATCH_SCORE_W][d] += ds * e[d];
                de[d] += ds * P[PATCH_SCORE_W][d];
            }
        }
    /* the centre's embedding; d y: d e at each channel's max point */
    cpu_matmul_backward(NULL, 0, 0.0f, G[PATCH_CENTRE_W], a->d_e, D, x, F, P[PATCH_CENTRE_W], (int)T, 3, D);
    memset(a->y, 0, Tk * D * sizeof(float));
    for (size_t t = 0; t < T; t++)
        for (int d = 0; d < D; d++) a->y[(t * k + a->arg_y[t * D + d]) * D + d] = a->d_e[t * D + d];
    /* mlp2 */
    cpu_linear_backward(a->d_a, G[PATCH_MLP2_2_W], G[PATCH_MLP2_2_B], a->y, a->h3, P[PATCH_MLP2_2_W],
                        (int)Tk, w[2], D);
    for (size_t i = 0; i < Tk * w[2]; i++) a->d_a[i] = a->h3[i] > 0 ? a->d_a[i] : 0;
    cpu_linear_backward(a->d_z, G[PATCH_MLP2_0_W], G[PATCH_MLP2_0_B], a->d_a, a->z, P[PATCH_MLP2_0_W],
                        (int)Tk, 2 * w1, w[2]);
    /* d f_j = its own half of d z, plus the group max's half summed over j at the max's point */
    for (size_t t = 0; t < T; t++)
        for (int ch = 0; ch < w1; ch++) {
            float sum = 0;
            for (int j = 0; j < k; j++) sum += a->d_z[(t * k + j) * 2 * w1 + ch];
            a->d_z[(t * k + a->arg_f[t * w1 + ch]) * 2 * w1 + w1 + ch] += sum;
        }
    if (c->patch.attention) group_attention_backward(a, P, G, a->d_z + w1, 2 * w1, T, k, w1);
    /* mlp1 */
    float *db = G[PATCH_MLP1_2_B];
    for (size_t r = 0; r < Tk; r++)
        for (int ch = 0; ch < w1; ch++) db[ch] += a->d_z[r * 2 * w1 + w1 + ch];
    cpu_matmul_backward(a->d_a, w[0], 0.0f, G[PATCH_MLP1_2_W], a->d_z + w1, 2 * w1, a->h1, w[0],
                        P[PATCH_MLP1_2_W], (int)Tk, w[0], w1);
    for (size_t i = 0; i < Tk * w[0]; i++) a->d_a[i] = a->h1[i] > 0 ? a->d_a[i] : 0;
    cpu_linear_backward(NULL, G[PATCH_MLP1_0_W], G[PATCH_MLP1_0_B], a->d_a, a->pts, P[PATCH_MLP1_0_W],
                        (int)Tk, 3, w[0]);
}
