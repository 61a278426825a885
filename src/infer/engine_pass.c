/*
 * engine_pass.c — the inference engine's forward pass over a set of rows — tokens of one or
 * several sequences at their own positions — that serves both prefill and decode: the products
 * (fp32 or quantised), the norms, the activation, the threads each step takes. The engine is a
 * model's matrices (fp32 in place, or quantised at creation: engine_create.c) and a KV cache per
 * sequence (engine_cache.c, which also attends over it); the calls are in engine.c, the MoE
 * block in engine_moe.c, the one-team decode step in engine_team.c.
 *
 * One pass over R rows (R ≤ max_rows; longer calls run in chunks, in order):
 *
 *   x = wte[token] (+ wpe[pos])                                   (R, C)
 *   per layer: xn = norm1(x); qkv = xn·Wqkv (+b); RoPE at each row's position (Llama);
 *              k, v of each row into its sequence's cache at its position;
 *              att = attention of each row over its sequence's cache, positions 0..pos;
 *              x += att·Wo (+b); xn = norm2(x); fc = xn·Wup (+b); x += act(fc)·Wdown (+b)
 *              (MoE layer: x += Σ_k g_k · expert_k(xn) over each row's K chosen experts)
 *   logits = norm_f(x[rows asked for])·Wheadᵀ
 *
 * The products go over all R rows at once, whatever sequence each belongs to; only attention
 * looks at sequences. A run of rows that is a whole sequence from position 0 (a fresh prompt)
 * takes the training kernel attention_forward (blocked, FlashAttention-style); other rows
 * (decode steps, continued prefills) attend to the cache directly.
 *
 * A mixture-of-experts layer (engine_moe.c) routes with the training model's kernels
 * (src/kernels/moe_route.c, as src/model/moe_layer.c): router logits xn·Wrᵀ in fp32, softmax
 * over the E experts, the K largest (ties: the lower index), gates renormalised over the K. The
 * (row, k) assignments are grouped by expert, so each expert is one product over its rows — a
 * prefill's tokens or a decode step's sequences alike — and each row sums its K outputs in k
 * order. Every expert's matrices are held (in place, or quantised with the others); the router
 * stays fp32.
 *
 * A single decode row on two threads or more runs as one team (engine_team.c): the same sums,
 * one parallel region per step instead of one per product.
 *
 * The cache's layout is in internal.h. An ensemble engine has no pass of its own: engine.c
 * sends its calls to ensemble_engine.c.
 */
#include "internal.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The least work (floating-point operations) worth a thread of its own: a parallel region
 * costs a few microseconds to open, 2^19 flops take ~50 µs on one core. */
#define FLOPS_PER_THREAD 524288.0

/* ---- threads ---------------------------------------------------------------------------- */

/* The threads for a step of `flops` operations: one per FLOPS_PER_THREAD, at most max_threads,
 * or the fixed count of the options. */
int engine_threads_for(const alloy_engine *e, double flops) {
    if (e->opts.threads > 0) return e->opts.threads;
    double t = flops / FLOPS_PER_THREAD;
    if (t < 1.0) return 1;
    return t >= e->call_threads ? e->call_threads : (int)t;
}

/* Sets the OpenMP threads of the next kernel from its work (the kernels and OpenBLAS read it). */
void engine_use_threads(const alloy_engine *e, double flops) {
#ifdef _OPENMP
    omp_set_num_threads(engine_threads_for(e, flops));
#else
    (void)e;
    (void)flops;
#endif
}

/* ---- products --------------------------------------------------------------------------- */

/* Columns [j0, j1) of one row of a quantised product's output: o += d + bias (acc), o += d
 * (acc, no bias), or o += bias (d is o itself). */
void engine_add_product(float *o, const float *d, const float *bias, bool acc, int j0, int j1) {
    if (acc && bias)
        for (int j = j0; j < j1; j++) o[j] += d[j] + bias[j];
    else if (acc)
        for (int j = j0; j < j1; j++) o[j] += d[j];
    else
        for (int j = j0; j < j1; j++) o[j] += bias[j];
}

/* out (n, w->out) = [out +] in (n, w->in) · Wᵀ + bias. tmp (n, w->out) is scratch for the
 * quantised products when accumulating. */
