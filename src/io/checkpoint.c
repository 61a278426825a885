/*
 * checkpoint.c — a model as a folder: model.safetensors + config.json, in the Hugging Face
 * layout of its family, so that the folder loads in transformers as it is.
 */
#include "alloy/io.h"

#include <cjson/cJSON.h>
#include <string.h>

alloy_status alloy_model_save(const alloy_model *m, const char *dir) {
    alloy_status s = alloy_mkdir_p(dir);
    if (s) return s;
    alloy_st_entry *e = alloy_calloc((size_t)m->n_tensors, sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        e[i].name = t->name;
        e[i].dtype = ALLOY_DTYPE_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        e[i].data = m->params_memory + t->offset;
    }
    static const char *const meta[] = {"format", "pt", "producer", "alloy", NULL};
    char *path = alloy_path_join(dir, "model.safetensors");
    s = path ? alloy_safetensors_write(path, e, m->n_tensors, meta) : ALLOY_STATUS_NOMEM;
    alloy_free(path);
    alloy_free(e);
    if (s) return s;
    path = alloy_path_join(dir, "config.json");
    s = path ? alloy_config_save(&m->config, path) : ALLOY_STATUS_NOMEM;
    alloy_free(path);
    return s;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

void alloy_format_shape(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && k + 24 < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(buf + k, size - k, "]");
}

bool alloy_checkpoint_ignorable(alloy_family family, const char *name) {
    if (family == ALLOY_FAMILY_GPT2)
        return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") ||
               !strcmp(name, "lm_head.weight"); // tied: a copy of wte
    return ends_with(name, ".rotary_emb.inv_freq");
}

void alloy_weight_files_close(alloy_weight_files *w) {
    for (int i = 0; i < w->n; i++) alloy_safetensors_close(w->files[i]);
    alloy_free(w->files);
    w->files = NULL;
    w->n = 0;
}

static alloy_status weight_files_add(alloy_weight_files *w, const char *path) {
    alloy_safetensors **f = alloy_realloc(w->files, sizeof *f * (size_t)w->n, sizeof *f * (size_t)(w->n + 1));
    if (!f) return ALLOY_STATUS_NOMEM;
    w->files = f;
    alloy_status s = alloy_safetensors_open(&w->files[w->n], path);
    if (!s) w->n++;
    return s;
}

alloy_status alloy_weight_files_open(alloy_weight_files *w, const char *path) {
    *w = (alloy_weight_files){0};
    if (!alloy_is_dir(path)) return weight_files_add(w, path);
    char *single = alloy_path_join(path, "model.safetensors");
    char *index = alloy_path_join(path, "model.safetensors.index.json");
    alloy_status s = (!single || !index) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    cJSON *json = NULL;
    if (s) {
    } else if (alloy_path_exists(single)) {
        s = weight_files_add(w, single);
    } else if (!alloy_path_exists(index)) {
        char *bin = alloy_path_join(path, "pytorch_model.bin");
        bool has_bin = bin && alloy_path_exists(bin);
        alloy_free(bin);
        s = alloy_fail(ALLOY_STATUS_IO, "%s: no model.safetensors or model.safetensors.index.json%s", path,
                       has_bin ? " (pytorch_model.bin is a pickle, which alloy does not read: convert it to safetensors)"
                               : "");
    } else if (!(s = alloy_json_read_file(index, &json))) {
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(json, "weight_map");
        if (!cJSON_IsObject(map) || !map->child)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"weight_map\" must be a non-empty object", index);
        // each shard once, in the order the map first names it
        for (const cJSON *e = map ? map->child : NULL; e && !s; e = e->next) {
            if (!cJSON_IsString(e) || !*e->valuestring || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" maps to a bad file name", index, e->string);
                break;
            }
            bool seen = false;
            for (const cJSON *p = map->child; p != e && !seen; p = p->next) seen = !strcmp(p->valuestring, e->valuestring);
            if (seen) continue;
            char *shard = alloy_path_join(path, e->valuestring);
            s = shard ? weight_files_add(w, shard) : ALLOY_STATUS_NOMEM;
            alloy_free(shard);
        }
    }
    cJSON_Delete(json);
    alloy_free(single);
    alloy_free(index);
    if (s) alloy_weight_files_close(w);
    return s;
}

