/*
 * test_tokenizer.c — the BPE tokenizer's files and edges: GPT-2's encoder.json + vocab.bpe,
 * tokenizer.json round trips, refusals of other kinds and corrupt files, special tokens,
 * decode, pathological pieces (megabyte runs), parallel encoding, and the encoder cache.
 * (Token-for-token equality with js-tiktoken on real corpora: tests/test_tiktoken.sh.)
 */
#include "alloy/tokenizer.h"
#include "harness.h"

static char gpt2_dir[512];

/* GPT-2's tokenizer from the shared corpora; NULL with the case skipped when its folder is
 * absent, NULL with a failed check when it does not load. */
static alloy_tokenizer *gpt2(void) {
    harness_data_path(gpt2_dir, sizeof gpt2_dir, "gpt2_tokenizer");
    if (access(gpt2_dir, F_OK) != 0) {
        harness_skip("data: %s is absent", gpt2_dir);
        return NULL;
    }
    alloy_tokenizer *t = NULL;
    EXPECT(alloy_tokenizer_load(&t, gpt2_dir) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    return t;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

static bool same_ids(const alloy_ids *a, const int32_t *b, size_t n) {
    return a->n == n && !memcmp(a->data, b, n * sizeof(int32_t));
}

static void test_gpt2_known(void) {
    alloy_tokenizer *t = gpt2();
    if (!t) return;
    EXPECT(alloy_tokenizer_vocab_size(t) == 50257 && !strcmp(alloy_tokenizer_name(t), "bpe"), "vocab %d",
           alloy_tokenizer_vocab_size(t));
    EXPECT(alloy_tokenizer_special_id(t, "<|endoftext|>") == 50256, "eot id");
    alloy_ids ids = {0};
    REQUIRE(alloy_tokenizer_encode(t, "Hello world", 11, 0, &ids) == ALLOY_STATUS_OK, "encode");
    EXPECT(same_ids(&ids, (int32_t[]){15496, 995}, 2), "Hello world -> 15496 995");
    ids.n = 0;
    const char *txt = "a<|endoftext|>b";
    alloy_tokenizer_encode(t, txt, strlen(txt), 0, &ids);
    bool has_eot = false;
    for (size_t i = 0; i < ids.n; i++) has_eot |= ids.data[i] == 50256;
    EXPECT(!has_eot && ids.n > 3, "special text is ordinary text unless allowed");
    ids.n = 0;
    alloy_tokenizer_encode(t, txt, strlen(txt), ALLOY_ENCODE_ALLOW_SPECIAL, &ids);
    EXPECT(same_ids(&ids, (int32_t[]){64, 50256, 65}, 3), "allowed: a <|endoftext|> b (%zu ids)", ids.n);
    // decode: exact bytes, and an id outside the vocabulary is refused
    char *back;
    size_t len;
    REQUIRE(alloy_tokenizer_decode(t, ids.data, ids.n, &back, &len) == ALLOY_STATUS_OK, "decode");
    EXPECT(len == strlen(txt) && !memcmp(back, txt, len), "decode '%s'", back);
    alloy_free(back);
    int32_t bad[2] = {15496, 50257};
    EXPECT(alloy_tokenizer_decode(t, bad, 2, &back, &len) == ALLOY_STATUS_RANGE && strstr(alloy_last_error(), "50257"), "%s",
           alloy_last_error());
    // invalid UTF-8 is encoded as U+FFFD (as JavaScript decodes it): same ids as the character
    alloy_ids a = {0}, b = {0};
    alloy_tokenizer_encode(t, "x\xff" "y", 3, 0, &a);
    alloy_tokenizer_encode(t, "x\xef\xbf\xbdy", 5, 0, &b);
    EXPECT(a.n == b.n && !memcmp(a.data, b.data, a.n * 4), "invalid byte -> U+FFFD");
    alloy_ids_free(&a);
    alloy_ids_free(&b);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
}

static void test_json_roundtrip(void) {
    alloy_tokenizer *t = gpt2();
    if (!t) return;
    const char *dir = harness_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(alloy_tokenizer_save(t, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer *u;
    REQUIRE(alloy_tokenizer_load(&u, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_hash(u) == alloy_tokenizer_hash(t), "fingerprint survives tokenizer.json");
    char sample[4096];
    snprintf(sample, sizeof sample, "The quick brown fox, naïve café — 東京 🙂 it's 12345 \t\n  x <|endoftext|> y");
    alloy_ids a = {0}, b = {0};
    alloy_tokenizer_encode(t, sample, strlen(sample), ALLOY_ENCODE_ALLOW_SPECIAL, &a);
    alloy_tokenizer_encode(u, sample, strlen(sample), ALLOY_ENCODE_ALLOW_SPECIAL, &b);
    EXPECT(a.n == b.n && !memcmp(a.data, b.data, a.n * 4), "same ids after the round trip");
    // the folder form finds tokenizer.json
    alloy_tokenizer *v;
    REQUIRE(alloy_tokenizer_load(&v, dir) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_hash(v) == alloy_tokenizer_hash(t), "folder with tokenizer.json");
    // a saved file is Hugging Face's shape: model.type BPE, ByteLevel pre-tokenizer, merges as strings
    char *text;
    size_t n;
    alloy_file_read_all(path, &text, &n);
    EXPECT(strstr(text, "\"type\":\"BPE\"") && strstr(text, "\"type\":\"ByteLevel\"") && strstr(text, "\"\\u0120t\"") == NULL &&
               strstr(text, "\"Ġ t\""),
           "tokenizer.json layout");
    alloy_free(text);
    alloy_ids_free(&a);
    alloy_ids_free(&b);
    alloy_tokenizer_destroy(t);
    alloy_tokenizer_destroy(u);
    alloy_tokenizer_destroy(v);
    alloy_tokenizer *bytes;
    alloy_tokenizer_create(&bytes, "bytes");
    EXPECT(alloy_tokenizer_save(bytes, path) == ALLOY_STATUS_USAGE, "the byte tokenizer has no tokenizer.json");
    alloy_tokenizer_destroy(bytes);
}

/* A minimal byte-level tokenizer.json with the given model/pre-tokenizer parts. */
static void write_tj(const char *path, const char *model_extra, const char *pretok, const char *merges, const char *added) {
    // vocabulary: the 256 byte stand-ins, then "ab" (id 256)
    char *buf = malloc(1 << 16);
    size_t k = 0;
    k += (size_t)sprintf(buf + k, "{\"added_tokens\": %s, \"normalizer\": null, \"pre_tokenizer\": %s, \"model\": {%s \"vocab\": {", added,
                         pretok, model_extra);
    for (int b = 0; b < 256; b++) {
        int cp = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE) ? b : 0;
        if (!cp) { // the stand-ins of the other bytes: 256 + their rank among them
            int r = 0;
            for (int c = 0; c < b; c++) r += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE));
            cp = 256 + r;
        }
        char u[8];
        if (cp == '"' || cp == '\\') sprintf(u, "\\%c", cp);
        else if (cp < 0x80) sprintf(u, "%c", cp);
        else sprintf(u, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        k += (size_t)sprintf(buf + k, "\"%s\": %d, ", u, b);
    }
    k += (size_t)sprintf(buf + k, "\"ab\": 256}, \"merges\": %s}}", merges);
    write_text(path, buf);
    free(buf);
}

static void test_refusals(void) {
    const char *dir = harness_tmpdir();
    char p[600];
    snprintf(p, sizeof p, "%s/t.json", dir);
    const char *bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    alloy_tokenizer *t;
    write_tj(p, "\"type\": \"BPE\",", bl, "[\"a b\"]", "[]");
    REQUIRE(alloy_tokenizer_load(&t, p) == ALLOY_STATUS_OK, "minimal tokenizer.json: %s", alloy_last_error());
    alloy_ids ids = {0};
    alloy_tokenizer_encode(t, "abab", 4, 0, &ids);
    EXPECT(same_ids(&ids, (int32_t[]){256, 256}, 2), "the one merge applies (%zu ids)", ids.n);
    alloy_ids_free(&ids);
    alloy_tokenizer_destroy(t);
    write_tj(p, "\"type\": \"BPE\",", bl, "[[\"a\", \"b\"]]", "[{\"id\": 257, \"content\": \"<|im_start|>\", \"special\": true}]");
    REQUIRE(alloy_tokenizer_load(&t, p) == ALLOY_STATUS_OK, "merges as pairs, an added token: %s", alloy_last_error());
    EXPECT(alloy_tokenizer_special_id(t, "<|im_start|>") == 257 && alloy_tokenizer_vocab_size(t) == 258, "added special");
    alloy_tokenizer_destroy(t);
    struct {
        const char *name, *model, *pretok, *merges, *expect;
    } bad[] = {
        {"WordPiece", "\"type\": \"WordPiece\",", "null", "[]", "a WordPiece model, not byte-level BPE"},
        {"Unigram", "\"type\": \"Unigram\",", bl, "[]", "a Unigram model"},
        {"byte fallback", "\"type\": \"BPE\", \"byte_fallback\": true,", bl, "[]", "byte fallback"},
        {"no pre-tokenizer", "\"type\": \"BPE\",", "null", "[]", "no pre_tokenizer"},
        {"Whitespace pre-tokenizer", "\"type\": \"BPE\",", "{\"type\": \"Whitespace\"}", "[]", "pre_tokenizer Whitespace"},
        {"merge of unknown token", "\"type\": \"BPE\",", bl, "[\"a zz\"]", "names a token that is not in the vocabulary"},
        {"merge not a pair", "\"type\": \"BPE\",", bl, "[\"abc\"]", "is not \"a b\""},
        {"merge making no token", "\"type\": \"BPE\",", bl, "[\"b a\"]", "makes a token that is not in the vocabulary"},
        {"merges not array", "\"type\": \"BPE\",", bl, "{}", "needs a \"vocab\" object and a \"merges\" array"},
        {"bad regex", "\"type\": \"BPE\",",
         "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, "
         "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}",
         "[]", "regex does not compile"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_tj(p, bad[i].model, bad[i].pretok, bad[i].merges, "[]");
        t = NULL;
        alloy_status s = alloy_tokenizer_load(&t, p);
        EXPECT(s == ALLOY_STATUS_FORMAT && t == NULL && strstr(alloy_last_error(), p) && strstr(alloy_last_error(), bad[i].expect),
               "%s: status %d '%s'", bad[i].name, s, alloy_last_error());
    }
    write_text(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": " "{\"type\": \"ByteLevel\"}}");
    EXPECT(alloy_tokenizer_load(&t, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "vocabulary of 1 tokens"),
           "too few tokens: %s", alloy_last_error());
    write_text(p, "[1, 2, 3]");
    EXPECT(alloy_tokenizer_load(&t, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "not a tokenizer.json"), "%s",
           alloy_last_error());
    write_text(p, "{\"model\": ");
    EXPECT(alloy_tokenizer_load(&t, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "invalid JSON"), "%s",
           alloy_last_error());
    EXPECT(alloy_tokenizer_load(&t, "/nonexistent/tok.json") == ALLOY_STATUS_IO, "missing file");
    EXPECT(alloy_tokenizer_load(&t, dir) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "neither tokenizer.json"), "%s",
           alloy_last_error());
    // GPT-2 pair with a corrupt merges file
    char enc[600], bpe[600], src[600];
    snprintf(enc, sizeof enc, "%s/encoder.json", dir);
    snprintf(bpe, sizeof bpe, "%s/vocab.bpe", dir);
    NEED_DATA(src, "gpt2_tokenizer/encoder.json");
    char *e;
    size_t en;
    REQUIRE(alloy_file_read_all(src, &e, &en) == ALLOY_STATUS_OK, "encoder.json");
    alloy_write_file_atomic(enc, e, en);
    alloy_free(e);
    write_text(bpe, "#version: 0.2\nĠ t\nthis-line-has-no-space\n");
    EXPECT(alloy_tokenizer_load(&t, dir) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "vocab.bpe: line 3"), "%s",
           alloy_last_error());
}

static void test_pathological(void) {
    alloy_tokenizer *t = gpt2();
    if (!t) return;
    size_t n = 1 << 20;
    char *text = malloc(n + 16);
    // a megabyte of spaces, then of digits: one piece each; the heap keeps this fast
    memset(text, ' ', n);
    memcpy(text + n, "x", 2);
    alloy_ids ids = {0};
    double t0 = alloy_time_now();
    REQUIRE(alloy_tokenizer_encode(t, text, n + 1, 0, &ids) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *back;
    size_t len;
    alloy_tokenizer_decode(t, ids.data, ids.n, &back, &len);
    EXPECT(len == n + 1 && !memcmp(back, text, len), "a megabyte of spaces round-trips");
    alloy_free(back);
    for (size_t i = 0; i < n; i++) text[i] = (char)('0' + i % 10);
    ids.n = 0;
    REQUIRE(alloy_tokenizer_encode(t, text, n, 0, &ids) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_tokenizer_decode(t, ids.data, ids.n, &back, &len);
    EXPECT(len == n && !memcmp(back, text, len), "a megabyte of digits round-trips");
    alloy_free(back);
    double dt = alloy_time_now() - t0;
    printf("# two 1 MB single pieces encoded in %.2f s\n", dt);
    EXPECT(dt < 20, "long pieces must not be quadratic (%.1f s)", dt);
    // parallel encoding equals serial encoding on mixed text with cut points
    for (size_t i = 0; i < n; i++) text[i] = "Hello, world!\nfoo bar\n  baz\t\n12 34\n"[i % 35];
    alloy_ids serial = {0}, par = {0};
    alloy_tokenizer_encode(t, text, n, 0, &serial);
    REQUIRE(alloy_tokenizer_encode_parallel(t, text, n, 0, 2, &par) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(serial.n == par.n && !memcmp(serial.data, par.data, serial.n * 4), "parallel == serial (%zu vs %zu)", serial.n, par.n);
    // an encoder's cache gives the same answers the second time
    alloy_encoder *e;
    alloy_encoder_create(&e, t);
    alloy_ids a = {0}, b = {0};
    alloy_encoder_encode(e, text, 100000, 0, &a);
    alloy_encoder_encode(e, text, 100000, 0, &b);
    EXPECT(a.n == b.n && !memcmp(a.data, b.data, a.n * 4) && a.n <= serial.n, "cached encoding is stable");
    alloy_encoder_destroy(e);
    alloy_ids_free(&a);
    alloy_ids_free(&b);
    alloy_ids_free(&serial);
    alloy_ids_free(&par);
    alloy_ids_free(&ids);
    free(text);
    alloy_tokenizer_destroy(t);
}

/* Ids as JSON both ways, and a tokenizer's description. */
static void test_ids_json_and_describe(void) {
    const int32_t ids[] = {0, 17, 255, 300000};
    char *json;
    size_t len;
    REQUIRE(!alloy_ids_to_json(ids, 4, &json, &len), "%s", alloy_last_error());
    EXPECT(!strcmp(json, "[0,17,255,300000]") && len == strlen(json), "%s", json);
    alloy_ids back = {0};
    EXPECT(!alloy_ids_from_json(json, len, "x", &back) && back.n == 4 && !memcmp(back.data, ids, sizeof ids), "round trip");
    alloy_free(json);
    REQUIRE(!alloy_ids_to_json(NULL, 0, &json, &len), "%s", alloy_last_error());
    EXPECT(!strcmp(json, "[]"), "%s", json);
    alloy_free(json);
    EXPECT(alloy_ids_from_json("[1, 2.5]", 8, "in", &back) == ALLOY_STATUS_FORMAT && says("in: element 1"), "%s",
           alloy_last_error());
    EXPECT(alloy_ids_from_json("{}", 2, "in", &back) == ALLOY_STATUS_FORMAT && says("expected a JSON array"), "%s",
           alloy_last_error());
    alloy_ids_free(&back);
    alloy_tokenizer *tok;
    REQUIRE(!alloy_tokenizer_create(&tok, "bytes"), "%s", alloy_last_error());
    char *text;
    REQUIRE(!alloy_tokenizer_describe(tok, &text), "%s", alloy_last_error());
    EXPECT(!strncmp(text, "kind: bytes\nvocabulary: 256\nfingerprint: ", 41) && !strstr(text, "special token"), "%s", text);
    alloy_free(text);
    alloy_tokenizer_destroy(tok);
}

int main(void) {
    RUN(test_gpt2_known);
    RUN(test_json_roundtrip);
    RUN(test_refusals);
    RUN(test_pathological);
    RUN(test_ids_json_and_describe);
    return harness_exit();
}
