/*
 * alloy/records.h — data files in the shapes people have them: a byte stream that decompresses
 * as it reads, lists of files from files and folders, and JSON records from JSONL files, JSON
 * arrays and folders of them. One reader for `alloy prepare` (src/data/reader.c) and for the
 * alignment data of sft, reward, dpo, ppo and score (src/tokenizer/conversation.c).
 *
 *     alloy_records *r;
 *     alloy_records_options o = {.objects = true};       // strict: a bad line is an error
 *     if (alloy_records_open(&r, "data/", &o)) return fail(alloy_last_error());
 *     for (;;) {
 *         const struct cJSON *rec;
 *         bool end;
 *         if (alloy_records_next(r, &rec, &end)) { ... }  // "data/b.jsonl.gz:7: not valid JSON"
 *         if (end) break;
 *         use(rec, alloy_records_where(r));              // "data/a.json: element 3"
 *     }
 *     alloy_records_close(r);
 *
 * Compression is told by the first bytes of a file, never by its name:
 *   1f 8b          gzip (zlib; several members one after another are read as one stream)
 *   28 b5 2f fd    zstd (libzstd; several frames likewise)
 *   anything else  plain bytes
 * Memory is bounded: the stream holds one block of compressed and one of plain bytes.
 *
 * Records. A file whose first byte other than white space (after a UTF-8 byte-order mark) is
 * '[' is a JSON array: it is parsed whole, then its elements are given one at a time and
 * numbered from 1 ("FILE: element N"). Any other file is JSONL: one JSON value per line, blank
 * lines skipped, only white space after the value on its line, lines numbered from 1
 * ("FILE:LINE"). A folder is every file under it (alloy_file_list_add's order); a file whose
 * first 8 KiB (after decompression) hold a NUL byte is skipped as binary and counted.
 */
#ifndef ALLOY_RECORDS_H
#define ALLOY_RECORDS_H

#include "alloy/base.h"

ALLOY_BEGIN_DECLS

struct cJSON;

/* ---- a decompressing byte stream -------------------------------------------------------- */

typedef enum alloy_compression {
    ALLOY_COMPRESSION_NONE = 0,
    ALLOY_COMPRESSION_GZIP,
    ALLOY_COMPRESSION_ZSTD,
} alloy_compression;

typedef struct alloy_stream alloy_stream;

/* Opens a file for reading and tells its compression by its magic bytes. IO error "PATH: ..."
 * when it cannot be opened. */
alloy_status alloy_stream_open(alloy_stream **out, const char *path);
/* Reads up to n plain bytes into buf; *got < n only at the end of the data. Compressed data
 * that is truncated or corrupt fails with FORMAT "PATH: truncated gzip data" (or "corrupt
 * ..."), a read error with IO; the stream is then unusable. */
alloy_status alloy_stream_read(alloy_stream *s, void *buf, size_t n, size_t *got);
alloy_compression alloy_stream_compression(const alloy_stream *s);
const char *alloy_stream_path(const alloy_stream *s);
void alloy_stream_close(alloy_stream *s); /* NULL is a no-op */

/* Whether bytes look binary (a NUL among them): what readers test on a file's first 8 KiB. */
#define ALLOY_SNIFF_BYTES 8192
bool alloy_bytes_look_binary(const void *data, size_t n);

/* ---- lists of files --------------------------------------------------------------------- */

typedef struct alloy_file_list {
    char **paths; /* (n) owned */
    size_t n, cap;
} alloy_file_list;

/* Appends `path` to the list: a file itself, a folder every regular file under it, walked
 * recursively in name order (byte order of the names), entries whose names start with '.'
 * (.git) skipped, symbolic links to files followed and to folders not. IO error naming `path`
 * when it is missing or an unreadable folder; what cannot be read below it is passed over. */
alloy_status alloy_file_list_add(alloy_file_list *l, const char *path);
void alloy_file_list_free(alloy_file_list *l);

/* ---- JSON records ----------------------------------------------------------------------- */

typedef enum alloy_records_format {
    ALLOY_RECORDS_AUTO = 0, /* by the first byte: '[' a JSON array, else JSONL */
    ALLOY_RECORDS_JSONL,    /* one value per line, whatever the first byte */
    ALLOY_RECORDS_ARRAY,    /* one JSON array (FORMAT "PATH: not a JSON array ..." otherwise) */
} alloy_records_format;

typedef struct alloy_records_options {
    alloy_records_format format;
    bool objects; /* every record must be a JSON object ("not a JSON object" otherwise) */
    bool lenient; /* a bad record (not valid JSON; not an object with `objects`) is skipped and
                     counted; default strict: FORMAT "FILE:LINE: not valid JSON" */
} alloy_records_options;

typedef struct alloy_records_stats {
    uint64_t files;          /* files read */
    uint64_t skipped_binary; /* files skipped as binary */
    uint64_t records;        /* records given */
    uint64_t malformed;      /* lenient: records skipped */
    char first_bad[256];     /* lenient: "FILE:LINE: why" of the first skipped record, "" if none */
} alloy_records_stats;

typedef struct alloy_records alloy_records;

/* Opens the records of a file or a folder (opts NULL: the defaults). IO error naming the path
 * when it is missing; an empty folder gives no records. */
alloy_status alloy_records_open(alloy_records **out, const char *path, const alloy_records_options *opts);
/* The next record: *rec is owned by the reader and valid until the next call; *end is set (and
 * *rec NULL) after the last. Errors: FORMAT naming the file and line or element (see the
 * options), or the stream's. */
alloy_status alloy_records_next(alloy_records *r, const struct cJSON **rec, bool *end);
/* Where the last record came from: "FILE:LINE" (JSONL) or "FILE: element N" (an array). */
const char *alloy_records_where(const alloy_records *r);
/* Its file, and its line (JSONL) or element (array) number, 1-based. */
const char *alloy_records_file(const alloy_records *r);
int64_t alloy_records_line(const alloy_records *r);
const alloy_records_stats *alloy_records_get_stats(const alloy_records *r);
void alloy_records_close(alloy_records *r); /* NULL is a no-op */

ALLOY_END_DECLS
#endif /* ALLOY_RECORDS_H */
