/*
 * train.c — learning a byte-level BPE (alloy_bpe_trainer_*): count pre-tokenized pieces, then
 * merge the most frequent adjacent pair until the vocabulary is full.
 *
 * feed() repairs invalid UTF-8 (as the encoder does), cuts the text at occurrences of the
 * special tokens (they become special ids when encoded with ALLOY_ENCODE_ALLOW_SPECIAL, so
 * their text teaches nothing), splits the rest with GPT-2's pattern and counts each distinct
 * piece in a hash table (memory grows with the distinct pieces, not the text). Each call is a
 * text of its own: no piece spans two calls.
 *
 * finish() learns the merges. The vocabulary starts as the 256 bytes, id = byte value; each
 * merge adds the next id (256, 257, ...); the special tokens follow the last merge, in the
 * order given. Each step joins the pair of adjacent tokens with the highest count over all
 * pieces (a piece's pairs weigh its count). Ties go to the pair whose joined bytes are
 * lexicographically smallest (bytes compared unsigned, a prefix before its extensions), then
 * to the smaller left id — so the result depends on nothing but the pieces and their counts.
 * Within a piece, occurrences are joined left to right without overlap ("a a a" -> "aa a"),
 * as the encoder does (lowest rank first, leftmost first), so encoding a training text gives
 * the segmentation the trainer saw. Should a pair's joined bytes already be a token, the merge
 * maps to that token (as Hugging Face's trainer does) instead of making a second one.
 * Training stops when the vocabulary (specials included) reaches vocab_size or no pair occurs
 * min_frequency times. Tokens are at most TRAIN_MAX_TOKEN bytes.
 *
 * The counts are kept incrementally, as in Hugging Face's and SentencePiece's trainers: a
 * table pair -> (count, pieces it may occur in), and a max-heap of (count, pair) entries that
 * are checked when popped (lazy invalidation). A merge visits only the pieces listed for its
 * pair and adjusts the counts of the pairs around each joined occurrence; nothing is recounted.
 * Heap invariant: every pair with count c >= min_frequency has an entry with stored count >= c
 * (an increase pushes a new entry; a decrease leaves an entry that is too high). So a popped
 * entry whose count is current is a maximum; one that is too high is pushed again with the
 * current count; one that is too low has a fresher sibling and is dropped.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The longest token a merge may make, in bytes: runs of spaces or letters would otherwise grow
 * tokens without bound, and tokenizer.json's reader takes merge halves of up to 1023 characters
 * of byte-level form (two per byte at worst). */
#define TRAIN_MAX_TOKEN 256
#define TRAIN_MAX_PIECE 65536    /* longer pieces are cut into parts (at character boundaries) */
#define TRAIN_MAX_VOCAB (1 << 24) /* as tok_init_bpe */
#define OCC_PER_CHUNK 6          /* piece indices per chunk of a pair's list (32-byte chunks) */

/* ---- the trainer: options and piece counts ---- */

typedef struct piece_entry {
    uint64_t hash;  /* FNV-1a of the piece's bytes */
    uint64_t count; /* occurrences in the text fed */
    size_t off;     /* into arena */
    uint32_t len;   /* bytes, 1 .. TRAIN_MAX_PIECE */
} piece_entry;

struct alloy_bpe_trainer {
    int vocab_size;               /* final size, specials included */
    int min_frequency;            /* >= 1 */
    bool quiet;                   /* no progress on stderr */
    char **specials;              /* (n_special) NUL-terminated copies */
    size_t *special_len;          /* (n_special) */
    int n_special;                /* special tokens, added after the merges */
    size_t *special_next;         /* (n_special) feed scratch: next occurrence at or after the cursor */
    pcre2_code *re;               /* GPT-2's pattern, JIT-compiled when possible */
    pcre2_match_data *md;         /* match state for feed */
    pcre2_match_context *mctx;    /* holds jstack */
    pcre2_jit_stack *jstack;      /* room for long matches */
    bool jit;                     /* re was JIT-compiled */
    char *fix;                    /* repaired text (fix_cap bytes) */
    size_t fix_cap;
    piece_entry *pieces;          /* (n_pieces) in order of first sight */
    size_t n_pieces, pieces_cap;  /* used, allocated */
    uint32_t *slots;              /* (slots_cap) piece index + 1; 0 marks an empty slot */
    size_t slots_cap;             /* a power of two, at least twice n_pieces */
    char *arena;                  /* piece bytes */
    size_t arena_n, arena_cap;    /* used, allocated */
    uint64_t bytes_fed;           /* as given (before repair), specials included */
    int32_t n_merges;             /* of the last finish */
};

/* Grows *p (elements of `elem` bytes, *cap of them) to hold `need`; false if out of memory. */
static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64, bytes;
    while (c < need) c *= 2;
    if (!alloy_mul_size(c, elem, &bytes)) return false;
    void *q = alloy_realloc(*p, *cap * elem, bytes);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

