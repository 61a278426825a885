/*
 * alloy/fuse.h — fusing models: weight merges driven by mergekit-style YAML recipes.
 *
 * A recipe names models (checkpoint folders or Hugging Face folders of one family) and a
 * method; alloy_merge_run streams them into a new checkpoint folder: the inputs stay
 * memory-mapped, each tensor is merged in chunks of 2^20 entries (4 MB buffers, plus one bit
 * per entry per input for the masks of TIES and DARE), and model.safetensors is written
 * incrementally (header first, then each merged chunk) into a temporary file that is fsynced and
 * renamed into place. Memory does not grow with the models. Methods (docs/fusion.md):
 *   linear            Σ wᵢ·θᵢ, divided by Σ wᵢ when normalize (default true)   (model soups)
 *   slerp             spherical interpolation from base_model (t = 0) to the other model
 *                     (t = 1), per tensor; lerp when the two are nearly parallel
 *   task_arithmetic   base + λ·Σ wᵢ·(θᵢ − base)                        (Ilharco et al. 2023)
 *   ties              each task vector trimmed to its top `density` entries by magnitude, a
 *                     sign elected per entry by total weighted mass, the agreeing entries
 *                     averaged ("disjoint mean"), scaled by λ             (Yadav et al. 2023)
 *   dare_linear       each task-vector entry dropped with probability 1 − density and the
 *   dare_ties         rest scaled by 1/density (seeded), then summed (linear) or combined
 *                     with the TIES sign election (ties)                   (Yu et al. 2023)
 *   passthrough       layers copied from slices of models, stacked into a deeper model
 *
 *     alloy_merge_recipe *r;
 *     alloy_merge_report rep;
 *     if (alloy_merge_recipe_load(&r, "recipe.yaml") || alloy_merge_run(r, "merged", NULL, &rep))
 *         fprintf(stderr, "%s\n", alloy_last_error());   // "recipe.yaml:7: unknown merge_method ..."
 *     alloy_merge_recipe_free(r);
 *
 * The recipe subset (the keys mergekit users write):
 *   merge_method: linear | slerp | task_arithmetic | ties | dare_linear | dare_ties | passthrough
 *   models: [{model: PATH, parameters: {NAME: SETTING, ...}}, ...]          (or slices:)
 *   slices: [{sources: [{model: PATH, layer_range: [a, b], parameters: {...}}, ...],
 *             parameters: {...}, base_model: PATH}, ...]
 *   base_model: PATH     parameters: {NAME: SETTING}     seed: N (DARE's masks; default 0)
 *   dtype: float32 | bfloat16 | float16   (accepted; alloy computes in fp32 and writes F32)
 *   tokenizer_source: base | PATH         (whose tokenizer.json the merged folder gets)
 * A SETTING is a number (or true/false), a gradient [v0, v1, ...] interpolated linearly over
 * the layers of a slice (tensors outside the layers take v0, as mergekit does), or a list of
 * alternatives [{filter: SUBSTRING, value: V}, ..., {value: V}] of which the first whose filter
 * is a substring of the tensor's name (or that has no filter) applies.
 */
#ifndef ALLOY_FUSE_H
#define ALLOY_FUSE_H

#include "alloy/base.h"

ALLOY_BEGIN_DECLS

typedef enum alloy_merge_method {
    ALLOY_MERGE_METHOD_LINEAR = 0,
    ALLOY_MERGE_METHOD_SLERP,
    ALLOY_MERGE_METHOD_TASK_ARITHMETIC,
    ALLOY_MERGE_METHOD_TIES,
    ALLOY_MERGE_METHOD_DARE_LINEAR,
    ALLOY_MERGE_METHOD_DARE_TIES,
    ALLOY_MERGE_METHOD_PASSTHROUGH,
    ALLOY_MERGE_METHOD_COUNT
} alloy_merge_method;

/* The recipe name of a method ("ties"), and the reverse (false for an unknown name). */
const char *alloy_merge_method_name(alloy_merge_method method);
alloy_status alloy_merge_method_parse(const char *name, alloy_merge_method *out);

