/* report.c: report.html (report.h). The charts are cairo SVGs embedded as data: URIs (each
 * keeps its own glyph ids), the numbers are in a JSON block that a short script turns into the
 * progress line and the validation table, and the page reloads itself every minute while the
 * run goes on. */
#include "report.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot.h"

/* The curves of metrics.jsonl. */
typedef struct curves {
    double *step, *bits, *lr, *tps; /* (n) one per logged training step */
    size_t n, cap;
    double *vstep, *vbits;          /* (nv) one per validation */
    size_t nv, vcap;
    double baseline;                /* bits per symbol, NAN without one */
    int baseline_order;
    char symbol[32];
} curves;

static int grow(double **v[], int k, size_t *cap, size_t n) {
    if (n < *cap) return 0;
    size_t c = *cap ? 2 * *cap : 256;
    for (int i = 0; i < k; i++) {
        double *p = realloc(*v[i], c * sizeof(double));
        if (!p) return -1;
        *v[i] = p;
    }
    *cap = c;
    return 0;
}

static double num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static ssm_status read_curves(const char *path, curves *c) {
    *c = (curves){.baseline = NAN, .baseline_order = -1, .symbol = "symbol"};
    FILE *f = fopen(path, "r");
    if (!f) return ssm_set_error(SSM_ERR_IO, "%s: cannot read", path);
    char *line = NULL;
    size_t size = 0;
    ssm_status s = SSM_OK;
    while (!s && getline(&line, &size, f) > 0) {
        json_t *o = json_loads(line, 0, NULL);
        if (!json_is_object(o)) { json_decref(o); continue; } /* a line being written */
        json_t *sym = json_object_get(o, "symbol");
        if (json_is_string(sym)) {
            snprintf(c->symbol, sizeof c->symbol, "%s", json_string_value(sym));
            double b = num(o, "baseline_bits");
            c->baseline = b >= 0 ? b : NAN;
            c->baseline_order = (int)num(o, "baseline_order");
        } else if (json_object_get(o, "valid_loss")) {
            if (grow((double **[]){&c->vstep, &c->vbits}, 2, &c->vcap, c->nv)) s = SSM_ERR_NOMEM;
            else c->vstep[c->nv] = num(o, "step"), c->vbits[c->nv++] = num(o, "valid_loss") / M_LN2;
        } else if (json_object_get(o, "loss")) {
            if (grow((double **[]){&c->step, &c->bits, &c->lr, &c->tps}, 4, &c->cap, c->n)) s = SSM_ERR_NOMEM;
            else {
                c->step[c->n] = num(o, "step"), c->bits[c->n] = num(o, "loss") / M_LN2;
                c->lr[c->n] = num(o, "lr"), c->tps[c->n++] = num(o, "tokens_per_s");
            }
        }
        json_decref(o);
    }
    free(line);
    fclose(f);
    return s ? ssm_set_error(s, "%s: out of memory", path) : SSM_OK;
}

static void curves_free(curves *c) {
    free(c->step), free(c->bits), free(c->lr), free(c->tps), free(c->vstep), free(c->vbits);
}

static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

static void put_base64(FILE *f, const unsigned char *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        fputc(a[v >> 18 & 63], f), fputc(a[v >> 12 & 63], f);
        fputc(i + 1 < n ? a[v >> 6 & 63] : '=', f), fputc(i + 2 < n ? a[v & 63] : '=', f);
    }
}

/* One chart as <img>, its alt text the title (what --dump-dom and screen readers see). */
static ssm_status put_chart(FILE *f, const char *id, const plot_chart *chart) {
    char *svg;
    ssm_status s = plot_svg(chart, 560, 320, &svg);
    if (s) return s;
    fprintf(f, "<img id=\"%s\" alt=\"", id);
    put_escaped(f, chart->title);
    fputs("\" width=\"560\" height=\"320\" src=\"data:image/svg+xml;base64,", f);
    put_base64(f, (const unsigned char *)svg, strlen(svg));
    fputs("\">\n", f);
    free(svg);
    return SSM_OK;
}

