/*
 * alloy/gguf.h — GGUF files (the format of ggml and llama.cpp): a strict reader, a writer, and
 * export/import of alloy models in llama.cpp's "gpt2" and "llama" layouts.
 *
 * GGUF (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), byte by byte. Every number
 * is little-endian; a string is a u64 length followed by that many bytes (UTF-8, no NUL).
 *   bytes [0, 4)     magic "GGUF" (0x47 0x47 0x55 0x46)
 *   bytes [4, 8)     version: u32, 3 (2 has the same layout; 1 used 32-bit counts: refused)
 *   bytes [8, 16)    tensor_count: u64
 *   bytes [16, 24)   metadata_kv_count: u64
 *   then metadata_kv_count key/values, each
 *                      key: string (1 to 65535 bytes, unique in the file)
 *                      value_type: u32 (alloy_gguf_vtype below)
 *                      value: u8 i8 u16 i16 u32 i32 f32 u64 i64 f64 as themselves; bool one byte,
 *                        0 or 1; string; array = element type u32, count u64, count elements
 *                        written one after the other (arrays of arrays nest, alloy reads at
 *                        most ALLOY_GGUF_MAX_NESTING levels)
 *   then tensor_count tensor infos, each
 *                      name: string (1 to 63 bytes, unique in the file)
 *                      n_dims: u32 (1 to 4)
 *                      ne[n_dims]: u64 each > 0; ne[0] varies fastest, so a row-major PyTorch
 *                        tensor of shape (rows, cols) has ne = [cols, rows]
 *                      type: u32, a ggml type (alloy_ggml_type below); ne[0] must be a multiple
 *                        of the type's block (32 for Q8_0 and Q4_0, 256 for Q4_K)
 *                      offset: u64 from the start of the data section, a multiple of ALIGNMENT
 *   zero padding to the next multiple of ALIGNMENT, then the data section: each tensor's bytes
 *   (ne[0]/block · ne[1] · ne[2] · ne[3] blocks of the type's size) at its offset, padded to
 *   ALIGNMENT. ALIGNMENT is the metadata value general.alignment (u32, a power of two), 32 if
 *   absent.
 * The reader checks every rule above against the file's length before it uses a byte, and that
 * no two tensors' data overlap. Quantised blocks are ggml's, byte for byte (alloy/quant.h).
 *
 * The model layouts are those of llama.cpp's convert_hf_to_gguf.py:
 *   gpt2:  token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up,
 *          ffn_down}.{weight,bias}, output_norm.{weight,bias}; Conv1D weights transposed to
 *          (out, in); the head is tied to token_embd (no output.weight).
 *   llama: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
 *          ffn_gate, ffn_up, ffn_down}.weight, output_norm.weight, output.weight (absent when
 *          tied); the rows of attn_q and attn_k are permuted within each head from Hugging
 *          Face's rotate-half order (x[i], x[i + hd/2]) to the interleaved pairs (x[2i],
 *          x[2i+1]) of llama.cpp's RoPE; import undoes it.
 *   llama, mixture of experts (Mixtral): llama.expert_count = E, llama.expert_used_count = K;
 *          per layer, instead of ffn_gate/up/down, the router ffn_gate_inp.weight [C, E] (kept
 *          F32) and the experts stacked as ffn_gate_exps, ffn_up_exps [C, F, E] and
 *          ffn_down_exps [F, C, E] (slice e is expert e's w1, w3, w2). alloy's GPT-2 MoE layout
 *          has no llama.cpp counterpart: its export is refused (USAGE).
 *
 *     alloy_gguf_export_model(m, tok, "model-q8_0.gguf", ALLOY_QTYPE_Q8_0);
 *     alloy_gguf *g;
 *     if (alloy_gguf_open(&g, "model-q8_0.gguf")) { puts(alloy_last_error()); ... }
 *     int64_t layers;
 *     alloy_gguf_get_int(g, "llama.block_count", &layers);
 *     const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, "token_embd.weight");
 *     alloy_gguf_close(g);
 *     alloy_model *back;
 *     alloy_gguf_import_model(&back, NULL, "model-q8_0.gguf");   // dequantised to f32
 */
#ifndef ALLOY_GGUF_H
#define ALLOY_GGUF_H

#include "alloy/base.h"
#include "alloy/model.h"
#include "alloy/quant.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

