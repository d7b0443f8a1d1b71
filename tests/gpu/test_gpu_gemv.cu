// test_gpu_gemv.cu: the decode step's small-batch projection (libssm/cuda/gemv.cu) against a
// host reference, at awkward shapes, outputs poisoned first:
//   - out = beta * out + x . w^T for B = 1..8 rows, k a multiple of 8 up to 2048, n not a
//     multiple of the block's 8 columns; bf16 x or the RMSNorm of fp32 rows; bf16 or fp32 out,
//     the latter also with more blocks than the GPU holds at once (the grid-stride LOOP kernel);
//   - the fused causal-conv step (u = silu(conv), the state rolled) for d_conv 2, 4 and 8;
//   - greedy's fused argmax and append (argmax_blocks): each row's token is exactly the first
//     index of the maximum of the logits the same launch wrote (ties planted, a row of NaNs),
//     appended at the counter, positions moved on, the block counter back to 0 for the next
//     launch (three launches in a row).
// The sums are fp32 in another order than the host's double ones: bound 1e-5 relative.
#include <vector>

#include "../../libssm/cuda/model.cuh"
#include "gpu_test.h"

static std::vector<float> bf16_rand(size_t n, float lo, float hi) {
    std::vector<float> v(n);
    fill(v.data(), n, lo, hi);
    round_bf16(v.data(), n);
    return v;
}

// the host twin: rows x (B, k) already as the kernel stages them (bf16), out (B, n) in double
static std::vector<double> ref_gemv(const std::vector<float> &x, const std::vector<float> &w, int B, int k, int n) {
    std::vector<double> r((size_t)B * n);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < n; o++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += (double)w[(size_t)o * k + i] * x[(size_t)b * k + i];
            r[(size_t)b * n + o] = s;
        }
    return r;
}

// RMSNorm of fp32 rows, rounded to bf16 as the kernel stages them
static std::vector<float> ref_norm(const std::vector<float> &in, const std::vector<float> &nw, int B, int k, float eps) {
    std::vector<float> x((size_t)B * k);
    for (int b = 0; b < B; b++) {
        double ss = 0;
        for (int i = 0; i < k; i++) ss += (double)in[(size_t)b * k + i] * in[(size_t)b * k + i];
        const float r = (float)(1.0 / sqrt(ss / k + eps));
        for (int i = 0; i < k; i++) x[(size_t)b * k + i] = in[(size_t)b * k + i] * r * nw[i];
    }
    round_bf16(x.data(), x.size());
    return x;
}

static double rel(const std::vector<float> &got, const std::vector<double> &ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) return NAN;
        num += (got[i] - ref[i]) * (got[i] - ref[i]), den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// out = beta * out + x . w^T (norm: x = RMSNorm(fp32 rows); f32: fp32 out, else bf16)
static void test_project(int B, int k, int n, bool norm, bool f32, float beta) {
    const float eps = 1e-5f;
    std::vector<float> w = bf16_rand((size_t)n * k, -0.5f, 0.5f), in(B * (size_t)k), nw = bf16_rand(k, 0.5f, 1.5f);
    fill(in.data(), in.size(), -2, 2);
    if (!norm) round_bf16(in.data(), in.size());
    std::vector<float> x = norm ? ref_norm(in, nw, B, k, eps) : in, old((size_t)B * n);
    fill(old.data(), old.size(), -1, 1);
    std::vector<double> ref = ref_gemv(x, w, B, k, n);
    if (f32 && beta != 0.0f)
        for (size_t i = 0; i < ref.size(); i++) ref[i] += (double)beta * old[i];
    const ssm_dtype od = f32 ? SSM_DTYPE_F32 : SSM_DTYPE_BF16;
    cuda_gemv_args a = {};
    a.w = (const bf16 *)to_dev(w.data(), w.size(), SSM_DTYPE_BF16);
    a.in = to_dev(in.data(), in.size(), norm ? SSM_DTYPE_F32 : SSM_DTYPE_BF16);
    a.norm_w = norm ? (const float *)to_dev(nw.data(), k, SSM_DTYPE_F32) : nullptr;
    a.out = f32 && beta != 0.0f ? to_dev(old.data(), old.size(), od) : dev_poisoned(old.size(), od);
    a.ld_out = n, a.out_dtype = od, a.beta = f32 ? beta : 0.0f, a.ld_in = k, a.eps = eps, a.B = B, a.k = k, a.n = n;
    int ok = 1;
    printf("gemv   B=%d k=%-4d n=%-5d %s %s beta %.1f:", B, k, n, norm ? "norm" : "bf16", f32 ? "fp32" : "bf16",
           a.beta);
    report("fits", cuda_gemv_fits(&a) ? 0 : 1, 0, &ok);
    OK(cuda_gemv(&a, 0));
    std::vector<float> got(old.size());
    float *g = from_dev(a.out, got.size(), od);
    got.assign(g, g + got.size());
    free(g);
    // a bf16 out, or x normalized here and there in a different order (a rare bf16 flip): 4e-3
    report("out", rel(got, ref), f32 && !norm ? 1e-5 : 4e-3, &ok);
    end_case(ok);
    cudaFree((void *)a.w), cudaFree((void *)a.in), cudaFree((void *)a.norm_w), cudaFree(a.out);
}

