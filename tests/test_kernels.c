/*
 * test_kernels.c — every kernel of alloy/kernels.h against a naive reference written here in
 * double precision.
 *
 * Forwards are compared with the reference outright. Backwards are checked by finite
 * differences: for a fixed random R the scalar loss is L = Σ out·R, and the gradient from the
 * *_backward kernel is compared with central differences of L taken through the double
 * reference (h = 1e-5, so the differences are good to about 1e-9 and the tolerance measures
 * the fp32 kernel alone). Backwards that ACCUMULATE run on buffers pre-filled with random
 * values and must add to them; those that WRITE run on buffers pre-filled with NaN and must
 * overwrite every element. AdamW is checked step by step against torch.optim.AdamW's formula;
 * the reductions that feed parameter gradients must be bitwise identical for 1, 2 and 3
 * threads. Sizes are small and odd (hd = 10, T = 7, column counts that straddle the kernels'
 * column blocks) so that the whole program runs in well under a second, under sanitizers too.
 *
 * Each comparison prints its worst error as a TAP comment,
 *     max |got - want| / (atol + |want|)      passing when <= rtol,
 * and fails the case when it is over its tolerance.
 */
#include "alloy/base.h"
#include "alloy/kernels.h"
#include "harness.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- test memory: released after every case, so an early REQUIRE return leaks nothing ---- */

enum { TMEM_MAX = 1024 };
static void *tmem_ptrs[TMEM_MAX]; /* live allocations of the current case */
static int tmem_count;            /* how many */

static void *tmem(size_t bytes) {
    if (tmem_count == TMEM_MAX) {
        fprintf(stderr, "test_kernels: more than %d allocations in one case\n", TMEM_MAX);
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

#define CASE(fn)                                                                             \
    do {                                                                                     \
        RUN(fn);                                                                             \
        tmem_release();                                                                      \
    } while (0)

/* ---- inputs ---- */

static alloy_rng rng; /* each case seeds it */

static float *fzeros(size_t n) { return tmem(n * sizeof(float)); }
static double *dzeros(size_t n) { return tmem(n * sizeof(double)); }

static float *ffill(size_t n, float value) {
    float *x = fzeros(n);
    for (size_t i = 0; i < n; i++) x[i] = value;
    return x;
}

static float *frandn(size_t n, double mean, double std) {
    float *x = fzeros(n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(mean + std * alloy_rng_normal(&rng));
    return x;
}

static float *fcopy(const float *x, size_t n) {
    float *y = fzeros(n);
    memcpy(y, x, n * sizeof(float));
    return y;
}

static double *widen(const float *x, size_t n) {
    double *y = dzeros(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* root mean square of x (n) */
static double rms(const double *x, size_t n) {
    return n ? sqrt(dot(x, x, n) / (double)n) : 0.0;
}

/* ---- comparisons ---- */

/* The worst |got[i] - base[i] - want[i]| / (atol + |want[i]|) over n values (base NULL means
 * 0: base is the pre-filled value an accumulating kernel added to); INFINITY if any is NaN.
 * *at receives the index of the worst. */
static double max_err(const float *got, const float *base, const double *want, size_t n, double atol,
                      size_t *at) {
    double worst = 0.0;
    *at = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - (base ? (double)base[i] : 0.0);
        double e = fabs(g - want[i]) / (atol + fabs(want[i]));
        if (!(e <= worst)) { // also true for NaN
            worst = isnan(e) ? INFINITY : e;
            *at = i;
        }
    }
    return worst;
}

/* Expects got - base (base may be NULL) to match want: max_err <= rtol. Returns the error. */
static double check_close_quiet(const char *what, const float *got, const float *base, const double *want,
                                size_t n, double atol, double rtol) {
    size_t at;
    double e = max_err(got, base, want, n, atol, &at);
    EXPECT(e <= rtol, "%s: error %.3e > %.1e at [%zu]: got %.9g (base %.9g), want %.9g", what, e, rtol, at,
           n ? (double)got[at] : 0.0, base && n ? (double)base[at] : 0.0, n ? want[at] : 0.0);
    return e;
}

/* check_close_quiet, and prints the worst error as a TAP comment. */
static void check_close(const char *what, const float *got, const float *base, const double *want, size_t n,
                        double atol, double rtol) {
    double e = check_close_quiet(what, got, base, want, n, atol, rtol);
    printf("#   %-52s %.2e  (tol %.0e)\n", what, e, rtol);
}

/* Expects two float arrays to be bitwise identical. */
static void check_bits(const char *what, const float *a, const float *b, size_t n) {
    size_t i = 0;
    while (i < n && memcmp(&a[i], &b[i], sizeof(float)) == 0) i++;
    EXPECT(i == n, "%s: differs at [%zu]: %.9g vs %.9g", what, i, i < n ? (double)a[i] : 0.0,
           i < n ? (double)b[i] : 0.0);
}

/* ---- finite differences ---- */

typedef double (*loss_fn)(void *ctx);

/* grad (n) = dL/dx by central differences of loss(ctx) in double precision, where ctx reads
 * the array x (which is perturbed one element at a time and restored). */
static void fd_grad(double *grad, double *x, size_t n, loss_fn loss, void *ctx) {
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i], xp = x0 + h, xm = x0 - h;
        x[i] = xp;
        double lp = loss(ctx);
        x[i] = xm;
        double lm = loss(ctx);
        x[i] = x0;
        grad[i] = (lp - lm) / (xp - xm);
    }
}

/* ---- matmul ---- */

/* out (N, OC) = inp (N, IC) · W + bias, with W as layout says; bias may be NULL */
static void ref_matmul(double *out, const double *inp, const double *w, const double *bias, int N, int IC,
                       int OC, alloy_weight_layout layout) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++)
                s += inp[n * IC + i] * (layout == ALLOY_WEIGHT_OUT_IN ? w[o * IC + i] : w[i * OC + o]);
            out[n * OC + o] = s;
        }
}

typedef struct matmul_ctx {
    const double *inp, *w, *bias, *R; /* (N, IC), W, (OC), (N, OC) */
    double *out;                      /* (N, OC) scratch */
    int N, IC, OC;
    alloy_weight_layout layout;
} matmul_ctx;

static double matmul_loss(void *p) {
    matmul_ctx *c = p;
    ref_matmul(c->out, c->inp, c->w, c->bias, c->N, c->IC, c->OC, c->layout);
    return dot(c->out, c->R, (size_t)c->N * c->OC);
}

static const char *layout_name(alloy_weight_layout layout) {
    return layout == ALLOY_WEIGHT_OUT_IN ? "OUT_IN" : "IN_OUT";
}

