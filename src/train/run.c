/*
 * run.c — the one run every training objective trains in (alloy/train.h, "the one run").
 *
 * The run owns the run folder and the loop around an objective:
 *
 *     RUN/checkpoints/step-00000100/   the objective's files (model, tokenizer, heads),
 *                                      one optimiser file per parameter group, trainer_state.json
 *     RUN/latest                       "checkpoints/step-00000100"
 *     RUN/metrics.jsonl                a "start" line per (re)start, "train" and "eval" lines
 *     RUN/rewound-N/                   what a rewind set aside (checkpoints, metrics.jsonl)
 *
 * A step: zero the groups' gradients; grad_accum micro-batches of the objective, each adding
 * 1/grad_accum of its loss's gradient; one AdamW step of every group under one clipped global
 * norm at the schedule's learning rate; then metrics, progress, evaluation and checkpoint by
 * their cadence. An objective with its own update (PPO) replaces the micro-batches and the
 * optimiser step and takes its optimiser steps through alloy_run_optimizer_step.
 *
 * Exact resume rests on the objective's data position and random state being saved with the
 * weights and optimiser state (trainer_state.json), and on every kernel's reductions being
 * ordered the same way for a given thread count. Resuming never destroys: a checkpoint older than
 * the run's newest is refused unless the caller rewinds (the newer ones are moved aside, not
 * deleted) or branches into a new run folder.
 */
#include "alloy/io.h"
#include "alloy/options.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ALLOY_VERSION "0.1.0"

struct alloy_run {
    const alloy_run_options *ro;
    const alloy_objective *obj;
    alloy_optimizer *optim[ALLOY_RUN_MAX_GROUPS];
    alloy_model *views[ALLOY_RUN_MAX_GROUPS];
    alloy_schedule sched;
    int64_t step;         /* completed optimiser steps */
    int64_t first_step;   /* the step this process started at */
    double tokens_seen;
    double elapsed;       /* training seconds, accumulated across resumes */
    double elapsed0, tokens0; /* both when this process started its loop */
    double t_start;       /* when it did */
    double last_val;
    char val_name[48];    /* the last evaluation's name and what it covered (alloy_run_report) */
    char val_covers[96];
    bool evaluated;
    FILE *metrics;
    char *metrics_path;
    alloy_progress prog;
    alloy_run_report rep; /* scratch for the objective's report */
};

alloy_run_options alloy_run_defaults(void) {
    alloy_run_options o;
    memset(&o, 0, sizeof o);
    o.steps = 1000;
    o.grad_accum = 1;
    o.schedule = (alloy_schedule){.max_lr = 1e-3, .min_lr = 1e-4, .warmup_steps = 100};
    o.adamw = alloy_adamw_defaults();
    o.seed = 1337;
    o.eval_every = 100;
    o.ckpt_every = 500;
    o.keep_ckpts = 3;
    o.log_every = 10;
    return o;
}

alloy_status alloy_run_check_new(const char *dir) {
    char *latest = alloy_path_join(dir, "latest");
    if (!latest) return ALLOY_STATUS_NOMEM;
    bool taken = alloy_path_exists(latest);
    alloy_free(latest);
    if (taken)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s already holds a run; continue it with --resume %s or choose another folder",
                          dir, dir);
    return ALLOY_STATUS_OK;
}

static alloy_status check_options(const alloy_run_options *o, const alloy_objective *obj) {
    if (o->steps < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "steps", "must be at least 1");
    if (o->grad_accum < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "grad_accum", "must be at least 1");
    if (o->eval_every < 0) return alloy_fail_option(ALLOY_STATUS_USAGE, "eval_every", "must be >= 0");
    if (o->ckpt_every < 0) return alloy_fail_option(ALLOY_STATUS_USAGE, "ckpt_every", "must be >= 0");
    if (o->keep_ckpts < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "keep_ckpts", "must be at least 1");
    if (o->log_every < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "log_every", "must be at least 1");
    if (!o->out_dir[0]) return alloy_fail_option(ALLOY_STATUS_USAGE, "out", "is required");
    if (obj->n_groups < 1 || obj->n_groups > ALLOY_RUN_MAX_GROUPS || !obj->report || !obj->save ||
        !obj->state_save || !obj->state_load || (!obj->micro_batch && !obj->update))
        return alloy_fail(ALLOY_STATUS_INTERNAL, "the objective lacks a parameter group or a required hook");
    return ALLOY_STATUS_OK;
}

