/*
 * quant_format.c — the GGML-compatible block formats (Q8_0, Q4_0, Q4_K, and F16): their names
 * and sizes, fp16 conversion, the quantisers and the dequantisers. The formats are documented in
 * alloy/quant.h; the products that read them are in quant_matvec.c.
 */
#include "quant_internal.h"

#include <strings.h>

/* ---- the formats ---------------------------------------------------------------------------- */

static const char *const qtype_names[ALLOY_QTYPE_COUNT] = {"f32", "f16", "q8_0", "q4_0", "q4_k"};
static const int qtype_elems[ALLOY_QTYPE_COUNT] = {1, 1, QK, QK, QKK};
static const size_t qtype_bytes[ALLOY_QTYPE_COUNT] = {4, 2, 34, 18, 144};

const char *alloy_qtype_name(alloy_qtype t) { return qtype_valid(t) ? qtype_names[t] : "?"; }

alloy_status alloy_qtype_parse(const char *name, alloy_qtype *out) {
    if (!name) return alloy_fail(ALLOY_STATUS_USAGE, "unknown weight format \"%s\" (known: f32, f16, q8_0, q4_0, q4_k)", name ? name : "");
    for (int t = 0; t < ALLOY_QTYPE_COUNT; t++) {
        if (strcasecmp(name, qtype_names[t]) == 0) {
            *out = (alloy_qtype)t;
            return ALLOY_STATUS_OK;
        }
    }
    return alloy_fail(ALLOY_STATUS_USAGE, "unknown weight format \"%s\" (known: f32, f16, q8_0, q4_0, q4_k)", name ? name : "");
}

int alloy_qtype_block_elems(alloy_qtype t) { return qtype_valid(t) ? qtype_elems[t] : 0; }

size_t alloy_qtype_block_bytes(alloy_qtype t) { return qtype_valid(t) ? qtype_bytes[t] : 0; }

size_t alloy_quant_row_bytes(alloy_qtype t, int64_t n) {
    if (!qtype_valid(t) || n < 0 || n % qtype_elems[t] != 0) return 0;
    uint64_t blocks = (uint64_t)n / (uint64_t)qtype_elems[t];
    if (blocks > SIZE_MAX / qtype_bytes[t]) return 0; // cannot be addressed
    return (size_t)blocks * qtype_bytes[t];
}

/* ---- fp16 --------------------------------------------------------------------------------- */

uint16_t alloy_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu)); // NaN, quiet
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u); // >= 65520 rounds to inf (tie to even)
    if (ax >= 0x38800000u) {                                   // a normal half (>= 2^-14)
        // rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a carry
        // out of the mantissa correctly bumps the exponent
        ax += 0xC8000FFFu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | (ax >> 13));
    }
    // a subnormal half or zero: units of 2^-24, m·2^(e-150) = (m >> (126 - e)) units
    uint32_t e = ax >> 23;
    if (e < 102) return sign; // below 2^-25 (or exactly it: a tie, to even 0)
    uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - e; // 14..24
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1u)); // 0x400 (the smallest normal) is right too
    return (uint16_t)(sign | q);
}

float alloy_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13) | (man ? 0x400000u : 0)); // inf, NaN
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
    float mag = (float)man * 0x1p-24f; // subnormal or zero: exact
    return bits_f32(sign | f32_bits(mag));
}

/* ---- quantisers ---------------------------------------------------------------------------- */

#define F16_NAN 0x7E00u
#define F16_MAX 0x7BFFu /* 65504 */

/* One Q8_0 block, as GGML's quantize_row_q8_0_ref. */
static void quantize_block_q8_0(uint8_t *out, const float *x) {
    int8_t *qs = (int8_t *)(out + 2);
    if (!all_finite(x, QK)) { // poisoned: NaN scale, zero quants
        store_u16(out, F16_NAN);
        memset(qs, 0, QK);
        return;
    }
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
    const float d = amax / 127;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (id > FLT_MAX) id = 0.0f; // d below 2^-128: the block is zero in fp16 anyway
    uint16_t dh = alloy_f32_to_f16(d);
    if (dh == 0x7C00u) { // the scale overflows fp16: clamp it, saturate the quants
        dh = F16_MAX;
        id = 1.0f / 65504.0f;
        for (int j = 0; j < QK; j++) qs[j] = (int8_t)roundf(fminf(fmaxf(x[j] * id, -127.0f), 127.0f));
    } else {
        for (int j = 0; j < QK; j++) qs[j] = (int8_t)roundf(x[j] * id);
    }
    store_u16(out, dh);
}

