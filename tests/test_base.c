/*
 * test_base.c — errors, allocation (with failure injection), RNG, files and atomic writes,
 * JSON helpers, durations, hashing.
 */
#include "alloy/base.h"
#include "harness.h"

#include <cJSON.h>
#include <dirent.h>
#include <math.h>

static void test_errors(void) {
    alloy_status s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: bad %d", "f.bin", 3);
    EXPECT(s == ALLOY_STATUS_FORMAT && !strcmp(alloy_last_error(), "f.bin: bad 3"), "'%s'", alloy_last_error());
    alloy_error_prefix("loading %s", "x");
    EXPECT(!strcmp(alloy_last_error(), "loading x: f.bin: bad 3"), "'%s'", alloy_last_error());
    EXPECT(!strcmp(alloy_status_name(ALLOY_STATUS_IO), "io"), "status name");
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    alloy_fail(ALLOY_STATUS_IO, "%s", big);
    EXPECT(strlen(alloy_last_error()) < 1024, "messages are truncated, not overflowed");
}

static void test_alloc(void) {
    void *p = alloy_malloc(100);
    EXPECT(p && ((uintptr_t)p % 64) == 0, "64-byte alignment");
    alloy_free(p);
    size_t r;
    EXPECT(!alloy_mul_size(SIZE_MAX / 2, 3, &r), "overflow detected");
    EXPECT(alloy_mul_size(1u << 20, 1u << 10, &r) && r == (size_t)1 << 30, "product");
    EXPECT(alloy_calloc(SIZE_MAX / 4, 8) == NULL && strstr(alloy_last_error(), "overflows"), "calloc overflow");
    alloy_alloc_fail_after(2);
    void *a = alloy_malloc(8), *b = alloy_malloc(8), *c = alloy_malloc(8);
    alloy_alloc_fail_after(0);
    EXPECT(a && !b && !c, "the 2nd allocation and every later one fail (%p %p %p)", a, b, c);
    EXPECT(strstr(alloy_last_error(), "out of memory"), "message '%s'", alloy_last_error());
    void *d = alloy_malloc(8);
    EXPECT(d != NULL, "injection off again");
    alloy_free(a);
    alloy_free(d);
    char *s = alloy_strdup("hello");
    EXPECT(s && !strcmp(s, "hello"), "strdup");
    s = alloy_realloc(s, 6, 1000);
    EXPECT(s && !strcmp(s, "hello"), "realloc keeps content");
    alloy_free(s);
}

static void test_rng(void) {
    alloy_rng a, b, c;
    alloy_rng_seed(&a, 1);
    alloy_rng_seed(&b, 1);
    alloy_rng_seed(&c, 2);
    int same = 0, diff = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = alloy_rng_u64(&a), y = alloy_rng_u64(&b), z = alloy_rng_u64(&c);
        same += x == y;
        diff += x != z;
    }
    EXPECT(same == 100 && diff == 100, "seeded streams: %d same, %d differ", same, diff);
    // a saved state resumes the stream
    alloy_rng saved = a;
    uint64_t next = alloy_rng_u64(&a);
    EXPECT(alloy_rng_u64(&saved) == next, "state copy resumes");
    // below(n): chi-square over 10 bins, 1e5 draws (99.9% critical value for 9 dof: 27.9)
    long bins[10] = {0};
    for (int i = 0; i < 100000; i++) bins[alloy_rng_below(&a, 10)]++;
    double chi = 0;
    for (int k = 0; k < 10; k++) chi += (bins[k] - 1e4) * (bins[k] - 1e4) / 1e4;
    EXPECT(chi < 27.9, "chi-square %.2f", chi);
    EXPECT(alloy_rng_below(&a, 1) == 0, "below(1)");
    double sum = 0, sq = 0, umin = 1, umax = 0;
    for (int i = 0; i < 100000; i++) {
        double g = alloy_rng_normal(&a), u = alloy_rng_uniform(&a);
        sum += g;
        sq += g * g;
        umin = u < umin ? u : umin;
        umax = u > umax ? u : umax;
    }
    double mean = sum / 1e5, var = sq / 1e5 - mean * mean;
    EXPECT(fabs(mean) < 0.02 && fabs(var - 1) < 0.02, "normal mean %.4f var %.4f", mean, var);
    EXPECT(umin >= 0 && umax < 1, "uniform in [0,1)");
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_files(void) {
    const char *dir = harness_tmpdir();
    char *p = alloy_path_join(dir, "f.txt");
    REQUIRE(alloy_write_file_atomic(p, "one", 3) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_write_file_atomic(p, "second", 6) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *text;
    size_t n;
    REQUIRE(alloy_file_read_all(p, &text, &n) == ALLOY_STATUS_OK, "read");
    EXPECT(n == 6 && !strcmp(text, "second"), "replaced: '%s'", text);
    alloy_free(text);
    alloy_atomic_file f;
    REQUIRE(alloy_atomic_open(&f, p) == ALLOY_STATUS_OK, "open");
    alloy_atomic_printf(&f, "never %d", 1);
    alloy_atomic_abort(&f);
    alloy_file_read_all(p, &text, &n);
    EXPECT(!strcmp(text, "second"), "abort leaves the old content");
    alloy_free(text);
    EXPECT(count_entries(dir) == 1, "no temporary file left behind (%d entries)", count_entries(dir));
    char *deep = alloy_path_join(dir, "no/such/folder/f");
    EXPECT(alloy_write_file_atomic(deep, "x", 1) == ALLOY_STATUS_IO && strstr(alloy_last_error(), deep), "%s",
           alloy_last_error());
    char *made = alloy_path_join(dir, "a/b/c");
    EXPECT(alloy_mkdir_p(made) == ALLOY_STATUS_OK && alloy_is_dir(made), "mkdir -p");
    EXPECT(alloy_mkdir_p(made) == ALLOY_STATUS_OK, "mkdir -p twice");
    EXPECT(alloy_mkdir_p(p) == ALLOY_STATUS_IO, "mkdir over a file");
    alloy_file_map m;
    char *missing = alloy_path_join(dir, "missing");
    EXPECT(alloy_file_map_open(&m, missing) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "missing: cannot open"), "%s",
           alloy_last_error());
    EXPECT(alloy_file_map_open(&m, dir) == ALLOY_STATUS_IO && strstr(alloy_last_error(), "is a folder"), "%s",
           alloy_last_error());
    char *empty = alloy_path_join(dir, "empty");
    alloy_write_file_atomic(empty, "", 0);
    EXPECT(alloy_file_map_open(&m, empty) == ALLOY_STATUS_OK && m.size == 0 && m.data == NULL, "empty file maps");
    alloy_file_map_close(&m);
    char *j = alloy_path_join("a/", "b");
    EXPECT(!strcmp(j, "a/b"), "join '%s'", j);
    alloy_free(j);
    alloy_free(p);
    alloy_free(deep);
    alloy_free(made);
    alloy_free(missing);
    alloy_free(empty);
}

