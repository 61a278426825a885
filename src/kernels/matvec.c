/*
 * matvec.c — the fp32 matrix-vector product of decoding: out (OC) = beta·out + x (IC) · W + bias,
 * for one token. It is bound by memory, so each thread streams one contiguous range of W from
 * DRAM, in address order, prefetching the next four rows as it reads four:
 *
 * - W (IC, OC), as GPT-2 stores it: thread t takes rows [i0, i1) of W and sums x[i]·W[i, :] into
 *   its own partial of OC floats, four rows at a time; the partials are then added in thread
 *   order. (OpenBLAS's sgemv splits such a product by columns, so each thread reads pieces of
 *   every row, which streams less well on two threads.)
 * - W (OC, IC): thread t takes rows [o0, o1) of W, four at a time, each a dot product with x.
 *
 * The order of the sums depends on the thread count only, not on timing.
 */
#include "alloy/kernels.h"

#include "simd.h"

#include <omp.h>

/* Rows [lo, hi) of n split into nt contiguous ranges, of whole groups of four where possible. */
static void split_rows(int n, int nt, int t, int *lo, int *hi) {
    int groups = (n + 3) / 4;
    int g0 = (int)((int64_t)groups * t / nt), g1 = (int)((int64_t)groups * (t + 1) / nt);
    *lo = 4 * g0 < n ? 4 * g0 : n;
    *hi = 4 * g1 < n ? 4 * g1 : n;
}

/* Prefetches the four lines at offset off (floats) of four rows. */
static inline void prefetch4(const float *w0, const float *w1, const float *w2, const float *w3, size_t off) {
    __builtin_prefetch(w0 + off);
    __builtin_prefetch(w1 + off);
    __builtin_prefetch(w2 + off);
    __builtin_prefetch(w3 + off);
}

/* part (OC) = Σ_{i in [i0, i1)} x[i]·W[i, :] for W (IC, OC) row-major. */
static void rows_axpy(float *restrict part, const float *restrict x, const float *restrict W, int i0, int i1,
                      int OC) {
    const int vec = OC & ~15;
    for (int o = 0; o < OC; o++) part[o] = 0.0f;
    int i = i0;
    for (; i + 4 <= i1; i += 4) {
        const float *w0 = W + (size_t)i * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
        const v16f x0 = v16_set1(x[i]), x1 = v16_set1(x[i + 1]), x2 = v16_set1(x[i + 2]), x3 = v16_set1(x[i + 3]);
        const size_t ahead = (size_t)4 * OC; // the same columns of the next four rows
        for (int o = 0; o < vec; o += 16) {
            prefetch4(w0, w1, w2, w3, ahead + (size_t)o);
            v16f p = v16_load(part + o);
            p += x0 * v16_load(w0 + o);
            p += x1 * v16_load(w1 + o);
            p += x2 * v16_load(w2 + o);
            p += x3 * v16_load(w3 + o);
            v16_store(part + o, p);
        }
        for (int o = vec; o < OC; o++) part[o] += x[i] * w0[o] + x[i + 1] * w1[o] + x[i + 2] * w2[o] + x[i + 3] * w3[o];
    }
    for (; i < i1; i++) {
        const float *w0 = W + (size_t)i * OC;
        const v16f x0 = v16_set1(x[i]);
        for (int o = 0; o < vec; o += 16) v16_store(part + o, v16_load(part + o) + x0 * v16_load(w0 + o));
        for (int o = vec; o < OC; o++) part[o] += x[i] * w0[o];
    }
}

/* The sum of the 16 lanes by a fixed tree. */
static inline float hsum16(v16f v) {
    float a[16];
    v16_store(a, v);
    for (int k = 8; k >= 1; k /= 2)
        for (int j = 0; j < k; j++) a[j] += a[j + k];
    return a[0];
}

/* out[o] = W[o, :]·x for o in [o0, o1), W (OC, IC) row-major. */
static void rows_dot(float *restrict out, const float *restrict x, const float *restrict W, int o0, int o1, int IC) {
    const int vec = IC & ~15;
    int o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = W + (size_t)o * IC, *w1 = w0 + IC, *w2 = w1 + IC, *w3 = w2 + IC;
        v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const size_t ahead = (size_t)4 * IC; // the same columns of the next four rows
        for (int c = 0; c < vec; c += 16) {
            prefetch4(w0, w1, w2, w3, ahead + (size_t)c);
            const v16f xv = v16_load(x + c);
            a0 += v16_load(w0 + c) * xv;
            a1 += v16_load(w1 + c) * xv;
            a2 += v16_load(w2 + c) * xv;
            a3 += v16_load(w3 + c) * xv;
        }
        float s0 = hsum16(a0), s1 = hsum16(a1), s2 = hsum16(a2), s3 = hsum16(a3);
        for (int c = vec; c < IC; c++) {
            s0 += w0[c] * x[c];
            s1 += w1[c] * x[c];
            s2 += w2[c] * x[c];
            s3 += w3[c] * x[c];
        }
        out[o] = s0;
        out[o + 1] = s1;
        out[o + 2] = s2;
        out[o + 3] = s3;
    }
    for (; o < o1; o++) {
        const float *w0 = W + (size_t)o * IC;
        v16f a0 = {0};
        for (int c = 0; c < vec; c += 16) a0 += v16_load(w0 + c) * v16_load(x + c);
        float s0 = hsum16(a0);
        for (int c = vec; c < IC; c++) s0 += w0[c] * x[c];
        out[o] = s0;
    }
}

void matvec_forward(float *out, const float *x, const float *weight, const float *bias, int IC, int OC,
                    alloy_weight_layout layout, float beta, float *scratch) {
    if (layout == ALLOY_WEIGHT_OUT_IN) {
#pragma omp parallel
        {
            int o0, o1;
            split_rows(OC, omp_get_num_threads(), omp_get_thread_num(), &o0, &o1);
            rows_dot(scratch, x, weight, o0, o1, IC);
            for (int o = o0; o < o1; o++)
                out[o] = (beta != 0.0f ? beta * out[o] : 0.0f) + scratch[o] + (bias ? bias[o] : 0.0f);
        }
        return;
    }
#pragma omp parallel
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int i0, i1;
        split_rows(IC, nt, t, &i0, &i1);
        rows_axpy(scratch + (size_t)t * OC, x, weight, i0, i1, OC);
#pragma omp barrier
        int o0 = (int)((int64_t)OC * t / nt), o1 = (int)((int64_t)OC * (t + 1) / nt);
        for (int o = o0; o < o1; o++) {
            float s = scratch[o];
            for (int u = 1; u < nt; u++) s += scratch[(size_t)u * OC + o];
            out[o] = (beta != 0.0f ? beta * out[o] : 0.0f) + s + (bias ? bias[o] : 0.0f);
        }
    }
}
