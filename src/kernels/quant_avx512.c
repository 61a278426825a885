/*
 * quant_avx512.c — the AVX-512 VNNI kernels of the quantised products (F/BW/VL/DQ + VNNI + F16C +
 * FMA, selected per function by TARGET_Q): fp16 rows, x quantised, and tiles of 8, 4, 2, 1 tokens
 * against a row (or 4 rows of f32/f16 weights). They compute quant_ref.c's operations in the
 * same order, so their results equal the scalar ones bitwise.
 */
#include "quant_internal.h"

#ifdef QUANT_X86
TARGET_Q void f32_to_f16_row_avx512(uint16_t *out, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) out[i] = alloy_f32_to_f16(x[i]);
}

TARGET_Q void f16_to_f32_row_avx512(float *y, const uint16_t *h, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    for (; i < n; i++) y[i] = alloy_f16_to_f32(h[i]);
}

TARGET_Q static inline bool finite16(__m512 a) {
    return _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ) == 0xFFFF;
}

TARGET_Q void quant_x32_avx512(xq32_group *g, const float *x, int nblk) {
    if (nblk < 16) memset(g, 0, sizeof *g);
    for (int b = 0; b < nblk; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + QK * b), v1 = _mm512_loadu_ps(x + QK * b + 16);
        const __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
        int8_t *q0 = g->q + 128 * (b >> 2) + 16 * (b & 3), *q1 = q0 + 64;
        const int L = lane_of_block(b);
        if (!finite16(a0) || !finite16(a1)) {
            g->d[L] = NAN;
            g->s[L] = 0;
            memset(q0, 0, 16);
            memset(q1, 0, 16);
            continue;
        }
        float id;
        g->d[L] = x_scale(_mm512_reduce_max_ps(_mm512_max_ps(a0, a1)), &id);
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128((__m128i *)q0, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)q1, _mm512_cvtsepi32_epi8(i1));
        g->s[L] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

TARGET_Q void quant_xk_avx512(xqk_block *k, const float *x) {
    __m512 amax = _mm512_setzero_ps();
    bool finite = true;
    for (int j = 0; j < QKK; j += 16) {
        __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + j));
        finite &= finite16(a);
        amax = _mm512_max_ps(amax, a);
    }
    if (!finite) {
        memset(k, 0, sizeof *k);
        k->d = NAN;
        return;
    }
    float id;
    k->d = x_scale(_mm512_reduce_max_ps(amax), &id);
    const __m512 vid = _mm512_set1_ps(id);
    for (int s = 0; s < 8; s++) {
        const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * s), vid));
        const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * s + 16), vid));
        int8_t *q = k->q + 32 * q4k_pos(s);
        _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(i1));
        k->bs[s] = (int16_t)_mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

TARGET_Q static inline float hsum16_avx512(__m512 v) {
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

/* Sums of four vectors of per-128-bit-lane partials: lane 4j + i of the result is the sum of
 * the four int32 of 128-bit lane j of p_i. */
TARGET_Q static inline __m512i transpose_sum4(__m512i p0, __m512i p1, __m512i p2, __m512i p3) {
    __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
    __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p2, p3), _mm512_unpackhi_epi32(p2, p3));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
}

