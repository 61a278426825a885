/*
 * test_moe.c — mixtures of experts: the MoE layer's router gradient against finite differences,
 * recomputation, tie-breaking, config.json and the tensor names, bf16, router-only training,
 * the inference engine (prefill, chunked prefill and decode logits of both layouts, top-1 and
 * top-2, against the training forward; quantised engines against fp32; greedy generation), and
 * alloy_moe_build (experts copied bit for bit, shared tensors averaged or from the base,
 * identical experts computing the dense model's function, the hidden router, the classifier
 * router and its fit (objective and minimiser against PyTorch, tests/reference/router_fit_ref.py),
 * refusals).
 * The MoE forward, loss, load-balancing loss and every gradient are checked against the PyTorch
 * twin in tests/test_model.c (test_moe).
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

#define B_ 2
#define T_ 7

static alloy_config moe_config(alloy_family f, int E, int K) {
    alloy_config c = {.family = f, .vocab_size = 29, .max_seq_len = 16, .n_layer = 2, .n_head = 2,
                      .n_kv_head = f == ALLOY_FAMILY_GPT2 ? 2 : 1, .d_model = 16, .d_ff = 24, .norm_eps = 1e-5,
                      .rope_theta = 10000.0, .tie_embeddings = f == ALLOY_FAMILY_GPT2, .n_experts = E, .top_k = K,
                      .router_aux_loss_coef = E ? 0.3 : 0.0};
    return c;
}

/* A seeded model with activations for B x T and weights scaled up (matrices x mscale, routers
 * x rscale, biases and norms perturbed) so that the routing and every parameter matter. */
static alloy_model *make_bt(const alloy_config *c, uint64_t seed, const alloy_model_options *o, int B, int T,
                            float mscale, float rscale) {
    alloy_model *m;
    if (alloy_model_create_ex(&m, c, B, T, o)) {
        fprintf(stderr, "  create: %s\n", alloy_last_error());
        return NULL;
    }
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed + 99);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        bool bias = strstr(t->name, ".bias") != NULL;
        for (size_t k = 0; k < t->numel; k++) {
            if (t->ndim == 2) p[k] *= alloy_tensor_is_router(t->name) ? rscale : mscale;
            else if (bias) p[k] = 0.1f * (float)alloy_rng_normal(&rng);
            else p[k] = 1.0f + 0.2f * (float)alloy_rng_normal(&rng);
        }
    }
    return m;
}

static alloy_model *make(const alloy_config *c, uint64_t seed, const alloy_model_options *o) {
    return make_bt(c, seed, o, B_, T_, 4.0f, 10.0f);
}

