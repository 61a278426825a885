/*
 * sft.c — supervised fine-tuning's batches and step (alloy/align.h); the run SFT, reward and DPO
 * train in is align_run.c, an objective of the one run (run.c).
 *
 * SFT is the LM loss restricted to the response (assistant) tokens: the batch's targets are -1
 * everywhere else, so prompt tokens are context and never predictions. Examples are not packed:
 * each is one row, padded to the batch's longest sequence, so attention never crosses examples
 * and no mask beyond causality is needed (padding comes last and is never a target).
 *
 * alloy_align_batch_make lays a micro-batch of examples out as rows (one per sequence) with the
 * targets of the tokens the objective uses; alloy_sft_step is the SFT loss on them and its
 * gradient through the model's one backward.
 */
#include "alloy/align.h"
#include "alloy/io.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALLOY_VERSION "0.1.0"

/* ---- batches ---- */

void alloy_align_batch_free(alloy_align_batch *b) {
    alloy_free(b->ex_row);
    alloy_free(b->tokens);
    alloy_free(b->targets);
    alloy_free(b->last);
    alloy_free(b->len);
    memset(b, 0, sizeof *b);
}

alloy_status alloy_align_batch_make(alloy_align_batch *b, const alloy_align_data *d, const int64_t *idx, int n) {
    int rows = 0, T = 1;
    for (int e = 0; e < n; e++) {
        if (idx[e] < 0 || idx[e] >= d->n_examples)
            return alloy_fail(ALLOY_STATUS_RANGE, "batch: example %lld outside the data's %lld", (long long)idx[e],
                              (long long)d->n_examples);
        for (int64_t q = d->ex_start[idx[e]]; q < d->ex_start[idx[e] + 1]; q++) {
            int64_t L = d->seq_start[q + 1] - d->seq_start[q];
            if (L > T) T = (int)L;
            rows++;
        }
    }
    if (rows > b->rows_cap || T > b->cols_cap || n + 1 > b->ex_cap) {
        int rc = rows > b->rows_cap ? rows : b->rows_cap, cc = T > b->cols_cap ? T : b->cols_cap;
        int ec = n + 1 > b->ex_cap ? n + 1 : b->ex_cap;
        alloy_align_batch_free(b);
        size_t N = (size_t)rc * (size_t)cc;
        b->ex_row = alloy_malloc(sizeof(int) * (size_t)ec);
        b->tokens = alloy_malloc(sizeof(int32_t) * N);
        b->targets = alloy_malloc(sizeof(int32_t) * N);
        b->last = alloy_malloc(sizeof(int64_t) * (size_t)rc);
        b->len = alloy_malloc(sizeof(int32_t) * (size_t)rc);
        if (!b->ex_row || !b->tokens || !b->targets || !b->last || !b->len) {
            alloy_align_batch_free(b);
            return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a batch of %d x %d tokens", rc, cc);
        }
        b->rows_cap = rc, b->cols_cap = cc, b->ex_cap = ec;
    }
    b->B = rows;
    b->T = T;
    b->n_examples = n;
    int row = 0;
    for (int e = 0; e < n; e++) {
        b->ex_row[e] = row;
        for (int64_t q = d->ex_start[idx[e]]; q < d->ex_start[idx[e] + 1]; q++, row++) {
            int64_t a = d->seq_start[q], L = d->seq_start[q + 1] - a;
            int32_t *tk = b->tokens + (size_t)row * T, *tg = b->targets + (size_t)row * T;
            for (int t = 0; t < T; t++) {
                tk[t] = t < L ? d->tokens[a + t] : 0;
                tg[t] = t + 1 < L && d->mask[a + t + 1] ? d->tokens[a + t + 1] : -1;
            }
            b->last[row] = (int64_t)row * T + L - 1;
            b->len[row] = (int32_t)L;
        }
    }
    b->ex_row[n] = rows;
    return ALLOY_STATUS_OK;
}

/* ---- SFT ---- */

alloy_status alloy_sft_step(alloy_model *m, const alloy_align_batch *b, float grad_scale, alloy_align_stats *st) {
    float loss = 0.0f;
    alloy_status s = alloy_model_forward_ex(m, b->tokens, b->B, b->T, false);
    float *dh = alloy_model_dhidden_buffer(m);
    if (!s) s = alloy_lm_loss_chunked(m, b->targets, NULL, b->B, b->T, grad_scale, dh, &loss);
    if (!s && grad_scale != 0.0f)
        s = alloy_model_backward(m, &(alloy_backward_in){.dhidden = dh, .aux_scale = grad_scale});
    if (!s && st) {
        double count = 0;
        for (size_t i = 0; i < (size_t)b->B * b->T; i++) count += b->targets[i] >= 0;
        for (int r = 0; r < b->B; r++) st->tokens += b->len[r];
        st->loss_sum += (double)loss * count;
        st->weight += count;
    }
    return s;
}

