/*
 * llmc.c — karpathy's checkpoint files: llm.c's GPT-2 (import of versions 3 and 5, export of
 * version 3) and llama2.c's Llama (import of the legacy format and of version 1). The formats
 * are documented byte by byte in alloy/llmc.h.
 *
 * Each format is a table of its tensors in file order, each naming the parameter of alloy's
 * table it becomes and how (copied, transposed, or rows permuted for the rotary convention), so
 * that one walk computes the size a header implies, one reads, and one writes. Files are
 * memory-mapped and checked whole — magic, version, every size, and the exact length — before a
 * model is created or a byte of a tensor is read. Values are decoded as little-endian bytes, so
 * the code does not depend on the host's byte order or on alignment.
 */
#include "alloy/llmc.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* ---- little-endian values --------------------------------------------------------------- */

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t get_i32(const uint8_t *p) {
    uint32_t u = get_u32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float get_f32(const uint8_t *p) {
    uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bf16 is the top half of an fp32: widening is exact. */
static float get_bf16(const uint8_t *p) {
    uint32_t u = ((uint32_t)p[0] | (uint32_t)p[1] << 8) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One value of a tensor, es bytes wide (4: fp32, 2: bf16). */
static inline float get(const uint8_t *p, size_t es) { return es == 2 ? get_bf16(p) : get_f32(p); }

static void put_u32(uint8_t *p, uint32_t u) {
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

/* ---- tensor tables ---------------------------------------------------------------------- */

/* The sizes that tensor shapes are written in; their values come from a header. */
typedef enum dim_id {
    D_ONE,  /* 1: the second dimension of a vector */
    D_C,    /* model width: channels / dim */
    D_3C,   /* GPT-2's fused q, k, v */
    D_F,    /* MLP width: 4C for GPT-2, hidden_dim for llama2.c */
    D_T,    /* max_seq_len / seq_len */
    D_V,    /* vocabulary */
    D_VP,   /* llm.c's padded vocabulary */
    D_KV,   /* llama2.c's KV width: n_kv_heads · head_size */
    D_HALF, /* head_size / 2: the old rotary tables */
    D_COUNT
} dim_id;

typedef enum conv_kind {
    CONV_COPY,      /* the same layout; ours may have fewer rows (llm.c's padded wte) */
    CONV_TRANSPOSE, /* the file's (rows, cols) is ours (cols, rows): nn.Linear vs Conv1D */
    CONV_ROPE,      /* (out, in) rows permuted per head from interleaved rotary pairs to rotate-half */
    CONV_SKIP,      /* present in the file, not a parameter (llama2.c's freq_cis tables) */
} conv_kind;

/* One tensor of a file, in file order. */
typedef struct file_tensor {
    const char *name;    /* alloy's parameter, a printf format taking the layer if per_layer
                            (CONV_SKIP: the file's name, for reading only) */
    dim_id rows, cols;   /* the shape in the file (of one layer) */
    bool per_layer;      /* n_layer copies, one after the other */
    conv_kind conv;      /* how the file's layout becomes ours */
    bool unshared_only;  /* present only when the classifier is not the embedding */
} file_tensor;

/* llm.c's 16 tensors (train_gpt2.c fill_in_parameter_sizes), with the Hugging Face names of
 * alloy's GPT-2. */
static const file_tensor llmc_tensors[] = {
    {"transformer.wte.weight", D_VP, D_C, false, CONV_COPY, false},
    {"transformer.wpe.weight", D_T, D_C, false, CONV_COPY, false},
    {"transformer.h.%d.ln_1.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.ln_1.bias", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.attn.c_attn.weight", D_3C, D_C, true, CONV_TRANSPOSE, false},
    {"transformer.h.%d.attn.c_attn.bias", D_3C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.attn.c_proj.weight", D_C, D_C, true, CONV_TRANSPOSE, false},
    {"transformer.h.%d.attn.c_proj.bias", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.ln_2.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.ln_2.bias", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.mlp.c_fc.weight", D_F, D_C, true, CONV_TRANSPOSE, false},
    {"transformer.h.%d.mlp.c_fc.bias", D_F, D_ONE, true, CONV_COPY, false},
    {"transformer.h.%d.mlp.c_proj.weight", D_C, D_F, true, CONV_TRANSPOSE, false},
    {"transformer.h.%d.mlp.c_proj.bias", D_C, D_ONE, true, CONV_COPY, false},
    {"transformer.ln_f.weight", D_C, D_ONE, false, CONV_COPY, false},
    {"transformer.ln_f.bias", D_C, D_ONE, false, CONV_COPY, false},
};

/* llama2.c's legacy order (run.c memory_map_weights): w1 is the gate, w3 the up projection. */
static const file_tensor llama2c_v0_tensors[] = {
    {"model.embed_tokens.weight", D_V, D_C, false, CONV_COPY, false},
    {"model.layers.%d.input_layernorm.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"model.layers.%d.self_attn.q_proj.weight", D_C, D_C, true, CONV_ROPE, false},
    {"model.layers.%d.self_attn.k_proj.weight", D_KV, D_C, true, CONV_ROPE, false},
    {"model.layers.%d.self_attn.v_proj.weight", D_KV, D_C, true, CONV_COPY, false},
    {"model.layers.%d.self_attn.o_proj.weight", D_C, D_C, true, CONV_COPY, false},
    {"model.layers.%d.post_attention_layernorm.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"model.layers.%d.mlp.gate_proj.weight", D_F, D_C, true, CONV_COPY, false},
    {"model.layers.%d.mlp.down_proj.weight", D_C, D_F, true, CONV_COPY, false},
    {"model.layers.%d.mlp.up_proj.weight", D_F, D_C, true, CONV_COPY, false},
    {"model.norm.weight", D_C, D_ONE, false, CONV_COPY, false},
    {"freq_cis_real", D_T, D_HALF, false, CONV_SKIP, false},
    {"freq_cis_imag", D_T, D_HALF, false, CONV_SKIP, false},
    {"lm_head.weight", D_V, D_C, false, CONV_COPY, true},
};

/* llama2.c version 1 (export.py version1_export): the norms first, no rotary tables. */
static const file_tensor llama2c_v1_tensors[] = {
    {"model.layers.%d.input_layernorm.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"model.layers.%d.post_attention_layernorm.weight", D_C, D_ONE, true, CONV_COPY, false},
    {"model.norm.weight", D_C, D_ONE, false, CONV_COPY, false},
    {"model.embed_tokens.weight", D_V, D_C, false, CONV_COPY, false},
    {"model.layers.%d.self_attn.q_proj.weight", D_C, D_C, true, CONV_ROPE, false},
    {"model.layers.%d.self_attn.k_proj.weight", D_KV, D_C, true, CONV_ROPE, false},
    {"model.layers.%d.self_attn.v_proj.weight", D_KV, D_C, true, CONV_COPY, false},
    {"model.layers.%d.self_attn.o_proj.weight", D_C, D_C, true, CONV_COPY, false},
    {"model.layers.%d.mlp.gate_proj.weight", D_F, D_C, true, CONV_COPY, false},
    {"model.layers.%d.mlp.down_proj.weight", D_C, D_F, true, CONV_COPY, false},
    {"model.layers.%d.mlp.up_proj.weight", D_F, D_C, true, CONV_COPY, false},
    {"lm_head.weight", D_V, D_C, false, CONV_COPY, true},
};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A file's layout: its tensor table and the values of the sizes. */
typedef struct layout {
    const file_tensor *tensors; /* (n_tensors) in file order */
    int n_tensors;
    int64_t dim[D_COUNT];       /* the value of each dim_id */
    int n_layer;                /* copies of each per_layer tensor */
    int head_dim;               /* for CONV_ROPE */
    bool shared;                /* the classifier is the embedding (unshared_only tensors absent) */
    size_t esize;               /* bytes per value: 4 (fp32) or 2 (bf16) */
    size_t header;              /* bytes before the first tensor */
} layout;

static bool present(const layout *lo, const file_tensor *t) { return !(t->unshared_only && lo->shared); }

/* The file length the layout implies, false on overflow. */
static bool layout_bytes(const layout *lo, size_t *out) {
    size_t total = lo->header;
    for (int i = 0; i < lo->n_tensors; i++) {
        const file_tensor *t = &lo->tensors[i];
        if (!present(lo, t)) continue;
        size_t n;
        if (!alloy_mul_size((size_t)lo->dim[t->rows], (size_t)lo->dim[t->cols], &n) ||
            !alloy_mul_size(n, t->per_layer ? (size_t)lo->n_layer : 1, &n) || !alloy_mul_size(n, lo->esize, &n) ||
            __builtin_add_overflow(total, n, &total))
            return false;
    }
    *out = total;
    return true;
}

/* The parameter of table entry t for layer l; its existence and shape are internal invariants
 * (the tables here against the model's table), not properties of the file. */
static const alloy_tensor_info *param_of(const alloy_model *m, const layout *lo, const file_tensor *t, int l) {
    char name[ALLOY_MAX_NAME];
    if (t->per_layer) snprintf(name, sizeof name, t->name, l);
    else snprintf(name, sizeof name, "%s", t->name);
    const alloy_tensor_info *ti = alloy_model_find_tensor(m, name);
    ALLOY_ASSERT(ti != NULL);
    int64_t rows = lo->dim[t->rows], cols = lo->dim[t->cols];
    int64_t r = ti->shape[0], c = ti->ndim == 2 ? ti->shape[1] : 1;
    if (t->conv == CONV_TRANSPOSE) ALLOY_ASSERT(r == cols && c == rows);
    else ALLOY_ASSERT(c == cols && r <= rows && (r == rows || t->conv == CONV_COPY));
    return ti;
}

/* File row of our row `r` under CONV_ROPE: within each head, our row a·hd/2 + j holds the
 * file's row 2j + a (Hugging Face's permute in convert_llama_weights_to_hf). */
static int64_t rope_source_row(int64_t r, int hd) {
    int64_t h = r / hd, k = r % hd, half = hd / 2;
    int64_t a = k / half, j = k % half;
    return h * hd + 2 * j + a;
}

/* The side of the square tiles that transposes work in. */
#define TILE 32

/* Reads every tensor of a checked file into the model. */
static void layout_read(alloy_model *m, const layout *lo, const uint8_t *data) {
    const uint8_t *p = data + lo->header;
    const size_t es = lo->esize;
    for (int i = 0; i < lo->n_tensors; i++) {
        const file_tensor *t = &lo->tensors[i];
        if (!present(lo, t)) continue;
        const int64_t rows = lo->dim[t->rows], cols = lo->dim[t->cols];
        const size_t block = (size_t)rows * (size_t)cols * es; // fits: layout_bytes succeeded
        for (int l = 0; l < (t->per_layer ? lo->n_layer : 1); l++, p += block) {
            if (t->conv == CONV_SKIP) continue;
            const alloy_tensor_info *ti = param_of(m, lo, t, l);
            float *dst = m->params_memory + ti->offset;
            switch (t->conv) {
            case CONV_COPY:
                for (size_t k = 0; k < ti->numel; k++) dst[k] = get(p + k * es, es); // leading rows
                break;
            case CONV_TRANSPOSE:
                // file (rows = out, cols = in) -> ours (in, out), in tiles that stay in cache
                for (int64_t o0 = 0; o0 < rows; o0 += TILE)
                    for (int64_t c0 = 0; c0 < cols; c0 += TILE)
                        for (int64_t o = o0; o < o0 + TILE && o < rows; o++)
                            for (int64_t c = c0; c < c0 + TILE && c < cols; c++)
                                dst[c * rows + o] = get(p + (size_t)(o * cols + c) * es, es);
                break;
            case CONV_ROPE:
                ALLOY_ASSERT(lo->head_dim >= 2 && rows % lo->head_dim == 0);
                for (int64_t r = 0; r < rows; r++) {
                    const uint8_t *src = p + (size_t)(rope_source_row(r, lo->head_dim) * cols) * es;
                    for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = get(src + (size_t)c * es, es);
                }
                break;
            case CONV_SKIP:
                break;
            }
        }
    }
}

/* Maps `path` and checks it against the layout that `parse` builds from its header; then
 * creates the model and reads the tensors. */
typedef alloy_status (*parse_fn)(const char *path, const alloy_file_map *map, alloy_config *cfg, layout *lo);

static alloy_status import_file(alloy_model **out, const char *path, int max_B, int max_T, parse_fn parse) {
    *out = NULL;
    if (max_B < 1 || max_T < 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: batch size %d must be at least 1 and sequence length %d at least "
                          "0 (0: the file's maximum)", path, max_B, max_T);
    alloy_file_map map;
    alloy_status s = alloy_file_map_open(&map, path);
    if (s) return s;
    alloy_config cfg;
    layout lo;
    memset(&cfg, 0, sizeof cfg);
    memset(&lo, 0, sizeof lo);
    s = parse(path, &map, &cfg, &lo);
    size_t want = 0;
    if (!s && !layout_bytes(&lo, &want))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the sizes in the header overflow", path);
    if (!s && want != map.size)
        s = alloy_fail(ALLOY_STATUS_FORMAT,
                       "%s: the header's sizes imply %zu bytes but the file has %zu (%s, or the header is wrong)",
                       path, want, map.size, map.size < want ? "truncated" : "extra bytes after the tensors");
    alloy_model *m = NULL;
    if (!s) {
        s = alloy_model_create(&m, &cfg, max_B, max_T ? max_T : cfg.max_seq_len);
        if (s) alloy_error_prefix("%s", path);
    }
    if (!s) layout_read(m, &lo, map.data);
    alloy_file_map_close(&map);
    if (s) return s;
    *out = m;
    return ALLOY_STATUS_OK;
}

/* A header field in [1, max], or a message naming the file and the field. */
static alloy_status check_field(const char *path, const char *field, int64_t v, int64_t max) {
    if (v < 1) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header field %s is %lld; it must be positive", path, field,
                                 (long long)v);
    if (v > max)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header field %s is %lld, beyond alloy's limit of %lld", path,
                          field, (long long)v, (long long)max);
    return ALLOY_STATUS_OK;
}

/* alloy_config_validate's limits */
#define MAX_VOCAB (1 << 24)
#define MAX_SEQ (1 << 20)
#define MAX_LAYERS 1024
#define MAX_HEADS 1024
#define MAX_WIDTH 65536
#define MAX_FF (1 << 20)

/* ---- llm.c ------------------------------------------------------------------------------ */

#define LLMC_HEADER_BYTES (ALLOY_LLMC_HEADER_INTS * 4)

static alloy_status llmc_parse(const char *path, const alloy_file_map *map, alloy_config *cfg, layout *lo) {
    if (map->size < LLMC_HEADER_BYTES)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %zu bytes is too short for an llm.c checkpoint (the header alone "
                          "is %d bytes)", path, map->size, LLMC_HEADER_BYTES);
    const uint8_t *h = map->data;
    int32_t magic = get_i32(h), version = get_i32(h + 4);
    if (magic != ALLOY_LLMC_MAGIC)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not an llm.c GPT-2 checkpoint (magic %d, expected %d)", path,
                          magic, ALLOY_LLMC_MAGIC);
    if (version != 3 && version != 5)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: llm.c checkpoint version %d is not supported (alloy reads 3: "
                          "fp32 and 5: bf16)", path, version);
    int32_t maxT = get_i32(h + 8), V = get_i32(h + 12), L = get_i32(h + 16), NH = get_i32(h + 20),
            C = get_i32(h + 24), Vp = get_i32(h + 28);
    alloy_status s;
    if ((s = check_field(path, "max_seq_len", maxT, MAX_SEQ)) || (s = check_field(path, "vocab_size", V, MAX_VOCAB)) ||
        (s = check_field(path, "num_layers", L, MAX_LAYERS)) || (s = check_field(path, "num_heads", NH, MAX_HEADS)) ||
        (s = check_field(path, "channels", C, MAX_WIDTH)) || (s = check_field(path, "padded_vocab_size", Vp, INT_MAX)))
        return s;
    if (Vp < V)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: padded_vocab_size %d is smaller than vocab_size %d", path, Vp, V);
    if (C % NH != 0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: channels %d is not a multiple of num_heads %d", path, C, NH);
    *cfg = (alloy_config){.family = ALLOY_FAMILY_GPT2, .vocab_size = V, .max_seq_len = maxT, .n_layer = L,
                          .n_head = NH, .n_kv_head = NH, .d_model = C, .d_ff = 4 * C, .norm_eps = 1e-5,
                          .rope_theta = 10000.0, .tie_embeddings = true};
    if ((s = alloy_config_validate(cfg, path))) return s;
    lo->tensors = llmc_tensors;
    lo->n_tensors = N_OF(llmc_tensors);
    lo->n_layer = L;
    lo->shared = true;
    lo->esize = version == 3 ? 4 : 2;
    lo->header = LLMC_HEADER_BYTES;
    int64_t *d = lo->dim;
    d[D_ONE] = 1, d[D_C] = C, d[D_3C] = 3 * (int64_t)C, d[D_F] = 4 * (int64_t)C, d[D_T] = maxT, d[D_V] = V;
    d[D_VP] = Vp;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_llmc_import_ex(alloy_model **out, const char *path, int max_B, int max_T) {
    return import_file(out, path, max_B, max_T, llmc_parse);
}

alloy_status alloy_llmc_import(alloy_model **out, const char *path) { return alloy_llmc_import_ex(out, path, 1, 0); }

/* A buffered little-endian writer over an atomic file. */
typedef struct writer {
    alloy_atomic_file f;
    uint8_t *buf;   /* (WRITER_BYTES) */
    size_t n;       /* bytes in buf */
    alloy_status s; /* the first failure */
} writer;

#define WRITER_BYTES ((size_t)1 << 16)

static void writer_flush(writer *w) {
    if (!w->s && w->n) w->s = alloy_atomic_write(&w->f, w->buf, w->n);
    w->n = 0;
}

static inline void writer_u32(writer *w, uint32_t u) {
    if (w->n + 4 > WRITER_BYTES) writer_flush(w);
    put_u32(w->buf + w->n, u);
    w->n += 4;
}

static inline void writer_f32(writer *w, float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    writer_u32(w, u);
}

alloy_status alloy_llmc_export(const alloy_model *m, const char *path) {
    const alloy_config *c = &m->config;
    if (c->family != ALLOY_FAMILY_GPT2)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: llm.c checkpoints hold GPT-2 models; this one is %s", path,
                          alloy_family_name(c->family));
    if (c->n_experts > 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: llm.c checkpoints hold dense models; this one has %d experts", path,
                          c->n_experts);
    if ((int64_t)c->d_ff != 4 * (int64_t)c->d_model)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: llm.c fixes the MLP width at 4 x %d = %d; this model's is %d", path,
                          c->d_model, 4 * c->d_model, c->d_ff);
    if (fabs(c->norm_eps - 1e-5) > 1e-12)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: llm.c fixes the LayerNorm epsilon at 1e-5; this model's is %g",
                          path, c->norm_eps);
    const int64_t Vp = ((int64_t)c->vocab_size + ALLOY_LLMC_VOCAB_MULTIPLE - 1) / ALLOY_LLMC_VOCAB_MULTIPLE *
                       ALLOY_LLMC_VOCAB_MULTIPLE;
    layout lo = {.tensors = llmc_tensors, .n_tensors = N_OF(llmc_tensors), .n_layer = c->n_layer, .shared = true,
                 .esize = 4, .header = LLMC_HEADER_BYTES};
    int64_t *d = lo.dim;
    d[D_ONE] = 1, d[D_C] = c->d_model, d[D_3C] = 3 * (int64_t)c->d_model, d[D_F] = c->d_ff;
    d[D_T] = c->max_seq_len, d[D_V] = c->vocab_size, d[D_VP] = Vp;

    writer w = {.buf = alloy_malloc(WRITER_BYTES)};
    if (!w.buf) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: out of memory for the write buffer", path);
    alloy_status s = alloy_atomic_open(&w.f, path);
    if (s) {
        alloy_free(w.buf);
        return s;
    }
    int32_t header[ALLOY_LLMC_HEADER_INTS] = {ALLOY_LLMC_MAGIC, 3, c->max_seq_len, c->vocab_size, c->n_layer,
                                              c->n_head, c->d_model, (int32_t)Vp};
    for (int i = 0; i < ALLOY_LLMC_HEADER_INTS; i++) writer_u32(&w, (uint32_t)header[i]);
    for (int i = 0; i < lo.n_tensors && !w.s; i++) {
        const file_tensor *t = &lo.tensors[i];
        const int64_t rows = d[t->rows], cols = d[t->cols];
        for (int l = 0; l < (t->per_layer ? lo.n_layer : 1) && !w.s; l++) {
            const alloy_tensor_info *ti = param_of(m, &lo, t, l);
            const float *src = m->params_memory + ti->offset;
            if (t->conv == CONV_TRANSPOSE) {
                for (int64_t o = 0; o < rows; o++) // ours (in = cols, out = rows) -> file (out, in)
                    for (int64_t k = 0; k < cols; k++) writer_f32(&w, src[k * rows + o]);
            } else { // wte's rows past V are llm.c's zero padding
                ALLOY_ASSERT(t->conv == CONV_COPY);
                for (size_t k = 0; k < ti->numel; k++) writer_f32(&w, src[k]);
                for (size_t k = ti->numel; k < (size_t)(rows * cols); k++) writer_f32(&w, 0.0f);
            }
        }
    }
    writer_flush(&w);
    alloy_free(w.buf);
    if (w.s) {
        alloy_atomic_abort(&w.f);
        return w.s;
    }
    return alloy_atomic_commit(&w.f);
}

/* ---- llama2.c --------------------------------------------------------------------------- */

#define LLAMA2C_V0_HEADER_BYTES 28
#define LLAMA2C_V1_HEADER_BYTES 256

static alloy_status llama2c_parse(const char *path, const alloy_file_map *map, alloy_config *cfg, layout *lo) {
    const uint8_t *h = map->data;
    int version = 0;
    size_t header = LLAMA2C_V0_HEADER_BYTES;
    if (map->size >= 8 && get_u32(h) == ALLOY_LLAMA2C_MAGIC) {
        version = get_i32(h + 4);
        if (version != 1)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: llama2.c checkpoint version %d is not supported (alloy reads "
                              "the legacy format and version 1%s)", path, version,
                              version == 2 ? "; version 2 is int8-quantized" : "");
        header = LLAMA2C_V1_HEADER_BYTES;
    }
    if (map->size < header)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %zu bytes is too short for a llama2.c checkpoint (the header "
                          "alone is %zu bytes)", path, map->size, header);
    const uint8_t *f = h + (version ? 8 : 0);
    int32_t dim = get_i32(f), hidden = get_i32(f + 4), L = get_i32(f + 8), H = get_i32(f + 12),
            KV = get_i32(f + 16), V = get_i32(f + 20), S = get_i32(f + 24);
    if (version == 0 && dim == ALLOY_LLMC_MAGIC)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: this is an llm.c GPT-2 checkpoint, not a llama2.c one", path);
    bool shared;
    if (version == 0) {
        // the sign of vocab_size is the flag: negative means an unshared classifier
        shared = V > 0;
        if (V == INT32_MIN)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: header field vocab_size is %d, out of range", path, V);
        if (V < 0) V = -V;
    } else {
        shared = h[36] != 0;
    }
    alloy_status s;
    if ((s = check_field(path, "dim", dim, MAX_WIDTH)) || (s = check_field(path, "hidden_dim", hidden, MAX_FF)) ||
        (s = check_field(path, "n_layers", L, MAX_LAYERS)) || (s = check_field(path, "n_heads", H, MAX_HEADS)) ||
        (s = check_field(path, "n_kv_heads", KV, MAX_HEADS)) || (s = check_field(path, "vocab_size", V, MAX_VOCAB)) ||
        (s = check_field(path, "seq_len", S, MAX_SEQ)))
        return s;
    if (dim % H != 0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: dim %d is not a multiple of n_heads %d", path, dim, H);
    if (KV > H || H % KV != 0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: n_heads %d is not a multiple of n_kv_heads %d", path, H, KV);
    if ((dim / H) % 2 != 0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: the head size %d (dim %d / n_heads %d) is odd; rotary positions "
                          "need it even", path, dim / H, dim, H);
    *cfg = (alloy_config){.family = ALLOY_FAMILY_LLAMA, .vocab_size = V, .max_seq_len = S, .n_layer = L,
                          .n_head = H, .n_kv_head = KV, .d_model = dim, .d_ff = hidden, .norm_eps = 1e-5,
                          .rope_theta = 10000.0, .tie_embeddings = shared};
    if ((s = alloy_config_validate(cfg, path))) return s;
    lo->tensors = version ? llama2c_v1_tensors : llama2c_v0_tensors;
    lo->n_tensors = version ? N_OF(llama2c_v1_tensors) : N_OF(llama2c_v0_tensors);
    lo->n_layer = L;
    lo->head_dim = dim / H;
    lo->shared = shared;
    lo->esize = 4;
    lo->header = header;
    int64_t *d = lo->dim;
    d[D_ONE] = 1, d[D_C] = dim, d[D_F] = hidden, d[D_T] = S, d[D_V] = V;
    d[D_KV] = (int64_t)KV * (dim / H), d[D_HALF] = dim / H / 2;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_llama2c_import_ex(alloy_model **out, const char *path, int max_B, int max_T) {
    return import_file(out, path, max_B, max_T, llama2c_parse);
}

alloy_status alloy_llama2c_import(alloy_model **out, const char *path) {
    return alloy_llama2c_import_ex(out, path, 1, 0);
}