static void make_tokens(int32_t *tok, int32_t *tgt, int V, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < B_ * T_; i++) {
        tok[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
        tgt[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
    }
}

/* The training loss: LM loss + coef · aux (what alloy_model_backward differentiates). */
static double total_loss(alloy_model *m, const int32_t *tok, const int32_t *tgt) {
    float l = 0.0f;
    if (alloy_model_forward(m, tok, B_, T_) || alloy_lm_loss(m, tgt, NULL, B_, T_, 0.0f, NULL, &l)) return NAN;
    return (double)l + m->config.router_aux_loss_coef * (double)alloy_model_aux_loss(m);
}

/* Whether every layer of m's last forward chose the experts in routes (L, B_·T_, K); with
 * save, copies them there instead. */
static bool same_routes(const alloy_model *m, int32_t *routes, bool save) {
    size_t NK = (size_t)B_ * T_ * (size_t)m->config.top_k;
    bool same = true;
    for (int l = 0; l < m->config.n_layer; l++) {
        const int32_t *e;
        const float *g;
        alloy_model_routes(m, l, &e, &g);
        if (save) memcpy(routes + l * NK, e, sizeof(int32_t) * NK);
        else same &= !memcmp(routes + l * NK, e, sizeof(int32_t) * NK);
    }
    return same;
}

/* Central differences on entries of every router (and one expert's up-projection), skipping an
 * entry whose perturbation changes any routing decision (the loss is not smooth there). */
static void fd_check(const char *label, alloy_family f, int E, int K) {
    alloy_config c = moe_config(f, E, K);
    alloy_model *m = make(&c, 7 + (uint64_t)E * 3 + (uint64_t)K, NULL);
    REQUIRE(m, "%s: model", label);
    int32_t tok[B_ * T_], tgt[B_ * T_];
    make_tokens(tok, tgt, c.vocab_size, 5);
    float l;
    alloy_status s = alloy_model_forward(m, tok, B_, T_);
    if (!s) s = alloy_lm_loss(m, tgt, NULL, B_, T_, 1.0f, alloy_model_logits(m), &l);
    alloy_model_zero_grad(m);
    if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
    REQUIRE(s == ALLOY_STATUS_OK, "%s: %s", label, alloy_last_error());
    size_t NK = (size_t)c.n_layer * B_ * T_ * (size_t)K;
    int32_t *routes = malloc(sizeof(int32_t) * NK);
    same_routes(m, routes, true);
    char names[3][ALLOY_MAX_NAME];
    bool gpt2 = f == ALLOY_FAMILY_GPT2;
    snprintf(names[0], sizeof names[0], gpt2 ? "transformer.h.0.mlp.gate.weight" : "model.layers.0.block_sparse_moe.gate.weight");
    snprintf(names[1], sizeof names[1], gpt2 ? "transformer.h.1.mlp.gate.weight" : "model.layers.1.block_sparse_moe.gate.weight");
    snprintf(names[2], sizeof names[2],
             gpt2 ? "transformer.h.0.mlp.experts.1.c_fc.weight" : "model.layers.0.block_sparse_moe.experts.1.w3.weight");
    const double h = 1e-2; // float rounding of the loss (~3e-7) stays ~3e-5 of the difference quotient
    int checked = 0, skipped = 0;
    double worst = 0.0;
    for (int n = 0; n < 3; n++) {
        const alloy_tensor_info *t = alloy_model_find_tensor(m, names[n]);
        REQUIRE(t, "%s: no tensor %s", label, names[n]);
        for (size_t k = 0; k < t->numel; k += t->numel / 24 + 1) {
            float *p = m->params_memory + t->offset + k, saved = *p;
            *p = saved + (float)h;
            double lp = total_loss(m, tok, tgt);
            bool same = same_routes(m, routes, false);
            *p = saved - (float)h;
            double lm = total_loss(m, tok, tgt);
            same &= same_routes(m, routes, false);
            *p = saved;
            if (!same) {
                skipped++;
                continue;
            }
            double fd = (lp - lm) / (2.0 * h), an = m->grads_memory[t->offset + k];
            double err = fabs(fd - an) / (fabs(an) + 5e-3);
            if (err > worst) worst = err;
            checked++;
            EXPECT(err < 1e-2, "%s: d loss / d %s[%zu]: finite differences %.6g, backward %.6g", label, names[n], k, fd,
                   an);
        }
    }
    EXPECT(checked >= 40, "%s: only %d entries checked (%d skipped for routing changes)", label, checked, skipped);
    printf("# %s: %d router/expert entries within %.2e of finite differences (relative, floor 5e-3); %d skipped\n",
           label, checked, worst, skipped);
    free(routes);
    alloy_model_destroy(m);
}

static void test_fd_router(void) {
    fd_check("gpt2 E=4 K=2", ALLOY_FAMILY_GPT2, 4, 2);
    fd_check("llama E=3 K=2", ALLOY_FAMILY_LLAMA, 3, 2);
    fd_check("llama E=4 K=1 (aux loss only)", ALLOY_FAMILY_LLAMA, 4, 1);
    fd_check("gpt2 E=3 K=3 (all experts)", ALLOY_FAMILY_GPT2, 3, 3);
}

/* With recompute the loss, the aux loss, the counts and every gradient are bitwise the same. */
static void test_recompute(void) {
    for (int f = 0; f < 2; f++) {
        alloy_config c = moe_config((alloy_family)f, 4, 2);
        alloy_model_options ro = {.recompute = true};
        alloy_model *a = make(&c, 3, NULL), *b = make(&c, 3, &ro);
        REQUIRE(a && b, "models");
        int32_t tok[B_ * T_], tgt[B_ * T_];
        make_tokens(tok, tgt, c.vocab_size, 9);
        float la, lb;
        alloy_model *ms[2] = {a, b};
        float *ls[2] = {&la, &lb};
        for (int i = 0; i < 2; i++) {
            alloy_model_zero_grad(ms[i]);
            alloy_status s = alloy_model_forward_ex(ms[i], tok, B_, T_, false);
            float *dh = alloy_model_dhidden_buffer(ms[i]);
            if (!s) s = alloy_lm_loss_chunked(ms[i], tgt, NULL, B_, T_, 0.5f, dh, ls[i]);
            if (!s) s = alloy_model_backward(ms[i], &(alloy_backward_in){.dhidden = dh, .aux_scale = 0.5f});
            EXPECT(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
        }
        float xa = alloy_model_aux_loss(a), xb = alloy_model_aux_loss(b);
        EXPECT(la == lb && xa == xb, "%s: recompute changed the loss (%g %g) or aux (%g %g)", alloy_family_name(c.family),
               la, lb, xa, xb);
        EXPECT(!memcmp(alloy_model_expert_tokens(a), alloy_model_expert_tokens(b), sizeof(int64_t) * 8),
               "recompute changed the counts");
        EXPECT(!memcmp(a->grads_memory, b->grads_memory, sizeof(float) * a->num_params),
               "%s: recompute changed the gradients", alloy_family_name(c.family));
        EXPECT(alloy_model_activation_bytes(b) < alloy_model_activation_bytes(a), "recompute saved no memory");
        alloy_model_destroy(a);
        alloy_model_destroy(b);
    }
}

/* A zero router gives every expert the same probability: the ties go to the lower indices,
 * the gates are 1/K, each of the first K experts gets every token, and aux = E·Σ(c/LN)(1/E) = K. */
static void test_ties(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 5, 3);
    alloy_model *m = make(&c, 4, NULL);
    REQUIRE(m, "model");
    for (int l = 0; l < c.n_layer; l++) memset(m->params.layers[l].router_w, 0, sizeof(float) * 5 * 16);
    int32_t tok[B_ * T_], tgt[B_ * T_];
    make_tokens(tok, tgt, c.vocab_size, 1);
    REQUIRE(alloy_model_forward(m, tok, B_, T_) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    bool ok = true;
    for (int l = 0; l < c.n_layer; l++) {
        const int32_t *experts;
        const float *gates;
        alloy_model_routes(m, l, &experts, &gates);
        for (int i = 0; i < B_ * T_; i++)
            for (int k = 0; k < 3; k++) ok &= experts[i * 3 + k] == k && fabsf(gates[i * 3 + k] - 1.0f / 3) < 1e-7f;
    }
    EXPECT(ok, "ties are not broken towards the lower index with equal gates");
    const int64_t *counts = alloy_model_expert_tokens(m); // (L, E)
    for (int e = 0; e < 5; e++) {
        int64_t total = 0;
        for (int l = 0; l < c.n_layer; l++) total += counts[l * 5 + e];
        EXPECT(total == (e < 3 ? 2 * B_ * T_ : 0), "expert %d got %lld tokens", e, (long long)total);
    }
    float aux = alloy_model_aux_loss(m);
    EXPECT(fabsf(aux - 3.0f) < 1e-5f, "aux loss of a uniform router %g, expected K = 3", aux);
    alloy_model_destroy(m);
}

/* config.json: a Llama MoE is Mixtral; a GPT-2 MoE keeps gpt2 with the Mixtral keys; bad values
 * are refused naming the field. */
static void test_config_json(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 4, 2), back;
    cJSON *j = alloy_config_to_json(&c);
    REQUIRE(j, "to json");
    const cJSON *mt = cJSON_GetObjectItem(j, "model_type"), *ar = cJSON_GetObjectItem(j, "architectures");
    EXPECT(mt && !strcmp(mt->valuestring, "mixtral"), "model_type is not mixtral");
    EXPECT(ar && cJSON_GetArraySize(ar) == 1 && !strcmp(cJSON_GetArrayItem(ar, 0)->valuestring, "MixtralForCausalLM"),
           "architectures is not [MixtralForCausalLM]");
    EXPECT(alloy_config_from_json(&back, j, "x") == ALLOY_STATUS_OK && back.n_experts == 4 && back.top_k == 2 &&
               back.router_aux_loss_coef == 0.3 && back.family == ALLOY_FAMILY_LLAMA,
           "mixtral round trip: %s", alloy_last_error());
    cJSON_ReplaceItemInObject(j, "num_experts_per_tok", cJSON_CreateNumber(5));
    EXPECT(alloy_config_from_json(&back, j, "cfg.json") == ALLOY_STATUS_FORMAT &&
               strstr(alloy_last_error(), "cfg.json: num_experts_per_tok 5 must lie in [1, num_local_experts = 4]"),
           "K > E: %s", alloy_last_error());
    cJSON_ReplaceItemInObject(j, "num_experts_per_tok", cJSON_CreateNumber(2));
    cJSON_ReplaceItemInObject(j, "sliding_window", cJSON_CreateNumber(4));
    EXPECT(alloy_config_from_json(&back, j, "cfg.json") == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "sliding_window"),
           "sliding window: %s", alloy_last_error());
    cJSON_DeleteItemFromObject(j, "sliding_window");
    cJSON_DeleteItemFromObject(j, "num_local_experts");
    cJSON_DeleteItemFromObject(j, "num_experts_per_tok");
    cJSON_DeleteItemFromObject(j, "router_aux_loss_coef");
    EXPECT(alloy_config_from_json(&back, j, "x") == ALLOY_STATUS_OK && back.n_experts == 8 && back.top_k == 2 &&
               back.router_aux_loss_coef == 0.001,
           "mixtral defaults (8, 2, 0.001): %d %d %g", back.n_experts, back.top_k, back.router_aux_loss_coef);
    cJSON_Delete(j);
    c = moe_config(ALLOY_FAMILY_GPT2, 3, 1);
    j = alloy_config_to_json(&c);
    mt = cJSON_GetObjectItem(j, "model_type");
    EXPECT(mt && !strcmp(mt->valuestring, "gpt2"), "GPT-2 MoE model_type");
    EXPECT(alloy_config_from_json(&back, j, "x") == ALLOY_STATUS_OK && back.n_experts == 3 && back.top_k == 1,
           "gpt2 moe round trip: %s", alloy_last_error());
    cJSON_Delete(j);
    c = moe_config(ALLOY_FAMILY_LLAMA, 0, 0);
    j = alloy_config_to_json(&c);
    mt = cJSON_GetObjectItem(j, "model_type");
    EXPECT(mt && !strcmp(mt->valuestring, "llama") && !cJSON_GetObjectItem(j, "num_local_experts"),
           "a dense Llama stays llama");
    cJSON_Delete(j);
}

