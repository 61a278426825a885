/*
 * test_infer.c — the inference engine, the samplers and the generation loop (src/infer/).
 *
 *   - the KV cache: logits of a batched prefill (fresh prompts of different lengths, in chunks,
 *     continued) and of every decode step equal the full-sequence forward (alloy_model_forward)
 *     at each position, for GPT-2, a Llama with grouped-query attention and an untied head, and
 *     an odd Llama (C 60, head_dim 10); reset and truncate reuse the cache; bad calls change
 *     nothing;
 *   - the context limit: prefill and decode refuse to pass it, generation stops with
 *     "context_full", a prompt longer than the context is refused;
 *   - quantised engines (F16, Q8_0, Q4_0, Q4_K) against the fp32 engine, and F16 against the
 *     fp32 engine run on the same f16-rounded weights (equal up to fp32 rounding);
 *   - each stage of the sampling chain against tests/reference/infer_ref.py (numpy: the same
 *     documented chain on the same logits): the surviving ids in order and their
 *     probabilities; greedy = argmax; a chi-square test of temperature sampling; seeds;
 *   - generation: greedy equals an argmax loop over the engine, batches equal single runs,
 *     stop strings across token boundaries (held back while streaming), end-of-text, limits;
 *   - stories260K (a real llama2.c model): imported, saved, and `alloy generate --prompt-ids 1
 *     --tokens 200 --temperature 0` prints the 200 ids llama2.c's run.c prints (test_llmc.c).
 *
 * The sampler reference needs PYTHON (harness.h) with numpy; without it that case skips.
 */
#include "alloy/alloy.h"
#include "alloy/infer.h"
#include "harness.h"
#include "model_util.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Engine logits against the full forward: max|a - b| <= TOL_SCALE · max|b| over a sequence's
 * logits. The two paths sum in different orders (sgemv against sgemm, attention over the
 * cache against the blocked kernel); measured differences are ~1e-7 of the scale. */
#define TOL_SCALE 1e-5

/* ---- helpers ---------------------------------------------------------------------------- */

/* A seeded model moved away from the defaults (as test_model.c): matrices 4x, norm weights
 * 1 + N(0, 0.2²), biases N(0, 0.1²). */
static alloy_model *make_model(const alloy_config *cfg, uint64_t seed, float matrix_scale) {
    alloy_model *m;
    if (alloy_model_create(&m, cfg, 1, cfg->max_seq_len)) {
        fprintf(stderr, "  alloy_model_create: %s\n", alloy_last_error());
        return NULL;
    }
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed * 7919 + 1);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        bool bias = strstr(t->name, ".bias") != NULL;
        for (size_t k = 0; k < t->numel; k++) {
            if (t->ndim == 2) p[k] *= matrix_scale;
            else if (bias) p[k] = 0.1f * (float)alloy_rng_normal(&rng);
            else p[k] = 1.0f + 0.2f * (float)alloy_rng_normal(&rng);
        }
    }
    return m;
}

static alloy_config gpt2_config(void) {
    alloy_config c = {.family = ALLOY_FAMILY_GPT2, .vocab_size = 67, .max_seq_len = 40, .n_layer = 2,
                      .n_head = 4, .n_kv_head = 4, .d_model = 64, .d_ff = 256, .norm_eps = 1e-5,
                      .rope_theta = 10000.0, .tie_embeddings = true};
    return c;
}

static alloy_config llama_config(void) {
    alloy_config c = {.family = ALLOY_FAMILY_LLAMA, .vocab_size = 67, .max_seq_len = 40, .n_layer = 2,
                      .n_head = 4, .n_kv_head = 2, .d_model = 64, .d_ff = 96, .norm_eps = 1e-5,
                      .rope_theta = 10000.0, .tie_embeddings = false};
    return c;
}

/* model_util.h's odd Llama (C 60, head_dim 10, GQA 6/2, F 100) at T = 40. */
static alloy_config odd_config(void) { return odd_llama_config(40); }

static void random_tokens(int32_t *t, int n, int V, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) t[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
}

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

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ---- the KV cache against the full forward ---------------------------------------------- */

#define NSEQ 3

/* Full-sequence logits (T, V) of tokens from the model's own forward. */
static float *full_logits(alloy_model *m, const int32_t *tokens, int T) {
    int V = m->config.vocab_size;
    float *out = malloc(sizeof(float) * (size_t)T * V);
    if (alloy_model_forward(m, tokens, 1, T)) {
        fprintf(stderr, "  forward: %s\n", alloy_last_error());
        free(out);
        return NULL;
    }
    memcpy(out, alloy_model_logits(m), sizeof(float) * (size_t)T * V);
    return out;
}

/* Three sequences of different lengths: prompts prefilled together (all rows' logits), then
 * decoded together one token per step while each has tokens left; every row compared with the
 * full forward. max_rows small forces chunked prefills; `split` prefills the prompts in two
 * calls (the second continuing over the cache). */
static double check_kv(alloy_model *m, alloy_qtype wt, int max_rows, bool split, const char *name) {
    const alloy_config *c = &m->config;
    int V = c->vocab_size;
    const int total[NSEQ] = {c->max_seq_len, 17, 9};  // tokens per sequence, the first fills the context
    const int prompt[NSEQ] = {11, 1, 6};
    int32_t toks[NSEQ][64];
    float *ref[NSEQ];
    for (int b = 0; b < NSEQ; b++) {
        random_tokens(toks[b], total[b], V, 100 + (uint64_t)b);
        ref[b] = full_logits(m, toks[b], total[b]);
        if (!ref[b]) return INFINITY;
    }
    alloy_engine *e;
    alloy_engine_options o = {.weights = wt, .max_batch = NSEQ, .max_rows = max_rows};
    if (alloy_engine_create(&e, m, &o)) {
        fprintf(stderr, "  %s: engine: %s\n", name, alloy_last_error());
        return INFINITY;
    }
    double worst = 0.0;
    float *logits = malloc(sizeof(float) * (size_t)64 * NSEQ * V);
    int seqs[NSEQ] = {0, 1, 2}, lens[NSEQ];
    const int32_t *pp[NSEQ];
    int done = 0; // prompt tokens prefilled so far per sequence (the same count for each when split)
    if (split) { // the first half of each prompt (at least 1 token), then the rest
        int first[NSEQ];
        for (int b = 0; b < NSEQ; b++) first[b] = prompt[b] > 1 ? prompt[b] / 2 : prompt[b];
        for (int b = 0; b < NSEQ; b++) pp[b] = toks[b], lens[b] = first[b];
        EXPECT(!alloy_engine_prefill_batch(e, logits, ALLOY_LOGITS_ALL, seqs, pp, lens, NSEQ), "%s", alloy_last_error());
        size_t row = 0;
        for (int b = 0; b < NSEQ; b++)
            for (int t = 0; t < first[b]; t++, row++) {
                double err = scale_err(logits + row * V, ref[b] + (size_t)t * V, (size_t)V);
                if (err > worst) worst = err;
            }
        int k = 0, sq[NSEQ];
        for (int b = 0; b < NSEQ; b++)
            if (prompt[b] > first[b]) sq[k] = b, pp[k] = toks[b] + first[b], lens[k] = prompt[b] - first[b], k++;
        EXPECT(!alloy_engine_prefill_batch(e, logits, ALLOY_LOGITS_ALL, sq, pp, lens, k), "%s", alloy_last_error());
        row = 0;
        for (int i = 0; i < k; i++)
            for (int t = first[sq[i]]; t < prompt[sq[i]]; t++, row++) {
                double err = scale_err(logits + row * V, ref[sq[i]] + (size_t)t * V, (size_t)V);
                if (err > worst) worst = err;
            }
    } else {
        for (int b = 0; b < NSEQ; b++) pp[b] = toks[b], lens[b] = prompt[b];
        EXPECT(!alloy_engine_prefill_batch(e, logits, ALLOY_LOGITS_ALL, seqs, pp, lens, NSEQ), "%s", alloy_last_error());
        size_t row = 0;
        for (int b = 0; b < NSEQ; b++)
            for (int t = 0; t < prompt[b]; t++, row++) {
                double err = scale_err(logits + row * V, ref[b] + (size_t)t * V, (size_t)V);
                if (err > worst) worst = err;
            }
    }
    (void)done;
    for (int b = 0; b < NSEQ; b++)
        EXPECT(alloy_engine_seq_len(e, b) == prompt[b], "%s: sequence %d holds %d", name, b, alloy_engine_seq_len(e, b));
    // decode: every sequence with tokens left, together
    for (int pos = 0;; pos++) {
        int k = 0, sq[NSEQ];
        int32_t tk[NSEQ];
        for (int b = 0; b < NSEQ; b++) {
            int p = prompt[b] + pos;
            if (p < total[b]) sq[k] = b, tk[k] = toks[b][p], k++;
        }
        if (k == 0) break;
        if (alloy_engine_decode(e, logits, sq, tk, k)) {
            EXPECT(false, "%s: decode: %s", name, alloy_last_error());
            break;
        }
        for (int i = 0; i < k; i++) {
            int p = prompt[sq[i]] + pos;
            double err = scale_err(logits + (size_t)i * V, ref[sq[i]] + (size_t)p * V, (size_t)V);
            if (err > worst) worst = err;
        }
    }
    EXPECT(alloy_engine_seq_len(e, 0) == c->max_seq_len, "%s: sequence 0 holds %d", name, alloy_engine_seq_len(e, 0));
    free(logits);
    for (int b = 0; b < NSEQ; b++) free(ref[b]);
    alloy_engine_destroy(e);
    return worst;
}

