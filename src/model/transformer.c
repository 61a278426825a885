/*
 * transformer.c — forward and backward of the decoder-only transformer, the LM loss and heads, and
 * the accessors to what the last forward left.
 *
 * The forward calls one kernel per op, layer by layer; the backward is the same list in
 * reverse. Per-layer activations are stored compactly for the current B·T, so a smaller batch
 * than the model was created for costs nothing extra.
 */
#include "alloy/model.h"
#include "internal.h"

#include <math.h>
#include <string.h>

/* Sizes used throughout one pass. */
typedef struct dims {
    int B, T, C, H, KV, hd, F, FF, V, QKV;
    int64_t N;
    alloy_weight_layout layout;
    alloy_precision prec;
    bool gpt2;
} dims;

static dims get_dims(const alloy_model *m, int B, int T) {
    const alloy_config *c = &m->config;
    dims d;
    d.B = B;
    d.T = T;
    d.N = (int64_t)B * T;
    d.C = c->d_model;
    d.H = c->n_head;
    d.KV = c->n_kv_head;
    d.hd = alloy_config_head_dim(c);
    d.F = c->d_ff;
    d.gpt2 = c->family == ALLOY_FAMILY_GPT2;
    d.FF = d.gpt2 ? d.F : 2 * d.F;
    d.V = c->vocab_size;
    d.QKV = (d.H + 2 * d.KV) * d.hd;
    d.layout = d.gpt2 ? ALLOY_WEIGHT_IN_OUT : ALLOY_WEIGHT_OUT_IN;
    d.prec = m->opts.precision;
    return d;
}

/* Pointers to layer l's activations for the current B·T. */
typedef struct layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *lse, *atty, *res2, *ln2, *ln2_mean, *ln2_rstd, *fc, *fc_act, *res3;
    const float *res_in;
} layer_acts;

static layer_acts get_layer_acts(const alloy_model *m, const dims *d, int l) {
    const alloy_acts *a = m->acts;
    int64_t N = d->N;
    int lr = l;       // the layer's res3 (kept for every layer)
    if (m->opts.recompute) l = 0; // the rest: one shared set, refilled by recompute
    layer_acts la;
    la.ln1 = a->ln1 + l * N * d->C;
    la.ln1_mean = a->ln1_mean ? a->ln1_mean + l * N : NULL;
    la.ln1_rstd = a->ln1_rstd + l * N;
    la.qkv = a->qkv + l * N * d->QKV;
    la.lse = a->att_lse + (int64_t)l * d->B * d->H * d->T;
    la.atty = a->atty + l * N * d->H * d->hd;
    la.res2 = a->res2 + l * N * d->C;
    la.ln2 = a->ln2 + l * N * d->C;
    la.ln2_mean = a->ln2_mean ? a->ln2_mean + l * N : NULL;
    la.ln2_rstd = a->ln2_rstd + l * N;
    la.fc = a->fc + l * N * d->FF;
    la.fc_act = a->fc_act; // one layer's worth: recomputed from fc in the backward
    la.res3 = a->res3 + lr * N * d->C;
    la.res_in = lr == 0 ? a->encoded : a->res3 + (lr - 1) * N * d->C;
    return la;
}

static void norm_forward(const dims *d, float *out, float *mean, float *rstd, const float *inp, const float *w,
                         const float *b, double eps) {
    if (d->gpt2) layernorm_forward(out, mean, rstd, inp, w, b, d->N, d->C, (float)eps);
    else rmsnorm_forward(out, rstd, inp, w, d->N, d->C, (float)eps);
}

static void norm_backward(const dims *d, float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *w, const float *mean, const float *rstd) {
    if (d->gpt2) layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, d->N, d->C);
    else rmsnorm_backward(dinp, dw, dout, inp, w, rstd, d->N, d->C);
}

