/*
 * test_model.c — the model against its PyTorch twins (tests/reference/twin.py, run with
 * Debian's python3-torch): logits, final hidden states, loss (plain and masked), the gradient
 * of every parameter, and a 10-step AdamW trajectory with clipping, weight decay and the
 * warm-up + cosine schedule — for a small GPT-2, a small Llama with GQA, and a Llama of odd
 * sizes (C = 60, not a multiple of 8; 6 heads over 2 KV heads; F = 100; V = 61).
 *
 * Tolerances, relative to each tensor's own scale (max |a - b| / max |b|, so that entries
 * which are rounding noise around zero do not dominate): logits and hidden states 1e-5, every
 * gradient 1e-4; losses 1e-5 relative; trajectory losses and gradient norms 1e-4 relative.
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <math.h>

typedef struct twin_case {
    const char *name;
    alloy_config cfg;
    int B, T;
} twin_case;

static void perturb_1d(alloy_model *m, uint64_t seed) {
    // norms and biases start at 1 and 0; move them so their gradients are tested for real
    alloy_rng r;
    alloy_rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        if (t->ndim != 1) continue;
        float *p = m->params_memory + t->offset;
        for (size_t k = 0; k < t->numel; k++) p[k] += 0.1f * (float)alloy_rng_normal(&r);
    }
}

static void random_tokens(int32_t *t, size_t n, int V, alloy_rng *r) {
    for (size_t i = 0; i < n; i++) t[i] = (int32_t)alloy_rng_below(r, (uint64_t)V);
}

/* max |a - b| / max |b|: the error relative to the tensor's own scale */
static double scale_rel(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num || isnan(d)) num = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

static const alloy_st_tensor *need(const alloy_safetensors *st, const char *name, size_t numel) {
    const alloy_st_tensor *t = alloy_safetensors_find(st, name);
    if (!t || t->dtype != ALLOY_DTYPE_F32 || t->numel != numel) return NULL;
    return t;
}

static const float *f32(const alloy_st_tensor *t) { return (const float *)t->data; }

enum { STEPS = 10 };

