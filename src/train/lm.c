/*
 * lm.c — next-token prediction on token shards as an objective of the one run (alloy_train_run):
 * pretraining, continued pretraining (--init), MoE router or MLP tuning (--train-only), and any
 * alloy_train_loss in place of cross-entropy (distillation, alloy/distill.h).
 *
 * The data order is a function of (seed, epoch) and the loader's saved position; the held-out
 * loss is the mean over the first eval_batches batches of the val split (always the same).
 */
#include "alloy/data.h"
#include "alloy/io.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


alloy_train_options alloy_train_defaults(void) {
    alloy_train_options o;
    memset(&o, 0, sizeof o);
    o.steps = 1000;
    o.batch = 8;
    o.seq = 128;
    o.grad_accum = 1;
    o.lr = 1e-3;
    o.min_lr = 1e-4;
    o.warmup = 100;
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

/* ---- options <-> trainer_state.json ---- */

static cJSON *options_to_json(const alloy_train_options *o) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "data", o->data_dir);
    cJSON_AddStringToObject(j, "out", o->out_dir);
    cJSON_AddStringToObject(j, "preset", o->preset);
    cJSON_AddStringToObject(j, "config", o->config_path);
    cJSON_AddStringToObject(j, "init", o->init_dir);
    cJSON_AddNumberToObject(j, "steps", (double)o->steps);
    cJSON_AddNumberToObject(j, "batch", o->batch);
    cJSON_AddNumberToObject(j, "seq", o->seq);
    cJSON_AddNumberToObject(j, "grad_accum", o->grad_accum);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    cJSON_AddNumberToObject(j, "min_lr", o->min_lr);
    cJSON_AddNumberToObject(j, "warmup", (double)o->warmup);
    cJSON_AddNumberToObject(j, "beta1", o->adamw.beta1);
    cJSON_AddNumberToObject(j, "beta2", o->adamw.beta2);
    cJSON_AddNumberToObject(j, "eps", o->adamw.eps);
    cJSON_AddNumberToObject(j, "weight_decay", o->adamw.weight_decay);
    cJSON_AddNumberToObject(j, "grad_clip", o->adamw.grad_clip);
    char seed[24];
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed); // as a string: a double would lose bits
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "val_fraction", o->val_fraction);
    cJSON_AddNumberToObject(j, "eval_every", (double)o->eval_every);
    cJSON_AddNumberToObject(j, "eval_batches", o->eval_batches);
    cJSON_AddNumberToObject(j, "ckpt_every", (double)o->ckpt_every);
    cJSON_AddNumberToObject(j, "keep_ckpts", o->keep_ckpts);
    cJSON_AddStringToObject(j, "dtype", o->precision == ALLOY_PRECISION_BF16 ? "bf16" : "f32");
    cJSON_AddBoolToObject(j, "recompute", o->recompute);
    cJSON_AddStringToObject(j, "train_only", alloy_train_only_name(o->train_only));
    cJSON_AddNumberToObject(j, "aux_loss_coef", o->aux_loss_coef);
    if (o->objective_json[0]) cJSON_AddStringToObject(j, "objective", o->objective_json);
    return j;
}

static alloy_status get_str(const cJSON *j, const char *key, const char *what, char *dst, size_t cap) {
    const char *v;
    alloy_status s = alloy_json_get_string(j, key, what, &v);
    if (s) return s;
    if (strlen(v) >= cap) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"%s\" is too long", what, key);
    strcpy(dst, v);
    return ALLOY_STATUS_OK;
}

