/*
 * test_gguf.c — GGUF: every value and tensor type through the writer and the reader; models
 * exported and imported (a tiny GPT-2, a tiny Llama with grouped-query attention, tied and
 * untied, at every weight type; a Mixtral MoE with stacked experts) with the Q/K permutation
 * checked against llama.cpp's RoPE; tokenizers; importing llama.cpp-style and mismatched files; a catalogue of corrupt files
 * made by mutating a valid one, every truncation, a mutation fuzz; out-of-memory paths; and an
 * outside parser — node with @huggingface/gguf (tests/js/gguf_check.mjs) — reading our exports.
 *
 * The outside parser is skipped ("ok - ... # SKIP oracle: ...") only when node (NODE of
 * harness.h) or the package is missing; CI installs both (scripts/install-deps.sh --test runs
 * npm ci in tests/js) and fails on such a skip (ALLOY_REQUIRE_ORACLES=1, tests/run.sh).
 */
#include "alloy/gguf.h"
#include "io_util.h"

#include <cJSON.h>
#include <sys/wait.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* The file at path is rejected with FORMAT, no object, and a one-line message naming the file
 * and containing `needle` (NULL: any). */
static void expect_rejected(const char *path, const char *needle, const char *what) {
    alloy_gguf *g = (alloy_gguf *)1;
    alloy_status s = alloy_gguf_open(&g, path);
    EXPECT(s == ALLOY_STATUS_FORMAT && g == NULL, "%s: status %s, '%s'", what, alloy_status_name(s),
           alloy_last_error());
    EXPECT(says(path) && one_line() && (!needle || says(needle)), "%s: message '%s' lacks '%s'", what,
           alloy_last_error(), needle ? needle : "");
    if (s == ALLOY_STATUS_OK) alloy_gguf_close(g);
}

/* ---- the test's own walk of a GGUF header: where each field lies ---------------------------- */

#define WALK_MAX 64
typedef struct walk {
    const uint8_t *p;
    size_t n, pos;
    bool ok;
    size_t bounds[4096]; /* every field boundary in the header */
    int n_bounds;
    int n_kv; /* per key/value: where its key length, type and value start */
    size_t kv_key[WALK_MAX], kv_type[WALK_MAX], kv_val[WALK_MAX];
    char kv_name[WALK_MAX][48];
    int n_t; /* per tensor info: where its fields start */
    size_t t_name[WALK_MAX], t_ndims[WALK_MAX], t_ne[WALK_MAX], t_type[WALK_MAX], t_off[WALK_MAX];
    size_t infos_end; /* the end of the tensor infos */
} walk;

static void wmark(walk *w) {
    if (w->n_bounds < 4096) w->bounds[w->n_bounds++] = w->pos;
}
static uint64_t wget(walk *w, int bytes) {
    if (!w->ok || w->pos + (size_t)bytes > w->n) {
        w->ok = false;
        return 0;
    }
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | w->p[w->pos + (size_t)i];
    w->pos += (size_t)bytes;
    wmark(w);
    return v;
}
static void wvalue(walk *w, uint32_t type) {
    static const int sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (!w->ok || type > 12) {
        w->ok = false;
    } else if (type == 8) {
        uint64_t len = wget(w, 8);
        if (len > w->n - w->pos) w->ok = false;
        else w->pos += (size_t)len;
        wmark(w);
    } else if (type == 9) {
        uint32_t et = (uint32_t)wget(w, 4);
        uint64_t n = wget(w, 8);
        for (uint64_t i = 0; i < n && w->ok; i++) wvalue(w, et);
    } else {
        wget(w, sz[type]);
    }
}
static walk *walk_file(const uint8_t *p, size_t n) {
    walk *w = calloc(1, sizeof *w);
    w->p = p;
    w->n = n;
    w->ok = true;
    w->pos = 0;
    wmark(w);
    wget(w, 4);
    wget(w, 4);
    uint64_t nt = wget(w, 8), nkv = wget(w, 8);
    for (uint64_t i = 0; i < nkv && w->ok && i < WALK_MAX; i++) {
        w->kv_key[i] = w->pos;
        uint64_t len = wget(w, 8);
        snprintf(w->kv_name[i], sizeof w->kv_name[i], "%.*s", (int)(len < 47 ? len : 47), (const char *)p + w->pos);
        w->pos += (size_t)len;
        wmark(w);
        w->kv_type[i] = w->pos;
        uint32_t type = (uint32_t)wget(w, 4);
        w->kv_val[i] = w->pos;
        wvalue(w, type);
        w->n_kv++;
    }
    for (uint64_t i = 0; i < nt && w->ok && i < WALK_MAX; i++) {
        w->t_name[i] = w->pos;
        uint64_t len = wget(w, 8);
        w->pos += (size_t)len;
        wmark(w);
        w->t_ndims[i] = w->pos;
        uint32_t nd = (uint32_t)wget(w, 4);
        w->t_ne[i] = w->pos;
        for (uint32_t d = 0; d < nd; d++) wget(w, 8);
        w->t_type[i] = w->pos;
        wget(w, 4);
        w->t_off[i] = w->pos;
        wget(w, 8);
        w->n_t++;
    }
    w->infos_end = w->pos;
    return w;
}
static int walk_kv(const walk *w, const char *key) {
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv_name[i], key)) return i;
    ALLOY_ASSERT(!"key not in the test file");
    return -1;
}

/* ---- a small file with every value type, and tensors -------------------------------------- */

static const uint32_t nest_values[12] = {9, 1, 0, 9, 1, 0, 4, 3, 0, 7, 8, 9};

/* Writes the base file of the corruption tests: every scalar type, strings, arrays (of u32, of
 * strings, of bools, one u32 array whose values read as three nested arrays once its element
 * type says ARRAY) and four tensors: t.a F32 [3, 2], t.b F16 [4], t.q Q8_0 [32, 2], t.c F32 [1]. */
static void write_base(const char *path, uint32_t alignment) {
    alloy_gguf_writer *w;
    ALLOY_ASSERT(alloy_gguf_writer_create(&w) == ALLOY_STATUS_OK);
    ALLOY_ASSERT(!alloy_gguf_set_u32(w, "general.alignment", alignment));
    ALLOY_ASSERT(!alloy_gguf_set_str(w, "general.architecture", "test"));
    ALLOY_ASSERT(!alloy_gguf_set_val(w, "t.u8", ALLOY_GGUF_VTYPE_UINT8, (alloy_gguf_scalar){.u8 = 200}));
    ALLOY_ASSERT(!alloy_gguf_set_val(w, "t.i8", ALLOY_GGUF_VTYPE_INT8, (alloy_gguf_scalar){.i8 = -100}));
    ALLOY_ASSERT(!alloy_gguf_set_val(w, "t.bool", ALLOY_GGUF_VTYPE_BOOL, (alloy_gguf_scalar){.b = true}));
    ALLOY_ASSERT(!alloy_gguf_set_str(w, "t.str", "hello"));
    uint32_t arr[3] = {1, 2, 3};
    ALLOY_ASSERT(!alloy_gguf_set_arr(w, "t.arr", ALLOY_GGUF_VTYPE_UINT32, arr, 3));
    const char *strs[3] = {"a", "bc", "def"};
    ALLOY_ASSERT(!alloy_gguf_set_arr_str(w, "t.strs", strs, NULL, 3));
    bool bools[3] = {true, false, true};
    ALLOY_ASSERT(!alloy_gguf_set_arr(w, "t.bools", ALLOY_GGUF_VTYPE_BOOL, bools, 3));
    ALLOY_ASSERT(!alloy_gguf_set_arr(w, "t.nest", ALLOY_GGUF_VTYPE_UINT32, nest_values, 12));
    static float a[6] = {1, 2, 3, 4, 5, 6}, c[1] = {7};
    static uint16_t b[4] = {0x3C00, 0x4000, 0x4200, 0x4400};
    static uint8_t q[68];
    float row[64];
    for (int i = 0; i < 64; i++) row[i] = (float)(i - 30) / 8.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q8_0, q, row, 32);
    alloy_quantize_row(ALLOY_QTYPE_Q8_0, q + 34, row + 32, 32);
    ALLOY_ASSERT(!alloy_gguf_add_tensor(w, "t.a", 2, (int64_t[]){3, 2}, ALLOY_GGML_TYPE_F32, a, sizeof a));
    ALLOY_ASSERT(!alloy_gguf_add_tensor(w, "t.b", 1, (int64_t[]){4}, ALLOY_GGML_TYPE_F16, b, sizeof b));
    ALLOY_ASSERT(!alloy_gguf_add_tensor(w, "t.q", 2, (int64_t[]){32, 2}, ALLOY_GGML_TYPE_Q8_0, q, sizeof q));
    ALLOY_ASSERT(!alloy_gguf_add_tensor(w, "t.c", 1, (int64_t[]){1}, ALLOY_GGML_TYPE_F32, c, sizeof c));
    ALLOY_ASSERT(alloy_gguf_write(w, path) == ALLOY_STATUS_OK);
    alloy_gguf_writer_destroy(w);
}

/* ---- value and tensor round trip ---------------------------------------------------------- */

