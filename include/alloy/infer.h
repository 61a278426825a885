/*
 * alloy/infer.h — inference: an engine holding a model's weights (fp32, or quantised at load)
 * and a KV cache per sequence; samplers; a generation loop with its stop conditions.
 *
 *     alloy_engine *e;
 *     alloy_engine_options eo = {.weights = ALLOY_QTYPE_Q8_0, .max_batch = 4};
 *     if (alloy_engine_create(&e, model, &eo)) { puts(alloy_last_error()); ... }
 *     float *logits = malloc(sizeof(float) * V);
 *     alloy_engine_prefill(e, logits, 0, prompt, n);        // sequence 0: logits after its last token
 *     alloy_sampler_params sp;
 *     alloy_sampler_params_default(&sp);                    // llama.cpp's defaults
 *     alloy_sampler *s;
 *     alloy_sampler_create(&s, &sp, V);
 *     for (int i = 0; i < n; i++) alloy_sampler_accept(s, prompt[i]); // the penalties' history
 *     int32_t tok;
 *     alloy_sampler_sample(s, &tok, logits);
 *     int seq = 0;
 *     alloy_engine_decode(e, logits, &seq, &tok, 1);        // one more token of sequence 0
 *     ...
 *     alloy_sampler_destroy(s);
 *     alloy_engine_destroy(e);
 *
 * or, for whole requests with stop strings and batching, alloy_generate below.
 *
 * Several models that share a tokenizer generate as one (an ensemble engine, below):
 *
 *     alloy_engine *ms[2], *ens;                            // alloy_engine_create for each model
 *     alloy_engine_create_ensemble(&ens, ms, NULL, 2, ALLOY_ENSEMBLE_PROBS); // owns ms[0], ms[1] now
 *     alloy_generate(ens, ...);                             // as any engine
 *     alloy_engine_destroy(ens);                            // and its members
 *
 * ---- The engine ----
 * It reads the parameters of an alloy_model (GPT-2 or Llama family; the model must outlive the
 * engine and its weights must not change while the engine lives). Matrices — the attention's
 * qkv and output projections, the MLP's up (Llama: gate and up) and down projections and the
 * LM head — are used in place in fp32 (one token: our streaming matvec_forward of
 * alloy/kernels.h; several: OpenBLAS sgemm) or quantised once at creation into F16, Q8_0, Q4_0 or Q4_K (alloy/quant.h:
 * alloy_quant_matvec for one token, alloy_quant_matmul for several). A matrix whose input
 * width is not a multiple of the format's block (32, or 256 for Q4_K) falls back to Q8_0 if
 * it is a multiple of 32, else to F16; alloy_engine_get_info counts the matrices per format.
 * Embeddings, positions, norms and biases always stay fp32.
 * A mixture-of-experts model (config.n_experts > 0) routes each token as the training model does
 * (fp32 router: softmax over the E experts, the top K with ties to the lower index, gates
 * renormalised over the K); the rows of a pass — a prefill's tokens, a decode step's sequences —
 * are grouped by expert, each expert one product over its rows. Every expert's matrices are
 * held (quantised as a dense MLP's would be); the router stays fp32 and sums each row in one
 * order, whatever the batch.
 *
 * Each of max_batch sequences (numbered 0..max_batch-1) has its own KV cache of max_ctx
 * positions and its own length. A prefill appends a run of tokens to a sequence (several
 * sequences at once in alloy_engine_prefill_batch: their tokens go through each matrix product
 * together); a decode step appends one token to each of a set of sequences, again as one
 * product over the batch rows. Both return logits: (V) per token asked for. Calls that would
 * take a sequence past max_ctx fail with RANGE ("context full") before changing anything;
 * so do bad sequence numbers, token ids outside the vocabulary, or a sequence named twice.
 * alloy_engine_reset empties a sequence, alloy_engine_truncate keeps its first tokens (the
 * cache of the positions it keeps is untouched, so a shared prompt can be reused).
 *
 * Threads: OpenMP. With options.threads = 0 each product, attention and norm picks its thread
 * count from its size (about 2^19 floating-point operations per thread at least, so a tiny
 * model runs on one thread), up to the caller's omp_get_max_threads() at the call; threads = n
 * uses n everywhere. The caller's OpenMP thread setting is restored before each call returns.
 * An engine is not safe to use from two threads at once.
 *
 * ---- Ensemble engines ----
 * alloy_engine_create_ensemble makes one engine of N member engines (models that share a
 * vocabulary and tokenizer; any families, sizes and weight formats). Every engine call works
 * on it: prefill, prefill_batch (LAST, ALL, NONE), decode, reset, truncate, seq_len, eval_lm
 * run each member with the same arguments — the members' caches stay in lockstep — and write
 * the combined row of logits: PROBS log Σ wᵢ softmax(zᵢ) (log-probabilities: valid logits, so
 * the sampler's temperature, top-k, top-p and min-p act on the mixture), LOGITS Σ wᵢ zᵢ (one
 * softmax of the weighted logits), weights normalised to sum to 1. A call is checked against
 * the ensemble (max_ctx: the members' least) before any member runs, and a member's failure
 * (an allocation) takes the members that ran back to where they were. get_info counts every
 * member's matrices and bytes. Each call costs the sum of the members' passes plus O(N·rows·V)
 * to combine (the mixing kernels of alloy/kernels.h, which the fp32 ensemble shares), and the
 * ensemble holds (N − 1)·rows·V floats of the other members' logits for it.
 *
 * ---- Sampling: the chain, in this order (as llama.cpp's default sampler chain) ----
 *   0. only ids below n_vocab are candidates (a model's vocabulary may be padded beyond its
 *      tokenizer's); a NaN logit counts as -inf;
 *   1. logit bias: logits[id] += bias (-inf bans a token);
 *   2. penalties over the last repeat_last_n tokens of the sequence (the prompt included: the
 *      history is what alloy_sampler_accept was given), for each token seen c > 0 times:
 *      logit = logit > 0 ? logit / repeat_penalty : logit · repeat_penalty, then
 *      logit -= c · frequency_penalty + presence_penalty;
 *   3. temperature <= 0: greedy — the largest logit now (the lowest id among equals); the
 *      stages below are skipped;
 *   4. tokens at -inf are dropped;
 *   5. top-k: the k largest logits (the lower id first among equals), sorted by logit;
 *   6. top-p: the softmax of the candidates left (at temperature 1), then the shortest
 *      prefix in sorted order whose probabilities sum to >= top_p (at least one token);
 *   7. min-p: drops tokens whose probability is below min_p times the largest one
 *      (logit < max logit + log(min_p)), at temperature 1;
 *   8. temperature: logits / temperature;
 *   9. the draw: the softmax of what is left, sampled with the sampler's own alloy_rng
 *      (u uniform in [0, 1), the first candidate whose cumulative probability exceeds u).
 * Defaults (alloy_sampler_params_default, as llama.cpp's common_params_sampling): temperature
 * 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0 (off), presence and frequency 0
 * (off), repeat_last_n 64, no logit bias; seed 1337 (llama.cpp draws a random one: alloy runs
 * are reproducible by default). Off: top_k <= 0, top_p >= 1, min_p <= 0, repeat_last_n 0; -1 is
 * the whole history.
 *
 * ---- Generation (alloy_generate) ----
 * Runs requests (prompts of token ids) through an engine, max_batch at a time: a finished
 * sequence's slot takes the next prompt at once (continuous batching), new prompts are
 * prefilled together, and every live sequence decodes one token per step. Request i samples
 * with its own sampler seeded with seed + i, its history starting with its prompt, so its
 * result does not depend on the batch it ran in (up to the products' rounding over batch rows:
 * bitwise for quantised weights, within fp32 rounding for fp32 ones). A request finishes, in
 * this order of precedence, when it draws an end-of-text token (EOS: not added to its ids or
 * text), when a stop string appears in its decoded text (STOP: the text is cut before the
 * stop string; the ids keep every token drawn), when it has max_tokens tokens (LENGTH), or
 * when its prompt plus its tokens fill the context (CONTEXT: no sequence ever holds more than
 * max_ctx tokens), or when the step hook ends it (HOOK). Stop strings are matched on the
 * decoded bytes across token boundaries; streamed text holds back the bytes that may begin a
 * stop string until they are known not to. The hook (options.hook) sees every step's rows of
 * logits and the tokens drawn from them, in order (PPO's rollouts log the entropy of each
 * sampling distribution through it); options.keep_cache continues sequences the caller has
 * filled (a conversation's prefix: alloy_chat_session below).
 *
 * ---- Conversations (alloy_chat_session, src/infer/chat_session.c) ----
 * A chat with a ChatML model through an engine's sequence 0: the messages, rendered whole each
 * turn with alloy_chat_render; the cache keeps the longest common prefix of the new rendering
 * with what it holds, so a turn prefills only its new tokens; the reply is sampled with
 * alloy_generate until <|im_end|>, max_tokens or a full context, its text streamed as it
 * becomes complete UTF-8, and appended to the conversation as the assistant's message.
 *
 *     alloy_chat_session *cs;
 *     alloy_chat_session_options co;
 *     alloy_chat_session_options_default(&co);
 *     alloy_chat_session_create(&cs, engine, tokenizer, &co);  // borrows both
 *     alloy_chat_session_add(cs, "system", "Be brief.", 9);
 *     alloy_chat_session_add(cs, "user", "Hello", 5);
 *     alloy_chat_reply rep;
 *     alloy_chat_session_reply(cs, &rep, print_piece, NULL); // streams, then appends the reply
 *     alloy_chat_session_destroy(cs);
 */
