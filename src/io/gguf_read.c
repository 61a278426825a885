/*
 * gguf_read.c — the strict GGUF reader: alloy_gguf_open maps a file and checks it whole before
 * anything uses it (the format is documented at the top of include/alloy/gguf.h), then the
 * getters read typed metadata and tensors.
 *
 * The reader trusts nothing: every length, count, type, shape and offset is checked against the
 * file's length before it is used, allocations are bounded by what the file could hold, and
 * the first broken rule is reported in one line naming the file.
 */
#include "gguf_internal.h"

#include <stdlib.h>
#include <string.h>

/* True if n bytes hold a control character (keys and tensor names may not: they are quoted in
 * one-line messages). */
static bool has_control(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7f) return true;
    return false;
}

/* A position in the mapped file; every read checks the bytes left first. */
typedef struct cursor {
    const uint8_t *p; /* the file */
    size_t size;      /* its length */
    size_t pos;       /* the next byte */
    const char *path; /* for messages */
} cursor;

static alloy_status truncated(const cursor *c, const char *what) {
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: truncated at byte %zu reading %s (the file has %zu bytes)", c->path,
                      c->pos, what, c->size);
}

static alloy_status rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (c->size - c->pos < 4) return truncated(c, what);
    *v = (uint32_t)gguf_get_le(c->p + c->pos, 4);
    c->pos += 4;
    return ALLOY_STATUS_OK;
}

static alloy_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (c->size - c->pos < 8) return truncated(c, what);
    *v = gguf_get_le(c->p + c->pos, 8);
    c->pos += 8;
    return ALLOY_STATUS_OK;
}

/* Reads a string's length and checks its bytes are there; *s points at them. */
static alloy_status rd_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
    alloy_status st = rd_u64(c, len, what);
    if (st) return st;
    if (*len > c->size - c->pos)
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: %s: a string of %llu bytes at byte %zu runs past the end of the file", c->path, what,
                          (unsigned long long)*len, c->pos - 8);
    *s = c->p + c->pos;
    c->pos += (size_t)*len;
    return ALLOY_STATUS_OK;
}

/* Checks n bool bytes at the cursor (0 or 1 each). */
static alloy_status check_bools(const cursor *c, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (c->p[c->pos + i] > 1)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: bool value %u at byte %zu is neither 0 nor 1", c->path,
                              what, c->p[c->pos + i], c->pos + i);
    return ALLOY_STATUS_OK;
}

static alloy_status skip_value(cursor *c, uint32_t type, int level, const char *what);

/* The header of an array (element type and count), checked against the bytes left; `level`
 * counts this array among its enclosing ones (a top-level array is level 1). */
static alloy_status rd_array_head(cursor *c, int level, uint32_t *et, uint64_t *n, const char *what) {
    if (level > ALLOY_GGUF_MAX_NESTING)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: arrays nested deeper than %d levels", c->path, what,
                          ALLOY_GGUF_MAX_NESTING);
    alloy_status s = rd_u32(c, et, what);
    if (!s) s = rd_u64(c, n, what);
    if (s) return s;
    if (*et >= ALLOY_GGUF_VTYPE_COUNT)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: unknown array element type %u", c->path, what, *et);
    // the smallest element: a scalar's size, an empty string's length, an empty array's head
    size_t min = gguf_vtype_size[*et] ? gguf_vtype_size[*et] : *et == ALLOY_GGUF_VTYPE_STRING ? 8 : 12;
    if (*n > (c->size - c->pos) / min)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: an array of %llu %s elements runs past the end of the file",
                          c->path, what, (unsigned long long)*n, alloy_gguf_vtype_name((alloy_gguf_vtype)*et));
    return ALLOY_STATUS_OK;
}