static void put_model(FILE *f, const ssm_model *m) {
    const ssm_config *c = &m->config;
    char p[32], kinds[256] = "";
    for (int k = 0; k < SSM_LAYER_KIND_COUNT; k++) {
        int n = 0;
        for (int i = 0; i < c->n_layer; i++) n += c->layer_kind[i] == k;
        if (n) snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%d %s",
                        kinds[0] ? ", " : "", n, ssm_layer_kind_name(k));
    }
    fprintf(f, "<table id=\"model\">\n<tr><th>parameters</th><td>%s (%zu)</td></tr>\n"
            "<tr><th>layers</th><td>%d (%s)</td></tr>\n<tr><th>d_model</th><td>%d</td></tr>\n"
            "<tr><th>vocabulary</th><td>%d</td></tr>\n",
            cli_si((double)m->n_params, p, sizeof p), m->n_params, c->n_layer, kinds, c->d_model,
            c->vocab_size);
    if (!ssm_config_all(c, SSM_LAYER_MAMBA2) && !ssm_config_all(c, SSM_LAYER_ATTENTION))
        fprintf(f, "<tr><th>Mamba-1</th><td>d_inner %d, d_state %d, d_conv %d, dt_rank %d</td></tr>\n",
                c->d_inner, c->d_state, c->d_conv, c->dt_rank);
    for (int i = 0; i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_MAMBA2) {
            const ssm_mamba2_config *m2 = &c->mamba2;
            fprintf(f, "<tr><th>Mamba-2</th><td>d_inner %d, %d heads of %d, d_state %d, %d groups, "
                    "chunk %d</td></tr>\n", m2->d_inner, m2->nheads, m2->headdim, m2->d_state,
                    m2->ngroups, m2->chunk_size);
            break;
        }
    fputs("</table>\n", f);
}

static const char style[] =
    "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1200px}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}#charts img{margin:4px;border:1px solid #ddd}"
    "table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}"
    "pre{background:#f6f6f6;padding:8px;overflow:auto}";

/* The progress line and the validation table, from the JSON block. */
static const char script[] =
    "const d = JSON.parse(document.getElementById('data').textContent);\n"
    "const v = d.validation, last = v.length ? v[v.length - 1] : null;\n"
    "let s = 'step ' + d.step + ' of ' + d.steps;\n"
    "if (last) s += ': validation ' + last[1].toFixed(4) + ' bits per ' + d.symbol;\n"
    "if (d.baseline !== null) s += ' (Markov baseline ' + d.baseline.toFixed(4) + ')';\n"
    "document.getElementById('status').textContent = s;\n"
    "const t = document.getElementById('validation');\n"
    "for (const [step, bits] of v) {\n"
    "  const r = t.insertRow();\n"
    "  r.insertCell().textContent = step;\n"
    "  r.insertCell().textContent = bits.toFixed(4);\n"
    "  r.insertCell().textContent = d.baseline === null ? '' : (bits - d.baseline).toFixed(4);\n"
    "}\n";

