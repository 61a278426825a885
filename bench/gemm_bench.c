/*
 * gemm_bench.c — GFLOP/s of OpenBLAS cblas_sgemm (fp32) and of alloy's gemm_bf16 (bf16 inputs,
 * fp32 sums) on the matrix products of GPT-2 124M training with 2048 tokens per step.
 *
 *   build/bench/gemm_bench [--reps N] [--quick]
 *
 * Shapes (M, N, K), all row-major as cblas_sgemm(CblasRowMajor, ...):
 *   forward  NT: out (2048, OC) = inp (2048, IC) · W (OC, IC)ᵀ
 *   dinp     NN: dinp (2048, IC) = dout (2048, OC) · W (OC, IC)
 *   dweight  TN: dW (OC, IC) = dout (2048, OC)ᵀ · inp (2048, IC)
 * for (OC, IC) = qkv (2304, 768), attn proj (768, 768), fc (3072, 768), fc proj (768, 3072) and
 * the tied LM head (50257, 768). Before any timing, each shape's gemm_bf16 result is checked
 * against a double-precision product of the bf16-rounded inputs on a sample of elements
 * (relative to Σ|a||b|, tolerance 1e-5), and against sgemm loosely; a mismatch exits 1.
 * Timings: best of --reps (default 3) after one warm-up; GFLOP/s = 2·M·N·K / s / 1e9. Threads
 * are OpenMP's (OMP_NUM_THREADS) for both; OpenBLAS' kernels follow OPENBLAS_CORETYPE.
 */
#include "alloy/kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    const char *name;  /* what the product is in training */
    bool ta, tb;       /* transposes, cblas meaning */
    int M, N, K;       /* C (M, N), K summed */
} shape;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

static void fill(float *p, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = (float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f;
    }
}

static void run_sgemm(const shape *s, const float *A, const float *B, float *C) {
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N,
                s->K, 1.0f, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N, 0.0f, C, s->N);
}

static void run_bf16(const shape *s, const float *A, const float *B, float *C) {
    gemm_bf16(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N, 0.0f, C, s->N);
}

static double best_seconds(void (*fn)(const shape *, const float *, const float *, float *), const shape *s,
                           const float *A, const float *B, float *C, int reps) {
    fn(s, A, B, C);  // warm-up: page faults, packing buffers, thread team
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fn(s, A, B, C);
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* Worst error of C against the bf16 reference over a sample of elements, relative to Σ|a||b|;
 * *dev32 gets the worst deviation from the fp32 product (sgemm's C32) in the same units. */
static double check(const shape *s, const float *A, const float *B, const float *C, const float *C32,
                    double *dev32) {
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    double worst = 0.0;
    *dev32 = 0.0;
    uint64_t r = 12345;
    for (int n = 0; n < 400; n++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int i = (int)((r >> 33) % (uint64_t)s->M), j = (int)((r >> 13) % (uint64_t)s->N);
        if (n < 4) { i = n & 1 ? s->M - 1 : 0; j = n & 2 ? s->N - 1 : 0; }  // the corners too
        double sum = 0.0, sa = 0.0;
        for (int k = 0; k < s->K; k++) {
            float a = s->ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k];
            float b = s->tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j];
            double p = (double)bf16_round(a) * bf16_round(b);
            sum += p;
            sa += fabs(p);
        }
        double got = C[(int64_t)i * s->N + j];
        double e = fabs(got - sum) / sa, d = fabs(got - C32[(int64_t)i * s->N + j]) / sa;
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        if (!(d <= *dev32)) *dev32 = isnan(d) ? INFINITY : d;
    }
    return worst;
}

int main(int argc, char **argv) {
    int reps = 3;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else {
            fprintf(stderr, "usage: %s [--reps N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!gemm_bf16_supported()) {
        printf("gemm_bench: this CPU lacks avx512_bf16; gemm_bf16 cannot run, nothing to compare\n");
        return 0;
    }
    const int T = 2048, V = 50257;
    static const int layer[][2] = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}};  // (OC, IC)
    static const char *lname[] = {"qkv", "attproj", "fc", "fcproj"};
    shape shapes[16];
    int ns = 0;
    char names[16][32];
    for (int pass = 0; pass < 3; pass++) {
        for (int l = 0; l < 5; l++) {
            if (quick && l == 4) continue;
            int OC = l < 4 ? layer[l][0] : V, IC = l < 4 ? layer[l][1] : 768;
            const char *ln = l < 4 ? lname[l] : "lm_head";
            shape *s = &shapes[ns];
            if (pass == 0) *s = (shape){NULL, false, true, T, OC, IC};       // forward
            else if (pass == 1) *s = (shape){NULL, false, false, T, IC, OC}; // dinp
            else *s = (shape){NULL, true, false, OC, IC, T};                 // dweight
            snprintf(names[ns], sizeof names[ns], "%s %s", pass == 0 ? "fwd" : pass == 1 ? "dinp" : "dW", ln);
            s->name = names[ns];
            ns++;
        }
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("threads %d, best of %d after a warm-up; check: bf16 product vs double reference of the bf16-rounded "
           "inputs on 400 elements\n", threads, reps);
    printf("%-15s %2s %6s %6s %6s %10s %10s %7s %9s %9s\n", "product", "op", "M", "N", "K", "sgemm GF/s", "bf16 GF/s",
           "ratio", "err bf16", "dev fp32");
    int failed = 0;
    double sum_ratio_log = 0.0, flop_s = 0.0, t_s = 0.0, t_b = 0.0;
    for (int i = 0; i < ns; i++) {
        const shape *s = &shapes[i];
        size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
        float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4), *C32 = malloc(nc * 4);
        if (!A || !B || !C || !C32) {
            fprintf(stderr, "gemm_bench: out of memory\n");
            return 2;
        }
        fill(A, na, 1 + i);
        fill(B, nb, 100 + i);
        for (size_t k = 0; k < nc; k++) C[k] = NAN;  // beta 0 must overwrite it
        run_bf16(s, A, B, C);
        run_sgemm(s, A, B, C32);
        double dev32, err = check(s, A, B, C, C32, &dev32);
        // bf16 rounding moves a product by ~2^-9 of Σ|a||b| at most; fp32 sums stay far below 1e-5
        bool ok = err <= 1e-5 && dev32 <= 1e-2;
        double ts = best_seconds(run_sgemm, s, A, B, C32, reps);
        double tb = best_seconds(run_bf16, s, A, B, C, reps);
        double flop = 2.0 * s->M * s->N * s->K;
        printf("%-15s %c%c %6d %6d %6d %10.1f %10.1f %6.2fx %9.2g %9.2g%s\n", s->name, s->ta ? 'T' : 'N',
               s->tb ? 'T' : 'N', s->M, s->N, s->K, flop / ts / 1e9, flop / tb / 1e9, ts / tb, err, dev32,
               ok ? "" : "  MISMATCH");
        fflush(stdout);
        failed += !ok;
        sum_ratio_log += log(ts / tb);
        flop_s += flop;
        t_s += ts;
        t_b += tb;
        free(A);
        free(B);
        free(C);
        free(C32);
    }
    printf("%-15s %2s %6s %6s %6s %10.1f %10.1f %6.2fx   (all shapes: total flops / total time; geomean ratio "
           "%.2fx)\n", "total", "", "", "", "", flop_s / t_s / 1e9, flop_s / t_b / 1e9, t_s / t_b,
           exp(sum_ratio_log / ns));
    if (failed) fprintf(stderr, "gemm_bench: %d shapes MISMATCH\n", failed);
    return failed ? 1 : 0;
}
