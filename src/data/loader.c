/*
 * loader.c — datasets (folders of shards) and the deterministic dataloader.
 *
 * A run's data order depends only on (seed, epoch): the permutation of windows is redrawn
 * from them at each epoch, so a saved (epoch, cursor) pair resumes the exact sequence.
 */
#include "alloy/options.h"
#include "alloy/data.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool has_prefix_suffix(const char *s, const char *prefix, const char *suffix) {
    size_t n = strlen(s), p = strlen(prefix), k = strlen(suffix);
    return n >= p + k && !strncmp(s, prefix, p) && !strcmp(s + n - k, suffix);
}

/* Opens the shards of dir whose names match prefix*.bin, sorted. */
static alloy_status open_shards(const char *dir, const char *prefix, alloy_shard ***out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d && !alloy_path_exists(dir)) return alloy_fail(ALLOY_STATUS_IO, "%s: no such folder", dir);
    if (!d && !alloy_is_dir(dir)) // text, most likely: the shards are made from it
        return alloy_fail(ALLOY_STATUS_IO, "%s: not a folder of token shards; make them with alloy prepare (--input %s --out DIR)",
                          dir, dir);
    if (!d) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot read folder: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    alloy_status s = ALLOY_STATUS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!has_prefix_suffix(e->d_name, prefix, ".bin")) continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 16;
            char **nn = alloy_realloc(names, sizeof(char *) * (size_t)cap, sizeof(char *) * (size_t)nc);
            if (!nn) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
            names = nn;
            cap = nc;
        }
        names[n] = alloy_strdup(e->d_name);
        if (!names[n]) {
            s = ALLOY_STATUS_NOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (!s && n) qsort(names, (size_t)n, sizeof *names, cmp_str);
    alloy_shard **shards = NULL;
    if (!s && n) {
        shards = alloy_calloc((size_t)n, sizeof *shards);
        if (!shards) s = ALLOY_STATUS_NOMEM;
    }
    for (int i = 0; i < n && !s; i++) {
        char *p = alloy_path_join(dir, names[i]);
        s = p ? alloy_shard_open(&shards[i], p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    for (int i = 0; i < n; i++) alloy_free(names[i]);
    alloy_free(names);
    if (s) {
        for (int i = 0; shards && i < n; i++) alloy_shard_close(shards[i]);
        alloy_free(shards);
        return s;
    }
    *out = shards;
    *n_out = n;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_dataset_open(alloy_dataset **out, const char *dir, double val_fraction) {
    *out = NULL;
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
        return alloy_fail_option(ALLOY_STATUS_USAGE, "val_fraction", "must lie in [0, 1), got %g", val_fraction);
    alloy_dataset *ds = alloy_calloc(1, sizeof *ds);
    if (!ds) return ALLOY_STATUS_NOMEM;
    ds->dir = alloy_strdup(dir);
    ds->val_fraction = val_fraction;
    alloy_status s = ds->dir ? open_shards(dir, "train-", &ds->train, &ds->n_train) : ALLOY_STATUS_NOMEM;
    if (!s) s = open_shards(dir, "val-", &ds->val, &ds->n_val);
    if (!s && ds->n_train == 0)
        s = alloy_fail(ALLOY_STATUS_IO, "%s: no token shards (train-*.bin); make them with `alloy prepare`", dir);
    if (s) {
        alloy_dataset_close(ds);
        return s;
    }
    uint64_t h = ALLOY_FNV64_INIT;
    for (int k = 0; k < 2; k++) {
        alloy_shard **sh = k ? ds->val : ds->train;
        int n = k ? ds->n_val : ds->n_train;
        for (int i = 0; i < n; i++) {
            const char *base = strrchr(sh[i]->path, '/');
            base = base ? base + 1 : sh[i]->path;
            h = alloy_fnv64(h, base, strlen(base) + 1);
            h = alloy_fnv64(h, &sh[i]->checksum, sizeof sh[i]->checksum);
            h = alloy_fnv64(h, &sh[i]->count, sizeof sh[i]->count);
            if (sh[i]->vocab_size > ds->vocab_size) ds->vocab_size = sh[i]->vocab_size;
        }
    }
    if (ds->n_val == 0) h = alloy_fnv64(h, &val_fraction, sizeof val_fraction);
    ds->fingerprint = h;
    *out = ds;
    return ALLOY_STATUS_OK;
}

void alloy_dataset_close(alloy_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n_train; i++) alloy_shard_close(ds->train[i]);
    for (int i = 0; i < ds->n_val; i++) alloy_shard_close(ds->val[i]);
    alloy_free(ds->train);
    alloy_free(ds->val);
    alloy_free(ds->dir);
    alloy_free(ds);
}

uint64_t alloy_dataset_tokens(const alloy_dataset *ds, alloy_split split) {
    uint64_t n = 0;
    alloy_shard *const *sh = split == ALLOY_SPLIT_VAL && ds->n_val ? ds->val : ds->train;
    int k = split == ALLOY_SPLIT_VAL && ds->n_val ? ds->n_val : ds->n_train;
    for (int i = 0; i < k; i++) n += sh[i]->count;
    if (!ds->n_val) { // held out from train by fraction
        double f = split == ALLOY_SPLIT_VAL ? ds->val_fraction : 1.0 - ds->val_fraction;
        n = (uint64_t)((double)n * f);
    }
    return n;
}

double alloy_dataset_unigram_entropy(const alloy_dataset *ds, uint64_t limit) {
    uint64_t *counts = alloy_calloc(ds->vocab_size, sizeof(uint64_t));
    if (!counts) return NAN;
    uint64_t total = 0;
    for (int i = 0; i < ds->n_train && total < limit; i++) {
        const alloy_shard *s = ds->train[i];
        for (uint64_t j = 0; j < s->count && total < limit; j++, total++) counts[alloy_shard_token(s, j)]++;
    }
    double h = 0.0;
    for (uint32_t v = 0; v < ds->vocab_size; v++) {
        if (!counts[v]) continue;
        double p = (double)counts[v] / (double)total;
        h -= p * log(p);
    }
    alloy_free(counts);
    return h;
}

/* Draws this epoch's permutation from (seed, epoch) alone. */
static void shuffle_epoch(alloy_loader *l) {
    for (int64_t i = 0; i < l->n_windows; i++) l->perm[i] = i;
    if (!l->shuffle) return;
    alloy_rng rng;
    alloy_rng_seed(&rng, l->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(l->epoch + 1)));
    for (int64_t i = l->n_windows - 1; i > 0; i--) {
        int64_t j = (int64_t)alloy_rng_below(&rng, (uint64_t)i + 1);
        int64_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
}

alloy_status alloy_loader_create(alloy_loader **out, const alloy_dataset *ds, alloy_split split, int B, int T,
                                 uint64_t seed) {
    *out = NULL;
    if (B < 1 || T < 1) return alloy_fail(ALLOY_STATUS_USAGE, "batch and sequence length must be at least 1");
    alloy_loader *l = alloy_calloc(1, sizeof *l);
    if (!l) return ALLOY_STATUS_NOMEM;
    l->ds = ds;
    l->split = split;
    l->B = B;
    l->T = T;
    l->seed = seed;
    l->shuffle = split == ALLOY_SPLIT_TRAIN;
    bool from_val = split == ALLOY_SPLIT_VAL && ds->n_val > 0;
    l->n_sources = from_val ? ds->n_val : ds->n_train;
    l->src = alloy_calloc((size_t)l->n_sources, sizeof *l->src);
    l->first = alloy_calloc((size_t)l->n_sources + 1, sizeof *l->first);
    l->win_begin = alloy_calloc((size_t)l->n_sources, sizeof *l->win_begin);
    l->inputs = alloy_calloc((size_t)B * (size_t)T, sizeof(int32_t));
    l->targets = alloy_calloc((size_t)B * (size_t)T, sizeof(int32_t));
    if (!l->src || !l->first || !l->win_begin || !l->inputs || !l->targets) goto nomem;
    for (int i = 0; i < l->n_sources; i++) {
        const alloy_shard *s = from_val ? ds->val[i] : ds->train[i];
        l->src[i] = s;
        int64_t w = s->count >= (uint64_t)T + 1 ? (int64_t)((s->count - 1) / (uint64_t)T) : 0;
        int64_t begin = 0, end = w;
        if (!ds->n_val) {
            // no val shards: the last val_fraction of each shard's windows is held out
            int64_t held = (int64_t)ceil(ds->val_fraction * (double)w);
            if (held >= w) held = w > 1 ? w - 1 : 0;
            if (split == ALLOY_SPLIT_TRAIN) end = w - held;
            else begin = w - held;
        }
        l->win_begin[i] = begin;
        l->first[i + 1] = l->first[i] + (end - begin);
    }
    l->n_windows = l->first[l->n_sources];
    if (l->n_windows == 0) {
        alloy_status s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the %s split has no window of %d tokens (too little data for --seq %d)",
                                    ds->dir, split == ALLOY_SPLIT_TRAIN ? "training" : "held-out", T + 1, T);
        alloy_loader_destroy(l);
        return s;
    }
    l->perm = alloy_calloc((size_t)l->n_windows, sizeof *l->perm);
    if (!l->perm) goto nomem;
    shuffle_epoch(l);
    *out = l;
    return ALLOY_STATUS_OK;
nomem:
    alloy_loader_destroy(l);
    return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory creating the dataloader");
}

void alloy_loader_destroy(alloy_loader *l) {
    if (!l) return;
    alloy_free(l->src);
    alloy_free(l->first);
    alloy_free(l->win_begin);
    alloy_free(l->perm);
    alloy_free(l->inputs);
    alloy_free(l->targets);
    alloy_free(l);
}

void alloy_loader_next(alloy_loader *l) {
    for (int b = 0; b < l->B; b++) {
        if (l->cursor >= l->n_windows) {
            l->epoch++;
            l->cursor = 0;
            shuffle_epoch(l);
        }
        int64_t w = l->perm[l->cursor++];
        int lo = 0, hi = l->n_sources - 1; // the shard holding window w
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (l->first[mid] <= w) lo = mid;
            else hi = mid - 1;
        }
        const alloy_shard *s = l->src[lo];
        uint64_t start = (uint64_t)(l->win_begin[lo] + (w - l->first[lo])) * (uint64_t)l->T;
        int32_t *in = l->inputs + (int64_t)b * l->T, *tg = l->targets + (int64_t)b * l->T;
        for (int t = 0; t < l->T; t++) {
            in[t] = (int32_t)alloy_shard_token(s, start + (uint64_t)t);
            tg[t] = (int32_t)alloy_shard_token(s, start + (uint64_t)t + 1);
        }
    }
}

alloy_status alloy_loader_seek(alloy_loader *l, int64_t epoch, int64_t cursor) {
    if (epoch < 0 || cursor < 0 || cursor > l->n_windows)
        return alloy_fail(ALLOY_STATUS_FORMAT, "data position (epoch %lld, window %lld) is outside the dataset (%lld windows)",
                          (long long)epoch, (long long)cursor, (long long)l->n_windows);
    if (epoch != l->epoch) {
        l->epoch = epoch;
        shuffle_epoch(l);
    }
    l->cursor = cursor;
    return ALLOY_STATUS_OK;
}
