/*
 * test_quant.c — the quantised formats and products of alloy/quant.h.
 *
 *   - the format table, names, row sizes (0 for a row that is not whole blocks);
 *   - fp16: all 65536 halves to fp32 and back, every rounding tie between adjacent halves (to
 *     even), overflow, underflow, and (where the CPU has F16C) random floats against vcvtps2ph;
 *   - round trips with their error bounds, per element: Q8_0 |x - y| <= d/2 + 127·|d - d16|,
 *     Q4_0 <= |d|/2 + 8·|d - d16| (|d| where the top level clamps), Q4_K <= d·sc/2 inside the
 *     sub-block's range (plus the distance to it outside), F16 <= 2^-11·|x|, all plus fp32
 *     slack; and the RMSE order F16 < Q8_0 < Q4_K < Q4_0 on Gaussian data;
 *   - edge cases: all-zero and -0 blocks, one huge value, negative maximum, ties of the largest
 *     magnitude, NaN / inf (the block is poisoned: it dequantises to NaN, its neighbours are
 *     untouched), scales beyond fp16 (saturate), scales below 2^-128;
 *   - byte-exactness against tests/reference/quant_ref.py (numpy, PYTHON of harness.h), written
 *     from the format description: its Q8_0 / Q4_0 / F16 quantisers must give our bytes, its
 *     dequantisers our floats bit for bit, on our blocks and on random GGML-like blocks;
 *   - products against a double reference from the dequantised W and the 8-bit x that the
 *     kernels use (quantised here by the documented rule), tolerance (chain + 8 + chunks)·2^-23
 *     · Σ|w|·|x| where chain is the longest fp32 accumulation chain of the contract; every
 *     column tail (one block, partial lane groups, partial chunks), n = 1..17 and 40 tokens
 *     (tiles of 8/4/2/1, blocks of 32); each matmul row equals the matvec bitwise; the AVX-512
 *     kernels equal the scalar ones bitwise; 1 and 2 threads agree bitwise; unaligned weights.
 */
#include "alloy/base.h"
#include "alloy/quant.h"
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__F16C__)
#include <immintrin.h>
#endif

/* ---- test memory, released after every case ---- */

enum { TMEM_MAX = 4096 };
static void *tmem_ptrs[TMEM_MAX];
static int tmem_count;

static void *tmem(size_t bytes) {
    if (tmem_count == TMEM_MAX) {
        fprintf(stderr, "test_quant: too many allocations in one case\n");
        exit(2);
    }
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) {
        perror("calloc");
        exit(2);
    }
    tmem_ptrs[tmem_count++] = p;
    return p;
}

static void tmem_release(void) {
    for (int i = 0; i < tmem_count; i++) free(tmem_ptrs[i]);
    tmem_count = 0;
}

#define CASE(fn)                                                                                     \
    do {                                                                                             \
        RUN(fn);                                                                                     \
        tmem_release();                                                                              \
    } while (0)

static alloy_rng rng;

static const alloy_qtype ALL[] = {ALLOY_QTYPE_F32, ALLOY_QTYPE_F16, ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0,
                                  ALLOY_QTYPE_Q4_K};
#define NTYPES 5

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Bitwise equal, NaNs of any payload counting as equal. */
static bool same(float a, float b) { return (isnan(a) && isnan(b)) || fbits(a) == fbits(b); }

/* The first index where a and b differ (same()), or -1. */
static long first_diff(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!same(a[i], b[i])) return (long)i;
    return -1;
}

static float *gauss(size_t n, double std) {
    float *x = tmem(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * alloy_rng_normal(&rng));
    return x;
}

/* A half's value computed here in double (independent of the library). */
static double half_value(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* Q4_K's sc and m of sub-block s, read here from the packed bytes (GGML's get_scale_min_k4). */
static void q4k_sm(const uint8_t *q, int s, int *sc, int *m) {
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (q[s + 4] & 15) | ((q[s - 4] >> 6) << 4);
        *m = (q[s + 4] >> 4) | ((q[s] >> 6) << 4);
    }
}

static uint8_t *quantized(alloy_qtype t, const float *X, int rows, int cols) {
    size_t rb = alloy_quant_row_bytes(t, cols);
    uint8_t *W = tmem((size_t)rows * rb);
    size_t got = alloy_quantize(t, W, X, rows, cols);
    if (got != (size_t)rows * rb) fprintf(stderr, "  alloy_quantize wrote %zu bytes\n", got);
    return W;
}

static float *dequantized(alloy_qtype t, const uint8_t *W, size_t nelem) {
    float *y = tmem(nelem * sizeof(float));
    alloy_dequantize_row(t, y, W, (int64_t)nelem);
    return y;
}

/* A random half of magnitude in [lo, hi), random sign if signed_. */
static uint16_t random_half(double lo, double hi, bool signed_) {
    double v = lo * pow(hi / lo, alloy_rng_uniform(&rng));
    if (signed_ && alloy_rng_below(&rng, 2)) v = -v;
    return alloy_f32_to_f16((float)v);
}

/* rows · row_bytes of random GGML-like blocks: random quant bytes (every bit pattern of the
 * scales and nibbles), scales moderate halves. */
static uint8_t *random_blocks(alloy_qtype t, int rows, int cols) {
    size_t rb = alloy_quant_row_bytes(t, cols), nb = (size_t)rows * cols / alloy_qtype_block_elems(t);
    uint8_t *W = tmem((size_t)rows * rb);
    for (size_t i = 0; i < (size_t)rows * rb; i++) W[i] = (uint8_t)alloy_rng_u64(&rng);
    size_t bb = alloy_qtype_block_bytes(t);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = W + b * bb;
        uint16_t h;
        switch (t) {
        case ALLOY_QTYPE_F16: h = random_half(1e-3, 1.0, true); break;
        case ALLOY_QTYPE_F32: {
            float f = (float)alloy_rng_normal(&rng);
            memcpy(p, &f, 4);
            continue;
        }
        case ALLOY_QTYPE_Q4_K:
            h = random_half(1e-4, 1e-2, false);
            p[2] = (uint8_t)h, p[3] = (uint8_t)(h >> 8);
            h = random_half(1e-4, 1e-2, false);
            break;
        default: h = random_half(1e-3, 1e-1, true); break;
        }
        p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
    }
    return W;
}

/* ---- the format table ---- */

