/*
 * checkpoint.c — a model as a folder: model.safetensors + config.json, in the Hugging Face
 * layout of its family, so that the folder loads in transformers as it is.
 */
#include "alloy/io.h"

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

static void format_shape(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && k + 24 < size; d++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    snprintf(buf + k, size - k, "]");
}

/* Tensors that checkpoints of the family may carry but that hold no parameters of ours. */
static bool ignorable(const alloy_model *m, const char *name) {
    if (m->config.family == ALLOY_FAMILY_GPT2)
        return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias") ||
               !strcmp(name, "lm_head.weight"); // tied: a copy of wte
    return ends_with(name, ".rotary_emb.inv_freq");
}

alloy_status alloy_model_load_weights(alloy_model *m, const char *path) {
    alloy_safetensors *st;
    alloy_status s = alloy_safetensors_open(&st, path);
    if (s) return s;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        const alloy_st_tensor *t = alloy_safetensors_find(st, ti->name);
        if (!t) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (does config.json match the weights?)",
                           path, ti->name);
            break;
        }
        bool same = t->ndim == ti->ndim;
        for (int d = 0; same && d < ti->ndim; d++) same = t->shape[d] == ti->shape[d];
        if (!same) {
            char want[96], got[96];
            format_shape(want, sizeof want, ti->shape, ti->ndim);
            format_shape(got, sizeof got, t->shape, t->ndim);
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" has shape %s but config.json implies %s", path,
                           ti->name, got, want);
            break;
        }
        s = alloy_st_tensor_to_f32(st, t, m->params_memory + ti->offset);
    }
    for (int i = 0; i < st->n_tensors && !s; i++) {
        const char *name = st->tensors[i].name;
        if (!alloy_model_find_tensor(m, name) && !ignorable(m, name))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: unexpected tensor \"%s\" (does config.json match the weights?)",
                           path, name);
    }
    alloy_safetensors_close(st);
    return s;
}

alloy_status alloy_model_load(alloy_model **out, const char *dir, int max_B, int max_T) {
    *out = NULL;
    if (!alloy_is_dir(dir))
        return alloy_fail(ALLOY_STATUS_IO, "%s: %s", dir, alloy_path_exists(dir) ? "not a folder" : "no such folder");
    char *cpath = alloy_path_join(dir, "config.json");
    char *wpath = alloy_path_join(dir, "model.safetensors");
    alloy_status s = (!cpath || !wpath) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    alloy_config cfg;
    if (!s) s = alloy_config_load(&cfg, cpath);
    alloy_model *m = NULL;
    if (!s) s = alloy_model_create(&m, &cfg, max_B, max_T > 0 ? max_T : cfg.max_seq_len);
    if (!s) s = alloy_model_load_weights(m, wpath);
    alloy_free(cpath);
    alloy_free(wpath);
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}