/* ---- per-tensor methods ------------------------------------------------------------------- */
/* Each works on `count` floats per input and writes `out` (count); out may not alias an input.
 * Sums are taken in double per entry; task vectors are θᵢ − base rounded to float, as a merge in
 * fp32 computes them. OpenMP over entries. Thread-safe for distinct outputs. alloy_merge_run
 * runs the same code a chunk at a time over mapped tensors, so it gives the same bytes. */

/* out = Σ wᵢ·inputs[i], divided by Σ wᵢ when normalize. Fails (USAGE) when normalize is asked
 * and the weights sum to 0. */
alloy_status alloy_merge_linear(float *out, const float *const *inputs, const double *weights, int n, size_t count,
                                bool normalize);

/* Spherical interpolation of the flattened tensors: t = 0 gives a, t = 1 gives b. The angle
 * comes from the directions a/‖a‖ and b/‖b‖ (a norm ≤ 1e-8 is left unnormalised); when
 * |cos| > 0.9995 the two are nearly parallel and it falls back to (1 − t)·a + t·b. */
void alloy_merge_slerp(float *out, const float *a, const float *b, double t, size_t count);

/* How the task vectors δᵢ = inputs[i] − base are combined. */
typedef struct alloy_merge_delta_options {
    bool normalize;  /* divide Σ wᵢ·δᵢ by Σ wᵢ (with sign election: over the agreeing entries
                        only, which makes the TIES "disjoint mean"); a zero sum divides by 1 */
    bool rescale;    /* DARE: kept entries are divided by their density */
    double lambda;   /* multiplies the combined delta before it is added to base */
} alloy_merge_delta_options;

/* out = base + λ·Σ wᵢ·δᵢ (/ Σ wᵢ when normalize). NOMEM if its few pointers cannot be allocated. */
alloy_status alloy_merge_task_arithmetic(float *out, const float *base, const float *const *inputs, const double *weights,
                                         int n, size_t count, const alloy_merge_delta_options *opt);

/* TIES: δᵢ keeps its floor(densities[i]·count) largest entries by magnitude (ties at the
 * threshold: the lower indices), the rest become 0; densities lie in (0, 1] (USAGE otherwise),
 * and 1 keeps all. For each entry the
 * elected sign is that of Σ wᵢ·δᵢ (+ when 0); the entries whose wᵢ·δᵢ has that sign are summed,
 * divided by the sum of their weights when normalize, scaled by λ and added to base.
 * Allocates n·count/8 bytes of masks (NOMEM when that fails). */
alloy_status alloy_merge_ties(float *out, const float *base, const float *const *inputs, const double *weights,
                              const double *densities, int n, size_t count, const alloy_merge_delta_options *opt);

/* DARE: each entry of δᵢ is kept when alloy_rng_uniform(rng) < densities[i] — draws taken input
 * by input, entry by entry, skipping inputs whose density is ≥ 1 (they keep everything) — and a
 * kept entry is divided by the density when opt->rescale. The sparse deltas are then combined
 * with the TIES sign election (ties = true: dare_ties) or summed (dare_linear), as above.
 * Densities must lie in (0, 1] (USAGE otherwise). Allocates n·count/8 bytes of masks. */
alloy_status alloy_merge_dare(float *out, const float *base, const float *const *inputs, const double *weights,
                              const double *densities, int n, size_t count, bool ties,
                              const alloy_merge_delta_options *opt, alloy_rng *rng);

/* ---- recipes -------------------------------------------------------------------------------- */

/* One alternative of a setting: it applies to a tensor whose name contains `filter`. */
typedef struct alloy_merge_cond {
    char *filter;            /* a substring of the tensor name; NULL (or "*") matches every tensor */
    double *values;          /* (n_values) one value, or a gradient over the layers */
    int n_values;
} alloy_merge_cond;

/* A named parameter as written in a `parameters:` mapping. */
typedef struct alloy_merge_param {
    char *name;              /* "weight", "density", "t", "normalize", "lambda", "rescale", ... */
    alloy_merge_cond *conds; /* (n_conds) the first that matches the tensor wins */
    int n_conds;
    bool is_bool;            /* written as true/false (values are then 1 or 0) */
    int line;                /* in the recipe, for messages */
} alloy_merge_param;

