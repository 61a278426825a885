/*
 * engine.c — the inference engine: a model's matrices (fp32 in place, or quantised at
 * creation), a KV cache per sequence, and the forward pass over a set of rows — tokens of one
 * or several sequences at their own positions — that serves both prefill and decode.
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
 * A mixture-of-experts layer routes as the training model does (src/model/moe_layer.c): router
 * logits xn·Wrᵀ in fp32, softmax over the E experts, the K largest (ties: the lower index),
 * gates renormalised over the K. The (row, k) assignments are grouped by expert, so each expert
 * is one product over its rows — a prefill's tokens or a decode step's sequences alike — and
 * each row sums its K outputs in k order. Every expert's matrices are held (in place, or
 * quantised with the others); the router stays fp32.
 *
 * Cache layout: per (layer, sequence, KV head), k transposed (hd, max_ctx) — the scores of a
 * query are then a vector loop over positions — and v (max_ctx, hd). Pages are mapped lazily,
 * so a position never written costs no memory.
 *
 * An ensemble engine is an engine without a model of its own: it keeps the options, the
 * vocabulary and the sequence lengths, every call is checked here as for a model, and then
 * goes to ensemble_engine.c (through `ens`), which runs the members and combines their logits.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define DEFAULT_ROWS 512
#define MAX_BATCH_LIMIT 65536
/* The least work (floating-point operations) worth a thread of its own: a parallel region
 * costs a few microseconds to open, 2^19 flops take ~50 µs on one core. */
#define FLOPS_PER_THREAD 524288.0
/* Runs of at least this many rows of a fresh sequence take attention_forward. */
#define FRESH_MIN_ROWS 2

/* One weight matrix as the engine reads it: y (out) = W·x (in). */
typedef struct matrix {
    alloy_qtype type;           /* F32: w in the model's arena; otherwise the bytes at q */
    const float *w;             /* F32: as the model stores it */
    alloy_weight_layout layout; /* F32: how w is stored */
    const uint8_t *q;           /* quantised: (out) rows of row_bytes(type, in), (out, in) order */
    const float *bias;          /* (out) or NULL */
    int in, out;                /* IC, OC */
} matrix;

typedef struct layer_matrices {
    matrix qkv, o, up, down; /* up, down: dense layers only */
    matrix router;           /* MoE: (E, C), always fp32 */
    matrix *eup, *edown;     /* MoE: (E) each, the experts' up and down (into e->experts) */
} layer_matrices;

/* A run of consecutive rows of one sequence in the current pass. */
typedef struct segment {
    int row0, n; /* rows [row0, row0 + n) */
    int seq;     /* its sequence */
    int pos0;    /* position of its first row */
} segment;

/* The tokens a call appends to one sequence. */
typedef struct job {
    int seq;               /* the sequence */
    const int32_t *tokens; /* (n) */
    int n;                 /* tokens to append */
} job;