static void check_family(const alloy_config *c, const char *name) {
    alloy_model *m = make_model(c, 7, 4.0f);
    REQUIRE(m, "model");
    double e1 = check_kv(m, ALLOY_QTYPE_F32, 512, false, name);
    double e2 = check_kv(m, ALLOY_QTYPE_F32, 5, false, name);   // chunks of 5 rows across sequences
    double e3 = check_kv(m, ALLOY_QTYPE_F32, 512, true, name);  // prompts continued over the cache
    EXPECT(e1 <= TOL_SCALE, "%s: prefill + decode: max error %.3g of the scale", name, e1);
    EXPECT(e2 <= TOL_SCALE, "%s: chunked prefill: max error %.3g of the scale", name, e2);
    EXPECT(e3 <= TOL_SCALE, "%s: continued prefill: max error %.3g of the scale", name, e3);
    printf("# %s: engine vs full forward, max error / scale: prefill+decode %.2e, chunks of 5 %.2e, continued %.2e\n",
           name, e1, e2, e3);
    alloy_model_destroy(m);
}

static void test_kv_gpt2(void) {
    alloy_config c = gpt2_config();
    check_family(&c, "gpt2");
}

static void test_kv_llama_gqa(void) {
    alloy_config c = llama_config();
    check_family(&c, "llama GQA untied");
}

static void test_kv_llama_odd(void) {
    alloy_config c = odd_config();
    check_family(&c, "llama odd (C 60, hd 10)");
}

/* ---- one-row decode in one team ---------------------------------------------------------- */

/* Logits (steps, V) of one sequence: a 3-token prompt, then one token per decode step to the
 * end of the context, on an engine of `threads` fixed threads; ALLOY_TEAM_DECODE as `team`. */
static float *decode_run(alloy_model *m, alloy_qtype wt, const int32_t *toks, int threads, bool team) {
    const alloy_config *c = &m->config;
    int V = c->vocab_size, T = c->max_seq_len;
    setenv("ALLOY_TEAM_DECODE", team ? "1" : "0", 1);
    alloy_engine *e;
    alloy_status s = alloy_engine_create(&e, m, &(alloy_engine_options){.weights = wt, .threads = threads});
    unsetenv("ALLOY_TEAM_DECODE");
    if (s) return NULL;
    float *out = malloc(sizeof(float) * (size_t)T * V);
    int seq = 0;
    bool ok = !alloy_engine_prefill(e, out + (size_t)2 * V, 0, toks, 3);
    for (int t = 3; ok && t < T; t++) ok = !alloy_engine_decode(e, out + (size_t)t * V, &seq, toks + t, 1);
    alloy_engine_destroy(e);
    if (!ok) free(out);
    return ok ? out : NULL;
}

/* A decode step of one row runs as one OpenMP team (decode_team); it must give the bits of the
 * step-by-step path on as many threads, for every weight format, and (fp32) the full
 * forward's logits. */
static void test_team_decode(void) {
    alloy_config cs[3] = {gpt2_config(), llama_config(), odd_config()};
    const char *names[3] = {"gpt2", "llama GQA", "llama odd"};
    for (int k = 0; k < 3; k++) {
        alloy_model *m = make_model(&cs[k], 21 + (uint64_t)k, 4.0f);
        REQUIRE(m, "model");
        int V = cs[k].vocab_size, T = cs[k].max_seq_len;
        int32_t toks[64];
        random_tokens(toks, T, V, 300 + (uint64_t)k);
        float *ref = full_logits(m, toks, T);
        REQUIRE(ref, "full forward");
        double worst = 0.0;
        const alloy_qtype wts[] = {ALLOY_QTYPE_F32, ALLOY_QTYPE_F16, ALLOY_QTYPE_Q8_0, ALLOY_QTYPE_Q4_0};
        for (size_t w = 0; w < sizeof wts / sizeof wts[0]; w++)
            for (int nt = 2; nt <= 3; nt++) {
                float *team = decode_run(m, wts[w], toks, nt, true), *steps = decode_run(m, wts[w], toks, nt, false);
                EXPECT(team && steps, "%s: decode failed: %s", names[k], alloy_last_error());
                if (team && steps) {
                    size_t n = (size_t)(T - 2) * V;
                    EXPECT(!memcmp(team + 2 * V, steps + 2 * V, sizeof(float) * n),
                           "%s, %s, %d threads: team decode differs from the step-by-step one", names[k],
                           alloy_qtype_name(wts[w]), nt);
                    double err = scale_err(team + 2 * V, ref + 2 * V, n);
                    EXPECT(wts[w] != ALLOY_QTYPE_F32 || err <= TOL_SCALE,
                           "%s, %d threads: team decode vs full forward %.3g of the scale", names[k], nt, err);
                    if (wts[w] == ALLOY_QTYPE_F32 && err > worst) worst = err;
                }
                free(team);
                free(steps);
            }
        printf("# %s: team decode on 2 and 3 threads, f32/f16/q8_0/q4_0: the step-by-step bits; f32 vs full forward "
               "%.2e of the scale\n",
               names[k], worst);
        free(ref);
        alloy_model_destroy(m);
    }
}

/* ---- reset, truncate, bad calls, the context limit -------------------------------------- */

static void test_cache_reuse(void) {
    alloy_config c = llama_config();
    alloy_model *m = make_model(&c, 11, 4.0f);
    REQUIRE(m, "model");
    int V = c.vocab_size;
    int32_t a[24], b[24];
    random_tokens(a, 24, V, 1);
    random_tokens(b, 24, V, 2);
    memcpy(b, a, sizeof(int32_t) * 8); // b shares its first 8 tokens with a
    float *ra = full_logits(m, a, 24), *rb = full_logits(m, b, 24);
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2}), "%s", alloy_last_error());
    float *l1 = malloc(sizeof(float) * V * 24), *l2 = malloc(sizeof(float) * V * 24);
    int seq = 1;
    const int32_t *pa = a;
    int n = 24;
    EXPECT(!alloy_engine_prefill_batch(e, l1, ALLOY_LOGITS_ALL, &seq, &pa, &n, 1), "%s", alloy_last_error());
    // reset and run again: bitwise the same
    alloy_engine_reset(e, 1);
    EXPECT(alloy_engine_seq_len(e, 1) == 0, "reset");
    EXPECT(!alloy_engine_prefill_batch(e, l2, ALLOY_LOGITS_ALL, &seq, &pa, &n, 1), "%s", alloy_last_error());
    EXPECT(!memcmp(l1, l2, sizeof(float) * V * 24), "a reset sequence gives other logits");
    // truncate to the shared 8 tokens and continue with b: b's logits, the prefix reused
    EXPECT(!alloy_engine_truncate(e, 1, 8), "%s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 1) == 8, "truncate");
    const int32_t *pb = b + 8;
    n = 16;
    EXPECT(!alloy_engine_prefill_batch(e, l2, ALLOY_LOGITS_ALL, &seq, &pb, &n, 1), "%s", alloy_last_error());
    double err = 0.0;
    for (int t = 8; t < 24; t++) {
        double e1 = scale_err(l2 + (size_t)(t - 8) * V, rb + (size_t)t * V, (size_t)V);
        if (e1 > err) err = e1;
    }
    EXPECT(err <= TOL_SCALE, "truncated and continued: max error %.3g", err);
    // the other sequence is untouched by all this
    EXPECT(alloy_engine_seq_len(e, 0) == 0, "sequence 0 holds %d", alloy_engine_seq_len(e, 0));
    // decode after a prefill of ALL rows equals the row of the forward
    seq = 0;
    EXPECT(!alloy_engine_prefill(e, l1, 0, a, 10), "%s", alloy_last_error());
    err = scale_err(l1, ra + (size_t)9 * V, (size_t)V);
    EXPECT(err <= TOL_SCALE, "prefill's last row: %.3g", err);
    EXPECT(!alloy_engine_prefill(e, NULL, 0, a + 10, 5), "%s", alloy_last_error()); // no logits asked for
    EXPECT(!alloy_engine_decode(e, l1, &seq, a + 15, 1), "%s", alloy_last_error());
    err = scale_err(l1, ra + (size_t)15 * V, (size_t)V);
    EXPECT(err <= TOL_SCALE, "decode after a prefill without logits: %.3g", err);
    free(l1);
    free(l2);
    free(ra);
    free(rb);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
}