#ifndef ALLOY_INFER_H
#define ALLOY_INFER_H

#include "alloy/base.h"
#include "alloy/data.h"
#include "alloy/eval.h"
#include "alloy/model.h"
#include "alloy/quant.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

/* ---- the engine ------------------------------------------------------------------------- */

typedef struct alloy_engine alloy_engine;

/* How an engine is built. Zero-initialised fields take the defaults given. */
typedef struct alloy_engine_options {
    alloy_qtype weights; /* format of the matrices: F32 (default; the model's own, no copy), F16,
                            Q8_0, Q4_0, Q4_K */
    int max_batch;       /* sequences held at once (default 1) */
    int max_ctx;         /* positions per sequence's cache (default and at most max_seq_len) */
    int max_rows;        /* tokens per forward pass; longer prefills run in chunks (default 512) */
    int threads;         /* 0: per product from its size; n > 0: n threads throughout */
} alloy_engine_options;

/* What an engine holds. */
typedef struct alloy_engine_info {
    int max_batch, max_ctx, max_rows; /* as created */
    int vocab_size;                   /* V: the length of a row of logits */
    alloy_qtype weights;              /* the format asked for (an ensemble: its member 0's); an
                                         ensemble's counts and bytes below are its members' sums */
    int n_matrices[ALLOY_QTYPE_COUNT];/* matrices stored in each format (fallbacks included; an
                                         MoE's routers count as F32, each expert's up and down) */
    size_t weight_bytes;              /* bytes of the matrices a token's forward reads (MoE: the
                                         routers and K experts' matrices per layer) */
    size_t other_bytes;               /* bytes of the fp32 vectors it reads (norms, biases, one
                                         embedding row) */
    size_t cache_bytes;               /* bytes of the KV cache (max_batch · max_ctx positions) */
} alloy_engine_info;

