/*
 * gguf_tokenizer.c — alloy's tokenizers as GGUF metadata (tokenizer.ggml.*, the "gpt2" model
 * of llama.cpp: byte-level BPE). Tokens are written in GPT-2's byte-level vocabulary form
 * ("Ġ" for a space), special tokens as their text, merges as "a b"; ids the tokenizer does not
 * use are "[PAD<id>]" placeholders. A file whose tokens are the 256 bytes in order and that has
 * no merges reads back as the byte tokenizer.
 *
 * Only include/alloy/tokenizer.h is used: the accessors to write, alloy_bpe_builder to read.
 */
#include "gguf_internal.h"

#include <stdlib.h>
#include <string.h>

/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* ---- writing ---- */

/* Token id's string as written (a placeholder, a special token's text, or the vocabulary form
 * of its bytes) in a new buffer, its length and its llama.cpp type; NULL when out of memory. */
static char *token_string(const alloy_tokenizer *t, size_t id, size_t *len, int32_t *type) {
    size_t n = 0;
    const char *bytes = id < (size_t)alloy_tokenizer_vocab_size(t) ? alloy_tokenizer_token(t, (int32_t)id, &n) : NULL;
    char *str;
    if (!bytes) { // a gap in the vocabulary or past its end: a placeholder
        str = alloy_malloc(32);
        if (str) *len = (size_t)snprintf(str, 32, "[PAD%zu]", id);
        *type = TT_UNUSED;
    } else if (alloy_tokenizer_is_special(t, (int32_t)id)) { // special tokens are written as their text
        str = alloy_malloc(n + 1);
        if (str) {
            memcpy(str, bytes, n);
            *len = n;
        }
        *type = TT_CONTROL;
    } else {
        str = alloy_malloc(2 * n + 1);
        if (str) *len = alloy_bpe_bytes_to_vocab(bytes, n, str);
        *type = TT_NORMAL;
    }
    return str;
}

/* Merge r as "a b" in vocabulary form, in a new buffer; NULL when out of memory. */
static char *merge_string(const alloy_tokenizer *t, int32_t r) {
    int32_t a, b;
    size_t la = 0, lb = 0;
    alloy_tokenizer_merge(t, r, &a, &b);
    const char *ba = alloy_tokenizer_token(t, a, &la), *bb = alloy_tokenizer_token(t, b, &lb);
    char *str = alloy_malloc(2 * (la + lb) + 2);
    if (!str) return NULL;
    size_t k = alloy_bpe_bytes_to_vocab(ba, la, str);
    str[k] = ' ';
    alloy_bpe_bytes_to_vocab(bb, lb, str + k + 1);
    return str;
}

/* The keys besides the lists: model, pre-tokenizer, bos/eos, the prefix space. */
static alloy_status put_tokenizer_keys(alloy_gguf_writer *w, const alloy_tokenizer *t) {
    const char *pattern = alloy_tokenizer_pattern(t);
    bool gpt2_regex = !pattern || !strcmp(pattern, alloy_tokenizer_gpt2_pattern());
    alloy_status s = alloy_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    // llama.cpp knows GPT-2's pre-tokenizer as "gpt-2"; another regex is kept for alloy
    if (!s) s = alloy_gguf_set_str(w, "tokenizer.ggml.pre", gpt2_regex ? "gpt-2" : "default");
    if (!s && !gpt2_regex) s = alloy_gguf_set_str(w, "alloy.tokenizer.pattern", pattern);
    return s;
}

/* Writes the tokenizer as tokenizer.ggml.* (byte-level BPE, "gpt2") with n_vocab >= its size
 * entries: llama.cpp takes the vocabulary size from the token list and needs it to match
 * token_embd, so ids past the tokenizer's are "[PAD<id>]" placeholders, as its converter
 * writes them. */
alloy_status gguf_put_tokenizer(alloy_gguf_writer *w, const alloy_tokenizer *t, int n_vocab) {
    size_t n = (size_t)n_vocab;
    int32_t n_merges = alloy_tokenizer_n_merges(t);
    char **strs = alloy_calloc(n, sizeof *strs);
    size_t *lens = alloy_calloc(n, sizeof *lens);
    int32_t *types = alloy_calloc(n, sizeof *types);
    char **merges = alloy_calloc((size_t)(n_merges ? n_merges : 1), sizeof *merges);
    alloy_status s = (!strs || !lens || !types || !merges) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (size_t id = 0; id < n && !s; id++)
        if (!(strs[id] = token_string(t, id, &lens[id], &types[id]))) s = ALLOY_STATUS_NOMEM;
    for (int32_t r = 0; r < n_merges && !s; r++)
        if (!(merges[r] = merge_string(t, r))) s = ALLOY_STATUS_NOMEM;
    if (!s) s = put_tokenizer_keys(w, t);
    if (!s) s = alloy_gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)strs, lens, n);
    if (!s) s = alloy_gguf_set_arr(w, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, types, n);
    if (!s)
        s = alloy_gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (size_t)n_merges);
    int32_t eot = alloy_tokenizer_special_id(t, "<|endoftext|>");
    if (!s && eot >= 0) s = alloy_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)eot);
    if (!s && eot >= 0) s = alloy_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eot);
    if (!s)
        s = alloy_gguf_set_val(w, "tokenizer.ggml.add_bos_token", ALLOY_GGUF_VTYPE_BOOL,
                               (alloy_gguf_scalar){.b = false});
    if (!s && alloy_tokenizer_add_prefix_space(t))
        s = alloy_gguf_set_val(w, "tokenizer.ggml.add_space_prefix", ALLOY_GGUF_VTYPE_BOOL,
                               (alloy_gguf_scalar){.b = true});
    for (size_t i = 0; strs && i < n; i++) alloy_free(strs[i]);
    for (int32_t r = 0; merges && r < n_merges; r++) alloy_free(merges[r]);
    alloy_free(strs);
    alloy_free(lens);
    alloy_free(types);
    alloy_free(merges);
    return s;
}

