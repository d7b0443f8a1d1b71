/* test_gpu_attention.c: the CUDA attention and rotary ops (libssm/cuda/attention.cu, rope.cu)
 * against their CPU twins (libssm/cpu/attention.c, rope.c) on the same bf16-rounded inputs, at
 * awkward sizes: head dims 8, 12, 24, 64, 100 and 128 (padded to 32, 64 or 128 inside the
 * kernels), GQA groups of 1 to 4, L from 1 to 300 (partial tiles of 64), row strides wider than
 * the heads, several sequences; the forward over this pass's keys, over an fp32 KV cache with
 * prefixes of 0 to 130 (the windows of a carried state), and as the decode step (L = 1).
 *
 * Outputs are poisoned (NaN) first and the cache rows past each sequence's keys are NaN too: a
 * kernel that writes too little or reads past the keys fails. Bounds (relative norm errors):
 * out 1e-2 (its bf16 store, and p entering the product as bf16); lse 2e-5 (fp32 sums in another
 * order); dq, dk, dv 2e-2 (p and ds enter their products as bf16, as in flash-attention); rope
 * 4e-3 (bf16 rounding of the result, 2^-9, on both halves). The backward runs twice: the same
 * bits (no atomics). Exit status: 0 passed, 1 a check failed, 77 no GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "attention.h"
#include "gpu_test.h"
#include "rope.h"
#include "ssm/cuda_ops.h"

/* random values in [-r, r], rounded to bf16 (what the GPU holds) */
static float *rand_bf16(size_t n, float r) {
    float *x = falloc(n);
    fill(x, n, -r, r);
    round_bf16(x, n);
    return x;
}

