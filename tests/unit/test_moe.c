/* test_moe.c: the mixture-of-experts layer kind, through the public API. Two tiny models:
 *   J (Jamba's routing): [mamba1, moe, attention, moe]; softmax, top 2 of 4 SwiGLU experts,
 *     no renormalisation, aux_loss_coef 0.05 (large, so that its gradient shows);
 *   N (NemotronH's): [mamba2, moe, attention, mlp, moe]; sigmoid with a selection bias, top 2
 *     of 5 relu2 experts renormalised and scaled by 2.5, a shared expert.
 *   1. the backward against finite differences (the loss includes coef * aux);
 *   2. the Switch auxiliary loss against a double computation from the hidden states;
 *   3. step mode and carried windows = the parallel forward;
 *   4. ties: equal scores go to the lower expert index; the selection bias picks, the
 *      unbiased sigmoid weighs;
 *   5. a sequence's logits alone = within a batch, and 1 = 2 threads (bitwise, gradients too);
 *   6. the validator names the key of a bad option. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelcheck.h"
#include "ssm/checkpoint.h"

enum { VOCAB = 16 };

static ssm_config moe_config(char which) {
    ssm_config c = ssm_config_default(VOCAB, 8, 1);
    c.d_state = 4;
    c.d_conv = 3;
    c.attention = (ssm_attention_config){.n_heads = 2, .n_kv_heads = 1, .head_dim = 4,
                                         .rope_base = 10000.0f, .max_context = 64};
    if (which == 'J') {
        TU_OK(ssm_config_set_pattern(&c, "ME*E", SSM_LAYER_MAMBA1));
        c.moe = (ssm_moe_config){.n_experts = 4, .top_k = 2, .d_ff = 6,
                                 .activation = SSM_MLP_SWIGLU, .routing = SSM_MOE_SOFTMAX,
                                 .routed_scaling = 1.0f, .aux_loss_coef = 0.05f};
    } else {
        TU_OK(ssm_config_set_pattern(&c, "ME*-E", SSM_LAYER_MAMBA2));
        c.mamba2.headdim = 4, c.mamba2.d_state = 4, c.mamba2.chunk_size = 3;
        c.mlp = (ssm_mlp_config){.d_ff = 10, .activation = SSM_MLP_RELU2};
        c.moe = (ssm_moe_config){.n_experts = 5, .top_k = 2, .d_ff = 6,
                                 .activation = SSM_MLP_RELU2, .routing = SSM_MOE_SIGMOID,
                                 .norm_topk = 1, .routed_scaling = 2.5f, .shared_d_ff = 7};
    }
    return c;
}

/* off the initial values: louder routers (the scores far from uniform), norms away from 1, a
 * selection bias that changes some choices */
