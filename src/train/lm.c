/*
 * lm.c — next-token prediction on token shards as an objective of the one run (alloy_train_run):
 * pretraining, continued pretraining (--init), MoE router or MLP tuning (--train-only), and any
 * alloy_train_loss in place of cross-entropy (distillation, alloy/distill.h).
 *
 * The data order is a function of (seed, epoch) and the loader's saved position; the held-out
 * loss is the mean over the first eval_batches batches of the val split (always the same), and
 * at the end of a run the whole split's loss as alloy eval scores it (where that is cheap).
 */
#include "alloy/data.h"
#include "alloy/eval.h"
#include "alloy/io.h"
#include "alloy/options.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- the objective ---- */




static alloy_status lm_micro_batch(void *ctx, int micro, float grad_scale) {
    lm_obj *c = ctx;
    const alloy_train_options *o = c->opt;
    alloy_model *m = c->model;
    bool moe = m->config.n_experts > 0;
    if (micro == 0) {
        c->loss = 0.0;
        if (moe) {
            c->ms.aux = 0.0;
            memset(c->ms.counts, 0, sizeof(int64_t) * (size_t)m->config.n_layer * (size_t)m->config.n_experts);
        }
    }
    alloy_loader_next(c->train);
    int B = o->batch, T = o->seq;
    float l = 0.0f;
    alloy_status s;
    alloy_backward_in grad = {.aux_scale = grad_scale}; // the aux loss joins the loss at its scale
    if (o->objective) {
        s = o->objective->loss(o->objective->ctx, m, c->train->inputs, c->train->targets, B, T, grad_scale, &grad, &l);
    } else {
        float *dh = alloy_model_dhidden_buffer(m);
        s = alloy_model_forward_ex(m, c->train->inputs, B, T, false);
        if (!s) s = alloy_lm_loss_chunked(m, c->train->targets, NULL, B, T, grad_scale, dh, &l);
        grad.dhidden = dh;
    }
    if (!s && moe) moe_step_add(&c->ms, m, o->grad_accum);
    if (!s) s = alloy_model_backward(m, &grad);
    c->loss += l / o->grad_accum;
    return s;
}

static alloy_status lm_after_step(void *ctx, float lr) {
    const alloy_train_loss *l = ((lm_obj *)ctx)->opt->objective;
    return l && l->step ? l->step(l->ctx, lr) : ALLOY_STATUS_OK;
}

/* Mean held-out loss over the first eval_batches batches of the val split (always the same). */
static alloy_status lm_evaluate(void *ctx) {
    lm_obj *c = ctx;
    alloy_loader *l = c->val;
    int64_t max_batches = (l->n_windows + l->B - 1) / l->B;
    int64_t nb = c->opt->eval_batches < max_batches ? c->opt->eval_batches : max_batches;
    c->val_windows = nb * l->B < l->n_windows ? nb * l->B : l->n_windows;
    alloy_loader_seek(l, 0, 0);
    double sum = 0.0;
    for (int64_t b = 0; b < nb; b++) {
        alloy_loader_next(l);
        float loss;
        alloy_status s = alloy_model_forward_ex(c->model, l->inputs, l->B, l->T, false);
        if (!s) s = alloy_lm_loss_chunked(c->model, l->targets, NULL, l->B, l->T, 0.0f, NULL, &loss);
        if (s) return s;
        sum += loss;
    }
    c->val_loss = (float)(sum / (double)nb);
    return ALLOY_STATUS_OK;
}

/* An evaluation covers at most this many evaluations' worth of windows (eval_batches x batch)
 * that the whole held-out split is scored at the end of a run: more, and the summary says to run
 * alloy eval instead. */
#define LM_WHOLE_SPLIT_EVALS 10

/* At the end: the held-out loss over every window of the split, as alloy eval scores it (the
 * mean over every target token), when the evaluations covered only part of it and the whole
 * is at most LM_WHOLE_SPLIT_EVALS evaluations' worth. */
static alloy_status lm_evaluate_all(void *ctx) {
    lm_obj *c = ctx;
    int64_t n = c->val->n_windows, per_eval = (int64_t)c->opt->eval_batches * c->val->B;
    c->all_loss = -1.0;
    if (per_eval >= n || n > LM_WHOLE_SPLIT_EVALS * per_eval) return ALLOY_STATUS_OK;
    alloy_eval_result res;
    alloy_status s = alloy_eval_lm(c->model, c->ds, ALLOY_SPLIT_VAL, c->opt->batch, c->opt->seq, 0, &res);
    if (!s) c->all_loss = res.loss;
    return s;
}

/* What the held-out loss covers: "all N windows" or "the first K of N windows". */
static void lm_covers(char *buf, size_t size, int64_t k, int64_t n) {
    if (k >= n) snprintf(buf, size, "all %lld windows", (long long)n);
    else snprintf(buf, size, "the first %lld of %lld windows", (long long)k, (long long)n);
}