/* The forward over this pass's keys and its backward: B, L, H, Hkv, hd, row padding */
static void test_pass(int B, int L, int H, int Hkv, int hd, int pad) {
    const int QD = H * hd, KD = Hkv * hd, ldq = QD + pad, ldkv = KD + pad, ldo = QD + 2 * pad;
    const size_t T = (size_t)B * L;
    /* scores of a few units: a peaked softmax, as trained models have */
    float *q = rand_bf16(T * ldq, 2.0f), *k = rand_bf16(T * ldkv, 2.0f), *v = rand_bf16(T * ldkv, 1.0f);
    float *dout = rand_bf16(T * ldo, 1.0f);
    float *out = falloc(T * ldo), *lse = falloc((size_t)B * H * L);
    float *dq = falloc(T * ldq), *dk = falloc(T * ldkv), *dv = falloc(T * ldkv);
    cpu_attention_args c = {0};
    c.B = B, c.L = L, c.H = H, c.Hkv = Hkv, c.hd = hd, c.scale = 1.0f / sqrtf((float)hd);
    c.q = q, c.ld_q = ldq, c.k = k, c.v = v, c.ld_kv = ldkv, c.kv_batch_stride = (size_t)L * ldkv;
    c.out = out, c.ld_out = ldo, c.lse = lse, c.d_out = dout, c.dq = dq, c.dk = dk, c.dv = dv;
    size_t sf = cpu_attention_scratch_floats(&c, 0, 1);
    c.scratch = falloc(sf), c.scratch_floats = sf;
    cpu_attention_forward(&c);
    cpu_attention_backward(&c);

    void *gq = to_dev(q, T * ldq, SSM_DTYPE_BF16), *gk = to_dev(k, T * ldkv, SSM_DTYPE_BF16);
    void *gv = to_dev(v, T * ldkv, SSM_DTYPE_BF16), *gdo = to_dev(dout, T * ldo, SSM_DTYPE_BF16);
    void *gout = dev_poisoned(T * ldo, SSM_DTYPE_BF16);
    float *glse = dev_poisoned((size_t)B * H * L, SSM_DTYPE_F32);
    void *gdq = dev_poisoned(T * ldq, SSM_DTYPE_BF16), *gdk = dev_poisoned(T * ldkv, SSM_DTYPE_BF16);
    void *gdv = dev_poisoned(T * ldkv, SSM_DTYPE_BF16);
    cuda_attention_args g = {0};
    g.B = B, g.L = L, g.H = H, g.Hkv = Hkv, g.hd = hd, g.scale = c.scale;
    g.q = gq, g.ld_q = ldq, g.k = gk, g.v = gv, g.ld_kv = ldkv, g.kv_batch_stride = (size_t)L * ldkv;
    g.kv_dtype = SSM_DTYPE_BF16, g.out = gout, g.ld_out = ldo, g.lse = glse;
    g.d_out = gdo, g.dq = gdq, g.dk = gdk, g.dv = gdv;
    size_t wb = cuda_attention_backward_workspace(&g);
    void *work = dev_poisoned(wb / 4 + 1, SSM_DTYPE_F32);
    OK(cuda_attention_forward(&g, 0));
    OK(cuda_attention_backward(&g, work, wb, 0));
    float *h_out = from_dev(gout, T * ldo, SSM_DTYPE_BF16), *h_lse = from_dev(glse, (size_t)B * H * L, SSM_DTYPE_F32);
    float *h_dq = from_dev(gdq, T * ldq, SSM_DTYPE_BF16), *h_dk = from_dev(gdk, T * ldkv, SSM_DTYPE_BF16);
    float *h_dv = from_dev(gdv, T * ldkv, SSM_DTYPE_BF16);
    /* the backward again: the same bits */
    OK(cuda_attention_backward(&g, work, wb, 0));
    float *r_dq = from_dev(gdq, T * ldq, SSM_DTYPE_BF16), *r_dk = from_dev(gdk, T * ldkv, SSM_DTYPE_BF16);
    float *r_dv = from_dev(gdv, T * ldkv, SSM_DTYPE_BF16);
    int same = 1;
    for (size_t t = 0; t < T; t++) {
        same &= !memcmp(h_dq + t * ldq, r_dq + t * ldq, QD * sizeof(float));
        same &= !memcmp(h_dk + t * ldkv, r_dk + t * ldkv, KD * sizeof(float));
        same &= !memcmp(h_dv + t * ldkv, r_dv + t * ldkv, KD * sizeof(float));
    }
    int ok = 1;
    printf("pass   B=%d L=%-3d H=%d Hkv=%d hd=%-3d ld+%d:", B, L, H, Hkv, hd, pad);
    report("out", rel_err2(h_out, ldo, out, ldo, T, QD), 1e-2, &ok);
    report("lse", rel_err(h_lse, lse, (size_t)B * H * L), 2e-5, &ok);
    report("dq", rel_err2(h_dq, ldq, dq, ldq, T, QD), 2e-2, &ok);
    report("dk", rel_err2(h_dk, ldkv, dk, ldkv, T, KD), 2e-2, &ok);
    report("dv", rel_err2(h_dv, ldkv, dv, ldkv, T, KD), 2e-2, &ok);
    report("rerun differs", same ? 0.0 : 1.0, 0, &ok);
    end_case(ok);
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv), free(c.scratch);
    free(h_out), free(h_lse), free(h_dq), free(h_dk), free(h_dv), free(r_dq), free(r_dk), free(r_dv);
    cudaFree(gq), cudaFree(gk), cudaFree(gv), cudaFree(gdo), cudaFree(gout), cudaFree(glse);
    cudaFree(gdq), cudaFree(gdk), cudaFree(gdv), cudaFree(work);
}

/* The forward against an fp32 KV cache of cap positions per sequence (keys then values), the
 * new rows already in it: prefixes pre[b], L queries each (L = 1: the decode step) */
