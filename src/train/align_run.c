/*
 * align_run.c — SFT, reward models and DPO (alloy/align.h) as an objective of the one run
 * (alloy_run_execute): the alignment data read through the chat template, the held-out split,
 * the order of examples, DPO's frozen reference, and the figures each objective reports.
 *
 * Examples are not packed: each is one row, padded to the batch's longest sequence. The order
 * of examples is a function of (seed, epoch) and the saved position. DPO's reference
 * log-probabilities are computed before training (the reference is frozen), in a fixed order,
 * and recomputed the same way on resume.
 */
#include "align_internal.h"
#include "alloy/align.h"
#include "alloy/options.h"
#include "alloy/io.h"
#include "alloy/options.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The reference's rows of a batch of examples idx of d. */
static void gather_ref(align_run *r, const alloy_align_data *d, const double *ref, const int64_t *idx, int n) {
    int row = 0;
    for (int e = 0; e < n; e++)
        for (int64_t q = d->ex_start[idx[e]]; q < d->ex_start[idx[e] + 1]; q++) r->ref_rows[row++] = ref[q];
}

/* One micro-batch of the objective (grad_scale 0: evaluation). */
static alloy_status objective(align_run *r, const alloy_align_data *d, const double *ref, const int64_t *idx, int n,
                              float grad_scale, alloy_align_stats *st) {
    alloy_status s = alloy_align_batch_make(&r->batch, d, idx, n);
    if (s) return s;
    switch (r->opt.kind) {
    case ALLOY_ALIGN_REWARD: return alloy_reward_step(r->rm, &r->batch, grad_scale, st);
    case ALLOY_ALIGN_DPO:
        gather_ref(r, d, ref, idx, n);
        return alloy_dpo_step(r->model, &r->batch, r->ref_rows, &r->opt.dpo, grad_scale, st);
    default: return alloy_sft_step(r->model, &r->batch, grad_scale, st);
    }
}

/* The next micro-batch's examples (crossing into the next epoch as needed). */
static void next_examples(align_run *r, int n) {
    for (int i = 0; i < n; i++) {
        if (r->cursor >= r->n_train) {
            r->epoch++;
            r->cursor = 0;
            align_shuffle(r);
        }
        r->ex_buf[i] = r->perm[r->cursor++];
    }
}