/* Layer l's forward into its activation buffers (with recompute: the shared set). */
static void layer_forward(alloy_model *m, const dims *dp, int l) {
    const alloy_config *c = &m->config;
    const dims d = *dp;
    int B = d.B, T = d.T;
    const alloy_layer_params *lp = &m->params.layers[l];
    layer_acts la = get_layer_acts(m, &d, l);
    // attention block: res2 = res_in + o(attn(norm1(res_in)))
    norm_forward(&d, la.ln1, la.ln1_mean, la.ln1_rstd, la.res_in, lp->ln1_w, lp->ln1_b, c->norm_eps);
    matmul_forward(la.qkv, la.ln1, lp->qkv_w, lp->qkv_b, d.N, d.C, d.QKV, d.layout, 0.0f, d.prec);
    if (!d.gpt2) rope_forward(la.qkv, m->rope_cos, m->rope_sin, B, T, d.H, d.KV, d.hd);
    attention_forward(la.atty, la.lse, la.qkv, B, T, d.H, d.KV, d.hd);
    memcpy(la.res2, la.res_in, sizeof(float) * (size_t)(d.N * d.C));
    matmul_forward(la.res2, la.atty, lp->o_w, lp->o_b, d.N, d.H * d.hd, d.C, d.layout, 1.0f, d.prec);
    // MLP block: res3 = res2 + down(act(up(norm2(res2)))), or the mixture of experts
    norm_forward(&d, la.ln2, la.ln2_mean, la.ln2_rstd, la.res2, lp->ln2_w, lp->ln2_b, c->norm_eps);
    if (c->n_experts > 0) {
        memcpy(la.res3, la.res2, sizeof(float) * (size_t)(d.N * d.C));
        moe_forward(m, l, d.N, la.ln2, la.res3, d.prec);
        m->layer_in_buffers = l;
        return;
    }
    matmul_forward(la.fc, la.ln2, lp->up_w, lp->up_b, d.N, d.C, d.FF, d.layout, 0.0f, d.prec);
    if (d.gpt2) gelu_forward(la.fc_act, la.fc, d.N * d.F);
    else swiglu_forward(la.fc_act, la.fc, d.N, d.F);
    memcpy(la.res3, la.res2, sizeof(float) * (size_t)(d.N * d.C));
    matmul_forward(la.res3, la.fc_act, lp->down_w, lp->down_b, d.N, d.F, d.C, d.layout, 1.0f, d.prec);
    m->layer_in_buffers = l;
    m->fc_act_layer = l;
}

alloy_status alloy_model_forward_ex(alloy_model *m, const int32_t *tokens, int B, int T, bool want_logits) {
    if (B < 1 || T < 1 || B > m->max_B || T > m->max_T)
        return alloy_fail(ALLOY_STATUS_USAGE, "batch %d x %d does not fit the model's buffers (%d x %d)", B, T,
                          m->max_B, m->max_T);
    const alloy_config *c = &m->config;
    dims d = get_dims(m, B, T);
    for (int64_t i = 0; i < d.N; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return alloy_fail(ALLOY_STATUS_RANGE, "token id %d at position %lld is outside the vocabulary [0, %d)",
                              tokens[i], (long long)i, c->vocab_size);
    }
    memcpy(m->tokens, tokens, sizeof(int32_t) * (size_t)d.N);
    m->B = B;
    m->T = T;
    m->have_logits = want_logits;
    m->logits_touched |= want_logits;
    const alloy_params *p = &m->params;

    embedding_forward(m->acts->encoded, tokens, p->wte, d.gpt2 ? p->wpe : NULL, B, T, d.C);
    for (int l = 0; l < c->n_layer; l++) layer_forward(m, &d, l);
    if (c->n_experts > 0) moe_finish_forward(m, d.N);
    const float *last = m->acts->res3 + (int64_t)(c->n_layer - 1) * d.N * d.C;
    norm_forward(&d, m->acts->lnf, m->acts->lnf_mean, m->acts->lnf_rstd, last, p->lnf_w, p->lnf_b, c->norm_eps);
    if (want_logits)
        matmul_forward(m->acts->logits, m->acts->lnf, p->lm_head, NULL, d.N, d.C, d.V, ALLOY_WEIGHT_OUT_IN, 0.0f, d.prec);
    return ALLOY_STATUS_OK;
}

/* ---- what the last forward left (model.h) ---- */

float *alloy_model_logits(alloy_model *m) { return m->have_logits ? m->acts->logits : NULL; }

const float *alloy_model_hidden(const alloy_model *m) { return m->acts->lnf; }

