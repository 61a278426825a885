/*
 * gguf.c — GGUF files: a strict reader, an atomic writer, and the export and import of alloy
 * models in the "gpt2" and "llama" layouts of llama.cpp (the format is documented at the top
 * of include/alloy/gguf.h).
 *
 * The reader trusts nothing: every length, count, type, shape and offset is checked against the
 * file's length before it is used, allocations are bounded by what the file could hold, and
 * the first broken rule is reported in one line naming the file. The model half maps the
 * Hugging Face names of the parameter table to llama.cpp's tensor names, transposes GPT-2's
 * Conv1D weights, permutes Llama's Q and K rows for llama.cpp's RoPE, and quantises through
 * alloy/quant.h. Tokenizers travel as tokenizer.ggml.* (GPT-2 style byte-level BPE).
 */
#include "alloy/gguf.h"

// tokenizer.h has no accessors for the merges and the token flags, nor a way to build a BPE
// from arrays: io sits below tokenizer in the layers, so it uses the tokenizer's own builders
#include "../tokenizer/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- types -------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    int blck;      /* elements per block */
    uint16_t size; /* bytes per block */
} ggml_types[ALLOY_GGML_TYPE_COUNT] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},      [3] = {"Q4_1", 32, 20},
    [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},      [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},
    [10] = {"Q2_K", 256, 84},    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66}, [17] = {"IQ2_XS", 256, 74},
    [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},   [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},
    [22] = {"IQ2_S", 256, 82},   [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},        [29] = {"IQ1_M", 256, 56},
    [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},   [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
    [40] = {"NVFP4", 64, 36},    [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

static const char *const vtype_names[ALLOY_GGUF_VTYPE_COUNT] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
};
/* bytes of a scalar value; 0 for STRING and ARRAY */
static const uint8_t vtype_size[ALLOY_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *alloy_gguf_vtype_name(alloy_gguf_vtype t) {
    return (unsigned)t < ALLOY_GGUF_VTYPE_COUNT ? vtype_names[t] : "?";
}

const char *alloy_ggml_type_name(uint32_t type) { return type < ALLOY_GGML_TYPE_COUNT ? ggml_types[type].name : NULL; }

bool alloy_ggml_type_size(uint32_t type, int *block_elems, size_t *block_bytes) {
    if (type >= ALLOY_GGML_TYPE_COUNT || !ggml_types[type].name) return false;
    if (block_elems) *block_elems = ggml_types[type].blck;
    if (block_bytes) *block_bytes = ggml_types[type].size;
    return true;
}

static const uint32_t qtype_ggml[ALLOY_QTYPE_COUNT] = {
    [ALLOY_QTYPE_F32] = ALLOY_GGML_TYPE_F32,   [ALLOY_QTYPE_F16] = ALLOY_GGML_TYPE_F16,
    [ALLOY_QTYPE_Q8_0] = ALLOY_GGML_TYPE_Q8_0, [ALLOY_QTYPE_Q4_0] = ALLOY_GGML_TYPE_Q4_0,
    [ALLOY_QTYPE_Q4_K] = ALLOY_GGML_TYPE_Q4_K,
};

bool alloy_ggml_type_from_qtype(alloy_qtype q, uint32_t *type) {
    if ((unsigned)q >= ALLOY_QTYPE_COUNT) return false;
    *type = qtype_ggml[q];
    return true;
}

bool alloy_ggml_type_to_qtype(uint32_t type, alloy_qtype *q) {
    for (int i = 0; i < ALLOY_QTYPE_COUNT; i++) {
        if (qtype_ggml[i] == type) {
            *q = (alloy_qtype)i;
            return true;
        }
    }
    return false;
}

/* ---- little-endian numbers ---------------------------------------------------------------- */

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = (n < 8 ? n : 8) - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n && i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Reads a scalar of type t (not STRING/ARRAY) at p. */
static alloy_gguf_scalar get_scalar(const uint8_t *p, alloy_gguf_vtype t) {
    alloy_gguf_scalar v;
    memset(&v, 0, sizeof v);
    uint64_t bits = get_le(p, vtype_size[t]);
    switch (t) {
    case ALLOY_GGUF_VTYPE_UINT8: v.u8 = (uint8_t)bits; break;
    case ALLOY_GGUF_VTYPE_INT8: v.i8 = (int8_t)(uint8_t)bits; break;
    case ALLOY_GGUF_VTYPE_UINT16: v.u16 = (uint16_t)bits; break;
    case ALLOY_GGUF_VTYPE_INT16: v.i16 = (int16_t)(uint16_t)bits; break;
    case ALLOY_GGUF_VTYPE_UINT32: v.u32 = (uint32_t)bits; break;
    case ALLOY_GGUF_VTYPE_INT32: v.i32 = (int32_t)(uint32_t)bits; break;
    case ALLOY_GGUF_VTYPE_FLOAT32: {
        uint32_t b = (uint32_t)bits;
        memcpy(&v.f32, &b, 4);
        break;
    }
    case ALLOY_GGUF_VTYPE_BOOL: v.b = bits != 0; break;
    case ALLOY_GGUF_VTYPE_UINT64: v.u64 = bits; break;
    case ALLOY_GGUF_VTYPE_INT64: v.i64 = (int64_t)bits; break;
    case ALLOY_GGUF_VTYPE_FLOAT64: memcpy(&v.f64, &bits, 8); break;
    default: break;
    }
    return v;
}

/* Encodes a scalar of type t (not STRING/ARRAY) into p (vtype_size[t] bytes). */
static void put_scalar(uint8_t *p, alloy_gguf_vtype t, alloy_gguf_scalar v) {
    uint64_t bits = 0;
    switch (t) {
    case ALLOY_GGUF_VTYPE_UINT8: bits = v.u8; break;
    case ALLOY_GGUF_VTYPE_INT8: bits = (uint8_t)v.i8; break;
    case ALLOY_GGUF_VTYPE_UINT16: bits = v.u16; break;
    case ALLOY_GGUF_VTYPE_INT16: bits = (uint16_t)v.i16; break;
    case ALLOY_GGUF_VTYPE_UINT32: bits = v.u32; break;
    case ALLOY_GGUF_VTYPE_INT32: bits = (uint32_t)v.i32; break;
    case ALLOY_GGUF_VTYPE_FLOAT32: {
        uint32_t b;
        memcpy(&b, &v.f32, 4);
        bits = b;
        break;
    }
    case ALLOY_GGUF_VTYPE_BOOL: bits = v.b ? 1 : 0; break;
    case ALLOY_GGUF_VTYPE_UINT64: bits = v.u64; break;
    case ALLOY_GGUF_VTYPE_INT64: bits = (uint64_t)v.i64; break;
    case ALLOY_GGUF_VTYPE_FLOAT64: memcpy(&bits, &v.f64, 8); break;
    default: break;
    }
    put_le(p, bits, vtype_size[t]);
}

static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* True if n bytes hold a control character (keys and tensor names may not: they are quoted in
 * one-line messages). */
static bool has_control(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] == 0x7f) return true;
    return false;
}

/* A string from a file made fit to quote in a one-line message: control bytes become '?', and
 * at most 48 bytes are kept. */
static const char *quotable(const char *s, size_t n, char buf[52]) {
    size_t k = 0;
    for (; k < n && k < 48; k++) buf[k] = (uint8_t)s[k] < 0x20 || s[k] == 0x7f ? '?' : s[k];
    if (k < n) { // cut: say so
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

/* ---- the reader --------------------------------------------------------------------------- */

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
    *v = (uint32_t)get_le(c->p + c->pos, 4);
    c->pos += 4;
    return ALLOY_STATUS_OK;
}

static alloy_status rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (c->size - c->pos < 8) return truncated(c, what);
    *v = get_le(c->p + c->pos, 8);
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
    size_t min = vtype_size[*et] ? vtype_size[*et] : *et == ALLOY_GGUF_VTYPE_STRING ? 8 : 12;
    if (*n > (c->size - c->pos) / min)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s: an array of %llu %s elements runs past the end of the file",
                          c->path, what, (unsigned long long)*n, vtype_names[*et]);
    return ALLOY_STATUS_OK;
}

