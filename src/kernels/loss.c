/*
 * loss.c — softmax cross-entropy (fused with its gradient) and plain softmax.
 */
#include "alloy/kernels.h"

#include <math.h>

void crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                                   const float *row_scale, int64_t N, int V) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = logits + i * V;
        int32_t y = targets[i];
        if (y < 0) {
            losses[i] = 0.0f;
            if (dlogits) {
                float *dx = dlogits + i * V;
                for (int v = 0; v < V; v++) dx[v] = 0.0f;
            }
            continue;
        }
        float maxv = -INFINITY;
        for (int v = 0; v < V; v++) maxv = x[v] > maxv ? x[v] : maxv;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)(x[v] - maxv));
        double logz = log(sum) + maxv;
        losses[i] = (float)(logz - x[y]);
        if (dlogits) {
            float scale = row_scale ? row_scale[i] : 1.0f;
            float *dx = dlogits + i * V;
            float xy = x[y]; // read before the in-place write may overwrite it
            for (int v = 0; v < V; v++) {
                float p = (float)exp((double)x[v] - logz);
                dx[v] = p * scale;
            }
            dx[y] = (float)(exp((double)xy - logz) - 1.0) * scale;
        }
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