const float *alloy_model_mlp_input(const alloy_model *m, int l) {
    if (m->opts.recompute || l < 0 || l >= m->config.n_layer) return NULL;
    return m->acts->ln2 + (int64_t)l * m->B * m->T * m->config.d_model;
}

const float *alloy_model_token_losses(const alloy_model *m) { return m->acts->losses; }

float alloy_model_aux_loss(const alloy_model *m) { return m->aux_loss; }

const int64_t *alloy_model_expert_tokens(const alloy_model *m) { return m->expert_tokens; }

void alloy_model_routes(const alloy_model *m, int l, const int32_t **experts, const float **gates) {
    *experts = NULL;
    *gates = NULL;
    if (m->config.n_experts == 0 || m->opts.recompute || l < 0 || l >= m->config.n_layer) return;
    int64_t NK = (int64_t)m->B * m->T * m->config.top_k;
    *experts = m->acts->topk + l * NK;
    *gates = m->acts->gates + l * NK;
}

float *alloy_model_dhidden_buffer(alloy_model *m) { return m->gacts->dhidden; }

/* Checks targets and mask and fills row_scale with each row's weight in the mean, scaled. */
static alloy_status loss_weights(alloy_model *m, const int32_t *targets, const float *mask, int64_t N,
                                 float grad_scale, double *count_out) {
    int V = m->config.vocab_size;
    double count = 0.0;
    for (int64_t i = 0; i < N; i++) {
        if (targets[i] >= V)
            return alloy_fail(ALLOY_STATUS_RANGE, "target id %d at position %lld is outside the vocabulary [0, %d)",
                              targets[i], (long long)i, V);
        if (mask && !(mask[i] >= 0.0f))
            return alloy_fail(ALLOY_STATUS_RANGE, "mask weight at position %lld is negative or NaN", (long long)i);
        if (targets[i] >= 0) count += mask ? mask[i] : 1.0f;
    }
    float *rs = m->acts->row_scale;
    for (int64_t i = 0; i < N; i++) {
        float w = targets[i] < 0 ? 0.0f : (mask ? mask[i] : 1.0f);
        rs[i] = count > 0 ? (float)(grad_scale * w / count) : 0.0f;
    }
    *count_out = count;
    return ALLOY_STATUS_OK;
}

static float mean_loss(const alloy_model *m, const int32_t *targets, const float *mask, int64_t N, double count) {
    double sum = 0.0;
    for (int64_t i = 0; i < N; i++) {
        if (targets[i] >= 0) sum += (double)m->acts->losses[i] * (mask ? mask[i] : 1.0f);
    }
    return count > 0 ? (float)(sum / count) : 0.0f;
}

alloy_status alloy_lm_loss(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                           float grad_scale, float *dlogits, float *out_loss) {
    if (B != m->B || T != m->T || !m->have_logits)
        return alloy_fail(ALLOY_STATUS_USAGE, "loss: no logits of shape %d x %d from the last forward", B, T);
    int64_t N = (int64_t)B * T;
    double count;
    if (grad_scale != 0.0f && !dlogits) return alloy_fail(ALLOY_STATUS_USAGE, "loss: a gradient needs dlogits");
    alloy_status s = loss_weights(m, targets, mask, N, grad_scale, &count);
    if (s) return s;
    crossentropy_forward_backward(m->acts->losses, grad_scale != 0.0f ? dlogits : NULL, m->acts->logits, targets,
                                  m->acts->row_scale, N, m->config.vocab_size);
    *out_loss = mean_loss(m, targets, mask, N, count);
    return ALLOY_STATUS_OK;
}

/* Rows per chunk of the chunked losses for N rows: loss_chunk_rows, at most what the chunk holds. */
static int64_t chunk_rows(const alloy_model *m, int64_t N) {
    int64_t R = m->loss_chunk_rows > 0 ? m->loss_chunk_rows : ALLOY_LOSS_CHUNK_ROWS;
    if (R > m->loss_chunk_cap) R = m->loss_chunk_cap;
    return R < N ? R : N;
}