/* ---- reading ---- */

/* The lists of tokenizer.ggml.* (types and merges NULL when absent), checked: the model is
 * "gpt2", the vocabulary has 256 to 2^24 tokens, one type per token. */
static alloy_status token_lists(const alloy_gguf *g, const alloy_gguf_kv *model, const alloy_gguf_kv **tokens,
                                const alloy_gguf_kv **types, const alloy_gguf_kv **merges) {
    char q[52];
    if (model->type != ALLOY_GGUF_VTYPE_STRING || strcmp(model->str, "gpt2"))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: tokenizer \"%s\" is not supported (alloy reads byte-level BPE, \"gpt2\"); import the "
                          "weights alone",
                          g->path,
                          model->type == ALLOY_GGUF_VTYPE_STRING ? gguf_quotable(model->str, model->str_len, q) : "?");
    *types = *merges = NULL;
    alloy_status s = alloy_gguf_get_arr(g, "tokenizer.ggml.tokens", ALLOY_GGUF_VTYPE_STRING, tokens);
    if (!s && alloy_gguf_find_kv(g, "tokenizer.ggml.token_type"))
        s = alloy_gguf_get_arr(g, "tokenizer.ggml.token_type", ALLOY_GGUF_VTYPE_INT32, types);
    if (!s && alloy_gguf_find_kv(g, "tokenizer.ggml.merges"))
        s = alloy_gguf_get_arr(g, "tokenizer.ggml.merges", ALLOY_GGUF_VTYPE_STRING, merges);
    if (s) return s;
    if ((*tokens)->arr_n < 256 || (*tokens)->arr_n > (1 << 24))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu tokens (a byte-level BPE has 256 to 16777216)", g->path,
                          (unsigned long long)(*tokens)->arr_n);
    if (*types && (*types)->arr_n != (*tokens)->arr_n)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %llu token types for %llu tokens", g->path,
                          (unsigned long long)(*types)->arr_n, (unsigned long long)(*tokens)->arr_n);
    return ALLOY_STATUS_OK;
}

/* Token id's llama.cpp type; NORMAL when the file has no types. */
static int32_t token_type(const alloy_gguf_kv *types, int32_t id) {
    alloy_gguf_scalar ty = {.i32 = TT_NORMAL};
    if (types) alloy_gguf_arr_get(types, (uint64_t)id, &ty);
    return ty.i32;
}

/* Whether the lists are the byte tokenizer's: token i the byte i for i < 256, placeholders
 * after, no merges. buf holds 4 bytes. */
static bool byte_tokenizer(const alloy_gguf_kv *tokens, const alloy_gguf_kv *types, uint64_t n_merges, char *buf) {
    bool bytes_only = n_merges == 0;
    for (int32_t id = 0; id < (int32_t)tokens->arr_n && bytes_only; id++) {
        size_t len, bl;
        const char *str = alloy_gguf_arr_str(tokens, (uint64_t)id, &len);
        int32_t ty = token_type(types, id);
        if (id >= 256) bytes_only = ty == TT_UNUSED;
        else
            bytes_only = ty == TT_NORMAL && len <= 4 && alloy_bpe_vocab_to_bytes(str, len, buf, &bl) && bl == 1 &&
                         (uint8_t)buf[0] == id;
    }
    return bytes_only;
}

