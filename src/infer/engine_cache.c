/*
 * engine_cache.c — the inference engine's KV cache and attention: RoPE on the rows' q and k
 * heads, each row's k and v written into its sequence's cache at its position, and attention —
 * fresh sequences through the training kernel attention_forward, the other rows (decode steps,
 * continued prefills) over the cache directly. The cache's layout is in internal.h.
 */
#include "internal.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Runs of at least this many rows of a fresh sequence take attention_forward. */
#define FRESH_MIN_ROWS 2

/* Rotates the q and k heads of row r by its position (rotate-half, as rope_forward). */
void engine_rope_row(const alloy_engine *e, int r) {
    int half = e->hd / 2, hd = e->hd, heads = e->H + e->KV;
    const float *c = e->rope_cos + (size_t)e->row_pos[r] * half, *s = e->rope_sin + (size_t)e->row_pos[r] * half;
    float *row = e->qkv + (size_t)r * e->QKV;
    for (int h = 0; h < heads; h++) {
        float *x = row + (size_t)h * hd;
        for (int j = 0; j < half; j++) {
            float x1 = x[j], x2 = x[j + half];
            x[j] = x1 * c[j] - x2 * s[j];
            x[j + half] = x2 * c[j] + x1 * s[j];
        }
    }
}

/* Rotates the q and k heads of each row by its position. */
void engine_rope_rows(const alloy_engine *e, int R) {
    int hd = e->hd, heads = e->H + e->KV;
    engine_use_threads(e, 6.0 * R * heads * hd);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) engine_rope_row(e, r);
}

/* Copies each row's k and v heads into its sequence's cache at its position (k transposed). */
void engine_store_kv(const alloy_engine *e, int l, int R) {
    size_t ctx = (size_t)e->opts.max_ctx;
    for (int r = 0; r < R; r++) {
        const float *row = e->qkv + (size_t)r * e->QKV;
        int pos = e->row_pos[r];
        for (int h = 0; h < e->KV; h++) {
            size_t off = engine_cache_offset(e, l, e->row_seq[r], h);
            const float *k = row + (size_t)(e->H + h) * e->hd;
            for (int j = 0; j < e->hd; j++) e->kc[off + (size_t)j * ctx + (size_t)pos] = k[j];
            memcpy(e->vc + off + (size_t)pos * e->hd, row + (size_t)(e->H + e->KV + h) * e->hd,
                   sizeof(float) * (size_t)e->hd);
        }
    }
}

/* out (hd) = softmax(q·K·scale)·V over the n cached positions of one head: Kt (hd, ctx) the keys
 * transposed (the scores are then a vector loop over positions), Vc (ctx, hd); sc (n) scratch. */
void engine_attend_one(float *restrict out, const float *restrict q, const float *restrict Kt, const float *restrict Vc,
                       int n, int hd, size_t ctx, float scale, float *restrict sc) {
    for (int t = 0; t < n; t++) sc[t] = 0.0f;
    for (int j = 0; j < hd; j++) {
        const float *k = Kt + (size_t)j * ctx;
        float qj = q[j] * scale;
#pragma omp simd
        for (int t = 0; t < n; t++) sc[t] += qj * k[t];
    }
    float mx = -INFINITY;
    for (int t = 0; t < n; t++) mx = sc[t] > mx ? sc[t] : mx;
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
        float p = expf(sc[t] - mx);
        sc[t] = p;
        sum += p;
    }
    for (int j = 0; j < hd; j++) out[j] = 0.0f;
    for (int t = 0; t < n; t++) {
        const float *v = Vc + (size_t)t * hd;
        float p = sc[t];
#pragma omp simd
        for (int j = 0; j < hd; j++) out[j] += p * v[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < hd; j++) out[j] *= inv;
}

/* att (R, H·hd) for layer l: fresh sequences through attention_forward, the other rows over
 * the cache (which holds every row's k and v by now). */
void engine_attention(alloy_engine *e, int l, int n_segs) {
    int H = e->H, hd = e->hd, group = e->H / e->KV;
    float scale = 1.0f / sqrtf((float)hd);
    double work = 0.0;
    int n_cached = 0; // rows that attend to the cache, listed in crow
    for (int i = 0; i < n_segs; i++) {
        const segment *sg = &e->segs[i];
        if (sg->pos0 == 0 && sg->n >= FRESH_MIN_ROWS) {
            engine_use_threads(e, 2.0 * H * (double)sg->n * sg->n * hd);
            attention_forward(e->att + (size_t)sg->row0 * H * hd, e->lse, e->qkv + (size_t)sg->row0 * e->QKV, 1,
                              sg->n, H, e->KV, hd);
        } else {
            for (int k = 0; k < sg->n; k++) e->crow[n_cached++] = sg->row0 + k;
            work += 4.0 * H * hd * ((double)sg->n * sg->pos0 + 0.5 * (double)sg->n * (sg->n + 1));
        }
    }
    if (n_cached == 0) return;
    int nt = engine_threads_for(e, work);
    int64_t pairs = (int64_t)n_cached * H;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt)
    for (int64_t i = 0; i < pairs; i++) {
        int r = e->crow[i / H], h = (int)(i % H);
#ifdef _OPENMP
        float *sc = e->scores + (size_t)omp_get_thread_num() * e->opts.max_ctx;
#else
        float *sc = e->scores;
#endif
        size_t off = engine_cache_offset(e, l, e->row_seq[r], h / group);
        engine_attend_one(e->att + (size_t)r * H * hd + (size_t)h * hd, e->qkv + (size_t)r * e->QKV + (size_t)h * hd,
                   e->kc + off, e->vc + off, e->row_pos[r] + 1, hd, (size_t)e->opts.max_ctx, scale, sc);
    }
}
