/*
 * alloc.c — the one allocation hook of liballoy.
 *
 * Every allocation is 64-byte aligned (cache lines, AVX-512 loads) and can be made to fail on
 * demand, so that tests exercise out-of-memory paths deterministically.
 */
#include "alloy/base.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALLOY_ALIGN 64

static long fail_countdown; /* 0: off; n: the n-th allocation from now fails (and all after) */

void alloy_alloc_fail_after(long n) { fail_countdown = n; }

static bool injected_failure(void) {
    if (fail_countdown <= 0) return false;
    if (fail_countdown == 1) return true; /* stays at 1: every later allocation fails too */
    fail_countdown--;
    return false;
}

bool alloy_mul_size(size_t a, size_t b, size_t *out) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}

void *alloy_malloc(size_t size) {
    if (size == 0) size = 1;
    if (injected_failure()) {
        alloy_fail(ALLOY_STATUS_NOMEM, "out of memory (injected) allocating %zu bytes", size);
        return NULL;
    }
    size_t rounded = (size + ALLOY_ALIGN - 1) / ALLOY_ALIGN * ALLOY_ALIGN;
    if (rounded < size) {
        alloy_fail(ALLOY_STATUS_NOMEM, "allocation of %zu bytes is too large", size);
        return NULL;
    }
    void *p = aligned_alloc(ALLOY_ALIGN, rounded);
    if (!p) alloy_fail(ALLOY_STATUS_NOMEM, "out of memory allocating %zu bytes", size);
    return p;
}

void *alloy_calloc(size_t count, size_t size) {
    size_t total;
    if (!alloy_mul_size(count, size, &total)) {
        alloy_fail(ALLOY_STATUS_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
        return NULL;
    }
    void *p = alloy_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void *alloy_realloc(void *ptr, size_t old_size, size_t new_size) {
    void *p = alloy_malloc(new_size);
    if (!p) return NULL;
    if (ptr) {
        memcpy(p, ptr, old_size < new_size ? old_size : new_size);
        free(ptr);
    }
    return p;
}

void alloy_free(void *ptr) { free(ptr); }

char *alloy_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = alloy_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* ---- page arenas ------------------------------------------------------------------------- */

#define HUGE_PAGE ((size_t)2 << 20)

void *alloy_pages_alloc(size_t size) {
    if (size == 0) size = 1;
    if (injected_failure()) {
        alloy_fail(ALLOY_STATUS_NOMEM, "out of memory (injected) allocating %zu bytes", size);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        alloy_fail(ALLOY_STATUS_NOMEM, "out of memory mapping %zu bytes", size);
        return NULL;
    }
    if (size >= HUGE_PAGE) (void)madvise(p, size, MADV_HUGEPAGE); // advice only: fine if refused
    return p;
}

void alloy_pages_free(void *ptr, size_t size) {
    if (ptr) munmap(ptr, size ? size : 1);
}

void alloy_pages_discard(void *ptr, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)ptr + page - 1) / page * page, end = ((uintptr_t)ptr + size) / page * page;
    if (end > begin) (void)madvise((void *)begin, end - begin, MADV_DONTNEED);
}
