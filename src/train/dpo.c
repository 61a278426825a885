/*
 * dpo.c — direct preference optimisation: the loss on sequence log-probabilities of a policy
 * and a frozen reference, and its gradient as signed per-token weights on the LM head.
 *
 * With Δ = (logπ(c) - logπref(c)) - (logπ(r) - logπref(r)), log-probabilities summed over the
 * response's tokens (Rafailov et al. 2023):
 *   sigmoid  L = -(1-ε)·log σ(βΔ) - ε·log σ(-βΔ)        ε = label smoothing: the probability
 *            that a preference label is flipped (conservative DPO; ε = 0 is DPO itself);
 *   ipo      L = (Δ' - 1/(2β))²                           Δ' as Δ with every log-probability
 *            divided by its response's token count (Azar et al. 2023, eq. 17, on per-token
 *            averages as TRL computes it);
 * averaged over the pairs. The gradient of logπ(seq) = Σ_t log p(x_t) is the sum of the
 * per-token gradients, so dL/dθ = Σ_t w_t · d log p(x_t)/dθ with w_t = dL/dlogπ(seq) for every
 * response token of the sequence: negative for a chosen response's tokens (their probability
 * should rise), positive for a rejected one's. alloy_lm_logprobs_chunked takes those weights.
 * Logged rewards are β·(logπ - logπref) of the summed log-probabilities, as TRL logs them.
 */
#include "alloy/align.h"

#include <math.h>
#include <string.h>

const char *alloy_dpo_loss_name(alloy_dpo_loss_type t) { return t == ALLOY_DPO_IPO ? "ipo" : "sigmoid"; }

alloy_status alloy_dpo_loss_parse(const char *name, alloy_dpo_loss_type *out) {
    if (!strcmp(name, "sigmoid")) *out = ALLOY_DPO_SIGMOID;
    else if (!strcmp(name, "ipo")) *out = ALLOY_DPO_IPO;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown DPO loss \"%s\" (known: sigmoid, ipo)", name);
    return ALLOY_STATUS_OK;
}

/* log σ(x) without overflow. */
static double log_sigmoid(double x) { return x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x)); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

double alloy_dpo_loss(const alloy_dpo_config *c, const double *pc, const double *pr, const double *rc, const double *rr,
                      const int *nc, const int *nr, int n, float grad_scale, double *dc, double *dr, alloy_align_stats *st) {
    double beta = c->beta, eps = c->label_smoothing, loss = 0.0;
    for (int i = 0; i < n; i++) {
        double lc = pc[i] - rc[i], lr = pr[i] - rr[i], dL; // dL: d(this pair's loss)/dΔ
        double kc = 1.0, kr = 1.0;                           // dΔ/dlogπ(c), -dΔ/dlogπ(r)
        if (c->loss == ALLOY_DPO_IPO) {
            kc = 1.0 / (nc[i] > 1 ? nc[i] : 1);
            kr = 1.0 / (nr[i] > 1 ? nr[i] : 1);
            double d = lc * kc - lr * kr - 1.0 / (2.0 * beta);
            loss += d * d;
            dL = 2.0 * d;
        } else {
            double z = beta * (lc - lr);
            loss += -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
            dL = beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z));
        }
        if (dc) dc[i] = grad_scale * dL * kc / n;
        if (dr) dr[i] = -grad_scale * dL * kr / n;
        if (st) {
            double bc = beta * lc, br = beta * lr;
            st->pairs += 1;
            st->correct += bc > br;
            st->margin_sum += bc - br;
            st->chosen_sum += bc;
            st->rejected_sum += br;
            st->logp_chosen_sum += pc[i];
            st->logp_rejected_sum += pr[i];
        }
    }
    if (n > 0) loss /= n;
    if (st) {
        st->loss_sum += loss * n;
        st->weight += n;
    }
    return loss;
}

