/* bench_ssd: tokens/s of the Mamba-2 SSD op (libssm/cpu/ssd.c) and the gated norm at the 130M
 * Mamba-2 shape (d_model 768: H = 24 heads of P = 64, N = 128, G = 1), beside their floors
 * measured in the same run: the flops of each algorithm as it executes them over this machine's
 * SGEMM rate (a large cblas_sgemm), and the bytes it must read and write over a memcpy's
 * bandwidth (read + write, all threads). "x floor" = time / max(flop floor, byte floor).
 *
 *   bench_ssd [--threads N] [--iters N] [--quick] [--cpu-time]
 *
 * Forward by the recurrence and by the chunked SSD (chunk 64, 128, 256), and the backward, at
 * B = 1 and 4, L = 2048 and 512; best of --iters (default 3) after one warm-up. */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchutil.h"
#include "gated_norm.h"
#include "ssd.h"

void openblas_set_num_threads(int n) __attribute__((weak));

/* --cpu-time: the process's CPU time over the number of threads instead of the wall clock, an
 * estimate of the wall time on an idle machine when the machine is shared (run it with
 * OMP_WAIT_POLICY=passive, so that threads waiting at a barrier do not count) */
static int use_cpu_time = 0, n_thr = 1;

static double bench_clock(void) {
    struct timespec ts;
    clock_gettime(use_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (ts.tv_sec + ts.tv_nsec * 1e-9) / (use_cpu_time ? n_thr : 1);
}

static float *fbuf(size_t n, unsigned seed) {
    float *p = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    if (!p) {
        fprintf(stderr, "bench_ssd: out of memory\n");
        exit(1);
    }
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = ((s >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
    }
    return p;
}

/* memcpy GB/s (bytes read + written), the threads copying their parts of 256 MiB */
static double memcpy_gbs(void) {
    size_t n = (size_t)64 << 20; /* floats */
    float *a = fbuf(n, 4), *b = fbuf(n, 5);
    double best = 0;
    for (int r = 0; r < 6; r++) {
        double t0 = bench_clock();
#pragma omp parallel
        {
            int k = omp_get_thread_num(), m = omp_get_num_threads();
            size_t lo = n * k / m, hi = n * (k + 1) / m;
            memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
        }
        double g = 2.0 * n * sizeof(float) / (bench_clock() - t0) / 1e9;
        if (r) best = g > best ? g : best; /* the first one faults the pages in */
    }
    free(a), free(b);
    return best;
}

typedef struct {
    double peak, bw; /* GFLOP/s, GB/s */
    int iters;
} machine;

/* the flops of each algorithm as ssd.c executes them: the products with a triangular factor by
 * row blocks of 64 (ssd.c's TB), the blocks above the diagonal skipped */
static double tri(double q) { /* sum over the row blocks of rows x (the columns up to the block's end) */
    double f = 0;
    for (int i0 = 0; i0 < q; i0 += 64) {
        double m = q - i0 < 64 ? q - i0 : 64;
        f += m * (i0 + m);
    }
    return f;
}
static double tri_t(double q) { /* the transposed form: rows x (q - the block's start) */
    double f = 0;
    for (int j0 = 0; j0 < q; j0 += 64) {
        double m = q - j0 < 64 ? q - j0 : 64;
        f += m * (q - j0);
    }
    return f;
}

static double flops_recurrent(const cpu_ssd_args *a) {
    /* per (token, head, p, n): dA S, dt x B, +, C S, + */
    return 5.0 * a->B * a->L * a->H * a->P * a->N;
}

static double flops_chunked(const cpu_ssd_args *a) {
    double f = 0, P = a->P, N = a->N;
    int Q = a->chunk < a->L ? a->chunk : a->L, nc = (a->L + Q - 1) / Q;
    for (int c = 0; c < nc; c++) {
        double q = a->L - c * Q < Q ? a->L - c * Q : Q;
        f += a->G * 2 * tri(q) * N;                          /* C B^T */
        f += a->H * ((c ? 2 * q * N * P : 0) + 2 * tri(q) * P /* Y_off, M X */ + 2 * P * N * q /* S1 */);
    }
    return f * a->B;
}

static double flops_backward(const cpu_ssd_args *a) {
    double f = 0, P = a->P, N = a->N;
    int Q = a->chunk < a->L ? a->chunk : a->L, nc = (a->L + Q - 1) / Q;
    for (int c = 0; c < nc; c++) {
        double q = a->L - c * Q < Q ? a->L - c * Q : Q;
        int first = c == 0, last = c == nc - 1;
        f += a->H * ((last ? 0 : 2 * P * N * q) + (first ? 0 : 2 * P * N * q)); /* S0, dS1 passes */
        f += a->G * 2 * N * (2 * tri(q) + tri_t(q));                         /* C B^T, dCB B, dCB^T C */
        f += a->H * ((last ? 0 : 2 * q * N * P) + 2 * P * (tri_t(q) + tri(q)) /* M^T dY, dM */ +
                     (first ? 0 : 2 * q * P * N) + (last ? 0 : 2 * q * P * N));
    }
    return f * a->B;
}

/* bytes that must move: forward reads x, B, C, dt and writes y; backward also reads dy and
 * writes dx, dB, dC, ddt */
static double bytes_of(const cpu_ssd_args *a, int backward) {
    double T = (double)a->B * a->L, DI = (double)a->H * a->P, BC = 2.0 * a->G * a->N;
    double fwd = T * (DI + BC + a->H) + T * DI;
    return 4 * (backward ? fwd + T * (DI + BC + a->H) : fwd);
}

static void report(const char *what, const cpu_ssd_args *a, int chunk, double t, double flops,
                   double bytes, const machine *m) {
    double tf = flops / (m->peak * 1e9), tb = bytes / (m->bw * 1e9), floor = tf > tb ? tf : tb;
    char ch[16];
    if (chunk) snprintf(ch, sizeof ch, "%d", chunk);
    else snprintf(ch, sizeof ch, "-");
    printf("%-18s B=%d L=%-5d chunk %-4s %9.2f ms %10.0f tok/s %7.1f GFLOP/s | floor %7.2f ms (%s) | %5.1fx floor\n",
           what, a->B, a->L, ch, t * 1e3, a->B * a->L / t, flops / t / 1e9, floor * 1e3, tf > tb ? "flops" : "bytes",
           t / floor);
}

static double time_it(void (*fn)(const cpu_ssd_args *), const cpu_ssd_args *a, int iters) {
    fn(a);
    double best = 1e30;
    for (int i = 0; i < iters; i++) {
        double t0 = bench_clock();
        fn(a);
        double t = bench_clock() - t0;
        best = t < best ? t : best;
    }
    return best;
}

static void run_shape(int B, int L, const int *chunks, int n_chunks, const machine *m, int threads) {
    const int H = 24, P = 64, G = 1, N = 128, DI = H * P, ld_x = DI + 2 * G * N, ld_dt = H;
    size_t T = (size_t)B * L;
    float *xbc = fbuf(T * ld_x, 10), *dt = fbuf(T * ld_dt, 11), *y = fbuf(T * DI, 12), *dy = fbuf(T * DI, 13);
    float *dxbc = fbuf(T * ld_x, 14), *ddt = fbuf(T * ld_dt, 15);
    float *bias = fbuf(H, 16), *A_log = fbuf(H, 17), *D = fbuf(H, 18), *g3 = fbuf(3 * H, 19);
    /* the 130M model's initial regime: dt around 1e-3 .. 1e-1, A = -(1 .. 16) */
    for (int h = 0; h < H; h++) {
        double d = exp(log(1e-3) + (h + 0.5) / H * (log(1e-1) - log(1e-3)));
        bias[h] = (float)(d + log(-expm1(-d)));
        A_log[h] = logf(1.0f + 15.0f * h / (H - 1));
        D[h] = 1.0f;
    }
    for (size_t i = 0; i < T * ld_dt; i++) dt[i] *= 0.3f;
    cpu_ssd_args a;
    memset(&a, 0, sizeof a);
    a.B = B, a.L = L, a.H = H, a.P = P, a.G = G, a.N = N, a.chunk = chunks[0];
    a.dt_min = 0.0f, a.dt_max = INFINITY;
    a.x = xbc, a.Bm = xbc + DI, a.Cm = xbc + DI + G * N, a.ld_x = ld_x;
    a.dt = dt, a.ld_dt = ld_dt, a.dt_bias = bias, a.A_log = A_log, a.Dskip = D, a.y = y, a.ld_y = DI;
    a.dy = dy, a.dx = dxbc, a.dBm = dxbc + DI, a.dCm = dxbc + DI + G * N, a.ddt = ddt;
    a.d_dt_bias = g3, a.dA_log = g3 + H, a.dD = g3 + 2 * H, a.threads = threads;
    size_t most = 0;
    for (int k = 0; k < n_chunks; k++) {
        a.chunk = chunks[k];
        size_t s = cpu_ssd_scratch_floats(&a, threads, 1);
        most = s > most ? s : most;
    }
    a.scratch = fbuf(most, 20), a.scratch_floats = most;
    double t = time_it(cpu_ssd_forward_recurrent, &a, m->iters);
    report("forward recurrent", &a, 0, t, flops_recurrent(&a), bytes_of(&a, 0), m);
    for (int k = 0; k < n_chunks; k++) {
        a.chunk = chunks[k];
        t = time_it(cpu_ssd_forward_chunked, &a, m->iters);
        report("forward chunked", &a, a.chunk, t, flops_chunked(&a), bytes_of(&a, 0), m);
    }
    for (int k = 0; k < n_chunks; k++) {
        a.chunk = chunks[k];
        t = time_it(cpu_ssd_backward, &a, m->iters);
        report("backward", &a, a.chunk, t, flops_backward(&a), bytes_of(&a, 1), m);
    }
    /* the gated norm that follows (z beside the rest of in_proj's output, as the model has it) */
    {
        float *z = fbuf(T * DI, 21), *out = fbuf(T * DI, 22), *rstd = fbuf(T, 23), *w = fbuf(DI, 24), *dw = fbuf(DI, 25);
        double best_f = 1e30, best_b = 1e30;
        for (int i = 0; i <= m->iters; i++) {
            double t0 = bench_clock();
            cpu_gated_rmsnorm_forward(out, DI, rstd, y, DI, z, DI, w, (int)T, DI, 1, 1e-5f);
            double t1 = bench_clock();
            cpu_gated_rmsnorm_backward(dxbc, ld_x, dy, DI, dw, out, DI, y, DI, z, DI, w, rstd, (int)T, DI, 1);
            double t2 = bench_clock();
            if (i) best_f = fmin(best_f, t1 - t0), best_b = fmin(best_b, t2 - t1);
        }
        double bf = 4.0 * T * DI * 3, bb = 4.0 * T * DI * 5; /* y, z -> out; y, z, d_out -> dy, dz */
        printf("%-18s B=%d L=%-5d            %9.2f ms %10.0f tok/s | floor %7.2f ms (bytes) | %5.1fx floor\n",
               "gated norm fwd", B, L, best_f * 1e3, T / best_f, bf / (m->bw * 1e9) * 1e3, best_f / (bf / (m->bw * 1e9)));
        printf("%-18s B=%d L=%-5d            %9.2f ms %10.0f tok/s | floor %7.2f ms (bytes) | %5.1fx floor\n",
               "gated norm bwd", B, L, best_b * 1e3, T / best_b, bb / (m->bw * 1e9) * 1e3, best_b / (bb / (m->bw * 1e9)));
        free(z), free(out), free(rstd), free(w), free(dw);
    }
    free(xbc), free(dt), free(y), free(dy), free(dxbc), free(ddt), free(bias), free(A_log), free(D), free(g3);
    free(a.scratch);
}

int main(int argc, char **argv) {
    int threads = 0, iters = 3, quick = 0;
    static struct option opts[] = {{"threads", required_argument, 0, 't'},
                                   {"iters", required_argument, 0, 'i'},
                                   {"quick", no_argument, 0, 'q'},
                                   {"cpu-time", no_argument, 0, 'c'},
                                   {"help", no_argument, 0, 'h'},
                                   {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        if (o == 't') threads = atoi(optarg);
        else if (o == 'i') iters = atoi(optarg);
        else if (o == 'q') quick = 1;
        else if (o == 'c') use_cpu_time = 1;
        else {
            printf("usage: bench_ssd [--threads N] [--iters N] [--quick] [--cpu-time]\n");
            return o == 'h' ? 0 : 2;
        }
    }
    if (threads <= 0) threads = omp_get_max_threads();
    n_thr = threads;
    omp_set_num_threads(threads);
    if (openblas_set_num_threads) openblas_set_num_threads(threads);
    /* the ceilings of the GEMM-bound and the memory-bound parts, on this benchmark's clock */
    machine m = {sgemm_gflops_clock(2048, bench_clock), memcpy_gbs(), iters};
    printf("bench_ssd: %d threads, SGEMM %.1f GFLOP/s (2048^3, best of 5), memcpy %.1f GB/s (read + write)%s\n"
           "130M Mamba-2 shape: H = 24, P = 64, N = 128, G = 1 (d_inner 1536)\n", threads, m.peak, m.bw,
           use_cpu_time ? "; times: CPU time / threads" : "");
    const int chunks[] = {64, 128, 256};
    int shapes[4][2] = {{1, 2048}, {4, 2048}, {1, 512}, {4, 512}};
    for (int s = 0; s < (quick ? 1 : 4); s++) run_shape(shapes[s][0], shapes[s][1], chunks, 3, &m, threads);
    return 0;
}
