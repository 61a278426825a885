/*
 * harness.h — the tiny test harness shared by tests/test_*.c.
 *
 * Each test case is a function; RUN(case) runs it and prints "ok - case" or "not ok - case"
 * (TAP style), with the failed checks on stderr. harness_exit() returns 1 if anything failed,
 * so the program's exit status is the verdict. tests/run.sh counts the ok / not ok lines.
 *
 * A case that cannot check what it is for says so and stops: SKIP("oracle: ...") when an
 * outside reference (the PyTorch/NumPy interpreter, node) is missing, SKIP("cpu: ...") when the
 * CPU lacks the feature under test, SKIP("data: ...") when a shared corpus is absent (NEED_DATA).
 * It prints "ok - case # SKIP reason", which tests/run.sh
 * counts as skipped, not passed (and, with ALLOY_REQUIRE_ORACLES=1, an oracle skip as failed).
 *
 *     static void test_roundtrip(void) { EXPECT(x == 1, "x is %d", x); }
 *     int main(void) { RUN(test_roundtrip); return harness_exit(); }
 *
 * It also makes what many tests start from: temporary folders (harness_tmpdir), random token
 * ids (harness_random_tokens) and token shards laid out as alloy prepare writes them
 * (harness_write_dataset, harness_random_dataset); and it runs the reference scripts of
 * tests/reference/ with the oracle interpreter PYTHON (harness_need_python, REFERENCE).
 */
#ifndef ALLOY_TEST_HARNESS_H
#define ALLOY_TEST_HARNESS_H

#include "alloy/data.h"

#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int harness_failed_checks;  /* in the current case */
static char harness_skip_reason[512]; /* in the current case; "" when it is not skipped */
static int harness_failed_cases;
static int harness_passed_cases;
static int harness_skipped_cases;

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

/* Marks the current case skipped, for the reason printf(fmt, ...) — "oracle: what is missing"
 * or "cpu: what it lacks" (tests/run.sh sorts skips by that word). The first reason stays. */
