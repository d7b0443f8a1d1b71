/* baselines.c: the naive forecasts ssm-score prints beside the model's: the last value, the
 * seasonal naive forecast (period given or detected by autocorrelation) and a linear
 * autoregression fitted by least squares (LAPACK's dgels, from OpenBLAS). Values x are
 * (rows, C) row-major; each baseline forecasts one channel c. */
#include <math.h>
#include <stdlib.h>

#include "timeseries.h"

/* LAPACK: least squares min |A x - b| by QR (column-major A (m, n)) */
void dgels_(const char *trans, const int *m, const int *n, const int *nrhs, double *a,
            const int *lda, double *b, const int *ldb, double *work, const int *lwork, int *info);

#define X(t) x[(size_t)(t) * C + c]

int ts_detect_period(const double *x, int n, int C, int max_lag) {
    if (max_lag > n / 2) max_lag = n / 2;
    double best = 0, *acf = calloc((size_t)max_lag + 2, sizeof *acf);
    int period = 0;
    if (!acf) return 0;
    for (int c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int t = 0; t < n; t++) mean += X(t) / n;
        for (int t = 0; t < n; t++) var += (X(t) - mean) * (X(t) - mean);
        for (int k = 1; k <= max_lag + 1 && var > 0; k++) {
            double s = 0;
            for (int t = k; t < n; t++) s += (X(t) - mean) * (X(t - k) - mean);
            acf[k] += s / var / C;
        }
    }
    /* the highest local maximum past lag 1 (a peak, not the decay from lag 0) */
    for (int k = 2; k <= max_lag; k++)
        if (acf[k] > acf[k - 1] && acf[k] >= acf[k + 1] && acf[k] > best) best = acf[k], period = k;
    free(acf);
    return period;
}

ssm_status ts_ar_fit(const double *x, int n, int C, int c, int p, double *coef) {
    int m = n - p, k = p + 1, one = 1, info = 0, lwork = -1;
    if (m < k)
        return ssm_set_error(SSM_ERR_ARG, "AR(%d) needs more than %d training rows (has %d)", p, 2 * p + 1, n);
    double *a = malloc((size_t)m * k * sizeof *a), *b = malloc((size_t)m * sizeof *b), q;
    if (!a || !b) {
        free(a), free(b);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the AR fit");
    }
    /* row t - p of A: 1, x[t-1], ..., x[t-p]; b: x[t] (column-major) */
    for (int t = p; t < n; t++) {
        a[t - p] = 1;
        for (int i = 1; i <= p; i++) a[(size_t)i * m + (t - p)] = X(t - i);
        b[t - p] = X(t);
    }
    dgels_("N", &m, &k, &one, a, &m, b, &m, &q, &lwork, &info); /* workspace query */
    lwork = (int)q;
    double *work = malloc((size_t)(lwork > 1 ? lwork : 1) * sizeof *work);
    if (work) dgels_("N", &m, &k, &one, a, &m, b, &m, work, &lwork, &info);
    for (int i = 0; i < k; i++) coef[i] = b[i];
    free(work), free(a), free(b);
    if (!work) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the AR fit");
    if (info) return ssm_set_error(SSM_ERR_NUMERIC, "AR(%d) fit: dgels info %d (rank-deficient)", p, info);
    return SSM_OK;
}

void ts_last_value(const double *x, int C, int c, int origin, int H, double *out) {
    for (int h = 0; h < H; h++) out[h] = X(origin - 1);
}

/* x^[origin + h] = x[origin + h - period (floor(h / period) + 1)]: the same phase of the last
 * season before the origin */
void ts_seasonal_naive(const double *x, int C, int c, int origin, int H, int period, double *out) {
    for (int h = 0; h < H; h++) out[h] = X(origin + h - period * (h / period + 1));
}

/* recursive: each step's forecast feeds the next */
void ts_ar_forecast(const double *x, int C, int c, int origin, int H, int p, const double *coef,
                    double *out) {
    for (int h = 0; h < H; h++) {
        double y = coef[0];
        for (int i = 1; i <= p; i++) y += coef[i] * (h - i >= 0 ? out[h - i] : X(origin + h - i));
        out[h] = y;
    }
}
