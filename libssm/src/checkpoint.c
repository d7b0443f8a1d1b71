/* checkpoint.c: model checkpoints and optimizer state as safetensors files.
 *
 * A model checkpoint holds the tensors of model->tensors under the Hugging Face Mamba names,
 * conv1d.weight shaped (E, 1, K) as transformers writes it, and the config as ssm.* metadata.
 * Loading also accepts what transformers' save_pretrained writes: no ssm.* metadata and a
 * config.json beside model.safetensors. A loaded vocabulary is never padded (the embedding
 * keeps the rows the file has). lm_head.weight may be absent (tied); when present it must
 * have the embedding's shape and, within 1% of the embedding's largest value, its values,
 * because we always tie the head to the embedding and an untied head would silently give
 * other scores. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "ssm/checkpoint.h"
#include "checkpoint_json.h"

#define LM_HEAD "lm_head.weight"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* conv1d.weight is (E, K) in memory and (E, 1, K) in files, as torch's Conv1d stores it. */
static int is_conv_weight(const char *name) { return ends_with(name, ".conv1d.weight"); }

static int file_shape(const ssm_tensor_info *ti, int64_t shape[8]) {
    memset(shape, 0, 8 * sizeof *shape);
    if (is_conv_weight(ti->name)) {
        shape[0] = ti->shape[0], shape[1] = 1, shape[2] = ti->shape[1];
        return 3;
    }
    for (int d = 0; d < ti->ndim; d++) shape[d] = ti->shape[d];
    return ti->ndim;
}

static int same_shape(const ssm_st_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return 0;
    return 1;
}

static int is_float(ssm_dtype d) {
    return d == SSM_DTYPE_F32 || d == SSM_DTYPE_F16 || d == SSM_DTYPE_BF16 || d == SSM_DTYPE_F64;
}

/* ---- saving ------------------------------------------------------------------------------ */

static size_t numel_of(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    return n;
}


/* Number of strings before the NULL that ends a key/value list. */
static int kv_len(const char *const *kv) {
    int n = 0;
    while (kv && kv[n]) n++;
    return n;
}

/* The config as ssm.* metadata key/values (malloc'd strings in kv[0..*n)). The Mamba-1 keys
 * always; ssm.layers (the kinds, comma-separated) and the Mamba-2 keys when a layer is not
 * Mamba-1. */
enum { META_MAX = 48 }; /* key/value pairs: every kind and io at once is 44 */

static int uses_kind(const ssm_config *c, ssm_layer_kind kind) {
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == kind) return 1;
    return 0;
}
static ssm_status config_metadata(const ssm_config *c, char *kv[2 * META_MAX], int *n) {
    char buf[64];
    *n = 0;
#define PUT(key, ...)                                                   \
    do {                                                                \
        snprintf(buf, sizeof buf, __VA_ARGS__);                         \
        kv[2 * *n] = strdup(key), kv[2 * *n + 1] = strdup(buf), (*n)++; \
    } while (0)
    PUT("format", "pt"); /* what transformers expects to find */
    PUT("ssm.vocab_size", "%d", c->vocab_size);
    PUT("ssm.d_model", "%d", c->d_model);
    PUT("ssm.n_layer", "%d", c->n_layer);
    PUT("ssm.d_state", "%d", c->d_state);
    PUT("ssm.d_conv", "%d", c->d_conv);
    PUT("ssm.expand", "%d", c->expand);
    PUT("ssm.dt_rank", "%d", c->dt_rank);
    PUT("ssm.d_inner", "%d", c->d_inner);
    PUT("ssm.norm_eps", "%.9g", (double)c->norm_eps);
    if (c->non_selective) PUT("ssm.selective", "false"); /* absent: selective, the default */
    if (c->inner_norms) PUT("ssm.inner_norms", "true");  /* absent: none, mamba_ssm's Mamba */
    if (uses_kind(c, SSM_LAYER_ATTENTION)) {
        const ssm_attention_config *a = &c->attention;
        PUT("ssm.attention.n_heads", "%d", a->n_heads);
        PUT("ssm.attention.n_kv_heads", "%d", a->n_kv_heads);
        PUT("ssm.attention.head_dim", "%d", a->head_dim);
        PUT("ssm.attention.rotary_dim", "%d", a->rotary_dim);
        PUT("ssm.attention.rope_base", "%.9g", (double)a->rope_base);
        PUT("ssm.attention.max_context", "%d", a->max_context);
    }
    if (uses_kind(c, SSM_LAYER_MLP)) {
        PUT("ssm.mlp.d_ff", "%d", c->mlp.d_ff);
        PUT("ssm.mlp.activation", "%s", c->mlp.activation == SSM_MLP_SWIGLU ? "swiglu" : "relu2");
    }
    if (uses_kind(c, SSM_LAYER_MOE)) {
        const ssm_moe_config *o = &c->moe;
        PUT("ssm.moe.n_experts", "%d", o->n_experts);
        PUT("ssm.moe.top_k", "%d", o->top_k);
        PUT("ssm.moe.d_ff", "%d", o->d_ff);
        PUT("ssm.moe.shared_d_ff", "%d", o->shared_d_ff);
        PUT("ssm.moe.norm_topk", "%d", o->norm_topk);
        PUT("ssm.moe.activation", "%s", o->activation == SSM_MLP_SWIGLU ? "swiglu" : "relu2");
        PUT("ssm.moe.routing", "%s", o->routing == SSM_MOE_SIGMOID ? "sigmoid" : "softmax");
        PUT("ssm.moe.routed_scaling", "%.9g", (double)o->routed_scaling);
        PUT("ssm.moe.aux_loss_coef", "%.9g", (double)o->aux_loss_coef);
    }
    if (uses_kind(c, SSM_LAYER_MAMBA2)) {
        const ssm_mamba2_config *m = &c->mamba2;
        PUT("ssm.mamba2.d_state", "%d", m->d_state);
        PUT("ssm.mamba2.d_conv", "%d", m->d_conv);
        PUT("ssm.mamba2.expand", "%d", m->expand);
        PUT("ssm.mamba2.headdim", "%d", m->headdim);
        PUT("ssm.mamba2.ngroups", "%d", m->ngroups);
        PUT("ssm.mamba2.chunk_size", "%d", m->chunk_size);
        PUT("ssm.mamba2.dt_limit_min", "%.9g", (double)m->dt_limit[0]);
        PUT("ssm.mamba2.dt_limit_max", "%.9g", (double)m->dt_limit[1]);
    }
    const ssm_io_config *io = &c->io;
    if (!ssm_io_is_lm(c)) { /* ssm_io_config's fields as integers (ssm.h's enums) */
        PUT("ssm.io.features", "%d", io->features);
        PUT("ssm.io.patch", "%d", io->patch);
        PUT("ssm.io.head", "%d", (int)io->head);
        PUT("ssm.io.outputs", "%d", io->outputs);
        PUT("ssm.io.pool", "%d", (int)io->pool);
        PUT("ssm.io.loss", "%d", (int)io->loss);
        if (io->bidirectional) PUT("ssm.io.bidirectional", "1");
    }
    const ssm_patch_config *pc = &c->patch; /* the patch encoder (absent: none) */
    if (pc->kind == SSM_PATCH_POINTNET) {
        PUT("ssm.patch", "pointnet");
        PUT("ssm.patch.widths", "%d,%d,%d", pc->widths[0], pc->widths[1], pc->widths[2]);
        PUT("ssm.patch.order", "%s", pc->score_order ? "score" : "input");
        PUT("ssm.patch.reading", "%s", pc->both ? "both" : "forward");
        if (pc->attention) PUT("ssm.patch.attention", "1"); /* absent: none (older files) */
    }
    /* Caduceus' options (absent: causal) */
    if (c->bidirectional) PUT("ssm.bidirectional", "%s", c->bidirectional == SSM_BIDIR_MUL ? "mul" : "add");
    if (c->rcps) {
        PUT("ssm.rcps", "%s", c->rcps_unfused ? "unfused" : "fused");
        char *map = malloc((size_t)c->vocab_size * 4 + 1);
        if (map) ssm_format_complement(c, map);
        kv[2 * *n] = strdup("ssm.complement_map"), kv[2 * *n + 1] = map, (*n)++;
    }
#undef PUT
    /* the kinds, one name per layer */
    size_t len = 1;
    for (int i = 0; i < c->n_layer; i++) len += strlen(ssm_layer_kind_name(c->layer_kind[i])) + 2;
    char *layers = malloc(len);
    if (layers) { /* a block's second sublayer: "+mlp" */
        layers[0] = '\0';
        for (int i = 0; i < c->n_layer; i++) {
            if (i) strcat(layers, ",");
            if (c->second[i]) strcat(layers, "+");
            strcat(layers, ssm_layer_kind_name(c->layer_kind[i]));
        }
    }
    kv[2 * *n] = strdup("ssm.layers"), kv[2 * *n + 1] = layers, (*n)++;
    for (int i = 0; i < 2 * *n; i++)
        if (!kv[i]) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the metadata");
    return SSM_OK;
}

