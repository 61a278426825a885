/*
 * test_bpe_train.c — byte-level BPE training (alloy_bpe_trainer_*).
 *
 * The incremental trainer is checked against a naive one written here (every pair recounted
 * before each merge) on random corpora; the rest checks hand-computed merges, the pre-tokenizer
 * boundaries, special tokens, determinism, save/load, compression on real text, errors and
 * out-of-memory paths.
 */
#include "alloy/tokenizer.h"
#include "harness.h"

#include <cJSON.h>

/* ---- helpers ---- */

typedef struct train_args {
    int vocab_size;
    int min_frequency;
    const char *const *specials;
    int n_special;
} train_args;

/* Trains on the texts (one feed each); NULL on failure (the check reports it). */
static alloy_tokenizer *train_texts(const char *const *texts, const size_t *lens, int n, train_args a) {
    alloy_bpe_train_options o = {.vocab_size = a.vocab_size, .special_tokens = a.specials, .n_special = a.n_special,
                                 .min_frequency = a.min_frequency, .quiet = true};
    alloy_bpe_trainer *tr;
    alloy_status s = alloy_bpe_trainer_create(&tr, &o);
    EXPECT(s == ALLOY_STATUS_OK, "create: %s", alloy_last_error());
    if (s) return NULL;
    for (int i = 0; i < n && !s; i++) s = alloy_bpe_trainer_feed(tr, texts[i], lens ? lens[i] : strlen(texts[i]));
    EXPECT(s == ALLOY_STATUS_OK, "feed: %s", alloy_last_error());
    alloy_tokenizer *tok = NULL;
    if (!s) s = alloy_bpe_trainer_finish(tr, &tok);
    EXPECT(s == ALLOY_STATUS_OK, "finish: %s", alloy_last_error());
    alloy_bpe_trainer_destroy(tr);
    return tok;
}

static alloy_tokenizer *train_text(const char *text, size_t n, train_args a) { return train_texts(&text, &n, 1, a); }

/* The token's bytes as a C string (one of 4 static buffers, used in turn), "" if absent. */
static const char *tok_str(const alloy_tokenizer *t, int32_t id) {
    static char bufs[4][1024];
    static int turn;
    char *buf = bufs[turn++ % 4];
    size_t n = 0;
    const char *b = alloy_tokenizer_token(t, id, &n);
    if (!b || n >= sizeof bufs[0]) n = 0;
    else memcpy(buf, b, n);
    buf[n] = '\0';
    return buf;
}

