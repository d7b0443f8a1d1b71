/* test_decode.c: the decode step's own paths (step.c, m1_step / m2_step, cpu_matmul_rows, the
 * conv, scan and SSD steps): the step equals the parallel forward for Mamba-1, Mamba-2 and mixed
 * stacks at B = 1 and B = 3; cpu_matmul_rows (one weight pass for the B rows) equals the SGEMM
 * product to rounding; a sequence's step does not depend on the batch beside it nor on the
 * thread count (bitwise); the step's work buffer lives in the state and steps allocate nothing;
 * the bf16 decode weights: the kernel against plain loops, the step against fp32's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "internal.h"
#include "ssd.h"
#include "testutil.h"

/* ---- a malloc counter ---------------------------------------------------------------------
 * The allocation functions of this program forward to glibc's and count while `counting` is
 * set (so libgomp's, libc's and the library's allocations all show). Not under AddressSanitizer,
 * which brings its own allocator. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define SSM_SANITIZER_ALLOCATOR 1
#endif
#endif
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(SSM_SANITIZER_ALLOCATOR)
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static int counting;
static long n_allocs;
static void counted(void) {
    if (__atomic_load_n(&counting, __ATOMIC_RELAXED)) __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
}
void *malloc(size_t n) {
    counted();
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t s) {
    counted();
    return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
    counted();
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t a, size_t n) {
    counted();
    return __libc_memalign(a, n);
}
void *memalign(size_t a, size_t n) {
    counted();
    return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n) {
    counted();
    void *p = __libc_memalign(a, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#else
#define COUNT_ALLOCS 0
#endif

/* ---- models ------------------------------------------------------------------------------ */

typedef struct shape {
    const char *name;
    int vocab, d_model, n_layer;
    int kind;                 /* 1: Mamba-1, 2: Mamba-2, 3: [mamba1, mamba2, mamba1, ...] */
    int d_state, d_conv;      /* Mamba-1 */
    int headdim, n2, ngroups; /* Mamba-2: P, N, G */
} shape;

static const shape SHAPES[] = {
    {"mamba1 16x2 N16 K4", 21, 16, 2, 1, 16, 4, 0, 0, 0},
    {"mamba1 13x3 N5 K2 (odd sizes)", 21, 13, 3, 1, 5, 2, 0, 0, 0},
    {"mamba1 96x2 N32 (threaded paths)", 37, 96, 2, 1, 32, 4, 0, 0, 0},
    {"mamba2 8x2 P4 N4 G2", 16, 8, 2, 2, 0, 0, 4, 4, 2},
    {"mamba2 64x2 P16 N32 G1", 29, 64, 2, 2, 0, 0, 16, 32, 1},
    {"mamba2 20x2 P10 N7 G1 (odd sizes)", 23, 20, 2, 2, 0, 0, 10, 7, 1},
    {"mixed 24x3 m1 N8 K3 / m2 P8 N16 G2", 19, 24, 3, 3, 8, 3, 8, 16, 2},
};
enum { N_SHAPES = sizeof SHAPES / sizeof SHAPES[0] };

static ssm_model *model_of(const shape *s, uint64_t seed) {
    ssm_config c = ssm_config_default(s->vocab, s->d_model, s->n_layer);
    if (s->kind != 1) {
        c.mamba2.headdim = s->headdim, c.mamba2.d_state = s->n2, c.mamba2.ngroups = s->ngroups;
        c.mamba2.chunk_size = 5;
    }
    if (s->kind != 2) c.d_state = s->d_state, c.d_conv = s->d_conv;
    for (int l = 0; l < s->n_layer; l++)
        c.layer_kind[l] = s->kind == 1 ? SSM_LAYER_MAMBA1
                          : s->kind == 2 ? SSM_LAYER_MAMBA2
                                         : (l % 2 ? SSM_LAYER_MAMBA2 : SSM_LAYER_MAMBA1);
    ssm_model *m;
    TU_OK(ssm_model_create(&c, &m));
    TU_OK(ssm_model_init(m, seed));
    /* larger steps than at initialisation, so that the state carries real information */
    for (int l = 0; l < s->n_layer; l++) {
        ssm_layer_params *p = &m->params.layers[l];
        if (m->config.layer_kind[l] == SSM_LAYER_MAMBA1)
            for (int e = 0; e < m->config.d_inner; e++) p->mamba1.dt_proj_b[e] += 3.0f;
        else
            for (int h = 0; h < m->config.mamba2.nheads; h++) p->mamba2.dt_bias[h] += 1.0f;
    }
    return m;
}

