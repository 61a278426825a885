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
#include "alloy/model.h"
#include "alloy/data.h"
#include "alloy/checkpoint.h" /* alloy_run_latest, alloy_checkpoint_resolve */

#ifdef __cplusplus
extern "C" {
#endif

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
bool alloy_train_only_parse(const char *name, alloy_train_only *out);

alloy_status alloy_optimizer_create(alloy_optimizer **out, const alloy_model *model, const alloy_adamw_config *cfg);
void alloy_optimizer_destroy(alloy_optimizer *opt);
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

/* ---- the training loop ---- */

#define ALLOY_PATH_MAX 1024

/* A training objective other than next-token cross-entropy on the data: given a micro-batch,
 * it runs the model's forward, computes its loss (the mean per token) and leaves the gradient
 * for alloy_model_backward, scaled by grad_scale. Distillation (alloy/distill.h) is one. */
typedef struct alloy_objective {
    alloy_status (*loss)(void *ctx, alloy_model *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                         float grad_scale, float *loss);
    void *ctx;
    /* Optional (NULL: none), for an objective with trainable parameters of its own, whose
       gradients loss accumulates: */
    alloy_status (*step)(void *ctx, float lr);          /* after each optimiser step of the model,
                                                           with its learning rate: update them and
                                                           zero their gradients */
    alloy_status (*save)(void *ctx, const char *dir);   /* write their state (for an exact resume)
                                                           into a checkpoint folder being written */
    alloy_status (*load)(void *ctx, const char *dir);   /* read it back from the checkpoint a run
                                                           resumes from */
} alloy_objective;

typedef struct alloy_train_options {
    char data_dir[ALLOY_PATH_MAX];    /* token shards (alloy prepare) */
    char out_dir[ALLOY_PATH_MAX];     /* run folder: checkpoints/, latest, metrics.jsonl */
    char preset[64];                  /* one of these three chooses the model */
    char config_path[ALLOY_PATH_MAX]; /* a config.json */
    char init_dir[ALLOY_PATH_MAX];    /* a checkpoint to start from */
    int64_t steps;                    /* optimiser steps in all */
    int batch, seq, grad_accum;       /* micro-batch B, sequence T, micro-batches per step */
    double lr, min_lr;                /* peak and final learning rate */
    int64_t warmup;                   /* warm-up steps */
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
    const alloy_objective *objective; /* NULL: next-token cross-entropy */
    char objective_json[4096];        /* the objective's settings as JSON, saved with the run so
                                         that a resume rebuilds it ("" for none) */
    volatile int *stop;               /* set (by a signal handler) to stop after the current step,
                                         with a checkpoint */
} alloy_train_options;

alloy_train_options alloy_train_defaults(void);

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

/* Held-out scores of a language model. */
typedef struct alloy_eval_result {
    double loss;       /* mean cross-entropy per target token (nats) */
    double perplexity; /* exp(loss) */
    int64_t tokens;    /* target tokens scored */
    int64_t windows;   /* windows of T + 1 tokens scored */
} alloy_eval_result;

/* Fills r from the summed negative log-likelihood of `windows` windows of T targets each. */
void alloy_eval_result_set(alloy_eval_result *r, double sum_nll, int64_t windows, int T);

/* Scores every window of T + 1 tokens of the split (or the first max_windows, if > 0), in
 * order, B at a time: the mean loss over all target tokens and its perplexity. The result does
 * not depend on B. */
alloy_status alloy_eval_lm(alloy_model *m, const alloy_dataset *ds, alloy_split split, int B, int T,
                           int64_t max_windows, alloy_eval_result *out);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_TRAIN_H */
