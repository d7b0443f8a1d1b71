/* attention.c: causal self-attention (with GQA and a KV cache), fp32, forward and backward,
 * flash-attention style: per block of query rows, the keys in tiles of 64, the softmax online
 * (a running max and sum per row), so that no thread holds more than a tile of scores per row.
 *
 *   s_{l,j} = scale * q_l . k_j            for j <= prefix + l (keys above are masked)
 *   p_{l,j} = exp(s_{l,j} - m_l) / sum_j exp(s_{l,j} - m_l),   m_l = max_j s_{l,j}
 *   o_l     = sum_j p_{l,j} v_j
 *   lse_l   = log sum_j exp(s_{l,j}) = m_l + log sum_j exp(s_{l,j} - m_l)
 * Backward (J = sum(o * do)), with p recomputed from q, k and lse:
 *   dv_j = sum_l p_{l,j} do_l
 *   dp_{l,j} = do_l . v_j
 *   ds_{l,j} = p_{l,j} (dp_{l,j} - D_l),   D_l = sum_j p_{l,j} dp_{l,j} = do_l . o_l
 *   dq_l = scale * sum_j ds_{l,j} k_j
 *   dk_j = scale * sum_l ds_{l,j} q_l
 *   GQA: dk_j, dv_j of kv head g sum over the query heads h of g (h / (H / Hkv) = g)
 *
 * Numerics. Products (q . k, p v, do . v, ds k, ds q, p do) in fp32, each element summed in
 * index order (the loop kernel: one fused multiply-add chain per element). The softmax per
 * row and key tile of 64 (the online softmax), scores and exps in fp32:
 *   m' = max(m, max_j s_j);  alpha = exp(m - m');  l' = alpha l + sum_j exp(s_j - m')  (l in double)
 *   O' = alpha O + sum_j exp(s_j - m') v_j;          at the end o = O / l, lse = m + log l
 * The sum l and the rows' D_l = do_l . o_l are accumulated in double (cheap: one term per
 * score, hd terms per row), the rest in fp32. exp is cpu_exp (~1e-7 relative). Every row
 * has key 0, so no row is ever fully masked and l >= 1.
 *
 * Determinism. Each output element is written by one work item, and inside an item the order
 * of every sum is fixed: results are bitwise independent of the thread count. The key tiles
 * start at multiples of 64 of the absolute key position, and with the loop kernel each score
 * and each output element is the same chain of operations whatever the other rows of its
 * block (masked keys add exact zeros), so a row's result depends only on its own keys: L
 * decode steps, or windows against a cache, give the forward's bits. The backward runs either
 * as two passes (dq by blocks of query rows, then dk, dv by key tiles: parallel over tiles) or
 * as one pass per (sequence, kv head) (fewer products, parallel over B * Hkv only), chosen by
 * the thread count; the two compute every value by the same operations in the same order and
 * give the same bits (tested), so the choice never shows in the results.
 *
 * Loops or BLAS. The tile products are either the loop kernel below (GCC vector code: a register
 * block of 4 rows x 64 columns with AVX-512, 3 x 32 with AVX; the key tile transposed once per
 * block of query rows) or single-threaded cblas_sgemm calls from inside the OpenMP loop
 * (m n k <= 65536 * 4, below OpenBLAS's threshold for threading a call, so that a call never
 * spreads over threads whatever the caller's OpenMP state). Measured on the 2-core development
 * machine (AMD EPYC with AVX-512, -march=native; B 1, L 1024, H 4, hd 64, one thread, CPU time,
 * the machine shared with other builds), causal flops:
 *                       forward               backward              SGEMM 1024^3
 *   loops               6.0 ms  89 GFLOP/s    12.2 ms 110 GFLOP/s
 *   BLAS, Haswell       8.3 ms  65            24.5 ms  55           99-105 GFLOP/s
 *   BLAS, Cooperlake    5.8 ms  93            16.0 ms  84           184-190
 * (OpenBLAS 0.3.21 with the kernels of OPENBLAS_CORETYPE=Haswell, which this machine's
 * environment sets, and with its own choice on this CPU). The loops are the default:
 * 1.4x (forward) and 2x (backward) faster than BLAS with the Haswell kernels, within 4% of the
 * AVX-512 kernels forward and 1.3x faster backward (the one pass below, 5 products instead of
 * 7), and only their results are independent of how the rows are split into calls (decode
 * steps and windows give the forward's bits). On a build without AVX (SSE2) BLAS is the
 * default; a->kernel picks either. tests/unit/test_attention.c prints these figures. */
#include "attention.h"

#include <assert.h>
#include <cblas.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "cpu_ops.h"

#define TILE 64       /* keys per tile; query rows per block of the backward's key pass */
#define MAX_STACK 256 /* stacked rows (query rows x heads of a group) per forward block */
/* rows per cblas_sgemm call: rows * 64 * hd <= 65536 * 4 (OpenBLAS runs such a call on the
 * calling thread: interface/gemm.c, SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD) */
#define BLAS_MNK 262144

/* The loop kernel's vectors: VW floats (the machine's widest: AVX-512 16, AVX 8, else 4), and
 * the register blocks of its two products, RB rows x QK_NV (PV_NV) vectors (AVX-512: 4 rows x
 * 64 columns; AVX: 3 x 32), sized so that the accumulators stay in the register file (32
 * vector registers with AVX-512, 16 else). The per-element arithmetic (one chain over the
 * inner index) does not depend on them. */