/* ---- optimiser ---- */

alloy_status alloy_run_optimizer_step(alloy_run *r, float lr, float *grad_norm) {
    return alloy_optimizer_step_groups(r->optim, r->views, r->obj->n_groups, lr, grad_norm);
}

static void zero_grads(alloy_run *r) {
    for (int g = 0; g < r->obj->n_groups; g++) {
        alloy_model *m = r->views[g];
        memset(m->grads_memory, 0, sizeof(float) * m->num_params);
    }
}

static alloy_status create_optimizers(alloy_run *r) {
    for (int g = 0; g < r->obj->n_groups; g++) {
        r->views[g] = r->obj->groups[g].view;
        alloy_status s = alloy_optimizer_create(&r->optim[g], r->views[g], &r->ro->adamw);
        if (s) return s;
    }
    return alloy_optimizer_train_only(r->optim[0], r->views[0], r->ro->train_only);
}

/* ---- trainer_state.json ---- */

static cJSON *state_to_json(const alloy_run *r) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    if (r->obj->rng) {
        char buf[80];
        const alloy_rng *g = r->obj->rng;
        snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, g->s[0], g->s[1], g->s[2], g->s[3]);
        cJSON_AddStringToObject(j, "rng", buf);
    }
    cJSON_AddNumberToObject(j, "tokens_seen", r->tokens_seen);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed);
    cJSON_AddNumberToObject(j, "last_val_loss", r->last_val);
    cJSON_AddStringToObject(j, "alloy_version", ALLOY_VERSION);
    if (r->obj->state_save(r->obj->ctx, j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static alloy_status rng_from_hex(alloy_rng *g, const char *hex, const char *what) {
    if (strlen(hex) != 64 || strspn(hex, "0123456789abcdefABCDEF") != 64)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"rng\" must be 64 hex digits", what);
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, hex + 16 * i, 16);
        part[16] = '\0';
        g->s[i] = strtoull(part, NULL, 16);
    }
    return ALLOY_STATUS_OK;
}

static alloy_status state_from_json(alloy_run *r, const char *ckpt) {
    char *sp = alloy_path_join(ckpt, "trainer_state.json");
    if (!sp) return ALLOY_STATUS_NOMEM;
    cJSON *j = NULL;
    alloy_status s = alloy_json_read_file(sp, &j);
    int64_t step = 0;
    const char *rng = NULL;
    if (!s) s = alloy_json_get_int(j, "step", sp, &step);
    if (!s && step < 0) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: negative step", sp);
    if (!s && r->obj->rng) s = alloy_json_get_string(j, "rng", sp, &rng);
    if (!s && rng) s = rng_from_hex(r->obj->rng, rng, sp);
    if (!s) s = alloy_json_opt_double(j, "tokens_seen", sp, &r->tokens_seen);
    if (!s) s = alloy_json_opt_double(j, "elapsed_s", sp, &r->elapsed);
    if (!s) s = alloy_json_opt_double(j, "last_val_loss", sp, &r->last_val);
    if (!s) s = r->obj->state_load(r->obj->ctx, j, sp);
    if (!s) r->step = step;
    cJSON_Delete(j);
    alloy_free(sp);
    return s;
}

/* ---- checkpoints ---- */