void alloy_bpe_trainer_destroy(alloy_bpe_trainer *tr) {
    if (!tr) return;
    for (int i = 0; tr->specials && i < tr->n_special; i++) alloy_free(tr->specials[i]);
    alloy_free(tr->specials);
    alloy_free(tr->special_len);
    alloy_free(tr->special_next);
    if (tr->md) pcre2_match_data_free(tr->md);
    if (tr->mctx) pcre2_match_context_free(tr->mctx);
    if (tr->jstack) pcre2_jit_stack_free(tr->jstack);
    if (tr->re) pcre2_code_free(tr->re);
    alloy_free(tr->fix);
    alloy_free(tr->pieces);
    alloy_free(tr->slots);
    alloy_free(tr->arena);
    alloy_free(tr);
}

/* Checks the options (USAGE with a message naming the bad one), copies the special tokens and
 * compiles the pattern. min_frequency 0 means the default, 2. */
alloy_status alloy_bpe_trainer_create(alloy_bpe_trainer **out, const alloy_bpe_train_options *opt) {
    *out = NULL;
    if (opt->n_special < 0 || (opt->n_special > 0 && !opt->special_tokens))
        return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: %d special tokens but no list of them", opt->n_special);
    if (opt->vocab_size > TRAIN_MAX_VOCAB)
        return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: vocabulary size %d is above the limit of %d", opt->vocab_size,
                          TRAIN_MAX_VOCAB);
    if (opt->vocab_size < 256 + opt->n_special)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "bpe trainer: vocabulary size %d is too small: it needs the 256 bytes and %d special tokens",
                          opt->vocab_size, opt->n_special);
    if (opt->min_frequency < 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: min_frequency %d is negative", opt->min_frequency);
    for (int i = 0; i < opt->n_special; i++) {
        const char *sp = opt->special_tokens[i];
        size_t n = sp ? strlen(sp) : 0;
        if (n == 0 || n > 65536 || alloy_utf8_valid_prefix(sp, n) != n)
            return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: special token %d is %s", i + 1,
                              n == 0 ? "empty" : n > 65536 ? "longer than 65536 bytes" : "not valid UTF-8");
        for (int j = 0; j < i; j++)
            if (!strcmp(sp, opt->special_tokens[j]))
                return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: special token \"%.60s\" is given twice", sp);
    }
    alloy_bpe_trainer *tr = alloy_calloc(1, sizeof *tr);
    if (!tr) return ALLOY_STATUS_NOMEM;
    tr->vocab_size = opt->vocab_size;
    tr->min_frequency = opt->min_frequency > 0 ? opt->min_frequency : 2; // 0: the default
    tr->quiet = opt->quiet;
    alloy_status s = ALLOY_STATUS_OK;
    if (opt->n_special > 0) {
        tr->specials = alloy_calloc((size_t)opt->n_special, sizeof *tr->specials);
        tr->special_len = alloy_calloc((size_t)opt->n_special, sizeof *tr->special_len);
        tr->special_next = alloy_calloc((size_t)opt->n_special, sizeof *tr->special_next);
        if (!tr->specials || !tr->special_len || !tr->special_next) s = ALLOY_STATUS_NOMEM;
        for (int i = 0; !s && i < opt->n_special; i++) {
            tr->specials[i] = alloy_strdup(opt->special_tokens[i]);
            if (!tr->specials[i]) s = ALLOY_STATUS_NOMEM;
            else tr->special_len[i] = strlen(tr->specials[i]);
            tr->n_special = i + 1;
        }
    }
    if (!s) {
        int err;
        PCRE2_SIZE erroff;
        tr->re = pcre2_compile((PCRE2_SPTR)tok_gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff, NULL);
        if (!tr->re) s = alloy_fail(ALLOY_STATUS_INTERNAL, "bpe trainer: the GPT-2 pattern does not compile (error %d)", err);
    }
    if (!s) {
        pcre2_jit_compile(tr->re, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
        size_t jit_size = 0;
        tr->jit = pcre2_pattern_info(tr->re, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size > 0;
        tr->md = pcre2_match_data_create(1, NULL);
        tr->mctx = pcre2_match_context_create(NULL);
        tr->jstack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, NULL);
        if (!tr->md || !tr->mctx || !tr->jstack) s = alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory for the regex");
        else pcre2_jit_stack_assign(tr->mctx, NULL, tr->jstack);
    }
    if (s) {
        alloy_bpe_trainer_destroy(tr);
        return s;
    }
    *out = tr;
    return ALLOY_STATUS_OK;
}

