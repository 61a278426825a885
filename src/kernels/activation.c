/*
 * activation.c — GELU (tanh form), SwiGLU, and the residual add.
 */
#include "alloy/kernels.h"

#include <math.h>

#include "simd.h"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* 0.5·x·(1 + tanh(u)) = x·σ(2u): one expf instead of glibc's slow tanhf, and accurate in
 * relative terms for every x (no cancellation in 1 + tanh for negative x). */
void gelu_forward(float *out, const float *inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + vexpf(-2.0f * u));
    }
}

void gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float s = 1.0f / (1.0f + vexpf(-2.0f * u)); // σ(2u) = (1 + tanh u) / 2
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = (s + x * 2.0f * s * (1.0f - s) * du) * dout[i];
    }
}

void swiglu_forward(float *out, const float *gu, int64_t N, int F) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * F, *u = g + F;
        float *o = out + i * F;
#pragma omp simd
        for (int j = 0; j < F; j++) {
            float sig = 1.0f / (1.0f + vexpf(-g[j]));
            o[j] = g[j] * sig * u[j];
        }
    }
}

void swiglu_backward(float *dgu, const float *dout, const float *gu, int64_t N, int F) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * F, *u = g + F;
        const float *d = dout + i * F;
        float *dg = dgu + i * 2 * F, *du = dg + F;
#pragma omp simd
        for (int j = 0; j < F; j++) {
            float sig = 1.0f / (1.0f + vexpf(-g[j]));
            float silu = g[j] * sig;
            du[j] = d[j] * silu;
            dg[j] = d[j] * u[j] * sig * (1.0f + g[j] * (1.0f - sig));
        }
    }
}

void add_forward(float *out, const float *a, const float *b, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
