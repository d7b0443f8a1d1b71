/* test_checkpoint.c: safetensors reading and writing, model checkpoints (ours and the layout
 * transformers writes), half-precision conversion, optimizer state, and malformed files each
 * refused with their own status and a message that names the file and the problem. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "ssm/checkpoint.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static char tmp_root[4096];

static int setup(void **state) {
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "%s", tu_tmpdir());
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int teardown(void **state) {
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* tmp_root/name in a rotating static buffer (a few live at once) */
static const char *tpath(const char *name) {
    static char bufs[8][4200];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_root, name);
    return b;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* A safetensors file by hand: 8-byte little-endian length, header text, data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t n) {
    size_t h = strlen(header);
    uint8_t *buf = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_bytes(path, buf, 8 + h + n);
    free(buf);
}

/* The call failed with this status and a message naming the file and containing phrase. */
static void expect_error(ssm_status got, ssm_status want, const char *phrase, const char *path) {
    const char *msg = ssm_last_error();
    print_message("  %s -> %s\n", ssm_status_name(got), msg);
    if (got != want)
        fail_msg("status %d (%s), expected %d (%s): %s", got, ssm_status_name(got), want,
                 ssm_status_name(want), msg);
    if (!strstr(msg, phrase)) fail_msg("message lacks '%s': %s", phrase, msg);
    if (path && !strstr(msg, path)) fail_msg("message lacks the path %s: %s", path, msg);
}

static void expect_open_error(const char *path, ssm_status want, const char *phrase) {
    ssm_safetensors *st = (ssm_safetensors *)1;
    expect_error(ssm_safetensors_open(path, &st), want, phrase, path);
    assert_null(st);
}

static void expect_load_error(const char *path, ssm_status want, const char *phrase) {
    ssm_model *m = (ssm_model *)1;
    expect_error(ssm_checkpoint_load(path, &m), want, phrase, path);
    assert_null(m);
}

/* A small growing buffer for hand-built headers and data. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *bytes, size_t n) {
    if (n == 0 && b->p) return;
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n) memcpy(b->p + b->len, bytes, n);
    b->len += n;
    b->p[b->len] = '\0';
}

__attribute__((format(printf, 2, 3)))
static void buf_printf(buf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && n < (int)sizeof tmp);
    buf_add(b, tmp, (size_t)n);
}

/* A header under construction: entries go to hdr, their bytes to data. */
typedef struct st_builder {
    buf hdr, data;
    int n;
} st_builder;

static void sb_begin(st_builder *b, const char *meta_json) {
    memset(b, 0, sizeof *b);
    buf_printf(&b->hdr, "{");
    if (meta_json) {
        buf_printf(&b->hdr, "\"__metadata__\":%s", meta_json);
        b->n++;
    }
}

static void sb_add(st_builder *b, const char *name, const char *dtype, const int64_t *shape,
                   int ndim, const void *bytes, size_t n) {
    buf_printf(&b->hdr, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", b->n++ ? "," : "", name, dtype);
    for (int d = 0; d < ndim; d++) buf_printf(&b->hdr, "%s%lld", d ? "," : "", (long long)shape[d]);
    buf_printf(&b->hdr, "],\"data_offsets\":[%zu,%zu]}", b->data.len, b->data.len + n);
    buf_add(&b->data, bytes, n);
}

static void sb_write(st_builder *b, const char *path) {
    buf_printf(&b->hdr, "}");
    write_st(path, b->hdr.p, b->data.p, b->data.len);
    free(b->hdr.p);
    free(b->data.p);
}

static ssm_model *small_model(int vocab, uint64_t seed) {
    ssm_config c = ssm_config_default(13, 24, 2);
    c.vocab_size = vocab;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    return m;
}

/* The model's tensors as write items (conv1d as (E, 1, K) when conv3), leaving out skip. */
static int model_items(const ssm_model *m, ssm_st_write_item *items, int conv3,
                       const char *skip) {
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const ssm_tensor_info *ti = &m->tensors[i];
        if (skip && strcmp(ti->name, skip) == 0) continue;
        ssm_st_write_item *it = &items[n++];
        memset(it, 0, sizeof *it);
        it->name = ti->name;
        it->ndim = ti->ndim;
        for (int d = 0; d < ti->ndim; d++) it->shape[d] = ti->shape[d];
        it->data = m->params_blob + ti->offset;
        if (conv3 && strstr(ti->name, "conv1d.weight")) {
            it->ndim = 3;
            it->shape[1] = 1;
            it->shape[2] = ti->shape[1];
        }
    }
    return n;
}

