/*
 * test_prepare.c — the data pipeline: readers (text, separators, JSONL with bad lines, JSON
 * arrays), normalisation on the way, dedup across sources with its log, the held-out split,
 * mixing by weight (shares along the shard, repetition), BPE shards with end-of-text tokens,
 * the manifest, determinism, and refusals.
 */
#include "alloy/alloy.h"
#include "alloy/data.h"
#include "harness.h"
#include "pack_util.h"

#include <cJSON.h>

static char *join(const char *a, const char *b) { return alloy_path_join(a, b); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

/* Every document of a reader over paths, joined with "|" (for short test corpora). */
static char *read_all_docs(const char *const *paths, int n, const alloy_reader_options *o, alloy_reader_stats *st) {
    alloy_reader *r;
    if (alloy_reader_open(&r, paths, n, o)) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(cap, 1);
    for (;;) {
        const char *d;
        size_t dn;
        bool end;
        if (alloy_reader_next(r, &d, &dn, &end) || end) break;
        if (len + dn + 2 > cap) break;
        if (len) out[len++] = '|';
        memcpy(out + len, d, dn);
        len += dn;
    }
    if (st) *st = *alloy_reader_get_stats(r);
    alloy_reader_close(r);
    return out;
}

static void test_readers(void) {
    const char *base = harness_tmpdir();
    char *dir = join(base, "in"), *sub = join(base, "in/z"), *t1 = join(base, "in/a.txt"), *t2 = join(base, "in/z/b.txt");
    char *bin = join(base, "in/c.bin"), *jl = join(base, "d.jsonl"), *js = join(base, "e.json");
    alloy_mkdir_p(sub);
    write_text(t1, "one<|endoftext|>two<|endoftext|><|endoftext|>three");
    write_text(t2, "zed");
    FILE *f = fopen(bin, "wb");
    fwrite("x\0y", 1, 3, f);
    fclose(f);
    alloy_reader_options o = {0};
    alloy_reader_stats st;
    const char *paths[] = {dir};
    char *all = read_all_docs(paths, 1, &o, &st);
    EXPECT(all && !strcmp(all, "one<|endoftext|>two<|endoftext|><|endoftext|>three|zed"), "files in name order: '%s'", all);
    EXPECT(st.files == 2 && st.skipped_binary == 1 && st.docs == 2, "files %llu binary %llu", (unsigned long long)st.files,
           (unsigned long long)st.skipped_binary);
    free(all);
    o.separator = "<|endoftext|>";
    all = read_all_docs(paths, 1, &o, &st);
    EXPECT(all && !strcmp(all, "one|two|three|zed"), "separator cuts, empty pieces dropped: '%s'", all);
    free(all);
    // a long text is cut at a line end, at most max_doc bytes a piece
    o.separator = NULL;
    o.max_doc = 8;
    write_text(t2, "12345\n789\nabcdefghijk");
    all = read_all_docs((const char *[]){t2}, 1, &o, &st);
    EXPECT(all && !strcmp(all, "12345\n|789\n|abcdefgh|ijk"), "max_doc cuts: '%s'", all);
    free(all);
    // JSONL: bad lines are counted, not fatal
    write_text(jl, "{\"text\": \"first\"}\n\nnot json\n{\"other\": 1}\n[1, 2]\n{\"text\": \"second\", \"x\": 2}\r\n{\"text\": 5}\n{\"text\":\"last\"}");
    memset(&o, 0, sizeof o);
    all = read_all_docs((const char *[]){jl}, 1, &o, &st);
    EXPECT(all && !strcmp(all, "first|second|last"), "JSONL documents: '%s'", all);
    EXPECT(st.malformed == 2 && st.missing_field == 2, "malformed %llu, missing field %llu", (unsigned long long)st.malformed,
           (unsigned long long)st.missing_field);
    EXPECT(strstr(st.first_bad, "d.jsonl:3: not valid JSON") != NULL, "first bad record: '%s'", st.first_bad);
    // JSON array, several fields joined by a blank line, an empty one skipped
    write_text(js, "[{\"instruction\": \"Do X\", \"input\": \"\", \"response\": \"Done\"}, 7, "
                   "{\"instruction\": \"Do Y\", \"input\": \"with Z\", \"response\": \"Ok\"}, {\"instruction\": \"no response\"}]");
    o.field = "instruction,input,response";
    free(all);
    all = read_all_docs((const char *[]){js}, 1, &o, &st);
    EXPECT(all && !strcmp(all, "Do X\n\nDone|Do Y\n\nwith Z\n\nOk"), "JSON fields: '%s'", all);
    EXPECT(st.malformed == 1 && st.missing_field == 1, "JSON array skips %llu/%llu", (unsigned long long)st.malformed,
           (unsigned long long)st.missing_field);
    free(all);
    // a .json file of objects one per line is JSONL (told by its first byte); forced to be an
    // array, it is refused
    write_text(js, "{\"text\": \"an object, not an array\"}\n{\"text\": \"another\"}\n");
    o.field = NULL;
    all = read_all_docs((const char *[]){js}, 1, &o, &st);
    EXPECT(all && !strcmp(all, "an object, not an array|another"), "a .json file of JSONL: '%s'", all);
    free(all);
    o.format = ALLOY_DOC_JSON;
    alloy_reader *r;
    REQUIRE(alloy_reader_open(&r, (const char *[]){js}, 1, &o) == ALLOY_STATUS_OK, "open");
    const char *d;
    size_t dn;
    bool end;
    EXPECT(alloy_reader_next(r, &d, &dn, &end) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "not a JSON array"), "%s",
           alloy_last_error());
    alloy_reader_close(r);
    EXPECT(alloy_reader_open(&r, (const char *[]){"/nonexistent/x"}, 1, &o) == ALLOY_STATUS_IO &&
               strstr(alloy_last_error(), "/nonexistent/x"),
           "%s", alloy_last_error());
    alloy_free(dir);
    alloy_free(sub);
    alloy_free(t1);
    alloy_free(t2);
    alloy_free(bin);
    alloy_free(jl);
    alloy_free(js);
}

