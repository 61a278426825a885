/*
 * alloy/eval.h — held-out evaluation: one walk over a split for every kind of scorer.
 *
 * Whatever gives log p(next token) is a next-token log-probability source: a model through the
 * training forward (here), an inference engine in any weight format (alloy/infer.h), an
 * ensemble (alloy/ensemble.h), a learned combiner's members (its training's final report).
 * alloy_eval_source scores every window of T + 1 tokens of a split with one, in order, B
 * windows at a time, and sums −log p(target) in double, row by row, in the order of the
 * windows, so the figure is the same for every B.
 *
 *     alloy_logprob_source src;
 *     alloy_model_logprob_source(&src, m);      // or alloy_engine_logprob_source(&src, engine)
 *     alloy_eval_result r;                      // alloy/base.h
 *     alloy_eval_source(&src, ds, ALLOY_SPLIT_VAL, 8, 256, 0, &r);
 *     alloy_logprob_source_release(&src);
 */
#ifndef ALLOY_EVAL_H
#define ALLOY_EVAL_H

#include "alloy/base.h"
#include "alloy/data.h"
#include "alloy/model.h"

ALLOY_BEGIN_DECLS

/* A next-token log-probability source. score fills logp (n_out, B·T): for output k and row
 * r = b·T + t, log p_k(targets[r] | inputs[b, 0..t]), for inputs and targets (B, T), B at most
 * max_B and T at most max_T. Double, so that a source that computes a row's log-probability in
 * double (the engine's log-sum-exp, a combiner's mixtures) hands it over unrounded. A source
 * may keep state between calls (buffers, a cache) and is used by one thread at a time. */
typedef struct alloy_logprob_source {
    alloy_status (*score)(void *ctx, const int32_t *inputs, const int32_t *targets, int B, int T, double *logp);
    void (*release)(void *ctx); /* frees ctx (NULL: nothing to free) */
    void *ctx;                  /* the scorer and its buffers */
    int max_B;                  /* most windows per call */
    int max_T;                  /* most targets per window */
    int vocab_size;             /* V: every token of the data must lie below it */
    int n_out;                  /* outputs per row (1 for one model; a combiner's members: n + 2) */
    const char *name;           /* what scores, for messages: "the model", "the engine" */
} alloy_logprob_source;

/* Releases what the source's constructor allocated (the scorer itself stays the caller's);
 * clears *src. Safe on a cleared source. */
void alloy_logprob_source_release(alloy_logprob_source *src);

/* Scores every window of T + 1 tokens of the split (or the first max_windows, if > 0), in
 * order, B at a time — full batches, then the remainder as a batch whose extra rows (the
 * loader's next windows) are scored and not counted — and fills out[k] (n_out of them) from
 * the sum of −log p_k over every target token: the mean loss and its perplexity. The sums run
 * in double in the order of the rows, so the result does not depend on B as long as the
 * source scores a row the same in any batch. USAGE when B or T does not fit the source or the
 * split has no window of T + 1 tokens, MISMATCH when the data's tokens do not fit its vocabulary. */
alloy_status alloy_eval_source(const alloy_logprob_source *src, const alloy_dataset *ds, alloy_split split, int B,
                               int T, int64_t max_windows, alloy_eval_result *out);

/* Fills r from the summed negative log-likelihood of `windows` windows of T targets each. */
void alloy_eval_result_set(alloy_eval_result *r, double sum_nll, int64_t windows, int T);

/* The model's training forward (fp32, no (B·T, V) logits: the LM head in row chunks) as a
 * source of one output, up to the model's buffers (max_B, max_T). The model stays the caller's
 * and must outlive the source; NOMEM if its small buffer cannot be had. */
alloy_status alloy_model_logprob_source(alloy_logprob_source *src, alloy_model *m);

/* alloy_eval_source over alloy_model_logprob_source: the mean loss over all target tokens of
 * the split and its perplexity. The result does not depend on B. */
alloy_status alloy_eval_lm(alloy_model *m, const alloy_dataset *ds, alloy_split split, int B, int T,
                           int64_t max_windows, alloy_eval_result *out);

ALLOY_END_DECLS
#endif /* ALLOY_EVAL_H */
