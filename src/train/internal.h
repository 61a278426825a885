/*
 * internal.h — what the files of src/train/ share and nothing outside uses.
 */
#ifndef ALLOY_TRAIN_INTERNAL_H
#define ALLOY_TRAIN_INTERNAL_H

#include "alloy/train.h"

struct cJSON;

/* Writes a checkpoint's model files into a folder, in place of alloy_model_save (a reward
 * model's score head, a chat template, a second optimiser's state go in the same folder). */
typedef struct alloy_checkpoint_writer {
    alloy_status (*write)(void *ctx, const char *dir);
    void *ctx;
} alloy_checkpoint_writer;


/* Writes the checkpoint of `step` into run_dir/checkpoints (temporary folder, rename), points
 * run_dir/latest at it and keeps the newest `keep` checkpoints. tokenizer_json (may be NULL) is
 * written as the checkpoint's tokenizer.json. writer (may be NULL: alloy_model_save) writes
 * the model's files. */
alloy_status alloy_train_save_checkpoint(const char *run_dir, int64_t step, const alloy_model *model,
                                         const alloy_optimizer *opt, const struct cJSON *state, int keep,
                                         const char *tokenizer_json, size_t tokenizer_len,
                                         const alloy_checkpoint_writer *writer);

/* On resume: keeps the lines of a run's metrics.jsonl whose "step" is at most `step` (a killed
 * run may have logged steps past its last checkpoint, and those will be run again), through a
 * temporary file; an absent file becomes an empty one. */
alloy_status alloy_train_trim_metrics(const char *path, int64_t step);


#endif
