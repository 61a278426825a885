/*
 * alloy/moe.h — a mixture of experts from dense models (Branch-Train-MiX, Sukhbaatar et al.
 * 2024): dense models branched from one seed model and trained apart become the experts of one
 * MoE model, to be fine-tuned (the router alone, or all of it) with alloy train --init.
 *
 *   - layer l's expert e is expert model e's MLP of layer l, copied bit for bit (GPT-2: c_fc,
 *     c_proj with biases; Llama: gate_proj -> w1, up_proj -> w3, down_proj -> w2);
 *   - everything else (embeddings, positions, attention, norms, final norm, head) is the mean
 *     of the expert models' tensors, or a copy of the base model's when one is given;
 *   - each layer's router (E, C) is either drawn N(0, 0.02²) from a seed (per tensor, as
 *     alloy_model_init_weights), or set from hidden states as mergekit-moe's "hidden" gate mode:
 *     a reference model — the base when given, else the dense mean of the experts (every
 *     tensor averaged) — runs each expert's prompts; row e of layer l's router is the mean of
 *     that layer's ln2 output (the router's input) over all tokens of expert e's prompts, minus
 *     the mean of those E rows (so that what all prompts share does not swamp what sets them
 *     apart; skipped when that leaves a row of zeros), scaled to unit length; or fitted as a
 *     classifier: layer by layer from the first, the finished MoE itself (its routers below
 *     layer l already fitted) runs every prompt, and layer l's router becomes the softmax
 *     classifier W (E, C) that tells from a token's ln2 output which expert's prompt it came
 *     from, minimising Σ_i w_i·(−log softmax(W x_i)_{y_i}) + (router_l2/2)·‖W‖² with
 *     w_i = 1/(E·the tokens of class y_i) (each expert's prompts weigh the same). Its gates are
 *     then the classifier's posterior: confident where the domain is clear.
 * Experts and base must be dense models of one family with equal shapes (and, for the caller
 * to check, one tokenizer). The result is an ordinary alloy_model with config.n_experts = E:
 * save it with alloy_model_save (Llama: the Mixtral layout of transformers).
 *
 *     alloy_model *ex[2], *moe;                         // loaded with alloy_model_load
 *     alloy_moe_options o = alloy_moe_defaults();       // top-2, random router, seed 1337
 *     if (alloy_moe_build(&moe, ex, 2, NULL, &o)) fprintf(stderr, "%s\n", alloy_last_error());
 *     alloy_model_save(moe, "runs/moe");              // then: alloy train --init runs/moe ...
 */
#ifndef ALLOY_MOE_H
#define ALLOY_MOE_H

#include "alloy/base.h"
#include "alloy/model.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

typedef enum alloy_moe_router {
    ALLOY_MOE_ROUTER_RANDOM = 0, /* N(0, 0.02²) from the seed */
    ALLOY_MOE_ROUTER_HIDDEN,     /* from the mean hidden states of each expert's prompts */
    ALLOY_MOE_ROUTER_CLASSIFIER, /* a softmax classifier of the prompts' hidden states */
} alloy_moe_router;

/* One prompt of the hidden router: token ids for expert `expert`. */
typedef struct alloy_moe_prompt {
    int expert;            /* 0 .. E-1 */
    const int32_t *tokens; /* (n) ids below the vocabulary size; cut to the context if longer */
    int n;                 /* >= 1 */
} alloy_moe_prompt;

typedef struct alloy_moe_options {
    int top_k;                       /* K: experts per token, 1 <= K <= E (default 2) */
    alloy_moe_router router;         /* default random */
    uint64_t seed;                   /* the random router's draws and the sampled prompts (1337) */
    double aux_loss_coef;            /* router_aux_loss_coef of the result (Mixtral's 0.001) */
    double router_l2;                /* classifier: the L2 weight (default 1e-3) */
    bool verbose;                    /* classifier: one line per layer's fit on stderr */
    const alloy_moe_prompt *prompts; /* hidden: each expert's prompts; NULL: sampled (below) */
    int n_prompts;
    int32_t sample_start;            /* hidden without prompts: each expert model samples
                                        ALLOY_MOE_SAMPLED_PROMPTS texts of ALLOY_MOE_SAMPLED_TOKENS
                                        tokens (temperature 1, from the seed), each starting with
                                        this token, as its own prompts: what the expert writes
                                        unprompted shows its domain (default 0) */
} alloy_moe_options;

