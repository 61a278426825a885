/*
 * merge_plan.c — the plan of a merge: which tensors the output holds, from which models, with
 * which parameters. Each model folder of the recipe is opened without loading it: its
 * config.json read and its safetensors (one file or the shards of model.safetensors.index.json)
 * memory-mapped, only headers touched. Tensors are named canonically (GPT-2 hub names get
 * "transformer." back), split into the layers ("….h.N.…", "….layers.N.…") and the rest, and
 * checked to agree across models; the output list is built as mergekit builds it (embeddings
 * from the first slice's sources, layers slice by slice and renumbered, the final norm and head
 * from the last slice's), and every parameter is resolved for every tensor. Nothing is written
 * until the plan stands (merge.c writes it).
 */
#include "alloy/tokenizer.h"
#include "merge_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ==== the models of a recipe ================================================================= */

/* Unmaps a model's files and frees what model_open allocated (a zeroed model is fine). */
static void model_close(merge_model *m) {
    for (int i = 0; i < m->n_tensors; i++) alloy_free(m->tensors[i].name);
    alloy_free(m->tensors);
    alloy_free(m->sorted);
    for (int i = 0; i < m->n_files; i++) alloy_safetensors_close(m->files[i]);
    alloy_free(m->files);
    alloy_free(m->path);
    alloy_free(m->tokenizer_json);
    memset(m, 0, sizeof *m);
}

/* The layer number in "….h.N.…" or "….layers.N.…" (at the start or after a dot), or -1. */
static int layer_of(const char *name, int *prefix_len, const char **suffix) {
    for (const char *p = name; *p; p++) {
        if (p != name && p[-1] != '.') continue;
        size_t kw = !strncmp(p, "layers.", 7) ? 7 : !strncmp(p, "h.", 2) ? 2 : 0;
        const char *q = p + kw;
        if (!kw || !isdigit((unsigned char)*q)) continue;
        long v = 0;
        while (isdigit((unsigned char)*q) && v < 1000000) v = v * 10 + (*q++ - '0');
        if (*q != '.') continue;
        *prefix_len = (int)(p + kw - name);
        *suffix = q + 1;
        return (int)v;
    }
    return -1;
}

static int cmp_held(const void *a, const void *b) {
    return strcmp((*(const held_tensor *const *)a)->name, (*(const held_tensor *const *)b)->name);
}

/* The tensor of m with this canonical name, or NULL. */
static const held_tensor *model_find(const merge_model *m, const char *name) {
    held_tensor key = {.name = (char *)name}, *kp = &key;
    held_tensor **hit = bsearch(&kp, m->sorted, (size_t)m->n_tensors, sizeof *m->sorted, cmp_held);
    return hit ? *hit : NULL;
}

/* Maps the weights of folder m->path: model.safetensors, or the shards an index lists. */
static alloy_status model_map_files(merge_model *m) {
    alloy_weight_files w;
    alloy_status s = alloy_weight_files_open(&w, m->path);
    if (!s) {
        m->files = w.files;
        m->n_files = w.n;
    }
    return s;
}

