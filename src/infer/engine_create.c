/*
 * engine_create.c — creating an inference engine: the options checked against the model, the
 * buffers and the KV cache allocated (sizes overflow-checked), the matrices pointed at the
 * model's or quantised at load into one mapping; an ensemble engine around its members; destroy.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define DEFAULT_ROWS 512
#define MAX_BATCH_LIMIT 65536

/* The format a matrix of `in` columns takes when `want` is asked for. */
static alloy_qtype fit_type(alloy_qtype want, int in) {
    if (in % alloy_qtype_block_elems(want) == 0) return want;
    if (in % alloy_qtype_block_elems(ALLOY_QTYPE_Q8_0) == 0) return ALLOY_QTYPE_Q8_0;
    return ALLOY_QTYPE_F16;
}

/* An fp32 matrix of the model as stored. */
static matrix make_matrix(const float *w, const float *bias, int in, int out, alloy_weight_layout layout) {
    return (matrix){.type = ALLOY_QTYPE_F32, .w = w, .layout = layout, .bias = bias, .in = in, .out = out};
}

/* Quantises w into the bytes at dst (already sized), transposing an (in, out) matrix first
 * through scratch (in·out floats). */
static void quantise_matrix(matrix *w, uint8_t *dst, float *scratch) {
    const float *src = w->w;
    if (w->layout == ALLOY_WEIGHT_IN_OUT) {
        const int B = 32;
        int in = w->in, out = w->out;
#pragma omp parallel for schedule(static)
        for (int o0 = 0; o0 < out; o0 += B)
            for (int i0 = 0; i0 < in; i0 += B)
                for (int o = o0; o < o0 + B && o < out; o++)
                    for (int i = i0; i < i0 + B && i < in; i++) scratch[(size_t)o * in + i] = src[(size_t)i * out + o];
        src = scratch;
    }
    alloy_quantize(w->type, dst, src, w->out, w->in);
    w->q = dst;
    w->w = NULL;
}

/* Every matrix the engine may quantise, in a fixed order: per layer qkv, o, then up, down (MoE:
 * each expert's up, then each expert's down); then the head. Not the routers (always fp32). */
static int all_matrices(alloy_engine *e, matrix **list) {
    int n = 0;
    for (int l = 0; l < e->L; l++) {
        list[n++] = &e->layers[l].qkv;
        list[n++] = &e->layers[l].o;
        if (e->E) {
            for (int x = 0; x < 2 * e->E; x++) list[n++] = &e->experts[(size_t)l * 2 * e->E + x];
        } else {
            list[n++] = &e->layers[l].up;
            list[n++] = &e->layers[l].down;
        }
    }
    list[n++] = &e->head;
    return n;
}

/* Points the matrices at the model's and, for a quantised engine, quantises them all into one
 * mapping (sizes overflow-checked; a format that does not fit a width falls back). */
