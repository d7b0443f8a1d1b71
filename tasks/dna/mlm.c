/* mlm.c: BERT-style masking for the DNA task's masked-LM objective (Devlin et al. 2019, as
 * Caduceus and transformers' DataCollatorForLanguageModeling do it: each position chosen
 * independently, then 80% [MASK], 10% a random token, 10% unchanged). */
#include "dna.h"

void dna_mlm_mask(int32_t *tokens, int32_t *targets, int n, double rate, ssm_rng *rng) {
    for (int l = 0; l < n; l++) {
        if (targets[l] < 0) continue; /* N, padding, masked lowercase: never chosen */
        if (ssm_rng_uniform(rng) >= rate) {
            targets[l] = -1; /* not chosen: the input stays, nothing is predicted here */
            continue;
        }
        double u = ssm_rng_uniform(rng);
        int32_t random_base = DNA_TOKEN_A + (int32_t)ssm_rng_below(rng, 4);
        if (u < 0.8) tokens[l] = DNA_TOKEN_MASK;
        else if (u < 0.9) tokens[l] = random_base;
        /* else: kept, so that the model cannot assume every unmasked token is right */
    }
}