/* The figures at the end: the whole split's loss, or why it was not scored. */
static void lm_report_final(lm_obj *c, alloy_run_report *r) {
    int64_t n = c->val->n_windows;
    r->loss = c->all_loss;
    if (c->opt->objective) snprintf(r->name, sizeof r->name, "held-out CE");
    if (c->all_loss >= 0.0) {
        lm_covers(r->covers, sizeof r->covers, n, n);
        snprintf(r->fields, sizeof r->fields, ",\"val_loss_all\":%.6f,\"val_windows_all\":%lld", c->all_loss, (long long)n);
    } else if (c->val_windows < n) {
        snprintf(r->brief, sizeof r->brief, "the whole split, %lld windows, is more than %d evaluations' worth: alloy eval --seq %d "
                 "scores it", (long long)n, LM_WHOLE_SPLIT_EVALS, c->opt->seq);
    }
}

static void lm_report(void *ctx, alloy_run_phase phase, alloy_run_report *r) {
    lm_obj *c = ctx;
    if (phase == ALLOY_RUN_FINAL) {
        lm_report_final(c, r);
        return;
    }
    if (phase == ALLOY_RUN_EVAL) {
        r->loss = c->val_loss;
        if (c->opt->objective) snprintf(r->name, sizeof r->name, "held-out CE");
        lm_covers(r->covers, sizeof r->covers, c->val_windows, c->val->n_windows);
        snprintf(r->fields, sizeof r->fields, ",\"val_loss\":%.6f,\"val_ppl\":%.4f,\"val_windows\":%lld,\"val_windows_total\":%lld",
                 (double)c->val_loss, exp((double)c->val_loss), (long long)c->val_windows, (long long)c->val->n_windows);
        snprintf(r->brief, sizeof r->brief, "perplexity %.2f", exp((double)c->val_loss));
        return;
    }
    if (c->opt->objective && c->opt->objective->name) snprintf(r->name, sizeof r->name, "%s", c->opt->objective->name);
    r->loss = c->loss;
    r->tokens = (double)c->opt->batch * c->opt->seq * c->opt->grad_accum;
    snprintf(r->fields, sizeof r->fields, ",\"loss\":%.6f", c->loss);
    if (c->model->config.n_experts > 0) moe_step_print(r->tail, sizeof r->tail, &c->ms, c->model);
}

static void lm_describe(void *ctx, char *buf, size_t size) {
    lm_obj *c = ctx;
    const alloy_train_options *o = c->opt;
    const alloy_config *cfg = &c->model->config;
    size_t k = (size_t)snprintf(buf, size,
                                ",\"params\":%zu,\"train_tokens\":%llu,\"val_tokens\":%llu,\"unigram_entropy\":%.6f,"
                                "\"tokens_per_step\":%d,\"dtype\":\"%s\",\"recompute\":%s,\"activation_bytes\":%zu",
                                c->model->num_params, (unsigned long long)alloy_dataset_tokens(c->ds, ALLOY_SPLIT_TRAIN),
                                (unsigned long long)alloy_dataset_tokens(c->ds, ALLOY_SPLIT_VAL),
                                alloy_dataset_unigram_entropy(c->ds, 100000000ULL), o->batch * o->seq * o->grad_accum,
                                o->precision == ALLOY_PRECISION_BF16 ? "bf16" : "f32", o->recompute ? "true" : "false",
                                alloy_model_activation_bytes(c->model));
    if (cfg->n_experts > 0 && k < size)
        k += (size_t)snprintf(buf + k, size - k, ",\"experts\":%d,\"top_k\":%d,\"aux_loss_coef\":%g", cfg->n_experts,
                              cfg->top_k, cfg->router_aux_loss_coef);
    if ((cfg->n_experts > 0 || o->train_only != ALLOY_TRAIN_ONLY_ALL) && k < size)
        snprintf(buf + k, size - k, ",\"train_only\":\"%s\"", alloy_train_only_name(o->train_only));
}

