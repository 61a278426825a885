/*
 * test_train.c — schedule, optimiser guards, gradient accumulation and masks, exact resume of
 * the training loop in-process, out-of-memory paths, and that a small model learns real text.
 */
#include "alloy/alloy.h"
#include "alloy/data.h"
#include "alloy/infer.h"
#include "harness.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static void test_schedule(void) {
    alloy_schedule s = {.max_lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 10, .total_steps = 110};
    EXPECT(harness_close(alloy_schedule_lr(&s, 0), 1e-4, 1e-12, 0), "first warm-up step %g", alloy_schedule_lr(&s, 0));
    EXPECT(harness_close(alloy_schedule_lr(&s, 9), 1e-3, 1e-12, 0), "end of warm-up %g", alloy_schedule_lr(&s, 9));
    EXPECT(harness_close(alloy_schedule_lr(&s, 10), 1e-3, 1e-12, 0), "start of decay %g", alloy_schedule_lr(&s, 10));
    EXPECT(harness_close(alloy_schedule_lr(&s, 109), 1e-4, 1e-12, 0), "last step reaches min_lr: %g",
           alloy_schedule_lr(&s, 109));
    // halfway through the decay: the cosine's midpoint
    double mid = alloy_schedule_lr(&s, 10 + 99 / 2);
    EXPECT(fabs(mid - 0.55e-3) < 1e-5, "midpoint %g", mid);
    int rising = 0;
    for (int k = 11; k < 110; k++) rising += alloy_schedule_lr(&s, k) > alloy_schedule_lr(&s, k - 1);
    EXPECT(rising == 0, "the decay must not rise (%d steps did)", rising);
    EXPECT(alloy_schedule_lr(&s, 500) == s.min_lr, "after the end: min_lr");
}

static alloy_model *tiny(const char *preset, int B, int T, uint64_t seed) {
    alloy_config c;
    ALLOY_ASSERT(alloy_config_preset(&c, preset, 64) == ALLOY_STATUS_OK);
    alloy_model *m;
    ALLOY_ASSERT(alloy_model_create(&m, &c, B, T) == ALLOY_STATUS_OK);
    alloy_model_init_weights(m, seed);
    return m;
}

static void fill_tokens(int32_t *t, int n, uint64_t seed) {
    alloy_rng r;
    alloy_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) t[i] = (int32_t)alloy_rng_below(&r, 64);
}

/* One batch of 4 and two micro-batches of 2 with grad_scale 1/2 give the same gradient. */
static void test_accumulation_and_mask(void) {
    const char *presets[] = {"tiny-gpt2", "tiny-llama"};
    for (int p = 0; p < 2; p++) {
        int T = 16;
        alloy_model *m = tiny(presets[p], 4, T, 3);
        int32_t in[4 * 16], tg[4 * 16];
        fill_tokens(in, 4 * T, 1);
        fill_tokens(tg, 4 * T, 2);
        float loss;
        alloy_model_zero_grad(m);
        REQUIRE(alloy_model_forward(m, in, 4, T) == ALLOY_STATUS_OK, "fwd");
        REQUIRE(alloy_lm_loss(m, tg, NULL, 4, T, 1.0f, alloy_model_logits(m), &loss) == ALLOY_STATUS_OK, "loss");
        REQUIRE(alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f}) == ALLOY_STATUS_OK, "bwd");
        float *full = malloc(sizeof(float) * m->num_params);
        memcpy(full, m->grads_memory, sizeof(float) * m->num_params);
        alloy_model_zero_grad(m);
        float l2 = 0.0f;
        for (int k = 0; k < 2; k++) {
            float l;
            alloy_model_forward(m, in + k * 2 * T, 2, T);
            alloy_lm_loss(m, tg + k * 2 * T, NULL, 2, T, 0.5f, alloy_model_logits(m), &l);
            alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 0.5f});
            l2 += l / 2;
        }
        EXPECT(harness_close(l2, loss, 1e-6, 0), "%s: loss %g vs accumulated %g", presets[p], loss, l2);
        // relative to the gradient's norm: single entries near zero carry only rounding
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < m->num_params; i++) {
            double d = (double)m->grads_memory[i] - full[i];
            num += d * d;
            den += (double)full[i] * full[i];
        }
        EXPECT(sqrt(num / den) < 1e-5, "%s: accumulated gradient differs by %g (relative norm)", presets[p], sqrt(num / den));
        // a mask of zeros on some tokens equals ignoring them with negative targets
        float mask[4 * 16];
        int32_t tg2[4 * 16];
        for (int i = 0; i < 4 * T; i++) {
            mask[i] = (i % 3 == 0) ? 0.0f : 1.0f;
            tg2[i] = mask[i] == 0.0f ? -1 : tg[i];
        }
        float lm, li;
        alloy_model_zero_grad(m);
        alloy_model_forward(m, in, 4, T);
        alloy_lm_loss(m, tg, mask, 4, T, 1.0f, alloy_model_logits(m), &lm);
        alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
        memcpy(full, m->grads_memory, sizeof(float) * m->num_params);
        alloy_model_zero_grad(m);
        alloy_model_forward(m, in, 4, T);
        alloy_lm_loss(m, tg2, NULL, 4, T, 1.0f, alloy_model_logits(m), &li);
        alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
        EXPECT(lm == li, "%s: masked loss %g vs ignored targets %g", presets[p], lm, li);
        EXPECT(memcmp(full, m->grads_memory, sizeof(float) * m->num_params) == 0, "%s: masked gradient differs", presets[p]);
        // bad inputs
        in[5] = 64;
        EXPECT(alloy_model_forward(m, in, 4, T) == ALLOY_STATUS_RANGE && strstr(alloy_last_error(), "token id 64 at position 5"),
               "%s", alloy_last_error());
        in[5] = 1;
        EXPECT(alloy_model_forward(m, in, 5, T) == ALLOY_STATUS_USAGE, "batch larger than the buffers");
        EXPECT(alloy_model_forward(m, in, 4, T + 1) == ALLOY_STATUS_USAGE, "sequence longer than the buffers");
        alloy_model_forward(m, in, 4, T);
        tg[7] = 64;
        EXPECT(alloy_lm_loss(m, tg, NULL, 4, T, 1.0f, alloy_model_logits(m), &loss) == ALLOY_STATUS_RANGE, "target out of range");
        free(full);
        alloy_model_destroy(m);
    }
}

