/*
 * checkpoint.c — training checkpoints: the optimiser state file, and the run folder layout
 *
 *     RUN/checkpoints/step-00000100/   model.safetensors, config.json,
 *                                      optimizer.safetensors, trainer_state.json
 *     RUN/latest                       "checkpoints/step-00000100"
 *
 * (alloy_run_latest and alloy_checkpoint_resolve, in src/io/model_path.c, read this layout.)
 * A checkpoint is written whole into RUN/checkpoints/.tmp-step-N, each file fsynced, then the
 * folder is renamed into place and `latest` replaced atomically. A crash at any moment leaves
 * `latest` naming a complete checkpoint.
 */
#include "alloy/io.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

alloy_status alloy_optimizer_save(const alloy_optimizer *opt, const alloy_model *model, const char *path) {
    int n = model->n_tensors;
    alloy_st_entry *e = alloy_calloc((size_t)(2 * n), sizeof *e);
    char **names = alloy_calloc((size_t)(2 * n), sizeof *names);
    alloy_status s = (!e || !names) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (int i = 0; i < n && !s; i++) {
        const alloy_tensor_info *t = &model->tensors[i];
        for (int k = 0; k < 2; k++) {
            alloy_st_entry *x = &e[2 * i + k];
            size_t len = strlen(t->name) + 16;
            names[2 * i + k] = alloy_malloc(len);
            if (!names[2 * i + k]) {
                s = ALLOY_STATUS_NOMEM;
                break;
            }
            snprintf(names[2 * i + k], len, "%s.%s", k ? "exp_avg_sq" : "exp_avg", t->name);
            x->name = names[2 * i + k];
            x->dtype = ALLOY_DTYPE_F32;
            x->ndim = t->ndim;
            for (int d = 0; d < t->ndim; d++) x->shape[d] = t->shape[d];
            x->data = (k ? opt->v : opt->m) + t->offset;
        }
    }
    if (!s) {
        char step[32], b1[32], b2[32], eps[32], wd[32], clip[32];
        snprintf(step, sizeof step, "%lld", (long long)opt->step);
        snprintf(b1, sizeof b1, "%.9g", (double)opt->cfg.beta1);
        snprintf(b2, sizeof b2, "%.9g", (double)opt->cfg.beta2);
        snprintf(eps, sizeof eps, "%.9g", (double)opt->cfg.eps);
        snprintf(wd, sizeof wd, "%.9g", (double)opt->cfg.weight_decay);
        snprintf(clip, sizeof clip, "%.9g", (double)opt->cfg.grad_clip);
        const char *meta[] = {"optimizer", "adamw", "step", step, "beta1", b1, "beta2", b2, "eps", eps,
                              "weight_decay", wd, "grad_clip", clip, NULL};
        s = alloy_safetensors_write(path, e, 2 * n, meta);
    }
    for (int i = 0; names && i < 2 * n; i++) alloy_free(names[i]);
    alloy_free(names);
    alloy_free(e);
    return s;
}

alloy_status alloy_optimizer_load(alloy_optimizer *opt, const alloy_model *model, const char *path) {
    alloy_safetensors *st;
    alloy_status s = alloy_safetensors_open(&st, path);
    if (s) return s;
    const char *step = alloy_safetensors_meta(st, "step");
    char *end = NULL;
    long long k = step ? strtoll(step, &end, 10) : -1;
    if (!step || *end || k < 0) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: metadata has no valid \"step\"", path);
    if (!s && st->n_tensors != 2 * model->n_tensors)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: %d tensors, expected %d (two per parameter)", path, st->n_tensors,
                       2 * model->n_tensors);
    for (int i = 0; i < model->n_tensors && !s; i++) {
        const alloy_tensor_info *t = &model->tensors[i];
        for (int j = 0; j < 2 && !s; j++) {
            char name[ALLOY_MAX_NAME + 16];
            snprintf(name, sizeof name, "%s.%s", j ? "exp_avg_sq" : "exp_avg", t->name);
            const alloy_st_tensor *x = alloy_safetensors_find(st, name);
            if (!x) {
                s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\"", path, name);
                break;
            }
            if (x->dtype != ALLOY_DTYPE_F32 || x->numel != t->numel) {
                s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" does not match the model (dtype or size)", path, name);
                break;
            }
            memcpy((j ? opt->v : opt->m) + t->offset, x->data, x->nbytes);
        }
    }
    if (!s) opt->step = k;
    alloy_safetensors_close(st);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Removes leftovers of interrupted writes and all but the newest `keep` step-* folders. */