/* The objective's files, then each group's optimiser state. */
static alloy_status write_checkpoint_files(void *ctx, const char *dir) {
    const alloy_run *r = ctx;
    alloy_status s = r->obj->save(r->obj->ctx, dir);
    for (int g = 1; g < r->obj->n_groups && !s; g++) {
        char *p = alloy_path_join(dir, r->obj->groups[g].file);
        s = p ? alloy_optimizer_save(r->optim[g], r->views[g], p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

static alloy_status save_checkpoint(alloy_run *r) {
    cJSON *state = state_to_json(r);
    if (!state) return ALLOY_STATUS_NOMEM;
    alloy_checkpoint_writer w = {write_checkpoint_files, r};
    alloy_status s = alloy_train_save_checkpoint(r->ro->out_dir, r->step, r->views[0], r->optim[0], state,
                                                 r->ro->keep_ckpts, NULL, 0, &w);
    cJSON_Delete(state);
    return s;
}

static alloy_status load_optimizers(alloy_run *r, const char *ckpt) {
    alloy_status s = ALLOY_STATUS_OK;
    for (int g = 0; g < r->obj->n_groups && !s; g++) {
        char *p = alloy_path_join(ckpt, r->obj->groups[g].file);
        s = p ? alloy_optimizer_load(r->optim[g], r->views[g], p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
        // one optimiser step per run step, or (an objective's own update) the same number in every group
        int64_t want = r->obj->update ? r->optim[0]->step : r->step;
        if (!s && r->optim[g]->step != want)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: optimizer step %lld of %s does not match %s step %lld", ckpt,
                           (long long)r->optim[g]->step, r->obj->groups[g].file, r->obj->update ? "the model's" : "trainer",
                           (long long)want);
    }
    return s;
}

/* ---- the data position every objective saves ---- */

alloy_status alloy_run_state_put_data(cJSON *state, int64_t epoch, int64_t cursor, uint64_t fingerprint, cJSON *options) {
    char fp[24];
    snprintf(fp, sizeof fp, "%016" PRIx64, fingerprint);
    cJSON_AddNumberToObject(state, "epoch", (double)epoch);
    cJSON_AddNumberToObject(state, "cursor", (double)cursor);
    cJSON_AddStringToObject(state, "data_fingerprint", fp);
    if (!options) return ALLOY_STATUS_NOMEM;
    cJSON_AddItemToObject(state, "options", options);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_run_state_get_data(const cJSON *state, const char *what, const char *data, uint64_t fingerprint,
                                      int64_t n, int64_t *epoch, int64_t *cursor) {
    const char *fp = NULL;
    alloy_status s = alloy_json_get_int(state, "epoch", what, epoch);
    if (!s) s = alloy_json_get_int(state, "cursor", what, cursor);
    if (!s) s = alloy_json_get_string(state, "data_fingerprint", what, &fp);
    if (!s && n >= 0 && (*epoch < 0 || *cursor < 0 || *cursor > n))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: step, epoch or cursor out of range", what);
    char now[24];
    snprintf(now, sizeof now, "%016" PRIx64, fingerprint);
    if (!s && strcmp(fp, now) != 0)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the data in %s has changed since this run started (fingerprint %s, now %s)",
                       what, data, fp, now);
    return s;
}

/* ---- resuming ---- */

alloy_status alloy_run_resume_state(const char *dir, char **ckpt, alloy_options_parser parse, void *opts, char *out_dir,
                                    size_t out_dir_size) {
    *ckpt = NULL;
    char *sp = alloy_path_join(dir, "trainer_state.json");
    if (!sp) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    bool run_folder = false;
    if (alloy_path_exists(sp)) {
        if (!(*ckpt = alloy_strdup(dir))) s = ALLOY_STATUS_NOMEM;
    } else {
        run_folder = true;
        alloy_free(sp);
        sp = NULL;
        s = alloy_run_latest(dir, ckpt);
        if (!s && !(sp = alloy_path_join(*ckpt, "trainer_state.json"))) s = ALLOY_STATUS_NOMEM;
    }
    cJSON *state = NULL;
    if (!s) s = alloy_json_read_file(sp, &state);
    if (!s) {
        const cJSON *oj = cJSON_GetObjectItemCaseSensitive(state, "options");
        if (!cJSON_IsObject(oj)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: missing \"options\"", sp);
        else s = parse(opts, oj, sp);
    }
    if (!s && run_folder) { // a run folder continues where it is now, even if it was moved
        if (strlen(dir) >= out_dir_size) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", dir);
        else strcpy(out_dir, dir);
    }
    cJSON_Delete(state);
    alloy_free(sp);
    if (s) {
        alloy_free(*ckpt);
        *ckpt = NULL;
    }
    return s;
}

/* The verb whose run saved these options, from their "objective": none or "" for alloy train,
 * the distillation's own JSON object for distill, "combiner" for ensemble train, else its name
 * (sft, reward, dpo, ppo). NULL when the options name none of them. */
static const char *run_verb(const cJSON *options) {
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(options, "objective");
    if (!k || (cJSON_IsString(k) && !k->valuestring[0])) return "train";
    if (!cJSON_IsString(k)) return NULL;
    if (k->valuestring[0] == '{') return "distill";
    if (!strcmp(k->valuestring, "combiner")) return "ensemble train";
    static const char *const named[] = {"sft", "reward", "dpo", "ppo"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (!strcmp(k->valuestring, named[i])) return named[i];
    return NULL;
}

/* Whether `word` is one of the space-separated words of `list`. */
static bool has_word(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || !p[n])) return true;
    return false;
}

/* The schema load of a resume, with the verbs whose runs it continues. */
typedef struct schema_parse {
    const alloy_schema *schema;
    const char *verbs; /* "train distill", "sft reward dpo", "ppo" */
    const char *dir;   /* the folder being resumed, for the messages */
} schema_parse;

static alloy_status parse_with_schema(void *ctx, const cJSON *j, const char *what) {
    const schema_parse *sp = ((void **)ctx)[0];
    const char *made = run_verb(j);
    if (made && !has_word(sp->verbs, made) && !strcmp(made, "ensemble train"))
        return alloy_fail(ALLOY_STATUS_USAGE, "%s is an alloy ensemble train run (a learned combiner), which does not resume: "
                                              "train the combiner again with alloy ensemble train", sp->dir);
    if (made && !has_word(sp->verbs, made))
        return alloy_fail(ALLOY_STATUS_USAGE, "%s is an alloy %s run; continue it with alloy %s --resume %s", sp->dir, made, made,
                          sp->dir);
    return alloy_options_load(sp->schema, ((void **)ctx)[1], j, what);
}

/* USAGE when dir is a model folder (weights or config.json, but neither trainer_state.json nor
 * `latest`): there is no run to continue; `flag` starts one from it. */
static alloy_status refuse_model_folder(const char *dir, const char *flag) {
    static const char *const run_files[] = {"trainer_state.json", "latest"};
    static const char *const model_files[] = {"model.safetensors", "config.json"};
    bool run = false, model = false;
    for (int i = 0; i < 2; i++) {
        char *a = alloy_path_join(dir, run_files[i]), *b = alloy_path_join(dir, model_files[i]);
        if (!a || !b) {
            alloy_free(a);
            alloy_free(b);
            return ALLOY_STATUS_NOMEM;
        }
        run |= alloy_path_exists(a);
        model |= alloy_path_exists(b);
        alloy_free(a);
        alloy_free(b);
    }
    if (run || !model) return ALLOY_STATUS_OK;
    return alloy_fail(ALLOY_STATUS_USAGE, "%s is a model folder, not a training run (no trainer_state.json, no `latest`): "
                                          "--resume continues a run; start a new one from these weights with %s %s",
                      dir, flag, dir);
}

alloy_status alloy_run_resume_options(const char *dir, char **ckpt, const alloy_schema *schema, const char *verbs,
                                      void *opts, char *out_dir, size_t out_dir_size) {
    *ckpt = NULL;
    alloy_status s = alloy_is_dir(dir) ? refuse_model_folder(dir, has_word(verbs, "train") ? "--init" : "--model")
                                       : ALLOY_STATUS_OK;
    if (s) return s;
    schema_parse sp = {schema, verbs, dir};
    void *ctx[2] = {&sp, opts};
    return alloy_run_resume_state(dir, ckpt, parse_with_schema, ctx, out_dir, out_dir_size);
}

/* ---- resuming never destroys ---- */

/* The step of a checkpoint folder name "step-NNNNNNNN", or -1. */
static int64_t step_of(const char *name) {
    if (strncmp(name, "step-", 5) != 0 || !name[5] || strspn(name + 5, "0123456789") != strlen(name + 5)) return -1;
    return strtoll(name + 5, NULL, 10);
}

/* The newest checkpoint step in RUN/checkpoints (-1: none). */
static int64_t newest_step(const char *run_dir) {
    char *ck = alloy_path_join(run_dir, "checkpoints");
    DIR *d = ck ? opendir(ck) : NULL;
    alloy_free(ck);
    if (!d) return -1;
    int64_t best = -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        int64_t k = step_of(e->d_name);
        if (k > best) best = k;
    }
    closedir(d);
    return best;
}

/* The step of the checkpoint RUN/latest names (-1: none). A checkpoint folder newer than it is
 * one a crash left between its rename and the update of `latest`: the run's own, not newer work. */
static int64_t latest_step(const char *run_dir) {
    char *lp = alloy_path_join(run_dir, "latest"), *text = NULL;
    int64_t k = -1;
    if (lp && alloy_path_exists(lp) && alloy_file_read_all(lp, &text, NULL) == ALLOY_STATUS_OK) {
        text[strcspn(text, "\r\n")] = '\0';
        const char *base = strrchr(text, '/');
        k = step_of(base ? base + 1 : text);
    }
    alloy_free(text);
    alloy_free(lp);
    return k;
}

/* Moves RUN/checkpoints/step-* newer than `step` and a copy of metrics.jsonl into a new
 * RUN/rewound-N, so that the run can continue from `step` with nothing lost. */
static alloy_status set_newer_aside(const char *run_dir, int64_t step, char **aside) {
    *aside = NULL;
    char name[32];
    for (int n = 1; n < 100000 && !*aside; n++) {
        snprintf(name, sizeof name, "rewound-%d", n);
        char *p = alloy_path_join(run_dir, name);
        if (!p) return ALLOY_STATUS_NOMEM;
        if (alloy_path_exists(p)) alloy_free(p);
        else *aside = p;
    }
    if (!*aside) return alloy_fail(ALLOY_STATUS_IO, "%s: no free rewound-N folder name", run_dir);
    char *dst_ck = alloy_path_join(*aside, "checkpoints"), *src_ck = alloy_path_join(run_dir, "checkpoints");
    char *src_m = alloy_path_join(run_dir, "metrics.jsonl"), *dst_m = alloy_path_join(*aside, "metrics.jsonl");
    alloy_status s = (!dst_ck || !src_ck || !src_m || !dst_m) ? ALLOY_STATUS_NOMEM : alloy_mkdir_p(dst_ck);
    if (!s && alloy_path_exists(src_m)) {
        char *text = NULL;
        size_t len = 0;
        s = alloy_file_read_all(src_m, &text, &len);
        if (!s) s = alloy_write_file_atomic(dst_m, text, len);
        alloy_free(text);
    }
    DIR *d = s ? NULL : opendir(src_ck);
    for (struct dirent *e; d && !s && (e = readdir(d)) != NULL;) {
        if (step_of(e->d_name) <= step) continue;
        char *from = alloy_path_join(src_ck, e->d_name), *to = alloy_path_join(dst_ck, e->d_name);
        if (!from || !to) s = ALLOY_STATUS_NOMEM;
        else if (rename(from, to) != 0) s = alloy_fail(ALLOY_STATUS_IO, "%s: cannot move it to %s", from, to);
        alloy_free(from);
        alloy_free(to);
    }
    if (d) closedir(d);
    alloy_free(dst_ck);
    alloy_free(src_ck);
    alloy_free(src_m);
    alloy_free(dst_m);
    return s;
}

/* Copies the lines of SRC/metrics.jsonl up to `step` into a new run folder's metrics.jsonl. */
static alloy_status branch_metrics(const char *src_run, const char *path, int64_t step) {
    char *src = alloy_path_join(src_run, "metrics.jsonl");
    if (!src) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    if (alloy_path_exists(src)) {
        char *text = NULL;
        size_t len = 0;
        s = alloy_file_read_all(src, &text, &len);
        if (!s) s = alloy_write_file_atomic(path, text, len);
        alloy_free(text);
    }
    alloy_free(src);
    return s ? s : alloy_train_trim_metrics(path, step);
}

/* The run folder a checkpoint folder belongs to (RUN/checkpoints/step-N -> RUN), or NULL. */
static char *run_of(const char *ckpt) {
    char *d = alloy_strdup(ckpt);
    if (!d) return NULL;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') d[--n] = '\0';
    char *slash = strrchr(d, '/');
    const char *base = slash ? slash + 1 : d;
    if (step_of(base) < 0) {
        alloy_free(d);
        return NULL;
    }
    if (slash) *slash = '\0';
    else strcpy(d, ".");
    slash = strrchr(d, '/');
    if (strcmp(slash ? slash + 1 : d, "checkpoints") != 0) {
        alloy_free(d);
        return NULL;
    }
    if (slash) *slash = '\0';
    else strcpy(d, ".");
    return d;
}

/* Before anything is written: what resuming from `resume` at step r->step does to the run folder.
 * Returns the source run (alloy_free it) for a branch, in *src. */
static alloy_status check_resume(alloy_run *r, const char *resume, char **src) {
    *src = NULL;
    const alloy_run_options *o = r->ro;
    if (o->resume_mode == ALLOY_RESUME_BRANCH) {
        alloy_status s = alloy_run_check_new(o->out_dir);
        if (!s && newest_step(o->out_dir) >= 0)
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s already holds checkpoints; branch into a new folder", o->out_dir);
        if (!s) *src = run_of(resume); // whose metrics the branch starts from (NULL: none)
        return s;
    }
    int64_t newest = latest_step(o->out_dir);
    if (newest > r->step && o->resume_mode != ALLOY_RESUME_REWIND)
        return alloy_fail(ALLOY_STATUS_USAGE,
                          "%s is step %lld but %s has checkpoints up to step %lld, which resuming would lose; "
                          "continue elsewhere with --branch-from %s --out NEW, or pass --rewind to set them aside",
                          resume, (long long)r->step, o->out_dir, (long long)newest, resume);
    return ALLOY_STATUS_OK;
}

/* ---- metrics and progress ---- */

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





static alloy_status metrics_line(alloy_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static alloy_status metrics_line(alloy_run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vfprintf(r->metrics, fmt, ap);
    va_end(ap);
    if (n < 0 || fflush(r->metrics) != 0) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot write", r->metrics_path);
    return ALLOY_STATUS_OK;
}

/* Opens metrics.jsonl for this (re)start: new, trimmed to the resumed step, or branched. */
static alloy_status open_metrics(alloy_run *r, const char *resume, const char *branch_src) {
    const alloy_run_options *o = r->ro;
    alloy_status s = alloy_mkdir_p(o->out_dir);
    if (s) return s;
    if (!(r->metrics_path = alloy_path_join(o->out_dir, "metrics.jsonl"))) return ALLOY_STATUS_NOMEM;
    if (branch_src) s = branch_metrics(branch_src, r->metrics_path, r->step);
    else if (resume) s = alloy_train_trim_metrics(r->metrics_path, r->step);
    else s = alloy_write_file_atomic(r->metrics_path, "", 0);
    if (s) return s;
    if (!(r->metrics = fopen(r->metrics_path, "a"))) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot open for writing", r->metrics_path);
    char *fields = alloy_malloc(16384);
    if (!fields) return ALLOY_STATUS_NOMEM;
    fields[0] = '\0';
    if (r->obj->describe) r->obj->describe(r->obj->ctx, fields, 16384);
    s = metrics_line(r, "{\"type\":\"start\",\"step\":%lld,\"resumed\":%s%s}\n", (long long)r->step, resume ? "true" : "false",
                     fields);
    alloy_free(fields);
    return s;
}

/* The objective's report of `phase` into r->rep, cleared first. */
static void take_report(alloy_run *r, alloy_run_phase phase) {
    alloy_run_report *rep = &r->rep;
    rep->name[0] = rep->covers[0] = rep->brief[0] = rep->fields[0] = rep->tail[0] = '\0';
    rep->loss = rep->tokens = 0.0;
    r->obj->report(r->obj->ctx, phase, rep);
}

static alloy_status log_step(alloy_run *r, double t0, float lr, float gnorm) {
    const alloy_run_options *o = r->ro;
    alloy_run_report *rep = &r->rep;
    take_report(r, ALLOY_RUN_TRAIN);
    r->tokens_seen += rep->tokens;
    double now = alloy_time_now(), step_time = now - t0;
    r->elapsed = r->elapsed0 + (now - r->t_start);
    alloy_status s = metrics_line(r,
                                  "{\"type\":\"train\",\"step\":%lld%s,\"lr\":%.6e,\"grad_norm\":%.6f,\"tokens\":%.0f,"
                                  "\"tokens_per_s\":%.1f,\"step_s\":%.4f,\"elapsed_s\":%.3f%s}\n",
                                  (long long)r->step, rep->fields, (double)lr, (double)gnorm, r->tokens_seen,
                                  rep->tokens / step_time, step_time, r->elapsed, rep->tail);
    if (s || o->quiet) return s;
    bool last = r->step == o->steps;
    if (!(r->prog.tty || r->step % o->log_every == 0 || last || r->step == r->first_step + 1)) return s;
    char eta[32], rate[32], figures[320];
    double per_step = (now - r->t_start) / (double)(r->step - r->first_step);
    alloy_format_duration((double)(o->steps - r->step) * per_step, eta, sizeof eta);
    alloy_format_count((r->tokens_seen - r->tokens0) / (now - r->t_start), rate, sizeof rate);
    if (r->obj->update) snprintf(figures, sizeof figures, "%s", rep->brief);
    else
        snprintf(figures, sizeof figures, "%s %.4f%s%s | lr %.2e | norm %.2f", rep->name[0] ? rep->name : "loss", rep->loss,
                 rep->brief[0] ? " | " : "", rep->brief, (double)lr, (double)gnorm);
    alloy_progress_update(&r->prog, "%sstep %lld/%lld | %s | %s tok/s | ETA %s", r->obj->label, (long long)r->step,
                          (long long)o->steps, figures, rate, eta);
    return s;
}

static alloy_status evaluate(alloy_run *r) {
    alloy_status s = r->obj->evaluate(r->obj->ctx);
    if (s) return s;
    alloy_run_report *rep = &r->rep;
    take_report(r, ALLOY_RUN_EVAL);
    r->last_val = rep->loss;
    r->evaluated = true;
    snprintf(r->val_name, sizeof r->val_name, "%s", rep->name[0] ? rep->name : "held-out loss");
    snprintf(r->val_covers, sizeof r->val_covers, "%s", rep->covers);
    s = metrics_line(r, "{\"type\":\"eval\",\"step\":%lld%s,\"tokens\":%.0f}\n", (long long)r->step, rep->fields,
                     r->tokens_seen);
    if (!s && !r->ro->quiet)
        alloy_progress_print(&r->prog, "step %lld: %s %.4f%s%s%s%s%s", (long long)r->step, r->val_name, rep->loss,
                             rep->covers[0] ? " over " : "", rep->covers, rep->brief[0] ? " (" : "", rep->brief,
                             rep->brief[0] ? ")" : "");
    return s;
}

/* The held-out part of the summary line into buf: the last evaluation's loss and what it
 * covered, then the whole split's (final, ALLOY_RUN_FINAL's report) or why it was not scored. */
static void summary_held_out(const alloy_run *r, const alloy_run_report *final, char *buf, size_t size) {
    buf[0] = '\0';
    if (!r->evaluated) return;
    size_t k = (size_t)snprintf(buf, size, "; %s %.4f%s%s", r->val_name, r->last_val, r->val_covers[0] ? " over " : "",
                                r->val_covers);
    if (k >= size || !final) return;
    if (final->loss >= 0.0)
        snprintf(buf + k, size - k, ", %.4f over %s", final->loss, final->covers[0] ? final->covers : "the whole split");
    else if (final->brief[0])
        snprintf(buf + k, size - k, " (%s)", final->brief);
}

/* The end of a run that did all its steps: the objective's figures over the whole held-out split
 * (evaluate_all), metrics.jsonl's "end" line, and the summary line (unless quiet): steps, time,
 * the final checkpoint, the held-out loss with what it covers. */
static alloy_status finish(alloy_run *r) {
    const alloy_run_options *o = r->ro;
    alloy_run_report *final = NULL;
    if (r->obj->evaluate_all) {
        alloy_status s = r->obj->evaluate_all(r->obj->ctx);
        if (s) return s;
        take_report(r, ALLOY_RUN_FINAL);
        final = &r->rep;
    }
    double elapsed = r->elapsed0 + (alloy_time_now() - r->t_start);
    char ckpt[48], val[64] = "", held[512], took[32];
    snprintf(ckpt, sizeof ckpt, "checkpoints/step-%08lld", (long long)r->step);
    if (r->evaluated) snprintf(val, sizeof val, ",\"val_loss\":%.6f", r->last_val);
    alloy_status s = metrics_line(r, "{\"type\":\"end\",\"step\":%lld,\"elapsed_s\":%.3f,\"checkpoint\":\"%s\"%s%s}\n",
                                  (long long)r->step, elapsed, ckpt, val, final ? final->fields : "");
    if (s || o->quiet) return s;
    summary_held_out(r, final, held, sizeof held);
    alloy_format_duration(elapsed, took, sizeof took);
    alloy_progress_print(&r->prog, "%sdone: %lld steps in %s; final checkpoint %s/%s%s", r->obj->label, (long long)r->step,
                         took, o->out_dir, ckpt, held);
    return ALLOY_STATUS_OK;
}

/* ---- the loop ---- */

static alloy_status one_step(alloy_run *r, float lr, float *gnorm) {
    const alloy_objective *obj = r->obj;
    if (obj->update) return obj->update(obj->ctx, r, lr, gnorm);
    zero_grads(r);
    alloy_status s = ALLOY_STATUS_OK;
    for (int a = 0; a < r->ro->grad_accum && !s; a++) s = obj->micro_batch(obj->ctx, a, 1.0f / (float)r->ro->grad_accum);
    if (!s) s = alloy_run_optimizer_step(r, lr, gnorm);
    if (!s && obj->after_step) s = obj->after_step(obj->ctx, lr);
    return s;
}

static alloy_status loop(alloy_run *r, alloy_run_result *res) {
    const alloy_run_options *o = r->ro;
    r->t_start = alloy_time_now();
    r->elapsed0 = r->elapsed;
    r->tokens0 = r->tokens_seen;
    alloy_status s = ALLOY_STATUS_OK;
    bool stopped = false;
    while (r->step < o->steps && !s) {
        double t0 = alloy_time_now();
        float lr = (float)alloy_schedule_lr(&r->sched, r->step), gnorm = 0.0f;
        if ((s = one_step(r, lr, &gnorm))) {
            alloy_error_prefix("step %lld", (long long)r->step + 1);
            break;
        }
        r->step++;
        if ((s = log_step(r, t0, lr, gnorm))) break;
        bool last = r->step == o->steps;
        if (o->stop && *o->stop) stopped = true;
        if (r->obj->evaluate && ((o->eval_every > 0 && r->step % o->eval_every == 0) || last) && (s = evaluate(r))) break;
        if (((o->ckpt_every > 0 && r->step % o->ckpt_every == 0) || last || stopped) && (s = save_checkpoint(r))) break;
        if (stopped) {
            if (!o->quiet)
                alloy_progress_print(&r->prog, "stopped at step %lld; checkpoint saved (resume with --resume %s)",
                                     (long long)r->step, o->out_dir);
            break;
        }
    }
    if (s) return s;
    if (!o->quiet) alloy_progress_done(&r->prog);
    if (!stopped && (s = finish(r))) return s;
    res->step = r->step;
    res->last_val_loss = r->last_val;
    res->evaluated = r->evaluated;
    res->stopped = stopped;
    return ALLOY_STATUS_OK;
}

/* Restores a resumed run's state, checks what resuming does to the folder, and opens the metrics:
 * nothing on disk changes before this succeeds up to the rewind. */
static alloy_status prepare(alloy_run *r, const char *resume) {
    const alloy_run_options *o = r->ro;
    char *branch_src = NULL, *aside = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    if (resume) {
        s = state_from_json(r, resume);
        if (!s) s = load_optimizers(r, resume);
        if (!s && r->obj->load) s = r->obj->load(r->obj->ctx, resume);
        if (!s) s = check_resume(r, resume, &branch_src);
    } else {
        s = alloy_run_check_new(o->out_dir);
    }
    if (!s && r->step >= o->steps) // before anything on disk is touched
        s = alloy_fail(ALLOY_STATUS_USAGE, "the run is already at step %lld of %lld; pass a larger --steps to continue",
                       (long long)r->step, (long long)o->steps);
    if (!s && resume && !branch_src && newest_step(o->out_dir) > r->step) s = set_newer_aside(o->out_dir, r->step, &aside);
    if (!s) s = open_metrics(r, resume, branch_src);
    if (!s && !o->quiet) {
        if (r->obj->intro) r->obj->intro(r->obj->ctx, &r->prog);
        if (resume) alloy_progress_print(&r->prog, "resuming from %s at step %lld", resume, (long long)r->step);
        if (aside) alloy_progress_print(&r->prog, "the newer checkpoints and the metrics so far are set aside in %s", aside);
    }
    alloy_free(branch_src);
    alloy_free(aside);
    return s;
}

alloy_status alloy_run_execute(const alloy_run_options *o, const alloy_objective *obj, const char *resume,
                               alloy_run_result *result) {
    alloy_status s = check_options(o, obj);
    if (s) return s;
    alloy_run r;
    memset(&r, 0, sizeof r);
    r.ro = o;
    r.obj = obj;
    r.sched = o->schedule;
    r.sched.total_steps = o->steps;
    alloy_progress_init(&r.prog, stderr, 1);
    if (obj->rng) alloy_rng_seed(obj->rng, o->seed ^ 0x5eed5eed5eed5eedULL);
    alloy_run_result res = {0};
    s = create_optimizers(&r);
    if (!s) s = prepare(&r, resume);
    if (!s) {
        r.first_step = r.step;
        s = loop(&r, &res);
    }
    if (r.metrics) fclose(r.metrics);
    alloy_free(r.metrics_path);
    for (int g = 0; g < ALLOY_RUN_MAX_GROUPS; g++) alloy_optimizer_destroy(r.optim[g]);
    if (!s && result) *result = res;
    return s;
}