static void test_bad_calls(void) {
    alloy_config c = gpt2_config();
    alloy_model *m = make_model(&c, 3, 1.0f);
    REQUIRE(m, "model");
    alloy_engine *e = NULL;
    EXPECT(alloy_engine_create(&e, m, &(alloy_engine_options){.max_ctx = 41}) == ALLOY_STATUS_USAGE && !e &&
               says("max_ctx 41"),
           "max_ctx beyond the model: %s", alloy_last_error());
    EXPECT(alloy_engine_create(&e, m, &(alloy_engine_options){.weights = (alloy_qtype)9}) == ALLOY_STATUS_USAGE &&
               says("weights format 9"),
           "bad format: %s", alloy_last_error());
    EXPECT(alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = -1}) == ALLOY_STATUS_USAGE, "max_batch -1");
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2, .max_ctx = 16}), "%s",
            alloy_last_error());
    float *logits = malloc(sizeof(float) * 2 * c.vocab_size);
    int32_t t[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    int seqs[2] = {0, 0};
    EXPECT(alloy_engine_prefill(e, logits, 2, t, 3) == ALLOY_STATUS_USAGE && says("sequence 2 is outside [0, 2)"),
           "bad seq: %s", alloy_last_error());
    EXPECT(alloy_engine_prefill(e, logits, 0, t, 0) == ALLOY_STATUS_USAGE, "no tokens: %s", alloy_last_error());
    int32_t bad[2] = {1, 67};
    EXPECT(alloy_engine_prefill(e, logits, 0, bad, 2) == ALLOY_STATUS_RANGE && says("token id 67 at 1"),
           "token out of range: %s", alloy_last_error());
    EXPECT(alloy_engine_decode(e, logits, seqs, t, 2) == ALLOY_STATUS_USAGE && says("sequence 0 is named twice"),
           "a sequence twice: %s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 0, "failed calls changed sequence 0 (%d)", alloy_engine_seq_len(e, 0));
    // the context: 16 positions
    EXPECT(!alloy_engine_prefill(e, logits, 0, t, 10), "%s", alloy_last_error());
    EXPECT(alloy_engine_prefill(e, logits, 0, t, 7) == ALLOY_STATUS_RANGE && says("context full") &&
               says("holds 10 of 16"),
           "prefill past the context: %s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 10, "a refused prefill changed the length (%d)", alloy_engine_seq_len(e, 0));
    EXPECT(!alloy_engine_prefill(e, logits, 0, t, 5), "%s", alloy_last_error());
    int s0 = 0;
    EXPECT(!alloy_engine_decode(e, logits, &s0, t, 1), "the last position: %s", alloy_last_error());
    EXPECT(alloy_engine_decode(e, logits, &s0, t, 1) == ALLOY_STATUS_RANGE && says("context full"),
           "decode past the context: %s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 16, "length %d", alloy_engine_seq_len(e, 0));
    EXPECT(alloy_engine_truncate(e, 0, 17) == ALLOY_STATUS_USAGE, "truncate beyond the length");
    EXPECT(alloy_engine_truncate(e, 5, 0) == ALLOY_STATUS_USAGE, "truncate a bad sequence");
    alloy_engine_reset(e, 0);
    EXPECT(!alloy_engine_prefill(e, logits, 0, t, 16), "a full prompt after reset: %s", alloy_last_error());
    free(logits);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
}

/* Out-of-memory paths of engine creation: every allocation failing in turn, no leak, no crash. */
static void test_engine_oom(void) {
    alloy_config c = llama_config();
    alloy_model *m = make_model(&c, 3, 1.0f);
    REQUIRE(m, "model");
    int ok_at = -1;
    for (long n = 1; n < 200 && ok_at < 0; n++) {
        alloy_engine *e = NULL;
        alloy_alloc_fail_after(n);
        alloy_status s = alloy_engine_create(&e, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q8_0, .max_batch = 2});
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) ok_at = (int)n;
        else EXPECT(s == ALLOY_STATUS_NOMEM && !e, "allocation %ld: status %d (%s)", n, (int)s, alloy_last_error());
        alloy_engine_destroy(e);
    }
    EXPECT(ok_at > 1, "the engine never got created (%d)", ok_at);
    alloy_model_destroy(m);
}

/* ---- quantised engines ------------------------------------------------------------------ */

/* Logits (T, V) of a sequence through an engine: a prefill of the first `prefill` tokens, then
 * the rest one decode step at a time, or (continued) as one more prefill over the cache. */
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
    for (int t = prefill; t < T && ok && !continued; t++)
        ok = !alloy_engine_decode(e, out + (size_t)t * V, &seq, tokens + t, 1);
    alloy_engine_destroy(e);
    if (!ok) {
        fprintf(stderr, "  engine %s: %s\n", alloy_qtype_name(wt), alloy_last_error());
        free(out);
        return NULL;
    }
    return out;
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

/* Rounds every matrix but the embedding through format t (quantise, dequantise): the weights a
 * quantised engine computes with. Llama only (its matrices are (out, in) as quantised). */
static void round_matrices(alloy_model *m, alloy_qtype t) {
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        if (ti->ndim != 2 || strstr(ti->name, "embed_tokens")) continue;
        int64_t rows = ti->shape[0], cols = ti->shape[1];
        size_t rb = alloy_quant_row_bytes(t, cols);
        uint8_t *q = malloc(rb);
        for (int64_t r = 0; r < rows; r++) {
            float *row = m->params_memory + ti->offset + (size_t)r * cols;
            alloy_quantize_row(t, q, row, cols);
            alloy_dequantize_row(t, row, q, cols);
        }
        free(q);
    }
}

/* Tolerances of the quantised engines against the fp32 engine, as ||a - b|| / ||b|| over the
 * logits of 24 positions (2-layer models, C 256, GPT-2's initialisation). The error is the
 * weights' rounding (RMSE per weight: f16 ~3e-4, q8_0 0.5%, q4_k 7%, q4_0 9%) compounded over
 * nine products, plus, for the integer formats, x rounded to 8 bits per block in every product
 * (~1%); a random network's logits have no margin, so this is near the worst case. Measured:
 * gpt2 f16 2.1e-4, q8_0 8.2e-3, q4_0 0.10, q4_k 0.083; llama f16 4.3e-4, q8_0 1.5e-2, q4_0
 * 0.19, q4_k 0.15. Set at ~2.5x; a wrong layout, block or scale gives ~1.4 (uncorrelated). */
static const double QUANT_TOL[ALLOY_QTYPE_COUNT] = {0.0, 1e-3, 4e-2, 0.45, 0.4};
/* Against the fp32 engine on the weights the quantised engine uses (rounded through the format,
 * which isolates the products): f16 products are fp32 products of those exact values, only the
 * summation order differs (max error / scale; measured 6.4e-7); the integer formats add the
 * 8-bit rounding of x alone (||.|| ratio; measured 1.0e-2 to 1.4e-2, the same for every format,
 * as it should be). */