static void test_matmul_forward(void) {
    enum { N = 7, IC = 13, OC = 70 }; // OC straddles the 64-column dbias block
    alloy_rng_seed(&rng, 101);
    float *inp = frandn(N * IC, 0, 1), *w = frandn(OC * IC, 0, 1), *bias = frandn(OC, 0, 1);
    float *prev = frandn(N * OC, 0, 1), *out = fzeros(N * OC);
    double *inp_d = widen(inp, N * IC), *w_d = widen(w, OC * IC), *bias_d = widen(bias, OC);
    double *want = dzeros(N * OC);
    char name[96];
    for (int layout = 0; layout < 2; layout++)
        for (int has_bias = 0; has_bias < 2; has_bias++)
            for (int beta = 0; beta < 2; beta++) {
                alloy_weight_layout lay = (alloy_weight_layout)layout;
                ref_matmul(want, inp_d, w_d, has_bias ? bias_d : NULL, N, IC, OC, lay);
                if (beta) {
                    for (int i = 0; i < N * OC; i++) want[i] += prev[i];
                    memcpy(out, prev, sizeof(float) * N * OC);
                } else {
                    for (int i = 0; i < N * OC; i++) out[i] = NAN; // beta 0 must not read out
                }
                matmul_forward(out, inp, w, has_bias ? bias : NULL, N, IC, OC, lay, (float)beta, ALLOY_PRECISION_F32);
                snprintf(name, sizeof name, "matmul_forward %s bias=%d beta=%d", layout_name(lay), has_bias,
                         beta);
                check_close(name, out, NULL, want, N * OC, 1e-2, 1e-4);
            }
}

/* The decode kernel against the double reference: both layouts, bias and beta, shapes with
 * tails of 4 rows and of 16 columns, on 1, 2 and 3 threads. */
static void test_matvec_forward(void) {
    static const int shapes[][2] = {{13, 70}, {64, 48}, {37, 33}, {5, 1}, {1, 17}, {300, 260}};
    alloy_rng_seed(&rng, 103);
    char name[128];
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int IC = shapes[k][0], OC = shapes[k][1];
        float *x = frandn(IC, 0, 1), *w = frandn(OC * IC, 0, 1), *bias = frandn(OC, 0, 1);
        float *prev = frandn(OC, 0, 1), *out = fzeros(OC), *scratch = fzeros(3 * OC);
        double *x_d = widen(x, IC), *w_d = widen(w, OC * IC), *bias_d = widen(bias, OC), *want = dzeros(OC);
        for (int layout = 0; layout < 2; layout++)
            for (int has_bias = 0; has_bias < 2; has_bias++)
                for (int beta = 0; beta < 2; beta++)
                    for (int nt = 1; nt <= 3; nt++) {
                        alloy_weight_layout lay = (alloy_weight_layout)layout;
                        ref_matmul(want, x_d, w_d, has_bias ? bias_d : NULL, 1, IC, OC, lay);
                        if (beta) {
                            for (int i = 0; i < OC; i++) want[i] += prev[i];
                            memcpy(out, prev, sizeof(float) * OC);
                        } else {
                            for (int i = 0; i < OC; i++) out[i] = NAN; // beta 0 must not read out
                        }
#ifdef _OPENMP
                        int saved = omp_get_max_threads();
                        omp_set_num_threads(nt);
#endif
                        matvec_forward(out, x, w, has_bias ? bias : NULL, IC, OC, lay, (float)beta, scratch);
#ifdef _OPENMP
                        omp_set_num_threads(saved);
#endif
                        snprintf(name, sizeof name, "matvec_forward %dx%d %s bias=%d beta=%d threads=%d", IC, OC,
                                 layout_name(lay), has_bias, beta, nt);
                        // sums of IC products of unit normals: errors scale with sqrt(IC)
                        check_close(name, out, NULL, want, OC, 1e-2 * sqrt((double)IC), 1e-4);
                    }
    }
}

static void test_matmul_backward(void) {
    enum { N = 7, IC = 13, OC = 70 };
    alloy_rng_seed(&rng, 102);
    float *inp = frandn(N * IC, 0, 1), *w = frandn(OC * IC, 0, 1), *bias = frandn(OC, 0, 1);
    float *dout = frandn(N * OC, 0, 1);
    float *p_inp = frandn(N * IC, 0, 0.5), *p_w = frandn(OC * IC, 0, 0.5), *p_b = frandn(OC, 0, 0.5);
    double *inp_d = widen(inp, N * IC), *w_d = widen(w, OC * IC), *bias_d = widen(bias, OC);
    double *g_inp = dzeros(N * IC), *g_w = dzeros(OC * IC), *g_b = dzeros(OC);
    char name[96];
    for (int layout = 0; layout < 2; layout++) {
        alloy_weight_layout lay = (alloy_weight_layout)layout;
        matmul_ctx c = {inp_d, w_d, bias_d, widen(dout, N * OC), dzeros(N * OC), N, IC, OC, lay};
        fd_grad(g_inp, inp_d, N * IC, matmul_loss, &c);
        fd_grad(g_w, w_d, OC * IC, matmul_loss, &c);
        fd_grad(g_b, bias_d, OC, matmul_loss, &c);

        // the parameters' gradients accumulate into what is already there; dinp is overwritten
        float *dinp = fcopy(p_inp, N * IC), *dw = fcopy(p_w, OC * IC), *db = fcopy(p_b, OC);
        float *no_base = fzeros(N * IC);
        matmul_backward(dinp, dw, db, dout, inp, w, N, IC, OC, lay, ALLOY_PRECISION_F32);
        snprintf(name, sizeof name, "matmul_backward %s dinp (=)", layout_name(lay));
        check_close(name, dinp, no_base, g_inp, N * IC, 1e-2, 1e-4);
        snprintf(name, sizeof name, "matmul_backward %s dweight (+=)", layout_name(lay));
        check_close(name, dw, p_w, g_w, OC * IC, 1e-2, 1e-4);
        snprintf(name, sizeof name, "matmul_backward %s dbias (+=)", layout_name(lay));
        check_close(name, db, p_b, g_b, OC, 1e-2, 1e-4);

        // dinp and dbias are optional
        float *dw2 = fcopy(p_w, OC * IC);
        matmul_backward(NULL, dw2, NULL, dout, inp, w, N, IC, OC, lay, ALLOY_PRECISION_F32);
        snprintf(name, sizeof name, "matmul_backward %s dweight, dinp=dbias=NULL", layout_name(lay));
        check_close(name, dw2, p_w, g_w, OC * IC, 1e-2, 1e-4);
    }
}

/* ---- embedding ---- */

static void ref_embedding(double *out, const int32_t *tokens, const double *wte, const double *wpe, int B,
                          int T, int C) {
    for (int i = 0; i < B * T; i++)
        for (int c = 0; c < C; c++)
            out[i * C + c] = wte[tokens[i] * C + c] + (wpe ? wpe[(i % T) * C + c] : 0.0);
}

typedef struct embedding_ctx {
    const int32_t *tokens;       /* (B, T) */
    const double *wte, *wpe, *R; /* (V, C), (maxT, C), (B·T, C) */
    double *out;                 /* (B·T, C) scratch */
    int B, T, C;
} embedding_ctx;

