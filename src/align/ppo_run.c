/*
 * ppo_run.c — the PPO run of RLHF (`alloy ppo`, alloy_ppo_run): rollouts sampled with the KV-cache
 * engine, scored by a reward model, and PPO updates of the policy and its value head, as an
 * objective of the one run (alloy_run_execute) with an update of its own.
 *
 * It sits in src/align because it needs both generation (src/infer) and training (src/train);
 * the PPO maths — rewards, GAE, the losses, the value head — is src/train/ppo.c.
 *
 * One step, as TRL's PPOTrainer.step:
 *   1. the next `batch` prompts (a fresh order each pass over the file, from seed and pass);
 *   2. responses sampled by an engine over the policy's current weights (created for the step:
 *      the weights change between steps), each with its own sampler seeded from the run's RNG,
 *      until the end-of-turn token (<|im_end|>, or <|endoftext|> for the raw template) or
 *      max_new_tokens; the entropy of every sampling distribution is logged;
 *   3. per response token: the policy's log-probability and value, the frozen reference's
 *      log-probability (training forwards, mini_batch sequences at a time); the reward model's
 *      score of prompt + response (a ChatML response that ended with <|im_end|> gets the "\n"
 *      that closes a turn, so the score is read where the reward model was trained to give it);
 *   4. rewards -β·KL per token plus the score on the last, GAE, whitened advantages, returns;
 *   5. ppo_epochs passes over the rollouts in a fresh order, mini_batch at a time: the loss,
 *      its gradient, one AdamW step of backbone and value head under one clipping norm;
 *   6. the adaptive KL controller moves β towards the target KL.
 * Everything random comes from the run's RNG (saved with each checkpoint), the prompt order from
 * (seed, pass); so a resumed run repeats the uninterrupted one bitwise with one thread. Policy and
 * value head are the run's two parameter groups, clipped by one norm.
 */
#include "alloy/align.h"
#include "alloy/infer.h"
#include "alloy/io.h"
#include "alloy/options.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the run ---- */

/* Figures of one step, for metrics.jsonl and the progress line. */
typedef struct step_stats {
    double reward, reward_std, kl, non_score, entropy, length, beta;
    double loss, pg_loss, vf_loss, clipfrac, vf_clipfrac, approx_kl, policy_kl, ratio, value, returns, advantages;
    double grad_norm, lr;
    double tokens, gen_tokens;
    double rollout_s, score_s, optim_s; /* wall time of sampling, of scoring, of the PPO epochs */
} step_stats;

typedef struct ppo_run {
    alloy_ppo_options opt;        /* every default resolved (what is saved) */
    alloy_tokenizer *tok;
    char *tok_json;               /* tokenizer.json copied into every checkpoint; NULL: the byte tokenizer */
    size_t tok_len;
    alloy_align_data data;        /* the prompts */
    int64_t *perm;                /* (n_examples) this pass's order */
    int64_t epoch, cursor;        /* position: pass over the prompts and the next of perm */
    alloy_reward_model *pv;       /* the policy and its value head */
    alloy_model *ref;             /* the frozen reference */
    alloy_reward_model *rm;       /* the frozen reward model */
    alloy_kl_controller kl;
    alloy_rng rng;                /* sampler seeds, minibatch order; saved and restored */
    int32_t stop_id;              /* where a response ends (-1: only at max_new_tokens) */
    alloy_ids suffix;             /* appended for the reward model after a ChatML response's end */
    int fwd;                      /* sequences per training forward (mini_batch) */
    // one batch of rollouts (R = max_new_tokens)
    int64_t *ex;                  /* (batch) the prompt (example) of each rollout */
    int32_t *resp;                /* (batch, R) response tokens */
    int *resp_len;                /* (batch) */
    int64_t *off;                 /* (batch + 1) first response token of each in the per-token arrays */
    float *logp, *ref_logp, *values, *rewards, *kl_tok, *adv, *ret; /* (batch·R) per response token */
    float *scores;                /* (batch) the reward model's */
    double entropy_sum;           /* Σ over sampled tokens of the sampling distribution's entropy */
    int64_t *idx;                 /* (batch) scratch: rollouts of a minibatch, then their order */
    float *mb;                    /* (4, mini_batch·R) a minibatch's old logp, old values, adv, returns */
    alloy_align_batch batch;      /* a forward's sequences */
    alloy_generate_options gen;   /* how responses are sampled (alloy_generate) */
    alloy_generation *gens;       /* (gen_batch) a group's responses */
    uint64_t *seeds;              /* (gen_batch) their samplers' seeds, from rng */
    step_stats st;                /* the figures of the step just taken */
} ppo_run;

