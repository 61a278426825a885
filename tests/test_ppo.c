/*
 * test_ppo.c — RLHF with PPO (alloy/align.h, src/train/ppo.c, src/align/ppo_run.c):
 *
 *   - GAE against its definition A_t = Σ_l (γλ)^l δ_{t+l} summed directly, and with γ = λ = 1
 *     the reward-to-go minus the value; whitening (mean 0, unbiased variance 1, or the mean kept);
 *     per-token rewards for each KL penalty; the adaptive KL controller's updates (clipped error,
 *     horizon) and the fixed one;
 *   - the whole objective on fixed inputs — rewards, GAE, whitening, returns, the clipped
 *     surrogate and clipped value losses, and their gradients per token w.r.t. the new
 *     log-probabilities and values — against tests/reference/ppo_ref.py (PyTorch, float64,
 *     written after TRL's PPOTrainer), to 1e-4, with ratios and values clipped on both sides;
 *   - alloy_ppo_step's parameter gradients (LM head, value head, backbone) against central
 *     finite differences of its loss;
 *   - a PPO run (sft -> reward -> ppo on tiny models) is reproducible: the same seed gives the
 *     same run, and a run resumed from its step-2 checkpoint ends bitwise equal to the
 *     uninterrupted one (one thread).
 * The reference needs PYTHON (harness.h) with torch and numpy; without them that case skips.
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <math.h>
#include <string.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TOL 1e-4
#define ALLOWANCE 5e-6

/* max_i |a_i - b_i| / (ALLOWANCE·max|b|/rtol + |b_i|): <= rtol passes (as test_align.c). */
static double compare(const float *a, const float *b, size_t n, double rtol) {
    double bmax = 0.0;
    for (size_t i = 0; i < n; i++) bmax = fmax(bmax, fabs((double)b[i]));
    if (bmax == 0.0) bmax = 1.0;
    return harness_max_rel(a, b, n, ALLOWANCE * bmax / rtol);
}

/* Ragged test sequences: lengths 5, 1, 8, 3, 12. */
static const int64_t offs[6] = {0, 5, 6, 14, 17, 29};
#define NSEQ 5
#define NTOK 29

static void fill(alloy_rng *g, float *x, int n, double mean, double sd) {
    for (int i = 0; i < n; i++) x[i] = (float)(mean + sd * alloy_rng_normal(g));
}

static void test_gae(void) {
    alloy_rng g;
    alloy_rng_seed(&g, 5);
    float r[NTOK], v[NTOK], adv[NTOK], ret[NTOK];
    fill(&g, r, NTOK, 0.0, 1.0);
    fill(&g, v, NTOK, 0.3, 0.5);
    const double gl[3][2] = {{1.0, 0.95}, {0.9, 0.8}, {1.0, 1.0}};
    for (int c = 0; c < 3; c++) {
        double gamma = gl[c][0], lam = gl[c][1], worst = 0;
        alloy_gae(r, v, offs, NSEQ, gamma, lam, adv, ret);
        for (int i = 0; i < NSEQ; i++)
            for (int64_t t = offs[i]; t < offs[i + 1]; t++) {
                double a = 0, w = 1, rtg = 0, disc = 1;
                for (int64_t u = t; u < offs[i + 1]; u++, w *= gamma * lam, disc *= gamma) {
                    double next = u + 1 < offs[i + 1] ? v[u + 1] : 0.0;
                    a += w * (r[u] + gamma * next - v[u]);
                    rtg += disc * r[u];
                }
                worst = fmax(worst, fabs(a - adv[t]) + fabs(a + v[t] - ret[t]));
                if (gamma == 1.0 && lam == 1.0) worst = fmax(worst, fabs(rtg - ret[t]));
            }
        EXPECT(worst < 1e-5, "gamma %g lambda %g: GAE off by %.3g", gamma, lam, worst);
    }
    // a one-token sequence: A = r - V, return = r
    float r1 = 2.0f, v1 = 0.5f, a1, t1;
    int64_t o1[2] = {0, 1};
    alloy_gae(&r1, &v1, o1, 1, 1.0, 0.95, &a1, &t1);
    EXPECT(a1 == 1.5f && t1 == 2.0f, "one token: A %g, return %g", a1, t1);
}

