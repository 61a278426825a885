/*
 * alloy/align.h — alignment: supervised fine-tuning (SFT), reward models, direct preference
 * optimisation (DPO) and RLHF with PPO.
 *
 * Every objective turns the model's outputs into the gradient of its loss; the model's one
 * backward does the rest (ARCHITECTURE.md, "One backward for every training mode"):
 *   SFT     the LM loss on the response (assistant) tokens only, mean over those tokens;
 *   reward  a scalar head score.weight (1, C) + score.bias (1), as Hugging Face's
 *           *ForSequenceClassification, on the final hidden state of the last token of
 *           prompt + response; for a ranking best ... worst of K responses, the Bradley-Terry loss
 *           -log σ(r_better - r_worse) of each of its K(K-1)/2 pairs, averaged over the pairs of
 *           the prompt and then over prompts (InstructGPT: all pairs of a prompt in one batch);
 *   DPO     log-probabilities of the chosen and rejected responses, summed over their tokens,
 *           under the policy and a frozen reference; Δ = (logπ_c - logπref_c) - (logπ_r - logπref_r);
 *           sigmoid: -(1-ε)·log σ(βΔ) - ε·log σ(-βΔ) (ε = label smoothing: conservative DPO);
 *           ipo: (Δ' - 1/(2β))² with Δ' the same difference of per-token averages (as TRL).
 *   PPO     the clipped surrogate on per-token log-probabilities of sampled responses and the
 *           clipped value loss of a value head, advantages from a reward model's score and a
 *           per-token KL penalty to a frozen reference by GAE (section "RLHF with PPO" below).
 *
 * Examples come from JSONL files read through a chat template (alloy/chat.h, which this header
 * includes: the template, the data kinds and their fields, alloy_align_data).
 *
 *     alloy_align_options o = alloy_align_defaults(ALLOY_ALIGN_SFT);
 *     snprintf(o.model_dir, sizeof o.model_dir, "runs/base");
 *     snprintf(o.data_path, sizeof o.data_path, "chat.jsonl");
 *     snprintf(o.out_dir, sizeof o.out_dir, "runs/sft");
 *     if (alloy_align_run(&o, NULL, NULL)) fprintf(stderr, "%s\n", alloy_last_error());
 */
#ifndef ALLOY_ALIGN_H
#define ALLOY_ALIGN_H

#include "alloy/base.h"
#include "alloy/chat.h"
#include "alloy/model.h"
#include "alloy/tokenizer.h"
#include "alloy/train.h"

ALLOY_BEGIN_DECLS

/* ---- batches (src/train/sft.c) ---- */

/* Examples as model inputs: every sequence is one row, padded (token 0, never a target) to the
 * batch's longest sequence T. */
typedef struct alloy_align_batch {
    int B, T;            /* rows (sequences) and columns */
    int n_examples;      /* examples in the batch */
    int *ex_row;         /* (n_examples + 1) first row of each example: its sequences in order */
    int32_t *tokens;     /* (B·T) the sequences */
    int32_t *targets;    /* (B·T) targets[b·T + t] = the next token where it is masked in, else -1 */
    int64_t *last;       /* (B) row b·T + len - 1 of each sequence's last token (a reward is read there) */
    int32_t *len;        /* (B) tokens of each sequence */
    int rows_cap, cols_cap, ex_cap; /* allocated sizes */
} alloy_align_batch;

/* Fills b with the examples of d listed in idx (n of them), growing b's buffers as needed
 * (zero-initialise b before the first call; alloy_align_batch_free releases it). */
alloy_status alloy_align_batch_make(alloy_align_batch *b, const alloy_align_data *d, const int64_t *idx, int n);
void alloy_align_batch_free(alloy_align_batch *b);

/* ---- objectives ---- */

/* Running sums of an objective over micro-batches and evaluations (zero-initialise). */
typedef struct alloy_align_stats {
    double loss_sum;     /* Σ loss·weight */
    double weight;       /* SFT: trained tokens; reward, DPO: examples */
    double tokens;       /* tokens of the sequences (padding excluded) */
    double pairs;        /* reward, DPO: pairs compared */
    double correct;      /* pairs whose better response scored strictly higher */
    double margin_sum;   /* Σ over pairs of (score of the better - of the worse); DPO: of the rewards */
    double chosen_sum;   /* DPO: Σ β·(logπ - logπref) of chosen responses */
    double rejected_sum; /* DPO: the same of rejected ones */
    double logp_chosen_sum, logp_rejected_sum; /* DPO: Σ logπ (summed over tokens) */
} alloy_align_stats;

