/*
 * lm_options.c — the LM objective's options (alloy_train_options): defaults, the schema that
 * saves them with a run and gives the command its flags, their checks and derived defaults, and
 * the choice of the model's config and the tokenizer check before a run (alloy/train.h).
 */
#include "alloy/data.h"
#include "alloy/io.h"
#include "alloy/options.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <string.h>

alloy_train_options alloy_train_defaults(void) {
    alloy_train_options o;
    memset(&o, 0, sizeof o);
    o.steps = 1000;
    o.batch = 8;
    o.seq = 128;
    o.grad_accum = 1;
    o.lr = 1e-3;
    o.min_lr = -1.0; // derived: lr / 10
    o.warmup = -1;   // derived: min(steps / 10, 100)
    o.adamw = alloy_adamw_defaults();
    o.seed = 1337;
    o.val_fraction = 0.05;
    o.eval_every = 100;
    o.eval_batches = 20;
    o.ckpt_every = 500;
    o.keep_ckpts = 3;
    o.log_every = 10;
    o.aux_loss_coef = -1.0;
    return o;
}

/* ---- the options' schema: trainer_state.json, resume, the command's flags ---- */

static const char *const precisions[] = {"f32", "bf16", NULL};
static const char *const train_onlys[] = {"all", "router", "mlp", NULL};

#define ROW(F, K, FL, D) ALLOY_OPT_ROW(alloy_train_options, F, K, FL, D)
#define NAMED(F, N, FLAG, K, FL, C, D) ALLOY_OPT_NAMED(alloy_train_options, F, N, FLAG, K, FL, C, D)
static const alloy_option train_rows[] = {
    NAMED(data_dir, "data", NULL, ALLOY_OPT_STRING, 0, NULL, "token shards (alloy prepare)"),
    NAMED(out_dir, "out", NULL, ALLOY_OPT_STRING, 0, NULL, "the run folder"),
    ROW(preset, ALLOY_OPT_STRING, 0, "a model preset"),
    NAMED(config_path, "config", NULL, ALLOY_OPT_STRING, 0, NULL, "a config.json"),
    NAMED(init_dir, "init", NULL, ALLOY_OPT_STRING, 0, NULL, "a checkpoint or run folder to start from"),
    ROW(steps, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "optimiser steps in all"),
    ROW(batch, ALLOY_OPT_INT, 0, "micro-batch size"),
    ROW(seq, ALLOY_OPT_INT, 0, "sequence length"),
    ALLOY_OPT_SCHEDULE_ROWS(alloy_train_options),
    ALLOY_OPT_ADAMW_ROWS(alloy_train_options),
    ALLOY_OPT_EVAL_ROWS(alloy_train_options),
    ROW(seed, ALLOY_OPT_UINT64, 0, "initialisation and data order"),
    ROW(val_fraction, ALLOY_OPT_DOUBLE, 0, "held out when the data has no val shards"),
    NAMED(precision, "dtype", NULL, ALLOY_OPT_ENUM, ALLOY_OPT_OPTIONAL, precisions, "matrix products: f32 or bf16"),
    ROW(recompute, ALLOY_OPT_BOOL, ALLOY_OPT_OPTIONAL | ALLOY_OPT_RESUME, "activation recomputation"),
    NAMED(train_only, "train_only", NULL, ALLOY_OPT_ENUM, ALLOY_OPT_OPTIONAL, train_onlys, "which parameters train"),
    ROW(aux_loss_coef, ALLOY_OPT_DOUBLE, ALLOY_OPT_OPTIONAL, "MoE load-balancing coefficient"),
    NAMED(objective_json, "objective", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL | ALLOY_OPT_NOFLAG, NULL, NULL),
    ALLOY_OPT_CADENCE_ROWS(alloy_train_options),
};
#undef ROW
#undef NAMED

const alloy_schema *alloy_train_schema(void) {
    static const alloy_schema s = {train_rows, (int)(sizeof train_rows / sizeof train_rows[0])};
    return &s;
}

alloy_status alloy_train_resume_options(const char *dir, alloy_train_options *opt, char **ckpt) {
    return alloy_run_resume_options(dir, ckpt, alloy_train_schema(), "train distill", opt, opt->out_dir, sizeof opt->out_dir);
}