static const double ROUNDED_TOL[ALLOY_QTYPE_COUNT] = {0.0, 1e-5, 3.5e-2, 3.5e-2, 3.5e-2};

#ifndef QSCALE
#define QSCALE 1.0f
#endif
static void check_quant(const alloy_config *c, const char *name, bool rounded) {
    alloy_model *m = make_model(c, 5, QSCALE);
    REQUIRE(m, "model");
    const int T = 24;
    int32_t tokens[24];
    random_tokens(tokens, T, c->vocab_size, 9);
    size_t n = (size_t)T * c->vocab_size;
    float *ref = engine_logits(m, ALLOY_QTYPE_F32, tokens, T, 10, false);
    REQUIRE(ref, "fp32 engine");
    char line[512];
    int k = snprintf(line, sizeof line, "# %s: ||error|| / ||fp32 logits||:", name);
    for (int t = ALLOY_QTYPE_F16; t < ALLOY_QTYPE_COUNT; t++) {
        const char *tn = alloy_qtype_name((alloy_qtype)t);
        float *q = engine_logits(m, (alloy_qtype)t, tokens, T, 10, false);
        float *q2 = engine_logits(m, (alloy_qtype)t, tokens, T, 10, true);
        if (!q || !q2) {
            EXPECT(false, "%s: %s engine failed", name, tn);
            free(q);
            free(q2);
            continue;
        }
        double err = rms_err(q, ref, n);
        EXPECT(err <= QUANT_TOL[t], "%s: %s against fp32: %.3g > %.3g", name, tn, err, QUANT_TOL[t]);
        // the quantised products of several rows equal those of one row bitwise, and the
        // continued prefill attends over the cache as decode does: the same logits exactly
        EXPECT(!memcmp(q, q2, sizeof(float) * n), "%s: %s: a continued prefill differs from decode steps (%.3g)", name,
               tn, scale_err(q2, q, n));
        k += snprintf(line + k, sizeof line - (size_t)k, " %s %.2e", tn, err);
        if (rounded) {
            alloy_model *mr = make_model(c, 5, QSCALE);
            round_matrices(mr, (alloy_qtype)t);
            float *rr = engine_logits(mr, ALLOY_QTYPE_F32, tokens, T, 10, false);
            double er = !rr ? INFINITY : t == ALLOY_QTYPE_F16 ? scale_err(q, rr, n) : rms_err(q, rr, n);
            EXPECT(er <= ROUNDED_TOL[t], "%s: %s against fp32 on the rounded weights: %.3g > %.3g", name, tn, er,
                   ROUNDED_TOL[t]);
            k += snprintf(line + k, sizeof line - (size_t)k, " (rounded weights %.2e)", er);
            free(rr);
            alloy_model_destroy(mr);
        }
        free(q);
        free(q2);
    }
    printf("%s\n", line);
    free(ref);
    alloy_model_destroy(m);
}

static void test_quant_gpt2(void) {
    alloy_config c = gpt2_config();
    c.d_model = 256;
    c.d_ff = 512;
    check_quant(&c, "gpt2 C 256", false);
}

static void test_quant_llama(void) {
    alloy_config c = llama_config();
    c.d_model = 256;
    c.d_ff = 512;
    check_quant(&c, "llama C 256", true);
}

/* Formats fall back where a matrix's width is not a multiple of the block. */
static void test_quant_fallback(void) {
    alloy_config c = odd_config(); // C 60, F 100: nothing fits a block of 32
    alloy_model *m = make_model(&c, 5, 1.0f);
    REQUIRE(m, "model");
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q4_K}), "%s", alloy_last_error());
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    EXPECT(info.n_matrices[ALLOY_QTYPE_F16] == 4 * c.n_layer + 1, "odd: %d matrices in f16", info.n_matrices[ALLOY_QTYPE_F16]);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
    c = llama_config(); // C 64, F 96: Q4_K falls back to Q8_0
    m = make_model(&c, 5, 1.0f);
    REQUIRE(m, "model");
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q4_K}), "%s", alloy_last_error());
    alloy_engine_get_info(e, &info);
    EXPECT(info.n_matrices[ALLOY_QTYPE_Q8_0] == 4 * c.n_layer + 1, "llama: %d matrices in q8_0",
           info.n_matrices[ALLOY_QTYPE_Q8_0]);
    size_t expect = 0;
    int QKV = (c.n_head + 2 * c.n_kv_head) * (c.d_model / c.n_head);
    expect += (size_t)c.n_layer * QKV * alloy_quant_row_bytes(ALLOY_QTYPE_Q8_0, c.d_model);
    expect += (size_t)c.n_layer * c.d_model * alloy_quant_row_bytes(ALLOY_QTYPE_Q8_0, c.d_model);
    expect += (size_t)c.n_layer * 2 * c.d_ff * alloy_quant_row_bytes(ALLOY_QTYPE_Q8_0, c.d_model);
    expect += (size_t)c.n_layer * c.d_model * alloy_quant_row_bytes(ALLOY_QTYPE_Q8_0, c.d_ff);
    expect += (size_t)c.vocab_size * alloy_quant_row_bytes(ALLOY_QTYPE_Q8_0, c.d_model);
    EXPECT(info.weight_bytes == expect, "weight bytes %zu, expected %zu", info.weight_bytes, expect);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
}

/* ---- samplers against the numpy reference ----------------------------------------------- */

typedef struct scase {
    const char *name;
    int V;
    int logits_kind;          /* 0: N(0, 3²); 1: many ties (integers 0..4); 2: one NaN and a -inf */
    int n_hist;               /* history: the last n_hist of a fixed random run over a few ids */
    alloy_sampler_params p;
    alloy_logit_bias bias[4];
    int n_bias;
} scase;

static void case_logits(const scase *c, float *l, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < c->V; i++) {
        if (c->logits_kind == 1) l[i] = (float)alloy_rng_below(&rng, 5);
        else l[i] = 3.0f * (float)alloy_rng_normal(&rng);
    }
    if (c->logits_kind == 2) {
        l[3] = NAN;
        l[5] = -INFINITY;
    }
}

static void case_history(const scase *c, int32_t *h, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < c->n_hist; i++) h[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)(c->V < 30 ? c->V : 30));
}

/* The sampler's settings with every stage off but the temperature (1). */
static alloy_sampler_params plain(void) {
    alloy_sampler_params p;
    alloy_sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    return p;
}

static int make_cases(scase *cs) {
    int n = 0;
    alloy_sampler_params p;
    alloy_sampler_params d;
    alloy_sampler_params_default(&d);
    // each stage alone
    p = plain();
    cs[n++] = (scase){.name = "temperature 1 alone", .V = 200, .p = p};
    p = plain();
    cs[n++] = (scase){.name = "logit bias", .V = 200, .p = p, .n_bias = 3,
                      .bias = {{7, 5.0f}, {11, -INFINITY}, {199, 2.5f}}};
    p = plain();
    p.repeat_penalty = 1.3f;
    p.repeat_last_n = 16;
    cs[n++] = (scase){.name = "repeat penalty, last 16", .V = 200, .n_hist = 40, .p = p};
    p = plain();
    p.presence_penalty = 0.7f;
    p.frequency_penalty = 0.3f;
    p.repeat_last_n = -1;
    cs[n++] = (scase){.name = "presence + frequency, whole history", .V = 200, .n_hist = 50, .p = p};
    p = plain();
    p.top_k = 10;
    cs[n++] = (scase){.name = "top-k 10 (heap)", .V = 200, .p = p};
    p = plain();
    p.top_k = 60;
    cs[n++] = (scase){.name = "top-k 60 (sort)", .V = 200, .p = p};
    p = plain();
    p.top_k = 7;
    cs[n++] = (scase){.name = "top-k 7 among ties", .V = 50, .logits_kind = 1, .p = p};
    p = plain();
    p.top_p = 0.7f;
    cs[n++] = (scase){.name = "top-p 0.7", .V = 200, .p = p};
    p = plain();
    p.top_p = 0.0f;
    cs[n++] = (scase){.name = "top-p 0 (one token)", .V = 200, .p = p};
    p = plain();
    p.min_p = 0.1f;
    cs[n++] = (scase){.name = "min-p 0.1", .V = 200, .p = p};
    p = plain();
    p.temperature = 0.45f;
    cs[n++] = (scase){.name = "temperature 0.45", .V = 200, .p = p};
    p = plain();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.5f;
    cs[n++] = (scase){.name = "greedy after penalties", .V = 200, .n_hist = 64, .p = p};
    // chains
    cs[n++] = (scase){.name = "defaults", .V = 200, .n_hist = 20, .p = d};
    p = d;
    p.top_k = 0;
    cs[n++] = (scase){.name = "defaults without top-k", .V = 200, .p = p};
    p = d;
    p.repeat_penalty = 1.1f;
    p.presence_penalty = 0.2f;
    p.frequency_penalty = 0.1f;
    p.repeat_last_n = 32;
    p.top_k = 25;
    p.top_p = 0.9f;
    p.min_p = 0.02f;
    p.temperature = 1.3f;
    p.n_vocab = 180;
    cs[n++] = (scase){.name = "everything, n_vocab 180", .V = 200, .n_hist = 80, .p = p, .n_bias = 2,
                      .bias = {{2, 3.0f}, {190, 50.0f}}};
    p = d;
    cs[n++] = (scase){.name = "defaults, NaN and -inf logits", .V = 100, .logits_kind = 2, .n_hist = 10, .p = p};
    p = d;
    cs[n++] = (scase){.name = "defaults, 50257 tokens", .V = 50257, .n_hist = 64, .p = p};
    return n;
}

