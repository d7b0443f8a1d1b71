/* checkpoint_hybrid.c: transformers' NemotronH config.json (NemotronHConfig, model_type
 * "nemotron_h") read and written. The tensors need no renaming: NemotronH's names
 * (backbone.layers.{i}.mixer.*, the fused experts.up_proj / down_proj) are ssm's.
 * docs/formats.md, 'Hybrid checkpoints', lists the keys. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint_json.h"

/* a key that may be absent or hold an integer >= 0 */
static ssm_status json_count(json_t *cfg, const char *cpath, const char *key, int dflt, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) return *out = dflt, SSM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > SSM_JSON_INT_MAX)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be an integer >= 0", key);
    *out = (int)json_integer_value(v);
    return SSM_OK;
}

/* the first of the names present (NemotronH's legacy mamba_* keys are its aliases) */
static const char *key_of(json_t *cfg, const char *key, const char *legacy) {
    return !json_object_get(cfg, key) && json_object_get(cfg, legacy) ? legacy : key;
}

static ssm_status float_key(json_t *cfg, const char *cpath, const char *key, float *out) {
    json_t *v = json_object_get(cfg, key);
    double x;
    ssm_status s;
    if (v && !json_is_null(v) && (s = json_float(v, cpath, key, &x))) return s;
    if (v && !json_is_null(v)) *out = (float)x;
    return SSM_OK;
}

static ssm_status refuse(const char *cpath, const char *key, const char *why) {
    return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": %s", key, why);
}

/* transformers 5 writes the layers as "layers_block_type": ["linear_attention", "moe", ...]
 * instead of the pattern string; the same letters, spelled out */
static ssm_status block_types(json_t *cfg, const char *cpath, char *pattern, size_t size) {
    json_t *list = json_object_get(cfg, "layers_block_type");
    if (!list || !json_is_array(list) || !json_array_size(list))
        return ssm_fail_file(cpath, SSM_ERR_MISSING, "no \"hybrid_override_pattern\" string nor "
                             "\"layers_block_type\" list (a NemotronHConfig needs its layer pattern)");
    static const struct { const char *name; char letter; } kinds[] = {
        {"linear_attention", 'M'}, {"mamba", 'M'}, {"full_attention", '*'}, {"attention", '*'},
        {"mlp", '-'}, {"moe", 'E'}};
    size_t n = json_array_size(list);
    if (n + 1 > size) return refuse(cpath, "layers_block_type", "more layers than ssm holds");
    for (size_t i = 0; i < n; i++) {
        const char *t = json_string_value(json_array_get(list, i));
        pattern[i] = 0;
        for (size_t k = 0; t && k < sizeof kinds / sizeof kinds[0]; k++)
            if (!strcmp(t, kinds[k].name)) pattern[i] = kinds[k].letter;
        if (!pattern[i])
            return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"layers_block_type\"[%zu] = %s: not a "
                                 "layer kind ssm has (linear_attention, full_attention, mlp, moe)",
                                 i, t ? t : "(not a string)");
    }
    pattern[n] = 0;
    return SSM_OK;
}