/* The parameter table in the Mixtral layout (and alloy's GPT-2 one), w1 and w3 one stacked matrix. */
static void test_names(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 3, 2);
    c.d_model = 20, c.n_head = 2, c.n_kv_head = 1, c.d_ff = 13; // sizes not multiples of 16
    alloy_model *m;
    REQUIRE(alloy_model_create(&m, &c, 1, 4) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    static const struct {
        const char *name;
        int64_t d0, d1;
    } want[] = {
        {"model.layers.1.block_sparse_moe.gate.weight", 3, 20},
        {"model.layers.1.block_sparse_moe.experts.2.w1.weight", 13, 20},
        {"model.layers.1.block_sparse_moe.experts.2.w3.weight", 13, 20},
        {"model.layers.1.block_sparse_moe.experts.2.w2.weight", 20, 13},
        {"model.layers.0.self_attn.k_proj.weight", 10, 20},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const alloy_tensor_info *t = alloy_model_find_tensor(m, want[i].name);
        EXPECT(t && t->shape[0] == want[i].d0 && t->shape[1] == want[i].d1, "tensor %s", want[i].name);
    }
    EXPECT(!alloy_model_find_tensor(m, "model.layers.0.mlp.gate_proj.weight"), "an MoE layer kept a dense MLP");
    const alloy_tensor_info *w1 = alloy_model_find_tensor(m, "model.layers.0.block_sparse_moe.experts.1.w1.weight");
    const alloy_tensor_info *w3 = alloy_model_find_tensor(m, "model.layers.0.block_sparse_moe.experts.1.w3.weight");
    EXPECT(w1 && w3 && w3->offset == w1->offset + w1->numel, "w1 and w3 are not one stacked matrix");
    EXPECT(m->params.layers[0].experts[1].up_w == m->params_memory + w1->offset, "expert pointers");
    const alloy_tensor_info *q = alloy_model_find_tensor(m, "model.layers.0.self_attn.q_proj.weight");
    const alloy_tensor_info *k = alloy_model_find_tensor(m, "model.layers.0.self_attn.k_proj.weight");
    const alloy_tensor_info *v = alloy_model_find_tensor(m, "model.layers.0.self_attn.v_proj.weight");
    EXPECT(k->offset == q->offset + q->numel && v->offset == k->offset + k->numel, "q, k, v are not one stacked matrix");
    EXPECT(m->n_tensors == 1 + 2 * (6 + 1 + 3 * 3) + 2, "%d tensors", m->n_tensors);
    for (int i = 0; i < m->n_tensors; i++) { // stacked parts follow each other; all else is aligned
        const char *n = m->tensors[i].name;
        bool inner = strstr(n, "k_proj") || strstr(n, "v_proj") || strstr(n, ".w3.");
        EXPECT(inner || m->tensors[i].offset % 16 == 0, "%s is not 64-byte aligned", n);
    }
    alloy_model_destroy(m);
    c = moe_config(ALLOY_FAMILY_GPT2, 2, 1);
    REQUIRE(alloy_model_create(&m, &c, 1, 4) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const alloy_tensor_info *t = alloy_model_find_tensor(m, "transformer.h.1.mlp.experts.1.c_proj.bias");
    EXPECT(t && t->shape[0] == 16, "gpt2 expert bias");
    t = alloy_model_find_tensor(m, "transformer.h.0.mlp.gate.weight");
    EXPECT(t && t->shape[0] == 2 && t->shape[1] == 16 && alloy_tensor_is_router(t->name), "gpt2 router");
    alloy_model_destroy(m);
}

/* bf16 products (the router stays fp32): the loss close to fp32's. */
static void test_bf16(void) {
    if (!gemm_bf16_supported()) SKIP("cpu: no avx512_bf16");
    for (int f = 0; f < 2; f++) {
        alloy_config c = moe_config((alloy_family)f, 4, 2);
        alloy_model_options bo = {.precision = ALLOY_PRECISION_BF16};
        alloy_model *a = make(&c, 21, NULL), *b = make(&c, 21, &bo);
        REQUIRE(a && b, "models");
        int32_t tok[B_ * T_], tgt[B_ * T_];
        make_tokens(tok, tgt, c.vocab_size, 2);
        float la = 0, lb = 0;
        alloy_status s = alloy_model_forward(a, tok, B_, T_);
        if (!s) s = alloy_lm_loss(a, tgt, NULL, B_, T_, 1.0f, alloy_model_logits(a), &la);
        if (!s) s = alloy_model_forward(b, tok, B_, T_);
        if (!s) s = alloy_lm_loss(b, tgt, NULL, B_, T_, 1.0f, alloy_model_logits(b), &lb);
        if (!s) s = alloy_model_backward(b, &(alloy_backward_in){.dlogits = alloy_model_logits(b), .aux_scale = 1.0f});
        EXPECT(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(fabsf(la - lb) < 5e-2f * fabsf(la), "%s bf16 loss %g vs f32 %g", alloy_family_name(c.family), lb, la);
        alloy_model_destroy(a);
        alloy_model_destroy(b);
    }
}

/* steps AdamW steps (lr 1e-2) of the LM loss on one batch of make_tokens(seed); the first and
 * last losses. */
static void train_steps(alloy_model *m, alloy_optimizer *o, uint64_t seed, int steps, float *first, float *last) {
    int32_t tok[B_ * T_], tgt[B_ * T_];
    make_tokens(tok, tgt, m->config.vocab_size, seed);
    for (int step = 0; step < steps; step++) {
        float l = 0.0f;
        alloy_status s = alloy_model_forward(m, tok, B_, T_);
        if (!s) s = alloy_lm_loss(m, tgt, NULL, B_, T_, 1.0f, alloy_model_logits(m), &l);
        alloy_model_zero_grad(m);
        if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
        if (!s) s = alloy_optimizer_step(o, m, 1e-2f, NULL);
        EXPECT(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
        if (step == 0) *first = l;
        *last = l;
    }
}

/* *o = an AdamW optimiser of m that trains `which` alone (NULL on failure); *before gets a copy
 * of the parameters. */
static void partial_optimizer(alloy_model *m, alloy_train_only which, float **before, alloy_optimizer **o) {
    *o = NULL;
    *before = malloc(sizeof(float) * m->num_params);
    REQUIRE(*before, "malloc");
    memcpy(*before, m->params_memory, sizeof(float) * m->num_params);
    alloy_adamw_config ac = alloy_adamw_defaults();
    REQUIRE(alloy_optimizer_create(o, m, &ac) == ALLOY_STATUS_OK, "optimizer");
    EXPECT(alloy_optimizer_train_only(*o, m, which) == ALLOY_STATUS_OK, "%s", alloy_last_error());
}

/* MLP-only training: a dense model's feed-forward tensors move, an MoE's experts move, and
 * nothing else (not the routers, attention, norms or embeddings), in both families. */
static void test_train_only_mlp(void) {
    for (int f = 0; f < 2; f++)
        for (int moe = 0; moe < 2; moe++) {
            alloy_family fam = f ? ALLOY_FAMILY_LLAMA : ALLOY_FAMILY_GPT2;
            alloy_config c = moe ? moe_config(fam, 3, 2) : moe_config(fam, 0, 0);
            alloy_model *m = make(&c, 9, NULL);
            REQUIRE(m, "model");
            float *before;
            alloy_optimizer *o;
            partial_optimizer(m, ALLOY_TRAIN_ONLY_MLP, &before, &o);
            REQUIRE(o, "optimizer");
            float first, last;
            train_steps(m, o, 4, 3, &first, &last);
            int mlp = 0, changed_mlp = 0, changed_other = 0;
            for (int i = 0; i < m->n_tensors; i++) {
                const alloy_tensor_info *t = &m->tensors[i];
                bool changed = memcmp(before + t->offset, m->params_memory + t->offset, sizeof(float) * t->numel) != 0;
                bool is_mlp = alloy_tensor_is_mlp(t->name);
                EXPECT(!(is_mlp && alloy_tensor_is_router(t->name)), "%s is both", t->name);
                mlp += is_mlp;
                if (is_mlp) changed_mlp += changed;
                else changed_other += changed;
            }
            // GPT-2: c_fc and c_proj weights and biases per layer (per expert); Llama: gate+up, down
            int per = fam == ALLOY_FAMILY_GPT2 ? 4 : 3;
            int want = c.n_layer * per * (moe ? c.n_experts : 1);
            EXPECT(mlp == want && changed_mlp == want && changed_other == 0,
                   "%s %s: %d MLP tensors (want %d), %d of them and %d other tensors changed", alloy_family_name(fam),
                   moe ? "moe" : "dense", mlp, want, changed_mlp, changed_other);
            alloy_optimizer_destroy(o);
            free(before);
            alloy_model_destroy(m);
        }
}

/* Router-only training: AdamW moves the routers and nothing else (not even by weight decay). */
static void test_train_only_router(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 3, 2);
    alloy_model *m = make(&c, 8, NULL);
    REQUIRE(m, "model");
    float *before;
    alloy_optimizer *o;
    partial_optimizer(m, ALLOY_TRAIN_ONLY_ROUTER, &before, &o);
    REQUIRE(o, "optimizer");
    float first = 0, last = 0;
    train_steps(m, o, 3, 5, &first, &last);
    int changed_router = 0, changed_other = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        bool changed = memcmp(before + t->offset, m->params_memory + t->offset, sizeof(float) * t->numel) != 0;
        if (alloy_tensor_is_router(t->name)) changed_router += changed;
        else changed_other += changed;
    }
    EXPECT(changed_router == c.n_layer && changed_other == 0, "%d routers and %d other tensors changed", changed_router,
           changed_other);
    EXPECT(last < first, "router training did not lower the loss (%g -> %g)", first, last);
    alloy_optimizer_destroy(o);
    // a dense model has no routers to train
    alloy_config d = moe_config(ALLOY_FAMILY_LLAMA, 0, 0);
    alloy_model *dm = make(&d, 8, NULL);
    alloy_adamw_config ac = alloy_adamw_defaults();
    REQUIRE(dm && alloy_optimizer_create(&o, dm, &ac) == ALLOY_STATUS_OK, "dense");
    EXPECT(alloy_optimizer_train_only(o, dm, ALLOY_TRAIN_ONLY_ROUTER) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "train_only router: the model has no experts"),
           "dense: %s", alloy_last_error());
    alloy_optimizer_destroy(o);
    alloy_model_destroy(dm);
    free(before);
    alloy_model_destroy(m);
}