/* The ssm.* metadata of a config as a key/value list (vals holds the strings). */
static const char **config_meta(const ssm_config *c, char vals[9][32], const char **kv) {
    const char *keys[9] = {"ssm.vocab_size", "ssm.d_model", "ssm.n_layer", "ssm.d_state",
                           "ssm.d_conv", "ssm.expand", "ssm.dt_rank", "ssm.d_inner",
                           "ssm.norm_eps"};
    int v[8] = {c->vocab_size, c->d_model, c->n_layer, c->d_state,
                c->d_conv, c->expand, c->dt_rank, c->d_inner};
    for (int i = 0; i < 8; i++) snprintf(vals[i], 32, "%d", v[i]);
    snprintf(vals[8], 32, "%.9g", (double)c->norm_eps);
    for (int i = 0; i < 9; i++) kv[2 * i] = keys[i], kv[2 * i + 1] = vals[i];
    kv[18] = NULL;
    return kv;
}

static void assert_same_params(const ssm_model *a, const ssm_model *b) {
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_tensors, b->n_tensors);
    assert_memory_equal(a->params_blob, b->params_blob, a->n_params * sizeof(float));
}

static void assert_same_config(const ssm_config *a, const ssm_config *b) {
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->d_state, b->d_state);
    assert_int_equal(a->d_conv, b->d_conv);
    assert_int_equal(a->expand, b->expand);
    assert_int_equal(a->dt_rank, b->dt_rank);
    assert_int_equal(a->d_inner, b->d_inner);
    assert_true(a->norm_eps == b->norm_eps);
}

static const char *hf_config_json(int vocab, const char *extra) {
    static char text[2048];
    snprintf(text, sizeof text,
             "{\n  \"architectures\": [\"MambaForCausalLM\"],\n  \"model_type\": \"mamba\",\n"
             "  \"vocab_size\": %d,\n  \"hidden_size\": 24,\n  \"num_hidden_layers\": 2,\n"
             "  \"state_size\": 16,\n  \"expand\": 2,\n  \"conv_kernel\": 4,\n"
             "  \"time_step_rank\": \"auto\",\n  \"intermediate_size\": 48,\n"
             "  \"layer_norm_epsilon\": 1e-05,\n  \"use_bias\": false,\n"
             "  \"use_conv_bias\": true,\n  \"tie_word_embeddings\": true,\n"
             "  \"hidden_act\": \"silu\",\n  \"torch_dtype\": \"float32\"%s\n}\n",
             vocab, extra ? extra : "");
    return text;
}

/* A transformers-style directory: model.safetensors with only {"format": "pt"}, conv1d as
 * (E, 1, K), lm_head.weight = head (NULL: the embedding), and config.json. */
static void write_hf_dir(const char *dir, const ssm_model *m, const float *head,
                         const char *config_json) {
    mkdir(dir, 0755);
    ssm_st_write_item *items = calloc((size_t)m->n_tensors + 1, sizeof *items);
    int n = model_items(m, items, 1, NULL);
    items[n] = items[0];
    items[n].name = "lm_head.weight";
    if (head) items[n].data = head;
    const char *kv[] = {"format", "pt", NULL};
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    TU_OK(ssm_safetensors_write(p, items, n + 1, kv));
    free(items);
    if (config_json) {
        snprintf(p, sizeof p, "%s/config.json", dir);
        write_text(p, config_json);
    }
}

/* ---- round trips ------------------------------------------------------------------------- */