typedef struct alloy_merge_params {
    alloy_merge_param *items; /* (n) */
    int n;
} alloy_merge_params;

/* One input of a slice: a model and the layers taken from it. */
typedef struct alloy_merge_source {
    char *model;             /* the folder as written (relative paths are relative to the working folder) */
    int layer_begin;         /* [layer_begin, layer_end); both -1 for "every layer" (models: form) */
    int layer_end;
    alloy_merge_params params; /* per-model parameters (weight, density, scale) */
    int line;
} alloy_merge_source;

/* Consecutive layers of the output, merged from the same number of layers of each source. */
typedef struct alloy_merge_slice {
    alloy_merge_source *sources; /* (n_sources) */
    int n_sources;
    alloy_merge_params params;   /* the slice's parameters (before the top-level ones) */
    char *base_model;            /* the slice's own base_model, or NULL */
    int line;
} alloy_merge_slice;

typedef struct alloy_merge_recipe {
    char *path;                  /* the file, for messages ("<recipe>" when parsed from text) */
    alloy_merge_method method;
    char *base_model;            /* NULL when none */
    bool slices_form;            /* written with slices: (else models:, kept as one slice) */
    alloy_merge_slice *slices;   /* (n_slices) */
    int n_slices;
    alloy_merge_params params;   /* top-level parameters */
    char *tokenizer_source;      /* NULL, "base" or a model */
    char *dtype;                 /* as written, or NULL */
    uint64_t seed;               /* DARE's masks */
    int method_line, base_line, tokenizer_line; /* where those keys were (0: absent) */
} alloy_merge_recipe;

/* Parses a YAML recipe: a syntax error, an unknown key, method or parameter, a parameter of the
 * wrong scope, both or neither of models:/slices: are refused with "FILE:LINE: problem". Model
 * folders are not opened here (alloy_merge_run does). Free with alloy_merge_recipe_free. */
alloy_status alloy_merge_recipe_load(alloy_merge_recipe **out, const char *path);
/* The same from text in memory; `what` names it in messages. */
alloy_status alloy_merge_recipe_parse(alloy_merge_recipe **out, const char *text, size_t len, const char *what);
void alloy_merge_recipe_free(alloy_merge_recipe *r);

/* The parameter `name` of a list, or NULL. */
const alloy_merge_param *alloy_merge_params_find(const alloy_merge_params *p, const char *name);
/* The value of a setting for a tensor at gradient position t in [0, 1] (mergekit's rule: the
 * first matching alternative; a gradient [v0..vk] at t is linear between v[floor(t·k)] and the
 * next). False when no alternative matches. */
bool alloy_merge_param_eval(const alloy_merge_param *p, const char *tensor, double t, double *out);

/* What a merge did. */
typedef struct alloy_merge_report {
    int n_models;            /* distinct model folders read */
    int n_tensors;           /* tensors written */
    int n_layer;             /* layers of the merged model */
    size_t n_params;         /* floats written */
    size_t input_bytes;      /* tensor bytes of the models read */
    size_t output_bytes;     /* size of the merged model.safetensors */
    size_t buffer_bytes;     /* working buffers the merge allocated (outputs, conversions, masks) */
    size_t peak_rss;         /* this process's peak resident set so far, in bytes (getrusage) */
    double seconds;          /* wall time of the merge */
    char tokenizer_from[256];/* the folder whose tokenizer.json was copied, "" if none */
} alloy_merge_report;

/* Runs a recipe into out_dir (created): model.safetensors (F32, written as it is merged),
 * config.json (the base model's, or the first model's; n_layer set to the layers written) and
 * tokenizer.json (from tokenizer_source, else from the base or the first model that has one).
 * Before anything is written it opens every model and checks that families, configs, tensor
 * names and shapes agree, that tokenizers agree unless tokenizer_source chooses one, and that
 * every parameter the method needs resolves for every tensor; any failure names the recipe line,
 * model and tensor. progress (one update per tensor) and report may be NULL. */
alloy_status alloy_merge_run(const alloy_merge_recipe *r, const char *out_dir, alloy_progress *progress,
                             alloy_merge_report *report);

ALLOY_END_DECLS
#endif /* ALLOY_FUSE_H */
