/* status.c — status names, the per-thread error message, the version. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[NM_MSG_MAX];

neat_status nm_error(neat_status status, const char *fmt, ...) {
    /* Formatted aside first: an argument may be neat_last_error() itself (a message that
     * wraps the one a callee left). */
    char msg[NM_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return status;
}

void nm_set_error_text(const char *msg) {
    snprintf(last_error, sizeof last_error, "%s", msg ? msg : "");
}

NEAT_API const char *neat_last_error(void) { return last_error; }

NEAT_API const char *neat_status_string(neat_status status) {
    switch (status) {
    case NEAT_OK: return "NEAT_OK";
    case NEAT_ERR_INVALID_ARGUMENT: return "NEAT_ERR_INVALID_ARGUMENT";
    case NEAT_ERR_SHAPE_MISMATCH: return "NEAT_ERR_SHAPE_MISMATCH";
    case NEAT_ERR_DTYPE_MISMATCH: return "NEAT_ERR_DTYPE_MISMATCH";
    case NEAT_ERR_DEVICE_MISMATCH: return "NEAT_ERR_DEVICE_MISMATCH";
    case NEAT_ERR_UNSUPPORTED: return "NEAT_ERR_UNSUPPORTED";
    case NEAT_ERR_OUT_OF_MEMORY: return "NEAT_ERR_OUT_OF_MEMORY";
    case NEAT_ERR_INVALID_HANDLE: return "NEAT_ERR_INVALID_HANDLE";
    case NEAT_ERR_BACKEND_ERROR: return "NEAT_ERR_BACKEND_ERROR";
    case NEAT_ERR_INTERNAL: return "NEAT_ERR_INTERNAL";
    case NEAT_ERR_TIMEOUT: return "NEAT_ERR_TIMEOUT";
    }
    return "unknown status";
}

NEAT_API int neat_version_number(void) { return NEAT_VERSION_NUMBER; }
