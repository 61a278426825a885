/*
 * distill.c — knowledge distillation as an objective of the training loop (alloy/distill.h).
 *
 * Each micro-batch: the student's forward with its logits, the teachers' ensemble
 * log-probabilities on the same inputs, softened by τ (log q_τ = log_softmax(log q / τ), which
 * for one teacher is log_softmax(z / τ)), then distill_forward_backward writes the student's
 * dlogits in place, passed to alloy_model_backward. With hidden-state matching, the term's
 * gradient goes into the student's alloy_model_dhidden_buffer (passed too: the backward adds it
 * to the LM head's) and into the
 * projection P, which the objective's step hook updates with its own AdamW after each step and
 * its save/load hooks keep in the checkpoints.
 */
#include "alloy/options.h"
#include "alloy/distill.h"
#include "alloy/ensemble.h"
#include "alloy/io.h"
#include "internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

void alloy_distill_hidden_loss(float *loss, float *dhs, float *dproj, float *err, const float *hs, const float *ht,
                               const float *proj, int64_t N, int Cs, int Ct, float weight, float grad_scale) {
    double sum = 0.0;
    // err_r = P·hs_r − ht_r
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (int64_t r = 0; r < N; r++) {
        const float *h = hs + r * Cs;
        for (int o = 0; o < Ct; o++) {
            const float *p = proj + (size_t)o * Cs;
            double acc = 0.0;
            for (int k = 0; k < Cs; k++) acc += (double)p[k] * h[k];
            double e = acc - ht[r * Ct + o];
            err[r * Ct + o] = (float)e;
            sum += e * e;
        }
    }
    *loss = (float)((double)weight * sum / (double)N);
    double g = 2.0 * (double)weight * (double)grad_scale / (double)N; // d/d(err) of the scaled loss, per entry
    if (dhs) { // dhs_r = g · Pᵀ err_r
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            const float *e = err + r * Ct;
            for (int k = 0; k < Cs; k++) {
                double acc = 0.0;
                for (int o = 0; o < Ct; o++) acc += (double)proj[(size_t)o * Cs + k] * e[o];
                dhs[r * Cs + k] = (float)(g * acc);
            }
        }
    }
    if (dproj) { // dP += g · Σ_r err_r hs_rᵀ, one thread per output row, rows summed in order
#pragma omp parallel for schedule(static)
        for (int o = 0; o < Ct; o++) {
            float *dp = dproj + (size_t)o * Cs;
            for (int k = 0; k < Cs; k++) {
                double acc = 0.0;
                for (int64_t r = 0; r < N; r++) acc += (double)err[r * Ct + o] * hs[r * Cs + k];
                dp[k] += (float)(g * acc);
            }
        }
    }
}


static alloy_status distill_loss(void *ctx, alloy_model *m, const int32_t *inputs, const int32_t *targets, int B,
                                 int T, float grad_scale, alloy_backward_in *grad, float *loss) {
    distill_ctx *c = ctx;
    int V = m->config.vocab_size;
    int64_t N = (int64_t)B * T;
    if (V != c->teachers->vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the student's vocabulary (%d) differs from the teachers' (%d)", V,
                          c->teachers->vocab_size);
    alloy_status s = alloy_model_forward_ex(m, inputs, B, T, true);
    if (!s) s = alloy_ensemble_logprobs(c->teachers, inputs, B, T, c->tlogp);
    if (s) return s;
    double tau = c->d->temperature;
    if (tau != 1.0) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            float *q = c->tlogp + r * V;
            double mx = -INFINITY, sum = 0.0;
            for (int v = 0; v < V; v++) mx = q[v] / tau > mx ? q[v] / tau : mx;
            for (int v = 0; v < V; v++) sum += exp(q[v] / tau - mx);
            double lse = mx + log(sum);
            for (int v = 0; v < V; v++) q[v] = (float)(q[v] / tau - lse);
        }
    }
    for (int64_t r = 0; r < N; r++) c->row_scale[r] = grad_scale / (float)N;
    float *z = alloy_model_logits(m); // overwritten with the gradient: the dlogits of the backward
    s = distill_forward_backward(c->losses, z, z, c->tlogp, targets, c->row_scale, N, V, c->d->divergence,
                                 c->d->temperature, c->d->alpha, c->d->beta);
    grad->dlogits = z;
    double sum = 0.0;
    for (int64_t r = 0; r < N; r++) sum += c->losses[r];
    *loss = (float)(sum / (double)N);
    if (!s && c->d->hidden_weight > 0.0f) {
        if (!c->proj) s = distill_proj_init(c, m->config.d_model);
        else if (c->Cs != m->config.d_model)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "the hidden-state projection is for a student of width %d, not %d", c->Cs,
                           m->config.d_model);
        float hl = 0.0f;
        if (!s) {
            float *dh = alloy_model_dhidden_buffer(m);
            alloy_distill_hidden_loss(&hl, dh, c->dproj, c->err, alloy_model_hidden(m), alloy_model_hidden(c->teacher0),
                                      c->proj, N, c->Cs, c->Ct, c->d->hidden_weight, grad_scale);
            grad->dhidden = dh; // the backward adds it to the LM head's gradient
            *loss += hl;
        }
    }
    return s;
}

