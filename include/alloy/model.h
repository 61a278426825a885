/*
 * alloy/model.h — the decoder-only transformer: config, parameter table, forward, backward.
 *
 * Two families share one implementation:
 *   GPT-2: LayerNorm with bias, learned positions, GELU (tanh), biases, tied embeddings,
 *          Conv1D weights stored (in, out) as in Hugging Face's GPT2LMHeadModel;
 *   Llama: RMSNorm, rotary positions, SwiGLU, grouped-query attention (n_kv_head <= n_head),
 *          no biases, untied head, Linear weights stored (out, in) as in LlamaForCausalLM.
 * All parameters live in one arena (params_memory) described by a table of named tensors in
 * the Hugging Face naming; gradients mirror the arena. Activations are sized once at init for
 * a maximum batch and sequence length.
 *
 *     alloy_config cfg;
 *     alloy_config_preset(&cfg, "tiny-llama", 256);
 *     alloy_model *m;
 *     alloy_model_create(&m, &cfg, 8, 128);          // room for B=8, T=128
 *     alloy_model_init_weights(m, 1337);
 *     alloy_model_forward(m, tokens, 8, 128);         // alloy_model_logits(m): (8, 128, V)
 *     float loss, *dlogits = alloy_model_logits(m);   // the gradient overwrites the logits
 *     alloy_lm_loss(m, targets, NULL, 8, 128, 1.0f, dlogits, &loss);
 *     alloy_model_zero_grad(m);
 *     alloy_model_backward(m, &(alloy_backward_in){.dlogits = dlogits, .aux_scale = 1.0f});
 *                                                      // into m->grads_memory
 *     alloy_model_destroy(m);
 */
#ifndef ALLOY_MODEL_H
#define ALLOY_MODEL_H

#include "alloy/base.h"
#include "alloy/kernels.h"

ALLOY_BEGIN_DECLS

struct cJSON;

typedef enum alloy_family {
    ALLOY_FAMILY_GPT2 = 0,
    ALLOY_FAMILY_LLAMA = 1,
} alloy_family;

/* The most experts an MoE layer may have (num_local_experts). */
#define ALLOY_MAX_EXPERTS 256

/* What is saved in config.json (as Hugging Face's GPT2Config / LlamaConfig keys). */
typedef struct alloy_config {
    alloy_family family;
    int vocab_size;     /* V */
    int max_seq_len;    /* maximum T: n_positions / max_position_embeddings */
    int n_layer;        /* L */
    int n_head;         /* H */
    int n_kv_head;      /* KV: H for GPT-2; divides H for Llama */
    int d_model;        /* C = H · head_dim */
    int d_ff;           /* F: MLP hidden width (4C for GPT-2 by default) */
    double norm_eps;    /* LayerNorm / RMSNorm epsilon */
    double rope_theta;  /* Llama only */
    bool tie_embeddings;/* lm_head shares wte (always for GPT-2) */
    char tokenizer[32]; /* the tokenizer the model was trained with ("bytes"), "" if unknown;
                           saved as "alloy_tokenizer" */
    /* mixture of experts (Hugging Face MixtralConfig keys; a Llama-family MoE is saved as
       model_type "mixtral"): */
    int n_experts;      /* E: num_local_experts; 0 = dense MLPs */
    int top_k;          /* K: num_experts_per_tok, 1 <= K <= E (0 when dense) */
    double router_aux_loss_coef; /* weight of the load-balancing loss in the backward (0: off) */
} alloy_config;

/* Fills cfg from a named preset; vocab_size is set to `vocab_size`. Presets: tiny-gpt2,
 * tiny-llama, small-gpt2, small-llama, gpt2 (124M), gpt2-medium, llama-110m. Returns USAGE
 * with the list of names for an unknown one. */
