/*
 * tokenizer.c — the tokenizer object: the byte tokenizer, building a byte-level BPE from its
 * parts (used by the file readers and the trainer), lookups, decode.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
#define JS_WS "\\t\\n\\x{0B}\\f\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
const char tok_gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" JS_WS "\\p{L}\\p{N}]+|[" JS_WS
                                "]+(?![^" JS_WS "])|[" JS_WS "]+";

alloy_status alloy_ids_reserve(alloy_ids *ids, size_t n) {
    if (n <= ids->cap) return ALLOY_STATUS_OK;
    size_t cap = ids->cap ? ids->cap : 256;
    while (cap < n) cap *= 2;
    int32_t *d = alloy_realloc(ids->data, ids->n * sizeof(int32_t), cap * sizeof(int32_t));
    if (!d) return ALLOY_STATUS_NOMEM;
    ids->data = d;
    ids->cap = cap;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ids_push(alloy_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        alloy_status s = alloy_ids_reserve(ids, ids->n + 1);
        if (s) return s;
    }
    ids->data[ids->n++] = id;
    return ALLOY_STATUS_OK;
}

void alloy_ids_free(alloy_ids *ids) {
    alloy_free(ids->data);
    memset(ids, 0, sizeof *ids);
}

/* Whether byte b stands for itself in the vocabulary form (printable Latin-1). */
static bool byte_printable(uint32_t b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }

/* GPT-2's bytes_to_unicode: the printable code point that stands for each byte in vocab files. */
static void byte_to_unicode(uint32_t table[256]) {
    // printable Latin-1 bytes stand for themselves; the rest map to 256, 257, ... in order
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; b++) table[b] = byte_printable(b) ? b : 256 + n++;
}

/* The byte that code point cp stands for in the vocabulary form, or -1: the inverse of
 * byte_to_unicode, whose other bytes are 0x00-0x20 (-> 256...288), 0x7F-0xA0 (-> 289...322)
 * and 0xAD (-> 323). */
static int byte_of_char(uint32_t cp) {
    if (cp < 256) return byte_printable(cp) ? (int)cp : -1;
    if (cp < 289) return (int)(cp - 256);
    if (cp < 323) return (int)(cp - 289 + 0x7F);
    return cp == 323 ? 0xAD : -1;
}

size_t alloy_bpe_bytes_to_vocab(const char *b, size_t n, char *out) {
    uint32_t table[256];
    byte_to_unicode(table);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = table[(uint8_t)b[i]];
        if (cp < 0x80) out[o++] = (char)cp;
        else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

bool alloy_bpe_vocab_to_bytes(const char *s, size_t n, char *out, size_t *out_n) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = alloy_utf8_decode(s + i, n - i, &cp);
        int b = k ? byte_of_char(cp) : -1;
        if (b < 0) return false;
        out[o++] = (char)b;
        i += k;
    }
    *out_n = o;
    return o > 0;
}

alloy_status alloy_tokenizer_create(alloy_tokenizer **out, const char *name) {
    *out = NULL;
    if (strcmp(name, "bytes") != 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "unknown tokenizer '%s' (a name: bytes; or a path)", name);
    alloy_tokenizer *t;
    alloy_status s = tok_init_bpe(&t, 256, name);
    for (int b = 0; b < 256 && !s; b++) {
        char c = (char)b;
        s = tok_set(t, b, &c, 1, false, name);
        t->byte_id[b] = b;
    }
    if (s) {
        alloy_tokenizer_destroy(t);
        return s;
    }
    t->kind = TOK_BYTES; // no merges, no pattern: every byte is its own token
    t->hash = alloy_fnv64(ALLOY_FNV64_INIT, "bytes", 5);
    *out = t;
    return ALLOY_STATUS_OK;
}

void alloy_tokenizer_destroy(alloy_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; t->bytes && i < t->n_tokens; i++) alloy_free(t->bytes[i]);
    alloy_free(t->bytes);
    alloy_free(t->len);
    alloy_free(t->flags);
    alloy_free(t->index);
    alloy_map64_free(&t->merges);
    alloy_free(t->merge_pairs);
    alloy_free(t->specials);
    alloy_free(t->pattern);
    if (t->re) pcre2_code_free(t->re);
    alloy_free(t);
}