static alloy_status set_weights(alloy_engine *e) {
    const alloy_params *p = &e->m->params;
    alloy_weight_layout lay = e->gpt2 ? ALLOY_WEIGHT_IN_OUT : ALLOY_WEIGHT_OUT_IN;
    for (int l = 0; l < e->L; l++) {
        const alloy_layer_params *lp = &p->layers[l];
        layer_matrices *lw = &e->layers[l];
        lw->qkv = make_matrix(lp->qkv_w, lp->qkv_b, e->C, e->QKV, lay);
        lw->o = make_matrix(lp->o_w, lp->o_b, e->H * e->hd, e->C, lay);
        if (e->E) {
            lw->router = make_matrix(lp->router_w, NULL, e->C, e->E, ALLOY_WEIGHT_OUT_IN);
            lw->eup = e->experts + (size_t)l * 2 * e->E;
            lw->edown = lw->eup + e->E;
            for (int x = 0; x < e->E; x++) {
                const alloy_expert_params *ep = &lp->experts[x];
                lw->eup[x] = make_matrix(ep->up_w, ep->up_b, e->C, e->FF, lay);
                lw->edown[x] = make_matrix(ep->down_w, ep->down_b, e->F, e->C, lay);
            }
        } else {
            lw->up = make_matrix(lp->up_w, lp->up_b, e->C, e->FF, lay);
            lw->down = make_matrix(lp->down_w, lp->down_b, e->F, e->C, lay);
        }
    }
    e->head = make_matrix(p->lm_head, NULL, e->C, e->V, ALLOY_WEIGHT_OUT_IN);
    size_t per_layer = e->E ? 2 + 2 * (size_t)e->E : 4;
    matrix **list = alloy_malloc(sizeof(matrix *) * (per_layer * (size_t)e->L + 1));
    if (!list) return ALLOY_STATUS_NOMEM;
    int n = all_matrices(e, list);
    size_t total = 0, largest = 0, expert_bytes = 0;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n && !s; i++) {
        matrix *w = list[i];
        if (e->opts.weights != ALLOY_QTYPE_F32) w->type = fit_type(e->opts.weights, w->in);
        size_t bytes;
        if (!alloy_mul_size(alloy_quant_row_bytes(w->type, w->in), (size_t)w->out, &bytes) || total + bytes < total)
            s = alloy_fail(ALLOY_STATUS_NOMEM, "engine: the matrices' size overflows");
        total += bytes;
        if (e->E && w >= e->experts && w < e->experts + (size_t)e->L * 2 * e->E) expert_bytes += bytes;
        e->n_matrices[w->type]++;
        if (w->layout == ALLOY_WEIGHT_IN_OUT && (size_t)w->in * (size_t)w->out > largest)
            largest = (size_t)w->in * (size_t)w->out;
    }
    // what a token reads: every matrix but the experts, the routers, K of each layer's E experts
    e->weight_bytes = total;
    if (e->E) {
        e->n_matrices[ALLOY_QTYPE_F32] += e->L; // the routers
        e->weight_bytes = total - expert_bytes + expert_bytes / (size_t)e->E * (size_t)e->K +
                          (size_t)e->L * (size_t)e->E * (size_t)e->C * sizeof(float);
    }
    if (s || e->opts.weights == ALLOY_QTYPE_F32) {
        alloy_free(list);
        return s;
    }
    e->qbytes = total;
    e->qmem = alloy_pages_alloc(total);
    float *scratch = largest && e->qmem ? alloy_malloc(sizeof(float) * largest) : NULL;
    if (!e->qmem || (largest && !scratch)) {
        s = alloy_fail(ALLOY_STATUS_NOMEM, "engine: out of memory for %zu bytes of %s weights", total,
                       alloy_qtype_name(e->opts.weights));
    } else {
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            quantise_matrix(list[i], e->qmem + off, scratch);
            off += alloy_quant_row_bytes(list[i]->type, list[i]->in) * (size_t)list[i]->out;
        }
    }
    alloy_free(scratch);
    alloy_free(list);
    return s;
}

/* Checks the options against the model (USAGE naming the option) and fills the defaults. */
static alloy_status check_options(alloy_engine_options *o, const alloy_config *c) {
    if ((unsigned)o->weights >= (unsigned)ALLOY_QTYPE_COUNT)
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: weights format %d is not one of f32, f16, q8_0, q4_0, q4_k",
                          (int)o->weights);
    if (o->max_batch < 0 || o->max_batch > MAX_BATCH_LIMIT)
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: max_batch %d is outside [1, %d]", o->max_batch, MAX_BATCH_LIMIT);
    if (o->max_ctx < 0 || o->max_ctx > c->max_seq_len)
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: max_ctx %d is outside [1, %d] (the model's max_seq_len)",
                          o->max_ctx, c->max_seq_len);
    if (o->max_rows < 0 || o->max_rows > (1 << 20))
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: max_rows %d is outside [1, %d]", o->max_rows, 1 << 20);
    if (o->threads < 0 || o->threads > 4096)
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: threads %d is outside [0, 4096]", o->threads);
    if (o->max_batch == 0) o->max_batch = 1;
    if (o->max_ctx == 0) o->max_ctx = c->max_seq_len;
    if (o->max_rows == 0) o->max_rows = DEFAULT_ROWS;
    return ALLOY_STATUS_OK;
}

/* The scratch of matvec_forward: threads·OC floats for the (IC, OC) matrices, OC for the others. */
static size_t mv_floats(const alloy_engine *e) {
    size_t widest = (size_t)(e->QKV > e->FF ? e->QKV : e->FF);
    if ((size_t)e->C > widest) widest = (size_t)e->C;
    size_t n = (size_t)e->max_threads * widest;
    return n > (size_t)e->V ? n : (size_t)e->V;
}

/* Carves the row buffers out of one allocation, allocates the rest (MoE routing included)
 * and the KV cache; NOMEM naming what failed. */