/* GPT-2's bytes_to_unicode, for the merge strings of tokenizer.json. */
static size_t byte_form(const char *b, size_t n, char *out) {
    size_t o = 0, extra;
    for (size_t i = 0; i < n; i++) {
        unsigned c = (uint8_t)b[i];
        bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
        uint32_t cp = c;
        if (!printable) {
            extra = 0;
            for (unsigned k = 0; k < c; k++)
                extra += !((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF));
            cp = 256 + (uint32_t)extra;
        }
        if (cp < 0x80) out[o++] = (char)cp;
        else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

/* The merges of a tokenizer, read back from its tokenizer.json ("a b" strings); NULL on error. */
static cJSON *saved_merges(const alloy_tokenizer *t, cJSON **root) {
    char path[512];
    snprintf(path, sizeof path, "%s/m.json", harness_tmpdir());
    *root = NULL;
    if (alloy_tokenizer_save(t, path) != ALLOY_STATUS_OK || alloy_json_read_file(path, root) != ALLOY_STATUS_OK) return NULL;
    cJSON *model = cJSON_GetObjectItemCaseSensitive(*root, "model");
    return cJSON_GetObjectItemCaseSensitive(model, "merges");
}

static char *read_file(const char *path, size_t max, size_t *n) {
    char *text;
    if (alloy_file_read_all(path, &text, n) != ALLOY_STATUS_OK) return NULL;
    if (*n > max) *n = max;
    return text;
}

/* The first `max` bytes of Shakespeare (the shared corpora); NULL with the case skipped when
 * the file is absent, NULL with a failed check when it cannot be read. */
static char *shakespeare(size_t max, size_t *n) {
    char path[512];
    harness_data_path(path, sizeof path, "prose/tinyshakespeare.txt");
    if (access(path, F_OK) != 0) {
        harness_skip("data: %s is absent", path);
        return NULL;
    }
    char *t = read_file(path, max, n);
    EXPECT(t != NULL, "cannot read %s: %s", path, alloy_last_error());
    return t;
}

static size_t count_ids(const alloy_tokenizer *t, const char *text, size_t n, unsigned flags, alloy_ids *ids) {
    ids->n = 0;
    alloy_status s = alloy_tokenizer_encode(t, text, n, flags, ids);
    EXPECT(s == ALLOY_STATUS_OK, "encode: %s", alloy_last_error());
    return ids->n;
}

/* ---- the naive reference: recount every pair before each merge ---- */

#define REF_MAXV 2048

typedef struct ref_bpe {
    int n_tok;
    char *tok[REF_MAXV]; /* bytes of each token */
    int len[REF_MAXV];
    int merges[4 * REF_MAXV][2];
    int n_merges;
    int **piece;         /* (n_pieces) token ids */
    int *plen;           /* (n_pieces) */
    long *pcount;        /* (n_pieces) */
    int n_pieces;
} ref_bpe;

static int ref_cmp_joined(const ref_bpe *r, int a, int b, int c, int d) {
    char x[512], y[512];
    int nx = r->len[a] + r->len[b], ny = r->len[c] + r->len[d];
    memcpy(x, r->tok[a], (size_t)r->len[a]);
    memcpy(x + r->len[a], r->tok[b], (size_t)r->len[b]);
    memcpy(y, r->tok[c], (size_t)r->len[c]);
    memcpy(y + r->len[c], r->tok[d], (size_t)r->len[d]);
    int k = memcmp(x, y, (size_t)(nx < ny ? nx : ny));
    return k ? k : (nx > ny) - (nx < ny);
}

/* Learns merges on the pieces until n_tok reaches target or no pair reaches min_freq. */
static void ref_train(ref_bpe *r, int target, long min_freq) {
    static long count[REF_MAXV * REF_MAXV];
    static bool done[REF_MAXV * REF_MAXV];
    static int touched[1 << 20];
    memset(done, 0, sizeof done);
    while (r->n_tok < target) {
        int nt = 0;
        for (int p = 0; p < r->n_pieces; p++)
            for (int i = 0; i + 1 < r->plen[p]; i++) {
                int k = r->piece[p][i] * REF_MAXV + r->piece[p][i + 1];
                if (count[k] == 0) touched[nt++] = k;
                count[k] += r->pcount[p];
            }
        int best = -1;
        for (int i = 0; i < nt; i++) {
            int k = touched[i], a = k / REF_MAXV, b = k % REF_MAXV;
            if (count[k] < min_freq || done[k] || r->len[a] + r->len[b] > 256) continue;
            if (best < 0 || count[k] > count[best]) best = k;
            else if (count[k] == count[best]) {
                int c = ref_cmp_joined(r, a, b, best / REF_MAXV, best % REF_MAXV);
                if (c < 0 || (c == 0 && a < best / REF_MAXV)) best = k;
            }
        }
        for (int i = 0; i < nt; i++) count[touched[i]] = 0;
        if (best < 0) break;
        int a = best / REF_MAXV, b = best % REF_MAXV, nl = r->len[a] + r->len[b];
        done[best] = true;
        char joined[512];
        memcpy(joined, r->tok[a], (size_t)r->len[a]);
        memcpy(joined + r->len[a], r->tok[b], (size_t)r->len[b]);
        int m = -1;
        for (int t = 0; t < r->n_tok && m < 0; t++)
            if (r->len[t] == nl && !memcmp(r->tok[t], joined, (size_t)nl)) m = t;
        if (m < 0) {
            m = r->n_tok++;
            r->tok[m] = malloc((size_t)nl);
            memcpy(r->tok[m], joined, (size_t)nl);
            r->len[m] = nl;
        }
        r->merges[r->n_merges][0] = a;
        r->merges[r->n_merges][1] = b;
        r->n_merges++;
        for (int p = 0; p < r->n_pieces; p++) {
            int *s = r->piece[p], o = 0;
            for (int i = 0; i < r->plen[p];) {
                if (i + 1 < r->plen[p] && s[i] == a && s[i + 1] == b) {
                    s[o++] = m;
                    i += 2;
                } else {
                    s[o++] = s[i++];
                }
            }
            r->plen[p] = o;
        }
    }
}

static void ref_free(ref_bpe *r) {
    for (int t = 256; t < r->n_tok; t++) free(r->tok[t]);
    for (int p = 0; p < r->n_pieces; p++) free(r->piece[p]);
    free(r->piece);
    free(r->plen);
    free(r->pcount);
    free(r);
}

/* A random text of words over a skewed alphabet, single spaces between them, so that the
 * pre-tokenizer's pieces are "word", " word", " word", ... (also handed to the reference). */
static char *random_corpus(uint64_t seed, int n_words, const char *alphabet, int max_len, ref_bpe **ref_out) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    size_t na = strlen(alphabet);
    char *text = malloc((size_t)n_words * (size_t)(max_len + 1) + 1);
    ref_bpe *r = calloc(1, sizeof *r);
    r->piece = calloc((size_t)n_words, sizeof *r->piece);
    r->plen = calloc((size_t)n_words, sizeof *r->plen);
    r->pcount = calloc((size_t)n_words, sizeof *r->pcount);
    static char bytes[256];
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        r->tok[b] = &bytes[b];
        r->len[b] = 1;
    }
    r->n_tok = 256;
    size_t o = 0;
    for (int w = 0; w < n_words; w++) {
        int len = 1 + (int)alloy_rng_below(&rng, (uint64_t)max_len);
        size_t start = o;
        if (w) text[o++] = ' ';
        for (int i = 0; i < len; i++) {
            // skewed: the first letters are far more likely, so counts spread out and ties happen
            double u = alloy_rng_uniform(&rng);
            text[o++] = alphabet[(size_t)(u * u * (double)na)];
        }
        r->plen[w] = (int)(o - start);
        r->pcount[w] = 1;
        r->piece[w] = malloc((size_t)r->plen[w] * sizeof(int));
        for (int i = 0; i < r->plen[w]; i++) r->piece[w][i] = (uint8_t)text[start + (size_t)i];
    }
    r->n_pieces = n_words;
    text[o] = '\0';
    *ref_out = r;
    return text;
}