static void test_values_roundtrip(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "values.gguf");
    alloy_gguf_writer *w;
    REQUIRE(alloy_gguf_writer_create(&w) == ALLOY_STATUS_OK, "create");
    struct {
        const char *key;
        alloy_gguf_vtype type;
        alloy_gguf_scalar v;
    } scalars[] = {
        {"v.u8", ALLOY_GGUF_VTYPE_UINT8, {.u8 = 255}},
        {"v.i8", ALLOY_GGUF_VTYPE_INT8, {.i8 = -128}},
        {"v.u16", ALLOY_GGUF_VTYPE_UINT16, {.u16 = 65535}},
        {"v.i16", ALLOY_GGUF_VTYPE_INT16, {.i16 = -32768}},
        {"v.u32", ALLOY_GGUF_VTYPE_UINT32, {.u32 = 4294967295u}},
        {"v.i32", ALLOY_GGUF_VTYPE_INT32, {.i32 = INT32_MIN}},
        {"v.f32", ALLOY_GGUF_VTYPE_FLOAT32, {.f32 = -3.25e-7f}},
        {"v.bool", ALLOY_GGUF_VTYPE_BOOL, {.b = true}},
        {"v.false", ALLOY_GGUF_VTYPE_BOOL, {.b = false}},
        {"v.u64", ALLOY_GGUF_VTYPE_UINT64, {.u64 = UINT64_MAX}},
        {"v.i64", ALLOY_GGUF_VTYPE_INT64, {.i64 = INT64_MIN}},
        {"v.f64", ALLOY_GGUF_VTYPE_FLOAT64, {.f64 = 3.141592653589793}},
    };
    int ns = (int)(sizeof scalars / sizeof scalars[0]);
    for (int i = 0; i < ns; i++)
        REQUIRE(alloy_gguf_set_val(w, scalars[i].key, scalars[i].type, scalars[i].v) == ALLOY_STATUS_OK, "%s: %s",
                scalars[i].key, alloy_last_error());
    REQUIRE(!alloy_gguf_set_u32(w, "general.alignment", 64), "%s", alloy_last_error());
    REQUIRE(!alloy_gguf_set_str(w, "v.str", "h\xc3\xa9llo \"w\"\n"), "%s", alloy_last_error());
    REQUIRE(!alloy_gguf_set_str(w, "v.empty", ""), "%s", alloy_last_error());
    // arrays of every scalar type
    uint8_t au8[3] = {0, 128, 255};
    int8_t ai8[2] = {-1, 127};
    uint16_t au16[2] = {1, 65535};
    int16_t ai16[2] = {-300, 300};
    uint32_t au32[2] = {7, 0xdeadbeefu};
    int32_t ai32[3] = {-5, 0, INT32_MAX};
    float af32[3] = {1.5f, -0.0f, 1e30f};
    bool abool[4] = {true, false, false, true};
    uint64_t au64[2] = {UINT64_MAX, 1};
    int64_t ai64[2] = {INT64_MIN, INT64_MAX};
    double af64[2] = {-2.5, 1e-300};
    struct {
        const char *key;
        alloy_gguf_vtype type;
        const void *data;
        size_t n;
    } arrays[] = {
        {"a.u8", ALLOY_GGUF_VTYPE_UINT8, au8, 3},     {"a.i8", ALLOY_GGUF_VTYPE_INT8, ai8, 2},
        {"a.u16", ALLOY_GGUF_VTYPE_UINT16, au16, 2},  {"a.i16", ALLOY_GGUF_VTYPE_INT16, ai16, 2},
        {"a.u32", ALLOY_GGUF_VTYPE_UINT32, au32, 2},  {"a.i32", ALLOY_GGUF_VTYPE_INT32, ai32, 3},
        {"a.f32", ALLOY_GGUF_VTYPE_FLOAT32, af32, 3}, {"a.bool", ALLOY_GGUF_VTYPE_BOOL, abool, 4},
        {"a.u64", ALLOY_GGUF_VTYPE_UINT64, au64, 2},  {"a.i64", ALLOY_GGUF_VTYPE_INT64, ai64, 2},
        {"a.f64", ALLOY_GGUF_VTYPE_FLOAT64, af64, 2}, {"a.none", ALLOY_GGUF_VTYPE_INT32, NULL, 0},
    };
    int na = (int)(sizeof arrays / sizeof arrays[0]);
    for (int i = 0; i < na; i++)
        REQUIRE(!alloy_gguf_set_arr(w, arrays[i].key, arrays[i].type, arrays[i].data, arrays[i].n), "%s: %s",
                arrays[i].key, alloy_last_error());
    const char *strs[4] = {"Ġthe", "", "a b", "<|endoftext|>"};
    size_t lens[4] = {5, 0, 3, 13};
    REQUIRE(!alloy_gguf_set_arr_str(w, "a.str", strs, lens, 4), "%s", alloy_last_error());

    // tensors of every type alloy converts, and raw types it only carries
    enum { N = 512 };
    float x[N];
    alloy_rng r;
    alloy_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) x[i] = (float)alloy_rng_normal(&r);
    static uint8_t q8[N / 32 * 34], q4[N / 32 * 18], qk[N / 256 * 144], f16[N * 2], bf16[N * 2];
    alloy_quantize_row(ALLOY_QTYPE_Q8_0, q8, x, N);
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q4, x, N);
    alloy_quantize_row(ALLOY_QTYPE_Q4_K, qk, x, N);
    alloy_quantize_row(ALLOY_QTYPE_F16, f16, x, N);
    for (int i = 0; i < N; i++) {
        uint32_t b = fbits(x[i]) >> 16;
        bf16[2 * i] = (uint8_t)b;
        bf16[2 * i + 1] = (uint8_t)(b >> 8);
    }
    int32_t ints[6] = {1, -2, 3, -4, 5, -6};
    int8_t i8s[5] = {1, 2, 3, 4, 5};
    double f64s[2] = {1.0, -1.0};
    struct {
        const char *name;
        int nd;
        int64_t ne[4];
        uint32_t type;
        const void *data;
        size_t nbytes;
    } tensors[] = {
        {"f32", 3, {8, 4, 16}, ALLOY_GGML_TYPE_F32, x, sizeof x},
        {"f16", 2, {256, 2}, ALLOY_GGML_TYPE_F16, f16, sizeof f16},
        {"bf16", 1, {N}, ALLOY_GGML_TYPE_BF16, bf16, sizeof bf16},
        {"q8_0", 2, {64, 8}, ALLOY_GGML_TYPE_Q8_0, q8, sizeof q8},
        {"q4_0", 4, {32, 2, 2, 4}, ALLOY_GGML_TYPE_Q4_0, q4, sizeof q4},
        {"q4_k", 2, {256, 2}, ALLOY_GGML_TYPE_Q4_K, qk, sizeof qk},
        {"i32", 2, {3, 2}, ALLOY_GGML_TYPE_I32, ints, sizeof ints},
        {"i8", 1, {5}, ALLOY_GGML_TYPE_I8, i8s, sizeof i8s},
        {"f64", 1, {2}, ALLOY_GGML_TYPE_F64, f64s, sizeof f64s},
    };
    int nt = (int)(sizeof tensors / sizeof tensors[0]);
    for (int i = 0; i < nt; i++)
        REQUIRE(!alloy_gguf_add_tensor(w, tensors[i].name, tensors[i].nd, tensors[i].ne, tensors[i].type,
                                       tensors[i].data, tensors[i].nbytes),
                "%s: %s", tensors[i].name, alloy_last_error());
    REQUIRE(alloy_gguf_write(w, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf_writer_destroy(w);
    EXPECT(harness_count_entries(dir) == 1, "the writer left %d files", harness_count_entries(dir));

    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(g->version == 3 && g->alignment == 64 && g->data_offset % 64 == 0, "version %u alignment %u data at %zu",
           g->version, g->alignment, g->data_offset);
    EXPECT(g->n_kv == (size_t)(ns + na + 4) && g->n_tensors == (size_t)nt, "%zu kvs, %zu tensors", g->n_kv,
           g->n_tensors);
    for (int i = 0; i < ns; i++) {
        const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, scalars[i].key);
        REQUIRE(kv, "%s missing", scalars[i].key);
        EXPECT(kv->type == scalars[i].type &&
                   kv->raw_size == (scalars[i].type == ALLOY_GGUF_VTYPE_BOOL || scalars[i].type <= ALLOY_GGUF_VTYPE_INT8
                                        ? 1u
                                        : kv->raw_size),
               "%s: type %d", scalars[i].key, kv->type);
    }
    // typed values
    const alloy_gguf_kv *kv;
    EXPECT((kv = alloy_gguf_find_kv(g, "v.u8")) && kv->val.u8 == 255, "u8");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.i8")) && kv->val.i8 == -128, "i8");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.u16")) && kv->val.u16 == 65535, "u16");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.i16")) && kv->val.i16 == -32768, "i16");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.u32")) && kv->val.u32 == 4294967295u, "u32");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.i32")) && kv->val.i32 == INT32_MIN, "i32");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.f32")) && fbits(kv->val.f32) == fbits(-3.25e-7f), "f32");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.bool")) && kv->val.b, "bool");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.false")) && !kv->val.b, "false");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.u64")) && kv->val.u64 == UINT64_MAX, "u64");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.i64")) && kv->val.i64 == INT64_MIN, "i64");
    EXPECT((kv = alloy_gguf_find_kv(g, "v.f64")) && kv->val.f64 == 3.141592653589793, "f64");
    // the getters
    int64_t iv;
    double dv;
    bool bv;
    const char *sv;
    EXPECT(!alloy_gguf_get_int(g, "v.i16", &iv) && iv == -32768, "get_int i16");
    EXPECT(!alloy_gguf_get_int(g, "v.u32", &iv) && iv == 4294967295LL, "get_int u32");
    EXPECT(!alloy_gguf_get_int(g, "v.i64", &iv) && iv == INT64_MIN, "get_int i64");
    EXPECT(alloy_gguf_get_int(g, "v.u64", &iv) == ALLOY_STATUS_FORMAT && says("out of range"),
           "get_int of u64 max: '%s'", alloy_last_error());
    EXPECT(alloy_gguf_get_int(g, "v.f32", &iv) == ALLOY_STATUS_FORMAT &&
               says("\"v.f32\" is FLOAT32, expected an integer") && says(path),
           "get_int of a float: '%s'", alloy_last_error());
    EXPECT(alloy_gguf_get_int(g, "nope", &iv) == ALLOY_STATUS_FORMAT && says("key \"nope\" is missing"),
           "missing: '%s'", alloy_last_error());
    EXPECT(!alloy_gguf_get_float(g, "v.f32", &dv) && dv == (double)-3.25e-7f, "get_float f32");
    EXPECT(!alloy_gguf_get_float(g, "v.f64", &dv) && dv == 3.141592653589793, "get_float f64");
    EXPECT(alloy_gguf_get_float(g, "v.u8", &dv) == ALLOY_STATUS_FORMAT, "get_float of an int");
    EXPECT(!alloy_gguf_get_bool(g, "v.bool", &bv) && bv, "get_bool");
    EXPECT(alloy_gguf_get_bool(g, "v.u8", &bv) == ALLOY_STATUS_FORMAT, "get_bool of an int");
    EXPECT(!alloy_gguf_get_str(g, "v.str", &sv) && !strcmp(sv, "h\xc3\xa9llo \"w\"\n"), "get_str");
    EXPECT(!alloy_gguf_get_str(g, "v.empty", &sv) && sv[0] == '\0', "empty string");
    EXPECT(alloy_gguf_get_str(g, "a.u8", &sv) == ALLOY_STATUS_FORMAT && says("is ARRAY, expected STRING"),
           "get_str of an array: '%s'", alloy_last_error());
    // arrays
    for (int i = 0; i < na; i++) {
        const alloy_gguf_kv *a;
        REQUIRE(!alloy_gguf_get_arr(g, arrays[i].key, arrays[i].type, &a), "%s: %s", arrays[i].key, alloy_last_error());
        EXPECT(a->arr_n == arrays[i].n, "%s: %llu elements", arrays[i].key, (unsigned long long)a->arr_n);
        for (size_t k = 0; k < arrays[i].n; k++) {
            alloy_gguf_scalar v;
            EXPECT(alloy_gguf_arr_get(a, k, &v), "%s[%zu]", arrays[i].key, k);
            bool same;
            switch (arrays[i].type) {
            case ALLOY_GGUF_VTYPE_UINT8: same = v.u8 == au8[k]; break;
            case ALLOY_GGUF_VTYPE_INT8: same = v.i8 == ai8[k]; break;
            case ALLOY_GGUF_VTYPE_UINT16: same = v.u16 == au16[k]; break;
            case ALLOY_GGUF_VTYPE_INT16: same = v.i16 == ai16[k]; break;
            case ALLOY_GGUF_VTYPE_UINT32: same = v.u32 == au32[k]; break;
            case ALLOY_GGUF_VTYPE_INT32: same = v.i32 == ai32[k]; break;
            case ALLOY_GGUF_VTYPE_FLOAT32: same = fbits(v.f32) == fbits(af32[k]); break;
            case ALLOY_GGUF_VTYPE_BOOL: same = v.b == abool[k]; break;
            case ALLOY_GGUF_VTYPE_UINT64: same = v.u64 == au64[k]; break;
            case ALLOY_GGUF_VTYPE_INT64: same = v.i64 == ai64[k]; break;
            default: same = v.f64 == af64[k]; break;
            }
            EXPECT(same, "%s[%zu] differs", arrays[i].key, k);
        }
        alloy_gguf_scalar v;
        EXPECT(!alloy_gguf_arr_get(a, arrays[i].n, &v), "%s: element past the end", arrays[i].key);
    }
    const alloy_gguf_kv *a;
    EXPECT(alloy_gguf_get_arr(g, "a.u8", ALLOY_GGUF_VTYPE_INT32, &a) == ALLOY_STATUS_FORMAT &&
               says("is an array of UINT8, expected an array of INT32"),
           "array of the wrong type: '%s'", alloy_last_error());
    REQUIRE(!alloy_gguf_get_arr(g, "a.str", ALLOY_GGUF_VTYPE_STRING, &a), "%s", alloy_last_error());
    EXPECT(a->arr_n == 4, "4 strings");
    for (size_t k = 0; k < 4 && k < a->arr_n; k++) {
        size_t len;
        const char *s = alloy_gguf_arr_str(a, k, &len);
        EXPECT(s && len == lens[k] && !memcmp(s, strs[k], len), "string %zu", k);
    }
    size_t len;
    alloy_gguf_scalar v;
    EXPECT(!alloy_gguf_arr_str(a, 4, &len) && !alloy_gguf_arr_get(a, 0, &v), "string array bounds");
    EXPECT(!alloy_gguf_arr_str(alloy_gguf_find_kv(g, "a.u8"), 0, &len), "arr_str of a number array");
    // tensors: as written, data aligned to 64 in the file
    for (int i = 0; i < nt; i++) {
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, tensors[i].name);
        REQUIRE(t && t == &g->tensors[i], "%s: found in file order", tensors[i].name);
        EXPECT(t->type == tensors[i].type && t->n_dims == tensors[i].nd && t->nbytes == tensors[i].nbytes,
               "%s: type %u, %d dims, %zu bytes", t->name, t->type, t->n_dims, t->nbytes);
        for (int d = 0; d < 4; d++)
            EXPECT(t->ne[d] == (d < tensors[i].nd ? tensors[i].ne[d] : 1), "%s: ne[%d] = %lld", t->name, d,
                   (long long)t->ne[d]);
        EXPECT(!memcmp(t->data, tensors[i].data, t->nbytes), "%s: data differs", t->name);
        EXPECT((size_t)(t->data - g->map.data) % 64 == 0, "%s: data not 64-aligned", t->name);
    }
    EXPECT(alloy_gguf_find_tensor(g, "nope") == NULL, "find of a missing tensor");
    // conversions to f32: exactly what the formats decode to
    float out[N], want[N];
    const char *conv[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k"};
    const alloy_qtype cq[] = {ALLOY_QTYPE_F32,  ALLOY_QTYPE_F16,  ALLOY_QTYPE_COUNT,
                              ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0, ALLOY_QTYPE_Q4_K};
    const void *cdata[] = {x, f16, bf16, q8, q4, qk};
    for (int i = 0; i < 6; i++) {
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, conv[i]);
        REQUIRE(t, "%s", conv[i]);
        EXPECT(alloy_gguf_tensor_to_f32(g, t, out) == ALLOY_STATUS_OK, "%s: %s", conv[i], alloy_last_error());
        if (cq[i] == ALLOY_QTYPE_COUNT) { // bf16: the top half of each float
            for (int k = 0; k < N; k++) {
                uint32_t top = fbits(x[k]) >> 16 << 16;
                memcpy(&want[k], &top, 4);
            }
        } else {
            alloy_dequantize_row(cq[i], want, cdata[i], N);
        }
        EXPECT(!memcmp(out, want, sizeof out), "%s: converted values differ", conv[i]);
    }
    alloy_status s = alloy_gguf_tensor_to_f32(g, alloy_gguf_find_tensor(g, "i32"), out);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("\"i32\" is I32") && says(path), "I32 to f32: '%s'", alloy_last_error());
    alloy_gguf_close(g);
    alloy_gguf_close(NULL);

    // type tables
    int be;
    size_t bb;
    EXPECT(alloy_ggml_type_size(ALLOY_GGML_TYPE_Q4_K, &be, &bb) && be == 256 && bb == 144, "Q4_K size");
    EXPECT(alloy_ggml_type_size(ALLOY_GGML_TYPE_Q6_K, &be, &bb) && be == 256 && bb == 210, "Q6_K size");
    EXPECT(!alloy_ggml_type_size(4, &be, &bb) && !alloy_ggml_type_size(99, &be, &bb), "removed and unknown types");
    EXPECT(!strcmp(alloy_ggml_type_name(ALLOY_GGML_TYPE_BF16), "BF16") && !alloy_ggml_type_name(31), "type names");
    for (int q = 0; q < ALLOY_QTYPE_COUNT; q++) {
        uint32_t gt;
        alloy_qtype back;
        EXPECT(alloy_ggml_type_from_qtype((alloy_qtype)q, &gt) && alloy_ggml_type_to_qtype(gt, &back) &&
                   (int)back == q && alloy_ggml_type_size(gt, &be, &bb) &&
                   be == alloy_qtype_block_elems((alloy_qtype)q) && bb == alloy_qtype_block_bytes((alloy_qtype)q),
               "qtype %s", alloy_qtype_name((alloy_qtype)q));
    }
    EXPECT(!strcmp(alloy_gguf_vtype_name(ALLOY_GGUF_VTYPE_FLOAT64), "FLOAT64") &&
               !strcmp(alloy_gguf_vtype_name(13), "?"),
           "vtype names");
    alloy_free(path);
    alloy_free(dir);
}

/* The writer refuses what would make an invalid file, with USAGE naming the key or tensor, and
 * stays usable after a refusal. */
