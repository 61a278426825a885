/*
 * alloy/kernels.h — the numerical kernels of the transformer, on fp32 arrays.
 *
 * Each op is a `<op>_forward` / `<op>_backward` pair. Arguments come in the llm.c order:
 * outputs first, then cached tensors, then inputs and weights, then dimensions. Shapes are
 * given in comments, row-major. Kernels never allocate: callers pass every buffer, scratch
 * included. Gradients of parameters and of inputs that feed several consumers are ACCUMULATED
 * (+=), so callers zero them once per step; where a backward WRITES its output instead, its
 * comment says so. Threads: OpenMP inside, on the outermost independent dimension; results
 * are identical for a given thread count, and the reductions that feed parameter gradients
 * are ordered the same whatever the thread count.
 *
 *     // y = x·Wᵀ + b for a Linear layer of 768 -> 2304 over 256 rows
 *     matmul_forward(y, x, W, b, 256, 768, 2304, ALLOY_WEIGHT_OUT_IN, 0.0f);
 */
#ifndef ALLOY_KERNELS_H
#define ALLOY_KERNELS_H

#include "alloy/base.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a weight matrix is stored. */
typedef enum alloy_weight_layout {
    ALLOY_WEIGHT_OUT_IN = 0, /* (OC, IC): torch.nn.Linear, Llama */
    ALLOY_WEIGHT_IN_OUT = 1, /* (IC, OC): GPT-2's Conv1D */
} alloy_weight_layout;

/* ---- bf16 matrix products (own AVX-512 BF16 kernels, src/kernels/gemm_bf16.c) ---- */

/* The element type of the matrix products. */
typedef enum alloy_precision {
    ALLOY_PRECISION_F32 = 0,  /* fp32 through OpenBLAS sgemm */
    ALLOY_PRECISION_BF16 = 1, /* inputs rounded to bf16 (nearest even), fp32 accumulation: gemm_bf16 */
} alloy_precision;

/* True when this CPU executes the avx512_bf16 instructions (vdpbf16ps). */
bool gemm_bf16_supported(void);
/* Row-major C (M, N) = alpha·op(A)·op(B) + beta·C with the meaning of cblas_sgemm(CblasRowMajor,
 * ...): op(A) is (M, K), A stored (M, K) with leading dimension lda, or (K, M) when trans_a;
 * op(B) is (K, N), B stored (K, N) with ldb, or (N, K) when trans_b. A and B are fp32 and are
 * rounded to bf16 (nearest even, as vcvtne2ps2bf16: NaN stays NaN, denormals become zero)
 * while packed; products are summed in fp32. beta 0 overwrites C (NaNs in C are not read).
 * Threads: OpenMP inside; the result does not depend on the thread count; safe to call from
 * several threads at once (its packing buffers come from a locked pool, reused between calls).
 * Needs gemm_bf16_supported(). */
void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* ---- matrix products (OpenBLAS) ---- */

/* out (N, OC) = beta·out + inp (N, IC) · W + bias (OC); W as `layout` says; bias may be NULL;
 * beta is 0 (overwrite) or 1 (accumulate, used to fuse a residual add). prec BF16 rounds inp
 * and W to bfloat16 for the product (fp32 sums; needs gemm_bf16_supported()). */
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int64_t N, int IC, int OC, alloy_weight_layout layout, float beta, alloy_precision prec);
/* out (OC) = beta·out + x (IC) · W + bias for one token (decode), our own streaming kernel
 * (matvec.c); beta 0 or 1 as above, bias may be NULL. scratch holds OC floats for W (OC, IC) and
 * threads·OC for W (IC, OC), threads being omp_get_max_threads() at the call. */
void matvec_forward(float *out, const float *x, const float *weight, const float *bias, int IC, int OC,
                    alloy_weight_layout layout, float beta, float *scratch);