static ssm_model *make_model(const ssm_config *c, uint64_t seed) {
    ssm_model *m;
    TU_OK(ssm_model_create(c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.05f, 0.05f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    int D = c->d_model, X = c->moe.n_experts;
    for (size_t i = 0; i < (size_t)c->vocab_size * D; i++) m->params.embedding[i] *= 4.0f;
    for (int l = 0; l < c->n_layer; l++) {
        ssm_layer_params *lp = &m->params.layers[l];
        tu_fill_uniform(lp->norm, D, 0.6f, 1.4f, seed + 10 + l);
        if (c->layer_kind[l] == SSM_LAYER_MAMBA1) { /* a louder layer whose state lasts a few steps */
            ssm_mamba1_params *p = &lp->mamba1;
            int E = c->d_inner, N = c->d_state;
            for (int e = 0; e < E; e++) p->dt_proj_b[e] += 1.5f;
            for (size_t i = 0; i < (size_t)(c->dt_rank + 2 * N) * E; i++) p->x_proj[i] *= 3.0f;
            for (size_t i = 0; i < (size_t)D * E; i++) p->out_proj[i] *= 4.0f;
            tu_fill_uniform(p->A_log, (size_t)E * N, 0.2f, 1.0f, seed + 60 + l);
            for (int i = 0; i < E * N; i++) p->A_log[i] = logf(p->A_log[i]);
        }
        if (c->layer_kind[l] == SSM_LAYER_MOE) {
            for (int i = 0; i < X * D; i++) lp->moe.router[i] *= 6.0f;
            if (c->moe.routing == SSM_MOE_SIGMOID) tu_fill_uniform(lp->moe.bias, X, -0.3f, 0.3f, seed + 20 + l);
            size_t nd = (size_t)X * D * c->moe.d_ff;
            for (size_t i = 0; i < nd; i++) lp->moe.down[i] *= 3.0f;
        }
    }
    return m;
}

static void make_batch(int32_t *tok, int32_t *tgt, int B, int L, uint64_t seed) {
    tu_random_tokens(tok, B * L, VOCAB, seed);
    tu_random_tokens(tgt, B * L, VOCAB, seed + 1);
    for (int i = 0; i < B * L; i++)
        if (i % 7 == 5) tgt[i] = -1;
}

/* ---- 1: gradients ------------------------------------------------------------------------ */

static void gradients_of(char which, uint64_t seed) {
    enum { B = 2, L = 7 };
    int32_t tok[B * L], tgt[B * L];
    make_batch(tok, tgt, B, L, seed);
    ssm_config c = moe_config(which);
    ssm_model *m = make_model(&c, seed + 2);
    printf("model %c\n", which);
    assert_non_null(ssm_model_find_tensor(m, "backbone.layers.1.mixer.experts.up_proj"));
    assert_int_equal(ssm_model_find_tensor(m, "backbone.layers.1.mixer.experts.up_proj")->ndim, 3);
    tu_check_gradients(m, tok, tgt, B, L, 6, 2e-2);
    if (which == 'J') assert_true(ssm_model_aux_loss(m) > 0);
    else assert_true(ssm_model_aux_loss(m) == 0);
    ssm_model_free(m);
}

static void test_gradients_jamba(void **st) {
    (void)st;
    gradients_of('J', 3);
}

static void test_gradients_nemotron(void **st) {
    (void)st;
    gradients_of('N', 11);
}

/* ---- 2: the auxiliary loss --------------------------------------------------------------- */

static void test_aux_loss(void **st) {
    (void)st;
    enum { B = 2, L = 9 };
    ssm_config c = moe_config('J');
    ssm_model *m = make_model(&c, 21);
    int32_t tok[B * L], tgt[B * L];
    make_batch(tok, tgt, B, L, 23);
    float loss;
    TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
    int D = c.d_model, X = c.moe.n_experts, k = c.moe.top_k, T = B * L, n = 0;
    double count[4] = {0}, prob[4] = {0};
    float *r = malloc((size_t)T * D * sizeof(float));
    int32_t *sel = malloc((size_t)T * k * sizeof(int32_t));
    float *w = malloc((size_t)T * k * sizeof(float));
    for (int l = 0; l < c.n_layer; l++) {
        if (c.layer_kind[l] != SSM_LAYER_MOE) continue;
        n++;
        TU_OK(ssm_model_hidden(m, l - 1, r)); /* the residual entering layer l */
        TU_OK(ssm_model_routing(m, l, sel, w));
        const float *nw = m->params.layers[l].norm, *router = m->params.layers[l].moe.router;
        for (int t = 0; t < T; t++) {
            double ms = 0, lg[4], p[4], z = 0;
            for (int d = 0; d < D; d++) ms += (double)r[t * D + d] * r[t * D + d];
            double rs = 1 / sqrt(ms / D + c.norm_eps);
            for (int e = 0; e < X; e++) {
                lg[e] = 0;
                for (int d = 0; d < D; d++) lg[e] += r[t * D + d] * rs * nw[d] * router[e * D + d];
            }
            for (int e = 0; e < X; e++) z += exp(lg[e]);
            for (int e = 0; e < X; e++) prob[e] += p[e] = exp(lg[e]) / z;
            /* the routing: the two largest, unrenormalised */
            int a = 0;
            for (int e = 1; e < X; e++) a = p[e] > p[a] ? e : a;
            int b = a == 0 ? 1 : 0;
            for (int e = 0; e < X; e++) b = e != a && p[e] > p[b] ? e : b;
            assert_int_equal(sel[t * k], a);
            assert_int_equal(sel[t * k + 1], b);
            assert_true(fabs(w[t * k] - p[a]) < 1e-5 && fabs(w[t * k + 1] - p[b]) < 1e-5);
            count[a]++, count[b]++;
        }
    }
    double R = (double)n * T, aux = 0;
    for (int e = 0; e < X; e++) aux += (count[e] / R) * (prob[e] / R);
    aux *= X;
    print_message("aux %.9g, ssm %.9g\n", aux, ssm_model_aux_loss(m));
    assert_true(fabs(aux - ssm_model_aux_loss(m)) < 1e-5 * aux);
    /* a uniform routing gives aux = top_k */
    assert_true(ssm_model_aux_loss(m) >= 0.5 * k);
    free(r), free(sel), free(w);
    ssm_model_free(m);
}

/* ---- 3: step mode and windows ------------------------------------------------------------- */

static void test_step_and_windows(void **st) {
    (void)st;
    for (int i = 0; i < 2; i++) {
        ssm_config c = moe_config("JN"[i]);
        ssm_model *m = make_model(&c, 31 + i);
        tu_check_step(m, 2, 9, 33 + i);
        const int three[] = {1, 5, 7};
        tu_check_windows(m, 3, three, 3, 35 + i);
        ssm_model_free(m);
    }
}

/* ---- 4: ties ----------------------------------------------------------------------------- */

static void test_ties(void **st) {
    (void)st;
    enum { B = 1, L = 3 };
    int32_t tok[B * L] = {1, 2, 3}, sel[B * L * 2];
    float w[B * L * 2];
    for (int i = 0; i < 2; i++) {
        ssm_config c = moe_config("JN"[i]);
        ssm_model *m = make_model(&c, 41);
        int X = c.moe.n_experts;
        /* a zero router: every score equal */
        for (int l = 0; l < c.n_layer; l++)
            if (c.layer_kind[l] == SSM_LAYER_MOE) {
                memset(m->params.layers[l].moe.router, 0, (size_t)X * c.d_model * sizeof(float));
                if (i == 1) memset(m->params.layers[l].moe.bias, 0, (size_t)X * sizeof(float));
            }
        TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
        TU_OK(ssm_model_routing(m, 1, sel, w));
        for (int t = 0; t < L; t++) {
            assert_int_equal(sel[2 * t], 0);
            assert_int_equal(sel[2 * t + 1], 1);
            /* softmax: 1 / X each; sigmoid(0) renormalised: 1/2 each, times 2.5 */
            float want = i == 0 ? 1.0f / X : 1.25f;
            assert_true(fabs(w[2 * t] - want) < 1e-6 && fabs(w[2 * t + 1] - want) < 1e-6);
        }
        if (i == 1) { /* a bias on experts 3 and 4 (equal): they are chosen, weighed 1/2 each */
            m->params.layers[1].moe.bias[3] = m->params.layers[1].moe.bias[4] = 0.25f;
            TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
            TU_OK(ssm_model_routing(m, 1, sel, w));
            for (int t = 0; t < L; t++) {
                assert_int_equal(sel[2 * t], 3);
                assert_int_equal(sel[2 * t + 1], 4);
                assert_true(fabs(w[2 * t] - 1.25f) < 1e-6);
            }
        }
        ssm_model_free(m);
    }
}

/* ---- 5: batch and threads ---------------------------------------------------------------- */

static void test_batch_and_threads(void **st) {
    (void)st;
    enum { B = 3, L = 11 };
    ssm_config c = moe_config('N');
    ssm_model *m = make_model(&c, 51);
    int32_t tok[B * L], tgt[B * L];
    make_batch(tok, tgt, B, L, 53);
    /* sequence 1 alone and within the batch: its experts see other rows beside it */
    float *all = tu_logits_of(m, tok, B, L), *one = tu_logits_of(m, tok + L, 1, L);
    double e = tu_rel_err(one, all + (size_t)L * VOCAB, (size_t)L * VOCAB);
    print_message("sequence 1 alone vs in a batch of 3: rel err %.2e\n", e);
    assert_true(e < 1e-6);
    free(all), free(one);
    int saved = ssm_get_threads();
    float *logits[2], *grads[2], loss[2];
    size_t nl = (size_t)B * L * VOCAB;
    for (int i = 0; i < 2; i++) {
        ssm_set_threads(i + 1);
        TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss[i]));
        logits[i] = malloc(nl * sizeof(float));
        memcpy(logits[i], ssm_model_logits(m), nl * sizeof(float));
        ssm_model_zero_grad(m);
        TU_OK(ssm_backward(m));
        grads[i] = malloc(m->n_params * sizeof(float));
        memcpy(grads[i], m->grads_blob, m->n_params * sizeof(float));
    }
    ssm_set_threads(saved);
    assert_true(loss[0] == loss[1]);
    assert_memory_equal(logits[0], logits[1], nl * sizeof(float));
    assert_memory_equal(grads[0], grads[1], m->n_params * sizeof(float));
    for (int i = 0; i < 2; i++) free(logits[i]), free(grads[i]);
    ssm_model_free(m);
}