static double embedding_loss(void *p) {
    embedding_ctx *c = p;
    ref_embedding(c->out, c->tokens, c->wte, c->wpe, c->B, c->T, c->C);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_embedding(void) {
    enum { V = 11, maxT = 12, B = 2, T = 9, C = 37 }; // C straddles the 16-column blocks
    alloy_rng_seed(&rng, 201);
    int32_t tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)alloy_rng_below(&rng, V);
    // repeats within a sequence, across the batch, and at the same position in both
    tokens[1] = tokens[4] = tokens[T + 4] = tokens[T + 8] = 7;
    tokens[0] = tokens[T] = 3;
    float *wte = frandn(V * C, 0, 1), *wpe = frandn(maxT * C, 0, 1), *out = ffill(B * T * C, NAN);
    double *wte_d = widen(wte, V * C), *wpe_d = widen(wpe, maxT * C), *want = dzeros(B * T * C);

    ref_embedding(want, tokens, wte_d, wpe_d, B, T, C);
    embedding_forward(out, tokens, wte, wpe, B, T, C);
    check_close("embedding_forward wte+wpe", out, NULL, want, B * T * C, 1e-6, 1e-6);
    ref_embedding(want, tokens, wte_d, NULL, B, T, C);
    embedding_forward(out, tokens, wte, NULL, B, T, C);
    check_close("embedding_forward wte only", out, NULL, want, B * T * C, 1e-6, 1e-6);

    float *dout = frandn(B * T * C, 0, 1);
    embedding_ctx c = {tokens, wte_d, wpe_d, widen(dout, B * T * C), dzeros(B * T * C), B, T, C};
    double *g_wte = dzeros(V * C), *g_wpe = dzeros(maxT * C);
    fd_grad(g_wte, wte_d, V * C, embedding_loss, &c);
    fd_grad(g_wpe, wpe_d, maxT * C, embedding_loss, &c); // rows >= T get 0: must stay untouched
    float *p_wte = frandn(V * C, 0, 0.5), *p_wpe = frandn(maxT * C, 0, 0.5);
    float *dwte = fcopy(p_wte, V * C), *dwpe = fcopy(p_wpe, maxT * C);
    embedding_backward(dwte, dwpe, dout, tokens, B, T, C);
    check_close("embedding_backward dwte (+=, repeated tokens)", dwte, p_wte, g_wte, V * C, 1e-2, 1e-4);
    check_close("embedding_backward dwpe (+=)", dwpe, p_wpe, g_wpe, maxT * C, 1e-2, 1e-4);
    float *dwte2 = fcopy(p_wte, V * C);
    embedding_backward(dwte2, NULL, dout, tokens, B, T, C);
    check_close("embedding_backward dwte, dwpe=NULL", dwte2, p_wte, g_wte, V * C, 1e-2, 1e-4);
}

/* ---- layernorm and rmsnorm ---- */

static void ref_layernorm(double *out, double *mean, double *rstd, const double *inp, const double *w,
                          const double *b, int N, int C, double eps) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + n * C;
        double m = 0.0, v = 0.0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        double r = 1.0 / sqrt(v / C + eps);
        for (int c = 0; c < C; c++) out[n * C + c] = (x[c] - m) * r * w[c] + b[c];
        mean[n] = m;
        rstd[n] = r;
    }
}

static void ref_rmsnorm(double *out, double *rstd, const double *inp, const double *w, int N, int C,
                        double eps) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + n * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        double r = 1.0 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++) out[n * C + c] = x[c] * r * w[c];
        rstd[n] = r;
    }
}

typedef struct norm_ctx {
    const double *inp, *w, *b, *R; /* (N, C), (C), (C) (layernorm only), (N, C) */
    double *out, *mean, *rstd;     /* scratch: (N, C), (N), (N) */
    int N, C;
    double eps;
    int rms; /* 1: rmsnorm, 0: layernorm */
} norm_ctx;

static double norm_loss(void *p) {
    norm_ctx *c = p;
    if (c->rms)
        ref_rmsnorm(c->out, c->rstd, c->inp, c->w, c->N, c->C, c->eps);
    else
        ref_layernorm(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, c->eps);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}

static void test_layernorm(void) {
    enum { N = 5, C = 70 }; // C straddles the 64-column weight-gradient block
    const float eps = 1e-5f;
    alloy_rng_seed(&rng, 301);
    float *inp = frandn(N * C, 0.5, 2), *w = frandn(C, 1, 0.5), *b = frandn(C, 0, 0.5);
    float *out = ffill(N * C, NAN), *mean = ffill(N, NAN), *rstd = ffill(N, NAN);
    double *inp_d = widen(inp, N * C), *w_d = widen(w, C), *b_d = widen(b, C);
    double *want = dzeros(N * C), *want_mean = dzeros(N), *want_rstd = dzeros(N);
    ref_layernorm(want, want_mean, want_rstd, inp_d, w_d, b_d, N, C, eps);
    layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
    check_close("layernorm_forward out", out, NULL, want, N * C, 1e-2, 3e-5);
    check_close("layernorm_forward mean", mean, NULL, want_mean, N, 1e-6, 1e-5);
    check_close("layernorm_forward rstd", rstd, NULL, want_rstd, N, 1e-6, 1e-5);

    float *dout = frandn(N * C, 0, 1);
    norm_ctx c = {inp_d, w_d, b_d, widen(dout, N * C), dzeros(N * C), dzeros(N), dzeros(N), N, C, eps, 0};
    double *g_inp = dzeros(N * C), *g_w = dzeros(C), *g_b = dzeros(C);
    fd_grad(g_inp, inp_d, N * C, norm_loss, &c);
    fd_grad(g_w, w_d, C, norm_loss, &c);
    fd_grad(g_b, b_d, C, norm_loss, &c);
    float *p_inp = frandn(N * C, 0, 0.5), *p_w = frandn(C, 0, 0.5), *p_b = frandn(C, 0, 0.5);
    float *dinp = fcopy(p_inp, N * C), *dw = fcopy(p_w, C), *db = fcopy(p_b, C);
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    check_close("layernorm_backward dinp (+=)", dinp, p_inp, g_inp, N * C, 1e-2, 1e-4);
    check_close("layernorm_backward dweight (+=)", dw, p_w, g_w, C, 1e-2, 1e-4);
    check_close("layernorm_backward dbias (+=)", db, p_b, g_b, C, 1e-2, 1e-4);
}