/* Sets every token the file uses on the builder. buf holds 2·65536 bytes. */
static alloy_status set_tokens(const alloy_gguf *g, alloy_bpe_builder *b, const alloy_gguf_kv *tokens,
                               const alloy_gguf_kv *types, char *buf) {
    alloy_status s = ALLOY_STATUS_OK;
    char q[52];
    for (int32_t id = 0; id < (int32_t)tokens->arr_n && !s; id++) {
        size_t len, bl;
        const char *str = alloy_gguf_arr_str(tokens, (uint64_t)id, &len);
        int32_t ty = token_type(types, id);
        if (ty == TT_UNUSED) continue;
        if (len == 0 || len > 2 * 65536) { // a byte may take two bytes in vocabulary form
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d has %zu bytes", g->path, id, len);
        } else if (ty == TT_NORMAL) {
            if (!alloy_bpe_vocab_to_bytes(str, len, buf, &bl))
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d (\"%s\") is not in byte-level form", g->path, id,
                               gguf_quotable(str, len, q));
            else s = alloy_bpe_builder_set_token(b, id, buf, bl, false);
        } else if (ty == TT_CONTROL || ty == TT_USER_DEFINED || ty == TT_UNKNOWN) {
            s = alloy_bpe_builder_set_token(b, id, str, len, true); // written as their text
        } else {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token %d has type %d, which a byte-level BPE does not use",
                           g->path, id, ty);
        }
    }
    return s;
}

/* Adds the merges ("a b" in vocabulary form) in rank order. buf holds 2·65536 + 2 bytes. */
static alloy_status add_merges(const alloy_gguf *g, alloy_bpe_builder *b, const alloy_gguf_kv *merges, char *buf) {
    alloy_status s = ALLOY_STATUS_OK;
    char q[52];
    for (uint64_t r = 0; merges && r < merges->arr_n && !s; r++) {
        size_t len, la, lb;
        const char *str = alloy_gguf_arr_str(merges, r, &len);
        const char *sp = memchr(str, ' ', len); // vocabulary strings hold no raw space: it is "Ġ"
        char *right = buf + 65536 + 1;
        if (!sp || len > 65536 || !alloy_bpe_vocab_to_bytes(str, (size_t)(sp - str), buf, &la) ||
            !alloy_bpe_vocab_to_bytes(sp + 1, len - (size_t)(sp - str) - 1, right, &lb))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %llu (\"%s\") is not \"a b\" in byte-level form",
                              g->path, (unsigned long long)r + 1, gguf_quotable(str, len, q));
        int32_t l = alloy_bpe_builder_lookup(b, buf, la), rr = alloy_bpe_builder_lookup(b, right, lb);
        if (l < 0 || rr < 0)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %llu (\"%s\") names a token that is not in the vocabulary",
                           g->path, (unsigned long long)r + 1, gguf_quotable(str, len, q));
        else s = alloy_bpe_builder_add_merge(b, l, rr);
    }
    return s;
}

/* The pre-tokenizer: alloy's own regex, or GPT-2's (NULL); refuses another of llama.cpp's. */
static alloy_status pretokenizer(const alloy_gguf *g, const char **pattern, bool *prefix) {
    char q[52];
    *pattern = NULL;
    *prefix = false;
    const alloy_gguf_kv *pat = alloy_gguf_find_kv(g, "alloy.tokenizer.pattern");
    const alloy_gguf_kv *pre = alloy_gguf_find_kv(g, "tokenizer.ggml.pre");
    const alloy_gguf_kv *sp = alloy_gguf_find_kv(g, "tokenizer.ggml.add_space_prefix");
    if (pat && pat->type == ALLOY_GGUF_VTYPE_STRING) *pattern = pat->str;
    else if (pre && (pre->type != ALLOY_GGUF_VTYPE_STRING || strcmp(pre->str, "gpt-2")))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s: pre-tokenizer \"%s\" is not supported (alloy knows gpt-2's); import the weights alone",
                          g->path,
                          pre->type == ALLOY_GGUF_VTYPE_STRING ? gguf_quotable(pre->str, pre->str_len, q) : "?");
    if (sp && sp->type == ALLOY_GGUF_VTYPE_BOOL) *prefix = sp->val.b;
    return ALLOY_STATUS_OK;
}

alloy_status gguf_get_tokenizer(const alloy_gguf *g, alloy_tokenizer **out) {
    *out = NULL;
    const alloy_gguf_kv *model = alloy_gguf_find_kv(g, "tokenizer.ggml.model");
    if (!model) return ALLOY_STATUS_OK;
    const alloy_gguf_kv *tokens, *types, *merges;
    alloy_status s = token_lists(g, model, &tokens, &types, &merges);
    if (s) return s;
    char *buf = alloy_malloc(2 * 65536 + 2);
    if (!buf) return ALLOY_STATUS_NOMEM;
    if (byte_tokenizer(tokens, types, merges ? merges->arr_n : 0, buf)) {
        alloy_free(buf);
        return alloy_tokenizer_create(out, "bytes");
    }
    alloy_bpe_builder *b = NULL;
    const char *pattern = NULL;
    bool prefix = false;
    s = alloy_bpe_builder_create(&b, (int32_t)tokens->arr_n, g->path);
    if (!s) s = set_tokens(g, b, tokens, types, buf);
    if (!s) s = alloy_bpe_builder_end_tokens(b);
    if (!s) s = add_merges(g, b, merges, buf);
    if (!s) s = pretokenizer(g, &pattern, &prefix);
    if (!s) s = alloy_bpe_builder_finish(b, pattern, prefix, out);
    alloy_bpe_builder_destroy(b);
    alloy_free(buf);
    return s;
}