static void test_model_roundtrip(void **state) {
    (void)state;
    ssm_config c = ssm_config_default(13, 24, 2);
    assert_int_equal(c.vocab_size, 16); /* a new model's vocabulary is padded */
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, 7));
    const char *path = tpath("ck.safetensors");
    const char *kv[] = {"recipe", "model: {d_model: 24}\n", NULL};
    TU_OK(ssm_checkpoint_save(m, path, kv));
    assert_false(exists(tpath("ck.safetensors.tmp")));

    ssm_model *l;
    TU_OK(ssm_checkpoint_load(path, &l));
    assert_same_config(&l->config, &m->config);
    assert_int_equal(l->config.vocab_size, 16);
    assert_same_params(l, m);

    /* the file itself: aligned header, F32 tensors, conv1d (E, 1, K), our metadata */
    FILE *f = fopen(path, "rb");
    uint8_t len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    fclose(f);
    assert_int_equal(len[0] % 8, 0);
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(path, &st));
    int nonempty = 0; /* empty optional tensors (Jamba's inner norms, off here) are left out */
    for (int i = 0; i < m->n_tensors; i++) nonempty += m->tensors[i].numel > 0;
    assert_int_equal(ssm_safetensors_count(st), nonempty);
    const ssm_st_tensor *conv = ssm_safetensors_find(st, "backbone.layers.1.mixer.conv1d.weight");
    assert_non_null(conv);
    assert_int_equal(conv->ndim, 3);
    assert_int_equal(conv->shape[0], 48);
    assert_int_equal(conv->shape[1], 1);
    assert_int_equal(conv->shape[2], 4);
    assert_int_equal(conv->dtype, SSM_DTYPE_F32);
    assert_string_equal(ssm_safetensors_meta(st, "format"), "pt");
    assert_string_equal(ssm_safetensors_meta(st, "recipe"), "model: {d_model: 24}\n");
    assert_string_equal(ssm_safetensors_meta(st, "ssm.vocab_size"), "16");
    assert_string_equal(ssm_safetensors_meta(st, "ssm.dt_rank"), "2");
    assert_null(ssm_safetensors_meta(st, "nope"));
    assert_null(ssm_safetensors_find(st, "lm_head.weight"));
    ssm_safetensors_close(st);

    /* saving over an existing checkpoint replaces it */
    m->params.norm_f[0] = 3.5f;
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    ssm_model *l2;
    TU_OK(ssm_checkpoint_load(path, &l2));
    assert_true(l2->params.norm_f[0] == 3.5f);
    ssm_model_free(l2);
    ssm_model_free(l);
    ssm_model_free(m);
}

/* What transformers' save_pretrained writes: no ssm.* metadata, config.json beside it. */
static void test_load_transformers_directory(void **state) {
    (void)state;
    ssm_model *m = small_model(13, 3); /* unpadded, as transformers keeps it */
    const char *dir = tpath("hf");
    write_hf_dir(dir, m, NULL, hf_config_json(13, NULL));
    ssm_model *l;
    TU_OK(ssm_checkpoint_load(dir, &l));
    assert_int_equal(l->config.vocab_size, 13); /* not padded on load */
    assert_int_equal(l->config.dt_rank, 2);     /* "auto" = ceil(24 / 16) */
    assert_same_config(&l->config, &m->config);
    assert_same_params(l, m);
    ssm_model_free(l);
    /* the file inside the directory loads the same */
    TU_OK(ssm_checkpoint_load(tpath("hf/model.safetensors"), &l));
    assert_same_params(l, m);
    ssm_model_free(l);
    /* conv1d stored (E, K) is accepted too */
    ssm_st_write_item items[32];
    char vals[9][32];
    const char *kv[20];
    int n = model_items(m, items, 0, NULL);
    TU_OK(ssm_safetensors_write(tpath("conv2d.safetensors"), items, n,
                                config_meta(&m->config, vals, kv)));
    TU_OK(ssm_checkpoint_load(tpath("conv2d.safetensors"), &l));
    assert_same_params(l, m);
    ssm_model_free(l);
    ssm_model_free(m);
}