/* SFT: forward, the LM loss on the batch's targets (the masked-in tokens; mean over them) and,
 * if grad_scale != 0, the backward of grad_scale·loss, ACCUMULATING into m's gradients (zero
 * them first). Adds to *st (may be NULL). */
alloy_status alloy_sft_step(alloy_model *m, const alloy_align_batch *b, float grad_scale, alloy_align_stats *st);

/* The ranking loss of n_examples examples from their rewards r (ex_row[n_examples] of them;
 * example e's rows ex_row[e] .. ex_row[e+1]-1 hold its responses best first): the mean over
 * examples of the mean over the example's pairs i < j of -log σ(r_i - r_j). dr (may be NULL)
 * gets grad_scale·d loss/d r. Adds to *st (may be NULL). Returns the loss. */
double alloy_reward_loss(const float *r, const int *ex_row, int n_examples, float grad_scale, float *dr,
                         alloy_align_stats *st);

/* A reward model: a backbone and the scalar head on its final hidden states. */
typedef struct alloy_reward_model {
    alloy_model *model;              /* the backbone (its LM head is kept, unused) */
    float *head;                     /* (head_floats) score.weight (C) at 0, score.bias at head_tensors[1].offset */
    float *head_grad;                /* (head_floats) their gradients */
    size_t head_floats;
    alloy_tensor_info head_tensors[2]; /* "score.weight" (1, C), "score.bias" (1) */
    alloy_model head_view;           /* the head as a table of two tensors over one arena (params
                                        head, grads head_grad), for alloy_optimizer's create,
                                        save and load */
} alloy_reward_model;

/* Wraps a backbone (the reward model takes it over) with a new head: score.weight N(0, 0.02²)
 * from seed (as transformers initialises it), score.bias 0. */
alloy_status alloy_reward_model_create(alloy_reward_model **out, alloy_model *backbone, uint64_t seed);
/* Loads a reward model from a checkpoint folder for max_B x max_T tokens (max_T 0: the
 * config's). A folder whose model.safetensors has no score.weight is a language model: with
 * need_head it fails with MISMATCH ("not a reward model"), otherwise it gets a new head from
 * seed. */
alloy_status alloy_reward_model_load(alloy_reward_model **out, const char *dir, int max_B, int max_T, bool need_head,
                                     uint64_t seed);
/* Writes dir/model.safetensors (the backbone's tensors, score.weight and score.bias) and
 * dir/config.json (architectures GPT2ForSequenceClassification or
 * LlamaForSequenceClassification, num_labels 1), atomically. */
alloy_status alloy_reward_model_save(const alloy_reward_model *rm, const char *dir);
void alloy_reward_model_destroy(alloy_reward_model *rm);
void alloy_reward_model_zero_grad(alloy_reward_model *rm);

/* The reward of every row of b (r: B floats): forward, then the head at each last token. */
alloy_status alloy_reward_scores(alloy_reward_model *rm, const alloy_align_batch *b, float *r);
/* Rewards, the ranking loss and, if grad_scale != 0, its backward through the head and the
 * backbone (gradients ACCUMULATE). Adds to *st (may be NULL). */
alloy_status alloy_reward_step(alloy_reward_model *rm, const alloy_align_batch *b, float grad_scale, alloy_align_stats *st);

/* One AdamW step over the backbone and the head together: one global gradient norm (clipped to
 * adamw.grad_clip as torch's clip_grad_norm_ over all parameters), then each optimiser's
 * update (their step counts advance together). *grad_norm (may be NULL) gets the norm before
 * clipping; RANGE if it is not finite (nothing is changed then). */
alloy_status alloy_reward_optimizer_step(alloy_reward_model *rm, alloy_optimizer *backbone_opt, alloy_optimizer *head_opt,
                                         float lr, float *grad_norm);

typedef enum alloy_dpo_loss_type {
    ALLOY_DPO_SIGMOID = 0, /* DPO, with label smoothing: conservative DPO */
    ALLOY_DPO_IPO = 1,     /* IPO on per-token average log-probabilities */
} alloy_dpo_loss_type;

