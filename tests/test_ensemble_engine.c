/*
 * test_ensemble_engine.c — ensemble engines (alloy_engine_create_ensemble): their logits against
 * the combination of the members' own engines' logits, computed here in double (prefill LAST
 * and ALL, batches of sequences of different lengths, decode steps), against alloy_ensemble_logprobs
 * of src/fuse after a log-softmax, held-out loss against alloy_ensemble_eval; truncate and reset
 * keeping the members in lockstep; generation (an ensemble of a model with itself is the model);
 * and the refusals, which leave the members to the caller.
 */
#include "alloy/ensemble.h"
#include "alloy/infer.h"
#include "harness.h"

enum { V = 97, CTX = 64 };

static alloy_model *make_model(const char *preset, uint64_t seed, int vocab) {
    alloy_config cfg;
    alloy_config_preset(&cfg, preset, vocab);
    cfg.max_seq_len = CTX;
    alloy_model *m = NULL;
    if (alloy_model_create(&m, &cfg, 1, CTX) == ALLOY_STATUS_OK) alloy_model_init_weights(m, seed);
    return m;
}

static alloy_engine *make_engine(const alloy_model *m, int max_batch, int max_ctx, int max_rows) {
    alloy_engine *e = NULL;
    alloy_engine_options o = {.max_batch = max_batch, .max_ctx = max_ctx, .max_rows = max_rows};
    if (alloy_engine_create(&e, m, &o)) return NULL;
    return e;
}

static double logsumexp(const float *z, int n) {
    double mx = -INFINITY, s = 0.0;
    for (int v = 0; v < n; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < n; v++) s += exp(z[v] - mx);
    return mx + log(s);
}

/* want (rows, V) = the combination of za, zb (rows, V) with weights wa, wb (normalised here), in double. */
static void combine(float *want, const float *za, const float *zb, double wa, double wb, alloy_ensemble_mode mode,
                    int rows) {
    double t = wa + wb;
    wa /= t, wb /= t;
    for (int r = 0; r < rows; r++) {
        const float *a = za + (size_t)r * V, *b = zb + (size_t)r * V;
        double la = logsumexp(a, V), lb = logsumexp(b, V);
        for (int v = 0; v < V; v++)
            want[(size_t)r * V + v] = mode == ALLOY_ENSEMBLE_LOGITS
                                          ? (float)(wa * a[v] + wb * b[v])
                                          : (float)log(wa * exp(a[v] - la) + wb * exp(b[v] - lb));
    }
}

/* Largest |a - b| / (1 + |b|) over n values. */
static double max_err(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        worst = isnan(e) || e > worst ? (isnan(e) ? INFINITY : e) : worst;
    }
    return worst;
}

/* The log-softmax of each row, in place. */
static void log_softmax_rows(float *z, int rows) {
    for (int r = 0; r < rows; r++) {
        double l = logsumexp(z + (size_t)r * V, V);
        for (int v = 0; v < V; v++) z[(size_t)r * V + v] = (float)(z[(size_t)r * V + v] - l);
    }
}

/* The ensemble engine e (of ma and mb, weights w) against alloy_ensemble_logprobs over the
 * first 24 tokens of tok (the training forward, fp32), after a log-softmax; got and want are
 * scratch of 24·V floats at least. Leaves sequence 0 of e holding those tokens. */
