/*
 * gguf_export.c — an alloy model (and its tokenizer) written as a GGUF file that llama.cpp
 * runs: general.* and <arch>.* metadata, tokenizer.ggml.* (gguf_tokenizer.c), and every tensor
 * of the parameter table under its llama.cpp name and layout (gguf_layout.c), quantised
 * through alloy/quant.h where llama.cpp's converter would quantise it.
 */
#include "gguf_internal.h"

#include <stdlib.h>
#include <string.h>

/* general.file_type (llama.cpp's llama_ftype) of a model written in type q. */
static uint32_t file_type_of(alloy_qtype q) {
    switch (q) {
    case ALLOY_QTYPE_F16: return 1;   // MOSTLY_F16
    case ALLOY_QTYPE_Q4_0: return 2;  // MOSTLY_Q4_0
    case ALLOY_QTYPE_Q8_0: return 7;  // MOSTLY_Q8_0
    case ALLOY_QTYPE_Q4_K: return 14; // MOSTLY_Q4_K_S: Q4_K throughout
    default: return 0;                // ALL_F32
    }
}

/* The model's hyperparameters under <arch>.* */
static alloy_status put_hparams(alloy_gguf_writer *w, const alloy_config *c, const char *arch) {
    char key[96];
    alloy_status s = ALLOY_STATUS_OK;
#define PUT_U32(suffix, v)                                                                                             \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                                                              \
        if (!s) s = alloy_gguf_set_u32(w, key, (uint32_t)(v));                                                         \
    } while (0)
#define PUT_F32(suffix, v)                                                                                             \
    do {                                                                                                               \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                                                              \
        if (!s) s = alloy_gguf_set_f32(w, key, (float)(v));                                                            \
    } while (0)
    PUT_U32("vocab_size", c->vocab_size);
    PUT_U32("context_length", c->max_seq_len);
    PUT_U32("embedding_length", c->d_model);
    PUT_U32("block_count", c->n_layer);
    PUT_U32("feed_forward_length", c->d_ff);
    PUT_U32("attention.head_count", c->n_head);
    PUT_U32("attention.head_count_kv", c->n_kv_head);
    if (c->n_experts > 0) { // llama.cpp's Mixtral keys
        PUT_U32("expert_count", c->n_experts);
        PUT_U32("expert_used_count", c->top_k);
    }
    if (c->family == ALLOY_FAMILY_GPT2) {
        PUT_F32("attention.layer_norm_epsilon", c->norm_eps);
    } else {
        PUT_F32("attention.layer_norm_rms_epsilon", c->norm_eps);
        PUT_U32("rope.dimension_count", alloy_config_head_dim(c));
        PUT_F32("rope.freq_base", c->rope_theta);
    }
#undef PUT_U32
#undef PUT_F32
    return s;
}

/* *out (E, rows, cols), allocated: expert 0's tensor ti and the other experts' of the same kind
 * (found by name: "...experts.0.w1.weight" -> "...experts.e.w1.weight"), one after another. */
static alloy_status stack_experts(const alloy_model *m, const alloy_tensor_info *ti, float **out) {
    int E = m->config.n_experts;
    const char *at = strstr(ti->name, "experts.0.");
    ALLOY_ASSERT(at);
    float *buf = alloy_malloc(sizeof(float) * ti->numel * (size_t)E); // E·numel < the arena: no overflow
    if (!buf) return ALLOY_STATUS_NOMEM;
    for (int e = 0; e < E; e++) {
        char name[ALLOY_MAX_NAME + 16];
        snprintf(name, sizeof name, "%.*sexperts.%d.%s", (int)(at - ti->name), ti->name, e,
                 at + strlen("experts.0."));
        const alloy_tensor_info *te = alloy_model_find_tensor(m, name);
        ALLOY_ASSERT(te && te->numel == ti->numel);
        memcpy(buf + (size_t)e * ti->numel, m->params_memory + te->offset, sizeof(float) * ti->numel);
    }
    *out = buf;
    return ALLOY_STATUS_OK;
}