static alloy_status evaluate(align_run *r, alloy_align_stats *st) {
    memset(st, 0, sizeof *st);
    alloy_status s = ALLOY_STATUS_OK;
    int nb = 0;
    for (int64_t e0 = 0; e0 < r->n_val && !s; e0 += r->opt.batch, nb++) {
        if (r->opt.eval_batches > 0 && nb >= r->opt.eval_batches) break;
        int n = (int)(r->n_val - e0 < r->opt.batch ? r->n_val - e0 : r->opt.batch);
        s = objective(r, r->vd, r->vd == &r->vdata ? r->vref : r->ref, r->val_idx + e0, n, 0.0f, st);
    }
    return s;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/* The objective's figures as JSON members (",\"key\":value..."), keys prefixed with `pre`. */
static void stats_fields(char *buf, size_t size, alloy_align_kind kind, const alloy_align_stats *st, const char *pre) {
    double loss = ratio(st->loss_sum, st->weight);
    size_t k = (size_t)snprintf(buf, size, ",\"%sloss\":%.6f", pre, loss);
    if (kind == ALLOY_ALIGN_SFT)
        snprintf(buf + k, size - k, ",\"%sppl\":%.4f,\"%strained_tokens\":%.0f", pre, exp(loss), pre, st->weight);
    else if (kind == ALLOY_ALIGN_REWARD)
        snprintf(buf + k, size - k, ",\"%saccuracy\":%.6f,\"%smargin\":%.6f,\"%spairs\":%.0f", pre, ratio(st->correct, st->pairs),
                 pre, ratio(st->margin_sum, st->pairs), pre, st->pairs);
    else
        snprintf(buf + k, size - k,
                 ",\"%srewards_chosen\":%.6f,\"%srewards_rejected\":%.6f,\"%srewards_margin\":%.6f,"
                 "\"%srewards_accuracy\":%.6f,\"%slogps_chosen\":%.6f,\"%slogps_rejected\":%.6f",
                 pre, ratio(st->chosen_sum, st->weight), pre, ratio(st->rejected_sum, st->weight), pre,
                 ratio(st->margin_sum, st->pairs), pre, ratio(st->correct, st->pairs), pre,
                 ratio(st->logp_chosen_sum, st->weight), pre, ratio(st->logp_rejected_sum, st->weight));
}

/* The progress line's figure beside the loss. */
static void stats_brief(char *buf, size_t size, alloy_align_kind kind, const alloy_align_stats *st) {
    if (kind == ALLOY_ALIGN_SFT) snprintf(buf, size, "%.0f response tokens", st->weight);
    else if (kind == ALLOY_ALIGN_REWARD) snprintf(buf, size, "acc %.3f", ratio(st->correct, st->pairs));
    else snprintf(buf, size, "acc %.3f margin %.4f", ratio(st->correct, st->pairs), ratio(st->margin_sum, st->pairs));
}


static alloy_status align_micro_batch(void *ctx, int micro, float grad_scale) {
    align_run *r = ctx;
    if (micro == 0) memset(&r->st, 0, sizeof r->st);
    next_examples(r, r->opt.batch);
    return objective(r, &r->data, r->ref, r->ex_buf, r->opt.batch, grad_scale, &r->st);
}

static alloy_status align_evaluate(void *ctx) { return evaluate(ctx, &((align_run *)ctx)->last_val); }

static void align_report(void *ctx, alloy_run_phase phase, alloy_run_report *out) {
    align_run *r = ctx;
    const alloy_align_stats *st = phase == ALLOY_RUN_EVAL ? &r->last_val : &r->st;
    out->loss = ratio(st->loss_sum, st->weight);
    out->tokens = st->tokens;
    stats_fields(out->fields, sizeof out->fields, r->opt.kind, st, phase == ALLOY_RUN_EVAL ? "val_" : "");
    stats_brief(out->brief, sizeof out->brief, r->opt.kind, st);
    if (phase == ALLOY_RUN_EVAL) {
        size_t k = strlen(out->fields);
        snprintf(out->fields + k, sizeof out->fields - k, ",\"val_examples\":%lld", (long long)r->n_val);
        int64_t most = (int64_t)r->opt.eval_batches * r->opt.batch; // evaluate's cut (0: none)
        if (r->opt.eval_batches > 0 && most < r->n_val)
            snprintf(out->covers, sizeof out->covers, "the first %lld of %lld held-out examples", (long long)most,
                     (long long)r->n_val);
        else
            snprintf(out->covers, sizeof out->covers, "all %lld held-out examples", (long long)r->n_val);
    }
}

/* The model's files of an alignment checkpoint: the model (with its score head for a reward
 * model), the chat template, the tokenizer. */
static alloy_status align_save(void *ctx, const char *dir) {
    align_run *r = ctx;
    alloy_status s = r->rm ? alloy_reward_model_save(r->rm, dir) : alloy_model_save(r->model, dir);
    if (!s) s = alloy_chat_save_template(dir, r->opt.tmpl);
    if (!s && r->tok_json) {
        char *p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, r->tok_json, r->tok_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

static uint64_t data_fingerprint(const align_run *r) {
    return r->data.fingerprint ^ (r->vd == &r->vdata ? r->vdata.fingerprint : 0);
}

static alloy_status align_state_save(void *ctx, cJSON *j) {
    align_run *r = ctx;
    return alloy_run_state_put_data(j, r->epoch, r->cursor, data_fingerprint(r), alloy_options_save(alloy_align_schema(), &r->opt));
}

static alloy_status align_state_load(void *ctx, const cJSON *j, const char *what) {
    align_run *r = ctx;
    alloy_status s = alloy_run_state_get_data(j, what, r->opt.data_path, data_fingerprint(r), r->n_train, &r->epoch, &r->cursor);
    if (!s) align_shuffle(r); // the order of the epoch the run is in
    return s;
}

static void align_describe(void *ctx, char *buf, size_t size) {
    align_run *r = ctx;
    const alloy_align_options *o = &r->opt;
    snprintf(buf, size,
             ",\"objective\":\"%s\",\"template\":\"%s\",\"layout\":\"%s\",\"params\":%zu,\"train_examples\":%lld,"
             "\"val_examples\":%lld,\"sequences\":%lld,\"truncated\":%lld,\"max_len\":%d,\"vocab_added\":%d,\"steps\":%lld",
             alloy_align_kind_name(o->kind), alloy_chat_template_name(o->tmpl), alloy_data_layout_name(r->data.layout),
             r->model->num_params + (r->rm ? 1 + (size_t)r->model->config.d_model : 0), (long long)r->n_train, (long long)r->n_val,
             (long long)(r->data.n_seqs + (r->vd == &r->vdata ? r->vdata.n_seqs : 0)),
             (long long)(r->data.truncated + r->vdata.truncated), o->seq, r->added, (long long)o->steps);
}

static void align_intro(void *ctx, alloy_progress *prog) {
    align_run *r = ctx;
    const alloy_align_options *o = &r->opt;
    const alloy_config *c = &r->model->config;
    char np[32];
    alloy_format_count((double)r->model->num_params, np, sizeof np);
    alloy_progress_print(prog, "%s: %s model, %s parameters (L=%d C=%d V=%d); %lld training / %lld held-out examples "
                               "(%s layout; %lld sequences cut to %d tokens); template %s%s",
                         alloy_align_kind_name(o->kind), alloy_family_name(c->family), np, c->n_layer, c->d_model,
                         c->vocab_size, (long long)r->n_train, (long long)r->n_val, alloy_data_layout_name(r->data.layout),
                         (long long)(r->data.truncated + r->vdata.truncated), o->seq, alloy_chat_template_name(o->tmpl),
                         r->added ? " (its tokens added to the tokenizer and the embedding)" : "");
}

alloy_status alloy_align_run(const alloy_align_options *given, const char *resume, alloy_align_stats *final_val) {
    align_run r;
    memset(&r, 0, sizeof r);
    r.opt = *given;
    alloy_align_options *opt = &r.opt, *o = opt;
    if (opt->min_lr < 0.0) opt->min_lr = opt->lr / 10.0; // the derived default
    alloy_status s = align_check_options(opt);
    if (!s) s = align_setup(&r, resume);
    r.resumed = resume != NULL;
    if (!s) {
        alloy_objective obj = {
            .label = o->kind == ALLOY_ALIGN_SFT ? "sft " : o->kind == ALLOY_ALIGN_REWARD ? "reward " : "dpo ", .ctx = &r, .groups = {{r.model, "optimizer.safetensors"}}, .n_groups = 1,
            .rng = &r.rng, .micro_batch = align_micro_batch, .evaluate = r.n_val > 0 ? align_evaluate : NULL,
            .report = align_report, .save = align_save, .state_save = align_state_save, .state_load = align_state_load,
            .describe = align_describe, .intro = align_intro,
        };
        if (r.rm) obj.groups[obj.n_groups++] = (alloy_param_group){&r.rm->head_view, "score_optimizer.safetensors"};
        alloy_run_options ro;
        ALLOY_RUN_OPTIONS_FROM(ro, opt);
        s = alloy_run_execute(&ro, &obj, resume, NULL);
        if (!s && final_val) *final_val = r.last_val;
    }
    align_free(&r);
    return s;
}