/* Builds an engine over model m: quantises the matrices if asked (OpenMP), allocates the KV
 * cache (pages that take memory only once written) and the buffers of max_rows tokens. Fails
 * with USAGE for a bad option (naming it), NOMEM when memory runs out; *out is NULL then.
 * m must outlive the engine. With dense MLPs, a decode step of one sequence runs as one
 * OpenMP team (the same bits as the step-by-step path); the environment variable
 * ALLOY_TEAM_DECODE=0, read here, turns that off (the tests compare the two). */
alloy_status alloy_engine_create(alloy_engine **out, const alloy_model *m, const alloy_engine_options *opts);
void alloy_engine_destroy(alloy_engine *e);
void alloy_engine_get_info(const alloy_engine *e, alloy_engine_info *info);

/* Which rows of logits a prefill returns. */
typedef enum alloy_logits_rows {
    ALLOY_LOGITS_LAST = 0, /* one row per sequence: after its last token */
    ALLOY_LOGITS_ALL = 1,  /* one row per token, in the order the tokens were given */
    ALLOY_LOGITS_NONE = 2, /* none (logits may be NULL): the cache is filled, nothing more */
} alloy_logits_rows;

/* Appends tokens (n ≥ 1) to sequence seq and writes logits (V) after the last of them (logits
 * NULL: none are computed). Fails (changing nothing) with USAGE for a bad seq or n, RANGE for a
 * token outside [0, V) or when the sequence would pass max_ctx. */
alloy_status alloy_engine_prefill(alloy_engine *e, float *logits, int seq, const int32_t *tokens, int n);

