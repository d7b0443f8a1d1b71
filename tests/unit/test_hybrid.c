/* test_hybrid.c: models that mix Mamba layers with attention and MLP layers, through the
 * public API. Two tiny models of kinds [mamba2, attention, mlp, mamba1, attention, mlp]
 * (the attention and MLP options are shared by all layers of a kind):
 *   A: attention MHA (2 heads of 4), no RoPE; MLP swiglu (d_ff 12);
 *   B: attention GQA (4 query heads, 2 kv heads of 4), RoPE on 2 channels (base 10000);
 *      MLP relu2 (d_ff 12).
 *   1. the backward against central finite differences of the loss (in double, from the
 *      logits), sampled entries of every tensor, for A and B;
 *   2. step mode = the parallel forward; windows with a carried state = one pass (RoPE
 *      positions continue across windows; RoPE does change B's logits);
 *   3. the KV cache limit (attention.max_context = 10): windows and steps past it refused
 *      with SSM_ERR_ARG naming max_context, the state left as it was; ssm_state_position,
 *      ssm_state_copy_row and ssm_state_reset_row carry and zero positions;
 *   4. checkpoints: save + load keeps the config (kinds, attention, MLP options), the tensor
 *      names and the logits bitwise; a file missing an attention or MLP metadata key is
 *      refused with SSM_ERR_MISSING and a message naming the key;
 *   5. recipes: model.pattern and the attention/MLP keys; a bad pattern character, an
 *      n_kv_heads not dividing n_heads, pattern with layers are refused by name;
 *   6. 1 and 2 threads give bitwise identical logits, loss and gradients for model B. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssm/checkpoint.h"
#include "ssm/recipe.h"
#include "modelcheck.h"

/* ---- temporary directory ----------------------------------------------------------------- */

static char tmp_root[4096];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_root, sizeof tmp_root, "/tmp/ssm-hybrid-XXXXXX");
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const char *tpath(const char *name) {
    static char bufs[8][4200];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp_root, name);
    return b;
}

static void expect_msg(ssm_status got, ssm_status want, const char *part1, const char *part2) {
    const char *msg = ssm_last_error();
    print_message("  %s -> %s\n", ssm_status_name(got), msg);
    if (got != want)
        fail_msg("status %d (%s), expected %d (%s): %s", got, ssm_status_name(got), want,
                 ssm_status_name(want), msg);
    if (part1 && !strstr(msg, part1)) fail_msg("message lacks '%s': %s", part1, msg);
    if (part2 && !strstr(msg, part2)) fail_msg("message lacks '%s': %s", part2, msg);
}

/* ---- models ------------------------------------------------------------------------------ */

enum { VOCAB = 16 };

/* [mamba2, attention, mlp, mamba1, attention, mlp], D 8, V 16. Mamba-2: I 16, P 4 (H 4), G 2,
 * N 4, K 4, chunk 3; Mamba-1: N 4, K 3. 'A' or 'B' as in the header. */
static ssm_config hybrid_config(char which, int max_context) {
    ssm_config c = ssm_config_default(VOCAB, 8, 1);
    TU_OK(ssm_config_set_pattern(&c, "M*-M*-", SSM_LAYER_MAMBA2));
    assert_int_equal(c.n_layer, 6);
    c.layer_kind[3] = SSM_LAYER_MAMBA1;
    c.mamba2.headdim = 4;
    c.mamba2.d_state = 4;
    c.mamba2.ngroups = 2;
    c.mamba2.chunk_size = 3;
    c.mamba2.expand = 2;
    c.d_state = 4;
    c.d_conv = 3;
    if (which == 'A') {
        c.attention = (ssm_attention_config){.n_heads = 2, .n_kv_heads = 2, .head_dim = 4,
                                             .rotary_dim = 0, .rope_base = 10000.0f,
                                             .max_context = max_context};
        c.mlp = (ssm_mlp_config){.d_ff = 12, .activation = SSM_MLP_SWIGLU};
    } else {
        c.attention = (ssm_attention_config){.n_heads = 4, .n_kv_heads = 2, .head_dim = 4,
                                             .rotary_dim = 2, .rope_base = 10000.0f,
                                             .max_context = max_context};
        c.mlp = (ssm_mlp_config){.d_ff = 12, .activation = SSM_MLP_RELU2};
    }
    return c;
}

static void set_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    tu_fill_uniform(x, n, lo, hi, seed);
}

/* Every parameter off its initial value; the constants (norms, D) and narrow ranges (dt_bias,
 * A_log) moved to where each matters; q and k larger so that the softmax is not near uniform. */
