/*
 * safetensors_write.c — the safetensors writer (the format is documented at the top of
 * include/alloy/io.h): the header is made from the tensors' names, dtypes and shapes (with
 * __metadata__ first), padded with spaces so that the data starts 8-byte aligned, and the data
 * follows in the entries' order. alloy_safetensors_write writes tensors held in memory; the
 * streaming writer takes their bytes a piece at a time. Both write through one header and go to
 * disk atomically.
 */
#include "alloy/io.h"

#include <cJSON.h>
#include <string.h>

struct alloy_safetensors_writer {
    alloy_atomic_file file; /* the temporary file, renamed into place by commit */
    char *path;             /* for messages */
    size_t data_bytes;      /* the data the header announces */
    size_t appended;        /* of it, appended so far */
    size_t header_bytes;    /* 8 + the padded header */
};

/* Bytes of entry e's data; false if they overflow. */
static bool entry_bytes(const alloy_st_entry *e, size_t *out) {
    size_t numel = 1;
    for (int d = 0; d < e->ndim; d++)
        if (e->shape[d] < 0 || !alloy_mul_size(numel, (size_t)e->shape[d], &numel)) return false;
    return alloy_mul_size(numel, alloy_dtype_size(e->dtype), out);
}

/* The header's JSON for the entries (offsets one after another from 0) and *data_bytes, the
 * data it announces. cJSON_free the text. */
static alloy_status header_json(const char *path, const alloy_st_entry *e, int n, const char *const *meta,
                                char **text, size_t *data_bytes) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return ALLOY_STATUS_NOMEM;
    if (meta && meta[0]) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta[i] && meta[i + 1]; i += 2) cJSON_AddStringToObject(m, meta[i], meta[i + 1]);
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes;
        if (!entry_bytes(&e[i], &bytes) || offset > SIZE_MAX - bytes) {
            cJSON_Delete(root);
            return alloy_fail(ALLOY_STATUS_RANGE, "%s: the size overflows at tensor \"%s\"", path, e[i].name);
        }
        cJSON *t = cJSON_AddObjectToObject(root, e[i].name);
        cJSON_AddStringToObject(t, "dtype", alloy_dtype_name(e[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < e[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!*text) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot format the header", path);
    *data_bytes = offset;
    return ALLOY_STATUS_OK;
}

/* Writes the header's length, its text and the padding that aligns the data to 8 bytes. */
static alloy_status write_header(alloy_safetensors_writer *w, const char *text) {
    size_t len = strlen(text);
    size_t padded = (len + 7) / 8 * 8; // the data buffer starts 8-byte aligned
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    alloy_status s = alloy_atomic_write(&w->file, lenbuf, 8);
    if (!s) s = alloy_atomic_write(&w->file, text, len);
    if (!s) s = alloy_atomic_write(&w->file, "        ", padded - len);
    w->header_bytes = 8 + padded;
    return s;
}

static void writer_free(alloy_safetensors_writer *w) {
    alloy_free(w->path);
    alloy_free(w);
}

alloy_status alloy_safetensors_writer_open(alloy_safetensors_writer **out, const char *path,
                                           const alloy_st_entry *entries, int n, const char *const *meta) {
    *out = NULL;
    alloy_safetensors_writer *w = alloy_calloc(1, sizeof *w);
    if (!w) return ALLOY_STATUS_NOMEM;
    w->path = alloy_strdup(path);
    char *text = NULL;
    alloy_status s = w->path ? header_json(path, entries, n, meta, &text, &w->data_bytes) : ALLOY_STATUS_NOMEM;
    if (s) {
        writer_free(w);
        return s;
    }
    s = alloy_atomic_open(&w->file, path);
    if (s) {
        cJSON_free(text);
        writer_free(w);
        return s;
    }
    s = write_header(w, text);
    cJSON_free(text);
    if (s) {
        alloy_safetensors_writer_abort(w);
        return s;
    }
    *out = w;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_safetensors_writer_append(alloy_safetensors_writer *w, const void *data, size_t nbytes) {
    if (nbytes > w->data_bytes - w->appended)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: %zu bytes appended past the %zu bytes of the tensors", w->path,
                          w->appended + nbytes, w->data_bytes);
    alloy_status s = alloy_atomic_write(&w->file, data, nbytes);
    if (!s) w->appended += nbytes;
    return s;
}

alloy_status alloy_safetensors_writer_commit(alloy_safetensors_writer *w) {
    if (w->appended != w->data_bytes) {
        alloy_status s = alloy_fail(ALLOY_STATUS_USAGE, "%s: %zu of the tensors' %zu bytes written", w->path,
                                    w->appended, w->data_bytes);
        alloy_safetensors_writer_abort(w);
        return s;
    }
    alloy_status s = alloy_atomic_commit(&w->file);
    writer_free(w);
    return s;
}

void alloy_safetensors_writer_abort(alloy_safetensors_writer *w) {
    if (!w) return;
    alloy_atomic_abort(&w->file);
    writer_free(w);
}

size_t alloy_safetensors_writer_bytes(const alloy_safetensors_writer *w) { return w->header_bytes + w->appended; }

alloy_status alloy_safetensors_write(const char *path, const alloy_st_entry *e, int n, const char *const *meta) {
    alloy_safetensors_writer *w;
    alloy_status s = alloy_safetensors_writer_open(&w, path, e, n, meta);
    for (int i = 0; i < n && !s; i++) {
        size_t bytes;
        entry_bytes(&e[i], &bytes); // open checked it
        s = alloy_safetensors_writer_append(w, e[i].data, bytes);
    }
    if (s) {
        if (w) alloy_safetensors_writer_abort(w);
        return s;
    }
    return alloy_safetensors_writer_commit(w);
}