#define BAD(opt, ...) alloy_fail_option(ALLOY_STATUS_USAGE, opt, __VA_ARGS__)
alloy_status lm_check_options(const alloy_train_options *o) {
    if (o->batch < 1 || o->batch > 65536) return BAD("batch", "must lie in [1, 65536]");
    if (o->seq < 1 || o->seq > (1 << 20)) return BAD("seq", "must lie in [1, 1048576]");
    if (!(o->lr > 0.0 && o->lr < 10.0)) return BAD("lr", "must lie in (0, 10)");
    if (!(o->min_lr >= 0.0 && o->min_lr <= o->lr)) return BAD("min_lr", "must lie in [0, lr]");
    if (o->warmup < 0) return BAD("warmup", "must be >= 0");
    if (o->eval_batches < 1) return BAD("eval_batches", "must be at least 1");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) return BAD("val_fraction", "must lie in [0, 1)");
    if (!o->data_dir[0]) return BAD("data", "is required");
    if (!o->out_dir[0]) return BAD("out", "is required");
    int models = !!o->preset[0] + !!o->config_path[0] + !!o->init_dir[0];
    if (models != 1) return alloy_fail(ALLOY_STATUS_USAGE, "give exactly one of --preset, --config or --init");
    return ALLOY_STATUS_OK;
}
#undef BAD

/* The defaults that follow from other options: min_lr lr / 10, warmup min(steps / 10, 100). */
void lm_derive_defaults(alloy_train_options *o) {
    if (o->min_lr < 0.0) o->min_lr = o->lr / 10.0;
    if (o->warmup < 0) o->warmup = o->steps / 10 < 100 ? o->steps / 10 : 100;
}

/* Chooses the model's config: the resumed checkpoint's, the init checkpoint's, a config file,
 * or a preset sized to the data's vocabulary. */
alloy_status lm_choose_config(const alloy_train_options *o, const char *resume, const char *init, uint32_t data_vocab,
                                 alloy_config *cfg) {
    alloy_status s;
    const char *dir = resume ? resume : init;
    if (dir) {
        char *p = alloy_path_join(dir, "config.json");
        s = p ? alloy_config_load(cfg, p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    } else if (o->config_path[0]) {
        s = alloy_config_load(cfg, o->config_path);
    } else {
        s = alloy_config_preset(cfg, o->preset, (int)data_vocab);
        // a new model is made for the context it trains on: positions it never sees would stay
        // untrained (learned positions) or untested (RoPE)
        if (!s && o->seq < cfg->max_seq_len) cfg->max_seq_len = o->seq;
    }
    if (s) return s;
    if (!cfg->tokenizer[0]) {
        // a new model takes the tokenizer its data was made with
        char *mp = alloy_path_join(o->data_dir, "manifest.json");
        cJSON *man = NULL;
        if (mp && alloy_path_exists(mp) && alloy_json_read_file(mp, &man) == ALLOY_STATUS_OK) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(man, "tokenizer");
            if (cJSON_IsString(t) && strlen(t->valuestring) < sizeof cfg->tokenizer) strcpy(cfg->tokenizer, t->valuestring);
        }
        cJSON_Delete(man);
        alloy_free(mp);
    }
    if ((uint32_t)cfg->vocab_size < data_vocab)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the data's vocabulary (%u) is larger than the model's (%d)", data_vocab,
                          cfg->vocab_size);
    if (o->seq > cfg->max_seq_len)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "seq", "%d exceeds the model's maximum sequence length %d", o->seq, cfg->max_seq_len);
    return ALLOY_STATUS_OK;
}


/* The data's tokenizer (its tokenizer.json, or "bytes") must be the model's when the model
 * already exists (--init, --resume): otherwise the ids mean different text. Loads the data's
 * tokenizer.json for copying into checkpoints. */
alloy_status lm_check_tokenizer(const alloy_train_options *o, const alloy_model *m, const char *model_dir, char **json,
                                 size_t *len) {
    char *dj = alloy_path_join(o->data_dir, "tokenizer.json");
    if (!dj) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    if (alloy_path_exists(dj)) s = alloy_file_read_all(dj, json, len);
    if (!s && model_dir) {
        char *mj = alloy_path_join(model_dir, "tokenizer.json");
        alloy_tokenizer *a = NULL, *b = NULL;
        s = mj ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
        bool data_bpe = *json != NULL, model_bpe = mj && alloy_path_exists(mj);
        if (!s && data_bpe != model_bpe && (data_bpe || !strcmp(m->config.tokenizer, "bpe")))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s was tokenized with %s but the model %s uses %s", o->data_dir,
                           data_bpe ? "a BPE tokenizer" : "bytes", model_dir, model_bpe ? "a BPE tokenizer" : "bytes");
        if (!s && data_bpe && model_bpe) {
            s = alloy_tokenizer_load(&a, dj);
            if (!s) s = alloy_tokenizer_load(&b, mj);
            if (!s && alloy_tokenizer_hash(a) != alloy_tokenizer_hash(b))
                s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s was tokenized with a different tokenizer than the model in %s",
                               o->data_dir, model_dir);
        }
        alloy_tokenizer_destroy(a);
        alloy_tokenizer_destroy(b);
        alloy_free(mj);
    }
    alloy_free(dj);
    return s;
}


