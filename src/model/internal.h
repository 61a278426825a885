/*
 * internal.h — what the files of src/model share and nothing else sees: the mixture-of-experts
 * MLP of a layer (moe.c), called by the transformer's forward and backward (transformer.c).
 */
#ifndef ALLOY_MODEL_INTERNAL_H
#define ALLOY_MODEL_INTERNAL_H

#include "alloy/model.h"

/* Layer l's MoE MLP on the N rows x (N, C) of its ln2 output: routes each row to its top-K
 * experts, runs each expert once over the rows routed to it, and ADDS Σ_k g_k · expert_k(x)
 * into out (N, C) (which holds the residual). Fills the layer's routing buffers of m->acts
 * (the shared set under recompute), acts.fc_act (and sets fc_act_layer), m->expert_tokens[l]
 * and m->router_prob_sum[l]. The router's product is fp32 whatever prec says: routing
 * decisions are discontinuous in the logits. */
void moe_forward(alloy_model *m, int l, int64_t N, const float *x, float *out, alloy_precision prec);

/* After every layer's moe_forward: m->expert_tokens_total and m->aux_loss (see model.h). */
void moe_finish_forward(alloy_model *m, int64_t N);

/* The backward of moe_forward for layer l, whose buffers must hold that layer's forward:
 * from dout (N, C), the gradient of the layer's output, WRITES dx (N, C), the gradient of x,
 * and accumulates the router's and experts' weight gradients, including the load-balancing
 * loss's share (router_aux_loss_coef · aux_grad_scale). Recomputes acts.fc_act when it holds
 * another layer's. */
void moe_backward(alloy_model *m, int l, int64_t N, const float *x, const float *dout, float *dx, alloy_precision prec);

#endif /* ALLOY_MODEL_INTERNAL_H */