/* The stored tensors of another layout's names (ssm_file_piece), each assembled from its pieces
 * into bufs (one allocation per stored tensor, freed by the caller); *n_items of them. */
static ssm_status piece_items(const ssm_model *m, ssm_file_names names, ssm_st_write_item **out,
                              float ***bufs, int *n_items) {
    ssm_file_piece p;
    int cap = 0, n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        for (int j = 0; m->tensors[i].numel && ssm_file_piece_of(names, &m->config, &m->tensors[i], j, &p); j++)
            cap++;
    *out = NULL, *bufs = NULL, *n_items = 0;
    ssm_st_write_item *items = calloc((size_t)cap + 1, sizeof *items);
    char **nm = calloc((size_t)cap + 1, sizeof *nm);
    float **data = calloc((size_t)cap + 1, sizeof *data);
    ssm_status s = items && nm && data ? SSM_OK : ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const ssm_tensor_info *ti = &m->tensors[i];
        const float *x = m->params_blob + ti->offset;
        for (int j = 0; ti->numel && !s && ssm_file_piece_of(names, &m->config, ti, j, &p); j++) {
            int k = 0;
            while (k < n && strcmp(nm[k], p.name)) k++;
            if (k == n) { /* a new stored tensor */
                size_t numel = numel_of(p.ndim, p.shape);
                nm[n] = strdup(p.name);
                data[n] = calloc(numel ? numel : 1, sizeof(float));
                if (!nm[n] || !data[n]) s = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
                items[n].name = nm[n], items[n].ndim = p.ndim, items[n].data = data[n];
                memcpy(items[n].shape, p.shape, sizeof p.shape);
                n++;
            }
            if (!s) memcpy(data[k] + p.from, x, p.count * sizeof(float));
            x += p.count;
        }
    }
    free(nm); /* the names live on as items[k].name (free_piece_items) */
    *out = items, *bufs = data, *n_items = n;
    return s;
}

static void free_piece_items(ssm_st_write_item *items, float **bufs, int n) {
    for (int k = 0; k < n; k++) free((char *)items[k].name), free(bufs[k]);
    free(items);
    free(bufs);
}

/* 1 when ssm_checkpoint_write_config writes this model as transformers' NemotronH */
static int writes_nemotron_h(const ssm_config *c) {
    /* the order of ssm_checkpoint_write_config: Mamba, Mamba2, then NemotronH */
    if (!ssm_io_is_lm(c) || c->rcps || ssm_config_all(c, SSM_LAYER_MAMBA1) ||
        ssm_config_all(c, SSM_LAYER_MAMBA2))
        return 0;
    json_t *j = ssm_json_nemotron_h_config(c, 0);
    json_decref(j);
    return j != NULL;
}

ssm_status ssm_checkpoint_save(const ssm_model *model, const char *path,
                               const char *const *meta_kv) {
    if (!model || !path) return ssm_set_error(SSM_ERR_ARG, "ssm_checkpoint_save: NULL argument");
    char *ours[2 * META_MAX] = {0};
    int n_ours = 0;
    ssm_status s = config_metadata(&model->config, ours, &n_ours);
    /* a model that transformers' Jamba or mamba_ssm's MixerModel holds: their names */
    ssm_file_names names = ssm_file_names_for(&model->config);
    if (!s && names != SSM_NAMES_OWN) {
        ssm_st_write_item *items = NULL;
        float **bufs = NULL;
        int n = 0;
        const char **kv = calloc((size_t)(2 * n_ours + kv_len(meta_kv) + 4), sizeof *kv);
        s = kv ? piece_items(model, names, &items, &bufs, &n) : ssm_set_error(SSM_ERR_NOMEM, "out of memory");
        if (!s && names == SSM_NAMES_MAMBA_SSM) /* mamba_ssm's state_dict holds the tied head too */
            items[n] = (ssm_st_write_item){.name = LM_HEAD, .ndim = 2, .data = model->params.embedding,
                                           .shape = {model->config.vocab_size, model->config.d_model}};
        if (!s) {
            int k = 0;
            for (int i = 0; i < 2 * n_ours; i++) kv[k++] = ours[i];
            kv[k++] = "ssm.names", kv[k++] = names == SSM_NAMES_JAMBA ? "jamba" : "mamba_ssm";
            for (int i = 0; i < kv_len(meta_kv); i++) kv[k++] = meta_kv[i];
            s = ssm_safetensors_write(path, items, n + (names == SSM_NAMES_MAMBA_SSM), kv);
        }
        if (kv) free_piece_items(items, bufs, n);
        free(kv);
        for (int i = 0; i < 2 * n_ours; i++) free(ours[i]);
        return s;
    }
    int n_extra = kv_len(meta_kv);
    const char **kv = calloc((size_t)(2 * n_ours + n_extra + 2), sizeof *kv);
    ssm_st_write_item *items = calloc((size_t)model->n_tensors + 1, sizeof *items);
    if (!s && (!kv || !items)) s = ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    if (!s) {
        for (int i = 0; i < 2 * n_ours; i++) kv[i] = ours[i];
        for (int i = 0; i < n_extra; i++) kv[2 * n_ours + i] = meta_kv[i];
        int n = 0;
        for (int i = 0; i < model->n_tensors; i++) {
            const ssm_tensor_info *ti = &model->tensors[i];
            if (!ti->numel) continue; /* an absent optional tensor (a MoE's shared expert) */
            items[n].name = ti->name;
            items[n].ndim = file_shape(ti, items[n].shape);
            items[n].data = model->params_blob + ti->offset;
            n++;
        }
        /* transformers' NemotronHForCausalLM does not tie its head on load (it reports
         * lm_head.weight missing and draws it at random), and its own files hold the head:
         * so do ours */
        if (writes_nemotron_h(&model->config))
            items[n++] = (ssm_st_write_item){.name = LM_HEAD, .ndim = 2, .data = model->params.embedding,
                                             .shape = {model->config.vocab_size, model->config.d_model}};
        s = ssm_safetensors_write(path, items, n, kv);
    }
    for (int i = 0; i < 2 * n_ours; i++) free(ours[i]);
    free(kv);
    free(items);
    return s;
}

/* config.json as transformers' MambaConfig / Mamba2Config write it, so that
 * MambaForCausalLM / Mamba2ForCausalLM.from_pretrained(dir) load our runs. */
ssm_status ssm_checkpoint_write_config(const ssm_model *model, const char *path,
                                       int bos_token_id) {
    if (!model || !path) return ssm_set_error(SSM_ERR_ARG, "ssm_checkpoint_write_config: NULL argument");
    const ssm_config *c = &model->config;
    json_t *j = NULL;
    if (!ssm_io_is_lm(c) || c->rcps) {
        /* float inputs, a head of its own, RCPS: no transformers class holds it */
        j = json_pack("{s:s,s:s}", "model_type", "ssm",
                      "note", c->rcps ? "an RCPS model (reverse-complement parameter sharing): "
                      "the config is in model.safetensors' ssm.* metadata" : "inputs or head "
                      "other than tokens and a tied LM head: the config is in model.safetensors' "
                      "ssm.* metadata");
    } else if (ssm_config_all(c, SSM_LAYER_MAMBA1)) {
        j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:b,s:b,s:b,s:b,s:i}",
                      "architectures", "MambaForCausalLM", "model_type", "mamba", "vocab_size",
                      c->vocab_size, "hidden_size", c->d_model, "num_hidden_layers", c->n_layer,
                      "state_size", c->d_state, "expand", c->expand, "conv_kernel", c->d_conv,
                      "time_step_rank", c->dt_rank, "intermediate_size", c->d_inner,
                      "layer_norm_epsilon", (double)c->norm_eps, "use_bias", 0, "use_conv_bias", 1,
                      "tie_word_embeddings", 1, "residual_in_fp32", 1, "bos_token_id",
                      bos_token_id);
    } else if (ssm_config_all(c, SSM_LAYER_MAMBA2)) {
        const ssm_mamba2_config *m = &c->mamba2;
        /* a non-finite limit as {"__float__": "Infinity"}, which transformers 5 reads back */
        json_t *hi = isfinite(m->dt_limit[1]) ? json_real(m->dt_limit[1])
                                               : json_pack("{s:s}", "__float__", "Infinity");
        j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:[f,o],s:f,s:f,s:f,"
                      "s:f,s:b,s:b,s:b,s:b,s:b,s:s,s:i}",
                      "architectures", "Mamba2ForCausalLM", "model_type", "mamba2", "vocab_size",
                      c->vocab_size, "hidden_size", c->d_model, "num_hidden_layers", c->n_layer,
                      "num_heads", m->nheads, "head_dim", m->headdim, "state_size", m->d_state,
                      "n_groups", m->ngroups, "expand", m->expand, "conv_kernel", m->d_conv,
                      "chunk_size", m->chunk_size, "time_step_limit", (double)m->dt_limit[0], hi,
                      "time_step_min", (double)c->dt_min, "time_step_max", (double)c->dt_max,
                      "time_step_floor", (double)c->dt_init_floor, "layer_norm_epsilon",
                      (double)c->norm_eps, "use_bias", 0, "use_conv_bias", 1, "rms_norm", 1,
                      "tie_word_embeddings", 1, "residual_in_fp32", 1, "hidden_act", "silu",
                      "bos_token_id", bos_token_id);
    } else if (!(j = ssm_json_nemotron_h_config(c, bos_token_id)) &&
               !(j = ssm_json_jamba_config(c, bos_token_id)) &&
               !(j = ssm_json_mamba_ssm_config(c))) {
        /* no transformers class holds this model: the checkpoint's ssm.* metadata is its
         * config */
        j = json_pack("{s:s,s:s}", "model_type", "ssm",
                      "note", "layers of several kinds: the config is in model.safetensors' ssm.* metadata");
    }
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!j || !tmp) {
        json_decref(j);
        free(tmp);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, n, "%s.tmp", path);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    ssm_status s = text ? ssm_write_file_atomic(path, tmp, text, strlen(text))
                        : ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    free(text);
    free(tmp);
    return s;
}

