/*
 * quant.c — GGML-compatible block formats (Q8_0, Q4_0, Q4_K, and F16) and the products that
 * read them for inference: alloy_quant_matvec (decode, one token) and alloy_quant_matmul
 * (prefill, n tokens). The formats and the numerical contract are in alloy/quant.h.
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
#include "alloy/quant.h"

#include "alloy/base.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

/* ---- the formats ---------------------------------------------------------------------------- */

static const char *const qtype_names[ALLOY_QTYPE_COUNT] = {"f32", "f16", "q8_0", "q4_0", "q4_k"};
static const int qtype_elems[ALLOY_QTYPE_COUNT] = {1, 1, QK, QK, QKK};
static const size_t qtype_bytes[ALLOY_QTYPE_COUNT] = {4, 2, 34, 18, 144};

static bool qtype_valid(alloy_qtype t) { return (unsigned)t < (unsigned)ALLOY_QTYPE_COUNT; }

const char *alloy_qtype_name(alloy_qtype t) { return qtype_valid(t) ? qtype_names[t] : "?"; }

bool alloy_qtype_parse(const char *name, alloy_qtype *out) {
    if (!name) return false;
    for (int t = 0; t < ALLOY_QTYPE_COUNT; t++) {
        if (strcasecmp(name, qtype_names[t]) == 0) {
            *out = (alloy_qtype)t;
            return true;
        }
    }
    return false;
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

static inline uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline void store_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline float load_f16(const uint8_t *p) { return alloy_f16_to_f32(load_u16(p)); }

/* ---- quantisers ---------------------------------------------------------------------------- */

#define F16_NAN 0x7E00u
#define F16_MAX 0x7BFFu /* 65504 */

/* True if every one of x (n) is finite. */
static bool all_finite(const float *x, int n) {
    bool ok = true;
    for (int j = 0; j < n; j++) ok &= fabsf(x[j]) <= FLT_MAX;
    return ok;
}

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

/* The 8 scales and mins of a Q4_K super-block from its 12 packed bytes (get_scale_min_k4). */
static inline void q4k_unpack_scales(uint8_t sc[8], uint8_t m[8], const uint8_t *p) {
    for (int s = 0; s < 4; s++) {
        sc[s] = p[s] & 63;
        m[s] = p[s + 4] & 63;
        sc[s + 4] = (uint8_t)((p[s + 8] & 15) | ((p[s] >> 6) << 4));
        m[s + 4] = (uint8_t)((p[s + 8] >> 4) | ((p[s + 4] >> 6) << 4));
    }
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

#ifdef QUANT_X86
TARGET_Q static void f32_to_f16_row_avx512(uint16_t *out, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) out[i] = alloy_f32_to_f16(x[i]);
}

TARGET_Q static void f16_to_f32_row_avx512(float *y, const uint16_t *h, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
    for (; i < n; i++) y[i] = alloy_f16_to_f32(h[i]);
}
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

static void quant_x32_scalar(xq32_group *g, const float *x, int nblk) {
    memset(g, 0, sizeof *g);
    for (int b = 0; b < nblk; b++) {
        const float *xb = x + QK * b;
        int8_t *q0 = g->q + 128 * (b >> 2) + 16 * (b & 3), *q1 = q0 + 64;
        const int L = lane_of_block(b);
        if (!all_finite(xb, QK)) {
            g->d[L] = NAN;
            continue;
        }
        float amax = 0.0f, id;
        for (int j = 0; j < QK; j++) amax = fabsf(xb[j]) > amax ? fabsf(xb[j]) : amax;
        g->d[L] = x_scale(amax, &id);
        int s = 0;
        for (int j = 0; j < QK; j++) {
            int v = (int)lrintf(xb[j] * id);
            (j < 16 ? q0 : q1)[j & 15] = (int8_t)v;
            s += v;
        }
        g->s[L] = s;
    }
}

static void quant_xk_scalar(xqk_block *k, const float *x) {
    memset(k, 0, sizeof *k);
    if (!all_finite(x, QKK)) {
        k->d = NAN;
        return;
    }
    float amax = 0.0f, id;
    for (int j = 0; j < QKK; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    k->d = x_scale(amax, &id);
    for (int s = 0; s < 8; s++) {
        int sum = 0;
        for (int l = 0; l < 32; l++) {
            int v = (int)lrintf(x[32 * s + l] * id);
            k->q[32 * q4k_pos(s) + l] = (int8_t)v;
            sum += v;
        }
        k->bs[s] = (int16_t)sum;
    }
}

#ifdef QUANT_X86
TARGET_Q static inline bool finite16(__m512 a) {
    return _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ) == 0xFFFF;
}

TARGET_Q static void quant_x32_avx512(xq32_group *g, const float *x, int nblk) {
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

TARGET_Q static void quant_xk_avx512(xqk_block *k, const float *x) {
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
#endif

#ifdef QUANT_X86
/* quant_x32_scalar in 8-lane vectors: the same products x·id, rounded to nearest even. */
TARGET_A2 static void quant_x32_avx2(xq32_group *g, const float *x, int nblk) {
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
#endif

#ifdef QUANT_X86
/* quant_xk_scalar in 8-lane vectors. */
TARGET_A2 static void quant_xk_avx2(xqk_block *k, const float *x) {
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
#endif

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

/* ---- scalar kernels: the reference the SIMD ones equal bitwise ------------------------------- */

/* The fixed tree that sums the 16 lanes. */
static inline float tree16(const float a[16]) {
    float h[8], u[4];
    for (int i = 0; i < 8; i++) h[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) u[i] = h[i] + h[i + 4];
    float v0 = u[0] + u[2], v1 = u[1] + u[3];
    return v0 + v1;
}

/* part (nt) = the chunk's partial sums of one row of Q8_0 / Q4_0 weights (nb blocks at w)
 * against x (nt tokens, xc[t]). */
static void q32_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nb, bool q8) {
    const int bsz = q8 ? 34 : 18;
    for (int t = 0; t < nt; t++) {
        float acc[16] = {0};
        for (int g = 0; g * 16 < nb; g++) {
            const xq32_group *xg = &xc[t].g[g];
            for (int L = 0; L < 16; L++) {
                const int bg = lane_of_block(L), b = 16 * g + bg;
                int32_t isum = 0;
                float dw = 0.0f, dx = 0.0f;
                if (b < nb) {
                    const uint8_t *blk = w + (size_t)bsz * b;
                    const int8_t *x0 = xg->q + 128 * (bg >> 2) + 16 * (bg & 3), *x1 = x0 + 64;
                    for (int j = 0; j < 16; j++) {
                        int w0, w1;
                        if (q8) {
                            w0 = (int8_t)blk[2 + j];
                            w1 = (int8_t)blk[2 + 16 + j];
                        } else {
                            w0 = (blk[2 + j] & 15) - 8;
                            w1 = (blk[2 + j] >> 4) - 8;
                        }
                        isum += w0 * x0[j] + w1 * x1[j];
                    }
                    dw = load_f16(blk);
                    dx = xg->d[L];
                }
                acc[L] = fmaf((float)isum, dw * dx, acc[L]);
            }
        }
        part[t] = tree16(acc);
    }
}

/* The same for Q4_K weights (nsb super-blocks at w). The 256 products of a super-block are
 * taken as the AVX-512 kernel holds them: four 64-byte vectors v = 0..3 of nibbles, v = 0 the
 * low nibbles of qs[0..63] (sub-blocks 0 | 2), 1 their high nibbles (1 | 3), 2 and 3 the same of
 * qs[64..127] (4 | 6, 5 | 7), against x in the same order (xqk_block.q); lane L of 16 sums
 * bytes 4L..4L+3 of each v weighted by the scale of its sub-block (vpdpbusd then vpdpwssd):
 * an exact integer below 2^21, so exact in fp32. */
static void q4k_row_scalar(float *part, const uint8_t *w, const xchunk *xc, int nt, int nsb) {
    for (int t = 0; t < nt; t++) {
        float acc[16] = {0}, accm[4] = {0};
        for (int b = 0; b < nsb; b++) {
            const uint8_t *blk = w + (size_t)144 * b;
            const xqk_block *xk = &xc[t].k[b];
            uint8_t sc[8], m[8];
            q4k_unpack_scales(sc, m, blk + 4);
            const float dd = load_f16(blk) * xk->d, dm = load_f16(blk + 2) * xk->d;
            for (int L = 0; L < 16; L++) {
                int32_t lane = 0;
                for (int v = 0; v < 4; v++) {
                    static const int sub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
                    const uint8_t *qv = blk + 16 + 64 * (v >> 1);
                    int32_t dot = 0;
                    for (int j = 4 * L; j < 4 * L + 4; j++)
                        dot += ((v & 1) ? qv[j] >> 4 : qv[j] & 15) * xk->q[64 * v + j];
                    lane += sc[sub[v][L >> 3]] * dot;
                }
                acc[L] = fmaf((float)lane, dd, acc[L]);
            }
            for (int i = 0; i < 4; i++) {
                const int32_t mn = m[2 * i] * xk->bs[2 * i] + m[2 * i + 1] * xk->bs[2 * i + 1];
                accm[i] = fmaf((float)mn, dm, accm[i]);
            }
        }
        part[t] = tree16(acc) - ((accm[0] + accm[2]) + (accm[1] + accm[3]));
    }
}

/* part (nt) = row w (cols, f32 or f16) · x_t for nt tokens (rows of x, cols apart). */
static void dense_row_scalar(float *part, const uint8_t *w, const float *x, int nt, int cols, bool f16) {
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * cols;
        float acc[16] = {0};
        for (int c = 0; c < cols; c += 16) {
            for (int L = 0; L < 16; L++) {
                float wv = 0.0f, xv = 0.0f;
                if (c + L < cols) {
                    const uint8_t *wp = w + (f16 ? 2 : 4) * (size_t)(c + L);
                    wv = f16 ? load_f16(wp) : bits_f32((uint32_t)wp[0] | (uint32_t)wp[1] << 8 |
                                                       (uint32_t)wp[2] << 16 | (uint32_t)wp[3] << 24);
                    xv = xt[c + L];
                }
                acc[L] = fmaf(wv, xv, acc[L]);
            }
        }
        part[t] = tree16(acc);
    }
}

/* ---- AVX-512 kernels ------------------------------------------------------------------------ */

#ifdef QUANT_X86
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

/* The instances: tiles of 8, 4, 2 and 1 tokens. */
#define TILE_INSTANCES(name, call)                                                                  \
    TARGET_Q static void name##_8 call(8) TARGET_Q static void name##_4 call(4)                     \
        TARGET_Q static void name##_2 call(2) TARGET_Q static void name##_1 call(1)
#define Q8_CALL(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q32_row_avx512(p, w, x, NT, n, true); }
#define Q4_CALL(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q32_row_avx512(p, w, x, NT, n, false); }
#define QK_CALL(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q4k_row_avx512(p, w, x, NT, n); }
TILE_INSTANCES(q8_tile, Q8_CALL)
TILE_INSTANCES(q4_tile, Q4_CALL)
TILE_INSTANCES(qk_tile, QK_CALL)
#endif /* QUANT_X86 */

/* ---- AVX2 kernels: the same arithmetic in pairs of 8-lane vectors (lanes 0–7, 8–15) -------- */

#ifdef QUANT_X86
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

#define TILE_INSTANCES_AVX2(name, call)                                                             \
    TARGET_A2 static void name##_8 call(8) TARGET_A2 static void name##_4 call(4)                   \
        TARGET_A2 static void name##_2 call(2) TARGET_A2 static void name##_1 call(1)
#define Q8_CALL2(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q32_row_avx2(p, w, x, NT, n, true); }
#define Q4_CALL2(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q32_row_avx2(p, w, x, NT, n, false); }
TILE_INSTANCES_AVX2(q8_tile2, Q8_CALL2)
#define QK_CALL2(NT) (float *p, const uint8_t *w, const xchunk *x, int n) { q4k_row_avx2(p, w, x, NT, n); }
TILE_INSTANCES_AVX2(q4_tile2, Q4_CALL2)
TILE_INSTANCES_AVX2(qk_tile2, QK_CALL2)
#endif /* QUANT_X86 */

/* Width of the next tile for nt tokens left. */
static inline int tile_width(int left) { return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1; }

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
    for (int u = 0; u < nt;) {
        const int k = tile_width(nt - u);
        float *p = part + u;
        const xchunk *x = xc + u;
        if (isa == ALLOY_QUANT_AVX2) {
            if (t == ALLOY_QTYPE_Q8_0) {
                if (k == 8) q8_tile2_8(p, w, x, n); else if (k == 4) q8_tile2_4(p, w, x, n);
                else if (k == 2) q8_tile2_2(p, w, x, n); else q8_tile2_1(p, w, x, n);
            } else if (t == ALLOY_QTYPE_Q4_0) {
                if (k == 8) q4_tile2_8(p, w, x, n); else if (k == 4) q4_tile2_4(p, w, x, n);
                else if (k == 2) q4_tile2_2(p, w, x, n); else q4_tile2_1(p, w, x, n);
            } else {
                if (k == 8) qk_tile2_8(p, w, x, n); else if (k == 4) qk_tile2_4(p, w, x, n);
                else if (k == 2) qk_tile2_2(p, w, x, n); else qk_tile2_1(p, w, x, n);
            }
        } else if (t == ALLOY_QTYPE_Q8_0) {
            if (k == 8) q8_tile_8(p, w, x, n); else if (k == 4) q8_tile_4(p, w, x, n);
            else if (k == 2) q8_tile_2(p, w, x, n); else q8_tile_1(p, w, x, n);
        } else if (t == ALLOY_QTYPE_Q4_0) {
            if (k == 8) q4_tile_8(p, w, x, n); else if (k == 4) q4_tile_4(p, w, x, n);
            else if (k == 2) q4_tile_2(p, w, x, n); else q4_tile_1(p, w, x, n);
        } else {
            if (k == 8) qk_tile_8(p, w, x, n); else if (k == 4) qk_tile_4(p, w, x, n);
            else if (k == 2) qk_tile_2(p, w, x, n); else qk_tile_1(p, w, x, n);
        }
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
        return;
    }
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
#endif
}

/* ---- the drivers ----------------------------------------------------------------------------- */

/* product's work for the calling thread of an OpenMP team: every thread calls it with the same
 * arguments, xbuf shared by them; it returns after its last loop's barrier. n, rows, cols > 0. */
static void product_team(alloy_qtype t, float *Y, const void *W, const float *X, int n, int rows, int cols,
                         alloy_quant_isa isa, xchunk *xbuf, int xt) {
    const size_t rb = alloy_quant_row_bytes(t, cols), bsz = qtype_bytes[t];
    const int be = qtype_elems[t];
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
    ALLOY_ASSERT(qtype_valid(t) && n >= 0 && rows >= 0 && cols >= 0 && cols % qtype_elems[t] == 0);
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
    ALLOY_ASSERT(qtype_valid(t) && rows > 0 && cols > 0 && cols % qtype_elems[t] == 0);
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