static void perturb(ssm_model *m, uint64_t seed) {
    const ssm_config *c = &m->config;
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    int D = c->d_model;
    for (size_t i = 0; i < (size_t)c->vocab_size * D; i++) m->params.embedding[i] *= 4.0f;
    set_uniform(m->params.norm_f, D, 0.6f, 1.4f, seed + 1);
    for (int l = 0; l < c->n_layer; l++) {
        ssm_layer_params *lp = &m->params.layers[l];
        set_uniform(lp->norm, D, 0.6f, 1.4f, seed + 10 + l);
        switch (c->layer_kind[l]) {
        case SSM_LAYER_MAMBA2: {
            int H = c->mamba2.nheads, I = c->mamba2.d_inner;
            ssm_mamba2_params *p = &lp->mamba2;
            set_uniform(p->norm, I, 0.6f, 1.4f, seed + 20 + l);
            set_uniform(p->D, H, 0.5f, 1.5f, seed + 30 + l);
            set_uniform(p->dt_bias, H, -1.0f, 0.5f, seed + 40 + l);
            set_uniform(p->A_log, H, 0.3f, 2.0f, seed + 50 + l);
            for (int h = 0; h < H; h++) p->A_log[h] = logf(p->A_log[h]);
            break;
        }
        case SSM_LAYER_MAMBA1: {
            ssm_mamba1_params *p = &lp->mamba1;
            set_uniform(p->D, c->d_inner, 0.5f, 1.5f, seed + 30 + l);
            for (int e = 0; e < c->d_inner; e++) p->dt_proj_b[e] += 1.5f;
            for (size_t i = 0; i < (size_t)(c->dt_rank + 2 * c->d_state) * c->d_inner; i++)
                p->x_proj[i] *= 3.0f;
            /* a louder layer, whose state lasts a few steps: A = -exp(A_log) in -(0.2 .. 1) */
            for (size_t i = 0; i < (size_t)2 * c->d_inner * D; i++) p->in_proj[i] *= 2.0f;
            for (size_t i = 0; i < (size_t)D * c->d_inner; i++) p->out_proj[i] *= 4.0f;
            set_uniform(p->A_log, (size_t)c->d_inner * c->d_state, 0.2f, 1.0f, seed + 60 + l);
            for (int i = 0; i < c->d_inner * c->d_state; i++) p->A_log[i] = logf(p->A_log[i]);
            break;
        }
        case SSM_LAYER_ATTENTION: {
            const ssm_attention_config *a = &c->attention;
            size_t nq = (size_t)a->n_heads * a->head_dim * D, nk = (size_t)a->n_kv_heads * a->head_dim * D;
            for (size_t i = 0; i < nq; i++) lp->attention.q_proj[i] *= 2.0f;
            for (size_t i = 0; i < nk; i++) lp->attention.k_proj[i] *= 2.0f;
            for (size_t i = 0; i < (size_t)D * a->n_heads * a->head_dim; i++)
                lp->attention.o_proj[i] *= 2.0f;
            break;
        }
        case SSM_LAYER_MLP:
            for (size_t i = 0; i < (size_t)D * c->mlp.d_ff; i++) lp->mlp.down[i] *= 2.0f;
            break;
        default:
            fail_msg("unexpected kind %d", c->layer_kind[l]);
        }
    }
}

static ssm_model *make_model(const ssm_config *c, uint64_t seed) {
    ssm_model *m;
    TU_OK(ssm_model_create(c, &m));
    TU_OK(ssm_model_init(m, seed));
    perturb(m, seed * 7 + 1);
    return m;
}

static float *logits_of(ssm_model *m, const int32_t *tok, int B, int L) {
    return tu_logits_of(m, tok, B, L);
}

/* ---- 1: gradients against finite differences ---------------------------------------------- */

static void check_gradients(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L,
                            int samples, double tol) {
    int kinds_seen[SSM_LAYER_KIND_COUNT] = {0};
    for (int l = 0; l < m->config.n_layer; l++) kinds_seen[m->config.layer_kind[l]] = 1;
    for (int k = 0; k < SSM_LAYER_KIND_COUNT; k++) /* MoE and bimamba: test_moe, test_caduceus */
        assert_true(kinds_seen[k] || k == SSM_LAYER_MOE || k == SSM_LAYER_BIMAMBA);
    tu_check_gradients(m, tok, tgt, B, L, samples, tol);
}

static void make_batch(int32_t *tok, int32_t *tgt, int B, int L, int V, uint64_t seed) {
    tu_random_tokens(tok, B * L, V, seed);
    tu_random_tokens(tgt, B * L, V, seed + 1);
    for (int i = 0; i < B * L; i++)
        if (i % 7 == 5) tgt[i] = -1;
}