const char *alloy_tokenizer_name(const alloy_tokenizer *t) { return t->kind == TOK_BYTES ? "bytes" : "bpe"; }
int alloy_tokenizer_vocab_size(const alloy_tokenizer *t) { return t->n_tokens; }
uint64_t alloy_tokenizer_hash(const alloy_tokenizer *t) { return t->hash; }
const char *alloy_tokenizer_pattern(const alloy_tokenizer *t) { return t->pattern; }
const char *alloy_tokenizer_gpt2_pattern(void) { return tok_gpt2_pattern; }
bool alloy_tokenizer_add_prefix_space(const alloy_tokenizer *t) { return t->add_prefix_space; }
int32_t alloy_tokenizer_n_merges(const alloy_tokenizer *t) { return t->n_merges; }

bool alloy_tokenizer_is_special(const alloy_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens && (t->flags[id] & TOKEN_SPECIAL);
}

bool alloy_tokenizer_merge(const alloy_tokenizer *t, int32_t rank, int32_t *left, int32_t *right) {
    if (rank < 0 || rank >= t->n_merges) return false;
    *left = t->merge_pairs[2 * rank];
    *right = t->merge_pairs[2 * rank + 1];
    return true;
}

const char *alloy_tokenizer_token(const alloy_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_tokens || !(t->flags[id] & TOKEN_USED)) return NULL;
    *len = t->len[id];
    return t->bytes[id];
}

int32_t alloy_tokenizer_special_id(const alloy_tokenizer *t, const char *text) {
    for (int i = 0; i < t->n_specials; i++) {
        int32_t id = t->specials[i];
        if (t->len[id] == strlen(text) && !memcmp(t->bytes[id], text, t->len[id])) return id;
    }
    return -1;
}

alloy_status alloy_tokenizer_decode(const alloy_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (!alloy_tokenizer_token(t, ids[i], &l))
            return alloy_fail(ALLOY_STATUS_RANGE, "token id %d at position %zu is outside the vocabulary [0, %d)", ids[i], i,
                              t->n_tokens);
        total += l;
    }
    char *s = alloy_malloc(total + 1);
    if (!s) return ALLOY_STATUS_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *b = alloy_tokenizer_token(t, ids[i], &l);
        memcpy(s + o, b, l);
        o += l;
    }
    s[o] = '\0';
    *text = s;
    if (len) *len = o;
    return ALLOY_STATUS_OK;
}

/* ---- building ---- */

static uint64_t bytes_hash(const char *b, size_t n) { return alloy_fnv64(ALLOY_FNV64_INIT, b, n); }

int32_t tok_lookup(const alloy_tokenizer *t, const char *b, size_t n) {
    if (!t->index_cap) return -1;
    size_t i = (size_t)bytes_hash(b, n) & (t->index_cap - 1);
    while (t->index[i] >= 0) {
        int32_t id = t->index[i];
        if (t->len[id] == n && !memcmp(t->bytes[id], b, n)) return id;
        i = (i + 1) & (t->index_cap - 1);
    }
    return -1;
}

alloy_status tok_init_bpe(alloy_tokenizer **out, int32_t n_tokens, const char *what) {
    *out = NULL;
    if (n_tokens < 256 || n_tokens > (1 << 24))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocabulary of %d tokens (a byte-level BPE needs 256 to 16777216)", what,
                          n_tokens);
    alloy_tokenizer *t = alloy_calloc(1, sizeof *t);
    if (!t) return ALLOY_STATUS_NOMEM;
    t->kind = TOK_BPE;
    t->n_tokens = n_tokens;
    t->bytes = alloy_calloc((size_t)n_tokens, sizeof *t->bytes);
    t->len = alloy_calloc((size_t)n_tokens, sizeof *t->len);
    t->flags = alloy_calloc((size_t)n_tokens, 1);
    if (!t->bytes || !t->len || !t->flags || alloy_map64_init(&t->merges, (size_t)n_tokens)) {
        alloy_tokenizer_destroy(t);
        return alloy_fail(ALLOY_STATUS_NOMEM, "%s: out of memory for %d tokens", what, n_tokens);
    }
    *out = t;
    return ALLOY_STATUS_OK;
}

