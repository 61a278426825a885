/*
 * params.c — the parameter table and the model's memory: one arena for the parameters, one
 * of the same shape for the gradients, one for the activations, all sized at creation.
 */
#include "alloy/model.h"
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Table builder: appends tensors in arena order, checking every size for overflow. */
typedef struct table_builder {
    alloy_tensor_info *t;
    int n, cap;
    size_t total;
    bool overflow;
    bool stack; /* the next tensor follows this one without padding (one stacked matrix) */
} table_builder;

static void add_tensor(table_builder *tb, bool decay, int64_t d0, int64_t d1, const char *fmt, ...) {
    if (tb->n >= tb->cap) {
        tb->overflow = true;
        return;
    }
    alloy_tensor_info *ti = &tb->t[tb->n++];
    memset(ti, 0, sizeof *ti);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ti->name, sizeof ti->name, fmt, ap);
    va_end(ap);
    ti->ndim = d1 > 0 ? 2 : 1;
    ti->shape[0] = d0;
    ti->shape[1] = d1 > 0 ? d1 : 0;
    size_t numel;
    if (!alloy_mul_size((size_t)d0, (size_t)(d1 > 0 ? d1 : 1), &numel)) tb->overflow = true;
    ti->numel = numel;
    ti->offset = tb->total;
    ti->decay = decay;
    // keep every tensor 16-float (64-byte) aligned in the arena, except inside a stack that
    // the forward runs as one matrix (q, k, v; gate, up): no padding between its parts
    if (__builtin_add_overflow(tb->total, numel, &tb->total) || tb->total > SIZE_MAX - 16) tb->overflow = true;
    if (!tb->stack) tb->total = (tb->total + 15) / 16 * 16;
    tb->stack = false;
}

static int table_capacity(const alloy_config *c) { return (17 + 4 * c->n_experts) * c->n_layer + 8; }

