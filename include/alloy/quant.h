/*
 * alloy/quant.h — quantised weights for CPU inference: block formats byte-compatible with
 * GGML / llama.cpp, fp16 conversion, and the matrix-vector and matrix-matrix products that
 * read them (src/kernels/quant_*.c: quant_format.c the formats, quant_matvec.c the products).
 *
 *     // quantise a (rows, cols) fp32 matrix to Q4_0, then y = W·x for one token
 *     size_t rb = alloy_quant_row_bytes(ALLOY_QTYPE_Q4_0, cols);   // 0: cols % 32 != 0
 *     uint8_t *Wq = malloc((size_t)rows * rb);
 *     alloy_quantize(ALLOY_QTYPE_Q4_0, Wq, W, rows, cols);
 *     alloy_quant_matvec(ALLOY_QTYPE_Q4_0, y, Wq, x, rows, cols);
 *
 * Formats. A row of n elements is n / block_elems blocks laid end to end, exactly as GGML
 * stores them, so a GGUF writer can copy rows as they are (all numbers little-endian, halves
 * are IEEE binary16):
 *
 *   F32   4 bytes per element.
 *   F16   2 bytes per element (IEEE half).
 *   Q8_0  34 bytes per 32 elements: { half d; int8 qs[32]; }          x[j] = qs[j]·d
 *   Q4_0  18 bytes per 32 elements: { half d; uint8 qs[16]; }         x[j] = (q[j] - 8)·d
 *         where q[j] = qs[j] & 15 and q[j + 16] = qs[j] >> 4 (j < 16).
 *   Q4_K  144 bytes per 256 elements: { half d; half dmin; uint8 scales[12]; uint8 qs[128]; }
 *         8 sub-blocks of 32, each with a 6-bit scale sc[s] and a 6-bit min m[s]:
 *           x = (d·sc[s])·q − (dmin·m[s])
 *         packed in scales[] as GGML's get_scale_min_k4 reads them:
 *           s < 4:  sc[s] = scales[s] & 63,  m[s] = scales[s + 4] & 63
 *           s >= 4: sc[s] = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4
 *                   m[s]  = (scales[s + 4] >> 4) | (scales[s]     >> 6) << 4
 *         and the nibbles by 64-element chunks c = 0..3: qs[32c + l] holds element 64c + l in
 *         its low nibble and element 64c + 32 + l in its high nibble (l < 32).
 *   Dequantisation multiplies in fp32 in the order written above (no fused multiply-add).
 *
 * Quantisers. Q8_0 and Q4_0 are GGML's reference quantisers (quantize_row_*_ref) and give the
 * same bytes: Q8_0 d = amax/127, qs = roundf(x·(1/d)); Q4_0 d = max/-8 with max the element of
 * largest magnitude (the first one on ties), q = min(15, (int)fmaf(x, 1/d, 8.5)), one rounding
 * as GGML's reference compiled with FP contraction (x86-64 with FMA) and as gguf-py's quantiser.
 * (Dequantisation has no such ambiguity: every product there is exact.) Q4_K is our own,
 * simpler than GGML's make_qkx2 search but writing ordinary blocks that GGML reads as alloy
 * does: per sub-block a least-squares fit of step and min over 21 candidate steps, 6-bit
 * scales and mins rounded to nearest against d = max step/63 and dmin = max min/63, then each
 * element to its nearest level (RMSE on N(0,1): Q8_0 0.0054, Q4_K 0.071, Q4_0 0.086).
 * Policies GGML leaves open: a block holding a NaN or an infinity is written as a poisoned
 * block (scales NaN, quants zero: it dequantises to NaN throughout, its neighbours are
 * untouched); a scale beyond the fp16 range is clamped to 65504 and the quants saturate; a
 * Q8_0/Q4_0 scale below 2^-128 (where 1/d overflows) writes zero quants (the block is zero).
 *
 * Products. y = W·x quantises x on the fly, as llama.cpp does, and sums integer products:
 * for Q8_0 and Q4_0 weights, x is cut in blocks of 32 with an fp32 scale dx = amax/127 and
 * q = nearest-even(x·(1/dx)); for Q4_K, in blocks of 256 the same way (a block whose amax is
 * below 2^-100 is zero; one holding a NaN or an infinity makes the outputs NaN). F32 and F16
 * weights multiply fp32 x directly. Integer sums are exact; the few fp32 steps (block scales,
 * lane sums over chunks of 2048 columns, a fixed tree) are listed at the top of
 * src/kernels/quant_matvec.c: the result is within a few units of 2^-23·Σ|w·x| of the exact
 * product of the quantised operands.
 * The AVX-512 VNNI kernels and the portable scalar ones (used when the CPU lacks AVX-512)
 * compute the same operations in the same order, so their results are bitwise equal, and each
 * row of alloy_quant_matmul equals alloy_quant_matvec of that token bitwise: prefill and
 * decode agree exactly. Results do not depend on the thread count.
 */
#ifndef ALLOY_QUANT_H
#define ALLOY_QUANT_H

#include "alloy/base.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

ALLOY_BEGIN_DECLS

/* The element types of a weight matrix. (GGML's own type numbers differ: F32 0, F16 1, Q4_0 2,
 * Q8_0 8, Q4_K 12.) */
typedef enum alloy_qtype {
    ALLOY_QTYPE_F32 = 0,
    ALLOY_QTYPE_F16,
    ALLOY_QTYPE_Q8_0,
    ALLOY_QTYPE_Q4_0,
    ALLOY_QTYPE_Q4_K,
    ALLOY_QTYPE_COUNT
} alloy_qtype;

