/* modelcheck.c: checks of a whole model through the public API (modelcheck.h). */
#include "modelcheck.h"
#include "ssm/checkpoint.h"

#include <ftw.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a hash of every MoE layer's routing in the last forward */
static uint64_t routing_now;

static uint64_t routing_hash(const ssm_model *m, int T) {
    uint64_t h = 1469598103934665603ull;
    int k = m->config.moe.top_k;
    int32_t *sel = malloc((size_t)T * k * sizeof(int32_t));
    for (int l = 0; l < m->config.n_layer; l++) {
        if (m->config.layer_kind[l] != SSM_LAYER_MOE) continue;
        TU_OK(ssm_model_routing(m, l, sel, NULL));
        for (int i = 0; i < T * k; i++) h = (h ^ (uint64_t)sel[i]) * 1099511628211ull;
    }
    free(sel);
    return h;
}

/* the mean cross-entropy of the last forward's logits, in double */
static double loss_of_logits(const ssm_model *m, const int32_t *tgt, int T) {
    const float *lg = ssm_model_logits(m);
    int V = m->config.vocab_size, n = 0;
    double sum = 0;
    for (int t = 0; t < T; t++) {
        if (tgt[t] < 0) continue;
        const float *row = lg + (size_t)t * V;
        double mx = row[0];
        for (int v = 1; v < V; v++) mx = fmax(mx, row[v]);
        double z = 0;
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        sum += mx + log(z) - row[tgt[t]];
        n++;
    }
    return sum / n;
}

double tu_loss_at(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L) {
    float loss;
    TU_OK(ssm_forward(m, tok, tgt, B, L, NULL, &loss));
    if (!isfinite(loss)) fail_msg("loss is %g", loss);
    double l = loss_of_logits(m, tgt, B * L) + m->config.moe.aux_loss_coef * ssm_model_aux_loss(m);
    if (!(fabs(l - loss) <= 1e-6 * fabs(l))) fail_msg("ssm_forward's loss %.9g, the logits' %.9g", loss, l);
    routing_now = routing_hash(m, B * L);
    return l;
}

void tu_check_gradients(ssm_model *m, const int32_t *tok, const int32_t *tgt, int B, int L,
                        int samples, double tol) {
    tu_loss_at(m, tok, tgt, B, L);
    ssm_model_zero_grad(m);
    TU_OK(ssm_backward(m));
    float *grad = malloc(m->n_params * sizeof(float));
    memcpy(grad, m->grads_blob, m->n_params * sizeof(float));
    int bad = 0, flips = 0, tries = 0;
    uint64_t routing0 = routing_now;
    for (int k = 0; k < m->n_tensors; k++) {
        const ssm_tensor_info *t = &m->tensors[k];
        float *p = m->params_blob + t->offset;
        const float *g = grad + t->offset;
        if (t->numel == 0) continue;
        if (strstr(t->name, "e_score_correction_bias")) { /* selection only: no gradient */
            for (size_t i = 0; i < t->numel; i++)
                if (g[i] != 0.0f) fail_msg("%s has gradient %g at %zu", t->name, g[i], i);
            printf("  %-44s gradient 0 (selection only)\n", t->name);
            continue;
        }
        double rms = 0;
        for (size_t i = 0; i < t->numel; i++) rms += (double)p[i] * p[i];
        rms = sqrt(rms / (double)t->numel);
        int ns = (size_t)samples < t->numel ? samples : (int)t->numel;
        size_t *idx = malloc((size_t)ns * sizeof *idx);
        char *taken = calloc(t->numel, 1);
        for (int j = 0; j < ns; j++) {
            size_t pick = 0;
            if (j < (ns + 1) / 2) {
                double best = -1;
                for (size_t i = 0; i < t->numel; i++)
                    if (!taken[i] && fabs(g[i]) > best) best = fabs(g[i]), pick = i;
            } else {
                pick = ((size_t)j * 2654435761u + (size_t)k * 40503u) % t->numel;
                while (taken[pick]) pick = (pick + 1) % t->numel;
            }
            taken[pick] = 1;
            idx[j] = pick;
        }
        double *an = malloc((size_t)ns * sizeof(double)), *fd = malloc((size_t)ns * sizeof(double));
        for (int j = 0; j < ns; j++) {
            size_t i = idx[j];
            float p0 = p[i];
            double h = 1e-2 * fmax(fabs(p0), rms);
            float up = (float)(p0 + h), dn = (float)(p0 - h);
            p[i] = up;
            double lp = tu_loss_at(m, tok, tgt, B, L);
            uint64_t r_up = routing_now;
            p[i] = dn;
            double lm = tu_loss_at(m, tok, tgt, B, L);
            p[i] = p0;
            tries++;
            if (r_up != routing0 || routing_now != routing0) { /* a step in the loss: left out */
                flips++, fd[j] = an[j] = 0;
                continue;
            }
            fd[j] = (lp - lm) / ((double)up - (double)dn);
            an[j] = g[i];
        }
        double an_norm = 0;
        for (int j = 0; j < ns; j++) an_norm += an[j] * an[j];
        an_norm = sqrt(an_norm);
        double err = tu_rel_err_d(fd, an, (size_t)ns);
        float *v = malloc(t->numel * sizeof(float));
        tu_fill_uniform(v, t->numel, -1.0f, 1.0f, 100 + k);
        double vn = 0;
        for (size_t i = 0; i < t->numel; i++) vn += (double)v[i] * v[i];
        for (size_t i = 0; i < t->numel; i++) v[i] /= (float)sqrt(vn);
        double dan = 0;
        for (size_t i = 0; i < t->numel; i++) dan += (double)g[i] * v[i];
        const double eps = 3e-3;
        float *saved = malloc(t->numel * sizeof(float));
        memcpy(saved, p, t->numel * sizeof(float));
        for (size_t i = 0; i < t->numel; i++) p[i] = saved[i] + (float)(eps * v[i]);
        double lp = tu_loss_at(m, tok, tgt, B, L);
        uint64_t r_up = routing_now;
        for (size_t i = 0; i < t->numel; i++) p[i] = saved[i] - (float)(eps * v[i]);
        double lm = tu_loss_at(m, tok, tgt, B, L);
        memcpy(p, saved, t->numel * sizeof(float));
        double dfd = (lp - lm) / (2 * eps);
        double derr = fabs(dfd - dan), dbound = 2e-2 * fabs(dan) + 2e-4;
        tries++;
        if (r_up != routing0 || routing_now != routing0) flips++, derr = 0, dfd = dan;
        int ok = err < tol && an_norm > 1e-4 && derr < dbound;
        printf("  %-44s %2d entries |g| %.2e rel err %.2e | dir % .4e vs % .4e%s\n", t->name, ns,
               an_norm, err, dan, dfd, ok ? "" : "   <-- BAD");
        if (!ok) bad++;
        free(saved);
        free(v);
        free(an);
        free(fd);
        free(idx);
        free(taken);
    }
    free(grad);
    if (flips) printf("  %d of %d perturbations changed the routing: left out\n", flips, tries);
    assert_true(flips * 10 <= tries);
    assert_int_equal(bad, 0);
}