ssm_status ssm_json_nemotron_h(json_t *cfg, const char *cpath, ssm_config *c) {
    ssm_status s;
    json_t *pat = json_object_get(cfg, "hybrid_override_pattern");
    char listed[SSM_MAX_LAYERS + 1];
    const char *pattern = pat && json_is_string(pat) ? json_string_value(pat) : NULL;
    if (!pattern && (s = block_types(cfg, cpath, listed, sizeof listed))) return s;
    if ((s = ssm_config_set_pattern(c, pattern ? pattern : listed, SSM_LAYER_MAMBA2)))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\": %s", pattern ? "hybrid_override_pattern"
                             : "layers_block_type", ssm_last_error());
    for (int i = 0; i < c->n_layer; i++)
        if (c->second[i]) return refuse(cpath, "hybrid_override_pattern", "'+' is not a NemotronH layer");
    int n_layer = c->n_layer;
    if ((s = json_str_must(cfg, cpath, "mlp_hidden_act", "relu2")) ||
        (s = json_bool_must(cfg, cpath, "use_bias", 0, "ssm has no in_proj/out_proj biases")) ||
        (s = json_bool_must(cfg, cpath, "mamba_proj_bias", 0, "ssm has no in_proj/out_proj biases")) ||
        (s = json_bool_must(cfg, cpath, "use_conv_bias", 1, "ssm always has a conv1d bias")) ||
        (s = json_bool_must(cfg, cpath, "mamba_conv_bias", 1, "ssm always has a conv1d bias")) ||
        (s = json_bool_must(cfg, cpath, "attention_bias", 0, "ssm's attention has no biases")) ||
        (s = json_bool_must(cfg, cpath, "mlp_bias", 0, "ssm's MLP has no biases")) ||
        (s = json_str_must(cfg, cpath, "mamba_hidden_act", "silu")))
        return s;
    ssm_mamba2_config *m = &c->mamba2;
    ssm_attention_config *a = &c->attention;
    ssm_moe_config *o = &c->moe;
    int mheads, hd_default, n_shared, latent, n_group, topk_group;
    /* the defaults are NemotronHConfig's */
    if ((s = json_int(cfg, cpath, "vocab_size", 0, 131072, &c->vocab_size)) ||
        (s = json_int(cfg, cpath, "hidden_size", 0, 4096, &c->d_model)) ||
        (s = json_int(cfg, cpath, "num_hidden_layers", 0, n_layer, &c->n_layer)) ||
        (s = json_int(cfg, cpath, "ssm_state_size", 0, 128, &m->d_state)) ||
        (s = json_int(cfg, cpath, key_of(cfg, "conv_kernel", "mamba_d_conv"), 0, 4, &m->d_conv)) ||
        (s = json_int(cfg, cpath, key_of(cfg, "expand", "mamba_expand"), 0, 2, &m->expand)) ||
        (s = json_int(cfg, cpath, "mamba_head_dim", 0, 64, &m->headdim)) ||
        (s = json_int(cfg, cpath, "mamba_num_heads", 0, 128, &mheads)) ||
        (s = json_int(cfg, cpath, key_of(cfg, "n_groups", "mamba_n_groups"), 0, 8, &m->ngroups)) ||
        (s = json_int(cfg, cpath, key_of(cfg, "chunk_size", "mamba_chunk_size"), 0, 128, &m->chunk_size)) ||
        (s = json_int(cfg, cpath, "num_attention_heads", 0, 32, &a->n_heads)) ||
        (s = json_int(cfg, cpath, "num_key_value_heads", 0, 8, &a->n_kv_heads)) ||
        (s = json_int(cfg, cpath, "head_dim", 0, 128, &hd_default)) ||
        (s = json_int(cfg, cpath, "intermediate_size", 0, 21504, &c->mlp.d_ff)) ||
        (s = json_int(cfg, cpath, "n_routed_experts", 0, 8, &o->n_experts)) ||
        (s = json_int(cfg, cpath, "num_experts_per_tok", 0, 2, &o->top_k)) ||
        (s = json_int(cfg, cpath, "moe_intermediate_size", 0, 7688, &o->d_ff)) ||
        (s = json_int(cfg, cpath, "moe_shared_expert_intermediate_size", 0, 7688, &o->shared_d_ff)) ||
        (s = json_count(cfg, cpath, "n_shared_experts", 1, &n_shared)) ||
        (s = json_count(cfg, cpath, "moe_latent_size", 0, &latent)) ||
        (s = json_count(cfg, cpath, "n_group", 1, &n_group)) ||
        (s = json_count(cfg, cpath, "topk_group", 1, &topk_group)))
        return s;
    if (c->n_layer != n_layer)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"num_hidden_layers\" %d but "
                             "\"hybrid_override_pattern\" has %d layers", c->n_layer, n_layer);
    if ((long long)mheads * m->headdim != (long long)m->expand * c->d_model)
        return refuse(cpath, "mamba_num_heads", "mamba_num_heads x mamba_head_dim must be expand x "
                      "hidden_size (ssm's Mamba-2 width)");
    if (n_shared > 1) return refuse(cpath, "n_shared_experts", "ssm has at most one shared expert");
    if (latent) return refuse(cpath, "moe_latent_size", "latent MoE projections are not supported");
    if (n_group != 1 || topk_group != 1)
        return refuse(cpath, n_group != 1 ? "n_group" : "topk_group", "grouped expert selection "
                      "is not supported (1 only)");
    m->d_inner = 0, m->nheads = mheads;
    a->head_dim = hd_default, a->rotary_dim = 0; /* NemotronH's attention has no position embedding */
    c->mlp.activation = SSM_MLP_RELU2;
    o->activation = SSM_MLP_RELU2, o->routing = SSM_MOE_SIGMOID, o->aux_loss_coef = 0;
    if (!n_shared) o->shared_d_ff = 0;
    json_t *norm = json_object_get(cfg, "norm_topk_prob");
    if (norm && !json_is_boolean(norm))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"norm_topk_prob\" must be true or false");
    o->norm_topk = !norm || json_is_true(norm);
    o->routed_scaling = 1.0f;
    const char *fk[] = {"routed_scaling_factor", "layer_norm_epsilon", key_of(cfg, "time_step_min", "mamba_dt_min"),
                        key_of(cfg, "time_step_max", "mamba_dt_max"), key_of(cfg, "time_step_floor", "mamba_dt_init_floor")};
    float *fv[] = {&o->routed_scaling, &c->norm_eps, &c->dt_min, &c->dt_max, &c->dt_init_floor};
    for (int i = 0; i < 5; i++)
        if ((s = float_key(cfg, cpath, fk[i], fv[i]))) return s;
    const char *lk = key_of(cfg, "time_step_limit", "mamba_dt_limit");
    json_t *lim = json_object_get(cfg, lk);
    if (lim && !json_is_null(lim)) {
        double lo, hi;
        if (!json_is_array(lim) || json_array_size(lim) != 2)
            return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be [min, max]", lk);
        if ((s = json_float(json_array_get(lim, 0), cpath, lk, &lo)) ||
            (s = json_float(json_array_get(lim, 1), cpath, lk, &hi)))
            return s;
        m->dt_limit[0] = (float)lo, m->dt_limit[1] = (float)hi;
    }
    /* the Mamba-1 options follow d_model, so that the config saves and loads consistently */
    c->dt_rank = (c->d_model + 15) / 16;
    return json_times(cpath, "hidden_size", c->expand, c->d_model, &c->d_inner);
}