// in_proj with the conv step on columns [0, E): u and the rolled state against the host's
static void test_conv(int B, int k, int E, int K) {
    const int n = 2 * E;
    std::vector<float> w = bf16_rand((size_t)n * k, -0.5f, 0.5f), in = bf16_rand((size_t)B * k, -2, 2);
    std::vector<float> cw((size_t)E * K), cb(E), st((size_t)B * E * K);
    fill(cw.data(), cw.size(), -0.7f, 0.7f), fill(cb.data(), E, -0.3f, 0.3f), fill(st.data(), st.size(), -1, 1);
    // the host twin from the kernel's own bf16 xz (so that the test checks the conv, not rounding)
    cuda_gemv_args a = {};
    a.w = (const bf16 *)to_dev(w.data(), w.size(), SSM_DTYPE_BF16);
    a.in = to_dev(in.data(), in.size(), SSM_DTYPE_BF16);
    a.out = dev_poisoned((size_t)B * n, SSM_DTYPE_BF16), a.u = dev_poisoned((size_t)B * E, SSM_DTYPE_BF16);
    a.conv_state = (float *)to_dev(st.data(), st.size(), SSM_DTYPE_F32);
    a.conv_w = (const float *)to_dev(cw.data(), cw.size(), SSM_DTYPE_F32);
    a.conv_b = (const float *)to_dev(cb.data(), E, SSM_DTYPE_F32);
    a.ld_out = n, a.out_dtype = SSM_DTYPE_BF16, a.ld_in = k, a.B = B, a.k = k, a.n = n, a.E = E, a.K = K;
    int ok = 1;
    printf("gemv   B=%d k=%-4d E=%-5d d_conv %d, conv step:", B, k, E, K);
    report("fits", cuda_gemv_fits(&a) ? 0 : 1, 0, &ok);
    OK(cuda_gemv(&a, 0));
    float *xz = from_dev(a.out, (size_t)B * n, SSM_DTYPE_BF16), *u = from_dev(a.u, (size_t)B * E, SSM_DTYPE_BF16);
    float *st2 = from_dev(a.conv_state, st.size(), SSM_DTYPE_F32);
    std::vector<double> ru((size_t)B * E), rs(st.size());
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            const float *s0 = &st[((size_t)b * E + e) * K];
            double pre = cb[e];
            for (int j = 0; j < K; j++) {
                const double sj = j < K - 1 ? s0[j + 1] : xz[(size_t)b * n + e];
                rs[((size_t)b * E + e) * K + j] = sj;
                pre += cw[(size_t)e * K + j] * sj;
            }
            ru[(size_t)b * E + e] = pre / (1 + exp(-pre));
        }
    report("u", rel(std::vector<float>(u, u + ru.size()), ru), 4e-3, &ok);
    report("state", rel(std::vector<float>(st2, st2 + rs.size()), rs), 1e-6, &ok);
    end_case(ok);
    free(xz), free(u), free(st2);
    cudaFree((void *)a.w), cudaFree((void *)a.in), cudaFree(a.out), cudaFree(a.u), cudaFree(a.conv_state);
    cudaFree((void *)a.conv_w), cudaFree((void *)a.conv_b);
}

