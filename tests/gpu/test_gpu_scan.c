/* test_gpu_scan.c: the CUDA scan and conv ops (libssm/cuda/scan.cu, conv.cu) against the CPU
 * ops (libssm/cpu/scan.c, conv.c, gate.c) on fresh random inputs of awkward sizes: L = 1,
 * L not a multiple of the chunk, odd channel counts (E = 37), N = 16 and N = 5 (and 32),
 * B = 3, the chunked long-sequence path, L = 1,048,576 at B = 1 for the forward; every forward
 * case with 1, 2 and 4 threads per channel (ssm_scan_args.split); step mode against the CPU
 * step and against the GPU's own parallel forward with carried state.
 *
 * Each GPU output is poisoned with NaN (all-ones bytes, a NaN in fp32 and in bf16) before
 * each run, so an unwritten element fails; accumulated outputs (dA_log, dD, d_dt_bias, dw, db)
 * start from random values on both sides. Errors are relative norms ||gpu - cpu|| / ||cpu||
 * in double (docs/architecture.md, 'Accuracy'). Bounds:
 *   fp32 inputs: forward 1e-5 (both sides fp32 with ~1e-7 per-step rounding; the GPU's
 *     exp is ex2.approx of delta * A log2 e, ~2 ulp; the state forgets, so the error stays
 *     at a few 1e-7 .. 1e-6); backward 1e-4 (sums over B * L positions,
 *     docs/architecture.md, 'Accuracy').
 *   bf16 inputs (the CPU runs on the same bf16-rounded values in fp32): 1e-2, the rounding
 *     of the output at the store (2^-9) plus the bf16 gradients feeding one another.
 * Exit status: 0 all passed, 1 a check failed, 77 no GPU (meson reports "skipped").
 *
 *   test_gpu_scan [--quick]   (--quick leaves out the L = 1,048,576 case) */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cpu_ops.h"
#include "gpu_test.h"
#include "ssm/cuda_ops.h"


static const char *dtname(ssm_dtype d) { return d == SSM_DTYPE_F32 ? "f32" : "bf16"; }

/* ---- scan problems ----------------------------------------------------------------------- */

typedef struct {
    int B, L, E, N, R, ld, ldz;
    float *u, *dt, *bias, *A_log, *xdbl, *D, *xz; /* xz: (T, ldz), z at column E */
} problem;

/* the CPU twin's arguments over u, dt and xdbl = [dt_in (R) | B (N) | C (N)] (rows of p->ld) */
static ssm_scan_args cpu_args(const problem *p, const float *u, const float *dt, const float *xdbl,
                              int B, int L) {
    return (ssm_scan_args){.B = B, .L = L, .E = p->E, .N = p->N, .u = u, .dt = dt,
                           .Bm = xdbl + p->R, .Cm = xdbl + p->R + p->N, .ld_bc = p->ld,
                           .dt_bias = p->bias, .A_log = p->A_log, .D = p->D};
}

/* regime 0: the model's initial values (delta 0.001 .. 0.1, A_log = log(1..N));
 * 1: dt + bias in [-1, 1], A_log in [-1, 1]; 2: dt + bias in [-30, 30] (both softplus branches,
 * states that forget within a step). */
static problem make_problem(int B, int L, int E, int N, int regime, ssm_dtype dt) {
    problem p = {B, L, E, N, 3, 3 + 2 * N + 1, 2 * E + 1, 0, 0, 0, 0, 0, 0, 0};
    size_t T = (size_t)B * L;
    p.u = falloc(T * E), p.dt = falloc(T * E), p.bias = falloc(E), p.A_log = falloc((size_t)E * N);
    p.xdbl = falloc(T * p.ld), p.D = falloc(E), p.xz = falloc(T * p.ldz);
    fill(p.u, T * E, -1, 1);
    fill(p.xdbl, T * p.ld, -1, 1);
    fill(p.D, E, 0.5f, 1.5f);
    fill(p.xz, T * p.ldz, -2.5f, 2.5f);
    if (regime == 0) {
        fill(p.dt, T * E, -0.05f, 0.05f);
        for (int e = 0; e < E; e++) {
            double d = exp(log(0.001) + urand() * (log(0.1) - log(0.001)));
            p.bias[e] = (float)(d + log(-expm1(-d))); /* inverse softplus */
            for (int n = 0; n < N; n++) p.A_log[(size_t)e * N + n] = logf((float)(n + 1));
        }
    } else {
        float s = regime == 1 ? 0.6f : 25.0f;
        fill(p.dt, T * E, -s, s);
        fill(p.bias, E, -0.4f * (regime == 1 ? 1 : 12), 0.4f * (regime == 1 ? 1 : 12));
        fill(p.A_log, (size_t)E * N, -1, 1);
    }
    if (dt == SSM_DTYPE_BF16) {
        round_bf16(p.u, T * E), round_bf16(p.dt, T * E), round_bf16(p.xdbl, T * p.ld);
        round_bf16(p.xz, T * p.ldz);
    }
    return p;
}
static void free_problem(problem *p) {
    free(p->u), free(p->dt), free(p->bias), free(p->A_log), free(p->xdbl), free(p->D), free(p->xz);
}