/* Checks one value of `type` at the cursor and moves past it. */
static alloy_status skip_value(cursor *c, uint32_t type, int level, const char *what) {
    if (type >= ALLOY_GGUF_VTYPE_COUNT)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s has unknown value type %u", c->path, what, type);
    size_t sz = vtype_size[type];
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
    if (vtype_size[et]) { // rd_array_head checked that n elements fit
        if (et == ALLOY_GGUF_VTYPE_BOOL && (s = check_bools(c, (size_t)n, what))) return s;
        c->pos += (size_t)n * vtype_size[et];
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
    if (vtype_size[type]) {
        if ((s = skip_value(c, type, 1, what))) return s;
        kv->val = get_scalar(kv->raw, kv->type);
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
        } else if (vtype_size[et]) {
            if (et == ALLOY_GGUF_VTYPE_BOOL && (s = check_bools(c, (size_t)n, what))) return s;
            c->pos += (size_t)n * vtype_size[et];
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
                          ggml_types[t->type].name, (long long)t->ne[0], blck);
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
                          vtype_names[kv->type]);
    if (!is_pow2(kv->val.u32))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: general.alignment %u is not a power of two", g->path, kv->val.u32);
    g->alignment = kv->val.u32;
    return ALLOY_STATUS_OK;
}

static alloy_status parse(alloy_gguf *g) {
    cursor c = {g->map.data, g->map.size, 0, g->path};
    if (c.size < 4)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: too short for a GGUF file (%zu bytes)", g->path, c.size);
    if (memcmp(c.p, "GGUF", 4))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a GGUF file (the magic is not \"GGUF\")", g->path);
    c.pos = 4;
    uint64_t n_tensors = 0, n_kv = 0;
    alloy_status s = rd_u32(&c, &g->version, "the version");
    if (s) return s;
    if (g->version == 1)
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: GGUF version 1 (32-bit counts) is not supported; convert it to version 3", g->path);
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: a big-endian GGUF file is not supported", g->path);
    if (g->version != 2 && g->version != 3)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown GGUF version %u (alloy reads 2 and 3)", g->path,
                          g->version);
    if ((s = rd_u64(&c, &n_tensors, "the tensor count")) || (s = rd_u64(&c, &n_kv, "the key/value count"))) return s;
    // bound the allocations by what the file could hold: a key/value takes at least 14 bytes,
    // a tensor info 33
    if (n_kv > (c.size - c.pos) / 14)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu key/values cannot fit in a file of %zu bytes", g->path,
                          (unsigned long long)n_kv, c.size);
    if (n_tensors > (c.size - c.pos) / 33)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu tensors cannot fit in a file of %zu bytes", g->path,
                          (unsigned long long)n_tensors, c.size);
    g->kvs = alloy_calloc((size_t)(n_kv ? n_kv : 1), sizeof *g->kvs);
    g->tensors = alloy_calloc((size_t)(n_tensors ? n_tensors : 1), sizeof *g->tensors);
    if (!g->kvs || !g->tensors) return ALLOY_STATUS_NOMEM;
    for (size_t i = 0; i < n_kv; i++) {
        g->n_kv = i + 1; // counted before reading, so that close frees a half-read entry
        if ((s = rd_kv(&c, &g->kvs[i], i))) return s;
    }
    // keys must be unique
    alloy_gguf_kv **korder = alloy_malloc((size_t)(n_kv ? n_kv : 1) * sizeof *korder);
    alloy_gguf_tensor **order = alloy_malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *order);
    if (!korder || !order) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n_kv; i++) korder[i] = &g->kvs[i];
    qsort(korder, (size_t)n_kv, sizeof *korder, cmp_kv_key);
    for (size_t i = 1; i < n_kv; i++) {
        if (!strcmp(korder[i]->key, korder[i - 1]->key)) {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%.100s\" appears twice", g->path, korder[i]->key);
            goto done;
        }
    }
    if ((s = read_alignment(g))) goto done;
    for (size_t i = 0; i < n_tensors; i++) {
        g->n_tensors = i + 1;
        if ((s = rd_tensor_info(g, &c, &g->tensors[i], i))) goto done;
    }
    for (size_t i = 0; i < n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)n_tensors, sizeof *order, cmp_tensor_name);
    for (size_t i = 1; i < n_tensors; i++) {
        if (!strcmp(order[i]->name, order[i - 1]->name)) {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" appears twice", g->path, order[i]->name);
            goto done;
        }
    }
    // the data section: after the infos, padded to the alignment
    g->data_offset = align_up(c.pos, g->alignment);
    if (g->data_offset > c.size) {
        if (n_tensors) {
            s = alloy_fail(ALLOY_STATUS_FORMAT,
                           "%s: the data section at byte %zu lies past the end of the %zu-byte file (truncated?)",
                           g->path, g->data_offset, c.size);
            goto done;
        }
        g->data_offset = c.size; // no tensors: the padding may be absent
    }
    g->data_size = c.size - g->data_offset;
    qsort(order, (size_t)n_tensors, sizeof *order, cmp_tensor_offset);
    for (size_t i = 0; i < n_tensors; i++) {
        alloy_gguf_tensor *t = order[i];
        if (t->offset > g->data_size || t->nbytes > g->data_size - t->offset) {
            s = alloy_fail(ALLOY_STATUS_FORMAT,
                           "%s: tensor \"%s\" data [%llu, %llu) lies outside the %zu-byte data section (truncated?)",
                           g->path, t->name, (unsigned long long)t->offset,
                           (unsigned long long)t->offset + (unsigned long long)t->nbytes, g->data_size);
            goto done;
        }
        if (i > 0) {
            const alloy_gguf_tensor *prev = order[i - 1];
            if (t->offset < prev->offset + prev->nbytes) {
                s = alloy_fail(ALLOY_STATUS_FORMAT,
                               "%s: tensor \"%s\" data at %llu overlaps tensor \"%s\" [%llu, %llu)", g->path, t->name,
                               (unsigned long long)t->offset, prev->name, (unsigned long long)prev->offset,
                               (unsigned long long)(prev->offset + prev->nbytes));
                goto done;
            }
        }
        t->data = g->map.data + g->data_offset + t->offset;
    }
done:
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
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" is %s, expected %s", g->path, kv->key, vtype_names[kv->type],
                      expected);
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
                              vtype_names[(*out)->arr_type], want);
        return wrong_type(g, *out, want);
    }
    return ALLOY_STATUS_OK;
}

bool alloy_gguf_arr_get(const alloy_gguf_kv *kv, uint64_t i, alloy_gguf_scalar *out) {
    if (kv->type != ALLOY_GGUF_VTYPE_ARRAY || i >= kv->arr_n || !vtype_size[kv->arr_type]) return false;
    *out = get_scalar(kv->arr_data + (size_t)i * vtype_size[kv->arr_type], kv->arr_type);
    return true;
}