/* Draws pass e's order of the prompts from (seed, e). */
static void shuffle(ppo_run *r) {
    alloy_rng g;
    alloy_rng_seed(&g, r->opt.seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(r->epoch + 1)));
    int64_t n = r->data.n_examples;
    for (int64_t i = 0; i < n; i++) r->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)alloy_rng_below(&g, (uint64_t)(i + 1));
        int64_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
}

static const int32_t *prompt_of(const ppo_run *r, int64_t e, int *len) {
    int64_t a = r->data.seq_start[r->data.ex_start[e]];
    *len = (int)(r->data.seq_start[r->data.ex_start[e] + 1] - a);
    return r->data.tokens + a;
}

/* Fills r->batch with rollouts idx[0..n): prompt + response (+ the reward model's suffix after
 * a response that ended with the stop token, when for_rm), targets on the response tokens. */
static void make_batch(ppo_run *r, const int64_t *idx, int n, bool for_rm) {
    alloy_align_batch *b = &r->batch;
    int R = r->opt.max_new_tokens, T = 1;
    for (int k = 0; k < n; k++) {
        int lp, lr = r->resp_len[idx[k]];
        prompt_of(r, r->ex[idx[k]], &lp);
        int L = lp + lr;
        if (for_rm && lr > 0 && r->resp[idx[k] * R + lr - 1] == r->stop_id) L += (int)r->suffix.n;
        if (L > T) T = L;
    }
    b->B = n;
    b->T = T;
    b->n_examples = n;
    for (int k = 0; k < n; k++) {
        int lp, lr = r->resp_len[idx[k]];
        const int32_t *p = prompt_of(r, r->ex[idx[k]], &lp);
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
static int rollout_entropy(void *user, alloy_generate_step *step) {
    ppo_run *r = user;
    int nv = alloy_tokenizer_vocab_size(r->tok);
    for (int j = 0; j < step->n; j++) r->entropy_sum += entropy_of(step->logits + (size_t)j * step->vocab_size, nv);
    return 0;
}

/* Step 2: a response for each of the batch's prompts, sampled with an engine over the policy,
 * gen_batch at a time (each with its own seed from the run's RNG); a response keeps the stop
 * token it ended with. */
static alloy_status sample_rollouts(ppo_run *r) {
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
            ptok[k] = prompt_of(r, r->ex[g0 + k], &plen[k]);
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
static alloy_status score_rollouts(ppo_run *r) {
    int B = r->opt.batch;
    r->off[0] = 0;
    for (int i = 0; i < B; i++) r->off[i + 1] = r->off[i] + r->resp_len[i];
    alloy_status s = ALLOY_STATUS_OK;
    for (int i0 = 0; i0 < B && !s; i0 += r->fwd) {
        int n = B - i0 < r->fwd ? B - i0 : r->fwd;
        for (int k = 0; k < n; k++) r->idx[k] = i0 + k;
        make_batch(r, r->idx, n, false);
        int64_t o = r->off[i0];
        s = alloy_ppo_logps_values(NULL, r->pv, &r->batch, r->logp + o, r->values + o);
        if (!s) s = alloy_ppo_logps_values(r->ref, NULL, &r->batch, r->ref_logp + o, NULL);
        if (!s) {
            make_batch(r, r->idx, n, true);
            s = alloy_reward_scores(r->rm, &r->batch, r->scores + i0);
            if (s) alloy_error_prefix("reward model");
        }
    }
    return s;
}

/* Gathers the per-token arrays of rollouts idx[0..n) into the minibatch buffers. */
static void gather_tokens(ppo_run *r, const int64_t *idx, int n, float **out) {
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


/* One PPO step (1-6 of the file's top): the objective's update. */
static alloy_status ppo_update(void *ctx, alloy_run *run, float lr, float *grad_norm) {
    ppo_run *r = ctx;
    step_stats *st = &r->st;
    const alloy_ppo_options *o = &r->opt;
    int B = o->batch;
    memset(st, 0, sizeof *st);
    for (int i = 0; i < B; i++) { // 1. the prompts
        if (r->cursor >= r->data.n_examples) {
            r->epoch++;
            r->cursor = 0;
            shuffle(r);
        }
        r->ex[i] = r->perm[r->cursor++];
    }
    double t0 = alloy_time_now();
    alloy_status s = sample_rollouts(r); // 2.
    double t1 = alloy_time_now();
    if (!s) s = score_rollouts(r);       // 3.
    if (s) return s;
    for (int i = 0; i < B; i++) // a response the length limit cut off is scored where the reward model never looked
        if (r->resp_len[i] == 0 || r->resp[(size_t)i * o->max_new_tokens + r->resp_len[i] - 1] != r->stop_id)
            r->scores[i] -= (float)o->missing_eos_penalty;
    double t2 = alloy_time_now();
    st->rollout_s = t1 - t0;
    st->score_s = t2 - t1;
    int64_t N = r->off[B];
    double beta = r->kl.value; // 4.
    alloy_ppo_rewards(&o->ppo, beta, r->logp, r->ref_logp, r->scores, r->off, B, r->rewards, r->kl_tok);
    alloy_gae(r->rewards, r->values, r->off, B, o->ppo.gamma, o->ppo.lam, r->adv, r->ret);
    double adv_mean = 0, ret_mean = 0;
    for (int64_t t = 0; t < N; t++) adv_mean += r->adv[t], ret_mean += r->ret[t];
    if (o->ppo.whiten) alloy_whiten(r->adv, N, true);
    double kl_sum = 0, ns_sum = 0, sc = 0, sc2 = 0, prompt_tokens = 0;
    for (int i = 0; i < B; i++) {
        for (int64_t t = r->off[i]; t < r->off[i + 1]; t++) kl_sum += r->kl_tok[t], ns_sum += r->rewards[t];
        sc += r->scores[i];
        sc2 += (double)r->scores[i] * r->scores[i];
        int lp;
        prompt_of(r, r->ex[i], &lp);
        prompt_tokens += lp;
    }
    st->reward = sc / B;
    st->reward_std = B > 1 ? sqrt(fmax(0.0, (sc2 - sc * sc / B) / (B - 1))) : 0.0;
    st->kl = kl_sum / B;
    st->non_score = (ns_sum - sc) / B;
    st->entropy = N > 0 ? r->entropy_sum / (double)N : 0.0;
    st->length = (double)N / B;
    st->beta = beta;
    st->advantages = N > 0 ? adv_mean / (double)N : 0.0;
    st->returns = N > 0 ? ret_mean / (double)N : 0.0;
    st->gen_tokens = (double)N;
    st->tokens = (double)N + prompt_tokens;
    // 5. epochs of minibatches
    int n_mb = 0;
    for (int ep = 0; ep < o->ppo_epochs; ep++) {
        for (int i = 0; i < B; i++) r->idx[i] = i;
        for (int i = B - 1; i > 0; i--) {
            int j = (int)alloy_rng_below(&r->rng, (uint64_t)(i + 1));
            int64_t t = r->idx[i];
            r->idx[i] = r->idx[j];
            r->idx[j] = t;
        }
        for (int m0 = 0; m0 < B; m0 += o->mini_batch) {
            int n = B - m0 < o->mini_batch ? B - m0 : o->mini_batch;
            const int64_t *mi = r->idx + m0; // rows and per-token arrays in this order alike
            float *arr[4];
            gather_tokens(r, mi, n, arr);
            make_batch(r, mi, n, false);
            alloy_reward_model_zero_grad(r->pv);
            alloy_ppo_info info;
            s = alloy_ppo_step(r->pv, &r->batch, &o->ppo, arr[0], arr[1], arr[2], arr[3], 1.0f, &info);
            float gnorm = 0.0f;
            if (!s) s = alloy_run_optimizer_step(run, lr, &gnorm);
            if (s) return s;
            st->loss += info.loss, st->pg_loss += info.pg_loss, st->vf_loss += info.vf_loss;
            st->clipfrac += info.clipfrac, st->vf_clipfrac += info.vf_clipfrac, st->approx_kl += info.approx_kl;
            st->policy_kl += info.policy_kl, st->ratio += info.ratio, st->value += info.value;
            st->grad_norm += gnorm;
            n_mb++;
        }
    }
    double k = n_mb > 0 ? 1.0 / n_mb : 0.0;
    st->loss *= k, st->pg_loss *= k, st->vf_loss *= k, st->clipfrac *= k, st->vf_clipfrac *= k, st->approx_kl *= k;
    st->policy_kl *= k, st->ratio *= k, st->value *= k, st->grad_norm *= k;
    st->lr = lr;
    st->optim_s = alloy_time_now() - t2;
    *grad_norm = (float)st->grad_norm;
    alloy_kl_controller_update(&r->kl, st->kl, B); // 6.
    return ALLOY_STATUS_OK;
}

/* ---- the objective's other hooks ---- */

static void ppo_report(void *ctx, alloy_run_phase phase, alloy_run_report *out) {
    const step_stats *st = &((ppo_run *)ctx)->st;
    (void)phase; // no held-out evaluation
    out->loss = st->loss;
    out->tokens = st->tokens;
    snprintf(out->fields, sizeof out->fields,
             ",\"reward\":%.6f,\"reward_std\":%.6f,\"kl\":%.6f,\"non_score_reward\":%.6f,\"entropy\":%.6f,"
             "\"response_length\":%.3f,\"beta\":%.6g,\"loss\":%.6f,\"policy_loss\":%.6f,\"value_loss\":%.6f,"
             "\"clipfrac\":%.6f,\"vf_clipfrac\":%.6f,\"approx_kl\":%.6g,\"policy_kl\":%.6g,\"ratio\":%.6f,"
             "\"value\":%.6f,\"returns\":%.6f,\"advantages\":%.6f",
             st->reward, st->reward_std, st->kl, st->non_score, st->entropy, st->length, st->beta, st->loss, st->pg_loss,
             st->vf_loss, st->clipfrac, st->vf_clipfrac, st->approx_kl, st->policy_kl, st->ratio, st->value, st->returns,
             st->advantages);
    double dt = st->rollout_s + st->score_s + st->optim_s;
    snprintf(out->tail, sizeof out->tail,
             ",\"gen_tokens_per_s\":%.1f,\"rollout_s\":%.4f,\"score_s\":%.4f,\"optim_s\":%.4f",
             dt > 0 ? st->gen_tokens / dt : 0.0, st->rollout_s, st->score_s, st->optim_s);
    snprintf(out->brief, sizeof out->brief,
             "reward %.4f | kl %.4f | beta %.4f | entropy %.3f | len %.1f | clip %.3f | vloss %.4f", st->reward, st->kl,
             st->beta, st->entropy, st->length, st->clipfrac, st->vf_loss);
}

static alloy_status ppo_state_save(void *ctx, cJSON *j) {
    ppo_run *r = ctx;
    char buf[64];
    cJSON_AddNumberToObject(j, "epoch", (double)r->epoch);
    cJSON_AddNumberToObject(j, "cursor", (double)r->cursor);
    snprintf(buf, sizeof buf, "%a", r->kl.value); // exact
    cJSON_AddStringToObject(j, "kl_coef", buf);
    cJSON_AddNumberToObject(j, "kl_coef_value", r->kl.value);
    snprintf(buf, sizeof buf, "%016" PRIx64, r->data.fingerprint);
    cJSON_AddStringToObject(j, "data_fingerprint", buf);
    cJSON *o = alloy_options_save(alloy_ppo_schema(), &r->opt);
    if (!o) return ALLOY_STATUS_NOMEM;
    cJSON_AddItemToObject(j, "options", o);
    return ALLOY_STATUS_OK;
}

static alloy_status ppo_state_load(void *ctx, const cJSON *j, const char *what) {
    ppo_run *r = ctx;
    int64_t epoch = 0, cursor = 0;
    const char *fp = NULL, *klc = NULL;
    alloy_status s = alloy_json_get_int(j, "epoch", what, &epoch);
    if (!s) s = alloy_json_get_int(j, "cursor", what, &cursor);
    if (!s) s = alloy_json_get_string(j, "kl_coef", what, &klc);
    if (!s) s = alloy_json_get_string(j, "data_fingerprint", what, &fp);
    if (!s && (epoch < 0 || cursor < 0 || cursor > r->data.n_examples))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: step, epoch or cursor out of range", what);
    if (!s) {
        char *end;
        r->kl.value = strtod(klc, &end);
        if (*end || !*klc || !isfinite(r->kl.value) || r->kl.value < 0)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"kl_coef\" is not a KL coefficient", what);
    }
    if (!s) {
        char now[24];
        snprintf(now, sizeof now, "%016" PRIx64, r->data.fingerprint);
        if (strcmp(now, fp))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the prompts changed since this run started (fingerprint %s, now %s)",
                           r->opt.prompts_path, fp, now);
    }
    if (!s) {
        r->epoch = epoch;
        r->cursor = cursor;
        shuffle(r); // the order of the pass the run is in
    }
    return s;
}

/* The model's files of a PPO checkpoint: the policy (a language model any verb loads), the chat
 * template, the value head, the tokenizer (the value head's optimiser state is the run's). */
static alloy_status ppo_save(void *ctx, const char *dir) {
    ppo_run *r = ctx;
    alloy_status s = alloy_model_save(r->pv->model, dir);
    if (!s) s = alloy_chat_save_template(dir, r->opt.tmpl);
    char *p = s ? NULL : alloy_path_join(dir, "value_head.safetensors");
    if (!s) s = p ? alloy_ppo_value_head_save(r->pv, p) : ALLOY_STATUS_NOMEM;
    alloy_free(p);
    if (!s && r->tok_json) {
        p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, r->tok_json, r->tok_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

static alloy_status ppo_load(void *ctx, const char *dir) {
    ppo_run *r = ctx;
    char *p = alloy_path_join(dir, "value_head.safetensors");
    alloy_status s = p ? alloy_ppo_value_head_load(r->pv, p) : ALLOY_STATUS_NOMEM;
    alloy_free(p);
    return s;
}

static void ppo_describe(void *ctx, char *buf, size_t size) {
    ppo_run *r = ctx;
    const alloy_ppo_options *o = &r->opt;
    snprintf(buf, size,
             ",\"objective\":\"ppo\",\"template\":\"%s\",\"params\":%zu,\"prompts\":%lld,\"truncated\":%lld,"
             "\"steps\":%lld,\"batch\":%d,\"mini_batch\":%d,\"ppo_epochs\":%d,\"max_new_tokens\":%d,\"kl_coef\":%.6g",
             alloy_chat_template_name(o->tmpl), r->pv->model->num_params + 1 + (size_t)r->pv->model->config.d_model,
             (long long)r->data.n_examples, (long long)r->data.truncated, (long long)o->steps, o->batch, o->mini_batch,
             o->ppo_epochs, o->max_new_tokens, r->kl.value);
}

static void ppo_intro(void *ctx, alloy_progress *prog) {
    ppo_run *r = ctx;
    const alloy_ppo_options *o = &r->opt;
    const alloy_config *c = &r->pv->model->config;
    char np[32];
    alloy_format_count((double)r->pv->model->num_params, np, sizeof np);
    alloy_progress_print(prog, "ppo: %s policy, %s parameters (L=%d C=%d V=%d); %lld prompts; %d rollouts a step, "
                               "%d epochs of minibatches of %d; template %s",
                         alloy_family_name(c->family), np, c->n_layer, c->d_model, c->vocab_size, (long long)r->data.n_examples,
                         o->batch, o->ppo_epochs, o->mini_batch, alloy_chat_template_name(o->tmpl));
}

/* ---- set-up ---- */

/* MISMATCH unless the reward model's folder reads text as the policy does: the same tokens under
 * the same ids, and the same chat template when it names one. */
static alloy_status check_reward_model(ppo_run *r, const char *rdir, const alloy_config *rcfg) {
    alloy_tokenizer *rt = NULL;
    alloy_status s = alloy_align_load_tokenizer(rdir, rcfg, &rt);
    if (s) return s;
    int a = alloy_tokenizer_vocab_size(r->tok), b = alloy_tokenizer_vocab_size(rt);
    if (a != b)
        s = alloy_fail(ALLOY_STATUS_MISMATCH,
                       "reward model %s: its tokenizer has %d tokens, the policy's %d: train the reward model from the "
                       "policy's SFT model (alloy reward --model SFT)", rdir, b, a);
    for (int32_t id = 0; id < a && !s; id++) {
        size_t la, lb;
        const char *ta = alloy_tokenizer_token(r->tok, id, &la), *tb = alloy_tokenizer_token(rt, id, &lb);
        if (!ta || !tb || la != lb || memcmp(ta, tb, la))
            s = alloy_fail(ALLOY_STATUS_MISMATCH,
                           "reward model %s: its tokenizer differs from the policy's at token %d: train the reward model "
                           "from the policy's SFT model (alloy reward --model SFT)", rdir, (int)id);
    }
    if (!s && rcfg->vocab_size < a)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "reward model %s: vocabulary of %d rows for a tokenizer of %d tokens", rdir,
                       rcfg->vocab_size, a);
    bool found = false;
    alloy_chat_template t = r->opt.tmpl;
    if (!s) s = alloy_chat_template_of(rdir, &t, &found);
    if (!s && found && t != r->opt.tmpl)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "reward model %s was trained with the %s template, the policy samples with %s", rdir,
                       alloy_chat_template_name(t), alloy_chat_template_name(r->opt.tmpl));
    alloy_tokenizer_destroy(rt);
    return s;
}

static alloy_status alloc_buffers(ppo_run *r) {
    const alloy_ppo_options *o = &r->opt;
    size_t B = (size_t)o->batch, R = (size_t)o->max_new_tokens, G = (size_t)o->gen_batch;
    size_t T = (size_t)o->seq + r->suffix.n, F = (size_t)r->fwd;
    r->perm = alloy_malloc(sizeof(int64_t) * (size_t)r->data.n_examples);
    r->ex = alloy_malloc(sizeof(int64_t) * B);
    r->resp = alloy_malloc(sizeof(int32_t) * B * R);
    r->resp_len = alloy_calloc(B, sizeof(int));
    r->off = alloy_calloc(B + 1, sizeof(int64_t));
    float **f[] = {&r->logp, &r->ref_logp, &r->values, &r->rewards, &r->kl_tok, &r->adv, &r->ret};
    bool ok = r->perm && r->ex && r->resp && r->resp_len && r->off;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ok = ok && (*f[i] = alloy_calloc(B * R, sizeof(float)));
    r->scores = alloy_calloc(B, sizeof(float));
    r->idx = alloy_malloc(sizeof(int64_t) * B);
    r->mb = alloy_malloc(sizeof(float) * 4 * (size_t)o->mini_batch * R);
    r->gens = alloy_calloc(G, sizeof *r->gens);
    r->seeds = alloy_malloc(sizeof(uint64_t) * G);
    alloy_align_batch *b = &r->batch;
    b->ex_row = alloy_malloc(sizeof(int) * (F + 1));
    b->tokens = alloy_malloc(sizeof(int32_t) * F * T);
    b->targets = alloy_malloc(sizeof(int32_t) * F * T);
    b->last = alloy_malloc(sizeof(int64_t) * F);
    b->len = alloy_malloc(sizeof(int32_t) * F);
    b->rows_cap = (int)F, b->cols_cap = (int)T, b->ex_cap = (int)F + 1;
    ok = ok && r->scores && r->idx && r->mb && r->gens && r->seeds && b->ex_row &&
         b->tokens && b->targets && b->last && b->len;
    if (!ok) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a batch of %zu rollouts", B);
    alloy_generate_options *g = &r->gen;
    alloy_generate_options_default(g);
    g->sampling.temperature = o->temperature;
    g->sampling.top_k = o->top_k;
    g->sampling.top_p = o->top_p;
    g->sampling.min_p = 0.0f;
    g->sampling.repeat_last_n = 0;
    g->sampling.n_vocab = alloy_tokenizer_vocab_size(r->tok);
    g->seeds = r->seeds;
    g->max_tokens = o->max_new_tokens;
    g->eos = &r->stop_id;
    g->n_eos = r->stop_id >= 0 ? 1 : 0;
    g->hook = rollout_entropy;
    g->hook_user = r;
    return ALLOY_STATUS_OK;
}

static void free_run(ppo_run *r) {
    alloy_tokenizer_destroy(r->tok);
    alloy_free(r->tok_json);
    alloy_align_data_free(&r->data);
    alloy_free(r->perm);
    alloy_reward_model_destroy(r->pv);
    alloy_model_destroy(r->ref);
    alloy_reward_model_destroy(r->rm);
    alloy_ids_free(&r->suffix);
    alloy_free(r->ex);
    alloy_free(r->resp);
    alloy_free(r->resp_len);
    alloy_free(r->off);
    float *f[] = {r->logp, r->ref_logp, r->values, r->rewards, r->kl_tok, r->adv, r->ret, r->scores, r->mb};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) alloy_free(f[i]);
    alloy_free(r->idx);
    alloy_free(r->gens);
    alloy_free(r->seeds);
    alloy_align_batch_free(&r->batch);
}

/* The config.json of a checkpoint folder. */
static alloy_status load_config(const char *dir, alloy_config *cfg) {
    char *cp = alloy_path_join(dir, "config.json");
    alloy_status s = cp ? alloy_config_load(cfg, cp) : ALLOY_STATUS_NOMEM;
    alloy_free(cp);
    return s;
}

alloy_status alloy_ppo_run(const alloy_ppo_options *given, const char *resume) {
    ppo_run r;
    memset(&r, 0, sizeof r);
    r.opt = *given;
    alloy_ppo_options *opt = &r.opt, *o = opt;
    if (opt->mini_batch == 0) opt->mini_batch = opt->batch < 128 ? opt->batch : 128; // the derived defaults
    if (opt->gen_batch == 0) opt->gen_batch = opt->batch < 16 ? opt->batch : 16;
    alloy_status s = ppo_check_options(opt);
    if (s) return s;
    char *init = NULL, *rdir = NULL, *p = NULL;
    alloy_config cfg, rcfg;
    // the SFT model: its config, template and tokenizer
    if ((s = alloy_checkpoint_resolve(o->model_dir, &init))) goto done;
    if (!resume) {
        if (strlen(init) >= sizeof opt->model_dir) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", init);
            goto done;
        }
        strcpy(opt->model_dir, init); // the reference of every later resume
    }
    if ((s = load_config(init, &cfg))) goto done;
    if (!opt->tmpl_set) {
        bool found = false;
        if ((s = alloy_chat_template_of(init, &opt->tmpl, &found))) goto done;
        if (!found) opt->tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
        opt->tmpl_set = true;
    }
    if ((s = alloy_align_load_tokenizer(init, &cfg, &r.tok))) goto done;
    if (!(p = alloy_path_join(init, "tokenizer.json"))) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    if (alloy_path_exists(p) && (s = alloy_file_read_all(p, &r.tok_json, &r.tok_len))) goto done;
    if (opt->tmpl == ALLOY_CHAT_TEMPLATE_CHATML) {
        r.stop_id = alloy_chat_end_id(r.tok);
        if (r.stop_id < 0 || alloy_tokenizer_special_id(r.tok, ALLOY_CHAT_IM_START) < 0) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has no %s and %s tokens: PPO starts from a chat model "
                           "(alloy sft), or use --template raw", init, ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END);
            goto done;
        }
        if ((s = alloy_tokenizer_encode(r.tok, "\n", 1, 0, &r.suffix))) goto done;
    } else {
        r.stop_id = alloy_tokenizer_special_id(r.tok, "<|endoftext|>");
    }
    // the reward model: same tokens, same template, room for the longest sequence
    if ((s = alloy_checkpoint_resolve(o->reward_dir, &rdir)) || (s = load_config(rdir, &rcfg))) {
        alloy_error_prefix("reward model");
        goto done;
    }
    if ((s = check_reward_model(&r, rdir, &rcfg))) goto done;
    if (opt->seq == 0) { // the longest that policy and reward model (with the suffix) both take
        opt->seq = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
        if (opt->seq > rcfg.max_seq_len - (int)r.suffix.n) opt->seq = rcfg.max_seq_len - (int)r.suffix.n;
    }
    if (opt->seq > cfg.max_seq_len) {
        s = alloy_fail(ALLOY_STATUS_USAGE, "--seq %d exceeds the model's maximum sequence length %d", opt->seq, cfg.max_seq_len);
        goto done;
    }
    if (opt->seq - opt->max_new_tokens < 2) {
        s = alloy_fail(ALLOY_STATUS_USAGE, "--max-new-tokens %d leaves no room for a prompt in --seq %d", opt->max_new_tokens,
                       opt->seq);
        goto done;
    }
    // the prompts
    if ((s = alloy_align_data_read(&r.data, o->prompts_path, r.tok, ALLOY_ALIGN_PROMPT, opt->tmpl,
                                   opt->seq - opt->max_new_tokens)))
        goto done;
    if (opt->steps == 0) opt->steps = (r.data.n_examples + opt->batch - 1) / opt->batch;
    if (opt->seq + (int)r.suffix.n > rcfg.max_seq_len) {
        s = alloy_fail(ALLOY_STATUS_USAGE, "--seq %d (+%zu) exceeds the reward model's maximum sequence length %d", opt->seq,
                       r.suffix.n, rcfg.max_seq_len);
        goto done;
    }
    r.fwd = opt->mini_batch;
    if ((s = alloy_reward_model_load(&r.rm, rdir, r.fwd, opt->seq + (int)r.suffix.n, true, 0))) goto done;
    // the reference (always the SFT weights) and the policy (the SFT weights, or the checkpoint's)
    if ((s = alloy_model_load(&r.ref, opt->model_dir, r.fwd, opt->seq))) {
        alloy_error_prefix("reference model %s", opt->model_dir);
        goto done;
    }
    {
        alloy_model *pm = NULL;
        if ((s = alloy_model_load(&pm, resume ? resume : init, r.fwd, opt->seq))) goto done;
        if ((s = alloy_ppo_value_model_create(&r.pv, pm))) goto done;
    }
    r.kl = (alloy_kl_controller){.value = opt->init_kl_coef, .target = opt->kl_target, .horizon = opt->kl_horizon,
                                 .adaptive = opt->adaptive_kl};
    if ((s = alloc_buffers(&r))) goto done;
    shuffle(&r); // pass 0's order (a resume restores its pass's)
    {
        alloy_objective obj = {
            .label = "ppo ", .ctx = &r, .n_groups = 2, .rng = &r.rng, .update = ppo_update, .report = ppo_report,
            .save = ppo_save, .load = ppo_load, .state_save = ppo_state_save, .state_load = ppo_state_load,
            .describe = ppo_describe, .intro = ppo_intro,
            .groups = {{r.pv->model, "optimizer.safetensors"}, {&r.pv->head_view, "value_head_optimizer.safetensors"}},
        };
        alloy_run_options ro = alloy_run_defaults();
        snprintf(ro.out_dir, sizeof ro.out_dir, "%s", opt->out_dir);
        ro.steps = opt->steps;
        ro.schedule = (alloy_schedule){.max_lr = opt->lr, .min_lr = opt->lr}; // a constant rate, as TRL's PPO
        ro.adamw = opt->adamw;
        ro.seed = opt->seed;
        ro.eval_every = 0;
        ro.ckpt_every = opt->ckpt_every;
        ro.keep_ckpts = opt->keep_ckpts;
        ro.log_every = opt->log_every;
        ro.quiet = opt->quiet;
        ro.resume_mode = opt->resume_mode;
        ro.stop = opt->stop;
        s = alloy_run_execute(&ro, &obj, resume, NULL);
    }
done:
    free_run(&r);
    alloy_free(init);
    alloy_free(rdir);
    alloy_free(p);
    return s;
}
