/*
 * test_dedup.c — text normalisation and deduplication (alloy/dedup.h).
 *
 * Normalisation: NFC/NFKC examples, line ends, controls, UTF-8 repair, empty input, a fuzz of
 * random byte strings checked against an independent reference (our own clean-up written
 * differently, then utf8proc's own NFC/NFKC), and out-of-memory paths.
 * Dedup: option checks, exact dedup, short and wordless documents, memory bounded by kept
 * documents, out-of-memory paths, determinism, and the acceptance test of the issue: MinHash
 * recall and false-positive rate on a corpus with planted near duplicates whose true word
 * 5-gram Jaccard is computed exactly here.
 */
#include "alloy/dedup.h"
#include "harness.h"

#include <utf8proc.h>

/* ---- normalisation ---------------------------------------------------------------------- */

/* Prints s with non-printable bytes escaped (for failure messages). */
static const char *shown(const char *s, size_t n) {
    static char buf[4][512];
    static int which;
    char *b = buf[which++ & 3];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < sizeof buf[0]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\') b[o++] = (char)c;
        else o += (size_t)snprintf(b + o, sizeof buf[0] - o, "\\x%02X", c);
    }
    b[o] = '\0';
    return b;
}

/* Normalises in[0..n) and compares with expect; returns 1 when equal. */
static int norm_is(const char *in, size_t n, alloy_norm_form form, const char *expect, alloy_norm_stats *st) {
    char *out = NULL;
    size_t out_n = 0;
    alloy_status s = alloy_normalize(in, n, form, &out, &out_n, st);
    if (s != ALLOY_STATUS_OK) {
        fprintf(stderr, "  normalize(\"%s\") failed: %s\n", shown(in, n), alloy_last_error());
        return 0;
    }
    int ok = out_n == strlen(expect) && memcmp(out, expect, out_n) == 0 && out[out_n] == '\0';
    if (!ok) fprintf(stderr, "  normalize(\"%s\", form %d) = \"%s\", want \"%s\"\n", shown(in, n), (int)form,
                     shown(out, out_n), shown(expect, strlen(expect)));
    alloy_free(out);
    return ok;
}
#define NORM(in, form, expect, st) norm_is((in), sizeof(in) - 1, (form), (expect), (st))

static void test_normalize_forms(void) {
    // e + COMBINING ACUTE ACCENT composes to é under NFC and NFKC, stays apart under NONE.
    EXPECT(NORM("caf" "e\xCC\x81", ALLOY_NORM_NFC, "caf\xC3\xA9", NULL), "NFC composes e + U+0301");
    EXPECT(NORM("caf" "e\xCC\x81", ALLOY_NORM_NFKC, "caf\xC3\xA9", NULL), "NFKC composes e + U+0301");
    EXPECT(NORM("caf" "e\xCC\x81", ALLOY_NORM_NONE, "cafe\xCC\x81", NULL), "NONE leaves it");
    // Hangul jamo compose into a syllable (canonical).
    EXPECT(NORM("\xE1\x84\x80\xE1\x85\xA1", ALLOY_NORM_NFC, "\xEA\xB0\x80", NULL), "jamo -> U+AC00");
    // The "ﬁ" ligature (U+FB01) and full-width letters fold under NFKC only.
    EXPECT(NORM("\xEF\xAC\x81nd", ALLOY_NORM_NFKC, "find", NULL), "NFKC folds the fi ligature");
    EXPECT(NORM("\xEF\xAC\x81nd", ALLOY_NORM_NFC, "\xEF\xAC\x81nd", NULL), "NFC keeps the ligature");
    EXPECT(NORM("\xEF\xBC\xA1\xEF\xBD\x82\xEF\xBC\x91", ALLOY_NORM_NFKC, "Ab1", NULL), "NFKC folds full-width Ab1");
    EXPECT(NORM("\xEF\xBC\xA1\xEF\xBD\x82\xEF\xBC\x91", ALLOY_NORM_NFC, "\xEF\xBC\xA1\xEF\xBD\x82\xEF\xBC\x91", NULL),
           "NFC keeps full-width letters");
    EXPECT(NORM("x\xC2\xB2 \xC2\xBD", ALLOY_NORM_NFKC, "x2 1\xE2\x81\x84" "2", NULL), "NFKC: superscript two, one half");
    EXPECT(NORM("x\xC2\xB2 \xC2\xBD", ALLOY_NORM_NFC, "x\xC2\xB2 \xC2\xBD", NULL), "NFC keeps Latin-1 as is");
    // U+FDFA decomposes to 18 code points under NFKC: the decomposition buffer must grow.
    EXPECT(NORM("\xEF\xB7\xBA", ALLOY_NORM_NFKC,
                "\xD8\xB5\xD9\x84\xD9\x89 \xD8\xA7\xD9\x84\xD9\x84\xD9\x87 \xD8\xB9\xD9\x84\xD9\x8A\xD9\x87 "
                "\xD9\x88\xD8\xB3\xD9\x84\xD9\x85",
                NULL),
           "NFKC of U+FDFA");
    // A singleton (ANGSTROM SIGN -> Å) and canonical reordering of marks.
    EXPECT(NORM("\xE2\x84\xAB", ALLOY_NORM_NFC, "\xC3\x85", NULL), "U+212B -> U+00C5");
    EXPECT(NORM("a\xCC\x81\xCC\xA3", ALLOY_NORM_NFC, "\xE1\xBA\xA1\xCC\x81", NULL), "marks reorder, dot below composes");
}

static void test_normalize_lines_controls(void) {
    alloy_norm_stats st;
    EXPECT(NORM("a\r\nb\rc\nd\r", ALLOY_NORM_NFC, "a\nb\nc\nd\n", &st), "CR LF and CR -> LF");
    EXPECT(st.line_ends_converted == 3 && st.controls_removed == 0 && st.invalid_replaced == 0,
           "stats %zu %zu %zu", st.line_ends_converted, st.controls_removed, st.invalid_replaced);
    EXPECT(NORM("\r\r\n\n", ALLOY_NORM_NONE, "\n\n\n", &st), "CR, CR LF, LF");
    EXPECT(st.line_ends_converted == 2, "line ends %zu", st.line_ends_converted);
    // TAB and LF stay; other C0, DEL and C1 (NEL U+0085, U+009F) go; U+00A0 is no control.
    EXPECT(NORM("a\tb\x01" "c\x7F" "d\xC2\x85" "e\x1B[0m\x0C\x0B\xC2\x9F\xC2\xA0\n", ALLOY_NORM_NFC,
                "a\tbcde[0m\xC2\xA0\n", &st),
           "controls");
    EXPECT(st.controls_removed == 7, "controls removed %zu", st.controls_removed);
    char nul[] = {'a', '\0', 'b', '\0'};
    EXPECT(norm_is(nul, 4, ALLOY_NORM_NFC, "ab", &st) && st.controls_removed == 2, "NUL bytes removed");
    // A control between a letter and its mark goes first, so they compose.
    EXPECT(NORM("e\x07\xCC\x81", ALLOY_NORM_NFC, "\xC3\xA9", NULL), "control removed before NFC");
}