typedef struct {
    void *u, *dt, *xdbl, *xz;
    float *bias, *A_log, *D;
} dproblem;

static dproblem upload(const problem *p, ssm_dtype dt) {
    size_t T = (size_t)p->B * p->L;
    dproblem d;
    d.u = to_dev(p->u, T * p->E, dt);
    d.dt = to_dev(p->dt, T * p->E, dt);
    d.xdbl = to_dev(p->xdbl, T * p->ld, dt);
    d.xz = to_dev(p->xz, T * p->ldz, dt);
    d.bias = to_dev(p->bias, p->E, SSM_DTYPE_F32);
    d.A_log = to_dev(p->A_log, (size_t)p->E * p->N, SSM_DTYPE_F32);
    d.D = to_dev(p->D, p->E, SSM_DTYPE_F32);
    return d;
}
static void free_dproblem(dproblem *d) {
    cudaFree(d->u), cudaFree(d->dt), cudaFree(d->xdbl), cudaFree(d->xz);
    cudaFree(d->bias), cudaFree(d->A_log), cudaFree(d->D);
}

static ssm_scan_args scan_args(const problem *p, const dproblem *d, ssm_dtype dt, int gate,
                                int chunk) {
    size_t es = dt == SSM_DTYPE_F32 ? 4 : 2;
    ssm_scan_args a = {0};
    a.B = p->B, a.L = p->L, a.E = p->E, a.N = p->N, a.dtype = dt;
    a.u = d->u, a.dt = d->dt;
    a.Bm = (char *)d->xdbl + p->R * es, a.Cm = (char *)d->xdbl + (p->R + p->N) * es;
    a.ld_bc = p->ld;
    a.z = gate ? (char *)d->xz + p->E * es : NULL;
    a.ld_z = p->ldz;
    a.dt_bias = d->bias, a.A_log = d->A_log, a.D = d->D;
    a.chunk = chunk;
    return a;
}

static void *ws_alloc(size_t bytes) {
    void *w = NULL;
    if (bytes) {
        CK(cudaMalloc(&w, bytes));
        CK(cudaMemset(w, 0xff, bytes)); /* a workspace read before written shows as NaN */
    }
    return w;
}

static void test_scan_forward(int B, int L, int E, int N, int regime, int gate, int carry,
                              int chunk, ssm_dtype dt) {
    problem p = make_problem(B, L, E, N, regime, dt);
    size_t T = (size_t)B * L;
    /* CPU: y, then the gate */
    float *y = falloc(T * E), *out = falloc(T * E), *st = NULL, *st0 = NULL;
    if (carry) {
        st = falloc((size_t)B * E * N), st0 = falloc((size_t)B * E * N);
        fill(st0, (size_t)B * E * N, -1, 1);
        memcpy(st, st0, sizeof(float) * B * E * N);
    }
    ssm_scan_args ca = cpu_args(&p, p.u, p.dt, p.xdbl, B, L);
    cpu_scan_forward(&ca, y, st);
    if (gate) cpu_gate_forward(out, y, p.xz + E, p.ldz, (int)T, E);
    else memcpy(out, y, sizeof(float) * T * E);
    /* GPU, with 1, 2 and 4 threads per channel (4 falls back to 2 for N <= 8) */
    dproblem d = upload(&p, dt);
    for (int split = 1; split <= 4; split *= 2) {
        ssm_scan_args a = scan_args(&p, &d, dt, gate, chunk);
        a.split = split;
        void *dy = dev_poisoned(T * E, dt);
        float *dst = carry ? to_dev(st0, (size_t)B * E * N, SSM_DTYPE_F32) : NULL;
        size_t wsb = cuda_scan_forward_workspace(&a);
        void *ws = ws_alloc(wsb);
        OK(cuda_scan_forward(&a, dy, dst, ws, wsb, 0));
        CK(cudaGetLastError());
        float *gy = from_dev(dy, T * E, dt);
        int ok = 1;
        printf("scan_forward  %-4s B=%d L=%-7d E=%-4d N=%-2d regime=%d gate=%d carry=%d chunk=%-4d "
               "split=%d ws=%zuB:", dtname(dt), B, L, E, N, regime, gate, carry, chunk, split, wsb);
        double bound = dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2;
        report("out", rel_err(gy, out, T * E), bound, &ok);
        if (carry) {
            float *gs = from_dev(dst, (size_t)B * E * N, SSM_DTYPE_F32);
            report("state", rel_err(gs, st, (size_t)B * E * N), bound, &ok);
            free(gs);
        }
        end_case(ok);
        free(gy);
        cudaFree(dy), cudaFree(dst), cudaFree(ws);
    }
    free(y), free(out), free(st), free(st0);
    free_dproblem(&d);
    free_problem(&p);
}

