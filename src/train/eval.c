/*
 * eval.c — held-out loss and perplexity over a split of token shards (alloy/eval.h): the one
 * walk over the split that every scorer shares, and the model's training forward as a scorer.
 *
 * Every window of the split is scored once, in order: full batches of B windows, then the
 * remainder as a full batch of which only the first rows count. The loss is the mean over
 * every target token (each window of T inputs predicts T targets), summed in double row by row
 * in the order of the windows, so the figure does not depend on B; perplexity is its
 * exponential. Engines (src/infer/perplexity.c), ensembles (src/fuse/ensemble.c) and a
 * combiner's members (src/fuse/combiner.c) are scored by the same walk.
 */
#include "alloy/eval.h"

#include <math.h>
#include <string.h>

void alloy_eval_result_set(alloy_eval_result *r, double sum_nll, int64_t windows, int T) {
    r->windows = windows;
    r->tokens = windows * T;
    r->loss = r->tokens ? sum_nll / (double)r->tokens : 0.0;
    r->perplexity = exp(r->loss);
}

void alloy_logprob_source_release(alloy_logprob_source *src) {
    if (src->release) src->release(src->ctx);
    memset(src, 0, sizeof *src);
}

/* The refusals of alloy_eval_source before it reads any data. */
static alloy_status check_fit(const alloy_logprob_source *src, const alloy_dataset *ds, int B, int T) {
    if (B < 1 || T < 1)
        return alloy_fail(ALLOY_STATUS_USAGE, "eval: a batch of %d windows of %d tokens; both must be >= 1", B, T);
    if (T > src->max_T)
        return alloy_fail(ALLOY_STATUS_USAGE, "eval: windows of %d tokens do not fit %s (at most %d)", T, src->name,
                          src->max_T);
    if (B > src->max_B)
        return alloy_fail(ALLOY_STATUS_USAGE, "eval: %d windows at a time do not fit %s (at most %d)", B, src->name,
                          src->max_B);
    if (ds->vocab_size > (uint32_t)src->vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data's tokens go up to id %u but %s has a vocabulary of %d",
                          ds->dir, ds->vocab_size - 1, src->name, src->vocab_size);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_eval_source(const alloy_logprob_source *src, const alloy_dataset *ds, alloy_split split, int B,
                               int T, int64_t max_windows, alloy_eval_result *out) {
    int K = src->n_out > 0 ? src->n_out : 1;
    memset(out, 0, sizeof *out * (size_t)K);
    alloy_status s = check_fit(src, ds, B, T);
    if (s) return s;
    alloy_loader *l;
    s = alloy_loader_create(&l, ds, split, B, T, 0); // USAGE, one line, when the split has no window
    if (s) return s;
    int64_t n = l->n_windows, N = (int64_t)B * T;
    if (max_windows > 0 && max_windows < n) n = max_windows;
    size_t cells;
    double *logp = NULL, *sum = alloy_calloc((size_t)K, sizeof(double));
    if (!sum || !alloy_mul_size((size_t)K, (size_t)N, &cells) || !(logp = alloy_malloc(sizeof(double) * cells)))
        s = alloy_fail(ALLOY_STATUS_NOMEM, "eval: out of memory for the log-probabilities (%d x %d x %d)", K, B, T);
    for (int64_t w = 0; w < n && !s; w += B) {
        alloy_loader_next(l);
        int64_t rows = n - w < B ? n - w : B;
        s = src->score(src->ctx, l->inputs, l->targets, B, T, logp);
        for (int k = 0; k < K && !s; k++)
            for (int64_t r = 0; r < rows * T; r++) sum[k] -= logp[k * N + r];
    }
    for (int k = 0; k < K && !s; k++) {
        alloy_eval_result_set(&out[k], sum[k], n, T);
        out[k].split_windows = l->n_windows;
    }
    alloy_free(logp);
    alloy_free(sum);
    alloy_loader_destroy(l);
    return s;
}

/* ---- the model's training forward as a source ---- */

typedef struct model_source {
    alloy_model *m;
    float *logp; /* (max_B·max_T) the head's log-probabilities */
} model_source;

static alloy_status model_score(void *ctx, const int32_t *inputs, const int32_t *targets, int B, int T, double *logp) {
    model_source *ms = ctx;
    alloy_status s = alloy_model_forward_ex(ms->m, inputs, B, T, false);
    if (!s) s = alloy_lm_logprobs_chunked(ms->m, targets, NULL, B, T, NULL, ms->logp);
    for (int64_t r = 0; !s && r < (int64_t)B * T; r++) logp[r] = ms->logp[r];
    return s;
}

static void model_release(void *ctx) {
    model_source *ms = ctx;
    if (ms) alloy_free(ms->logp);
    alloy_free(ms);
}

alloy_status alloy_model_logprob_source(alloy_logprob_source *src, alloy_model *m) {
    memset(src, 0, sizeof *src);
    model_source *ms = alloy_calloc(1, sizeof *ms);
    if (ms) ms->logp = alloy_malloc(sizeof(float) * (size_t)m->max_B * (size_t)m->max_T);
    if (!ms || !ms->logp) {
        model_release(ms);
        return alloy_fail(ALLOY_STATUS_NOMEM, "eval: out of memory for the model's log-probabilities");
    }
    ms->m = m;
    *src = (alloy_logprob_source){.score = model_score, .release = model_release, .ctx = ms, .max_B = m->max_B,
                                  .max_T = m->max_T, .vocab_size = m->config.vocab_size, .n_out = 1,
                                  .name = "the model"};
    return ALLOY_STATUS_OK;
}

alloy_status alloy_eval_lm(alloy_model *m, const alloy_dataset *ds, alloy_split split, int B, int T,
                           int64_t max_windows, alloy_eval_result *out) {
    alloy_logprob_source src;
    alloy_status s = alloy_model_logprob_source(&src, m);
    if (!s) s = alloy_eval_source(&src, ds, split, B, T, max_windows, out);
    else memset(out, 0, sizeof *out);
    alloy_logprob_source_release(&src);
    return s;
}
