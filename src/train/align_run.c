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
#include "alloy/align.h"
#include "alloy/io.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
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
    o.min_lr = o.lr / 10.0;
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

static cJSON *options_to_json(const alloy_align_options *o) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "objective", alloy_align_kind_name(o->kind));
    cJSON_AddStringToObject(j, "model", o->model_dir);
    cJSON_AddStringToObject(j, "ref", o->ref_dir);
    cJSON_AddStringToObject(j, "data", o->data_path);
    cJSON_AddStringToObject(j, "val", o->val_path);
    cJSON_AddStringToObject(j, "out", o->out_dir);
    cJSON_AddStringToObject(j, "template", alloy_chat_template_name(o->tmpl));
    cJSON_AddNumberToObject(j, "steps", (double)o->steps);
    cJSON_AddNumberToObject(j, "epochs", o->epochs);
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
    cJSON_AddNumberToObject(j, "dpo_beta", o->dpo.beta);
    cJSON_AddStringToObject(j, "dpo_loss", alloy_dpo_loss_name(o->dpo.loss));
    cJSON_AddNumberToObject(j, "label_smoothing", o->dpo.label_smoothing);
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

static alloy_status options_from_json(alloy_align_options *o, const cJSON *j, const char *what) {
    alloy_status s;
    const char *v;
    int64_t i64;
    double d;
    if ((s = alloy_json_get_string(j, "objective", what, &v))) return s;
    if (!strcmp(v, "sft")) o->kind = ALLOY_ALIGN_SFT;
    else if (!strcmp(v, "reward")) o->kind = ALLOY_ALIGN_REWARD;
    else if (!strcmp(v, "dpo")) o->kind = ALLOY_ALIGN_DPO;
    else return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown objective \"%s\"", what, v);
    if ((s = get_str(j, "model", what, o->model_dir, sizeof o->model_dir)) ||
        (s = get_str(j, "ref", what, o->ref_dir, sizeof o->ref_dir)) ||
        (s = get_str(j, "data", what, o->data_path, sizeof o->data_path)) ||
        (s = get_str(j, "val", what, o->val_path, sizeof o->val_path)) ||
        (s = get_str(j, "out", what, o->out_dir, sizeof o->out_dir)))
        return s;
    if ((s = alloy_json_get_string(j, "template", what, &v))) return s;
    if (alloy_chat_template_parse(v, &o->tmpl)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown template \"%s\"", what, v);
    o->tmpl_set = true;
    if ((s = alloy_json_get_string(j, "dpo_loss", what, &v))) return s;
    if (alloy_dpo_loss_parse(v, &o->dpo.loss)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown dpo_loss \"%s\"", what, v);
#define INT(key, field)                                                                      \
    if ((s = alloy_json_get_int(j, key, what, &i64))) return s;                              \
    o->field = i64;
#define DBL(key, field)                                                                      \
    if ((s = alloy_json_get_double(j, key, what, &d))) return s;                             \
    o->field = d;
    INT("steps", steps) DBL("epochs", epochs) INT("batch", batch) INT("seq", seq) INT("grad_accum", grad_accum)
    DBL("lr", lr) DBL("min_lr", min_lr) INT("warmup", warmup)
    DBL("beta1", adamw.beta1) DBL("beta2", adamw.beta2) DBL("eps", adamw.eps)
    DBL("weight_decay", adamw.weight_decay) DBL("grad_clip", adamw.grad_clip)
    DBL("val_fraction", val_fraction) INT("eval_every", eval_every) INT("eval_batches", eval_batches)
    INT("ckpt_every", ckpt_every) INT("keep_ckpts", keep_ckpts)
    DBL("dpo_beta", dpo.beta) DBL("label_smoothing", dpo.label_smoothing)
#undef INT
#undef DBL
    if ((s = alloy_json_get_string(j, "seed", what, &v))) return s;
    char *end;
    o->seed = strtoull(v, &end, 10);
    if (*end || !*v) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"seed\" is not a number", what);
    return ALLOY_STATUS_OK;
}

/* The saved options of an alignment run (whose "options" name an "objective"). */
static alloy_status parse_saved(void *o, const cJSON *j, const char *what) {
    if (!cJSON_GetObjectItemCaseSensitive(j, "objective"))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: not the state of an alignment run (no \"options\" with an \"objective\")", what);
    return options_from_json(o, j, what);
}

