/*
 * alloy/dedup.h — text cleaning (UTF-8 repair, line ends, controls, NFC/NFKC) and exact plus
 * MinHash-LSH near-duplicate removal: the first stage of the data pipeline, before tokenizing.
 *
 *     char *clean; size_t clean_n;
 *     alloy_normalize(raw, raw_n, ALLOY_NORM_NFC, &clean, &clean_n, NULL);
 *
 *     alloy_dedup *d;
 *     alloy_dedup_options opt = alloy_dedup_defaults();   // exact + MinHash, 5-word shingles
 *     alloy_dedup_create(&d, &opt);
 *     alloy_dedup_verdict v;
 *     alloy_dedup_check(d, clean, clean_n, doc_id, &v);
 *     if (v.kind == ALLOY_DEDUP_KEEP) write_out(clean);   // else v.match_id is the earlier doc
 *     alloy_free(clean);
 *     ...
 *     alloy_dedup_destroy(d);
 */
#ifndef ALLOY_DEDUP_H
#define ALLOY_DEDUP_H

#include "alloy/base.h"

ALLOY_BEGIN_DECLS

/* ---- normalisation ---------------------------------------------------------------------- */

/* The Unicode normal form applied last. NFC is the pipeline's default: it only merges
 * canonically equivalent spellings (e + U+0301 -> é). NFKC also folds compatibility variants
 * (the "ﬁ" ligature -> "fi", full-width "Ａ" -> "A", "²" -> "2"), which loses some meaning. */
typedef enum alloy_norm_form {
    ALLOY_NORM_NONE = 0, /* repair, line ends and controls only */
    ALLOY_NORM_NFC,      /* canonical composition (the default) */
    ALLOY_NORM_NFKC,     /* compatibility composition */
} alloy_norm_form;

#define ALLOY_NORM_DEFAULT ALLOY_NORM_NFC

/* What alloy_normalize changed besides the normal form. */
typedef struct alloy_norm_stats {
    size_t invalid_replaced;    /* invalid UTF-8 sequences replaced by U+FFFD */
    size_t controls_removed;    /* C0/C1 control characters dropped (not TAB, LF, CR) */
    size_t line_ends_converted; /* CR LF pairs and lone CRs turned into LF */
} alloy_norm_stats;

/* Cleans n bytes of text (any bytes; `in` may be NULL when n == 0). The rule, in order:
 *   1. each invalid UTF-8 sequence becomes U+FFFD, by maximal subparts (alloy_utf8_repair);
 *   2. CR LF and a lone CR become LF;
 *   3. control characters U+0000–U+001F and U+007F–U+009F other than TAB and LF are removed
 *      (NUL, ESC, form feed, vertical tab and U+0085 NEL among them);
 *   4. the text is put in `form` (utf8proc, Unicode 15 tables of libutf8proc 2.8).
 * The result is valid UTF-8 with no CR and no controls but TAB and LF; it is idempotent.
 * *out (NUL-terminated, *out_n bytes before the NUL) is the caller's to alloy_free; on
 * failure *out is NULL and *out_n 0. stats may be NULL. Thread-safe.
 * Errors: USAGE (bad form, NULL out), NOMEM. */
alloy_status alloy_normalize(const char *in, size_t n, alloy_norm_form form, char **out, size_t *out_n,
                             alloy_norm_stats *stats);

/* ---- deduplication ---------------------------------------------------------------------- */

/* How documents are compared. Words are maximal runs of Unicode letters and digits (general
 * categories L* and N*), lowercased with utf8proc_tolower; everything else separates words
 * (so normalise first: in NFD text, combining marks would split words). A shingle is the
 * 64-bit hash of `shingle` consecutive words; a document with fewer words has one shingle of
 * all of them, and one with no words takes part in exact dedup only. */
