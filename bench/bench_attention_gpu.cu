// bench_attention_gpu: the CUDA attention op (libssm/cuda/attention.cu) at the hybrids' shapes,
// bf16, each figure beside its floor measured in the same run:
//   training (forward, forward + backward): causal flops / the bf16 tensor-core rate of a
//     cuBLAS GEMM 8192^3 (forward 2 B H L^2 hd: q k^T and p v over half the pairs; the
//     backward recomputes s and p and takes dv, dp, dq, dk: 2.5x the forward's flops more)
//   decode (L = 1 against an fp32 KV cache of n positions): the cache bytes read (2 n KD 4 per
//     sequence) / the device-to-device copy bandwidth (a large cudaMemcpy, read + write)
// Timing: CUDA events, warm-up first, the median of the repetitions.
//
//   bench_attention_gpu [--reps N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../tests/gpu/gpu_test.h"
#include "ssm/cuda_ops.h"

template <typename F> static double time_ms(F fn, int reps) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) fn();
    CK(cudaDeviceSynchronize());
    std::vector<float> t(reps);
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(a));
        fn();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&t[i], a, b));
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[reps / 2];
}

__global__ void fill_kernel(__nv_bfloat16 *x, size_t n, float r, uint32_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
        x[i] = __float2bfloat16(r * (2.0f * (h >> 8) * (1.0f / 16777216.0f) - 1.0f));
    }
}
static void *rand_bf16(size_t n, float r, uint32_t seed) {
    __nv_bfloat16 *p;
    CK(cudaMalloc(&p, n * 2 + 16));
    fill_kernel<<<4096, 256>>>(p, n, r, seed);
    CK(cudaGetLastError());
    return p;
}

static double gemm_tflops(int reps) {
    const int n = 8192;
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return NAN;
    void *a = rand_bf16((size_t)n * n, 1, 1), *b = rand_bf16((size_t)n * n, 1, 2), *c = rand_bf16((size_t)n * n, 1, 3);
    const float one = 1, zero = 0;
    double ms = time_ms([&] {
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                     CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }, reps);
    cudaFree(a), cudaFree(b), cudaFree(c);
    cublasDestroy(h);
    return 2.0 * n * n * (double)n / (ms * 1e-3) / 1e12;
}

