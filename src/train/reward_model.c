/*
 * reward_model.c — a language model with a scalar head on its final hidden states: a reward
 * model's score head (score.weight, score.bias) and PPO's value head (TRL's v_head.summary),
 * as a second small arena beside the backbone's, presented as a parameter table (head_view) so
 * that the one run's AdamW trains both under one clipped norm; load, save, create.
 */
#include "alloy/align.h"
#include "alloy/io.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The head's table: score.weight (1, C) at 0, score.bias (1) after it, 16-float aligned. */
static void head_table(alloy_reward_model *rm, int C) {
    size_t wpad = ((size_t)C + 15) / 16 * 16;
    alloy_tensor_info *w = &rm->head_tensors[0], *b = &rm->head_tensors[1];
    memset(rm->head_tensors, 0, sizeof rm->head_tensors);
    snprintf(w->name, sizeof w->name, "score.weight");
    w->ndim = 2;
    w->shape[0] = 1;
    w->shape[1] = C;
    w->numel = (size_t)C;
    w->decay = true;
    snprintf(b->name, sizeof b->name, "score.bias");
    b->ndim = 1;
    b->shape[0] = 1;
    b->numel = 1;
    b->offset = wpad;
    rm->head_floats = wpad + 16;
}

void alloy_reward_model_destroy(alloy_reward_model *rm) {
    if (!rm) return;
    alloy_model_destroy(rm->model);
    alloy_free(rm->head);
    alloy_free(rm->head_grad);
    alloy_free(rm);
}

/* A reward model around `backbone` with a zero head (taken over even on failure). */
static alloy_status wrap(alloy_reward_model **out, alloy_model *backbone) {
    *out = NULL;
    alloy_reward_model *rm = alloy_calloc(1, sizeof *rm);
    if (!rm) {
        alloy_model_destroy(backbone);
        return ALLOY_STATUS_NOMEM;
    }
    rm->model = backbone;
    head_table(rm, backbone->config.d_model);
    rm->head = alloy_calloc(rm->head_floats, sizeof(float));
    rm->head_grad = alloy_calloc(rm->head_floats, sizeof(float));
    if (!rm->head || !rm->head_grad) {
        alloy_reward_model_destroy(rm);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the reward head");
    }
    alloy_model *v = &rm->head_view;
    v->config = backbone->config;
    v->tensors = rm->head_tensors;
    v->n_tensors = 2;
    v->num_params = rm->head_floats;
    v->params_memory = rm->head;
    v->grads_memory = rm->head_grad;
    *out = rm;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_reward_model_create(alloy_reward_model **out, alloy_model *backbone, uint64_t seed) {
    alloy_status s = wrap(out, backbone);
    if (s) return s;
    alloy_rng rng;
    alloy_rng_seed(&rng, seed ^ 0x5c0e5c0e5c0e5c0eULL);
    for (size_t c = 0; c < (*out)->head_tensors[0].numel; c++) (*out)->head[c] = 0.02f * (float)alloy_rng_normal(&rng);
    return ALLOY_STATUS_OK;
}

void alloy_reward_model_zero_grad(alloy_reward_model *rm) {
    alloy_model_zero_grad(rm->model);
    memset(rm->head_grad, 0, sizeof(float) * rm->head_floats);
}

static bool same_shape(const alloy_st_tensor *t, const alloy_tensor_info *ti) {
    if (t->ndim != ti->ndim) return false;
    for (int d = 0; d < ti->ndim; d++)
        if (t->shape[d] != ti->shape[d]) return false;
    return true;
}

/* Loads the backbone's tensors and the head from one model.safetensors, strictly. */
static alloy_status load_with_head(alloy_reward_model *rm, const alloy_safetensors *st) {
    alloy_model *m = rm->model;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < m->n_tensors + 2 && !s; i++) {
        const alloy_tensor_info *ti = i < m->n_tensors ? &m->tensors[i] : &rm->head_tensors[i - m->n_tensors];
        float *dst = i < m->n_tensors ? m->params_memory + ti->offset : rm->head + ti->offset;
        const alloy_st_tensor *t = alloy_safetensors_find(st, ti->name);
        if (!t && i == m->n_tensors + 1) continue; // no bias (as transformers saves the head): 0
        if (!t) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: missing tensor \"%s\" (does config.json match the weights?)", st->path, ti->name);
        else if (!same_shape(t, ti))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" does not have the shape config.json implies", st->path, ti->name);
        else s = alloy_st_tensor_to_f32(st, t, dst);
    }
    for (int i = 0; i < st->n_tensors && !s; i++) {
        const char *name = st->tensors[i].name;
        bool known = alloy_model_find_tensor(m, name) || !strcmp(name, "score.weight") || !strcmp(name, "score.bias") ||
                     (m->config.family == ALLOY_FAMILY_GPT2 && !strcmp(name, "lm_head.weight"));
        if (!known) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: unexpected tensor \"%s\"", st->path, name);
    }
    return s;
}

