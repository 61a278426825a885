/*
 * alloy/base.h — status values and error messages, allocation, RNG, files, JSON, progress.
 *
 * The bottom layer of liballoy: every other module reports failure through alloy_status and
 * one message per thread, allocates through one hook, and writes files atomically.
 *
 *     alloy_file_map map;
 *     if (alloy_file_map_open(&map, "shard.bin") != ALLOY_STATUS_OK) {
 *         fprintf(stderr, "error: %s\n", alloy_last_error());  // "shard.bin: no such file"
 *         return 1;
 *     }
 *     ...
 *     alloy_file_map_close(&map);
 */
#ifndef ALLOY_BASE_H
#define ALLOY_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Every public declaration sits between ALLOY_BEGIN_DECLS and ALLOY_END_DECLS: C linkage for
 * C++, and default visibility, so that liballoy.so exports these names and nothing else (the
 * library is built with -fvisibility=hidden). */
#ifdef __cplusplus
#define ALLOY_BEGIN_DECLS extern "C" { _Pragma("GCC visibility push(default)")
#define ALLOY_END_DECLS _Pragma("GCC visibility pop") }
#else
#define ALLOY_BEGIN_DECLS _Pragma("GCC visibility push(default)")
#define ALLOY_END_DECLS _Pragma("GCC visibility pop")
#endif

ALLOY_BEGIN_DECLS

/* ---- status and errors ------------------------------------------------------------------ */

typedef enum alloy_status {
    ALLOY_STATUS_OK = 0,
    ALLOY_STATUS_USAGE,    /* a bad argument or flag from the caller */
    ALLOY_STATUS_IO,       /* a file that is missing, unreadable or unwritable */
    ALLOY_STATUS_FORMAT,   /* a file whose content is malformed, truncated or corrupt */
    ALLOY_STATUS_MISMATCH, /* well-formed inputs that do not fit together (config vs weights) */
    ALLOY_STATUS_RANGE,    /* a value out of its range (a token id >= vocab size) */
    ALLOY_STATUS_NOMEM,    /* an allocation failed */
    ALLOY_STATUS_INTERNAL, /* a bug in alloy */
} alloy_status;

/* Sets this thread's error message (printf-style) and returns `status`, so that a failing
 * function can `return alloy_fail(ALLOY_STATUS_FORMAT, "%s: bad magic", path);`. */
