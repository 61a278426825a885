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

/* Reads the options an alignment run saved: DIR is a checkpoint folder or a run folder (its
 * latest checkpoint, whose path goes to *ckpt); the "options" object of its trainer_state.json,
 * which must name an "objective", goes to parse(opts, options, path). A run folder continues
 * where it is now: DIR is copied into out_dir (out_dir_size bytes). Shared by sft/reward/dpo and
 * ppo. On failure *ckpt is NULL. */
typedef alloy_status (*alloy_options_parser)(void *opts, const struct cJSON *options, const char *what);
alloy_status alloy_align_resume_state(const char *dir, char **ckpt, alloy_options_parser parse, void *opts, char *out_dir,
                                      size_t out_dir_size);

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

/* n in a short form for progress lines: 124.44M, 3.2k, 17. */
void alloy_format_count(double n, char *buf, size_t size);

#endif