struct alloy_engine {
    const alloy_model *m;      /* the parameters: borrowed */
    alloy_engine_options opts; /* with the defaults filled in */
    int L, C, H, KV, hd, F, FF, V, QKV; /* sizes (FF: up's width, F or 2F) */
    int E, K;                  /* experts per layer and per token (0, 0: dense MLPs) */
    bool gpt2;                 /* the family: GPT-2 (else Llama) */
    float eps;                 /* the norms' epsilon */
    int max_threads;           /* threads the scratch has room for */
    bool team_ok;              /* one-row passes may run as one team (decode_team) */
    void *qteam;               /* alloy_quant_matvec_team's shared scratch (quantised weights) */
    int call_threads;          /* the most threads a step of the current call may take */
    layer_matrices *layers;    /* (L) */
    matrix *experts;           /* MoE: (L, 2, E) each layer's experts' up, then down */
    matrix head;               /* (V, C) */
    uint8_t *qmem;             /* the quantised matrices, one mapping */
    size_t qbytes;             /* its size */
    int n_matrices[ALLOY_QTYPE_COUNT]; /* matrices per format */
    size_t weight_bytes, other_bytes;  /* bytes a token reads: matrices, fp32 vectors */
    float *kc, *vc;            /* (L, max_batch, KV) x k (hd, max_ctx), v (max_ctx, hd) */
    size_t cache_floats;       /* floats of each */
    int *len;                  /* (max_batch) tokens held per sequence */
    float *buf;                /* one allocation for the buffers below */
    size_t buf_floats;         /* its size */
    float *x;                  /* (R, C) the residual stream */
    float *xn;                 /* (R, C) normalised */
    float *qkv;                /* (R, QKV) */
    float *att;                /* (R, H·hd) */
    float *tmp;                /* (R, C) a product before it is added; the gathered head rows */
    float *mv;                 /* matvec_forward's scratch (mv_floats) */
    float *fc;                 /* (R, FF); MoE: (R·K, FF), rows in dispatch order */
    float *act;                /* (R, F); MoE: (R·K, F) */
    float *probs;              /* MoE: (R, E) router logits, then probabilities */
    float *gates;              /* MoE: (R, K) the chosen experts' renormalised probabilities */
    float *moe_in;             /* MoE: (R·K, C) xn rows in dispatch order */
    float *moe_out;            /* MoE: (R·K, C) each dispatch row's expert output */
    float *mean, *rstd;        /* (R) */
    float *lse;                /* (H, R) attention_forward's row statistics (unused) */
    float *scores;             /* (max_threads, max_ctx) attention scores per thread */
    float *rope_cos, *rope_sin;/* (max_ctx, hd/2), Llama */
    int *row_seq, *row_pos;    /* (R) */
    int32_t *row_tok;          /* (R) */
    int *sel;                  /* (R) rows whose logits are asked for */
    int32_t *topk;             /* MoE: (R, K) the chosen experts, by descending probability */
    int32_t *slot_row;         /* MoE: (R, K) the dispatch row of each (row, k) */
    int32_t *row_token;        /* MoE: (R·K) the row each dispatch row reads */
    int32_t *expert_off;       /* MoE: (E + 1) expert e's dispatch rows are [off[e], off[e+1]) */
    int32_t *expert_pos;       /* MoE: (E) scratch of the dispatch */
    int *crow;                 /* (R) rows that attend to the cache */
    segment *segs;             /* (R) */
    int *base_len;             /* (max_batch) lengths at the start of a call */
    unsigned char *seen;       /* (max_batch) scratch of the checks */
    ensemble_engine *ens;      /* an ensemble's members; then only opts, V, len and seen are set */
};

/* ---- threads ---------------------------------------------------------------------------- */

/* The threads for a step of `flops` operations: one per FLOPS_PER_THREAD, at most max_threads,
 * or the fixed count of the options. */
static int threads_for(const alloy_engine *e, double flops) {
    if (e->opts.threads > 0) return e->opts.threads;
    double t = flops / FLOPS_PER_THREAD;
    if (t < 1.0) return 1;
    return t >= e->call_threads ? e->call_threads : (int)t;
}

/* Sets the OpenMP threads of the next kernel from its work (the kernels and OpenBLAS read it). */
static void use_threads(const alloy_engine *e, double flops) {
#ifdef _OPENMP
    omp_set_num_threads(threads_for(e, flops));
#else
    (void)e;
    (void)flops;
#endif
}

/* The caller's OpenMP thread count, restored when a call returns. */
static int caller_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* At the start of a call: the caller's thread count (returned, to restore) bounds the call's. */
static int begin_call(alloy_engine *e) {
    int n = caller_threads();
    e->call_threads = n < 1 ? 1 : n > e->max_threads ? e->max_threads : n;
    return n;
}

/* Sets the OpenMP thread count back to the caller's n. */
static void restore_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---- products --------------------------------------------------------------------------- */

/* Columns [j0, j1) of one row of a quantised product's output: o += d + bias (acc), o += d
 * (acc, no bias), or o += bias (d is o itself). */
static void add_product(float *o, const float *d, const float *bias, bool acc, int j0, int j1) {
    if (acc && bias)
        for (int j = j0; j < j1; j++) o[j] += d[j] + bias[j];
    else if (acc)
        for (int j = j0; j < j1; j++) o[j] += d[j];
    else
        for (int j = j0; j < j1; j++) o[j] += bias[j];
}