/* matvec_forward's share of the calling thread, inside an OpenMP parallel region whose every
 * thread calls it with the same arguments (scratch as for matvec_forward); it
 * returns after a barrier, out complete. The same sums as matvec_forward on as many threads. */
void matvec_forward_team(float *out, const float *x, const float *weight, const float *bias, int IC, int OC,
                         alloy_weight_layout layout, float beta, float *scratch);
/* Inside such a region: prefetches into L2 the first `bytes` that the calling thread's share of
 * matvec_forward_team(W) will read (the starts of its first group of rows), so that the next
 * product does not begin with DRAM's full latency. */
void matvec_prefetch_team(const float *weight, int IC, int OC, alloy_weight_layout layout, size_t bytes);
/* dinp (N, IC) = dout·Wᵀ, overwritten (dinp may be NULL; it is an activation's gradient, used
 * once); dweight += inpᵀ·dout (accumulated over micro-batches); dbias (OC) += column sums of
 * dout (may be NULL, always fp32). */
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                     const float *weight, int64_t N, int IC, int OC, alloy_weight_layout layout,
                     alloy_precision prec);

/* ---- embeddings ---- */

/* out (B·T, C) = wte[tokens] + wpe[t] (wpe may be NULL); tokens (B, T) already range-checked */
void embedding_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                       int B, int T, int C);
/* dwte (V, C) += , dwpe (maxT, C) += (may be NULL), from dout (B·T, C) */
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                        int B, int T, int C);

/* ---- normalisation ---- */

/* LayerNorm over the last dim: out, inp (N, C); mean, rstd (N); weight, bias (C) */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int64_t N, int C, float eps);
/* dinp (N, C) += ; dweight, dbias (C) += */
void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                        const float *weight, const float *mean, const float *rstd, int64_t N, int C);

/* RMSNorm (Llama): out = inp / sqrt(mean(inp²) + eps) · weight; rstd (N) */
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int64_t N, int C,
                     float eps);
/* dinp (N, C) += ; dweight (C) += */
void rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                      const float *rstd, int64_t N, int C);

/* ---- attention ---- */

/* Rotary position tables in the Hugging Face (rotate-half) convention:
 * cos, sin (maxT, hd/2) with angle t · theta^(-2i/hd). */
void rope_init_tables(float *cos_table, float *sin_table, int maxT, int hd, float theta);
/* Rotates the q and k heads of qkv (B, T, (H + 2·KV)·hd) in place, position t = 0..T-1. */
void rope_forward(float *qkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                  int hd);
/* The transpose rotation, in place on the q and k parts of dqkv. */
void rope_backward(float *dqkv, const float *cos_table, const float *sin_table, int B, int T, int H, int KV,
                   int hd);

/* Causal multi-head attention with grouped KV heads (H % KV == 0; query head h reads KV head
 * h / (H/KV)). qkv (B, T, (H + 2·KV)·hd) holds per token [H q heads | KV k heads | KV v heads];
 * out (B, T, H·hd) is WRITTEN; lse (B, H, T) is WRITTEN with each query row's log-sum-exp of
 * its scaled scores, all the backward needs besides out (FlashAttention-style: no (T, T)
 * matrix is stored). hd ≤ 512. */
void attention_forward(float *out, float *lse, const float *qkv, int B, int T, int H, int KV, int hd);
/* dqkv (B, T, (H + 2·KV)·hd) is WRITTEN from dout (B, T, H·hd) and the forward's qkv, out, lse. */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse,
                        int B, int T, int H, int KV, int hd);

/* ---- activations ---- */

/* GELU, tanh approximation (GPT-2's "gelu_new"): out, inp (n) */
void gelu_forward(float *out, const float *inp, int64_t n);
/* dinp (n) is WRITTEN */
void gelu_backward(float *dinp, const float *inp, const float *dout, int64_t n);

