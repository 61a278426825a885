/*
 * gguf_import.c — a GGUF file of llama.cpp's "gpt2" or "llama" layout (Mixtral included) read
 * into an alloy model: the config from <arch>.* (checked against the tensors before anything
 * is allocated), every tensor converted to f32 into its place in the parameter table
 * (gguf_layout.c undoes llama.cpp's layouts), and the tokenizer (gguf_tokenizer.c).
 */
#include "gguf_internal.h"

#include "alloy/io.h"

#include <stdlib.h>
#include <string.h>

/* The sizes that decide the model's memory must agree with tensors the file holds, before
 * anything is allocated: a header alone cannot make alloy allocate what the file lacks. */
static alloy_status check_sizes(const alloy_gguf *g, const alloy_config *cfg, const char *arch) {
    bool gpt2 = cfg->family == ALLOY_FAMILY_GPT2;
    char last[64];
    snprintf(last, sizeof last, "blk.%d.attn_norm.weight", cfg->n_layer - 1);
    const char *down_name = cfg->n_experts ? "blk.0.ffn_down_exps.weight" : "blk.0.ffn_down.weight";
    const alloy_gguf_tensor *down = alloy_gguf_find_tensor(g, down_name);
    const alloy_gguf_tensor *pos = alloy_gguf_find_tensor(g, "position_embd.weight");
    if (!alloy_gguf_find_tensor(g, last))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (%s.block_count is %d)", g->path, last,
                          arch, cfg->n_layer);
    if (!down || down->ne[0] != cfg->d_ff)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" is missing or not %d wide (%s.feed_forward_length)",
                          g->path, down_name, cfg->d_ff, arch);
    if (cfg->n_experts && (down->n_dims != 3 || down->ne[2] != cfg->n_experts))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" does not stack %d experts (%s.expert_count)",
                          g->path, down_name, cfg->n_experts, arch);
    if (gpt2 && (!pos || pos->n_dims != 2 || pos->ne[1] != cfg->max_seq_len))
        return alloy_fail(ALLOY_STATUS_MISMATCH,
                          "%s: tensor \"position_embd.weight\" is missing or has not %d rows (%s.context_length)",
                          g->path, cfg->max_seq_len, arch);
    return ALLOY_STATUS_OK;
}

/* The shortest decimal that rounds to the same float: 1e-5 stored as FLOAT32 reads back as
 * 1e-5, not 9.99999974738e-06, so that a config survives the round trip unchanged. */
