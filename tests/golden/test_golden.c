/* test_golden.c: parity with the reference implementation.
 *
 * The fixtures in tests/golden/mamba_{a,b}/ were made by tests/golden/make_golden.py with
 * Hugging Face transformers' MambaForCausalLM (pure PyTorch path, fp32, CPU); see
 * tests/golden/README.md. Each folder holds what save_pretrained wrote (model.safetensors +
 * config.json) and expected.safetensors: input_ids (B, L), logits (B, L, V), loss (1),
 * hidden_f and grad.<parameter name> for every parameter after loss.backward().
 *
 * transformers shifts the labels inside the model: its loss is the mean cross-entropy of
 * logits[:, t] against input_ids[:, t + 1] for t < L - 1. Our targets are therefore the ids
 * shifted left by one with the last position of each row not scored (-1).
 *
 * tests/golden/hf_mamba2_a/ is a Mamba-2 model written by transformers' Mamba2ForCausalLM itself
 * (tests/golden/make_golden_hf_mamba2.py, one group; hf_mamba2_b, with two groups, is kept to
 * show that transformers normalises the gated norm over the whole width, unlike mamba_ssm,
 * and is not compared here).
 * tests/golden/mamba2_{a,b}/ hold Mamba-2 models (transformers' Mamba2 layout and config.json)
 * made by tests/golden/make_golden_mamba2.py from a float64 torch reference of mamba_ssm's
 * Mamba2 (grouped gated norm; mamba2_b has 2 groups and a dt_limit that clamps).
 *
 * Checked here, each as a relative norm error ||ours - ref|| / ||ref|| < 1e-4:
 *   - the logits and the loss of ssm_forward, and every gradient of ssm_backward
 *     (conv1d.weight is (E, 1, K) in the file and (E, K) here: the same memory layout);
 *   - the logits of step mode (ssm_step, one token at a time) against the same reference;
 *   - a forward in two windows carrying the state against the same reference.
 *
 * tests/golden/caduceus_{ph_a,ph_b,ps_a}/ are Caduceus masked LMs in Caduceus' own layout
 * (tests/golden/make_golden_caduceus.py, a float64 torch reference of modeling_caduceus.py and
 * modeling_rcps.py): bidirectional Mamba-1 layers (add; ew_multiply) and RCPS with the fused
 * add-norm path. They have no step mode; test_rcps_swap shows that the fused path's half swap
 * is the function the reference computes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/checkpoint.h"
#include "../unit/testutil.h" /* tests/unit/testutil.h */

#define GOLDEN_TOL 1e-4

typedef struct golden {
    ssm_model *model;
    ssm_safetensors *expected;
    int B, L, V;      /* V: the reference vocabulary (the fixture's logits) */
    int32_t *ids;     /* (B, L) */
    int32_t *targets; /* (B, L): ids shifted left, last position -1 */
    float *logits;    /* (B, L, V) reference */
    float loss;       /* reference */
} golden;

/* Read a whole tensor of the expected file as float32 (malloc'd); *numel receives its size. */
static float *read_tensor(const ssm_safetensors *st, const char *name, size_t *numel) {
    const ssm_st_tensor *t = ssm_safetensors_find(st, name);
    if (!t) fail_msg("expected.safetensors has no tensor '%s'", name);
    float *x = malloc((t->numel ? t->numel : 1) * sizeof(float));
    assert_non_null(x);
    TU_OK(ssm_safetensors_read_f32(st, name, x, t->numel));
    if (numel) *numel = t->numel;
    return x;
}