/* Metadata value types (the format's numbers). */
typedef enum alloy_gguf_vtype {
    ALLOY_GGUF_VTYPE_UINT8 = 0,
    ALLOY_GGUF_VTYPE_INT8 = 1,
    ALLOY_GGUF_VTYPE_UINT16 = 2,
    ALLOY_GGUF_VTYPE_INT16 = 3,
    ALLOY_GGUF_VTYPE_UINT32 = 4,
    ALLOY_GGUF_VTYPE_INT32 = 5,
    ALLOY_GGUF_VTYPE_FLOAT32 = 6,
    ALLOY_GGUF_VTYPE_BOOL = 7,
    ALLOY_GGUF_VTYPE_STRING = 8,
    ALLOY_GGUF_VTYPE_ARRAY = 9,
    ALLOY_GGUF_VTYPE_UINT64 = 10,
    ALLOY_GGUF_VTYPE_INT64 = 11,
    ALLOY_GGUF_VTYPE_FLOAT64 = 12,
    ALLOY_GGUF_VTYPE_COUNT
} alloy_gguf_vtype;

/* Tensor types (ggml's numbers; gaps are types ggml has removed). */
typedef enum alloy_ggml_type {
    ALLOY_GGML_TYPE_F32 = 0,
    ALLOY_GGML_TYPE_F16 = 1,
    ALLOY_GGML_TYPE_Q4_0 = 2,
    ALLOY_GGML_TYPE_Q4_1 = 3,
    ALLOY_GGML_TYPE_Q5_0 = 6,
    ALLOY_GGML_TYPE_Q5_1 = 7,
    ALLOY_GGML_TYPE_Q8_0 = 8,
    ALLOY_GGML_TYPE_Q8_1 = 9,
    ALLOY_GGML_TYPE_Q2_K = 10,
    ALLOY_GGML_TYPE_Q3_K = 11,
    ALLOY_GGML_TYPE_Q4_K = 12,
    ALLOY_GGML_TYPE_Q5_K = 13,
    ALLOY_GGML_TYPE_Q6_K = 14,
    ALLOY_GGML_TYPE_Q8_K = 15,
    ALLOY_GGML_TYPE_IQ2_XXS = 16,
    ALLOY_GGML_TYPE_IQ2_XS = 17,
    ALLOY_GGML_TYPE_IQ3_XXS = 18,
    ALLOY_GGML_TYPE_IQ1_S = 19,
    ALLOY_GGML_TYPE_IQ4_NL = 20,
    ALLOY_GGML_TYPE_IQ3_S = 21,
    ALLOY_GGML_TYPE_IQ2_S = 22,
    ALLOY_GGML_TYPE_IQ4_XS = 23,
    ALLOY_GGML_TYPE_I8 = 24,
    ALLOY_GGML_TYPE_I16 = 25,
    ALLOY_GGML_TYPE_I32 = 26,
    ALLOY_GGML_TYPE_I64 = 27,
    ALLOY_GGML_TYPE_F64 = 28,
    ALLOY_GGML_TYPE_IQ1_M = 29,
    ALLOY_GGML_TYPE_BF16 = 30,
    ALLOY_GGML_TYPE_TQ1_0 = 34,
    ALLOY_GGML_TYPE_TQ2_0 = 35,
    ALLOY_GGML_TYPE_MXFP4 = 39,
    ALLOY_GGML_TYPE_NVFP4 = 40,
    ALLOY_GGML_TYPE_Q1_0 = 41,
    ALLOY_GGML_TYPE_Q2_0 = 42,
    ALLOY_GGML_TYPE_COUNT
} alloy_ggml_type;

#define ALLOY_GGUF_DEFAULT_ALIGNMENT 32
#define ALLOY_GGUF_MAX_DIMS 4
#define ALLOY_GGUF_MAX_NAME 63      /* bytes in a tensor name (ggml's GGML_MAX_NAME less the NUL) */
#define ALLOY_GGUF_MAX_KEY 65535    /* bytes in a key */
#define ALLOY_GGUF_MAX_NESTING 4    /* levels of arrays within arrays the reader accepts */

const char *alloy_gguf_vtype_name(alloy_gguf_vtype type); /* "UINT32", ...; "?" if unknown */
/* ggml's name of a tensor type ("F32", "Q4_K", ...), or NULL for a number that is no type. */
const char *alloy_ggml_type_name(uint32_t type);
/* Elements per block and bytes per block of a tensor type; false for a number that is no type. */
bool alloy_ggml_type_size(uint32_t type, int *block_elems, size_t *block_bytes);
/* The ggml type of an alloy_qtype and back; false where there is none. */
bool alloy_ggml_type_from_qtype(alloy_qtype q, uint32_t *type);
bool alloy_ggml_type_to_qtype(uint32_t type, alloy_qtype *q);

/* A scalar metadata value: the member named by its type is set. */
typedef union alloy_gguf_scalar {
    uint8_t u8;
    int8_t i8;
    uint16_t u16;
    int16_t i16;
    uint32_t u32;
    int32_t i32;
    float f32;
    bool b;
    uint64_t u64;
    int64_t i64;
    double f64;
} alloy_gguf_scalar;

/* ---- the reader --------------------------------------------------------------------------- */

