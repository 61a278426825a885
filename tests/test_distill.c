/*
 * test_distill.c — the distillation losses (forward KL, reverse KL, generalised JSD, mixed with
 * the hard-label cross-entropy) against PyTorch autograd (tests/reference/distill_ref.py) and
 * against finite differences of their own loss; the hidden-state matching term against PyTorch
 * (tests/reference/distill_hidden_ref.py) and finite differences, through a student model too;
 * and a distillation run with hidden-state matching that resumes bitwise exactly.
 */
#include "alloy/distill.h"
#include "alloy/io.h"
#include "alloy/kernels.h"
#include "harness.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { N = 6, V = 37 };

static void make_inputs(float *z, float *teacher, int32_t *y, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < N * V; i++) z[i] = (float)(2.0 * alloy_rng_normal(&rng));
    for (int i = 0; i < N * V; i++) teacher[i] = (float)(3.0 * alloy_rng_normal(&rng));
    for (int i = 0; i < N; i++) y[i] = i == 2 ? -1 : (int32_t)(alloy_rng_u64(&rng) % V);
}

/* log_softmax(teacher / tau) rows. */
static void teacher_logp(float *out, const float *t, double tau) {
    for (int i = 0; i < N; i++) {
        double mx = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++) mx = fmax(mx, t[i * V + v] / tau);
        for (int v = 0; v < V; v++) s += exp(t[i * V + v] / tau - mx);
        for (int v = 0; v < V; v++) out[i * V + v] = (float)(t[i * V + v] / tau - mx - log(s));
    }
}