static alloy_status options_from_json(alloy_train_options *o, const cJSON *j, const char *what) {
    alloy_status s;
    int64_t i64;
    double d;
    const char *seed;
    if ((s = get_str(j, "data", what, o->data_dir, sizeof o->data_dir)) ||
        (s = get_str(j, "out", what, o->out_dir, sizeof o->out_dir)) ||
        (s = get_str(j, "preset", what, o->preset, sizeof o->preset)) ||
        (s = get_str(j, "config", what, o->config_path, sizeof o->config_path)) ||
        (s = get_str(j, "init", what, o->init_dir, sizeof o->init_dir)))
        return s;
#define INT(key, field)                                                                      \
    if ((s = alloy_json_get_int(j, key, what, &i64))) return s;                              \
    o->field = i64;
#define DBL(key, field)                                                                      \
    if ((s = alloy_json_get_double(j, key, what, &d))) return s;                             \
    o->field = d;
    INT("steps", steps) INT("batch", batch) INT("seq", seq) INT("grad_accum", grad_accum)
    DBL("lr", lr) DBL("min_lr", min_lr) INT("warmup", warmup)
    DBL("beta1", adamw.beta1) DBL("beta2", adamw.beta2) DBL("eps", adamw.eps)
    DBL("weight_decay", adamw.weight_decay) DBL("grad_clip", adamw.grad_clip)
    DBL("val_fraction", val_fraction) INT("eval_every", eval_every) INT("eval_batches", eval_batches)
    INT("ckpt_every", ckpt_every) INT("keep_ckpts", keep_ckpts)
#undef INT
#undef DBL
    // runs saved before these fields existed trained in fp32 without recomputation
    if (cJSON_GetObjectItemCaseSensitive(j, "dtype")) {
        const char *dt;
        if ((s = alloy_json_get_string(j, "dtype", what, &dt))) return s;
        if (!strcmp(dt, "f32")) o->precision = ALLOY_PRECISION_F32;
        else if (!strcmp(dt, "bf16")) o->precision = ALLOY_PRECISION_BF16;
        else return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"dtype\" is \"%s\", not f32 or bf16", what, dt);
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "recompute") &&
        (s = alloy_json_get_bool(j, "recompute", what, &o->recompute)))
        return s;
    // runs saved before these fields existed trained everything at the model's coefficient
    if (cJSON_GetObjectItemCaseSensitive(j, "train_only")) {
        const char *to;
        if ((s = alloy_json_get_string(j, "train_only", what, &to))) return s;
        if (!alloy_train_only_parse(to, &o->train_only))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"train_only\" is \"%s\", not all, router or mlp", what, to);
    }
    if ((s = alloy_json_opt_double(j, "aux_loss_coef", what, &o->aux_loss_coef))) return s;
    if (cJSON_GetObjectItemCaseSensitive(j, "objective") &&
        (s = get_str(j, "objective", what, o->objective_json, sizeof o->objective_json)))
        return s;
    if ((s = alloy_json_get_string(j, "seed", what, &seed))) return s;
    char *end;
    o->seed = strtoull(seed, &end, 10);
    if (*end || !*seed) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"seed\" is not a number", what);
    return ALLOY_STATUS_OK;
}

static alloy_status parse_saved(void *o, const cJSON *j, const char *what) { return options_from_json(o, j, what); }

alloy_status alloy_train_resume_options(const char *dir, alloy_train_options *opt, char **ckpt) {
    return alloy_run_resume_state(dir, ckpt, parse_saved, opt, opt->out_dir, sizeof opt->out_dir);
}


/* ---- the objective ---- */

/* An MoE model's routing over one step, for the metrics: the load-balancing loss (mean over the
 * micro-batches) and the (token, k) assignments per layer and expert (summed over them). */
typedef struct moe_step {
    double aux;
    int64_t *counts; /* (L, E) */
} moe_step;

typedef struct lm_obj {
    const alloy_train_options *opt;
    alloy_dataset *ds;
    alloy_model *model;
    alloy_loader *train, *val;
    alloy_rng rng;        /* for losses that sample; saved and restored by the run */
    char *init;           /* --init resolved to its checkpoint folder (NULL: none) */
    char *tokenizer_json; /* the data's tokenizer.json, copied into every checkpoint; NULL if none */
    size_t tokenizer_len;
    double loss;          /* this step's mean loss */
    float val_loss;       /* the last evaluation's */
    moe_step ms;          /* this step's routing (MoE models) */
} lm_obj;

