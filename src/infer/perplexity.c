/*
 * perplexity.c — held-out loss and perplexity through the inference engine, so that quantised
 * weights (Q8_0, Q4_0, Q4_K, F16) are scored exactly as they generate.
 *
 * Each window of T + 1 tokens is prefilled from an empty cache with logits for every position,
 * and the loss is the mean over all targets, as alloy_eval_lm computes it for the fp32 model.
 */
#include "alloy/infer.h"
#include "alloy/train.h" // alloy_eval_result_set

#include <math.h>
#include <string.h>

alloy_status alloy_engine_eval_lm(alloy_engine *e, const alloy_dataset *ds, alloy_split split, int T,
                                  int64_t max_windows, alloy_eval_result *out) {
    memset(out, 0, sizeof *out);
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    if (T < 1 || T > info.max_ctx)
        return alloy_fail(ALLOY_STATUS_USAGE, "eval: windows of %d tokens do not fit the engine's context of %d", T,
                          info.max_ctx);
    int V = info.vocab_size;
    if (ds->vocab_size > (uint32_t)V)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data's tokens go up to id %u but the model's vocabulary has %d",
                          ds->dir, ds->vocab_size - 1, V);
    alloy_loader *l;
    alloy_status s = alloy_loader_create(&l, ds, split, 1, T, 0);
    if (s) return s;
    int64_t n = l->n_windows;
    if (max_windows > 0 && max_windows < n) n = max_windows;
    float *logits = alloy_malloc(sizeof(float) * (size_t)T * (size_t)V);
    if (!logits) s = ALLOY_STATUS_NOMEM;
    else if (n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the split has no window of %d tokens to score", ds->dir, T + 1);
    double sum = 0.0;
    for (int64_t w = 0; w < n && !s; w++) {
        alloy_loader_next(l);
        alloy_engine_reset(e, 0);
        int seq = 0, len = T;
        const int32_t *toks = l->inputs;
        s = alloy_engine_prefill_batch(e, logits, ALLOY_LOGITS_ALL, &seq, &toks, &len, 1);
        for (int t = 0; !s && t < T; t++) {
            const float *z = logits + (size_t)t * V;
            float mx = -INFINITY;
            for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            double se = 0.0;
            for (int v = 0; v < V; v++) se += exp((double)z[v] - mx);
            sum += mx + log(se) - z[l->targets[t]];
        }
    }
    alloy_engine_reset(e, 0);
    if (!s) alloy_eval_result_set(out, sum, n, T);
    alloy_free(logits);
    alloy_loader_destroy(l);
    return s;
}
