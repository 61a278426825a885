/*
 * moe_metrics.c — an MoE model's routing over one training step, for metrics.jsonl: the
 * load-balancing loss and how many (token, k) assignments each expert of each layer received.
 */
#include "alloy/train.h"
#include "internal.h"

#include <stdio.h>

void moe_step_add(moe_step *ms, const alloy_model *m, int grad_accum) {
    size_t LE = (size_t)m->config.n_layer * (size_t)m->config.n_experts;
    ms->aux += alloy_model_aux_loss(m) / grad_accum;
    for (size_t i = 0; i < LE; i++) ms->counts[i] += alloy_model_expert_tokens(m)[i];
}

/* ,"aux_loss":..,"expert_tokens":[per expert, all layers],"expert_tokens_per_layer":[[..],..] */
void moe_step_print(char *buf, size_t size, const moe_step *ms, const alloy_model *m) {
    int L = m->config.n_layer, E = m->config.n_experts;
    size_t k = 0;
#define PUT(...) (k += (size_t)snprintf(buf + k, k < size ? size - k : 0, __VA_ARGS__))
    PUT(",\"aux_loss\":%.6f,\"expert_tokens\":[", ms->aux);
    for (int e = 0; e < E; e++) {
        int64_t tot = 0;
        for (int l = 0; l < L; l++) tot += ms->counts[(size_t)l * E + e];
        PUT("%s%lld", e ? "," : "", (long long)tot);
    }
    PUT("],\"expert_tokens_per_layer\":[");
    for (int l = 0; l < L; l++) {
        PUT("%s[", l ? "," : "");
        for (int e = 0; e < E; e++) PUT("%s%lld", e ? "," : "", (long long)ms->counts[(size_t)l * E + e]);
        PUT("]");
    }
    PUT("]");
#undef PUT
}