typedef struct alloy_dpo_config {
    double beta;            /* β > 0: the strength of the tie to the reference (IPO: τ) */
    alloy_dpo_loss_type loss;
    double label_smoothing; /* ε in [0, 0.5): the chance a preference label is flipped (sigmoid) */
} alloy_dpo_config;

/* "sigmoid" or "ipo"; and back (USAGE for an unknown name). */
const char *alloy_dpo_loss_name(alloy_dpo_loss_type t);
alloy_status alloy_dpo_loss_parse(const char *name, alloy_dpo_loss_type *out);

/* The DPO loss of n pairs from summed log-probabilities of the chosen (c) and rejected (r)
 * responses under the policy and the reference, and their token counts (IPO averages over
 * them; a count below 1 counts as 1): the mean over pairs. d_c, d_r (may be NULL) get
 * grad_scale·d loss/d logπ_c and /d logπ_r. Adds to *st (may be NULL). Returns the loss. */
double alloy_dpo_loss(const alloy_dpo_config *c, const double *pol_c, const double *pol_r, const double *ref_c,
                      const double *ref_r, const int *n_c, const int *n_r, int n, float grad_scale, double *d_c,
                      double *d_r, alloy_align_stats *st);

/* Per row of b: the log-probability of its masked-in tokens, summed (logp, B doubles), and their
 * count (count, B ints; may be NULL). Runs the forward. */
alloy_status alloy_dpo_logps(alloy_model *m, const alloy_align_batch *b, double *logp, int *count);
/* DPO on a batch of pairs (rows 2e, 2e+1 = chosen, rejected of example e) given the reference's
 * log-probabilities per row (ref: B doubles, from alloy_dpo_logps with the reference): the loss
 * and, if grad_scale != 0, its backward (signed per-token weights through the LM head, then
 * the model; gradients ACCUMULATE). Adds to *st (may be NULL). */
alloy_status alloy_dpo_step(alloy_model *m, const alloy_align_batch *b, const double *ref, const alloy_dpo_config *c,
                            float grad_scale, alloy_align_stats *st);

/* ---- the alignment run: sft, reward, dpo (src/train/align_run.c) ---- */

typedef struct alloy_align_options {
    alloy_align_kind kind;            /* SFT, REWARD or DPO */
    char model_dir[ALLOY_PATH_MAX];   /* the model to start from (checkpoint or run folder) */
    char ref_dir[ALLOY_PATH_MAX];     /* DPO: the frozen reference ("" = model_dir) */
    char data_path[ALLOY_PATH_MAX];   /* JSONL of examples */
    char val_path[ALLOY_PATH_MAX];    /* held-out JSONL ("" = hold out val_fraction of data_path) */
    alloy_data_fields fields;         /* the records' layout (default: detected) and field names, data and val */
    char out_dir[ALLOY_PATH_MAX];     /* run folder: checkpoints/, latest, metrics.jsonl */
    alloy_chat_template tmpl;         /* how examples are rendered */
    bool tmpl_set;                    /* tmpl was chosen; else the model's own (config.json), else ChatML */
    int64_t steps;                    /* optimiser steps; 0: epochs over the training examples */
    double epochs;                    /* used when steps is 0 (default 3, as TRL) */
    int batch;                        /* examples per micro-batch (default 8) */
    int seq;                          /* tokens per sequence at most (default: min(1024, the model's)) */
    int grad_accum;                   /* micro-batches per step (default 1) */
    double lr, min_lr;                /* peak and final learning rate (cosine after warm-up; min_lr < 0: lr / 10) */
    int64_t warmup;                   /* warm-up steps (default 0) */
    alloy_adamw_config adamw;         /* default betas 0.9, 0.999, eps 1e-8, no decay, clip 1.0 (TRL's) */
    uint64_t seed;                    /* data order, held-out choice, a new reward head */
    double val_fraction;              /* held out when val_path is "" (default 0.05) */
    int64_t eval_every;               /* steps between held-out evaluations (0: only at the end) */
    int eval_batches;                 /* micro-batches per evaluation (0: the whole held-out set) */
    int64_t ckpt_every;               /* steps between checkpoints (0: only at the end) */
    int keep_ckpts;                   /* checkpoints kept (the newest) */
    int log_every;                    /* when stderr is not a terminal: a progress line every n steps */
    alloy_dpo_config dpo;             /* DPO: β 0.1, sigmoid, no label smoothing */
    bool quiet;                       /* no progress output */
    alloy_resume_mode resume_mode;    /* resuming from a checkpoint older than the run's newest */
    volatile int *stop;               /* set to stop after the current step, with a checkpoint */
} alloy_align_options;

