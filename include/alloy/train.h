/*
 * alloy/train.h — optimiser, learning-rate schedule, and the training loop with checkpoints.
 *
 *     alloy_adamw_config oc = alloy_adamw_defaults();
 *     alloy_optimizer *opt;
 *     alloy_optimizer_create(&opt, model, &oc);
 *     for (int64_t step = 0; step < steps; step++) {
 *         ... forward, loss, zero_grad, backward ...
 *         float lr = (float)alloy_schedule_lr(&sched, step);
 *         alloy_optimizer_step(opt, model, lr, &grad_norm);
 *     }
 *     alloy_optimizer_destroy(opt);
 */
#ifndef ALLOY_TRAIN_H
#define ALLOY_TRAIN_H

#include "alloy/base.h"
#include "alloy/options.h"
#include "alloy/model.h"
#include "alloy/data.h"

#include <string.h>
#include "alloy/checkpoint.h" /* alloy_run_latest, alloy_checkpoint_resolve */
#include "alloy/eval.h"       /* held-out evaluation: alloy_eval_lm, alloy_eval_source */

ALLOY_BEGIN_DECLS

/* ---- AdamW ---- */

typedef struct alloy_adamw_config {
    float beta1, beta2, eps;
    float weight_decay; /* applied to tensors whose table entry has decay set */
    float grad_clip;    /* clip the global gradient norm to this; 0 turns clipping off */
} alloy_adamw_config;

alloy_adamw_config alloy_adamw_defaults(void); /* 0.9, 0.95, 1e-8, wd 0.1, clip 1.0 */

typedef struct alloy_optimizer {
    alloy_adamw_config cfg;
    size_t n;       /* floats, = model->num_params */
    float *m;       /* (n) first moment, mirrors the parameter arena */
    float *v;       /* (n) second moment */
    int64_t step;   /* updates taken so far */
    uint8_t *frozen;/* (model->n_tensors) 1: the tensor is frozen; NULL: none is */
} alloy_optimizer;

/* Which parameters a run trains. */
typedef enum alloy_train_only {
    ALLOY_TRAIN_ONLY_ALL = 0, /* every parameter */
    ALLOY_TRAIN_ONLY_ROUTER,  /* the MoE routers alone (alloy_tensor_is_router) */
    ALLOY_TRAIN_ONLY_MLP,     /* the MLPs alone: a dense model's, an MoE's experts (alloy_tensor_is_mlp) */
} alloy_train_only;

const char *alloy_train_only_name(alloy_train_only t); /* "all", "router", "mlp" */
alloy_status alloy_train_only_parse(const char *name, alloy_train_only *out);

alloy_status alloy_optimizer_create(alloy_optimizer **out, const alloy_model *model, const alloy_adamw_config *cfg);
void alloy_optimizer_destroy(alloy_optimizer *opt);
/* Several parameter groups under one global norm: clips them together (as one
 * torch.nn.utils.clip_grad_norm_ over all their parameters) and steps each optimiser with its
 * model (a group of one is alloy_optimizer_step). */
alloy_status alloy_optimizer_step_groups(alloy_optimizer *const *opts, alloy_model *const *models, int n, float lr,
                                         float *grad_norm);
/* Clips the global gradient norm (as torch.nn.utils.clip_grad_norm_: coefficient
 * max_norm / (norm + 1e-6), capped at 1) and takes one AdamW step with learning rate lr.
 * *grad_norm (may be NULL) receives the norm before clipping. Non-finite gradients fail with
 * RANGE and leave the parameters untouched. */
alloy_status alloy_optimizer_step(alloy_optimizer *opt, alloy_model *model, float lr, float *grad_norm);
/* Freezes every tensor outside `which`: from then on alloy_optimizer_step zeroes a frozen
 * tensor's gradient before the norm (so clipping sees the trained tensors only, as torch with
 * requires_grad off) and neither updates nor decays it. USAGE (naming --train-only) for
 * ROUTER on a model without experts. */
alloy_status alloy_optimizer_train_only(alloy_optimizer *opt, const alloy_model *model, alloy_train_only which);

/* ---- learning-rate schedule: linear warm-up, then cosine decay to min_lr ---- */

