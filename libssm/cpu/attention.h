/* attention.h: causal self-attention of the hybrid layer kinds (NemotronH, Jamba, mamba_ssm's
 * MHA), fp32 on the CPU: forward (also the decode step against a KV cache) and backward, with
 * grouped-query attention (GQA). Rotary embeddings are rope.h.
 *
 * Shapes: B sequences of L query rows, T = B * L, row t = b * L + l; H query heads and Hkv
 * key/value heads of hd channels, query head h reads kv head h / (H / Hkv). Sequence b has
 * n_b = prefix[b] + L keys (prefix NULL: 0), and query l (absolute position prefix[b] + l)
 * attends to keys 0 .. prefix[b] + l:
 *   s_{l,j} = scale * q_l . k_j        (j <= prefix + l; masked above)
 *   p_l     = softmax_j(s_l)           (fp32, the row's max subtracted)
 *   o_l     = sum_j p_{l,j} v_j
 *   lse_l   = log sum_j exp(s_{l,j})
 * The equations sit above the code that computes them in attention.c, with the numerical
 * choices (fp32 products, the softmax's running sums in double, tiles of 64 keys). */
#ifndef SSM_CPU_ATTENTION_H
#define SSM_CPU_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

/* the products of the tiles: plain loops (GCC vector code) or cblas_sgemm. The default is the
 * loops where the build has AVX (-march=native on the development machine: AVX-512, where they
 * are 1.4x (forward) to 2x (backward) faster than OpenBLAS's kernels; attention.c, 'Loops or
 * BLAS'), BLAS on a portable SSE2 build. */
enum { CPU_ATTENTION_KERNEL_DEFAULT = 0, CPU_ATTENTION_KERNEL_LOOPS = 1, CPU_ATTENTION_KERNEL_BLAS = 2 };

typedef struct cpu_attention_args {
    int B, L;              /* sequences; queries per sequence: T = B * L query rows, row t = b * L + l */
    int H, Hkv, hd;        /* query heads, key/value heads (GQA: query head h reads kv head h / (H / Hkv)), head dim */
    float scale;           /* softmax scale, usually 1 / sqrt(hd) */
    const float *q;        /* (T, H * hd), row stride ld_q */
    int ld_q;
    const float *k, *v;    /* keys/values of sequence b: rows [0, n_keys_b) of k + b * kv_batch_stride, row stride ld_kv */
    int ld_kv;
    size_t kv_batch_stride; /* floats between sequences' first key rows: L * ld_kv for the keys of this call, cap * ld_kv for a KV cache */
    const int64_t *prefix; /* (B) keys before this call's first query (a KV cache's length), or NULL = 0: sequence b has
                              n_keys_b = prefix[b] + L keys and query l (absolute position prefix[b] + l) attends to keys
                              0 .. prefix[b] + l (causal) */
    float *out;            /* (T, H * hd), row stride ld_out: softmax(q k^T * scale + causal mask) v per head */
    int ld_out;
    float *lse;            /* (B, H, L) or NULL: the log-sum-exp of each query row's scaled scores, kept for the backward */
    /* backward only (prefix must be NULL): d_out in (stride ld_out); dq written (stride ld_q); dk, dv written (the
     * layout of k, v: stride ld_kv, kv_batch_stride = L * ld_kv); needs lse from the forward */
    const float *d_out; float *dq, *dk, *dv;
    float *scratch; size_t scratch_floats; /* at least cpu_attention_scratch_floats(args, threads, backward) */
    int threads;           /* the thread count the scratch was sized for; 0: omp_get_max_threads() */
    /* added: which products (CPU_ATTENTION_KERNEL_*, 0: the default). The backward also reads
     * out (the forward's output, stride ld_out) for the rows' sums do_l . o_l. */
    int kernel;
} cpu_attention_args;

/* Floats of scratch that the forward (backward = 0) or the backward (backward = 1) needs with
 * `threads` threads (<= 0: a->threads, then omp_get_max_threads()). Reads B, L, H, Hkv, hd
 * only. Per thread, with R = rows * (H / Hkv) stacked query rows (rows = 64 positions, fewer
 * when H / Hkv > 4 so that R <= 256) and hd16 = hd rounded up to 16: forward
 * R (hd + 64 + hd16) + 64 (hd + hd16); backward the largest of that, 2 R (hd + 64) + R hd16 +
 * 64 (2 hd + hd16) (dq by query blocks), 64 (2 hd + 4 hd16 + 128) (dk, dv by key tiles) and
 * 3 (H / Hkv) 64 hd + 64 (256 + 3 hd) (the one pass), plus B H L once for the rows' do . o;
 * each array rounded up to 16 floats, 16 floats of slack per thread to align its start to 64
 * bytes. About 0.6 MiB per thread at hd 128, H / Hkv = 4: never L^2. */
size_t cpu_attention_scratch_floats(const cpu_attention_args *a, int threads, int backward);

/* out (and lse when non-NULL) from q, k, v. Also the decode step: L = 1 with prefix = the
 * cache lengths, the new key and value already appended to the cache (at row prefix[b]).
 * Deterministic: bitwise independent of the thread count; with the loop kernel a row's result
 * does not depend on how the rows are split into calls either (L decode steps, or windows
 * against a cache, equal one forward bitwise), only on its keys. */
void cpu_attention_forward(const cpu_attention_args *a);

/* dq, dk, dv of J = sum(out * d_out) from d_out, q, k, v, out and lse (from the forward);
 * prefix must be NULL and k, v the keys of this call. Recomputes the probabilities by tiles
 * (never stores L x L per head). dk and dv of a kv head sum over the query heads that share
 * it in a fixed order: bitwise independent of the thread count. */
void cpu_attention_backward(const cpu_attention_args *a);

/* cpu_attention_backward by a given way (tests, benchmarks): path 1 the two passes (dq by query
 * blocks, then dk, dv by key tiles: 7 products per pair of tiles, parallel over tiles), 2 the one
 * pass per (sequence, kv head) (5 products; loops kernel and hd % 16 == 0 only), 0 the choice
 * of cpu_attention_backward (the one pass when its B * Hkv items keep the threads >= 5/7 busy).
 * With the loop kernel both ways give the same bits. */
void cpu_attention_backward_path(const cpu_attention_args *a, int path);

#endif