typedef struct alloy_dedup_options {
    bool exact;          /* drop documents whose bytes hash (128-bit) like a kept document's */
    bool minhash;        /* drop near duplicates found by MinHash LSH */
    int shingle;         /* words per shingle: 1..64 (default 5) */
    int permutations;    /* MinHash signature length: 1..1024 (default 128) */
    int bands;           /* LSH bands (default 16) */
    int rows;            /* signature slots per band; bands·rows == permutations (default 8) */
    double threshold;    /* Jaccard similarity from which pairs are near duplicates: (0, 1] (default
                            0.8). A candidate counts when its estimate is >= threshold − 2σ, σ the
                            estimate's standard error there (0.035 for 0.8 and 128 permutations) */
    uint64_t seed;       /* draws the permutations (a_i, b_i); same seed, same verdicts */
} alloy_dedup_options;

/* exact and minhash on, 5-word shingles, 128 permutations in 16 bands of 8, threshold 0.8,
 * seed 1337. With these a pair of true Jaccard s becomes an LSH candidate with probability
 * 1 - (1 - s^8)^16: 0.95 at s = 0.8, 0.994 at 0.85, 0.61 at 0.7, 0.04 at 0.5. */
alloy_dedup_options alloy_dedup_defaults(void);

typedef enum alloy_dedup_kind {
    ALLOY_DEDUP_KEEP = 0, /* new: kept and remembered */
    ALLOY_DEDUP_EXACT,    /* the same bytes as a kept document (by 128-bit hash) */
    ALLOY_DEDUP_NEAR,     /* estimated Jaccard >= threshold − 2σ with a kept document */
} alloy_dedup_kind;

typedef struct alloy_dedup_verdict {
    alloy_dedup_kind kind; /* keep, or why it is dropped */
    uint64_t match_id;     /* EXACT/NEAR: the doc_id of the kept document it duplicates (for NEAR
                              the candidate with the highest estimate, ties to the earliest kept);
                              KEEP: the closest LSH candidate below the threshold, 0 if none */
    double jaccard;        /* estimated Jaccard with match_id (agreeing signature slots /
                              permutations); 1 for EXACT; 0 when there was no candidate */
    size_t candidates;     /* distinct kept documents the LSH bands proposed */
} alloy_dedup_verdict;

typedef struct alloy_dedup_stats {
    uint64_t seen;         /* documents checked */
    uint64_t kept;         /* verdict KEEP (now remembered) */
    uint64_t exact;        /* verdict EXACT */
    uint64_t near;         /* verdict NEAR */
    size_t memory;         /* bytes the index holds: at least 4·permutations + 20·bands + 36
                              per kept document and up to twice that as arrays double (870 to
                              1,700 bytes with the defaults), whatever the documents' lengths */
} alloy_dedup_stats;

/* A streaming deduplicator: each document is compared with the documents KEPT so far (a
 * dropped one is not remembered, so A kept, B near A dropped, C near B but not A: kept).
 * Not thread-safe: one per thread, or a lock around check. */
typedef struct alloy_dedup alloy_dedup;

/* Creates a deduplicator; opt NULL means the defaults. Errors: USAGE naming the bad option
 * (bands·rows != permutations, shingle outside 1..64, threshold outside (0, 1],
 * permutations outside 1..1024), NOMEM. *out is NULL on failure. */
alloy_status alloy_dedup_create(alloy_dedup **out, const alloy_dedup_options *opt);
void alloy_dedup_destroy(alloy_dedup *d); /* NULL is a no-op */

/* Checks one document (any bytes; invalid UTF-8 separates words; `text` may be NULL when
 * n == 0) and, if the verdict is KEEP, remembers it under doc_id (the caller's label, not
 * checked for uniqueness). On failure (NOMEM, or RANGE past 2^32 - 1 kept documents or band
 * entries) the document is neither counted nor remembered and d is unchanged.
 * Cost: O(n + shingles·permutations + candidates·permutations). */
alloy_status alloy_dedup_check(alloy_dedup *d, const char *text, size_t n, uint64_t doc_id,
                               alloy_dedup_verdict *v);

/* Counts so far and the bytes held. */
alloy_dedup_stats alloy_dedup_get_stats(const alloy_dedup *d);

ALLOY_END_DECLS
#endif /* ALLOY_DEDUP_H */
