/*
 * combiner_train.c — the learned combiner's training (alloy ensemble train) as an objective of
 * the one run (alloy/train.h): the members frozen and run forward only, the gate's W and b one
 * parameter group (one block, W then b; decay on W alone), AdamW (0.9, 0.999, 1e-8) without
 * clipping, warm-up steps/10 then cosine to lr/10; at the end the held-out losses of each member,
 * the uniform mixture and the gate, recorded in the combiner's combiner.json.
 */
#include "alloy/ensemble.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

typedef struct comb_obj {
    alloy_combiner *c;
    alloy_model *const *models;
    const alloy_dataset *ds;
    const alloy_combiner_train_options *o;
    alloy_loader *train;
    float *logp, *gates;        /* (n, B·T) the members' log pᵢ(target); (B·T, n) the gate's weights */
    const float *hidden[ALLOY_COMBINER_MAX]; /* the last batch's final hidden states, per member */
    float *grads;               /* (n·D + n) dW, then db */
    alloy_tensor_info tensors[2];
    alloy_model view;           /* the gate as a parameter group */
    float loss;                 /* this step's */
    alloy_combiner_report rep;  /* the held-out report */
} comb_obj;

static alloy_status comb_micro_batch(void *ctx, int micro, float grad_scale) {
    comb_obj *x = ctx;
    int B = x->o->batch, T = x->o->seq;
    (void)micro;
    alloy_loader_next(x->train);
    alloy_status s = combiner_members_forward(x->models, x->c->n, x->train->inputs, x->train->targets, B, T, x->logp, x->hidden);
    if (s) return s;
    float *dw = x->grads, *db = x->grads + (size_t)x->c->n * x->c->D;
    alloy_combiner_loss_backward(&x->loss, dw, db, x->gates, x->c, x->hidden, x->logp, (int64_t)B * T, grad_scale);
    if (!isfinite(x->loss)) return alloy_fail(ALLOY_STATUS_RANGE, "the combiner's loss is not finite");
    return ALLOY_STATUS_OK;
}

static alloy_status comb_evaluate(void *ctx) {
    comb_obj *x = ctx;
    memset(&x->rep, 0, sizeof x->rep);
    x->rep.train_loss = x->loss;
    alloy_status s = combiner_eval(x->c, x->models, x->ds, x->o->batch, x->o->seq, x->o->eval_windows, x->logp, x->gates, &x->rep);
    if (!s) combiner_record_training(x->c, x->ds, x->o, &x->rep);
    return s;
}

static void comb_report(void *ctx, alloy_run_phase phase, alloy_run_report *r) {
    comb_obj *x = ctx;
    int n = x->c->n;
    size_t k = 0;
    if (phase == ALLOY_RUN_EVAL) {
        r->loss = x->rep.learned_loss;
        k = (size_t)snprintf(r->fields, sizeof r->fields, ",\"val_tokens\":%lld,\"val_member_loss\":[", (long long)x->rep.tokens);
        for (int i = 0; i < n && k < sizeof r->fields; i++)
            k += (size_t)snprintf(r->fields + k, sizeof r->fields - k, "%s%.6f", i ? "," : "", x->rep.member_loss[i]);
        if (k < sizeof r->fields)
            snprintf(r->fields + k, sizeof r->fields - k, "],\"val_uniform_loss\":%.6f,\"val_learned_loss\":%.6f",
                     x->rep.uniform_loss, x->rep.learned_loss);
        snprintf(r->brief, sizeof r->brief, "uniform mixture %.4f", x->rep.uniform_loss);
        snprintf(r->covers, sizeof r->covers, "%lld held-out tokens", (long long)x->rep.tokens);
        return;
    }
    int64_t N = (int64_t)x->o->batch * x->o->seq;
    r->loss = x->loss;
    r->tokens = (double)N;
    snprintf(r->fields, sizeof r->fields, ",\"loss\":%.6f", (double)x->loss);
    // the gate's mean weight per member over this batch, with the gates after the update
    alloy_combiner_gate_forward(x->gates, x->c, x->hidden, N);
    k = (size_t)snprintf(r->tail, sizeof r->tail, ",\"gate_mean\":[");
    for (int i = 0; i < n && k < sizeof r->tail; i++) {
        double g = 0.0;
        for (int64_t row = 0; row < N; row++) g += x->gates[row * n + i];
        k += (size_t)snprintf(r->tail + k, sizeof r->tail - k, "%s%.4f", i ? "," : "", g / (double)N);
    }
    if (k < sizeof r->tail) snprintf(r->tail + k, sizeof r->tail - k, "]");
}