/* ---- the inference engine on MoE models ---- */

/* max|a - b| / max|b| over n values */
static double scale_err(const float *a, const float *b, size_t n) {
    double dmax = 0.0, bmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > dmax || isnan(d)) dmax = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    return bmax > 0 ? dmax / bmax : dmax;
}

/* ||a - b|| / ||b|| over n values */
static double rms_err(const float *a, const float *b, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

#define NSEQ 3

/* Three sequences (the first fills the context) through an engine: their prompts prefilled
 * together with every row's logits (in chunks of max_rows), then decoded together one token
 * per step (one row per sequence: the experts grouped over the batch); each row against the
 * training model's forward over the whole sequence. Returns the largest max error / scale. */
static double engine_vs_forward(alloy_model *m, int max_rows, const int *prompt, int64_t *used) {
    const alloy_config *c = &m->config;
    int V = c->vocab_size;
    const int total[NSEQ] = {c->max_seq_len, 11, 7};
    int32_t toks[NSEQ][64];
    float *ref[NSEQ];
    for (int b = 0; b < NSEQ; b++) {
        alloy_rng rng;
        alloy_rng_seed(&rng, 40 + (uint64_t)b);
        for (int t = 0; t < total[b]; t++) toks[b][t] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
        ref[b] = malloc(sizeof(float) * (size_t)total[b] * V);
        if (alloy_model_forward(m, toks[b], 1, total[b])) return INFINITY;
        memcpy(ref[b], alloy_model_logits(m), sizeof(float) * (size_t)total[b] * V);
        for (int i = 0; i < c->n_layer * c->n_experts; i++) used[i] += alloy_model_expert_tokens(m)[i];
    }
    alloy_engine *e;
    if (alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = NSEQ, .max_rows = max_rows})) {
        fprintf(stderr, "  engine: %s\n", alloy_last_error());
        return INFINITY;
    }
    float *logits = malloc(sizeof(float) * 64 * NSEQ * (size_t)V);
    int seqs[NSEQ] = {0, 1, 2}, lens[NSEQ];
    const int32_t *pp[NSEQ];
    for (int b = 0; b < NSEQ; b++) pp[b] = toks[b], lens[b] = prompt[b];
    double worst = 0.0;
    if (alloy_engine_prefill_batch(e, logits, ALLOY_LOGITS_ALL, seqs, pp, lens, NSEQ)) {
        fprintf(stderr, "  prefill: %s\n", alloy_last_error());
        worst = INFINITY;
    }
    size_t row = 0;
    for (int b = 0; b < NSEQ; b++)
        for (int t = 0; t < prompt[b]; t++, row++) {
            double err = scale_err(logits + row * V, ref[b] + (size_t)t * V, (size_t)V);
            worst = err > worst ? err : worst;
        }
    for (int step = 0; worst < INFINITY; step++) {
        int k = 0, sq[NSEQ];
        int32_t tk[NSEQ];
        for (int b = 0; b < NSEQ; b++)
            if (prompt[b] + step < total[b]) sq[k] = b, tk[k] = toks[b][prompt[b] + step], k++;
        if (k == 0) break;
        if (alloy_engine_decode(e, logits, sq, tk, k)) {
            fprintf(stderr, "  decode: %s\n", alloy_last_error());
            worst = INFINITY;
            break;
        }
        for (int i = 0; i < k; i++) {
            double err = scale_err(logits + (size_t)i * V, ref[sq[i]] + (size_t)(prompt[sq[i]] + step) * V, (size_t)V);
            worst = err > worst ? err : worst;
        }
    }
    free(logits);
    for (int b = 0; b < NSEQ; b++) free(ref[b]);
    alloy_engine_destroy(e);
    return worst;
}

/* The engine's logits of an MoE model (prefill, chunked prefill, decode from one token) equal
 * the training model's forward: GPT-2 layout (alloy's own) and Mixtral layout with GQA, top-1
 * and top-2. The two paths sum in different orders (sgemv and sgemm, attention over the cache),
 * ~1e-7 of the scale; a different routing decision would give O(1). */
