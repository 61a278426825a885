/*
 * combiner.c — the learned gate of an ensemble (alloy/ensemble.h): per token, mixing weights
 * g = softmax(W·[h₁; …; hₙ] + b) over the members from their final hidden states, trained on
 * held-out token shards by next-token cross-entropy of the mixture Σ gᵢ·pᵢ, the members frozen.
 *
 * The members only run forward: what training needs of them is each one's final hidden states
 * and the log-probability of each row's target (alloy_lm_logprobs_chunked, no (B·T, V)
 * logits). The gradient of the mixture's loss with respect to the gate logits is analytic,
 * dL/dzᵢ = gᵢ − rᵢ with rᵢ = gᵢ·pᵢ(y)/p(y) the posterior share of member i, so W and b train by
 * AdamW without any backward through the members. The mixture at the target, log p(y) and the
 * shares rᵢ, comes from ensemble_mix_target_forward (alloy/kernels.h), the mixing that the
 * ensemble and the ensemble engine share. Sums are in double and the gradient's have
 * a fixed order, so a run is the same for a seed and thread count.
 */
#include "alloy/checkpoint.h"
#include "alloy/ensemble.h"
#include "internal.h"
#include "alloy/io.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t alloy_ensemble_fingerprint(const alloy_model *m) {
    const alloy_config *c = &m->config;
    int64_t sizes[6] = {c->family, c->vocab_size, c->n_layer, c->d_model, c->d_ff, c->n_experts};
    uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, sizes, sizeof sizes);
    return alloy_fnv64(h, m->params_memory, sizeof(float) * m->num_params);
}

void alloy_combiner_destroy(alloy_combiner *c) {
    if (!c) return;
    for (int i = 0; i < ALLOY_COMBINER_MAX; i++) alloy_free(c->path[i]);
    alloy_free(c->weight); // the bias lives in the same block
    alloy_free(c->training_json);
    alloy_free(c);
}

/* A combiner with n members of these widths, its gate zero (the uniform mixture). */
static alloy_status combiner_alloc(alloy_combiner **out, int n, const int *width, int V) {
    *out = NULL;
    alloy_combiner *c = alloy_calloc(1, sizeof *c);
    if (!c) return ALLOY_STATUS_NOMEM;
    c->n = n;
    c->vocab_size = V;
    for (int i = 0; i < n; i++) {
        c->width[i] = width[i];
        c->offset[i] = c->D;
        c->D += width[i]; // widths are at most 1<<20 each, 16 members: no overflow
    }
    c->weight = alloy_calloc((size_t)n * (size_t)c->D + (size_t)n, sizeof(float)); // W, then b: one block to train
    c->bias = c->weight ? c->weight + (size_t)n * (size_t)c->D : NULL;
    if (!c->weight) {
        alloy_combiner_destroy(c);
        return ALLOY_STATUS_NOMEM;
    }
    *out = c;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_combiner_create(alloy_combiner **out, alloy_model *const *models, const char *const *paths, int n) {
    *out = NULL;
    if (n < 2 || n > ALLOY_COMBINER_MAX)
        return alloy_fail(ALLOY_STATUS_USAGE, "a learned combiner needs 2 to %d members, not %d", ALLOY_COMBINER_MAX, n);
    int width[ALLOY_COMBINER_MAX];
    for (int i = 0; i < n; i++) {
        const alloy_config *ci = &models[i]->config, *c0 = &models[0]->config;
        if (ci->vocab_size != c0->vocab_size)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble member %d has a vocabulary of %d, member 0 of %d", i,
                              ci->vocab_size, c0->vocab_size);
        if (strcmp(ci->tokenizer, c0->tokenizer))
            return alloy_fail(ALLOY_STATUS_MISMATCH, "ensemble member %d was trained with tokenizer \"%s\", member 0 with \"%s\"",
                              i, ci->tokenizer, c0->tokenizer);
        width[i] = ci->d_model;
    }
    alloy_combiner *c;
    alloy_status s = combiner_alloc(&c, n, width, models[0]->config.vocab_size);
    if (s) return s;
    for (int i = 0; i < n; i++) {
        c->fingerprint[i] = alloy_ensemble_fingerprint(models[i]);
        if (paths && paths[i] && !(c->path[i] = alloy_strdup(paths[i]))) s = ALLOY_STATUS_NOMEM;
    }
    if (s) alloy_combiner_destroy(c);
    else *out = c;
    return s;
}