/* g_saved: a training forward first saves the states (ssm_scan_args.ckpt), and the backward
 * reads them instead of recomputing them (where the shape allows: one chunk in both passes) */
static int g_saved;
/* g_bwd_split: 0 the plan's threads per channel in the backward, 1 or 2 forces that many */
static int g_bwd_split;

static void test_scan_backward(int B, int L, int E, int N, int regime, int gate, int chunk,
                               ssm_dtype dt) {
    problem p = make_problem(B, L, E, N, regime, dt);
    size_t T = (size_t)B * L;
    float *dout = falloc(T * E);
    fill(dout, T * E, -1, 1);
    if (dt == SSM_DTYPE_BF16) round_bf16(dout, T * E);
    /* CPU: the gate's backward, then the scan's */
    float *y = falloc(T * E), *dy = falloc(T * E), *dxz = falloc(T * p.ldz);
    ssm_scan_args ca = cpu_args(&p, p.u, p.dt, p.xdbl, B, L);
    cpu_scan_forward(&ca, y, NULL);
    if (gate) cpu_gate_backward(dy, dxz + E, p.ldz, dout, y, p.xz + E, (int)T, E);
    else memcpy(dy, dout, sizeof(float) * T * E);
    float *du = falloc(T * E), *ddt = falloc(T * E), *dxdbl = falloc(T * p.ld);
    float *dbias0 = falloc(E), *dAlog0 = falloc((size_t)E * N), *dD0 = falloc(E);
    fill(dbias0, E, -1, 1), fill(dAlog0, (size_t)E * N, -1, 1), fill(dD0, E, -1, 1);
    float *dbias = falloc(E), *dAlog = falloc((size_t)E * N), *dD = falloc(E);
    memcpy(dbias, dbias0, 4 * E), memcpy(dAlog, dAlog0, 4 * (size_t)E * N), memcpy(dD, dD0, 4 * E);
    int threads = omp_get_max_threads();
    float *scratch = falloc((size_t)threads * CPU_SCAN_SCRATCH(L, N));
    float *partial = falloc((size_t)threads * T * 2 * N);
    cpu_scan_backward(&ca, dy, du, ddt, dxdbl + p.R, dxdbl + p.R + N, dbias, dAlog, dD, scratch,
                      partial, threads);
    free(scratch), free(partial);
    /* GPU */
    dproblem d = upload(&p, dt);
    ssm_scan_args a = scan_args(&p, &d, dt, gate, chunk);
    a.split = g_bwd_split;
    size_t es = dt == SSM_DTYPE_F32 ? 4 : 2;
    void *g_dout = to_dev(dout, T * E, dt);
    void *g_du = dev_poisoned(T * E, dt), *g_ddt = dev_poisoned(T * E, dt);
    void *g_dxdbl = dev_poisoned(T * p.ld, dt), *g_dxz = dev_poisoned(T * p.ldz, dt);
    float *g_dbias = to_dev(dbias0, E, SSM_DTYPE_F32), *g_dAlog = to_dev(dAlog0, (size_t)E * N, SSM_DTYPE_F32);
    float *g_dD = to_dev(dD0, E, SSM_DTYPE_F32);
    size_t ckb = g_saved ? cuda_scan_checkpoint_bytes(&a) : 0;
    if (ckb) { /* the forward, from the zero state, saves the states (poisoned before) */
        a.ckpt = ws_alloc(ckb);
        void *g_y = dev_poisoned(T * E, dt);
        size_t fwb = cuda_scan_forward_workspace(&a);
        void *fws = ws_alloc(fwb);
        OK(cuda_scan_forward(&a, g_y, NULL, fws, fwb, 0));
        cudaFree(g_y), cudaFree(fws);
    }
    size_t wsb = cuda_scan_backward_workspace(&a);
    void *ws = ws_alloc(wsb);
    OK(cuda_scan_backward(&a, g_dout, g_du, g_ddt, (char *)g_dxdbl + p.R * es,
                          (char *)g_dxdbl + (p.R + N) * es, gate ? (char *)g_dxz + E * es : NULL,
                          g_dbias, g_dAlog, g_dD, ws, wsb, 0));
    CK(cudaGetLastError());
    float *h_du = from_dev(g_du, T * E, dt), *h_ddt = from_dev(g_ddt, T * E, dt);
    float *h_dx = from_dev(g_dxdbl, T * p.ld, dt), *h_dxz = from_dev(g_dxz, T * p.ldz, dt);
    float *h_dbias = from_dev(g_dbias, E, SSM_DTYPE_F32), *h_dAlog = from_dev(g_dAlog, (size_t)E * N, SSM_DTYPE_F32);
    float *h_dD = from_dev(g_dD, E, SSM_DTYPE_F32);
    /* the accumulated gradients: compare the increments */
    for (int e = 0; e < E; e++) h_dbias[e] -= dbias0[e], dbias[e] -= dbias0[e], h_dD[e] -= dD0[e], dD[e] -= dD0[e];
    for (size_t i = 0; i < (size_t)E * N; i++) h_dAlog[i] -= dAlog0[i], dAlog[i] -= dAlog0[i];
    int ok = 1;
    double bound = dt == SSM_DTYPE_F32 ? 1e-4 : 1e-2;
    printf("scan_backward %-4s B=%d L=%-7d E=%-4d N=%-2d regime=%d gate=%d chunk=%-4d ws=%zuB%s%s:",
           dtname(dt), B, L, E, N, regime, gate, chunk, wsb, ckb ? " saved" : "",
           g_bwd_split == 1 ? " split=1" : g_bwd_split == 2 ? " split=2" : "");
    report("du", rel_err(h_du, du, T * E), bound, &ok);
    report("ddt", rel_err(h_ddt, ddt, T * E), bound, &ok);
    report("dB", rel_err2(h_dx + p.R, p.ld, dxdbl + p.R, p.ld, T, N), bound, &ok);
    report("dC", rel_err2(h_dx + p.R + N, p.ld, dxdbl + p.R + N, p.ld, T, N), bound, &ok);
    if (gate) report("dz", rel_err2(h_dxz + E, p.ldz, dxz + E, p.ldz, T, E), bound, &ok);
    report("d_dt_bias", rel_err(h_dbias, dbias, E), bound, &ok);
    report("dA_log", rel_err(h_dAlog, dAlog, (size_t)E * N), bound, &ok);
    report("dD", rel_err(h_dD, dD, E), bound, &ok);
    end_case(ok);
    free(dout), free(y), free(dy), free(dxz), free(du), free(ddt), free(dxdbl);
    free(dbias0), free(dAlog0), free(dD0), free(dbias), free(dAlog), free(dD);
    free(h_du), free(h_ddt), free(h_dx), free(h_dxz), free(h_dbias), free(h_dAlog), free(h_dD);
    cudaFree(g_dout), cudaFree(g_du), cudaFree(g_ddt), cudaFree(g_dxdbl), cudaFree(g_dxz);
    cudaFree(g_dbias), cudaFree(g_dAlog), cudaFree(g_dD), cudaFree(ws), cudaFree(a.ckpt);
    free_dproblem(&d);
    free_problem(&p);
}

