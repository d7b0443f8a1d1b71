/* test_markov.c: the order-k Witten-Bell baseline. */
#include <math.h>
#include <stdlib.h>

#include "ssm/markov.h"
#include "testutil.h"

/* A periodic sequence is predictable from 2 symbols of context: bits -> ~0 with order 2,
 * while order 0 sees a uniform mix of 3 symbols: log2(3) bits. */
static void test_periodic(void **s) {
    (void)s;
    enum { n = 30000 };
    int32_t *x = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) x[i] = (int32_t[]){0, 1, 2, 1}[i % 4] + (i % 8 < 4 ? 0 : 0);
    ssm_markov *m0, *m2;
    TU_OK(ssm_markov_fit(x, n, 3, 0, &m0));
    TU_OK(ssm_markov_fit(x, n, 3, 2, &m2));
    double b0, b2;
    size_t k;
    TU_OK(ssm_markov_bits(m0, x, n, &b0, &k));
    TU_OK(ssm_markov_bits(m2, x, n, &b2, &k));
    assert_int_equal(k, n);
    /* symbol frequencies 1/4, 1/2, 1/4: entropy 1.5 bits */
    assert_true(fabs(b0 - 1.5) < 0.01);
    assert_true(b2 < 0.01);
    ssm_markov_free(m0);
    ssm_markov_free(m2);
    free(x);
}

/* Uniform random symbols: no model beats log2(alphabet); smoothing keeps held-out data finite. */
static void test_random_and_boundaries(void **s) {
    (void)s;
    enum { n = 200000 };
    int32_t *x = malloc(n * sizeof(int32_t));
    ssm_rng rng;
    ssm_rng_seed(&rng, 5);
    for (int i = 0; i < n; i++) x[i] = (i % 1000 == 999) ? -1 : (int32_t)ssm_rng_below(&rng, 4);
    ssm_markov *m;
    TU_OK(ssm_markov_fit(x, n / 2, 4, 6, &m));
    double b;
    size_t k;
    TU_OK(ssm_markov_bits(m, x + n / 2, n / 2, &b, &k));
    assert_int_equal(k, n / 2 - n / 2 / 1000);
    print_message("order-6 on random 4-ary held-out: %.4f bits (ideal 2)\n", b);
    assert_true(b > 1.99 && b < 2.2);
    ssm_markov_free(m);
    free(x);
}

static void test_bad_arguments(void **s) {
    (void)s;
    int32_t x[3] = {0, 1, 0};
    ssm_markov *m;
    assert_int_equal(ssm_markov_fit(x, 3, 1, 2, &m), SSM_ERR_ARG);
    /* an order too large for the key is lowered, not refused */
    TU_OK(ssm_markov_fit(x, 3, 256, 20, &m));
    assert_true(ssm_markov_order(m) <= 6);
    ssm_markov_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periodic),
        cmocka_unit_test(test_random_and_boundaries),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
