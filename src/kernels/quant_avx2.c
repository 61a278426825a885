/*
 * quant_avx2.c — the AVX2 kernels of the quantised products (AVX2 + FMA + F16C, selected per
 * function by TARGET_A2), for CPUs without AVX-512 such as AMD's Zen 2 and 3: quant_ref.c's
 * arithmetic with the 16 lanes held in pairs of 8-lane vectors (lanes 0–7, 8–15), so the results
 * equal the scalar ones bitwise.
 */
#include "quant_internal.h"

#ifdef QUANT_X86
/* quant_x32_scalar in 8-lane vectors: the same products x·id, rounded to nearest even. */
TARGET_A2 void quant_x32_avx2(xq32_group *g, const float *x, int nblk) {
    if (nblk < 16) memset(g, 0, sizeof *g);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), big = _mm256_set1_ps(FLT_MAX);
    for (int b = 0; b < nblk; b++) {
        const float *xb = x + QK * b;
        __m256 v[4], amax = _mm256_setzero_ps();
        int finite = 0xFF;
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            const __m256 a = _mm256_and_ps(v[k], absmask);
            finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ));
            amax = _mm256_max_ps(amax, a);
        }
        int8_t *q0 = g->q + 128 * (b >> 2) + 16 * (b & 3), *q1 = q0 + 64;
        const int L = lane_of_block(b);
        if (finite != 0xFF) {
            g->d[L] = NAN;
            g->s[L] = 0;
            memset(q0, 0, 16);
            memset(q1, 0, 16);
            continue;
        }
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        float id;
        g->d[L] = x_scale(_mm_cvtss_f32(m), &id);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i iv[4];
        for (int k = 0; k < 4; k++) iv[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
        const __m128i w0 = _mm_packs_epi32(_mm256_castsi256_si128(iv[0]), _mm256_extracti128_si256(iv[0], 1));
        const __m128i w1 = _mm_packs_epi32(_mm256_castsi256_si128(iv[1]), _mm256_extracti128_si256(iv[1], 1));
        const __m128i w2 = _mm_packs_epi32(_mm256_castsi256_si128(iv[2]), _mm256_extracti128_si256(iv[2], 1));
        const __m128i w3 = _mm_packs_epi32(_mm256_castsi256_si128(iv[3]), _mm256_extracti128_si256(iv[3], 1));
        _mm_storeu_si128((__m128i *)q0, _mm_packs_epi16(w0, w1));
        _mm_storeu_si128((__m128i *)q1, _mm_packs_epi16(w2, w3));
        const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        g->s[L] = _mm_cvtsi128_si32(h);
    }
}

/* quant_xk_scalar in 8-lane vectors. */
TARGET_A2 void quant_xk_avx2(xqk_block *k, const float *x) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), big = _mm256_set1_ps(FLT_MAX);
    __m256 amax = _mm256_setzero_ps();
    int finite = 0xFF;
    for (int j = 0; j < QKK; j += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
        finite &= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_LE_OQ));
        amax = _mm256_max_ps(amax, a);
    }
    if (finite != 0xFF) {
        memset(k, 0, sizeof *k);
        k->d = NAN;
        return;
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float id;
    k->d = x_scale(_mm_cvtss_f32(m), &id);
    const __m256 vid = _mm256_set1_ps(id);
    for (int s = 0; s < 8; s++) {
        __m256i iv[4];
        for (int u = 0; u < 4; u++) iv[u] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * s + 8 * u), vid));
        const __m128i w0 = _mm_packs_epi32(_mm256_castsi256_si128(iv[0]), _mm256_extracti128_si256(iv[0], 1));
        const __m128i w1 = _mm_packs_epi32(_mm256_castsi256_si128(iv[1]), _mm256_extracti128_si256(iv[1], 1));
        const __m128i w2 = _mm_packs_epi32(_mm256_castsi256_si128(iv[2]), _mm256_extracti128_si256(iv[2], 1));
        const __m128i w3 = _mm_packs_epi32(_mm256_castsi256_si128(iv[3]), _mm256_extracti128_si256(iv[3], 1));
        int8_t *q = k->q + 32 * q4k_pos(s);
        _mm_storeu_si128((__m128i *)q, _mm_packs_epi16(w0, w1));
        _mm_storeu_si128((__m128i *)(q + 16), _mm_packs_epi16(w2, w3));
        const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        k->bs[s] = (int16_t)_mm_cvtsi128_si32(h);
    }
}