static void test_config_json_errors(void **state) {
    (void)state;
    ssm_model *m = small_model(13, 4);
    write_hf_dir(tpath("nocfg"), m, NULL, NULL);
    expect_load_error(tpath("nocfg"), SSM_ERR_MISSING, "a config is needed");
    write_hf_dir(tpath("bias"), m, NULL, NULL);
    write_text(tpath("bias/config.json"),
               "{\"model_type\": \"mamba\", \"vocab_size\": 13, \"hidden_size\": 24, "
               "\"num_hidden_layers\": 2, \"use_bias\": true}");
    expect_load_error(tpath("bias"), SSM_ERR_UNSUPPORTED, "use_bias");
    write_text(tpath("bias/config.json"),
               "{\"vocab_size\": 13, \"hidden_size\": 24, \"num_hidden_layers\": 2, "
               "\"use_conv_bias\": false}");
    expect_load_error(tpath("bias"), SSM_ERR_UNSUPPORTED, "use_conv_bias");
    write_text(tpath("bias/config.json"),
               "{\"model_type\": \"mamba2\", \"vocab_size\": 13, \"hidden_size\": 24, "
               "\"num_hidden_layers\": 2}");
    /* Mamba2Config's defaults (128 heads of 64) do not fit hidden_size 24 */
    expect_load_error(tpath("bias"), SSM_ERR_FORMAT, "num_heads");
    write_text(tpath("bias/config.json"),
               "{\"model_type\": \"jamba\", \"vocab_size\": 13, \"hidden_size\": 24, "
               "\"num_hidden_layers\": 2}");
    /* JambaConfig's defaults (32 heads) do not divide hidden_size 24 */
    expect_load_error(tpath("bias"), SSM_ERR_UNSUPPORTED, "num_attention_heads");
    write_text(tpath("bias/config.json"), "{\"vocab_size\": 13,\n \"hidden_size\": 24,,}");
    expect_load_error(tpath("bias"), SSM_ERR_FORMAT, "line 2");
    write_text(tpath("bias/config.json"), "{\"vocab_size\": 13, \"num_hidden_layers\": 2}");
    expect_load_error(tpath("bias"), SSM_ERR_MISSING, "hidden_size");
    /* minimal config: MambaConfig's defaults fill the rest */
    write_text(tpath("bias/config.json"),
               "{\"vocab_size\": 13, \"hidden_size\": 24, \"num_hidden_layers\": 2}");
    ssm_model *l;
    TU_OK(ssm_checkpoint_load(tpath("bias"), &l));
    assert_same_params(l, m);
    ssm_model_free(l);
    /* a config that disagrees with the tensors */
    write_text(tpath("bias/config.json"),
               "{\"vocab_size\": 13, \"hidden_size\": 24, \"num_hidden_layers\": 2, "
               "\"time_step_rank\": 3}");
    expect_load_error(tpath("bias"), SSM_ERR_SHAPE,
                      "tensor backbone.layers.0.mixer.x_proj.weight has shape [34, 48], "
                      "expected [35, 48] from the config");
    /* a config of billions of parameters beside these few thousand: refused before the model
     * is allocated (calloc of 2 x 24 GB would be attempted otherwise) */
    write_text(tpath("bias/config.json"),
               "{\"vocab_size\": 13, \"hidden_size\": 16384, \"num_hidden_layers\": 48}");
    expect_load_error(tpath("bias"), SSM_ERR_FORMAT, "the config does not belong to these tensors");
    ssm_model_free(m);
}

/* We tie the head; a stored head that is not the embedding is refused. */
static void test_untied_lm_head(void **state) {
    (void)state;
    ssm_model *m = small_model(13, 5);
    size_t n = m->tensors[0].numel;
    float *head = malloc(n * sizeof *head);
    tu_fill_uniform(head, n, -0.05f, 0.05f, 11);
    write_hf_dir(tpath("untied"), m, head, hf_config_json(13, NULL));
    expect_load_error(tpath("untied"), SSM_ERR_UNSUPPORTED, "untied");
    free(head);
    ssm_model_free(m);
}

static void test_optimizer_roundtrip(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 6);
    ssm_adamw_config oc = ssm_adamw_config_default();
    ssm_adamw *a, *b;
    TU_OK(ssm_adamw_create(&oc, m, &a));
    TU_OK(ssm_adamw_create(&oc, m, &b));
    tu_fill_uniform(a->m, a->n, -1, 1, 1);
    tu_fill_uniform(a->v, a->n, 0, 1, 2);
    a->step = 1234567890123LL;
    const char *kv[] = {"data.position", "98765", "rng", "1 2 3 4", NULL};
    const char *path = tpath("opt.safetensors");
    TU_OK(ssm_adamw_save(a, m, path, kv));
    ssm_safetensors *st;
    TU_OK(ssm_adamw_load(b, m, path, &st));
    assert_memory_equal(a->m, b->m, a->n * sizeof(float));
    assert_memory_equal(a->v, b->v, a->n * sizeof(float));
    assert_true(b->step == a->step);
    assert_string_equal(ssm_safetensors_meta(st, "data.position"), "98765");
    assert_string_equal(ssm_safetensors_meta(st, "rng"), "1 2 3 4");
    ssm_safetensors_close(st);
    TU_OK(ssm_adamw_load(b, m, path, NULL));

    /* a state saved for another model is refused and leaves the optimizer as it was */
    ssm_config c3 = ssm_config_default(13, 24, 3);
    ssm_model *m3;
    TU_OK(ssm_model_create(&c3, &m3));
    ssm_adamw *c;
    TU_OK(ssm_adamw_create(&oc, m3, &c));
    c->m[0] = 42.0f;
    expect_error(ssm_adamw_load(c, m3, path, &st), SSM_ERR_MISSING,
                 "missing tensor m.backbone.layers.2.norm.weight", path);
    assert_null(st);
    assert_true(c->m[0] == 42.0f && c->step == 0);
    /* a model checkpoint is not an optimizer state */
    TU_OK(ssm_checkpoint_save(m, tpath("model.safetensors"), NULL));
    expect_error(ssm_adamw_load(b, m, tpath("model.safetensors"), NULL), SSM_ERR_MISSING,
                 "ssm.step", tpath("model.safetensors"));
    ssm_adamw_free(a);
    ssm_adamw_free(b);
    ssm_adamw_free(c);
    ssm_model_free(m3);
    ssm_model_free(m);
}