static void run_case(const twin_case *tc) {
    const char *dir = harness_tmpdir();
    char mdir[512], inputs[512], ref[512], cmd[4096];
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    snprintf(inputs, sizeof inputs, "%s/inputs.safetensors", dir);
    snprintf(ref, sizeof ref, "%s/ref.safetensors", dir);
    int B = tc->B, T = tc->T, V = tc->cfg.vocab_size, C = tc->cfg.d_model;
    size_t N = (size_t)B * T;

    alloy_model *m;
    REQUIRE(alloy_model_create(&m, &tc->cfg, B, T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_init_weights(m, 42);
    perturb_1d(m, 7);
    REQUIRE(alloy_model_save(m, mdir) == ALLOY_STATUS_OK, "%s", alloy_last_error());

    // inputs: one batch, a masked variant (zero weights and a negative target), STEPS batches
    alloy_rng r;
    alloy_rng_seed(&r, 99);
    int32_t *tok = malloc(sizeof(int32_t) * N), *tgt = malloc(sizeof(int32_t) * N), *mtgt = malloc(sizeof(int32_t) * N);
    float *mask = malloc(sizeof(float) * N);
    int32_t *ttok = malloc(sizeof(int32_t) * N * STEPS), *ttgt = malloc(sizeof(int32_t) * N * STEPS);
    random_tokens(tok, N, V, &r);
    random_tokens(tgt, N, V, &r);
    // two batches in turn, so that the trajectory descends as it learns them
    random_tokens(ttok, 2 * N, V, &r);
    random_tokens(ttgt, 2 * N, V, &r);
    for (int s = 2; s < STEPS; s++) {
        memcpy(ttok + (size_t)s * N, ttok + (size_t)(s % 2) * N, sizeof(int32_t) * N);
        memcpy(ttgt + (size_t)s * N, ttgt + (size_t)(s % 2) * N, sizeof(int32_t) * N);
    }
    for (size_t i = 0; i < N; i++) {
        mask[i] = i % 4 == 1 ? 0.0f : (i % 4 == 2 ? 0.5f : 1.0f);
        mtgt[i] = i == 3 ? -1 : tgt[i];
    }
    alloy_st_entry e[7] = {
        {"tokens", ALLOY_DTYPE_I32, 2, {B, T}, tok},
        {"targets", ALLOY_DTYPE_I32, 2, {B, T}, tgt},
        {"mask", ALLOY_DTYPE_F32, 2, {B, T}, mask},
        {"mask_targets", ALLOY_DTYPE_I32, 2, {B, T}, mtgt},
        {"traj_tokens", ALLOY_DTYPE_I32, 3, {STEPS, B, T}, ttok},
        {"traj_targets", ALLOY_DTYPE_I32, 3, {STEPS, B, T}, ttgt},
    };
    REQUIRE(alloy_safetensors_write(inputs, e, 6, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());

    // the twin: lr high and clip low enough that clipping acts in most steps
    const double lr = 1e-2, min_lr = 1e-3, wd = 0.1, clip = 0.5;
    const int warmup = 3;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/tests/reference/twin.py --model %s --inputs %s --out %s --lr %g --min-lr %g "
             "--warmup %d --wd %g --clip %g --beta1 0.9 --beta2 0.95 --eps 1e-8",
             harness_root(), mdir, inputs, ref, lr, min_lr, warmup, wd, clip);
    int rc = system(cmd);
    REQUIRE(rc == 0, "%s: the PyTorch twin failed (exit %d); it needs Debian's python3-torch "
                     "(scripts/install-deps.sh --test): %s", tc->name, rc, cmd);
    alloy_safetensors *st;
    REQUIRE(alloy_safetensors_open(&st, ref) == ALLOY_STATUS_OK, "%s", alloy_last_error());

    // logits, hidden states, loss
    REQUIRE(alloy_model_forward(m, tok, B, T) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const alloy_st_tensor *rl = need(st, "logits", N * V), *rh = need(st, "hidden", N * C);
    const alloy_st_tensor *rloss = need(st, "loss", 1), *rml = need(st, "masked_loss", 1);
    REQUIRE(rl && rh && rloss && rml, "reference outputs missing or mis-shaped");
    double e_logits = scale_rel(m->acts.logits, f32(rl), N * V);
    double e_hidden = scale_rel(m->acts.lnf, f32(rh), N * C);
    float loss, mloss;
    REQUIRE(alloy_lm_loss(m, mtgt, mask, B, T, 0.0f, &mloss) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_zero_grad(m);
    REQUIRE(alloy_lm_loss(m, tgt, NULL, B, T, 1.0f, &loss) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(alloy_model_backward(m) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double e_loss = fabs(loss - f32(rloss)[0]) / fabs(f32(rloss)[0]);
    double e_mloss = fabs(mloss - f32(rml)[0]) / fabs(f32(rml)[0]);
    EXPECT(e_logits <= 1e-5, "%s: logits differ by %.3g relative", tc->name, e_logits);
    EXPECT(e_hidden <= 1e-5, "%s: final hidden states differ by %.3g relative", tc->name, e_hidden);
    EXPECT(e_loss <= 1e-5, "%s: loss %.8f vs %.8f", tc->name, (double)loss, (double)f32(rloss)[0]);
    EXPECT(e_mloss <= 1e-5, "%s: masked loss %.8f vs %.8f", tc->name, (double)mloss, (double)f32(rml)[0]);

    // every parameter's gradient
    double e_grad = 0.0;
    const char *worst = "";
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        char name[ALLOY_MAX_NAME + 8];
        snprintf(name, sizeof name, "grad.%s", t->name);
        const alloy_st_tensor *g = need(st, name, t->numel);
        EXPECT(g != NULL, "%s: reference has no %s", tc->name, name);
        if (!g) continue;
        double eg = scale_rel(m->grads_memory + t->offset, f32(g), t->numel);
        EXPECT(eg <= 1e-4, "%s: gradient of %s differs by %.3g of its scale", tc->name, t->name, eg);
        if (eg > e_grad) {
            e_grad = eg;
            worst = t->name;
        }
    }
    // the same hidden states come out when the LM head is skipped
    alloy_model_forward_ex(m, tok, B, T, false);
    double e_hidden2 = scale_rel(m->acts.lnf, f32(rh), N * C);
    EXPECT(e_hidden2 <= 1e-5, "%s: hidden states without the head differ by %.3g", tc->name, e_hidden2);

    // STEPS AdamW steps
    alloy_adamw_config oc = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = (float)wd, .grad_clip = (float)clip};
    alloy_optimizer *opt;
    REQUIRE(alloy_optimizer_create(&opt, m, &oc) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_schedule sch = {.max_lr = lr, .min_lr = min_lr, .warmup_steps = warmup, .total_steps = STEPS};
    const alloy_st_tensor *rtl = need(st, "traj_losses", STEPS), *rtn = need(st, "traj_norms", STEPS);
    REQUIRE(rtl && rtn, "reference trajectory missing");
    double e_traj = 0.0;
    int clipped = 0;
    for (int s = 0; s < STEPS; s++) {
        float l, norm;
        alloy_model_zero_grad(m);
        alloy_model_forward(m, ttok + (size_t)s * N, B, T);
        alloy_lm_loss(m, ttgt + (size_t)s * N, NULL, B, T, 1.0f, &l);
        alloy_model_backward(m);
        REQUIRE(alloy_optimizer_step(opt, m, (float)alloy_schedule_lr(&sch, s), &norm) == ALLOY_STATUS_OK, "step");
        double el = fabs(l - f32(rtl)[s]) / fabs(f32(rtl)[s]);
        EXPECT(el <= 1e-4, "%s: step %d loss %.7f vs %.7f", tc->name, s + 1, (double)l, (double)f32(rtl)[s]);
        EXPECT(harness_close(norm, f32(rtn)[s], 1e-4, 0), "%s: step %d gradient norm %.6f vs %.6f", tc->name, s + 1,
               (double)norm, (double)f32(rtn)[s]);
        if (el > e_traj) e_traj = el;
        clipped += norm > clip;
    }
    EXPECT(clipped >= 3, "%s: clipping acted in only %d steps; the test must exercise it", tc->name, clipped);
    EXPECT(f32(rtl)[STEPS - 1] < f32(rtl)[0], "%s: the reference trajectory does not descend", tc->name);
    printf("# %-10s logits %.2e  hidden %.2e  loss %.2e  masked loss %.2e  worst gradient %.2e (%s)  "
           "10-step losses %.2e  (clipped in %d steps)\n",
           tc->name, e_logits, e_hidden, e_loss, e_mloss, e_grad, worst, e_traj, clipped);
    alloy_optimizer_destroy(opt);
    alloy_safetensors_close(st);
    alloy_model_destroy(m);
    free(tok);
    free(tgt);
    free(mtgt);
    free(mask);
    free(ttok);
    free(ttgt);
}

static twin_case make_case(const char *name, alloy_family fam, int V, int maxT, int L, int H, int KV, int C, int F,
                           bool tie, int B, int T) {
    twin_case tc = {name, {0}, B, T};
    tc.cfg.family = fam;
    tc.cfg.vocab_size = V;
    tc.cfg.max_seq_len = maxT;
    tc.cfg.n_layer = L;
    tc.cfg.n_head = H;
    tc.cfg.n_kv_head = KV;
    tc.cfg.d_model = C;
    tc.cfg.d_ff = F;
    tc.cfg.norm_eps = 1e-5;
    tc.cfg.rope_theta = 10000.0;
    tc.cfg.tie_embeddings = tie;
    return tc;
}

static void test_gpt2(void) {
    twin_case tc = make_case("gpt2", ALLOY_FAMILY_GPT2, 67, 32, 2, 4, 4, 32, 128, true, 3, 16);
    run_case(&tc);
}

static void test_llama_gqa(void) {
    twin_case tc = make_case("llama-gqa", ALLOY_FAMILY_LLAMA, 67, 32, 2, 4, 2, 32, 88, false, 3, 16);
    run_case(&tc);
}

static void test_llama_odd(void) {
    twin_case tc = make_case("llama-odd", ALLOY_FAMILY_LLAMA, 61, 16, 2, 6, 2, 60, 100, false, 2, 11);
    tc.cfg.rope_theta = 500000.0;
    tc.cfg.norm_eps = 1e-6;
    run_case(&tc);
}

static void test_llama_tied(void) {
    twin_case tc = make_case("llama-tied", ALLOY_FAMILY_LLAMA, 50, 16, 1, 2, 1, 16, 40, true, 2, 9);
    run_case(&tc);
}

int main(void) {
    RUN(test_gpt2);
    RUN(test_llama_gqa);
    RUN(test_llama_odd);
    RUN(test_llama_tied);
    return harness_exit();
}