alloy_status alloy_reward_model_load(alloy_reward_model **out, const char *dir, int max_B, int max_T, bool need_head,
                                     uint64_t seed) {
    *out = NULL;
    char *wp = alloy_path_join(dir, "model.safetensors"), *cp = alloy_path_join(dir, "config.json");
    alloy_status s = (!wp || !cp) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    alloy_safetensors *st = NULL;
    if (!s && alloy_path_exists(wp)) s = alloy_safetensors_open(&st, wp);
    bool has_head = st && alloy_safetensors_find(st, "score.weight");
    alloy_model *m = NULL;
    if (s) {
    } else if (!has_head) {
        if (need_head)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no score.weight: not a reward model (train one with alloy reward)", dir);
        else if (!(s = alloy_model_load(&m, dir, max_B, max_T)))
            s = alloy_reward_model_create(out, m, seed);
    } else {
        alloy_config cfg;
        s = alloy_config_load(&cfg, cp);
        if (!s) s = alloy_model_create(&m, &cfg, max_B, max_T > 0 ? max_T : cfg.max_seq_len);
        if (!s) s = wrap(out, m);
        if (!s) s = load_with_head(*out, st);
        if (s) {
            alloy_reward_model_destroy(*out);
            *out = NULL;
        }
    }
    alloy_safetensors_close(st);
    alloy_free(wp);
    alloy_free(cp);
    return s;
}

alloy_status alloy_reward_model_save(const alloy_reward_model *rm, const char *dir) {
    const alloy_model *m = rm->model;
    alloy_status s = alloy_mkdir_p(dir);
    if (s) return s;
    int n = m->n_tensors + 2;
    alloy_st_entry *e = alloy_calloc((size_t)n, sizeof *e);
    if (!e) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) {
        const alloy_tensor_info *t = i < m->n_tensors ? &m->tensors[i] : &rm->head_tensors[i - m->n_tensors];
        e[i].name = t->name;
        e[i].dtype = ALLOY_DTYPE_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        e[i].data = (i < m->n_tensors ? m->params_memory : rm->head) + t->offset;
    }
    static const char *const meta[] = {"format", "pt", "producer", "alloy", NULL};
    char *path = alloy_path_join(dir, "model.safetensors");
    s = path ? alloy_safetensors_write(path, e, n, meta) : ALLOY_STATUS_NOMEM;
    alloy_free(path);
    alloy_free(e);
    if (s) return s;
    cJSON *j = alloy_config_to_json(&m->config);
    if (!j) return ALLOY_STATUS_NOMEM;
    cJSON_DeleteItemFromObjectCaseSensitive(j, "architectures");
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(m->config.family == ALLOY_FAMILY_GPT2 ? "GPT2ForSequenceClassification"
                                                                                        : "LlamaForSequenceClassification"));
    cJSON_AddNumberToObject(j, "num_labels", 1);
    path = alloy_path_join(dir, "config.json");
    s = path ? alloy_json_write_file(path, j) : ALLOY_STATUS_NOMEM;
    alloy_free(path);
    cJSON_Delete(j);
    return s;
}

/* ---- the value head ---- */

static const char *const vhead_names[2] = {"v_head.summary.weight", "v_head.summary.bias"};

alloy_status alloy_ppo_value_model_create(alloy_reward_model **out, alloy_model *policy) {
    alloy_status s = alloy_reward_model_create(out, policy, 0);
    if (s) return s;
    alloy_reward_model *pv = *out;
    for (int i = 0; i < 2; i++) snprintf(pv->head_tensors[i].name, sizeof pv->head_tensors[i].name, "%s", vhead_names[i]);
    memset(pv->head, 0, sizeof(float) * pv->head_floats);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ppo_value_head_save(const alloy_reward_model *pv, const char *path) {
    alloy_st_entry e[2];
    memset(e, 0, sizeof e);
    for (int i = 0; i < 2; i++) {
        const alloy_tensor_info *t = &pv->head_tensors[i];
        e[i].name = t->name;
        e[i].dtype = ALLOY_DTYPE_F32;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
        e[i].data = pv->head + t->offset;
    }
    static const char *const meta[] = {"format", "pt", "producer", "alloy", NULL};
    return alloy_safetensors_write(path, e, 2, meta);
}

alloy_status alloy_ppo_value_head_load(alloy_reward_model *pv, const char *path) {
    alloy_safetensors *st = NULL;
    alloy_status s = alloy_safetensors_open(&st, path);
    for (int i = 0; i < 2 && !s; i++) {
        const alloy_tensor_info *ti = &pv->head_tensors[i];
        const alloy_st_tensor *t = alloy_safetensors_find(st, ti->name);
        if (!t || t->numel != ti->numel || t->ndim != ti->ndim)
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no tensor \"%s\" of %zu values", path, ti->name, ti->numel);
        else s = alloy_st_tensor_to_f32(st, t, pv->head + ti->offset);
    }
    alloy_safetensors_close(st);
    return s;
}

