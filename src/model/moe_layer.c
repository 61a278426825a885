/*
 * moe_layer.c — the mixture-of-experts MLP of a layer (Mixtral's sparse block) for either family:
 * router, top-k routing with renormalised gates, dispatch of rows to experts, the experts'
 * products, and the load-balancing loss, forward and backward.
 *
 * Per layer, for N rows x (N, C) (the ln2 output):
 *   p = softmax(x · Wrᵀ)                  (N, E)   router_probs
 *   S_n = the K largest p_n,e (descending; ties: the lower index first)      topk
 *   g_n,k = p_n,S_k / Σ_j p_n,S_j          (N, K)   gates
 *   out_n += Σ_k g_n,k · expert_S_k(x_n)
 * The (token, k) assignments are grouped by expert ("dispatch order": expert 0's rows first,
 * each group in token order) and the rows of x gathered in that order (moe_in), so each expert
 * is one matmul over its rows; the N·K output rows (expert_out) are then combined per token in
 * k order. Everything is a fixed function of the inputs: no atomics, each sum in one order.
 * The routing, the dispatch plan and the combination are the kernels of src/kernels/moe_route.c,
 * shared with the inference engine.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Layer l's routing buffers for N rows (the shared set under recompute). */
typedef struct moe_view {
    float *probs;                          /* (N, E) */
    float *gates;                          /* (N, K) */
    float *fc;                             /* (N·K, FF) */
    float *y;                              /* (N·K, C) */
    int32_t *topk, *slot_row, *row_token;  /* (N, K), (N, K), (N·K) */
    int32_t *off;                          /* (E + 1) */
    int E, K, C, F, FF;
    bool gpt2;
    alloy_weight_layout layout;
} moe_view;

static moe_view get_view(const alloy_model *m, int l, int64_t N) {
    const alloy_config *c = &m->config;
    const alloy_acts *a = m->acts;
    moe_view v;
    int64_t s = m->opts.recompute ? 0 : l;
    v.E = c->n_experts;
    v.K = c->top_k;
    v.C = c->d_model;
    v.F = c->d_ff;
    v.gpt2 = c->family == ALLOY_FAMILY_GPT2;
    v.FF = v.gpt2 ? v.F : 2 * v.F;
    v.layout = v.gpt2 ? ALLOY_WEIGHT_IN_OUT : ALLOY_WEIGHT_OUT_IN;
    int64_t NK = N * v.K;
    v.probs = a->router_probs + s * N * v.E;
    v.gates = a->gates + s * NK;
    v.fc = a->fc + s * NK * v.FF;
    v.y = a->expert_out + s * NK * v.C;
    v.topk = a->topk + s * NK;
    v.slot_row = a->slot_row + s * NK;
    v.row_token = a->row_token + s * NK;
    v.off = a->expert_off + s * (v.E + 1);
    return v;
}

/* fc_act (N·K, F) = act(fc) */
static void activate(const moe_view *v, float *fc_act, int64_t NK) {
    if (v->gpt2) gelu_forward(fc_act, v->fc, NK * v->F);
    else swiglu_forward(fc_act, v->fc, NK, v->F);
}

/* moe_in (N·K, C): the rows of x in dispatch order. */
static void gather(float *moe_in, const float *x, const moe_view *v, int64_t NK) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < NK; r++)
        memcpy(moe_in + r * v->C, x + (int64_t)v->row_token[r] * v->C, sizeof(float) * (size_t)v->C);
}

void moe_forward(alloy_model *m, int l, int64_t N, const float *x, float *out, alloy_precision prec) {
    moe_view v = get_view(m, l, N);
    const alloy_layer_params *lp = &m->params.layers[l];
    const int E = v.E, K = v.K, C = v.C;
    const int64_t NK = N * K;
    // router logits, then per row: softmax in place, top-K, renormalised gates; the dispatch
    // plan (the kernels of src/kernels/moe_route.c, which the inference engine routes with too)
    matmul_forward(v.probs, x, lp->router_w, NULL, N, C, E, ALLOY_WEIGHT_OUT_IN, 0.0f, ALLOY_PRECISION_F32);
    moe_route_forward(v.probs, v.topk, v.gates, N, E, K);
    int32_t cursor[ALLOY_MAX_EXPERTS];
    moe_dispatch_forward(v.off, v.slot_row, v.row_token, cursor, v.topk, N, E, K);
    int64_t *counts = m->expert_tokens + (int64_t)l * E;
    for (int e = 0; e < E; e++) counts[e] = v.off[e + 1] - v.off[e];
    // the load-balancing statistics: each expert's probability mass over the rows
    double *psum = m->router_prob_sum + (int64_t)l * E;
#pragma omp parallel for schedule(static)
    for (int e = 0; e < E; e++) {
        double acc = 0.0;
        for (int64_t n = 0; n < N; n++) acc += v.probs[n * E + e];
        psum[e] = acc;
    }
    // the experts, one product each over their rows
    float *moe_in = m->acts->moe_in, *fc_act = m->acts->fc_act;
    gather(moe_in, x, &v, NK);
    for (int e = 0; e < E; e++) {
        int64_t r0 = v.off[e], ne = v.off[e + 1] - r0;
        if (ne == 0) continue;
        const alloy_expert_params *ep = &lp->experts[e];
        matmul_forward(v.fc + r0 * v.FF, moe_in + r0 * C, ep->up_w, ep->up_b, ne, C, v.FF, v.layout, 0.0f, prec);
    }
    activate(&v, fc_act, NK);
    for (int e = 0; e < E; e++) {
        int64_t r0 = v.off[e], ne = v.off[e + 1] - r0;
        if (ne == 0) continue;
        const alloy_expert_params *ep = &lp->experts[e];
        matmul_forward(v.y + r0 * C, fc_act + r0 * v.F, ep->down_w, ep->down_b, ne, v.F, C, v.layout, 0.0f, prec);
    }
    m->fc_act_layer = l;
    // combine: out_n += Σ_k g_n,k · y[row of (n, k)], in k order
    moe_combine_forward(out, v.y, v.gates, v.slot_row, N, K, C);
}

