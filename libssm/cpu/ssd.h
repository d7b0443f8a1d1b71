/* ssd.h: the state space op of the Mamba-2 mixer (mamba_ssm's mamba_chunk_scan_combined with
 * dt_bias, dt_softplus, dt_limit and the per-head D skip; z and the gated norm are
 * gated_norm.h), fp32 on the CPU, forward (two algorithms), backward and step.
 *
 * Shapes: T = B * L rows, batch-major (row t = b * L + l); H heads of P channels (I = H * P),
 * G groups of B and C of N each, head h reads group g = h / (H / G) (H a multiple of G).
 *   dt_t[h] = clamp(softplus(dt_raw[t, h] + dt_bias[h]), dt_min, dt_max);  A[h] = -exp(A_log[h])
 *   S_t[h, p, n] = exp(dt_t[h] A[h]) S_{t-1}[h, p, n] + dt_t[h] x_t[h, p] B_t[g, n]
 *   y_t[h, p]    = sum_n C_t[g, n] S_t[h, p, n] + D[h] x_t[h, p]
 * The equations sit above the code that computes them in ssd.c. */
#ifndef SSM_CPU_SSD_H
#define SSM_CPU_SSD_H

#include <stddef.h>

typedef struct cpu_ssd_args {
    int B, L;             /* sequences and their length: T = B * L rows, row t = b * L + l */
    int H, P, G, N;       /* heads, headdim, groups (head h reads group h / (H / G)), d_state */
    int chunk;            /* chunk_size of the chunked algorithm */
    float dt_min, dt_max; /* dt_limit: clamp after softplus; 0 and INFINITY clamp nothing */
    const float *x;       /* (T, H*P), row stride ld_x: the conv's x part */
    const float *Bm, *Cm; /* (T, G*N) each, row stride ld_x too (they sit beside x in xBC) */
    int ld_x;
    const float *dt;      /* (T, H), row stride ld_dt: raw dt, before dt_bias and softplus */
    int ld_dt;
    const float *dt_bias; /* (H) */
    const float *A_log;   /* (H); A = -exp(A_log) */
    const float *Dskip;   /* (H) */
    float *y;             /* (T, H*P), row stride ld_y: sum_n C S + D x (before the gated norm) */
    int ld_y;
    float *state;         /* (B, H, P, N): initial state read, final state written; NULL: zero start, not kept */
    /* backward only: dy in; dx, dBm, dCm written with stride ld_x (the same layout as x, B, C),
     * ddt written with stride ld_dt; d_dt_bias, dA_log, dD ADDED to (H each). */
    const float *dy; float *dx, *dBm, *dCm, *ddt, *d_dt_bias, *dA_log, *dD;
    float *scratch; size_t scratch_floats; /* caller-provided, at least cpu_ssd_scratch_floats(args) */
    /* added: the number of threads the scratch was sized for (the `threads` given to
     * cpu_ssd_scratch_floats); the ops run with at most that many. 0: omp_get_max_threads(). */
    int threads;
} cpu_ssd_args;

/* Floats of scratch that the forwards (backward = 0: cpu_ssd_forward, _recurrent, _chunked)
 * or also the backward (backward = 1) need with `threads` threads (<= 0: omp_get_max_threads()).
 * Reads B, L, H, P, G, N and chunk only. Forward chunked: B * ceil(L / chunk) * G * chunk^2 (the
 * C B^T blocks) + per thread chunk^2 + chunk * P + P * N + 8 chunk; backward: per batch slab of
 * bs sequences (bs chosen from the thread count) 2 * bs * ceil(L / chunk) * H * P * N (chunk
 * boundary states and their gradients), per thread 5 chunk^2 + chunk * (P + 2 N) + 16 chunk,
 * and 3 * B * ceil(L / chunk) * H partial sums. */
size_t cpu_ssd_scratch_floats(const cpu_ssd_args *a, int threads, int backward);

/* The chosen algorithm: the recurrence, the faster one on the development machine
 * (bench/bench_ssd.c); the chunked form stays as its reference. */
void cpu_ssd_forward(const cpu_ssd_args *a);
/* The sequential recurrence, one token at a time, threads over (b, h). Like the step, it uses
 * the scratch when it holds cpu_ssd_scratch_floats(a, threads, 0) floats, else allocates P * N
 * floats per thread. */
void cpu_ssd_forward_recurrent(const cpu_ssd_args *a);
/* The chunked SSD (mamba_ssm's ssd_minimal_discrete), its products through cblas_sgemm. */
void cpu_ssd_forward_chunked(const cpu_ssd_args *a);
/* The gradients of J = sum(y * dy) from zero initial state (state must be NULL), dy with row
 * stride ld_y (y's layout): the chunked algorithm's reverse mode, with the chunk length of
 * `chunk` (the result does not depend on it beyond rounding; 64 is the fastest here),
 * deterministic (bitwise independent of the thread count). */
void cpu_ssd_backward(const cpu_ssd_args *a);
/* L == 1, state != NULL: one token per sequence (row b of x, B, C, dt, y), the state updated
 * in place. The same arithmetic as cpu_ssd_forward_recurrent, so L steps equal it bitwise.
 * It clamps dt as the forward does (our step is the forward with L = 1); mamba_ssm's decode
 * (selective_state_update) does not apply dt_limit, which only matters for a non-default
 * dt_limit. Uses the scratch when it holds cpu_ssd_scratch_floats(a, threads, 0) floats,
 * else allocates its own (P * N floats per thread). */
void cpu_ssd_step(const cpu_ssd_args *a);

#endif