/* ---- tests ---- */

/* "aaab aaab ab": pieces "aaab", " aaab", " ab". Pairs: a+a 4, a+b 3, " "+a 2. Then aa+a 2,
 * a+b 3 -> ab; then aa+ab 2 -> aaab; nothing else occurs twice. */
static void test_hand_computed(void) {
    const char *text = "aaab aaab ab";
    alloy_tokenizer *t = train_text(text, strlen(text), (train_args){1000, 2, NULL, 0});
    REQUIRE(t, "training failed");
    EXPECT(alloy_tokenizer_vocab_size(t) == 259, "three merges: vocabulary %d", alloy_tokenizer_vocab_size(t));
    EXPECT(!strcmp(tok_str(t, 'a'), "a") && !strcmp(tok_str(t, ' '), " "), "byte tokens have id = byte");
    EXPECT(!strcmp(tok_str(t, 256), "aa"), "first merge a+a: %s", tok_str(t, 256));
    EXPECT(!strcmp(tok_str(t, 257), "ab"), "second merge a+b: %s", tok_str(t, 257));
    EXPECT(!strcmp(tok_str(t, 258), "aaab"), "third merge aa+ab: %s", tok_str(t, 258));
    cJSON *root, *m = saved_merges(t, &root);
    REQUIRE(cJSON_GetArraySize(m) == 3, "3 merges in tokenizer.json");
    const char *want[3] = {"a a", "a b", "aa ab"};
    for (int i = 0; i < 3; i++)
        EXPECT(!strcmp(cJSON_GetArrayItem(m, i)->valuestring, want[i]), "merge %d: %s", i, cJSON_GetArrayItem(m, i)->valuestring);
    cJSON_Delete(root);
    alloy_ids ids = {0};
    EXPECT(count_ids(t, text, strlen(text), 0, &ids) == 5, "aaab | Ġ aaab | Ġ ab: %zu ids", ids.n);
    alloy_tokenizer_destroy(t);
    // min_frequency 1 goes on: " "+aaab and " "+ab both occur once; " aaab" < " ab" comes first
    t = train_text(text, strlen(text), (train_args){1000, 1, NULL, 0});
    REQUIRE(t, "training failed");
    EXPECT(alloy_tokenizer_vocab_size(t) == 261, "five merges: %d", alloy_tokenizer_vocab_size(t));
    EXPECT(!strcmp(tok_str(t, 259), " aaab") && !strcmp(tok_str(t, 260), " ab"), "ties by bytes: %s, then %s", tok_str(t, 259),
           tok_str(t, 260));
    EXPECT(count_ids(t, text, strlen(text), 0, &ids) == 3, "each piece one token: %zu ids", ids.n);
    alloy_tokenizer_destroy(t);
    // every pair once: ties everywhere. " a" < "ab" < "ba"; then " ab" < "ba"
    t = train_text("ba ab", 5, (train_args){1000, 1, NULL, 0});
    REQUIRE(t, "training failed");
    EXPECT(!strcmp(tok_str(t, 256), " a") && !strcmp(tok_str(t, 257), " ab") && !strcmp(tok_str(t, 258), "ba"),
           "tie-break by joined bytes: %s | %s | %s", tok_str(t, 256), tok_str(t, 257), tok_str(t, 258));
    alloy_tokenizer_destroy(t);
    // the vocabulary limit stops training: one merge only
    t = train_text(text, strlen(text), (train_args){257, 2, NULL, 0});
    REQUIRE(t, "training failed");
    EXPECT(alloy_tokenizer_vocab_size(t) == 257 && !strcmp(tok_str(t, 256), "aa"), "vocabulary 257: %d",
           alloy_tokenizer_vocab_size(t));
    alloy_tokenizer_destroy(t);
    alloy_ids_free(&ids);
}

