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
 *     alloy_model_forward(m, tokens, 8, 128);         // m->acts.logits: (8, 128, V)
 *     float loss = alloy_lm_loss(m, targets, NULL, 8, 128, 1.0f); // writes dlogits
 *     alloy_model_zero_grad(m);
 *     alloy_model_backward(m);                         // m->grads_memory
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

/* Activations for B·T ≤ max_B·max_T tokens. Per-layer buffers are stacked (L, ...). */
typedef struct alloy_acts {
    float *encoded;   /* (B·T, C) embedding output = residual stream into layer 0 */
    float *ln1;       /* (L, B·T, C) */
    float *ln1_mean;  /* (L, B·T) GPT-2 only */
    float *ln1_rstd;  /* (L, B·T) */
    float *qkv;       /* (L, B·T, (H+2KV)·hd), after RoPE */
    float *att_lse;   /* (L, B, H, T) log-sum-exp of each attention row */
    float *atty;      /* (L, B·T, H·hd) attention output before the projection */
    float *res2;      /* (L, B·T, C) residual after attention */
    float *ln2;       /* (L, B·T, C) */
    float *ln2_mean;  /* (L, B·T) GPT-2 only */
    float *ln2_rstd;  /* (L, B·T) */
    float *fc;        /* (L, B·T, F or 2F) MLP pre-activation (Llama: [gate | up]); MoE:
                         (L, B·T·K, F or 2F), the experts' rows in dispatch order */
    float *fc_act;    /* (B·T, F) after GELU / SwiGLU, one layer's: the backward recomputes it;
                         MoE: (B·T·K, F) */
    /* MoE only (NULL when dense). Dispatch order: the (token, k) assignments grouped by expert,
       expert 0's first, each group in token order, so that each expert is one product. */
    float *router_probs; /* (L, B·T, E) softmax of the router logits */
    float *gates;        /* (L, B·T, K) the chosen experts' probabilities renormalised to sum 1 */
    float *expert_out;   /* (L, B·T·K, C) each dispatch row's expert output (before its gate) */
    float *moe_in;       /* (B·T·K, C) ln2 rows gathered in dispatch order, one layer's */
    int32_t *topk;       /* (L, B·T, K) the chosen experts, by descending probability (ties: the
                            lower index first) */
    int32_t *slot_row;   /* (L, B·T, K) the dispatch row of each (token, k) */
    int32_t *row_token;  /* (L, B·T·K) the token of each dispatch row */
    int32_t *expert_off; /* (L, E + 1) expert e's dispatch rows are [off[e], off[e+1]) */
    float *res3;      /* (L, B·T, C) layer output */
    float *lnf;       /* (B·T, C) final hidden states (after the final norm) */
    float *lnf_mean;  /* (B·T) GPT-2 only */
    float *lnf_rstd;  /* (B·T) */
    float *logits;    /* (B·T, V); an objective overwrites it with dlogits. Allocated by the first
                         forward that asks for logits (training through alloy_lm_loss_chunked
                         never does) */
    float *losses;    /* (B·T) per-token loss of the last alloy_lm_loss */
    float *row_scale; /* (B·T) scratch for the loss */
} alloy_acts;

/* Gradient buffers of the activations: one layer's worth, reused down the stack. */
typedef struct alloy_grad_acts {
    float *dres;    /* (B·T, C) gradient of the residual stream */
    float *dln;     /* (B·T, C) */
    float *dqkv;    /* (B·T, (H+2KV)·hd) */
    float *datty;   /* (B·T, H·hd) */
    float *dfc;     /* (B·T, F or 2F) */
    float *dfc_act; /* (B·T, F) */
    float *dhidden; /* (B·T, C) gradient into the final hidden states from a head other than LM */
    float *drouter; /* MoE: (B·T, E) gradient of the router logits */
    float *dgate;   /* MoE: (B·T, K) gradient of the renormalised gates */
    float *dmoe;    /* MoE: (B·T·K, C) a dispatch row's output gradient, then its input gradient */
} alloy_grad_acts;

