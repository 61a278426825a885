/*
 * merge.c — weight merges: the per-tensor methods (linear, SLERP, task arithmetic, TIES, DARE)
 * and the engine that runs a recipe (recipe.c) over model folders without loading them.
 *
 * The engine works in three steps. Open: each model's config.json is read and its safetensors
 * (one file or the shards of model.safetensors.index.json) memory-mapped; only headers are
 * touched. Plan: tensors are named canonically (GPT-2 hub names get "transformer." back), split
 * into the layers ("….h.N.…", "….layers.N.…") and the rest, and checked to agree across models;
 * the output list is built as mergekit builds it (embeddings from the first slice's sources,
 * layers slice by slice and renumbered, the final norm and head from the last slice's), and
 * every parameter is resolved for every tensor. Nothing is written until the plan stands.
 * Write: the safetensors header (all sizes are known), then per tensor and per chunk of 2^20
 * entries: view (aligned F32) or convert (F16, BF16) the inputs' chunk, merge it into one chunk
 * buffer, append that to the temporary file, and drop the chunk's mapped pages from this process
 * (MADV_DONTNEED: they stay in the page cache, not in our resident set). Methods that need the
 * whole tensor first (SLERP's norms, TIES's top-k) make extra passes over the chunks instead of
 * holding it. The public per-tensor functions run the same code over arrays in memory.
 */
#include "alloy/fuse.h"
#include "alloy/io.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

/* ==== per-tensor methods, a chunk at a time ================================================== */

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
 * allocates the scratch arrays (source_set_free). */
static alloy_status source_set_init(source_set *s, int n, const float *const *arrays, const held_tensor *const *held,
                                    float *const *buf) {
    *s = (source_set){.n = n, .arrays = arrays, .held = held, .buf = buf};
    s->mem = alloy_calloc((size_t)(n ? n : 1), 2 * sizeof(float *) + 2 * sizeof(double));
    if (!s->mem) return ALLOY_STATUS_NOMEM;
    s->tw = s->mem;
    s->td = s->tw + n;
    s->view = (const float **)(s->td + n);
    s->tview = s->view + n;
    return ALLOY_STATUS_OK;
}

/* Points s->view[i] at entries [lo, lo + len) of input i, converting them when they are not
 * aligned F32 in the map. */
static alloy_status view_chunk(source_set *s, int i, size_t lo, size_t len) {
    if (s->arrays) {
        s->view[i] = s->arrays[i] + lo;
        return ALLOY_STATUS_OK;
    }
    const alloy_st_tensor *t = s->held[i]->t;
    if (t->dtype == ALLOY_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        s->view[i] = (const float *)(const void *)t->data + lo;
        return ALLOY_STATUS_OK;
    }
    alloy_st_tensor part = *t; // the chunk as a tensor of its own
    size_t size = alloy_dtype_size(t->dtype);
    part.data = t->data + lo * size;
    part.numel = len;
    part.nbytes = len * size;
    s->view[i] = s->buf[i];
    return alloy_st_tensor_to_f32(s->held[i]->file, &part, s->buf[i]);
}

/* Gives back the pages of entries [lo, lo + len) of every mapped input (they stay in the page
 * cache): the resident set holds one chunk of each input, however large the models. */
static void release_chunk(const source_set *s, size_t lo, size_t len) {
    if (s->arrays) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < s->n; i++) {
        const alloy_st_tensor *t = s->held[i]->t;
        size_t size = alloy_dtype_size(t->dtype);
        uintptr_t from = (uintptr_t)(t->data + lo * size), to = from + len * size;
        uintptr_t a = from & ~(page - 1), b = (to + page - 1) & ~(page - 1);
        if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
    }
}

static void source_set_free(source_set *s) { alloy_free(s->mem); }

/* Where merged entries go: the caller's array (the public functions) or, a chunk at a time,
 * the output file. */
typedef struct sink {
    float *whole;              /* the output array, or NULL */
    float *buf;                /* MERGE_CHUNK floats when writing to file */
    alloy_atomic_file *file;   /* where the engine appends them */
} sink;

static float *sink_at(const sink *k, size_t lo) { return k->whole ? k->whole + lo : k->buf; }

/* Hands over the len merged entries at data (the engine appends them to the file). */
static alloy_status sink_put(sink *k, const float *data, size_t len) {
    return k->whole ? ALLOY_STATUS_OK : alloy_atomic_write(k->file, data, len * sizeof(float));
}

/* Entries of the chunk that starts at lo. */
static size_t chunk_len(size_t lo, size_t count) { return count - lo < MERGE_CHUNK ? count - lo : MERGE_CHUNK; }

/* out = Σ wᵢ·xᵢ / div over all inputs. */
static alloy_status do_linear(sink *k, source_set *s, const double *w, size_t count, double div) {
    alloy_status st = ALLOY_STATUS_OK;
    int n = s->n;
    for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
        size_t len = chunk_len(lo, count);
        for (int i = 0; i < n && !st; i++) st = view_chunk(s, i, lo, len);
        if (st) break;
        float *out = sink_at(k, lo);
        const float *const *in = s->view;
#pragma omp parallel for schedule(static)
        for (size_t e = 0; e < len; e++) {
            double acc = 0.0;
            for (int i = 0; i < n; i++) acc += w[i] * (double)in[i][e];
            out[e] = (float)(acc / div);
        }
        st = sink_put(k, out, len);
        release_chunk(s, lo, len);
    }
    return st;
}

alloy_status alloy_merge_linear(float *out, const float *const *in, const double *w, int n, size_t count,
                                bool normalize) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += w[i];
    if (normalize && sum == 0.0)
        return alloy_fail(ALLOY_STATUS_USAGE, "linear merge: the weights sum to 0, so they cannot be normalised");
    source_set s;
    alloy_status st = source_set_init(&s, n, in, NULL, NULL);
    sink k = {.whole = out};
    if (!st) st = do_linear(&k, &s, w, count, normalize ? sum : 1.0);
    source_set_free(&s);
    return st;
}

/* SLERP of inputs 0 (t = 0) and 1 (t = 1): their norms and dot product over every chunk, then the
 * interpolation chunk by chunk. */
