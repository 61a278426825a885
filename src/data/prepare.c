/*
 * prepare.c — text files in, token shards out.
 *
 * Inputs are files or folders (walked recursively in name order; files that look binary are
 * skipped). Each file is one document: its head goes to the training shards and its tail
 * (val_fraction of its bytes, cut at a line end) to the held-out shards. A manifest records
 * every source, shard and count, so a run's data lineage is on disk next to the data.
 */
#include "alloy/data.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHUNK (1u << 20)

typedef struct file_list {
    char **paths;
    int n, cap;
} file_list;

static alloy_status list_add(file_list *fl, const char *path) {
    if (fl->n == fl->cap) {
        int nc = fl->cap ? 2 * fl->cap : 64;
        char **np = alloy_realloc(fl->paths, sizeof(char *) * (size_t)fl->cap, sizeof(char *) * (size_t)nc);
        if (!np) return ALLOY_STATUS_NOMEM;
        fl->paths = np;
        fl->cap = nc;
    }
    fl->paths[fl->n] = alloy_strdup(path);
    if (!fl->paths[fl->n]) return ALLOY_STATUS_NOMEM;
    fl->n++;
    return ALLOY_STATUS_OK;
}

static void list_free(file_list *fl) {
    for (int i = 0; i < fl->n; i++) alloy_free(fl->paths[i]);
    alloy_free(fl->paths);
}

/* Adds path (a file) or the files under it (a folder; symlinked folders are not followed). */
static alloy_status walk(file_list *fl, const char *path, bool top) {
    struct stat st;
    if ((top ? stat(path, &st) : lstat(path, &st)) != 0)
        return top ? alloy_fail(ALLOY_STATUS_IO, "%s: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return ALLOY_STATUS_OK; // a link to a file only
    }
    if (S_ISREG(st.st_mode)) return list_add(fl, path);
    if (!S_ISDIR(st.st_mode)) return ALLOY_STATUS_OK;
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) return top ? alloy_fail(ALLOY_STATUS_IO, "%s: cannot read folder: %s", path, strerror(errno)) : ALLOY_STATUS_OK;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (!s && strcmp(nm, ".") && strcmp(nm, "..")) {
            char *p = alloy_path_join(path, nm);
            s = p ? walk(fl, p, false) : ALLOY_STATUS_NOMEM;
            alloy_free(p);
        }
        free(names[i]);
    }
    free(names);
    return s;
}

/* A writer of numbered shards of one split. */
typedef struct split_out {
    const char *dir, *prefix;
    uint32_t vocab;
    uint64_t max_tokens;
    alloy_shard_writer w;
    bool open;
    int n_shards;
    uint64_t tokens;
    cJSON *shards; /* manifest entries */
} split_out;

static alloy_status split_close(split_out *so) {
    if (!so->open) return ALLOY_STATUS_OK;
    so->open = false;
    uint64_t count = so->w.count, sum = so->w.checksum;
    char name[64];
    snprintf(name, sizeof name, "%s-%05d.bin", so->prefix, so->n_shards - 1);
    alloy_status s = alloy_shard_writer_close(&so->w);
    if (s) return s;
    cJSON *e = cJSON_CreateObject();
    char hex[20];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
    cJSON_AddStringToObject(e, "file", name);
    cJSON_AddNumberToObject(e, "tokens", (double)count);
    cJSON_AddStringToObject(e, "checksum_fnv1a64", hex);
    cJSON_AddItemToArray(so->shards, e);
    return ALLOY_STATUS_OK;
}

static alloy_status split_add(split_out *so, const int32_t *ids, size_t n) {
    while (n > 0) {
        if (so->open && so->w.count >= so->max_tokens) {
            alloy_status s = split_close(so);
            if (s) return s;
        }
        if (!so->open) {
            char name[64];
            snprintf(name, sizeof name, "%s-%05d.bin", so->prefix, so->n_shards);
            char *p = alloy_path_join(so->dir, name);
            alloy_status s = p ? alloy_shard_writer_open(&so->w, p, so->vocab) : ALLOY_STATUS_NOMEM;
            alloy_free(p);
            if (s) return s;
            so->open = true;
            so->n_shards++;
        }
        size_t room = (size_t)(so->max_tokens - so->w.count);
        size_t k = n < room ? n : room;
        alloy_status s = alloy_shard_writer_add(&so->w, ids, k);
        if (s) return s;
        so->tokens += k;
        ids += k;
        n -= k;
    }
    return ALLOY_STATUS_OK;
}

static bool looks_binary(const uint8_t *p, size_t n) { return memchr(p, 0, n < 8192 ? n : 8192) != NULL; }

/* Refuses to mix with an earlier prepare's output. */
static alloy_status check_out_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return ALLOY_STATUS_OK;
    struct dirent *e;
    alloy_status s = ALLOY_STATUS_OK;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (!strcmp(e->d_name, "manifest.json") || (n > 4 && !strcmp(e->d_name + n - 4, ".bin"))) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: already holds token shards (%s); choose an empty folder", dir, e->d_name);
            break;
        }
    }
    closedir(d);
    return s;
}