typedef struct alloy_schedule {
    double max_lr;
    double min_lr;        /* reached at the last step */
    int64_t warmup_steps; /* lr = max_lr · (step+1) / warmup for step < warmup */
    int64_t total_steps;
} alloy_schedule;

/* The learning rate of the 0-based step. */
double alloy_schedule_lr(const alloy_schedule *s, int64_t step);

/* ---- optimiser state on disk ---- */

/* optimizer.safetensors: "exp_avg.<name>" and "exp_avg_sq.<name>" for every parameter, the
 * step count and hyperparameters in the metadata. */
alloy_status alloy_optimizer_save(const alloy_optimizer *opt, const alloy_model *model, const char *path);
alloy_status alloy_optimizer_load(alloy_optimizer *opt, const alloy_model *model, const char *path);

#define ALLOY_PATH_MAX 1024

/* ---- the one run ----
 *
 * Every training mode (LM pretraining, distillation, SFT, reward models, DPO, ...) is an
 * objective plugged into one run, which owns everything around it: the run folder (it refuses to
 * overwrite another run, and refuses to resume from a checkpoint older than the run's newest
 * unless told to rewind or branch), the learning-rate schedule, gradient accumulation, one
 * AdamW over the objective's parameter groups with one global-norm clip, the evaluation cadence,
 * checkpoints (written whole, then renamed; `latest`; the newest --keep kept), exact resume,
 * metrics.jsonl, the progress line and the stop flag.
 *
 *     alloy_objective obj;            // filled by the objective's own set-up (alloy_train_run's)
 *     alloy_run_options ro = alloy_run_defaults();
 *     ... ro.out_dir, ro.steps, ro.schedule ...
 *     alloy_status s = alloy_run_execute(&ro, &obj, resume_ckpt, &result);
 */

/* What a run reports of a step or of an evaluation, filled by its objective's report hook. */
typedef struct alloy_run_report {
    double loss;        /* the mean loss (the progress line, the final result); for ALLOY_RUN_FINAL
                           < 0 when the objective did not compute it (brief then says why) */
    double tokens;      /* tokens this step processed (tokens/s, the tokens count) */
    char name[48];      /* what `loss` is on the progress line and in the summary ("" for the
                           default: "loss" of a step, "held-out loss" of an evaluation) */
    char covers[96];    /* of an evaluation: what the held-out figure covers ("the first 160 of 590
                           windows", "all 590 windows"; "" when not said) */
    char brief[160];    /* beside the loss on the progress line ("" for nothing); for an objective
                           with its own update, the whole figure part of the line */
    char fields[2048];  /* the figures as JSON members after "step": ,"loss":2.31,"ppl":10.1 */
    char tail[16384];   /* JSON members after the run's own at the end of the line ("" for none) */
} alloy_run_report;

/* A step, an evaluation, or the figures over the whole held-out split at the end (evaluate_all). */
typedef enum alloy_run_phase { ALLOY_RUN_TRAIN = 0, ALLOY_RUN_EVAL, ALLOY_RUN_FINAL } alloy_run_phase;

/* Trainable parameters with an optimiser state file of their own. The run clips every group of an
 * objective by one global norm, then steps each with AdamW. */
typedef struct alloy_param_group {
    alloy_model *view;      /* the parameters and gradients (a model, or a view of a head's tensors) */
    const char *file;       /* the optimiser state's file in a checkpoint ("optimizer.safetensors") */
} alloy_param_group;

#define ALLOY_RUN_MAX_GROUPS 4

typedef struct alloy_run alloy_run; /* the run in progress, handed to an objective's update */

/* A training objective: how a step computes the gradient of its loss, and what it saves. The
 * objective's own set-up fills it (loads models, reads data); the run calls its hooks. Hooks
 * marked optional may be NULL. */