/* Rows of the LM head per chunk of alloy_lm_loss_chunked unless loss_chunk_rows says otherwise:
 * 256 rows of a 50k vocabulary are 51 MB of logits. */
#define ALLOY_LOSS_CHUNK_ROWS 256

/* How the model computes (not what it computes). */
typedef struct alloy_model_options {
    alloy_precision precision; /* matrix products: ALLOY_PRECISION_F32 (default) or ALLOY_PRECISION_BF16 (bf16
                          inputs, fp32 accumulation and fp32 master weights) */
    bool recompute;    /* keep only each layer's input and recompute the rest in the backward */
} alloy_model_options;

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
    alloy_acts acts;
    alloy_grad_acts gacts;
    float *acts_memory;         /* one allocation for acts and gacts */
    size_t acts_floats;
    float *rope_cos, *rope_sin; /* (maxT, hd/2), Llama only */
    int32_t *tokens;            /* (max_B·max_T) tokens of the last forward */
    int B, T;                   /* shape of the last forward; 0 before any */
    int layer_in_buffers;       /* with recompute: the layer whose activations the shared buffers hold */
    int fc_act_layer;           /* the layer whose MLP activation output acts.fc_act holds */
    bool have_logits;           /* the last forward ran the LM head */
    bool have_hidden_grad;      /* gacts.dhidden holds a gradient to add in the backward */
    float *loss_chunk;          /* (loss_chunk_rows, V) logits of alloy_lm_loss_chunked, allocated
                                   at its first call */
    int loss_chunk_rows;        /* rows of the LM head per chunk there (ALLOY_LOSS_CHUNK_ROWS) */
    int loss_chunk_cap;         /* rows loss_chunk has room for */
    /* mixture of experts (config.n_experts > 0), from the last forward: */
    alloy_expert_params *expert_params, *expert_grads; /* (L·E) what layers[l].experts point into */
    int32_t *route_memory;      /* the int32 routing buffers of acts (topk, slot_row, ...) */
    size_t route_ints;          /* its length */
    int64_t *expert_tokens;     /* (L, E) (token, k) assignments routed to each expert */
    int64_t *expert_tokens_total; /* (E) the same summed over the layers */
    double *router_prob_sum;    /* (L, E) Σ over the tokens of each expert's router probability */
    float aux_loss;             /* the load-balancing loss (see alloy_model_backward) */
    float aux_grad_scale;       /* its gradient is scaled by router_aux_loss_coef and this: set
                                   to grad_scale by alloy_lm_loss(_chunked), 1 after a forward */
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

/* Runs the model on tokens (B, T) up to the final hidden states (acts.lnf) and, if
 * `logits` is true, the LM head (acts.logits). Fails with RANGE for a token outside [0, V) and
 * USAGE when B or T exceed what the model was created for. */
alloy_status alloy_model_forward_ex(alloy_model *m, const int32_t *tokens, int B, int T, bool logits);
static inline alloy_status alloy_model_forward(alloy_model *m, const int32_t *tokens, int B, int T) {
    return alloy_model_forward_ex(m, tokens, B, T, true);
}

/* Softmax cross-entropy of acts.logits against targets (B, T) with an optional per-token mask
 * (B, T) of weights (0 drops a token; NULL counts all); negative targets are ignored too.
 * Returns the mean loss over counted tokens (0 if none). If grad_scale != 0, overwrites
 * acts.logits with d(grad_scale · mean loss)/dlogits, ready for alloy_model_backward. */
alloy_status alloy_lm_loss(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                           float grad_scale, float *out_loss);

/* The same loss without the (B·T, V) logits: after a forward with or without logits, the LM
 * head runs over chunks of loss_chunk_rows rows; each chunk's softmax cross-entropy gradient
 * goes at once into the head's backward, ACCUMULATING the head's weight gradient into
 * grads_memory (so zero the gradients before, not after) and writing the gradient of the final
 * hidden states into gacts.dhidden for alloy_model_backward. grad_scale 0 computes the loss
 * alone. Equal to forward with logits + alloy_lm_loss + the head's part of the backward, with
 * a fraction of the memory. */
