/*
 * test_ensemble.c — ensembles of models: the combined log-probabilities against a float64
 * NumPy reference (tests/reference/ensemble_ref.py) in both modes, an ensemble of one model
 * against the model itself, held-out evaluation against alloy_eval_lm, refusals, and the mixing
 * kernels themselves (a probability below float's range, weight 0, aliasing, posteriors).
 */
#include "alloy/ensemble.h"
#include "alloy/io.h"
#include "harness.h"

enum { V = 97, B = 2, T = 16 };

static alloy_model *member(const char *preset, uint64_t seed) {
    alloy_config cfg;
    alloy_config_preset(&cfg, preset, V);
    cfg.max_seq_len = 64;
    alloy_model *m = NULL;
    if (alloy_model_create(&m, &cfg, B, 64) == ALLOY_STATUS_OK) alloy_model_init_weights(m, seed);
    return m;
}

static void test_against_reference(void) {
    alloy_model *ms[3] = {member("tiny-gpt2", 1), member("tiny-gpt2", 2), member("tiny-llama", 3)};
    REQUIRE(ms[0] && ms[1] && ms[2], "models: %s", alloy_last_error());
    float w[3] = {0.5f, 0.3f, 1.2f}; // normalised by the ensemble
    int32_t tok[B * T];
    harness_random_tokens(tok, B * T, V, 7);
    // the members' logits, written for the reference
    float *z[3];
    alloy_st_entry e[4];
    char names[3][16];
    for (int i = 0; i < 3; i++) {
        REQUIRE(alloy_model_forward(ms[i], tok, B, T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        z[i] = malloc(sizeof(float) * B * T * V);
        memcpy(z[i], alloy_model_logits(ms[i]), sizeof(float) * B * T * V);
        snprintf(names[i], sizeof names[i], "logits.%d", i);
        e[i] = (alloy_st_entry){names[i], ALLOY_DTYPE_F32, 2, {B * T, V}, z[i]};
    }
    e[3] = (alloy_st_entry){"weights", ALLOY_DTYPE_F32, 1, {3}, w};
    const char *dir = harness_tmpdir();
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/members.safetensors", dir);
    snprintf(out, sizeof out, "%s/ref.safetensors", dir);
    REQUIRE(alloy_safetensors_write(in, e, 4, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REFERENCE("numpy", "ensemble_ref.py", "'%s' '%s'", in, out);
    alloy_safetensors *ref;
    REQUIRE(alloy_safetensors_open(&ref, out) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float *logp = malloc(sizeof(float) * B * T * V), *want = malloc(sizeof(float) * B * T * V);
    const char *modes[2] = {"probs", "logits"};
    for (int k = 0; k < 2; k++) {
        alloy_ensemble_mode mode;
        EXPECT(!alloy_ensemble_mode_parse(modes[k], &mode), "mode %s", modes[k]);
        alloy_ensemble *en;
        REQUIRE(alloy_ensemble_create(&en, ms, w, 3, mode) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REQUIRE(alloy_ensemble_logprobs(en, tok, B, T, logp) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        const alloy_st_tensor *t = alloy_safetensors_find(ref, modes[k]);
        REQUIRE(t && t->numel == (size_t)B * T * V, "reference %s", modes[k]);
        REQUIRE(alloy_st_tensor_to_f32(ref, t, want) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        double err = 0.0;
        for (int i = 0; i < B * T * V; i++) err = fmax(err, fabs((double)logp[i] - want[i]));
        printf("# %s ensemble of 3: max |log p - reference| = %.2e\n", modes[k], err);
        EXPECT(err < 2e-5, "%s: log-probabilities differ from the reference by %g", modes[k], err);
        alloy_ensemble_destroy(en);
    }
    alloy_safetensors_close(ref);
    // an ensemble of one model is that model's log-softmax
    alloy_ensemble *one;
    REQUIRE(alloy_ensemble_create(&one, ms, NULL, 1, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_ensemble_logprobs(one, tok, B, T, logp) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double err = 0.0;
    for (int r = 0; r < B * T; r++) {
        const float *zr = z[0] + r * V;
        double mx = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++) mx = fmax(mx, zr[v]);
        for (int v = 0; v < V; v++) s += exp(zr[v] - mx);
        for (int v = 0; v < V; v++) err = fmax(err, fabs(logp[r * V + v] - (zr[v] - mx - log(s))));
    }
    EXPECT(err < 1e-5, "an ensemble of one differs from the model's log-softmax by %g", err);
    alloy_ensemble_destroy(one);
    for (int i = 0; i < 3; i++) {
        free(z[i]);
        alloy_model_destroy(ms[i]);
    }
    free(logp);
    free(want);
}

static void test_eval_and_refusals(void) {
    // a dataset of random tokens: two shards, one held out
    const char *dir = harness_tmpdir();
    REQUIRE(harness_random_dataset(dir, V, 2000, 11) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, dir, 0.05) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *a = member("tiny-gpt2", 1), *b = member("tiny-gpt2", 1), *c = member("tiny-gpt2", 9);
    REQUIRE(a && b && c, "models");
    alloy_eval_result single, twice, mixed;
    REQUIRE(alloy_eval_lm(a, ds, ALLOY_SPLIT_VAL, B, T, 0, &single) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *same[2] = {a, b}, *diff[2] = {a, c};
    alloy_ensemble *e;
    REQUIRE(alloy_ensemble_create(&e, same, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_ensemble_eval(e, ds, ALLOY_SPLIT_VAL, B, T, 0, &twice) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_ensemble_destroy(e);
    EXPECT(twice.windows == single.windows && fabs(twice.loss - single.loss) < 1e-5 * single.loss,
           "an ensemble of two copies: %.7f over %lld windows vs the model's %.7f over %lld", twice.loss,
           (long long)twice.windows, single.loss, (long long)single.windows);
    // a mixture is never worse than its members' weighted mean loss (Jensen)
    alloy_eval_result lc;
    REQUIRE(alloy_eval_lm(c, ds, ALLOY_SPLIT_VAL, B, T, 0, &lc) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_ensemble_create(&e, diff, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_ensemble_eval(e, ds, ALLOY_SPLIT_VAL, B, T, 0, &mixed) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    printf("# held out: member losses %.4f %.4f, probability mixture %.4f\n", single.loss, lc.loss, mixed.loss);
    EXPECT(mixed.loss <= 0.5 * (single.loss + lc.loss) + 1e-6, "mixture %.6f above the mean of its members", mixed.loss);
    EXPECT(alloy_ensemble_eval(e, ds, ALLOY_SPLIT_VAL, B + 1, T, 0, &mixed) == ALLOY_STATUS_USAGE, "a batch too big");
    alloy_ensemble_destroy(e);
    // refusals
    alloy_model *v2 = NULL;
    alloy_config cfg;
    alloy_config_preset(&cfg, "tiny-gpt2", V + 1);
    REQUIRE(alloy_model_create(&v2, &cfg, 1, 8) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *bad[2] = {a, v2};
    EXPECT(alloy_ensemble_create(&e, bad, NULL, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_MISMATCH &&
               strstr(alloy_last_error(), "vocabulary"), "different vocabularies: %s", alloy_last_error());
    float neg[2] = {1.0f, -0.5f}, zero[2] = {0.0f, 0.0f};
    EXPECT(alloy_ensemble_create(&e, same, neg, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE, "a negative weight");
    EXPECT(alloy_ensemble_create(&e, same, zero, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE, "all-zero weights");
    EXPECT(alloy_ensemble_create(&e, same, NULL, 0, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE, "no model");
    alloy_model *many[ALLOY_ENSEMBLE_MAX_MEMBERS + 1];
    for (int i = 0; i <= ALLOY_ENSEMBLE_MAX_MEMBERS; i++) many[i] = a;
    EXPECT(alloy_ensemble_create(&e, many, NULL, ALLOY_ENSEMBLE_MAX_MEMBERS + 1, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_USAGE,
           "%d models accepted", ALLOY_ENSEMBLE_MAX_MEMBERS + 1);
    alloy_ensemble_mode m;
    EXPECT(alloy_ensemble_mode_parse("median", &m), "unknown mode parsed");
    alloy_model_destroy(v2);
    alloy_model_destroy(a);
    alloy_model_destroy(b);
    alloy_model_destroy(c);
    alloy_dataset_close(ds);
}

/* log Σᵢ wᵢ softmax(zᵢ)[v] in long double, the naive way (no member left out). */
static long double naive_mix(const float *const *z, const double *w, int n, int K, int v) {
    long double p = 0.0L;
    for (int i = 0; i < n; i++) {
        long double s = 0.0L;
        for (int k = 0; k < K; k++) s += expl((long double)z[i][k]);
        p += w[i] * expl((long double)z[i][v]) / s;
    }
    return logl(p);
}

static void test_mix_kernels(void) {
    enum { K = 5 };
    // token 4: a probability of about e^-200 in both members, far below float's range
    float z0[K] = {0.0f, 1.0f, -2.0f, 3.0f, -200.0f}, z1[K] = {2.0f, -1.0f, 0.5f, 0.0f, -199.0f}, out[K];
    const float *z[2] = {z0, z1};
    double w[2] = {0.25, 0.75}, lw[2] = {log(0.25), log(0.75)};
    ensemble_mix_forward(out, z, lw, 2, K);
    double worst = 0.0;
    for (int v = 0; v < K; v++) {
        double d = fabs(out[v] - (double)naive_mix(z, w, 2, K, v));
        worst = d > worst ? d : worst;
    }
    EXPECT(isfinite(out[4]) && worst < 1e-4, "mixture vs naive: worst %.2e, token 4 %g", worst, (double)out[4]);
    // weight 0: the member (here with a -inf logit) adds nothing
    float zi[K] = {-INFINITY, 0.0f, 0.0f, 0.0f, 0.0f}, one[K];
    const float *zz[2] = {z0, zi};
    double lw0[2] = {0.0, -INFINITY};
    ensemble_mix_forward(out, zz, lw0, 2, K);
    const float *z0p = z0;
    ensemble_mix_forward(one, &z0p, lw0, 1, K);
    EXPECT(!memcmp(out, one, sizeof out), "a member of weight 0 changed the mixture");
    // out may be one of the rows
    float a[K], b[K];
    memcpy(a, z1, sizeof a);
    const float *za[2] = {z0, a};
    ensemble_mix_forward(a, za, lw, 2, K);
    ensemble_mix_forward(b, z, lw, 2, K);
    EXPECT(!memcmp(a, b, sizeof a), "mixing into one of its rows differs");
    double wl[2] = {0.5, 0.0};
    zz[1] = zi;
    ensemble_logits_forward(out, zz, wl, 2, K);
    EXPECT(out[0] == 0.0f && out[3] == 1.5f, "weighted logits: %g %g", (double)out[0], (double)out[3]);
    // at one token: the mixture and the posterior shares, which sum to 1
    double lp[2] = {-3.0, -700.0}, post[2];
    double l = ensemble_mix_target_forward(post, lp, lw, 2);
    long double want = logl(0.25L * expl(-3.0L) + 0.75L * expl(-700.0L));
    EXPECT(fabs(l - (double)want) < 1e-12 && fabs(post[0] + post[1] - 1.0) < 1e-12 && post[1] > 0.0,
           "target mixture %.17g vs %.17Lg, posteriors %g %g", l, want, post[0], post[1]);
    double ninf[2] = {-INFINITY, -INFINITY};
    EXPECT(ensemble_mix_target_forward(post, ninf, lw, 2) == -INFINITY && post[0] == 0.0 && post[1] == 0.0,
           "no probability at all");
}

int main(void) {
    RUN(test_mix_kernels);
    RUN(test_against_reference);
    RUN(test_eval_and_refusals);
    return harness_exit();
}
