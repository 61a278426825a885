/*
 * gemm_bf16.c — our own bf16 matrix product for AVX-512 BF16 CPUs (vdpbf16ps): fp32 inputs
 * rounded to bf16 while packed, products summed in fp32. The sgemm of the linear layers in
 * BF16 precision (alloy/kernels.h; matmul.c is the fp32 path through OpenBLAS).
 *
 * The shape is GotoBLAS/BLIS's, with bf16 pairs along K as the packed element:
 *
 *   for each K block of at most KC_MAX (fixed by K alone, so the summation order never changes)
 *     for each N block of whole panels, at most NC_BYTES packed (one block for GPT-2 widths)
 *       pack B (kc × nc) into 48-column panels [pair][48 columns]: shared, every thread a part
 *       tasks, taken dynamically by the threads: up to MT rows of C (× a range of B panels
 *       when M is small)
 *         pack the task's rows of A (mt × kc) into 8-row panels [pair][8 rows]
 *         for each group of B panels that fits L2 (L2_B_BYTES)
 *           for each 8-row A panel (stays in L1), for each 48-column B panel (from L2):
 *             microkernel: 8 × 48 tile = 24 zmm fp32 accumulators; per k-pair 3 loads of B,
 *             8 broadcast A pairs, 24 vdpbf16ps; the C tile is prefetched at its start
 *
 * A "pair" is two bf16 of consecutive k in one 32-bit word (lower half = even k), the operand
 * vdpbf16ps wants; an odd K is padded with a zero. Conversions always go through vcvtne2ps2bf16
 * (round to nearest even, NaN stays NaN, denormals to zero), with masked loads at the edges.
 * Sources whose rows run along K (A not transposed, B transposed) are converted 16 rows × 32 k
 * at a time and transposed as 16 × 16 words in registers; sources whose rows run along M or N
 * are converted two k rows at a time and interleaved with one vpermw.
 *
 * Threads split rows of C (or column panels), never K: every element of C is computed by the
 * same instruction sequence whatever the thread count or the task order, so results are
 * bitwise reproducible. The first K block applies beta (beta 0: C is only written); the later
 * ones add alpha·(their part) to C.
 * Scratch (packed panels) comes from a pool of contexts kept for the life of the process: no
 * allocation per call once warm, safe for concurrent callers, and always reachable (no leak).
 */
#include "alloy/kernels.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 8   /* rows of the microkernel tile */
#define NR 48  /* columns of the microkernel tile (3 zmm) */
#define KC_MAX 768   /* k per K block (even): 384 pairs · 48 columns · 4 B = 72 KB per B panel */
#define NC_BYTES (12u << 20)        /* packed B block, shared by the threads, lives in L3 */
#define L2_B_BYTES (576u << 10)     /* B panels walked per A panel, kept in the 1 MB L2 */
#define PF_PAIRS 12   /* prefetch distance of pack_across_k, in k pairs */
#define MT 128       /* rows of C per task (a multiple of 16) */

#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

bool gemm_bf16_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
}

/* ---- scratch: a pool of contexts, each the buffers of one call in flight ---- */

typedef struct gemm_ctx {
    struct gemm_ctx *next;  /* in the pool's list of all contexts */
    int busy;               /* held by a call */
    uint32_t *b;            /* packed B block, shared by the threads */
    size_t b_cap;           /* its capacity in words */
    uint32_t **a;           /* packed A block of each thread */
    size_t a_cap;           /* capacity of each, in words */
    int a_count;            /* how many threads have one */
} gemm_ctx;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static gemm_ctx *pool;  /* every context ever made; global, so reachable until exit */

static void *alloc64(size_t words) {
    size_t bytes = (words * 4 + 63) / 64 * 64;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) abort();  // out of memory for a few MB of scratch: nothing sensible to return
    return p;
}

