/* device.c: choosing the backend (ssm_parse_device), moving a model to and from a GPU, and the
 * device-side housekeeping entry points (sync, reserve, peak, state download). Without CUDA
 * (no SSM_WITH_CUDA) every model is a CPU model and a GPU request is SSM_ERR_DEVICE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "internal.h"

int ssm_device_count(void) {
#ifdef SSM_WITH_CUDA
    int n = cuda_device_count();
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

/* SSM_ERR_DEVICE unless CUDA device `device` exists; `text` names the request. */
static ssm_status check_device(const char *text, int device) {
#ifndef SSM_WITH_CUDA
    return ssm_set_error(SSM_ERR_DEVICE, "device '%s': this build has no CUDA support (rebuild "
                         "with -Dcuda=enabled); use cpu or auto", text);
#else
    int n = ssm_device_count();
    if (n == 0)
        return ssm_set_error(SSM_ERR_DEVICE, "device '%s': no CUDA device is present; use cpu or "
                             "auto", text);
    if (device >= n) {
        if (n == 1)
            return ssm_set_error(SSM_ERR_DEVICE, "device '%s': this machine has 1 CUDA device (0)",
                                 text);
        return ssm_set_error(SSM_ERR_DEVICE, "device '%s': this machine has %d CUDA devices "
                             "(0 to %d)", text, n, n - 1);
    }
    return SSM_OK;
#endif
}

ssm_status ssm_parse_device(const char *text, int *device) {
    if (!device) return ssm_set_error(SSM_ERR_ARG, "ssm_parse_device: device is NULL");
    *device = -1;
    if (!text || !strcmp(text, "auto")) {
        *device = ssm_device_count() > 0 ? 0 : -1;
        return SSM_OK;
    }
    if (!strcmp(text, "cpu")) return SSM_OK;
    int index = -1;
    if (!strcmp(text, "cuda")) {
        index = 0;
    } else if (!strncmp(text, "cuda:", 5) && text[5] >= '0' && text[5] <= '9') {
        char *end;
        long v = strtol(text + 5, &end, 10);
        if (!*end && v <= 1 << 20) index = (int)v;
    }
    if (index < 0)
        return ssm_set_error(SSM_ERR_ARG, "unknown device '%s' (auto, cpu, cuda or cuda:N)", text);
    ssm_status s = check_device(text, index);
    if (s) return s;
    *device = index;
    return SSM_OK;
}

#ifdef SSM_WITH_CUDA
static ssm_status cuda_forward(ssm_model *m, const int32_t *tokens, const int32_t *targets, int B,
                               int L, ssm_state *state, float *loss, float *logp, float *entropy) {
    return cuda_model_forward(m, tokens, targets, B, L, state, loss, logp, entropy);
}

/* the CUDA backend runs language models: ssm_forward_io is the CPU's */
static ssm_status cuda_supports(const ssm_config *c) {
    if (c->patch.kind != SSM_PATCH_NONE)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend has no patch encoder (model.patch: "
                             "pointnet runs on the CPU): use --device cpu");
    if (!ssm_io_is_lm(c))
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend runs token models with the "
                             "tied LM head; this model's float inputs or head run on the CPU: use "
                             "--device cpu");
    if (!ssm_config_causal(c))
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend runs causal models; this one "
                             "is bidirectional (%s): use --device cpu", c->rcps ? "RCPS" :
                             "bimamba layers");
    return cuda_model_supports(c);
}

const ssm_backend ssm_backend_cuda = {
    .name = "cuda",
    .supports = cuda_supports,
    .forward = cuda_forward,
    .logits = cuda_model_logits,
    .backward = cuda_model_backward,
    .zero_grad = cuda_model_zero_grad,
    .step = cuda_model_step,
    .adamw_step = cuda_model_adamw_step,
    .generate_greedy = cuda_model_generate_greedy,
    .sync_host = cuda_model_sync_host,
    .reserve = cuda_model_reserve,
    .peak = cuda_model_peak,
    .release = cuda_model_detach,
    .routing = cuda_model_routing,
    .aux_loss = cuda_model_aux_loss,
};
#endif

