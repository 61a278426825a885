/*
 * test_distill.c — the distillation losses (forward KL, reverse KL, generalised JSD, mixed with
 * the hard-label cross-entropy) against PyTorch autograd (tests/reference/distill_ref.py) and
 * against finite differences of their own loss.
 */
#include "alloy/io.h"
#include "alloy/kernels.h"
#include "harness.h"

#define PYTHON "/usr/bin/python3"

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
    char in[512], out[512], cmd[1600];
    snprintf(in, sizeof in, "%s/in-%d.safetensors", dir, (int)kind);
    snprintf(out, sizeof out, "%s/out-%d.safetensors", dir, (int)kind);
    REQUIRE(alloy_safetensors_write(in, e, 4, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    snprintf(cmd, sizeof cmd, PYTHON " '%s/tests/reference/distill_ref.py' '%s' '%s'", harness_root(), in, out);
    REQUIRE(system(cmd) == 0, "the reference failed: %s", cmd);
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

int main(void) {
    RUN(test_divergences);
    RUN(test_identical_teacher);
    return harness_exit();
}