typedef struct alloy_objective {
    const char *label;          /* the progress line's prefix ("sft ", "" for none) */
    void *ctx;
    alloy_param_group groups[ALLOY_RUN_MAX_GROUPS]; /* what the run's AdamW trains; --train-only
                                                       applies to groups[0] */
    int n_groups;
    alloy_rng *rng;             /* optional: the objective's random state, seeded by the run from
                                   its seed, saved with every checkpoint and restored on resume */
    /* The next micro-batch of its data: forward, loss, and the backward of grad_scale x the loss
       into the groups' gradients (which the run zeroes before a step's first micro-batch, micro 0;
       the objective's figures start over there). */
    alloy_status (*micro_batch)(void *ctx, int micro, float grad_scale);
    /* Optional, in place of micro_batch and the run's optimiser step: the whole update of one
       step, whose optimiser steps go through alloy_run_optimizer_step (PPO's epochs); *grad_norm
       gets the norm the metrics show. Its groups' optimisers may take several steps per step. */
    alloy_status (*update)(void *ctx, alloy_run *run, float lr, float *grad_norm);
    /* Optional: after each optimiser step, with its learning rate (parameters of its own). */
    alloy_status (*after_step)(void *ctx, float lr);
    /* Optional: the held-out figures, which report(ALLOY_RUN_EVAL) then gives. */
    alloy_status (*evaluate)(void *ctx);
    /* Optional: once, when the run has done all its steps (not when stopped early), held-out
       figures over the whole held-out split where that is cheap, which report(ALLOY_RUN_FINAL)
       then gives: they join the run's summary line and metrics.jsonl's "end" line. */
    alloy_status (*evaluate_all)(void *ctx);
    /* The figures of the step (ALLOY_RUN_TRAIN; gnorm and lr are the run's), the evaluation just
       done (ALLOY_RUN_EVAL) or evaluate_all's (ALLOY_RUN_FINAL). */
    void (*report)(void *ctx, alloy_run_phase phase, alloy_run_report *out);
    /* Writes the model's files and its own (tokenizer, template, heads) into a checkpoint folder. */
    alloy_status (*save)(void *ctx, const char *dir);
    /* Optional: on resume, its own files back from the checkpoint (its models it loads itself). */
    alloy_status (*load)(void *ctx, const char *dir);
    /* Its members of trainer_state.json ("options" to resume with, the data position and
       fingerprint), and on resume the same back (what names the file, for errors). */
    alloy_status (*state_save)(void *ctx, struct cJSON *state);
    alloy_status (*state_load)(void *ctx, const struct cJSON *state, const char *what);
    /* The members of metrics.jsonl's "start" line after "resumed" (",\"params\":...") and the
       progress lines that open the run. */
    void (*describe)(void *ctx, char *fields, size_t size);
    void (*intro)(void *ctx, alloy_progress *prog);
} alloy_objective;

/* What happens when the checkpoint resumed from is older than the run's newest. */
typedef enum alloy_resume_mode {
    ALLOY_RESUME_REFUSE = 0, /* refuse: the newer checkpoints and metrics would be lost */
    ALLOY_RESUME_REWIND,     /* set the newer checkpoints and the whole metrics.jsonl aside in
                                RUN/rewound-N/ (nothing is deleted), then continue from it */
    ALLOY_RESUME_BRANCH,     /* continue in a new run folder (out_dir), the source run untouched */
} alloy_resume_mode;

typedef struct alloy_run_options {
    char out_dir[ALLOY_PATH_MAX]; /* the run folder */
    int64_t steps;                /* optimiser steps in all */
    int grad_accum;               /* micro-batches per step */
    alloy_schedule schedule;      /* total_steps is set from steps */
    alloy_adamw_config adamw;
    alloy_train_only train_only;  /* which tensors of groups[0] train */
    uint64_t seed;                /* seeds the objective's rng */
    int64_t eval_every;           /* steps between evaluations (0: only at the end) */
    int64_t ckpt_every;           /* steps between checkpoints (0: only at the end and on a stop) */
    int keep_ckpts;               /* the newest checkpoints kept */
    int log_every;                /* a progress line every n steps when stderr is not a terminal */
    bool quiet;                   /* no progress output */
    alloy_resume_mode resume_mode;
    volatile int *stop;           /* set (by a signal handler) to stop after this step, with a checkpoint */
} alloy_run_options;

