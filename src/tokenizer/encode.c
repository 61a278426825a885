/*
 * encode.c — byte-level BPE encoding: the pre-tokenizer (PCRE2, JIT), the merge loop, a cache
 * of encoded pieces, special tokens, and parallel encoding of large texts.
 *
 * Merges follow tiktoken and Hugging Face: within a piece, repeatedly join the adjacent pair of
 * lowest rank, leftmost first among equal ranks. Short pieces scan an array of pair ranks; long
 * ones (runs of spaces or digits can be megabytes) use a heap, so no piece costs more than
 * O(n log n).
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CACHE_MAX_PIECE 128        /* longer pieces are not cached */
#define CACHE_MAX_SLOTS (1u << 18) /* the cache is emptied when it holds this many pieces */
#define CACHE_MIN_TABLE 1024u      /* slots of a new encoder's table; it doubles up to 2·MAX */
#define SCAN_MAX 48                /* pieces up to this many bytes merge by scanning */

typedef struct cache_slot {
    uint64_t hash;      /* of the piece; 0 marks an empty slot */
    uint32_t piece_off; /* into pieces */
    uint32_t piece_len;
    uint32_t ids_off;   /* into cids */
    uint32_t n_ids;
} cache_slot;

struct alloy_encoder {
    const alloy_tokenizer *tok;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    bool jit;
    char *buf;              /* repaired text (and the prefix space) */
    size_t buf_cap;
    cache_slot *slots;      /* (n_table) open addressing, at most half full */
    size_t n_table;         /* a power of two, CACHE_MIN_TABLE .. 2·CACHE_MAX_SLOTS: a short text
                               (a chat message) need not clear megabytes */
    size_t n_slots;         /* used */
    char *pieces;           /* cached piece bytes */
    size_t pieces_n, pieces_cap;
    int32_t *cids;          /* cached ids */
    size_t cids_n, cids_cap;
    int32_t *sym, *nxt, *prv, *rank; /* merge scratch, (scratch_cap) each */
    uint64_t *heap;         /* (2 · scratch_cap) rank << 32 | position */
    size_t scratch_cap;
};