TARGET_Q static inline __m512i load4x128(const uint8_t *a, const uint8_t *b, const uint8_t *c, const uint8_t *d) {
    __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                         _mm_loadu_si128((const __m128i *)b), 1);
    __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)c)),
                                         _mm_loadu_si128((const __m128i *)d), 1);
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* q32_row_scalar for nt (a constant after inlining) tokens. */
TARGET_Q static inline __attribute__((always_inline)) void q32_row_avx512(float *part, const uint8_t *w,
                                                                          const xchunk *xc, const int nt, int nb,
                                                                          const bool q8) {
    const int bsz = q8 ? 34 : 18;
    const __m512i m4 = _mm512_set1_epi8(15), bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[NT_MAX];
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    _Alignas(64) uint8_t pad[16 * 34];
    for (int g = 0; g * 16 < nb; g++) {
        const uint8_t *wp = w + (size_t)bsz * 16 * g;
        const int left = nb - 16 * g;
        // the slices of four blocks (k) that hold weights: all four, or in a short group of whole
        // slices (768 columns: 16 + 8 blocks) only those, the others' products zero and their
        // scales zero; a short group of a partial slice is copied to zeroed padding
        int nk = 4;
        _Alignas(32) uint16_t dh[16];
        if (left < 16 && left % 4 == 0) {
            nk = left / 4;
            for (int L = 0; L < 16; L++) {
                const int b = 4 * (L & 3) + (L >> 2);
                dh[L] = b < left ? load_u16(wp + bsz * b) : 0;
            }
        } else {
            if (left < 16) {
                memset(pad, 0, sizeof pad);
                memcpy(pad, wp, (size_t)bsz * left);
                wp = pad;
            }
            // the 16 scales in lane order; a gather (vpgatherdd) is slow on some CPUs and stalls
            // on cache misses, 16 scalar loads are not
            for (int L = 0; L < 16; L++) dh[L] = load_u16(wp + bsz * (4 * (L & 3) + (L >> 2)));
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)dh));
        for (int pf = 0; pf < 16 * bsz; pf += 64) // decode streams weights from DRAM: help the prefetcher
            _mm_prefetch((const char *)((uintptr_t)wp + PF_AHEAD + pf), _MM_HINT_T1);
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; k++) {
            const uint8_t *b0 = wp + bsz * 4 * k + 2;
            if (k >= nk) {
                lo[k] = hi[k] = _mm512_setzero_si512();
            } else if (q8) {
                lo[k] = _mm512_xor_si512(load4x128(b0, b0 + 34, b0 + 68, b0 + 102), bias);
                hi[k] = _mm512_xor_si512(load4x128(b0 + 16, b0 + 50, b0 + 84, b0 + 118), bias);
            } else {
                const __m512i v = load4x128(b0, b0 + 18, b0 + 36, b0 + 54);
                lo[k] = _mm512_and_si512(v, m4);
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            }
        }
        for (int t = 0; t < nt; t++) {
            const xq32_group *xg = &xc[t].g[g];
            __m512i p[4];
            for (int k = 0; k < 4; k++) {
                p[k] = _mm512_setzero_si512();
                if (k >= nk) continue;
                p[k] = _mm512_dpbusd_epi32(p[k], lo[k], _mm512_loadu_si512(xg->q + 128 * k));
                p[k] = _mm512_dpbusd_epi32(p[k], hi[k], _mm512_loadu_si512(xg->q + 128 * k + 64));
            }
            __m512i isum = transpose_sum4(p[0], p[1], p[2], p[3]);
            isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_loadu_si512(xg->s), q8 ? 7 : 3));
            const __m512 d = _mm512_mul_ps(dw, _mm512_loadu_ps(xg->d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) part[t] = hsum16_avx512(acc[t]);
}

