/* test_jamba.c: Jamba's Mamba-1 option (config.inner_norms: RMSNorms on dt, B and C after
 * x_proj) and Jamba checkpoints, through the public API.
 *   1. a Mamba-1 model with the inner norms and a Jamba-layout hybrid (pairs [mixer +
 *      feed-forward]: Mamba-1 + MoE, attention + MLP, Mamba-1 + MLP): every tensor's gradient,
 *      the norms' weights included, against central finite differences;
 *   2. step mode = the parallel forward; carried windows = one pass;
 *   3. the norms matter (the logits change with their weights) and the option off leaves
 *      empty tensors;
 *   4. checkpoints: the Jamba-layout model saves under JambaForCausalLM's names
 *      (model.layers.{i}.mamba.dt_layernorm.weight, feed_forward.experts.{j}.gate_proj.weight,
 *      ...) with a JambaConfig config.json; loading it back (by the metadata, and by the
 *      config.json alone, as transformers writes it) gives the same config and bitwise the
 *      same logits;
 *   5. a JambaConfig that ssm cannot hold is refused naming the key;
 *   6. the recipe key model.inner_norms. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "modelcheck.h"
#include "ssm/checkpoint.h"
#include "ssm/recipe.h"

enum { VOCAB = 14 };

#define tpath tu_group_path

/* 'M': two Mamba-1 layers; 'J': Jamba's layout, attention in layer 1 (period 4, offset 1),
 * MoE in layer 0 (period 2, offset 0) */
static ssm_config jamba_config(char which) {
    ssm_config c = ssm_config_default(VOCAB, 8, 2);
    c.d_state = 3, c.d_conv = 3, c.dt_rank = 2, c.inner_norms = 1;
    if (which == 'J') {
        TU_OK(ssm_config_set_pattern(&c, "M+E*+-M+-", SSM_LAYER_MAMBA1));
        c.attention = (ssm_attention_config){.n_heads = 2, .n_kv_heads = 1, .head_dim = 4,
                                             .rope_base = 10000.0f, .max_context = 64};
        c.mlp = (ssm_mlp_config){.d_ff = 6, .activation = SSM_MLP_SWIGLU};
        c.moe = (ssm_moe_config){.n_experts = 3, .top_k = 2, .d_ff = 6,
                                 .activation = SSM_MLP_SWIGLU, .routing = SSM_MOE_SOFTMAX,
                                 .routed_scaling = 1.0f, .aux_loss_coef = 0.05f};
    }
    return c;
}

/* off the initial values, with louder Mamba layers and norms away from 1 */
static ssm_model *make_model(const ssm_config *c, uint64_t seed) {
    ssm_model *m = tu_noisy_model(c, seed);
    for (int l = 0; l < c->n_layer; l++) {
        if (c->layer_kind[l] != SSM_LAYER_MAMBA1) continue;
        ssm_mamba1_params *p = &m->params.layers[l].mamba1;
        for (int e = 0; e < c->d_inner; e++) p->dt_proj_b[e] += 1.5f;
        tu_fill_uniform(p->dt_norm, (size_t)c->dt_rank, 0.5f, 1.5f, seed + 20 + l);
        tu_fill_uniform(p->b_norm, (size_t)c->d_state, 0.5f, 1.5f, seed + 30 + l);
        tu_fill_uniform(p->c_norm, (size_t)c->d_state, 0.5f, 1.5f, seed + 40 + l);
    }
    return m;
}

static void make_batch(int32_t *tok, int32_t *tgt, int B, int L, uint64_t seed) {
    tu_random_tokens(tok, B * L, VOCAB, seed);
    tu_random_tokens(tgt, B * L, VOCAB, seed + 1);
    for (int i = 0; i < B * L; i++)
        if (i % 7 == 5) tgt[i] = -1;
}

/* ---- 1, 2: gradients, step mode, windows ------------------------------------------------ */