/* The same for n_seqs distinct sequences at once: sequence seqs[i] gets tokens[i] (lens[i] ≥ 1
 * of them). logits: (n_seqs, V) for LAST, (Σ lens, V) for ALL, unused for NONE. */
alloy_status alloy_engine_prefill_batch(alloy_engine *e, float *logits, alloy_logits_rows rows, const int *seqs,
                                        const int32_t *const *tokens, const int *lens, int n_seqs);

/* One decode step: appends tokens[i] to sequence seqs[i] for i < n (distinct sequences) and
 * writes logits (n, V), row i after tokens[i]. Errors as alloy_engine_prefill. */
alloy_status alloy_engine_decode(alloy_engine *e, float *logits, const int *seqs, const int32_t *tokens, int n);

/* Empties sequence seq (a bad seq is ignored). */
void alloy_engine_reset(alloy_engine *e, int seq);
/* Keeps the first len tokens of sequence seq; USAGE for a bad seq or a len beyond its length. */
alloy_status alloy_engine_truncate(alloy_engine *e, int seq, int len);

/* The engine as a next-token log-probability source (alloy/eval.h) of one output, in its weight
 * format and arithmetic: each window is prefilled from an empty sequence 0 with logits at every
 * position, log p in double; any number of windows per call (one after another), windows up
 * to max_ctx. The engine stays the caller's, must outlive the source, and ends each call with
 * sequence 0 empty (src/infer/perplexity.c). */
alloy_status alloy_engine_logprob_source(alloy_logprob_source *src, alloy_engine *e);
/* Held-out loss and perplexity through the engine: alloy_eval_source over
 * alloy_engine_logprob_source, one window at a time; every window of T + 1 tokens of the split
 * (or the first max_windows), the mean loss over all targets, as alloy_eval_lm gives it for the
 * fp32 model. */
alloy_status alloy_engine_eval_lm(alloy_engine *e, const alloy_dataset *ds, alloy_split split, int T,
                                  int64_t max_windows, alloy_eval_result *out);
/* Tokens held by sequence seq (-1 for a bad seq). */
int alloy_engine_seq_len(const alloy_engine *e, int seq);

/* The most members an ensemble engine may have (any ensemble's, alloy/kernels.h). */
#define ALLOY_ENGINE_MAX_MEMBERS ALLOY_ENSEMBLE_MAX_MEMBERS

/* An engine that runs n member engines (2 to ALLOY_ENGINE_MAX_MEMBERS, distinct) in lockstep
 * and combines their logits per row as mode says: ALLOY_ENSEMBLE_PROBS (log Σ wᵢ softmax(zᵢ))
 * or ALLOY_ENSEMBLE_LOGITS (Σ wᵢ zᵢ); weights (n) finite, >= 0, not all 0, normalised to sum
 * to 1 (NULL: equal). The members must have the same vocabulary size and max_batch (MISMATCH
 * naming the member otherwise); the ensemble's max_ctx and max_rows are the members' least.
 * ALLOY_ENSEMBLE_LEARNED is refused (USAGE): a learned combiner needs the members' hidden
 * states, which an engine does not expose. On success the ensemble owns the members (destroyed
 * with it; do not use them apart meanwhile) and their sequences start empty; on failure they
 * stay the caller's, unchanged, and *out is NULL. An ensemble can be a member of another. */
alloy_status alloy_engine_create_ensemble(alloy_engine **out, alloy_engine *const *members, const float *weights, int n,
                                          alloy_ensemble_mode mode);

/* ---- samplers --------------------------------------------------------------------------- */

typedef struct alloy_logit_bias {
    int32_t token; /* id */
    float bias;    /* added to its logit; -INFINITY bans it */
} alloy_logit_bias;

/* The sampling chain's settings (the order and meaning of each: at the top of this file).
 * Start from alloy_sampler_params_default. */
typedef struct alloy_sampler_params {
    float temperature;       /* 0.8; <= 0: greedy */
    int top_k;               /* 40; <= 0: off */
    float top_p;             /* 0.95; >= 1: off */
    float min_p;             /* 0.05; <= 0: off */
    float repeat_penalty;    /* 1.0 (off); > 0 */
    float presence_penalty;  /* 0.0 (off) */
    float frequency_penalty; /* 0.0 (off) */
    int repeat_last_n;       /* 64; 0: no penalties; -1: the whole history */
    const alloy_logit_bias *logit_bias; /* (n_logit_bias), copied by alloy_sampler_create */
    int n_logit_bias;
    uint64_t seed;           /* 1337 */
    int n_vocab;             /* ids >= n_vocab are never drawn; 0: all of V */
} alloy_sampler_params;

