/*
 * moe.c — a mixture of experts from dense models (Branch-Train-MiX): the experts' MLPs become
 * the experts of each layer, the rest is averaged or taken from a base, and the routers are
 * drawn at random or set from hidden states (alloy/moe.h says exactly how).
 */
#include "alloy/moe.h"

#include <math.h>
#include <string.h>

alloy_moe_options alloy_moe_defaults(void) {
    alloy_moe_options o;
    memset(&o, 0, sizeof o);
    o.top_k = 2;
    o.router = ALLOY_MOE_ROUTER_RANDOM;
    o.seed = 1337;
    o.aux_loss_coef = 0.001;
    return o;
}

const char *alloy_moe_router_name(alloy_moe_router r) { return r == ALLOY_MOE_ROUTER_HIDDEN ? "hidden" : "random"; }

bool alloy_moe_router_parse(const char *name, alloy_moe_router *out) {
    if (!strcmp(name, "random")) *out = ALLOY_MOE_ROUTER_RANDOM;
    else if (!strcmp(name, "hidden")) *out = ALLOY_MOE_ROUTER_HIDDEN;
    else return false;
    return true;
}

/* b may join a: a dense model of a's family and shapes. `what` names b ("--experts B"). */
static alloy_status check_compatible(const alloy_config *a, const alloy_config *b, const char *what) {
    if (b->n_experts > 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: is already a mixture of experts (%d experts); give dense models", what,
                          b->n_experts);
    if (a->family != b->family)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: family %s differs from the first expert's %s", what,
                          alloy_family_name(b->family), alloy_family_name(a->family));
    struct {
        const char *name;
        double x, y;
    } f[] = {
        {"vocab_size", a->vocab_size, b->vocab_size},     {"max_seq_len", a->max_seq_len, b->max_seq_len},
        {"n_layer", a->n_layer, b->n_layer},              {"n_head", a->n_head, b->n_head},
        {"n_kv_head", a->n_kv_head, b->n_kv_head},        {"d_model", a->d_model, b->d_model},
        {"d_ff", a->d_ff, b->d_ff},                       {"norm_eps", a->norm_eps, b->norm_eps},
        {"rope_theta", a->rope_theta, b->rope_theta},     {"tie_embeddings", a->tie_embeddings, b->tie_embeddings},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].x != f[i].y)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: %s is %g but the first expert's is %g", what, f[i].name, f[i].y,
                              f[i].x);
    return ALLOY_STATUS_OK;
}

/* The dense mean of the experts: every tensor averaged (in double, in expert order), with
 * activations for one sequence of max_T tokens. */
static alloy_status mean_model(alloy_model **out, alloy_model *const *ex, int E, int max_T) {
    alloy_model *m;
    if (max_T > ex[0]->config.max_seq_len) max_T = ex[0]->config.max_seq_len;
    alloy_status s = alloy_model_create(&m, &ex[0]->config, 1, max_T);
    if (s) return s;
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *dst = m->params_memory + t->offset;
        for (size_t k = 0; k < t->numel; k++) {
            double acc = 0.0;
            for (int e = 0; e < E; e++) acc += ex[e]->params_memory[ex[e]->tensors[i].offset + k];
            dst[k] = (float)(acc / E);
        }
    }
    *out = m;
    return ALLOY_STATUS_OK;
}

/* Adds, for every layer, the sum over the tokens of the ln2 output of `ref` on tokens (n) into
 * acc (L, C); *count += n. */
static alloy_status add_hidden(alloy_model *ref, const int32_t *tokens, int n, double *acc, int64_t *count) {
    if (n > ref->max_T) n = ref->max_T;
    alloy_status s = alloy_model_forward_ex(ref, tokens, 1, n, false);
    if (s) return s;
    const int L = ref->config.n_layer, C = ref->config.d_model;
    for (int l = 0; l < L; l++) {
        // the per-layer buffers are stacked compactly for the current B·T (no recompute here)
        const float *ln2 = ref->acts.ln2 + (int64_t)l * n * C;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) acc[(int64_t)l * C + c] += ln2[(int64_t)i * C + c];
    }
    *count += n;
    return ALLOY_STATUS_OK;
}

/* Samples `len` tokens from m after `start`, temperature 1 (the forward runs over the whole
 * prefix each time: a few short texts only). */