/* q4k_row_scalar for nt tokens. */
TARGET_Q static inline __attribute__((always_inline)) void q4k_row_avx512(float *part, const uint8_t *w,
                                                                          const xchunk *xc, const int nt, int nsb) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1));
    const __m512i i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(4));
    const __m512i i3 = _mm512_add_epi32(i0, _mm512_set1_epi32(5));
    __m512 acc[NT_MAX];
    __m128 accm[NT_MAX];
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
        accm[t] = _mm_setzero_ps();
    }
    for (int b = 0; b < nsb; b++) {
        const uint8_t *blk = w + (size_t)144 * b;
        for (int pf = 0; pf < 144; pf += 64)
            _mm_prefetch((const char *)((uintptr_t)blk + PF_AHEAD + pf), _MM_HINT_T1);
        uint32_t u0, u1, u2;
        memcpy(&u0, blk + 4, 4);
        memcpy(&u1, blk + 8, 4);
        memcpy(&u2, blk + 12, 4);
        const uint64_t sc8 = (uint64_t)(u0 & 0x3F3F3F3Fu) |
                             (uint64_t)((u2 & 0x0F0F0F0Fu) | ((u0 >> 2) & 0x30303030u)) << 32;
        const uint64_t m8 = (uint64_t)(u1 & 0x3F3F3F3Fu) |
                            (uint64_t)(((u2 >> 4) & 0x0F0F0F0Fu) | ((u1 >> 2) & 0x30303030u)) << 32;
        const __m512i sc32 = _mm512_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc8));
        const __m512i s0 = _mm512_permutexvar_epi32(i0, sc32), s1 = _mm512_permutexvar_epi32(i1, sc32);
        const __m512i s2 = _mm512_permutexvar_epi32(i2, sc32), s3 = _mm512_permutexvar_epi32(i3, sc32);
        const __m128i m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)m8));
        const __m512i v0 = _mm512_loadu_si512(blk + 16), v1 = _mm512_loadu_si512(blk + 80);
        const __m512i lo0 = _mm512_and_si512(v0, m4), hi0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
        const __m512i lo1 = _mm512_and_si512(v1, m4), hi1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
        const float d = _cvtsh_ss(load_u16(blk)), dmin = _cvtsh_ss(load_u16(blk + 2));
        for (int t = 0; t < nt; t++) {
            const xqk_block *xk = &xc[t].k[b];
            const __m512i z = _mm512_setzero_si512();
            const __m512i p0 = _mm512_dpbusd_epi32(z, lo0, _mm512_loadu_si512(xk->q));
            const __m512i p1 = _mm512_dpbusd_epi32(z, hi0, _mm512_loadu_si512(xk->q + 64));
            const __m512i p2 = _mm512_dpbusd_epi32(z, lo1, _mm512_loadu_si512(xk->q + 128));
            const __m512i p3 = _mm512_dpbusd_epi32(z, hi1, _mm512_loadu_si512(xk->q + 192));
            // each p lane is at most 4·15·127 in magnitude: its low 16 bits are the value, and the
            // zero high halves of the scale lanes drop the sign extension
            __m512i I = _mm512_dpwssd_epi32(z, p0, s0);
            I = _mm512_dpwssd_epi32(I, p1, s1);
            I = _mm512_dpwssd_epi32(I, p2, s2);
            I = _mm512_dpwssd_epi32(I, p3, s3);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_set1_ps(d * xk->d), acc[t]);
            const __m128i mn = _mm_madd_epi16(m16, _mm_loadu_si128((const __m128i *)xk->bs));
            accm[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(mn), _mm_set1_ps(dmin * xk->d), accm[t]);
        }
    }
    for (int t = 0; t < nt; t++) {
        __m128 mm = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
        part[t] = hsum16_avx512(acc[t]) - _mm_cvtss_f32(_mm_add_ss(mm, _mm_movehdup_ps(mm)));
    }
}

/* dense_row_scalar for RT rows (rb bytes apart) and NT tokens, both constants after inlining:
 * part[r·XT + t]. Four rows share each load of x. */