/* Counts one piece of at most TRAIN_MAX_PIECE bytes. */
static alloy_status count_piece(alloy_bpe_trainer *tr, const char *p, size_t n) {
    uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, p, n);
    if (tr->slots_cap) {
        size_t mask = tr->slots_cap - 1;
        for (size_t i = (size_t)(h ^ (h >> 29)) & mask; tr->slots[i]; i = (i + 1) & mask) {
            piece_entry *e = &tr->pieces[tr->slots[i] - 1];
            if (e->hash == h && e->len == n && !memcmp(tr->arena + e->off, p, n)) {
                e->count++;
                return ALLOY_STATUS_OK;
            }
        }
    }
    if (tr->n_pieces >= INT32_MAX - 1) // piece indices are int32 in the learner
        return alloy_fail(ALLOY_STATUS_RANGE, "bpe trainer: more than %d distinct pieces", INT32_MAX - 2);
    if (2 * (tr->n_pieces + 1) > tr->slots_cap) { // rehash into twice the slots
        size_t cap = tr->slots_cap ? 2 * tr->slots_cap : 4096;
        uint32_t *slots = alloy_calloc(cap, sizeof *slots);
        if (!slots) return ALLOY_STATUS_NOMEM;
        for (size_t k = 0; k < tr->n_pieces; k++) {
            uint64_t hk = tr->pieces[k].hash;
            size_t i = (size_t)(hk ^ (hk >> 29)) & (cap - 1);
            while (slots[i]) i = (i + 1) & (cap - 1);
            slots[i] = (uint32_t)(k + 1);
        }
        alloy_free(tr->slots);
        tr->slots = slots;
        tr->slots_cap = cap;
    }
    if (!grow((void **)&tr->pieces, &tr->pieces_cap, tr->n_pieces + 1, sizeof *tr->pieces) ||
        !grow((void **)&tr->arena, &tr->arena_cap, tr->arena_n + n, 1))
        return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory after %zu distinct pieces", tr->n_pieces);
    memcpy(tr->arena + tr->arena_n, p, n);
    tr->pieces[tr->n_pieces] = (piece_entry){h, 1, tr->arena_n, (uint32_t)n};
    tr->arena_n += n;
    size_t i = (size_t)(h ^ (h >> 29)) & (tr->slots_cap - 1);
    while (tr->slots[i]) i = (i + 1) & (tr->slots_cap - 1);
    tr->slots[i] = (uint32_t)++tr->n_pieces;
    return ALLOY_STATUS_OK;
}

/* Counts a piece, cutting one longer than TRAIN_MAX_PIECE at character boundaries. */
static alloy_status add_piece(alloy_bpe_trainer *tr, const char *p, size_t n) {
    while (n > TRAIN_MAX_PIECE) {
        size_t k = TRAIN_MAX_PIECE;
        while (k > 1 && ((uint8_t)p[k] & 0xC0) == 0x80) k--; // do not cut a character
        alloy_status s = count_piece(tr, p, k);
        if (s) return s;
        p += k;
        n -= k;
    }
    return n ? count_piece(tr, p, n) : ALLOY_STATUS_OK;
}

/* Splits valid UTF-8 text with the pattern and counts the pieces (as encode_ordinary cuts them). */
static alloy_status feed_ordinary(alloy_bpe_trainer *tr, const char *text, size_t n) {
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(tr->md);
    size_t off = 0;
    while (off < n) {
        int rc = tr->jit ? pcre2_jit_match(tr->re, (PCRE2_SPTR)text, n, off, 0, tr->md, tr->mctx)
                         : pcre2_match(tr->re, (PCRE2_SPTR)text, n, off, PCRE2_NO_UTF_CHECK, tr->md, tr->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return add_piece(tr, text + off, n - off);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return alloy_fail(ALLOY_STATUS_INTERNAL, "bpe trainer: pre-tokenizer failed at byte %zu: %s", off, (const char *)msg);
        }
        size_t start = ov[0], end = ov[1];
        alloy_status s = start > off ? add_piece(tr, text + off, start - off) : ALLOY_STATUS_OK;
        if (!s && end == start) { // an empty match: take one character as a piece and move on
            uint32_t cp;
            size_t cl = alloy_utf8_decode(text + start, n - start, &cp);
            end = start + (cl ? cl : 1);
            if (end > n) end = n;
        }
        if (!s) s = add_piece(tr, text + start, end - start);
        if (s) return s;
        off = end;
    }
    return ALLOY_STATUS_OK;
}

/* Counts the pieces of one text (any bytes; invalid UTF-8 is repaired). On failure (NOMEM) the
 * counts may hold part of the text: destroy the trainer. Not thread-safe. */
