/*
 * pack_util.h — compressed files for the tests of data readers (test_records.c, test_prepare.c,
 * test_align.c): gzip through zlib and zstd through libzstd, as the gzip and zstd commands
 * write them (a gzip header and trailer; a zstd frame with its checksum).
 */
#ifndef ALLOY_TEST_PACK_UTIL_H
#define ALLOY_TEST_PACK_UTIL_H

#include "harness.h"

#include <zlib.h>
#include <zstd.h>

/* One gzip member of data, malloc'ed into *out; returns its length. */
static inline size_t pack_gzip(const void *data, size_t n, uint8_t **out) {
    z_stream z;
    memset(&z, 0, sizeof z);
    ALLOY_ASSERT(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    size_t cap = deflateBound(&z, (uLong)n);
    *out = malloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    ALLOY_ASSERT(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t k = cap - z.avail_out;
    deflateEnd(&z);
    return k;
}

/* One zstd frame of data with its checksum, malloc'ed into *out; returns its length. */
static inline size_t pack_zstd(const void *data, size_t n, uint8_t **out) {
    size_t cap = ZSTD_compressBound(n);
    *out = malloc(cap);
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ALLOY_ASSERT(c && !ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1)));
    size_t k = ZSTD_compress2(c, *out, cap, data, n);
    ALLOY_ASSERT(!ZSTD_isError(k));
    ZSTD_freeCCtx(c);
    return k;
}

static inline void pack_write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    if (n) ALLOY_ASSERT(fwrite(data, 1, n, f) == n);
    ALLOY_ASSERT(fclose(f) == 0);
}

/* Writes text to path: 'g' gzip, 'z' zstd, anything else plain. */
static inline void pack_write(const char *path, const char *text, char how) {
    uint8_t *p = NULL;
    size_t n = how == 'g' ? pack_gzip(text, strlen(text), &p) : how == 'z' ? pack_zstd(text, strlen(text), &p) : 0;
    if (p) pack_write_bytes(path, p, n);
    else pack_write_bytes(path, text, strlen(text));
    free(p);
}

#endif /* ALLOY_TEST_PACK_UTIL_H */
