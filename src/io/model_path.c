/*
 * model_path.c — what a model path names, resolved once (a run folder's latest checkpoint, a
 * checkpoint or Hugging Face folder, a file inside one), and the checkpoint object built on
 * that resolution: config, weights, tokenizer, chat template, fingerprint, compatibility.
 *
 * The run folder layout (written by src/train/checkpoint.c):
 *
 *     RUN/checkpoints/step-00000100/   model.safetensors, config.json, ...
 *     RUN/latest                       "checkpoints/step-00000100"
 */
#include "alloy/checkpoint.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- resolution ---- */

/* Whether dir holds one of the files that make a folder a checkpoint. */
static alloy_status holds_checkpoint(const char *dir, bool *here) {
    static const char *const marks[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    *here = false;
    for (int i = 0; i < 3 && !*here; i++) {
        char *p = alloy_path_join(dir, marks[i]);
        if (!p) return ALLOY_STATUS_NOMEM;
        *here = alloy_path_exists(p);
        alloy_free(p);
    }
    return ALLOY_STATUS_OK;
}

/* The folder of a checkpoint's own file (config.json, model.safetensors, its index), or NULL
 * (and OK) for a file of any other name. */
static alloy_status folder_of_file(const char *path, char **dir) {
    *dir = NULL;
    static const char *const names[] = {"config.json", "model.safetensors", "model.safetensors.index.json"};
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    bool known = false;
    for (int i = 0; i < 3 && !known; i++) known = !strcmp(base, names[i]);
    if (!known) return ALLOY_STATUS_OK;
    if (!slash) *dir = alloy_strdup(".");
    else if ((*dir = alloy_strdup(path))) (*dir)[slash == path ? 1 : slash - path] = '\0'; // "/config.json" -> "/"
    return *dir ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
}

alloy_status alloy_checkpoint_resolve(const char *path, char **ckpt) {
    *ckpt = NULL;
    if (!alloy_path_exists(path)) return alloy_fail(ALLOY_STATUS_IO, "%s: no such folder", path);
    if (!alloy_is_dir(path)) {
        alloy_status s = folder_of_file(path, ckpt);
        if (!s && !*ckpt)
            s = alloy_fail(ALLOY_STATUS_IO,
                           "%s: not a folder (give a checkpoint or run folder, or its config.json or model.safetensors)", path);
        return s;
    }
    // a checkpoint folder holds config.json or weights (loading then names what is missing)
    bool here;
    alloy_status s = holds_checkpoint(path, &here);
    if (s) return s;
    if (here) return (*ckpt = alloy_strdup(path)) ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    return alloy_run_latest(path, ckpt);
}

alloy_status alloy_run_latest(const char *run_dir, char **ckpt) {
    *ckpt = NULL;
    char *lp = alloy_path_join(run_dir, "latest");
    if (!lp) return ALLOY_STATUS_NOMEM;
    char *text;
    alloy_status s = alloy_file_read_all(lp, &text, NULL);
    if (s) {
        s = alloy_fail(ALLOY_STATUS_IO, "%s: no checkpoint here (neither model.safetensors nor a `latest` file)", run_dir);
        alloy_free(lp);
        return s;
    }
    size_t n = strcspn(text, "\r\n");
    text[n] = '\0';
    if (n == 0 || strstr(text, "..") || text[0] == '/') {
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: does not name a checkpoint folder", lp);
    } else {
        *ckpt = alloy_path_join(run_dir, text);
        if (!*ckpt) s = ALLOY_STATUS_NOMEM;
        else if (!alloy_is_dir(*ckpt)) {
            s = alloy_fail(ALLOY_STATUS_IO, "%s: names %s, which does not exist", lp, *ckpt);
            alloy_free(*ckpt);
            *ckpt = NULL;
        }
    }
    alloy_free(text);
    alloy_free(lp);
    return s;
}

/* ---- the checkpoint object ---- */

/* config.json's "chat_template" into out ("" when absent); FORMAT when it is not a short string. */
static alloy_status read_chat_template(const char *cpath, char *out, size_t size) {
    out[0] = '\0';
    cJSON *j;
    alloy_status s = alloy_json_read_file(cpath, &j);
    if (s) return s;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (t && (!cJSON_IsString(t) || strlen(t->valuestring) >= size))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"chat_template\" must be a short string", cpath);
    else if (t) strcpy(out, t->valuestring);
    cJSON_Delete(j);
    return s;
}

alloy_status alloy_checkpoint_open(alloy_checkpoint **out, const char *path) {
    *out = NULL;
    alloy_checkpoint *ck = alloy_calloc(1, sizeof *ck);
    if (!ck) return ALLOY_STATUS_NOMEM;
    alloy_status s = (ck->path = alloy_strdup(path)) ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_checkpoint_resolve(path, &ck->dir);
    if (!s) ck->from_run = alloy_is_dir(path) && strcmp(ck->dir, path) != 0;
    char *cpath = s ? NULL : alloy_path_join(ck->dir, "config.json");
    if (!s && !cpath) s = ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_config_load(&ck->config, cpath);
    if (!s) s = read_chat_template(cpath, ck->chat_template, sizeof ck->chat_template);
    if (!s) s = alloy_weight_files_open(&ck->weights, ck->dir);
    if (!s) s = alloy_tokenizer_folder_file(ck->dir, &ck->tokenizer_file);
    alloy_free(cpath);
    if (s) {
        alloy_checkpoint_close(ck);
        return s;
    }
    *out = ck;
    return ALLOY_STATUS_OK;
}

