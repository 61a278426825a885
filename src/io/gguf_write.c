/*
 * gguf_write.c — the GGUF writer: key/values are encoded as they are set (each key checked and
 * unique), tensors are recorded with the caller's data, and alloy_gguf_write lays the file out
 * (header, key/values, tensor infos, aligned data) and writes it atomically.
 */
#include "gguf_internal.h"

#include <string.h>

typedef struct wtensor {
    char name[ALLOY_GGUF_MAX_NAME + 1];
    int n_dims;
    int64_t ne[ALLOY_GGUF_MAX_DIMS];
    uint32_t type;
    const void *data; /* the caller's, nbytes */
    size_t nbytes;
} wtensor;

struct alloy_gguf_writer {
    uint8_t *kv; /* the encoded key/values (kv_len bytes of kv_cap) */
    size_t kv_len, kv_cap;
    char **keys; /* (n_kv) the keys set, for uniqueness */
    size_t n_kv, keys_cap;
    wtensor *tensors; /* (n_tensors) */
    size_t n_tensors, tensors_cap;
    uint32_t alignment; /* general.alignment or 32 */
};

alloy_status alloy_gguf_writer_create(alloy_gguf_writer **out) {
    *out = alloy_calloc(1, sizeof **out);
    if (!*out) return ALLOY_STATUS_NOMEM;
    (*out)->alignment = ALLOY_GGUF_DEFAULT_ALIGNMENT;
    return ALLOY_STATUS_OK;
}

void alloy_gguf_writer_destroy(alloy_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) alloy_free(w->keys[i]);
    alloy_free(w->keys);
    alloy_free(w->kv);
    alloy_free(w->tensors);
    alloy_free(w);
}

/* Room for n more bytes of key/values. */
static alloy_status kv_reserve(alloy_gguf_writer *w, size_t n) {
    if (n <= w->kv_cap - w->kv_len) return ALLOY_STATUS_OK;
    size_t cap = w->kv_cap ? w->kv_cap : 1024;
    while (cap - w->kv_len < n) {
        if (cap > SIZE_MAX / 2) return alloy_fail(ALLOY_STATUS_NOMEM, "GGUF writer: metadata too large");
        cap *= 2;
    }
    uint8_t *p = alloy_realloc(w->kv, w->kv_cap, cap);
    if (!p) return ALLOY_STATUS_NOMEM;
    w->kv = p;
    w->kv_cap = cap;
    return ALLOY_STATUS_OK;
}

static alloy_status kv_put(alloy_gguf_writer *w, const void *p, size_t n) {
    alloy_status s = kv_reserve(w, n);
    if (s) return s;
    if (n) memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return ALLOY_STATUS_OK;
}

static alloy_status kv_put_le(alloy_gguf_writer *w, uint64_t v, int n) {
    uint8_t b[8];
    gguf_put_le(b, v, n);
    return kv_put(w, b, (size_t)n);
}

static alloy_status kv_put_str(alloy_gguf_writer *w, const char *s, size_t n) {
    alloy_status st = kv_put_le(w, n, 8);
    return st ? st : kv_put(w, s, n);
}

/* Starts a key/value: checks the key and writes it and the type. finish_kv then records the key,
 * or rolls the bytes back on failure. */
static alloy_status begin_kv(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype type, size_t *mark) {
    size_t n = key ? strlen(key) : 0;
    if (n == 0) return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: empty key");
    if (n > ALLOY_GGUF_MAX_KEY)
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key of %zu bytes (at most %d)", n, ALLOY_GGUF_MAX_KEY);
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key))
            return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\" is set twice", key);
    *mark = w->kv_len;
    alloy_status s = kv_put_str(w, key, n);
    if (!s) s = kv_put_le(w, (uint64_t)type, 4);
    if (s) w->kv_len = *mark;
    return s;
}

static alloy_status finish_kv(alloy_gguf_writer *w, const char *key, size_t mark, alloy_status s) {
    if (!s && w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = alloy_realloc(w->keys, w->keys_cap * sizeof *k, cap * sizeof *k);
        if (!k) s = ALLOY_STATUS_NOMEM;
        else {
            w->keys = k;
            w->keys_cap = cap;
        }
    }
    char *copy = s ? NULL : alloy_strdup(key);
    if (!s && !copy) s = ALLOY_STATUS_NOMEM;
    if (s) {
        w->kv_len = mark;
        return s;
    }
    w->keys[w->n_kv++] = copy;
    return ALLOY_STATUS_OK;
}

