/* checkpoint_mamba_ssm.c: mamba_ssm's MixerModel hybrids (MambaConfig of mamba_ssm, no
 * model_type: d_model, n_layer, vocab_size, ssm_cfg, attn_layer_idx, attn_cfg,
 * d_intermediate) read and written, with its names.
 *   layer i: mixer = MHA(**attn_cfg) if i in attn_layer_idx, else ssm_cfg["layer"] (Mamba1 or
 *            Mamba2) with the rest of ssm_cfg; with d_intermediate > 0 every block also has
 *            norm2 + mlp = GatedMLP(hidden = d_intermediate rounded up to 128): ssm's pattern
 *            "M+-*+-..." (the MLP as the block's second sublayer).
 * The names are ssm's except two: the embedding is backbone.embedding.weight, and the MHA
 * mixer holds q, k, v stacked in mixer.in_proj.weight ((H + 2 Hkv) hd, D), rows [q | k | v],
 * with mixer.out_proj.weight for ssm's o_proj. docs/formats.md, 'Hybrid checkpoints'. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint_json.h"

enum { MLP_MULTIPLE = 128 }; /* GatedMLP's multiple_of */

static ssm_status refuse(const char *cpath, const char *key, const char *why) {
    return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": %s", key, why);
}

/* a boolean whose mamba_ssm default (dflt) may differ from the one value ssm holds (want) */
static ssm_status bool_is(json_t *o, const char *cpath, const char *key, int dflt, int want,
                          const char *why) {
    json_t *v = json_object_get(o, key);
    if (v && !json_is_boolean(v))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be true or false", key);
    int value = v ? json_is_true(v) : dflt;
    if (value != want)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\" is %s%s, ssm holds %s only (%s)",
                             key, value ? "true" : "false", v ? "" : " (mamba_ssm's default)",
                             want ? "true" : "false", why);
    return SSM_OK;
}

/* every key of o is one of these (NULL-terminated) */
static ssm_status known_keys(json_t *o, const char *cpath, const char *what,
                             const char *const *keys) {
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        int k = 0;
        while (keys[k] && strcmp(keys[k], key)) k++;
        if (!keys[k])
            return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\".\"%s\": not an option ssm "
                                 "holds", what, key);
    }
    return SSM_OK;
}

static ssm_status float_pair(json_t *o, const char *cpath, const char *key, float out[2]) {
    json_t *v = json_object_get(o, key);
    double a, b;
    ssm_status s;
    if (!v || json_is_null(v)) return SSM_OK;
    if (!json_is_array(v) || json_array_size(v) != 2)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be [min, max]", key);
    if ((s = json_float(json_array_get(v, 0), cpath, key, &a)) ||
        (s = json_float(json_array_get(v, 1), cpath, key, &b)))
        return s;
    out[0] = (float)a, out[1] = (float)b;
    return SSM_OK;
}

static ssm_status float_of(json_t *o, const char *cpath, const char *key, float *out) {
    json_t *v = json_object_get(o, key);
    double x;
    ssm_status s;
    if (!v || json_is_null(v)) return SSM_OK;
    if ((s = json_float(v, cpath, key, &x))) return s;
    *out = (float)x;
    return SSM_OK;
}