/* ---- dtype conversion -------------------------------------------------------------------- */

static void test_half_precision_values(void **state) {
    (void)state;
    const uint16_t f16[] = {0x3C00, 0xC000, 0x0001, 0x03FF, 0x0400, 0x7BFF,
                            0x7C00, 0xFC00, 0x7E00, 0x8000, 0x3555};
    const float f16_want[] = {1.0f, -2.0f, 0x1p-24f, 0x3ffp-24f, 0x1p-14f, 65504.0f,
                              INFINITY, -INFINITY, NAN, -0.0f, 0x1.554p-2f};
    const uint16_t bf16[] = {0x3F80, 0xC040, 0x4049, 0xFF80};
    const float bf16_want[] = {1.0f, -3.0f, 3.140625f, -INFINITY};
    const double f64[] = {0.1, -1e300};
    const int64_t i64[] = {-5, 2147483647, 7}, big[] = {(int64_t)1 << 40};
    const int32_t i32[] = {-1, 123456};
    const uint8_t u8[] = {0, 200, 255};
    st_builder b;
    sb_begin(&b, "{\"format\":\"pt\"}");
    sb_add(&b, "h", "F16", (int64_t[]){11}, 1, f16, sizeof f16);
    sb_add(&b, "b", "BF16", (int64_t[]){2, 2}, 2, bf16, sizeof bf16);
    sb_add(&b, "d", "F64", (int64_t[]){2}, 1, f64, sizeof f64);
    sb_add(&b, "i", "I64", (int64_t[]){3}, 1, i64, sizeof i64);
    sb_add(&b, "big", "I64", (int64_t[]){1}, 1, big, sizeof big);
    sb_add(&b, "j", "I32", (int64_t[]){1, 2}, 2, i32, sizeof i32);
    sb_add(&b, "u", "U8", (int64_t[]){3}, 1, u8, sizeof u8);
    sb_add(&b, "scalar", "F32", (int64_t[]){0}, 0, (float[]){2.5f}, 4);
    sb_add(&b, "empty", "F32", (int64_t[]){0, 3}, 2, NULL, 0);
    const char *path = tpath("dtypes.safetensors");
    sb_write(&b, path);

    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(path, &st));
    assert_int_equal(ssm_safetensors_count(st), 9);
    assert_string_equal(ssm_safetensors_tensor(st, 0)->name, "h");
    float out[11];
    TU_OK(ssm_safetensors_read_f32(st, "h", out, 11));
    for (int i = 0; i < 11; i++) {
        if (isnan(f16_want[i])) assert_true(isnan(out[i]));
        else assert_memory_equal(&out[i], &f16_want[i], sizeof(float)); /* -0 stays -0 */
    }
    TU_OK(ssm_safetensors_read_f32(st, "b", out, 4));
    assert_memory_equal(out, bf16_want, sizeof bf16_want);
    TU_OK(ssm_safetensors_read_f32(st, "d", out, 2));
    assert_true(out[0] == 0.1f && out[1] == -INFINITY);
    TU_OK(ssm_safetensors_read_f32(st, "scalar", out, 1));
    assert_true(out[0] == 2.5f);
    TU_OK(ssm_safetensors_read_f32(st, "empty", out, 0));
    int32_t iv[11];
    TU_OK(ssm_safetensors_read_i32(st, "i", iv, 3));
    assert_true(iv[0] == -5 && iv[1] == 2147483647 && iv[2] == 7);
    TU_OK(ssm_safetensors_read_i32(st, "j", iv, 2));
    assert_true(iv[0] == -1 && iv[1] == 123456);
    TU_OK(ssm_safetensors_read_i32(st, "u", iv, 3));
    assert_true(iv[0] == 0 && iv[1] == 200 && iv[2] == 255);
    expect_error(ssm_safetensors_read_i32(st, "big", iv, 1), SSM_ERR_FORMAT, "32 bits", path);
    expect_error(ssm_safetensors_read_f32(st, "i", out, 3), SSM_ERR_DTYPE, "I64", path);
    expect_error(ssm_safetensors_read_i32(st, "h", iv, 11), SSM_ERR_DTYPE, "F16", path);
    expect_error(ssm_safetensors_read_f32(st, "h", out, 3), SSM_ERR_ARG, "11 elements", path);
    expect_error(ssm_safetensors_read_f32(st, "zz", out, 3), SSM_ERR_MISSING, "zz", path);
    ssm_safetensors_close(st);
}

static uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16); /* truncation: what the reader must give back exactly */
}

/* float to half by truncation, for normal values (smaller ones flush to zero) */
static uint16_t to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)(u >> 16 & 0x8000);
    int exp = (int)(u >> 23 & 0xff) - 127 + 15;
    if (exp <= 0) return sign;
    assert_true(exp < 31);
    return (uint16_t)(sign | exp << 10 | (u >> 13 & 0x3ff));
}

/* A whole checkpoint in half precision, BF16 and F16 tensors mixed, loads converted. */
static void test_half_precision_checkpoint(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 8);
    char vals[9][32];
    const char *kv[20];
    config_meta(&m->config, vals, kv);
    buf meta = {0};
    buf_printf(&meta, "{\"format\":\"pt\"");
    for (int i = 0; kv[i]; i += 2) buf_printf(&meta, ",\"%s\":\"%s\"", kv[i], kv[i + 1]);
    buf_printf(&meta, "}");
    st_builder b;
    sb_begin(&b, meta.p);
    free(meta.p);
    float *want = malloc(m->n_params * sizeof *want);
    uint16_t *h = malloc(m->n_params * sizeof *h);
    for (int t = 0; t < m->n_tensors; t++) {
        const ssm_tensor_info *ti = &m->tensors[t];
        const float *x = m->params_blob + ti->offset;
        for (size_t i = 0; i < ti->numel; i++) {
            if (t % 2 == 0) {
                h[ti->offset + i] = to_bf16(x[i]);
                uint32_t u = (uint32_t)h[ti->offset + i] << 16;
                memcpy(&want[ti->offset + i], &u, 4);
            } else {
                h[ti->offset + i] = to_f16(x[i]);
                want[ti->offset + i] = x[i];
            }
        }
        sb_add(&b, ti->name, t % 2 == 0 ? "BF16" : "F16", ti->shape, ti->ndim,
               h + ti->offset, ti->numel * 2);
    }
    const char *path = tpath("half.safetensors");
    sb_write(&b, path);
    ssm_model *l;
    TU_OK(ssm_checkpoint_load(path, &l));
    for (int t = 0; t < m->n_tensors; t++) {
        const ssm_tensor_info *ti = &m->tensors[t];
        const float *got = l->params_blob + ti->offset, *w = want + ti->offset;
        for (size_t i = 0; i < ti->numel; i++) {
            if (t % 2 == 0) assert_true(got[i] == w[i]);
            else assert_true(fabsf(got[i] - w[i]) <= 1e-3f * fabsf(w[i]) + 0x1p-14f);
        }
    }
    free(want);
    free(h);
    ssm_model_free(l);
    ssm_model_free(m);
}

/* ---- malformed files --------------------------------------------------------------------- */

static void test_empty_file(void **state) {
    (void)state;
    write_bytes(tpath("empty.safetensors"), "", 0);
    expect_open_error(tpath("empty.safetensors"), SSM_ERR_FORMAT, "shorter than 8 bytes");
    write_bytes(tpath("five.safetensors"), "\x05\0\0\0\0", 5);
    expect_open_error(tpath("five.safetensors"), SSM_ERR_FORMAT, "shorter than 8 bytes");
    expect_load_error(tpath("empty.safetensors"), SSM_ERR_FORMAT, "shorter than 8 bytes");
    expect_open_error(tpath("absent.safetensors"), SSM_ERR_IO, "No such file");
    expect_load_error(tpath("absent.safetensors"), SSM_ERR_IO, "No such file");
    expect_open_error(tmp_root, SSM_ERR_IO, "not a regular file");
}

static void test_truncated_file(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 9);
    const char *path = tpath("cut.safetensors");
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 100), 0);
    expect_open_error(path, SSM_ERR_FORMAT, "past the end of the data section");
    expect_load_error(path, SSM_ERR_FORMAT, "truncated");
    ssm_model_free(m);
}