/* general.alignment must be a UINT32 power of two; it sets the writer's alignment. */
static alloy_status check_alignment_kv(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype type,
                                       alloy_gguf_scalar v, bool apply) {
    if (strcmp(key, "general.alignment")) return ALLOY_STATUS_OK;
    if (type != ALLOY_GGUF_VTYPE_UINT32 || !gguf_is_pow2(v.u32))
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: general.alignment must be a UINT32 power of two");
    if (apply) w->alignment = v.u32;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_set_val(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype type, alloy_gguf_scalar v) {
    if ((unsigned)type >= ALLOY_GGUF_VTYPE_COUNT || !gguf_vtype_size[type])
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": %s is not a scalar type", key ? key : "",
                          alloy_gguf_vtype_name(type));
    alloy_status s = check_alignment_kv(w, key ? key : "", type, v, false);
    size_t mark;
    if (!s) s = begin_kv(w, key, type, &mark);
    if (s) return s;
    uint8_t b[8];
    gguf_put_scalar(b, type, v);
    s = finish_kv(w, key, mark, kv_put(w, b, gguf_vtype_size[type]));
    if (!s) check_alignment_kv(w, key, type, v, true);
    return s;
}

alloy_status alloy_gguf_set_u32(alloy_gguf_writer *w, const char *key, uint32_t v) {
    return alloy_gguf_set_val(w, key, ALLOY_GGUF_VTYPE_UINT32, (alloy_gguf_scalar){.u32 = v});
}

alloy_status alloy_gguf_set_f32(alloy_gguf_writer *w, const char *key, float v) {
    return alloy_gguf_set_val(w, key, ALLOY_GGUF_VTYPE_FLOAT32, (alloy_gguf_scalar){.f32 = v});
}

alloy_status alloy_gguf_set_str(alloy_gguf_writer *w, const char *key, const char *str) {
    if (!str) return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": NULL string", key ? key : "");
    size_t mark;
    alloy_status s = begin_kv(w, key, ALLOY_GGUF_VTYPE_STRING, &mark);
    if (s) return s;
    return finish_kv(w, key, mark, kv_put_str(w, str, strlen(str)));
}

alloy_status alloy_gguf_set_arr(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype elem, const void *data,
                                size_t n) {
    if ((unsigned)elem >= ALLOY_GGUF_VTYPE_COUNT || !gguf_vtype_size[elem])
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": arrays of %s take their own call",
                          key ? key : "", alloy_gguf_vtype_name(elem));
    size_t esz = gguf_vtype_size[elem], bytes;
    if (!alloy_mul_size(n, esz, &bytes))
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": array too large", key);
    size_t mark;
    alloy_status s = begin_kv(w, key, ALLOY_GGUF_VTYPE_ARRAY, &mark);
    if (s) return s;
    s = kv_put_le(w, (uint64_t)elem, 4);
    if (!s) s = kv_put_le(w, (uint64_t)n, 8);
    if (!s) s = kv_reserve(w, bytes);
    if (!s) {
        const uint8_t *src = data;
        for (size_t i = 0; i < n; i++) { // element by element: C's layout into little-endian
            alloy_gguf_scalar v;
            memset(&v, 0, sizeof v);
            if (elem == ALLOY_GGUF_VTYPE_BOOL) v.b = ((const bool *)data)[i];
            else memcpy(&v, src + i * esz, esz);
            gguf_put_scalar(w->kv + w->kv_len, elem, v);
            w->kv_len += esz;
        }
    }
    return finish_kv(w, key, mark, s);
}

alloy_status alloy_gguf_set_arr_str(alloy_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens,
                                    size_t n) {
    size_t mark;
    alloy_status s = begin_kv(w, key, ALLOY_GGUF_VTYPE_ARRAY, &mark);
    if (s) return s;
    s = kv_put_le(w, ALLOY_GGUF_VTYPE_STRING, 4);
    if (!s) s = kv_put_le(w, (uint64_t)n, 8);
    for (size_t i = 0; i < n && !s; i++) {
        if (!strs[i]) s = alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": string %zu is NULL", key, i);
        else s = kv_put_str(w, strs[i], lens ? lens[i] : strlen(strs[i]));
    }
    return finish_kv(w, key, mark, s);
}

alloy_status alloy_gguf_set_kv(alloy_gguf_writer *w, const alloy_gguf_kv *kv) {
    alloy_status s = ALLOY_STATUS_OK;
    if (gguf_vtype_size[kv->type]) s = check_alignment_kv(w, kv->key, kv->type, kv->val, false);
    else if (!strcmp(kv->key, "general.alignment"))
        s = alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: general.alignment must be a UINT32 power of two");
    size_t mark;
    if (!s) s = begin_kv(w, kv->key, kv->type, &mark);
    if (s) return s;
    s = finish_kv(w, kv->key, mark, kv_put(w, kv->raw, kv->raw_size));
    if (!s && gguf_vtype_size[kv->type]) check_alignment_kv(w, kv->key, kv->type, kv->val, true);
    return s;
}