void alloy_checkpoint_close(alloy_checkpoint *ck) {
    if (!ck) return;
    alloy_weight_files_close(&ck->weights);
    alloy_tokenizer_destroy(ck->tok);
    alloy_free(ck->tokenizer_file);
    alloy_free(ck->dir);
    alloy_free(ck->path);
    alloy_free(ck);
}

alloy_status alloy_checkpoint_tokenizer(alloy_checkpoint *ck, const alloy_tokenizer **tok) {
    *tok = NULL;
    if (!ck->tok_loaded) {
        alloy_status s = alloy_tokenizer_load_folder(&ck->tok, ck->dir, ck->config.tokenizer);
        if (!s && ck->tok && alloy_tokenizer_vocab_size(ck->tok) > ck->config.vocab_size)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has %d tokens but the model only %d", ck->dir,
                           alloy_tokenizer_vocab_size(ck->tok), ck->config.vocab_size);
        if (s) {
            alloy_tokenizer_destroy(ck->tok);
            ck->tok = NULL;
            return s;
        }
        ck->tok_loaded = true;
    }
    *tok = ck->tok;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_checkpoint_fingerprint(alloy_checkpoint *ck, uint64_t *fp) {
    if (!ck->fingerprinted) {
        uint64_t h = ALLOY_FNV64_INIT;
        for (int i = 0; i < ck->weights.n; i++) {
            const alloy_file_map *m = &ck->weights.files[i]->map;
            h = alloy_fnv64(h, m->data, m->size);
        }
        ck->fingerprint = h;
        ck->fingerprinted = true;
    }
    *fp = ck->fingerprint;
    return ALLOY_STATUS_OK;
}

/* Formats a reason into why (n bytes; why may be NULL) and returns false. */
static bool refuse(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool refuse(char *why, size_t n, const char *fmt, ...) {
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return false;
}

bool alloy_checkpoint_compatible(alloy_checkpoint *a, alloy_checkpoint *b, char *why, size_t n) {
    if (why && n) why[0] = '\0';
    if (a->config.vocab_size != b->config.vocab_size)
        return refuse(why, n, "%s has a vocabulary of %d, %s of %d", b->dir, b->config.vocab_size, a->dir,
                      a->config.vocab_size);
    const alloy_tokenizer *ta, *tb;
    if (alloy_checkpoint_tokenizer(a, &ta) || alloy_checkpoint_tokenizer(b, &tb))
        return refuse(why, n, "%s", alloy_last_error());
    if (ta && tb && alloy_tokenizer_hash(ta) == alloy_tokenizer_hash(tb)) return true;
    if (!ta && !tb && !strcmp(a->config.tokenizer, b->config.tokenizer)) return true; // names agree: all we know
    if (!a->tokenizer_file != !b->tokenizer_file)
        return refuse(why, n, "%s has no tokenizer.json but %s has", a->tokenizer_file ? b->dir : a->dir,
                      a->tokenizer_file ? a->tokenizer_file : b->tokenizer_file);
    if (a->tokenizer_file) {
        int va = alloy_tokenizer_vocab_size(ta), vb = alloy_tokenizer_vocab_size(tb);
        if (va != vb)
            return refuse(why, n, "%s (%d tokens) differs from %s (%d tokens)", b->tokenizer_file, vb, a->tokenizer_file, va);
        return refuse(why, n, "%s differs from %s", b->tokenizer_file, a->tokenizer_file);
    }
    return refuse(why, n, "%s was trained with the tokenizer \"%s\", %s with \"%s\"", b->dir, b->config.tokenizer, a->dir,
                  a->config.tokenizer);
}

alloy_status alloy_checkpoint_load_tokenizer(const char *path, alloy_tokenizer **out) {
    *out = NULL;
    char *dir = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    if (!strcmp(path, "bytes") || !alloy_path_exists(path)) return alloy_tokenizer_load(out, path);
    if (!alloy_is_dir(path)) { // a tokenizer file, or a checkpoint's own file (its folder is meant)
        if ((s = folder_of_file(path, &dir)) || !dir) return s ? s : alloy_tokenizer_load(out, path);
    } else { // a folder holding a tokenizer file, or a model path
        if ((s = alloy_tokenizer_folder_file(path, &dir))) return s;
        if (dir) {
            alloy_free(dir);
            return alloy_tokenizer_load(out, path);
        }
        if ((s = alloy_checkpoint_resolve(path, &dir))) return s;
    }
    alloy_config cfg;
    cfg.tokenizer[0] = '\0';
    char *cpath = alloy_path_join(dir, "config.json");
    s = cpath ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s && alloy_path_exists(cpath)) s = alloy_config_load(&cfg, cpath);
    if (!s) s = alloy_tokenizer_load_folder(out, dir, cfg.tokenizer);
    if (!s && !*out) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: no tokenizer.json and config.json names no tokenizer", dir);
    alloy_free(cpath);
    alloy_free(dir);
    return s;
}