alloy_status alloy_distill_run(const alloy_train_options *o, const alloy_distill_options *d, const char *resume_ckpt,
                               float *final_val_loss) {
    if (d->n_teachers < 1 || d->n_teachers > ALLOY_MAX_TEACHERS)
        return alloy_fail(ALLOY_STATUS_USAGE, "give 1 to %d teachers", ALLOY_MAX_TEACHERS);
    if (!(d->temperature > 0.0f) || !(d->alpha >= 0.0f && d->alpha <= 1.0f) || !(d->beta > 0.0f && d->beta < 1.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "distillation needs temperature > 0, alpha in [0, 1], beta in (0, 1)");
    if (!(d->hidden_weight >= 0.0f && isfinite(d->hidden_weight)))
        return alloy_fail_option(ALLOY_STATUS_USAGE, "hidden_weight", "must be a finite number >= 0");
    if (d->combiner[0] && d->n_teachers < 2)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "combiner", "needs the 2 or more teachers it was trained over");
    alloy_model *tm[ALLOY_MAX_TEACHERS] = {0};
    alloy_combiner *comb = NULL;
    distill_ctx c = {.d = d, .run = o};
    alloy_train_options run = *o;
    alloy_status s = alloy_distill_to_json(d, run.objective_json, sizeof run.objective_json);
    for (int i = 0; i < d->n_teachers && !s; i++) {
        char *dir = NULL;
        s = alloy_checkpoint_resolve(d->teachers[i], &dir);
        if (!s) s = alloy_model_load(&tm[i], dir, o->batch, o->seq);
        if (s) alloy_error_prefix("teacher %s", d->teachers[i]);
        alloy_free(dir);
    }
    if (!s && d->combiner[0]) {
        s = alloy_combiner_load(&comb, d->combiner);
        if (!s) s = alloy_ensemble_create_learned(&c.teachers, tm, d->n_teachers, comb);
        if (s) alloy_error_prefix("--combiner %s", d->combiner);
    } else if (!s) {
        s = alloy_ensemble_create(&c.teachers, tm, NULL, d->n_teachers, ALLOY_ENSEMBLE_PROBS);
    }
    if (!s) {
        c.teacher0 = tm[0];
        c.Ct = tm[0]->config.d_model;
    }
    size_t N = (size_t)o->batch * (size_t)o->seq, V = tm[0] ? (size_t)tm[0]->config.vocab_size : 0;
    if (!s && (!(c.tlogp = alloy_malloc(sizeof(float) * N * V)) || !(c.losses = alloy_malloc(sizeof(float) * N)) ||
               !(c.row_scale = alloy_malloc(sizeof(float) * N))))
        s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the teachers' distributions (%zu x %zu)", N, V);
    alloy_train_loss obj = {distill_loss, &c, NULL, NULL, NULL, "distill-loss"};
    if (d->hidden_weight > 0.0f) {
        obj.step = distill_proj_step;
        obj.save = distill_proj_save;
        obj.load = distill_proj_load;
    }
    run.objective = &obj;
    // a student from a checkpoint is checked here, before anything is written; one from a
    // preset (its vocabulary taken from the data) at the first step
    if (!s) {
        alloy_config cfg;
        char *dir = NULL, *cp = NULL;
        if (resume_ckpt) dir = alloy_strdup(resume_ckpt);
        else if (o->init_dir[0]) s = alloy_checkpoint_resolve(o->init_dir, &dir);
        if (!s && dir && !(cp = alloy_path_join(dir, "config.json"))) s = ALLOY_STATUS_NOMEM;
        if (!s && cp && !(s = alloy_config_load(&cfg, cp)) && (size_t)cfg.vocab_size != V)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "the student's vocabulary (%d) differs from the teachers' (%zu)",
                           cfg.vocab_size, V);
        alloy_free(cp);
        alloy_free(dir);
    }
    if (!s) s = alloy_train_run(&run, resume_ckpt, final_val_loss);
    alloy_ensemble_destroy(c.teachers);
    alloy_combiner_destroy(comb);
    alloy_free(c.proj);
    alloy_free(c.dproj);
    alloy_free(c.proj_m);
    alloy_free(c.proj_v);
    alloy_free(c.err);
    for (int i = 0; i < d->n_teachers; i++) alloy_model_destroy(tm[i]);
    alloy_free(c.tlogp);
    alloy_free(c.losses);
    alloy_free(c.row_scale);
    return s;
}
