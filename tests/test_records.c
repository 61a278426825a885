/*
 * test_records.c — data files as people have them (alloy/records.h): the decompressing stream
 * (gzip and zstd told by magic bytes, several members or frames, truncated and corrupt data),
 * lists of files, and JSON records from JSONL files, JSON arrays and folders of mixed files in
 * name order, strict and lenient, with the line or element of every error; alignment data in
 * each of these shapes tokenizes as the same records in one JSONL file. The files are made
 * here with zlib and libzstd; Anthropic's hh-rlhf (../shared/data) is counted when present.
 */
#include "alloy/alloy.h"
#include "harness.h"
#include "pack_util.h"

#include <cJSON.h>

/* ---- making files ---- */

static void write_text(const char *path, const char *text) { pack_write_bytes(path, text, strlen(text)); }

/* n bytes of lines that do not repeat (so that compression leaves several blocks). */
static char *varied_text(size_t n) {
    char *t = malloc(n + 1);
    alloy_rng rng;
    alloy_rng_seed(&rng, 7);
    for (size_t i = 0; i < n; i++) t[i] = (i % 61 == 60) ? '\n' : (char)('a' + alloy_rng_below(&rng, 26));
    t[n] = '\0';
    return t;
}

/* Every byte of a stream, read `chunk` bytes at a time; NULL (with the status) on failure. */
static char *read_stream(const char *path, size_t chunk, size_t *n, alloy_status *st, alloy_compression *kind) {
    alloy_stream *s;
    *n = 0;
    if ((*st = alloy_stream_open(&s, path))) return NULL;
    if (kind) *kind = alloy_stream_compression(s);
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    for (;;) {
        if (*n + chunk > cap) out = realloc(out, cap *= 2);
        size_t got;
        if ((*st = alloy_stream_read(s, out + *n, chunk, &got))) break;
        *n += got;
        if (got < chunk) break;
    }
    alloy_stream_close(s);
    if (*st) {
        free(out);
        return NULL;
    }
    return out;
}

static char *path_in(const char *dir, const char *name) { return alloy_path_join(dir, name); }

/* ---- the stream ---- */

/* The same 3 MB read back from plain, gzip and zstd files, whatever their names say, in odd
 * chunks; members and frames one after another read as one stream. */
static void test_stream_formats(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    size_t N = 3u << 20;
    char *text = varied_text(N);
    char *plain = path_in(dir, "plain.gz"), *gz = path_in(dir, "packed.txt"), *zs = path_in(dir, "packed.dat");
    write_text(plain, text);
    pack_write(gz, text, 'g');
    pack_write(zs, text, 'z');
    const char *paths[] = {plain, gz, zs};
    const alloy_compression kinds[] = {ALLOY_COMPRESSION_NONE, ALLOY_COMPRESSION_GZIP, ALLOY_COMPRESSION_ZSTD};
    for (int i = 0; i < 3; i++) {
        size_t n;
        alloy_status st;
        alloy_compression k = (alloy_compression)-1;
        char *got = read_stream(paths[i], 777, &n, &st, &k);
        EXPECT(got && n == N && !memcmp(got, text, N), "%s: status %d (%s), %zu bytes", paths[i], st, alloy_last_error(), n);
        EXPECT(k == kinds[i], "%s: compression %d", paths[i], k);
        free(got);
    }
    // two gzip members, two zstd frames: one stream each
    uint8_t *a, *b;
    size_t na = pack_gzip("first half, ", 12, &a), nb = pack_gzip("second half", 11, &b);
    uint8_t *both = malloc(na + nb);
    memcpy(both, a, na);
    memcpy(both + na, b, nb);
    pack_write_bytes(gz, both, na + nb);
    free(a), free(b), free(both);
    na = pack_zstd("first half, ", 12, &a), nb = pack_zstd("second half", 11, &b);
    both = malloc(na + nb);
    memcpy(both, a, na);
    memcpy(both + na, b, nb);
    pack_write_bytes(zs, both, na + nb);
    free(a), free(b), free(both);
    for (int i = 1; i < 3; i++) {
        size_t n;
        alloy_status st;
        char *got = read_stream(paths[i], 5, &n, &st, NULL);
        EXPECT(got && n == 23 && !memcmp(got, "first half, second half", 23), "%s: members: %d %s", paths[i], st, alloy_last_error());
        free(got);
    }
    // an empty file is no bytes
    write_text(plain, "");
    size_t n;
    alloy_status st;
    char *got = read_stream(plain, 64, &n, &st, NULL);
    EXPECT(got && n == 0, "empty file: %d", st);
    free(got);
    free(text);
    alloy_free(plain), alloy_free(gz), alloy_free(zs);
}

