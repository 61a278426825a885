/*
 * error.c — status values and the per-thread error message.
 *
 * Library functions return an alloy_status and leave a one-line message here naming the file
 * or argument and what is wrong; only the command prints it.
 */
#include "alloy/base.h"
#include "alloy/options.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERROR_CAP 1024

static _Thread_local char error_message[ERROR_CAP];
static _Thread_local char error_option[64]; /* the option the message is about ("": none) */

alloy_status alloy_fail(alloy_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    error_option[0] = '\0';
    return status;
}

alloy_status alloy_fail_option(alloy_status status, const char *option, const char *fmt, ...) {
    char rest[ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    // "lr must ...", "layers: ..." (no space before a colon)
    snprintf(error_message, sizeof error_message, "%.63s%s%.900s", option, rest[0] == ':' ? "" : " ", rest);
    snprintf(error_option, sizeof error_option, "%s", option);
    return status;
}

const char *alloy_error_option(void) { return error_option[0] ? error_option : NULL; }

void alloy_error_prefix(const char *fmt, ...) {
    char prefix[ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[2 * ERROR_CAP + 2];
    snprintf(joined, sizeof joined, "%s: %s", prefix, error_message);
    memcpy(error_message, joined, sizeof error_message - 1);
    error_message[ERROR_CAP - 1] = '\0';
}

const char *alloy_last_error(void) { return error_message; }

const char *alloy_status_name(alloy_status status) {
    switch (status) {
    case ALLOY_STATUS_OK: return "ok";
    case ALLOY_STATUS_USAGE: return "usage";
    case ALLOY_STATUS_IO: return "io";
    case ALLOY_STATUS_FORMAT: return "format";
    case ALLOY_STATUS_MISMATCH: return "mismatch";
    case ALLOY_STATUS_RANGE: return "range";
    case ALLOY_STATUS_NOMEM: return "nomem";
    case ALLOY_STATUS_INTERNAL: return "internal";
    }
    return "unknown";
}

void alloy_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "alloy: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    abort();
}