json_t *ssm_json_nemotron_h_config(const ssm_config *c, int bos_token_id) {
    char pattern[SSM_MAX_LAYERS + 1];
    int uses[SSM_LAYER_KIND_COUNT] = {0};
    for (int i = 0; i < c->n_layer; i++) {
        int k = c->layer_kind[i];
        if (c->second[i] || k == SSM_LAYER_MAMBA1 || k == SSM_LAYER_BIMAMBA) return NULL;
        pattern[i] = "?M*-E"[k];
        uses[k] = 1;
    }
    pattern[c->n_layer] = '\0';
    const ssm_moe_config *o = &c->moe;
    if (uses[SSM_LAYER_ATTENTION] && c->attention.rotary_dim) return NULL;
    if (uses[SSM_LAYER_MLP] && c->mlp.activation != SSM_MLP_RELU2) return NULL;
    if (uses[SSM_LAYER_MOE] && (o->routing != SSM_MOE_SIGMOID || o->activation != SSM_MLP_RELU2))
        return NULL;
    const ssm_mamba2_config *m = &c->mamba2;
    json_t *hi = isfinite(m->dt_limit[1]) ? json_real(m->dt_limit[1])
                                           : json_pack("{s:s}", "__float__", "Infinity");
    const ssm_attention_config *a = &c->attention;
    return json_pack("{s:[s],s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:[f,o],s:f,s:f,s:f,"
                     "s:f,s:i,s:i,s:i,s:i,s:s,s:i,s:i,s:i,s:i,s:i,s:b,s:f,s:i,s:i,s:b,s:b,s:b,s:b,"
                     "s:b,s:b,s:i}",
                     "architectures", "NemotronHForCausalLM", "model_type", "nemotron_h",
                     "hybrid_override_pattern", pattern, "vocab_size", c->vocab_size,
                     "hidden_size", c->d_model, "num_hidden_layers", c->n_layer,
                     "mamba_num_heads", m->nheads, "mamba_head_dim", m->headdim,
                     "ssm_state_size", m->d_state, "n_groups", m->ngroups, "conv_kernel", m->d_conv,
                     "chunk_size", m->chunk_size, "time_step_limit", (double)m->dt_limit[0], hi,
                     "time_step_min", (double)c->dt_min, "time_step_max", (double)c->dt_max,
                     "time_step_floor", (double)c->dt_init_floor,
                     "layer_norm_epsilon", (double)c->norm_eps,
                     "num_attention_heads", a->n_heads, "num_key_value_heads", a->n_kv_heads,
                     "head_dim", a->head_dim, "intermediate_size", c->mlp.d_ff,
                     "mlp_hidden_act", "relu2", "n_routed_experts", o->n_experts,
                     "num_experts_per_tok", o->top_k, "moe_intermediate_size", o->d_ff,
                     "moe_shared_expert_intermediate_size", o->shared_d_ff ? o->shared_d_ff : 1,
                     "n_shared_experts", o->shared_d_ff ? 1 : 0, "norm_topk_prob", o->norm_topk,
                     "routed_scaling_factor", (double)o->routed_scaling, "n_group", 1,
                     "topk_group", 1, "use_bias", 0, "use_conv_bias", 1, "attention_bias", 0,
                     "mlp_bias", 0, "tie_word_embeddings", 1, "residual_in_fp32", 1,
                     "bos_token_id", bos_token_id);
}