#if defined(__AVX512F__)
#define VW 16
#define QK_NV 4
#define PV_NV 4
#define RB 4
#elif defined(__AVX__)
#define VW 8
#define QK_NV 4
#define PV_NV 4
#define RB 3
#else
#define VW 4
#define QK_NV 4
#define PV_NV 4
#define RB 3
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float)), aligned(4), may_alias));

/* sizes rounded to 16 floats, so that every scratch array starts on its own 64-byte line */
static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

/* a thread's workspace starts on a 64-byte line (the caller's scratch need not: 64-byte loads
 * that straddle two lines halve the loop kernel's rate); 16 floats of slack per thread pay for it */
#define SLACK 16
static float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static int n_threads(const cpu_attention_args *a, int threads) {
    if (threads <= 0) threads = a ? a->threads : 0;
    return threads > 0 ? threads : omp_get_max_threads();
}

static int hd16_of(const cpu_attention_args *a) { return (int)al16((size_t)a->hd); }
/* the default kernel: the loops where the build has AVX (the faster there, AVX-512 by far: see
 * 'Loops or BLAS' above), OpenBLAS on narrower vectors (a portable build, SSE2) */
#ifdef __AVX__
#define DEFAULT_BLAS 0
#else
#define DEFAULT_BLAS 1
#endif
static int use_blas(const cpu_attention_args *a) {
    return a->kernel == CPU_ATTENTION_KERNEL_BLAS || (a->kernel == CPU_ATTENTION_KERNEL_DEFAULT && DEFAULT_BLAS);
}

/* query positions per forward / dq block: 64, fewer for wide groups (H / Hkv > 4) so that the
 * block's stacked rows (positions x the group's heads, which share every key tile) stay <= 256 */
static int block_rows(const cpu_attention_args *a) {
    int hpg = a->H / a->Hkv, qr = MAX_STACK / hpg;
    qr = qr < 1 ? 1 : (qr > TILE ? TILE : qr);
    return qr < a->L ? qr : (a->L > 0 ? a->L : 1);
}

/* ---- per-thread scratch ------------------------------------------------------------------ */

static size_t thread_fwd(const cpu_attention_args *a) {
    size_t R = (size_t)block_rows(a) * (a->H / a->Hkv), hd = a->hd, hd16 = hd16_of(a);
    /* Qs (R, hd), S (R, 64), O (R, hd16), K^T tile (hd, 64), padded V tile (64, hd16) */
    return al16(R * hd) + al16(R * TILE) + al16(R * hd16) + al16(hd * TILE) + al16(TILE * hd16) + SLACK;
}

static size_t thread_dq(const cpu_attention_args *a) {
    size_t R = (size_t)block_rows(a) * (a->H / a->Hkv), hd = a->hd, hd16 = hd16_of(a);
    /* Qs, dOs (R, hd), S, dP (R, 64), dQ (R, hd16), K^T, V^T (hd, 64), padded K (64, hd16) */
    return 2 * al16(R * hd) + 2 * al16(R * TILE) + al16(R * hd16) + 2 * al16(hd * TILE) + al16(TILE * hd16) + SLACK;
}

static size_t thread_dkv(const cpu_attention_args *a) {
    size_t hd = a->hd, hd16 = hd16_of(a);
    /* Q^T, dO^T (hd, 64), padded Q, dO (64, hd16), S^T, dP^T (64, 64), dK, dV (64, hd16) */
    return 2 * al16(hd * TILE) + 4 * al16(TILE * hd16) + 2 * al16(TILE * TILE) + SLACK;
}

static size_t thread_single(const cpu_attention_args *a);

size_t cpu_attention_scratch_floats(const cpu_attention_args *a, int threads, int backward) {
    threads = n_threads(a, threads);
    size_t per = thread_fwd(a);
    if (backward) {
        size_t dq = thread_dq(a), dkv = thread_dkv(a), sp = thread_single(a);
        per = per > dq ? per : dq;
        per = per > dkv ? per : dkv;
        per = per > sp ? per : sp;
        return al16((size_t)a->B * a->H * a->L) + (size_t)threads * per;
    }
    return (size_t)threads * per;
}

/* ---- the loop kernel --------------------------------------------------------------------- */

/* S (R, 64) = A (R, hd; row stride lda) . BT (hd, 64), R <= 4, by column chunks of QK_NV
 * vectors: each score one chain of fused multiply-adds over d = 0 .. hd - 1, the same for
 * every R and chunk */
static inline __attribute__((always_inline)) void qk_rows(const int R, int hd, const float *A, size_t lda,
                                                          const float *BT, float *S) {
    for (int c0 = 0; c0 < TILE; c0 += QK_NV * VW) {
        vf acc[4][QK_NV];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < QK_NV; c++) acc[r][c] = (vf){0};
        for (int d = 0; d < hd; d++) {
            const vf *bt = (const vf *)(BT + (size_t)d * TILE + c0);
            vf b[QK_NV];
            for (int c = 0; c < QK_NV; c++) b[c] = bt[c];
            for (int r = 0; r < R; r++) {
                float x = A[(size_t)r * lda + d];
                for (int c = 0; c < QK_NV; c++) acc[r][c] += x * b[c];
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < QK_NV; c++) *(vf *)(S + (size_t)r * TILE + c0 + VW * c) = acc[r][c];
    }
}