static void test_whiten(void) {
    alloy_rng g;
    alloy_rng_seed(&g, 6);
    float x[NTOK], y[NTOK];
    fill(&g, x, NTOK, 3.0, 2.0);
    memcpy(y, x, sizeof x);
    double m0 = 0;
    for (int i = 0; i < NTOK; i++) m0 += x[i];
    m0 /= NTOK;
    alloy_whiten(x, NTOK, true);
    alloy_whiten(y, NTOK, false);
    double m = 0, v = 0, my = 0;
    for (int i = 0; i < NTOK; i++) m += x[i], my += y[i];
    m /= NTOK, my /= NTOK;
    for (int i = 0; i < NTOK; i++) v += (x[i] - m) * (x[i] - m);
    v /= NTOK - 1;
    EXPECT(fabs(m) < 1e-6 && fabs(v - 1.0) < 1e-5, "whitened: mean %g, unbiased variance %g", m, v);
    EXPECT(fabs(my - m0) < 1e-5, "shift_mean false keeps the mean: %g vs %g", my, m0);
}

static void test_rewards(void) {
    float lp[4] = {-1.0f, -2.0f, -0.5f, -3.0f}, ref[4] = {-1.5f, -1.0f, -0.5f, -2.0f}, sc[2] = {1.0f, -2.0f};
    int64_t off[3] = {0, 3, 4};
    float rw[4], kl[4];
    alloy_ppo_config c = alloy_ppo_config_default();
    alloy_ppo_rewards(&c, 0.1, lp, ref, sc, off, 2, rw, kl);
    EXPECT(fabsf(rw[0] + 0.05f) < 1e-7f && fabsf(rw[1] - 0.1f) < 1e-7f && fabsf(rw[2] - 1.0f) < 1e-7f &&
               fabsf(rw[3] - (0.1f - 2.0f)) < 1e-6f && kl[1] == -1.0f,
           "kl penalty: %g %g %g %g", rw[0], rw[1], rw[2], rw[3]);
    c.kl_penalty = ALLOY_KL_PENALTY_ABS;
    alloy_ppo_rewards(&c, 0.1, lp, ref, sc, off, 2, rw, NULL);
    EXPECT(fabsf(rw[1] + 0.1f) < 1e-7f, "abs penalty: %g", rw[1]);
    c.kl_penalty = ALLOY_KL_PENALTY_MSE;
    alloy_ppo_rewards(&c, 0.1, lp, ref, sc, off, 2, rw, NULL);
    EXPECT(fabsf(rw[1] + 0.05f) < 1e-7f && fabsf(rw[0] + 0.0125f) < 1e-7f, "mse penalty: %g %g", rw[0], rw[1]);
    alloy_kl_penalty k;
    EXPECT(alloy_kl_penalty_parse("abs", &k) == ALLOY_STATUS_OK && k == ALLOY_KL_PENALTY_ABS &&
               alloy_kl_penalty_parse("full", &k) == ALLOY_STATUS_USAGE && !strcmp(alloy_kl_penalty_name(ALLOY_KL_PENALTY_MSE), "mse"),
           "kl penalty names");
}

static void test_kl_controller(void) {
    alloy_kl_controller k = {.value = 0.2, .target = 6.0, .horizon = 10000.0, .adaptive = true};
    alloy_kl_controller_update(&k, 12.0, 256); // error clipped to +0.2
    EXPECT(fabs(k.value - 0.2 * (1.0 + 0.2 * 256 / 10000.0)) < 1e-15, "above target: %.17g", k.value);
    double before = k.value;
    alloy_kl_controller_update(&k, 5.4, 100); // error -0.1
    EXPECT(fabs(k.value - before * (1.0 - 0.1 * 100 / 10000.0)) < 1e-15, "below target: %.17g", k.value);
    before = k.value;
    alloy_kl_controller_update(&k, 0.0, 1000); // clipped to -0.2
    EXPECT(fabs(k.value - before * (1.0 - 0.2 * 0.1)) < 1e-15, "far below: %.17g", k.value);
    before = k.value;
    alloy_kl_controller_update(&k, 6.0, 1000);
    EXPECT(k.value == before, "at target: unchanged");
    // 100 updates at twice the target, 128 rollouts each: (1 + 0.2·128/1e4)^100
    k = (alloy_kl_controller){.value = 0.2, .target = 6.0, .horizon = 10000.0, .adaptive = true};
    for (int i = 0; i < 100; i++) alloy_kl_controller_update(&k, 12.0, 128);
    EXPECT(fabs(k.value - 0.2 * pow(1.0 + 0.2 * 128 / 1e4, 100)) < 1e-12, "compounded: %.17g", k.value);
    alloy_kl_controller f = {.value = 0.05, .target = 6.0, .horizon = 10000.0, .adaptive = false};
    alloy_kl_controller_update(&f, 100.0, 128);
    EXPECT(f.value == 0.05, "fixed: %g", f.value);
}

