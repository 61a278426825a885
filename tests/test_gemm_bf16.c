/*
 * test_gemm_bf16.c — gemm_bf16 (src/kernels/gemm_bf16.c) against a double-precision product
 * of the bf16-rounded inputs, rounded here in plain C (round to nearest even).
 *
 * Since every bf16 product is exact in fp32, the only error left is fp32 summation, so each
 * element is held to |got - want| <= tol · (alpha·Σ|a||b| + |beta·c|) with tol = 2e-6 (the
 * kernel sums at most a few hundred terms per K block). Covered: the four transpose cases over
 * odd shapes that straddle the 8-row and 48-column tiles, odd K, K across several K blocks,
 * leading dimensions wider than the matrix, alpha/beta (beta 0 over a NaN-filled C must
 * overwrite it), results bitwise equal for 1 and 2 threads, rounding to bf16 really taking
 * place, and NaN/Inf inputs propagating. Every case skips ("# SKIP cpu: ...") on CPUs
 * without avx512_bf16.
 */
#include "alloy/kernels.h"
#include "harness.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static bool have_bf16;

/* fp32 -> bf16 -> fp32, round to nearest even (inputs here are normal and finite). */
static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    float y;
    memcpy(&y, &u, 4);
    return y;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {  // uniform in [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* op(A)[i][k] and op(B)[k][j] of the stored matrices */
static float a_at(bool ta, const float *A, int lda, int i, int k) {
    return ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
}
static float b_at(bool tb, const float *B, int ldb, int k, int j) {
    return tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
}

/* One gemm_bf16 call on random data compared with the reference; returns the worst
 * |got - want| / scale and counts elements over tol. */
static double check_case(bool ta, bool tb, int M, int N, int K, int pad, float alpha, float beta, int *bad) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int64_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = malloc(sizeof(float) * (size_t)(arows * lda));
    float *B = malloc(sizeof(float) * (size_t)(brows * ldb));
    float *C = malloc(sizeof(float) * (size_t)M * ldc);
    float *C0 = malloc(sizeof(float) * (size_t)M * ldc);
    for (int64_t i = 0; i < arows * lda; i++) A[i] = frand();
    for (int64_t i = 0; i < brows * ldb; i++) B[i] = frand();
    for (int64_t i = 0; i < (int64_t)M * ldc; i++) C0[i] = beta == 0.0f ? NAN : frand();
    memcpy(C, C0, sizeof(float) * (size_t)M * ldc);
    gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0.0;
    *bad = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < ldc; j++) {
            float got = C[(int64_t)i * ldc + j];
            if (j >= N) {  // the padding between rows is not touched
                float was = C0[(int64_t)i * ldc + j];
                if (memcmp(&got, &was, 4) != 0) (*bad)++;
                continue;
            }
            double s = 0.0, sa = 0.0;
            for (int k = 0; k < K; k++) {
                double p = (double)bf16_round(a_at(ta, A, lda, i, k)) * bf16_round(b_at(tb, B, ldb, k, j));
                s += p;
                sa += fabs(p);
            }
            double want = alpha * s, scale = fabs(alpha) * sa;
            if (beta != 0.0f) {
                want += (double)beta * C0[(int64_t)i * ldc + j];
                scale += fabs((double)beta * C0[(int64_t)i * ldc + j]);
            }
            double e = fabs(got - want) / (scale + 1e-30);
            if (!(e <= 2e-6)) (*bad)++;
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    }
    free(A);
    free(B);
    free(C);
    free(C0);
    return worst;
}

static const char *tname(bool ta, bool tb) { return ta ? (tb ? "TT" : "TN") : (tb ? "NT" : "NN"); }