static double tidy_float(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

/* <arch>.<suffix> as an int in [lo, hi]; absent: FORMAT if required, else *out unchanged. */
static alloy_status get_hparam(const alloy_gguf *g, const char *arch, const char *suffix, bool required, int64_t lo,
                               int64_t hi, int *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!required && !alloy_gguf_find_kv(g, key)) return ALLOY_STATUS_OK;
    int64_t v;
    alloy_status s = alloy_gguf_get_int(g, key, &v);
    if (s) return s;
    if (v < lo || v > hi)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"%s\" = %lld is out of range [%lld, %lld]", g->path, key,
                          (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return ALLOY_STATUS_OK;
}

/* <arch>.<suffix> as a float, tidied; absent: FORMAT if required, else *out unchanged. */
static alloy_status get_hparam_float(const alloy_gguf *g, const char *arch, const char *suffix, bool required,
                                     double *out) {
    char key[96];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const alloy_gguf_kv *kv = alloy_gguf_find_kv(g, key);
    if (!required && !kv) return ALLOY_STATUS_OK;
    alloy_status s = alloy_gguf_get_float(g, key, out);
    if (!s && kv->type == ALLOY_GGUF_VTYPE_FLOAT32) *out = tidy_float(kv->val.f32);
    return s;
}

/* The config from general.architecture and <arch>.*, validated and checked against the tensors
 * that decide the model's memory. */
static alloy_status config_from_gguf(const alloy_gguf *g, alloy_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const char *arch;
    alloy_status s = alloy_gguf_get_str(g, "general.architecture", &arch);
    if (s) return s;
    bool gpt2 = !strcmp(arch, "gpt2");
    char q[52];
    if (!gpt2 && strcmp(arch, "llama"))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: architecture \"%s\" is not supported (alloy reads gpt2 and llama)",
                          g->path, gguf_quotable(arch, strlen(arch), q));
    cfg->family = gpt2 ? ALLOY_FAMILY_GPT2 : ALLOY_FAMILY_LLAMA;
    const alloy_gguf_tensor *emb = alloy_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"token_embd.weight\"", g->path);
    if (emb->n_dims != 2 || emb->ne[1] > (1 << 24))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"token_embd.weight\" is not a (vocab, embedding) matrix",
                          g->path);
    cfg->vocab_size = (int)emb->ne[1];
    const int64_t big = 1 << 30;
    if ((s = get_hparam(g, arch, "context_length", true, 1, big, &cfg->max_seq_len)) ||
        (s = get_hparam(g, arch, "embedding_length", true, 1, big, &cfg->d_model)) ||
        (s = get_hparam(g, arch, "block_count", true, 1, big, &cfg->n_layer)) ||
        (s = get_hparam(g, arch, "attention.head_count", true, 1, big, &cfg->n_head)))
        return s;
    if (emb->ne[0] != cfg->d_model)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: token_embd.weight has rows of %lld but %s.embedding_length is %d",
                          g->path, (long long)emb->ne[0], arch, cfg->d_model);
    int vocab = cfg->vocab_size;
    if ((s = get_hparam(g, arch, "vocab_size", false, 1, big, &vocab))) return s;
    if (vocab != cfg->vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: %s.vocab_size is %d but token_embd.weight has %d rows", g->path,
                          arch, vocab, cfg->vocab_size);
    cfg->n_kv_head = cfg->n_head;
    if ((s = get_hparam(g, arch, "attention.head_count_kv", false, 1, big, &cfg->n_kv_head))) return s;
    cfg->norm_eps = 1e-5;
    cfg->rope_theta = 10000.0;
    if (gpt2) {
        // llama.cpp's converter writes 4·n_embd; read the width from ffn_up when the key is absent
        const alloy_gguf_tensor *up = alloy_gguf_find_tensor(g, "blk.0.ffn_up.weight");
        cfg->d_ff = up && up->n_dims == 2 && up->ne[1] <= big ? (int)up->ne[1]
                                                              : 4 * (cfg->d_model < big / 4 ? cfg->d_model : 1);
        if ((s = get_hparam(g, arch, "feed_forward_length", false, 1, big, &cfg->d_ff))) return s;
        if ((s = get_hparam_float(g, arch, "attention.layer_norm_epsilon", true, &cfg->norm_eps))) return s;
        cfg->tie_embeddings = true;
    } else {
        if ((s = get_hparam(g, arch, "feed_forward_length", true, 1, big, &cfg->d_ff))) return s;
        if ((s = get_hparam_float(g, arch, "attention.layer_norm_rms_epsilon", true, &cfg->norm_eps))) return s;
        if ((s = get_hparam_float(g, arch, "rope.freq_base", false, &cfg->rope_theta))) return s;
        cfg->tie_embeddings = alloy_gguf_find_tensor(g, "output.weight") == NULL;
        int rope_dims = cfg->d_model / cfg->n_head;
        if ((s = get_hparam(g, arch, "rope.dimension_count", false, 0, big, &rope_dims))) return s;
        if (cfg->d_model % cfg->n_head == 0 && rope_dims != cfg->d_model / cfg->n_head)
            return alloy_fail(ALLOY_STATUS_FORMAT,
                              "%s: llama.rope.dimension_count %d: rotary embeddings over part of a "
                              "head (of %d) are not supported",
                              g->path, rope_dims, cfg->d_model / cfg->n_head);
        // a Mixtral: llama.cpp's expert keys (the aux-loss coefficient, not stored, is Mixtral's)
        if ((s = get_hparam(g, arch, "expert_count", false, 0, ALLOY_MAX_EXPERTS, &cfg->n_experts))) return s;
        if (cfg->n_experts > 0) {
            if ((s = get_hparam(g, arch, "expert_used_count", true, 1, cfg->n_experts, &cfg->top_k))) return s;
            cfg->router_aux_loss_coef = 0.001;
        }
        const alloy_gguf_kv *scaling = alloy_gguf_find_kv(g, "llama.rope.scaling.type");
        if (scaling && (scaling->type != ALLOY_GGUF_VTYPE_STRING || strcmp(scaling->str, "none")))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: RoPE scaling (llama.rope.scaling.type) is not supported",
                              g->path);
    }
    const alloy_gguf_kv *tk = alloy_gguf_find_kv(g, "alloy.tokenizer");
    if (tk) {
        if (tk->type != ALLOY_GGUF_VTYPE_STRING || tk->str_len >= sizeof cfg->tokenizer)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: key \"alloy.tokenizer\" must be a short string", g->path);
        memcpy(cfg->tokenizer, tk->str, tk->str_len + 1);
    }
    if ((s = alloy_config_validate(cfg, g->path))) return s;
    return check_sizes(g, cfg, arch);
}

/* Every tensor of the file must have found a place: names[i] is the file's name of the table's
 * tensor i. */