/* What a finished run leaves. */
typedef struct alloy_run_result {
    int64_t step;             /* the step it stopped at */
    double last_val_loss;     /* the last held-out loss (0 when there was none) */
    bool evaluated;           /* an evaluation ran */
    bool stopped;             /* the stop flag ended it early */
} alloy_run_result;

alloy_run_options alloy_run_defaults(void);

/* Option-schema rows (alloy/options.h) that the training verbs' options share: the AdamW
 * settings of the member `adamw`; the schedule (grad_accum, lr, min_lr, warmup); the evaluation
 * cadence (eval_every, eval_batches); the checkpoint and progress cadence (ckpt_every,
 * keep_ckpts as --keep, log_every, quiet). */
#define ALLOY_OPT_ADAMW_ROWS(TYPE)                                                                              \
    ALLOY_OPT_NAMED(TYPE, adamw.beta1, "beta1", NULL, ALLOY_OPT_FLOAT, 0, NULL, "AdamW beta1"),                 \
    ALLOY_OPT_NAMED(TYPE, adamw.beta2, "beta2", NULL, ALLOY_OPT_FLOAT, 0, NULL, "AdamW beta2"),                 \
    ALLOY_OPT_NAMED(TYPE, adamw.eps, "eps", NULL, ALLOY_OPT_FLOAT, 0, NULL, "AdamW epsilon"),                   \
    ALLOY_OPT_NAMED(TYPE, adamw.weight_decay, "weight_decay", NULL, ALLOY_OPT_FLOAT, 0, NULL, "decoupled weight decay"), \
    ALLOY_OPT_NAMED(TYPE, adamw.grad_clip, "grad_clip", NULL, ALLOY_OPT_FLOAT, 0, NULL, "global gradient-norm clip (0: off)")
#define ALLOY_OPT_SCHEDULE_ROWS(TYPE)                                                                           \
    ALLOY_OPT_ROW(TYPE, grad_accum, ALLOY_OPT_INT, 0, "micro-batches per step"),                                \
    ALLOY_OPT_ROW(TYPE, lr, ALLOY_OPT_DOUBLE, 0, "peak learning rate"),                                         \
    ALLOY_OPT_ROW(TYPE, min_lr, ALLOY_OPT_DOUBLE, 0, "final learning rate (default lr / 10)"),                  \
    ALLOY_OPT_ROW(TYPE, warmup, ALLOY_OPT_INT64, 0, "warm-up steps")
#define ALLOY_OPT_EVAL_ROWS(TYPE)                                                                               \
    ALLOY_OPT_ROW(TYPE, eval_every, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "steps between evaluations"),            \
    ALLOY_OPT_ROW(TYPE, eval_batches, ALLOY_OPT_INT, ALLOY_OPT_RESUME, "batches per evaluation")
#define ALLOY_OPT_CADENCE_ROWS(TYPE)                                                                            \
    ALLOY_OPT_ROW(TYPE, ckpt_every, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "steps between checkpoints"),            \
    ALLOY_OPT_NAMED(TYPE, keep_ckpts, "keep_ckpts", "keep", ALLOY_OPT_INT, ALLOY_OPT_RESUME, NULL, "checkpoints kept"), \
    ALLOY_OPT_ROW(TYPE, log_every, ALLOY_OPT_INT, ALLOY_OPT_NOSAVE, "a progress line every n steps off a terminal"), \
    ALLOY_OPT_ROW(TYPE, quiet, ALLOY_OPT_BOOL, ALLOY_OPT_NOSAVE, "no progress output")

/* Fills the run options RO from a verb's options struct O whose fields share the run's names
 * (out_dir, steps, grad_accum, lr, min_lr, warmup, adamw, seed, eval_every, ckpt_every,
 * keep_ckpts, log_every, quiet, resume_mode, stop): the training verbs' structs all do. */