TARGET_A2 static inline float hsum16_avx2(__m256 lo, __m256 hi) {
    const __m256 h = _mm256_add_ps(lo, hi);
    const __m128 u = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 c = _mm_add_ps(u, _mm_movehl_ps(u, u));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

/* The eight sums of p[0..7] (eight int32 each), as one vector: lane i = Σ p[i]. */
TARGET_A2 static inline __m256i sum8x8_avx2(const __m256i p[8]) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* Half `half` (a constant after inlining) of a group of 16 blocks at wp, `left` of them real:
 * lanes 8·half + i, blocks lane_of_block(8·half + i), against nt tokens, into acc[t]. A block's
 * 32 products are summed by vpmaddubsw (unsigned × signed bytes, pairs to int16) and vpmaddwd:
 * Q4_0's nibbles are unsigned (8·Σx is taken off after, as in the AVX-512 kernel); Q8_0's
 * weights are made unsigned by moving their signs onto x (|w| ≤ 128, |x| ≤ 127: a pair never
 * saturates). */
TARGET_A2 static inline __attribute__((always_inline)) void q32_half_avx2(__m256 *acc, const uint8_t *wp, int left,
                                                                         const xchunk *xc, int g, const int nt,
                                                                         const bool q8, const int half) {
    const int bsz = q8 ? 34 : 18;
    const __m256i m4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    uint16_t dh[8];
    __m256i wv[8];
    for (int i = 0; i < 8; i++) {
        const int b = lane_of_block(8 * half + i);
        const uint8_t *blk = wp + (size_t)bsz * b;
        if (b >= left) {
            dh[i] = 0;
            wv[i] = _mm256_setzero_si256();
            continue;
        }
        dh[i] = load_u16(blk);
        if (q8) {
            wv[i] = _mm256_loadu_si256((const __m256i *)(blk + 2));
        } else {
            const __m128i v = _mm_loadu_si128((const __m128i *)(blk + 2));
            wv[i] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), m4);
        }
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_set_epi16((short)dh[7], (short)dh[6], (short)dh[5], (short)dh[4],
                                                    (short)dh[3], (short)dh[2], (short)dh[1], (short)dh[0]));
    __m256i wa[8];
    if (q8)
        for (int i = 0; i < 8; i++) wa[i] = _mm256_sign_epi8(wv[i], wv[i]);
    for (int t = 0; t < nt; t++) {
        const xq32_group *xg = &xc[t].g[g];
        __m256i p[8];
        for (int i = 0; i < 8; i++) {
            const int b = lane_of_block(8 * half + i);
            const int8_t *x0 = xg->q + 128 * (b >> 2) + 16 * (b & 3);
            const __m256i xv = _mm256_loadu2_m128i((const __m128i *)(x0 + 64), (const __m128i *)x0);
            const __m256i s = q8 ? _mm256_maddubs_epi16(wa[i], _mm256_sign_epi8(xv, wv[i])) : _mm256_maddubs_epi16(wv[i], xv);
            p[i] = _mm256_madd_epi16(s, ones);
        }
        __m256i isum = sum8x8_avx2(p);
        if (!q8) isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(xg->s + 8 * half)), 3));
        const __m256 d = _mm256_mul_ps(dw, _mm256_loadu_ps(xg->d + 8 * half));
        acc[2 * t + half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[2 * t + half]);
    }
}

/* q32_row_scalar for nt (a constant after inlining) tokens: acc[2t + h] holds lanes 8h..8h+7. */
TARGET_A2 static inline __attribute__((always_inline)) void q32_row_avx2(float *part, const uint8_t *w,
                                                                        const xchunk *xc, const int nt, int nb,
                                                                        const bool q8) {
    const int bsz = q8 ? 34 : 18;
    __m256 acc[2 * NT_MAX];
    for (int t = 0; t < 2 * nt; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g * 16 < nb; g++) {
        const uint8_t *wp = w + (size_t)bsz * 16 * g;
        const int left = nb - 16 * g;
        for (int pf = 0; pf < 16 * bsz; pf += 64) // decode streams weights from DRAM: help the prefetcher
            _mm_prefetch((const char *)((uintptr_t)wp + PF_AHEAD + pf), _MM_HINT_T0);
        if (left >= 16) { // a whole group: no block past the end
            q32_half_avx2(acc, wp, 16, xc, g, nt, q8, 0);
            q32_half_avx2(acc, wp, 16, xc, g, nt, q8, 1);
        } else {
            q32_half_avx2(acc, wp, left, xc, g, nt, q8, 0);
            q32_half_avx2(acc, wp, left, xc, g, nt, q8, 1);
        }
    }
    for (int t = 0; t < nt; t++) part[t] = hsum16_avx2(acc[2 * t], acc[2 * t + 1]);
}

