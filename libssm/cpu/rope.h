/* rope.h: rotary position embedding, GPT-NeoX style (non-interleaved halves), as flash_attn's
 * RotaryEmbedding with interleaved = False (and mamba_ssm's MHA with rotary_emb_dim > 0), fp32
 * on the CPU. For a row at position p and i < rot_dim / 2:
 *   inv_freq[i] = 1 / base^(2i / rot_dim)                  (fp32, as the reference computes it)
 *   angle       = p * inv_freq[i]                          (fp32 product, p as fp32: the reference's)
 *   c, s        = cos(angle), sin(angle)                   (evaluated in double, rounded to fp32)
 *   x1 = x[i], x2 = x[i + rot_dim / 2]:  x1 <- x1 c - x2 s,  x2 <- x2 c + x1 s
 * on the first rot_dim channels of every head; channels rot_dim .. hd - 1 are unchanged.
 * The equations sit above the code in rope.c. */
#ifndef SSM_CPU_ROPE_H
#define SSM_CPU_ROPE_H

#include <stdint.h>

/* x (T, n_heads * hd) row stride ld, rows of sequence b at positions pos0[b] + l (pos0 NULL = 0); in place.
 * inverse = 1 applies the transpose (the backward of the rotation, for dq and dk).
 * rot_dim even, 0 <= rot_dim <= hd (0: nothing to do). Threads over rows; each row's result
 * depends only on its values and position (bitwise independent of the thread count). */
void cpu_rope_apply(float *x, int ld, int B, int L, int n_heads, int hd, int rot_dim, float base, const int64_t *pos0,
                    int inverse);

#endif
