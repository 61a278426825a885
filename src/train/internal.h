/*
 * internal.h — what the files of src/train/ share and nothing outside uses.
 */
#ifndef ALLOY_TRAIN_INTERNAL_H
#define ALLOY_TRAIN_INTERNAL_H

#include "alloy/train.h"

struct cJSON;

/* Writes the checkpoint of `step` into run_dir/checkpoints (temporary folder, rename), points
 * run_dir/latest at it and keeps the newest `keep` checkpoints. tokenizer_json (may be NULL) is
 * written as the checkpoint's tokenizer.json. */
alloy_status alloy_train_save_checkpoint(const char *run_dir, int64_t step, const alloy_model *model,
                                         const alloy_optimizer *opt, const struct cJSON *state, int keep,
                                         const char *tokenizer_json, size_t tokenizer_len);

#endif
