/* test_caduceus.c: Caduceus' options. Bidirectional Mamba-1 layers (add, mul) and RCPS (fused
 * add-norm with its half swap, and without) against finite differences; the exact reverse-
 * complement equivariance of an RCPS language model and the invariance of its classifier;
 * that a bidirectional model sees the future; the refusals of the causal-only calls; the
 * options through a checkpoint and a recipe. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelcheck.h"
#include "ssm/checkpoint.h"
#include "ssm/recipe.h"

enum { V = 16, B = 2, L = 7 };

/* One direction's Mamba-1 tensors made louder, as test_hybrid does (every gradient then well
 * above the finite differences' noise): the state lasts a few steps, larger projections. */
static void loud(const ssm_config *c, ssm_mamba1_params p, uint64_t seed) {
    size_t E = c->d_inner, N = c->d_state, D = c->d_model;
    tu_fill_uniform(p.D, E, 0.5f, 1.5f, seed);
    for (size_t e = 0; e < E; e++) p.dt_proj_b[e] += 1.5f;
    for (size_t i = 0; i < (c->dt_rank + 2 * N) * E; i++) p.x_proj[i] *= 3.0f;
    tu_fill_uniform(p.A_log, E * N, 0.2f, 1.0f, seed + 1);
    for (size_t i = 0; i < E * N; i++) p.A_log[i] = logf(p.A_log[i]);
    for (size_t i = 0; p.in_proj && i < 2 * E * D; i++) p.in_proj[i] *= 2.0f;
    for (size_t i = 0; p.out_proj && i < D * E; i++) p.out_proj[i] *= 4.0f;
}

/* a tiny model: 2 layers of d_model 8; bidirectional and rcps as given; weights perturbed
 * so that no tensor sits at a symmetric initial value */
static ssm_model *tiny_mixed(ssm_bidirectional how, int rcps, int unfused, ssm_io_config io,
                             uint64_t seed, int causal_last) {
    ssm_config c = ssm_config_default(V, 8, 2);
    c.d_state = 4, c.d_conv = 3, c.dt_rank = 2;
    if (how) ssm_config_set_bidirectional(&c, how);
    if (causal_last) c.layer_kind[1] = SSM_LAYER_MAMBA1; /* a per-layer choice */
    if (rcps) ssm_config_set_rcps(&c, NULL);
    c.rcps_unfused = unfused;
    c.io = io;
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    for (size_t i = 0; i < (size_t)V * c.d_model; i++) m->params.embedding[i] *= 4.0f;
    for (int l = 0; l < c.n_layer; l++) {
        ssm_layer_params *lp = &m->params.layers[l];
        loud(&c, lp->mamba1, seed + 10 * l);
        if (c.layer_kind[l] == SSM_LAYER_BIMAMBA) {
            ssm_bimamba_params *b = &lp->bimamba;
            loud(&c, (ssm_mamba1_params){.conv_w = b->rev.conv_w, .conv_b = b->rev.conv_b,
                                         .x_proj = b->rev.x_proj, .dt_proj_w = b->rev.dt_proj_w,
                                         .dt_proj_b = b->rev.dt_proj_b, .A_log = b->rev.A_log,
                                         .D = b->rev.D}, seed + 10 * l + 5);
        }
    }
    return m;
}

static ssm_model *tiny(ssm_bidirectional how, int rcps, int unfused, ssm_io_config io,
                       uint64_t seed) {
    return tiny_mixed(how, rcps, unfused, io, seed, 0);
}

static void batch(int32_t *tok, int32_t *tgt, uint64_t seed) {
    tu_random_tokens(tok, B * L, V, seed);
    tu_random_tokens(tgt, B * L, V, seed + 1);
    tgt[2] = -1;
}