/* Step mode: S single steps from a random state, against the CPU step and against the GPU's
 * own parallel forward with carried state (docs/architecture.md, 'Accuracy': they
 * agree to rounding). */
static void test_scan_step(int B, int E, int N, int S, int gate, ssm_dtype dt) {
    problem p = make_problem(B, S, E, N, 1, dt); /* rows b * S + s */
    size_t es = dt == SSM_DTYPE_F32 ? 4 : 2;
    float *st0 = falloc((size_t)B * E * N), *st = falloc((size_t)B * E * N);
    fill(st0, (size_t)B * E * N, -1, 1);
    memcpy(st, st0, 4 * (size_t)B * E * N);
    dproblem d = upload(&p, dt);
    float *g_st = to_dev(st0, (size_t)B * E * N, SSM_DTYPE_F32);
    float *g_st2 = to_dev(st0, (size_t)B * E * N, SSM_DTYPE_F32);
    /* step s reads rows (b, s): gather them into (B, .) buffers on the host */
    float *us = falloc((size_t)B * E), *dts = falloc((size_t)B * E), *bc = falloc((size_t)B * p.ld);
    float *zs = falloc((size_t)B * E), *ys = falloc((size_t)B * E), *ycpu = falloc((size_t)S * B * E);
    float *ygpu = falloc((size_t)S * B * E);
    void *g_y = dev_poisoned((size_t)B * E, dt);
    for (int s = 0; s < S; s++) {
        for (int b = 0; b < B; b++) {
            size_t t = (size_t)b * S + s;
            memcpy(us + (size_t)b * E, p.u + t * E, 4 * E);
            memcpy(dts + (size_t)b * E, p.dt + t * E, 4 * E);
            memcpy(bc + (size_t)b * p.ld, p.xdbl + t * p.ld, 4 * p.ld);
            memcpy(zs + (size_t)b * E, p.xz + t * p.ldz + E, 4 * E);
        }
        ssm_scan_args ca = cpu_args(&p, us, dts, bc, B, 1);
        cpu_scan_step(&ca, ys, st);
        if (gate) cpu_gate_forward(ys, ys, zs, E, B, E);
        memcpy(ycpu + (size_t)s * B * E, ys, 4 * (size_t)B * E);
        void *g_u = to_dev(us, (size_t)B * E, dt), *g_dt = to_dev(dts, (size_t)B * E, dt);
        void *g_bc = to_dev(bc, (size_t)B * p.ld, dt), *g_z = to_dev(zs, (size_t)B * E, dt);
        ssm_scan_args a = {0};
        a.B = B, a.L = 1, a.E = E, a.N = N, a.dtype = dt, a.u = g_u, a.dt = g_dt;
        a.Bm = (char *)g_bc + p.R * es, a.Cm = (char *)g_bc + (p.R + N) * es, a.ld_bc = p.ld;
        a.z = gate ? g_z : NULL, a.ld_z = E;
        a.dt_bias = d.bias, a.A_log = d.A_log, a.D = d.D;
        CK(cudaMemset(g_y, 0xff, (size_t)B * E * es));
        OK(cuda_scan_step(&a, g_y, g_st, 0));
        float *h = from_dev(g_y, (size_t)B * E, dt);
        memcpy(ygpu + (size_t)s * B * E, h, 4 * (size_t)B * E);
        free(h);
        cudaFree(g_u), cudaFree(g_dt), cudaFree(g_bc), cudaFree(g_z);
    }
    /* the parallel forward over the same S rows per sequence, carrying the same state */
    ssm_scan_args a = scan_args(&p, &d, dt, gate, 0);
    void *g_yp = dev_poisoned((size_t)B * S * E, dt);
    size_t wsb = cuda_scan_forward_workspace(&a);
    void *ws = ws_alloc(wsb);
    OK(cuda_scan_forward(&a, g_yp, g_st2, ws, wsb, 0));
    float *yp = from_dev(g_yp, (size_t)B * S * E, dt); /* rows b * S + s */
    float *ypt = falloc((size_t)S * B * E);            /* to rows s * B + b */
    for (int s = 0; s < S; s++)
        for (int b = 0; b < B; b++)
            memcpy(ypt + ((size_t)s * B + b) * E, yp + ((size_t)b * S + s) * E, 4 * E);
    float *gst = from_dev(g_st, (size_t)B * E * N, SSM_DTYPE_F32);
    float *gst2 = from_dev(g_st2, (size_t)B * E * N, SSM_DTYPE_F32);
    int ok = 1;
    double bound = dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2;
    printf("scan_step     %-4s B=%d steps=%d E=%-4d N=%-2d gate=%d:", dtname(dt), B, S, E, N, gate);
    report("out/cpu", rel_err(ygpu, ycpu, (size_t)S * B * E), bound, &ok);
    report("state/cpu", rel_err(gst, st, (size_t)B * E * N), bound, &ok);
    report("out/parallel", rel_err(ygpu, ypt, (size_t)S * B * E), bound, &ok);
    report("state/parallel", rel_err(gst, gst2, (size_t)B * E * N), 1e-5, &ok);
    end_case(ok);
    free(st0), free(st), free(us), free(dts), free(bc), free(zs), free(ys), free(ycpu), free(ygpu);
    free(yp), free(ypt), free(gst), free(gst2);
    cudaFree(g_st), cudaFree(g_st2), cudaFree(g_y), cudaFree(g_yp), cudaFree(ws);
    free_dproblem(&d);
    free_problem(&p);
}

