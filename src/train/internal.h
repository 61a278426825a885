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
/* Reads the options an alignment run saved: DIR is a checkpoint folder or a run folder (its
 * latest checkpoint, whose path goes to *ckpt); the "options" object of its trainer_state.json,
 * which must name an "objective", goes to parse(opts, options, path). A run folder continues
 * where it is now: DIR is copied into out_dir (out_dir_size bytes). Shared by sft/reward/dpo and
 * ppo. On failure *ckpt is NULL. */
typedef alloy_status (*alloy_options_parser)(void *opts, const struct cJSON *options, const char *what);
alloy_status alloy_align_resume_state(const char *dir, char **ckpt, alloy_options_parser parse, void *opts, char *out_dir,
                                      size_t out_dir_size);

alloy_status alloy_train_save_checkpoint(const char *run_dir, int64_t step, const alloy_model *model,
                                         const alloy_optimizer *opt, const struct cJSON *state, int keep,
                                         const char *tokenizer_json, size_t tokenizer_len,
                                         const alloy_checkpoint_writer *writer);

#endif
