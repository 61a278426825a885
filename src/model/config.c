/*
 * config.c — model configurations: presets, validation, and config.json in the Hugging Face
 * keys of each family (GPT2Config, LlamaConfig), so that a checkpoint folder loads there too.
 */
#include "alloy/options.h"
#include "alloy/model.h"

#include <cJSON.h>
#include <string.h>

typedef struct preset {
    const char *name;
    alloy_family family;
    int max_seq_len, n_layer, n_head, n_kv_head, d_model, d_ff;
} preset;

static const preset presets[] = {
    {"tiny-gpt2", ALLOY_FAMILY_GPT2, 128, 2, 4, 4, 64, 256},
    {"tiny-llama", ALLOY_FAMILY_LLAMA, 128, 2, 4, 2, 64, 176},
    {"small-gpt2", ALLOY_FAMILY_GPT2, 256, 4, 4, 4, 256, 1024},
    {"small-llama", ALLOY_FAMILY_LLAMA, 256, 4, 8, 4, 256, 688},
    {"gpt2", ALLOY_FAMILY_GPT2, 1024, 12, 12, 12, 768, 3072},
    {"gpt2-medium", ALLOY_FAMILY_GPT2, 1024, 24, 16, 16, 1024, 4096},
    {"llama-110m", ALLOY_FAMILY_LLAMA, 1024, 12, 12, 4, 768, 2048},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

const char *const *alloy_config_preset_names(void) {
    static const char *names[N_PRESETS + 1];
    for (size_t i = 0; i < N_PRESETS; i++) names[i] = presets[i].name;
    names[N_PRESETS] = NULL;
    return names;
}

const char *alloy_family_name(alloy_family family) {
    return family == ALLOY_FAMILY_GPT2 ? "gpt2" : "llama";
}

alloy_status alloy_config_preset(alloy_config *cfg, const char *name, int vocab_size) {
    for (size_t i = 0; i < N_PRESETS; i++) {
        const preset *p = &presets[i];
        if (strcmp(p->name, name) != 0) continue;
        memset(cfg, 0, sizeof *cfg);
        cfg->family = p->family;
        cfg->vocab_size = vocab_size;
        cfg->max_seq_len = p->max_seq_len;
        cfg->n_layer = p->n_layer;
        cfg->n_head = p->n_head;
        cfg->n_kv_head = p->n_kv_head;
        cfg->d_model = p->d_model;
        cfg->d_ff = p->d_ff;
        cfg->norm_eps = 1e-5;
        cfg->rope_theta = 10000.0;
        cfg->tie_embeddings = p->family == ALLOY_FAMILY_GPT2;
        return ALLOY_STATUS_OK;
    }
    char list[256] = "";
    for (size_t i = 0; i < N_PRESETS; i++) {
        strncat(list, presets[i].name, sizeof list - strlen(list) - 1);
        if (i + 1 < N_PRESETS) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return alloy_fail_option(ALLOY_STATUS_USAGE, "preset", ": unknown preset '%s' (known: %s)", name, list);
}

alloy_status alloy_config_validate(const alloy_config *c, const char *what) {
#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            char m_[256];                                                                    \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                            \
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s", what, m_);                      \
        }                                                                                    \
    } while (0)
    CHECK(c->family == ALLOY_FAMILY_GPT2 || c->family == ALLOY_FAMILY_LLAMA, "unknown model family");
    CHECK(c->vocab_size >= 1 && c->vocab_size <= (1 << 24), "vocab_size %d out of range [1, 16777216]",
          c->vocab_size);
    CHECK(c->max_seq_len >= 1 && c->max_seq_len <= (1 << 20), "max sequence length %d out of range",
          c->max_seq_len);
    CHECK(c->n_layer >= 1 && c->n_layer <= 1024, "n_layer %d out of range [1, 1024]", c->n_layer);
    CHECK(c->n_head >= 1 && c->n_head <= 1024, "n_head %d out of range [1, 1024]", c->n_head);
    CHECK(c->d_model >= 1 && c->d_model <= 65536, "d_model %d out of range [1, 65536]", c->d_model);
    CHECK(c->d_ff >= 1 && c->d_ff <= 1 << 20, "d_ff %d out of range", c->d_ff);
    CHECK(c->d_model % c->n_head == 0, "d_model %d is not a multiple of n_head %d", c->d_model, c->n_head);
    CHECK(c->n_kv_head >= 1 && c->n_head % c->n_kv_head == 0, "n_head %d is not a multiple of n_kv_head %d",
          c->n_head, c->n_kv_head);
    CHECK(c->norm_eps > 0.0 && c->norm_eps < 1.0, "norm epsilon %g out of range (0, 1)", (double)c->norm_eps);
    if (c->family == ALLOY_FAMILY_GPT2) {
        CHECK(c->n_kv_head == c->n_head, "GPT-2 has no grouped-query attention (n_kv_head must equal n_head)");
        CHECK(c->tie_embeddings, "GPT-2 ties its embeddings (tie_word_embeddings must be true)");
    } else {
        CHECK(alloy_config_head_dim(c) % 2 == 0, "head dimension %d must be even for rotary embeddings",
              alloy_config_head_dim(c));
        CHECK(c->rope_theta > 1.0, "rope_theta %g must be > 1", (double)c->rope_theta);
    }
    CHECK(c->n_experts >= 0 && c->n_experts <= ALLOY_MAX_EXPERTS, "num_local_experts %d out of range [0, %d]",
          c->n_experts, ALLOY_MAX_EXPERTS);
    if (c->n_experts > 0) {
        CHECK(c->top_k >= 1 && c->top_k <= c->n_experts, "num_experts_per_tok %d must lie in [1, num_local_experts = %d]",
              c->top_k, c->n_experts);
        CHECK(c->router_aux_loss_coef >= 0.0 && c->router_aux_loss_coef < 1e6, "router_aux_loss_coef %g must be >= 0",
              c->router_aux_loss_coef);
    } else {
        CHECK(c->top_k == 0, "num_experts_per_tok %d without experts (num_local_experts is 0)", c->top_k);
    }
#undef CHECK
    return ALLOY_STATUS_OK;
}

static alloy_status get_int_field(const cJSON *j, const char *key, const char *what, int *out, bool optional) {
    int64_t v = *out;
    alloy_status s = optional ? alloy_json_opt_int(j, key, what, &v) : alloy_json_get_int(j, key, what, &v);
    if (s) return s;
    if (v < 0 || v > (1 << 30)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" out of range", what, key);
    *out = (int)v;
    return ALLOY_STATUS_OK;
}

/* The mixture-of-experts keys of MixtralConfig. For model_type "mixtral" they take Mixtral's
 * defaults when absent (8 experts, 2 per token, aux coefficient 0.001) and the experts must be
 * there; the other types are dense unless num_local_experts > 0 (GPT-2 MoE is alloy's own).
 * Mixtral's sliding_window must be null or cover the context: alloy attends to all positions. */
static alloy_status experts_from_json(alloy_config *cfg, const cJSON *j, const char *what, bool mixtral) {
    cfg->n_experts = mixtral ? 8 : 0;
    alloy_status s = get_int_field(j, "num_local_experts", what, &cfg->n_experts, true);
    if (s) return s;
    if (mixtral && cfg->n_experts < 1)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: model_type \"mixtral\" needs num_local_experts >= 1", what);
    if (cfg->n_experts == 0) {
        cfg->top_k = 0;
        return ALLOY_STATUS_OK;
    }
    cfg->top_k = 2;
    cfg->router_aux_loss_coef = 0.001;
    if ((s = get_int_field(j, "num_experts_per_tok", what, &cfg->top_k, true))) return s;
    if ((s = alloy_json_opt_double(j, "router_aux_loss_coef", what, &cfg->router_aux_loss_coef))) return s;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(j, "sliding_window");
    if (sw && !cJSON_IsNull(sw) && !(cJSON_IsNumber(sw) && sw->valuedouble >= cfg->max_seq_len))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: sliding_window attention is not supported (must be null)", what);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_config_from_json(alloy_config *cfg, const cJSON *j, const char *what) {
    memset(cfg, 0, sizeof *cfg);
    const char *type;
    alloy_status s = alloy_json_get_string(j, "model_type", what, &type);
    if (s) return s;
    double eps = 1e-5, theta = 10000.0;
    if (!strcmp(type, "gpt2")) {
        cfg->family = ALLOY_FAMILY_GPT2;
        if ((s = get_int_field(j, "vocab_size", what, &cfg->vocab_size, false)) ||
            (s = get_int_field(j, "n_positions", what, &cfg->max_seq_len, false)) ||
            (s = get_int_field(j, "n_layer", what, &cfg->n_layer, false)) ||
            (s = get_int_field(j, "n_head", what, &cfg->n_head, false)) ||
            (s = get_int_field(j, "n_embd", what, &cfg->d_model, false)))
            return s;
        // n_inner: null means 4·n_embd (clamped so that a huge n_embd fails validation instead of
        // overflowing int)
        cfg->d_ff = cfg->d_model <= (1 << 28) ? 4 * cfg->d_model : 1 << 30;
        if ((s = get_int_field(j, "n_inner", what, &cfg->d_ff, true))) return s;
        cfg->n_kv_head = cfg->n_head;
        if ((s = alloy_json_opt_double(j, "layer_norm_epsilon", what, &eps))) return s;
        cfg->tie_embeddings = true;
        if ((s = alloy_json_opt_bool(j, "tie_word_embeddings", what, &cfg->tie_embeddings))) return s;
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "activation_function");
        if (act && (!cJSON_IsString(act) ||
                    (strcmp(act->valuestring, "gelu_new") && strcmp(act->valuestring, "gelu_pytorch_tanh"))))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: activation_function must be \"gelu_new\"", what);
    } else if (!strcmp(type, "llama") || !strcmp(type, "mixtral")) {
        cfg->family = ALLOY_FAMILY_LLAMA;
        if ((s = get_int_field(j, "vocab_size", what, &cfg->vocab_size, false)) ||
            (s = get_int_field(j, "max_position_embeddings", what, &cfg->max_seq_len, false)) ||
            (s = get_int_field(j, "num_hidden_layers", what, &cfg->n_layer, false)) ||
            (s = get_int_field(j, "num_attention_heads", what, &cfg->n_head, false)) ||
            (s = get_int_field(j, "hidden_size", what, &cfg->d_model, false)) ||
            (s = get_int_field(j, "intermediate_size", what, &cfg->d_ff, false)))
            return s;
        cfg->n_kv_head = cfg->n_head;
        if ((s = get_int_field(j, "num_key_value_heads", what, &cfg->n_kv_head, true))) return s;
        if ((s = alloy_json_opt_double(j, "rms_norm_eps", what, &eps))) return s;
        if ((s = alloy_json_opt_double(j, "rope_theta", what, &theta))) return s;
        cfg->tie_embeddings = false;
        if ((s = alloy_json_opt_bool(j, "tie_word_embeddings", what, &cfg->tie_embeddings))) return s;
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
        if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu")))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: hidden_act must be \"silu\"", what);
        const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
        if (scaling && !cJSON_IsNull(scaling))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: rope_scaling is not supported (only plain RoPE)", what);
        static const char *const biases[] = {"attention_bias", "mlp_bias"};
        for (int b = 0; b < 2; b++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, biases[b]);
            if (cJSON_IsTrue(v))
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s is not supported (Llama layers without biases)", what,
                                  biases[b]);
        }
        const cJSON *hd = cJSON_GetObjectItemCaseSensitive(j, "head_dim");
        if (hd && cJSON_IsNumber(hd) && cfg->n_head > 0 && hd->valuedouble * cfg->n_head != cfg->d_model)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: head_dim must equal hidden_size / num_attention_heads", what);
    } else {
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unsupported model_type \"%s\" (expected gpt2, llama or mixtral)",
                          what, type);
    }
    if ((s = experts_from_json(cfg, j, what, !strcmp(type, "mixtral")))) return s;
    cfg->norm_eps = eps;
    cfg->rope_theta = theta;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "alloy_tokenizer");
    if (tok) {
        if (!cJSON_IsString(tok) || strlen(tok->valuestring) >= sizeof cfg->tokenizer)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"alloy_tokenizer\" must be a short string", what);
        strcpy(cfg->tokenizer, tok->valuestring);
    }
    return alloy_config_validate(cfg, what);
}