/* Checks one value of `type` at the cursor and moves past it. */
static alloy_status skip_value(cursor *c, uint32_t type, int level, const char *what) {
    if (type >= ALLOY_GGUF_VTYPE_COUNT)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has unknown value type %u", c->path, what, type);
    size_t sz = gguf_vtype_size[type];
    if (sz) {
        if (c->size - c->pos < sz) return truncated(c, what);
        alloy_status s = type == ALLOY_GGUF_VTYPE_BOOL ? check_bools(c, 1, what) : ALLOY_STATUS_OK;
        c->pos += sz;
        return s;
    }
    if (type == ALLOY_GGUF_VTYPE_STRING) {
        const uint8_t *s;
        uint64_t len;
        return rd_str(c, &s, &len, what);
    }
    uint32_t et;
    uint64_t n;
    alloy_status s = rd_array_head(c, level, &et, &n, what);
    if (s) return s;
    if (gguf_vtype_size[et]) { // rd_array_head checked that n elements fit
        if (et == ALLOY_GGUF_VTYPE_BOOL && (s = check_bools(c, (size_t)n, what))) return s;
        c->pos += (size_t)n * gguf_vtype_size[et];
        return ALLOY_STATUS_OK;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((s = skip_value(c, et, level + 1, what))) return s;
    return ALLOY_STATUS_OK;
}

static alloy_status rd_kv(cursor *c, alloy_gguf_kv *kv, size_t index) {
    char what[160];
    snprintf(what, sizeof what, "the key of key/value %zu", index);
    const uint8_t *k = NULL;
    uint64_t klen = 0;
    alloy_status s = rd_str(c, &k, &klen, what);
    if (s) return s;
    if (klen == 0) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key/value %zu has an empty key", c->path, index);
    if (klen > ALLOY_GGUF_MAX_KEY)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key/value %zu has a key of %llu bytes (at most %d)", c->path, index,
                          (unsigned long long)klen, ALLOY_GGUF_MAX_KEY);
    if (has_control(k, (size_t)klen))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: key/value %zu has a key with a control character (a NUL byte, a newline, ...)", c->path,
                          index);
    kv->key = alloy_malloc((size_t)klen + 1);
    if (!kv->key) return ALLOY_STATUS_NOMEM;
    memcpy(kv->key, k, (size_t)klen);
    kv->key[klen] = '\0';
    snprintf(what, sizeof what, "key \"%.100s\"", kv->key);
    uint32_t type = 0;
    if ((s = rd_u32(c, &type, what))) return s;
    if (type >= ALLOY_GGUF_VTYPE_COUNT)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has unknown value type %u", c->path, what, type);
    kv->type = (alloy_gguf_vtype)type;
    kv->raw = c->p + c->pos;
    size_t start = c->pos;
    if (gguf_vtype_size[type]) {
        if ((s = skip_value(c, type, 1, what))) return s;
        kv->val = gguf_get_scalar(kv->raw, kv->type);
    } else if (type == ALLOY_GGUF_VTYPE_STRING) {
        const uint8_t *str;
        uint64_t len;
        if ((s = rd_str(c, &str, &len, what))) return s;
        kv->str = alloy_malloc((size_t)len + 1);
        if (!kv->str) return ALLOY_STATUS_NOMEM;
        memcpy(kv->str, str, (size_t)len);
        kv->str[len] = '\0';
        kv->str_len = (size_t)len;
    } else {
        uint32_t et;
        uint64_t n;
        if ((s = rd_array_head(c, 1, &et, &n, what))) return s;
        kv->arr_type = (alloy_gguf_vtype)et;
        kv->arr_n = n;
        kv->arr_data = c->p + c->pos;
        if (et == ALLOY_GGUF_VTYPE_STRING) { // index the strings for random access
            kv->arr_offsets = alloy_malloc((size_t)(n ? n : 1) * sizeof(size_t));
            if (!kv->arr_offsets) return ALLOY_STATUS_NOMEM;
            size_t base = c->pos;
            for (uint64_t i = 0; i < n; i++) {
                const uint8_t *str;
                uint64_t len;
                kv->arr_offsets[i] = c->pos - base;
                if ((s = rd_str(c, &str, &len, what))) return s;
            }
        } else if (gguf_vtype_size[et]) {
            if (et == ALLOY_GGUF_VTYPE_BOOL && (s = check_bools(c, (size_t)n, what))) return s;
            c->pos += (size_t)n * gguf_vtype_size[et];
        } else {
            for (uint64_t i = 0; i < n; i++)
                if ((s = skip_value(c, et, 2, what))) return s;
        }
    }
    kv->raw_size = c->pos - start;
    return ALLOY_STATUS_OK;
}