static void test_formats(void) {
    static const char *names[] = {"f32", "f16", "q8_0", "q4_0", "q4_k"};
    static const int elems[] = {1, 1, 32, 32, 256};
    static const size_t bytes[] = {4, 2, 34, 18, 144};
    for (int i = 0; i < NTYPES; i++) {
        alloy_qtype t = ALL[i], back = ALLOY_QTYPE_COUNT;
        EXPECT(strcmp(alloy_qtype_name(t), names[i]) == 0, "name of %d: %s", i, alloy_qtype_name(t));
        EXPECT(!alloy_qtype_parse(names[i], &back) && back == t, "parse %s", names[i]);
        EXPECT(alloy_qtype_block_elems(t) == elems[i], "block elems of %s", names[i]);
        EXPECT(alloy_qtype_block_bytes(t) == bytes[i], "block bytes of %s", names[i]);
        EXPECT(alloy_quant_row_bytes(t, 4096) == 4096 / elems[i] * bytes[i], "row bytes of %s", names[i]);
        EXPECT(alloy_quant_row_bytes(t, 0) == 0, "empty row of %s", names[i]);
        EXPECT(alloy_quant_row_bytes(t, -elems[i]) == 0, "negative row of %s", names[i]);
        if (elems[i] > 1) {
            EXPECT(alloy_quant_row_bytes(t, elems[i] + 1) == 0, "%s: n not whole blocks", names[i]);
            EXPECT(alloy_quant_row_bytes(t, elems[i] / 2) == 0, "%s: half a block", names[i]);
        }
    }
    alloy_qtype q = ALLOY_QTYPE_F32;
    EXPECT(!alloy_qtype_parse("Q4_K", &q) && q == ALLOY_QTYPE_Q4_K, "parse is case-insensitive");
    q = ALLOY_QTYPE_F16;
    EXPECT(alloy_qtype_parse("q4_1", &q) && q == ALLOY_QTYPE_F16, "an unknown name is refused, out untouched");
    EXPECT(alloy_qtype_parse("", &q) && alloy_qtype_parse(NULL, &q), "empty / NULL names");
    EXPECT(strcmp(alloy_qtype_name(ALLOY_QTYPE_COUNT), "?") == 0, "out of range name");
    EXPECT(alloy_qtype_block_elems(ALLOY_QTYPE_COUNT) == 0 && alloy_qtype_block_bytes(ALLOY_QTYPE_COUNT) == 0 &&
               alloy_quant_row_bytes(ALLOY_QTYPE_COUNT, 32) == 0,
           "out of range sizes");
    // a matrix that is not whole blocks: nothing written, 0 returned
    float X[2 * 40] = {0};
    uint8_t out[256];
    memset(out, 0xAB, sizeof out);
    EXPECT(alloy_quantize(ALLOY_QTYPE_Q8_0, out, X, 2, 40) == 0 && out[0] == 0xAB, "40 columns of q8_0");
    EXPECT(alloy_quantize(ALLOY_QTYPE_Q4_0, out, X, 2, 32) == 36, "2 rows of one q4_0 block");
}

/* ---- fp16 ---- */

