/*
 * test_combiner.c — the learned ensemble combiner (alloy/ensemble.h): the gate's gradient
 * against finite differences; gates, mixture log-probabilities, loss and gradient against a
 * PyTorch twin (tests/reference/combiner_ref.py) on two real members of different widths;
 * save/load and the refusal of wrong members or files; and two tiny models, each trained on
 * its own token stream, whose learned gate beats every fixed-weight mixture on held-out data
 * that interleaves both streams.
 */
#include "alloy/ensemble.h"
#include "alloy/io.h"
#include "harness.h"

enum { V = 32 };

static alloy_model *member(const char *preset, int d_model, uint64_t seed, int B, int T) {
    alloy_config cfg;
    alloy_config_preset(&cfg, preset, V);
    cfg.max_seq_len = 64;
    if (d_model) cfg.d_model = d_model;
    alloy_model *m = NULL;
    if (alloy_model_create(&m, &cfg, B, T) == ALLOY_STATUS_OK) alloy_model_init_weights(m, seed);
    return m;
}

static void fill_normal(float *x, size_t n, double sd, alloy_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(sd * alloy_rng_normal(rng));
}

/* A combiner with members of the given widths and a random gate, without models. */
static alloy_combiner *random_combiner(int n, const int *width, alloy_rng *rng) {
    alloy_model *ms[4];
    for (int i = 0; i < n; i++) ms[i] = member("tiny-llama", width[i], 1, 1, 8);
    alloy_combiner *c = NULL;
    alloy_combiner_create(&c, ms, NULL, n);
    for (int i = 0; i < n; i++) alloy_model_destroy(ms[i]);
    if (c) {
        fill_normal(c->weight, (size_t)c->n * c->D, 0.3, rng);
        fill_normal(c->bias, (size_t)c->n, 0.5, rng);
    }
    return c;
}

static void test_gradient_finite_differences(void) {
    alloy_rng rng;
    alloy_rng_seed(&rng, 42);
    int width[3] = {16, 32, 8};
    alloy_combiner *c = random_combiner(3, width, &rng);
    REQUIRE(c && c->D == 56, "combiner: %s", alloy_last_error());
    enum { N = 10 };
    float h0[N * 16], h1[N * 32], h2[N * 8], lp[3 * N], gates[3 * N];
    const float *hidden[3] = {h0, h1, h2};
    fill_normal(h0, N * 16, 1.0, &rng);
    fill_normal(h1, N * 32, 1.0, &rng);
    fill_normal(h2, N * 8, 1.0, &rng);
    for (int i = 0; i < 3 * N; i++) lp[i] = (float)(-0.2 - 3.0 * alloy_rng_uniform(&rng)); // log pᵢ(y) < 0
    float *dw = calloc((size_t)3 * c->D, sizeof(float)), db[3] = {0}, loss;
    alloy_combiner_loss_backward(&loss, dw, db, gates, c, hidden, lp, N, 1.0f);
    double worst = 0.0;
    for (int k = 0; k < 3 * c->D + 3; k += 7) { // every 7th weight and bias
        float *p = k < 3 * c->D ? &c->weight[k] : &c->bias[k - 3 * c->D];
        float g = k < 3 * c->D ? dw[k] : db[k - 3 * c->D], keep = *p, lplus, lminus;
        const float eps = 1e-2f;
        *p = keep + eps;
        alloy_combiner_loss_backward(&lplus, NULL, NULL, gates, c, hidden, lp, N, 1.0f);
        *p = keep - eps;
        alloy_combiner_loss_backward(&lminus, NULL, NULL, gates, c, hidden, lp, N, 1.0f);
        *p = keep;
        double fd = ((double)lplus - lminus) / (2.0 * eps);
        worst = fmax(worst, fabs(fd - g) / (1e-3 + fabs(fd)));
        EXPECT(fabs(fd - g) < 2e-4 + 2e-2 * fabs(fd), "parameter %d: finite difference %g, analytic %g", k, fd, (double)g);
    }
    printf("# gate gradient vs finite differences: worst relative error %.2e\n", worst);
    free(dw);
    alloy_combiner_destroy(c);
}

/* log_softmax of each row of z (N, V) at the targets, into out (N). */
static void target_logp(float *out, const float *z, const int32_t *y, int N) {
    for (int r = 0; r < N; r++) {
        double mx = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++) mx = fmax(mx, z[r * V + v]);
        for (int v = 0; v < V; v++) s += exp(z[r * V + v] - mx);
        out[r] = (float)(z[r * V + y[r]] - mx - log(s));
    }
}

static double max_err(const float *a, const float *b, size_t n, double *scale) {
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    if (scale) *scale = s;
    return e;
}