const char *alloy_gguf_arr_str(const alloy_gguf_kv *kv, uint64_t i, size_t *len) {
    if (kv->type != ALLOY_GGUF_VTYPE_ARRAY || kv->arr_type != ALLOY_GGUF_VTYPE_STRING || i >= kv->arr_n) return NULL;
    const uint8_t *p = kv->arr_data + kv->arr_offsets[i];
    *len = (size_t)get_le(p, 8);
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
            uint32_t bits = (uint32_t)get_le(t->data + 2 * i, 2) << 16;
            memcpy(&out[i], &bits, 4);
        }
        return ALLOY_STATUS_OK;
    }
    alloy_qtype q;
    if (!alloy_ggml_type_to_qtype(t->type, &q))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tensor \"%s\" is %s; alloy converts F32, F16, BF16, Q8_0, Q4_0 and Q4_K", g->path,
                          t->name, ggml_types[t->type].name);
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

/* ---- the writer --------------------------------------------------------------------------- */

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
    put_le(b, v, n);
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
    if (type != ALLOY_GGUF_VTYPE_UINT32 || !is_pow2(v.u32))
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: general.alignment must be a UINT32 power of two");
    if (apply) w->alignment = v.u32;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_gguf_set_val(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype type, alloy_gguf_scalar v) {
    if ((unsigned)type >= ALLOY_GGUF_VTYPE_COUNT || !vtype_size[type])
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": %s is not a scalar type", key ? key : "",
                          alloy_gguf_vtype_name(type));
    alloy_status s = check_alignment_kv(w, key ? key : "", type, v, false);
    size_t mark;
    if (!s) s = begin_kv(w, key, type, &mark);
    if (s) return s;
    uint8_t b[8];
    put_scalar(b, type, v);
    s = finish_kv(w, key, mark, kv_put(w, b, vtype_size[type]));
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
    if ((unsigned)elem >= ALLOY_GGUF_VTYPE_COUNT || !vtype_size[elem])
        return alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: key \"%s\": arrays of %s take their own call",
                          key ? key : "", alloy_gguf_vtype_name(elem));
    size_t esz = vtype_size[elem], bytes;
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
            put_scalar(w->kv + w->kv_len, elem, v);
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
    if (vtype_size[kv->type]) s = check_alignment_kv(w, kv->key, kv->type, kv->val, false);
    else if (!strcmp(kv->key, "general.alignment"))
        s = alloy_fail(ALLOY_STATUS_USAGE, "GGUF writer: general.alignment must be a UINT32 power of two");
    size_t mark;
    if (!s) s = begin_kv(w, kv->key, kv->type, &mark);
    if (s) return s;
    s = finish_kv(w, kv->key, mark, kv_put(w, kv->raw, kv->raw_size));
    if (!s && vtype_size[kv->type]) check_alignment_kv(w, kv->key, kv->type, kv->val, true);
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
                          (long long)ne[0], ggml_types[type].name, blck);
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
        put_le(info + p, n, 8);
        memcpy(info + p + 8, t->name, n);
        p += 8 + n;
        put_le(info + p, (uint64_t)t->n_dims, 4);
        p += 4;
        for (int d = 0; d < t->n_dims; d++, p += 8) put_le(info + p, (uint64_t)t->ne[d], 8);
        put_le(info + p, t->type, 4);
        put_le(info + p + 4, offset, 8);
        p += 12;
        offset += align_up(t->nbytes, w->alignment);
    }
    uint8_t head[24];
    memcpy(head, "GGUF", 4);
    put_le(head + 4, 3, 4);
    put_le(head + 8, w->n_tensors, 8);
    put_le(head + 16, w->n_kv, 8);
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
    for (size_t pad = align_up(pos, w->alignment) - pos; pad && !s; pad -= pad < sizeof zeros ? pad : sizeof zeros)
        s = alloy_atomic_write(&f, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    for (size_t i = 0; i < w->n_tensors && !s; i++) {
        const wtensor *t = &w->tensors[i];
        s = alloy_atomic_write(&f, t->data, t->nbytes);
        for (size_t pad = align_up(t->nbytes, w->alignment) - t->nbytes; pad && !s;
             pad -= pad < sizeof zeros ? pad : sizeof zeros)
            s = alloy_atomic_write(&f, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    }
    if (!s) s = alloy_atomic_commit(&f);
    else alloy_atomic_abort(&f);
    alloy_free(info);
    return s;
}

/* ---- models: names and layouts ------------------------------------------------------------ */

/* How a tensor changes between the Hugging Face layout and llama.cpp's. */
enum { XF_NONE = 0, XF_TRANSPOSE, XF_PERMUTE_Q, XF_PERMUTE_K };

typedef struct name_pair {
    const char *hf, *gguf;
    int xf;
} name_pair;

static const name_pair gpt2_global[] = {
    {"transformer.wte.weight", "token_embd.weight", XF_NONE},
    {"transformer.wpe.weight", "position_embd.weight", XF_NONE},
    {"transformer.ln_f.weight", "output_norm.weight", XF_NONE},
    {"transformer.ln_f.bias", "output_norm.bias", XF_NONE},
};
static const name_pair gpt2_layer[] = {
    {"ln_1.weight", "attn_norm.weight", XF_NONE},
    {"ln_1.bias", "attn_norm.bias", XF_NONE},
    {"attn.c_attn.weight", "attn_qkv.weight", XF_TRANSPOSE},
    {"attn.c_attn.bias", "attn_qkv.bias", XF_NONE},
    {"attn.c_proj.weight", "attn_output.weight", XF_TRANSPOSE},
    {"attn.c_proj.bias", "attn_output.bias", XF_NONE},
    {"ln_2.weight", "ffn_norm.weight", XF_NONE},
    {"ln_2.bias", "ffn_norm.bias", XF_NONE},
    {"mlp.c_fc.weight", "ffn_up.weight", XF_TRANSPOSE},
    {"mlp.c_fc.bias", "ffn_up.bias", XF_NONE},
    {"mlp.c_proj.weight", "ffn_down.weight", XF_TRANSPOSE},
    {"mlp.c_proj.bias", "ffn_down.bias", XF_NONE},
};
static const name_pair llama_global[] = {
    {"model.embed_tokens.weight", "token_embd.weight", XF_NONE},
    {"model.norm.weight", "output_norm.weight", XF_NONE},
    {"lm_head.weight", "output.weight", XF_NONE},
};
static const name_pair llama_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight", XF_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", XF_PERMUTE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", XF_PERMUTE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", XF_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", XF_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", XF_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", XF_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", XF_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", XF_NONE},
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", XF_NONE},
};
/* Mixtral's experts: llama.cpp stacks each layer's E matrices of one kind into one 3-D tensor,
 * ne = [cols, rows, E] (expert e's (rows, cols) matrix is slice e). */
static const name_pair llama_expert[] = {
    {"w1.weight", "ffn_gate_exps.weight", XF_NONE},
    {"w3.weight", "ffn_up_exps.weight", XF_NONE},
    {"w2.weight", "ffn_down_exps.weight", XF_NONE},
};
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The llama.cpp name of a parameter-table tensor and how it is laid out there; *expert gets the
 * slice of a Mixtral expert's matrix in its stacked tensor, -1 for any other tensor. False for a
 * name with no counterpart (a GPT-2 MoE's experts and router; otherwise a bug: the table holds
 * only names of the two families). */
