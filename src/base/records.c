/*
 * records.c — JSON records from JSONL files, JSON arrays and folders of them, compressed or
 * not (alloy/records.h). The one reader of record data: `alloy prepare`'s JSON documents
 * (src/data/reader.c) and the alignment examples (src/tokenizer/conversation.c).
 *
 * JSONL is read line by line through the decompressing stream (stream.c), so one line is in
 * memory at a time; an array is parsed whole, then its elements are given one by one.
 */
#include "alloy/records.h"

#include <cJSON.h>
#include <string.h>

#define BLOCK (1u << 20)

struct alloy_records {
    alloy_records_options opt;
    alloy_file_list files;  /* every file to read, in order */
    size_t next_file;       /* index of the next file to open */
    const char *file;       /* the open file (files.paths[k]); NULL when none is open */
    alloy_stream *st;       /* JSONL: its stream */
    char *buf;              /* JSONL: bytes read, not yet used: [pos, buf_n) */
    size_t buf_n, buf_cap, pos;
    bool eof;               /* JSONL: the stream has ended */
    cJSON *root;            /* array: the parsed file */
    cJSON *elem;            /* array: the next element */
    cJSON *rec;             /* JSONL: the last record, owned */
    int64_t line;           /* line or element number of the last record */
    char where[512];        /* "FILE:LINE" or "FILE: element N" */
    alloy_records_stats stats;
};

alloy_status alloy_records_open(alloy_records **out, const char *path, const alloy_records_options *opts) {
    *out = NULL;
    alloy_records *r = alloy_calloc(1, sizeof *r);
    if (!r) return ALLOY_STATUS_NOMEM;
    if (opts) r->opt = *opts;
    alloy_status s = alloy_file_list_add(&r->files, path);
    if (s) {
        alloy_records_close(r);
        return s;
    }
    *out = r;
    return ALLOY_STATUS_OK;
}

static void close_file(alloy_records *r) {
    alloy_stream_close(r->st);
    r->st = NULL;
    cJSON_Delete(r->root);
    r->root = r->elem = NULL;
    r->file = NULL;
}

void alloy_records_close(alloy_records *r) {
    if (!r) return;
    close_file(r);
    cJSON_Delete(r->rec);
    alloy_file_list_free(&r->files);
    alloy_free(r->buf);
    alloy_free(r);
}

const char *alloy_records_where(const alloy_records *r) { return r->where; }
const char *alloy_records_file(const alloy_records *r) { return r->file ? r->file : ""; }
int64_t alloy_records_line(const alloy_records *r) { return r->line; }
const alloy_records_stats *alloy_records_get_stats(const alloy_records *r) { return &r->stats; }

/* Reads up to `want` more bytes of the stream onto the end of buf (compacting what was used);
 * sets eof when the stream ends. */
static alloy_status read_more(alloy_records *r, size_t want) {
    if (r->pos) {
        memmove(r->buf, r->buf + r->pos, r->buf_n - r->pos);
        r->buf_n -= r->pos;
        r->pos = 0;
    }
    if (r->buf_n + want + 1 > r->buf_cap) {
        size_t c = r->buf_cap ? r->buf_cap : BLOCK;
        while (c < r->buf_n + want + 1) {
            if (c > SIZE_MAX / 2) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: too large to read", r->file);
            c *= 2;
        }
        char *nb = alloy_realloc(r->buf, r->buf_cap, c);
        if (!nb) return ALLOY_STATUS_NOMEM;
        r->buf = nb;
        r->buf_cap = c;
    }
    size_t got;
    alloy_status s = alloy_stream_read(r->st, r->buf + r->buf_n, want, &got);
    if (s) return s;
    r->buf_n += got;
    if (got < want) r->eof = true;
    return ALLOY_STATUS_OK;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Whether [p, end) holds only white space. */
static bool blank(const char *p, const char *end) {
    while (p < end && is_space(*p)) p++;
    return p == end;
}

/* The first byte of the file other than white space, reading as far as needed ('\0' if the
 * file is blank). */
static alloy_status first_byte(alloy_records *r, char *c) {
    size_t k = r->pos;
    for (;;) {
        while (k < r->buf_n && is_space(r->buf[k])) k++;
        if (k < r->buf_n || r->eof) break;
        size_t off = k - r->pos;
        alloy_status s = read_more(r, BLOCK);
        if (s) return s;
        k = r->pos + off;
    }
    *c = k < r->buf_n ? r->buf[k] : '\0';
    return ALLOY_STATUS_OK;
}

static alloy_status not_array(const alloy_records *r) {
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a JSON array (a file of one JSON object per line is JSONL)", r->file);
}

/* The rest of the file parsed as one JSON array. */
static alloy_status parse_array(alloy_records *r) {
    alloy_status s = ALLOY_STATUS_OK;
    while (!r->eof && !s) s = read_more(r, BLOCK);
    if (s) return s;
    const char *text = r->buf + r->pos, *end = NULL;
    size_t n = r->buf_n - r->pos;
    r->root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
    if (!r->root) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not valid JSON (near byte %zu)", r->file, (size_t)(end ? end - r->buf : 0));
    if (end && !blank(end, text + n))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not valid JSON (more after the value, at byte %zu)", r->file,
                          (size_t)(end - r->buf));
    if (!cJSON_IsArray(r->root)) return not_array(r);
    r->elem = r->root->child;
    alloy_free(r->buf); // the text is no longer needed
    r->buf = NULL;
    r->buf_n = r->buf_cap = r->pos = 0;
    return ALLOY_STATUS_OK;
}