/* ---- 6: the validator -------------------------------------------------------------------- */

static void expect_refused(ssm_config c, const char *key) {
    ssm_model *m = NULL;
    ssm_status s = ssm_model_create(&c, &m);
    print_message("  %s -> %s\n", key, ssm_last_error());
    assert_int_equal(s, SSM_ERR_ARG);
    assert_null(m);
    assert_non_null(strstr(ssm_last_error(), key));
}

static void test_validate(void **st) {
    (void)st;
    ssm_config c = moe_config('J');
    c.moe.top_k = 5;
    expect_refused(c, "moe.top_k");
    c = moe_config('N');
    c.moe.aux_loss_coef = 0.01f;
    expect_refused(c, "moe.aux_loss_coef");
    c = moe_config('N');
    c.moe.n_experts = 0;
    expect_refused(c, "moe.n_experts");
    ssm_config p = ssm_config_default(VOCAB, 8, 1);
    assert_int_equal(ssm_config_set_pattern(&p, "MEx", SSM_LAYER_MAMBA1), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "E = mixture of experts"));
    TU_OK(ssm_config_set_pattern(&p, "ME", SSM_LAYER_MAMBA1));
    assert_int_equal(p.layer_kind[1], SSM_LAYER_MOE);
    /* the CUDA backend runs Mamba-1, Mamba-2, MLP and attention layers only: a MoE model is refused first */
    if (ssm_device_count() > 0) {
        assert_int_not_equal(ssm_device_supports(0, &p), SSM_OK);
        assert_non_null(strstr(ssm_last_error(), "moe"));
    }
}

