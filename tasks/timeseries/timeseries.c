/* timeseries.c: the forecasting task: a multivariate series from a CSV, lookback windows of L
 * steps and the next H steps as regression targets at every position (the last position's
 * are the forecast), chronological train | valid | test splits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "timeseries.h"

typedef struct ts_task {
    ts_options opt;
    ts_series series;   /* the training file; empty when only scoring or generating */
    int has_series;
} ts_task;

static const char *const task_keys[] = {"name", "columns", "date_column", "missing", "lookback",
    "horizon", "patch", "channels", "valid_fraction", "test_fraction", "loss", "season",
    "ar_order", NULL};
static const char *const data_keys[] = {"train", NULL};

ssm_status ts_series_load(const char *path, const ts_options *o, ts_series *s) {
    memset(s, 0, sizeof *s);
    csv_options co = {.columns = o->columns, .date_column = o->date_column, .missing = o->missing};
    ssm_status st = csv_read(path, &co, &s->table);
    if (st) return st;
    csv_table *t = &s->table;
    s->T = t->rows, s->C = t->cols;
    s->valid_end = s->T - (int)floor(o->test_fraction * s->T);
    s->train = s->valid_end - (int)floor(o->valid_fraction * s->T);
    int L = o->lookback, H = o->horizon;
    /* every split must hold a window's worth: the training rows a whole window and its
     * targets; validation and test at least one forecast of H rows */
    if (s->train < L + H || s->valid_end - s->train < H || s->T - s->valid_end < H) {
        st = ssm_set_error(SSM_ERR_ARG, "%s: %d rows split %d | %d | %d (train | valid | test) "
                           "cannot hold lookback %d + horizon %d: the horizon is too long for "
                           "the series, or give it more rows", path, s->T, s->train,
                           s->valid_end - s->train, s->T - s->valid_end, L, H);
        ts_series_free(s);
        return st;
    }
    s->mean = calloc((size_t)s->C, sizeof(double));
    s->std = calloc((size_t)s->C, sizeof(double));
    if (!s->mean || !s->std) {
        ts_series_free(s);
        return ssm_set_error(SSM_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int c = 0; c < s->C; c++) { /* the training rows' statistics only */
        double m = 0, v = 0;
        for (int r = 0; r < s->train; r++) m += t->values[(size_t)r * s->C + c] / s->train;
        for (int r = 0; r < s->train; r++) {
            double d = t->values[(size_t)r * s->C + c] - m;
            v += d * d / s->train;
        }
        if (!(sqrt(v) > 1e-12 * (1 + fabs(m)))) {
            st = ssm_set_error(SSM_ERR_ARG, "%s:%d: column '%s' is constant (%g) over the %d "
                               "training rows (lines %d-%d): nothing to learn; leave it out of "
                               "task.columns", path, t->lines[0], t->names[c], m, s->train,
                               t->lines[0], t->lines[s->train - 1]);
            ts_series_free(s);
            return st;
        }
        s->mean[c] = m, s->std[c] = sqrt(v);
        for (int r = 0; r < s->T; r++) {
            double *x = &t->values[(size_t)r * s->C + c];
            *x = (*x - m) / s->std[c];
        }
    }
    return SSM_OK;
}

void ts_series_free(ts_series *s) {
    csv_table_free(&s->table);
    free(s->mean);
    free(s->std);
    memset(s, 0, sizeof *s);
}

void ts_inputs(const ts_series *s, const ts_options *o, const int *origins, int n, float *features) {
    int L = o->lookback, C = s->C;
    const double *x = s->table.values;
    for (int i = 0; i < n; i++)
        for (int l = 0; l < L; l++) {
            const double *row = x + (size_t)(origins[i] - L + l) * C;
            for (int c = 0; c < C; c++) {
                if (o->independent) features[((size_t)(i * C + c)) * L + l] = (float)row[c];
                else features[((size_t)i * L + l) * C + c] = (float)row[c];
            }
        }
}

void ts_forecast_from_outputs(const ts_options *o, int C, int positions, const float *outputs,
                              int n, double *forecast) {
    int H = o->horizon, per = o->independent ? H : H * C; /* outputs per position */
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < C; c++) {
                const float *last = o->independent
                    ? outputs + ((size_t)(i * C + c) * positions + positions - 1) * per
                    : outputs + ((size_t)i * positions + positions - 1) * per;
                forecast[((size_t)i * H + h) * C + c] = last[o->independent ? h : h * C + c];
            }
}