static void gradients_of(char which, uint64_t seed) {
    enum { B = 2, L = 7 };
    int32_t tok[B * L], tgt[B * L];
    make_batch(tok, tgt, B, L, VOCAB, seed);
    ssm_config c = hybrid_config(which, 64);
    ssm_model *m = make_model(&c, seed + 2);
    printf("model %c: mamba2, attention (H %d, Hkv %d, rotary %d), %s, mamba1, attention, %s\n",
           which, m->config.attention.n_heads, m->config.attention.n_kv_heads,
           m->config.attention.rotary_dim, which == 'A' ? "swiglu" : "relu2",
           which == 'A' ? "swiglu" : "relu2");
    /* the names follow the MLP's activation */
    const char *mlp_name = which == 'A' ? "backbone.layers.2.mixer.fc1.weight"
                                        : "backbone.layers.2.mixer.up_proj.weight";
    assert_non_null(ssm_model_find_tensor(m, mlp_name));
    assert_non_null(ssm_model_find_tensor(m, "backbone.layers.4.mixer.k_proj.weight"));
    assert_int_equal(ssm_model_find_tensor(m, "backbone.layers.4.mixer.k_proj.weight")->shape[0],
                     m->config.attention.n_kv_heads * 4);
    check_gradients(m, tok, tgt, B, L, 4, 2e-2);
    ssm_model_free(m);
}

static void test_gradients_a(void **st) {
    (void)st;
    gradients_of('A', 3);
}

static void test_gradients_b(void **st) {
    (void)st;
    gradients_of('B', 11);
}

/* ---- 2: step mode and windows ----------------------------------------------------------- */

static void check_step_equals_parallel(ssm_model *m, int B, int L, uint64_t seed) {
    tu_check_step(m, B, L, seed);
}

static void check_windows(ssm_model *m, int B, const int *windows, int nw, uint64_t seed) {
    tu_check_windows(m, B, windows, nw, seed);
}

static void step_and_windows_of(char which, uint64_t seed) {
    ssm_config c = hybrid_config(which, 64);
    ssm_model *m = make_model(&c, seed);
    print_message("model %c\n", which);
    check_step_equals_parallel(m, 2, 9, seed + 1);
    const int two[] = {4, 5};
    check_windows(m, 2, two, 2, seed + 2);
    const int three[] = {1, 5, 7}; /* a one-token window, windows across Mamba-2 chunks */
    check_windows(m, 3, three, 3, seed + 3);
    ssm_model_free(m);
}

static void test_step_and_windows_a(void **st) {
    (void)st;
    step_and_windows_of('A', 31);
}

static void test_step_and_windows_b(void **st) {
    (void)st;
    step_and_windows_of('B', 37);
    /* RoPE matters for model B: the same parameters without it give other logits (so the
     * windows above would fail if the positions restarted at each window) */
    ssm_config c = hybrid_config('B', 64);
    ssm_model *m = make_model(&c, 37);
    c.attention.rotary_dim = 0;
    ssm_model *n;
    TU_OK(ssm_model_create(&c, &n));
    assert_int_equal(n->n_params, m->n_params);
    memcpy(n->params_blob, m->params_blob, m->n_params * sizeof(float));
    int32_t tok[2 * 9];
    tu_random_tokens(tok, 2 * 9, VOCAB, 39);
    float *a = logits_of(m, tok, 2, 9), *b = logits_of(n, tok, 2, 9);
    double d = tu_rel_err(b, a, (size_t)2 * 9 * VOCAB);
    print_message("model B with and without RoPE: rel diff %.2e\n", d);
    assert_true(d > 1e-3);
    free(a);
    free(b);
    ssm_model_free(n);
    ssm_model_free(m);
}

/* ---- 3: the KV cache limit and the rows of a state ---------------------------------------- */

