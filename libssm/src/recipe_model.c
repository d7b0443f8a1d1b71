/* recipe_model.c: the model section of a recipe -> ssm_config (docs/recipes.md, 'model').
 * The programs call this, so a recipe's model means the same everywhere. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "ssm/recipe.h"

static const char *const model_keys[] = {
    "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "norm_eps", "layers",
    "mixer", "headdim", "ngroups", "chunk_size", "dt_limit", "pattern", "n_heads", "n_kv_heads",
    "head_dim", "rotary_dim", "rope_base", "max_context", "d_ff", "mlp_activation", "selective",
    "inner_norms", "n_experts", "top_k", "moe_d_ff", "moe_activation", "routing", "norm_topk",
    "routed_scaling", "aux_loss_coef", "shared_d_ff", "bidirectional", "rcps", "patch",
    "patch_widths", "patch_order", "patch_reading", "patch_attention", NULL};

/* the mixture-of-experts keys (Jamba's routing by default) */
static ssm_status read_moe(const ssm_recipe *r, ssm_node *m, int d_model, ssm_moe_config *o) {
    const char *const acts[] = {"swiglu", "relu2", NULL}, *const routings[] = {"softmax", "sigmoid", NULL};
    long long n_experts, top_k, d_ff, norm_topk, shared;
    double scaling, coef;
    int act, routing;
    ssm_status s;
    if ((s = ssm_node_int(r, m, "n_experts", o->n_experts, 1, 1024, &n_experts)) ||
        (s = ssm_node_int(r, m, "top_k", o->top_k, 1, 1024, &top_k)) ||
        (s = ssm_node_int(r, m, "moe_d_ff", 2 * d_model, 1, 1 << 20, &d_ff)) ||
        (s = ssm_node_choice(r, m, "moe_activation", acts, 0, &act)) ||
        (s = ssm_node_choice(r, m, "routing", routings, 0, &routing)) ||
        (s = ssm_node_int(r, m, "norm_topk", routing, 0, 1, &norm_topk)) ||
        (s = ssm_node_float(r, m, "routed_scaling", 1.0, 1e-6, 1e6, &scaling)) ||
        (s = ssm_node_float(r, m, "aux_loss_coef", routing ? 0.0 : 0.001, 0.0, 1e3, &coef)) ||
        (s = ssm_node_int(r, m, "shared_d_ff", 0, 0, 1 << 20, &shared)))
        return s;
    *o = (ssm_moe_config){(int)n_experts, (int)top_k, (int)d_ff,
                          act ? SSM_MLP_RELU2 : SSM_MLP_SWIGLU,
                          routing ? SSM_MOE_SIGMOID : SSM_MOE_SOFTMAX, (int)norm_topk,
                          (float)scaling, (float)coef, (int)shared};
    return SSM_OK;
}

/* model.layers: one kind for all ("mamba2"), or a list of n_layer kinds */
static ssm_status read_layers(const ssm_recipe *r, ssm_node *layers, int n_layer, ssm_config *c) {
    char where[256];
    ssm_node_where(r, layers, where, sizeof where);
    if (layers->kind == SSM_NODE_SCALAR) {
        int k = ssm_layer_kind_parse(layers->value);
        if (k < 0)
            return ssm_set_error(SSM_ERR_ARG, "%s: unknown layer kind '%s' (mamba1, mamba2, "
                                 "attention, mlp, moe, bimamba)", where, layers->value);
        ssm_config_set_kind(c, (ssm_layer_kind)k);
        return SSM_OK;
    }
    if (layers->kind != SSM_NODE_SEQ)
        return ssm_set_error(SSM_ERR_ARG, "%s: layers must be a layer kind or a list of them", where);
    if (layers->n != n_layer)
        return ssm_set_error(SSM_ERR_ARG, "%s: layers lists %d layers but n_layer is %d", where,
                             layers->n, n_layer);
    for (int i = 0; i < layers->n; i++) {
        ssm_node *it = layers->items[i];
        int k = it->kind == SSM_NODE_SCALAR ? ssm_layer_kind_parse(it->value) : -1;
        if (k < 0) {
            ssm_node_where(r, it, where, sizeof where);
            return ssm_set_error(SSM_ERR_ARG, "%s: unknown layer kind '%s' (mamba1, mamba2, "
                                 "attention, mlp, moe, bimamba)", where,
                                 it->kind == SSM_NODE_SCALAR ? it->value : "(not a name)");
        }
        c->layer_kind[i] = (unsigned char)k;
    }
    return SSM_OK;
}

