/*
 * simd.h — private helpers of the kernels: an exp that vectorises, and 16-lane float vectors.
 *
 * vexpf is written with plain arithmetic, fmaf and bit casts, so that a loop under
 * `#pragma omp simd` compiles to AVX-512 (or AVX2) code and the scalar remainder computes
 * exactly the same values: a result never depends on where a thread's range starts.
 * v16f is GCC's generic vector type: zmm registers where the CPU has AVX-512, pairs of ymm
 * otherwise, with the same results.
 */
#ifndef ALLOY_KERNELS_SIMD_H
#define ALLOY_KERNELS_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^x within 2 ulp over the normal range; 0 below -87.3 (e^-87.3 ≈ 1.2e-38), capped at
 * e^88.3 above; NaN stays NaN. Range reduction x = n·ln2 + r with |r| ≤ ln2/2 (two-part
 * ln2), then Cephes' degree-7 polynomial for e^r, then the exponent added by integer ops. */
static inline float vexpf(float x) {
    const float hi = 88.3f, lo = -87.3f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;                          // a NaN passes both comparisons unchanged
    const float magic = 12582912.0f;                 // 1.5·2^23: adding it rounds to an integer
    float t = fmaf(xc, 1.44269504088896341f, magic); // n + magic
    float n = t - magic;
    float r = fmaf(n, -0.693359375f, xc);            // ln2 in two parts (Cody and Waite)
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p, r * r, r) + 1.0f;
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    uint32_t sb = (tb - 0x4B400000u + 127u) << 23; // 2^n from n's bits in t's mantissa
    float s;
    memcpy(&s, &sb, sizeof s);
    float y = p * s;
    return x < lo ? 0.0f : y;
}

typedef float v16f __attribute__((vector_size(64)));

static inline v16f v16_load(const float *p) {
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v16_store(float *p, v16f v) { memcpy(p, &v, sizeof v); }
static inline v16f v16_set1(float x) { return (v16f){0} + x; }

#endif /* ALLOY_KERNELS_SIMD_H */