static void test_writer_usage(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "w.gguf");
    alloy_gguf_writer *w;
    REQUIRE(alloy_gguf_writer_create(&w) == ALLOY_STATUS_OK, "create");
    float f[4] = {0};
    REQUIRE(!alloy_gguf_set_u32(w, "k", 1), "%s", alloy_last_error());
    EXPECT(alloy_gguf_set_str(w, "k", "again") == ALLOY_STATUS_USAGE && says("\"k\" is set twice"), "dup key: '%s'",
           alloy_last_error());
    EXPECT(alloy_gguf_set_u32(w, "", 1) == ALLOY_STATUS_USAGE && says("empty key"), "empty key");
    EXPECT(alloy_gguf_set_u32(w, "general.alignment", 48) == ALLOY_STATUS_USAGE && says("power of two"),
           "alignment 48");
    EXPECT(alloy_gguf_set_val(w, "general.alignment", ALLOY_GGUF_VTYPE_UINT64, (alloy_gguf_scalar){.u64 = 32}) ==
               ALLOY_STATUS_USAGE,
           "alignment as u64");
    EXPECT(alloy_gguf_set_val(w, "x", ALLOY_GGUF_VTYPE_STRING, (alloy_gguf_scalar){.u64 = 0}) == ALLOY_STATUS_USAGE &&
               says("not a scalar type"),
           "STRING via set_val");
    EXPECT(alloy_gguf_set_arr(w, "x", ALLOY_GGUF_VTYPE_ARRAY, f, 1) == ALLOY_STATUS_USAGE,
           "array of arrays via set_arr");
    EXPECT(alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){4}, ALLOY_GGML_TYPE_F32, f, 12) == ALLOY_STATUS_USAGE &&
               says("12 bytes given") && says("need 16"),
           "wrong size: '%s'", alloy_last_error());
    EXPECT(alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){4}, ALLOY_GGML_TYPE_Q8_0, f, 16) == ALLOY_STATUS_USAGE &&
               says("not a multiple"),
           "Q8_0 of 4: '%s'", alloy_last_error());
    EXPECT(alloy_gguf_add_tensor(w, "t", 0, (int64_t[]){4}, ALLOY_GGML_TYPE_F32, f, 16) == ALLOY_STATUS_USAGE,
           "0 dims");
    EXPECT(alloy_gguf_add_tensor(w, "t", 5, (int64_t[]){1, 1, 1, 1, 4}, ALLOY_GGML_TYPE_F32, f, 16) ==
               ALLOY_STATUS_USAGE,
           "5 dims");
    EXPECT(alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){0}, ALLOY_GGML_TYPE_F32, f, 0) == ALLOY_STATUS_USAGE,
           "zero dim");
    EXPECT(alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){4}, 4, f, 16) == ALLOY_STATUS_USAGE && says("unknown type 4"),
           "type 4");
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    EXPECT(alloy_gguf_add_tensor(w, longname, 1, (int64_t[]){4}, ALLOY_GGML_TYPE_F32, f, 16) == ALLOY_STATUS_USAGE,
           "a 64-byte name");
    REQUIRE(!alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){4}, ALLOY_GGML_TYPE_F32, f, 16), "%s", alloy_last_error());
    EXPECT(alloy_gguf_add_tensor(w, "t", 1, (int64_t[]){4}, ALLOY_GGML_TYPE_F32, f, 16) == ALLOY_STATUS_USAGE &&
               says("added twice"),
           "dup tensor");
    REQUIRE(alloy_gguf_write(w, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(g->n_kv == 1 && g->n_tensors == 1 && g->alignment == 32, "%zu kvs, %zu tensors after refusals", g->n_kv,
           g->n_tensors);
    alloy_gguf_close(g);
    // a file with nothing at all, and one with keys and no tensors
    alloy_gguf_writer *e;
    REQUIRE(alloy_gguf_writer_create(&e) == ALLOY_STATUS_OK, "create");
    REQUIRE(alloy_gguf_write(e, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "empty: %s", alloy_last_error());
    EXPECT(g->n_kv == 0 && g->n_tensors == 0 && g->map.size == 32, "empty file: %zu bytes", g->map.size);
    alloy_gguf_close(g);
    alloy_gguf_writer_destroy(e);
    // writing into a missing folder fails cleanly
    char *bad = alloy_path_join(dir, "missing/w.gguf");
    alloy_status s = alloy_gguf_write(w, bad);
    EXPECT(s == ALLOY_STATUS_IO && says(bad), "write into a missing folder: %s '%s'", alloy_status_name(s),
           alloy_last_error());
    alloy_free(bad);
    alloy_gguf_writer_destroy(w);
    alloy_gguf_writer_destroy(NULL);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- corrupt files ------------------------------------------------------------------------ */

static void test_corrupt(void) {
    char *dir = copy_tmpdir();
    char *base = alloy_path_join(dir, "base.gguf"), *path = alloy_path_join(dir, "bad.gguf");
    write_base(base, 32);
    size_t n;
    uint8_t *good = read_bytes(base, &n);
    REQUIRE(good, "read");
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, base) == ALLOY_STATUS_OK, "the base file: %s", alloy_last_error());
    size_t data_offset = g->data_offset, last_end = 0; // where the last tensor's data ends
    for (size_t i = 0; i < g->n_tensors; i++)
        if (data_offset + g->tensors[i].offset + g->tensors[i].nbytes > last_end)
            last_end = data_offset + g->tensors[i].offset + g->tensors[i].nbytes;
    const alloy_gguf_tensor *ta = alloy_gguf_find_tensor(g, "t.a"), *tb = alloy_gguf_find_tensor(g, "t.b");
    REQUIRE(ta && tb && ta->offset == 0 && tb->offset == 32, "layout: t.a at %llu, t.b at %llu",
            ta ? (unsigned long long)ta->offset : 0ULL, tb ? (unsigned long long)tb->offset : 0ULL);
    alloy_gguf_close(g);
    walk *w = walk_file(good, n);
    REQUIRE(w->ok && w->n_kv == 10 && w->n_t == 4, "walk: %d kvs, %d tensors", w->n_kv, w->n_t);
    uint8_t *buf = malloc(n + 64);
    int cases = 0;
    // one patch: `width` bytes (1, 4 or 8) of value v at offset
    typedef struct patch {
        const char *what;
        size_t offset;
        int width;
        uint64_t v;
        const char *expect;
    } patch;
    int kalign = walk_kv(w, "general.alignment"), ku8 = walk_kv(w, "t.u8"), ki8 = walk_kv(w, "t.i8");
    int kbool = walk_kv(w, "t.bool"), kstr = walk_kv(w, "t.str"), karr = walk_kv(w, "t.arr"),
        kstrs = walk_kv(w, "t.strs");
    int kbools = walk_kv(w, "t.bools"), knest = walk_kv(w, "t.nest");
    uint64_t big = UINT64_MAX;
    patch patches[] = {
        {"bad magic", 0, 4, 0x58554747, "not a GGUF file"},
        {"version 1", 4, 4, 1, "version 1"},
        {"version 4", 4, 4, 4, "unknown GGUF version 4"},
        {"version 0", 4, 4, 0, "unknown GGUF version 0"},
        {"big-endian version", 4, 4, 0x03000000, "big-endian"},
        {"tensor count too large", 8, 8, big, "tensors cannot fit"},
        {"tensor count 2^40", 8, 8, (uint64_t)1 << 40, "tensors cannot fit"},
        {"one tensor more", 8, 8, 5, NULL},
        {"key/value count too large", 16, 8, big, "key/values cannot fit"},
        {"one key/value more", 16, 8, 11, NULL},
        {"one key/value fewer", 16, 8, 9, NULL},
        {"key length past the end", w->kv_key[ku8], 8, big, "runs past the end"},
        {"key length 0", w->kv_key[ku8], 8, 0, "empty key"},
        {"key with a NUL", w->kv_key[ku8] + 8 + 1, 1, 0, "control character"},
        {"key with a newline", w->kv_key[ku8] + 8 + 1, 1, '\n', "control character"},
        {"duplicate key", w->kv_key[ki8] + 8 + 2, 1, 'u', "key \"t.u8\" appears twice"},
        {"value type 13", w->kv_type[ku8], 4, 13, "unknown value type 13"},
        {"value type 2^32-1", w->kv_type[kstr], 4, 0xFFFFFFFFu, "unknown value type 4294967295"},
        {"string length past the end", w->kv_val[kstr], 8, big, "runs past the end"},
        {"string length one past the end", w->kv_val[kstr], 8, n - w->kv_val[kstr] - 8 + 1, "runs past the end"},
        {"bool value 2", w->kv_val[kbool], 1, 2, "neither 0 nor 1"},
        {"bool array element 2", w->kv_val[kbools] + 12 + 1, 1, 2, "neither 0 nor 1"},
        {"array element type 13", w->kv_val[karr], 4, 13, "unknown array element type 13"},
        {"array count past the end", w->kv_val[karr] + 4, 8, big, "runs past the end"},
        {"array count 2^62 of u32", w->kv_val[karr] + 4, 8, (uint64_t)1 << 62, "runs past the end"},
        {"string array count past the end", w->kv_val[kstrs] + 4, 8, (uint64_t)1 << 61, "runs past the end"},
        {"string in an array past the end", w->kv_val[kstrs] + 12 + 9, 8, big, "runs past the end"},
        {"alignment 48", w->kv_val[kalign], 4, 48, "general.alignment 48 is not a power of two"},
        {"alignment 0", w->kv_val[kalign], 4, 0, "general.alignment 0 is not a power of two"},
        {"alignment as INT32", w->kv_type[kalign], 4, ALLOY_GGUF_VTYPE_INT32,
         "general.alignment is INT32, expected UINT32"},
        {"alignment 64", w->kv_val[kalign], 4, 64, "not a multiple of the alignment 64"},
        {"tensor name length 0", w->t_name[0], 8, 0, "tensor 0 has an empty name"},
        {"tensor name of 64 bytes", w->t_name[0], 8, 64, "a name of 64 bytes"},
        {"tensor name past the end", w->t_name[0], 8, big, "runs past the end"},
        {"tensor name with a NUL", w->t_name[1] + 8 + 1, 1, 0, "control character"},
        {"tensor name with a newline", w->t_name[1] + 8 + 1, 1, '\n', "control character"},
        {"duplicate tensor name", w->t_name[1] + 8 + 2, 1, 'a', "tensor \"t.a\" appears twice"},
        {"n_dims 0", w->t_ndims[0], 4, 0, "0 dimensions"},
        {"n_dims 5", w->t_ndims[0], 4, 5, "5 dimensions"},
        {"n_dims 2^32-1", w->t_ndims[2], 4, 0xFFFFFFFFu, "4294967295 dimensions"},
        {"zero dimension", w->t_ne[0] + 8, 8, 0, "dimension 1 of size 0"},
        {"dimension 2^63", w->t_ne[1], 8, (uint64_t)1 << 63, "overflows"},
        {"dimension 2^64-1", w->t_ne[2] + 8, 8, big, "overflows"},
        {"unknown type 4", w->t_type[0], 4, 4, "unknown type 4"},
        {"unknown type 99", w->t_type[1], 4, 99, "unknown type 99"},
        {"unknown type 43", w->t_type[1], 4, 43, "unknown type 43"},
        {"Q8_0 rows of 3", w->t_type[0], 4, ALLOY_GGML_TYPE_Q8_0, "not a multiple of the block of 32"},
        {"Q4_K rows of 32", w->t_type[2], 4, ALLOY_GGML_TYPE_Q4_K, "not a multiple of the block of 256"},
        {"a shape grown into the next tensor", w->t_ne[0] + 8, 8, 3, "overlaps tensor \"t.a\""},
        {"a shape grown past its padding", w->t_ne[1], 8, 40, "overlaps"},
        {"misaligned offset", w->t_off[1], 8, 33, "offset 33, not a multiple of the alignment 32"},
        {"offset past the end", w->t_off[2], 8, (uint64_t)1 << 40, "lies outside"},
        {"offset 2^64-32", w->t_off[2], 8, big - 31, "lies outside"},
        {"offset just past the end", w->t_off[3], 8, n - data_offset, "lies outside"},
        {"overlapping tensors", w->t_off[1], 8, 0, "overlaps"},
    };
    int np = (int)(sizeof patches / sizeof patches[0]);
    for (int i = 0; i < np; i++) {
        memcpy(buf, good, n);
        patch *p = &patches[i];
        if (p->width == 1) buf[p->offset] = (uint8_t)p->v;
        else if (p->width == 4) put_u32(buf + p->offset, (uint32_t)p->v);
        else put_u64(buf + p->offset, p->v);
        write_bytes(path, buf, n);
        expect_rejected(path, p->expect, p->what);
        cases++;
    }
    // two dimensions whose product overflows 2^64
    memcpy(buf, good, n);
    put_u64(buf + w->t_ne[0], (uint64_t)1 << 40);
    put_u64(buf + w->t_ne[0] + 8, (uint64_t)1 << 40);
    write_bytes(path, buf, n);
    expect_rejected(path, "product overflows", "dims 2^40 x 2^40");
    cases++;
    // arrays nested five deep: the u32 array re-typed as an array of arrays whose values say
    // ARRAY of 1 three times more, then an empty u32 array
    memcpy(buf, good, n);
    size_t nest = w->kv_val[knest];
    put_u32(buf + nest, ALLOY_GGUF_VTYPE_ARRAY);
    put_u64(buf + nest + 4, 1);
    uint32_t deep[12] = {9, 1, 0, 9, 1, 0, 9, 1, 0, 4, 0, 0};
    for (int k = 0; k < 12; k++) put_u32(buf + nest + 12 + 4 * k, deep[k]);
    write_bytes(path, buf, n);
    expect_rejected(path, "arrays nested deeper than 4 levels", "nested five deep");
    cases++;
    // four deep is accepted, and copies through the writer byte for byte
    for (int k = 0; k < 12; k++) put_u32(buf + nest + 12 + 4 * k, nest_values[k]);
    write_bytes(path, buf, n);
    g = NULL;
    EXPECT(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "nested four deep: %s", alloy_last_error());
    if (g) {
        const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, "t.nest");
        EXPECT(kv && kv->type == ALLOY_GGUF_VTYPE_ARRAY && kv->arr_type == ALLOY_GGUF_VTYPE_ARRAY && kv->arr_n == 1 &&
                   kv->raw_size == 12 + 48,
               "nested array");
        alloy_gguf_scalar v;
        EXPECT(kv && !alloy_gguf_arr_get(kv, 0, &v), "elements of nested arrays are not scalars");
        alloy_gguf_writer *cw;
        REQUIRE(alloy_gguf_writer_create(&cw) == ALLOY_STATUS_OK, "create");
        for (size_t k = 0; k < g->n_kv; k++)
            EXPECT(!alloy_gguf_set_kv(cw, &g->kvs[k]), "set_kv: %s", alloy_last_error());
        for (size_t k = 0; k < g->n_tensors; k++) {
            const alloy_gguf_tensor *t = &g->tensors[k];
            EXPECT(!alloy_gguf_add_tensor(cw, t->name, t->n_dims, t->ne, t->type, t->data, t->nbytes), "%s",
                   alloy_last_error());
        }
        char *copy = alloy_path_join(dir, "copy.gguf");
        EXPECT(alloy_gguf_write(cw, copy) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(same_file(copy, buf, n), "a copy through set_kv and add_tensor differs from its source");
        alloy_gguf_writer_destroy(cw);
        alloy_free(copy);
        alloy_gguf_close(g);
    }
    // an empty file, a short one, the data section cut by one byte
    write_bytes(path, good, 0);
    expect_rejected(path, "too short", "empty file");
    write_bytes(path, good, 3);
    expect_rejected(path, "too short", "3 bytes");
    write_bytes(path, good, last_end - 1);
    expect_rejected(path, "lies outside the", "data cut by one byte");
    cases += 3;
    // truncation at every field boundary of the header, and at every byte up to the data
    int bounded = 0;
    for (int i = 0; i < w->n_bounds; i++) {
        if (w->bounds[i] >= n) continue;
        write_bytes(path, good, w->bounds[i]);
        char what[64];
        snprintf(what, sizeof what, "cut at the field boundary %zu", w->bounds[i]);
        expect_rejected(path, w->bounds[i] < 4 ? "too short" : NULL, what);
        bounded++;
    }
    EXPECT(bounded > 60, "only %d field boundaries", bounded);
    cases += bounded;
    int refused = 0;
    for (size_t cut = 0; cut < last_end; cut++) {
        write_bytes(path, good, cut);
        alloy_gguf *tg = NULL;
        refused += alloy_gguf_open(&tg, path) == ALLOY_STATUS_FORMAT && tg == NULL && says(path) && one_line();
        alloy_gguf_close(tg);
    }
    EXPECT(refused == (int)last_end, "every truncation before the last tensor must be refused (%d of %zu)", refused,
           last_end);
    // bytes after the data are not the format's concern: accepted
    memcpy(buf, good, n);
    memset(buf + n, 0xAB, 7);
    write_bytes(path, buf, n + 7);
    g = NULL;
    EXPECT(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "trailing bytes: %s", alloy_last_error());
    alloy_gguf_close(g);
    // a missing file
    char *missing = alloy_path_join(dir, "missing.gguf");
    g = (alloy_gguf *)1;
    alloy_status s = alloy_gguf_open(&g, missing);
    EXPECT(s == ALLOY_STATUS_IO && g == NULL && says(missing), "missing file: %s '%s'", alloy_status_name(s),
           alloy_last_error());
    EXPECT(cases >= 30 + 60, "only %d corrupt cases", cases);
    printf("# %d corrupt files rejected, %d truncations\n", cases, refused);
    alloy_free(missing);
    free(buf);
    free(w);
    free(good);
    alloy_free(base);
    alloy_free(path);
    alloy_free(dir);
}

/* Checks the invariants of an accepted file; returns the number broken. */
static int check_accepted(const alloy_gguf *g) {
    int bad = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const alloy_gguf_tensor *t = &g->tensors[i];
        int be;
        size_t bb;
        bad += !alloy_ggml_type_size(t->type, &be, &bb);
        size_t ne = 1;
        for (int d = 0; d < 4; d++) ne *= (size_t)t->ne[d];
        bad += ne != t->n_elems || t->n_dims < 1 || t->n_dims > 4;
        bad += t->data < g->map.data + g->data_offset || t->data + t->nbytes > g->map.data + g->map.size;
        bad += t->offset % g->alignment != 0;
        bad += alloy_gguf_find_tensor(g, t->name) == NULL;
    }
    for (size_t i = 0; i < g->n_kv; i++) bad += g->kvs[i].raw + g->kvs[i].raw_size > g->map.data + g->map.size;
    return bad;
}

/* Mutates the base file a few thousand times (bytes, bits, 32- and 64-bit fields set to edge
 * values, truncations, insertions, deletions); the reader must accept or reject each cleanly.
 * Deterministic: one seed. */