#define ALLOY_RUN_OPTIONS_FROM(RO, O)                                                                   \
    do {                                                                                               \
        (RO) = alloy_run_defaults();                                                                   \
        memcpy((RO).out_dir, (O)->out_dir, sizeof (RO).out_dir);                                       \
        (RO).steps = (O)->steps, (RO).grad_accum = (O)->grad_accum;                                    \
        (RO).schedule = (alloy_schedule){.max_lr = (O)->lr, .min_lr = (O)->min_lr, .warmup_steps = (O)->warmup}; \
        (RO).adamw = (O)->adamw, (RO).seed = (O)->seed;                                                \
        (RO).eval_every = (O)->eval_every, (RO).ckpt_every = (O)->ckpt_every;                          \
        (RO).keep_ckpts = (O)->keep_ckpts, (RO).log_every = (O)->log_every, (RO).quiet = (O)->quiet;   \
        (RO).resume_mode = (O)->resume_mode, (RO).stop = (O)->stop;                                    \
    } while (0)

/* Runs the objective from scratch (resume NULL) or from the checkpoint folder `resume` (whose
 * optimiser state and trainer_state.json it restores, then the objective's state_load and load)
 * to step ro->steps. With one thread, a resumed run ends bitwise equal to an uninterrupted one.
 * A new run refuses an out_dir that holds a run; nothing on disk changes before the first step
 * unless the run is valid. The objective stays the caller's. */
alloy_status alloy_run_execute(const alloy_run_options *ro, const alloy_objective *obj, const char *resume,
                               alloy_run_result *result);

/* For an objective's update: clips every group by one global norm and takes one AdamW step of
 * each at learning rate lr; *grad_norm (may be NULL) receives the norm before clipping. */
alloy_status alloy_run_optimizer_step(alloy_run *run, float lr, float *grad_norm);

/* Reads the options a run saved: dir is a checkpoint folder or a run folder (its latest checkpoint,
 * whose path goes to *ckpt; alloy_free it); the "options" object of its trainer_state.json goes to
 * parse(opts, options, path). A run folder continues where it is now: dir is copied into out_dir
 * (out_dir_size bytes). On failure *ckpt is NULL. */
typedef alloy_status (*alloy_options_parser)(void *opts, const struct cJSON *options, const char *what);
alloy_status alloy_run_resume_state(const char *dir, char **ckpt, alloy_options_parser parse, void *opts, char *out_dir,
                                    size_t out_dir_size);

/* alloy_run_resume_state reading the options through their schema (alloy/options.h), for a run
 * of one of `verbs` (space-separated: "train distill", "sft reward dpo", "ppo"). USAGE naming the
 * verb to use when the saved options say another verb made the run (their "objective": none for
 * train, distill's object, sft, reward, dpo, ppo, "combiner" for ensemble train), and when dir
 * is a model folder rather than a run (weights, no trainer_state.json or latest: the message
 * says to start a run from it with --init, or --model for verbs without train). */
alloy_status alloy_run_resume_options(const char *dir, char **ckpt, const alloy_schema *schema, const char *verbs,
                                      void *opts, char *out_dir, size_t out_dir_size);

/* For an objective's state_save and state_load: the members every objective's trainer_state.json
 * has — its data position (epoch, cursor), its data's fingerprint and its options (taken over;
 * NULL: NOMEM). Reading them back: FORMAT for a missing member, or (n >= 0) an epoch or cursor
 * outside [0, n]; MISMATCH naming `data` when the fingerprint is not `fingerprint` any more. */
alloy_status alloy_run_state_put_data(struct cJSON *state, int64_t epoch, int64_t cursor, uint64_t fingerprint,
                                      struct cJSON *options);
alloy_status alloy_run_state_get_data(const struct cJSON *state, const char *what, const char *data, uint64_t fingerprint,
                                      int64_t n, int64_t *epoch, int64_t *cursor);

/* USAGE when dir already holds a run (a `latest` file), naming it and what to do instead. */
alloy_status alloy_run_check_new(const char *dir);

/* ---- the training loop ---- */

/* A loss other than next-token cross-entropy for the LM objective (alloy_train_run): given a
 * micro-batch, it runs the model's forward, computes its loss (the mean per token) and, when
 * grad_scale != 0, fills grad's dlogits and dhidden with its gradient scaled by grad_scale (the
 * run then calls alloy_model_backward with them). Distillation (alloy/distill.h) is one. */