void engine_linear(const alloy_engine *e, float *out, const float *in, const matrix *w, int n, bool acc, float *tmp) {
    engine_use_threads(e, 2.0 * n * w->in * w->out);
    if (w->type == ALLOY_QTYPE_F32) {
        if (n == 1) { // decode streams the matrix once: our matvec (sgemm with one row may not)
            matvec_forward(out, in, w->w, w->bias, w->in, w->out, w->layout, acc ? 1.0f : 0.0f, e->mv);
        } else {
            matmul_forward(out, in, w->w, w->bias, n, w->in, w->out, w->layout, acc ? 1.0f : 0.0f, ALLOY_PRECISION_F32);
        }
        return;
    }
    float *dst = acc ? tmp : out;
    if (n == 1) alloy_quant_matvec(w->type, dst, w->q, in, w->out, w->in);
    else alloy_quant_matmul(w->type, dst, w->q, in, n, w->out, w->in);
    if (!acc && !w->bias) return;
    int64_t total = (int64_t)n * w->out;
    int OC = w->out;
    const float *bias = w->bias;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < n; i++) engine_add_product(out + i * OC, dst + i * OC, bias, acc, 0, OC);
}

/* out (n, C) = the family's norm of in (n, C) with weight w (C) and bias b (C, GPT-2), on the
 * threads set now. */
void engine_norm_rows(const alloy_engine *e, float *out, const float *in, const float *w, const float *b, int n) {
    if (e->gpt2) layernorm_forward(out, e->mean, e->rstd, in, w, b, n, e->C, e->eps);
    else rmsnorm_forward(out, e->rstd, in, w, n, e->C, e->eps);
}

/* engine_norm_rows on the threads its size is worth. */
static void norm(const alloy_engine *e, float *out, const float *in, const float *w, const float *b, int n) {
    engine_use_threads(e, 8.0 * n * e->C);
    engine_norm_rows(e, out, in, w, b, n);
}

/* act (n, F) = the family's activation of fc (n, FF): GELU, or SwiGLU of gate and up. */
void engine_activate(const alloy_engine *e, int n) {
    if (e->gpt2) gelu_forward(e->act, e->fc, (int64_t)n * e->F);
    else swiglu_forward(e->act, e->fc, n, e->F);
}

/* x (R, C) = each row's token embedding (+ its position's, GPT-2). */
static void embed_rows(alloy_engine *e, int R) {
    const alloy_params *p = &e->m->params;
    const int C = e->C;
    for (int r = 0; r < R; r++) {
        float *x = e->x + (size_t)r * C;
        const float *te = p->wte + (size_t)e->row_tok[r] * C;
        if (e->gpt2) {
            const float *pe = p->wpe + (size_t)e->row_pos[r] * C;
            for (int c = 0; c < C; c++) x[c] = te[c] + pe[c];
        } else {
            memcpy(x, te, sizeof(float) * (size_t)C);
        }
    }
}

/* ---- the forward pass over R rows ------------------------------------------------------- */

/* Runs the rows set up in row_seq / row_pos / row_tok / segs and writes the logits of the rows
 * listed in sel (n_sel of them) to logits (n_sel, V), in that order. */
void engine_forward_rows(alloy_engine *e, int R, int n_segs, float *logits, int n_sel) {
    const alloy_params *p = &e->m->params;
    int C = e->C;
    int nt = engine_team_threads(e, R);
    embed_rows(e, R);
    if (nt) {
        engine_decode_team(e, logits, n_sel, nt);
        return;
    }
    for (int l = 0; l < e->L; l++) {
        const alloy_layer_params *lp = &p->layers[l];
        const layer_matrices *lw = &e->layers[l];
        norm(e, e->xn, e->x, lp->ln1_w, lp->ln1_b, R);
        engine_linear(e, e->qkv, e->xn, &lw->qkv, R, false, e->tmp);
        if (!e->gpt2) engine_rope_rows(e, R);
        engine_store_kv(e, l, R);
        engine_attention(e, l, n_segs);
        engine_linear(e, e->x, e->att, &lw->o, R, true, e->tmp);
        norm(e, e->xn, e->x, lp->ln2_w, lp->ln2_b, R);
        if (e->E) {
            engine_moe_rows(e, lw, R);
            continue;
        }
        engine_linear(e, e->fc, e->xn, &lw->up, R, false, e->tmp);
        engine_use_threads(e, 20.0 * R * e->F);
        engine_activate(e, R);
        engine_linear(e, e->x, e->act, &lw->down, R, true, e->tmp);
    }
    if (n_sel == 0) return;
    // the final norm and the head, on the rows asked for only
    const float *h = e->x;
    if (n_sel < R) {
        for (int i = 0; i < n_sel; i++)
            memcpy(e->tmp + (size_t)i * C, e->x + (size_t)e->sel[i] * C, sizeof(float) * (size_t)C);
        h = e->tmp;
    }
    norm(e, e->xn, h, p->lnf_w, p->lnf_b, n_sel);
    engine_linear(e, logits, e->xn, &e->head, n_sel, false, NULL);
}