static void qk_loops(int R, int hd, const float *A, size_t lda, const float *BT, float *S) {
    int r = 0;
    for (; r + RB <= R; r += RB) qk_rows(RB, hd, A + r * lda, lda, BT, S + (size_t)r * TILE);
    switch (R - r) {
    case 3: qk_rows(3, hd, A + r * lda, lda, BT, S + (size_t)r * TILE); break;
    case 2: qk_rows(2, hd, A + r * lda, lda, BT, S + (size_t)r * TILE); break;
    case 1: qk_rows(1, hd, A + r * lda, lda, BT, S + (size_t)r * TILE); break;
    }
}

/* O (R, VW NV; row stride ldo) += P (R, n; row stride 64) . V (n, VW NV; row stride ldv),
 * R <= 4, NV <= PV_NV: each element one chain of fused multiply-adds over j = 0 .. n - 1 */
static inline __attribute__((always_inline)) void pv_rows(const int R, const int NV, int n, const float *P,
                                                          const float *V, size_t ldv, float *O, int ldo) {
    vf acc[4][PV_NV];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) acc[r][c] = *(const vf *)(O + (size_t)r * ldo + VW * c);
    for (int j = 0; j < n; j++) {
        const float *vj = V + (size_t)j * ldv;
        vf w[PV_NV];
        for (int c = 0; c < NV; c++) w[c] = *(const vf *)(vj + VW * c);
        for (int r = 0; r < R; r++) {
            float p = P[(size_t)r * TILE + j];
            for (int c = 0; c < NV; c++) acc[r][c] += p * w[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) *(vf *)(O + (size_t)r * ldo + VW * c) = acc[r][c];
}

#define PV_CASE(R_, NV_) \
    case (R_) * 8 + (NV_): pv_rows(R_, (NV_) < PV_NV ? (NV_) : PV_NV, n, P, V, ldv, O, ldo); break;

static void pv_block(int R, int NV, int n, const float *P, const float *V, size_t ldv, float *O, int ldo) {
    switch (R * 8 + NV) {
        PV_CASE(1, 1) PV_CASE(1, 2) PV_CASE(1, 3) PV_CASE(1, 4)
        PV_CASE(2, 1) PV_CASE(2, 2) PV_CASE(2, 3) PV_CASE(2, 4)
        PV_CASE(3, 1) PV_CASE(3, 2) PV_CASE(3, 3) PV_CASE(3, 4)
        PV_CASE(4, 1) PV_CASE(4, 2) PV_CASE(4, 3) PV_CASE(4, 4)
    }
}

/* O (R, hd16; row stride ldo) += P (R, n) . V (n, hd16), V's columns hd .. hd16 - 1 readable
 * (zero), by column chunks of PV_NV vectors */
static void pv_loops(int R, int n, const float *P, const float *V, size_t ldv, float *O, int ldo, int hd16) {
    for (int c0 = 0; c0 < hd16; c0 += PV_NV * VW) {
        int nv = (hd16 - c0) / VW < PV_NV ? (hd16 - c0) / VW : PV_NV;
        for (int r = 0; r < R; r += RB)
            pv_block(R - r < RB ? R - r : RB, nv, n, P + (size_t)r * TILE, V + c0, ldv, O + (size_t)r * ldo + c0, ldo);
    }
}

#ifdef __AVX512F__
/* dst (16 rows, stride ldd) = src (16 rows, stride lds)^T: 16 x 16 floats through registers
 * (unpack the pairs of rows, then the pairs of pairs, then two rounds of 128-bit lane shuffles:
 * after the second unpack, vector 4 i + m holds in its lane k column 4 k + m of rows 4 i .. 4 i + 3) */
static inline void transpose16(const float *src, size_t lds, float *dst, size_t ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (size_t)i * lds);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
        __m512d a2 = _mm512_castps_pd(t[4 * i + 2]), a3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    for (int m = 0; m < 4; m++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88), u1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
        __m512 w0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88), w1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
        _mm512_storeu_ps(dst + (size_t)m * ldd, _mm512_shuffle_f32x4(u0, w0, 0x88));
        _mm512_storeu_ps(dst + (size_t)(4 + m) * ldd, _mm512_shuffle_f32x4(u1, w1, 0x88));
        _mm512_storeu_ps(dst + (size_t)(8 + m) * ldd, _mm512_shuffle_f32x4(u0, w0, 0xdd));
        _mm512_storeu_ps(dst + (size_t)(12 + m) * ldd, _mm512_shuffle_f32x4(u1, w1, 0xdd));
    }
}
#endif

/* T (hd, 64) = X (n, hd; row stride ld)^T, columns n .. 63 zero: by 16 x 16 blocks where the
 * machine has AVX-512, the rest row by row (X's rows are often a power-of-two stride apart,
 * ld = Hkv hd, which a column walk would turn into cache-set conflicts) */
static void transpose_tile(float *T, const float *X, size_t ld, int n, int hd) {
    int nj = 0, nd = 0; /* the part done by blocks: rows < nj, columns < nd */
#ifdef __AVX512F__
    nj = n & ~15, nd = hd & ~15;
    for (int j0 = 0; j0 < nj; j0 += 16)
        for (int d0 = 0; d0 < nd; d0 += 16) transpose16(X + (size_t)j0 * ld + d0, ld, T + (size_t)d0 * TILE + j0, TILE);
#endif
    for (int j = 0; j < n; j++) {
        const float *xj = X + (size_t)j * ld;
        for (int d = j < nj ? nd : 0; d < hd; d++) T[(size_t)d * TILE + j] = xj[d];
    }
    if (n < TILE)
        for (int d = 0; d < hd; d++)
            for (int j = n; j < TILE; j++) T[(size_t)d * TILE + j] = 0.0f;
}