float *tu_logits_of(ssm_model *m, const int32_t *tok, int B, int L) {
    TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
    size_t n = (size_t)B * L * m->config.vocab_size;
    float *out = malloc(n * sizeof(float));
    memcpy(out, ssm_model_logits(m), n * sizeof(float));
    return out;
}

/* ---- step mode and windows ---------------------------------------------------------------- */

void tu_check_step(ssm_model *m, int B, int L, uint64_t seed) {
    int V = m->config.vocab_size;
    int32_t *tok = malloc((size_t)B * L * sizeof(int32_t));
    tu_random_tokens(tok, B * L, V, seed);
    float *ref = tu_logits_of(m, tok, B, L);
    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, B, &s));
    float *got = malloc((size_t)B * L * V * sizeof(float)), *lg = malloc((size_t)B * V * sizeof(float));
    int32_t *col = malloc((size_t)B * sizeof(int32_t));
    for (int l = 0; l < L; l++) {
        for (int b = 0; b < B; b++) col[b] = tok[b * L + l];
        assert_int_equal(ssm_state_position(s, 0), l);
        TU_OK(ssm_step(m, s, col, lg));
        for (int b = 0; b < B; b++)
            memcpy(got + ((size_t)b * L + l) * V, lg + (size_t)b * V, V * sizeof(float));
    }
    for (int b = 0; b < B; b++) assert_int_equal(ssm_state_position(s, b), L);
    double err = tu_rel_err(got, ref, (size_t)B * L * V);
    print_message("step vs parallel (B %d, L %d): rel err %.2e\n", B, L, err);
    assert_true(err < 1e-5);
    /* the state mattered */
    TU_OK(ssm_forward(m, tok + L - 1, NULL, 1, 1, NULL, NULL));
    double d = tu_rel_err(ssm_model_logits(m), ref + (size_t)(L - 1) * V, V);
    assert_true(d > 1e-3);
    free(col);
    free(lg);
    free(got);
    free(ref);
    free(tok);
    ssm_state_free(s);
}

/* windows of these sizes with a carried state give one pass's logits; a step after them
 * continues like the longer forward */