static void test_engine_forward(void) {
    static const struct {
        alloy_family f;
        int E, K;
    } cases[] = {{ALLOY_FAMILY_GPT2, 4, 2}, {ALLOY_FAMILY_GPT2, 3, 1}, {ALLOY_FAMILY_LLAMA, 4, 1}, {ALLOY_FAMILY_LLAMA, 3, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        alloy_config c = moe_config(cases[i].f, cases[i].E, cases[i].K);
        c.n_head = 4;
        c.n_kv_head = cases[i].f == ALLOY_FAMILY_GPT2 ? 4 : 2; // Llama: grouped-query attention
        alloy_model *m = make_bt(&c, 50 + i, NULL, 1, c.max_seq_len, 4.0f, 10.0f);
        REQUIRE(m, "model");
        char label[64];
        snprintf(label, sizeof label, "%s E=%d K=%d", alloy_family_name(c.family), c.n_experts, c.top_k);
        const int prompts[NSEQ] = {6, 1, 4}, singles[NSEQ] = {1, 1, 1};
        int64_t counts[2 * 4] = {0};
        double e1 = engine_vs_forward(m, 512, prompts, counts);
        double e2 = engine_vs_forward(m, 4, prompts, counts); // chunks of 4 rows across sequences
        double e3 = engine_vs_forward(m, 512, singles, counts); // almost all decode steps
        // every expert of every layer gets rows: the routing is exercised
        bool used = true;
        for (int x = 0; x < c.n_layer * c.n_experts; x++) used &= counts[x] > 0;
        EXPECT(used, "%s: an expert gets no tokens; the test does not exercise the routing", label);
        EXPECT(e1 <= 1e-4 && e2 <= 1e-4 && e3 <= 1e-4, "%s: engine vs forward: %.3g, chunked %.3g, decode %.3g", label,
               e1, e2, e3);
        printf("# %s: engine vs training forward, max error / scale: prefill+decode %.2e, chunks of 4 %.2e, "
               "decode %.2e\n", label, e1, e2, e3);
        alloy_model_destroy(m);
    }
}

/* Logits (T, V) of one sequence through an engine of format wt: the first `prefill` tokens at
 * once, then the rest one decode step at a time (or, continued, as a second prefill). */
static float *engine_logits(alloy_model *m, alloy_qtype wt, const int32_t *tokens, int T, int prefill, bool continued) {
    int V = m->config.vocab_size;
    alloy_engine *e;
    if (alloy_engine_create(&e, m, &(alloy_engine_options){.weights = wt})) {
        fprintf(stderr, "  engine %s: %s\n", alloy_qtype_name(wt), alloy_last_error());
        return NULL;
    }
    float *out = malloc(sizeof(float) * (size_t)T * V);
    int seq = 0, n = prefill;
    bool ok = !alloy_engine_prefill_batch(e, out, ALLOY_LOGITS_ALL, &seq, &tokens, &n, 1);
    if (continued && ok) {
        const int32_t *rest = tokens + prefill;
        n = T - prefill;
        ok = !alloy_engine_prefill_batch(e, out + (size_t)prefill * V, ALLOY_LOGITS_ALL, &seq, &rest, &n, 1);
    }
    for (int t = prefill; t < T && ok && !continued; t++) ok = !alloy_engine_decode(e, out + (size_t)t * V, &seq, tokens + t, 1);
    alloy_engine_destroy(e);
    if (!ok) {
        fprintf(stderr, "  engine %s: %s\n", alloy_qtype_name(wt), alloy_last_error());
        free(out);
        return NULL;
    }
    return out;
}

/* Rounds every matrix but the embedding and the routers through format t (quantise,
 * dequantise): the weights a quantised engine computes with. Llama only (its matrices are
 * (out, in) as quantised, its head untied here). */
static void round_matrices(alloy_model *m, alloy_qtype t) {
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        if (ti->ndim != 2 || strstr(ti->name, "embed_tokens") || alloy_tensor_is_router(ti->name))
            continue;
        int64_t rows = ti->shape[0], cols = ti->shape[1];
        uint8_t *q = malloc(alloy_quant_row_bytes(t, cols));
        for (int64_t r = 0; r < rows; r++) {
            float *row = m->params_memory + ti->offset + (size_t)r * cols;
            alloy_quantize_row(t, q, row, cols);
            alloy_dequantize_row(t, row, q, cols);
        }
        free(q);
    }
}

/* Quantised engines of an MoE (C 256, 4 experts of F 512, top-2; routers fp32) against the fp32
 * engine, within the dense engine's tolerances (tests/test_infer.c: QUANT_TOL, ROUNDED_TOL);
 * a continued prefill equals decode steps bitwise (the router sums each row in one order);
 * Llama against the fp32 engine on the rounded weights (which isolates the products and their
 * layout): f16 to fp32 rounding, the integer formats to the 8-bit rounding of x. */
static void test_engine_quant(void) {
    static const double QUANT_TOL[ALLOY_QTYPE_COUNT] = {0.0, 1e-3, 4e-2, 0.45, 0.4};
    static const double ROUNDED_TOL[ALLOY_QTYPE_COUNT] = {0.0, 1e-5, 3.5e-2, 3.5e-2, 3.5e-2};
    for (int f = 0; f < 2; f++) {
        alloy_config c = moe_config((alloy_family)f, 4, 2);
        c.d_model = 256;
        c.d_ff = 512;
        c.n_head = 4;
        c.n_kv_head = f ? 2 : 4;
        c.max_seq_len = 24;
        const int T = 24;
        alloy_model *m = make_bt(&c, 5, NULL, 1, T, 1.0f, 10.0f);
        REQUIRE(m, "model");
        int32_t tokens[24];
        alloy_rng rng;
        alloy_rng_seed(&rng, 9);
        for (int t = 0; t < T; t++) tokens[t] = (int32_t)alloy_rng_below(&rng, (uint64_t)c.vocab_size);
        size_t n = (size_t)T * c.vocab_size;
        float *ref = engine_logits(m, ALLOY_QTYPE_F32, tokens, T, 10, false);
        REQUIRE(ref, "fp32 engine");
        char line[512];
        int k = snprintf(line, sizeof line, "# %s MoE C 256 E 4 K 2: ||error|| / ||fp32 logits||:", alloy_family_name(c.family));
        for (int t = ALLOY_QTYPE_F16; t < ALLOY_QTYPE_COUNT; t++) {
            const char *tn = alloy_qtype_name((alloy_qtype)t);
            float *q = engine_logits(m, (alloy_qtype)t, tokens, T, 10, false);
            float *q2 = engine_logits(m, (alloy_qtype)t, tokens, T, 10, true);
            if (!q || !q2) {
                EXPECT(false, "%s engine failed", tn);
                free(q);
                free(q2);
                continue;
            }
            double err = rms_err(q, ref, n);
            EXPECT(err <= QUANT_TOL[t], "%s: %s against fp32: %.3g > %.3g", alloy_family_name(c.family), tn, err, QUANT_TOL[t]);
            EXPECT(!memcmp(q, q2, sizeof(float) * n), "%s: %s: a continued prefill differs from decode steps (%.3g)",
                   alloy_family_name(c.family), tn, scale_err(q2, q, n));
            k += snprintf(line + k, sizeof line - (size_t)k, " %s %.2e", tn, err);
            if (f == ALLOY_FAMILY_LLAMA) { // GPT-2 ties the head to the embedding, which stays fp32
                alloy_model *mr = make_bt(&c, 5, NULL, 1, T, 1.0f, 10.0f);
                round_matrices(mr, (alloy_qtype)t);
                float *rr = engine_logits(mr, ALLOY_QTYPE_F32, tokens, T, 10, false);
                double er = !rr ? INFINITY : t == ALLOY_QTYPE_F16 ? scale_err(q, rr, n) : rms_err(q, rr, n);
                EXPECT(er <= ROUNDED_TOL[t], "%s: %s against fp32 on the rounded weights: %.3g > %.3g",
                       alloy_family_name(c.family), tn, er, ROUNDED_TOL[t]);
                k += snprintf(line + k, sizeof line - (size_t)k, " (rounded %.2e)", er);
                free(rr);
                alloy_model_destroy(mr);
            }
            free(q);
            free(q2);
        }
        printf("%s\n", line);
        // what the engine holds: every expert quantised, the routers fp32
        alloy_engine *e;
        REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q8_0}), "%s", alloy_last_error());
        alloy_engine_info info;
        alloy_engine_get_info(e, &info);
        EXPECT(info.n_matrices[ALLOY_QTYPE_Q8_0] == c.n_layer * (2 + 2 * 4) + 1 && info.n_matrices[ALLOY_QTYPE_F32] == c.n_layer,
               "%d matrices in q8_0, %d in f32", info.n_matrices[ALLOY_QTYPE_Q8_0], info.n_matrices[ALLOY_QTYPE_F32]);
        alloy_engine_destroy(e);
        free(ref);
        alloy_model_destroy(m);
    }
}