/* Activation recomputation changes memory, not results: three AdamW steps with and without
 * it end bitwise equal, for both families, and the buffers shrink. */
static void test_recompute(void) {
    const char *presets[] = {"tiny-gpt2", "tiny-llama"};
    for (int p = 0; p < 2; p++) {
        int B = 3, T = 24;
        alloy_config c;
        ALLOY_ASSERT(alloy_config_preset(&c, presets[p], 64) == ALLOY_STATUS_OK);
        c.n_layer = 8; // deep enough for the layers' activations to dominate
        alloy_model *m[2];
        alloy_optimizer *opt[2];
        float losses[2][3];
        for (int k = 0; k < 2; k++) {
            alloy_model_options o = {.recompute = k == 1};
            REQUIRE(alloy_model_create_ex(&m[k], &c, B, T, &o) == ALLOY_STATUS_OK, "create: %s", alloy_last_error());
            alloy_model_init_weights(m[k], 7);
            alloy_adamw_config ac = alloy_adamw_defaults();
            REQUIRE(alloy_optimizer_create(&opt[k], m[k], &ac) == ALLOY_STATUS_OK, "optimizer");
            for (int step = 0; step < 3; step++) {
                int32_t in[3 * 24], tg[3 * 24];
                fill_tokens(in, B * T, 10 + step);
                fill_tokens(tg, B * T, 20 + step);
                alloy_model_zero_grad(m[k]);
                alloy_status s = alloy_model_forward_ex(m[k], in, B, T, false);
                if (!s) s = alloy_lm_loss_chunked(m[k], tg, NULL, B, T, 1.0f, alloy_model_dhidden_buffer(m[k]), &losses[k][step]);
                if (!s) s = alloy_model_backward(m[k], &(alloy_backward_in){.dhidden = alloy_model_dhidden_buffer(m[k]), .aux_scale = 1.0f});
                if (!s) s = alloy_optimizer_step(opt[k], m[k], 1e-3f, NULL);
                EXPECT(s == ALLOY_STATUS_OK, "%s step %d: %s", presets[p], step, alloy_last_error());
            }
        }
        EXPECT(!memcmp(losses[0], losses[1], sizeof losses[0]), "%s: losses differ with recompute: %.9g vs %.9g",
               presets[p], losses[0][2], losses[1][2]);
        EXPECT(!memcmp(m[0]->params_memory, m[1]->params_memory, sizeof(float) * m[0]->num_params),
               "%s: parameters differ with recompute", presets[p]);
        size_t kept = alloy_model_activation_bytes(m[1]), all = alloy_model_activation_bytes(m[0]);
        EXPECT(kept * 2 < all, "%s: recompute keeps %zu of %zu activation bytes", presets[p], kept, all);
        for (int k = 0; k < 2; k++) {
            alloy_optimizer_destroy(opt[k]);
            alloy_model_destroy(m[k]);
        }
    }
}