alloy_status alloy_lm_loss_chunked(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                                   float grad_scale, float *dhidden, float *out_loss) {
    if (B != m->B || T != m->T)
        return alloy_fail(ALLOY_STATUS_USAGE, "loss: the last forward was not of shape %d x %d", B, T);
    if (grad_scale != 0.0f && !dhidden) return alloy_fail(ALLOY_STATUS_USAGE, "loss: a gradient needs dhidden");
    dims d = get_dims(m, B, T);
    int64_t R = chunk_rows(m, d.N);
    double count;
    alloy_status s = loss_weights(m, targets, mask, d.N, grad_scale, &count);
    if (s) return s;
    const alloy_params *p = &m->params;
    bool grad = grad_scale != 0.0f;
    for (int64_t r0 = 0; r0 < d.N; r0 += R) {
        int64_t rows = d.N - r0 < R ? d.N - r0 : R;
        const float *h = m->acts->lnf + r0 * d.C;
        matmul_forward(m->loss_chunk, h, p->lm_head, NULL, rows, d.C, d.V, ALLOY_WEIGHT_OUT_IN, 0.0f, d.prec);
        crossentropy_forward_backward(m->acts->losses + r0, grad ? m->loss_chunk : NULL, m->loss_chunk,
                                      targets + r0, m->acts->row_scale + r0, rows, d.V);
        if (grad)
            matmul_backward(dhidden + r0 * d.C, m->grads.lm_head, NULL, m->loss_chunk, h, p->lm_head, rows, d.C, d.V,
                            ALLOY_WEIGHT_OUT_IN, d.prec);
    }
    *out_loss = mean_loss(m, targets, mask, d.N, count);
    return ALLOY_STATUS_OK;
}

size_t alloy_model_activation_bytes(const alloy_model *m) {
    size_t n = m->acts_floats + m->route_ints; // the MoE routing indices are 4-byte ints
    if (m->logits_touched) n += model_logits_floats(m);
    n += (size_t)m->loss_chunk_cap * (size_t)m->config.vocab_size;
    return n * sizeof(float);
}

void alloy_model_zero_grad(alloy_model *m) { memset(m->grads_memory, 0, sizeof(float) * m->num_params); }