alloy_status alloy_bpe_trainer_feed(alloy_bpe_trainer *tr, const char *text, size_t n) {
    if (n == 0) return ALLOY_STATUS_OK;
    tr->bytes_fed += n;
    if (alloy_utf8_valid_prefix(text, n) != n) { // repair as the encoder does
        size_t need;
        if (!alloy_mul_size(n, 3, &need) || !grow((void **)&tr->fix, &tr->fix_cap, need, 1))
            return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory repairing %zu bytes of text", n);
        n = alloy_utf8_repair(text, n, tr->fix, NULL);
        text = tr->fix;
    }
    // cut at special tokens: earliest first, the longest among those at one place. special_next
    // caches each one's next occurrence (n: none left; SIZE_MAX: not searched yet)
    for (int i = 0; i < tr->n_special; i++) tr->special_next[i] = SIZE_MAX;
    for (size_t pos = 0; pos < n;) {
        size_t at = n, len = 0;
        for (int i = 0; i < tr->n_special; i++) {
            if (tr->special_next[i] == SIZE_MAX || tr->special_next[i] < pos) {
                const char *f = memmem(text + pos, n - pos, tr->specials[i], tr->special_len[i]);
                tr->special_next[i] = f ? (size_t)(f - text) : n;
            }
            size_t ni = tr->special_next[i];
            if (ni < at || (ni == at && ni < n && tr->special_len[i] > len)) {
                at = ni;
                len = ni < n ? tr->special_len[i] : 0;
            }
        }
        alloy_status s = feed_ordinary(tr, text + pos, at - pos);
        if (s) return s;
        pos = at + len;
    }
    return ALLOY_STATUS_OK;
}

/* ---- learning: the pieces as token arrays, the pair table, the heap ---- */

typedef struct pair_rec {
    int64_t count; /* weighted occurrences now */
    int32_t a, b;  /* left and right token */
    int32_t head;  /* newest chunk of the list of pieces it may occur in; -1: none */
    int32_t stamp; /* last merge step that raised its count (to push it once per step) */
    bool done;     /* merged already: never again */
} pair_rec;

typedef struct occ_chunk {
    int32_t next;                /* older chunk, -1: none (in the free list: the next free one) */
    int32_t n;                   /* items used */
    int32_t item[OCC_PER_CHUNK]; /* piece indices (duplicates and stale ones allowed) */
} occ_chunk;

typedef struct heap_ent {
    int64_t count; /* the pair's count when pushed */
    int32_t pair;  /* index into pairs */
} heap_ent;

typedef struct learner {
    int32_t *sym;               /* all pieces' tokens: piece w at sym_off[w], sym_len[w] of them */
    size_t *sym_off;            /* (n_words) */
    uint32_t *sym_len;          /* (n_words) shrinks as tokens join */
    int64_t *wcount;            /* (n_words) each piece's count */
    int32_t *wstamp;            /* (n_words) last merge step that visited it */
    size_t n_words;             /* distinct pieces */
    char *tb;                   /* token bytes */
    size_t tb_n, tb_cap;        /* used, allocated */
    size_t *t_off;              /* (n_tok) into tb */
    uint32_t *t_len;            /* (n_tok) */
    size_t tok_cap;             /* allocated in t_off and t_len */
    int32_t n_tok;              /* ordinary tokens: 256 bytes + learned */
    int32_t *tindex;            /* (tindex_cap) token bytes -> id, open addressing, -1 empty */
    size_t tindex_cap;          /* a power of two, at least twice n_tok */
    alloy_map64 pmap;           /* (a << 32 | b) -> index into pairs */
    pair_rec *pairs;            /* every pair seen, never removed */
    size_t n_pairs, pairs_cap;  /* used, allocated */
    occ_chunk *chunks;          /* the pairs' piece lists */
    size_t n_chunks, chunks_cap; /* used (free ones included), allocated */
    int32_t free_chunk;         /* first free chunk, -1: none */
    heap_ent *heap;             /* max-heap by heap_better */
    size_t heap_n, heap_cap;    /* used, allocated */
    int32_t *merges;            /* (2 · n_merges) left, right in rank order */
    size_t n_merges, merges_cap;
    int32_t *touched;           /* pairs raised in this step */
    size_t n_touched, touched_cap;
    int32_t *visit;             /* pieces to visit in this step */
    size_t visit_cap;
    int64_t min_freq;           /* a pair needs this count to be merged */
    int32_t step;               /* merges done (stamps) */
} learner;

static void learner_free(learner *L) {
    alloy_free(L->sym);
    alloy_free(L->sym_off);
    alloy_free(L->sym_len);
    alloy_free(L->wcount);
    alloy_free(L->wstamp);
    alloy_free(L->tb);
    alloy_free(L->t_off);
    alloy_free(L->t_len);
    alloy_free(L->tindex);
    alloy_map64_free(&L->pmap);
    alloy_free(L->pairs);
    alloy_free(L->chunks);
    alloy_free(L->heap);
    alloy_free(L->merges);
    alloy_free(L->touched);
    alloy_free(L->visit);
}

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* Compares the joined bytes of (a, b) with those of (c, d): <0, 0, >0 as memcmp, a proper
 * prefix first. */