static bool grow_buf(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = alloy_realloc(*p, *cap * elem, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

alloy_status alloy_encoder_create(alloy_encoder **out, const alloy_tokenizer *tok) {
    *out = NULL;
    alloy_encoder *e = alloy_calloc(1, sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    e->tok = tok;
    if (tok->kind == TOK_BPE) {
        e->md = pcre2_match_data_create(1, NULL);
        e->mctx = pcre2_match_context_create(NULL);
        e->jstack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
        e->n_table = CACHE_MIN_TABLE;
        e->slots = alloy_calloc(e->n_table, sizeof *e->slots);
        if (!e->md || !e->mctx || !e->jstack || !e->slots) {
            alloy_encoder_destroy(e);
            return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory creating an encoder");
        }
        pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
        size_t jit_size = 0;
        e->jit = pcre2_pattern_info(tok->re, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size > 0;
    }
    *out = e;
    return ALLOY_STATUS_OK;
}

void alloy_encoder_destroy(alloy_encoder *e) {
    if (!e) return;
    if (e->md) pcre2_match_data_free(e->md);
    if (e->mctx) pcre2_match_context_free(e->mctx);
    if (e->jstack) pcre2_jit_stack_free(e->jstack);
    alloy_free(e->buf);
    alloy_free(e->slots);
    alloy_free(e->pieces);
    alloy_free(e->cids);
    alloy_free(e->sym);
    alloy_free(e->nxt);
    alloy_free(e->prv);
    alloy_free(e->rank);
    alloy_free(e->heap);
    alloy_free(e);
}

/* The rank of joining tokens a and b, or INT_MAX; *merged gets the result. */
static inline int32_t pair_rank(const alloy_tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    uint64_t v;
    if (!alloy_map64_get(&t->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b, &v)) return INT_MAX;
    *merged = (int32_t)(uint32_t)v;
    return (int32_t)(v >> 32);
}

/* ---- the heap of candidate merges: (rank, position), smallest first ---- */

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Merges the n byte tokens of a piece; appends the result to ids. */
static alloy_status merge_piece(alloy_encoder *e, const uint8_t *p, size_t n, alloy_ids *ids) {
    const alloy_tokenizer *t = e->tok;
    if (n > e->scratch_cap) { // all five scratch arrays grow together
        size_t cap = e->scratch_cap ? e->scratch_cap : 64;
        while (cap < n) cap *= 2;
        int32_t **arrs[4] = {&e->sym, &e->nxt, &e->prv, &e->rank};
        for (int k = 0; k < 4; k++) {
            int32_t *q = alloy_realloc(*arrs[k], 0, cap * sizeof(int32_t));
            if (!q) return ALLOY_STATUS_NOMEM;
            *arrs[k] = q;
        }
        // the heap starts with at most n-1 pairs; each merge pops one and pushes at most two
        uint64_t *h = alloy_realloc(e->heap, 0, 2 * cap * sizeof(uint64_t));
        if (!h) return ALLOY_STATUS_NOMEM;
        e->heap = h;
        e->scratch_cap = cap;
    }
    int32_t *sym = e->sym, *nxt = e->nxt, *prv = e->prv, *rank = e->rank;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[p[i]];
        nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    int32_t merged;
    for (size_t i = 0; i + 1 < n; i++) rank[i] = pair_rank(t, sym[i], sym[i + 1], &merged);
    rank[n - 1] = INT_MAX;
    if (n <= SCAN_MAX) {
        for (;;) {
            int32_t best = -1, best_rank = INT_MAX;
            for (int32_t i = 0; i >= 0; i = nxt[i])
                if (rank[i] < best_rank) {
                    best_rank = rank[i];
                    best = i;
                }
            if (best < 0) break;
            int32_t r = nxt[best];
            pair_rank(t, sym[best], sym[r], &sym[best]);
            nxt[best] = nxt[r];
            if (nxt[r] >= 0) prv[nxt[r]] = best;
            rank[best] = nxt[best] >= 0 ? pair_rank(t, sym[best], sym[nxt[best]], &merged) : INT_MAX;
            if (prv[best] >= 0) rank[prv[best]] = pair_rank(t, sym[prv[best]], sym[best], &merged);
        }
    } else {
        uint64_t *h = e->heap;
        size_t hn = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (rank[i] != INT_MAX) heap_push(h, &hn, (uint64_t)(uint32_t)rank[i] << 32 | i);
        while (hn > 0) {
            uint64_t top = heap_pop(h, &hn);
            int32_t rk = (int32_t)(top >> 32), i = (int32_t)(uint32_t)top;
            if (rank[i] != rk) continue; // stale: the pair at i has changed (or i is gone)
            int32_t r = nxt[i];
            pair_rank(t, sym[i], sym[r], &sym[i]);
            rank[r] = -1; // r is gone
            nxt[i] = nxt[r];
            if (nxt[r] >= 0) prv[nxt[r]] = i;
            rank[i] = nxt[i] >= 0 ? pair_rank(t, sym[i], sym[nxt[i]], &merged) : INT_MAX;
            if (rank[i] != INT_MAX) heap_push(h, &hn, (uint64_t)(uint32_t)rank[i] << 32 | (uint32_t)i);
            int32_t l = prv[i];
            if (l >= 0) {
                rank[l] = pair_rank(t, sym[l], sym[i], &merged);
                if (rank[l] != INT_MAX) heap_push(h, &hn, (uint64_t)(uint32_t)rank[l] << 32 | (uint32_t)l);
            }
        }
    }
    for (int32_t i = 0; i >= 0; i = nxt[i]) {
        alloy_status s = alloy_ids_push(ids, sym[i]);
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

static void cache_clear(alloy_encoder *e) {
    memset(e->slots, 0, e->n_table * sizeof *e->slots);
    e->n_slots = e->pieces_n = e->cids_n = 0;
}

/* The free slot for hash h in the table. */
static size_t cache_free_slot(const alloy_encoder *e, uint64_t h) {
    size_t mask = e->n_table - 1, i = (size_t)(h >> 7) & mask;
    while (e->slots[i].hash) i = (i + 1) & mask;
    return i;
}

/* Room for one more piece: the table doubles while it may, then the cache empties (also when
 * the offsets would overflow). False: no room to cache (the piece is simply not cached). */
static bool cache_make_room(alloy_encoder *e, size_t n, size_t k) {
    if (e->pieces_n + n > UINT32_MAX / 2 || e->cids_n + k > UINT32_MAX / 2) cache_clear(e);
    if (2 * (e->n_slots + 1) <= e->n_table) return true;
    if (e->n_table >= 2 * CACHE_MAX_SLOTS) {
        cache_clear(e);
        return true;
    }
    cache_slot *old = e->slots;
    size_t n_old = e->n_table;
    cache_slot *nt = alloy_calloc(2 * n_old, sizeof *nt);
    if (!nt) return false;
    e->slots = nt;
    e->n_table = 2 * n_old;
    for (size_t j = 0; j < n_old; j++)
        if (old[j].hash) e->slots[cache_free_slot(e, old[j].hash)] = old[j];
    alloy_free(old);
    return true;
}

/* Encodes one piece (through the cache), appending to ids. */
static alloy_status encode_piece(alloy_encoder *e, const char *p, size_t n, alloy_ids *ids) {
    const alloy_tokenizer *t = e->tok;
    if (n == 1) return alloy_ids_push(ids, t->byte_id[(uint8_t)p[0]]);
    if (n > CACHE_MAX_PIECE) return merge_piece(e, (const uint8_t *)p, n, ids);
    uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, p, n) | 1; // never 0: 0 marks empty slots
    size_t mask = e->n_table - 1, i = (size_t)(h >> 7) & mask;
    while (e->slots[i].hash) {
        cache_slot *c = &e->slots[i];
        if (c->hash == h && c->piece_len == n && !memcmp(e->pieces + c->piece_off, p, n)) {
            alloy_status s = alloy_ids_reserve(ids, ids->n + c->n_ids);
            if (s) return s;
            memcpy(ids->data + ids->n, e->cids + c->ids_off, c->n_ids * sizeof(int32_t));
            ids->n += c->n_ids;
            return ALLOY_STATUS_OK;
        }
        i = (i + 1) & mask;
    }
    size_t before = ids->n;
    alloy_status s = merge_piece(e, (const uint8_t *)p, n, ids);
    if (s) return s;
    size_t k = ids->n - before;
    if (!cache_make_room(e, n, k)) return ALLOY_STATUS_OK; // the result stands anyway
    i = cache_free_slot(e, h);
    if (!grow_buf((void **)&e->pieces, &e->pieces_cap, e->pieces_n + n, 1) ||
        !grow_buf((void **)&e->cids, &e->cids_cap, e->cids_n + k, sizeof(int32_t)))
        return ALLOY_STATUS_OK; // no room to cache: the result stands anyway
    memcpy(e->pieces + e->pieces_n, p, n);
    memcpy(e->cids + e->cids_n, ids->data + before, k * sizeof(int32_t));
    e->slots[i] = (cache_slot){h, (uint32_t)e->pieces_n, (uint32_t)n, (uint32_t)e->cids_n, (uint32_t)k};
    e->pieces_n += n;
    e->cids_n += k;
    e->n_slots++;
    return ALLOY_STATUS_OK;
}

/* Splits valid UTF-8 text into pieces with the pattern and encodes each. Text between matches
 * (a pattern need not cover everything) is a piece of its own. */
static alloy_status encode_ordinary(alloy_encoder *e, const char *text, size_t n, alloy_ids *ids) {
    const alloy_tokenizer *t = e->tok;
    if (t->kind == TOK_BYTES) {
        alloy_status s = alloy_ids_reserve(ids, ids->n + n);
        if (s) return s;
        for (size_t i = 0; i < n; i++) ids->data[ids->n++] = (uint8_t)text[i];
        return ALLOY_STATUS_OK;
    }
    size_t off = 0;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    while (off < n) {
        int rc = e->jit ? pcre2_jit_match(t->re, (PCRE2_SPTR)text, n, off, 0, e->md, e->mctx)
                        : pcre2_match(t->re, (PCRE2_SPTR)text, n, off, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return encode_piece(e, text + off, n - off, ids);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return alloy_fail(ALLOY_STATUS_INTERNAL, "pre-tokenizer failed at byte %zu: %s", off, (const char *)msg);
        }
        size_t start = ov[0], end = ov[1];
        alloy_status s = ALLOY_STATUS_OK;
        if (start > off) s = encode_piece(e, text + off, start - off, ids);
        if (!s && end == start) { // an empty match: take one character as a piece and move on
            uint32_t cp;
            size_t cl = alloy_utf8_decode(text + start, n - start, &cp);
            end = start + (cl ? cl : 1);
            if (end > n) end = n;
        }
        if (!s) s = encode_piece(e, text + start, end - start, ids);
        if (s) return s;
        off = end;
    }
    return ALLOY_STATUS_OK;
}

/* The earliest special token in text[0, n), or NULL. */
static const char *find_special(const alloy_tokenizer *t, const char *text, size_t n, int32_t *id) {
    const char *best = NULL;
    for (int i = 0; i < t->n_specials; i++) { // longest first: at equal positions the longest wins
        int32_t sid = t->specials[i];
        const char *at = memmem(text, best ? (size_t)(best - text) + t->len[sid] - 1 : n, t->bytes[sid], t->len[sid]);
        if (at && at < text + n && (!best || at < best)) {
            best = at;
            *id = sid;
        }
    }
    return best;
}

static alloy_status encode_impl(alloy_encoder *e, const char *text, size_t n, unsigned flags, bool at_start,
                                alloy_ids *ids) {
    const alloy_tokenizer *t = e->tok;
    if (t->kind == TOK_BYTES) return encode_ordinary(e, text, n, ids); // bytes are bytes: no repair
    bool prefix = at_start && t->add_prefix_space && !(n > 0 && text[0] == ' ');
    if (alloy_utf8_valid_prefix(text, n) != n || prefix) { // repair into the buffer
        if (!grow_buf((void **)&e->buf, &e->buf_cap, 3 * n + 2, 1)) return ALLOY_STATUS_NOMEM;
        size_t o = 0;
        if (prefix) e->buf[o++] = ' ';
        o += alloy_utf8_repair(text, n, e->buf + o, NULL);
        text = e->buf;
        n = o;
    }
    if (!(flags & ALLOY_ENCODE_ALLOW_SPECIAL) || t->n_specials == 0) return encode_ordinary(e, text, n, ids);
    while (n > 0) {
        int32_t sid = -1;
        const char *at = find_special(t, text, n, &sid);
        size_t k = at ? (size_t)(at - text) : n;
        alloy_status s = encode_ordinary(e, text, k, ids);
        if (s || !at) return s;
        if ((s = alloy_ids_push(ids, sid))) return s;
        text += k + t->len[sid];
        n -= k + t->len[sid];
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_encoder_encode(alloy_encoder *e, const char *text, size_t n, unsigned flags, alloy_ids *ids) {
    return encode_impl(e, text, n, flags, true, ids);
}

alloy_status alloy_tokenizer_encode(const alloy_tokenizer *t, const char *text, size_t n, unsigned flags, alloy_ids *ids) {
    alloy_encoder *e;
    alloy_status s = alloy_encoder_create(&e, t);
    if (s) return s;
    s = encode_impl(e, text, n, flags, true, ids);
    alloy_encoder_destroy(e);
    return s;
}

/* Just after a newline with a printable ASCII character on each side, the whitespace run is
 * exactly "\n", which every branch of the pattern ends at: the pieces on both sides are those of
 * the whole. */
size_t alloy_tokenizer_safe_cut(const char *text, size_t n, size_t from) {
    for (size_t p = from < 2 ? 2 : from; p < n; p++) {
        if (text[p - 1] != '\n') continue;
        unsigned char a = (unsigned char)text[p - 2], b = (unsigned char)text[p];
        if (a > 0x20 && a < 0x7F && b > 0x20 && b < 0x7F) return p;
    }
    return n;
}

alloy_status alloy_tokenizer_encode_parallel(const alloy_tokenizer *t, const char *text, size_t n, unsigned flags,
                                             int threads, alloy_ids *ids) {
#ifdef _OPENMP
    int nt = threads > 0 ? threads : omp_get_max_threads();
#else
    int nt = 1;
#endif
    bool special_newline = false;
    for (int i = 0; i < t->n_specials; i++) special_newline |= memchr(t->bytes[t->specials[i]], '\n', t->len[t->specials[i]]) != NULL;
    if (nt <= 1 || n < (1u << 20) || t->kind != TOK_BPE || special_newline) return alloy_tokenizer_encode(t, text, n, flags, ids);
    char *fixed = NULL;
    if (alloy_utf8_valid_prefix(text, n) != n) { // repair once, so that cuts fall in valid text
        fixed = alloy_malloc(3 * n);
        if (!fixed) return ALLOY_STATUS_NOMEM;
        n = alloy_utf8_repair(text, n, fixed, NULL);
        text = fixed;
    }
    int blocks = nt * 8;
    size_t *cut = alloy_calloc((size_t)blocks + 1, sizeof(size_t));
    alloy_ids *part = alloy_calloc((size_t)blocks, sizeof(alloy_ids));
    alloy_encoder **enc = alloy_calloc((size_t)nt, sizeof *enc);
    alloy_status s = (!cut || !part || !enc) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (int k = 0; k < nt && !s; k++) s = alloy_encoder_create(&enc[k], t);
    if (!s) {
        for (int b = 1; b < blocks; b++) {
            size_t c = alloy_tokenizer_safe_cut(text, n, n / (size_t)blocks * (size_t)b);
            cut[b] = c < cut[b - 1] ? cut[b - 1] : c;
        }
        cut[blocks] = n;
        alloy_status errs[1024] = {0};
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int b = 0; b < blocks; b++) {
#ifdef _OPENMP
            alloy_encoder *e = enc[omp_get_thread_num()];
#else
            alloy_encoder *e = enc[0];
#endif
            if (cut[b + 1] > cut[b]) errs[b % 1024] = encode_impl(e, text + cut[b], cut[b + 1] - cut[b], flags, b == 0, &part[b]);
        }
        for (int b = 0; b < blocks && !s; b++) s = errs[b % 1024];
        size_t total = ids->n;
        for (int b = 0; b < blocks; b++) total += part[b].n;
        if (!s) s = alloy_ids_reserve(ids, total);
        for (int b = 0; b < blocks && !s; b++) {
            if (!part[b].n) continue; // an empty block has no array at all
            memcpy(ids->data + ids->n, part[b].data, part[b].n * sizeof(int32_t));
            ids->n += part[b].n;
        }
    }
    for (int k = 0; enc && k < nt; k++) alloy_encoder_destroy(enc[k]);
    for (int b = 0; part && b < blocks; b++) alloy_ids_free(&part[b]);
    alloy_free(enc);
    alloy_free(part);
    alloy_free(cut);
    alloy_free(fixed);
    return s;
}
