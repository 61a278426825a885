/*
 * utf8.c — UTF-8 validation and repair.
 *
 * Text from files is bytes; the tokenizer's regex and the normaliser need valid UTF-8. The
 * rule everywhere in alloy: each invalid sequence becomes U+FFFD, by maximal subparts (Unicode
 * §3.9, "U+FFFD Substitution of Maximal Subparts"), which is what JavaScript's TextDecoder and
 * Python's errors="replace" do — so our tokens match js-tiktoken's on the same file.
 */
#include "alloy/base.h"

#include <string.h>

/* The valid range of the second byte after lead byte b (the later ones are 80..BF). */
static void second_range(uint8_t b, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (b == 0xE0) *lo = 0xA0;
    else if (b == 0xED) *hi = 0x9F;
    else if (b == 0xF0) *lo = 0x90;
    else if (b == 0xF4) *hi = 0x8F;
}

/* Bytes in the sequence that lead byte b starts: 1 for ASCII, 2..4, or 0 if b cannot lead. */
static int seq_len(uint8_t b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* How many bytes at s form a valid character (1..4), or, if invalid, -(length of the maximal
 * subpart to replace, at least 1). */
static int scan(const uint8_t *s, size_t n) {
    int len = seq_len(s[0]);
    if (len == 1) return 1;
    if (len == 0) return -1;
    uint8_t lo, hi;
    second_range(s[0], &lo, &hi);
    for (int k = 1; k < len; k++) {
        if ((size_t)k >= n) return -k; // truncated: the part present is one maximal subpart
        uint8_t c = s[k];
        bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) return -k; // replace what came before; c starts afresh
    }
    return len;
}

size_t alloy_utf8_valid_prefix(const char *str, size_t n) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) { // ASCII run
            i++;
            continue;
        }
        int k = scan(s + i, n - i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

size_t alloy_utf8_repair(const char *str, size_t n, char *out, size_t *replaced) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, o = 0, r = 0;
    while (i < n) {
        size_t v = alloy_utf8_valid_prefix(str + i, n - i); // copy valid runs whole
        memcpy(out + o, s + i, v);
        o += v;
        i += v;
        if (i >= n) break;
        int k = scan(s + i, n - i);
        memcpy(out + o, "\xEF\xBF\xBD", 3);
        o += 3;
        r++;
        i += (size_t)(-k);
    }
    if (replaced) *replaced = r;
    return o;
}

size_t alloy_utf8_decode(const char *str, size_t n, uint32_t *cp) {
    const uint8_t *s = (const uint8_t *)str;
    int k = scan(s, n);
    if (k <= 0) return 0;
    switch (k) {
    case 1: *cp = s[0]; break;
    case 2: *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F); break;
    case 3: *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F); break;
    default: *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    }
    return (size_t)k;
}