static void test_fuzz(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "fuzz.gguf");
    write_base(path, 32);
    size_t n;
    uint8_t *good = read_bytes(path, &n);
    REQUIRE(good, "read");
    walk *w = walk_file(good, n);
    uint8_t *buf = malloc(2 * n + 64);
    alloy_rng r;
    alloy_rng_seed(&r, 20250101);
    int accepted = 0, rejected = 0, unclean = 0, broken = 0;
    const int iterations = 3000;
    static const uint64_t edges[] = {0,
                                     1,
                                     2,
                                     3,
                                     4,
                                     5,
                                     8,
                                     9,
                                     12,
                                     13,
                                     31,
                                     32,
                                     33,
                                     63,
                                     64,
                                     255,
                                     256,
                                     65535,
                                     0x7FFFFFFF,
                                     0xFFFFFFFF,
                                     (uint64_t)1 << 32,
                                     (uint64_t)1 << 62,
                                     (uint64_t)INT64_MAX,
                                     UINT64_MAX};
    for (int it = 0; it < iterations; it++) {
        memcpy(buf, good, n);
        size_t len = n;
        int edits = 1 + (int)alloy_rng_below(&r, 3);
        for (int k = 0; k < edits; k++) {
            uint64_t kind = alloy_rng_below(&r, 7);
            // mostly the header, where the structure is
            size_t span = len < w->infos_end ? len : w->infos_end;
            size_t pos = span ? (size_t)alloy_rng_below(&r, span) : 0;
            if (kind == 0 && span) {
                buf[pos] = (uint8_t)alloy_rng_u64(&r);
            } else if (kind == 1 && span) {
                buf[pos] ^= (uint8_t)(1u << alloy_rng_below(&r, 8));
            } else if (kind == 2 && w->n_bounds) { // a field set to an edge value
                size_t at = w->bounds[alloy_rng_below(&r, (uint64_t)w->n_bounds)];
                uint64_t v = edges[alloy_rng_below(&r, sizeof edges / sizeof edges[0])];
                int width = alloy_rng_below(&r, 2) ? 8 : 4;
                if (at + (size_t)width <= len) {
                    if (width == 8) put_u64(buf + at, v);
                    else put_u32(buf + at, (uint32_t)v);
                }
            } else if (kind == 3) {
                len = (size_t)alloy_rng_below(&r, len + 1);
            } else if (kind == 4 && len + 8 <= 2 * n + 64) {
                size_t m = 1 + (size_t)alloy_rng_below(&r, 8);
                memmove(buf + pos + m, buf + pos, len - pos);
                for (size_t q = 0; q < m; q++) buf[pos + q] = (uint8_t)alloy_rng_u64(&r);
                len += m;
            } else if (kind == 5 && span) {
                size_t m = 1 + (size_t)alloy_rng_below(&r, 8);
                if (m > len - pos) m = len - pos;
                memmove(buf + pos, buf + pos + m, len - pos - m);
                len -= m;
            } else if (kind == 6 && len >= 24) { // the counts
                put_u64(buf + 8 + 8 * alloy_rng_below(&r, 2), alloy_rng_below(&r, 16));
            }
        }
        write_bytes(path, buf, len);
        alloy_gguf *g = NULL;
        alloy_status s = alloy_gguf_open(&g, path);
        if (s == ALLOY_STATUS_OK) {
            accepted++;
            int v = check_accepted(g);
            if (v && broken++ < 3) EXPECT(0, "iteration %d: accepted a file that breaks %d invariants", it, v);
            for (size_t i = 0; i < g->n_tensors; i++) { // reads every byte a tensor claims
                const alloy_gguf_tensor *t = &g->tensors[i];
                if (t->n_elems > (1u << 20)) continue;
                float *out = malloc(sizeof(float) * t->n_elems);
                alloy_gguf_tensor_to_f32(g, t, out);
                free(out);
            }
            for (size_t i = 0; i < g->n_kv; i++) { // and every string of every array
                const alloy_gguf_kv *kv = &g->kvs[i];
                size_t l, sum = 0;
                for (uint64_t k = 0; kv->arr_type == ALLOY_GGUF_VTYPE_STRING && k < kv->arr_n; k++) {
                    const char *str = alloy_gguf_arr_str(kv, k, &l);
                    for (size_t b = 0; b < l; b++) sum += (uint8_t)str[b];
                }
                (void)sum;
            }
            alloy_gguf_close(g);
        } else {
            rejected++;
            if ((s != ALLOY_STATUS_FORMAT || g != NULL || !says(path) || !one_line()) && unclean++ < 5)
                EXPECT(0, "iteration %d: unclean rejection: status %s '%s'", it, alloy_status_name(s),
                       alloy_last_error());
        }
    }
    EXPECT(unclean == 0 && broken == 0, "%d unclean rejections, %d broken acceptances", unclean, broken);
    EXPECT(accepted > 30 && rejected > iterations / 2, "accepted %d, rejected %d: the mutations miss", accepted,
           rejected);
    printf("# fuzz: %d mutated files, %d accepted, %d rejected\n", iterations, accepted, rejected);
    free(w);
    free(buf);
    free(good);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- models ------------------------------------------------------------------------------- */

#define MAX_T 16

/* A seeded model in which every parameter matters: GPT-2-style init, then norm weights
 * 1 + N(0, 0.2²) and biases N(0, 0.1²). */
static alloy_model *make_model(const alloy_config *cfg, uint64_t seed) {
    alloy_model *m;
    if (alloy_model_create(&m, cfg, 1, MAX_T)) {
        fprintf(stderr, "  alloy_model_create: %s\n", alloy_last_error());
        return NULL;
    }
    alloy_model_init_weights(m, seed);
    alloy_rng r;
    alloy_rng_seed(&r, seed * 31 + 7);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        if (t->ndim != 1) continue;
        float *p = m->params_memory + t->offset;
        bool bias = strstr(t->name, ".bias") != NULL;
        for (size_t k = 0; k < t->numel; k++)
            p[k] = (bias ? 0.0f : 1.0f) + (float)((bias ? 0.1 : 0.2) * alloy_rng_normal(&r));
    }
    return m;
}

static alloy_config preset(const char *name, int vocab) {
    alloy_config c;
    ALLOY_ASSERT(alloy_config_preset(&c, name, vocab) == ALLOY_STATUS_OK);
    return c;
}

/* Small configurations whose every matrix row is a multiple of 256, so that Q4_K applies. */
static alloy_config wide(alloy_family family) {
    alloy_config c = preset(family == ALLOY_FAMILY_GPT2 ? "tiny-gpt2" : "tiny-llama", 256);
    c.n_layer = 1;
    c.d_model = 256;
    c.n_head = 4;
    c.n_kv_head = family == ALLOY_FAMILY_GPT2 ? 4 : 2;
    c.d_ff = 512;
    c.max_seq_len = 32;
    return c;
}

/* The test's own statement of llama.cpp's layout (convert_hf_to_gguf.py), independent of
 * src/io/gguf.c: the GGUF name of a table tensor and how its rows are laid out there. */
enum { LAY_SAME, LAY_T, LAY_PQ, LAY_PK };
static bool expected_name(const alloy_config *c, const char *hf, char *out, int *lay) {
    static const char *const map[][3] = {
        {"transformer.wte.weight", "token_embd.weight", "S"},
        {"transformer.wpe.weight", "position_embd.weight", "S"},
        {"transformer.ln_f.weight", "output_norm.weight", "S"},
        {"transformer.ln_f.bias", "output_norm.bias", "S"},
        {"model.embed_tokens.weight", "token_embd.weight", "S"},
        {"model.norm.weight", "output_norm.weight", "S"},
        {"lm_head.weight", "output.weight", "S"},
        {"ln_1.weight", "attn_norm.weight", "S"},
        {"ln_1.bias", "attn_norm.bias", "S"},
        {"attn.c_attn.weight", "attn_qkv.weight", "T"},
        {"attn.c_attn.bias", "attn_qkv.bias", "S"},
        {"attn.c_proj.weight", "attn_output.weight", "T"},
        {"attn.c_proj.bias", "attn_output.bias", "S"},
        {"ln_2.weight", "ffn_norm.weight", "S"},
        {"ln_2.bias", "ffn_norm.bias", "S"},
        {"mlp.c_fc.weight", "ffn_up.weight", "T"},
        {"mlp.c_fc.bias", "ffn_up.bias", "S"},
        {"mlp.c_proj.weight", "ffn_down.weight", "T"},
        {"mlp.c_proj.bias", "ffn_down.bias", "S"},
        {"input_layernorm.weight", "attn_norm.weight", "S"},
        {"self_attn.q_proj.weight", "attn_q.weight", "Q"},
        {"self_attn.k_proj.weight", "attn_k.weight", "K"},
        {"self_attn.v_proj.weight", "attn_v.weight", "S"},
        {"self_attn.o_proj.weight", "attn_output.weight", "S"},
        {"post_attention_layernorm.weight", "ffn_norm.weight", "S"},
        {"mlp.gate_proj.weight", "ffn_gate.weight", "S"},
        {"mlp.up_proj.weight", "ffn_up.weight", "S"},
        {"mlp.down_proj.weight", "ffn_down.weight", "S"},
    };
    int layer = -1;
    const char *rest = hf;
    if (sscanf(hf, "transformer.h.%d.", &layer) == 1 || sscanf(hf, "model.layers.%d.", &layer) == 1)
        rest = strchr(strchr(strchr(hf, '.') + 1, '.') + 1, '.') + 1;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(rest, map[i][0])) continue;
        if (layer >= 0) sprintf(out, "blk.%d.%s", layer, map[i][1]);
        else strcpy(out, map[i][1]);
        *lay = map[i][2][0] == 'T' ? LAY_T : map[i][2][0] == 'Q' ? LAY_PQ : map[i][2][0] == 'K' ? LAY_PK : LAY_SAME;
        (void)c;
        return true;
    }
    return false;
}

/* A table tensor's values in llama.cpp's layout: rows of ne0 (returned) floats, malloc'd. */
static float *to_gguf_layout(const alloy_model *m, const alloy_tensor_info *t, int lay, int64_t *ne0) {
    const float *src = m->params_memory + t->offset;
    float *out = malloc(t->numel * sizeof(float));
    int64_t R = t->shape[0], C = t->ndim == 2 ? t->shape[1] : 1;
    *ne0 = t->ndim == 1 ? R : lay == LAY_T ? R : C;
    if (t->ndim == 1 || lay == LAY_SAME) {
        memcpy(out, src, t->numel * sizeof(float));
    } else if (lay == LAY_T) { // Conv1D (in, out) -> (out, in)
        for (int64_t i = 0; i < R; i++)
            for (int64_t o = 0; o < C; o++) out[o * R + i] = src[i * C + o];
    } else { // within each head, the rotate-half rows (i, i + hd/2) become the pairs (2i, 2i + 1)
        int64_t hd = alloy_config_head_dim(&m->config), half = hd / 2;
        for (int64_t r = 0; r < R; r++) {
            int64_t h = r / hd, k = r % hd, j = k / half, i = k % half;
            memcpy(out + (h * hd + 2 * i + j) * C, src + r * C, (size_t)C * sizeof(float));
        }
    }
    return out;
}

/* The inverse of to_gguf_layout, into dst (the table tensor's shape). */
static void from_gguf_layout(const alloy_model *m, const alloy_tensor_info *t, int lay, const float *g, float *dst) {
    int64_t R = t->shape[0], C = t->ndim == 2 ? t->shape[1] : 1;
    if (t->ndim == 1 || lay == LAY_SAME) {
        memcpy(dst, g, t->numel * sizeof(float));
    } else if (lay == LAY_T) {
        for (int64_t i = 0; i < R; i++)
            for (int64_t o = 0; o < C; o++) dst[i * C + o] = g[o * R + i];
    } else {
        int64_t hd = alloy_config_head_dim(&m->config), half = hd / 2;
        for (int64_t r = 0; r < R; r++) {
            int64_t h = r / hd, k = r % hd, j = k / half, i = k % half;
            memcpy(dst + r * C, g + (h * hd + 2 * i + j) * C, (size_t)C * sizeof(float));
        }
    }
}

static bool is_weight_matrix(const alloy_tensor_info *t, const char *gname) {
    return t->ndim == 2 && strcmp(gname, "position_embd.weight") != 0;
}

/* The f32 export holds exactly the model's values in llama.cpp's layout, and its Q/K rows are
 * what llama.cpp's RoPE needs: rotating the pairs (2i, 2i+1) of the exported projection gives
 * the rotate-half result of the Hugging Face projection, row for row. */
static void check_f32_layout(const alloy_model *m, const char *path) {
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(g->n_tensors == (size_t)m->n_tensors, "%zu tensors for a table of %d", g->n_tensors, m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        char gname[64];
        int lay;
        REQUIRE(expected_name(&m->config, t->name, gname, &lay), "no name for %s", t->name);
        const alloy_gguf_tensor *gt = alloy_gguf_find_tensor(g, gname);
        REQUIRE(gt, "%s: no tensor \"%s\"", t->name, gname);
        int64_t ne0;
        float *want = to_gguf_layout(m, t, lay, &ne0);
        EXPECT(gt->type == ALLOY_GGML_TYPE_F32 && gt->n_dims == t->ndim && gt->ne[0] == ne0 &&
                   gt->n_elems == t->numel && !memcmp(gt->data, want, t->numel * sizeof(float)),
               "%s: layout or values differ", gname);
        free(want);
    }
    const alloy_config *c = &m->config;
    if (c->family == ALLOY_FAMILY_LLAMA) {
        int64_t C = c->d_model, hd = alloy_config_head_dim(c), half = hd / 2;
        float x[4096], hf[4096], gg[4096];
        alloy_rng r;
        alloy_rng_seed(&r, 99);
        for (int64_t k = 0; k < C; k++) x[k] = (float)alloy_rng_normal(&r);
        const char *which[2] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight"};
        const float *hw[2] = {m->params.layers[0].qkv_w, m->params.layers[0].qkv_w + (int64_t)c->n_head * hd * C};
        int heads[2] = {c->n_head, c->n_kv_head};
        double worst = 0;
        for (int w = 0; w < 2; w++) {
            const alloy_gguf_tensor *gt = alloy_gguf_find_tensor(g, which[w]);
            REQUIRE(gt && gt->type == ALLOY_GGML_TYPE_F32, "%s", which[w]);
            const float *gw = (const float *)gt->data;
            int pos = 5;
            for (int64_t row = 0; row < heads[w] * hd; row++) {
                double a = 0, b = 0;
                for (int64_t k = 0; k < C; k++) {
                    a += (double)hw[w][row * C + k] * x[k];
                    b += (double)gw[row * C + k] * x[k];
                }
                hf[row] = (float)a;
                gg[row] = (float)b;
            }
            for (int64_t h = 0; h < heads[w]; h++)
                for (int64_t i = 0; i < half; i++) {
                    double theta = pos * pow(c->rope_theta, -2.0 * (double)i / (double)hd);
                    double cs = cos(theta), sn = sin(theta);
                    const float *q = hf + h * hd, *p = gg + h * hd;
                    double hf0 = q[i] * cs - q[i + half] * sn, hf1 = q[i + half] * cs + q[i] * sn; // rotate-half
                    double gg0 = p[2 * i] * cs - p[2 * i + 1] * sn,
                           gg1 = p[2 * i + 1] * cs + p[2 * i] * sn; // NORM rope
                    double e = fmax(fabs(hf0 - gg0), fabs(hf1 - gg1));
                    if (e > worst) worst = e;
                }
        }
        EXPECT(worst < 1e-5, "llama.cpp's RoPE on the exported Q/K differs from rotate-half on ours by %g", worst);
    } else {
        // llama.cpp's y = W x over the exported fused QKV equals Hugging Face's Conv1D x W
        const alloy_gguf_tensor *gt = alloy_gguf_find_tensor(g, "blk.0.attn_qkv.weight");
        REQUIRE(gt && gt->ne[0] == c->d_model && gt->ne[1] == 3 * c->d_model, "attn_qkv shape");
        const float *gw = (const float *)gt->data, *hw = m->params.layers[0].qkv_w;
        int64_t C = c->d_model;
        double worst = 0;
        for (int64_t o = 0; o < 3 * C; o++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < C; i++) {
                a += (double)(i % 7 - 3) * hw[i * 3 * C + o];
                b += (double)gw[o * C + i] * (i % 7 - 3);
            }
            worst = fmax(worst, fabs(a - b));
        }
        EXPECT(worst < 1e-9, "W x over attn_qkv differs from Conv1D by %g", worst);
    }
    alloy_gguf_close(g);
}