static void test_shapes(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
    static const int dims[] = {1, 2, 15, 17, 31, 33, 47, 63, 65, 129};
    int nd = (int)(sizeof dims / sizeof dims[0]);
    double worst = 0.0;
    int cases = 0;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        for (int x = 0; x < nd; x++) {
            // M, N, K walk through the sizes out of step, so each meets many of the others
            int M = dims[x], N = dims[(x * 3 + t) % nd], K = dims[(x * 7 + 2 * t + 1) % nd];
            int bad;
            double e = check_case(ta, tb, M, N, K, 0, 1.0f, 0.0f, &bad);
            EXPECT(bad == 0, "%s M=%d N=%d K=%d: %d elements off (worst %.3g)", tname(ta, tb), M, N, K, bad, e);
            if (e > worst) worst = e;
            cases++;
        }
    }
    printf("# %d shapes, worst error %.3g of sum |a||b|\n", cases, worst);
}

static void test_odd_k_and_blocks(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
    // K odd, K around and across the K blocks (512) and N across several column blocks
    static const int ks[] = {1, 3, 511, 513, 1025, 1537};
    double worst = 0.0;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        for (int x = 0; x < 6; x++) {
            int K = ks[x], M = 9 + 8 * x, N = 49 + 20 * t;
            int bad;
            double e = check_case(ta, tb, M, N, K, 0, 1.0f, 0.0f, &bad);
            EXPECT(bad == 0, "%s M=%d N=%d K=%d: %d elements off (worst %.3g)", tname(ta, tb), M, N, K, bad, e);
            if (e > worst) worst = e;
        }
    }
    int bad;
    double e = check_case(false, true, 40, 1500, 700, 0, 1.0f, 0.0f, &bad);  // several N blocks
    EXPECT(bad == 0, "NT 40x1500x700: %d elements off (worst %.3g)", bad, e);
    e = check_case(true, false, 300, 20, 100, 0, 1.0f, 0.0f, &bad);  // small N: columns split
    EXPECT(bad == 0, "TN 300x20x100: %d elements off (worst %.3g)", bad, e);
    printf("# worst error %.3g of sum |a||b|\n", worst > e ? worst : e);
}

static void test_leading_dims_alpha_beta(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
    static const float ab[][2] = {{1.0f, 0.0f}, {1.0f, 1.0f}, {0.5f, -2.0f}, {-3.0f, 0.0f}, {2.0f, 0.25f}};
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        for (int v = 0; v < 5; v++) {
            int M = 23 + v, N = 50 + 13 * v, K = 33 + 2 * v, bad;
            double e = check_case(ta, tb, M, N, K, 3 + v, ab[v][0], ab[v][1], &bad);
            EXPECT(bad == 0, "%s M=%d N=%d K=%d pad %d alpha %g beta %g: %d off (worst %.3g)", tname(ta, tb), M, N,
                   K, 3 + v, ab[v][0], ab[v][1], bad, e);
        }
    }
}

/* Bitwise the same with 1 and 2 threads, for every transpose case and a shape that the
 * threads split by rows and one they split by columns. */
static void test_threads_bitwise(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    static const int shapes[][3] = {{133, 157, 1100}, {9, 500, 1000}};
    for (int s = 0; s < 2; s++) {
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            int lda = ta ? M : K, ldb = tb ? K : N;
            float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N);
            float *C1 = malloc(sizeof(float) * (size_t)M * N), *C2 = malloc(sizeof(float) * (size_t)M * N);
            for (int64_t i = 0; i < (int64_t)M * K; i++) A[i] = frand();
            for (int64_t i = 0; i < (int64_t)K * N; i++) B[i] = frand();
            for (int64_t i = 0; i < (int64_t)M * N; i++) C1[i] = C2[i] = frand();
            omp_set_num_threads(1);
            gemm_bf16(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 1.0f, C1, N);
            omp_set_num_threads(2);
            gemm_bf16(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 1.0f, C2, N);
            EXPECT(memcmp(C1, C2, sizeof(float) * (size_t)M * N) == 0, "%s %dx%dx%d: 1 and 2 threads differ",
                   tname(ta, tb), M, N, K);
            free(A);
            free(B);
            free(C1);
            free(C2);
        }
    }
    omp_set_num_threads(saved);
