/*
 * ppo_rollouts.c — a PPO step's rollouts (steps 2-3 of ppo_run.c's top): responses to the step's
 * prompts sampled by the one generation loop (alloy_generate) over the policy's current weights,
 * the entropy of each sampling distribution, then per response token the policy's
 * log-probability and value, the frozen reference's log-probability and the reward model's score.
 */
#include "alloy/infer.h"
#include "alloy/io.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const int32_t *ppo_prompt_of(const ppo_run *r, int64_t e, int *len) {
    int64_t a = r->data.seq_start[r->data.ex_start[e]];
    *len = (int)(r->data.seq_start[r->data.ex_start[e] + 1] - a);
    return r->data.tokens + a;
}

/* Fills r->batch with rollouts idx[0..n): prompt + response (+ the reward model's suffix after
 * a response that ended with the stop token, when for_rm), targets on the response tokens. */
void ppo_make_batch(ppo_run *r, const int64_t *idx, int n, bool for_rm) {
    alloy_align_batch *b = &r->batch;
    int R = r->opt.max_new_tokens, T = 1;
    for (int k = 0; k < n; k++) {
        int lp, lr = r->resp_len[idx[k]];
        ppo_prompt_of(r, r->ex[idx[k]], &lp);
        int L = lp + lr;
        if (for_rm && lr > 0 && r->resp[idx[k] * R + lr - 1] == r->stop_id) L += (int)r->suffix.n;
        if (L > T) T = L;
    }
    b->B = n;
    b->T = T;
    b->n_examples = n;
    for (int k = 0; k < n; k++) {
        int lp, lr = r->resp_len[idx[k]];
        const int32_t *p = ppo_prompt_of(r, r->ex[idx[k]], &lp);
        const int32_t *q = r->resp + idx[k] * R;
        int32_t *tk = b->tokens + (size_t)k * T, *tg = b->targets + (size_t)k * T;
        int L = 0;
        for (int t = 0; t < lp; t++) tk[L++] = p[t];
        for (int t = 0; t < lr; t++) tk[L++] = q[t];
        if (for_rm && lr > 0 && q[lr - 1] == r->stop_id)
            for (size_t t = 0; t < r->suffix.n; t++) tk[L++] = r->suffix.data[t];
        for (int t = L; t < T; t++) tk[t] = 0;
        for (int t = 0; t < T; t++) tg[t] = (!for_rm && t >= lp - 1 && t < lp + lr - 1) ? tk[t + 1] : -1;
        b->ex_row[k] = k;
        b->last[k] = (int64_t)k * T + L - 1;
        b->len[k] = L;
    }
    b->ex_row[n] = n;
}

/* The entropy (nats) of softmax(logits[0..n)). */
static double entropy_of(const float *logits, int n) {
    double m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (logits[i] > m) m = logits[i];
    if (!isfinite(m)) return 0.0;
    double z = 0.0, wsum = 0.0;
    for (int i = 0; i < n; i++) {
        double d = (double)logits[i] - m, e = exp(d);
        z += e;
        wsum += e * d;
    }
    return log(z) - wsum / z;
}

/* alloy_generate's hook: adds the entropy of every sampling distribution (over the
 * tokenizer's ids) to entropy_sum. */
int ppo_rollout_entropy(void *user, alloy_generate_step *step) {
    ppo_run *r = user;
    int nv = alloy_tokenizer_vocab_size(r->tok);
    for (int j = 0; j < step->n; j++) r->entropy_sum += entropy_of(step->logits + (size_t)j * step->vocab_size, nv);
    return 0;
}

/* Step 2: a response for each of the batch's prompts, sampled with an engine over the policy,
 * gen_batch at a time (each with its own seed from the run's RNG); a response keeps the stop
 * token it ended with. */
alloy_status ppo_sample_rollouts(ppo_run *r) {
    const alloy_ppo_options *o = &r->opt;
    int R = o->max_new_tokens, G = o->gen_batch;
    alloy_engine *e = NULL;
    alloy_engine_options eo = {.weights = ALLOY_QTYPE_F32, .max_batch = G, .max_ctx = o->seq};
    alloy_status s = alloy_engine_create(&e, r->pv->model, &eo);
    r->entropy_sum = 0.0;
    for (int g0 = 0; g0 < o->batch && !s; g0 += G) {
        int n = o->batch - g0 < G ? o->batch - g0 : G;
        const int32_t *ptok[4096];
        int plen[4096];
        for (int k = 0; k < n; k++) {
            ptok[k] = ppo_prompt_of(r, r->ex[g0 + k], &plen[k]);
            r->seeds[k] = alloy_rng_u64(&r->rng);
        }
        s = alloy_generate(e, r->gens, ptok, plen, n, &r->gen, NULL, NULL);
        for (int k = 0; k < n; k++) {
            const alloy_generation *g = &r->gens[k];
            int32_t *q = r->resp + (size_t)(g0 + k) * R;
            memcpy(q, g->ids.data, sizeof(int32_t) * g->ids.n);
            r->resp_len[g0 + k] = (int)g->ids.n;
            if (g->finish == ALLOY_FINISH_EOS) q[r->resp_len[g0 + k]++] = r->stop_id;
            alloy_generation_free(&r->gens[k]);
        }
    }
    alloy_engine_destroy(e);
    if (s) alloy_error_prefix("sampling rollouts");
    return s;
}

/* Step 3: old log-probabilities and values, the reference's, the reward model's scores. */
alloy_status ppo_score_rollouts(ppo_run *r) {
    int B = r->opt.batch;
    r->off[0] = 0;
    for (int i = 0; i < B; i++) r->off[i + 1] = r->off[i] + r->resp_len[i];
    alloy_status s = ALLOY_STATUS_OK;
    for (int i0 = 0; i0 < B && !s; i0 += r->fwd) {
        int n = B - i0 < r->fwd ? B - i0 : r->fwd;
        for (int k = 0; k < n; k++) r->idx[k] = i0 + k;
        ppo_make_batch(r, r->idx, n, false);
        int64_t o = r->off[i0];
        s = alloy_ppo_logps_values(NULL, r->pv, &r->batch, r->logp + o, r->values + o);
        if (!s) s = alloy_ppo_logps_values(r->ref, NULL, &r->batch, r->ref_logp + o, NULL);
        if (!s) {
            ppo_make_batch(r, r->idx, n, true);
            s = alloy_reward_scores(r->rm, &r->batch, r->scores + i0);
            if (s) alloy_error_prefix("reward model");
        }
    }
    return s;
}

/* Gathers the per-token arrays of rollouts idx[0..n) into the minibatch buffers. */
void ppo_gather_tokens(ppo_run *r, const int64_t *idx, int n, float **out) {
    size_t cap = (size_t)r->opt.mini_batch * (size_t)r->opt.max_new_tokens;
    const float *src[4] = {r->logp, r->values, r->adv, r->ret};
    int64_t k = 0;
    for (int j = 0; j < n; j++) {
        int64_t a = r->off[idx[j]], len = r->off[idx[j] + 1] - a;
        for (int q = 0; q < 4; q++) memcpy(r->mb + q * cap + k, src[q] + a, sizeof(float) * (size_t)len);
        k += len;
    }
    for (int q = 0; q < 4; q++) out[q] = r->mb + q * cap;
}


