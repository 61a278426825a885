/*
 * trainer.c — the training loop: data, model, AdamW, schedule, accumulation, clipping,
 * held-out evaluation, metrics (JSONL), progress, checkpoints and exact resume.
 *
 * Exact resume rests on three things: the data order is a function of (seed, epoch) and the
 * saved position; the optimiser state and step are saved with the weights; and every kernel's
 * reductions are ordered the same way for a given thread count.
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

#define ALLOY_VERSION "0.1.0"

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

alloy_status alloy_train_resume_options(const char *dir, alloy_train_options *opt, char **ckpt) {
    *ckpt = NULL;
    char *sp = alloy_path_join(dir, "trainer_state.json");
    if (!sp) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    bool run_folder = false;
    if (alloy_path_exists(sp)) {
        *ckpt = alloy_strdup(dir);
    } else {
        run_folder = true;
        s = alloy_run_latest(dir, ckpt);
        alloy_free(sp);
        sp = s ? NULL : alloy_path_join(*ckpt, "trainer_state.json");
        if (!s && !sp) s = ALLOY_STATUS_NOMEM;
    }
    cJSON *state = NULL;
    if (!s) s = alloy_json_read_file(sp, &state);
    if (!s) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(state, "options");
        if (!cJSON_IsObject(o)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing \"options\"", sp);
        else s = options_from_json(opt, o, sp);
    }
    // a run folder continues where it is now, even if it was moved or copied
    if (!s && run_folder) {
        if (strlen(dir) >= sizeof opt->out_dir) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", dir);
        else strcpy(opt->out_dir, dir);
    }
    cJSON_Delete(state);
    alloy_free(sp);
    if (s) {
        alloy_free(*ckpt);
        *ckpt = NULL;
    }
    return s;
}

/* ---- the run ---- */

typedef struct run {
    const alloy_train_options *opt;
    alloy_dataset *ds;
    alloy_model *model;
    alloy_optimizer *optim;
    alloy_loader *train, *val;
    alloy_schedule sched;
    alloy_rng rng;       /* for objectives that sample; saved and restored with the run */
    int64_t step;        /* completed optimiser steps */
    double tokens_seen;
    double elapsed;      /* training seconds, accumulated across resumes */
    FILE *metrics;
    alloy_progress prog;
    float last_val;
    char *tokenizer_json; /* the data's tokenizer.json, copied into every checkpoint; NULL if none */
    size_t tokenizer_len;
} run;

static cJSON *state_to_json(const run *r) {
    cJSON *j = cJSON_CreateObject();
    char buf[96];
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "epoch", (double)r->train->epoch);
    cJSON_AddNumberToObject(j, "cursor", (double)r->train->cursor);
    snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, r->rng.s[0], r->rng.s[1],
             r->rng.s[2], r->rng.s[3]);
    cJSON_AddStringToObject(j, "rng", buf);
    snprintf(buf, sizeof buf, "%016" PRIx64, r->ds->fingerprint);
    cJSON_AddStringToObject(j, "data_fingerprint", buf);
    cJSON_AddNumberToObject(j, "tokens_seen", r->tokens_seen);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed);
    cJSON_AddNumberToObject(j, "last_val_loss", r->last_val);
    cJSON_AddStringToObject(j, "alloy_version", ALLOY_VERSION);
    cJSON_AddItemToObject(j, "options", options_to_json(r->opt));
    return j;
}

static alloy_status state_from_json(run *r, const char *ckpt) {
    char *sp = alloy_path_join(ckpt, "trainer_state.json");
    if (!sp) return ALLOY_STATUS_NOMEM;
    cJSON *j;
    alloy_status s = alloy_json_read_file(sp, &j);
    if (s) {
        alloy_free(sp);
        return s;
    }
    int64_t step = 0, epoch = 0, cursor = 0;
    const char *rng = NULL, *fp = NULL;
    double v = 0;
    if (!s) s = alloy_json_get_int(j, "step", sp, &step);
    if (!s) s = alloy_json_get_int(j, "epoch", sp, &epoch);
    if (!s) s = alloy_json_get_int(j, "cursor", sp, &cursor);
    if (!s) s = alloy_json_get_string(j, "rng", sp, &rng);
    if (!s) s = alloy_json_get_string(j, "data_fingerprint", sp, &fp);
    if (!s) s = alloy_json_opt_double(j, "tokens_seen", sp, &r->tokens_seen);
    if (!s) s = alloy_json_opt_double(j, "elapsed_s", sp, &r->elapsed);
    if (!s) s = alloy_json_opt_double(j, "last_val_loss", sp, &v);
    if (!s && (strlen(rng) != 64 || strspn(rng, "0123456789abcdef") != 64))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"rng\" must be 64 hex digits", sp);
    if (!s) {
        for (int i = 0; i < 4; i++) {
            char part[17];
            memcpy(part, rng + 16 * i, 16);
            part[16] = '\0';
            r->rng.s[i] = strtoull(part, NULL, 16);
        }
        char want[24];
        snprintf(want, sizeof want, "%016" PRIx64, r->ds->fingerprint);
        if (strcmp(fp, want) != 0)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data in %s has changed since this run started", sp, r->ds->dir);
    }
    if (!s && step < 0) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: negative step", sp);
    if (!s) s = alloy_loader_seek(r->train, epoch, cursor);
    if (s && s != ALLOY_STATUS_MISMATCH) alloy_error_prefix("%s", sp);
    if (!s) {
        r->step = step;
        r->last_val = (float)v;
    }
    cJSON_Delete(j);
    alloy_free(sp);
    return s;
}