static alloy_status do_slerp(sink *k, source_set *s, double t, size_t count) {
    double aa = 0.0, bb = 0.0, ab = 0.0;
    alloy_status st = ALLOY_STATUS_OK;
    for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
        size_t len = chunk_len(lo, count);
        if ((st = view_chunk(s, 0, lo, len)) || (st = view_chunk(s, 1, lo, len))) break;
        const float *a = s->view[0], *b = s->view[1];
#pragma omp parallel for schedule(static) reduction(+ : aa, bb, ab)
        for (size_t e = 0; e < len; e++) {
            aa += (double)a[e] * a[e];
            bb += (double)b[e] * b[e];
            ab += (double)a[e] * b[e];
        }
        release_chunk(s, lo, len);
    }
    // directions a/‖a‖ and b/‖b‖; a (near) zero tensor is left as it is, as mergekit does
    double na = sqrt(aa) > 1e-8 ? sqrt(aa) : 1.0, nb = sqrt(bb) > 1e-8 ? sqrt(bb) : 1.0;
    double dot = ab / (na * nb), s0, s1;
    if (fabs(dot) > 0.9995) { // nearly parallel: the angle is ill-conditioned, interpolate linearly
        s0 = 1.0 - t;
        s1 = t;
    } else {
        double theta = acos(dot), sin_theta = sin(theta);
        s0 = sin(theta - theta * t) / sin_theta;
        s1 = sin(theta * t) / sin_theta;
    }
    for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
        size_t len = chunk_len(lo, count);
        if ((st = view_chunk(s, 0, lo, len)) || (st = view_chunk(s, 1, lo, len))) break;
        const float *a = s->view[0], *b = s->view[1];
        float *out = sink_at(k, lo);
#pragma omp parallel for schedule(static)
        for (size_t e = 0; e < len; e++) out[e] = (float)(s0 * a[e] + s1 * b[e]);
        st = sink_put(k, out, len);
        release_chunk(s, lo, len);
    }
    return st;
}

void alloy_merge_slerp(float *out, const float *a, const float *b, double t, size_t count) {
    const float *arrays[2] = {a, b};
    const float *view[2];
    source_set s = {.n = 2, .arrays = arrays, .view = view}; // arrays never fail: no scratch needed
    sink k = {.whole = out};
    do_slerp(&k, &s, t, count);
}

/* The task-vector entry (θ − base rounded to float) as a sortable magnitude: the bits of |δ|. */
static inline uint32_t magnitude_key(float x, float base) {
    float d = x - base;
    uint32_t u;
    memcpy(&u, &d, sizeof u);
    return u & 0x7fffffffu;
}

/* Sets in bits (count bits) the k entries of |input i − input b| that are largest, the lower
 * index first among equal magnitudes. A radix select over the 31 bits of the magnitudes (11 + 10
 * + 10 per pass over the chunks) finds the k-th largest without sorting or holding the tensor. */
static alloy_status top_k_mask(uint64_t *bits, source_set *s, int i, int b, size_t count, size_t k) {
    memset(bits, 0, (count + 63) / 64 * sizeof *bits);
    if (k == 0) return ALLOY_STATUS_OK;
    if (k >= count) {
        for (size_t e = 0; e < count; e++) bits[e / 64] |= 1ull << (e % 64);
        return ALLOY_STATUS_OK;
    }
    static const int shift[3] = {20, 10, 0}, width[3] = {11, 10, 10};
    size_t hist[2048];
    uint32_t prefix = 0, prefix_mask = 0;
    size_t need = k; // how many to take among the entries that match the prefix so far
    alloy_status st = ALLOY_STATUS_OK;
    for (int pass = 0; pass < 4 && !st; pass++) {
        uint32_t nb = pass < 3 ? 1u << width[pass] : 0;
        memset(hist, 0, sizeof hist);
        for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
            size_t len = chunk_len(lo, count);
            if ((st = view_chunk(s, i, lo, len)) || (st = view_chunk(s, b, lo, len))) break;
            const float *x = s->view[i], *base = s->view[b];
            if (pass < 3) {
                for (size_t e = 0; e < len; e++) {
                    uint32_t key = magnitude_key(x[e], base[e]);
                    if ((key & prefix_mask) == prefix) hist[(key >> shift[pass]) & (nb - 1)]++;
                }
            } else { // all above the threshold, then the first `need` equal to it
                for (size_t e = 0; e < len; e++) {
                    uint32_t key = magnitude_key(x[e], base[e]);
                    if (key > prefix || (key == prefix && need && need--)) bits[(lo + e) / 64] |= 1ull << ((lo + e) % 64);
                }
            }
            release_chunk(s, lo, len);
        }
        if (pass == 3) break;
        size_t above = 0;
        int d = (int)nb - 1;
        for (; d > 0 && above + hist[d] < need; d--) above += hist[d];
        need -= above;
        prefix |= (uint32_t)d << shift[pass];
        prefix_mask |= (nb - 1) << shift[pass];
    }
    return st;
}

/* The task-vector methods (task arithmetic, TIES, DARE): input b is the base, the others task
 * models with weights w and densities d (indexed like the inputs; the base's are ignored).
 * sparsify: 0 none, 1 TIES's magnitude trim, 2 DARE's random drop (rng). elect: TIES's sign
 * election. Masks take one bit per entry per task input; the rest goes chunk by chunk. */