/* The table of canonical names of an opened model, checked against its config. */
static alloy_status model_index(merge_model *m) {
    int total = 0;
    for (int f = 0; f < m->n_files; f++) total += m->files[f]->n_tensors;
    m->tensors = alloy_calloc((size_t)(total ? total : 1), sizeof *m->tensors);
    m->sorted = alloy_calloc((size_t)(total ? total : 1), sizeof *m->sorted);
    if (!m->tensors || !m->sorted) return ALLOY_STATUS_NOMEM;
    for (int f = 0; f < m->n_files; f++) {
        const alloy_safetensors *st = m->files[f];
        for (int i = 0; i < st->n_tensors; i++) {
            const alloy_st_tensor *t = &st->tensors[i];
            if (alloy_checkpoint_ignorable(m->config.family, t->name)) continue;
            if (t->dtype != ALLOY_DTYPE_F32 && t->dtype != ALLOY_DTYPE_F16 && t->dtype != ALLOY_DTYPE_BF16)
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" has dtype %s; alloy merges F32, F16 and BF16",
                                  st->path, t->name, alloy_dtype_name(t->dtype));
            held_tensor *h = &m->tensors[m->n_tensors];
            bool prefix = m->config.family == ALLOY_FAMILY_GPT2 && strncmp(t->name, "transformer.", 12);
            size_t len = strlen(t->name) + (prefix ? 12 : 0) + 1;
            if (!(h->name = alloy_malloc(len))) return ALLOY_STATUS_NOMEM;
            snprintf(h->name, len, "%s%s", prefix ? "transformer." : "", t->name);
            h->file = st;
            h->t = t;
            h->layer = layer_of(h->name, &h->prefix_len, &h->suffix);
            m->sorted[m->n_tensors++] = h;
            m->bytes += t->nbytes;
            if (h->layer >= m->config.n_layer)
                return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: tensor \"%s\" is in layer %d but config.json has n_layer %d",
                                  st->path, t->name, h->layer, m->config.n_layer);
        }
    }
    qsort(m->sorted, (size_t)m->n_tensors, sizeof *m->sorted, cmp_held);
    for (int i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->sorted[i - 1]->name, m->sorted[i]->name))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: tensor \"%s\" is stored twice", m->path, m->sorted[i]->name);
    return ALLOY_STATUS_OK;
}

/* Opens a model folder: config, mapped weights, tokenizer fingerprint. */
static alloy_status model_open(merge_model *m, const char *label, int line, const char *recipe) {
    memset(m, 0, sizeof *m);
    m->label = label;
    m->line = line;
    if (!alloy_is_dir(label))
        return alloy_fail(ALLOY_STATUS_IO, "%s:%d: model \"%s\": %s", recipe, line, label,
                          alloy_path_exists(label) ? "not a folder" : "no such folder");
    char *real = realpath(label, NULL);
    m->path = real ? alloy_strdup(real) : alloy_strdup(label);
    free(real);
    if (!m->path) return ALLOY_STATUS_NOMEM;
    char *cpath = alloy_path_join(m->path, "config.json"), *tpath = alloy_path_join(m->path, "tokenizer.json");
    alloy_status s = cpath && tpath ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_config_load(&m->config, cpath);
    if (!s) s = model_map_files(m);
    if (!s) s = model_index(m);
    // the tokenizer's identity (alloy_tokenizer_hash: the same tokens and merges, however written);
    // a folder that names a tokenizer it does not carry has only the name
    alloy_tokenizer *tok = NULL;
    alloy_status ts = s ? s : alloy_tokenizer_load_folder(&tok, m->path, m->config.tokenizer);
    if (ts == ALLOY_STATUS_MISMATCH && m->config.tokenizer[0])
        m->tok_id = alloy_fnv64(ALLOY_FNV64_INIT, m->config.tokenizer, strlen(m->config.tokenizer)) | 1;
    else s = ts;
    if (!s && tok) m->tok_id = alloy_tokenizer_hash(tok) | 1;
    if (!s && alloy_path_exists(tpath)) {
        m->tokenizer_json = tpath;
        tpath = NULL;
    }
    alloy_tokenizer_destroy(tok);
    alloy_free(cpath);
    alloy_free(tpath);
    if (s) alloy_error_prefix("%s:%d: model \"%s\"", recipe, line, label);
    return s;
}

/* ==== the plan ================================================================================ */

/* Frees a plan, built or partly built, with its models. */
void merge_plan_free(plan *p) {
    for (int i = 0; i < p->n_out; i++) {
        alloy_free(p->out[i].name);
        alloy_free(p->out[i].in);
        alloy_free(p->out[i].weight);
    }
    alloy_free(p->out);
    for (int i = 0; i < p->n_slices; i++) alloy_free(p->slices[i].sources);
    alloy_free(p->slices);
    for (int i = 0; i < p->n_models; i++) model_close(&p->models[i]);
    alloy_free(p->models);
    memset(p, 0, sizeof *p);
}