static void test_gradients(void **st) {
    (void)st;
    enum { B = 2, L = 7 };
    int32_t tok[B * L], tgt[B * L];
    for (int i = 0; i < 2; i++) {
        ssm_config c = jamba_config("MJ"[i]);
        ssm_model *m = make_model(&c, 5 + i);
        make_batch(tok, tgt, B, L, 9 + i);
        printf("model %c\n", "MJ"[i]);
        const ssm_tensor_info *t = ssm_model_find_tensor(m, "backbone.layers.0.mixer.dt_layernorm.weight");
        assert_non_null(t);
        assert_int_equal(t->numel, c.dt_rank);
        tu_check_gradients(m, tok, tgt, B, L, 4, 2e-2);
        ssm_model_free(m);
    }
}

static void test_step_and_windows(void **st) {
    (void)st;
    for (int i = 0; i < 2; i++) {
        ssm_config c = jamba_config("MJ"[i]);
        ssm_model *m = make_model(&c, 15 + i);
        tu_check_step(m, 2, 9, 17 + i);
        const int three[] = {1, 5, 7};
        tu_check_windows(m, 3, three, 3, 19 + i);
        ssm_model_free(m);
    }
}

/* ---- 3: the norms act; off, their tensors are empty ------------------------------------- */

static void test_norms_matter(void **st) {
    (void)st;
    enum { B = 1, L = 6 };
    ssm_config c = jamba_config('M');
    ssm_model *m = make_model(&c, 25);
    int32_t tok[B * L];
    tu_random_tokens(tok, B * L, VOCAB, 26);
    float *before = tu_logits_of(m, tok, B, L);
    m->params.layers[0].mamba1.b_norm[1] *= 2.0f;
    float *after = tu_logits_of(m, tok, B, L);
    double e = tu_rel_err(after, before, (size_t)B * L * m->config.vocab_size);
    print_message("b_layernorm weight doubled: logits moved by %.2e\n", e);
    assert_true(e > 1e-4);
    free(before), free(after);
    ssm_model_free(m);
    c.inner_norms = 0;
    TU_OK(ssm_model_create(&c, &m));
    assert_int_equal(ssm_model_find_tensor(m, "backbone.layers.0.mixer.c_layernorm.weight")->numel, 0);
    ssm_model_free(m);
}

/* ---- 4: checkpoints under Jamba's names ------------------------------------------------- */

static void same_logits(ssm_model *a, ssm_model *b) { tu_assert_same_logits(a, b, 2, 8, 41); }

