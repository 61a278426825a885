/*
 * test_safetensors.c — safetensors: roundtrip, half-precision conversion, a catalogue of
 * corrupt files, a mutation fuzz, out-of-memory paths.
 */
#include "io_util.h"

#include <cJSON.h>

/* ---- safetensors roundtrip -------------------------------------------------------------- */

static void test_st_roundtrip(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "t.safetensors");
    float f32[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-30f, -7e20f};
    uint16_t f16[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001};
    uint16_t bf16[3] = {0x3F80, 0xC040, 0x4049};
    int64_t scalar = -1234567890123LL;
    uint8_t u8[8] = {0, 1, 2, 3, 250, 251, 252, 255};
    uint8_t flags[3] = {1, 0, 1};
    double f64 = 3.141592653589793;
    int8_t i8[2] = {-128, 127};
    int32_t none[1] = {0};
    uint32_t u32[2] = {0xdeadbeefu, 7};
    alloy_st_entry e[] = {
        {"layer.weight", ALLOY_DTYPE_F32, 2, {2, 3}, f32},
        {"half", ALLOY_DTYPE_F16, 1, {4}, f16},
        {"brain", ALLOY_DTYPE_BF16, 1, {3}, bf16},
        {"step", ALLOY_DTYPE_I64, 0, {0}, &scalar},
        {"cube", ALLOY_DTYPE_U8, 3, {2, 2, 2}, u8},
        {"mask", ALLOY_DTYPE_BOOL, 1, {3}, flags},
        {"pi", ALLOY_DTYPE_F64, 1, {1}, &f64},
        {"deep", ALLOY_DTYPE_I8, 8, {1, 1, 1, 1, 1, 1, 1, 2}, i8},
        {"empty", ALLOY_DTYPE_I32, 2, {0, 5}, none},
        {"u32", ALLOY_DTYPE_U32, 1, {2}, u32},
    };
    int n = (int)(sizeof e / sizeof e[0]);
    const char *meta[] = {"format", "pt", "note", "hello \"world\"", NULL};
    REQUIRE(alloy_safetensors_write(path, e, n, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(harness_count_entries(dir) == 1, "the writer left %d files", harness_count_entries(dir));

    alloy_safetensors *st;
    REQUIRE(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(st->n_tensors == n, "%d tensors, expected %d", st->n_tensors, n);
    EXPECT(st->header_size % 8 == 0, "header length %zu is not a multiple of 8", st->header_size);
    size_t total = 0;
    for (int i = 0; i < n && i < st->n_tensors; i++) {
        const alloy_st_tensor *t = &st->tensors[i];
        EXPECT(!strcmp(t->name, e[i].name), "tensor %d is \"%s\", expected \"%s\" (file order)", i, t->name, e[i].name);
        EXPECT(t->dtype == e[i].dtype && t->ndim == e[i].ndim, "%s: dtype %d ndim %d", t->name, t->dtype, t->ndim);
        size_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) {
            EXPECT(t->shape[d] == e[i].shape[d], "%s: dim %d is %lld", t->name, d, (long long)t->shape[d]);
            numel *= (size_t)e[i].shape[d];
        }
        EXPECT(t->numel == numel && t->nbytes == numel * alloy_dtype_size(e[i].dtype), "%s: numel %zu nbytes %zu",
               t->name, t->numel, t->nbytes);
        EXPECT(t->nbytes == 0 || !memcmp(t->data, e[i].data, t->nbytes), "%s: data differs", t->name);
        EXPECT(alloy_safetensors_find(st, e[i].name) == t, "find(%s)", e[i].name);
        total += t->nbytes;
    }
    EXPECT(8 + st->header_size + total == st->map.size, "file size %zu", st->map.size);
    EXPECT(alloy_safetensors_find(st, "nope") == NULL, "find of a missing name");
    const char *fmt = alloy_safetensors_meta(st, "format"), *note = alloy_safetensors_meta(st, "note");
    EXPECT(fmt && !strcmp(fmt, "pt"), "meta format: %s", fmt ? fmt : "(null)");
    EXPECT(note && !strcmp(note, "hello \"world\""), "meta note: %s", note ? note : "(null)");
    EXPECT(alloy_safetensors_meta(st, "nope") == NULL, "missing metadata key");
    // F32 converts to itself bit for bit
    float back[6];
    EXPECT(alloy_st_tensor_to_f32(st, &st->tensors[0], back) == ALLOY_STATUS_OK && !memcmp(back, f32, sizeof f32),
           "F32 to f32");
    // integer tensors are not converted
    alloy_status s = alloy_st_tensor_to_f32(st, alloy_safetensors_find(st, "step"), back);
    EXPECT(s == ALLOY_STATUS_FORMAT && says(path) && says("\"step\"") && says("I64"), "I64 to f32: '%s'",
           alloy_last_error());
    alloy_safetensors_close(st);

    // no tensors and no metadata: "{}" padded, an 8 + 8 byte file
    REQUIRE(alloy_safetensors_write(path, NULL, 0, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "empty: %s", alloy_last_error());
    EXPECT(st->n_tensors == 0 && st->metadata == NULL && st->map.size == 16, "empty file: %d tensors, %zu bytes",
           st->n_tensors, st->map.size);
    EXPECT(alloy_safetensors_meta(st, "format") == NULL, "no metadata");
    alloy_safetensors_close(st);
    alloy_safetensors_close(NULL);

    // the writer into a missing folder fails cleanly
    char *bad = alloy_path_join(dir, "missing/t.safetensors");
    s = alloy_safetensors_write(bad, e, n, NULL);
    EXPECT(s == ALLOY_STATUS_IO && says(bad), "write into a missing folder: %d '%s'", s, alloy_last_error());
    alloy_free(bad);

    // dtype names
    alloy_dtype d;
    EXPECT(!alloy_dtype_parse("BF16", &d) && d == ALLOY_DTYPE_BF16, "parse BF16");
    EXPECT(alloy_dtype_parse("f32", &d) && alloy_dtype_parse("F8_E4M3", &d) && alloy_dtype_parse("", &d),
           "unknown dtype names");
    EXPECT(alloy_dtype_size(ALLOY_DTYPE_F64) == 8 && alloy_dtype_size(ALLOY_DTYPE_COUNT) == 0, "dtype sizes");
    EXPECT(!strcmp(alloy_dtype_name(ALLOY_DTYPE_U16), "U16") && !strcmp(alloy_dtype_name(ALLOY_DTYPE_COUNT), "?"),
           "dtype names");
    alloy_free(path);
    alloy_free(dir);
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void test_st_half_conversion(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "h.safetensors");
    static const struct {
        uint16_t h;
        float f;
    } f16[] = {
        {0x0000, 0.0f},          {0x8000, -0.0f},          {0x3C00, 1.0f},       {0xBC00, -1.0f},
        {0x4000, 2.0f},          {0xC000, -2.0f},          {0x3800, 0.5f},       {0x3555, 0.333251953125f},
        {0x7BFF, 65504.0f},      {0xFBFF, -65504.0f},      {0x0400, 0x1p-14f},   {0x0001, 0x1p-24f},
        {0x03FF, 0x1.ff8p-15f},  {0x8001, -0x1p-24f},      {0x0200, 0x1p-15f},   {0x7C00, INFINITY},
        {0xFC00, -INFINITY},     {0x4248, 3.140625f},
    };
    static const struct {
        uint16_t h;
        float f;
    } bf16[] = {
        {0x0000, 0.0f},   {0x8000, -0.0f},     {0x3F80, 1.0f},           {0xC040, -3.0f}, {0x4049, 3.140625f},
        {0x7F80, INFINITY}, {0xFF80, -INFINITY}, {0x0001, 0x1p-133f},    {0x7F7F, 0x1.fep127f},
        {0x3C00, 0x1p-7f},
    };
    enum { NF = sizeof f16 / sizeof f16[0], NB = sizeof bf16 / sizeof bf16[0] };
    uint16_t a[NF + 1], b[NB + 1];
    for (int i = 0; i < NF; i++) a[i] = f16[i].h;
    for (int i = 0; i < NB; i++) b[i] = bf16[i].h;
    a[NF] = 0x7E00; // NaN
    b[NB] = 0x7FC0; // NaN
    alloy_st_entry e[] = {
        {"f16", ALLOY_DTYPE_F16, 1, {NF + 1}, a},
        {"bf16", ALLOY_DTYPE_BF16, 2, {1, NB + 1}, b},
    };
    REQUIRE(alloy_safetensors_write(path, e, 2, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_safetensors *st;
    REQUIRE(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float out[32];
    REQUIRE(alloy_st_tensor_to_f32(st, alloy_safetensors_find(st, "f16"), out) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    for (int i = 0; i < NF; i++)
        EXPECT(float_bits(out[i]) == float_bits(f16[i].f), "F16 0x%04x -> %a, expected %a", f16[i].h, (double)out[i],
               (double)f16[i].f);
    EXPECT(isnan(out[NF]), "F16 0x7E00 -> %g, expected NaN", (double)out[NF]);
    REQUIRE(alloy_st_tensor_to_f32(st, alloy_safetensors_find(st, "bf16"), out) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    for (int i = 0; i < NB; i++)
        EXPECT(float_bits(out[i]) == float_bits(bf16[i].f), "BF16 0x%04x -> %a, expected %a", bf16[i].h,
               (double)out[i], (double)bf16[i].f);
    EXPECT(isnan(out[NB]), "BF16 0x7FC0 -> %g, expected NaN", (double)out[NB]);

    // every finite F16 value converts exactly: back to half by rounding gives the same bits
    uint16_t all[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    alloy_st_entry ea = {"all", ALLOY_DTYPE_F16, 1, {65536}, all};
    alloy_safetensors_close(st);
    REQUIRE(alloy_safetensors_write(path, &ea, 1, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float *conv = malloc(sizeof(float) * 65536);
    REQUIRE(alloy_st_tensor_to_f32(st, &st->tensors[0], conv) == ALLOY_STATUS_OK, "convert");
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        int exp = (i >> 10) & 0x1f, mant = i & 0x3ff, sign = i >> 15;
        double want = exp == 0 ? ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : ldexp(1024 + mant, exp - 25);
        if (sign) want = -want;
        if (isnan(want) ? !isnan(conv[i]) : ((double)conv[i] != want || !signbit(conv[i]) != !signbit(want))) {
            if (bad++ < 5) EXPECT(0, "F16 0x%04x -> %a, expected %a", i, (double)conv[i], want);
        }
    }
    EXPECT(bad == 0, "%d of 65536 F16 values convert wrongly", bad);
    free(conv);
    alloy_safetensors_close(st);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- corrupt files ---------------------------------------------------------------------- */

/* One header entry: "name": {"dtype": dt, "shape": sh, "data_offsets": off}. */
#define ENT(name, dt, sh, off) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" sh ",\"data_offsets\":" off "}"

typedef struct corrupt_case {
    const char *name;   /* what is wrong */
    const char *hdr;    /* header bytes */
    size_t hdr_len;     /* 0: strlen(hdr) */
    size_t data_len;    /* bytes of data after the header */
    bool set_len;       /* write `len` as the header length instead of the true one */
    uint64_t len;
    const char *expect; /* a piece of the message */
} corrupt_case;

static const corrupt_case corrupt_cases[] = {
    {.name = "header length beyond the file", .hdr = "{}", .set_len = true, .len = 1000, .expect = "does not fit"},
    {.name = "header length one past the file", .hdr = "{}", .data_len = 4, .set_len = true, .len = 7,
     .expect = "does not fit"},
    {.name = "header length 0", .hdr = "{}", .set_len = true, .len = 0, .expect = "header length 0"},
    {.name = "header length 1", .hdr = "{}", .set_len = true, .len = 1, .expect = "header length 1"},
    {.name = "header length 2^63", .hdr = "{}", .set_len = true, .len = 1ULL << 63, .expect = "does not fit"},
    {.name = "header length 2^64-1", .hdr = "{}", .set_len = true, .len = UINT64_MAX, .expect = "does not fit"},
    {.name = "header not starting with '{'", .hdr = " {}     ", .expect = "does not start with '{'"},
    {.name = "header a JSON string", .hdr = "\"{}\"    ", .expect = "does not start with '{'"},
    {.name = "header a JSON array", .hdr = "[{}]    ", .expect = "does not start with '{'"},
    {.name = "header not valid JSON", .hdr = "{\"a\":   ", .expect = "not a valid JSON object"},
    {.name = "header unterminated string", .hdr = "{\"a   ", .expect = "not a valid JSON object"},
    {.name = "header bare words", .hdr = "{a: b}  ", .expect = "not a valid JSON object"},
    {.name = "NUL byte inside the header", .hdr = "{\"a\0\":1}", .hdr_len = 9, .expect = "NUL"},
    {.name = "NUL byte in the padding", .hdr = "{}\0     ", .hdr_len = 8, .expect = "NUL"},
    {.name = "tensor entry a number", .hdr = "{\"w\":5}", .expect = "\"w\" is not an object"},
    {.name = "tensor entry an array", .hdr = "{\"w\":[0,4]}", .expect = "\"w\" is not an object"},
    {.name = "empty tensor name", .hdr = "{" ENT("", "F32", "[1]", "[0,4]") "}", .data_len = 4,
     .expect = "empty name"},
    {.name = "missing dtype", .hdr = "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", .data_len = 4,
     .expect = "\"w\" has a missing or unknown dtype"},
    {.name = "unknown dtype", .hdr = "{" ENT("w", "F8", "[1]", "[0,1]") "}", .data_len = 1,
     .expect = "unknown dtype"},
    {.name = "lower-case dtype", .hdr = "{" ENT("w", "f32", "[1]", "[0,4]") "}", .data_len = 4,
     .expect = "unknown dtype"},
    {.name = "dtype a number", .hdr = "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", .data_len = 4,
     .expect = "unknown dtype"},
    {.name = "missing shape", .hdr = "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", .data_len = 4,
     .expect = "no shape array"},
    {.name = "shape not an array", .hdr = "{" ENT("w", "F32", "4", "[0,4]") "}", .data_len = 4,
     .expect = "no shape array"},
    {.name = "negative dimension", .hdr = "{" ENT("w", "F32", "[2,-1]", "[0,4]") "}", .data_len = 4,
     .expect = "bad dimension 1"},
    {.name = "non-integer dimension", .hdr = "{" ENT("w", "F32", "[1.5]", "[0,4]") "}", .data_len = 4,
     .expect = "bad dimension 0"},
    {.name = "dimension a string", .hdr = "{" ENT("w", "F32", "[\"1\"]", "[0,4]") "}", .data_len = 4,
     .expect = "bad dimension 0"},
    {.name = "dimension beyond 2^53", .hdr = "{" ENT("w", "U8", "[18014398509481984]", "[0,1]") "}", .data_len = 1,
     .expect = "bad dimension 0"},
    {.name = "9 dimensions", .hdr = "{" ENT("w", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", .data_len = 1,
     .expect = "9 dimensions"},
    {.name = "shape product overflow", .hdr = "{" ENT("w", "U8", "[4294967296,4294967296,2]", "[0,1]") "}",
     .data_len = 1, .expect = "shape overflows"},
    {.name = "byte size overflow", .hdr = "{" ENT("w", "F64", "[2147483648,2147483648]", "[0,8]") "}",
     .data_len = 8, .expect = "size overflows"},
    {.name = "missing data_offsets", .hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "data_offsets of length 1", .hdr = "{" ENT("w", "F32", "[1]", "[4]") "}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "data_offsets of length 3", .hdr = "{" ENT("w", "F32", "[1]", "[0,4,4]") "}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "negative data offset", .hdr = "{" ENT("w", "F32", "[1]", "[-4,0]") "}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "fractional data offset", .hdr = "{" ENT("w", "F32", "[1]", "[0,4.5]") "}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "data_offsets an object", .hdr = "{" ENT("w", "F32", "[1]", "{}") "}", .data_len = 4,
     .expect = "bad data_offsets"},
    {.name = "begin > end", .hdr = "{" ENT("w", "F32", "[1]", "[4,0]") "}", .data_len = 4, .expect = "outside"},
    {.name = "end beyond the data", .hdr = "{" ENT("w", "F32", "[2]", "[0,8]") "}", .data_len = 4,
     .expect = "outside the 4-byte data buffer"},
    {.name = "end far beyond the data", .hdr = "{" ENT("w", "F32", "[1]", "[9007199254740988,9007199254740992]") "}",
     .data_len = 4, .expect = "outside"},
    {.name = "size not matching the shape", .hdr = "{" ENT("w", "F32", "[2]", "[0,4]") "}", .data_len = 4,
     .expect = "has 4 bytes of data but its shape needs 8"},
    {.name = "size not matching the dtype", .hdr = "{" ENT("w", "F16", "[2]", "[0,8]") "}", .data_len = 8,
     .expect = "shape needs 4"},
    {.name = "overlapping tensors", .hdr = "{" ENT("a", "F32", "[2]", "[0,8]") "," ENT("b", "F32", "[2]", "[4,12]") "}",
     .data_len = 12, .expect = "overlaps"},
    {.name = "two tensors on the same bytes", .hdr = "{" ENT("a", "F32", "[1]", "[0,4]") "," ENT("b", "F32", "[1]", "[0,4]") "}",
     .data_len = 4, .expect = "overlaps"},
    {.name = "hole between tensors", .hdr = "{" ENT("a", "F32", "[1]", "[0,4]") "," ENT("b", "F32", "[1]", "[8,12]") "}",
     .data_len = 12, .expect = "leaves a hole"},
    {.name = "hole before the first tensor", .hdr = "{" ENT("a", "F32", "[1]", "[4,8]") "}", .data_len = 8,
     .expect = "leaves a hole"},
    {.name = "trailing bytes after the last tensor", .hdr = "{" ENT("a", "F32", "[1]", "[0,4]") "}", .data_len = 8,
     .expect = "4 bytes of data after the last tensor"},
    {.name = "data but no tensors", .hdr = "{}", .data_len = 3, .expect = "3 bytes of data after"},
    {.name = "duplicate tensor name", .hdr = "{" ENT("a", "F32", "[1]", "[0,4]") "," ENT("a", "F32", "[1]", "[4,8]") "}",
     .data_len = 8, .expect = "\"a\" appears twice"},
    {.name = "__metadata__ with a number value", .hdr = "{\"__metadata__\":{\"k\":\"v\",\"n\":1}}",
     .expect = "__metadata__ value \"n\" is not a string"},
    {.name = "__metadata__ with an object value", .hdr = "{\"__metadata__\":{\"k\":{}}}",
     .expect = "is not a string"},
    {.name = "__metadata__ not an object", .hdr = "{\"__metadata__\":\"x\"}", .expect = "__metadata__ is not an object"},
    {.name = "text after the header object", .hdr = "{" ENT("a", "F32", "[1]", "[0,4]") "} {}", .data_len = 4,
     .expect = "not a valid JSON object"},
};

static void expect_rejected(const char *path, alloy_status want, const char *expect, const char *what) {
    alloy_safetensors *st = (alloy_safetensors *)1;
    alloy_status s = alloy_safetensors_open(&st, path);
    EXPECT(s == want, "%s: status %s, expected %s ('%s')", what, alloy_status_name(s), alloy_status_name(want),
           alloy_last_error());
    EXPECT(st == NULL, "%s: out must be NULL on failure", what);
    EXPECT(says(path) && one_line(), "%s: message must name the file on one line: '%s'", what, alloy_last_error());
    if (expect) EXPECT(says(expect), "%s: message '%s' lacks '%s'", what, alloy_last_error(), expect);
    if (s == ALLOY_STATUS_OK) alloy_safetensors_close(st);
}

static void test_st_corrupt(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "bad.safetensors");
    int cases = 0;

    // the file itself
    char *missing = alloy_path_join(dir, "missing.safetensors");
    expect_rejected(missing, ALLOY_STATUS_IO, "No such file", "missing file");
    expect_rejected(dir, ALLOY_STATUS_IO, "folder", "a folder");
    write_bytes(path, "", 0);
    expect_rejected(path, ALLOY_STATUS_FORMAT, "too short", "empty file");
    write_bytes(path, "\x02\0\0\0\0\0\0", 7);
    expect_rejected(path, ALLOY_STATUS_FORMAT, "too short", "7-byte file");
    write_bytes(path, "\x02\0\0\0\0\0\0\0", 8);
    expect_rejected(path, ALLOY_STATUS_FORMAT, "does not fit", "8-byte file");
    cases += 5;

    // the header
    for (size_t i = 0; i < sizeof corrupt_cases / sizeof corrupt_cases[0]; i++) {
        const corrupt_case *c = &corrupt_cases[i];
        size_t hl = c->hdr_len ? c->hdr_len : strlen(c->hdr);
        write_st(path, c->set_len ? c->len : hl, c->hdr, hl, c->data_len);
        expect_rejected(path, ALLOY_STATUS_FORMAT, c->expect, c->name);
        cases++;
    }

    // a valid file (checked), then truncated at points in the length, the header and the data
    float w[6] = {1, 2, 3, 4, 5, 6};
    int32_t ids[3] = {7, 8, 9};
    alloy_st_entry e[] = {{"w", ALLOY_DTYPE_F32, 2, {2, 3}, w}, {"ids", ALLOY_DTYPE_I32, 1, {3}, ids}};
    const char *meta[] = {"k", "v", NULL};
    REQUIRE(alloy_safetensors_write(path, e, 2, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t n;
    uint8_t *good = read_bytes(path, &n);
    REQUIRE(good, "read back");
    alloy_safetensors *st;
    REQUIRE(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "the valid file: %s", alloy_last_error());
    size_t hdr_end = 8 + st->header_size;
    alloy_safetensors_close(st);
    REQUIRE(n == hdr_end + 36, "file of %zu bytes", n);
    size_t cuts[] = {1, 4, 7, 8, 9, 10, 8 + (hdr_end - 8) / 2, hdr_end - 2, hdr_end - 1,
                     hdr_end, hdr_end + 1, hdr_end + 4, hdr_end + 24, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", cuts[i], n);
        write_bytes(path, good, cuts[i]);
        expect_rejected(path, ALLOY_STATUS_FORMAT, cuts[i] > hdr_end ? "truncated" : NULL, what);
        cases++;
    }
    // and at every other byte
    int refused = 0;
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(path, good, cut);
        alloy_safetensors *tst = NULL;
        refused += alloy_safetensors_open(&tst, path) == ALLOY_STATUS_FORMAT && tst == NULL && says(path);
    }
    EXPECT(refused == (int)n, "every truncation must be refused (%d of %zu)", refused, n);
    // space padding is the format's: valid
    write_st(path, 10, "{}        ", 10, 0);
    st = NULL;
    EXPECT(alloy_safetensors_open(&st, path) == ALLOY_STATUS_OK, "space padding refused: %s", alloy_last_error());
    alloy_safetensors_close(st);
    // one byte too many
    uint8_t *longer = malloc(n + 1);
    memcpy(longer, good, n);
    longer[n] = 0;
    write_bytes(path, longer, n + 1);
    expect_rejected(path, ALLOY_STATUS_FORMAT, "1 bytes of data after the last tensor", "one byte appended");
    cases++;
    free(longer);
    free(good);
    EXPECT(cases >= 25, "only %d corrupt cases", cases);
    alloy_free(missing);
    alloy_free(path);
    alloy_free(dir);
}

/* Checks the invariants of an accepted file: every tensor inside the data buffer, sizes
 * consistent, the buffer tiled exactly. Returns the number of violations. */
static int check_accepted(const alloy_safetensors *st) {
    int bad = 0;
    const uint8_t *data = st->map.data + 8 + st->header_size, *end = st->map.data + st->map.size;
    size_t total = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const alloy_st_tensor *t = &st->tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        bad += t->ndim < 0 || t->ndim > ALLOY_ST_MAX_DIMS;
        bad += numel != t->numel || t->nbytes != numel * alloy_dtype_size(t->dtype);
        bad += t->data != data + t->offset || t->offset > (size_t)(end - data) ||
               t->nbytes > (size_t)(end - data) - t->offset;
        bad += t->name == NULL || alloy_safetensors_find(st, t->name) == NULL;
        total += t->nbytes;
    }
    bad += total != (size_t)(end - data);
    return bad;
}

/* Mutates a valid small file a few thousand times (byte changes, digit changes in the header,
 * truncations, insertions, deletions, duplicated spans); the reader must accept or reject
 * each cleanly. Deterministic: one seed. */
static void test_st_fuzz(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "fuzz.safetensors");
    float w[4] = {1, -1, 0.5f, 2};
    uint16_t h[3] = {0x3C00, 0x4000, 0x0001};
    uint8_t flag = 1;
    int64_t step = 42;
    alloy_st_entry e[] = {{"a.weight", ALLOY_DTYPE_F32, 2, {2, 2}, w},
                          {"b", ALLOY_DTYPE_F16, 1, {3}, h},
                          {"flag", ALLOY_DTYPE_BOOL, 0, {0}, &flag},
                          {"step", ALLOY_DTYPE_I64, 1, {1}, &step}};
    const char *meta[] = {"format", "pt", NULL};
    REQUIRE(alloy_safetensors_write(path, e, 4, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t n;
    uint8_t *good = read_bytes(path, &n);
    REQUIRE(good, "read");
    uint8_t *buf = malloc(2 * n + 64);
    size_t hlen = (size_t)good[0] | (size_t)good[1] << 8; // a small header: two bytes of the length
    alloy_rng r;
    alloy_rng_seed(&r, 20240601);
    int accepted = 0, rejected = 0, unclean = 0, broken = 0;
    const int iterations = 3000;
    for (int it = 0; it < iterations; it++) {
        memcpy(buf, good, n);
        size_t len = n;
        int edits = 1 + (int)alloy_rng_below(&r, 3);
        for (int k = 0; k < edits; k++) {
            uint64_t kind = alloy_rng_below(&r, 8);
            size_t pos = len ? (size_t)alloy_rng_below(&r, len) : 0;
            if (kind == 0 && len) { // a random byte
                buf[pos] = (uint8_t)alloy_rng_u64(&r);
            } else if (kind == 1 && len) { // one bit
                buf[pos] ^= (uint8_t)(1u << alloy_rng_below(&r, 8));
            } else if (kind == 2) { // a digit or structural character of the header
                static const char pick[] = "0123456789{}[],:\" -.e";
                size_t hp = 8 + (size_t)alloy_rng_below(&r, hlen);
                if (hp < len) buf[hp] = (uint8_t)pick[alloy_rng_below(&r, sizeof pick - 1)];
            } else if (kind == 3) { // truncation
                len = (size_t)alloy_rng_below(&r, len + 1);
            } else if (kind == 4 && len + 8 <= 2 * n + 64) { // insertion of 1-8 bytes
                size_t m = 1 + (size_t)alloy_rng_below(&r, 8);
                memmove(buf + pos + m, buf + pos, len - pos);
                for (size_t q = 0; q < m; q++) buf[pos + q] = (uint8_t)alloy_rng_u64(&r);
                len += m;
            } else if (kind == 5 && len) { // deletion of 1-8 bytes
                size_t m = 1 + (size_t)alloy_rng_below(&r, 8);
                if (m > len - pos) m = len - pos;
                memmove(buf + pos, buf + pos + m, len - pos - m);
                len -= m;
            } else if (kind == 6 && len) { // the length field itself
                buf[(size_t)alloy_rng_below(&r, len < 8 ? len : 8)] = (uint8_t)alloy_rng_u64(&r);
            } else if (kind == 7 && len && len + 16 <= 2 * n + 64) { // a span copied elsewhere
                size_t m = 1 + (size_t)alloy_rng_below(&r, 16), from = (size_t)alloy_rng_below(&r, len);
                if (m > len - from) m = len - from;
                uint8_t span[16];
                memcpy(span, buf + from, m);
                memmove(buf + pos + m, buf + pos, len - pos);
                memcpy(buf + pos, span, m);
                len += m;
            }
        }
        write_bytes(path, buf, len);
        alloy_safetensors *st = NULL;
        alloy_status s = alloy_safetensors_open(&st, path);
        if (s == ALLOY_STATUS_OK) {
            accepted++;
            int v = check_accepted(st);
            if (v && broken++ < 3) EXPECT(0, "iteration %d: accepted a file that breaks %d invariants", it, v);
            // convert every float tensor (reads every byte it claims)
            for (int i = 0; i < st->n_tensors; i++) {
                const alloy_st_tensor *t = &st->tensors[i];
                if (t->dtype != ALLOY_DTYPE_F32 && t->dtype != ALLOY_DTYPE_F16 && t->dtype != ALLOY_DTYPE_BF16) continue;
                float *out = malloc(sizeof(float) * (t->numel ? t->numel : 1));
                alloy_st_tensor_to_f32(st, t, out);
                free(out);
            }
            alloy_safetensors_close(st);
        } else {
            rejected++;
            if ((s != ALLOY_STATUS_FORMAT || st != NULL || !says(path) || !one_line()) && unclean++ < 5)
                EXPECT(0, "iteration %d: unclean rejection: status %s '%s'", it, alloy_status_name(s),
                       alloy_last_error());
        }
    }
    EXPECT(unclean == 0 && broken == 0, "%d unclean rejections, %d broken acceptances", unclean, broken);
    EXPECT(accepted > 50 && rejected > iterations / 2, "accepted %d, rejected %d: the mutations miss", accepted,
           rejected);
    printf("# fuzz: %d mutated files, %d accepted, %d rejected\n", iterations, accepted, rejected);
    free(buf);
    free(good);
    alloy_free(path);
    alloy_free(dir);
}

/* Every allocation of open and write fails in turn: NOMEM, no leak (ASan), no stray files. */
static void test_st_oom(void) {
    char *dir = copy_tmpdir();
    char *path = alloy_path_join(dir, "oom.safetensors");
    float w[2] = {1, 2};
    alloy_st_entry e[] = {{"a", ALLOY_DTYPE_F32, 1, {2}, w}, {"b", ALLOY_DTYPE_F32, 1, {2}, w}};
    REQUIRE(alloy_safetensors_write(path, e, 2, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int fails = 0, k;
    for (k = 1; k < 50; k++) {
        alloy_safetensors *st = NULL;
        alloy_alloc_fail_after(k);
        alloy_status s = alloy_safetensors_open(&st, path);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) {
            EXPECT(st && st->n_tensors == 2, "open after %d allocations", k);
            alloy_safetensors_close(st);
            break;
        }
        fails += s == ALLOY_STATUS_NOMEM && st == NULL;
        EXPECT(s == ALLOY_STATUS_NOMEM, "open, allocation %d: status %s '%s'", k, alloy_status_name(s),
               alloy_last_error());
    }
    EXPECT(fails >= 4 && fails == k - 1, "open: %d clean failures of %d", fails, k - 1);

    char *other = alloy_path_join(dir, "new.safetensors");
    fails = 0;
    for (k = 1; k < 50; k++) {
        alloy_alloc_fail_after(k);
        alloy_status s = alloy_safetensors_write(other, e, 2, NULL);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) break;
        fails += s == ALLOY_STATUS_NOMEM;
        EXPECT(s == ALLOY_STATUS_NOMEM, "write, allocation %d: status %s", k, alloy_status_name(s));
        EXPECT(harness_count_entries(dir) == 1, "write, allocation %d: %d files left", k, harness_count_entries(dir));
    }
    EXPECT(fails >= 1 && fails == k - 1, "write: %d clean failures of %d", fails, k - 1);
    alloy_free(other);
    alloy_free(path);
    alloy_free(dir);
}

int main(void) {
    RUN(test_st_roundtrip);
    RUN(test_st_half_conversion);
    RUN(test_st_corrupt);
    RUN(test_st_fuzz);
    RUN(test_st_oom);
    return harness_exit();
}
