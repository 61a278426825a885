/*
 * json.c — small helpers over cJSON: read and write files, typed field access with errors
 * that name the file and the key.
 */
#include "alloy/base.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

alloy_status alloy_json_read_file(const char *path, cJSON **out) {
    *out = NULL;
    char *text;
    size_t n;
    alloy_status s = alloy_file_read_all(path, &text, &n);
    if (s) return s;
    if (strlen(text) != n) {
        alloy_free(text);
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not JSON (contains a NUL byte)", path);
    }
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithOpts(text, &end, 1);
    if (!json) {
        size_t off = end ? (size_t)(end - text) : 0;
        alloy_free(text);
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: invalid JSON near byte %zu", path, off);
    }
    alloy_free(text);
    *out = json;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_json_write_file(const char *path, const cJSON *json) {
    char *text = cJSON_Print(json);
    if (!text) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot format JSON", path);
    size_t n = strlen(text);
    alloy_atomic_file f;
    alloy_status s = alloy_atomic_open(&f, path);
    if (s == ALLOY_STATUS_OK) {
        s = alloy_atomic_write(&f, text, n);
        if (s == ALLOY_STATUS_OK) s = alloy_atomic_write(&f, "\n", 1);
        if (s == ALLOY_STATUS_OK) s = alloy_atomic_commit(&f);
        else alloy_atomic_abort(&f);
    }
    cJSON_free(text);
    return s;
}

static const cJSON *field(const cJSON *obj, const char *key) {
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static alloy_status get_number(const cJSON *obj, const char *key, const char *what, double *out, bool optional) {
    const cJSON *v = field(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (optional) return ALLOY_STATUS_OK;
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing field \"%s\"", what, key);
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" must be a number", what, key);
    *out = v->valuedouble;
    return ALLOY_STATUS_OK;
}

static alloy_status get_int(const cJSON *obj, const char *key, const char *what, int64_t *out, bool optional) {
    double d = 0;
    bool present = field(obj, key) && !cJSON_IsNull(field(obj, key));
    alloy_status s = get_number(obj, key, what, &d, optional);
    if (s || !present) return s;
    if (d != floor(d) || d < -9.0e15 || d > 9.0e15)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" must be an integer", what, key);
    *out = (int64_t)d;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_json_get_int(const cJSON *obj, const char *key, const char *what, int64_t *out) {
    return get_int(obj, key, what, out, false);
}
alloy_status alloy_json_opt_int(const cJSON *obj, const char *key, const char *what, int64_t *out) {
    return get_int(obj, key, what, out, true);
}
alloy_status alloy_json_get_double(const cJSON *obj, const char *key, const char *what, double *out) {
    return get_number(obj, key, what, out, false);
}
alloy_status alloy_json_opt_double(const cJSON *obj, const char *key, const char *what, double *out) {
    return get_number(obj, key, what, out, true);
}

alloy_status alloy_json_get_string(const cJSON *obj, const char *key, const char *what, const char **out) {
    const cJSON *v = field(obj, key);
    if (!v) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing field \"%s\"", what, key);
    if (!cJSON_IsString(v)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" must be a string", what, key);
    *out = v->valuestring;
    return ALLOY_STATUS_OK;
}

static alloy_status get_bool(const cJSON *obj, const char *key, const char *what, bool *out, bool optional) {
    const cJSON *v = field(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (optional) return ALLOY_STATUS_OK;
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing field \"%s\"", what, key);
    }
    if (!cJSON_IsBool(v)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" must be true or false", what, key);
    *out = cJSON_IsTrue(v);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_json_get_bool(const cJSON *obj, const char *key, const char *what, bool *out) {
    return get_bool(obj, key, what, out, false);
}
alloy_status alloy_json_opt_bool(const cJSON *obj, const char *key, const char *what, bool *out) {
    return get_bool(obj, key, what, out, true);
}
