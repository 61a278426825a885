/*
 * safetensors.c — a strict reader of the safetensors format (the writer is safetensors_write.c).
 *
 * The reader trusts nothing: header length against the file, JSON shape, dtypes, shapes
 * (with overflow checks), offsets against the data buffer, sizes against shapes, duplicate
 * names, and that tensors tile the buffer without holes or overlap.
 */
#include "alloy/io.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* the format's own limit */

static const struct {
    const char *name;
    size_t size;
} dtype_table[ALLOY_DTYPE_COUNT] = {
    [ALLOY_DTYPE_F32] = {"F32", 4}, [ALLOY_DTYPE_F16] = {"F16", 2}, [ALLOY_DTYPE_BF16] = {"BF16", 2},
    [ALLOY_DTYPE_F64] = {"F64", 8}, [ALLOY_DTYPE_I8] = {"I8", 1},   [ALLOY_DTYPE_U8] = {"U8", 1},
    [ALLOY_DTYPE_I16] = {"I16", 2}, [ALLOY_DTYPE_U16] = {"U16", 2}, [ALLOY_DTYPE_I32] = {"I32", 4},
    [ALLOY_DTYPE_U32] = {"U32", 4}, [ALLOY_DTYPE_I64] = {"I64", 8}, [ALLOY_DTYPE_U64] = {"U64", 8},
    [ALLOY_DTYPE_BOOL] = {"BOOL", 1},
};

size_t alloy_dtype_size(alloy_dtype d) { return d < ALLOY_DTYPE_COUNT ? dtype_table[d].size : 0; }
const char *alloy_dtype_name(alloy_dtype d) { return d < ALLOY_DTYPE_COUNT ? dtype_table[d].name : "?"; }

alloy_status alloy_dtype_parse(const char *name, alloy_dtype *out) {
    for (int i = 0; i < ALLOY_DTYPE_COUNT; i++) {
        if (!strcmp(dtype_table[i].name, name)) {
            *out = (alloy_dtype)i;
            return ALLOY_STATUS_OK;
        }
    }
    return alloy_fail(ALLOY_STATUS_USAGE, "unknown dtype \"%s\" (known: F32, F16, BF16, ...)", name ? name : "");
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int cmp_offset(const void *a, const void *b) {
    const alloy_st_tensor *x = *(const alloy_st_tensor *const *)a, *y = *(const alloy_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : (x->nbytes > y->nbytes);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const alloy_st_tensor *const *)a)->name, (*(const alloy_st_tensor *const *)b)->name);
}

/* Reads one non-negative integer of a JSON array, exactly representable. */
static bool json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static alloy_status parse_entry(alloy_safetensors *st, const cJSON *item, alloy_st_tensor *t, size_t data_size) {
    const char *path = st->path;
    const char *name = item->string;
    if (!cJSON_IsObject(item)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || alloy_dtype_parse(dt->valuestring, &t->dtype))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has a missing or unknown dtype", path, name);
    if (!cJSON_IsArray(shape))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has no shape array", path, name);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ALLOY_ST_MAX_DIMS)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has %d dimensions (at most %d)", path, name, nd,
                          ALLOY_ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_uint(cJSON_GetArrayItem(shape, i), &d))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has a bad dimension %d", path, name, i);
        t->shape[i] = (int64_t)d;
        if (!alloy_mul_size(numel, (size_t)d, &numel))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" shape overflows", path, name);
    }
    t->numel = numel;
    size_t nbytes;
    if (!alloy_mul_size(numel, alloy_dtype_size(t->dtype), &nbytes))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" size overflows", path, name);
    uint64_t b, e;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &e))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has bad data_offsets", path, name);
    if (b > e || e > data_size)
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tensor \"%s\" data [%llu, %llu) lies outside the %zu-byte data buffer (truncated?)",
                          path, name, (unsigned long long)b, (unsigned long long)e, data_size);
    if (e - b != nbytes)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has %llu bytes of data but its shape needs %zu",
                          path, name, (unsigned long long)(e - b), nbytes);
    t->offset = (size_t)b;
    t->nbytes = nbytes;
    return ALLOY_STATUS_OK;
}

/* Reads the header (length, '{', no NUL, one JSON object padded with spaces) into *root. */
static alloy_status read_header(alloy_safetensors *st, cJSON **root) {
    const char *path = st->path;
    if (st->map.size < 8)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: too short for a safetensors file (%zu bytes)", path, st->map.size);
    uint64_t n = read_le64(st->map.data);
    if (n < 2 || n > ST_MAX_HEADER || n > st->map.size - 8)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header length %llu does not fit the %zu-byte file", path,
                          (unsigned long long)n, st->map.size);
    st->header_size = (size_t)n;
    const char *hdr = (const char *)st->map.data + 8;
    if (hdr[0] != '{') return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header does not start with '{'", path);
    if (memchr(hdr, '\0', n)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header contains a NUL byte", path);
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, false);
    bool only_padding = end != NULL;
    for (const char *q = end; only_padding && q < hdr + n; q++) only_padding = *q == ' ';
    if (!cJSON_IsObject(*root) || !only_padding)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header is not a valid JSON object", path);
    return ALLOY_STATUS_OK;
}

