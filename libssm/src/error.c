/* error.c: status names and the per-thread message of the last failure. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char last_error[1024];

const char *ssm_status_name(ssm_status status) {
    switch (status) {
    case SSM_OK: return "ok";
    case SSM_ERR_ARG: return "invalid argument";
    case SSM_ERR_NOMEM: return "out of memory";
    case SSM_ERR_IO: return "input/output error";
    case SSM_ERR_FORMAT: return "malformed file";
    case SSM_ERR_SHAPE: return "shape mismatch";
    case SSM_ERR_DTYPE: return "unsupported dtype";
    case SSM_ERR_MISSING: return "missing entry";
    case SSM_ERR_UNSUPPORTED: return "unsupported";
    case SSM_ERR_NUMERIC: return "non-finite number";
    case SSM_ERR_DEVICE: return "GPU failure";
    }
    return "unknown status";
}

const char *ssm_last_error(void) { return last_error; }

ssm_status ssm_set_error(ssm_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

ssm_status ssm_fail_file(const char *path, ssm_status status, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ssm_set_error(status, "%s: %s", path, msg);
}

void ssm_format_shape(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}
