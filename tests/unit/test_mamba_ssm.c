/* test_mamba_ssm.c: mamba_ssm's MixerModel hybrid checkpoints (its config.json: d_model,
 * n_layer, ssm_cfg, attn_layer_idx, attn_cfg, d_intermediate) and its names (the MHA's q, k, v
 * stacked in mixer.in_proj.weight, mixer.out_proj.weight, backbone.embedding.weight).
 *   1. round trip: a Mamba-2 + attention (GQA, RoPE) model with a SwiGLU MLP in every block
 *      saves under mamba_ssm's names with its config.json; loading it by the metadata and by
 *      the config.json alone gives the same config and bitwise the same logits; the same
 *      for a Mamba-1 + attention model without d_intermediate;
 *   2. a hand-made fixture (config.json as mamba_ssm writes it, in_proj rows numbered): the
 *      loaded q_proj, k_proj, v_proj are the rows [q | k | v] of in_proj, o_proj is out_proj,
 *      the MLP width is d_intermediate rounded up to 128, the vocabulary padded;
 *   3. configs ssm cannot hold are refused naming the key (mamba_ssm's MHA defaults: causal
 *      false, biases true; the qkv conv; Mamba3). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "modelcheck.h"
#include "ssm/checkpoint.h"

enum { VOCAB = 16 };

/* the group's dir/name, the folder made */
static const char *tfile(const char *dir, const char *name) {
    char rel[256];
    mkdir(tu_group_path(dir), 0700);
    snprintf(rel, sizeof rel, "%s/%s", dir, name ? name : "");
    return tu_group_path(rel);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static ssm_model *hybrid_model(int mamba2, uint64_t seed) {
    ssm_config c = ssm_config_default(VOCAB, 8, 1);
    c.d_state = 4, c.d_conv = 3;
    c.mamba2.headdim = 4, c.mamba2.d_state = 4, c.mamba2.chunk_size = 4;
    c.attention = (ssm_attention_config){.n_heads = 2, .n_kv_heads = 1, .head_dim = 4,
                                         .rotary_dim = 2, .rope_base = 500.0f, .max_context = 64};
    c.mlp = (ssm_mlp_config){.d_ff = 128, .activation = SSM_MLP_SWIGLU};
    TU_OK(ssm_config_set_pattern(&c, mamba2 ? "M+-*+-M+-" : "*MM*", mamba2 ? SSM_LAYER_MAMBA2
                                                                       : SSM_LAYER_MAMBA1));
    return tu_noisy_model(&c, seed);
}

static void same_logits(ssm_model *a, ssm_model *b) { tu_assert_same_logits(a, b, 2, 7, 3); }

static char *read_text(const char *path) {
    static char text[8192];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* ---- 1: round trip ------------------------------------------------------------------------ */

static void roundtrip(int mamba2) {
    ssm_model *m = hybrid_model(mamba2, 5 + mamba2), *back;
    const char *dir = mamba2 ? "m2" : "m1";
    TU_OK(ssm_checkpoint_save(m, tfile(dir, "model.safetensors"), NULL));
    TU_OK(ssm_checkpoint_write_config(m, tfile(dir, "config.json"), 0));
    const char *text = read_text(tfile(dir, "config.json"));
    print_message("%s\n", text);
    assert_non_null(strstr(text, mamba2 ? "\"attn_layer_idx\": [\n    1\n  ]" : "\"attn_layer_idx\": [\n    0,\n    3\n  ]"));
    assert_non_null(strstr(text, mamba2 ? "\"d_intermediate\": 128" : "\"d_intermediate\": 0"));
    assert_non_null(strstr(text, mamba2 ? "\"layer\": \"Mamba2\"" : "\"layer\": \"Mamba1\""));
    assert_non_null(strstr(text, "\"causal\": true"));
    assert_non_null(strstr(text, "\"qkv_proj_bias\": false"));
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(tfile(dir, "model.safetensors"), &st));
    int b = mamba2 ? 1 : 0;
    char name[128];
    snprintf(name, sizeof name, "backbone.layers.%d.mixer.in_proj.weight", b);
    const ssm_st_tensor *t = ssm_safetensors_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->shape[0], (2 + 2 * 1) * 4);
    snprintf(name, sizeof name, "backbone.layers.%d.mixer.q_proj.weight", b);
    assert_null(ssm_safetensors_find(st, name));
    assert_non_null(ssm_safetensors_find(st, "backbone.embedding.weight"));
    assert_non_null(ssm_safetensors_find(st, "lm_head.weight"));
    if (mamba2) assert_non_null(ssm_safetensors_find(st, "backbone.layers.2.mlp.fc1.weight"));
    ssm_safetensors_close(st);
    TU_OK(ssm_checkpoint_load(tfile(dir, "model.safetensors"), &back));
    same_logits(m, back);
    ssm_model_free(back);
    /* by the config.json alone */
    tu_copy_without_metadata(tfile(dir, "model.safetensors"), tfile(dir, "plain.safetensors"));
    rename(tfile(dir, "plain.safetensors"), tfile(dir, "model.safetensors"));
    TU_OK(ssm_checkpoint_load(tfile(dir, NULL), &back));
    assert_memory_equal(back->config.layer_kind, m->config.layer_kind, (size_t)m->config.n_layer);
    assert_memory_equal(back->config.second, m->config.second, (size_t)m->config.n_layer);
    assert_int_equal(back->config.attention.rotary_dim, 2);
    assert_true(back->config.attention.rope_base == 500.0f);
    same_logits(m, back);
    ssm_model_free(back);
    ssm_model_free(m);
}

