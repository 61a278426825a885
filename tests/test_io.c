/*
 * test_io.c — safetensors reading and writing, a suite of corrupt files, a mutation fuzz, and
 * model checkpoint folders (round trip, mismatched config, missing and truncated files).
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <cJSON.h>

static char *path_in(const char *dir, const char *name) { return alloy_path_join(dir, name); }

/* Writes a safetensors image: 8-byte length (hlen, or the header's own length when < 0), the
 * header text, then `data` bytes. */
static void write_raw(const char *path, const char *header, long long hlen, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    uint64_t len = hlen < 0 ? strlen(header) : (uint64_t)hlen;
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void test_roundtrip(void) {
    const char *dir = harness_tmpdir();
    char *p = path_in(dir, "t.safetensors");
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    int32_t b[3] = {-1, 0, 2147483647};
    uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};   // f16: 1, -2, 65504, 2^-24
    uint16_t bf[3] = {0x3f80, 0xc040, 0x0000};          // bf16: 1, -3, 0
    double d = 3.25;
    alloy_st_entry e[] = {
        {"a", ALLOY_DTYPE_F32, 2, {2, 3}, a},  {"b.int", ALLOY_DTYPE_I32, 1, {3}, b},
        {"half", ALLOY_DTYPE_F16, 1, {4}, h},   {"bf", ALLOY_DTYPE_BF16, 3, {1, 3, 1}, bf},
        {"scalar", ALLOY_DTYPE_F64, 0, {0}, &d}, {"empty", ALLOY_DTYPE_F32, 2, {0, 5}, NULL},
    };
    const char *meta[] = {"format", "pt", "note", "hello", NULL};
    REQUIRE(alloy_safetensors_write(p, e, 6, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_safetensors *st;
    REQUIRE(alloy_safetensors_open(&st, p) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(st->n_tensors == 6, "%d tensors", st->n_tensors);
    EXPECT((8 + st->header_size) % 8 == 0, "data must start 8-byte aligned (header %zu)", st->header_size);
    const alloy_st_tensor *t = alloy_safetensors_find(st, "a");
    EXPECT(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24 && !memcmp(t->data, a, 24), "a");
    t = alloy_safetensors_find(st, "b.int");
    EXPECT(t && t->dtype == ALLOY_DTYPE_I32 && !memcmp(t->data, b, 12), "b");
    t = alloy_safetensors_find(st, "scalar");
    EXPECT(t && t->ndim == 0 && t->numel == 1 && !memcmp(t->data, &d, 8), "0-d tensor");
    t = alloy_safetensors_find(st, "empty");
    EXPECT(t && t->numel == 0 && t->nbytes == 0, "empty tensor");
    float out[4];
    t = alloy_safetensors_find(st, "half");
    REQUIRE(t && alloy_st_tensor_to_f32(st, t, out) == ALLOY_STATUS_OK, "f16");
    EXPECT(out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f && out[3] == ldexpf(1.0f, -24), "f16 values %g %g %g %g",
           (double)out[0], (double)out[1], (double)out[2], (double)out[3]);
    t = alloy_safetensors_find(st, "bf");
    REQUIRE(t && alloy_st_tensor_to_f32(st, t, out) == ALLOY_STATUS_OK, "bf16");
    EXPECT(out[0] == 1.0f && out[1] == -3.0f && out[2] == 0.0f, "bf16 values");
    t = alloy_safetensors_find(st, "b.int");
    EXPECT(alloy_st_tensor_to_f32(st, t, out) == ALLOY_STATUS_FORMAT, "I32 is not convertible to f32 weights");
    EXPECT(alloy_safetensors_meta(st, "note") && !strcmp(alloy_safetensors_meta(st, "note"), "hello"), "metadata");
    EXPECT(alloy_safetensors_find(st, "nope") == NULL, "unknown name");
    alloy_safetensors_close(st);
    alloy_free(p);
}

typedef struct bad_case {
    const char *name;
    const char *header;
    long long hlen;   /* -1: the header's length */
    size_t data;      /* bytes of data after the header */
    const char *expect;
} bad_case;

static void test_corrupt_suite(void) {
    const char *dir = harness_tmpdir();
    char *p = path_in(dir, "bad.safetensors");
    uint8_t data[64] = {0};
    static const bad_case cases[] = {
        {"header length 0", "", -1, 0, "header length 0"},
        {"header length beyond file", "{}", 1000, 0, "header length 1000 does not fit"},
        {"header length 2^63 - 1", "{}", 0x7fffffffffffffffLL, 0, "does not fit"},
        {"not an object", "[1,2]", -1, 0, "does not start with '{'"},
        {"invalid JSON", "{\"a\": {", -1, 0, "not a valid JSON object"},
        {"trailing garbage", "{} xx", -1, 0, "not a valid JSON object"},
        {"space padding", "{}      ", -1, 0, ""}, /* spaces are the format's padding: valid */
        {"entry not object", "{\"a\": 5}", -1, 0, "\"a\" is not an object"},
        {"missing dtype", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4, "missing or unknown dtype"},
        {"unknown dtype", "{\"a\": {\"dtype\": \"F31\", \"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4, "unknown dtype"},
        {"dtype not string", "{\"a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4, "unknown dtype"},
        {"shape missing", "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", -1, 4, "no shape array"},
        {"shape not array", "{\"a\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 4]}}", -1, 4, "no shape array"},
        {"negative dim", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", -1, 4, "bad dimension 0"},
        {"fractional dim", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", -1, 4, "bad dimension 0"},
        {"string dim", "{\"a\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", -1, 4, "bad dimension 0"},
        {"nine dims", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", -1, 4,
         "9 dimensions"},
        {"shape overflow", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], \"data_offsets\": [0, 4]}}",
         -1, 4, "overflows"},
        {"size overflow", "{\"a\": {\"dtype\": \"F64\", \"shape\": [4503599627370496, 512], \"data_offsets\": [0, 4]}}", -1, 4,
         "overflows"},
        {"offsets missing", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", -1, 4, "bad data_offsets"},
        {"offsets length 3", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", -1, 4,
         "bad data_offsets"},
        {"negative offset", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", -1, 4,
         "bad data_offsets"},
        {"begin after end", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", -1, 8, "lies outside"},
        {"end beyond data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", -1, 8,
         "lies outside the 8-byte data buffer"},
        {"size not shape", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", -1, 8,
         "has 8 bytes of data but its shape needs 12"},
        {"overlap",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], "
         "\"data_offsets\": [4, 12]}}",
         -1, 12, "overlaps"},
        {"hole",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], "
         "\"data_offsets\": [8, 12]}}",
         -1, 12, "leaves a hole"},
        {"trailing data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 12,
         "8 bytes of data after the last tensor"},
        {"duplicate name",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], "
         "\"data_offsets\": [4, 8]}}",
         -1, 8, "\"a\" appears twice"},
        {"empty name", "{\"\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", -1, 4, "empty name"},
        {"metadata not object", "{\"__metadata__\": 3}", -1, 0, "__metadata__ is not an object"},
        {"metadata value not string", "{\"__metadata__\": {\"k\": 1}}", -1, 0, "\"k\" is not a string"},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        write_raw(p, cases[i].header, cases[i].hlen, data, cases[i].data);
        alloy_safetensors *st = NULL;
        alloy_status s = alloy_safetensors_open(&st, p);
        if (!cases[i].expect[0]) { // a valid variant
            EXPECT(s == ALLOY_STATUS_OK, "%s: refused: %s", cases[i].name, alloy_last_error());
            alloy_safetensors_close(st);
            continue;
        }
        EXPECT(s == ALLOY_STATUS_FORMAT && st == NULL, "%s: status %d", cases[i].name, s);
        const char *msg = alloy_last_error();
        EXPECT(strstr(msg, p) && strstr(msg, cases[i].expect) && !strchr(msg, '\n'), "%s: message '%s'", cases[i].name, msg);
    }
    // NUL inside the header, files too short, a missing file and a folder
    static const char nul_header[] = "{\"a\":\0 1}";
    FILE *f = fopen(p, "wb");
    uint8_t len[8] = {9};
    fwrite(len, 1, 8, f);
    fwrite(nul_header, 1, 9, f);
    fclose(f);
    alloy_safetensors *st = NULL;
    EXPECT(alloy_safetensors_open(&st, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "NUL"), "NUL: %s",
           alloy_last_error());
    for (int k = 0; k < 8; k++) {
        f = fopen(p, "wb");
        fwrite("\x02\0\0\0\0\0\0\0", 1, (size_t)k, f);
        fclose(f);
        EXPECT(alloy_safetensors_open(&st, p) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "too short"), "%d bytes: %s",
               k, alloy_last_error());
    }
    char *missing = path_in(dir, "missing.safetensors");
    EXPECT(alloy_safetensors_open(&st, missing) == ALLOY_STATUS_IO && strstr(alloy_last_error(), missing), "missing file");
    EXPECT(alloy_safetensors_open(&st, dir) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "is a folder"), "folder");
    printf("# %d corrupt headers, a NUL byte, 8 short files, a missing file and a folder rejected\n", n - 1);
    alloy_free(missing);
    alloy_free(p);
}

/* Truncation at every byte and a few thousand random mutations of a valid file: each is
 * accepted or refused cleanly (the sanitizer build watches for the rest). */
static void test_mutation_fuzz(void) {
    const char *dir = harness_tmpdir();
    char *good = path_in(dir, "good.safetensors"), *p = path_in(dir, "mut.safetensors");
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    alloy_st_entry e[] = {{"x.weight", ALLOY_DTYPE_F32, 2, {2, 2}, a}, {"y", ALLOY_DTYPE_F32, 1, {4}, a + 4}};
    const char *meta[] = {"format", "pt", NULL};
    REQUIRE(alloy_safetensors_write(good, e, 2, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_file_map m;
    REQUIRE(alloy_file_map_open(&m, good) == ALLOY_STATUS_OK, "map");
    size_t n = m.size;
    uint8_t *img = malloc(n + 64), *buf = malloc(n + 64);
    memcpy(img, m.data, n);
    alloy_file_map_close(&m);
    int accepted = 0, refused = 0, truncations_refused = 0;
    for (size_t cut = 0; cut < n; cut++) {
        FILE *f = fopen(p, "wb");
        fwrite(img, 1, cut, f);
        fclose(f);
        alloy_safetensors *st = NULL;
        truncations_refused += alloy_safetensors_open(&st, p) == ALLOY_STATUS_FORMAT;
        alloy_safetensors_close(st);
    }
    EXPECT(truncations_refused == (int)n, "every truncation must be refused (%d of %zu)", truncations_refused, n);
    alloy_rng r;
    alloy_rng_seed(&r, 2024);
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, img, n);
        size_t len = n;
        int edits = 1 + (int)alloy_rng_below(&r, 4);
        for (int k = 0; k < edits; k++) {
            int kind = (int)alloy_rng_below(&r, 3);
            size_t at = (size_t)alloy_rng_below(&r, len);
            if (kind == 0) buf[at] ^= (uint8_t)(1u << alloy_rng_below(&r, 8));
            else if (kind == 1) buf[at] = (uint8_t)alloy_rng_below(&r, 256);
            else if (len < n + 60) { // insert a byte
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = (uint8_t)"{}[]\",:0123456789-e"[alloy_rng_below(&r, 19)];
                len++;
            }
        }
        FILE *f = fopen(p, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        alloy_safetensors *st = NULL;
        alloy_status s = alloy_safetensors_open(&st, p);
        if (s == ALLOY_STATUS_OK) {
            accepted++;
            for (int i = 0; i < st->n_tensors; i++) { // whatever was accepted must be readable in bounds
                const alloy_st_tensor *t = &st->tensors[i];
                volatile uint8_t sink = 0;
                for (size_t b = 0; b < t->nbytes; b++) sink ^= t->data[b];
                (void)sink;
            }
            alloy_safetensors_close(st);
        } else {
            refused++;
            EXPECT(s == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), p), "mutation %d: status %d '%s'", it, s,
                   alloy_last_error());
        }
    }
    printf("# fuzz: %zu truncations refused; 3000 mutations: %d accepted, %d refused cleanly\n", n, accepted, refused);
    EXPECT(refused > 1000, "most mutations must be refused (%d)", refused);
    free(img);
    free(buf);
    alloy_free(good);
    alloy_free(p);
}

static alloy_model *preset_model(const char *preset) {
    alloy_config c;
    ALLOY_ASSERT(alloy_config_preset(&c, preset, 256) == ALLOY_STATUS_OK);
    alloy_model *m;
    ALLOY_ASSERT(alloy_model_create(&m, &c, 1, 16) == ALLOY_STATUS_OK);
    alloy_model_init_weights(m, 5);
    return m;
}

static void test_checkpoint_roundtrip(void) {
    const char *presets[] = {"tiny-gpt2", "tiny-llama"};
    for (int k = 0; k < 2; k++) {
        const char *dir = harness_tmpdir();
        char *ck = path_in(dir, "ck");
        alloy_model *m = preset_model(presets[k]);
        REQUIRE(alloy_model_save(m, ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_model *l;
        REQUIRE(alloy_model_load(&l, ck, 1, 0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(l->num_params == m->num_params && !memcmp(l->params_memory, m->params_memory, m->num_params * sizeof(float)),
               "%s: weights must round-trip bitwise", presets[k]);
        EXPECT(!memcmp(&l->config, &m->config, sizeof m->config), "%s: config must round-trip", presets[k]);
        EXPECT(l->max_T == m->config.max_seq_len, "max_T 0 means the config's maximum");
        // the file carries exactly the Hugging Face names and shapes of the table
        char *w = path_in(ck, "model.safetensors");
        alloy_safetensors *st;
        REQUIRE(alloy_safetensors_open(&st, w) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(st->n_tensors == m->n_tensors, "%d tensors in the file, %d in the table", st->n_tensors, m->n_tensors);
        const char *probe = k ? "model.layers.1.self_attn.k_proj.weight" : "transformer.h.1.attn.c_attn.weight";
        const alloy_st_tensor *t = alloy_safetensors_find(st, probe);
        EXPECT(t && t->shape[0] == (k ? 32 : 64) && t->shape[1] == (k ? 64 : 192), "%s shape", probe);
        EXPECT(k || !alloy_safetensors_find(st, "lm_head.weight"), "tied GPT-2 writes no lm_head");
        alloy_safetensors_close(st);
        alloy_free(w);
        alloy_model_destroy(l);
        alloy_model_destroy(m);
        alloy_free(ck);
    }
}

/* Rewrites one key of a checkpoint's config.json. */
static void edit_config(const char *ck, const char *key, cJSON *value) {
    char *p = path_in(ck, "config.json");
    cJSON *j;
    ALLOY_ASSERT(alloy_json_read_file(p, &j) == ALLOY_STATUS_OK);
    if (value) cJSON_ReplaceItemInObject(j, key, value);
    else cJSON_DeleteItemFromObject(j, key);
    ALLOY_ASSERT(alloy_json_write_file(p, j) == ALLOY_STATUS_OK);
    cJSON_Delete(j);
    alloy_free(p);
}

static void test_checkpoint_errors(void) {
    const char *dir = harness_tmpdir();
    char *good = path_in(dir, "good");
    alloy_model *m = preset_model("tiny-llama");
    REQUIRE(alloy_model_save(m, good) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    struct {
        const char *name, *key;
        cJSON *(*make)(void);
        alloy_status want;
        const char *expect;
    } edits[] = {
        {"fewer layers", "num_hidden_layers", NULL, ALLOY_STATUS_MISMATCH, "unexpected tensor \"model.layers.1."},
        {"wider", "hidden_size", NULL, ALLOY_STATUS_MISMATCH, "has shape [256, 64] but config.json implies [256, 128]"},
        {"model type", "model_type", NULL, ALLOY_STATUS_FORMAT, "unsupported model_type \"mamba\""},
        {"heads", "num_attention_heads", NULL, ALLOY_STATUS_FORMAT, "not a multiple of n_head 5"},
        {"kv heads", "num_key_value_heads", NULL, ALLOY_STATUS_FORMAT, "not a multiple of n_kv_head 3"},
        {"negative", "intermediate_size", NULL, ALLOY_STATUS_FORMAT, "\"intermediate_size\" out of range"},
        {"string", "vocab_size", NULL, ALLOY_STATUS_FORMAT, "\"vocab_size\" must be a number"},
        {"activation", "hidden_act", NULL, ALLOY_STATUS_FORMAT, "hidden_act must be \"silu\""},
        {"missing key", "hidden_size", NULL, ALLOY_STATUS_FORMAT, "missing field \"hidden_size\""},
    };
    cJSON *values[] = {cJSON_CreateNumber(1),          cJSON_CreateNumber(128),  cJSON_CreateString("mamba"),
                       cJSON_CreateNumber(5),          cJSON_CreateNumber(3),    cJSON_CreateNumber(-4),
                       cJSON_CreateString("256"),      cJSON_CreateString("relu"), NULL};
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "edit%zu", i);
        char *ck = path_in(dir, name);
        REQUIRE(alloy_model_save(m, ck) == ALLOY_STATUS_OK, "save");
        edit_config(ck, edits[i].key, values[i]);
        alloy_model *l = NULL;
        alloy_status s = alloy_model_load(&l, ck, 1, 0);
        EXPECT(s == edits[i].want && l == NULL, "%s: status %d '%s'", edits[i].name, s, alloy_last_error());
        EXPECT(strstr(alloy_last_error(), ck) && strstr(alloy_last_error(), edits[i].expect), "%s: '%s'", edits[i].name,
               alloy_last_error());
        alloy_free(ck);
    }
    // GPT-2 with untied embeddings is not GPT-2
    alloy_model *g = preset_model("tiny-gpt2");
    char *gck = path_in(dir, "gpt2");
    REQUIRE(alloy_model_save(g, gck) == ALLOY_STATUS_OK, "save");
    edit_config(gck, "tie_word_embeddings", cJSON_CreateFalse());
    alloy_model *l = NULL;
    EXPECT(alloy_model_load(&l, gck, 1, 0) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "ties its embeddings"), "%s",
           alloy_last_error());
    // a Hugging Face GPT-2 file may carry attn.bias buffers and a copy of the tied head
    edit_config(gck, "tie_word_embeddings", cJSON_CreateTrue());
    {
        int n = g->n_tensors;
        alloy_st_entry *e = calloc((size_t)n + 2, sizeof *e);
        for (int i = 0; i < n; i++) {
            const alloy_tensor_info *t = &g->tensors[i];
            e[i] = (alloy_st_entry){t->name, ALLOY_DTYPE_F32, t->ndim, {t->shape[0], t->shape[1]}, g->params_memory + t->offset};
        }
        float *mask = calloc(16 * 16, sizeof(float));
        e[n] = (alloy_st_entry){"transformer.h.0.attn.bias", ALLOY_DTYPE_F32, 4, {1, 1, 16, 16}, mask};
        e[n + 1] = (alloy_st_entry){"lm_head.weight", ALLOY_DTYPE_F32, 2, {256, 64}, g->params.wte};
        char *w = path_in(gck, "model.safetensors");
        REQUIRE(alloy_safetensors_write(w, e, n + 2, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(alloy_model_load(&l, gck, 1, 0) == ALLOY_STATUS_OK, "HF extras must load: %s", alloy_last_error());
        alloy_model_destroy(l);
        alloy_free(w);
        free(mask);
        free(e);
    }
    // missing pieces
    char *nocfg = path_in(dir, "nocfg"), *now = path_in(dir, "now");
    alloy_model_save(m, nocfg);
    alloy_model_save(m, now);
    char *p = path_in(nocfg, "config.json");
    remove(p);
    alloy_free(p);
    EXPECT(alloy_model_load(&l, nocfg, 1, 0) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "config.json: cannot open"), "%s",
           alloy_last_error());
    p = path_in(now, "model.safetensors");
    remove(p);
    EXPECT(alloy_model_load(&l, now, 1, 0) == ALLOY_STATUS_IO && strstr(alloy_last_error(), p), "%s", alloy_last_error());
    alloy_free(p);
    EXPECT(alloy_model_load(&l, "/nonexistent/ck", 1, 0) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "no such folder"),
           "%s", alloy_last_error());
    // truncated weights
    char *tr = path_in(dir, "trunc");
    alloy_model_save(m, tr);
    p = path_in(tr, "model.safetensors");
    alloy_file_map fm;
    alloy_file_map_open(&fm, p);
    size_t half = fm.size / 2;
    uint8_t *copy = malloc(half);
    memcpy(copy, fm.data, half);
    alloy_file_map_close(&fm);
    alloy_write_file_atomic(p, copy, half);
    free(copy);
    EXPECT(alloy_model_load(&l, tr, 1, 0) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "truncated"), "%s",
           alloy_last_error());
    alloy_free(p);
    // a save that cannot happen (the folder path is a file) leaves the good checkpoint intact
    char *gw = path_in(good, "model.safetensors");
    alloy_file_map before;
    alloy_file_map_open(&before, gw);
    uint8_t *snap = malloc(before.size);
    memcpy(snap, before.data, before.size);
    size_t snap_n = before.size;
    alloy_file_map_close(&before);
    char *blocked = path_in(dir, "afile");
    alloy_write_file_atomic(blocked, "x", 1);
    EXPECT(alloy_model_save(m, blocked) == ALLOY_STATUS_IO && strstr(alloy_last_error(), blocked), "%s", alloy_last_error());
    alloy_model_init_weights(m, 6); // different weights, a failed save of them
    char *sub = path_in(blocked, "inner");
    EXPECT(alloy_model_save(m, sub) != ALLOY_STATUS_OK, "save under a file must fail");
    alloy_file_map after;
    alloy_file_map_open(&after, gw);
    EXPECT(after.size == snap_n && !memcmp(after.data, snap, snap_n), "the good checkpoint must be untouched");
    alloy_file_map_close(&after);
    free(snap);
    alloy_free(sub);
    alloy_free(blocked);
    alloy_free(gw);
    alloy_free(tr);
    alloy_free(nocfg);
    alloy_free(now);
    alloy_free(gck);
    alloy_free(good);
    alloy_model_destroy(g);
    alloy_model_destroy(m);
}

int main(void) {
    RUN(test_roundtrip);
    RUN(test_corrupt_suite);
    RUN(test_mutation_fuzz);
    RUN(test_checkpoint_roundtrip);
    RUN(test_checkpoint_errors);
    return harness_exit();
}
