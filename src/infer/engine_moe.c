/*
 * engine_moe.c — the inference engine's mixture-of-experts block: the router's logits in a fixed
 * order, then the routing, the dispatch plan and the combination of the training model
 * (src/kernels/moe_route.c), each expert one product over the rows routed to it.
 */
#include "internal.h"

#include <string.h>

/* probs (R, E) = xn (R, C) · Wrᵀ (E, C): each row's dot products in one fixed order whatever
 * the number of rows, so that a row routes the same in a prefill as in a decode step (BLAS
 * sums one row and several in different orders; a gate's last bit would then differ). */
static void router_logits(const alloy_engine *e, float *restrict probs, const float *restrict xn, const float *restrict w,
                          int R) {
    const int E = e->E, C = e->C;
    engine_use_threads(e, 2.0 * R * E * C);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < R; n++) {
        const float *x = xn + (size_t)n * C;
        for (int k = 0; k < E; k++) {
            const float *wk = w + (size_t)k * C;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int c = 0; c < C; c++) acc += x[c] * wk[c];
            probs[(size_t)n * E + k] = acc;
        }
    }
}

/* x (R, C) += the MoE block of layer lw on xn (R, C), as moe_forward of the training model:
 * router probabilities, top-K (ties: the lower index), renormalised gates; the (row, k) pairs
 * in dispatch order (expert 0's first, each in row order), one product per expert over its
 * rows; each row adds its K outputs, in k order. */
void engine_moe_rows(alloy_engine *e, const layer_matrices *lw, int R) {
    const int E = e->E, K = e->K, C = e->C;
    const size_t FF = (size_t)e->FF, F = (size_t)e->F;
    const int NK = R * K;
    router_logits(e, e->probs, e->xn, lw->router.w, R);
    engine_use_threads(e, (double)R * E * (8.0 + (double)K * K)); // softmax, top-K, gates
    moe_route_forward(e->probs, e->topk, e->gates, R, E, K);
    moe_dispatch_forward(e->expert_off, e->slot_row, e->row_token, e->expert_pos, e->topk, R, E, K);
    const int32_t *off = e->expert_off;
    for (int r = 0; r < NK; r++)
        memcpy(e->moe_in + (size_t)r * C, e->xn + (size_t)e->row_token[r] * C, sizeof(float) * (size_t)C);
    // the experts: up, activation over all dispatch rows, down
    for (int x = 0; x < E; x++) {
        int r0 = off[x], ne = off[x + 1] - r0;
        if (ne) engine_linear(e, e->fc + (size_t)r0 * FF, e->moe_in + (size_t)r0 * C, &lw->eup[x], ne, false, NULL);
    }
    engine_use_threads(e, 20.0 * NK * e->F);
    engine_activate(e, NK);
    for (int x = 0; x < E; x++) {
        int r0 = off[x], ne = off[x + 1] - r0;
        if (ne) engine_linear(e, e->moe_out + (size_t)r0 * C, e->act + (size_t)r0 * F, &lw->edown[x], ne, false, NULL);
    }
    // combine: x_n += Σ_k g_n,k · out[dispatch row of (n, k)], in k order
    engine_use_threads(e, 2.0 * NK * C);
    moe_combine_forward(e->x, e->moe_out, e->gates, e->slot_row, R, K, C);
}