/* SwiGLU (Llama): out (N, F) = silu(gate)·up, where gu (N, 2F) holds [gate | up] per row */
void swiglu_forward(float *out, const float *gu, int64_t N, int F);
/* dgu (N, 2F) is WRITTEN */
void swiglu_backward(float *dgu, const float *dout, const float *gu, int64_t N, int F);

/* out (n) = a + b */
void add_forward(float *out, const float *a, const float *b, int64_t n);

/* ---- mixture-of-experts routing (src/kernels/moe_route.c) ---- */

/* Top-K routing of N rows over E experts (1 <= K <= E). probs (N, E) holds the router logits on
 * entry and their softmax on return (max subtracted, expf, divided by the sum, in expert order);
 * topk (N, K) gets each row's K most probable experts by descending probability (ties: the lower
 * index first); gates (N, K) their probabilities renormalised over the K (the sum in k order). */
void moe_route_forward(float *probs, int32_t *topk, float *gates, int64_t N, int E, int K);
/* The dispatch plan of topk (N, K): the N·K (row, k) pairs in dispatch order (expert 0's
 * first, each expert's in row order). off (E + 1): expert e's dispatch rows are
 * [off[e], off[e + 1]); slot_row (N·K): the dispatch row of pair (n, k), at n·K + k;
 * row_token (N·K): the row each dispatch row reads; cursor (E): scratch. One thread. */
void moe_dispatch_forward(int32_t *off, int32_t *slot_row, int32_t *row_token, int32_t *cursor, const int32_t *topk,
                          int64_t N, int E, int K);
/* out (N, C) += Σ_k gates[n, k] · y[slot_row[n, k]] for each row n, in k order: y (N·K, C) the
 * experts' outputs in dispatch order, gates and slot_row (N, K) as above. */
void moe_combine_forward(float *out, const float *y, const float *gates, const int32_t *slot_row, int64_t N, int K,
                         int C);

/* ---- loss ---- */

/* Softmax cross-entropy per row: losses (N) = -log softmax(logits)[target]. Rows whose target
 * is negative are ignored (loss 0, gradient 0). If dlogits (N, V) is not NULL it is WRITTEN
 * with (softmax - onehot(target))·row_scale[i] (row_scale NULL means 1); dlogits may alias
 * logits. Targets must be < V (callers check). */
void crossentropy_forward_backward(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                                   const float *row_scale, int64_t N, int V);

/* Distillation divergences between a teacher's and a student's next-token distributions, both
 * softened by the temperature τ: p = softmax(z_student / τ), q = the teacher's distribution at τ
 * (given as log-probabilities, so an ensemble can be the teacher).
 *   FORWARD_KL  KL(q ‖ p)                      (Hinton et al. 2015; mean-seeking)
 *   REVERSE_KL  KL(p ‖ q)                      (mode-seeking, as in MiniLLM)
 *   JSD         β·KL(q ‖ m) + (1−β)·KL(p ‖ m),  m = β·q + (1−β)·p  (generalised JSD, GKD)
 * each multiplied by τ² (so gradients keep their size as τ changes). */
typedef enum alloy_divergence {
    ALLOY_DIVERGENCE_FORWARD_KL = 0,
    ALLOY_DIVERGENCE_REVERSE_KL = 1,
    ALLOY_DIVERGENCE_JSD = 2,
} alloy_divergence;

/* Per row i: losses[i] = α·CE(z_i, target_i) + (1 − α)·τ²·D(q_i, p_i), the cross-entropy at
 * temperature 1 (skipped, with α's share, when the target is negative or α = 0). teacher_logp
 * (N, V) holds log q at temperature τ. If dlogits (N, V) is not NULL it is WRITTEN with
 * ∂losses[i]/∂z_i · row_scale[i] (row_scale NULL: 1); dlogits may alias logits. beta is JSD's β
 * in (0, 1); temperature > 0; alpha in [0, 1]. Fails (NOMEM) only if its per-thread scratch of
 * 3·V doubles cannot be allocated. Row sums are in double: the same result for any thread count. */