static void check_case(alloy_divergence kind, float tau, float alpha, float beta) {
    float z[N * V], t[N * V], lq[N * V], losses[N], dz[N * V];
    int32_t y[N];
    make_inputs(z, t, y, 100 + (uint64_t)kind);
    teacher_logp(lq, t, tau);
    REQUIRE(distill_forward_backward(losses, dz, z, lq, y, NULL, N, V, kind, tau, alpha, beta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    // in place (dlogits = logits) and with a row scale: the same gradient, scaled
    float zin[N * V], l2[N], rs[N];
    memcpy(zin, z, sizeof z);
    for (int i = 0; i < N; i++) rs[i] = 0.5f * (float)(i + 1);
    REQUIRE(distill_forward_backward(l2, zin, zin, lq, y, rs, N, V, kind, tau, alpha, beta) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    double ea = 0;
    for (int i = 0; i < N * V; i++) ea = fmax(ea, fabs(zin[i] - rs[i / V] * dz[i]));
    EXPECT(ea < 1e-6 && !memcmp(l2, losses, sizeof l2), "in place with row scales: %g", ea);
    // PyTorch autograd
    float params[4] = {(float)kind, tau, alpha, beta};
    alloy_st_entry e[4] = {{"logits", ALLOY_DTYPE_F32, 2, {N, V}, z},
                           {"teacher", ALLOY_DTYPE_F32, 2, {N, V}, t},
                           {"targets", ALLOY_DTYPE_I32, 1, {N}, y},
                           {"params", ALLOY_DTYPE_F32, 1, {4}, params}};
    const char *dir = harness_tmpdir();
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/in-%d.safetensors", dir, (int)kind);
    snprintf(out, sizeof out, "%s/out-%d.safetensors", dir, (int)kind);
    REQUIRE(alloy_safetensors_write(in, e, 4, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REFERENCE("torch, numpy", "distill_ref.py", "'%s' '%s'", in, out);
    alloy_safetensors *ref;
    REQUIRE(alloy_safetensors_open(&ref, out) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float want_l[N], want_g[N * V];
    REQUIRE(alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "losses"), want_l) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "dlogits"), want_g) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    alloy_safetensors_close(ref);
    double el = 0, eg = 0, sl = 0, sg = 0;
    for (int i = 0; i < N; i++) {
        el = fmax(el, fabs(losses[i] - want_l[i]));
        sl = fmax(sl, fabs(want_l[i]));
    }
    for (int i = 0; i < N * V; i++) {
        eg = fmax(eg, fabs(dz[i] - want_g[i]));
        sg = fmax(sg, fabs(want_g[i]));
    }
    printf("# divergence %d, tau %.1f, alpha %.2f: loss error %.1e of %.3g, gradient error %.1e of %.3g\n", (int)kind,
           (double)tau, (double)alpha, el, sl, eg, sg);
    EXPECT(el <= 1e-5 * sl && eg <= 1e-5 * sg, "divergence %d: loss error %g, gradient error %g", (int)kind, el, eg);
    // finite differences of our own loss, a few entries, in the row of a hard label
    for (int k = 0; k < 6; k++) {
        int idx = 3 * V + (k * 11) % V;
        float zp[N * V], zm[N * V], lp_[N], lm_[N];
        memcpy(zp, z, sizeof z);
        memcpy(zm, z, sizeof z);
        float h = 1e-2f;
        zp[idx] += h;
        zm[idx] -= h;
        distill_forward_backward(lp_, NULL, zp, lq, y, NULL, N, V, kind, tau, alpha, beta);
        distill_forward_backward(lm_, NULL, zm, lq, y, NULL, N, V, kind, tau, alpha, beta);
        double fd = ((double)lp_[3] - lm_[3]) / (2.0 * h);
        EXPECT(fabs(fd - dz[idx]) < 2e-3 + 2e-2 * fabs(fd), "divergence %d: finite difference %g vs %g", (int)kind, fd,
               (double)dz[idx]);
    }
}

static void test_divergences(void) {
    check_case(ALLOY_DIVERGENCE_FORWARD_KL, 2.0f, 0.0f, 0.5f);
    check_case(ALLOY_DIVERGENCE_FORWARD_KL, 1.0f, 0.3f, 0.5f);
    check_case(ALLOY_DIVERGENCE_REVERSE_KL, 1.5f, 0.5f, 0.5f);
    check_case(ALLOY_DIVERGENCE_JSD, 1.0f, 0.0f, 0.5f);
    check_case(ALLOY_DIVERGENCE_JSD, 2.0f, 0.2f, 0.1f);
}

static void test_identical_teacher(void) {
    // the student equal to the teacher: every divergence and its gradient is 0
    float z[N * V], t[N * V], lq[N * V], losses[N], dz[N * V];
    int32_t y[N];
    make_inputs(z, t, y, 5);
    teacher_logp(lq, z, 1.5);
    for (int k = 0; k < 3; k++) {
        distill_forward_backward(losses, dz, z, lq, NULL, NULL, N, V, (alloy_divergence)k, 1.5f, 0.0f, 0.5f);
        double m = 0;
        for (int i = 0; i < N; i++) m = fmax(m, fabs(losses[i]));
        for (int i = 0; i < N * V; i++) m = fmax(m, fabs(dz[i]));
        EXPECT(m < 1e-5, "divergence %d of a distribution from itself: %g", k, m);
    }
}

static void fill_normal(float *x, size_t n, double sd, alloy_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(sd * alloy_rng_normal(rng));
}

static void test_hidden_term(void) {
    enum { HN = 7, CS = 12, CT = 9 };
    alloy_rng rng;
    alloy_rng_seed(&rng, 31);
    float hs[HN * CS], ht[HN * CT], P[CT * CS], err[HN * CT], dhs[HN * CS], dP[CT * CS] = {0}, loss;
    fill_normal(hs, HN * CS, 1.0, &rng);
    fill_normal(ht, HN * CT, 1.0, &rng);
    fill_normal(P, CT * CS, 0.3, &rng);
    float w = 0.7f;
    alloy_distill_hidden_loss(&loss, dhs, dP, err, hs, ht, P, HN, CS, CT, w, 1.0f);
    // PyTorch autograd
    float params[1] = {w};
    alloy_st_entry e[4] = {{"hs", ALLOY_DTYPE_F32, 2, {HN, CS}, hs},
                           {"ht", ALLOY_DTYPE_F32, 2, {HN, CT}, ht},
                           {"proj", ALLOY_DTYPE_F32, 2, {CT, CS}, P},
                           {"params", ALLOY_DTYPE_F32, 1, {1}, params}};
    const char *dir = harness_tmpdir();
    char in[512], out[512];
    snprintf(in, sizeof in, "%s/hidden-in.safetensors", dir);
    snprintf(out, sizeof out, "%s/hidden-out.safetensors", dir);
    REQUIRE(alloy_safetensors_write(in, e, 4, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REFERENCE("torch, numpy", "distill_hidden_ref.py", "'%s' '%s'", in, out);
    alloy_safetensors *ref;
    REQUIRE(alloy_safetensors_open(&ref, out) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float want_l, want_dhs[HN * CS], want_dP[CT * CS];
    REQUIRE(alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "loss"), &want_l) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "dhs"), want_dhs) == ALLOY_STATUS_OK &&
                alloy_st_tensor_to_f32(ref, alloy_safetensors_find(ref, "dproj"), want_dP) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    alloy_safetensors_close(ref);
    double eh = 0, sh = 0, ep = 0, sp = 0;
    for (int i = 0; i < HN * CS; i++) eh = fmax(eh, fabs(dhs[i] - want_dhs[i])), sh = fmax(sh, fabs(want_dhs[i]));
    for (int i = 0; i < CT * CS; i++) ep = fmax(ep, fabs(dP[i] - want_dP[i])), sp = fmax(sp, fabs(want_dP[i]));
    printf("# hidden-state term vs PyTorch: loss %.7g vs %.7g, dh error %.1e of %.3g, dP error %.1e of %.3g\n", (double)loss,
           (double)want_l, eh, sh, ep, sp);
    EXPECT(fabs(loss - want_l) <= 1e-5 * fabs(want_l), "loss %g vs %g", (double)loss, (double)want_l);
    EXPECT(eh <= 1e-5 * sh && ep <= 1e-5 * sp, "gradients: dh %g, dP %g", eh, ep);
    // finite differences of our own loss, on hidden states and projection entries
    for (int k = 0; k < 12; k++) {
        float *x = k % 2 ? &hs[(k * 13) % (HN * CS)] : &P[(k * 17) % (CT * CS)];
        double g = k % 2 ? dhs[(k * 13) % (HN * CS)] : dP[(k * 17) % (CT * CS)];
        float keep = *x, lp_, lm_, h = 1e-2f;
        *x = keep + h;
        alloy_distill_hidden_loss(&lp_, NULL, NULL, err, hs, ht, P, HN, CS, CT, w, 1.0f);
        *x = keep - h;
        alloy_distill_hidden_loss(&lm_, NULL, NULL, err, hs, ht, P, HN, CS, CT, w, 1.0f);
        *x = keep;
        double fd = ((double)lp_ - lm_) / (2.0 * h);
        EXPECT(fabs(fd - g) < 1e-3 + 1e-2 * fabs(fd), "entry %d: finite difference %g vs %g", k, fd, g);
    }
}

/* The term's gradient reaches the student's weights through the backward's dhidden. */
static void test_hidden_through_model(void) {
    enum { B = 2, T = 6, CT = 24, VV = 50 };
    alloy_config cfg;
    alloy_config_preset(&cfg, "tiny-llama", VV);
    cfg.d_model = 32;
    cfg.max_seq_len = 16;
    alloy_model *m;
    REQUIRE(alloy_model_create(&m, &cfg, B, T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_init_weights(m, 5);
    alloy_rng rng;
    alloy_rng_seed(&rng, 8);
    int32_t tok[B * T];
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)alloy_rng_below(&rng, VV);
    float ht[B * T * CT], P[CT * 32], err[B * T * CT], dP[CT * 32] = {0}, loss;
    fill_normal(ht, B * T * CT, 1.0, &rng);
    fill_normal(P, CT * 32, 0.2, &rng);
    REQUIRE(alloy_model_forward_ex(m, tok, B, T, false) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float *dh = alloy_model_dhidden_buffer(m);
    alloy_distill_hidden_loss(&loss, dh, dP, err, alloy_model_hidden(m), ht, P, B * T, 32, CT, 0.5f, 1.0f);
    alloy_model_zero_grad(m);
    REQUIRE(alloy_model_backward(m, &(alloy_backward_in){.dhidden = dh}) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const char *names[3] = {"model.norm.weight", "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"};
    double worst = 0;
    for (int t = 0; t < 3; t++) {
        const alloy_tensor_info *ti = alloy_model_find_tensor(m, names[t]);
        REQUIRE(ti, "tensor %s", names[t]);
        for (int k = 0; k < 4; k++) {
            size_t idx = ti->offset + (t == 2 ? (size_t)tok[k] * 32 + (size_t)k * 7 : (size_t)k * 37 % ti->numel);
            float keep = m->params_memory[idx], lp_, lm_, h = t == 2 ? 3e-3f : 1e-2f; // embeddings are ~0.02
            m->params_memory[idx] = keep + h;
            alloy_model_forward_ex(m, tok, B, T, false);
            alloy_distill_hidden_loss(&lp_, NULL, NULL, err, alloy_model_hidden(m), ht, P, B * T, 32, CT, 0.5f, 1.0f);
            m->params_memory[idx] = keep - h;
            alloy_model_forward_ex(m, tok, B, T, false);
            alloy_distill_hidden_loss(&lm_, NULL, NULL, err, alloy_model_hidden(m), ht, P, B * T, 32, CT, 0.5f, 1.0f);
            m->params_memory[idx] = keep;
            double fd = ((double)lp_ - lm_) / (2.0 * h), g = m->grads_memory[idx];
            worst = fmax(worst, fabs(fd - g) / (1e-2 + fabs(fd)));
            EXPECT(fabs(fd - g) < 5e-3 + 3e-2 * fabs(fd), "%s[%zu]: finite difference %g vs backward %g", names[t],
                   idx - ti->offset, fd, g);
        }
    }
    printf("# hidden-state term through the student: worst relative error vs finite differences %.2e\n", worst);
    alloy_model_destroy(m);
}

static bool same_file(const char *a, const char *b) {
    alloy_file_map x, y;
    if (alloy_file_map_open(&x, a)) return false;
    if (alloy_file_map_open(&y, b)) {
        alloy_file_map_close(&x);
        return false;
    }
    bool same = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
    alloy_file_map_close(&x);
    alloy_file_map_close(&y);
    return same;
}

/* A student (tiny-gpt2, width 64) distilled from a teacher of width 32 with hidden-state
 * matching for 4 steps; a copy of the run's step-2 checkpoint resumed to 4 ends the same, the
 * projection too. */
static void test_hidden_resume_exact(void) {
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    enum { VV = 61 };
    const char *base = harness_tmpdir();
    char data[512], teacher[512], a[512], b[512], p[700], q[700];
    snprintf(data, sizeof data, "%s/hdata", base);
    snprintf(teacher, sizeof teacher, "%s/hteacher", base);
    snprintf(a, sizeof a, "%s/ha", base);
    snprintf(b, sizeof b, "%s/hb", base);
    alloy_mkdir_p(data);
    alloy_rng rng;
    alloy_rng_seed(&rng, 4);
    int32_t tok[2][3000]; // train, then val (its first 600 tokens)
    for (int sp = 0; sp < 2; sp++)
        for (int i = 0; i < 3000; i++)
            tok[sp][i] = (int32_t)(i % 7 == 0 ? alloy_rng_below(&rng, VV) : (uint64_t)((i * 5) % VV));
    REQUIRE(harness_write_dataset(data, VV, tok[0], 3000, tok[1], 600) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_config cfg;
    alloy_config_preset(&cfg, "tiny-llama", VV);
    cfg.d_model = 32;
    cfg.max_seq_len = 32;
    alloy_model *tm;
    REQUIRE(alloy_model_create(&tm, &cfg, 1, 8) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_init_weights(tm, 2);
    REQUIRE(alloy_model_save(tm, teacher) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_destroy(tm);
    alloy_train_options o = alloy_train_defaults();
    snprintf(o.data_dir, sizeof o.data_dir, "%s", data);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", a);
    snprintf(o.preset, sizeof o.preset, "tiny-gpt2");
    o.steps = 4;
    o.batch = 2;
    o.seq = 16;
    o.warmup = 1;
    o.eval_every = 0;
    o.eval_batches = 1;
    o.ckpt_every = 2;
    o.quiet = true;
    alloy_distill_options d = alloy_distill_defaults();
    snprintf(d.teachers[0], sizeof d.teachers[0], "%s", teacher);
    d.n_teachers = 1;
    d.hidden_weight = 0.05f;
    REQUIRE(alloy_distill_run(&o, &d, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    // the projection trained: not its random start any more, and different between steps
    snprintf(p, sizeof p, "%s/checkpoints/step-00000002/distill_projection.safetensors", a);
    snprintf(q, sizeof q, "%s/checkpoints/step-00000004/distill_projection.safetensors", a);
    EXPECT(alloy_path_exists(p) && alloy_path_exists(q) && !same_file(p, q), "the projection is saved and trains");
    // resume a copy of step 2
    static const char *files[] = {"model.safetensors", "config.json", "optimizer.safetensors", "trainer_state.json",
                                  "distill_projection.safetensors"};
    snprintf(p, sizeof p, "%s/checkpoints/step-00000002", b);
    alloy_mkdir_p(p);
    for (int i = 0; i < 5; i++) {
        char *text;
        size_t n;
        snprintf(p, sizeof p, "%s/checkpoints/step-00000002/%s", a, files[i]);
        snprintf(q, sizeof q, "%s/checkpoints/step-00000002/%s", b, files[i]);
        REQUIRE(alloy_file_read_all(p, &text, &n) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        REQUIRE(alloy_write_file_atomic(q, text, n) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        free(text);
    }
    snprintf(p, sizeof p, "%s/latest", b);
    alloy_write_file_atomic(p, "checkpoints/step-00000002\n", 26);
    alloy_train_options ro = alloy_train_defaults();
    char *ck;
    REQUIRE(alloy_train_resume_options(b, &ro, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_distill_options rd;
    REQUIRE(alloy_distill_from_json(&rd, ro.objective_json, b) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(rd.hidden_weight == d.hidden_weight, "hidden weight %g comes back as %g", (double)d.hidden_weight,
           (double)rd.hidden_weight);
    ro.quiet = true;
    REQUIRE(alloy_distill_run(&ro, &rd, ck, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_free(ck);
    for (int i = 0; i < 5; i += 4) {
        snprintf(p, sizeof p, "%s/checkpoints/step-00000004/%s", a, files[i]);
        snprintf(q, sizeof q, "%s/checkpoints/step-00000004/%s", b, files[i]);
        EXPECT(same_file(p, q), "resumed %s differs from the uninterrupted run", files[i]);
    }
    // a checkpoint without its projection is refused on resume
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004/distill_projection.safetensors", b);
    unlink(p);
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004", b);
    ro.steps = 6;
    EXPECT(alloy_distill_run(&ro, &rd, p, NULL) == ALLOY_STATUS_FORMAT && strstr(alloy_last_error(), "projection"),
           "resume without the projection: %s", alloy_last_error());
#ifdef _OPENMP
    omp_set_num_threads(omp_get_num_procs());
#endif
}

int main(void) {
    RUN(test_divergences);
    RUN(test_identical_teacher);
    RUN(test_hidden_term);
    RUN(test_hidden_through_model);
    RUN(test_hidden_resume_exact);
    return harness_exit();
}