static bool gguf_name(alloy_family family, const char *hf, char out[ALLOY_GGUF_MAX_NAME + 1], int *xf, int *expert) {
    bool gpt2 = family == ALLOY_FAMILY_GPT2;
    *expert = -1;
    const name_pair *glob = gpt2 ? gpt2_global : llama_global, *layer = gpt2 ? gpt2_layer : llama_layer;
    size_t ng = gpt2 ? COUNT_OF(gpt2_global) : COUNT_OF(llama_global);
    size_t nl = gpt2 ? COUNT_OF(gpt2_layer) : COUNT_OF(llama_layer);
    for (size_t i = 0; i < ng; i++) {
        if (!strcmp(hf, glob[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "%s", glob[i].gguf);
            *xf = glob[i].xf;
            return true;
        }
    }
    const char *prefix = gpt2 ? "transformer.h." : "model.layers.";
    size_t np = strlen(prefix);
    if (strncmp(hf, prefix, np)) return false;
    char *end;
    long l = strtol(hf + np, &end, 10);
    if (end == hf + np || *end != '.' || l < 0) return false;
    for (size_t i = 0; i < nl; i++) {
        if (!strcmp(end + 1, layer[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "blk.%ld.%s", l, layer[i].gguf);
            *xf = layer[i].xf;
            return true;
        }
    }
    static const char experts[] = "block_sparse_moe.experts.";
    if (gpt2 || strncmp(end + 1, experts, sizeof experts - 1)) return false;
    const char *num = end + sizeof experts;
    long e = strtol(num, &end, 10);
    if (end == num || *end != '.' || e < 0 || e >= ALLOY_MAX_EXPERTS) return false;
    for (size_t i = 0; i < COUNT_OF(llama_expert); i++) {
        if (!strcmp(end + 1, llama_expert[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "blk.%ld.%s", l, llama_expert[i].gguf);
            *xf = llama_expert[i].xf;
            *expert = (int)e;
            return true;
        }
    }
    return false;
}

/* The GGUF shape (fastest first) of a table tensor stored with transform xf. */
static int gguf_shape(const alloy_tensor_info *ti, int xf, int64_t ne[ALLOY_GGUF_MAX_DIMS]) {
    for (int d = 0; d < ALLOY_GGUF_MAX_DIMS; d++) ne[d] = 1;
    if (ti->ndim == 1) {
        ne[0] = ti->shape[0];
        return 1;
    }
    // a row-major (rows, cols) tensor is ne = [cols, rows]; a transposed one [rows, cols]
    ne[0] = xf == XF_TRANSPOSE ? ti->shape[0] : ti->shape[1];
    ne[1] = xf == XF_TRANSPOSE ? ti->shape[1] : ti->shape[0];
    return 2;
}

/* dst (cols, rows) = src (rows, cols)ᵀ */
static void transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

/* Permutes the rows of a (heads·hd, cols) projection within each head between Hugging Face's
 * rotate-half order and llama.cpp's interleaved pairs: to_gguf moves row j·hd/2 + i to row
 * 2i + j (i < hd/2, j < 2), as convert_hf_to_gguf.py's permute; otherwise the inverse. */
static void permute_heads(float *dst, const float *src, int64_t heads, int64_t hd, int64_t cols, bool to_gguf) {
    int64_t half = hd / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                int64_t hf_row = h * hd + j * half + i, gg_row = h * hd + 2 * i + j;
                int64_t from = to_gguf ? hf_row : gg_row, to = to_gguf ? gg_row : hf_row;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof(float));
            }
}

/* Number of heads whose rows a transform permutes. */
static int64_t permute_heads_of(const alloy_config *c, int xf) { return xf == XF_PERMUTE_Q ? c->n_head : c->n_kv_head; }

/* ---- models: export ----------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode both ways: the printable character that stands for each byte in
 * vocabulary strings ("Ġ" for a space) and back. */
typedef struct byte_chars {
    uint32_t of_byte[256]; /* byte -> code point (< 512) */
    int16_t of_char[512];  /* code point -> byte, -1 for none */
} byte_chars;

static void byte_chars_init(byte_chars *bc) {
    tok_byte_to_unicode(bc->of_byte);
    for (int i = 0; i < 512; i++) bc->of_char[i] = -1;
    for (int b = 0; b < 256; b++) bc->of_char[bc->of_byte[b]] = (int16_t)b;
}

/* Raw bytes -> the vocabulary string (out holds 2·n + 1 bytes); returns its length. */
static size_t bytes_to_vocab(const byte_chars *bc, const char *b, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = bc->of_byte[(uint8_t)b[i]];
        if (cp < 0x80) out[o++] = (char)cp;
        else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

/* A vocabulary string (n bytes) -> raw bytes (out holds n bytes); false if empty or if a
 * character is not one of the 256 byte stand-ins. */
static bool vocab_to_bytes(const byte_chars *bc, const char *s, size_t n, char *out, size_t *out_n) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = alloy_utf8_decode(s + i, n - i, &cp);
        if (!k || cp >= 512 || bc->of_char[cp] < 0) return false;
        out[o++] = (char)bc->of_char[cp];
        i += k;
    }
    *out_n = o;
    return o > 0;
}

/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Writes the tokenizer as tokenizer.ggml.* (byte-level BPE, "gpt2") with n_vocab >= its size
 * entries: llama.cpp takes the vocabulary size from the token list and needs it to match
 * token_embd, so ids past the tokenizer's are "[PAD<id>]" placeholders, as its converter
 * writes them. */
static alloy_status put_tokenizer(alloy_gguf_writer *w, const alloy_tokenizer *t, int n_vocab) {
    byte_chars bc;
    byte_chars_init(&bc);
    size_t n = (size_t)n_vocab;
    char **strs = alloy_calloc(n, sizeof *strs);
    size_t *lens = alloy_calloc(n, sizeof *lens);
    int32_t *types = alloy_calloc(n, sizeof *types);
    char **merges = alloy_calloc((size_t)(t->n_merges ? t->n_merges : 1), sizeof *merges);
    alloy_status s = (!strs || !lens || !types || !merges) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (size_t id = 0; id < n && !s; id++) {
        uint8_t f = id < (size_t)t->n_tokens ? t->flags[id] : 0;
        if (!(f & TOKEN_USED)) { // a gap in the vocabulary or past its end: a placeholder
            strs[id] = alloy_malloc(32);
            if (strs[id]) lens[id] = (size_t)snprintf(strs[id], 32, "[PAD%zu]", id);
            types[id] = TT_UNUSED;
        } else if (f & TOKEN_SPECIAL) { // special tokens are written as their text
            strs[id] = alloy_malloc(t->len[id] + 1);
            if (strs[id]) {
                memcpy(strs[id], t->bytes[id], t->len[id]);
                lens[id] = t->len[id];
            }
            types[id] = TT_CONTROL;
        } else {
            strs[id] = alloy_malloc(2 * (size_t)t->len[id] + 1);
            if (strs[id]) lens[id] = bytes_to_vocab(&bc, t->bytes[id], t->len[id], strs[id]);
            types[id] = TT_NORMAL;
        }
        if (!strs[id]) s = ALLOY_STATUS_NOMEM;
    }
    for (int32_t r = 0; r < t->n_merges && !s; r++) {
        int32_t a = t->merge_pairs[2 * r], b = t->merge_pairs[2 * r + 1];
        merges[r] = alloy_malloc(2 * ((size_t)t->len[a] + t->len[b]) + 2);
        if (!merges[r]) {
            s = ALLOY_STATUS_NOMEM;
            break;
        }
        size_t k = bytes_to_vocab(&bc, t->bytes[a], t->len[a], merges[r]);
        merges[r][k] = ' ';
        bytes_to_vocab(&bc, t->bytes[b], t->len[b], merges[r] + k + 1);
    }
    bool gpt2_regex = !t->pattern || !strcmp(t->pattern, tok_gpt2_pattern);
    if (!s) s = alloy_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    // llama.cpp knows GPT-2's pre-tokenizer as "gpt-2"; another regex is kept for alloy
    if (!s) s = alloy_gguf_set_str(w, "tokenizer.ggml.pre", gpt2_regex ? "gpt-2" : "default");
    if (!s && !gpt2_regex) s = alloy_gguf_set_str(w, "alloy.tokenizer.pattern", t->pattern);
    if (!s) s = alloy_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)strs, lens, n);
    if (!s) s = alloy_gguf_set_arr(w, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, types, n);
    if (!s)
        s = alloy_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (size_t)t->n_merges);
    int32_t eot = alloy_tokenizer_special_id(t, "<|endoftext|>");
    if (!s && eot >= 0) s = alloy_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    if (!s && eot >= 0) s = alloy_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    if (!s)
        s = alloy_gguf_set_val(w, "tokenizer.ggml.add_bos_token", ALLOY_GGUF_VTYPE_BOOL,
                               (alloy_gguf_scalar){.b = false});
    if (!s && t->add_prefix_space)
        s = alloy_gguf_set_val(w, "tokenizer.ggml.add_space_prefix", ALLOY_GGUF_VTYPE_BOOL,
                               (alloy_gguf_scalar){.b = true});
    for (size_t i = 0; strs && i < n; i++) alloy_free(strs[i]);
    for (int32_t r = 0; merges && r < t->n_merges; r++) alloy_free(merges[r]);
    alloy_free(strs);
    alloy_free(lens);
    alloy_free(types);
    alloy_free(merges);
    return s;
}