/* logits of L steps from a zero state: out (B, L, V) */
static void step_logits(ssm_model *m, ssm_state *st, const int32_t *tok, int B, int L, float *out) {
    int V = m->config.vocab_size;
    float *lg = malloc((size_t)B * V * sizeof(float));
    for (int l = 0; l < L; l++) {
        int32_t col[8];
        for (int b = 0; b < B; b++) col[b] = tok[b * L + l];
        TU_OK(ssm_step(m, st, col, lg));
        for (int b = 0; b < B; b++)
            memcpy(out + ((size_t)b * L + l) * V, lg + (size_t)b * V, V * sizeof(float));
    }
    free(lg);
}

/* ---- the step equals the parallel forward ---------------------------------------------- */

static void check_step_equals_parallel(const shape *s, int B) {
    enum { L = 19 };
    ssm_model *m = model_of(s, 5);
    int V = m->config.vocab_size;
    int32_t tok[3 * L];
    tu_random_tokens(tok, B * L, s->vocab, 9 + B);
    TU_OK(ssm_forward(m, tok, NULL, B, L, NULL, NULL));
    size_t n = (size_t)B * L * V;
    float *ref = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float));
    memcpy(ref, ssm_model_logits(m), n * sizeof(float));
    ssm_state *st;
    TU_OK(ssm_state_create(&m->config, B, &st));
    step_logits(m, st, tok, B, L, got);
    double err = tu_rel_err(got, ref, n);
    print_message("%-36s B %d: step vs parallel rel err %.2e\n", s->name, B, err);
    assert_true(err < 1e-5);
    ssm_state_free(st);
    free(ref);
    free(got);
    ssm_model_free(m);
}

static void test_step_equals_parallel(void **unused) {
    (void)unused;
    for (int i = 0; i < N_SHAPES; i++) {
        check_step_equals_parallel(&SHAPES[i], 1);
        check_step_equals_parallel(&SHAPES[i], 3);
    }
}

/* ---- cpu_matmul_rows against SGEMM ------------------------------------------------------- */