/* Per weight type, how far a dequantised value may be from the original, relative to the
 * largest magnitude (Q8_0, Q4_0) or the range (Q4_K) of its block: Q8_0 rounds to d = amax/127
 * (half a step, plus the fp16 rounding of d over 127 steps), Q4_0 to d = max/-8 (a full step
 * where 7.5 < x/d <= 8 clamps to 7); Q4_K fits each sub-block of 32 by least squares, which may
 * clip its outliers, so its bound is one and a half plain steps of the sub-block's range
 * (range/15; measured up to 1.15) plus the 6-bit rounding of the scales. A layout error moves
 * values by the whole range of the weights, 10 to 15 steps. */
static double block_bound(alloy_qtype q, const float *row, int64_t start) {
    int be = alloy_qtype_block_elems(q);
    float lo = INFINITY, hi = -INFINITY, amax = 0;
    int64_t b0 = start / be * be;
    for (int64_t k = b0; k < b0 + be; k++) {
        lo = fminf(lo, row[k]);
        hi = fmaxf(hi, row[k]);
        amax = fmaxf(amax, fabsf(row[k]));
    }
    if (q == ALLOY_QTYPE_Q8_0) return amax / 127.0 * 0.57;
    if (q == ALLOY_QTYPE_Q4_0) return amax / 8.0 * 1.01;
    int64_t s0 = start / 32 * 32;
    float slo = INFINITY, shi = -INFINITY;
    for (int64_t k = s0; k < s0 + 32; k++) {
        slo = fminf(slo, row[k]);
        shi = fmaxf(shi, row[k]);
    }
    return 1.5 * (shi - fminf(slo, 0.0f)) / 15.0 + 2.0 * amax / (15.0 * 63.0);
}

/* Exports m at type q, imports it back and checks every parameter: 1-D tensors and positions
 * bitwise; matrices exactly as quantising the llama.cpp layout then undoing it gives (the
 * test's own layout code, alloy/quant.h's rows), F16 where rows do not fit the block, and
 * within the format's error of the original. f32 gives the identical model and logits. */
static void check_roundtrip(alloy_model *m, alloy_qtype q, const char *dir, const alloy_tokenizer *tok) {
    char file[64];
    snprintf(file, sizeof file, "%s-%s.gguf", alloy_family_name(m->config.family), alloy_qtype_name(q));
    char *path = alloy_path_join(dir, file);
    alloy_gguf_export_report rep;
    REQUIRE(alloy_gguf_export_model_ex(m, tok, path, q, &rep) == ALLOY_STATUS_OK, "%s: %s", file, alloy_last_error());
    alloy_model *back = NULL;
    REQUIRE(alloy_gguf_import_model_ex(&back, NULL, path, 1, MAX_T) == ALLOY_STATUS_OK, "%s: %s", file,
            alloy_last_error());
    EXPECT(!memcmp(&back->config, &m->config, sizeof m->config), "%s: the config differs", file);
    EXPECT(back->n_tensors == m->n_tensors, "%s: %d tensors", file, back->n_tensors);
    int be = alloy_qtype_block_elems(q), fallback = 0, requested = 0;
    double worst = 0; // the largest error / bound
    for (int i = 0; i < m->n_tensors && i < back->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        const float *orig = m->params_memory + t->offset, *got = back->params_memory + back->tensors[i].offset;
        char gname[64];
        int lay;
        REQUIRE(expected_name(&m->config, t->name, gname, &lay), "%s", t->name);
        if (!is_weight_matrix(t, gname) || q == ALLOY_QTYPE_F32) {
            EXPECT(!memcmp(orig, got, t->numel * sizeof(float)), "%s %s: not bitwise equal", file, t->name);
            continue;
        }
        int64_t ne0;
        float *gl = to_gguf_layout(m, t, lay, &ne0);
        alloy_qtype used = ne0 % be ? ALLOY_QTYPE_F16 : q;
        fallback += used != q;
        requested += used == q;
        size_t rb = alloy_quant_row_bytes(used, ne0), rows = t->numel / (size_t)ne0;
        uint8_t *qrow = malloc(rb);
        float *deq = malloc(t->numel * sizeof(float)), *want = malloc(t->numel * sizeof(float));
        for (size_t r = 0; r < rows; r++) {
            alloy_quantize_row(used, qrow, gl + r * (size_t)ne0, ne0);
            alloy_dequantize_row(used, deq + r * (size_t)ne0, qrow, ne0);
        }
        // the format's error, in llama.cpp's layout where the blocks are
        int over = 0;
        for (size_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < ne0; k++) {
                float x = gl[r * (size_t)ne0 + (size_t)k], y = deq[r * (size_t)ne0 + (size_t)k];
                double bound =
                    used == ALLOY_QTYPE_F16 ? fabsf(x) * 0x1p-11 + 0x1p-25 : block_bound(used, gl + r * (size_t)ne0, k);
                double e = fabs((double)x - y);
                if (e > bound && over++ < 3)
                    EXPECT(0, "%s %s: element error %g above the bound %g", file, t->name, e, bound);
                worst = fmax(worst, e / bound);
            }
        from_gguf_layout(m, t, lay, deq, want);
        EXPECT(!memcmp(want, got, t->numel * sizeof(float)), "%s %s: imported values are not the %s round trip", file,
               t->name, alloy_qtype_name(used));
        free(qrow);
        free(deq);
        free(want);
        free(gl);
    }
    if (q != ALLOY_QTYPE_F32) {
        EXPECT(rep.n_fallback == fallback && rep.n_requested == requested, "%s: report %d/%d, expected %d/%d", file,
               rep.n_requested, rep.n_fallback, requested, fallback);
        EXPECT(fallback ? strstr(rep.note, "F16") != NULL : rep.note[0] == '\0', "%s: note '%s'", file, rep.note);
    }
    // logits: identical at f32; close otherwise
    int32_t tokens[MAX_T];
    for (int k = 0; k < MAX_T; k++) tokens[k] = (int32_t)((k * 37 + 11) % m->config.vocab_size);
    REQUIRE(alloy_model_forward(m, tokens, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_model_forward(back, tokens, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t nl = (size_t)MAX_T * (size_t)m->config.vocab_size;
    if (q == ALLOY_QTYPE_F32) {
        EXPECT(!memcmp(alloy_model_logits(m), alloy_model_logits(back), nl * sizeof(float)), "%s: logits differ", file);
    } else {
        double d = 0, scale = 0;
        for (size_t k = 0; k < nl; k++) {
            d = fmax(d, fabs((double)alloy_model_logits(m)[k] - alloy_model_logits(back)[k]));
            scale = fmax(scale, fabs((double)alloy_model_logits(m)[k]));
        }
        double tol = q == ALLOY_QTYPE_F16 ? 1e-2 : q == ALLOY_QTYPE_Q8_0 ? 5e-2 : 0.5;
        EXPECT(d <= tol * (scale > 1 ? scale : 1), "%s: logits move by %g (scale %g)", file, d, scale);
        printf("# %s: %d matrices as %s, %d as F16; errors up to %.2f of the bound; logits within %.3g of f32\n", file,
               requested, alloy_qtype_name(q), fallback, worst, d);
    }
    alloy_model_destroy(back);
    alloy_free(path);
}

static void test_export_gpt2(void) {
    char *dir = copy_tmpdir();
    alloy_config c = preset("tiny-gpt2", 256);
    alloy_model *m = make_model(&c, 1);
    REQUIRE(m, "create");
    char *path = alloy_path_join(dir, "layout.gguf");
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    check_f32_layout(m, path);
    for (int q = 0; q < ALLOY_QTYPE_COUNT; q++) check_roundtrip(m, (alloy_qtype)q, dir, NULL);
    alloy_model_destroy(m);
    // every matrix in Q4_K
    c = wide(ALLOY_FAMILY_GPT2);
    m = make_model(&c, 2);
    REQUIRE(m, "create wide");
    check_roundtrip(m, ALLOY_QTYPE_Q4_K, dir, NULL);
    alloy_model_destroy(m);
    alloy_free(path);
    alloy_free(dir);
}

static void test_export_llama(void) {
    char *dir = copy_tmpdir();
    alloy_config c = preset("tiny-llama", 256); // 4 heads over 2 KV heads, untied
    c.rope_theta = 500000.0;
    c.norm_eps = 1e-6;
    REQUIRE(c.n_kv_head < c.n_head && !c.tie_embeddings, "GQA, untied");
    alloy_model *m = make_model(&c, 3);
    REQUIRE(m, "create");
    char *path = alloy_path_join(dir, "layout.gguf");
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    check_f32_layout(m, path);
    for (int q = 0; q < ALLOY_QTYPE_COUNT; q++) check_roundtrip(m, (alloy_qtype)q, dir, NULL);
    alloy_model_destroy(m);
    // tied: no output.weight in the file, tied again on import
    c.tie_embeddings = true;
    m = make_model(&c, 4);
    REQUIRE(m, "create tied");
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(!alloy_gguf_find_tensor(g, "output.weight"), "a tied model writes no output.weight");
    alloy_gguf_close(g);
    check_roundtrip(m, ALLOY_QTYPE_F32, dir, NULL);
    check_roundtrip(m, ALLOY_QTYPE_Q8_0, dir, NULL);
    alloy_model_destroy(m);
    c = wide(ALLOY_FAMILY_LLAMA);
    m = make_model(&c, 5);
    REQUIRE(m, "create wide");
    check_roundtrip(m, ALLOY_QTYPE_Q4_K, dir, NULL);
    alloy_model_destroy(m);
    alloy_free(path);
    alloy_free(dir);
}

/* A Mixtral (Llama-family MoE) exports as llama.cpp's converter writes one: llama arch with
 * llama.expert_count / expert_used_count, each layer's router as ffn_gate_inp (kept f32) and
 * its experts stacked into ffn_gate_exps / ffn_up_exps / ffn_down_exps, ne [cols, rows, E]
 * (slice e expert e's w1 / w3 / w2); it imports back bitwise at f32, and quantised as its rows'
 * round trip through the format. A GPT-2 MoE (alloy's own layout) is refused in one line. */
static void test_export_moe(void) {
    char *dir = copy_tmpdir();
    alloy_config c = wide(ALLOY_FAMILY_LLAMA);
    c.n_layer = 2;
    c.n_experts = 4;
    c.top_k = 2;
    c.router_aux_loss_coef = 0.001; // Mixtral's: the value an import assumes
    alloy_model *m = make_model(&c, 6);
    REQUIRE(m, "create");
    char *path = alloy_path_join(dir, "moe.gguf");
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int64_t v = 0;
    EXPECT(!alloy_gguf_get_int(g, "llama.expert_count", &v) && v == 4, "llama.expert_count %lld", (long long)v);
    EXPECT(!alloy_gguf_get_int(g, "llama.expert_used_count", &v) && v == 2, "llama.expert_used_count %lld", (long long)v);
    EXPECT(!alloy_gguf_get_int(g, "llama.feed_forward_length", &v) && v == 512, "feed_forward_length %lld", (long long)v);
    EXPECT(g->n_tensors == 3 + 10 * 2, "%zu tensors (3 + 10 per layer expected)", g->n_tensors);
    EXPECT(!alloy_gguf_find_tensor(g, "blk.0.ffn_gate.weight") && !alloy_gguf_find_tensor(g, "blk.0.ffn_down.weight"),
           "dense MLP tensors in an MoE file");
    static const struct {
        const char *gguf, *hf;
        int64_t ne0, ne1;
    } stacks[] = {{"ffn_gate_exps", "w1", 256, 512}, {"ffn_up_exps", "w3", 256, 512}, {"ffn_down_exps", "w2", 512, 256}};
    for (int l = 0; l < 2; l++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", l);
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, name);
        snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", l);
        const alloy_tensor_info *ti = alloy_model_find_tensor(m, name);
        EXPECT(t && t->type == ALLOY_GGML_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 256 && t->ne[1] == 4 &&
                   !memcmp(t->data, m->params_memory + ti->offset, ti->numel * sizeof(float)),
               "layer %d: ffn_gate_inp is not the router as f32 [256, 4]", l);
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, stacks[k].gguf);
            t = alloy_gguf_find_tensor(g, name);
            bool ok = t && t->type == ALLOY_GGML_TYPE_F32 && t->n_dims == 3 && t->ne[0] == stacks[k].ne0 &&
                      t->ne[1] == stacks[k].ne1 && t->ne[2] == 4;
            for (int e = 0; e < 4 && ok; e++) {
                snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, stacks[k].hf);
                ti = alloy_model_find_tensor(m, name);
                ok = ti && !memcmp(t->data + (size_t)e * ti->numel * sizeof(float), m->params_memory + ti->offset,
                                   ti->numel * sizeof(float));
            }
            EXPECT(ok, "layer %d: %s is not the experts' %s stacked [%lld, %lld, 4]", l, stacks[k].gguf, stacks[k].hf,
                   (long long)stacks[k].ne0, (long long)stacks[k].ne1);
        }
    }
    alloy_gguf_close(g);
    for (int q = 0; q < ALLOY_QTYPE_COUNT; q++) {
        char file[64];
        snprintf(file, sizeof file, "moe-%s.gguf", alloy_qtype_name((alloy_qtype)q));
        char *p = alloy_path_join(dir, file);
        alloy_model *back = NULL;
        alloy_status s = alloy_gguf_export_model(m, NULL, p, (alloy_qtype)q);
        if (!s) s = alloy_gguf_import_model_ex(&back, NULL, p, 1, MAX_T);
        EXPECT(s == ALLOY_STATUS_OK, "%s: %s", file, alloy_last_error());
        if (s) {
            alloy_free(p);
            continue;
        }
        EXPECT(!memcmp(&back->config, &m->config, sizeof m->config), "%s: the config differs", file);
        EXPECT(back->n_tensors == m->n_tensors, "%s: %d tensors", file, back->n_tensors);
        int bad = 0;
        for (int i = 0; i < m->n_tensors && i < back->n_tensors; i++) {
            const alloy_tensor_info *t = &m->tensors[i];
            const float *orig = m->params_memory + t->offset, *got = back->params_memory + back->tensors[i].offset;
            bool expert = strstr(t->name, ".experts.") != NULL;
            if (q == ALLOY_QTYPE_F32 || !expert) {
                // f32, and (Llama, no transforms on these) the router and norms: bitwise; the
                // attention and head are checked by test_export_llama
                if (q == ALLOY_QTYPE_F32 || t->ndim == 1 || alloy_tensor_is_router(t->name))
                    bad += memcmp(orig, got, t->numel * sizeof(float)) != 0;
                continue;
            }
            int64_t cols = t->shape[1];
            uint8_t *qrow = malloc(alloy_quant_row_bytes((alloy_qtype)q, cols));
            float *row = malloc(sizeof(float) * (size_t)cols);
            for (int64_t r = 0; r < t->shape[0]; r++) {
                alloy_quantize_row((alloy_qtype)q, qrow, orig + r * cols, cols);
                alloy_dequantize_row((alloy_qtype)q, row, qrow, cols);
                bad += memcmp(row, got + r * cols, sizeof(float) * (size_t)cols) != 0;
            }
            free(qrow);
            free(row);
        }
        EXPECT(bad == 0, "%s: %d tensors or expert rows differ from their round trip", file, bad);
        alloy_model_destroy(back);
        alloy_free(p);
    }
    alloy_model_destroy(m);
    // GPT-2 MoE: refused, nothing written
    c = preset("tiny-gpt2", 256);
    c.n_experts = 2;
    c.top_k = 1;
    m = make_model(&c, 7);
    REQUIRE(m, "create gpt2 moe");
    char *gp = alloy_path_join(dir, "gmoe.gguf");
    EXPECT(alloy_gguf_export_model(m, NULL, gp, ALLOY_QTYPE_F32) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "GGUF export of a GPT-2 mixture of experts is not supported"),
           "gpt2 moe: %s", alloy_last_error());
    EXPECT(access(gp, F_OK) != 0, "a refused export left %s", gp);
    alloy_model_destroy(m);
    alloy_free(gp);
    alloy_free(path);
    alloy_free(dir);
}