static void test_kv_cache_limit(void **st) {
    (void)st;
    enum { B = 2, N = 10 };
    ssm_config c = hybrid_config('B', N);
    ssm_model *m = make_model(&c, 41);
    int V = VOCAB;
    int32_t tok[B * N];
    tu_random_tokens(tok, B * N, V, 43);
    float *ref = logits_of(m, tok, B, N); /* a stateless forward has no cache limit */
    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, B, &s));
    assert_int_equal(ssm_state_position(s, 0), 0);
    assert_int_equal(ssm_state_position(s, 1), 0);
    assert_int_equal(ssm_state_position(s, 2), 0); /* out of range */
    assert_int_equal(ssm_state_position(NULL, 0), 0);
    /* 8 positions */
    int32_t part[B * N];
    for (int b = 0; b < B; b++) memcpy(part + b * 8, tok + b * N, 8 * sizeof(int32_t));
    TU_OK(ssm_forward(m, part, NULL, B, 8, s, NULL));
    assert_int_equal(ssm_state_position(s, 0), 8);
    assert_int_equal(ssm_state_position(s, 1), 8);
    /* a window of 3 would reach 11 > 10 */
    for (int b = 0; b < B; b++) memcpy(part + b * 3, tok + b * N + 8, 2 * sizeof(int32_t)), part[b * 3 + 2] = 1;
    expect_msg(ssm_forward(m, part, NULL, B, 3, s, NULL), SSM_ERR_ARG, "max_context", "11");
    assert_int_equal(ssm_state_position(s, 0), 8);
    assert_int_equal(ssm_state_position(s, 1), 8);
    float loss;
    int32_t tgt[B * 3] = {1, 2, 3, 4, 5, 6};
    expect_msg(ssm_forward_score(m, part, tgt, B, 3, s, (float[B * 3]){0}, NULL), SSM_ERR_ARG,
               "max_context", NULL);
    expect_msg(ssm_forward(m, part, tgt, B, 3, s, &loss), SSM_ERR_ARG, "max_context", NULL);
    assert_int_equal(ssm_state_position(s, 0), 8);
    /* a step to 9 is allowed and continues exactly */
    int32_t col[B];
    float lg[B * VOCAB];
    for (int b = 0; b < B; b++) col[b] = tok[b * N + 8];
    TU_OK(ssm_step(m, s, col, lg));
    assert_int_equal(ssm_state_position(s, 0), 9);
    for (int b = 0; b < B; b++) {
        double e = tu_rel_err(lg + b * V, ref + ((size_t)b * N + 8) * V, V);
        print_message("  step at position 8, row %d: rel err %.2e\n", b, e);
        assert_true(e < 1e-5);
    }
    /* a window of 2 from 9 would reach 11 */
    expect_msg(ssm_forward(m, part, NULL, B, 2, s, NULL), SSM_ERR_ARG, "max_context", NULL);
    assert_int_equal(ssm_state_position(s, 1), 9);
    /* a window of 1 fills the cache exactly (10 positions) and continues exactly */
    for (int b = 0; b < B; b++) col[b] = tok[b * N + 9];
    TU_OK(ssm_forward(m, col, NULL, B, 1, s, NULL));
    assert_int_equal(ssm_state_position(s, 0), 10);
    for (int b = 0; b < B; b++) {
        double e = tu_rel_err(ssm_model_logits(m) + b * V, ref + ((size_t)b * N + 9) * V, V);
        print_message("  window at position 9, row %d: rel err %.2e\n", b, e);
        assert_true(e < 1e-5);
    }
    /* full: a step and a window of 1 are refused */
    expect_msg(ssm_step(m, s, col, lg), SSM_ERR_ARG, "max_context", NULL);
    expect_msg(ssm_forward(m, col, NULL, B, 1, s, NULL), SSM_ERR_ARG, "max_context", NULL);
    assert_int_equal(ssm_state_position(s, 0), 10);
    assert_int_equal(ssm_state_position(s, 1), 10);
    /* the limit is per row: row 0 reset, row 1 still full refuses, naming sequence 1 */
    TU_OK(ssm_state_reset_row(s, 0));
    assert_int_equal(ssm_state_position(s, 0), 0);
    assert_int_equal(ssm_state_position(s, 1), 10);
    expect_msg(ssm_step(m, s, col, lg), SSM_ERR_ARG, "max_context", "sequence 1");
    /* a batch-1 state holding row 1 is full too; one holding row 0 starts afresh */
    ssm_state *one;
    TU_OK(ssm_state_create(&m->config, 1, &one));
    TU_OK(ssm_state_copy_row(one, 0, s, 1));
    assert_int_equal(ssm_state_position(one, 0), 10);
    expect_msg(ssm_step(m, one, col, lg), SSM_ERR_ARG, "max_context", NULL);
    TU_OK(ssm_state_copy_row(one, 0, s, 0));
    assert_int_equal(ssm_state_position(one, 0), 0);
    TU_OK(ssm_forward(m, tok, NULL, 1, N, one, NULL)); /* a whole 10 from zero fits */
    double e = tu_rel_err(ssm_model_logits(m), ref, (size_t)N * V);
    print_message("  reset row moved to a batch-1 state, 10 positions: rel err %.2e\n", e);
    assert_true(e < 1e-5);
    assert_int_equal(ssm_state_position(one, 0), 10);
    /* a window longer than the cache from a fresh state */
    ssm_state_reset(one);
    assert_int_equal(ssm_state_position(one, 0), 0);
    int32_t eleven[N + 1] = {0};
    expect_msg(ssm_forward(m, eleven, NULL, 1, N + 1, one, NULL), SSM_ERR_ARG, "max_context", NULL);
    assert_int_equal(ssm_state_position(one, 0), 0);
    ssm_state_free(one);
    /* greedy decoding: a prompt of 8 and 3 new tokens use 10 positions (the last token is
     * never fed back); 4 would need 11 */
    int32_t out[B * 4];
    TU_OK(ssm_generate_greedy(m, part, B, 8, 3, out));
    expect_msg(ssm_generate_greedy(m, part, B, 8, 4, out), SSM_ERR_ARG, "max_context", NULL);
    ssm_state_free(s);
    free(ref);
    ssm_model_free(m);
}

/* Rows at different positions in one batch (RoPE and the cache per row); a row moved to a
 * batch-1 state continues exactly; a reset row starts from zero. */