static void test_rmsnorm(void) {
    enum { N = 5, C = 70 };
    const float eps = 1e-6f;
    alloy_rng_seed(&rng, 302);
    float *inp = frandn(N * C, 0.5, 2), *w = frandn(C, 1, 0.5);
    float *out = ffill(N * C, NAN), *rstd = ffill(N, NAN);
    double *inp_d = widen(inp, N * C), *w_d = widen(w, C);
    double *want = dzeros(N * C), *want_rstd = dzeros(N);
    ref_rmsnorm(want, want_rstd, inp_d, w_d, N, C, eps);
    rmsnorm_forward(out, rstd, inp, w, N, C, eps);
    check_close("rmsnorm_forward out", out, NULL, want, N * C, 1e-2, 1e-5);
    check_close("rmsnorm_forward rstd", rstd, NULL, want_rstd, N, 1e-6, 1e-5);

    float *dout = frandn(N * C, 0, 1);
    norm_ctx c = {inp_d, w_d, NULL, widen(dout, N * C), dzeros(N * C), NULL, dzeros(N), N, C, eps, 1};
    double *g_inp = dzeros(N * C), *g_w = dzeros(C);
    fd_grad(g_inp, inp_d, N * C, norm_loss, &c);
    fd_grad(g_w, w_d, C, norm_loss, &c);
    float *p_inp = frandn(N * C, 0, 0.5), *p_w = frandn(C, 0, 0.5);
    float *dinp = fcopy(p_inp, N * C), *dw = fcopy(p_w, C);
    rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
    check_close("rmsnorm_backward dinp (+=)", dinp, p_inp, g_inp, N * C, 1e-2, 1e-4);
    check_close("rmsnorm_backward dweight (+=)", dw, p_w, g_w, C, 1e-2, 1e-4);
}

/* ---- rope ---- */

/* Rotates the q and k heads of qkv (B, T, (H + 2·KV)·hd) in place, all in double: for each
 * pair (i, i + hd/2) at position t, angle t·theta^(-2i/hd). */
static void ref_rope(double *qkv, int B, int T, int H, int KV, int hd, double theta) {
    int half = hd / 2, width = (H + 2 * KV) * hd;
    for (int n = 0; n < B * T; n++) {
        int t = n % T;
        for (int h = 0; h < H + KV; h++) {
            double *x = qkv + n * width + h * hd;
            for (int i = 0; i < half; i++) {
                double angle = t * pow(theta, -2.0 * i / hd), cs = cos(angle), sn = sin(angle);
                double a = x[i], b = x[i + half];
                x[i] = a * cs - b * sn;
                x[i + half] = b * cs + a * sn;
            }
        }
    }
}

typedef struct rope_ctx {
    const double *qkv, *R; /* (B, T, width) each */
    double *work;          /* (B, T, width) scratch */
    int B, T, H, KV, hd;
    double theta;
} rope_ctx;

static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->B * c->T * (c->H + 2 * c->KV) * c->hd;
    memcpy(c->work, c->qkv, n * sizeof(double));
    ref_rope(c->work, c->B, c->T, c->H, c->KV, c->hd, c->theta);
    return dot(c->work, c->R, n);
}

static void test_rope_tables(void) {
    enum { maxT = 16 };
    const int hds[] = {10, 64};
    const float thetas[] = {10000.0f, 500000.0f};
    char name[96];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int hd = hds[a], half = hd / 2;
            float *cs = ffill(maxT * half, NAN), *sn = ffill(maxT * half, NAN);
            double *want_c = dzeros(maxT * half), *want_s = dzeros(maxT * half);
            for (int t = 0; t < maxT; t++)
                for (int i = 0; i < half; i++) {
                    double angle = t * pow((double)thetas[b], -2.0 * i / hd);
                    want_c[t * half + i] = cos(angle);
                    want_s[t * half + i] = sin(angle);
                }
            rope_init_tables(cs, sn, maxT, hd, thetas[b]);
            // absolute: the kernel forms the angle in fp32 as Hugging Face does
            snprintf(name, sizeof name, "rope_init_tables cos hd=%d theta=%g", hd, (double)thetas[b]);
            check_close(name, cs, NULL, want_c, maxT * half, 1.0, 2e-6);
            snprintf(name, sizeof name, "rope_init_tables sin hd=%d theta=%g", hd, (double)thetas[b]);
            check_close(name, sn, NULL, want_s, maxT * half, 1.0, 2e-6);
        }
}

static void test_rope(void) {
    enum { B = 2, T = 7, H = 6, KV = 2, hd = 10, W = (H + 2 * KV) * hd, NQKV = B * T * W };
    const float theta = 10000.0f;
    const int half = hd / 2;
    alloy_rng_seed(&rng, 401);
    float *cs = fzeros(T * half), *sn = fzeros(T * half);
    rope_init_tables(cs, sn, T, hd, theta);
    float *qkv0 = frandn(NQKV, 0, 1), *qkv = fcopy(qkv0, NQKV);
    double *want = widen(qkv0, NQKV);
    ref_rope(want, B, T, H, KV, hd, theta);
    rope_forward(qkv, cs, sn, B, T, H, KV, hd);
    check_close("rope_forward q, k (formula)", qkv, NULL, want, NQKV, 1e-2, 1e-5);
    int v_same = 1; // the v heads are not rotated: bit for bit
    for (int n = 0; n < B * T; n++) {
        size_t v0 = (size_t)n * W + (H + KV) * hd;
        v_same &= memcmp(qkv + v0, qkv0 + v0, sizeof(float) * KV * hd) == 0;
    }
    EXPECT(v_same, "rope_forward changed the v heads");

    // backward = transpose: the gradient of Σ rope(x)·R is rope_backward(R)
    float *R = frandn(NQKV, 0, 1), *d = fcopy(R, NQKV);
    double *qkv_d = widen(qkv0, NQKV), *g = dzeros(NQKV);
    rope_ctx c = {qkv_d, widen(R, NQKV), dzeros(NQKV), B, T, H, KV, hd, theta};
    fd_grad(g, qkv_d, NQKV, rope_loss, &c);
    rope_backward(d, cs, sn, B, T, H, KV, hd);
    check_close("rope_backward (finite differences, v untouched)", d, NULL, g, NQKV, 1e-2, 1e-5);

    // and it undoes the forward (the rotation is orthogonal)
    rope_backward(qkv, cs, sn, B, T, H, KV, hd);
    double e = harness_max_rel(qkv, qkv0, NQKV, 1e-2);
    printf("#   %-52s %.2e  (tol %.0e)\n", "rope_backward(rope_forward(x)) = x", e, 1e-4);
    EXPECT(e <= 1e-4, "rope round trip: error %.3e", e);
}

/* ---- attention ---- */

/* The naive algorithm in double: all probabilities att (B, H, T, T) kept; lse (B, H, T). */
static void ref_attention(double *out, double *att, double *lse, const double *qkv, int B, int T, int H, int KV,
                          int hd) {
    int width = (H + 2 * KV) * hd, group = H / KV;
    double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            for (int t = 0; t < T; t++) {
                const double *q = qkv + ((size_t)b * T + t) * width + h * hd;
                double *a = att + (((size_t)b * H + h) * T + t) * T;
                double maxv = -INFINITY, sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const double *k = qkv + ((size_t)b * T + t2) * width + (H + kvh) * hd;
                    double s = 0.0;
                    for (int j = 0; j < hd; j++) s += q[j] * k[j];
                    a[t2] = s * scale;
                    maxv = fmax(maxv, a[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++) sum += (a[t2] = exp(a[t2] - maxv));
                for (int t2 = 0; t2 <= t; t2++) a[t2] /= sum;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0;
                if (lse) lse[((size_t)b * H + h) * T + t] = maxv + log(sum);
                double *o = out + ((size_t)b * T + t) * H * hd + h * hd;
                for (int j = 0; j < hd; j++) {
                    double s = 0.0;
                    for (int t2 = 0; t2 <= t; t2++)
                        s += a[t2] * qkv[((size_t)b * T + t2) * width + (H + KV + kvh) * hd + j];
                    o[j] = s;
                }
            }
        }
}