static void test_gradients(void **st) {
    (void)st;
    const struct { const char *name; ssm_bidirectional how; int rcps, unfused, mixed; } cases[] = {
        {"bimamba add", SSM_BIDIR_ADD, 0, 0, 0}, {"bimamba mul", SSM_BIDIR_MUL, 0, 0, 0},
        {"rcps (fused add-norm)", SSM_BIDIR_NONE, 1, 0, 0},
        {"rcps unfused", SSM_BIDIR_NONE, 1, 1, 0},
        {"rcps + bimamba add (Caduceus-Ps)", SSM_BIDIR_ADD, 1, 0, 0},
        {"bimamba mul, then a causal mamba1 layer", SSM_BIDIR_MUL, 0, 0, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        printf("%s\n", cases[k].name);
        ssm_model *m = tiny_mixed(cases[k].how, cases[k].rcps, cases[k].unfused,
                                  (ssm_io_config){0}, 3 + k, cases[k].mixed);
        int32_t tok[B * L], tgt[B * L];
        batch(tok, tgt, 10 + k);
        tu_check_gradients(m, tok, tgt, B, L, 4, 2e-2);
        ssm_model_free(m);
    }
}

/* the classify head's loss through ssm_forward_io, along a random direction of each tensor */
static double classify_loss(ssm_model *m, const int32_t *tok, const int32_t *cls) {
    ssm_io io = {.tokens = tok, .targets = cls};
    float loss;
    TU_OK(ssm_forward_io(m, &io, B, L, &loss));
    return loss;
}

static void test_classifier_gradients(void **st) {
    (void)st;
    ssm_io_config io = {.head = SSM_HEAD_CLASSIFY, .outputs = 3, .pool = SSM_POOL_MEAN,
                        .bidirectional = 1};
    ssm_model *m = tiny(SSM_BIDIR_ADD, 1, 0, io, 21);
    int32_t tok[B * L], tgt[B * L], cls[B] = {2, 0};
    batch(tok, tgt, 22);
    classify_loss(m, tok, cls);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *grad = malloc(m->n_params * sizeof(float));
    memcpy(grad, m->grads_blob, m->n_params * sizeof(float));
    int bad = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const ssm_tensor_info *ti = &m->tensors[t];
        float *v = malloc(ti->numel * sizeof(float)), *p = m->params_blob + ti->offset;
        tu_fill_uniform(v, ti->numel, -1, 1, 100 + t);
        double an = 0, h = 2e-3;
        for (size_t i = 0; i < ti->numel; i++) an += (double)grad[ti->offset + i] * v[i];
        for (size_t i = 0; i < ti->numel; i++) p[i] += (float)(h * v[i]);
        double lp = classify_loss(m, tok, cls);
        for (size_t i = 0; i < ti->numel; i++) p[i] -= (float)(2 * h * v[i]);
        double lm = classify_loss(m, tok, cls);
        for (size_t i = 0; i < ti->numel; i++) p[i] += (float)(h * v[i]);
        double fd = (lp - lm) / (2 * h);
        if (!(fabs(fd - an) < 2e-2 * fabs(an) + 3e-4)) {
            printf("  %-48s analytic % .6e numeric % .6e\n", ti->name, an, fd);
            bad++;
        }
        free(v);
    }
    printf("rcps classifier: %d tensors, %d off\n", m->n_tensors, bad);
    assert_int_equal(bad, 0);
    free(grad);
    ssm_model_free(m);
}

/* rc of token rows (B, L): flipped, each token complemented */
static void rc_tokens(const ssm_config *c, const int32_t *tok, int32_t *out) {
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) out[b * L + l] = c->complement[tok[b * L + L - 1 - l]];
}

static void test_rc_equivariance(void **st) {
    (void)st;
    for (int unfused = 0; unfused < 2; unfused++)
        for (int how = SSM_BIDIR_NONE; how <= SSM_BIDIR_MUL; how++) {
            ssm_model *m = tiny((ssm_bidirectional)how, 1, unfused, (ssm_io_config){0}, 31 + how);
            int32_t tok[B * L], tgt[B * L], rc[B * L];
            batch(tok, tgt, 40);
            tok[0] = 3, tok[1] = 11; /* a non-base token or two: their own complements */
            rc_tokens(&m->config, tok, rc);
            float *a = tu_logits_of(m, tok, B, L), *b = tu_logits_of(m, rc, B, L);
            /* logits(rc x)[b, l, v] = logits(x)[b, L-1-l, comp v] */
            float *want = malloc(sizeof(float) * B * L * V);
            for (int r = 0; r < B; r++)
                for (int l = 0; l < L; l++)
                    for (int v = 0; v < V; v++)
                        want[(r * L + l) * V + v] =
                            a[(r * L + L - 1 - l) * V + m->config.complement[v]];
            double e = tu_rel_err(b, want, (size_t)B * L * V);
            printf("rcps (%s, bidirectional %d): logits of rc(x) vs rc of logits(x): rel err %.2e\n",
                   unfused ? "unfused" : "fused", how, e);
            assert_true(e < 1e-6);
            /* not trivially so: the logits are not themselves symmetric */
            assert_true(tu_rel_err(a, b, (size_t)B * L * V) > 1e-2);
            free(a), free(b), free(want);
            ssm_model_free(m);
        }
}