/* ---- loading: where the file and its config are ----------------------------------------- */

/* path is the file, or a directory holding model.safetensors; *dir is where config.json is. */
static ssm_status resolve_paths(const char *path, char **file, char **dir) {
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    size_t n = strlen(path);
    *file = malloc(n + sizeof "/model.safetensors");
    *dir = malloc(n + 2);
    if (!*file || !*dir) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    if (is_dir) {
        snprintf(*file, n + sizeof "/model.safetensors", "%s/model.safetensors", path);
        memcpy(*dir, path, n + 1);
    } else {
        memcpy(*file, path, n + 1);
        const char *slash = strrchr(path, '/');
        if (!slash) {
            strcpy(*dir, ".");
        } else {
            size_t k = slash == path ? 1 : (size_t)(slash - path);
            memcpy(*dir, path, k);
            (*dir)[k] = '\0';
        }
    }
    return SSM_OK;
}

/* A strict decimal integer in [lo, hi]. */
static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* ---- loading: config from our ssm.* metadata -------------------------------------------- */

static const char *const meta_int_keys[] = {"ssm.vocab_size", "ssm.d_model", "ssm.n_layer",
                                            "ssm.d_state", "ssm.d_conv", "ssm.expand",
                                            "ssm.dt_rank", "ssm.d_inner"};
#define N_META_INTS ((int)(sizeof meta_int_keys / sizeof meta_int_keys[0]))

static int has_ssm_metadata(const ssm_safetensors *st) {
    for (int i = 0; i < N_META_INTS; i++)
        if (ssm_safetensors_meta(st, meta_int_keys[i])) return 1;
    return ssm_safetensors_meta(st, "ssm.norm_eps") != NULL;
}

static ssm_status meta_float(const ssm_safetensors *st, const char *file, const char *key,
                             float *out) {
    const char *v = ssm_safetensors_meta(st, key);
    if (!v) return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no %s, which its layers need", key);
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || isnan(x))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata %s = '%s' is not a number", key, v);
    *out = (float)x;
    return SSM_OK;
}

static ssm_status meta_int(const ssm_safetensors *st, const char *file, const char *key,
                           long long lo, int *out) {
    const char *x = ssm_safetensors_meta(st, key);
    long long val;
    if (!x) return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no %s, which its layers need", key);
    if (!parse_long(x, lo, INT_MAX, &val))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata %s = '%s' is not an integer >= %lld",
                             key, x, lo);
    *out = (int)val;
    return SSM_OK;
}

/* one of two names, as an int (0 for the first) */
static ssm_status meta_choice(const ssm_safetensors *st, const char *file, const char *key,
                              const char *a, const char *b, int *out) {
    const char *v = ssm_safetensors_meta(st, key);
    if (!v) return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no %s, which its layers need", key);
    if (strcmp(v, a) && strcmp(v, b))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata %s = '%s' is not %s or %s", key, v, a, b);
    *out = strcmp(v, a) != 0;
    return SSM_OK;
}

static ssm_status moe_from_metadata(const ssm_safetensors *st, const char *file,
                                    ssm_moe_config *o) {
    int act, routing;
    ssm_status s;
    if ((s = meta_int(st, file, "ssm.moe.n_experts", 1, &o->n_experts)) ||
        (s = meta_int(st, file, "ssm.moe.top_k", 1, &o->top_k)) ||
        (s = meta_int(st, file, "ssm.moe.d_ff", 1, &o->d_ff)) ||
        (s = meta_int(st, file, "ssm.moe.shared_d_ff", 0, &o->shared_d_ff)) ||
        (s = meta_int(st, file, "ssm.moe.norm_topk", 0, &o->norm_topk)) ||
        (s = meta_choice(st, file, "ssm.moe.activation", "relu2", "swiglu", &act)) ||
        (s = meta_choice(st, file, "ssm.moe.routing", "softmax", "sigmoid", &routing)) ||
        (s = meta_float(st, file, "ssm.moe.routed_scaling", &o->routed_scaling)) ||
        (s = meta_float(st, file, "ssm.moe.aux_loss_coef", &o->aux_loss_coef)))
        return s;
    o->activation = act ? SSM_MLP_SWIGLU : SSM_MLP_RELU2;
    o->routing = routing ? SSM_MOE_SIGMOID : SSM_MOE_SOFTMAX;
    return SSM_OK;
}

/* the attention and MLP keys, for the kinds present */
static ssm_status other_kinds_from_metadata(const ssm_safetensors *st, const char *file,
                                            ssm_config *c) {
    ssm_status s;
    if (uses_kind(c, SSM_LAYER_ATTENTION)) {
        ssm_attention_config *a = &c->attention;
        if ((s = meta_int(st, file, "ssm.attention.n_heads", 1, &a->n_heads)) ||
            (s = meta_int(st, file, "ssm.attention.n_kv_heads", 1, &a->n_kv_heads)) ||
            (s = meta_int(st, file, "ssm.attention.head_dim", 1, &a->head_dim)) ||
            (s = meta_int(st, file, "ssm.attention.rotary_dim", 0, &a->rotary_dim)) ||
            (s = meta_int(st, file, "ssm.attention.max_context", 1, &a->max_context)))
            return s;
        const char *base = ssm_safetensors_meta(st, "ssm.attention.rope_base");
        if (!base)
            return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no ssm.attention.rope_base, "
                                 "which its layers need");
        char *end;
        double b = strtod(base, &end);
        if (!*base || *end || !(b > 1))
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.attention.rope_base = '%s' "
                                 "is not a number > 1", base);
        a->rope_base = (float)b;
    }
    if (uses_kind(c, SSM_LAYER_MLP)) {
        if ((s = meta_int(st, file, "ssm.mlp.d_ff", 1, &c->mlp.d_ff))) return s;
        const char *act = ssm_safetensors_meta(st, "ssm.mlp.activation");
        if (!act)
            return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no ssm.mlp.activation, which "
                                 "its layers need");
        if (strcmp(act, "relu2") && strcmp(act, "swiglu"))
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.mlp.activation = '%s' is not "
                                 "relu2 or swiglu", act);
        c->mlp.activation = strcmp(act, "swiglu") ? SSM_MLP_RELU2 : SSM_MLP_SWIGLU;
    }
    if (uses_kind(c, SSM_LAYER_MOE)) return moe_from_metadata(st, file, &c->moe);
    return SSM_OK;
}