typedef struct alloy_train_loss {
    alloy_status (*loss)(void *ctx, alloy_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                         float grad_scale, alloy_backward_in *grad, float *loss);
    void *ctx;
    /* Optional (NULL: none), for a loss with trainable parameters of its own, whose
       gradients loss accumulates: */
    alloy_status (*step)(void *ctx, float lr);          /* after each optimiser step of the model,
                                                           with its learning rate: update them and
                                                           zero their gradients */
    alloy_status (*save)(void *ctx, const char *dir);   /* write their state (for an exact resume)
                                                           into a checkpoint folder being written */
    alloy_status (*load)(void *ctx, const char *dir);   /* read it back from the checkpoint a run
                                                           resumes from */
    const char *name; /* optional: what its loss is called on the progress line ("distill-loss");
                         the held-out loss, plain cross-entropy, is then "held-out CE" */
} alloy_train_loss;

typedef struct alloy_train_options {
    char data_dir[ALLOY_PATH_MAX];    /* token shards (alloy prepare) */
    char out_dir[ALLOY_PATH_MAX];     /* run folder: checkpoints/, latest, metrics.jsonl */
    char preset[64];                  /* one of these three chooses the model */
    char config_path[ALLOY_PATH_MAX]; /* a config.json */
    char init_dir[ALLOY_PATH_MAX];    /* a checkpoint to start from */
    int64_t steps;                    /* optimiser steps in all */
    int batch, seq, grad_accum;       /* micro-batch B, sequence T, micro-batches per step */
    double lr, min_lr;                /* peak and final learning rate (min_lr < 0: lr / 10) */
    int64_t warmup;                   /* warm-up steps (< 0: min(steps / 10, 100)) */
    alloy_adamw_config adamw;
    uint64_t seed;                    /* initialisation and data order */
    double val_fraction;              /* held out when the data has no val shards */
    int64_t eval_every;               /* steps between held-out evaluations (0: only at the end) */
    int eval_batches;                 /* batches per evaluation */
    int64_t ckpt_every;               /* steps between checkpoints (0: only at the end) */
    int keep_ckpts;                   /* checkpoints kept (the newest) */
    int log_every;                    /* when stderr is not a terminal: a progress line every n steps */
    alloy_precision precision;        /* matrix products: F32 (default) or BF16 */
    bool recompute;                   /* activation recomputation (same results, less memory) */
    alloy_train_only train_only;      /* which parameters train (all, or an MoE's routers) */
    double aux_loss_coef;             /* MoE: router_aux_loss_coef to train with (saved in the
                                         checkpoints' config.json); < 0: the model's own */
    bool quiet;                       /* no progress output */
    const alloy_train_loss *objective;   /* NULL: next-token cross-entropy */
    char objective_json[4096];        /* the objective's settings as JSON, saved with the run so
                                         that a resume rebuilds it ("" for none) */
    alloy_resume_mode resume_mode;    /* resuming from a checkpoint older than the run's newest */
    volatile int *stop;               /* set (by a signal handler) to stop after the current step,
                                         with a checkpoint */
} alloy_train_options;

alloy_train_options alloy_train_defaults(void);
/* The options' schema: their names in trainer_state.json, which may change on resume, the
 * command's flags (alloy/options.h). */
const alloy_schema *alloy_train_schema(void);

/* Where a resume starts: `dir` is a run folder (its `latest` checkpoint is used) or a
 * checkpoint folder. Fills opt with the run's saved options and *ckpt (alloy_free it) with the
 * checkpoint folder. */
alloy_status alloy_train_resume_options(const char *dir, alloy_train_options *opt, char **ckpt);

/* Trains from scratch (resume_ckpt NULL) or from a checkpoint of this run, writing
 * checkpoints to opt->out_dir/checkpoints/step-NNNNNNNN (then `latest`), metrics to
 * opt->out_dir/metrics.jsonl, and progress to stderr. With one thread, a resumed run ends
 * bitwise equal to an uninterrupted one. *final_val_loss (may be NULL) gets the last held-out
 * loss. */
alloy_status alloy_train_run(const alloy_train_options *opt, const char *resume_ckpt, float *final_val_loss);

ALLOY_END_DECLS
#endif /* ALLOY_TRAIN_H */