/* ---- conv -------------------------------------------------------------------------------- */

static void test_conv(int B, int L, int E, int K, int carry, ssm_dtype dt) {
    size_t T = (size_t)B * L;
    int ld_x = 2 * E + 3;
    float *x = falloc(T * ld_x), *w = falloc((size_t)E * K), *b = falloc(E);
    fill(x, T * ld_x, -2, 2), fill(w, (size_t)E * K, -0.7f, 0.7f), fill(b, E, -0.5f, 0.5f);
    if (dt == SSM_DTYPE_BF16) round_bf16(x, T * ld_x);
    float *st0 = NULL, *st = NULL;
    if (carry) {
        st0 = falloc((size_t)B * E * K), st = falloc((size_t)B * E * K);
        fill(st0, (size_t)B * E * K, -2, 2);
        if (dt == SSM_DTYPE_BF16) round_bf16(st0, (size_t)B * E * K);
        memcpy(st, st0, 4 * (size_t)B * E * K);
    }
    float *u = falloc(T * E);
    cpu_conv_forward(u, x, ld_x, w, b, st, B, L, E, K);
    if (carry) cpu_conv_state_update(st, x, ld_x, B, L, E, K);
    void *g_x = to_dev(x, T * ld_x, dt);
    float *g_w = to_dev(w, (size_t)E * K, SSM_DTYPE_F32), *g_b = to_dev(b, E, SSM_DTYPE_F32);
    float *g_st = carry ? to_dev(st0, (size_t)B * E * K, SSM_DTYPE_F32) : NULL;
    void *g_u = dev_poisoned(T * E, dt);
    OK(cuda_conv_forward(g_u, g_x, ld_x, g_w, g_b, g_st, B, L, E, K, dt, 0));
    if (carry) OK(cuda_conv_state_update(g_st, g_x, ld_x, B, L, E, K, dt, 0));
    CK(cudaGetLastError());
    float *gu = from_dev(g_u, T * E, dt);
    int ok = 1;
    double bound = dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2;
    printf("conv_forward  %-4s B=%d L=%-7d E=%-4d K=%d carry=%d:", dtname(dt), B, L, E, K, carry);
    report("u", rel_err(gu, u, T * E), bound, &ok);
    if (carry) {
        float *gs = from_dev(g_st, (size_t)B * E * K, SSM_DTYPE_F32);
        report("state", rel_err(gs, st, (size_t)B * E * K), 1e-6, &ok);
        free(gs);
    }
    end_case(ok);
    /* backward (zero initial state) */
    if (!carry) {
        float *du = falloc(T * E), *dx = falloc(T * ld_x);
        fill(du, T * E, -1, 1);
        if (dt == SSM_DTYPE_BF16) round_bf16(du, T * E);
        float *dw0 = falloc((size_t)E * K), *db0 = falloc(E), *dw = falloc((size_t)E * K), *db = falloc(E);
        fill(dw0, (size_t)E * K, -1, 1), fill(db0, E, -1, 1);
        memcpy(dw, dw0, 4 * (size_t)E * K), memcpy(db, db0, 4 * E);
        cpu_conv_backward(dx, dw, db, du, x, ld_x, w, b, B, L, E, K);
        void *g_du = to_dev(du, T * E, dt), *g_dx = dev_poisoned(T * ld_x, dt);
        float *g_dw = to_dev(dw0, (size_t)E * K, SSM_DTYPE_F32), *g_db = to_dev(db0, E, SSM_DTYPE_F32);
        size_t wsb = cuda_conv_backward_workspace(B, L, E, K);
        void *ws = ws_alloc(wsb);
        OK(cuda_conv_backward(g_dx, g_dw, g_db, g_du, g_x, ld_x, g_w, g_b, B, L, E, K, dt, ws, wsb, 0));
        float *hdx = from_dev(g_dx, T * ld_x, dt), *hdw = from_dev(g_dw, (size_t)E * K, SSM_DTYPE_F32);
        float *hdb = from_dev(g_db, E, SSM_DTYPE_F32);
        for (size_t i = 0; i < (size_t)E * K; i++) hdw[i] -= dw0[i], dw[i] -= dw0[i];
        for (int e = 0; e < E; e++) hdb[e] -= db0[e], db[e] -= db0[e];
        ok = 1;
        double bb = dt == SSM_DTYPE_F32 ? 1e-4 : 1e-2;
        printf("conv_backward %-4s B=%d L=%-7d E=%-4d K=%d:", dtname(dt), B, L, E, K);
        report("dx", rel_err2(hdx, ld_x, dx, ld_x, T, E), bb, &ok);
        report("dw", rel_err(hdw, dw, (size_t)E * K), bb, &ok);
        report("db", rel_err(hdb, db, E), bb, &ok);
        end_case(ok);
        free(du), free(dx), free(dw0), free(db0), free(dw), free(db), free(hdx), free(hdw), free(hdb);
        cudaFree(g_du), cudaFree(g_dx), cudaFree(g_dw), cudaFree(g_db), cudaFree(ws);
    }
    free(x), free(w), free(b), free(st0), free(st), free(u), free(gu);
    cudaFree(g_x), cudaFree(g_w), cudaFree(g_b), cudaFree(g_st), cudaFree(g_u);
}