static void test_checkpoint_names(void **st) {
    (void)st;
    ssm_config c = jamba_config('J');
    ssm_model *m = make_model(&c, 31), *back;
    const char *dir = tpath("run");
    mkdir(dir, 0700);
    char file[4300], cfg[4300];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    TU_OK(ssm_checkpoint_save(m, file, NULL));
    TU_OK(ssm_checkpoint_write_config(m, cfg, 1));
    /* JambaForCausalLM's names */
    ssm_safetensors *sf;
    TU_OK(ssm_safetensors_open(file, &sf));
    static const char *const names[] = {
        "model.embed_tokens.weight", "model.final_layernorm.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.pre_ff_layernorm.weight",
        "model.layers.0.mamba.dt_layernorm.weight", "model.layers.0.mamba.conv1d.weight",
        "model.layers.0.feed_forward.router.weight",
        "model.layers.0.feed_forward.experts.2.gate_proj.weight",
        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.feed_forward.up_proj.weight",
        "model.layers.2.feed_forward.gate_proj.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!ssm_safetensors_find(sf, names[i])) fail_msg("no tensor %s", names[i]);
    }
    assert_null(ssm_safetensors_find(sf, "backbone.embeddings.weight"));
    assert_int_equal(ssm_safetensors_find(sf, "model.layers.0.mamba.conv1d.weight")->ndim, 3);
    /* expert 1's gate rows are rows F..2F of its slice of the fused up_proj */
    float gate[6 * 8];
    TU_OK(ssm_safetensors_read_f32(sf, "model.layers.0.feed_forward.experts.1.gate_proj.weight", gate, 48));
    const float *fused = m->params.layers[1].moe.up + (size_t)1 * 12 * 8 + 6 * 8;
    assert_memory_equal(gate, fused, sizeof gate);
    ssm_safetensors_close(sf);
    /* the config.json */
    FILE *f = fopen(cfg, "r");
    char text[4096] = {0};
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    assert_non_null(strstr(text, "\"JambaForCausalLM\""));
    assert_non_null(strstr(text, "\"attn_layer_period\": 2"));
    assert_non_null(strstr(text, "\"attn_layer_offset\": 1"));
    assert_non_null(strstr(text, "\"expert_layer_period\": 3"));
    /* back by the metadata */
    TU_OK(ssm_checkpoint_load(file, &back));
    assert_int_equal(back->config.inner_norms, 1);
    assert_memory_equal(back->config.layer_kind, c.layer_kind, (size_t)c.n_layer);
    assert_memory_equal(back->config.second, c.second, (size_t)c.n_layer);
    same_logits(m, back);
    ssm_model_free(back);
    /* and by the config.json alone, as transformers' save_pretrained leaves it */
    const char *plain = tpath("plain");
    mkdir(plain, 0700);
    char pfile[4300], pcfg[4300];
    snprintf(pfile, sizeof pfile, "%s/model.safetensors", plain);
    snprintf(pcfg, sizeof pcfg, "%s/config.json", plain);
    tu_copy_without_metadata(file, pfile);
    f = fopen(pcfg, "w");
    fputs(text, f);
    fclose(f);
    TU_OK(ssm_checkpoint_load(plain, &back));
    assert_memory_equal(back->config.layer_kind, c.layer_kind, (size_t)c.n_layer);
    assert_int_equal(back->config.moe.n_experts, 3);
    assert_true(back->config.moe.aux_loss_coef == c.moe.aux_loss_coef);
    same_logits(m, back);
    ssm_model_free(back);
    ssm_model_free(m);
}

/* ---- 5: JambaConfigs that ssm cannot hold ----------------------------------------------- */

static void expect_refused(const char *json, const char *key) { tu_expect_config_refused("bad", json, key); }

static void test_refused(void **st) {
    (void)st;
    const char *base = "{\"model_type\": \"jamba\", \"vocab_size\": 10, \"hidden_size\": 8, "
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, ";
    char j[1024];
    snprintf(j, sizeof j, "%s\"mamba_proj_bias\": true}", base);
    expect_refused(j, "mamba_proj_bias");
    snprintf(j, sizeof j, "%s\"hidden_act\": \"gelu\"}", base);
    expect_refused(j, "hidden_act");
    snprintf(j, sizeof j, "%s\"attn_layer_period\": 2, \"attn_layer_offset\": 2}", base);
    expect_refused(j, "attn_layer_offset");
    snprintf(j, sizeof j, "%s\"sliding_window\": 16}", base);
    expect_refused(j, "sliding_window");
}

/* ---- 6: the recipe key -------------------------------------------------------------------- */

static void test_recipe_key(void **st) {
    (void)st;
    const char *path = tpath("r.yaml");
    FILE *f = fopen(path, "w");
    fputs("task: lm\nmodel:\n  d_model: 16\n  n_layer: 2\n  inner_norms: true\n", f);
    fclose(f);
    ssm_recipe *r;
    TU_OK(ssm_recipe_load(path, &r));
    ssm_config c;
    TU_OK(ssm_config_from_recipe(r, 32, &c));
    assert_int_equal(c.inner_norms, 1);
    ssm_recipe_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_step_and_windows),
        cmocka_unit_test(test_norms_matter),
        cmocka_unit_test(test_checkpoint_names),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_recipe_key),
    };
    return cmocka_run_group_tests(tests, tu_group_tmpdir, tu_group_rmdir);
}