static alloy_status check_options(const alloy_train_options *o) {
    if (o->steps < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--steps must be at least 1");
    if (o->batch < 1 || o->batch > 65536) return alloy_fail(ALLOY_STATUS_USAGE, "--batch must lie in [1, 65536]");
    if (o->seq < 1 || o->seq > (1 << 20)) return alloy_fail(ALLOY_STATUS_USAGE, "--seq must lie in [1, 1048576]");
    if (o->grad_accum < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--grad-accum must be at least 1");
    if (!(o->lr > 0.0 && o->lr < 10.0)) return alloy_fail(ALLOY_STATUS_USAGE, "--lr must lie in (0, 10)");
    if (!(o->min_lr >= 0.0 && o->min_lr <= o->lr)) return alloy_fail(ALLOY_STATUS_USAGE, "--min-lr must lie in [0, lr]");
    if (o->warmup < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--warmup must be >= 0");
    if (o->eval_every < 0 || o->ckpt_every < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--eval-every and --ckpt-every must be >= 0");
    if (o->eval_batches < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--eval-batches must be at least 1");
    if (o->keep_ckpts < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--keep must be at least 1");
    if (!o->data_dir[0]) return alloy_fail(ALLOY_STATUS_USAGE, "--data is required");
    if (!o->out_dir[0]) return alloy_fail(ALLOY_STATUS_USAGE, "--out is required");
    int models = !!o->preset[0] + !!o->config_path[0] + !!o->init_dir[0];
    if (models != 1) return alloy_fail(ALLOY_STATUS_USAGE, "give exactly one of --preset, --config or --init");
    return ALLOY_STATUS_OK;
}

/* Chooses the model's config: the resumed checkpoint's, the init checkpoint's, a config file,
 * or a preset sized to the data's vocabulary. */

static alloy_status choose_config(const alloy_train_options *o, const char *resume, const char *init, uint32_t data_vocab,
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
        return alloy_fail(ALLOY_STATUS_USAGE, "--seq %d exceeds the model's maximum sequence length %d", o->seq, cfg->max_seq_len);
    return ALLOY_STATUS_OK;
}


/* The data's tokenizer (its tokenizer.json, or "bytes") must be the model's when the model
 * already exists (--init, --resume): otherwise the ids mean different text. Loads the data's
 * tokenizer.json for copying into checkpoints. */
static alloy_status check_tokenizer(lm_obj *r, const char *model_dir) {
    char *dj = alloy_path_join(r->opt->data_dir, "tokenizer.json");
    if (!dj) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    if (alloy_path_exists(dj)) s = alloy_file_read_all(dj, &r->tokenizer_json, &r->tokenizer_len);
    if (!s && model_dir) {
        char *mj = alloy_path_join(model_dir, "tokenizer.json");
        alloy_tokenizer *a = NULL, *b = NULL;
        s = mj ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
        bool data_bpe = r->tokenizer_json != NULL, model_bpe = mj && alloy_path_exists(mj);
        if (!s && data_bpe != model_bpe && (data_bpe || !strcmp(r->model->config.tokenizer, "bpe")))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s was tokenized with %s but the model %s uses %s", r->opt->data_dir,
                           data_bpe ? "a BPE tokenizer" : "bytes", model_dir, model_bpe ? "a BPE tokenizer" : "bytes");
        if (!s && data_bpe && model_bpe) {
            s = alloy_tokenizer_load(&a, dj);
            if (!s) s = alloy_tokenizer_load(&b, mj);
            if (!s && alloy_tokenizer_hash(a) != alloy_tokenizer_hash(b))
                s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s was tokenized with a different tokenizer than the model in %s",
                               r->opt->data_dir, model_dir);
        }
        alloy_tokenizer_destroy(a);
        alloy_tokenizer_destroy(b);
        alloy_free(mj);
    }
    alloy_free(dj);
    return s;
}


static void moe_step_add(moe_step *ms, const alloy_model *m, int grad_accum) {
    size_t LE = (size_t)m->config.n_layer * (size_t)m->config.n_experts;
    ms->aux += alloy_model_aux_loss(m) / grad_accum;
    for (size_t i = 0; i < LE; i++) ms->counts[i] += alloy_model_expert_tokens(m)[i];
}

/* ,"aux_loss":..,"expert_tokens":[per expert, all layers],"expert_tokens_per_layer":[[..],..] */
static void moe_step_print(char *buf, size_t size, const moe_step *ms, const alloy_model *m) {
    int L = m->config.n_layer, E = m->config.n_experts;
    size_t k = 0;
#define PUT(...) (k += (size_t)snprintf(buf + k, k < size ? size - k : 0, __VA_ARGS__))
    PUT(",\"aux_loss\":%.6f,\"expert_tokens\":[", ms->aux);
    for (int e = 0; e < E; e++) {
        int64_t tot = 0;
        for (int l = 0; l < L; l++) tot += ms->counts[(size_t)l * E + e];
        PUT("%s%lld", e ? "," : "", (long long)tot);
    }
    PUT("],\"expert_tokens_per_layer\":[");
    for (int l = 0; l < L; l++) {
        PUT("%s[", l ? "," : "");
        for (int e = 0; e < E; e++) PUT("%s%lld", e ? "," : "", (long long)ms->counts[(size_t)l * E + e]);
        PUT("]");
    }
    PUT("]");
#undef PUT
}

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

static void lm_report(void *ctx, alloy_run_phase phase, alloy_run_report *r) {
    lm_obj *c = ctx;
    if (phase == ALLOY_RUN_EVAL) {
        r->loss = c->val_loss;
        snprintf(r->fields, sizeof r->fields, ",\"val_loss\":%.6f,\"val_ppl\":%.4f", (double)c->val_loss, exp((double)c->val_loss));
        snprintf(r->brief, sizeof r->brief, "perplexity %.2f", exp((double)c->val_loss));
        return;
    }
    r->loss = c->loss;
    r->tokens = (double)c->opt->batch * c->opt->seq * c->opt->grad_accum;
    snprintf(r->fields, sizeof r->fields, ",\"loss\":%.6f", c->loss);
    if (c->model->config.n_experts > 0) moe_step_print(r->tail, sizeof r->tail, &c->ms, c->model);
}

/* The model's files, the loss's own state (alloy_train_loss.save), the data's tokenizer. */
static alloy_status lm_save(void *ctx, const char *dir) {
    lm_obj *c = ctx;
    const alloy_train_loss *l = c->opt->objective;
    alloy_status s = alloy_model_save(c->model, dir);
    if (!s && l && l->save) s = l->save(l->ctx, dir);
    if (!s && c->tokenizer_json) {
        char *p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, c->tokenizer_json, c->tokenizer_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

static alloy_status lm_load(void *ctx, const char *dir) {
    const alloy_train_loss *l = ((lm_obj *)ctx)->opt->objective;
    return l && l->load ? l->load(l->ctx, dir) : ALLOY_STATUS_OK;
}

static alloy_status lm_state_save(void *ctx, cJSON *j) {
    lm_obj *c = ctx;
    char fp[24];
    snprintf(fp, sizeof fp, "%016" PRIx64, c->ds->fingerprint);
    cJSON_AddNumberToObject(j, "epoch", (double)c->train->epoch);
    cJSON_AddNumberToObject(j, "cursor", (double)c->train->cursor);
    cJSON_AddStringToObject(j, "data_fingerprint", fp);
    cJSON *o = options_to_json(c->opt);
    if (!o) return ALLOY_STATUS_NOMEM;
    cJSON_AddItemToObject(j, "options", o);
    return ALLOY_STATUS_OK;
}

static alloy_status lm_state_load(void *ctx, const cJSON *j, const char *what) {
    lm_obj *c = ctx;
    int64_t epoch = 0, cursor = 0;
    const char *fp = NULL;
    alloy_status s = alloy_json_get_int(j, "epoch", what, &epoch);
    if (!s) s = alloy_json_get_int(j, "cursor", what, &cursor);
    if (!s) s = alloy_json_get_string(j, "data_fingerprint", what, &fp);
    if (!s) {
        char want[24];
        snprintf(want, sizeof want, "%016" PRIx64, c->ds->fingerprint);
        if (strcmp(fp, want) != 0)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data in %s has changed since this run started", what, c->ds->dir);
    }
    if (!s && (s = alloy_loader_seek(c->train, epoch, cursor))) alloy_error_prefix("%s", what);
    return s;
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
    alloy_progress_print(prog, "unigram entropy of the data: %.4f nats/token (a model that learns nothing beyond token "
                               "frequencies scores this)", alloy_dataset_unigram_entropy(c->ds, 100000000ULL));
}

/* The data, the model (new, from --init, or from the checkpoint resumed) and the loaders. */
static alloy_status lm_setup(lm_obj *c, const char *resume) {
    const alloy_train_options *o = c->opt;
    alloy_config cfg;
    alloy_status s = o->init_dir[0] ? alloy_checkpoint_resolve(o->init_dir, &c->init) : ALLOY_STATUS_OK;
    if (!s) s = alloy_dataset_open(&c->ds, o->data_dir, o->val_fraction);
    if (!s) s = choose_config(o, resume, c->init, c->ds->vocab_size, &cfg);
    if (!s && o->aux_loss_coef >= 0.0) { // a coefficient chosen for this run (saved in its checkpoints)
        if (cfg.n_experts == 0) return alloy_fail(ALLOY_STATUS_USAGE, "--aux-loss-coef: the model has no experts");
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
    if (!s) s = check_tokenizer(c, resume ? resume : c->init);
    if (!s) s = alloy_loader_create(&c->train, c->ds, ALLOY_SPLIT_TRAIN, o->batch, o->seq, o->seed);
    if (!s) s = alloy_loader_create(&c->val, c->ds, ALLOY_SPLIT_VAL, o->batch, o->seq, o->seed);
    size_t LE = (size_t)cfg.n_layer * (size_t)cfg.n_experts;
    if (!s && LE && !(c->ms.counts = alloy_calloc(LE, sizeof(int64_t)))) s = ALLOY_STATUS_NOMEM;
    return s;
}

alloy_status alloy_train_run(const alloy_train_options *o, const char *resume, float *final_val) {
    alloy_status s = check_options(o);
    if (s) return s;
    lm_obj c;
    memset(&c, 0, sizeof c);
    c.opt = o;
    s = lm_setup(&c, resume);
    alloy_objective obj = {
        .label = "", .ctx = &c, .groups = {{c.model, "optimizer.safetensors"}}, .n_groups = 1, .rng = &c.rng,
        .micro_batch = lm_micro_batch, .after_step = lm_after_step, .evaluate = lm_evaluate, .report = lm_report,
        .save = lm_save, .load = lm_load, .state_save = lm_state_save, .state_load = lm_state_load,
        .describe = lm_describe, .intro = lm_intro,
    };
    alloy_run_options ro = alloy_run_defaults();
    snprintf(ro.out_dir, sizeof ro.out_dir, "%s", o->out_dir);
    ro.steps = o->steps;
    ro.grad_accum = o->grad_accum;
    ro.schedule = (alloy_schedule){.max_lr = o->lr, .min_lr = o->min_lr, .warmup_steps = o->warmup};
    ro.adamw = o->adamw;
    ro.train_only = o->train_only;
    ro.seed = o->seed;
    ro.eval_every = o->eval_every;
    ro.ckpt_every = o->ckpt_every;
    ro.keep_ckpts = o->keep_ckpts;
    ro.log_every = o->log_every;
    ro.quiet = o->quiet;
    ro.resume_mode = o->resume_mode;
    ro.stop = o->stop;
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