static void test_f16_exhaustive(void) {
    int bad = 0;
#if defined(__F16C__)
    const bool hw = __builtin_cpu_supports("f16c");
#endif
    for (uint32_t h = 0; h < 65536; h++) {
        float f = alloy_f16_to_f32((uint16_t)h);
        double want = half_value((uint16_t)h);
        bool nan = ((h >> 10) & 31) == 31 && (h & 1023);
        bool ok;
        if (nan) {
            uint32_t b = fbits(f);
            ok = isnan(f) && (b >> 31) == (h >> 15) && (b & 0x400000u) && ((b >> 13) & 0x3FF) == ((h & 1023) | 0x200) &&
                 (b & 0x1FFF) == 0 && alloy_f32_to_f16(f) == (h | 0x200);
        } else {
            ok = (double)f == want && (signbit(f) != 0) == (h >> 15 != 0) && alloy_f32_to_f16(f) == h;
        }
#if defined(__F16C__)
        if (hw) ok = ok && fbits(_cvtsh_ss((unsigned short)h)) == fbits(f);
#endif
        if (!ok && bad++ < 5) fprintf(stderr, "  half 0x%04x -> %a -> 0x%04x\n", h, f, alloy_f32_to_f16(f));
    }
    EXPECT(bad == 0, "%d halves do not round-trip", bad);
    // the row conversions (F16C / AVX-512 where present) agree on all halves
    uint16_t *all = tmem(65536 * 2);
    for (uint32_t h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    float *row = dequantized(ALLOY_QTYPE_F16, (const uint8_t *)all, 65536);
    int bad_row = 0;
    for (uint32_t h = 0; h < 65536; h++) bad_row += fbits(row[h]) != fbits(alloy_f16_to_f32((uint16_t)h));
    EXPECT(bad_row == 0, "%d halves differ in alloy_dequantize_row", bad_row);
}

static void test_f16_rounding(void) {
    int bad = 0;
    // every pair of adjacent finite halves: the midpoint is a tie (to the even one), one float
    // either side of it goes to the nearer one; both signs
    for (uint32_t h = 0; h < 0x7C00; h++) {
        double lo = half_value((uint16_t)h), hi = h < 0x7BFF ? half_value((uint16_t)(h + 1)) : 65536.0;
        float mid = (float)((lo + hi) / 2);
        if ((double)mid != (lo + hi) / 2) {
            bad++;
            continue;
        }
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h; // 0x7BFF + 1 = 0x7C00: inf
        for (int s = 0; s < 2; s++) {
            float sg = s ? -1.0f : 1.0f;
            uint16_t sb = s ? 0x8000 : 0;
            bool ok = alloy_f32_to_f16(sg * mid) == (sb | even) &&
                      alloy_f32_to_f16(sg * nextafterf(mid, 0.0f)) == (sb | h) &&
                      alloy_f32_to_f16(sg * nextafterf(mid, INFINITY)) == (sb | (h + 1)) &&
                      alloy_f32_to_f16(sg * (float)lo) == (sb | h);
            if (!ok && bad++ < 5)
                fprintf(stderr, "  tie between 0x%04x and the next: %a -> 0x%04x\n", h, mid, alloy_f32_to_f16(mid));
        }
    }
    EXPECT(bad == 0, "%d rounding cases wrong", bad);
    EXPECT(alloy_f32_to_f16(65504.0f) == 0x7BFF && alloy_f32_to_f16(65519.996f) == 0x7BFF, "largest half");
    EXPECT(alloy_f32_to_f16(65520.0f) == 0x7C00 && alloy_f32_to_f16(1e10f) == 0x7C00 &&
               alloy_f32_to_f16(FLT_MAX) == 0x7C00 && alloy_f32_to_f16(-INFINITY) == 0xFC00,
           "overflow to inf");
    EXPECT(alloy_f32_to_f16(0x1p-25f) == 0 && alloy_f32_to_f16(nextafterf(0x1p-25f, 1.0f)) == 1 &&
               alloy_f32_to_f16(0x1p-26f) == 0 && alloy_f32_to_f16(-0x1p-30f) == 0x8000 &&
               alloy_f32_to_f16(FLT_TRUE_MIN) == 0 && alloy_f32_to_f16(-0.0f) == 0x8000,
           "underflow");
    EXPECT(alloy_f32_to_f16(3.0f * 0x1p-25f) == 2, "a subnormal tie goes to even");
    uint16_t n = alloy_f32_to_f16(NAN);
    EXPECT((n & 0x7C00) == 0x7C00 && (n & 0x3FF) && (n & 0x200), "NaN stays a quiet NaN: 0x%04x", n);
    EXPECT(alloy_f32_to_f16(bitsf(0x7F800001u)) == 0x7E00, "a signalling NaN comes back quiet");
    // random bit patterns: the scalar conversion against the row conversion, and F16C
    enum { N = 1 << 20 };
    float *x = tmem(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = bitsf((uint32_t)alloy_rng_u64(&rng));
    for (int i = 0; i < 4096; i++) x[i] = (float)alloy_rng_normal(&rng) * 1e-5f; // the subnormal range
    uint16_t *h = tmem(N * 2);
    alloy_quantize_row(ALLOY_QTYPE_F16, h, x, N);
    int bad_row = 0, bad_hw = 0;
#if defined(__F16C__)
    const bool hw = __builtin_cpu_supports("f16c");
#endif
    for (int i = 0; i < N; i++) {
        uint16_t mine = alloy_f32_to_f16(x[i]);
        bad_row += h[i] != mine;
#if defined(__F16C__)
        if (hw) bad_hw += _cvtss_sh(x[i], 0) != mine;
#endif
    }
    EXPECT(bad_row == 0, "%d of %d random floats differ in alloy_quantize_row(F16)", bad_row, N);
    EXPECT(bad_hw == 0, "%d of %d random floats differ from vcvtps2ph", bad_hw, N);
}

/* ---- round trips and their bounds ---- */

/* Checks the per-element bound of format t on the row x (n) and returns the RMSE. */
static double check_bounds(alloy_qtype t, const float *x, int n, int *violations) {
    size_t rb = alloy_quant_row_bytes(t, n);
    uint8_t *q = tmem(rb);
    alloy_quantize_row(t, q, x, n);
    float *y = dequantized(t, q, (size_t)n);
    double se = 0.0;
    for (int i = 0; i < n; i++) {
        double err = fabs((double)x[i] - (double)y[i]), bound = 0.0;
        se += err * err;
        if (t == ALLOY_QTYPE_F32) {
            bound = 0.0;
        } else if (t == ALLOY_QTYPE_F16) {
            bound = ldexp(fabs(x[i]), -11) + 0x1p-25;
        } else if (t == ALLOY_QTYPE_Q8_0 || t == ALLOY_QTYPE_Q4_0) {
            const float *xb = x + i / 32 * 32;
            const uint8_t *blk = q + (size_t)(i / 32) * (t == ALLOY_QTYPE_Q8_0 ? 34 : 18);
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < 32; j++)
                if (amax < fabsf(xb[j])) amax = fabsf(xb[j]), max = xb[j];
            double d16 = half_value(rd16(blk));
            if (t == ALLOY_QTYPE_Q8_0) {
                float d = amax / 127;
                bound = d / 2.0 + 127 * fabs(d - d16);
            } else {
                float d = max / -8;
                double v = d != 0.0f ? (double)x[i] / d : 0.0;
                bound = fabs(d) * (v > 7.5 ? 1.0 : 0.5) + 8 * fabs(d - d16);
            }
            bound += 1e-6 * amax;
        } else {
            const uint8_t *blk = q + (size_t)(i / 256) * 144;
            int sc, m;
            q4k_sm(blk + 4, i % 256 / 32, &sc, &m);
            double d1 = half_value(rd16(blk)) * sc, m1 = half_value(rd16(blk + 2)) * m;
            // half a step inside the sub-block's range, the distance to it outside
            double outside = fmax(0.0, fmax(-m1 - x[i], x[i] - (15 * d1 - m1)));
            bound = d1 / 2 * (1 + 1e-5) + outside + 1e-6 * (fabs(x[i]) + m1);
        }
        if (!(err <= bound)) {
            if ((*violations)++ < 5)
                fprintf(stderr, "  %s element %d: x %g y %g err %g > bound %g\n", alloy_qtype_name(t), i, x[i],
                        y[i], err, bound);
        }
    }
    return sqrt(se / n);
}

static void test_roundtrip_bounds(void) {
    alloy_rng_seed(&rng, 11);
    enum { N = 256 * 64 };
    static const double scales[] = {1e-4, 1.0, 300.0};
    double rmse[NTYPES] = {0};
    for (int s = 0; s < 3; s++) {
        float *x = gauss(N, scales[s]);
        for (int i = 0; i < N; i += 97) x[i] *= 6.0f; // outliers
        for (int k = 0; k < NTYPES; k++) {
            int v = 0;
            double e = check_bounds(ALL[k], x, N, &v);
            EXPECT(v == 0, "%s at scale %g: %d elements over their bound", alloy_qtype_name(ALL[k]), scales[s], v);
            if (s == 1) rmse[k] = e;
        }
    }
    printf("# rmse on N(0,1) with outliers: f16 %.2e q8_0 %.2e q4_k %.2e q4_0 %.2e\n", rmse[1], rmse[2], rmse[4],
           rmse[3]);
    EXPECT(rmse[0] == 0.0 && rmse[1] < rmse[2] && rmse[2] < rmse[4] && rmse[4] < rmse[3],
           "expected rmse f32 0 < f16 < q8_0 < q4_k < q4_0");
    EXPECT(rmse[2] < 0.01 && rmse[3] < 0.15 && rmse[4] < 0.12, "rmse too large");
}

/* ---- edge cases ---- */

static void test_edge_cases(void) {
    alloy_rng_seed(&rng, 12);
    uint8_t q[144 * 2];
    float x[512], y[512];
    // all zero, and all -0: exact zeros back, GGML's bytes
    for (int neg = 0; neg < 2; neg++) {
        for (int i = 0; i < 512; i++) x[i] = neg ? -0.0f : 0.0f;
        for (int k = 0; k < NTYPES; k++) {
            int64_t n = ALL[k] == ALLOY_QTYPE_Q4_K ? 256 : 32;
            memset(q, 0xAB, sizeof q);
            alloy_quantize_row(ALL[k], q, x, n);
            alloy_dequantize_row(ALL[k], y, q, n);
            bool zeros = true;
            for (int i = 0; i < n; i++) zeros &= y[i] == 0.0f;
            EXPECT(zeros, "%s: a zero block does not come back zero", alloy_qtype_name(ALL[k]));
        }
    }
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q8_0, q, x, 32);
    bool ok = rd16(q) == 0;
    for (int i = 0; i < 32; i++) ok &= q[2 + i] == 0;
    EXPECT(ok, "q8_0 zero block bytes");
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q, x, 32);
    ok = rd16(q) == 0x8000; // GGML: d = +0 / -8 = -0
    for (int i = 0; i < 16; i++) ok &= q[2 + i] == 0x88;
    EXPECT(ok, "q4_0 zero block bytes (d = -0, q = 8)");

    // one huge value among N(0,1): it comes back within its bound (checked by check_bounds)
    for (int k = 2; k < NTYPES; k++) {
        float *v = gauss(512, 1.0);
        v[77] = 1e4f;
        v[300] = -3e3f;
        int bad = 0;
        check_bounds(ALL[k], v, 512, &bad);
        EXPECT(bad == 0, "%s with one huge value", alloy_qtype_name(ALL[k]));
        float *w = tmem(512 * sizeof(float));
        uint8_t *qq = tmem(alloy_quant_row_bytes(ALL[k], 512));
        alloy_quantize_row(ALL[k], qq, v, 512);
        alloy_dequantize_row(ALL[k], w, qq, 512);
        EXPECT(fabsf(w[77] - 1e4f) < 1e4f * 2e-3f, "%s: the huge value comes back as %g", alloy_qtype_name(ALL[k]),
               w[77]);
    }

    // Q4_0: a negative maximum is exact at level 0; a positive one is exact at level 0 with d < 0
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 7) * 0.25f - 0.75f;
    x[5] = -3.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q, x, 32);
    alloy_dequantize_row(ALLOY_QTYPE_Q4_0, y, q, 32);
    EXPECT(half_value(rd16(q)) == 0.375 && (q[2 + 5] & 15) == 0 && y[5] == -3.0f, "q4_0 negative maximum");
    x[5] = 3.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q, x, 32);
    alloy_dequantize_row(ALLOY_QTYPE_Q4_0, y, q, 32);
    EXPECT(half_value(rd16(q)) == -0.375 && (q[2 + 5] & 15) == 0 && y[5] == 3.0f, "q4_0 positive maximum");
    // x·(1/d) + 8.5 is rounded once (fmaf), as GGML's quantiser compiled with FMA contraction:
    // with d = 3/-8, x = 2.8125 gives -7.5000001 + 8.5 = 0.9999999 -> level 0 (twice rounded: 1)
    for (int i = 0; i < 32; i++) x[i] = 2.8125f;
    x[31] = 3.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q, x, 32);
    EXPECT((q[2] & 15) == 0 && (q[2] >> 4) == 0, "q4_0 rounds x/d + 8.5 once (got level %d)", q[2] & 15);
    // ties of the largest magnitude: the first one sets the sign of d
    for (int i = 0; i < 32; i++) x[i] = 0.1f;
    x[3] = 2.0f, x[9] = -2.0f;
    alloy_quantize_row(ALLOY_QTYPE_Q4_0, q, x, 32);
    EXPECT(half_value(rd16(q)) == -0.25, "q4_0: the first of equal magnitudes picks d");
    // Q8_0 rounds half away from zero, as roundf: amax 127 gives d = 1
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    x[0] = 127.0f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 1.4999999f;
    alloy_quantize_row(ALLOY_QTYPE_Q8_0, q, x, 32);
    EXPECT(rd16(q) == 0x3C00 && (int8_t)q[3] == 3 && (int8_t)q[4] == -3 && (int8_t)q[5] == 1 && (int8_t)q[6] == -1 &&
               (int8_t)q[7] == 1,
           "q8_0 ties round away from zero");

    // NaN or inf poisons its own block only
    for (int k = 2; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int be = alloy_qtype_block_elems(t);
        for (int bad = 0; bad < 3; bad++) {
            float *v = gauss((size_t)2 * be, 1.0);
            v[be + 3] = bad == 0 ? NAN : bad == 1 ? INFINITY : -INFINITY;
            uint8_t *qq = tmem(alloy_quant_row_bytes(t, 2 * be)), *q1 = tmem(alloy_quant_row_bytes(t, be));
            float *w = tmem((size_t)2 * be * sizeof(float));
            alloy_quantize_row(t, qq, v, 2 * be);
            alloy_quantize_row(t, q1, v, be);
            alloy_dequantize_row(t, w, qq, 2 * be);
            bool all_nan = true, first_fine = memcmp(qq, q1, alloy_qtype_block_bytes(t)) == 0;
            for (int i = be; i < 2 * be; i++) all_nan &= isnan(w[i]) != 0;
            for (int i = 0; i < be; i++) first_fine &= isfinite(w[i]) != 0;
            EXPECT(all_nan && first_fine && rd16(qq + alloy_qtype_block_bytes(t)) == 0x7E00,
                   "%s: a non-finite value (%d) must poison its block and only it", alloy_qtype_name(t), bad);
        }
    }
    // F16 keeps inf and NaN element-wise
    x[0] = INFINITY, x[1] = -INFINITY, x[2] = NAN, x[3] = 1e6f;
    alloy_quantize_row(ALLOY_QTYPE_F16, q, x, 4);
    alloy_dequantize_row(ALLOY_QTYPE_F16, y, q, 4);
    EXPECT(y[0] == INFINITY && y[1] == -INFINITY && isnan(y[2]) && y[3] == INFINITY, "f16 specials");

    // scales beyond fp16: clamped to 65504, the quants saturate, every value finite
    for (int k = 2; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int be = alloy_qtype_block_elems(t);
        float *v = gauss((size_t)be, 1e7);
        v[1] = 3e9f;
        uint8_t *qq = tmem(alloy_qtype_block_bytes(t));
        float *w = tmem((size_t)be * sizeof(float));
        alloy_quantize_row(t, qq, v, be);
        alloy_dequantize_row(t, w, qq, be);
        bool finite = (rd16(qq) & 0x7FFF) == 0x7BFF;
        for (int i = 0; i < be; i++) finite &= isfinite(w[i]) != 0;
        EXPECT(finite && w[1] > 4e5f, // Q4_0 tops out at 8·65504
               "%s: a scale beyond fp16 must saturate (d 0x%04x, w[1] %g)", alloy_qtype_name(t),
               rd16(qq), w[1]);
    }
    // tiny blocks: a scale below fp16 (and below 2^-128) dequantises to zeros, no UB
    static const float tiny[] = {1e-6f, 1e-38f, 1e-44f};
    for (int s = 0; s < 3; s++) {
        for (int k = 2; k < NTYPES; k++) {
            alloy_qtype t = ALL[k];
            int be = alloy_qtype_block_elems(t);
            float *v = gauss((size_t)be, tiny[s]);
            uint8_t *qq = tmem(alloy_qtype_block_bytes(t));
            float *w = tmem((size_t)be * sizeof(float));
            alloy_quantize_row(t, qq, v, be);
            alloy_dequantize_row(t, w, qq, be);
            double worst = 0.0, amax = 0.0;
            for (int i = 0; i < be; i++) {
                worst = fmax(worst, fabs((double)w[i] - v[i]));
                amax = fmax(amax, fabs(v[i]));
            }
            EXPECT(worst <= amax + 0x1p-24, "%s at scale %g: error %g", alloy_qtype_name(t), tiny[s], worst);
        }
    }
}

