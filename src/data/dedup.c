/*
 * dedup.c — streaming exact and MinHash-LSH near-duplicate detection over documents.
 *
 * Each checked document is compared with the documents kept so far:
 *   exact   its bytes' 128-bit hash (MurmurHash3 x64_128) is looked up in an open-addressing
 *           table of the kept documents' hashes;
 *   near    its words (runs of Unicode letters/digits, lowercased) are cut into shingles of
 *           `shingle` consecutive words, each hashed to 64 bits; permutation i maps a shingle
 *           hash h to (a_i·h + b_i) mod (2^61 − 1) and signature slot i keeps the minimum
 *           (its low 32 bits). The signature is cut into `bands` bands of `rows` slots; kept
 *           documents sharing a whole band are candidates, and the candidate with most
 *           agreeing slots decides: NEAR when agreeing/permutations >= threshold − 2σ, where
 *           σ = sqrt(t(1 − t)/permutations) is the estimate's standard error at the threshold
 *           (0.035 for 0.8 and 128): the threshold is the similarity at which pairs are caught,
 *           not one that the estimate's noise halves.
 * Only kept documents are stored, and only their hash, signature and band entries, never
 * their text: memory grows with the number kept, whatever their length.
 *
 * The hashes are for this process's memory only (never written out), so they use the
 * machine's byte order.
 */
#include "alloy/dedup.h"

#include <math.h>
#include <string.h>
#include <utf8proc.h>

#define MERSENNE61 ((1ULL << 61) - 1)
#define MAX_SHINGLE 64
#define MAX_PERMUTATIONS 1024
#define INDEX_LIMIT 0xFFFFFFFEu /* kept documents and band entries are uint32 indices */

/* One kept document's membership in one band: a chain through the bucket of its key. */
typedef struct lsh_entry {
    uint64_t key;  /* hash of (band, the band's rows of the signature) */
    uint32_t doc;  /* kept-document index */
    uint32_t next; /* next entry in the same bucket + 1; 0 ends the chain */
} lsh_entry;

struct alloy_dedup {
    alloy_dedup_options opt; /* as validated at create */
    int k;                 /* permutations */
    int min_agree;         /* agreeing slots needed for NEAR: ceil((t − 2σ)·k) */
    uint32_t *perm_al;     /* (k) low 32 bits of the multipliers a_i in [1, p) */
    uint32_t *perm_ah;     /* (k) their high 29 bits */
    uint64_t *perm_b;      /* (k) offsets in [0, p) */
    uint64_t *mins;        /* (k) the current document's running minima */
    uint32_t *sig;         /* (k) the current document's signature */
    uint64_t *band_keys;   /* (bands) the current document's band keys */

    size_t n_kept;         /* kept documents */
    size_t cap_kept;       /* capacity of the per-document arrays below */
    uint64_t *ids;         /* (cap_kept) the callers' doc_ids */
    uint64_t *hashes;      /* (cap_kept, 2) 128-bit text hashes; NULL unless opt.exact */
    uint32_t *sigs;        /* (cap_kept, k) signatures; NULL unless opt.minhash */
    uint32_t *stamps;      /* (cap_kept) last check that examined the document (candidate dedup) */
    uint32_t stamp;        /* this check's stamp; never 0 */

    uint32_t *exact_slots; /* (exact_cap) kept index + 1, 0 empty; load <= 1/2 */
    size_t exact_cap;      /* power of two, or 0 */

    lsh_entry *entries;    /* (cap_entries) bands per kept document that has words */
    size_t n_entries;      /* used entries */
    size_t cap_entries;    /* allocated entries */
    uint32_t *heads;       /* (head_cap) first entry + 1 of each bucket, 0 empty */
    size_t head_cap;       /* power of two >= n_entries, or 0 */

    alloy_dedup_stats stats; /* counts (memory is computed on demand) */
};