static alloy_status rd_tensor_info(alloy_gguf *g, cursor *c, alloy_gguf_tensor *t, size_t index) {
    char what[160];
    snprintf(what, sizeof what, "the name of tensor %zu", index);
    const uint8_t *name = NULL;
    uint64_t len = 0;
    alloy_status s = rd_str(c, &name, &len, what);
    if (s) return s;
    if (len == 0) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor %zu has an empty name", c->path, index);
    if (len > ALLOY_GGUF_MAX_NAME)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor %zu has a name of %llu bytes (at most %d)", c->path, index,
                          (unsigned long long)len, ALLOY_GGUF_MAX_NAME);
    if (has_control(name, (size_t)len))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tensor %zu has a name with a control character (a NUL byte, a newline, ...)", c->path,
                          index);
    t->name = alloy_malloc((size_t)len + 1);
    if (!t->name) return ALLOY_STATUS_NOMEM;
    memcpy(t->name, name, (size_t)len);
    t->name[len] = '\0';
    snprintf(what, sizeof what, "tensor \"%s\"", t->name);
    uint32_t nd = 0;
    if ((s = rd_u32(c, &nd, what))) return s;
    if (nd < 1 || nd > ALLOY_GGUF_MAX_DIMS)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has %u dimensions (1 to %d)", c->path, what, nd,
                          ALLOY_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t n_elems = 1;
    for (int d = 0; d < ALLOY_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < (int)nd; d++) {
        uint64_t ne = 0;
        if ((s = rd_u64(c, &ne, what))) return s;
        if (ne == 0) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has a dimension %d of size 0", c->path, what, d);
        if (ne > (uint64_t)INT64_MAX || __builtin_mul_overflow(n_elems, ne, &n_elems) || n_elems > (uint64_t)INT64_MAX)
            return alloy_fail(ALLOY_STATUS_FORMAT,
                              "%s: %s has dimensions whose product overflows (dimension %d is %llu)", c->path, what, d,
                              (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    t->n_elems = (size_t)n_elems;
    if ((s = rd_u32(c, &t->type, what))) return s;
    int blck;
    size_t bsize;
    if (!alloy_ggml_type_size(t->type, &blck, &bsize))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has unknown type %u", c->path, what, t->type);
    if (t->ne[0] % blck)
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: %s is %s but its rows of %lld are not a multiple of the block of %d", c->path, what,
                          alloy_ggml_type_name(t->type), (long long)t->ne[0], blck);
    if (!alloy_mul_size(t->n_elems / (size_t)blck, bsize, &t->nbytes))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: its size overflows", c->path, what);
    if ((s = rd_u64(c, &t->offset, what))) return s;
    if (t->offset % g->alignment)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has offset %llu, not a multiple of the alignment %u", c->path,
                          what, (unsigned long long)t->offset, g->alignment);
    return ALLOY_STATUS_OK;
}

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp((*(const alloy_gguf_kv *const *)a)->key, (*(const alloy_gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const alloy_gguf_tensor *const *)a)->name, (*(const alloy_gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const alloy_gguf_tensor *x = *(const alloy_gguf_tensor *const *)a, *y = *(const alloy_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sets the alignment from general.alignment, checking its type and value. */
static alloy_status read_alignment(alloy_gguf *g) {
    g->alignment = ALLOY_GGUF_DEFAULT_ALIGNMENT;
    const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, "general.alignment");
    if (!kv) return ALLOY_STATUS_OK;
    if (kv->type != ALLOY_GGUF_VTYPE_UINT32)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: general.alignment is %s, expected UINT32", g->path,
                          alloy_gguf_vtype_name(kv->type));
    if (!gguf_is_pow2(kv->val.u32))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: general.alignment %u is not a power of two", g->path, kv->val.u32);
    g->alignment = kv->val.u32;
    return ALLOY_STATUS_OK;
}

/* Checks the magic and the version and reads the counts, bounded by what the file could hold. */
static alloy_status read_header(alloy_gguf *g, cursor *c, uint64_t *n_tensors, uint64_t *n_kv) {
    if (c->size < 4)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: too short for a GGUF file (%zu bytes)", g->path, c->size);
    if (memcmp(c->p, "GGUF", 4))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a GGUF file (the magic is not \"GGUF\")", g->path);
    c->pos = 4;
    alloy_status s = rd_u32(c, &g->version, "the version");
    if (s) return s;
    if (g->version == 1)
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: GGUF version 1 (32-bit counts) is not supported; convert it to version 3", g->path);
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: a big-endian GGUF file is not supported", g->path);
    if (g->version != 2 && g->version != 3)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown GGUF version %u (alloy reads 2 and 3)", g->path,
                          g->version);
    if ((s = rd_u64(c, n_tensors, "the tensor count")) || (s = rd_u64(c, n_kv, "the key/value count"))) return s;
    // bound the allocations by what the file could hold: a key/value takes at least 14 bytes,
    // a tensor info 33
    if (*n_kv > (c->size - c->pos) / 14)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu key/values cannot fit in a file of %zu bytes", g->path,
                          (unsigned long long)*n_kv, c->size);
    if (*n_tensors > (c->size - c->pos) / 33)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu tensors cannot fit in a file of %zu bytes", g->path,
                          (unsigned long long)*n_tensors, c->size);
    return ALLOY_STATUS_OK;
}