/* Y (n, hd16) = X (n, hd), columns hd .. hd16 - 1 zero */
static void pad_rows(float *Y, const float *X, size_t ld, int n, int hd, int hd16) {
    for (int j = 0; j < n; j++) {
        memcpy(Y + (size_t)j * hd16, X + (size_t)j * ld, hd * sizeof(float));
        for (int d = hd; d < hd16; d++) Y[(size_t)j * hd16 + d] = 0.0f;
    }
}

/* ---- the tile products, either kernel ---------------------------------------------------- */

/* One key-side operand of a tile: n rows of hd (row stride ld) and, for the loop kernel, its
 * transpose (hd, 64; columns >= n zero) and a contiguous copy with rows padded to hd16 columns
 * (the pv kernel reads every row once per 4 output rows: from L1, without set conflicts) */
typedef struct {
    const float *rows;
    size_t ld;
    int n;
    const float *T;      /* (hd, 64), loops, when asked for */
    const float *padded; /* (n, hd16) for the loop kernel's pv, when asked for */
    size_t ldp;
} operand;

static operand prepare(const cpu_attention_args *a, const float *rows, size_t ld, int n, float *T, float *pad) {
    operand o = {rows, ld, n, NULL, rows, ld};
    if (use_blas(a)) return o;
    const int hd = a->hd, hd16 = hd16_of(a);
    if (T) {
        transpose_tile(T, rows, ld, n, hd);
        o.T = T;
    }
    if (pad) {
        pad_rows(pad, rows, ld, n, hd, hd16);
        o.padded = pad, o.ldp = hd16;
    }
    return o;
}

/* S (R, 64) = A (R, hd; row stride lda) . X^T, columns >= X.n unspecified (BLAS) or 0 (loops) */
static void mm_qk(const cpu_attention_args *a, int R, const float *A, size_t lda, const operand *X, float *S) {
    const int hd = a->hd;
    if (!use_blas(a)) {
        qk_loops(R, hd, A, lda, X->T, S);
        return;
    }
    int rb = BLAS_MNK / (TILE * hd);
    rb = rb < 1 ? 1 : rb;
    for (int r0 = 0; r0 < R; r0 += rb) {
        int m = R - r0 < rb ? R - r0 : rb;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, X->n, hd, 1.0f, A + r0 * lda, (int)lda, X->rows,
                    (int)X->ld, 0.0f, S + (size_t)r0 * TILE, TILE);
    }
}

/* O (R, hd; row stride hd16) += P (R, n; row stride 64) . X (n = X.n, hd) */
static void mm_pv(const cpu_attention_args *a, int R, const float *P, const operand *X, float *O) {
    const int hd = a->hd, hd16 = hd16_of(a);
    if (!use_blas(a)) {
        pv_loops(R, X->n, P, X->padded, X->ldp, O, hd16, hd16);
        return;
    }
    int rb = BLAS_MNK / (TILE * hd);
    rb = rb < 1 ? 1 : rb;
    for (int r0 = 0; r0 < R; r0 += rb) {
        int m = R - r0 < rb ? R - r0 : rb;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, X->n, 1.0f, P + (size_t)r0 * TILE, TILE,
                    X->rows, (int)X->ld, 1.0f, O + (size_t)r0 * hd16, hd16);
    }
}

/* ---- forward ----------------------------------------------------------------------------- */

/* Sequence b, kv head g, query positions l0 .. l0 + nr - 1 of every query head of g, stacked
 * as rows r = hl * nr + i (head g * hpg + hl, position l0 + i): they share every key tile. */