/* Mean held-out loss over the first eval_batches batches of the val split (always the same). */
static alloy_status evaluate(run *r, float *out) {
    alloy_loader *l = r->val;
    int64_t max_batches = (l->n_windows + l->B - 1) / l->B;
    int64_t nb = r->opt->eval_batches < max_batches ? r->opt->eval_batches : max_batches;
    alloy_loader_seek(l, 0, 0);
    double sum = 0.0;
    for (int64_t b = 0; b < nb; b++) {
        alloy_loader_next(l);
        float loss;
        alloy_status s = alloy_model_forward_ex(r->model, l->inputs, l->B, l->T, false);
        if (!s) s = alloy_lm_loss_chunked(r->model, l->targets, NULL, l->B, l->T, 0.0f, &loss);
        if (s) return s;
        sum += loss;
    }
    *out = (float)(sum / (double)nb);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_train_trim_metrics(const char *path, int64_t step) {
    if (!alloy_path_exists(path)) return alloy_write_file_atomic(path, "", 0);
    char *text;
    alloy_status s = alloy_file_read_all(path, &text, NULL);
    if (s) return s;
    alloy_atomic_file f;
    s = alloy_atomic_open(&f, path);
    for (char *line = text, *next; !s && line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        cJSON *j = cJSON_Parse(line);
        const cJSON *st = j ? cJSON_GetObjectItemCaseSensitive(j, "step") : NULL;
        if (cJSON_IsNumber(st) && st->valuedouble <= (double)step) s = alloy_atomic_printf(&f, "%s\n", line);
        cJSON_Delete(j);
    }
    if (!s) s = alloy_atomic_commit(&f);
    else if (f.fp) alloy_atomic_abort(&f);
    alloy_free(text);
    return s;
}

/* The model's files, then the objective's own state (alloy_objective.save). */
static alloy_status write_model_and_objective(void *ctx, const char *dir) {
    const run *r = ctx;
    alloy_status s = alloy_model_save(r->model, dir);
    if (!s) s = r->opt->objective->save(r->opt->objective->ctx, dir);
    return s;
}

static alloy_status save_checkpoint(run *r) {
    cJSON *state = state_to_json(r);
    if (!state) return ALLOY_STATUS_NOMEM;
    alloy_checkpoint_writer w = {write_model_and_objective, r};
    bool own = r->opt->objective && r->opt->objective->save;
    alloy_status s = alloy_train_save_checkpoint(r->opt->out_dir, r->step, r->model, r->optim, state, r->opt->keep_ckpts,
                                                 r->tokenizer_json, r->tokenizer_len, own ? &w : NULL);
    cJSON_Delete(state);
    return s;
}

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
static alloy_status choose_config(const alloy_train_options *o, const char *resume, uint32_t data_vocab, alloy_config *cfg) {
    alloy_status s;
    const char *dir = resume ? resume : (o->init_dir[0] ? o->init_dir : NULL);
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
static alloy_status check_tokenizer(run *r, const char *model_dir) {
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

void alloy_format_count(double n, char *buf, size_t size) {
    if (n >= 1e9) snprintf(buf, size, "%.2fB", n / 1e9);
    else if (n >= 1e6) snprintf(buf, size, "%.2fM", n / 1e6);
    else if (n >= 1e3) snprintf(buf, size, "%.1fk", n / 1e3);
    else snprintf(buf, size, "%.0f", n);
}

/* An MoE model's routing over one step, for the metrics: the load-balancing loss (mean over the
 * micro-batches) and the (token, k) assignments per layer and expert (summed over them). */
typedef struct moe_step {
    double aux;
    int64_t *counts; /* (L, E) */
} moe_step;

static void moe_step_add(moe_step *ms, const alloy_model *m, int grad_accum) {
    size_t LE = (size_t)m->config.n_layer * (size_t)m->config.n_experts;
    ms->aux += m->aux_loss / grad_accum;
    for (size_t i = 0; i < LE; i++) ms->counts[i] += m->expert_tokens[i];
}

/* Appends ,"aux_loss":..,"expert_tokens":[per expert, all layers],"expert_tokens_per_layer":[[..],..]
 * to a metrics line. */
static void moe_step_print(FILE *f, const moe_step *ms, const alloy_model *m) {
    int L = m->config.n_layer, E = m->config.n_experts;
    fprintf(f, ",\"aux_loss\":%.6f,\"expert_tokens\":[", ms->aux);
    for (int e = 0; e < E; e++) {
        int64_t tot = 0;
        for (int l = 0; l < L; l++) tot += ms->counts[(size_t)l * E + e];
        fprintf(f, "%s%lld", e ? "," : "", (long long)tot);
    }
    fprintf(f, "],\"expert_tokens_per_layer\":[");
    for (int l = 0; l < L; l++) {
        fprintf(f, "%s[", l ? "," : "");
        for (int e = 0; e < E; e++) fprintf(f, "%s%lld", e ? "," : "", (long long)ms->counts[(size_t)l * E + e]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
}

static alloy_status train_loop(run *r, float *final_val) {
    const alloy_train_options *o = r->opt;
    alloy_model *m = r->model;
    int B = o->batch, T = o->seq;
    double tokens_per_step = (double)B * T * o->grad_accum;
    double t_start = alloy_time_now(), elapsed0 = r->elapsed;
    int64_t first_step = r->step;
    alloy_status s = ALLOY_STATUS_OK;
    bool stopped = false;
    bool moe = m->config.n_experts > 0;
    moe_step ms = {0};
    size_t LE = (size_t)m->config.n_layer * (size_t)m->config.n_experts;
    if (moe && !(ms.counts = alloy_calloc(LE, sizeof(int64_t)))) return ALLOY_STATUS_NOMEM;
    while (r->step < o->steps) {
        double t0 = alloy_time_now();
        alloy_model_zero_grad(m);
        double loss = 0.0;
        if (moe) {
            ms.aux = 0.0;
            memset(ms.counts, 0, sizeof(int64_t) * LE);
        }
        for (int a = 0; a < o->grad_accum && !s; a++) {
            alloy_loader_next(r->train);
            float l = 0.0f;
            if (o->objective) {
                s = o->objective->loss(o->objective->ctx, m, r->train->inputs, r->train->targets, B, T,
                                       1.0f / (float)o->grad_accum, &l);
            } else {
                s = alloy_model_forward_ex(m, r->train->inputs, B, T, false);
                if (!s) s = alloy_lm_loss_chunked(m, r->train->targets, NULL, B, T, 1.0f / (float)o->grad_accum, &l);
            }
            if (!s && moe) {
                m->aux_grad_scale = 1.0f / (float)o->grad_accum; // whatever the objective left
                moe_step_add(&ms, m, o->grad_accum);
            }
            if (!s) s = alloy_model_backward(m);
            loss += l / o->grad_accum;
        }
        if (s) {
            alloy_free(ms.counts);
            return s;
        }
        float lr = (float)alloy_schedule_lr(&r->sched, r->step);
        float gnorm;
        if ((s = alloy_optimizer_step(r->optim, m, lr, &gnorm)) ||
            (o->objective && o->objective->step && (s = o->objective->step(o->objective->ctx, lr)))) {
            alloy_error_prefix("step %lld", (long long)r->step + 1);
            alloy_free(ms.counts);
            return s;
        }
        r->step++;
        r->tokens_seen += tokens_per_step;
        double now = alloy_time_now();
        r->elapsed = elapsed0 + (now - t_start);
        double step_time = now - t0;
        double rate = (double)(r->step - first_step) * tokens_per_step / (now - t_start);
        fprintf(r->metrics,
                "{\"type\":\"train\",\"step\":%lld,\"loss\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens\":%.0f,"
                "\"tokens_per_s\":%.1f,\"step_s\":%.4f,\"elapsed_s\":%.3f",
                (long long)r->step, loss, (double)lr, (double)gnorm, r->tokens_seen, tokens_per_step / step_time, step_time,
                r->elapsed);
        if (moe) moe_step_print(r->metrics, &ms, m);
        fprintf(r->metrics, "}\n");
        fflush(r->metrics);
        bool last = r->step == o->steps;
        if (o->stop && *o->stop) stopped = true;
        if (!o->quiet) {
            char eta[32], rbuf[32];
            alloy_format_duration((double)(o->steps - r->step) * tokens_per_step / rate, eta, sizeof eta);
            alloy_format_count(rate, rbuf, sizeof rbuf);
            if (r->prog.tty || r->step % o->log_every == 0 || last || r->step == first_step + 1)
                alloy_progress_update(&r->prog, "step %lld/%lld | loss %.4f | lr %.2e | norm %.2f | %s tok/s | ETA %s",
                                      (long long)r->step, (long long)o->steps, loss, (double)lr, (double)gnorm, rbuf, eta);
        }
        if ((o->eval_every > 0 && r->step % o->eval_every == 0) || last) {
            float vl;
            if ((s = evaluate(r, &vl))) break;
            r->last_val = vl;
            fprintf(r->metrics, "{\"type\":\"eval\",\"step\":%lld,\"val_loss\":%.6f,\"val_ppl\":%.4f,\"tokens\":%.0f}\n",
                    (long long)r->step, (double)vl, exp((double)vl), r->tokens_seen);
            fflush(r->metrics);
            if (!o->quiet)
                alloy_progress_print(&r->prog, "step %lld: held-out loss %.4f (perplexity %.2f)", (long long)r->step,
                                     (double)vl, exp((double)vl));
        }
        if ((o->ckpt_every > 0 && r->step % o->ckpt_every == 0) || last || stopped) {
            if ((s = save_checkpoint(r))) break;
        }
        if (stopped) {
            if (!o->quiet) alloy_progress_print(&r->prog, "stopped at step %lld; checkpoint saved (resume with --resume %s)",
                                                (long long)r->step, o->out_dir);
            break;
        }
    }
    alloy_free(ms.counts);
    if (s) return s;
    if (!o->quiet) alloy_progress_done(&r->prog);
    if (final_val) *final_val = r->last_val;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_train_run(const alloy_train_options *o, const char *resume, float *final_val) {
    alloy_status s = check_options(o);
    if (s) return s;
    run r;
    memset(&r, 0, sizeof r);
    r.opt = o;
    alloy_rng_seed(&r.rng, o->seed ^ 0x5eed5eed5eed5eedULL);
    alloy_progress_init(&r.prog, stderr, 1);
    r.sched = (alloy_schedule){.max_lr = o->lr, .min_lr = o->min_lr, .warmup_steps = o->warmup, .total_steps = o->steps};
    alloy_config cfg;
    char *mpath = NULL;
    if ((s = alloy_dataset_open(&r.ds, o->data_dir, o->val_fraction))) goto done;
    if ((s = choose_config(o, resume, r.ds->vocab_size, &cfg))) goto done;
    if (o->aux_loss_coef >= 0.0) { // a coefficient chosen for this run (saved in its checkpoints)
        if (cfg.n_experts == 0) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "--aux-loss-coef: the model has no experts");
            goto done;
        }
        cfg.router_aux_loss_coef = o->aux_loss_coef;
    }
    alloy_model_options mo = {.precision = o->precision, .recompute = o->recompute};
    if ((s = alloy_model_create_ex(&r.model, &cfg, o->batch, o->seq, &mo))) goto done;
    if (resume || o->init_dir[0]) {
        char *wp = alloy_path_join(resume ? resume : o->init_dir, "model.safetensors");
        s = wp ? alloy_model_load_weights(r.model, wp) : ALLOY_STATUS_NOMEM;
        alloy_free(wp);
        if (s) goto done;
    } else {
        alloy_model_init_weights(r.model, o->seed);
    }
    if ((s = check_tokenizer(&r, resume ? resume : (o->init_dir[0] ? o->init_dir : NULL)))) goto done;
    if ((s = alloy_optimizer_create(&r.optim, r.model, &o->adamw))) goto done;
    if ((s = alloy_optimizer_train_only(r.optim, r.model, o->train_only))) goto done;
    if ((s = alloy_loader_create(&r.train, r.ds, ALLOY_SPLIT_TRAIN, o->batch, o->seq, o->seed))) goto done;
    if ((s = alloy_loader_create(&r.val, r.ds, ALLOY_SPLIT_VAL, o->batch, o->seq, o->seed))) goto done;
    if (resume) {
        char *op = alloy_path_join(resume, "optimizer.safetensors");
        s = op ? alloy_optimizer_load(r.optim, r.model, op) : ALLOY_STATUS_NOMEM;
        alloy_free(op);
        if (!s) s = state_from_json(&r, resume);
        if (!s && o->objective && o->objective->load) s = o->objective->load(o->objective->ctx, resume);
        if (!s && r.optim->step != r.step)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: optimizer step %lld does not match trainer step %lld", resume,
                           (long long)r.optim->step, (long long)r.step);
        if (s) goto done;
    }
    if (r.step >= o->steps) { // before anything on disk is touched
        s = alloy_fail(ALLOY_STATUS_USAGE, "the run is already at step %lld of %lld; pass a larger --steps to continue",
                       (long long)r.step, (long long)o->steps);
        goto done;
    }
    if ((s = alloy_mkdir_p(o->out_dir))) goto done;
    mpath = alloy_path_join(o->out_dir, "metrics.jsonl");
    if (!mpath) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    if ((s = resume ? alloy_train_trim_metrics(mpath, r.step) : alloy_write_file_atomic(mpath, "", 0))) goto done;
    r.metrics = fopen(mpath, "a");
    if (!r.metrics) {
        s = alloy_fail(ALLOY_STATUS_IO, "%s: cannot open for writing", mpath);
        goto done;
    }
    double unigram = alloy_dataset_unigram_entropy(r.ds, 100000000ULL);
    fprintf(r.metrics,
            "{\"type\":\"start\",\"step\":%lld,\"resumed\":%s,\"params\":%zu,\"train_tokens\":%llu,"
            "\"val_tokens\":%llu,\"unigram_entropy\":%.6f,\"tokens_per_step\":%d,\"dtype\":\"%s\","
            "\"recompute\":%s,\"activation_bytes\":%zu",
            (long long)r.step, resume ? "true" : "false", r.model->num_params,
            (unsigned long long)alloy_dataset_tokens(r.ds, ALLOY_SPLIT_TRAIN),
            (unsigned long long)alloy_dataset_tokens(r.ds, ALLOY_SPLIT_VAL), unigram, o->batch * o->seq * o->grad_accum,
            o->precision == ALLOY_PRECISION_BF16 ? "bf16" : "f32", o->recompute ? "true" : "false",
            alloy_model_activation_bytes(r.model));
    if (cfg.n_experts > 0)
        fprintf(r.metrics, ",\"experts\":%d,\"top_k\":%d,\"aux_loss_coef\":%g", cfg.n_experts, cfg.top_k,
                cfg.router_aux_loss_coef);
    if (cfg.n_experts > 0 || o->train_only != ALLOY_TRAIN_ONLY_ALL)
        fprintf(r.metrics, ",\"train_only\":\"%s\"", alloy_train_only_name(o->train_only));
    fprintf(r.metrics, "}\n");
    fflush(r.metrics);
    if (!o->quiet) {
        char np[32], nt[32], nv[32];
        alloy_format_count((double)r.model->num_params, np, sizeof np);
        alloy_format_count((double)alloy_dataset_tokens(r.ds, ALLOY_SPLIT_TRAIN), nt, sizeof nt);
        alloy_format_count((double)alloy_dataset_tokens(r.ds, ALLOY_SPLIT_VAL), nv, sizeof nv);
        alloy_progress_print(&r.prog, "model: %s, %s parameters (L=%d C=%d H=%d KV=%d F=%d V=%d); data: %s train / %s held-out tokens",
                             alloy_family_name(cfg.family), np, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.d_ff,
                             cfg.vocab_size, nt, nv);
        const char *training = o->train_only == ALLOY_TRAIN_ONLY_ROUTER ? "the routers only"
                               : o->train_only == ALLOY_TRAIN_ONLY_MLP  ? (cfg.n_experts > 0 ? "the experts only" : "the MLPs only")
                                                                        : "every parameter";
        if (cfg.n_experts > 0)
            alloy_progress_print(&r.prog, "mixture of %d experts, %d per token, aux loss coefficient %g; training %s",
                                 cfg.n_experts, cfg.top_k, cfg.router_aux_loss_coef, training);
        else if (o->train_only != ALLOY_TRAIN_ONLY_ALL)
            alloy_progress_print(&r.prog, "training %s", training);
        alloy_progress_print(&r.prog, "unigram entropy of the data: %.4f nats/token (a model that learns nothing beyond token frequencies scores this)", unigram);
        if (resume) alloy_progress_print(&r.prog, "resuming from %s at step %lld", resume, (long long)r.step);
    }
    s = train_loop(&r, final_val);
done:
    if (r.metrics) fclose(r.metrics);
    alloy_free(mpath);
    alloy_loader_destroy(r.train);
    alloy_loader_destroy(r.val);
    alloy_optimizer_destroy(r.optim);
    alloy_model_destroy(r.model);
    alloy_dataset_close(r.ds);
    alloy_free(r.tokenizer_json);
    return s;
}