static void test_header_length_too_large(void **state) {
    (void)state;
    uint8_t bytes[16] = {0xe8, 0x03}; /* 1000, with 8 bytes after it */
    memcpy(bytes + 8, "{}      ", 8);
    write_bytes(tpath("long.safetensors"), bytes, sizeof bytes);
    expect_open_error(tpath("long.safetensors"), SSM_ERR_FORMAT, "larger than the file");
    uint8_t absurd[16] = {0, 0, 0, 0, 0, 1}; /* 2^40 */
    write_bytes(tpath("absurd.safetensors"), absurd, sizeof absurd);
    expect_open_error(tpath("absurd.safetensors"), SSM_ERR_FORMAT, "more than 100 MB");
}

static void test_invalid_json(void **state) {
    (void)state;
    const char *path = tpath("json.safetensors");
    write_st(path, "{\"a\": {\"dtype\": \"F32\",\n \"shape\": [1], \"data_offsets\": [0, 4]", "abcd", 4);
    expect_open_error(path, SSM_ERR_FORMAT, "invalid JSON header at line 2");
    write_st(path, "", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "invalid JSON header");
    write_st(path, "[1, 2]", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "not an object");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
             "\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "abcdefgh", 8);
    expect_open_error(path, SSM_ERR_FORMAT, "duplicate");
}

static void test_unknown_dtype(void **state) {
    (void)state;
    const char *path = tpath("dtype.safetensors");
    write_st(path, "{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
             "abcd", 4);
    expect_open_error(path, SSM_ERR_DTYPE, "unsupported dtype F8_E4M3");
    write_st(path, "{\"a\": {\"dtype\": \"Q4\", \"shape\": [4], \"data_offsets\": [0, 2]}}", "ab", 2);
    expect_open_error(path, SSM_ERR_DTYPE, "unsupported dtype Q4");
    write_st(path, "{\"a\": {\"dtype\": 7, \"shape\": [4], \"data_offsets\": [0, 2]}}", "ab", 2);
    expect_open_error(path, SSM_ERR_FORMAT, "\"dtype\" is missing or not a string");
}

static void test_offsets_out_of_range(void **state) {
    (void)state;
    const char *path = tpath("offsets.safetensors");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
             "abcdefgh", 8);
    expect_open_error(path, SSM_ERR_FORMAT, "data_offsets [4, 12] run past the end of the data "
                      "section (8 bytes)");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}",
             "abcdefgh", 8);
    expect_open_error(path, SSM_ERR_FORMAT, "begin after they end");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", "abcd", 4);
    expect_open_error(path, SSM_ERR_FORMAT, "two non-negative integers");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
             "abcd", 4);
    expect_open_error(path, SSM_ERR_FORMAT, "two non-negative integers");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", "abcd", 4);
    expect_open_error(path, SSM_ERR_FORMAT, "two non-negative integers");
}

static void test_overlapping_tensors(void **state) {
    (void)state;
    const char *path = tpath("overlap.safetensors");
    char data[24] = {0};
    write_st(path, "{\"b\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]},"
             "\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", data, 24);
    expect_open_error(path, SSM_ERR_FORMAT, "tensors 'a' [0, 16] and 'b' [8, 24] overlap");
    /* touching is fine, and so are empty tensors anywhere */
    write_st(path, "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [16, 24]},"
             "\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
             "\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", data, 24);
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(path, &st));
    ssm_safetensors_close(st);
}

static void test_size_mismatch(void **state) {
    (void)state;
    const char *path = tpath("size.safetensors");
    char data[24] = {0};
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}",
             data, 24);
    expect_open_error(path, SSM_ERR_FORMAT, "hold 20 bytes, but shape [2, 3] of F32 needs 24");
    write_st(path, "{\"a\": {\"dtype\": \"BF16\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}",
             data, 24);
    expect_open_error(path, SSM_ERR_FORMAT, "needs 12");
}

static void test_bad_entries(void **state) {
    (void)state;
    const char *path = tpath("entries.safetensors");
    write_st(path, "{\"a\": 5}", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "entry of tensor 'a' is not an object");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}",
             NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "list of non-negative integers");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 0]}}",
             NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "list of non-negative integers");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": \"2\", \"data_offsets\": [0, 0]}}",
             NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "list of non-negative integers");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
             "\"data_offsets\": [0, 4]}}", "abcd", 4);
    expect_open_error(path, SSM_ERR_FORMAT, "9 dimensions");
    write_st(path, "{\"__metadata__\": {\"format\": \"pt\", \"n\": 3}}", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "value of key 'n' is not a string");
    write_st(path, "{\"__metadata__\": [\"format\"]}", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "__metadata__ is not an object");
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
             "\"data_offsets\": [0, 0]}}", NULL, 0);
    expect_open_error(path, SSM_ERR_FORMAT, "too large");
}