/* Layer l's MLP: dense, or the router and E experts. */
static void add_mlp(table_builder *tb, const alloy_config *c, int l) {
    int64_t C = c->d_model, F = c->d_ff, E = c->n_experts;
    if (c->family == ALLOY_FAMILY_GPT2) {
        if (E == 0) {
            add_tensor(tb, true, C, F, "transformer.h.%d.mlp.c_fc.weight", l);
            add_tensor(tb, false, F, 0, "transformer.h.%d.mlp.c_fc.bias", l);
            add_tensor(tb, true, F, C, "transformer.h.%d.mlp.c_proj.weight", l);
            add_tensor(tb, false, C, 0, "transformer.h.%d.mlp.c_proj.bias", l);
            return;
        }
        add_tensor(tb, true, E, C, "transformer.h.%d.mlp.gate.weight", l);
        for (int e = 0; e < E; e++) {
            add_tensor(tb, true, C, F, "transformer.h.%d.mlp.experts.%d.c_fc.weight", l, e);
            add_tensor(tb, false, F, 0, "transformer.h.%d.mlp.experts.%d.c_fc.bias", l, e);
            add_tensor(tb, true, F, C, "transformer.h.%d.mlp.experts.%d.c_proj.weight", l, e);
            add_tensor(tb, false, C, 0, "transformer.h.%d.mlp.experts.%d.c_proj.bias", l, e);
        }
        return;
    }
    if (E == 0) {
        tb->stack = true; // gate_proj, up_proj: one (2F, C) matrix
        add_tensor(tb, true, F, C, "model.layers.%d.mlp.gate_proj.weight", l);
        add_tensor(tb, true, F, C, "model.layers.%d.mlp.up_proj.weight", l);
        add_tensor(tb, true, C, F, "model.layers.%d.mlp.down_proj.weight", l);
        return;
    }
    add_tensor(tb, true, E, C, "model.layers.%d.block_sparse_moe.gate.weight", l);
    for (int e = 0; e < E; e++) {
        tb->stack = true; // Mixtral's w1 (gate_proj) and w3 (up_proj): one (2F, C) matrix
        add_tensor(tb, true, F, C, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
        add_tensor(tb, true, F, C, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
        add_tensor(tb, true, C, F, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
    }
}

static void build_table(table_builder *tb, const alloy_config *c) {
    int64_t C = c->d_model, V = c->vocab_size, hd = alloy_config_head_dim(c);
    int64_t H = c->n_head, KV = c->n_kv_head;
    if (c->family == ALLOY_FAMILY_GPT2) {
        add_tensor(tb, true, V, C, "transformer.wte.weight");
        add_tensor(tb, true, c->max_seq_len, C, "transformer.wpe.weight");
        for (int l = 0; l < c->n_layer; l++) {
            add_tensor(tb, false, C, 0, "transformer.h.%d.ln_1.weight", l);
            add_tensor(tb, false, C, 0, "transformer.h.%d.ln_1.bias", l);
            add_tensor(tb, true, C, 3 * C, "transformer.h.%d.attn.c_attn.weight", l);
            add_tensor(tb, false, 3 * C, 0, "transformer.h.%d.attn.c_attn.bias", l);
            add_tensor(tb, true, C, C, "transformer.h.%d.attn.c_proj.weight", l);
            add_tensor(tb, false, C, 0, "transformer.h.%d.attn.c_proj.bias", l);
            add_tensor(tb, false, C, 0, "transformer.h.%d.ln_2.weight", l);
            add_tensor(tb, false, C, 0, "transformer.h.%d.ln_2.bias", l);
            add_mlp(tb, c, l);
        }
        add_tensor(tb, false, C, 0, "transformer.ln_f.weight");
        add_tensor(tb, false, C, 0, "transformer.ln_f.bias");
    } else {
        add_tensor(tb, true, V, C, "model.embed_tokens.weight");
        for (int l = 0; l < c->n_layer; l++) {
            add_tensor(tb, false, C, 0, "model.layers.%d.input_layernorm.weight", l);
            // q, k, v and gate, up must be adjacent: the forward runs each group as one GEMM
            tb->stack = true;
            add_tensor(tb, true, H * hd, C, "model.layers.%d.self_attn.q_proj.weight", l);
            tb->stack = true;
            add_tensor(tb, true, KV * hd, C, "model.layers.%d.self_attn.k_proj.weight", l);
            add_tensor(tb, true, KV * hd, C, "model.layers.%d.self_attn.v_proj.weight", l);
            add_tensor(tb, true, C, H * hd, "model.layers.%d.self_attn.o_proj.weight", l);
            add_tensor(tb, false, C, 0, "model.layers.%d.post_attention_layernorm.weight", l);
            add_mlp(tb, c, l);
        }
        add_tensor(tb, false, C, 0, "model.norm.weight");
        if (!c->tie_embeddings) add_tensor(tb, true, V, C, "lm_head.weight");
    }
}

/* Points p's fields into `base` following the table (the same walk for params and grads);
 * an MoE layer's experts go into `experts` (L·E). */
static void point_params(alloy_params *p, alloy_expert_params *experts, float *base, const alloy_model *m) {
    const alloy_config *c = &m->config;
    const alloy_tensor_info *t = m->tensors;
    int i = 0, E = c->n_experts;
#define NEXT() (base + t[i++].offset)
    memset(p->layers, 0, sizeof(alloy_layer_params) * (size_t)c->n_layer);
    p->wpe = p->lnf_b = NULL;
    if (c->family == ALLOY_FAMILY_GPT2) {
        p->wte = NEXT();
        p->wpe = NEXT();
        for (int l = 0; l < c->n_layer; l++) {
            alloy_layer_params *lp = &p->layers[l];
            lp->ln1_w = NEXT();
            lp->ln1_b = NEXT();
            lp->qkv_w = NEXT();
            lp->qkv_b = NEXT();
            lp->o_w = NEXT();
            lp->o_b = NEXT();
            lp->ln2_w = NEXT();
            lp->ln2_b = NEXT();
            if (E == 0) {
                lp->up_w = NEXT();
                lp->up_b = NEXT();
                lp->down_w = NEXT();
                lp->down_b = NEXT();
                continue;
            }
            lp->router_w = NEXT();
            lp->experts = experts + (size_t)l * (size_t)E;
            for (int e = 0; e < E; e++) {
                alloy_expert_params *ep = &lp->experts[e];
                ep->up_w = NEXT();
                ep->up_b = NEXT();
                ep->down_w = NEXT();
                ep->down_b = NEXT();
            }
        }
        p->lnf_w = NEXT();
        p->lnf_b = NEXT();
        p->lm_head = p->wte;
    } else {
        p->wte = NEXT();
        for (int l = 0; l < c->n_layer; l++) {
            alloy_layer_params *lp = &p->layers[l];
            lp->ln1_w = NEXT();
            lp->qkv_w = NEXT();
            i += 2; // k_proj, v_proj follow q_proj in the arena
            lp->o_w = NEXT();
            lp->ln2_w = NEXT();
            if (E == 0) {
                lp->up_w = NEXT(); // gate_proj, then up_proj right after it
                i += 1;
                lp->down_w = NEXT();
                continue;
            }
            lp->router_w = NEXT();
            lp->experts = experts + (size_t)l * (size_t)E;
            for (int e = 0; e < E; e++) {
                alloy_expert_params *ep = &lp->experts[e];
                ep->up_w = NEXT(); // w1, then w3 right after it
                i += 1;
                ep->down_w = NEXT();
                ep->up_b = ep->down_b = NULL;
            }
        }
        p->lnf_w = NEXT();
        p->lm_head = c->tie_embeddings ? p->wte : NEXT();
    }
#undef NEXT
    ALLOY_ASSERT(i == m->n_tensors);
}

/* The activation buffers, in one allocation: each entry is a pointer slot and its size. */
typedef struct act_slot {
    float **ptr;
    size_t count;
} act_slot;

static bool act_slots(alloy_model *m, act_slot *slots, int *n_slots, size_t *total) {
    const alloy_config *c = &m->config;
    size_t L = (size_t)c->n_layer, N = (size_t)m->max_B * (size_t)m->max_T, C = (size_t)c->d_model;
    size_t H = (size_t)c->n_head, KV = (size_t)c->n_kv_head, hd = (size_t)alloy_config_head_dim(c);
    size_t F = (size_t)c->d_ff, T = (size_t)m->max_T, B = (size_t)m->max_B;
    size_t QKV = (H + 2 * KV) * hd;
    size_t FF = c->family == ALLOY_FAMILY_LLAMA ? 2 * F : F;
    bool gpt2 = c->family == ALLOY_FAMILY_GPT2;
    bool moe = c->n_experts > 0;
    size_t E = (size_t)c->n_experts, K = moe ? (size_t)c->top_k : 1; // an MoE layer's MLP rows: N·K
    bool ok = true;
    // with recompute, the layers share one set of buffers (LS rows) and only the layer outputs
    // res3 are kept for every layer (LN rows)
    size_t LN = 0, LS = 0, att = 0, NK = 0, LSK = 0, Ls = m->opts.recompute ? 1 : L;
    ok &= alloy_mul_size(L, N, &LN);
    ok &= alloy_mul_size(Ls, N, &LS);
    ok &= alloy_mul_size(Ls * B * H, T, &att);
    ok &= alloy_mul_size(N, K, &NK);
    ok &= alloy_mul_size(LS, K, &LSK);
    struct {
        float **p;
        size_t a, b;
    } spec[] = {
        {&m->acts->encoded, N, C},        {&m->acts->ln1, LS, C},
        {&m->acts->ln1_mean, gpt2 ? LS : 0, 1}, {&m->acts->ln1_rstd, LS, 1},
        {&m->acts->qkv, LS, QKV},         {&m->acts->att_lse, att, 1},
        {&m->acts->atty, LS, H * hd},     {&m->acts->res2, LS, C},
        {&m->acts->ln2, LS, C},           {&m->acts->ln2_mean, gpt2 ? LS : 0, 1},
        {&m->acts->ln2_rstd, LS, 1},      {&m->acts->fc, LSK, FF},
        {&m->acts->fc_act, NK, F},        {&m->acts->res3, LN, C},
        {&m->acts->router_probs, moe ? LS : 0, E}, {&m->acts->gates, moe ? LSK : 0, 1},
        {&m->acts->expert_out, moe ? LSK : 0, C},  {&m->acts->moe_in, moe ? NK : 0, C},
        {&m->acts->lnf, N, C},            {&m->acts->lnf_mean, gpt2 ? N : 0, 1},
        {&m->acts->lnf_rstd, N, 1},
        {&m->acts->losses, N, 1},         {&m->acts->row_scale, N, 1},
        {&m->gacts->dres, N, C},          {&m->gacts->dln, N, C},
        {&m->gacts->dqkv, N, QKV},        {&m->gacts->datty, N, H * hd},
        {&m->gacts->dfc, NK, FF},         {&m->gacts->dfc_act, NK, F},
        {&m->gacts->dhidden, N, C},
        {&m->gacts->drouter, moe ? N : 0, E}, {&m->gacts->dgate, moe ? N : 0, K},
        {&m->gacts->dmoe, moe ? NK : 0, C},
    };
    size_t sum = 0;
    int n = 0;
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        size_t count;
        ok &= alloy_mul_size(spec[i].a, spec[i].b, &count);
        count = (count + 15) / 16 * 16;
        slots[n].ptr = spec[i].p;
        slots[n].count = count;
        n++;
        ok &= !__builtin_add_overflow(sum, count, &sum);
    }
    *n_slots = n;
    *total = sum;
    return ok;
}

size_t model_logits_floats(const alloy_model *m) {
    return (size_t)m->max_B * (size_t)m->max_T * (size_t)m->config.vocab_size;
}

/* The LM head's outputs: the logits, (max_B·max_T, V) in pages of their own that take memory only
 * once a forward writes them (training through the chunked losses never does), and the chunked
 * losses' chunk of min(ALLOY_LOSS_CHUNK_ROWS, max_B·max_T) rows. */
static alloy_status alloc_head_buffers(alloy_model *m) {
    size_t n;
    if (!alloy_mul_size((size_t)m->max_B * (size_t)m->max_T, (size_t)m->config.vocab_size, &n) ||
        n > ((size_t)1 << 40))
        return alloy_fail(ALLOY_STATUS_USAGE, "batch %d x sequence %d needs too much memory for the logits", m->max_B,
                          m->max_T);
    int64_t maxN = (int64_t)m->max_B * m->max_T;
    m->loss_chunk_cap = (int)(maxN < ALLOY_LOSS_CHUNK_ROWS ? maxN : ALLOY_LOSS_CHUNK_ROWS);
    m->loss_chunk_rows = ALLOY_LOSS_CHUNK_ROWS;
    size_t chunk = (size_t)m->loss_chunk_cap * (size_t)m->config.vocab_size;
    m->acts->logits = alloy_pages_alloc(sizeof(float) * n);
    m->loss_chunk = alloy_malloc(sizeof(float) * chunk);
    if (!m->acts->logits || !m->loss_chunk)
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the LM head's outputs (%zu + %zu floats)", n, chunk);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_model_create(alloy_model **out, const alloy_config *cfg, int max_B, int max_T) {
    return alloy_model_create_ex(out, cfg, max_B, max_T, NULL);
}

alloy_status alloy_model_create_ex(alloy_model **out, const alloy_config *cfg, int max_B, int max_T,
                                   const alloy_model_options *opts) {
    *out = NULL;
    alloy_model_options o = opts ? *opts : (alloy_model_options){0};
    if (o.precision == ALLOY_PRECISION_BF16 && !gemm_bf16_supported())
        return alloy_fail(ALLOY_STATUS_USAGE, "bf16 needs a CPU with the avx512_bf16 instructions; this one lacks them");
    if (o.precision != ALLOY_PRECISION_F32 && o.precision != ALLOY_PRECISION_BF16)
        return alloy_fail(ALLOY_STATUS_USAGE, "unknown precision %d", (int)o.precision);
    alloy_status s = alloy_config_validate(cfg, "model config");
    if (s) return s;
    if (max_B < 1 || max_T < 1)
        return alloy_fail(ALLOY_STATUS_USAGE, "batch size and sequence length must be at least 1");
    if (max_T > cfg->max_seq_len)
        return alloy_fail(ALLOY_STATUS_USAGE, "sequence length %d exceeds the model's maximum of %d", max_T,
                          cfg->max_seq_len);
    alloy_model *m = alloy_calloc(1, sizeof *m);
    if (!m) return ALLOY_STATUS_NOMEM;
    m->config = *cfg;
    m->opts = o;
    m->max_B = max_B;
    m->max_T = max_T;

    table_builder tb = {.cap = table_capacity(cfg)};
    tb.t = alloy_calloc((size_t)tb.cap, sizeof *tb.t);
    m->params.layers = alloy_calloc((size_t)cfg->n_layer, sizeof(alloy_layer_params));
    m->grads.layers = alloy_calloc((size_t)cfg->n_layer, sizeof(alloy_layer_params));
    m->acts = alloy_calloc(1, sizeof *m->acts);
    m->gacts = alloy_calloc(1, sizeof *m->gacts);
    if (!tb.t || !m->params.layers || !m->grads.layers || !m->acts || !m->gacts) goto nomem;
    if (cfg->n_experts > 0) {
        size_t LE = (size_t)cfg->n_layer * (size_t)cfg->n_experts;
        m->expert_params = alloy_calloc(LE, sizeof(alloy_expert_params));
        m->expert_grads = alloy_calloc(LE, sizeof(alloy_expert_params));
        m->expert_tokens = alloy_calloc(LE, sizeof(int64_t));
        m->expert_tokens_total = alloy_calloc((size_t)cfg->n_experts, sizeof(int64_t));
        m->router_prob_sum = alloy_calloc(LE, sizeof(double));
        if (!m->expert_params || !m->expert_grads || !m->expert_tokens || !m->expert_tokens_total ||
            !m->router_prob_sum)
            goto nomem;
    }
    build_table(&tb, cfg);
    m->tensors = tb.t;
    m->n_tensors = tb.n;
    m->num_params = tb.total;
    if (tb.overflow || tb.total > ((size_t)1 << 40)) {
        alloy_model_destroy(m);
        return alloy_fail(ALLOY_STATUS_USAGE, "model config: the model is too large");
    }

    act_slot slots[48];
    int n_slots;
    size_t act_total;
    if (!act_slots(m, slots, &n_slots, &act_total) || act_total > ((size_t)1 << 40)) {
        alloy_model_destroy(m);
        return alloy_fail(ALLOY_STATUS_USAGE, "batch %d x sequence %d needs too much activation memory", max_B,
                          max_T);
    }
    if (cfg->n_experts > 0) {
        // the routing indices: topk, slot_row, row_token (Ls·N·K each) and expert_off (Ls·(E+1)),
        // all int32 (a dispatch row index must fit)
        size_t Ls = o.recompute ? 1 : (size_t)cfg->n_layer, NK = (size_t)max_B * (size_t)max_T * (size_t)cfg->top_k;
        if (NK > (size_t)INT32_MAX) {
            alloy_model_destroy(m);
            return alloy_fail(ALLOY_STATUS_USAGE, "batch %d x sequence %d x %d experts per token is too many rows",
                              max_B, max_T, cfg->top_k);
        }
        m->route_ints = Ls * (3 * NK + (size_t)cfg->n_experts + 1);
        if (!(m->route_memory = alloy_calloc(m->route_ints, sizeof(int32_t)))) goto nomem;
        m->acts->topk = m->route_memory;
        m->acts->slot_row = m->acts->topk + Ls * NK;
        m->acts->row_token = m->acts->slot_row + Ls * NK;
        m->acts->expert_off = m->acts->row_token + Ls * NK;
    }
    m->acts_floats = act_total; // before the arenas: destroy needs it to unmap them
    m->params_memory = alloy_pages_alloc(sizeof(float) * m->num_params);
    m->grads_memory = alloy_pages_alloc(sizeof(float) * m->num_params);
    m->acts_memory = alloy_pages_alloc(sizeof(float) * act_total);
    m->tokens = alloy_calloc((size_t)max_B * (size_t)max_T, sizeof(int32_t));
    if (!m->params_memory || !m->grads_memory || !m->acts_memory || !m->tokens) goto nomem;
    if ((s = alloc_head_buffers(m))) {
        alloy_model_destroy(m);
        return s;
    }
    float *p = m->acts_memory;
    for (int i = 0; i < n_slots; i++) {
        *slots[i].ptr = slots[i].count ? p : NULL;
        p += slots[i].count;
    }
    point_params(&m->params, m->expert_params, m->params_memory, m);
    point_params(&m->grads, m->expert_grads, m->grads_memory, m);
    if (cfg->family == ALLOY_FAMILY_LLAMA) {
        int half = alloy_config_head_dim(cfg) / 2;
        m->rope_cos = alloy_malloc(sizeof(float) * (size_t)cfg->max_seq_len * (size_t)half);
        m->rope_sin = alloy_malloc(sizeof(float) * (size_t)cfg->max_seq_len * (size_t)half);
        if (!m->rope_cos || !m->rope_sin) goto nomem;
        rope_init_tables(m->rope_cos, m->rope_sin, cfg->max_seq_len, alloy_config_head_dim(cfg),
                         (float)cfg->rope_theta);
    }
    *out = m;
    return ALLOY_STATUS_OK;
nomem:
    if (!m->tensors) alloy_free(tb.t);
    alloy_model_destroy(m);
    return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory creating the model (%zu parameters, batch %d x %d)",
                      tb.total, max_B, max_T);
}

void alloy_model_destroy(alloy_model *m) {
    if (!m) return;
    alloy_free(m->tensors);
    alloy_free(m->params.layers);
    alloy_free(m->grads.layers);
    alloy_pages_free(m->params_memory, sizeof(float) * m->num_params);
    alloy_pages_free(m->grads_memory, sizeof(float) * m->num_params);
    alloy_pages_free(m->acts_memory, sizeof(float) * m->acts_floats);
    if (m->acts) alloy_pages_free(m->acts->logits, sizeof(float) * model_logits_floats(m));
    alloy_free(m->loss_chunk);
    alloy_free(m->acts);
    alloy_free(m->gacts);
    alloy_free(m->tokens);
    alloy_free(m->rope_cos);
    alloy_free(m->rope_sin);
    alloy_free(m->expert_params);
    alloy_free(m->expert_grads);
    alloy_free(m->route_memory);
    alloy_free(m->expert_tokens);
    alloy_free(m->expert_tokens_total);
    alloy_free(m->router_prob_sum);
    alloy_free(m);
}


const alloy_tensor_info *alloy_model_find_tensor(const alloy_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

bool alloy_tensor_is_router(const char *name) {
    return ends_with(name, ".mlp.gate.weight") || ends_with(name, ".block_sparse_moe.gate.weight");
}

bool alloy_tensor_is_mlp(const char *name) {
    return (strstr(name, ".mlp.") || strstr(name, ".block_sparse_moe.experts.")) && !alloy_tensor_is_router(name);
}

void alloy_model_init_weights(alloy_model *m, uint64_t seed) {
    const alloy_config *c = &m->config;
    float std = 0.02f;
    float resid_std = std / sqrtf(2.0f * (float)c->n_layer);
    memset(m->params_memory, 0, m->num_params * sizeof(float));
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        if (t->ndim == 1) {
            // norms start at one, biases at zero
            float v = ends_with(t->name, ".bias") ? 0.0f : 1.0f;
            for (size_t k = 0; k < t->numel; k++) p[k] = v;
            continue;
        }
        // each tensor draws from its own stream (seed, name): adding a tensor elsewhere in the
        // table does not change the others
        alloy_rng rng;
        alloy_rng_seed(&rng, seed ^ alloy_fnv64(ALLOY_FNV64_INIT, t->name, strlen(t->name)));
        bool resid = ends_with(t->name, ".c_proj.weight") || ends_with(t->name, "o_proj.weight") ||
                     ends_with(t->name, "down_proj.weight") || ends_with(t->name, ".w2.weight");
        float s = resid ? resid_std : std;
        for (size_t k = 0; k < t->numel; k++) p[k] = s * (float)alloy_rng_normal(&rng);
    }
}