/* ssm.layers (absent: every layer Mamba-1, as the first version wrote) and the kinds' keys */
static ssm_status layers_from_metadata(const ssm_safetensors *st, const char *file,
                                       ssm_config *c) {
    const char *v = ssm_safetensors_meta(st, "ssm.layers");
    ssm_config_set_kind(c, SSM_LAYER_MAMBA1);
    if (!v) return SSM_OK;
    int i = 0;
    for (const char *p = v; *p;) {
        size_t k = strcspn(p, ",");
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), p);
        int second = name[0] == '+';
        int kind = ssm_layer_kind_parse(name + second);
        if (i < c->n_layer) c->second[i] = (unsigned char)second;
        if (kind < 0)
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.layers: unknown layer kind "
                                 "'%s' (layer %d)", name, i);
        if (i < c->n_layer) c->layer_kind[i] = (unsigned char)kind;
        i++;
        p += k + (p[k] == ',');
    }
    if (i != c->n_layer)
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.layers names %d layers but "
                             "ssm.n_layer is %d", i, c->n_layer);
    if (uses_kind(c, SSM_LAYER_ATTENTION) || uses_kind(c, SSM_LAYER_MLP) || uses_kind(c, SSM_LAYER_MOE)) {
        ssm_status s = other_kinds_from_metadata(st, file, c);
        if (s) return s;
    }
    if (!uses_kind(c, SSM_LAYER_MAMBA2)) return SSM_OK;
    static const char *const keys[] = {"ssm.mamba2.d_state", "ssm.mamba2.d_conv",
                                       "ssm.mamba2.expand", "ssm.mamba2.headdim",
                                       "ssm.mamba2.ngroups", "ssm.mamba2.chunk_size"};
    ssm_mamba2_config *m = &c->mamba2;
    int *fields[] = {&m->d_state, &m->d_conv, &m->expand, &m->headdim, &m->ngroups,
                     &m->chunk_size};
    for (int j = 0; j < 6; j++) {
        const char *x = ssm_safetensors_meta(st, keys[j]);
        long long val;
        if (!x) return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has no %s, which its layers need", keys[j]);
        if (!parse_long(x, 1, INT_MAX, &val))
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata %s = '%s' is not a positive integer",
                                 keys[j], x);
        *fields[j] = (int)val;
    }
    m->d_inner = m->nheads = 0; /* derived by the validator */
    ssm_status s;
    if ((s = meta_float(st, file, "ssm.mamba2.dt_limit_min", &m->dt_limit[0])) ||
        (s = meta_float(st, file, "ssm.mamba2.dt_limit_max", &m->dt_limit[1])))
        return s;
    return SSM_OK;
}

/* ssm.io.* (absent: a language model) */
static ssm_status io_from_metadata(const ssm_safetensors *st, const char *file, ssm_config *c) {
    if (!ssm_safetensors_meta(st, "ssm.io.head")) return SSM_OK;
    int head, pool, loss;
    ssm_status s;
    if ((s = meta_int(st, file, "ssm.io.features", 0, &c->io.features)) ||
        (s = meta_int(st, file, "ssm.io.patch", 1, &c->io.patch)) ||
        (s = meta_int(st, file, "ssm.io.head", 0, &head)) ||
        (s = meta_int(st, file, "ssm.io.outputs", 0, &c->io.outputs)) ||
        (s = meta_int(st, file, "ssm.io.pool", 0, &pool)) ||
        (s = meta_int(st, file, "ssm.io.loss", 0, &loss)))
        return s;
    c->io.head = (ssm_head_kind)head, c->io.pool = (ssm_pool)pool, c->io.loss = (ssm_loss_kind)loss;
    return SSM_OK;
}

/* ssm.patch* (absent: no patch encoder) */
static ssm_status patch_from_metadata(const ssm_safetensors *st, const char *file, ssm_config *c) {
    const char *kind = ssm_safetensors_meta(st, "ssm.patch"), *w = ssm_safetensors_meta(st, "ssm.patch.widths");
    if (!kind) return SSM_OK;
    ssm_patch_config *p = &c->patch;
    int input, forward;
    char end;
    if (strcmp(kind, "pointnet"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.patch = '%s' is not pointnet", kind);
    if (!w || sscanf(w, "%d,%d,%d%c", &p->widths[0], &p->widths[1], &p->widths[2], &end) != 3)
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.patch.widths = '%s' is not three "
                             "integers w0,w1,w2", w ? w : "(absent)");
    ssm_status s;
    if ((s = meta_choice(st, file, "ssm.patch.order", "score", "input", &input)) ||
        (s = meta_choice(st, file, "ssm.patch.reading", "both", "forward", &forward)))
        return s;
    p->kind = SSM_PATCH_POINTNET, p->score_order = !input, p->both = !forward;
    const char *att = ssm_safetensors_meta(st, "ssm.patch.attention");
    if (att && strcmp(att, "1"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.patch.attention = '%s' is not 1", att);
    p->attention = att != NULL;
    return SSM_OK;
}

static ssm_status config_from_metadata(const ssm_safetensors *st, const char *file,
                                       ssm_config *c) {
    int *fields[N_META_INTS] = {&c->vocab_size, &c->d_model, &c->n_layer, &c->d_state,
                                &c->d_conv, &c->expand, &c->dt_rank, &c->d_inner};
    for (int i = 0; i < N_META_INTS; i++) {
        const char *v = ssm_safetensors_meta(st, meta_int_keys[i]);
        long long x;
        if (!v)
            return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has ssm.* keys but not %s",
                        meta_int_keys[i]);
        if (!parse_long(v, 1, INT_MAX, &x))
            return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata %s = '%s' is not a positive integer",
                        meta_int_keys[i], v);
        *fields[i] = (int)x;
    }
    const char *eps = ssm_safetensors_meta(st, "ssm.norm_eps");
    if (!eps) return ssm_fail_file(file, SSM_ERR_MISSING, "metadata has ssm.* keys but not ssm.norm_eps");
    char *end;
    double e = strtod(eps, &end);
    if (!*eps || *end || !isfinite(e))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.norm_eps = '%s' is not a number", eps);
    c->norm_eps = (float)e;
    const char *sel = ssm_safetensors_meta(st, "ssm.selective");
    if (sel && strcmp(sel, "true") && strcmp(sel, "false"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.selective = '%s' is not true or "
                             "false", sel);
    c->non_selective = sel && !strcmp(sel, "false");
    const char *inn = ssm_safetensors_meta(st, "ssm.inner_norms");
    if (inn && strcmp(inn, "true") && strcmp(inn, "false"))
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.inner_norms = '%s' is not true "
                             "or false", inn);
    c->inner_norms = inn && !strcmp(inn, "true");
    if ((long long)c->expand * c->d_model != c->d_inner)
        return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.d_inner = %d is not ssm.expand * "
                    "ssm.d_model = %d * %d", c->d_inner, c->expand, c->d_model);
    ssm_status s = layers_from_metadata(st, file, c);
    if (!s) s = io_from_metadata(st, file, c);
    if (!s) s = patch_from_metadata(st, file, c);
    return s ? s : ssm_caduceus_from_metadata(st, file, c);
}

/* ---- loading: config from transformers' config.json ------------------------------------- */

/* An integer key: required, or dflt when absent. */
ssm_status json_int(json_t *cfg, const char *cpath, const char *key, int required,
                           int dflt, int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v) {
        if (required) return ssm_fail_file(cpath, SSM_ERR_MISSING, "no \"%s\" (a MambaConfig needs it)", key);
        *out = dflt;
        return SSM_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > SSM_JSON_INT_MAX)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be a positive integer (at most %d)",
                             key, SSM_JSON_INT_MAX);
    *out = (int)json_integer_value(v);
    return SSM_OK;
}

ssm_status json_times(const char *cpath, const char *key, int a, int b, int *out) {
    long long p = (long long)a * b;
    if (p > SSM_JSON_INT_MAX)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": a width of %d x %d is more than %d",
                             key, a, b, SSM_JSON_INT_MAX);
    *out = (int)p;
    return SSM_OK;
}

ssm_status json_int_from(json_t *cfg, const char *cpath, const char *key, int dflt, int lo,
                         int *out) {
    json_t *v = json_object_get(cfg, key);
    if (!v || json_is_null(v)) return *out = dflt, SSM_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > SSM_JSON_INT_MAX)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be an integer >= %d", key, lo);
    *out = (int)json_integer_value(v);
    return SSM_OK;
}

/* A boolean key that must have one value for us to reproduce the model. */
ssm_status json_bool_must(json_t *cfg, const char *cpath, const char *key, int want,
                                 const char *why) {
    json_t *v = json_object_get(cfg, key);
    if (!v) return SSM_OK; /* MambaConfig's default is the one we support */
    if (!json_is_boolean(v)) return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be true or false", key);
    if (json_is_true(v) != want)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": %s is not supported (%s)", key,
                    want ? "false" : "true", why);
    return SSM_OK;
}

/* A string key that must be absent or equal want. */
ssm_status json_str_must(json_t *cfg, const char *cpath, const char *key,
                                const char *want) {
    json_t *v = json_object_get(cfg, key);
    if (!v) return SSM_OK;
    if (!json_is_string(v)) return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must be a string", key);
    if (strcmp(json_string_value(v), want) != 0)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"%s\": \"%s\" is not supported (only \"%s\")",
                    key, json_string_value(v), want);
    return SSM_OK;
}

/* A float key: a JSON number, or {"__float__": "Infinity" | "-Infinity" | "NaN"} (how some
 * transformers versions write non-finite values; a bare Infinity token is rewritten to that
 * form before parsing, see read_json_text). */