alloy_status alloy_config_preset(alloy_config *cfg, const char *name, int vocab_size);
/* The preset names, NULL-terminated. */
const char *const *alloy_config_preset_names(void);
/* Checks sizes and their relations; the message names `what` (a file or flag). */
alloy_status alloy_config_validate(const alloy_config *cfg, const char *what);
/* Reads/writes a Hugging Face style config.json object. */
alloy_status alloy_config_from_json(alloy_config *cfg, const struct cJSON *json, const char *what);
struct cJSON *alloy_config_to_json(const alloy_config *cfg);
alloy_status alloy_config_load(alloy_config *cfg, const char *path);
alloy_status alloy_config_save(const alloy_config *cfg, const char *path);
static inline int alloy_config_head_dim(const alloy_config *cfg) { return cfg->d_model / cfg->n_head; }
const char *alloy_family_name(alloy_family family);

/* ---- the parameter table ---- */

#define ALLOY_MAX_NAME 96
#define ALLOY_MAX_DIMS 4

typedef struct alloy_tensor_info {
    char name[ALLOY_MAX_NAME];     /* Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight */
    int ndim;                      /* 1 or 2 */
    int64_t shape[ALLOY_MAX_DIMS]; /* as stored (and as in the Hugging Face checkpoint) */
    size_t offset;                 /* in floats from the start of the arena */
    size_t numel;                  /* product of shape */
    bool decay;                    /* AdamW weight decay applies (matrices and embeddings) */
} alloy_tensor_info;

/* Pointers into one arena (params, or grads with the same offsets). Shapes per family. */
/* One expert of an MoE layer: an MLP of the family (GPT-2: GELU; Llama: SwiGLU). Names:
 * GPT-2 transformer.h.N.mlp.experts.E.{c_fc,c_proj}.{weight,bias} (alloy's own layout);
 * Llama as Mixtral: model.layers.N.block_sparse_moe.experts.E.{w1,w3,w2}.weight. */
typedef struct alloy_expert_params {
    float *up_w, *up_b;     /* GPT-2 c_fc (C, F) + (F); Llama w1 (gate), w3 (up) stacked (2F, C) */
    float *down_w, *down_b; /* GPT-2 c_proj (F, C) + (C); Llama w2 (C, F) */
} alloy_expert_params;

typedef struct alloy_layer_params {
    float *ln1_w, *ln1_b;   /* (C); ln1_b NULL for Llama */
    float *qkv_w, *qkv_b;   /* GPT-2 c_attn (C, 3C) + (3C); Llama q,k,v_proj stacked ((H+2KV)·hd, C) */
    float *o_w, *o_b;       /* GPT-2 attn.c_proj (C, C) + (C); Llama o_proj (C, H·hd) */
    float *ln2_w, *ln2_b;   /* (C) */
    float *up_w, *up_b;     /* GPT-2 mlp.c_fc (C, F) + (F); Llama gate_proj,up_proj stacked (2F, C);
                               NULL in an MoE layer */
    float *down_w, *down_b; /* GPT-2 mlp.c_proj (F, C) + (C); Llama down_proj (C, F); NULL in MoE */
    float *router_w;        /* MoE: (E, C), stored (out, in) in both families: GPT-2
                               mlp.gate.weight, Llama block_sparse_moe.gate.weight; else NULL */
    alloy_expert_params *experts; /* MoE: (E); else NULL */
} alloy_layer_params;

typedef struct alloy_params {
    float *wte;                 /* (V, C) */
    float *wpe;                 /* (maxT, C), GPT-2 only */
    alloy_layer_params *layers; /* (L) */
    float *lnf_w, *lnf_b;       /* (C); lnf_b GPT-2 only */
    float *lm_head;             /* (V, C): wte when tied */
} alloy_params;

/* Rows of the LM head per chunk of alloy_lm_loss_chunked unless loss_chunk_rows says otherwise:
 * 256 rows of a 50k vocabulary are 51 MB of logits. */
#define ALLOY_LOSS_CHUNK_ROWS 256

/* How the model computes (not what it computes). */
typedef struct alloy_model_options {
    alloy_precision precision; /* matrix products: ALLOY_PRECISION_F32 (default) or ALLOY_PRECISION_BF16 (bf16
                          inputs, fp32 accumulation and fp32 master weights) */
    bool recompute;    /* keep only each layer's input and recompute the rest in the backward */
} alloy_model_options;

