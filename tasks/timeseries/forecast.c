/* forecast.c: ssm-score and ssm-generate on a CSV. Scoring forecasts H steps from every origin
 * of the test rows (rolling origin) and prints MSE and MAE per channel and overall, in the
 * normalised units (the training rows' mean and standard deviation), for the model and, on
 * the same origins, the last value, the seasonal naive forecast and a linear AR(p) fitted by
 * least squares on the training rows. Generating writes the H steps after the file's last row
 * as CSV, in the file's units. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "timeseries.h"

enum { METHODS = 4, CHUNK = 64 };
static const char *const method_names[METHODS] = {"model", "last_value", "seasonal_naive", "ar"};

static ssm_status check_model(const ts_options *o, const ssm_model *m, const ts_series *s) {
    const ssm_io_config *io = &m->config.io;
    int F = o->independent ? 1 : s->C, out = o->horizon * F;
    if (io->head != SSM_HEAD_REGRESSION || io->features != F || io->outputs != out || io->patch != o->patch)
        return ssm_set_error(SSM_ERR_ARG, "%s: %d channels make %d inputs and %d outputs per step, "
                             "the model has %d and %d: score the file it was trained on (the same "
                             "task.columns)", s->table.path, s->C, F, out, io->features, io->outputs);
    return SSM_OK;
}

/* The model's forecasts (n, H, C) from the origins, CHUNK origins a forward. */
static ssm_status model_forecasts(const ts_options *o, ssm_model *m, const ts_series *s,
                                  const int *origins, int n, double *forecast) {
    int L = o->lookback, C = s->C, Lp = L / o->patch, rows = o->independent ? C : 1;
    float *features = malloc((size_t)CHUNK * rows * L * (o->independent ? 1 : C) * sizeof(float));
    if (!features) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the forecasts");
    ssm_status st = SSM_OK;
    for (int i = 0; i < n && !st; i += CHUNK) {
        int k = n - i < CHUNK ? n - i : CHUNK;
        ts_inputs(s, o, origins + i, k, features);
        ssm_io io = {.features = features};
        if (!(st = ssm_forward_io(m, &io, k * rows, Lp, NULL)))
            ts_forecast_from_outputs(o, C, Lp, ssm_model_outputs(m), k,
                                     forecast + (size_t)i * o->horizon * C);
    }
    free(features);
    return st;
}

