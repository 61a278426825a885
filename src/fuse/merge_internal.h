/*
 * merge_internal.h — what the files of the merge engine share (src/fuse/):
 *
 *     merge_methods.c  the per-tensor methods (linear, SLERP, task arithmetic, TIES, DARE, copy)
 *                      over sources read a chunk at a time, and the public array functions
 *     merge_plan.c     the plan: the recipe's model folders opened (headers only), checked
 *                      against each other, and the output tensors listed with their parameters
 *     merge.c          the run: the plan's tensors merged chunk by chunk into the output file
 */
#ifndef ALLOY_FUSE_MERGE_INTERNAL_H
#define ALLOY_FUSE_MERGE_INTERNAL_H

#include "alloy/fuse.h"
#include "alloy/io.h"

/* ---- sources and sinks, a chunk at a time (merge_methods.c) ---- */

/* Entries per step of a merge: buffers of 4 MB, however large the tensor. */
#define MERGE_CHUNK ((size_t)1 << 20)

/* One stored tensor of a model, under its canonical name. */
typedef struct held_tensor {
    char *name;                     /* canonical (GPT-2: with "transformer.") */
    const alloy_safetensors *file;  /* the file that holds it */
    const alloy_st_tensor *t;       /* its entry there */
    int layer;                      /* the layer it belongs to, -1 for none */
    int prefix_len;                 /* bytes of name before the layer number */
    const char *suffix;             /* into name: what follows "N." */
} held_tensor;

/* The inputs of one merged tensor, read a chunk at a time: float arrays in memory (the public
 * functions) or mapped tensors of any float dtype (the engine), converted chunk by chunk. */
typedef struct source_set {
    int n;                          /* inputs */
    const float *const *arrays;     /* (n) whole arrays, or NULL */
    const held_tensor *const *held; /* (n) mapped tensors when arrays is NULL */
    float *const *buf;              /* (n) MERGE_CHUNK floats for each held tensor that needs converting */
    const float **view;             /* (n) the current chunk of each input */
    const float **tview;            /* (n) scratch: the task inputs' chunks */
    double *tw, *td;                /* (n) scratch: the task inputs' weights and densities */
    void *mem;                      /* the scratch arrays' allocation */
} source_set;

/* A set over n arrays in memory (held NULL) or n mapped tensors with their conversion buffers;
 * allocates the scratch arrays (merge_sources_free). */
alloy_status merge_sources_init(source_set *s, int n, const float *const *arrays, const held_tensor *const *held,
                                float *const *buf);
void merge_sources_free(source_set *s);

/* Where merged entries go: the caller's array (the public functions) or, a chunk at a time,
 * the output file. */
typedef struct sink {
    float *whole;                   /* the output array, or NULL */
    float *buf;                     /* MERGE_CHUNK floats when writing to file */
    alloy_safetensors_writer *file; /* where the engine appends them */
} sink;

/* The methods: each reads its sources chunk by chunk and hands every merged chunk to the sink.
 * out = Σ wᵢ·xᵢ / div over all inputs. */
alloy_status merge_do_linear(sink *k, source_set *s, const double *w, size_t count, double div);
/* SLERP of inputs 0 (t = 0) and 1 (t = 1). */
alloy_status merge_do_slerp(sink *k, source_set *s, double t, size_t count);
/* The task-vector methods: input b is the base; sparsify 0 none, 1 TIES's trim, 2 DARE's drop
 * (rng); elect: TIES's sign election. */
alloy_status merge_do_deltas(sink *k, source_set *s, int b, const double *w, const double *d, size_t count,
                             int sparsify, bool elect, const alloy_merge_delta_options *opt, alloy_rng *rng);
/* Input i, scaled unless scale is NAN. */
alloy_status merge_do_copy(sink *k, source_set *s, int i, double scale, size_t count);

/* ---- the plan (merge_plan.c) ---- */

typedef struct merge_model {
    const char *label;              /* as the recipe names it */
    char *path;                     /* resolved folder */
    int line;                       /* where the recipe first names it */
    alloy_config config;            /* its config.json */
    alloy_safetensors **files;      /* (n_files) mapped */
    int n_files;                    /* one, or the shards */
    held_tensor *tensors;           /* (n_tensors) in file order */
    held_tensor **sorted;           /* (n_tensors) by name */
    int n_tensors;                  /* parameter tensors (buffers left out) */
    size_t bytes;                   /* tensor bytes */
    char *tokenizer_json;           /* its tokenizer.json, NULL if none */
    uint64_t tok_id;                /* 0: unknown; else a fingerprint of the tokenizer */
} merge_model;

typedef struct plan_source {
    int model;                       /* index into plan.models */
    int begin, end;                  /* the layers taken, [begin, end) */
    const alloy_merge_source *def;   /* its recipe entry; NULL for a base_model added to models: */
    int line;                        /* in the recipe, for messages */
} plan_source;

typedef struct plan_slice {
    const alloy_merge_slice *def;    /* the recipe's slice */
    plan_source *sources;            /* (n) */
    int n;
    int base;                        /* index into sources of the base model, -1 when none */
} plan_slice;

/* One tensor of the output with everything needed to compute it. */
typedef struct out_tensor {
    char *name;                      /* in the output (layers renumbered) */
    int ndim;                        /* dimensions, as the inputs' */
    int64_t shape[ALLOY_ST_MAX_DIMS];/* the inputs' shape */
    size_t numel;                    /* entries */
    int slice;                       /* whose sources it merges */
    const held_tensor **in;          /* (n sources) */
    double *weight, *density, *scale;/* (n) per source; scale NAN: none */
    double t, lambda;                /* slerp's t; task vectors' λ */
    bool normalize, rescale;
} out_tensor;

typedef struct plan {
    const alloy_merge_recipe *r;     /* the recipe it carries out */
    merge_model *models;             /* (n_models) distinct folders */
    int n_models;                    /* models opened */
    plan_slice *slices;              /* (n_slices) */
    int n_slices;                    /* as the recipe's */
    out_tensor *out;                 /* (n_out) in file order */
    int n_out, cap_out;              /* tensors planned, and room for */
    int n_layer;                     /* of the output */
    int ref;                         /* the model that sets names and order (first source of slice 0) */
    int config_from;                 /* the model whose config.json is written */
    int tokenizer_from;              /* the model whose tokenizer is kept, -1 for none */
    int max_sources;                 /* the most sources of any slice */
} plan;


/* Opens the models, checks them and lists the output tensors with their parameters; a plan
 * built or partly built is freed with merge_plan_free. */
alloy_status merge_plan_build(plan *p, const alloy_merge_recipe *r);
void merge_plan_free(plan *p);

#endif
