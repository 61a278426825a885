/*
 * internal.h — what the files of src/fuse/ share and nothing outside uses.
 */
#ifndef ALLOY_FUSE_INTERNAL_H
#define ALLOY_FUSE_INTERNAL_H

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

#endif