/* Truncated or corrupt compressed data: one FORMAT line naming the file, never a crash. */
static void test_stream_damage(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    size_t N = 1u << 20;
    char *text = varied_text(N);
    uint8_t *g, *z;
    size_t ng = pack_gzip(text, N, &g), nz = pack_zstd(text, N, &z);
    char *p = path_in(dir, "damaged");
    struct {
        const uint8_t *data;
        size_t n;
        const char *what;
    } cases[] = {
        {g, ng / 2, "truncated gzip data"},
        {g, ng - 4, "truncated gzip data"}, // the trailer cut
        {g, 2, "truncated gzip data"},      // the magic alone
        {z, nz / 2, "truncated zstd data"},
        {z, 4, "truncated zstd data"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pack_write_bytes(p, cases[i].data, cases[i].n);
        size_t n;
        alloy_status st;
        char *got = read_stream(p, 4096, &n, &st, NULL);
        EXPECT(!got && st == ALLOY_STATUS_FORMAT && says(cases[i].what) && says(p) && !strchr(alloy_last_error(), '\n'),
               "case %zu: status %d, \"%s\"", i, st, alloy_last_error());
        free(got);
    }
    // flipped bytes inside the data, garbage after a whole member
    uint8_t *bad = malloc(ng + 16);
    memcpy(bad, g, ng);
    for (size_t k = ng / 3; k < ng / 3 + 64; k++) bad[k] ^= 0x5a;
    pack_write_bytes(p, bad, ng);
    size_t n;
    alloy_status st;
    char *got = read_stream(p, 4096, &n, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("corrupt gzip data") && says(p), "%d %s", st, alloy_last_error());
    memcpy(bad, g, ng);
    memcpy(bad + ng, "trailing garbage", 16);
    pack_write_bytes(p, bad, ng + 16);
    got = read_stream(p, 4096, &n, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("corrupt gzip data"), "%d %s", st, alloy_last_error());
    memcpy(bad, z, nz);
    for (size_t k = nz / 3; k < nz / 3 + 64; k++) bad[k] ^= 0x5a;
    pack_write_bytes(p, bad, nz);
    got = read_stream(p, 4096, &n, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("corrupt zstd data") && says(p), "%d %s", st, alloy_last_error());
    memset(bad + 4, 0xff, 60); // a frame header with reserved bits set
    pack_write_bytes(p, bad, 64);
    got = read_stream(p, 4096, &n, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("corrupt zstd data") && says(p), "%d %s", st, alloy_last_error());
    // a missing file and a folder are IO errors naming them
    alloy_stream *s;
    EXPECT(alloy_stream_open(&s, "/nonexistent/x.gz") == ALLOY_STATUS_IO && says("/nonexistent/x.gz"), "%s", alloy_last_error());
    EXPECT(alloy_stream_open(&s, dir) == ALLOY_STATUS_IO && says("is a folder"), "%s", alloy_last_error());
    free(bad), free(g), free(z), free(text);
    alloy_free(p);
}

/* ---- records ---- */

/* Every record of path as "WHERE=JSON" lines (compact JSON), or NULL with the status. */
static char *all_records(const char *path, const alloy_records_options *o, alloy_status *st, alloy_records_stats *stats) {
    alloy_records *r;
    if ((*st = alloy_records_open(&r, path, o))) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(cap, 1);
    for (;;) {
        const cJSON *rec;
        bool end;
        if ((*st = alloy_records_next(r, &rec, &end)) || end) break;
        char *j = cJSON_PrintUnformatted(rec);
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s=%s\n", alloy_records_where(r), j);
        cJSON_free(j);
    }
    if (stats) *stats = *alloy_records_get_stats(r);
    alloy_records_close(r);
    if (*st) {
        free(out);
        return NULL;
    }
    return out;
}

/* Replaces every occurrence of the folder's path in s by "D" (short expectations). */
static void strip_dir(char *s, const char *dir) {
    size_t k = strlen(dir);
    char *p;
    while ((p = strstr(s, dir)) != NULL) {
        *p = 'D';
        memmove(p + 1, p + k, strlen(p + k) + 1);
    }
}

/* JSONL: blank lines and CR LF, lines numbered with the blank ones, any value unless objects
 * are asked for; strict errors name the line, lenient skips count it. */
static void test_records_jsonl(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *p = path_in(dir, "a.jsonl");
    write_text(p, "{\"a\": 1}\r\n\n  \t\n[1, 2] \n\"text\"\r\n{\"b\": {\"c\": null}}");
    alloy_status st;
    alloy_records_options o = {.format = ALLOY_RECORDS_JSONL};
    char *got = all_records(p, &o, &st, NULL);
    REQUIRE(got, "%s", alloy_last_error());
    strip_dir(got, dir);
    EXPECT(!strcmp(got, "D/a.jsonl:1={\"a\":1}\nD/a.jsonl:4=[1,2]\nD/a.jsonl:5=\"text\"\nD/a.jsonl:6={\"b\":{\"c\":null}}\n"),
           "records:\n%s", got);
    free(got);
    o.objects = true;
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl:4: not a JSON object") && !strchr(alloy_last_error(), '\n'), "%s",
           alloy_last_error());
    free(got);
    write_text(p, "{\"a\": 1}\n{\"a\": 2} trailing\n{\"a\": oops}\n7\n{\"a\": 3}\n");
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl:2: not valid JSON"), "%s", alloy_last_error());
    free(got);
    o.lenient = true;
    alloy_records_stats rs;
    got = all_records(p, &o, &st, &rs);
    REQUIRE(got, "%s", alloy_last_error());
    strip_dir(got, dir);
    EXPECT(!strcmp(got, "D/a.jsonl:1={\"a\":1}\nD/a.jsonl:5={\"a\":3}\n"), "lenient:\n%s", got);
    EXPECT(rs.records == 2 && rs.malformed == 3 && rs.files == 1 && strstr(rs.first_bad, "a.jsonl:2: not valid JSON"),
           "records %llu, malformed %llu, first bad \"%s\"", (unsigned long long)rs.records, (unsigned long long)rs.malformed,
           rs.first_bad);
    free(got);
    // a line longer than the reading block (1 MiB), compressed
    size_t L = 2500000;
    char *big = malloc(L + 64);
    int k = snprintf(big, 64, "{\"a\": 0}\n{\"long\": \"");
    memset(big + k, 'x', L);
    snprintf(big + k + L, 64, "\"}\n{\"a\": 9}\n");
    char *pz = path_in(dir, "big.jsonl.zst");
    pack_write(pz, big, 'z');
    alloy_records *r;
    REQUIRE(alloy_records_open(&r, pz, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const cJSON *rec;
    bool end;
    int n = 0;
    size_t long_len = 0;
    while (alloy_records_next(r, &rec, &end) == ALLOY_STATUS_OK && !end) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, "long");
        if (cJSON_IsString(v)) long_len = strlen(v->valuestring);
        n++;
    }
    EXPECT(end && n == 3 && long_len == L && alloy_records_line(r) == 3, "%d records, long %zu, %s", n, long_len, alloy_last_error());
    alloy_records_close(r);
    free(big);
    alloy_free(p), alloy_free(pz);
}

