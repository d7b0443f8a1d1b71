/* checkpoint_jamba.c: transformers' Jamba (JambaConfig, model_type "jamba") config.json and
 * tensor names. A Jamba decoder layer is two ssm sublayers: its mixer (Mamba-1 with the inner
 * dt/B/C norms, or attention) and its feed-forward (a SwiGLU MLP or a softmax-routed MoE) as
 * the block's second sublayer:
 *   layer i: mixer  = attention if i % attn_layer_period == attn_layer_offset, else mamba
 *            ffn    = MoE if num_experts > 1 and i % expert_layer_period == expert_layer_offset,
 *                     else MLP
 * Names (JambaForCausalLM, as save_pretrained writes them):
 *   model.embed_tokens.weight, model.final_layernorm.weight
 *   model.layers.{i}.input_layernorm.weight / pre_ff_layernorm.weight (ssm's norm / norm2)
 *   model.layers.{i}.mamba.* (ssm's mixer.*) | self_attn.{q,k,v,o}_proj.weight
 *   model.layers.{i}.feed_forward.{up_proj,gate_proj,down_proj}.weight (ssm's mlp.fc1 =
 *     [up | gate], mlp.fc2) | feed_forward.router.weight and
 *     feed_forward.experts.{j}.{up_proj,gate_proj,down_proj}.weight (ssm's mlp.gate and the
 *     fused mlp.experts.up_proj (X, 2F, D) = [up_j | gate_j] per expert, down_proj (X, D, F))
 * docs/formats.md, 'Hybrid checkpoints', lists the keys. */
#include <stdio.h>
#include <string.h>

#include "checkpoint_json.h"

static ssm_status refuse(const char *cpath, const char *key, const char *why) {
    return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": %s", key, why);
}

ssm_status ssm_json_jamba(json_t *cfg, const char *cpath, ssm_config *c) {
    ssm_status s;
    if ((s = json_str_must(cfg, cpath, "hidden_act", "silu")) ||
        (s = json_bool_must(cfg, cpath, "mamba_proj_bias", 0, "ssm has no in_proj/out_proj biases")) ||
        (s = json_bool_must(cfg, cpath, "mamba_conv_bias", 1, "ssm always has a conv1d bias")))
        return s;
    json_t *sw = json_object_get(cfg, "sliding_window");
    if (sw && !json_is_null(sw))
        return refuse(cpath, "sliding_window", "ssm's attention sees the whole context (null only)");
    int n, ap, ao, ep, eo, X, heads, kv;
    /* the defaults are JambaConfig's */
    if ((s = json_int(cfg, cpath, "vocab_size", 0, 65536, &c->vocab_size)) ||
        (s = json_int(cfg, cpath, "hidden_size", 0, 4096, &c->d_model)) ||
        (s = json_int(cfg, cpath, "intermediate_size", 0, 14336, &c->mlp.d_ff)) ||
        (s = json_int(cfg, cpath, "num_hidden_layers", 0, 32, &n)) ||
        (s = json_int(cfg, cpath, "num_attention_heads", 0, 32, &heads)) ||
        (s = json_int(cfg, cpath, "num_key_value_heads", 0, 8, &kv)) ||
        (s = json_int(cfg, cpath, "num_experts_per_tok", 0, 2, &c->moe.top_k)) ||
        (s = json_int(cfg, cpath, "num_experts", 0, 16, &X)) ||
        (s = json_int(cfg, cpath, "expert_layer_period", 0, 2, &ep)) ||
        (s = json_int(cfg, cpath, "attn_layer_period", 0, 8, &ap)) ||
        (s = json_int_from(cfg, cpath, "expert_layer_offset", 1, 0, &eo)) ||
        (s = json_int_from(cfg, cpath, "attn_layer_offset", 4, 0, &ao)) ||
        (s = json_int(cfg, cpath, "mamba_d_state", 0, 16, &c->d_state)) ||
        (s = json_int(cfg, cpath, "mamba_d_conv", 0, 4, &c->d_conv)) ||
        (s = json_int(cfg, cpath, "mamba_expand", 0, 2, &c->expand)))
        return s;
    if (ao >= ap) return refuse(cpath, "attn_layer_offset", "must be less than attn_layer_period");
    if (eo >= ep) return refuse(cpath, "expert_layer_offset", "must be less than expert_layer_period");
    if (2 * n > SSM_MAX_LAYERS) return refuse(cpath, "num_hidden_layers", "more layers than ssm holds");
    json_t *r = json_object_get(cfg, "mamba_dt_rank");
    if (!r || json_is_null(r) || (json_is_string(r) && !strcmp(json_string_value(r), "auto")))
        c->dt_rank = (c->d_model + 15) / 16; /* "auto": ceil(hidden_size / 16) */
    else if ((s = json_int(cfg, cpath, "mamba_dt_rank", 1, 0, &c->dt_rank)))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"mamba_dt_rank\" must be a positive integer "
                             "or \"auto\"");
    /* the layers, each [mixer | feed-forward] */
    char pattern[2 * SSM_MAX_LAYERS + 1], *p = pattern;
    for (int i = 0; i < n; i++) {
        *p++ = i % ap == ao ? '*' : 'M';
        *p++ = '+';
        *p++ = X > 1 && i % ep == eo ? 'E' : '-';
    }
    *p = '\0';
    if ((s = ssm_config_set_pattern(c, pattern, SSM_LAYER_MAMBA1)))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "the layer layout: %s", ssm_last_error());
    if ((s = json_times(cpath, "mamba_expand", c->expand, c->d_model, &c->d_inner))) return s;
    c->inner_norms = 1;
    c->attention = (ssm_attention_config){.n_heads = heads, .n_kv_heads = kv,
                                          .head_dim = c->d_model / heads, .rotary_dim = 0,
                                          .rope_base = 10000.0f,
                                          .max_context = c->attention.max_context};
    if (c->attention.head_dim * heads != c->d_model)
        return refuse(cpath, "num_attention_heads", "must divide hidden_size (Jamba's head_dim)");
    c->mlp.activation = SSM_MLP_SWIGLU;
    /* JambaSparseMoeBlock: softmax, top k, not renormalised; the aux loss counts only with
     * output_router_logits */
    double coef = 0.001, eps = 1e-6;
    json_t *v = json_object_get(cfg, "router_aux_loss_coef");
    if (v && (s = json_float(v, cpath, "router_aux_loss_coef", &coef))) return s;
    if ((v = json_object_get(cfg, "rms_norm_eps")) && (s = json_float(v, cpath, "rms_norm_eps", &eps)))
        return s;
    c->norm_eps = (float)eps;
    json_t *out_logits = json_object_get(cfg, "output_router_logits");
    c->moe = (ssm_moe_config){.n_experts = X, .top_k = c->moe.top_k, .d_ff = c->mlp.d_ff,
                              .activation = SSM_MLP_SWIGLU, .routing = SSM_MOE_SOFTMAX,
                              .norm_topk = 0, .routed_scaling = 1.0f,
                              .aux_loss_coef = json_is_true(out_logits) ? (float)coef : 0.0f,
                              .shared_d_ff = 0};
    if (X <= 1) c->moe.n_experts = 1, c->moe.top_k = 1;
    return SSM_OK;
}

