/*
 * options.c — option schemas (alloy/options.h): saving an options struct as JSON, reading it
 * back, setting one option from text, and what a resume may change, all driven by one table.
 */
#include "alloy/options.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *field(void *opts, const alloy_option *o) { return (char *)opts + o->offset; }
static const void *cfield(const void *opts, const alloy_option *o) { return (const char *)opts + o->offset; }

const char *alloy_option_flag(const alloy_option *o, char *buf, size_t size) {
    snprintf(buf, size, "%s", o->flag ? o->flag : o->name);
    for (char *p = buf; *p; p++)
        if (*p == '_') *p = '-';
    return buf;
}

/* a and b name the same option: '-' and '_' alike. */
static bool same_name(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (*a != *b && !((*a == '-' || *a == '_') && (*b == '-' || *b == '_'))) return false;
    return !*a && !*b;
}

const alloy_option *alloy_schema_find(const alloy_schema *s, const char *name) {
    for (int i = 0; i < s->n; i++) {
        char flag[64];
        if (same_name(s->rows[i].name, name) || same_name(alloy_option_flag(&s->rows[i], flag, sizeof flag), name))
            return &s->rows[i];
    }
    return NULL;
}

static int choice_count(const alloy_option *o) {
    int n = 0;
    while (o->choices && o->choices[n]) n++;
    return n;
}

/* "a, b or c" of an enum's names. */
static void choice_list(const alloy_option *o, char *buf, size_t size) {
    int n = choice_count(o);
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", o->choices[i]);
}

cJSON *alloy_options_save(const alloy_schema *s, const void *opts) {
    cJSON *j = cJSON_CreateObject();
    for (int i = 0; j && i < s->n; i++) {
        const alloy_option *o = &s->rows[i];
        const void *f = cfield(opts, o);
        char buf[32];
        if (o->flags & ALLOY_OPT_NOSAVE) continue;
        switch (o->type) {
        case ALLOY_OPT_STRING: cJSON_AddStringToObject(j, o->name, f); break;
        case ALLOY_OPT_INT: cJSON_AddNumberToObject(j, o->name, *(const int *)f); break;
        case ALLOY_OPT_INT64: cJSON_AddNumberToObject(j, o->name, (double)*(const int64_t *)f); break;
        case ALLOY_OPT_UINT64:
            snprintf(buf, sizeof buf, "%" PRIu64, *(const uint64_t *)f);
            cJSON_AddStringToObject(j, o->name, buf);
            break;
        case ALLOY_OPT_FLOAT: cJSON_AddNumberToObject(j, o->name, *(const float *)f); break;
        case ALLOY_OPT_DOUBLE: cJSON_AddNumberToObject(j, o->name, *(const double *)f); break;
        case ALLOY_OPT_BOOL: cJSON_AddBoolToObject(j, o->name, *(const bool *)f); break;
        case ALLOY_OPT_ENUM: {
            int v = *(const int *)f;
            cJSON_AddStringToObject(j, o->name, v >= 0 && v < choice_count(o) ? o->choices[v] : "?");
            break;
        }
        }
    }
    return j;
}

/* Stores a saved number into a numeric field: FORMAT naming `what` when it does not fit the type. */
static alloy_status store_number(const alloy_option *o, void *f, double d, const char *what) {
    bool integral = o->type == ALLOY_OPT_INT || o->type == ALLOY_OPT_INT64;
    if (!isfinite(d) || (integral && (d != floor(d) || fabs(d) > 9.0e15)) ||
        (o->type == ALLOY_OPT_INT && (d < INT32_MIN || d > INT32_MAX)))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is not a valid %s", what, o->name, integral ? "integer" : "number");
    switch (o->type) {
    case ALLOY_OPT_INT: *(int *)f = (int)d; break;
    case ALLOY_OPT_INT64: *(int64_t *)f = (int64_t)d; break;
    case ALLOY_OPT_FLOAT: *(float *)f = (float)d; break;
    default: *(double *)f = d; break;
    }
    return ALLOY_STATUS_OK;
}

