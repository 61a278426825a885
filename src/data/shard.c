/*
 * shard.c — token shard files: a 64-byte header, then the tokens (format in alloy/data.h and
 * docs/formats.md). The reader validates the whole file at open, so the loader never meets a
 * bad token; the writer streams and publishes the file atomically at close.
 */
#include "alloy/data.h"

#include <string.h>

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

alloy_status alloy_shard_open(alloy_shard **out, const char *path) {
    *out = NULL;
    alloy_shard *s = alloy_calloc(1, sizeof *s);
    if (!s) return ALLOY_STATUS_NOMEM;
    s->path = alloy_strdup(path);
    alloy_status st = s->path ? alloy_file_map_open(&s->map, path) : ALLOY_STATUS_NOMEM;
    if (st) goto fail;
    const uint8_t *h = s->map.data;
    if (s->map.size < ALLOY_SHARD_HEADER) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: %zu bytes, too short for a token shard header (64)", path, s->map.size);
        goto fail;
    }
    if (memcmp(h, ALLOY_SHARD_MAGIC, 8) != 0) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a token shard (bad magic)", path);
        goto fail;
    }
    uint32_t version = rd32(h + 8), width = rd32(h + 12), hsize = rd32(h + 28);
    if (version != ALLOY_SHARD_VERSION) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: unsupported shard version %u (this alloy reads %d)", path, version,
                        ALLOY_SHARD_VERSION);
        goto fail;
    }
    if (width != 2 && width != 4) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token width %u bytes (expected 2 or 4)", path, width);
        goto fail;
    }
    if (hsize != ALLOY_SHARD_HEADER) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: header size %u (expected 64)", path, hsize);
        goto fail;
    }
    for (int i = 40; i < ALLOY_SHARD_HEADER; i++) {
        if (h[i]) {
            st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: reserved header bytes are not zero", path);
            goto fail;
        }
    }
    s->width = (int)width;
    s->count = rd64(h + 16);
    s->vocab_size = rd32(h + 24);
    s->checksum = rd64(h + 32);
    if (s->vocab_size == 0 || (width == 2 && s->vocab_size > 65536)) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocabulary size %u does not fit %u-byte tokens", path, s->vocab_size,
                        width);
        goto fail;
    }
    size_t body = s->map.size - ALLOY_SHARD_HEADER;
    if (s->count > body / width || s->count * width != body) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: header says %llu tokens (%llu bytes) but the file holds %zu bytes of tokens%s",
                        path, (unsigned long long)s->count, (unsigned long long)s->count * width, body,
                        s->count * width > body ? " (truncated?)" : "");
        goto fail;
    }
    s->tokens = h + ALLOY_SHARD_HEADER;
    if (alloy_fnv64(ALLOY_FNV64_INIT, s->tokens, body) != s->checksum) {
        st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: checksum mismatch (the tokens are corrupted)", path);
        goto fail;
    }
    for (uint64_t i = 0; i < s->count; i++) {
        uint32_t t = alloy_shard_token(s, i);
        if (t >= s->vocab_size) {
            st = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %u at index %llu is outside the vocabulary [0, %u)", path, t,
                            (unsigned long long)i, s->vocab_size);
            goto fail;
        }
    }
    *out = s;
    return ALLOY_STATUS_OK;
fail:
    alloy_shard_close(s);
    return st;
}

void alloy_shard_close(alloy_shard *s) {
    if (!s) return;
    alloy_file_map_close(&s->map);
    alloy_free(s->path);
    alloy_free(s);
}

alloy_status alloy_shard_writer_open(alloy_shard_writer *w, const char *path, uint32_t vocab_size) {
    memset(w, 0, sizeof *w);
    if (vocab_size == 0) return alloy_fail(ALLOY_STATUS_USAGE, "%s: vocabulary size must be positive", path);
    w->width = vocab_size <= 65536 ? 2 : 4;
    w->vocab_size = vocab_size;
    w->checksum = ALLOY_FNV64_INIT;
    alloy_status s = alloy_atomic_open(&w->file, path);
    if (s) return s;
    uint8_t zero[ALLOY_SHARD_HEADER] = {0}; // the real header is written at close
    s = alloy_atomic_write(&w->file, zero, sizeof zero);
    if (s) alloy_atomic_abort(&w->file);
    return s;
}

alloy_status alloy_shard_writer_add(alloy_shard_writer *w, const int32_t *tokens, size_t n) {
    uint8_t buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= w->vocab_size)
            return alloy_fail(ALLOY_STATUS_RANGE, "%s: token %d is outside the vocabulary [0, %u)", w->file.path,
                              tokens[i], w->vocab_size);
        uint32_t t = (uint32_t)tokens[i];
        for (int b = 0; b < w->width; b++) buf[k++] = (uint8_t)(t >> (8 * b));
        if (k + 4 > sizeof buf || i + 1 == n) {
            w->checksum = alloy_fnv64(w->checksum, buf, k);
            alloy_status s = alloy_atomic_write(&w->file, buf, k);
            if (s) return s;
            k = 0;
        }
    }
    w->count += n;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_shard_writer_close(alloy_shard_writer *w) {
    uint8_t h[ALLOY_SHARD_HEADER] = {0};
    memcpy(h, ALLOY_SHARD_MAGIC, 8);
    wr32(h + 8, ALLOY_SHARD_VERSION);
    wr32(h + 12, (uint32_t)w->width);
    wr64(h + 16, w->count);
    wr32(h + 24, w->vocab_size);
    wr32(h + 28, ALLOY_SHARD_HEADER);
    wr64(h + 32, w->checksum);
    if (fflush(w->file.fp) != 0 || fseek(w->file.fp, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->file.fp) != sizeof h) {
        alloy_status s = alloy_fail(ALLOY_STATUS_IO, "%s: cannot write the shard header", w->file.path);
        alloy_atomic_abort(&w->file);
        return s;
    }
    return alloy_atomic_commit(&w->file);
}

void alloy_shard_writer_abort(alloy_shard_writer *w) { alloy_atomic_abort(&w->file); }
