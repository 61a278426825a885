/*
 * progress.c — a one-line progress display and a monotonic clock.
 *
 * On a terminal the line is redrawn in place; when output goes to a file or pipe, every n-th
 * update is printed as its own line so that logs stay readable.
 */
#include "alloy/base.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double alloy_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void alloy_progress_init(alloy_progress *p, FILE *out, int every) {
    memset(p, 0, sizeof *p);
    p->out = out ? out : stderr;
    p->tty = isatty(fileno(p->out));
    p->every = every > 0 ? every : 1;
}

static void end_line(alloy_progress *p) {
    if (p->tty && p->last_len > 0) {
        fputc('\n', p->out);
        p->last_len = 0;
    }
}

void alloy_progress_update(alloy_progress *p, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    p->count++;
    if (p->tty) {
        int len = (int)strlen(line);
        int pad = p->last_len > len ? p->last_len - len : 0;
        fprintf(p->out, "\r%s%*s", line, pad, "");
        p->last_len = len;
    } else if (p->count % p->every == 0 || p->count == 1) {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
}

void alloy_progress_print(alloy_progress *p, const char *fmt, ...) {
    end_line(p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    fputc('\n', p->out);
    fflush(p->out);
}

void alloy_progress_done(alloy_progress *p) {
    end_line(p);
    fflush(p->out);
}

void alloy_format_duration(double seconds, char *buf, size_t size) {
    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(buf, size, "?");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, size, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else if (s >= 60) snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, size, "%lds", s);
}

void alloy_format_count(double n, char *buf, size_t size) {
    if (n >= 1e9) snprintf(buf, size, "%.2fB", n / 1e9);
    else if (n >= 1e6) snprintf(buf, size, "%.2fM", n / 1e6);
    else if (n >= 1e3) snprintf(buf, size, "%.1fk", n / 1e3);
    else snprintf(buf, size, "%.0f", n);
}
