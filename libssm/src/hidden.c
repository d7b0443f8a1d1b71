/* hidden.c: the hidden states of the last CPU forward (ssm_model_hidden), for embeddings.
 *
 * The CPU forward keeps, per block i, the residual stream entering it (acts->layers[i].resid,
 * (T, D)), the stream after the last block (acts->resid_f) and the final norm's output
 * (acts->normed_f, the rows the tied head multiplies). So
 *   layer i < n_layer - 1   r_{i+1} = acts->layers[i + 1].resid
 *   layer n_layer - 1       r_n     = acts->resid_f
 *   layer n_layer (or -1)   RMSNorm_f(r_n) * norm_f.weight = acts->normed_f
 * T = B * L rows, batch-major: the (B, L, D) layout of the forward's tokens. */
#include <string.h>

#include "internal.h"

ssm_status ssm_model_hidden(const ssm_model *m, int layer, float *out) {
    if (!m || !out) return ssm_set_error(SSM_ERR_ARG, "ssm_model_hidden: need a model and out");
    int n = m->config.n_layer;
    if (layer < -1 || layer > n)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_hidden: layer %d is outside [0, %d] (0..%d: "
                             "the residual stream after that block; %d or -1: the final norm's "
                             "output)", layer, n, n - 1, n);
    if (m->device >= 0 || m->cuda || m->backend != &ssm_backend_cpu)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "ssm_model_hidden: the model runs on cuda:%d, "
                             "and the CUDA backend does not keep the hidden states; run the "
                             "forward on the CPU (ssm_model_use_device(model, NULL, -1))",
                             m->device);
    const ssm_activations *a = m->acts;
    if (!a || !a->layers || !a->has_hidden)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_hidden: no forward yet (call ssm_forward or "
                             "ssm_forward_score first)");
    if (layer < 0) layer = n;
    const float *src = layer == n ? a->normed_f : layer == n - 1 ? a->resid_f : a->layers[layer + 1].resid;
    /* RCPS: the first strand's rows (the sequences as given) */
    memcpy(out, src, (size_t)a->B / a->strands * a->L * m->config.d_model * sizeof(float));
    return SSM_OK;
}