static alloy_status do_deltas(sink *k, source_set *s, int b, const double *w, const double *d, size_t count,
                              int sparsify, bool elect, const alloy_merge_delta_options *opt, alloy_rng *rng) {
    int nt = 0;
    for (int i = 0; i < s->n; i++) {
        if (i == b) continue;
        s->tw[nt] = w[i];
        s->td[nt++] = sparsify ? d[i] : 1.0;
    }
    if (sparsify == 2 && !rng) return alloy_fail(ALLOY_STATUS_USAGE, "merge: DARE needs a random generator");
    for (int i = 0; i < nt && sparsify; i++)
        if (!(s->td[i] > 0.0 && s->td[i] <= 1.0))
            return alloy_fail(ALLOY_STATUS_USAGE, "merge: density %g of input %d is outside (0, 1]", s->td[i], i);
    // one block: the mask rows of the inputs that drop entries, their pointers and divisors
    size_t words = (count + 63) / 64, rows = 0, bytes;
    for (int i = 0; i < nt; i++) rows += s->td[i] < 1.0;
    if (!alloy_mul_size(rows, words * sizeof(uint64_t), &bytes) || bytes > SIZE_MAX / 2)
        return alloy_fail(ALLOY_STATUS_NOMEM, "merge: masks of %zu tensors of %zu entries overflow", rows, count);
    void *mem = alloy_malloc(bytes + (sizeof(uint64_t *) + sizeof(double)) * (size_t)(nt + 1));
    if (!mem) return ALLOY_STATUS_NOMEM;
    uint64_t **mask = (uint64_t **)((char *)mem + bytes);
    double *div = (double *)(mask + nt + 1);
    alloy_status st = ALLOY_STATUS_OK;
    for (int i = 0, r = 0, j = 0; i < s->n && !st; i++) {
        if (i == b) continue;
        mask[j] = s->td[j] < 1.0 ? (uint64_t *)mem + words * (size_t)r++ : NULL;
        div[j] = sparsify == 2 && opt->rescale && mask[j] ? s->td[j] : 1.0; // DARE rescales what it keeps
        if (mask[j] && sparsify == 1) st = top_k_mask(mask[j], s, i, b, count, (size_t)(s->td[j] * (double)count));
        if (mask[j] && sparsify == 2) {
            uint64_t *bits = mask[j];
            memset(bits, 0, words * sizeof *bits);
            for (size_t e = 0; e < count; e++) // sequential draws: the mask depends only on the seed
                if (alloy_rng_uniform(rng) < s->td[j]) bits[e / 64] |= 1ull << (e % 64);
        }
        j++;
    }
    for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
        size_t len = chunk_len(lo, count);
        for (int i = 0; i < s->n && !st; i++) st = view_chunk(s, i, lo, len);
        if (st) break;
        for (int i = 0, j = 0; i < s->n; i++)
            if (i != b) s->tview[j++] = s->view[i];
        const float *base = s->view[b];
        const float *const *in = s->tview;
        const double *tw = s->tw;
        float *out = sink_at(k, lo);
#pragma omp parallel for schedule(static)
        for (size_t c = 0; c < len; c++) {
            size_t e = lo + c; // the index in the tensor (the masks')
            double mixed = 0.0, wsum = 0.0, total = 0.0;
            if (elect)
                for (int i = 0; i < nt; i++)
                    if (!mask[i] || (mask[i][e / 64] >> (e % 64) & 1)) total += tw[i] * ((double)(in[i][c] - base[c]) / div[i]);
            for (int i = 0; i < nt; i++) {
                bool kept = !mask[i] || (mask[i][e / 64] >> (e % 64) & 1);
                double wd = kept ? tw[i] * ((double)(in[i][c] - base[c]) / div[i]) : 0.0;
                if (elect && !(total >= 0.0 ? wd > 0.0 : wd < 0.0)) continue; // disagrees with the elected sign (or is 0)
                mixed += wd;
                wsum += tw[i];
            }
            if (elect ? wsum == 0.0 : fabs(wsum) < 1e-8) wsum = 1.0; // nothing to average: keep the sum
            if (opt->normalize) mixed /= wsum;
            out[c] = (float)((double)base[c] + opt->lambda * mixed);
        }
        st = sink_put(k, out, len);
        release_chunk(s, lo, len);
    }
    alloy_free(mem);
    return st;
}

/* The public task-vector functions: inputs then base as one array set. */
static alloy_status deltas_public(float *out, const float *base, const float *const *in, const double *w,
                                  const double *densities, int n, size_t count, int sparsify, bool elect,
                                  const alloy_merge_delta_options *opt, alloy_rng *rng) {
    const float **arrays = alloy_malloc(sizeof *arrays * (size_t)(n + 1));
    double *wd = alloy_malloc(sizeof(double) * 2 * (size_t)(n + 1));
    source_set s = {0};
    alloy_status st = arrays && wd ? source_set_init(&s, n + 1, arrays, NULL, NULL) : ALLOY_STATUS_NOMEM;
    if (!st) {
        for (int i = 0; i < n; i++) {
            arrays[i] = in[i];
            wd[i] = w[i];
            wd[n + 1 + i] = densities ? densities[i] : 1.0;
        }
        arrays[n] = base;
        wd[n] = wd[2 * n + 1] = 1.0;
        sink k = {.whole = out};
        st = do_deltas(&k, &s, n, wd, wd + n + 1, count, sparsify, elect, opt, rng);
    }
    source_set_free(&s);
    alloy_free(wd);
    alloy_free(arrays);
    return st;
}

alloy_status alloy_merge_task_arithmetic(float *out, const float *base, const float *const *in, const double *w, int n,
                                         size_t count, const alloy_merge_delta_options *opt) {
    return deltas_public(out, base, in, w, NULL, n, count, 0, false, opt, NULL);
}

alloy_status alloy_merge_ties(float *out, const float *base, const float *const *in, const double *w,
                              const double *densities, int n, size_t count, const alloy_merge_delta_options *opt) {
    return deltas_public(out, base, in, w, densities, n, count, 1, true, opt, NULL);
}

alloy_status alloy_merge_dare(float *out, const float *base, const float *const *in, const double *w,
                              const double *densities, int n, size_t count, bool ties,
                              const alloy_merge_delta_options *opt, alloy_rng *rng) {
    return deltas_public(out, base, in, w, densities, n, count, 2, ties, opt, rng);
}

/* ==== the models of a recipe ================================================================= */

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

/* Unmaps a model's files and frees what model_open allocated (a zeroed model is fine). */
static void model_close(merge_model *m) {
    for (int i = 0; i < m->n_tensors; i++) alloy_free(m->tensors[i].name);
    alloy_free(m->tensors);
    alloy_free(m->sorted);
    for (int i = 0; i < m->n_files; i++) alloy_safetensors_close(m->files[i]);
    alloy_free(m->files);
    alloy_free(m->path);
    alloy_free(m->tokenizer_json);
    memset(m, 0, sizeof *m);
}

/* The layer number in "….h.N.…" or "….layers.N.…" (at the start or after a dot), or -1. */
static int layer_of(const char *name, int *prefix_len, const char **suffix) {
    for (const char *p = name; *p; p++) {
        if (p != name && p[-1] != '.') continue;
        size_t kw = !strncmp(p, "layers.", 7) ? 7 : !strncmp(p, "h.", 2) ? 2 : 0;
        const char *q = p + kw;
        if (!kw || !isdigit((unsigned char)*q)) continue;
        long v = 0;
        while (isdigit((unsigned char)*q) && v < 1000000) v = v * 10 + (*q++ - '0');
        if (*q != '.') continue;
        *prefix_len = (int)(p + kw - name);
        *suffix = q + 1;
        return (int)v;
    }
    return -1;
}

static int cmp_held(const void *a, const void *b) {
    return strcmp((*(const held_tensor *const *)a)->name, (*(const held_tensor *const *)b)->name);
}

/* The tensor of m with this canonical name, or NULL. */
static const held_tensor *model_find(const merge_model *m, const char *name) {
    held_tensor key = {.name = (char *)name}, *kp = &key;
    held_tensor **hit = bsearch(&kp, m->sorted, (size_t)m->n_tensors, sizeof *m->sorted, cmp_held);
    return hit ? *hit : NULL;
}

/* Maps the weights of folder m->path: model.safetensors, or the shards an index lists. */
static alloy_status model_map_files(merge_model *m) {
    alloy_weight_files w;
    alloy_status s = alloy_weight_files_open(&w, m->path);
    if (!s) {
        m->files = w.files;
        m->n_files = w.n;
    }
    return s;
}

