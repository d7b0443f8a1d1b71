/* kmer_baseline: the classical baseline of the dna-classify task. k-mer frequencies (k = 1..K,
 * each k's counts over the sequence divided by its number of k-mers; K = 3: 4 + 16 + 64
 * features), standardised on the training folds, and an L2-regularised logistic regression
 * fitted by Newton's method (LAPACK's dposv for each step; one-vs-rest for more than two
 * classes, its probabilities normalised), on the same stratified folds as the task
 * (tasks/seqclass: sc_folds, the classes sorted by name as the task sorts them when the
 * recipe has no task.classes). Prints accuracy, MCC and AUROC per fold and their mean and
 * standard deviation.
 *
 *   kmer_baseline FILE.tsv|FILE.fa [--folds 5] [--fold-seed 1] [--k 3] [--lambda 1]
 *                 [--write-folds DIR]   (also DIR/fold{i}.tsv: fold i's sequences, to score)
 *
 * The loss is sum_i log(1 + exp(-y_i w.x_i)) + lambda/2 |w|^2 (intercept not penalised). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tasks/dna/dna.h"
#include "../tasks/seqclass/seqclass.h"

void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info);

/* Frequencies of the k-mers, k = 1..K, of a sequence (k-mers holding N are skipped) into x. */
static int n_features(int K) {
    int f = 0;
    for (int k = 1, p = 4; k <= K; k++, p *= 4) f += p;
    return f;
}
static void kmer_features(const char *seq, int len, int K, double *x) {
    memset(x, 0, (size_t)n_features(K) * sizeof *x);
    for (int k = 1, base = 0, p = 4; k <= K; base += p, k++, p *= 4) {
        int total = 0;
        for (int i = 0; i + k <= len; i++) {
            int code = 0, ok = 1;
            for (int j = 0; j < k && ok; j++) {
                int t = dna_token((unsigned char)seq[i + j]) - DNA_TOKEN_A;
                ok = t >= 0 && t < 4;
                code = code * 4 + t;
            }
            if (ok) x[base + code]++, total++;
        }
        for (int c = 0; total && c < p; c++) x[base + c] /= total;
    }
}

/* Newton's method for the weights w (F + 1; w[F] the intercept) on rows X (n, F), y in {0,1}. */
static int fit_logistic(const double *X, const int *y, int n, int F, double lambda, double *w) {
    int D = F + 1, one = 1, info = 0;
    double *H = malloc((size_t)D * D * sizeof *H), *g = malloc((size_t)D * sizeof *g);
    memset(w, 0, (size_t)D * sizeof *w);
    for (int it = 0; it < 100 && H && g; it++) {
        memset(H, 0, (size_t)D * D * sizeof *H);
        for (int j = 0; j < F; j++) g[j] = lambda * w[j], H[(size_t)j * D + j] = lambda;
        g[F] = 0, H[(size_t)F * D + F] = 1e-9;
        for (int i = 0; i < n; i++) {
            const double *x = X + (size_t)i * F;
            double z = w[F];
            for (int j = 0; j < F; j++) z += w[j] * x[j];
            double p = 1 / (1 + exp(-z)), r = p - y[i], v = p * (1 - p);
            for (int a = 0; a <= F; a++) {
                double xa = a < F ? x[a] : 1;
                g[a] += r * xa;
                for (int b = 0; b <= a; b++) H[(size_t)a * D + b] += v * xa * (b < F ? x[b] : 1);
            }
        }
        /* H d = g (the upper triangle, column-major: row b <= column a at H[a * D + b]), w -= d */
        dposv_("U", &D, &one, H, &D, g, &D, &info);
        if (info) break;
        double step = 0;
        for (int j = 0; j < D; j++) w[j] -= g[j], step += g[j] * g[j];
        if (step < 1e-20) break;
    }
    free(H), free(g);
    return info;
}

static double predict(const double *w, const double *x, int F) {
    double z = w[F];
    for (int j = 0; j < F; j++) z += w[j] * x[j];
    return 1 / (1 + exp(-z));
}