/* ---- the Python reference ---- */

static bool write_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static void *read_file(const char *dir, const char *name, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = tmem(n + 1);
    size_t got = fread(p, 1, n + 1, f);
    fclose(f);
    return got == n ? p : NULL;
}

/* Blocks of every kind the quantisers must agree on (n = 32 · nblocks, a multiple of 256). */
static float *edge_input(int nblocks) {
    float *x = gauss((size_t)32 * nblocks, 1.0);
    for (int b = 0; b < nblocks; b++) {
        float *v = x + 32 * b;
        switch (b % 17) {
        case 1: for (int j = 0; j < 32; j++) v[j] *= 1e-3f; break;
        case 2: for (int j = 0; j < 32; j++) v[j] *= 1e3f; break;
        case 3: for (int j = 0; j < 32; j++) v[j] = 0.0f; break;
        case 4: for (int j = 0; j < 32; j++) v[j] = -0.0f; break;
        case 5: v[b % 32] = 1e4f; break;
        case 6: for (int j = 0; j < 32; j++) v[j] = (float)alloy_rng_uniform(&rng) * 8 - 4; v[7] = -5.0f; break;
        case 7: // ties of roundf (amax 127: d = 1)
            for (int j = 0; j < 32; j++) v[j] = (float)((int)alloy_rng_below(&rng, 200) - 100) + 0.5f;
            v[0] = 127.0f;
            break;
        case 8: // ties of q4_0's + 8.5 (max -8: d = 1)
            for (int j = 0; j < 32; j++) v[j] = (float)((int)alloy_rng_below(&rng, 15) - 7) + 0.5f;
            v[3] = -8.0f;
            break;
        case 9: v[b % 32] = NAN; break;
        case 10: v[5] = (b & 16) ? INFINITY : -INFINITY; break;
        case 11: for (int j = 0; j < 32; j++) v[j] *= 1e7f; break;  // saturating scales
        case 12: for (int j = 0; j < 32; j++) v[j] *= 1e-7f; break; // subnormal halves
        case 13: for (int j = 0; j < 32; j++) v[j] *= 1e-39f; break; // 1/d overflows
        case 14: for (int j = 0; j < 32; j++) v[j] = 0.1f; v[3] = 2.0f; v[9] = -2.0f; break;
        case 15: for (int j = 0; j < 32; j++) v[j] = (float)((int)alloy_rng_below(&rng, 9) - 4) * 0.125f; break;
        case 16: { // q4_0 elements where x·id + 8.5 rounded once or twice truncate differently
            static const float fma_cases[] = {2.8125f, 2.4375f, 2.0625f, 1.6875f, 0x1.80000cp-3f, -0x1.dffff8p-1f};
            for (int j = 0; j < 32; j++) v[j] = fma_cases[j % 6];
            v[31] = 3.0f;
            break;
        }
        default: break;
        }
    }
    return x;
}