alloy_status alloy_dpo_logps(alloy_model *m, const alloy_align_batch *b, double *logp, int *count) {
    size_t N = (size_t)b->B * (size_t)b->T;
    float *lp = alloy_malloc(sizeof(float) * N);
    if (!lp) return ALLOY_STATUS_NOMEM;
    alloy_status s = alloy_model_forward_ex(m, b->tokens, b->B, b->T, false);
    if (!s) s = alloy_lm_logprobs_chunked(m, b->targets, NULL, b->B, b->T, NULL, lp);
    for (int r = 0; r < b->B && !s; r++) {
        double sum = 0.0;
        int k = 0;
        for (int t = 0; t < b->T; t++) {
            size_t i = (size_t)r * b->T + t;
            if (b->targets[i] < 0) continue;
            sum += lp[i];
            k++;
        }
        logp[r] = sum;
        if (count) count[r] = k;
    }
    alloy_free(lp);
    return s;
}

alloy_status alloy_dpo_step(alloy_model *m, const alloy_align_batch *b, const double *ref, const alloy_dpo_config *c,
                            float grad_scale, alloy_align_stats *st) {
    int n = b->n_examples;
    for (int e = 0; e < n; e++)
        if (b->ex_row[e] != 2 * e || b->ex_row[e + 1] != 2 * e + 2)
            return alloy_fail(ALLOY_STATUS_USAGE, "dpo: example %d of the batch is not a pair (chosen, rejected)", e);
    if (!(c->beta > 0.0) || !(c->label_smoothing >= 0.0 && c->label_smoothing < 0.5))
        return alloy_fail(ALLOY_STATUS_USAGE, "dpo: beta must be > 0 and label smoothing in [0, 0.5)");
    size_t N = (size_t)b->B * (size_t)b->T;
    double *buf = alloy_malloc(sizeof(double) * 7 * (size_t)n + sizeof(double) * (size_t)b->B);
    int *cnt = alloy_malloc(sizeof(int) * (size_t)b->B);
    float *w = grad_scale != 0.0f ? alloy_malloc(sizeof(float) * N) : NULL;
    alloy_status s = (!buf || !cnt || (grad_scale != 0.0f && !w)) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    double *logp = buf, *pc = buf + b->B, *pr = pc + n, *rc = pr + n, *rr = rc + n, *dc = rr + n, *dr = dc + n;
    int *nc = NULL, *nr = NULL;
    int *counts = NULL;
    if (!s) s = alloy_dpo_logps(m, b, logp, cnt);
    if (!s) {
        counts = alloy_malloc(sizeof(int) * 2 * (size_t)n);
        if (!counts) s = ALLOY_STATUS_NOMEM;
        nc = counts;
        nr = counts ? counts + n : NULL;
    }
    if (!s) {
        for (int e = 0; e < n; e++) {
            pc[e] = logp[2 * e], pr[e] = logp[2 * e + 1];
            rc[e] = ref[2 * e], rr[e] = ref[2 * e + 1];
            nc[e] = cnt[2 * e], nr[e] = cnt[2 * e + 1];
        }
        alloy_dpo_loss(c, pc, pr, rc, rr, nc, nr, n, grad_scale, w ? dc : NULL, w ? dr : NULL, st);
        if (st)
            for (int i = 0; i < b->B; i++) st->tokens += b->len[i];
    }
    if (!s && w) {
        // every response token of a sequence carries that sequence's dL/dlogπ
        for (int r = 0; r < b->B; r++) {
            float g = (float)(r % 2 == 0 ? dc[r / 2] : dr[r / 2]);
            for (int t = 0; t < b->T; t++) {
                size_t i = (size_t)r * b->T + t;
                w[i] = b->targets[i] < 0 ? 0.0f : g;
            }
        }
        // (the MoE load-balancing loss enters unscaled, aux_scale 1, as it always has here)
        float *dh = alloy_model_dhidden_buffer(m);
        s = alloy_lm_logprobs_chunked(m, b->targets, w, b->B, b->T, dh, NULL);
        if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dhidden = dh, .aux_scale = 1.0f});
    }
    alloy_free(counts);
    alloy_free(w);
    alloy_free(cnt);
    alloy_free(buf);
    return s;
}
