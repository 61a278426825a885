/*
 * alloy/distill.h — knowledge distillation: a student trained on token shards to match a
 * teacher, or an ensemble of teachers, through the training loop of alloy/train.h.
 *
 * Per token the loss is α·CE(student, next token) + (1 − α)·τ²·D(teacher ‖ student) on
 * distributions softened by the temperature τ, with D the forward KL, the reverse KL or the
 * generalised JSD (distill_forward_backward in alloy/kernels.h). Several teachers are one
 * ensemble: the mixture of their probabilities, then softened by τ.
 *
 *     alloy_train_options o = alloy_train_defaults();   // data, out, student (preset/init), ...
 *     alloy_distill_options d = alloy_distill_defaults();
 *     strcpy(d.teachers[0], "runs/big/final"); d.n_teachers = 1;
 *     alloy_distill_run(&o, &d, NULL, &val);
 */
#ifndef ALLOY_DISTILL_H
#define ALLOY_DISTILL_H

#include "alloy/kernels.h"
#include "alloy/train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ALLOY_MAX_TEACHERS 8

typedef struct alloy_distill_options {
    char teachers[ALLOY_MAX_TEACHERS][ALLOY_PATH_MAX]; /* checkpoint folders (or run folders) */
    int n_teachers;
    alloy_divergence divergence; /* default forward KL */
    float temperature;           /* τ > 0, default 2 */
    float alpha;                 /* weight of the hard-label loss in [0, 1], default 0.5 */
    float beta;                  /* JSD's β in (0, 1), default 0.5 */
} alloy_distill_options;

alloy_distill_options alloy_distill_defaults(void);
/* "forward_kl", "reverse_kl", "jsd". */
const char *alloy_divergence_name(alloy_divergence d);
bool alloy_divergence_parse(const char *name, alloy_divergence *out);

/* The settings as the JSON text alloy_train_options.objective_json holds, and back (FORMAT
 * naming `what` for a bad field). */
alloy_status alloy_distill_to_json(const alloy_distill_options *d, char *out, size_t size);
alloy_status alloy_distill_from_json(alloy_distill_options *d, const char *json, const char *what);

/* Trains o's student (preset, config or init) with the teachers as alloy_train_run trains with
 * cross-entropy — checkpoints, metrics, exact resume (resume_ckpt as alloy_train_run takes it).
 * The teachers must share the student's vocabulary and tokenizer; they are loaded for o->batch
 * x o->seq tokens and stay frozen. The held-out figures are the student's plain LM loss. */
alloy_status alloy_distill_run(const alloy_train_options *o, const alloy_distill_options *d, const char *resume_ckpt,
                               float *final_val_loss);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_DISTILL_H */