void alloy_sampler_params_default(alloy_sampler_params *p);

typedef struct alloy_sampler alloy_sampler;

/* A sampler for logits of V entries: checks the parameters (USAGE naming the one that is out
 * of range: a NaN temperature, top_p or min_p outside [0, 1], repeat_penalty <= 0,
 * repeat_last_n < -1, a logit-bias id outside [0, V), n_vocab outside [0, V]) and seeds its RNG. */
alloy_status alloy_sampler_create(alloy_sampler **out, const alloy_sampler_params *p, int V);
void alloy_sampler_destroy(alloy_sampler *s);
/* Clears the history and reseeds the RNG. */
void alloy_sampler_reset(alloy_sampler *s, uint64_t seed);
/* Appends a token of the sequence (prompt or drawn) to the penalties' history. Ids outside
 * [0, V) are ignored. NOMEM only when repeat_last_n is -1 and the history cannot grow. */
alloy_status alloy_sampler_accept(alloy_sampler *s, int32_t token);

/* The candidates left before the draw: ids[i] with probability probs[i], i < n, in the
 * chain's order (sorted by logit, largest first, when a stage sorted them; by id otherwise).
 * The arrays belong to the sampler and are valid until its next call. */
typedef struct alloy_candidates {
    const int32_t *ids; /* (n) */
    const float *probs; /* (n) sum to 1 */
    int n;
} alloy_candidates;

/* Runs stages 0-8 of the chain on logits (V) and gives the candidates. RANGE when no token is
 * left (every logit -inf or banned). */
alloy_status alloy_sampler_candidates(alloy_sampler *s, alloy_candidates *out, const float *logits);
/* The whole chain: *out gets the token drawn (the argmax when greedy). Does not accept it. */
alloy_status alloy_sampler_sample(alloy_sampler *s, int32_t *out, const float *logits);

/* ---- generation ------------------------------------------------------------------------- */

typedef enum alloy_finish_reason {
    ALLOY_FINISH_NONE = 0, /* still running */
    ALLOY_FINISH_EOS,      /* "eos": an end-of-text token was drawn */
    ALLOY_FINISH_STOP,     /* "stop": a stop string appeared */
    ALLOY_FINISH_LENGTH,   /* "length": max_tokens were generated */
    ALLOY_FINISH_CONTEXT,  /* "context_full": prompt + tokens fill the context */
    ALLOY_FINISH_HOOK,     /* "stopped": the step hook ended it */
} alloy_finish_reason;

/* "eos", "stop", "length", "context_full", "stopped" ("running" for NONE). */
const char *alloy_finish_name(alloy_finish_reason f);

/* One step of alloy_generate as its hook sees it: the rows of logits just sampled (the rows of
 * a prefill of newly admitted prompts, or of a decode step over every live request) and the
 * tokens drawn from them, before they are taken (an end-of-text token, stop strings, the
 * budget). The hook may set stop[j] to finish request requests[j] after token j (which is kept
 * unless it is an end-of-text id; the finish is ALLOY_FINISH_HOOK). */
typedef struct alloy_generate_step {
    int n;                  /* rows sampled in this step */
    const int *requests;    /* (n) the request (index into the prompts) of each row */
    const float *logits;    /* (n, vocab_size) the rows the tokens were drawn from, as the engine
                               gave them (before the sampling chain) */
    const int32_t *tokens;  /* (n) the tokens drawn */
    int vocab_size;         /* V */
    bool *stop;             /* (n) all false on entry; set one to finish that request */
} alloy_generate_step;

/* Called once per step (see alloy_generate_step). Returns 0 to go on; anything else finishes
 * every request (live ones with ALLOY_FINISH_HOOK after this step's tokens, waiting ones with
 * ALLOY_FINISH_HOOK and no tokens). */
typedef int (*alloy_generate_hook)(void *user, alloy_generate_step *step);

