/*
 * merge_methods.c — the merge methods, per tensor: linear, SLERP, the task-vector family (task
 * arithmetic, TIES, DARE) and a scaled copy (passthrough). Each reads its inputs a chunk of
 * MERGE_CHUNK entries at a time, from arrays in memory (the public alloy_merge_* functions) or
 * from mapped safetensors of any float dtype (the engine, merge.c), and hands each merged chunk to
 * a sink: the caller's array, or the output file. Methods that need the whole tensor first
 * (SLERP's norms, TIES's top-k) make extra passes over the chunks instead of holding it.
 */
#include "merge_internal.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

alloy_status merge_sources_init(source_set *s, int n, const float *const *arrays, const held_tensor *const *held,
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

void merge_sources_free(source_set *s) { alloy_free(s->mem); }

static float *sink_at(const sink *k, size_t lo) { return k->whole ? k->whole + lo : k->buf; }

/* Hands over the len merged entries at data (the engine appends them to the file). */
static alloy_status sink_put(sink *k, const float *data, size_t len) {
    return k->whole ? ALLOY_STATUS_OK : alloy_safetensors_writer_append(k->file, data, len * sizeof(float));
}

/* Entries of the chunk that starts at lo. */
static size_t chunk_len(size_t lo, size_t count) { return count - lo < MERGE_CHUNK ? count - lo : MERGE_CHUNK; }

/* out = Σ wᵢ·xᵢ / div over all inputs. */
alloy_status merge_do_linear(sink *k, source_set *s, const double *w, size_t count, double div) {
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
    alloy_status st = merge_sources_init(&s, n, in, NULL, NULL);
    sink k = {.whole = out};
    if (!st) st = merge_do_linear(&k, &s, w, count, normalize ? sum : 1.0);
    merge_sources_free(&s);
    return st;
}

/* SLERP of inputs 0 (t = 0) and 1 (t = 1): their norms and dot product over every chunk, then the
 * interpolation chunk by chunk. */
alloy_status merge_do_slerp(sink *k, source_set *s, double t, size_t count) {
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
    merge_do_slerp(&k, &s, t, count);
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
alloy_status merge_do_deltas(sink *k, source_set *s, int b, const double *w, const double *d, size_t count,
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
    alloy_status st = arrays && wd ? merge_sources_init(&s, n + 1, arrays, NULL, NULL) : ALLOY_STATUS_NOMEM;
    if (!st) {
        for (int i = 0; i < n; i++) {
            arrays[i] = in[i];
            wd[i] = w[i];
            wd[n + 1 + i] = densities ? densities[i] : 1.0;
        }
        arrays[n] = base;
        wd[n] = wd[2 * n + 1] = 1.0;
        sink k = {.whole = out};
        st = merge_do_deltas(&k, &s, n, wd, wd + n + 1, count, sparsify, elect, opt, rng);
    }
    merge_sources_free(&s);
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

/* Copies input i, scaled unless scale is NAN, to the sink chunk by chunk. */
alloy_status merge_do_copy(sink *k, source_set *s, int i, double scale, size_t count) {
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