static void json_floats(FILE *f, const float *x, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (isnan(x[i])) fputs("NaN", f);
        else if (isinf(x[i])) fputs(x[i] > 0 ? "Infinity" : "-Infinity", f);
        else fprintf(f, "%.9g", (double)x[i]);
        if (i + 1 < n) fputc(',', f);
    }
    fputc(']', f);
}

static void test_sampler_reference(void) {
    NEED_PYTHON("numpy");
    static scase cs[32];
    int n = make_cases(cs);
    char dir[256], in[300], outp[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(in, sizeof in, "%s/cases.json", dir);
    snprintf(outp, sizeof outp, "%s/out.json", dir);
    FILE *f = fopen(in, "w");
    REQUIRE(f, "%s", in);
    fputs("{\"cases\": [", f);
    float *logits = malloc(sizeof(float) * 50257);
    int32_t hist[128];
    for (int i = 0; i < n; i++) {
        const scase *c = &cs[i];
        case_logits(c, logits, 1000 + (uint64_t)i);
        case_history(c, hist, 2000 + (uint64_t)i);
        fprintf(f, "%s{\"name\": \"%s\", \"logits\": ", i ? ",\n" : "", c->name);
        json_floats(f, logits, c->V);
        fputs(", \"history\": [", f);
        for (int k = 0; k < c->n_hist; k++) fprintf(f, "%s%d", k ? "," : "", hist[k]);
        const alloy_sampler_params *p = &c->p;
        fprintf(f, "], \"params\": {\"temperature\": %.9g, \"top_k\": %d, \"top_p\": %.9g, \"min_p\": %.9g, "
                   "\"repeat_penalty\": %.9g, \"presence_penalty\": %.9g, \"frequency_penalty\": %.9g, "
                   "\"repeat_last_n\": %d, \"n_vocab\": %d, \"logit_bias\": [",
                (double)p->temperature, p->top_k, (double)p->top_p, (double)p->min_p, (double)p->repeat_penalty,
                (double)p->presence_penalty, (double)p->frequency_penalty, p->repeat_last_n, p->n_vocab);
        for (int k = 0; k < c->n_bias; k++) {
            fprintf(f, "%s[%d, ", k ? "," : "", c->bias[k].token);
            json_floats(f, &c->bias[k].bias, 1);
            fputc(']', f);
        }
        fputs("]}}", f);
    }
    fputs("]}\n", f);
    fclose(f);
    int rc = harness_reference("numpy", "infer_ref.py", "'%s' '%s'", in, outp);
    cJSON *res = NULL;
    if (rc != 0 || alloy_json_read_file(outp, &res)) {
        free(logits);
        REQUIRE(false, "infer_ref.py failed (status %d)", rc);
    }
    const cJSON *results = cJSON_GetObjectItem(res, "results");
    REQUIRE(cJSON_GetArraySize(results) == n, "the reference gave %d results for %d cases", cJSON_GetArraySize(results), n);
    double worst = 0.0;
    int total_kept = 0;
    for (int i = 0; i < n; i++) {
        const scase *c = &cs[i];
        const cJSON *r = cJSON_GetArrayItem(results, i);
        case_logits(c, logits, 1000 + (uint64_t)i);
        case_history(c, hist, 2000 + (uint64_t)i);
        alloy_sampler_params p = c->p;
        p.logit_bias = c->bias;
        p.n_logit_bias = c->n_bias;
        alloy_sampler *s;
        if (alloy_sampler_create(&s, &p, c->V)) {
            EXPECT(false, "%s: %s", c->name, alloy_last_error());
            continue;
        }
        for (int k = 0; k < c->n_hist; k++) alloy_sampler_accept(s, hist[k]);
        alloy_candidates cand;
        alloy_status st = alloy_sampler_candidates(s, &cand, logits);
        const cJSON *ids = cJSON_GetObjectItem(r, "ids"), *probs = cJSON_GetObjectItem(r, "probs");
        if (st || !ids) {
            EXPECT(st && !ids, "%s: alloy %s, reference %s", c->name, st ? alloy_last_error() : "ok",
                   ids ? "ok" : "error");
            alloy_sampler_destroy(s);
            continue;
        }
        int nr = cJSON_GetArraySize(ids);
        EXPECT(cand.n == nr, "%s: %d candidates, the reference %d", c->name, cand.n, nr);
        for (int k = 0; k < cand.n && k < nr; k++) {
            int rid = cJSON_GetArrayItem(ids, k)->valueint;
            double rp = cJSON_GetArrayItem(probs, k)->valuedouble;
            EXPECT(cand.ids[k] == rid, "%s: candidate %d is %d, the reference's %d", c->name, k, cand.ids[k], rid);
            double d = fabs((double)cand.probs[k] - rp);
            if (d > worst) worst = d;
            EXPECT(d <= 1e-6, "%s: p(%d) = %.9g, the reference's %.9g", c->name, rid, (double)cand.probs[k], rp);
        }
        total_kept += cand.n;
        alloy_sampler_destroy(s);
    }
    printf("# sampler chain against infer_ref.py: %d cases, %d candidates, max |p - p_ref| = %.2e\n", n, total_kept,
           worst);
    cJSON_Delete(res);
    free(logits);
}

static void test_sampler_greedy_and_seed(void) {
    alloy_sampler_params p;
    alloy_sampler_params_default(&p);
    p.temperature = 0.0f;
    alloy_sampler *s, *s2;
    REQUIRE(!alloy_sampler_create(&s, &p, 1000), "%s", alloy_last_error());
    float l[1000];
    for (int trial = 0; trial < 20; trial++) {
        scase c = {.V = 1000, .logits_kind = trial % 2};
        case_logits(&c, l, 50 + (uint64_t)trial);
        int32_t t;
        EXPECT(!alloy_sampler_sample(s, &t, l), "%s", alloy_last_error());
        EXPECT(t == argmax(l, 1000), "greedy %d, argmax %d", t, argmax(l, 1000));
    }
    alloy_sampler_destroy(s);
    // the same seed draws the same tokens; another seed others
    alloy_sampler_params_default(&p);
    p.seed = 99;
    REQUIRE(!alloy_sampler_create(&s, &p, 1000) && !alloy_sampler_create(&s2, &p, 1000), "%s", alloy_last_error());
    int same = 0, differ = 0;
    int32_t first[100];
    scase c = {.V = 1000};
    case_logits(&c, l, 5);
    for (int i = 0; i < 100; i++) {
        int32_t a, b;
        alloy_sampler_sample(s, &a, l);
        alloy_sampler_sample(s2, &b, l);
        same += a == b;
        first[i] = a;
    }
    alloy_sampler_reset(s, 99);
    for (int i = 0; i < 100; i++) {
        int32_t a;
        alloy_sampler_sample(s, &a, l);
        same += a == first[i];
    }
    alloy_sampler_reset(s, 100);
    for (int i = 0; i < 100; i++) {
        int32_t a;
        alloy_sampler_sample(s, &a, l);
        differ += a != first[i];
    }
    EXPECT(same == 200, "seed 99 twice: %d of 200 draws equal", same);
    EXPECT(differ > 20, "seeds 99 and 100: only %d of 100 draws differ", differ);
    alloy_sampler_destroy(s);
    alloy_sampler_destroy(s2);
    // bad settings are refused, naming them
    alloy_sampler_params_default(&p);
    p.top_p = 1.5f;
    EXPECT(alloy_sampler_create(&s, &p, 10) == ALLOY_STATUS_USAGE && says("top_p"), "%s", alloy_last_error());
    alloy_sampler_params_default(&p);
    p.repeat_penalty = 0.0f;
    EXPECT(alloy_sampler_create(&s, &p, 10) == ALLOY_STATUS_USAGE && says("repeat_penalty"), "%s", alloy_last_error());
    alloy_sampler_params_default(&p);
    alloy_logit_bias b = {10, 1.0f};
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    EXPECT(alloy_sampler_create(&s, &p, 10) == ALLOY_STATUS_USAGE && says("token 10"), "%s", alloy_last_error());
    // every token banned
    alloy_sampler_params_default(&p);
    alloy_logit_bias ban[2] = {{0, -INFINITY}, {1, -INFINITY}};
    p.logit_bias = ban;
    p.n_logit_bias = 2;
    REQUIRE(!alloy_sampler_create(&s, &p, 2), "%s", alloy_last_error());
    int32_t t;
    float two[2] = {1.0f, 2.0f};
    EXPECT(alloy_sampler_sample(s, &t, two) == ALLOY_STATUS_RANGE && says("banned"), "%s", alloy_last_error());
    alloy_sampler_destroy(s);
}

/* Counts of n draws against the expected probabilities: Pearson's chi-square. */
static double chi_square(const int *counts, const double *probs, int k, int n) {
    double chi = 0.0;
    for (int i = 0; i < k; i++) {
        double e = probs[i] * n;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

/* Temperature sampling follows softmax(logits / T): 12 tokens, 60000 draws from seed 7. The
 * critical value of chi-square with 11 degrees of freedom at p = 0.001 is 31.26; a sampler
 * that ignored T (or applied it twice) gives thousands. Then the same through top-k 6 + top-p
 * 0.9 (the draw follows the renormalised survivors). */
static void test_sampler_chi_square(void) {
    const int K = 12, N = 60000;
    float l[12];
    for (int i = 0; i < K; i++) l[i] = 0.35f * (float)i - 1.0f + (i % 3 == 0 ? 0.5f : 0.0f);
    const float T = 0.7f;
    double probs[12], sum = 0.0, mx = l[K - 1];
    for (int i = 0; i < K; i++) sum += probs[i] = exp(((double)l[i] - mx) / T);
    for (int i = 0; i < K; i++) probs[i] /= sum;
    alloy_sampler_params p = plain();
    p.temperature = T;
    p.seed = 7;
    alloy_sampler *s;
    REQUIRE(!alloy_sampler_create(&s, &p, K), "%s", alloy_last_error());
    int counts[12] = {0};
    for (int i = 0; i < N; i++) {
        int32_t t;
        alloy_sampler_sample(s, &t, l);
        counts[t]++;
    }
    double chi = chi_square(counts, probs, K, N);
    EXPECT(chi < 31.26, "temperature %.2f: chi-square %.1f >= 31.26 (11 dof, p = 0.001)", (double)T, chi);
    alloy_sampler_destroy(s);
    // top-k 6 then top-p 0.9 at temperature 1 decide the survivors; the draw is at T
    p.top_k = 6;
    p.top_p = 0.9f;
    REQUIRE(!alloy_sampler_create(&s, &p, K), "%s", alloy_last_error());
    alloy_candidates cand;
    REQUIRE(!alloy_sampler_candidates(s, &cand, l), "%s", alloy_last_error());
    int nk = cand.n, ids[12];
    double pk[12];
    for (int i = 0; i < nk; i++) ids[i] = cand.ids[i], pk[i] = cand.probs[i];
    int ck[12] = {0}, outside = 0;
    for (int i = 0; i < N; i++) {
        int32_t t;
        alloy_sampler_sample(s, &t, l);
        int j = 0;
        while (j < nk && ids[j] != t) j++;
        if (j == nk) outside++;
        else ck[j]++;
    }
    double chi2 = chi_square(ck, pk, nk, N);
    EXPECT(outside == 0, "%d draws outside the %d survivors", outside, nk);
    EXPECT(nk >= 2 && nk <= 6, "%d survivors of top-k 6", nk);
    // critical values at p = 0.001 for 1..5 degrees of freedom
    static const double crit[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};
    EXPECT(chi2 < crit[nk - 1], "top-k + top-p: chi-square %.1f >= %.2f (%d dof)", chi2, crit[nk - 1], nk - 1);
    printf("# chi-square: temperature 0.7 over 12 tokens %.1f (< 31.26); %d survivors of top-k 6 + top-p 0.9 %.1f (< %.2f)\n",
           chi, nk, chi2, crit[nk - 1]);
    alloy_sampler_destroy(s);
}

/* ---- generation ------------------------------------------------------------------------- */

/* What a stream callback saw, per request. */
typedef struct seen {
    char text[8][4096];
    size_t len[8];
    int tokens[8];
    int closed[8];
    bool prefix_ok;     /* the text streamed so far never ran past the final text */
} seen;

static void on_event(void *user, const alloy_stream_event *ev) {
    seen *s = user;
    int r = ev->request;
    if (r < 0 || r >= 8) return;
    if (ev->token >= 0) s->tokens[r]++;
    else s->closed[r]++;
    if (ev->len && s->len[r] + ev->len < sizeof s->text[r]) {
        memcpy(s->text[r] + s->len[r], ev->text, ev->len);
        s->len[r] += ev->len;
    }
}

/* A small BPE tokenizer (multi-byte tokens) trained on English text. */
static alloy_tokenizer *small_bpe(void) {
    static const char *text =
        "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat and then they "
        "went home together. the end of the story is near; the cat is happy and the dog is happy too. ";
    const char *specials[] = {"<|endoftext|>"};
    alloy_bpe_train_options o = {.vocab_size = 300, .special_tokens = specials, .n_special = 1, .min_frequency = 2,
                                 .quiet = true};
    alloy_bpe_trainer *tr;
    alloy_tokenizer *tok = NULL;
    if (alloy_bpe_trainer_create(&tr, &o)) return NULL;
    for (int i = 0; i < 20; i++) alloy_bpe_trainer_feed(tr, text, strlen(text));
    if (alloy_bpe_trainer_finish(tr, &tok)) tok = NULL;
    alloy_bpe_trainer_destroy(tr);
    return tok;
}

static void test_generate(void) {
    alloy_tokenizer *tok = small_bpe();
    REQUIRE(tok, "BPE: %s", alloy_last_error());
    int V = alloy_tokenizer_vocab_size(tok);
    alloy_config c = gpt2_config();
    c.vocab_size = V;
    c.max_seq_len = 96;
    alloy_model *m = make_model(&c, 21, 4.0f);
    REQUIRE(m, "model");
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2}), "%s", alloy_last_error());
    alloy_ids prompt = {0};
    const char *ptext = "the cat sat on";
    REQUIRE(!alloy_tokenizer_encode(tok, ptext, strlen(ptext), 0, &prompt), "%s", alloy_last_error());
    const int32_t *pp = prompt.data;
    int plen = (int)prompt.n;

    // greedy = an argmax loop over the engine
    alloy_generate_options o;
    alloy_generate_options_default(&o);
    o.sampling.temperature = 0.0f;
    o.max_tokens = 40;
    o.tokenizer = tok;
    alloy_generation g0;
    seen sw;
    memset(&sw, 0, sizeof sw);
    REQUIRE(!alloy_generate(e, &g0, &pp, &plen, 1, &o, on_event, &sw), "%s", alloy_last_error());
    EXPECT(g0.finish == ALLOY_FINISH_LENGTH && g0.ids.n == 40, "finish %s after %zu", alloy_finish_name(g0.finish),
           g0.ids.n);
    float *lg = malloc(sizeof(float) * V);
    alloy_engine_reset(e, 0);
    int32_t loop[40];
    int seq = 0;
    bool ok = !alloy_engine_prefill(e, lg, 0, pp, plen);
    for (int i = 0; i < 40 && ok; i++) {
        loop[i] = argmax(lg, V);
        if (i < 39) ok = !alloy_engine_decode(e, lg, &seq, &loop[i], 1);
    }
    EXPECT(ok && !memcmp(loop, g0.ids.data, sizeof loop), "greedy generation differs from the argmax loop");
    EXPECT(sw.tokens[0] == 40 && sw.closed[0] == 1 && sw.len[0] == g0.text_len &&
               !memcmp(sw.text[0], g0.text, g0.text_len),
           "the stream (%d tokens, %d closings, %zu bytes) is not the result (%zu bytes)", sw.tokens[0], sw.closed[0],
           sw.len[0], g0.text_len);
    char *dec;
    size_t dlen;
    REQUIRE(!alloy_tokenizer_decode(tok, g0.ids.data, g0.ids.n, &dec, &dlen), "%s", alloy_last_error());
    EXPECT(dlen == g0.text_len && !memcmp(dec, g0.text, dlen), "text is not the decoded ids");

    // stop strings: 5 bytes starting inside a multi-byte token, so spanning token boundaries
    size_t off = 0, start = 0;
    for (size_t i = 0; i < g0.ids.n && !start; i++) {
        size_t n;
        alloy_tokenizer_token(tok, g0.ids.data[i], &n);
        if (n >= 2 && off > 3 && off + 8 < dlen) start = off + 1;
        off += n;
    }
    REQUIRE(start > 0, "no multi-byte token in the greedy text");
    char stop[6];
    memcpy(stop, dec + start, 5);
    stop[5] = '\0';
    size_t at = (size_t)((char *)memmem(dec, dlen, stop, 5) - dec); // its first occurrence
    const char *stops[2] = {"never-appears", stop};
    o.stop = stops;
    o.n_stop = 2;
    alloy_generation g1;
    memset(&sw, 0, sizeof sw);
    REQUIRE(!alloy_generate(e, &g1, &pp, &plen, 1, &o, on_event, &sw), "%s", alloy_last_error());
    EXPECT(g1.finish == ALLOY_FINISH_STOP, "finish %s", alloy_finish_name(g1.finish));
    EXPECT(g1.text_len == at && !memcmp(g1.text, dec, at), "text cut at %zu, the stop string is at %zu", g1.text_len, at);
    size_t bytes = 0, need = 0; // tokens until the one that completes the stop string
    while (bytes < at + 5) {
        size_t n;
        alloy_tokenizer_token(tok, g0.ids.data[need++], &n);
        bytes += n;
    }
    EXPECT(g1.ids.n == need && !memcmp(g1.ids.data, g0.ids.data, need * sizeof(int32_t)),
           "%zu ids kept, expected the %zu up to the stop string", g1.ids.n, need);
    EXPECT(sw.len[0] == g1.text_len && !memcmp(sw.text[0], g1.text, g1.text_len),
           "streamed %zu bytes, the result has %zu: a stop string leaked into the stream", sw.len[0], g1.text_len);
    // a stop string that never completes but whose start is held back at the end: released at the close
    char tail[8];
    memcpy(tail, dec + dlen - 2, 2);
    memcpy(tail + 2, "\x01\x02", 3);
    const char *stops2[1] = {tail};
    o.stop = stops2;
    o.n_stop = 1;
    alloy_generation g2;
    memset(&sw, 0, sizeof sw);
    REQUIRE(!alloy_generate(e, &g2, &pp, &plen, 1, &o, on_event, &sw), "%s", alloy_last_error());
    EXPECT(g2.finish == ALLOY_FINISH_LENGTH && g2.text_len == dlen, "finish %s, %zu bytes", alloy_finish_name(g2.finish),
           g2.text_len);
    EXPECT(sw.len[0] == dlen && !memcmp(sw.text[0], dec, dlen), "held-back text not released at the end (%zu of %zu)",
           sw.len[0], dlen);
    o.stop = NULL;
    o.n_stop = 0;

    // an end-of-text token ends it, and is not part of the result
    int32_t eos = g0.ids.data[6];
    size_t first_eos = 0;
    while (g0.ids.data[first_eos] != eos) first_eos++;
    o.eos = &eos;
    o.n_eos = 1;
    alloy_generation g3;
    REQUIRE(!alloy_generate(e, &g3, &pp, &plen, 1, &o, NULL, NULL), "%s", alloy_last_error());
    EXPECT(g3.finish == ALLOY_FINISH_EOS && g3.ids.n == first_eos, "eos: finish %s after %zu (expected %zu)",
           alloy_finish_name(g3.finish), g3.ids.n, first_eos);
    o.eos = NULL;
    o.n_eos = 0;

    alloy_generation_free(&g0);
    alloy_generation_free(&g1);
    alloy_generation_free(&g2);
    alloy_generation_free(&g3);
    alloy_ids_free(&prompt);
    alloy_free(dec);
    free(lg);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
    alloy_tokenizer_destroy(tok);
}

