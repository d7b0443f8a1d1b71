/* checkpoint_caduceus.c: Caduceus checkpoints (kuleshov-group/caduceus, transformers' layout:
 * model.safetensors + config.json with model_type "caduceus") and the ssm.* metadata of the
 * bidirectional and RCPS options. docs/genomics.md, 'Caduceus checkpoints', lists the names.
 *
 * ssm's names are Caduceus' without the "caduceus." prefix and without RCPS's wrappers:
 *   backbone.embeddings.weight           caduceus.backbone.embeddings.word_embeddings.weight
 *                                        (RCPS: ...word_embeddings.embedding.weight)
 *   backbone.layers.{i}.norm.weight      caduceus.backbone.layers.{i}.norm.weight
 *                                        (RCPS without fused add-norm: .norm.submodule.weight)
 *   backbone.layers.{i}.mixer.mamba_fwd.* caduceus.backbone.layers.{i}.mixer.mamba_fwd.*
 *                                        (RCPS: .mixer.submodule.mamba_fwd.*; mamba_rev alike)
 *   backbone.norm_f.weight               caduceus.backbone.norm_f.weight (.submodule. likewise)
 * The tied aliases (mamba_rev.in_proj/out_proj, lm_head.weight or lm_head.lm_head.weight) may
 * be stored or not; when stored they must equal what they alias. The complement_map buffers,
 * when stored, must equal config.json's map. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_json.h"
#include "ssm/checkpoint.h"

#define PREFIX "caduceus."

void ssm_format_complement(const ssm_config *c, char *out) {
    size_t o = 0;
    for (int v = 0; v < c->vocab_size; v++)
        o += (size_t)sprintf(out + o, "%s%d", v ? "," : "", c->complement[v]);
    out[o] = '\0';
}

ssm_status ssm_caduceus_from_metadata(const ssm_safetensors *st, const char *file,
                                      ssm_config *c) {
    const char *io = ssm_safetensors_meta(st, "ssm.io.bidirectional");
    const char *bi = ssm_safetensors_meta(st, "ssm.bidirectional");
    const char *rcps = ssm_safetensors_meta(st, "ssm.rcps");
    const char *map = ssm_safetensors_meta(st, "ssm.complement_map");
    c->io.bidirectional = io && !strcmp(io, "1");
    c->bidirectional = SSM_BIDIR_NONE;
    if (bi && strcmp(bi, "add") && strcmp(bi, "mul"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.bidirectional = '%s' is not add "
                             "or mul", bi);
    if (bi) c->bidirectional = strcmp(bi, "mul") ? SSM_BIDIR_ADD : SSM_BIDIR_MUL;
    if (!rcps) return SSM_OK;
    if (strcmp(rcps, "fused") && strcmp(rcps, "unfused"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.rcps = '%s' is not fused or "
                             "unfused", rcps);
    if (!map)
        return ssm_fail_file(file, SSM_ERR_MISSING, "metadata ssm.rcps without ssm.complement_map");
    int32_t comp[SSM_RCPS_MAX_VOCAB];
    int n = 0;
    for (const char *p = map; *p && n < SSM_RCPS_MAX_VOCAB; n++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v >= SSM_RCPS_MAX_VOCAB || (*end && *end != ','))
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.complement_map: entry %d is "
                                 "not a token id", n);
        comp[n] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n != c->vocab_size)
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.complement_map has %d entries for "
                             "a vocabulary of %d", n, c->vocab_size);
    ssm_config_set_rcps(c, comp);
    c->rcps_unfused = !strcmp(rcps, "unfused");
    return SSM_OK;
}

/* ---- config.json ------------------------------------------------------------------------ */

static ssm_status bool_key(json_t *cfg, const char *cpath, const char *key, int dflt, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) return *out = dflt, SSM_OK;
    if (!json_is_boolean(v))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be true or false", key);
    *out = json_is_true(v);
    return SSM_OK;
}