alloy_status alloy_fail(alloy_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to this thread's current message (to add context on the way up). */
void alloy_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* This thread's last error message ("" if none). Valid until the next alloy call. */
const char *alloy_last_error(void);

/* A short name for a status ("io", "format", ...). */
const char *alloy_status_name(alloy_status status);

/* Internal invariants only (never user input): prints and aborts. */
#define ALLOY_ASSERT(cond)                                                                   \
    do {                                                                                     \
        if (!(cond)) alloy_assert_fail(#cond, __FILE__, __LINE__);                           \
    } while (0)
void alloy_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* ---- allocation ------------------------------------------------------------------------- */

/* All of liballoy allocates through these. They return NULL on failure (and set the error
 * message); alloy_free(NULL) is a no-op. Allocations are 64-byte aligned. */
void *alloy_malloc(size_t size);
void *alloy_calloc(size_t count, size_t size);
void *alloy_realloc(void *ptr, size_t old_size, size_t new_size);
void alloy_free(void *ptr);
char *alloy_strdup(const char *s);

/* Large arenas (parameters, gradients, optimizer state, activations): whole pages mapped
 * from the kernel, zero-filled, backed by transparent huge pages where the system allows
 * (fewer TLB misses in the matrix products), and given back page by page with
 * alloy_pages_discard. Counted by the same failure injection as alloy_malloc. */
void *alloy_pages_alloc(size_t size);
void alloy_pages_free(void *ptr, size_t size);
/* Gives the whole pages inside [ptr, ptr + size) back to the system; they read as zeros
 * afterwards and take memory again only when written. A range smaller than a page is a no-op. */
void alloy_pages_discard(void *ptr, size_t size);

/* Test hook: the n-th allocation from now (1-based) and every one after it fail; 0 turns
 * injection off. Not thread-safe: for single-threaded tests of out-of-memory paths. */
void alloy_alloc_fail_after(long n);

/* Multiplies sizes with an overflow check: returns false (and leaves *out alone) on overflow. */
bool alloy_mul_size(size_t a, size_t b, size_t *out);

/* ---- random numbers --------------------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64. The whole state is the four words, so a saved RNG
 * resumes exactly. */
typedef struct alloy_rng {
    uint64_t s[4];
} alloy_rng;

void alloy_rng_seed(alloy_rng *rng, uint64_t seed);
uint64_t alloy_rng_u64(alloy_rng *rng);
double alloy_rng_uniform(alloy_rng *rng);       /* [0, 1) with 53 random bits */
uint64_t alloy_rng_below(alloy_rng *rng, uint64_t n); /* uniform in [0, n), unbiased; n > 0 */
double alloy_rng_normal(alloy_rng *rng);        /* standard normal (Box-Muller, no caching) */

/* ---- files ------------------------------------------------------------------------------ */

/* A read-only memory map of a whole file. An empty file maps to data == NULL, size == 0. */
typedef struct alloy_file_map {
    const uint8_t *data; /* the file's bytes (size) */
    size_t size;         /* length of the file in bytes */
} alloy_file_map;

alloy_status alloy_file_map_open(alloy_file_map *map, const char *path);
void alloy_file_map_close(alloy_file_map *map);

/* Reads a whole (small) file into a NUL-terminated buffer the caller frees with alloy_free. */
alloy_status alloy_file_read_all(const char *path, char **out, size_t *out_size);

/* An atomic writer: bytes go to "<path>.tmp.<pid>"; commit fsyncs, renames it over `path`
 * and fsyncs the folder, so readers see the old file or the whole new one, never a part.
 * abort (or a crash) leaves `path` untouched. */
typedef struct alloy_atomic_file {
    FILE *fp;        /* the temporary file */
    char *path;      /* final path */
    char *tmp_path;  /* temporary path */
    bool failed;     /* a write failed: commit will refuse */
} alloy_atomic_file;

alloy_status alloy_atomic_open(alloy_atomic_file *f, const char *path);
alloy_status alloy_atomic_write(alloy_atomic_file *f, const void *data, size_t size);
alloy_status alloy_atomic_printf(alloy_atomic_file *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
alloy_status alloy_atomic_commit(alloy_atomic_file *f); /* closes f either way */
void alloy_atomic_abort(alloy_atomic_file *f);

/* Writes a whole file atomically. */
alloy_status alloy_write_file_atomic(const char *path, const void *data, size_t size);

/* Creates a folder and its parents (like mkdir -p). */
alloy_status alloy_mkdir_p(const char *path);
/* fsyncs a folder so that renames inside it are durable. */
alloy_status alloy_fsync_dir(const char *path);
bool alloy_path_exists(const char *path);
bool alloy_is_dir(const char *path);
/* Removes a folder and the files in it (one level; for checkpoint folders). */
alloy_status alloy_remove_dir(const char *path);
/* Joins two path parts into a new string (alloy_free it). */
char *alloy_path_join(const char *a, const char *b);

/* ---- JSON (over cJSON) ------------------------------------------------------------------ */

struct cJSON;
/* Parses a JSON file; on error names the file and the byte offset. Free with cJSON_Delete. */
alloy_status alloy_json_read_file(const char *path, struct cJSON **out);
/* Writes JSON atomically, pretty-printed, with a trailing newline. */
alloy_status alloy_json_write_file(const char *path, const struct cJSON *json);
/* Typed field readers: fail with "<what>: field \"key\" ..." when absent or of the wrong type.
 * The _opt variants leave *out alone when the key is absent. */
alloy_status alloy_json_get_int(const struct cJSON *obj, const char *key, const char *what, int64_t *out);
alloy_status alloy_json_get_double(const struct cJSON *obj, const char *key, const char *what, double *out);
alloy_status alloy_json_get_string(const struct cJSON *obj, const char *key, const char *what, const char **out);
alloy_status alloy_json_get_bool(const struct cJSON *obj, const char *key, const char *what, bool *out);
alloy_status alloy_json_opt_int(const struct cJSON *obj, const char *key, const char *what, int64_t *out);
alloy_status alloy_json_opt_double(const struct cJSON *obj, const char *key, const char *what, double *out);
alloy_status alloy_json_opt_bool(const struct cJSON *obj, const char *key, const char *what, bool *out);

/* ---- time and progress ------------------------------------------------------------------ */

double alloy_time_now(void); /* monotonic seconds */

/* A one-line progress display: on a terminal it redraws one line (\r); elsewhere it prints
 * a line every `every` updates. */
typedef struct alloy_progress {
    FILE *out;      /* stderr by default */
    bool tty;       /* out is a terminal */
    int every;      /* non-terminal: print every n-th update */
    int count;      /* updates so far */
    int last_len;   /* length of the last drawn line */
} alloy_progress;

void alloy_progress_init(alloy_progress *p, FILE *out, int every);
/* n in a short form for progress lines: 124.44M, 3.2k, 17. */
void alloy_format_count(double n, char *buf, size_t size);
void alloy_progress_update(alloy_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints a line that stays (ends the current progress line first). */
void alloy_progress_print(alloy_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void alloy_progress_done(alloy_progress *p);
/* Formats seconds as "1h02m", "3m05s" or "12s". */
void alloy_format_duration(double seconds, char *buf, size_t size);

/* ---- a hash map of 64-bit keys to 64-bit values ------------------------------------------ */

/* Open addressing with linear probing; the key UINT64_MAX is reserved. Not thread-safe for
 * writes; concurrent reads are fine. */
typedef struct alloy_map64 {
    uint64_t *keys;   /* (cap) UINT64_MAX marks an empty slot */
    uint64_t *vals;   /* (cap) */
    size_t cap;       /* a power of two */
    size_t count;     /* keys stored */
} alloy_map64;

alloy_status alloy_map64_init(alloy_map64 *m, size_t expected);
void alloy_map64_free(alloy_map64 *m);
/* Inserts or replaces. */
alloy_status alloy_map64_put(alloy_map64 *m, uint64_t key, uint64_t val);
bool alloy_map64_get(const alloy_map64 *m, uint64_t key, uint64_t *val);
void alloy_map64_clear(alloy_map64 *m);

/* ---- UTF-8 ------------------------------------------------------------------------------ */

/* The length of the longest valid UTF-8 prefix of s (n if all of it is valid). Valid means
 * shortest-form encodings of scalar values: no surrogates, nothing above U+10FFFF. */
size_t alloy_utf8_valid_prefix(const char *s, size_t n);

/* Copies s to out, replacing each invalid UTF-8 sequence by U+FFFD (EF BF BD) following the
 * "maximal subpart" practice of Unicode §3.9 — as the WHATWG decoder (JavaScript's
 * TextDecoder, Node's Buffer.toString) and Python's errors="replace" do. out must hold 3·n
 * bytes. Returns the bytes written; *replaced (may be NULL) gets the number of U+FFFD added. */
size_t alloy_utf8_repair(const char *s, size_t n, char *out, size_t *replaced);

/* Decodes one valid UTF-8 character at s (n > 0 bytes available) into *cp; returns its length,
 * or 0 if the bytes there are not a valid character. */
size_t alloy_utf8_decode(const char *s, size_t n, uint32_t *cp);

/* ---- held-out scores --------------------------------------------------------------------- */

/* Held-out scores of a language model: what alloy_eval_source (alloy/eval.h) fills for every
 * next-token log-probability source — alloy_eval_lm (train), alloy_ensemble_eval (fuse),
 * alloy_engine_eval_lm (infer) — so each layer can name it. */
typedef struct alloy_eval_result {
    double loss;       /* mean cross-entropy per target token (nats) */
    double perplexity; /* exp(loss) */
    int64_t tokens;    /* target tokens scored */
    int64_t windows;   /* windows of T + 1 tokens scored: the first ones of the split */
    int64_t split_windows; /* windows of T + 1 tokens in the split (alloy_eval_source; 0: not said) */
} alloy_eval_result;

/* ---- threads ---------------------------------------------------------------------------- */

/* alloy's parallel work (its kernels and OpenBLAS, OpenMP flavour) runs on OpenMP threads. On a
 * machine with other work, a thread that waits for a core another process holds makes the
 * whole team wait: OpenMP's default spin-wait then costs 4x to 50x. Two defences:
 *   - the thread count: alloy_threads_use(0) takes the cores that are free now, so a busy
 *     machine runs alloy on fewer threads instead of on threads that wait for each other;
 *   - the wait policy: OpenMP reads it (OMP_WAIT_POLICY, GOMP_SPINCOUNT) once, before main, so
 *     a library cannot change it; the alloy command re-executes itself once with
 *     GOMP_SPINCOUNT=ALLOY_SPINCOUNT when neither variable is set (a short spin, then sleep).
 *     A program that links liballoy can do the same, or set OMP_WAIT_POLICY=passive. */
#define ALLOY_SPINCOUNT "10000"

/* The cores free now: the CPUs this process may run on (sched_getaffinity) less the other
 * tasks running or ready to run (the least of a few readings of /proc/loadavg over ~4 ms, so a
 * passing process does not count), at least 1. `cores` (may be NULL) gets the CPUs. */
int alloy_cores_free(int *cores);

/* Sets the OpenMP threads of what follows: n > 0 exactly n; n == 0 OMP_NUM_THREADS when it is
 * set, else the cores free now (alloy_cores_free). Returns the count set (1 without OpenMP).
 * Results are bitwise reproducible for a given count; pass n to fix it. */
int alloy_threads_use(int n);

/* ---- hashing ---------------------------------------------------------------------------- */

/* 64-bit FNV-1a, continued from `h` (start with ALLOY_FNV64_INIT). */
#define ALLOY_FNV64_INIT 0xcbf29ce484222325ULL
uint64_t alloy_fnv64(uint64_t h, const void *data, size_t size);

ALLOY_END_DECLS
#endif /* ALLOY_BASE_H */