static void test_rows_equals_sgemm(void **unused) {
    (void)unused;
    /* B, n_in, n_out: tails of the 16 lanes (n_in) and of the 4-row blocks (n_out), one and
     * several rows, small and threaded sizes */
    static const int cases[][3] = {{1, 64, 256},  {1, 13, 7},    {1, 4, 130},  {1, 48, 1536},
                                   {1, 768, 321}, {2, 37, 21},   {3, 96, 384}, {5, 17, 1},
                                   {8, 768, 50},  {8, 200, 999}, {1, 1, 9},    {7, 1536, 80},
                                   {11, 100, 37}, {16, 64, 9},   {9, 33, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c][0], n_in = cases[c][1], n_out = cases[c][2];
        int ld_in = n_in + 3, ld_out = n_out + 5; /* strided rows, as the step's are */
        float *W = malloc((size_t)n_out * n_in * sizeof(float));
        float *in = malloc((size_t)B * ld_in * sizeof(float));
        float *init = malloc((size_t)B * ld_out * sizeof(float));
        float *a = malloc((size_t)B * ld_out * sizeof(float)), *b = malloc((size_t)B * ld_out * sizeof(float));
        float *one = malloc((size_t)ld_out * sizeof(float));
        tu_fill_uniform(W, (size_t)n_out * n_in, -1, 1, 100 + c);
        tu_fill_uniform(in, (size_t)B * ld_in, -1, 1, 200 + c);
        tu_fill_uniform(init, (size_t)B * ld_out, -1, 1, 300 + c);
        for (int beta = 0; beta <= 1; beta++) {
            memcpy(a, init, (size_t)B * ld_out * sizeof(float));
            memcpy(b, init, (size_t)B * ld_out * sizeof(float));
            cpu_matmul_rows(a, ld_out, (float)beta, in, ld_in, W, B, n_in, n_out);
            cpu_matmul_forward(b, ld_out, (float)beta, in, ld_in, W, B, n_in, n_out);
            double err = tu_rel_err(a, b, (size_t)B * ld_out);
            if (err >= 1e-6)
                fail_msg("B %d, %d -> %d, beta %d: rows vs sgemm rel err %.2e", B, n_in, n_out, beta, err);
            /* the padding between rows is left alone */
            for (int r = 0; r < B; r++)
                for (int j = n_out; j < ld_out; j++)
                    assert_true(a[(size_t)r * ld_out + j] == init[(size_t)r * ld_out + j]);
            /* each row alone gives the same bits as in the batch */
            for (int r = 0; r < B; r++) {
                memcpy(one, init + (size_t)r * ld_out, ld_out * sizeof(float));
                cpu_matmul_rows(one, ld_out, (float)beta, in + (size_t)r * ld_in, ld_in, W, 1, n_in, n_out);
                assert_memory_equal(one, a + (size_t)r * ld_out, n_out * sizeof(float));
            }
        }
        print_message("B %d, %4d -> %4d: rows = sgemm to < 1e-6, rows alone = in the batch\n", B,
                      n_in, n_out);
        free(W), free(in), free(init), free(a), free(b), free(one);
    }
}

/* ---- the SSD step against the recurrent forward --------------------------------------------
 * cpu_ssd_step works on the state in place, by tiles of 16 channels x 16 values of n; L steps
 * equal cpu_ssd_forward_recurrent bitwise, whole tiles and partial ones alike. */