alloy_status alloy_combiner_check(const alloy_combiner *c, alloy_model *const *models, int n) {
    if (n != c->n)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the combiner was trained over %d members, not %d", c->n, n);
    for (int i = 0; i < n; i++) {
        const alloy_config *ci = &models[i]->config;
        const char *was = c->path[i] ? c->path[i] : "?";
        if (ci->vocab_size != c->vocab_size || ci->d_model != c->width[i])
            return alloy_fail(ALLOY_STATUS_MISMATCH,
                              "ensemble member %d (vocabulary %d, width %d) is not the combiner's member %d, %s "
                              "(vocabulary %d, width %d)", i, ci->vocab_size, ci->d_model, i, was, c->vocab_size, c->width[i]);
        uint64_t fp = alloy_ensemble_fingerprint(models[i]);
        if (fp != c->fingerprint[i])
            return alloy_fail(ALLOY_STATUS_MISMATCH,
                              "ensemble member %d has other weights (fingerprint %016" PRIx64 ") than the combiner's member "
                              "%d, %s (%016" PRIx64 "); give the members in the order the combiner was trained with",
                              i, fp, i, was, c->fingerprint[i]);
    }
    return ALLOY_STATUS_OK;
}

/* ---- files ---- */

alloy_status alloy_combiner_save(const alloy_combiner *c, const char *dir) {
    alloy_status s = alloy_mkdir_p(dir);
    if (s) return s;
    char *wp = alloy_path_join(dir, "combiner.safetensors"), *jp = alloy_path_join(dir, "combiner.json");
    cJSON *j = cJSON_CreateObject(), *ms = cJSON_AddArrayToObject(j, "members");
    if (!wp || !jp || !j || !ms) s = ALLOY_STATUS_NOMEM;
    if (!s) {
        alloy_st_entry e[2] = {{"gate.weight", ALLOY_DTYPE_F32, 2, {c->n, c->D}, c->weight},
                               {"gate.bias", ALLOY_DTYPE_F32, 1, {c->n}, c->bias}};
        const char *meta[] = {"format", "alloy-combiner", NULL};
        s = alloy_safetensors_write(wp, e, 2, meta);
    }
    if (!s) {
        cJSON_AddStringToObject(j, "format", "alloy-combiner");
        cJSON_AddNumberToObject(j, "version", 1);
        cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
        for (int i = 0; i < c->n; i++) {
            cJSON *m = cJSON_CreateObject();
            char fp[24];
            snprintf(fp, sizeof fp, "%016" PRIx64, c->fingerprint[i]);
            cJSON_AddStringToObject(m, "path", c->path[i] ? c->path[i] : "");
            cJSON_AddStringToObject(m, "fingerprint", fp);
            cJSON_AddNumberToObject(m, "d_model", c->width[i]);
            cJSON_AddItemToArray(ms, m);
        }
        cJSON *t = c->training_json ? cJSON_Parse(c->training_json) : NULL;
        if (t) cJSON_AddItemToObject(j, "training", t);
        s = alloy_json_write_file(jp, j);
    }
    cJSON_Delete(j);
    alloy_free(wp);
    alloy_free(jp);
    return s;
}