static ssm_status write_page(FILE *f, const char *run_dir, const ssm_model *model, int64_t total,
                             const curves *c, const char *recipe) {
    double last_step = c->n ? c->step[c->n - 1] : c->nv ? c->vstep[c->nv - 1] : 0;
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n", f);
    if (last_step < total) fputs("<meta http-equiv=\"refresh\" content=\"60\">\n", f);
    fputs("<title>ssm-train: ", f);
    put_escaped(f, run_dir);
    fprintf(f, "</title>\n<style>%s</style></head><body>\n<h1>ssm-train: ", style);
    put_escaped(f, run_dir);
    fputs("</h1>\n<p id=\"status\"></p>\n<div id=\"charts\">\n", f);

    char ylabel[64], xlabel[] = "step";
    snprintf(ylabel, sizeof ylabel, "bits per %s", c->symbol);
    double bx[2] = {c->n ? c->step[0] : 0, last_step}, by[2] = {c->baseline, c->baseline};
    char base_label[64];
    snprintf(base_label, sizeof base_label, "order-%d Markov baseline", c->baseline_order);
    plot_series loss[] = {
        {.label = "training", .x = c->step, .y = c->bits, .n = c->n},
        {.label = "validation", .x = c->vstep, .y = c->vbits, .n = c->nv, .dots = 1},
        {.label = base_label, .x = bx, .y = by, .n = 2, .dashed = 1},
    };
    plot_chart charts[] = {
        {.title = "Loss", .xlabel = xlabel, .ylabel = ylabel, .series = loss,
         .n_series = isnan(c->baseline) ? 2 : 3},
        {.title = "Learning rate", .xlabel = xlabel, .ylabel = "learning rate",
         .series = &(plot_series){.label = "lr", .x = c->step, .y = c->lr, .n = c->n}, .n_series = 1},
        {.title = "Throughput", .xlabel = xlabel, .ylabel = "tokens per second",
         .series = &(plot_series){.label = "tokens/s", .x = c->step, .y = c->tps, .n = c->n}, .n_series = 1},
    };
    const char *ids[] = {"loss", "lr", "throughput"};
    for (int i = 0; i < 3; i++) {
        ssm_status s = put_chart(f, ids[i], &charts[i]);
        if (s) return s;
    }
    fputs("</div>\n<h2>Validation</h2>\n<table id=\"validation\"><tr><th>step</th>", f);
    fprintf(f, "<th>bits per %s</th><th>minus baseline</th></tr></table>\n<h2>Model</h2>\n", c->symbol);
    put_model(f, model);
    fputs("<h2>Recipe</h2>\n<pre id=\"recipe\">", f);
    put_escaped(f, recipe);
    fputs("</pre>\n<script type=\"application/json\" id=\"data\">", f);
    json_t *d = json_object(), *v = json_array();
    for (size_t i = 0; i < c->nv; i++)
        json_array_append_new(v, json_pack("[f,f]", c->vstep[i], c->vbits[i]));
    json_object_set_new(d, "validation", v);
    json_object_set_new(d, "baseline", isnan(c->baseline) ? json_null() : json_real(c->baseline));
    json_object_set_new(d, "symbol", json_string(c->symbol));
    json_object_set_new(d, "step", json_integer((json_int_t)last_step));
    json_object_set_new(d, "steps", json_integer(total));
    char *text = json_dumps(d, JSON_COMPACT | JSON_ESCAPE_SLASH); /* no "</script>" inside */
    json_decref(d);
    if (!text) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the report");
    fputs(text, f);
    free(text);
    fprintf(f, "</script>\n<script>\n%s</script>\n</body></html>\n", script);
    return SSM_OK;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[4096];
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            char *b = realloc(buf, cap = 2 * (len + n + 1));
            if (!b) break;
            buf = b;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    return buf;
}

ssm_status report_write(const char *run_dir, const ssm_model *model, int64_t total_steps) {
    char path[4200], tmp[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    curves c;
    ssm_status s = read_curves(path, &c);
    if (s) return s;
    snprintf(path, sizeof path, "%s/recipe.yaml", run_dir);
    char *recipe = read_text(path);
    snprintf(path, sizeof path, "%s/report.html", run_dir);
    snprintf(tmp, sizeof tmp, "%s/report.html.tmp", run_dir);
    FILE *f = fopen(tmp, "w");
    if (!f) s = ssm_set_error(SSM_ERR_IO, "%s: cannot write", tmp);
    if (!s) s = write_page(f, run_dir, model, total_steps, &c, recipe ? recipe : "(recipe.yaml unreadable)");
    if (f && fclose(f) && !s) s = ssm_set_error(SSM_ERR_IO, "%s: cannot write", tmp);
    if (!s && rename(tmp, path)) s = ssm_set_error(SSM_ERR_IO, "%s: cannot rename to %s", tmp, path);
    if (s && f) remove(tmp);
    free(recipe);
    curves_free(&c);
    return s;
}

void train_report(const char *run_dir, const ssm_model *model, int64_t total_steps) {
    if (report_write(run_dir, model, total_steps)) cli_note("report.html not updated: %s", ssm_last_error());
}
