/* timeseries.h: the multivariate forecasting task (docs/recipes.md, 'Time series'): what its
 * files share. A series is a table of T rows (time steps) x C channels, read from a CSV/TSV
 * (loaders/csv), split chronologically into train | valid | test rows, each channel
 * normalised by the mean and standard deviation of the training rows only. */
#ifndef SSM_TASK_TIMESERIES_H
#define SSM_TASK_TIMESERIES_H

#include "../../loaders/csv/csv.h"
#include "ssm/task.h"

typedef struct ts_options {
    const char **columns;   /* NULL: all but the date column */
    const char *date_column;
    csv_missing missing;
    int lookback, horizon;  /* L steps read, H steps predicted */
    int patch;              /* steps per backbone position */
    int independent;        /* channels one at a time (one input, one output channel) */
    double valid_fraction, test_fraction;
    ssm_loss_kind loss;
    int season;             /* the seasonal-naive period; 0: detected on the training rows */
    int ar_order;           /* the linear autoregression's order */
} ts_options;

/* A series, normalised, and its split: rows [0, train) | [train, valid_end) | [valid_end, T). */
typedef struct ts_series {
    csv_table table;        /* values normalised in place */
    double *mean, *std;     /* (C) of the training rows, for writing forecasts back */
    int T, C, train, valid_end;
} ts_series;

/* Read, split and normalise; errors name the file (and line). */
ssm_status ts_series_load(const char *path, const ts_options *o, ts_series *s);
void ts_series_free(ts_series *s);

/* The model's inputs for forecasts from origins (the first predicted row of each): rows
 * [origin - L, origin). Mixed channels: features (n, L, C); independent: (n C, L, 1), row
 * i * C + c the channel c of origin i. */
void ts_inputs(const ts_series *s, const ts_options *o, const int *origins, int n, float *features);
/* The last position's forecast (n, H, C) from the model's outputs of ts_inputs' batch. */
void ts_forecast_from_outputs(const ts_options *o, int C, int positions, const float *outputs,
                              int n, double *forecast);

/* ---- baselines (baselines.c), on one channel x (T) with a stride between rows --------------- */
/* The period in [2, max_lag] where the mean autocorrelation over the C channels of rows
 * [0, n) peaks; 0 when no lag has a positive one. */
int ts_detect_period(const double *x, int n, int C, int max_lag);
/* AR(p) with an intercept fitted by least squares (LAPACK dgels) on rows [0, n) of channel c:
 * coef (p + 1): intercept, then a_1..a_p for x[t-1]..x[t-p]. */
ssm_status ts_ar_fit(const double *x, int n, int C, int c, int p, double *coef);
/* Forecasts (H) from origin (the first predicted row), per baseline: */
void ts_last_value(const double *x, int C, int c, int origin, int H, double *out);
void ts_seasonal_naive(const double *x, int C, int c, int origin, int H, int period, double *out);
void ts_ar_forecast(const double *x, int C, int c, int origin, int H, int p, const double *coef,
                    double *out);

/* ---- scoring and forecasting files (forecast.c) ---------------------------------------- */
ssm_status ts_score_file(const ts_options *o, ssm_model *model, const char *path, FILE *out);
ssm_status ts_generate_file(const ts_options *o, ssm_model *model, const char *path, FILE *out);

#endif