alloy_status distill_forward_backward(float *losses, float *dlogits, const float *logits, const float *teacher_logp,
                                      const int32_t *targets, const float *row_scale, int64_t N, int V,
                                      alloy_divergence kind, float temperature, float alpha, float beta);

/* probs (V) = softmax(logits / temperature); returns nothing; temperature > 0 */
void softmax_forward(float *probs, const float *logits, int V, float temperature);

/* ---- ensemble mixing (src/kernels/ensemble_mix.c) ---- */

/* The one copy of ensemble mixing: the fp32 ensemble (alloy/ensemble.h), the ensemble engine
 * (alloy/infer.h) and the learned combiner's loss all mix through these. */

/* The most members an ensemble may have. */
#define ALLOY_ENSEMBLE_MAX_MEMBERS 16

/* How an ensemble combines its members' next-token distributions. */
typedef enum alloy_ensemble_mode {
    ALLOY_ENSEMBLE_PROBS = 0,  /* mixture: log Σ wᵢ softmax(zᵢ) (ensemble_mix_forward) */
    ALLOY_ENSEMBLE_LOGITS = 1, /* log softmax(Σ wᵢ zᵢ) (ensemble_logits_forward, then one softmax) */
    ALLOY_ENSEMBLE_LEARNED = 2,/* log Σ gᵢ(h) softmax(zᵢ), g from an alloy_combiner: PROBS with per-row weights */
} alloy_ensemble_mode;

/* One row of a mixture: out_logp (V) = log Σᵢ wᵢ·softmax(zᵢ) over n members (1 to
 * ALLOY_ENSEMBLE_MAX_MEMBERS), zᵢ = logits[i] (V), log_w (n) = log wᵢ (weights as given: the
 * caller normalises them). Computed in double as a log-sum-exp over members of
 * log wᵢ + zᵢ[v] − lseᵢ, lseᵢ = log Σ_v exp zᵢ[v], so no probability underflows to 0 before
 * the log: a token that any weighted member gives a finite logit keeps a finite log-probability.
 * A member with log wᵢ = −inf (weight 0), or whose logits are all −inf, adds nothing; a token
 * no member contributes to gets −inf. out_logp may be one of the logits rows (each element is
 * read before it is written). One thread: callers parallelise over rows. */
void ensemble_mix_forward(float *out_logp, const float *const *logits, const double *log_w, int n, int V);

/* The same mixture at one token whose members' log-probabilities are known: returns
 * log Σᵢ exp(log_w[i] + logp[i]) over n members (1 to ALLOY_ENSEMBLE_MAX_MEMBERS), in double
 * (−inf when every term is −inf). post (n), if not NULL, gets the posterior share of each
 * member, exp(log wᵢ + logpᵢ − result) (0 when the result is −inf): the derivative of the
 * result with respect to log wᵢ and to logpᵢ, which a learned gate's gradient needs. */
double ensemble_mix_target_forward(double *post, const double *logp, const double *log_w, int n);

/* One row of weighted logits: out (V) = Σᵢ wᵢ·zᵢ over n members (any number), zᵢ = logits[i]
 * (V), w (n); per token, member by member, each term added in double to the float sum. A
 * member of weight 0 adds nothing (an infinite logit of it gives no NaN). out may be one of
 * the logits rows. One thread. */
void ensemble_logits_forward(float *out, const float *const *logits, const double *w, int n, int V);

/* ---- optimiser ---- */

/* One AdamW step over n parameters, exactly as torch.optim.AdamW: decoupled decay
 * p *= 1 - lr·wd, then the bias-corrected Adam update. g is multiplied by grad_scale first
 * (the clipping coefficient). step is 1-based. */
void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float grad_scale, int64_t step);

/* Σ g² in double precision */
double sum_squares(const float *g, int64_t n);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_KERNELS_H */
