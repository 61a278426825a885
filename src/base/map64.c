/*
 * map64.c — a hash map from 64-bit keys to 64-bit values (open addressing, linear probing,
 * load at most 1/2). Used for BPE merge tables and counts, where keys are packed id pairs.
 */
#include "alloy/base.h"

#include <string.h>

#define EMPTY UINT64_MAX

static inline size_t slot_of(uint64_t key, size_t cap) {
    key ^= key >> 33; // murmur3 finaliser: pair keys are far from random
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ULL;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

alloy_status alloy_map64_init(alloy_map64 *m, size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected + 2) {
        if (cap > ((size_t)1 << 60)) return alloy_fail(ALLOY_STATUS_NOMEM, "hash map of %zu keys is too large", expected);
        cap *= 2;
    }
    m->keys = alloy_malloc(cap * sizeof(uint64_t));
    m->vals = alloy_malloc(cap * sizeof(uint64_t));
    if (!m->keys || !m->vals) {
        alloy_free(m->keys);
        alloy_free(m->vals);
        m->keys = m->vals = NULL;
        return ALLOY_STATUS_NOMEM;
    }
    memset(m->keys, 0xff, cap * sizeof(uint64_t));
    m->cap = cap;
    m->count = 0;
    return ALLOY_STATUS_OK;
}

void alloy_map64_free(alloy_map64 *m) {
    alloy_free(m->keys);
    alloy_free(m->vals);
    memset(m, 0, sizeof *m);
}

void alloy_map64_clear(alloy_map64 *m) {
    if (m->keys) memset(m->keys, 0xff, m->cap * sizeof(uint64_t));
    m->count = 0;
}

static alloy_status grow(alloy_map64 *m) {
    alloy_map64 bigger;
    alloy_status s = alloy_map64_init(&bigger, m->cap); // doubles the capacity
    if (s) return s;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == EMPTY) continue;
        size_t j = slot_of(m->keys[i], bigger.cap);
        while (bigger.keys[j] != EMPTY) j = (j + 1) & (bigger.cap - 1);
        bigger.keys[j] = m->keys[i];
        bigger.vals[j] = m->vals[i];
    }
    bigger.count = m->count;
    alloy_map64_free(m);
    *m = bigger;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_map64_put(alloy_map64 *m, uint64_t key, uint64_t val) {
    ALLOY_ASSERT(key != EMPTY && m->cap > 0);
    if (2 * (m->count + 1) > m->cap) {
        alloy_status s = grow(m);
        if (s) return s;
    }
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != EMPTY && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    if (m->keys[i] == EMPTY) {
        m->keys[i] = key;
        m->count++;
    }
    m->vals[i] = val;
    return ALLOY_STATUS_OK;
}

bool alloy_map64_get(const alloy_map64 *m, uint64_t key, uint64_t *val) {
    if (!m->cap) return false;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != EMPTY) {
        if (m->keys[i] == key) {
            if (val) *val = m->vals[i];
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return false;
}
