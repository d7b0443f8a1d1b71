/* test_gpu_ssd.c: the Mamba-2 ops on the GPU (libssm/cuda/ssd.cu, gated_norm.cu) against
 * their CPU twins (libssm/cpu/ssd.c, gated_norm.c) on random inputs of awkward sizes: L not a
 * multiple of the chunk or of the GPU's staging (16 rows), L = 1, ngroups 1 and 2 (and 3 for
 * the norm), headdim 8 to 64 (24: a partial channel tile), d_state 16 to 128, a dt_limit that
 * clamps, a carried state, wide row strides (x, B, C inside one xBC row; dt a column of a
 * wider row).
 *
 * Both sides read the same bf16-rounded inputs; every GPU output is poisoned with NaN first
 * (an unwritten element fails), accumulated gradients start from the same random values.
 * Errors are relative norms ||gpu - cpu|| / ||cpu||. Bounds: 1e-2 on bf16 outputs (the store's
 * rounding is 2^-9 relative; the sums differ in order only), 1e-3 on the fp32 state, 2e-2 on
 * the backward's bf16 gradients and 1e-2 on its fp32 parameter sums (the GPU obtains the
 * log-decay's gradient as a suffix sum of differences, the CPU per chunk).
 * Exit status: 0 all passed, 1 a check failed, 77 no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cpu_ops.h"
#include "gated_norm.h"
#include "gpu_test.h"
#include "ssd.h"
#include "ssm/cuda_ops.h"


static float *rand_bf16(size_t n, float lo, float hi) {
    float *x = falloc(n);
    fill(x, n, lo, hi);
    round_bf16(x, n);
    return x;
}

/* one SSD case: forward (with and without a carried state), backward, and the step */
static void test_ssd(int B, int L, int H, int P, int G, int N, float dt_min, float dt_max) {
    const int I = H * P, GN = G * N, CD = I + 2 * GN, ld_dt = H + 3;
    const size_t T = (size_t)B * L, S = (size_t)B * H * P * N;
    int ok = 1;
    printf("ssd B%d L%d H%d P%d G%d N%d dt [%g, %g]:", B, L, H, P, G, N, dt_min, dt_max);
    float *xbc = rand_bf16(T * CD, -1.0f, 1.0f), *dt = rand_bf16(T * ld_dt, -3.0f, 1.0f);
    float *dy = rand_bf16(T * I, -1.0f, 1.0f);
    float dt_bias[64], A_log[64], Dk[64];
    fill(dt_bias, H, -1.0f, 0.5f);
    fill(A_log, H, -1.0f, 1.5f);
    fill(Dk, H, 0.5f, 1.5f);
    float *state0 = falloc(S);
    fill(state0, S, -0.5f, 0.5f);

    cpu_ssd_args c = {0};
    c.B = B, c.L = L, c.H = H, c.P = P, c.G = G, c.N = N, c.chunk = 64;
    c.dt_min = dt_min, c.dt_max = dt_max;
    c.x = xbc, c.Bm = xbc + I, c.Cm = xbc + I + GN, c.ld_x = CD, c.dt = dt, c.ld_dt = ld_dt;
    c.dt_bias = dt_bias, c.A_log = A_log, c.Dskip = Dk, c.ld_y = I;
    c.scratch_floats = cpu_ssd_scratch_floats(&c, 0, 1);
    c.scratch = falloc(c.scratch_floats);
    float *y_c = falloc(T * I), *state_c = falloc(S);

    void *d_xbc = to_dev(xbc, T * CD, SSM_DTYPE_BF16), *d_dt = to_dev(dt, T * ld_dt, SSM_DTYPE_BF16);
    float *d_bias = to_dev(dt_bias, H, SSM_DTYPE_F32), *d_alog = to_dev(A_log, H, SSM_DTYPE_F32),
          *d_D = to_dev(Dk, H, SSM_DTYPE_F32);
    void *d_y = dev_poisoned(T * I, SSM_DTYPE_BF16);
    cuda_ssd_args g = {0};
    g.B = B, g.L = L, g.H = H, g.P = P, g.G = G, g.N = N, g.dt_min = dt_min, g.dt_max = dt_max;
    g.x = d_xbc, g.Bm = (uint16_t *)d_xbc + I, g.Cm = (uint16_t *)d_xbc + I + GN, g.ld_x = CD;
    g.dt = d_dt, g.ld_dt = ld_dt, g.dt_bias = d_bias, g.A_log = d_alog, g.Dskip = d_D;
    g.y = d_y, g.ld_y = I;

    /* forward from zero */
    c.y = y_c, c.state = NULL;
    cpu_ssd_forward_recurrent(&c);
    OK(cuda_ssd_forward(&g, 0));
    float *y_g = from_dev(d_y, T * I, SSM_DTYPE_BF16);
    report("y", rel_err(y_g, y_c, T * I), 1e-2, &ok);
    free(y_g);

    /* forward from a carried state */
    memcpy(state_c, state0, S * sizeof(float));
    c.state = state_c;
    cpu_ssd_forward_recurrent(&c);
    float *d_state = to_dev(state0, S, SSM_DTYPE_F32);
    CK(cudaMemset(d_y, 0xff, T * I * 2));
    g.state = d_state;
    OK(cuda_ssd_forward(&g, 0));
    y_g = from_dev(d_y, T * I, SSM_DTYPE_BF16);
    float *st_g = from_dev(d_state, S, SSM_DTYPE_F32);
    report("y|state", rel_err(y_g, y_c, T * I), 1e-2, &ok);
    report("state", rel_err(st_g, state_c, S), 1e-3, &ok);
    free(y_g), free(st_g);

    /* the step: row b of each input, L = 1 */
    {
        cpu_ssd_args cs = c;
        cs.L = 1, cs.ld_x = (int)(L * CD), cs.ld_dt = L * ld_dt, cs.ld_y = L * I; /* row b = b * L */
        memcpy(state_c, state0, S * sizeof(float));
        cs.state = state_c, cs.y = y_c;
        cpu_ssd_step(&cs);
        CK(cudaMemcpy(d_state, state0, S * sizeof(float), cudaMemcpyHostToDevice));
        CK(cudaMemset(d_y, 0xff, T * I * 2));
        cuda_ssd_args gs = g;
        gs.L = 1, gs.ld_x = L * CD, gs.ld_dt = L * ld_dt, gs.ld_y = L * I;
        OK(cuda_ssd_step(&gs, 0));
        y_g = from_dev(d_y, T * I, SSM_DTYPE_BF16);
        st_g = from_dev(d_state, S, SSM_DTYPE_F32);
        report("step y", rel_err2(y_g, (size_t)L * I, y_c, (size_t)L * I, B, I), 1e-2, &ok);
        report("step state", rel_err(st_g, state_c, S), 1e-3, &ok);
        free(y_g), free(st_g);
    }

    /* backward from zero */
    float *dxbc_c = falloc(T * CD), *ddt_c = falloc(T * ld_dt);
    float pg[3][64];
    fill(pg[0], H, -1, 1), fill(pg[1], H, -1, 1), fill(pg[2], H, -1, 1);
    float pc[3][64];
    memcpy(pc, pg, sizeof pc);
    c.state = NULL, c.y = NULL, c.dy = dy;
    c.dx = dxbc_c, c.dBm = dxbc_c + I, c.dCm = dxbc_c + I + GN, c.ddt = ddt_c;
    c.d_dt_bias = pc[0], c.dA_log = pc[1], c.dD = pc[2];
    cpu_ssd_backward(&c);
    void *d_dy = to_dev(dy, T * I, SSM_DTYPE_BF16), *d_dxbc = dev_poisoned(T * CD, SSM_DTYPE_BF16),
         *d_ddt = dev_poisoned(T * ld_dt, SSM_DTYPE_BF16);
    float *d_p0 = to_dev(pg[0], H, SSM_DTYPE_F32), *d_p1 = to_dev(pg[1], H, SSM_DTYPE_F32),
          *d_p2 = to_dev(pg[2], H, SSM_DTYPE_F32);
    g.state = NULL, g.dy = d_dy;
    g.dx = d_dxbc, g.dBm = (uint16_t *)d_dxbc + I, g.dCm = (uint16_t *)d_dxbc + I + GN, g.ddt = d_ddt;
    g.d_dt_bias = d_p0, g.dA_log = d_p1, g.dD = d_p2;
    size_t wsb = cuda_ssd_backward_workspace(&g);
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    CK(cudaMemset(ws, 0xff, wsb));
    OK(cuda_ssd_backward(&g, ws, wsb, 0));
    float *dx_g = from_dev(d_dxbc, T * CD, SSM_DTYPE_BF16), *ddt_g = from_dev(d_ddt, T * ld_dt, SSM_DTYPE_BF16);
    report("dx", rel_err2(dx_g, CD, dxbc_c, CD, T, I), 2e-2, &ok);
    report("dB", rel_err2(dx_g + I, CD, dxbc_c + I, CD, T, GN), 2e-2, &ok);
    report("dC", rel_err2(dx_g + I + GN, CD, dxbc_c + I + GN, CD, T, GN), 2e-2, &ok);
    report("ddt", rel_err2(ddt_g, ld_dt, ddt_c, ld_dt, T, H), 2e-2, &ok);
    const char *pn[3] = {"d_dt_bias", "dA_log", "dD"};
    float *dp[3] = {d_p0, d_p1, d_p2};
    for (int k = 0; k < 3; k++) {
        float *v = from_dev(dp[k], H, SSM_DTYPE_F32);
        report(pn[k], rel_err(v, pc[k], H), 1e-2, &ok);
        free(v);
    }
    end_case(ok);
    free(dx_g), free(ddt_g), free(dxbc_c), free(ddt_c);
    cudaFree(ws), cudaFree(d_dy), cudaFree(d_dxbc), cudaFree(d_ddt), cudaFree(d_p0), cudaFree(d_p1), cudaFree(d_p2);
    cudaFree(d_xbc), cudaFree(d_dt), cudaFree(d_bias), cudaFree(d_alog), cudaFree(d_D), cudaFree(d_y), cudaFree(d_state);
    free(xbc), free(dt), free(dy), free(state0), free(c.scratch), free(y_c), free(state_c);
}

