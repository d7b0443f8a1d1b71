/* score_plot.c: ssm-score --plot (score_plot.h). A record of any length becomes at most
 * MAX_POINTS windows (or --per-window's windows of S seconds), so a chromosome draws quickly. */
#include "score_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"

enum { MAX_RECORDS = 8, MAX_POINTS = 1000 };

struct score_plot {
    int entropy;
    char symbol[32];
    double window_s;
    int n;
    char *label[MAX_RECORDS];
    double *x[MAX_RECORDS], *y[MAX_RECORDS]; /* (npts[i]) window starts, mean bits */
    size_t npts[MAX_RECORDS];
    size_t window[MAX_RECORDS];              /* symbols per window */
    size_t skipped;                          /* records past MAX_RECORDS */
};

ssm_status score_plot_create(int entropy, const char *symbol, double window_s, score_plot **out) {
    score_plot *p = calloc(1, sizeof *p);
    if (!p) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the plot");
    p->entropy = entropy, p->window_s = window_s;
    snprintf(p->symbol, sizeof p->symbol, "%s", symbol);
    *out = p;
    return SSM_OK;
}

ssm_status score_plot_add(score_plot *p, const char *id, const float *values, const float *rc,
                          size_t length, double seconds) {
    if (p->n == MAX_RECORDS) return p->skipped++, SSM_OK;
    double rate = seconds > 0 ? length / seconds : 0; /* symbols per second (audio) */
    size_t w = p->window_s > 0 && rate > 0 ? (size_t)fmax(1, llround(p->window_s * rate))
                                           : (length + MAX_POINTS - 1) / MAX_POINTS;
    if (w < 1) w = 1;
    size_t n = (length + w - 1) / w;
    int i = p->n;
    p->x[i] = malloc((n + 1) * sizeof(double));
    p->y[i] = malloc((n + 1) * sizeof(double));
    p->label[i] = strdup(id);
    if (!p->x[i] || !p->y[i] || !p->label[i]) {
        free(p->x[i]), free(p->y[i]), free(p->label[i]);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the plot of %s", id);
    }
    p->n++;
    /* bits: -log2 p, or the entropy in bits */
    double sign = p->entropy ? 1 / M_LN2 : -1 / M_LN2;
    for (size_t k = 0; k < n; k++) {
        double sum = 0;
        size_t cnt = 0;
        for (size_t j = k * w; j < (k + 1) * w && j < length; j++) {
            double v = values[j];
            if (rc) v = 0.5 * (v + rc[length - 1 - j]);
            if (!isnan(v)) sum += v, cnt++;
        }
        p->x[i][k] = p->window_s > 0 && rate > 0 ? k * w / rate : (double)(k * w);
        p->y[i][k] = cnt ? sign * sum / cnt : NAN;
    }
    p->npts[i] = n;
    p->window[i] = w;
    return SSM_OK;
}

ssm_status score_plot_write(score_plot *p, const char *path) {
    plot_series series[MAX_RECORDS];
    for (int i = 0; i < p->n; i++)
        series[i] = (plot_series){.label = p->label[i], .x = p->x[i], .y = p->y[i], .n = p->npts[i]};
    char title[256], ylabel[96], xlabel[96];
    size_t w = p->n ? p->window[0] : 1;
    if (p->window_s > 0) snprintf(title, sizeof title, "mean over windows of %g s", p->window_s);
    else if (w > 1) snprintf(title, sizeof title, "mean over windows of %zu %ss", w, p->symbol);
    else snprintf(title, sizeof title, "per %s", p->symbol);
    if (p->skipped) snprintf(title + strlen(title), sizeof title - strlen(title),
                             " (first %d records; %zu more not drawn)", MAX_RECORDS, p->skipped);
    snprintf(ylabel, sizeof ylabel, "%s (bits per %s)", p->entropy ? "entropy" : "-log2 p", p->symbol);
    snprintf(xlabel, sizeof xlabel, p->window_s > 0 ? "seconds" : "position (%ss)", p->symbol);
    plot_chart chart = {.title = title, .xlabel = xlabel, .ylabel = ylabel, .series = series,
                        .n_series = p->n};
    return plot_write(&chart, 900, 360, path);
}

void score_plot_free(score_plot *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->label[i]), free(p->x[i]), free(p->y[i]);
    free(p);
}
