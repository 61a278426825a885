/*
 * reader.c — documents from files: plain text (a file, or pieces cut at a separator), JSONL
 * (one object per line, text from named fields) and JSON arrays of objects, each plain or
 * compressed (gzip, zstd); folders walked recursively in name order. Files, folders, the
 * decompressing stream and the JSON records come from alloy/records.h (src/base), which the
 * alignment data reads through too; this file adds the text documents and the fields.
 *
 * Streaming: a text file is read in blocks and a JSONL file line by line, so one document at a
 * time is in memory whatever the corpus' size. Bad records are skipped and counted (the rule:
 * a line that is not a JSON object, or an object without the field as a string, is skipped);
 * only missing or unreadable paths, corrupt compressed data and unparseable arrays are errors.
 */
#include "alloy/data.h"
#include "alloy/records.h"

#include <cJSON.h>
#include <string.h>

#define BLOCK (1u << 20)

struct alloy_reader {
    alloy_reader_options opt;
    alloy_file_list files;  /* every file to read, in order */
    size_t next_file;       /* index of the next file to open */
    alloy_stream *st;       /* text: the open file */
    alloy_records *rec;     /* JSON: the open file's records */
    alloy_records_stats seen; /* JSON: the part of rec's counts already in stats */
    const char *path;       /* the open file (files.paths[k]) */
    uint64_t line;          /* text: number of the last document in the file */
    char *buf;              /* text: bytes read but not yet returned */
    size_t buf_n, buf_cap;
    size_t consumed;        /* text: bytes of buf already returned */
    bool eof;               /* text: the open file has been read to its end */
    char *doc;              /* a document assembled from JSON fields */
    size_t doc_cap;
    char where[512];
    alloy_reader_stats stats;
};

alloy_status alloy_reader_open(alloy_reader **out, const char *const *paths, int n_paths, const alloy_reader_options *opt) {
    *out = NULL;
    alloy_reader *r = alloy_calloc(1, sizeof *r);
    if (!r) return ALLOY_STATUS_NOMEM;
    if (opt) r->opt = *opt;
    if (!r->opt.field || !*r->opt.field) r->opt.field = "text";
    if (!r->opt.max_doc) r->opt.max_doc = 8u << 20;
    if (r->opt.separator && !*r->opt.separator) r->opt.separator = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n_paths && !s; i++) s = alloy_file_list_add(&r->files, paths[i]);
    if (!s && r->files.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "no input files");
    if (s) {
        alloy_reader_close(r);
        return s;
    }
    *out = r;
    return ALLOY_STATUS_OK;
}

static void close_current(alloy_reader *r) {
    alloy_stream_close(r->st);
    r->st = NULL;
    alloy_records_close(r->rec);
    r->rec = NULL;
}

void alloy_reader_close(alloy_reader *r) {
    if (!r) return;
    close_current(r);
    alloy_file_list_free(&r->files);
    alloy_free(r->buf);
    alloy_free(r->doc);
    alloy_free(r);
}

const char *alloy_reader_where(const alloy_reader *r) { return r->where; }
const alloy_reader_stats *alloy_reader_get_stats(const alloy_reader *r) { return &r->stats; }

static bool ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

/* The format of a file: as asked, or by its name less a compression suffix (.gz, .zst). */
static alloy_doc_format file_format(const alloy_reader *r, const char *path) {
    if (r->opt.format != ALLOY_DOC_AUTO) return r->opt.format;
    size_t n = strlen(path);
    static const char *const packed[] = {".gz", ".zst", ".zstd"};
    for (size_t i = 0; i < sizeof packed / sizeof packed[0]; i++)
        if (ends_with(path, n, packed[i])) n -= strlen(packed[i]);
    if (ends_with(path, n, ".jsonl") || ends_with(path, n, ".ndjson") || ends_with(path, n, ".json")) return ALLOY_DOC_AUTO;
    return ALLOY_DOC_TEXT;
}

static bool grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : BLOCK;
    while (c < need) c *= 2;
    char *nb = alloy_realloc(*buf, *cap, c);
    if (!nb) return false;
    *buf = nb;
    *cap = c;
    return true;
}

/* Reads up to `want` more bytes of the open text file onto the end of buf. */
static alloy_status read_block(alloy_reader *r, size_t want) {
    if (!grow(&r->buf, &r->buf_cap, r->buf_n + want)) return ALLOY_STATUS_NOMEM;
    size_t got;
    alloy_status s = alloy_stream_read(r->st, r->buf + r->buf_n, want, &got);
    if (s) return s;
    if (got < want) r->eof = true;
    r->buf_n += got;
    return ALLOY_STATUS_OK;
}

/* Adds what the open records counted since the last call to the reader's figures. */
static void absorb(alloy_reader *r) {
    const alloy_records_stats *rs = alloy_records_get_stats(r->rec);
    r->stats.files += rs->files - r->seen.files;
    r->stats.skipped_binary += rs->skipped_binary - r->seen.skipped_binary;
    r->stats.malformed += rs->malformed - r->seen.malformed;
    if (!r->stats.first_bad[0] && rs->first_bad[0]) snprintf(r->stats.first_bad, sizeof r->stats.first_bad, "%s", rs->first_bad);
    r->seen = *rs;
}

/* Opens the next file; *any false when there are none. Binary files are skipped (for JSON
 * files, by alloy_records). JSON: a JSONL file or an array, told by its first byte unless the
 * format is given. */
