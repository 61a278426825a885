/*
 * quant_bench.c — speed of alloy_quant_matvec / alloy_quant_matmul per weight format, against
 * OpenBLAS on the fp32 matrix (cblas_sgemv / cblas_sgemm) timed in the same run.
 *
 *   build/bench/quant_bench [--reps N] [--quick]
 *
 * Shapes are a Llama-7B layer's: (rows, cols) = (4096, 4096) attention and (11008, 4096) FFN up
 * (--quick: 2048 x 2048 only); matmul over n = 64 tokens (a prefill chunk). Before timing, each
 * format's matvec and matmul are checked against sgemv / sgemm of its dequantised weights
 * (relative L2 error: 1e-5 for f32 / f16, 2e-2 for the 8-bit-x formats) and each matmul row
 * against the matvec bitwise; a mismatch exits 1. Timings are the best of --reps (default 5)
 * after a warm-up. Printed per format: weight GB/s and GFLOP/s of the matvec and its speed-up
 * over sgemv; GFLOP/s of the matmul, its speed-up over sgemm, and over 64 matvecs. Ratios only:
 * nothing is asserted about speed. Threads: OpenMP's (OMP_NUM_THREADS) for both.
 */
#include "alloy/quant.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fill(float *p, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[i] = scale * ((float)((s >> 40) * (1.0 / 8388608.0)) - 1.0f);
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "quant_bench: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

/* ‖a - b‖ / ‖b‖ */
static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

typedef struct run {
    alloy_qtype t;
    const void *W;
    const float *Wf;
    const float *x;
    float *y;
    int n, rows, cols;
} run;

static void do_matvec(const run *r) { alloy_quant_matvec(r->t, r->y, r->W, r->x, r->rows, r->cols); }
static void do_matmul(const run *r) { alloy_quant_matmul(r->t, r->y, r->W, r->x, r->n, r->rows, r->cols); }
static void do_matvecs(const run *r) {
    for (int u = 0; u < r->n; u++)
        alloy_quant_matvec(r->t, r->y + (size_t)u * r->rows, r->W, r->x + (size_t)u * r->cols, r->rows, r->cols);
}
static void do_sgemv(const run *r) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, r->rows, r->cols, 1.0f, r->Wf, r->cols, r->x, 1, 0.0f, r->y, 1);
}
static void do_sgemm(const run *r) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r->n, r->rows, r->cols, 1.0f, r->x, r->cols, r->Wf, r->cols,
                0.0f, r->y, r->rows);
}

static double best_seconds(void (*fn)(const run *), const run *r, int reps) {
    fn(r);
    double best = INFINITY;
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        fn(r);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

int main(int argc, char **argv) {
    int reps = 5;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else {
            fprintf(stderr, "usage: quant_bench [--reps N] [--quick]\n");
            return 2;
        }
    }
    static const int shapes[][2] = {{4096, 4096}, {11008, 4096}};
    const int nshapes = quick ? 1 : 2, n = 64;
    static const alloy_qtype types[] = {ALLOY_QTYPE_F32, ALLOY_QTYPE_F16, ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0,
                                        ALLOY_QTYPE_Q4_K};
    printf("# kernels: %s; best of %d\n", alloy_quant_isa_name(alloy_quant_isa_current()), reps);
    int failed = 0;
    for (int s = 0; s < nshapes; s++) {
        const int rows = quick ? 2048 : shapes[s][0], cols = quick ? 2048 : shapes[s][1];
        const size_t nw = (size_t)rows * cols;
        float *Wf = xmalloc(nw * sizeof(float)), *Wd = xmalloc(nw * sizeof(float));
        float *X = xmalloc((size_t)n * cols * sizeof(float));
        float *Y = xmalloc((size_t)n * rows * sizeof(float)), *R = xmalloc((size_t)n * rows * sizeof(float));
        float *Y1 = xmalloc((size_t)n * rows * sizeof(float));
        fill(Wf, nw, 1 + s, 0.05f);
        fill(X, (size_t)n * cols, 7 + s, 1.0f);
        run ref = {.t = ALLOY_QTYPE_F32, .Wf = Wf, .x = X, .y = R, .n = n, .rows = rows, .cols = cols};
        const double t_gemv = best_seconds(do_sgemv, &ref, reps), t_gemm = best_seconds(do_sgemm, &ref, reps);
        const double flop_v = 2.0 * nw, flop_m = flop_v * n;
        printf("\n## %d x %d (matmul: %d tokens)\n", rows, cols, n);
        printf("%-6s %9s %8s %8s %8s | %8s %8s %10s\n", "format", "MB", "GB/s", "GFLOP/s", "vs gemv", "GFLOP/s",
               "vs gemm", "vs matvecs");
        printf("%-6s %9.1f %8.1f %8.1f %8s | %8.1f %8s %10s\n", "sgemv", nw * 4 / 1e6, nw * 4 / t_gemv / 1e9,
               flop_v / t_gemv / 1e9, "1.00", flop_m / t_gemm / 1e9, "1.00", "-");
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
            const alloy_qtype t = types[k];
            const size_t bytes = (size_t)rows * alloy_quant_row_bytes(t, cols);
            void *W = xmalloc(bytes);
            alloy_quantize(t, W, Wf, rows, cols);
            for (int r = 0; r < rows; r++)
                alloy_dequantize_row(t, Wd + (size_t)r * cols, (const uint8_t *)W + (size_t)r * (bytes / rows), cols);
            // check: against OpenBLAS on the dequantised weights, and matmul rows against matvec
            run chk = {.t = t, .W = W, .Wf = Wd, .x = X, .y = R, .n = n, .rows = rows, .cols = cols};
            do_sgemm(&chk);
            run r = {.t = t, .W = W, .x = X, .y = Y, .n = n, .rows = rows, .cols = cols};
            do_matmul(&r);
            run rv = r;
            rv.y = Y1;
            do_matvecs(&rv);
            const double tol = (t == ALLOY_QTYPE_F32 || t == ALLOY_QTYPE_F16) ? 1e-5 : 2e-2;
            const double err = rel_l2(Y, R, (size_t)n * rows);
            const bool same = memcmp(Y, Y1, (size_t)n * rows * sizeof(float)) == 0;
            if (!(err <= tol) || !same) {
                printf("%-6s MISMATCH: relative L2 error %.3g (tolerance %.0e), matmul %s matvec\n",
                       alloy_qtype_name(t), err, tol, same ? "==" : "!=");
                failed++;
                free(W);
                continue;
            }
            const double tv = best_seconds(do_matvec, &r, reps), tm = best_seconds(do_matmul, &r, reps);
            const double tvs = best_seconds(do_matvecs, &rv, reps > 2 ? 2 : reps);
            printf("%-6s %9.1f %8.1f %8.1f %8.2f | %8.1f %8.2f %10.2f   (L2 err %.1e)\n", alloy_qtype_name(t),
                   bytes / 1e6, bytes / tv / 1e9, flop_v / tv / 1e9, t_gemv / tv, flop_m / tm / 1e9, t_gemm / tm,
                   tvs / tm, err);
            free(W);
        }
        free(Wf), free(Wd), free(X), free(Y), free(R), free(Y1);
    }
    return failed ? 1 : 0;
}