/* A free context whose buffers hold b_words and nthreads × a_words. */
static gemm_ctx *ctx_acquire(size_t b_words, size_t a_words, int nthreads) {
    pthread_mutex_lock(&pool_lock);
    gemm_ctx *c = pool;
    while (c && c->busy) c = c->next;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) abort();
        c->next = pool;
        pool = c;
    }
    c->busy = 1;
    pthread_mutex_unlock(&pool_lock);
    if (c->b_cap < b_words) {
        free(c->b);
        c->b = alloc64(b_words);
        c->b_cap = b_words;
    }
    if (c->a_count < nthreads || c->a_cap < a_words) {
        for (int t = 0; t < c->a_count; t++) free(c->a[t]);
        free(c->a);
        int n = nthreads > c->a_count ? nthreads : c->a_count;
        size_t w = a_words > c->a_cap ? a_words : c->a_cap;
        c->a = malloc(sizeof(uint32_t *) * (size_t)n);
        if (!c->a) abort();
        for (int t = 0; t < n; t++) c->a[t] = alloc64(w);
        c->a_count = n;
        c->a_cap = w;
    }
    return c;
}

static void ctx_release(gemm_ctx *c) {
    pthread_mutex_lock(&pool_lock);
    c->busy = 0;
    pthread_mutex_unlock(&pool_lock);
}

/* ---- packing ---- */

/* Where packed pairs go: panels of `width` lanes (MR rows of A or NR columns of B), each
 * panel [np pairs][width] words; `panels` of them. */
typedef struct {
    uint32_t *base;
    int width;   /* MR or NR */
    int np;      /* pairs per panel */
    int panels;  /* panels in the buffer */
} pack_dst;

/* Stores 16 lanes l0..l0+15 (l0 a multiple of 16) of pair p. */
TARGET_BF16 static inline void dst_store16(const pack_dst *d, int l0, int p, __m512i v) {
    if (d->width % 16 == 0) {
        int q = l0 / d->width;
        _mm512_store_si512((void *)(d->base + ((size_t)q * d->np + p) * d->width + l0 % d->width), v);
    } else {  // width 8: two panels
        int q = l0 / 8;
        _mm256_store_si256((__m256i *)(d->base + ((size_t)q * d->np + p) * 8), _mm512_castsi512_si256(v));
        if (q + 1 < d->panels)
            _mm256_store_si256((__m256i *)(d->base + ((size_t)(q + 1) * d->np + p) * 8),
                               _mm512_extracti64x4_epi64(v, 1));
    }
}

static inline __mmask16 mask_first(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* 16 × 16 transpose of 32-bit words: r[i] word j -> r[j] word i. */
TARGET_BF16 static inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // now r[4i+j], 128-bit lane q = rows 4i..4i+3 of column 4q+j
    for (int j = 0; j < 4; j++) {
        __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);
        __m512i u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xDD);
        __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
        __m512i u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        t[8 + j] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
        t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* Packs lanes whose source rows run along k: lane l is src + l·ld, k = 0..kc-1 of it.
 * n lanes are real; the rest of the panels is zero. */
TARGET_BF16 static void pack_along_k(const pack_dst *d, const float *src, int64_t ld, int n, int kc) {
    int lanes = d->panels * d->width;
    for (int l0 = 0; l0 < lanes; l0 += 16) {
        for (int k0 = 0; k0 < kc; k0 += 32) {
            __mmask16 mlo = mask_first(kc - k0), mhi = mask_first(kc - k0 - 16);
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                if (l0 + i < n) {
                    const float *s = src + (int64_t)(l0 + i) * ld + k0;
                    if (k0 + 128 < kc) {  // 16 rows at once: help the prefetchers along
                        _mm_prefetch((const char *)(s + 96), _MM_HINT_T0);
                        _mm_prefetch((const char *)(s + 112), _MM_HINT_T0);
                    }
                    __m512 lo = _mm512_maskz_loadu_ps(mlo, s);
                    __m512 hi = _mm512_maskz_loadu_ps(mhi, s + 16);
                    r[i] = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                } else {
                    r[i] = _mm512_setzero_si512();
                }
            }
            transpose16(r);
            int pend = (kc - k0 + 1) / 2;  // pairs left from k0
            if (pend > 16) pend = 16;
            for (int j = 0; j < pend; j++) dst_store16(d, l0, k0 / 2 + j, r[j]);
        }
    }
}