/* ---- 7: checkpoints --------------------------------------------------------------------- */

static void test_checkpoint(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    char path[4200], opt_path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(opt_path, sizeof opt_path, "%s/optimizer.safetensors", dir);
    int32_t tok[2 * 5];
    tu_random_tokens(tok, 10, VOCAB, 61);
    for (int i = 0; i < 2; i++) {
        ssm_config c = moe_config("JN"[i]);
        ssm_model *m = make_model(&c, 63), *n;
        TU_OK(ssm_checkpoint_save(m, path, NULL));
        TU_OK(ssm_checkpoint_load(path, &n));
        assert_memory_equal(&n->config.moe, &m->config.moe, sizeof m->config.moe);
        assert_memory_equal(n->config.layer_kind, m->config.layer_kind, (size_t)c.n_layer);
        assert_int_equal(n->n_params, m->n_params);
        float *a = tu_logits_of(m, tok, 2, 5), *b = tu_logits_of(n, tok, 2, 5);
        assert_memory_equal(a, b, (size_t)10 * VOCAB * sizeof(float));
        free(a), free(b);
        /* the optimizer's moments, empty tensors included */
        ssm_adamw *opt, *back;
        ssm_adamw_config ac = ssm_adamw_config_default();
        TU_OK(ssm_adamw_create(&ac, m, &opt));
        TU_OK(ssm_adamw_create(&ac, n, &back));
        TU_OK(ssm_adamw_save(opt, m, opt_path, NULL));
        TU_OK(ssm_adamw_load(back, n, opt_path, NULL));
        ssm_adamw_free(opt), ssm_adamw_free(back);
        ssm_model_free(n);
        ssm_model_free(m);
    }
}