alloy_status alloy_align_resume_options(const char *dir, alloy_align_options *o, char **ckpt) {
    return alloy_run_resume_state(dir, ckpt, parse_saved, o, o->out_dir, sizeof o->out_dir);
}

static alloy_status check_options(const alloy_align_options *o) {
    if (o->kind != ALLOY_ALIGN_SFT && o->kind != ALLOY_ALIGN_REWARD && o->kind != ALLOY_ALIGN_DPO)
        return alloy_fail(ALLOY_STATUS_USAGE, "the alignment run trains sft, reward or dpo");
    if (!o->model_dir[0]) return alloy_fail(ALLOY_STATUS_USAGE, "--model is required");
    if (!o->data_path[0]) return alloy_fail(ALLOY_STATUS_USAGE, "--data is required");
    if (!o->out_dir[0]) return alloy_fail(ALLOY_STATUS_USAGE, "--out is required");
    if (o->steps < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--steps must be at least 1");
    if (o->steps == 0 && !(o->epochs > 0.0 && o->epochs <= 1e6)) return alloy_fail(ALLOY_STATUS_USAGE, "--epochs must lie in (0, 1e6]");
    if (o->batch < 1 || o->batch > 65536) return alloy_fail(ALLOY_STATUS_USAGE, "--batch must lie in [1, 65536]");
    if (o->seq < 0 || o->seq == 1 || o->seq > (1 << 20)) return alloy_fail(ALLOY_STATUS_USAGE, "--seq must lie in [2, 1048576]");
    if (o->grad_accum < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--grad-accum must be at least 1");
    if (!(o->lr > 0.0 && o->lr < 10.0)) return alloy_fail(ALLOY_STATUS_USAGE, "--lr must lie in (0, 10)");
    if (!(o->min_lr >= 0.0 && o->min_lr <= o->lr)) return alloy_fail(ALLOY_STATUS_USAGE, "--min-lr must lie in [0, lr]");
    if (o->warmup < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--warmup must be >= 0");
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0)) return alloy_fail(ALLOY_STATUS_USAGE, "--val-fraction must lie in [0, 1)");
    if (o->eval_every < 0 || o->ckpt_every < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--eval-every and --ckpt-every must be >= 0");
    if (o->eval_batches < 0) return alloy_fail(ALLOY_STATUS_USAGE, "--eval-batches must be >= 0");
    if (o->keep_ckpts < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--keep must be at least 1");
    if (o->log_every < 1) return alloy_fail(ALLOY_STATUS_USAGE, "--log-every must be at least 1");
    if (o->kind == ALLOY_ALIGN_DPO && !(o->dpo.beta > 0.0 && o->dpo.beta < 1e6))
        return alloy_fail(ALLOY_STATUS_USAGE, "--beta must lie in (0, 1e6)");
    if (o->kind == ALLOY_ALIGN_DPO && !(o->dpo.label_smoothing >= 0.0 && o->dpo.label_smoothing < 0.5))
        return alloy_fail(ALLOY_STATUS_USAGE, "--label-smoothing must lie in [0, 0.5)");
    return ALLOY_STATUS_OK;
}

/* ---- the objective ---- */

typedef struct run {
    alloy_align_options opt;   /* the options with every default resolved (what is saved) */
    alloy_tokenizer *tok;
    char *tok_json;            /* tokenizer.json copied into every checkpoint; NULL: the byte tokenizer */
    size_t tok_len;
    alloy_align_data data;     /* the training file */
    alloy_align_data vdata;    /* the held-out file, if one was given */
    const alloy_align_data *vd;/* where the held-out examples are: &data or &vdata */
    int64_t *train_idx, n_train; /* examples of data trained on */
    int64_t *val_idx, n_val;   /* examples of *vd held out */
    int64_t *perm;             /* (n_train) this epoch's order */
    int64_t epoch, cursor;     /* position: epoch and the next example of perm */
    alloy_model *model;        /* sft, dpo: the policy; reward: rm->model */
    alloy_reward_model *rm;    /* reward */
    double *ref, *vref;        /* dpo: the reference's log-probability of every sequence of data / vdata */
    double *ref_rows;          /* (rows) the batch's */
    alloy_align_batch batch;
    int64_t *ex_buf;           /* (batch) the examples of a micro-batch */
    alloy_rng rng;             /* for objectives that sample; seeded, saved and restored by the run */
    alloy_align_stats st;      /* this step's figures */
    alloy_align_stats last_val;/* the last evaluation's */
    bool resumed;
    int added;                 /* tokens the chat template added to the tokenizer */
} run;

/* Draws epoch e's order of the training examples from (seed, e). */
static void shuffle(run *r) {
    alloy_rng g;
    alloy_rng_seed(&g, r->opt.seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(r->epoch + 1)));
    for (int64_t i = 0; i < r->n_train; i++) r->perm[i] = r->train_idx[i];
    for (int64_t i = r->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)alloy_rng_below(&g, (uint64_t)(i + 1));
        int64_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
}

/* The held-out split of one file: an example is held out when a hash of its tokens and the seed
 * falls below val_fraction (at least one example when the fraction is > 0 and there are two). */
static alloy_status split(run *r) {
    const alloy_align_data *d = &r->data;
    int64_t n = d->n_examples;
    r->train_idx = alloy_malloc(sizeof(int64_t) * (size_t)n);
    r->val_idx = alloy_malloc(sizeof(int64_t) * (size_t)(r->opt.val_path[0] ? r->vdata.n_examples : n));
    if (!r->train_idx || !r->val_idx) return ALLOY_STATUS_NOMEM;
    if (r->opt.val_path[0]) {
        for (int64_t e = 0; e < n; e++) r->train_idx[e] = e;
        for (int64_t e = 0; e < r->vdata.n_examples; e++) r->val_idx[e] = e;
        r->n_train = n;
        r->n_val = r->vdata.n_examples;
        return ALLOY_STATUS_OK;
    }
    uint64_t best = UINT64_MAX;
    int64_t best_e = -1;
    for (int64_t e = 0; e < n; e++) {
        int64_t a = d->seq_start[d->ex_start[e]], b = d->seq_start[d->ex_start[e + 1]];
        uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, &r->opt.seed, sizeof r->opt.seed);
        h = alloy_fnv64(h, d->tokens + a, sizeof(int32_t) * (size_t)(b - a));
        h ^= h >> 29; // FNV's low bits mix poorly: fold the high ones in
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 32;
        if (h < best) best = h, best_e = e;
        if ((double)(h >> 11) * 0x1.0p-53 < r->opt.val_fraction) r->val_idx[r->n_val++] = e;
        else r->train_idx[r->n_train++] = e;
    }
    if (r->n_val == 0 && r->opt.val_fraction > 0.0 && n >= 2) { // the example of the smallest hash
        r->n_train = 0;
        for (int64_t e = 0; e < n; e++)
            if (e != best_e) r->train_idx[r->n_train++] = e;
        r->val_idx[r->n_val++] = best_e;
    }
    if (r->n_train == 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: no training examples left after holding out --val-fraction %g",
                          r->opt.data_path, r->opt.val_fraction);
    return ALLOY_STATUS_OK;
}

/* A checkpoint folder for --model: the folder itself if it holds model.safetensors (or an index),
 * else a run folder's latest checkpoint. *out: alloy_free it. */
static alloy_status resolve_model_dir(const char *dir, char **out) { return alloy_checkpoint_resolve(dir, out); }

/* Sets the embedding rows (and untied head rows) of ids[0..k) to the mean of rows [0, n). */
static void mean_rows(alloy_model *m, const int32_t *ids, int k, int n) {
    int C = m->config.d_model;
    for (int which = 0; which < (m->config.tie_embeddings ? 1 : 2); which++) {
        float *w = which ? m->params.lm_head : m->params.wte;
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int v = 0; v < n; v++) sum += w[(size_t)v * C + c];
            for (int i = 0; i < k; i++) w[(size_t)ids[i] * C + c] = (float)(sum / n);
        }
    }
}

