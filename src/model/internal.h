/*
 * internal.h — what the files of src/model share and nothing else sees: the mixture-of-experts
 * MLP of a layer (moe_layer.c), called by the transformer's forward and backward (transformer.c),
 * and the activations both work in (allocated in params.c, read elsewhere through model.h's
 * accessors).
 */
#ifndef ALLOY_MODEL_INTERNAL_H
#define ALLOY_MODEL_INTERNAL_H

#include "alloy/model.h"

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
    float *logits;    /* (B·T, V), valid when have_logits; an objective may overwrite it with
                         dlogits. Its own pages (max_B·max_T·V floats), reserved at creation and
                         taking memory only once a forward writes them */
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
    float *dhidden; /* (B·T, C) alloy_model_dhidden_buffer: the objectives' own, never read here */
    float *drouter; /* MoE: (B·T, E) gradient of the router logits */
    float *dgate;   /* MoE: (B·T, K) gradient of the renormalised gates */
    float *dmoe;    /* MoE: (B·T·K, C) a dispatch row's output gradient, then its input gradient */
} alloy_grad_acts;


/* Floats of the logits buffer acts->logits: max_B·max_T·V. */
size_t model_logits_floats(const alloy_model *m);

/* Layer l's MoE MLP on the N rows x (N, C) of its ln2 output: routes each row to its top-K
 * experts, runs each expert once over the rows routed to it, and ADDS Σ_k g_k · expert_k(x)
 * into out (N, C) (which holds the residual). Fills the layer's routing buffers of m->acts
 * (the shared set under recompute), acts->fc_act (and sets fc_act_layer), m->expert_tokens[l]
 * and m->router_prob_sum[l]. The router's product is fp32 whatever prec says: routing
 * decisions are discontinuous in the logits. */
void moe_forward(alloy_model *m, int l, int64_t N, const float *x, float *out, alloy_precision prec);

/* After every layer's moe_forward: m->expert_tokens_total and m->aux_loss (see model.h). */
void moe_finish_forward(alloy_model *m, int64_t N);

/* The backward of moe_forward for layer l, whose buffers must hold that layer's forward:
 * from dout (N, C), the gradient of the layer's output, WRITES dx (N, C), the gradient of x,
 * and accumulates the router's and experts' weight gradients, including the load-balancing
 * loss's share (router_aux_loss_coef · aux_scale). Recomputes acts->fc_act when it holds
 * another layer's. */
void moe_backward(alloy_model *m, int l, int64_t N, const float *x, const float *dout, float *dx, float aux_scale,
                  alloy_precision prec);

#endif /* ALLOY_MODEL_INTERNAL_H */