/* The analytic gradient in double from the stored probabilities: dqkv (WRITTEN). */
static void ref_attention_backward(double *dqkv, const double *dout, const double *qkv, const double *att, int B,
                                   int T, int H, int KV, int hd) {
    int width = (H + 2 * KV) * hd, group = H / KV;
    double scale = 1.0 / sqrt((double)hd);
    memset(dqkv, 0, sizeof(double) * (size_t)B * T * width);
    double *datt = malloc(sizeof(double) * (size_t)T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            for (int t = 0; t < T; t++) {
                const double *a = att + (((size_t)b * H + h) * T + t) * T;
                const double *d = dout + ((size_t)b * T + t) * H * hd + h * hd;
                const double *q = qkv + ((size_t)b * T + t) * width + h * hd;
                double *dq = dqkv + ((size_t)b * T + t) * width + h * hd;
                double dot_sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const double *v = qkv + ((size_t)b * T + t2) * width + (H + KV + kvh) * hd;
                    double *dv = dqkv + ((size_t)b * T + t2) * width + (H + KV + kvh) * hd;
                    double s = 0.0;
                    for (int j = 0; j < hd; j++) s += d[j] * v[j], dv[j] += a[t2] * d[j];
                    datt[t2] = s;
                    dot_sum += s * a[t2];
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    double dpre = a[t2] * (datt[t2] - dot_sum) * scale;
                    const double *k = qkv + ((size_t)b * T + t2) * width + (H + kvh) * hd;
                    double *dk = dqkv + ((size_t)b * T + t2) * width + (H + kvh) * hd;
                    for (int j = 0; j < hd; j++) dq[j] += dpre * k[j], dk[j] += dpre * q[j];
                }
            }
        }
    free(datt);
}

typedef struct attention_ctx {
    const double *qkv, *R; /* (B, T, width), (B, T, H·hd) */
    double *out, *att;     /* scratch: (B, T, H·hd), (B, H, T, T) */
    int B, T, H, KV, hd;
} attention_ctx;

static double attention_loss(void *p) {
    attention_ctx *c = p;
    ref_attention(c->out, c->att, NULL, c->qkv, c->B, c->T, c->H, c->KV, c->hd);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->H * c->hd);
}

/* Checks the q, k and v parts of dqkv against want, separately. */
static void check_dqkv(const float *dqkv, const double *want, int B, int T, int H, int KV, int hd, double rtol,
                       bool long_sums, const char *against) {
    int width = (H + 2 * KV) * hd;
    const char *part_name[3] = {"dq", "dk", "dv"};
    int part_lo[3] = {0, H * hd, (H + KV) * hd}, part_len[3] = {H * hd, KV * hd, KV * hd};
    char name[96];
    for (int part = 0; part < 3; part++) {
        size_t n = (size_t)B * T * part_len[part];
        float *got = fzeros(n);
        double *w = dzeros(n);
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (int j = 0; j < part_len[part]; j++) {
                got[r * part_len[part] + j] = dqkv[r * width + part_lo[part] + j];
                w[r * part_len[part] + j] = want[r * width + part_lo[part] + j];
            }
        snprintf(name, sizeof name, "attention_backward %s B%d T%d H%d KV%d hd%d (%s)", part_name[part], B, T, H,
                 KV, hd, against);
        // long sums (hundreds of keys) are held to the tensor's scale, as in tests/test_model.c
        check_close(name, got, NULL, w, n, long_sums ? rms(w, n) : 1e-2 * fmax(1.0, rms(w, n)), rtol);
    }
}

static void test_attention(void) {
    static const struct {
        int B, T, H, KV, hd;
        double std;   /* of q, k, v */
        double slack; /* tolerance multiplier */
        bool fd;      /* also against finite differences (small cases only) */
    } cfgs[] = {
        {2, 7, 3, 3, 10, 1.0, 1, true},  // multi-head
        {2, 7, 6, 2, 10, 1.0, 1, true},  // grouped-query
        {1, 5, 4, 1, 8, 1.0, 1, true},   // multi-query
        {2, 1, 2, 1, 4, 1.0, 1, true},   // one token
        // scores ~ ±100: expf overflows unless the row max is taken out; the fp32 rounding of
        // such scores (~1e-5) moves the probabilities by ~1e-5 relative, hence the slack
        {1, 6, 4, 2, 6, 6.0, 20, true},
        // several 64-row blocks with ragged ends; hd 64 and 32 take the vectorised paths
        {1, 150, 2, 1, 64, 1.0, 1, false},
        {2, 129, 4, 2, 32, 1.0, 1, false},
        {1, 64, 2, 2, 48, 2.0, 3, false},
        {1, 200, 3, 1, 10, 1.0, 1, false},
    };
    alloy_rng_seed(&rng, 501);
    char name[96];
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        int B = cfgs[k].B, T = cfgs[k].T, H = cfgs[k].H, KV = cfgs[k].KV, hd = cfgs[k].hd;
        double slack = cfgs[k].slack;
        size_t nqkv = (size_t)B * T * (H + 2 * KV) * hd, nout = (size_t)B * T * H * hd;
        size_t natt = (size_t)B * H * T * T, nlse = (size_t)B * H * T;
        float *qkv = frandn(nqkv, 0, cfgs[k].std), *out = ffill(nout, NAN), *lse = ffill(nlse, NAN);
        double *qkv_d = widen(qkv, nqkv), *want = dzeros(nout), *want_att = dzeros(natt), *want_lse = dzeros(nlse);
        ref_attention(want, want_att, want_lse, qkv_d, B, T, H, KV, hd);
        attention_forward(out, lse, qkv, B, T, H, KV, hd);
        snprintf(name, sizeof name, "attention_forward out B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
        check_close(name, out, NULL, want, nout, cfgs[k].fd ? 1e-2 * fmax(1.0, rms(want, nout)) : rms(want, nout),
                    1e-4 * slack);
        snprintf(name, sizeof name, "attention_forward lse B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
        check_close(name, lse, NULL, want_lse, nlse, 1.0, 1e-5 * slack);

        float *dout = frandn(nout, 0, 1);
        double *dout_d = widen(dout, nout);
        float *dqkv = ffill(nqkv, NAN); // WRITTEN
        attention_backward(dqkv, dout, qkv, out, lse, B, T, H, KV, hd);
        double *g = dzeros(nqkv);
        ref_attention_backward(g, dout_d, qkv_d, want_att, B, T, H, KV, hd);
        check_dqkv(dqkv, g, B, T, H, KV, hd, 1e-4 * slack, !cfgs[k].fd, "analytic");
        if (cfgs[k].fd) {
            attention_ctx c = {qkv_d, dout_d, dzeros(nout), dzeros(natt), B, T, H, KV, hd};
            double *fd = dzeros(nqkv);
            fd_grad(fd, qkv_d, nqkv, attention_loss, &c);
            check_dqkv(dqkv, fd, B, T, H, KV, hd, 1e-4 * slack, false, "finite differences");
            // the analytic reference agrees with the finite differences too
            float *gf = fzeros(nqkv);
            for (size_t i = 0; i < nqkv; i++) gf[i] = (float)g[i];
            check_close("reference attention backward vs finite differences", gf, NULL, fd, nqkv,
                        1e-2 * fmax(1.0, rms(fd, nqkv)), 1e-4 * slack);
        }
    }
}

/* ---- activations ---- */

static double ref_gelu(double x) {
    const double k = sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
}

static void test_gelu(void) {
    enum { n = 301 };
    alloy_rng_seed(&rng, 601);
    float *x = frandn(n, 0, 2.5);
    const float edge[] = {0.0f, 1e-4f, -1e-4f, 3.0f, -3.0f, 6.0f, -6.0f, 10.0f, -10.0f};
    memcpy(x, edge, sizeof edge);
    float *out = ffill(n, NAN), *dout = frandn(n, 0, 1), *dinp = ffill(n, NAN); // dinp is WRITTEN
    double *want = dzeros(n), *g = dzeros(n);
    const double h = 1e-5;
    for (int i = 0; i < n; i++) {
        want[i] = ref_gelu(x[i]);
        // elementwise, so the finite difference of Σ gelu(x)·R is one term
        g[i] = (ref_gelu((double)x[i] + h) - ref_gelu((double)x[i] - h)) / (2 * h) * dout[i];
    }
    gelu_forward(out, x, n);
    check_close("gelu_forward (tanh)", out, NULL, want, n, 1e-2, 1e-4);
    gelu_backward(dinp, x, dout, n);
    // 1 - tanh² cancels in fp32 where |x| is large: absolute errors of ~4e-7 are the kernel's best
    check_close("gelu_backward (written)", dinp, NULL, g, n, 5e-2, 1e-4);
}

static void ref_swiglu(double *out, const double *gu, int N, int F) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < F; j++) {
            double gate = gu[i * 2 * F + j], up = gu[i * 2 * F + F + j];
            out[i * F + j] = gate / (1.0 + exp(-gate)) * up;
        }
}