ssm_status json_float(json_t *v, const char *cpath, const char *key, double *out) {
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return SSM_OK;
    }
    json_t *f = json_is_object(v) ? json_object_get(v, "__float__") : NULL;
    const char *t = f && json_is_string(f) ? json_string_value(f) : NULL;
    if (t && !strcmp(t, "Infinity")) *out = INFINITY;
    else if (t && !strcmp(t, "-Infinity")) *out = -INFINITY;
    else return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"%s\" must hold numbers", key);
    return SSM_OK;
}

/* transformers' Mamba2Config (model_type "mamba2"): every layer a Mamba-2 mixer. */
static ssm_status json_mamba2_fields(json_t *cfg, const char *cpath, ssm_config *c) {
    ssm_status s;
    ssm_mamba2_config *m = &c->mamba2;
    if ((s = json_str_must(cfg, cpath, "hidden_act", "silu")) ||
        (s = json_bool_must(cfg, cpath, "use_bias", 0, "ssm has no in_proj/out_proj biases")) ||
        (s = json_bool_must(cfg, cpath, "use_conv_bias", 1, "ssm always has a conv1d bias")) ||
        (s = json_bool_must(cfg, cpath, "rms_norm", 1, "the gated RMSNorm is always applied")))
        return s;
    int heads;
    /* the defaults are Mamba2Config's */
    if ((s = json_int(cfg, cpath, "vocab_size", 1, 0, &c->vocab_size)) ||
        (s = json_int(cfg, cpath, "hidden_size", 1, 0, &c->d_model)) ||
        (s = json_int(cfg, cpath, "num_hidden_layers", 1, 0, &c->n_layer)) ||
        (s = json_int(cfg, cpath, "state_size", 0, 128, &m->d_state)) ||
        (s = json_int(cfg, cpath, "conv_kernel", 0, 4, &m->d_conv)) ||
        (s = json_int(cfg, cpath, "expand", 0, 2, &m->expand)) ||
        (s = json_int(cfg, cpath, "head_dim", 0, 64, &m->headdim)) ||
        (s = json_int(cfg, cpath, "num_heads", 0, 128, &heads)) ||
        (s = json_int(cfg, cpath, "n_groups", 0, 8, &m->ngroups)) ||
        (s = json_int(cfg, cpath, "chunk_size", 0, 256, &m->chunk_size)))
        return s;
    if (c->n_layer > SSM_MAX_LAYERS)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "\"num_hidden_layers\" %d is more than %d",
                             c->n_layer, SSM_MAX_LAYERS);
    if ((long long)heads * m->headdim != (long long)m->expand * c->d_model)
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"num_heads\" %d x \"head_dim\" %d is not "
                             "\"expand\" %d x \"hidden_size\" %d", heads, m->headdim, m->expand,
                             c->d_model);
    m->d_inner = 0, m->nheads = heads;
    /* the Mamba-1 options follow d_model, so that the config saves and loads consistently */
    if ((s = json_times(cpath, "hidden_size", c->expand, c->d_model, &c->d_inner))) return s;
    c->dt_rank = (c->d_model + 15) / 16;
    json_t *lim = json_object_get(cfg, "time_step_limit");
    if (lim) {
        double lo, hi;
        if (!json_is_array(lim) || json_array_size(lim) != 2)
            return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"time_step_limit\" must be [min, max]");
        if ((s = json_float(json_array_get(lim, 0), cpath, "time_step_limit", &lo)) ||
            (s = json_float(json_array_get(lim, 1), cpath, "time_step_limit", &hi)))
            return s;
        m->dt_limit[0] = (float)lo, m->dt_limit[1] = (float)hi;
    }
    const char *fk[] = {"time_step_min", "time_step_max", "time_step_floor", "layer_norm_epsilon"};
    float *fv[] = {&c->dt_min, &c->dt_max, &c->dt_init_floor, &c->norm_eps};
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(cfg, fk[i]);
        double x;
        if (v && (s = json_float(v, cpath, fk[i], &x))) return s;
        if (v) *fv[i] = (float)x;
    }
    ssm_config_set_kind(c, SSM_LAYER_MAMBA2);
    return SSM_OK;
}

static ssm_status json_model_fields(json_t *cfg, const char *cpath, ssm_config *c,
                                    ssm_file_names *names) {
    ssm_status s;
    json_t *type = json_object_get(cfg, "model_type");
    *names = SSM_NAMES_OWN;
    if (type && json_is_string(type) && !strcmp(json_string_value(type), "jamba"))
        return *names = SSM_NAMES_JAMBA, ssm_json_jamba(cfg, cpath, c);
    /* mamba_ssm's MambaConfig has no model_type and says d_model (transformers: hidden_size) */
    if (!type && json_object_get(cfg, "d_model"))
        return *names = SSM_NAMES_MAMBA_SSM, ssm_json_mamba_ssm(cfg, cpath, c);
    if (type && json_is_string(type) && !strcmp(json_string_value(type), "mamba2"))
        return json_mamba2_fields(cfg, cpath, c);
    if (type && json_is_string(type) && !strcmp(json_string_value(type), "nemotron_h"))
        return ssm_json_nemotron_h(cfg, cpath, c);
    if (type && json_is_string(type) && !strcmp(json_string_value(type), "caduceus"))
        return ssm_json_caduceus(cfg, cpath, c);
    if ((s = json_str_must(cfg, cpath, "model_type", "mamba")) ||
        (s = json_str_must(cfg, cpath, "hidden_act", "silu")) ||
        (s = json_bool_must(cfg, cpath, "use_bias", 0, "ssm has no in_proj/out_proj biases")) ||
        (s = json_bool_must(cfg, cpath, "use_conv_bias", 1, "ssm always has a conv1d bias")))
        return s;
    /* the defaults are MambaConfig's */
    if ((s = json_int(cfg, cpath, "vocab_size", 1, 0, &c->vocab_size)) ||
        (s = json_int(cfg, cpath, "hidden_size", 1, 0, &c->d_model)) ||
        (s = json_int(cfg, cpath, "num_hidden_layers", 1, 0, &c->n_layer)) ||
        (s = json_int(cfg, cpath, "state_size", 0, 16, &c->d_state)) ||
        (s = json_int(cfg, cpath, "conv_kernel", 0, 4, &c->d_conv)) ||
        (s = json_int(cfg, cpath, "expand", 0, 2, &c->expand)))
        return s;
    int width = 0;
    if ((s = json_times(cpath, "expand", c->expand, c->d_model, &width)) ||
        (s = json_int(cfg, cpath, "intermediate_size", 0, width, &c->d_inner)))
        return s;
    /* transformers sizes everything by intermediate_size; expand only sets its default */
    if (c->d_inner % c->d_model != 0)
        return ssm_fail_file(cpath, SSM_ERR_UNSUPPORTED, "intermediate_size %d is not a multiple of "
                    "hidden_size %d", c->d_inner, c->d_model);
    c->expand = c->d_inner / c->d_model;
    json_t *r = json_object_get(cfg, "time_step_rank");
    if (!r || (json_is_string(r) && strcmp(json_string_value(r), "auto") == 0))
        c->dt_rank = (c->d_model + 15) / 16; /* "auto": ceil(hidden_size / 16) */
    else if ((s = json_int(cfg, cpath, "time_step_rank", 1, 0, &c->dt_rank)))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"time_step_rank\" must be a positive integer or "
                    "\"auto\"");
    json_t *eps = json_object_get(cfg, "layer_norm_epsilon");
    if (eps && !json_is_number(eps))
        return ssm_fail_file(cpath, SSM_ERR_FORMAT, "\"layer_norm_epsilon\" must be a number");
    c->norm_eps = eps ? (float)json_number_value(eps) : 1e-5f;
    return SSM_OK;
}

/* The file's text with the non-JSON tokens Infinity, -Infinity and NaN that Python's json
 * writes (outside strings) turned into {"__float__": "..."} objects, which json_float reads.
 * NULL when out of memory or unreadable. */
static char *read_json_text(FILE *f, size_t *len) {
    char *in = NULL, *out = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 > cap) {
            char *t = realloc(in, cap = cap * 2 + 8192);
            if (!t) { free(in); return NULL; }
            in = t;
        }
        size_t k = fread(in + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    if (ferror(f)) { free(in); return NULL; }
    static const char *const tokens[] = {"-Infinity", "Infinity", "NaN"};
    out = malloc(n * 7 + 64); /* a 3-byte NaN grows to 19 bytes at most */
    if (!out) { free(in); return NULL; }
    size_t o = 0;
    int in_string = 0;
    for (size_t i = 0; i < n;) {
        char ch = in[i];
        if (in_string) {
            out[o++] = ch, i++;
            if (ch == '\\' && i < n) out[o++] = in[i++];
            else if (ch == '"') in_string = 0;
            continue;
        }
        if (ch == '"') in_string = 1;
        int done = 0;
        for (int t = 0; t < 3 && !done; t++) {
            size_t k = strlen(tokens[t]);
            if (i + k <= n && !memcmp(in + i, tokens[t], k)) {
                o += (size_t)sprintf(out + o, "{\"__float__\":\"%s\"}", tokens[t]);
                i += k;
                done = 1;
            }
        }
        if (!done) out[o++] = in[i++];
    }
    free(in);
    *len = o;
    return out;
}