/* Greedy generation through the engine equals an argmax loop over the training forward. */
static void test_engine_generate(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 4, 2);
    alloy_model *m = make_bt(&c, 77, NULL, 1, c.max_seq_len, 4.0f, 10.0f);
    REQUIRE(m, "model");
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2}), "%s", alloy_last_error());
    alloy_generate_options o;
    alloy_generate_options_default(&o);
    o.sampling.temperature = 0.0f;
    o.max_tokens = 10;
    int32_t p0[3] = {1, 2, 3}, p1[2] = {7, 5};
    const int32_t *prompts[2] = {p0, p1};
    int lens[2] = {3, 2};
    alloy_generation g[2] = {0};
    REQUIRE(!alloy_generate(e, g, prompts, lens, 2, &o, NULL, NULL), "%s", alloy_last_error());
    for (int i = 0; i < 2; i++) {
        int32_t seq[32];
        int n = lens[i];
        memcpy(seq, prompts[i], sizeof(int32_t) * (size_t)n);
        bool same = g[i].ids.n == 10;
        for (int t = 0; t < 10 && same; t++) {
            REQUIRE(!alloy_model_forward(m, seq, 1, n), "%s", alloy_last_error());
            const float *row = alloy_model_logits(m) + (size_t)(n - 1) * c.vocab_size;
            int best = 0;
            for (int v = 1; v < c.vocab_size; v++) best = row[v] > row[best] ? v : best;
            same &= g[i].ids.data[t] == best;
            seq[n++] = best;
        }
        EXPECT(same, "request %d: greedy generation differs from the forward's argmax", i);
        alloy_generation_free(&g[i]);
    }
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
}

/* ---- alloy_moe_build ---- */

static void logits_of(alloy_model *m, const int32_t *tok, float *out) {
    alloy_status s = alloy_model_forward(m, tok, B_, T_);
    EXPECT(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
    memcpy(out, alloy_model_logits(m), sizeof(float) * B_ * T_ * (size_t)m->config.vocab_size);
}

/* Saves and reloads m so that it has activations for B_ x T_. */
static alloy_model *reload(const alloy_model *m) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/m", harness_tmpdir());
    alloy_model *r = NULL;
    if (alloy_model_save(m, dir) || alloy_model_load(&r, dir, B_, T_)) fprintf(stderr, "  %s\n", alloy_last_error());
    return r;
}

