/*
 * alloy/distill.h — knowledge distillation: a student trained on token shards to match a
 * teacher, or an ensemble of teachers, through the training loop of alloy/train.h.
 *
 * Per token the loss is α·CE(student, next token) + (1 − α)·τ²·D(teacher ‖ student) on
 * distributions softened by the temperature τ, with D the forward KL, the reverse KL or the
 * generalised JSD (distill_forward_backward in alloy/kernels.h). Several teachers are one
 * ensemble: the mixture of their probabilities (with fixed equal weights, or per token from a
 * learned combiner, alloy/ensemble.h), then softened by τ.
 *
 * Optionally the loss adds hidden-state matching, w_h · (1/N) Σₜ ‖P·h_s(t) − h_t(t)‖², over the
 * N tokens of a batch, with h_s the student's and h_t the first teacher's final hidden states
 * (after the final norm) and P a (C_teacher, C_student) projection trained with the student
 * (identity at the start when the widths match, else N(0, 0.02²) from the run's seed). P has
 * its own AdamW state (the run's betas, eps and learning rate schedule; no weight decay; its
 * gradient clipped to the run's --grad-clip on its own) and is saved in every checkpoint as
 * distill_projection.safetensors, so a resumed run continues exactly.
 *
 *     alloy_train_options o = alloy_train_defaults();   // data, out, student (preset/init), ...
 *     alloy_distill_options d = alloy_distill_defaults();
 *     strcpy(d.teachers[0], "runs/demo/run"); d.n_teachers = 1;   // a run folder: its latest checkpoint
 *     alloy_distill_run(&o, &d, NULL, &val);
 */
#ifndef ALLOY_DISTILL_H
#define ALLOY_DISTILL_H

#include "alloy/kernels.h"
#include "alloy/train.h"

ALLOY_BEGIN_DECLS

#define ALLOY_MAX_TEACHERS 8

typedef struct alloy_distill_options {
    char teachers[ALLOY_MAX_TEACHERS][ALLOY_PATH_MAX]; /* checkpoint folders (or run folders) */
    int n_teachers;
    alloy_divergence divergence; /* default forward KL */
    float temperature;           /* τ > 0, default 2 */
    float alpha;                 /* weight of the hard-label loss in [0, 1], default 0.5 */
    float beta;                  /* JSD's β in (0, 1), default 0.5 */
    char combiner[ALLOY_PATH_MAX]; /* a learned combiner over the teachers (alloy ensemble
                                      train), "" for the equal-weight mixture */
    float hidden_weight;         /* w_h >= 0 of the hidden-state matching term; 0 (default): off */
} alloy_distill_options;

alloy_distill_options alloy_distill_defaults(void);
/* "forward_kl", "reverse_kl", "jsd". */
const char *alloy_divergence_name(alloy_divergence d);
alloy_status alloy_divergence_parse(const char *name, alloy_divergence *out);

/* The settings as the JSON text alloy_train_options.objective_json holds, and back (FORMAT
 * naming `what` for a bad field). */
alloy_status alloy_distill_to_json(const alloy_distill_options *d, char *out, size_t size);
alloy_status alloy_distill_from_json(alloy_distill_options *d, const char *json, const char *what);

/* The hidden-state matching term for N rows: *loss = weight · (1/N) Σ_r ‖P·hs_r − ht_r‖² with
 * hs (N, Cs), ht (N, Ct), proj P (Ct, Cs) row-major. dhs (N, Cs), if not NULL, is WRITTEN with
 * grad_scale · dloss/dhs; dproj (Ct, Cs), if not NULL, ACCUMULATES grad_scale · dloss/dP. err
 * (N, Ct) is scratch. */
void alloy_distill_hidden_loss(float *loss, float *dhs, float *dproj, float *err, const float *hs, const float *ht,
                               const float *proj, int64_t N, int Cs, int Ct, float weight, float grad_scale);

/* Trains o's student (preset, config or init) with the teachers as alloy_train_run trains with
 * cross-entropy — checkpoints, metrics, exact resume (resume_ckpt as alloy_train_run takes it).
 * The teachers must share the student's vocabulary and tokenizer; they are loaded for o->batch
 * x o->seq tokens and stay frozen. The held-out figures are the student's plain LM loss. */
alloy_status alloy_distill_run(const alloy_train_options *o, const alloy_distill_options *d, const char *resume_ckpt,
                               float *final_val_loss);

ALLOY_END_DECLS
#endif /* ALLOY_DISTILL_H */
