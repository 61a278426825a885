/*
 * score.c — every example of an alignment data file scored in order, a batch of examples at a
 * time: by a reward model (its score of each sequence) or, with logprobs, by a language model
 * (the sum of the log-probabilities of each response's tokens and their number). `alloy score`
 * prints what this hands it.
 */
#include "alloy/align.h"

alloy_status alloy_align_score(alloy_reward_model *rm, const alloy_align_data *d, int batch, bool logprobs,
                               alloy_score_fn emit, void *user) {
    if (batch < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "batch", "must be at least 1");
    size_t rows = (size_t)batch * (size_t)(d->max_seqs > 0 ? d->max_seqs : 1);
    float *scores = alloy_malloc(sizeof(float) * rows);
    double *values = alloy_malloc(sizeof(double) * rows);
    int *count = alloy_malloc(sizeof(int) * rows);
    int64_t *idx = alloy_malloc(sizeof(int64_t) * (size_t)batch);
    alloy_align_batch b = {0};
    alloy_status s = (!scores || !values || !count || !idx) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (int64_t e0 = 0; !s && e0 < d->n_examples; e0 += batch) {
        int n = (int)(d->n_examples - e0 < batch ? d->n_examples - e0 : batch);
        for (int i = 0; i < n; i++) idx[i] = e0 + i;
        s = alloy_align_batch_make(&b, d, idx, n);
        if (!s) s = logprobs ? alloy_dpo_logps(rm->model, &b, values, count) : alloy_reward_scores(rm, &b, scores);
        for (int i = 0; !s && i < n; i++) {
            int a = b.ex_row[i], k = b.ex_row[i + 1] - a;
            if (!logprobs)
                for (int j = 0; j < k; j++) values[a + j] = scores[a + j];
            emit(user, d->ex_line[e0 + i], values + a, logprobs ? count + a : NULL, k);
        }
    }
    alloy_align_batch_free(&b);
    alloy_free(scores);
    alloy_free(values);
    alloy_free(count);
    alloy_free(idx);
    return s;
}