alloy_status alloy_model_backward(alloy_model *m, const alloy_backward_in *in) {
    if (m->B == 0) return alloy_fail(ALLOY_STATUS_USAGE, "backward: no forward pass to go back through");
    if (!in->dlogits && !in->dhidden)
        return alloy_fail(ALLOY_STATUS_USAGE, "backward: no gradient (neither dlogits nor dhidden)");
    const alloy_config *c = &m->config;
    dims d = get_dims(m, m->B, m->T);
    const alloy_params *p = &m->params;
    const alloy_params *g = &m->grads;
    alloy_grad_acts *ga = m->gacts;
    size_t NC = sizeof(float) * (size_t)(d.N * d.C);

    // LM head, plus the gradient other heads put on the final hidden states
    // (matmul_backward writes its input's gradient; the parameters' gradients accumulate)
    if (in->dlogits)
        matmul_backward(ga->dln, g->lm_head, NULL, in->dlogits, m->acts->lnf, p->lm_head, d.N, d.C, d.V,
                        ALLOY_WEIGHT_OUT_IN, d.prec);
    if (in->dhidden) {
        if (in->dlogits) add_forward(ga->dln, ga->dln, in->dhidden, d.N * d.C);
        else memcpy(ga->dln, in->dhidden, NC);
    }
    memset(ga->dres, 0, NC);
    const float *last = m->acts->res3 + (int64_t)(c->n_layer - 1) * d.N * d.C;
    norm_backward(&d, ga->dres, g->lnf_w, g->lnf_b, ga->dln, last, p->lnf_w, m->acts->lnf_mean, m->acts->lnf_rstd);

    for (int l = c->n_layer - 1; l >= 0; l--) {
        const alloy_layer_params *lp = &p->layers[l];
        const alloy_layer_params *lg = &g->layers[l];
        if (m->opts.recompute && m->layer_in_buffers != l) layer_forward(m, &d, l); // bitwise the same values
        layer_acts la = get_layer_acts(m, &d, l);
        // MLP block; dres holds d(res3) and, through the residual, becomes d(res2)
        if (c->n_experts > 0) {
            moe_backward(m, l, d.N, la.ln2, ga->dres, ga->dln, in->aux_scale, d.prec);
        } else {
            if (m->fc_act_layer != l) { // the MLP's activation output is not kept per layer: recompute it
                if (d.gpt2) gelu_forward(la.fc_act, la.fc, d.N * d.F);
                else swiglu_forward(la.fc_act, la.fc, d.N, d.F);
                m->fc_act_layer = l;
            }
            matmul_backward(ga->dfc_act, lg->down_w, lg->down_b, ga->dres, la.fc_act, lp->down_w, d.N, d.F, d.C,
                            d.layout, d.prec);
            if (d.gpt2) gelu_backward(ga->dfc, la.fc, ga->dfc_act, d.N * d.F);
            else swiglu_backward(ga->dfc, ga->dfc_act, la.fc, d.N, d.F);
            matmul_backward(ga->dln, lg->up_w, lg->up_b, ga->dfc, la.ln2, lp->up_w, d.N, d.C, d.FF, d.layout, d.prec);
        }
        norm_backward(&d, ga->dres, lg->ln2_w, lg->ln2_b, ga->dln, la.res2, lp->ln2_w, la.ln2_mean, la.ln2_rstd);
        // attention block; dres becomes d(res_in)
        matmul_backward(ga->datty, lg->o_w, lg->o_b, ga->dres, la.atty, lp->o_w, d.N, d.H * d.hd, d.C, d.layout, d.prec);
        attention_backward(ga->dqkv, ga->datty, la.qkv, la.atty, la.lse, d.B, d.T, d.H, d.KV, d.hd);
        if (!d.gpt2) rope_backward(ga->dqkv, m->rope_cos, m->rope_sin, d.B, d.T, d.H, d.KV, d.hd);
        matmul_backward(ga->dln, lg->qkv_w, lg->qkv_b, ga->dqkv, la.ln1, lp->qkv_w, d.N, d.C, d.QKV, d.layout, d.prec);
        norm_backward(&d, ga->dres, lg->ln1_w, lg->ln1_b, ga->dln, la.res_in, lp->ln1_w, la.ln1_mean, la.ln1_rstd);
    }
    embedding_backward(g->wte, d.gpt2 ? g->wpe : NULL, ga->dres, m->tokens, d.B, d.T, d.C);
    return ALLOY_STATUS_OK;
}

/* ---- heads for the alignment objectives (src/train/sft.c, reward.c, dpo.c) ---- */

alloy_status alloy_lm_logprobs_chunked(alloy_model *m, const int32_t *targets, const float *weights, int B, int T,
                                       float *dhidden, float *logp) {
    if (B != m->B || T != m->T)
        return alloy_fail(ALLOY_STATUS_USAGE, "log-probabilities: the last forward was not of shape %d x %d", B, T);
    dims d = get_dims(m, B, T);
    for (int64_t i = 0; i < d.N; i++) {
        if (targets[i] >= d.V)
            return alloy_fail(ALLOY_STATUS_RANGE, "target id %d at position %lld is outside the vocabulary [0, %d)",
                              targets[i], (long long)i, d.V);
        if (weights && !isfinite(weights[i]))
            return alloy_fail(ALLOY_STATUS_RANGE, "log-probability weight at position %lld is not finite", (long long)i);
    }
    if (weights && !dhidden) return alloy_fail(ALLOY_STATUS_USAGE, "log-probabilities: a gradient needs dhidden");
    int64_t R = chunk_rows(m, d.N);
    // d(w·logp)/dlogits = w·(onehot - softmax) = (-w)·(softmax - onehot): the cross-entropy
    // kernel's gradient with row scale -w
    float *rs = m->acts->row_scale;
    if (weights)
        for (int64_t i = 0; i < d.N; i++) rs[i] = targets[i] < 0 ? 0.0f : -weights[i];
    const alloy_params *p = &m->params;
    for (int64_t r0 = 0; r0 < d.N; r0 += R) {
        int64_t rows = d.N - r0 < R ? d.N - r0 : R;
        const float *h = m->acts->lnf + r0 * d.C;
        matmul_forward(m->loss_chunk, h, p->lm_head, NULL, rows, d.C, d.V, ALLOY_WEIGHT_OUT_IN, 0.0f, d.prec);
        crossentropy_forward_backward(m->acts->losses + r0, weights ? m->loss_chunk : NULL, m->loss_chunk, targets + r0,
                                      weights ? rs + r0 : NULL, rows, d.V);
        if (weights)
            matmul_backward(dhidden + r0 * d.C, m->grads.lm_head, NULL, m->loss_chunk, h, p->lm_head, rows, d.C, d.V,
                            ALLOY_WEIGHT_OUT_IN, d.prec);
    }
    if (logp)
        for (int64_t i = 0; i < d.N; i++) logp[i] = targets[i] < 0 ? 0.0f : -m->acts->losses[i];
    return ALLOY_STATUS_OK;
}