static int cmp_joined(const learner *L, int32_t a, int32_t b, int32_t c, int32_t d) {
    const uint8_t *x0 = (const uint8_t *)L->tb + L->t_off[a], *x1 = (const uint8_t *)L->tb + L->t_off[b];
    const uint8_t *y0 = (const uint8_t *)L->tb + L->t_off[c], *y1 = (const uint8_t *)L->tb + L->t_off[d];
    size_t xa = L->t_len[a], xn = xa + L->t_len[b], ya = L->t_len[c], yn = ya + L->t_len[d];
    size_t n = xn < yn ? xn : yn;
    for (size_t i = 0; i < n;) {
        const uint8_t *px = i < xa ? x0 + i : x1 + (i - xa), *py = i < ya ? y0 + i : y1 + (i - ya);
        size_t k = (i < xa ? xa : xn) - i, ky = (i < ya ? ya : yn) - i;
        if (ky < k) k = ky;
        if (n - i < k) k = n - i;
        int r = memcmp(px, py, k);
        if (r) return r;
        i += k;
    }
    return xn < yn ? -1 : xn > yn;
}

/* The tie-break order: higher count, then smaller joined bytes, then smaller left id. */
static bool heap_better(const learner *L, heap_ent x, heap_ent y) {
    if (x.count != y.count) return x.count > y.count;
    if (x.pair == y.pair) return false;
    const pair_rec *p = &L->pairs[x.pair], *q = &L->pairs[y.pair];
    int r = cmp_joined(L, p->a, p->b, q->a, q->b);
    return r ? r < 0 : p->a < q->a;
}

static alloy_status heap_push(learner *L, int32_t pair) {
    if (!grow((void **)&L->heap, &L->heap_cap, L->heap_n + 1, sizeof *L->heap)) return ALLOY_STATUS_NOMEM;
    heap_ent v = {L->pairs[pair].count, pair};
    size_t i = L->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_better(L, v, L->heap[p])) break;
        L->heap[i] = L->heap[p];
        i = p;
    }
    L->heap[i] = v;
    return ALLOY_STATUS_OK;
}

static heap_ent heap_pop(learner *L) {
    heap_ent top = L->heap[0], last = L->heap[--L->heap_n];
    size_t i = 0, n = L->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_better(L, L->heap[c + 1], L->heap[c])) c++;
        if (!heap_better(L, L->heap[c], last)) break;
        L->heap[i] = L->heap[c];
        i = c;
    }
    if (n) L->heap[i] = last;
    return top;
}

/* A pair worth a heap entry: frequent enough, mergeable, not merged yet. */
static bool pair_eligible(const learner *L, const pair_rec *p) {
    return p->count >= L->min_freq && !p->done && L->t_len[p->a] + L->t_len[p->b] <= TRAIN_MAX_TOKEN;
}

/* Adds piece w to the list of pair p (unless it was the last one added). */
static alloy_status occ_add(learner *L, pair_rec *p, int32_t w) {
    if (p->head >= 0) {
        occ_chunk *c = &L->chunks[p->head];
        if (c->n > 0 && c->item[c->n - 1] == w) return ALLOY_STATUS_OK;
        if (c->n < OCC_PER_CHUNK) {
            c->item[c->n++] = w;
            return ALLOY_STATUS_OK;
        }
    }
    int32_t k = L->free_chunk;
    if (k >= 0) L->free_chunk = L->chunks[k].next;
    else {
        if (L->n_chunks >= INT32_MAX) return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: too many pair occurrences");
        if (!grow((void **)&L->chunks, &L->chunks_cap, L->n_chunks + 1, sizeof *L->chunks)) return ALLOY_STATUS_NOMEM;
        k = (int32_t)L->n_chunks++;
    }
    L->chunks[k] = (occ_chunk){.next = p->head, .n = 1, .item = {w}};
    p->head = k;
    return ALLOY_STATUS_OK;
}

/* The pair (a, b), created with count 0 if new; NULL when out of memory. pairs may move. */
static pair_rec *pair_get(learner *L, int32_t a, int32_t b, int32_t *index) {
    uint64_t key = pair_key(a, b), v;
    if (alloy_map64_get(&L->pmap, key, &v)) {
        *index = (int32_t)v;
        return &L->pairs[v];
    }
    if (L->n_pairs >= INT32_MAX || !grow((void **)&L->pairs, &L->pairs_cap, L->n_pairs + 1, sizeof *L->pairs) ||
        alloy_map64_put(&L->pmap, key, L->n_pairs))
        return NULL;
    pair_rec *p = &L->pairs[L->n_pairs];
    *p = (pair_rec){.count = 0, .a = a, .b = b, .head = -1, .stamp = -1, .done = false};
    *index = (int32_t)L->n_pairs++;
    return p;
}