static alloy_status load_folder(alloy_combiner **out, const char *dir) {
    *out = NULL;
    char *jp = alloy_path_join(dir, "combiner.json"), *wp = alloy_path_join(dir, "combiner.safetensors");
    cJSON *j = NULL;
    alloy_safetensors *st = NULL;
    alloy_combiner *c = NULL;
    alloy_status s = (!jp || !wp) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    if (!s && !alloy_path_exists(jp)) s = alloy_fail(ALLOY_STATUS_IO, "%s: not a combiner folder (no combiner.json)", dir);
    if (!s) s = alloy_json_read_file(jp, &j);
    const char *fmt = NULL;
    int64_t version = 0, V = 0;
    if (!s) s = alloy_json_get_string(j, "format", jp, &fmt);
    if (!s && strcmp(fmt, "alloy-combiner")) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: format is \"%s\", not alloy-combiner", jp, fmt);
    if (!s) s = alloy_json_get_int(j, "version", jp, &version);
    if (!s && version != 1) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: version %lld is not 1", jp, (long long)version);
    if (!s) s = alloy_json_get_int(j, "vocab_size", jp, &V);
    if (!s && (V < 1 || V > (1 << 24))) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocab_size %lld out of range", jp, (long long)V);
    const cJSON *ms = j ? cJSON_GetObjectItemCaseSensitive(j, "members") : NULL;
    int n = cJSON_IsArray(ms) ? cJSON_GetArraySize(ms) : 0;
    if (!s && (n < 2 || n > ALLOY_COMBINER_MAX))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"members\" must list 2 to %d models", jp, ALLOY_COMBINER_MAX);
    int width[ALLOY_COMBINER_MAX] = {0};
    uint64_t fps[ALLOY_COMBINER_MAX] = {0};
    const char *paths[ALLOY_COMBINER_MAX] = {0};
    for (int i = 0; i < n && !s; i++) {
        const cJSON *m = cJSON_GetArrayItem(ms, i);
        int64_t w = 0;
        const char *fp = NULL;
        if (!cJSON_IsObject(m)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: member %d is not an object", jp, i);
        if (!s) s = alloy_json_get_int(m, "d_model", jp, &w);
        if (!s) s = alloy_json_get_string(m, "fingerprint", jp, &fp);
        if (!s) s = alloy_json_get_string(m, "path", jp, &paths[i]);
        if (!s && (w < 1 || w > (1 << 20)))
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: member %d's d_model %lld out of range", jp, i, (long long)w);
        if (!s && (strlen(fp) != 16 || strspn(fp, "0123456789abcdef") != 16))
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: member %d's fingerprint is not 16 hex digits", jp, i);
        if (!s) {
            width[i] = (int)w;
            fps[i] = strtoull(fp, NULL, 16);
        }
    }
    if (!s) s = combiner_alloc(&c, n, width, (int)V);
    for (int i = 0; i < n && !s; i++) {
        c->fingerprint[i] = fps[i];
        if (paths[i][0] && !(c->path[i] = alloy_strdup(paths[i]))) s = ALLOY_STATUS_NOMEM;
    }
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "training") : NULL;
    if (!s && cJSON_IsObject(t)) {
        char *text = cJSON_PrintUnformatted(t);
        if (!text || !(c->training_json = alloy_strdup(text))) s = ALLOY_STATUS_NOMEM;
        cJSON_free(text);
    }
    if (!s) s = alloy_safetensors_open(&st, wp);
    struct {
        const char *name;
        float *dst;
        int64_t rows, cols;
    } want[2] = {{"gate.weight", c ? c->weight : NULL, n, c ? c->D : 0}, {"gate.bias", c ? c->bias : NULL, n, 1}};
    for (int k = 0; k < 2 && !s; k++) {
        const alloy_st_tensor *te = alloy_safetensors_find(st, want[k].name);
        bool shape_ok = te && (k == 0 ? te->ndim == 2 && te->shape[0] == want[k].rows && te->shape[1] == want[k].cols
                                      : te->ndim == 1 && te->shape[0] == want[k].rows);
        if (!shape_ok)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" is missing or not of shape (%lld%s%lld) as combiner.json says",
                           wp, want[k].name, (long long)want[k].rows, k ? "" : ", ", k ? 0LL : (long long)want[k].cols);
        if (!s) s = alloy_st_tensor_to_f32(st, te, want[k].dst);
        for (size_t q = 0; !s && q < te->numel; q++)
            if (!isfinite(want[k].dst[q])) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"%s\" holds a value that is not finite", wp, want[k].name);
    }
    alloy_safetensors_close(st);
    cJSON_Delete(j);
    alloy_free(jp);
    alloy_free(wp);
    if (s) alloy_combiner_destroy(c);
    else *out = c;
    return s;
}

alloy_status alloy_combiner_load(alloy_combiner **out, const char *dir) {
    char *jp = alloy_path_join(dir, "combiner.json"), *lp = alloy_path_join(dir, "latest"), *ck = NULL;
    alloy_status s = (!jp || !lp) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    if (!s && !alloy_path_exists(jp) && alloy_path_exists(lp)) s = alloy_run_latest(dir, &ck); // a training run
    if (!s) s = load_folder(out, ck ? ck : dir);
    alloy_free(jp);
    alloy_free(lp);
    alloy_free(ck);
    return s;
}

/* ---- the gate ---- */

/* One row's gate logits z (n) in double. */
static void gate_logits(double *z, const alloy_combiner *c, const float *const *hidden, int64_t r) {
    for (int i = 0; i < c->n; i++) {
        double acc = c->bias[i];
        const float *w = c->weight + (size_t)i * c->D;
        for (int j = 0; j < c->n; j++) {
            const float *h = hidden[j] + r * c->width[j], *wj = w + c->offset[j];
            for (int k = 0; k < c->width[j]; k++) acc += (double)wj[k] * h[k];
        }
        z[i] = acc;
    }
}