int ssm_jamba_layout(const ssm_config *c, int *ap, int *ao, int *ep, int *eo) {
    if (!c->inner_norms || c->n_layer % 2 || c->non_selective) return 0;
    int n = c->n_layer / 2, moe = 0;
    *ap = *ep = 0, *ao = *eo = 0;
    for (int i = 0; i < n; i++) {
        int mk = c->layer_kind[2 * i], fk = c->layer_kind[2 * i + 1];
        if (c->second[2 * i] || !c->second[2 * i + 1]) return 0;
        if (mk != SSM_LAYER_MAMBA1 && mk != SSM_LAYER_ATTENTION) return 0;
        moe |= fk == SSM_LAYER_MOE;
    }
    /* the smallest period and offset that give each layout (n when there is one layer) */
    for (int which = 0; which < 2; which++) {
        int want = which ? SSM_LAYER_MOE : SSM_LAYER_ATTENTION, found = 0;
        for (int per = 1; per <= n + 1 && !found; per++)
            for (int off = 0; off < per && !found; off++) {
                int ok = 1;
                for (int i = 0; i < n && ok; i++)
                    ok = (i % per == off) == (c->layer_kind[2 * i + which] == want);
                if (ok) found = 1, *(which ? ep : ap) = per, *(which ? eo : ao) = off;
            }
        if (!found) return 0;
    }
    const ssm_moe_config *o = &c->moe;
    if (c->mlp.activation != SSM_MLP_SWIGLU || c->attention.rotary_dim ||
        c->attention.head_dim * c->attention.n_heads != c->d_model)
        return 0;
    if (moe && (o->routing != SSM_MOE_SOFTMAX || o->activation != SSM_MLP_SWIGLU || o->norm_topk ||
                o->shared_d_ff || o->routed_scaling != 1.0f || o->d_ff != c->mlp.d_ff))
        return 0;
    return 1;
}

