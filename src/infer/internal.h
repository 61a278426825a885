/*
 * internal.h — what the files of src/infer/ share and nothing outside uses: the ensemble
 * engine's half (ensemble_engine.c) that engine.c dispatches to when an engine is an ensemble,
 * and the engine's own structure and steps, shared by its files (engine*.c).
 *
 * An ensemble is an alloy_engine whose `ens` is set: engine.c keeps its options, vocabulary and
 * sequence lengths and checks every call against them as for a model; ensemble_engine.c runs
 * the members and combines their logits.
 */
#ifndef ALLOY_INFER_INTERNAL_H
#define ALLOY_INFER_INTERNAL_H

#include "alloy/infer.h"

typedef struct ensemble_engine ensemble_engine;

/* Checks the members and the weights (as alloy_engine_create_ensemble says) and allocates the
 * scratch. *shape gets the ensemble's max_batch, max_ctx and max_rows (the members' least) and
 * weights (member 0's), *V the vocabulary. The members are not owned until the caller says so
 * (ensemble_engine_destroy(x, false) gives them back untouched). */
alloy_status ensemble_engine_create(ensemble_engine **out, alloy_engine_options *shape, int *V,
                                    alloy_engine *const *members, const float *weights, int n,
                                    alloy_ensemble_mode mode);
/* Frees x, and its members when `members` is true. */
void ensemble_engine_destroy(ensemble_engine *x, bool members);

/* The calls of alloy_engine_prefill_batch and alloy_engine_decode, already checked against the
 * ensemble: each member runs them, logits (rows, V) get the combination. On a member's failure
 * the members that ran are truncated back and the error names the member. */
alloy_status ensemble_engine_prefill(ensemble_engine *x, float *logits, alloy_logits_rows rows, const int *seqs,
                                     const int32_t *const *tokens, const int *lens, int n_seqs);
alloy_status ensemble_engine_decode(ensemble_engine *x, float *logits, const int *seqs, const int32_t *tokens, int n);

/* reset and truncate on every member (seq and len already checked). */
void ensemble_engine_reset(ensemble_engine *x, int seq);
alloy_status ensemble_engine_truncate(ensemble_engine *x, int seq, int len);

/* The members' matrices and bytes, summed, into info (the sizes are engine.c's to fill). */
void ensemble_engine_info(const ensemble_engine *x, alloy_engine_info *info);

/* ---- the engine's own files: engine.c (the calls), engine_create.c, engine_pass.c (the forward
 * pass; the numerical contract is at its top), engine_cache.c (KV cache, attention),
 * engine_moe.c, engine_team.c (the one-team decode step) --------------------------------------
 *
 * Cache layout: per (layer, sequence, KV head), k transposed (hd, max_ctx) — the scores of a
 * query are then a vector loop over positions — and v (max_ctx, hd). Pages are mapped lazily,
 * so a position never written costs no memory.
 */

/* One weight matrix as the engine reads it: y (out) = W·x (in). */
typedef struct matrix {
    alloy_qtype type;           /* F32: w in the model's arena; otherwise the bytes at q */
    const float *w;             /* F32: as the model stores it */
    alloy_weight_layout layout; /* F32: how w is stored */
    const uint8_t *q;           /* quantised: (out) rows of row_bytes(type, in), (out, in) order */
    const float *bias;          /* (out) or NULL */
    int in, out;                /* IC, OC */
} matrix;

typedef struct layer_matrices {
    matrix qkv, o, up, down; /* up, down: dense layers only */
    matrix router;           /* MoE: (E, C), always fp32 */
    matrix *eup, *edown;     /* MoE: (E) each, the experts' up and down (into e->experts) */
} layer_matrices;

/* A run of consecutive rows of one sequence in the current pass. */
typedef struct segment {
    int row0, n; /* rows [row0, row0 + n) */
    int seq;     /* its sequence */
    int pos0;    /* position of its first row */
} segment;

/* The tokens a call appends to one sequence. */
typedef struct job {
    int seq;               /* the sequence */
    const int32_t *tokens; /* (n) */
    int n;                 /* tokens to append */
} job;