static void lm_intro(void *ctx, alloy_progress *prog) {
    lm_obj *c = ctx;
    const alloy_train_options *o = c->opt;
    const alloy_config *cfg = &c->model->config;
    char np[32], nt[32], nv[32];
    alloy_format_count((double)c->model->num_params, np, sizeof np);
    alloy_format_count((double)alloy_dataset_tokens(c->ds, ALLOY_SPLIT_TRAIN), nt, sizeof nt);
    alloy_format_count((double)alloy_dataset_tokens(c->ds, ALLOY_SPLIT_VAL), nv, sizeof nv);
    alloy_progress_print(prog, "model: %s, %s parameters (L=%d C=%d H=%d KV=%d F=%d V=%d); data: %s train / %s held-out tokens",
                         alloy_family_name(cfg->family), np, cfg->n_layer, cfg->d_model, cfg->n_head, cfg->n_kv_head, cfg->d_ff,
                         cfg->vocab_size, nt, nv);
    const char *training = o->train_only == ALLOY_TRAIN_ONLY_ROUTER ? "the routers only"
                           : o->train_only == ALLOY_TRAIN_ONLY_MLP  ? (cfg->n_experts > 0 ? "the experts only" : "the MLPs only")
                                                                    : "every parameter";
    if (cfg->n_experts > 0)
        alloy_progress_print(prog, "mixture of %d experts, %d per token, aux loss coefficient %g; training %s", cfg->n_experts,
                             cfg->top_k, cfg->router_aux_loss_coef, training);
    else if (o->train_only != ALLOY_TRAIN_ONLY_ALL)
        alloy_progress_print(prog, "training %s", training);
    if (cfg->n_experts > 0 && cfg->top_k == 1 && o->train_only == ALLOY_TRAIN_ONLY_ROUTER) // top-1: the gate is always 1
        alloy_progress_print(prog, "warning: with 1 expert per token each gate is 1, so the LM loss gives the routers no "
                                   "gradient: they learn from the load-balancing loss alone (coefficient %g)%s",
                             cfg->router_aux_loss_coef, cfg->router_aux_loss_coef > 0.0 ? "" : ", which is off: nothing trains");
    alloy_progress_print(prog, "unigram entropy of the data: %.4f nats/token (a model that learns nothing beyond token "
                               "frequencies scores this)", alloy_dataset_unigram_entropy(c->ds, 100000000ULL));
}

/* The data, the model (new, from --init, or from the checkpoint resumed) and the loaders. */
static alloy_status lm_setup(lm_obj *c, const char *resume) {
    const alloy_train_options *o = c->opt;
    alloy_config cfg;
    alloy_status s = o->init_dir[0] ? alloy_checkpoint_resolve(o->init_dir, &c->init) : ALLOY_STATUS_OK;
    if (!s) s = alloy_dataset_open(&c->ds, o->data_dir, o->val_fraction);
    if (!s) s = lm_choose_config(o, resume, c->init, c->ds->vocab_size, &cfg);
    if (!s && o->aux_loss_coef >= 0.0) { // a coefficient chosen for this run (saved in its checkpoints)
        if (cfg.n_experts == 0) return alloy_fail_option(ALLOY_STATUS_USAGE, "aux_loss_coef", ": the model has no experts");
        cfg.router_aux_loss_coef = o->aux_loss_coef;
    }
    alloy_model_options mo = {.precision = o->precision, .recompute = o->recompute};
    if (!s) s = alloy_model_create_ex(&c->model, &cfg, o->batch, o->seq, &mo);
    if (s) return s;
    if (resume || c->init) {
        char *wp = alloy_path_join(resume ? resume : c->init, "model.safetensors");
        s = wp ? alloy_model_load_weights(c->model, wp) : ALLOY_STATUS_NOMEM;
        alloy_free(wp);
    } else {
        alloy_model_init_weights(c->model, o->seed);
    }
    if (!s) s = lm_check_tokenizer(o, c->model, resume ? resume : c->init, &c->tokenizer_json, &c->tokenizer_len);
    if (!s) s = alloy_loader_create(&c->train, c->ds, ALLOY_SPLIT_TRAIN, o->batch, o->seq, o->seed);
    if (!s) s = alloy_loader_create(&c->val, c->ds, ALLOY_SPLIT_VAL, o->batch, o->seq, o->seed);
    size_t LE = (size_t)cfg.n_layer * (size_t)cfg.n_experts;
    if (!s && LE && !(c->ms.counts = alloy_calloc(LE, sizeof(int64_t)))) s = ALLOY_STATUS_NOMEM;
    return s;
}

alloy_status alloy_train_run(const alloy_train_options *given, const char *resume, float *final_val) {
    alloy_train_options opts = *given, *o = &opts;
    lm_derive_defaults(o);
    alloy_status s = lm_check_options(o);
    if (s) return s;
    lm_obj c;
    memset(&c, 0, sizeof c);
    c.opt = o;
    s = lm_setup(&c, resume);
    alloy_objective obj = {
        .label = "", .ctx = &c, .groups = {{c.model, "optimizer.safetensors"}}, .n_groups = 1, .rng = &c.rng,
        .micro_batch = lm_micro_batch, .after_step = lm_after_step, .evaluate = lm_evaluate,
        .evaluate_all = lm_evaluate_all, .report = lm_report,
        .save = lm_save, .load = lm_load, .state_save = lm_state_save, .state_load = lm_state_load,
        .describe = lm_describe, .intro = lm_intro,
    };
    alloy_run_options ro;
    ALLOY_RUN_OPTIONS_FROM(ro, o);
    ro.train_only = o->train_only;
    alloy_run_result res;
    if (!s) s = alloy_run_execute(&ro, &obj, resume, &res);
    if (!s && final_val) *final_val = (float)res.last_val_loss;
    alloy_loader_destroy(c.train);
    alloy_loader_destroy(c.val);
    alloy_model_destroy(c.model);
    alloy_dataset_close(c.ds);
    alloy_free(c.tokenizer_json);
    alloy_free(c.ms.counts);
    alloy_free(c.init);
    return s;
}