/* z (n) -> softmax in place. */
static void softmax_d(double *z, int n) {
    double mx = z[0], sum = 0.0;
    for (int i = 1; i < n; i++) mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < n; i++) sum += (z[i] = exp(z[i] - mx));
    for (int i = 0; i < n; i++) z[i] /= sum;
}

void alloy_combiner_gate_forward(float *gates, const alloy_combiner *c, const float *const *hidden, int64_t N) {
    int n = c->n;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; r++) {
        double z[ALLOY_COMBINER_MAX];
        gate_logits(z, c, hidden, r);
        softmax_d(z, n);
        for (int i = 0; i < n; i++) gates[r * n + i] = (float)z[i];
    }
}

void alloy_combiner_loss_backward(float *loss, float *dweight, float *dbias, float *gates, const alloy_combiner *c,
                            const float *const *hidden, const float *member_logp, int64_t N, float grad_scale) {
    int n = c->n;
    double sum = 0.0;
    // per row: the mixture's loss, and dL/dz (written over the gates) for the weight gradient
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (int64_t r = 0; r < N; r++) {
        double z[ALLOY_COMBINER_MAX], log_g[ALLOY_COMBINER_MAX], lp[ALLOY_COMBINER_MAX], post[ALLOY_COMBINER_MAX];
        gate_logits(z, c, hidden, r);
        softmax_d(z, n);
        for (int i = 0; i < n; i++) {
            log_g[i] = log(z[i]);
            lp[i] = member_logp[(int64_t)i * N + r]; // log pᵢ(y)
        }
        sum -= ensemble_mix_target_forward(post, lp, log_g, n); // log Σ gᵢ·pᵢ(y); post: rᵢ
        for (int i = 0; i < n; i++) gates[r * n + i] = (float)(z[i] - post[i]); // gᵢ − rᵢ
    }
    *loss = (float)(sum / (double)N);
    if (!dweight && !dbias) return;
    double scale = (double)grad_scale / (double)N;
    if (dbias)
        for (int i = 0; i < n; i++) {
            double acc = 0.0;
            for (int64_t r = 0; r < N; r++) acc += gates[r * n + i];
            dbias[i] += (float)(scale * acc);
        }
    if (!dweight) return;
    // dW[i, offⱼ + k] = Σ_r dzᵢ(r)·hⱼ(r, k): one thread per column, rows summed in order
    for (int j = 0; j < n; j++) {
        const float *h = hidden[j];
        int C = c->width[j];
#pragma omp parallel for schedule(static)
        for (int k = 0; k < C; k++) {
            double acc[ALLOY_COMBINER_MAX] = {0};
            for (int64_t r = 0; r < N; r++) {
                double x = h[r * C + k];
                for (int i = 0; i < n; i++) acc[i] += (double)gates[r * n + i] * x;
            }
            for (int i = 0; i < n; i++) dweight[(size_t)i * c->D + c->offset[j] + k] += (float)(scale * acc[i]);
        }
    }
}

/* ---- training ---- */

alloy_combiner_train_options alloy_combiner_train_defaults(void) {
    alloy_combiner_train_options o;
    memset(&o, 0, sizeof o);
    o.steps = 200;
    o.batch = 8;
    o.seq = 128;
    o.lr = 1e-2;
    o.seed = 1337;
    o.keep_ckpts = 3;
    o.log_every = 10;
    return o;
}

/* Runs every member forward on a batch and fills member_logp (n, B·T) with log pᵢ(target) and
 * hidden[i] with member i's final hidden states. */
alloy_status combiner_members_forward(alloy_model *const *models, int n, const int32_t *inputs, const int32_t *targets,
                                    int B, int T, float *member_logp, const float **hidden) {
    int64_t N = (int64_t)B * T;
    for (int i = 0; i < n; i++) {
        alloy_status s = alloy_model_forward_ex(models[i], inputs, B, T, false);
        if (!s) s = alloy_lm_logprobs_chunked(models[i], targets, NULL, B, T, NULL, member_logp + (int64_t)i * N);
        if (s) {
            alloy_error_prefix("ensemble member %d", i);
            return s;
        }
        hidden[i] = alloy_model_hidden(models[i]);
    }
    return ALLOY_STATUS_OK;
}

/* The members and their mixtures as a next-token log-probability source (alloy/eval.h) of
 * n + 2 outputs: each member alone, the uniform mixture, the gate's mixture. */