typedef struct alloy_generate_options {
    alloy_sampler_params sampling;   /* request i uses seed sampling.seed + i (seeds: seeds[i]) */
    const uint64_t *seeds;           /* (n) a seed per request; NULL: sampling.seed + i */
    int max_tokens;                  /* tokens to generate at most; < 0: no limit but the context */
    const char *const *stop;         /* (n_stop) stop strings (non-empty); need a tokenizer */
    int n_stop;
    const int32_t *eos;              /* (n_eos) end-of-text ids */
    int n_eos;
    const alloy_tokenizer *tokenizer;/* decodes the text (stop strings, results); NULL: ids only */
    alloy_generate_hook hook;        /* called after each step's draw; NULL: none */
    void *hook_user;                 /* for hook */
    int32_t end_of_text;             /* where alloy_generate_options_use_tokenizer keeps the id eos
                                        points to */
    bool keep_cache;                 /* request i runs in engine sequence i (n <= max_batch), whose
                                        cache already holds the first alloy_engine_seq_len(e, i)
                                        tokens of prompt i (the caller's promise; fewer than the
                                        prompt's): only the rest is prefilled, and nothing is
                                        reset: the sequence ends holding the prompt and every
                                        token fed back (all drawn but the last and an EOS; a
                                        request that finishes before its prefill leaves it as
                                        it was) */
} alloy_generate_options;

/* Fills the defaults: alloy_sampler_params_default, max_tokens 128, no stop strings, no EOS,
 * no tokenizer, no hook, seeds from sampling.seed, the engine's sequences reset. */
void alloy_generate_options_default(alloy_generate_options *o);
/* What a tokenizer implies: o->tokenizer = tok, sampling.n_vocab its size (a padding id is never
 * drawn), and its <|endoftext|>, if it has one, as the only end-of-text id (o->eos then points to
 * o->end_of_text: a copy of *o must point its own eos there again). */
void alloy_generate_options_use_tokenizer(alloy_generate_options *o, const alloy_tokenizer *tok);

/* One request's result. */
typedef struct alloy_generation {
    alloy_ids ids;              /* the tokens drawn (not an EOS) */
    char *text;                 /* their text, NUL-terminated, cut before a stop string; NULL
                                   without a tokenizer */
    size_t text_len;            /* bytes of text */
    alloy_finish_reason finish;
    int prompt_tokens;
    double seconds;             /* wall time from its prefill to its finish */
} alloy_generation;

void alloy_generation_free(alloy_generation *g);

/* What a stream callback is told. Each request sends one event per token drawn (not an EOS),
 * in order, then one closing event (token -1, finish set); text is the part of the output that
 * became final with that event (often empty while a possible stop string is held back). */
typedef struct alloy_stream_event {
    int request;                /* index into the prompts */
    int32_t token;              /* the token drawn, or -1 on the closing event */
    const char *text;           /* (len) bytes, not NUL-terminated; NULL without a tokenizer */
    size_t len;
    alloy_finish_reason finish; /* NONE but on the closing event */
} alloy_stream_event;

typedef void (*alloy_stream_fn)(void *user, const alloy_stream_event *ev);

/* Generates a continuation of each of n prompts (prompts[i], lens[i] ≥ 1 token ids) into
 * results (n, zero-initialised or freed; the caller frees each with alloy_generation_free),
 * calling stream (may be NULL) as tokens are drawn. Every prompt is checked first: USAGE for an
 * empty one or stop strings without a tokenizer, RANGE for a token outside the vocabulary or a
 * prompt longer than the engine's context (naming the prompt's index); a prompt exactly as long
 * as the context finishes at once with CONTEXT. Uses every sequence of the engine (it resets
 * them). Results hold what was generated even when a later error stops the run. */
alloy_status alloy_generate(alloy_engine *e, alloy_generation *results, const int32_t *const *prompts,
                            const int *lens, int n, const alloy_generate_options *o, alloy_stream_fn stream,
                            void *user);

/* ---- requests as files carry them (src/infer/requests.c) -------------------------------- */

/* Prompts for alloy_generate, each with the name errors give it. Zero-initialise; free with
 * alloy_prompts_free. */
typedef struct alloy_prompts {
    int32_t **ids;  /* (n) each prompt's token ids, lens[i] of them */
    int *lens;      /* (n) */
    char **texts;   /* (n) the text it was encoded from (NUL-terminated), NULL when given as ids */
    char **names;   /* (n) how errors name it: the caller's name, or FILE:LINE */
    int n, cap;
} alloy_prompts;

void alloy_prompts_free(alloy_prompts *p);
/* Encodes len bytes of text with tok into a new prompt named name. MISMATCH without a tokenizer,
 * USAGE when the text encodes to no tokens. */