/* The index of a model folder, opening it on first use. */
static alloy_status plan_model(plan *p, const char *label, int line, int *out) {
    for (int i = 0; i < p->n_models; i++) {
        if (!strcmp(p->models[i].label, label)) {
            *out = i;
            return ALLOY_STATUS_OK;
        }
    }
    merge_model m;
    alloy_status s = model_open(&m, label, line, p->r->path);
    if (s) {
        model_close(&m);
        return s;
    }
    for (int i = 0; i < p->n_models; i++) { // the same folder under another spelling
        if (!strcmp(p->models[i].path, m.path)) {
            model_close(&m);
            *out = i;
            return ALLOY_STATUS_OK;
        }
    }
    merge_model *grown = alloy_realloc(p->models, sizeof *grown * (size_t)p->n_models, sizeof *grown * (size_t)(p->n_models + 1));
    if (!grown) {
        model_close(&m);
        return ALLOY_STATUS_NOMEM;
    }
    p->models = grown;
    p->models[p->n_models] = m;
    *out = p->n_models++;
    return ALLOY_STATUS_OK;
}

static bool same_shape(const alloy_st_tensor *a, const alloy_st_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* Model b against the reference a: same family and sizes, the same tensors with the same
 * shapes (layers compared by what follows the layer number). */
static alloy_status check_compatible(const plan *p, const merge_model *a, const merge_model *b) {
    const char *rp = p->r->path;
    const alloy_config *x = &a->config, *y = &b->config;
    if (x->family != y->family)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" is of the %s family but \"%s\" is %s", rp, b->line,
                          b->label, alloy_family_name(y->family), a->label, alloy_family_name(x->family));
#define SAME(field, fmt)                                                                                         \
    if (x->field != y->field)                                                                                    \
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has " #field " " fmt " but \"%s\" has " fmt, rp, \
                          b->line, b->label, y->field, a->label, x->field);
    SAME(vocab_size, "%d") SAME(d_model, "%d") SAME(n_head, "%d") SAME(n_kv_head, "%d") SAME(d_ff, "%d")
    SAME(max_seq_len, "%d") SAME(tie_embeddings, "%d") SAME(norm_eps, "%g") SAME(rope_theta, "%g")
#undef SAME
    // every tensor of b is one of a's (by name, or by layer suffix), with a's shape
    int a_plain = 0, a_layer0 = 0, b_match = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        a_plain += a->tensors[i].layer < 0;
        a_layer0 += a->tensors[i].layer == 0;
    }
    for (int i = 0; i < b->n_tensors; i++) {
        const held_tensor *h = &b->tensors[i];
        const held_tensor *g = NULL;
        if (h->layer < 0) {
            g = model_find(a, h->name);
        } else {
            char name[512];
            snprintf(name, sizeof name, "%.*s0.%s", h->prefix_len, h->name, h->suffix);
            g = model_find(a, name);
        }
        if (!g)
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has tensor \"%s\", which \"%s\" lacks", rp, b->line,
                              b->label, h->name, a->label);
        if (!same_shape(g->t, h->t)) {
            char ga[96], gb[96];
            alloy_format_shape(ga, sizeof ga, g->t->shape, g->t->ndim);
            alloy_format_shape(gb, sizeof gb, h->t->shape, h->t->ndim);
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: tensor \"%s\" has shape %s in \"%s\" but %s in \"%s\"", rp,
                              b->line, h->name, gb, b->label, ga, a->label);
        }
        b_match++;
    }
    if (b_match != a_plain + a_layer0 * y->n_layer)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: model \"%s\" has %d tensors where \"%s\" implies %d for %d layers", rp,
                          b->line, b->label, b_match, a->label, a_plain + a_layer0 * y->n_layer, y->n_layer);
    return ALLOY_STATUS_OK;
}

/* Whether the method merges relative to a base model. */
static bool method_uses_base(alloy_merge_method m) {
    return m != ALLOY_MERGE_METHOD_LINEAR && m != ALLOY_MERGE_METHOD_PASSTHROUGH;
}