static void test_classifier_invariance(void **st) {
    (void)st;
    const ssm_pool pools[] = {SSM_POOL_MEAN, SSM_POOL_LAST, SSM_POOL_CLS};
    for (int k = 0; k < 3; k++) {
        ssm_io_config io = {.head = SSM_HEAD_CLASSIFY, .outputs = 3, .pool = pools[k]};
        ssm_model *m = tiny(SSM_BIDIR_ADD, 1, 0, io, 51);
        int32_t tok[B * L], tgt[B * L], rc[B * L];
        batch(tok, tgt, 52);
        rc_tokens(&m->config, tok, rc);
        float a[B * 3], b[B * 3];
        ssm_io in = {.tokens = tok};
        TU_OK(ssm_forward_io(m, &in, B, L, NULL));
        memcpy(a, ssm_model_outputs(m), sizeof a);
        in.tokens = rc;
        TU_OK(ssm_forward_io(m, &in, B, L, NULL));
        memcpy(b, ssm_model_outputs(m), sizeof b);
        double e = tu_rel_err(b, a, B * 3);
        printf("rcps classifier, pool %d: scores of rc(x) vs x: rel err %.2e\n", (int)pools[k], e);
        assert_true(e < 1e-6);
        ssm_model_free(m);
    }
}

/* a bidirectional model's first position depends on the last token; a causal one's does not */
static void test_sees_the_future(void **st) {
    (void)st;
    for (int how = SSM_BIDIR_NONE; how <= SSM_BIDIR_MUL; how++) {
        ssm_model *m = tiny((ssm_bidirectional)how, 0, 0, (ssm_io_config){0}, 61);
        int32_t tok[B * L], tgt[B * L];
        batch(tok, tgt, 62);
        float *a = tu_logits_of(m, tok, B, L);
        tok[L - 1] = (tok[L - 1] + 1) % V;
        float *b = tu_logits_of(m, tok, B, L);
        double e = tu_rel_err(b, a, V); /* position 0 of sequence 0 */
        printf("bidirectional %d: position 0 after changing position %d: rel diff %.2e\n", how,
               L - 1, e);
        assert_true(how ? e > 1e-3 : e == 0);
        free(a), free(b);
        ssm_model_free(m);
    }
}

static void test_causal_calls_refused(void **st) {
    (void)st;
    ssm_model *m = tiny(SSM_BIDIR_ADD, 0, 0, (ssm_io_config){0}, 71);
    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, B, &s));
    int32_t tok[B * L], tgt[B * L], out[B * 2];
    float logits[B * V], logp[B * L];
    batch(tok, tgt, 72);
    assert_int_equal(ssm_step(m, s, tok, logits), SSM_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssm_last_error(), "no step mode"));
    assert_int_equal(ssm_forward(m, tok, NULL, B, L, s, NULL), SSM_ERR_UNSUPPORTED);
    assert_int_equal(ssm_forward_score(m, tok, tgt, B, L, s, logp, NULL), SSM_ERR_UNSUPPORTED);
    assert_int_equal(ssm_generate_greedy(m, tok, B, 2, 2, out), SSM_ERR_UNSUPPORTED);
    TU_OK(ssm_forward_score(m, tok, tgt, B, L, NULL, logp, NULL)); /* whole sequences: fine */
    assert_false(ssm_config_causal(&m->config));
    ssm_state_free(s);
    ssm_model_free(m);
    /* io.bidirectional: accepted for a bidirectional model, refused for a causal one */
    ssm_config c = ssm_config_default(V, 8, 1);
    c.io.bidirectional = 1;
    assert_int_equal(ssm_config_validate(&c), SSM_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssm_last_error(), "model.bidirectional"));
    ssm_config_set_bidirectional(&c, SSM_BIDIR_MUL);
    TU_OK(ssm_config_validate(&c));
    c = ssm_config_default(V, 8, 1);
    ssm_config_set_rcps(&c, NULL);
    c.complement[7] = 8; /* not a pairing */
    assert_int_equal(ssm_config_validate(&c), SSM_ERR_ARG);
    assert_non_null(strstr(ssm_last_error(), "complement map"));
}

