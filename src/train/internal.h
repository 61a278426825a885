/*
 * internal.h — what the files of src/train/ share and nothing outside uses.
 */
#ifndef ALLOY_TRAIN_INTERNAL_H
#define ALLOY_TRAIN_INTERNAL_H

#include "alloy/align.h"
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


/* moe_metrics.c: an MoE model's routing over one step, for the metrics: the load-balancing loss
 * (mean over the micro-batches) and the (token, k) assignments per layer and expert (summed). */
typedef struct moe_step {
    double aux;
    int64_t *counts; /* (L, E) */
} moe_step;
void moe_step_add(moe_step *ms, const alloy_model *m, int grad_accum);
/* Writes ,"aux_loss":..,"expert_tokens":[per expert],"expert_tokens_per_layer":[[..],..] into buf. */
void moe_step_print(char *buf, size_t size, const moe_step *ms, const alloy_model *m);

/* align_options.c, for the alignment run: USAGE naming the option that is out of range. */
alloy_status align_check_options(const alloy_align_options *o);

/* The LM objective of one run (lm.c, lm_state.c). */
typedef struct lm_obj {
    const alloy_train_options *opt;
    alloy_dataset *ds;
    alloy_model *model;
    alloy_loader *train, *val;
    alloy_rng rng;        /* for losses that sample; saved and restored by the run */
    char *init;           /* --init resolved to its checkpoint folder (NULL: none) */
    char *tokenizer_json; /* the data's tokenizer.json, copied into every checkpoint; NULL if none */
    size_t tokenizer_len;
    double loss;          /* this step's mean loss */
    float val_loss;       /* the last evaluation's */
    int64_t val_windows;  /* the windows it covered: the first ones of the held-out split */
    double all_loss;      /* the whole held-out split's (alloy_eval_lm), at the end; < 0: not scored */
    moe_step ms;          /* this step's routing (MoE models) */
} lm_obj;

/* lm_state.c: the LM objective's checkpoint hooks (alloy_objective's save, load, state_save,
 * state_load), ctx an lm_obj. */
alloy_status lm_save(void *ctx, const char *dir);
alloy_status lm_load(void *ctx, const char *dir);
alloy_status lm_state_save(void *ctx, struct cJSON *j);
alloy_status lm_state_load(void *ctx, const struct cJSON *j, const char *what);

/* lm_options.c, for lm.c: the LM objective's option checks, derived defaults (min_lr, warmup),
 * the model's config (resumed, --init, a config file or a preset sized to the data), and the
 * check that data and model read text alike (the data's tokenizer.json goes to *json). */
alloy_status lm_check_options(const alloy_train_options *o);
void lm_derive_defaults(alloy_train_options *o);
alloy_status lm_choose_config(const alloy_train_options *o, const char *resume, const char *init, uint32_t data_vocab,
                              alloy_config *cfg);
alloy_status lm_check_tokenizer(const alloy_train_options *o, const alloy_model *m, const char *model_dir, char **json,
                                size_t *len);

#endif