static void test_missing_tensor(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 10);
    ssm_st_write_item items[32];
    char vals[9][32];
    const char *kv[20];
    int n = model_items(m, items, 1, "backbone.layers.1.mixer.D");
    const char *path = tpath("missing.safetensors");
    TU_OK(ssm_safetensors_write(path, items, n, config_meta(&m->config, vals, kv)));
    expect_load_error(path, SSM_ERR_MISSING, "missing tensor backbone.layers.1.mixer.D");
    /* metadata with some ssm.* keys but not all */
    kv[2] = "other"; /* ssm.d_model renamed */
    n = model_items(m, items, 1, NULL);
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_MISSING, "ssm.d_model");
    ssm_model_free(m);
}

static void test_wrong_shape(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 12);
    ssm_st_write_item items[34];
    char vals[9][32];
    const char *kv[20];
    int n = model_items(m, items, 1, NULL);
    items[2].shape[1] = 23; /* layer 0's in_proj, (96, 24) */
    const char *path = tpath("shape.safetensors");
    config_meta(&m->config, vals, kv);
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_SHAPE,
                      "tensor backbone.layers.0.mixer.in_proj.weight has shape [96, 23], "
                      "expected [96, 24] from the config");
    /* an extra tensor that is not part of the model */
    n = model_items(m, items, 1, NULL);
    items[n] = items[1];
    items[n++].name = "backbone.layers.2.norm.weight";
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_FORMAT, "unexpected tensor backbone.layers.2.norm.weight");
    /* lm_head of another shape */
    n = model_items(m, items, 1, NULL);
    items[n] = items[1];
    items[n++].name = "lm_head.weight";
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_SHAPE, "lm_head.weight has shape [24], expected [16, 24]");
    /* a config that cannot make a model */
    n = model_items(m, items, 1, NULL);
    snprintf(vals[2], 32, "0"); /* ssm.n_layer */
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_FORMAT, "ssm.n_layer");
    snprintf(vals[2], 32, "2");
    snprintf(vals[8], 32, "-1");
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    expect_load_error(path, SSM_ERR_FORMAT, "norm_eps");
    ssm_model_free(m);
}

/* A failed save leaves neither the file nor its temporary behind. */
static void test_failed_save(void **state) {
    (void)state;
    ssm_model *m = small_model(16, 13);
    const char *path = tpath("no/such/dir/ck.safetensors");
    expect_error(ssm_checkpoint_save(m, path, NULL), SSM_ERR_IO, "No such file or directory",
                 "ck.safetensors.tmp");
    assert_false(exists(tpath("no")));
    /* the rename fails: the target is a non-empty directory; the temporary is removed */
    mkdir(tpath("taken"), 0755);
    write_text(tpath("taken/x"), "x");
    expect_error(ssm_checkpoint_save(m, tpath("taken"), NULL), SSM_ERR_IO, "cannot rename",
                 tpath("taken"));
    assert_false(exists(tpath("taken.tmp")));
    assert_true(exists(tpath("taken/x")));
    /* bad arguments to the writer */
    ssm_st_write_item dup[2] = {{.name = "a", .ndim = 1, .shape = {1}, .data = (float[]){1}},
                                {.name = "a", .ndim = 1, .shape = {1}, .data = (float[]){1}}};
    expect_error(ssm_safetensors_write(tpath("dup"), dup, 2, NULL), SSM_ERR_ARG, "repeated", NULL);
    const char *odd[] = {"k", NULL};
    expect_error(ssm_safetensors_write(tpath("dup"), dup, 1, odd), SSM_ERR_ARG, "no value", NULL);
    const char *twice[] = {"format", "x", NULL};
    expect_error(ssm_checkpoint_save(m, tpath("dup"), twice), SSM_ERR_ARG, "twice", NULL);
    assert_false(exists(tpath("dup")));
    assert_false(exists(tpath("dup.tmp")));
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_transformers_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_json_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untied_lm_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_optimizer_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_precision_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_precision_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_length_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offsets_out_of_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overlapping_tensors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_size_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_tensor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_save, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