/* CaduceusConfig (configuration_caduceus.py): Mamba-1 mixers from ssm_cfg, the vocabulary padded
 * to pad_vocab_size_multiple and the complement map extended with identity entries, as
 * CaduceusForMaskedLM builds them. */
ssm_status ssm_json_caduceus(json_t *cfg, const char *cpath, ssm_config *c) {
    ssm_status s;
    int rms = 1, fused = 1, bidir = 1, tie = 1, rcps = 0, pad = 8, conv_bias = 1, bias = 0;
    if ((s = json_int(cfg, cpath, "d_model", 1, 0, &c->d_model)) ||
        (s = json_int(cfg, cpath, "n_layer", 1, 0, &c->n_layer)) ||
        (s = json_int(cfg, cpath, "vocab_size", 1, 0, &c->vocab_size)) ||
        (s = json_int(cfg, cpath, "pad_vocab_size_multiple", 0, 8, &pad)) ||
        (s = bool_key(cfg, cpath, "rms_norm", 1, &rms)) ||
        (s = bool_key(cfg, cpath, "fused_add_norm", 1, &fused)) ||
        (s = bool_key(cfg, cpath, "bidirectional", 1, &bidir)) ||
        (s = bool_key(cfg, cpath, "bidirectional_weight_tie", 1, &tie)) ||
        (s = bool_key(cfg, cpath, "rcps", 0, &rcps)))
        return s;
    if (!rms)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"rms_norm\": false (LayerNorm) is not "
                             "supported; ssm's norms are RMSNorm");
    if (bidir && !tie)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"bidirectional_weight_tie\": false is "
                             "not supported (the reverse mixer shares in_proj and out_proj)");
    if (c->vocab_size % pad) c->vocab_size += pad - c->vocab_size % pad;
    json_t *eps = json_object_get(cfg, "norm_epsilon");
    double e = 1e-5;
    if (eps && !json_is_null(eps) && (s = json_float(eps, cpath, "norm_epsilon", &e))) return s;
    c->norm_eps = (float)e;
    /* ssm_cfg: mamba_ssm Mamba's arguments */
    json_t *m = json_object_get(cfg, "ssm_cfg");
    if (m && !json_is_null(m) && !json_is_object(m))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"ssm_cfg\" must be an object");
    if (!m || json_is_null(m)) m = json_object();
    else json_incref(m);
    c->d_state = 16, c->d_conv = 4, c->expand = 2;
    if (!(s = json_int(m, cpath, "d_state", 0, 16, &c->d_state)) &&
        !(s = json_int(m, cpath, "d_conv", 0, 4, &c->d_conv)) &&
        !(s = json_int(m, cpath, "expand", 0, 2, &c->expand)) &&
        !(s = bool_key(m, cpath, "conv_bias", 1, &conv_bias)))
        s = bool_key(m, cpath, "bias", 0, &bias);
    json_t *r = json_object_get(m, "dt_rank");
    if (!s && r && !(json_is_string(r) && !strcmp(json_string_value(r), "auto")))
        s = json_int(m, cpath, "dt_rank", 1, 0, &c->dt_rank);
    else
        c->dt_rank = (c->d_model + 15) / 16;
    json_decref(m);
    if (s) return s;
    if (!conv_bias || bias)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"ssm_cfg\": conv_bias false or bias true "
                             "is not supported (ssm's Mamba-1 has a conv1d bias and no in_proj/"
                             "out_proj biases)");
    if ((s = json_times(cpath, "expand", c->expand, c->d_model, &c->d_inner))) return s;
    ssm_config_set_kind(c, SSM_LAYER_MAMBA1);
    if (bidir) {
        const char *how = "add";
        json_t *h = json_object_get(cfg, "bidirectional_strategy");
        if (h && !json_is_null(h)) how = json_is_string(h) ? json_string_value(h) : "";
        if (strcmp(how, "add") && strcmp(how, "ew_multiply"))
            return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"bidirectional_strategy\" must be "
                                 "\"add\" or \"ew_multiply\"");
        ssm_config_set_bidirectional(c, strcmp(how, "add") ? SSM_BIDIR_MUL : SSM_BIDIR_ADD);
    }
    if (!rcps) return SSM_OK;
    if (c->vocab_size > SSM_RCPS_MAX_VOCAB)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"rcps\": a vocabulary of %d is more "
                             "than the %d tokens of a complement map", c->vocab_size,
                             SSM_RCPS_MAX_VOCAB);
    int32_t comp[SSM_RCPS_MAX_VOCAB];
    for (int v = 0; v < SSM_RCPS_MAX_VOCAB; v++) comp[v] = v;
    json_t *map = json_object_get(cfg, "complement_map");
    if (!json_is_object(map))
        return ssm_fail_file(cpath, SSM_ERR_MISSING, "\"rcps\": true needs \"complement_map\" "
                             "(token id -> its complement)");
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        char *end;
        long k = strtol(key, &end, 10);
        if (*end || end == key || k < 0 || k >= c->vocab_size || !json_is_integer(val) ||
            json_integer_value(val) < 0 || json_integer_value(val) >= c->vocab_size)
            return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"complement_map\": \"%s\" is not a "
                                 "token id mapped to a token id", key);
        comp[k] = (int32_t)json_integer_value(val);
    }
    ssm_config_set_rcps(c, comp);
    c->rcps_unfused = !fused;
    return SSM_OK;
}

