/*
 * internal.h — what the files of src/align/ share and nothing outside uses.
 */
#ifndef ALLOY_ALIGN_LAYER_INTERNAL_H
#define ALLOY_ALIGN_LAYER_INTERNAL_H

#include "alloy/align.h"
#include "alloy/infer.h"

/* ppo_options.c, for ppo_run.c: USAGE naming the option that is out of range. */
alloy_status ppo_check_options(const alloy_ppo_options *o);

/* ---- ppo_run.c, ppo_rollouts.c, ppo_setup.c: one PPO run ---- */

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

/* ppo_setup.c: everything before the first step (ppo_setup); pass r->epoch's order of the prompts
 * from (seed, pass) (ppo_shuffle); what ppo_setup made, on failure too (ppo_free). */
alloy_status ppo_setup(ppo_run *r, const char *resume);
void ppo_shuffle(ppo_run *r);
void ppo_free(ppo_run *r);

/* ppo_state.c: the objective's checkpoint hooks (alloy_objective's state_save, state_load, save,
 * load), ctx a ppo_run. */
alloy_status ppo_state_save(void *ctx, struct cJSON *j);
alloy_status ppo_state_load(void *ctx, const struct cJSON *j, const char *what);
alloy_status ppo_save(void *ctx, const char *dir);
alloy_status ppo_load(void *ctx, const char *dir);

/* ppo_rollouts.c: prompt e's tokens; the sequences of rollouts idx[0..n) (for the reward model:
 * with its suffix) into r->batch; a response for each of the step's prompts; their old
 * log-probabilities, values, the reference's and the scores; the per-token arrays of rollouts
 * idx[0..n) gathered into the minibatch buffers out[4]. */
const int32_t *ppo_prompt_of(const ppo_run *r, int64_t e, int *len);
void ppo_make_batch(ppo_run *r, const int64_t *idx, int n, bool for_rm);
alloy_status ppo_sample_rollouts(ppo_run *r);
alloy_status ppo_score_rollouts(ppo_run *r);
void ppo_gather_tokens(ppo_run *r, const int64_t *idx, int n, float **out);
/* The generation hook of the rollouts: adds each sampling distribution's entropy (user: r). */
int ppo_rollout_entropy(void *user, alloy_generate_step *step);

#endif
