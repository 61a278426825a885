/*
 * matvec.c — the fp32 matrix-vector product of decoding: out (OC) = beta·out + x (IC) · W + bias,
 * for one token. It is bound by memory, so each thread streams one contiguous range of W from
 * DRAM in address order:
 *
 * - W (IC, OC), as GPT-2 stores it: thread t takes rows [i0, i1) of W and sums x[i]·W[i, :] into
 *   its own partial of OC floats, eight rows at a time, prefetching the same columns of the next
 *   eight rows into L2; the partials are then added in thread order. (OpenBLAS's sgemv splits
 *   such a product by columns, so each thread reads pieces of every row, which streams less
 *   well on two threads.)
 * - W (OC, IC): thread t takes rows [o0, o1) of W, one after another, each a dot product with
 *   x: a single sequential stream, which the hardware prefetchers follow best left alone.
 *
 * Measured on 2 cores of a Zen 4 whose read bandwidth moved between 34 and 65 GB/s (other
 * tenants), each against a plain 2-thread read either side, over GPT-2's 48 layer matrices:
 * (IC, OC) with eight rows and prefetcht1 streams at 95% of the read at 34 GB/s and 83% at
 * 60 GB/s, where four rows (this file's first version, prefetcht0) gave 52–64% at 60 GB/s,
 * eight rows without prefetching 69% and one row at a time 50% (the partial's loads and stores);
 * prefetcht0 fills L1's few miss buffers with lines needed hundreds of cycles later. (OC, IC)
 * one row at a time without prefetching streams at 99% and 92%, where eight rows side by side
 * with prefetcht1 gave 76% at 60 GB/s.
 *
 * The order of the sums depends on the thread count only, not on timing.
 */
#include "alloy/kernels.h"

#include "simd.h"

#include <omp.h>

#define G 8 /* rows per group */

/* Rows [lo, hi) of n split into nt contiguous ranges, of whole groups where possible. */
static void split_rows(int n, int nt, int t, int *lo, int *hi) {
    int groups = (n + G - 1) / G;
    int g0 = (int)((int64_t)groups * t / nt), g1 = (int)((int64_t)groups * (t + 1) / nt);
    *lo = G * g0 < n ? G * g0 : n;
    *hi = G * g1 < n ? G * g1 : n;
}

/* Into L2 (prefetcht1): the line at p, needed a group of rows from now. */
static inline void prefetch_l2(const float *p) { __builtin_prefetch(p, 0, 2); }

/* part (OC) = Σ_{i in [i0, i1)} x[i]·W[i, :] for W (IC, OC) row-major. */
static void rows_axpy(float *restrict part, const float *restrict x, const float *restrict W, int i0, int i1,
                      int OC) {
    const int vec = OC & ~15;
    for (int o = 0; o < OC; o++) part[o] = 0.0f;
    int i = i0;
    for (; i + G <= i1; i += G) {
        const float *w = W + (size_t)i * OC;
        v16f xs[G];
        for (int k = 0; k < G; k++) xs[k] = v16_set1(x[i + k]);
        const size_t ahead = (size_t)G * OC; // the same columns of the next group
        for (int o = 0; o < vec; o += 16) {
            for (int k = 0; k < G; k++) prefetch_l2(w + (size_t)k * OC + ahead + (size_t)o);
            v16f p = v16_load(part + o);
            for (int k = 0; k < G; k++) p += xs[k] * v16_load(w + (size_t)k * OC + (size_t)o);
            v16_store(part + o, p);
        }
        for (int o = vec; o < OC; o++) {
            float p = part[o];
            for (int k = 0; k < G; k++) p += x[i + k] * w[(size_t)k * OC + (size_t)o];
            part[o] = p;
        }
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

/* out[o] = W[o, :]·x for o in [o0, o1), W (OC, IC) row-major: one row after another, so that
 * the thread's reads are one sequential stream that the hardware prefetchers follow alone. */
static void rows_dot(float *restrict out, const float *restrict x, const float *restrict W, int o0, int o1, int IC) {
    const int vec = IC & ~15;
    for (int o = o0; o < o1; o++) {
        const float *w0 = W + (size_t)o * IC;
        v16f a0 = {0};
        for (int c = 0; c < vec; c += 16) a0 += v16_load(w0 + c) * v16_load(x + c);
        float s0 = hsum16(a0);
        for (int c = vec; c < IC; c++) s0 += w0[c] * x[c];
        out[o] = s0;
    }
}

void matvec_forward_team(float *out, const float *x, const float *weight, const float *bias, int IC, int OC,
                         alloy_weight_layout layout, float beta, float *scratch) {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    if (layout == ALLOY_WEIGHT_OUT_IN) {
        int o0, o1;
        split_rows(OC, nt, t, &o0, &o1);
        rows_dot(scratch, x, weight, o0, o1, IC);
        for (int o = o0; o < o1; o++)
            out[o] = (beta != 0.0f ? beta * out[o] : 0.0f) + scratch[o] + (bias ? bias[o] : 0.0f);
#pragma omp barrier
        return;
    }
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
#pragma omp barrier
}

void matvec_prefetch_team(const float *weight, int IC, int OC, alloy_weight_layout layout, size_t bytes) {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int r0, r1, n = layout == ALLOY_WEIGHT_OUT_IN ? OC : IC, len = layout == ALLOY_WEIGHT_OUT_IN ? IC : OC;
    split_rows(n, nt, t, &r0, &r1);
    if (r0 >= r1) return;
    const char *p = (const char *)(weight + (size_t)r0 * (size_t)len);
    size_t have = (size_t)(r1 - r0) * (size_t)len * sizeof(float);
    if (layout == ALLOY_WEIGHT_OUT_IN) { // read in address order: the first bytes
        for (size_t off = 0; off < bytes && off < have; off += 64) prefetch_l2((const float *)(p + off));
        return;
    }
    // the first group's rows are read side by side: the start of each, bytes in all
    int rows = r1 - r0 < G ? r1 - r0 : G;
    size_t per_row = bytes / (size_t)rows, row_bytes = (size_t)len * sizeof(float);
    if (per_row > row_bytes) per_row = row_bytes;
    for (int k = 0; k < rows; k++)
        for (size_t off = 0; off < per_row && (size_t)k * row_bytes + off < have; off += 64)
            prefetch_l2((const float *)(p + (size_t)k * row_bytes + off));
}

void matvec_forward(float *out, const float *x, const float *weight, const float *bias, int IC, int OC,
                    alloy_weight_layout layout, float beta, float *scratch) {
#pragma omp parallel
    matvec_forward_team(out, x, weight, bias, IC, OC, layout, beta, scratch);
}