/* The slices with their models opened and layer ranges resolved. */
static alloy_status plan_slices(plan *p) {
    const alloy_merge_recipe *r = p->r;
    p->slices = alloy_calloc((size_t)r->n_slices, sizeof *p->slices);
    if (!p->slices) return ALLOY_STATUS_NOMEM;
    p->n_slices = r->n_slices;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < r->n_slices && !s; i++) {
        const alloy_merge_slice *def = &r->slices[i];
        plan_slice *sl = &p->slices[i];
        sl->def = def;
        sl->base = -1;
        const char *base = def->base_model ? def->base_model : r->base_model;
        int base_line = def->base_model ? def->line : r->base_line;
        sl->sources = alloy_calloc((size_t)def->n_sources + 1, sizeof *sl->sources);
        if (!sl->sources) return ALLOY_STATUS_NOMEM;
        int base_model = -1;
        if (base && method_uses_base(r->method) && (s = plan_model(p, base, base_line, &base_model))) break;
        for (int j = 0; j < def->n_sources && !s; j++) {
            plan_source *ps = &sl->sources[sl->n++];
            ps->def = &def->sources[j];
            ps->line = ps->def->line;
            s = plan_model(p, ps->def->model, ps->line, &ps->model);
            if (!s && ps->model == base_model) sl->base = j;
        }
        if (s) break;
        if (base_model >= 0 && sl->base < 0) {
            if (r->slices_form)
                return alloy_fail(ALLOY_STATUS_MISMATCH, "%s:%d: the base model \"%s\" is not among the sources of this slice",
                                  r->path, def->line, base);
            sl->base = sl->n; // models: mergekit adds the base model when the list leaves it out
            sl->sources[sl->n++] = (plan_source){.model = base_model, .line = base_line};
        }
        if (r->method == ALLOY_MERGE_METHOD_SLERP && sl->n != 2)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: slerp merges exactly two models (base_model and one other), not %d",
                              r->path, def->line, sl->n);
        int length = -1;
        for (int j = 0; j < sl->n; j++) {
            plan_source *ps = &sl->sources[j];
            const merge_model *m = &p->models[ps->model];
            if (!ps->def || ps->def->layer_begin < 0) {
                ps->begin = 0;
                ps->end = m->config.n_layer;
            } else {
                ps->begin = ps->def->layer_begin;
                ps->end = ps->def->layer_end;
                if (ps->end > m->config.n_layer)
                    return alloy_fail(ALLOY_STATUS_RANGE, "%s:%d: layer_range [%d, %d] goes past the %d layers of \"%s\"",
                                      r->path, ps->line, ps->begin, ps->end, m->config.n_layer, m->label);
            }
            if (length >= 0 && ps->end - ps->begin != length)
                return alloy_fail(ALLOY_STATUS_MISMATCH,
                                  r->slices_form ? "%s:%d: the sources of a slice must have as many layers each (%d and %d)"
                                                 : "%s:%d: the models have different numbers of layers (%d and %d): choose "
                                                   "layers with slices:",
                                  r->path, ps->line, length, ps->end - ps->begin);
            length = ps->end - ps->begin;
        }
        p->n_layer += length;
        if (sl->n > p->max_sources) p->max_sources = sl->n;
    }
    return s;
}

/* The value of parameter `name` for source src (NULL: the merge's own parameters) of slice sl
 * at tensor `tensor`, position t: the source's, then the slice's, then the top-level ones. */
static const alloy_merge_param *lookup(const plan *p, const plan_slice *sl, const plan_source *src, const char *name,
                                       const char *tensor, double t, double *out) {
    const alloy_merge_params *levels[3] = {src && src->def ? &src->def->params : NULL, &sl->def->params, &p->r->params};
    for (int i = 0; i < 3; i++) {
        const alloy_merge_param *q = levels[i] ? alloy_merge_params_find(levels[i], name) : NULL;
        if (q && alloy_merge_param_eval(q, tensor, t, out)) return q;
    }
    return NULL;
}