/* dense_row_scalar for RT rows (rb bytes apart) and NT tokens, both constants after inlining:
 * part[r·XT + t]. The last partial 16 columns are copied into zeroed buffers. */
TARGET_A2 static inline __attribute__((always_inline)) void dense_tile_avx2(float *part, const uint8_t *w, size_t rb,
                                                                           const float *x, const int RT,
                                                                           const int NT, int cols, const bool f16) {
    __m256 acc[4][2][2];
    for (int r = 0; r < RT; r++)
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    const size_t es = f16 ? 2 : 4;
    _Alignas(32) uint8_t wt[4][64];
    _Alignas(32) float xt[2][16];
    for (int c = 0; c < cols; c += 16) {
        const uint8_t *wr[4];
        const float *xr[2];
        if (c + 16 <= cols) {
            if (((size_t)c * es) % 64 == 0)
                for (int r = 0; r < RT; r++) _mm_prefetch((const char *)(w + (RT + r) * rb + es * (size_t)c), _MM_HINT_T0);
            for (int r = 0; r < RT; r++) wr[r] = w + r * rb + es * (size_t)c;
            for (int t = 0; t < NT; t++) xr[t] = x + (size_t)t * cols + c;
        } else {
            const int n = cols - c;
            for (int r = 0; r < RT; r++) {
                memset(wt[r], 0, sizeof wt[r]);
                memcpy(wt[r], w + r * rb + es * (size_t)c, es * (size_t)n);
                wr[r] = wt[r];
            }
            for (int t = 0; t < NT; t++) {
                memset(xt[t], 0, sizeof xt[t]);
                memcpy(xt[t], x + (size_t)t * cols + c, sizeof(float) * (size_t)n);
                xr[t] = xt[t];
            }
        }
        __m256 wv[4][2];
        for (int r = 0; r < RT; r++)
            for (int h = 0; h < 2; h++)
                wv[r][h] = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr[r] + 16 * h)))
                               : _mm256_loadu_ps((const float *)wr[r] + 8 * h);
        for (int t = 0; t < NT; t++)
            for (int h = 0; h < 2; h++) {
                const __m256 xv = _mm256_loadu_ps(xr[t] + 8 * h);
                for (int r = 0; r < RT; r++) acc[r][t][h] = _mm256_fmadd_ps(wv[r][h], xv, acc[r][t][h]);
            }
    }
    for (int r = 0; r < RT; r++)
        for (int t = 0; t < NT; t++) part[r * XT + t] = hsum16_avx2(acc[r][t][0], acc[r][t][1]);
}

#define DENSE_INSTANCE_AVX2(name, RT, NT, F16)                                                         \
    TARGET_A2 static void name(float *p, const uint8_t *w, size_t rb, const float *x, int c) {         \
        dense_tile_avx2(p, w, rb, x, RT, NT, c, F16);                                                  \
    }
DENSE_INSTANCE_AVX2(f32_tile2_4x1, 4, 1, false)
DENSE_INSTANCE_AVX2(f32_tile2_2x2, 2, 2, false)
DENSE_INSTANCE_AVX2(f32_tile2_1x1, 1, 1, false)
DENSE_INSTANCE_AVX2(f16_tile2_4x1, 4, 1, true)
DENSE_INSTANCE_AVX2(f16_tile2_2x2, 2, 2, true)
DENSE_INSTANCE_AVX2(f16_tile2_1x1, 1, 1, true)

/* q4k_row_scalar for nt tokens. Each half (32 bytes) of a 64-byte vector v of nibbles has one
 * sub-block scale: vpmaddubsw gives the products in pairs (|pair| ≤ 2·15·127), vpmaddwd with
 * the scale in every int16 gives scale·(4-byte sum) per lane, exactly the scalar lane. */