static void test_optimizer_guards(void) {
    alloy_model *m = tiny("tiny-gpt2", 1, 8, 1);
    alloy_adamw_config c = alloy_adamw_defaults();
    alloy_optimizer *o;
    REQUIRE(alloy_optimizer_create(&o, m, &c) == ALLOY_STATUS_OK, "create");
    float *before = malloc(sizeof(float) * m->num_params);
    memcpy(before, m->params_memory, sizeof(float) * m->num_params);
    alloy_model_zero_grad(m);
    m->grads_memory[m->tensors[3].offset] = NAN;
    float norm;
    EXPECT(alloy_optimizer_step(o, m, 1e-3f, &norm) == ALLOY_STATUS_RANGE && strstr(alloy_last_error(), "not finite"),
           "NaN gradient must be refused: %s", alloy_last_error());
    EXPECT(memcmp(before, m->params_memory, sizeof(float) * m->num_params) == 0 && o->step == 0,
           "a refused step must not touch the parameters");
    // clipping: a gradient of norm 10 is scaled to 1, so the first Adam step is unchanged in
    // direction; check the reported norm
    alloy_model_zero_grad(m);
    m->grads_memory[0] = 6.0f;
    m->grads_memory[1] = 8.0f;
    REQUIRE(alloy_optimizer_step(o, m, 1e-3f, &norm) == ALLOY_STATUS_OK, "step");
    EXPECT(harness_close(norm, 10.0, 1e-6, 0), "norm %g", (double)norm);
    EXPECT(harness_close(o->m[0], 0.1 * 6.0 / (10.0 + 1e-6), 1e-5, 0), "clipped first moment %g", (double)o->m[0]);
    alloy_adamw_config bad = c;
    bad.beta1 = 1.0f;
    alloy_optimizer *o2;
    EXPECT(alloy_optimizer_create(&o2, m, &bad) == ALLOY_STATUS_USAGE, "beta1 = 1 must be refused");
    alloy_optimizer_destroy(o);
    alloy_model_destroy(m);
    free(before);
}

/* Every allocation of model creation failing in turn: a clean NOMEM each time, no leak. */
static void test_out_of_memory(void) {
    alloy_config c;
    alloy_config_preset(&c, "tiny-llama", 64);
    int failures = 0, n;
    for (n = 1; n < 40; n++) {
        alloy_model *m = NULL;
        alloy_alloc_fail_after(n);
        alloy_status s = alloy_model_create(&m, &c, 2, 16);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) {
            alloy_model_destroy(m);
            break;
        }
        failures += s == ALLOY_STATUS_NOMEM && m == NULL && strstr(alloy_last_error(), "out of memory");
        if (s != ALLOY_STATUS_NOMEM) EXPECT(0, "allocation %d: status %d (%s)", n, s, alloy_last_error());
    }
    EXPECT(failures >= 5 && failures == n - 1, "%d allocation failures reported cleanly of %d", failures, n - 1);
}

/* A dataset from the first 200 kB of Shakespeare (the shared corpora) for the loop tests; the
 * callers skip first when the file is absent (NEED_DATA). */
static const char *shakespeare_data(void) {
    static char dir[300];
    if (dir[0]) return dir;
    const char *base = harness_tmpdir();
    char src[512];
    harness_data_path(src, sizeof src, "prose/tinyshakespeare.txt");
    alloy_file_map map;
    if (alloy_file_map_open(&map, src) != ALLOY_STATUS_OK) return NULL;
    char txt[400];
    snprintf(txt, sizeof txt, "%s/shakespeare.txt", base);
    FILE *f = fopen(txt, "wb");
    fwrite(map.data, 1, map.size < 200000 ? map.size : 200000, f);
    fclose(f);
    alloy_file_map_close(&map);
    snprintf(dir, sizeof dir, "%s/data", base);
    alloy_tokenizer *tok;
    alloy_tokenizer_create(&tok, "bytes");
    const char *inputs[] = {txt};
    alloy_prepare_source source = {"shakespeare", inputs, 1, 1.0};
    alloy_prepare_options o = alloy_prepare_defaults();
    o.sources = &source;
    o.n_sources = 1;
    o.out_dir = dir;
    o.val_fraction = 0.1;
    o.quiet = true;
    alloy_prepare_report rep;
    alloy_status s = alloy_prepare(&o, tok, &rep);
    alloy_tokenizer_destroy(tok);
    return s ? NULL : dir;
}