typedef struct swiglu_ctx {
    const double *gu, *R; /* (N, 2F), (N, F) */
    double *out;          /* (N, F) scratch */
    int N, F;
} swiglu_ctx;

static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    ref_swiglu(c->out, c->gu, c->N, c->F);
    return dot(c->out, c->R, (size_t)c->N * c->F);
}

static void test_swiglu(void) {
    enum { N = 5, F = 19 };
    alloy_rng_seed(&rng, 602);
    float *gu = frandn(N * 2 * F, 0, 2.5), *out = ffill(N * F, NAN);
    double *gu_d = widen(gu, N * 2 * F), *want = dzeros(N * F);
    ref_swiglu(want, gu_d, N, F);
    swiglu_forward(out, gu, N, F);
    check_close("swiglu_forward", out, NULL, want, N * F, 1e-2, 1e-5);

    float *dout = frandn(N * F, 0, 1), *dgu = ffill(N * 2 * F, NAN); // WRITTEN
    swiglu_ctx c = {gu_d, widen(dout, N * F), dzeros(N * F), N, F};
    double *g = dzeros(N * 2 * F);
    fd_grad(g, gu_d, N * 2 * F, swiglu_loss, &c);
    swiglu_backward(dgu, dout, gu, N, F);
    check_close("swiglu_backward dgate, dup (written)", dgu, NULL, g, N * 2 * F, 1e-2, 1e-5);
}

static void test_add(void) {
    enum { n = 101 };
    alloy_rng_seed(&rng, 603);
    float *a = frandn(n, 0, 1), *b = frandn(n, 0, 10), *out = ffill(n, NAN), *want = fzeros(n);
    for (int i = 0; i < n; i++) want[i] = a[i] + b[i];
    add_forward(out, a, b, n);
    check_bits("add_forward", out, want, n);
}

/* ---- loss ---- */

/* losses (N) = -log softmax(logits)[target], 0 where target < 0 */
static void ref_crossentropy(double *losses, const double *logits, const int32_t *targets, int N, int V) {
    for (int i = 0; i < N; i++) {
        const double *x = logits + i * V;
        if (targets[i] < 0) {
            losses[i] = 0.0;
            continue;
        }
        double maxv = -INFINITY, sum = 0.0;
        for (int v = 0; v < V; v++) maxv = fmax(maxv, x[v]);
        for (int v = 0; v < V; v++) sum += exp(x[v] - maxv);
        losses[i] = log(sum) + maxv - x[targets[i]];
    }
}

typedef struct ce_ctx {
    const double *logits, *scale; /* (N, V), (N) or NULL for 1 */
    const int32_t *targets;       /* (N) */
    double *losses;               /* (N) scratch */
    int N, V;
} ce_ctx;

/* L = Σ row_scale·loss, whose gradient the kernel writes into dlogits */
static double ce_loss(void *p) {
    ce_ctx *c = p;
    ref_crossentropy(c->losses, c->logits, c->targets, c->N, c->V);
    double s = 0.0;
    for (int i = 0; i < c->N; i++) s += (c->scale ? c->scale[i] : 1.0) * c->losses[i];
    return s;
}

static void test_crossentropy(void) {
    enum { N = 7, V = 17 };
    alloy_rng_seed(&rng, 701);
    const int32_t targets[N] = {3, -1, 0, 16, -100, 5, 9}; // rows 1 and 4 ignored
    float *logits = frandn(N * V, 0, 2);
    for (int v = 0; v < V; v++) logits[3 * V + v] += 1000.0f; // exp would overflow even in double
    float *scale = fzeros(N);
    for (int i = 0; i < N; i++) scale[i] = (float)(0.2 + 1.8 * alloy_rng_uniform(&rng));
    double *logits_d = widen(logits, N * V), *want = dzeros(N);
    ref_crossentropy(want, logits_d, targets, N, V);

    float *losses = ffill(N, NAN);
    crossentropy_forward_backward(losses, NULL, logits, targets, NULL, N, V);
    check_close("crossentropy losses (dlogits NULL)", losses, NULL, want, N, 1e-6, 1e-5);
    EXPECT(losses[1] == 0.0f && losses[4] == 0.0f, "ignored rows have loss %g, %g", (double)losses[1],
           (double)losses[4]);

    char name[96];
    for (int scaled = 0; scaled < 2; scaled++) {
        ce_ctx c = {logits_d, scaled ? widen(scale, N) : NULL, targets, dzeros(N), N, V};
        double *g = dzeros(N * V);
        fd_grad(g, logits_d, N * V, ce_loss, &c);
        const float *rs = scaled ? scale : NULL;
        float *dlogits = ffill(N * V, NAN), *losses2 = ffill(N, NAN); // WRITTEN, ignored rows too
        crossentropy_forward_backward(losses2, dlogits, logits, targets, rs, N, V);
        const char *rs_name = scaled ? "random" : "NULL";
        snprintf(name, sizeof name, "crossentropy dlogits row_scale=%s (written)", rs_name);
        check_close(name, dlogits, NULL, g, N * V, 1e-2, 1e-5);
        check_bits("crossentropy losses with dlogits", losses2, losses, N);

        // in place: dlogits == logits gives the same bits
        float *inplace = fcopy(logits, N * V), *losses3 = ffill(N, NAN);
        crossentropy_forward_backward(losses3, inplace, inplace, targets, rs, N, V);
        snprintf(name, sizeof name, "crossentropy dlogits row_scale=%s in place", rs_name);
        check_close(name, inplace, NULL, g, N * V, 1e-2, 1e-5);
        check_bits("crossentropy in place = out of place (dlogits)", inplace, dlogits, N * V);
        check_bits("crossentropy in place = out of place (losses)", losses3, losses, N);
    }
}

