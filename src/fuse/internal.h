/*
 * internal.h — what the files of src/fuse/ share and nothing outside uses.
 */
#ifndef ALLOY_FUSE_INTERNAL_H
#define ALLOY_FUSE_INTERNAL_H

#include "alloy/distill.h"
#include "alloy/ensemble.h"

/* combiner.c, for combiner_train.c: every member forward on a batch, member_logp (n, B·T) their
 * log pᵢ(target), hidden[i] member i's final hidden states; the held-out losses of each member,
 * the uniform mixture and the gate over the val split (scratch member_logp (n, B·T), gates
 * (B·T, n)); what made the combiner and its report, into c->training_json. */
alloy_status combiner_members_forward(alloy_model *const *models, int n, const int32_t *inputs, const int32_t *targets,
                                      int B, int T, float *member_logp, const float **hidden);
alloy_status combiner_eval(const alloy_combiner *c, alloy_model *const *models, const alloy_dataset *ds, int B, int T,
                           int64_t max_windows, float *member_logp, float *gates, alloy_combiner_report *rep);
void combiner_record_training(alloy_combiner *c, const alloy_dataset *ds, const alloy_combiner_train_options *o,
                              const alloy_combiner_report *r);

/* distill.c, distill_projection.c: one distillation run. */
typedef struct distill_ctx {
    const alloy_distill_options *d;
    const alloy_train_options *run; /* the run's options: seed, AdamW settings */
    alloy_ensemble *teachers;
    alloy_model *teacher0;          /* whose hidden states the student matches */
    float *tlogp;     /* (B·T, V) */
    float *losses;    /* (B·T) */
    float *row_scale; /* (B·T) */
    /* hidden-state matching (d->hidden_weight > 0) */
    int Cs, Ct;       /* the student's and the teacher's widths; Cs 0 until P exists */
    float *proj;      /* (Ct, Cs) P */
    float *dproj;     /* (Ct, Cs) its gradient over the current step */
    float *proj_m;    /* (Ct, Cs) AdamW first moment */
    float *proj_v;    /* (Ct, Cs) AdamW second moment */
    int64_t proj_step;/* AdamW updates of P so far */
    float *err;       /* (B·T, Ct) scratch */
} distill_ctx;

/* distill_projection.c: a new P (the identity when the widths match, else small random from the
 * run's seed) for a student of width Cs; the hooks of alloy_train_loss that update P after each
 * step, write it into a checkpoint and read it back on resume (ctx a distill_ctx). */
alloy_status distill_proj_init(distill_ctx *c, int Cs);
alloy_status distill_proj_step(void *ctx, float lr);
alloy_status distill_proj_save(void *ctx, const char *dir);
alloy_status distill_proj_load(void *ctx, const char *dir);

#endif