static void forward_block(const cpu_attention_args *a, int b, int g, int l0, int nr, float *ws) {
    const int hd = a->hd, hd16 = hd16_of(a), hpg = a->H / a->Hkv, R = nr * hpg, L = a->L;
    const int64_t pre = a->prefix ? a->prefix[b] : 0, nkeys = pre + L;
    const float scale = a->scale;
    float *Qs = ws, *S = Qs + al16((size_t)R * hd), *O = S + al16((size_t)R * TILE);
    float *KT = O + al16((size_t)R * hd16), *Vp = KT + al16((size_t)hd * TILE);
    float m[R];
    double lsum[R];
    for (int hl = 0; hl < hpg; hl++)
        for (int i = 0; i < nr; i++) {
            size_t t = (size_t)b * L + l0 + i;
            memcpy(Qs + ((size_t)hl * nr + i) * hd, a->q + t * a->ld_q + (size_t)(g * hpg + hl) * hd, hd * sizeof(float));
        }
    memset(O, 0, (size_t)R * hd16 * sizeof(float));
    const float *kb = a->k + (size_t)b * a->kv_batch_stride + (size_t)g * hd;
    const float *vb = a->v + (size_t)b * a->kv_batch_stride + (size_t)g * hd;
    const int64_t ntiles = (pre + l0 + nr - 1) / TILE + 1; /* the tiles up to the last row's key */
    for (int64_t kt = 0; kt < ntiles; kt++) {
        const int64_t j0 = kt * TILE;
        const int nk = nkeys - j0 < TILE ? (int)(nkeys - j0) : TILE;
        operand K = prepare(a, kb + (size_t)j0 * a->ld_kv, a->ld_kv, nk, KT, NULL);
        operand V = prepare(a, vb + (size_t)j0 * a->ld_kv, a->ld_kv, nk, NULL, Vp);
        /* rows in groups (the loop kernel: 4 rows, so that the tile's operands stay in L1 from
         * one group to the next; BLAS: the whole block per call) */
        const int step = use_blas(a) ? R : 4;
        for (int r0 = 0; r0 < R; r0 += step) {
            const int rr = R - r0 < step ? R - r0 : step;
            /* s_{l,j} = scale * q_l . k_j (the product here, the scale below) */
            mm_qk(a, rr, Qs + (size_t)r0 * hd, hd, &K, S + (size_t)r0 * TILE);
            for (int r = r0; r < r0 + rr; r++) {
                float *s = S + (size_t)r * TILE, *o = O + (size_t)r * hd16;
                /* keys j <= prefix + l of this tile */
                const int64_t lim = pre + l0 + r % nr - j0 + 1;
                const int vj = lim < TILE ? (int)lim : TILE;
                if (vj <= 0) {
                    for (int j = 0; j < nk; j++) s[j] = 0.0f;
                    continue;
                }
                /* m' = max(m, max_j s_j) */
                float mt = -INFINITY;
#pragma omp simd reduction(max : mt)
                for (int j = 0; j < vj; j++) {
                    float x = s[j] * scale; /* stored rounded: the max's own p is exp(0) = 1 exactly */
                    s[j] = x;
                    mt = x > mt ? x : mt;
                }
                const float mn = kt == 0 ? mt : fmaxf(m[r], mt);
                /* p_j = exp(s_j - m'), l' = alpha l + sum_j p_j (in double) */
                double sum = 0.0;
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j < vj; j++) {
                    float p = cpu_exp(s[j] - mn);
                    s[j] = p;
                    sum += p;
                }
                for (int j = vj; j < nk; j++) s[j] = 0.0f;
                if (kt == 0)
                    lsum[r] = sum;
                else {
                    /* alpha = exp(m - m'): O' = alpha O (+ P V below) */
                    const float alpha = cpu_exp(m[r] - mn);
                    lsum[r] = lsum[r] * alpha + sum;
#pragma omp simd
                    for (int d = 0; d < hd16; d++) o[d] *= alpha;
                }
                m[r] = mn;
            }
            /* O += P V */
            mm_pv(a, rr, S + (size_t)r0 * TILE, &V, O + (size_t)r0 * hd16);
        }
    }
    for (int r = 0; r < R; r++) {
        const int hl = r / nr, i = r % nr, h = g * hpg + hl;
        const size_t t = (size_t)b * L + l0 + i;
        /* o = O / l */
        const float inv = (float)(1.0 / lsum[r]);
        float *out = a->out + t * a->ld_out + (size_t)h * hd;
        const float *o = O + (size_t)r * hd16;
        for (int d = 0; d < hd; d++) out[d] = o[d] * inv;
        /* lse = m + log l */
        if (a->lse) a->lse[((size_t)b * a->H + h) * L + l0 + i] = (float)((double)m[r] + log(lsum[r]));
    }
}

void cpu_attention_forward(const cpu_attention_args *a) {
    assert(a->Hkv > 0 && a->H % a->Hkv == 0 && a->hd > 0);
    if (a->B <= 0 || a->L <= 0) return;
    const int nt = n_threads(a, 0), nr = block_rows(a), nb = (a->L + nr - 1) / nr;
    const size_t per = thread_fwd(a);
    assert(a->scratch && a->scratch_floats >= (size_t)nt * per);
    const long items = (long)nb * a->B * a->Hkv;
#pragma omp parallel num_threads(nt)
    {
        float *ws = align64(a->scratch + (size_t)omp_get_thread_num() * per);
        /* the blocks of later positions (more keys) first */
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            const int blk = nb - 1 - (int)(it / ((long)a->B * a->Hkv)), bg = (int)(it % ((long)a->B * a->Hkv));
            const int l0 = blk * nr, n = a->L - l0 < nr ? a->L - l0 : nr;
            forward_block(a, bg / a->Hkv, bg % a->Hkv, l0, n, ws);
        }
    }
}

/* ---- backward ---------------------------------------------------------------------------- */

/* p = exp(scale s - lse): one expression for every path of the backward, so that they round
 * alike (ds = p (dp - D) likewise, written out where it is used) */
static inline __attribute__((always_inline)) float prob_of(float s, float scale, float lse) {
    return cpu_exp(s * scale - lse);
}

/* dq for sequence b, kv head g, positions l0 .. l0 + nr - 1 of the group's query heads
 * (stacked as in the forward), over the key tiles up to the last row:
 *   p = exp(s - lse), dp = do . v, ds = p (dp - D), dq = scale * sum_j ds k_j */