static void rows_of(char which, uint64_t seed) {
    enum { B = 2, L1 = 4, L2 = 3 };
    ssm_config c = hybrid_config(which, 16);
    ssm_model *m = make_model(&c, seed);
    int V = VOCAB;
    int32_t tok[B * (L1 + L2 + 1)];
    enum { N = L1 + L2 + 1 };
    tu_random_tokens(tok, B * N, V, seed + 1);
    float *ref = logits_of(m, tok, B, N);
    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, B, &s));
    int32_t w1[B * L1], w2[B * L2];
    for (int b = 0; b < B; b++) {
        memcpy(w1 + b * L1, tok + b * N, L1 * sizeof(int32_t));
        memcpy(w2 + b * L2, tok + b * N + L1, L2 * sizeof(int32_t));
    }
    TU_OK(ssm_forward(m, w1, NULL, B, L1, s, NULL));
    /* row 1 copied aside (position 4), row 0 reset (position 0) */
    ssm_state *one;
    TU_OK(ssm_state_create(&m->config, 1, &one));
    TU_OK(ssm_state_copy_row(one, 0, s, 1));
    assert_int_equal(ssm_state_position(one, 0), L1);
    TU_OK(ssm_state_reset_row(s, 0));
    assert_int_equal(ssm_state_position(s, 0), 0);
    assert_int_equal(ssm_state_position(s, 1), L1);
    /* the next window: row 0 from zero, row 1 continuing at position 4 */
    TU_OK(ssm_forward(m, w2, NULL, B, L2, s, NULL));
    assert_int_equal(ssm_state_position(s, 0), L2);
    assert_int_equal(ssm_state_position(s, 1), L1 + L2);
    float *got = malloc((size_t)B * L2 * V * sizeof(float));
    memcpy(got, ssm_model_logits(m), (size_t)B * L2 * V * sizeof(float));
    float *fresh0 = logits_of(m, w2, 1, L2);
    double e0 = tu_rel_err(got, fresh0, (size_t)L2 * V);
    double e1 = tu_rel_err(got + (size_t)L2 * V, ref + ((size_t)N + L1) * V, (size_t)L2 * V);
    double d0 = tu_rel_err(got, ref + (size_t)L1 * V, (size_t)L2 * V); /* vs carried: differs */
    print_message("model %c: reset row vs zero start %.2e (vs carried %.2e); row at position %d "
                  "%.2e\n", which, e0, d0, L1, e1);
    assert_true(e0 < 1e-5);
    assert_true(e1 < 1e-5);
    assert_true(d0 > 1e-3);
    /* the copy continues like the batch's row 1 did */
    TU_OK(ssm_forward(m, w2 + L2, NULL, 1, L2, one, NULL));
    double ec = tu_rel_err(ssm_model_logits(m), got + (size_t)L2 * V, (size_t)L2 * V);
    assert_int_equal(ssm_state_position(one, 0), L1 + L2);
    /* and a step after it gives the pass's last position */
    int32_t last = tok[N + N - 1];
    float lg[VOCAB];
    TU_OK(ssm_step(m, one, &last, lg));
    double es = tu_rel_err(lg, ref + ((size_t)N + N - 1) * V, V);
    print_message("  row 1 moved to a batch-1 state: window %.2e, then a step %.2e\n", ec, es);
    assert_true(ec < 1e-6);
    assert_true(es < 1e-5);
    free(fresh0);
    free(got);
    free(ref);
    ssm_state_free(one);
    ssm_state_free(s);
    ssm_model_free(m);
}

static void test_state_rows(void **st) {
    (void)st;
    rows_of('A', 51);
    rows_of('B', 53);
}

/* ---- 4: checkpoints ---------------------------------------------------------------------- */

static void assert_same_hybrid_config(const ssm_config *a, const ssm_config *b) {
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_true(a->norm_eps == b->norm_eps);
    for (int i = 0; i < a->n_layer; i++) assert_int_equal(a->layer_kind[i], b->layer_kind[i]);
    assert_int_equal(a->attention.n_heads, b->attention.n_heads);
    assert_int_equal(a->attention.n_kv_heads, b->attention.n_kv_heads);
    assert_int_equal(a->attention.head_dim, b->attention.head_dim);
    assert_int_equal(a->attention.rotary_dim, b->attention.rotary_dim);
    assert_true(a->attention.rope_base == b->attention.rope_base);
    assert_int_equal(a->attention.max_context, b->attention.max_context);
    assert_int_equal(a->mlp.d_ff, b->mlp.d_ff);
    assert_int_equal(a->mlp.activation, b->mlp.activation);
    assert_int_equal(a->mamba2.headdim, b->mamba2.headdim);
    assert_int_equal(a->mamba2.d_state, b->mamba2.d_state);
    assert_int_equal(a->mamba2.ngroups, b->mamba2.ngroups);
    assert_int_equal(a->mamba2.chunk_size, b->mamba2.chunk_size);
    assert_int_equal(a->d_state, b->d_state);
    assert_int_equal(a->d_conv, b->d_conv);
    assert_int_equal(a->dt_rank, b->dt_rank);
    assert_int_equal(a->d_inner, b->d_inner);
}