/* Batches: five prompts of different lengths through 2 slots (continuous batching) give each
 * the tokens it gets alone with seed + its index (bitwise, with quantised weights); the
 * context ends a request with context_full; bad prompts are refused. */
static void test_generate_batch(void) {
    alloy_config c = llama_config();
    c.d_model = 64;
    c.max_seq_len = 40;
    alloy_model *m = make_model(&c, 17, 4.0f);
    REQUIRE(m, "model");
    int V = c.vocab_size;
    alloy_engine *e2, *e1;
    REQUIRE(!alloy_engine_create(&e2, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q8_0, .max_batch = 2}), "%s",
            alloy_last_error());
    REQUIRE(!alloy_engine_create(&e1, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q8_0, .max_batch = 1}), "%s",
            alloy_last_error());
    enum { NP = 5 };
    int32_t store[NP][40];
    const int32_t *pp[NP];
    int lens[NP] = {3, 12, 1, 7, 30};
    for (int i = 0; i < NP; i++) {
        random_tokens(store[i], lens[i], V, 300 + (uint64_t)i);
        pp[i] = store[i];
    }
    alloy_generate_options o;
    alloy_generate_options_default(&o);
    o.sampling.seed = 4242;
    o.sampling.repeat_penalty = 1.1f;
    o.max_tokens = 15;
    alloy_generation gb[NP], g1;
    seen sw;
    memset(&sw, 0, sizeof sw);
    REQUIRE(!alloy_generate(e2, gb, pp, lens, NP, &o, on_event, &sw), "%s", alloy_last_error());
    for (int i = 0; i < NP; i++) {
        alloy_generate_options oi = o;
        oi.sampling.seed = o.sampling.seed + (uint64_t)i;
        REQUIRE(!alloy_generate(e1, &g1, &pp[i], &lens[i], 1, &oi, NULL, NULL), "%s", alloy_last_error());
        // prompt 4 (30 tokens) meets the context of 40 after 10 tokens
        size_t want = i == 4 ? 10 : 15;
        alloy_finish_reason why = i == 4 ? ALLOY_FINISH_CONTEXT : ALLOY_FINISH_LENGTH;
        EXPECT(gb[i].finish == why && gb[i].ids.n == want, "prompt %d: %s after %zu tokens", i,
               alloy_finish_name(gb[i].finish), gb[i].ids.n);
        EXPECT(g1.ids.n == gb[i].ids.n && !memcmp(g1.ids.data, gb[i].ids.data, sizeof(int32_t) * g1.ids.n),
               "prompt %d: the batched tokens differ from the single run", i);
        EXPECT(sw.tokens[i] == (int)gb[i].ids.n && sw.closed[i] == 1 && gb[i].prompt_tokens == lens[i],
               "prompt %d: %d token events, %d closings", i, sw.tokens[i], sw.closed[i]);
        EXPECT(gb[i].text == NULL, "text without a tokenizer");
        alloy_generation_free(&g1);
        alloy_generation_free(&gb[i]);
    }
    // the context: a prompt as long as it finishes at once; a longer one is refused
    int32_t full[41];
    random_tokens(full, 41, V, 9);
    const int32_t *pf = full;
    int n40 = 40, n41 = 41, n0 = 0;
    REQUIRE(!alloy_generate(e1, &g1, &pf, &n40, 1, &o, NULL, NULL), "%s", alloy_last_error());
    EXPECT(g1.finish == ALLOY_FINISH_CONTEXT && g1.ids.n == 0, "a full prompt: %s, %zu tokens",
           alloy_finish_name(g1.finish), g1.ids.n);
    alloy_generation_free(&g1);
    EXPECT(alloy_generate(e1, &g1, &pf, &n41, 1, &o, NULL, NULL) == ALLOY_STATUS_RANGE && says("prompt 0 has 41 tokens"),
           "a prompt past the context: %s", alloy_last_error());
    EXPECT(alloy_generate(e1, &g1, &pf, &n0, 1, &o, NULL, NULL) == ALLOY_STATUS_USAGE && says("prompt 0 is empty"),
           "an empty prompt: %s", alloy_last_error());
    const char *stop[1] = {"x"};
    o.stop = stop;
    o.n_stop = 1;
    EXPECT(alloy_generate(e1, &g1, &pf, &n40, 1, &o, NULL, NULL) == ALLOY_STATUS_USAGE && says("need a tokenizer"),
           "stop strings without a tokenizer: %s", alloy_last_error());
    alloy_engine_destroy(e1);
    alloy_engine_destroy(e2);
    alloy_model_destroy(m);
}