/* ssm_cfg: Mamba1 (mamba_ssm's Mamba) or Mamba2 and their options */
static ssm_status read_ssm_cfg(json_t *cfg, const char *cpath, ssm_config *c, int *mamba) {
    static const char *const keys[] = {
        "layer", "d_state", "d_conv", "expand", "dt_rank", "headdim", "ngroups", "chunk_size",
        "dt_limit", "A_init_range", "dt_min", "dt_max", "dt_init_floor", "dt_init", "dt_scale",
        "bias", "conv_bias", "rmsnorm", "norm_before_gate", "D_has_hdim", "d_ssm",
        "learnable_init_states", "activation", "use_fast_path", "use_mem_eff_path", NULL};
    json_t *o = json_object_get(cfg, "ssm_cfg");
    ssm_status s;
    if (o && !json_is_object(o)) return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"ssm_cfg\" must be an object");
    json_t *empty = json_object();
    if (!o) o = empty;
    const char *layer = json_string_value(json_object_get(o, "layer"));
    *mamba = !layer || !strcmp(layer, "Mamba1") ? SSM_LAYER_MAMBA1 : !strcmp(layer, "Mamba2")
                                                                       ? SSM_LAYER_MAMBA2 : -1;
    if (*mamba < 0) s = refuse(cpath, "layer", "ssm_cfg's layer must be Mamba1 or Mamba2");
    else s = known_keys(o, cpath, "ssm_cfg", keys);
    if (!s) s = bool_is(o, cpath, "bias", 0, 0, "ssm has no in_proj/out_proj biases");
    if (!s) s = bool_is(o, cpath, "conv_bias", 1, 1, "ssm always has a conv1d bias");
    const char *act = json_string_value(json_object_get(o, "activation"));
    if (!s && act && strcmp(act, "silu") && strcmp(act, "swish"))
        s = refuse(cpath, "activation", "silu only");
    const char *fk[] = {"dt_min", "dt_max", "dt_init_floor"};
    float *fv[] = {&c->dt_min, &c->dt_max, &c->dt_init_floor};
    for (int i = 0; i < 3 && !s; i++) s = float_of(o, cpath, fk[i], fv[i]);
    if (!s && *mamba == SSM_LAYER_MAMBA1) {
        json_t *r = json_object_get(o, "dt_rank");
        if ((s = json_int(o, cpath, "d_state", 0, 16, &c->d_state)) ||
            (s = json_int(o, cpath, "d_conv", 0, 4, &c->d_conv)) ||
            (s = json_int(o, cpath, "expand", 0, 2, &c->expand)))
            goto out;
        if (r && !(json_is_string(r) && !strcmp(json_string_value(r), "auto")) &&
            (s = json_int(o, cpath, "dt_rank", 1, 0, &c->dt_rank)))
            goto out;
        if (!r || json_is_string(r)) c->dt_rank = (c->d_model + 15) / 16;
        for (int i = 5; i < 10 && !s; i++) /* headdim .. A_init_range: Mamba2's */
            if (json_object_get(o, keys[i]))
                s = refuse(cpath, keys[i], "a Mamba2 option in a Mamba1 ssm_cfg");
    } else if (!s) {
        ssm_mamba2_config *m = &c->mamba2;
        if ((s = json_int(o, cpath, "d_state", 0, 128, &m->d_state)) ||
            (s = json_int(o, cpath, "d_conv", 0, 4, &m->d_conv)) ||
            (s = json_int(o, cpath, "expand", 0, 2, &m->expand)) ||
            (s = json_int(o, cpath, "headdim", 0, 64, &m->headdim)) ||
            (s = json_int(o, cpath, "ngroups", 0, 1, &m->ngroups)) ||
            (s = json_int(o, cpath, "chunk_size", 0, 256, &m->chunk_size)) ||
            (s = float_pair(o, cpath, "dt_limit", m->dt_limit)) ||
            (s = float_pair(o, cpath, "A_init_range", m->A_init)) ||
            (s = bool_is(o, cpath, "rmsnorm", 1, 1, "the gated RMSNorm is always applied")) ||
            (s = bool_is(o, cpath, "norm_before_gate", 0, 0, "ssm gates before the norm")) ||
            (s = bool_is(o, cpath, "D_has_hdim", 0, 0, "D is one value per head")) ||
            (s = bool_is(o, cpath, "learnable_init_states", 0, 0, "states start at zero")))
            goto out;
        json_t *d_ssm = json_object_get(o, "d_ssm");
        if (d_ssm && !json_is_null(d_ssm) &&
            json_integer_value(d_ssm) != (json_int_t)m->expand * c->d_model)
            s = refuse(cpath, "d_ssm", "the SSM spans the whole d_inner (null only)");
        m->d_inner = 0, m->nheads = 0;
    }
out:
    json_decref(empty);
    return s;
}