typedef struct alloy_gguf_kv {
    char *key;                /* NUL-terminated copy of the key */
    alloy_gguf_vtype type;    /* the value's type */
    alloy_gguf_scalar val;    /* scalar types: the value */
    char *str;                /* STRING: a NUL-terminated copy (str_len bytes before the NUL) */
    size_t str_len;
    alloy_gguf_vtype arr_type;/* ARRAY: the element type */
    uint64_t arr_n;           /* ARRAY: elements */
    const uint8_t *arr_data;  /* ARRAY: the first element, in the map (may be unaligned) */
    size_t *arr_offsets;      /* ARRAY of STRING: (arr_n) offset of each element from arr_data */
    const uint8_t *raw;       /* the encoded value (after value_type), in the map */
    size_t raw_size;          /* its bytes */
} alloy_gguf_kv;

typedef struct alloy_gguf_tensor {
    char *name;               /* NUL-terminated copy of the name */
    int n_dims;               /* 1 to ALLOY_GGUF_MAX_DIMS */
    int64_t ne[ALLOY_GGUF_MAX_DIMS]; /* elements per dimension, fastest first; 1 past n_dims */
    uint32_t type;            /* alloy_ggml_type */
    uint64_t offset;          /* from the start of the data section */
    size_t n_elems;           /* product of ne */
    size_t nbytes;            /* bytes of data */
    const uint8_t *data;      /* into the map: aligned to ALIGNMENT from the data section's start */
} alloy_gguf_tensor;

typedef struct alloy_gguf {
    char *path;
    alloy_file_map map;
    uint32_t version;         /* 2 or 3 */
    alloy_gguf_kv *kvs;       /* (n_kv) in file order */
    size_t n_kv;
    alloy_gguf_tensor *tensors; /* (n_tensors) in file order */
    size_t n_tensors;
    uint32_t alignment;       /* general.alignment or 32 */
    size_t data_offset;       /* where the data section starts in the file */
    size_t data_size;         /* bytes from there to the end of the file */
} alloy_gguf;

/* Opens and validates a GGUF file (memory-mapped). On failure *out is NULL and the message
 * names the file and the first rule broken ("x.gguf: tensor \"blk.0.attn_q.weight\" data
 * [4096, 8192) lies outside the 6000-byte data section (truncated?)"). */
alloy_status alloy_gguf_open(alloy_gguf **out, const char *path);
void alloy_gguf_close(alloy_gguf *g);

/* The key/value with this key, or NULL. */
const alloy_gguf_kv *alloy_gguf_find_kv(const alloy_gguf *g, const char *key);
/* Typed getters: FORMAT with "<path>: key \"k\" is missing" or "... is FLOAT32, expected an
 * integer". get_int takes any integer type (a UINT64 above INT64_MAX fails); get_float takes
 * FLOAT32 or FLOAT64; get_str gives the NUL-terminated copy. */
alloy_status alloy_gguf_get_int(const alloy_gguf *g, const char *key, int64_t *out);
alloy_status alloy_gguf_get_float(const alloy_gguf *g, const char *key, double *out);
alloy_status alloy_gguf_get_bool(const alloy_gguf *g, const char *key, bool *out);
alloy_status alloy_gguf_get_str(const alloy_gguf *g, const char *key, const char **out);
/* An array whose elements are of type `elem`. */
alloy_status alloy_gguf_get_arr(const alloy_gguf *g, const char *key, alloy_gguf_vtype elem,
                                const alloy_gguf_kv **out);
/* Element i of an array of a scalar type; false if i >= arr_n or the elements are strings or
 * arrays. */
bool alloy_gguf_arr_get(const alloy_gguf_kv *kv, uint64_t i, alloy_gguf_scalar *out);
/* Element i of an array of strings: its bytes in the map (*len of them, not NUL-terminated),
 * or NULL if i >= arr_n or the elements are not strings. */
const char *alloy_gguf_arr_str(const alloy_gguf_kv *kv, uint64_t i, size_t *len);

/* The tensor with this name, or NULL. */
const alloy_gguf_tensor *alloy_gguf_find_tensor(const alloy_gguf *g, const char *name);
/* Converts a tensor of type F32, F16, BF16, Q8_0, Q4_0 or Q4_K to n_elems floats; FORMAT naming
 * the tensor and its type for any other. */
alloy_status alloy_gguf_tensor_to_f32(const alloy_gguf *g, const alloy_gguf_tensor *t, float *out);

/* ---- the writer --------------------------------------------------------------------------- */

/* Collects key/values (written in the order they are set) and tensors, then writes the file
 * (version 3). Keys and tensor names must be new; setting "general.alignment" (a UINT32 power
 * of two) sets the alignment, 32 otherwise. Errors are USAGE, naming the key or tensor. */
typedef struct alloy_gguf_writer alloy_gguf_writer;

