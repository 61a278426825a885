/*
 * test_base.c — the bottom layer: errors, RNG streams and distributions, size overflow,
 * allocation and its failure injection, atomic writes, folders, memory maps, JSON files and
 * typed getters, durations and the clock, FNV-1a.
 */
#include "alloy/base.h"
#include "harness.h"

#include <cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- helpers ---------------------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ALLOY_ASSERT(f);
    fputs(text, f);
    ALLOY_ASSERT(fclose(f) == 0);
}

/* The whole file as a NUL-terminated string (alloy_free it), or NULL if unreadable. */
static char *slurp(const char *path) {
    char *text = NULL;
    if (alloy_file_read_all(path, &text, NULL) != ALLOY_STATUS_OK) return NULL;
    return text;
}

/* ---- errors ----------------------------------------------------------------------------- */

static void test_errors(void) {
    alloy_status s = alloy_fail(ALLOY_STATUS_RANGE, "token %d", 5);
    EXPECT(s == ALLOY_STATUS_RANGE && !strcmp(alloy_last_error(), "token 5"), "fail: '%s'", alloy_last_error());
    alloy_error_prefix("file %s", "x.bin");
    EXPECT(!strcmp(alloy_last_error(), "file x.bin: token 5"), "prefix: '%s'", alloy_last_error());
    // long messages are cut, not overflowed
    char longs[3000];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    alloy_fail(ALLOY_STATUS_IO, "%s", longs);
    EXPECT(strlen(alloy_last_error()) < 1024, "message length %zu", strlen(alloy_last_error()));
    alloy_error_prefix("%s", longs);
    EXPECT(strlen(alloy_last_error()) < 1024, "prefixed message length %zu", strlen(alloy_last_error()));
    EXPECT(!strcmp(alloy_status_name(ALLOY_STATUS_FORMAT), "format") && !strcmp(alloy_status_name(ALLOY_STATUS_OK), "ok") &&
               !strcmp(alloy_status_name(ALLOY_STATUS_NOMEM), "nomem"),
           "status names");
    EXPECT(!strcmp(alloy_status_name((alloy_status)99), "unknown"), "unknown status name");
}

/* ---- random numbers --------------------------------------------------------------------- */

static void test_rng_streams(void) {
    alloy_rng a, b, c;
    alloy_rng_seed(&a, 1337);
    alloy_rng_seed(&b, 1337);
    alloy_rng_seed(&c, 1338);
    int same = 0, diff_seed_equal = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = alloy_rng_u64(&a), y = alloy_rng_u64(&b), z = alloy_rng_u64(&c);
        same += x == y;
        diff_seed_equal += x == z;
    }
    EXPECT(same == 1000, "one seed must give one stream (%d of 1000 equal)", same);
    EXPECT(diff_seed_equal == 0, "seeds 1337 and 1338 share %d of 1000 values", diff_seed_equal);

    // the state is the four words: a copy resumes exactly
    alloy_rng saved = a;
    uint64_t want[16];
    for (int i = 0; i < 16; i++) want[i] = alloy_rng_u64(&a);
    int resumed = 0;
    for (int i = 0; i < 16; i++) resumed += alloy_rng_u64(&saved) == want[i];
    EXPECT(resumed == 16, "a copied state must resume the stream (%d of 16)", resumed);

    // seed 0 is a valid seed (splitmix64 keeps the state nonzero)
    alloy_rng z;
    alloy_rng_seed(&z, 0);
    EXPECT(z.s[0] | z.s[1] | z.s[2] | z.s[3], "seed 0 gave an all-zero state");
    uint64_t first = alloy_rng_u64(&z);
    int repeats = 0;
    for (int i = 0; i < 100; i++) repeats += alloy_rng_u64(&z) == first;
    EXPECT(repeats == 0, "seed 0 stream repeats its first value %d times", repeats);

    // uniform doubles lie in [0, 1)
    alloy_rng u;
    alloy_rng_seed(&u, 7);
    double lo = 1, hi = 0, sum = 0;
    for (int i = 0; i < 100000; i++) {
        double x = alloy_rng_uniform(&u);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
    }
    EXPECT(lo >= 0.0 && hi < 1.0, "uniform out of [0, 1): min %g max %g", lo, hi);
    EXPECT(fabs(sum / 100000 - 0.5) < 0.01, "uniform mean %g", sum / 100000);
}