static void golden_open(golden *g, const char *rel) {
    memset(g, 0, sizeof *g);
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", tu_data_path(rel));
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);

    TU_OK(ssm_checkpoint_load(dir, &g->model));
    TU_OK(ssm_safetensors_open(path, &g->expected));

    const ssm_st_tensor *ti = ssm_safetensors_find(g->expected, "input_ids");
    assert_non_null(ti);
    assert_int_equal(ti->ndim, 2);
    g->B = (int)ti->shape[0];
    g->L = (int)ti->shape[1];
    size_t T = (size_t)g->B * g->L;
    g->ids = malloc(T * sizeof(int32_t));
    g->targets = malloc(T * sizeof(int32_t));
    assert_non_null(g->ids);
    assert_non_null(g->targets);
    TU_OK(ssm_safetensors_read_i32(g->expected, "input_ids", g->ids, T));
    for (int b = 0; b < g->B; b++)
        for (int l = 0; l < g->L; l++)
            g->targets[(size_t)b * g->L + l] = l + 1 < g->L ? g->ids[(size_t)b * g->L + l + 1] : -1;

    const ssm_st_tensor *tl = ssm_safetensors_find(g->expected, "logits");
    assert_non_null(tl);
    assert_int_equal(tl->ndim, 3);
    assert_int_equal(tl->shape[0], g->B);
    assert_int_equal(tl->shape[1], g->L);
    g->V = (int)tl->shape[2];
    /* a loaded checkpoint keeps its vocabulary (docs/architecture.md, 'Vocabulary'); never
     * fewer rows than the ids */
    assert_true(g->model->config.vocab_size >= g->V);
    g->logits = read_tensor(g->expected, "logits", NULL);
    float *loss = read_tensor(g->expected, "loss", NULL);
    g->loss = loss[0];
    free(loss);

    const ssm_config *c = &g->model->config;
    const char *tv = ssm_safetensors_meta(g->expected, "transformers"),
               *pv = ssm_safetensors_meta(g->expected, "torch");
    if (ssm_config_all(c, SSM_LAYER_MAMBA2))
        printf("%s: mamba2 V=%d D=%d layers=%d I=%d H=%d P=%d G=%d N=%d K=%d chunk=%d", rel,
               c->vocab_size, c->d_model, c->n_layer, c->mamba2.d_inner, c->mamba2.nheads,
               c->mamba2.headdim, c->mamba2.ngroups, c->mamba2.d_state, c->mamba2.d_conv,
               c->mamba2.chunk_size);
    else if (!ssm_config_all(c, SSM_LAYER_MAMBA1)) {
        printf("%s: hybrid V=%d D=%d sublayers", rel, c->vocab_size, c->d_model);
        for (int i = 0; i < c->n_layer; i++)
            printf("%s%s%s", i ? "," : " ", c->second[i] ? "+" : "", ssm_layer_kind_name(c->layer_kind[i]));
    } else
        printf("%s: mamba1 V=%d D=%d layers=%d N=%d K=%d E=%d R=%d", rel, c->vocab_size,
               c->d_model, c->n_layer, c->d_state, c->d_conv, c->d_inner, c->dt_rank);
    if (!ssm_config_causal(c))
        printf(" (bidirectional %s%s)", c->bidirectional == SSM_BIDIR_MUL ? "mul" : "add",
               c->rcps ? ", rcps" : "");
    printf("; B=%d L=%d; reference loss %.7f (transformers %s, torch %s)\n", g->B, g->L, g->loss,
           tv ? tv : "?", pv ? pv : "?");
}

static void golden_close(golden *g) {
    ssm_model_free(g->model);
    ssm_safetensors_close(g->expected);
    free(g->ids);
    free(g->targets);
    free(g->logits);
}

/* Relative error of our logits rows (stride Vm, first V columns) for positions [l0, l1) of
 * every row against the reference (B, L, V). ours is laid out (B, l1 - l0, Vm). */
static double logits_err(const golden *g, const float *ours, int Vm, int l0, int l1) {
    double num = 0, den = 0;
    int n = l1 - l0;
    for (int b = 0; b < g->B; b++)
        for (int l = l0; l < l1; l++) {
            const float *o = ours + ((size_t)b * n + (l - l0)) * Vm;
            const float *r = g->logits + ((size_t)b * g->L + l) * g->V;
            for (int v = 0; v < g->V; v++) {
                if (!isfinite(o[v])) return INFINITY;
                double d = (double)o[v] - r[v];
                num += d * d;
                den += (double)r[v] * r[v];
            }
        }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

/* ---- forward (logits, loss) and backward (every gradient) -------------------------------- */

static void test_forward_backward(void **state) {
    const char *rel = *state;
    golden g;
    golden_open(&g, rel);
    ssm_model *m = g.model;
    int Vm = m->config.vocab_size;

    float loss = NAN;
    TU_OK(ssm_forward(m, g.ids, g.targets, g.B, g.L, NULL, &loss));
    double e_logits = logits_err(&g, ssm_model_logits(m), Vm, 0, g.L);
    double e_loss = fabs((double)loss - g.loss) / fabs((double)g.loss);
    printf("  logits rel err %.3e\n  loss %.7f vs %.7f, rel err %.3e\n", e_logits, loss, g.loss,
           e_loss);

    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));

    int bad = 0, matched = 0;
    int n = ssm_safetensors_count(g.expected);
    for (int i = 0; i < n; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(g.expected, i);
        if (strncmp(t->name, "grad.", 5) != 0) continue;
        const char *pname = t->name + 5;
        const ssm_tensor_info *info = ssm_model_find_tensor(m, pname);
        if (!info) {
            printf("  %-46s MISSING in the model\n", pname);
            bad++;
            continue;
        }
        if (info->numel != t->numel) {
            printf("  %-46s numel %zu here, %zu in the fixture\n", pname, info->numel, t->numel);
            bad++;
            continue;
        }
        float *ref = read_tensor(g.expected, t->name, NULL);
        double e = tu_rel_err(m->grads_blob + info->offset, ref, t->numel);
        int ok = e < GOLDEN_TOL;
        printf("  grad %-46s rel err %.3e%s\n", pname, e, ok ? "" : "  <-- FAIL");
        bad += !ok;
        matched++;
        free(ref);
    }
    /* every parameter of ours must have been compared (Jamba's inner dt/B/C norms included);
     * an absent optional tensor (a MoE's shared expert) has none */
    int nonempty = 0;
    for (int k = 0; k < m->n_tensors; k++) nonempty += m->tensors[k].numel > 0;
    if (matched != nonempty) {
        for (int k = 0; k < m->n_tensors; k++) {
            char name[128];
            snprintf(name, sizeof name, "grad.%s", m->tensors[k].name);
            if (m->tensors[k].numel && !ssm_safetensors_find(g.expected, name))
                printf("  %-46s has no reference gradient\n", m->tensors[k].name);
        }
        bad++;
    }
    fflush(stdout);
    golden_close(&g);

    if (!(e_logits < GOLDEN_TOL)) fail_msg("%s: logits rel err %.3e >= %g", rel, e_logits, GOLDEN_TOL);
    if (!(e_loss < GOLDEN_TOL)) fail_msg("%s: loss rel err %.3e >= %g", rel, e_loss, GOLDEN_TOL);
    if (bad) fail_msg("%s: %d gradient check(s) failed (see above)", rel, bad);
}