alloy_status alloy_gguf_writer_create(alloy_gguf_writer **out);
void alloy_gguf_writer_destroy(alloy_gguf_writer *w);
/* A scalar of any type but STRING and ARRAY. */
alloy_status alloy_gguf_set_val(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype type, alloy_gguf_scalar v);
alloy_status alloy_gguf_set_u32(alloy_gguf_writer *w, const char *key, uint32_t v);
alloy_status alloy_gguf_set_f32(alloy_gguf_writer *w, const char *key, float v);
alloy_status alloy_gguf_set_str(alloy_gguf_writer *w, const char *key, const char *s);
/* An array of n elements of a scalar type; data is a C array of the element's type (bool for
 * BOOL). */
alloy_status alloy_gguf_set_arr(alloy_gguf_writer *w, const char *key, alloy_gguf_vtype elem, const void *data,
                                size_t n);
/* An array of n strings; lens NULL means each is NUL-terminated. */
alloy_status alloy_gguf_set_arr_str(alloy_gguf_writer *w, const char *key, const char *const *strs,
                                    const size_t *lens, size_t n);
/* A copy of a key/value of an open file (any type, nested arrays included), under its key. */
alloy_status alloy_gguf_set_kv(alloy_gguf_writer *w, const alloy_gguf_kv *kv);
/* A tensor of `type` with ne[0..n_dims) (fastest first) and nbytes of data, which must be what
 * the type and shape need. The data is not copied: it must stay valid until alloy_gguf_write. */
alloy_status alloy_gguf_add_tensor(alloy_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                                   uint32_t type, const void *data, size_t nbytes);
/* Writes the file atomically (temporary file, fsync, rename). */
alloy_status alloy_gguf_write(const alloy_gguf_writer *w, const char *path);

/* ---- models ------------------------------------------------------------------------------- */

/* What an export did: how many tensors it wrote and which could not take the requested type
 * (a row length that is not a multiple of the type's block: such a tensor is written as F16,
 * as llama.cpp's converter does). */
typedef struct alloy_gguf_export_report {
    int n_tensors;            /* tensors written */
    int n_requested;          /* weight matrices (2-D, or stacked experts) in the requested type */
    int n_fallback;           /* weight matrices written as F16 instead */
    char note[256];           /* "" or one line naming the fallbacks, for the user */
} alloy_gguf_export_report;

/* Writes a model as a GGUF file llama.cpp loads: the metadata of its architecture ("gpt2" or
 * "llama": general.architecture, general.name, <arch>.context_length, .embedding_length,
 * .block_count, .feed_forward_length, .attention.head_count, .attention.head_count_kv, the norm
 * epsilon, for llama .rope.dimension_count and .rope.freq_base, general.file_type,
 * general.alignment) and, when tok is not NULL, the tokenizer (tokenizer.ggml.model "gpt2",
 * tokens, token_type, merges, pre, bos/eos ids). 1-D tensors (norms, biases) and GPT-2's
 * position_embd are F32; 2-D weights are in `type` (F32, F16, Q8_0, Q4_0, Q4_K), falling back to
 * F16 as the report says. A Llama-family MoE is written as a Mixtral (above: expert keys, the
 * router F32, the experts' stacked 3-D tensors in `type`); a GPT-2 MoE is USAGE. report may be
 * NULL. */
alloy_status alloy_gguf_export_model_ex(const alloy_model *m, const alloy_tokenizer *tok, const char *path,
                                        alloy_qtype type, alloy_gguf_export_report *report);
static inline alloy_status alloy_gguf_export_model(const alloy_model *m, const alloy_tokenizer *tok,
                                                   const char *path, alloy_qtype type) {
    return alloy_gguf_export_model_ex(m, tok, path, type, NULL);
}

/* Reads a "gpt2" or "llama" GGUF file (ours, or llama.cpp's of these architectures; a llama with
 * llama.expert_count > 0 as a Mixtral, router_aux_loss_coef 0.001) into a new model for
 * max_B x max_T tokens (max_T 0: the file's context length), every tensor converted
 * to f32 and the Q/K permutation undone. With tok_out not NULL, also the tokenizer: a byte-level
 * BPE (tokenizer.ggml.model "gpt2"), or *tok_out = NULL when the file has none; another kind of
 * tokenizer is an error (pass NULL to read the weights alone). A tensor the model lacks, one
 * missing, or one of another shape is MISMATCH; a malformed file is FORMAT. */
alloy_status alloy_gguf_import_model_ex(alloy_model **out, alloy_tokenizer **tok_out, const char *path, int max_B,
                                        int max_T);
static inline alloy_status alloy_gguf_import_model(alloy_model **out, alloy_tokenizer **tok_out, const char *path) {
    return alloy_gguf_import_model_ex(out, tok_out, path, 1, 0);
}

ALLOY_END_DECLS
#endif /* ALLOY_GGUF_H */