/* every metadata key a hybrid checkpoint has (checkpoint.c, config_metadata) */
static const char *const meta_keys[] = {
    "format", "ssm.vocab_size", "ssm.d_model", "ssm.n_layer", "ssm.d_state", "ssm.d_conv",
    "ssm.expand", "ssm.dt_rank", "ssm.d_inner", "ssm.norm_eps",
    "ssm.attention.n_heads", "ssm.attention.n_kv_heads", "ssm.attention.head_dim",
    "ssm.attention.rotary_dim", "ssm.attention.rope_base", "ssm.attention.max_context",
    "ssm.mlp.d_ff", "ssm.mlp.activation",
    "ssm.mamba2.d_state", "ssm.mamba2.d_conv", "ssm.mamba2.expand", "ssm.mamba2.headdim",
    "ssm.mamba2.ngroups", "ssm.mamba2.chunk_size", "ssm.mamba2.dt_limit_min",
    "ssm.mamba2.dt_limit_max", "ssm.layers"};
#define N_META_KEYS ((int)(sizeof meta_keys / sizeof meta_keys[0]))

/* src rewritten to dst with every tensor and every metadata key but `drop` */
static void rewrite_without(const char *src, const char *dst, const char *drop) {
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(src, &st));
    char vals[N_META_KEYS][256];
    const char *kv[2 * N_META_KEYS + 1];
    int n = 0, found = 0;
    for (int i = 0; i < N_META_KEYS; i++) {
        const char *v = ssm_safetensors_meta(st, meta_keys[i]);
        if (!v) {
            fail_msg("the saved file has no %s", meta_keys[i]);
            return;
        }
        if (drop && !strcmp(drop, meta_keys[i])) {
            found = 1;
            continue;
        }
        snprintf(vals[i], 256, "%s", v);
        kv[2 * n] = meta_keys[i], kv[2 * n + 1] = vals[i], n++;
    }
    kv[2 * n] = NULL;
    assert_true(!drop || found);
    int nt = ssm_safetensors_count(st);
    assert_true(nt > 0);
    ssm_st_write_item *items = calloc((size_t)nt, sizeof *items);
    float **data = calloc((size_t)nt, sizeof *data);
    for (int i = 0; i < nt; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        data[i] = malloc(t->numel * sizeof(float));
        TU_OK(ssm_safetensors_read_f32(st, t->name, data[i], t->numel));
        items[i].name = t->name;
        items[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) items[i].shape[d] = t->shape[d];
        items[i].data = data[i];
    }
    TU_OK(ssm_safetensors_write(dst, items, nt, kv));
    for (int i = 0; i < nt; i++) free(data[i]);
    free(data);
    free(items);
    ssm_safetensors_close(st);
}

static void expect_load_error(const char *path, ssm_status want, const char *p1, const char *p2) {
    ssm_model *m = (ssm_model *)1;
    ssm_status s = ssm_checkpoint_load(path, &m);
    expect_msg(s, want, p1, p2);
    assert_null(m);
}

static const char *save_model(char which, ssm_model **out) {
    ssm_config c = hybrid_config(which, 48);
    ssm_model *m = make_model(&c, which == 'A' ? 61 : 67);
    const char *path = tpath(which == 'A' ? "a.safetensors" : "b.safetensors");
    TU_OK(ssm_checkpoint_save(m, path, NULL));
    *out = m;
    return path;
}

static void roundtrip_of(char which) {
    ssm_model *m;
    const char *path = save_model(which, &m);
    ssm_model *l = NULL;
    TU_OK(ssm_checkpoint_load(path, &l));
    assert_same_hybrid_config(&l->config, &m->config);
    assert_int_equal(l->n_params, m->n_params);
    assert_int_equal(l->n_tensors, m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++) {
        assert_string_equal(l->tensors[i].name, m->tensors[i].name);
        assert_int_equal(l->tensors[i].numel, m->tensors[i].numel);
    }
    assert_memory_equal(l->params_blob, m->params_blob, m->n_params * sizeof(float));
    enum { B = 2, L = 9 };
    int32_t tok[B * L];
    tu_random_tokens(tok, B * L, VOCAB, 71);
    float *a = logits_of(m, tok, B, L), *b = logits_of(l, tok, B, L);
    assert_memory_equal(a, b, (size_t)B * L * VOCAB * sizeof(float));
    print_message("model %c: saved and loaded, same config and bitwise the same logits\n", which);
    /* the rewrite itself is faithful: with every key it loads to the same model */
    const char *re = tpath("rewritten.safetensors");
    rewrite_without(path, re, NULL);
    ssm_model *r = NULL;
    TU_OK(ssm_checkpoint_load(re, &r));
    assert_same_hybrid_config(&r->config, &m->config);
    assert_memory_equal(r->params_blob, m->params_blob, m->n_params * sizeof(float));
    ssm_model_free(r);
    free(a);
    free(b);
    ssm_model_free(l);
    ssm_model_free(m);
}

