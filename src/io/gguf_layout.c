/*
 * gguf_layout.c — alloy's parameter table in llama.cpp's "gpt2" and "llama" layouts: the
 * Hugging Face name of each tensor and its llama.cpp name, the shape it has there, GPT-2's
 * Conv1D weights transposed, Llama's Q and K rows permuted for llama.cpp's RoPE, and Mixtral's
 * experts stacked into one tensor per kind. Export and import both go through these maps.
 */
#include "gguf_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct name_pair {
    const char *hf, *gguf;
    int xf;
} name_pair;

static const name_pair gpt2_global[] = {
    {"transformer.wte.weight", "token_embd.weight", GGUF_XF_NONE},
    {"transformer.wpe.weight", "position_embd.weight", GGUF_XF_NONE},
    {"transformer.ln_f.weight", "output_norm.weight", GGUF_XF_NONE},
    {"transformer.ln_f.bias", "output_norm.bias", GGUF_XF_NONE},
};
static const name_pair gpt2_layer[] = {
    {"ln_1.weight", "attn_norm.weight", GGUF_XF_NONE},
    {"ln_1.bias", "attn_norm.bias", GGUF_XF_NONE},
    {"attn.c_attn.weight", "attn_qkv.weight", GGUF_XF_TRANSPOSE},
    {"attn.c_attn.bias", "attn_qkv.bias", GGUF_XF_NONE},
    {"attn.c_proj.weight", "attn_output.weight", GGUF_XF_TRANSPOSE},
    {"attn.c_proj.bias", "attn_output.bias", GGUF_XF_NONE},
    {"ln_2.weight", "ffn_norm.weight", GGUF_XF_NONE},
    {"ln_2.bias", "ffn_norm.bias", GGUF_XF_NONE},
    {"mlp.c_fc.weight", "ffn_up.weight", GGUF_XF_TRANSPOSE},
    {"mlp.c_fc.bias", "ffn_up.bias", GGUF_XF_NONE},
    {"mlp.c_proj.weight", "ffn_down.weight", GGUF_XF_TRANSPOSE},
    {"mlp.c_proj.bias", "ffn_down.bias", GGUF_XF_NONE},
};
static const name_pair llama_global[] = {
    {"model.embed_tokens.weight", "token_embd.weight", GGUF_XF_NONE},
    {"model.norm.weight", "output_norm.weight", GGUF_XF_NONE},
    {"lm_head.weight", "output.weight", GGUF_XF_NONE},
};
static const name_pair llama_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight", GGUF_XF_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", GGUF_XF_PERMUTE_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", GGUF_XF_PERMUTE_K},
    {"self_attn.v_proj.weight", "attn_v.weight", GGUF_XF_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", GGUF_XF_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", GGUF_XF_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", GGUF_XF_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", GGUF_XF_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", GGUF_XF_NONE},
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", GGUF_XF_NONE},
};
/* Mixtral's experts: llama.cpp stacks each layer's E matrices of one kind into one 3-D tensor,
 * ne = [cols, rows, E] (expert e's (rows, cols) matrix is slice e). */
static const name_pair llama_expert[] = {
    {"w1.weight", "ffn_gate_exps.weight", GGUF_XF_NONE},
    {"w3.weight", "ffn_up_exps.weight", GGUF_XF_NONE},
    {"w2.weight", "ffn_down_exps.weight", GGUF_XF_NONE},
};
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The llama.cpp name of a parameter-table tensor and how it is laid out there; *expert gets the
 * slice of a Mixtral expert's matrix in its stacked tensor, -1 for any other tensor. False for a
 * name with no counterpart (a GPT-2 MoE's experts and router; otherwise a bug: the table holds
 * only names of the two families). */
bool gguf_layout_name(alloy_family family, const char *hf, char out[ALLOY_GGUF_MAX_NAME + 1], int *xf, int *expert) {
    bool gpt2 = family == ALLOY_FAMILY_GPT2;
    *expert = -1;
    const name_pair *glob = gpt2 ? gpt2_global : llama_global, *layer = gpt2 ? gpt2_layer : llama_layer;
    size_t ng = gpt2 ? COUNT_OF(gpt2_global) : COUNT_OF(llama_global);
    size_t nl = gpt2 ? COUNT_OF(gpt2_layer) : COUNT_OF(llama_layer);
    for (size_t i = 0; i < ng; i++) {
        if (!strcmp(hf, glob[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "%s", glob[i].gguf);
            *xf = glob[i].xf;
            return true;
        }
    }
    const char *prefix = gpt2 ? "transformer.h." : "model.layers.";
    size_t np = strlen(prefix);
    if (strncmp(hf, prefix, np)) return false;
    char *end;
    long l = strtol(hf + np, &end, 10);
    if (end == hf + np || *end != '.' || l < 0) return false;
    for (size_t i = 0; i < nl; i++) {
        if (!strcmp(end + 1, layer[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "blk.%ld.%s", l, layer[i].gguf);
            *xf = layer[i].xf;
            return true;
        }
    }
    static const char experts[] = "block_sparse_moe.experts.";
    if (gpt2 || strncmp(end + 1, experts, sizeof experts - 1)) return false;
    const char *num = end + sizeof experts;
    long e = strtol(num, &end, 10);
    if (end == num || *end != '.' || e < 0 || e >= ALLOY_MAX_EXPERTS) return false;
    for (size_t i = 0; i < COUNT_OF(llama_expert); i++) {
        if (!strcmp(end + 1, llama_expert[i].hf)) {
            snprintf(out, ALLOY_GGUF_MAX_NAME + 1, "blk.%ld.%s", l, llama_expert[i].gguf);
            *xf = llama_expert[i].xf;
            *expert = (int)e;
            return true;
        }
    }
    return false;
}

/* The GGUF shape (fastest first) of a table tensor stored with transform xf. */
int gguf_layout_shape(const alloy_tensor_info *ti, int xf, int64_t ne[ALLOY_GGUF_MAX_DIMS]) {
    for (int d = 0; d < ALLOY_GGUF_MAX_DIMS; d++) ne[d] = 1;
    if (ti->ndim == 1) {
        ne[0] = ti->shape[0];
        return 1;
    }
    // a row-major (rows, cols) tensor is ne = [cols, rows]; a transposed one [rows, cols]
    ne[0] = xf == GGUF_XF_TRANSPOSE ? ti->shape[0] : ti->shape[1];
    ne[1] = xf == GGUF_XF_TRANSPOSE ? ti->shape[1] : ti->shape[0];
    return 2;
}

/* dst (cols, rows) = src (rows, cols)ᵀ */
void gguf_transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

/* Permutes the rows of a (heads·hd, cols) projection within each head between Hugging Face's
 * rotate-half order and llama.cpp's interleaved pairs: to_gguf moves row j·hd/2 + i to row
 * 2i + j (i < hd/2, j < 2), as convert_hf_to_gguf.py's permute; otherwise the inverse. */
void gguf_permute_heads(float *dst, const float *src, int64_t heads, int64_t hd, int64_t cols, bool to_gguf) {
    int64_t half = hd / 2;
    for (int64_t h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++) {
                int64_t hf_row = h * hd + j * half + i, gg_row = h * hd + 2 * i + j;
                int64_t from = to_gguf ? hf_row : gg_row, to = to_gguf ? gg_row : hf_row;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof(float));
            }
}

/* Number of heads whose rows a transform permutes. */
int64_t gguf_permute_heads_of(const alloy_config *c, int xf) {
    return xf == GGUF_XF_PERMUTE_Q ? c->n_head : c->n_kv_head;
}