/* Adds d (may be negative) to the count of (a, b); a rise records piece w and the pair. */
static alloy_status pair_add(learner *L, int32_t a, int32_t b, int64_t d, int32_t w) {
    int32_t idx;
    pair_rec *p = pair_get(L, a, b, &idx);
    if (!p) return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory for %zu pairs", L->n_pairs);
    p->count += d;
    ALLOY_ASSERT(p->count >= 0);
    if (d <= 0) return ALLOY_STATUS_OK;
    alloy_status s = occ_add(L, p, w);
    if (!s && p->stamp != L->step) {
        p->stamp = L->step;
        if (!grow((void **)&L->touched, &L->touched_cap, L->n_touched + 1, sizeof *L->touched)) return ALLOY_STATUS_NOMEM;
        L->touched[L->n_touched++] = idx;
    }
    return s;
}

/* The id of the token with these bytes (two parts), or -1. */
static int32_t token_find(const learner *L, uint64_t h, int32_t a, int32_t b) {
    size_t mask = L->tindex_cap - 1;
    size_t la = L->t_len[a], lb = L->t_len[b];
    for (size_t i = (size_t)h & mask; L->tindex[i] >= 0; i = (i + 1) & mask) {
        int32_t id = L->tindex[i];
        const char *t = L->tb + L->t_off[id];
        if (L->t_len[id] == la + lb && !memcmp(t, L->tb + L->t_off[a], la) && !memcmp(t + la, L->tb + L->t_off[b], lb))
            return id;
    }
    return -1;
}

static uint64_t token_hash(const learner *L, int32_t id) { return alloy_fnv64(ALLOY_FNV64_INIT, L->tb + L->t_off[id], L->t_len[id]); }

static void tindex_put(learner *L, int32_t id, uint64_t h) {
    size_t mask = L->tindex_cap - 1, i = (size_t)h & mask;
    while (L->tindex[i] >= 0) i = (i + 1) & mask;
    L->tindex[i] = id;
}

/* Appends the token joining a and b; returns its id or -1 when out of memory. */
static int32_t token_add(learner *L, int32_t a, int32_t b, uint64_t h) {
    size_t la = L->t_len[a], lb = L->t_len[b];
    if (!grow((void **)&L->tb, &L->tb_cap, L->tb_n + la + lb, 1)) return -1;
    size_t cap = L->tok_cap;
    if (!grow((void **)&L->t_off, &cap, (size_t)L->n_tok + 1, sizeof *L->t_off)) return -1;
    cap = L->tok_cap;
    if (!grow((void **)&L->t_len, &cap, (size_t)L->n_tok + 1, sizeof *L->t_len)) return -1;
    L->tok_cap = cap;
    if (2 * ((size_t)L->n_tok + 1) > L->tindex_cap) { // rehash into twice the slots
        size_t ncap = 2 * L->tindex_cap;
        int32_t *ix = alloy_malloc(ncap * sizeof *ix);
        if (!ix) return -1;
        memset(ix, 0xff, ncap * sizeof *ix);
        alloy_free(L->tindex);
        L->tindex = ix;
        L->tindex_cap = ncap;
        for (int32_t id = 0; id < L->n_tok; id++) tindex_put(L, id, token_hash(L, id));
    }
    memcpy(L->tb + L->tb_n, L->tb + L->t_off[a], la);
    memcpy(L->tb + L->tb_n + la, L->tb + L->t_off[b], lb);
    int32_t id = L->n_tok++;
    L->t_off[id] = L->tb_n;
    L->t_len[id] = (uint32_t)(la + lb);
    L->tb_n += la + lb;
    tindex_put(L, id, h);
    return id;
}

/* Joins every (a, b) in piece w into m, left to right, and adjusts the counts around each. */
static alloy_status merge_word(learner *L, int32_t w, int32_t a, int32_t b, int32_t m, int32_t pair) {
    int32_t *s = L->sym + L->sym_off[w];
    size_t n = L->sym_len[w], r = 0, o = 0;
    int64_t c = L->wcount[w];
    alloy_status st = ALLOY_STATUS_OK;
    while (r < n && !st) {
        if (r + 1 < n && s[r] == a && s[r + 1] == b) {
            if (o > 0) { // the token before (already joined if it was an occurrence too)
                st = pair_add(L, s[o - 1], a, -c, w);
                if (!st) st = pair_add(L, s[o - 1], m, c, w);
            }
            if (!st && r + 2 < n) { // the token after (not yet visited)
                st = pair_add(L, b, s[r + 2], -c, w);
                if (!st) st = pair_add(L, m, s[r + 2], c, w);
            }
            L->pairs[pair].count -= c;
            s[o++] = m;
            r += 2;
        } else {
            s[o++] = s[r++];
        }
    }
    if (st) return st; // out of memory midway: the learner is dropped
    L->sym_len[w] = (uint32_t)o;
    return ALLOY_STATUS_OK;
}

