/*
 * quant_internal.h — what the files of the quantised products share and nothing else sees: the
 * block sizes, the ISA attributes, the quantised-x layouts the kernels read (xq32_group,
 * xqk_block, xchunk), small byte helpers, and the kernels each file exports to the drivers.
 *
 *   quant_format.c   the formats: names, sizes, fp16, the quantisers and dequantisers
 *   quant_ref.c      the scalar kernels: the reference the SIMD ones equal bitwise
 *   quant_avx512.c   the AVX-512 VNNI kernels
 *   quant_avx2.c     the AVX2 kernels
 *   quant_matvec.c   the drivers: ISA choice, chunks, threads, alloy_quant_matvec/matmul; the
 *                    numerical contract of the products is at its top
 */
#ifndef ALLOY_KERNELS_QUANT_INTERNAL_H
#define ALLOY_KERNELS_QUANT_INTERNAL_H

#include "alloy/quant.h"

#include "alloy/base.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define QUANT_X86 1
#define TARGET_Q __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma")))
#define TARGET_A2 __attribute__((target("avx2,fma,f16c")))
#endif

#define QK 32          /* elements of a Q8_0 / Q4_0 block */
#define QKK 256        /* elements of a Q4_K super-block */
#define CHUNK 2048     /* columns of x quantised at a time: 64 blocks of 32, 8 of 256 */
#define XT 32          /* tokens of X quantised at a time by the matmul */
#define NT_MAX 8       /* tokens of the widest microkernel */
#define PF_AHEAD 4096 /* bytes of weights prefetched ahead of the block being read */
#define TINY 0x1p-100f /* an x block whose largest magnitude is below this quantises to zero */

_Static_assert(CHUNK % (16 * QK) == 0 && CHUNK % QKK == 0, "a chunk holds whole groups");

static inline bool qtype_valid(alloy_qtype t) { return (unsigned)t < (unsigned)ALLOY_QTYPE_COUNT; }

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline void store_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline float load_f16(const uint8_t *p) { return alloy_f16_to_f32(load_u16(p)); }

/* True if every one of x (n) is finite. */
static inline bool all_finite(const float *x, int n) {
    bool ok = true;
    for (int j = 0; j < n; j++) ok &= fabsf(x[j]) <= FLT_MAX;
    return ok;
}

/* The 8 scales and mins of a Q4_K super-block from its 12 packed bytes (get_scale_min_k4). */
static inline void q4k_unpack_scales(uint8_t sc[8], uint8_t m[8], const uint8_t *p) {
    for (int s = 0; s < 4; s++) {
        sc[s] = p[s] & 63;
        m[s] = p[s + 4] & 63;
        sc[s + 4] = (uint8_t)((p[s + 8] & 15) | ((p[s] >> 6) << 4));
        m[s + 4] = (uint8_t)((p[s + 8] >> 4) | ((p[s + 4] >> 6) << 4));
    }
}

/* ---- x quantised for the products ---------------------------------------------------------- */

/* x for Q8_0 / Q4_0 weights: 16 blocks of 32 (512 columns), d and s in lane order (lane L holds
 * block 4·(L%4) + L/4), q by quads of blocks: quad k (blocks 4k..4k+3) is 64 bytes of their
 * elements 0..15 (16 bytes per block) then 64 bytes of their elements 16..31. */
typedef struct xq32_group {
    float d[16];      /* scale of each block (0 past the end, NaN if poisoned) */
    int32_t s[16];    /* Σ q of each block */
    int8_t q[16 * QK]; /* the quants, by quads as above */
} xq32_group;

/* x for Q4_K weights: one block of 256 with one scale. */
typedef struct xqk_block {
    float d;          /* scale (NaN if poisoned) */
    int16_t bs[8];    /* Σ q over each sub-block of 32, natural order */
    int8_t q[QKK];    /* sub-blocks in the order 0, 2, 1, 3, 4, 6, 5, 7 (as Q4_K's nibbles load) */
} xqk_block;

/* The quantised x of one token's chunk. */
typedef union xchunk {
    xq32_group g[CHUNK / (16 * QK)]; /* for Q8_0 / Q4_0 weights: 4 groups of 16 blocks */
    xqk_block k[CHUNK / QKK];        /* for Q4_K weights: 8 blocks of 256 */
} xchunk;

static inline int lane_of_block(int b) { return 4 * (b & 3) + (b >> 2); } /* an involution */

static inline int q4k_pos(int s) { return (s & 4) | ((s & 1) << 1) | ((s >> 1) & 1); }