/* out (n, w->out) = [out +] in (n, w->in) · Wᵀ + bias. tmp (n, w->out) is scratch for the
 * quantised products when accumulating. */
static void linear(const alloy_engine *e, float *out, const float *in, const matrix *w, int n, bool acc, float *tmp) {
    use_threads(e, 2.0 * n * w->in * w->out);
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
    for (int64_t i = 0; i < n; i++) add_product(out + i * OC, dst + i * OC, bias, acc, 0, OC);
}

/* out (n, C) = the family's norm of in (n, C) with weight w (C) and bias b (C, GPT-2), on the
 * threads set now. */
static void norm_rows(const alloy_engine *e, float *out, const float *in, const float *w, const float *b, int n) {
    if (e->gpt2) layernorm_forward(out, e->mean, e->rstd, in, w, b, n, e->C, e->eps);
    else rmsnorm_forward(out, e->rstd, in, w, n, e->C, e->eps);
}

/* norm_rows on the threads its size is worth. */
static void norm(const alloy_engine *e, float *out, const float *in, const float *w, const float *b, int n) {
    use_threads(e, 8.0 * n * e->C);
    norm_rows(e, out, in, w, b, n);
}

/* act (n, F) = the family's activation of fc (n, FF): GELU, or SwiGLU of gate and up. */
static void activate(const alloy_engine *e, int n) {
    if (e->gpt2) gelu_forward(e->act, e->fc, (int64_t)n * e->F);
    else swiglu_forward(e->act, e->fc, n, e->F);
}

/* ---- attention -------------------------------------------------------------------------- */

/* Where head kvh of sequence seq starts in layer l's k (hd, max_ctx) and v (max_ctx, hd). */
static inline size_t cache_offset(const alloy_engine *e, int l, int seq, int kvh) {
    return (((size_t)l * (size_t)e->opts.max_batch + (size_t)seq) * (size_t)e->KV + (size_t)kvh) *
           (size_t)e->opts.max_ctx * (size_t)e->hd;
}

/* Rotates the q and k heads of row r by its position (rotate-half, as rope_forward). */
static void rope_row(const alloy_engine *e, int r) {
    int half = e->hd / 2, hd = e->hd, heads = e->H + e->KV;
    const float *c = e->rope_cos + (size_t)e->row_pos[r] * half, *s = e->rope_sin + (size_t)e->row_pos[r] * half;
    float *row = e->qkv + (size_t)r * e->QKV;
    for (int h = 0; h < heads; h++) {
        float *x = row + (size_t)h * hd;
        for (int j = 0; j < half; j++) {
            float x1 = x[j], x2 = x[j + half];
            x[j] = x1 * c[j] - x2 * s[j];
            x[j + half] = x2 * c[j] + x1 * s[j];
        }
    }
}

/* Rotates the q and k heads of each row by its position. */
static void rope_rows(const alloy_engine *e, int R) {
    int hd = e->hd, heads = e->H + e->KV;
    use_threads(e, 6.0 * R * heads * hd);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) rope_row(e, r);
}

/* Copies each row's k and v heads into its sequence's cache at its position (k transposed). */
static void store_kv(const alloy_engine *e, int l, int R) {
    size_t ctx = (size_t)e->opts.max_ctx;
    for (int r = 0; r < R; r++) {
        const float *row = e->qkv + (size_t)r * e->QKV;
        int pos = e->row_pos[r];
        for (int h = 0; h < e->KV; h++) {
            size_t off = cache_offset(e, l, e->row_seq[r], h);
            const float *k = row + (size_t)(e->H + h) * e->hd;
            for (int j = 0; j < e->hd; j++) e->kc[off + (size_t)j * ctx + (size_t)pos] = k[j];
            memcpy(e->vc + off + (size_t)pos * e->hd, row + (size_t)(e->H + e->KV + h) * e->hd,
                   sizeof(float) * (size_t)e->hd);
        }
    }
}

/* out (hd) = softmax(q·K·scale)·V over the n cached positions of one head: Kt (hd, ctx) the keys
 * transposed (the scores are then a vector loop over positions), Vc (ctx, hd); sc (n) scratch. */