struct alloy_engine {
    const alloy_model *m;      /* the parameters: borrowed */
    alloy_engine_options opts; /* with the defaults filled in */
    int L, C, H, KV, hd, F, FF, V, QKV; /* sizes (FF: up's width, F or 2F) */
    int E, K;                  /* experts per layer and per token (0, 0: dense MLPs) */
    bool gpt2;                 /* the family: GPT-2 (else Llama) */
    float eps;                 /* the norms' epsilon */
    int max_threads;           /* threads the scratch has room for */
    bool team_ok;              /* one-row passes may run as one team (decode_team) */
    void *qteam;               /* alloy_quant_matvec_team's shared scratch (quantised weights) */
    int call_threads;          /* the most threads a step of the current call may take */
    layer_matrices *layers;    /* (L) */
    matrix *experts;           /* MoE: (L, 2, E) each layer's experts' up, then down */
    matrix head;               /* (V, C) */
    uint8_t *qmem;             /* the quantised matrices, one mapping */
    size_t qbytes;             /* its size */
    int n_matrices[ALLOY_QTYPE_COUNT]; /* matrices per format */
    size_t weight_bytes, other_bytes;  /* bytes a token reads: matrices, fp32 vectors */
    float *kc, *vc;            /* (L, max_batch, KV) x k (hd, max_ctx), v (max_ctx, hd) */
    size_t cache_floats;       /* floats of each */
    int *len;                  /* (max_batch) tokens held per sequence */
    float *buf;                /* one allocation for the buffers below */
    size_t buf_floats;         /* its size */
    float *x;                  /* (R, C) the residual stream */
    float *xn;                 /* (R, C) normalised */
    float *qkv;                /* (R, QKV) */
    float *att;                /* (R, H·hd) */
    float *tmp;                /* (R, C) a product before it is added; the gathered head rows */
    float *mv;                 /* matvec_forward's scratch (mv_floats) */
    float *fc;                 /* (R, FF); MoE: (R·K, FF), rows in dispatch order */
    float *act;                /* (R, F); MoE: (R·K, F) */
    float *probs;              /* MoE: (R, E) router logits, then probabilities */
    float *gates;              /* MoE: (R, K) the chosen experts' renormalised probabilities */
    float *moe_in;             /* MoE: (R·K, C) xn rows in dispatch order */
    float *moe_out;            /* MoE: (R·K, C) each dispatch row's expert output */
    float *mean, *rstd;        /* (R) */
    float *lse;                /* (H, R) attention_forward's row statistics (unused) */
    float *scores;             /* (max_threads, max_ctx) attention scores per thread */
    float *rope_cos, *rope_sin;/* (max_ctx, hd/2), Llama */
    int *row_seq, *row_pos;    /* (R) */
    int32_t *row_tok;          /* (R) */
    int *sel;                  /* (R) rows whose logits are asked for */
    int32_t *topk;             /* MoE: (R, K) the chosen experts, by descending probability */
    int32_t *slot_row;         /* MoE: (R, K) the dispatch row of each (row, k) */
    int32_t *row_token;        /* MoE: (R·K) the row each dispatch row reads */
    int32_t *expert_off;       /* MoE: (E + 1) expert e's dispatch rows are [off[e], off[e+1]) */
    int32_t *expert_pos;       /* MoE: (E) scratch of the dispatch */
    int *crow;                 /* (R) rows that attend to the cache */
    segment *segs;             /* (R) */
    int *base_len;             /* (max_batch) lengths at the start of a call */
    unsigned char *seen;       /* (max_batch) scratch of the checks */
    ensemble_engine *ens;      /* an ensemble's members; then only opts, V, len and seen are set */
};

/* Where head kvh of sequence seq starts in layer l's k (hd, max_ctx) and v (max_ctx, hd). */
static inline size_t engine_cache_offset(const alloy_engine *e, int l, int seq, int kvh) {
    return (((size_t)l * (size_t)e->opts.max_batch + (size_t)seq) * (size_t)e->KV + (size_t)kvh) *
           (size_t)e->opts.max_ctx * (size_t)e->hd;
}

/* engine.c: the caller's OpenMP thread count (1 without OpenMP). */
int engine_caller_threads(void);

/* engine_pass.c: the threads for a step of `flops` operations (one per FLOPS_PER_THREAD, at most
 * the call's, or the options' fixed count), and the same set for the next kernel. */
int engine_threads_for(const alloy_engine *e, double flops);
void engine_use_threads(const alloy_engine *e, double flops);
/* Columns [j0, j1) of one row of a quantised product's output: o += d + bias (acc), o += d
 * (acc, no bias), or o += bias (d is o itself). */
void engine_add_product(float *o, const float *d, const float *bias, bool acc, int j0, int j1);
/* out (n, w->out) = [out +] in (n, w->in) · Wᵀ + bias. tmp (n, w->out) is scratch for the
 * quantised products when accumulating. */
void engine_linear(const alloy_engine *e, float *out, const float *in, const matrix *w, int n, bool acc, float *tmp);
/* out (n, C) = the family's norm of in (n, C) with weight w (C) and bias b (C, GPT-2), on the
 * threads set now. */
void engine_norm_rows(const alloy_engine *e, float *out, const float *in, const float *w, const float *b, int n);
/* act (n, F) = the family's activation of fc (n, FF): GELU, or SwiGLU of gate and up. */
void engine_activate(const alloy_engine *e, int n);
/* Runs the rows set up in row_seq / row_pos / row_tok / segs and writes the logits of the rows
 * listed in sel (n_sel of them) to logits (n_sel, V), in that order. */
void engine_forward_rows(alloy_engine *e, int R, int n_segs, float *logits, int n_sel);

/* engine_cache.c: RoPE on row r's q and k heads (rotate-half, as rope_forward), or on R rows. */
void engine_rope_row(const alloy_engine *e, int r);
void engine_rope_rows(const alloy_engine *e, int R);
/* Copies each of R rows' k and v heads into its sequence's cache at its position (k transposed). */
void engine_store_kv(const alloy_engine *e, int l, int R);
/* out (hd) = softmax(q·K·scale)·V over the n cached positions of one head: Kt (hd, ctx) the keys
 * transposed, Vc (ctx, hd); sc (n) scratch. */
void engine_attend_one(float *restrict out, const float *restrict q, const float *restrict Kt,
                       const float *restrict Vc, int n, int hd, size_t ctx, float scale, float *restrict sc);
/* att (R, H·hd) for layer l: fresh sequences through attention_forward, the other rows over the
 * cache (which holds every row's k and v by now). */
void engine_attention(alloy_engine *e, int l, int n_segs);

/* engine_moe.c: x (R, C) += the MoE block of layer lw on xn (R, C). */
void engine_moe_rows(alloy_engine *e, const layer_matrices *lw, int R);

/* engine_team.c: the threads of a team decode of R rows (0: take the step-by-step pass), and the
 * team decode of one row (R = 1, segment 0, embedded) on nt threads. */
int engine_team_threads(const alloy_engine *e, int R);
void engine_decode_team(alloy_engine *e, float *logits, int n_sel, int nt);

#endif /* ALLOY_INFER_INTERNAL_H */