static void test_cache(int B, int L, int H, int Hkv, int hd, const int64_t *pre, int cap) {
    const int QD = H * hd, KD = Hkv * hd;
    const size_t T = (size_t)B * L, per = (size_t)2 * cap * KD;
    float *q = rand_bf16(T * QD, 2.0f), *cache = falloc(B * per);
    for (size_t i = 0; i < B * per; i++) cache[i] = NAN; /* rows past the keys: never read */
    for (int b = 0; b < B; b++) {
        float *kv = rand_bf16((size_t)(pre[b] + L) * KD, 2.0f), *vv = rand_bf16((size_t)(pre[b] + L) * KD, 1.0f);
        memcpy(cache + b * per, kv, (size_t)(pre[b] + L) * KD * sizeof(float));
        memcpy(cache + b * per + (size_t)cap * KD, vv, (size_t)(pre[b] + L) * KD * sizeof(float));
        free(kv), free(vv);
    }
    float *out = falloc(T * QD), *lse = falloc((size_t)B * H * L);
    cpu_attention_args c = {0};
    c.B = B, c.L = L, c.H = H, c.Hkv = Hkv, c.hd = hd, c.scale = 1.0f / sqrtf((float)hd);
    c.q = q, c.ld_q = QD, c.k = cache, c.v = cache + (size_t)cap * KD, c.ld_kv = KD, c.kv_batch_stride = per;
    c.prefix = pre, c.out = out, c.ld_out = QD, c.lse = lse;
    size_t sf = cpu_attention_scratch_floats(&c, 0, 0);
    c.scratch = falloc(sf), c.scratch_floats = sf;
    cpu_attention_forward(&c);

    void *gq = to_dev(q, T * QD, SSM_DTYPE_BF16);
    float *gc = to_dev(cache, B * per, SSM_DTYPE_F32);
    int64_t *gpre = to_dev_bytes(pre, B * sizeof(int64_t));
    void *gout = dev_poisoned(T * QD, SSM_DTYPE_BF16);
    float *glse = dev_poisoned((size_t)B * H * L, SSM_DTYPE_F32);
    cuda_attention_args g = {0};
    g.B = B, g.L = L, g.H = H, g.Hkv = Hkv, g.hd = hd, g.scale = c.scale;
    g.q = gq, g.ld_q = QD, g.k = gc, g.v = gc + (size_t)cap * KD, g.ld_kv = KD, g.kv_batch_stride = per;
    g.kv_dtype = SSM_DTYPE_F32, g.prefix = gpre, g.out = gout, g.ld_out = QD, g.lse = glse;
    OK(cuda_attention_forward(&g, 0));
    float *h_out = from_dev(gout, T * QD, SSM_DTYPE_BF16), *h_lse = from_dev(glse, (size_t)B * H * L, SSM_DTYPE_F32);
    int ok = 1;
    printf("cache  B=%d L=%-3d H=%d Hkv=%d hd=%-3d pre %lld..%lld:", B, L, H, Hkv, hd, (long long)pre[0],
           (long long)pre[B - 1]);
    report("out", rel_err(h_out, out, T * QD), 1e-2, &ok);
    report("lse", rel_err(h_lse, lse, (size_t)B * H * L), 2e-5, &ok);
    if (L == 1) { /* the decode step's split-key kernel, twice: the same bits */
        size_t wb = cuda_attention_decode_workspace(&g);
        void *work = dev_poisoned(wb / sizeof(float), SSM_DTYPE_F32);
        void *gout2 = dev_poisoned(T * QD, SSM_DTYPE_BF16);
        g.split_work = work, g.split_work_bytes = wb;
        CK(cudaMemset(gout, 0xff, T * QD * sizeof(uint16_t))); /* poisoned again */
        CK(cudaMemset(glse, 0xff, (size_t)B * H * sizeof(float)));
        OK(cuda_attention_forward(&g, 0));
        float *s_out = from_dev(gout, T * QD, SSM_DTYPE_BF16), *s_lse = from_dev(glse, (size_t)B * H, SSM_DTYPE_F32);
        g.out = gout2;
        OK(cuda_attention_forward(&g, 0));
        float *s_out2 = from_dev(gout2, T * QD, SSM_DTYPE_BF16);
        report("split out", rel_err(s_out, out, T * QD), 1e-2, &ok);
        report("split lse", rel_err(s_lse, lse, (size_t)B * H), 2e-5, &ok);
        report("split rerun", memcmp(s_out, s_out2, T * QD * sizeof(float)) ? 1 : 0, 0, &ok);
        free(s_out), free(s_lse), free(s_out2);
        cudaFree(work), cudaFree(gout2);
    }
    end_case(ok);
    free(q), free(cache), free(out), free(lse), free(c.scratch), free(h_out), free(h_lse);
    cudaFree(gq), cudaFree(gc), cudaFree(gpre), cudaFree(gout), cudaFree(glse);
}