/* ---- the objective against PyTorch ---- */

typedef struct loss_case {
    const char *label;
    double beta, gamma, lam;
    alloy_kl_penalty pen;
    bool whiten;
    float logp[NTOK], old_logp[NTOK], ref_logp[NTOK], values[NTOK], old_values[NTOK], scores[NSEQ];
    char in[400], out[400];
} loss_case;

static bool write_case(loss_case *c, const char *dir, int i, uint64_t seed) {
    alloy_rng g;
    alloy_rng_seed(&g, seed);
    fill(&g, c->old_logp, NTOK, -2.0, 1.0);
    for (int t = 0; t < NTOK; t++) {
        c->ref_logp[t] = c->old_logp[t] + (float)(0.3 * alloy_rng_normal(&g));
        c->logp[t] = c->old_logp[t] + (float)(0.25 * alloy_rng_normal(&g)); // ratios on both sides of the clip
    }
    fill(&g, c->old_values, NTOK, 0.2, 0.6);
    for (int t = 0; t < NTOK; t++) c->values[t] = c->old_values[t] + (float)(0.3 * alloy_rng_normal(&g));
    fill(&g, c->scores, NSEQ, 0.0, 1.5);
    snprintf(c->in, sizeof c->in, "%s/case-%d.safetensors", dir, i);
    snprintf(c->out, sizeof c->out, "%s/out-%d.safetensors", dir, i);
    alloy_st_entry e[7] = {
        {.name = "logp", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NTOK}, .data = c->logp},
        {.name = "old_logp", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NTOK}, .data = c->old_logp},
        {.name = "ref_logp", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NTOK}, .data = c->ref_logp},
        {.name = "values", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NTOK}, .data = c->values},
        {.name = "old_values", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NTOK}, .data = c->old_values},
        {.name = "scores", .dtype = ALLOY_DTYPE_F32, .ndim = 1, .shape = {NSEQ}, .data = c->scores},
        {.name = "off", .dtype = ALLOY_DTYPE_I64, .ndim = 1, .shape = {NSEQ + 1}, .data = (void *)offs},
    };
    char b[32], gm[32], lm[32];
    snprintf(b, sizeof b, "%.17g", c->beta);
    snprintf(gm, sizeof gm, "%.17g", c->gamma);
    snprintf(lm, sizeof lm, "%.17g", c->lam);
    const char *meta[] = {"beta", b, "gamma", gm, "lam", lm, "cliprange", "0.2", "cliprange_value", "0.2", "vf_coef", "0.1",
                          "kl_penalty", alloy_kl_penalty_name(c->pen), "whiten", c->whiten ? "true" : "false", NULL};
    return alloy_safetensors_write(c->in, e, 7, meta) == ALLOY_STATUS_OK;
}

static const float *ref_tensor(const alloy_safetensors *st, const char *name, size_t n, float *buf) {
    const alloy_st_tensor *t = alloy_safetensors_find(st, name);
    if (!t || t->numel != n || alloy_st_tensor_to_f32(st, t, buf)) return NULL;
    return buf;
}