/* Packs lanes whose source rows run along them: k row k is src + k·ld, lane l at column l;
 * n lanes are real, kc rows of k. Two k rows at a time, swept along: the reads stay sequential. */
TARGET_BF16 static void pack_across_k(const pack_dst *d, const float *src, int64_t ld, int n, int kc) {
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                           22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    int lanes = d->panels * d->width;
    int np = (kc + 1) / 2;
    for (int p = 0; p < np; p++) {
        const float *s0 = src + (int64_t)(2 * p) * ld, *s1 = s0 + ld;
        bool odd = 2 * p + 1 == kc;  // the last pair of an odd kc: the second k is zero
        if (2 * p + 2 * PF_PAIRS + 1 < kc) {
            // short rows far apart (a task's columns of a tall matrix) defeat the hardware
            // prefetchers: ask for the rows PF_PAIRS pairs ahead
            const float *f0 = s0 + 2 * PF_PAIRS * ld, *f1 = f0 + ld;
            for (int l = 0; l < n; l += 16) {
                _mm_prefetch((const char *)(f0 + l), _MM_HINT_T0);
                _mm_prefetch((const char *)(f1 + l), _MM_HINT_T0);
            }
        }
        for (int l0 = 0; l0 < lanes; l0 += 16) {
            __mmask16 m = mask_first(n - l0);
            __m512 lo = _mm512_maskz_loadu_ps(m, s0 + l0);
            __m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, s1 + l0);
            __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            dst_store16(d, l0, p, _mm512_permutexvar_epi16(inter, v));
        }
    }
}

/* ---- microkernel ---- */

/* C tile (mr ≤ 8 rows, nr ≤ 48 columns at c, row stride ldc) gets the 8 × 48 product of an A
 * panel and a B panel over np pairs: C = alpha·AB + beta·C when first (beta 0: C not read),
 * else C += alpha·AB. */
TARGET_BF16 static void kernel_8x48(int np, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc, int mr,
                                    int nr, float alpha, float beta, int first) {
    // the C tile is wanted only at the end: fetch it now, under the products
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j += 16) _mm_prefetch((const char *)(c + i * ldc + j), _MM_HINT_T0);
    __m512 acc[MR][3];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < 3; j++) acc[i][j] = _mm512_setzero_ps();
    for (int p = 0; p < np; p++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(b + p * NR));
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + p * NR + 16));
        __m512bh b2 = (__m512bh)_mm512_load_si512((const void *)(b + p * NR + 32));
        for (int i = 0; i < MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[p * MR + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], b0, ai);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], b1, ai);
            acc[i][2] = _mm512_dpbf16_ps(acc[i][2], b2, ai);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 mk[3] = {mask_first(nr), mask_first(nr - 16), mask_first(nr - 32)};
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < 3; j++) {
            if (!mk[j]) break;
            __m512 r;
            if (first && beta == 0.0f)
                r = _mm512_mul_ps(va, acc[i][j]);
            else if (first)
                r = _mm512_fmadd_ps(va, acc[i][j], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mk[j], ci + 16 * j)));
            else
                r = _mm512_fmadd_ps(va, acc[i][j], _mm512_maskz_loadu_ps(mk[j], ci + 16 * j));
            _mm512_mask_storeu_ps(ci + 16 * j, mk[j], r);
        }
    }
}

/* ---- driver ---- */

static int imin(int a, int b) { return a < b ? a : b; }