/* Compressed files (told by their first bytes), JSON told from JSONL by its first byte, and
 * damaged data named in one FORMAT line. */
static void test_readers_compressed(void) {
    const char *base = harness_tmpdir();
    char *dir = join(base, "in"), *t = join(base, "in/a.txt.gz"), *jl = join(base, "in/b.jsonl.zst"),
         *js = join(base, "in/c.json.gz"), *raw = join(base, "in/d.data");
    alloy_mkdir_p(dir);
    pack_write(t, "one#two", 'g');
    pack_write(jl, "{\"text\": \"three\"}\nnot json\n{\"text\": \"four\"}\n", 'z');
    pack_write(js, "  [{\"text\": \"five\"}, {\"text\": 6}]", 'g');
    pack_write(raw, "six#seven", 'z'); // no telling name: text, decompressed all the same
    alloy_reader_options o = {.separator = "#"};
    alloy_reader_stats st;
    char *all = read_all_docs((const char *[]){dir}, 1, &o, &st);
    EXPECT(all && !strcmp(all, "one|two|three|four|five|six|seven"), "documents: '%s'", all);
    EXPECT(st.files == 4 && st.malformed == 1 && st.missing_field == 1 && strstr(st.first_bad, "b.jsonl.zst:2: not valid JSON"),
           "files %llu, malformed %llu, missing %llu, first bad '%s'", (unsigned long long)st.files,
           (unsigned long long)st.malformed, (unsigned long long)st.missing_field, st.first_bad);
    free(all);
    // where a document came from
    alloy_reader *r;
    REQUIRE(alloy_reader_open(&r, (const char *[]){js}, 1, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const char *d;
    size_t dn;
    bool end;
    EXPECT(alloy_reader_next(r, &d, &dn, &end) == ALLOY_STATUS_OK && !end && strstr(alloy_reader_where(r), "c.json.gz: element 1"),
           "%s", alloy_reader_where(r));
    alloy_reader_close(r);
    // a truncated file fails with its name
    uint8_t *g;
    size_t ng = pack_gzip("some text that is long enough to cut", 36, &g);
    pack_write_bytes(t, g, ng - 6);
    free(g);
    REQUIRE(alloy_reader_open(&r, (const char *[]){dir}, 1, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_status s = alloy_reader_next(r, &d, &dn, &end);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("a.txt.gz: truncated gzip data") && !strchr(alloy_last_error(), '\n'), "%d %s", s,
           alloy_last_error());
    alloy_reader_close(r);
    alloy_free(dir), alloy_free(t), alloy_free(jl), alloy_free(js), alloy_free(raw);
}

/* All tokens of a split's shards as bytes (byte tokenizer). */
static char *split_text(const char *dir, bool val, size_t *n) {
    alloy_dataset *ds;
    if (alloy_dataset_open(&ds, dir, 0.0)) return NULL;
    alloy_shard **sh = val ? ds->val : ds->train;
    int k = val ? ds->n_val : ds->n_train;
    size_t total = 0;
    for (int i = 0; i < k; i++) total += sh[i]->count;
    char *out = malloc(total + 1);
    size_t o = 0;
    for (int i = 0; i < k; i++)
        for (uint64_t j = 0; j < sh[i]->count; j++) out[o++] = (char)alloy_shard_token(sh[i], j);
    out[o] = '\0';
    *n = o;
    alloy_dataset_close(ds);
    return out;
}

static cJSON *manifest(const char *dir) {
    char *p = join(dir, "manifest.json");
    cJSON *j = NULL;
    alloy_json_read_file(p, &j);
    alloy_free(p);
    return j;
}

static double source_field(const cJSON *m, const char *name, const char *split, const char *key) {
    const cJSON *srcs = cJSON_GetObjectItemCaseSensitive(m, "sources");
    for (const cJSON *s = srcs ? srcs->child : NULL; s; s = s->next) {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(s, "name")->valuestring, name)) continue;
        const cJSON *o = split ? cJSON_GetObjectItemCaseSensitive(s, split) : s;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        return cJSON_IsNumber(v) ? v->valuedouble : -1;
    }
    return -1;
}

/* Two sources sharing an exact and a near duplicate; NFC on the way; the log; the split. */
static void test_dedup_and_split(void) {
    const char *base = harness_tmpdir();
    char *a = join(base, "a.jsonl"), *b = join(base, "b.txt"), *out = join(base, "out"), *log = join(base, "dropped.jsonl");
    char *out2 = join(base, "out2");
    // 60 distinct documents in A; B repeats A's 5th exactly and A's 7th with one word changed,
    // and has one decomposed é (e + U+0301)
    char line[2200], *ja = calloc(1, 200000), *tb = calloc(1, 200000);
    static char docs[60][1024]; // 60 words of at most 7 bytes: under 600 bytes each
    for (int d = 0; d < 60; d++) {
        int k = snprintf(docs[d], sizeof docs[d], "document %d:", d);
        for (int w = 0; w < 60; w++) k += snprintf(docs[d] + k, sizeof docs[d] - (size_t)k, " w%d", (d * 7919 + w * 104729) % 100000);
        snprintf(line, sizeof line, "{\"text\": \"%.1024s\"}\n", docs[d]);
        strcat(ja, line);
    }
    write_text(a, ja);
    char near[1024];
    strcpy(near, docs[7]);
    memcpy(strstr(near, " w") + 1, "xx", 2); // one word differs: Jaccard of 5-gram shingles about 0.92
    snprintf(tb, 200000, "caf\x65\xcc\x81 au lait<|endoftext|>%s<|endoftext|>%s<|endoftext|>a genuinely new text", docs[5], near);
    write_text(b, tb);
    alloy_prepare_source src[2] = {{"alpha", (const char *[]){a}, 1, 1}, {"beta", (const char *[]){b}, 1, 1}};
    alloy_prepare_options o = alloy_prepare_defaults();
    o.sources = src;
    o.n_sources = 2;
    o.out_dir = out;
    o.reader.separator = "<|endoftext|>";
    o.dedup_exact = o.dedup_minhash = true;
    o.dedup_log = log;
    o.val_fraction = 0.2;
    o.quiet = true;
    alloy_tokenizer *tok;
    alloy_tokenizer_create(&tok, "bytes");
    alloy_prepare_report rep;
    REQUIRE(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(rep.docs == 64 && rep.dropped_exact == 1 && rep.dropped_near == 1, "docs %llu exact %llu near %llu",
           (unsigned long long)rep.docs, (unsigned long long)rep.dropped_exact, (unsigned long long)rep.dropped_near);
    char *logtext;
    size_t ln;
    REQUIRE(alloy_file_read_all(log, &logtext, &ln) == ALLOY_STATUS_OK, "log");
    EXPECT(strstr(logtext, "\"kind\":\"exact\"") && strstr(logtext, "\"duplicate_of\":") && strstr(logtext, "a.jsonl:6") &&
               strstr(logtext, "a.jsonl:8") && strstr(logtext, "\"kind\":\"near\""),
           "dedup log: %s", logtext);
    alloy_free(logtext);
    size_t tn, vn;
    char *train = split_text(out, false, &tn), *val = split_text(out, true, &vn);
    REQUIRE(train && val, "shards");
    EXPECT(strstr(train, "caf\xc3\xa9") || strstr(val, "caf\xc3\xa9"), "NFC composes é");
    EXPECT(!strstr(train, "<|endoftext|>") && !strstr(val, "<|endoftext|>"), "separators are not text");
    int both = 0, neither = 0, in_val = 0;
    for (int d = 0; d < 60; d++) {
        bool t = strstr(train, docs[d]) != NULL, v = strstr(val, docs[d]) != NULL;
        both += t && v;
        neither += !t && !v;
        in_val += v;
    }
    EXPECT(both == 0 && neither == 0, "each document on exactly one side (%d on both, %d on neither)", both, neither);
    EXPECT(in_val >= 4 && in_val <= 24, "about a fifth held out: %d of 60", in_val);
    // the same inputs and seed give the same shards, byte for byte
    o.out_dir = out2;
    o.dedup_log = NULL;
    REQUIRE(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t tn2, vn2;
    char *train2 = split_text(out2, false, &tn2), *val2 = split_text(out2, true, &vn2);
    EXPECT(tn == tn2 && vn == vn2 && !memcmp(train, train2, tn) && !memcmp(val, val2, vn), "deterministic");
    cJSON *m = manifest(out);
    EXPECT(source_field(m, "beta", NULL, "dropped_exact_duplicates") == 1 &&
               source_field(m, "beta", NULL, "dropped_near_duplicates") == 1 && source_field(m, "alpha", NULL, "documents") == 60,
           "manifest counts");
    cJSON_Delete(m);
    // a second prepare into the same folder is refused; an interrupted one's leftovers go
    EXPECT(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "already holds token shards"), "%s",
           alloy_last_error());
    free(train);
    free(val);
    free(train2);
    free(val2);
    free(ja);
    free(tb);
    alloy_tokenizer_destroy(tok);
    alloy_free(a);
    alloy_free(b);
    alloy_free(out);
    alloy_free(out2);
    alloy_free(log);
}

/* Three sources of distinct letters mixed 0.5 / 0.3 / 0.2: shares overall and along the shard. */
static void test_mix(void) {
    const char *base = harness_tmpdir();
    char *paths[3], *out = join(base, "mix"), *out2 = join(base, "mix2");
    const char *names[3] = {"a", "b", "c"};
    int sizes[3] = {300, 500, 900}; // documents of 100 bytes each
    for (int k = 0; k < 3; k++) {
        char fn[16];
        snprintf(fn, sizeof fn, "%s.txt", names[k]);
        paths[k] = join(base, fn);
        FILE *f = fopen(paths[k], "wb");
        for (int d = 0; d < sizes[k]; d++) {
            for (int i = 0; i < 99; i++) fputc(i == 0 ? '0' + d % 10 : 'a' + k, f);
            fputs("#", f);
        }
        fclose(f);
    }
    alloy_prepare_source src[3] = {{"a", (const char *[]){paths[0]}, 1, 0.5}, {"b", (const char *[]){paths[1]}, 1, 0.3},
                                   {"c", (const char *[]){paths[2]}, 1, 0.2}};
    alloy_prepare_options o = alloy_prepare_defaults();
    o.sources = src;
    o.n_sources = 3;
    o.out_dir = out;
    o.reader.separator = "#";
    o.mix = true;
    o.val_fraction = 0;
    o.quiet = true;
    alloy_tokenizer *tok;
    alloy_tokenizer_create(&tok, "bytes");
    alloy_prepare_report rep;
    REQUIRE(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t n;
    char *t = split_text(out, false, &n);
    // a is the limit: all 300 docs (29,700 letters), so b gets 0.3/0.5 of that, c 0.2/0.5
    double cnt[2][3] = {{0}};
    for (size_t i = 0; i < n; i++)
        if (t[i] >= 'a' && t[i] <= 'c') cnt[i >= n / 2][t[i] - 'a']++;
    double tot = cnt[0][0] + cnt[0][1] + cnt[0][2] + cnt[1][0] + cnt[1][1] + cnt[1][2];
    double want[3] = {0.5, 0.3, 0.2};
    for (int k = 0; k < 3; k++) {
        double share = (cnt[0][k] + cnt[1][k]) / tot;
        EXPECT(fabs(share - want[k]) < 0.01, "source %s: %.3f of the tokens, want %.2f", names[k], share, want[k]);
        for (int h = 0; h < 2; h++) {
            double part = cnt[h][k] / (cnt[h][0] + cnt[h][1] + cnt[h][2]);
            EXPECT(fabs(part - want[k]) < 0.05, "source %s in half %d: %.3f (want %.2f): the mix must be even", names[k], h, part,
                   want[k]);
        }
    }
    EXPECT(cnt[0][0] + cnt[1][0] == 300 * 98, "a, the scarcest for its weight, is used once: %.0f", cnt[0][0] + cnt[1][0]);
    free(t);
    // asking for more tokens repeats sources (in a fresh order)
    o.out_dir = out2;
    o.mix_tokens = 200000;
    REQUIRE(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(rep.train_tokens >= 200000 && rep.train_tokens < 200000 + 3 * 100, "%llu tokens for 200000 asked",
           (unsigned long long)rep.train_tokens);
    cJSON *m = manifest(out2);
    double ea = source_field(m, "a", "train", "epochs");
    EXPECT(ea > 3.3 && ea < 3.5, "a repeats about 100000/29700 = 3.37 times: %.3f", ea);
    cJSON_Delete(m);
    alloy_tokenizer_destroy(tok);
    for (int k = 0; k < 3; k++) alloy_free(paths[k]);
    alloy_free(out);
    alloy_free(out2);
}

/* GPT-2's tokenizer: end-of-text after every document, tokenizer.json beside the shards. */
static void test_bpe_shards(void) {
    const char *base = harness_tmpdir();
    char gpt2[512];
    NEED_DATA(gpt2, "gpt2_tokenizer");
    alloy_tokenizer *tok;
    REQUIRE(alloy_tokenizer_load(&tok, gpt2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *in = join(base, "s.txt"), *out = join(base, "bpe");
    write_text(in, "Hello world<|endoftext|>Hello again<|endoftext|>Goodbye");
    alloy_prepare_source src = {"s", (const char *[]){in}, 1, 1};
    alloy_prepare_options o = alloy_prepare_defaults();
    o.sources = &src;
    o.n_sources = 1;
    o.out_dir = out;
    o.reader.separator = "<|endoftext|>";
    o.val_fraction = 0;
    o.quiet = true;
    alloy_prepare_report rep;
    REQUIRE(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, out, 0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const alloy_shard *sh = ds->train[0];
    int eots = 0;
    for (uint64_t i = 0; i < sh->count; i++) eots += alloy_shard_token(sh, i) == 50256;
    EXPECT(eots == 3 && alloy_shard_token(sh, sh->count - 1) == 50256, "one <|endoftext|> per document: %d", eots);
    EXPECT(sh->vocab_size == 50257 && sh->width == 2, "GPT-2 ids in uint16 shards");
    alloy_dataset_close(ds);
    char *tj = join(out, "tokenizer.json");
    alloy_tokenizer *back;
    REQUIRE(alloy_tokenizer_load(&back, tj) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_tokenizer_hash(back) == alloy_tokenizer_hash(tok), "tokenizer.json beside the shards is the same tokenizer");
    cJSON *m = manifest(out);
    char hex[32];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)alloy_tokenizer_hash(tok));
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(m, "tokenizer_hash");
    EXPECT(cJSON_IsString(h) && !strcmp(h->valuestring, hex), "manifest names the tokenizer's fingerprint");
    cJSON_Delete(m);
    alloy_tokenizer_destroy(back);
    alloy_tokenizer_destroy(tok);
    alloy_free(tj);
    alloy_free(in);
    alloy_free(out);
}

static void test_refusals(void) {
    const char *base = harness_tmpdir();
    char *empty = join(base, "empty.txt"), *blank = join(base, "blank.txt"), *out = join(base, "o");
    write_text(empty, "");
    write_text(blank, " \n\t\n ");
    alloy_tokenizer *tok;
    alloy_tokenizer_create(&tok, "bytes");
    alloy_prepare_source src[2] = {{"e", (const char *[]){empty}, 1, 1}, {"b", (const char *[]){blank}, 1, 1}};
    alloy_prepare_options o = alloy_prepare_defaults();
    o.sources = src;
    o.n_sources = 2;
    o.out_dir = out;
    o.quiet = true;
    alloy_prepare_report rep;
    EXPECT(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "no text left"), "%s",
           alloy_last_error());
    EXPECT(!alloy_path_exists(out) || !alloy_path_exists("o/manifest.json"), "nothing written");
    o.val_fraction = 1.5;
    EXPECT(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_USAGE, "val fraction 1.5");
    o.val_fraction = 0.1;
    src[1].name = "e";
    EXPECT(alloy_prepare(&o, tok, &rep) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "two sources are named e"), "%s",
           alloy_last_error());
    alloy_tokenizer_destroy(tok);
    alloy_free(empty);
    alloy_free(blank);
    alloy_free(out);
}

/* The options as written: NAME=PATH sources grouped in order, mix weights, dedup, formats. */
static void test_option_text(void) {
    const char *items[] = {"a=x/1.txt", "dir/b.jsonl", "a=x/2", "c=y/"};
    alloy_prepare_sources S;
    REQUIRE(!alloy_prepare_sources_parse(&S, items, 4), "%s", alloy_last_error());
    EXPECT(S.n == 3 && !strcmp(S.v[0].name, "a") && !strcmp(S.v[1].name, "b") && !strcmp(S.v[2].name, "c"),
           "%d sources: %s %s", S.n, S.n > 0 ? S.v[0].name : "", S.n > 1 ? S.v[1].name : "");
    EXPECT(S.n == 3 && S.v[0].n_paths == 2 && !strcmp(S.v[0].paths[0], "x/1.txt") && !strcmp(S.v[0].paths[1], "x/2") &&
               S.v[1].n_paths == 1 && !strcmp(S.v[1].paths[0], "dir/b.jsonl") && !strcmp(S.v[2].paths[0], "y/"),
           "paths grouped wrongly");
    EXPECT(!alloy_prepare_mix_parse(&S, "a:2,c:0.5") && S.v[0].weight == 2.0 && S.v[1].weight == 0.0 && S.v[2].weight == 0.5,
           "%s", alloy_last_error());
    EXPECT(alloy_prepare_mix_parse(&S, "zz:1") == ALLOY_STATUS_USAGE && says("mix names zz"), "%s", alloy_last_error());
    EXPECT(alloy_prepare_mix_parse(&S, "a:x") == ALLOY_STATUS_USAGE && says("weight of a"), "%s", alloy_last_error());
    EXPECT(alloy_prepare_mix_parse(&S, "a=1") == ALLOY_STATUS_USAGE && says("expects NAME:WEIGHT"), "%s", alloy_last_error());
    alloy_prepare_sources_free(&S);
    alloy_prepare_options o = alloy_prepare_defaults();
    EXPECT(!alloy_prepare_dedup_parse(&o, "exact,minhash") && o.dedup_exact && o.dedup_minhash, "dedup both");
    EXPECT(!alloy_prepare_dedup_parse(&o, "none") && !o.dedup_exact && !o.dedup_minhash, "dedup none");
    EXPECT(alloy_prepare_dedup_parse(&o, "exact,fuzzy") == ALLOY_STATUS_USAGE, "dedup fuzzy accepted");
    alloy_doc_format f;
    alloy_norm_form nf;
    EXPECT(!alloy_doc_format_parse("jsonl", &f) && f == ALLOY_DOC_JSONL && alloy_doc_format_parse("xml", &f), "formats");
    EXPECT(!alloy_norm_form_parse("nfkc", &nf) && nf == ALLOY_NORM_NFKC && alloy_norm_form_parse("nfd", &nf), "forms");
}

int main(void) {
    RUN(test_readers);
    RUN(test_readers_compressed);
    RUN(test_dedup_and_split);
    RUN(test_mix);
    RUN(test_bpe_shards);
    RUN(test_refusals);
    RUN(test_option_text);
    return harness_exit();
}