alloy_status alloy_prompts_add_text(alloy_prompts *p, const alloy_tokenizer *tok, const char *text, size_t len,
                                    const char *name);
/* "1 2 3" or "1,2,3" (ids >= 0; spaces, commas, tabs, newlines between them) into a new prompt;
 * USAGE for anything else or no ids. */
alloy_status alloy_prompts_add_id_list(alloy_prompts *p, const char *list, const char *name);
/* Every record of a JSONL file (non-blank lines), a JSON array, either compressed, or a folder
 * of them (alloy/records.h), {"prompt": TEXT} (encoded with tok) or {"prompt_ids": [ids]}, as
 * a prompt named FILE:LINE (FILE: element N); FORMAT naming the line for a bad one, or for a
 * path without prompts. */
alloy_status alloy_prompts_read_jsonl(alloy_prompts *p, const char *path, const alloy_tokenizer *tok);
/* RANGE naming the first prompt with an id outside [0, vocab_size) or more than ctx tokens. */
alloy_status alloy_prompts_check(const alloy_prompts *p, int vocab_size, int ctx);
/* One JSONL record per prompt, in order: "prompt" (its text) or "prompt_ids", "text" (the
 * result's, as valid UTF-8; when it has one), "ids", "finish_reason", "tokens", "tokens_per_s";
 * to path (written atomically) or, path NULL, to stdout. */
alloy_status alloy_generation_write_jsonl(const alloy_prompts *p, const alloy_generation *results, const char *path);

/* ---- conversations ---------------------------------------------------------------------- */

typedef struct alloy_chat_session alloy_chat_session;

typedef struct alloy_chat_session_options {
    alloy_sampler_params sampling; /* each reply reseeds with sampling.seed and sees the rendered
                                      conversation as its penalties' history; n_vocab 0: the
                                      tokenizer's size */
    int max_tokens;                /* longest reply (>= 1; default 512) */
} alloy_chat_session_options;

/* alloy_sampler_params_default with temperature 0.7; max_tokens 512. */
void alloy_chat_session_options_default(alloy_chat_session_options *o);

/* A conversation with the model behind engine e (any engine, an ensemble too; its sequence 0 is
 * the session's) whose tokenizer tok has the ChatML tokens (MISMATCH otherwise). Borrows e and
 * tok: both must outlive the session. USAGE for a bad option (naming it). */
alloy_status alloy_chat_session_create(alloy_chat_session **out, alloy_engine *e, const alloy_tokenizer *tok,
                                       const alloy_chat_session_options *o);
void alloy_chat_session_destroy(alloy_chat_session *cs);

/* Appends a message (role non-empty; content len bytes, copied). */
alloy_status alloy_chat_session_add(alloy_chat_session *cs, const char *role, const char *content, size_t len);
/* Keeps the first n messages (the rest are dropped; the cache is reused where it still fits). */
void alloy_chat_session_truncate(alloy_chat_session *cs, int n);
/* Messages held. */
int alloy_chat_session_count(const alloy_chat_session *cs);

/* What a reply did. */
typedef struct alloy_chat_reply {
    alloy_finish_reason finish; /* EOS (<|im_end|>), LENGTH (max_tokens) or CONTEXT */
    int tokens;                 /* tokens drawn (not the <|im_end|>) */
    int prompt_tokens;          /* the rendered conversation's */
    int prefilled;              /* of which this turn ran through the model (the rest was cached) */
} alloy_chat_reply;

/* Text of a reply as it becomes final (len bytes, not NUL-terminated; complete UTF-8 but at
 * the very end). */
typedef void (*alloy_chat_text_fn)(void *user, const char *text, size_t len);

/* Renders the conversation with the generation prompt, brings the cache to it (keeping the
 * common prefix), samples the assistant's reply, streaming its text through text_fn (may be
 * NULL), and appends it as an "assistant" message. RANGE (the conversation and the cache
 * unchanged) when the rendered conversation fills the engine's context; on any other failure the
 * cache is emptied (the next reply prefills the whole conversation). *out (may be NULL) gets
 * what happened. */
alloy_status alloy_chat_session_reply(alloy_chat_session *cs, alloy_chat_reply *out, alloy_chat_text_fn text_fn,
                                      void *user);

ALLOY_END_DECLS
#endif /* ALLOY_INFER_H */