static char *slurp(const char *path, size_t *n);

static void test_checkpoint_and_recipe(void **st) {
    (void)st;
    ssm_model *m = tiny(SSM_BIDIR_MUL, 1, 0, (ssm_io_config){0}, 81), *back;
    int32_t tok[B * L], tgt[B * L];
    batch(tok, tgt, 82);
    char path[4096];
    snprintf(path, sizeof path, "%s/caduceus.safetensors", tu_tmpdir());
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    TU_OK(ssm_checkpoint_load(path, &back));
    assert_int_equal(back->config.bidirectional, SSM_BIDIR_MUL);
    assert_int_equal(back->config.rcps, 1);
    assert_int_equal(back->config.layer_kind[1], SSM_LAYER_BIMAMBA);
    assert_memory_equal(back->config.complement, m->config.complement, V);
    assert_non_null(ssm_model_find_tensor(back, "backbone.layers.1.mixer.mamba_rev.A_log"));
    float *a = tu_logits_of(m, tok, B, L), *b = tu_logits_of(back, tok, B, L);
    assert_true(tu_rel_err(b, a, (size_t)B * L * V) == 0);
    free(a), free(b);
    ssm_model_free(back);
    ssm_model_free(m);

    /* no transformers class holds a bidirectional model: config.json says so */
    m = tiny(SSM_BIDIR_ADD, 0, 0, (ssm_io_config){0}, 83);
    snprintf(path, sizeof path, "%s/config.json", tu_tmpdir());
    TU_OK(ssm_checkpoint_write_config(m, path, 2));
    size_t len;
    char *json = slurp(path, &len);
    assert_non_null(strstr(json, "\"model_type\": \"ssm\""));
    free(json);
    ssm_model_free(m);

    snprintf(path, sizeof path, "%s/caduceus.yaml", tu_tmpdir());
    FILE *f = fopen(path, "w");
    fputs("model:\n  d_model: 8\n  n_layer: 2\n  bidirectional: add\n  rcps: true\n", f);
    fclose(f);
    ssm_recipe *r;
    ssm_config c;
    TU_OK(ssm_recipe_load(path, &r));
    TU_OK(ssm_config_from_recipe(r, 12, &c));
    assert_int_equal(c.bidirectional, SSM_BIDIR_ADD);
    assert_true(ssm_config_all(&c, SSM_LAYER_BIMAMBA));
    assert_int_equal(c.rcps, 1);
    assert_int_equal(c.complement[7], 10);
    assert_int_equal(c.complement[9], 8);
    assert_int_equal(c.complement[12], 12);
    ssm_recipe_free(r);
    /* per layer: model.layers names the bimamba layers, bidirectional says how they combine */
    f = fopen(path, "w");
    fputs("model:\n  d_model: 8\n  n_layer: 2\n  layers: [bimamba, mamba1]\n"
          "  bidirectional: mul\n", f);
    fclose(f);
    TU_OK(ssm_recipe_load(path, &r));
    TU_OK(ssm_config_from_recipe(r, 12, &c));
    assert_int_equal(c.layer_kind[0], SSM_LAYER_BIMAMBA);
    assert_int_equal(c.layer_kind[1], SSM_LAYER_MAMBA1);
    assert_int_equal(c.bidirectional, SSM_BIDIR_MUL);
    assert_int_equal(c.rcps, 0);
    ssm_recipe_free(r);
}

/* ---- Caduceus' files: what the loader refuses -------------------------------------------- */

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    b[*n] = '\0';
    fclose(f);
    return b;
}