static alloy_status sample_text(alloy_model *m, int32_t start, int len, alloy_rng *rng, int32_t *out) {
    const int V = m->config.vocab_size;
    if (len > m->max_T) len = m->max_T;
    out[0] = start;
    for (int t = 1; t < len; t++) {
        alloy_status s = alloy_model_forward(m, out, 1, t);
        if (s) return s;
        const float *z = m->acts.logits + (int64_t)(t - 1) * V;
        float mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)(z[v] - mx));
        double u = alloy_rng_uniform(rng) * sum, c = 0.0;
        int pick = V - 1;
        for (int v = 0; v < V; v++) {
            c += exp((double)(z[v] - mx));
            if (u < c) {
                pick = v;
                break;
            }
        }
        out[t] = pick;
    }
    return ALLOY_STATUS_OK;
}

/* The hidden-state routers: router (L, E, C) from the reference model's ln2 means. */
static alloy_status hidden_routers(float *router, alloy_model *const *ex, int E, alloy_model *ref,
                                   const alloy_moe_options *o) {
    const int L = ref->config.n_layer, C = ref->config.d_model, V = ref->config.vocab_size;
    double *mean = alloy_calloc((size_t)E * (size_t)L * (size_t)C, sizeof(double));
    int64_t *count = alloy_calloc((size_t)E, sizeof(int64_t));
    int32_t *text = alloy_calloc(ALLOY_MOE_SAMPLED_TOKENS, sizeof(int32_t));
    alloy_status s = (!mean || !count || !text) ? alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the hidden router")
                                                : ALLOY_STATUS_OK;
    if (!s && o->prompts) {
        for (int i = 0; i < o->n_prompts && !s; i++) {
            const alloy_moe_prompt *p = &o->prompts[i];
            if (p->expert < 0 || p->expert >= E)
                s = alloy_fail(ALLOY_STATUS_USAGE, "--prompts: prompt %d is for expert %d, outside [0, %d]", i + 1,
                               p->expert, E - 1);
            else if (p->n < 1)
                s = alloy_fail(ALLOY_STATUS_USAGE, "--prompts: prompt %d is empty", i + 1);
            for (int k = 0; k < p->n && !s; k++)
                if (p->tokens[k] < 0 || p->tokens[k] >= V)
                    s = alloy_fail(ALLOY_STATUS_USAGE, "--prompts: prompt %d has token %d outside the vocabulary [0, %d)",
                                   i + 1, p->tokens[k], V);
            if (!s) s = add_hidden(ref, p->tokens, p->n, mean + (size_t)p->expert * L * C, &count[p->expert]);
        }
        for (int e = 0; e < E && !s; e++)
            if (!count[e]) s = alloy_fail(ALLOY_STATUS_USAGE, "--prompts: no prompt for expert %d", e);
    } else if (!s) {
        if (o->sample_start < 0 || o->sample_start >= V)
            s = alloy_fail(ALLOY_STATUS_USAGE, "the prompts' start token %d is outside the vocabulary [0, %d)",
                           o->sample_start, V);
        alloy_rng rng;
        alloy_rng_seed(&rng, o->seed ^ 0x70726f6d707473ULL);
        for (int e = 0; e < E && !s; e++) {
            for (int k = 0; k < ALLOY_MOE_SAMPLED_PROMPTS && !s; k++) {
                int len = ALLOY_MOE_SAMPLED_TOKENS < ex[e]->max_T ? ALLOY_MOE_SAMPLED_TOKENS : ex[e]->max_T;
                s = sample_text(ex[e], o->sample_start, len, &rng, text);
                if (!s) s = add_hidden(ref, text, len, mean + (size_t)e * L * C, &count[e]);
            }
        }
    }
    for (int l = 0; l < L && !s; l++) {
        double *centre = alloy_calloc((size_t)C, sizeof(double));
        if (!centre) {
            s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the hidden router");
            break;
        }
        for (int e = 0; e < E; e++)
            for (int c = 0; c < C; c++) centre[c] += mean[((size_t)e * L + l) * C + c] / (double)count[e] / E;
        for (int e = 0; e < E; e++) {
            const double *mu = mean + ((size_t)e * L + l) * C;
            double n2 = 0.0, raw2 = 0.0;
            for (int c = 0; c < C; c++) {
                double x = mu[c] / (double)count[e];
                n2 += (x - centre[c]) * (x - centre[c]);
                raw2 += x * x;
            }
            bool centred = n2 > 1e-12 * raw2 && n2 > 0.0;
            double norm = sqrt(centred ? n2 : raw2);
            float *dst = router + ((size_t)l * E + e) * C;
            for (int c = 0; c < C; c++) {
                double x = mu[c] / (double)count[e] - (centred ? centre[c] : 0.0);
                dst[c] = norm > 0.0 ? (float)(x / norm) : 0.0f;
            }
        }
        alloy_free(centre);
    }
    alloy_free(mean);
    alloy_free(count);
    alloy_free(text);
    return s;
}

