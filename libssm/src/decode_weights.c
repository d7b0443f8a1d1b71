/* decode_weights.c: the weights the CPU step's products read (ssm_model_set_decode_weights):
 * the fp32 parameters, or a bf16 copy of them that halves the bytes a decode step streams. */
#include <math.h>
#include <stdlib.h>

#include "cpu_ops.h"
#include "layers.h"

ssm_status ssm_model_set_decode_weights(ssm_model *m, ssm_decode_weights weights) {
    if (!m || (weights != SSM_DECODE_F32 && weights != SSM_DECODE_BF16))
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_set_decode_weights: need a model and "
                             "SSM_DECODE_F32 or SSM_DECODE_BF16");
    free(m->decode_bf16);
    free(m->decode_A);
    m->decode_bf16 = NULL;
    m->decode_A = NULL;
    if (weights == SSM_DECODE_F32) return SSM_OK;
    /* a copy of the whole blob, so that a weight's copy sits at the weight's own offset; the
     * matrices' rows in the layout cpu_matmul_rows_bf16 reads, the rest in order (unread) */
    uint16_t *bits = malloc(m->n_params * sizeof *bits);
    if (!bits) return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the bf16 decode weights");
    const float *p = m->params_blob;
    for (size_t i = 0; i < m->n_params; i++) bits[i] = cpu_bf16_from_float(p[i]);
#pragma omp parallel for schedule(dynamic)
    for (int t = 0; t < m->n_tensors; t++) {
        const ssm_tensor_info *ti = &m->tensors[t];
        if (ti->ndim == 2 && ti->shape[1] > 0)
            cpu_bf16_pack_rows(bits + ti->offset, p + ti->offset, (size_t)ti->shape[0],
                               (int)ti->shape[1]);
    }
    /* and A = -exp(A_log) of the Mamba-1 layers, the same expf as the scan's (bitwise the
     * same step), so that a step makes none: (n_layer, E, N), the rows of other kinds unused */
    const ssm_config *c = &m->config;
    const size_t EN = (size_t)c->d_inner * c->d_state;
    int mamba1 = 0;
    for (int i = 0; i < c->n_layer; i++) mamba1 |= c->layer_kind[i] == SSM_LAYER_MAMBA1;
    float *A = mamba1 ? malloc((size_t)c->n_layer * EN * sizeof *A) : NULL;
    if (mamba1 && !A) {
        free(bits);
        return ssm_set_error(SSM_ERR_NOMEM, "out of memory for the bf16 decode weights");
    }
    for (int i = 0; A && i < c->n_layer; i++)
        if (c->layer_kind[i] == SSM_LAYER_MAMBA1)
            for (size_t j = 0; j < EN; j++) A[i * EN + j] = -expf(m->params.layers[i].mamba1.A_log[j]);
    m->decode_bf16 = bits;
    m->decode_A = A;
    return SSM_OK;
}

void ssm_step_rows(const ssm_step_weights *sw, float *out, int ld_out, float beta,
                   const float *in, int ld_in, const float *W, int B, int n_in, int n_out) {
    if (sw && sw->bf16)
        cpu_matmul_rows_bf16(out, ld_out, beta, in, ld_in, sw->bf16 + (W - sw->blob), B, n_in,
                             n_out);
    else
        cpu_matmul_rows(out, ld_out, beta, in, ld_in, W, B, n_in, n_out);
}