/* general.name: the file's name without folders and ".gguf". */
static void model_name(const char *path, char *out, size_t size) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".gguf")) n -= 5;
    if (n >= size) n = size - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

/* The metadata: general.*, the hyperparameters, alloy's tokenizer name and the tokenizer. */
static alloy_status put_metadata(alloy_gguf_writer *w, const alloy_model *m, const alloy_tokenizer *tok,
                                 const char *path, alloy_qtype type) {
    const alloy_config *c = &m->config;
    const char *arch = alloy_family_name(c->family);
    char name[128];
    model_name(path, name, sizeof name);
    alloy_status s = alloy_gguf_set_str(w, "general.architecture", arch);
    if (!s) s = alloy_gguf_set_str(w, "general.name", name[0] ? name : "alloy");
    if (!s) s = alloy_gguf_set_u32(w, "general.alignment", ALLOY_GGUF_DEFAULT_ALIGNMENT);
    if (!s) s = alloy_gguf_set_u32(w, "general.file_type", file_type_of(type));
    if (!s) s = alloy_gguf_set_u32(w, "general.quantization_version", 2); // ggml's GGML_QNT_VERSION
    if (!s) s = put_hparams(w, c, arch);
    if (!s && c->tokenizer[0]) s = alloy_gguf_set_str(w, "alloy.tokenizer", c->tokenizer);
    if (!s && tok && alloy_tokenizer_vocab_size(tok) > c->vocab_size)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has %d tokens but the model's vocabulary only %d",
                       path, alloy_tokenizer_vocab_size(tok), c->vocab_size);
    if (!s && tok) s = gguf_put_tokenizer(w, tok, c->vocab_size);
    return s;
}

/* What the tensors' types came to, for the report. */
typedef struct type_tally {
    int n_fallback, n_requested, n_written;          /* weight matrices in F16 / in the type; tensors */
    char first_fallback[ALLOY_GGUF_MAX_NAME + 1];     /* the first matrix written as F16 instead */
    int64_t fallback_row;                             /* and its row length */
} type_tally;

/* The type a tensor is stored in: norms, biases, positions and routers stay f32, as llama.cpp's
 * converter keeps them; a matrix whose rows the type's block does not divide falls back to F16
 * (which takes any row), as llama.cpp falls back. */
static alloy_qtype tensor_type(const char *gname, int nd, const int64_t *ne, alloy_qtype type, type_tally *tally) {
    if (nd < 2 || !strcmp(gname, "position_embd.weight") || strstr(gname, "ffn_gate_inp")) return ALLOY_QTYPE_F32;
    if (ne[0] % alloy_qtype_block_elems(type) == 0) {
        tally->n_requested++;
        return type;
    }
    if (!tally->n_fallback++) {
        snprintf(tally->first_fallback, sizeof tally->first_fallback, "%s", gname);
        tally->fallback_row = ne[0];
    }
    return ALLOY_QTYPE_F16;
}

/* Adds table tensor i to the writer in llama.cpp's name, layout and type; *owned gets the
 * buffer its data lives in (NULL when it is the model's own), freed after the file is written.
 * A Mixtral expert other than 0 is skipped: expert 0's call writes the stacked tensor. */