/* Scale of an x block from its largest magnitude: 0 for a (near) zero block. */
static inline float x_scale(float amax, float *id) {
    if (amax < TINY) {
        *id = 0.0f;
        return 0.0f;
    }
    float d = amax / 127;
    *id = 1.0f / d;
    return d;
}

/* Width of the next tile for nt tokens left. */
static inline int tile_width(int left) { return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1; }

/* ---- the kernels, by file ---------------------------------------------------------------------
 * quant_x*: one group of nblk (<= 16) blocks of 32, or one block of 256, of x quantised.
 * *_row_*: part (nt) = the chunk's partial sums of one quantised row (n blocks of 32, or n
 * super-blocks of 256, at w) against the nt tokens of xc; quant_tiles_*: the same in tiles.
 * dense_*: part[r·XT + t] = row r of nr (at w, rb bytes apart; f32 or f16) · x_t for nt tokens
 * of x (rows cols apart). */

/* quant_ref.c */
void quant_x32_scalar(xq32_group *g, const float *x, int nblk);
void quant_xk_scalar(xqk_block *k, const float *x);
void q32_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nb, bool q8);
void q4k_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nsb);
void dense_row_scalar(float *part, const uint8_t *w, const float *x, int nt, int cols, bool f16);

#ifdef QUANT_X86
/* A tile of the products: part (NT, fixed by the function) = the chunk's partial sums of one
 * quantised row (n blocks at w) against the NT tokens of xc. */
typedef void quant_tile_fn(float *part, const uint8_t *w, const xchunk *xc, int n);

/* An ISA's tiles, tile_F_NT (format F: 0 Q8_0, 1 Q4_0, 2 Q4_K; NT tokens), compiled for `target`
 * from its row kernels row32(part, w, xc, NT, n, q8) and row4k(part, w, xc, NT, n) (inlined with
 * NT and the format constant), and the table of them, table[F][0..3] for NT = 1, 2, 4, 8. */
#define QUANT_TILE(target, row32, row4k, F, NT)                                                     \
    target static void tile_##F##_##NT(float *p, const uint8_t *w, const xchunk *x, int n) {        \
        if (F == 2) row4k(p, w, x, NT, n);                                                         \
        else row32(p, w, x, NT, n, F == 0);                                                        \
    }
#define QUANT_TILES_OF(target, row32, row4k, F)                                                     \
    QUANT_TILE(target, row32, row4k, F, 1) QUANT_TILE(target, row32, row4k, F, 2)                   \
    QUANT_TILE(target, row32, row4k, F, 4) QUANT_TILE(target, row32, row4k, F, 8)
#define QUANT_TILES(target, table, row32, row4k)                                                    \
    QUANT_TILES_OF(target, row32, row4k, 0)                                                        \
    QUANT_TILES_OF(target, row32, row4k, 1)                                                        \
    QUANT_TILES_OF(target, row32, row4k, 2)                                                        \
    quant_tile_fn *const table[3][4] = {{tile_0_1, tile_0_2, tile_0_4, tile_0_8},                  \
                                        {tile_1_1, tile_1_2, tile_1_4, tile_1_8},                  \
                                        {tile_2_1, tile_2_2, tile_2_4, tile_2_8}}

/* quant_avx512.c (needs alloy_quant_isa_best() == ALLOY_QUANT_AVX512) */
TARGET_Q void f32_to_f16_row_avx512(uint16_t *out, const float *x, int64_t n);
TARGET_Q void f16_to_f32_row_avx512(float *y, const uint16_t *h, int64_t n);
TARGET_Q void quant_x32_avx512(xq32_group *g, const float *x, int nblk);
TARGET_Q void quant_xk_avx512(xqk_block *k, const float *x);
extern quant_tile_fn *const quant_tiles_avx512[3][4];
void dense_rows_avx512(bool f16, float *part, const uint8_t *w, size_t rb, int nr, const float *x, int nt, int cols);

/* quant_avx2.c (needs alloy_quant_isa_best() >= ALLOY_QUANT_AVX2) */
TARGET_A2 void quant_x32_avx2(xq32_group *g, const float *x, int nblk);
TARGET_A2 void quant_xk_avx2(xqk_block *k, const float *x);
extern quant_tile_fn *const quant_tiles_avx2[3][4];
void dense_rows_avx2(bool f16, float *part, const uint8_t *w, size_t rb, int nr, const float *x, int nt, int cols);
#endif

#endif /* ALLOY_KERNELS_QUANT_INTERNAL_H */