struct alloy_acts;      /* the activations (src/model/internal.h) */
struct alloy_grad_acts; /* the activations' gradient buffers (src/model/internal.h) */

typedef struct alloy_model {
    alloy_config config;
    alloy_model_options opts;
    alloy_tensor_info *tensors; /* the parameter table, in arena order */
    int n_tensors;
    size_t num_params;          /* floats in the arena */
    float *params_memory;       /* (num_params) */
    float *grads_memory;        /* (num_params), allocated with the model */
    alloy_params params;        /* pointers into params_memory */
    alloy_params grads;         /* the same pointers into grads_memory */
    int max_B, max_T;           /* activations are sized for these */
    int B, T;                   /* shape of the last forward; 0 before any */
    int loss_chunk_rows;        /* rows of the LM head per chunk of the chunked losses:
                                   ALLOY_LOSS_CHUNK_ROWS (what the chunk buffer holds) or fewer */
    /* The rest is the model's working memory, all allocated at creation and private to
       src/model: read the last forward's outputs through the accessors below. */
    struct alloy_acts *acts;
    struct alloy_grad_acts *gacts;
    float *acts_memory;         /* one allocation for acts and gacts */
    size_t acts_floats;
    float *loss_chunk;          /* (loss_chunk_cap, V) logits of one chunk of the chunked losses */
    int loss_chunk_cap;         /* min(ALLOY_LOSS_CHUNK_ROWS, max_B·max_T) */
    bool logits_touched;        /* a forward has written acts->logits (they count as in use) */
    float *rope_cos, *rope_sin; /* (maxT, hd/2), Llama only */
    int32_t *tokens;            /* (max_B·max_T) tokens of the last forward */
    int layer_in_buffers;       /* with recompute: the layer whose activations the shared buffers hold */
    int fc_act_layer;           /* the layer whose MLP activation output acts->fc_act holds */
    bool have_logits;           /* the last forward ran the LM head */
    /* mixture of experts (config.n_experts > 0), from the last forward: */
    alloy_expert_params *expert_params, *expert_grads; /* (L·E) what layers[l].experts point into */
    int32_t *route_memory;      /* the int32 routing buffers of acts (topk, slot_row, ...) */
    size_t route_ints;          /* its length */
    int64_t *expert_tokens;     /* (L, E) (token, k) assignments routed to each expert */
    int64_t *expert_tokens_total; /* (E) the same summed over the layers */
    double *router_prob_sum;    /* (L, E) Σ over the tokens of each expert's router probability */
    float aux_loss;             /* the load-balancing loss (see alloy_model_backward) */
} alloy_model;

/* Builds the table and allocates params, grads and activations for max_B x max_T tokens
 * (max_T ≤ cfg->max_seq_len). Weights are zero until init or load. */
alloy_status alloy_model_create(alloy_model **out, const alloy_config *cfg, int max_B, int max_T);
/* The same with options (NULL: the defaults). BF16 fails with USAGE on a CPU without
 * avx512_bf16. */
alloy_status alloy_model_create_ex(alloy_model **out, const alloy_config *cfg, int max_B, int max_T,
                                   const alloy_model_options *opts);
void alloy_model_destroy(alloy_model *m);
/* GPT-2-style initialisation from a seed: N(0, 0.02) weights, residual projections scaled by
 * 1/sqrt(2L), zero biases, unit norms. */
void alloy_model_init_weights(alloy_model *m, uint64_t seed);
/* The table entry with this name, or NULL. */
const alloy_tensor_info *alloy_model_find_tensor(const alloy_model *m, const char *name);

/* Runs the model on tokens (B, T) up to the final hidden states (alloy_model_hidden) and, if
 * `logits` is true, the LM head (alloy_model_logits). Fails with RANGE for a token outside
 * [0, V) and USAGE when B or T exceed what the model was created for. */
alloy_status alloy_model_forward_ex(alloy_model *m, const int32_t *tokens, int B, int T, bool logits);
static inline alloy_status alloy_model_forward(alloy_model *m, const int32_t *tokens, int B, int T) {
    return alloy_model_forward_ex(m, tokens, B, T, true);
}

/* ---- what the last forward left, for the objectives (read-only unless said) ---- */