/* The table of canonical names of an opened model, checked against its config. */
static alloy_status model_index(merge_model *m) {
    int total = 0;
    for (int f = 0; f < m->n_files; f++) total += m->files[f]->n_tensors;
    m->tensors = alloy_calloc((size_t)(total ? total : 1), sizeof *m->tensors);
    m->sorted = alloy_calloc((size_t)(total ? total : 1), sizeof *m->sorted);
    if (!m->tensors || !m->sorted) return ALLOY_STATUS_NOMEM;
    for (int f = 0; f < m->n_files; f++) {
        const alloy_safetensors *st = m->files[f];
        for (int i = 0; i < st->n_tensors; i++) {
            const alloy_st_tensor *t = &st->tensors[i];
            if (alloy_checkpoint_ignorable(m->config.family, t->name)) continue;
            if (t->dtype != ALLOY_DTYPE_F32 && t->dtype != ALLOY_DTYPE_F16 && t->dtype != ALLOY_DTYPE_BF16)
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has dtype %s; alloy merges F32, F16 and BF16",
                                  st->path, t->name, alloy_dtype_name(t->dtype));
            held_tensor *h = &m->tensors[m->n_tensors];
            bool prefix = m->config.family == ALLOY_FAMILY_GPT2 && strncmp(t->name, "transformer.", 12);
            size_t len = strlen(t->name) + (prefix ? 12 : 0) + 1;
            if (!(h->name = alloy_malloc(len))) return ALLOY_STATUS_NOMEM;
            snprintf(h->name, len, "%s%s", prefix ? "transformer." : "", t->name);
            h->file = st;
            h->t = t;
            h->layer = layer_of(h->name, &h->prefix_len, &h->suffix);
            m->sorted[m->n_tensors++] = h;
            m->bytes += t->nbytes;
            if (h->layer >= m->config.n_layer)
                return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" is in layer %d but config.json has n_layer %d",
                                  st->path, t->name, h->layer, m->config.n_layer);
        }
    }
    qsort(m->sorted, (size_t)m->n_tensors, sizeof *m->sorted, cmp_held);
    for (int i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->sorted[i - 1]->name, m->sorted[i]->name))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" is stored twice", m->path, m->sorted[i]->name);
    return ALLOY_STATUS_OK;
}

/* Opens a model folder: config, mapped weights, tokenizer fingerprint. */
static alloy_status model_open(merge_model *m, const char *label, int line, const char *recipe) {
    memset(m, 0, sizeof *m);
    m->label = label;
    m->line = line;
    if (!alloy_is_dir(label))
        return alloy_fail(ALLOY_STATUS_IO, "%s:%d: model \"%s\": %s", recipe, line, label,
                          alloy_path_exists(label) ? "not a folder" : "no such folder");
    char *real = realpath(label, NULL);
    m->path = real ? alloy_strdup(real) : alloy_strdup(label);
    free(real);
    if (!m->path) return ALLOY_STATUS_NOMEM;
    char *cpath = alloy_path_join(m->path, "config.json"), *tpath = alloy_path_join(m->path, "tokenizer.json");
    alloy_status s = cpath && tpath ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_config_load(&m->config, cpath);
    if (!s) s = model_map_files(m);
    if (!s) s = model_index(m);
    if (!s && alloy_path_exists(tpath)) {
        char *text;
        size_t n;
        s = alloy_file_read_all(tpath, &text, &n);
        if (!s) {
            m->tok_id = alloy_fnv64(alloy_fnv64(ALLOY_FNV64_INIT, "json", 4), text, n) | 1;
            m->tokenizer_json = tpath;
            tpath = NULL;
            alloy_free(text);
        }
    } else if (!s && m->config.tokenizer[0]) {
        m->tok_id = alloy_fnv64(ALLOY_FNV64_INIT, m->config.tokenizer, strlen(m->config.tokenizer)) | 1;
    }
    alloy_free(cpath);
    alloy_free(tpath);
    if (s) alloy_error_prefix("%s:%d: model \"%s\"", recipe, line, label);
    return s;
}

/* ==== the plan ================================================================================ */

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

/* Frees a plan, built or partly built, with its models. */
static void plan_free(plan *p) {
    for (int i = 0; i < p->n_out; i++) {
        alloy_free(p->out[i].name);
        alloy_free(p->out[i].in);
        alloy_free(p->out[i].weight);
    }
    alloy_free(p->out);
    for (int i = 0; i < p->n_slices; i++) alloy_free(p->slices[i].sources);
    alloy_free(p->slices);
    for (int i = 0; i < p->n_models; i++) model_close(&p->models[i]);
    alloy_free(p->models);
    memset(p, 0, sizeof *p);
}

/* The index of a model folder, opening it on first use. */
static alloy_status plan_model(plan *p, const char *label, int line, int *out) {
    for (int i = 0; i < p->n_models; i++) {
        if (!strcmp(p->models[i].label, label)) {
            *out = i;
            return ALLOY_STATUS_OK;
        }
    }
    merge_model m;
    alloy_status s = model_open(&m, label, line, p->r->path);
    if (s) {
        model_close(&m);
        return s;
    }
    for (int i = 0; i < p->n_models; i++) { // the same folder under another spelling
        if (!strcmp(p->models[i].path, m.path)) {
            model_close(&m);
            *out = i;
            return ALLOY_STATUS_OK;
        }
    }
    merge_model *grown = alloy_realloc(p->models, sizeof *grown * (size_t)p->n_models, sizeof *grown * (size_t)(p->n_models + 1));
    if (!grown) {
        model_close(&m);
        return ALLOY_STATUS_NOMEM;
    }
    p->models = grown;
    p->models[p->n_models] = m;
    *out = p->n_models++;
    return ALLOY_STATUS_OK;
}

static void format_shape(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && k + 24 < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(buf + k, size - k, "]");
}

static bool same_shape(const alloy_st_tensor *a, const alloy_st_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* Model b against the reference a: same family and sizes, the same tensors with the same
 * shapes (layers compared by what follows the layer number). */
static alloy_status check_compatible(const plan *p, const merge_model *a, const merge_model *b) {
    const char *rp = p->r->path;
    const alloy_config *x = &a->config, *y = &b->config;
    if (x->family != y->family)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" is of the %s family but \"%s\" is %s", rp, b->line,
                          b->label, alloy_family_name(y->family), a->label, alloy_family_name(x->family));
#define SAME(field, fmt)                                                                                         \
    if (x->field != y->field)                                                                                    \
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has " #field " " fmt " but \"%s\" has " fmt, rp, \
                          b->line, b->label, y->field, a->label, x->field);
    SAME(vocab_size, "%d") SAME(d_model, "%d") SAME(n_head, "%d") SAME(n_kv_head, "%d") SAME(d_ff, "%d")
    SAME(max_seq_len, "%d") SAME(tie_embeddings, "%d") SAME(norm_eps, "%g") SAME(rope_theta, "%g")