/* Resolves the parameters of one output tensor. */
static alloy_status plan_params(plan *p, out_tensor *o, double t) {
    const alloy_merge_recipe *r = p->r;
    const plan_slice *sl = &p->slices[o->slice];
    alloy_merge_method m = r->method;
    int n = sl->n;
    o->weight = alloy_calloc((size_t)n * 3, sizeof(double));
    if (!o->weight) return ALLOY_STATUS_NOMEM;
    o->density = o->weight + n;
    o->scale = o->weight + 2 * n;
    double v; // defaults as mergekit's: normalize for linear and ties only
    o->normalize = lookup(p, sl, NULL, "normalize", o->name, t, &v) ? v != 0.0
                                                                     : m == ALLOY_MERGE_METHOD_LINEAR || m == ALLOY_MERGE_METHOD_TIES;
    o->rescale = lookup(p, sl, NULL, "rescale", o->name, t, &v) ? v != 0.0 : true;
    o->lambda = lookup(p, sl, NULL, "lambda", o->name, t, &v) ? v : 1.0;
    if (m == ALLOY_MERGE_METHOD_SLERP) {
        if (!lookup(p, sl, NULL, "t", o->name, t, &o->t))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: slerp has no t for tensor \"%s\"", r->path, r->method_line, o->name);
    }
    double wsum = 0.0;
    for (int j = 0; j < n; j++) {
        const plan_source *ps = &sl->sources[j];
        const char *in_name = o->in[j]->name; // per-model parameters see the input's name, as in mergekit
        const char *label = p->models[ps->model].label;
        bool task = method_uses_base(m) && j != sl->base;
        o->scale[j] = lookup(p, sl, ps, "scale", in_name, t, &v) ? v : NAN;
        if (m == ALLOY_MERGE_METHOD_LINEAR || (task && m != ALLOY_MERGE_METHOD_SLERP)) {
            if (!lookup(p, sl, ps, "weight", in_name, t, &o->weight[j]))
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: model \"%s\" has no weight for tensor \"%s\"", r->path, ps->line,
                                  label, in_name);
            wsum += o->weight[j];
        }
        const alloy_merge_param *q = lookup(p, sl, ps, "density", in_name, t, &o->density[j]);
        if (!q) o->density[j] = 1.0;
        else if (task && !(o->density[j] > 0.0 && o->density[j] <= 1.0))
            return alloy_fail(ALLOY_STATUS_RANGE, "%s:%d: density %g for model \"%s\" at tensor \"%s\" is outside (0, 1]",
                              r->path, q->line, o->density[j], label, in_name);
    }
    if (m == ALLOY_MERGE_METHOD_LINEAR && o->normalize && wsum == 0.0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: the weights sum to 0 at tensor \"%s\", so normalize cannot divide by them",
                          r->path, sl->def->line, o->name);
    return ALLOY_STATUS_OK;
}

/* Appends one output tensor merged from the sources of slice si; `names[j]` is the input's name
 * in source j's model. */
static alloy_status plan_add(plan *p, const char *out_name, int si, char **names, double t) {
    if (p->n_out == p->cap_out) {
        int cap = p->cap_out ? 2 * p->cap_out : 64;
        out_tensor *grown = alloy_realloc(p->out, sizeof *grown * (size_t)p->cap_out, sizeof *grown * (size_t)cap);
        if (!grown) return ALLOY_STATUS_NOMEM;
        p->out = grown;
        p->cap_out = cap;
    }
    out_tensor *o = &p->out[p->n_out++];
    memset(o, 0, sizeof *o);
    o->slice = si;
    o->name = alloy_strdup(out_name);
    const plan_slice *sl = &p->slices[si];
    o->in = alloy_calloc((size_t)sl->n, sizeof *o->in);
    if (!o->name || !o->in) return ALLOY_STATUS_NOMEM;
    for (int j = 0; j < sl->n; j++) {
        const merge_model *m = &p->models[sl->sources[j].model];
        o->in[j] = model_find(m, names[j]);
        if (!o->in[j]) // the compatibility check makes this unreachable
            return alloy_fail(ALLOY_STATUS_INTERNAL, "%s: tensor \"%s\" not found", m->label, names[j]);
    }
    const alloy_st_tensor *t0 = o->in[0]->t;
    o->ndim = t0->ndim;
    memcpy(o->shape, t0->shape, sizeof o->shape);
    o->numel = t0->numel;
    return plan_params(p, o, t);
}