/* general.file_type (llama.cpp's llama_ftype) of a model written in type q. */
static uint32_t file_type_of(alloy_qtype q) {
    switch (q) {
    case ALLOY_QTYPE_F16: return 1;   // MOSTLY_F16
    case ALLOY_QTYPE_Q4_0: return 2;  // MOSTLY_Q4_0
    case ALLOY_QTYPE_Q8_0: return 7;  // MOSTLY_Q8_0
    case ALLOY_QTYPE_Q4_K: return 14; // MOSTLY_Q4_K_S: Q4_K throughout
    default: return 0;                // ALL_F32
    }
}

/* The model's hyperparameters under <arch>.* */
static alloy_status put_hparams(alloy_gguf_writer *w, const alloy_config *c, const char *arch) {
    char key[96];
    alloy_status s = ALLOY_STATUS_OK;
#define PUT_U32(suffix, v)                                                                                             \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                                                              \
        if (!s) s = alloy_gguf_set_u32(w, key, (uint32_t)(v));                                                         \
    } while (0)
#define PUT_F32(suffix, v)                                                                                             \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                                                              \
        if (!s) s = alloy_gguf_set_f32(w, key, (float)(v));                                                            \
    } while (0)
    PUT_U32("vocab_size", c->vocab_size);
    PUT_U32("context_length", c->max_seq_len);
    PUT_U32("embedding_length", c->d_model);
    PUT_U32("block_count", c->n_layer);
    PUT_U32("feed_forward_length", c->d_ff);
    PUT_U32("attention.head_count", c->n_head);
    PUT_U32("attention.head_count_kv", c->n_kv_head);
    if (c->n_experts > 0) { // llama.cpp's Mixtral keys
        PUT_U32("expert_count", c->n_experts);
        PUT_U32("expert_used_count", c->top_k);
    }
    if (c->family == ALLOY_FAMILY_GPT2) {
        PUT_F32("attention.layer_norm_epsilon", c->norm_eps);
    } else {
        PUT_F32("attention.layer_norm_rms_epsilon", c->norm_eps);
        PUT_U32("rope.dimension_count", alloy_config_head_dim(c));
        PUT_F32("rope.freq_base", c->rope_theta);
    }
#undef PUT_U32
#undef PUT_F32
    return s;
}

/* *out (E, rows, cols), allocated: expert 0's tensor ti and the other experts' of the same kind
 * (found by name: "...experts.0.w1.weight" -> "...experts.e.w1.weight"), one after another. */
static alloy_status stack_experts(const alloy_model *m, const alloy_tensor_info *ti, float **out) {
    int E = m->config.n_experts;
    const char *at = strstr(ti->name, "experts.0.");
    ALLOY_ASSERT(at);
    float *buf = alloy_malloc(sizeof(float) * ti->numel * (size_t)E); // E·numel < the arena: no overflow
    if (!buf) return ALLOY_STATUS_NOMEM;
    for (int e = 0; e < E; e++) {
        char name[ALLOY_MAX_NAME + 16];
        snprintf(name, sizeof name, "%.*sexperts.%d.%s", (int)(at - ti->name), ti->name, e, at + strlen("experts.0."));
        const alloy_tensor_info *te = alloy_model_find_tensor(m, name);
        ALLOY_ASSERT(te && te->numel == ti->numel);
        memcpy(buf + (size_t)e * ti->numel, m->params_memory + te->offset, sizeof(float) * ti->numel);
    }
    *out = buf;
    return ALLOY_STATUS_OK;
}

/* general.name: the file's name without folders and ".gguf". */
static void model_name(const char *path, char *out, size_t size) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    if (n >= size) n = size - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

alloy_status alloy_gguf_export_model_ex(const alloy_model *m, const alloy_tokenizer *tok, const char *path,
                                        alloy_qtype type, alloy_gguf_export_report *report) {
    if (report) memset(report, 0, sizeof *report);
    uint32_t want_type;
    if (!alloy_ggml_type_from_qtype(type, &want_type))
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: unknown weight type %d", path, (int)type);
    const alloy_config *c = &m->config;
    if (c->n_experts > 0 && c->family == ALLOY_FAMILY_GPT2)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "%s: GGUF export of a GPT-2 mixture of experts is not supported (llama.cpp has no GPT-2 "
                          "MoE; a Llama-family MoE exports as Mixtral)",
                          path);
    const char *arch = alloy_family_name(c->family);
    alloy_gguf_writer *w;
    alloy_status s = alloy_gguf_writer_create(&w);
    if (s) return s;
    void **owned = alloy_calloc((size_t)m->n_tensors, sizeof *owned); // converted buffers to free
    if (!owned) {
        alloy_gguf_writer_destroy(w);
        return ALLOY_STATUS_NOMEM;
    }
    char name[128];
    model_name(path, name, sizeof name);
    s = alloy_gguf_set_str(w, "general.architecture", arch);
    if (!s) s = alloy_gguf_set_str(w, "general.name", name[0] ? name : "alloy");
    if (!s) s = alloy_gguf_set_u32(w, "general.alignment", ALLOY_GGUF_DEFAULT_ALIGNMENT);
    if (!s) s = alloy_gguf_set_u32(w, "general.file_type", file_type_of(type));
    if (!s) s = alloy_gguf_set_u32(w, "general.quantization_version", 2); // ggml's GGML_QNT_VERSION
    if (!s) s = put_hparams(w, c, arch);
    if (!s && c->tokenizer[0]) s = alloy_gguf_set_str(w, "alloy.tokenizer", c->tokenizer);
    if (!s && tok && alloy_tokenizer_vocab_size(tok) > c->vocab_size)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has %d tokens but the model's vocabulary only %d",
                       path, alloy_tokenizer_vocab_size(tok), c->vocab_size);
    if (!s && tok) s = put_tokenizer(w, tok, c->vocab_size);

    int n_fallback = 0, n_requested = 0, n_written = 0;
    char first_fallback[ALLOY_GGUF_MAX_NAME + 1] = "";
    int64_t fallback_row = 0;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        char gname[ALLOY_GGUF_MAX_NAME + 1];
        int xf, expert;
        bool mapped = gguf_name(c->family, ti->name, gname, &xf, &expert);
        ALLOY_ASSERT(mapped);
        if (expert > 0) continue; // written with expert 0's, as one stacked tensor
        int64_t ne[ALLOY_GGUF_MAX_DIMS];
        int nd = gguf_shape(ti, xf, ne);
        const float *src = m->params_memory + ti->offset;
        // the f32 values in llama.cpp's layout
        const float *f32 = src;
        float *tmp = NULL;
        if (expert == 0) { // the E experts' matrices of this kind, slice after slice
            s = stack_experts(m, ti, &tmp);
            if (s) break;
            f32 = tmp;
            nd = 3;
            ne[2] = c->n_experts;
        } else if (nd == 2 && xf != XF_NONE) {
            tmp = alloy_malloc(ti->numel * sizeof(float));
            if (!tmp) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
            if (xf == XF_TRANSPOSE) transpose(tmp, src, ti->shape[0], ti->shape[1]);
            else permute_heads(tmp, src, permute_heads_of(c, xf), alloy_config_head_dim(c), ti->shape[1], true);
            f32 = tmp;
        }
        // norms, biases, positions and routers stay f32, as llama.cpp's converter keeps them
        alloy_qtype q = ALLOY_QTYPE_F32;
        if (nd >= 2 && strcmp(gname, "position_embd.weight") && !strstr(gname, "ffn_gate_inp")) {
            q = type;
            if (ne[0] % alloy_qtype_block_elems(type)) { // F16 takes any row, as llama.cpp falls back
                q = ALLOY_QTYPE_F16;
                if (!n_fallback++) {
                    snprintf(first_fallback, sizeof first_fallback, "%s", gname);
                    fallback_row = ne[0];
                }
            } else {
                n_requested++;
            }
        }
        uint32_t gtype = qtype_ggml[q];
        size_t rows = ti->numel * (size_t)ne[2] / (size_t)ne[0], row_bytes = alloy_quant_row_bytes(q, ne[0]);
        const void *data = f32;
        if (q != ALLOY_QTYPE_F32) {
            uint8_t *out = alloy_malloc(rows * row_bytes);
            if (!out) {
                alloy_free(tmp);
                s = ALLOY_STATUS_NOMEM;
                break;
            }
            size_t done = alloy_quantize(q, out, f32, (int64_t)rows, ne[0]); // OpenMP over rows
            ALLOY_ASSERT(done == rows * row_bytes);
            alloy_free(tmp);
            tmp = NULL;
            owned[i] = out;
            data = out;
        } else {
            owned[i] = tmp;
        }
        s = alloy_gguf_add_tensor(w, gname, nd, ne, gtype, data, rows * row_bytes);
        n_written++;
    }
    if (!s) s = alloy_gguf_write(w, path);
    if (!s && report) {
        report->n_tensors = n_written;
        report->n_requested = n_requested;
        report->n_fallback = n_fallback;
        if (n_fallback)
            snprintf(report->note, sizeof report->note,
                     "%d of %d weight matrices written as F16 instead of %s: their rows (%lld in %s) are not a "
                     "multiple of its block of %d",
                     n_fallback, n_fallback + n_requested, ggml_types[want_type].name, (long long)fallback_row,
                     first_fallback, alloy_qtype_block_elems(type));
    }
    for (int i = 0; i < m->n_tensors; i++) alloy_free(owned[i]);
    alloy_free(owned);
    alloy_gguf_writer_destroy(w);
    return s;
}

