/*
 * stream.c — reading files as people keep them (alloy/records.h): a byte stream that
 * decompresses gzip (zlib) and zstd (libzstd) as it reads, told by the magic bytes, and the
 * list of files under a folder in name order.
 *
 * The stream holds one block of the file's bytes (IN_BLOCK) and the decompressor's state; the
 * caller's buffer takes the plain bytes, so memory does not grow with the file.
 */
#include "alloy/records.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#define IN_BLOCK (256u << 10)

struct alloy_stream {
    FILE *fp;
    char *path;
    alloy_compression kind;
    uint8_t *in;            /* (IN_BLOCK) the file's bytes read but not yet used: [in_pos, in_n) */
    size_t in_n, in_pos;
    bool in_eof;            /* the file has been read to its end */
    z_stream z;             /* gzip */
    bool z_init;
    bool member_end;        /* gzip: the last member ended; another may follow */
    ZSTD_DStream *zd;       /* zstd */
    size_t zhint;           /* zstd: what the last call that did something returned (0: a frame ended) */
    bool done;              /* the data has ended */
    alloy_status err;       /* a failure that made the stream unusable */
};

static const char *kind_name(alloy_compression k) { return k == ALLOY_COMPRESSION_GZIP ? "gzip" : "zstd"; }

/* Reads the next block of the file when the last is used up. */
static alloy_status refill(alloy_stream *s) {
    if (s->in_pos < s->in_n || s->in_eof) return ALLOY_STATUS_OK;
    s->in_pos = 0;
    s->in_n = fread(s->in, 1, IN_BLOCK, s->fp);
    if (ferror(s->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error: %s", s->path, strerror(errno));
    if (s->in_n < IN_BLOCK) s->in_eof = true;
    return ALLOY_STATUS_OK;
}

static bool input_left(const alloy_stream *s) { return s->in_pos < s->in_n; }

alloy_status alloy_stream_open(alloy_stream **out, const char *path) {
    *out = NULL;
    struct stat info;
    if (stat(path, &info) == 0 && S_ISDIR(info.st_mode))
        return alloy_fail(ALLOY_STATUS_IO, "%s: is a folder, expected a file", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    alloy_stream *s = alloy_calloc(1, sizeof *s);
    if (s) {
        s->fp = fp;
        s->path = alloy_strdup(path);
        s->in = alloy_malloc(IN_BLOCK);
    } else {
        fclose(fp);
    }
    if (!s || !s->path || !s->in) {
        alloy_stream_close(s);
        return ALLOY_STATUS_NOMEM;
    }
    alloy_status st = refill(s);
    static const uint8_t gz[2] = {0x1f, 0x8b}, zs[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if (!st && s->in_n >= 2 && !memcmp(s->in, gz, 2)) {
        s->kind = ALLOY_COMPRESSION_GZIP;
        if (inflateInit2(&s->z, 15 + 16) != Z_OK) st = alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot start zlib", path);
        else s->z_init = true;
    } else if (!st && s->in_n >= 4 && !memcmp(s->in, zs, 4)) {
        s->kind = ALLOY_COMPRESSION_ZSTD;
        s->zd = ZSTD_createDStream();
        if (!s->zd || ZSTD_isError(ZSTD_initDStream(s->zd))) st = alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot start zstd", path);
    }
    if (st) {
        alloy_stream_close(s);
        return st;
    }
    *out = s;
    return ALLOY_STATUS_OK;
}

void alloy_stream_close(alloy_stream *s) {
    if (!s) return;
    if (s->fp) fclose(s->fp);
    if (s->z_init) inflateEnd(&s->z);
    ZSTD_freeDStream(s->zd);
    alloy_free(s->path);
    alloy_free(s->in);
    alloy_free(s);
}

alloy_compression alloy_stream_compression(const alloy_stream *s) { return s->kind; }
const char *alloy_stream_path(const alloy_stream *s) { return s->path; }

static alloy_status truncated(const alloy_stream *s) {
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: truncated %s data (the file ends inside the compressed stream)", s->path,
                      kind_name(s->kind));
}

/* Plain bytes: what is left of the first block, then the file. */
static alloy_status read_plain(alloy_stream *s, uint8_t *buf, size_t n, size_t *got) {
    size_t k = s->in_n - s->in_pos < n ? s->in_n - s->in_pos : n;
    memcpy(buf, s->in + s->in_pos, k);
    s->in_pos += k;
    if (k < n && !s->in_eof) {
        k += fread(buf + k, 1, n - k, s->fp);
        if (ferror(s->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error: %s", s->path, strerror(errno));
    }
    if (k < n) s->done = true;
    *got = k;
    return ALLOY_STATUS_OK;
}

/* gzip: members one after another (as gzip and pigz write when files are concatenated). */
static alloy_status read_gzip(alloy_stream *s, uint8_t *buf, size_t n, size_t *got) {
    size_t out = 0;
    while (out < n && !s->done) {
        alloy_status st = refill(s);
        if (st) return st;
        if (s->member_end) {
            if (!input_left(s)) { // the file ends after a whole member
                s->done = true;
                break;
            }
            if (s->in[s->in_pos] != 0x1f)
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: corrupt gzip data (bytes after the end of the stream)", s->path);
            inflateReset(&s->z);
            s->member_end = false;
        }
        s->z.next_in = s->in + s->in_pos;
        s->z.avail_in = (uInt)(s->in_n - s->in_pos);
        s->z.next_out = buf + out;
        s->z.avail_out = (uInt)(n - out > UINT32_MAX ? UINT32_MAX : n - out);
        uInt before = s->z.avail_out;
        int ret = inflate(&s->z, Z_NO_FLUSH);
        s->in_pos = s->in_n - s->z.avail_in;
        out += before - s->z.avail_out;
        if (ret == Z_STREAM_END) s->member_end = true;
        else if (ret == Z_MEM_ERROR) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: zlib is out of memory", s->path);
        else if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_STREAM_ERROR)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: corrupt gzip data (%s)", s->path, s->z.msg ? s->z.msg : "zlib error");
        else if (before == s->z.avail_out && !input_left(s) && s->in_eof)
            return truncated(s);
    }
    *got = out;
    return ALLOY_STATUS_OK;
}

/* zstd: frames one after another (skippable frames are passed over by libzstd). */
static alloy_status read_zstd(alloy_stream *s, uint8_t *buf, size_t n, size_t *got) {
    ZSTD_outBuffer ob = {buf, n, 0};
    while (ob.pos < n && !s->done) {
        alloy_status st = refill(s);
        if (st) return st;
        ZSTD_inBuffer ib = {s->in, s->in_n, s->in_pos};
        size_t before = ob.pos, in_before = ib.pos;
        size_t ret = ZSTD_decompressStream(s->zd, &ob, &ib);
        s->in_pos = ib.pos;
        if (ZSTD_isError(ret)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: corrupt zstd data (%s)", s->path, ZSTD_getErrorName(ret));
        if (ob.pos != before || ib.pos != in_before) s->zhint = ret; // a call with nothing to do asks for the next frame
        if (ob.pos == before && !input_left(s) && s->in_eof) {
            if (s->zhint != 0) return truncated(s);
            s->done = true;
        }
    }
    *got = ob.pos;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_stream_read(alloy_stream *s, void *buf, size_t n, size_t *got) {
    *got = 0;
    if (s->err) return alloy_fail(s->err, "%s: read after an error", s->path);
    if (s->done || n == 0) return ALLOY_STATUS_OK;
    alloy_status st = s->kind == ALLOY_COMPRESSION_GZIP   ? read_gzip(s, buf, n, got)
                      : s->kind == ALLOY_COMPRESSION_ZSTD ? read_zstd(s, buf, n, got)
                                                          : read_plain(s, buf, n, got);
    if (st) {
        s->err = st;
        *got = 0;
    }
    return st;
}

bool alloy_bytes_look_binary(const void *data, size_t n) { return n && memchr(data, 0, n) != NULL; }

/* ---- lists of files ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends one path (copied). */
static alloy_status list_push(alloy_file_list *l, const char *path) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        char **np = alloy_realloc(l->paths, sizeof(char *) * l->cap, sizeof(char *) * nc);
        if (!np) return ALLOY_STATUS_NOMEM;
        l->paths = np;
        l->cap = nc;
    }
    l->paths[l->n] = alloy_strdup(path);
    if (!l->paths[l->n]) return ALLOY_STATUS_NOMEM;
    l->n++;
    return ALLOY_STATUS_OK;
}

/* The entries of folder `path` other than hidden ones, joined to it and sorted, into `names`;
 * an unreadable folder is an IO error at the top of the walk and passed over below it. */
static alloy_status folder_entries(const char *path, bool top, alloy_file_list *names) {
    DIR *d = opendir(path);
    if (!d) return top ? alloy_fail(ALLOY_STATUS_IO, "%s: cannot read folder: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    alloy_status s = ALLOY_STATUS_OK;
    struct dirent *e;
    while (!s && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; // ".", "..", and hidden entries (.git)
        char *p = alloy_path_join(path, e->d_name);
        s = p ? list_push(names, p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    closedir(d);
    if (!s && names->n) qsort(names->paths, names->n, sizeof *names->paths, cmp_str);
    return s;
}

static alloy_status walk(alloy_file_list *l, const char *path, bool top) {
    struct stat st;
    if ((top ? stat(path, &st) : lstat(path, &st)) != 0)
        return top ? alloy_fail(ALLOY_STATUS_IO, "%s: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    if (S_ISLNK(st.st_mode) && (stat(path, &st) != 0 || !S_ISREG(st.st_mode))) return ALLOY_STATUS_OK;
    if (S_ISREG(st.st_mode) || (top && !S_ISDIR(st.st_mode))) return list_push(l, path); // a pipe named: read as it flows
    if (!S_ISDIR(st.st_mode)) return ALLOY_STATUS_OK;
    alloy_file_list names = {0};
    alloy_status s = folder_entries(path, top, &names);
    for (size_t i = 0; i < names.n && !s; i++) s = walk(l, names.paths[i], false);
    alloy_file_list_free(&names);
    return s;
}

alloy_status alloy_file_list_add(alloy_file_list *l, const char *path) { return walk(l, path, true); }

void alloy_file_list_free(alloy_file_list *l) {
    for (size_t i = 0; i < l->n; i++) alloy_free(l->paths[i]);
    alloy_free(l->paths);
    memset(l, 0, sizeof *l);
}
