/*
 * harness.h — the tiny test harness shared by tests/test_*.c.
 *
 * Each test case is a function; RUN(case) runs it and prints "ok - case" or "not ok - case"
 * (TAP style), with the failed checks on stderr. harness_exit() returns 1 if anything failed,
 * so the program's exit status is the verdict. tests/run.sh counts the ok / not ok lines.
 *
 *     static void test_roundtrip(void) { EXPECT(x == 1, "x is %d", x); }
 *     int main(void) { RUN(test_roundtrip); return harness_exit(); }
 *
 * It also makes what many tests start from: temporary folders (harness_tmpdir), random token
 * ids (harness_random_tokens) and token shards laid out as alloy prepare writes them
 * (harness_write_dataset, harness_random_dataset).
 */
#ifndef ALLOY_TEST_HARNESS_H
#define ALLOY_TEST_HARNESS_H

#include "alloy/data.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int harness_failed_checks;  /* in the current case */
static int harness_failed_cases;
static int harness_passed_cases;

#define EXPECT(cond, ...)                                                                    \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            harness_failed_checks++;                                                         \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
        }                                                                                    \
    } while (0)

/* Stops the current case (returns from it) when cond fails. */
#define REQUIRE(cond, ...)                                                                   \
    do {                                                                                     \
        int before_ = harness_failed_checks;                                                 \
        EXPECT(cond, __VA_ARGS__);                                                           \
        if (harness_failed_checks != before_) return;                                        \
    } while (0)

#define RUN(fn) harness_run(#fn, fn)

static inline void harness_run(const char *name, void (*fn)(void)) {
    harness_failed_checks = 0;
    fn();
    if (harness_failed_checks) {
        harness_failed_cases++;
        printf("not ok - %s (%d failed checks)\n", name, harness_failed_checks);
    } else {
        harness_passed_cases++;
        printf("ok - %s\n", name);
    }
    fflush(stdout);
}

static inline int harness_exit(void) {
    printf("# %d passed, %d failed\n", harness_passed_cases, harness_failed_cases);
    return harness_failed_cases ? 1 : 0;
}

/* |a - b| <= atol + rtol·|b| */
static inline int harness_close(double a, double b, double rtol, double atol) {
    return fabs(a - b) <= atol + rtol * fabs(b);
}

/* Largest |a-b| / (atol + |b|) over n values: <= rtol means "close" in the relative sense with
 * a floor of atol for values near zero. */
static inline double harness_max_rel(const float *a, const float *b, size_t n, double atol) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + fabs((double)b[i]));
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* Temporary folders made by harness_tmpdir, removed at exit unless ALLOY_KEEP_TMP is set. */
static char harness_tmp_list[64][256];
static int harness_tmp_count;

static int harness_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void harness_tmp_cleanup(void) {
    if (getenv("ALLOY_KEEP_TMP")) return;
    for (int i = 0; i < harness_tmp_count; i++) nftw(harness_tmp_list[i], harness_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh temporary folder (mkdtemp), removed when the program exits. The returned buffer is
 * reused by the next call: copy the path if you need two. */
static inline const char *harness_tmpdir(void) {
    static char buf[256];
    const char *base = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/alloy-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        exit(2);
    }
    if (harness_tmp_count == 0) atexit(harness_tmp_cleanup);
    if (harness_tmp_count < 64) snprintf(harness_tmp_list[harness_tmp_count++], sizeof harness_tmp_list[0], "%s", buf);
    return buf;
}

/* Entries of a folder other than "." and "..", or -1 if it cannot be read. */
static inline int harness_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* The library's last error message contains `needle`. */
#define says(needle) (strstr(alloy_last_error(), (needle)) != NULL)

/* The repository root (tests run from it; ALLOY_ROOT overrides). */
static inline const char *harness_root(void) {
    const char *r = getenv("ALLOY_ROOT");
    return r && *r ? r : ".";
}

/* t[0..n) uniform in [0, vocab) (alloy_rng_below) from an alloy_rng seeded with seed. */
static inline void harness_random_tokens(int32_t *t, int n, int vocab, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) t[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)vocab);
}

/* Writes the n tokens t (each in [0, vocab)) as the shard at path; the file appears only whole. */
static inline alloy_status harness_write_shard(const char *path, int vocab, const int32_t *t, int n) {
    alloy_shard_writer w;
    alloy_status s = alloy_shard_writer_open(&w, path, (uint32_t)vocab);
    if (s) return s;
    if ((s = alloy_shard_writer_add(&w, t, (size_t)n))) {
        alloy_shard_writer_abort(&w);
        return s;
    }
    return alloy_shard_writer_close(&w);
}

/* A dataset in the existing folder dir, as alloy prepare lays it out: train-00000.bin holding
 * train (n_train tokens) and val-00000.bin holding val (n_val), vocabulary vocab. Returns the
 * first failure (alloy_last_error names it). */
static inline alloy_status harness_write_dataset(const char *dir, int vocab, const int32_t *train, int n_train,
                                                 const int32_t *val, int n_val) {
    char path[1024];
    snprintf(path, sizeof path, "%s/train-00000.bin", dir);
    alloy_status s = harness_write_shard(path, vocab, train, n_train);
    snprintf(path, sizeof path, "%s/val-00000.bin", dir);
    return s ? s : harness_write_shard(path, vocab, val, n_val);
}

/* harness_write_dataset with n_tokens random tokens in each split: the training split's from
 * seed, the held-out split's from seed + 1 (harness_random_tokens). */
static inline alloy_status harness_random_dataset(const char *dir, int vocab, int n_tokens, uint64_t seed) {
    int32_t *t = malloc(sizeof(int32_t) * 2 * (size_t)n_tokens);
    if (!t) return ALLOY_STATUS_NOMEM;
    harness_random_tokens(t, n_tokens, vocab, seed);
    harness_random_tokens(t + n_tokens, n_tokens, vocab, seed + 1);
    alloy_status s = harness_write_dataset(dir, vocab, t, n_tokens, t + n_tokens, n_tokens);
    free(t);
    return s;
}

#endif /* ALLOY_TEST_HARNESS_H */
