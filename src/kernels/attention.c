/*
 * attention.c — causal multi-head / grouped-query attention and rotary position embeddings.
 *
 * The forward keeps the softmax probabilities (B, H, T, T) for the backward. Work is split
 * over (batch, KV head) groups: a group owns its k and v gradients, so no two threads ever
 * add into the same place.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <string.h>

void rope_init_tables(float *cos_table, float *sin_table, int maxT, int hd, float theta) {
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        // as Hugging Face: inv_freq = 1 / theta^(2i/hd) in fp32, angle = t·inv_freq in fp32
        float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / hd));
        for (int t = 0; t < maxT; t++) {
            float angle = (float)t * inv_freq;
            cos_table[(int64_t)t * half + i] = cosf(angle);
            sin_table[(int64_t)t * half + i] = sinf(angle);
        }
    }
}

/* Rotates every q and k head of each token by its position; sign -1 applies the inverse. */
static void rope_apply(float *qkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                       int hd, float sign) {
    int half = hd / 2;
    int width = (H + 2 * KV) * hd;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        int t = (int)(i % T);
        const float *c = cos_table + (int64_t)t * half, *s = sin_table + (int64_t)t * half;
        float *row = qkv + i * width;
        for (int h = 0; h < H + KV; h++) { // q heads then k heads: contiguous
            float *x = row + (int64_t)h * hd;
            for (int j = 0; j < half; j++) {
                float x1 = x[j], x2 = x[j + half];
                float sn = sign * s[j];
                x[j] = x1 * c[j] - x2 * sn;
                x[j + half] = x2 * c[j] + x1 * sn;
            }
        }
    }
}

void rope_forward(float *qkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                  int hd) {
    rope_apply(qkv, cos_table, sin_table, B, T, H, KV, hd, 1.0f);
}

void rope_backward(float *dqkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                   int hd) {
    rope_apply(dqkv, cos_table, sin_table, B, T, H, KV, hd, -1.0f);
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int H, int KV, int hd) {
    int width = (H + 2 * KV) * hd;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int kvh = h / group;
            const float *base = qkv + (int64_t)b * T * width;
            for (int t = 0; t < T; t++) {
                const float *q = base + (int64_t)t * width + (int64_t)h * hd;
                float *a = att + (((int64_t)b * H + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = base + (int64_t)t2 * width + (int64_t)(H + kvh) * hd;
                    float dot = 0.0f;
                    // simd reduction: a fixed, compile-time order of partial sums, so still deterministic
#pragma omp simd reduction(+ : dot)
                    for (int d = 0; d < hd; d++) dot += q[d] * k[d];
                    dot *= scale;
                    a[t2] = dot;
                    if (dot > maxv) maxv = dot;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    float e = expf(a[t2] - maxv);
                    a[t2] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
                float *o = out + ((int64_t)b * T + t) * H * hd + (int64_t)h * hd;
                for (int d = 0; d < hd; d++) o[d] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = base + (int64_t)t2 * width + (int64_t)(H + KV + kvh) * hd;
                    float w = a[t2];
                    for (int d = 0; d < hd; d++) o[d] += w * v[d];
                }
            }
        }
    }
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                        int B, int T, int H, int KV, int hd) {
    int width = (H + 2 * KV) * hd;
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int kvh = 0; kvh < KV; kvh++) {
            float *datt = scratch + ((int64_t)b * KV + kvh) * T; // (T) one row at a time
            const float *base = qkv + (int64_t)b * T * width;
            float *dbase = dqkv + (int64_t)b * T * width;
            // this group owns: q heads [kvh·group, (kvh+1)·group), k head kvh, v head kvh
            for (int t = 0; t < T; t++) {
                float *row = dbase + (int64_t)t * width;
                memset(row + (int64_t)kvh * group * hd, 0, sizeof(float) * group * hd);
                memset(row + (int64_t)(H + kvh) * hd, 0, sizeof(float) * hd);
                memset(row + (int64_t)(H + KV + kvh) * hd, 0, sizeof(float) * hd);
            }
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                for (int t = 0; t < T; t++) {
                    const float *a = att + (((int64_t)b * H + h) * T + t) * T;
                    const float *d = dout + ((int64_t)b * T + t) * H * hd + (int64_t)h * hd;
                    const float *q = base + (int64_t)t * width + (int64_t)h * hd;
                    float *dq = dbase + (int64_t)t * width + (int64_t)h * hd;
                    // datt = dout·v; dv += att·dout
                    float dot_sum = 0.0f;
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *v = base + (int64_t)t2 * width + (int64_t)(H + KV + kvh) * hd;
                        float *dv = dbase + (int64_t)t2 * width + (int64_t)(H + KV + kvh) * hd;
                        float s = 0.0f;
#pragma omp simd reduction(+ : s)
                        for (int j = 0; j < hd; j++) s += d[j] * v[j];
                        datt[t2] = s;
                        dot_sum += s * a[t2];
                        float w = a[t2];
                        for (int j = 0; j < hd; j++) dv[j] += w * d[j];
                    }
                    // softmax backward, then the scaled q·k product
                    for (int t2 = 0; t2 <= t; t2++) {
                        float dpre = a[t2] * (datt[t2] - dot_sum) * scale;
                        const float *k = base + (int64_t)t2 * width + (int64_t)(H + kvh) * hd;
                        float *dk = dbase + (int64_t)t2 * width + (int64_t)(H + kvh) * hd;
                        for (int j = 0; j < hd; j++) {
                            dq[j] += dpre * k[j];
                            dk[j] += dpre * q[j];
                        }
                    }
                }
            }
        }
    }
}