/* The metadata of an export: the keys and types llama.cpp reads, with their values. */
static void test_export_metadata(void) {
    char *dir = copy_tmpdir();
    alloy_config c = preset("tiny-llama", 256);
    snprintf(c.tokenizer, sizeof c.tokenizer, "bytes");
    alloy_model *m = make_model(&c, 6);
    REQUIRE(m, "create");
    char *path = alloy_path_join(dir, "tiny-llama-q8.gguf");
    alloy_tokenizer *tok;
    REQUIRE(alloy_tokenizer_create(&tok, "bytes") == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_gguf_export_model(m, tok, path, ALLOY_QTYPE_Q8_0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    struct {
        const char *key;
        alloy_gguf_vtype type;
        int64_t v;
    } ints[] = {
        {"general.alignment", ALLOY_GGUF_VTYPE_UINT32, 32},
        {"general.file_type", ALLOY_GGUF_VTYPE_UINT32, 7},
        {"general.quantization_version", ALLOY_GGUF_VTYPE_UINT32, 2},
        {"llama.context_length", ALLOY_GGUF_VTYPE_UINT32, 128},
        {"llama.embedding_length", ALLOY_GGUF_VTYPE_UINT32, 64},
        {"llama.block_count", ALLOY_GGUF_VTYPE_UINT32, 2},
        {"llama.feed_forward_length", ALLOY_GGUF_VTYPE_UINT32, 176},
        {"llama.attention.head_count", ALLOY_GGUF_VTYPE_UINT32, 4},
        {"llama.attention.head_count_kv", ALLOY_GGUF_VTYPE_UINT32, 2},
        {"llama.rope.dimension_count", ALLOY_GGUF_VTYPE_UINT32, 16},
        {"llama.vocab_size", ALLOY_GGUF_VTYPE_UINT32, 256},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, ints[i].key);
        int64_t v = -1;
        EXPECT(kv && kv->type == ints[i].type && !alloy_gguf_get_int(g, ints[i].key, &v) && v == ints[i].v,
               "%s = %lld (type %s)", ints[i].key, (long long)v, kv ? alloy_gguf_vtype_name(kv->type) : "missing");
    }
    const char *s;
    double d;
    EXPECT(!alloy_gguf_get_str(g, "general.architecture", &s) && !strcmp(s, "llama"), "architecture");
    EXPECT(!alloy_gguf_get_str(g, "general.name", &s) && !strcmp(s, "tiny-llama-q8"), "name");
    EXPECT(!alloy_gguf_get_str(g, "alloy.tokenizer", &s) && !strcmp(s, "bytes"), "alloy.tokenizer");
    EXPECT(alloy_gguf_find_kv(g, "llama.attention.layer_norm_rms_epsilon")->type == ALLOY_GGUF_VTYPE_FLOAT32 &&
               !alloy_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &d) && d == (double)1e-5f,
           "rms epsilon");
    EXPECT(!alloy_gguf_get_float(g, "llama.rope.freq_base", &d) && d == 10000.0, "freq_base");
    EXPECT(!alloy_gguf_get_str(g, "tokenizer.ggml.model", &s) && !strcmp(s, "gpt2"), "tokenizer model");
    EXPECT(!alloy_gguf_get_str(g, "tokenizer.ggml.pre", &s) && !strcmp(s, "gpt-2"), "tokenizer pre");
    const alloy_gguf_kv *toks, *types, *merges;
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.tokens", ALLOY_GGUF_VTYPE_STRING, &toks), "%s", alloy_last_error());
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, &types), "%s",
            alloy_last_error());
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.merges", ALLOY_GGUF_VTYPE_STRING, &merges), "%s",
            alloy_last_error());
    size_t len;
    const char *t32 = alloy_gguf_arr_str(toks, 32, &len);
    EXPECT(toks->arr_n == 256 && types->arr_n == 256 && merges->arr_n == 0, "byte vocabulary");
    EXPECT(t32 && len == 2 && !memcmp(t32, "\xc4\xa0", 2), "token 32 (space) must be \"Ġ\"");
    // tensor names, shapes (fastest first) and types
    struct {
        const char *name;
        int64_t ne0, ne1;
        uint32_t type;
    } want[] = {
        {"token_embd.weight", 64, 256, ALLOY_GGML_TYPE_Q8_0},
        {"output.weight", 64, 256, ALLOY_GGML_TYPE_Q8_0},
        {"output_norm.weight", 64, 1, ALLOY_GGML_TYPE_F32},
        {"blk.1.attn_norm.weight", 64, 1, ALLOY_GGML_TYPE_F32},
        {"blk.0.attn_q.weight", 64, 64, ALLOY_GGML_TYPE_Q8_0},
        {"blk.0.attn_k.weight", 64, 32, ALLOY_GGML_TYPE_Q8_0},
        {"blk.0.attn_v.weight", 64, 32, ALLOY_GGML_TYPE_Q8_0},
        {"blk.0.attn_output.weight", 64, 64, ALLOY_GGML_TYPE_Q8_0},
        {"blk.1.ffn_gate.weight", 64, 176, ALLOY_GGML_TYPE_Q8_0},
        {"blk.1.ffn_up.weight", 64, 176, ALLOY_GGML_TYPE_Q8_0},
        {"blk.1.ffn_down.weight", 176, 64, ALLOY_GGML_TYPE_F16},
        {"blk.0.ffn_norm.weight", 64, 1, ALLOY_GGML_TYPE_F32},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, want[i].name);
        EXPECT(t && t->ne[0] == want[i].ne0 && t->ne[1] == want[i].ne1 && t->type == want[i].type &&
                   t->n_dims == (want[i].ne1 > 1 ? 2 : 1),
               "%s: %s", want[i].name, t ? alloy_ggml_type_name(t->type) : "missing");
    }
    EXPECT(g->n_tensors == 2 + 2 * 9 + 1, "%zu tensors", g->n_tensors);
    alloy_gguf_close(g);
    // GPT-2: its keys, the positions in F32, no output.weight
    alloy_model_destroy(m);
    c = preset("tiny-gpt2", 256);
    m = make_model(&c, 7);
    REQUIRE(m, "create");
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_Q4_0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int64_t v;
    EXPECT(!alloy_gguf_get_str(g, "general.architecture", &s) && !strcmp(s, "gpt2"), "gpt2");
    EXPECT(!alloy_gguf_get_int(g, "general.file_type", &v) && v == 2, "file type");
    EXPECT(!alloy_gguf_get_int(g, "gpt2.context_length", &v) && v == 128, "context");
    EXPECT(!alloy_gguf_get_int(g, "gpt2.feed_forward_length", &v) && v == 256, "ffn");
    EXPECT(!alloy_gguf_get_float(g, "gpt2.attention.layer_norm_epsilon", &d) && d == (double)1e-5f, "epsilon");
    EXPECT(!alloy_gguf_find_kv(g, "gpt2.rope.freq_base") && !alloy_gguf_find_kv(g, "tokenizer.ggml.model"),
           "no rope, no tokenizer");
    const alloy_gguf_tensor *t;
    EXPECT((t = alloy_gguf_find_tensor(g, "position_embd.weight")) && t->type == ALLOY_GGML_TYPE_F32 && t->ne[1] == 128,
           "positions in F32");
    EXPECT((t = alloy_gguf_find_tensor(g, "blk.0.attn_qkv.weight")) && t->type == ALLOY_GGML_TYPE_Q4_0 &&
               t->ne[0] == 64 && t->ne[1] == 192,
           "fused QKV (out, in)");
    EXPECT((t = alloy_gguf_find_tensor(g, "blk.1.ffn_down.weight")) && t->ne[0] == 256 && t->ne[1] == 64,
           "ffn_down (out, in)");
    EXPECT((t = alloy_gguf_find_tensor(g, "blk.0.attn_qkv.bias")) && t->type == ALLOY_GGML_TYPE_F32 && t->ne[0] == 192,
           "biases in F32");
    EXPECT(!alloy_gguf_find_tensor(g, "output.weight") && g->n_tensors == 2 + 2 * 12 + 2, "tied head: %zu tensors",
           g->n_tensors);
    alloy_gguf_close(g);
    // a weight type out of range
    alloy_status st = alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_COUNT);
    EXPECT(st == ALLOY_STATUS_USAGE && says(path), "type out of range: %s '%s'", alloy_status_name(st),
           alloy_last_error());
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- tokenizers --------------------------------------------------------------------------- */

static alloy_tokenizer *train_tokenizer(void) {
    static const char *const specials[] = {"<|endoftext|>"};
    alloy_bpe_train_options opt = {
        .vocab_size = 320, .special_tokens = specials, .n_special = 1, .min_frequency = 2, .quiet = true};
    alloy_bpe_trainer *tr;
    if (alloy_bpe_trainer_create(&tr, &opt)) return NULL;
    const char *text = "the quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs. "
                       "Héllo wörld, ünïcode tökens — and numbers 12345 67890 in the mix. ";
    for (int i = 0; i < 20; i++) alloy_bpe_trainer_feed(tr, text, strlen(text));
    alloy_tokenizer *tok = NULL;
    alloy_bpe_trainer_finish(tr, &tok);
    alloy_bpe_trainer_destroy(tr);
    return tok;
}

static void same_encoding(const alloy_tokenizer *a, const alloy_tokenizer *b, const char *what) {
    const char *text = "The lazy fox said: héllo<|endoftext|> 42 times!";
    alloy_ids x = {0}, y = {0};
    EXPECT(!alloy_tokenizer_encode(a, text, strlen(text), ALLOY_ENCODE_ALLOW_SPECIAL, &x) &&
               !alloy_tokenizer_encode(b, text, strlen(text), ALLOY_ENCODE_ALLOW_SPECIAL, &y),
           "%s: encode: %s", what, alloy_last_error());
    EXPECT(x.n == y.n && x.n > 0 && !memcmp(x.data, y.data, x.n * sizeof(int32_t)),
           "%s: encodings differ (%zu, %zu ids)", what, x.n, y.n);
    alloy_ids_free(&x);
    alloy_ids_free(&y);
}

