/*
 * perplexity.c — the inference engine as a next-token log-probability source (alloy/eval.h),
 * so that quantised weights (Q8_0, Q4_0, Q4_K, F16) are scored exactly as they generate.
 *
 * Each window of T + 1 tokens is prefilled from an empty sequence 0 with logits for every
 * position, one window at a time, and log p(target) = z[target] − max z − log Σ exp(z − max z)
 * in double; alloy_eval_source walks the split and sums, as it does for the fp32 model.
 */
#include "alloy/infer.h"

#include <limits.h>
#include <math.h>
#include <string.h>

typedef struct engine_source {
    alloy_engine *e;
    int V;
    float *logits; /* (cap, V) one window's logits */
    int cap;       /* rows of logits: the longest window so far (the context may be far longer) */
} engine_source;

static alloy_status engine_score(void *ctx, const int32_t *inputs, const int32_t *targets, int B, int T, double *logp) {
    engine_source *es = ctx;
    int V = es->V;
    alloy_status s = ALLOY_STATUS_OK;
    if (T > es->cap) {
        alloy_free(es->logits);
        es->cap = 0;
        if (!(es->logits = alloy_malloc(sizeof(float) * (size_t)T * (size_t)V)))
            return alloy_fail(ALLOY_STATUS_NOMEM, "eval: out of memory for the engine's logits (%d x %d)", T, V);
        es->cap = T;
    }
    for (int b = 0; b < B && !s; b++) {
        alloy_engine_reset(es->e, 0);
        int seq = 0, len = T;
        const int32_t *toks = inputs + (size_t)b * T, *tg = targets + (size_t)b * T;
        s = alloy_engine_prefill_batch(es->e, es->logits, ALLOY_LOGITS_ALL, &seq, &toks, &len, 1);
        for (int t = 0; !s && t < T; t++) {
            const float *z = es->logits + (size_t)t * V;
            float mx = -INFINITY;
            for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            double se = 0.0;
            for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
            logp[(size_t)b * T + t] = -(mx + log(se) - z[tg[t]]); // negated exactly: the sum is as it was
        }
    }
    alloy_engine_reset(es->e, 0);
    return s;
}

static void engine_release(void *ctx) {
    engine_source *es = ctx;
    if (es) alloy_free(es->logits);
    alloy_free(es);
}

alloy_status alloy_engine_logprob_source(alloy_logprob_source *src, alloy_engine *e) {
    memset(src, 0, sizeof *src);
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    engine_source *es = alloy_calloc(1, sizeof *es);
    if (!es) return alloy_fail(ALLOY_STATUS_NOMEM, "eval: out of memory for the engine's source");
    es->e = e;
    es->V = info.vocab_size;
    *src = (alloy_logprob_source){.score = engine_score, .release = engine_release, .ctx = es, .max_B = INT_MAX,
                                  .max_T = info.max_ctx, .vocab_size = info.vocab_size, .n_out = 1,
                                  .name = "the engine"};
    return ALLOY_STATUS_OK;
}

alloy_status alloy_engine_eval_lm(alloy_engine *e, const alloy_dataset *ds, alloy_split split, int T,
                                  int64_t max_windows, alloy_eval_result *out) {
    alloy_logprob_source src;
    alloy_status s = alloy_engine_logprob_source(&src, e);
    if (!s) s = alloy_eval_source(&src, ds, split, 1, T, max_windows, out);
    else memset(out, 0, sizeof *out);
    alloy_logprob_source_release(&src);
    return s;
}