static ssm_status ts_create(const ssm_recipe *r, ssm_node *task, ssm_node *data, void **self) {
    *self = NULL;
    ts_task *t = calloc(1, sizeof *t);
    if (!t) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the timeseries task");
    ts_options *o = &t->opt;
    static const char *const missing[] = {"refuse", "previous", "linear", NULL};
    static const char *const channels[] = {"mixed", "independent", NULL};
    static const char *const losses[] = {"mse", "mae", NULL};
    long long L, H, P, season, order;
    int miss, chan, loss, n_cols;
    ssm_status s;
    if ((s = ssm_node_strings(r, task, "columns", &o->columns, &n_cols)) ||
        (s = ssm_node_string(r, task, "date_column", NULL, &o->date_column)) ||
        (s = ssm_node_choice(r, task, "missing", missing, 0, &miss)) ||
        (s = ssm_node_int(r, task, "lookback", 96, 2, 1 << 20, &L)) ||
        (s = ssm_node_int(r, task, "horizon", 24, 1, 1 << 20, &H)) ||
        (s = ssm_node_int(r, task, "patch", 1, 1, 1 << 16, &P)) ||
        (s = ssm_node_choice(r, task, "channels", channels, 0, &chan)) ||
        (s = ssm_node_float(r, task, "valid_fraction", 0.1, 0, 0.5, &o->valid_fraction)) ||
        (s = ssm_node_float(r, task, "test_fraction", 0.2, 0, 0.5, &o->test_fraction)) ||
        (s = ssm_node_choice(r, task, "loss", losses, 0, &loss)) ||
        (s = ssm_node_int(r, task, "season", 0, 0, 1 << 20, &season)) ||
        (s = ssm_node_int(r, task, "ar_order", 0, 0, 4096, &order)) ||
        (s = ssm_node_check_unknown(r, task, "task", task_keys))) {
        free(o->columns), free(t);
        return s;
    }
    o->missing = (csv_missing)miss, o->lookback = (int)L, o->horizon = (int)H, o->patch = (int)P;
    o->independent = chan == 1, o->loss = loss ? SSM_LOSS_MAE : SSM_LOSS_MSE;
    o->season = (int)season, o->ar_order = order ? (int)order : (int)(L < 32 ? L : 32);
    if (L % P) {
        char where[256];
        free(o->columns), free(t);
        return ssm_set_error(SSM_ERR_ARG, "%s: task.patch = %lld does not divide task.lookback = %lld",
                             ssm_node_where(r, task, where, sizeof where), P, L);
    }
    if (data) {
        const char **train = NULL;
        int n;
        if ((s = ssm_node_strings(r, data, "train", &train, &n)) ||
            (s = ssm_node_check_unknown(r, data, "data", data_keys))) {
            free(train), free(o->columns), free(t);
            return s;
        }
        if (n != 1) {
            char where[256];
            free(train), free(o->columns), free(t);
            return ssm_set_error(SSM_ERR_ARG, "%s: the timeseries task takes one file in data.train "
                                 "(its rows are split train | valid | test in time)",
                                 ssm_node_where(r, data, where, sizeof where));
        }
        s = ts_series_load(train[0], o, &t->series);
        free(train);
        if (s) {
            free(o->columns), free(t);
            return s;
        }
        t->has_series = 1;
    }
    *self = t;
    return SSM_OK;
}

static void ts_destroy(void *self) {
    ts_task *t = self;
    if (!t) return;
    ts_series_free(&t->series);
    free(t->opt.columns);
    free(t);
}

static int ts_vocab(void *self) { return 1; } /* no tokens: the embedding stays unused */

static ssm_status ts_model_io(void *self, ssm_io_config *io, int *seq_len) {
    ts_task *t = self;
    const ts_options *o = &t->opt;
    int C = t->has_series ? t->series.C : 0;
    if (!C) return ssm_set_error(SSM_ERR_ARG, "timeseries: the model's shape needs the series (data.train)");
    *io = (ssm_io_config){.features = o->independent ? 1 : C, .patch = o->patch,
                          .head = SSM_HEAD_REGRESSION,
                          .outputs = o->horizon * (o->independent ? 1 : C), .loss = o->loss};
    *seq_len = o->lookback / o->patch;
    return SSM_OK;
}