/* When the folder's own tokenizer lacks the ChatML tokens the run added, their rows start at
 * the mean of the rows of the tokenizer's tokens: rows that resize_vocab just made, or rows a
 * padded vocabulary (llm.c's 50304 for GPT-2's 50257) held unused. */
static alloy_status init_chat_rows(run *r, const char *dir, const alloy_config *cfg, alloy_model *m) {
    if (r->opt.tmpl != ALLOY_CHAT_TEMPLATE_CHATML) return ALLOY_STATUS_OK;
    alloy_tokenizer *own = NULL;
    alloy_status s = alloy_align_load_tokenizer(dir, cfg, &own);
    if (s) return s;
    int32_t ids[2] = {alloy_tokenizer_special_id(r->tok, ALLOY_CHAT_IM_START), alloy_chat_end_id(r->tok)};
    int first = alloy_tokenizer_vocab_size(own);
    if (alloy_tokenizer_special_id(own, ALLOY_CHAT_IM_START) < 0 && ids[0] >= first && ids[1] >= first && first > 0)
        mean_rows(m, ids, 2, first);
    alloy_tokenizer_destroy(own);
    return ALLOY_STATUS_OK;
}

/* Loads the model of a checkpoint folder for the run's batches, as a language model (sft, dpo)
 * or a reward model (reward; a language model gets a new head), its vocabulary grown to the
 * tokenizer's, the chat tokens' rows at the mean embedding when the folder lacked them. */