/* Overlapping occurrences join left to right: "aaaaa" -> aa aa a. Then aa+aa and aa+a both
 * occur 3 times; "aaa" is a prefix of "aaaa", so aa+a goes first: aa aaa, then aaaaa. */
static void test_overlaps(void) {
    const char *text = "aaaaa aaaaa aaaaa";
    alloy_tokenizer *t = train_text(text, strlen(text), (train_args){1000, 2, NULL, 0});
    REQUIRE(t, "training failed");
    EXPECT(!strcmp(tok_str(t, 256), "aa") && !strcmp(tok_str(t, 257), "aaa") && !strcmp(tok_str(t, 258), "aaaaa") &&
               !strcmp(tok_str(t, 259), " aaaaa") && alloy_tokenizer_vocab_size(t) == 260,
           "aa, aaa, aaaaa, Ġaaaaa: %s %s %s %s", tok_str(t, 256), tok_str(t, 257), tok_str(t, 258), tok_str(t, 259));
    alloy_ids ids = {0};
    count_ids(t, text, strlen(text), 0, &ids);
    EXPECT(ids.n == 3 && ids.data[0] == 258 && ids.data[1] == 259 && ids.data[2] == 259, "aaaaa | Ġaaaaa | Ġaaaaa: %zu ids", ids.n);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
}

/* No merge crosses a boundary the pattern draws. */
static void test_within_pieces(void) {
    // "b " and "1a" would be the most frequent pairs if pieces did not bound merges
    const char *text = "ab ab ab ab a1a1a1a1 x!x!x! ab\n\nab\n\n";
    alloy_tokenizer *t = train_text(text, strlen(text), (train_args){2000, 1, NULL, 0});
    REQUIRE(t, "training failed");
    for (int32_t id = 256; id < alloy_tokenizer_vocab_size(t); id++) {
        const char *s = tok_str(t, id);
        EXPECT(!strstr(s, "b ") && !strstr(s, "1a") && !strstr(s, "a1") && !strstr(s, "x!") && !strstr(s, "\na"),
               "token %d \"%s\" crosses a piece boundary", id, s);
    }
    alloy_tokenizer_destroy(t);
    // on real text: a token is all whitespace, or at most one leading space and no other
    size_t n;
    char *sh = shakespeare(200000, &n);
    if (!sh) return;
    t = train_text(sh, n, (train_args){3000, 2, NULL, 0});
    REQUIRE(t, "training failed");
    int bad = 0;
    for (int32_t id = 256; id < alloy_tokenizer_vocab_size(t); id++) {
        size_t len;
        const char *s = alloy_tokenizer_token(t, id, &len);
        size_t ws = 0;
        for (size_t i = 0; i < len; i++) ws += s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r';
        bool ok = ws == len || ws == 0 || (ws == 1 && s[0] == ' ');
        if (!ok && bad++ < 5) EXPECT(ok, "token %d \"%s\" mixes whitespace and text", id, tok_str(t, id));
    }
    EXPECT(bad == 0, "%d tokens cross piece boundaries", bad);
    alloy_tokenizer_destroy(t);
    alloy_free(sh);
}