/* Arrays: told by the first byte (after white space and a byte-order mark), elements numbered
 * from 1; errors name the element; an array that does not parse is one FORMAT error. */
static void test_records_array(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *p = path_in(dir, "a.jsonl"); // the name does not decide
    write_text(p, "\xEF\xBB\xBF \n [ {\"a\": 1},\n  {\"a\": 2},\n  3 ]\n");
    alloy_status st;
    alloy_records_options o = {0};
    char *got = all_records(p, &o, &st, NULL);
    REQUIRE(got, "%s", alloy_last_error());
    strip_dir(got, dir);
    EXPECT(!strcmp(got, "D/a.jsonl: element 1={\"a\":1}\nD/a.jsonl: element 2={\"a\":2}\nD/a.jsonl: element 3=3\n"), "array:\n%s",
           got);
    free(got);
    o.objects = true;
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl: element 3: not a JSON object"), "%s", alloy_last_error());
    free(got);
    o.lenient = true;
    alloy_records_stats rs;
    got = all_records(p, &o, &st, &rs);
    EXPECT(got && rs.records == 2 && rs.malformed == 1 && strstr(rs.first_bad, "a.jsonl: element 3: not a JSON object"), "%s",
           rs.first_bad);
    free(got);
    // broken arrays, and the formats forced
    o = (alloy_records_options){.objects = true};
    write_text(p, "[{\"a\": 1}, {\"a\": 2}");
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl: not valid JSON"), "%s", alloy_last_error());
    write_text(p, "[{\"a\": 1}] [2]");
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl: not valid JSON"), "%s", alloy_last_error());
    write_text(p, "{\"a\": 1}\n");
    o.format = ALLOY_RECORDS_ARRAY;
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl: not a JSON array"), "%s", alloy_last_error());
    write_text(p, "[{\"a\": 1},\n{\"a\": 2}]\n");
    o.format = ALLOY_RECORDS_JSONL;
    got = all_records(p, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("a.jsonl:1: not valid JSON"), "%s", alloy_last_error());
    // an array compressed with gzip
    char *pg = path_in(dir, "b.json.gz");
    pack_write(pg, "[{\"x\": \"y\"}]", 'g');
    o.format = ALLOY_RECORDS_AUTO;
    got = all_records(pg, &o, &st, NULL);
    EXPECT(got && strstr(got, "b.json.gz: element 1={\"x\":\"y\"}"), "%s", got ? got : alloy_last_error());
    free(got);
    alloy_free(p), alloy_free(pg);
}

