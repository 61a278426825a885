/*
 * adamw.c — the AdamW update (Loshchilov & Hutter), written to match torch.optim.AdamW's
 * single-tensor path term for term, and the squared norm used for gradient clipping.
 */
#include "alloy/kernels.h"

#include <math.h>

void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int64_t step) {
    // the scalar terms in double precision, as torch computes them in Python
    double bias1 = 1.0 - pow(beta1, (double)step);
    double bias2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bias1);
    float bias2_sqrt = (float)sqrt(bias2);
    float decay = (float)(1.0 - (double)lr * weight_decay);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float p = param[i] * decay;
        float mi = m[i] * beta1 + (1.0f - beta1) * g;
        float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        param[i] = p - step_size * (mi / denom);
    }
}

double sum_squares(const float *g, int64_t n) {
    // A fixed number of chunks summed in order: the result does not depend on the thread
    // count or on which thread finishes first (an OpenMP reduction would).
    enum { CHUNKS = 64 };
    double part[CHUNKS];
    int64_t per = (n + CHUNKS - 1) / CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < CHUNKS; c++) {
        int64_t i0 = c * per, i1 = i0 + per < n ? i0 + per : n;
        double s = 0.0;
        for (int64_t i = i0; i < i1; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double s = 0.0;
    for (int c = 0; c < CHUNKS; c++) s += part[c];
    return s;
}