/* Refuses a key that appears twice; korder has room for g->n_kv pointers. */
static alloy_status check_unique_keys(const alloy_gguf *g, alloy_gguf_kv **korder) {
    size_t n_kv = g->n_kv;
    for (size_t i = 0; i < n_kv; i++) korder[i] = &g->kvs[i];
    qsort(korder, n_kv, sizeof *korder, cmp_kv_key);
    for (size_t i = 1; i < n_kv; i++)
        if (!strcmp(korder[i]->key, korder[i - 1]->key))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%.100s\" appears twice", g->path, korder[i]->key);
    return ALLOY_STATUS_OK;
}

/* Reads n tensor infos and refuses a name that appears twice; order gets the tensors sorted by
 * name. */
static alloy_status read_tensor_infos(alloy_gguf *g, cursor *c, size_t n, alloy_gguf_tensor **order) {
    alloy_status s;
    for (size_t i = 0; i < n; i++) {
        g->n_tensors = i + 1;
        if ((s = rd_tensor_info(g, c, &g->tensors[i], i))) return s;
    }
    for (size_t i = 0; i < n; i++) order[i] = &g->tensors[i];
    qsort(order, n, sizeof *order, cmp_tensor_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(order[i]->name, order[i - 1]->name))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" appears twice", g->path, order[i]->name);
    return ALLOY_STATUS_OK;
}

/* Places the data section after the infos (padded to the alignment) and checks that every
 * tensor's bytes lie inside it without overlapping another's; points each tensor at its data. */
static alloy_status place_data(alloy_gguf *g, const cursor *c, alloy_gguf_tensor **order) {
    size_t n_tensors = g->n_tensors;
    g->data_offset = gguf_align_up(c->pos, g->alignment);
    if (g->data_offset > c->size) {
        if (n_tensors)
            return alloy_fail(ALLOY_STATUS_FORMAT,
                              "%s: the data section at byte %zu lies past the end of the %zu-byte file (truncated?)",
                              g->path, g->data_offset, c->size);
        g->data_offset = c->size; // no tensors: the padding may be absent
    }
    g->data_size = c->size - g->data_offset;
    qsort(order, n_tensors, sizeof *order, cmp_tensor_offset);
    for (size_t i = 0; i < n_tensors; i++) {
        alloy_gguf_tensor *t = order[i];
        if (t->offset > g->data_size || t->nbytes > g->data_size - t->offset)
            return alloy_fail(ALLOY_STATUS_FORMAT,
                              "%s: tensor \"%s\" data [%llu, %llu) lies outside the %zu-byte data section (truncated?)",
                              g->path, t->name, (unsigned long long)t->offset,
                              (unsigned long long)t->offset + (unsigned long long)t->nbytes, g->data_size);
        if (i > 0) {
            const alloy_gguf_tensor *prev = order[i - 1];
            if (t->offset < prev->offset + prev->nbytes)
                return alloy_fail(ALLOY_STATUS_FORMAT,
                                  "%s: tensor \"%s\" data at %llu overlaps tensor \"%s\" [%llu, %llu)", g->path,
                                  t->name, (unsigned long long)t->offset, prev->name,
                                  (unsigned long long)prev->offset, (unsigned long long)(prev->offset + prev->nbytes));
        }
        t->data = g->map.data + g->data_offset + t->offset;
    }
    return ALLOY_STATUS_OK;
}