static void test_tokenizer_roundtrip(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "tok.gguf");
    alloy_tokenizer *tok = train_tokenizer();
    REQUIRE(tok && alloy_tokenizer_vocab_size(tok) == 320, "train: %s", alloy_last_error());
    alloy_config c = preset("tiny-gpt2", 320);
    alloy_model *m = make_model(&c, 8);
    REQUIRE(m, "create");
    REQUIRE(alloy_gguf_export_model(m, tok, path, ALLOY_QTYPE_F16) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int32_t eot = alloy_tokenizer_special_id(tok, "<|endoftext|>");
    int64_t v;
    const alloy_gguf_kv *types, *merges, *toks;
    EXPECT(!alloy_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v == eot, "bos = <|endoftext|> (%d)", eot);
    EXPECT(!alloy_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) && v == eot, "eos");
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, &types), "types");
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.merges", ALLOY_GGUF_VTYPE_STRING, &merges), "merges");
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.tokens", ALLOY_GGUF_VTYPE_STRING, &toks), "tokens");
    alloy_gguf_scalar ty;
    size_t len;
    const char *et = alloy_gguf_arr_str(toks, (uint64_t)eot, &len);
    EXPECT(alloy_gguf_arr_get(types, (uint64_t)eot, &ty) && ty.i32 == 3 && et && len == 13 &&
               !memcmp(et, "<|endoftext|>", 13),
           "<|endoftext|> is a control token written as its text");
    EXPECT(merges->arr_n == 320 - 256 - 1, "%llu merges", (unsigned long long)merges->arr_n);
    const char *m0 = alloy_gguf_arr_str(merges, 0, &len);
    EXPECT(m0 && memchr(m0, ' ', len) && len >= 3, "merges are \"a b\"");
    alloy_gguf_close(g);

    alloy_model *back;
    alloy_tokenizer *tback = NULL;
    REQUIRE(alloy_gguf_import_model_ex(&back, &tback, path, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(tback, "no tokenizer came back");
    EXPECT(!strcmp(alloy_tokenizer_name(tback), "bpe") && alloy_tokenizer_hash(tback) == alloy_tokenizer_hash(tok),
           "the tokenizer's fingerprint changed");
    same_encoding(tok, tback, "bpe");
    alloy_tokenizer_destroy(tback);
    alloy_model_destroy(back);
    // the weights alone
    REQUIRE(alloy_gguf_import_model(&back, NULL, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(back->max_T == c.max_seq_len, "max_T 0 means the context length (%d)", back->max_T);
    alloy_model_destroy(back);
    // no tokenizer in the file: NULL back
    REQUIRE(alloy_gguf_export_model(m, NULL, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    tback = (alloy_tokenizer *)1;
    REQUIRE(alloy_gguf_import_model_ex(&back, &tback, path, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(tback == NULL, "a file without a tokenizer gives NULL");
    alloy_model_destroy(back);
    alloy_model_destroy(m);
    // the byte tokenizer comes back as itself
    alloy_tokenizer *bytes;
    REQUIRE(alloy_tokenizer_create(&bytes, "bytes") == ALLOY_STATUS_OK, "bytes");
    c = preset("tiny-llama", 256);
    m = make_model(&c, 9);
    REQUIRE(m, "create");
    REQUIRE(alloy_gguf_export_model(m, bytes, path, ALLOY_QTYPE_Q4_0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_gguf_import_model_ex(&back, &tback, path, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(tback && !strcmp(alloy_tokenizer_name(tback), "bytes") &&
               alloy_tokenizer_hash(tback) == alloy_tokenizer_hash(bytes),
           "the byte tokenizer");
    if (tback) same_encoding(bytes, tback, "bytes");
    alloy_tokenizer_destroy(tback);
    alloy_model_destroy(back);
    alloy_model_destroy(m);
    // a model whose vocabulary is larger than its tokenizer's: placeholders fill the token list
    // to the size of token_embd, as llama.cpp needs; the byte tokenizer still comes back
    c = preset("tiny-gpt2", 300);
    m = make_model(&c, 16);
    REQUIRE(m, "create");
    REQUIRE(alloy_gguf_export_model(m, bytes, path, ALLOY_QTYPE_F32) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(!alloy_gguf_get_arr(g, "tokenizer.ggml.tokens", ALLOY_GGUF_VTYPE_STRING, &toks) &&
                !alloy_gguf_get_arr(g, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, &types),
            "%s", alloy_last_error());
    const char *pad = alloy_gguf_arr_str(toks, 299, &len);
    EXPECT(toks->arr_n == 300 && pad && len == 8 && !memcmp(pad, "[PAD299]", 8) &&
               alloy_gguf_arr_get(types, 299, &ty) && ty.i32 == 5,
           "placeholders up to the model's vocabulary");
    alloy_gguf_close(g);
    REQUIRE(alloy_gguf_import_model_ex(&back, &tback, path, 1, MAX_T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(tback && !strcmp(alloy_tokenizer_name(tback), "bytes"), "a padded byte tokenizer");
    if (tback) same_encoding(bytes, tback, "padded bytes");
    alloy_tokenizer_destroy(tback);
    // a tokenizer larger than the model's vocabulary cannot be written
    alloy_tokenizer *big = train_tokenizer(); // 320 tokens
    alloy_status st = alloy_gguf_export_model(m, big, path, ALLOY_QTYPE_F32);
    EXPECT(st == ALLOY_STATUS_MISMATCH && says("the tokenizer has 320 tokens but the model's vocabulary only 300") &&
               says(path),
           "a tokenizer too large: %s '%s'", alloy_status_name(st), alloy_last_error());
    alloy_tokenizer_destroy(big);
    alloy_tokenizer_destroy(bytes);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(back);
    alloy_model_destroy(m);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- importing other files ---------------------------------------------------------------- */

/* A change to a file: rewrite copies src into dst through the writer, applying it. */
typedef struct edit {
    const char *drop_key; /* a key left out */
    const char *set_key;  /* a key replaced (or added): a scalar of set_type, or set_str */
    alloy_gguf_vtype set_type;
    alloy_gguf_scalar set_val;
    const char *set_str;
    const char *drop_key2;       /* another key left out */
    const char *arr_key;         /* an array replaced: arr_n strings arr_strs, or arr_n elements */
    const char *const *arr_strs; /*   of arr_type at arr_data */
    alloy_gguf_vtype arr_type;
    const void *arr_data;
    size_t arr_n;
    const char *drop_tensor; /* a tensor left out */
    const char *extra_name;  /* a tensor added: a copy of extra_from's shape, type and data, */
    const char *extra_from;
    const void *extra_data;    /*   or of these bytes */
    const char *retype_tensor; /* a tensor given another type of the same size */
    uint32_t retype;
    bool u64_counts;      /* UINT32 values as UINT64, as the spec recommends for counts */
    bool f64_floats;      /* FLOAT32 values as FLOAT64 */
    bool reverse_tensors; /* tensors in reverse order */
} edit;

static void rewrite(const char *src, const char *dst, const edit *e) {
    alloy_gguf *g;
    ALLOY_ASSERT(alloy_gguf_open(&g, src) == ALLOY_STATUS_OK);
    alloy_gguf_writer *w;
    ALLOY_ASSERT(alloy_gguf_writer_create(&w) == ALLOY_STATUS_OK);
    bool set_done = false;
    for (size_t i = 0; i < g->n_kv; i++) {
        const alloy_gguf_kv *kv = &g->kvs[i];
        if ((e->drop_key && !strcmp(kv->key, e->drop_key)) || (e->drop_key2 && !strcmp(kv->key, e->drop_key2)))
            continue;
        alloy_status s;
        if (e->arr_key && !strcmp(kv->key, e->arr_key)) {
            s = e->arr_strs ? alloy_gguf_set_arr_str(w, kv->key, e->arr_strs, NULL, e->arr_n)
                            : alloy_gguf_set_arr(w, kv->key, e->arr_type, e->arr_data, e->arr_n);
        } else if (e->set_key && !strcmp(kv->key, e->set_key)) {
            s = e->set_str ? alloy_gguf_set_str(w, kv->key, e->set_str)
                           : alloy_gguf_set_val(w, kv->key, e->set_type, e->set_val);
            set_done = true;
        } else if (e->u64_counts && kv->type == ALLOY_GGUF_VTYPE_UINT32 && strcmp(kv->key, "general.alignment")) {
            s = alloy_gguf_set_val(w, kv->key, ALLOY_GGUF_VTYPE_UINT64, (alloy_gguf_scalar){.u64 = kv->val.u32});
        } else if (e->f64_floats && kv->type == ALLOY_GGUF_VTYPE_FLOAT32) {
            s = alloy_gguf_set_val(w, kv->key, ALLOY_GGUF_VTYPE_FLOAT64, (alloy_gguf_scalar){.f64 = kv->val.f32});
        } else {
            s = alloy_gguf_set_kv(w, kv);
        }
        ALLOY_ASSERT(s == ALLOY_STATUS_OK);
    }
    if (e->set_key && !set_done)
        ALLOY_ASSERT(!(e->set_str ? alloy_gguf_set_str(w, e->set_key, e->set_str)
                                  : alloy_gguf_set_val(w, e->set_key, e->set_type, e->set_val)));
    for (size_t k = 0; k < g->n_tensors; k++) {
        const alloy_gguf_tensor *t = &g->tensors[e->reverse_tensors ? g->n_tensors - 1 - k : k];
        if (e->drop_tensor && !strcmp(t->name, e->drop_tensor)) continue;
        uint32_t type = e->retype_tensor && !strcmp(t->name, e->retype_tensor) ? e->retype : t->type;
        ALLOY_ASSERT(!alloy_gguf_add_tensor(w, t->name, t->n_dims, t->ne, type, t->data, t->nbytes));
    }
    if (e->extra_name) {
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, e->extra_from);
        ALLOY_ASSERT(t);
        ALLOY_ASSERT(!alloy_gguf_add_tensor(w, e->extra_name, t->n_dims, t->ne, t->type,
                                            e->extra_data ? e->extra_data : t->data, t->nbytes));
    }
    ALLOY_ASSERT(alloy_gguf_write(w, dst) == ALLOY_STATUS_OK);
    alloy_gguf_writer_destroy(w);
    alloy_gguf_close(g);
}

static void test_import_variants(void) {
    char *dir = copy_tmpdir();
    char *lp = alloy_path_join(dir, "llama.gguf"), *gp = alloy_path_join(dir, "gpt2.gguf"),
         *v = alloy_path_join(dir, "variant.gguf");
    alloy_config lc = preset("tiny-llama", 320), gc = preset("tiny-gpt2", 256);
    alloy_model *lm = make_model(&lc, 10), *gm = make_model(&gc, 11);
    alloy_tokenizer *bpe = train_tokenizer();
    REQUIRE(lm && gm && bpe, "create");
    REQUIRE(!alloy_gguf_export_model(lm, bpe, lp, ALLOY_QTYPE_F32), "%s", alloy_last_error());
    REQUIRE(!alloy_gguf_export_model(gm, NULL, gp, ALLOY_QTYPE_F32), "%s", alloy_last_error());
    static uint8_t other_embd[256 * 64 * 4]; // zeros: an output.weight unlike token_embd
    static const char *const no_space[] = {"\xc4\xa0t"}, *const unknown_pair[] = {"x y"}, *const control[] = {"a \x01"},
                             *const short_vocab[1] = {"a"};
    static int32_t types6[320];
    for (int i = 0; i < 320; i++) types6[i] = i == 100 ? 6 : 1;
    struct {
        const char *what;
        const char *src;
        edit e;
        bool tok;
        alloy_status status;
        const char *expect;
    } cases[] = {
        {"architecture bert",
         lp,
         {.set_key = "general.architecture", .set_str = "bert"},
         false,
         ALLOY_STATUS_FORMAT,
         "architecture \"bert\" is not supported"},
        {"no architecture",
         lp,
         {.drop_key = "general.architecture"},
         false,
         ALLOY_STATUS_FORMAT,
         "key \"general.architecture\" is missing"},
        {"no block_count",
         lp,
         {.drop_key = "llama.block_count"},
         false,
         ALLOY_STATUS_FORMAT,
         "key \"llama.block_count\" is missing"},
        {"block_count 3",
         lp,
         {.set_key = "llama.block_count", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 3}},
         false,
         ALLOY_STATUS_MISMATCH,
         "missing tensor \"blk.2.attn_norm.weight\""},
        {"block_count 1",
         lp,
         {.set_key = "llama.block_count", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 1}},
         false,
         ALLOY_STATUS_MISMATCH,
         "unexpected tensor \"blk.1."},
        {"block_count 0",
         lp,
         {.set_key = "llama.block_count", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 0}},
         false,
         ALLOY_STATUS_FORMAT,
         "out of range"},
        {"a missing tensor",
         lp,
         {.drop_tensor = "blk.1.attn_k.weight"},
         false,
         ALLOY_STATUS_MISMATCH,
         "missing tensor \"blk.1.attn_k.weight\""},
        {"rope_freqs",
         lp,
         {.extra_name = "rope_freqs.weight", .extra_from = "output_norm.weight"},
         false,
         ALLOY_STATUS_MISMATCH,
         "unexpected tensor \"rope_freqs.weight\""},
        {"head_count_kv 4",
         lp,
         {.set_key = "llama.attention.head_count_kv", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 4}},
         false,
         ALLOY_STATUS_MISMATCH,
         "tensor \"blk.0.attn_k.weight\" has shape [64, 32] but the metadata imply [64, 64]"},
        {"head_count 3",
         lp,
         {.set_key = "llama.attention.head_count", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 3}},
         false,
         ALLOY_STATUS_FORMAT,
         "not a multiple of n_head 3"},
        {"partial rope",
         lp,
         {.set_key = "llama.rope.dimension_count", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 8}},
         false,
         ALLOY_STATUS_FORMAT,
         "over part of a head"},
        {"rope scaling",
         lp,
         {.set_key = "llama.rope.scaling.type", .set_str = "linear"},
         false,
         ALLOY_STATUS_FORMAT,
         "RoPE scaling"},
        {"embedding_length as a string",
         lp,
         {.set_key = "llama.embedding_length", .set_str = "64"},
         false,
         ALLOY_STATUS_FORMAT,
         "\"llama.embedding_length\" is STRING, expected an integer"},
        {"embedding_length 32",
         lp,
         {.set_key = "llama.embedding_length", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 32}},
         false,
         ALLOY_STATUS_MISMATCH,
         "token_embd.weight has rows of 64 but llama.embedding_length is 32"},
        {"feed_forward_length 100",
         lp,
         {.set_key = "llama.feed_forward_length", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 100}},
         false,
         ALLOY_STATUS_MISMATCH,
         "blk.0.ffn_down.weight"},
        {"vocab_size 300",
         lp,
         {.set_key = "llama.vocab_size", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 300}},
         false,
         ALLOY_STATUS_MISMATCH,
         "vocab_size is 300 but token_embd.weight has 320 rows"},
        {"no rms epsilon",
         lp,
         {.drop_key = "llama.attention.layer_norm_rms_epsilon"},
         false,
         ALLOY_STATUS_FORMAT,
         "key \"llama.attention.layer_norm_rms_epsilon\" is missing"},
        {"a norm in I32",
         lp,
         {.retype_tensor = "output_norm.weight", .retype = ALLOY_GGML_TYPE_I32},
         false,
         ALLOY_STATUS_FORMAT,
         "tensor \"output_norm.weight\" is I32"},
        {"a SentencePiece tokenizer",
         lp,
         {.set_key = "tokenizer.ggml.model", .set_str = "llama"},
         true,
         ALLOY_STATUS_FORMAT,
         "tokenizer \"llama\" is not supported"},
        {"another pre-tokenizer",
         lp,
         {.set_key = "tokenizer.ggml.pre", .set_str = "qwen2"},
         true,
         ALLOY_STATUS_FORMAT,
         "pre-tokenizer \"qwen2\" is not supported"},
        {"a merge without a space",
         lp,
         {.arr_key = "tokenizer.ggml.merges", .arr_strs = no_space, .arr_n = 1},
         true,
         ALLOY_STATUS_FORMAT,
         "merge 1 (\"\xc4\xa0t\") is not \"a b\""},
        {"a merge making an unknown token",
         lp,
         {.arr_key = "tokenizer.ggml.merges", .arr_strs = unknown_pair, .arr_n = 1},
         true,
         ALLOY_STATUS_FORMAT,
         "merge 1 makes a token that is not in the vocabulary"},
        {"a merge not in byte-level form",
         lp,
         {.arr_key = "tokenizer.ggml.merges", .arr_strs = control, .arr_n = 1},
         true,
         ALLOY_STATUS_FORMAT,
         "merge 1 (\"a ?\") is not \"a b\" in byte-level form"},
        {"fewer tokens than token types",
         lp,
         {.arr_key = "tokenizer.ggml.tokens", .arr_strs = short_vocab, .arr_n = 1},
         true,
         ALLOY_STATUS_FORMAT,
         "1 tokens (a byte-level BPE has 256 to 16777216)"},
        {"a byte token",
         lp,
         {.arr_key = "tokenizer.ggml.token_type", .arr_type = ALLOY_GGUF_VTYPE_INT32, .arr_data = types6, .arr_n = 320},
         true,
         ALLOY_STATUS_FORMAT,
         "token 100 has type 6"},
        {"token types of the wrong length",
         lp,
         {.arr_key = "tokenizer.ggml.token_type", .arr_type = ALLOY_GGUF_VTYPE_INT32, .arr_data = types6, .arr_n = 300},
         true,
         ALLOY_STATUS_FORMAT,
         "300 token types for 320 tokens"},
        {"token types as floats",
         lp,
         {.arr_key = "tokenizer.ggml.token_type",
          .arr_type = ALLOY_GGUF_VTYPE_FLOAT32,
          .arr_data = types6,
          .arr_n = 320},
         true,
         ALLOY_STATUS_FORMAT,
         "is an array of FLOAT32, expected an array of INT32"},
        {"gpt2 context 64",
         gp,
         {.set_key = "gpt2.context_length", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 64}},
         false,
         ALLOY_STATUS_MISMATCH,
         "position_embd.weight"},
        {"gpt2 with GQA",
         gp,
         {.set_key = "gpt2.attention.head_count_kv", .set_type = ALLOY_GGUF_VTYPE_UINT32, .set_val = {.u32 = 2}},
         false,
         ALLOY_STATUS_FORMAT,
         "GPT-2 has no grouped-query attention"},
        {"gpt2 with an untied head",
         gp,
         {.extra_name = "output.weight", .extra_from = "token_embd.weight", .extra_data = other_embd},
         false,
         ALLOY_STATUS_MISMATCH,
         "differs from token_embd.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rewrite(cases[i].src, v, &cases[i].e);
        alloy_model *m = (alloy_model *)1;
        alloy_tokenizer *t = (alloy_tokenizer *)1;
        alloy_status s = alloy_gguf_import_model_ex(&m, cases[i].tok ? &t : NULL, v, 1, MAX_T);
        EXPECT(s == cases[i].status && m == NULL && (!cases[i].tok || t == NULL), "%s: status %s '%s'", cases[i].what,
               alloy_status_name(s), alloy_last_error());
        EXPECT(says(cases[i].expect) && says(v) && one_line(), "%s: message '%s' lacks '%s'", cases[i].what,
               alloy_last_error(), cases[i].expect);
        if (s == ALLOY_STATUS_OK) alloy_model_destroy(m);
    }
    // files that differ from ours the ways llama.cpp's may: 64-bit counts, epsilon in f64,
    // tensors in another order, no alignment, vocab_size, freq_base or head_count_kv keys
    // (defaults 32, from token_embd, 10000, head_count), an output.weight equal to token_embd
    struct {
        const char *what;
        const alloy_model *m;
        const char *src;
        edit e;
        bool tok;
    } fine[] = {
        {"u64 counts, reversed tensors",
         lm,
         lp,
         {.u64_counts = true,
          .reverse_tensors = true,
          .drop_key = "general.alignment",
          .drop_key2 = "llama.vocab_size"},
         true},
        {"f64 epsilon, no freq_base", lm, lp, {.f64_floats = true, .drop_key = "llama.rope.freq_base"}, false},
        {"SentencePiece tokenizer, weights alone",
         lm,
         lp,
         {.set_key = "tokenizer.ggml.model", .set_str = "llama"},
         false},
        {"gpt2 without head_count_kv and feed_forward_length",
         gm,
         gp,
         {.drop_key = "gpt2.attention.head_count_kv", .drop_key2 = "gpt2.feed_forward_length"},
         false},
        {"gpt2 with output.weight = token_embd",
         gm,
         gp,
         {.extra_name = "output.weight", .extra_from = "token_embd.weight"},
         false},
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        rewrite(fine[i].src, v, &fine[i].e);
        alloy_model *m = NULL;
        alloy_tokenizer *t = NULL;
        alloy_status s = alloy_gguf_import_model_ex(&m, fine[i].tok ? &t : NULL, v, 1, MAX_T);
        EXPECT(s == ALLOY_STATUS_OK, "%s: %s", fine[i].what, alloy_last_error());
        if (s) continue;
        alloy_config want = fine[i].m->config;
        if (fine[i].e.f64_floats) want.norm_eps = (double)(float)want.norm_eps; // a FLOAT64 is taken as it is
        EXPECT(!memcmp(&m->config, &want, sizeof want) &&
                   !memcmp(m->params_memory, fine[i].m->params_memory, m->num_params * sizeof(float)),
               "%s: the model differs", fine[i].what);
        EXPECT(!fine[i].tok || (t && alloy_tokenizer_hash(t) == alloy_tokenizer_hash(bpe)), "%s: tokenizer",
               fine[i].what);
        alloy_tokenizer_destroy(t);
        alloy_model_destroy(m);
    }
    // a llama without head_count_kv has as many KV heads as heads
    alloy_config mh = preset("tiny-llama", 256);
    mh.n_kv_head = mh.n_head;
    alloy_model *mm = make_model(&mh, 12);
    REQUIRE(mm, "create");
    REQUIRE(!alloy_gguf_export_model(mm, NULL, lp, ALLOY_QTYPE_F32), "%s", alloy_last_error());
    rewrite(lp, v, &(edit){.drop_key = "llama.attention.head_count_kv"});
    alloy_model *m2 = NULL;
    EXPECT(alloy_gguf_import_model_ex(&m2, NULL, v, 1, MAX_T) == ALLOY_STATUS_OK && m2->config.n_kv_head == 4 &&
               !memcmp(m2->params_memory, mm->params_memory, mm->num_params * sizeof(float)),
           "no head_count_kv: %s", alloy_last_error());
    alloy_model_destroy(m2);
    alloy_model_destroy(mm);
    // not a GGUF file at all
    write_bytes(v, "{\"model_type\": \"gpt2\"}", 22);
    alloy_model *m3 = (alloy_model *)1;
    alloy_status s = alloy_gguf_import_model(&m3, NULL, v);
    EXPECT(s == ALLOY_STATUS_FORMAT && m3 == NULL && says("not a GGUF file"), "JSON: '%s'", alloy_last_error());
    alloy_tokenizer_destroy(bpe);
    alloy_model_destroy(lm);
    alloy_model_destroy(gm);
    alloy_free(lp);
    alloy_free(gp);
    alloy_free(v);
    alloy_free(dir);
}

/* ---- the outside parser: node with @huggingface/gguf --------------------------------------- */

static bool js_available(char *why, size_t size) {
    char pkg[512];
    snprintf(pkg, sizeof pkg, "%s/tests/js/node_modules/@huggingface/gguf/package.json", harness_root());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' --version >/dev/null 2>&1", NODE);
    if (harness_command(cmd) != 0) {
        snprintf(why, size, "%s --version fails (node is not installed?)", NODE);
        return false;
    }
    if (!alloy_path_exists(pkg)) {
        snprintf(why, size, "@huggingface/gguf is not installed (npm ci in tests/js)");
        return false;
    }
    // the package needs Node.js 20 or later (Debian 12's own nodejs is 18)
    snprintf(cmd, sizeof cmd, "'%s' -p 'process.versions.node.split(\".\")[0]' 2>/dev/null", NODE);
    FILE *p = popen(cmd, "r");
    int major = 0;
    if (p) {
        if (fscanf(p, "%d", &major) != 1) major = 0;
        pclose(p);
    }
    if (major < 20) {
        snprintf(why, size, "@huggingface/gguf needs Node.js >= 20, this node is version %d", major);
        return false;
    }
    return true;
}

/* Compares what the outside parser found in one file with our reader's view of it. */
static void compare_js(const cJSON *j, const char *path, const char *arch, alloy_qtype q) {
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(j, "ok");
    REQUIRE(cJSON_IsTrue(ok), "%s: @huggingface/gguf refused it: %s", path,
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "error")));
    alloy_gguf *g;
    REQUIRE(alloy_gguf_open(&g, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "metadata"),
                *tensors = cJSON_GetObjectItemCaseSensitive(j, "tensors");
    EXPECT(cJSON_GetObjectItemCaseSensitive(j, "version")->valuedouble == 3, "%s: version", path);
    EXPECT(cJSON_GetObjectItemCaseSensitive(j, "kv_count")->valuedouble == (double)g->n_kv &&
               cJSON_GetObjectItemCaseSensitive(j, "tensor_count")->valuedouble == (double)g->n_tensors &&
               cJSON_GetArraySize(tensors) == (int)g->n_tensors,
           "%s: counts", path);
    EXPECT(cJSON_GetObjectItemCaseSensitive(j, "tensor_data_offset")->valuedouble == (double)g->data_offset,
           "%s: data offset", path);
    const cJSON *a =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "general.architecture"), "value");
    EXPECT(cJSON_IsString(a) && !strcmp(a->valuestring, arch), "%s: architecture", path);
    // every key/value: same type and value
    int checked = 0;
    for (size_t i = 0; i < g->n_kv; i++) {
        const alloy_gguf_kv *kv = &g->kvs[i];
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(meta, kv->key);
        if (!m) {
            EXPECT(0, "%s: the outside parser lacks key %s", path, kv->key);
            continue;
        }
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type"),
                    *val = cJSON_GetObjectItemCaseSensitive(m, "value");
        EXPECT(cJSON_IsString(type) && !strcmp(type->valuestring, alloy_gguf_vtype_name(kv->type)),
               "%s: %s has type %s", path, kv->key, cJSON_GetStringValue(type));
        bool same;
        switch (kv->type) {
        case ALLOY_GGUF_VTYPE_STRING: same = cJSON_IsString(val) && !strcmp(val->valuestring, kv->str); break;
        case ALLOY_GGUF_VTYPE_BOOL: same = cJSON_IsBool(val) && cJSON_IsTrue(val) == kv->val.b; break;
        case ALLOY_GGUF_VTYPE_FLOAT32: same = cJSON_IsNumber(val) && val->valuedouble == (double)kv->val.f32; break;
        case ALLOY_GGUF_VTYPE_UINT32: same = cJSON_IsNumber(val) && val->valuedouble == (double)kv->val.u32; break;
        case ALLOY_GGUF_VTYPE_ARRAY: {
            const cJSON *sub = cJSON_GetObjectItemCaseSensitive(m, "sub_type");
            same = cJSON_IsArray(val) && cJSON_GetArraySize(val) == (int)kv->arr_n && cJSON_IsString(sub) &&
                   !strcmp(sub->valuestring, alloy_gguf_vtype_name(kv->arr_type));
            for (uint64_t k = 0; same && k < kv->arr_n; k++) {
                const cJSON *e = cJSON_GetArrayItem(val, (int)k);
                alloy_gguf_scalar sv;
                size_t len;
                if (kv->arr_type == ALLOY_GGUF_VTYPE_STRING) {
                    const char *str = alloy_gguf_arr_str(kv, k, &len);
                    same = cJSON_IsString(e) && strlen(e->valuestring) == len && !memcmp(e->valuestring, str, len);
                } else {
                    same = alloy_gguf_arr_get(kv, k, &sv) && cJSON_IsNumber(e) && e->valuedouble == (double)sv.i32;
                }
            }
            break;
        }
        default: same = false; break;
        }
        EXPECT(same, "%s: %s differs", path, kv->key);
        checked++;
    }
    // every tensor: name, shape (fastest first), type, offset, in file order
    int matrices_in_type = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const alloy_gguf_tensor *t = &g->tensors[i];
        const cJSON *jt = cJSON_GetArrayItem(tensors, (int)i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(jt, "name"),
                    *shape = cJSON_GetObjectItemCaseSensitive(jt, "shape");
        const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(jt, "dtype"),
                    *off = cJSON_GetObjectItemCaseSensitive(jt, "offset");
        bool same = cJSON_IsString(name) && !strcmp(name->valuestring, t->name) && cJSON_IsArray(shape) &&
                    cJSON_GetArraySize(shape) == t->n_dims && cJSON_IsString(dtype) &&
                    !strcmp(dtype->valuestring, alloy_ggml_type_name(t->type)) && cJSON_IsNumber(off) &&
                    off->valuedouble == (double)t->offset;
        for (int d = 0; same && d < t->n_dims; d++)
            same = cJSON_GetArrayItem(shape, d)->valuedouble == (double)t->ne[d];
        EXPECT(same, "%s: tensor %zu (%s) differs", path, i, t->name);
        uint32_t want;
        alloy_ggml_type_from_qtype(q, &want);
        matrices_in_type += t->n_dims == 2 && t->type == want;
    }
    EXPECT(matrices_in_type > 0, "%s: no matrix of the requested type", path);
    const cJSON *te = NULL;
    cJSON_ArrayForEach(te, tensors) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(te, "name");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, "token_embd.weight")) {
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(te, "shape");
            EXPECT(cJSON_GetArrayItem(sh, 0)->valuedouble == 64 && cJSON_GetArrayItem(sh, 1)->valuedouble == 256,
                   "%s: token_embd shape", path);
        }
    }
    EXPECT(checked == (int)g->n_kv && checked > 12, "%s: %d keys compared", path, checked);
    alloy_gguf_close(g);
}