alloy_status alloy_moe_build(alloy_model **out, alloy_model *const *ex, int E, alloy_model *base,
                             const alloy_moe_options *o) {
    *out = NULL;
    if (E < 2) return alloy_fail(ALLOY_STATUS_USAGE, "--experts: give at least 2 expert models (got %d)", E);
    if (E > ALLOY_MAX_EXPERTS)
        return alloy_fail(ALLOY_STATUS_USAGE, "--experts: at most %d expert models (got %d)", ALLOY_MAX_EXPERTS, E);
    if (o->top_k < 1 || o->top_k > E)
        return alloy_fail(ALLOY_STATUS_USAGE, "--top-k %d: must lie in [1, %d] (the number of experts)", o->top_k, E);
    if (!(o->aux_loss_coef >= 0.0 && o->aux_loss_coef < 1e6))
        return alloy_fail(ALLOY_STATUS_USAGE, "the aux loss coefficient %g must be >= 0", o->aux_loss_coef);
    alloy_status s = ALLOY_STATUS_OK;
    char what[64];
    for (int e = 0; e < E && !s; e++) {
        snprintf(what, sizeof what, "--experts: model %d", e + 1);
        s = check_compatible(&ex[0]->config, &ex[e]->config, what);
    }
    if (!s && base) s = check_compatible(&ex[0]->config, &base->config, "--base");
    if (s) return s;

    alloy_config cfg = ex[0]->config;
    cfg.n_experts = E;
    cfg.top_k = o->top_k;
    cfg.router_aux_loss_coef = o->aux_loss_coef;
    alloy_model *m = NULL, *mean = NULL;
    float *router = NULL;
    const int L = cfg.n_layer, C = cfg.d_model;
    if ((s = alloy_model_create(&m, &cfg, 1, 1))) return s;
    if (o->router == ALLOY_MOE_ROUTER_HIDDEN) {
        router = alloy_malloc(sizeof(float) * (size_t)L * (size_t)E * (size_t)C);
        if (!router) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the routers");
        int T = ALLOY_MOE_SAMPLED_TOKENS;
        for (int i = 0; o->prompts && i < o->n_prompts; i++) T = o->prompts[i].n > T ? o->prompts[i].n : T;
        if (!s && !base) s = mean_model(&mean, ex, E, T);
        if (!s) s = hidden_routers(router, ex, E, base ? base : mean, o);
    } else {
        alloy_model_init_weights(m, o->seed); // the routers' draws; every other tensor is set below
    }
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        if (alloy_tensor_is_router(t->name) || strstr(t->name, ".experts.")) continue;
        float *dst = m->params_memory + t->offset;
        if (base) {
            const alloy_tensor_info *b = alloy_model_find_tensor(base, t->name);
            ALLOY_ASSERT(b && b->numel == t->numel);
            memcpy(dst, base->params_memory + b->offset, sizeof(float) * t->numel);
            continue;
        }
        const alloy_tensor_info *src[ALLOY_MAX_EXPERTS];
        for (int e = 0; e < E; e++) {
            src[e] = alloy_model_find_tensor(ex[e], t->name);
            ALLOY_ASSERT(src[e] && src[e]->numel == t->numel);
        }
        for (size_t k = 0; k < t->numel; k++) {
            double acc = 0.0;
            for (int e = 0; e < E; e++) acc += ex[e]->params_memory[src[e]->offset + k];
            dst[k] = (float)(acc / E);
        }
    }
    // the experts: each model's MLP, bit for bit (Llama's gate and up are one stacked matrix on
    // both sides: gate_proj, up_proj -> w1, w3)
    size_t FF = (size_t)(cfg.family == ALLOY_FAMILY_GPT2 ? cfg.d_ff : 2 * cfg.d_ff), F = (size_t)cfg.d_ff;
    for (int l = 0; l < L && !s; l++) {
        alloy_layer_params *lp = &m->params.layers[l];
        for (int e = 0; e < E; e++) {
            const alloy_layer_params *sp = &ex[e]->params.layers[l];
            alloy_expert_params *ep = &lp->experts[e];
            memcpy(ep->up_w, sp->up_w, sizeof(float) * FF * (size_t)C);
            memcpy(ep->down_w, sp->down_w, sizeof(float) * F * (size_t)C);
            if (ep->up_b) memcpy(ep->up_b, sp->up_b, sizeof(float) * F);
            if (ep->down_b) memcpy(ep->down_b, sp->down_b, sizeof(float) * (size_t)C);
        }
        if (router) memcpy(lp->router_w, router + (size_t)l * E * C, sizeof(float) * (size_t)E * (size_t)C);
    }
    alloy_free(router);
    alloy_model_destroy(mean);
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}