#undef SAME
    // every tensor of b is one of a's (by name, or by layer suffix), with a's shape
    int a_plain = 0, a_layer0 = 0, b_match = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        a_plain += a->tensors[i].layer < 0;
        a_layer0 += a->tensors[i].layer == 0;
    }
    for (int i = 0; i < b->n_tensors; i++) {
        const held_tensor *h = &b->tensors[i];
        const held_tensor *g = NULL;
        if (h->layer < 0) {
            g = model_find(a, h->name);
        } else {
            char name[512];
            snprintf(name, sizeof name, "%.*s0.%s", h->prefix_len, h->name, h->suffix);
            g = model_find(a, name);
        }
        if (!g)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has tensor \"%s\", which \"%s\" lacks", rp, b->line,
                              b->label, h->name, a->label);
        if (!same_shape(g->t, h->t)) {
            char ga[96], gb[96];
            format_shape(ga, sizeof ga, g->t->shape, g->t->ndim);
            format_shape(gb, sizeof gb, h->t->shape, h->t->ndim);
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: tensor \"%s\" has shape %s in \"%s\" but %s in \"%s\"", rp,
                              b->line, h->name, gb, b->label, ga, a->label);
        }
        b_match++;
    }
    if (b_match != a_plain + a_layer0 * y->n_layer)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has %d tensors where \"%s\" implies %d for %d layers", rp,
                          b->line, b->label, b_match, a->label, a_plain + a_layer0 * y->n_layer, y->n_layer);
    return ALLOY_STATUS_OK;
}

/* Whether the method merges relative to a base model. */
static bool method_uses_base(alloy_merge_method m) {
    return m != ALLOY_MERGE_METHOD_LINEAR && m != ALLOY_MERGE_METHOD_PASSTHROUGH;
}

/* The slices with their models opened and layer ranges resolved. */
static alloy_status plan_slices(plan *p) {
    const alloy_merge_recipe *r = p->r;
    p->slices = alloy_calloc((size_t)r->n_slices, sizeof *p->slices);
    if (!p->slices) return ALLOY_STATUS_NOMEM;
    p->n_slices = r->n_slices;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < r->n_slices && !s; i++) {
        const alloy_merge_slice *def = &r->slices[i];
        plan_slice *sl = &p->slices[i];
        sl->def = def;
        sl->base = -1;
        const char *base = def->base_model ? def->base_model : r->base_model;
        int base_line = def->base_model ? def->line : r->base_line;
        sl->sources = alloy_calloc((size_t)def->n_sources + 1, sizeof *sl->sources);
        if (!sl->sources) return ALLOY_STATUS_NOMEM;
        int base_model = -1;
        if (base && method_uses_base(r->method) && (s = plan_model(p, base, base_line, &base_model))) break;
        for (int j = 0; j < def->n_sources && !s; j++) {
            plan_source *ps = &sl->sources[sl->n++];
            ps->def = &def->sources[j];
            ps->line = ps->def->line;
            s = plan_model(p, ps->def->model, ps->line, &ps->model);
            if (!s && ps->model == base_model) sl->base = j;
        }
        if (s) break;
        if (base_model >= 0 && sl->base < 0) {
            if (r->slices_form)
                return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: the base model \"%s\" is not among the sources of this slice",
                                  r->path, def->line, base);
            sl->base = sl->n; // models: mergekit adds the base model when the list leaves it out
            sl->sources[sl->n++] = (plan_source){.model = base_model, .line = base_line};
        }
        if (r->method == ALLOY_MERGE_METHOD_SLERP && sl->n != 2)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: slerp merges exactly two models (base_model and one other), not %d",
                              r->path, def->line, sl->n);
        int length = -1;
        for (int j = 0; j < sl->n; j++) {
            plan_source *ps = &sl->sources[j];
            const merge_model *m = &p->models[ps->model];
            if (!ps->def || ps->def->layer_begin < 0) {
                ps->begin = 0;
                ps->end = m->config.n_layer;
            } else {
                ps->begin = ps->def->layer_begin;
                ps->end = ps->def->layer_end;
                if (ps->end > m->config.n_layer)
                    return alloy_fail(ALLOY_STATUS_RANGE, "%s:%d: layer_range [%d, %d] goes past the %d layers of \"%s\"",
                                      r->path, ps->line, ps->begin, ps->end, m->config.n_layer, m->label);
            }
            if (length >= 0 && ps->end - ps->begin != length)
                return alloy_fail(ALLOY_STATUS_MISMATCH,
                                  r->slices_form ? "%s:%d: the sources of a slice must have as many layers each (%d and %d)"
                                                 : "%s:%d: the models have different numbers of layers (%d and %d): choose "
                                                   "layers with slices:",
                                  r->path, ps->line, length, ps->end - ps->begin);
            length = ps->end - ps->begin;
        }
        p->n_layer += length;
        if (sl->n > p->max_sources) p->max_sources = sl->n;
    }
    return s;
}

/* The value of parameter `name` for source src (NULL: the merge's own parameters) of slice sl
 * at tensor `tensor`, position t: the source's, then the slice's, then the top-level ones. */
static const alloy_merge_param *lookup(const plan *p, const plan_slice *sl, const plan_source *src, const char *name,
                                       const char *tensor, double t, double *out) {
    const alloy_merge_params *levels[3] = {src && src->def ? &src->def->params : NULL, &sl->def->params, &p->r->params};
    for (int i = 0; i < 3; i++) {
        const alloy_merge_param *q = levels[i] ? alloy_merge_params_find(levels[i], name) : NULL;
        if (q && alloy_merge_param_eval(q, tensor, t, out)) return q;
    }
    return NULL;
}