static void test_ssd_step_equals_recurrence(void **unused) {
    (void)unused;
    static const int cases[][5] = {/* B, H, P, G, N */ {2, 2, 20, 1, 19}, {1, 3, 16, 1, 32},
                                   {3, 4, 35, 2, 17}, {1, 2, 64, 1, 128}, {2, 2, 3, 2, 5}};
    enum { L = 6 };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c][0], H = cases[c][1], P = cases[c][2], G = cases[c][3], N = cases[c][4];
        int I = H * P, ldx = I + 2 * G * N, lddt = H + 1;
        size_t S = (size_t)B * H * P * N, T = (size_t)B * L;
        float *x = malloc(T * ldx * sizeof(float)), *dtr = malloc(T * lddt * sizeof(float));
        float *bias = malloc(H * sizeof(float)), *Alog = malloc(H * sizeof(float)), *Dk = malloc(H * sizeof(float));
        float *s0 = malloc(S * sizeof(float)), *sr = malloc(S * sizeof(float)), *ss = malloc(S * sizeof(float));
        float *yr = malloc(T * I * sizeof(float)), *ys = malloc(T * I * sizeof(float));
        tu_fill_uniform(x, T * ldx, -1, 1, 70 + c);
        tu_fill_uniform(dtr, T * lddt, -2, 1, 80 + c);
        tu_fill_uniform(bias, H, -1, 0.5f, 90 + c);
        tu_fill_uniform(Alog, H, -1, 1, 100 + c);
        tu_fill_uniform(Dk, H, 0.5f, 1.5f, 110 + c);
        tu_fill_uniform(s0, S, -1, 1, 120 + c);
        memcpy(sr, s0, S * sizeof(float));
        memcpy(ss, s0, S * sizeof(float));
        cpu_ssd_args a = {0};
        a.B = B, a.L = L, a.H = H, a.P = P, a.G = G, a.N = N, a.chunk = 4;
        a.dt_min = 0.0f, a.dt_max = INFINITY;
        a.x = x, a.Bm = x + I, a.Cm = x + I + G * N, a.ld_x = ldx, a.dt = dtr, a.ld_dt = lddt;
        a.dt_bias = bias, a.A_log = Alog, a.Dskip = Dk, a.y = yr, a.ld_y = I, a.state = sr;
        cpu_ssd_forward_recurrent(&a);
        /* row l of each sequence, one step at a time */
        float *xs = malloc((size_t)B * ldx * sizeof(float)), *ds = malloc((size_t)B * lddt * sizeof(float));
        float *yt = malloc((size_t)B * I * sizeof(float));
        for (int l = 0; l < L; l++) {
            for (int b = 0; b < B; b++) {
                memcpy(xs + (size_t)b * ldx, x + ((size_t)b * L + l) * ldx, ldx * sizeof(float));
                memcpy(ds + (size_t)b * lddt, dtr + ((size_t)b * L + l) * lddt, lddt * sizeof(float));
            }
            cpu_ssd_args s1 = a;
            s1.L = 1, s1.x = xs, s1.Bm = xs + I, s1.Cm = xs + I + G * N, s1.dt = ds, s1.y = yt;
            s1.state = ss;
            cpu_ssd_step(&s1);
            for (int b = 0; b < B; b++)
                memcpy(ys + ((size_t)b * L + l) * I, yt + (size_t)b * I, I * sizeof(float));
        }
        assert_memory_equal(ys, yr, T * I * sizeof(float));
        assert_memory_equal(ss, sr, S * sizeof(float));
        print_message("B %d H %d P %2d G %d N %3d: %d SSD steps = the recurrent forward (bitwise)\n",
                      B, H, P, G, N, L);
        free(x), free(dtr), free(bias), free(Alog), free(Dk), free(s0), free(sr), free(ss);
        free(yr), free(ys), free(xs), free(ds), free(yt);
    }
}

/* ---- determinism ------------------------------------------------------------------------- */

/* Sequence b's logits in a batch of 3 are bitwise those of the same sequence alone. */
static void test_step_batch_independent(void **unused) {
    (void)unused;
    enum { B = 3, L = 9 };
    for (int i = 0; i < N_SHAPES; i++) {
        ssm_model *m = model_of(&SHAPES[i], 3);
        int V = m->config.vocab_size;
        int32_t tok[B * L];
        tu_random_tokens(tok, B * L, SHAPES[i].vocab, 4);
        float *batch = malloc((size_t)B * L * V * sizeof(float)), *alone = malloc((size_t)L * V * sizeof(float));
        ssm_state *st;
        TU_OK(ssm_state_create(&m->config, B, &st));
        step_logits(m, st, tok, B, L, batch);
        ssm_state_free(st);
        for (int b = 0; b < B; b++) {
            TU_OK(ssm_state_create(&m->config, 1, &st));
            step_logits(m, st, tok + b * L, 1, L, alone);
            ssm_state_free(st);
            assert_memory_equal(alone, batch + (size_t)b * L * V, (size_t)L * V * sizeof(float));
        }
        print_message("%-36s: each sequence of a batch of 3 = the sequence alone (bitwise)\n",
                      SHAPES[i].name);
        free(batch), free(alone);
        ssm_model_free(m);
    }
}

/* One and two threads give the same bits, and so does a state that moves from 1 to 2 threads
 * between steps. */