static void attend_one(float *restrict out, const float *restrict q, const float *restrict Kt, const float *restrict Vc,
                       int n, int hd, size_t ctx, float scale, float *restrict sc) {
    for (int t = 0; t < n; t++) sc[t] = 0.0f;
    for (int j = 0; j < hd; j++) {
        const float *k = Kt + (size_t)j * ctx;
        float qj = q[j] * scale;
#pragma omp simd
        for (int t = 0; t < n; t++) sc[t] += qj * k[t];
    }
    float mx = -INFINITY;
    for (int t = 0; t < n; t++) mx = sc[t] > mx ? sc[t] : mx;
    float sum = 0.0f;
    for (int t = 0; t < n; t++) {
        float p = expf(sc[t] - mx);
        sc[t] = p;
        sum += p;
    }
    for (int j = 0; j < hd; j++) out[j] = 0.0f;
    for (int t = 0; t < n; t++) {
        const float *v = Vc + (size_t)t * hd;
        float p = sc[t];
#pragma omp simd
        for (int j = 0; j < hd; j++) out[j] += p * v[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < hd; j++) out[j] *= inv;
}

/* att (R, H·hd) for layer l: fresh sequences through attention_forward, the other rows over
 * the cache (which holds every row's k and v by now). */
static void attention(alloy_engine *e, int l, int n_segs) {
    int H = e->H, hd = e->hd, group = e->H / e->KV;
    float scale = 1.0f / sqrtf((float)hd);
    double work = 0.0;
    int n_cached = 0; // rows that attend to the cache, listed in crow
    for (int i = 0; i < n_segs; i++) {
        const segment *sg = &e->segs[i];
        if (sg->pos0 == 0 && sg->n >= FRESH_MIN_ROWS) {
            use_threads(e, 2.0 * H * (double)sg->n * sg->n * hd);
            attention_forward(e->att + (size_t)sg->row0 * H * hd, e->lse, e->qkv + (size_t)sg->row0 * e->QKV, 1,
                              sg->n, H, e->KV, hd);
        } else {
            for (int k = 0; k < sg->n; k++) e->crow[n_cached++] = sg->row0 + k;
            work += 4.0 * H * hd * ((double)sg->n * sg->pos0 + 0.5 * (double)sg->n * (sg->n + 1));
        }
    }
    if (n_cached == 0) return;
    int nt = threads_for(e, work);
    int64_t pairs = (int64_t)n_cached * H;
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt)
    for (int64_t i = 0; i < pairs; i++) {
        int r = e->crow[i / H], h = (int)(i % H);
#ifdef _OPENMP
        float *sc = e->scores + (size_t)omp_get_thread_num() * e->opts.max_ctx;
#else
        float *sc = e->scores;
#endif
        size_t off = cache_offset(e, l, e->row_seq[r], h / group);
        attend_one(e->att + (size_t)r * H * hd + (size_t)h * hd, e->qkv + (size_t)r * e->QKV + (size_t)h * hd,
                   e->kc + off, e->vc + off, e->row_pos[r] + 1, hd, (size_t)e->opts.max_ctx, scale, sc);
    }
}

/* ---- mixture of experts ----------------------------------------------------------------- */

/* probs (R, E) = xn (R, C) · Wrᵀ (E, C): each row's dot products in one fixed order whatever
 * the number of rows, so that a row routes the same in a prefill as in a decode step (BLAS
 * sums one row and several in different orders; a gate's last bit would then differ). */