static void test_softmax(void) {
    enum { V = 23 };
    const float temps[] = {1.0f, 0.7f, 2.5f, 0.05f};
    const float offsets[] = {0.0f, 500.0f};
    alloy_rng_seed(&rng, 702);
    float *logits0 = frandn(V, 0, 3), *logits = fzeros(V), *probs = fzeros(V);
    double *want = dzeros(V);
    char name[96];
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < 4; k++) {
            for (int v = 0; v < V; v++) logits[v] = logits0[v] + offsets[o];
            double maxv = -INFINITY, sum = 0.0;
            for (int v = 0; v < V; v++) maxv = fmax(maxv, logits[v]);
            for (int v = 0; v < V; v++) sum += (want[v] = exp(((double)logits[v] - maxv) / temps[k]));
            for (int v = 0; v < V; v++) want[v] /= sum;
            for (int v = 0; v < V; v++) probs[v] = NAN;
            softmax_forward(probs, logits, V, temps[k]);
            snprintf(name, sizeof name, "softmax_forward temperature=%g offset=%g", (double)temps[k],
                     (double)offsets[o]);
            check_close(name, probs, NULL, want, V, 1e-12, 1e-5);
        }
}

/* ---- optimiser ---- */

static void test_adamw(void) {
    static const struct {
        float lr, beta1, beta2, eps, wd, grad_scale;
        int64_t first_step;
    } cfgs[] = {
        {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 1},
        {3e-4f, 0.8f, 0.999f, 1e-6f, 0.0f, 2.0f, 1},
        {1e-3f, 0.9f, 0.99f, 1e-8f, 0.01f, 0.25f, 1000}, // bias corrections near 1
    };
    enum { n = 37, STEPS = 5 };
    alloy_rng_seed(&rng, 801);
    char name[96];
    double worst[3] = {0.0, 0.0, 0.0}; // param change, m, v over every step
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
        // The hyperparameters exactly as the kernel receives them (fp32, widened): torch's
        // 1 - beta2 from a Python float differs from 1 - 0.999f by 1.3e-5 relative, which is
        // the precision of the fp32 API, not of the formula under test.
        double lr = cfgs[k].lr, b1 = cfgs[k].beta1, b2 = cfgs[k].beta2, eps = cfgs[k].eps, wd = cfgs[k].wd;
        double gs = cfgs[k].grad_scale;
        // |p| as at initialisation, so that the fp32 rounding of p stays far below one update
        float *param = frandn(n, 0, 0.05), *m = fzeros(n), *v = fzeros(n);
        double *change = dzeros(n), *md = dzeros(n), *vd = dzeros(n);
        if (cfgs[k].first_step > 1) { // a state as if from earlier steps
            for (int i = 0; i < n; i++) {
                m[i] = (float)(0.1 * alloy_rng_normal(&rng));
                v[i] = (float)(0.01 * alloy_rng_uniform(&rng));
            }
        }
        for (int s = 0; s < STEPS; s++) {
            int64_t step = cfgs[k].first_step + s;
            float *grad = frandn(n, 0, 1), *before = fcopy(param, n);
            // torch.optim.AdamW (single tensor), in double from the kernel's current state
            double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
            for (int i = 0; i < n; i++) {
                double g = (double)grad[i] * gs;
                double p = (double)param[i] * (1.0 - lr * wd); // param.mul_(1 - lr·wd)
                md[i] = m[i] + (g - m[i]) * (1.0 - b1);        // exp_avg.lerp_(grad, 1 - beta1)
                vd[i] = v[i] * b2 + (1.0 - b2) * g * g;        // exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
                double denom = sqrt(vd[i]) / sqrt(bc2) + eps;  // (sqrt(v) / sqrt(bc2)).add_(eps)
                change[i] = p - lr / bc1 * (md[i] / denom) - param[i];
            }
            adamw_update(param, grad, m, v, n, cfgs[k].lr, cfgs[k].beta1, cfgs[k].beta2, cfgs[k].eps,
                         cfgs[k].wd, cfgs[k].grad_scale, step);
            snprintf(name, sizeof name, "adamw_update cfg %zu step %lld: param change", k, (long long)step);
            worst[0] = fmax(worst[0], check_close_quiet(name, param, before, change, n, lr, 1e-4));
            snprintf(name, sizeof name, "adamw_update cfg %zu step %lld: m", k, (long long)step);
            worst[1] = fmax(worst[1], check_close_quiet(name, m, NULL, md, n, 1e-2, 1e-5));
            snprintf(name, sizeof name, "adamw_update cfg %zu step %lld: v", k, (long long)step);
            worst[2] = fmax(worst[2], check_close_quiet(name, v, NULL, vd, n, 1e-9, 1e-5));
        }
    }
    printf("#   %-52s %.2e  (tol %.0e)\n", "adamw_update param change (3 configs x 5 steps)", worst[0], 1e-4);
    printf("#   %-52s %.2e  (tol %.0e)\n", "adamw_update m", worst[1], 1e-5);
    printf("#   %-52s %.2e  (tol %.0e)\n", "adamw_update v", worst[2], 1e-5);
}

static void test_sum_squares(void) {
    const int64_t sizes[] = {0, 1, 5, 63, 64, 65, 129, 1000, 4097};
    alloy_rng_seed(&rng, 802);
    double worst = 0.0;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        float *g = frandn((size_t)n, 0, k % 2 ? 1e3 : 1e-3);
        double want = 0.0;
        for (int64_t i = 0; i < n; i++) want += (double)g[i] * g[i];
        double got = sum_squares(g, n);
        double e = fabs(got - want) / (1e-300 + fabs(want));
        if (n == 0) e = got == 0.0 ? 0.0 : INFINITY;
        worst = fmax(worst, e);
        EXPECT(e <= 1e-12, "sum_squares n=%lld: %.17g, want %.17g", (long long)n, got, want);
    }
    printf("#   %-52s %.2e  (tol %.0e)\n", "sum_squares (9 sizes, 0 to 4097)", worst, 1e-12);
}