/* The incremental counts against the naive reference, merge by merge. */
static void check_against_reference(uint64_t seed, int n_words, const char *alphabet, int max_len, int vocab, int min_freq) {
    ref_bpe *r;
    char *text = random_corpus(seed, n_words, alphabet, max_len, &r);
    ref_train(r, vocab, min_freq);
    alloy_tokenizer *t = train_text(text, strlen(text), (train_args){vocab, min_freq, NULL, 0});
    if (!t) goto out;
    EXPECT(alloy_tokenizer_vocab_size(t) == r->n_tok, "seed %llu: vocabulary %d, reference %d", (unsigned long long)seed,
           alloy_tokenizer_vocab_size(t), r->n_tok);
    int bad = 0;
    for (int id = 0; id < r->n_tok && id < alloy_tokenizer_vocab_size(t); id++) {
        size_t len;
        const char *b = alloy_tokenizer_token(t, id, &len);
        if ((len != (size_t)r->len[id] || memcmp(b, r->tok[id], len)) && bad++ < 3)
            EXPECT(false, "seed %llu: token %d is \"%s\", reference \"%.*s\"", (unsigned long long)seed, id, tok_str(t, id),
                   r->len[id], r->tok[id]);
    }
    cJSON *root, *m = saved_merges(t, &root);
    EXPECT(cJSON_GetArraySize(m) == r->n_merges, "seed %llu: %d merges, reference %d", (unsigned long long)seed,
           cJSON_GetArraySize(m), r->n_merges);
    for (int i = 0; i < r->n_merges && i < cJSON_GetArraySize(m); i++) {
        char want[2048];
        size_t k = byte_form(r->tok[r->merges[i][0]], (size_t)r->len[r->merges[i][0]], want);
        want[k++] = ' ';
        byte_form(r->tok[r->merges[i][1]], (size_t)r->len[r->merges[i][1]], want + k);
        const char *got = cJSON_GetArrayItem(m, i)->valuestring;
        if (strcmp(got, want) && bad++ < 3)
            EXPECT(false, "seed %llu: merge %d is \"%s\", reference \"%s\"", (unsigned long long)seed, i, got, want);
    }
    cJSON_Delete(root);
    // the encoder reproduces the trainer's segmentation of the training text
    long ref_tokens = 0;
    for (int p = 0; p < r->n_pieces; p++) ref_tokens += r->plen[p];
    alloy_ids ids = {0};
    count_ids(t, text, strlen(text), 0, &ids);
    EXPECT((long)ids.n == ref_tokens, "seed %llu: encoding gives %zu tokens, the trainer's pieces %ld", (unsigned long long)seed,
           ids.n, ref_tokens);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
out:
    ref_free(r);
    free(text);
}

static void test_incremental_vs_naive(void) {
    for (uint64_t seed = 1; seed <= 4; seed++) check_against_reference(seed, 3000, "abcde", 9, 700, 1);
    check_against_reference(11, 3000, "abcdefghij", 7, 900, 2);
    check_against_reference(12, 2000, "ab", 16, 600, 1);   // long runs: overlaps, same bytes by two routes
    check_against_reference(13, 400, "abc", 30, 2000, 1);  // until every piece is one token
    check_against_reference(14, 3000, "abcdef", 6, 1200, 5);
}

static void test_specials(void) {
    const char *sp[] = {"<|endoftext|>", "<|pad|>"};
    size_t n;
    char *sh = shakespeare(100000, &n);
    if (!sh) return;
    // the special's text in the training text is a boundary, not something to learn
    size_t m = 0, cap = n + n / 100 * 20;
    char *text = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        text[m++] = sh[i];
        if (sh[i] == '\n' && sh[i + 1] == '\n' && m + 20 < cap) m += (size_t)sprintf(text + m, "<|endoftext|>");
    }
    alloy_tokenizer *t = train_text(text, m, (train_args){600, 2, sp, 2});
    REQUIRE(t, "training failed");
    EXPECT(alloy_tokenizer_vocab_size(t) == 600, "vocabulary %d", alloy_tokenizer_vocab_size(t));
    EXPECT(alloy_tokenizer_special_id(t, "<|endoftext|>") == 598 && alloy_tokenizer_special_id(t, "<|pad|>") == 599,
           "specials after the merges: %d %d", alloy_tokenizer_special_id(t, "<|endoftext|>"), alloy_tokenizer_special_id(t, "<|pad|>"));
    for (int32_t id = 256; id < 598; id++)
        EXPECT(!strstr(tok_str(t, id), "endof") && !strstr(tok_str(t, id), "<|"), "token %d \"%s\" learned from a special", id,
               tok_str(t, id));
    alloy_ids ids = {0};
    const char *s = "To be<|endoftext|>";
    count_ids(t, s, strlen(s), 0, &ids);
    bool has = false;
    for (size_t i = 0; i < ids.n; i++) has |= ids.data[i] >= 598;
    EXPECT(!has, "no special id without ALLOY_ENCODE_ALLOW_SPECIAL");
    count_ids(t, s, strlen(s), ALLOY_ENCODE_ALLOW_SPECIAL, &ids);
    EXPECT(ids.n > 1 && ids.data[ids.n - 1] == 598, "<|endoftext|> -> 598 with ALLOY_ENCODE_ALLOW_SPECIAL");
    // the whole training text encodes with one id per special and decodes back
    count_ids(t, text, m, ALLOY_ENCODE_ALLOW_SPECIAL, &ids);
    char *back;
    size_t blen;
    REQUIRE(alloy_tokenizer_decode(t, ids.data, ids.n, &back, &blen) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(blen == m && !memcmp(back, text, m), "decode(encode(text)) == text");
    alloy_free(back);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
    free(text);
    alloy_free(sh);
}