TARGET_A2 static inline __attribute__((always_inline)) void q4k_row_avx2(float *part, const uint8_t *w,
                                                                        const xchunk *xc, const int nt, int nsb) {
    static const int sub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc[NT_MAX][2];
    __m128 accm[NT_MAX];
    for (int t = 0; t < nt; t++) {
        acc[t][0] = acc[t][1] = _mm256_setzero_ps();
        accm[t] = _mm_setzero_ps();
    }
    for (int b = 0; b < nsb; b++) {
        const uint8_t *blk = w + (size_t)144 * b;
        for (int pf = 0; pf < 144; pf += 64)
            _mm_prefetch((const char *)((uintptr_t)blk + PF_AHEAD + pf), _MM_HINT_T0);
        uint8_t sc[8], m[8];
        q4k_unpack_scales(sc, m, blk + 4);
        __m256i scv[4][2], nib[4][2];
        for (int v = 0; v < 4; v++)
            for (int h = 0; h < 2; h++) {
                scv[v][h] = _mm256_set1_epi16((short)sc[sub[v][h]]);
                const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 16 + 64 * (v >> 1) + 32 * h));
                nib[v][h] = (v & 1) ? _mm256_and_si256(_mm256_srli_epi16(q, 4), m4) : _mm256_and_si256(q, m4);
            }
        const __m128i m16 = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)m));
        const float d = _cvtsh_ss(load_u16(blk)), dmin = _cvtsh_ss(load_u16(blk + 2));
        for (int t = 0; t < nt; t++) {
            const xqk_block *xk = &xc[t].k[b];
            for (int h = 0; h < 2; h++) {
                __m256i I = _mm256_setzero_si256();
                for (int v = 0; v < 4; v++) {
                    const __m256i xv = _mm256_loadu_si256((const __m256i *)(xk->q + 64 * v + 32 * h));
                    I = _mm256_add_epi32(I, _mm256_madd_epi16(_mm256_maddubs_epi16(nib[v][h], xv), scv[v][h]));
                }
                acc[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I), _mm256_set1_ps(d * xk->d), acc[t][h]);
            }
            const __m128i mn = _mm_madd_epi16(m16, _mm_loadu_si128((const __m128i *)xk->bs));
            accm[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(mn), _mm_set1_ps(dmin * xk->d), accm[t]);
        }
    }
    for (int t = 0; t < nt; t++) {
        __m128 mm = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
        part[t] = hsum16_avx2(acc[t][0], acc[t][1]) - _mm_cvtss_f32(_mm_add_ss(mm, _mm_movehdup_ps(mm)));
    }
}

/* The tiles of 1, 2, 4, 8 tokens of each format, and their table for quant_row. */
QUANT_TILES(TARGET_A2, quant_tiles_avx2, q32_row_avx2, q4k_row_avx2);

/* dense_rows for AVX2: tiles of 2 rows × 2 tokens, 4 rows × 1 token, 1 × 1. */
void dense_rows_avx2(bool f16, float *part, const uint8_t *w, size_t rb, int nr, const float *x, int nt, int cols) {
    for (int u = 0; u < nt;) {
        const int k = nt - u >= 2 ? 2 : 1;
        const float *xu = x + (size_t)u * cols;
        if (nr == 4 && k == 2) {
            for (int r = 0; r < 4; r += 2) {
                if (f16) f16_tile2_2x2(part + r * XT + u, w + r * rb, rb, xu, cols);
                else f32_tile2_2x2(part + r * XT + u, w + r * rb, rb, xu, cols);
            }
        } else if (nr == 4) {
            if (f16) f16_tile2_4x1(part + u, w, rb, xu, cols);
            else f32_tile2_4x1(part + u, w, rb, xu, cols);
        } else {
            for (int r = 0; r < nr; r++)
                for (int v = 0; v < k; v++) {
                    if (f16) f16_tile2_1x1(part + r * XT + u + v, w + r * rb, rb, xu + (size_t)v * cols, cols);
                    else f32_tile2_1x1(part + r * XT + u + v, w + r * rb, rb, xu + (size_t)v * cols, cols);
                }
        }
        u += k;
    }
}
#endif /* QUANT_X86 */