/* conv step mode: S steps against the CPU step and against the GPU forward + state update */
static void test_conv_step(int B, int E, int K, int S, ssm_dtype dt) {
    int ld_x = E + 5;
    float *x = falloc((size_t)B * S * ld_x), *w = falloc((size_t)E * K), *b = falloc(E);
    fill(x, (size_t)B * S * ld_x, -2, 2), fill(w, (size_t)E * K, -0.7f, 0.7f), fill(b, E, -0.5f, 0.5f);
    if (dt == SSM_DTYPE_BF16) round_bf16(x, (size_t)B * S * ld_x);
    float *st0 = falloc((size_t)B * E * K), *st = falloc((size_t)B * E * K);
    fill(st0, (size_t)B * E * K, -2, 2);
    if (dt == SSM_DTYPE_BF16) round_bf16(st0, (size_t)B * E * K);
    memcpy(st, st0, 4 * (size_t)B * E * K);
    float *g_w = to_dev(w, (size_t)E * K, SSM_DTYPE_F32), *g_b = to_dev(b, E, SSM_DTYPE_F32);
    float *g_st = to_dev(st0, (size_t)B * E * K, SSM_DTYPE_F32);
    float *xs = falloc((size_t)B * ld_x), *us = falloc((size_t)B * E);
    float *ucpu = falloc((size_t)S * B * E), *ugpu = falloc((size_t)S * B * E);
    void *g_u = dev_poisoned((size_t)B * E, dt);
    size_t es = dt == SSM_DTYPE_F32 ? 4 : 2;
    for (int s = 0; s < S; s++) {
        for (int bb = 0; bb < B; bb++) memcpy(xs + (size_t)bb * ld_x, x + ((size_t)bb * S + s) * ld_x, 4 * ld_x);
        cpu_conv_step(us, st, xs, ld_x, w, b, B, E, K);
        memcpy(ucpu + (size_t)s * B * E, us, 4 * (size_t)B * E);
        void *g_xs = to_dev(xs, (size_t)B * ld_x, dt);
        CK(cudaMemset(g_u, 0xff, (size_t)B * E * es));
        OK(cuda_conv_step(g_u, g_st, g_xs, ld_x, g_w, g_b, B, E, K, dt, 0));
        float *h = from_dev(g_u, (size_t)B * E, dt);
        memcpy(ugpu + (size_t)s * B * E, h, 4 * (size_t)B * E);
        free(h);
        cudaFree(g_xs);
    }
    /* parallel: forward over the S rows with the carried state, then the state update */
    void *g_x = to_dev(x, (size_t)B * S * ld_x, dt), *g_up = dev_poisoned((size_t)B * S * E, dt);
    float *g_st2 = to_dev(st0, (size_t)B * E * K, SSM_DTYPE_F32);
    OK(cuda_conv_forward(g_up, g_x, ld_x, g_w, g_b, g_st2, B, S, E, K, dt, 0));
    OK(cuda_conv_state_update(g_st2, g_x, ld_x, B, S, E, K, dt, 0));
    float *up = from_dev(g_up, (size_t)B * S * E, dt), *upt = falloc((size_t)S * B * E);
    for (int s = 0; s < S; s++)
        for (int bb = 0; bb < B; bb++)
            memcpy(upt + ((size_t)s * B + bb) * E, up + ((size_t)bb * S + s) * E, 4 * E);
    float *gst = from_dev(g_st, (size_t)B * E * K, SSM_DTYPE_F32);
    float *gst2 = from_dev(g_st2, (size_t)B * E * K, SSM_DTYPE_F32);
    int ok = 1;
    double bound = dt == SSM_DTYPE_F32 ? 1e-5 : 1e-2;
    printf("conv_step     %-4s B=%d steps=%d E=%-4d K=%d:", dtname(dt), B, S, E, K);
    report("u/cpu", rel_err(ugpu, ucpu, (size_t)S * B * E), bound, &ok);
    report("state/cpu", rel_err(gst, st, (size_t)B * E * K), 1e-6, &ok);
    report("u/parallel", rel_err(ugpu, upt, (size_t)S * B * E), bound, &ok);
    report("state/parallel", rel_err(gst, gst2, (size_t)B * E * K), 1e-6, &ok);
    end_case(ok);
    free(x), free(w), free(b), free(st0), free(st), free(xs), free(us), free(ucpu), free(ugpu);
    free(up), free(upt), free(gst), free(gst2);
    cudaFree(g_w), cudaFree(g_b), cudaFree(g_st), cudaFree(g_u), cudaFree(g_x), cudaFree(g_up);
    cudaFree(g_st2);
}

