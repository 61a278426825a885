/*
 * distill_projection.c — distillation's hidden-state matching: the learned projection P (teacher
 * width x student width) from the student's final hidden states to the first teacher's, its own
 * AdamW after each step of the run, and its state in every checkpoint
 * (distill_projection.safetensors: P and its two moments, the step in the metadata).
 */
#include "alloy/distill.h"
#include "alloy/io.h"
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PROJ_FILE "distill_projection.safetensors"

/* Allocates P and its state for a student of width Cs (zeroed: the caller sets P). */
static alloy_status proj_alloc(distill_ctx *c, int Cs) {
    size_t n = (size_t)c->Ct * (size_t)Cs, N = (size_t)c->run->batch * (size_t)c->run->seq;
    c->Cs = Cs;
    c->proj = alloy_calloc(n, sizeof(float));
    c->dproj = alloy_calloc(n, sizeof(float));
    c->proj_m = alloy_calloc(n, sizeof(float));
    c->proj_v = alloy_calloc(n, sizeof(float));
    c->err = alloy_calloc(N * (size_t)c->Ct, sizeof(float));
    if (!c->proj || !c->dproj || !c->proj_m || !c->proj_v || !c->err)
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the hidden-state projection (%d x %d)", c->Ct, Cs);
    return ALLOY_STATUS_OK;
}

/* A new P: the identity when the widths match, else N(0, 0.02²) from the run's seed. */
alloy_status distill_proj_init(distill_ctx *c, int Cs) {
    alloy_status s = proj_alloc(c, Cs);
    if (s) return s;
    if (Cs == c->Ct) {
        for (int i = 0; i < Cs; i++) c->proj[(size_t)i * Cs + i] = 1.0f;
    } else {
        alloy_rng rng;
        alloy_rng_seed(&rng, c->run->seed ^ 0x9e0f5ca1ab1e0001ULL);
        for (size_t i = 0; i < (size_t)c->Ct * Cs; i++) c->proj[i] = (float)(0.02 * alloy_rng_normal(&rng));
    }
    return ALLOY_STATUS_OK;
}

alloy_status distill_proj_step(void *ctx, float lr) {
    distill_ctx *c = ctx;
    if (!c->proj) return ALLOY_STATUS_OK;
    int64_t n = (int64_t)c->Ct * c->Cs;
    const alloy_adamw_config *a = &c->run->adamw;
    double norm = sqrt(sum_squares(c->dproj, n));
    if (!isfinite(norm)) return alloy_fail(ALLOY_STATUS_RANGE, "the hidden-state projection's gradient is not finite");
    float scale = 1.0f;
    if (a->grad_clip > 0.0f && norm > a->grad_clip) scale = (float)(a->grad_clip / (norm + 1e-6));
    c->proj_step++;
    adamw_update(c->proj, c->dproj, c->proj_m, c->proj_v, n, lr, a->beta1, a->beta2, a->eps, 0.0f, scale, c->proj_step);
    memset(c->dproj, 0, sizeof(float) * (size_t)n);
    return ALLOY_STATUS_OK;
}

alloy_status distill_proj_save(void *ctx, const char *dir) {
    distill_ctx *c = ctx;
    if (!c->proj) return ALLOY_STATUS_OK; // no step yet
    char *p = alloy_path_join(dir, PROJ_FILE);
    if (!p) return ALLOY_STATUS_NOMEM;
    char step[24];
    snprintf(step, sizeof step, "%" PRId64, c->proj_step);
    const char *meta[] = {"step", step, NULL};
    alloy_st_entry e[3] = {{"projection", ALLOY_DTYPE_F32, 2, {c->Ct, c->Cs}, c->proj},
                           {"exp_avg", ALLOY_DTYPE_F32, 2, {c->Ct, c->Cs}, c->proj_m},
                           {"exp_avg_sq", ALLOY_DTYPE_F32, 2, {c->Ct, c->Cs}, c->proj_v}};
    alloy_status s = alloy_safetensors_write(p, e, 3, meta);
    alloy_free(p);
    return s;
}

alloy_status distill_proj_load(void *ctx, const char *dir) {
    distill_ctx *c = ctx;
    char *p = alloy_path_join(dir, PROJ_FILE);
    if (!p) return ALLOY_STATUS_NOMEM;
    alloy_safetensors *st = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    if (!alloy_path_exists(p))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing; the run matches hidden states and needs its projection", p);
    if (!s) s = alloy_safetensors_open(&st, p);
    const alloy_st_tensor *t = st ? alloy_safetensors_find(st, "projection") : NULL;
    if (!s && (!t || t->ndim != 2 || t->shape[0] != c->Ct || t->shape[1] < 1 || t->shape[1] > (1 << 20)))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"projection\" is missing or not of shape (%d, student width)", p, c->Ct);
    if (!s) s = proj_alloc(c, (int)t->shape[1]);
    const char *names[3] = {"projection", "exp_avg", "exp_avg_sq"};
    float *dst[3] = {c->proj, c->proj_m, c->proj_v};
    for (int k = 0; k < 3 && !s; k++) {
        const alloy_st_tensor *tk = alloy_safetensors_find(st, names[k]);
        if (!tk || tk->ndim != 2 || tk->shape[0] != c->Ct || tk->shape[1] != c->Cs)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"%s\" is missing or of the wrong shape", p, names[k]);
        else s = alloy_st_tensor_to_f32(st, tk, dst[k]);
    }
    const char *step = st ? alloy_safetensors_meta(st, "step") : NULL;
    char *end = NULL;
    if (!s && step) c->proj_step = strtoll(step, &end, 10);
    if (!s && (!step || !*step || *end || c->proj_step < 0))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the metadata \"step\" is missing or not a count", p);
    alloy_safetensors_close(st);
    alloy_free(p);
    return s;
}
