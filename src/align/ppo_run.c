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
            ppo_shuffle(r);
        }
        r->ex[i] = r->perm[r->cursor++];
    }
    double t0 = alloy_time_now();
    alloy_status s = ppo_sample_rollouts(r); // 2.
    double t1 = alloy_time_now();
    if (!s) s = ppo_score_rollouts(r);       // 3.
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
        ppo_prompt_of(r, r->ex[i], &lp);
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
            ppo_gather_tokens(r, mi, n, arr);
            ppo_make_batch(r, mi, n, false);
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

static void ppo_describe(void *ctx, char *buf, size_t size) {
    ppo_run *r = ctx;
    const alloy_ppo_options *o = &r->opt;
    snprintf(buf, size,
             ",\"objective\":\"ppo\",\"template\":\"%s\",\"layout\":\"%s\",\"params\":%zu,\"prompts\":%lld,\"truncated\":%lld,"
             "\"steps\":%lld,\"batch\":%d,\"mini_batch\":%d,\"ppo_epochs\":%d,\"max_new_tokens\":%d,\"kl_coef\":%.6g",
             alloy_chat_template_name(o->tmpl), alloy_data_layout_name(r->data.layout), r->pv->model->num_params + 1 + (size_t)r->pv->model->config.d_model,
             (long long)r->data.n_examples, (long long)r->data.truncated, (long long)o->steps, o->batch, o->mini_batch,
             o->ppo_epochs, o->max_new_tokens, r->kl.value);
}

static void ppo_intro(void *ctx, alloy_progress *prog) {
    ppo_run *r = ctx;
    const alloy_ppo_options *o = &r->opt;
    const alloy_config *c = &r->pv->model->config;
    char np[32];
    alloy_format_count((double)r->pv->model->num_params, np, sizeof np);
    alloy_progress_print(prog, "ppo: %s policy, %s parameters (L=%d C=%d V=%d); %lld prompts (%s layout); %d rollouts a step, "
                               "%d epochs of minibatches of %d; template %s",
                         alloy_family_name(c->family), np, c->n_layer, c->d_model, c->vocab_size, (long long)r->data.n_examples,
                         alloy_data_layout_name(r->data.layout), o->batch, o->ppo_epochs, o->mini_batch,
                         alloy_chat_template_name(o->tmpl));
}

alloy_status alloy_ppo_run(const alloy_ppo_options *given, const char *resume) {
    ppo_run r;
    memset(&r, 0, sizeof r);
    r.opt = *given;
    alloy_ppo_options *opt = &r.opt;
    if (opt->mini_batch == 0) opt->mini_batch = opt->batch < 128 ? opt->batch : 128; // the derived defaults
    if (opt->gen_batch == 0) opt->gen_batch = opt->batch < 16 ? opt->batch : 16;
    alloy_status s = ppo_check_options(opt);
    if (!s) s = ppo_setup(&r, resume);
    if (!s) {
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
    ppo_free(&r);
    return s;
}

