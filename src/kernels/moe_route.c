/*
 * moe_route.c — the routing of a mixture-of-experts layer (Mixtral's sparse block), once for the
 * training model (src/model/moe_layer.c) and the inference engine (src/infer/engine_moe.c), so
 * that the two route every row the same, bit for bit:
 *
 *   p = softmax(router logits)             (N, E)   in place
 *   S_n = the K largest p_n,e (descending; ties: the lower index first)      topk (N, K)
 *   g_n,k = p_n,S_k / Σ_j p_n,S_j          (N, K)   gates
 *
 * then the dispatch plan: the (row, k) pairs grouped by expert ("dispatch order": expert 0's
 * first, each group in row order), so that each expert is one product over its rows; and the
 * combination out_n += Σ_k g_n,k · y[dispatch row of (n, k)], in k order.
 * Everything is a fixed function of the inputs: no atomics, each sum in one order, results
 * independent of the thread count.
 */
#include "alloy/kernels.h"

#include <math.h>
#include <string.h>

void moe_route_forward(float *probs, int32_t *topk, float *gates, int64_t N, int E, int K) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *p = probs + n * E;
        float mx = p[0];
        for (int e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        float sum = 0.0f;
        for (int e = 0; e < E; e++) {
            p[e] = expf(p[e] - mx);
            sum += p[e];
        }
        for (int e = 0; e < E; e++) p[e] /= sum;
        int32_t *sel = topk + n * K;
        float z = 0.0f;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= sel[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e; // strict: ties keep the lower index
            }
            sel[k] = best;
            z += p[best];
        }
        for (int k = 0; k < K; k++) gates[n * K + k] = p[sel[k]] / z;
    }
}

void moe_dispatch_forward(int32_t *off, int32_t *slot_row, int32_t *row_token, int32_t *cursor, const int32_t *topk,
                          int64_t N, int E, int K) {
    const int64_t NK = N * K;
    // counts, offsets, then each (row, k) its dispatch row
    memset(off, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (int64_t i = 0; i < NK; i++) off[topk[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    memcpy(cursor, off, sizeof(int32_t) * (size_t)E);
    for (int64_t i = 0; i < NK; i++) {
        int32_t r = cursor[topk[i]]++;
        slot_row[i] = r;
        row_token[r] = (int32_t)(i / K);
    }
}

void moe_combine_forward(float *out, const float *y, const float *gates, const int32_t *slot_row, int64_t N, int K,
                         int C) {
#pragma omp parallel for schedule(static) if (N * K * C > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *o = out + n * C;
        for (int k = 0; k < K; k++) {
            float g = gates[n * K + k];
            const float *yr = y + (int64_t)slot_row[n * K + k] * C;
            for (int c = 0; c < C; c++) o[c] += g * yr[c];
        }
    }
}