/* ---- models: import ----------------------------------------------------------------------- */

/* The shortest decimal that rounds to the same float: 1e-5 stored as FLOAT32 reads back as
 * 1e-5, not 9.99999974738e-06, so that a config survives the round trip unchanged. */
static double tidy_float(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

/* <arch>.<suffix> as an int in [lo, hi]; absent: FORMAT if required, else *out unchanged. */
static alloy_status get_hparam(const alloy_gguf *g, const char *arch, const char *suffix, bool required, int64_t lo,
                               int64_t hi, int *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!required && !alloy_gguf_find_kv(g, key)) return ALLOY_STATUS_OK;
    int64_t v;
    alloy_status s = alloy_gguf_get_int(g, key, &v);
    if (s) return s;
    if (v < lo || v > hi)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" = %lld is out of range [%lld, %lld]", g->path, key,
                          (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return ALLOY_STATUS_OK;
}

/* <arch>.<suffix> as a float, tidied; absent: FORMAT if required, else *out unchanged. */
static alloy_status get_hparam_float(const alloy_gguf *g, const char *arch, const char *suffix, bool required,
                                     double *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, key);
    if (!required && !kv) return ALLOY_STATUS_OK;
    alloy_status s = alloy_gguf_get_float(g, key, out);
    if (!s && kv->type == ALLOY_GGUF_VTYPE_FLOAT32) *out = tidy_float(kv->val.f32);
    return s;
}

static alloy_status config_from_gguf(const alloy_gguf *g, alloy_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const char *arch;
    alloy_status s = alloy_gguf_get_str(g, "general.architecture", &arch);
    if (s) return s;
    bool gpt2 = !strcmp(arch, "gpt2");
    char q[52];
    if (!gpt2 && strcmp(arch, "llama"))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: architecture \"%s\" is not supported (alloy reads gpt2 and llama)",
                          g->path, quotable(arch, strlen(arch), q));
    cfg->family = gpt2 ? ALLOY_FAMILY_GPT2 : ALLOY_FAMILY_LLAMA;
    const alloy_gguf_tensor *emb = alloy_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"token_embd.weight\"", g->path);
    if (emb->n_dims != 2 || emb->ne[1] > (1 << 24))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"token_embd.weight\" is not a (vocab, embedding) matrix",
                          g->path);
    cfg->vocab_size = (int)emb->ne[1];
    const int64_t big = 1 << 30;
    if ((s = get_hparam(g, arch, "context_length", true, 1, big, &cfg->max_seq_len)) ||
        (s = get_hparam(g, arch, "embedding_length", true, 1, big, &cfg->d_model)) ||
        (s = get_hparam(g, arch, "block_count", true, 1, big, &cfg->n_layer)) ||
        (s = get_hparam(g, arch, "attention.head_count", true, 1, big, &cfg->n_head)))
        return s;
    if (emb->ne[0] != cfg->d_model)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: token_embd.weight has rows of %lld but %s.embedding_length is %d",
                          g->path, (long long)emb->ne[0], arch, cfg->d_model);
    int vocab = cfg->vocab_size;
    if ((s = get_hparam(g, arch, "vocab_size", false, 1, big, &vocab))) return s;
    if (vocab != cfg->vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: %s.vocab_size is %d but token_embd.weight has %d rows", g->path,
                          arch, vocab, cfg->vocab_size);
    cfg->n_kv_head = cfg->n_head;
    if ((s = get_hparam(g, arch, "attention.head_count_kv", false, 1, big, &cfg->n_kv_head))) return s;
    cfg->norm_eps = 1e-5;
    cfg->rope_theta = 10000.0;
    if (gpt2) {
        // llama.cpp's converter writes 4·n_embd; read the width from ffn_up when the key is absent
        const alloy_gguf_tensor *up = alloy_gguf_find_tensor(g, "blk.0.ffn_up.weight");
        cfg->d_ff = up && up->n_dims == 2 && up->ne[1] <= big ? (int)up->ne[1]
                                                              : 4 * (cfg->d_model < big / 4 ? cfg->d_model : 1);
        if ((s = get_hparam(g, arch, "feed_forward_length", false, 1, big, &cfg->d_ff))) return s;
        if ((s = get_hparam_float(g, arch, "attention.layer_norm_epsilon", true, &cfg->norm_eps))) return s;
        cfg->tie_embeddings = true;
    } else {
        if ((s = get_hparam(g, arch, "feed_forward_length", true, 1, big, &cfg->d_ff))) return s;
        if ((s = get_hparam_float(g, arch, "attention.layer_norm_rms_epsilon", true, &cfg->norm_eps))) return s;
        if ((s = get_hparam_float(g, arch, "rope.freq_base", false, &cfg->rope_theta))) return s;
        cfg->tie_embeddings = alloy_gguf_find_tensor(g, "output.weight") == NULL;
        int rope_dims = cfg->d_model / cfg->n_head;
        if ((s = get_hparam(g, arch, "rope.dimension_count", false, 0, big, &rope_dims))) return s;
        if (cfg->d_model % cfg->n_head == 0 && rope_dims != cfg->d_model / cfg->n_head)
            return alloy_fail(ALLOY_STATUS_FORMAT,
                              "%s: llama.rope.dimension_count %d: rotary embeddings over part of a "
                              "head (of %d) are not supported",
                              g->path, rope_dims, cfg->d_model / cfg->n_head);
        // a Mixtral: llama.cpp's expert keys (the aux-loss coefficient, not stored, is Mixtral's)
        if ((s = get_hparam(g, arch, "expert_count", false, 0, ALLOY_MAX_EXPERTS, &cfg->n_experts))) return s;
        if (cfg->n_experts > 0) {
            if ((s = get_hparam(g, arch, "expert_used_count", true, 1, cfg->n_experts, &cfg->top_k))) return s;
            cfg->router_aux_loss_coef = 0.001;
        }
        const alloy_gguf_kv *scaling = alloy_gguf_find_kv(g, "llama.rope.scaling.type");
        if (scaling && (scaling->type != ALLOY_GGUF_VTYPE_STRING || strcmp(scaling->str, "none")))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: RoPE scaling (llama.rope.scaling.type) is not supported",
                              g->path);
    }
    const alloy_gguf_kv *tk = alloy_gguf_find_kv(g, "alloy.tokenizer");
    if (tk) {
        if (tk->type != ALLOY_GGUF_VTYPE_STRING || tk->str_len >= sizeof cfg->tokenizer)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"alloy.tokenizer\" must be a short string", g->path);
        memcpy(cfg->tokenizer, tk->str, tk->str_len + 1);
    }
    if ((s = alloy_config_validate(cfg, g->path))) return s;
    // the sizes that decide the model's memory must agree with tensors the file holds, before
    // anything is allocated: a header alone cannot make alloy allocate what the file lacks
    char last[64];
    snprintf(last, sizeof last, "blk.%d.attn_norm.weight", cfg->n_layer - 1);
    const char *down_name = cfg->n_experts ? "blk.0.ffn_down_exps.weight" : "blk.0.ffn_down.weight";
    const alloy_gguf_tensor *down = alloy_gguf_find_tensor(g, down_name);
    const alloy_gguf_tensor *pos = alloy_gguf_find_tensor(g, "position_embd.weight");
    if (!alloy_gguf_find_tensor(g, last))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (%s.block_count is %d)", g->path, last,
                          arch, cfg->n_layer);
    if (!down || down->ne[0] != cfg->d_ff)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" is missing or not %d wide (%s.feed_forward_length)",
                          g->path, down_name, cfg->d_ff, arch);
    if (cfg->n_experts && (down->n_dims != 3 || down->ne[2] != cfg->n_experts))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" does not stack %d experts (%s.expert_count)",
                          g->path, down_name, cfg->n_experts, arch);
    if (gpt2 && (!pos || pos->n_dims != 2 || pos->ne[1] != cfg->max_seq_len))
        return alloy_fail(ALLOY_STATUS_MISMATCH,
                          "%s: tensor \"position_embd.weight\" is missing or has not %d rows (%s.context_length)",
                          g->path, cfg->max_seq_len, arch);
    return ALLOY_STATUS_OK;
}