/* A folder of mixed files: every file in name order (subfolders in place), hidden entries
 * skipped, binary files (also once decompressed) skipped and counted. */
static void test_records_folder(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *sub = path_in(dir, "b"), *files[7];
    alloy_mkdir_p(sub);
    const char *names[] = {"a.json", "b/x.jsonl.zst", "c.jsonl.gz", "d.bin", "B.jsonl", ".hidden.jsonl", "e.gz"};
    for (int i = 0; i < 7; i++) files[i] = path_in(dir, names[i]);
    pack_write(files[0], "[{\"id\": 1}, {\"id\": 2}]", 0);
    pack_write(files[1], "{\"id\": 3}\n\n{\"id\": 4}\n", 'z');
    pack_write(files[2], "{\"id\": 5}\n", 'g');
    pack_write_bytes(files[3], "{\"id\": 0}\0", 10);
    pack_write(files[4], "{\"id\": 0.5}", 0); // 'B' sorts before 'a'
    pack_write(files[5], "{\"id\": -1}", 0);
    uint8_t *g;
    size_t ng = pack_gzip("\0\1\2binary", 9, &g);
    pack_write_bytes(files[6], g, ng);
    free(g);
    alloy_status st;
    alloy_records_stats rs;
    alloy_records_options o = {.objects = true};
    char *got = all_records(dir, &o, &st, &rs);
    REQUIRE(got, "%s", alloy_last_error());
    strip_dir(got, dir);
    EXPECT(!strcmp(got, "D/B.jsonl:1={\"id\":0.5}\nD/a.json: element 1={\"id\":1}\nD/a.json: element 2={\"id\":2}\n"
                        "D/b/x.jsonl.zst:1={\"id\":3}\nD/b/x.jsonl.zst:3={\"id\":4}\nD/c.jsonl.gz:1={\"id\":5}\n"),
           "folder:\n%s", got);
    EXPECT(rs.files == 4 && rs.skipped_binary == 2 && rs.records == 6, "files %llu, binary %llu, records %llu",
           (unsigned long long)rs.files, (unsigned long long)rs.skipped_binary, (unsigned long long)rs.records);
    free(got);
    // the list alone
    alloy_file_list l = {0};
    REQUIRE(alloy_file_list_add(&l, dir) == ALLOY_STATUS_OK && alloy_file_list_add(&l, files[2]) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    EXPECT(l.n == 7 && strstr(l.paths[0], "/B.jsonl") && strstr(l.paths[2], "/b/x.jsonl.zst") && strstr(l.paths[5], "/e.gz") &&
               l.paths[6] != files[2] && !strcmp(l.paths[6], files[2]),
           "%zu files", l.n);
    alloy_file_list_free(&l);
    // an error in the third file names it; an empty folder has no records; a missing path fails
    pack_write(files[2], "{\"id\": 5}\n{\"id\": \n", 'g');
    got = all_records(dir, &o, &st, NULL);
    EXPECT(!got && st == ALLOY_STATUS_FORMAT && says("c.jsonl.gz:2: not valid JSON"), "%s", alloy_last_error());
    got = all_records(sub, &o, &st, &rs); // b/ holds one file
    EXPECT(got && rs.records == 2, "%s", alloy_last_error());
    free(got);
    remove(files[1]);
    got = all_records(sub, &o, &st, &rs);
    EXPECT(got && !*got && rs.records == 0 && rs.files == 0, "%s", alloy_last_error());
    free(got);
    alloy_records *r;
    EXPECT(alloy_records_open(&r, "/nonexistent/data", &o) == ALLOY_STATUS_IO && says("/nonexistent/data"), "%s",
           alloy_last_error());
    for (int i = 0; i < 7; i++) alloy_free(files[i]);
    alloy_free(sub);
}

/* Out of memory anywhere while reading a folder: NOMEM, nothing leaked or crashed. */
static void test_records_out_of_memory(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *a = path_in(dir, "a.json"), *b = path_in(dir, "b.jsonl.gz");
    pack_write(a, "[{\"id\": 1}, {\"id\": 2}]", 0);
    pack_write(b, "{\"id\": 3}\n{\"id\": 4}\n", 'g');
    int ok_at = -1;
    for (long n = 1; n < 400 && ok_at < 0; n++) {
        alloy_alloc_fail_after(n);
        alloy_status st;
        char *got = all_records(dir, NULL, &st, NULL);
        alloy_alloc_fail_after(0);
        EXPECT(st == ALLOY_STATUS_OK || st == ALLOY_STATUS_NOMEM, "fail after %ld: status %d", n, st);
        if (got) ok_at = (int)n;
        free(got);
    }
    EXPECT(ok_at > 1, "never read the folder (%d)", ok_at);
    alloy_free(a), alloy_free(b);
}

/* Damaged files (bytes flipped, cut short) in every shape: OK or a FORMAT error naming the
 * file, never a crash or a hang (with make asan: no memory error). */
static void test_records_fuzz(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *p = path_in(dir, "f");
    const char *text = "{\"prompt\": \"a\", \"response\": \"b\"}\n\n[1, {\"x\": [true, null, 2.5e3]}]\n{\"s\": \"\\u00e9\\n\"}\n";
    const char *arr = "[{\"prompt\": \"a\"}, {\"b\": [1, 2, {\"c\": \"d\"}]}, \"e\", 7]";
    uint8_t *forms[4];
    size_t lens[4];
    lens[0] = pack_gzip(text, strlen(text), &forms[0]);
    lens[1] = pack_zstd(text, strlen(text), &forms[1]);
    lens[2] = pack_gzip(arr, strlen(arr), &forms[2]);
    forms[3] = (uint8_t *)strdup(arr);
    lens[3] = strlen(arr);
    alloy_rng rng;
    alloy_rng_seed(&rng, 2024);
    uint8_t buf[4096];
    int bad = 0;
    for (int it = 0; it < 800; it++) {
        int f = it % 4;
        size_t n = lens[f];
        memcpy(buf, forms[f], n);
        if (alloy_rng_below(&rng, 2)) n = (size_t)alloy_rng_below(&rng, n + 1);
        for (int k = (int)alloy_rng_below(&rng, 4); k > 0 && n > 0; k--) buf[alloy_rng_below(&rng, n)] ^= (uint8_t)(1 + alloy_rng_below(&rng, 255));
        pack_write_bytes(p, buf, n);
        alloy_records_options o = {.objects = it % 3 == 0, .lenient = it % 2 == 0};
        alloy_status st;
        char *got = all_records(p, &o, &st, NULL);
        if (!(st == ALLOY_STATUS_OK || (st == ALLOY_STATUS_FORMAT && says(p) && !strchr(alloy_last_error(), '\n')))) {
            if (bad++ < 5) fprintf(stderr, "  iteration %d: status %d, \"%s\"\n", it, st, alloy_last_error());
        }
        free(got);
    }
    EXPECT(bad == 0, "%d damaged files gave other than OK or one FORMAT line", bad);
    for (int i = 0; i < 4; i++) free(forms[i]);
    alloy_free(p);
}

/* ---- alignment data through the records ---- */

static const char *const sft_records[] = {
    "{\"prompt\": \"What is 2+2?\", \"response\": \"Four.\"}",
    "{\"prompt\": \"Hi\", \"completion\": \"Hello\"}",
    "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
    "{\"prompt\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}], \"response\": \"R\"}",
    "{\"prompt\": \"Opposite of hot?\", \"response\": \"Cold.\"}",
};
#define N_SFT 5

/* Records [from, to) of sft_records as JSONL (one per line, a blank line first when `blank`) or
 * as a JSON array over several lines, in buf. */
static const char *sft_text(char *buf, size_t cap, int from, int to, bool array, bool blank) {
    size_t n = (size_t)snprintf(buf, cap, "%s%s", array ? "[\n  " : "", blank ? "\n" : "");
    for (int i = from; i < to; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", sft_records[i], i + 1 < to ? (array ? ",\n  " : "\n") : "");
    snprintf(buf + n, cap - n, "%s", array ? "\n]\n" : "\n");
    return buf;
}

static bool same_data(const alloy_align_data *a, const alloy_align_data *b) {
    return a->n_tokens == b->n_tokens && a->n_seqs == b->n_seqs && a->n_examples == b->n_examples &&
           !memcmp(a->tokens, b->tokens, sizeof(int32_t) * (size_t)a->n_tokens) && !memcmp(a->mask, b->mask, (size_t)a->n_tokens) &&
           !memcmp(a->seq_start, b->seq_start, sizeof(int64_t) * (size_t)(a->n_seqs + 1)) &&
           !memcmp(a->ex_start, b->ex_start, sizeof(int64_t) * (size_t)(a->n_examples + 1)) && a->fingerprint == b->fingerprint;
}

/* SFT examples given as a folder of mixed files, a JSON array, a .jsonl.gz or a .jsonl.zst are
 * the same tokens, masks and fingerprint as the same records in one .jsonl; ex_line is the
 * line or element in its file; errors name the file inside the folder and the element. */
static void test_align_data_shapes(void) {
    alloy_tokenizer *bytes = NULL, *tok = NULL;
    REQUIRE(alloy_tokenizer_create(&bytes, "bytes") == ALLOY_STATUS_OK &&
                alloy_chat_tokenizer(bytes, &tok, NULL, NULL, NULL) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    alloy_tokenizer_destroy(bytes);
    char dir[300], buf[4096];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    char *one = path_in(dir, "one.jsonl"), *arr = path_in(dir, "all.json"), *gz = path_in(dir, "all.jsonl.gz"),
         *zs = path_in(dir, "all.jsonl.zst"), *folder = path_in(dir, "parts"), *p1 = path_in(dir, "parts/1.jsonl"),
         *p2 = path_in(dir, "parts/2/x.json"), *p3 = path_in(dir, "parts/3.jsonl.zst"), *p4 = path_in(dir, "parts/4.bin");
    write_text(one, sft_text(buf, sizeof buf, 0, N_SFT, false, true));
    write_text(arr, sft_text(buf, sizeof buf, 0, N_SFT, true, false));
    pack_write(gz, sft_text(buf, sizeof buf, 0, N_SFT, false, false), 'g');
    pack_write(zs, sft_text(buf, sizeof buf, 0, N_SFT, false, false), 'z');
    char *sub = path_in(folder, "2");
    alloy_mkdir_p(sub);
    alloy_free(sub);
    write_text(p1, sft_text(buf, sizeof buf, 0, 2, false, false));
    write_text(p2, sft_text(buf, sizeof buf, 2, 4, true, false));
    pack_write(p3, sft_text(buf, sizeof buf, 4, N_SFT, false, true), 'z');
    pack_write_bytes(p4, "\0\1\2", 3);
    alloy_align_data want, got;
    REQUIRE(alloy_align_data_read(&want, one, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512, NULL) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    EXPECT(want.n_examples == N_SFT && want.ex_line[0] == 2 && want.ex_line[4] == 6, "%lld examples",
           (long long)want.n_examples);
    const char *paths[] = {arr, gz, zs, folder};
    const int64_t lines[][N_SFT] = {{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}, {1, 2, 1, 2, 2}};
    for (int i = 0; i < 4; i++) {
        alloy_status s = alloy_align_data_read(&got, paths[i], tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512, NULL);
        REQUIRE(s == ALLOY_STATUS_OK, "%s: %s", paths[i], alloy_last_error());
        EXPECT(same_data(&got, &want), "%s: %lld tokens, %lld wanted", paths[i], (long long)got.n_tokens, (long long)want.n_tokens);
        EXPECT(!memcmp(got.ex_line, lines[i], sizeof lines[i]), "%s: lines %lld %lld %lld %lld %lld", paths[i],
               (long long)got.ex_line[0], (long long)got.ex_line[1], (long long)got.ex_line[2], (long long)got.ex_line[3],
               (long long)got.ex_line[4]);
        alloy_align_data_free(&got);
    }
    // errors name the element of an array and the file inside the folder
    write_text(p2, "[{\"prompt\": \"a\", \"response\": \"b\"}, {\"prompt\": \"a\"}]");
    alloy_status s = alloy_align_data_read(&got, folder, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512, NULL);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("parts/2/x.json: element 2: needs \"prompt\" and \"response\"") &&
               got.n_examples == 0 && got.tokens == NULL,
           "%d %s", s, alloy_last_error());
    pack_write(gz, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": oops}\n", 'g');
    s = alloy_align_data_read(&got, gz, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512, NULL);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("all.jsonl.gz:2: not valid JSON"), "%d %s", s, alloy_last_error());
    // a folder of binary files only has no examples, and says why
    char *bin_only = path_in(dir, "bin");
    alloy_mkdir_p(bin_only);
    char *b1 = path_in(bin_only, "x.bin");
    pack_write_bytes(b1, "\0", 1);
    s = alloy_align_data_read(&got, bin_only, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512, NULL);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("no examples (1 binary file(s) skipped)"), "%d %s", s, alloy_last_error());
    alloy_align_data_free(&want);
    alloy_tokenizer_destroy(tok);
    alloy_free(one), alloy_free(arr), alloy_free(gz), alloy_free(zs), alloy_free(folder);
    alloy_free(p1), alloy_free(p2), alloy_free(p3), alloy_free(p4), alloy_free(bin_only), alloy_free(b1);
}

/* Anthropic's hh-rlhf as it is published (.jsonl.gz): every pair read. */
static void test_hh_rlhf(void) {
    char src[600];
    snprintf(src, sizeof src, "%s/../shared/data/preference/hh-rlhf-harmless-base-test.jsonl.gz", harness_root());
    if (!alloy_path_exists(src)) SKIP("data: %s is absent", src);
    alloy_records *r;
    alloy_records_options o = {.objects = true};
    REQUIRE(alloy_records_open(&r, src, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const cJSON *rec;
    bool end = false;
    int64_t n = 0, pairs = 0;
    alloy_status st;
    while (!(st = alloy_records_next(r, &rec, &end)) && !end) {
        n++;
        pairs += cJSON_IsString(cJSON_GetObjectItemCaseSensitive(rec, "chosen")) &&
                 cJSON_IsString(cJSON_GetObjectItemCaseSensitive(rec, "rejected"));
    }
    EXPECT(!st && end && n == 2312 && pairs == n && alloy_records_line(r) == 2312, "%lld records, %lld pairs: %s", (long long)n,
           (long long)pairs, alloy_last_error());
    alloy_records_close(r);
}

int main(void) {
    RUN(test_stream_formats);
    RUN(test_stream_damage);
    RUN(test_records_jsonl);
    RUN(test_records_array);
    RUN(test_records_folder);
    RUN(test_records_out_of_memory);
    RUN(test_records_fuzz);
    RUN(test_align_data_shapes);
    RUN(test_hh_rlhf);
    return harness_exit();
}