/* model.patch (none | pointnet), patch_widths [w0, w1, w2], patch_order (score | input),
 * patch_reading (both | forward), patch_attention (false | true): the patch encoder (ssm.h, patch.c) */
static ssm_status read_patch(const ssm_recipe *r, ssm_node *m, ssm_patch_config *p) {
    const char *const kinds[] = {"none", "pointnet", NULL}, *const orders[] = {"score", "input", NULL},
                      *const readings[] = {"both", "forward", NULL};
    int kind, order, reading, attention;
    ssm_status s;
    if ((s = ssm_node_choice(r, m, "patch", kinds, 0, &kind)) ||
        (s = ssm_node_choice(r, m, "patch_order", orders, 0, &order)) ||
        (s = ssm_node_choice(r, m, "patch_reading", readings, 0, &reading)) ||
        (s = ssm_node_bool(r, m, "patch_attention", 0, &attention)))
        return s;
    *p = (ssm_patch_config){(ssm_patch_kind)kind, {32, 64, 64}, order == 0, reading == 0, attention};
    ssm_node *w = m ? ssm_node_get(m, "patch_widths") : NULL;
    char where[256];
    if (w && !kind)
        return ssm_set_error(SSM_ERR_ARG, "%s: patch_widths without model.patch: pointnet",
                             ssm_node_where(r, w, where, sizeof where));
    if (attention && !kind)
        return ssm_set_error(SSM_ERR_ARG, "%s: patch_attention without model.patch: pointnet",
                             ssm_node_where(r, ssm_node_get(m, "patch_attention"), where, sizeof where));
    if (!kind) *p = (ssm_patch_config){0}; /* none: as a checkpoint without ssm.patch reads */
    if (!w) return SSM_OK;
    if (w->kind != SSM_NODE_SEQ || w->n != 3)
        return ssm_set_error(SSM_ERR_ARG, "%s: patch_widths must be a list of three widths [w0, w1, "
                             "w2] (mlp1 3 -> w0 -> w1, mlp2 2 w1 -> w2 -> d_model)",
                             ssm_node_where(r, w, where, sizeof where));
    for (int i = 0; i < 3; i++) {
        ssm_node *it = w->items[i];
        char *end = NULL;
        long v = it->kind == SSM_NODE_SCALAR ? strtol(it->value, &end, 10) : 0;
        if (!end || end == it->value || *end || v < 1 || v > 4096)
            return ssm_set_error(SSM_ERR_ARG, "%s: a patch width must be an integer in [1, 4096]",
                                 ssm_node_where(r, it, where, sizeof where));
        p->widths[i] = (int)v;
    }
    return SSM_OK;
}

/* model.dt_limit: [min, max], max may be .inf */
static ssm_status read_dt_limit(const ssm_recipe *r, ssm_node *n, float out[2]) {
    char where[256];
    ssm_node_where(r, n, where, sizeof where);
    if (n->kind != SSM_NODE_SEQ || n->n != 2)
        return ssm_set_error(SSM_ERR_ARG, "%s: dt_limit must be a list [min, max] (e.g. [0.0, .inf])",
                             where);
    for (int i = 0; i < 2; i++) {
        ssm_node *it = n->items[i];
        char *end = NULL;
        const char *v = it->kind == SSM_NODE_SCALAR ? it->value : "";
        double x = !strcmp(v, ".inf") || !strcmp(v, "inf") ? INFINITY : strtod(v, &end);
        if (end && (end == v || *end)) {
            ssm_node_where(r, it, where, sizeof where);
            return ssm_set_error(SSM_ERR_ARG, "%s: dt_limit bound '%s' is not a number", where, v);
        }
        out[i] = (float)x;
    }
    return SSM_OK;
}

