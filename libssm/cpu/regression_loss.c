/* regression_loss.c: MSE and MAE over the targets that are not NaN (the regression head's). */
#include <math.h>

#include "cpu_ops.h"

double cpu_regression_loss_forward(const float *pred, const float *target, size_t n, int mae,
                                   int64_t *count) {
    double total = 0;
    int64_t k = 0;
#pragma omp parallel for reduction(+ : total, k) schedule(static)
    for (size_t i = 0; i < n; i++) {
        if (isnan(target[i])) continue;
        double d = (double)pred[i] - target[i];
        total += mae ? fabs(d) : d * d;
        k++;
    }
    *count = k;
    return k ? total / (double)k : 0.0;
}

void cpu_regression_loss_backward(float *d_pred, const float *pred, const float *target,
                                  size_t n, int mae, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = pred[i] - target[i];
        /* d|d|/dd = sign(d) (0 at 0, as torch's L1Loss); d d^2 / dd = 2 d */
        d_pred[i] = isnan(target[i]) ? 0.0f : mae ? scale * (float)((d > 0) - (d < 0)) : 2.0f * scale * d;
    }
}