#else
    printf("# built without OpenMP: one thread only\n");
#endif
}

/* Inputs that bf16 cannot hold exactly: 1 + 2^-9 rounds to 1 (tie, to even), 1 + 3·2^-9 to
 * 1 + 2^-7 (tie, to even, upward), 1 + 2^-8 + 2^-12 up to 1 + 2^-7; the fp32 product would be
 * different in every case. */
static void test_rounds_to_bf16(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
    const float xs[3] = {1.0f + 0x1p-9f, 1.0f + 3 * 0x1p-9f, 1.0f + 0x1p-8f + 0x1p-12f};
    const float want[3] = {1.0f, 1.0f + 0x1p-7f, 1.0f + 0x1p-7f};
    for (int i = 0; i < 3; i++) {
        float a = xs[i], b = 1.0f, c = 0.0f;
        gemm_bf16(false, false, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
        EXPECT(c == want[i], "bf16(%.9g) gave %.9g, want %.9g (fp32 %.9g)", xs[i], c, want[i], a);
        EXPECT(bf16_round(xs[i]) == want[i], "the test's own rounding of %.9g", xs[i]);
    }
    // a whole product: differs from fp32 by about 2^-9 relative, and equals the bf16 reference
    int M = 17, N = 40, K = 64, bad;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++) A[i] = frand();
    for (int i = 0; i < K * N; i++) B[i] = frand();
    gemm_bf16(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    double dev32 = 0.0, scale = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                s += (double)A[i * K + k] * B[k * N + j];
                scale += fabs((double)A[i * K + k] * B[k * N + j]);
            }
            dev32 += fabs(C[i * N + j] - s);
        }
    double rel = dev32 / scale;  // mean deviation from the fp32 product, relative to Σ|a||b|
    printf("# deviation from the fp32 product: %.3g of sum |a||b| (bf16 eps 2^-8 = %.3g)\n", rel, 0x1p-8);
    EXPECT(rel > 1e-4 && rel < 4e-3, "deviation from fp32 %.3g is not that of bf16 rounding", rel);
    free(A);
    free(B);
    free(C);
    double e = check_case(false, false, M, N, K, 0, 1.0f, 0.0f, &bad);
    EXPECT(bad == 0, "bf16 reference: %d off (worst %.3g)", bad, e);
}

/* NaN and Inf in the inputs reach the outputs that use them, as vcvtne2ps2bf16 keeps them. */
static void test_nan_inf(void) {
    if (!have_bf16) SKIP("cpu: no avx512_bf16");
    int M = 9, N = 50, K = 35;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N), *C = malloc(sizeof(float) * M * N);
        for (int i = 0; i < M * K; i++) A[i] = 1.0f;
        for (int i = 0; i < K * N; i++) B[i] = 1.0f;
        // op(A)[2][5] = NaN, op(A)[4][6] = +Inf
        A[ta ? 5 * M + 2 : 2 * K + 5] = NAN;
        A[ta ? 6 * M + 4 : 4 * K + 6] = INFINITY;
        gemm_bf16(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C, N);
        int wrong = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float c = C[i * N + j];
                bool ok = i == 2 ? isnan(c) : i == 4 ? (isinf(c) && c > 0) : c == (float)K;
                wrong += !ok;
            }
        EXPECT(wrong == 0, "%s: %d outputs wrong around NaN / Inf inputs", tname(ta, tb), wrong);
        free(A);
        free(B);
        free(C);
    }
}

int main(void) {
    have_bf16 = gemm_bf16_supported();
    RUN(test_shapes);
    RUN(test_odd_k_and_blocks);
    RUN(test_leading_dims_alpha_beta);
    RUN(test_threads_bitwise);
    RUN(test_rounds_to_bf16);
    RUN(test_nan_inf);
    return harness_exit();
}
