/* error.c: status names and the per-thread message of the last failure. */
#include <stdarg.h>
#include <stdio.h>

#include "ssm/ssm.h"

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