/* The tensor stored for one of the model's names, under that name or, for GPT-2, under the
 * name without "transformer." (the Hugging Face hub's GPT2Model files). *file gets its file. */
static const alloy_st_tensor *weight_files_find(const alloy_weight_files *w, const alloy_model *m, const char *name,
                                              const alloy_safetensors **file) {
    for (int pass = 0; pass < 2; pass++) {
        const char *n = name;
        if (pass == 1) {
            if (m->config.family != ALLOY_FAMILY_GPT2 || strncmp(name, "transformer.", 12)) break;
            n = name + 12;
        }
        for (int i = 0; i < w->n; i++) {
            const alloy_st_tensor *t = alloy_safetensors_find(w->files[i], n);
            if (t) {
                *file = w->files[i];
                return t;
            }
        }
    }
    return NULL;
}

/* One of ours a stored name stands for (with the GPT-2 prefix restored), or NULL. */
static const alloy_tensor_info *model_tensor_for(const alloy_model *m, const char *stored) {
    const alloy_tensor_info *t = alloy_model_find_tensor(m, stored);
    if (t || m->config.family != ALLOY_FAMILY_GPT2) return t;
    char full[160];
    if (snprintf(full, sizeof full, "transformer.%s", stored) >= (int)sizeof full) return NULL;
    return alloy_model_find_tensor(m, full);
}

alloy_status alloy_model_load_weights(alloy_model *m, const char *path) {
    alloy_weight_files w;
    alloy_status s = alloy_weight_files_open(&w, path);
    if (s) return s;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        const alloy_safetensors *st = NULL;
        const alloy_st_tensor *t = weight_files_find(&w, m, ti->name, &st);
        if (!t) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (does config.json match the weights?)",
                           path, ti->name);
            break;
        }
        bool same = t->ndim == ti->ndim;
        for (int d = 0; same && d < ti->ndim; d++) same = t->shape[d] == ti->shape[d];
        if (!same) {
            char want[96], got[96];
            alloy_format_shape(want, sizeof want, ti->shape, ti->ndim);
            alloy_format_shape(got, sizeof got, t->shape, t->ndim);
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" has shape %s but config.json implies %s", st->path,
                           t->name, got, want);
            break;
        }
        s = alloy_st_tensor_to_f32(st, t, m->params_memory + ti->offset);
    }
    for (int f = 0; f < w.n && !s; f++) {
        for (int i = 0; i < w.files[f]->n_tensors && !s; i++) {
            const char *name = w.files[f]->tensors[i].name;
            if (!model_tensor_for(m, name) && !alloy_checkpoint_ignorable(m->config.family, name))
                s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: unexpected tensor \"%s\" (does config.json match the weights?)",
                               w.files[f]->path, name);
        }
    }
    alloy_weight_files_close(&w);
    return s;
}

alloy_status alloy_model_load(alloy_model **out, const char *dir, int max_B, int max_T) {
    *out = NULL;
    if (!alloy_is_dir(dir))
        return alloy_fail(ALLOY_STATUS_IO, "%s: %s", dir, alloy_path_exists(dir) ? "not a folder" : "no such folder");
    char *cpath = alloy_path_join(dir, "config.json");
    alloy_status s = !cpath ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    alloy_config cfg;
    if (!s) s = alloy_config_load(&cfg, cpath);
    alloy_model *m = NULL;
    if (!s) s = alloy_model_create(&m, &cfg, max_B, max_T > 0 ? max_T : cfg.max_seq_len);
    if (!s) s = alloy_model_load_weights(m, dir);
    alloy_free(cpath);
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}