/* Checks the rows of a scalar head's call against the last forward. */
static alloy_status check_head_rows(const alloy_model *m, const int64_t *rows, int n) {
    if (m->B == 0) return alloy_fail(ALLOY_STATUS_USAGE, "scalar head: no forward pass to read hidden states from");
    int64_t N = (int64_t)m->B * m->T;
    for (int k = 0; k < n; k++)
        if (rows[k] < 0 || rows[k] >= N)
            return alloy_fail(ALLOY_STATUS_RANGE, "scalar head: row %lld is outside the last forward's %lld rows",
                              (long long)rows[k], (long long)N);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_scalar_head_forward(const alloy_model *m, const float *w, const float *b, const int64_t *rows, int n,
                                       float *out) {
    alloy_status s = check_head_rows(m, rows, n);
    if (s) return s;
    int C = m->config.d_model;
    for (int k = 0; k < n; k++) {
        const float *h = m->acts->lnf + rows[k] * C;
        double acc = 0.0; // a C-long dot product, summed in double as sum_squares is
        for (int c = 0; c < C; c++) acc += (double)h[c] * w[c];
        out[k] = (float)(acc + (b ? *b : 0.0f));
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_scalar_head_backward(const alloy_model *m, const float *w, float *dw, float *db, const int64_t *rows,
                                        int n, const float *dout, float *dhidden) {
    alloy_status s = check_head_rows(m, rows, n);
    if (s) return s;
    int C = m->config.d_model;
    for (int k = 0; k < n; k++) {
        const float *h = m->acts->lnf + rows[k] * C;
        float *dh = dhidden + rows[k] * C;
        float g = dout[k];
        for (int c = 0; c < C; c++) {
            dh[c] += g * w[c];
            if (dw) dw[c] += g * h[c];
        }
        if (db) *db += g;
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_model_resize_vocab(alloy_model **mp, int vocab_size) {
    alloy_model *old = *mp;
    if (vocab_size == old->config.vocab_size) return ALLOY_STATUS_OK;
    alloy_config cfg = old->config;
    cfg.vocab_size = vocab_size;
    alloy_model *m;
    alloy_status s = alloy_model_create_ex(&m, &cfg, old->max_B, old->max_T, &old->opts);
    if (s) return s;
    int64_t C = cfg.d_model, V0 = old->config.vocab_size, V1 = vocab_size;
    int64_t keep = V0 < V1 ? V0 : V1;
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        const alloy_tensor_info *o = alloy_model_find_tensor(old, t->name);
        ALLOY_ASSERT(o && o->ndim == t->ndim);
        float *dst = m->params_memory + t->offset;
        const float *src = old->params_memory + o->offset;
        if (o->numel == t->numel) {
            memcpy(dst, src, sizeof(float) * t->numel);
            continue;
        }
        // a (V, C) matrix: the embedding, or an untied head: rows kept, new rows set to the
        // mean of the old ones (the mean embedding keeps the new tokens' logits ordinary)
        ALLOY_ASSERT(o->shape[0] == V0 && t->shape[0] == V1 && o->shape[1] == C);
        memcpy(dst, src, sizeof(float) * (size_t)(keep * C));
        for (int64_t c = 0; c < C; c++) {
            double sum = 0.0;
            for (int64_t v = 0; v < V0; v++) sum += src[v * C + c];
            float mean = (float)(sum / (double)V0);
            for (int64_t v = keep; v < V1; v++) dst[v * C + c] = mean;
        }
    }
    alloy_model_destroy(old);
    *mp = m;
    return ALLOY_STATUS_OK;
}
