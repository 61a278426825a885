/*
 * alloy/io.h — safetensors files and model checkpoint folders.
 *
 * safetensors (https://github.com/huggingface/safetensors), byte by byte:
 *   bytes [0, 8)        N, the header length: unsigned 64-bit little-endian
 *   bytes [8, 8+N)      a UTF-8 JSON object: for each tensor name
 *                         {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 *                       and optionally "__metadata__": {string: string}; padded with spaces
 *   bytes [8+N, end)    the data buffer; offsets are relative to its start; tensors are
 *                       row-major little-endian, cover the buffer without holes or overlap.
 * The reader checks every one of these rules against the file's length before any use.
 *
 * A model checkpoint is a folder holding model.safetensors (tensors named and shaped as in the
 * Hugging Face layout of the family) and config.json (Hugging Face keys).
 *
 *     alloy_model *m;   // make demo's last checkpoint (a run folder: alloy_checkpoint_resolve first)
 *     if (alloy_model_load(&m, "runs/demo/run/checkpoints/step-00000450", 1, 0)) { puts(alloy_last_error()); ... }
 */
#ifndef ALLOY_IO_H
#define ALLOY_IO_H

#include "alloy/base.h"
#include "alloy/model.h"

ALLOY_BEGIN_DECLS

typedef enum alloy_dtype {
    ALLOY_DTYPE_F32 = 0,
    ALLOY_DTYPE_F16,
    ALLOY_DTYPE_BF16,
    ALLOY_DTYPE_F64,
    ALLOY_DTYPE_I8,
    ALLOY_DTYPE_U8,
    ALLOY_DTYPE_I16,
    ALLOY_DTYPE_U16,
    ALLOY_DTYPE_I32,
    ALLOY_DTYPE_U32,
    ALLOY_DTYPE_I64,
    ALLOY_DTYPE_U64,
    ALLOY_DTYPE_BOOL,
    ALLOY_DTYPE_COUNT
} alloy_dtype;

size_t alloy_dtype_size(alloy_dtype dtype);
/* A shape as "[d0, d1, ...]" for messages, cut to fit buf's size bytes. */
void alloy_format_shape(char *buf, size_t size, const int64_t *shape, int ndim);
const char *alloy_dtype_name(alloy_dtype dtype);     /* "F32", ... as in safetensors */
alloy_status alloy_dtype_parse(const char *name, alloy_dtype *out);

#define ALLOY_ST_MAX_DIMS 8

typedef struct alloy_st_tensor {
    char *name;                        /* tensor name */
    alloy_dtype dtype;
    int ndim;
    int64_t shape[ALLOY_ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data;               /* into the map; may be unaligned */
    size_t offset;                     /* from the start of the data buffer */
    size_t nbytes;
} alloy_st_tensor;

typedef struct alloy_safetensors {
    char *path;
    alloy_file_map map;
    alloy_st_tensor *tensors;          /* (n_tensors), in file order */
    int n_tensors;
    struct cJSON *metadata;            /* "__metadata__" or NULL */
    size_t header_size;                /* N */
} alloy_safetensors;

/* Opens and validates a safetensors file (memory-mapped). */
alloy_status alloy_safetensors_open(alloy_safetensors **out, const char *path);
void alloy_safetensors_close(alloy_safetensors *st);
const alloy_st_tensor *alloy_safetensors_find(const alloy_safetensors *st, const char *name);
/* A metadata string, or NULL. */
const char *alloy_safetensors_meta(const alloy_safetensors *st, const char *key);
/* Converts a tensor of F32, F16 or BF16 into `numel` floats. */
alloy_status alloy_st_tensor_to_f32(const alloy_safetensors *st, const alloy_st_tensor *t, float *out);

/* One tensor to write. */
typedef struct alloy_st_entry {
    const char *name;
    alloy_dtype dtype;
    int ndim;
    int64_t shape[ALLOY_ST_MAX_DIMS];
    const void *data;                  /* numel · dtype size bytes */
} alloy_st_entry;

/* Writes a safetensors file atomically. `meta` is NULL or a NULL-terminated list of
 * key, value, key, value, ... strings for "__metadata__". */
alloy_status alloy_safetensors_write(const char *path, const alloy_st_entry *entries, int n,
                                     const char *const *meta);

/* A safetensors file written a piece at a time, for outputs too large to hold (a merge): open
 * writes the header from the entries (their data is not read) and meta (as above), then the
 * tensors' bytes are appended in the entries' order, in pieces of any size, then commit puts
 * the file in place atomically. Commit and abort free the writer.
 *
 *     alloy_safetensors_writer *w;
 *     alloy_safetensors_writer_open(&w, path, entries, n, meta);
 *     alloy_safetensors_writer_append(w, chunk, bytes);          // until every tensor is in
 *     alloy_safetensors_writer_commit(w);                        // or _abort(w) on failure */
typedef struct alloy_safetensors_writer alloy_safetensors_writer;
alloy_status alloy_safetensors_writer_open(alloy_safetensors_writer **out, const char *path,
                                           const alloy_st_entry *entries, int n, const char *const *meta);
/* USAGE if the bytes would run past the last tensor. */
alloy_status alloy_safetensors_writer_append(alloy_safetensors_writer *w, const void *data, size_t nbytes);
/* USAGE (and nothing written) if the tensors' bytes are not all there. */
alloy_status alloy_safetensors_writer_commit(alloy_safetensors_writer *w);
/* Leaves path as it was. */
void alloy_safetensors_writer_abort(alloy_safetensors_writer *w);
/* Bytes written so far: the 8-byte length, the padded header, the data appended. */
size_t alloy_safetensors_writer_bytes(const alloy_safetensors_writer *w);

/* ---- model checkpoints ---- */

/* Writes dir/model.safetensors and dir/config.json (creating dir), each atomically. */
alloy_status alloy_model_save(const alloy_model *m, const char *dir);
/* Reads dir/config.json, creates a model for max_B x max_T tokens (max_T 0: the config's
 * maximum) and loads the weights of dir (as alloy_model_load_weights) into it. */
alloy_status alloy_model_load(alloy_model **out, const char *dir, int max_B, int max_T);
/* Loads weights into an existing model from path: a safetensors file, or a folder holding
 * model.safetensors or the shards listed by model.safetensors.index.json (as the Hugging Face
 * hub stores large models). Tensors may be F32, F16 or BF16; GPT-2 names may lack the
 * "transformer." prefix (hub files of GPT2Model). Every tensor of the table must be present with
 * its exact shape; an unexpected tensor is an error (config and weights disagree). */
alloy_status alloy_model_load_weights(alloy_model *m, const char *path);

/* The safetensors files that hold a checkpoint's weights, memory-mapped: one file, or the
 * shards a Hugging Face index (model.safetensors.index.json, {"weight_map": {tensor: file}})
 * lists, each once, in the order the map first names it. */
typedef struct alloy_weight_files {
    alloy_safetensors **files; /* (n) */
    int n;
} alloy_weight_files;

/* Opens path: a safetensors file, or a folder holding model.safetensors or an index of shards
 * (a shard name with a '/' or "..", a missing map or shard are refused, naming the file). */
alloy_status alloy_weight_files_open(alloy_weight_files *w, const char *path);
void alloy_weight_files_close(alloy_weight_files *w);
/* Tensors that checkpoints of the family may carry but that hold no parameters: GPT-2's
 * attention-mask buffers and tied lm_head, Llama's rotary inv_freq. */
bool alloy_checkpoint_ignorable(alloy_family family, const char *name);

ALLOY_END_DECLS
#endif /* ALLOY_IO_H */
