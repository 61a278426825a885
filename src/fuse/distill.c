/*
 * distill.c — knowledge distillation as an objective of the training loop (alloy/distill.h).
 *
 * Each micro-batch: the student's forward with its logits, the teachers' ensemble
 * log-probabilities on the same inputs, softened by τ (log q_τ = log_softmax(log q / τ), which
 * for one teacher is log_softmax(z / τ)), then distill_forward_backward writes the student's
 * dlogits in place for alloy_model_backward.
 */
#include "alloy/distill.h"
#include "alloy/ensemble.h"
#include "alloy/io.h"

#include <cjson/cJSON.h>
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
    cJSON_Delete(j);
    return s;
}

typedef struct distill_ctx {
    const alloy_distill_options *d;
    alloy_ensemble *teachers;
    float *tlogp;     /* (B·T, V) */
    float *losses;    /* (B·T) */
    float *row_scale; /* (B·T) */
} distill_ctx;

static alloy_status distill_loss(void *ctx, alloy_model *m, const int32_t *inputs, const int32_t *targets, int B,
                                 int T, float grad_scale, float *loss) {
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
    s = distill_forward_backward(c->losses, m->acts.logits, m->acts.logits, c->tlogp, targets, c->row_scale, N, V,
                                 c->d->divergence, c->d->temperature, c->d->alpha, c->d->beta);
    double sum = 0.0;
    for (int64_t r = 0; r < N; r++) sum += c->losses[r];
    *loss = (float)(sum / (double)N);
    return s;
}

alloy_status alloy_distill_run(const alloy_train_options *o, const alloy_distill_options *d, const char *resume_ckpt,
                               float *final_val_loss) {
    if (d->n_teachers < 1 || d->n_teachers > ALLOY_MAX_TEACHERS)
        return alloy_fail(ALLOY_STATUS_USAGE, "give 1 to %d teachers", ALLOY_MAX_TEACHERS);
    if (!(d->temperature > 0.0f) || !(d->alpha >= 0.0f && d->alpha <= 1.0f) || !(d->beta > 0.0f && d->beta < 1.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "distillation needs temperature > 0, alpha in [0, 1], beta in (0, 1)");
    alloy_model *tm[ALLOY_MAX_TEACHERS] = {0};
    distill_ctx c = {.d = d};
    alloy_train_options run = *o;
    alloy_status s = alloy_distill_to_json(d, run.objective_json, sizeof run.objective_json);
    for (int i = 0; i < d->n_teachers && !s; i++) {
        char *dir = NULL;
        s = alloy_checkpoint_resolve(d->teachers[i], &dir);
        if (!s) s = alloy_model_load(&tm[i], dir, o->batch, o->seq);
        if (s) alloy_error_prefix("teacher %s", d->teachers[i]);
        alloy_free(dir);
    }
    if (!s) s = alloy_ensemble_create(&c.teachers, tm, NULL, d->n_teachers, ALLOY_ENSEMBLE_PROBS);
    size_t N = (size_t)o->batch * (size_t)o->seq, V = tm[0] ? (size_t)tm[0]->config.vocab_size : 0;
    if (!s && (!(c.tlogp = alloy_malloc(sizeof(float) * N * V)) || !(c.losses = alloy_malloc(sizeof(float) * N)) ||
               !(c.row_scale = alloy_malloc(sizeof(float) * N))))
        s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the teachers' distributions (%zu x %zu)", N, V);
    alloy_objective obj = {distill_loss, &c};
    run.objective = &obj;
    // a student from a checkpoint is checked here, before anything is written; one from a
    // preset (its vocabulary taken from the data) at the first step
    if (!s) {
        alloy_config cfg;
        const char *dir = resume_ckpt ? resume_ckpt : (o->init_dir[0] ? o->init_dir : NULL);
        char *cp = dir ? alloy_path_join(dir, "config.json") : NULL;
        if (cp && !(s = alloy_config_load(&cfg, cp)) && (size_t)cfg.vocab_size != V)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "the student's vocabulary (%d) differs from the teachers' (%zu)",
                           cfg.vocab_size, V);
        alloy_free(cp);
    }
    if (!s) s = alloy_train_run(&run, resume_ckpt, final_val_loss);
    alloy_ensemble_destroy(c.teachers);
    for (int i = 0; i < d->n_teachers; i++) alloy_model_destroy(tm[i]);
    alloy_free(c.tlogp);
    alloy_free(c.losses);
    alloy_free(c.row_scale);
    return s;
}
