/*
 * alloy/ensemble.h — inference-time ensembles of models that share a tokenizer.
 *
 * The members' next-token distributions are combined per position, either as a weighted
 * mixture of probabilities, p(y) = Σ wᵢ·pᵢ(y), or as a weighted sum of logits before one
 * softmax (a product of experts), p(y) ∝ exp(Σ wᵢ·zᵢ(y)). Weights are normalised to sum to 1.
 *
 *     alloy_model *a, *b;  // alloy_model_load(&a, "runs/a/checkpoints/step-00001000", 1, 256) ...
 *     alloy_model *ms[] = {a, b};
 *     float w[] = {0.5f, 0.5f};
 *     alloy_ensemble *e;
 *     alloy_ensemble_create(&e, ms, w, 2, ALLOY_ENSEMBLE_PROBS);
 *     alloy_ensemble_logprobs(e, tokens, 1, T, logp);   // logp: (T, V) log-probabilities
 *     alloy_ensemble_destroy(e);                // the models stay the caller's
 *
 *     alloy_combiner *c;                        // a learned gate over the same members
 *     alloy_combiner_create(&c, ms, NULL, 2);   // or alloy_combiner_load(&c, "comb")
 *     alloy_combiner_train(c, ms, 2, data, &opts, NULL, &report); // a run in opts.out_dir
 *     alloy_combiner_save(c, "comb");
 *     alloy_ensemble_create_learned(&e, ms, 2, c);
 */
#ifndef ALLOY_ENSEMBLE_H
#define ALLOY_ENSEMBLE_H

#include "alloy/base.h"
#include "alloy/data.h"
#include "alloy/model.h"
#include "alloy/train.h"

ALLOY_BEGIN_DECLS

/* The modes (alloy_ensemble_mode) are in alloy/kernels.h, beside the mixing kernels. */

/* The most members an ensemble with a learned combiner may have. */
#define ALLOY_COMBINER_MAX ALLOY_ENSEMBLE_MAX_MEMBERS

/* A learned gate over an ensemble's members, saved as a folder:
 *   combiner.safetensors  "gate.weight" F32 (N, D) and "gate.bias" F32 (N), D = Σ Cᵢ
 *   combiner.json         {"format": "alloy-combiner", "version": 1, "vocab_size": V,
 *                          "members": [{"path", "fingerprint" (16 hex digits), "d_model",
 *                          "family", "n_layer"}, …], "training": {…what made it…}}
 * Loading checks every size against the JSON; using it checks the members against it. */
typedef struct alloy_combiner {
    int n;                                  /* N members */
    int width[ALLOY_COMBINER_MAX];          /* Cᵢ: member i's d_model */
    int offset[ALLOY_COMBINER_MAX];         /* Σ_{j<i} Cⱼ: member i's columns of weight */
    int D;                                  /* Σ Cᵢ */
    int vocab_size;                         /* the members' common V */
    uint64_t fingerprint[ALLOY_COMBINER_MAX]; /* alloy_ensemble_fingerprint of each member */
    char *path[ALLOY_COMBINER_MAX];         /* where each member was loaded from (information) */
    float *weight;                          /* (N, D) gate weights W, then the biases: one block */
    float *bias;                            /* (N) gate biases b (= weight + N·D) */
    char *training_json;                    /* the "training" object as JSON text, or NULL */
} alloy_combiner;

/* How alloy_combiner_train runs: an objective of the one run (alloy/train.h). */
typedef struct alloy_combiner_train_options {
    char out_dir[ALLOY_PATH_MAX]; /* the run folder: checkpoints (combiner.safetensors, combiner.json,
                                     optimizer.safetensors), latest, metrics.jsonl */
    int64_t steps;        /* AdamW steps (default 200) */
    int batch, seq;       /* windows per step B and tokens per window T (default 8 x 128) */
    double lr;            /* peak learning rate (default 1e-2); warm-up steps/10, cosine to lr/10 */
    float weight_decay;   /* on W, not b (default 0) */
    uint64_t seed;        /* data order (default 1337); W and b start at 0: the uniform mixture */
    int64_t eval_windows; /* held-out windows scored at the end (default 0: all of the val split) */
    int64_t ckpt_every;   /* steps between checkpoints (default 0: at the end, and on a stop) */
    int keep_ckpts;       /* checkpoints kept (default 3) */
    bool quiet;           /* no progress line on stderr */
    int log_every;        /* progress every n steps when stderr is not a terminal (default 10) */
    alloy_resume_mode resume_mode; /* resuming from a checkpoint older than the run's newest */
    volatile int *stop;   /* set to stop after the current step, with a checkpoint */
} alloy_combiner_train_options;

/* Held-out losses (nats per token) after training: each member alone, the uniform mixture
 * (equal fixed weights), and the learned gate. */
typedef struct alloy_combiner_report {
    double member_loss[ALLOY_COMBINER_MAX];
    double uniform_loss;
    double learned_loss;
    double train_loss;    /* the mean of the last step's batch */
    int64_t tokens;       /* held-out tokens scored */
} alloy_combiner_report;

typedef struct alloy_ensemble {
    alloy_model **models;     /* (n) borrowed */
    double *weights;          /* (n) normalised to sum to 1 */
    int n;
    alloy_ensemble_mode mode;
    int vocab_size;           /* V, the members' common vocabulary */
    const alloy_combiner *combiner; /* LEARNED: the gate (borrowed); else NULL */
} alloy_ensemble;

