/*
 * gguf_internal.h — what the GGUF files of src/io/ share: the encoding of numbers and values
 * (gguf_types.c), the name maps and layout changes between alloy's parameter table and
 * llama.cpp's tensors (gguf_layout.c), and the tokenizer's metadata (gguf_tokenizer.c).
 *
 *     gguf_types.c      type tables, little-endian scalars, messages' quoting
 *     gguf_read.c       the strict reader (alloy_gguf_open and the getters)
 *     gguf_write.c      the writer (alloy_gguf_writer)
 *     gguf_layout.c     Hugging Face names <-> llama.cpp names, transposes, RoPE permutations
 *     gguf_tokenizer.c  tokenizer.ggml.* <-> alloy_tokenizer
 *     gguf_export.c     alloy model -> GGUF file
 *     gguf_import.c     GGUF file -> alloy model (and tokenizer)
 */
#ifndef ALLOY_IO_GGUF_INTERNAL_H
#define ALLOY_IO_GGUF_INTERNAL_H

#include "alloy/gguf.h"

/* ---- encoding (gguf_types.c) ---- */

/* Bytes of a scalar value of each type; 0 for STRING and ARRAY. */
extern const uint8_t gguf_vtype_size[ALLOY_GGUF_VTYPE_COUNT];

/* The n-byte (n <= 8) little-endian number at p. */
static inline uint64_t gguf_get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = (n < 8 ? n : 8) - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Writes v as an n-byte (n <= 8) little-endian number at p. */
static inline void gguf_put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n && i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static inline bool gguf_is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static inline size_t gguf_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Reads a scalar of type t (not STRING/ARRAY) at p. */
alloy_gguf_scalar gguf_get_scalar(const uint8_t *p, alloy_gguf_vtype t);
/* Encodes a scalar of type t (not STRING/ARRAY) into p (gguf_vtype_size[t] bytes). */
void gguf_put_scalar(uint8_t *p, alloy_gguf_vtype t, alloy_gguf_scalar v);

/* A string from a file made fit to quote in a one-line message: control bytes become '?', and
 * at most 48 bytes are kept. Returns buf. */
const char *gguf_quotable(const char *s, size_t n, char buf[52]);

/* ---- model layouts (gguf_layout.c) ---- */

/* How a tensor changes between the Hugging Face layout and llama.cpp's. */
enum { GGUF_XF_NONE = 0, GGUF_XF_TRANSPOSE, GGUF_XF_PERMUTE_Q, GGUF_XF_PERMUTE_K };

/* The llama.cpp name of a parameter-table tensor and how it is laid out there (*xf); *expert
 * gets the slice of a Mixtral expert's matrix in its stacked tensor, -1 for any other tensor.
 * False for a name with no counterpart (a GPT-2 MoE's experts and router; otherwise a bug: the
 * table holds only names of the two families). */
bool gguf_layout_name(alloy_family family, const char *hf, char out[ALLOY_GGUF_MAX_NAME + 1], int *xf, int *expert);
/* The GGUF shape (fastest first) of a table tensor stored with transform xf; returns its dims. */
int gguf_layout_shape(const alloy_tensor_info *ti, int xf, int64_t ne[ALLOY_GGUF_MAX_DIMS]);
/* dst (cols, rows) = src (rows, cols)ᵀ */
void gguf_transpose(float *dst, const float *src, int64_t rows, int64_t cols);
/* Permutes the rows of a (heads·hd, cols) projection within each head between Hugging Face's
 * rotate-half order and llama.cpp's interleaved pairs (to_gguf, or back). */
void gguf_permute_heads(float *dst, const float *src, int64_t heads, int64_t hd, int64_t cols, bool to_gguf);
/* Number of heads whose rows a transform permutes. */
int64_t gguf_permute_heads_of(const alloy_config *c, int xf);

/* ---- the tokenizer (gguf_tokenizer.c) ---- */

/* Writes the tokenizer as tokenizer.ggml.* with n_vocab (>= its size) entries. */
alloy_status gguf_put_tokenizer(alloy_gguf_writer *w, const alloy_tokenizer *t, int n_vocab);
/* Reads tokenizer.ggml.* into a tokenizer; *out stays NULL when the file has none. */
alloy_status gguf_get_tokenizer(const alloy_gguf *g, alloy_tokenizer **out);

#endif
