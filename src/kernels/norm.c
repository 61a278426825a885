/*
 * norm.c — LayerNorm (GPT-2) and RMSNorm (Llama), forward and backward.
 *
 * Sums over a row run in double precision; statistics are stored in fp32. Weight gradients are
 * reduced over rows by column blocks, so their order does not depend on the thread count.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <string.h>

#define COL_BLOCK 64

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        double s = 0.0;
        for (int c = 0; c < C; c++) s += x[c];
        float m = (float)(s / C);
        double v = 0.0;
        for (int c = 0; c < C; c++) {
            double d = (double)x[c] - m;
            v += d * d;
        }
        float r = (float)(1.0 / sqrt(v / C + eps));
        float *o = out + i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = r;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C, *d = dout + i * C;
        float m = mean[i], r = rstd[i];
        // dnorm = dout·w; dx = r·(dnorm − mean(dnorm) − xhat·mean(dnorm·xhat))
        double sd = 0.0, sdx = 0.0;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * r;
            float dn = d[c] * weight[c];
            sd += dn;
            sdx += (double)dn * xhat;
        }
        float md = (float)(sd / C), mdx = (float)(sdx / C);
        float *dx = dinp + i * C;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - m) * r;
            dx[c] += r * (d[c] * weight[c] - md - xhat * mdx);
        }
    }
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        float dw[COL_BLOCK], db[COL_BLOCK];
        memset(dw, 0, sizeof dw);
        memset(db, 0, sizeof db);
        for (int64_t i = 0; i < N; i++) {
            const float *x = inp + i * C, *d = dout + i * C;
            float m = mean[i], r = rstd[i];
            for (int c = c0; c < c1; c++) {
                dw[c - c0] += d[c] * (x[c] - m) * r;
                db[c - c0] += d[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            dweight[c] += dw[c - c0];
            dbias[c] += db[c - c0];
        }
    }
}

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int64_t N, int C,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        float *o = out + i * C;
        for (int c = 0; c < C; c++) o[c] = x[c] * r * weight[c];
        rstd[i] = r;
    }
}

void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int64_t N, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; i++) {
        const float *x = inp + i * C, *d = dout + i * C;
        float r = rstd[i];
        // y = x·r·w; dx = r·(d·w) − x·r³·mean(d·w·x)
        double s = 0.0;
        for (int c = 0; c < C; c++) s += (double)d[c] * weight[c] * x[c];
        float k = (float)(s / C) * r * r * r;
        float *dx = dinp + i * C;
        for (int c = 0; c < C; c++) dx[c] += r * d[c] * weight[c] - k * x[c];
    }
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        float dw[COL_BLOCK];
        memset(dw, 0, sizeof dw);
        for (int64_t i = 0; i < N; i++) {
            const float *x = inp + i * C, *d = dout + i * C;
            float r = rstd[i];
            for (int c = c0; c < c1; c++) dw[c - c0] += d[c] * x[c] * r;
        }
        for (int c = c0; c < c1; c++) dweight[c] += dw[c - c0];
    }
}