/* ---- RCPS's fused add-norm path: with its half swap the logits match, without it they do not */

static void test_rcps_swap(void **state) {
    const char *rel = *state;
    golden g;
    golden_open(&g, rel);
    ssm_model *m = g.model;
    assert_true(m->config.rcps && !m->config.rcps_unfused);
    TU_OK(ssm_forward(m, g.ids, NULL, g.B, g.L, NULL, NULL));
    double e_swap = logits_err(&g, ssm_model_logits(m), m->config.vocab_size, 0, g.L);
    m->config.rcps_unfused = 1; /* the same weights, no swap */
    TU_OK(ssm_forward(m, g.ids, NULL, g.B, g.L, NULL, NULL));
    double e_plain = logits_err(&g, ssm_model_logits(m), m->config.vocab_size, 0, g.L);
    printf("  with the half swap: logits rel err %.3e; without: %.3e\n", e_swap, e_plain);
    golden_close(&g);
    assert_true(e_swap < GOLDEN_TOL);
    assert_true(e_plain > 1e-2);
}

/* ---- step mode: one token at a time from a zero state ------------------------------------ */

static void test_step(void **state) {
    const char *rel = *state;
    golden g;
    golden_open(&g, rel);
    ssm_model *m = g.model;
    int Vm = m->config.vocab_size;

    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, g.B, &s));
    float *out = malloc((size_t)g.B * g.L * Vm * sizeof(float)); /* (B, L, Vm) */
    float *step_logits = malloc((size_t)g.B * Vm * sizeof(float));
    int32_t *tok = malloc(g.B * sizeof(int32_t));
    assert_non_null(out);
    assert_non_null(step_logits);
    assert_non_null(tok);
    for (int l = 0; l < g.L; l++) {
        for (int b = 0; b < g.B; b++) tok[b] = g.ids[(size_t)b * g.L + l];
        TU_OK(ssm_step(m, s, tok, step_logits));
        for (int b = 0; b < g.B; b++)
            memcpy(out + ((size_t)b * g.L + l) * Vm, step_logits + (size_t)b * Vm,
                   Vm * sizeof(float));
    }
    double e = logits_err(&g, out, Vm, 0, g.L);
    printf("  step-mode logits rel err %.3e\n", e);
    fflush(stdout);
    free(out);
    free(step_logits);
    free(tok);
    ssm_state_free(s);
    golden_close(&g);
    if (!(e < GOLDEN_TOL)) fail_msg("%s: step-mode logits rel err %.3e >= %g", rel, e, GOLDEN_TOL);
}

/* ---- two windows with the state carried between them ------------------------------------- */

static void test_carried_state(void **state) {
    const char *rel = *state;
    golden g;
    golden_open(&g, rel);
    ssm_model *m = g.model;
    int Vm = m->config.vocab_size;
    int L1 = g.L / 2 - 1, L2 = g.L - L1; /* uneven split, shorter than and beyond d_conv */

    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, g.B, &s));
    int32_t *w = malloc((size_t)g.B * g.L * sizeof(int32_t));
    assert_non_null(w);
    double e[2];
    for (int part = 0; part < 2; part++) {
        int l0 = part ? L1 : 0, n = part ? L2 : L1;
        for (int b = 0; b < g.B; b++)
            memcpy(w + (size_t)b * n, g.ids + (size_t)b * g.L + l0, n * sizeof(int32_t));
        TU_OK(ssm_forward(m, w, NULL, g.B, n, s, NULL));
        e[part] = logits_err(&g, ssm_model_logits(m), Vm, l0, l0 + n);
    }
    printf("  windows of %d + %d with the state carried: logits rel err %.3e, %.3e\n", L1, L2,
           e[0], e[1]);
    fflush(stdout);
    free(w);
    ssm_state_free(s);
    golden_close(&g);
    for (int part = 0; part < 2; part++)
        if (!(e[part] < GOLDEN_TOL))
            fail_msg("%s: window %d logits rel err %.3e >= %g", rel, part, e[part], GOLDEN_TOL);
}