/* Reads and checks the whole file: header, key/values, tensor infos, data section. */
static alloy_status parse(alloy_gguf *g) {
    cursor c = {g->map.data, g->map.size, 0, g->path};
    uint64_t n_tensors = 0, n_kv = 0;
    alloy_status s = read_header(g, &c, &n_tensors, &n_kv);
    if (s) return s;
    g->kvs = alloy_calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kvs);
    g->tensors = alloy_calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    if (!g->kvs || !g->tensors) return ALLOY_STATUS_NOMEM;
    for (size_t i = 0; i < n_kv; i++) {
        g->n_kv = i + 1; // counted before reading, so that close frees a half-read entry
        if ((s = rd_kv(&c, &g->kvs[i], i))) return s;
    }
    alloy_gguf_kv **korder = alloy_malloc((size_t)(n_kv ? n_kv : 1) * sizeof *korder);
    alloy_gguf_tensor **order = alloy_malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *order);
    s = korder && order ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s) s = check_unique_keys(g, korder);
    if (!s) s = read_alignment(g);
    if (!s) s = read_tensor_infos(g, &c, (size_t)n_tensors, order);
    if (!s) s = place_data(g, &c, order);
    alloy_free(korder);
    alloy_free(order);
    return s;
}

alloy_status alloy_gguf_open(alloy_gguf **out, const char *path) {
    *out = NULL;
    alloy_gguf *g = alloy_calloc(1, sizeof *g);
    if (!g) return ALLOY_STATUS_NOMEM;
    g->path = alloy_strdup(path);
    if (!g->path) {
        alloy_free(g);
        return ALLOY_STATUS_NOMEM;
    }
    alloy_status s = alloy_file_map_open(&g->map, path);
    if (!s) s = parse(g);
    if (s) {
        alloy_gguf_close(g);
        return s;
    }
    *out = g;
    return ALLOY_STATUS_OK;
}

void alloy_gguf_close(alloy_gguf *g) {
    if (!g) return;
    for (size_t i = 0; g->kvs && i < g->n_kv; i++) {
        alloy_free(g->kvs[i].key);
        alloy_free(g->kvs[i].str);
        alloy_free(g->kvs[i].arr_offsets);
    }
    for (size_t i = 0; g->tensors && i < g->n_tensors; i++) alloy_free(g->tensors[i].name);
    alloy_free(g->kvs);
    alloy_free(g->tensors);
    alloy_file_map_close(&g->map);
    alloy_free(g->path);
    alloy_free(g);
}

const alloy_gguf_kv *alloy_gguf_find_kv(const alloy_gguf *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kvs[i].key, key)) return &g->kvs[i];
    return NULL;
}

static alloy_status find_typed(const alloy_gguf *g, const char *key, const alloy_gguf_kv **kv) {
    *kv = alloy_gguf_find_kv(g, key);
    if (!*kv) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" is missing", g->path, key);
    return ALLOY_STATUS_OK;
}

static alloy_status wrong_type(const alloy_gguf *g, const alloy_gguf_kv *kv, const char *expected) {
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" is %s, expected %s", g->path, kv->key,
                      alloy_gguf_vtype_name(kv->type), expected);
}