/* ---- stories260K ------------------------------------------------------------------------ */

/* The greedy continuation of token 1 as llama2.c's run.c prints it (tests/test_llmc.c). */
static const int32_t stories_greedy[200] = {
    461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13,
    431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 293, 430, 417, 363, 416, 315, 342,
    418, 424, 400, 442, 402, 303, 266, 299, 374, 466, 396, 303, 271, 362, 390, 469, 306, 469, 423, 314,
    347, 305, 356, 333, 333, 333, 333, 425, 377, 354, 304, 304, 304, 304, 304, 330, 341, 382, 468, 473,
    473, 402, 402, 299, 299, 483, 456, 473, 456, 473, 465, 465, 465, 341, 317, 436, 363, 454, 315, 377,
    360, 408, 472, 453, 327, 316, 266, 417, 277, 299, 369, 283, 266, 417, 264, 277, 277, 277, 439, 456,
    407, 407, 309, 341, 436, 330, 466, 377, 422, 436, 472, 465, 466, 407, 407, 407, 407, 407, 465, 466,
    473, 330, 330, 386, 431, 304, 304, 472, 453, 380, 299, 299, 483, 475, 452, 477, 295, 412, 302, 330,
    275, 377, 271, 341, 438, 452, 287, 302, 341, 438, 303, 303, 303, 283, 266, 417, 277, 277, 277, 409,
    281, 303, 303, 462, 402, 402, 402, 402, 299, 299, 277, 333, 333, 333, 333, 333, 299, 299, 299, 292,
};