/* Pearson chi-square of observed counts against equal expected counts. */
static double chi_square(const long *counts, int k, long total) {
    double e = (double)total / k, chi = 0;
    for (int i = 0; i < k; i++) chi += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
    return chi;
}

static void test_rng_below(void) {
    alloy_rng r;
    alloy_rng_seed(&r, 42);
    // small n: ten buckets, 1e5 draws; chi-square has 9 degrees of freedom (mean 9, sd 4.2;
    // 99.9% point 27.9): a loose bound of 40
    long counts[10] = {0};
    int out_of_range = 0;
    for (long i = 0; i < 100000; i++) {
        uint64_t v = alloy_rng_below(&r, 10);
        if (v >= 10) out_of_range++;
        else counts[v]++;
    }
    EXPECT(out_of_range == 0, "%d values >= 10", out_of_range);
    double chi = chi_square(counts, 10, 100000);
    EXPECT(chi < 40.0, "rng_below(10) chi-square %g (9 dof)", chi);

    // n = 3·2^62 + 1: a plain u64 % n would put half the mass in the first third
    const uint64_t n = 0xC000000000000001ULL;
    long thirds[3] = {0};
    for (long i = 0; i < 30000; i++) {
        uint64_t v = alloy_rng_below(&r, n);
        if (v >= n) out_of_range++;
        int b = (int)(v >> 62);
        thirds[b > 2 ? 2 : b]++;
    }
    EXPECT(out_of_range == 0, "%d values >= n", out_of_range);
    chi = chi_square(thirds, 3, 30000);
    EXPECT(chi < 30.0, "rng_below(3·2^62+1) chi-square %g (2 dof): %ld %ld %ld", chi, thirds[0], thirds[1], thirds[2]);

    // n = 1 is always 0; n = 2^64-1 stays below n
    int bad = 0;
    for (int i = 0; i < 100; i++) bad += alloy_rng_below(&r, 1) != 0;
    for (int i = 0; i < 100; i++) bad += alloy_rng_below(&r, UINT64_MAX) == UINT64_MAX;
    EXPECT(bad == 0, "%d out-of-range values for n = 1 or 2^64-1", bad);
}

static void test_rng_normal(void) {
    alloy_rng r;
    alloy_rng_seed(&r, 2024);
    const int N = 100000;
    double sum = 0, sum2 = 0;
    int within1 = 0, finite = 0;
    for (int i = 0; i < N; i++) {
        double x = alloy_rng_normal(&r);
        finite += isfinite(x) != 0;
        sum += x;
        sum2 += x * x;
        within1 += fabs(x) < 1.0;
    }
    double mean = sum / N, var = sum2 / N - mean * mean;
    EXPECT(finite == N, "%d non-finite draws", N - finite);
    EXPECT(fabs(mean) < 0.02, "normal mean %g (sd of the mean 0.003)", mean);
    EXPECT(fabs(var - 1.0) < 0.03, "normal variance %g", var);
    EXPECT(fabs((double)within1 / N - 0.6827) < 0.01, "P(|x| < 1) = %g, expected 0.683", (double)within1 / N);
}

/* ---- sizes and allocation --------------------------------------------------------------- */

static void test_mul_size(void) {
    size_t out = 12345;
    EXPECT(alloy_mul_size(3, 5, &out) && out == 15, "3 x 5 = %zu", out);
    EXPECT(alloy_mul_size(0, SIZE_MAX, &out) && out == 0, "0 x max = %zu", out);
    EXPECT(alloy_mul_size(SIZE_MAX, 1, &out) && out == SIZE_MAX, "max x 1");
    out = 777;
    EXPECT(!alloy_mul_size(SIZE_MAX, 2, &out), "max x 2 must overflow");
    EXPECT(!alloy_mul_size((size_t)1 << 32, (size_t)1 << 32, &out), "2^32 x 2^32 must overflow");
    EXPECT(!alloy_mul_size(SIZE_MAX / 3 + 1, 3, &out), "(max/3 + 1) x 3 must overflow");
    EXPECT(out == 777, "an overflow must leave *out alone (%zu)", out);
    EXPECT(alloy_mul_size(SIZE_MAX / 3, 3, &out) && out == SIZE_MAX / 3 * 3, "(max/3) x 3");
}

