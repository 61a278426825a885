/*
 * quant_matvec.c — the products that read the quantised formats for inference:
 * alloy_quant_matvec (decode, one token), alloy_quant_matmul (prefill, n tokens) and the team
 * decode's alloy_quant_matvec_team; the choice of kernels (alloy_quant_isa_set), the chunks
 * of x and the threads. The formats are in quant_format.c (documented in alloy/quant.h), the
 * kernels in quant_ref.c (scalar), quant_avx512.c and quant_avx2.c.
 *
 * How a product runs (quantised weights):
 *
 *   for each block of up to XT tokens (32; matvec: 1)
 *     for each chunk of up to CHUNK columns (2048)
 *       quantise the chunk of x of each token to 8 bits (OpenMP over tokens), into a buffer
 *       on the caller's stack laid out the way the weight loads want it (xq32_group, xqk_block)
 *       OpenMP over rows: the row's chunk of weights (in L1 after the first tile) against tiles
 *       of 8, 4, 2, 1 tokens: y[t][r] += the chunk's partial sum
 *
 * F32 and F16 weights need no quantised x: OpenMP over tiles of 4 rows, each against tiles of
 * 4, 2, 1 tokens over the whole row (f16 converted with vcvtph2ps as it is loaded).
 *
 * The arithmetic of one (row, token) is fixed whatever the tiling, the thread count or the
 * instruction set, so prefill equals decode and the AVX-512 and AVX2 kernels equal the scalar
 * ones bitwise. Integer sums are exact; the floating-point steps are, per chunk:
 *
 *   Q8_0, Q4_0  the blocks of a chunk, in groups of 16, feed 16 lanes: lane L takes block
 *               b = 4·(L%4) + L/4 of each group (the order in which a 4×4 transpose of the
 *               vpdpbusd partial sums leaves them): acc[L] = fma((float)isum_b, dw_b·dx_b,
 *               acc[L]), with a zero block where a group runs past the chunk; the chunk's
 *               partial is the tree ((a_i + a_i+8) + (… + a_i+4)) + … of the 16 lanes.
 *   Q4_K        16 lanes again, each summing 16 products of every super-block weighted by
 *               their sub-block scales (an exact integer, see q4k_row_scalar):
 *               acc[L] = fma((float)lane_L, d·dx, acc[L]); and 4 lanes for the mins,
 *               accm[i] = fma((float)(m_2i·Σxq_2i + m_2i+1·Σxq_2i+1), dmin·dx, accm[i]);
 *               the partial is tree(acc) - ((accm0 + accm2) + (accm1 + accm3)).
 *   then        y = 0 + partial(chunk 0) + partial(chunk 1) + …  (left to right)
 *   F32, F16    no chunks: lane L takes columns L, L+16, … (fma; zero past the end), then the
 *               same 16-lane tree.
 *
 * Integer dot products use AVX512-VNNI vpdpbusd, which multiplies unsigned by signed bytes: the
 * Q4_0 nibbles are unsigned already (Σ (q - 8)·x = Σ q·x - 8·Σ x, with Σ x stored beside the
 * quantised x); Q8_0 weights are offset by 128 the same way. Q4_K weighs the per-32 sums by
 * the 6-bit scales with vpdpwssd. The AVX2 kernels (CPUs without AVX-512, such as AMD's Zen 2
 * and 3) hold the 16 lanes in two 8-lane vectors and sum a block with vpmaddubsw + vpmaddwd
 * (Q8_0: the weights' signs moved onto x), Q4_K's scales with vpmaddwd.
 * alloy_quant_isa_set lowers the level, so a test on an AVX-512 machine checks both.
 */
#include "quant_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The kernels the CPU can run: AVX-512 (F/BW/VL/DQ + VNNI + F16C + FMA), AVX2 (+ FMA + F16C),
 * or the scalar ones. */
static alloy_quant_isa isa_detect(void) {
#ifdef QUANT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma"))
        return ALLOY_QUANT_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return ALLOY_QUANT_AVX2;
#endif
    return ALLOY_QUANT_SCALAR;
}

static int isa_best_cached = -1, isa_cap = ALLOY_QUANT_AVX512;

alloy_quant_isa alloy_quant_isa_best(void) {
    if (isa_best_cached < 0) isa_best_cached = isa_detect();
    return (alloy_quant_isa)isa_best_cached;
}

alloy_quant_isa alloy_quant_isa_set(alloy_quant_isa isa) {
    isa_cap = isa < ALLOY_QUANT_SCALAR ? ALLOY_QUANT_SCALAR : isa > ALLOY_QUANT_AVX512 ? ALLOY_QUANT_AVX512 : isa;
    return alloy_quant_isa_current();
}