/* TRL's defaults for the objective: lr 2e-5 (SFT), 1e-4 (reward), 1e-6 (DPO); min_lr lr/10. */
alloy_align_options alloy_align_defaults(alloy_align_kind kind);
/* The options' schema (alloy/options.h): trainer_state.json, resume, the command's flags. */
const alloy_schema *alloy_align_schema(void);

/* Where a resume starts: dir is a run folder (its latest checkpoint) or a checkpoint folder.
 * Fills *o with the run's saved options and *ckpt (alloy_free it) with the checkpoint. */
alloy_status alloy_align_resume_options(const char *dir, alloy_align_options *o, char **ckpt);

/* Trains from o->model_dir (resume NULL) or continues from a checkpoint of the run. Writes
 * o->out_dir/checkpoints/step-N/ (model.safetensors — with score.* for a reward model —,
 * config.json with "chat_template", tokenizer.json, tokenizer_config.json for ChatML,
 * optimizer.safetensors, score_optimizer.safetensors for a reward model, trainer_state.json),
 * `latest`, metrics.jsonl (one JSON object per step and per evaluation) and progress on
 * stderr. With one thread a resumed run ends bitwise equal to an uninterrupted one.
 * *final_val (may be NULL) gets the last held-out evaluation's sums. */
alloy_status alloy_align_run(const alloy_align_options *o, const char *resume, alloy_align_stats *final_val);

/* ---- scoring a file (src/train/score.c) ---- */

/* What alloy_align_score hands over for each example, in the file's order: its line number, the
 * n values of its sequences (a reward model's scores, or with logprobs the sums of the response
 * tokens' log-probabilities) and, with logprobs, the number of tokens each sum covers (else NULL). */
typedef void (*alloy_score_fn)(void *user, int64_t line, const double *values, const int *tokens, int n);

/* Scores every example of d (read as ALLOY_ALIGN_SCORE), batch examples per forward: by the
 * reward model rm, or with logprobs by rm->model as a language model. */
alloy_status alloy_align_score(alloy_reward_model *rm, const alloy_align_data *d, int batch, bool logprobs,
                               alloy_score_fn emit, void *user);

/* ---- RLHF with PPO (the objective's maths: src/train/ppo.c; the run: src/align/ppo_run.c) ----
 *
 * The policy is a language model with a value head (TRL's AutoModelForCausalLMWithValueHead: a
 * scalar head v_head.summary.weight (1, C), v_head.summary.bias (1) on the final hidden states,
 * sharing the backbone), held in an alloy_reward_model whose head is the value head. Per-token
 * arrays of a batch of rollouts list the response tokens sequence after sequence: sequence i's
 * tokens are off[i] .. off[i+1]-1 (off has n + 1 entries, off[0] = 0). In an alloy_align_batch
 * they are the positions with targets >= 0, row by row, in order: the log-probability at
 * position t is that of the token at t+1, and the value at t is read from the hidden state at t
 * (the state before that token is drawn), as TRL pairs them.
 */

typedef enum alloy_kl_penalty {
    ALLOY_KL_PENALTY_KL = 0,  /* "kl": logπ - logπref (the k1 estimator; TRL's default) */
    ALLOY_KL_PENALTY_ABS = 1, /* "abs": |logπ - logπref| */
    ALLOY_KL_PENALTY_MSE = 2, /* "mse": (logπ - logπref)² / 2 */
} alloy_kl_penalty;

/* "kl", "abs", "mse"; and back (USAGE for an unknown name). */
const char *alloy_kl_penalty_name(alloy_kl_penalty k);
alloy_status alloy_kl_penalty_parse(const char *name, alloy_kl_penalty *out);