static void test_outside_parser(void) {
    char why[160];
    if (!js_available(why, sizeof why)) SKIP("oracle: %s", why);
    char *dir = copy_tmpdir();
    alloy_config gc = preset("tiny-gpt2", 256), lc = preset("tiny-llama", 256);
    alloy_model *gm = make_model(&gc, 13), *lm = make_model(&lc, 14);
    alloy_tokenizer *tok;
    REQUIRE(gm && lm && alloy_tokenizer_create(&tok, "bytes") == ALLOY_STATUS_OK, "create");
    const alloy_qtype types[4] = {ALLOY_QTYPE_F32, ALLOY_QTYPE_F16, ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0};
    char *paths[8];
    char cmd[8192];
    int k = snprintf(cmd, sizeof cmd, "'%s' '%s/tests/js/gguf_check.mjs'", NODE, harness_root());
    for (int i = 0; i < 8; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s-%s.gguf", i < 4 ? "gpt2" : "llama", alloy_qtype_name(types[i % 4]));
        paths[i] = alloy_path_join(dir, name);
        REQUIRE(!alloy_gguf_export_model(i < 4 ? gm : lm, i % 2 ? tok : NULL, paths[i], types[i % 4]), "%s",
                alloy_last_error());
        k += snprintf(cmd + k, sizeof cmd - (size_t)k, " '%s'", paths[i]);
    }
    char *out = alloy_path_join(dir, "js.out");
    snprintf(cmd + k, sizeof cmd - (size_t)k, " > '%s' 2>&1", out);
    int rc = system(cmd);
    char *text = NULL;
    size_t n;
    alloy_file_read_all(out, &text, &n);
    REQUIRE(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0 && text, "node failed (%d): %s", rc, text ? text : "");
    char *line = text;
    int seen = 0;
    for (int i = 0; i < 8 && line && *line; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *j = cJSON_Parse(line);
        REQUIRE(j, "not JSON: %.200s", line);
        compare_js(j, paths[i], i < 4 ? "gpt2" : "llama", types[i % 4]);
        cJSON_Delete(j);
        seen++;
        line = nl ? nl + 1 : NULL;
    }
    EXPECT(seen == 8, "the outside parser reported %d files", seen);
    // and it refuses what is not GGUF (the oracle is awake)
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/js/gguf_check.mjs' '%s' > '%s' 2>&1", NODE, harness_root(), out, paths[0]);
    (void)system(cmd);
    alloy_free(text);
    text = NULL;
    alloy_file_read_all(paths[0], &text, &n);
    EXPECT(text && strstr(text, "\"ok\":false"), "the outside parser accepted a text file: %.200s", text ? text : "");
    alloy_free(text);
    for (int i = 0; i < 8; i++) alloy_free(paths[i]);
    alloy_free(out);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(gm);
    alloy_model_destroy(lm);
    alloy_free(dir);
}

/* ---- out of memory ------------------------------------------------------------------------ */

/* Runs op with the k-th allocation failing, k = 1, 2, ... until it succeeds: every failure must
 * be NOMEM, leave no file behind in dir beyond `files`, and leak nothing (ASan). */
static int oom_loop(const char *what, alloy_status (*op)(void *), void *arg, const char *dir, int files) {
    int fails = 0, k;
    for (k = 1; k < 20000; k++) {
        alloy_alloc_fail_after(k);
        alloy_status s = op(arg);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) break;
        fails += s == ALLOY_STATUS_NOMEM;
        if (s != ALLOY_STATUS_NOMEM) {
            EXPECT(0, "%s, allocation %d: status %s '%s'", what, k, alloy_status_name(s), alloy_last_error());
            break;
        }
        if (harness_count_entries(dir) != files) {
            EXPECT(0, "%s, allocation %d: %d files left", what, k, harness_count_entries(dir));
            break;
        }
    }
    EXPECT(fails >= 1 && fails == k - 1, "%s: %d clean failures of %d", what, fails, k - 1);
    return fails;
}

typedef struct oom_ctx {
    const char *path;
    const alloy_model *m;
    const alloy_tokenizer *tok;
} oom_ctx;

static alloy_status oom_open(void *p) {
    alloy_gguf *g;
    alloy_status s = alloy_gguf_open(&g, ((oom_ctx *)p)->path);
    if (!s) alloy_gguf_close(g);
    return s;
}
static alloy_status oom_write(void *p) {
    alloy_gguf_writer *w;
    alloy_status s = alloy_gguf_writer_create(&w);
    float f[64] = {0};
    const char *strs[2] = {"x", "yz"};
    if (!s) s = alloy_gguf_set_u32(w, "general.alignment", 32);
    if (!s) s = alloy_gguf_set_str(w, "a.s", "hello");
    if (!s) s = alloy_gguf_set_arr_str(w, "a.strs", strs, NULL, 2);
    if (!s) s = alloy_gguf_set_arr(w, "a.f", ALLOY_GGUF_VTYPE_FLOAT32, f, 64);
    for (int i = 0; i < 70 && !s; i++) { // past the first growth of the tensor list
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        s = alloy_gguf_add_tensor(w, name, 1, (int64_t[]){64}, ALLOY_GGML_TYPE_F32, f, sizeof f);
    }
    if (!s) s = alloy_gguf_write(w, ((oom_ctx *)p)->path);
    alloy_gguf_writer_destroy(w);
    return s;
}
static alloy_status oom_export(void *p) {
    oom_ctx *c = p;
    return alloy_gguf_export_model(c->m, c->tok, c->path, ALLOY_QTYPE_Q8_0);
}
static alloy_status oom_import(void *p) {
    alloy_model *m;
    alloy_tokenizer *t;
    alloy_status s = alloy_gguf_import_model_ex(&m, &t, ((oom_ctx *)p)->path, 1, 4);
    if (!s) {
        alloy_model_destroy(m);
        alloy_tokenizer_destroy(t);
    }
    return s;
}

static void test_oom(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "oom.gguf");
    write_base(path, 32);
    oom_ctx ctx = {path, NULL, NULL};
    oom_loop("open", oom_open, &ctx, dir, 1);
    char *other = alloy_path_join(dir, "written.gguf");
    ctx.path = other;
    oom_loop("write", oom_write, &ctx, dir, 1);
    alloy_config c = preset("tiny-llama", 320);
    c.n_layer = 1;
    c.max_seq_len = MAX_T;
    alloy_model *m = make_model(&c, 15);
    alloy_tokenizer *tok = train_tokenizer();
    REQUIRE(m && tok, "create");
    char *mp = alloy_path_join(dir, "model.gguf");
    ctx = (oom_ctx){mp, m, tok};
    oom_loop("export", oom_export, &ctx, dir, 2);
    oom_loop("import", oom_import, &ctx, dir, 3);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(mp);
    alloy_free(other);
    alloy_free(path);
    alloy_free(dir);
}

int main(void) {
    RUN(test_values_roundtrip);
    RUN(test_writer_usage);
    RUN(test_corrupt);
    RUN(test_fuzz);
    RUN(test_export_gpt2);
    RUN(test_export_llama);
    RUN(test_export_moe);
    RUN(test_export_metadata);
    RUN(test_tokenizer_roundtrip);
    RUN(test_import_variants);
    RUN(test_outside_parser);
    RUN(test_oom);
    return harness_exit();
}
