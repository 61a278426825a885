/*
 * ensemble.c — the combined next-token distribution of several models (see alloy/ensemble.h).
 *
 * Every member runs forward first; then per position, with each member's logits z, the mixing
 * kernels of alloy/kernels.h (the ones the ensemble engine and the combiner use): PROBS gives
 * log Σ wᵢ·softmax(zᵢ) (ensemble_mix_forward), LOGITS log softmax(Σ wᵢ·zᵢ)
 * (ensemble_logits_forward), LEARNED mixes as PROBS with the gate's per-row weights from the
 * members' final hidden states (combiner.c). Each row is mixed on its own, so the result is
 * the same for any number of threads.
 */
#include "alloy/ensemble.h"

#include <math.h>
#include <string.h>

alloy_status alloy_ensemble_mode_parse(const char *name, alloy_ensemble_mode *out) {
    if (!strcmp(name, "probs")) *out = ALLOY_ENSEMBLE_PROBS;
    else if (!strcmp(name, "logits")) *out = ALLOY_ENSEMBLE_LOGITS;
    else if (!strcmp(name, "learned")) *out = ALLOY_ENSEMBLE_LEARNED;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown ensemble mode \"%s\" (known: probs, logits, learned)", name ? name : "");
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ensemble_create(alloy_ensemble **out, alloy_model *const *models, const float *weights, int n,
                                   alloy_ensemble_mode mode) {
    *out = NULL;
    if (n < 1 || n > ALLOY_ENSEMBLE_MAX_MEMBERS)
        return alloy_fail(ALLOY_STATUS_USAGE, "an ensemble has 1 to %d models, not %d", ALLOY_ENSEMBLE_MAX_MEMBERS, n);
    if (mode != ALLOY_ENSEMBLE_PROBS && mode != ALLOY_ENSEMBLE_LOGITS)
        return alloy_fail(ALLOY_STATUS_USAGE, "unknown ensemble mode %d", (int)mode);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const alloy_config *c = &models[i]->config, *c0 = &models[0]->config;
        if (c->vocab_size != c0->vocab_size)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble member %d has a vocabulary of %d, member 0 of %d", i,
                              c->vocab_size, c0->vocab_size);
        if (strcmp(c->tokenizer, c0->tokenizer))
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble member %d was trained with tokenizer \"%s\", member 0 with \"%s\"",
                              i, c->tokenizer, c0->tokenizer);
        double w = weights ? weights[i] : 1.0;
        if (!(w >= 0.0 && isfinite(w)))
            return alloy_fail(ALLOY_STATUS_USAGE, "ensemble weight %d is %g; weights must be finite and >= 0", i, w);
        total += w;
    }
    if (!(total > 0.0)) return alloy_fail(ALLOY_STATUS_USAGE, "ensemble weights are all 0");
    alloy_ensemble *e = alloy_calloc(1, sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    e->models = alloy_calloc((size_t)n, sizeof *e->models);
    e->weights = alloy_calloc((size_t)n, sizeof *e->weights);
    if (!e->models || !e->weights) {
        alloy_ensemble_destroy(e);
        return ALLOY_STATUS_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        e->models[i] = models[i];
        e->weights[i] = (weights ? weights[i] : 1.0) / total;
    }
    e->n = n;
    e->mode = mode;
    e->vocab_size = models[0]->config.vocab_size;
    *out = e;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ensemble_create_learned(alloy_ensemble **out, alloy_model *const *models, int n,
                                           const alloy_combiner *c) {
    *out = NULL;
    alloy_status s = alloy_combiner_check(c, models, n);
    if (!s) s = alloy_ensemble_create(out, models, NULL, n, ALLOY_ENSEMBLE_PROBS);
    if (s) return s;
    (*out)->mode = ALLOY_ENSEMBLE_LEARNED;
    (*out)->combiner = c;
    return ALLOY_STATUS_OK;
}

void alloy_ensemble_destroy(alloy_ensemble *e) {
    if (!e) return;
    alloy_free(e->models);
    alloy_free(e->weights);
    alloy_free(e);
}

/* The per-row log-weights of a LEARNED ensemble: *gates (N, n) = log gᵢ of each row, from the
 * members' final hidden states (they have run forward); alloy_free it. */
static alloy_status learned_log_weights(double **gates, const alloy_ensemble *e, int64_t N) {
    int n = e->n;
    const float *hidden[ALLOY_COMBINER_MAX];
    for (int i = 0; i < n; i++) hidden[i] = alloy_model_hidden(e->models[i]);
    size_t cells;
    float *g = NULL;
    *gates = NULL;
    if (!alloy_mul_size((size_t)N, (size_t)n, &cells) || !(g = alloy_malloc(sizeof(float) * cells)) ||
        !(*gates = alloy_malloc(sizeof(double) * cells))) {
        alloy_free(g);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the gate's weights (%lld x %d)", (long long)N, n);
    }
    alloy_combiner_gate_forward(g, e->combiner, hidden, N);
    for (size_t k = 0; k < cells; k++) (*gates)[k] = log((double)g[k]);
    alloy_free(g);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ensemble_logprobs(alloy_ensemble *e, const int32_t *tokens, int B, int T, float *logp) {
    int V = e->vocab_size, n = e->n;
    int64_t N = (int64_t)B * T;
    const float *z[ALLOY_ENSEMBLE_MAX_MEMBERS]; // (n) each member's logits (N, V)
    for (int i = 0; i < n; i++) { // every member first: the mixing reads all their logits
        alloy_status s = alloy_model_forward_ex(e->models[i], tokens, B, T, true);
        if (s) return s;
        z[i] = alloy_model_logits(e->models[i]);
    }
    double *gates = NULL; // LEARNED: (N, n) per-row log-weights from the members' hidden states
    if (e->mode == ALLOY_ENSEMBLE_LEARNED) {
        alloy_status s = learned_log_weights(&gates, e, N);
        if (s) return s;
    }
    bool logits_mode = e->mode == ALLOY_ENSEMBLE_LOGITS;
    double w[ALLOY_ENSEMBLE_MAX_MEMBERS]; // LOGITS: wᵢ; PROBS: log wᵢ
    for (int i = 0; i < n; i++) w[i] = logits_mode ? e->weights[i] : log(e->weights[i]);
    static const double log_one = 0.0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; r++) {
        const float *zr[ALLOY_ENSEMBLE_MAX_MEMBERS];
        for (int i = 0; i < n; i++) zr[i] = z[i] + r * V;
        float *out = logp + r * V;
        if (logits_mode) {
            ensemble_logits_forward(out, zr, w, n, V);
            const float *sum = out;
            ensemble_mix_forward(out, &sum, &log_one, 1, V); // log softmax: a mixture of one member of weight 1
        } else {
            ensemble_mix_forward(out, zr, gates ? gates + r * n : w, n, V);
        }
    }
    alloy_free(gates);
    return ALLOY_STATUS_OK;
}

/* ---- the ensemble as a next-token log-probability source (alloy/eval.h) ---- */

typedef struct ensemble_source {
    alloy_ensemble *e;
    float *logp; /* (B·T, V) the combined log-probabilities of a batch */
} ensemble_source;

static alloy_status ensemble_score(void *ctx, const int32_t *inputs, const int32_t *targets, int B, int T,
                                   double *logp) {
    ensemble_source *es = ctx;
    int V = es->e->vocab_size;
    alloy_status s = alloy_ensemble_logprobs(es->e, inputs, B, T, es->logp);
    for (int64_t r = 0; !s && r < (int64_t)B * T; r++) logp[r] = es->logp[r * V + targets[r]];
    return s;
}

static void ensemble_release(void *ctx) {
    ensemble_source *es = ctx;
    if (es) alloy_free(es->logp);
    alloy_free(es);
}

alloy_status alloy_ensemble_logprob_source(alloy_logprob_source *src, alloy_ensemble *e, int B, int T) {
    memset(src, 0, sizeof *src);
    for (int i = 0; i < e->n; i++) {
        alloy_model *m = e->models[i];
        if (B < 1 || T < 1 || B > m->max_B || T > m->max_T)
            return alloy_fail(ALLOY_STATUS_USAGE, "eval: batch %d x %d does not fit member %d's buffers (%d x %d)", B,
                              T, i, m->max_B, m->max_T);
    }
    ensemble_source *es = alloy_calloc(1, sizeof *es);
    size_t cells;
    if (es && alloy_mul_size((size_t)B * (size_t)T, (size_t)e->vocab_size, &cells))
        es->logp = alloy_malloc(sizeof(float) * cells);
    if (!es || !es->logp) {
        ensemble_release(es);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the ensemble's log-probabilities (%d x %d x %d)", B, T,
                          e->vocab_size);
    }
    es->e = e;
    *src = (alloy_logprob_source){.score = ensemble_score, .release = ensemble_release, .ctx = es, .max_B = B,
                                  .max_T = T, .vocab_size = e->vocab_size, .n_out = 1, .name = "the ensemble"};
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ensemble_eval(alloy_ensemble *e, const alloy_dataset *ds, alloy_split split, int B, int T,
                                 int64_t max_windows, alloy_eval_result *out) {
    alloy_logprob_source src;
    alloy_status s = alloy_ensemble_logprob_source(&src, e, B, T);
    if (!s) s = alloy_eval_source(&src, ds, split, B, T, max_windows, out);
    else memset(out, 0, sizeof *out);
    alloy_logprob_source_release(&src);
    return s;
}