static void check_loss_case(loss_case *c) {
    alloy_safetensors *ref = NULL;
    REQUIRE(alloy_safetensors_open(&ref, c->out) == ALLOY_STATUS_OK, "%s: %s", c->label, alloy_last_error());
    alloy_ppo_config cfg = alloy_ppo_config_default();
    cfg.gamma = c->gamma, cfg.lam = c->lam, cfg.kl_penalty = c->pen, cfg.whiten = c->whiten;
    float rw[NTOK], adv[NTOK], ret[NTOK], dlp[NTOK], dv[NTOK], buf[NTOK];
    alloy_ppo_rewards(&cfg, c->beta, c->old_logp, c->ref_logp, c->scores, offs, NSEQ, rw, NULL);
    alloy_gae(rw, c->old_values, offs, NSEQ, cfg.gamma, cfg.lam, adv, ret);
    if (cfg.whiten) alloy_whiten(adv, NTOK, true);
    alloy_ppo_info info;
    double loss = alloy_ppo_loss(&cfg, c->logp, c->old_logp, c->values, c->old_values, adv, ret, NTOK, 1.0f, dlp, dv, &info);
    struct {
        const char *name;
        const float *ours;
        size_t n;
    } parts[5] = {{"rewards", rw, NTOK}, {"advantages", adv, NTOK}, {"returns", ret, NTOK}, {"dlogp", dlp, NTOK}, {"dvalues", dv, NTOK}};
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        const float *r = ref_tensor(ref, parts[i].name, parts[i].n, buf);
        double e = r ? compare(parts[i].ours, r, parts[i].n, TOL) : INFINITY;
        EXPECT(e <= TOL, "%s: %s differ (%.3g)", c->label, parts[i].name, e);
        worst = fmax(worst, e);
    }
    double scal[4] = {loss, info.pg_loss, info.vf_loss, info.approx_kl}, sworst = 0;
    const char *snames[4] = {"loss", "pg_loss", "vf_loss", "approx_kl"};
    for (int i = 0; i < 4; i++) {
        const float *r = ref_tensor(ref, snames[i], 1, buf);
        double e = r ? fabs(scal[i] - r[0]) / (1e-6 + fabs(r[0])) : INFINITY;
        EXPECT(e <= TOL, "%s: %s %.9g vs reference %.9g", c->label, snames[i], scal[i], r ? r[0] : NAN);
        sworst = fmax(sworst, e);
    }
    const float *cf = ref_tensor(ref, "clipfrac", 1, buf);
    EXPECT(cf && fabs(info.clipfrac - cf[0]) < 1e-6, "%s: clip fraction %g vs %g", c->label, info.clipfrac, cf ? cf[0] : NAN);
    const float *vcf = ref_tensor(ref, "vf_clipfrac", 1, buf);
    EXPECT(vcf && fabs(info.vf_clipfrac - vcf[0]) < 1e-6, "%s: value clip fraction %g vs %g", c->label, info.vf_clipfrac,
           vcf ? vcf[0] : NAN);
    EXPECT(info.clipfrac > 0.05 && info.vf_clipfrac > 0.05, "%s: the case should clip (%g, %g)", c->label, info.clipfrac,
           info.vf_clipfrac);
    printf("# %s: loss %.6f (error %.2e), per-token tensors %.2e, clip fractions %.3f / %.3f\n", c->label, loss, sworst, worst,
           info.clipfrac, info.vf_clipfrac);
    alloy_safetensors_close(ref);
}

static void test_loss_vs_pytorch(void) {
    NEED_PYTHON("torch, numpy");
    char dir[300], args[4096] = "";
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    static loss_case cases[3] = {
        {.label = "kl penalty, gamma 1, lambda 0.95, whitened (TRL's defaults)", .beta = 0.2, .gamma = 1.0, .lam = 0.95,
         .pen = ALLOY_KL_PENALTY_KL, .whiten = true},
        {.label = "abs penalty, gamma 0.9, lambda 0.8, whitened", .beta = 0.5, .gamma = 0.9, .lam = 0.8,
         .pen = ALLOY_KL_PENALTY_ABS, .whiten = true},
        {.label = "mse penalty, gamma 1, lambda 1, not whitened", .beta = 0.05, .gamma = 1.0, .lam = 1.0,
         .pen = ALLOY_KL_PENALTY_MSE, .whiten = false},
    };
    size_t k = 0;
    for (int i = 0; i < 3; i++) {
        REQUIRE(write_case(&cases[i], dir, i, 40 + (uint64_t)i), "%s", alloy_last_error());
        k += (size_t)snprintf(args + k, sizeof args - k, " '%s' '%s'", cases[i].in, cases[i].out);
    }
    int rc = harness_reference("torch, numpy", "ppo_ref.py", "%s", args);
    REQUIRE(rc == 0, "ppo_ref.py failed with status %d (its message is above)", rc);
    for (int i = 0; i < 3; i++) check_loss_case(&cases[i]);
}

/* ---- alloy_ppo_step's parameter gradients against finite differences ---- */