static void test_json(void) {
    const char *dir = harness_tmpdir();
    char *p = alloy_path_join(dir, "c.json");
    const char *doc = "{\"a\": 3, \"b\": 2.5, \"s\": \"x\", \"t\": true, \"n\": null}";
    alloy_write_file_atomic(p, doc, strlen(doc));
    cJSON *j;
    REQUIRE(alloy_json_read_file(p, &j) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int64_t i = 0;
    double d = 0;
    const char *s = NULL;
    bool b = false;
    EXPECT(alloy_json_get_int(j, "a", "c.json", &i) == ALLOY_STATUS_OK && i == 3, "int");
    EXPECT(alloy_json_get_double(j, "b", "c.json", &d) == ALLOY_STATUS_OK && d == 2.5, "double");
    EXPECT(alloy_json_get_string(j, "s", "c.json", &s) == ALLOY_STATUS_OK && !strcmp(s, "x"), "string");
    EXPECT(alloy_json_get_bool(j, "t", "c.json", &b) == ALLOY_STATUS_OK && b, "bool");
    EXPECT(alloy_json_get_int(j, "b", "c.json", &i) == ALLOY_STATUS_FORMAT &&
               !strcmp(alloy_last_error(), "c.json: field \"b\" must be an integer"),
           "'%s'", alloy_last_error());
    EXPECT(alloy_json_get_int(j, "s", "c.json", &i) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "must be a number"),
           "type");
    EXPECT(alloy_json_get_string(j, "zz", "c.json", &s) == ALLOY_STATUS_FORMAT &&
               strstr(alloy_last_error(), "missing field \"zz\""),
           "missing");
    i = 77;
    EXPECT(alloy_json_opt_int(j, "n", "c.json", &i) == ALLOY_STATUS_OK && i == 77, "null optional leaves the default");
    EXPECT(alloy_json_opt_int(j, "zz", "c.json", &i) == ALLOY_STATUS_OK && i == 77, "absent optional");
    cJSON_Delete(j);
    alloy_write_file_atomic(p, "{\"a\": [1, 2", 11);
    EXPECT(alloy_json_read_file(p, &j) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), p) &&
               strstr(alloy_last_error(), "invalid JSON"),
           "'%s'", alloy_last_error());
    alloy_write_file_atomic(p, "{}\0{}", 5);
    EXPECT(alloy_json_read_file(p, &j) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "NUL"), "NUL byte");
    alloy_free(p);
}

static void test_misc(void) {
    char buf[32];
    alloy_format_duration(5.2, buf, sizeof buf);
    EXPECT(!strcmp(buf, "5s"), "'%s'", buf);
    alloy_format_duration(185, buf, sizeof buf);
    EXPECT(!strcmp(buf, "3m05s"), "'%s'", buf);
    alloy_format_duration(3720, buf, sizeof buf);
    EXPECT(!strcmp(buf, "1h02m"), "'%s'", buf);
    alloy_format_duration(NAN, buf, sizeof buf);
    EXPECT(!strcmp(buf, "?"), "'%s'", buf);
    EXPECT(alloy_fnv64(ALLOY_FNV64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL, "FNV-1a 64 of \"a\"");
    EXPECT(alloy_fnv64(ALLOY_FNV64_INIT, "", 0) == ALLOY_FNV64_INIT, "FNV of nothing");
    double t0 = alloy_time_now(), t1 = alloy_time_now();
    EXPECT(t1 >= t0, "monotonic clock");
}

int main(void) {
    RUN(test_errors);
    RUN(test_alloc);
    RUN(test_rng);
    RUN(test_files);
    RUN(test_json);
    RUN(test_misc);
    return harness_exit();
}