void moe_finish_forward(alloy_model *m, int64_t N) {
    const alloy_config *c = &m->config;
    int E = c->n_experts, L = c->n_layer;
    double rows = (double)L * (double)N, aux = 0.0;
    for (int e = 0; e < E; e++) {
        int64_t tot = 0;
        double p = 0.0;
        for (int l = 0; l < L; l++) {
            tot += m->expert_tokens[(int64_t)l * E + e];
            p += m->router_prob_sum[(int64_t)l * E + e];
        }
        m->expert_tokens_total[e] = tot;
        aux += ((double)tot / rows) * (p / rows);
    }
    m->aux_loss = (float)(E * aux);
}

void moe_backward(alloy_model *m, int l, int64_t N, const float *x, const float *dout, float *dx, float aux_scale,
                  alloy_precision prec) {
    moe_view v = get_view(m, l, N);
    const alloy_layer_params *lp = &m->params.layers[l];
    const alloy_layer_params *lg = &m->grads.layers[l];
    alloy_grad_acts *ga = m->gacts;
    const int E = v.E, K = v.K, C = v.C;
    const int64_t NK = N * K;
    float *fc_act = m->acts->fc_act, *moe_in = m->acts->moe_in, *dmoe = ga->dmoe;
    if (m->fc_act_layer != l) { // fc_act is kept for one layer: recompute it
        activate(&v, fc_act, NK);
        m->fc_act_layer = l;
    }
    // per (n, k): the gate's gradient dout_n · y, and the expert row's output gradient g · dout_n
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *d = dout + n * C;
        for (int k = 0; k < K; k++) {
            int64_t r = v.slot_row[n * K + k];
            const float *y = v.y + r * C;
            float *dy = dmoe + r * C, g = v.gates[n * K + k];
            double dot = 0.0;
            for (int c = 0; c < C; c++) {
                dot += (double)d[c] * y[c];
                dy[c] = g * d[c];
            }
            ga->dgate[n * K + k] = (float)dot;
        }
    }
    // the experts: down, activation, up; dmoe turns from output into input gradients
    for (int e = 0; e < E; e++) {
        int64_t r0 = v.off[e], ne = v.off[e + 1] - r0;
        if (ne == 0) continue;
        const alloy_expert_params *ep = &lp->experts[e], *eg = &lg->experts[e];
        matmul_backward(ga->dfc_act + r0 * v.F, eg->down_w, eg->down_b, dmoe + r0 * C, fc_act + r0 * v.F, ep->down_w,
                        ne, v.F, C, v.layout, prec);
    }
    if (v.gpt2) gelu_backward(ga->dfc, v.fc, ga->dfc_act, NK * v.F);
    else swiglu_backward(ga->dfc, ga->dfc_act, v.fc, NK, v.F);
    gather(moe_in, x, &v, NK); // the shared buffer holds the last layer the forward ran
    for (int e = 0; e < E; e++) {
        int64_t r0 = v.off[e], ne = v.off[e + 1] - r0;
        if (ne == 0) continue;
        const alloy_expert_params *ep = &lp->experts[e], *eg = &lg->experts[e];
        matmul_backward(dmoe + r0 * C, eg->up_w, eg->up_b, ga->dfc + r0 * v.FF, moe_in + r0 * C, ep->up_w, ne, C, v.FF,
                        v.layout, prec);
    }
    // the router: d aux / d p_e = coef·scale·E·f_e / (L·N) for every row (f_e = c_e / (L·N));
    // through the renormalisation g_k = p_k / Z: d p_Sk += (dg_k − Σ_j dg_j·g_j) / Z; then the
    // softmax: dz = p ⊙ (dp − p·dp)
    double coef = m->config.router_aux_loss_coef * (double)aux_scale;
    double rows = (double)m->config.n_layer * (double)N;
    float aux_dp[ALLOY_MAX_EXPERTS];
    for (int e = 0; e < E; e++)
        aux_dp[e] = (float)(coef * E * ((double)m->expert_tokens_total[e] / rows) / rows);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *p = v.probs + n * E, *g = v.gates + n * K, *dg = ga->dgate + n * K;
        const int32_t *sel = v.topk + n * K;
        float *dz = ga->drouter + n * E;
        float dp[ALLOY_MAX_EXPERTS];
        memcpy(dp, aux_dp, sizeof(float) * (size_t)E);
        float z = 0.0f, gdg = 0.0f;
        for (int k = 0; k < K; k++) {
            z += p[sel[k]];
            gdg += dg[k] * g[k];
        }
        for (int k = 0; k < K; k++) dp[sel[k]] += (dg[k] - gdg) / z;
        float pdp = 0.0f;
        for (int e = 0; e < E; e++) pdp += p[e] * dp[e];
        for (int e = 0; e < E; e++) dz[e] = p[e] * (dp[e] - pdp);
    }
    matmul_backward(dx, lg->router_w, NULL, ga->drouter, x, lp->router_w, N, C, E, ALLOY_WEIGHT_OUT_IN,
                    ALLOY_PRECISION_F32);
    // each token's input gradient: the router's plus its K expert rows', in k order
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        float *d = dx + n * C;
        for (int k = 0; k < K; k++) {
            const float *s = dmoe + (int64_t)v.slot_row[n * K + k] * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
    }
}