alloy_status alloy_prepare(const alloy_prepare_options *opt, const alloy_tokenizer *tok, alloy_prepare_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (!(opt->val_fraction >= 0.0 && opt->val_fraction < 1.0))
        return alloy_fail(ALLOY_STATUS_USAGE, "--val-fraction must lie in [0, 1), got %g", opt->val_fraction);
    if (opt->shard_tokens < 1024) return alloy_fail(ALLOY_STATUS_USAGE, "--shard-tokens must be at least 1024");
    file_list fl = {0};
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < opt->n_inputs && !s; i++) s = walk(&fl, opt->inputs[i], true);
    if (!s && fl.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "no input files");
    if (!s) s = check_out_dir(opt->out_dir);
    if (!s) s = alloy_mkdir_p(opt->out_dir);
    if (s) {
        list_free(&fl);
        return s;
    }
    uint64_t total_bytes = 0;
    for (int i = 0; i < fl.n; i++) {
        struct stat st;
        if (stat(fl.paths[i], &st) == 0) total_bytes += (uint64_t)st.st_size;
    }
    uint32_t vocab = (uint32_t)alloy_tokenizer_vocab_size(tok);
    split_out tr = {opt->out_dir, "train", vocab, opt->shard_tokens, .shards = cJSON_CreateArray()};
    split_out va = {opt->out_dir, "val", vocab, opt->shard_tokens, .shards = cJSON_CreateArray()};
    cJSON *sources = cJSON_CreateArray();
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 1000000);
    double t0 = alloy_time_now(), last_draw = 0.0;
    uint64_t done_bytes = 0;
    for (int i = 0; i < fl.n && !s; i++) {
        alloy_file_map map;
        s = alloy_file_map_open(&map, fl.paths[i]);
        if (s) break;
        if (map.size == 0 || looks_binary(map.data, map.size)) {
            rep->skipped_files++;
            alloy_file_map_close(&map);
            continue;
        }
        size_t cut = map.size - (size_t)((double)map.size * opt->val_fraction);
        while (cut < map.size && cut > 0 && map.data[cut - 1] != '\n') cut++; // start val at a line
        uint64_t tr0 = tr.tokens, va0 = va.tokens;
        for (size_t off = 0; off < map.size && !s; off += CHUNK) {
            size_t n = map.size - off < CHUNK ? map.size - off : CHUNK;
            alloy_ids out = {0};
            s = alloy_tokenizer_encode(tok, (const char *)map.data + off, n, 0, &out);
            int32_t *ids = out.data;
            size_t n_ids = out.n;
            if (s) break;
            // byte-level: token k is byte off + k, so the cut falls between tokens exactly
            size_t k = cut > off ? (cut - off < n_ids ? cut - off : n_ids) : 0;
            s = split_add(&tr, ids, k);
            if (!s) s = split_add(&va, ids + k, n_ids - k);
            alloy_ids_free(&out);
            done_bytes += n;
            double now = alloy_time_now();
            if (!opt->quiet && prog.tty && now - last_draw > 0.2) {
                last_draw = now;
                alloy_progress_update(&prog, "prepare: %.1f / %.1f MB (%.0f%%) | %d files | %.1f MB/s", done_bytes / 1e6,
                                      total_bytes / 1e6, 100.0 * (double)done_bytes / (double)(total_bytes ? total_bytes : 1),
                                      i + 1, done_bytes / 1e6 / (now - t0 + 1e-9));
            }
        }
        rep->files++;
        rep->bytes += map.size;
        cJSON *src = cJSON_CreateObject();
        cJSON_AddStringToObject(src, "path", fl.paths[i]);
        cJSON_AddNumberToObject(src, "bytes", (double)map.size);
        cJSON_AddNumberToObject(src, "train_tokens", (double)(tr.tokens - tr0));
        cJSON_AddNumberToObject(src, "val_tokens", (double)(va.tokens - va0));
        cJSON_AddItemToArray(sources, src);
        alloy_file_map_close(&map);
    }
    if (!opt->quiet) alloy_progress_done(&prog);
    if (!s) s = split_close(&tr);
    if (!s) s = split_close(&va);
    if (s) {
        if (tr.open) alloy_shard_writer_abort(&tr.w);
        if (va.open) alloy_shard_writer_abort(&va.w);
    }
    if (!s && tr.tokens == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "no text found in the inputs (all empty or binary)");
    if (!s) {
        cJSON *man = cJSON_CreateObject();
        cJSON_AddStringToObject(man, "format", "alloy-token-shards");
        cJSON_AddNumberToObject(man, "version", ALLOY_SHARD_VERSION);
        cJSON_AddStringToObject(man, "tokenizer", alloy_tokenizer_name(tok));
        cJSON_AddNumberToObject(man, "vocab_size", vocab);
        cJSON_AddNumberToObject(man, "val_fraction", opt->val_fraction);
        cJSON_AddNumberToObject(man, "files", (double)rep->files);
        cJSON_AddNumberToObject(man, "skipped_files", (double)rep->skipped_files);
        cJSON_AddNumberToObject(man, "bytes", (double)rep->bytes);
        cJSON_AddNumberToObject(man, "train_tokens", (double)tr.tokens);
        cJSON_AddNumberToObject(man, "val_tokens", (double)va.tokens);
        cJSON_AddItemToObject(man, "train_shards", tr.shards);
        cJSON_AddItemToObject(man, "val_shards", va.shards);
        cJSON_AddItemToObject(man, "sources", sources);
        tr.shards = va.shards = sources = NULL;
        char *p = alloy_path_join(opt->out_dir, "manifest.json");
        s = p ? alloy_json_write_file(p, man) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
        cJSON_Delete(man);
    }
    cJSON_Delete(tr.shards);
    cJSON_Delete(va.shards);
    cJSON_Delete(sources);
    rep->train_tokens = tr.tokens;
    rep->val_tokens = va.tokens;
    rep->train_shards = tr.n_shards;
    rep->val_shards = va.n_shards;
    list_free(&fl);
    return s;
}