/* ---- hashing ---------------------------------------------------------------------------- */

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* MurmurHash3's finaliser: a bijection that mixes every input bit into every output bit. */
static inline uint64_t fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* MurmurHash3_x64_128 (Austin Appleby, public domain) of p[0..n), seed 0. */
static void hash128(const uint8_t *p, size_t n, uint64_t out[2]) {
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = 0, h2 = 0;
    size_t blocks = n / 16;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t k1 = load64(p + 16 * i), k2 = load64(p + 16 * i + 8);
        k1 *= c1, k1 = rotl64(k1, 31), k1 *= c2, h1 ^= k1;
        h1 = rotl64(h1, 27), h1 += h2, h1 = h1 * 5 + 0x52dce729;
        k2 *= c2, k2 = rotl64(k2, 33), k2 *= c1, h2 ^= k2;
        h2 = rotl64(h2, 31), h2 += h1, h2 = h2 * 5 + 0x38495ab5;
    }
    size_t rest = n & 15;
    if (rest) { // the reference's byte-wise tail is a little-endian load of the zero-padded tail
        uint8_t tail[16] = {0};
        memcpy(tail, p + 16 * blocks, rest);
        uint64_t k1 = load64(tail), k2 = load64(tail + 8);
        if (rest > 8) k2 *= c2, k2 = rotl64(k2, 33), k2 *= c1, h2 ^= k2;
        k1 *= c1, k1 = rotl64(k1, 31), k1 *= c2, h1 ^= k1;
    }
    h1 ^= (uint64_t)n, h2 ^= (uint64_t)n;
    h1 += h2, h2 += h1;
    h1 = fmix64(h1), h2 = fmix64(h2);
    h1 += h2, h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

/* x mod (2^61 − 1). */
static inline uint64_t mod_m61(uint64_t x) {
    uint64_t r = (x & MERSENNE61) + (x >> 61); // < 2^61 + 8
    return r >= MERSENNE61 ? r - MERSENNE61 : r;
}

/* ---- shingles and signatures ------------------------------------------------------------ */

/* Folds one shingle hash into the running minima of every permutation. (a·x + b) mod p is
 * computed exactly from 32-bit halves, a = ah·2^32 + al and x = xh·2^32 + xl, using
 * 2^61 ≡ 1 and 2^64 ≡ 8 (mod p): a·x = ah·xh·2^64 + (ah·xl + al·xh)·2^32 + al·xl. Only
 * 32x32 -> 64-bit products, so the compiler vectorises the loop over permutations (a
 * 64x64 -> 128-bit product per slot was 3x slower). */
static inline void add_shingle(alloy_dedup *d, uint64_t h) {
    uint64_t x = mod_m61(h);
    // uint32_t operands widened at the multiply: the vectoriser's widening multiply (vpmuludq)
    const uint32_t xl = (uint32_t)x, xh = (uint32_t)(x >> 32); // xh < 2^29
    const uint32_t *al = d->perm_al, *ah = d->perm_ah;
    const uint64_t *b = d->perm_b;
    uint64_t *mins = d->mins;
    for (int i = 0; i < d->k; i++) {
        uint64_t lo = (uint64_t)al[i] * xl;                         // < 2^64
        uint64_t mid = (uint64_t)ah[i] * xl + (uint64_t)al[i] * xh; // < 2^62
        uint64_t hi = (uint64_t)ah[i] * xh;                         // < 2^58
        // mid·2^32 = (mid >> 29)·2^61 + (mid mod 2^29)·2^32; each term below is < 2^61 + 2^33
        uint64_t r = (lo & MERSENNE61) + (lo >> 61) + (mid >> 29) + ((mid & 0x1FFFFFFFULL) << 32) + (hi << 3) + b[i];
        r = (r & MERSENNE61) + (r >> 61); // r was < 2^63: now < 2^61 + 4
        r = r >= MERSENNE61 ? r - MERSENNE61 : r;
        mins[i] = r < mins[i] ? r : mins[i];
    }
}

/* The hash of words ring[first], ring[first+1], ... (count of them, ring of MAX_SHINGLE):
 * order matters, so "a b" and "b a" differ. */
static inline uint64_t shingle_hash(const uint64_t *ring, size_t first, int count) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)count;
    for (int j = 0; j < count; j++) h = fmix64(h ^ ring[(first + (size_t)j) % MAX_SHINGLE]) + 0x2545f4914f6cdd1dULL;
    return h;
}

