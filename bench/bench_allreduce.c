/* bench_allreduce: the gradient all-reduce of data-parallel training (ssm_comm_sum_scaled over
 * MPI, one blob of n floats) beside its floor, the gradient bytes over the memory bandwidth of
 * this machine measured in the same run (memcpy of 64 MiB by one thread, as each rank reduces
 * with one: bytes copied / time, the best of 20: on a loaded machine a longer copy measures the
 * scheduler). Run under the launcher:
 *
 *   mpirun -np 2 bench_allreduce [N_FLOATS]...   (default: 4720 1e5 1e6 4e6)
 *
 * Each size: the best and the median of 20 calls after 3 warm-up calls (the ratio to the floor
 * takes the best); rank 0 prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ssm/comm.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* bytes/s of one thread's memcpy (best of 20) */
static double copy_bandwidth(void) {
    size_t n = (size_t)64 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 0;
    memset(a, 1, n), memset(b, 2, n);
    double best = 1e30;
    for (int r = 0; r < 20; r++) {
        double t0 = now();
        memcpy(b, a, n);
        double t = now() - t0;
        if (t < best) best = t;
    }
    volatile char sink = b[n / 2];
    (void)sink;
    free(a), free(b);
    return n / best;
}

int main(int argc, char **argv) {
    ssm_comm *comm;
    if (ssm_comm_open(SSM_COMM_AUTO, -1, &comm)) {
        fprintf(stderr, "bench_allreduce: %s\n", ssm_last_error());
        return 1;
    }
    int rank = ssm_comm_rank(comm), size = ssm_comm_size(comm);
    double bw = copy_bandwidth();
    ssm_comm_all_reduce(comm, &bw, 1, SSM_COMM_MAX); /* the ranks measured at about once */
    if (!rank)
        printf("bench_allreduce: %d ranks (%s), memcpy %.2f GB/s per thread\n"
               "%12s %10s %10s %10s %10s %8s\n", size, ssm_comm_name(comm), bw / 1e9, "floats", "MB",
               "best ms", "median ms", "floor ms", "ratio");
    const char *defaults[] = {"4720", "1e5", "1e6", "4e6"};
    int n_sizes = argc > 1 ? argc - 1 : 4;
    for (int k = 0; k < n_sizes; k++) {
        size_t n = (size_t)strtod(argc > 1 ? argv[k + 1] : defaults[k], NULL);
        float *g = malloc(n * sizeof *g);
        if (!g) return 1;
        for (size_t i = 0; i < n; i++) g[i] = (float)(i % 13) * 1e-3f;
        enum { WARM = 3, REPS = 20 };
        double t[REPS];
        for (int r = 0; r < WARM + REPS; r++) {
            ssm_comm_barrier(comm);
            double t0 = now();
            if (ssm_comm_sum_scaled(comm, g, n, 0.5f)) {
                fprintf(stderr, "bench_allreduce: %s\n", ssm_last_error());
                return 1;
            }
            if (r >= WARM) t[r - WARM] = now() - t0;
        }
        qsort(t, REPS, sizeof *t, by_value);
        double bytes = (double)n * sizeof(float), floor = bytes / bw;
        if (!rank)
            printf("%12zu %10.3f %10.4f %10.4f %10.4f %8.2f\n", n, bytes / 1e6, t[0] * 1e3,
                   t[REPS / 2] * 1e3, floor * 1e3, t[0] / floor);
        free(g);
    }
    ssm_comm_close(comm);
    return 0;
}
