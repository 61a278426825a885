/*
 * ppo.c — the PPO objective of RLHF: per-token rewards with a KL penalty, generalised advantage
 * estimation, whitening, the clipped surrogate and clipped value losses, the adaptive KL
 * controller, and the value head that shares the policy's backbone.
 *
 * Written after TRL's PPOTrainer (compute_rewards, compute_advantages, loss) and the papers it
 * follows (Schulman et al. 2017, PPO; Schulman et al. 2016, GAE; Ziegler et al. 2019, the
 * adaptive KL coefficient). The gradient of the loss reaches the model as one weight per
 * response token on its log-probability (alloy_lm_logprobs_chunked) and one per token on its
 * value (alloy_scalar_head_backward, which adds into the same hidden-state gradient), then the
 * model's one backward. The loop that samples rollouts with the inference engine and steps the
 * optimiser is src/align/ppo_run.c, an objective of the one run (it needs the engine, above this layer).
 */
#include "alloy/align.h"
#include "alloy/io.h"

#include <math.h>
#include <string.h>

const char *alloy_kl_penalty_name(alloy_kl_penalty k) {
    return k == ALLOY_KL_PENALTY_ABS ? "abs" : k == ALLOY_KL_PENALTY_MSE ? "mse" : "kl";
}

alloy_status alloy_kl_penalty_parse(const char *name, alloy_kl_penalty *out) {
    if (!strcmp(name, "kl")) *out = ALLOY_KL_PENALTY_KL;
    else if (!strcmp(name, "abs")) *out = ALLOY_KL_PENALTY_ABS;
    else if (!strcmp(name, "mse")) *out = ALLOY_KL_PENALTY_MSE;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown KL penalty \"%s\" (known: kl, abs, mse)", name);
    return ALLOY_STATUS_OK;
}

alloy_ppo_config alloy_ppo_config_default(void) {
    return (alloy_ppo_config){.gamma = 1.0, .lam = 0.95, .cliprange = 0.2, .cliprange_value = 0.2, .vf_coef = 0.1,
                              .kl_penalty = ALLOY_KL_PENALTY_KL, .whiten = true};
}

void alloy_ppo_rewards(const alloy_ppo_config *c, double beta, const float *logp, const float *ref_logp,
                       const float *scores, const int64_t *off, int n, float *rewards, float *kl) {
    for (int i = 0; i < n; i++) {
        for (int64_t t = off[i]; t < off[i + 1]; t++) {
            double d = (double)logp[t] - (double)ref_logp[t], p = d;
            if (c->kl_penalty == ALLOY_KL_PENALTY_ABS) p = fabs(d);
            else if (c->kl_penalty == ALLOY_KL_PENALTY_MSE) p = 0.5 * d * d;
            rewards[t] = (float)(-beta * p);
            if (kl) kl[t] = (float)d;
        }
        if (off[i + 1] > off[i]) rewards[off[i + 1] - 1] += scores[i];
    }
}

void alloy_gae(const float *rewards, const float *values, const int64_t *off, int n, double gamma, double lam, float *adv,
               float *ret) {
    for (int i = 0; i < n; i++) {
        double last = 0.0, next_value = 0.0;
        for (int64_t t = off[i + 1] - 1; t >= off[i]; t--) {
            double delta = (double)rewards[t] + gamma * next_value - (double)values[t];
            last = delta + gamma * lam * last;
            adv[t] = (float)last;
            ret[t] = (float)(last + (double)values[t]);
            next_value = values[t];
        }
    }
}

void alloy_whiten(float *x, int64_t n, bool shift_mean) {
    if (n < 1) return;
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
    if (n < 2) {
        x[0] = shift_mean ? 0.0f : (float)mean;
        return;
    }
    var /= (double)(n - 1); // unbiased, as torch.var in TRL's masked_var
    double scale = 1.0 / sqrt(var + 1e-8);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - mean) * scale + (shift_mean ? 0.0 : mean));
}

double alloy_ppo_loss(const alloy_ppo_config *c, const float *logp, const float *old_logp, const float *values,
                      const float *old_values, const float *adv, const float *returns, int64_t n, float grad_scale,
                      float *dlogp, float *dvalues, alloy_ppo_info *info) {
    double pg = 0, vf = 0, clip = 0, vclip = 0, akl = 0, pkl = 0, rsum = 0, vsum = 0;
    double eps = c->cliprange, veps = c->cliprange_value, inv = n > 0 ? 1.0 / (double)n : 0.0;
    for (int64_t i = 0; i < n; i++) {
        // the clipped surrogate: max(-A·r, -A·clip(r)); its gradient flows through the larger
        // term, and through clip(r) only inside [1-ε, 1+ε] (torch.clamp's gradient)
        double lr = (double)logp[i] - (double)old_logp[i], r = exp(lr), A = adv[i];
        double rc = r < 1.0 - eps ? 1.0 - eps : r > 1.0 + eps ? 1.0 + eps : r;
        double l1 = -A * r, l2 = -A * rc, dr;
        if (l2 > l1) { // torch.max picks l2 only when strictly larger
            pg += l2;
            clip += 1;
            dr = (r >= 1.0 - eps && r <= 1.0 + eps) ? -A : 0.0;
        } else {
            pg += l1;
            dr = -A;
        }
        if (dlogp) dlogp[i] = (float)(grad_scale * inv * dr * r); // d r / d logp = r
        // the clipped value loss: ½·max((v - R)², (clip(v, v_old ± ε_v) - R)²)
        double v = values[i], vo = old_values[i], R = returns[i];
        double vc = v < vo - veps ? vo - veps : v > vo + veps ? vo + veps : v;
        double e1 = (v - R) * (v - R), e2 = (vc - R) * (vc - R), dv;
        if (e2 > e1) {
            vf += 0.5 * e2;
            vclip += 1;
            dv = (v >= vo - veps && v <= vo + veps) ? (vc - R) : 0.0;
        } else {
            vf += 0.5 * e1;
            dv = v - R;
        }
        if (dvalues) dvalues[i] = (float)(grad_scale * inv * c->vf_coef * dv);
        akl += 0.5 * lr * lr;
        pkl += -lr;
        rsum += r;
        vsum += v;
    }
    pg *= inv, vf *= inv;
    double loss = pg + c->vf_coef * vf;
    if (info) {
        *info = (alloy_ppo_info){.loss = loss, .pg_loss = pg, .vf_loss = vf, .clipfrac = clip * inv, .vf_clipfrac = vclip * inv,
                                 .approx_kl = akl * inv, .policy_kl = pkl * inv, .ratio = rsum * inv, .value = vsum * inv,
                                 .tokens = n};
    }
    return loss;
}