static alloy_status put_tensor(alloy_gguf_writer *w, const alloy_model *m, int i, alloy_qtype type, type_tally *tally,
                               void **owned) {
    const alloy_config *c = &m->config;
    const alloy_tensor_info *ti = &m->tensors[i];
    char gname[ALLOY_GGUF_MAX_NAME + 1];
    int xf, expert;
    bool mapped = gguf_layout_name(c->family, ti->name, gname, &xf, &expert);
    ALLOY_ASSERT(mapped);
    if (expert > 0) return ALLOY_STATUS_OK; // written with expert 0's, as one stacked tensor
    int64_t ne[ALLOY_GGUF_MAX_DIMS];
    int nd = gguf_layout_shape(ti, xf, ne);
    const float *src = m->params_memory + ti->offset;
    // the f32 values in llama.cpp's layout
    const float *f32 = src;
    float *tmp = NULL;
    if (expert == 0) { // the E experts' matrices of this kind, slice after slice
        alloy_status s = stack_experts(m, ti, &tmp);
        if (s) return s;
        f32 = tmp;
        nd = 3;
        ne[2] = c->n_experts;
    } else if (nd == 2 && xf != GGUF_XF_NONE) {
        tmp = alloy_malloc(ti->numel * sizeof(float));
        if (!tmp) return ALLOY_STATUS_NOMEM;
        if (xf == GGUF_XF_TRANSPOSE) gguf_transpose(tmp, src, ti->shape[0], ti->shape[1]);
        else
            gguf_permute_heads(tmp, src, gguf_permute_heads_of(c, xf), alloy_config_head_dim(c), ti->shape[1], true);
        f32 = tmp;
    }
    alloy_qtype q = tensor_type(gname, nd, ne, type, tally);
    uint32_t gtype;
    alloy_ggml_type_from_qtype(q, &gtype);
    size_t rows = ti->numel * (size_t)ne[2] / (size_t)ne[0], row_bytes = alloy_quant_row_bytes(q, ne[0]);
    const void *data = f32;
    if (q != ALLOY_QTYPE_F32) {
        uint8_t *out = alloy_malloc(rows * row_bytes);
        if (!out) {
            alloy_free(tmp);
            return ALLOY_STATUS_NOMEM;
        }
        size_t done = alloy_quantize(q, out, f32, (int64_t)rows, ne[0]); // OpenMP over rows
        ALLOY_ASSERT(done == rows * row_bytes);
        alloy_free(tmp);
        tmp = NULL;
        *owned = out;
        data = out;
    } else {
        *owned = tmp;
    }
    tally->n_written++;
    return alloy_gguf_add_tensor(w, gname, nd, ne, gtype, data, rows * row_bytes);
}

alloy_status alloy_gguf_export_model_ex(const alloy_model *m, const alloy_tokenizer *tok, const char *path,
                                        alloy_qtype type, alloy_gguf_export_report *report) {
    if (report) memset(report, 0, sizeof *report);
    uint32_t want_type;
    if (!alloy_ggml_type_from_qtype(type, &want_type))
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: unknown weight type %d", path, (int)type);
    const alloy_config *c = &m->config;
    if (c->n_experts > 0 && c->family == ALLOY_FAMILY_GPT2)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "%s: GGUF export of a GPT-2 mixture of experts is not supported (llama.cpp has no GPT-2 "
                          "MoE; a Llama-family MoE exports as Mixtral)",
                          path);
    alloy_gguf_writer *w;
    alloy_status s = alloy_gguf_writer_create(&w);
    if (s) return s;
    void **owned = alloy_calloc((size_t)m->n_tensors, sizeof *owned); // converted buffers to free
    if (!owned) {
        alloy_gguf_writer_destroy(w);
        return ALLOY_STATUS_NOMEM;
    }
    s = put_metadata(w, m, tok, path, type);
    type_tally tally = {0};
    for (int i = 0; i < m->n_tensors && !s; i++) s = put_tensor(w, m, i, type, &tally, &owned[i]);
    if (!s) s = alloy_gguf_write(w, path);
    if (!s && report) {
        report->n_tensors = tally.n_written;
        report->n_requested = tally.n_requested;
        report->n_fallback = tally.n_fallback;
        if (tally.n_fallback)
            snprintf(report->note, sizeof report->note,
                     "%d of %d weight matrices written as F16 instead of %s: their rows (%lld in %s) are not a "
                     "multiple of its block of %d",
                     tally.n_fallback, tally.n_fallback + tally.n_requested, alloy_ggml_type_name(want_type),
                     (long long)tally.fallback_row, tally.first_fallback, alloy_qtype_block_elems(type));
    }
    for (int i = 0; i < m->n_tensors; i++) alloy_free(owned[i]);
    alloy_free(owned);
    alloy_gguf_writer_destroy(w);
    return s;
}