static alloy_status comb_save(void *ctx, const char *dir) { return alloy_combiner_save(((comb_obj *)ctx)->c, dir); }

/* The gate of the checkpoint resumed from, into c (which must match it). */
static alloy_status comb_load(void *ctx, const char *dir) {
    comb_obj *x = ctx;
    alloy_combiner *saved = NULL;
    alloy_status s = alloy_combiner_load(&saved, dir);
    if (!s && (saved->n != x->c->n || saved->D != x->c->D))
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: a gate over %d members of %d features, not %d of %d", dir, saved->n, saved->D,
                       x->c->n, x->c->D);
    if (!s) memcpy(x->c->weight, saved->weight, sizeof(float) * ((size_t)x->c->n * x->c->D + (size_t)x->c->n));
    alloy_combiner_destroy(saved);
    return s;
}

static alloy_status comb_state_save(void *ctx, cJSON *j) {
    comb_obj *x = ctx;
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, x->o->seed);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "objective", "combiner");
    cJSON_AddStringToObject(o, "data", x->ds->dir);
    cJSON_AddNumberToObject(o, "batch", x->o->batch);
    cJSON_AddNumberToObject(o, "seq", x->o->seq);
    cJSON_AddNumberToObject(o, "lr", x->o->lr);
    cJSON_AddNumberToObject(o, "weight_decay", x->o->weight_decay);
    cJSON_AddStringToObject(o, "seed", seed);
    return alloy_run_state_put_data(j, x->train->epoch, x->train->cursor, x->ds->fingerprint, o);
}

static alloy_status comb_state_load(void *ctx, const cJSON *j, const char *what) {
    comb_obj *x = ctx;
    int64_t epoch = 0, cursor = 0;
    alloy_status s = alloy_run_state_get_data(j, what, x->ds->dir, x->ds->fingerprint, -1, &epoch, &cursor);
    if (!s && (s = alloy_loader_seek(x->train, epoch, cursor))) alloy_error_prefix("%s", what);
    return s;
}

static void comb_describe(void *ctx, char *buf, size_t size) {
    comb_obj *x = ctx;
    snprintf(buf, size, ",\"objective\":\"combiner\",\"members\":%d,\"features\":%d,\"params\":%d", x->c->n, x->c->D,
             x->c->n * x->c->D + x->c->n);
}

static void comb_intro(void *ctx, alloy_progress *prog) {
    comb_obj *x = ctx;
    alloy_progress_print(prog, "combiner: a gate over %d members (%d hidden features), windows of %d x %d tokens", x->c->n,
                         x->c->D, x->o->batch, x->o->seq);
}

/* The gate as a table of two tensors over c's one block, and its gradient's block. */
static alloy_status make_view(comb_obj *x) {
    alloy_combiner *c = x->c;
    size_t nw = (size_t)c->n * c->D, total = nw + (size_t)c->n;
    if (!(x->grads = alloy_calloc(total, sizeof(float)))) return ALLOY_STATUS_NOMEM;
    x->tensors[0] = (alloy_tensor_info){.name = "gate.weight", .ndim = 2, .shape = {c->n, c->D}, .offset = 0, .numel = nw, .decay = true};
    x->tensors[1] = (alloy_tensor_info){.name = "gate.bias", .ndim = 1, .shape = {c->n}, .offset = nw, .numel = (size_t)c->n};
    x->view.tensors = x->tensors;
    x->view.n_tensors = 2;
    x->view.num_params = total;
    x->view.params_memory = c->weight;
    x->view.grads_memory = x->grads;
    return ALLOY_STATUS_OK;
}