/* The logits (B·T, V) of the last forward, NULL if it skipped them. An objective may overwrite
 * them with its gradient and pass them to alloy_model_backward as dlogits. */
float *alloy_model_logits(alloy_model *m);
/* The final hidden states (B·T, C), after the final norm. */
const float *alloy_model_hidden(const alloy_model *m);
/* Layer l's MLP input (B·T, C): the output of its second norm (ln_2, post_attention_layernorm).
 * NULL with recompute (the layers share one set of buffers) or for l outside [0, L). */
const float *alloy_model_mlp_input(const alloy_model *m, int l);
/* The per-token losses (B·T) of the last alloy_lm_loss or alloy_lm_loss_chunked. */
const float *alloy_model_token_losses(const alloy_model *m);
/* MoE: the load-balancing loss (see alloy_model_backward); 0 for a dense model. */
float alloy_model_aux_loss(const alloy_model *m);
/* MoE: the (token, k) assignments routed to each expert, (L, E); NULL for a dense model. */
const int64_t *alloy_model_expert_tokens(const alloy_model *m);
/* MoE: layer l's routing, (B·T, K) each: the chosen experts by descending probability and their
 * renormalised gates. NULL (both) for a dense model, l outside [0, L), or with recompute. */
void alloy_model_routes(const alloy_model *m, int l, const int32_t **experts, const float **gates);
/* A buffer of (max_B·max_T, C) floats that the model owns and never writes by itself, for an
 * objective to collect its gradient of the final hidden states in (the chunked LM losses write
 * it, a scalar head adds to it) before passing it to alloy_model_backward as dhidden. */
float *alloy_model_dhidden_buffer(alloy_model *m);

/* ---- losses and heads: a gradient for alloy_model_backward ---- */

/* Softmax cross-entropy of the last forward's logits against targets (B, T) with an optional
 * per-token mask (B, T) of weights (0 drops a token; NULL counts all); negative targets are
 * ignored too. Returns the mean loss over counted tokens (0 if none). If grad_scale != 0, WRITES
 * d(grad_scale · mean loss)/dlogits into dlogits (B·T, V), which may be alloy_model_logits(m)
 * itself (then the logits are overwritten). */
alloy_status alloy_lm_loss(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                           float grad_scale, float *dlogits, float *out_loss);

/* The same loss without the (B·T, V) logits: after a forward with or without logits, the LM
 * head runs over chunks of loss_chunk_rows rows; each chunk's softmax cross-entropy gradient
 * goes at once into the head's backward, ACCUMULATING the head's weight gradient into
 * grads_memory (so zero the gradients before, not after) and WRITING the gradient of the final
 * hidden states into dhidden (B·T, C) for alloy_model_backward. grad_scale 0 computes the loss
 * alone (dhidden may then be NULL). Equal to forward with logits + alloy_lm_loss + the head's
 * part of the backward, with a fraction of the memory. */
alloy_status alloy_lm_loss_chunked(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                                   float grad_scale, float *dhidden, float *out_loss);
/* Bytes of activation memory in use (the buffers, the loss chunk, and the logits once a forward
 * has written them). */
size_t alloy_model_activation_bytes(const alloy_model *m);

void alloy_model_zero_grad(alloy_model *m);

/* What alloy_model_backward differentiates: the gradient of the loss with respect to the last
 * forward's outputs, given explicitly (the model keeps no note of it). */
typedef struct alloy_backward_in {
    const float *dlogits; /* (B·T, V) d loss / d logits, or NULL (no LM head, or the head's
                             part already done by a chunked loss) */
    const float *dhidden; /* (B·T, C) d loss / d final hidden states (after the final norm),
                             added to what dlogits gives, or NULL */
    float aux_scale;      /* MoE: the load-balancing loss enters the loss as
                             router_aux_loss_coef · aux_scale · aux (0: not at all) */
} alloy_backward_in;