static void spill(const char *path, const char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* fixture `name`'s config.json (each from[k] -> to[k] replaced) into dir */
static void copy_config(const char *name, const char *dir, const char *const *from,
                        const char *const *to, int n) {
    char path[4096];
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", tu_data_path(name));
    char *text = slurp(path, &len), *out = malloc(len + 256);
    strcpy(out, text);
    for (int k = 0; k < n; k++) {
        char *at = strstr(out, from[k]);
        assert_non_null(at);
        memmove(at + strlen(to[k]), at + strlen(from[k]), strlen(at + strlen(from[k])) + 1);
        memcpy(at, to[k], strlen(to[k]));
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    spill(path, out, strlen(out));
    free(text), free(out);
}

/* fixture `name`'s float tensors into dir/model.safetensors, `scaled` times 1.5, plus `extra` */
static void copy_tensors(const char *name, const char *dir, const char *scaled, const char *extra) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", tu_data_path(name));
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(path, &st));
    int n = ssm_safetensors_count(st);
    ssm_st_write_item *items = calloc((size_t)n + 1, sizeof *items);
    float **data = calloc((size_t)n + 1, sizeof *data);
    for (int i = 0; i < n; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        data[i] = malloc(t->numel * sizeof(float));
        TU_OK(ssm_safetensors_read_f32(st, t->name, data[i], t->numel));
        if (!strcmp(t->name, scaled))
            for (size_t j = 0; j < t->numel; j++) data[i][j] *= 1.5f;
        items[i] = (ssm_st_write_item){t->name, t->ndim, {0}, data[i]};
        memcpy(items[i].shape, t->shape, sizeof t->shape);
    }
    if (extra) items[n++] = (ssm_st_write_item){extra, 1, {4}, data[0]};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    TU_OK(ssm_safetensors_write(path, items, n, NULL));
    for (int i = 0; i < ssm_safetensors_count(st); i++) free(data[i]);
    free(data), free(items);
    ssm_safetensors_close(st);
}

static void test_caduceus_files_refused(void **st) {
    (void)st;
    const char *dir = tu_tmpdir();
    ssm_model *m = NULL;
    /* a stored tied alias that is not what it aliases */
    copy_config("golden/caduceus_ph_a", dir, NULL, NULL, 0);
    copy_tensors("golden/caduceus_ph_a", dir, "caduceus.backbone.layers.1.mixer.mamba_rev.out_proj.weight", NULL);
    assert_int_equal(ssm_checkpoint_load(dir, &m), SSM_ERR_UNSUPPORTED);
    printf("%s\n", ssm_last_error());
    assert_non_null(strstr(ssm_last_error(), "mamba_fwd.out_proj.weight"));
    copy_tensors("golden/caduceus_ph_a", dir, "lm_head.weight", NULL);
    assert_int_equal(ssm_checkpoint_load(dir, &m), SSM_ERR_UNSUPPORTED);
    /* a tensor Caduceus does not have */
    copy_tensors("golden/caduceus_ph_a", dir, "", "caduceus.backbone.layers.0.mixer.mamba_fwd.in_proj.bias");
    assert_int_equal(ssm_checkpoint_load(dir, &m), SSM_ERR_FORMAT);
    printf("%s\n", ssm_last_error());
    assert_non_null(strstr(ssm_last_error(), "unexpected tensor"));
    /* a complement_map buffer that is not config.json's map (A <-> G, C <-> T there) */
    const char *from[] = {"\"10\": 7", "\"7\": 10", "\"8\": 9", "\"9\": 8"},
               *to[] = {"\"10\": 8", "\"7\": 9", "\"8\": 10", "\"9\": 7"};
    copy_config("golden/caduceus_ps_a", dir, from, to, 4);
    char path[4096], src[4096];
    size_t n;
    snprintf(src, sizeof src, "%s/model.safetensors", tu_data_path("golden/caduceus_ps_a"));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *bytes = slurp(src, &n);
    spill(path, bytes, n);
    free(bytes);
    assert_int_equal(ssm_checkpoint_load(dir, &m), SSM_ERR_FORMAT);
    printf("%s\n", ssm_last_error());
    assert_non_null(strstr(ssm_last_error(), "complement_map"));
    /* LayerNorm */
    copy_config("golden/caduceus_ph_a", dir, (const char *[]){"\"rms_norm\": true"},
                (const char *[]){"\"rms_norm\": false"}, 1);
    copy_tensors("golden/caduceus_ph_a", dir, "", NULL);
    assert_int_equal(ssm_checkpoint_load(dir, &m), SSM_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssm_last_error(), "rms_norm"));
    assert_null(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_classifier_gradients),
        cmocka_unit_test(test_rc_equivariance),
        cmocka_unit_test(test_classifier_invariance),
        cmocka_unit_test(test_sees_the_future),
        cmocka_unit_test(test_causal_calls_refused),
        cmocka_unit_test(test_checkpoint_and_recipe),
        cmocka_unit_test(test_caduceus_files_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