/* Resolves the parameters of one output tensor. */
static alloy_status plan_params(plan *p, out_tensor *o, double t) {
    const alloy_merge_recipe *r = p->r;
    const plan_slice *sl = &p->slices[o->slice];
    alloy_merge_method m = r->method;
    int n = sl->n;
    o->weight = alloy_calloc((size_t)n * 3, sizeof(double));
    if (!o->weight) return ALLOY_STATUS_NOMEM;
    o->density = o->weight + n;
    o->scale = o->weight + 2 * n;
    double v; // defaults as mergekit's: normalize for linear and ties only
    o->normalize = lookup(p, sl, NULL, "normalize", o->name, t, &v) ? v != 0.0
                                                                     : m == ALLOY_MERGE_METHOD_LINEAR || m == ALLOY_MERGE_METHOD_TIES;
    o->rescale = lookup(p, sl, NULL, "rescale", o->name, t, &v) ? v != 0.0 : true;
    o->lambda = lookup(p, sl, NULL, "lambda", o->name, t, &v) ? v : 1.0;
    if (m == ALLOY_MERGE_METHOD_SLERP) {
        if (!lookup(p, sl, NULL, "t", o->name, t, &o->t))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: slerp has no t for tensor \"%s\"", r->path, r->method_line, o->name);
    }
    double wsum = 0.0;
    for (int j = 0; j < n; j++) {
        const plan_source *ps = &sl->sources[j];
        const char *in_name = o->in[j]->name; // per-model parameters see the input's name, as in mergekit
        const char *label = p->models[ps->model].label;
        bool task = method_uses_base(m) && j != sl->base;
        o->scale[j] = lookup(p, sl, ps, "scale", in_name, t, &v) ? v : NAN;
        if (m == ALLOY_MERGE_METHOD_LINEAR || (task && m != ALLOY_MERGE_METHOD_SLERP)) {
            if (!lookup(p, sl, ps, "weight", in_name, t, &o->weight[j]))
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: model \"%s\" has no weight for tensor \"%s\"", r->path, ps->line,
                                  label, in_name);
            wsum += o->weight[j];
        }
        const alloy_merge_param *q = lookup(p, sl, ps, "density", in_name, t, &o->density[j]);
        if (!q) o->density[j] = 1.0;
        else if (task && !(o->density[j] > 0.0 && o->density[j] <= 1.0))
            return alloy_fail(ALLOY_STATUS_RANGE, "%s:%d: density %g for model \"%s\" at tensor \"%s\" is outside (0, 1]",
                              r->path, q->line, o->density[j], label, in_name);
    }
    if (m == ALLOY_MERGE_METHOD_LINEAR && o->normalize && wsum == 0.0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: the weights sum to 0 at tensor \"%s\", so normalize cannot divide by them",
                          r->path, sl->def->line, o->name);
    return ALLOY_STATUS_OK;
}

/* Appends one output tensor merged from the sources of slice si; `names[j]` is the input's name
 * in source j's model. */
static alloy_status plan_add(plan *p, const char *out_name, int si, char **names, double t) {
    if (p->n_out == p->cap_out) {
        int cap = p->cap_out ? 2 * p->cap_out : 64;
        out_tensor *grown = alloy_realloc(p->out, sizeof *grown * (size_t)p->cap_out, sizeof *grown * (size_t)cap);
        if (!grown) return ALLOY_STATUS_NOMEM;
        p->out = grown;
        p->cap_out = cap;
    }
    out_tensor *o = &p->out[p->n_out++];
    memset(o, 0, sizeof *o);
    o->slice = si;
    o->name = alloy_strdup(out_name);
    const plan_slice *sl = &p->slices[si];
    o->in = alloy_calloc((size_t)sl->n, sizeof *o->in);
    if (!o->name || !o->in) return ALLOY_STATUS_NOMEM;
    for (int j = 0; j < sl->n; j++) {
        const merge_model *m = &p->models[sl->sources[j].model];
        o->in[j] = model_find(m, names[j]);
        if (!o->in[j]) // the compatibility check makes this unreachable
            return alloy_fail(ALLOY_STATUS_INTERNAL, "%s: tensor \"%s\" not found", m->label, names[j]);
    }
    const alloy_st_tensor *t0 = o->in[0]->t;
    o->ndim = t0->ndim;
    memcpy(o->shape, t0->shape, sizeof o->shape);
    o->numel = t0->numel;
    return plan_params(p, o, t);
}

/* The output tensors in order: embeddings, the layers slice by slice, the rest. */
static alloy_status plan_tensors(plan *p) {
    const merge_model *ref = &p->models[p->ref];
    char **names = alloy_calloc((size_t)p->max_sources, sizeof *names);
    char *buf = alloy_malloc((size_t)p->max_sources * 512 + 512);
    if (!names || !buf) {
        alloy_free(names);
        alloy_free(buf);
        return ALLOY_STATUS_NOMEM;
    }
    for (int j = 0; j < p->max_sources; j++) names[j] = buf + 512 + 512 * (size_t)j;
    alloy_status s = ALLOY_STATUS_OK;
    for (int pass = 0; pass < 2 && !s; pass++) { // embeddings (pass 0), then layers, then the rest (pass 1)
        if (pass == 1) {
            int out_layer = 0;
            for (int si = 0; si < p->n_slices && !s; si++) {
                const plan_slice *sl = &p->slices[si];
                int len = sl->sources[0].end - sl->sources[0].begin;
                for (int k = 0; k < len && !s; k++, out_layer++) {
                    double t = len > 1 ? (double)k / (double)(len - 1) : 1.0; // mergekit's position in the slice
                    for (int i = 0; i < ref->n_tensors && !s; i++) {
                        const held_tensor *h = &ref->tensors[i];
                        if (h->layer != 0) continue;
                        for (int j = 0; j < sl->n; j++)
                            snprintf(names[j], 512, "%.*s%d.%s", h->prefix_len, h->name, sl->sources[j].begin + k, h->suffix);
                        snprintf(buf, 512, "%.*s%d.%s", h->prefix_len, h->name, out_layer, h->suffix);
                        s = plan_add(p, buf, si, names, t);
                    }
                }
            }
        }
        for (int i = 0; i < ref->n_tensors && !s; i++) {
            const held_tensor *h = &ref->tensors[i];
            if (h->layer >= 0) continue;
            bool embedding = strstr(h->name, "embed") || strstr(h->name, "wte") || strstr(h->name, "wpe");
            if (embedding != (pass == 0)) continue;
            int si = pass == 0 ? 0 : p->n_slices - 1;
            for (int j = 0; j < p->slices[si].n; j++) snprintf(names[j], 512, "%s", h->name);
            s = plan_add(p, h->name, si, names, 0.0); // outside the layers mergekit evaluates gradients at t = 0
        }
    }
    alloy_free(names);
    alloy_free(buf);
    return s;
}

/* Chooses the tokenizer to keep, refusing models whose tokenizers differ unless the recipe says. */
static alloy_status plan_tokenizer(plan *p) {
    const alloy_merge_recipe *r = p->r;
    p->tokenizer_from = -1;
    if (r->tokenizer_source) {
        bool base = !strcmp(r->tokenizer_source, "base");
        alloy_status s = plan_model(p, base ? r->base_model : r->tokenizer_source, r->tokenizer_line, &p->tokenizer_from);
        if (s) return s;
        if (!p->models[p->tokenizer_from].tok_id)
            return alloy_fail(ALLOY_STATUS_IO, "%s:%d: tokenizer_source \"%s\" has no tokenizer.json", r->path,
                              r->tokenizer_line, p->models[p->tokenizer_from].label);
        return ALLOY_STATUS_OK;
    }
    int first = -1;
    for (int i = 0; i < p->n_models; i++) {
        const merge_model *m = &p->models[i];
        if (!m->tok_id) continue;
        if (first < 0) first = i;
        else if (m->tok_id != p->models[first].tok_id)
            return alloy_fail(ALLOY_STATUS_MISMATCH,
                              "%s:%d: models \"%s\" and \"%s\" have different tokenizers: choose one with tokenizer_source "
                              "(base or a model)",
                              r->path, m->line, p->models[first].label, m->label);
    }
    p->tokenizer_from = p->models[p->config_from].tok_id ? p->config_from : first;
    return ALLOY_STATUS_OK;
}