/* Training: windows inside the training rows, every position scored with its next H steps.
 * Validation: forecasts from origins in the validation rows, the last position scored. */
static ssm_status ts_next_batch(void *self, ssm_split split, ssm_rng *rng, ssm_batch *b) {
    ts_task *t = self;
    const ts_options *o = &t->opt;
    const ts_series *s = &t->series;
    int L = o->lookback, H = o->horizon, P = o->patch, C = s->C, Lp = L / P;
    int rows = o->independent ? b->B / C : b->B;
    if (!t->has_series) return ssm_set_error(SSM_ERR_ARG, "timeseries: no series (data.train)");
    if (b->L != Lp || rows < 1 || (o->independent && b->B % C))
        return ssm_set_error(SSM_ERR_ARG, "timeseries: a batch of %d x %d, the task makes %d x %d%s",
                             b->B, b->L, b->B, Lp, o->independent ? " with B a multiple of the channels" : "");
    int origins[4096];
    if (rows > 4096) return ssm_set_error(SSM_ERR_ARG, "timeseries: at most 4096 windows a batch");
    int lo = split == SSM_SPLIT_TRAIN ? L : s->train, hi = split == SSM_SPLIT_TRAIN ? s->train - H : s->valid_end - H;
    if (split != SSM_SPLIT_TRAIN && lo < L) lo = L;
    for (int i = 0; i < rows; i++) origins[i] = lo + (int)ssm_rng_below(rng, (uint64_t)(hi - lo + 1));
    ts_inputs(s, o, origins, rows, b->features);
    int per = o->independent ? H : H * C;
    const double *x = s->table.values;
    for (int i = 0; i < rows; i++)
        for (int p = 0; p < Lp; p++) {
            /* position p has seen rows up to origin - L + (p + 1) P - 1: it predicts the H after */
            int first = origins[i] - L + (p + 1) * P;
            int scored = split == SSM_SPLIT_TRAIN || p == Lp - 1;
            for (int h = 0; h < H; h++)
                for (int c = 0; c < C; c++) {
                    float y = scored ? (float)x[(size_t)(first + h) * C + c] : NAN;
                    if (o->independent) b->values[((size_t)(i * C + c) * Lp + p) * per + h] = y;
                    else b->values[((size_t)i * Lp + p) * per + h * C + c] = y;
                }
        }
    return SSM_OK;
}

static const char *const ts_metric_names[] = {"forecast_mse", "forecast_mae", NULL};

/* the forecast (last position) errors of one validation batch, normalised units */
static ssm_status ts_metrics(void *self, const ssm_batch *b, const float *outputs, double *values) {
    ts_task *t = self;
    int per = b->B ? (int)(t->opt.independent ? t->opt.horizon : t->opt.horizon * t->series.C) : 0;
    double se = 0, ae = 0;
    int64_t n = 0;
    for (int i = 0; i < b->B; i++) {
        const float *y = outputs + ((size_t)i * b->L + b->L - 1) * per;
        const float *v = b->values + ((size_t)i * b->L + b->L - 1) * per;
        for (int k = 0; k < per; k++) {
            double d = (double)y[k] - v[k];
            se += d * d, ae += fabs(d), n++;
        }
    }
    values[0] = n ? se / n : NAN;
    values[1] = n ? ae / n : NAN;
    return SSM_OK;
}

static ssm_status ts_score(void *self, ssm_model *model, const char *path, FILE *out) {
    return ts_score_file(&((ts_task *)self)->opt, model, path, out);
}

static ssm_status ts_generate(void *self, ssm_model *model, const char *path, FILE *out) {
    return ts_generate_file(&((ts_task *)self)->opt, model, path, out);
}

const ssm_task_ops ssm_task_timeseries = {
    SSM_TASK_OPS_HEADER,
    .name = "timeseries",
    .description = "multivariate forecasting from a CSV: the next H steps from L steps of history",
    .symbol = "value",
    .baseline_order = -1, /* its baselines are ssm-score's (last value, seasonal naive, AR) */
    .create = ts_create,
    .destroy = ts_destroy,
    .vocab_size = ts_vocab,
    .next_batch = ts_next_batch,
    .model_io = ts_model_io,
    .metric_names = ts_metric_names,
    .metrics = ts_metrics,
    .score_file = ts_score,
    .generate_file = ts_generate,
};