static alloy_status load_model(run *r, const char *dir, int rows, alloy_model **lm, alloy_reward_model **rm) {
    alloy_status s;
    int V = alloy_tokenizer_vocab_size(r->tok);
    if (rm) {
        s = alloy_reward_model_load(rm, dir, rows, r->opt.seq, false, r->opt.seed);
        if (!s && (*rm)->model->config.vocab_size < V) s = alloy_model_resize_vocab(&(*rm)->model, V);
        if (!s) (*rm)->head_view.config = (*rm)->model->config;
        if (s) {
            alloy_reward_model_destroy(*rm);
            *rm = NULL;
        }
    } else {
        s = alloy_model_load(lm, dir, rows, r->opt.seq);
        if (!s && (*lm)->config.vocab_size < V) s = alloy_model_resize_vocab(lm, V);
        if (s) {
            alloy_model_destroy(*lm);
            *lm = NULL;
        }
    }
    if (!s) {
        alloy_model *m = rm ? (*rm)->model : *lm;
        alloy_config own = m->config; // the folder's, before the tokenizer name changes
        snprintf(m->config.tokenizer, sizeof m->config.tokenizer, "%s", r->tok_json ? "bpe" : "bytes");
        if ((s = init_chat_rows(r, dir, &own, m))) {
            if (rm) alloy_reward_model_destroy(*rm);
            else alloy_model_destroy(*lm);
            if (rm) *rm = NULL;
            else *lm = NULL;
        }
    }
    return s;
}

/* The reference's log-probability of every sequence of d, in batches of the run's size, in
 * order (so that a resumed run computes the same values). */
static alloy_status reference_logps(run *r, alloy_model *ref, const alloy_align_data *d, double **out) {
    *out = alloy_malloc(sizeof(double) * (size_t)(d->n_seqs > 0 ? d->n_seqs : 1));
    if (!*out) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    for (int64_t e0 = 0; e0 < d->n_examples && !s; e0 += r->opt.batch) {
        int n = (int)(d->n_examples - e0 < r->opt.batch ? d->n_examples - e0 : r->opt.batch);
        for (int i = 0; i < n; i++) r->ex_buf[i] = e0 + i;
        s = alloy_align_batch_make(&r->batch, d, r->ex_buf, n);
        if (!s) s = alloy_dpo_logps(ref, &r->batch, *out + d->ex_start[e0], NULL);
    }
    return s;
}

/* The reference's rows of a batch of examples idx of d. */
static void gather_ref(run *r, const alloy_align_data *d, const double *ref, const int64_t *idx, int n) {
    int row = 0;
    for (int e = 0; e < n; e++)
        for (int64_t q = d->ex_start[idx[e]]; q < d->ex_start[idx[e] + 1]; q++) r->ref_rows[row++] = ref[q];
}

