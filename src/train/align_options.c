/*
 * align_options.c — the options of SFT, reward and DPO runs (alloy_align_options): TRL's
 * defaults, the schema that saves them with a run and gives the commands their flags, reading
 * a run's saved options back, and their checks (alloy/align.h).
 */
#include "alloy/align.h"
#include "alloy/options.h"
#include "internal.h"

#include <cJSON.h>
#include <string.h>

/* ---- options ---- */

alloy_align_options alloy_align_defaults(alloy_align_kind kind) {
    alloy_align_options o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
    o.epochs = 3.0;
    o.batch = 8;
    o.grad_accum = 1;
    o.lr = kind == ALLOY_ALIGN_DPO ? 1e-6 : kind == ALLOY_ALIGN_REWARD ? 1e-4 : 2e-5;
    o.min_lr = -1.0; // derived: lr / 10
    o.adamw = (alloy_adamw_config){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f, .grad_clip = 1.0f};
    o.seed = 1337;
    o.val_fraction = 0.05;
    o.eval_every = 100;
    o.ckpt_every = 500;
    o.keep_ckpts = 3;
    o.log_every = 10;
    o.dpo = (alloy_dpo_config){.beta = 0.1, .loss = ALLOY_DPO_SIGMOID, .label_smoothing = 0.0};
    return o;
}

/* ---- the options' schema: trainer_state.json, resume, the command's flags ---- */

static const char *const kinds[] = {"sft", "reward", "dpo", NULL};
static const char *const templates[] = {"chatml", "raw", NULL};
static const char *const dpo_losses[] = {"sigmoid", "ipo", NULL};

#define ROW(F, K, FL, D) ALLOY_OPT_ROW(alloy_align_options, F, K, FL, D)
#define NAMED(F, N, FLAG, K, FL, C, D) ALLOY_OPT_NAMED(alloy_align_options, F, N, FLAG, K, FL, C, D)
static const alloy_option align_rows[] = {
    NAMED(kind, "objective", NULL, ALLOY_OPT_ENUM, ALLOY_OPT_NOFLAG, kinds, NULL),
    NAMED(model_dir, "model", NULL, ALLOY_OPT_STRING, 0, NULL, "the model to start from"),
    NAMED(ref_dir, "ref", NULL, ALLOY_OPT_STRING, 0, NULL, "DPO: the frozen reference (default: the model)"),
    NAMED(data_path, "data", NULL, ALLOY_OPT_STRING, 0, NULL, "JSONL of examples"),
    NAMED(val_path, "val", NULL, ALLOY_OPT_STRING, 0, NULL, "held-out JSONL"),
    ALLOY_OPT_DATA_FIELDS_ROWS(alloy_align_options, fields),
    NAMED(out_dir, "out", NULL, ALLOY_OPT_STRING, 0, NULL, "the run folder"),
    NAMED(tmpl, "template", NULL, ALLOY_OPT_ENUM, 0, templates, "chatml or raw"),
    ROW(steps, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "optimiser steps (0: epochs)"),
    ROW(epochs, ALLOY_OPT_DOUBLE, 0, "passes over the examples when steps is 0"),
    ROW(batch, ALLOY_OPT_INT, 0, "examples per micro-batch"),
    ROW(seq, ALLOY_OPT_INT, 0, "tokens per sequence at most"),
    ALLOY_OPT_SCHEDULE_ROWS(alloy_align_options),
    ALLOY_OPT_ADAMW_ROWS(alloy_align_options),
    ALLOY_OPT_EVAL_ROWS(alloy_align_options),
    ROW(seed, ALLOY_OPT_UINT64, 0, "data order, held-out choice; reward: a new score head"),
    ROW(val_fraction, ALLOY_OPT_DOUBLE, 0, "held out when --val is not given"),
    NAMED(dpo.beta, "dpo_beta", "beta", ALLOY_OPT_DOUBLE, 0, NULL, "DPO: beta"),
    NAMED(dpo.loss, "dpo_loss", "loss", ALLOY_OPT_ENUM, 0, dpo_losses, "DPO: sigmoid or ipo"),
    NAMED(dpo.label_smoothing, "label_smoothing", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "DPO: label smoothing"),
    ALLOY_OPT_CADENCE_ROWS(alloy_align_options),
};
#undef ROW
#undef NAMED

const alloy_schema *alloy_align_schema(void) {
    static const alloy_schema s = {align_rows, (int)(sizeof align_rows / sizeof align_rows[0])};
    return &s;
}

alloy_status alloy_align_resume_options(const char *dir, alloy_align_options *o, char **ckpt) {
    o->fields.layout = ALLOY_LAYOUT_ALLOY; // runs saved before layouts existed read alloy's fields alone
    alloy_status s = alloy_run_resume_options(dir, ckpt, alloy_align_schema(), "sft reward dpo", o, o->out_dir, sizeof o->out_dir);
    if (!s) o->tmpl_set = true; // the run's own
    return s;
}

#define BAD(opt, ...) alloy_fail_option(ALLOY_STATUS_USAGE, opt, __VA_ARGS__)
alloy_status align_check_options(const alloy_align_options *o) {
    if (o->kind != ALLOY_ALIGN_SFT && o->kind != ALLOY_ALIGN_REWARD && o->kind != ALLOY_ALIGN_DPO)
        return alloy_fail(ALLOY_STATUS_USAGE, "the alignment run trains sft, reward or dpo");
    if (!o->model_dir[0]) return BAD("model", "is required");
    if (!o->data_path[0]) return BAD("data", "is required");
    if (o->steps < 0) return BAD("steps", "must be at least 1");
    if (o->steps == 0 && !(o->epochs > 0.0 && o->epochs <= 1e6)) return BAD("epochs", "must lie in (0, 1e6]");
    if (o->batch < 1 || o->batch > 65536) return BAD("batch", "must lie in [1, 65536]");
    if (o->seq < 0 || o->seq == 1 || o->seq > (1 << 20)) return BAD("seq", "must lie in [2, 1048576]");
    if (!(o->lr > 0.0 && o->lr < 10.0)) return BAD("lr", "must lie in (0, 10)");
    if (!(o->min_lr >= 0.0 && o->min_lr <= o->lr)) return BAD("min_lr", "must lie in [0, lr]");
    if (o->warmup < 0) return BAD("warmup", "must be >= 0");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) return BAD("val_fraction", "must lie in [0, 1)");
    if (o->eval_batches < 0) return BAD("eval_batches", "must be >= 0");
    if (o->kind == ALLOY_ALIGN_DPO && !(o->dpo.beta > 0.0 && o->dpo.beta < 1e6)) return BAD("dpo_beta", "must lie in (0, 1e6)");
    if (o->kind == ALLOY_ALIGN_DPO && !(o->dpo.label_smoothing >= 0.0 && o->dpo.label_smoothing < 0.5))
        return BAD("label_smoothing", "must lie in [0, 0.5)");
    return ALLOY_STATUS_OK;
}
#undef BAD