/* attn_cfg: mamba_ssm's MHA; its defaults (causal false, biases true) must be overridden */
static ssm_status read_attn_cfg(json_t *cfg, const char *cpath, ssm_config *c) {
    static const char *const keys[] = {
        "num_heads", "num_heads_kv", "head_dim", "rotary_emb_dim", "rotary_emb_base",
        "rotary_emb_interleaved", "causal", "qkv_proj_bias", "out_proj_bias", "d_conv",
        "mlp_dim", "softmax_scale", NULL};
    json_t *o = json_object_get(cfg, "attn_cfg");
    ssm_status s;
    if (!o || !json_is_object(o))
        return ssm_fail_file(cpath, SSM_ERR_MISSING, "\"attn_layer_idx\" lists layers but there "
                             "is no \"attn_cfg\" object");
    ssm_attention_config *a = &c->attention;
    int d_conv, mlp_dim;
    double base = 10000.0;
    json_t *sc = json_object_get(o, "softmax_scale"), *b = json_object_get(o, "rotary_emb_base");
    if ((s = known_keys(o, cpath, "attn_cfg", keys)) ||
        (s = json_int(o, cpath, "num_heads", 1, 0, &a->n_heads)) ||
        (s = json_int(o, cpath, "num_heads_kv", 0, a->n_heads, &a->n_kv_heads)) ||
        (s = json_int(o, cpath, "head_dim", 0, c->d_model / a->n_heads, &a->head_dim)) ||
        (s = json_int_from(o, cpath, "rotary_emb_dim", 0, 0, &a->rotary_dim)) ||
        (s = json_int_from(o, cpath, "d_conv", 0, 0, &d_conv)) ||
        (s = json_int_from(o, cpath, "mlp_dim", 0, 0, &mlp_dim)) ||
        (b && (s = json_float(b, cpath, "rotary_emb_base", &base))) ||
        (s = bool_is(o, cpath, "causal", 0, 1, "ssm's attention is causal")) ||
        (s = bool_is(o, cpath, "qkv_proj_bias", 1, 0, "ssm's attention has no biases")) ||
        (s = bool_is(o, cpath, "out_proj_bias", 1, 0, "ssm's attention has no biases")) ||
        (s = bool_is(o, cpath, "rotary_emb_interleaved", 0, 0, "ssm's RoPE is GPT-NeoX style")))
        return s;
    if (d_conv) return refuse(cpath, "d_conv", "the attention's qkv conv is not supported (0 only)");
    if (mlp_dim) return refuse(cpath, "mlp_dim", "the MHA's fused MLP is not supported (0 only)");
    if (sc && !json_is_null(sc)) return refuse(cpath, "softmax_scale", "1 / sqrt(head_dim) only (null)");
    a->rope_base = (float)base;
    return SSM_OK;
}

