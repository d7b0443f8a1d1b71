// embedding.cu: the token embedding lookup and its scatter-add backward on the GPU, the twin
// of libssm/cpu/embedding.c.
//
// The forward is one block per row; columns move as float4 when D is a multiple of 4 and the
// pointers are 16-byte aligned (each row then starts aligned too). Token ids are trusted to lie
// in [0, V) (V is not passed; the caller's data loader checks).
//
// The backward is deterministic (the same bits every run, so that a training run repeats and
// resumes exactly): rows repeat tokens, and adding them with atomics would round in whatever
// order they land. Instead the positions are sorted by token (CUB's stable radix sort: within a
// token, positions stay in order, the CPU twin's order), then
//   1. each chunk of CHUNK sorted positions sums its run of each token in order, a partial sum
//      per (chunk, token), stored at the run's first sorted index;
//   2. each token's partials, one per chunk its run touches, are added in chunk order into
//      d_table[token] by the chunk where the run starts.
// Every element is written by one thread in a fixed order: no atomics.
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"

namespace {

constexpr int THREADS = 128;

// grid (T), block (THREADS)
template <bool VEC>
__global__ void __launch_bounds__(THREADS) embed_fwd_kernel(float *out, const int32_t *tokens,
                                                            const float *table, int D) {
#if __CUDA_ARCH__ >= 900
    // a decode step's first projection (launched with programmatic dependent launch) may start
    // now and load its weights; it waits for this kernel's rows before reading them
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    const size_t t = blockIdx.x;
    const float *src = table + (size_t)__ldg(tokens + t) * D; // (D)
    float *dst = out + t * D;                                  // (D)
    if (VEC) {
        for (int c = threadIdx.x; c < D / 4; c += THREADS)
            reinterpret_cast<float4 *>(dst)[c] = __ldg(reinterpret_cast<const float4 *>(src) + c);
    } else {
        for (int c = threadIdx.x; c < D; c += THREADS) dst[c] = __ldg(src + c);
    }
}

constexpr int CHUNK = 256; // sorted positions per block of the backward's two passes

// positions[t] = t
__global__ void iota_kernel(int32_t *positions, int T) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < T) positions[t] = t;
}

// grid (chunks, column tiles), block (THREADS): pass 1. key (T) the sorted tokens, pos (T) their
// positions; partial (T, D): at the first sorted index of each run piece, the piece's sum.
__global__ void __launch_bounds__(THREADS) embed_bwd_partial_kernel(float *partial, const int32_t *key,
                                                                    const int32_t *pos, const float *d_out,
                                                                    int T, int D) {
    const int col = blockIdx.y * THREADS + threadIdx.x;
    if (col >= D) return;
    const int first = blockIdx.x * CHUNK, end = min(first + CHUNK, T);
    float acc = 0.0f;
    int start = first;
    for (int i = first; i < end; i++) {
        acc += __ldg(d_out + (size_t)__ldg(pos + i) * D + col);
        if (i + 1 == end || __ldg(key + i + 1) != __ldg(key + i)) { // the piece ends here
            partial[(size_t)start * D + col] = acc;
            acc = 0.0f, start = i + 1;
        }
    }
}

// grid (chunks, column tiles), block (THREADS): pass 2, the runs that start in this chunk:
// d_table[token] += its pieces' partials, in order (the pieces after the first start at chunk
// boundaries)
__global__ void __launch_bounds__(THREADS) embed_bwd_sum_kernel(float *d_table, const int32_t *key,
                                                                const float *partial, int T, int D) {
    const int col = blockIdx.y * THREADS + threadIdx.x;
    if (col >= D) return;
    const int first = blockIdx.x * CHUNK, end = min(first + CHUNK, T);
    for (int i = first; i < end; i++) {
        const int k = __ldg(key + i);
        if (i > 0 && __ldg(key + i - 1) == k) continue; // not a run's first position
        float sum = partial[(size_t)i * D + col];
        for (int j = first + CHUNK; j < T && __ldg(key + j) == k; j += CHUNK) sum += partial[(size_t)j * D + col];
        d_table[(size_t)k * D + col] += sum;
    }
}