static void test_alloc(void) {
    // 64-byte alignment, zeroed calloc, realloc keeps the prefix
    void *p = alloy_malloc(10), *z = alloy_calloc(7, 9), *e = alloy_malloc(0);
    REQUIRE(p && z && e, "small allocations failed: %s", alloy_last_error());
    EXPECT(((uintptr_t)p & 63) == 0 && ((uintptr_t)z & 63) == 0, "allocations must be 64-byte aligned");
    int nonzero = 0;
    for (int i = 0; i < 63; i++) nonzero += ((unsigned char *)z)[i] != 0;
    EXPECT(nonzero == 0, "calloc left %d nonzero bytes", nonzero);
    memcpy(p, "abcdefghi", 10);
    char *q = alloy_realloc(p, 10, 100);
    REQUIRE(q, "realloc");
    EXPECT(!strcmp(q, "abcdefghi"), "realloc lost the content: %s", q);
    alloy_free(q);
    alloy_free(z);
    alloy_free(e);
    alloy_free(NULL);
    char *dup = alloy_strdup("hello");
    EXPECT(dup && !strcmp(dup, "hello"), "strdup");
    alloy_free(dup);

    // impossible sizes fail with a message instead of wrapping around
    EXPECT(alloy_calloc(SIZE_MAX / 2, 4) == NULL && says("overflows"), "calloc overflow: '%s'", alloy_last_error());
    EXPECT(alloy_malloc(SIZE_MAX - 10) == NULL && says("too large"), "malloc of 2^64-11: '%s'", alloy_last_error());

    // injection: the first allocation fails, and every one after it, until turned off
    alloy_alloc_fail_after(1);
    void *a = alloy_malloc(16);
    void *b = alloy_calloc(2, 8);
    char *s = alloy_strdup("x");
    alloy_alloc_fail_after(0);
    EXPECT(a == NULL && b == NULL && s == NULL, "injected failures must return NULL (%p %p %p)", a, (void *)b,
           (void *)s);
    EXPECT(says("out of memory") && says("injected"), "message '%s'", alloy_last_error());
    alloy_free(a);
    alloy_free(b);
    alloy_free(s);

    // the third allocation from now fails; the first two succeed
    alloy_alloc_fail_after(3);
    void *c1 = alloy_malloc(8), *c2 = alloy_malloc(8), *c3 = alloy_malloc(8), *c4 = alloy_malloc(8);
    alloy_alloc_fail_after(0);
    EXPECT(c1 && c2 && !c3 && !c4, "fail_after(3): %p %p %p %p", c1, c2, c3, c4);
    alloy_free(c1);
    alloy_free(c2);

    // off again: allocation works
    void *ok = alloy_malloc(1 << 20);
    EXPECT(ok != NULL, "allocation after turning injection off: %s", alloy_last_error());
    alloy_free(ok);

    // functions that allocate report NOMEM when their allocation fails
    const char *dir = harness_tmpdir();
    char *path = alloy_path_join(dir, "f.txt");
    write_text(path, "hello");
    char *text = (char *)1;
    alloy_alloc_fail_after(1);
    alloy_status st = alloy_file_read_all(path, &text, NULL);
    alloy_alloc_fail_after(0);
    EXPECT(st == ALLOY_STATUS_NOMEM && text == NULL, "read_all under OOM: status %d", st);
    alloy_alloc_fail_after(1);
    alloy_atomic_file af;
    st = alloy_atomic_open(&af, path);
    alloy_alloc_fail_after(0);
    EXPECT(st == ALLOY_STATUS_NOMEM, "atomic_open under OOM: status %d", st);
    alloy_alloc_fail_after(1);
    cJSON *j = (cJSON *)1;
    st = alloy_json_read_file(path, &j);
    alloy_alloc_fail_after(0);
    EXPECT(st == ALLOY_STATUS_NOMEM && j == NULL, "json_read_file under OOM: status %d", st);
    alloy_alloc_fail_after(1);
    st = alloy_mkdir_p(dir);
    alloy_alloc_fail_after(0);
    EXPECT(st == ALLOY_STATUS_NOMEM, "mkdir_p under OOM: status %d", st);
    EXPECT(harness_count_entries(dir) == 1, "the OOM paths left %d entries", harness_count_entries(dir));
    alloy_free(path);
}

/* ---- files ------------------------------------------------------------------------------ */