ssm_status ssm_json_mamba_ssm(json_t *cfg, const char *cpath, ssm_config *c) {
    static const char *const keys[] = {
        "d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx",
        "attn_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple",
        "tie_embeddings", NULL};
    ssm_status s;
    int n, d_int, pad = 8, mamba = SSM_LAYER_MAMBA1;
    if ((s = known_keys(cfg, cpath, "config", keys)) ||
        (s = json_int(cfg, cpath, "d_model", 1, 0, &c->d_model)) ||
        (s = json_int(cfg, cpath, "n_layer", 1, 0, &n)) ||
        (s = json_int(cfg, cpath, "vocab_size", 1, 0, &c->vocab_size)) ||
        (s = json_int_from(cfg, cpath, "d_intermediate", 0, 0, &d_int)) ||
        (s = json_int(cfg, cpath, "pad_vocab_size_multiple", 0, 8, &pad)) ||
        (s = bool_is(cfg, cpath, "rms_norm", 1, 1, "ssm's norms are RMSNorms")) ||
        (s = bool_is(cfg, cpath, "tie_embeddings", 1, 1, "the LM head is the embedding")))
        return s;
    c->norm_eps = 1e-5f; /* MixerModel's norm_epsilon, which MambaConfig does not set */
    if (2 * n > SSM_MAX_LAYERS) return refuse(cpath, "n_layer", "more layers than ssm holds");
    /* MambaLMHeadModel pads the vocabulary up to the multiple */
    c->vocab_size = (c->vocab_size + pad - 1) / pad * pad;
    if ((s = read_ssm_cfg(cfg, cpath, c, &mamba))) return s;
    char attn[SSM_MAX_LAYERS] = {0};
    json_t *idx = json_object_get(cfg, "attn_layer_idx");
    if (idx && !json_is_array(idx))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"attn_layer_idx\" must be a list");
    for (size_t k = 0; idx && k < json_array_size(idx); k++) {
        json_t *v = json_array_get(idx, k);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= n)
            return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"attn_layer_idx\"[%zu] is not a layer "
                                 "index in [0, %d)", k, n);
        attn[json_integer_value(v)] = 1;
    }
    if (idx && json_array_size(idx) && (s = read_attn_cfg(cfg, cpath, c))) return s;
    char pattern[3 * SSM_MAX_LAYERS + 1], *p = pattern;
    for (int i = 0; i < n; i++) {
        *p++ = attn[i] ? '*' : 'M';
        if (d_int) *p++ = '+', *p++ = '-';
    }
    *p = '\0';
    if ((s = ssm_config_set_pattern(c, pattern, (ssm_layer_kind)mamba)))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "the layer layout: %s", ssm_last_error());
    c->mlp = (ssm_mlp_config){(d_int + MLP_MULTIPLE - 1) / MLP_MULTIPLE * MLP_MULTIPLE,
                              SSM_MLP_SWIGLU};
    if (!d_int) c->mlp.d_ff = 4 * c->d_model; /* unused */
    return json_times(cpath, "expand", c->expand, c->d_model, &c->d_inner);
}

/* The MixerModel layout: [mixer (+ MLP)] blocks, the mixers one Mamba kind or attention, the
 * MLP (swiglu, a multiple of 128) in every block or in none; mamba_ssm's own options only. */
int ssm_mamba_ssm_layout(const ssm_config *c) {
    int mamba = -1, mlp = -1, attn = 0;
    for (int i = 0; i < c->n_layer; i++) {
        int k = c->layer_kind[i];
        if (c->second[i]) continue;
        int has = i + 1 < c->n_layer && c->second[i + 1];
        if (mlp >= 0 && has != mlp) return 0;
        mlp = has;
        if (has && c->layer_kind[i + 1] != SSM_LAYER_MLP) return 0;
        if (k == SSM_LAYER_ATTENTION) attn = 1;
        else if (k != SSM_LAYER_MAMBA1 && k != SSM_LAYER_MAMBA2) return 0;
        else if (mamba >= 0 && k != mamba) return 0;
        else mamba = k;
    }
    if (mamba < 0 || (!attn && !mlp)) return 0; /* pure Mamba: transformers' own configs */
    if (c->norm_eps != 1e-5f) return 0;           /* MixerModel's, fixed */
    if (mamba == SSM_LAYER_MAMBA1 && (c->non_selective || c->inner_norms)) return 0;
    if (mlp && (c->mlp.activation != SSM_MLP_SWIGLU || c->mlp.d_ff % MLP_MULTIPLE)) return 0;
    const ssm_mamba2_config *m = &c->mamba2;
    if (mamba == SSM_LAYER_MAMBA2 && !isfinite(m->dt_limit[1]) && m->dt_limit[0] != 0) return 0;
    json_t *nh = ssm_json_nemotron_h_config(c, 0); /* a NemotronH model keeps ssm's names */
    json_decref(nh);
    return !nh;
}