static void test_python_reference(void) {
    alloy_rng_seed(&rng, 13);
    NEED_PYTHON("numpy");
    const char *dir = harness_tmpdir();
    enum { NB = 256, N = 32 * NB, NR = 4096 }; // NB blocks of 32 (a multiple of 8 Q4_K blocks)
    float *x = edge_input(NB);
    // ours: the quantised bytes of the edge input, and random GGML-like blocks
    static const alloy_qtype qt[] = {ALLOY_QTYPE_F16, ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0, ALLOY_QTYPE_Q4_K};
    uint8_t *ours[4], *rnd[4];
    FILE *man;
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.txt", dir);
    REQUIRE((man = fopen(path, "w")) != NULL, "cannot write %s", path);
    REQUIRE(write_file(dir, "x.f32", x, N * sizeof(float)), "write x");
    for (int k = 0; k < 4; k++) {
        const char *name = alloy_qtype_name(qt[k]);
        char f[64];
        size_t rb = alloy_quant_row_bytes(qt[k], N);
        ours[k] = tmem(rb);
        alloy_quantize_row(qt[k], ours[k], x, N);
        snprintf(f, sizeof f, "ours_%s.bin", name);
        REQUIRE(write_file(dir, f, ours[k], rb), "write %s", f);
        rnd[k] = random_blocks(qt[k], 1, NR);
        // some random halves are specials: inf, NaN, subnormal scales
        size_t bb = alloy_qtype_block_bytes(qt[k]);
        for (size_t b = 0; qt[k] != ALLOY_QTYPE_F16 && b < alloy_quant_row_bytes(qt[k], NR) / bb; b += 7) {
            static const uint16_t specials[] = {0x7C00, 0xFC00, 0x7E00, 0x0001, 0x83FF, 0x7BFF};
            uint16_t h = specials[b / 7 % 6];
            rnd[k][b * bb] = (uint8_t)h, rnd[k][b * bb + 1] = (uint8_t)(h >> 8);
        }
        snprintf(f, sizeof f, "rnd_%s.bin", name);
        REQUIRE(write_file(dir, f, rnd[k], alloy_quant_row_bytes(qt[k], NR)), "write %s", f);
        fprintf(man, "dequant %s ours_%s.bin %d deq_ours_%s.f32\n", name, name, N, name);
        fprintf(man, "dequant %s rnd_%s.bin %d deq_rnd_%s.f32\n", name, name, NR, name);
        if (qt[k] != ALLOY_QTYPE_Q4_K) fprintf(man, "quant %s x.f32 ref_%s.bin\n", name, name);
    }
    fclose(man);
    REFERENCE("numpy", "quant_ref.py", "'%s'", dir);
    for (int k = 0; k < 4; k++) {
        const char *name = alloy_qtype_name(qt[k]);
        char f[64];
        size_t rb = alloy_quant_row_bytes(qt[k], N), bb = alloy_qtype_block_bytes(qt[k]);
        if (qt[k] != ALLOY_QTYPE_Q4_K) { // its bytes against ours
            snprintf(f, sizeof f, "ref_%s.bin", name);
            uint8_t *ref = read_file(dir, f, rb);
            REQUIRE(ref, "read %s", f);
            int bad = 0;
            for (size_t b = 0; b < rb / bb; b++) {
                bool eq = memcmp(ref + b * bb, ours[k] + b * bb, bb) == 0;
                if (!eq && qt[k] == ALLOY_QTYPE_F16) { // NaNs: the same class is enough
                    float a = alloy_f16_to_f32(rd16(ref + 2 * b)), c = alloy_f16_to_f32(rd16(ours[k] + 2 * b));
                    eq = isnan(a) && isnan(c);
                }
                if (!eq && bad++ < 3)
                    fprintf(stderr, "  %s block %zu (kind %zu) differs from the reference\n", name, b,
                            qt[k] == ALLOY_QTYPE_F16 ? b / 32 % 17 : b % 17);
            }
            EXPECT(bad == 0, "%s: %d blocks differ from the reference quantiser", name, bad);
        }
        for (int r = 0; r < 2; r++) { // its floats against ours, bit for bit
            int n = r ? NR : N;
            snprintf(f, sizeof f, r ? "deq_rnd_%s.f32" : "deq_ours_%s.f32", name);
            float *ref = read_file(dir, f, (size_t)n * sizeof(float));
            REQUIRE(ref, "read %s", f);
            float *y = dequantized(qt[k], r ? rnd[k] : ours[k], (size_t)n);
            long at = first_diff(y, ref, (size_t)n);
            EXPECT(at < 0, "%s (%s blocks): element %ld is %a, the reference %a", name, r ? "random" : "our", at,
                   at < 0 ? 0.0 : y[at], at < 0 ? 0.0 : ref[at]);
        }
    }
}