/* Opens the models, checks them and lists the output tensors with their parameters. */
static alloy_status plan_build(plan *p, const alloy_merge_recipe *r) {
    memset(p, 0, sizeof *p);
    p->r = r;
    alloy_status s = plan_slices(p);
    if (s) return s;
    p->ref = p->slices[0].sources[0].model;
    p->config_from = p->ref;
    if (r->base_model) {
        int b;
        if ((s = plan_model(p, r->base_model, r->base_line, &b))) return s;
        p->config_from = b;
    }
    if ((s = plan_tokenizer(p))) return s;
    for (int i = 0; i < p->n_models && !s; i++) // the reference too: its own layers must be complete
        s = check_compatible(p, &p->models[p->ref], &p->models[i]);
    if (!s) s = plan_tensors(p);
    return s;
}

/* ==== writing ================================================================================= */

/* Whether reading this tensor needs a conversion buffer (not F32, or not aligned in the map). */
static bool needs_buffer(const held_tensor *h) {
    return h->t->dtype != ALLOY_DTYPE_F32 || ((uintptr_t)h->t->data % sizeof(float)) != 0;
}

/* The safetensors header for the plan's tensors (F32), padded to a multiple of 8. */
static alloy_status header_text(const plan *p, char **out, size_t *len, size_t *padded) {
    cJSON *root = cJSON_CreateObject(), *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    if (!meta) {
        cJSON_Delete(root);
        return ALLOY_STATUS_NOMEM;
    }
    cJSON_AddStringToObject(meta, "format", "pt");
    cJSON_AddStringToObject(meta, "producer", "alloy merge");
    cJSON_AddStringToObject(meta, "merge_method", alloy_merge_method_name(p->r->method));
    size_t offset = 0;
    for (int i = 0; i < p->n_out; i++) {
        const out_tensor *o = &p->out[i];
        size_t bytes;
        if (!alloy_mul_size(o->numel, sizeof(float), &bytes) || offset > SIZE_MAX - bytes) {
            cJSON_Delete(root);
            return alloy_fail(ALLOY_STATUS_RANGE, "merge: the output's size overflows at tensor \"%s\"", o->name);
        }
        cJSON *t = cJSON_AddObjectToObject(root, o->name);
        cJSON_AddStringToObject(t, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < o->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)o->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return alloy_fail(ALLOY_STATUS_NOMEM, "merge: cannot format the safetensors header");
    *out = text;
    *len = strlen(text);
    *padded = (*len + 7) / 8 * 8; // the data buffer starts 8-byte aligned
    return ALLOY_STATUS_OK;
}

/* Working memory, sized once from the plan: one chunk of output and, per source slot that ever
 * reads a tensor needing conversion, one chunk of conversion. */
typedef struct work {
    float *out;          /* (MERGE_CHUNK) */
    float **conv;        /* (max_sources) each NULL or (MERGE_CHUNK) */
    int n;               /* max_sources */
    size_t bytes;        /* the buffers plus the largest set of masks a tensor needs */
} work;

/* Frees the working buffers. */
static void work_release(work *w) {
    for (int j = 0; w->conv && j < w->n; j++) alloy_free(w->conv[j]);
    alloy_free(w->conv);
    alloy_free(w->out);
    memset(w, 0, sizeof *w);
}

/* Allocates the chunk buffers; w->bytes gets their total with the largest masks included. */
static alloy_status work_init(work *w, const plan *p) {
    memset(w, 0, sizeof *w);
    w->n = p->max_sources;
    w->conv = alloy_calloc((size_t)w->n, sizeof *w->conv);
    if (!w->conv) return ALLOY_STATUS_NOMEM;
    bool sparse = p->r->method == ALLOY_MERGE_METHOD_TIES || p->r->method == ALLOY_MERGE_METHOD_DARE_LINEAR ||
                  p->r->method == ALLOY_MERGE_METHOD_DARE_TIES;
    size_t max_masks = 0, chunk = MERGE_CHUNK * sizeof(float);
    bool ok = (w->out = alloy_malloc(chunk)) != NULL;
    w->bytes = chunk;
    for (int i = 0; i < p->n_out && ok; i++) {
        const out_tensor *o = &p->out[i];
        const plan_slice *sl = &p->slices[o->slice];
        size_t masked = 0;
        for (int j = 0; j < sl->n && ok; j++) {
            if (needs_buffer(o->in[j]) && !w->conv[j]) {
                ok = (w->conv[j] = alloy_malloc(chunk)) != NULL;
                w->bytes += chunk;
            }
            masked += sparse && j != sl->base && o->density[j] < 1.0;
        }
        size_t bytes = masked * ((o->numel + 63) / 64) * sizeof(uint64_t);
        if (bytes > max_masks) max_masks = bytes;
    }
    if (!ok) {
        work_release(w);
        return alloy_fail(ALLOY_STATUS_NOMEM, "merge: cannot allocate the working buffers");
    }
    w->bytes += max_masks;
    return ALLOY_STATUS_OK;
}

/* Copies input i, scaled unless scale is NAN, to the sink chunk by chunk. */
static alloy_status do_copy(sink *k, source_set *s, int i, double scale, size_t count) {
    alloy_status st = ALLOY_STATUS_OK;
    for (size_t lo = 0; lo < count && !st; lo += MERGE_CHUNK) {
        size_t len = chunk_len(lo, count);
        if ((st = view_chunk(s, i, lo, len))) break;
        const float *x = s->view[i];
        if (isnan(scale)) {
            st = sink_put(k, x, len);
        } else {
            float *out = sink_at(k, lo);
#pragma omp parallel for schedule(static)
            for (size_t e = 0; e < len; e++) out[e] = (float)(scale * x[e]);
            st = sink_put(k, out, len);
        }
        release_chunk(s, lo, len);
    }
    return st;
}

/* Merges one output tensor into the sink (the output file). */
static alloy_status merge_tensor(const plan *p, const out_tensor *o, work *w, sink *k) {
    const alloy_merge_recipe *r = p->r;
    const plan_slice *sl = &p->slices[o->slice];
    int n = sl->n, b = sl->base;
    size_t count = o->numel;
    source_set s;
    alloy_status st;
    if (r->method == ALLOY_MERGE_METHOD_SLERP) { // inputs in the order (base, other)
        const held_tensor *held[2] = {o->in[b], o->in[1 - b]};
        float *buf[2] = {w->conv[b], w->conv[1 - b]};
        if ((st = source_set_init(&s, 2, NULL, held, buf))) return st;
        st = do_slerp(k, &s, o->t, count);
        source_set_free(&s);
        return st;
    }
    if ((st = source_set_init(&s, n, NULL, o->in, w->conv))) return st;
    alloy_merge_delta_options opt = {.normalize = o->normalize, .rescale = o->rescale, .lambda = o->lambda};
    double wsum = 0.0;
    switch (r->method) {
    case ALLOY_MERGE_METHOD_LINEAR:
        for (int j = 0; j < n; j++) wsum += o->weight[j];
        st = do_linear(k, &s, o->weight, count, o->normalize ? wsum : 1.0);
        break;
    case ALLOY_MERGE_METHOD_PASSTHROUGH:
        st = do_copy(k, &s, 0, o->scale[0], count);
        break;
    default:
        if (n == 1) { // only the base: nothing to add
            st = do_copy(k, &s, b, NAN, count);
        } else if (r->method == ALLOY_MERGE_METHOD_TASK_ARITHMETIC || r->method == ALLOY_MERGE_METHOD_TIES) {
            bool ties = r->method == ALLOY_MERGE_METHOD_TIES;
            st = do_deltas(k, &s, b, o->weight, o->density, count, ties ? 1 : 0, ties, &opt, NULL);
        } else {
            // DARE: one generator per tensor, seeded from the recipe's seed and the tensor's name,
            // so a tensor's masks do not depend on the order or the number of the others
            uint64_t key = alloy_fnv64(ALLOY_FNV64_INIT, o->name, strlen(o->name));
            uint8_t seed[8];
            for (int i = 0; i < 8; i++) seed[i] = (uint8_t)(r->seed >> (8 * i));
            key = alloy_fnv64(key, seed, sizeof seed);
            alloy_rng rng;
            alloy_rng_seed(&rng, key);
            st = do_deltas(k, &s, b, o->weight, o->density, count, 2, r->method == ALLOY_MERGE_METHOD_DARE_TIES, &opt, &rng);
        }
    }
    source_set_free(&s);
    return st;
}

/* Streams every output tensor into dir/model.safetensors. */
static alloy_status write_weights(const plan *p, const char *dir, alloy_progress *progress, size_t *out_bytes,
                                  size_t *buffer_bytes) {
    work w;
    alloy_status s = work_init(&w, p);
    if (s) return s;
    *buffer_bytes = w.bytes;
    char *header = NULL, *path = alloy_path_join(dir, "model.safetensors");
    size_t len = 0, padded = 0;
    if (!path) s = ALLOY_STATUS_NOMEM;
    if (!s) s = header_text(p, &header, &len, &padded);
    alloy_atomic_file f;
    if (!s) s = alloy_atomic_open(&f, path);
    if (!s) {
        uint8_t lenbuf[8];
        for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        s = alloy_atomic_write(&f, lenbuf, 8);
        if (!s) s = alloy_atomic_write(&f, header, len);
        if (!s) s = alloy_atomic_write(&f, "        ", padded - len);
        size_t written = 8 + padded;
        double start = alloy_time_now();
        sink k = {.buf = w.out, .file = &f};
        for (int i = 0; i < p->n_out && !s; i++) {
            const out_tensor *o = &p->out[i];
            s = merge_tensor(p, o, &w, &k);
            if (s) alloy_error_prefix("%s: tensor \"%s\"", p->r->path, o->name);
            written += o->numel * sizeof(float);
            if (progress)
                alloy_progress_update(progress, "merge: %d/%d tensors, %.1f MB written, %.0fs", i + 1, p->n_out,
                                      (double)written / 1e6, alloy_time_now() - start);
        }
        if (!s) s = alloy_atomic_commit(&f);
        else alloy_atomic_abort(&f);
        *out_bytes = written;
    }
    cJSON_free(header);
    alloy_free(path);
    work_release(&w);
    return s;
}

/* Copies the chosen tokenizer.json beside the weights (atomically). */
static alloy_status copy_tokenizer(const merge_model *m, const char *dir) {
    if (!m->tokenizer_json) return ALLOY_STATUS_OK;
    char *text, *dst = alloy_path_join(dir, "tokenizer.json");
    size_t n;
    alloy_status s = dst ? alloy_file_read_all(m->tokenizer_json, &text, &n) : ALLOY_STATUS_NOMEM;
    if (!s) {
        s = alloy_write_file_atomic(dst, text, n);
        alloy_free(text);
    }
    alloy_free(dst);
    return s;
}

/* The peak resident set of this process so far (Linux reports ru_maxrss in KiB). */
static size_t peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
}