static void router_logits(const alloy_engine *e, float *restrict probs, const float *restrict xn, const float *restrict w,
                          int R) {
    const int E = e->E, C = e->C;
    use_threads(e, 2.0 * R * E * C);
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
static void moe_rows(alloy_engine *e, const layer_matrices *lw, int R) {
    const int E = e->E, K = e->K, C = e->C;
    const size_t FF = (size_t)e->FF, F = (size_t)e->F;
    const int NK = R * K;
    router_logits(e, e->probs, e->xn, lw->router.w, R);
    use_threads(e, (double)R * E * (8.0 + (double)K * K)); // softmax, top-K, gates
    moe_route_forward(e->probs, e->topk, e->gates, R, E, K);
    moe_dispatch_forward(e->expert_off, e->slot_row, e->row_token, e->expert_pos, e->topk, R, E, K);
    const int32_t *off = e->expert_off;
    for (int r = 0; r < NK; r++)
        memcpy(e->moe_in + (size_t)r * C, e->xn + (size_t)e->row_token[r] * C, sizeof(float) * (size_t)C);
    // the experts: up, activation over all dispatch rows, down
    for (int x = 0; x < E; x++) {
        int r0 = off[x], ne = off[x + 1] - r0;
        if (ne) linear(e, e->fc + (size_t)r0 * FF, e->moe_in + (size_t)r0 * C, &lw->eup[x], ne, false, NULL);
    }
    use_threads(e, 20.0 * NK * e->F);
    activate(e, NK);
    for (int x = 0; x < E; x++) {
        int r0 = off[x], ne = off[x + 1] - r0;
        if (ne) linear(e, e->moe_out + (size_t)r0 * C, e->act + (size_t)r0 * F, &lw->edown[x], ne, false, NULL);
    }
    // combine: x_n += Σ_k g_n,k · out[dispatch row of (n, k)], in k order
    use_threads(e, 2.0 * NK * C);
    moe_combine_forward(e->x, e->moe_out, e->gates, e->slot_row, R, K, C);
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

/* ---- one decode row, one team ------------------------------------------------------------ */

/* Bytes of the next matrix each thread prefetches before a step that does not read memory. */
#define TEAM_PREFETCH_BYTES 8192

/* The threads of a team decode (0: take forward_rows): a single row, team_ok (dense MLPs, and
 * the knob ALLOY_TEAM_DECODE=0 not set at creation; the tests compare the two paths), and a
 * model wide enough that threads_for gives its products two threads or more. */
static int team_threads(const alloy_engine *e, int R) {
    if (R != 1 || !e->team_ok) return 0;
    int nt = threads_for(e, 2.0 * e->C * e->C);
    return nt >= 2 ? nt : 0;
}

/* out = [out +] in · Wᵀ + bias, one row, by the calling team: the sums of linear(). */
static void team_linear(const alloy_engine *e, float *out, const float *in, const matrix *w, bool acc) {
    if (w->type == ALLOY_QTYPE_F32) {
        matvec_forward_team(out, in, w->w, w->bias, w->in, w->out, w->layout, acc ? 1.0f : 0.0f, e->mv);
        return;
    }
    float *dst = acc ? e->tmp : out;
    alloy_quant_matvec_team(w->type, dst, w->q, in, w->out, w->in, e->qteam);
    if (!acc && !w->bias) return;
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    add_product(out, dst, w->bias, acc, (int)((int64_t)w->out * t / n), (int)((int64_t)w->out * (t + 1) / n));
#pragma omp barrier
}

/* Prefetches the start of the calling thread's share of w's product. */
static void team_prefetch(const matrix *w) {
    if (w->type == ALLOY_QTYPE_F32) matvec_prefetch_team(w->w, w->in, w->out, w->layout, TEAM_PREFETCH_BYTES);
    else alloy_quant_prefetch_team(w->type, w->q, w->out, w->in, TEAM_PREFETCH_BYTES);
}

/* forward_rows for one row (R = 1, segment 0, embedded) in a single parallel region of nt
 * threads instead of one per step: the products split as matvec_forward / alloy_quant_matvec
 * split them (the same sums), attention split by heads, the steps that read no matrix — norms,
 * RoPE, the cache, the activation, a few microseconds each — on thread 0 while every thread has
 * prefetched the start of its share of the next matrix. Each step ends at a barrier. A decode step opens one region, not five to six
 * per layer, and no product begins with its first lines still in DRAM. */
static void decode_team(alloy_engine *e, float *logits, int n_sel, int nt) {
    const alloy_params *p = &e->m->params;
    const int H = e->H, hd = e->hd, group = e->H / e->KV, pos = e->row_pos[0], seq = e->row_seq[0];
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        for (int l = 0; l < e->L; l++) {
            const alloy_layer_params *lp = &p->layers[l];
            const layer_matrices *lw = &e->layers[l];
            team_prefetch(&lw->qkv);
            if (t == 0) norm_rows(e, e->xn, e->x, lp->ln1_w, lp->ln1_b, 1);
#pragma omp barrier
            team_linear(e, e->qkv, e->xn, &lw->qkv, false);
            team_prefetch(&lw->o);
            if (t == 0) {
                if (!e->gpt2) rope_row(e, 0);
                store_kv(e, l, 1);
            }
#pragma omp barrier
            int h0 = (int)((int64_t)H * t / n), h1 = (int)((int64_t)H * (t + 1) / n);
            float *sc = e->scores + (size_t)t * e->opts.max_ctx;
            for (int h = h0; h < h1; h++) {
                size_t off = cache_offset(e, l, seq, h / group);
                attend_one(e->att + (size_t)h * hd, e->qkv + (size_t)h * hd, e->kc + off, e->vc + off, pos + 1, hd,
                           (size_t)e->opts.max_ctx, scale, sc);
            }
#pragma omp barrier
            team_linear(e, e->x, e->att, &lw->o, true);
            team_prefetch(&lw->up);
            if (t == 0) norm_rows(e, e->xn, e->x, lp->ln2_w, lp->ln2_b, 1);
#pragma omp barrier
            team_linear(e, e->fc, e->xn, &lw->up, false);
            team_prefetch(&lw->down);
            if (t == 0) activate(e, 1);
#pragma omp barrier
            team_linear(e, e->x, e->act, &lw->down, true);
        }
        if (n_sel) {
            team_prefetch(&e->head);
            if (t == 0) norm_rows(e, e->xn, e->x, p->lnf_w, p->lnf_b, 1);
#pragma omp barrier
            team_linear(e, logits, e->xn, &e->head, false);
        }
    }
}

/* ---- the forward pass over R rows ------------------------------------------------------- */

/* Runs the rows set up in row_seq / row_pos / row_tok / segs and writes the logits of the rows
 * listed in sel (n_sel of them) to logits (n_sel, V), in that order. */
static void forward_rows(alloy_engine *e, int R, int n_segs, float *logits, int n_sel) {
    const alloy_params *p = &e->m->params;
    int C = e->C;
    int nt = team_threads(e, R);
    embed_rows(e, R);
    if (nt) {
        decode_team(e, logits, n_sel, nt);
        return;
    }
    for (int l = 0; l < e->L; l++) {
        const alloy_layer_params *lp = &p->layers[l];
        const layer_matrices *lw = &e->layers[l];
        norm(e, e->xn, e->x, lp->ln1_w, lp->ln1_b, R);
        linear(e, e->qkv, e->xn, &lw->qkv, R, false, e->tmp);
        if (!e->gpt2) rope_rows(e, R);
        store_kv(e, l, R);
        attention(e, l, n_segs);
        linear(e, e->x, e->att, &lw->o, R, true, e->tmp);
        norm(e, e->xn, e->x, lp->ln2_w, lp->ln2_b, R);
        if (e->E) {
            moe_rows(e, lw, R);
            continue;
        }
        linear(e, e->fc, e->xn, &lw->up, R, false, e->tmp);
        use_threads(e, 20.0 * R * e->F);
        activate(e, R);
        linear(e, e->x, e->act, &lw->down, R, true, e->tmp);
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
    linear(e, logits, e->xn, &e->head, n_sel, false, NULL);
}

/* Appends the jobs' tokens to their sequences in passes of at most max_rows rows; logits as
 * `rows` says. The jobs have been checked. */
static void run_jobs(alloy_engine *e, float *logits, alloy_logits_rows rows, const job *jobs, int n_jobs) {
    int R = e->opts.max_rows;
    for (int i = 0; i < n_jobs; i++) e->base_len[jobs[i].seq] = e->len[jobs[i].seq];
    int ji = 0, jo = 0;   // the next token: jobs[ji].tokens[jo]
    int64_t out_row = 0;  // the logits row of the next row asked for
    while (ji < n_jobs) {
        int r = 0, n_segs = 0, n_sel = 0;
        while (r < R && ji < n_jobs) {
            const job *j = &jobs[ji];
            int take = j->n - jo < R - r ? j->n - jo : R - r;
            segment *sg = &e->segs[n_segs++];
            sg->row0 = r;
            sg->n = take;
            sg->seq = j->seq;
            sg->pos0 = e->base_len[j->seq] + jo;
            for (int k = 0; k < take; k++, r++) {
                e->row_seq[r] = j->seq;
                e->row_pos[r] = sg->pos0 + k;
                e->row_tok[r] = j->tokens[jo + k];
                bool last = jo + k == j->n - 1;
                if (rows == ALLOY_LOGITS_ALL || (rows == ALLOY_LOGITS_LAST && last)) e->sel[n_sel++] = r;
            }
            jo += take;
            if (jo == j->n) ji++, jo = 0;
        }
        forward_rows(e, r, n_segs, logits ? logits + out_row * e->V : NULL, n_sel);
        out_row += n_sel;
    }
    for (int i = 0; i < n_jobs; i++) e->len[jobs[i].seq] = e->base_len[jobs[i].seq] + jobs[i].n;
}

/* Checks a call's jobs: sequences in range and distinct, counts, tokens, room in the cache. */
static alloy_status check_jobs(alloy_engine *e, const char *what, const job *jobs, int n_jobs) {
    if (n_jobs < 1) return alloy_fail(ALLOY_STATUS_USAGE, "%s: no sequences given", what);
    memset(e->seen, 0, (size_t)e->opts.max_batch);
    for (int i = 0; i < n_jobs; i++) {
        const job *j = &jobs[i];
        if (j->seq < 0 || j->seq >= e->opts.max_batch)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d is outside [0, %d) (max_batch)", what, j->seq,
                              e->opts.max_batch);
        if (e->seen[j->seq]) return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d is named twice", what, j->seq);
        e->seen[j->seq] = 1;
        if (j->n < 1 || !j->tokens)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d: no tokens given (%d)", what, j->seq, j->n);
        int held = e->len[j->seq];
        if (j->n > e->opts.max_ctx - held)
            return alloy_fail(ALLOY_STATUS_RANGE,
                              "%s: sequence %d holds %d of %d positions: %d more tokens do not fit (context full)",
                              what, j->seq, held, e->opts.max_ctx, j->n);
        for (int k = 0; k < j->n; k++)
            if (j->tokens[k] < 0 || j->tokens[k] >= e->V)
                return alloy_fail(ALLOY_STATUS_RANGE, "%s: sequence %d: token id %d at %d is outside the vocabulary [0, %d)",
                                  what, j->seq, j->tokens[k], k, e->V);
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_engine_prefill_batch(alloy_engine *e, float *logits, alloy_logits_rows rows, const int *seqs,
                                        const int32_t *const *tokens, const int *lens, int n_seqs) {
    if (rows != ALLOY_LOGITS_LAST && rows != ALLOY_LOGITS_ALL && rows != ALLOY_LOGITS_NONE)
        return alloy_fail(ALLOY_STATUS_USAGE, "prefill: rows is %d, not one of LAST, ALL, NONE", (int)rows);
    if (rows != ALLOY_LOGITS_NONE && !logits) return alloy_fail(ALLOY_STATUS_USAGE, "prefill: logits is NULL");
    if (n_seqs < 1 || n_seqs > e->opts.max_batch || !seqs || !tokens || !lens)
        return alloy_fail(ALLOY_STATUS_USAGE, "prefill: %d sequences given (1 to %d)", n_seqs, e->opts.max_batch);
    job jobs_small[16];
    job *jobs = n_seqs <= 16 ? jobs_small : alloy_malloc(sizeof(job) * (size_t)n_seqs);
    if (!jobs) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n_seqs; i++) jobs[i] = (job){.seq = seqs[i], .tokens = tokens[i], .n = lens[i]};
    alloy_status s = check_jobs(e, "prefill", jobs, n_seqs);
    if (!s && e->ens) {
        s = ensemble_engine_prefill(e->ens, logits, rows, seqs, tokens, lens, n_seqs);
        for (int i = 0; !s && i < n_seqs; i++) e->len[seqs[i]] += lens[i];
    } else if (!s) {
        int saved = begin_call(e);
        run_jobs(e, rows == ALLOY_LOGITS_NONE ? NULL : logits, rows, jobs, n_seqs);
        restore_threads(saved);
    }
    if (jobs != jobs_small) alloy_free(jobs);
    return s;
}

alloy_status alloy_engine_prefill(alloy_engine *e, float *logits, int seq, const int32_t *tokens, int n) {
    return alloy_engine_prefill_batch(e, logits, logits ? ALLOY_LOGITS_LAST : ALLOY_LOGITS_NONE, &seq, &tokens, &n, 1);
}

alloy_status alloy_engine_decode(alloy_engine *e, float *logits, const int *seqs, const int32_t *tokens, int n) {
    if (!logits) return alloy_fail(ALLOY_STATUS_USAGE, "decode: logits is NULL");
    if (n < 1 || n > e->opts.max_batch || !seqs || !tokens)
        return alloy_fail(ALLOY_STATUS_USAGE, "decode: %d sequences given (1 to %d)", n, e->opts.max_batch);
    job jobs_small[16];
    job *jobs = n <= 16 ? jobs_small : alloy_malloc(sizeof(job) * (size_t)n);
    if (!jobs) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) jobs[i] = (job){.seq = seqs[i], .tokens = tokens + i, .n = 1};
    alloy_status s = check_jobs(e, "decode", jobs, n);
    if (!s && e->ens) {
        s = ensemble_engine_decode(e->ens, logits, seqs, tokens, n);
        for (int i = 0; !s && i < n; i++) e->len[seqs[i]]++;
    } else if (!s) {
        int saved = begin_call(e);
        run_jobs(e, logits, ALLOY_LOGITS_LAST, jobs, n);
        restore_threads(saved);
    }
    if (jobs != jobs_small) alloy_free(jobs);
    return s;
}

void alloy_engine_reset(alloy_engine *e, int seq) {
    if (seq < 0 || seq >= e->opts.max_batch) return;
    e->len[seq] = 0;
    if (e->ens) ensemble_engine_reset(e->ens, seq);
}

alloy_status alloy_engine_truncate(alloy_engine *e, int seq, int len) {
    if (seq < 0 || seq >= e->opts.max_batch)
        return alloy_fail(ALLOY_STATUS_USAGE, "truncate: sequence %d is outside [0, %d)", seq, e->opts.max_batch);
    if (len < 0 || len > e->len[seq])
        return alloy_fail(ALLOY_STATUS_USAGE, "truncate: sequence %d holds %d tokens, cannot keep %d", seq, e->len[seq],
                          len);
    if (e->ens) {
        alloy_status s = ensemble_engine_truncate(e->ens, seq, len);
        if (s) return s;
    }
    e->len[seq] = len;
    return ALLOY_STATUS_OK;
}

int alloy_engine_seq_len(const alloy_engine *e, int seq) {
    return seq >= 0 && seq < e->opts.max_batch ? e->len[seq] : -1;
}

void alloy_engine_get_info(const alloy_engine *e, alloy_engine_info *info) {
    memset(info, 0, sizeof *info);
    info->max_batch = e->opts.max_batch;
    info->max_ctx = e->opts.max_ctx;
    info->max_rows = e->opts.max_rows;
    info->vocab_size = e->V;
    info->weights = e->opts.weights;
    memcpy(info->n_matrices, e->n_matrices, sizeof info->n_matrices);
    info->weight_bytes = e->weight_bytes;
    info->other_bytes = e->other_bytes;
    info->cache_bytes = 2 * e->cache_floats * sizeof(float);
    if (e->ens) ensemble_engine_info(e->ens, info); // the members' matrices and bytes
}

/* ---- creation --------------------------------------------------------------------------- */

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

/* Carves the row buffers out of one allocation. */
/* The scratch of matvec_forward: threads·OC floats for the (IC, OC) matrices, OC for the others. */
static size_t mv_floats(const alloy_engine *e) {
    size_t widest = (size_t)(e->QKV > e->FF ? e->QKV : e->FF);
    if ((size_t)e->C > widest) widest = (size_t)e->C;
    size_t n = (size_t)e->max_threads * widest;
    return n > (size_t)e->V ? n : (size_t)e->V;
}

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
    e->max_threads = caller_threads();
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
