/* error.c — status strings and the thread's last error. Calls nothing above
 * tensor/. */
#include <stdarg.h>
#include <stdio.h>

#include "tensor/tensor.h"

static _Thread_local char last_error[BG_ERROR_MAX];
static _Thread_local bg_status last_status;

const char *bg_status_str(bg_status status) {
    static const char *const names[BG_STATUS_COUNT] = {
        [BG_OK]              = "ok",
        [BG_ERR_ARG]         = "invalid argument",
        [BG_ERR_SHAPE]       = "shape mismatch",
        [BG_ERR_DTYPE]       = "wrong dtype",
        [BG_ERR_NOMEM]       = "out of memory",
        [BG_ERR_IO]          = "input/output error",
        [BG_ERR_FORMAT]      = "corrupt or unsupported file",
        [BG_ERR_NAN]         = "NaN or Inf found",
        [BG_ERR_STATE]       = "call does not fit the object's state",
        [BG_ERR_UNSUPPORTED] = "not supported by this build",
    };
    if ((int)status < 0 || status >= BG_STATUS_COUNT) return "unknown status";
    return names[status];
}

const char *bg_version(void) { return BG_VERSION_STRING; }

const char *bg_last_error(void) { return last_error; }
bg_status bg_last_status(void) { return last_status; }

void bg_clear_error(void) {
    last_error[0] = '\0';
    last_status = BG_OK;
}

bg_status bg_set_error(bg_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    last_status = status;
    return status;
}