static ssm_status config_from_json(const char *dir, const char *file, ssm_config *c,
                                   ssm_file_names *names) {
    size_t n = strlen(dir) + sizeof "/config.json";
    char *cpath = malloc(n);
    if (!cpath) return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", file);
    snprintf(cpath, n, "%s/config.json", dir);
    ssm_status s = SSM_OK;
    FILE *f = fopen(cpath, "r");
    if (!f && errno == ENOENT) {
        s = ssm_fail_file(file, SSM_ERR_MISSING, "no model config: the file has no ssm.* metadata and "
                 "there is no config.json beside it; a config is needed to know the model's "
                 "shape (put transformers' config.json next to it)");
    } else if (!f) {
        s = ssm_fail_file(cpath, SSM_ERR_IO, "cannot open: %s", strerror(errno));
    } else {
        json_error_t err;
        size_t len = 0;
        char *text = read_json_text(f, &len);
        fclose(f);
        json_t *cfg = text ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &err) : NULL;
        if (!text) snprintf(err.text, sizeof err.text, "cannot read it"), err.line = err.column = 0;
        free(text);
        if (!cfg)
            s = ssm_fail_file(cpath, SSM_ERR_FORMAT, "invalid JSON at line %d, column %d: %s", err.line,
                     err.column, err.text);
        else if (!json_is_object(cfg))
            s = ssm_fail_file(cpath, SSM_ERR_FORMAT, "not a JSON object");
        else
            s = json_model_fields(cfg, cpath, c, names);
        json_decref(cfg);
    }
    free(cpath);
    return s;
}

/* The config of a checkpoint, exactly as stored: the vocabulary is not padded. */
static ssm_status load_config(const ssm_safetensors *st, const char *file, const char *dir,
                              ssm_config *out, ssm_file_names *names) {
    ssm_config c = ssm_config_default(8, 16, 1); /* for the init-only fields */
    *names = SSM_NAMES_OWN;
    ssm_status s = has_ssm_metadata(st) ? config_from_metadata(st, file, &c)
                                        : config_from_json(dir, file, &c, names);
    if (s) return s;
    const char *nm = ssm_safetensors_meta(st, "ssm.names"); /* saved under another layout's names */
    if (nm && has_ssm_metadata(st)) {
        if (!strcmp(nm, "jamba")) *names = SSM_NAMES_JAMBA;
        else if (!strcmp(nm, "mamba_ssm")) *names = SSM_NAMES_MAMBA_SSM;
        else return ssm_fail_file(file, SSM_ERR_FORMAT, "metadata ssm.names = '%s' is not jamba "
                                  "or mamba_ssm", nm);
    }
    *out = c;
    return SSM_OK;
}

/* ---- loading: tensors ------------------------------------------------------------------- */

/* mamba_ssm names the embedding backbone.embedding.weight (transformers renames it on load) */
#define EMBEDDING "backbone.embeddings.weight"
#define EMBEDDING_MAMBA_SSM "backbone.embedding.weight"
static const char *stored_name(const ssm_safetensors *st, const char *name) {
    static _Thread_local char caduceus[256];
    if (ssm_caduceus_file(st)) return ssm_caduceus_name(st, name, caduceus, sizeof caduceus);
    if (!strcmp(name, EMBEDDING) && !ssm_safetensors_find(st, EMBEDDING) &&
        ssm_safetensors_find(st, EMBEDDING_MAMBA_SSM))
        return EMBEDDING_MAMBA_SSM;
    return name;
}

/* transformers 5 saves a NemotronH MoE's experts one module each: for the fused
 * PREFIX.experts.up_proj (X, U, D) (and down_proj (X, D, U)), expert j's (U, D) slice as
 * PREFIX.experts.j.up_proj.weight. The name of expert j's slice of a fused tensor, or 0 when the
 * tensor is not one of those. */
static const char *const EXPERT_PARTS[] = {"up_proj", "down_proj"};

static int expert_slice_name(const char *fused, int j, char *out, size_t size) {
    size_t n = strlen(fused);
    for (int k = 0; k < 2; k++) {
        char tail[32];
        int t = snprintf(tail, sizeof tail, ".experts.%s", EXPERT_PARTS[k]);
        if (n > (size_t)t && !strcmp(fused + n - t, tail)) {
            snprintf(out, size, "%.*s.experts.%d.%s.weight", (int)(n - t), fused, j, EXPERT_PARTS[k]);
            return 1;
        }
    }
    return 0;
}

/* The fused tensor that a stored expert slice belongs to (PREFIX.experts.j.PART.weight). */
static int expert_fused_name(const char *slice, char *out, size_t size) {
    const char *e = strstr(slice, ".experts.");
    if (!e) return 0;
    char *end;
    strtol(e + 9, &end, 10);
    if (end == e + 9 || *end != '.') return 0;
    for (int k = 0; k < 2; k++) {
        char tail[32];
        snprintf(tail, sizeof tail, ".%s.weight", EXPERT_PARTS[k]);
        if (!strcmp(end, tail)) {
            snprintf(out, size, "%.*s.experts.%s", (int)(e - slice), slice, EXPERT_PARTS[k]);
            return 1;
        }
    }
    return 0;
}

/* Every expert's slice of a fused (X, A, B) tensor is stored, each (A, B). */
static ssm_status check_expert_slices(const ssm_safetensors *st, const char *file,
                                      const ssm_tensor_info *ti, int *found) {
    char name[512];
    *found = 0;
    if (ti->ndim != 3 || !expert_slice_name(ti->name, 0, name, sizeof name) ||
        !ssm_safetensors_find(st, name))
        return SSM_OK;
    for (int j = 0; j < ti->shape[0]; j++) {
        expert_slice_name(ti->name, j, name, sizeof name);
        const ssm_st_tensor *t = ssm_safetensors_find(st, name);
        if (!t) return ssm_fail_file(file, SSM_ERR_MISSING, "missing tensor %s (expert %d of %s)",
                                     name, j, ti->name);
        if (!is_float(t->dtype) || !same_shape(t, 2, ti->shape + 1)) {
            char ws[160];
            ssm_format_shape(ws, sizeof ws, ti->shape + 1, 2);
            return ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s: expected a float tensor of shape %s",
                                 name, ws);
        }
    }
    *found = 1;
    return SSM_OK;
}

static ssm_status check_tensor(const ssm_safetensors *st, const char *file,
                               const ssm_tensor_info *ti) {
    const ssm_st_tensor *t = ssm_safetensors_find(st, stored_name(st, ti->name));
    int sliced;
    if (!t) {
        ssm_status s = check_expert_slices(st, file, ti, &sliced);
        if (s || sliced) return s;
    }
    int64_t want[8];
    int ndim = file_shape(ti, want);
    char ws[160], hs[160];
    ssm_format_shape(ws, sizeof ws, want, ndim);
    if (!t)
        return ssm_fail_file(file, SSM_ERR_MISSING, "missing tensor %s (shape %s from the config)",
                    ti->name, ws);
    if (!is_float(t->dtype))
        return ssm_fail_file(file, SSM_ERR_DTYPE, "tensor %s is not a floating-point tensor; parameters "
                    "must be F32, F16 or BF16", ti->name);
    /* conv1d.weight is accepted both as (E, 1, K) and as our in-memory (E, K) */
    if (same_shape(t, ndim, want) || same_shape(t, ti->ndim, ti->shape)) return SSM_OK;
    ssm_format_shape(hs, sizeof hs, t->shape, t->ndim);
    return ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s has shape %s, expected %s from the config",
                ti->name, hs, ws);
}

/* Every model tensor present with its shape, lm_head shaped like the embedding, nothing else. */
static ssm_status check_tensors(const ssm_safetensors *st, const char *file,
                                const ssm_model *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        if (!m->tensors[i].numel) continue;
        ssm_status s = check_tensor(st, file, &m->tensors[i]);
        if (s) return s;
    }
    const ssm_st_tensor *head = ssm_safetensors_find(st, LM_HEAD);
    const ssm_tensor_info *emb = &m->tensors[0];
    if (head && (!is_float(head->dtype) || !same_shape(head, emb->ndim, emb->shape))) {
        char hs[160], ws[160];
        ssm_format_shape(hs, sizeof hs, head->shape, head->ndim);
        ssm_format_shape(ws, sizeof ws, emb->shape, emb->ndim);
        return ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s has shape %s, expected %s (the tied "
                    "embedding's)", LM_HEAD, hs, ws);
    }
    for (int i = 0; i < ssm_safetensors_count(st); i++) {
        const char *name = ssm_safetensors_tensor(st, i)->name;
        char fused[512];
        if (expert_fused_name(name, fused, sizeof fused) && ssm_model_find_tensor(m, fused)) continue;
        if (ssm_caduceus_file(st)) { /* Caduceus' names, its tied aliases and buffers */
            int known = ssm_caduceus_alias(name);
            for (int j = 0; j < m->n_tensors && !known; j++)
                known = !strcmp(stored_name(st, m->tensors[j].name), name);
            if (known) continue;
            return ssm_fail_file(file, SSM_ERR_FORMAT, "unexpected tensor %s: not part of a "
                                 "Caduceus model of this config", name);
        }
        if (strcmp(name, LM_HEAD) != 0 && !ssm_model_find_tensor(m, name) &&
            strcmp(stored_name(st, EMBEDDING), name) != 0)
            return ssm_fail_file(file, SSM_ERR_FORMAT, "unexpected tensor %s: not part of a Mamba model "
                        "of this config", name);
    }
    return SSM_OK;
}

