/*
 * internal.h — what the files of src/infer/ share and nothing outside uses: the ensemble
 * engine's half (ensemble_engine.c) that engine.c dispatches to when an engine is an ensemble.
 *
 * An ensemble is an alloy_engine whose `ens` is set: engine.c keeps its options, vocabulary and
 * sequence lengths and checks every call against them as for a model; ensemble_engine.c runs
 * the members and combines their logits.
 */
#ifndef ALLOY_INFER_INTERNAL_H
#define ALLOY_INFER_INTERNAL_H

#include "alloy/infer.h"

typedef struct ensemble_engine ensemble_engine;

/* Checks the members and the weights (as alloy_engine_create_ensemble says) and allocates the
 * scratch. *shape gets the ensemble's max_batch, max_ctx and max_rows (the members' least) and
 * weights (member 0's), *V the vocabulary. The members are not owned until the caller says so
 * (ensemble_engine_destroy(x, false) gives them back untouched). */
alloy_status ensemble_engine_create(ensemble_engine **out, alloy_engine_options *shape, int *V,
                                    alloy_engine *const *members, const float *weights, int n,
                                    alloy_ensemble_mode mode);
/* Frees x, and its members when `members` is true. */
void ensemble_engine_destroy(ensemble_engine *x, bool members);

/* The calls of alloy_engine_prefill_batch and alloy_engine_decode, already checked against the
 * ensemble: each member runs them, logits (rows, V) get the combination. On a member's failure
 * the members that ran are truncated back and the error names the member. */
alloy_status ensemble_engine_prefill(ensemble_engine *x, float *logits, alloy_logits_rows rows, const int *seqs,
                                     const int32_t *const *tokens, const int *lens, int n_seqs);
alloy_status ensemble_engine_decode(ensemble_engine *x, float *logits, const int *seqs, const int32_t *tokens, int n);

/* reset and truncate on every member (seq and len already checked). */
void ensemble_engine_reset(ensemble_engine *x, int seq);
alloy_status ensemble_engine_truncate(ensemble_engine *x, int seq, int len);

/* The members' matrices and bytes, summed, into info (the sizes are engine.c's to fill). */
void ensemble_engine_info(const ensemble_engine *x, alloy_engine_info *info);

#endif /* ALLOY_INFER_INTERNAL_H */