typedef struct alloy_ppo_config {
    double gamma;           /* discount (1) */
    double lam;             /* GAE λ (0.95) */
    double cliprange;       /* ε of the clipped ratio (0.2) */
    double cliprange_value; /* values move at most this far from the rollout's (0.2) */
    double vf_coef;         /* weight of the value loss (0.1) */
    alloy_kl_penalty kl_penalty; /* per-token penalty (kl) */
    bool whiten;            /* whiten the advantages over the batch (true, as TRL) */
} alloy_ppo_config;

/* TRL's PPOConfig values above. */
alloy_ppo_config alloy_ppo_config_default(void);

/* Per-token rewards of n sequences: -β·penalty(logp - ref_logp) on every token, plus the
 * sequence's score on its last token (TRL's compute_rewards). kl (may be NULL) gets logp -
 * ref_logp per token. Sequences without tokens are skipped. */
void alloy_ppo_rewards(const alloy_ppo_config *c, double beta, const float *logp, const float *ref_logp,
                       const float *scores, const int64_t *off, int n, float *rewards, float *kl);

/* Generalised advantage estimation (Schulman et al. 2016) per sequence, backwards from its last
 * token with V = 0 after it: δ_t = r_t + γ·V_{t+1} - V_t, A_t = δ_t + γλ·A_{t+1}; returns
 * ret_t = A_t + V_t (before any whitening). adv and ret may not alias the inputs. */
void alloy_gae(const float *rewards, const float *values, const int64_t *off, int n, double gamma, double lam,
               float *adv, float *ret);

/* Whitens x (n values) in place: (x - mean) / sqrt(var + 1e-8) with the unbiased variance
 * (as TRL's masked_whiten), the mean added back unless shift_mean. n < 2 leaves x centred. */
void alloy_whiten(float *x, int64_t n, bool shift_mean);

/* Figures of one PPO loss evaluation (means over its tokens). */
typedef struct alloy_ppo_info {
    double loss;        /* pg_loss + vf_coef·vf_loss */
    double pg_loss;     /* mean of max(-A·ratio, -A·clip(ratio, 1-ε, 1+ε)) */
    double vf_loss;     /* mean of ½·max((v - R)², (clip(v, v_old ± ε_v) - R)²) */
    double clipfrac;    /* share of tokens where the clipped surrogate is the larger */
    double vf_clipfrac; /* share where the clipped value loss is the larger */
    double approx_kl;   /* ½·mean (logπ - logπ_old)² */
    double policy_kl;   /* mean (logπ_old - logπ) */
    double ratio;       /* mean ratio */
    double value;       /* mean v */
    int64_t tokens;     /* n */
} alloy_ppo_info;

/* The PPO loss on n tokens (TRL's PPOTrainer.loss): the clipped surrogate plus vf_coef times
 * the clipped value loss, each a mean over the n tokens. dlogp and dvalues (either may be NULL)
 * get grad_scale·dloss/dlogp and /dvalues per token. info may be NULL. Returns the loss. */
double alloy_ppo_loss(const alloy_ppo_config *c, const float *logp, const float *old_logp, const float *values,
                      const float *old_values, const float *adv, const float *returns, int64_t n, float grad_scale,
                      float *dlogp, float *dvalues, alloy_ppo_info *info);

/* Adaptive KL controller (Ziegler et al. 2019; TRL's AdaptiveKLController): after each batch,
 * value *= 1 + clip(kl/target - 1, -0.2, 0.2)·n_steps/horizon. Fixed when !adaptive. */
typedef struct alloy_kl_controller {
    double value;   /* β now */
    double target;  /* KL aimed at (6) */
    double horizon; /* (10000) */
    bool adaptive;
} alloy_kl_controller;

void alloy_kl_controller_update(alloy_kl_controller *k, double current_kl, int64_t n_steps);

/* Wraps a policy (taken over, even on failure) with a value head, zero: the first values are 0
 * and the backbone gets no value gradient until the head has moved. */
alloy_status alloy_ppo_value_model_create(alloy_reward_model **out, alloy_model *policy);
/* The value head as its own safetensors file (v_head.summary.weight, v_head.summary.bias), and
 * back (MISMATCH for a missing or misshapen tensor). */
alloy_status alloy_ppo_value_head_save(const alloy_reward_model *pv, const char *path);
alloy_status alloy_ppo_value_head_load(alloy_reward_model *pv, const char *path);

/* Per-token log-probabilities and values of the batch's target positions (in order; n of them
 * where n counts targets >= 0): a forward without logits, the LM head in chunks, the value head.
 * values may be NULL (a model without a value head: pass pv NULL and m). */