static inline void harness_skip(const char *fmt, ...) {
    if (harness_skip_reason[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(harness_skip_reason, sizeof harness_skip_reason, fmt, ap);
    va_end(ap);
    if (!harness_skip_reason[0]) snprintf(harness_skip_reason, sizeof harness_skip_reason, "(no reason given)");
}

/* Skips the current case (returns from it): SKIP("cpu: no avx512_bf16"). */
#define SKIP(...)                                                                            \
    do {                                                                                     \
        harness_skip(__VA_ARGS__);                                                           \
        return;                                                                              \
    } while (0)

#define RUN(fn) harness_run(#fn, fn)

/* A case with failed checks is "not ok" even if it also skipped; a skipped one is
 * "ok - name # SKIP reason" and counts apart from the passed ones. */
static inline void harness_run(const char *name, void (*fn)(void)) {
    harness_failed_checks = 0;
    harness_skip_reason[0] = '\0';
    fn();
    if (harness_failed_checks) {
        harness_failed_cases++;
        printf("not ok - %s (%d failed checks)\n", name, harness_failed_checks);
    } else if (harness_skip_reason[0]) {
        harness_skipped_cases++;
        printf("ok - %s # SKIP %s\n", name, harness_skip_reason);
    } else {
        harness_passed_cases++;
        printf("ok - %s\n", name);
    }
    harness_skip_reason[0] = '\0';
    fflush(stdout);
}

static inline int harness_exit(void) {
    printf("# %d passed, %d failed, %d skipped\n", harness_passed_cases, harness_failed_cases, harness_skipped_cases);
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

/* The shared corpora: $ALLOY_SHARED_DATA, by default ROOT/../shared/data. Point it at a folder
 * that does not exist (ALLOY_SHARED_DATA=/nonexistent) to see every case that needs it skip. */
static inline const char *harness_data_root(void) {
    static char dir[400];
    const char *d = getenv("ALLOY_SHARED_DATA");
    if (d && *d) return d;
    snprintf(dir, sizeof dir, "%s/../shared/data", harness_root());
    return dir;
}

/* Writes the path of `rel` under the shared corpora into out[size] ("" when it does not fit). */
static inline void harness_data_path(char *out, size_t size, const char *rel) {
    int n = snprintf(out, size, "%s/%s", harness_data_root(), rel);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

/* Puts the path of `rel` (a file or folder under the shared corpora) into `out` (a char array)
 * and skips the current case, "data: PATH is absent", when it is not there. */
#define NEED_DATA(out, rel)                                                                  \
    do {                                                                                     \
        harness_data_path((out), sizeof(out), (rel));                                        \
        if (access((out), F_OK) != 0) SKIP("data: %s is absent", (out));                     \
    } while (0)

/* ---- the oracle interpreter and the reference scripts ---------------------------------- */

/* The interpreter that runs the scripts of tests/reference: $ALLOY_TEST_PYTHON, by default Debian's
 * /usr/bin/python3 (python3-torch, python3-numpy, python3-yaml). Point ALLOY_TEST_PYTHON at
 * /bin/false to see every case that needs it skip. */
#define PYTHON harness_python()
static inline const char *harness_python(void) {
    const char *p = getenv("ALLOY_TEST_PYTHON");
    return p && *p ? p : "/usr/bin/python3";
}

/* The node that runs tests/js (the outside oracles there): $ALLOY_TEST_NODE, by default the
 * first node on PATH. */
#define NODE harness_node()
static inline const char *harness_node(void) {
    const char *p = getenv("ALLOY_TEST_NODE");
    return p && *p ? p : "node";
}

/* Runs cmd with sh -c: its exit status, or -1 if it did not exit normally. */
static inline int harness_command(const char *cmd) {
    int rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc)) return -1;
    return WEXITSTATUS(rc);
}

/* 1 when PYTHON imports every module of `modules` (comma-separated: "torch, numpy"; the
 * answer is remembered per list); otherwise 0, and the current case is marked skipped
 * ("oracle: ..."), as NEED_PYTHON does. */
static inline int harness_need_python(const char *modules) {
    static struct {
        char modules[64];
        int have;
    } seen[8];
    static int n_seen;
    int have = -1;
    for (int i = 0; i < n_seen && i < 8 && have < 0; i++)
        if (strncmp(seen[i].modules, modules, sizeof seen[i].modules) == 0) have = seen[i].have;
    if (have < 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "'%s' -c 'import %s' >/dev/null 2>&1", PYTHON, modules);
        have = harness_command(cmd) == 0;
        if (n_seen < 8 && strlen(modules) < sizeof seen[0].modules) {
            snprintf(seen[n_seen].modules, sizeof seen[0].modules, "%s", modules);
            seen[n_seen++].have = have;
        }
    }
    if (!have)
        harness_skip("oracle: %s cannot import %s", PYTHON, modules);
    return have;
}

/* Skips the current case (returns from it) unless PYTHON imports `modules`. */
#define NEED_PYTHON(modules)                                                                 \
    do {                                                                                     \
        if (!harness_need_python(modules)) return;                                           \
    } while (0)

/* Runs tests/reference/<script> under PYTHON with the arguments printf(fmt, ...) (quote the
 * paths: " '%s' '%s'"), after checking that PYTHON imports `modules`. Returns the script's
 * exit status (0: it succeeded; its own message is on stderr otherwise), or -1 when the oracle
 * is missing: the case is then marked skipped (harness_need_python). */
static inline int harness_reference(const char *modules, const char *script, const char *fmt, ...) {
    if (!harness_need_python(modules)) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    size_t len = strlen(PYTHON) + strlen(harness_root()) + strlen(script) + (size_t)n + 64;
    char *cmd = malloc(len);
    if (!cmd) return 1;
    int k = snprintf(cmd, len, "'%s' '%s/tests/reference/%s' ", PYTHON, harness_root(), script);
    va_start(ap, fmt);
    vsnprintf(cmd + k, len - (size_t)k, fmt, ap);
    va_end(ap);
    int rc = harness_command(cmd);
    if (rc < 0) rc = 255; /* killed: a failure, not a missing oracle */
    free(cmd);
    return rc;
}

/* harness_reference in a case: returns from the case when the oracle is missing (a skip) or
 * when the script fails (a failed check). */
#define REFERENCE(modules, script, ...)                                                      \
    do {                                                                                     \
        int ref_rc_ = harness_reference(modules, script, __VA_ARGS__);                       \
        if (ref_rc_ < 0) return;                                                             \
        REQUIRE(ref_rc_ == 0, "%s failed with status %d (its message is above)", script, ref_rc_); \
    } while (0)

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