TARGET_BF16 static void gemm_bf16_avx512(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                                         int ldc) {
    // K blocks of nearly equal even size, no larger than KC_MAX: they depend on K alone, which
    // fixes the summation order of every element whatever the thread count
    int kblocks = (K + KC_MAX - 1) / KC_MAX;
    int kc_max = ((K + kblocks - 1) / kblocks + 1) & ~1;
    int np_max = kc_max / 2;
    size_t panel_words = (size_t)NR * np_max;
    // N blocks: the packed B block (shared by the threads) stays under NC_BYTES
    int npan_total = (N + NR - 1) / NR;
    int npan_fit = (int)(NC_BYTES / (panel_words * 4));
    if (npan_fit < 1) npan_fit = 1;
    int nblocks = (npan_total + npan_fit - 1) / npan_fit;
    int npan_blk = (npan_total + nblocks - 1) / nblocks;
    // B panels walked per A panel: as many as stay in L2 next to the task's A rows
    int group = (int)(L2_B_BYTES / (panel_words * 4));
    if (group < 1) group = 1;

    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (2.0 * M * N * K < 4e6) nt = 1;  // too small to pay for waking the team
#endif
    // tasks: mt rows of C (at most MT, fewer so that every thread gets about 4) × a range of B
    // panels, ranges of panels only when rows are too few
    int mt = (M + 4 * nt - 1) / (4 * nt);
    mt = mt < 32 ? 32 : mt > MT ? MT : (mt + 15) / 16 * 16;
    int mtasks = (M + mt - 1) / mt;
    int ntasks = 1;
    if (mtasks < 4 * nt) ntasks = imin((4 * nt + mtasks - 1) / mtasks, npan_blk);
    int tasks = mtasks * ntasks;
    if (nt > tasks) nt = tasks;
    gemm_ctx *ctx = ctx_acquire((size_t)npan_blk * panel_words, (size_t)MT * np_max, nt);

#pragma omp parallel num_threads(nt)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        uint32_t *abuf = ctx->a[t];
        for (int k0 = 0; k0 < K; k0 += kc_max) {
            int kc = imin(kc_max, K - k0);
            int np = (kc + 1) / 2;
            int first = k0 == 0;
            for (int n0 = 0; n0 < N; n0 += npan_blk * NR) {
                int nc = imin(npan_blk * NR, N - n0);
                int npan = (nc + NR - 1) / NR;
                // pack B (kc × nc): each thread a run of whole panels
#pragma omp for schedule(static)
                for (int part = 0; part < nt; part++) {
                    int q0 = npan * part / nt, q1 = npan * (part + 1) / nt;
                    if (q0 == q1) continue;
                    pack_dst d = {ctx->b + (size_t)q0 * NR * np, NR, np, q1 - q0};
                    int j0 = n0 + q0 * NR, w = imin((q1 - q0) * NR, N - j0);
                    if (trans_b)
                        pack_along_k(&d, B + (int64_t)j0 * ldb + k0, ldb, w, kc);
                    else
                        pack_across_k(&d, B + (int64_t)k0 * ldb + j0, ldb, w, kc);
                }
                // tasks in any order on any thread: each C tile is computed the same way
#pragma omp for schedule(dynamic, 1)
                for (int task = 0; task < tasks; task++) {
                    int i0 = (task / ntasks) * mt, mc = imin(mt, M - i0);
                    int nq = task % ntasks, q0 = npan * nq / ntasks, q1 = npan * (nq + 1) / ntasks;
                    int mpan = (mc + MR - 1) / MR;
                    if (q0 == q1) continue;
                    pack_dst d = {abuf, MR, np, mpan};
                    if (trans_a)
                        pack_across_k(&d, A + (int64_t)k0 * lda + i0, lda, mc, kc);
                    else
                        pack_along_k(&d, A + (int64_t)i0 * lda + k0, lda, mc, kc);
                    for (int g0 = q0; g0 < q1; g0 += group) {
                        int g1 = imin(g0 + group, q1);
                        for (int ip = 0; ip < mpan; ip++) {
                            int ii = i0 + ip * MR, mr = imin(MR, M - ii);
                            const uint32_t *ap = abuf + (size_t)ip * MR * np;
                            for (int q = g0; q < g1; q++) {
                                int jj = n0 + q * NR, nr = imin(NR, N - jj);
                                kernel_8x48(np, ap, ctx->b + (size_t)q * NR * np, C + (int64_t)ii * ldc + jj,
                                            ldc, mr, nr, alpha, beta, first);
                            }
                        }
                    }
                }
            }
        }
    }
    ctx_release(ctx);
}

void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {  // no products: C = beta·C (beta 0 writes zeros)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(int64_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(int64_t)i * ldc + j];
        return;
    }
    gemm_bf16_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
