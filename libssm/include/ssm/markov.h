/* markov.h: the classical baseline ssm-train prints beside the model: an order-k Markov
 * model over a task's symbols, interpolated Witten-Bell smoothing down to an add-one unigram,
 * fitted on the training split and evaluated on the validation split in bits per symbol. */
#ifndef SSM_MARKOV_H
#define SSM_MARKOV_H

#include "ssm/export.h"
#include "ssm/ssm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssm_markov ssm_markov;

/* Fit on symbols in [0, alphabet); a negative symbol is a boundary (the context restarts).
 * order is lowered when alphabet^(order+1) would not fit the 57-bit context key. */
SSM_API ssm_status ssm_markov_fit(const int32_t *symbols, size_t n, int alphabet, int order,
                                  ssm_markov **out);
/* Mean -log2 P(symbol | up to `order` previous symbols) over the non-negative symbols. */
SSM_API ssm_status ssm_markov_bits(const ssm_markov *m, const int32_t *symbols, size_t n,
                                   double *bits_per_symbol, size_t *n_scored);
SSM_API int ssm_markov_order(const ssm_markov *m);
SSM_API void ssm_markov_free(ssm_markov *m);

#ifdef __cplusplus
}
#endif
#endif
