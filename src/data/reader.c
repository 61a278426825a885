/*
 * reader.c — documents from files: plain text (a file, or pieces cut at a separator), JSONL
 * (one object per line, text from named fields) and JSON arrays of objects; folders walked
 * recursively in name order.
 *
 * Streaming: a text file is read in blocks and a JSONL file line by line, so one document at a
 * time is in memory whatever the corpus' size. Bad records are skipped and counted (the rule:
 * a line that is not a JSON object, or an object without the field as a string, is skipped);
 * only missing or unreadable paths are errors.
 */
#include "alloy/data.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BLOCK (1u << 20)

struct alloy_reader {
    alloy_reader_options opt;
    char **files;           /* every file to read, in order */
    int n_files, cap_files;
    int next_file;          /* index of the next file to open */
    FILE *fp;               /* the open file */
    alloy_doc_format fmt;   /* its format */
    char *path;             /* its path (files[k]) */
    uint64_t line;          /* JSONL: line number of the last record */
    char *buf;              /* text: bytes read but not yet returned; JSONL: the line */
    size_t buf_n, buf_cap;
    size_t consumed;        /* text: bytes of buf already returned */
    bool eof;               /* the open file has been read to its end */
    cJSON *array;           /* JSON: the parsed array, and the next element */
    cJSON *elem;
    char *doc;              /* a document assembled from JSON fields */
    size_t doc_cap;
    char where[512];
    alloy_reader_stats stats;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static alloy_status add_file(alloy_reader *r, const char *path) {
    if (r->n_files == r->cap_files) {
        int nc = r->cap_files ? 2 * r->cap_files : 64;
        char **nf = alloy_realloc(r->files, sizeof(char *) * (size_t)r->cap_files, sizeof(char *) * (size_t)nc);
        if (!nf) return ALLOY_STATUS_NOMEM;
        r->files = nf;
        r->cap_files = nc;
    }
    r->files[r->n_files] = alloy_strdup(path);
    if (!r->files[r->n_files]) return ALLOY_STATUS_NOMEM;
    r->n_files++;
    return ALLOY_STATUS_OK;
}

static alloy_status walk(alloy_reader *r, const char *path, bool top) {
    struct stat st;
    if ((top ? stat(path, &st) : lstat(path, &st)) != 0)
        return top ? alloy_fail(ALLOY_STATUS_IO, "%s: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    if (S_ISLNK(st.st_mode) && (stat(path, &st) != 0 || !S_ISREG(st.st_mode))) return ALLOY_STATUS_OK;
    if (S_ISREG(st.st_mode)) return add_file(r, path);
    if (!S_ISDIR(st.st_mode)) return ALLOY_STATUS_OK;
    DIR *d = opendir(path);
    if (!d) return top ? alloy_fail(ALLOY_STATUS_IO, "%s: cannot read folder: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    char **names = NULL;
    size_t n = 0, cap = 0;
    alloy_status s = ALLOY_STATUS_OK;
    struct dirent *e;
    while (!s && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; // ".", "..", and hidden entries (.git)
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            char **nn = alloy_realloc(names, sizeof(char *) * cap, sizeof(char *) * nc);
            if (!nn) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
            names = nn;
            cap = nc;
        }
        names[n] = alloy_path_join(path, e->d_name);
        if (!names[n]) s = ALLOY_STATUS_NOMEM;
        else n++;
    }
    closedir(d);
    if (!s) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (!s) s = walk(r, names[i], false);
        alloy_free(names[i]);
    }
    alloy_free(names);
    return s;
}

alloy_status alloy_reader_open(alloy_reader **out, const char *const *paths, int n_paths, const alloy_reader_options *opt) {
    *out = NULL;
    alloy_reader *r = alloy_calloc(1, sizeof *r);
    if (!r) return ALLOY_STATUS_NOMEM;
    if (opt) r->opt = *opt;
    if (!r->opt.field || !*r->opt.field) r->opt.field = "text";
    if (!r->opt.max_doc) r->opt.max_doc = 8u << 20;
    if (r->opt.separator && !*r->opt.separator) r->opt.separator = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n_paths && !s; i++) s = walk(r, paths[i], true);
    if (!s && r->n_files == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "no input files");
    if (s) {
        alloy_reader_close(r);
        return s;
    }
    *out = r;
    return ALLOY_STATUS_OK;
}