void tu_check_windows(ssm_model *m, int B, const int *windows, int nw, uint64_t seed) {
    int V = m->config.vocab_size, L = 0;
    for (int w = 0; w < nw; w++) L += windows[w];
    int32_t *tok = malloc((size_t)B * (L + 1) * sizeof(int32_t));
    tu_random_tokens(tok, B * (L + 1), V, seed);
    int32_t *first = malloc((size_t)B * L * sizeof(int32_t));
    for (int b = 0; b < B; b++) memcpy(first + b * L, tok + b * (L + 1), L * sizeof(int32_t));
    float *ref = tu_logits_of(m, first, B, L);
    ssm_state *s;
    TU_OK(ssm_state_create(&m->config, B, &s));
    float *got = malloc((size_t)B * L * V * sizeof(float));
    int pos = 0;
    for (int w = 0; w < nw; w++) {
        int n = windows[w];
        int32_t *part = malloc((size_t)B * n * sizeof(int32_t));
        for (int b = 0; b < B; b++) memcpy(part + b * n, first + b * L + pos, n * sizeof(int32_t));
        TU_OK(ssm_forward(m, part, NULL, B, n, s, NULL));
        const float *lg = ssm_model_logits(m);
        for (int b = 0; b < B; b++)
            memcpy(got + ((size_t)b * L + pos) * V, lg + (size_t)b * n * V,
                   (size_t)n * V * sizeof(float));
        pos += n;
        for (int b = 0; b < B; b++) assert_int_equal(ssm_state_position(s, b), pos);
        free(part);
    }
    double err = tu_rel_err(got, ref, (size_t)B * L * V);
    print_message("%d windows with a carried state vs one pass (B %d, L %d): rel err %.2e\n", nw,
                  B, L, err);
    assert_true(err < 1e-5);
    int32_t *next = malloc((size_t)B * sizeof(int32_t));
    for (int b = 0; b < B; b++) next[b] = tok[b * (L + 1) + L];
    float *lg = malloc((size_t)B * V * sizeof(float));
    TU_OK(ssm_step(m, s, next, lg));
    float *full = tu_logits_of(m, tok, B, L + 1);
    for (int b = 0; b < B; b++) {
        double e = tu_rel_err(lg + (size_t)b * V, full + ((size_t)b * (L + 1) + L) * V, V);
        print_message("  then a step, row %d: rel err %.2e\n", b, e);
        assert_true(e < 1e-5);
    }
    free(full);
    free(lg);
    free(next);
    free(got);
    free(ref);
    free(first);
    free(tok);
    ssm_state_free(s);
}


ssm_model *tu_noisy_model(const ssm_config *c, uint64_t seed) {
    ssm_model *m;
    TU_OK(ssm_model_create(c, &m));
    TU_OK(ssm_model_init(m, seed));
    float *noise = malloc(m->n_params * sizeof(float));
    tu_fill_uniform(noise, m->n_params, -0.1f, 0.1f, seed + 1);
    for (size_t i = 0; i < m->n_params; i++) m->params_blob[i] += noise[i];
    free(noise);
    return m;
}

void tu_assert_same_logits(ssm_model *a, ssm_model *b, int B, int L, uint64_t seed) {
    int32_t *tok = malloc((size_t)B * L * sizeof(int32_t));
    tu_random_tokens(tok, B * L, a->config.vocab_size, seed);
    float *x = tu_logits_of(a, tok, B, L), *y = tu_logits_of(b, tok, B, L);
    assert_int_equal(a->config.vocab_size, b->config.vocab_size);
    assert_memory_equal(x, y, (size_t)B * L * a->config.vocab_size * sizeof(float));
    free(x), free(y), free(tok);
}

void tu_copy_without_metadata(const char *from, const char *to) {
    ssm_safetensors *st;
    TU_OK(ssm_safetensors_open(from, &st));
    int n = ssm_safetensors_count(st);
    ssm_st_write_item *items = calloc((size_t)n, sizeof *items);
    float **data = calloc((size_t)n, sizeof *data);
    for (int i = 0; i < n; i++) {
        const ssm_st_tensor *t = ssm_safetensors_tensor(st, i);
        data[i] = malloc((t->numel ? t->numel : 1) * sizeof(float));
        TU_OK(ssm_safetensors_read_f32(st, t->name, data[i], t->numel));
        items[i] = (ssm_st_write_item){.name = t->name, .ndim = t->ndim, .data = data[i]};
        memcpy(items[i].shape, t->shape, sizeof t->shape);
    }
    TU_OK(ssm_safetensors_write(to, items, n, NULL));
    ssm_safetensors_close(st);
    for (int i = 0; i < n; i++) free(data[i]);
    free(data), free(items);
}

static char group_root[4096];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    return (void)sb, (void)flag, (void)ftw, remove(p);
}

int tu_group_tmpdir(void **state) {
    (void)state;
    snprintf(group_root, sizeof group_root, "%s", tu_tmpdir());
    return 0;
}

int tu_group_rmdir(void **state) {
    (void)state;
    return nftw(group_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0;
}

const char *tu_group_path(const char *name) {
    static char bufs[8][4200];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", group_root, name);
    return b;
}

void tu_expect_config_refused(const char *name, const char *json, const char *key) {
    const char *dir = tu_group_path(name);
    char path[4300];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    /* one tensor: the config is refused before the tensors are looked at */
    float x[1] = {0};
    ssm_st_write_item it = {.name = "x", .ndim = 1, .shape = {1}, .data = x};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    TU_OK(ssm_safetensors_write(path, &it, 1, NULL));
    ssm_model *m = NULL;
    ssm_status s = ssm_checkpoint_load(dir, &m);
    print_message("%s -> %s\n", key, ssm_last_error());
    assert_int_not_equal(s, SSM_OK);
    assert_non_null(strstr(ssm_last_error(), key));
    assert_null(m);
}
