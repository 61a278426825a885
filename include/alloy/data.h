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
#include "alloy/dedup.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

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

/* ---- readers: documents from text files, folders, JSONL and JSON arrays ---- */

/* Every file may be compressed with gzip or zstd (told by its first bytes: alloy/records.h). */
typedef enum alloy_doc_format {
    ALLOY_DOC_AUTO = 0, /* by name, less a .gz/.zst/.zstd suffix: .jsonl, .ndjson and .json are
                           JSON (an array if the first byte other than white space is '[',
                           else JSONL), anything else text */
    ALLOY_DOC_TEXT,     /* a file is a document (or several, cut at `separator`) */
    ALLOY_DOC_JSONL,    /* one JSON object per line */
    ALLOY_DOC_JSON,     /* one JSON array of objects (read whole) */
} alloy_doc_format;

typedef struct alloy_reader_options {
    alloy_doc_format format;
    const char *field;     /* JSON: the string field(s) that make the text, comma-separated and
                              joined by a blank line ("instruction,response"); default "text" */
    const char *separator; /* text: cut documents at this string (e.g. "<|endoftext|>"); NULL: none */
    size_t max_doc;        /* text: a longer document is cut at a line end (default 8 MiB) */
} alloy_reader_options;

typedef struct alloy_reader_stats {
    uint64_t files;          /* files read */
    uint64_t skipped_binary; /* files skipped: a NUL byte in their first 8 KiB (decompressed) */
    uint64_t docs;           /* documents produced */
    uint64_t bytes;          /* bytes of documents produced */
    uint64_t malformed;      /* JSON lines or elements skipped: not valid JSON or not an object */
    uint64_t missing_field;  /* JSON objects skipped: the field is absent or not a string */
    char first_bad[256];     /* "file:line: what" (an array: "file: element N: what") of the
                                first skipped record, "" if none */
} alloy_reader_stats;

/* Streams documents from files and folders (walked recursively in name order; symlinked
 * folders are not followed), plain or compressed. Memory: one document at a time (a JSON
 * array file: the file's parse). */
typedef struct alloy_reader alloy_reader;

alloy_status alloy_reader_open(alloy_reader **out, const char *const *paths, int n_paths, const alloy_reader_options *opt);
/* The next document: *doc (valid until the next call) and *n; *end is set when there are no
 * more. Skips (binary files, malformed JSON records) are counted, not errors; a missing or
 * unreadable path is an IO error naming it, truncated or corrupt compressed data and a JSON
 * array file that does not parse are FORMAT errors naming it. */
alloy_status alloy_reader_next(alloy_reader *r, const char **doc, size_t *n, bool *end);
/* Where the last document came from: "file", "file:doc N", "file:line" or "file: element N". */
const char *alloy_reader_where(const alloy_reader *r);
const alloy_reader_stats *alloy_reader_get_stats(const alloy_reader *r);
void alloy_reader_close(alloy_reader *r);

/* ---- a BPE tokenizer learned from files (src/data/bpe_files.c) ---- */

/* What alloy_bpe_train_files read and learned. */
typedef struct alloy_bpe_files_report {
    uint64_t files, skipped_binary; /* files read, files skipped as binary */
    uint64_t bytes;                 /* bytes of text fed */
    uint64_t pieces;                /* distinct pre-tokenized pieces */
    int merges;                     /* merges learned */
} alloy_bpe_files_report;

/* Learns a BPE (alloy_bpe_trainer with opt) from the text of files and folders (recursive, in
 * name order; binary and hidden files skipped), showing its reading progress on stderr unless
 * opt->quiet. USAGE when there is no text; an error while feeding names the file. *out gets the
 * tokenizer (destroy it); report (may be NULL) what was read. */
alloy_status alloy_bpe_train_files(alloy_tokenizer **out, const char *const *paths, int n_paths,
                                   const alloy_bpe_train_options *opt, alloy_bpe_files_report *report);

/* ---- prepare: sources -> clean, deduplicated, mixed token shards ---- */

/* One source: named files and folders, and its weight in the mix. */
typedef struct alloy_prepare_source {
    const char *name;          /* as in --mix and the manifest */
    const char *const *paths;  /* files or folders */
    int n_paths;
    double weight;             /* share of the output's tokens (with mix); ignored otherwise */
} alloy_prepare_source;