json_t *ssm_json_mamba_ssm_config(const ssm_config *c) {
    if (!ssm_mamba_ssm_layout(c)) return NULL;
    json_t *idx = json_array(), *ssm_cfg, *attn_cfg = json_object();
    int block = 0, mamba = SSM_LAYER_MAMBA1, mlp = 0;
    for (int i = 0; i < c->n_layer; i++) {
        if (c->second[i]) { mlp = 1; continue; }
        if (c->layer_kind[i] == SSM_LAYER_ATTENTION) json_array_append_new(idx, json_integer(block));
        else mamba = c->layer_kind[i];
        block++;
    }
    const ssm_mamba2_config *m = &c->mamba2;
    if (mamba == SSM_LAYER_MAMBA1)
        ssm_cfg = json_pack("{s:s,s:i,s:i,s:i,s:i}", "layer", "Mamba1", "d_state", c->d_state,
                            "d_conv", c->d_conv, "expand", c->expand, "dt_rank", c->dt_rank);
    else
        ssm_cfg = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:[f,f]}", "layer", "Mamba2",
                            "d_state", m->d_state, "d_conv", m->d_conv, "expand", m->expand,
                            "headdim", m->headdim, "ngroups", m->ngroups, "chunk_size",
                            m->chunk_size, "A_init_range", (double)m->A_init[0], (double)m->A_init[1]);
    if (ssm_cfg && mamba == SSM_LAYER_MAMBA2 && isfinite(m->dt_limit[1]))
        json_object_set_new(ssm_cfg, "dt_limit", json_pack("[f,f]", (double)m->dt_limit[0],
                                                           (double)m->dt_limit[1]));
    if (json_array_size(idx)) {
        const ssm_attention_config *a = &c->attention;
        json_decref(attn_cfg);
        attn_cfg = json_pack("{s:i,s:i,s:i,s:i,s:f,s:b,s:b,s:b}", "num_heads", a->n_heads,
                             "num_heads_kv", a->n_kv_heads, "head_dim", a->head_dim,
                             "rotary_emb_dim", a->rotary_dim, "rotary_emb_base", (double)a->rope_base,
                             "causal", 1, "qkv_proj_bias", 0, "out_proj_bias", 0);
    }
    return json_pack("{s:i,s:i,s:i,s:i,s:o,s:o,s:o,s:b,s:b,s:b,s:i,s:b}", "d_model", c->d_model,
                     "d_intermediate", mlp ? c->mlp.d_ff : 0, "n_layer", block, "vocab_size",
                     c->vocab_size, "ssm_cfg", ssm_cfg, "attn_layer_idx", idx, "attn_cfg", attn_cfg,
                     "rms_norm", 1, "residual_in_fp32", 1, "fused_add_norm", 1,
                     "pad_vocab_size_multiple", 1, "tie_embeddings", 1);
}

int ssm_mamba_ssm_piece(const ssm_config *c, const ssm_tensor_info *ti, int j, ssm_file_piece *p) {
    if (j) return 0;
    const char *name = ti->name;
    const ssm_attention_config *a = &c->attention;
    const int64_t *sh = ti->shape;
    p->from = 0, p->count = ti->numel, p->ndim = ti->ndim;
    memcpy(p->shape, sh, sizeof p->shape);
    size_t n = strlen(name), nc = strlen("mixer.conv1d.weight");
    /* backbone.layers.{i}.mixer.{q,k,v}_proj.weight: rows of in_proj [q | k | v] */
    const char *proj = n > 20 ? strstr(name, ".mixer.") : NULL;
    if (!strcmp(name, "backbone.embeddings.weight")) {
        snprintf(p->name, sizeof p->name, "backbone.embedding.weight");
        return 1;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    if (proj && strlen(proj) == strlen(".mixer.q_proj.weight") && proj[8] == '_' &&
        strchr("qkvo", proj[7])) {
        int64_t D = c->d_model, H = a->n_heads, Hkv = a->n_kv_heads, hd = a->head_dim;
        char what = proj[7];
        snprintf(p->name, sizeof p->name, "%.*s.mixer.%s.weight", (int)(proj - name), name,
                 what == 'o' ? "out_proj" : "in_proj");
        if (what != 'o') {
            p->shape[0] = (H + 2 * Hkv) * hd, p->shape[1] = D;
            p->from = (size_t)(what == 'q' ? 0 : what == 'k' ? H : H + Hkv) * hd * D;
        }
    } else if (n > nc && !strcmp(name + n - nc, "mixer.conv1d.weight")) {
        p->ndim = 3, p->shape[1] = 1, p->shape[2] = sh[1]; /* (C, 1, K) in files */
    }
    return 1;
}