/* ---- 8: a block's second sublayer ------------------------------------------------------- */

static void test_second_sublayer(void **st) {
    (void)st;
    /* Jamba's block layout: [mamba1 + moe], [attention + mlp], [mamba1 + moe] */
    ssm_config c = moe_config('J'), flat = c;
    c.mlp = flat.mlp = (ssm_mlp_config){.d_ff = 12, .activation = SSM_MLP_SWIGLU};
    TU_OK(ssm_config_set_pattern(&c, "M+E*+-M+E", SSM_LAYER_MAMBA1));
    TU_OK(ssm_config_set_pattern(&flat, "ME*-ME", SSM_LAYER_MAMBA1));
    assert_int_equal(c.n_layer, 6);
    assert_int_equal(ssm_config_block(&c, 3), 1);
    assert_int_equal(ssm_config_block(&c, 5), 2);
    ssm_model *m = make_model(&c, 71), *f;
    TU_OK(ssm_model_create(&flat, &f));
    const char *names[] = {"backbone.layers.0.norm2.weight", "backbone.layers.0.mlp.gate.weight",
                           "backbone.layers.0.mlp.experts.down_proj", "backbone.layers.1.mixer.q_proj.weight",
                           "backbone.layers.1.mlp.fc1.weight", "backbone.layers.2.mlp.experts.up_proj"};
    for (int i = 0; i < 6; i++) assert_non_null(ssm_model_find_tensor(m, names[i]));
    assert_null(ssm_model_find_tensor(m, "backbone.layers.3.norm.weight"));
    /* the same function as separate pre-norm layers, with the blob in the same order */
    assert_int_equal(f->n_params, m->n_params);
    memcpy(f->params_blob, m->params_blob, m->n_params * sizeof(float));
    int32_t tok[2 * 7], tgt[2 * 7];
    make_batch(tok, tgt, 2, 7, 73);
    float *a = tu_logits_of(m, tok, 2, 7), *b = tu_logits_of(f, tok, 2, 7);
    assert_memory_equal(a, b, (size_t)14 * VOCAB * sizeof(float));
    free(a), free(b);
    tu_check_gradients(m, tok, tgt, 2, 7, 3, 5e-2); /* the kinds are checked to 2e-2 above */
    /* checkpoints keep the blocks */
    const char *dir = tu_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/blocks.safetensors", dir);
    ssm_model *n;
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    TU_OK(ssm_checkpoint_load(path, &n));
    assert_memory_equal(n->config.second, c.second, (size_t)c.n_layer);
    assert_non_null(ssm_model_find_tensor(n, "backbone.layers.1.norm2.weight"));
    ssm_model_free(n);
    ssm_model_free(f);
    ssm_model_free(m);
    /* what cannot be a second sublayer */
    const char *bad[] = {"+-M", "M+*", "M+-+-", "M+"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ssm_config_set_pattern(&c, bad[i], SSM_LAYER_MAMBA1), SSM_ERR_ARG);
        print_message("  %s -> %s\n", bad[i], ssm_last_error());
    }
    c = flat;
    c.second[2] = 1; /* attention */
    expect_refused(c, "second sublayer");
}