void alloy_kl_controller_update(alloy_kl_controller *k, double current_kl, int64_t n_steps) {
    if (!k->adaptive || !(k->target > 0.0) || !(k->horizon > 0.0) || !isfinite(current_kl)) return;
    double err = current_kl / k->target - 1.0;
    err = err < -0.2 ? -0.2 : err > 0.2 ? 0.2 : err;
    k->value *= 1.0 + err * (double)n_steps / k->horizon;
}

/* ---- log-probabilities, values and the step ---- */

/* Rows b·T + t of the batch's targets (in order) into rows; returns their count. */
static int64_t target_rows(const alloy_align_batch *b, int64_t *rows) {
    int64_t n = 0;
    for (int64_t i = 0; i < (int64_t)b->B * b->T; i++)
        if (b->targets[i] >= 0) {
            if (rows) rows[n] = i;
            n++;
        }
    return n;
}

/* After a forward: the log-probabilities of the targets into logp (n, in order) and the values
 * at the same rows into values; lp is scratch of B·T floats, rows of n. */
static alloy_status gather(alloy_model *m, const alloy_reward_model *pv, const alloy_align_batch *b, float *lp,
                           const int64_t *rows, int64_t n, float *logp, float *values) {
    alloy_status s = alloy_lm_logprobs_chunked(m, b->targets, NULL, b->B, b->T, NULL, lp);
    for (int64_t k = 0; k < n && !s; k++) logp[k] = lp[rows[k]];
    if (!s && values)
        s = alloy_scalar_head_forward(m, pv->head, pv->head + pv->head_tensors[1].offset, rows, (int)n, values);
    return s;
}

alloy_status alloy_ppo_logps_values(alloy_model *m, const alloy_reward_model *pv, const alloy_align_batch *b, float *logp,
                                    float *values) {
    if (pv) m = pv->model;
    if (!pv) values = NULL;
    size_t N = (size_t)b->B * (size_t)b->T;
    int64_t n = target_rows(b, NULL);
    float *lp = alloy_malloc(sizeof(float) * N);
    int64_t *rows = alloy_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    alloy_status s = (!lp || !rows) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    if (!s) target_rows(b, rows);
    if (!s) s = alloy_model_forward_ex(m, b->tokens, b->B, b->T, false);
    if (!s) s = gather(m, pv, b, lp, rows, n, logp, values);
    alloy_free(lp);
    alloy_free(rows);
    return s;
}

alloy_status alloy_ppo_step(alloy_reward_model *pv, const alloy_align_batch *b, const alloy_ppo_config *c,
                            const float *old_logp, const float *old_values, const float *adv, const float *returns,
                            float grad_scale, alloy_ppo_info *info) {
    alloy_model *m = pv->model;
    size_t N = (size_t)b->B * (size_t)b->T;
    int64_t n = target_rows(b, NULL);
    size_t nn = (size_t)(n > 0 ? n : 1);
    float *lp = alloy_malloc(sizeof(float) * N), *w = alloy_malloc(sizeof(float) * N);
    float *tok = alloy_malloc(sizeof(float) * 4 * nn); // logp, values, dlogp, dvalues
    int64_t *rows = alloy_malloc(sizeof(int64_t) * nn);
    alloy_status s = (!lp || !w || !tok || !rows) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    float *logp = tok, *values = tok + nn, *dlogp = values + nn, *dvalues = dlogp + nn;
    if (!s) target_rows(b, rows);
    if (!s) s = alloy_model_forward_ex(m, b->tokens, b->B, b->T, false);
    if (!s) s = gather(m, pv, b, lp, rows, n, logp, values);
    if (!s) alloy_ppo_loss(c, logp, old_logp, values, old_values, adv, returns, n, grad_scale, dlogp, dvalues, info);
    if (!s && grad_scale != 0.0f) {
        // the LM head first (it writes the hidden-state gradient), the value head adds to it
        memset(w, 0, sizeof(float) * N);
        for (int64_t k = 0; k < n; k++) w[rows[k]] = dlogp[k];
        // (the MoE load-balancing loss enters unscaled, aux_scale 1, as it always has here)
        float *dh = alloy_model_dhidden_buffer(m);
        s = alloy_lm_logprobs_chunked(m, b->targets, w, b->B, b->T, dh, NULL);
        size_t bo = pv->head_tensors[1].offset;
        if (!s)
            s = alloy_scalar_head_backward(m, pv->head, pv->head_grad, pv->head_grad + bo, rows, (int)n, dvalues, dh);
        if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dhidden = dh, .aux_scale = 1.0f});
    }
    alloy_free(lp);
    alloy_free(w);
    alloy_free(tok);
    alloy_free(rows);
    return s;
}