static void check_against_fp32(alloy_engine *e, alloy_model *ma, alloy_model *mb, const float *w, alloy_ensemble_mode mode,
                               const char *name, const int32_t *tok, float *got, float *want) {
    alloy_model *ms[2] = {ma, mb};
    alloy_ensemble *fe;
    REQUIRE(alloy_ensemble_create(&fe, ms, w, 2, mode) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int T = 24, seq0 = 0;
    REQUIRE(alloy_ensemble_logprobs(fe, tok, 1, T, want) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_engine_reset(e, 0);
    const int32_t *pt = tok;
    REQUIRE(alloy_engine_prefill_batch(e, got, ALLOY_LOGITS_ALL, &seq0, &pt, &T, 1) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    log_softmax_rows(got, T);
    double err = 0.0;
    for (size_t i = 0; i < (size_t)T * V; i++) err = fmax(err, fabs((double)got[i] - want[i]));
    printf("# %s: max |log-softmax(ensemble engine) - alloy_ensemble_logprobs| = %.2e\n", name, err);
    EXPECT(err < 1e-4, "%s: the engine's ensemble differs from alloy_ensemble_logprobs by %g", name, err);
    alloy_ensemble_destroy(fe);
}

/* The ensemble's prefills (LAST, ALL over several chunks, a batch of two sequences of different
 * lengths in all three row modes) and decode steps against the same calls on two reference
 * engines of the same models, combined here. */
static void check_mode(alloy_ensemble_mode mode, const char *name) {
    alloy_model *ma = make_model("tiny-gpt2", 1, V), *mb = make_model("tiny-llama", 2, V);
    REQUIRE(ma && mb, "models: %s", alloy_last_error());
    // members run in chunks of 8 rows: an ALL prefill of 40 tokens is 5 passes, and 40 rows of logits
    alloy_engine *ra = make_engine(ma, 2, CTX, 8), *rb = make_engine(mb, 2, CTX, 8);
    alloy_engine *mem[2] = {make_engine(ma, 2, CTX, 8), make_engine(mb, 2, CTX, 8)};
    REQUIRE(ra && rb && mem[0] && mem[1], "engines: %s", alloy_last_error());
    float w[2] = {0.7f, 0.3f};
    alloy_engine *e;
    REQUIRE(alloy_engine_create_ensemble(&e, mem, w, 2, mode) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_engine_info info, ia, ib;
    alloy_engine_get_info(e, &info);
    alloy_engine_get_info(ra, &ia);
    alloy_engine_get_info(rb, &ib);
    EXPECT(info.vocab_size == V && info.max_batch == 2 && info.max_ctx == CTX && info.max_rows == 8, "info sizes");
    EXPECT(info.weight_bytes == ia.weight_bytes + ib.weight_bytes && info.cache_bytes == ia.cache_bytes + ib.cache_bytes &&
               info.n_matrices[ALLOY_QTYPE_F32] == ia.n_matrices[ALLOY_QTYPE_F32] + ib.n_matrices[ALLOY_QTYPE_F32],
           "info: the members' sums");

    enum { N = 40 };
    int32_t tok[N], tok2[N];
    harness_random_tokens(tok, N, V, 5);
    harness_random_tokens(tok2, N, V, 6);
    size_t cells = (size_t)(N + 2) * V;
    float *got = malloc(sizeof(float) * cells), *za = malloc(sizeof(float) * cells), *zb = malloc(sizeof(float) * cells),
          *want = malloc(sizeof(float) * cells);
    double worst = 0.0;
    // prefill LAST of 11 tokens, then 3 decode steps, on sequence 1
    REQUIRE(alloy_engine_prefill(e, got, 1, tok, 11) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_engine_prefill(ra, za, 1, tok, 11) == ALLOY_STATUS_OK && alloy_engine_prefill(rb, zb, 1, tok, 11) == 0,
            "%s", alloy_last_error());
    combine(want, za, zb, w[0], w[1], mode, 1);
    worst = fmax(worst, max_err(got, want, V));
    for (int k = 0; k < 3; k++) {
        int seq = 1;
        const int32_t t = tok[11 + k];
        REQUIRE(alloy_engine_decode(e, got, &seq, &t, 1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REQUIRE(alloy_engine_decode(ra, za, &seq, &t, 1) == 0 && alloy_engine_decode(rb, zb, &seq, &t, 1) == 0, "%s",
                alloy_last_error());
        combine(want, za, zb, w[0], w[1], mode, 1);
        worst = fmax(worst, max_err(got, want, V));
    }
    EXPECT(alloy_engine_seq_len(e, 1) == 14 && alloy_engine_seq_len(mem[0], 1) == 14 && alloy_engine_seq_len(mem[1], 1) == 14,
           "lengths after 11 + 3 tokens: %d %d %d", alloy_engine_seq_len(e, 1), alloy_engine_seq_len(mem[0], 1),
           alloy_engine_seq_len(mem[1], 1));
    // ALL rows of 40 tokens on sequence 0 (5 passes of 8 rows; 40 rows, more than the scratch had)
    int seq0 = 0, n40 = N;
    const int32_t *p40 = tok;
    REQUIRE(alloy_engine_prefill_batch(e, got, ALLOY_LOGITS_ALL, &seq0, &p40, &n40, 1) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    REQUIRE(alloy_engine_prefill_batch(ra, za, ALLOY_LOGITS_ALL, &seq0, &p40, &n40, 1) == 0 &&
                alloy_engine_prefill_batch(rb, zb, ALLOY_LOGITS_ALL, &seq0, &p40, &n40, 1) == 0,
            "%s", alloy_last_error());
    combine(want, za, zb, w[0], w[1], mode, N);
    worst = fmax(worst, max_err(got, want, (size_t)N * V));
    // a batch of two sequences of different lengths, from empty: LAST, then ALL, then NONE + decode
    alloy_logits_rows modes[3] = {ALLOY_LOGITS_LAST, ALLOY_LOGITS_ALL, ALLOY_LOGITS_NONE};
    for (int k = 0; k < 3; k++) {
        alloy_engine *all[3] = {e, ra, rb};
        float *outs[3] = {got, za, zb};
        int seqs[2] = {1, 0}, lens[2] = {5, 13};
        const int32_t *toks[2] = {tok2, tok2 + 20};
        for (int x = 0; x < 3; x++) {
            alloy_engine_reset(all[x], 0);
            alloy_engine_reset(all[x], 1);
            REQUIRE(alloy_engine_prefill_batch(all[x], outs[x], modes[k], seqs, toks, lens, 2) == ALLOY_STATUS_OK, "%s",
                    alloy_last_error());
        }
        int rows = modes[k] == ALLOY_LOGITS_LAST ? 2 : modes[k] == ALLOY_LOGITS_ALL ? 18 : 0;
        if (rows) {
            combine(want, za, zb, w[0], w[1], mode, rows);
            worst = fmax(worst, max_err(got, want, (size_t)rows * V));
        } else { // NONE filled the caches: a decode step of both sequences
            int32_t next[2] = {3, 4};
            for (int x = 0; x < 3; x++)
                REQUIRE(alloy_engine_decode(all[x], outs[x], seqs, next, 2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
            combine(want, za, zb, w[0], w[1], mode, 2);
            worst = fmax(worst, max_err(got, want, 2 * (size_t)V));
        }
    }
    printf("# %s: max |ensemble - combined members| / (1 + |.|) = %.2e\n", name, worst);
    EXPECT(worst < 1e-5, "%s: the ensemble's logits differ from the members' combination by %g", name, worst);

    check_against_fp32(e, ma, mb, w, mode, name, tok, got, want);

    free(got);
    free(za);
    free(zb);
    free(want);
    alloy_engine_destroy(e); // and its members
    alloy_engine_destroy(ra);
    alloy_engine_destroy(rb);
    alloy_model_destroy(ma);
    alloy_model_destroy(mb);
}

static void test_probs(void) { check_mode(ALLOY_ENSEMBLE_PROBS, "probs"); }
static void test_logits(void) { check_mode(ALLOY_ENSEMBLE_LOGITS, "logits"); }

/* Truncate and reset reach every member: a decode after a truncate equals a fresh prefill of
 * the same tokens, and the members' lengths follow the ensemble's. A call that does not fit
 * the context (the members' least) changes nothing. */
static void test_lockstep(void) {
    alloy_model *ma = make_model("tiny-gpt2", 3, V), *mb = make_model("tiny-llama", 4, V);
    REQUIRE(ma && mb, "models: %s", alloy_last_error());
    alloy_engine *mem[2] = {make_engine(ma, 1, CTX, 0), make_engine(mb, 1, 48, 0)};
    REQUIRE(mem[0] && mem[1], "engines: %s", alloy_last_error());
    alloy_engine *e;
    REQUIRE(alloy_engine_create_ensemble(&e, mem, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    EXPECT(info.max_ctx == 48, "max_ctx is the members' least: %d", info.max_ctx);
    int32_t tok[20];
    harness_random_tokens(tok, 20, V, 9);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    REQUIRE(alloy_engine_prefill(e, a, 0, tok, 12) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_engine_truncate(e, 0, 6) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 6 && alloy_engine_seq_len(mem[0], 0) == 6 && alloy_engine_seq_len(mem[1], 0) == 6,
           "lengths after truncate: %d %d %d", alloy_engine_seq_len(e, 0), alloy_engine_seq_len(mem[0], 0),
           alloy_engine_seq_len(mem[1], 0));
    int seq = 0;
    REQUIRE(alloy_engine_decode(e, a, &seq, &tok[15], 1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    int32_t fresh[7];
    memcpy(fresh, tok, sizeof(int32_t) * 6);
    fresh[6] = tok[15];
    alloy_engine_reset(e, 0);
    EXPECT(alloy_engine_seq_len(mem[0], 0) == 0 && alloy_engine_seq_len(mem[1], 0) == 0, "reset reaches the members");
    REQUIRE(alloy_engine_prefill(e, b, 0, fresh, 7) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double err = max_err(a, b, V);
    EXPECT(err < 1e-5, "decode after truncate vs a fresh prefill: %g", err);
    EXPECT(alloy_engine_truncate(e, 0, 8) == ALLOY_STATUS_USAGE, "truncate beyond the length");
    // 42 more tokens do not fit the least context (48): RANGE, nothing changed
    int32_t many[42] = {0};
    EXPECT(alloy_engine_prefill(e, b, 0, many, 42) == ALLOY_STATUS_RANGE && strstr(alloy_last_error(), "context full"),
           "past the least context: %s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 7 && alloy_engine_seq_len(mem[0], 0) == 7 && alloy_engine_seq_len(mem[1], 0) == 7,
           "a refused call changes nothing");
    int bad = V;
    EXPECT(alloy_engine_prefill(e, b, 0, &bad, 1) == ALLOY_STATUS_RANGE, "a token outside the vocabulary");
    EXPECT(alloy_engine_seq_len(mem[0], 0) == 7, "a refused call changes nothing");
    // a member that fails after another ran (here: member 1 filled behind the ensemble's back, so
    // that it runs out of context) takes member 0 back, and the error names the member
    REQUIRE(alloy_engine_prefill(mem[1], NULL, 0, many, 30) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_engine_prefill(e, b, 0, many, 20) == ALLOY_STATUS_RANGE &&
               strstr(alloy_last_error(), "ensemble member 1: prefill"),
           "a member's failure: %s", alloy_last_error());
    EXPECT(alloy_engine_seq_len(e, 0) == 7 && alloy_engine_seq_len(mem[0], 0) == 7, "member 0 taken back: %d",
           alloy_engine_seq_len(mem[0], 0));
    free(a);
    free(b);
    alloy_engine_destroy(e);
    alloy_model_destroy(ma);
    alloy_model_destroy(mb);
}

/* An ensemble of a model with itself generates what the model does (greedy in both modes; at
 * temperature 0.8 in LOGITS mode, whose logits are then the model's own, bit for bit); a member
 * with weight 0 adds nothing. */
static void test_generate_self(void) {
    alloy_model *m = make_model("tiny-llama", 7, V), *mb = make_model("tiny-gpt2", 8, V);
    REQUIRE(m && mb, "models: %s", alloy_last_error());
    int32_t p0[5], p1[3];
    harness_random_tokens(p0, 5, V, 21);
    harness_random_tokens(p1, 3, V, 22);
    const int32_t *prompts[2] = {p0, p1};
    int lens[2] = {5, 3};
    for (int k = 0; k < 3; k++) {
        alloy_generate_options o;
        alloy_generate_options_default(&o);
        o.max_tokens = 12;
        if (k < 2) o.sampling.temperature = 0.0f;
        alloy_ensemble_mode mode = k == 0 ? ALLOY_ENSEMBLE_PROBS : ALLOY_ENSEMBLE_LOGITS;
        alloy_engine *single = make_engine(m, 2, CTX, 0), *mem[2] = {make_engine(m, 2, CTX, 0), make_engine(m, 2, CTX, 0)};
        REQUIRE(single && mem[0] && mem[1], "engines: %s", alloy_last_error());
        alloy_engine *e;
        REQUIRE(alloy_engine_create_ensemble(&e, mem, NULL, 2, mode) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_generation g1[2] = {0}, g2[2] = {0};
        REQUIRE(alloy_generate(single, g1, prompts, lens, 2, &o, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REQUIRE(alloy_generate(e, g2, prompts, lens, 2, &o, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        for (int i = 0; i < 2; i++)
            EXPECT(g1[i].ids.n == g2[i].ids.n && !memcmp(g1[i].ids.data, g2[i].ids.data, sizeof(int32_t) * g1[i].ids.n),
                   "case %d, prompt %d: the ensemble of a model with itself drew other tokens", k, i);
        for (int i = 0; i < 2; i++) {
            alloy_generation_free(&g1[i]);
            alloy_generation_free(&g2[i]);
        }
        alloy_engine_destroy(single);
        alloy_engine_destroy(e);
    }
    // weights (1, 0): the first member's log-softmax (PROBS), its logits (LOGITS)
    for (int k = 0; k < 2; k++) {
        alloy_ensemble_mode mode = k ? ALLOY_ENSEMBLE_LOGITS : ALLOY_ENSEMBLE_PROBS;
        alloy_engine *single = make_engine(m, 1, CTX, 0), *mem[2] = {make_engine(m, 1, CTX, 0), make_engine(mb, 1, CTX, 0)};
        REQUIRE(single && mem[0] && mem[1], "engines: %s", alloy_last_error());
        alloy_engine *e;
        float w[2] = {1.0f, 0.0f};
        REQUIRE(alloy_engine_create_ensemble(&e, mem, w, 2, mode) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        float a[V], b[V];
        REQUIRE(alloy_engine_prefill(single, a, 0, p0, 5) == 0 && alloy_engine_prefill(e, b, 0, p0, 5) == 0, "%s",
                alloy_last_error());
        if (!k) log_softmax_rows(a, 1);
        double err = max_err(b, a, V);
        EXPECT(err < 1e-6, "mode %d: a member of weight 0 changed the logits by %g", k, err);
        alloy_engine_destroy(single);
        alloy_engine_destroy(e);
    }
    alloy_model_destroy(m);
    alloy_model_destroy(mb);
}

/* alloy_engine_eval_lm through an ensemble engine scores as alloy_ensemble_eval does. */
static void test_eval_lm(void) {
    const char *dir = harness_tmpdir();
    REQUIRE(harness_random_dataset(dir, V, 1500, 31) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, dir, 0.05) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *ma = make_model("tiny-gpt2", 11, V), *mb = make_model("tiny-llama", 12, V);
    REQUIRE(ma && mb, "models: %s", alloy_last_error());
    int T = 32;
    alloy_engine *mem[2] = {make_engine(ma, 1, T, 0), make_engine(mb, 1, T, 0)};
    REQUIRE(mem[0] && mem[1], "engines: %s", alloy_last_error());
    alloy_engine *e;
    float w[2] = {0.4f, 0.6f};
    REQUIRE(alloy_engine_create_ensemble(&e, mem, w, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    alloy_model *ms[2] = {ma, mb};
    alloy_ensemble *fe;
    REQUIRE(alloy_ensemble_create(&fe, ms, w, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_eval_result got, want;
    REQUIRE(alloy_engine_eval_lm(e, ds, ALLOY_SPLIT_VAL, T, 8, &got) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_ensemble_eval(fe, ds, ALLOY_SPLIT_VAL, 1, T, 8, &want) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    printf("# held-out loss: ensemble engine %.6f, alloy_ensemble_eval %.6f (%lld tokens)\n", got.loss, want.loss,
           (long long)got.tokens);
    EXPECT(got.tokens == want.tokens && fabs(got.loss - want.loss) < 1e-5 * want.loss, "eval_lm %.7f vs %.7f", got.loss,
           want.loss);
    alloy_ensemble_destroy(fe);
    alloy_engine_destroy(e);
    alloy_model_destroy(ma);
    alloy_model_destroy(mb);
    alloy_dataset_close(ds);
}

/* Refusals: the right status and message, *out NULL, the members still the caller's (destroyed
 * here; the sanitizer build finds any leak or double free). */
static void test_refusals(void) {
    alloy_model *ma = make_model("tiny-gpt2", 1, V), *mv = make_model("tiny-gpt2", 2, V + 3);
    REQUIRE(ma && mv, "models: %s", alloy_last_error());
    alloy_engine *a = make_engine(ma, 2, CTX, 0), *b = make_engine(ma, 2, CTX, 0), *v = make_engine(mv, 2, CTX, 0),
                 *one = make_engine(ma, 1, CTX, 0);
    REQUIRE(a && b && v && one, "engines: %s", alloy_last_error());
    alloy_engine *e = (alloy_engine *)1;
    alloy_engine *vocab[2] = {a, v}, *batch[2] = {a, one}, *pair[2] = {a, b}, *twice[2] = {a, a}, *null[2] = {a, NULL};
    EXPECT(alloy_engine_create_ensemble(&e, vocab, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_MISMATCH &&
               strstr(alloy_last_error(), "vocabulary") && !e,
           "different vocabularies: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, batch, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_MISMATCH &&
               strstr(alloy_last_error(), "max_batch"),
           "different max_batch: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, pair, NULL, 1, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "2 to 16"),
           "one member: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, pair, NULL, 17, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE, "17 members");
    float neg[2] = {1.0f, -0.5f}, zero[2] = {0.0f, 0.0f}, nan[2] = {NAN, 1.0f}, inf[2] = {INFINITY, 1.0f};
    EXPECT(alloy_engine_create_ensemble(&e, pair, neg, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "weight 1 is -0.5"),
           "a negative weight: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, pair, zero, 2, ALLOY_ENSEMBLE_LOGITS) == ALLOY_STATUS_USAGE, "zero weights");
    EXPECT(alloy_engine_create_ensemble(&e, pair, nan, 2, ALLOY_ENSEMBLE_LOGITS) == ALLOY_STATUS_USAGE, "a NaN weight");
    EXPECT(alloy_engine_create_ensemble(&e, pair, inf, 2, ALLOY_ENSEMBLE_LOGITS) == ALLOY_STATUS_USAGE, "an infinite weight");
    EXPECT(alloy_engine_create_ensemble(&e, pair, NULL, 2, ALLOY_ENSEMBLE_LEARNED) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "hidden states"),
           "learned: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, pair, NULL, 2, (alloy_ensemble_mode)7) == ALLOY_STATUS_USAGE, "mode 7");
    EXPECT(alloy_engine_create_ensemble(&e, twice, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE &&
               strstr(alloy_last_error(), "again"),
           "the same engine twice: %s", alloy_last_error());
    EXPECT(alloy_engine_create_ensemble(&e, null, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE, "a NULL member");
    EXPECT(e == NULL, "*out is NULL after a refusal");
    // the members are untouched and still work
    float z[V];
    EXPECT(alloy_engine_prefill(a, z, 0, &(int32_t){1}, 1) == ALLOY_STATUS_OK, "a refused member still works");
    // a call the ensemble refuses (a sequence outside max_batch) names it
    REQUIRE(alloy_engine_create_ensemble(&e, pair, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    EXPECT(alloy_engine_seq_len(a, 0) == 0, "the ensemble starts with its members' sequences empty");
    int seq = 2;
    EXPECT(alloy_engine_decode(e, z, &seq, &(int32_t){1}, 1) == ALLOY_STATUS_USAGE, "sequence 2 of 2");
    alloy_engine_destroy(e); // a and b with it
    alloy_engine_destroy(v);
    alloy_engine_destroy(one);
    alloy_model_destroy(ma);
    alloy_model_destroy(mv);
}

int main(void) {
    RUN(test_probs);
    RUN(test_logits);
    RUN(test_lockstep);
    RUN(test_generate_self);
    RUN(test_eval_lm);
    RUN(test_refusals);
    return harness_exit();
}