static void dq_block(const cpu_attention_args *a, int b, int g, int l0, int nr, const float *Dl, float *ws) {
    const int hd = a->hd, hd16 = hd16_of(a), hpg = a->H / a->Hkv, R = nr * hpg, L = a->L;
    const float scale = a->scale;
    float *Qs = ws, *dOs = Qs + al16((size_t)R * hd), *S = dOs + al16((size_t)R * hd);
    float *dP = S + al16((size_t)R * TILE), *dQ = dP + al16((size_t)R * TILE);
    float *KT = dQ + al16((size_t)R * hd16), *VT = KT + al16((size_t)hd * TILE), *Kp = VT + al16((size_t)hd * TILE);
    float lse[R], D[R];
    for (int hl = 0; hl < hpg; hl++)
        for (int i = 0; i < nr; i++) {
            const int h = g * hpg + hl, r = hl * nr + i;
            const size_t t = (size_t)b * L + l0 + i, bh = ((size_t)b * a->H + h) * L + l0 + i;
            memcpy(Qs + (size_t)r * hd, a->q + t * a->ld_q + (size_t)h * hd, hd * sizeof(float));
            memcpy(dOs + (size_t)r * hd, a->d_out + t * a->ld_out + (size_t)h * hd, hd * sizeof(float));
            lse[r] = a->lse[bh], D[r] = Dl[bh];
        }
    memset(dQ, 0, (size_t)R * hd16 * sizeof(float));
    const float *kb = a->k + (size_t)b * a->kv_batch_stride + (size_t)g * hd;
    const float *vb = a->v + (size_t)b * a->kv_batch_stride + (size_t)g * hd;
    const int ntiles = (l0 + nr - 1) / TILE + 1;
    for (int kt = 0; kt < ntiles; kt++) {
        const int j0 = kt * TILE, nk = L - j0 < TILE ? L - j0 : TILE;
        operand K = prepare(a, kb + (size_t)j0 * a->ld_kv, a->ld_kv, nk, KT, Kp);
        operand V = prepare(a, vb + (size_t)j0 * a->ld_kv, a->ld_kv, nk, VT, NULL);
        /* s = q . k (scaled below), dp = do . v */
        mm_qk(a, R, Qs, hd, &K, S);
        mm_qk(a, R, dOs, hd, &V, dP);
        for (int r = 0; r < R; r++) {
            float *s = S + (size_t)r * TILE;
            const float *dp = dP + (size_t)r * TILE;
            const int lim = l0 + r % nr - j0 + 1, vj = lim < TILE ? lim : TILE;
            const float lr = lse[r], Dr = D[r];
            /* ds = p (dp - D), p = exp(scale s - lse) for j <= l, 0 above */
#pragma omp simd
            for (int j = 0; j < (vj > 0 ? vj : 0); j++) s[j] = prob_of(s[j], scale, lr) * (dp[j] - Dr);
            for (int j = vj > 0 ? vj : 0; j < nk; j++) s[j] = 0.0f;
        }
        /* dq += ds k (scaled at the end) */
        mm_pv(a, R, S, &K, dQ);
    }
    for (int r = 0; r < R; r++) {
        const int h = g * hpg + r / nr;
        const size_t t = (size_t)b * L + l0 + r % nr;
        float *dq = a->dq + t * a->ld_q + (size_t)h * hd;
        const float *acc = dQ + (size_t)r * hd16;
        for (int d = 0; d < hd; d++) dq[d] = scale * acc[d];
    }
}

/* dk, dv for sequence b, kv head g, keys j0 .. j0 + nk - 1 (one tile), summed over the query
 * blocks of 64 rows from j0 on in order, within each over the group's query heads in order:
 *   p^T, ds^T as in dq_block (the transposed tile: rows are keys);
 *   dv_j = sum_l p_{l,j} do_l,  dk_j = scale * sum_l ds_{l,j} q_l */
static void dkv_block(const cpu_attention_args *a, int b, int g, int kt, const float *Dl, float *ws) {
    const int hd = a->hd, hd16 = hd16_of(a), hpg = a->H / a->Hkv, L = a->L;
    const int j0 = kt * TILE, nk = L - j0 < TILE ? L - j0 : TILE;
    const float scale = a->scale;
    float *QT = ws, *dOT = QT + al16((size_t)hd * TILE), *Qp = dOT + al16((size_t)hd * TILE);
    float *dOp = Qp + al16((size_t)TILE * hd16), *ST = dOp + al16((size_t)TILE * hd16);
    float *dPT = ST + al16((size_t)TILE * TILE), *dK = dPT + al16((size_t)TILE * TILE);
    float *dV = dK + al16((size_t)TILE * hd16);
    const size_t kvoff = (size_t)b * a->kv_batch_stride + (size_t)j0 * a->ld_kv + (size_t)g * hd;
    const float *kr = a->k + kvoff, *vr = a->v + kvoff;
    memset(dK, 0, (size_t)TILE * hd16 * sizeof(float));
    memset(dV, 0, (size_t)TILE * hd16 * sizeof(float));
    for (int i0 = j0; i0 < L; i0 += TILE)
        for (int hl = 0; hl < hpg; hl++) {
            const int h = g * hpg + hl;
            const int nq = L - i0 < TILE ? L - i0 : TILE;
            const size_t t0 = (size_t)b * L + i0, bh = ((size_t)b * a->H + h) * L + i0;
            operand Q = prepare(a, a->q + t0 * a->ld_q + (size_t)h * hd, a->ld_q, nq, QT, Qp);
            operand dO = prepare(a, a->d_out + t0 * a->ld_out + (size_t)h * hd, a->ld_out, nq, dOT, dOp);
            /* s^T = k . q (scaled below), dp^T = v . do */
            mm_qk(a, nk, kr, a->ld_kv, &Q, ST);
            mm_qk(a, nk, vr, a->ld_kv, &dO, dPT);
            for (int jr = 0; jr < nk; jr++) {
                float *st = ST + (size_t)jr * TILE, *dpt = dPT + (size_t)jr * TILE;
                /* query rows c with i0 + c >= j0 + jr (causal) */
                const int c0 = j0 + jr - i0 > 0 ? j0 + jr - i0 : 0;
                const float *lse = a->lse + bh, *D = Dl + bh;
                for (int c = 0; c < c0 && c < nq; c++) st[c] = dpt[c] = 0.0f;
#pragma omp simd
                for (int c = c0; c < nq; c++) {
                    /* p = exp(scale s - lse); ds = p (dp - D) */
                    float p = prob_of(st[c], scale, lse[c]);
                    st[c] = p;
                    dpt[c] = p * (dpt[c] - D[c]);
                }
            }
            /* dv += p^T do, dk += ds^T q (scaled at the end) */
            mm_pv(a, nk, ST, &dO, dV);
            mm_pv(a, nk, dPT, &Q, dK);
        }
    float *dk = a->dk + kvoff, *dv = a->dv + kvoff;
    for (int jr = 0; jr < nk; jr++)
        for (int d = 0; d < hd; d++) {
            dk[(size_t)jr * a->ld_kv + d] = scale * dK[(size_t)jr * hd16 + d];
            dv[(size_t)jr * a->ld_kv + d] = dV[(size_t)jr * hd16 + d];
        }
}