/* Is cp a word character (general category L* or N*)? */
static inline bool is_word_cp(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

/* Computes d->sig for text[0..n); returns the number of words (0: no signature). Invalid
 * UTF-8 bytes separate words like punctuation does. */
static size_t compute_signature(alloy_dedup *d, const uint8_t *s, size_t n) {
    const int w = d->opt.shingle;
    uint64_t ring[MAX_SHINGLE]; // the last w word hashes
    size_t words = 0;
    bool in_word = false;
    uint64_t wh = 0; // hash of the word being read (FNV-1a over lowercased code points)
    for (int i = 0; i < d->k; i++) d->mins[i] = UINT64_MAX;

    size_t i = 0;
    for (;;) {
        uint32_t cp = 0;
        bool word_char = false;
        size_t len = 1;
        if (i < n) {
            uint8_t c = s[i];
            if (c < 0x80) { // ASCII: the same answer as utf8proc, faster
                if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') cp = c | 0x20, word_char = true;
                else if (c >= '0' && c <= '9') cp = c, word_char = true;
            } else {
                len = alloy_utf8_decode((const char *)s + i, n - i, &cp);
                if (len == 0) len = 1; // an invalid byte: a separator
                else if (is_word_cp(cp)) cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), word_char = true;
            }
        }
        if (word_char) {
            if (!in_word) wh = ALLOY_FNV64_INIT, in_word = true;
            wh = (wh ^ cp) * 0x100000001b3ULL;
        } else if (in_word) { // a word ends: it may complete a shingle
            in_word = false;
            ring[words % MAX_SHINGLE] = fmix64(wh);
            words++;
            if (words >= (size_t)w) add_shingle(d, shingle_hash(ring, words - (size_t)w, w));
        }
        if (i >= n) break;
        i += len;
    }
    if (words > 0 && words < (size_t)w) add_shingle(d, shingle_hash(ring, 0, (int)words));
    for (int j = 0; j < d->k; j++) d->sig[j] = (uint32_t)d->mins[j]; // low bits: the min's top bits are ~0
    return words;
}

/* The bucket key of band `band` of sig. */
static uint64_t band_key(const uint32_t *sig, int band, int rows) {
    uint64_t h = fmix64(0x6a09e667f3bcc909ULL + (uint64_t)band);
    const uint32_t *r = sig + (size_t)band * (size_t)rows;
    for (int j = 0; j < rows; j++) h = fmix64(h ^ r[j]) * 0x9e3779b97f4a7c15ULL;
    return fmix64(h);
}

/* ---- options, create, destroy ----------------------------------------------------------- */

alloy_dedup_options alloy_dedup_defaults(void) {
    alloy_dedup_options o = {
        .exact = true,
        .minhash = true,
        .shingle = 5,
        .permutations = 128,
        .bands = 16,
        .rows = 8,
        .threshold = 0.8,
        .seed = 1337,
    };
    return o;
}

