/* testutil.h: helpers the tests share (random inputs, relative errors, fixture paths). */
#ifndef SSM_TESTUTIL_H
#define SSM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ssm/ssm.h"

/* Fill x with uniform values in [lo, hi) from a deterministic generator. */
void tu_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);
/* v (n): a random unit direction, deterministic in seed; returns grad . v (the directional
 * derivative a finite difference along v checks) */
double tu_unit_direction(float *v, size_t n, const float *grad, uint64_t seed);
/* The small options the fast model tests share: d_state 4, d_conv 3, dt_rank 2, attention 2
 * heads of 8, MLP d_ff 24. */
void tu_tiny_options(ssm_config *c);
/* ||a - b|| / ||b|| computed in double. */
/* n tokens uniform in [0, vocab), deterministic in seed */
void tu_random_tokens(int32_t *tok, int n, int vocab, uint64_t seed);
double tu_rel_err(const float *a, const float *b, size_t n);
double tu_rel_err_d(const double *a, const double *b, size_t n);
/* $SSM_TEST_DATA/rel (tests/ of the source tree) in a static buffer. */
const char *tu_data_path(const char *rel);
/* A fresh empty temporary directory (under $TMPDIR or /tmp). */
const char *tu_tmpdir(void);
/* Assert an ssm call succeeded, printing ssm_last_error() when it did not. */
#define TU_OK(call)                                                                 \
    do {                                                                            \
        ssm_status tu_s_ = (call);                                                  \
        if (tu_s_ != SSM_OK) fail_msg("%s -> %d: %s", #call, tu_s_, ssm_last_error()); \
    } while (0)

#endif
