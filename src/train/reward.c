/*
 * reward.c — reward models: a scalar head on a transformer's final hidden states, the ranking
 * loss that trains it, and its checkpoint folder.
 *
 * The head is score.weight (1, C) and score.bias (1), read at the last token of prompt +
 * response, as Hugging Face's GPT2ForSequenceClassification / LlamaForSequenceClassification
 * (which have no bias; transformers ignores ours with a warning). A ranking best ... worst of K
 * responses gives K(K-1)/2 pairs, all in one batch, each with the Bradley-Terry loss
 * -log σ(r_better - r_worse); a prompt's loss is the mean over its pairs and the batch's the mean
 * over prompts, so a prompt with many responses does not outweigh one with two (InstructGPT,
 * Ouyang et al. 2022, eq. 1).
 *
 * The head's parameters live in their own small arena; head_view presents it as a table of two
 * tensors so that the optimiser's create/save/load serve it unchanged, and
 * alloy_reward_optimizer_step clips backbone and head by one global norm.
 */
#include "alloy/align.h"
#include "alloy/io.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

/* -log σ(x), without overflow for large |x|. */
static double neg_log_sigmoid(double x) { return x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x)); }

double alloy_reward_loss(const float *r, const int *ex_row, int n_ex, float grad_scale, float *dr, alloy_align_stats *st) {
    if (dr)
        for (int i = 0; i < ex_row[n_ex]; i++) dr[i] = 0.0f;
    double loss = 0.0;
    int counted = 0;
    for (int e = 0; e < n_ex; e++) counted += ex_row[e + 1] - ex_row[e] >= 2;
    for (int e = 0; e < n_ex && counted > 0; e++) {
        int a = ex_row[e], K = ex_row[e + 1] - a;
        if (K < 2) continue;
        double P = 0.5 * K * (K - 1), le = 0.0;
        for (int i = 0; i < K; i++) {
            for (int j = i + 1; j < K; j++) {
                double x = (double)r[a + i] - (double)r[a + j];
                le += neg_log_sigmoid(x);
                if (dr) { // d(-log σ(x))/dx = -σ(-x)
                    double g = -1.0 / (1.0 + exp(x)) * grad_scale / (P * counted);
                    dr[a + i] += (float)g;
                    dr[a + j] -= (float)g;
                }
                if (st) {
                    st->pairs += 1;
                    st->correct += x > 0;
                    st->margin_sum += x;
                }
            }
        }
        loss += le / P;
    }
    if (counted) loss /= counted;
    if (st) {
        st->loss_sum += loss * counted;
        st->weight += counted;
    }
    return loss;
}

alloy_status alloy_reward_scores(alloy_reward_model *rm, const alloy_align_batch *b, float *r) {
    alloy_status s = alloy_model_forward_ex(rm->model, b->tokens, b->B, b->T, false);
    if (!s) s = alloy_scalar_head_forward(rm->model, rm->head, rm->head + rm->head_tensors[1].offset, b->last, b->B, r);
    return s;
}

alloy_status alloy_reward_step(alloy_reward_model *rm, const alloy_align_batch *b, float grad_scale, alloy_align_stats *st) {
    float *r = alloy_malloc(sizeof(float) * 2 * (size_t)b->B);
    if (!r) return ALLOY_STATUS_NOMEM;
    float *dr = r + b->B;
    alloy_status s = alloy_reward_scores(rm, b, r);
    if (!s) {
        alloy_reward_loss(r, b->ex_row, b->n_examples, grad_scale, dr, st);
        if (st)
            for (int i = 0; i < b->B; i++) st->tokens += b->len[i];
    }
    if (!s && grad_scale != 0.0f) {
        size_t bo = rm->head_tensors[1].offset;
        alloy_model *m = rm->model;
        float *dh = alloy_model_dhidden_buffer(m); // the scalar head adds into it: zeroed first
        memset(dh, 0, sizeof(float) * (size_t)b->B * (size_t)b->T * (size_t)m->config.d_model);
        s = alloy_scalar_head_backward(m, rm->head, rm->head_grad, rm->head_grad + bo, b->last, b->B, dr, dh);
        if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dhidden = dh, .aux_scale = 1.0f});
    }
    alloy_free(r);
    return s;
}

alloy_status alloy_reward_optimizer_step(alloy_reward_model *rm, alloy_optimizer *om, alloy_optimizer *oh, float lr,
                                         float *grad_norm) {
    if (om->n != rm->model->num_params || oh->n != rm->head_floats)
        return alloy_fail(ALLOY_STATUS_INTERNAL, "optimisers do not match the reward model");
    alloy_optimizer *opts[2] = {om, oh};
    alloy_model *models[2] = {rm->model, &rm->head_view};
    return alloy_optimizer_step_groups(opts, models, 2, lr, grad_norm);
}
