/*
 * ensemble_engine.c — N engines run as one: every call goes to each member with the same
 * arguments and the rows of logits are combined (see "Ensemble engines" in alloy/infer.h).
 *
 * Per row, with member i's logits zᵢ (V) and weights wᵢ (summing to 1):
 *   PROBS   log Σ wᵢ softmax(zᵢ) = logsumexpᵢ(log wᵢ + zᵢ − lseᵢ), lseᵢ = log Σ_v exp(zᵢ[v]),
 *           built one member at a time as a running log-add-exp, in double (no probability
 *           underflows to 0 before the log, so every token keeps a finite log-probability);
 *   LOGITS  Σ wᵢ zᵢ.
 * Member 0 writes into the caller's buffer, which is then combined in place; the others write
 * into one scratch of (rows, V) floats, sized for max_batch rows at creation (decode steps and
 * LAST prefills) and grown when an ALL prefill asks for more rows.
 *
 * engine.c checks each call against the ensemble before it gets here, so a member fails only
 * when memory runs out; the members that ran are then truncated back to where they were.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

struct ensemble_engine {
    alloy_engine *members[ALLOY_ENGINE_MAX_MEMBERS]; /* (n) owned once the ensemble is made */
    double w[ALLOY_ENGINE_MAX_MEMBERS];              /* (n) weights, summing to 1 */
    int n;                                           /* members */
    alloy_ensemble_mode mode;                        /* PROBS or LOGITS */
    int V;                                           /* the members' vocabulary */
    int max_batch;                                   /* the members' max_batch */
    float *scratch;                                  /* (cap_rows, V) a member's logits */
    size_t cap_rows;                                 /* rows scratch holds */
    int *base;                                       /* (max_batch) lengths before a call, for a roll-back */
};

alloy_status ensemble_engine_create(ensemble_engine **out, alloy_engine_options *shape, int *V,
                                    alloy_engine *const *members, const float *weights, int n,
                                    alloy_ensemble_mode mode) {
    *out = NULL;
    if (n < 2 || n > ALLOY_ENGINE_MAX_MEMBERS || !members)
        return alloy_fail(ALLOY_STATUS_USAGE, "ensemble engine: %d members given (2 to %d)", n, ALLOY_ENGINE_MAX_MEMBERS);
    if (mode == ALLOY_ENSEMBLE_LEARNED)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "ensemble engine: a learned combiner needs the members' hidden states, which the inference "
                          "engine does not expose (use probs or logits)");
    if (mode != ALLOY_ENSEMBLE_PROBS && mode != ALLOY_ENSEMBLE_LOGITS)
        return alloy_fail(ALLOY_STATUS_USAGE, "ensemble engine: unknown mode %d (probs or logits)", (int)mode);
    alloy_engine_info i0, info;
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        if (!members[i]) return alloy_fail(ALLOY_STATUS_USAGE, "ensemble engine: member %d is NULL", i);
        for (int j = 0; j < i; j++)
            if (members[j] == members[i])
                return alloy_fail(ALLOY_STATUS_USAGE,
                                  "ensemble engine: member %d is member %d again (each needs an engine of its own)", i, j);
        alloy_engine_get_info(members[i], i ? &info : &i0);
        if (i && info.vocab_size != i0.vocab_size)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble engine: member %d has a vocabulary of %d, member 0 of %d", i,
                              info.vocab_size, i0.vocab_size);
        if (i && info.max_batch != i0.max_batch)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble engine: member %d holds %d sequences (max_batch), member 0 %d",
                              i, info.max_batch, i0.max_batch);
        double w = weights ? weights[i] : 1.0;
        if (!(w >= 0.0 && isfinite(w)))
            return alloy_fail(ALLOY_STATUS_USAGE, "ensemble engine: weight %d is %g; weights must be finite and >= 0", i, w);
        total += w;
        if (i) {
            if (info.max_ctx < shape->max_ctx) shape->max_ctx = info.max_ctx;
            if (info.max_rows < shape->max_rows) shape->max_rows = info.max_rows;
        } else {
            *shape = (alloy_engine_options){.weights = i0.weights, .max_batch = i0.max_batch, .max_ctx = i0.max_ctx,
                                            .max_rows = i0.max_rows};
        }
    }
    if (!(total > 0.0 && isfinite(total))) return alloy_fail(ALLOY_STATUS_USAGE, "ensemble engine: the weights are all 0");
    ensemble_engine *x = alloy_calloc(1, sizeof *x);
    if (!x) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) {
        x->members[i] = members[i];
        x->w[i] = (weights ? weights[i] : 1.0) / total;
    }
    x->n = n;
    x->mode = mode;
    x->V = i0.vocab_size;
    x->max_batch = i0.max_batch;
    x->cap_rows = (size_t)i0.max_batch;
    size_t cells;
    if (alloy_mul_size(x->cap_rows, (size_t)x->V, &cells) && alloy_mul_size(cells, sizeof(float), &cells))
        x->scratch = alloy_malloc(cells);
    x->base = alloy_calloc((size_t)x->max_batch, sizeof(int));
    if (!x->scratch || !x->base) {
        ensemble_engine_destroy(x, false);
        return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: out of memory for %d x %d logits", i0.max_batch, i0.vocab_size);
    }
    *V = x->V;
    *out = x;
    return ALLOY_STATUS_OK;
}

