// activation.cu: the MLP layers' activations, the twins of libssm/cpu/activation.c (read them
// side by side). T rows of F hidden channels, each row at its stride; one thread per element,
// fp32 arithmetic, fp32 or bf16 in memory. The backward writes (never adds to) d u.
//   relu2  (NemotronH):         a = relu(u)^2                 d u = d a * 2 relu(u)
//   swiglu (mamba_ssm's GatedMLP): [y | g] = u, a = y * silu(g)
//                               d y = d a * silu(g),  d g = d a * y * silu'(g)
#include "common.cuh"

namespace {

constexpr int THREADS = 256;

// the element (t, f) of thread i over T rows of F, or false past the end
__device__ __forceinline__ bool element(long long i, int T, int F, int *t, int *f) {
    if (i >= (long long)T * F) return false;
    *t = (int)(i / F), *f = (int)(i % F);
    return true;
}

template <typename A> __global__ void relu2_forward(A *a, int ld_a, const A *u, int ld_u, int T, int F) {
    int t, f;
    if (!element((long long)blockIdx.x * THREADS + threadIdx.x, T, F, &t, &f)) return;
    const float x = fmaxf(ldf(u + (size_t)t * ld_u + f), 0.0f);
    a[(size_t)t * ld_a + f] = from_f<A>(x * x);
}

template <typename A>
__global__ void relu2_backward(A *du, int ld_du, const A *da, int ld_da, const A *u, int ld_u, int T, int F) {
    int t, f;
    if (!element((long long)blockIdx.x * THREADS + threadIdx.x, T, F, &t, &f)) return;
    const float x = ldf(u + (size_t)t * ld_u + f);
    du[(size_t)t * ld_du + f] = from_f<A>(x > 0.0f ? ldf(da + (size_t)t * ld_da + f) * 2.0f * x : 0.0f);
}

// u rows are [y | g], 2F wide
template <typename A> __global__ void swiglu_forward(A *a, int ld_a, const A *u, int ld_u, int T, int F) {
    int t, f;
    if (!element((long long)blockIdx.x * THREADS + threadIdx.x, T, F, &t, &f)) return;
    const A *y = u + (size_t)t * ld_u;
    a[(size_t)t * ld_a + f] = from_f<A>(ldf(y + f) * siluf(ldf(y + F + f)));
}

template <typename A>
__global__ void swiglu_backward(A *du, int ld_du, const A *da, int ld_da, const A *u, int ld_u, int T, int F) {
    int t, f;
    if (!element((long long)blockIdx.x * THREADS + threadIdx.x, T, F, &t, &f)) return;
    const A *yg = u + (size_t)t * ld_u;
    const float y = ldf(yg + f), g = ldf(yg + F + f), d = ldf(da + (size_t)t * ld_da + f);
    const float s = sigmoidf_(g); // silu'(g) = s (1 + g (1 - s))
    A *dyg = du + (size_t)t * ld_du;
    dyg[f] = from_f<A>(d * g * s);
    dyg[F + f] = from_f<A>(d * y * s * (1.0f + g * (1.0f - s)));
}

typedef __nv_bfloat16 bf16;
template <typename A> using forward_kernel = void (*)(A *, int, const A *, int, int, int);
template <typename A> using backward_kernel = void (*)(A *, int, const A *, int, const A *, int, int, int);

// T rows of F; u's rows are u_w wide (F, or 2F for swiglu), as is d u
ssm_status check(const char *op, int T, int F, int ld_out, int out_w, int ld_u, int u_w, ssm_dtype dtype) {
    if (dtype != SSM_DTYPE_F32 && dtype != SSM_DTYPE_BF16)
        return ssm_set_error(SSM_ERR_ARG, "%s: dtype %d is neither fp32 nor bf16", op, (int)dtype);
    if (T < 0 || F < 1 || ld_out < out_w || ld_u < u_w)
        return ssm_set_error(SSM_ERR_ARG, "%s: T = %d, F = %d, row strides %d and %d (need at least %d and %d)",
                             op, T, F, ld_out, ld_u, out_w, u_w);
    return SSM_OK;
}

unsigned blocks(int T, int F) { return (unsigned)(((long long)T * F + THREADS - 1) / THREADS); }

// a (T, F) = act(u (T, u_w)) in dtype
ssm_status run_forward(const char *op, forward_kernel<float> k32, forward_kernel<bf16> k16, void *a, int ld_a,
                       const void *u, int ld_u, int T, int F, int u_w, ssm_dtype dtype, cudaStream_t stream) {
    ssm_status s = check(op, T, F, ld_a, F, ld_u, u_w, dtype);
    if (s || T == 0) return s;
    if (dtype == SSM_DTYPE_F32) k32<<<blocks(T, F), THREADS, 0, stream>>>((float *)a, ld_a, (const float *)u, ld_u, T, F);
    else k16<<<blocks(T, F), THREADS, 0, stream>>>((bf16 *)a, ld_a, (const bf16 *)u, ld_u, T, F);
    SSM_CUDA_CHECK_LAUNCH(op);
    return SSM_OK;
}

// d u (T, u_w) from d a (T, F) and u
ssm_status run_backward(const char *op, backward_kernel<float> k32, backward_kernel<bf16> k16, void *du,
                        int ld_du, const void *da, int ld_da, const void *u, int ld_u, int T, int F, int u_w,
                        ssm_dtype dtype, cudaStream_t stream) {
    ssm_status s = check(op, T, F, ld_du, u_w, ld_u, u_w, dtype);
    if (!s) s = check(op, T, F, ld_da, F, ld_u, u_w, dtype);
    if (s || T == 0) return s;
    if (dtype == SSM_DTYPE_F32)
        k32<<<blocks(T, F), THREADS, 0, stream>>>((float *)du, ld_du, (const float *)da, ld_da, (const float *)u,
                                                  ld_u, T, F);
    else
        k16<<<blocks(T, F), THREADS, 0, stream>>>((bf16 *)du, ld_du, (const bf16 *)da, ld_da, (const bf16 *)u, ld_u,
                                                  T, F);
    SSM_CUDA_CHECK_LAUNCH(op);
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_relu2_forward(void *a, int ld_a, const void *u, int ld_u, int T, int F,
                                         ssm_dtype dtype, cudaStream_t stream) {
    return run_forward("cuda_relu2_forward", relu2_forward<float>, relu2_forward<bf16>, a, ld_a, u, ld_u, T, F, F,
                       dtype, stream);
}

extern "C" ssm_status cuda_relu2_backward(void *du, int ld_du, const void *da, int ld_da, const void *u,
                                          int ld_u, int T, int F, ssm_dtype dtype, cudaStream_t stream) {
    return run_backward("cuda_relu2_backward", relu2_backward<float>, relu2_backward<bf16>, du, ld_du, da, ld_da,
                        u, ld_u, T, F, F, dtype, stream);
}

extern "C" ssm_status cuda_swiglu_forward(void *a, int ld_a, const void *yg, int ld_yg, int T, int F,
                                          ssm_dtype dtype, cudaStream_t stream) {
    return run_forward("cuda_swiglu_forward", swiglu_forward<float>, swiglu_forward<bf16>, a, ld_a, yg, ld_yg, T,
                       F, 2 * F, dtype, stream);
}

extern "C" ssm_status cuda_swiglu_backward(void *d_yg, int ld_dyg, const void *da, int ld_da, const void *yg,
                                           int ld_yg, int T, int F, ssm_dtype dtype, cudaStream_t stream) {
    return run_backward("cuda_swiglu_backward", swiglu_backward<float>, swiglu_backward<bf16>, d_yg, ld_dyg, da,
                        ld_da, yg, ld_yg, T, F, 2 * F, dtype, stream);
}
