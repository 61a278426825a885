/*
 * eval.c — held-out loss and perplexity of a model over a split of token shards.
 *
 * Every window of the split is scored once, in order: full batches of B windows, then the
 * remainder as a batch whose missing rows have weight 0. The loss is the mean over every
 * target token (each window of T inputs predicts T targets), so the figure does not depend on
 * B, and perplexity is its exponential.
 */
#include "alloy/train.h"

#include <math.h>
#include <string.h>

void alloy_eval_result_set(alloy_eval_result *r, double sum_nll, int64_t windows, int T) {
    r->windows = windows;
    r->tokens = windows * T;
    r->loss = r->tokens ? sum_nll / (double)r->tokens : 0.0;
    r->perplexity = exp(r->loss);
}

alloy_status alloy_eval_lm(alloy_model *m, const alloy_dataset *ds, alloy_split split, int B, int T,
                           int64_t max_windows, alloy_eval_result *out) {
    memset(out, 0, sizeof *out);
    if (B < 1 || T < 1 || B > m->max_B || T > m->max_T)
        return alloy_fail(ALLOY_STATUS_USAGE, "eval: batch %d x %d does not fit the model's buffers (%d x %d)", B, T,
                          m->max_B, m->max_T);
    if (ds->vocab_size > (uint32_t)m->config.vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data's tokens go up to id %u but the model's vocabulary has %d",
                          ds->dir, ds->vocab_size - 1, m->config.vocab_size);
    alloy_loader *l;
    alloy_status s = alloy_loader_create(&l, ds, split, B, T, 0);
    if (s) return s;
    int64_t n = l->n_windows;
    if (max_windows > 0 && max_windows < n) n = max_windows;
    if (n == 0) {
        alloy_loader_destroy(l);
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: the %s split has no window of %d tokens to score", ds->dir,
                          split == ALLOY_SPLIT_VAL ? "validation" : "training", T + 1);
    }
    float *mask = alloy_malloc(sizeof(float) * (size_t)B * (size_t)T);
    if (!mask) {
        alloy_loader_destroy(l);
        return ALLOY_STATUS_NOMEM;
    }
    double sum = 0.0;
    for (int64_t w = 0; w < n && !s; w += B) {
        alloy_loader_next(l);
        int rows = n - w < B ? (int)(n - w) : B;
        for (int64_t i = 0; i < (int64_t)B * T; i++) mask[i] = i < (int64_t)rows * T ? 1.0f : 0.0f;
        float loss;
        s = alloy_model_forward_ex(m, l->inputs, B, T, false);
        if (!s) s = alloy_lm_loss_chunked(m, l->targets, rows < B ? mask : NULL, B, T, 0.0f, NULL, &loss);
        sum += (double)loss * rows * T;
    }
    if (!s) alloy_eval_result_set(out, sum, n, T);
    alloy_free(mask);
    alloy_loader_destroy(l);
    return s;
}