static void test_step_threads_deterministic(void **unused) {
    (void)unused;
    enum { B = 2, L = 7 };
    const shape big[] = {
        {"mamba1 192x2 N48", 33, 192, 2, 1, 48, 4, 0, 0, 0},
        {"mamba2 128x2 P32 N64 G1", 33, 128, 2, 2, 0, 0, 32, 64, 1},
        SHAPES[6],
    };
    int threads0 = ssm_get_threads();
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        ssm_model *m = model_of(&big[i], 8);
        int V = m->config.vocab_size;
        int32_t tok[B * L];
        tu_random_tokens(tok, B * L, big[i].vocab, 6);
        size_t n = (size_t)B * L * V;
        float *t1 = malloc(n * sizeof(float)), *t2 = malloc(n * sizeof(float)), *mix = malloc(n * sizeof(float));
        for (int Bq = 1; Bq <= B; Bq++) {
            size_t nq = (size_t)Bq * L * V;
            ssm_state *st;
            ssm_set_threads(1);
            TU_OK(ssm_state_create(&m->config, Bq, &st));
            step_logits(m, st, tok, Bq, L, t1);
            ssm_state_free(st);
            ssm_set_threads(2);
            TU_OK(ssm_state_create(&m->config, Bq, &st));
            step_logits(m, st, tok, Bq, L, t2);
            ssm_state_free(st);
            assert_memory_equal(t1, t2, nq * sizeof(float));
            /* the same state, 1 thread for the first 3 steps, then 2 */
            ssm_set_threads(1);
            TU_OK(ssm_state_create(&m->config, Bq, &st));
            float *lg = malloc((size_t)Bq * V * sizeof(float));
            for (int l = 0; l < L; l++) {
                if (l == 3) ssm_set_threads(2);
                int32_t col[B];
                for (int b = 0; b < Bq; b++) col[b] = tok[b * L + l];
                TU_OK(ssm_step(m, st, col, lg));
                for (int b = 0; b < Bq; b++)
                    memcpy(mix + ((size_t)b * L + l) * V, lg + (size_t)b * V, V * sizeof(float));
            }
            free(lg);
            ssm_state_free(st);
            assert_memory_equal(mix, t2, nq * sizeof(float));
        }
        print_message("%-36s: 1 thread = 2 threads (bitwise), B 1 and 2\n", big[i].name);
        free(t1), free(t2), free(mix);
        ssm_model_free(m);
    }
    ssm_set_threads(threads0);
}

/* ---- no allocation per step ------------------------------------------------------------- */

static void test_step_keeps_its_work_buffer(void **unused) {
    (void)unused;
    const int which[] = {0, 4, 6}; /* Mamba-1, Mamba-2, mixed */
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        const shape *s = &SHAPES[which[i]];
        ssm_model *m = model_of(s, 2);
        int V = m->config.vocab_size;
        for (int B = 1; B <= 3; B += 2) {
            ssm_state *st;
            TU_OK(ssm_state_create(&m->config, B, &st));
            assert_null(st->step_work);
            float *lg = malloc((size_t)B * V * sizeof(float));
            int32_t tok[3] = {1, 2, 3};
            TU_OK(ssm_step(m, st, tok, lg)); /* the first step allocates the buffer */
            TU_OK(ssm_step(m, st, tok, lg)); /* and the thread pool has started */
            float *work = st->step_work;
            size_t floats = st->step_work_floats;
            assert_non_null(work);
#if COUNT_ALLOCS
            n_allocs = 0;
            __atomic_store_n(&counting, 1, __ATOMIC_RELAXED);
#endif
            for (int k = 0; k < 100; k++) {
                tok[0] = (tok[0] * 5 + 1) % s->vocab;
                TU_OK(ssm_step(m, st, tok, lg));
                assert_ptr_equal(st->step_work, work);
            }
#if COUNT_ALLOCS
            __atomic_store_n(&counting, 0, __ATOMIC_RELAXED);
            print_message("%-36s B %d: 100 steps, %ld allocations, work buffer %zu floats kept\n",
                          s->name, B, n_allocs, floats);
            assert_int_equal(n_allocs, 0);
#else
            print_message("%-36s B %d: 100 steps, work buffer %zu floats kept (no malloc counter "
                          "under the sanitizer)\n", s->name, B, floats);
#endif
            assert_int_equal(st->step_work_floats, floats);
            free(lg);
            ssm_state_free(st);
        }
        ssm_model_free(m);
    }
}