/* We tie the head to the embedding; a stored head must be (nearly) the embedding. */
static ssm_status check_lm_head(const ssm_safetensors *st, const char *file,
                                const ssm_model *m) {
    const ssm_st_tensor *head = ssm_safetensors_find(st, LM_HEAD);
    if (!head) return SSM_OK;
    size_t n = m->tensors[0].numel;
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (!h) return ssm_fail_file(file, SSM_ERR_NOMEM, "out of memory reading %s", LM_HEAD);
    ssm_status s = ssm_safetensors_read_f32(st, LM_HEAD, h, n);
    const float *e = m->params.embedding;
    double max_e = 0, max_d = 0;
    for (size_t i = 0; i < n && !s; i++) {
        max_e = fmax(max_e, fabs(e[i]));
        max_d = fmax(max_d, fabs((double)h[i] - e[i]));
        if (isnan(h[i])) max_d = INFINITY;
    }
    free(h);
    /* loose, so that a head stored in another precision than the embedding still passes */
    if (!s && max_d > 1e-2 * max_e)
        s = ssm_fail_file(file, SSM_ERR_UNSUPPORTED, "%s differs from backbone.embeddings.weight (by up "
                 "to %g): untied output embeddings are not supported", LM_HEAD, max_d);
    return s;
}

/* NaN or infinity in a saved tensor: a diverged run or a corrupt file, refused by name (a
 * model would only ever produce NaN from it). */
static ssm_status check_finite(const char *file, const char *name, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return ssm_fail_file(file, SSM_ERR_NUMERIC, "tensor %s holds %s at element %zu (of %zu): "
                                 "the run diverged or the file is corrupt", name,
                                 isnan(x[i]) ? "NaN" : x[i] > 0 ? "+infinity" : "-infinity", i, n);
    return SSM_OK;
}

static ssm_status read_params(const ssm_safetensors *st, const char *file, ssm_model *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        const ssm_tensor_info *ti = &m->tensors[i];
        if (!ti->numel) continue;
        const char *name = stored_name(st, ti->name);
        float *x = m->params_blob + ti->offset;
        char slice[512];
        if (!ssm_safetensors_find(st, name) && expert_slice_name(ti->name, 0, slice, sizeof slice)) {
            size_t per = ti->numel / (size_t)ti->shape[0]; /* one expert at a time */
            for (int j = 0; j < ti->shape[0]; j++) {
                expert_slice_name(ti->name, j, slice, sizeof slice);
                ssm_status s = ssm_safetensors_read_f32(st, slice, x + j * per, per);
                if (!s) s = check_finite(file, slice, x + j * per, per);
                if (s) return s;
            }
            continue;
        }
        ssm_status s = ssm_safetensors_read_f32(st, name, x, ti->numel);
        if (!s) s = check_finite(file, name, x, ti->numel);
        if (s) return s;
    }
    return SSM_OK;
}

/* ---- loading: tensors stored under another layout's names, piece by piece -------------- */

int ssm_file_piece_of(ssm_file_names names, const ssm_config *c, const ssm_tensor_info *ti,
                      int j, ssm_file_piece *p) {
    switch (names) {
    case SSM_NAMES_JAMBA: return ssm_jamba_piece(c, ti, j, p);
    case SSM_NAMES_MAMBA_SSM: return ssm_mamba_ssm_piece(c, ti, j, p);
    default: return 0;
    }
}

ssm_file_names ssm_file_names_for(const ssm_config *c) {
    int ap, ao, ep, eo;
    if (!ssm_io_is_lm(c)) return SSM_NAMES_OWN;
    if (ssm_jamba_layout(c, &ap, &ao, &ep, &eo)) return SSM_NAMES_JAMBA;
    if (ssm_mamba_ssm_layout(c)) return SSM_NAMES_MAMBA_SSM;
    return SSM_NAMES_OWN;
}

/* Every tensor's pieces stored with their shapes and adding up to it; every stored tensor
 * (but lm_head.weight) a piece of one. */
static ssm_status check_pieces(const ssm_safetensors *st, const char *file, const ssm_model *m,
                               ssm_file_names names) {
    int n_st = ssm_safetensors_count(st);
    unsigned char *used = calloc((size_t)n_st + 1, 1);
    if (!used) return ssm_fail_file(file, SSM_ERR_NOMEM, "out of memory");
    ssm_status s = SSM_OK;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const ssm_tensor_info *ti = &m->tensors[i];
        if (!ti->numel) continue;
        size_t got = 0;
        ssm_file_piece p;
        for (int j = 0; !s && ssm_file_piece_of(names, &m->config, ti, j, &p); j++) {
            const ssm_st_tensor *t = ssm_safetensors_find(st, p.name);
            char ws[160], hs[160];
            ssm_format_shape(ws, sizeof ws, p.shape, p.ndim);
            if (!t) {
                s = ssm_fail_file(file, SSM_ERR_MISSING, "missing tensor %s (shape %s from the "
                                  "config; it holds ssm's %s)", p.name, ws, ti->name);
            } else if (!is_float(t->dtype)) {
                s = ssm_fail_file(file, SSM_ERR_DTYPE, "tensor %s is not a floating-point tensor; "
                                  "parameters must be F32, F16 or BF16", p.name);
            } else if (!same_shape(t, p.ndim, p.shape) &&
                       !(p.count == t->numel && same_shape(t, ti->ndim, ti->shape))) {
                ssm_format_shape(hs, sizeof hs, t->shape, t->ndim);
                s = ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s has shape %s, expected %s from "
                                  "the config", p.name, hs, ws);
            } else if (p.from + p.count > numel_of(p.ndim, p.shape)) {
                s = ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s is too small for %s", p.name,
                                  ti->name);
            }
            for (int k = 0; t && k < n_st; k++) used[k] |= ssm_safetensors_tensor(st, k) == t;
            got += p.count;
        }
        if (!s && got != ti->numel)
            s = ssm_fail_file(file, SSM_ERR_SHAPE, "the stored pieces of %s hold %zu values, "
                              "expected %zu", ti->name, got, ti->numel);
    }
    for (int k = 0; k < n_st && !s; k++) {
        const char *name = ssm_safetensors_tensor(st, k)->name;
        if (!used[k] && strcmp(name, LM_HEAD))
            s = ssm_fail_file(file, SSM_ERR_FORMAT, "unexpected tensor %s: not part of a model of "
                              "this config", name);
    }
    free(used);
    const ssm_st_tensor *head = ssm_safetensors_find(st, LM_HEAD);
    const ssm_tensor_info *emb = &m->tensors[0];
    if (!s && head && (!is_float(head->dtype) || !same_shape(head, emb->ndim, emb->shape)))
        s = ssm_fail_file(file, SSM_ERR_SHAPE, "tensor %s is not shaped like the tied embedding",
                          LM_HEAD);
    return s;
}

static ssm_status read_pieces(const ssm_safetensors *st, const char *file, ssm_model *m,
                              ssm_file_names names) {
    for (int i = 0; i < m->n_tensors; i++) {
        const ssm_tensor_info *ti = &m->tensors[i];
        float *x = m->params_blob + ti->offset;
        ssm_file_piece p;
        for (int j = 0; ti->numel && ssm_file_piece_of(names, &m->config, ti, j, &p); j++) {
            const ssm_st_tensor *t = ssm_safetensors_find(st, p.name);
            int whole = p.from == 0 && p.count == t->numel;
            float *buf = whole ? x : malloc(t->numel * sizeof *buf);
            if (!buf) return ssm_fail_file(file, SSM_ERR_NOMEM, "out of memory reading %s", p.name);
            ssm_status s = ssm_safetensors_read_f32(st, p.name, buf, t->numel);
            if (!whole) {
                if (!s) memcpy(x, buf + p.from, p.count * sizeof *buf);
                free(buf);
            }
            if (!s) s = check_finite(file, p.name, x, p.count);
            if (s) return s;
            x += p.count;
        }
    }
    return SSM_OK;
}