/* One pass per (sequence b, kv head g) (the loop kernel, hd a multiple of 16): dq, dk and dv
 * from the same tiles, 5 products per pair of tiles instead of the two passes' 7. dk and dv
 * accumulate in place in the outputs (this item owns their rows of kv head g), each key's sum
 * over the query blocks in order, within a block over the group's heads in order, and every
 * score, probability and product is the same chain of operations as in dq_block and
 * dkv_block (fma(q, k) = fma(k, q)): the two ways give the same bits, so that the choice
 * between them (by the number of threads) leaves the result alone. */
static void single_block(const cpu_attention_args *a, int b, int g, const float *Dl, float *ws) {
    const int hd = a->hd, hpg = a->H / a->Hkv, L = a->L;
    const float scale = a->scale;
    const size_t ld = a->ld_kv, QB = (size_t)TILE * hd;
    float *Qs = ws, *dOs = Qs + al16(hpg * QB), *dQ = dOs + al16(hpg * QB); /* (hpg, 64, hd) each */
    float *S = dQ + al16(hpg * QB), *dP = S + al16(TILE * TILE), *PT = dP + al16(TILE * TILE);
    float *dST = PT + al16(TILE * TILE), *KT = dST + al16(TILE * TILE), *VT = KT + al16(QB), *Kp = VT + al16(QB);
    const size_t kvoff = (size_t)b * a->kv_batch_stride + (size_t)g * hd;
    const float *kb = a->k + kvoff, *vb = a->v + kvoff;
    float *dk = a->dk + kvoff, *dv = a->dv + kvoff;
    for (int j = 0; j < L; j++) {
        memset(dk + (size_t)j * ld, 0, hd * sizeof(float));
        memset(dv + (size_t)j * ld, 0, hd * sizeof(float));
    }
    for (int i0 = 0; i0 < L; i0 += TILE) {
        const int nq = L - i0 < TILE ? L - i0 : TILE;
        for (int hl = 0; hl < hpg; hl++) {
            const int h = g * hpg + hl;
            for (int c = 0; c < nq; c++) {
                const size_t t = (size_t)b * L + i0 + c;
                memcpy(Qs + hl * QB + (size_t)c * hd, a->q + t * a->ld_q + (size_t)h * hd, hd * sizeof(float));
                memcpy(dOs + hl * QB + (size_t)c * hd, a->d_out + t * a->ld_out + (size_t)h * hd, hd * sizeof(float));
            }
        }
        memset(dQ, 0, hpg * QB * sizeof(float));
        for (int kt = 0; kt <= (i0 + nq - 1) / TILE; kt++) {
            const int j0 = kt * TILE, nk = L - j0 < TILE ? L - j0 : TILE;
            operand K = prepare(a, kb + (size_t)j0 * ld, ld, nk, KT, Kp);
            operand V = prepare(a, vb + (size_t)j0 * ld, ld, nk, VT, NULL);
            for (int hl = 0; hl < hpg; hl++) {
                const size_t bh = ((size_t)b * a->H + g * hpg + hl) * L + i0;
                const float *lse = a->lse + bh, *D = Dl + bh, *Qh = Qs + hl * QB, *dOh = dOs + hl * QB;
                /* s = q . k (scaled below), dp = do . v */
                qk_loops(nq, hd, Qh, hd, K.T, S);
                qk_loops(nq, hd, dOh, hd, V.T, dP);
                for (int c = 0; c < nq; c++) {
                    float *sc = S + (size_t)c * TILE, *dpc = dP + (size_t)c * TILE;
                    const int lim = i0 + c - j0 + 1, vj = lim < TILE ? (lim > 0 ? lim : 0) : TILE;
                    /* p = exp(scale s - lse) (kept in S), ds = p (dp - D) (in dP), 0 above j <= l */
#pragma omp simd
                    for (int j = 0; j < vj; j++) {
                        float p = prob_of(sc[j], scale, lse[c]);
                        sc[j] = p;
                        dpc[j] = p * (dpc[j] - D[c]);
                    }
                    for (int j = vj; j < nk; j++) sc[j] = dpc[j] = 0.0f;
                }
                /* dq += ds k (scaled at the end) */
                pv_loops(nq, nk, dP, K.padded, K.ldp, dQ + hl * QB, hd, hd);
                /* dv += p^T do, dk += ds^T q (scaled at the end), rows = this tile's keys */
                transpose_tile(PT, S, TILE, nq, nk);
                transpose_tile(dST, dP, TILE, nq, nk);
                pv_loops(nk, nq, PT, dOh, hd, dv + (size_t)j0 * ld, (int)ld, hd);
                pv_loops(nk, nq, dST, Qh, hd, dk + (size_t)j0 * ld, (int)ld, hd);
            }
        }
        for (int hl = 0; hl < hpg; hl++)
            for (int c = 0; c < nq; c++) {
                const size_t t = (size_t)b * L + i0 + c;
                float *dq = a->dq + t * a->ld_q + (size_t)(g * hpg + hl) * hd;
                const float *acc = dQ + hl * QB + (size_t)c * hd;
                for (int d = 0; d < hd; d++) dq[d] = scale * acc[d];
            }
    }
    for (int j = 0; j < L; j++)
        for (int d = 0; d < hd; d++) dk[(size_t)j * ld + d] *= scale;
}