// the head of greedy decode: logits, then tokens = argmax of those logits, appended, 3 launches
static void test_argmax(int B, int k, int n) {
    const float eps = 1e-5f;
    std::vector<float> w = bf16_rand((size_t)n * k, -0.5f, 0.5f), in((size_t)B * k), nw = bf16_rand(k, 0.5f, 1.5f);
    fill(in.data(), in.size(), -2, 2);
    // ties: rows of w repeated make equal logits; the first copy must win
    for (int c = 0; c < 3 && n > 8; c++) {
        const int src = irand(n), dst = irand(n);
        memcpy(&w[(size_t)dst * k], &w[(size_t)src * k], k * sizeof(float));
    }
    const int cap = 5, base = 2; // the append goes to out[b, base + launch]
    cuda_gemv_args a = {};
    a.w = (const bf16 *)to_dev(w.data(), w.size(), SSM_DTYPE_BF16);
    a.in = to_dev(in.data(), in.size(), SSM_DTYPE_F32);
    a.norm_w = (const float *)to_dev(nw.data(), k, SSM_DTYPE_F32);
    a.out = dev_poisoned((size_t)B * n, SSM_DTYPE_F32);
    a.ld_out = n, a.out_dtype = SSM_DTYPE_F32, a.ld_in = k, a.eps = eps, a.B = B, a.k = k, a.n = n;
    cuda_gemv_argmax &g = a.argmax;
    int pairs, counters;
    cuda_gemv_argmax_scratch(n, &pairs, &counters);
    const size_t parts = (size_t)pairs * B;
    std::vector<int64_t> pos0(B);
    for (int b = 0; b < B; b++) pos0[b] = 10 * b;
    std::vector<int32_t> out0((size_t)B * cap, -7);
    g.tokens = (int32_t *)dev_poisoned(B, SSM_DTYPE_F32);
    g.part_v = (float *)dev_poisoned(parts, SSM_DTYPE_F32), g.part_i = (int32_t *)dev_poisoned(parts, SSM_DTYPE_F32);
    const std::vector<unsigned> zero(counters, 0u);
    const int counter0 = base;
    g.blocks_done = (unsigned *)to_dev_bytes(zero.data(), counters * sizeof(unsigned));
    g.out = (int32_t *)to_dev_bytes(out0.data(), out0.size() * 4), g.out_cap = cap;
    g.counter = (int *)to_dev_bytes(&counter0, sizeof counter0);
    g.pos = (int64_t *)to_dev_bytes(pos0.data(), B * sizeof(int64_t));
    int ok = 1;
    printf("argmax B=%d k=%-4d n=%-5d (%d pairs, %d counters):", B, k, n, pairs, counters);
    report("fits", cuda_gemv_fits(&a) ? 0 : 1, 0, &ok);
    int wrong = 0;
    std::vector<int32_t> want((size_t)B * cap, -7);
    for (int launch = 0; launch < 3; launch++) {
        if (launch == 2) { // a row of NaNs (row B - 1's residual): token 0
            std::vector<float> nan_row(k, NAN);
            CK(cudaMemcpy((float *)a.in + (size_t)(B - 1) * k, nan_row.data(), k * 4, cudaMemcpyHostToDevice));
        }
        OK(cuda_gemv(&a, 0));
        float *lg = from_dev(a.out, (size_t)B * n, SSM_DTYPE_F32);
        std::vector<int32_t> tok(B);
        from_dev_bytes(tok.data(), g.tokens, B * 4);
        for (int b = 0; b < B; b++) {
            int best = 0;
            for (int o = 1; o < n; o++) best = lg[(size_t)b * n + o] > lg[(size_t)b * n + best] ? o : best;
            wrong += tok[b] != best;
            want[(size_t)b * cap + base + launch] = best;
        }
        free(lg);
    }
    report("wrong tokens", wrong, 0, &ok);
    std::vector<int32_t> out(out0.size());
    std::vector<int64_t> pos(B);
    int counter = 0;
    std::vector<unsigned> done(counters, 1u);
    from_dev_bytes(out.data(), g.out, out.size() * 4);
    from_dev_bytes(pos.data(), g.pos, B * sizeof(int64_t));
    from_dev_bytes(&counter, g.counter, sizeof counter);
    from_dev_bytes(done.data(), g.blocks_done, counters * sizeof(unsigned));
    int bad_out = 0, bad_pos = 0;
    for (size_t i = 0; i < out.size(); i++) bad_out += out[i] != want[i];
    for (int b = 0; b < B; b++) bad_pos += pos[b] != pos0[b] + 3;
    report("appended", bad_out, 0, &ok);
    report("positions", bad_pos, 0, &ok);
    report("counter", counter != base + 3, 0, &ok);
    int bad_done = 0;
    for (unsigned d : done) bad_done += d != 0;
    report("counters 0", bad_done, 0, &ok);
    end_case(ok);
    cudaFree((void *)a.w), cudaFree((void *)a.in), cudaFree((void *)a.norm_w), cudaFree(a.out);
    cudaFree(g.tokens), cudaFree(g.part_v), cudaFree(g.part_i), cudaFree(g.blocks_done), cudaFree(g.out);
    cudaFree(g.counter), cudaFree(g.pos);
}

int main(void) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    const int Bs[] = {1, 3, 8};
    for (int B : Bs) {
        test_project(B, 768, 3072, true, false, 0.0f); // in_proj at 130M
        test_project(B, 1536, 80, false, false, 0.0f); // x_proj
        test_project(B, 1536, 768, false, true, 1.0f); // out_proj into the residual
        test_project(B, 8, 13, true, true, 0.0f);      // the smallest k, n not a multiple of 8
        test_project(B, 2048, 37, false, true, 0.5f);  // the largest k
        test_project(B, 768, 50280, true, true, 0.0f); // the head: more blocks than stay resident (LOOP)
        test_project(B, 64, 40001, false, true, 1.0f); // LOOP into a residual
        test_conv(B, 64, 100, 4);
        test_conv(B, 40, 24, 2);
        test_conv(B, 96, 48, 8);
        test_argmax(B, 64, 16);       // two blocks
        test_argmax(B, 64, 512);      // one whole group of 64 blocks
        test_argmax(B, 64, 520);      // a group of 64 and a group of 1
        test_argmax(B, 768, 50280);   // the GPT-NeoX head: 6,285 blocks in 99 groups
        test_argmax(B, 48, 37);
    }
    return gpu_test_result();
}
