/* metrics.c: accuracy, Matthews' correlation and the area under the ROC (seqclass.h). */
#include <math.h>
#include <stdlib.h>

#include "seqclass.h"

typedef struct scored { double score; int positive; } scored;

static int by_score(const void *a, const void *b) {
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

/* AUC = (sum of the positives' ranks - P (P + 1) / 2) / (P N), tied scores sharing their mean
 * rank: the probability that a random positive scores above a random negative, ties one half */
double sc_auroc_binary(const double *scores, const int *positive, int n) {
    scored *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return NAN;
    double P = 0, N = 0, rank_sum = 0;
    for (int i = 0; i < n; i++) v[i] = (scored){scores[i], positive[i] != 0}, P += v[i].positive;
    N = n - P;
    qsort(v, (size_t)n, sizeof *v, by_score);
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && v[j].score == v[i].score) j++;
        double mean_rank = (i + 1 + j) / 2.0; /* ranks i+1 .. j */
        for (int k = i; k < j; k++) rank_sum += v[k].positive ? mean_rank : 0;
        i = j;
    }
    free(v);
    if (!P || !N) return NAN;
    return (rank_sum - P * (P + 1) / 2) / (P * N);
}

sc_metrics sc_evaluate(const double *probs, const int32_t *truth, int n, int C) {
    sc_metrics m = {.accuracy = NAN, .mcc = NAN, .auroc = NAN};
    double *t = calloc((size_t)C, sizeof *t), *p = calloc((size_t)C, sizeof *p);
    double *score = malloc((size_t)(n ? n : 1) * sizeof *score);
    int *pos = malloc((size_t)(n ? n : 1) * sizeof *pos);
    if (!t || !p || !score || !pos) goto done;
    double correct = 0, s = 0;
    for (int i = 0; i < n; i++) {
        if (truth[i] < 0 || truth[i] >= C) continue;
        const double *row = probs + (size_t)i * C;
        int best = 0;
        for (int k = 1; k < C; k++)
            if (row[k] > row[best]) best = k;
        t[truth[i]]++, p[best]++, s++;
        correct += best == truth[i];
    }
    m.n = (int)s;
    if (!s) goto done;
    m.accuracy = correct / s;
    /* R_K = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)) */
    double pt = 0, pp = 0, tt = 0;
    for (int k = 0; k < C; k++) pt += p[k] * t[k], pp += p[k] * p[k], tt += t[k] * t[k];
    double den = sqrt((s * s - pp) * (s * s - tt));
    m.mcc = den > 0 ? (correct * s - pt) / den : 0;
    /* one-vs-rest areas (C = 2: the positive class 1 only) */
    double sum = 0;
    int areas = 0;
    for (int k = C == 2 ? 1 : 0; k < C; k++) {
        int j = 0;
        for (int i = 0; i < n; i++)
            if (truth[i] >= 0 && truth[i] < C) score[j] = probs[(size_t)i * C + k], pos[j++] = truth[i] == k;
        double a = sc_auroc_binary(score, pos, j);
        if (!isnan(a)) sum += a, areas++;
    }
    m.auroc = areas ? sum / areas : NAN;
done:
    free(t), free(p), free(score), free(pos);
    return m;
}