int main(int argc, char **argv) {
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_gpu_scan: no CUDA device: skipped\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    const ssm_dtype dts[2] = {SSM_DTYPE_F32, SSM_DTYPE_BF16};
    for (int di = 0; di < 2; di++) {
        ssm_dtype dt = dts[di];
        /* forward: B, L, E, N, regime, gate, carry, chunk */
        test_scan_forward(3, 1, 37, 16, 1, 0, 0, 0, dt);
        test_scan_forward(3, 1, 37, 5, 1, 1, 1, 0, dt);
        test_scan_forward(3, 100, 37, 5, 1, 1, 1, 32, dt);   /* 4 chunks, last one short */
        test_scan_forward(3, 100, 37, 16, 0, 0, 1, 100, dt); /* one chunk */
        test_scan_forward(2, 1000, 64, 16, 1, 1, 0, 0, dt);  /* automatic chunking */
        test_scan_forward(8, 333, 96, 16, 2, 1, 1, 50, dt);  /* extreme dt, 7 chunks */
        test_scan_forward(3, 77, 33, 32, 1, 1, 1, 0, dt);    /* N = 32 */
        test_scan_forward(4, 517, 100, 8, 0, 0, 1, 0, dt);   /* N = 8 exactly */
        test_scan_forward(48, 64, 1536, 16, 1, 1, 0, 0, dt); /* enough warps: one pass */
        /* backward: B, L, E, N, regime, gate, chunk */
        test_scan_backward(3, 1, 37, 16, 1, 0, 0, dt);
        test_scan_backward(3, 1, 37, 5, 1, 1, 0, dt);
        test_scan_backward(3, 100, 37, 5, 1, 1, 32, dt);   /* chunked, short sub-chunks */
        test_scan_backward(3, 100, 37, 16, 1, 0, 100, dt); /* one chunk */
        test_scan_backward(2, 1000, 64, 16, 0, 1, 0, dt);  /* automatic chunking */
        test_scan_backward(2, 250, 40, 16, 2, 1, 45, dt);  /* extreme dt */
        test_scan_backward(3, 77, 33, 32, 1, 1, 0, dt);    /* N = 32 */
        test_scan_backward(4, 300, 100, 8, 1, 0, 0, dt);
        test_scan_backward(48, 64, 1536, 16, 1, 1, 0, dt); /* one pass */
        /* the states saved by the forward (split 1 and 2 forwards, N = 5, 16, 32) */
        g_saved = 1;
        test_scan_backward(3, 100, 37, 16, 1, 0, 100, dt);
        test_scan_backward(3, 100, 37, 5, 1, 1, 100, dt);
        test_scan_backward(3, 77, 33, 32, 1, 1, 77, dt);
        test_scan_backward(48, 64, 1536, 16, 1, 1, 0, dt);
        test_scan_backward(16, 333, 1536, 16, 2, 1, 0, dt);
        g_saved = 0;
        /* one thread per channel in the backward (the plan takes two) */
        g_bwd_split = 1;
        test_scan_backward(3, 100, 37, 5, 1, 1, 32, dt);
        test_scan_backward(2, 1000, 64, 16, 0, 1, 0, dt);
        test_scan_backward(3, 77, 33, 32, 1, 1, 0, dt);
        g_saved = 1;
        test_scan_backward(16, 333, 1536, 16, 2, 1, 0, dt);
        /* two threads per channel forced where the plan takes one (chunked, N = 5, 32) */
        g_saved = 0, g_bwd_split = 2;
        test_scan_backward(3, 100, 37, 5, 1, 1, 32, dt);
        test_scan_backward(3, 77, 33, 32, 1, 1, 0, dt);
        test_scan_backward(2, 250, 40, 16, 2, 1, 45, dt);
        g_bwd_split = 0;
        /* step mode */
        test_scan_step(3, 37, 16, 5, 1, dt);
        test_scan_step(2, 37, 5, 3, 0, dt);
        /* conv: B, L, E, K, carry */
        test_conv(3, 1, 37, 4, 0, dt);
        test_conv(3, 1, 37, 4, 1, dt);
        test_conv(3, 2, 37, 4, 1, dt);
        test_conv(3, 300, 37, 4, 0, dt);
        test_conv(3, 300, 37, 4, 1, dt);
        test_conv(2, 129, 70, 3, 0, dt);
        test_conv(2, 129, 70, 7, 1, dt);
        test_conv(2, 200, 33, 7, 0, dt);
        test_conv(2, 100, 33, 20, 0, dt);
        test_conv_step(3, 37, 4, 6, dt);
    }
    if (!quick) {
        /* the scan forward over a million steps in one sequence (fp32 and bf16) */
        test_scan_forward(1, 1048576, 37, 16, 0, 1, 1, 0, SSM_DTYPE_F32);
        test_scan_forward(1, 1048576, 37, 16, 1, 0, 0, 0, SSM_DTYPE_BF16);
    }
    return gpu_test_result();
}