static void test_checkpoint_roundtrip(void **st) {
    (void)st;
    roundtrip_of('A');
    roundtrip_of('B');
}

/* an integer key of the attention or MLP options removed: SSM_ERR_MISSING naming the key */
static void test_checkpoint_missing_int_keys(void **st) {
    (void)st;
    ssm_model *m;
    const char *path = save_model('B', &m);
    const char *const drop[] = {"ssm.mlp.d_ff", "ssm.attention.n_heads", "ssm.attention.n_kv_heads",
                                "ssm.attention.head_dim", "ssm.attention.rotary_dim",
                                "ssm.attention.max_context"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
        const char *p = tpath("dropped.safetensors");
        rewrite_without(path, p, drop[i]);
        expect_load_error(p, SSM_ERR_MISSING, drop[i], NULL);
    }
    ssm_model_free(m);
}

/* the string-valued keys removed: the same status as every other absent key (SSM_ERR_MISSING,
 * "a required tensor or key is absent"), naming the key */
static void test_checkpoint_missing_string_keys(void **st) {
    (void)st;
    ssm_model *m;
    const char *path = save_model('A', &m);
    const char *const drop[] = {"ssm.attention.rope_base", "ssm.mlp.activation"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
        const char *p = tpath("dropped.safetensors");
        rewrite_without(path, p, drop[i]);
        expect_load_error(p, SSM_ERR_MISSING, drop[i], NULL);
    }
    ssm_model_free(m);
}

/* ---- 5: recipes -------------------------------------------------------------------------- */

static ssm_recipe *parse(const char *text) {
    ssm_recipe *r = NULL;
    TU_OK(ssm_recipe_parse("t.yaml", text, strlen(text), &r));
    return r;
}

static void expect_recipe_error(const char *text, const char *p1, const char *p2) {
    ssm_recipe *r = parse(text);
    ssm_config c;
    expect_msg(ssm_config_from_recipe(r, 16, &c), SSM_ERR_ARG, p1, p2);
    ssm_recipe_free(r);
}

static void test_recipes(void **st) {
    (void)st;
    ssm_recipe *r = parse("model: {pattern: \"M*M-\", mixer: mamba2, d_model: 16, headdim: 8, "
                          "n_heads: 2}\n");
    ssm_config c;
    TU_OK(ssm_config_from_recipe(r, 16, &c));
    ssm_recipe_free(r);
    assert_int_equal(c.n_layer, 4);
    assert_int_equal(c.layer_kind[0], SSM_LAYER_MAMBA2);
    assert_int_equal(c.layer_kind[1], SSM_LAYER_ATTENTION);
    assert_int_equal(c.layer_kind[2], SSM_LAYER_MAMBA2);
    assert_int_equal(c.layer_kind[3], SSM_LAYER_MLP);
    assert_int_equal(c.mamba2.headdim, 8);
    assert_int_equal(c.mamba2.nheads, 4);
    assert_int_equal(c.attention.n_heads, 2);
    assert_int_equal(c.attention.n_kv_heads, 2); /* defaults to n_heads */
    assert_int_equal(c.attention.head_dim, 8);   /* d_model / n_heads */
    assert_int_equal(c.attention.rotary_dim, 0);
    assert_int_equal(c.mlp.d_ff, 64);            /* 4 d_model */
    assert_int_equal(c.mlp.activation, SSM_MLP_RELU2);
    /* the model builds and runs */
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, 1));
    int32_t tok[6] = {1, 2, 3, 4, 5, 6};
    TU_OK(ssm_forward(m, tok, NULL, 1, 6, NULL, NULL));
    ssm_model_free(m);

    /* every attention and MLP key, the default mixer (mamba1) for M */
    r = parse("model:\n  pattern: \"-*M\"\n  d_model: 16\n  n_heads: 4\n  n_kv_heads: 2\n"
              "  head_dim: 6\n  rotary_dim: 4\n  rope_base: 500\n  max_context: 128\n"
              "  d_ff: 24\n  mlp_activation: swiglu\n");
    TU_OK(ssm_config_from_recipe(r, 16, &c));
    ssm_recipe_free(r);
    assert_int_equal(c.n_layer, 3);
    assert_int_equal(c.layer_kind[0], SSM_LAYER_MLP);
    assert_int_equal(c.layer_kind[1], SSM_LAYER_ATTENTION);
    assert_int_equal(c.layer_kind[2], SSM_LAYER_MAMBA1);
    assert_int_equal(c.attention.n_heads, 4);
    assert_int_equal(c.attention.n_kv_heads, 2);
    assert_int_equal(c.attention.head_dim, 6);
    assert_int_equal(c.attention.rotary_dim, 4);
    assert_true(c.attention.rope_base == 500.0f);
    assert_int_equal(c.attention.max_context, 128);
    assert_int_equal(c.mlp.d_ff, 24);
    assert_int_equal(c.mlp.activation, SSM_MLP_SWIGLU);

    /* a bad character names it and where (1-based) */
    expect_recipe_error("model: {pattern: \"M*x-\", mixer: mamba2, d_model: 16, headdim: 8}\n",
                        "'x' at 3", "t.yaml:1:");
    expect_recipe_error("model: {pattern: \"\", d_model: 16}\n", "pattern", NULL);
    /* n_kv_heads not dividing n_heads */
    expect_recipe_error("model: {pattern: \"M*\", d_model: 16, n_heads: 4, n_kv_heads: 3}\n",
                        "attention.n_kv_heads", "t.yaml:1:");
    /* odd rotary_dim, rotary_dim past head_dim */
    expect_recipe_error("model: {pattern: \"*\", d_model: 16, n_heads: 2, rotary_dim: 3}\n",
                        "attention.rotary_dim", NULL);
    expect_recipe_error("model: {pattern: \"*\", d_model: 16, n_heads: 2, rotary_dim: 10}\n",
                        "attention.rotary_dim", NULL);
    expect_recipe_error("model: {pattern: \"-\", d_model: 16, mlp_activation: gelu}\n",
                        "mlp_activation", NULL);
    /* pattern and layers together */
    expect_recipe_error("model: {pattern: \"M*\", n_layer: 2, layers: [mamba1, attention]}\n",
                        "pattern", "not both");
    /* the kinds by name in layers work too */
    r = parse("model: {n_layer: 3, d_model: 16, n_heads: 2, layers: [attention, mlp, mamba1]}\n");
    TU_OK(ssm_config_from_recipe(r, 16, &c));
    ssm_recipe_free(r);
    assert_int_equal(c.layer_kind[0], SSM_LAYER_ATTENTION);
    assert_int_equal(c.layer_kind[1], SSM_LAYER_MLP);
    assert_int_equal(c.layer_kind[2], SSM_LAYER_MAMBA1);
}

