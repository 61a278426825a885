/*
 * embedding.c — token (and learned position) embeddings.
 */
#include "alloy/kernels.h"

void embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                       int B, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < (int64_t)B * T; i++) {
        int t = (int)(i % T);
        float *o = out + i * C;
        const float *e = wte + (int64_t)tokens[i] * C;
        if (wpe) {
            const float *p = wpe + (int64_t)t * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            for (int c = 0; c < C; c++) o[c] = e[c];
        }
    }
}

void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                        int B, int T, int C) {
    // Threads own disjoint column slices, so repeated tokens never race and every sum keeps
    // the token order.
    const int block = 16;
    int nblocks = (C + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * block, c1 = c0 + block < C ? c0 + block : C;
        for (int64_t i = 0; i < (int64_t)B * T; i++) {
            const float *d = dout + i * C;
            float *e = dwte + (int64_t)tokens[i] * C;
            for (int c = c0; c < c1; c++) e[c] += d[c];
            if (dwpe) {
                float *p = dwpe + (int64_t)(i % T) * C;
                for (int c = c0; c < c1; c++) p[c] += d[c];
            }
        }
    }
}