/* ---- bf16 decode weights (ssm_model_set_decode_weights) --------------------------------- */

/* Rounding to nearest even, NaN kept, and the exact widening back. */
static void test_bf16_rounding(void **unused) {
    (void)unused;
    static const uint32_t in[] = {0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x7f800000,
                                  0xff800000, 0x7fc00001, 0x80000000, 0x7f7fffff};
    static const uint16_t want[] = {0x3f80, 0x3f80, 0x3f82, 0x3f81, 0x7f80, 0xff80, 0x7fc0, 0x8000,
                                    0x7f80 /* rounds up to infinity */};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float x;
        memcpy(&x, &in[i], sizeof x);
        assert_int_equal(cpu_bf16_from_float(x), want[i]);
        uint32_t back;
        float y = cpu_bf16_to_float(want[i]);
        memcpy(&back, &y, sizeof back);
        assert_int_equal(back, (uint32_t)want[i] << 16);
    }
    float nan;
    memcpy(&nan, &(uint32_t){0x7f800001}, sizeof nan); /* a NaN whose top half is infinity's */
    assert_true(isnan(cpu_bf16_to_float(cpu_bf16_from_float(nan))));
}

/* cpu_matmul_rows_bf16 at sizes that are not multiples of the 16 lanes, the 32-element packed
 * groups or the 4-row blocks: bitwise cpu_matmul_rows on the widened weights; within fp32
 * rounding of a plain double loop over bf16(W); within bf16's rounding (2^-8 of sum |w x|) of
 * the fp32 product; each row alone = in the batch. */
static void test_bf16_rows(void **unused) {
    (void)unused;
    static const int cases[][3] = {{1, 1, 9},     {1, 13, 7},   {1, 31, 130},  {1, 33, 5},
                                   {1, 48, 1536}, {1, 47, 21},  {1, 768, 321}, {2, 37, 21},
                                   {3, 96, 384},  {5, 17, 1},   {8, 768, 50},  {8, 200, 999},
                                   {7, 1536, 80}, {11, 100, 37}, {9, 65, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c][0], n_in = cases[c][1], n_out = cases[c][2];
        int ld_in = n_in + 3, ld_out = n_out + 5;
        size_t nw = (size_t)n_out * n_in, no = (size_t)B * ld_out;
        float *W = malloc(nw * sizeof(float)), *Ww = malloc(nw * sizeof(float));
        uint16_t *packed = malloc(nw * sizeof(uint16_t));
        float *in = malloc((size_t)B * ld_in * sizeof(float)), *init = malloc(no * sizeof(float));
        float *a = malloc(no * sizeof(float)), *b = malloc(no * sizeof(float));
        float *one = malloc((size_t)ld_out * sizeof(float));
        tu_fill_uniform(W, nw, -1, 1, 400 + c);
        tu_fill_uniform(in, (size_t)B * ld_in, -1, 1, 500 + c);
        tu_fill_uniform(init, no, -1, 1, 600 + c);
        cpu_bf16_pack_rows(packed, W, (size_t)n_out, n_in);
        for (size_t i = 0; i < nw; i++) Ww[i] = cpu_bf16_to_float(cpu_bf16_from_float(W[i]));
        double worst_exact = 0, worst_f32 = 0;
        for (int beta = 0; beta <= 1; beta++) {
            memcpy(a, init, no * sizeof(float));
            memcpy(b, init, no * sizeof(float));
            cpu_matmul_rows_bf16(a, ld_out, (float)beta, in, ld_in, packed, B, n_in, n_out);
            cpu_matmul_rows(b, ld_out, (float)beta, in, ld_in, Ww, B, n_in, n_out);
            assert_memory_equal(a, b, no * sizeof(float)); /* the padding too */
            for (int r = 0; r < B; r++)
                for (int o = 0; o < n_out; o++) {
                    const float *x = in + (size_t)r * ld_in;
                    double s16 = 0, s32 = 0, mag = 0, base = beta * init[(size_t)r * ld_out + o];
                    for (int k = 0; k < n_in; k++) {
                        s16 += (double)Ww[(size_t)o * n_in + k] * x[k];
                        s32 += (double)W[(size_t)o * n_in + k] * x[k];
                        mag += fabs((double)W[(size_t)o * n_in + k] * x[k]);
                    }
                    double got = a[(size_t)r * ld_out + o], scale = mag + fabs(base);
                    double e16 = fabs(got - (s16 + base)) / scale, e32 = fabs(got - (s32 + base)) / scale;
                    worst_exact = e16 > worst_exact ? e16 : worst_exact;
                    worst_f32 = e32 > worst_f32 ? e32 : worst_f32;
                    /* fp32 sums of n_in terms: n_in 2^-24 of sum |w x| at most */
                    assert_true(e16 <= (n_in + 2) * 0x1p-24);
                    assert_true(e32 <= 0x1p-8 + (n_in + 2) * 0x1p-24);
                }
            for (int r = 0; r < B; r++) {
                memcpy(one, init + (size_t)r * ld_out, ld_out * sizeof(float));
                cpu_matmul_rows_bf16(one, ld_out, (float)beta, in + (size_t)r * ld_in, ld_in,
                                     packed, 1, n_in, n_out);
                assert_memory_equal(one, a + (size_t)r * ld_out, n_out * sizeof(float));
            }
        }
        print_message("B %2d, %4d -> %4d: bf16 rows = rows on bf16(W) (bitwise); err vs bf16(W) "
                      "%.1e, vs W %.1e of sum |w x| (bound 2^-8 = 3.9e-03)\n", B, n_in, n_out,
                      worst_exact, worst_f32);
        free(W), free(Ww), free(packed), free(in), free(init), free(a), free(b), free(one);
    }
}