/* Bytes a tensor of this type and shape needs; false (with a USAGE message) if it cannot be. */
static alloy_status tensor_bytes(const char *name, int n_dims, const int64_t *ne, uint32_t type, size_t *out) {
    int blck;
    size_t bsize;
    if (!alloy_ggml_type_size(type, &blck, &bsize))
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor \"%s\": unknown type %u", name, type);
    if (n_dims < 1 || n_dims > ALLOY_GGUF_MAX_DIMS)
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor \"%s\": %d dimensions (1 to %d)", name, n_dims,
                          ALLOY_GGUF_MAX_DIMS);
    size_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 1 || !alloy_mul_size(n, (size_t)ne[d], &n) || n > (size_t)INT64_MAX)
            return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor \"%s\": bad dimension %d (%lld)", name, d,
                              (long long)ne[d]);
    }
    if (ne[0] % blck)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "GGUF writer: tensor \"%s\": rows of %lld are not a multiple of %s's block of %d", name,
                          (long long)ne[0], alloy_ggml_type_name(type), blck);
    if (!alloy_mul_size(n / (size_t)blck, bsize, out))
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor \"%s\": size overflows", name);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_add_tensor(alloy_gguf_writer *w, const char *name, int n_dims, const int64_t *ne, uint32_t type,
                                   const void *data, size_t nbytes) {
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > ALLOY_GGUF_MAX_NAME)
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor name \"%s\" must have 1 to %d bytes",
                          name ? name : "", ALLOY_GGUF_MAX_NAME);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: tensor \"%s\" is added twice", name);
    size_t need;
    alloy_status s = tensor_bytes(name, n_dims, ne, type, &need);
    if (s) return s;
    if (nbytes != need)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "GGUF writer: tensor \"%s\": %zu bytes given, its type and shape need %zu", name, nbytes,
                          need);
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? 2 * w->tensors_cap : 64;
        wtensor *t = alloy_realloc(w->tensors, w->tensors_cap * sizeof *t, cap * sizeof *t);
        if (!t) return ALLOY_STATUS_NOMEM;
        w->tensors = t;
        w->tensors_cap = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, len + 1);
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->type = type;
    t->data = data;
    t->nbytes = nbytes;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_write(const alloy_gguf_writer *w, const char *path) {
    // the tensor infos, with offsets in the data section
    size_t info_len = 0;
    for (size_t i = 0; i < w->n_tensors; i++)
        info_len += 8 + strlen(w->tensors[i].name) + 4 + 8 * (size_t)w->tensors[i].n_dims + 4 + 8;
    uint8_t *info = alloy_malloc(info_len ? info_len : 1);
    if (!info) return ALLOY_STATUS_NOMEM;
    size_t p = 0, offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        size_t n = strlen(t->name);
        gguf_put_le(info + p, n, 8);
        memcpy(info + p + 8, t->name, n);
        p += 8 + n;
        gguf_put_le(info + p, (uint64_t)t->n_dims, 4);
        p += 4;
        for (int d = 0; d < t->n_dims; d++, p += 8) gguf_put_le(info + p, (uint64_t)t->ne[d], 8);
        gguf_put_le(info + p, t->type, 4);
        gguf_put_le(info + p + 4, offset, 8);
        p += 12;
        offset += gguf_align_up(t->nbytes, w->alignment);
    }
    uint8_t head[24];
    memcpy(head, "GGUF", 4);
    gguf_put_le(head + 4, 3, 4);
    gguf_put_le(head + 8, w->n_tensors, 8);
    gguf_put_le(head + 16, w->n_kv, 8);
    static const uint8_t zeros[256];
    alloy_atomic_file f;
    alloy_status s = alloy_atomic_open(&f, path);
    if (s) {
        alloy_free(info);
        return s;
    }
    s = alloy_atomic_write(&f, head, sizeof head);
    if (!s) s = alloy_atomic_write(&f, w->kv, w->kv_len);
    if (!s) s = alloy_atomic_write(&f, info, info_len);
    size_t pos = sizeof head + w->kv_len + info_len;
    // zero padding up to the alignment, written in pieces of at most sizeof zeros
    for (size_t pad = gguf_align_up(pos, w->alignment) - pos; pad && !s; pad -= pad < sizeof zeros ? pad : sizeof zeros)
        s = alloy_atomic_write(&f, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    for (size_t i = 0; i < w->n_tensors && !s; i++) {
        const wtensor *t = &w->tensors[i];
        s = alloy_atomic_write(&f, t->data, t->nbytes);
        for (size_t pad = gguf_align_up(t->nbytes, w->alignment) - t->nbytes; pad && !s;
             pad -= pad < sizeof zeros ? pad : sizeof zeros)
            s = alloy_atomic_write(&f, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    }
    if (!s) s = alloy_atomic_commit(&f);
    else alloy_atomic_abort(&f);
    alloy_free(info);
    return s;
}