void alloy_reader_close(alloy_reader *r) {
    if (!r) return;
    if (r->fp) fclose(r->fp);
    for (int i = 0; i < r->n_files; i++) alloy_free(r->files[i]);
    alloy_free(r->files);
    alloy_free(r->buf);
    alloy_free(r->doc);
    cJSON_Delete(r->array);
    alloy_free(r);
}

const char *alloy_reader_where(const alloy_reader *r) { return r->where; }
const alloy_reader_stats *alloy_reader_get_stats(const alloy_reader *r) { return &r->stats; }

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
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

static void note_bad(alloy_reader *r, const char *what) {
    if (!r->stats.first_bad[0])
        snprintf(r->stats.first_bad, sizeof r->stats.first_bad, "%s:%llu: %s", r->path, (unsigned long long)r->line, what);
}

/* Opens the next file; false when there are none. Binary files are skipped here. */
static alloy_status open_next(alloy_reader *r, bool *any) {
    *any = false;
    while (r->next_file < r->n_files) {
        r->path = r->files[r->next_file++];
        r->fp = fopen(r->path, "rb");
        if (!r->fp) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot open: %s", r->path, strerror(errno));
        r->buf_n = r->consumed = 0;
        r->line = 0;
        r->eof = false;
        alloy_doc_format f = r->opt.format;
        if (f == ALLOY_DOC_AUTO)
            f = ends_with(r->path, ".jsonl") || ends_with(r->path, ".ndjson") ? ALLOY_DOC_JSONL
                : ends_with(r->path, ".json")                                  ? ALLOY_DOC_JSON
                                                                               : ALLOY_DOC_TEXT;
        r->fmt = f;
        // sniff the first block for a NUL byte: binary files are skipped
        if (!grow(&r->buf, &r->buf_cap, BLOCK)) return ALLOY_STATUS_NOMEM;
        size_t got = fread(r->buf, 1, 8192, r->fp);
        if (ferror(r->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error", r->path);
        if (memchr(r->buf, 0, got)) {
            r->stats.skipped_binary++;
            fclose(r->fp);
            r->fp = NULL;
            continue;
        }
        r->buf_n = got;
        r->stats.files++;
        if (f == ALLOY_DOC_JSON) { // the whole array at once
            while (!feof(r->fp)) {
                if (!grow(&r->buf, &r->buf_cap, r->buf_n + BLOCK + 1)) return ALLOY_STATUS_NOMEM;
                r->buf_n += fread(r->buf + r->buf_n, 1, BLOCK, r->fp);
                if (ferror(r->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error", r->path);
            }
            cJSON_Delete(r->array);
            r->array = cJSON_ParseWithLength(r->buf, r->buf_n);
            if (!cJSON_IsArray(r->array))
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a JSON array (use --format jsonl for one object per line)",
                                  r->path);
            r->elem = r->array->child;
            r->buf_n = 0;
        }
        *any = true;
        return ALLOY_STATUS_OK;
    }
    return ALLOY_STATUS_OK;
}

static void close_current(alloy_reader *r) {
    if (r->fp) fclose(r->fp);
    r->fp = NULL;
    cJSON_Delete(r->array);
    r->array = r->elem = NULL;
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

/* JSONL: the next line that yields a document. */
static alloy_status next_jsonl(alloy_reader *r, const char **doc, size_t *n, bool *got) {
    *got = false;
    for (;;) {
        // find a full line in buf[consumed, buf_n), reading more as needed
        char *nl = memchr(r->buf + r->consumed, '\n', r->buf_n - r->consumed);
        while (!nl && !r->eof) {
            if (r->consumed) {
                memmove(r->buf, r->buf + r->consumed, r->buf_n - r->consumed);
                r->buf_n -= r->consumed;
                r->consumed = 0;
            }
            if (!grow(&r->buf, &r->buf_cap, r->buf_n + BLOCK + 1)) return ALLOY_STATUS_NOMEM;
            size_t got_n = fread(r->buf + r->buf_n, 1, BLOCK, r->fp);
            if (ferror(r->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error", r->path);
            if (got_n == 0) r->eof = true;
            size_t old = r->buf_n;
            r->buf_n += got_n;
            nl = memchr(r->buf + old, '\n', r->buf_n - old);
        }
        size_t start = r->consumed, end = nl ? (size_t)(nl - r->buf) : r->buf_n;
        if (start >= r->buf_n && !nl) return ALLOY_STATUS_OK; // file done
        r->consumed = nl ? end + 1 : r->buf_n;
        r->line++;
        size_t len = end - start;
        while (len && (r->buf[start + len - 1] == '\r' || r->buf[start + len - 1] == ' ')) len--;
        if (len == 0) continue; // blank lines are not records
        cJSON *obj = cJSON_ParseWithLength(r->buf + start, len);
        size_t tl;
        if (!cJSON_IsObject(obj)) {
            r->stats.malformed++;
            note_bad(r, "not a JSON object");
        } else if (!object_text(r, obj, &tl)) {
            r->stats.missing_field++;
            note_bad(r, "field missing or not a string");
        } else {
            cJSON_Delete(obj);
            snprintf(r->where, sizeof r->where, "%s:%llu", r->path, (unsigned long long)r->line);
            *doc = r->doc;
            *n = tl;
            *got = true;
            return ALLOY_STATUS_OK;
        }
        cJSON_Delete(obj);
    }
}

/* JSON array: the next element that yields a document. */
static alloy_status next_json(alloy_reader *r, const char **doc, size_t *n, bool *got) {
    *got = false;
    while (r->elem) {
        const cJSON *e = r->elem;
        r->elem = r->elem->next;
        r->line++;
        size_t tl;
        if (!cJSON_IsObject(e)) {
            r->stats.malformed++;
            note_bad(r, "array element is not an object");
        } else if (!object_text(r, e, &tl)) {
            r->stats.missing_field++;
            note_bad(r, "field missing or not a string");
        } else {
            snprintf(r->where, sizeof r->where, "%s:%llu", r->path, (unsigned long long)r->line);
            *doc = r->doc;
            *n = tl;
            *got = true;
            return ALLOY_STATUS_OK;
        }
    }
    return ALLOY_STATUS_OK;
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
        if (!grow(&r->buf, &r->buf_cap, r->buf_n + BLOCK)) return ALLOY_STATUS_NOMEM;
        size_t got_n = fread(r->buf + r->buf_n, 1, BLOCK, r->fp);
        if (ferror(r->fp)) return alloy_fail(ALLOY_STATUS_IO, "%s: read error", r->path);
        if (got_n == 0) r->eof = true;
        r->buf_n += got_n;
    }
}

alloy_status alloy_reader_next(alloy_reader *r, const char **doc, size_t *n, bool *end) {
    *end = false;
    for (;;) {
        if (!r->fp) {
            bool any;
            alloy_status s = open_next(r, &any);
            if (s) return s;
            if (!any) {
                *end = true;
                return ALLOY_STATUS_OK;
            }
        }
        bool got = false;
        alloy_status s = r->fmt == ALLOY_DOC_JSONL ? next_jsonl(r, doc, n, &got)
                         : r->fmt == ALLOY_DOC_JSON ? next_json(r, doc, n, &got)
                                                    : next_text(r, doc, n, &got);
        if (s) return s;
        if (got) {
            r->stats.docs++;
            r->stats.bytes += *n;
            return ALLOY_STATUS_OK;
        }
        close_current(r);
    }
}
