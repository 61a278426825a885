/*
 * loss.c — softmax cross-entropy (fused with its gradient) and plain softmax.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <omp.h>
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

/* log softmax(z / tau) of one row into out (double), returning nothing. */
static void log_softmax_row(double *out, const float *z, int V, double tau) {
    double mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = z[v] / tau > mx ? z[v] / tau : mx;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp(z[v] / tau - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++) out[v] = z[v] / tau - lse;
}

alloy_status distill_forward_backward(float *losses, float *dlogits, const float *logits, const float *teacher_logp,
                                      const int32_t *targets, const float *row_scale, int64_t N, int V,
                                      alloy_divergence kind, float temperature, float alpha, float beta) {
    double tau = temperature, b = beta;
    // per thread: log p at τ, log p at 1, and the gradient with respect to log p
    int nt = omp_get_max_threads();
    double *scratch = alloy_malloc(sizeof(double) * 3 * (size_t)V * (size_t)nt);
    if (!scratch) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the distillation loss (%d x %d doubles)", nt, 3 * V);
#pragma omp parallel num_threads(nt)
    {
        double *lp = scratch + 3 * (size_t)V * (size_t)omp_get_thread_num();
#pragma omp for schedule(static)
        for (int64_t i = 0; i < N; i++) {
            const float *z = logits + i * V;
            const float *lq = teacher_logp + i * V;
            double *lp1 = lp + V, *g = lp + 2 * (size_t)V;
            log_softmax_row(lp, z, V, tau);
            // D and g = ∂D/∂(log p) per entry: ∂D/∂z = (g − Σ p·g)·p / τ
            double d = 0.0;
            if (kind == ALLOY_DIVERGENCE_FORWARD_KL) {
                for (int v = 0; v < V; v++) {
                    double q = exp(lq[v]);
                    if (q > 0.0) d += q * (lq[v] - lp[v]);
                    g[v] = -q / exp(lp[v]); // ∂/∂p of −Σ q log p, times p below
                }
            } else if (kind == ALLOY_DIVERGENCE_REVERSE_KL) {
                for (int v = 0; v < V; v++) {
                    double p = exp(lp[v]);
                    double diff = lq[v] == -INFINITY ? (p > 0.0 ? INFINITY : 0.0) : lp[v] - lq[v];
                    if (p > 0.0) d += p * diff;
                    g[v] = diff + 1.0; // ∂/∂p of Σ p (log p − log q)
                }
            } else {
                for (int v = 0; v < V; v++) {
                    double p = exp(lp[v]), q = exp(lq[v]), m = b * q + (1.0 - b) * p;
                    double lm = log(m);
                    if (q > 0.0) d += b * q * (lq[v] - lm);
                    if (p > 0.0) d += (1.0 - b) * p * (lp[v] - lm);
                    g[v] = p > 0.0 ? (1.0 - b) * (lp[v] - lm) : 0.0;
                }
            }
            // chain through p = softmax(z/τ): ∂D/∂z_v = p_v·(h_v − Σ_u p_u h_u)/τ with h = ∂D/∂p
            double mean = 0.0;
            if (kind == ALLOY_DIVERGENCE_FORWARD_KL) {
                for (int v = 0; v < V; v++) mean += -exp(lq[v]); // Σ p·(−q/p) = −Σ q = −1 (kept exact)
            } else {
                for (int v = 0; v < V; v++) mean += exp(lp[v]) * g[v];
            }
            double kd = (1.0 - alpha) * tau * tau; // weight of D in the loss
            int32_t y = targets ? targets[i] : -1;
            double ce = 0.0;
            bool hard = alpha > 0.0f && y >= 0;
            if (hard) {
                log_softmax_row(lp1, z, V, 1.0);
                ce = -lp1[y];
            }
            losses[i] = (float)((hard ? alpha * ce : 0.0) + kd * d);
            if (dlogits) {
                double scale = row_scale ? row_scale[i] : 1.0;
                float *dz = dlogits + i * V;
                for (int v = 0; v < V; v++) {
                    double p = exp(lp[v]);
                    double h = kind == ALLOY_DIVERGENCE_FORWARD_KL ? -exp(lq[v]) - p * mean : p * (g[v] - mean);
                    double gz = kd * h / tau;
                    if (hard) gz += alpha * (exp(lp1[v]) - (v == y ? 1.0 : 0.0));
                    dz[v] = (float)(gz * scale);
                }
            }
        }
    }
    alloy_free(scratch);
    return ALLOY_STATUS_OK;
}