static alloy_train_options loop_options(const char *data, const char *out, const char *preset, int64_t steps) {
    alloy_train_options o = alloy_train_defaults();
    snprintf(o.data_dir, sizeof o.data_dir, "%s", data);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    snprintf(o.preset, sizeof o.preset, "%s", preset);
    o.steps = steps;
    o.batch = 4;
    o.seq = 32;
    o.grad_accum = 2;
    o.warmup = 3;
    o.eval_every = 5;
    o.eval_batches = 2;
    o.ckpt_every = 4;
    o.quiet = true;
    return o;
}

static bool same_file(const char *a, const char *b) {
    alloy_file_map x, y;
    if (alloy_file_map_open(&x, a) || alloy_file_map_open(&y, b)) return false;
    bool same = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
    alloy_file_map_close(&x);
    alloy_file_map_close(&y);
    return same;
}

static bool copy_file(const char *from, const char *to) {
    alloy_file_map x;
    if (alloy_file_map_open(&x, from)) return false;
    bool ok = alloy_write_file_atomic(to, x.data, x.size) == ALLOY_STATUS_OK;
    alloy_file_map_close(&x);
    return ok;
}

/* 12 steps straight; then a second run folder that holds only the first run's checkpoint of
 * step 8 is resumed to 12: bitwise equal, for 1 and 2 threads. */