typedef struct alloy_prepare_options {
    const alloy_prepare_source *sources;
    int n_sources;
    const char *out_dir;         /* must not hold shards yet */
    alloy_reader_options reader;
    alloy_norm_form norm;        /* NFC by default */
    bool dedup_exact;            /* drop exact duplicates (across all sources) */
    bool dedup_minhash;          /* drop near duplicates (MinHash LSH) */
    alloy_dedup_options dedup;   /* shingles, permutations, bands, threshold */
    const char *dedup_log;       /* JSONL of every dropped document and what it duplicates; NULL: none */
    bool mix;                    /* sources are mixed by their weights (else: by their sizes) */
    uint64_t mix_tokens;         /* with mix: training tokens to write (0: as many as the data gives
                                    without repeating any source) */
    double val_fraction;         /* held out: documents by a hash of their text; the tail of large ones */
    uint64_t seed;               /* the held-out choice, document order and the mix */
    uint64_t shard_tokens;       /* tokens per shard at most */
    bool eot;                    /* put the tokenizer's <|endoftext|> after every document */
    bool quiet;                  /* no progress on stderr */
    double progress_seconds;     /* when stderr is not a terminal: a progress line every this many
                                    seconds (0: 5); on a terminal the line is redrawn in place */
    volatile int *stop;          /* NULL, or set (by a signal handler) to stop: nothing is written,
                                    the temporary files are removed, the report says stopped */
} alloy_prepare_options;

alloy_prepare_options alloy_prepare_defaults(void);

/* ---- prepare's options from text (src/data/prepare_spec.c); errors start with the option's
 * name ("mix", "dedup", "format", "normalize") ---- */

/* Sources built from items "NAME=PATH" or "PATH" (named after the file or folder, without its
 * extension): grouped by name in the order names first appear, each source's paths in the order
 * given. The paths point into the items. Free with alloy_prepare_sources_free. */
typedef struct alloy_prepare_sources {
    alloy_prepare_source *v; /* (n) */
    int n;
    char (*names)[128];      /* (n) their names' storage */
    const char **paths;      /* every path, grouped by source */
} alloy_prepare_sources;

alloy_status alloy_prepare_sources_parse(alloy_prepare_sources *s, const char *const *items, int n);
void alloy_prepare_sources_free(alloy_prepare_sources *s);
/* "NAME:W,NAME:W": the named sources' weights (>= 0, not all 0); USAGE for a bad spec, an unknown
 * name or weights that add up to 0. */
alloy_status alloy_prepare_mix_parse(alloy_prepare_sources *s, const char *spec);
/* "none", "exact", "minhash" or "exact,minhash" into o->dedup_exact and o->dedup_minhash. */
alloy_status alloy_prepare_dedup_parse(alloy_prepare_options *o, const char *spec);
/* "auto", "text", "jsonl", "json". */
alloy_status alloy_doc_format_parse(const char *name, alloy_doc_format *out);
/* "nfc", "nfkc", "none". */
alloy_status alloy_norm_form_parse(const char *name, alloy_norm_form *out);

typedef struct alloy_prepare_report {
    uint64_t files, skipped_files, docs, bytes;
    uint64_t dropped_empty, dropped_exact, dropped_near, malformed;
    uint64_t train_tokens, val_tokens; /* written */
    int train_shards, val_shards;
    double seconds;
    bool stopped;            /* the stop flag ended it: no shards, no manifest */
} alloy_prepare_report;

/* Reads every source, normalises, deduplicates, splits, tokenizes with `tok` and writes
 * out_dir/train-NNNNN.bin, val-NNNNN.bin, manifest.json (every source's counts, what was dropped
 * and why, the tokenizer's fingerprint) and, for a BPE tokenizer, tokenizer.json. Memory is
 * bounded by the number of documents (dedup signatures, offsets), not their size: tokens wait
 * in temporary files (out_dir/.prepare-tmp) until they are mixed. On failure or a stop, the
 * temporary files and any shard written are removed (and out_dir, when it made it and it is
 * empty): a stop returns OK with report->stopped. */
alloy_status alloy_prepare(const alloy_prepare_options *opt, const alloy_tokenizer *tok, alloy_prepare_report *report);

ALLOY_END_DECLS
#endif /* ALLOY_DATA_H */