alloy_quant_isa alloy_quant_isa_current(void) {
    const alloy_quant_isa best = alloy_quant_isa_best();
    return (alloy_quant_isa)(isa_cap < (int)best ? isa_cap : (int)best);
}

const char *alloy_quant_isa_name(alloy_quant_isa isa) {
    return isa == ALLOY_QUANT_AVX512 ? "avx512-vnni" : isa == ALLOY_QUANT_AVX2 ? "avx2" : "scalar";
}

bool alloy_quant_simd_supported(void) { return alloy_quant_isa_best() == ALLOY_QUANT_AVX512; }

/* One token's chunk of cc columns of x, quantised for weights of type t. */
static void quant_x_chunk(alloy_qtype t, xchunk *xc, const float *x, int cc, alloy_quant_isa isa) {
    const bool simd = isa == ALLOY_QUANT_AVX512;
    if (t == ALLOY_QTYPE_Q4_K) {
        for (int b = 0; b < cc / QKK; b++) {
#ifdef QUANT_X86
            if (simd) {
                quant_xk_avx512(&xc->k[b], x + QKK * b);
                continue;
            }
            if (isa == ALLOY_QUANT_AVX2) {
                quant_xk_avx2(&xc->k[b], x + QKK * b);
                continue;
            }
#endif
            quant_xk_scalar(&xc->k[b], x + QKK * b);
        }
        return;
    }
    const int nb = cc / QK;
    for (int g = 0; g * 16 < nb; g++) {
        const int nblk = nb - 16 * g < 16 ? nb - 16 * g : 16;
#ifdef QUANT_X86
        if (simd) {
            quant_x32_avx512(&xc->g[g], x + 16 * QK * g, nblk);
            continue;
        }
        if (isa == ALLOY_QUANT_AVX2) {
            quant_x32_avx2(&xc->g[g], x + 16 * QK * g, nblk);
            continue;
        }
#endif
        quant_x32_scalar(&xc->g[g], x + 16 * QK * g, nblk);
    }
}

/* part (nt) = the chunk's partial sums of one quantised row (chunk cc columns at w) against the
 * nt tokens of xc. */
static void quant_row(alloy_qtype t, float *part, const uint8_t *w, const xchunk *xc, int nt, int cc,
                      alloy_quant_isa isa) {
    const int n = t == ALLOY_QTYPE_Q4_K ? cc / QKK : cc / QK;
    if (isa == ALLOY_QUANT_SCALAR) {
        if (t == ALLOY_QTYPE_Q4_K) q4k_row_scalar(part, w, xc, nt, n);
        else q32_row_scalar(part, w, xc, nt, n, t == ALLOY_QTYPE_Q8_0);
        return;
    }
#ifdef QUANT_X86
    quant_tile_fn *const(*tiles)[4] = isa == ALLOY_QUANT_AVX2 ? quant_tiles_avx2 : quant_tiles_avx512;
    const int f = t == ALLOY_QTYPE_Q8_0 ? 0 : t == ALLOY_QTYPE_Q4_0 ? 1 : 2;
    for (int u = 0; u < nt;) { // tiles of 8, 4, 2, 1 tokens
        const int k = tile_width(nt - u);
        tiles[f][k == 8 ? 3 : k == 4 ? 2 : k == 2 ? 1 : 0](part + u, w, xc + u, n);
        u += k;
    }
#endif
}

/* part[r·XT + t] = row r of nr (at w, rb bytes apart; f32 or f16) · x_t, for nt tokens of x
 * (rows cols apart): tiles of 4 rows when there are 4, of 4, 2, 1 tokens. */
static void dense_rows(alloy_qtype t, float *part, const uint8_t *w, size_t rb, int nr, const float *x, int nt,
                       int cols, alloy_quant_isa isa) {
    const bool f16 = t == ALLOY_QTYPE_F16;
    if (isa == ALLOY_QUANT_SCALAR) {
        float tmp[XT];
        for (int r = 0; r < nr; r++) {
            dense_row_scalar(tmp, w + r * rb, x, nt, cols, f16);
            memcpy(part + r * XT, tmp, (size_t)nt * sizeof(float));
        }
        return;
    }
#ifdef QUANT_X86
    if (isa == ALLOY_QUANT_AVX2) { // tiles of 2 rows × 2 tokens, 4 rows × 1 token, 1 × 1
        dense_rows_avx2(f16, part, w, rb, nr, x, nt, cols);
        return;
    }
    dense_rows_avx512(f16, part, w, rb, nr, x, nt, cols);
#endif
}

/* ---- the drivers ----------------------------------------------------------------------------- */

/* product's work for the calling thread of an OpenMP team: every thread calls it with the same
 * arguments, xbuf shared by them; it returns after its last loop's barrier. n, rows, cols > 0. */
