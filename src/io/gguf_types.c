/*
 * gguf_types.c — the encodings GGUF's reader and writer share: the ggml tensor types (their
 * names and block sizes, and which of them alloy's quantised types are), the metadata value
 * types, little-endian scalars, and the quoting of a file's strings in one-line messages.
 */
#include "gguf_internal.h"

#include <string.h>

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
const uint8_t gguf_vtype_size[ALLOY_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

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

/* ---- little-endian scalars ---- */

alloy_gguf_scalar gguf_get_scalar(const uint8_t *p, alloy_gguf_vtype t) {
    alloy_gguf_scalar v;
    memset(&v, 0, sizeof v);
    uint64_t bits = gguf_get_le(p, gguf_vtype_size[t]);
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

void gguf_put_scalar(uint8_t *p, alloy_gguf_vtype t, alloy_gguf_scalar v) {
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
    gguf_put_le(p, bits, gguf_vtype_size[t]);
}

const char *gguf_quotable(const char *s, size_t n, char buf[52]) {
    size_t k = 0;
    for (; k < n && k < 48; k++) buf[k] = (uint8_t)s[k] < 0x20 || s[k] == 0x7f ? '?' : s[k];
    if (k < n) { // cut: say so
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}
