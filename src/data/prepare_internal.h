/*
 * prepare_internal.h — what prepare.c (reading) and mix.c (writing shards) share.
 */
#ifndef ALLOY_PREPARE_INTERNAL_H
#define ALLOY_PREPARE_INTERNAL_H

#include "alloy/data.h"

struct cJSON;

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1 };

/* One source's tokens of one split, in a temporary file, with document boundaries. */
typedef struct tokfile {
    char *path;
    FILE *fp;            /* raw int32 tokens */
    uint64_t tokens;     /* in the file */
    uint64_t *doc_end;   /* (n_docs) token offset where each document ends */
    size_t n_docs, cap_docs;
} tokfile;

void prep_tokfile_close(tokfile *f); /* closes and deletes the file */

typedef struct source_state {
    const alloy_prepare_source *src;
    tokfile split[2];        /* train, val */
    alloy_reader_stats rs;   /* what the reader saw */
    alloy_norm_stats norm;   /* what normalisation changed */
    uint64_t dropped_empty, dropped_exact, dropped_near;
} source_state;

/* A writer of numbered shards of one split ("train" or "val"). */
typedef struct split_out {
    const char *dir, *prefix;
    uint32_t vocab;
    uint64_t max_tokens;        /* per shard */
    alloy_shard_writer w;
    bool open;
    int n_shards;
    uint64_t tokens;            /* written in all */
    struct cJSON *shards;       /* manifest entries */
} split_out;

/* What the mix did. */
typedef struct mix_plan {
    double *weight;             /* (n_sources) effective share of the training tokens */
    uint64_t *written[2];       /* (n_sources) tokens written per split */
} mix_plan;

/* Interleaves the sources' documents into train and val shards (by weight when opt->mix, else
 * by size), seeded; whole documents; a source repeats (a new shuffled epoch) only when asked
 * for more tokens than it has. */
alloy_status prep_mix(const alloy_prepare_options *opt, source_state *ss, split_out *train, split_out *val, mix_plan *plan);
void prep_mix_plan_free(mix_plan *plan);

#endif