/* Sets up the pieces, the 256 byte tokens and the pair table from the trainer's counts. */
static alloy_status learner_init(learner *L, const alloy_bpe_trainer *tr) {
    L->free_chunk = -1;
    L->min_freq = tr->min_frequency;
    L->n_words = tr->n_pieces;
    L->sym_off = alloy_malloc(L->n_words * sizeof *L->sym_off);
    L->sym_len = alloy_malloc(L->n_words * sizeof *L->sym_len);
    L->wcount = alloy_malloc(L->n_words * sizeof *L->wcount);
    L->wstamp = alloy_malloc(L->n_words * sizeof *L->wstamp);
    L->sym = alloy_malloc(tr->arena_n * sizeof *L->sym);
    L->tok_cap = 1024;
    L->t_off = alloy_malloc(L->tok_cap * sizeof *L->t_off);
    L->t_len = alloy_malloc(L->tok_cap * sizeof *L->t_len);
    L->tb_cap = 4096;
    L->tb = alloy_malloc(L->tb_cap);
    L->tindex_cap = 1024;
    L->tindex = alloy_malloc(L->tindex_cap * sizeof *L->tindex);
    if (!L->sym_off || !L->sym_len || !L->wcount || !L->wstamp || !L->sym || !L->t_off || !L->t_len || !L->tb || !L->tindex ||
        alloy_map64_init(&L->pmap, 4096))
        return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory for %zu distinct pieces", L->n_words);
    memset(L->tindex, 0xff, L->tindex_cap * sizeof *L->tindex);
    for (int b = 0; b < 256; b++) { // id = byte value
        L->tb[b] = (char)b;
        L->t_off[b] = (size_t)b;
        L->t_len[b] = 1;
        tindex_put(L, b, token_hash(L, b));
    }
    L->tb_n = 256;
    L->n_tok = 256;
    size_t off = 0;
    for (size_t w = 0; w < L->n_words; w++) {
        const piece_entry *e = &tr->pieces[w];
        const uint8_t *p = (const uint8_t *)tr->arena + e->off;
        L->sym_off[w] = off;
        L->sym_len[w] = e->len;
        L->wcount[w] = (int64_t)e->count;
        L->wstamp[w] = -1;
        for (uint32_t i = 0; i < e->len; i++) L->sym[off + i] = p[i];
        for (uint32_t i = 0; i + 1 < e->len; i++) {
            alloy_status s = pair_add(L, p[i], p[i + 1], (int64_t)e->count, (int32_t)w);
            if (s) return s;
        }
        off += e->len;
    }
    L->n_touched = 0; // the initial heap takes every eligible pair
    for (size_t i = 0; i < L->n_pairs; i++)
        if (pair_eligible(L, &L->pairs[i]) && heap_push(L, (int32_t)i)) return ALLOY_STATUS_NOMEM;
    return ALLOY_STATUS_OK;
}

/* The most frequent eligible pair (tie-break as heap_better), or -1 when none is left. */
static alloy_status pop_best(learner *L, int32_t *best) {
    *best = -1;
    while (L->heap_n > 0) {
        heap_ent e = heap_pop(L);
        pair_rec *p = &L->pairs[e.pair];
        if (!pair_eligible(L, p)) continue;
        if (e.count == p->count) {
            *best = e.pair;
            return ALLOY_STATUS_OK;
        }
        if (e.count > p->count && heap_push(L, e.pair)) return ALLOY_STATUS_NOMEM; // too high: push the current count
        // too low: a fresher entry of this pair is in the heap
    }
    return ALLOY_STATUS_OK;
}