int main(int argc, char **argv) {
    int folds = 5, K = 3;
    long long seed = 1;
    double lambda = 1.0;
    static struct option opts[] = {{"folds", required_argument, 0, 'f'}, {"fold-seed", required_argument, 0, 's'},
                                   {"k", required_argument, 0, 'k'},     {"lambda", required_argument, 0, 'l'},
                                   {"write-folds", required_argument, 0, 'w'}, {0, 0, 0, 0}};
    const char *fold_dir = NULL;
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 'f') folds = atoi(optarg);
        else if (o == 's') seed = atoll(optarg);
        else if (o == 'k') K = atoi(optarg);
        else if (o == 'l') lambda = atof(optarg);
        else if (o == 'w') fold_dir = optarg;
        else return 2;
    }
    if (optind + 1 != argc || folds < 2 || K < 1 || K > 6 || !(lambda > 0)) {
        fprintf(stderr, "usage: kmer_baseline FILE [--folds N>=2] [--fold-seed S] [--k 1..6] [--lambda L>0]\n");
        return 2;
    }
    sc_set s;
    const char **names;
    int C;
    if (sc_set_read(argv[optind], 1, &s) || sc_set_label_names(&s, &names, &C) ||
        sc_set_classes(&s, names, C, 1)) {
        fprintf(stderr, "kmer_baseline: %s\n", ssm_last_error());
        return 1;
    }
    int n = s.n, F = n_features(K), models = C == 2 ? 1 : C;
    double *X = malloc((size_t)n * F * sizeof *X), *Xs = malloc((size_t)n * F * sizeof *Xs);
    double *w = malloc((size_t)models * (F + 1) * sizeof *w), *probs = malloc((size_t)n * C * sizeof *probs);
    double *mean = malloc((size_t)F * sizeof *mean), *sd = malloc((size_t)F * sizeof *sd);
    int *fold_of = malloc((size_t)n * sizeof *fold_of), *y = malloc((size_t)n * sizeof *y);
    int32_t *truth = malloc((size_t)n * sizeof *truth);
    for (int i = 0; i < n; i++) kmer_features(s.seqs[i], s.lens[i], K, X + (size_t)i * F);
    sc_folds(s.classes, n, C, folds, (uint64_t)seed, fold_of);
    for (int f = 0; fold_dir && f < folds; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/fold%d.tsv", fold_dir, f);
        FILE *out = fopen(path, "w");
        if (!out) {
            fprintf(stderr, "kmer_baseline: %s: cannot create\n", path);
            return 1;
        }
        fprintf(out, "sequence\tlabel\n");
        for (int i = 0; i < n; i++)
            if (fold_of[i] == f) fprintf(out, "%s\t%s\n", s.seqs[i], s.labels[i]);
        if (fclose(out)) {
            fprintf(stderr, "kmer_baseline: %s: write error\n", path);
            return 1;
        }
    }
    printf("k-mer logistic regression: %s, %d sequences, %d classes, k = 1..%d (%d features), lambda %g, "
           "%d folds (seed %lld)\nfold\tn\taccuracy\tmcc\tauroc\n", argv[optind], n, C, K, F, lambda, folds, seed);
    double sum[3] = {0}, sq[3] = {0};
    for (int f = 0; f < folds; f++) {
        /* standardise on the training folds */
        int n_tr = 0;
        for (int j = 0; j < F; j++) mean[j] = sd[j] = 0;
        for (int i = 0; i < n; i++)
            if (fold_of[i] != f) {
                n_tr++;
                for (int j = 0; j < F; j++) mean[j] += X[(size_t)i * F + j];
            }
        for (int j = 0; j < F; j++) mean[j] /= n_tr;
        for (int i = 0; i < n; i++)
            if (fold_of[i] != f)
                for (int j = 0; j < F; j++) sd[j] += pow(X[(size_t)i * F + j] - mean[j], 2) / n_tr;
        for (int j = 0; j < F; j++) sd[j] = sd[j] > 1e-24 ? sqrt(sd[j]) : 1;
        int m = 0;
        for (int i = 0; i < n; i++) /* training rows first, in file order */
            if (fold_of[i] != f) {
                for (int j = 0; j < F; j++) Xs[(size_t)m * F + j] = (X[(size_t)i * F + j] - mean[j]) / sd[j];
                truth[m++] = s.classes[i];
            }
        for (int c = 0; c < models; c++) {
            int cls = C == 2 ? 1 : c;
            for (int i = 0; i < m; i++) y[i] = truth[i] == cls;
            if (fit_logistic(Xs, y, m, F, lambda, w + (size_t)c * (F + 1))) {
                fprintf(stderr, "kmer_baseline: fold %d: the Newton system is singular\n", f);
                return 1;
            }
        }
        int v = 0;
        double x[4096 + 1024 + 256 + 64 + 16 + 4];
        for (int i = 0; i < n; i++) {
            if (fold_of[i] != f) continue;
            for (int j = 0; j < F; j++) x[j] = (X[(size_t)i * F + j] - mean[j]) / sd[j];
            double *p = probs + (size_t)v * C, total = 0;
            if (C == 2) p[1] = predict(w, x, F), p[0] = 1 - p[1];
            else {
                for (int c = 0; c < C; c++) total += p[c] = predict(w + (size_t)c * (F + 1), x, F);
                for (int c = 0; c < C; c++) p[c] /= total;
            }
            truth[v++] = s.classes[i];
        }
        sc_metrics r = sc_evaluate(probs, truth, v, C);
        double vals[3] = {r.accuracy, r.mcc, r.auroc};
        for (int k = 0; k < 3; k++) sum[k] += vals[k], sq[k] += vals[k] * vals[k];
        printf("%d\t%d\t%.4f\t%.4f\t%.4f\n", f, v, r.accuracy, r.mcc, r.auroc);
    }
    printf("mean +- sd\t%d", n);
    for (int k = 0; k < 3; k++) {
        double mu = sum[k] / folds, var = (sq[k] - folds * mu * mu) / (folds - 1);
        printf("\t%.4f +- %.4f", mu, var > 0 ? sqrt(var) : 0);
    }
    printf("\n");
    free(X), free(Xs), free(w), free(probs), free(mean), free(sd), free(fold_of), free(y), free(truth), free(names);
    sc_set_free(&s);
    return 0;
}
