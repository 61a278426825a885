/*
 * normalize.c — text cleaning before dedup and tokenizing: UTF-8 repair, line ends, control
 * characters, then NFC or NFKC through utf8proc.
 *
 * The order matters and is the one in alloy/dedup.h: repair first (so every later step sees
 * valid UTF-8 and never splits a character), then line ends and controls in one in-place pass,
 * then the normal form. utf8proc_map would allocate with malloc; we size and own its buffers
 * ourselves (through alloy_malloc, so out-of-memory tests reach every path) by calling
 * utf8proc_decompose and utf8proc_reencode, the two halves of utf8proc_map.
 */
#include "alloy/dedup.h"

#include <limits.h>
#include <string.h>
#include <utf8proc.h>

/* Step 2 and 3 in place over valid UTF-8 (s[0..n)), writing at or before where it reads.
 * Returns the new length; *max_byte gets the largest byte kept (to skip step 4 when it
 * cannot change anything). */
static size_t clean_lines_controls(char *str, size_t n, alloy_norm_stats *st, unsigned *max_byte) {
    uint8_t *s = (uint8_t *)str;
    size_t o = 0;
    unsigned mx = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = s[i];
        if (b >= 0x20 && b != 0x7F && b != 0xC2) { // the common case: text
            s[o++] = b;
            if (b > mx) mx = b;
            continue;
        }
        if (b == '\r') {
            st->line_ends_converted++;
            if (i + 1 < n && s[i + 1] == '\n') continue; // CR LF: the LF follows
            s[o++] = '\n';
        } else if (b == '\t' || b == '\n') {
            s[o++] = b;
        } else if (b == 0xC2) {
            // valid UTF-8, so a continuation byte follows; C2 80..C2 9F is U+0080..U+009F (C1)
            if (s[i + 1] <= 0x9F) {
                st->controls_removed++;
                i++;
                continue;
            }
            s[o++] = b;
            if (b > mx) mx = b;
        } else {
            st->controls_removed++; // C0 other than TAB/LF/CR, or DEL
        }
    }
    *max_byte = mx;
    return o;
}

/* A growing output buffer and the code-point scratch that utf8proc works in. */
typedef struct form_state {
    char *out;                 /* (cap) the result so far */
    size_t n, cap;             /* bytes used, allocated */
    utf8proc_int32_t *cps;     /* (cps_cap + 1) decomposition of one segment; reencoded in place */
    size_t cps_cap;            /* code points it holds */
    utf8proc_option_t opts;    /* STABLE | COMPOSE [| COMPAT] */
} form_state;

static alloy_status append(form_state *f, const void *p, size_t len) {
    if (len > f->cap - f->n) {
        size_t nc = f->cap;
        while (len > nc - f->n) {
            if (nc > SIZE_MAX / 2) return alloy_fail(ALLOY_STATUS_NOMEM, "normalize: output too large");
            nc *= 2;
        }
        char *q = alloy_realloc(f->out, f->n, nc);
        if (!q) return ALLOY_STATUS_NOMEM;
        f->out = q;
        f->cap = nc;
    }
    memcpy(f->out + f->n, p, len);
    f->n += len;
    return ALLOY_STATUS_OK;
}

/* Makes f->cps hold at least `want` code points (and the NUL reencode writes after them). */
static alloy_status reserve_cps(form_state *f, size_t want) {
    if (f->cps_cap >= want) return ALLOY_STATUS_OK;
    if (want < 2 * f->cps_cap) want = 2 * f->cps_cap;
    size_t bytes;
    if (want > (size_t)(SSIZE_MAX / 16) || !alloy_mul_size(want + 1, sizeof(utf8proc_int32_t), &bytes))
        return alloy_fail(ALLOY_STATUS_NOMEM, "normalize: a piece of %zu code points is too large", want);
    utf8proc_int32_t *q = alloy_malloc(bytes);
    if (!q) return ALLOY_STATUS_NOMEM;
    alloy_free(f->cps);
    f->cps = q;
    f->cps_cap = want;
    return ALLOY_STATUS_OK;
}

/* Appends the normal form of one piece s[0..len) (valid UTF-8, no NUL). */
static alloy_status append_normalized(form_state *f, const char *s, size_t len) {
    alloy_status st = reserve_cps(f, len); // usually enough: at most one code point per byte
    if (st != ALLOY_STATUS_OK) return st;
    utf8proc_ssize_t m = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, f->cps,
                                            (utf8proc_ssize_t)f->cps_cap, f->opts);
    if (m > (utf8proc_ssize_t)f->cps_cap) { // NFKC of U+FDFA is 18 code points: grow, decompose again
        if ((st = reserve_cps(f, (size_t)m)) != ALLOY_STATUS_OK) return st;
        m = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, f->cps, (utf8proc_ssize_t)f->cps_cap,
                               f->opts);
    }
    if (m >= 0) m = utf8proc_reencode(f->cps, m, f->opts); // composes, then UTF-8 in place
    if (m < 0) // cannot happen on valid UTF-8 with these options; say what utf8proc said if it does
        return alloy_fail(ALLOY_STATUS_INTERNAL, "normalize: utf8proc: %s", utf8proc_errmsg(m));
    return append(f, f->cps, (size_t)m);
}