/* USAGE/MISMATCH unless the options, members and data fit together. */
static alloy_status check(const alloy_combiner *c, alloy_model *const *models, int n, const alloy_dataset *ds,
                          const alloy_combiner_train_options *o) {
    alloy_status s = alloy_combiner_check(c, models, n);
    if (s) return s;
    if (o->steps < 1 || o->batch < 1 || o->seq < 1 || !(o->lr > 0.0 && o->lr < 10.0) || !(o->weight_decay >= 0.0f) ||
        o->eval_windows < 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "combiner training needs steps, batch and seq >= 1, lr in (0, 10), "
                                              "weight decay >= 0");
    for (int i = 0; i < n; i++)
        if (o->batch > models[i]->max_B || o->seq > models[i]->max_T)
            return alloy_fail(ALLOY_STATUS_USAGE, "batch %d x %d does not fit ensemble member %d's buffers (%d x %d)", o->batch,
                              o->seq, i, models[i]->max_B, models[i]->max_T);
    if (ds->vocab_size > (uint32_t)c->vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data's tokens go up to id %u but the members' vocabulary has %d",
                          ds->dir, ds->vocab_size - 1, c->vocab_size);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_combiner_train(alloy_combiner *c, alloy_model *const *models, int n, const alloy_dataset *ds,
                                  const alloy_combiner_train_options *o, const char *resume, alloy_combiner_report *report) {
    alloy_status s = check(c, models, n, ds, o);
    if (s) return s;
    comb_obj x = {.c = c, .models = models, .ds = ds, .o = o};
    size_t N = (size_t)o->batch * (size_t)o->seq;
    x.logp = alloy_malloc(sizeof(float) * (size_t)n * N);
    x.gates = alloy_malloc(sizeof(float) * (size_t)n * N);
    if (!x.logp || !x.gates) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the combiner's training");
    if (!s) s = make_view(&x);
    if (!s) s = alloy_loader_create(&x.train, ds, ALLOY_SPLIT_TRAIN, o->batch, o->seq, o->seed);
    alloy_objective obj = {
        .label = "combiner ", .ctx = &x, .groups = {{&x.view, "optimizer.safetensors"}}, .n_groups = 1,
        .micro_batch = comb_micro_batch, .evaluate = comb_evaluate, .report = comb_report, .save = comb_save,
        .load = comb_load, .state_save = comb_state_save, .state_load = comb_state_load, .describe = comb_describe,
        .intro = comb_intro,
    };
    alloy_run_options ro = alloy_run_defaults();
    memcpy(ro.out_dir, o->out_dir, sizeof ro.out_dir);
    ro.steps = o->steps;
    ro.schedule = (alloy_schedule){.max_lr = o->lr, .min_lr = o->lr / 10.0, .warmup_steps = o->steps / 10};
    ro.adamw = (alloy_adamw_config){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = o->weight_decay};
    ro.seed = o->seed;
    ro.eval_every = 0; // the held-out report at the end
    ro.ckpt_every = o->ckpt_every;
    ro.keep_ckpts = o->keep_ckpts;
    ro.log_every = o->log_every > 0 ? o->log_every : 10;
    ro.quiet = o->quiet;
    ro.resume_mode = o->resume_mode;
    ro.stop = o->stop;
    if (!s) s = alloy_run_execute(&ro, &obj, resume, NULL);
    if (!s && report) *report = x.rep;
    alloy_loader_destroy(x.train);
    alloy_free(x.logp);
    alloy_free(x.gates);
    alloy_free(x.grads);
    return s;
}