ssm_status ts_score_file(const ts_options *o, ssm_model *m, const char *path, FILE *out) {
    ts_series s;
    ssm_status st = ts_series_load(path, o, &s);
    if (st) return st;
    if ((st = check_model(o, m, &s))) {
        ts_series_free(&s);
        return st;
    }
    int H = o->horizon, C = s.C, n = s.T - H - s.valid_end + 1, p = o->ar_order;
    int max_lag = o->lookback < s.train / 2 ? o->lookback : s.train / 2;
    int period = o->season ? o->season : ts_detect_period(s.table.values, s.train, C, max_lag);
    int *origins = malloc((size_t)n * sizeof *origins);
    double *fc = malloc((size_t)n * H * C * sizeof *fc), *coef = malloc((size_t)C * (p + 1) * sizeof *coef);
    double *se = calloc((size_t)METHODS * C, sizeof *se), *ae = calloc((size_t)METHODS * C, sizeof *ae);
    double b[3 * 4096];
    if (!origins || !fc || !coef || !se || !ae || H > 4096) st = ssm_set_error(SSM_ERR_NOMEM, "out of memory for scoring");
    for (int i = 0; !st && i < n; i++) origins[i] = s.valid_end + i;
    if (!st) st = model_forecasts(o, m, &s, origins, n, fc);
    for (int c = 0; !st && c < C; c++) st = ts_ar_fit(s.table.values, s.train, C, c, p, coef + (size_t)c * (p + 1));
    const double *x = s.table.values;
    for (int i = 0; !st && i < n; i++)
        for (int c = 0; c < C; c++) {
            ts_last_value(x, C, c, origins[i], H, b);
            ts_seasonal_naive(x, C, c, origins[i], H, period ? period : 1, b + H);
            ts_ar_forecast(x, C, c, origins[i], H, p, coef + (size_t)c * (p + 1), b + 2 * H);
            for (int h = 0; h < H; h++) {
                double truth = x[(size_t)(origins[i] + h) * C + c];
                double y[METHODS] = {fc[((size_t)i * H + h) * C + c], b[h], b[H + h], b[2 * H + h]};
                for (int k = 0; k < METHODS; k++) {
                    double d = y[k] - truth;
                    se[k * C + c] += d * d, ae[k * C + c] += fabs(d);
                }
            }
        }
    if (!st) {
        fprintf(out, "# %s: test rows %d-%d (lines %d-%d), %d forecasts of %d steps from L = %d; "
                "normalised units (training rows' mean and sd); seasonal period %d (%s); AR order %d\n",
                path, s.valid_end + 1, s.T, s.table.lines[s.valid_end], s.table.lines[s.T - 1], n, H,
                o->lookback, period ? period : 1, o->season ? "task.season" : period ? "detected" :
                "none found: the last value", p);
        fprintf(out, "channel");
        for (int k = 0; k < METHODS; k++) fprintf(out, "\t%s_mse\t%s_mae", method_names[k], method_names[k]);
        fputc('\n', out);
        double count = (double)n * H;
        for (int c = 0; c <= C; c++) {
            fprintf(out, "%s", c < C ? s.table.names[c] : "overall");
            for (int k = 0; k < METHODS; k++) {
                double e2 = 0, e1 = 0;
                for (int j = c < C ? c : 0; j < (c < C ? c + 1 : C); j++) e2 += se[k * C + j], e1 += ae[k * C + j];
                double w = c < C ? count : count * C;
                fprintf(out, "\t%.5f\t%.5f", e2 / w, e1 / w);
            }
            fputc('\n', out);
        }
    }
    free(origins), free(fc), free(coef), free(se), free(ae);
    ts_series_free(&s);
    return st;
}

/* the date of step h past the last row: ISO dates (YYYY-MM-DD) advance by the last interval */
static void next_date(const csv_table *t, int h, char *buf, size_t size) {
    struct tm a = {0}, b = {0};
    const char *last = t->rows > 0 ? t->dates[t->rows - 1] : NULL, *prev = t->rows > 1 ? t->dates[t->rows - 2] : NULL;
    if (last && prev && strptime(last, "%Y-%m-%d", &a) && strptime(prev, "%Y-%m-%d", &b)) {
        time_t ta = timegm(&a), step = ta - timegm(&b), th = ta + step * h;
        strftime(buf, size, "%Y-%m-%d", gmtime(&th));
    } else {
        snprintf(buf, size, "+%d", h);
    }
}

ssm_status ts_generate_file(const ts_options *o, ssm_model *m, const char *path, FILE *out) {
    ts_series s;
    ssm_status st = ts_series_load(path, o, &s);
    if (st) return st;
    int H = o->horizon, C = s.C, origin = s.T;
    double *fc = malloc((size_t)H * C * sizeof *fc);
    if (!fc) st = ssm_set_error(SSM_ERR_NOMEM, "out of memory");
    if (!st) st = check_model(o, m, &s);
    if (!st) st = model_forecasts(o, m, &s, &origin, 1, fc);
    if (!st) {
        if (s.table.dates) fprintf(out, "%s,", o->date_column);
        for (int c = 0; c < C; c++) fprintf(out, "%s%s", s.table.names[c], c + 1 < C ? "," : "\n");
        for (int h = 0; h < H; h++) {
            char date[64];
            if (s.table.dates) next_date(&s.table, h + 1, date, sizeof date), fprintf(out, "%s,", date);
            for (int c = 0; c < C; c++)
                fprintf(out, "%.6g%s", fc[(size_t)h * C + c] * s.std[c] + s.mean[c], c + 1 < C ? "," : "\n");
        }
    }
    free(fc);
    ts_series_free(&s);
    return st;
}