/* ---- tensor names ----------------------------------------------------------------------- */

int ssm_caduceus_file(const ssm_safetensors *st) {
    for (int i = 0; i < ssm_safetensors_count(st); i++)
        if (!strncmp(ssm_safetensors_tensor(st, i)->name, PREFIX, sizeof PREFIX - 1)) return 1;
    return 0;
}

/* the first candidate the file holds, else the first */
static const char *pick(const ssm_safetensors *st, char cand[][256], int n) {
    for (int i = 0; i < n; i++)
        if (ssm_safetensors_find(st, cand[i])) return cand[i];
    return cand[0];
}

const char *ssm_caduceus_name(const ssm_safetensors *st, const char *ours, char *out,
                              size_t size) {
    char cand[2][256];
    int layer, k = 0;
    const char *rest;
    if (!strcmp(ours, "backbone.embeddings.weight")) {
        snprintf(cand[0], 256, PREFIX "backbone.embeddings.word_embeddings.weight");
        snprintf(cand[1], 256, PREFIX "backbone.embeddings.word_embeddings.embedding.weight");
    } else if (!strcmp(ours, "backbone.norm_f.weight")) {
        snprintf(cand[0], 256, PREFIX "backbone.norm_f.weight");
        snprintf(cand[1], 256, PREFIX "backbone.norm_f.submodule.weight");
    } else if (sscanf(ours, "backbone.layers.%d.%n", &layer, &k) == 1 && k > 0) {
        rest = ours + k;
        if (!strcmp(rest, "norm.weight")) {
            snprintf(cand[0], 256, PREFIX "backbone.layers.%d.norm.weight", layer);
            snprintf(cand[1], 256, PREFIX "backbone.layers.%d.norm.submodule.weight", layer);
        } else if (!strncmp(rest, "mixer.", 6)) {
            rest += 6; /* a causal Mamba-1 layer is Caduceus' mamba_fwd alone */
            const char *dir = strncmp(rest, "mamba_fwd.", 10) && strncmp(rest, "mamba_rev.", 10)
                                  ? "mamba_fwd." : "";
            snprintf(cand[0], 256, PREFIX "backbone.layers.%d.mixer.%s%s", layer, dir, rest);
            snprintf(cand[1], 256, PREFIX "backbone.layers.%d.mixer.submodule.%s%s", layer, dir,
                     rest);
        } else {
            snprintf(out, size, "%s", ours);
            return out;
        }
    } else {
        snprintf(out, size, "%s", ours);
        return out;
    }
    snprintf(out, size, "%s", pick(st, cand, 2));
    return out;
}