/* Checks that the members (1 to ALLOY_ENSEMBLE_MAX_MEMBERS) agree (family need not; vocabulary
 * size and tokenizer name must), that weights are finite, >= 0 and not all 0 (NULL: equal
 * weights). */
alloy_status alloy_ensemble_create(alloy_ensemble **out, alloy_model *const *models, const float *weights, int n,
                                   alloy_ensemble_mode mode);
void alloy_ensemble_destroy(alloy_ensemble *e);
/* "probs", "logits", "learned" (which needs alloy_ensemble_create_learned). */
alloy_status alloy_ensemble_mode_parse(const char *name, alloy_ensemble_mode *out);

/* A learned ensemble: the members (in the combiner's order) must be the ones it was trained
 * over — same vocabulary, widths and fingerprints (MISMATCH naming the member otherwise). The
 * combiner stays the caller's and must outlive the ensemble. */
alloy_status alloy_ensemble_create_learned(alloy_ensemble **out, alloy_model *const *models, int n,
                                           const alloy_combiner *c);

/* logp (B·T, V) = the ensemble's log-probabilities of the next token at every position of
 * tokens (B, T); B·T must fit every member's buffers. */
alloy_status alloy_ensemble_logprobs(alloy_ensemble *e, const int32_t *tokens, int B, int T, float *logp);

/* The ensemble as a next-token log-probability source (alloy/eval.h) of one output: up to B
 * windows of T tokens per call, the members' training forward (B x T must fit every member's
 * buffers: USAGE naming the member otherwise) and the mixing of alloy_ensemble_logprobs. The
 * ensemble stays the caller's and must outlive the source. */
alloy_status alloy_ensemble_logprob_source(alloy_logprob_source *src, alloy_ensemble *e, int B, int T);
/* As alloy_eval_lm, for the ensemble: alloy_eval_source over alloy_ensemble_logprob_source, the
 * mean of −log p(target) over every window of the split (or the first max_windows). */
alloy_status alloy_ensemble_eval(alloy_ensemble *e, const alloy_dataset *ds, alloy_split split, int B, int T,
                                 int64_t max_windows, alloy_eval_result *out);

/* ---- the learned combiner (src/fuse/combiner.c) ---- */

/* A 64-bit fingerprint of a model: FNV-1a over its config's sizes and its parameter arena. */
uint64_t alloy_ensemble_fingerprint(const alloy_model *m);

/* A new combiner over these members with W = 0, b = 0 (the uniform mixture); paths (may be
 * NULL) are recorded in its JSON. MISMATCH when the vocabularies or tokenizers differ; USAGE
 * for n outside [2, ALLOY_COMBINER_MAX]. */
alloy_status alloy_combiner_create(alloy_combiner **out, alloy_model *const *models, const char *const *paths, int n);
void alloy_combiner_destroy(alloy_combiner *c);
/* OK when models are the members c was made for (count, vocabulary, widths, fingerprints);
 * else MISMATCH with a one-line message naming the member. */
alloy_status alloy_combiner_check(const alloy_combiner *c, alloy_model *const *models, int n);
/* Writes dir/combiner.safetensors and dir/combiner.json (creating dir), each atomically. */
alloy_status alloy_combiner_save(const alloy_combiner *c, const char *dir);
/* Reads a combiner folder (or a combiner training run's latest checkpoint), checking the format,
 * every size and that the tensors are finite. */
alloy_status alloy_combiner_load(alloy_combiner **out, const char *dir);

/* gates (N, n) = softmax over members of W·[h₁; …; hₙ] + b for N rows; hidden[i] is member
 * i's (N, Cᵢ) final hidden states. */
void alloy_combiner_gate_forward(float *gates, const alloy_combiner *c, const float *const *hidden, int64_t N);
/* The mixture's next-token loss and its gradient for N rows: member_logp (n, N) holds
 * log pᵢ(yₜ) of each member at each row's target; *loss = mean over rows of −log Σᵢ gᵢ·pᵢ(y).
 * dweight (n, D) and dbias (n), if not NULL, ACCUMULATE grad_scale · the gradient of
 * that mean (per row dL/dzᵢ = gᵢ − gᵢ·pᵢ(y)/p(y), zᵢ the gate logits). gates (N, n) is scratch (the gates on return). */
void alloy_combiner_loss_backward(float *loss, float *dweight, float *dbias, float *gates, const alloy_combiner *c,
                            const float *const *hidden, const float *member_logp, int64_t N, float grad_scale);

alloy_combiner_train_options alloy_combiner_train_defaults(void);
/* Trains c's gate on the train split of ds with the members frozen (forward only) as an
 * objective of the one run in o->out_dir (from scratch when resume is NULL, else from that
 * checkpoint folder of the run), then scores the val split (report may be NULL) and records both
 * in c->training_json, which the run's last checkpoint holds. Deterministic for a seed and thread
 * count. The members must have room for o->batch x o->seq tokens. */
alloy_status alloy_combiner_train(alloy_combiner *c, alloy_model *const *models, int n, const alloy_dataset *ds,
                                  const alloy_combiner_train_options *o, const char *resume, alloy_combiner_report *report);

ALLOY_END_DECLS
#endif /* ALLOY_ENSEMBLE_H */