static alloy_status alloc_buffers(alloy_engine *e) {
    size_t R = (size_t)e->opts.max_rows, ctx = (size_t)e->opts.max_ctx;
    size_t half = e->gpt2 ? 0 : (size_t)e->hd / 2;
    size_t E = (size_t)e->E, K = (size_t)e->K, RK = e->E ? R * K : R; // MLP rows: dispatch rows in MoE
    size_t sizes[] = {
        R * e->C, R * e->C, R * e->QKV, R * e->H * e->hd, R * e->C, RK * e->FF, RK * e->F, R, R, R * e->H,
        (size_t)e->max_threads * ctx, ctx * half, ctx * half, R * E, R * K, R * K * e->C, R * K * e->C,
        mv_floats(e),
    };
    float **ptrs[] = {&e->x,        &e->xn,       &e->qkv,      &e->att,   &e->tmp,   &e->fc,
                      &e->act,      &e->mean,     &e->rstd,     &e->lse,   &e->scores, &e->rope_cos,
                      &e->rope_sin, &e->probs,    &e->gates,    &e->moe_in, &e->moe_out, &e->mv};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += (sizes[i] + 15) & ~(size_t)15;
    e->buf_floats = total;
    e->buf = alloy_pages_alloc(sizeof(float) * total);
    size_t B = (size_t)e->opts.max_batch;
    e->row_seq = alloy_malloc(sizeof(int) * R);
    e->row_pos = alloy_malloc(sizeof(int) * R);
    e->row_tok = alloy_malloc(sizeof(int32_t) * R);
    e->sel = alloy_malloc(sizeof(int) * R);
    e->crow = alloy_malloc(sizeof(int) * R);
    e->segs = alloy_malloc(sizeof(segment) * R);
    e->len = alloy_calloc(B, sizeof(int));
    e->base_len = alloy_calloc(B, sizeof(int));
    e->seen = alloy_calloc(B, 1);
    e->layers = alloy_calloc((size_t)e->L, sizeof(layer_matrices));
    bool moe_ok = true;
    if (e->E) {
        e->experts = alloy_calloc((size_t)e->L * 2 * E, sizeof(matrix));
        e->topk = alloy_malloc(sizeof(int32_t) * R * K);
        e->slot_row = alloy_malloc(sizeof(int32_t) * R * K);
        e->row_token = alloy_malloc(sizeof(int32_t) * R * K);
        e->expert_off = alloy_malloc(sizeof(int32_t) * (E + 1));
        e->expert_pos = alloy_malloc(sizeof(int32_t) * E);
        moe_ok = e->experts && e->topk && e->slot_row && e->row_token && e->expert_off && e->expert_pos;
    }
    if (!e->buf || !e->row_seq || !e->row_pos || !e->row_tok || !e->sel || !e->crow || !e->segs || !e->len || !e->base_len ||
        !e->seen || !e->layers || !moe_ok)
        return alloy_fail(ALLOY_STATUS_NOMEM, "engine: out of memory for the buffers of %zu rows", R);
    size_t off = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = e->buf + off;
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    if (!e->gpt2)
        rope_init_tables(e->rope_cos, e->rope_sin, e->opts.max_ctx, e->hd, (float)e->m->config.rope_theta);
    // the cache: (L, max_batch, KV, max_ctx, hd) floats, twice
    size_t n = (size_t)e->L;
    if (!alloy_mul_size(n, B, &n) || !alloy_mul_size(n, (size_t)e->KV, &n) || !alloy_mul_size(n, ctx, &n) ||
        !alloy_mul_size(n, (size_t)e->hd, &n) || !alloy_mul_size(n, sizeof(float), &n))
        return alloy_fail(ALLOY_STATUS_NOMEM, "engine: the KV cache's size overflows (max_batch %zu, max_ctx %zu)", B,
                          ctx);
    e->cache_floats = n / sizeof(float);
    e->kc = alloy_pages_alloc(n);
    e->vc = alloy_pages_alloc(n);
    if (!e->kc || !e->vc)
        return alloy_fail(ALLOY_STATUS_NOMEM, "engine: out of memory for a KV cache of 2 x %zu bytes", n);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_engine_create(alloy_engine **out, const alloy_model *m, const alloy_engine_options *opts) {
    *out = NULL;
    if (!m) return alloy_fail(ALLOY_STATUS_USAGE, "engine: no model");
    const alloy_config *c = &m->config;
    if (c->n_experts > 0 && (c->n_experts > ALLOY_MAX_EXPERTS || c->top_k < 1 || c->top_k > c->n_experts))
        return alloy_fail(ALLOY_STATUS_USAGE, "engine: %d experts, %d per token: expected 1 <= K <= E <= %d",
                          c->n_experts, c->top_k, ALLOY_MAX_EXPERTS);
    alloy_engine_options o = opts ? *opts : (alloy_engine_options){0};
    alloy_status s = check_options(&o, c);
    if (s) return s;
    alloy_engine *e = alloy_calloc(1, sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    e->m = m;
    e->opts = o;
    e->L = c->n_layer;
    e->C = c->d_model;
    e->H = c->n_head;
    e->KV = c->n_kv_head;
    e->hd = alloy_config_head_dim(c);
    e->F = c->d_ff;
    e->gpt2 = c->family == ALLOY_FAMILY_GPT2;
    e->FF = e->gpt2 ? e->F : 2 * e->F;
    e->V = c->vocab_size;
    e->QKV = (e->H + 2 * e->KV) * e->hd;
    e->E = c->n_experts > 0 ? c->n_experts : 0;
    e->K = e->E ? c->top_k : 0;
    e->eps = (float)c->norm_eps;
    // room for as many threads as the machine has, or the caller asks for now or in the options
    e->max_threads = engine_caller_threads();
#ifdef _OPENMP
    if (omp_get_num_procs() > e->max_threads) e->max_threads = omp_get_num_procs();
#endif
    if (o.threads > e->max_threads) e->max_threads = o.threads;
    if (e->max_threads < 1) e->max_threads = 1;
    e->call_threads = 1;
    // fp32 vectors a token reads: norms, biases (MoE: its K experts'), its embedding row (and
    // position row)
    size_t other = (size_t)(e->gpt2 ? 2 : 1) * e->C;
    size_t mlp_bias = (size_t)(e->E ? e->K : 1) * ((size_t)e->FF + (size_t)e->C);
    other += (size_t)e->L * (e->gpt2 ? 4 * (size_t)e->C + e->QKV + e->C + mlp_bias : 2 * (size_t)e->C);
    other += (size_t)(e->gpt2 ? 2 : 1) * e->C;
    e->other_bytes = other * sizeof(float);
    s = alloc_buffers(e);
    if (!s) s = set_weights(e);
    if (s) {
        alloy_engine_destroy(e);
        return s;
    }
    const char *knob = getenv("ALLOY_TEAM_DECODE");
    e->team_ok = !e->E && !(knob && !strcmp(knob, "0"));
    if (e->team_ok && e->opts.weights != ALLOY_QTYPE_F32 && !(e->qteam = alloy_malloc(alloy_quant_team_scratch_bytes()))) {
        alloy_engine_destroy(e);
        return ALLOY_STATUS_NOMEM;
    }
    *out = e;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_engine_create_ensemble(alloy_engine **out, alloy_engine *const *members, const float *weights, int n,
                                          alloy_ensemble_mode mode) {
    *out = NULL;
    alloy_engine_options o;
    int V;
    ensemble_engine *x;
    alloy_status s = ensemble_engine_create(&x, &o, &V, members, weights, n, mode);
    if (s) return s;
    alloy_engine *e = alloy_calloc(1, sizeof *e);
    if (e) {
        e->len = alloy_calloc((size_t)o.max_batch, sizeof(int));
        e->seen = alloy_calloc((size_t)o.max_batch, 1);
    }
    if (!e || !e->len || !e->seen) {
        alloy_engine_destroy(e);
        ensemble_engine_destroy(x, false); // the members stay the caller's
        return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: out of memory");
    }
    e->opts = o;
    e->V = V;
    e->ens = x;
    for (int q = 0; q < o.max_batch; q++) alloy_engine_reset(e, q); // every member's sequences empty
    *out = e;
    return ALLOY_STATUS_OK;
}

void alloy_engine_destroy(alloy_engine *e) {
    if (!e) return;
    ensemble_engine_destroy(e->ens, true);
    alloy_pages_free(e->qmem, e->qbytes);
    alloy_pages_free(e->kc, e->cache_floats * sizeof(float));
    alloy_pages_free(e->vc, e->cache_floats * sizeof(float));
    alloy_pages_free(e->buf, e->buf_floats * sizeof(float));
    alloy_free(e->qteam);
    alloy_free(e->row_seq);
    alloy_free(e->row_pos);
    alloy_free(e->row_tok);
    alloy_free(e->sel);
    alloy_free(e->crow);
    alloy_free(e->segs);
    alloy_free(e->len);
    alloy_free(e->base_len);
    alloy_free(e->seen);
    alloy_free(e->layers);
    alloy_free(e->experts);
    alloy_free(e->topk);
    alloy_free(e->slot_row);
    alloy_free(e->row_token);
    alloy_free(e->expert_off);
    alloy_free(e->expert_pos);
    alloy_free(e);
}