static alloy_status load_one(const alloy_option *o, void *f, const cJSON *v, const char *what) {
    switch (o->type) {
    case ALLOY_OPT_STRING:
    case ALLOY_OPT_UINT64:
    case ALLOY_OPT_ENUM: {
        if (!cJSON_IsString(v)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is not a string", what, o->name);
        const char *t = v->valuestring;
        if (o->type == ALLOY_OPT_STRING) {
            if (strlen(t) >= o->size) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is too long", what, o->name);
            strcpy(f, t);
        } else if (o->type == ALLOY_OPT_UINT64) {
            char *end;
            errno = 0;
            unsigned long long u = strtoull(t, &end, 10);
            if (!*t || *end || *t == '-' || errno)
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is not a number", what, o->name);
            *(uint64_t *)f = u;
        } else {
            int k = 0, n = choice_count(o);
            while (k < n && strcmp(o->choices[k], t)) k++;
            if (k == n) {
                char list[160];
                choice_list(o, list, sizeof list);
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is \"%s\", not %s", what, o->name, t, list);
            }
            *(int *)f = k;
        }
        return ALLOY_STATUS_OK;
    }
    case ALLOY_OPT_BOOL:
        if (!cJSON_IsBool(v)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is not true or false", what, o->name);
        *(bool *)f = cJSON_IsTrue(v);
        return ALLOY_STATUS_OK;
    default:
        if (!cJSON_IsNumber(v)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is not a number", what, o->name);
        return store_number(o, f, v->valuedouble, what);
    }
}

alloy_status alloy_options_load(const alloy_schema *s, void *opts, const cJSON *j, const char *what) {
    for (int i = 0; i < s->n; i++) {
        const alloy_option *o = &s->rows[i];
        if (o->flags & ALLOY_OPT_NOSAVE) continue;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, o->name);
        if (!v) {
            if (o->flags & ALLOY_OPT_OPTIONAL) continue;
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing field \"%s\"", what, o->name);
        }
        alloy_status st = load_one(o, field(opts, o), v, what);
        if (st) return st;
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_options_set(const alloy_schema *s, void *opts, const char *name, const char *text) {
    const alloy_option *o = alloy_schema_find(s, name);
    if (!o) return alloy_fail(ALLOY_STATUS_USAGE, "unknown option %s", name);
    void *f = field(opts, o);
    switch (o->type) {
    case ALLOY_OPT_STRING:
        if (strlen(text) >= o->size) return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "is too long");
        strcpy(f, text);
        return ALLOY_STATUS_OK;
    case ALLOY_OPT_BOOL: {
        bool on = !strcmp(text, "true") || !strcmp(text, "on"), off = !strcmp(text, "false") || !strcmp(text, "off");
        if (!on && !off) return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "must be on or off, not \"%s\"", text);
        *(bool *)f = on;
        return ALLOY_STATUS_OK;
    }
    case ALLOY_OPT_ENUM: {
        int k = 0, n = choice_count(o);
        while (k < n && strcmp(o->choices[k], text)) k++;
        if (k == n) {
            char list[160];
            choice_list(o, list, sizeof list);
            return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "must be %s, not \"%s\"", list, text);
        }
        *(int *)f = k;
        return ALLOY_STATUS_OK;
    }
    case ALLOY_OPT_UINT64: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(text, &end, 10);
        if (!*text || *end || *text == '-' || errno)
            return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "expects a non-negative integer, got '%s'", text);
        *(uint64_t *)f = u;
        return ALLOY_STATUS_OK;
    }
    case ALLOY_OPT_INT:
    case ALLOY_OPT_INT64: {
        char *end;
        errno = 0;
        long long x = strtoll(text, &end, 10);
        if (!*text || *end || errno || (o->type == ALLOY_OPT_INT && (x < -2147483647LL || x > 2147483647LL)))
            return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "expects an integer, got '%s'", text);
        if (o->type == ALLOY_OPT_INT) *(int *)f = (int)x;
        else *(int64_t *)f = x;
        return ALLOY_STATUS_OK;
    }
    default: {
        char *end;
        errno = 0;
        double d = strtod(text, &end);
        if (!*text || *end || errno || !isfinite(d))
            return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "expects a number, got '%s'", text);
        if (o->type == ALLOY_OPT_FLOAT) *(float *)f = (float)d;
        else *(double *)f = d;
        return ALLOY_STATUS_OK;
    }
    }
}

alloy_status alloy_options_resume(const alloy_schema *s, void *saved, const void *given, const bool *set) {
    for (int i = 0; i < s->n; i++) {
        const alloy_option *o = &s->rows[i];
        if (!set[i]) continue;
        if (!(o->flags & (ALLOY_OPT_RESUME | ALLOY_OPT_NOSAVE)))
            return alloy_fail_option(ALLOY_STATUS_USAGE, o->name, "cannot change when resuming (the run's saved settings apply)");
        memcpy(field(saved, o), cfield(given, o), o->size);
    }
    return ALLOY_STATUS_OK;
}