alloy_status alloy_ppo_logps_values(alloy_model *m, const alloy_reward_model *pv, const alloy_align_batch *b, float *logp,
                                    float *values);

/* One PPO minibatch: forward, the loss against the rollout's old log-probabilities, old values,
 * advantages and returns (per-token, in the batch's target order), and, if grad_scale != 0, its
 * backward through the LM head, the value head and the backbone (gradients ACCUMULATE: zero
 * them first with alloy_reward_model_zero_grad). info may be NULL. */
alloy_status alloy_ppo_step(alloy_reward_model *pv, const alloy_align_batch *b, const alloy_ppo_config *c,
                            const float *old_logp, const float *old_values, const float *adv, const float *returns,
                            float grad_scale, alloy_ppo_info *info);

/* The PPO run (`alloy ppo`). */
typedef struct alloy_ppo_options {
    char model_dir[ALLOY_PATH_MAX];   /* the SFT model: the policy's start and the frozen reference */
    int objective;                    /* 0: "ppo" (what a saved run names itself) */
    char reward_dir[ALLOY_PATH_MAX];  /* the reward model (alloy reward) */
    char prompts_path[ALLOY_PATH_MAX];/* JSONL of {"prompt": ...} */
    alloy_data_fields fields;         /* the prompts' layout (default: detected) and field names */
    char out_dir[ALLOY_PATH_MAX];     /* run folder */
    alloy_chat_template tmpl;         /* how prompts are rendered */
    bool tmpl_set;                    /* else the model's own (config.json), else ChatML */
    int64_t steps;                    /* PPO steps (batches of rollouts); 0: one pass over the prompts */
    int batch;                        /* rollouts per step (128) */
    int mini_batch;                   /* rollouts per optimiser step (0: min(128, batch)) */
    int ppo_epochs;                   /* passes over each batch (4) */
    int gen_batch;                    /* sequences sampled at once (0: min(16, batch)) */
    int max_new_tokens;               /* response tokens at most (64) */
    int seq;                          /* prompt + response tokens at most (default: min(1024, the model's)) */
    float temperature;                /* sampling (1) */
    int top_k;                        /* 0: off */
    float top_p;                      /* 1: off */
    double lr;                        /* constant learning rate (1.41e-5) */
    alloy_adamw_config adamw;         /* betas 0.9, 0.999, eps 1e-8, no decay, clip 1.0 */
    alloy_ppo_config ppo;
    double init_kl_coef;              /* β at the start (0.2) */
    double kl_target, kl_horizon;     /* adaptive controller (6, 10000) */
    bool adaptive_kl;                 /* (true) */
    double missing_eos_penalty;       /* subtracted from the score of a response cut off by
                                       * max_new_tokens (TRL's missing_eos_penalty; 0: off) */
    uint64_t seed;                    /* prompt order, sampling, minibatch order */
    int64_t ckpt_every;               /* steps between checkpoints (0: only at the end) */
    int keep_ckpts;
    int log_every;
    bool quiet;
    alloy_resume_mode resume_mode;    /* resuming from a checkpoint older than the run's newest */
    volatile int *stop;
} alloy_ppo_options;

alloy_ppo_options alloy_ppo_defaults(void);
/* The options' schema (alloy/options.h): trainer_state.json, resume, the command's flags. */
const alloy_schema *alloy_ppo_schema(void);
/* As alloy_align_resume_options, for a PPO run. */
alloy_status alloy_ppo_resume_options(const char *dir, alloy_ppo_options *o, char **ckpt);
/* Runs PPO from o->model_dir (resume NULL) or continues from a checkpoint of the run. Writes
 * o->out_dir/checkpoints/step-N/ (model.safetensors: the policy; value_head.safetensors;
 * config.json with chat_template; tokenizer files; optimizer.safetensors,
 * value_head_optimizer.safetensors; trainer_state.json with the RNG and β), `latest`,
 * metrics.jsonl (one line per step) and progress on stderr. With one thread a resumed run
 * ends bitwise equal to an uninterrupted one. */
alloy_status alloy_ppo_run(const alloy_ppo_options *o, const char *resume);

ALLOY_END_DECLS
#endif /* ALLOY_ALIGN_H */
