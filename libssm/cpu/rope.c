/* rope.c: rotary position embedding, GPT-NeoX style (flash_attn's RotaryEmbedding with
 * interleaved = False): the first rot_dim channels of each head in two halves, rotated by
 * position-dependent angles; the forward rotates by +angle, the inverse (the backward, since a
 * rotation's transpose is its inverse) by -angle with the same rounded cos and sin.
 *
 * Precision: inv_freq and the angle in fp32 exactly as the reference forms them (torch:
 * 1.0 / base ** (arange(0, rot_dim, 2, float32) / rot_dim), then outer(arange(seqlen, float32),
 * inv_freq)), so that the angle carries the reference's own rounding (about p * 2^-24 rad at
 * position p); cos and sin of that fp32 angle in double, rounded once to fp32 (the correctly
 * rounded values, which torch's fp32 cos/sin reach to within an ulp). The rotation itself in
 * fp32. */
#include "rope.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>

void cpu_rope_apply(float *x, int ld, int B, int L, int n_heads, int hd, int rot_dim, float base, const int64_t *pos0,
                    int inverse) {
    assert(rot_dim >= 0 && rot_dim % 2 == 0 && rot_dim <= hd);
    if (rot_dim == 0 || B <= 0 || L <= 0 || n_heads <= 0) return;
    const int half = rot_dim / 2;
    /* inv_freq[i] = 1 / base^(2i / rot_dim), in fp32 */
    float inv_freq[half];
    for (int i = 0; i < half; i++) inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)rot_dim);
    const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)B * L; t++) {
        float c[half], s[half];
        /* position p = pos0[b] + l, as fp32 */
        const float p = (float)((pos0 ? pos0[t / L] : 0) + t % L);
        for (int i = 0; i < half; i++) {
            /* angle = p * inv_freq[i] in fp32; cos, sin in double, rounded to fp32 */
            const double ang = (double)(p * inv_freq[i]);
            c[i] = (float)cos(ang);
            s[i] = sign * (float)sin(ang);
        }
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)t * ld + (size_t)h * hd;
            /* x1 <- x1 c - x2 s, x2 <- x2 c + x1 s (inverse: s -> -s) */
#pragma omp simd
            for (int i = 0; i < half; i++) {
                const float x1 = xh[i], x2 = xh[i + half];
                xh[i] = x1 * c[i] - x2 * s[i];
                xh[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}