/* One merge step: joins pair `best` everywhere, records it, pushes the pairs it raised. */
static alloy_status merge_step(learner *L, int32_t best) {
    pair_rec *p = &L->pairs[best];
    int32_t a = p->a, b = p->b;
    p->done = true;
    uint64_t h = alloy_fnv64(token_hash(L, a), L->tb + L->t_off[b], L->t_len[b]);
    int32_t m = token_find(L, h, a, b);
    if (m < 0 && (m = token_add(L, a, b, h)) < 0) return alloy_fail(ALLOY_STATUS_NOMEM, "bpe trainer: out of memory for tokens");
    if (!grow((void **)&L->merges, &L->merges_cap, 2 * (L->n_merges + 1), sizeof *L->merges)) return ALLOY_STATUS_NOMEM;
    L->merges[2 * L->n_merges] = a;
    L->merges[2 * L->n_merges + 1] = b;
    L->n_merges++;
    L->step++;
    L->n_touched = 0;
    // the pieces listed for the pair, each once; the chunks go back to the free list
    size_t nv = 0;
    for (int32_t k = p->head; k >= 0;) {
        occ_chunk *c = &L->chunks[k];
        for (int32_t i = 0; i < c->n; i++) {
            int32_t w = c->item[i];
            if (L->wstamp[w] == L->step) continue;
            L->wstamp[w] = L->step;
            if (!grow((void **)&L->visit, &L->visit_cap, nv + 1, sizeof *L->visit)) return ALLOY_STATUS_NOMEM;
            L->visit[nv++] = w;
        }
        int32_t next = c->next;
        c->next = L->free_chunk;
        L->free_chunk = k;
        k = next;
    }
    p->head = -1;
    for (size_t i = 0; i < nv; i++) {
        alloy_status s = merge_word(L, L->visit[i], a, b, m, best);
        if (s) return s;
    }
    ALLOY_ASSERT(L->pairs[best].count == 0); // the lists held every piece with the pair
    for (size_t i = 0; i < L->n_touched; i++) {
        int32_t q = L->touched[i];
        if (pair_eligible(L, &L->pairs[q]) && heap_push(L, q)) return ALLOY_STATUS_NOMEM;
    }
    return ALLOY_STATUS_OK;
}

/* Builds the tokenizer: tokens in id order, the merges, then the specials. */
static alloy_status build_tokenizer(const learner *L, const alloy_bpe_trainer *tr, alloy_tokenizer **out) {
    const char *what = "bpe trainer";
    alloy_tokenizer *t;
    alloy_status s = tok_init_bpe(&t, L->n_tok + tr->n_special, what);
    if (s) return s;
    for (int32_t id = 0; id < L->n_tok && !s; id++) s = tok_set(t, id, L->tb + L->t_off[id], L->t_len[id], false, what);
    for (int i = 0; i < tr->n_special && !s; i++) s = tok_set(t, L->n_tok + i, tr->specials[i], tr->special_len[i], true, what);
    if (!s) s = tok_index(t, what);
    for (size_t r = 0; r < L->n_merges && !s; r++) s = tok_add_merge(t, L->merges[2 * r], L->merges[2 * r + 1], what);
    if (!s) s = tok_finish(t, NULL, false, what);
    if (s) {
        alloy_tokenizer_destroy(t);
        return s;
    }
    *out = t;
    return ALLOY_STATUS_OK;
}

/* Learns the merges from the counts so far and builds the tokenizer (*out, the caller's). The
 * counts stay: more text may be fed and finish called again. USAGE if no text was fed. */
alloy_status alloy_bpe_trainer_finish(alloy_bpe_trainer *tr, alloy_tokenizer **out) {
    *out = NULL;
    if (tr->n_pieces == 0) return alloy_fail(ALLOY_STATUS_USAGE, "bpe trainer: no text was fed (nothing to learn from)");
    double t0 = alloy_time_now();
    learner L = {0};
    alloy_status s = learner_init(&L, tr);
    int32_t target = tr->vocab_size - tr->n_special; // ordinary tokens
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 40);
    double last_draw = 0;
    while (!s && L.n_tok < target) {
        int32_t best;
        s = pop_best(&L, &best);
        if (s || best < 0) break;
        int64_t count = L.pairs[best].count;
        s = merge_step(&L, best);
        if (!tr->quiet && !s && (L.n_merges % 256 == 0 || alloy_time_now() - last_draw > 0.5)) {
            last_draw = alloy_time_now();
            alloy_progress_update(&prog, "bpe: %zu merges, %d/%d tokens, pair count %lld, %.1fs", L.n_merges, L.n_tok + tr->n_special,
                                  tr->vocab_size, (long long)count, last_draw - t0);
        }
    }
    if (!s) s = build_tokenizer(&L, tr, out);
    if (!s) tr->n_merges = (int32_t)L.n_merges;
    if (!tr->quiet && !s)
        alloy_progress_print(&prog, "bpe: %zu merges from %zu distinct pieces, vocabulary %d%s in %.1fs", L.n_merges, tr->n_pieces,
                             L.n_tok + tr->n_special, L.n_tok < target ? " (no pair left reaches min_frequency)" : "",
                             alloy_time_now() - t0);
    if (!tr->quiet) alloy_progress_done(&prog);
    learner_free(&L);
    return s;
}

/* What the trainer has seen: bytes fed (as given), distinct pieces, and the merges of
 * the last finish (0 before one). Any pointer may be NULL. */
void alloy_bpe_trainer_stats(const alloy_bpe_trainer *tr, uint64_t *bytes_fed, uint64_t *distinct_pieces, int *merges) {
    if (bytes_fed) *bytes_fed = tr->bytes_fed;
    if (distinct_pieces) *distinct_pieces = tr->n_pieces;
    if (merges) *merges = tr->n_merges;
}