static void test_roundtrip(void **st) {
    (void)st;
    roundtrip(1);
    roundtrip(0);
}

/* ---- 2: a hand-made fixture --------------------------------------------------------------- */

static void test_fixture(void **st) {
    (void)st;
    /* D 8, vocab 10 padded to 16; block 0 Mamba-2, block 1 MHA of 2 heads (1 kv head) of 4;
     * d_intermediate 100 -> GatedMLP width 128 */
    enum { D = 8, V = 16, H = 2, KV = 1, HD = 4, I = 16, P = 4, N = 4, K = 4, F = 128 };
    enum { NH = I / P, CD = I + 2 * N, QKV = (H + 2 * KV) * HD };
    write_text(tfile("fx", "config.json"),
               "{\"d_model\": 8, \"d_intermediate\": 100, \"n_layer\": 2, \"vocab_size\": 10,\n"
               " \"ssm_cfg\": {\"layer\": \"Mamba2\", \"d_state\": 4, \"headdim\": 4, \"chunk_size\": 4},\n"
               " \"attn_layer_idx\": [1], \"attn_cfg\": {\"causal\": true, \"num_heads\": 2,\n"
               " \"num_heads_kv\": 1, \"head_dim\": 4, \"out_proj_bias\": false,\n"
               " \"qkv_proj_bias\": false, \"rotary_emb_dim\": 4},\n"
               " \"rms_norm\": true, \"residual_in_fp32\": true, \"fused_add_norm\": true,\n"
               " \"pad_vocab_size_multiple\": 8, \"tie_embeddings\": true}\n");
    struct { const char *name; int ndim; int64_t s0, s1, s2; } spec[] = {
        {"backbone.embedding.weight", 2, V, D, 0},
        {"backbone.layers.0.norm.weight", 1, D, 0, 0},
        {"backbone.layers.0.mixer.in_proj.weight", 2, I + CD + NH, D, 0},
        {"backbone.layers.0.mixer.conv1d.weight", 3, CD, 1, K},
        {"backbone.layers.0.mixer.conv1d.bias", 1, CD, 0, 0},
        {"backbone.layers.0.mixer.dt_bias", 1, NH, 0, 0},
        {"backbone.layers.0.mixer.A_log", 1, NH, 0, 0},
        {"backbone.layers.0.mixer.D", 1, NH, 0, 0},
        {"backbone.layers.0.mixer.norm.weight", 1, I, 0, 0},
        {"backbone.layers.0.mixer.out_proj.weight", 2, D, I, 0},
        {"backbone.layers.0.norm2.weight", 1, D, 0, 0},
        {"backbone.layers.0.mlp.fc1.weight", 2, 2 * F, D, 0},
        {"backbone.layers.0.mlp.fc2.weight", 2, D, F, 0},
        {"backbone.layers.1.norm.weight", 1, D, 0, 0},
        {"backbone.layers.1.mixer.in_proj.weight", 2, QKV, D, 0},
        {"backbone.layers.1.mixer.out_proj.weight", 2, D, H * HD, 0},
        {"backbone.layers.1.norm2.weight", 1, D, 0, 0},
        {"backbone.layers.1.mlp.fc1.weight", 2, 2 * F, D, 0},
        {"backbone.layers.1.mlp.fc2.weight", 2, D, F, 0},
        {"backbone.norm_f.weight", 1, D, 0, 0},
    };
    enum { NT = sizeof spec / sizeof spec[0] };
    ssm_st_write_item items[NT];
    float *data[NT];
    for (int i = 0; i < NT; i++) {
        size_t n = (size_t)spec[i].s0 * (spec[i].s1 ? spec[i].s1 : 1) * (spec[i].s2 ? spec[i].s2 : 1);
        data[i] = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++) data[i][k] = 0.001f * (float)((k * 7 + i) % 97) - 0.04f;
        if (strstr(spec[i].name, "layers.1.mixer.in_proj")) /* row r holds r + column / 100 */
            for (size_t k = 0; k < n; k++) data[i][k] = (float)(k / D) + 0.01f * (float)(k % D);
        items[i] = (ssm_st_write_item){.name = spec[i].name, .ndim = spec[i].ndim,
                                       .shape = {spec[i].s0, spec[i].s1, spec[i].s2}, .data = data[i]};
    }
    TU_OK(ssm_safetensors_write(tfile("fx", "model.safetensors"), items, NT, NULL));
    ssm_model *m;
    TU_OK(ssm_checkpoint_load(tfile("fx", NULL), &m));
    const ssm_config *c = &m->config;
    assert_int_equal(c->vocab_size, 16);
    assert_int_equal(c->n_layer, 4);
    assert_int_equal(c->layer_kind[0], SSM_LAYER_MAMBA2);
    assert_int_equal(c->layer_kind[2], SSM_LAYER_ATTENTION);
    assert_true(c->second[1] && c->second[3] && c->layer_kind[3] == SSM_LAYER_MLP);
    assert_int_equal(c->mlp.d_ff, 128);
    assert_int_equal(c->attention.rotary_dim, 4);
    const ssm_attention_params *a = &m->params.layers[2].attention;
    for (int r = 0; r < QKV; r++) /* in_proj row r is q (r < 8), k (8 <= r < 12) or v */
        for (int d = 0; d < D; d++) {
            const float *w = r < H * HD ? a->q_proj + (size_t)r * D
                           : r < (H + KV) * HD ? a->k_proj + (size_t)(r - H * HD) * D
                           : a->v_proj + (size_t)(r - (H + KV) * HD) * D;
            assert_true(w[d] == (float)r + 0.01f * (float)d);
        }
    assert_memory_equal(a->o_proj, data[15], (size_t)D * H * HD * sizeof(float));
    assert_memory_equal(m->params.embedding, data[0], (size_t)V * D * sizeof(float));
    int32_t tok[6] = {1, 2, 3, 4, 5, 9};
    float loss;
    TU_OK(ssm_forward(m, tok, tok, 1, 6, NULL, &loss));
    ssm_model_free(m);
    for (int i = 0; i < NT; i++) free(data[i]);
}