/* An integer scalar as int64; false for other types or a UINT64 above INT64_MAX. */
static bool scalar_int(alloy_gguf_vtype t, alloy_gguf_scalar v, int64_t *out) {
    switch (t) {
    case ALLOY_GGUF_VTYPE_UINT8: *out = v.u8; return true;
    case ALLOY_GGUF_VTYPE_INT8: *out = v.i8; return true;
    case ALLOY_GGUF_VTYPE_UINT16: *out = v.u16; return true;
    case ALLOY_GGUF_VTYPE_INT16: *out = v.i16; return true;
    case ALLOY_GGUF_VTYPE_UINT32: *out = v.u32; return true;
    case ALLOY_GGUF_VTYPE_INT32: *out = v.i32; return true;
    case ALLOY_GGUF_VTYPE_INT64: *out = v.i64; return true;
    case ALLOY_GGUF_VTYPE_UINT64:
        if (v.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v.u64;
        return true;
    default: return false;
    }
}

alloy_status alloy_gguf_get_int(const alloy_gguf *g, const char *key, int64_t *out) {
    const alloy_gguf_kv *kv;
    alloy_status s = find_typed(g, key, &kv);
    if (s) return s;
    if (kv->type == ALLOY_GGUF_VTYPE_UINT64 && kv->val.u64 > (uint64_t)INT64_MAX)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" = %llu is out of range", g->path, key,
                          (unsigned long long)kv->val.u64);
    if (!scalar_int(kv->type, kv->val, out)) return wrong_type(g, kv, "an integer");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_get_float(const alloy_gguf *g, const char *key, double *out) {
    const alloy_gguf_kv *kv;
    alloy_status s = find_typed(g, key, &kv);
    if (s) return s;
    if (kv->type == ALLOY_GGUF_VTYPE_FLOAT32) *out = kv->val.f32;
    else if (kv->type == ALLOY_GGUF_VTYPE_FLOAT64) *out = kv->val.f64;
    else return wrong_type(g, kv, "FLOAT32 or FLOAT64");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_get_bool(const alloy_gguf *g, const char *key, bool *out) {
    const alloy_gguf_kv *kv;
    alloy_status s = find_typed(g, key, &kv);
    if (s) return s;
    if (kv->type != ALLOY_GGUF_VTYPE_BOOL) return wrong_type(g, kv, "BOOL");
    *out = kv->val.b;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_get_str(const alloy_gguf *g, const char *key, const char **out) {
    const alloy_gguf_kv *kv;
    alloy_status s = find_typed(g, key, &kv);
    if (s) return s;
    if (kv->type != ALLOY_GGUF_VTYPE_STRING) return wrong_type(g, kv, "STRING");
    *out = kv->str;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_get_arr(const alloy_gguf *g, const char *key, alloy_gguf_vtype elem,
                                const alloy_gguf_kv **out) {
    alloy_status s = find_typed(g, key, out);
    if (s) return s;
    if ((*out)->type != ALLOY_GGUF_VTYPE_ARRAY || (*out)->arr_type != elem) {
        char want[48];
        snprintf(want, sizeof want, "an array of %s", alloy_gguf_vtype_name(elem));
        if ((*out)->type == ALLOY_GGUF_VTYPE_ARRAY)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" is an array of %s, expected %s", g->path, key,
                              alloy_gguf_vtype_name((*out)->arr_type), want);
        return wrong_type(g, *out, want);
    }
    return ALLOY_STATUS_OK;
}

bool alloy_gguf_arr_get(const alloy_gguf_kv *kv, uint64_t i, alloy_gguf_scalar *out) {
    if (kv->type != ALLOY_GGUF_VTYPE_ARRAY || i >= kv->arr_n || !gguf_vtype_size[kv->arr_type]) return false;
    *out = gguf_get_scalar(kv->arr_data + (size_t)i * gguf_vtype_size[kv->arr_type], kv->arr_type);
    return true;
}

const char *alloy_gguf_arr_str(const alloy_gguf_kv *kv, uint64_t i, size_t *len) {
    if (kv->type != ALLOY_GGUF_VTYPE_ARRAY || kv->arr_type != ALLOY_GGUF_VTYPE_STRING || i >= kv->arr_n) return NULL;
    const uint8_t *p = kv->arr_data + kv->arr_offsets[i];
    *len = (size_t)gguf_get_le(p, 8);
    return (const char *)p + 8;
}

const alloy_gguf_tensor *alloy_gguf_find_tensor(const alloy_gguf *g, const char *name) {
    for (size_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

alloy_status alloy_gguf_tensor_to_f32(const alloy_gguf *g, const alloy_gguf_tensor *t, float *out) {
    if (t->type == ALLOY_GGML_TYPE_F32) {
        memcpy(out, t->data, t->nbytes); // little-endian host, as everywhere in alloy
        return ALLOY_STATUS_OK;
    }
    if (t->type == ALLOY_GGML_TYPE_BF16) {
        for (size_t i = 0; i < t->n_elems; i++) {
            uint32_t bits = (uint32_t)gguf_get_le(t->data + 2 * i, 2) << 16;
            memcpy(&out[i], &bits, 4);
        }
        return ALLOY_STATUS_OK;
    }
    alloy_qtype q;
    if (!alloy_ggml_type_to_qtype(t->type, &q))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tensor \"%s\" is %s; alloy converts F32, F16, BF16, Q8_0, Q4_0 and Q4_K", g->path,
                          t->name, alloy_ggml_type_name(t->type));
    // rows are copied to an aligned buffer first: in a file with a small alignment they may
    // start anywhere, and the block structs have 2-byte fields
    size_t rows = t->n_elems / (size_t)t->ne[0], row_bytes = t->nbytes / rows;
    uint8_t *buf = alloy_malloc(row_bytes);
    if (!buf) return ALLOY_STATUS_NOMEM;
    for (size_t r = 0; r < rows; r++) {
        memcpy(buf, t->data + r * row_bytes, row_bytes);
        alloy_dequantize_row(q, out + r * (size_t)t->ne[0], buf, t->ne[0]);
    }
    alloy_free(buf);
    return ALLOY_STATUS_OK;
}