/* the gated RMSNorm: T rows of I channels in G groups; z a column block of a wider row */
static void test_gated_norm(int T, int I, int G) {
    const int ld_z = I + 5;
    int ok = 1;
    printf("gated_rmsnorm T%d I%d G%d:", T, I, G);
    float *y = rand_bf16((size_t)T * I, -2, 2), *z = rand_bf16((size_t)T * ld_z, -3, 3);
    float *w = falloc(I), *gout = rand_bf16((size_t)T * I, -1, 1);
    fill(w, I, 0.5f, 1.5f);
    float *out_c = falloc((size_t)T * I), *rstd_c = falloc((size_t)T * G);
    cpu_gated_rmsnorm_forward(out_c, I, rstd_c, y, I, z, ld_z, w, T, I, G, 1e-5f);
    void *d_y = to_dev(y, (size_t)T * I, SSM_DTYPE_BF16), *d_z = to_dev(z, (size_t)T * ld_z, SSM_DTYPE_BF16);
    float *d_w = to_dev(w, I, SSM_DTYPE_F32);
    void *d_out = dev_poisoned((size_t)T * I, SSM_DTYPE_BF16);
    float *d_rstd = dev_poisoned((size_t)T * G, SSM_DTYPE_F32);
    OK(cuda_gated_rmsnorm_forward(d_out, I, d_rstd, d_y, I, d_z, ld_z, d_w, T, I, G, 1e-5f, 0));
    float *out_g = from_dev(d_out, (size_t)T * I, SSM_DTYPE_BF16), *rstd_g = from_dev(d_rstd, (size_t)T * G, SSM_DTYPE_F32);
    report("out", rel_err(out_g, out_c, (size_t)T * I), 1e-2, &ok);
    report("rstd", rel_err(rstd_g, rstd_c, (size_t)T * G), 1e-5, &ok);
    /* backward from the same rstd (the CPU's, on both sides) */
    float *dy_c = falloc((size_t)T * I), *dz_c = falloc((size_t)T * ld_z), *dw_c = falloc(I);
    fill(dw_c, I, -1, 1);
    float *dw_init = falloc(I);
    memcpy(dw_init, dw_c, I * sizeof(float));
    cpu_gated_rmsnorm_backward(dy_c, I, dz_c, ld_z, dw_c, gout, I, y, I, z, ld_z, w, rstd_c, T, I, G);
    void *d_g = to_dev(gout, (size_t)T * I, SSM_DTYPE_BF16), *d_dy = dev_poisoned((size_t)T * I, SSM_DTYPE_BF16),
         *d_dz = dev_poisoned((size_t)T * ld_z, SSM_DTYPE_BF16);
    float *d_dw = to_dev(dw_init, I, SSM_DTYPE_F32), *d_rc = to_dev(rstd_c, (size_t)T * G, SSM_DTYPE_F32);
    size_t wsb = cuda_gated_rmsnorm_backward_workspace(T, I);
    void *ws;
    CK(cudaMalloc(&ws, wsb));
    OK(cuda_gated_rmsnorm_backward(d_dy, I, d_dz, ld_z, d_dw, d_g, I, d_y, I, d_z, ld_z, d_w, d_rc, T, I, G, ws, wsb, 0));
    float *dy_g = from_dev(d_dy, (size_t)T * I, SSM_DTYPE_BF16), *dz_g = from_dev(d_dz, (size_t)T * ld_z, SSM_DTYPE_BF16);
    float *dw_g = from_dev(d_dw, I, SSM_DTYPE_F32);
    report("dy", rel_err(dy_g, dy_c, (size_t)T * I), 1e-2, &ok);
    report("dz", rel_err2(dz_g, ld_z, dz_c, ld_z, T, I), 1e-2, &ok);
    report("dw", rel_err(dw_g, dw_c, I), 1e-3, &ok);
    end_case(ok);
    free(y), free(z), free(w), free(gout), free(out_c), free(rstd_c), free(out_g), free(rstd_g);
    free(dy_c), free(dz_c), free(dw_c), free(dw_init), free(dy_g), free(dz_g), free(dw_g);
    cudaFree(d_y), cudaFree(d_z), cudaFree(d_w), cudaFree(d_out), cudaFree(d_rstd), cudaFree(d_g);
    cudaFree(d_dy), cudaFree(d_dz), cudaFree(d_dw), cudaFree(d_rc), cudaFree(ws);
}

int main(void) {
    rng_state = 0x5D2B4C1A9E37F00Dull;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_gpu_ssd: skipped: no CUDA device\n");
        return 77;
    }
    /* B, L, H, P, G, N, dt_limit */
    test_ssd(2, 77, 4, 8, 1, 16, 0.0f, INFINITY);
    test_ssd(3, 33, 4, 24, 2, 64, 0.0f, INFINITY);
    test_ssd(1, 300, 6, 64, 2, 128, 0.0f, INFINITY);
    test_ssd(2, 1, 2, 16, 1, 32, 0.0f, INFINITY);
    test_ssd(2, 130, 4, 32, 2, 48, 0.05f, 0.3f); /* the clamp bites on both sides */
    test_ssd(4, 515, 8, 64, 1, 128, 0.0f, INFINITY); /* the 130M head shape, several tiles */
    /* T, I, G */
    test_gated_norm(1, 16, 1);
    test_gated_norm(37, 96, 2);
    test_gated_norm(37, 99, 3);
    test_gated_norm(300, 1536, 1);
    return gpu_test_result();
}