/* One Q4_0 block, as GGML's quantize_row_q4_0_ref. */
static void quantize_block_q4_0(uint8_t *out, const float *x) {
    uint8_t *qs = out + 2;
    if (!all_finite(x, QK)) {
        store_u16(out, F16_NAN);
        memset(qs, 0x88, QK / 2); // q = 8 everywhere: zero times NaN
        return;
    }
    float amax = 0.0f, max = 0.0f; // the first element of largest magnitude, with its sign
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -8;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (fabsf(id) > FLT_MAX) id = 0.0f;
    uint16_t dh = alloy_f32_to_f16(d);
    bool saturate = (dh & 0x7FFFu) == 0x7C00u;
    if (saturate) {
        dh = (uint16_t)((dh & 0x8000u) | F16_MAX);
        id = 1.0f / alloy_f16_to_f32(dh);
    }
    for (int j = 0; j < QK / 2; j++) {
        // one rounding, as GGML's x*id + 8.5f where the compiler contracts it (x86-64 with FMA;
        // gguf-py's quantiser emulates the same)
        float x0 = fmaf(x[j], id, 8.5f), x1 = fmaf(x[j + QK / 2], id, 8.5f);
        if (saturate) {
            x0 = fminf(fmaxf(x0, 0.0f), 15.0f);
            x1 = fminf(fmaxf(x1, 0.0f), 15.0f);
        }
        int q0 = (int)x0, q1 = (int)x1; // truncation, as GGML's (int8_t) cast
        q0 = q0 < 15 ? q0 : 15;
        q1 = q1 < 15 ? q1 : 15;
        qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
    store_u16(out, dh);
}

/* Sum of squared errors of x (32) on the levels step·q - off, q = nearest level in 0..15. */
static float q4k_sse(const float *x, float step, float off) {
    float sse = 0.0f;
    for (int l = 0; l < 32; l++) {
        float q = step > 0.0f ? nearbyintf(fminf(fmaxf((x[l] + off) / step, 0.0f), 15.0f)) : 0.0f;
        float e = step * q - off - x[l];
        sse += e * e;
    }
    return sse;
}

/* The (step, off >= 0) of one sub-block that keeps x ≈ step·q - off with q in 0..15: for 21
 * candidate steps (max - min)/(15 + δ), δ = -1.0, -0.9, ..., +1.0, assign the nearest levels,
 * then refit step and off by least squares on those levels; keep the fit of smallest squared
 * error (the plain min/max fit included). off >= 0 because Q4_K stores -min as dmin·m, m >= 0. */
static void q4k_fit(const float *x, float *step_out, float *off_out) {
    float lo = x[0], hi = x[0];
    for (int l = 1; l < 32; l++) {
        lo = fminf(lo, x[l]);
        hi = fmaxf(hi, x[l]);
    }
    lo = fminf(lo, 0.0f);
    float best_step = (hi - lo) / 15, best_off = -lo;
    if (hi == lo) { // constant (zero or negative) sub-block: level 0 is exact
        *step_out = 0.0f;
        *off_out = -lo;
        return;
    }
    float best = q4k_sse(x, best_step, best_off);
    for (int k = 0; k <= 20; k++) {
        const float iscale = (15.0f + 0.1f * (float)(k - 10)) / (hi - lo);
        float sq = 0.0f, sqq = 0.0f, sx = 0.0f, sqx = 0.0f;
        for (int l = 0; l < 32; l++) {
            float q = nearbyintf(fminf(fmaxf(iscale * (x[l] - lo), 0.0f), 15.0f));
            sq += q;
            sqq += q * q;
            sx += x[l];
            sqx += q * x[l];
        }
        // minimise Σ (step·q - off - x)²: the normal equations of a line through (q, x)
        float den = 32 * sqq - sq * sq, step, off;
        if (den <= 0.0f) continue;
        step = (32 * sqx - sq * sx) / den;
        off = (step * sq - sx) / 32;
        if (off < 0.0f) { // the best line has min > 0: pin off at 0
            off = 0.0f;
            step = sqq > 0.0f ? sqx / sqq : 0.0f;
        }
        if (!(step > 0.0f)) continue;
        float sse = q4k_sse(x, step, off);
        if (sse < best) {
            best = sse;
            best_step = step;
            best_off = off;
        }
    }
    *step_out = best_step;
    *off_out = best_off;
}

/* The half nearest to v >= 0, clamped to [the smallest subnormal, 65504] when v > 0: a scale
 * that underflowed to 0 would drop the whole super-block. */
static uint16_t f16_clamped(float v) {
    uint16_t h = alloy_f32_to_f16(v);
    if (h >= 0x7C00u) return F16_MAX;
    return h == 0 && v > 0.0f ? 1 : h;
}

/* One Q4_K super-block: a least-squares (step, off) per sub-block (q4k_fit), then d and dmin
 * = the largest step and off / 63 as halves, sc and m = the nearest multiples (6 bits), and
 * each element to its nearest level of the stored scale: |x - dequantised| <= d·sc/2 for the
 * elements inside the sub-block's range [-dmin·m, 15·d·sc - dmin·m], up to fp32 rounding. */
static void quantize_block_q4_k(uint8_t *out, const float *x) {
    uint8_t *scales = out + 4, *qs = out + 16;
    memset(scales, 0, 12);
    if (!all_finite(x, QKK)) {
        store_u16(out, F16_NAN);
        store_u16(out + 2, F16_NAN);
        memset(qs, 0, QKK / 2);
        return;
    }
    float step[8], off[8], max_step = 0.0f, max_off = 0.0f;
    for (int s = 0; s < 8; s++) {
        q4k_fit(x + 32 * s, &step[s], &off[s]);
        max_step = fmaxf(max_step, step[s]);
        max_off = fmaxf(max_off, off[s]);
    }
    const uint16_t dh = f16_clamped(max_step / 63), dminh = f16_clamped(max_off / 63);
    const float d = alloy_f16_to_f32(dh), dmin = alloy_f16_to_f32(dminh);
    uint8_t sc[8], m[8];
    for (int s = 0; s < 8; s++) {
        float a = d > 0.0f ? nearbyintf(fminf(step[s] / d, 63.0f)) : 0.0f;
        if (a == 0.0f && step[s] > 0.0f) a = 1.0f; // keep a step: level 0 alone is worse
        float b = dmin > 0.0f ? nearbyintf(fminf(off[s] / dmin, 63.0f)) : 0.0f;
        sc[s] = (uint8_t)a;
        m[s] = (uint8_t)b;
    }
    for (int s = 0; s < 4; s++) { // GGML's packing: see alloy/quant.h
        scales[s] = (uint8_t)(sc[s] | ((sc[s + 4] >> 4) << 6));
        scales[s + 4] = (uint8_t)(m[s] | ((m[s + 4] >> 4) << 6));
        scales[s + 8] = (uint8_t)((sc[s + 4] & 15) | ((m[s + 4] & 15) << 4));
    }
    uint8_t L[QKK];
    for (int s = 0; s < 8; s++) {
        const float step_s = d * (float)sc[s], off_s = dmin * (float)m[s]; // as the dequantiser
        for (int l = 0; l < 32; l++) {
            float q = 0.0f;
            if (step_s > 0.0f) q = nearbyintf(fminf(fmaxf((x[32 * s + l] + off_s) / step_s, 0.0f), 15.0f));
            L[32 * s + l] = (uint8_t)q;
        }
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    store_u16(out, dh);
    store_u16(out + 2, dminh);
}

void alloy_quantize_row(alloy_qtype t, void *out, const float *x, int64_t n) {
    ALLOY_ASSERT(qtype_valid(t) && n >= 0 && n % qtype_elems[t] == 0);
    uint8_t *o = out;
    switch (t) {
    case ALLOY_QTYPE_F32: memcpy(out, x, (size_t)n * sizeof(float)); break;
    case ALLOY_QTYPE_F16: {
#ifdef QUANT_X86
        if (alloy_quant_simd_supported()) {
            f32_to_f16_row_avx512(out, x, n);
            break;
        }
#endif
        for (int64_t i = 0; i < n; i++) store_u16(o + 2 * i, alloy_f32_to_f16(x[i]));
        break;
    }
    case ALLOY_QTYPE_Q8_0:
        for (int64_t b = 0; b < n / QK; b++) quantize_block_q8_0(o + 34 * b, x + QK * b);
        break;
    case ALLOY_QTYPE_Q4_0:
        for (int64_t b = 0; b < n / QK; b++) quantize_block_q4_0(o + 18 * b, x + QK * b);
        break;
    case ALLOY_QTYPE_Q4_K:
        for (int64_t b = 0; b < n / QKK; b++) quantize_block_q4_k(o + 144 * b, x + QKK * b);
        break;
    default: break;
    }
}

/* The dequantisers multiply in fp32 in GGML's order; this file is compiled as ISO C, where
 * GCC does not contract a·b - c into a fused multiply-add, so the roundings are GGML's. */
void alloy_dequantize_row(alloy_qtype t, float *y, const void *q, int64_t n) {
    ALLOY_ASSERT(qtype_valid(t) && n >= 0 && n % qtype_elems[t] == 0);
    const uint8_t *p = q;
    switch (t) {
    case ALLOY_QTYPE_F32: memcpy(y, q, (size_t)n * sizeof(float)); break;
    case ALLOY_QTYPE_F16: {
#ifdef QUANT_X86
        if (alloy_quant_simd_supported()) {
            f16_to_f32_row_avx512(y, q, n);
            break;
        }
#endif
        for (int64_t i = 0; i < n; i++) y[i] = load_f16(p + 2 * i);
        break;
    }
    case ALLOY_QTYPE_Q8_0:
        for (int64_t b = 0; b < n / QK; b++) {
            const uint8_t *blk = p + 34 * b;
            const float d = load_f16(blk);
            const int8_t *qs = (const int8_t *)(blk + 2);
            for (int j = 0; j < QK; j++) y[QK * b + j] = (float)qs[j] * d;
        }
        break;
    case ALLOY_QTYPE_Q4_0:
        for (int64_t b = 0; b < n / QK; b++) {
            const uint8_t *blk = p + 18 * b;
            const float d = load_f16(blk);
            for (int j = 0; j < QK / 2; j++) {
                y[QK * b + j] = (float)((blk[2 + j] & 15) - 8) * d;
                y[QK * b + j + QK / 2] = (float)((blk[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case ALLOY_QTYPE_Q4_K:
        for (int64_t b = 0; b < n / QKK; b++) {
            const uint8_t *blk = p + 144 * b;
            const float d = load_f16(blk), dmin = load_f16(blk + 2);
            uint8_t sc[8], m[8];
            q4k_unpack_scales(sc, m, blk + 4);
            float *yb = y + QKK * b;
            for (int c = 0; c < 4; c++) {
                const uint8_t *qc = blk + 16 + 32 * c;
                const float d1 = d * (float)sc[2 * c], m1 = dmin * (float)m[2 * c];
                const float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)m[2 * c + 1];
                for (int l = 0; l < 32; l++) yb[64 * c + l] = d1 * (float)(qc[l] & 15) - m1;
                for (int l = 0; l < 32; l++) yb[64 * c + 32 + l] = d2 * (float)(qc[l] >> 4) - m2;
            }
        }
        break;
    default: break;
    }
}

size_t alloy_quantize(alloy_qtype t, void *out, const float *X, int64_t rows, int64_t cols) {
    size_t rb = alloy_quant_row_bytes(t, cols);
    if (rows <= 0 || (rb == 0 && cols != 0)) return 0;
    uint8_t *o = out;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) alloy_quantize_row(t, o + (size_t)r * rb, X + (size_t)r * (size_t)cols, cols);
    return (size_t)rows * rb;
}