alloy_status alloy_lm_loss_chunked(alloy_model *m, const int32_t *targets, const float *mask, int B, int T,
                                   float grad_scale, float *out_loss);
/* Bytes of activation memory allocated now (buffers, logits and loss chunk). */
size_t alloy_model_activation_bytes(const alloy_model *m);

void alloy_model_zero_grad(alloy_model *m);
/* Backpropagates from the gradient in acts.logits (as left by an objective) — and, when
 * have_hidden_grad is set, from gacts.dhidden into the final hidden states — accumulating
 * into grads_memory. Needs the activations of the last forward (same B, T). If the last
 * forward skipped the logits, only dhidden is used.
 *
 * Mixture of experts: each MoE layer computes p = softmax(x·Wrᵀ) over the E experts (x the
 * ln2 output), keeps the K largest (Mixtral's order: softmax, top-k, renormalise),
 * g_k = p_k / Σ_chosen p, and outputs Σ_k g_k · expert_k(x). The forward also sets aux_loss,
 * the load-balancing loss of transformers' load_balancing_loss_func over all layers' router
 * logits concatenated (L·N rows, N = B·T):
 *     aux = E · Σ_e f_e · P_e,   f_e = c_e / (L·N),   P_e = Σ_{l,n} p_{l,n,e} / (L·N),
 * c_e counting the (layer, token, k) assignments to expert e — so Σ_e f_e = K and a perfectly
 * balanced router scores K. The backward adds router_aux_loss_coef · aux_grad_scale · d aux,
 * through P_e only (f_e counts are constant), to the gradient — as transformers' Mixtral adds
 * coef · aux to its loss. The gates' gradient reaches the router through the renormalisation
 * and the softmax. */
alloy_status alloy_model_backward(alloy_model *m);

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
 * the head's weight gradient into grads_memory and WRITING gacts.dhidden (0 in rows without a
 * target) for alloy_model_backward. A caller whose weights depend on the log-probabilities (DPO,
 * PPO) calls it twice: once without weights, then with them (the head runs again). RANGE for a
 * target >= V or a weight that is not finite. */
alloy_status alloy_lm_logprobs_chunked(alloy_model *m, const int32_t *targets, const float *weights, int B, int T,
                                       float *logp);

/* A scalar head on the final hidden states (a reward model's score, a value head):
 * out[k] = lnf[rows[k]] · w + *b for k < n, rows indexing the B·T rows of the last forward;
 * w (C), b (1) may be NULL for no bias. RANGE for a row outside the last forward. */
alloy_status alloy_scalar_head_forward(const alloy_model *m, const float *w, const float *b, const int64_t *rows, int n,
                                       float *out);
/* Backpropagates Σ_k dout[k]·out[k]: dw (C) += Σ_k dout[k]·lnf[rows[k]] and *db += Σ_k dout[k]
 * (either may be NULL), and ADDS dout[k]·w into gacts.dhidden[rows[k]] — after zeroing dhidden
 * if no other head has written it since the forward (have_hidden_grad unset) — then sets
 * have_hidden_grad for alloy_model_backward. So an LM-head objective (which writes dhidden)
 * goes first and a scalar head second when both apply. */
alloy_status alloy_scalar_head_backward(alloy_model *m, const float *w, float *dw, float *db, const int64_t *rows, int n,
                                        const float *dout);

/* Replaces *m by a model of vocab_size tokens with the same everything else: every tensor is
 * copied; the embedding (and an untied LM head) keep their first min(V, vocab_size) rows and
 * new rows are set to the mean of the old rows (as Hugging Face's resize_token_embeddings with
 * mean initialisation). Activations and gradients start empty. On failure *m is unchanged. */
alloy_status alloy_model_resize_vocab(alloy_model **m, int vocab_size);

ALLOY_END_DECLS
#endif /* ALLOY_MODEL_H */