/* ---- products ---- */

/* xq (cols) = x as the kernels see it: exact for f32/f16 weights, else quantised by the rule of
 * alloy/quant.h (blocks of 32, or 256 for Q4_K: dx = amax/127, q = nearest-even(x·(1/dx)),
 * zero below 2^-100, NaN for a non-finite block), in double. */
static void x_as_seen(alloy_qtype t, double *xq, const float *x, int cols) {
    if (t == ALLOY_QTYPE_F32 || t == ALLOY_QTYPE_F16) {
        for (int c = 0; c < cols; c++) xq[c] = x[c];
        return;
    }
    int be = t == ALLOY_QTYPE_Q4_K ? 256 : 32;
    for (int b = 0; b < cols / be; b++) {
        const float *v = x + b * be;
        float amax = 0.0f;
        bool finite = true;
        for (int j = 0; j < be; j++) {
            finite &= isfinite(v[j]) != 0;
            amax = fmaxf(amax, fabsf(v[j]));
        }
        float d = amax / 127, id = amax < 0x1p-100f ? 0.0f : 1.0f / d;
        if (amax < 0x1p-100f) d = 0.0f;
        for (int j = 0; j < be; j++) xq[b * be + j] = finite ? (double)lrintf(v[j] * id) * d : NAN;
    }
}

/* ref (n, rows) = X·Wᵀ in double from the dequantised W and x_as_seen; S (n, rows) = Σ |w|·|x|
 * (Q4_K: Σ (|d·sc·q| + dmin·m)·|x|, the size of the two terms the kernel sums). */
static void product_ref(alloy_qtype t, double *ref, double *S, const uint8_t *W, const float *X, int n, int rows,
                        int cols) {
    size_t rb = alloy_quant_row_bytes(t, cols);
    float *w = tmem((size_t)cols * sizeof(float));
    double *wabs = tmem((size_t)cols * sizeof(double)), *xq = tmem((size_t)n * cols * sizeof(double));
    for (int u = 0; u < n; u++) x_as_seen(t, xq + (size_t)u * cols, X + (size_t)u * cols, cols);
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = W + (size_t)r * rb;
        alloy_dequantize_row(t, w, row, cols);
        for (int c = 0; c < cols; c++) {
            wabs[c] = fabs(w[c]);
            if (t == ALLOY_QTYPE_Q4_K) {
                const uint8_t *blk = row + (size_t)(c / 256) * 144;
                int s = c % 256 / 32, l = c % 32, sc, m;
                q4k_sm(blk + 4, s, &sc, &m);
                int q = (blk[16 + 32 * (s / 2) + l] >> (4 * (s & 1))) & 15;
                wabs[c] = fabs(half_value(rd16(blk)) * sc * q) + half_value(rd16(blk + 2)) * m;
            }
        }
        for (int u = 0; u < n; u++) {
            double acc = 0.0, mag = 0.0;
            for (int c = 0; c < cols; c++) {
                acc += (double)w[c] * xq[(size_t)u * cols + c];
                mag += wabs[c] * fabs(xq[(size_t)u * cols + c]);
            }
            ref[(size_t)u * rows + r] = acc;
            S[(size_t)u * rows + r] = mag;
        }
    }
}

/* The tolerance factor of the contract: (longest fp32 chain + 8 + chunks)·2^-23. */
static double tol_factor(alloy_qtype t, int cols) {
    int chain = t == ALLOY_QTYPE_Q4_K ? 16 : (t == ALLOY_QTYPE_Q8_0 || t == ALLOY_QTYPE_Q4_0) ? 4 : (cols + 15) / 16;
    int chunks = (t == ALLOY_QTYPE_F32 || t == ALLOY_QTYPE_F16) ? 0 : (cols + 2047) / 2048;
    return (chain + 8 + chunks) * 0x1p-23;
}

