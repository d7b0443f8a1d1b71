/* cross_entropy.c: softmax cross-entropy over the tied LM head's logits. */
#include <math.h>

#include "cpu_ops.h"

/* log sum_v exp(row[v]) with the max subtracted, in double */
static double row_logsumexp(const float *row, int V, float *max_out) {
    float mx = row[0];
    for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)row[v] - mx);
    *max_out = mx;
    return log(s);
}

double cpu_cross_entropy_forward(const float *logits, const int32_t *targets, int T, int V,
                                 int64_t *count) {
    double total = 0;
    int64_t n = 0;
#pragma omp parallel for reduction(+ : total, n) schedule(static)
    for (int t = 0; t < T; t++) {
        if (targets[t] < 0) continue;
        const float *row = logits + (size_t)t * V;
        float mx;
        double lse = row_logsumexp(row, V, &mx);
        /* -log softmax[target] = lse + max - logit[target] */
        total += lse + mx - row[targets[t]];
        n++;
    }
    *count = n;
    return n ? total / n : 0.0;
}

void cpu_cross_entropy_backward(float *logits, const int32_t *targets, int T, int V,
                                float scale) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *row = logits + (size_t)t * V;
        if (targets[t] < 0) {
            for (int v = 0; v < V; v++) row[v] = 0.0f;
            continue;
        }
        float mx;
        double lse = row_logsumexp(row, V, &mx);
        for (int v = 0; v < V; v++) row[v] = (float)exp((double)row[v] - mx - lse) * scale;
        row[targets[t]] -= scale;
    }
}