json_t *ssm_json_jamba_config(const ssm_config *c, int bos_token_id) {
    int ap, ao, ep, eo, moe = 0;
    if (!ssm_jamba_layout(c, &ap, &ao, &ep, &eo)) return NULL;
    for (int i = 0; i < c->n_layer; i++) moe |= c->layer_kind[i] == SSM_LAYER_MOE;
    const ssm_attention_config *a = &c->attention;
    return json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,"
                     "s:i,s:i,s:f,s:f,s:b,s:s,s:b,s:b,s:b,s:o,s:i}",
                     "architectures", "JambaForCausalLM", "model_type", "jamba",
                     "vocab_size", c->vocab_size, "hidden_size", c->d_model,
                     "intermediate_size", c->mlp.d_ff, "num_hidden_layers", c->n_layer / 2,
                     "num_attention_heads", a->n_heads, "num_key_value_heads", a->n_kv_heads,
                     "num_experts", moe ? c->moe.n_experts : 1,
                     "num_experts_per_tok", moe ? c->moe.top_k : 1,
                     "attn_layer_period", ap, "attn_layer_offset", ao,
                     "expert_layer_period", ep, "expert_layer_offset", eo,
                     "mamba_d_state", c->d_state, "mamba_d_conv", c->d_conv,
                     "mamba_expand", c->expand, "mamba_dt_rank", c->dt_rank,
                     "rms_norm_eps", (double)c->norm_eps,
                     "router_aux_loss_coef", (double)c->moe.aux_loss_coef,
                     "output_router_logits", moe && c->moe.aux_loss_coef > 0,
                     "hidden_act", "silu", "mamba_conv_bias", 1, "mamba_proj_bias", 0,
                     "tie_word_embeddings", 1, "sliding_window", json_null(),
                     "bos_token_id", bos_token_id);
}

/* ---- names -------------------------------------------------------------------------------- */

static int piece(ssm_file_piece *p, const char *name, int ndim, int64_t a, int64_t b, int64_t k,
                 size_t count) {
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim, p->shape[0] = a, p->shape[1] = b, p->shape[2] = k;
    p->from = 0, p->count = count;
    return 1;
}

int ssm_jamba_piece(const ssm_config *c, const ssm_tensor_info *ti, int j, ssm_file_piece *p) {
    char name[160], rest[96];
    int b;
    const int64_t *sh = ti->shape;
    if (!strcmp(ti->name, "backbone.embeddings.weight"))
        return !j && piece(p, "model.embed_tokens.weight", 2, sh[0], sh[1], 0, ti->numel);
    if (!strcmp(ti->name, "backbone.norm_f.weight"))
        return !j && piece(p, "model.final_layernorm.weight", 1, sh[0], 0, 0, ti->numel);
    if (sscanf(ti->name, "backbone.layers.%d.%95s", &b, rest) != 2) return 0;
    int F = c->mlp.d_ff;
    if (!strcmp(rest, "norm.weight") || !strcmp(rest, "norm2.weight")) {
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", b,
                 rest[4] == '2' ? "pre_ff_layernorm" : "input_layernorm");
        return !j && piece(p, name, 1, sh[0], 0, 0, ti->numel);
    }
    if (!strncmp(rest, "mixer.", 6)) {
        const char *leaf = rest + 6;
        int attn = leaf[1] == '_' && strchr("qkvo", leaf[0]); /* q_proj, k_proj, ... */
        snprintf(name, sizeof name, "model.layers.%d.%s.%s", b, attn ? "self_attn" : "mamba", leaf);
        if (!strcmp(leaf, "conv1d.weight")) /* (E, 1, K) in files */
            return !j && piece(p, name, 3, sh[0], 1, sh[1], ti->numel);
        return !j && piece(p, name, ti->ndim, sh[0], sh[1], sh[2], ti->numel);
    }
    const char *leaf = rest + 4; /* mlp. */
    static const char *const up_gate[2] = {"up_proj", "gate_proj"};
    if (!strcmp(leaf, "fc1.weight")) { /* [up | gate] */
        if (j >= 2) return 0;
        snprintf(name, sizeof name, "model.layers.%d.feed_forward.%s.weight", b, up_gate[j]);
        return piece(p, name, 2, F, sh[1], 0, ti->numel / 2);
    }
    if (!strcmp(leaf, "fc2.weight")) {
        snprintf(name, sizeof name, "model.layers.%d.feed_forward.down_proj.weight", b);
        return !j && piece(p, name, 2, sh[0], sh[1], 0, ti->numel);
    }
    if (!strcmp(leaf, "gate.weight")) {
        snprintf(name, sizeof name, "model.layers.%d.feed_forward.router.weight", b);
        return !j && piece(p, name, 2, sh[0], sh[1], 0, ti->numel);
    }
    int X = (int)sh[0], Fe = c->moe.d_ff;
    if (!strcmp(leaf, "experts.up_proj")) { /* (X, 2F, D): expert e's [up | gate] */
        if (j >= 2 * X) return 0;
        snprintf(name, sizeof name, "model.layers.%d.feed_forward.experts.%d.%s.weight", b, j / 2,
                 up_gate[j % 2]);
        return piece(p, name, 2, Fe, sh[2], 0, (size_t)Fe * sh[2]);
    }
    if (!strcmp(leaf, "experts.down_proj")) { /* (X, D, F) */
        if (j >= X) return 0;
        snprintf(name, sizeof name, "model.layers.%d.feed_forward.experts.%d.down_proj.weight", b, j);
        return piece(p, name, 2, sh[1], sh[2], 0, (size_t)sh[1] * sh[2]);
    }
    return 0;
}