void ensemble_engine_destroy(ensemble_engine *x, bool members) {
    if (!x) return;
    if (members)
        for (int i = 0; i < x->n; i++) alloy_engine_destroy(x->members[i]);
    alloy_free(x->scratch);
    alloy_free(x->base);
    alloy_free(x);
}

/* ---- combining rows --------------------------------------------------------------------- */

/* log(exp(a) + exp(b)), exact for -inf on either side. */
static inline double log_add_exp(double a, double b) {
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    return a > b ? a + log1p(exp(b - a)) : b + log1p(exp(a - b));
}

/* log Σ_v exp(z_v) of one row, in double. */
static double row_logsumexp(const float *z, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    if (mx == -INFINITY) return -INFINITY;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return mx + log(s);
}

/* Folds member i's logits z (rows, V) into out (rows, V): member 0 starts out (z may be out
 * itself), the others add to it. */
static void fold(const ensemble_engine *x, float *out, const float *z, int i, int64_t rows) {
    int V = x->V;
    double w = x->w[i];
    bool probs = x->mode == ALLOY_ENSEMBLE_PROBS;
    double log_w = w > 0.0 ? log(w) : -INFINITY;
#pragma omp parallel for schedule(static) if (rows * V > 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * V;
        const float *zr = z + r * V;
        if (w == 0.0) { // a member without weight adds nothing (and 0·(-inf) would be NaN)
            if (i == 0)
                for (int v = 0; v < V; v++) o[v] = probs ? -INFINITY : 0.0f;
        } else if (!probs) {
            for (int v = 0; v < V; v++) o[v] = (float)((i ? (double)o[v] : 0.0) + w * zr[v]);
        } else {
            double shift = log_w - row_logsumexp(zr, V); // log wᵢ − lseᵢ
            for (int v = 0; v < V; v++) {
                double t = (double)zr[v] + shift;
                o[v] = (float)(i ? log_add_exp((double)o[v], t) : t);
            }
        }
    }
}

/* ---- calls ------------------------------------------------------------------------------ */

/* One call as the members get it: a prefill (tokens, lens) or a decode step (flat). */
typedef struct call {
    alloy_logits_rows rows;       /* which rows of logits */
    const int *seqs;              /* (n) */
    const int32_t *const *tokens; /* prefill: (n) runs of lens[i] tokens */
    const int *lens;              /* prefill: (n) */
    const int32_t *flat;          /* decode: (n) one token each */
    int n;
} call;

static alloy_status run_member(alloy_engine *m, float *logits, const call *c) {
    if (c->flat) return alloy_engine_decode(m, logits, c->seqs, c->flat, c->n);
    return alloy_engine_prefill_batch(m, logits, c->rows, c->seqs, c->tokens, c->lens, c->n);
}