/* Opens the next file that is not binary: its stream, and for an array its parse. *any is
 * false when no file is left. */
static alloy_status open_next(alloy_records *r, bool *any) {
    *any = false;
    while (r->next_file < r->files.n) {
        r->file = r->files.paths[r->next_file++];
        r->buf_n = r->pos = 0;
        r->eof = false;
        r->line = 0;
        alloy_status s = alloy_stream_open(&r->st, r->file);
        if (!s) s = read_more(r, ALLOY_SNIFF_BYTES);
        if (s) return s;
        if (alloy_bytes_look_binary(r->buf, r->buf_n)) {
            r->stats.skipped_binary++;
            close_file(r);
            continue;
        }
        r->stats.files++;
        if (r->buf_n >= 3 && !memcmp(r->buf, "\xEF\xBB\xBF", 3)) r->pos = 3; // a UTF-8 byte-order mark
        char c = '\0';
        if (r->opt.format != ALLOY_RECORDS_JSONL && (s = first_byte(r, &c))) return s;
        if (r->opt.format == ALLOY_RECORDS_ARRAY && c != '[') return not_array(r);
        if (c == '[') {
            if ((s = parse_array(r))) return s;
            alloy_stream_close(r->st);
            r->st = NULL;
        }
        *any = true;
        return ALLOY_STATUS_OK;
    }
    return ALLOY_STATUS_OK;
}

/* A bad record: FORMAT "WHERE: why", or (lenient) counted and noted, to be skipped. */
static alloy_status bad_record(alloy_records *r, const char *why) {
    if (!r->opt.lenient) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s", r->where, why);
    r->stats.malformed++;
    if (!r->stats.first_bad[0]) // a long path is cut: the note is for a person to look at
        snprintf(r->stats.first_bad, sizeof r->stats.first_bad, "%.*s: %s", (int)sizeof r->stats.first_bad - 32, r->where, why);
    return ALLOY_STATUS_OK;
}

/* The value on the next line of the open JSONL file that holds one (owned by r->rec); *rec
 * NULL at the file's end. */
static alloy_status next_line(alloy_records *r, const cJSON **rec) {
    for (;;) {
        char *nl = memchr(r->buf + r->pos, '\n', r->buf_n - r->pos);
        while (!nl && !r->eof) {
            size_t old = r->buf_n - r->pos;
            alloy_status s = read_more(r, BLOCK);
            if (s) return s;
            nl = memchr(r->buf + old, '\n', r->buf_n - old);
        }
        if (!nl && r->pos >= r->buf_n) return ALLOY_STATUS_OK;
        const char *p = r->buf + r->pos, *le = nl ? nl : r->buf + r->buf_n;
        r->pos = nl ? (size_t)(nl - r->buf) + 1 : r->buf_n;
        r->line++;
        if (blank(p, le)) continue; // blank lines are not records
        snprintf(r->where, sizeof r->where, "%s:%lld", r->file, (long long)r->line);
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(le - p), &end, 0);
        alloy_status s = ALLOY_STATUS_OK;
        if (!v || (end && !blank(end, le))) s = bad_record(r, "not valid JSON"); // only white space may follow the value
        else if (r->opt.objects && !cJSON_IsObject(v)) s = bad_record(r, "not a JSON object");
        else {
            *rec = r->rec = v;
            return ALLOY_STATUS_OK;
        }
        cJSON_Delete(v);
        if (s) return s;
    }
}

/* The next element of the open array; *rec NULL at its end. */
static alloy_status next_element(alloy_records *r, const cJSON **rec) {
    while (r->elem) {
        cJSON *e = r->elem;
        r->elem = e->next;
        r->line++;
        snprintf(r->where, sizeof r->where, "%s: element %lld", r->file, (long long)r->line);
        if (r->opt.objects && !cJSON_IsObject(e)) {
            alloy_status s = bad_record(r, "not a JSON object");
            if (s) return s;
            continue;
        }
        *rec = e;
        return ALLOY_STATUS_OK;
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_records_next(alloy_records *r, const cJSON **rec, bool *end) {
    *rec = NULL;
    *end = false;
    cJSON_Delete(r->rec);
    r->rec = NULL;
    for (;;) {
        if (!r->file) {
            bool any;
            alloy_status s = open_next(r, &any);
            if (s) {
                close_file(r);
                return s;
            }
            if (!any) {
                *end = true;
                return ALLOY_STATUS_OK;
            }
        }
        alloy_status s = r->root ? next_element(r, rec) : next_line(r, rec);
        if (s) return s;
        if (*rec) {
            r->stats.records++;
            return ALLOY_STATUS_OK;
        }
        close_file(r);
    }
}