/* The step with bf16 weights against fp32's, teacher-forced over L steps: the logits within
 * the weights' rounding, the greedy tokens agree wherever fp32's top-2 margin exceeds twice
 * the logits' error bound; a sequence of a batch of 3 equals the sequence alone (bitwise);
 * the copy of A taken with the weights changes no bit; back to F32 gives fp32's bits again;
 * bf16 steps allocate nothing. */
static void test_bf16_step(void **unused) {
    (void)unused;
    enum { B = 3, L = 24 };
    /* Each product carries at most 2^-8 of its sum |w x| (bf16 keeps 8 significant bits);
     * through a few layers and the head these add up to a few times 2^-8 of the logits' scale
     * (measured: printed below, 4e-3 to 1.3e-2). */
    const double tol = 8 * 0x1p-8;
    const int which[] = {0, 1, 2, 4, 5, 6};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++) {
        const shape *s = &SHAPES[which[i]];
        ssm_model *m = model_of(s, 11);
        int V = m->config.vocab_size;
        int32_t tok[B * L];
        tu_random_tokens(tok, B * L, s->vocab, 12);
        size_t n = (size_t)B * L * V;
        float *f32 = malloc(n * sizeof(float)), *b16 = malloc(n * sizeof(float));
        float *alone = malloc((size_t)L * V * sizeof(float));
        ssm_state *st;
        TU_OK(ssm_state_create(&m->config, B, &st));
        step_logits(m, st, tok, B, L, f32);
        ssm_state_free(st);
        TU_OK(ssm_model_set_decode_weights(m, SSM_DECODE_BF16));
        TU_OK(ssm_state_create(&m->config, B, &st));
        step_logits(m, st, tok, B, L, b16);
        ssm_state_free(st);
        for (int b = 0; b < B; b++) {
            TU_OK(ssm_state_create(&m->config, 1, &st));
            step_logits(m, st, tok + b * L, 1, L, alone);
            ssm_state_free(st);
            assert_memory_equal(alone, b16 + (size_t)b * L * V, (size_t)L * V * sizeof(float));
        }
        /* the copy of A = -exp(A_log) taken with the bf16 weights changes no bit: the step
         * without it (taking expf itself) gives the same logits */
        assert_true((m->decode_A != NULL) == (s->kind != 2)); /* a Mamba-1 layer or none */
        float *A = m->decode_A, *noA = malloc(n * sizeof(float));
        m->decode_A = NULL;
        TU_OK(ssm_state_create(&m->config, B, &st));
        step_logits(m, st, tok, B, L, noA);
        ssm_state_free(st);
        m->decode_A = A;
        assert_memory_equal(noA, b16, n * sizeof(float));
        free(noA);
        /* the error relative to each position's largest |logit| */
        double worst = 0;
        int agree = 0, decided = 0;
        for (int t = 0; t < B * L; t++) {
            const float *x = f32 + (size_t)t * V, *y = b16 + (size_t)t * V;
            double big = 0, err = 0;
            int a1 = 0, a2 = -1, g = 0;
            for (int v = 0; v < V; v++) {
                big = fabs(x[v]) > big ? fabs(x[v]) : big;
                err = fabs(x[v] - y[v]) > err ? fabs(x[v] - y[v]) : err;
                if (x[v] > x[a1]) a1 = v;
                if (y[v] > y[g]) g = v;
            }
            for (int v = 0; v < V; v++)
                if (v != a1 && (a2 < 0 || x[v] > x[a2])) a2 = v;
            double rel = err / big;
            worst = rel > worst ? rel : worst;
            assert_true(rel <= tol);
            agree += g == a1;
            if (x[a1] - x[a2] > 2 * tol * big) {
                decided++;
                assert_int_equal(g, a1);
            }
        }
        print_message("%-36s: bf16 vs fp32 logits %.1e of max |logit| (bound %.1e); argmax agrees "
                      "at %d of %d positions (all %d with a clear margin)\n", s->name, worst, tol,
                      agree, B * L, decided);
        /* back to fp32: fp32's bits */
        TU_OK(ssm_model_set_decode_weights(m, SSM_DECODE_F32));
        assert_null(m->decode_bf16);
        assert_null(m->decode_A);
        TU_OK(ssm_state_create(&m->config, B, &st));
        step_logits(m, st, tok, B, L, b16);
        ssm_state_free(st);
        assert_memory_equal(b16, f32, n * sizeof(float));
#if COUNT_ALLOCS
        TU_OK(ssm_model_set_decode_weights(m, SSM_DECODE_BF16));
        TU_OK(ssm_state_create(&m->config, B, &st));
        float *lg = malloc((size_t)B * V * sizeof(float));
        TU_OK(ssm_step(m, st, tok, lg));
        TU_OK(ssm_step(m, st, tok, lg));
        n_allocs = 0;
        __atomic_store_n(&counting, 1, __ATOMIC_RELAXED);
        for (int k = 0; k < 20; k++) TU_OK(ssm_step(m, st, tok, lg));
        __atomic_store_n(&counting, 0, __ATOMIC_RELAXED);
        assert_int_equal(n_allocs, 0);
        free(lg);
        ssm_state_free(st);
#endif
        free(f32), free(b16), free(alone);
        ssm_model_free(m);
    }
    assert_int_equal(ssm_model_set_decode_weights(NULL, SSM_DECODE_BF16), SSM_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_equals_parallel),
        cmocka_unit_test(test_rows_equals_sgemm),
        cmocka_unit_test(test_ssd_step_equals_recurrence),
        cmocka_unit_test(test_step_batch_independent),
        cmocka_unit_test(test_step_threads_deterministic),
        cmocka_unit_test(test_step_keeps_its_work_buffer),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_rows),
        cmocka_unit_test(test_bf16_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
