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
#include "alloy/distill.h"
#include "alloy/ensemble.h"
#include "alloy/io.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

alloy_distill_options alloy_distill_defaults(void) {
    alloy_distill_options d;
    memset(&d, 0, sizeof d);
    d.divergence = ALLOY_DIVERGENCE_FORWARD_KL;
    d.temperature = 2.0f;
    d.alpha = 0.5f;
    d.beta = 0.5f;
    return d;
}

static const char *const divergence_names[] = {"forward_kl", "reverse_kl", "jsd"};

const char *alloy_divergence_name(alloy_divergence d) {
    return (unsigned)d < 3 ? divergence_names[d] : "?";
}

bool alloy_divergence_parse(const char *name, alloy_divergence *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, divergence_names[i])) {
            *out = (alloy_divergence)i;
            return true;
        }
    return false;
}

alloy_status alloy_distill_to_json(const alloy_distill_options *d, char *out, size_t size) {
    cJSON *j = cJSON_CreateObject(), *t = cJSON_AddArrayToObject(j, "teachers");
    for (int i = 0; i < d->n_teachers; i++) cJSON_AddItemToArray(t, cJSON_CreateString(d->teachers[i]));
    cJSON_AddStringToObject(j, "kind", "distill");
    cJSON_AddStringToObject(j, "divergence", alloy_divergence_name(d->divergence));
    cJSON_AddNumberToObject(j, "temperature", d->temperature);
    cJSON_AddNumberToObject(j, "alpha", d->alpha);
    cJSON_AddNumberToObject(j, "beta", d->beta);
    if (d->combiner[0]) cJSON_AddStringToObject(j, "combiner", d->combiner);
    if (d->hidden_weight != 0.0f) cJSON_AddNumberToObject(j, "hidden_weight", d->hidden_weight);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    alloy_status s = ALLOY_STATUS_OK;
    if (!text) s = ALLOY_STATUS_NOMEM;
    else if (strlen(text) >= size) s = alloy_fail(ALLOY_STATUS_USAGE, "the teachers' paths are too long to record");
    else strcpy(out, text);
    cJSON_free(text);
    return s;
}

alloy_status alloy_distill_from_json(alloy_distill_options *d, const char *json, const char *what) {
    *d = alloy_distill_defaults();
    cJSON *j = cJSON_Parse(json);
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "teachers") : NULL;
    const cJSON *dv = j ? cJSON_GetObjectItemCaseSensitive(j, "divergence") : NULL;
    alloy_status s = ALLOY_STATUS_OK;
    double x;
    if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) < 1 || cJSON_GetArraySize(t) > ALLOY_MAX_TEACHERS || !cJSON_IsString(dv) ||
        !alloy_divergence_parse(dv->valuestring, &d->divergence))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the distillation settings are malformed", what);
    for (const cJSON *e = t ? t->child : NULL; !s && e; e = e->next) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) >= ALLOY_PATH_MAX)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: a teacher's path is malformed", what);
        else strcpy(d->teachers[d->n_teachers++], e->valuestring);
    }
    if (!s && !(s = alloy_json_get_double(j, "temperature", what, &x))) d->temperature = (float)x;
    if (!s && !(s = alloy_json_get_double(j, "alpha", what, &x))) d->alpha = (float)x;
    if (!s && !(s = alloy_json_get_double(j, "beta", what, &x))) d->beta = (float)x;
    // runs saved before these existed had neither a combiner nor hidden-state matching
    x = 0.0;
    if (!s && !(s = alloy_json_opt_double(j, "hidden_weight", what, &x))) d->hidden_weight = (float)x;
    const cJSON *cb = j ? cJSON_GetObjectItemCaseSensitive(j, "combiner") : NULL;
    if (!s && cb && (!cJSON_IsString(cb) || strlen(cb->valuestring) >= ALLOY_PATH_MAX))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the combiner's path is malformed", what);
    else if (!s && cb) strcpy(d->combiner, cb->valuestring);
    cJSON_Delete(j);
    return s;
}

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

typedef struct distill_ctx {
    const alloy_distill_options *d;
    const alloy_train_options *run; /* the run's options: seed, AdamW settings */
    alloy_ensemble *teachers;
    alloy_model *teacher0;          /* whose hidden states the student matches */
    float *tlogp;     /* (B·T, V) */
    float *losses;    /* (B·T) */
    float *row_scale; /* (B·T) */
    /* hidden-state matching (d->hidden_weight > 0) */
    int Cs, Ct;       /* the student's and the teacher's widths; Cs 0 until P exists */
    float *proj;      /* (Ct, Cs) P */
    float *dproj;     /* (Ct, Cs) its gradient over the current step */
    float *proj_m;    /* (Ct, Cs) AdamW first moment */
    float *proj_v;    /* (Ct, Cs) AdamW second moment */
    int64_t proj_step;/* AdamW updates of P so far */
    float *err;       /* (B·T, Ct) scratch */
} distill_ctx;

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
static alloy_status proj_init(distill_ctx *c, int Cs) {
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

static alloy_status proj_step(void *ctx, float lr) {
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

#define PROJ_FILE "distill_projection.safetensors"

static alloy_status proj_save(void *ctx, const char *dir) {
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

static alloy_status proj_load(void *ctx, const char *dir) {
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
        if (!c->proj) s = proj_init(c, m->config.d_model);
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
        return alloy_fail(ALLOY_STATUS_USAGE, "--hidden-weight must be a finite number >= 0");
    if (d->combiner[0] && d->n_teachers < 2)
        return alloy_fail(ALLOY_STATUS_USAGE, "--combiner needs the 2 or more teachers it was trained over");
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
    alloy_train_loss obj = {distill_loss, &c, NULL, NULL, NULL};
    if (d->hidden_weight > 0.0f) {
        obj.step = proj_step;
        obj.save = proj_save;
        obj.load = proj_load;
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
