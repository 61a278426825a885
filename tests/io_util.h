/*
 * io_util.h — file helpers shared by test_safetensors.c and test_checkpoint.c.
 */
#ifndef ALLOY_TEST_IO_UTIL_H
#define ALLOY_TEST_IO_UTIL_H

#include "alloy/io.h"
#include "harness.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

/* ---- helpers ---------------------------------------------------------------------------- */

/* Writes a file in one go. Unlinks first: ext4 flushes a file truncated to zero and rewritten
 * when it is closed (auto_da_alloc), which makes thousands of rewrites slow. */
static inline void write_bytes(const char *path, const void *p, size_t n) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    if (n) ALLOY_ASSERT(fwrite(p, 1, n, f) == n);
    ALLOY_ASSERT(fclose(f) == 0);
}

/* A whole file in a malloc'd buffer (free it); NULL if unreadable. */
static inline uint8_t *read_bytes(const char *path, size_t *n) {
    char *text;
    if (alloy_file_read_all(path, &text, n) != ALLOY_STATUS_OK) return NULL;
    uint8_t *copy = malloc(*n ? *n : 1);
    memcpy(copy, text, *n);
    alloy_free(text);
    return copy;
}

static inline int same_file(const char *path, const uint8_t *want, size_t n) {
    size_t got_n;
    uint8_t *got = read_bytes(path, &got_n);
    int same = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

/* A safetensors image: the 8-byte length `len`, then `hdr` (hdr_len bytes), then data_len
 * bytes of data (0, 1, 2, ...). */
static inline void write_st(const char *path, uint64_t len, const char *hdr, size_t hdr_len, size_t data_len) {
    size_t n = 8 + hdr_len + data_len;
    uint8_t *buf = malloc(n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + 8, hdr, hdr_len);
    for (size_t i = 0; i < data_len; i++) buf[8 + hdr_len + i] = (uint8_t)i;
    write_bytes(path, buf, n);
    free(buf);
}

/* The error message is one line. */
static inline int one_line(void) { return strchr(alloy_last_error(), '\n') == NULL && alloy_last_error()[0] != '\0'; }

static inline char *copy_tmpdir(void) { return alloy_strdup(harness_tmpdir()); }

#endif