static void product_team(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols,
                         alloy_quant_isa isa, xchunk *xbuf, int xt) {
    const size_t rb = alloy_quant_row_bytes(t, cols), bsz = alloy_qtype_block_bytes(t);
    const int be = alloy_qtype_block_elems(t);
    const uint8_t *Wb = W;
    if (t == ALLOY_QTYPE_F32 || t == ALLOY_QTYPE_F16) {
        for (int tb = 0; tb < n; tb += XT) {
            const int nt = n - tb < XT ? n - tb : XT;
#pragma omp for schedule(static)
            for (int rt = 0; rt < (rows + 3) / 4; rt++) {
                const int r0 = 4 * rt, nr = rows - r0 < 4 ? rows - r0 : 4;
                float part[4 * XT];
                dense_rows(t, part, Wb + (size_t)r0 * rb, rb, nr, X + (size_t)tb * cols, nt, cols, isa);
                for (int r = 0; r < nr; r++)
                    for (int u = 0; u < nt; u++) Y[(size_t)(tb + u) * rows + r0 + r] = part[r * XT + u];
            }
        }
        return;
    }
    for (int tb = 0; tb < n; tb += xt) {
        const int nt = n - tb < xt ? n - tb : xt;
        for (int c0 = 0; c0 < cols; c0 += CHUNK) {
            const int cc = cols - c0 < CHUNK ? cols - c0 : CHUNK;
#pragma omp for schedule(static)
            for (int u = 0; u < nt; u++) quant_x_chunk(t, &xbuf[u], X + (size_t)(tb + u) * cols + c0, cc, isa);
#pragma omp for schedule(static)
            for (int r = 0; r < rows; r++) {
                float part[XT];
                quant_row(t, part, Wb + (size_t)r * rb + (size_t)(c0 / be) * bsz, xbuf, nt, cc, isa);
                for (int u = 0; u < nt; u++) {
                    float *y = &Y[(size_t)(tb + u) * rows + r];
                    *y = (c0 == 0 ? 0.0f : *y) + part[u];
                }
            }
        }
    }
}

/* Y (n, rows) = X (n, cols) · Wᵀ, with xbuf (xt chunks) as the quantised-x scratch. */
static void product(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols, alloy_quant_isa isa,
                    xchunk *xbuf, int xt) {
    ALLOY_ASSERT(qtype_valid(t) && n >= 0 && rows >= 0 && cols >= 0 && cols % alloy_qtype_block_elems(t) == 0);
    if (n == 0 || rows == 0) return;
    if (cols == 0) {
        memset(Y, 0, (size_t)n * (size_t)rows * sizeof(float));
        return;
    }
#pragma omp parallel
    product_team(t, Y, W, X, n, rows, cols, isa, xbuf, xt);
}

size_t alloy_quant_team_scratch_bytes(void) { return sizeof(xchunk); }

void alloy_quant_matvec_team(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols,
                             void *scratch) {
    ALLOY_ASSERT(qtype_valid(t) && rows > 0 && cols > 0 && cols % alloy_qtype_block_elems(t) == 0);
    product_team(t, y, W, x, 1, rows, cols, alloy_quant_isa_current(), scratch, 1);
}

void alloy_quant_prefetch_team(alloy_qtype t, const void *W, int rows, int cols, size_t bytes) {
#ifdef _OPENMP
    const int nt = omp_get_num_threads(), th = omp_get_thread_num();
#else
    const int nt = 1, th = 0;
#endif
    const size_t rb = alloy_quant_row_bytes(t, cols);
    const char *p = (const char *)W + (size_t)((int64_t)rows * th / nt) * rb; // about where its rows start
    const char *end = (const char *)W + (size_t)rows * rb;
    for (size_t off = 0; off < bytes && p + off < end; off += 64) __builtin_prefetch(p + off, 0, 2);
}

void alloy_quant_matvec(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols) {
    xchunk xbuf[1];
    product(t, y, W, x, 1, rows, cols, alloy_quant_isa_current(), xbuf, 1);
}

void alloy_quant_matmul(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols) {
    xchunk xbuf[XT];
    product(t, Y, W, X, n, rows, cols, alloy_quant_isa_current(), xbuf, XT);
}

void alloy_quant_matvec_scalar(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols) {
    xchunk xbuf[1];
    product(t, y, W, x, 1, rows, cols, ALLOY_QUANT_SCALAR, xbuf, 1);
}

void alloy_quant_matmul_scalar(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols) {
    xchunk xbuf[XT];
    product(t, Y, W, X, n, rows, cols, ALLOY_QUANT_SCALAR, xbuf, XT);
}