/* Y against the reference; returns the worst |Y - ref| / (factor·S) (<= 1 passes). */
static double ref_error(alloy_qtype t, const float *Y, const uint8_t *W, const float *X, int n, int rows, int cols) {
    double *ref = tmem((size_t)n * rows * sizeof(double)), *S = tmem((size_t)n * rows * sizeof(double));
    product_ref(t, ref, S, W, X, n, rows, cols);
    double f = tol_factor(t, cols), worst = 0.0;
    for (size_t i = 0; i < (size_t)n * rows; i++) {
        double e = fabs((double)Y[i] - ref[i]) / (f * S[i] + 1e-300);
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

static uint8_t *make_weights(alloy_qtype t, int rows, int cols, bool random_bytes) {
    if (random_bytes) return random_blocks(t, rows, cols);
    return quantized(t, gauss((size_t)rows * cols, 0.05), rows, cols);
}

/* Column counts for a format: one block, partial lane groups and chunks. */
static int col_cases(alloy_qtype t, int out[10]) {
    // Q8_0 / Q4_0: short last groups of 16 blocks, of partial (32, 64, 480, 544, 2080, 4640) and
    // of whole four-block slices (128, 768: 16 + 8 blocks), and whole groups (512, 2048)
    static const int q32[] = {32, 64, 128, 480, 512, 544, 768, 2048, 2080, 4640};
    static const int qk[] = {256, 512, 2048, 2304, 4608};
    static const int dense[] = {1, 15, 16, 17, 100, 2049};
    const int *src = t == ALLOY_QTYPE_Q4_K ? qk : (t == ALLOY_QTYPE_Q8_0 || t == ALLOY_QTYPE_Q4_0) ? q32 : dense;
    int n = t == ALLOY_QTYPE_Q4_K ? 5 : (t == ALLOY_QTYPE_Q8_0 || t == ALLOY_QTYPE_Q4_0) ? 10 : 6;
    memcpy(out, src, (size_t)n * sizeof(int));
    return n;
}

static void test_matvec_reference(void) {
    alloy_rng_seed(&rng, 14);
    for (int k = 0; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int cols_list[10], nc = col_cases(t, cols_list);
        double worst = 0.0;
        for (int ci = 0; ci < nc; ci++) {
            for (int rnd = 0; rnd < 2; rnd++) {
                int rows = 5 + ci, cols = cols_list[ci];
                uint8_t *W = make_weights(t, rows, cols, rnd);
                float *x = gauss((size_t)cols, 1.0);
                if (ci == 2) for (int c = 0; c < cols; c += 3) x[c] *= 20.0f; // uneven magnitudes
                float *y = tmem((size_t)rows * sizeof(float));
                alloy_quant_matvec(t, y, W, x, rows, cols);
                double e = ref_error(t, y, W, x, 1, rows, cols);
                EXPECT(e <= 1.0, "%s %s weights, %d x %d: error %.3g of the tolerance", alloy_qtype_name(t),
                       rnd ? "random" : "quantised", rows, cols, e);
                worst = fmax(worst, e);
            }
        }
        printf("# matvec %-5s worst error %.3f of its tolerance\n", alloy_qtype_name(t), worst);
    }
    // rows = 0 and cols = 0
    float y[3] = {NAN, NAN, NAN};
    alloy_quant_matvec(ALLOY_QTYPE_Q8_0, y, NULL, NULL, 0, 32);
    EXPECT(isnan(y[0]), "rows = 0 writes nothing");
    alloy_quant_matvec(ALLOY_QTYPE_Q4_K, y, NULL, NULL, 3, 0);
    EXPECT(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f, "cols = 0 gives zeros");
}

/* Each row of matmul equals matvec of its token bitwise, and both meet the reference. */
static void test_matmul_tails(void) {
    alloy_rng_seed(&rng, 15);
    for (int k = 0; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int cols = t == ALLOY_QTYPE_Q4_K ? 2304 : (t == ALLOY_QTYPE_Q8_0 || t == ALLOY_QTYPE_Q4_0) ? 2080 : 100;
        int rows = 11;
        uint8_t *W = make_weights(t, rows, cols, k % 2);
        float *X = gauss((size_t)40 * cols, 1.0);
        float *Y = tmem((size_t)40 * rows * sizeof(float)), *y = tmem((size_t)rows * sizeof(float));
        float *y1 = tmem((size_t)40 * rows * sizeof(float));
        for (int u = 0; u < 40; u++) alloy_quant_matvec(t, y1 + (size_t)u * rows, W, X + (size_t)u * cols, rows, cols);
        int bad = 0;
        for (int n = 1; n <= 18; n++) {
            int nn = n == 18 ? 40 : n;
            for (size_t i = 0; i < (size_t)nn * rows; i++) Y[i] = NAN;
            alloy_quant_matmul(t, Y, W, X, nn, rows, cols);
            long at = first_diff(Y, y1, (size_t)nn * rows);
            if (at >= 0 && bad++ < 3)
                fprintf(stderr, "  %s n=%d: Y[%ld] %a, matvec %a\n", alloy_qtype_name(t), nn, at, Y[at], y1[at]);
        }
        EXPECT(bad == 0, "%s: %d token counts where matmul differs from matvec", alloy_qtype_name(t), bad);
        double e = ref_error(t, y1, W, X, 40, rows, cols);
        EXPECT(e <= 1.0, "%s matmul of 40 tokens: error %.3g of the tolerance", alloy_qtype_name(t), e);
        // one block of columns
        int be = alloy_qtype_block_elems(t);
        uint8_t *W1 = make_weights(t, 3, be, false);
        alloy_quant_matmul(t, Y, W1, X, 17, 3, be);
        for (int u = 0; u < 17; u++) {
            alloy_quant_matvec(t, y, W1, X + (size_t)u * be, 3, be);
            bad += first_diff(Y + (size_t)u * 3, y, 3) >= 0;
        }
        EXPECT(bad == 0, "%s: one block of columns", alloy_qtype_name(t));
        EXPECT(ref_error(t, Y, W1, X, 17, 3, be) <= 1.0, "%s: one block of columns against the reference",
               alloy_qtype_name(t));
    }
}

static void test_scalar_equals_simd(void) {
    const alloy_quant_isa best = alloy_quant_isa_best();
    printf("# kernels here: %s\n", alloy_quant_isa_name(best));
    if (best == ALLOY_QUANT_SCALAR) SKIP("cpu: no AVX2 or AVX-512, so both paths are the scalar code");
    for (int isa = best; isa >= 1; isa--) { // every SIMD level this CPU runs
        alloy_quant_isa_set((alloy_quant_isa)isa);
        alloy_rng_seed(&rng, 16);
        for (int k = 0; k < NTYPES; k++) {
            alloy_qtype t = ALL[k];
            int cols_list[10], nc = col_cases(t, cols_list), bad = 0;
            for (int ci = 0; ci < nc; ci++) {
                int rows = 7, n = 11, cols = cols_list[ci]; // f32/f16: a tile of 4 rows and 3 single rows
                uint8_t *W = make_weights(t, rows, cols, ci % 2);
                float *X = gauss((size_t)n * cols, 1.0);
                if (ci == 1) X[cols + 5] = NAN;
                float *a = tmem((size_t)n * rows * sizeof(float)), *b = tmem((size_t)n * rows * sizeof(float));
                alloy_quant_matmul(t, a, W, X, n, rows, cols);
                alloy_quant_matmul_scalar(t, b, W, X, n, rows, cols);
                long at = first_diff(a, b, (size_t)n * rows);
                alloy_quant_matvec(t, a, W, X, rows, cols);
                alloy_quant_matvec_scalar(t, b, W, X, rows, cols);
                if (at < 0) at = first_diff(a, b, (size_t)rows);
                if (at >= 0 && bad++ < 3)
                    fprintf(stderr, "  %s %s cols %d: %a vs scalar %a\n", alloy_quant_isa_name((alloy_quant_isa)isa),
                            alloy_qtype_name(t), cols, a[at], b[at]);
            }
            EXPECT(bad == 0, "%s: %d shapes where the %s kernels differ from the scalar ones", alloy_qtype_name(t), bad,
                   alloy_quant_isa_name((alloy_quant_isa)isa));
        }
    }
    alloy_quant_isa_set(ALLOY_QUANT_AVX512);
}

static void test_thread_count(void) {
#ifdef _OPENMP
    alloy_rng_seed(&rng, 17);
    int saved = omp_get_max_threads();
    for (int k = 0; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int rows = 37, n = 9, cols = t == ALLOY_QTYPE_Q4_K ? 2304 : 2080;
        uint8_t *W = make_weights(t, rows, cols, false);
        float *X = gauss((size_t)n * cols, 1.0);
        float *Y[3], *y[3];
        for (int th = 1; th <= 3; th++) {
            omp_set_num_threads(th);
            Y[th - 1] = tmem((size_t)n * rows * sizeof(float));
            y[th - 1] = tmem((size_t)rows * sizeof(float));
            alloy_quant_matmul(t, Y[th - 1], W, X, n, rows, cols);
            alloy_quant_matvec(t, y[th - 1], W, X, rows, cols);
        }
        EXPECT(first_diff(Y[0], Y[1], (size_t)n * rows) < 0 && first_diff(Y[0], Y[2], (size_t)n * rows) < 0,
               "%s matmul: 1, 2, 3 threads differ", alloy_qtype_name(t));
        EXPECT(first_diff(y[0], y[1], (size_t)rows) < 0 && first_diff(y[0], y[2], (size_t)rows) < 0,
               "%s matvec: 1, 2, 3 threads differ", alloy_qtype_name(t));
    }
    omp_set_num_threads(saved);
#else
    printf("# built without OpenMP: one thread only\n");
#endif
}

/* A NaN in x makes every output NaN; a poisoned weight block makes its row NaN only. */
static void test_nonfinite_products(void) {
    alloy_rng_seed(&rng, 18);
    for (int k = 0; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int rows = 4, cols = t == ALLOY_QTYPE_Q4_K ? 512 : 64;
        float *Wf = gauss((size_t)rows * cols, 1.0);
        Wf[2 * cols + 40] = INFINITY;
        uint8_t *W = quantized(t, Wf, rows, cols);
        float *x = gauss((size_t)cols, 1.0), *y = tmem((size_t)rows * sizeof(float));
        alloy_quant_matvec(t, y, W, x, rows, cols);
        EXPECT(isfinite(y[0]) && isfinite(y[1]) && !isfinite(y[2]) && isfinite(y[3]),
               "%s: a non-finite weight must reach its row only", alloy_qtype_name(t));
        x[cols - 1] = NAN;
        alloy_quant_matvec(t, y, W, x, rows, cols);
        EXPECT(isnan(y[0]) && isnan(y[1]) && isnan(y[3]), "%s: a NaN in x must reach every row", alloy_qtype_name(t));
    }
}

/* Weights at an odd address give the same results (no aligned loads, no misaligned access). */
static void test_unaligned_weights(void) {
    alloy_rng_seed(&rng, 19);
    for (int k = 0; k < NTYPES; k++) {
        alloy_qtype t = ALL[k];
        int rows = 3, n = 5, cols = t == ALLOY_QTYPE_Q4_K ? 512 : 96;
        size_t bytes = (size_t)rows * alloy_quant_row_bytes(t, cols);
        uint8_t *W = make_weights(t, rows, cols, false), *odd = tmem(bytes + 1);
        memcpy(odd + 1, W, bytes);
        float *X = gauss((size_t)n * cols, 1.0);
        float *a = tmem((size_t)n * rows * sizeof(float)), *b = tmem((size_t)n * rows * sizeof(float));
        alloy_quant_matmul(t, a, W, X, n, rows, cols);
        alloy_quant_matmul(t, b, odd + 1, X, n, rows, cols);
        bool ok = first_diff(a, b, (size_t)n * rows) < 0;
        alloy_quant_matmul_scalar(t, b, odd + 1, X, n, rows, cols);
        ok &= first_diff(a, b, (size_t)n * rows) < 0;
        float *y = tmem((size_t)cols * sizeof(float)), *z = tmem((size_t)cols * sizeof(float));
        alloy_dequantize_row(t, y, W, cols);
        alloy_dequantize_row(t, z, odd + 1, cols);
        ok &= first_diff(y, z, (size_t)cols) < 0;
        EXPECT(ok, "%s: unaligned weights", alloy_qtype_name(t));
    }
}

/* The reference comparison must catch a wrong weight scale and a dropped block. */
static void test_checks_can_fail(void) {
    alloy_rng_seed(&rng, 20);
    int rows = 2, cols = 2080;
    uint8_t *W = make_weights(ALLOY_QTYPE_Q4_0, rows, cols, false);
    float *x = gauss((size_t)cols, 1.0), *y = tmem((size_t)rows * sizeof(float));
    alloy_quant_matvec(ALLOY_QTYPE_Q4_0, y, W, x, rows, cols);
    EXPECT(ref_error(ALLOY_QTYPE_Q4_0, y, W, x, 1, rows, cols) <= 1.0, "the exact result passes");
    float *z = tmem((size_t)rows * sizeof(float));
    memcpy(z, y, (size_t)rows * sizeof(float));
    z[1] = nextafterf(nextafterf(z[1], INFINITY), INFINITY); // 2 ulp: within tolerance
    EXPECT(ref_error(ALLOY_QTYPE_Q4_0, z, W, x, 1, rows, cols) <= 1.0, "2 ulp of the result fails");
    W[18 * 65] ^= 8; // a 2^-7 change of one block's scale in row 1
    EXPECT(ref_error(ALLOY_QTYPE_Q4_0, y, W, x, 1, rows, cols) > 1.0, "a changed scale bit passes");
    W[18 * 65] ^= 8;
    W[18 * 66 + 5] ^= 0x10; // one nibble
    EXPECT(ref_error(ALLOY_QTYPE_Q4_0, y, W, x, 1, rows, cols) > 1.0, "a changed nibble passes");
}

int main(void) {
    CASE(test_formats);
    CASE(test_f16_exhaustive);
    CASE(test_f16_rounding);
    CASE(test_roundtrip_bounds);
    CASE(test_edge_cases);
    CASE(test_python_reference);
    CASE(test_matvec_reference);
    CASE(test_matmul_tails);
    CASE(test_scalar_equals_simd);
    CASE(test_thread_count);
    CASE(test_nonfinite_products);
    CASE(test_unaligned_weights);
    CASE(test_checks_can_fail);
    return harness_exit();
}