// The backward's workspace: sorted tokens, positions, sorted positions (T each), the partial
// sums (T, D), then CUB's own.
struct bwd_layout { size_t keys, pos, pos_sorted, partial, cub, cub_bytes, total; };
bwd_layout layout(int T, int D) {
    bwd_layout w = {};
    const size_t ints = ((size_t)T * sizeof(int32_t) + 255) & ~(size_t)255;
    w.keys = 0, w.pos = ints, w.pos_sorted = 2 * ints, w.partial = 3 * ints;
    w.cub = w.partial + (((size_t)T * D * sizeof(float) + 255) & ~(size_t)255);
    cub::DeviceRadixSort::SortPairs(nullptr, w.cub_bytes, (const int32_t *)nullptr, (int32_t *)nullptr,
                                    (const int32_t *)nullptr, (int32_t *)nullptr, T);
    w.total = w.cub + w.cub_bytes;
    return w;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

ssm_status check(const char *fn, const void *a, const int32_t *tokens, const void *b, int T,
                 int D) {
    if (!a || !tokens || !b) return ssm_set_error(SSM_ERR_ARG, "%s: NULL pointer", fn);
    if (T < 1 || D < 1) return ssm_set_error(SSM_ERR_ARG, "%s: T=%d D=%d must be >= 1", fn, T, D);
    return SSM_OK;
}

} // namespace

extern "C" ssm_status cuda_embedding_forward(float *out, const int32_t *tokens, const float *table,
                                             int T, int D, cudaStream_t stream) {
    ssm_status st = check("cuda_embedding_forward", out, tokens, table, T, D);
    if (st != SSM_OK) return st;
    if (D % 4 == 0 && aligned16(out) && aligned16(table))
        embed_fwd_kernel<true><<<T, THREADS, 0, stream>>>(out, tokens, table, D);
    else
        embed_fwd_kernel<false><<<T, THREADS, 0, stream>>>(out, tokens, table, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_forward");
    return SSM_OK;
}

extern "C" size_t cuda_embedding_backward_workspace(int T, int D) {
    return T > 0 && D > 0 ? layout(T, D).total : 0;
}

extern "C" ssm_status cuda_embedding_backward(float *d_table, const int32_t *tokens, const float *d_out, int T,
                                              int D, void *workspace, size_t workspace_bytes,
                                              cudaStream_t stream) {
    ssm_status st = check("cuda_embedding_backward", d_table, tokens, d_out, T, D);
    if (st != SSM_OK) return st;
    const bwd_layout w = layout(T, D);
    if (!workspace || workspace_bytes < w.total)
        return ssm_set_error(SSM_ERR_ARG, "cuda_embedding_backward: workspace of %zu bytes, needs %zu",
                             workspace_bytes, w.total);
    char *base = (char *)workspace;
    int32_t *keys = (int32_t *)(base + w.keys), *pos = (int32_t *)(base + w.pos);
    int32_t *pos_sorted = (int32_t *)(base + w.pos_sorted);
    float *partial = (float *)(base + w.partial);
    iota_kernel<<<(T + 255) / 256, 256, 0, stream>>>(pos, T);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_backward");
    size_t cub_bytes = w.cub_bytes;
    cudaError_t e = cub::DeviceRadixSort::SortPairs(base + w.cub, cub_bytes, tokens, keys, pos, pos_sorted, T, 0,
                                                    32, stream);
    if (e != cudaSuccess) return ssm_cuda_fail(e, "cuda_embedding_backward: sorting the tokens");
    const dim3 grid((unsigned)((T + CHUNK - 1) / CHUNK), (unsigned)((D + THREADS - 1) / THREADS));
    embed_bwd_partial_kernel<<<grid, THREADS, 0, stream>>>(partial, keys, pos_sorted, d_out, T, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_backward");
    embed_bwd_sum_kernel<<<grid, THREADS, 0, stream>>>(d_table, keys, partial, T, D);
    SSM_CUDA_CHECK_LAUNCH("cuda_embedding_backward");
    return SSM_OK;
}
