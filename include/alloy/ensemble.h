/*
 * alloy/ensemble.h — inference-time ensembles of models that share a tokenizer.
 *
 * The members' next-token distributions are combined per position, either as a weighted
 * mixture of probabilities, p(y) = Σ wᵢ·pᵢ(y), or as a weighted sum of logits before one
 * softmax (a product of experts), p(y) ∝ exp(Σ wᵢ·zᵢ(y)). Weights are normalised to sum to 1.
 *
 *     alloy_model *a, *b;                       // alloy_model_load(&a, "runs/a", 1, 256) ...
 *     alloy_model *ms[] = {a, b};
 *     float w[] = {0.5f, 0.5f};
 *     alloy_ensemble *e;
 *     alloy_ensemble_create(&e, ms, w, 2, ALLOY_ENSEMBLE_PROBS);
 *     alloy_ensemble_logprobs(e, tokens, 1, T, logp);   // logp: (T, V) log-probabilities
 *     alloy_ensemble_destroy(e);                // the models stay the caller's
 */
#ifndef ALLOY_ENSEMBLE_H
#define ALLOY_ENSEMBLE_H

#include "alloy/base.h"
#include "alloy/data.h"
#include "alloy/model.h"
#include "alloy/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum alloy_ensemble_mode {
    ALLOY_ENSEMBLE_PROBS = 0,  /* mixture: log Σ wᵢ softmax(zᵢ) */
    ALLOY_ENSEMBLE_LOGITS = 1, /* log softmax(Σ wᵢ zᵢ) */
} alloy_ensemble_mode;

typedef struct alloy_ensemble {
    alloy_model **models;     /* (n) borrowed */
    double *weights;          /* (n) normalised to sum to 1 */
    int n;
    alloy_ensemble_mode mode;
    int vocab_size;           /* V, the members' common vocabulary */
} alloy_ensemble;

/* Checks that the members agree (family need not; vocabulary size and tokenizer name must),
 * that weights are finite, >= 0 and not all 0 (NULL: equal weights). */
alloy_status alloy_ensemble_create(alloy_ensemble **out, alloy_model *const *models, const float *weights, int n,
                                   alloy_ensemble_mode mode);
void alloy_ensemble_destroy(alloy_ensemble *e);
bool alloy_ensemble_mode_parse(const char *name, alloy_ensemble_mode *out); /* "probs", "logits" */

/* logp (B·T, V) = the ensemble's log-probabilities of the next token at every position of
 * tokens (B, T); B·T must fit every member's buffers. */
alloy_status alloy_ensemble_logprobs(alloy_ensemble *e, const int32_t *tokens, int B, int T, float *logp);

/* As alloy_eval_lm, for the ensemble: the mean of −log p(target) over every window of the
 * split (or the first max_windows). */
alloy_status alloy_ensemble_eval(alloy_ensemble *e, const alloy_dataset *ds, alloy_split split, int B, int T,
                                 int64_t max_windows, alloy_eval_result *out);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_ENSEMBLE_H */