static double copy_gbs(int reps) {
    const size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    double ms = time_ms([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, reps);
    cudaFree(a), cudaFree(b);
    return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

static void bench_training(int B, int L, int H, int Hkv, int hd, double peak, int reps) {
    const size_t T = (size_t)B * L, QD = (size_t)H * hd, KD = (size_t)Hkv * hd;
    cuda_attention_args a = {};
    a.B = B, a.L = L, a.H = H, a.Hkv = Hkv, a.hd = hd, a.scale = 1.0f / sqrtf((float)hd);
    a.q = rand_bf16(T * QD, 2, 4), a.ld_q = (int)QD, a.k = rand_bf16(T * KD, 2, 5), a.v = rand_bf16(T * KD, 1, 6);
    a.ld_kv = (int)KD, a.kv_batch_stride = (size_t)L * KD, a.kv_dtype = SSM_DTYPE_BF16;
    a.out = rand_bf16(T * QD, 1, 7), a.ld_out = (int)QD;
    CK(cudaMalloc(&a.lse, (size_t)B * H * L * 4));
    a.d_out = rand_bf16(T * QD, 1, 8), a.dq = rand_bf16(T * QD, 1, 9);
    a.dk = rand_bf16(T * KD, 1, 10), a.dv = rand_bf16(T * KD, 1, 11);
    size_t wb = cuda_attention_backward_workspace(&a);
    void *work;
    CK(cudaMalloc(&work, wb));
    double f = time_ms([&] { OK(cuda_attention_forward(&a, 0)); }, reps);
    double fb = time_ms([&] {
        OK(cuda_attention_forward(&a, 0));
        OK(cuda_attention_backward(&a, work, wb, 0));
    }, reps);
    const double flops = 2.0 * B * H * (double)L * L * hd; // causal: half of 4 B H L^2 hd
    const double ff = flops / peak * 1e3, fbf = 3.5 * ff;    // the floors, ms
    printf("training B=%d L=%d H=%d Hkv=%d hd=%d: forward %.3f ms (%.0f TFLOP/s, %.1fx the GEMM rate's floor %.3f ms); "
           "forward + backward %.3f ms (%.0f TFLOP/s, %.1fx its floor %.3f ms)\n",
           B, L, H, Hkv, hd, f, flops / (f * 1e-3) / 1e12, f / ff, ff, fb, 3.5 * flops / (fb * 1e-3) / 1e12, fb / fbf, fbf);
    cudaFree((void *)a.q), cudaFree((void *)a.k), cudaFree((void *)a.v), cudaFree(a.out), cudaFree(a.lse);
    cudaFree((void *)a.d_out), cudaFree(a.dq), cudaFree(a.dk), cudaFree(a.dv), cudaFree(work);
}

static void bench_decode(int B, int n, int H, int Hkv, int hd, double gbs, int reps) {
    const size_t QD = (size_t)H * hd, KD = (size_t)Hkv * hd, per = 2 * (size_t)n * KD;
    std::vector<float> host(B * per, 0.5f);
    std::vector<int64_t> pre(B, n - 1);
    cuda_attention_args a = {};
    a.B = B, a.L = 1, a.H = H, a.Hkv = Hkv, a.hd = hd, a.scale = 1.0f / sqrtf((float)hd);
    a.q = rand_bf16(B * QD, 2, 12), a.ld_q = (int)QD, a.ld_kv = (int)KD, a.kv_batch_stride = per;
    float *cache = (float *)to_dev(host.data(), B * per, SSM_DTYPE_F32);
    a.k = cache, a.v = cache + (size_t)n * KD, a.kv_dtype = SSM_DTYPE_F32;
    a.prefix = (const int64_t *)to_dev_bytes(pre.data(), B * sizeof(int64_t));
    a.out = rand_bf16(B * QD, 1, 13), a.ld_out = (int)QD;
    double tiled = time_ms([&] { OK(cuda_attention_forward(&a, 0)); }, reps);
    a.split_work_bytes = cuda_attention_decode_workspace(&a); // the decode step's kernel
    CK(cudaMalloc(&a.split_work, a.split_work_bytes));
    double ms = time_ms([&] { OK(cuda_attention_forward(&a, 0)); }, reps);
    const double floor_ms = (double)B * per * 4 / (gbs * 1e9) * 1e3;
    printf("decode B=%d keys %d H=%d Hkv=%d hd=%d: split keys %.4f ms, %.1fx its floor %.4f ms (the fp32 cache read "
           "once); the tiled kernel %.4f ms\n", B, n, H, Hkv, hd, ms, ms / floor_ms, floor_ms, tiled);
    cudaFree((void *)a.q), cudaFree(cache), cudaFree((void *)a.prefix), cudaFree(a.out), cudaFree(a.split_work);
}

int main(int argc, char **argv) {
    int reps = 20;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("bench_attention_gpu: no CUDA device\n");
        return 77;
    }
    const double tf = gemm_tflops(reps), gbs = copy_gbs(reps);
    printf("floors: cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s; device copy %.0f GB/s\n", tf, gbs);
    const double peak = tf * 1e12;
    bench_training(8, 2048, 12, 12, 64, peak, reps);  // a hybrid at the 130M width (768 = 12 x 64)
    bench_training(8, 2048, 32, 8, 128, peak, reps);  // NemotronH-style GQA (4096 = 32 x 128, 8 kv heads)
    bench_training(1, 8192, 12, 12, 64, peak, reps);
    bench_decode(1, 2048, 12, 12, 64, gbs, reps * 5);
    bench_decode(64, 2048, 12, 12, 64, gbs, reps * 5);
    bench_decode(1, 8192, 32, 8, 128, gbs, reps * 5);
    return 0;
}