/* A config that declares far more parameters than the file holds values is refused before the
 * model is allocated (a config.json of billions of parameters beside a small file). The model
 * may exceed the file by a little (a vocabulary padded up), never by twice. */
static ssm_status check_file_holds(const ssm_safetensors *st, const char *file, const ssm_config *c) {
    ssm_config v = *c;
    if (ssm_config_validate(&v)) return SSM_OK; /* create_model reports it */
    size_t held = 0;
    for (int i = 0; i < ssm_safetensors_count(st); i++) held += ssm_safetensors_tensor(st, i)->numel;
    size_t need = ssm_config_n_params(&v);
    if (need > 2 * held + (size_t)128 * v.d_model)
        return ssm_fail_file(file, SSM_ERR_FORMAT, "the config declares a model of %zu parameters, "
                             "but the file holds %zu values: the config does not belong to these "
                             "tensors", need, held);
    return SSM_OK;
}

/* ssm_model_create's config errors, reported as a malformed file. */
static ssm_status create_model(const char *file, const ssm_config *c, ssm_model **out) {
    ssm_status s = ssm_model_create(c, out);
    if (s == SSM_ERR_ARG) {
        char msg[768];
        snprintf(msg, sizeof msg, "%s", ssm_last_error()); /* not formatted from itself */
        return ssm_fail_file(file, SSM_ERR_FORMAT, "bad model config: %s", msg);
    }
    return s;
}

ssm_status ssm_checkpoint_load(const char *path, ssm_model **out) {
    if (!path || !out) return ssm_set_error(SSM_ERR_ARG, "ssm_checkpoint_load: NULL argument");
    *out = NULL;
    char *file = NULL, *dir = NULL;
    ssm_safetensors *st = NULL;
    ssm_model *m = NULL;
    ssm_config c;
    ssm_file_names names;
    ssm_status s = resolve_paths(path, &file, &dir);
    if (!s) s = ssm_safetensors_open(file, &st);
    if (!s) s = load_config(st, file, dir, &c, &names);
    if (!s) s = check_file_holds(st, file, &c);
    if (!s) s = create_model(file, &c, &m);
    if (!s) s = names == SSM_NAMES_OWN ? check_tensors(st, file, m) : check_pieces(st, file, m, names);
    if (!s) s = names == SSM_NAMES_OWN ? read_params(st, file, m) : read_pieces(st, file, m, names);
    if (!s) s = ssm_caduceus_file(st) ? ssm_caduceus_check_aliases(st, file, m)
                                      : check_lm_head(st, file, m);
    ssm_safetensors_close(st);
    free(file);
    free(dir);
    if (s) {
        ssm_model_free(m);
        return s;
    }
    *out = m;
    return SSM_OK;
}

/* ---- optimizer state ------------------------------------------------------------------- */

#define MOMENT_NAME 104 /* "m." + a tensor name (< 96) */

static void moment_name(char *buf, char which, const char *name) {
    snprintf(buf, MOMENT_NAME, "%c.%s", which, name);
}

ssm_status ssm_adamw_save(const ssm_adamw *opt, const ssm_model *model, const char *path,
                          const char *const *meta_kv) {
    if (!opt || !model || !path) return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_save: NULL argument");
    if (opt->n != model->n_params)
        return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_save: the optimizer was made for another model");
    int n = model->n_tensors, n_extra = kv_len(meta_kv);
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)opt->step);
    ssm_st_write_item *items = calloc((size_t)2 * n, sizeof *items);
    char *names = malloc((size_t)2 * n * MOMENT_NAME);
    const char **kv = calloc((size_t)n_extra + 3, sizeof *kv);
    ssm_status s = SSM_ERR_NOMEM;
    if (items && names && kv) {
        kv[0] = "ssm.step", kv[1] = step;
        for (int i = 0; i < n_extra; i++) kv[2 + i] = meta_kv[i];
        int k = 0;
        for (int i = 0; i < 2 * n; i++) {
            const ssm_tensor_info *ti = &model->tensors[i % n];
            if (!ti->numel) continue; /* an empty optional tensor, left out as in the model file */
            char *nm = names + (size_t)k * MOMENT_NAME;
            moment_name(nm, i < n ? 'm' : 'v', ti->name);
            items[k].name = nm;
            items[k].ndim = ti->ndim;
            for (int d = 0; d < ti->ndim; d++) items[k].shape[d] = ti->shape[d];
            items[k].data = (i < n ? opt->m : opt->v) + ti->offset;
            k++;
        }
        s = ssm_safetensors_write(path, items, k, kv);
    } else {
        ssm_set_error(s, "%s: out of memory", path);
    }
    free(items);
    free(names);
    free(kv);
    return s;
}

static ssm_status check_moments(const ssm_safetensors *st, const char *path,
                                const ssm_model *model) {
    char nm[MOMENT_NAME], hs[160], ws[160];
    int expected = 0; /* moments in the file: empty tensors' may be there (older files) or not */
    for (int i = 0; i < 2 * model->n_tensors; i++) {
        const ssm_tensor_info *ti = &model->tensors[i % model->n_tensors];
        moment_name(nm, i < model->n_tensors ? 'm' : 'v', ti->name);
        const ssm_st_tensor *t = ssm_safetensors_find(st, nm);
        expected += t || ti->numel;
        if (!t && !ti->numel) continue;
        if (!t)
            return ssm_fail_file(path, SSM_ERR_MISSING, "missing tensor %s: the optimizer state is for "
                        "another model", nm);
        if (!is_float(t->dtype))
            return ssm_fail_file(path, SSM_ERR_DTYPE, "tensor %s is not a floating-point tensor", nm);
        if (!same_shape(t, ti->ndim, ti->shape)) {
            ssm_format_shape(hs, sizeof hs, t->shape, t->ndim);
            ssm_format_shape(ws, sizeof ws, ti->shape, ti->ndim);
            return ssm_fail_file(path, SSM_ERR_SHAPE, "tensor %s has shape %s, expected %s from the model",
                        nm, hs, ws);
        }
    }
    if (ssm_safetensors_count(st) != expected)
        return ssm_fail_file(path, SSM_ERR_FORMAT, "%d tensors where the model has %d moments: the "
                    "optimizer state is for another model", ssm_safetensors_count(st), expected);
    return SSM_OK;
}

/* Read both moments into fresh buffers, so that a failure leaves opt as it was. */
static ssm_status read_moments(const ssm_safetensors *st, const char *path,
                               const ssm_model *model, float *m, float *v) {
    char nm[MOMENT_NAME];
    for (int i = 0; i < 2 * model->n_tensors; i++) {
        const ssm_tensor_info *ti = &model->tensors[i % model->n_tensors];
        int first = i < model->n_tensors;
        moment_name(nm, first ? 'm' : 'v', ti->name);
        float *x = (first ? m : v) + ti->offset;
        if (!ti->numel) continue;
        ssm_status s = ssm_safetensors_read_f32(st, nm, x, ti->numel);
        if (!s) s = check_finite(path, nm, x, ti->numel);
        if (s) return s;
    }
    return SSM_OK;
}

ssm_status ssm_adamw_load(ssm_adamw *opt, const ssm_model *model, const char *path,
                          ssm_safetensors **st_out) {
    if (st_out) *st_out = NULL;
    if (!opt || !model || !path) return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_load: NULL argument");
    if (opt->n != model->n_params)
        return ssm_set_error(SSM_ERR_ARG, "ssm_adamw_load: the optimizer was made for another model");
    ssm_safetensors *st = NULL;
    ssm_status s = ssm_safetensors_open(path, &st);
    if (s) return s;
    long long step = 0;
    const char *sv = ssm_safetensors_meta(st, "ssm.step");
    float *m = NULL, *v = NULL;
    if (!sv)
        s = ssm_fail_file(path, SSM_ERR_MISSING, "no ssm.step in the metadata: not an optimizer state");
    else if (!parse_long(sv, 0, LLONG_MAX, &step))
        s = ssm_fail_file(path, SSM_ERR_FORMAT, "metadata ssm.step = '%s' is not a step number", sv);
    if (!s) s = check_moments(st, path, model);
    if (!s) {
        m = malloc((opt->n ? opt->n : 1) * sizeof *m);
        v = malloc((opt->n ? opt->n : 1) * sizeof *v);
        s = m && v ? read_moments(st, path, model, m, v)
                   : ssm_fail_file(path, SSM_ERR_NOMEM, "out of memory for the optimizer moments");
    }
    if (!s) {
        memcpy(opt->m, m, opt->n * sizeof *m);
        memcpy(opt->v, v, opt->n * sizeof *v);
        opt->step = step;
    }
    free(m);
    free(v);
    if (!s && st_out) *st_out = st;
    else ssm_safetensors_close(st);
    return s;
}