int main(void) {
    static const char *a = "golden/mamba_a", *b = "golden/mamba_b";
    static const char *a2 = "golden/mamba2_a", *b2 = "golden/mamba2_b";
    static const char *hf2 = "golden/hf_mamba2_a"; /* transformers' Mamba2ForCausalLM itself */
    /* hybrids, from the float64 torch reference (make_golden_hybrid.py) */
    static const char *nh = "golden/nemotron_h_a", *jb = "golden/jamba_a";
    static const char *hnh = "golden/hf_nemotron_h_a"; /* transformers' NemotronHForCausalLM */
    /* Caduceus (make_golden_caduceus.py): BiMamba add, BiMamba ew_multiply, RCPS fused */
    static const char *cpa = "golden/caduceus_ph_a", *cpb = "golden/caduceus_ph_b",
                      *cps = "golden/caduceus_ps_a";
    static const char *hjb = "golden/hf_jamba_a";      /* transformers' JambaForCausalLM */
    const struct CMUnitTest tests[] = {
        {"forward_backward(caduceus_ph_a)", test_forward_backward, NULL, NULL, (void *)cpa},
        {"forward_backward(caduceus_ph_b)", test_forward_backward, NULL, NULL, (void *)cpb},
        {"forward_backward(caduceus_ps_a)", test_forward_backward, NULL, NULL, (void *)cps},
        {"rcps_swap(caduceus_ps_a)", test_rcps_swap, NULL, NULL, (void *)cps},
        {"forward_backward(nemotron_h_a)", test_forward_backward, NULL, NULL, (void *)nh},
        {"step(nemotron_h_a)", test_step, NULL, NULL, (void *)nh},
        {"carried_state(nemotron_h_a)", test_carried_state, NULL, NULL, (void *)nh},
        {"forward_backward(jamba_a)", test_forward_backward, NULL, NULL, (void *)jb},
        {"step(jamba_a)", test_step, NULL, NULL, (void *)jb},
        {"carried_state(jamba_a)", test_carried_state, NULL, NULL, (void *)jb},
        {"forward_backward(hf_nemotron_h_a)", test_forward_backward, NULL, NULL, (void *)hnh},
        {"step(hf_nemotron_h_a)", test_step, NULL, NULL, (void *)hnh},
        {"carried_state(hf_nemotron_h_a)", test_carried_state, NULL, NULL, (void *)hnh},
        {"forward_backward(hf_jamba_a)", test_forward_backward, NULL, NULL, (void *)hjb},
        {"step(hf_jamba_a)", test_step, NULL, NULL, (void *)hjb},
        {"carried_state(hf_jamba_a)", test_carried_state, NULL, NULL, (void *)hjb},
        {"forward_backward(hf_mamba2_a)", test_forward_backward, NULL, NULL, (void *)hf2},
        {"step(hf_mamba2_a)", test_step, NULL, NULL, (void *)hf2},
        {"carried_state(hf_mamba2_a)", test_carried_state, NULL, NULL, (void *)hf2},
        {"forward_backward(mamba2_a)", test_forward_backward, NULL, NULL, (void *)a2},
        {"forward_backward(mamba2_b)", test_forward_backward, NULL, NULL, (void *)b2},
        {"step(mamba2_a)", test_step, NULL, NULL, (void *)a2},
        {"step(mamba2_b)", test_step, NULL, NULL, (void *)b2},
        {"carried_state(mamba2_a)", test_carried_state, NULL, NULL, (void *)a2},
        {"carried_state(mamba2_b)", test_carried_state, NULL, NULL, (void *)b2},
        {"forward_backward(mamba_a)", test_forward_backward, NULL, NULL, (void *)a},
        {"forward_backward(mamba_b)", test_forward_backward, NULL, NULL, (void *)b},
        {"step(mamba_a)", test_step, NULL, NULL, (void *)a},
        {"step(mamba_b)", test_step, NULL, NULL, (void *)b},
        {"carried_state(mamba_a)", test_carried_state, NULL, NULL, (void *)a},
        {"carried_state(mamba_b)", test_carried_state, NULL, NULL, (void *)b},
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