/* ---- thread-count independence ---- */

#ifdef _OPENMP
typedef struct det_inputs {
    int N, C, OC, V, B, T;                /* rows, channels, matmul OC, vocab, batch, time */
    const float *inp, *w, *dout;          /* norms: (N, C), (C), (N, C) */
    const float *mean, *rstd, *rms_rstd;  /* (N) each, from the forwards */
    const float *mm_w, *mm_dout;          /* matmul (OC, C) and (N, OC); its input is inp */
    const float *emb_dout;                /* (B·T, C), also the sum_squares input */
    const int32_t *tokens;                /* (B, T) */
} det_inputs;

typedef struct det_outputs {
    float *ln_dinp, *ln_dw, *ln_db; /* (N, C), (C), (C) */
    float *rms_dinp, *rms_dw;       /* (N, C), (C) */
    float *mm_db, *mm_dw;           /* (OC), (OC, C): dw is BLAS's, not compared */
    float *dwte, *dwpe;             /* (V, C), (T, C) */
    double ss;                      /* sum_squares(emb_dout) */
} det_outputs;

/* The reductions that feed parameter gradients (and sum_squares), with the current thread count. */
static void det_run(det_outputs *o, const det_inputs *in) {
    int N = in->N, C = in->C;
    layernorm_backward(o->ln_dinp, o->ln_dw, o->ln_db, in->dout, in->inp, in->w, in->mean, in->rstd, N, C);
    rmsnorm_backward(o->rms_dinp, o->rms_dw, in->dout, in->inp, in->w, in->rms_rstd, N, C);
    matmul_backward(NULL, o->mm_dw, o->mm_db, in->mm_dout, in->inp, in->mm_w, N, C, in->OC,
                    ALLOY_WEIGHT_OUT_IN, ALLOY_PRECISION_F32);
    embedding_backward(o->dwte, o->dwpe, in->emb_dout, in->tokens, in->B, in->T, C);
    o->ss = sum_squares(in->emb_dout, (int64_t)in->B * in->T * C);
}

#endif

static void test_thread_count_independence(void) {
#ifdef _OPENMP
    enum { N = 37, C = 200, OC = 300, V = 19, B = 3, T = 17 };
    alloy_rng_seed(&rng, 901);
    int32_t tokens[B * T];
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)alloy_rng_below(&rng, V);
    float *inp = frandn(N * C, 0.3, 2), *w = frandn(C, 1, 0.5), *dout = frandn(N * C, 0, 3);
    float *mean = fzeros(N), *rstd = fzeros(N), *rms_rstd = fzeros(N), *tmp = fzeros(N * C);
    layernorm_forward(tmp, mean, rstd, inp, w, w, N, C, 1e-5f);
    rmsnorm_forward(tmp, rms_rstd, inp, w, N, C, 1e-5f);
    det_inputs in = {N, C, OC, V, B, T, inp, w, dout, mean, rstd, rms_rstd, frandn(OC * C, 0, 1),
                     frandn(N * OC, 0, 5), frandn(B * T * C, 0, 2), tokens};
    // pre-filled the same way for every run
    float *p_nc = frandn(N * C, 0, 1), *p_c = frandn(C, 0, 1), *p_oc = frandn(OC, 0, 1);
    float *p_occ = frandn(OC * C, 0, 1), *p_vc = frandn(V * C, 0, 1), *p_tc = frandn(T * C, 0, 1);
    det_outputs out[3];
    int saved = omp_get_max_threads();
    for (int k = 0; k < 3; k++) {
        det_outputs o = {fcopy(p_nc, N * C), fcopy(p_c, C), fcopy(p_c, C), fcopy(p_nc, N * C), fcopy(p_c, C),
                         fcopy(p_oc, OC), fcopy(p_occ, OC * C), fcopy(p_vc, V * C), fcopy(p_tc, T * C), 0.0};
        omp_set_num_threads(k + 1);
        det_run(&o, &in);
        out[k] = o;
    }
    omp_set_num_threads(saved);
    char name[96];
    for (int k = 1; k < 3; k++) {
#define SAME(field, n)                                                                       \
    do {                                                                                     \
        snprintf(name, sizeof name, "%s: 1 vs %d threads", #field, k + 1);                   \
        check_bits(name, out[0].field, out[k].field, n);                                     \
    } while (0)
        SAME(ln_dinp, N * C);
        SAME(ln_dw, C);
        SAME(ln_db, C);
        SAME(rms_dinp, N * C);
        SAME(rms_dw, C);
        SAME(mm_db, OC);
        SAME(dwte, V * C);
        SAME(dwpe, T * C);
#undef SAME
        EXPECT(memcmp(&out[0].ss, &out[k].ss, sizeof(double)) == 0,
               "sum_squares: %.17g with 1 thread, %.17g with %d", out[0].ss, out[k].ss, k + 1);
    }
    printf("#   layernorm/rmsnorm grads, matmul dbias, embedding grads, sum_squares:\n"
           "#   the same bits for 1, 2 and 3 threads\n");
#else
    printf("#   skipped: built without OpenMP\n");
#endif
}

/* ---- the checks themselves ---- */

/* The comparison must catch a small wrong value, a NaN, and a write where an add was due. */
static void test_checks_can_fail(void) {
    enum { n = 8 };
    float got[n], base[n];
    double want[n];
    for (int i = 0; i < n; i++) {
        base[i] = 0.5f * (float)(i - 3);
        want[i] = 1.0 + i;
        got[i] = (float)(base[i] + want[i]);
    }
    size_t at;
    EXPECT(max_err(got, base, want, n, 1e-4, &at) <= 1e-6, "an exact match fails");
    got[5] = (float)((base[5] + want[5]) * (1.0 + 1e-3));
    EXPECT(max_err(got, base, want, n, 1e-4, &at) > 1e-4 && at == 5, "a 1e-3 error passes a 1e-4 tolerance");
    got[5] = NAN;
    EXPECT(max_err(got, base, want, n, 1e-4, &at) == INFINITY && at == 5, "a NaN passes");
    for (int i = 0; i < n; i++) got[i] = (float)want[i]; // written, not accumulated
    EXPECT(max_err(got, base, want, n, 1e-4, &at) > 1e-1, "a missing accumulation passes");
}

int main(void) {
    CASE(test_checks_can_fail);
    CASE(test_matmul_forward);
    CASE(test_matvec_forward);
    CASE(test_matmul_backward);
    CASE(test_embedding);
    CASE(test_layernorm);
    CASE(test_rmsnorm);
    CASE(test_rope_tables);
    CASE(test_rope);
    CASE(test_attention);
    CASE(test_gelu);
    CASE(test_swiglu);
    CASE(test_add);
    CASE(test_crossentropy);
    CASE(test_softmax);
    CASE(test_adamw);
    CASE(test_sum_squares);
    CASE(test_thread_count_independence);
    return harness_exit();
}