static void format_ne(char *buf, size_t size, const int64_t *ne, int n) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < n && k + 24 < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)ne[d]);
    snprintf(buf + k, size - k, "]");
}

/* Fills the model's parameters from the file's tensors. */
static alloy_status load_tensors(alloy_model *m, const alloy_gguf *g) {
    const alloy_config *c = &m->config;
    char(*names)[ALLOY_GGUF_MAX_NAME + 1] = alloy_calloc((size_t)m->n_tensors, sizeof *names);
    float *buf = NULL;
    size_t buf_cap = 0;
    alloy_status s = names ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        int xf, expert;
        bool mapped = gguf_name(c->family, ti->name, names[i], &xf, &expert);
        ALLOY_ASSERT(mapped);
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, names[i]);
        if (!t) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (for %s)", g->path, names[i], ti->name);
            break;
        }
        int64_t ne[ALLOY_GGUF_MAX_DIMS];
        int nd = gguf_shape(ti, xf, ne);
        alloy_gguf_tensor slice;
        if (expert >= 0) { // slice `expert` of the stacked [cols, rows, E] tensor, if that is its shape
            nd = 3;
            ne[2] = c->n_experts;
            if (t->n_dims == 3 && t->ne[0] == ne[0] && t->ne[1] == ne[1] && t->ne[2] == ne[2]) {
                slice = *t;
                slice.n_dims = 2;
                slice.ne[2] = 1;
                slice.n_elems = t->n_elems / (size_t)ne[2];
                slice.nbytes = t->nbytes / (size_t)ne[2]; // whole rows: an expert's bytes are contiguous
                slice.data = t->data + (size_t)expert * slice.nbytes;
                slice.offset = t->offset + (uint64_t)expert * slice.nbytes;
                t = &slice;
                nd = 2;
                ne[2] = 1;
            }
        }
        bool same = t->n_dims == nd;
        for (int d = 0; d < ALLOY_GGUF_MAX_DIMS; d++) same = same && t->ne[d] == ne[d];
        if (!same) {
            char want[96], got[96];
            format_ne(want, sizeof want, ne, nd);
            format_ne(got, sizeof got, t->ne, t->n_dims);
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" has shape %s but the metadata imply %s", g->path,
                           names[i], got, want);
            break;
        }
        float *dst = m->params_memory + ti->offset;
        if (nd == 1 || xf == XF_NONE) {
            s = alloy_gguf_tensor_to_f32(g, t, dst);
            continue;
        }
        if (ti->numel > buf_cap) {
            alloy_free(buf);
            buf = alloy_malloc(ti->numel * sizeof(float));
            buf_cap = buf ? ti->numel : 0;
            if (!buf) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
        }
        if ((s = alloy_gguf_tensor_to_f32(g, t, buf))) break;
        if (xf == XF_TRANSPOSE) transpose(dst, buf, ti->shape[1], ti->shape[0]); // (out, in) -> (in, out)
        else permute_heads(dst, buf, permute_heads_of(c, xf), alloy_config_head_dim(c), ti->shape[1], false);
    }
    // every tensor of the file must have found a place
    for (size_t k = 0; k < g->n_tensors && !s; k++) {
        const alloy_gguf_tensor *t = &g->tensors[k];
        bool known = false;
        for (int i = 0; i < m->n_tensors && !known; i++) known = !strcmp(names[i], t->name);
        if (known) continue;
        if (c->family == ALLOY_FAMILY_GPT2 && !strcmp(t->name, "output.weight")) {
            // a head tied by copy is fine; alloy's GPT-2 cannot hold another
            const alloy_gguf_tensor *e = alloy_gguf_find_tensor(g, "token_embd.weight");
            if (e->type == t->type && e->nbytes == t->nbytes && !memcmp(e->data, t->data, t->nbytes) &&
                e->n_dims == t->n_dims && e->ne[0] == t->ne[0] && e->ne[1] == t->ne[1])
                continue;
            s = alloy_fail(ALLOY_STATUS_MISMATCH,
                           "%s: tensor \"output.weight\" differs from token_embd.weight (alloy's GPT-2 ties its head)",
                           g->path);
            break;
        }
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: unexpected tensor \"%s\" (does the metadata match the weights?)",
                       g->path, t->name);
    }
    alloy_free(buf);
    alloy_free(names);
    return s;
}