static void test_build(void) {
    for (int f = 0; f < 2; f++) {
        alloy_config c = moe_config((alloy_family)f, 0, 0);
        alloy_model *a = make(&c, 31, NULL), *b = make(&c, 32, NULL), *base = make(&c, 33, NULL);
        REQUIRE(a && b && base, "models");
        alloy_model *ex[3] = {a, b, a};
        alloy_moe_options o = alloy_moe_defaults();
        alloy_model *moe = NULL;
        REQUIRE(alloy_moe_build(&moe, ex, 3, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(moe->config.n_experts == 3 && moe->config.top_k == 2 && moe->config.router_aux_loss_coef == 0.001, "config");
        // experts copied bit for bit; shared tensors the mean
        bool same = true;
        size_t FF = (size_t)(f ? 2 * c.d_ff : c.d_ff) * (size_t)c.d_model;
        for (int l = 0; l < c.n_layer; l++)
            for (int e = 0; e < 3; e++) {
                const alloy_layer_params *sp = &ex[e]->params.layers[l];
                const alloy_expert_params *ep = &moe->params.layers[l].experts[e];
                same &= !memcmp(ep->up_w, sp->up_w, sizeof(float) * FF);
                same &= !memcmp(ep->down_w, sp->down_w, sizeof(float) * (size_t)c.d_ff * (size_t)c.d_model);
                if (ep->up_b) same &= !memcmp(ep->up_b, sp->up_b, sizeof(float) * (size_t)c.d_ff);
            }
        EXPECT(same, "%s: an expert is not its model's MLP", alloy_family_name(c.family));
        const alloy_tensor_info *t = alloy_model_find_tensor(moe, f ? "model.layers.1.self_attn.o_proj.weight"
                                                                     : "transformer.h.1.attn.c_proj.weight");
        const alloy_tensor_info *ta = alloy_model_find_tensor(a, t->name), *tb = alloy_model_find_tensor(b, t->name);
        double worst = 0.0;
        for (size_t k = 0; k < t->numel; k++) {
            double want = (2.0 * a->params_memory[ta->offset + k] + b->params_memory[tb->offset + k]) / 3.0;
            double d = fabs(moe->params_memory[t->offset + k] - want);
            worst = d > worst ? d : worst;
        }
        EXPECT(worst < 1e-6, "%s: shared tensor is not the experts' mean (error %g)", alloy_family_name(c.family), worst);
        alloy_model_destroy(moe);
        // with a base: shared tensors are the base's, bit for bit
        REQUIRE(alloy_moe_build(&moe, ex, 2, base, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        t = alloy_model_find_tensor(moe, f ? "model.embed_tokens.weight" : "transformer.wte.weight");
        const alloy_tensor_info *tbase = alloy_model_find_tensor(base, t->name);
        EXPECT(!memcmp(moe->params_memory + t->offset, base->params_memory + tbase->offset, sizeof(float) * t->numel),
               "the base's embedding was not copied");
        alloy_model_destroy(moe);
        // experts that are all the same model compute that model's function, whatever the router
        alloy_model *same_ex[2] = {b, b};
        o.top_k = 2;
        REQUIRE(alloy_moe_build(&moe, same_ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_model *r = reload(moe);
        REQUIRE(r, "reload");
        int32_t tok[B_ * T_], tgt[B_ * T_];
        make_tokens(tok, tgt, c.vocab_size, 4);
        size_t nl = (size_t)B_ * T_ * (size_t)c.vocab_size;
        float *la = malloc(sizeof(float) * nl), *lb = malloc(sizeof(float) * nl);
        logits_of(b, tok, la);
        logits_of(r, tok, lb);
        double e = harness_max_rel(lb, la, nl, 1e-3);
        EXPECT(e < 1e-4, "%s: identical experts differ from the dense model: %g", alloy_family_name(c.family), e);
        free(la);
        free(lb);
        alloy_model_destroy(r);
        alloy_model_destroy(moe);
        alloy_model_destroy(a);
        alloy_model_destroy(b);
        alloy_model_destroy(base);
    }
}

/* The hidden router: unit rows; with two experts the centred rows are opposite. With a base,
 * the rows come from the base's hidden states. */
static void test_hidden_router(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_LLAMA, 0, 0);
    alloy_model *a = make(&c, 51, NULL), *b = make(&c, 52, NULL);
    REQUIRE(a && b, "models");
    int32_t p0[] = {1, 2, 3, 4}, p1[] = {20, 21, 22}, p2[] = {5, 6};
    alloy_moe_prompt pr[] = {{0, p0, 4}, {1, p1, 3}, {0, p2, 2}};
    alloy_moe_options o = alloy_moe_defaults();
    o.router = ALLOY_MOE_ROUTER_HIDDEN;
    o.prompts = pr;
    o.n_prompts = 3;
    o.top_k = 1;
    alloy_model *ex[2] = {a, b}, *moe = NULL;
    REQUIRE(alloy_moe_build(&moe, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    for (int l = 0; l < c.n_layer; l++) {
        const float *w = moe->params.layers[l].router_w;
        double n0 = 0, n1 = 0, sum = 0;
        for (int k = 0; k < c.d_model; k++) {
            n0 += (double)w[k] * w[k];
            n1 += (double)w[c.d_model + k] * w[c.d_model + k];
            sum += fabs((double)w[k] + w[c.d_model + k]);
        }
        EXPECT(fabs(n0 - 1) < 1e-5 && fabs(n1 - 1) < 1e-5 && sum < 1e-5, "layer %d: rows not unit and opposite", l);
    }
    alloy_model_destroy(moe);
    // sampled prompts (no --prompts): deterministic by seed
    o.prompts = NULL;
    o.n_prompts = 0;
    alloy_model *m2 = NULL, *m3 = NULL;
    REQUIRE(alloy_moe_build(&m2, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_moe_build(&m3, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(!memcmp(m2->params_memory, m3->params_memory, sizeof(float) * m2->num_params), "sampled prompts not deterministic");
    alloy_model_destroy(m2);
    alloy_model_destroy(m3);
    // refusals
    alloy_moe_prompt bad[] = {{2, p0, 4}};
    o.prompts = bad;
    o.n_prompts = 1;
    EXPECT(alloy_moe_build(&moe, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "prompts: prompt 1 is for expert 2, outside [0, 1]"),
           "bad expert: %s", alloy_last_error());
    alloy_moe_prompt only0[] = {{0, p0, 4}};
    o.prompts = only0;
    EXPECT(alloy_moe_build(&moe, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "prompts: no prompt for expert 1"),
           "missing expert: %s", alloy_last_error());
    alloy_model_destroy(a);
    alloy_model_destroy(b);
}

/* The classifier router's fit: its objective's gradient against central differences, and the
 * fit reaching the one minimum of the strongly convex objective (gradient ~ 0, rows summing to
 * zero, no nearby point lower), separating clusters that are not centred; refusals. */
static void test_fit_router(void) {
    enum { N = 450, C = 6, E = 3 };
    static float X[N * C], W[E * C], G[E * C], mu[E * C];
    static int32_t y[N];
    alloy_rng rng;
    alloy_rng_seed(&rng, 7);
    for (int k = 0; k < E * C; k++) mu[k] = (float)(2.0 * alloy_rng_normal(&rng));
    for (int i = 0; i < N; i++) {
        y[i] = i % 5 == 0 ? 2 : i % 2; // unequal classes: 90, 180, 180
        for (int c = 0; c < C; c++) X[i * C + c] = 1.5f + mu[y[i] * C + c] + (float)(0.7 * alloy_rng_normal(&rng));
    }
    const double l2 = 1e-2;
    for (int k = 0; k < E * C; k++) W[k] = (float)(0.3 * alloy_rng_normal(&rng));
    double j0;
    REQUIRE(alloy_moe_router_objective(W, X, y, N, C, E, l2, &j0, G) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double worst = 0;
    for (int k = 0; k < E * C; k++) {
        float keep = W[k];
        const float h = 1e-2f;
        double jp, jm;
        W[k] = keep + h;
        alloy_moe_router_objective(W, X, y, N, C, E, l2, &jp, NULL);
        W[k] = keep - h;
        alloy_moe_router_objective(W, X, y, N, C, E, l2, &jm, NULL);
        W[k] = keep;
        double fd = (jp - jm) / (2.0 * h), err = fabs(fd - G[k]) / (1e-3 + fabs(fd));
        worst = err > worst ? err : worst;
    }
    EXPECT(worst < 1e-2, "objective gradient vs central differences: worst relative error %.3g", worst);
    static float Wr[E * C], Gr[E * C];
    memcpy(Wr, W, sizeof W);
    memcpy(Gr, G, sizeof G);

    alloy_moe_fit_report r;
    REQUIRE(alloy_moe_fit_router(W, X, y, N, C, E, l2, 20000, 1e-6, &r) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(r.iterations < 20000 && r.grad_norm <= 1e-6 * r.grad_norm0 * 1.0001, "not converged: %d iterations, |g| %.3g of %.3g",
           r.iterations, r.grad_norm, r.grad_norm0);
    double j;
    alloy_moe_router_objective(W, X, y, N, C, E, l2, &j, G);
    EXPECT(fabs(j - r.objective) < 1e-5 && j < j0, "objective %.6f (report %.6f, start %.6f)", j, r.objective, j0);
    for (int c = 0; c < C; c++) {
        double sum = 0, mag = 0;
        for (int e = 0; e < E; e++) sum += W[e * C + c], mag += fabs(W[e * C + c]);
        EXPECT(fabs(sum) < 1e-3 * (1 + mag), "column %d of W sums to %.3g", c, sum);
    }
    int lower = 0;
    static float D[E * C];
    for (int t = 0; t < 20; t++) {
        for (int k = 0; k < E * C; k++) D[k] = W[k] + (float)(1e-2 * alloy_rng_normal(&rng));
        double jd;
        alloy_moe_router_objective(D, X, y, N, C, E, l2, &jd, NULL);
        lower += jd < j - 1e-7;
    }
    EXPECT(!lower, "%d of 20 nearby points lie below the fit", lower);
    EXPECT(r.accuracy > 0.95, "accuracy %.3f on separated clusters", r.accuracy);
    // against PyTorch in float64: J and its gradient at the random point, and the minimiser
    // (L-BFGS), which the fit must reach to within what its gradient tolerance allows
    {
        const char *dir = harness_tmpdir();
        char in[512], out[512];
        snprintf(in, sizeof in, "%s/fit-in.safetensors", dir);
        snprintf(out, sizeof out, "%s/fit-out.safetensors", dir);
        float l2f = (float)l2;
        alloy_st_entry ent[4] = {{"x", ALLOY_DTYPE_F32, 2, {N, C}, X},
                                 {"y", ALLOY_DTYPE_I32, 1, {N}, y},
                                 {"w", ALLOY_DTYPE_F32, 2, {E, C}, Wr},
                                 {"l2", ALLOY_DTYPE_F32, 1, {1}, &l2f}};
        REQUIRE(alloy_safetensors_write(in, ent, 4, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REFERENCE("torch, numpy", "router_fit_ref.py", "'%s' '%s'", in, out);
        alloy_safetensors *ref;
        REQUIRE(alloy_safetensors_open(&ref, out) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        float want_v, want_g[E * C], want_w[E * C];
        REQUIRE(alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "value"), &want_v) == ALLOY_STATUS_OK &&
                    alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "grad"), want_g) == ALLOY_STATUS_OK &&
                    alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "w_opt"), want_w) == ALLOY_STATUS_OK,
                "%s", alloy_last_error());
        alloy_safetensors_close(ref);
        double eg = 0, sg = 0, ew = 0, sw = 0;
        for (int k = 0; k < E * C; k++) {
            eg = fmax(eg, fabs((double)Gr[k] - want_g[k]));
            sg = fmax(sg, fabs((double)want_g[k]));
            ew = fmax(ew, fabs((double)W[k] - want_w[k]));
            sw = fmax(sw, fabs((double)want_w[k]));
        }
        printf("# router fit vs PyTorch: J %.7f vs %.7f, grad %.1e of %.2g, fitted W %.1e of %.2g (%d iterations)\n", j0,
               (double)want_v, eg, sg, ew, sw, r.iterations);
        EXPECT(fabs(j0 - want_v) < 1e-5 * fabs(want_v), "J %g vs %g", j0, (double)want_v);
        EXPECT(eg < 1e-5 * sg + 1e-7, "gradient differs by %g of %g", eg, sg);
        EXPECT(ew < 1e-3 * sw, "fitted W differs from the minimiser by %g of %g", ew, sw);
    }
    // refusals
    EXPECT(alloy_moe_fit_router(W, X, y, N, C, E, 0.0, 10, 1e-6, NULL) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "L2 weight 0 must be > 0"),
           "l2 0: %s", alloy_last_error());
    EXPECT(alloy_moe_fit_router(W, X, y, N, C, 4, l2, 10, 1e-6, NULL) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "no token of class 3"),
           "empty class: %s", alloy_last_error());
    EXPECT(alloy_moe_fit_router(W, X, y, N, C, 2, l2, 10, 1e-6, NULL) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "class 2, outside [0, 1]"),
           "class out of range: %s", alloy_last_error());
}

/* The classifier router in a build: deterministic, every layer fitted (rows summing to zero,
 * not all zero), the prompts' tokens mostly sent to their expert by the MoE itself at top-1;
 * sampled prompts work too. */
static void classifier_router_case(alloy_family f) {
    alloy_config c = moe_config(f, 0, 0);
    alloy_model *a = make(&c, 61, NULL), *b = make(&c, 62, NULL);
    REQUIRE(a && b, "models");
    int32_t p0[] = {1, 2, 3, 4, 5, 6, 7, 8}, p1[] = {20, 21, 22, 23, 24, 25}, p2[] = {9, 10, 11, 12};
    alloy_moe_prompt pr[] = {{0, p0, 8}, {1, p1, 6}, {0, p2, 4}};
    alloy_moe_options o = alloy_moe_defaults();
    o.router = ALLOY_MOE_ROUTER_CLASSIFIER;
    o.prompts = pr;
    o.n_prompts = 3;
    o.top_k = 1;
    o.router_l2 = 1e-4;
    alloy_model *ex[2] = {a, b}, *m1 = NULL, *m2 = NULL;
    REQUIRE(alloy_moe_build(&m1, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_moe_build(&m2, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(!memcmp(m1->params_memory, m2->params_memory, sizeof(float) * m1->num_params), "not deterministic");
    for (int l = 0; l < c.n_layer; l++) {
        const float *w = m1->params.layers[l].router_w;
        double sum = 0, mag = 0;
        for (int k = 0; k < c.d_model; k++) sum += fabs((double)w[k] + w[c.d_model + k]), mag += fabs(w[k]);
        EXPECT(mag > 0.1 && sum < 1e-3 * mag, "layer %d: rows |w0| %.3g, |w0 + w1| %.3g", l, mag, sum);
    }
    // the MoE routes its prompts' tokens: layer l's router logits of its own ln2 outputs
    alloy_model *run = NULL;
    alloy_model_destroy(m2);
    REQUIRE(alloy_model_create(&run, &m1->config, 1, 8) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    memcpy(run->params_memory, m1->params_memory, sizeof(float) * m1->num_params);
    int right = 0, total = 0;
    for (int i = 0; i < 3; i++) {
        REQUIRE(alloy_model_forward_ex(run, pr[i].tokens, 1, pr[i].n, false) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        for (int l = 0; l < c.n_layer; l++) {
            const float *w = run->params.layers[l].router_w;
            for (int t = 0; t < pr[i].n; t++) {
                const float *x = alloy_model_mlp_input(run, l) + (int64_t)t * c.d_model;
                double z0 = 0, z1 = 0;
                for (int k = 0; k < c.d_model; k++) z0 += (double)w[k] * x[k], z1 += (double)w[c.d_model + k] * x[k];
                right += (z1 > z0) == (pr[i].expert == 1);
                total++;
            }
        }
    }
    EXPECT(right == total, "%d of %d prompt tokens routed to their expert", right, total);
    alloy_model_destroy(run);
    alloy_model_destroy(m1);
    o.prompts = NULL; // sampled prompts
    o.n_prompts = 0;
    REQUIRE(alloy_moe_build(&m1, ex, 2, NULL, &o) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_destroy(m1);
    alloy_moe_prompt only0[] = {{0, p0, 8}};
    o.prompts = only0;
    o.n_prompts = 1;
    EXPECT(alloy_moe_build(&m1, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "prompts: no prompt for expert 1"),
           "missing expert: %s", alloy_last_error());
    alloy_model_destroy(a);
    alloy_model_destroy(b);
}

static void test_classifier_router(void) {
    classifier_router_case(ALLOY_FAMILY_LLAMA);
    classifier_router_case(ALLOY_FAMILY_GPT2);
}

static void test_build_refuses(void) {
    alloy_config c = moe_config(ALLOY_FAMILY_GPT2, 0, 0), wide = c, mc = moe_config(ALLOY_FAMILY_GPT2, 2, 1);
    wide.d_ff = 32;
    alloy_config ll = moe_config(ALLOY_FAMILY_LLAMA, 0, 0);
    alloy_model *a = make(&c, 1, NULL), *w = make(&wide, 2, NULL), *m = make(&mc, 3, NULL), *l = make(&ll, 4, NULL);
    REQUIRE(a && w && m && l, "models");
    alloy_moe_options o = alloy_moe_defaults();
    alloy_model *out = NULL, *ex[2] = {a, w};
    EXPECT(alloy_moe_build(&out, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "experts: model 2: d_ff is 32 but the first expert's is 24"),
           "shape: %s", alloy_last_error());
    ex[1] = l;
    EXPECT(alloy_moe_build(&out, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "experts: model 2: family llama differs from the first expert's gpt2"),
           "family: %s", alloy_last_error());
    ex[1] = m;
    EXPECT(alloy_moe_build(&out, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "already a mixture"),
           "moe input: %s", alloy_last_error());
    ex[1] = a;
    EXPECT(alloy_moe_build(&out, ex, 1, NULL, &o) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "at least 2"),
           "one expert: %s", alloy_last_error());
    o.top_k = 3;
    EXPECT(alloy_moe_build(&out, ex, 2, NULL, &o) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "top_k 3: must lie in [1, 2]"),
           "K > E: %s", alloy_last_error());
    o.top_k = 1;
    EXPECT(alloy_moe_build(&out, ex, 2, w, &o) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "--base: d_ff is 32"),
           "base: %s", alloy_last_error());
    EXPECT(!out, "a refused build returned a model");
    alloy_model_destroy(a);
    alloy_model_destroy(w);
    alloy_model_destroy(m);
    alloy_model_destroy(l);
}

/* The hidden router's prompts file: EXPERT<TAB>TEXT lines, comments and blanks skipped, bad lines
 * named. */
static void test_prompts_file(void) {
    alloy_tokenizer *tok;
    REQUIRE(!alloy_tokenizer_create(&tok, "bytes"), "%s", alloy_last_error());
    const char *dir = harness_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/p.tsv", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f, "fopen");
    fputs("# expert\tprompt\n0\tab\r\n\n1\txyz\n", f);
    fclose(f);
    alloy_moe_prompt_set p;
    REQUIRE(!alloy_moe_prompts_read(&p, path, tok, 2), "%s", alloy_last_error());
    EXPECT(p.n == 2 && p.v[0].expert == 0 && p.v[0].n == 2 && p.v[0].tokens[1] == 'b' && p.v[1].expert == 1 && p.v[1].n == 3,
           "%d prompts", p.n);
    alloy_moe_prompts_free(&p);
    EXPECT(alloy_moe_prompts_read(&p, path, tok, 1) == ALLOY_STATUS_USAGE && says("p.tsv:4: expert 1 is outside [0, 0]") &&
               p.n == 0,
           "%s", alloy_last_error());
    f = fopen(path, "w");
    REQUIRE(f, "fopen");
    fputs("x\tab\n", f);
    fclose(f);
    EXPECT(alloy_moe_prompts_read(&p, path, tok, 2) == ALLOY_STATUS_USAGE && says("p.tsv:1: expected EXPERT<TAB>TEXT"), "%s",
           alloy_last_error());
    alloy_tokenizer_destroy(tok);
}

int main(void) {
    RUN(test_fd_router);
    RUN(test_recompute);
    RUN(test_ties);
    RUN(test_config_json);
    RUN(test_names);
    RUN(test_bf16);
    RUN(test_train_only_router);
    RUN(test_train_only_mlp);
    RUN(test_engine_forward);
    RUN(test_engine_quant);
    RUN(test_engine_generate);
    RUN(test_build);
    RUN(test_hidden_router);
    RUN(test_fit_router);
    RUN(test_classifier_router);
    RUN(test_build_refuses);
    RUN(test_prompts_file);
    return harness_exit();
}