static size_t thread_single(const cpu_attention_args *a) {
    size_t hpg = a->H / a->Hkv, QB = (size_t)TILE * a->hd;
    return 3 * al16(hpg * QB) + 4 * al16(TILE * TILE) + 3 * al16(QB) + SLACK;
}

/* The one pass when it can run (loops, hd % 16 == 0) and its B * Hkv items keep the threads
 * at least 5/7 busy (so that it is the faster), else the two passes. */
static int single_pass(const cpu_attention_args *a, int nt) {
    if (use_blas(a) || a->hd % 16 != 0) return 0;
    const long items = (long)a->B * a->Hkv, rounds = (items + nt - 1) / nt;
    return 7 * items >= 5 * rounds * nt;
}

static void backward_path(const cpu_attention_args *a, int path) {
    assert(a->Hkv > 0 && a->H % a->Hkv == 0 && a->hd > 0);
    assert(a->prefix == NULL && a->lse && a->out && a->d_out);
    if (a->B <= 0 || a->L <= 0) return;
    const int nt = n_threads(a, 0), nr = block_rows(a), nb = (a->L + nr - 1) / nr, L = a->L, hd = a->hd;
    const int nkt = (L + TILE - 1) / TILE;
    const int one = path == 0 ? single_pass(a, nt) : path == 2;
    assert(!one || (!use_blas(a) && hd % 16 == 0));
    size_t per = thread_fwd(a), dq = thread_dq(a), dkv = thread_dkv(a), sp = thread_single(a);
    per = per > dq ? per : dq;
    per = per > dkv ? per : dkv;
    per = per > sp ? per : sp;
    float *Dl = a->scratch, *thr = Dl + al16((size_t)a->B * a->H * L); /* D (B, H, L) */
    assert(a->scratch && a->scratch_floats >= (size_t)(thr - a->scratch) + (size_t)nt * per);
    const long BG = (long)a->B * a->Hkv, items_q = (long)nb * BG, items_k = (long)nkt * BG;
#pragma omp parallel num_threads(nt)
    {
        float *ws = align64(thr + (size_t)omp_get_thread_num() * per);
        /* D_l = do_l . o_l, in double */
#pragma omp for schedule(static)
        for (long t = 0; t < (long)a->B * L; t++)
            for (int h = 0; h < a->H; h++) {
                const float *o = a->out + t * a->ld_out + (size_t)h * hd, *g = a->d_out + t * a->ld_out + (size_t)h * hd;
                double s = 0.0;
                for (int d = 0; d < hd; d++) s += (double)o[d] * g[d];
                Dl[((t / L) * a->H + h) * L + t % L] = (float)s;
            }
        if (one) {
#pragma omp for schedule(dynamic, 1)
            for (long it = 0; it < BG; it++) single_block(a, (int)(it / a->Hkv), (int)(it % a->Hkv), Dl, ws);
        } else {
            /* dq by query blocks, the later (more keys) first */
#pragma omp for schedule(dynamic, 1)
            for (long it = 0; it < items_q; it++) {
                const int blk = nb - 1 - (int)(it / BG), bg = (int)(it % BG);
                const int l0 = blk * nr, n = L - l0 < nr ? L - l0 : nr;
                dq_block(a, bg / a->Hkv, bg % a->Hkv, l0, n, Dl, ws);
            }
            /* dk, dv by key tiles, the earlier (more queries) first */
#pragma omp for schedule(dynamic, 1)
            for (long it = 0; it < items_k; it++) {
                const int kt = (int)(it / BG), bg = (int)(it % BG);
                dkv_block(a, bg / a->Hkv, bg % a->Hkv, kt, Dl, ws);
            }
        }
    }
}

void cpu_attention_backward(const cpu_attention_args *a) { backward_path(a, 0); }

void cpu_attention_backward_path(const cpu_attention_args *a, int path) { backward_path(a, path); }