alloy_status alloy_merge_run(const alloy_merge_recipe *r, const char *out_dir, alloy_progress *progress,
                             alloy_merge_report *report) {
    double start = alloy_time_now();
    if (report) memset(report, 0, sizeof *report);
    plan p;
    alloy_status s = plan_build(&p, r);
    alloy_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!s) {
        cfg = p.models[p.config_from].config;
        cfg.n_layer = p.n_layer;
        if (p.tokenizer_from >= 0) memcpy(cfg.tokenizer, p.models[p.tokenizer_from].config.tokenizer, sizeof cfg.tokenizer);
        s = alloy_config_validate(&cfg, "the merged model");
    }
    if (!s && alloy_is_dir(out_dir)) { // writing into a folder being read would replace its files
        char *real = realpath(out_dir, NULL);
        for (int i = 0; real && i < p.n_models && !s; i++)
            if (!strcmp(real, p.models[i].path))
                s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the output folder is model \"%s\" of the recipe", out_dir,
                               p.models[i].label);
        free(real);
    }
    size_t out_bytes = 0, buffer_bytes = 0;
    if (!s) s = alloy_mkdir_p(out_dir);
    if (!s) s = write_weights(&p, out_dir, progress, &out_bytes, &buffer_bytes);
    if (!s) {
        char *cpath = alloy_path_join(out_dir, "config.json");
        s = cpath ? alloy_config_save(&cfg, cpath) : ALLOY_STATUS_NOMEM;
        alloy_free(cpath);
    }
    if (!s && p.tokenizer_from >= 0) s = copy_tokenizer(&p.models[p.tokenizer_from], out_dir);
    if (!s && report) {
        report->n_models = p.n_models;
        report->n_tensors = p.n_out;
        report->n_layer = p.n_layer;
        for (int i = 0; i < p.n_out; i++) report->n_params += p.out[i].numel;
        for (int i = 0; i < p.n_models; i++) report->input_bytes += p.models[i].bytes;
        report->output_bytes = out_bytes;
        report->buffer_bytes = buffer_bytes;
        report->peak_rss = peak_rss_bytes();
        report->seconds = alloy_time_now() - start;
        if (p.tokenizer_from >= 0 && p.models[p.tokenizer_from].tokenizer_json)
            snprintf(report->tokenizer_from, sizeof report->tokenizer_from, "%s", p.models[p.tokenizer_from].label);
    }
    if (progress && p.n_out) alloy_progress_done(progress);
    plan_free(&p);
    return s;
}