static void test_resume_exact(void) {
    char src[512];
    NEED_DATA(src, "prose/tinyshakespeare.txt");
    const char *data = shakespeare_data();
    REQUIRE(data, "cannot prepare %s: %s", src, alloy_last_error());
    static const char *files[] = {"model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json"};
    for (int threads = 1; threads <= 2; threads++) {
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        const char *base = harness_tmpdir();
        char a[400], b[400], p[600], q[600];
        snprintf(a, sizeof a, "%s/a", base);
        snprintf(b, sizeof b, "%s/b", base);
        alloy_train_options oa = loop_options(data, a, threads == 1 ? "tiny-llama" : "tiny-gpt2", 12);
        REQUIRE(alloy_train_run(&oa, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        snprintf(p, sizeof p, "%s/checkpoints/step-00000008", b);
        alloy_mkdir_p(p);
        for (int i = 0; i < 4; i++) {
            snprintf(p, sizeof p, "%s/checkpoints/step-00000008/%s", a, files[i]);
            snprintf(q, sizeof q, "%s/checkpoints/step-00000008/%s", b, files[i]);
            REQUIRE(copy_file(p, q), "copy %s", p);
        }
        snprintf(p, sizeof p, "%s/latest", b);
        alloy_write_file_atomic(p, "checkpoints/step-00000008\n", 26);
        alloy_train_options oc = alloy_train_defaults();
        char *ck;
        REQUIRE(alloy_train_resume_options(b, &oc, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(strstr(ck, "step-00000008") != NULL, "resumes from %s", ck);
        EXPECT(oc.batch == 4 && oc.grad_accum == 2 && oc.seed == 1337 && oc.steps == 12 && !strcmp(oc.preset, oa.preset),
               "saved options come back");
        snprintf(oc.out_dir, sizeof oc.out_dir, "%s", b); // the copy, not the original run
        oc.quiet = true;
        REQUIRE(alloy_train_run(&oc, ck, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_free(ck);
        for (int i = 0; i < 3; i += 2) {
            snprintf(p, sizeof p, "%s/checkpoints/step-00000012/%s", a, files[i]);
            snprintf(q, sizeof q, "%s/checkpoints/step-00000012/%s", b, files[i]);
            EXPECT(same_file(p, q), "%d thread(s): resumed %s differs from the uninterrupted run", threads, files[i]);
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
}

/* A small model on real text gets well below the unigram entropy within a few hundred steps. */
static void test_learns(void) {
    char src[512];
    NEED_DATA(src, "prose/tinyshakespeare.txt");
    const char *data = shakespeare_data();
    REQUIRE(data, "cannot prepare %s: %s", src, alloy_last_error());
    alloy_dataset *ds;
    REQUIRE(alloy_dataset_open(&ds, data, 0.05) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double h = alloy_dataset_unigram_entropy(ds, 1u << 30);
    alloy_dataset_close(ds);
    const char *base = harness_tmpdir();
    char out[400];
    snprintf(out, sizeof out, "%s/learn", base);
    alloy_train_options o = loop_options(data, out, "tiny-gpt2", 300);
    o.grad_accum = 1;
    o.batch = 8;
    o.seq = 64;
    o.lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup = 20;
    o.eval_every = 0;
    o.eval_batches = 10;
    o.ckpt_every = 0;
    float val = 0;
    REQUIRE(alloy_train_run(&o, NULL, &val) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    printf("# tiny-gpt2, 300 steps on Shakespeare: held-out loss %.3f vs unigram entropy %.3f nats\n", (double)val, h);
    EXPECT(val < h - 0.6, "held-out loss %.3f is not well below the unigram entropy %.3f", (double)val, h);

    // alloy_eval_lm on the trained model: the trainer's own figure (its first 10 batches of 8),
    // and a result that does not depend on the batch size (a remainder batch is masked)
    char *ckpt = NULL;
    REQUIRE(alloy_run_latest(out, &ckpt) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model *m = NULL;
    REQUIRE(alloy_model_load(&m, ckpt, 8, 64) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_dataset_open(&ds, data, 0.05) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_eval_result r80, all[3];
    EXPECT(alloy_eval_lm(m, ds, ALLOY_SPLIT_VAL, 8, 64, 80, &r80) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(r80.windows == 80 && r80.tokens == 80 * 64, "%lld windows", (long long)r80.windows);
    EXPECT(fabs(r80.loss - val) < 1e-5 * val, "eval %.7f vs the trainer's %.7f", r80.loss, (double)val);
    const int Bs[3] = {8, 5, 1};
    for (int i = 0; i < 3; i++)
        EXPECT(alloy_eval_lm(m, ds, ALLOY_SPLIT_VAL, Bs[i], 64, 0, &all[i]) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    printf("# eval of the whole split: %lld windows, loss %.6f (B=8) %.6f (B=5) %.6f (B=1), perplexity %.3f\n",
           (long long)all[0].windows, all[0].loss, all[1].loss, all[2].loss, all[0].perplexity);
    EXPECT(all[0].windows > 80 && all[0].windows % 5 != 0 && all[0].windows == all[1].windows &&
               all[1].windows == all[2].windows, "windows %lld %lld %lld", (long long)all[0].windows,
           (long long)all[1].windows, (long long)all[2].windows);
    for (int i = 1; i < 3; i++)
        EXPECT(fabs(all[i].loss - all[0].loss) < 1e-5 * all[0].loss, "B=%d: %.7f vs %.7f", Bs[i], all[i].loss, all[0].loss);
    EXPECT(fabs(all[0].perplexity - exp(all[0].loss)) < 1e-9 * all[0].perplexity, "perplexity");
    // through the inference engine (its own forward): f32 the same, q8_0 within 1%
    alloy_eval_result fe, qe;
    alloy_engine *eng = NULL;
    REQUIRE(alloy_engine_create(&eng, m, &(alloy_engine_options){.max_ctx = 64, .max_rows = 64}) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    EXPECT(alloy_engine_eval_lm(eng, ds, ALLOY_SPLIT_VAL, 64, 80, &fe) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_engine_destroy(eng);
    REQUIRE(alloy_engine_create(&eng, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_Q8_0, .max_ctx = 64, .max_rows = 64}) ==
                ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_engine_eval_lm(eng, ds, ALLOY_SPLIT_VAL, 64, 80, &qe) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_engine_destroy(eng);
    printf("# the same 80 windows through the engine: f32 %.6f, q8_0 %.6f (training forward %.6f)\n", fe.loss, qe.loss,
           r80.loss);
    EXPECT(fabs(fe.loss - r80.loss) < 1e-5 * r80.loss, "engine f32 %.7f vs %.7f", fe.loss, r80.loss);
    EXPECT(fabs(qe.perplexity / fe.perplexity - 1.0) < 0.01, "q8_0 perplexity %.4f vs f32 %.4f", qe.perplexity, fe.perplexity);
    alloy_eval_result bad;
    EXPECT(alloy_eval_lm(m, ds, ALLOY_SPLIT_VAL, 9, 64, 0, &bad) == ALLOY_STATUS_USAGE, "B beyond the buffers accepted");
    alloy_dataset_close(ds);
    alloy_model_destroy(m);
    alloy_free(ckpt);
}

int main(void) {
    RUN(test_schedule);
    RUN(test_accumulation_and_mask);
    RUN(test_recompute);
    RUN(test_optimizer_guards);
    RUN(test_out_of_memory);
    RUN(test_resume_exact);
    RUN(test_learns);
    return harness_exit();
}