#define ALLOY_MOE_SAMPLED_PROMPTS 4
#define ALLOY_MOE_SAMPLED_TOKENS 32

alloy_moe_options alloy_moe_defaults(void);
const char *alloy_moe_router_name(alloy_moe_router r); /* "random", "hidden", "classifier" */
alloy_status alloy_moe_router_parse(const char *name, alloy_moe_router *out);

/* Builds the MoE of n_experts (2 .. ALLOY_MAX_EXPERTS) dense models as above; base may be NULL.
 * The experts (and base) run forward passes in hidden mode (their activations change; their
 * weights do not) and need activations for one sequence of the prompts' length (the CLI
 * loads them for 1 x max_seq_len). *out gets a model with activations for 1 x 1 tokens (for
 * saving; alloy_model_load it again to run it). Fails with USAGE naming --experts, --base,
 * --top-k or --prompts for too few experts, K outside [1, E], an MoE or differently shaped
 * model (the message names the first field that differs), a prompt for an expert out of range,
 * an empty prompt, a token outside the vocabulary, or an expert without prompts. */
alloy_status alloy_moe_build(alloy_model **out, alloy_model *const *experts, int n_experts, alloy_model *base,
                             const alloy_moe_options *opt);

/* The classifier router's objective J(W) above, for N tokens X (N, C) of classes y (N) in
 * [0, E): *value = J, grad (E, C; may be NULL) = ∇J. */
alloy_status alloy_moe_router_objective(const float *W, const float *X, const int32_t *y, int64_t N, int C, int E,
                                        double l2, double *value, float *grad);

typedef struct alloy_moe_fit_report {
    int iterations;        /* taken (max_iter when the tolerance was not met) */
    double objective;      /* J at the result */
    double grad_norm;      /* ‖∇J‖ at the result (the last look-ahead point when converged) */
    double grad_norm0;     /* ‖∇J(0)‖ */
    double accuracy;       /* share of tokens whose largest logit is their class */
} alloy_moe_fit_report;

/* Minimises J from W = 0 (J is strongly convex: one minimum, with Σ_e W_e = 0) by Nesterov's
 * accelerated gradient with restarts, until ‖∇J‖ <= tol·‖∇J(0)‖ or max_iter steps; W (E, C)
 * gets the result, report (may be NULL) how it went. USAGE for N < 1, E < 2, l2 <= 0 or a
 * class without tokens. */
alloy_status alloy_moe_fit_router(float *W, const float *X, const int32_t *y, int64_t N, int C, int E, double l2,
                                  int max_iter, double tol, alloy_moe_fit_report *report);

/* ---- the hidden router's prompts file (src/fuse/moe_prompts.c) ---- */

/* Prompts read from a file, with their tokens' storage. */
typedef struct alloy_moe_prompt_set {
    alloy_moe_prompt *v; /* (n) for alloy_moe_options.prompts */
    alloy_ids *ids;      /* their tokens */
    int n;
} alloy_moe_prompt_set;

/* Reads path: one prompt per line, EXPERT<TAB>TEXT with EXPERT in [0, n_experts), TEXT encoded
 * with tok; blank lines and lines that start with # are skipped. USAGE naming the line for a
 * bad one, or for a file without prompts (*p is empty then). Free with alloy_moe_prompts_free. */
alloy_status alloy_moe_prompts_read(alloy_moe_prompt_set *p, const char *path, const alloy_tokenizer *tok, int n_experts);
void alloy_moe_prompts_free(alloy_moe_prompt_set *p);

ALLOY_END_DECLS
#endif /* ALLOY_MOE_H */