/* One micro-batch of the objective (grad_scale 0: evaluation). */
static alloy_status objective(run *r, const alloy_align_data *d, const double *ref, const int64_t *idx, int n,
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
static void next_examples(run *r, int n) {
    for (int i = 0; i < n; i++) {
        if (r->cursor >= r->n_train) {
            r->epoch++;
            r->cursor = 0;
            shuffle(r);
        }
        r->ex_buf[i] = r->perm[r->cursor++];
    }
}

static alloy_status evaluate(run *r, alloy_align_stats *st) {
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
    run *r = ctx;
    if (micro == 0) memset(&r->st, 0, sizeof r->st);
    next_examples(r, r->opt.batch);
    return objective(r, &r->data, r->ref, r->ex_buf, r->opt.batch, grad_scale, &r->st);
}

static alloy_status align_evaluate(void *ctx) { return evaluate(ctx, &((run *)ctx)->last_val); }

static void align_report(void *ctx, alloy_run_phase phase, alloy_run_report *out) {
    run *r = ctx;
    const alloy_align_stats *st = phase == ALLOY_RUN_EVAL ? &r->last_val : &r->st;
    out->loss = ratio(st->loss_sum, st->weight);
    out->tokens = st->tokens;
    stats_fields(out->fields, sizeof out->fields, r->opt.kind, st, phase == ALLOY_RUN_EVAL ? "val_" : "");
    stats_brief(out->brief, sizeof out->brief, r->opt.kind, st);
    if (phase == ALLOY_RUN_EVAL) {
        size_t k = strlen(out->fields);
        snprintf(out->fields + k, sizeof out->fields - k, ",\"val_examples\":%lld", (long long)r->n_val);
    }
}

/* The model's files of an alignment checkpoint: the model (with its score head for a reward
 * model), the chat template, the tokenizer. */
static alloy_status align_save(void *ctx, const char *dir) {
    run *r = ctx;
    alloy_status s = r->rm ? alloy_reward_model_save(r->rm, dir) : alloy_model_save(r->model, dir);
    if (!s) s = alloy_chat_save_template(dir, r->opt.tmpl);
    if (!s && r->tok_json) {
        char *p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, r->tok_json, r->tok_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

static uint64_t data_fingerprint(const run *r) {
    return r->data.fingerprint ^ (r->vd == &r->vdata ? r->vdata.fingerprint : 0);
}

static alloy_status align_state_save(void *ctx, cJSON *j) {
    run *r = ctx;
    char fp[24];
    snprintf(fp, sizeof fp, "%016" PRIx64, data_fingerprint(r));
    cJSON_AddNumberToObject(j, "epoch", (double)r->epoch);
    cJSON_AddNumberToObject(j, "cursor", (double)r->cursor);
    cJSON_AddStringToObject(j, "data_fingerprint", fp);
    cJSON *o = options_to_json(&r->opt);
    if (!o) return ALLOY_STATUS_NOMEM;
    cJSON_AddItemToObject(j, "options", o);
    return ALLOY_STATUS_OK;
}

static alloy_status align_state_load(void *ctx, const cJSON *j, const char *what) {
    run *r = ctx;
    int64_t epoch = 0, cursor = 0;
    const char *fp = NULL;
    alloy_status s = alloy_json_get_int(j, "epoch", what, &epoch);
    if (!s) s = alloy_json_get_int(j, "cursor", what, &cursor);
    if (!s) s = alloy_json_get_string(j, "data_fingerprint", what, &fp);
    if (!s && (epoch < 0 || cursor < 0 || cursor > r->n_train))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: step, epoch or cursor out of range", what);
    if (!s) {
        char now[24];
        snprintf(now, sizeof now, "%016" PRIx64, data_fingerprint(r));
        if (strcmp(now, fp))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data changed since this run started (fingerprint %s, now %s)",
                           r->opt.data_path, fp, now);
    }
    if (!s) {
        r->epoch = epoch;
        r->cursor = cursor;
        shuffle(r); // the order of the epoch the run is in
    }
    return s;
}

static void align_describe(void *ctx, char *buf, size_t size) {
    run *r = ctx;
    const alloy_align_options *o = &r->opt;
    snprintf(buf, size,
             ",\"objective\":\"%s\",\"template\":\"%s\",\"params\":%zu,\"train_examples\":%lld,\"val_examples\":%lld,"
             "\"sequences\":%lld,\"truncated\":%lld,\"max_len\":%d,\"vocab_added\":%d,\"steps\":%lld",
             alloy_align_kind_name(o->kind), alloy_chat_template_name(o->tmpl),
             r->model->num_params + (r->rm ? 1 + (size_t)r->model->config.d_model : 0), (long long)r->n_train, (long long)r->n_val,
             (long long)(r->data.n_seqs + (r->vd == &r->vdata ? r->vdata.n_seqs : 0)),
             (long long)(r->data.truncated + r->vdata.truncated), o->seq, r->added, (long long)o->steps);
}

static void align_intro(void *ctx, alloy_progress *prog) {
    run *r = ctx;
    const alloy_align_options *o = &r->opt;
    const alloy_config *c = &r->model->config;
    char np[32];
    alloy_format_count((double)r->model->num_params, np, sizeof np);
    alloy_progress_print(prog, "%s: %s model, %s parameters (L=%d C=%d V=%d); %lld training / %lld held-out examples "
                               "(%lld sequences cut to %d tokens); template %s%s",
                         alloy_align_kind_name(o->kind), alloy_family_name(c->family), np, c->n_layer, c->d_model,
                         c->vocab_size, (long long)r->n_train, (long long)r->n_val,
                         (long long)(r->data.truncated + r->vdata.truncated), o->seq, alloy_chat_template_name(o->tmpl),
                         r->added ? " (its tokens added to the tokenizer and the embedding)" : "");
}
static alloy_status setup_tokenizer(run *r, const char *dir, const alloy_config *cfg, int *added) {
    alloy_tokenizer *base = NULL;
    alloy_status s = alloy_align_load_tokenizer(dir, cfg, &base);
    *added = 0;
    if (s) return s;
    char *tj = alloy_path_join(dir, "tokenizer.json");
    bool has_file = tj && alloy_path_exists(tj);
    if (!tj) s = ALLOY_STATUS_NOMEM;
    else if (r->opt.tmpl == ALLOY_CHAT_TEMPLATE_CHATML) {
        s = alloy_chat_tokenizer(base, &r->tok, &r->tok_json, &r->tok_len, added);
        if (!s && *added == 0 && has_file) { // the folder's own file, byte for byte
            alloy_free(r->tok_json);
            r->tok_json = NULL;
            s = alloy_file_read_all(tj, &r->tok_json, &r->tok_len);
        }
    } else {
        if (has_file) s = alloy_file_read_all(tj, &r->tok_json, &r->tok_len);
        else if (strcmp(alloy_tokenizer_name(base), "bytes"))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the raw template needs the model's tokenizer as tokenizer.json", dir);
        if (!s) {
            r->tok = base;
            base = NULL;
        }
    }
    alloy_tokenizer_destroy(base);
    alloy_free(tj);
    return s;
}

static void free_run(run *r) {
    alloy_tokenizer_destroy(r->tok);
    alloy_free(r->tok_json);
    alloy_align_data_free(&r->data);
    alloy_align_data_free(&r->vdata);
    alloy_free(r->train_idx);
    alloy_free(r->val_idx);
    alloy_free(r->perm);
    if (r->rm) alloy_reward_model_destroy(r->rm);
    else alloy_model_destroy(r->model);
    alloy_free(r->ref);
    alloy_free(r->vref);
    alloy_free(r->ref_rows);
    alloy_align_batch_free(&r->batch);
    alloy_free(r->ex_buf);
}

alloy_status alloy_align_run(const alloy_align_options *o, const char *resume, alloy_align_stats *final_val) {
    alloy_status s = check_options(o);
    if (s) return s;
    run r;
    memset(&r, 0, sizeof r);
    r.opt = *o;
    alloy_align_options *opt = &r.opt;
    char *init = NULL, *ref_dir = NULL;
    alloy_config cfg;
    // the model's folder, its config and tokenizer, the template
    if ((s = resolve_model_dir(resume ? resume : o->model_dir, &init))) goto done;
    if (!resume) {
        if (strlen(init) >= sizeof opt->model_dir) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", init);
            goto done;
        }
        strcpy(opt->model_dir, init); // a run folder's checkpoint of today, not of a later resume
    }
    {
        char *cp = alloy_path_join(init, "config.json");
        s = cp ? alloy_config_load(&cfg, cp) : ALLOY_STATUS_NOMEM;
        alloy_free(cp);
        if (s) goto done;
    }
    if (!opt->tmpl_set) {
        bool found = false;
        if ((s = alloy_chat_template_of(init, &opt->tmpl, &found))) goto done;
        if (!found) opt->tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
        opt->tmpl_set = true;
    }
    if (opt->seq == 0) opt->seq = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
    if (opt->seq > cfg.max_seq_len) {
        s = alloy_fail(ALLOY_STATUS_USAGE, "--seq %d exceeds the model's maximum sequence length %d", opt->seq, cfg.max_seq_len);
        goto done;
    }
    if ((s = setup_tokenizer(&r, init, &cfg, &r.added))) goto done;
    // the data
    alloy_align_kind dk = o->kind;
    if ((s = alloy_align_data_read(&r.data, o->data_path, r.tok, dk, opt->tmpl, opt->seq))) goto done;
    r.vd = &r.data;
    if (o->val_path[0]) {
        if ((s = alloy_align_data_read(&r.vdata, o->val_path, r.tok, dk, opt->tmpl, opt->seq))) goto done;
        r.vd = &r.vdata;
    }
    if ((s = split(&r))) goto done;
    if (opt->steps == 0) {
        double per_step = (double)opt->batch * opt->grad_accum;
        opt->steps = (int64_t)ceil(opt->epochs * (double)r.n_train / per_step);
        if (opt->steps < 1) opt->steps = 1;
    }
    int max_seqs = r.data.max_seqs > r.vdata.max_seqs ? r.data.max_seqs : r.vdata.max_seqs;
    int rows = opt->batch * max_seqs;
    r.perm = alloy_malloc(sizeof(int64_t) * (size_t)r.n_train);
    r.ex_buf = alloy_malloc(sizeof(int64_t) * (size_t)opt->batch);
    r.ref_rows = alloy_malloc(sizeof(double) * (size_t)rows);
    if (!r.perm || !r.ex_buf || !r.ref_rows) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    // DPO: the frozen reference's log-probabilities, before the policy is loaded
    if (o->kind == ALLOY_ALIGN_DPO) {
        if ((s = resolve_model_dir(opt->ref_dir[0] ? opt->ref_dir : opt->model_dir, &ref_dir))) goto done;
        if (!resume && opt->ref_dir[0]) snprintf(opt->ref_dir, sizeof opt->ref_dir, "%s", ref_dir);
        alloy_model *ref = NULL;
        s = load_model(&r, ref_dir, rows, &ref, NULL);
        if (!s) s = reference_logps(&r, ref, &r.data, &r.ref);
        if (!s && r.vd == &r.vdata) s = reference_logps(&r, ref, &r.vdata, &r.vref);
        alloy_model_destroy(ref);
        if (s) {
            alloy_error_prefix("reference model %s", ref_dir);
            goto done;
        }
    }
    // the model and its optimiser state
    if (o->kind == ALLOY_ALIGN_REWARD) {
        if ((s = load_model(&r, init, rows, NULL, &r.rm))) goto done;
        r.model = r.rm->model;
    } else if ((s = load_model(&r, init, rows, &r.model, NULL))) {
        goto done;
    }
    shuffle(&r); // epoch 0's order (a resume restores its epoch's)
    r.resumed = resume != NULL;
    {
        alloy_objective obj = {
            .label = o->kind == ALLOY_ALIGN_SFT ? "sft " : o->kind == ALLOY_ALIGN_REWARD ? "reward " : "dpo ", .ctx = &r, .groups = {{r.model, "optimizer.safetensors"}}, .n_groups = 1,
            .rng = &r.rng, .micro_batch = align_micro_batch, .evaluate = r.n_val > 0 ? align_evaluate : NULL,
            .report = align_report, .save = align_save, .state_save = align_state_save, .state_load = align_state_load,
            .describe = align_describe, .intro = align_intro,
        };
        if (r.rm) obj.groups[obj.n_groups++] = (alloy_param_group){&r.rm->head_view, "score_optimizer.safetensors"};
        alloy_run_options ro = alloy_run_defaults();
        snprintf(ro.out_dir, sizeof ro.out_dir, "%s", opt->out_dir);
        ro.steps = opt->steps;
        ro.grad_accum = opt->grad_accum;
        ro.schedule = (alloy_schedule){.max_lr = opt->lr, .min_lr = opt->min_lr, .warmup_steps = opt->warmup};
        ro.adamw = opt->adamw;
        ro.seed = opt->seed;
        ro.eval_every = opt->eval_every;
        ro.ckpt_every = opt->ckpt_every;
        ro.keep_ckpts = opt->keep_ckpts;
        ro.log_every = opt->log_every;
        ro.quiet = opt->quiet;
        ro.resume_mode = opt->resume_mode;
        ro.stop = opt->stop;
        s = alloy_run_execute(&ro, &obj, resume, NULL);
        if (!s && final_val) *final_val = r.last_val;
    }
done:
    free_run(&r);
    alloy_free(init);
    alloy_free(ref_dir);
    return s;
}