/* Backpropagates in->dlogits through the LM head and, added, in->dhidden into the final hidden
 * states, down the layers, accumulating into grads_memory. Needs the activations of the last
 * forward (same B, T); USAGE without a forward or when both gradients are NULL.
 *
 * Mixture of experts: each MoE layer computes p = softmax(x·Wrᵀ) over the E experts (x the
 * ln2 output), keeps the K largest (Mixtral's order: softmax, top-k, renormalise),
 * g_k = p_k / Σ_chosen p, and outputs Σ_k g_k · expert_k(x). The forward also sets aux_loss,
 * the load-balancing loss of transformers' load_balancing_loss_func over all layers' router
 * logits concatenated (L·N rows, N = B·T):
 *     aux = E · Σ_e f_e · P_e,   f_e = c_e / (L·N),   P_e = Σ_{l,n} p_{l,n,e} / (L·N),
 * c_e counting the (layer, token, k) assignments to expert e — so Σ_e f_e = K and a perfectly
 * balanced router scores K. The backward adds router_aux_loss_coef · in->aux_scale · d aux,
 * through P_e only (f_e counts are constant), to the gradient — as transformers' Mixtral adds
 * coef · aux to its loss. The gates' gradient reaches the router through the renormalisation
 * and the softmax. */
alloy_status alloy_model_backward(alloy_model *m, const alloy_backward_in *in);

/* True for the name of an MoE router weight (…mlp.gate.weight, …block_sparse_moe.gate.weight). */
bool alloy_tensor_is_router(const char *name);
/* True for the name of an MLP tensor: a dense model's feed-forward weights and biases, an MoE's
 * experts (not its routers). */
bool alloy_tensor_is_mlp(const char *name);

/* ---- heads for the alignment objectives (alloy/align.h) ---- */

/* Per-token log-probabilities under the LM head, in row chunks as alloy_lm_loss_chunked (no
 * (B·T, V) logits): after a forward of shape (B, T), logp[i] (may be NULL) gets
 * log softmax(lnf_i · lm_headᵀ)[targets[i]] for every row with targets[i] >= 0, and 0 where
 * targets[i] < 0. If weights (B·T) is not NULL, also backpropagates Σ_i weights[i]·logp[i]
 * through the head — weights may be negative (a rejected response's tokens in DPO) — ACCUMULATING
 * the head's weight gradient into grads_memory and WRITING dhidden (B·T, C) (0 in rows without
 * a target) for alloy_model_backward; dhidden may be NULL without weights. A caller whose weights depend on the log-probabilities (DPO,
 * PPO) calls it twice: once without weights, then with them (the head runs again). RANGE for a
 * target >= V or a weight that is not finite. */
alloy_status alloy_lm_logprobs_chunked(alloy_model *m, const int32_t *targets, const float *weights, int B, int T,
                                       float *dhidden, float *logp);

/* A scalar head on the final hidden states (a reward model's score, a value head):
 * out[k] = lnf[rows[k]] · w + *b for k < n, rows indexing the B·T rows of the last forward;
 * w (C), b (1) may be NULL for no bias. RANGE for a row outside the last forward. */
alloy_status alloy_scalar_head_forward(const alloy_model *m, const float *w, const float *b, const int64_t *rows, int n,
                                       float *out);
/* Backpropagates Σ_k dout[k]·out[k]: dw (C) += Σ_k dout[k]·lnf[rows[k]] and *db += Σ_k dout[k]
 * (either may be NULL), and ADDS dout[k]·w into dhidden[rows[k]] (dhidden (B·T, C), for
 * alloy_model_backward: zero it first unless an LM head has written it — that one goes first). */
alloy_status alloy_scalar_head_backward(const alloy_model *m, const float *w, float *dw, float *db, const int64_t *rows,
                                        int n, const float *dout, float *dhidden);

/* Replaces *m by a model of vocab_size tokens with the same everything else: every tensor is
 * copied; the embedding (and an untied LM head) keep their first min(V, vocab_size) rows and
 * new rows are set to the mean of the old rows (as Hugging Face's resize_token_embeddings with
 * mean initialisation). Activations and gradients start empty. On failure *m is unchanged. */
alloy_status alloy_model_resize_vocab(alloy_model **m, int vocab_size);

ALLOY_END_DECLS
#endif /* ALLOY_MODEL_H */