typedef struct combiner_source {
    const alloy_combiner *c;
    alloy_model *const *models;
    float *member_logp; /* (n, B·T) scratch: each member's log pᵢ(target) */
    float *gates;       /* (B·T, n) scratch: the gate's weights */
} combiner_source;

/* logp (n + 2, B·T): log pᵢ(y) of each member, log Σ pᵢ(y)/n, log Σ gᵢ·pᵢ(y). */
static alloy_status combiner_score(void *ctx, const int32_t *inputs, const int32_t *targets, int B, int T,
                                   double *logp) {
    const combiner_source *cs = ctx;
    const alloy_combiner *c = cs->c;
    int n = c->n;
    int64_t N = (int64_t)B * T;
    const float *hidden[ALLOY_COMBINER_MAX] = {0};
    alloy_status s = combiner_members_forward(cs->models, n, inputs, targets, B, T, cs->member_logp, hidden);
    if (s) return s;
    alloy_combiner_gate_forward(cs->gates, c, hidden, N);
    double log_uniform[ALLOY_COMBINER_MAX];
    for (int i = 0; i < n; i++) log_uniform[i] = -log((double)n);
    for (int64_t r = 0; r < N; r++) {
        double lp[ALLOY_COMBINER_MAX], log_g[ALLOY_COMBINER_MAX];
        for (int i = 0; i < n; i++) {
            logp[i * N + r] = lp[i] = cs->member_logp[(int64_t)i * N + r];
            log_g[i] = log((double)cs->gates[r * n + i]);
        }
        logp[n * N + r] = ensemble_mix_target_forward(NULL, lp, log_uniform, n);
        logp[(n + 1) * N + r] = ensemble_mix_target_forward(NULL, lp, log_g, n);
    }
    return ALLOY_STATUS_OK;
}

/* Held-out losses of each member, the uniform mixture and the gate over the val split, B
 * windows at a time through the buffers of alloy_combiner_train (member_logp (n, B·T), gates
 * (B·T, n)). */
alloy_status combiner_eval(const alloy_combiner *c, alloy_model *const *models, const alloy_dataset *ds, int B,
                                  int T, int64_t max_windows, float *member_logp, float *gates, alloy_combiner_report *rep) {
    int n = c->n;
    combiner_source cs = {c, models, member_logp, gates};
    alloy_logprob_source src = {.score = combiner_score, .ctx = &cs, .max_B = B, .max_T = T,
                                .vocab_size = c->vocab_size, .n_out = n + 2, .name = "the combiner's members"};
    alloy_eval_result r[ALLOY_COMBINER_MAX + 2];
    alloy_status s = alloy_eval_source(&src, ds, ALLOY_SPLIT_VAL, B, T, max_windows, r);
    if (s) return s;
    for (int i = 0; i < n; i++) rep->member_loss[i] = r[i].loss;
    rep->uniform_loss = r[n].loss;
    rep->learned_loss = r[n + 1].loss;
    rep->tokens = r[0].tokens;
    return ALLOY_STATUS_OK;
}

/* Records what made the combiner and its held-out report in c->training_json. */
void combiner_record_training(alloy_combiner *c, const alloy_dataset *ds, const alloy_combiner_train_options *o,
                              const alloy_combiner_report *r) {
    int n = c->n, B = o->batch, T = o->seq;
    cJSON *t = cJSON_CreateObject(), *ml = cJSON_CreateArray();
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    cJSON_AddStringToObject(t, "data", ds->dir);
    cJSON_AddNumberToObject(t, "steps", (double)o->steps);
    cJSON_AddNumberToObject(t, "batch", B);
    cJSON_AddNumberToObject(t, "seq", T);
    cJSON_AddNumberToObject(t, "lr", o->lr);
    cJSON_AddNumberToObject(t, "weight_decay", o->weight_decay);
    cJSON_AddStringToObject(t, "seed", seed);
    cJSON_AddNumberToObject(t, "train_loss", r->train_loss);
    cJSON_AddNumberToObject(t, "val_tokens", (double)r->tokens);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(ml, cJSON_CreateNumber(r->member_loss[i]));
    cJSON_AddItemToObject(t, "val_member_loss", ml);
    cJSON_AddNumberToObject(t, "val_uniform_loss", r->uniform_loss);
    cJSON_AddNumberToObject(t, "val_learned_loss", r->learned_loss);
    char *text = cJSON_PrintUnformatted(t); // cJSON's allocation: copied into ours
    alloy_free(c->training_json);
    c->training_json = text ? alloy_strdup(text) : NULL;
    cJSON_free(text);
    cJSON_Delete(t);
}
