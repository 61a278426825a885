/*
 * align_internal.h — what the files of the alignment run (align_run.c, align_setup.c) share.
 */
#ifndef ALLOY_ALIGN_INTERNAL_H
#define ALLOY_ALIGN_INTERNAL_H

#include "alloy/align.h"

/* One SFT, reward or DPO run: its data, models and position. */
typedef struct align_run {
    alloy_align_options opt;   /* the options with every default resolved (what is saved) */
    alloy_tokenizer *tok;
    char *tok_json;            /* tokenizer.json copied into every checkpoint; NULL: the byte tokenizer */
    size_t tok_len;
    alloy_align_data data;     /* the training file */
    alloy_align_data vdata;    /* the held-out file, if one was given */
    const alloy_align_data *vd;/* where the held-out examples are: &data or &vdata */
    int64_t *train_idx, n_train; /* examples of data trained on */
    int64_t *val_idx, n_val;   /* examples of *vd held out */
    int64_t *perm;             /* (n_train) this epoch's order */
    int64_t epoch, cursor;     /* position: epoch and the next example of perm */
    alloy_model *model;        /* sft, dpo: the policy; reward: rm->model */
    alloy_reward_model *rm;    /* reward */
    double *ref, *vref;        /* dpo: the reference's log-probability of every sequence of data / vdata */
    double *ref_rows;          /* (rows) the batch's */
    alloy_align_batch batch;
    int64_t *ex_buf;           /* (batch) the examples of a micro-batch */
    alloy_rng rng;             /* for objectives that sample; seeded, saved and restored by the run */
    alloy_align_stats st;      /* this step's figures */
    alloy_align_stats last_val;/* the last evaluation's */
    bool resumed;
    int added;                 /* tokens the chat template added to the tokenizer */
} align_run;

/* align_setup.c: the model's folder, template, tokenizer and data, the held-out split, DPO's
 * reference log-probabilities, the model to train (a reward model for REWARD); epoch 0's order. */
alloy_status align_setup(align_run *r, const char *resume);
/* Draws epoch r->epoch's order of the training examples from (seed, epoch). */
void align_shuffle(align_run *r);
/* Frees what align_setup made (on failure too). */
void align_free(align_run *r);

#endif
