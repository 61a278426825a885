/*
 * ensemble_engine.c — N engines run as one: every call goes to each member with the same
 * arguments and the rows of logits are combined (see "Ensemble engines" in alloy/infer.h).
 *
 * Per row, with member i's logits zᵢ (V) and weights wᵢ (summing to 1), the mixing kernels of
 * alloy/kernels.h (the ones the fp32 ensemble and the learned combiner use):
 *   PROBS   log Σ wᵢ softmax(zᵢ) (ensemble_mix_forward: a log-sum-exp over members in double,
 *           so no probability underflows to 0 before the log and every token that a weighted
 *           member gives a finite logit keeps a finite log-probability);
 *   LOGITS  Σ wᵢ zᵢ (ensemble_logits_forward).
 * Member 0 writes into the caller's buffer, member i > 0 into slice i − 1 of one scratch of
 * (n − 1, rows, V) floats, sized for max_batch rows at creation (decode steps and LAST
 * prefills) and grown when an ALL prefill asks for more rows; once every member has run, each
 * row is combined into the caller's buffer.
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
    double log_w[ALLOY_ENGINE_MAX_MEMBERS];          /* (n) their logs (PROBS; −inf for 0) */
    int n;                                           /* members */
    alloy_ensemble_mode mode;                        /* PROBS or LOGITS */
    int V;                                           /* the members' vocabulary */
    int max_batch;                                   /* the members' max_batch */
    float *scratch;                                  /* (n - 1, cap_rows, V) members 1.. logits */
    size_t cap_rows;                                 /* rows scratch holds per member */
    int *base;                                       /* (max_batch) lengths before a call, for a roll-back */
};

/* Makes room in scratch for rows rows of logits of every member but the first (its contents
 * are not kept). */
static alloy_status reserve(ensemble_engine *x, int64_t rows) {
    if (x->scratch && (size_t)rows <= x->cap_rows) return ALLOY_STATUS_OK;
    size_t cells;
    if (!alloy_mul_size((size_t)rows, (size_t)x->V, &cells) || !alloy_mul_size(cells, (size_t)(x->n - 1), &cells) ||
        !alloy_mul_size(cells, sizeof(float), &cells))
        return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: %d x %lld x %d logits overflow", x->n - 1, (long long)rows, x->V);
    float *p = alloy_malloc(cells);
    if (!p)
        return alloy_fail(ALLOY_STATUS_NOMEM, "ensemble engine: out of memory for %d x %lld x %d logits", x->n - 1,
                          (long long)rows, x->V);
    alloy_free(x->scratch);
    x->scratch = p;
    x->cap_rows = (size_t)rows;
    return ALLOY_STATUS_OK;
}

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
        x->log_w[i] = log(x->w[i]);
    }
    x->n = n;
    x->mode = mode;
    x->V = i0.vocab_size;
    x->max_batch = i0.max_batch;
    x->base = alloy_calloc((size_t)x->max_batch, sizeof(int));
    if (!x->base || reserve(x, i0.max_batch)) {
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

/* Combines the rows (rows, V) of every member into out, which holds member 0's. */
static void combine(const ensemble_engine *x, float *out, int64_t rows) {
    int V = x->V, n = x->n;
    size_t slice = x->cap_rows * (size_t)V;
#pragma omp parallel for schedule(static) if (rows * V > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *z[ALLOY_ENGINE_MAX_MEMBERS];
        z[0] = out + r * V;
        for (int i = 1; i < n; i++) z[i] = x->scratch + (size_t)(i - 1) * slice + (size_t)r * (size_t)V;
        if (x->mode == ALLOY_ENSEMBLE_PROBS) ensemble_mix_forward(out + r * V, z, x->log_w, n, V);
        else ensemble_logits_forward(out + r * V, z, x->w, n, V);
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
        float *z = !rows ? NULL : i ? x->scratch + (size_t)(i - 1) * x->cap_rows * (size_t)x->V : logits;
        s = run_member(x->members[i], z, c);
        if (s) {
            alloy_error_prefix("ensemble member %d", i);
            for (int j = 0; j < i; j++) // back to where they were: the members stay in lockstep
                for (int k = 0; k < c->n; k++) alloy_engine_truncate(x->members[j], c->seqs[k], x->base[c->seqs[k]]);
            return s;
        }
    }
    if (rows) combine(x, logits, rows);
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