static alloy_status check_all_placed(const alloy_model *m, const alloy_gguf *g,
                                     char (*names)[ALLOY_GGUF_MAX_NAME + 1]) {
    for (size_t k = 0; k < g->n_tensors; k++) {
        const alloy_gguf_tensor *t = &g->tensors[k];
        bool known = false;
        for (int i = 0; i < m->n_tensors && !known; i++) known = !strcmp(names[i], t->name);
        if (known) continue;
        if (m->config.family == ALLOY_FAMILY_GPT2 && !strcmp(t->name, "output.weight")) {
            // a head tied by copy is fine; alloy's GPT-2 cannot hold another
            const alloy_gguf_tensor *e = alloy_gguf_find_tensor(g, "token_embd.weight");
            if (e->type == t->type && e->nbytes == t->nbytes && !memcmp(e->data, t->data, t->nbytes) &&
                e->n_dims == t->n_dims && e->ne[0] == t->ne[0] && e->ne[1] == t->ne[1])
                continue;
            return alloy_fail(ALLOY_STATUS_MISMATCH,
                              "%s: tensor \"output.weight\" differs from token_embd.weight (alloy's GPT-2 ties its "
                              "head)",
                              g->path);
        }
        return alloy_fail(ALLOY_STATUS_MISMATCH,
                          "%s: unexpected tensor \"%s\" (does the metadata match the weights?)", g->path, t->name);
    }
    return ALLOY_STATUS_OK;
}

/* Fills the model's parameters from the file's tensors. */
static alloy_status load_tensors(alloy_model *m, const alloy_gguf *g) {
    const alloy_config *c = &m->config;
    char(*names)[ALLOY_GGUF_MAX_NAME + 1] = alloy_calloc((size_t)m->n_tensors, sizeof *names);
    float *buf = NULL;
    size_t buf_cap = 0;
    alloy_status s = names ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        int xf, expert;
        bool mapped = gguf_layout_name(c->family, ti->name, names[i], &xf, &expert);
        ALLOY_ASSERT(mapped);
        const alloy_gguf_tensor *t = alloy_gguf_find_tensor(g, names[i]);
        if (!t) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (for %s)", g->path, names[i], ti->name);
            break;
        }
        int64_t ne[ALLOY_GGUF_MAX_DIMS];
        int nd = gguf_layout_shape(ti, xf, ne);
        alloy_gguf_tensor slice;
        if (expert >= 0) { // slice `expert` of the stacked [cols, rows, E] tensor, if that is its shape
            nd = 3;
            ne[2] = c->n_experts;
            if (t->n_dims == 3 && t->ne[0] == ne[0] && t->ne[1] == ne[1] && t->ne[2] == ne[2]) {
                slice = *t;
                slice.n_dims = 2;
                slice.ne[2] = 1;
                slice.n_elems = t->n_elems / (size_t)ne[2];
                slice.nbytes = t->nbytes / (size_t)ne[2]; // whole rows: an expert's bytes are contiguous
                slice.data = t->data + (size_t)expert * slice.nbytes;
                slice.offset = t->offset + (uint64_t)expert * slice.nbytes;
                t = &slice;
                nd = 2;
                ne[2] = 1;
            }
        }
        bool same = t->n_dims == nd;
        for (int d = 0; d < ALLOY_GGUF_MAX_DIMS; d++) same = same && t->ne[d] == ne[d];
        if (!same) {
            char want[96], got[96];
            alloy_format_shape(want, sizeof want, ne, nd);
            alloy_format_shape(got, sizeof got, t->ne, t->n_dims);
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" has shape %s but the metadata imply %s", g->path,
                           names[i], got, want);
            break;
        }
        float *dst = m->params_memory + ti->offset;
        if (nd == 1 || xf == GGUF_XF_NONE) {
            s = alloy_gguf_tensor_to_f32(g, t, dst);
            continue;
        }
        if (ti->numel > buf_cap) {
            alloy_free(buf);
            buf = alloy_malloc(ti->numel * sizeof(float));
            buf_cap = buf ? ti->numel : 0;
            if (!buf) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
        }
        if ((s = alloy_gguf_tensor_to_f32(g, t, buf))) break;
        if (xf == GGUF_XF_TRANSPOSE) gguf_transpose(dst, buf, ti->shape[1], ti->shape[0]); // (out, in) -> (in, out)
        else gguf_permute_heads(dst, buf, gguf_permute_heads_of(c, xf), alloy_config_head_dim(c), ti->shape[1], false);
    }
    if (!s) s = check_all_placed(m, g, names);
    alloy_free(buf);
    alloy_free(names);
    return s;
}

alloy_status alloy_gguf_import_model_ex(alloy_model **out, alloy_tokenizer **tok_out, const char *path, int max_B,
                                        int max_T) {
    *out = NULL;
    if (tok_out) *tok_out = NULL;
    alloy_gguf *g;
    alloy_status s = alloy_gguf_open(&g, path);
    if (s) return s;
    alloy_config cfg;
    alloy_model *m = NULL;
    alloy_tokenizer *tok = NULL;
    s = config_from_gguf(g, &cfg);
    if (!s) s = alloy_model_create(&m, &cfg, max_B, max_T > 0 ? max_T : cfg.max_seq_len);
    if (!s) s = load_tensors(m, g);
    if (!s && tok_out) s = gguf_get_tokenizer(g, &tok);
    alloy_gguf_close(g);
    if (s) {
        alloy_model_destroy(m);
        alloy_tokenizer_destroy(tok);
        return s;
    }
    *out = m;
    if (tok_out) *tok_out = tok;
    return ALLOY_STATUS_OK;
}
