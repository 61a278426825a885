/*
 * alloy/data.h — token shards, datasets, the deterministic dataloader, and `prepare`.
 *
 * Token shard format (docs/formats.md), little-endian, a 64-byte header then the tokens:
 *   [0, 8)    magic "ALLOYTOK"
 *   [8, 12)   u32 version (1)
 *   [12, 16)  u32 token width in bytes: 2 (uint16, vocabulary <= 65536) or 4 (uint32)
 *   [16, 24)  u64 token count n
 *   [24, 28)  u32 vocabulary size (every token is below it)
 *   [28, 32)  u32 header size (64)
 *   [32, 40)  u64 FNV-1a 64 checksum of the token bytes
 *   [40, 64)  zero
 *   [64, 64 + n·width)  the tokens; the file ends there
 *
 * A dataset is a folder of shards: train-*.bin for training and val-*.bin held out. Without
 * val shards, the last val_fraction of each train shard's windows is held out.
 *
 *     alloy_dataset *ds;
 *     alloy_dataset_open(&ds, "data/", 0.05);
 *     alloy_loader *ld;
 *     alloy_loader_create(&ld, ds, ALLOY_SPLIT_TRAIN, 8, 256, 1337);
 *     alloy_loader_next(ld);     // ld->inputs, ld->targets: (8, 256)
 */
#ifndef ALLOY_DATA_H
#define ALLOY_DATA_H

#include "alloy/base.h"
#include "alloy/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ALLOY_SHARD_MAGIC "ALLOYTOK"
#define ALLOY_SHARD_VERSION 1
#define ALLOY_SHARD_HEADER 64

/* ---- shards ---- */

typedef struct alloy_shard {
    char *path;
    alloy_file_map map;
    int width;            /* bytes per token: 2 or 4 */
    uint64_t count;       /* tokens */
    uint32_t vocab_size;
    uint64_t checksum;
    const uint8_t *tokens;/* map.data + 64 */
} alloy_shard;

/* Opens and fully validates a shard: header, size, checksum, every token below vocab_size. */
alloy_status alloy_shard_open(alloy_shard **out, const char *path);
void alloy_shard_close(alloy_shard *s);
static inline uint32_t alloy_shard_token(const alloy_shard *s, uint64_t i) {
    const uint8_t *p = s->tokens + i * (uint64_t)s->width;
    return s->width == 2 ? (uint32_t)(p[0] | p[1] << 8)
                         : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Streaming writer; the file appears (atomically) only at close. */
typedef struct alloy_shard_writer {
    alloy_atomic_file file;
    int width;
    uint32_t vocab_size;
    uint64_t count;
    uint64_t checksum;
} alloy_shard_writer;

alloy_status alloy_shard_writer_open(alloy_shard_writer *w, const char *path, uint32_t vocab_size);
alloy_status alloy_shard_writer_add(alloy_shard_writer *w, const int32_t *tokens, size_t n);
alloy_status alloy_shard_writer_close(alloy_shard_writer *w);
void alloy_shard_writer_abort(alloy_shard_writer *w);

/* ---- datasets and the loader ---- */

typedef enum alloy_split { ALLOY_SPLIT_TRAIN = 0, ALLOY_SPLIT_VAL = 1 } alloy_split;

typedef struct alloy_dataset {
    char *dir;
    alloy_shard **train;  /* (n_train) sorted by file name */
    int n_train;
    alloy_shard **val;    /* (n_val) */
    int n_val;
    double val_fraction;  /* used only when n_val == 0 */
    uint32_t vocab_size;  /* the largest of the shards' */
    uint64_t fingerprint; /* over shard names and checksums: a resumed run checks it */
} alloy_dataset;

alloy_status alloy_dataset_open(alloy_dataset **out, const char *dir, double val_fraction);
void alloy_dataset_close(alloy_dataset *ds);
uint64_t alloy_dataset_tokens(const alloy_dataset *ds, alloy_split split);
/* Unigram entropy (nats) of the training tokens (at most the first `limit` of them): the loss
 * of a model that knows token frequencies and nothing else. */
double alloy_dataset_unigram_entropy(const alloy_dataset *ds, uint64_t limit);

/* Batches of B windows of T+1 tokens (inputs = first T, targets = last T). Windows start at
 * multiples of T inside one shard. The training split visits windows in a fresh permutation
 * each epoch, drawn from (seed, epoch); the validation split in order. */
typedef struct alloy_loader {
    const alloy_dataset *ds;
    alloy_split split;
    int B, T;
    uint64_t seed;
    bool shuffle;
    int n_sources;            /* shards of this split */
    const alloy_shard **src;  /* (n_sources) */
    int64_t *first;           /* (n_sources + 1) cumulative window counts */
    int64_t *win_begin;       /* (n_sources) first window of the split inside each shard */
    int64_t n_windows;
    int64_t *perm;            /* (n_windows) this epoch's order */
    int64_t epoch;            /* position: epoch and the next window in it */
    int64_t cursor;
    int32_t *inputs;          /* (B, T) */
    int32_t *targets;         /* (B, T) */
} alloy_loader;

alloy_status alloy_loader_create(alloy_loader **out, const alloy_dataset *ds, alloy_split split, int B, int T,
                                 uint64_t seed);
void alloy_loader_destroy(alloy_loader *l);
/* Fills inputs and targets with the next B windows (crossing into the next epoch as needed). */
void alloy_loader_next(alloy_loader *l);
/* Moves to a saved position (epoch, cursor). */
alloy_status alloy_loader_seek(alloy_loader *l, int64_t epoch, int64_t cursor);

/* ---- prepare ---- */

typedef struct alloy_prepare_options {
    const char *const *inputs; /* files or folders (searched recursively, sorted, binary files skipped) */
    int n_inputs;
    const char *out_dir;
    double val_fraction;       /* the tail of each input (cut at a line end) goes to val shards */
    uint64_t shard_tokens;     /* tokens per shard at most */
    bool quiet;                /* no progress on stderr */
} alloy_prepare_options;

typedef struct alloy_prepare_report {
    uint64_t files, skipped_files, bytes, train_tokens, val_tokens;
    int train_shards, val_shards;
} alloy_prepare_report;

/* Tokenizes the inputs with `tok` into out_dir/train-NNNNN.bin, val-NNNNN.bin and
 * manifest.json (sources, counts, shard checksums, tokenizer). */
alloy_status alloy_prepare(const alloy_prepare_options *opt, const alloy_tokenizer *tok, alloy_prepare_report *report);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_DATA_H */