/* What a stored alias or buffer stands for: the tensor of ours it must equal (in `target`),
 * or "complement" for a complement_map buffer; 0 when the name is neither. */
static int alias_of(const char *name, char *target, size_t size) {
    int layer, k = 0;
    if (!strcmp(name, "lm_head.weight") || !strcmp(name, "lm_head.lm_head.weight")) {
        snprintf(target, size, "backbone.embeddings.weight");
        return 1;
    }
    if (!strcmp(name, "lm_head.complement_map") ||
        !strcmp(name, PREFIX "backbone.embeddings.word_embeddings.complement_map")) {
        snprintf(target, size, "complement");
        return 1;
    }
    if (sscanf(name, PREFIX "backbone.layers.%d.mixer.%n", &layer, &k) == 1 && k > 0) {
        const char *rest = name + k;
        if (!strncmp(rest, "submodule.", 10)) rest += 10;
        if (!strcmp(rest, "mamba_rev.in_proj.weight") || !strcmp(rest, "mamba_rev.out_proj.weight")) {
            snprintf(target, size, "backbone.layers.%d.mixer.mamba_fwd.%s", layer, rest + 10);
            return 1;
        }
    }
    return 0;
}

int ssm_caduceus_alias(const char *name) {
    char target[256];
    return alias_of(name, target, sizeof target);
}

ssm_status ssm_caduceus_check_aliases(const ssm_safetensors *st, const char *file,
                                      const ssm_model *m) {
    const ssm_config *c = &m->config;
    for (int i = 0; i < ssm_safetensors_count(st); i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        char target[256];
        if (!alias_of(t->name, target, sizeof target)) continue;
        if (!strcmp(target, "complement")) {
            int32_t map[SSM_RCPS_MAX_VOCAB];
            if (!c->rcps)
                return ssm_fail_file(file, SSM_ERR_FORMAT, "tensor %s: a complement map, but "
                                     "config.json has no \"rcps\": true", t->name);
            if (t->numel != (size_t)c->vocab_size)
                return ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s has %zu entries for a "
                                     "vocabulary of %d", t->name, t->numel, c->vocab_size);
            ssm_status s = ssm_safetensors_read_i32(st, t->name, map, t->numel);
            if (s) return s;
            for (int v = 0; v < c->vocab_size; v++)
                if (map[v] != c->complement[v])
                    return ssm_fail_file(file, SSM_ERR_FORMAT, "tensor %s maps %d to %d, "
                                         "config.json's complement_map to %d", t->name, v, map[v],
                                         c->complement[v]);
            continue;
        }
        const ssm_tensor_info *ti = ssm_model_find_tensor(m, target);
        if (!ti || t->numel != ti->numel)
            return ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s does not match %s, which it is "
                                 "tied to", t->name, target);
        float *x = malloc(ti->numel * sizeof *x);
        if (!x) return ssm_fail_file(file, SSM_ERR_NOMEM, "out of memory reading %s", t->name);
        ssm_status s = ssm_safetensors_read_f32(st, t->name, x, ti->numel);
        const float *want = m->params_blob + ti->offset;
        double max_w = 0, max_d = 0;
        for (size_t j = 0; j < ti->numel && !s; j++) {
            max_w = fmax(max_w, fabs(want[j]));
            max_d = fmax(max_d, isnan(x[j]) ? INFINITY : fabs((double)x[j] - want[j]));
        }
        free(x);
        if (s) return s;
        if (max_d > 1e-2 * max_w) /* loose: another precision still passes */
            return ssm_fail_file(file, SSM_ERR_UNSUPPORTED, "tensor %s differs from %s (by up to "
                                 "%g): ssm ties them", t->name, target, max_d);
    }
    return SSM_OK;
}