/* Checks that __metadata__ is an object of strings. */
static alloy_status check_metadata(const alloy_safetensors *st, const cJSON *it) {
    if (!cJSON_IsObject(it)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: __metadata__ is not an object", st->path);
    for (const cJSON *kv = it->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: __metadata__ value \"%s\" is not a string", st->path,
                              kv->string);
    return ALLOY_STATUS_OK;
}

/* Reads every tensor entry of the header into st->tensors (in file order); *order gets a
 * second array of pointers to them, for the checks. */
static alloy_status read_entries(alloy_safetensors *st, const cJSON *root, alloy_st_tensor ***order) {
    size_t data_size = st->map.size - 8 - st->header_size;
    int count = 0;
    for (const cJSON *it = root->child; it; it = it->next) count += strcmp(it->string, "__metadata__") != 0;
    st->tensors = alloy_calloc((size_t)(count ? count : 1), sizeof *st->tensors);
    *order = alloy_calloc((size_t)(count ? count : 1), sizeof **order);
    if (!st->tensors || !*order) return ALLOY_STATUS_NOMEM;
    for (const cJSON *it = root->child; it; it = it->next) {
        alloy_status s;
        if (!strcmp(it->string, "__metadata__")) {
            if ((s = check_metadata(st, it))) return s;
            continue;
        }
        alloy_st_tensor *t = &st->tensors[st->n_tensors];
        if (!it->string[0]) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: a tensor has an empty name", st->path);
        if ((s = parse_entry(st, it, t, data_size))) return s;
        t->name = alloy_strdup(it->string);
        if (!t->name) return ALLOY_STATUS_NOMEM;
        t->data = st->map.data + 8 + st->header_size + t->offset;
        (*order)[st->n_tensors] = t;
        st->n_tensors++;
    }
    return ALLOY_STATUS_OK;
}

/* Names must be unique; data must tile the buffer exactly. */
static alloy_status check_tiling(const alloy_safetensors *st, alloy_st_tensor **order) {
    const char *path = st->path;
    size_t data_size = st->map.size - 8 - st->header_size;
    qsort(order, (size_t)st->n_tensors, sizeof *order, cmp_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (!strcmp(order[i - 1]->name, order[i]->name))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" appears twice", path, order[i]->name);
    qsort(order, (size_t)st->n_tensors, sizeof *order, cmp_offset);
    size_t pos = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        if (order[i]->offset != pos)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" %s the previous one's data", path,
                              order[i]->name, order[i]->offset < pos ? "overlaps" : "leaves a hole after");
        pos += order[i]->nbytes;
    }
    if (pos != data_size)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %zu bytes of data after the last tensor", path, data_size - pos);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_safetensors_open(alloy_safetensors **out, const char *path) {
    *out = NULL;
    alloy_safetensors *st = alloy_calloc(1, sizeof *st);
    if (!st) return ALLOY_STATUS_NOMEM;
    st->path = alloy_strdup(path);
    if (!st->path) {
        alloy_free(st);
        return ALLOY_STATUS_NOMEM;
    }
    cJSON *root = NULL;
    alloy_st_tensor **order = NULL;
    alloy_status s = alloy_file_map_open(&st->map, path);
    if (!s) s = read_header(st, &root);
    if (!s) s = read_entries(st, root, &order);
    if (!s) s = check_tiling(st, order);
    if (!s) st->metadata = cJSON_DetachItemFromObjectCaseSensitive(root, "__metadata__");
    cJSON_Delete(root);
    alloy_free(order);
    if (s) {
        alloy_safetensors_close(st);
        return s;
    }
    *out = st;
    return ALLOY_STATUS_OK;
}

void alloy_safetensors_close(alloy_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_tensors; i++) alloy_free(st->tensors[i].name);
    alloy_free(st->tensors);
    cJSON_Delete(st->metadata);
    alloy_file_map_close(&st->map);
    alloy_free(st->path);
    alloy_free(st);
}

const alloy_st_tensor *alloy_safetensors_find(const alloy_safetensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const char *alloy_safetensors_meta(const alloy_safetensors *st, const char *key) {
    if (!st->metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

alloy_status alloy_st_tensor_to_f32(const alloy_safetensors *st, const alloy_st_tensor *t, float *out) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ALLOY_DTYPE_F32:
        memcpy(out, p, t->nbytes);
        return ALLOY_STATUS_OK;
    case ALLOY_DTYPE_F16:
        for (size_t i = 0; i < t->numel; i++) out[i] = half_to_float((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return ALLOY_STATUS_OK;
    case ALLOY_DTYPE_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint32_t bits = (uint32_t)(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
            memcpy(&out[i], &bits, 4);
        }
        return ALLOY_STATUS_OK;
    default:
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has dtype %s, expected F32, F16 or BF16", st->path,
                          t->name, alloy_dtype_name(t->dtype));
    }
}