/* Makes room in scratch for rows rows of logits (its contents are not kept). */
static alloy_status reserve(ensemble_engine *x, int64_t rows) {
    if ((size_t)rows <= x->cap_rows) return ALLOY_STATUS_OK;
    size_t cells;
    if (!alloy_mul_size((size_t)rows, (size_t)x->V, &cells) || !alloy_mul_size(cells, sizeof(float), &cells))
        return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: %lld x %d logits overflow", (long long)rows, x->V);
    float *p = alloy_malloc(cells);
    if (!p) return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: out of memory for %lld x %d logits", (long long)rows, x->V);
    alloy_free(x->scratch);
    x->scratch = p;
    x->cap_rows = (size_t)rows;
    return ALLOY_STATUS_OK;
}

/* Runs c on every member and combines the rows into logits. */
static alloy_status run_call(ensemble_engine *x, float *logits, const call *c) {
    int64_t rows = 0;
    if (c->rows == ALLOY_LOGITS_LAST) rows = c->n;
    else if (c->rows == ALLOY_LOGITS_ALL)
        for (int i = 0; i < c->n; i++) rows += c->lens[i];
    alloy_status s = rows ? reserve(x, rows) : ALLOY_STATUS_OK;
    if (s) return s;
    for (int k = 0; k < c->n; k++) x->base[c->seqs[k]] = alloy_engine_seq_len(x->members[0], c->seqs[k]);
    for (int i = 0; i < x->n; i++) {
        float *z = !rows ? NULL : i ? x->scratch : logits;
        s = run_member(x->members[i], z, c);
        if (s) {
            alloy_error_prefix("ensemble member %d", i);
            for (int j = 0; j < i; j++) // back to where they were: the members stay in lockstep
                for (int k = 0; k < c->n; k++) alloy_engine_truncate(x->members[j], c->seqs[k], x->base[c->seqs[k]]);
            return s;
        }
        if (rows) fold(x, logits, z, i, rows);
    }
    return ALLOY_STATUS_OK;
}

alloy_status ensemble_engine_prefill(ensemble_engine *x, float *logits, alloy_logits_rows rows, const int *seqs,
                                     const int32_t *const *tokens, const int *lens, int n_seqs) {
    call c = {.rows = rows, .seqs = seqs, .tokens = tokens, .lens = lens, .n = n_seqs};
    return run_call(x, rows == ALLOY_LOGITS_NONE ? NULL : logits, &c);
}

alloy_status ensemble_engine_decode(ensemble_engine *x, float *logits, const int *seqs, const int32_t *tokens, int n) {
    call c = {.rows = ALLOY_LOGITS_LAST, .seqs = seqs, .flat = tokens, .n = n};
    return run_call(x, logits, &c);
}

void ensemble_engine_reset(ensemble_engine *x, int seq) {
    for (int i = 0; i < x->n; i++) alloy_engine_reset(x->members[i], seq);
}

alloy_status ensemble_engine_truncate(ensemble_engine *x, int seq, int len) {
    for (int i = 0; i < x->n; i++) {
        alloy_status s = alloy_engine_truncate(x->members[i], seq, len);
        if (s) {
            alloy_error_prefix("ensemble member %d", i);
            return s;
        }
    }
    return ALLOY_STATUS_OK;
}

void ensemble_engine_info(const ensemble_engine *x, alloy_engine_info *info) {
    for (int i = 0; i < x->n; i++) {
        alloy_engine_info m;
        alloy_engine_get_info(x->members[i], &m);
        for (int t = 0; t < ALLOY_QTYPE_COUNT; t++) info->n_matrices[t] += m.n_matrices[t];
        info->weight_bytes += m.weight_bytes;
        info->other_bytes += m.other_bytes;
        info->cache_bytes += m.cache_bytes;
        if (i == 0) info->weights = m.weights;
    }
}