ssm_status ssm_config_from_recipe(const ssm_recipe *r, int vocab_size, ssm_config *out) {
    ssm_node *m;
    ssm_status s = ssm_node_section(r, r->root, "model", &m);
    if (s) return s;
    /* the kinds first: they choose d_state's default */
    long long n_layer, d_model;
    if ((s = ssm_node_int(r, m, "n_layer", 6, 1, SSM_MAX_LAYERS, &n_layer)) ||
        (s = ssm_node_int(r, m, "d_model", 128, 1, 16384, &d_model)))
        return s;
    ssm_config c = ssm_config_default(vocab_size, (int)d_model, (int)n_layer);
    const char *const mixers[] = {"mamba1", "mamba2", "mamba", NULL};
    int mixer;
    if ((s = ssm_node_choice(r, m, "mixer", mixers, 0, &mixer))) return s;
    ssm_layer_kind mamba = mixer == 1 ? SSM_LAYER_MAMBA2 : SSM_LAYER_MAMBA1;
    ssm_config_set_kind(&c, mamba);
    ssm_node *layers = m ? ssm_node_get(m, "layers") : NULL;
    ssm_node *pattern = m ? ssm_node_get(m, "pattern") : NULL;
    char where[256];
    if (layers && pattern) {
        ssm_node_where(r, pattern, where, sizeof where);
        return ssm_set_error(SSM_ERR_ARG, "%s: give model.layers or model.pattern, not both", where);
    }
    if (layers && (s = read_layers(r, layers, (int)n_layer, &c))) return s;
    if (pattern) {
        ssm_node_where(r, pattern, where, sizeof where);
        if (pattern->kind != SSM_NODE_SCALAR)
            return ssm_set_error(SSM_ERR_ARG, "%s: pattern must be a string such as \"M-M*-\"", where);
        if ((s = ssm_config_set_pattern(&c, pattern->value, mamba))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ssm_last_error());
            return ssm_set_error(s, "%s: %s", where, msg);
        }
        n_layer = c.n_layer;
    }
    int any2 = 0;
    for (int i = 0; i < c.n_layer; i++) any2 |= c.layer_kind[i] == SSM_LAYER_MAMBA2;

    long long d_state, d_conv, expand, dt_rank = 0, headdim, ngroups, chunk;
    long long n_heads, n_kv_heads, head_dim, rotary_dim, max_context, d_ff;
    double eps, rope_base;
    const char *const acts[] = {"relu2", "swiglu", NULL};
    int act;
    ssm_attention_config *at = &c.attention;
    if ((s = ssm_node_int(r, m, "n_heads", at->n_heads, 1, 4096, &n_heads)) ||
        (s = ssm_node_int(r, m, "n_kv_heads", n_heads, 1, 4096, &n_kv_heads)) ||
        (s = ssm_node_int(r, m, "head_dim", d_model / n_heads ? d_model / n_heads : 1, 1, 4096, &head_dim)) ||
        (s = ssm_node_int(r, m, "rotary_dim", 0, 0, 4096, &rotary_dim)) ||
        (s = ssm_node_float(r, m, "rope_base", 10000.0, 1.0, 1e12, &rope_base)) ||
        (s = ssm_node_int(r, m, "max_context", at->max_context, 1, 1 << 26, &max_context)) ||
        (s = ssm_node_int(r, m, "d_ff", 4 * d_model, 1, 1 << 20, &d_ff)) ||
        (s = ssm_node_choice(r, m, "mlp_activation", acts, 0, &act)))
        return s;
    *at = (ssm_attention_config){(int)n_heads, (int)n_kv_heads, (int)head_dim, (int)rotary_dim,
                                 (float)rope_base, (int)max_context};
    c.mlp = (ssm_mlp_config){(int)d_ff, act ? SSM_MLP_SWIGLU : SSM_MLP_RELU2};
    if ((s = read_moe(r, m, (int)d_model, &c.moe))) return s;
    if ((s = ssm_node_int(r, m, "d_state", any2 ? 128 : 16, 1, 1024, &d_state)) ||
        (s = ssm_node_int(r, m, "d_conv", 4, 1, 64, &d_conv)) ||
        (s = ssm_node_int(r, m, "expand", 2, 1, 16, &expand)) ||
        (s = ssm_node_float(r, m, "norm_eps", 1e-5, 1e-12, 0.1, &eps)) ||
        (s = ssm_node_int(r, m, "headdim", 64, 1, 1 << 16, &headdim)) ||
        (s = ssm_node_int(r, m, "ngroups", 1, 1, 1 << 16, &ngroups)) ||
        (s = ssm_node_int(r, m, "chunk_size", 256, 1, 1 << 16, &chunk)))
        return s;
    int selective; /* Mamba-1: false = the ablation with dt, B, C fixed (mamba1.c) */
    if ((s = ssm_node_bool(r, m, "selective", 1, &selective))) return s;
    c.non_selective = !selective;
    /* Caduceus: every Mamba-1 layer bidirectional (add | mul), RCPS (rcps.c) */
    const char *const bidir[] = {"none", "add", "mul", NULL};
    int how, rcps;
    if ((s = ssm_node_choice(r, m, "bidirectional", bidir, 0, &how)) ||
        (s = ssm_node_bool(r, m, "rcps", 0, &rcps)))
        return s;
    /* model.layers may name the bimamba layers itself; else every Mamba-1 layer becomes one */
    int named = 0;
    for (int i = 0; i < c.n_layer; i++) named |= c.layer_kind[i] == SSM_LAYER_BIMAMBA;
    if (how && !named) ssm_config_set_bidirectional(&c, (ssm_bidirectional)how);
    c.bidirectional = (ssm_bidirectional)how;
    if (rcps) ssm_config_set_rcps(&c, NULL);
    int inner_norms; /* Mamba-1: Jamba's RMSNorms on dt, B and C (mamba1.c) */
    if ((s = ssm_node_bool(r, m, "inner_norms", 0, &inner_norms))) return s;
    c.inner_norms = inner_norms;
    ssm_node *dr = m ? ssm_node_get(m, "dt_rank") : NULL;
    if (!(dr && dr->kind == SSM_NODE_SCALAR && !strcmp(dr->value, "auto")) &&
        (s = ssm_node_int(r, m, "dt_rank", 0, 0, 16384, &dt_rank)))
        return s;
    ssm_node *dl = m ? ssm_node_get(m, "dt_limit") : NULL;
    if (dl && (s = read_dt_limit(r, dl, c.mamba2.dt_limit))) return s;
    ssm_patch_config patch;
    if ((s = read_patch(r, m, &patch))) return s;
    if (m && (s = ssm_node_check_unknown(r, m, "model", model_keys))) return s;

    c.d_model = (int)d_model;
    c.norm_eps = (float)eps;
    /* Mamba-1 */
    c.d_state = (int)d_state, c.d_conv = (int)d_conv, c.expand = (int)expand;
    c.d_inner = (int)(expand * d_model);
    c.dt_rank = dt_rank ? (int)dt_rank : (int)(d_model + 15) / 16; /* 0 / auto: ceil(D / 16) */
    /* Mamba-2 */
    c.mamba2.d_state = (int)d_state, c.mamba2.d_conv = (int)d_conv, c.mamba2.expand = (int)expand;
    c.mamba2.headdim = (int)headdim, c.mamba2.ngroups = (int)ngroups;
    c.mamba2.chunk_size = (int)chunk;
    c.mamba2.d_inner = 0, c.mamba2.nheads = 0; /* derived by the validator */
    if ((s = ssm_config_validate(&c))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        if (m) ssm_node_where(r, m, where, sizeof where);
        else snprintf(where, sizeof where, "%s", r->path);
        return ssm_set_error(s, "%s: %s", where, msg);
    }
    c.patch = patch; /* checked with the task's inputs, when the model is made */
    *out = c;
    return SSM_OK;
}
