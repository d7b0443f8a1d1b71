/* markov.c: order-k Markov baseline with interpolated Witten-Bell smoothing:
 *   P_j(w | h_j) = (c(h_j w) + T(h_j) P_{j-1}(w | h_{j-1})) / (c(h_j) + T(h_j))
 * where T(h) is the number of distinct symbols seen after h, down to
 *   P_0(w) = (c(w) + 1) / (n + alphabet).
 * Counts live in one open-addressing hash table keyed by (order, kind, packed context). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ssm/markov.h"

typedef struct entry {
    uint64_t key; /* 0 = empty */
    uint32_t a;   /* count of (h, w), or total count of h */
    uint32_t b;   /* distinct followers of h (context entries only) */
} entry;

struct ssm_markov {
    int alphabet, order;
    entry *table;
    size_t cap, used; /* cap is a power of two */
};

/* key: 6 bits of order, 1 bit context-or-pair, 57 bits of packed symbols; +1 keeps it nonzero */
static uint64_t make_key(int order, int is_ctx, uint64_t packed) {
    return (((uint64_t)order << 58) | ((uint64_t)is_ctx << 57) | packed) + 1;
}

static uint64_t mix(uint64_t x) {
    x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static entry *lookup(const ssm_markov *m, uint64_t key) {
    for (size_t i = mix(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1))
        if (m->table[i].key == key || m->table[i].key == 0) return &m->table[i];
}

static int grow(ssm_markov *m) {
    entry *old = m->table;
    size_t old_cap = m->cap;
    m->cap = old_cap ? old_cap * 2 : 1 << 16;
    m->table = calloc(m->cap, sizeof(entry));
    if (!m->table) return -1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key) *lookup(m, old[i].key) = old[i];
    free(old);
    return 0;
}

static entry *insert(ssm_markov *m, uint64_t key) {
    if ((m->used + 1) * 10 > m->cap * 7 && grow(m)) return NULL;
    entry *e = lookup(m, key);
    if (!e->key) e->key = key, m->used++;
    return e;
}

static uint32_t get_a(const ssm_markov *m, uint64_t key) { return lookup(m, key)->a; }

ssm_status ssm_markov_fit(const int32_t *s, size_t n, int alphabet, int order, ssm_markov **out) {
    if (!s || !out || alphabet < 2 || order < 0)
        return ssm_set_error(SSM_ERR_ARG, "markov baseline: need symbols, alphabet >= 2, order >= 0");
    /* largest order whose packed (context, symbol) fits 57 bits */
    double bits = log2((double)alphabet);
    while (order > 0 && bits * (order + 1) > 56) order--;
    ssm_markov *m = calloc(1, sizeof *m);
    if (!m || grow(m)) return free(m), ssm_set_error(SSM_ERR_NOMEM, "out of memory for the baseline");
    m->alphabet = alphabet;
    m->order = order;
    size_t run = 0; /* symbols since the last boundary */
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0 || s[i] >= alphabet) {
            run = 0;
            continue;
        }
        uint64_t ctx = 0;
        int avail = run < (size_t)order ? (int)run : order;
        for (int j = 0; j <= avail; j++) {
            /* ctx packs the j symbols before i (most recent lowest) */
            entry *pair = insert(m, make_key(j, 0, ctx * alphabet + s[i]));
            if (!pair) goto nomem;
            int first = pair->a++ == 0;
            entry *c = insert(m, make_key(j, 1, ctx));
            if (!c) goto nomem;
            c->a++;
            c->b += first;
            if (j < avail) ctx = ctx * alphabet + s[i - 1 - j];
        }
        run++;
    }
    *out = m;
    return SSM_OK;
nomem:
    ssm_markov_free(m);
    return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the order-%d baseline", order);
}

ssm_status ssm_markov_bits(const ssm_markov *m, const int32_t *s, size_t n, double *bits_per_symbol,
                           size_t *n_scored) {
    if (!m || !s || !bits_per_symbol) return ssm_set_error(SSM_ERR_ARG, "markov baseline: NULL argument");
    int A = m->alphabet;
    double total_n = get_a(m, make_key(0, 1, 0)), sum = 0;
    size_t scored = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0 || s[i] >= A) {
            run = 0;
            continue;
        }
        /* P_0(w) = (c(w) + 1) / (n + A) */
        double p = (get_a(m, make_key(0, 0, (uint64_t)s[i])) + 1.0) / (total_n + A);
        uint64_t ctx = 0;
        int avail = run < (size_t)m->order ? (int)run : m->order;
        for (int j = 1; j <= avail; j++) {
            ctx = ctx * A + s[i - j];
            const entry *c = lookup(m, make_key(j, 1, ctx));
            if (!c->key) break; /* unseen context: no longer one is seen either */
            double pair = get_a(m, make_key(j, 0, ctx * A + s[i]));
            /* P_j = (c(h w) + T(h) P_{j-1}) / (c(h) + T(h)) */
            p = (pair + c->b * p) / ((double)c->a + c->b);
        }
        sum += -log2(p);
        scored++;
        run++;
    }
    *bits_per_symbol = scored ? sum / scored : 0.0;
    if (n_scored) *n_scored = scored;
    return SSM_OK;
}

int ssm_markov_order(const ssm_markov *m) { return m->order; }

void ssm_markov_free(ssm_markov *m) {
    if (!m) return;
    free(m->table);
    free(m);
}