/* Step 4: the normal form of valid UTF-8 s[0..n) (no NULs) into a new buffer *out (*out_n
 * bytes, NUL-terminated).
 * The text is cut before ASCII characters: pure ASCII is copied, and each run of non-ASCII
 * bytes goes through utf8proc as one piece together with the ASCII character before it (a mark
 * may compose with that letter). That is exact: an ASCII character is a starter and is never
 * the second of a composition pair, so no decomposition, reordering or composition reaches
 * across a cut before it (the fuzz test checks this against utf8proc on whole strings).
 * Under NFC a piece below U+0300 (all bytes < 0xCC) is copied too: every character there is
 * already composed (NFC_QC=Yes) and none can combine, the first combining mark being U+0300. */
static alloy_status apply_form(const char *s, size_t n, alloy_norm_form form, char **out, size_t *out_n) {
    form_state f = {.opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE};
    if (form == ALLOY_NORM_NFKC) f.opts |= UTF8PROC_COMPAT;
    f.cap = n + n / 8 + 16;
    f.out = alloy_malloc(f.cap);
    if (!f.out) return ALLOY_STATUS_NOMEM;
    const uint8_t *u = (const uint8_t *)s;
    alloy_status st = ALLOY_STATUS_OK;
    size_t i = 0;
    while (i < n && st == ALLOY_STATUS_OK) {
        size_t j = i;
        while (j < n && u[j] < 0x80) j++;
        if (j == n) { // ASCII to the end
            st = append(&f, s + i, n - i);
            break;
        }
        size_t piece = j > i ? j - 1 : j; // the piece takes the ASCII character before the run
        if (piece > i) st = append(&f, s + i, piece - i);
        size_t k = j;
        unsigned mx = 0;
        while (k < n && u[k] >= 0x80) mx = u[k] > mx ? u[k] : mx, k++;
        if (st != ALLOY_STATUS_OK) break;
        if (form == ALLOY_NORM_NFC && mx < 0xCC) st = append(&f, s + piece, k - piece);
        else st = append_normalized(&f, s + piece, k - piece);
        i = k;
    }
    if (st == ALLOY_STATUS_OK) st = append(&f, "", 1);
    alloy_free(f.cps);
    if (st != ALLOY_STATUS_OK) {
        alloy_free(f.out);
        return st;
    }
    *out = f.out;
    *out_n = f.n - 1;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_normalize(const char *in, size_t n, alloy_norm_form form, char **out, size_t *out_n,
                             alloy_norm_stats *stats) {
    alloy_norm_stats st = {0};
    if (stats) *stats = st;
    if (!out || !out_n) return alloy_fail(ALLOY_STATUS_USAGE, "normalize: out and out_n must not be NULL");
    *out = NULL;
    *out_n = 0;
    if (!in && n > 0) return alloy_fail(ALLOY_STATUS_USAGE, "normalize: text is NULL but n is %zu", n);
    if (form != ALLOY_NORM_NONE && form != ALLOY_NORM_NFC && form != ALLOY_NORM_NFKC)
        return alloy_fail(ALLOY_STATUS_USAGE, "normalize: unknown normal form %d (none, nfc, nfkc)", (int)form);

    // Step 1: valid text (the common case) is copied as is; otherwise repaired into 3·n bytes.
    size_t valid = n ? alloy_utf8_valid_prefix(in, n) : 0;
    size_t cap = n + 1;
    if (valid < n && (!alloy_mul_size(n, 3, &cap) || ++cap == 0))
        return alloy_fail(ALLOY_STATUS_NOMEM, "normalize: text of %zu bytes is too large to repair", n);
    char *buf = alloy_malloc(cap);
    if (!buf) return ALLOY_STATUS_NOMEM;
    size_t len;
    if (valid == n) {
        if (n) memcpy(buf, in, n);
        len = n;
    } else {
        len = alloy_utf8_repair(in, n, buf, &st.invalid_replaced);
    }

    // Steps 2 and 3.
    unsigned max_byte = 0;
    len = clean_lines_controls(buf, len, &st, &max_byte);
    buf[len] = '\0';

    // Step 4, unless it cannot change anything: ASCII is fixed by every form, and text below
    // U+0300 (all bytes < 0xCC) by NFC: every character there is already composed (NFC_QC=Yes)
    // and none can combine with a neighbour, the first combining mark being U+0300.
    bool skip = form == ALLOY_NORM_NONE || max_byte < 0x80 || (form == ALLOY_NORM_NFC && max_byte < 0xCC);
    if (!skip) {
        char *res = NULL;
        size_t res_n = 0;
        alloy_status s = apply_form(buf, len, form, &res, &res_n);
        alloy_free(buf);
        if (s != ALLOY_STATUS_OK) return s;
        buf = res;
        len = res_n;
    } else if (len + 1 < cap / 2) { // repair made room for 3·n: give the slack back
        char *tight = alloy_malloc(len + 1);
        if (!tight) {
            alloy_free(buf);
            return ALLOY_STATUS_NOMEM;
        }
        memcpy(tight, buf, len + 1);
        alloy_free(buf);
        buf = tight;
    }
    *out = buf;
    *out_n = len;
    if (stats) *stats = st;
    return ALLOY_STATUS_OK;
}