alloy_status tok_set(alloy_tokenizer *t, int32_t id, const char *b, size_t n, bool special, const char *what) {
    if (id < 0 || id >= t->n_tokens)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: token id %d outside [0, %d)", what, id, t->n_tokens);
    if (t->flags[id] & TOKEN_USED) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: token id %d is given twice", what, id);
    if (n == 0 || n > 65536) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d has %zu bytes", what, id, n);
    t->bytes[id] = alloy_malloc(n);
    if (!t->bytes[id]) return ALLOY_STATUS_NOMEM;
    memcpy(t->bytes[id], b, n);
    t->len[id] = (uint32_t)n;
    t->flags[id] = (uint8_t)(TOKEN_USED | (special ? TOKEN_SPECIAL : 0));
    return ALLOY_STATUS_OK;
}

alloy_status tok_add_merge(alloy_tokenizer *t, int32_t left, int32_t right, const char *what) {
    if (t->n_merges == t->merges_cap) {
        int32_t cap = t->merges_cap ? 2 * t->merges_cap : 1024;
        int32_t *p = alloy_realloc(t->merge_pairs, sizeof(int32_t) * 2 * (size_t)t->merges_cap, sizeof(int32_t) * 2 * (size_t)cap);
        if (!p) return ALLOY_STATUS_NOMEM;
        t->merge_pairs = p;
        t->merges_cap = cap;
    }
    t->merge_pairs[2 * t->n_merges] = left;
    t->merge_pairs[2 * t->n_merges + 1] = right;
    t->n_merges++;
    (void)what;
    return ALLOY_STATUS_OK;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const alloy_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1; // longest first
    return x < y ? -1 : (x > y);
}

alloy_status tok_index(alloy_tokenizer *t, const char *what) {
    if (t->index_cap) return ALLOY_STATUS_OK;
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_tokens) cap *= 2;
    t->index = alloy_malloc(cap * sizeof(int32_t));
    t->specials = alloy_calloc((size_t)t->n_tokens, sizeof(int32_t));
    if (!t->index || !t->specials) return ALLOY_STATUS_NOMEM;
    memset(t->index, 0xff, cap * sizeof(int32_t));
    t->index_cap = cap;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    for (int32_t id = 0; id < t->n_tokens; id++) {
        if (!(t->flags[id] & TOKEN_USED)) continue;
        if (t->flags[id] & TOKEN_SPECIAL) {
            t->specials[t->n_specials++] = id;
            continue;
        }
        if (tok_lookup(t, t->bytes[id], t->len[id]) >= 0)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: two tokens have the same bytes (id %d and %d)", what,
                              tok_lookup(t, t->bytes[id], t->len[id]), id);
        size_t i = (size_t)bytes_hash(t->bytes[id], t->len[id]) & (cap - 1);
        while (t->index[i] >= 0) i = (i + 1) & (cap - 1);
        t->index[i] = id;
        if (t->len[id] == 1) t->byte_id[(uint8_t)t->bytes[id][0]] = id;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: no token for byte 0x%02x: not a byte-level vocabulary", what, b);
    qsort_r(t->specials, (size_t)t->n_specials, sizeof(int32_t), cmp_special, t);
    return ALLOY_STATUS_OK;
}