static alloy_status open_next(alloy_reader *r, bool *any) {
    *any = false;
    while (r->next_file < r->files.n) {
        r->path = r->files.paths[r->next_file++];
        r->buf_n = r->consumed = 0;
        r->line = 0;
        r->eof = false;
        alloy_doc_format f = file_format(r, r->path);
        if (f != ALLOY_DOC_TEXT) {
            alloy_records_options ro = {.format = f == ALLOY_DOC_JSONL  ? ALLOY_RECORDS_JSONL
                                                  : f == ALLOY_DOC_JSON ? ALLOY_RECORDS_ARRAY
                                                                        : ALLOY_RECORDS_AUTO,
                                        .objects = true, .lenient = true};
            memset(&r->seen, 0, sizeof r->seen);
            *any = true;
            return alloy_records_open(&r->rec, r->path, &ro);
        }
        alloy_status s = alloy_stream_open(&r->st, r->path);
        if (!s) s = read_block(r, ALLOY_SNIFF_BYTES);
        if (s) return s;
        if (alloy_bytes_look_binary(r->buf, r->buf_n)) {
            r->stats.skipped_binary++;
            close_current(r);
            continue;
        }
        r->stats.files++;
        *any = true;
        return ALLOY_STATUS_OK;
    }
    return ALLOY_STATUS_OK;
}

/* The text of an object's fields (comma-separated names) joined by blank lines, in r->doc;
 * false if a field is absent or not a string. */
static bool object_text(alloy_reader *r, const cJSON *obj, size_t *n) {
    const char *f = r->opt.field;
    size_t len = 0;
    while (*f) {
        const char *comma = strchr(f, ',');
        size_t k = comma ? (size_t)(comma - f) : strlen(f);
        char key[256];
        if (k >= sizeof key) return false;
        memcpy(key, f, k);
        key[k] = '\0';
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
        if (!cJSON_IsString(v)) return false;
        size_t vl = strlen(v->valuestring);
        if (vl == 0 && comma) { // an empty optional part (an instruction's empty "input") adds nothing
            f = comma + 1;
            continue;
        }
        if (!grow(&r->doc, &r->doc_cap, len + vl + 3)) return false;
        if (len) {
            memcpy(r->doc + len, "\n\n", 2);
            len += 2;
        }
        memcpy(r->doc + len, v->valuestring, vl);
        len += vl;
        f = comma ? comma + 1 : f + k;
    }
    if (!r->doc && !grow(&r->doc, &r->doc_cap, 1)) return false;
    r->doc[len] = '\0';
    *n = len;
    return true;
}

/* JSON (JSONL or an array): the next record that yields a document. Records that are not
 * objects are skipped by alloy_records (lenient); objects without the field here. */
static alloy_status next_record(alloy_reader *r, const char **doc, size_t *n, bool *got) {
    *got = false;
    for (;;) {
        const cJSON *obj;
        bool end;
        alloy_status s = alloy_records_next(r->rec, &obj, &end);
        absorb(r);
        if (s || end) return s;
        snprintf(r->where, sizeof r->where, "%s", alloy_records_where(r->rec));
        size_t tl;
        if (object_text(r, obj, &tl)) {
            *doc = r->doc;
            *n = tl;
            *got = true;
            return ALLOY_STATUS_OK;
        }
        r->stats.missing_field++;
        if (!r->stats.first_bad[0])
            snprintf(r->stats.first_bad, sizeof r->stats.first_bad, "%.*s: field missing or not a string",
                     (int)sizeof r->stats.first_bad - 40, r->where);
    }
}

/* Text: the next document of the open file: up to the separator, the end of the file, or
 * max_doc bytes (cut after the last line end within them). */
static alloy_status next_text(alloy_reader *r, const char **doc, size_t *n, bool *got) {
    *got = false;
    const char *sep = r->opt.separator;
    size_t sl = sep ? strlen(sep) : 0;
    for (;;) {
        size_t avail = r->buf_n - r->consumed;
        const char *base = r->buf + r->consumed;
        const char *at = sep ? memmem(base, avail, sep, sl) : NULL;
        size_t len = 0, skip = 0;
        bool have = false;
        if (at) {
            len = (size_t)(at - base);
            skip = len + sl;
            have = true;
        } else if (avail >= r->opt.max_doc) {
            len = r->opt.max_doc;
            const char *nl = NULL;
            for (size_t k = len; k > 0 && !nl; k--)
                if (base[k - 1] == '\n') nl = base + k;
            if (nl) len = (size_t)(nl - base);
            skip = len;
            have = true;
        } else if (r->eof) {
            if (avail == 0) return ALLOY_STATUS_OK;
            len = skip = avail;
            have = true;
        }
        if (have) {
            r->consumed += skip;
            r->line++;
            if (len == 0) continue; // two separators in a row
            snprintf(r->where, sizeof r->where, sep || r->line > 1 ? "%s:doc %llu" : "%s", r->path,
                     (unsigned long long)r->line);
            *doc = base;
            *n = len;
            *got = true;
            return ALLOY_STATUS_OK;
        }
        // need more bytes: compact, then read a block
        if (r->consumed) {
            memmove(r->buf, r->buf + r->consumed, avail);
            r->buf_n = avail;
            r->consumed = 0;
        }
        alloy_status s = read_block(r, BLOCK);
        if (s) return s;
    }
}

alloy_status alloy_reader_next(alloy_reader *r, const char **doc, size_t *n, bool *end) {
    *end = false;
    for (;;) {
        if (!r->st && !r->rec) {
            bool any;
            alloy_status s = open_next(r, &any);
            if (s) return s;
            if (!any) {
                *end = true;
                return ALLOY_STATUS_OK;
            }
        }
        bool got = false;
        alloy_status s = r->rec ? next_record(r, doc, n, &got) : next_text(r, doc, n, &got);
        if (s) return s;
        if (got) {
            r->stats.docs++;
            r->stats.bytes += *n;
            return ALLOY_STATUS_OK;
        }
        close_current(r);
    }
}