TARGET_Q static inline __attribute__((always_inline)) void dense_tile_avx512(float *part, const uint8_t *w, size_t rb,
                                                                             const float *x, const int RT,
                                                                             const int NT, int cols, const bool f16) {
    __m512 acc[4][4];
    for (int r = 0; r < RT; r++)
        for (int t = 0; t < NT; t++) acc[r][t] = _mm512_setzero_ps();
    // decode streams the matrix from DRAM: prefetch the same columns of the next tile's rows, a
    // cache line per row every 64 bytes of a row, into L2 (prefetcht1): prefetcht0 filled L1's
    // few miss buffers, and f16 decode ran at 41% of the bandwidth on one Zen 4 thread (72-75%
    // with t1). The AVX-512 rows below prefetch into L2 too; the AVX2 ones were not remeasured.
    const size_t es = f16 ? 2 : 4;
    int c = 0;
    for (; c + 16 <= cols; c += 16) {
        if (((size_t)c * es) % 64 == 0)
            for (int r = 0; r < RT; r++) _mm_prefetch((const char *)(w + (RT + r) * rb + es * (size_t)c), _MM_HINT_T1);
        __m512 wv[4];
        for (int r = 0; r < RT; r++)
            wv[r] = f16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + r * rb + 2 * (size_t)c)))
                        : _mm512_loadu_ps(w + r * rb + 4 * (size_t)c);
        for (int t = 0; t < NT; t++) {
            const __m512 xv = _mm512_loadu_ps(x + (size_t)t * cols + c);
            for (int r = 0; r < RT; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (c < cols) {
        const __mmask16 k = (__mmask16)((1u << (cols - c)) - 1);
        __m512 wv[4];
        for (int r = 0; r < RT; r++)
            wv[r] = f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, w + r * rb + 2 * (size_t)c))
                        : _mm512_maskz_loadu_ps(k, w + r * rb + 4 * (size_t)c);
        for (int t = 0; t < NT; t++) {
            const __m512 xv = _mm512_maskz_loadu_ps(k, x + (size_t)t * cols + c);
            for (int r = 0; r < RT; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < RT; r++)
        for (int t = 0; t < NT; t++) part[r * XT + t] = hsum16_avx512(acc[r][t]);
}

#define DENSE_INSTANCE(name, RT, NT, F16)                                                              \
    TARGET_Q static void name(float *p, const uint8_t *w, size_t rb, const float *x, int c) {          \
        dense_tile_avx512(p, w, rb, x, RT, NT, c, F16);                                                \
    }
DENSE_INSTANCE(f32_tile_4x4, 4, 4, false)
DENSE_INSTANCE(f32_tile_4x2, 4, 2, false)
DENSE_INSTANCE(f32_tile_4x1, 4, 1, false)
DENSE_INSTANCE(f32_tile_1x4, 1, 4, false)
DENSE_INSTANCE(f32_tile_1x2, 1, 2, false)
DENSE_INSTANCE(f32_tile_1x1, 1, 1, false)
DENSE_INSTANCE(f16_tile_4x4, 4, 4, true)
DENSE_INSTANCE(f16_tile_4x2, 4, 2, true)
DENSE_INSTANCE(f16_tile_4x1, 4, 1, true)
DENSE_INSTANCE(f16_tile_1x4, 1, 4, true)
DENSE_INSTANCE(f16_tile_1x2, 1, 2, true)
DENSE_INSTANCE(f16_tile_1x1, 1, 1, true)

/* The tiles of 1, 2, 4, 8 tokens of each format, and their table for quant_row. */
QUANT_TILES(TARGET_Q, quant_tiles_avx512, q32_row_avx512, q4k_row_avx512);

/* dense_rows for AVX-512: tiles of 4 rows when there are 4, of 4, 2, 1 tokens. */
void dense_rows_avx512(bool f16, float *part, const uint8_t *w, size_t rb, int nr, const float *x, int nt, int cols) {
    for (int u = 0; u < nt;) {
        const int k = nt - u >= 4 ? 4 : nt - u >= 2 ? 2 : 1;
        const float *xu = x + (size_t)u * cols;
        if (nr == 4) {
            if (f16) {
                if (k == 4) f16_tile_4x4(part + u, w, rb, xu, cols);
                else if (k == 2) f16_tile_4x2(part + u, w, rb, xu, cols);
                else f16_tile_4x1(part + u, w, rb, xu, cols);
            } else {
                if (k == 4) f32_tile_4x4(part + u, w, rb, xu, cols);
                else if (k == 2) f32_tile_4x2(part + u, w, rb, xu, cols);
                else f32_tile_4x1(part + u, w, rb, xu, cols);
            }
        } else {
            for (int r = 0; r < nr; r++) {
                float *p = part + r * XT + u;
                const uint8_t *wr = w + r * rb;
                if (f16) {
                    if (k == 4) f16_tile_1x4(p, wr, rb, xu, cols);
                    else if (k == 2) f16_tile_1x2(p, wr, rb, xu, cols);
                    else f16_tile_1x1(p, wr, rb, xu, cols);
                } else {
                    if (k == 4) f32_tile_1x4(p, wr, rb, xu, cols);
                    else if (k == 2) f32_tile_1x2(p, wr, rb, xu, cols);
                    else f32_tile_1x1(p, wr, rb, xu, cols);
                }
            }
        }
        u += k;
    }
}
#endif /* QUANT_X86 */
