/*
 * cli.c — the flag parser and error reporting shared by the verbs.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int cli_usage(const char *verb, const char *fmt, ...) {
    fprintf(stderr, "alloy %s: ", verb);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see: alloy %s --help)\n", verb);
    return 2;
}

int cli_fail(const char *verb, alloy_status s) {
    fprintf(stderr, "alloy %s: error: %s\n", verb, alloy_last_error());
    return s == ALLOY_STATUS_USAGE ? 2 : 1;
}

void cli_set_threads(int threads) {
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

const cli_flag *cli_find(const cli_flag *flags, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(flags[i].name, name)) return &flags[i];
    return NULL;
}

static int parse_value(const char *verb, cli_flag *f, const char *v) {
    char *end;
    errno = 0;
    switch (f->kind) {
    case CLI_STR:
        *(const char **)f->dst = v;
        return 0;
    case CLI_INT:
    case CLI_I64: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno || (f->kind == CLI_INT && (x < -2147483647LL || x > 2147483647LL)))
            return cli_usage(verb, "--%s expects an integer, got '%s'", f->name, v);
        if (f->kind == CLI_INT) *(int *)f->dst = (int)x;
        else *(int64_t *)f->dst = x;
        return 0;
    }
    case CLI_U64: {
        if (*v == '-') return cli_usage(verb, "--%s expects a non-negative integer, got '%s'", f->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno) return cli_usage(verb, "--%s expects a non-negative integer, got '%s'", f->name, v);
        *(uint64_t *)f->dst = x;
        return 0;
    }
    case CLI_DBL:
    case CLI_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) return cli_usage(verb, "--%s expects a number, got '%s'", f->name, v);
        if (f->kind == CLI_DBL) *(double *)f->dst = x;
        else *(float *)f->dst = (float)x;
        return 0;
    }
    default:
        return 0;
    }
}

static int list_add(cli_list *l, const char *v) {
    const char **ni = realloc(l->items, sizeof(char *) * (size_t)(l->n + 1));
    if (!ni) return -1;
    l->items = ni;
    l->items[l->n++] = v;
    return 0;
}

int cli_parse(const char *verb, int argc, char **argv, cli_flag *flags, int n, const char *help, cli_list *positional) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help, stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            if (!positional) return cli_usage(verb, "unexpected argument '%s'", a);
            list_add(positional, a);
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_flag *f = NULL;
        for (int k = 0; k < n; k++)
            if (strlen(flags[k].name) == len && !strncmp(flags[k].name, name, len)) f = &flags[k];
        if (!f) return cli_usage(verb, "unknown flag --%.*s", (int)len, name);
        if (f->seen && f->kind != CLI_LIST) return cli_usage(verb, "--%s given twice", f->name);
        f->seen = true;
        if (f->kind == CLI_BOOL) {
            if (eq) return cli_usage(verb, "--%s takes no value", f->name);
            *(bool *)f->dst = true;
            continue;
        }
        if (f->kind == CLI_LIST) {
            cli_list *l = f->dst;
            int before = l->n;
            if (eq) list_add(l, eq + 1);
            while (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) list_add(l, argv[++i]);
            if (l->n == before) return cli_usage(verb, "--%s needs a value", f->name);
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return cli_usage(verb, "--%s needs a value", f->name);
        int r = parse_value(verb, f, v);
        if (r) return r;
    }
    return 0;
}