/* ---- 3: refused, naming the key ---------------------------------------------------------- */

static void expect_refused(const char *attn_cfg, const char *ssm_cfg, const char *key) {
    char json[1024];
    snprintf(json, sizeof json, "{\"d_model\": 8, \"n_layer\": 2, \"vocab_size\": 16, "
             "\"ssm_cfg\": %s, \"attn_layer_idx\": [1], \"attn_cfg\": %s}", ssm_cfg, attn_cfg);
    tu_expect_config_refused("bad", json, key);
}

static void test_refused(void **st) {
    (void)st;
    const char *ok = "\"causal\": true, \"qkv_proj_bias\": false, \"out_proj_bias\": false";
    char a[512];
    expect_refused("{\"num_heads\": 2, \"qkv_proj_bias\": false, \"out_proj_bias\": false}", "{}", "causal");
    expect_refused("{\"num_heads\": 2, \"causal\": true, \"out_proj_bias\": false}", "{}", "qkv_proj_bias");
    expect_refused("{\"num_heads\": 2, \"causal\": true, \"qkv_proj_bias\": false}", "{}", "out_proj_bias");
    snprintf(a, sizeof a, "{\"num_heads\": 2, %s, \"d_conv\": 4}", ok);
    expect_refused(a, "{}", "d_conv");
    snprintf(a, sizeof a, "{\"num_heads\": 2, %s, \"rotary_emb_interleaved\": true}", ok);
    expect_refused(a, "{}", "rotary_emb_interleaved");
    snprintf(a, sizeof a, "{\"num_heads\": 2, %s}", ok);
    expect_refused(a, "{\"layer\": \"Mamba3\"}", "layer");
    expect_refused(a, "{\"layer\": \"Mamba2\", \"norm_before_gate\": true}", "norm_before_gate");
    expect_refused(a, "{\"layer\": \"Mamba1\", \"headdim\": 32}", "headdim");
    expect_refused(a, "{\"layer\": \"Mamba2\", \"frobnicate\": 1}", "frobnicate");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, tu_group_tmpdir, tu_group_rmdir);
}
