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
} alloy_optimizer;

alloy_status alloy_optimizer_create(alloy_optimizer **out, const alloy_model *model, const alloy_adamw_config *cfg);
void alloy_optimizer_destroy(alloy_optimizer *opt);
/* Clips the global gradient norm (as torch.nn.utils.clip_grad_norm_: coefficient
 * max_norm / (norm + 1e-6), capped at 1) and takes one AdamW step with learning rate lr.
 * *grad_norm (may be NULL) receives the norm before clipping. Non-finite gradients fail with
 * RANGE and leave the parameters untouched. */
alloy_status alloy_optimizer_step(alloy_optimizer *opt, alloy_model *model, float lr, float *grad_norm);

/* ---- learning-rate schedule: linear warm-up, then cosine decay to min_lr ---- */

typedef struct alloy_schedule {
    double max_lr;
    double min_lr;        /* reached at the last step */
    int64_t warmup_steps; /* lr = max_lr · (step+1) / warmup for step < warmup */
    int64_t total_steps;
} alloy_schedule;

/* The learning rate of the 0-based step. */
double alloy_schedule_lr(const alloy_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_TRAIN_H */
