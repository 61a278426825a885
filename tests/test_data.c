/*
 * test_data.c — token shards, datasets, the loader, the byte tokenizer (prepare: test_prepare.c).
 */
#include "alloy/data.h"
#include "harness.h"

#include <sys/stat.h>

static char *join(const char *a, const char *b) { return alloy_path_join(a, b); }

static void write_shard(const char *path, const int32_t *t, size_t n, uint32_t vocab) {
    alloy_shard_writer w;
    ALLOY_ASSERT(alloy_shard_writer_open(&w, path, vocab) == ALLOY_STATUS_OK);
    ALLOY_ASSERT(alloy_shard_writer_add(&w, t, n) == ALLOY_STATUS_OK);
    ALLOY_ASSERT(alloy_shard_writer_close(&w) == ALLOY_STATUS_OK);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_shard_roundtrip(void) {
    const char *dir = harness_tmpdir();
    for (int k = 0; k < 2; k++) {
        uint32_t vocab = k ? 100000 : 300;
        int32_t t[5000];
        for (int i = 0; i < 5000; i++) t[i] = (int32_t)((i * 7919u) % vocab);
        char *p = join(dir, k ? "wide.bin" : "narrow.bin");
        write_shard(p, t, 5000, vocab);
        alloy_shard *s;
        REQUIRE(alloy_shard_open(&s, p) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(s->width == (k ? 4 : 2), "width %d", s->width);
        EXPECT(s->count == 5000 && s->vocab_size == vocab, "count %llu vocab %u", (unsigned long long)s->count, s->vocab_size);
        struct stat st;
        stat(p, &st);
        EXPECT((size_t)st.st_size == 64 + 5000 * (size_t)s->width, "file size %lld", (long long)st.st_size);
        int bad = 0;
        for (int i = 0; i < 5000; i++) bad += alloy_shard_token(s, (uint64_t)i) != (uint32_t)t[i];
        EXPECT(bad == 0, "%d tokens differ", bad);
        alloy_shard_close(s);
        alloy_free(p);
    }
    alloy_shard_writer w;
    char *p = join(dir, "range.bin");
    REQUIRE(alloy_shard_writer_open(&w, p, 10) == ALLOY_STATUS_OK, "open");
    int32_t badtok[2] = {3, 10};
    EXPECT(alloy_shard_writer_add(&w, badtok, 2) == ALLOY_STATUS_RANGE, "writer must refuse token 10 of vocab 10");
    alloy_shard_writer_abort(&w);
    EXPECT(!alloy_path_exists(p), "an aborted shard must leave no file");
    alloy_free(p);
}

/* A valid 4-token shard image, then one corruption per case. */
static void test_shard_corrupt(void) {
    const char *dir = harness_tmpdir();
    char *good = join(dir, "good.bin");
    int32_t t[4] = {1, 2, 3, 4};
    write_shard(good, t, 4, 5);
    alloy_file_map m;
    REQUIRE(alloy_file_map_open(&m, good) == ALLOY_STATUS_OK, "map");
    uint8_t img[64 + 8];
    REQUIRE(m.size == sizeof img, "size %zu", m.size);
    memcpy(img, m.data, sizeof img);
    alloy_file_map_close(&m);
    struct {
        const char *name;
        int off;     /* byte to change, -1 none */
        uint8_t val;
        long size;   /* bytes of the image to write; -1 all, else truncate/extend */
        const char *expect;
    } cases[] = {
        {"empty", -1, 0, 0, "too short"},
        {"short header", -1, 0, 40, "too short"},
        {"magic", 0, 'X', -1, "bad magic"},
        {"version", 8, 2, -1, "unsupported shard version 2"},
        {"width", 12, 3, -1, "token width 3"},
        {"header size", 28, 65, -1, "header size 65"},
        {"reserved", 50, 1, -1, "reserved header bytes"},
        {"count", 16, 5, -1, "header says 5 tokens"},
        {"truncated", -1, 0, 70, "truncated"},
        {"extra bytes", -1, 0, 74, "holds 10 bytes"},
        {"checksum", 66, 9, -1, "checksum mismatch"},
        {"vocab zero", 24, 0, -1, "vocabulary size 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[128] = {0};
        memcpy(buf, img, sizeof img);
        if (cases[i].off >= 0) buf[cases[i].off] = cases[i].val;
        size_t n = cases[i].size < 0 ? sizeof img : (size_t)cases[i].size;
        char *p = join(dir, "bad.bin");
        write_bytes(p, buf, n);
        alloy_shard *s = NULL;
        alloy_status st = alloy_shard_open(&s, p);
        EXPECT(st == ALLOY_STATUS_FORMAT, "%s: status %d", cases[i].name, st);
        EXPECT(s == NULL, "%s: no shard on failure", cases[i].name);
        EXPECT(strstr(alloy_last_error(), p) && strstr(alloy_last_error(), cases[i].expect), "%s: message '%s'",
               cases[i].name, alloy_last_error());
        alloy_free(p);
    }
    // a token beyond the vocabulary with a correct checksum: found by the range scan
    uint8_t buf[sizeof img];
    memcpy(buf, img, sizeof img);
    buf[64 + 2] = 7; // token 1 becomes 7 (vocab 5)
    uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, buf + 64, 8);
    for (int i = 0; i < 8; i++) buf[32 + i] = (uint8_t)(h >> (8 * i));
    char *p = join(dir, "range.bin");
    write_bytes(p, buf, sizeof buf);
    alloy_shard *s = NULL;
    EXPECT(alloy_shard_open(&s, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "token 7 at index 1"), "range: %s",
           alloy_last_error());
    alloy_free(p);
    alloy_free(good);
}

/* A dataset folder with two train shards of known content: token i of shard s is s·1000 + i
 * (vocabulary 2000), so a window's first token names it. */
static const char *make_dataset(int n_val) {
    const char *dir = harness_tmpdir();
    static char keep[256];
    snprintf(keep, sizeof keep, "%s", dir);
    for (int s = 0; s < 2; s++) {
        int32_t t[1000];
        for (int i = 0; i < 1000; i++) t[i] = s * 1000 + i;
        char name[32];
        snprintf(name, sizeof name, "train-%05d.bin", s);
        char *p = join(keep, name);
        write_shard(p, t, s ? 700 : 1000, 2000);
        alloy_free(p);
    }
    for (int s = 0; s < n_val; s++) {
        int32_t t[300];
        for (int i = 0; i < 300; i++) t[i] = 1999 - i;
        char *p = join(keep, "val-00000.bin");
        write_shard(p, t, 300, 2000);
        alloy_free(p);
    }
    return keep;
}

static void test_loader(void) {
    const char *dir = make_dataset(0);
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, dir, 0.1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(ds->n_train == 2 && ds->n_val == 0 && ds->vocab_size == 2000, "dataset %d %d %u", ds->n_train, ds->n_val,
           ds->vocab_size);
    int T = 16, B = 3;
    alloy_loader *a, *b, *v;
    REQUIRE(alloy_loader_create(&a, ds, ALLOY_SPLIT_TRAIN, B, T, 7) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_loader_create(&b, ds, ALLOY_SPLIT_TRAIN, B, T, 7) == ALLOY_STATUS_OK, "b");
    REQUIRE(alloy_loader_create(&v, ds, ALLOY_SPLIT_VAL, B, T, 7) == ALLOY_STATUS_OK, "v");
    // shard 0: (999)/16 = 62 windows, 7 held out; shard 1: 699/16 = 43 windows, 5 held out
    EXPECT(a->n_windows == 55 + 38, "train windows %lld", (long long)a->n_windows);
    EXPECT(v->n_windows == 7 + 5, "val windows %lld", (long long)v->n_windows);
    // one epoch visits every training window once: collect window starts through the inputs
    int seen[2][64] = {{0}};
    int64_t batches = (a->n_windows + B - 1) / B, visited = 0;
    int mismatch = 0, shifted = 0;
    for (int64_t k = 0; k < batches; k++) {
        alloy_loader_next(a);
        alloy_loader_next(b);
        mismatch += memcmp(a->inputs, b->inputs, sizeof(int32_t) * (size_t)(B * T)) != 0;
        for (int r = 0; r < B && visited < a->n_windows; r++, visited++) {
            const int32_t *in = a->inputs + r * T, *tg = a->targets + r * T;
            for (int t = 0; t + 1 < T; t++) shifted += tg[t] != in[t + 1];
            int sh = in[0] / 1000, off = in[0] % 1000;
            if (off % T == 0 && off / T < 64) seen[sh][off / T]++;
            for (int t = 1; t < T; t++) shifted += in[t] != in[0] + t; // one contiguous window
        }
    }
    EXPECT(mismatch == 0, "two loaders with one seed must agree (%d batches differ)", mismatch);
    EXPECT(shifted == 0, "targets must be the inputs shifted by one (%d differ)", shifted);
    int held_seen = 0;
    for (int w = 55; w < 62; w++) held_seen += seen[0][w];
    for (int w = 38; w < 43; w++) held_seen += seen[1][w];
    EXPECT(held_seen == 0, "held-out windows must never reach training (%d did)", held_seen);
    int once = 0;
    for (int w = 0; w < 55; w++) once += seen[0][w] == 1;
    for (int w = 0; w < 38; w++) once += seen[1][w] == 1;
    EXPECT(once == 93, "an epoch must visit every training window exactly once (%d did)", once);
    EXPECT(a->epoch == 0 && a->cursor == 93, "after one epoch: epoch %lld cursor %lld", (long long)a->epoch,
           (long long)a->cursor);
    // a different seed gives a different order
    alloy_loader *c;
    REQUIRE(alloy_loader_create(&c, ds, ALLOY_SPLIT_TRAIN, B, T, 8) == ALLOY_STATUS_OK, "c");
    alloy_loader_seek(a, 0, 0);
    alloy_loader_next(a);
    alloy_loader_next(c);
    EXPECT(memcmp(a->inputs, c->inputs, sizeof(int32_t) * (size_t)(B * T)) != 0, "seeds 7 and 8 gave the same batch");
    // seek reproduces the sequence from any position, across an epoch boundary
    alloy_loader_seek(a, 1, 90);
    int32_t want[3 * 16 * 4];
    for (int k = 0; k < 4; k++) {
        alloy_loader_next(a);
        memcpy(want + k * B * T, a->inputs, sizeof(int32_t) * (size_t)(B * T));
    }
    EXPECT(a->epoch == 2, "epoch %lld after crossing", (long long)a->epoch);
    alloy_loader_seek(b, 1, 90);
    int diff = 0;
    for (int k = 0; k < 4; k++) {
        alloy_loader_next(b);
        diff += memcmp(want + k * B * T, b->inputs, sizeof(int32_t) * (size_t)(B * T)) != 0;
    }
    EXPECT(diff == 0, "seek must reproduce the batches (%d differ)", diff);
    EXPECT(alloy_loader_seek(b, 0, 1000) == ALLOY_STATUS_FORMAT, "seek past the windows must fail");
    // an epoch is a permutation: epochs 1 and 2 differ in order
    alloy_loader_destroy(a);
    alloy_loader_destroy(b);
    alloy_loader_destroy(c);
    alloy_loader_destroy(v);
    // too little data for the sequence length
    alloy_loader *big = NULL;
    EXPECT(alloy_loader_create(&big, ds, ALLOY_SPLIT_TRAIN, 1, 2000, 1) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "no window of 2001 tokens"),
           "%s", alloy_last_error());
    alloy_dataset_close(ds);
}

static void test_dataset_val_shards(void) {
    const char *dir = make_dataset(1);
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, dir, 0.1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(ds->n_val == 1, "val shards %d", ds->n_val);
    alloy_loader *t, *v;
    REQUIRE(alloy_loader_create(&t, ds, ALLOY_SPLIT_TRAIN, 2, 16, 1) == ALLOY_STATUS_OK, "t");
    REQUIRE(alloy_loader_create(&v, ds, ALLOY_SPLIT_VAL, 2, 16, 1) == ALLOY_STATUS_OK, "v");
    EXPECT(t->n_windows == 62 + 43, "with val shards all train windows train (%lld)", (long long)t->n_windows);
    EXPECT(v->n_windows == 299 / 16, "val windows %lld", (long long)v->n_windows);
    alloy_loader_next(v);
    EXPECT(v->inputs[0] == 1999 && v->targets[0] == 1998, "val content %d %d", v->inputs[0], v->targets[0]);
    uint64_t fp = ds->fingerprint;
    alloy_loader_destroy(t);
    alloy_loader_destroy(v);
    alloy_dataset_close(ds);
    // changing one shard changes the fingerprint
    int32_t x[10] = {1, 2, 3};
    char *p = join(dir, "val-00000.bin");
    write_shard(p, x, 10, 2000);
    alloy_free(p);
    REQUIRE(alloy_dataset_open(&ds, dir, 0.1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(ds->fingerprint != fp, "fingerprint must change with the data");
    alloy_dataset_close(ds);
    EXPECT(alloy_dataset_open(&ds, "/nonexistent/alloy", 0.1) == ALLOY_STATUS_IO &&
               strstr(alloy_last_error(), "/nonexistent/alloy: no such folder"),
           "%s", alloy_last_error());
    EXPECT(alloy_dataset_open(&ds, dir, 1.5) == ALLOY_STATUS_USAGE, "val fraction 1.5 must be refused");
}

static void test_byte_tokenizer(void) {
    alloy_tokenizer *tok;
    REQUIRE(alloy_tokenizer_create(&tok, "bytes") == ALLOY_STATUS_OK, "create");
    EXPECT(alloy_tokenizer_vocab_size(tok) == 256, "vocab");
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    alloy_ids enc = {0};
    REQUIRE(alloy_tokenizer_encode(tok, all, 256, 0, &enc) == ALLOY_STATUS_OK && enc.n == 256, "encode");
    int32_t *ids = enc.data;
    size_t n = enc.n;
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += ids[i] != i;
    EXPECT(bad == 0, "ids are byte values");
    char *back;
    size_t len;
    REQUIRE(alloy_tokenizer_decode(tok, ids, n, &back, &len) == ALLOY_STATUS_OK && len == 256, "decode");
    EXPECT(memcmp(back, all, 256) == 0, "round trip of every byte");
    alloy_free(back);
    ids[3] = 256;
    EXPECT(alloy_tokenizer_decode(tok, ids, n, &back, &len) == ALLOY_STATUS_RANGE, "id 256 must be refused");
    alloy_ids_free(&enc);
    alloy_tokenizer_destroy(tok);
    EXPECT(alloy_tokenizer_create(&tok, "sentencepiece") == ALLOY_STATUS_USAGE, "unknown tokenizer");
}

int main(void) {
    RUN(test_shard_roundtrip);
    RUN(test_shard_corrupt);
    RUN(test_loader);
    RUN(test_dataset_val_shards);
    RUN(test_byte_tokenizer);
    return harness_exit();
}