/* Reads tokenizer.ggml.* into a tokenizer; *out stays NULL when the file has none. */
static alloy_status tokenizer_from_gguf(const alloy_gguf *g, alloy_tokenizer **out) {
    *out = NULL;
    const alloy_gguf_kv *model = alloy_gguf_find_kv(g, "tokenizer.ggml.model");
    if (!model) return ALLOY_STATUS_OK;
    char q[52];
    if (model->type != ALLOY_GGUF_VTYPE_STRING || strcmp(model->str, "gpt2"))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tokenizer \"%s\" is not supported (alloy reads byte-level BPE, \"gpt2\"); import the "
                          "weights alone",
                          g->path,
                          model->type == ALLOY_GGUF_VTYPE_STRING ? quotable(model->str, model->str_len, q) : "?");
    const alloy_gguf_kv *tokens, *types = NULL, *merges = NULL;
    alloy_status s = alloy_gguf_get_arr(g, "tokenizer.ggml.tokens", ALLOY_GGUF_VTYPE_STRING, &tokens);
    if (!s && alloy_gguf_find_kv(g, "tokenizer.ggml.token_type"))
        s = alloy_gguf_get_arr(g, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, &types);
    if (!s && alloy_gguf_find_kv(g, "tokenizer.ggml.merges"))
        s = alloy_gguf_get_arr(g, "tokenizer.ggml.merges", ALLOY_GGUF_VTYPE_STRING, &merges);
    if (s) return s;
    if (tokens->arr_n < 256 || tokens->arr_n > (1 << 24))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu tokens (a byte-level BPE has 256 to 16777216)", g->path,
                          (unsigned long long)tokens->arr_n);
    if (types && types->arr_n != tokens->arr_n)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu token types for %llu tokens", g->path,
                          (unsigned long long)types->arr_n, (unsigned long long)tokens->arr_n);
    byte_chars bc;
    byte_chars_init(&bc);
    int32_t n = (int32_t)tokens->arr_n;
    uint64_t n_merges = merges ? merges->arr_n : 0;
    char *buf = alloy_malloc(2 * 65536 + 2);
    if (!buf) return ALLOY_STATUS_NOMEM;
    // the byte tokenizer: token i the byte i for i < 256, placeholders after, no merges
    bool bytes_only = n_merges == 0;
    for (int32_t id = 0; id < n && bytes_only; id++) {
        size_t len, bl;
        const char *str = alloy_gguf_arr_str(tokens, (uint64_t)id, &len);
        alloy_gguf_scalar ty = {.i32 = TT_NORMAL};
        if (types) alloy_gguf_arr_get(types, (uint64_t)id, &ty);
        if (id >= 256) bytes_only = ty.i32 == TT_UNUSED;
        else
            bytes_only = ty.i32 == TT_NORMAL && len <= 4 && vocab_to_bytes(&bc, str, len, buf, &bl) && bl == 1 &&
                         (uint8_t)buf[0] == id;
    }
    alloy_tokenizer *t = NULL;
    if (bytes_only) {
        alloy_free(buf);
        s = alloy_tokenizer_create(&t, "bytes");
        if (!s) *out = t;
        return s;
    }
    if ((s = tok_init_bpe(&t, n, g->path))) goto done;
    for (int32_t id = 0; id < n && !s; id++) {
        size_t len, bl;
        const char *str = alloy_gguf_arr_str(tokens, (uint64_t)id, &len);
        alloy_gguf_scalar ty = {.i32 = TT_NORMAL};
        if (types) alloy_gguf_arr_get(types, (uint64_t)id, &ty);
        if (ty.i32 == TT_UNUSED) continue;
        if (len == 0 || len > 2 * 65536) { // a byte may take two bytes in vocabulary form
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d has %zu bytes", g->path, id, len);
        } else if (ty.i32 == TT_NORMAL) {
            if (!vocab_to_bytes(&bc, str, len, buf, &bl))
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d (\"%s\") is not in byte-level form", g->path, id,
                               quotable(str, len, q));
            else s = tok_set(t, id, buf, bl, false, g->path);
        } else if (ty.i32 == TT_CONTROL || ty.i32 == TT_USER_DEFINED || ty.i32 == TT_UNKNOWN) {
            s = tok_set(t, id, str, len, true, g->path); // written as their text
        } else {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d has type %d, which a byte-level BPE does not use",
                           g->path, id, ty.i32);
        }
    }
    if (!s) s = tok_index(t, g->path);
    for (uint64_t r = 0; r < n_merges && !s; r++) {
        size_t len, la, lb;
        const char *str = alloy_gguf_arr_str(merges, r, &len);
        const char *sp = memchr(str, ' ', len); // vocabulary strings hold no raw space: it is "Ġ"
        char *b = buf + 65536 + 1;
        if (!sp || len > 65536 || !vocab_to_bytes(&bc, str, (size_t)(sp - str), buf, &la) ||
            !vocab_to_bytes(&bc, sp + 1, len - (size_t)(sp - str) - 1, b, &lb)) {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %llu (\"%s\") is not \"a b\" in byte-level form", g->path,
                           (unsigned long long)r + 1, quotable(str, len, q));
            break;
        }
        int32_t l = tok_lookup(t, buf, la), rr = tok_lookup(t, b, lb);
        if (l < 0 || rr < 0)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %llu (\"%s\") names a token that is not in the vocabulary",
                           g->path, (unsigned long long)r + 1, quotable(str, len, q));
        else s = tok_add_merge(t, l, rr, g->path);
    }
    const char *pattern = NULL;
    bool prefix = false;
    if (!s) {
        const alloy_gguf_kv *pat = alloy_gguf_find_kv(g, "alloy.tokenizer.pattern");
        const alloy_gguf_kv *pre = alloy_gguf_find_kv(g, "tokenizer.ggml.pre");
        const alloy_gguf_kv *sp = alloy_gguf_find_kv(g, "tokenizer.ggml.add_space_prefix");
        if (pat && pat->type == ALLOY_GGUF_VTYPE_STRING) pattern = pat->str;
        else if (pre && (pre->type != ALLOY_GGUF_VTYPE_STRING || strcmp(pre->str, "gpt-2")))
            s = alloy_fail(ALLOY_STATUS_FORMAT,
                           "%s: pre-tokenizer \"%s\" is not supported (alloy knows gpt-2's); import the weights alone",
                           g->path, pre->type == ALLOY_GGUF_VTYPE_STRING ? quotable(pre->str, pre->str_len, q) : "?");
        if (sp && sp->type == ALLOY_GGUF_VTYPE_BOOL) prefix = sp->val.b;
    }
    if (!s) s = tok_finish(t, pattern, prefix, g->path);
done:
    alloy_free(buf);
    if (s) alloy_tokenizer_destroy(t);
    else *out = t;
    return s;
}

alloy_status alloy_gguf_import_model_ex(alloy_model **out, alloy_tokenizer **tok_out, const char *path, int max_B,
                                        int max_T) {
    *out = NULL;
    if (tok_out) *tok_out = NULL;
    alloy_gguf *g;
    alloy_status s = alloy_gguf_open(&g, path);
    if (s) return s;
    alloy_config cfg;
    alloy_model *m = NULL;
    alloy_tokenizer *tok = NULL;
    s = config_from_gguf(g, &cfg);
    if (!s) s = alloy_model_create(&m, &cfg, max_B, max_T > 0 ? max_T : cfg.max_seq_len);
    if (!s) s = load_tensors(m, g);
    if (!s && tok_out) s = tokenizer_from_gguf(g, &tok);
    alloy_gguf_close(g);
    if (s) {
        alloy_model_destroy(m);
        alloy_tokenizer_destroy(tok);
        return s;
    }
    *out = m;
    if (tok_out) *tok_out = tok;
    return ALLOY_STATUS_OK;
}