static void test_real_text(void) {
    size_t n;
    char *sh = shakespeare(200000, &n);
    if (!sh) return;
    const char *sp[] = {"<|endoftext|>"};
    alloy_tokenizer *t = train_text(sh, n, (train_args){2000, 2, sp, 1});
    REQUIRE(t, "training failed");
    EXPECT(alloy_tokenizer_vocab_size(t) == 2000, "vocabulary %d", alloy_tokenizer_vocab_size(t));
    alloy_ids ids = {0};
    count_ids(t, sh, n, 0, &ids);
    EXPECT(ids.n < n * 2 / 5, "2000 tokens compress Shakespeare to under 0.4 tokens per byte: %zu tokens for %zu bytes", ids.n, n);
    char *back;
    size_t blen;
    REQUIRE(alloy_tokenizer_decode(t, ids.data, ids.n, &back, &blen) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(blen == n && !memcmp(back, sh, n), "decode(encode(text)) == text");
    alloy_free(back);
    // save, load: the same tokenizer, the same ids
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", harness_tmpdir());
    REQUIRE(alloy_tokenizer_save(t, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer *l;
    REQUIRE(alloy_tokenizer_load(&l, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_hash(l) == alloy_tokenizer_hash(t), "loaded fingerprint differs");
    EXPECT(alloy_tokenizer_special_id(l, "<|endoftext|>") == 1999, "special id after load");
    alloy_ids ids2 = {0};
    count_ids(l, sh, n, 0, &ids2);
    EXPECT(ids2.n == ids.n && !memcmp(ids2.data, ids.data, ids.n * sizeof(int32_t)), "loaded tokenizer encodes differently");
    const char *odd = "Zwölf Boxkämpfer jagen Viktor — 123 \xff\xfe <|endoftext|>\r\n\t x";
    count_ids(t, odd, strlen(odd), ALLOY_ENCODE_ALLOW_SPECIAL, &ids);
    count_ids(l, odd, strlen(odd), ALLOY_ENCODE_ALLOW_SPECIAL, &ids2);
    EXPECT(ids2.n == ids.n && !memcmp(ids2.data, ids.data, ids.n * sizeof(int32_t)), "loaded tokenizer encodes odd text differently");
    alloy_ids_free(&ids);
    alloy_ids_free(&ids2);
    alloy_tokenizer_destroy(l);
    alloy_tokenizer_destroy(t);
    alloy_free(sh);
}

static char *slurp(const char *path, size_t *n) {
    char *t;
    return alloy_file_read_all(path, &t, n) == ALLOY_STATUS_OK ? t : NULL;
}

/* The same text gives the same file; so does the same text fed in another order. */
static void test_determinism(void) {
    size_t n;
    char *sh = shakespeare(150000, &n);
    if (!sh) return;
    // three documents, cut after blank lines
    const char *doc[3];
    size_t len[3], cut[4] = {0, 0, 0, n};
    for (int k = 1; k < 3; k++) {
        const char *p = strstr(sh + n * (size_t)k / 3, "\n\n");
        cut[k] = p ? (size_t)(p - sh) + 2 : n * (size_t)k / 3;
    }
    for (int k = 0; k < 3; k++) {
        doc[k] = sh + cut[k];
        len[k] = cut[k + 1] - cut[k];
    }
    const char *rdoc[3] = {doc[2], doc[1], doc[0]};
    size_t rlen[3] = {len[2], len[1], len[0]};
    const char *sp[] = {"<|endoftext|>"};
    char *files[3];
    for (int run = 0; run < 3; run++) {
        alloy_tokenizer *t = run < 2 ? train_texts(doc, len, 3, (train_args){1500, 2, sp, 1})
                                     : train_texts(rdoc, rlen, 3, (train_args){1500, 2, sp, 1});
        REQUIRE(t, "training failed");
        char path[512];
        snprintf(path, sizeof path, "%s/t%d.json", harness_tmpdir(), run);
        REQUIRE(alloy_tokenizer_save(t, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_tokenizer_destroy(t);
        size_t fn;
        files[run] = slurp(path, &fn);
        REQUIRE(files[run], "cannot read back %s", path);
    }
    EXPECT(!strcmp(files[0], files[1]), "two runs on the same text give different tokenizer.json");
    EXPECT(!strcmp(files[0], files[2]), "the order of the documents changed the result");
    for (int run = 0; run < 3; run++) alloy_free(files[run]);
    alloy_free(sh);
}

/* Long runs: pieces over 64 KB are cut, tokens stop at 256 bytes, and the file still loads
 * (a 256-byte token of non-ASCII bytes is 512 characters in tokenizer.json). */
static void test_long_runs(void) {
    size_t n = 0, cap = 400000;
    char *text = malloc(cap);
    for (int i = 0; i < 70000; i++) n += (size_t)sprintf(text + n, "\xc3\xa9"); // é: one \p{L}+ piece of 140 KB
    text[n++] = ' ';
    for (int i = 0; i < 100000; i++) text[n++] = ' ';
    memcpy(text + n, "end", 3);
    n += 3;
    alloy_tokenizer *t = train_text(text, n, (train_args){1000, 2, NULL, 0});
    REQUIRE(t, "training failed");
    size_t longest = 0;
    for (int32_t id = 0; id < alloy_tokenizer_vocab_size(t); id++) {
        size_t len;
        alloy_tokenizer_token(t, id, &len);
        if (len > longest) longest = len;
    }
    EXPECT(longest == 256, "the longest token has %zu bytes", longest);
    char path[512];
    snprintf(path, sizeof path, "%s/long.json", harness_tmpdir());
    REQUIRE(alloy_tokenizer_save(t, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer *l;
    REQUIRE(alloy_tokenizer_load(&l, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_hash(l) == alloy_tokenizer_hash(t), "loaded fingerprint differs");
    alloy_ids ids = {0};
    count_ids(t, text, n, 0, &ids);
    EXPECT(ids.n < n / 200, "long runs encode in few tokens: %zu", ids.n);
    char *back;
    size_t blen;
    REQUIRE(alloy_tokenizer_decode(t, ids.data, ids.n, &back, &blen) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(blen == n && !memcmp(back, text, n), "decode(encode(text)) == text");
    alloy_free(back);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(l);
    alloy_tokenizer_destroy(t);
    free(text);
}

/* Invalid UTF-8 is repaired before counting, as the encoder repairs it. */
static void test_invalid_utf8(void) {
    char text[600];
    size_t n = 0;
    for (int i = 0; i < 40; i++) n += (size_t)sprintf(text + n, "x\xff\xfe y\xc3 ");
    alloy_tokenizer *t = train_text(text, n, (train_args){400, 2, NULL, 0});
    REQUIRE(t, "training failed");
    bool fffd = false;
    for (int32_t id = 256; id < alloy_tokenizer_vocab_size(t); id++) {
        size_t len;
        const char *b = alloy_tokenizer_token(t, id, &len);
        EXPECT(!memchr(b, 0xff, len) && !memchr(b, 0xfe, len), "token %d holds an unrepaired byte", id);
        fffd |= len >= 3 && memmem(b, len, "\xef\xbf\xbd", 3);
    }
    EXPECT(fffd, "U+FFFD (EF BF BD) is frequent enough to become a token");
    alloy_ids ids = {0};
    count_ids(t, text, n, 0, &ids);
    // pieces: x | \uFFFD\uFFFD | Ġy | \uFFFD | Ġx | ... | \uFFFD | Ġ: each one token now
    EXPECT(ids.n == 1 + 4 * 40, "one id per piece: %zu ids", ids.n);
    char fixed[3 * sizeof text], *back;
    size_t fn = alloy_utf8_repair(text, n, fixed, NULL), bn;
    REQUIRE(alloy_tokenizer_decode(t, ids.data, ids.n, &back, &bn) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(bn == fn && !memcmp(back, fixed, fn), "decodes to the repaired text");
    alloy_free(back);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
}

static void test_errors(void) {
    alloy_bpe_trainer *tr;
    const char *sp[] = {"<|endoftext|>", "<|pad|>"};
    alloy_bpe_train_options o = {.vocab_size = 255};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("too small"), "255: %s", alloy_last_error());
    o = (alloy_bpe_train_options){.vocab_size = 257, .special_tokens = sp, .n_special = 2};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("2 special"), "257 with 2 specials: %s",
           alloy_last_error());
    o = (alloy_bpe_train_options){.vocab_size = (1 << 24) + 1};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("limit"), "16M + 1: %s", alloy_last_error());
    o = (alloy_bpe_train_options){.vocab_size = 300, .min_frequency = -1};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("min_frequency"), "%s", alloy_last_error());
    const char *dup[] = {"<s>", "<s>"};
    o = (alloy_bpe_train_options){.vocab_size = 300, .special_tokens = dup, .n_special = 2};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("twice"), "%s", alloy_last_error());
    const char *empty[] = {""};
    o = (alloy_bpe_train_options){.vocab_size = 300, .special_tokens = empty, .n_special = 1};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE && says("empty"), "%s", alloy_last_error());
    o = (alloy_bpe_train_options){.vocab_size = 300, .n_special = 1};
    EXPECT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_USAGE, "specials count without a list");
    // nothing fed, or only special tokens and empty texts
    o = (alloy_bpe_train_options){.vocab_size = 300, .special_tokens = sp, .n_special = 2, .quiet = true};
    REQUIRE(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer *t = (alloy_tokenizer *)1;
    EXPECT(alloy_bpe_trainer_finish(tr, &t) == ALLOY_STATUS_USAGE && says("no text") && t == NULL, "%s", alloy_last_error());
    EXPECT(alloy_bpe_trainer_feed(tr, "", 0) == ALLOY_STATUS_OK, "empty feed");
    EXPECT(alloy_bpe_trainer_feed(tr, "<|pad|><|endoftext|>", 20) == ALLOY_STATUS_OK, "specials only");
    EXPECT(alloy_bpe_trainer_finish(tr, &t) == ALLOY_STATUS_USAGE && says("no text"), "%s", alloy_last_error());
    // after text, finish works (and can run twice)
    EXPECT(alloy_bpe_trainer_feed(tr, "hello hello", 11) == ALLOY_STATUS_OK, "feed");
    REQUIRE(alloy_bpe_trainer_finish(tr, &t) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_vocab_size(t) == 256 + 4 + 2, "e+l, el+l, ell+o, h+ello occur twice: %d", alloy_tokenizer_vocab_size(t));
    alloy_tokenizer_destroy(t);
    REQUIRE(alloy_bpe_trainer_finish(tr, &t) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer_destroy(t);
    alloy_bpe_trainer_destroy(tr);
    alloy_bpe_trainer_destroy(NULL);
}

/* Every allocation failing in turn: a clean NOMEM, never a crash or a leak. */
static void test_out_of_memory(void) {
    const char *text = "the cat sat on the mat; the cat ate the rat. \xff 12 12 12";
    const char *sp[] = {"<|endoftext|>"};
    alloy_bpe_train_options o = {.vocab_size = 290, .special_tokens = sp, .n_special = 1, .quiet = true};
    int failures = 0, last = 0;
    for (long k = 1; k < 5000; k++) {
        alloy_alloc_fail_after(k);
        alloy_bpe_trainer *tr = NULL;
        alloy_tokenizer *t = NULL;
        alloy_status s = alloy_bpe_trainer_create(&tr, &o);
        for (int r = 0; r < 3 && !s; r++) s = alloy_bpe_trainer_feed(tr, text, strlen(text));
        if (!s) s = alloy_bpe_trainer_finish(tr, &t);
        alloy_alloc_fail_after(0);
        alloy_bpe_trainer_destroy(tr);
        alloy_tokenizer_destroy(t);
        if (s == ALLOY_STATUS_OK) {
            last = (int)k;
            break;
        }
        if (s != ALLOY_STATUS_NOMEM && failures++ < 3) EXPECT(s == ALLOY_STATUS_NOMEM, "allocation %ld: status %d: %s", k, s, alloy_last_error());
    }
    EXPECT(last > 10, "training never succeeded under injection (last %d)", last);
}

int main(void) {
    RUN(test_hand_computed);
    RUN(test_overlaps);
    RUN(test_within_pieces);
    RUN(test_incremental_vs_naive);
    RUN(test_specials);
    RUN(test_real_text);
    RUN(test_determinism);
    RUN(test_long_runs);
    RUN(test_invalid_utf8);
    RUN(test_errors);
    RUN(test_out_of_memory);
    return harness_exit();
}