static const char *alloy_command(void) {
    const char *a = getenv("ALLOY");
    return a && *a ? a : "build/alloy";
}

static void test_stories260k(void) {
    char path[512];
    NEED_DATA(path, "models/stories260K.bin");
    alloy_model *m;
    REQUIRE(!alloy_llama2c_import(&m, path), "%s", alloy_last_error());
    char dir[300];
    snprintf(dir, sizeof dir, "%s/stories", harness_tmpdir());
    REQUIRE(!alloy_model_save(m, dir), "%s", alloy_last_error());
    // the command: 200 greedy ids from token 1
    char cmd[1200], outp[320];
    snprintf(outp, sizeof outp, "%s.out", dir);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt-ids 1 --tokens 200 --temperature 0 --quiet >'%s'",
             alloy_command(), dir, outp);
    int rc = harness_command(cmd);
    EXPECT(rc == 0, "%s: status %d", cmd, rc);
    FILE *f = fopen(outp, "r");
    int got[256], n = 0;
    while (f && n < 256 && fscanf(f, "%d", &got[n]) == 1) n++;
    if (f) fclose(f);
    int same = 0;
    while (same < n && same < 200 && got[same] == stories_greedy[same]) same++;
    EXPECT(n == 200 && same == 200, "alloy generate printed %d ids, the first %d as llama2.c's", n, same);
    printf("# stories260K: alloy generate --prompt-ids 1 --tokens 200 --temperature 0: %d of 200 ids as llama2.c's run.c\n",
           same);
    // through the library, and with quantised weights (reported, not required: q8_0 rounds the
    // activations, and a greedy run diverges for good at its first different argmax)
    float *ref = NULL;
    for (int t = ALLOY_QTYPE_F32; t < ALLOY_QTYPE_COUNT; t++) {
        alloy_engine *e;
        if (alloy_engine_create(&e, m, &(alloy_engine_options){.weights = (alloy_qtype)t})) {
            EXPECT(false, "%s: %s", alloy_qtype_name((alloy_qtype)t), alloy_last_error());
            continue;
        }
        alloy_generate_options o;
        alloy_generate_options_default(&o);
        o.sampling.temperature = 0.0f;
        o.max_tokens = 200;
        int32_t one = 1;
        const int32_t *pp = &one;
        int len = 1;
        alloy_generation g;
        alloy_status s = alloy_generate(e, &g, &pp, &len, 1, &o, NULL, NULL);
        EXPECT(!s, "%s", alloy_last_error());
        int k = 0;
        while (!s && k < (int)g.ids.n && g.ids.data[k] == stories_greedy[k]) k++;
        if (t == ALLOY_QTYPE_F32) EXPECT(k == 200, "the f32 engine: %d of 200 ids", k);
        // the logits of the reference sequence against the f32 engine's
        float *lg = malloc(sizeof(float) * 201 * 512);
        int32_t seqt[201] = {1};
        memcpy(seqt + 1, stories_greedy, sizeof stories_greedy);
        const int32_t *ps = seqt;
        int n201 = 201, seq = 0;
        alloy_engine_reset(e, 0);
        if (alloy_engine_prefill_batch(e, lg, ALLOY_LOGITS_ALL, &seq, &ps, &n201, 1)) EXPECT(false, "%s", alloy_last_error());
        int agree = 0;
        double err = 0.0;
        if (t == ALLOY_QTYPE_F32) ref = lg;
        else {
            err = rms_err(lg, ref, (size_t)201 * 512);
            for (int i = 0; i < 201; i++) agree += argmax(lg + i * 512, 512) == argmax(ref + i * 512, 512);
            printf("# stories260K %s: %d of 200 greedy ids as f32; logits ||error|| / ||f32|| %.2e, argmax agrees at %d of 201 positions\n",
                   alloy_qtype_name((alloy_qtype)t), k, err, agree);
            // stories260K is sensitive: 0.5% noise on its weights (q8_0) moves its logits by 10%
            // (measured: weights alone 10%, 8-bit activations alone 10%), and its first
            // prediction has a margin of 0.11; f16 moves them by 0.2%
            static const int min_agree[ALLOY_QTYPE_COUNT] = {0, 195, 150, 40, 150};
            EXPECT(agree >= min_agree[t], "%s: the argmax agrees with f32 at %d of 201 positions (< %d)",
                   alloy_qtype_name((alloy_qtype)t), agree, min_agree[t]);
            EXPECT(t != ALLOY_QTYPE_F16 || err <= 1e-2, "f16: logits error %.3g", err);
            free(lg);
        }
        alloy_generation_free(&g);
        alloy_engine_destroy(e);
    }
    free(ref);
    alloy_model_destroy(m);
}

int main(void) {
#ifdef _OPENMP
    // small models: the engine picks its threads per product, this is the most it may take
    if (omp_get_max_threads() > 2) omp_set_num_threads(2);
#endif
    RUN(test_kv_gpt2);
    RUN(test_kv_llama_gqa);
    RUN(test_kv_llama_odd);
    RUN(test_team_decode);
    RUN(test_cache_reuse);
    RUN(test_bad_calls);
    RUN(test_engine_oom);
    RUN(test_quant_gpt2);
    RUN(test_quant_llama);
    RUN(test_quant_fallback);
    RUN(test_sampler_reference);
    RUN(test_sampler_greedy_and_seed);
    RUN(test_sampler_chi_square);
    RUN(test_generate);
    RUN(test_generate_batch);
    RUN(test_stories260k);
    return harness_exit();
}