static void test_against_pytorch(void) {
    enum { B = 2, T = 12, N = B * T };
    alloy_model *ms[2] = {member("tiny-gpt2", 0, 3, B, T), member("tiny-llama", 32, 4, B, T)};
    REQUIRE(ms[0] && ms[1], "models: %s", alloy_last_error());
    alloy_combiner *c;
    REQUIRE(alloy_combiner_create(&c, ms, NULL, 2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_rng rng;
    alloy_rng_seed(&rng, 9);
    fill_normal(c->weight, (size_t)2 * c->D, 0.2, &rng);
    fill_normal(c->bias, 2, 0.5, &rng);
    int32_t tok[N], y[N];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)alloy_rng_below(&rng, V);
        y[i] = (int32_t)alloy_rng_below(&rng, V);
    }
    float *hid[2], *logits[2], lp[2 * N];
    alloy_st_entry e[6];
    char names[4][16];
    for (int i = 0; i < 2; i++) {
        REQUIRE(alloy_model_forward(ms[i], tok, B, T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        int C = ms[i]->config.d_model;
        hid[i] = malloc(sizeof(float) * N * C);
        logits[i] = malloc(sizeof(float) * N * V);
        memcpy(hid[i], alloy_model_hidden(ms[i]), sizeof(float) * N * C);
        memcpy(logits[i], alloy_model_logits(ms[i]), sizeof(float) * N * V);
        target_logp(lp + i * N, logits[i], y, N);
        snprintf(names[2 * i], 16, "hidden.%d", i);
        snprintf(names[2 * i + 1], 16, "logits.%d", i);
        e[2 * i] = (alloy_st_entry){names[2 * i], ALLOY_DTYPE_F32, 2, {N, C}, hid[i]};
        e[2 * i + 1] = (alloy_st_entry){names[2 * i + 1], ALLOY_DTYPE_F32, 2, {N, V}, logits[i]};
    }
    alloy_st_entry more[3] = {{"targets", ALLOY_DTYPE_I32, 1, {N}, y},
                              {"weight", ALLOY_DTYPE_F32, 2, {2, c->D}, c->weight},
                              {"bias", ALLOY_DTYPE_F32, 1, {2}, c->bias}};
    alloy_st_entry all[7] = {e[0], e[1], e[2], e[3], more[0], more[1], more[2]};
    const char *dir = harness_tmpdir();
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/comb-in.safetensors", dir);
    snprintf(out, sizeof out, "%s/comb-out.safetensors", dir);
    REQUIRE(alloy_safetensors_write(in, all, 7, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REFERENCE("torch, numpy", "combiner_ref.py", "'%s' '%s'", in, out);
    alloy_safetensors *ref;
    REQUIRE(alloy_safetensors_open(&ref, out) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float want_g[N * 2], want_lp[N * V], want_loss, *want_dw = malloc(sizeof(float) * 2 * c->D), want_db[2];
    REQUIRE(alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "gates"), want_g) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "logp"), want_lp) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "loss"), &want_loss) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "dweight"), want_dw) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "dbias"), want_db) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    alloy_safetensors_close(ref);
    // the gate and the loss with its gradient, from the members' hidden states and log p(y)
    const float *hidden[2] = {hid[0], hid[1]};
    float gates[N * 2], loss, *dw = calloc((size_t)2 * c->D, sizeof(float)), db[2] = {0};
    alloy_combiner_gate_forward(gates, c, hidden, N);
    double sg, sw, sb;
    double eg = max_err(gates, want_g, N * 2, &sg);
    alloy_combiner_loss_backward(&loss, dw, db, gates, c, hidden, lp, N, 1.0f);
    double ew = max_err(dw, want_dw, (size_t)2 * c->D, &sw), eb = max_err(db, want_db, 2, &sb);
    // the learned ensemble's full log-probabilities, through the models again
    alloy_ensemble *en;
    float *logp = malloc(sizeof(float) * N * V);
    REQUIRE(alloy_ensemble_create_learned(&en, ms, 2, c) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_ensemble_logprobs(en, tok, B, T, logp) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double el = max_err(logp, want_lp, N * V, NULL);
    printf("# vs PyTorch: gates %.1e, log p %.1e, loss %.7f vs %.7f, dW %.1e of %.2g, db %.1e of %.2g\n", eg, el,
           (double)loss, (double)want_loss, ew, sw, eb, sb);
    EXPECT(eg < 1e-6, "gates differ by %g", eg);
    EXPECT(el < 2e-5, "the learned ensemble's log-probabilities differ by %g", el);
    EXPECT(fabs(loss - want_loss) < 1e-5 * fabs(want_loss), "loss %g vs %g", (double)loss, (double)want_loss);
    EXPECT(ew < 1e-5 * sw && eb < 1e-5 * sb, "gradients differ: W %g, b %g", ew, eb);
    alloy_ensemble_destroy(en);
    free(logp);
    free(dw);
    free(want_dw);
    for (int i = 0; i < 2; i++) {
        free(hid[i]);
        free(logits[i]);
        alloy_model_destroy(ms[i]);
    }
    alloy_combiner_destroy(c);
}

