/*
 * tokenizer_train.c — `alloy tokenizer train`: learns a byte-level BPE from files and folders
 * and writes it as a tokenizer.json.
 *
 * Each --input is a file or a folder; folders are walked recursively in byte order of names,
 * skipping hidden entries (names starting with '.') and not following links to folders. A file
 * with a NUL byte in its first 8 KB is taken for binary and skipped. Each file is fed to the
 * trainer as a text of its own (no piece spans two files), a large one in blocks cut where the
 * pieces do not change.
 */
#include "cli.h"
#include "alloy/tokenizer.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BINARY_PROBE 8192 /* bytes looked at for a NUL */
#ifndef FEED_BLOCK
#define FEED_BLOCK ((size_t)32 << 20) /* bytes fed at a time (about) */
#endif

typedef struct path_list {
    char **items; /* (n) owned */
    size_t n, cap;
} path_list;

static alloy_status list_push(path_list *l, char *path) {
    if (!path) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory listing input files");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->items, cap * sizeof *p);
        if (!p) {
            free(path);
            return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory listing input files");
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = path;
    return ALLOY_STATUS_OK;
}

static void list_free(path_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static char *join_path(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    size_t o = na;
    if (na && a[na - 1] != '/') p[o++] = '/';
    memcpy(p + o, b, nb + 1);
    return p;
}

/* The end of the next block of text to feed: the first place at or after `from` just past a
 * newline with a printable ASCII character on each side (there the pre-tokenizer's pieces are
 * the same whether the text is cut or not), or n. */
static size_t block_end(const char *text, size_t n, size_t from) {
    for (size_t p = from < 2 ? 2 : from; p < n; p++) {
        if (text[p - 1] != '\n') continue;
        unsigned char a = (unsigned char)text[p - 2], b = (unsigned char)text[p];
        if (a > 0x20 && a < 0x7F && b > 0x20 && b < 0x7F) return p;
    }
    return n;
}

static int cmp_name(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* Appends the regular files under dir (recursively, in name order) to out. */
static alloy_status walk_dir(const char *dir, path_list *out, int depth) {
    if (depth > 64) return alloy_fail(ALLOY_STATUS_IO, "%s: folders nested more than 64 deep", dir);
    DIR *d = opendir(dir);
    if (!d) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot open the folder", dir);
    path_list names = {0};
    alloy_status s = ALLOY_STATUS_OK;
    for (struct dirent *e; !s && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue; // ".", "..", and hidden entries (.git)
        char *name = malloc(strlen(e->d_name) + 1);
        if (name) strcpy(name, e->d_name);
        s = list_push(&names, name);
    }
    closedir(d);
    if (!s) qsort(names.items, names.n, sizeof *names.items, cmp_name);
    for (size_t i = 0; i < names.n && !s; i++) {
        char *path = join_path(dir, names.items[i]);
        struct stat st, lst;
        if (!path) s = ALLOY_STATUS_NOMEM;
        else if (stat(path, &st) != 0 || lstat(path, &lst) != 0) free(path); // a dangling link: nothing to read
        else if (S_ISDIR(st.st_mode)) {
            if (!S_ISLNK(lst.st_mode)) s = walk_dir(path, out, depth + 1); // links to folders could loop
            free(path);
        } else if (S_ISREG(st.st_mode)) s = list_push(out, path);
        else free(path);
    }
    list_free(&names);
    return s;
}

int cmd_tokenizer_train(const char *const *inputs, int n_inputs, int vocab_size, const char *const *specials, int n_specials,
                        int min_frequency, bool quiet, const char *out) {
    static const char *const default_specials[] = {"<|endoftext|>"};
    if (n_specials == 0) { // the default; --special "" asks for none
        specials = default_specials;
        n_specials = 1;
    } else if (n_specials == 1 && specials[0][0] == '\0') {
        n_specials = 0;
    }
    if (min_frequency < 1) return cli_usage("tokenizer", "--min-frequency must be >= 1");
    double t0 = alloy_time_now();
    path_list files = {0};
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n_inputs && !s; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) s = alloy_fail(ALLOY_STATUS_IO, "%s: no such file or folder", inputs[i]);
        else if (S_ISDIR(st.st_mode)) s = walk_dir(inputs[i], &files, 0);
        else {
            char *p = malloc(strlen(inputs[i]) + 1);
            if (p) strcpy(p, inputs[i]);
            s = list_push(&files, p);
        }
    }
    alloy_bpe_trainer *tr = NULL;
    alloy_bpe_train_options opt = {
        .vocab_size = vocab_size, .special_tokens = specials, .n_special = n_specials, .min_frequency = min_frequency, .quiet = quiet};
    if (!s) s = alloy_bpe_trainer_create(&tr, &opt);
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 100);
    size_t n_read = 0, n_binary = 0;
    bool cut_ok = true;
    for (int i = 0; i < n_specials; i++) cut_ok &= strchr(specials[i], '\n') == NULL;
    uint64_t bytes = 0;
    for (size_t i = 0; i < files.n && !s; i++) {
        alloy_file_map map;
        s = alloy_file_map_open(&map, files.items[i]);
        if (s) break;
        size_t probe = map.size < BINARY_PROBE ? map.size : BINARY_PROBE;
        if (map.size && memchr(map.data, '\0', probe)) {
            n_binary++;
            if (!quiet) alloy_progress_print(&prog, "skipping %s: binary (a NUL byte in its first %d bytes)", files.items[i], BINARY_PROBE);
        } else if (map.size) {
            // big files go in blocks (the trainer's UTF-8 repair copies a block), cut where the
            // pieces stay the same, unless a special token has a newline that a cut could split
            const char *text = (const char *)map.data;
            for (size_t pos = 0; pos < map.size && !s;) {
                size_t end = cut_ok ? block_end(text, map.size, pos + FEED_BLOCK) : map.size;
                s = alloy_bpe_trainer_feed(tr, text + pos, end - pos);
                bytes += end - pos;
                pos = end;
                if (!quiet) alloy_progress_update(&prog, "reading: %zu/%zu files, %.1f MB", i + 1, files.n, (double)bytes / 1e6);
            }
            if (s) alloy_error_prefix("%s", files.items[i]);
            n_read++;
        }
        alloy_file_map_close(&map);
    }
    if (!quiet) alloy_progress_done(&prog);
    if (!s && n_read == 0)
        s = alloy_fail(ALLOY_STATUS_USAGE, "no text to learn from: %zu files found, %zu of them binary, the rest empty", files.n,
                       n_binary);
    alloy_tokenizer *tok = NULL;
    if (!s) s = alloy_bpe_trainer_finish(tr, &tok);
    if (!s) s = alloy_tokenizer_save(tok, out);
    if (!s) {
        uint64_t pieces = 0;
        int merges = 0;
        alloy_bpe_trainer_stats(tr, NULL, &pieces, &merges);
        printf("%s: vocabulary %d (256 bytes, %d merges, %d special) from %llu bytes in %zu files, %llu distinct pieces, %.1fs\n",
               out, alloy_tokenizer_vocab_size(tok), merges, n_specials, (unsigned long long)bytes, n_read,
               (unsigned long long)pieces, alloy_time_now() - t0);
    }
    alloy_tokenizer_destroy(tok);
    alloy_bpe_trainer_destroy(tr);
    list_free(&files);
    return s ? cli_fail("tokenizer", s) : 0;
}