/* ---- the formats ---- */

/* "f32", "f16", "q8_0", "q4_0", "q4_k"; "?" for a value out of range. */
const char *alloy_qtype_name(alloy_qtype t);
/* Sets *out from a name as alloy_qtype_name writes it (case-insensitive); false if unknown
 * (*out untouched). */
alloy_status alloy_qtype_parse(const char *name, alloy_qtype *out);
/* Elements per block: 1, 1, 32, 32, 256; 0 for a value out of range. */
int alloy_qtype_block_elems(alloy_qtype t);
/* Bytes per block: 4, 2, 34, 18, 144; 0 for a value out of range. */
size_t alloy_qtype_block_bytes(alloy_qtype t);
/* Bytes of a row of n elements; n must be a non-negative multiple of the block size (returns
 * 0 if not, or if t is out of range). */
size_t alloy_quant_row_bytes(alloy_qtype t, int64_t n);

/* ---- fp16 ---- */

/* fp32 -> IEEE half, rounding to nearest even; overflow gives ±inf, NaN stays NaN (quiet, sign
 * and the top payload bits kept), subnormal halves are produced exactly. Same as F16C's
 * vcvtps2ph with rounding mode 0. */
uint16_t alloy_f32_to_f16(float x);
/* IEEE half -> fp32, exact (a signalling NaN comes back quiet). */
float alloy_f16_to_f32(uint16_t h);

/* ---- rows and matrices ---- */

/* out (row_bytes(t, n)) = x (n) in format t. n must be a multiple of the block size
 * (asserted). Thread-safe; single-threaded. */
void alloy_quantize_row(alloy_qtype t, void *out, const float *x, int64_t n);
/* y (n) = the fp32 values of the row q (row_bytes(t, n)). n a multiple of the block size
 * (asserted). */
void alloy_dequantize_row(alloy_qtype t, float *y, const void *q, int64_t n);
/* out (rows · row_bytes(t, cols)) = X (rows, cols) in format t, row by row; OpenMP over rows.
 * Returns the bytes written, or 0 (nothing written) when cols is not a multiple of the block. */
size_t alloy_quantize(alloy_qtype t, void *out, const float *X, int64_t rows, int64_t cols);

/* ---- products ---- */

/* The kernels of the products, all with the same results bitwise: AVX-512 (F/BW/VL/DQ + VNNI +
 * F16C + FMA), AVX2 (+ FMA + F16C), and the portable scalar ones. The products use the best
 * the CPU has, or a lower one chosen by alloy_quant_isa_set. */
typedef enum alloy_quant_isa { ALLOY_QUANT_SCALAR = 0, ALLOY_QUANT_AVX2 = 1, ALLOY_QUANT_AVX512 = 2 } alloy_quant_isa;
alloy_quant_isa alloy_quant_isa_best(void);    /* the best this CPU runs */
alloy_quant_isa alloy_quant_isa_current(void); /* the one the products use now */
/* The products use at most `isa` (for tests and benchmarks; not thread-safe against running
 * products); returns the one they will use. */
alloy_quant_isa alloy_quant_isa_set(alloy_quant_isa isa);
const char *alloy_quant_isa_name(alloy_quant_isa isa); /* "avx512-vnni", "avx2", "scalar" */
/* True when the AVX-512 kernels run here. */
bool alloy_quant_simd_supported(void);

/* y (rows) = W (rows, cols) · x (cols): W row-major in format t, each row row_bytes(t, cols)
 * long, at any address; cols a multiple of the block size (asserted). y is WRITTEN (and must
 * not overlap W or x); cols = 0 gives zeros. OpenMP
 * over rows (static); the result does not depend on the thread count. Thread-safe. Kernels
 * never allocate: x is quantised, 2048 columns at a time, into ~3 KB of the calling thread's
 * stack. */
void alloy_quant_matvec(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols);
/* alloy_quant_matvec's share of the calling thread, inside an OpenMP parallel region whose
 * every thread calls it with the same arguments, scratch (alloy_quant_team_scratch_bytes(),
 * alloy_malloc'd) one buffer shared by them; it returns after a barrier, y complete. The same
 * bits as alloy_quant_matvec on as many threads. rows, cols > 0. */
void alloy_quant_matvec_team(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols,
                             void *scratch);
size_t alloy_quant_team_scratch_bytes(void);
/* Inside such a region: prefetches into L2 the first `bytes` of about where the calling
 * thread's rows of W start in alloy_quant_matvec_team. */
void alloy_quant_prefetch_team(alloy_qtype t, const void *W, int rows, int cols, size_t bytes);

/* Y (n, rows) = X (n, cols) · Wᵀ, the prefill form of alloy_quant_matvec for n tokens: each row
 * of Y equals alloy_quant_matvec of that row of X bitwise. Each unpacked weight block serves up
 * to 8 tokens from registers (F32/F16: tiles of 4 rows × 4 tokens) and each weight row 32 tokens
 * from L1. Uses ~85 KB of the calling thread's stack for the quantised X (32 tokens × 2048
 * columns at a time). */
void alloy_quant_matmul(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols);

/* The portable scalar kernels, the algorithmic reference that the AVX-512 ones equal bitwise
 * (what alloy_quant_matvec / _matmul run on a CPU without AVX-512). Same contracts. */
void alloy_quant_matvec_scalar(alloy_qtype t, float *y, const void *W, const float *x, int rows, int cols);
void alloy_quant_matmul_scalar(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows,
                               int cols);

ALLOY_END_DECLS
#endif /* ALLOY_QUANT_H */