#ifdef SSM_WITH_CUDA
/* the CUDA backend's fused Mamba-1 path has no Jamba inner norms (mamba1.c) */
static ssm_status cuda_without_inner_norms(const ssm_config *c) {
    if (c->inner_norms)
        return ssm_set_error(SSM_ERR_UNSUPPORTED, "the CUDA backend runs Mamba-1 layers without "
                             "Jamba's inner dt/B/C norms; this model has model.inner_norms = true: "
                             "use --device cpu");
    return SSM_OK;
}
#endif

ssm_status ssm_device_supports(int device, const ssm_config *c) {
    if (!c) return ssm_set_error(SSM_ERR_ARG, "ssm_device_supports: config is NULL");
    if (device < 0) return ssm_backend_cpu.supports(c);
#ifdef SSM_WITH_CUDA
    if (cuda_without_inner_norms(c)) return SSM_ERR_UNSUPPORTED;
    return ssm_backend_cuda.supports(c);
#else
    return check_device("cuda", device);
#endif
}

ssm_status ssm_model_use_device(ssm_model *m, ssm_adamw *opt, int device) {
    if (!m) return ssm_set_error(SSM_ERR_ARG, "ssm_model_use_device: model is NULL");
    if (device < -1)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_use_device: device %d (-1 for the CPU, or a "
                             "CUDA device index)", device);
#ifdef SSM_WITH_CUDA
    ssm_status s;
    if (device < 0) {
        if (m->cuda) {
            if ((s = cuda_model_sync_host(m, opt))) return s;
            cuda_model_detach(m);
        }
        m->device = -1;
        m->backend = &ssm_backend_cpu;
        return SSM_OK;
    }
    char name[32];
    snprintf(name, sizeof name, "cuda:%d", device);
    if ((s = check_device(name, device))) return s;
    if (m->cuda && m->device == device) return SSM_OK;
    if ((s = cuda_without_inner_norms(&m->config)) || (s = ssm_backend_cuda.supports(&m->config))) return s;
    if (m->cuda) { /* on another GPU: bring it home first, then over */
        if ((s = cuda_model_sync_host(m, opt))) return s;
        cuda_model_detach(m);
        m->device = -1;
        m->backend = &ssm_backend_cpu;
    }
    if ((s = cuda_model_attach(m, opt, device))) return s;
    if (m->acts) m->acts->has_hidden = 0; /* the CPU's buffers no longer follow the model */
    m->device = device;
    m->backend = &ssm_backend_cuda;
    return SSM_OK;
#else
    (void)opt;
    if (device < 0) {
        m->device = -1;
        return SSM_OK;
    }
    char name[32];
    snprintf(name, sizeof name, "cuda:%d", device);
    return check_device(name, device);
#endif
}

ssm_status ssm_model_sync_host(ssm_model *m, ssm_adamw *opt) {
    if (!m) return ssm_set_error(SSM_ERR_ARG, "ssm_model_sync_host: model is NULL");
    return m->backend->sync_host(m, opt);
}

ssm_status ssm_model_reserve(ssm_model *m, int B, int L, int training) {
    if (!m || B <= 0 || L <= 0)
        return ssm_set_error(SSM_ERR_ARG, "ssm_model_reserve: need a model and B, L > 0 (got %d, %d)",
                             B, L);
    return m->backend->reserve(m, B, L, training);
}

size_t ssm_model_device_peak(const ssm_model *m) { return m ? m->backend->peak(m) : 0; }

ssm_status ssm_state_to_host(ssm_state *s) {
#ifdef SSM_WITH_CUDA
    if (s && s->on_device && s->cuda) return cuda_state_to_host(s);
#endif
    (void)s;
    return SSM_OK;
}