static void prune_checkpoints(const char *ckdir, int keep, const char *current) {
    DIR *d = opendir(ckdir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 4096) {
        if (!strncmp(e->d_name, ".tmp-step-", 10)) {
            char *p = alloy_path_join(ckdir, e->d_name);
            if (p && strcmp(e->d_name + 5, current) != 0) alloy_remove_dir(p);
            alloy_free(p);
        } else if (!strncmp(e->d_name, "step-", 5)) {
            names[n] = alloy_strdup(e->d_name);
            if (names[n]) n++;
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (i < n - keep && strcmp(names[i], current) != 0) {
            char *p = alloy_path_join(ckdir, names[i]);
            if (p) alloy_remove_dir(p);
            alloy_free(p);
        }
        alloy_free(names[i]);
    }
}

/* Test hook: ALLOY_TEST_CRASH_IN_CHECKPOINT=N kills the process (SIGKILL, as a power cut
 * would) half-way through writing the checkpoint of step N. */
static void maybe_crash(int64_t step) {
    const char *v = getenv("ALLOY_TEST_CRASH_IN_CHECKPOINT");
    if (v && atoll(v) == step) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

alloy_status alloy_train_save_checkpoint(const char *run_dir, int64_t step, const alloy_model *model,
                                         const alloy_optimizer *opt, const cJSON *state, int keep,
                                         const char *tokenizer_json, size_t tokenizer_len,
                                         const alloy_checkpoint_writer *writer) {
    char name[64], tmpname[80], rel[96];
    snprintf(name, sizeof name, "step-%08lld", (long long)step);
    snprintf(tmpname, sizeof tmpname, ".tmp-%s", name);
    snprintf(rel, sizeof rel, "checkpoints/%s\n", name);
    char *ckdir = alloy_path_join(run_dir, "checkpoints");
    char *tmp = ckdir ? alloy_path_join(ckdir, tmpname) : NULL;
    char *final = ckdir ? alloy_path_join(ckdir, name) : NULL;
    char *latest = alloy_path_join(run_dir, "latest");
    char *p = NULL;
    alloy_status s = (!ckdir || !tmp || !final || !latest) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    if (!s) s = alloy_mkdir_p(ckdir);
    if (!s && alloy_is_dir(tmp)) s = alloy_remove_dir(tmp);
    if (!s) s = writer ? writer->write(writer->ctx, tmp) : alloy_model_save(model, tmp);
    if (!s) maybe_crash(step);
    if (!s) {
        p = alloy_path_join(tmp, "optimizer.safetensors");
        s = p ? alloy_optimizer_save(opt, model, p) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    if (!s && tokenizer_json) {
        p = alloy_path_join(tmp, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, tokenizer_json, tokenizer_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    if (!s) {
        p = alloy_path_join(tmp, "trainer_state.json");
        s = p ? alloy_json_write_file(p, state) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    if (!s) s = alloy_fsync_dir(tmp);
    if (!s && alloy_is_dir(final)) s = alloy_remove_dir(final); // an earlier run's step of the same number
    if (!s && rename(tmp, final) != 0) s = alloy_fail(ALLOY_STATUS_IO, "%s: cannot move the checkpoint into place", final);
    if (!s) s = alloy_fsync_dir(ckdir);
    if (!s) s = alloy_write_file_atomic(latest, rel, strlen(rel));
    if (!s) prune_checkpoints(ckdir, keep, name);
    alloy_free(ckdir);
    alloy_free(tmp);
    alloy_free(final);
    alloy_free(latest);
    return s;
}
