/*
 * cli.c — the flag parser and error reporting shared by the verbs.
 */
#include "cli.h"

#include <signal.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
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
    char buf[1200];
    fprintf(stderr, "alloy %s: error: %s\n", verb, cli_error_text(buf, sizeof buf));
    return s == ALLOY_STATUS_USAGE ? 2 : 1;
}

void cli_default_threads(void) {
    if (getenv("OMP_NUM_THREADS")) return; // the user's choice stands
    int cores = 1, n = alloy_cores_free(&cores);
    alloy_threads_use(n);
    if (n < cores && isatty(2))
        fprintf(stderr, "alloy: %d thread%s: %d of %d cores busy with other work (--threads N to choose)\n", n,
                n == 1 ? "" : "s", cores - n, cores);
}

void cli_set_threads(int threads) {
    if (threads > 0) alloy_threads_use(threads);
}

void cli_free_lists(cli_flag *flags, int n_flags) {
    for (int i = 0; i < n_flags; i++)
        if (flags[i].kind == CLI_LIST) {
            cli_list *l = flags[i].dst;
            free(l->items);
            *l = (cli_list){0};
        }
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
    case CLI_OPTION: {
        const cli_option_ref *ref = f->dst;
        char buf[1200];
        if (alloy_options_set(ref->schema, ref->opts, ref->option->name, v)) return cli_usage(verb, "%s", cli_error_text(buf, sizeof buf));
        return 0;
    }
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

/* Edit distance (insertions, deletions, substitutions, swaps of neighbours) between a[0..na) and
 * b[0..nb), both at most 63 characters (else a large number). */
static int edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    enum { MAXN = 64 };
    if (na >= MAXN || nb >= MAXN) return 1000;
    int d[MAXN][MAXN];
    for (size_t i = 0; i <= na; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= nb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= na; i++)
        for (size_t j = 1; j <= nb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[na][nb];
}

/* The usage error of an unknown flag name[0..len), with the nearest known flags: those it
 * begins, or within 2 edits (and fewer edits than its length), at most 3 of the closest. */
static int unknown_flag(const char *verb, const cli_flag *flags, int n, const char *name, size_t len) {
    int best = 2, picked = 0;
    const char *near[3];
    for (int k = 0; k < n; k++) {
        size_t fl = strlen(flags[k].name);
        int d = fl > len && !strncmp(flags[k].name, name, len) ? 1 : edit_distance(name, len, flags[k].name, fl);
        if (d > best || d >= (int)len) continue;
        if (d < best) best = d, picked = 0;
        if (picked < 3) near[picked++] = flags[k].name;
    }
    if (!picked) return cli_usage(verb, "unknown flag --%.*s", (int)len, name);
    char hint[256];
    size_t h = 0;
    for (int i = 0; i < picked && h < sizeof hint; i++)
        h += (size_t)snprintf(hint + h, sizeof hint - h, "%s--%s", i == 0 ? "" : i == picked - 1 ? " or " : ", ", near[i]);
    return cli_usage(verb, "unknown flag --%.*s (did you mean %s?)", (int)len, name, hint);
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
        if (!f) return unknown_flag(verb, flags, n, name, len);
        if (f->seen && f->kind != CLI_LIST) return cli_usage(verb, "--%s given twice", f->name);
        f->seen = true;
        const cli_option_ref *ref = f->kind == CLI_OPTION ? f->dst : NULL;
        if (f->kind == CLI_BOOL || (ref && ref->option->type == ALLOY_OPT_BOOL && !(ref->option->flags & ALLOY_OPT_VALUED))) {
            if (eq) return cli_usage(verb, "--%s takes no value", f->name);
            *(bool *)(ref ? (char *)ref->opts + ref->option->offset : f->dst) = true;
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

/* ---- ensembles of models where one is sampled (generate, sample, chat) ---- */

int cli_ensemble_options(const char *verb, int n_models, const cli_list *weight_args, const char *mode_name,
                         float *weights, alloy_ensemble_mode *mode) {
    if (n_models > ALLOY_ENGINE_MAX_MEMBERS) return cli_usage(verb, "at most %d models", ALLOY_ENGINE_MAX_MEMBERS);
    if (weight_args->n && weight_args->n != n_models)
        return cli_usage(verb, "--member-weights needs one weight per model (%d)", n_models);
    for (int i = 0; i < weight_args->n; i++) {
        char *end;
        weights[i] = strtof(weight_args->items[i], &end);
        if (end == weight_args->items[i] || *end || !(weights[i] >= 0.0f) || isinf(weights[i]))
            return cli_usage(verb, "--member-weights: '%s' is not a number >= 0", weight_args->items[i]);
    }
    if (alloy_ensemble_mode_parse(mode_name, mode) || *mode == ALLOY_ENSEMBLE_LEARNED)
        return cli_usage(verb, "--ensemble must be probs or logits (a learned combiner needs hidden states that "
                               "generation does not keep)");
    return 0;
}

alloy_status cli_check_member(alloy_checkpoint *first, alloy_checkpoint *ck) {
    char why[2048];
    if (alloy_checkpoint_compatible(first, ck, why, sizeof why)) return ALLOY_STATUS_OK;
    return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: ensemble members must share a tokenizer", why);
}

alloy_status cli_load_members(const cli_list *paths, char **dirs, alloy_model **ms, int *n, int *least_ctx,
                              alloy_checkpoint **first) {
    alloy_status s = ALLOY_STATUS_OK;
    *n = 0;
    *least_ctx = 0;
    *first = NULL;
    for (int i = 0; i < paths->n && !s; i++) {
        alloy_checkpoint *ck = NULL;
        s = alloy_checkpoint_open(&ck, paths->items[i]);
        *n = i + 1;
        if (!s && !(dirs[i] = alloy_strdup(ck->dir))) s = ALLOY_STATUS_NOMEM;
        if (!s) s = alloy_model_load(&ms[i], dirs[i], 1, 1);
        if (!s && i) s = cli_check_member(*first, ck);
        if (!s && (!*least_ctx || ms[i]->config.max_seq_len < *least_ctx)) *least_ctx = ms[i]->config.max_seq_len;
        if (i == 0) *first = ck;
        else alloy_checkpoint_close(ck);
    }
    return s;
}

alloy_status cli_engine_create(alloy_engine **out, alloy_model *const *ms, int n, const alloy_engine_options *eo,
                               const float *weights, alloy_ensemble_mode mode) {
    *out = NULL;
    if (n == 1) return alloy_engine_create(out, ms[0], eo);
    alloy_engine *members[ALLOY_ENGINE_MAX_MEMBERS] = {0};
    alloy_status s = n > ALLOY_ENGINE_MAX_MEMBERS ? alloy_fail(ALLOY_STATUS_USAGE, "at most %d models", ALLOY_ENGINE_MAX_MEMBERS)
                                                  : ALLOY_STATUS_OK;
    for (int i = 0; i < n && !s; i++)
        if ((s = alloy_engine_create(&members[i], ms[i], eo))) alloy_error_prefix("ensemble member %d", i);
    if (!s) s = alloy_engine_create_ensemble(out, members, weights, n, mode);
    if (s)
        for (int i = 0; i < n && i < ALLOY_ENGINE_MAX_MEMBERS; i++) alloy_engine_destroy(members[i]);
    return s;
}

int cli_resume_mode(const char *verb, const char **resume, const char *branch, bool rewind, const char *out,
                    alloy_resume_mode *mode) {
    *mode = ALLOY_RESUME_REFUSE;
    if (branch && (*resume || rewind)) return cli_usage(verb, "--branch-from goes without --resume and --rewind");
    if (rewind && !*resume) return cli_usage(verb, "--rewind goes with --resume");
    if (branch && !out) return cli_usage(verb, "--branch-from needs --out, the new run folder");
    if (branch) {
        *resume = branch;
        *mode = ALLOY_RESUME_BRANCH;
    } else if (rewind) {
        *mode = ALLOY_RESUME_REWIND;
    }
    return 0;
}

int put_out(const char *verb, const char *out, char *dst, size_t cap) {
    if (strlen(out) >= cap) return cli_usage(verb, "--out: path too long");
    strcpy(dst, out);
    return 0;
}

static volatile int stop_requested;

static void on_stop_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

volatile int *cli_catch_stop(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return &stop_requested;
}