/* The output tensors in order: embeddings, the layers slice by slice, the rest. */
static alloy_status plan_tensors(plan *p) {
    const merge_model *ref = &p->models[p->ref];
    char **names = alloy_calloc((size_t)p->max_sources, sizeof *names);
    char *buf = alloy_malloc((size_t)p->max_sources * 512 + 512);
    if (!names || !buf) {
        alloy_free(names);
        alloy_free(buf);
        return ALLOY_STATUS_NOMEM;
    }
    for (int j = 0; j < p->max_sources; j++) names[j] = buf + 512 + 512 * (size_t)j;
    alloy_status s = ALLOY_STATUS_OK;
    for (int pass = 0; pass < 2 && !s; pass++) { // embeddings (pass 0), then layers, then the rest (pass 1)
        if (pass == 1) {
            int out_layer = 0;
            for (int si = 0; si < p->n_slices && !s; si++) {
                const plan_slice *sl = &p->slices[si];
                int len = sl->sources[0].end - sl->sources[0].begin;
                for (int k = 0; k < len && !s; k++, out_layer++) {
                    double t = len > 1 ? (double)k / (double)(len - 1) : 1.0; // mergekit's position in the slice
                    for (int i = 0; i < ref->n_tensors && !s; i++) {
                        const held_tensor *h = &ref->tensors[i];
                        if (h->layer != 0) continue;
                        for (int j = 0; j < sl->n; j++)
                            snprintf(names[j], 512, "%.*s%d.%s", h->prefix_len, h->name, sl->sources[j].begin + k, h->suffix);
                        snprintf(buf, 512, "%.*s%d.%s", h->prefix_len, h->name, out_layer, h->suffix);
                        s = plan_add(p, buf, si, names, t);
                    }
                }
            }
        }
        for (int i = 0; i < ref->n_tensors && !s; i++) {
            const held_tensor *h = &ref->tensors[i];
            if (h->layer >= 0) continue;
            bool embedding = strstr(h->name, "embed") || strstr(h->name, "wte") || strstr(h->name, "wpe");
            if (embedding != (pass == 0)) continue;
            int si = pass == 0 ? 0 : p->n_slices - 1;
            for (int j = 0; j < p->slices[si].n; j++) snprintf(names[j], 512, "%s", h->name);
            s = plan_add(p, h->name, si, names, 0.0); // outside the layers mergekit evaluates gradients at t = 0
        }
    }
    alloy_free(names);
    alloy_free(buf);
    return s;
}

/* Chooses the tokenizer to keep, refusing models whose tokenizers differ unless the recipe says. */
static alloy_status plan_tokenizer(plan *p) {
    const alloy_merge_recipe *r = p->r;
    p->tokenizer_from = -1;
    if (r->tokenizer_source) {
        bool base = !strcmp(r->tokenizer_source, "base");
        alloy_status s = plan_model(p, base ? r->base_model : r->tokenizer_source, r->tokenizer_line, &p->tokenizer_from);
        if (s) return s;
        if (!p->models[p->tokenizer_from].tok_id)
            return alloy_fail(ALLOY_STATUS_IO, "%s:%d: tokenizer_source \"%s\" has no tokenizer.json", r->path,
                              r->tokenizer_line, p->models[p->tokenizer_from].label);
        return ALLOY_STATUS_OK;
    }
    int first = -1;
    for (int i = 0; i < p->n_models; i++) {
        const merge_model *m = &p->models[i];
        if (!m->tok_id) continue;
        if (first < 0) first = i;
        else if (m->tok_id != p->models[first].tok_id)
            return alloy_fail(ALLOY_STATUS_MISMATCH,
                              "%s:%d: models \"%s\" and \"%s\" have different tokenizers: choose one with tokenizer_source "
                              "(base or a model)",
                              r->path, m->line, p->models[first].label, m->label);
    }
    p->tokenizer_from = p->models[p->config_from].tok_id ? p->config_from : first;
    return ALLOY_STATUS_OK;
}

/* Opens the models, checks them and lists the output tensors with their parameters. */
alloy_status merge_plan_build(plan *p, const alloy_merge_recipe *r) {
    memset(p, 0, sizeof *p);
    p->r = r;
    alloy_status s = plan_slices(p);
    if (s) return s;
    p->ref = p->slices[0].sources[0].model;
    p->config_from = p->ref;
    if (r->base_model) {
        int b;
        if ((s = plan_model(p, r->base_model, r->base_line, &b))) return s;
        p->config_from = b;
    }
    if ((s = plan_tokenizer(p))) return s;
    for (int i = 0; i < p->n_models && !s; i++) // the reference too: its own layers must be complete
        s = check_compatible(p, &p->models[p->ref], &p->models[i]);
    if (!s) s = plan_tensors(p);
    return s;
}