/* ---- 9: transformers' NemotronH files ----------------------------------------------------- */

/* model.safetensors without ssm metadata (as save_pretrained writes it) + config.json */
static void save_as_transformers(const ssm_model *m, const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ssm_st_write_item *items = calloc((size_t)m->n_tensors, sizeof *items);
    int n = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const ssm_tensor_info *t = &m->tensors[i];
        if (!t->numel) continue;
        items[n].name = t->name, items[n].ndim = t->ndim, items[n].data = m->params_blob + t->offset;
        memcpy(items[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    const char *kv[] = {"format", "pt", NULL};
    TU_OK(ssm_safetensors_write(path, items, n, kv));
    free(items);
    snprintf(path, sizeof path, "%s/config.json", dir);
    TU_OK(ssm_checkpoint_write_config(m, path, 0));
}

/* config.json with one key set to a JSON value (one key a line, as it is written) must be
 * refused, naming the key */
static void expect_json_refused(const char *dir, const char *key, const char *value) {
    char path[4200], cmd[4 * 4200 + 256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s.orig && sed -i '/\"%s\":/d; 1a \"%s\": %s,' %s",
             path, path, key, key, value, path);
    assert_int_equal(system(cmd), 0);
    ssm_model *m = NULL;
    ssm_set_error(SSM_OK, "%s", "");
    ssm_status s = ssm_checkpoint_load(dir, &m);
    print_message("  %s = %s -> %s\n", key, value, ssm_last_error());
    assert_int_not_equal(s, SSM_OK);
    assert_non_null(strstr(ssm_last_error(), key));
    snprintf(cmd, sizeof cmd, "mv %s.orig %s", path, path);
    assert_int_equal(system(cmd), 0);
}

static void test_nemotron_h_files(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    ssm_config c = moe_config('N');
    ssm_model *m = make_model(&c, 81), *n;
    save_as_transformers(m, dir);
    TU_OK(ssm_checkpoint_load(dir, &n));
    assert_memory_equal(n->config.layer_kind, c.layer_kind, (size_t)c.n_layer);
    assert_memory_equal(&n->config.moe, &m->config.moe, sizeof c.moe);
    assert_int_equal(n->config.attention.n_kv_heads, c.attention.n_kv_heads);
    assert_int_equal(n->config.mamba2.nheads, m->config.mamba2.nheads);
    int32_t tok[2 * 6];
    tu_random_tokens(tok, 12, VOCAB, 83);
    float *a = tu_logits_of(m, tok, 2, 6), *b = tu_logits_of(n, tok, 2, 6);
    assert_memory_equal(a, b, (size_t)12 * VOCAB * sizeof(float));
    free(a), free(b);
    ssm_model_free(n);
    expect_json_refused(dir, "moe_latent_size", "4");
    expect_json_refused(dir, "n_group", "2");
    expect_json_refused(dir, "n_shared_experts", "2");
    expect_json_refused(dir, "mlp_hidden_act", "\"silu\"");
    expect_json_refused(dir, "hybrid_override_pattern", "\"M+E\"");
    expect_json_refused(dir, "mamba_num_heads", "3");
    /* a model NemotronH cannot hold gets the stub config (its metadata is its config) */
    ssm_model_free(m);
    c = moe_config('J');
    m = make_model(&c, 85);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    TU_OK(ssm_checkpoint_write_config(m, path, 0));
    FILE *f = fopen(path, "r");
    char text[512] = {0};
    assert_true(fread(text, 1, sizeof text - 1, f) > 0);
    fclose(f);
    assert_non_null(strstr(text, "\"ssm\""));
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_jamba),
        cmocka_unit_test(test_gradients_nemotron),
        cmocka_unit_test(test_aux_loss),
        cmocka_unit_test(test_step_and_windows),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_batch_and_threads),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_checkpoint),
        cmocka_unit_test(test_second_sublayer),
        cmocka_unit_test(test_nemotron_h_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