/* ---- 6: threads ------------------------------------------------------------------------ */

static void test_threads_bitwise(void **st) {
    (void)st;
    enum { B = 3, L = 13 };
    ssm_config c = hybrid_config('B', 64);
    ssm_model *m = make_model(&c, 83);
    int32_t tok[B * L], tgt[B * L];
    make_batch(tok, tgt, B, L, VOCAB, 85);
    int saved = ssm_get_threads();
    size_t nl = (size_t)B * L * VOCAB;
    float *logits[2], *grads[2], loss[2], step[2][B * VOCAB];
    const int threads[2] = {1, 2};
    for (int i = 0; i < 2; i++) {
        ssm_set_threads(threads[i]);
        assert_int_equal(ssm_get_threads(), threads[i]);
        TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss[i]));
        logits[i] = malloc(nl * sizeof(float));
        memcpy(logits[i], ssm_model_logits(m), nl * sizeof(float));
        ssm_model_zero_grad(m);
        TU_OK(ssm_backward(m));
        grads[i] = malloc(m->n_params * sizeof(float));
        memcpy(grads[i], m->grads_blob, m->n_params * sizeof(float));
        /* a carried window then a step */
        ssm_state *s;
        TU_OK(ssm_state_create(&m->config, B, &s));
        TU_OK(ssm_forward(m, tok, NULL, B, L, s, NULL));
        TU_OK(ssm_step(m, s, tok, step[i]));
        ssm_state_free(s);
    }
    ssm_set_threads(saved);
    double gn = 0;
    for (size_t i = 0; i < m->n_params; i++) gn += (double)grads[0][i] * grads[0][i];
    print_message("1 vs 2 threads: loss %.9g vs %.9g, |grad| %.3e\n", loss[0], loss[1], sqrt(gn));
    assert_true(gn > 0);
    assert_true(loss[0] == loss[1]);
    assert_memory_equal(logits[0], logits[1], nl * sizeof(float));
    assert_memory_equal(grads[0], grads[1], m->n_params * sizeof(float));
    assert_memory_equal(step[0], step[1], sizeof step[0]);
    for (int i = 0; i < 2; i++) free(logits[i]), free(grads[i]);
    ssm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_a),
        cmocka_unit_test(test_gradients_b),
        cmocka_unit_test(test_step_and_windows_a),
        cmocka_unit_test(test_step_and_windows_b),
        cmocka_unit_test(test_kv_cache_limit),
        cmocka_unit_test(test_state_rows),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_checkpoint_missing_int_keys),
        cmocka_unit_test(test_checkpoint_missing_string_keys),
        cmocka_unit_test(test_recipes),
        cmocka_unit_test(test_threads_bitwise),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