alloy_status tok_finish(alloy_tokenizer *t, const char *pattern, bool add_prefix_space, const char *what) {
    alloy_status st = tok_index(t, what);
    if (st) return st;
    // merges: (left, right) -> (rank, merged), where merged is the token of the joined bytes
    char buf[2 * 65536];
    for (int32_t r = 0; r < t->n_merges; r++) {
        int32_t a = t->merge_pairs[2 * r], b = t->merge_pairs[2 * r + 1];
        if (a < 0 || b < 0 || a >= t->n_tokens || b >= t->n_tokens || !(t->flags[a] & TOKEN_USED) ||
            !(t->flags[b] & TOKEN_USED) || (t->flags[a] & TOKEN_SPECIAL) || (t->flags[b] & TOKEN_SPECIAL))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %d joins tokens that are not in the vocabulary", what, r + 1);
        memcpy(buf, t->bytes[a], t->len[a]);
        memcpy(buf + t->len[a], t->bytes[b], t->len[b]);
        int32_t m = tok_lookup(t, buf, t->len[a] + t->len[b]);
        if (m < 0)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %d makes a token that is not in the vocabulary", what, r + 1);
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        if (alloy_map64_get(&t->merges, key, NULL)) continue; // a repeated merge keeps its first rank
        alloy_status s = alloy_map64_put(&t->merges, key, (uint64_t)(uint32_t)r << 32 | (uint32_t)m);
        if (s) return s;
    }
    // the pattern
    t->pattern = alloy_strdup(pattern ? pattern : tok_gpt2_pattern);
    if (!t->pattern) return ALLOY_STATUS_NOMEM;
    t->add_prefix_space = add_prefix_space;
    int err;
    PCRE2_SIZE erroff;
    t->re = pcre2_compile((PCRE2_SPTR)t->pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: pre-tokenizer regex does not compile at offset %zu: %s", what,
                          (size_t)erroff, (const char *)msg);
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
    // fingerprint
    uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, "bpe", 3);
    h = alloy_fnv64(h, t->pattern, strlen(t->pattern) + 1);
    h = alloy_fnv64(h, &t->add_prefix_space, 1);
    for (int32_t id = 0; id < t->n_tokens; id++) {
        h = alloy_fnv64(h, &t->flags[id], 1);
        h = alloy_fnv64(h, &t->len[id], sizeof t->len[id]);
        if (t->len[id]) h = alloy_fnv64(h, t->bytes[id], t->len[id]);
    }
    h = alloy_fnv64(h, t->merge_pairs, sizeof(int32_t) * 2 * (size_t)t->n_merges);
    t->hash = h;
    return ALLOY_STATUS_OK;
}

/* ---- the public builder: the steps above, with the source's name kept for messages ---- */

struct alloy_bpe_builder {
    alloy_tokenizer *t; /* the tokenizer being built; NULL once handed over */
    char *what;         /* the source, for error messages */
};

alloy_status alloy_bpe_builder_create(alloy_bpe_builder **out, int32_t n_tokens, const char *what) {
    *out = NULL;
    alloy_bpe_builder *b = alloy_calloc(1, sizeof *b);
    if (!b) return ALLOY_STATUS_NOMEM;
    b->what = alloy_strdup(what ? what : "tokenizer");
    alloy_status s = b->what ? tok_init_bpe(&b->t, n_tokens, b->what) : ALLOY_STATUS_NOMEM;
    if (s) {
        alloy_bpe_builder_destroy(b);
        return s;
    }
    *out = b;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_bpe_builder_set_token(alloy_bpe_builder *b, int32_t id, const char *bytes, size_t n, bool special) {
    return tok_set(b->t, id, bytes, n, special, b->what);
}

alloy_status alloy_bpe_builder_end_tokens(alloy_bpe_builder *b) { return tok_index(b->t, b->what); }

int32_t alloy_bpe_builder_lookup(const alloy_bpe_builder *b, const char *bytes, size_t n) {
    return tok_lookup(b->t, bytes, n);
}

alloy_status alloy_bpe_builder_add_merge(alloy_bpe_builder *b, int32_t left, int32_t right) {
    return tok_add_merge(b->t, left, right, b->what);
}

alloy_status alloy_bpe_builder_finish(alloy_bpe_builder *b, const char *pattern, bool add_prefix_space,
                                      alloy_tokenizer **out) {
    *out = NULL;
    alloy_status s = tok_finish(b->t, pattern, add_prefix_space, b->what);
    if (s) return s;
    *out = b->t;
    b->t = NULL;
    return ALLOY_STATUS_OK;
}

void alloy_bpe_builder_destroy(alloy_bpe_builder *b) {
    if (!b) return;
    alloy_tokenizer_destroy(b->t);
    alloy_free(b->what);
    alloy_free(b);
}