static void test_files_and_refusals(void) {
    alloy_model *ms[3] = {member("tiny-gpt2", 0, 1, 1, 8), member("tiny-llama", 32, 2, 1, 8), member("tiny-gpt2", 0, 5, 1, 8)};
    REQUIRE(ms[0] && ms[1] && ms[2], "models");
    const char *paths[2] = {"runs/a", "runs/b"};
    alloy_combiner *c, *back = NULL;
    REQUIRE(alloy_combiner_create(&c, ms, paths, 2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_rng rng;
    alloy_rng_seed(&rng, 3);
    fill_normal(c->weight, (size_t)2 * c->D, 0.1, &rng);
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/comb", harness_tmpdir());
    REQUIRE(alloy_combiner_save(c, dir) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_combiner_load(&back, dir) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(back->n == 2 && back->D == c->D && back->width[1] == 32 && back->fingerprint[1] == c->fingerprint[1] &&
               !memcmp(back->weight, c->weight, sizeof(float) * 2 * c->D) && !strcmp(back->path[1], "runs/b"),
           "the combiner does not survive save and load");
    EXPECT(alloy_combiner_check(back, ms, 2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *swapped[2] = {ms[1], ms[0]}, *other[2] = {ms[2], ms[1]};
    alloy_ensemble *e = NULL;
    EXPECT(alloy_ensemble_create_learned(&e, swapped, 2, back) == ALLOY_STATUS_MISMATCH && strstr(alloy_last_error(), "member 0"),
           "members swapped: %s", alloy_last_error());
    EXPECT(alloy_ensemble_create_learned(&e, other, 2, back) == ALLOY_STATUS_MISMATCH && strstr(alloy_last_error(), "fingerprint"),
           "another model of the same shape: %s", alloy_last_error());
    EXPECT(alloy_ensemble_create_learned(&e, ms, 3, back) == ALLOY_STATUS_MISMATCH, "three members for two");
    alloy_combiner *one = NULL;
    EXPECT(alloy_combiner_create(&one, ms, NULL, 1) == ALLOY_STATUS_USAGE && !one, "one member");
    // damaged files
    snprintf(path, sizeof path, "%s/combiner.json", dir);
    char *text;
    REQUIRE(alloy_file_read_all(path, &text, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *w = strstr(text, "\"d_model\"");
    w = w ? strstr(w + 1, "\"d_model\"") : NULL; // member 1's: 32
    w = w ? strpbrk(w, "0123456789") : NULL;
    REQUIRE(w && w[0] == '3' && w[1] == '2', "d_model in %s", text);
    w[0] = '3', w[1] = '3'; // a width the tensor does not have
    REQUIRE(alloy_write_file_atomic(path, text, strlen(text)) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_combiner *bad = NULL;
    EXPECT(alloy_combiner_load(&bad, dir) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "gate.weight"),
           "a width that disagrees with the tensor: %s", alloy_last_error());
    alloy_write_file_atomic(path, "{\"format\":\"other\"}", 18);
    EXPECT(alloy_combiner_load(&bad, dir) == ALLOY_STATUS_FORMAT, "another format: %s", alloy_last_error());
    EXPECT(alloy_combiner_load(&bad, harness_tmpdir()) == ALLOY_STATUS_IO, "no combiner.json: %s", alloy_last_error());
    EXPECT(!bad, "a failed load left a combiner");
    free(text);
    alloy_combiner_destroy(back);
    alloy_combiner_destroy(c);
    for (int i = 0; i < 3; i++) alloy_model_destroy(ms[i]);
}

/* ---- two specialists ---- */

/* Stream A counts up through tokens 0..15; stream B steps by 5 through 16..31. */
static int32_t stream_next(int which, int32_t x) {
    return which == 0 ? (x + 1) % 16 : 16 + (x - 16 + 5) % 16;
}

/* n tokens of one stream from a random start. */
static void stream(int32_t *out, int n, int which, alloy_rng *rng) {
    out[0] = (int32_t)(which * 16 + alloy_rng_below(rng, 16));
    for (int i = 1; i < n; i++) out[i] = alloy_rng_uniform(rng) < 0.1 ? (int32_t)(which * 16 + alloy_rng_below(rng, 16))
                                                                       : stream_next(which, out[i - 1]);
}

/* Trains a tiny model on its stream alone, briefly. */
static alloy_model *specialist(int which, int d_model) {
    enum { B = 8, T = 16 };
    alloy_model *m = member(which ? "tiny-llama" : "tiny-gpt2", d_model, 11 + which, B, T);
    alloy_optimizer *opt = NULL;
    alloy_adamw_config oc = alloy_adamw_defaults();
    if (!m || alloy_optimizer_create(&opt, m, &oc)) return NULL;
    alloy_rng rng;
    alloy_rng_seed(&rng, 100 + which);
    int32_t buf[B * (T + 1)], in[B * T], tg[B * T];
    for (int step = 0; step < 60; step++) {
        for (int b = 0; b < B; b++) {
            stream(buf + b * (T + 1), T + 1, which, &rng);
            memcpy(in + b * T, buf + b * (T + 1), sizeof(int32_t) * T);
            memcpy(tg + b * T, buf + b * (T + 1) + 1, sizeof(int32_t) * T);
        }
        float loss;
        alloy_model_zero_grad(m);
        if (alloy_model_forward_ex(m, in, B, T, false) || alloy_lm_loss_chunked(m, tg, NULL, B, T, 1.0f, alloy_model_dhidden_buffer(m), &loss) ||
            alloy_model_backward(m, &(alloy_backward_in){.dhidden = alloy_model_dhidden_buffer(m), .aux_scale = 1.0f}) || alloy_optimizer_step(opt, m, 3e-3f, NULL))
            return NULL;
    }
    alloy_optimizer_destroy(opt);
    return m;
}

static void test_learned_beats_fixed(void) {
    enum { B = 8, T = 16 };
    // held-out data: segments of 24 tokens of either stream, in random order
    const char *dir = harness_tmpdir();
    char sub[512];
    snprintf(sub, sizeof sub, "%s/mixed", dir);
    REQUIRE(alloy_mkdir_p(sub) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_rng rng;
    alloy_rng_seed(&rng, 77);
    int32_t tok[2][6000]; // train, then val (its first 2000 tokens)
    for (int split = 0; split < 2; split++)
        for (int i = 0; i < 6000; i += 24) stream(tok[split] + i, 24, (int)alloy_rng_below(&rng, 2), &rng);
    REQUIRE(harness_write_dataset(sub, V, tok[0], 6000, tok[1], 2000) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, sub, 0.05) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *ms[2] = {specialist(0, 0), specialist(1, 32)};
    REQUIRE(ms[0] && ms[1], "training the specialists: %s", alloy_last_error());
    alloy_combiner *c;
    REQUIRE(alloy_combiner_create(&c, ms, NULL, 2) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_combiner_train_options o = alloy_combiner_train_defaults();
    o.steps = 60;
    o.batch = B;
    o.seq = T;
    o.lr = 5e-2;
    o.quiet = true;
    snprintf(o.out_dir, sizeof o.out_dir, "%s/comb-run", harness_tmpdir());
    alloy_combiner_report rep;
    REQUIRE(alloy_combiner_train(c, ms, 2, ds, &o, NULL, &rep) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    // the best fixed weight on a grid, scored the same way
    double best = INFINITY, best_w = 0;
    for (int k = 0; k <= 10; k++) {
        float w[2] = {(float)k / 10.0f, 1.0f - (float)k / 10.0f};
        alloy_ensemble *e;
        alloy_eval_result r;
        REQUIRE(alloy_ensemble_create(&e, ms, w, 2, ALLOY_ENSEMBLE_PROBS) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REQUIRE(alloy_ensemble_eval(e, ds, ALLOY_SPLIT_VAL, B, T, 0, &r) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_ensemble_destroy(e);
        if (r.loss < best) best = r.loss, best_w = w[0];
    }
    alloy_ensemble *le;
    alloy_eval_result lr;
    REQUIRE(alloy_ensemble_create_learned(&le, ms, 2, c) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_ensemble_eval(le, ds, ALLOY_SPLIT_VAL, B, T, 0, &lr) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_ensemble_destroy(le);
    printf("# held out: members %.4f %.4f, uniform %.4f, best fixed (w=%.2f) %.4f, learned %.4f (eval path %.4f)\n",
           rep.member_loss[0], rep.member_loss[1], rep.uniform_loss, best_w, best, rep.learned_loss, lr.loss);
    EXPECT(fabs(lr.loss - rep.learned_loss) < 1e-4 * rep.learned_loss, "the two paths disagree: %.6f vs %.6f", lr.loss,
           rep.learned_loss);
    EXPECT(rep.learned_loss < best - 0.1, "the learned gate (%.4f) does not beat the best fixed mixture (%.4f)",
           rep.learned_loss, best);
    EXPECT(c->training_json && strstr(c->training_json, "val_learned_loss"), "no training record");
    alloy_combiner_destroy(c);
    alloy_model_destroy(ms[0]);
    alloy_model_destroy(ms[1]);
    alloy_dataset_close(ds);
}

int main(void) {
    RUN(test_gradient_finite_differences);
    RUN(test_against_pytorch);
    RUN(test_files_and_refusals);
    RUN(test_learned_beats_fixed);
    return harness_exit();
}