static void test_step_finite_differences(void) {
    alloy_config cfg = {.family = ALLOY_FAMILY_LLAMA, .vocab_size = 40, .max_seq_len = 16, .n_layer = 1, .n_head = 2,
                        .n_kv_head = 1, .d_model = 16, .d_ff = 32, .norm_eps = 1e-5, .rope_theta = 10000.0};
    alloy_model *m = NULL;
    REQUIRE(alloy_model_create(&m, &cfg, 3, 10) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_init_weights(m, 3);
    for (size_t i = 0; i < m->num_params; i++) m->params_memory[i] *= 2.0f; // logits of order 1
    alloy_reward_model *pv = NULL;
    REQUIRE(alloy_ppo_value_model_create(&pv, m) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_rng g;
    alloy_rng_seed(&g, 9);
    for (size_t c = 0; c < pv->head_tensors[0].numel; c++) pv->head[c] = 0.5f * (float)alloy_rng_normal(&g);
    pv->head[pv->head_tensors[1].offset] = 0.1f;
    // three sequences: prompt then response (targets on the response)
    alloy_align_batch b = {0};
    int B = 3, T = 10, lens[3] = {10, 7, 9}, plen[3] = {3, 4, 2};
    b.B = B, b.T = T, b.n_examples = B;
    b.tokens = calloc((size_t)(B * T), sizeof(int32_t));
    b.targets = calloc((size_t)(B * T), sizeof(int32_t));
    b.last = calloc((size_t)B, sizeof(int64_t));
    b.len = calloc((size_t)B, sizeof(int32_t));
    b.ex_row = calloc((size_t)B + 1, sizeof(int));
    int n = 0;
    for (int r = 0; r < B; r++) {
        for (int t = 0; t < T; t++) b.tokens[r * T + t] = t < lens[r] ? (int32_t)alloy_rng_below(&g, 40) : 0;
        for (int t = 0; t < T; t++) {
            bool on = t >= plen[r] - 1 && t < lens[r] - 1;
            b.targets[r * T + t] = on ? b.tokens[r * T + t + 1] : -1;
            n += on;
        }
        b.last[r] = (int64_t)r * T + lens[r] - 1;
        b.len[r] = lens[r];
        b.ex_row[r] = r;
    }
    b.ex_row[B] = B;
    float *lp = malloc(sizeof(float) * (size_t)n), *v = malloc(sizeof(float) * (size_t)n);
    float *olp = malloc(sizeof(float) * (size_t)n), *ov = malloc(sizeof(float) * (size_t)n);
    float *adv = malloc(sizeof(float) * (size_t)n), *ret = malloc(sizeof(float) * (size_t)n);
    REQUIRE(alloy_ppo_logps_values(NULL, pv, &b, lp, v) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    for (int i = 0; i < n; i++) { // inside the clip ranges, so the loss is smooth where it is probed
        olp[i] = lp[i] + 0.05f * (float)alloy_rng_normal(&g);
        ov[i] = v[i] + 0.05f * (float)alloy_rng_normal(&g);
        adv[i] = (float)alloy_rng_normal(&g);
        ret[i] = v[i] + (float)alloy_rng_normal(&g);
    }
    alloy_ppo_config c = alloy_ppo_config_default();
    c.vf_coef = 0.5; // a value gradient of the size of the policy's
    alloy_ppo_info info;
    alloy_reward_model_zero_grad(pv);
    REQUIRE(alloy_ppo_step(pv, &b, &c, olp, ov, adv, ret, 1.0f, &info) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(info.clipfrac == 0 && info.vf_clipfrac == 0 && info.tokens == n, "probe point inside the clip ranges");
    // probes: every tensor of the backbone at a few coordinates, and the value head
    double worst = 0;
    int probes = 0;
    for (int ti = 0; ti < m->n_tensors + 2; ti++) {
        bool head = ti >= m->n_tensors;
        const alloy_tensor_info *t = head ? &pv->head_tensors[ti - m->n_tensors] : &m->tensors[ti];
        float *p = (head ? pv->head : m->params_memory) + t->offset, *gr = (head ? pv->head_grad : m->grads_memory) + t->offset;
        for (int k = 0; k < 3; k++) {
            size_t j = (size_t)alloy_rng_below(&g, t->numel);
            float keep = p[j], h = 2e-3f;
            alloy_ppo_info a, z;
            p[j] = keep + h;
            alloy_ppo_step(pv, &b, &c, olp, ov, adv, ret, 0.0f, &a);
            p[j] = keep - h;
            alloy_ppo_step(pv, &b, &c, olp, ov, adv, ret, 0.0f, &z);
            p[j] = keep;
            double fd = (a.loss - z.loss) / (2.0 * h), an = gr[j];
            double e = fabs(fd - an) / (fabs(an) + 2e-3);
            if (e > worst) worst = e;
            EXPECT(e < 3e-2, "%s[%zu]: analytic %.6g, finite difference %.6g", t->name, j, an, fd);
            probes++;
        }
    }
    printf("# alloy_ppo_step: %d parameter probes, worst relative difference to central differences %.2e\n", probes, worst);
    free(lp), free(v), free(olp), free(ov), free(adv), free(ret);
    alloy_align_batch_free(&b);
    alloy_reward_model_destroy(pv);
}

/* ---- the run ---- */

static bool write_text(const char *path, const char *text) {
    return alloy_write_file_atomic(path, text, strlen(text)) == ALLOY_STATUS_OK;
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

static const char sft_data[] =
    "{\"prompt\": \"Capital of France?\", \"response\": \"Paris.\"}\n"
    "{\"prompt\": \"Capital of Italy?\", \"response\": \"Rome.\"}\n"
    "{\"prompt\": \"Capital of Spain?\", \"response\": \"Madrid.\"}\n"
    "{\"prompt\": \"Capital of Peru?\", \"response\": \"Lima.\"}\n";
static const char pref_data[] =
    "{\"prompt\": \"Capital of France?\", \"chosen\": \"Paris.\", \"rejected\": \"Go away.\"}\n"
    "{\"prompt\": \"Capital of Italy?\", \"chosen\": \"Rome.\", \"rejected\": \"No idea.\"}\n"
    "{\"prompt\": \"Capital of Spain?\", \"chosen\": \"Madrid.\", \"rejected\": \"Who cares?\"}\n"
    "{\"prompt\": \"Capital of Peru?\", \"chosen\": \"Lima.\", \"rejected\": \"Go away.\"}\n";
static const char prompt_data[] =
    "{\"prompt\": \"Capital of France?\"}\n{\"prompt\": \"Capital of Italy?\"}\n"
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"Capital of Spain?\"}]}\n{\"prompt\": \"Capital of Peru?\"}\n"
    "{\"prompt\": \"Capital of Chile?\"}\n";

/* A base model (byte tokenizer), an SFT model and a reward model from it, in dir. */
static bool make_models(const char *dir) {
    char base[400], p[400], q[400], out[400];
    snprintf(base, sizeof base, "%s/base", dir);
    alloy_config cfg = {.family = ALLOY_FAMILY_GPT2, .vocab_size = 256, .max_seq_len = 64, .n_layer = 2, .n_head = 2,
                        .n_kv_head = 2, .d_model = 32, .d_ff = 64, .norm_eps = 1e-5, .tie_embeddings = true};
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "bytes");
    alloy_model *m = NULL;
    if (alloy_model_create(&m, &cfg, 1, 8)) return false;
    alloy_model_init_weights(m, 11);
    bool ok = alloy_model_save(m, base) == ALLOY_STATUS_OK;
    alloy_model_destroy(m);
    snprintf(p, sizeof p, "%s/sft.jsonl", dir);
    snprintf(q, sizeof q, "%s/prefs.jsonl", dir);
    ok = ok && write_text(p, sft_data) && write_text(q, pref_data);
    alloy_align_options o = alloy_align_defaults(ALLOY_ALIGN_SFT);
    snprintf(o.model_dir, sizeof o.model_dir, "%s", base);
    snprintf(o.data_path, sizeof o.data_path, "%s", p);
    snprintf(out, sizeof out, "%s/sft", dir);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.steps = 4, o.batch = 2, o.lr = 3e-3, o.val_fraction = 0, o.eval_every = 0, o.quiet = true;
    ok = ok && alloy_align_run(&o, NULL, NULL) == ALLOY_STATUS_OK;
    o = alloy_align_defaults(ALLOY_ALIGN_REWARD);
    snprintf(o.model_dir, sizeof o.model_dir, "%s", out);
    snprintf(o.data_path, sizeof o.data_path, "%s", q);
    snprintf(o.out_dir, sizeof o.out_dir, "%s/rm", dir);
    o.steps = 4, o.batch = 2, o.lr = 3e-3, o.val_fraction = 0, o.eval_every = 0, o.quiet = true;
    ok = ok && alloy_align_run(&o, NULL, NULL) == ALLOY_STATUS_OK;
    snprintf(p, sizeof p, "%s/prompts.jsonl", dir);
    return ok && write_text(p, prompt_data);
}

static alloy_ppo_options run_options(const char *dir, const char *out) {
    alloy_ppo_options o = alloy_ppo_defaults();
    snprintf(o.model_dir, sizeof o.model_dir, "%s/sft", dir);
    snprintf(o.reward_dir, sizeof o.reward_dir, "%s/rm", dir);
    snprintf(o.prompts_path, sizeof o.prompts_path, "%s/prompts.jsonl", dir);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.steps = 4;
    o.batch = 4;
    o.mini_batch = 2;
    o.gen_batch = 3; // two engine batches a step
    o.max_new_tokens = 12;
    o.lr = 1e-3;
    o.ckpt_every = 2;
    o.quiet = true;
    return o;
}

static void test_run_resume_exact(void) {
    char dir[300], a[400], b[400], c[400], p[700], q[700];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    REQUIRE(make_models(dir), "sft and reward models: %s", alloy_last_error());
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    alloy_ppo_options o = run_options(dir, a);
    REQUIRE(alloy_ppo_run(&o, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    o = run_options(dir, c); // the same seed again: the same run
    REQUIRE(alloy_ppo_run(&o, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004/model.safetensors", a);
    snprintf(q, sizeof q, "%s/checkpoints/step-00000004/model.safetensors", c);
    EXPECT(same_file(p, q), "two runs with the same seed differ");
    // the step-2 checkpoint copied to b, resumed to step 4
    static const char *const files[] = {"model.safetensors", "value_head.safetensors", "optimizer.safetensors",
                                        "value_head_optimizer.safetensors", "trainer_state.json", "config.json",
                                        "tokenizer.json", "tokenizer_config.json"};
    snprintf(p, sizeof p, "%s/checkpoints/step-00000002", b);
    alloy_mkdir_p(p);
    for (int f = 0; f < 8; f++) {
        snprintf(p, sizeof p, "%s/checkpoints/step-00000002/%s", a, files[f]);
        snprintf(q, sizeof q, "%s/checkpoints/step-00000002/%s", b, files[f]);
        alloy_file_map x;
        REQUIRE(alloy_file_map_open(&x, p) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        alloy_write_file_atomic(q, x.data, x.size);
        alloy_file_map_close(&x);
    }
    snprintf(p, sizeof p, "%s/latest", b);
    write_text(p, "checkpoints/step-00000002\n");
    alloy_ppo_options r = alloy_ppo_defaults();
    char *ck = NULL;
    REQUIRE(alloy_ppo_resume_options(b, &r, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(r.steps == 4 && r.batch == 4 && r.mini_batch == 2 && r.max_new_tokens == 12 && !strcmp(r.out_dir, b),
           "saved options");
    r.quiet = true;
    alloy_status s = alloy_ppo_run(&r, ck);
    alloy_free(ck);
    REQUIRE(s == ALLOY_STATUS_OK, "resume: %s", alloy_last_error());
    for (int f = 0; f < 4; f++) {
        snprintf(p, sizeof p, "%s/checkpoints/step-00000004/%s", a, files[f]);
        snprintf(q, sizeof q, "%s/checkpoints/step-00000004/%s", b, files[f]);
        EXPECT(same_file(p, q), "the resumed %s differs from the uninterrupted run's", files[f]);
    }
    // a PPO checkpoint's policy is a language model: it loads as one
    alloy_model *lm = NULL;
    snprintf(p, sizeof p, "%s/checkpoints/step-00000004", a);
    EXPECT(alloy_model_load(&lm, p, 1, 0) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_model_destroy(lm);
    // resuming a finished run asks for more steps
    r = alloy_ppo_defaults();
    REQUIRE(alloy_ppo_resume_options(b, &r, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    r.quiet = true;
    EXPECT(alloy_ppo_run(&r, ck) == ALLOY_STATUS_USAGE && strstr(alloy_last_error(), "already at step 4"), "%s",
           alloy_last_error());
    alloy_free(ck);
}

int main(void) {
#ifdef _OPENMP
    omp_set_num_threads(1); // tiny models; and exact resume is checked with one thread
#endif
    RUN(test_gae);
    RUN(test_whiten);
    RUN(test_rewards);
    RUN(test_kl_controller);
    RUN(test_loss_vs_pytorch);
    RUN(test_step_finite_differences);
    RUN(test_run_resume_exact);
    return harness_exit();
}