static alloy_status check_options(const alloy_dedup_options *o) {
    if (o->shingle < 1 || o->shingle > MAX_SHINGLE)
        return alloy_fail(ALLOY_STATUS_USAGE, "dedup: shingle must be 1..%d words, not %d", MAX_SHINGLE, o->shingle);
    if (o->permutations < 1 || o->permutations > MAX_PERMUTATIONS)
        return alloy_fail(ALLOY_STATUS_USAGE, "dedup: permutations must be 1..%d, not %d", MAX_PERMUTATIONS,
                          o->permutations);
    if (o->bands < 1 || o->rows < 1 || (int64_t)o->bands * o->rows != o->permutations)
        return alloy_fail(ALLOY_STATUS_USAGE, "dedup: bands (%d) x rows (%d) must equal permutations (%d)", o->bands,
                          o->rows, o->permutations);
    if (!(o->threshold > 0.0 && o->threshold <= 1.0)) // also refuses NaN
        return alloy_fail(ALLOY_STATUS_USAGE, "dedup: threshold must be in (0, 1], not %g", o->threshold);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_dedup_create(alloy_dedup **out, const alloy_dedup_options *opt) {
    if (!out) return alloy_fail(ALLOY_STATUS_USAGE, "dedup: out must not be NULL");
    *out = NULL;
    alloy_dedup_options o = opt ? *opt : alloy_dedup_defaults();
    alloy_status s = check_options(&o);
    if (s != ALLOY_STATUS_OK) return s;
    alloy_dedup *d = alloy_calloc(1, sizeof *d);
    if (!d) return ALLOY_STATUS_NOMEM;
    d->opt = o;
    d->k = o.permutations;
    double sigma = sqrt(o.threshold * (1.0 - o.threshold) / d->k);
    d->min_agree = (int)ceil((o.threshold - 2.0 * sigma) * d->k - 1e-9); // 0.8, 128: (0.8 − 0.071)·128 → 94 slots
    if (d->min_agree < 1) d->min_agree = 1;
    d->stamp = 1;
    size_t k = (size_t)d->k;
    d->perm_al = alloy_malloc(k * sizeof(uint32_t));
    d->perm_ah = alloy_malloc(k * sizeof(uint32_t));
    d->perm_b = alloy_malloc(k * sizeof(uint64_t));
    d->mins = alloy_malloc(k * sizeof(uint64_t));
    d->sig = alloy_malloc(k * sizeof(uint32_t));
    d->band_keys = alloy_malloc((size_t)o.bands * sizeof(uint64_t));
    if (!d->perm_al || !d->perm_ah || !d->perm_b || !d->mins || !d->sig || !d->band_keys) {
        alloy_dedup_destroy(d);
        return ALLOY_STATUS_NOMEM;
    }
    alloy_rng rng;
    alloy_rng_seed(&rng, o.seed);
    for (size_t i = 0; i < k; i++) {
        uint64_t a = 1 + alloy_rng_below(&rng, MERSENNE61 - 1); // a != 0: a permutation
        d->perm_al[i] = (uint32_t)a;
        d->perm_ah[i] = (uint32_t)(a >> 32);
        d->perm_b[i] = alloy_rng_below(&rng, MERSENNE61);
    }
    *out = d;
    return ALLOY_STATUS_OK;
}

void alloy_dedup_destroy(alloy_dedup *d) {
    if (!d) return;
    alloy_free(d->perm_al);
    alloy_free(d->perm_ah);
    alloy_free(d->perm_b);
    alloy_free(d->mins);
    alloy_free(d->sig);
    alloy_free(d->band_keys);
    alloy_free(d->ids);
    alloy_free(d->hashes);
    alloy_free(d->sigs);
    alloy_free(d->stamps);
    alloy_free(d->exact_slots);
    alloy_free(d->entries);
    alloy_free(d->heads);
    alloy_free(d);
}

/* ---- the index -------------------------------------------------------------------------- */

/* Grows *p (count · size bytes, count elements in use) to new_count elements; on failure *p
 * is untouched. */
static alloy_status grow(void **p, size_t used, size_t new_count, size_t size) {
    size_t old_bytes, new_bytes;
    if (!alloy_mul_size(used, size, &old_bytes) || !alloy_mul_size(new_count, size, &new_bytes))
        return alloy_fail(ALLOY_STATUS_NOMEM, "dedup: index of %zu entries does not fit in memory", new_count);
    void *q = alloy_realloc(*p, old_bytes, new_bytes);
    if (!q) return ALLOY_STATUS_NOMEM;
    *p = q;
    return ALLOY_STATUS_OK;
}

/* Makes room for one more kept document (with `bands` entries if has_sig), so that the
 * insertion after it cannot fail. Every step leaves d consistent if the next one fails. */
static alloy_status reserve(alloy_dedup *d, bool has_sig) {
    size_t bands = (size_t)d->opt.bands;
    if (d->n_kept >= INDEX_LIMIT || (has_sig && d->n_entries + bands > INDEX_LIMIT))
        return alloy_fail(ALLOY_STATUS_RANGE, "dedup: the index is full (%zu kept documents, %zu band entries)",
                          d->n_kept, d->n_entries);
    if (d->n_kept == d->cap_kept) {
        size_t nc = d->cap_kept ? 2 * d->cap_kept : 64;
        if (nc > INDEX_LIMIT) nc = INDEX_LIMIT;
        alloy_status s;
        size_t n = d->n_kept, k = (size_t)d->k;
        // The capacity changes only after all four have grown; a failed step leaves larger
        // arrays behind, which is harmless.
        if ((s = grow((void **)&d->ids, n, nc, sizeof(uint64_t))) != ALLOY_STATUS_OK) return s;
        if ((s = grow((void **)&d->stamps, n, nc, sizeof(uint32_t))) != ALLOY_STATUS_OK) return s;
        if (d->opt.exact && (s = grow((void **)&d->hashes, n, nc, 2 * sizeof(uint64_t))) != ALLOY_STATUS_OK) return s;
        if (d->opt.minhash && (s = grow((void **)&d->sigs, n, nc, k * sizeof(uint32_t))) != ALLOY_STATUS_OK) return s;
        d->cap_kept = nc;
    }
    if (d->opt.exact && 2 * (d->n_kept + 1) > d->exact_cap) { // rehash into twice the slots
        size_t nc = d->exact_cap ? 2 * d->exact_cap : 128;
        uint32_t *slots = alloy_calloc(nc, sizeof(uint32_t));
        if (!slots) return ALLOY_STATUS_NOMEM;
        for (size_t j = 0; j < d->exact_cap; j++) {
            uint32_t e = d->exact_slots[j];
            if (!e) continue;
            size_t at = (size_t)d->hashes[2 * (e - 1)] & (nc - 1);
            while (slots[at]) at = (at + 1) & (nc - 1);
            slots[at] = e;
        }
        alloy_free(d->exact_slots);
        d->exact_slots = slots;
        d->exact_cap = nc;
    }
    if (has_sig && d->n_entries + bands > d->cap_entries) {
        size_t nc = d->cap_entries ? 2 * d->cap_entries : 64 * bands;
        alloy_status s = grow((void **)&d->entries, d->n_entries, nc, sizeof(lsh_entry));
        if (s != ALLOY_STATUS_OK) return s;
        d->cap_entries = nc;
    }
    if (has_sig && d->n_entries + bands > d->head_cap) { // rebuild the chains over twice the buckets
        size_t nc = d->head_cap ? 2 * d->head_cap : 64 * bands;
        while (nc < d->n_entries + bands) nc *= 2;
        uint32_t *heads = alloy_calloc(nc, sizeof(uint32_t));
        if (!heads) return ALLOY_STATUS_NOMEM;
        for (size_t e = 0; e < d->n_entries; e++) {
            size_t at = (size_t)d->entries[e].key & (nc - 1);
            d->entries[e].next = heads[at];
            heads[at] = (uint32_t)(e + 1);
        }
        alloy_free(d->heads);
        d->heads = heads;
        d->head_cap = nc;
    }
    return ALLOY_STATUS_OK;
}

/* Remembers the current document (reserve() made room). */
static void insert(alloy_dedup *d, uint64_t doc_id, const uint64_t hash[2], bool has_sig) {
    size_t idx = d->n_kept++;
    d->ids[idx] = doc_id;
    d->stamps[idx] = 0;
    if (d->opt.exact) {
        d->hashes[2 * idx] = hash[0];
        d->hashes[2 * idx + 1] = hash[1];
        size_t at = (size_t)hash[0] & (d->exact_cap - 1);
        while (d->exact_slots[at]) at = (at + 1) & (d->exact_cap - 1);
        d->exact_slots[at] = (uint32_t)(idx + 1);
    }
    if (d->opt.minhash) {
        uint32_t *dst = d->sigs + idx * (size_t)d->k;
        if (has_sig) memcpy(dst, d->sig, (size_t)d->k * sizeof(uint32_t));
        else memset(dst, 0, (size_t)d->k * sizeof(uint32_t)); // never read: not in any band
    }
    if (has_sig) {
        for (int b = 0; b < d->opt.bands; b++) {
            size_t e = d->n_entries++;
            size_t at = (size_t)d->band_keys[b] & (d->head_cap - 1);
            d->entries[e] = (lsh_entry){.key = d->band_keys[b], .doc = (uint32_t)idx, .next = d->heads[at]};
            d->heads[at] = (uint32_t)(e + 1);
        }
    }
}

/* The kept index with this 128-bit hash, or -1. */
static int64_t find_exact(const alloy_dedup *d, const uint64_t hash[2]) {
    if (!d->exact_cap) return -1;
    size_t at = (size_t)hash[0] & (d->exact_cap - 1);
    for (uint32_t e; (e = d->exact_slots[at]) != 0; at = (at + 1) & (d->exact_cap - 1)) {
        const uint64_t *h = d->hashes + 2 * (size_t)(e - 1);
        if (h[0] == hash[0] && h[1] == hash[1]) return (int64_t)(e - 1);
    }
    return -1;
}

/* Agreeing slots between the current signature and kept document idx's. */
static int agreement(const alloy_dedup *d, size_t idx) {
    const uint32_t *a = d->sig, *b = d->sigs + idx * (size_t)d->k;
    int same = 0;
    for (int i = 0; i < d->k; i++) same += a[i] == b[i];
    return same;
}

/* ---- check ------------------------------------------------------------------------------ */

alloy_status alloy_dedup_check(alloy_dedup *d, const char *text, size_t n, uint64_t doc_id, alloy_dedup_verdict *v) {
    if (!d || !v) return alloy_fail(ALLOY_STATUS_USAGE, "dedup check: d and v must not be NULL");
    if (!text && n > 0) return alloy_fail(ALLOY_STATUS_USAGE, "dedup check: text is NULL but n is %zu", n);
    memset(v, 0, sizeof *v);
    v->kind = ALLOY_DEDUP_KEEP;
    const uint8_t *s = text ? (const uint8_t *)text : (const uint8_t *)"";

    uint64_t hash[2] = {0, 0};
    if (d->opt.exact) {
        hash128(s, n, hash);
        int64_t at = find_exact(d, hash);
        if (at >= 0) {
            v->kind = ALLOY_DEDUP_EXACT;
            v->match_id = d->ids[at];
            v->jaccard = 1.0;
            d->stats.seen++;
            d->stats.exact++;
            return ALLOY_STATUS_OK;
        }
    }

    bool has_sig = false;
    if (d->opt.minhash && compute_signature(d, s, n) > 0) {
        has_sig = true;
        if (++d->stamp == 0) { // wrapped after 2^32 checks: old stamps could collide, clear them
            memset(d->stamps, 0, d->n_kept * sizeof(uint32_t));
            d->stamp = 1;
        }
        int best = -1;
        size_t best_idx = 0;
        for (int b = 0; b < d->opt.bands; b++) {
            uint64_t key = band_key(d->sig, b, d->opt.rows);
            d->band_keys[b] = key;
            if (!d->head_cap) continue;
            for (uint32_t e = d->heads[(size_t)key & (d->head_cap - 1)]; e; e = d->entries[e - 1].next) {
                const lsh_entry *en = &d->entries[e - 1];
                if (en->key != key || d->stamps[en->doc] == d->stamp) continue;
                d->stamps[en->doc] = d->stamp;
                v->candidates++;
                int same = agreement(d, en->doc);
                if (same > best || (same == best && en->doc < best_idx)) best = same, best_idx = en->doc;
            }
        }
        if (best >= 0) {
            v->match_id = d->ids[best_idx];
            v->jaccard = (double)best / d->k;
            if (best >= d->min_agree) {
                v->kind = ALLOY_DEDUP_NEAR;
                d->stats.seen++;
                d->stats.near++;
                return ALLOY_STATUS_OK;
            }
        }
    }

    alloy_status st = reserve(d, has_sig);
    if (st != ALLOY_STATUS_OK) {
        memset(v, 0, sizeof *v);
        return st;
    }
    insert(d, doc_id, hash, has_sig);
    d->stats.seen++;
    d->stats.kept++;
    return ALLOY_STATUS_OK;
}

alloy_dedup_stats alloy_dedup_get_stats(const alloy_dedup *d) {
    alloy_dedup_stats st = {0};
    if (!d) return st;
    st = d->stats;
    size_t k = (size_t)d->k;
    st.memory = sizeof *d + k * (2 * sizeof(uint32_t) + 2 * sizeof(uint64_t) + sizeof(uint32_t)) +
                (size_t)d->opt.bands * sizeof(uint64_t) +
                d->cap_kept * (sizeof(uint64_t) + sizeof(uint32_t) + (d->opt.exact ? 2 * sizeof(uint64_t) : 0) +
                               (d->opt.minhash ? k * sizeof(uint32_t) : 0)) +
                d->exact_cap * sizeof(uint32_t) + d->cap_entries * sizeof(lsh_entry) + d->head_cap * sizeof(uint32_t);
    return st;
}