cJSON *alloy_config_to_json(const alloy_config *c) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    if (c->family == ALLOY_FAMILY_GPT2) {
        cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
        cJSON_AddStringToObject(j, "model_type", "gpt2");
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(j, "n_positions", c->max_seq_len);
        cJSON_AddNumberToObject(j, "n_ctx", c->max_seq_len);
        cJSON_AddNumberToObject(j, "n_embd", c->d_model);
        cJSON_AddNumberToObject(j, "n_layer", c->n_layer);
        cJSON_AddNumberToObject(j, "n_head", c->n_head);
        cJSON_AddNumberToObject(j, "n_inner", c->d_ff);
        cJSON_AddStringToObject(j, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(j, "layer_norm_epsilon", c->norm_eps);
        cJSON_AddNumberToObject(j, "resid_pdrop", 0.0);
        cJSON_AddNumberToObject(j, "embd_pdrop", 0.0);
        cJSON_AddNumberToObject(j, "attn_pdrop", 0.0);
        cJSON_AddBoolToObject(j, "tie_word_embeddings", true);
    } else {
        bool moe = c->n_experts > 0;
        cJSON_AddItemToArray(arch, cJSON_CreateString(moe ? "MixtralForCausalLM" : "LlamaForCausalLM"));
        cJSON_AddStringToObject(j, "model_type", moe ? "mixtral" : "llama");
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq_len);
        cJSON_AddNumberToObject(j, "hidden_size", c->d_model);
        cJSON_AddNumberToObject(j, "intermediate_size", c->d_ff);
        cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layer);
        cJSON_AddNumberToObject(j, "num_attention_heads", c->n_head);
        cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_head);
        cJSON_AddStringToObject(j, "hidden_act", "silu");
        cJSON_AddNumberToObject(j, "rms_norm_eps", c->norm_eps);
        cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
        cJSON_AddBoolToObject(j, "attention_bias", false);
        cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
        if (moe) cJSON_AddNullToObject(j, "sliding_window");
    }
    if (c->n_experts > 0) {
        cJSON_AddNumberToObject(j, "num_local_experts", c->n_experts);
        cJSON_AddNumberToObject(j, "num_experts_per_tok", c->top_k);
        cJSON_AddNumberToObject(j, "router_aux_loss_coef", c->router_aux_loss_coef);
        // transformers adds the aux loss to the loss only when asked to return router logits
        cJSON_AddBoolToObject(j, "output_router_logits", c->router_aux_loss_coef > 0.0);
        cJSON_AddNumberToObject(j, "router_jitter_noise", 0.0);
    }
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    if (c->tokenizer[0]) cJSON_AddStringToObject(j, "alloy_tokenizer", c->tokenizer);
    return j;
}

alloy_status alloy_config_load(alloy_config *cfg, const char *path) {
    cJSON *j;
    alloy_status s = alloy_json_read_file(path, &j);
    if (s) return s;
    s = alloy_config_from_json(cfg, j, path);
    cJSON_Delete(j);
    return s;
}

alloy_status alloy_config_save(const alloy_config *cfg, const char *path) {
    cJSON *j = alloy_config_to_json(cfg);
    if (!j) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: out of memory", path);
    alloy_status s = alloy_json_write_file(path, j);
    cJSON_Delete(j);
    return s;
}