static void test_normalize_invalid(void) {
    alloy_norm_stats st;
    // A stray continuation, a truncated 3-byte sequence, then a truncated 4-byte one at the end:
    // each maximal subpart is one U+FFFD.
    EXPECT(NORM("a\x80" "b\xE2\x82" "c\xF0\x9F\x98", ALLOY_NORM_NFC, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD", &st),
           "maximal subparts");
    EXPECT(st.invalid_replaced == 3, "replaced %zu", st.invalid_replaced);
    // Overlong, surrogate and out-of-range: every byte is its own subpart (Unicode table 3-8).
    EXPECT(NORM("\xC0\xAF\xED\xA0\x80\xF4\x90\x80\x80", ALLOY_NORM_NFC,
                "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD",
                &st),
           "overlong, surrogate, > U+10FFFF");
    EXPECT(st.invalid_replaced == 9, "replaced %zu", st.invalid_replaced);
    // An invalid byte before a mark: U+FFFD does not compose with it, but the mark stays.
    EXPECT(NORM("\xFF\xCC\x81", ALLOY_NORM_NFC, "\xEF\xBF\xBD\xCC\x81", &st) && st.invalid_replaced == 1, "FF + mark");
    // Valid text reports nothing.
    EXPECT(NORM("h\xC3\xA9llo \xF0\x9F\x98\x80", ALLOY_NORM_NFKC, "h\xC3\xA9llo \xF0\x9F\x98\x80", &st) &&
               st.invalid_replaced == 0 && st.controls_removed == 0 && st.line_ends_converted == 0,
           "valid text unchanged");
}

static void test_normalize_empty_and_usage(void) {
    for (int f = 0; f < 3; f++) {
        char *out = (char *)1;
        size_t out_n = 99;
        alloy_norm_stats st = {1, 1, 1};
        REQUIRE(alloy_normalize(NULL, 0, (alloy_norm_form)f, &out, &out_n, &st) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(out && out_n == 0 && out[0] == '\0', "empty in, empty NUL-terminated out");
        EXPECT(st.invalid_replaced == 0 && st.controls_removed == 0 && st.line_ends_converted == 0, "stats zeroed");
        alloy_free(out);
        REQUIRE(alloy_normalize("", 0, (alloy_norm_form)f, &out, &out_n, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(out_n == 0, "\"\" -> \"\"");
        alloy_free(out);
    }
    // Only controls: everything goes.
    EXPECT(NORM("\x01\x02\x7F", ALLOY_NORM_NFC, "", NULL), "controls only");
    char *out = (char *)1;
    size_t out_n = 5;
    EXPECT(alloy_normalize("x", 1, (alloy_norm_form)7, &out, &out_n, NULL) == ALLOY_STATUS_USAGE && says("form"),
           "bad form: %s", alloy_last_error());
    EXPECT(out == NULL && out_n == 0, "out cleared on failure");
    EXPECT(alloy_normalize(NULL, 3, ALLOY_NORM_NFC, &out, &out_n, NULL) == ALLOY_STATUS_USAGE, "NULL text with n > 0");
    EXPECT(alloy_normalize("x", 1, ALLOY_NORM_NFC, NULL, &out_n, NULL) == ALLOY_STATUS_USAGE, "NULL out");
}

/* The reference: repair, then line ends and controls decided per code point, then utf8proc's
 * own NFC/NFKC (which allocate with malloc). Returns a malloc'd NUL-terminated string. */
static char *reference_normalize(const char *in, size_t n, alloy_norm_form form, size_t *out_n) {
    char *rep = malloc(3 * n + 1), *clean = malloc(3 * n + 1);
    ALLOY_ASSERT(rep && clean);
    size_t m = alloy_utf8_repair(in, n, rep, NULL), o = 0;
    for (size_t i = 0; i < m;) {
        uint32_t cp;
        size_t len = alloy_utf8_decode(rep + i, m - i, &cp);
        ALLOY_ASSERT(len > 0);
        if (cp == '\r') {
            clean[o++] = '\n';
            i += (i + 1 < m && rep[i + 1] == '\n') ? 2 : 1;
            continue;
        }
        bool control = (cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7F && cp <= 0x9F);
        if (!control) memcpy(clean + o, rep + i, len), o += len;
        i += len;
    }
    clean[o] = '\0';
    free(rep);
    if (form == ALLOY_NORM_NONE) {
        *out_n = o;
        return clean;
    }
    char *r = (char *)(form == ALLOY_NORM_NFC ? utf8proc_NFC((const utf8proc_uint8_t *)clean)
                                              : utf8proc_NFKC((const utf8proc_uint8_t *)clean));
    free(clean);
    ALLOY_ASSERT(r);
    *out_n = strlen(r);
    return r;
}

/* Random byte strings built from pieces chosen to hit every rule and their interactions. */
static size_t fuzz_string(alloy_rng *rng, char *buf, size_t cap) {
    static const char *const pieces[] = {
        "a", "Z", " ", "\r", "\n", "\r\n", "\t", "\x01", "\x00", "\x1B", "\x7F", "\xC2\x85", "\xC2\x9F", "\xC2\xA0",
        "\xCC\x81", "\xCC\xA3", "e", "\xC3\xA9", "\xC3\x80", "\xEF\xAC\x81", "\xEF\xBC\xA1", "\xEF\xB7\xBA",
        "\xE1\x84\x80", "\xE1\x85\xA1", "\xE1\x86\xA8", "\xE2\x84\xAB", "\xCD\x84", "\xC2\xB2", "\xC2\xBD",
        "\xF0\x9F\x98\x80", "\xE2\x82", "\xF0\x9F", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "\xFF",
        "\xE0\xA4\x95\xE0\xA4\xBC", "\xEF\xBF\xBD", "\xEF\xBF\xBE", "\xD7\x90\xD6\xB7",
        "<", "\xCC\xB8", "\xE2\x84\xAA", "\xE1\xBE\xBF", "\xE0\xB3\x86", "\xE0\xB3\x95",
    };
    size_t n_pieces = sizeof pieces / sizeof pieces[0], o = 0;
    size_t count = (size_t)alloy_rng_below(rng, 40);
    for (size_t j = 0; j < count; j++) {
        if (alloy_rng_below(rng, 3) == 0) { // a random byte
            if (o + 1 > cap) break;
            buf[o++] = (char)alloy_rng_below(rng, 256);
            continue;
        }
        size_t p = (size_t)alloy_rng_below(rng, n_pieces);
        size_t len = p == 8 ? 1 : strlen(pieces[p]); // piece 8 is a NUL byte
        if (o + len > cap) break;
        memcpy(buf + o, pieces[p], len);
        o += len;
    }
    return o;
}

static void test_normalize_fuzz(void) {
    alloy_rng rng;
    alloy_rng_seed(&rng, 20240611);
    char in[256];
    int failures = 0, mismatches = 0, not_idempotent = 0, bad_output = 0, runs = 0;
    for (int it = 0; it < 4000; it++) {
        size_t n = fuzz_string(&rng, in, sizeof in);
        for (int f = 0; f < 3; f++, runs++) {
            char *out;
            size_t out_n;
            if (alloy_normalize(in, n, (alloy_norm_form)f, &out, &out_n, NULL) != ALLOY_STATUS_OK) {
                if (failures++ < 3) fprintf(stderr, "  failed on \"%s\": %s\n", shown(in, n), alloy_last_error());
                continue;
            }
            // Valid UTF-8, NUL-terminated, no CR, no control but TAB and LF.
            bool ok = alloy_utf8_valid_prefix(out, out_n) == out_n && out[out_n] == '\0';
            for (size_t i = 0; ok && i < out_n;) {
                uint32_t cp;
                size_t len = alloy_utf8_decode(out + i, out_n - i, &cp);
                ok = len > 0 && !((cp < 0x20 && cp != '\t' && cp != '\n') || (cp >= 0x7F && cp <= 0x9F));
                i += len ? len : 1;
            }
            if (!ok && bad_output++ < 3) fprintf(stderr, "  bad output for \"%s\": \"%s\"\n", shown(in, n), shown(out, out_n));
            size_t ref_n;
            char *ref = reference_normalize(in, n, (alloy_norm_form)f, &ref_n);
            if ((ref_n != out_n || memcmp(ref, out, out_n) != 0) && mismatches++ < 3)
                fprintf(stderr, "  form %d of \"%s\": \"%s\", reference \"%s\"\n", f, shown(in, n), shown(out, out_n),
                        shown(ref, ref_n));
            free(ref);
            char *again;
            size_t again_n;
            if (alloy_normalize(out, out_n, (alloy_norm_form)f, &again, &again_n, NULL) == ALLOY_STATUS_OK) {
                if ((again_n != out_n || memcmp(again, out, out_n) != 0) && not_idempotent++ < 3)
                    fprintf(stderr, "  not idempotent: \"%s\" -> \"%s\"\n", shown(out, out_n), shown(again, again_n));
                alloy_free(again);
            } else {
                failures++;
            }
            alloy_free(out);
        }
    }
    printf("# normalize fuzz: %d runs, %d failures, %d bad outputs, %d reference mismatches, %d not idempotent\n", runs,
           failures, bad_output, mismatches, not_idempotent);
    EXPECT(failures == 0, "%d calls failed", failures);
    EXPECT(bad_output == 0, "%d outputs invalid or with controls", bad_output);
    EXPECT(mismatches == 0, "%d differ from the reference", mismatches);
    EXPECT(not_idempotent == 0, "%d not idempotent", not_idempotent);
}

static void test_normalize_oom(void) {
    static const char *const inputs[] = {"plain ascii\r\n", "caf\xC3\xA9\r", "e\xCC\x81\xFF", "\xEF\xB7\xBA x"};
    int clean_failures = 0, bad = 0;
    for (int k = 0; k < 4; k++) {
        for (int f = 0; f < 3; f++) {
            for (long fail_at = 1; fail_at < 10; fail_at++) {
                char *out = (char *)1;
                size_t out_n = 7;
                alloy_alloc_fail_after(fail_at);
                alloy_status s = alloy_normalize(inputs[k], strlen(inputs[k]), (alloy_norm_form)f, &out, &out_n, NULL);
                alloy_alloc_fail_after(0);
                if (s == ALLOY_STATUS_OK) {
                    alloy_free(out);
                    break;
                }
                clean_failures++;
                if (s != ALLOY_STATUS_NOMEM || out != NULL || out_n != 0) bad++;
            }
        }
    }
    EXPECT(clean_failures > 12, "only %d injected failures reached", clean_failures);
    EXPECT(bad == 0, "%d failures were not NOMEM with out cleared", bad);
}

/* ---- dedup: small cases ----------------------------------------------------------------- */

static alloy_dedup_kind check_kind(alloy_dedup *d, const char *text, uint64_t id, alloy_dedup_verdict *v) {
    alloy_dedup_verdict local;
    if (!v) v = &local;
    alloy_status s = alloy_dedup_check(d, text, strlen(text), id, v);
    if (s != ALLOY_STATUS_OK) {
        fprintf(stderr, "  check failed: %s\n", alloy_last_error());
        return (alloy_dedup_kind)-1;
    }
    return v->kind;
}

static void test_dedup_options(void) {
    alloy_dedup_options o = alloy_dedup_defaults();
    EXPECT(o.exact && o.minhash && o.shingle == 5 && o.permutations == 128 && o.bands == 16 && o.rows == 8 &&
               o.threshold == 0.8,
           "defaults");
    alloy_dedup *d = (alloy_dedup *)1;
    o.bands = 10;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("bands") && says("permutations"), "bands: %s",
           alloy_last_error());
    EXPECT(d == NULL, "out cleared");
    o = alloy_dedup_defaults();
    o.shingle = 0;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("shingle"), "shingle 0: %s", alloy_last_error());
    o.shingle = 65;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("shingle"), "shingle 65");
    o = alloy_dedup_defaults();
    o.threshold = 0;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("threshold"), "threshold 0: %s", alloy_last_error());
    o.threshold = 1.01;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("threshold"), "threshold 1.01");
    o.threshold = NAN;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("threshold"), "threshold NaN");
    o = alloy_dedup_defaults();
    o.permutations = 2048, o.bands = 256;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("permutations"), "2048: %s", alloy_last_error());
    o.permutations = 0, o.bands = 0, o.rows = 0;
    EXPECT(alloy_dedup_create(&d, &o) == ALLOY_STATUS_USAGE && says("permutations"), "0");
    EXPECT(alloy_dedup_create(NULL, NULL) == ALLOY_STATUS_USAGE, "NULL out");
    // Edges that are allowed: 1024 = 1024 x 1, shingle 64, threshold 1; NULL means defaults.
    o = alloy_dedup_defaults();
    o.permutations = 1024, o.bands = 1024, o.rows = 1, o.shingle = 64, o.threshold = 1.0;
    REQUIRE(alloy_dedup_create(&d, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dedup_destroy(d);
    REQUIRE(alloy_dedup_create(&d, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dedup_verdict v;
    EXPECT(alloy_dedup_check(d, NULL, 4, 1, &v) == ALLOY_STATUS_USAGE, "NULL text with n > 0");
    EXPECT(alloy_dedup_check(d, "x", 1, 1, NULL) == ALLOY_STATUS_USAGE, "NULL verdict");
    EXPECT(alloy_dedup_get_stats(d).seen == 0, "failed checks are not counted");
    alloy_dedup_destroy(d);
    alloy_dedup_destroy(NULL);
}

static const char *PARA =
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "wonders whether the rain will come before the harvest is in, as it did three years ago "
    "when the barley rotted in the field and the whole village went hungry through the winter.";

static void test_dedup_exact(void) {
    alloy_dedup_options o = alloy_dedup_defaults();
    o.minhash = false;
    alloy_dedup *d;
    REQUIRE(alloy_dedup_create(&d, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dedup_verdict v;
    EXPECT(check_kind(d, PARA, 10, &v) == ALLOY_DEDUP_KEEP, "first copy kept");
    EXPECT(check_kind(d, PARA, 11, &v) == ALLOY_DEDUP_EXACT && v.match_id == 10 && v.jaccard == 1.0,
           "second copy: kind %d match %llu", (int)v.kind, (unsigned long long)v.match_id);
    char *one = alloy_strdup(PARA);
    one[4] = 'Q'; // one character differs
    EXPECT(check_kind(d, one, 12, &v) == ALLOY_DEDUP_KEEP, "a one-character difference is kept (exact only)");
    EXPECT(check_kind(d, one, 13, &v) == ALLOY_DEDUP_EXACT && v.match_id == 12, "and its copy dropped");
    one[strlen(one) - 1] = '\0'; // a prefix
    EXPECT(check_kind(d, one, 14, &v) == ALLOY_DEDUP_KEEP, "a prefix is not the same text");
    EXPECT(alloy_dedup_check(d, "", 0, 15, &v) == ALLOY_STATUS_OK && v.kind == ALLOY_DEDUP_KEEP, "empty doc kept");
    EXPECT(alloy_dedup_check(d, NULL, 0, 16, &v) == ALLOY_STATUS_OK && v.kind == ALLOY_DEDUP_EXACT && v.match_id == 15,
           "second empty doc dropped");
    // Binary junk and embedded NULs are just bytes.
    char junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (char)(i * 37);
    EXPECT(alloy_dedup_check(d, junk, 64, 17, &v) == ALLOY_STATUS_OK && v.kind == ALLOY_DEDUP_KEEP, "junk kept");
    EXPECT(alloy_dedup_check(d, junk, 64, 18, &v) == ALLOY_STATUS_OK && v.kind == ALLOY_DEDUP_EXACT, "junk copy");
    junk[63] ^= 1;
    EXPECT(alloy_dedup_check(d, junk, 64, 19, &v) == ALLOY_STATUS_OK && v.kind == ALLOY_DEDUP_KEEP, "last bit differs");
    alloy_dedup_stats st = alloy_dedup_get_stats(d);
    EXPECT(st.seen == 10 && st.kept == 6 && st.exact == 4 && st.near == 0, "stats %llu %llu %llu %llu",
           (unsigned long long)st.seen, (unsigned long long)st.kept, (unsigned long long)st.exact,
           (unsigned long long)st.near);
    alloy_dedup_destroy(d);

    // With MinHash on too, the one-character variant is a near duplicate instead.
    REQUIRE(alloy_dedup_create(&d, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    one[strlen(one)] = '.';
    EXPECT(check_kind(d, PARA, 1, &v) == ALLOY_DEDUP_KEEP, "kept");
    EXPECT(check_kind(d, PARA, 2, &v) == ALLOY_DEDUP_EXACT, "exact wins over near");
    // one is PARA with "The Quick": the same words, other bytes
    EXPECT(check_kind(d, one, 3, &v) == ALLOY_DEDUP_NEAR && v.match_id == 1 && v.jaccard == 1.0,
           "case differs only: near with estimate 1 (kind %d, J %.3f)", (int)v.kind, v.jaccard);
    alloy_dedup_destroy(d);
    alloy_free(one);
}

static void test_dedup_short_and_wordless(void) {
    alloy_dedup *d;
    alloy_dedup_options o = alloy_dedup_defaults();
    o.exact = false; // so that the same bytes must be found by MinHash
    REQUIRE(alloy_dedup_create(&d, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dedup_verdict v;
    // Fewer than 5 words: one shingle of all of them; case and punctuation do not matter.
    EXPECT(check_kind(d, "Hello, world!", 1, &v) == ALLOY_DEDUP_KEEP, "kept");
    EXPECT(check_kind(d, "hello world", 2, &v) == ALLOY_DEDUP_NEAR && v.match_id == 1, "same words: near");
    EXPECT(check_kind(d, "world hello", 3, &v) == ALLOY_DEDUP_KEEP, "order matters");
    EXPECT(check_kind(d, "hello there", 4, &v) == ALLOY_DEDUP_KEEP, "other words");
    // Unicode words: letters and digits of any script, lowercased with utf8proc.
    EXPECT(check_kind(d, "\xD0\x96\xD0\x98\xD0\x97\xD0\xAC 42 \xC3\x89T\xC3\x89", 5, &v) == ALLOY_DEDUP_KEEP, "kept");
    EXPECT(check_kind(d, "\xD0\xB6\xD0\xB8\xD0\xB7\xD1\x8C-42...\xC3\xA9t\xC3\xA9", 6, &v) == ALLOY_DEDUP_NEAR &&
               v.match_id == 5,
           "Cyrillic and Latin-1 lowercased: kind %d", (int)v.kind);
    // No words at all: exact dedup only (here off), so kept every time.
    EXPECT(check_kind(d, "... --- !!!", 7, &v) == ALLOY_DEDUP_KEEP && v.candidates == 0, "wordless kept");
    EXPECT(check_kind(d, "... --- !!!", 8, &v) == ALLOY_DEDUP_KEEP, "wordless again (no exact)");
    EXPECT(check_kind(d, "", 9, &v) == ALLOY_DEDUP_KEEP, "empty");
    alloy_dedup_destroy(d);

    REQUIRE(alloy_dedup_create(&d, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(check_kind(d, "... --- !!!", 1, &v) == ALLOY_DEDUP_KEEP, "wordless kept");
    EXPECT(check_kind(d, "... --- !!!", 2, &v) == ALLOY_DEDUP_EXACT && v.match_id == 1, "exact still works");
    EXPECT(check_kind(d, "... --- ???", 3, &v) == ALLOY_DEDUP_KEEP, "other punctuation kept");
    alloy_dedup_destroy(d);
}

/* A document of `words` distinct-ish words, different for every `tag`. */
static char *make_doc(int tag, int words) {
    size_t cap = (size_t)words * 16 + 1, o = 0;
    char *s = malloc(cap);
    ALLOY_ASSERT(s);
    for (int i = 0; i < words; i++) o += (size_t)snprintf(s + o, cap - o, "w%dx%d ", tag, i);
    return s;
}

static void test_dedup_memory_bounded(void) {
    alloy_dedup *d;
    REQUIRE(alloy_dedup_create(&d, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *big = make_doc(0, 20000); // ~150 KB
    alloy_dedup_verdict v;
    EXPECT(check_kind(d, big, 0, &v) == ALLOY_DEDUP_KEEP, "kept");
    size_t m1 = alloy_dedup_get_stats(d).memory;
    int wrong = 0;
    for (int i = 1; i <= 300; i++) {
        if (i % 2) {
            wrong += check_kind(d, big, (uint64_t)i, &v) != ALLOY_DEDUP_EXACT;
        } else { // change one word somewhere: a near duplicate
            char *p = strstr(big, " w0x");
            size_t at = (size_t)(p - big) + (size_t)i * 37 % 100000;
            char saved = big[at];
            big[at] = big[at] == 'z' ? 'y' : 'z';
            wrong += check_kind(d, big, (uint64_t)i, &v) != ALLOY_DEDUP_NEAR;
            big[at] = saved;
        }
    }
    EXPECT(wrong == 0, "%d copies not dropped", wrong);
    size_t m2 = alloy_dedup_get_stats(d).memory;
    EXPECT(m1 == m2, "memory grew from %zu to %zu on dropped documents", m1, m2);
    free(big);
    alloy_dedup_destroy(d);

    // 200 kept documents of 50 words or of 5000 words: the same memory.
    size_t mem[2];
    for (int r = 0; r < 2; r++) {
        REQUIRE(alloy_dedup_create(&d, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        for (int i = 0; i < 200; i++) {
            char *doc = make_doc(i + 1, r ? 5000 : 50);
            EXPECT(check_kind(d, doc, (uint64_t)i, NULL) == ALLOY_DEDUP_KEEP, "doc %d", i);
            free(doc);
        }
        mem[r] = alloy_dedup_get_stats(d).memory;
        alloy_dedup_destroy(d);
    }
    printf("# memory for 200 kept documents: %zu bytes (%zu per document)\n", mem[0], mem[0] / 200);
    EXPECT(mem[0] == mem[1], "memory %zu for short documents, %zu for long ones", mem[0], mem[1]);
}

static void test_dedup_oom(void) {
    char *docs[300];
    for (int i = 0; i < 300; i++) docs[i] = make_doc(i + 1, 40);
    int injected = 0, bad = 0, completed = 0;
    for (long fail_at = 1; fail_at < 200 && !completed; fail_at++) {
        alloy_dedup *d = (alloy_dedup *)1;
        alloy_alloc_fail_after(fail_at);
        alloy_status s = alloy_dedup_create(&d, NULL);
        if (s != ALLOY_STATUS_OK) {
            alloy_alloc_fail_after(0);
            injected++;
            bad += s != ALLOY_STATUS_NOMEM || d != NULL;
            continue;
        }
        int i = 0;
        alloy_dedup_verdict v;
        for (; i < 300; i++) {
            s = alloy_dedup_check(d, docs[i], strlen(docs[i]), (uint64_t)i, &v);
            if (s != ALLOY_STATUS_OK) break;
        }
        alloy_alloc_fail_after(0);
        if (i == 300) {
            completed = 1;
        } else {
            injected++;
            bad += s != ALLOY_STATUS_NOMEM;
            // The failed document was not remembered; the index still works.
            alloy_dedup_stats st = alloy_dedup_get_stats(d);
            bad += st.seen != (uint64_t)i || st.kept != (uint64_t)i;
            bad += check_kind(d, docs[i], (uint64_t)i, NULL) != ALLOY_DEDUP_KEEP;
            for (int j = 0; j <= i; j++) bad += check_kind(d, docs[j], 1000, NULL) != ALLOY_DEDUP_EXACT;
            for (int j = i + 1; j < 300; j++) bad += check_kind(d, docs[j], (uint64_t)j, NULL) != ALLOY_DEDUP_KEEP;
            char *near = alloy_strdup(docs[i]);
            near[1] = 'q'; // first word changes: still a near duplicate of docs[i]
            alloy_dedup_verdict nv;
            bad += check_kind(d, near, 2000, &nv) != ALLOY_DEDUP_NEAR || nv.match_id != (uint64_t)i;
            alloy_free(near);
        }
        alloy_dedup_destroy(d);
    }
    for (int i = 0; i < 300; i++) free(docs[i]);
    EXPECT(completed, "no run got through all documents");
    EXPECT(injected > 10, "only %d injected failures", injected);
    EXPECT(bad == 0, "%d wrong results after injected failures", bad);
}

/* ---- dedup: the MinHash acceptance test ------------------------------------------------- */

#define VOCAB 4000     /* pseudo-words, < 4096 so that a 5-gram packs into 60 bits */
#define N_BASE 2000    /* unrelated base documents */
#define N_EXACT 100    /* byte-identical copies of base documents */
#define N_TMPL 10      /* boilerplate blocks: every 5th base document opens with one */

/* Word i of the vocabulary: two or three consonant-vowel syllables spelling i, some with é,
 * ö or a Cyrillic ж, all distinct and lowercase. */
static void make_word(int i, char *out) {
    static const char C[] = "bcdfghjklmnprstvz", Vw[] = "aeiou";
    int syl[3] = {i % 85, i / 85 % 85, (i * 7 + 3) % 85}, ns = i % 3 == 0 ? 3 : 2;
    size_t o = 0;
    if (i % 25 == 11) memcpy(out, "\xD0\xB6", 2), o = 2;
    for (int s = 0; s < ns; s++) {
        out[o++] = C[syl[s] / 5];
        char v = Vw[syl[s] % 5];
        if (v == 'e' && i % 10 == 3) memcpy(out + o, "\xC3\xA9", 2), o += 2;
        else if (v == 'o' && i % 10 == 7) memcpy(out + o, "\xC3\xB6", 2), o += 2;
        else out[o++] = v;
    }
    out[o] = '\0';
}

static int zipf_word(alloy_rng *rng, const double *cdf) {
    double u = alloy_rng_uniform(rng) * cdf[VOCAB - 1];
    int lo = 0, hi = VOCAB - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cdf[mid] < u) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Words as text: spaces, commas, full stops with a capital after them, some paragraph
 * breaks. The punctuation is random, so two renderings of the same words differ in bytes. */
static char *render(const uint16_t *w, int m, char vocab[][16], alloy_rng *rng, size_t *out_n) {
    size_t cap = (size_t)m * 20 + 16, o = 0;
    char *s = malloc(cap);
    ALLOY_ASSERT(s);
    bool capital = true;
    for (int i = 0; i < m; i++) {
        if (i) s[o++] = ' ';
        const char *word = vocab[w[i]];
        size_t len = strlen(word);
        memcpy(s + o, word, len);
        if (capital) {
            if ((unsigned char)s[o] < 0x80) s[o] = (char)(s[o] - 'a' + 'A');
            else s[o + 1] = (char)0x96; // ж (D0 B6) -> Ж (D0 96)
            capital = false;
        }
        o += len;
        double u = alloy_rng_uniform(rng);
        if (u < 0.05) {
            s[o++] = ',';
        } else if (u < 0.10) {
            s[o++] = '.';
            capital = true;
            if (alloy_rng_uniform(rng) < 0.2) s[o++] = '\n', s[o++] = '\n';
        }
    }
    s[o++] = '.';
    s[o] = '\0';
    *out_n = o;
    return s;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The distinct word 5-grams of w, packed exactly into 60 bits, sorted, into out; returns how many. */
static size_t shingle_set(const uint16_t *w, int m, uint64_t *out) {
    size_t n = 0;
    for (int i = 0; i + 5 <= m; i++)
        out[n++] = (uint64_t)w[i] | (uint64_t)w[i + 1] << 12 | (uint64_t)w[i + 2] << 24 | (uint64_t)w[i + 3] << 36 |
                   (uint64_t)w[i + 4] << 48;
    qsort(out, n, sizeof *out, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || out[i] != out[u - 1]) out[u++] = out[i];
    return u;
}

static double true_jaccard(const uint16_t *a, int ma, const uint16_t *b, int mb) {
    uint64_t *sa = malloc(sizeof(uint64_t) * (size_t)(ma + mb + 1)), *sb = malloc(sizeof(uint64_t) * (size_t)(mb + 1));
    ALLOY_ASSERT(sa && sb);
    size_t na = shingle_set(a, ma, sa), nb = shingle_set(b, mb, sb), i = 0, j = 0, inter = 0;
    while (i < na && j < nb) {
        if (sa[i] == sb[j]) inter++, i++, j++;
        else if (sa[i] < sb[j]) i++;
        else j++;
    }
    free(sa);
    free(sb);
    return (double)inter / (double)(na + nb - inter);
}

/* A near duplicate of b[0..m) aiming at true Jaccard `target`: no edit (same words, new
 * punctuation), k scattered word edits (substitute, delete or insert at random places), or
 * one contiguous block replaced. Returns its length; *edits gets the number of words edited. */
static int make_variant(const uint16_t *b, int m, uint16_t *out, double target, alloy_rng *rng, const double *cdf,
                        int *edits) {
    double kept = 2 * target / (1 + target); // fraction of shingles in both when J = target
    double u = alloy_rng_uniform(rng);
    memcpy(out, b, sizeof *b * (size_t)m);
    int len = m;
    *edits = 0;
    if (u < 0.05) return len;
    if (u < 0.70) { // scattered: each edit breaks the 5 shingles over it, so kept ≈ (1-q)^5
        int k = (int)lround((1 - pow(kept, 0.2)) * m);
        if (k < 1) k = 1;
        for (int e = 0; e < k; e++) {
            int op = (int)alloy_rng_below(rng, 3), pos = (int)alloy_rng_below(rng, (uint64_t)len);
            if (op == 0) {
                out[pos] = (uint16_t)zipf_word(rng, cdf);
            } else if (op == 1 && len > 20) {
                memmove(out + pos, out + pos + 1, sizeof *out * (size_t)(len - pos - 1));
                len--;
            } else {
                memmove(out + pos + 1, out + pos, sizeof *out * (size_t)(len - pos));
                out[pos] = (uint16_t)zipf_word(rng, cdf);
                len++;
            }
        }
        *edits = k;
        return len;
    }
    // one block of L words (breaking L + 4 shingles) replaced by L ± 2 new words
    int L = (int)lround((1 - kept) * m) - 4;
    if (L < 1) L = 1;
    if (L > m - 20) L = m - 20;
    int L2 = L + (int)alloy_rng_below(rng, 5) - 2;
    if (L2 < 0) L2 = 0;
    int pos = (int)alloy_rng_below(rng, (uint64_t)(m - L));
    memmove(out + pos + L2, b + pos + L, sizeof *out * (size_t)(m - pos - L));
    for (int i = 0; i < L2; i++) out[pos + i] = (uint16_t)zipf_word(rng, cdf);
    *edits = L > L2 ? L : L2;
    return m - L + L2;
}

typedef struct corpus {
    char (*vocab)[16];   /* (VOCAB) */
    char **text;         /* (n_docs) in stream order */
    size_t *text_n;      /* (n_docs) */
    uint64_t *id;        /* (n_docs) doc ids: base j = j, variant of j = N_BASE + j, copy c = 2·N_BASE + c */
    int n_docs;
    double *true_j;      /* (N_BASE) variant of j against base j */
    int *edits;          /* (N_BASE) words edited in variant j */
    int *copy_of;        /* (N_EXACT) the base each exact copy repeats */
    uint16_t **base;     /* (N_BASE) words of each base document */
    int *base_len;       /* (N_BASE) */
    int tmpl_pairs;      /* base pairs sharing a boilerplate block */
    double tmpl_j_min;   /* their true Jaccard range */
    double tmpl_j_max;
    size_t bytes;        /* total text */
} corpus;

static void corpus_build(corpus *c) {
    memset(c, 0, sizeof *c);
    alloy_rng rng;
    alloy_rng_seed(&rng, 77);
    c->vocab = malloc(sizeof *c->vocab * VOCAB);
    double *cdf = malloc(sizeof *cdf * VOCAB);
    int *order = malloc(sizeof *order * VOCAB);
    // Zipf-Mandelbrot frequencies over a shuffled vocabulary (so that frequent words are of
    // every shape): p(rank r) ∝ 1 / (r + 2.7).
    for (int i = 0; i < VOCAB; i++) make_word(i, c->vocab[i]), order[i] = i;
    for (int i = VOCAB - 1; i > 0; i--) {
        int j = (int)alloy_rng_below(&rng, (uint64_t)i + 1), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    double *p = calloc(VOCAB, sizeof *p);
    for (int r = 0; r < VOCAB; r++) p[order[r]] = 1.0 / (r + 2.7);
    for (int i = 0; i < VOCAB; i++) cdf[i] = p[i] + (i ? cdf[i - 1] : 0);
    free(p);
    free(order);

    int n_docs = 2 * N_BASE + N_EXACT;
    c->text = calloc((size_t)n_docs, sizeof *c->text);
    c->text_n = calloc((size_t)n_docs, sizeof *c->text_n);
    c->id = calloc((size_t)n_docs, sizeof *c->id);
    c->true_j = calloc(N_BASE, sizeof *c->true_j);
    c->edits = calloc(N_BASE, sizeof *c->edits);
    c->copy_of = calloc(N_EXACT, sizeof *c->copy_of);
    uint16_t **base = c->base = calloc(N_BASE, sizeof *base);
    int *base_len = c->base_len = calloc(N_BASE, sizeof *base_len);
    uint16_t *var = malloc(sizeof *var * 1024);
    int *perm = malloc(sizeof *perm * N_BASE);
    ALLOY_ASSERT(c->vocab && cdf && c->text && c->text_n && c->id && c->true_j && c->edits && c->copy_of && base &&
                 base_len && var && perm);

    // Boilerplate: related but distinct documents (pages of one site), true J ~0.2-0.5.
    uint16_t tmpl[N_TMPL][220];
    int tmpl_len[N_TMPL];
    for (int t = 0; t < N_TMPL; t++) {
        tmpl_len[t] = 150 + (int)alloy_rng_below(&rng, 71);
        for (int i = 0; i < tmpl_len[t]; i++) tmpl[t][i] = (uint16_t)zipf_word(&rng, cdf);
    }
    for (int j = 0; j < N_BASE; j++) {
        int t = j % 5 == 0 ? j / 5 % N_TMPL : -1;
        int head = t >= 0 ? tmpl_len[t] : 0, m = head + (t >= 0 ? 120 : 200) + (int)alloy_rng_below(&rng, 201 - (t >= 0) * 100);
        base[j] = malloc(sizeof **base * (size_t)m);
        ALLOY_ASSERT(base[j]);
        if (head) memcpy(base[j], tmpl[t], sizeof **base * (size_t)head);
        for (int i = head; i < m; i++) base[j][i] = (uint16_t)zipf_word(&rng, cdf);
        base_len[j] = m;
        c->text[j] = render(base[j], m, c->vocab, &rng, &c->text_n[j]);
        c->id[j] = (uint64_t)j;
        perm[j] = j;
    }
    for (int i = N_BASE - 1; i > 0; i--) { // variants arrive in random order after all bases
        int j = (int)alloy_rng_below(&rng, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0; i < N_BASE; i++) {
        int j = perm[i];
        double target = 0.45 + 0.55 * alloy_rng_uniform(&rng);
        int m = make_variant(base[j], base_len[j], var, target, &rng, cdf, &c->edits[j]);
        c->true_j[j] = true_jaccard(base[j], base_len[j], var, m);
        c->text[N_BASE + i] = render(var, m, c->vocab, &rng, &c->text_n[N_BASE + i]);
        c->id[N_BASE + i] = (uint64_t)(N_BASE + j);
    }
    for (int e = 0; e < N_EXACT; e++) {
        int j = (int)alloy_rng_below(&rng, N_BASE), at = 2 * N_BASE + e;
        c->copy_of[e] = j;
        c->text[at] = malloc(c->text_n[j] + 1);
        ALLOY_ASSERT(c->text[at]);
        memcpy(c->text[at], c->text[j], c->text_n[j] + 1);
        c->text_n[at] = c->text_n[j];
        c->id[at] = (uint64_t)(2 * N_BASE + e);
    }
    c->n_docs = n_docs;
    for (int i = 0; i < n_docs; i++) c->bytes += c->text_n[i];
    c->tmpl_j_min = 1;
    for (int a = 0; a < N_BASE; a += 5)
        for (int b = a + 5 * N_TMPL; b < N_BASE; b += 5 * N_TMPL) { // same template: a ≡ b (mod 50)
            double jab = true_jaccard(base[a], base_len[a], base[b], base_len[b]);
            c->tmpl_pairs++;
            if (jab < c->tmpl_j_min) c->tmpl_j_min = jab;
            if (jab > c->tmpl_j_max) c->tmpl_j_max = jab;
        }
    free(var);
    free(perm);
    free(cdf);
}

static void corpus_free(corpus *c) {
    for (int i = 0; i < c->n_docs; i++) free(c->text[i]);
    free(c->text);
    free(c->text_n);
    free(c->id);
    free(c->true_j);
    free(c->edits);
    free(c->copy_of);
    for (int j = 0; j < N_BASE; j++) free(c->base[j]);
    free(c->base);
    free(c->base_len);
    free(c->vocab);
}

/* Runs the corpus through a fresh deduplicator; verdicts[i] for document i. Returns seconds. */
static double run_corpus(const corpus *c, const alloy_dedup_options *o, alloy_dedup_verdict *verdicts,
                         alloy_dedup_stats *stats) {
    alloy_dedup *d;
    if (alloy_dedup_create(&d, o) != ALLOY_STATUS_OK) return -1;
    double t0 = alloy_time_now();
    for (int i = 0; i < c->n_docs; i++)
        if (alloy_dedup_check(d, c->text[i], c->text_n[i], c->id[i], &verdicts[i]) != ALLOY_STATUS_OK) {
            alloy_dedup_destroy(d);
            return -1;
        }
    double t = alloy_time_now() - t0;
    *stats = alloy_dedup_get_stats(d);
    alloy_dedup_destroy(d);
    return t;
}

static void test_minhash_recall(void) {
    double t_build = alloy_time_now();
    corpus c;
    corpus_build(&c);
    t_build = alloy_time_now() - t_build;
    alloy_dedup_options o = alloy_dedup_defaults();
    alloy_dedup_verdict *v = calloc((size_t)c.n_docs, sizeof *v), *v2 = calloc((size_t)c.n_docs, sizeof *v2);
    REQUIRE(v && v2, "calloc");
    alloy_dedup_stats st, st2;
    double secs = run_corpus(&c, &o, v, &st);
    REQUIRE(secs >= 0, "dedup failed: %s", alloy_last_error());

    // Unrelated base documents dropped (false positives), and the closest estimate among them.
    int base_dropped = 0, base_with_candidates = 0;
    double base_best = 0;
    for (int j = 0; j < N_BASE; j++) {
        base_with_candidates += v[j].candidates > 0;
        if (v[j].kind != ALLOY_DEDUP_KEEP) {
            base_dropped++;
            uint64_t k = v[j].match_id;
            fprintf(stderr, "  base %d dropped as a duplicate of %llu: estimate %.3f, true J %.3f\n", j,
                    (unsigned long long)k, v[j].jaccard,
                    k < N_BASE ? true_jaccard(c.base[j], c.base_len[j], c.base[k], c.base_len[k]) : -1.0);
        } else if (v[j].jaccard > base_best) {
            base_best = v[j].jaccard;
        }
    }
    // Planted pairs by band of true Jaccard.
    static const double edges[] = {0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0001};
    enum { NB = sizeof edges / sizeof edges[0] - 1 };
    int pairs[NB] = {0}, flagged[NB] = {0}, wrong_match = 0, exact_as_near = 0;
    double err_sum = 0;
    int err_n = 0;
    for (int i = N_BASE; i < 2 * N_BASE; i++) {
        int j = (int)(c.id[i] - N_BASE);
        double tj = c.true_j[j];
        int b = 0;
        while (b + 1 < NB && tj >= edges[b + 1]) b++;
        pairs[b]++;
        if (v[i].kind == ALLOY_DEDUP_KEEP) continue;
        if (v[i].match_id != (uint64_t)j) {
            wrong_match++;
            continue;
        }
        exact_as_near += v[i].kind == ALLOY_DEDUP_EXACT; // different punctuation: never the same bytes
        flagged[b]++;
        err_sum += fabs(v[i].jaccard - tj), err_n++;
    }
    int exact_ok = 0;
    for (int e = 0; e < N_EXACT; e++) {
        const alloy_dedup_verdict *x = &v[2 * N_BASE + e];
        exact_ok += x->kind == ALLOY_DEDUP_EXACT && x->match_id == (uint64_t)c.copy_of[e];
    }
    int hi_pairs = 0, hi_flagged = 0, at_pairs = 0, at_flagged = 0;
    for (int b = 0; b < NB; b++) {
        if (edges[b] >= 0.85) hi_pairs += pairs[b], hi_flagged += flagged[b];
        if (edges[b] >= 0.80) at_pairs += pairs[b], at_flagged += flagged[b];
    }
    double recall_at = at_pairs ? (double)at_flagged / at_pairs : 0;
    double recall_hi = hi_pairs ? (double)hi_flagged / hi_pairs : 0;
    double fp_rate = (double)base_dropped / N_BASE;

    printf("# minhash corpus: %d base docs (200-400 words, Zipf over %d pseudo-words), %d planted near duplicates, "
           "%d exact copies, %.1f MB (built in %.2f s)\n",
           N_BASE, VOCAB, N_BASE, N_EXACT, c.bytes / 1e6, t_build);
    printf("# %d of the base docs open with one of %d boilerplate blocks: %d pairs share one, true J %.2f-%.2f\n",
           N_BASE / 5, N_TMPL, c.tmpl_pairs, c.tmpl_j_min, c.tmpl_j_max);
    printf("# options: 5-word shingles, 128 permutations = 16 bands x 8 rows, threshold 0.80\n");
    printf("# true J band    pairs  flagged  rate\n");
    for (int b = 0; b < NB; b++)
        printf("# [%.2f, %.2f)  %5d  %7d  %.3f\n", edges[b], edges[b + 1] > 1 ? 1.0 : edges[b + 1], pairs[b], flagged[b],
               pairs[b] ? (double)flagged[b] / pairs[b] : 0.0);
    int mid = 5; // [0.80, 0.85)
    printf("# recall at true J >= 0.80 (the threshold): %d/%d = %.4f (required >= 0.95)\n", at_flagged, at_pairs, recall_at);
    printf("# recall at true J >= 0.85: %d/%d = %.4f; at 0.80 <= J < 0.85: %d/%d = %.3f\n", hi_flagged, hi_pairs, recall_hi,
           flagged[mid], pairs[mid], pairs[mid] ? (double)flagged[mid] / pairs[mid] : 0.0);
    printf("# false positives: unrelated base docs dropped %d/%d = %.4f (required < 0.01); near duplicates matched to "
           "the wrong doc: %d\n",
           base_dropped, N_BASE, fp_rate, wrong_match);
    printf("# base docs with an LSH candidate among earlier base docs: %d; highest estimate among them %.3f\n",
           base_with_candidates, base_best);
    printf("# mean |estimate - true J| over flagged pairs: %.4f\n", err_n ? err_sum / err_n : 0.0);
    printf("# exact copies found: %d/%d; index memory %zu bytes for %llu kept docs\n", exact_ok, N_EXACT, st.memory,
           (unsigned long long)st.kept);
    printf("# check() throughput: %.1f MB/s (%.3f s for %.1f MB, %d docs)\n", c.bytes / 1e6 / secs, secs, c.bytes / 1e6,
           c.n_docs);

    EXPECT(recall_at >= 0.95, "recall at J >= 0.80 is %.4f", recall_at);
    EXPECT(recall_hi >= 0.99, "recall at J >= 0.85 is %.4f", recall_hi);
    EXPECT(fp_rate < 0.01, "false-positive rate %.4f", fp_rate);
    EXPECT(wrong_match == 0, "%d near duplicates matched an unrelated document", wrong_match);
    EXPECT(exact_as_near == 0, "%d re-punctuated variants were exact", exact_as_near);
    EXPECT(exact_ok == N_EXACT, "%d/%d exact copies found", exact_ok, N_EXACT);
    int low_pairs = pairs[0] + pairs[1] + pairs[2], low_flagged = flagged[0] + flagged[1] + flagged[2];
    EXPECT(low_flagged <= low_pairs / 20 + 1, "%d/%d pairs with true J < 0.7 flagged", low_flagged, low_pairs);
    EXPECT(pairs[mid] >= 50 && hi_pairs >= 500, "corpus too thin: %d, %d pairs", pairs[mid], hi_pairs);
    EXPECT(st.seen == (uint64_t)c.n_docs && st.kept + st.exact + st.near == st.seen, "stats add up");

    // Deterministic: the same corpus and seed give the same verdicts.
    REQUIRE(run_corpus(&c, &o, v2, &st2) >= 0, "%s", alloy_last_error());
    int differ = 0;
    for (int i = 0; i < c.n_docs; i++)
        differ += v[i].kind != v2[i].kind || v[i].match_id != v2[i].match_id || v[i].jaccard != v2[i].jaccard ||
                  v[i].candidates != v2[i].candidates;
    EXPECT(differ == 0, "%d verdicts differ between two runs", differ);

    // Throughput of normalisation on the same text, for scale.
    double tn = alloy_time_now();
    size_t out_bytes = 0;
    for (int i = 0; i < c.n_docs; i++) {
        char *out;
        size_t out_n;
        if (alloy_normalize(c.text[i], c.text_n[i], ALLOY_NORM_NFC, &out, &out_n, NULL) != ALLOY_STATUS_OK) break;
        out_bytes += out_n;
        alloy_free(out);
    }
    tn = alloy_time_now() - tn;
    EXPECT(out_bytes == c.bytes, "NFC changed the corpus (%zu -> %zu bytes): it is NFC already", c.bytes, out_bytes);
    printf("# normalize (NFC) throughput on the same corpus: %.1f MB/s\n", c.bytes / 1e6 / tn);

    free(v);
    free(v2);
    corpus_free(&c);
}

int main(void) {
    RUN(test_normalize_forms);
    RUN(test_normalize_lines_controls);
    RUN(test_normalize_invalid);
    RUN(test_normalize_empty_and_usage);
    RUN(test_normalize_fuzz);
    RUN(test_normalize_oom);
    RUN(test_dedup_options);
    RUN(test_dedup_exact);
    RUN(test_dedup_short_and_wordless);
    RUN(test_dedup_memory_bounded);
    RUN(test_dedup_oom);
    RUN(test_minhash_recall);
    return harness_exit();
}