/* rope on bf16 rows, forward and inverse, positions from pos0 */
static void test_rope(int B, int L, int n_heads, int hd, int rot, int pad, int64_t p1) {
    const int ld = n_heads * hd + pad;
    const size_t T = (size_t)B * L;
    int64_t *pos0 = xmalloc(B * sizeof(int64_t));
    for (int b = 0; b < B; b++) pos0[b] = b * p1;
    float *x = rand_bf16(T * ld, 2.0f), *ref = falloc(T * ld);
    memcpy(ref, x, T * ld * sizeof(float));
    cpu_rope_apply(ref, ld, B, L, n_heads, hd, rot, 10000.0f, pos0, 0);
    void *gx = to_dev(x, T * ld, SSM_DTYPE_BF16);
    int64_t *gpos = to_dev_bytes(pos0, B * sizeof(int64_t));
    OK(cuda_rope_apply(gx, ld, B, L, n_heads, hd, rot, 10000.0f, gpos, 0, 0));
    float *h = from_dev(gx, T * ld, SSM_DTYPE_BF16);
    OK(cuda_rope_apply(gx, ld, B, L, n_heads, hd, rot, 10000.0f, gpos, 1, 0));
    float *back = from_dev(gx, T * ld, SSM_DTYPE_BF16);
    int ok = 1;
    printf("rope   B=%d L=%-3d heads %d hd=%-3d rot %-3d pos %lld:", B, L, n_heads, hd, rot, (long long)p1);
    report("forward", rel_err(h, ref, T * ld), 4e-3, &ok);
    report("inverse", rel_err(back, x, T * ld), 8e-3, &ok);
    end_case(ok);
    free(pos0), free(x), free(ref), free(h), free(back);
    cudaFree(gx), cudaFree(gpos);
}

int main(void) {
    rng_state = 0x6A09E667F3BCC908ull;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("test_gpu_attention: skipped: no CUDA device\n");
        return 77;
    }
    /* this pass's keys: B, L, H, Hkv, hd, padding */
    test_pass(1, 1, 1, 1, 8, 0);
    test_pass(2, 77, 4, 2, 24, 3);
    test_pass(1, 300, 6, 2, 64, 0);
    test_pass(2, 129, 2, 1, 128, 8);
    test_pass(3, 64, 8, 2, 12, 1);
    test_pass(1, 200, 4, 4, 100, 0);
    test_pass(2, 1024, 12, 12, 64, 0); /* the hybrids' shape, one layer's heads */
    /* against a cache: the decode step (L = 1) and windows */
    const int64_t pre_a[3] = {0, 5, 130}, pre_b[2] = {63, 64};
    test_cache(3, 1, 4, 2, 24, pre_a, 200);
    test_cache(3, 37, 4, 2, 24, pre_a, 200);
    test_cache(2, 1, 8, 1, 128, pre_b, 160);
    test_cache(2, 65, 2, 2, 64, pre_b, 160);
    /* the decode step at longer caches: the split-key kernel's parts, groups of 10 query heads
     * (two passes of its 8), head dims 100 and 64 */
    const int64_t pre_c[2] = {2047, 700}, pre_d[1] = {5000};
    test_cache(2, 1, 20, 2, 100, pre_c, 2100);
    test_cache(1, 1, 12, 12, 64, pre_d, 5001);
    /* rope: B, L, heads, hd, rot_dim, padding, position of sequence 1 */
    test_rope(2, 37, 4, 24, 24, 3, 1000);
    test_rope(1, 300, 2, 64, 32, 0, 0);
    test_rope(3, 5, 8, 128, 128, 0, 100000);
    return gpu_test_result();
}