static void test_atomic_write(void) {
    char *dir = alloy_strdup(harness_tmpdir());
    char *path = alloy_path_join(dir, "data.txt");

    EXPECT(alloy_write_file_atomic(path, "first", 5) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *t = slurp(path);
    EXPECT(t && !strcmp(t, "first"), "content '%s'", t ? t : "(null)");
    alloy_free(t);

    // replace
    EXPECT(alloy_write_file_atomic(path, "second version", 14) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    t = slurp(path);
    EXPECT(t && !strcmp(t, "second version"), "content after replace '%s'", t ? t : "(null)");
    alloy_free(t);
    EXPECT(harness_count_entries(dir) == 1, "folder holds %d entries after two writes", harness_count_entries(dir));

    // a zero-byte file
    char *empty = alloy_path_join(dir, "empty");
    EXPECT(alloy_write_file_atomic(empty, "", 0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    struct stat sb;
    EXPECT(stat(empty, &sb) == 0 && sb.st_size == 0, "empty file");
    unlink(empty);
    alloy_free(empty);

    // abort: old content stays, no temporary file is left behind
    alloy_atomic_file f;
    REQUIRE(alloy_atomic_open(&f, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_atomic_write(&f, "half-written", 12) == ALLOY_STATUS_OK, "write");
    EXPECT(alloy_atomic_printf(&f, " %d", 42) == ALLOY_STATUS_OK, "printf");
    EXPECT(harness_count_entries(dir) == 2, "while writing: %d entries (target + temp)", harness_count_entries(dir));
    alloy_atomic_abort(&f);
    t = slurp(path);
    EXPECT(t && !strcmp(t, "second version"), "abort changed the file: '%s'", t ? t : "(null)");
    alloy_free(t);
    EXPECT(harness_count_entries(dir) == 1, "abort left %d entries", harness_count_entries(dir));

    // printf then commit
    REQUIRE(alloy_atomic_open(&f, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_atomic_printf(&f, "n=%d s=%s", 7, "x");
    EXPECT(alloy_atomic_commit(&f) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    t = slurp(path);
    EXPECT(t && !strcmp(t, "n=7 s=x"), "printf content '%s'", t ? t : "(null)");
    alloy_free(t);

    // a path in a missing folder: IO error naming the path, nothing created
    char *missing = alloy_path_join(dir, "no/such/folder/file.txt");
    alloy_status s = alloy_write_file_atomic(missing, "x", 1);
    EXPECT(s == ALLOY_STATUS_IO && says(missing), "missing folder: status %d '%s'", s, alloy_last_error());
    alloy_free(missing);

    // the folder disappears between open and commit: the rename fails, IO naming the path
    char *sub = alloy_path_join(dir, "sub"), *moved = alloy_path_join(dir, "moved");
    char *inner = alloy_path_join(sub, "x.txt");
    REQUIRE(alloy_mkdir_p(sub) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_atomic_open(&f, inner) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_atomic_write(&f, "abc", 3);
    REQUIRE(rename(sub, moved) == 0, "rename folder");
    s = alloy_atomic_commit(&f);
    EXPECT(s == ALLOY_STATUS_IO && says(inner), "commit into a vanished folder: status %d '%s'", s,
           alloy_last_error());
    EXPECT(!alloy_path_exists(inner), "the target must not exist");
    alloy_free(sub);
    alloy_free(moved);
    alloy_free(inner);

    // a target that is a folder cannot be replaced: error, the folder stays, no temp file
    char *target_dir = alloy_path_join(dir, "adir");
    REQUIRE(alloy_mkdir_p(target_dir) == ALLOY_STATUS_OK, "mkdir");
    s = alloy_write_file_atomic(target_dir, "x", 1);
    EXPECT(s == ALLOY_STATUS_IO && says(target_dir), "replacing a folder: status %d '%s'", s, alloy_last_error());
    EXPECT(alloy_is_dir(target_dir), "the folder must survive");
    alloy_free(target_dir);
    EXPECT(harness_count_entries(dir) == 3, "leftover temporary files: %d entries (want data.txt, moved, adir)",
           harness_count_entries(dir));
    t = slurp(path);
    EXPECT(t && !strcmp(t, "n=7 s=x"), "the earlier file changed: '%s'", t ? t : "(null)");
    alloy_free(t);
    alloy_free(path);
    alloy_free(dir);
}

static void test_mkdir_p(void) {
    char *dir = alloy_strdup(harness_tmpdir());
    char *deep = alloy_path_join(dir, "a/b/c/d");
    EXPECT(alloy_mkdir_p(deep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_is_dir(deep), "a/b/c/d not created");
    EXPECT(alloy_mkdir_p(deep) == ALLOY_STATUS_OK, "an existing folder is fine: %s", alloy_last_error());
    char *slash = alloy_path_join(dir, "a/b/e/");
    EXPECT(alloy_mkdir_p(slash) == ALLOY_STATUS_OK && alloy_is_dir(slash), "trailing slash: %s", alloy_last_error());

    // a regular file in the way
    char *file = alloy_path_join(dir, "file");
    write_text(file, "x");
    alloy_status s = alloy_mkdir_p(file);
    EXPECT(s == ALLOY_STATUS_IO && says(file) && says("not a folder"), "file as folder: %d '%s'", s,
           alloy_last_error());
    char *under = alloy_path_join(dir, "file/sub");
    s = alloy_mkdir_p(under);
    EXPECT(s == ALLOY_STATUS_IO && says(file), "folder under a file: %d '%s'", s, alloy_last_error());
    EXPECT(alloy_path_exists(file) && !alloy_is_dir(file), "the file must stay a file");
    EXPECT(alloy_mkdir_p("") == ALLOY_STATUS_IO, "an empty path");

    // path helpers
    char *j1 = alloy_path_join("a", "b"), *j2 = alloy_path_join("a/", "b"), *j3 = alloy_path_join("", "b");
    EXPECT(!strcmp(j1, "a/b") && !strcmp(j2, "a/b") && !strcmp(j3, "b"), "join: %s %s %s", j1, j2, j3);
    alloy_free(j1);
    alloy_free(j2);
    alloy_free(j3);
    EXPECT(alloy_fsync_dir(dir) == ALLOY_STATUS_OK, "fsync_dir: %s", alloy_last_error());
    EXPECT(alloy_fsync_dir(file) == ALLOY_STATUS_IO && says(file), "fsync_dir of a file: '%s'", alloy_last_error());

    // remove_dir removes one level of files
    char *rm = alloy_path_join(dir, "rm"), *rmf = alloy_path_join(dir, "rm/f");
    REQUIRE(alloy_mkdir_p(rm) == ALLOY_STATUS_OK, "mkdir");
    write_text(rmf, "x");
    EXPECT(alloy_remove_dir(rm) == ALLOY_STATUS_OK && !alloy_path_exists(rm), "remove_dir: %s", alloy_last_error());
    EXPECT(alloy_remove_dir(rm) == ALLOY_STATUS_IO && says(rm), "remove_dir of a missing folder: '%s'",
           alloy_last_error());
    alloy_free(rm);
    alloy_free(rmf);
    alloy_free(deep);
    alloy_free(slash);
    alloy_free(file);
    alloy_free(under);
    alloy_free(dir);
}

static void test_file_map(void) {
    char *dir = alloy_strdup(harness_tmpdir());
    alloy_file_map m = {(const uint8_t *)1, 99};

    char *missing = alloy_path_join(dir, "missing.bin");
    alloy_status s = alloy_file_map_open(&m, missing);
    EXPECT(s == ALLOY_STATUS_IO && says(missing) && says("No such file"), "missing: %d '%s'", s, alloy_last_error());
    EXPECT(m.data == NULL && m.size == 0, "failed open must clear the map");

    s = alloy_file_map_open(&m, dir);
    EXPECT(s == ALLOY_STATUS_IO && says(dir) && says("is a folder"), "folder: %d '%s'", s, alloy_last_error());

    char *empty = alloy_path_join(dir, "empty.bin");
    write_text(empty, "");
    s = alloy_file_map_open(&m, empty);
    EXPECT(s == ALLOY_STATUS_OK && m.data == NULL && m.size == 0, "empty file: %d size %zu", s, m.size);
    alloy_file_map_close(&m);

    char *full = alloy_path_join(dir, "full.bin");
    write_text(full, "0123456789");
    s = alloy_file_map_open(&m, full);
    EXPECT(s == ALLOY_STATUS_OK && m.size == 10 && m.data && !memcmp(m.data, "0123456789", 10), "map of 10 bytes");
    alloy_file_map_close(&m);
    EXPECT(m.data == NULL && m.size == 0, "close must clear the map");
    alloy_file_map_close(&m); // twice is harmless

    // whole-file reads
    char *text = NULL;
    size_t n = 0;
    s = alloy_file_read_all(missing, &text, &n);
    EXPECT(s == ALLOY_STATUS_IO && text == NULL && says(missing), "read_all missing: '%s'", alloy_last_error());
    s = alloy_file_read_all(dir, &text, &n);
    EXPECT(s == ALLOY_STATUS_IO && text == NULL && says(dir), "read_all folder: %d '%s'", s, alloy_last_error());
    // a file larger than the first buffer grows it
    char *big = alloy_path_join(dir, "big.txt");
    FILE *f = fopen(big, "wb");
    for (int i = 0; i < 3000; i++) fprintf(f, "%04d\n", i);
    fclose(f);
    s = alloy_file_read_all(big, &text, &n);
    EXPECT(s == ALLOY_STATUS_OK && n == 15000 && strlen(text) == 15000 && !strncmp(text + 14995, "2999\n", 5),
           "read_all of 15000 bytes: %d n %zu", s, n);
    alloy_free(text);
    alloy_free(missing);
    alloy_free(empty);
    alloy_free(full);
    alloy_free(big);
    alloy_free(dir);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static void test_json_files(void) {
    char *dir = alloy_strdup(harness_tmpdir());
    char *path = alloy_path_join(dir, "c.json");
    const char *bad[] = {"{\"a\": 1,", "{\"a\": }", "", "{} trailing", "[1, 2", "nul", "{\"a\": 'x'}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i]);
        cJSON *j = (cJSON *)1;
        alloy_status s = alloy_json_read_file(path, &j);
        EXPECT(s == ALLOY_STATUS_FORMAT && j == NULL && says(path) && says("invalid JSON"), "'%s': %d '%s'", bad[i], s,
               alloy_last_error());
    }
    // an embedded NUL byte
    FILE *f = fopen(path, "wb");
    fwrite("{\"a\":1}\0xx", 1, 10, f);
    fclose(f);
    cJSON *j = NULL;
    alloy_status s = alloy_json_read_file(path, &j);
    EXPECT(s == ALLOY_STATUS_FORMAT && says(path) && says("NUL"), "NUL: %d '%s'", s, alloy_last_error());
    // missing file
    char *missing = alloy_path_join(dir, "none.json");
    s = alloy_json_read_file(missing, &j);
    EXPECT(s == ALLOY_STATUS_IO && says(missing), "missing: %d '%s'", s, alloy_last_error());
    alloy_free(missing);

    // write then read back
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", 5);
    cJSON_AddStringToObject(o, "s", "text");
    EXPECT(alloy_json_write_file(path, o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    cJSON_Delete(o);
    char *text = slurp(path);
    EXPECT(text && text[0] && text[strlen(text) - 1] == '\n', "JSON file must end with a newline");
    alloy_free(text);
    s = alloy_json_read_file(path, &j);
    REQUIRE(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int64_t n = 0;
    const char *str = NULL;
    EXPECT(alloy_json_get_int(j, "n", "c.json", &n) == ALLOY_STATUS_OK && n == 5, "n = %lld", (long long)n);
    EXPECT(alloy_json_get_string(j, "s", "c.json", &str) == ALLOY_STATUS_OK && !strcmp(str, "text"), "s");
    cJSON_Delete(j);
    EXPECT(harness_count_entries(dir) == 1, "write left %d entries", harness_count_entries(dir));
    alloy_free(path);
    alloy_free(dir);
}

static void test_json_getters(void) {
    cJSON *j = cJSON_Parse("{\"i\": 12, \"neg\": -3, \"f\": 1.5, \"s\": \"str\", \"b\": true, \"z\": null,"
                           " \"big\": 1e300, \"arr\": [1]}");
    REQUIRE(j, "parse");
    int64_t i = 99;
    double d = 99;
    const char *s = NULL;
    bool b = false;
    const char *W = "cfg.json";

    EXPECT(alloy_json_get_int(j, "i", W, &i) == ALLOY_STATUS_OK && i == 12, "i");
    EXPECT(alloy_json_get_int(j, "neg", W, &i) == ALLOY_STATUS_OK && i == -3, "neg");
    EXPECT(alloy_json_get_double(j, "f", W, &d) == ALLOY_STATUS_OK && d == 1.5, "f");
    EXPECT(alloy_json_get_double(j, "i", W, &d) == ALLOY_STATUS_OK && d == 12.0, "an integer is a double too");
    EXPECT(alloy_json_get_string(j, "s", W, &s) == ALLOY_STATUS_OK && !strcmp(s, "str"), "s");
    EXPECT(alloy_json_get_bool(j, "b", W, &b) == ALLOY_STATUS_OK && b, "b");

    // missing keys name the key and the file
    i = 99;
    alloy_status st = alloy_json_get_int(j, "nope", W, &i);
    EXPECT(st == ALLOY_STATUS_FORMAT && !strcmp(alloy_last_error(), "cfg.json: missing field \"nope\"") && i == 99,
           "missing int: '%s'", alloy_last_error());
    st = alloy_json_get_int(j, "z", W, &i);
    EXPECT(st == ALLOY_STATUS_FORMAT && says("missing"), "null counts as missing: '%s'", alloy_last_error());
    EXPECT(alloy_json_get_string(j, "nope", W, &s) == ALLOY_STATUS_FORMAT && says("missing"), "missing string");
    EXPECT(alloy_json_get_bool(j, "nope", W, &b) == ALLOY_STATUS_FORMAT && says("missing"), "missing bool");
    EXPECT(alloy_json_get_double(j, "nope", W, &d) == ALLOY_STATUS_FORMAT && says("missing"), "missing double");

    // wrong types
    st = alloy_json_get_int(j, "s", W, &i);
    EXPECT(st == ALLOY_STATUS_FORMAT && !strcmp(alloy_last_error(), "cfg.json: field \"s\" must be a number"),
           "string as int: '%s'", alloy_last_error());
    EXPECT(alloy_json_get_int(j, "b", W, &i) == ALLOY_STATUS_FORMAT, "bool as int");
    EXPECT(alloy_json_get_int(j, "arr", W, &i) == ALLOY_STATUS_FORMAT, "array as int");
    EXPECT(alloy_json_get_string(j, "i", W, &s) == ALLOY_STATUS_FORMAT && says("must be a string"),
           "int as string: '%s'", alloy_last_error());
    EXPECT(alloy_json_get_bool(j, "i", W, &b) == ALLOY_STATUS_FORMAT && says("true or false"), "int as bool: '%s'",
           alloy_last_error());
    EXPECT(alloy_json_get_double(j, "s", W, &d) == ALLOY_STATUS_FORMAT, "string as double");

    // non-integers and integers out of the exact range
    i = 99;
    st = alloy_json_get_int(j, "f", W, &i);
    EXPECT(st == ALLOY_STATUS_FORMAT && !strcmp(alloy_last_error(), "cfg.json: field \"f\" must be an integer") &&
               i == 99,
           "1.5 as int: '%s'", alloy_last_error());
    EXPECT(alloy_json_get_int(j, "big", W, &i) == ALLOY_STATUS_FORMAT && says("integer"), "1e300 as int: '%s'",
           alloy_last_error());

    // optional readers leave *out alone when absent (or null) and still check types
    i = 7;
    d = 7;
    b = true;
    EXPECT(alloy_json_opt_int(j, "nope", W, &i) == ALLOY_STATUS_OK && i == 7, "opt int absent");
    EXPECT(alloy_json_opt_int(j, "z", W, &i) == ALLOY_STATUS_OK && i == 7, "opt int null");
    EXPECT(alloy_json_opt_double(j, "nope", W, &d) == ALLOY_STATUS_OK && d == 7, "opt double absent");
    EXPECT(alloy_json_opt_bool(j, "nope", W, &b) == ALLOY_STATUS_OK && b, "opt bool absent");
    EXPECT(alloy_json_opt_int(j, "i", W, &i) == ALLOY_STATUS_OK && i == 12, "opt int present");
    EXPECT(alloy_json_opt_int(j, "f", W, &i) == ALLOY_STATUS_FORMAT, "opt int 1.5");
    EXPECT(alloy_json_opt_bool(j, "s", W, &b) == ALLOY_STATUS_FORMAT, "opt bool string");
    EXPECT(alloy_json_opt_double(j, "s", W, &d) == ALLOY_STATUS_FORMAT, "opt double string");

    // not an object at all
    cJSON *arr = cJSON_Parse("[1, 2]");
    EXPECT(alloy_json_get_int(arr, "i", W, &i) == ALLOY_STATUS_FORMAT && says("missing"), "array root");
    cJSON_Delete(arr);
    cJSON_Delete(j);
}

/* ---- durations, clock, hashing ---------------------------------------------------------- */

static void test_format_duration(void) {
    struct {
        double s;
        const char *want;
    } cases[] = {
        {0, "0s"},      {0.4, "0s"},        {5.2, "5s"},        {12, "12s"},     {59.4, "59s"},
        {59.6, "1m00s"}, {185, "3m05s"},    {3599.4, "59m59s"}, {3599.6, "1h00m"}, {3720, "1h02m"},
        {36000, "10h00m"}, {-1, "?"},       {NAN, "?"},         {INFINITY, "?"}, {1e12, "?"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        alloy_format_duration(cases[i].s, buf, sizeof buf);
        EXPECT(!strcmp(buf, cases[i].want), "%g s: '%s', expected '%s'", cases[i].s, buf, cases[i].want);
    }
    char tiny[4];
    alloy_format_duration(36000, tiny, sizeof tiny);
    EXPECT(strlen(tiny) == 3, "a small buffer is cut: '%s'", tiny);
    double t0 = alloy_time_now(), t1 = alloy_time_now();
    EXPECT(t0 > 0 && t1 >= t0, "monotonic clock: %g then %g", t0, t1);
}

static void test_fnv64(void) {
    EXPECT(alloy_fnv64(ALLOY_FNV64_INIT, "", 0) == 0xcbf29ce484222325ULL, "empty");
    EXPECT(alloy_fnv64(ALLOY_FNV64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL, "FNV-1a 64 of \"a\": %llx",
           (unsigned long long)alloy_fnv64(ALLOY_FNV64_INIT, "a", 1));
    EXPECT(alloy_fnv64(ALLOY_FNV64_INIT, "foobar", 6) == 0x85944171f73967e8ULL, "FNV-1a 64 of \"foobar\": %llx",
           (unsigned long long)alloy_fnv64(ALLOY_FNV64_INIT, "foobar", 6));
    // continuing a hash equals hashing the concatenation
    uint64_t h = alloy_fnv64(alloy_fnv64(ALLOY_FNV64_INIT, "foo", 3), "bar", 3);
    EXPECT(h == 0x85944171f73967e8ULL, "chained: %llx", (unsigned long long)h);
}

/* The free cores: within [1, cores]; with a busy process on every core, 1; OMP_NUM_THREADS
 * overrides the default, an explicit count overrides both. */
static void test_threads(void) {
    int cores = 0, f = alloy_cores_free(&cores);
    EXPECT(cores >= 1 && f >= 1 && f <= cores, "free %d of %d", f, cores);
    pid_t busy[64];
    int nb = cores < 64 ? cores : 64;
    for (int i = 0; i < nb; i++) {
        busy[i] = fork();
        if (busy[i] == 0)
            for (volatile unsigned long x = 0;; x++) {
            }
    }
    struct timespec ts = {0, 200000000}; // let them be scheduled
    nanosleep(&ts, NULL);
    f = alloy_cores_free(NULL);
    EXPECT(f == 1, "with %d busy processes on %d cores: %d free", nb, cores, f);
    for (int i = 0; i < nb; i++) kill(busy[i], SIGKILL);
    for (int i = 0; i < nb; i++) waitpid(busy[i], NULL, 0);
#ifdef _OPENMP
    setenv("OMP_NUM_THREADS", "3", 1);
    EXPECT(alloy_threads_use(0) == 3 && omp_get_max_threads() == 3, "OMP_NUM_THREADS=3: %d", omp_get_max_threads());
    EXPECT(alloy_threads_use(5) == 5 && omp_get_max_threads() == 5, "--threads 5: %d", omp_get_max_threads());
    unsetenv("OMP_NUM_THREADS");
    int n = alloy_threads_use(0);
    EXPECT(n >= 1 && n <= cores && omp_get_max_threads() == n, "default: %d of %d", n, cores);
#endif
}

int main(void) {
    RUN(test_errors);
    RUN(test_rng_streams);
    RUN(test_rng_below);
    RUN(test_rng_normal);
    RUN(test_mul_size);
    RUN(test_alloc);
    RUN(test_atomic_write);
    RUN(test_mkdir_p);
    RUN(test_file_map);
    RUN(test_json_files);
    RUN(test_json_getters);
    RUN(test_format_duration);
    RUN(test_fnv64);
    RUN(test_threads);
    return harness_exit();
}
