/*
 * loss.c — softmax cross-entropy (fused with its gradient) and plain softmax.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <string.h>

#include "simd.h"

void crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                                   const float *row_scale, int64_t N, int V) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = logits + i * V;
        int32_t y = targets[i];
        if (y < 0) {
            losses[i] = 0.0f;
            if (dlogits) memset(dlogits + i * V, 0, sizeof(float) * (size_t)V);
            continue;
        }
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int v = 0; v < V; v++) maxv = x[v] > maxv ? x[v] : maxv;
        float xy = x[y]; // read before an in-place write may overwrite it
        double sum = 0.0;
        if (dlogits) {
            // one exp per logit: e = exp(x - max) is kept in dlogits, then scaled by 1/sum
            float *dx = dlogits + i * V;
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) {
                float e = vexpf(x[v] - maxv);
                dx[v] = e;
                sum += e;
            }
            float scale = row_scale ? row_scale[i] : 1.0f;
            float k = (float)(scale / sum);
#pragma omp simd
            for (int v = 0; v < V; v++) dx[v] *= k;
            dx[y] = (float)(exp((double)xy - maxv) / sum - 1.0) * scale;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int v = 0; v < V; v++) sum += vexpf(x[v] - maxv);
        }
        losses[i] = (float)(log(sum) + maxv - xy);
    }
}

void softmax_forward(float *probs, const float *logits, int V, float temperature) {
    float maxv = -INFINITY;
    for (int v = 0; v < V; v++) maxv = logits[v] > maxv ? logits[v] : maxv;
    double sum = 0.0;
    for (int v = 0; v < V; v++) {
        float e = expf((logits[v] - maxv) / temperature);
        probs[v] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int v = 0; v < V; v++) probs[v] *= inv;
}
