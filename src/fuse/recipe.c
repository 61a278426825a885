/*
 * recipe.c — merge recipes: the YAML that mergekit users write, parsed with libyaml into an
 * alloy_merge_recipe, and the evaluation of its parameter settings for one tensor.
 *
 * The parser reads the whole document (libyaml's document API keeps each node's line), then
 * walks it strictly: every key must be known, every value of the type its key takes, and every
 * parameter one that the method takes in that place. Messages are "FILE:LINE: problem". Model
 * paths are resolved here, as every verb resolves them (alloy_checkpoint_resolve: a run folder
 * names its latest checkpoint), and opened by merge.c.
 */
#include "alloy/fuse.h"
#include "alloy/checkpoint.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

static const char *const method_names[ALLOY_MERGE_METHOD_COUNT] = {
    [ALLOY_MERGE_METHOD_LINEAR] = "linear",       [ALLOY_MERGE_METHOD_SLERP] = "slerp",
    [ALLOY_MERGE_METHOD_TASK_ARITHMETIC] = "task_arithmetic", [ALLOY_MERGE_METHOD_TIES] = "ties",
    [ALLOY_MERGE_METHOD_DARE_LINEAR] = "dare_linear", [ALLOY_MERGE_METHOD_DARE_TIES] = "dare_ties",
    [ALLOY_MERGE_METHOD_PASSTHROUGH] = "passthrough",
};

const char *alloy_merge_method_name(alloy_merge_method m) {
    return m < ALLOY_MERGE_METHOD_COUNT ? method_names[m] : "?";
}

alloy_status alloy_merge_method_parse(const char *name, alloy_merge_method *out) {
    for (int i = 0; i < ALLOY_MERGE_METHOD_COUNT; i++) {
        if (!strcmp(method_names[i], name)) {
            *out = (alloy_merge_method)i;
            return ALLOY_STATUS_OK;
        }
    }
    return alloy_fail(ALLOY_STATUS_USAGE, "unknown merge method \"%s\" (known: linear, slerp, task_arithmetic, ties, dare_ties, dare_linear, passthrough)", name ? name : "");
}

/* ---- which parameters each method takes, and where ------------------------------------------ */

enum { SCOPE_MODEL = 1, SCOPE_GLOBAL = 2 }; /* per model (tensor parameter) / whole merge */

typedef struct param_def {
    const char *name;  /* as written in the recipe */
    int scope;         /* SCOPE_MODEL or SCOPE_GLOBAL */
    bool is_bool;      /* true/false rather than a number */
    unsigned methods;  /* bit per alloy_merge_method that takes it */
} param_def;

#define M(x) (1u << ALLOY_MERGE_METHOD_##x)
#define GTA (M(TASK_ARITHMETIC) | M(TIES) | M(DARE_LINEAR) | M(DARE_TIES))
static const param_def param_defs[] = {
    {"weight", SCOPE_MODEL, false, M(LINEAR) | GTA},
    {"density", SCOPE_MODEL, false, M(TIES) | M(DARE_LINEAR) | M(DARE_TIES)},
    {"scale", SCOPE_MODEL, false, M(PASSTHROUGH)},
    {"t", SCOPE_GLOBAL, false, M(SLERP)},
    {"normalize", SCOPE_GLOBAL, true, M(LINEAR) | GTA},
    {"lambda", SCOPE_GLOBAL, false, GTA},
    {"rescale", SCOPE_GLOBAL, true, M(DARE_LINEAR) | M(DARE_TIES)},
    {"int8_mask", SCOPE_GLOBAL, true, GTA}, // mergekit's mask storage type: no effect on values
};
#undef GTA
#undef M
#define N_PARAM_DEFS (int)(sizeof param_defs / sizeof param_defs[0])

/* The definition of parameter `name` when method m takes it, else NULL. */
static const param_def *param_def_find(alloy_merge_method m, const char *name) {
    for (int i = 0; i < N_PARAM_DEFS; i++)
        if (!strcmp(param_defs[i].name, name) && (param_defs[i].methods & (1u << m))) return &param_defs[i];
    return NULL;
}

/* "weight, density, ..." — the parameters a method takes. */
static void param_list(alloy_merge_method m, char *buf, size_t size) {
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_PARAM_DEFS && k < size; i++)
        if (param_defs[i].methods & (1u << m))
            k += (size_t)snprintf(buf + k, size - k, "%s%s", k ? ", " : "", param_defs[i].name);
    if (!buf[0]) snprintf(buf, size, "none");
}

/* ---- the walk over libyaml's document ------------------------------------------------------- */

typedef struct parser {
    yaml_document_t doc;       /* the whole recipe, with each node's line */
    const char *what;          /* the file name for messages */
    alloy_merge_recipe *r;     /* what is being filled */
} parser;

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

static alloy_status fail_at(const parser *p, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static alloy_status fail_at(const parser *p, const yaml_node_t *n, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: %s", p->what, line_of(n), msg);
}

static yaml_node_t *node_at(parser *p, int index) { return yaml_document_get_node(&p->doc, index); }

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* YAML's null: an empty plain scalar, "~" or "null". */
static bool is_null(const yaml_node_t *n) {
    const char *s = scalar(n);
    return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (!*s || !strcmp(s, "~") || !strcasecmp(s, "null"));
}

/* A whole string as a number (false for "", trailing text). */
static bool parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s) return false;
    *out = v;
    return true;
}

/* A plain YAML 1.1 boolean: true/false, yes/no, on/off in any case. */
static bool parse_bool(const yaml_node_t *n, bool *out) {
    const char *s = scalar(n);
    if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i])) return *out = true, true;
        if (!strcasecmp(s, no[i])) return *out = false, true;
    }
    return false;
}

/* A non-empty string scalar for `key`. */
static alloy_status get_string(parser *p, const yaml_node_t *v, const char *key, char **out) {
    const char *s = scalar(v);
    if (!s || is_null(v) || !*s) return fail_at(p, v, "\"%s\" must be a name or path", key);
    alloy_free(*out);
    *out = alloy_strdup(s);
    return *out ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
}

/* Checks that n is a mapping whose keys are plain names, each once. */
static alloy_status expect_mapping(parser *p, const yaml_node_t *n, const char *what) {
    if (n->type != YAML_MAPPING_NODE) return fail_at(p, n, "%s must be a mapping of keys", what);
    for (yaml_node_pair_t *a = n->data.mapping.pairs.start; a < n->data.mapping.pairs.top; a++) {
        const yaml_node_t *k = node_at(p, a->key);
        if (!scalar(k)) return fail_at(p, k, "a key of %s is not a plain name", what);
        for (yaml_node_pair_t *b = n->data.mapping.pairs.start; b < a; b++)
            if (!strcmp(scalar(node_at(p, b->key)), scalar(k)))
                return fail_at(p, k, "\"%s\" appears twice in %s", scalar(k), what);
    }
    return ALLOY_STATUS_OK;
}

/* Frees a parameters list and leaves it empty. */
static void params_free(alloy_merge_params *ps) {
    for (int i = 0; i < ps->n; i++) {
        alloy_merge_param *q = &ps->items[i];
        for (int c = 0; c < q->n_conds; c++) {
            alloy_free(q->conds[c].filter);
            alloy_free(q->conds[c].values);
        }
        alloy_free(q->conds);
        alloy_free(q->name);
    }
    alloy_free(ps->items);
    ps->items = NULL;
    ps->n = 0;
}

/* The numbers of a value: one scalar, or a sequence of scalars (a gradient). */
static alloy_status parse_values(parser *p, const yaml_node_t *v, const param_def *def, alloy_merge_cond *c) {
    const char *name = def->name;
    if (v->type == YAML_SCALAR_NODE) {
        c->values = alloy_malloc(sizeof(double));
        if (!c->values) return ALLOY_STATUS_NOMEM;
        c->n_values = 1;
        bool b;
        if (def->is_bool) {
            if (!parse_bool(v, &b)) return fail_at(p, v, "%s must be true or false, not \"%s\"", name, scalar(v));
            c->values[0] = b ? 1.0 : 0.0;
        } else if (is_null(v)) {
            return fail_at(p, v, "%s has no value", name);
        } else if (!parse_double(scalar(v), &c->values[0])) {
            return fail_at(p, v, "%s must be a number or a list of numbers, not \"%s\"", name, scalar(v));
        }
        return ALLOY_STATUS_OK;
    }
    if (v->type != YAML_SEQUENCE_NODE) return fail_at(p, v, "%s must be a number or a list of numbers", name);
    if (def->is_bool) return fail_at(p, v, "%s takes one value, true or false", name);
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n < 1) return fail_at(p, v, "%s is an empty list", name);
    c->values = alloy_calloc((size_t)n, sizeof(double));
    if (!c->values) return ALLOY_STATUS_NOMEM;
    c->n_values = n;
    for (int i = 0; i < n; i++) {
        const yaml_node_t *e = node_at(p, v->data.sequence.items.start[i]);
        if (!scalar(e) || !parse_double(scalar(e), &c->values[i]))
            return fail_at(p, e, "item %d of the %s gradient is not a number", i + 1, name);
    }
    return ALLOY_STATUS_OK;
}

/* One {filter: ..., value: ...} alternative. */
static alloy_status parse_cond(parser *p, const yaml_node_t *n, const param_def *def, alloy_merge_cond *c) {
    alloy_status s = expect_mapping(p, n, "a filtered value");
    const yaml_node_t *value = NULL;
    for (yaml_node_pair_t *a = n->data.mapping.pairs.start; !s && a < n->data.mapping.pairs.top; a++) {
        const yaml_node_t *k = node_at(p, a->key), *v = node_at(p, a->value);
        if (!strcmp(scalar(k), "filter")) {
            if (!scalar(v) || is_null(v)) s = fail_at(p, v, "filter must be a piece of a tensor name");
            else if (!(c->filter = alloy_strdup(scalar(v)))) s = ALLOY_STATUS_NOMEM;
        } else if (!strcmp(scalar(k), "value")) {
            value = v;
        } else {
            s = fail_at(p, k, "unknown key \"%s\" in a value of %s (filter and value only)", scalar(k), def->name);
        }
    }
    if (!s && !value) s = fail_at(p, n, "a filtered value of %s has no \"value\"", def->name);
    if (!s) s = parse_values(p, value, def, c);
    return s;
}

/* A `parameters:` mapping; scope says which kinds of parameter the place takes. */
static alloy_status parse_params(parser *p, const yaml_node_t *n, int scope, alloy_merge_params *out) {
    alloy_status s = expect_mapping(p, n, "parameters");
    if (s) return s;
    int count = (int)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    out->items = alloy_calloc((size_t)(count ? count : 1), sizeof *out->items);
    if (!out->items) return ALLOY_STATUS_NOMEM;
    alloy_merge_method m = p->r->method;
    for (int i = 0; i < count; i++) {
        const yaml_node_t *k = node_at(p, n->data.mapping.pairs.start[i].key);
        const yaml_node_t *v = node_at(p, n->data.mapping.pairs.start[i].value);
        const param_def *def = param_def_find(m, scalar(k));
        if (!def) {
            char known[160];
            param_list(m, known, sizeof known);
            return fail_at(p, k, "unknown parameter \"%s\" for %s (it takes: %s)", scalar(k), alloy_merge_method_name(m),
                           known);
        }
        if (!(def->scope & scope))
            return fail_at(p, k, "\"%s\" is a parameter of the whole merge, not of one model: put it under the top-level parameters",
                           def->name);
        alloy_merge_param *q = &out->items[out->n++];
        q->line = line_of(k);
        q->is_bool = def->is_bool;
        if (!(q->name = alloy_strdup(def->name))) return ALLOY_STATUS_NOMEM;
        bool conds = v->type == YAML_SEQUENCE_NODE && v->data.sequence.items.top > v->data.sequence.items.start &&
                     node_at(p, v->data.sequence.items.start[0])->type == YAML_MAPPING_NODE;
        int nc = v->type == YAML_MAPPING_NODE ? 1 : conds ? (int)(v->data.sequence.items.top - v->data.sequence.items.start) : 1;
        q->conds = alloy_calloc((size_t)nc, sizeof *q->conds);
        if (!q->conds) return ALLOY_STATUS_NOMEM;
        q->n_conds = nc;
        if (v->type == YAML_MAPPING_NODE) {
            s = parse_cond(p, v, def, &q->conds[0]);
        } else if (conds) {
            for (int c = 0; c < nc && !s; c++) {
                const yaml_node_t *e = node_at(p, v->data.sequence.items.start[c]);
                if (e->type != YAML_MAPPING_NODE)
                    s = fail_at(p, e, "%s mixes filtered values and plain numbers", def->name);
                else s = parse_cond(p, e, def, &q->conds[c]);
            }
        } else {
            s = parse_values(p, v, def, &q->conds[0]);
        }
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* `layer_range: [begin, end]`, whole numbers with 0 <= begin < end. */
static alloy_status parse_layer_range(parser *p, const yaml_node_t *v, alloy_merge_source *src) {
    int n = v->type == YAML_SEQUENCE_NODE ? (int)(v->data.sequence.items.top - v->data.sequence.items.start) : 0;
    double a, b;
    if (n != 2 || !parse_double(scalar(node_at(p, v->data.sequence.items.start[0])), &a) ||
        !parse_double(scalar(node_at(p, v->data.sequence.items.start[1])), &b) || a != (int)a || b != (int)b)
        return fail_at(p, v, "layer_range must be two whole numbers [begin, end]");
    if (a < 0 || b <= a || b > 65536)
        return fail_at(p, v, "layer_range [%g, %g] must satisfy 0 <= begin < end", a, b);
    src->layer_begin = (int)a;
    src->layer_end = (int)b;
    return ALLOY_STATUS_OK;
}

/* One entry of models: (in_slice false) or of a slice's sources: (true). */
static alloy_status parse_source(parser *p, const yaml_node_t *n, bool in_slice, alloy_merge_source *src) {
    src->line = line_of(n);
    src->layer_begin = src->layer_end = -1;
    const char *what = in_slice ? "a source" : "an entry of models";
    alloy_status s = expect_mapping(p, n, what);
    for (yaml_node_pair_t *a = n->data.mapping.pairs.start; !s && a < n->data.mapping.pairs.top; a++) {
        const yaml_node_t *k = node_at(p, a->key), *v = node_at(p, a->value);
        const char *key = scalar(k);
        if (!strcmp(key, "model")) s = get_string(p, v, "model", &src->model);
        else if (!strcmp(key, "parameters")) s = is_null(v) ? ALLOY_STATUS_OK : parse_params(p, v, SCOPE_MODEL, &src->params);
        else if (in_slice && !strcmp(key, "layer_range")) s = parse_layer_range(p, v, src);
        else s = fail_at(p, k, "unknown key \"%s\" in %s (model, %sparameters)", key, what, in_slice ? "layer_range, " : "");
    }
    if (!s && !src->model) s = fail_at(p, n, "%s has no \"model\"", what);
    if (!s && in_slice && src->layer_begin < 0) s = fail_at(p, n, "a source has no \"layer_range\"");
    return s;
}

/* The non-empty list of models: (in_slice false) or sources: (true) into sl. */
static alloy_status parse_sources(parser *p, const yaml_node_t *v, bool in_slice, alloy_merge_slice *sl) {
    const char *key = in_slice ? "sources" : "models";
    if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start)
        return fail_at(p, v, "\"%s\" must be a non-empty list", key);
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    sl->sources = alloy_calloc((size_t)n, sizeof *sl->sources);
    if (!sl->sources) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) {
        alloy_status s = parse_source(p, node_at(p, v->data.sequence.items.start[i]), in_slice, &sl->sources[i]);
        sl->n_sources++;
        if (s) return s;
        for (int j = 0; j < i; j++)
            if (!strcmp(sl->sources[j].model, sl->sources[i].model))
                return fail_at(p, node_at(p, v->data.sequence.items.start[i]), "model \"%s\" is listed twice in %s",
                               sl->sources[i].model, key);
    }
    return ALLOY_STATUS_OK;
}

/* One entry of slices:. */
static alloy_status parse_slice(parser *p, const yaml_node_t *n, alloy_merge_slice *sl) {
    sl->line = line_of(n);
    alloy_status s = expect_mapping(p, n, "a slice");
    bool have_sources = false;
    for (yaml_node_pair_t *a = n->data.mapping.pairs.start; !s && a < n->data.mapping.pairs.top; a++) {
        const yaml_node_t *k = node_at(p, a->key), *v = node_at(p, a->value);
        const char *key = scalar(k);
        if (!strcmp(key, "sources")) {
            s = parse_sources(p, v, true, sl);
            have_sources = true;
        } else if (!strcmp(key, "parameters")) {
            s = is_null(v) ? ALLOY_STATUS_OK : parse_params(p, v, SCOPE_MODEL | SCOPE_GLOBAL, &sl->params);
        } else if (!strcmp(key, "base_model")) {
            s = is_null(v) ? ALLOY_STATUS_OK : get_string(p, v, "base_model", &sl->base_model);
        } else if (!strcmp(key, "residual_weight")) {
            s = fail_at(p, k, "\"residual_weight\" is not supported by alloy merge");
        } else {
            s = fail_at(p, k, "unknown key \"%s\" in a slice (sources, parameters, base_model)", key);
        }
    }
    if (!s && !have_sources) s = fail_at(p, n, "a slice has no \"sources\"");
    return s;
}

/* The non-empty list of slices:. */
static alloy_status parse_slices(parser *p, const yaml_node_t *v) {
    alloy_merge_recipe *r = p->r;
    if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start)
        return fail_at(p, v, "\"slices\" must be a non-empty list");
    int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    r->slices = alloy_calloc((size_t)n, sizeof *r->slices);
    if (!r->slices) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) {
        r->n_slices++;
        alloy_status s = parse_slice(p, node_at(p, v->data.sequence.items.start[i]), &r->slices[i]);
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* Checks of the recipe as a whole, once every key is read. */
static alloy_status check_recipe(parser *p, const yaml_node_t *root) {
    alloy_merge_recipe *r = p->r;
    alloy_merge_method m = r->method;
    const char *name = alloy_merge_method_name(m);
    int line = r->method_line ? r->method_line : line_of(root);
    bool needs_base = m != ALLOY_MERGE_METHOD_LINEAR && m != ALLOY_MERGE_METHOD_PASSTHROUGH;
    for (int i = 0; i < r->n_slices; i++) {
        const alloy_merge_slice *sl = &r->slices[i];
        if (needs_base && !r->base_model && !sl->base_model)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: %s needs a base_model (the model %s)", p->what, line, name,
                              m == ALLOY_MERGE_METHOD_SLERP ? "at t = 0" : "whose task vectors are merged");
        if (m == ALLOY_MERGE_METHOD_PASSTHROUGH && sl->n_sources != 1)
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: passthrough takes exactly one model per %s, not %d", p->what,
                              sl->line, r->slices_form ? "slice" : "recipe", sl->n_sources);
    }
    if (r->tokenizer_source && !strcmp(r->tokenizer_source, "base") && !r->base_model)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%d: tokenizer_source is \"base\" but there is no base_model", p->what,
                          r->tokenizer_line);
    if (r->tokenizer_source && !strcmp(r->tokenizer_source, "union"))
        return alloy_fail(ALLOY_STATUS_FORMAT,
                          "%s:%d: tokenizer_source \"union\" is not supported by alloy merge (use base or a model)", p->what,
                          r->tokenizer_line);
    return ALLOY_STATUS_OK;
}

/* The top-level mapping: merge_method first (it decides which parameters are valid), then the rest. */
static alloy_status parse_root(parser *p, const yaml_node_t *root) {
    alloy_merge_recipe *r = p->r;
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(p, root, "a recipe must be a mapping of keys (merge_method, models or slices, ...)");
    alloy_status s = expect_mapping(p, root, "the recipe");
    if (s) return s;
    // the method first: which parameters are valid depends on it
    const yaml_node_t *method = NULL;
    for (yaml_node_pair_t *a = root->data.mapping.pairs.start; a < root->data.mapping.pairs.top; a++)
        if (!strcmp(scalar(node_at(p, a->key)), "merge_method")) method = node_at(p, a->value);
    if (!method) return fail_at(p, root, "the recipe has no merge_method");
    r->method_line = line_of(method);
    if (!scalar(method) || alloy_merge_method_parse(scalar(method), &r->method)) {
        char known[200] = "";
        for (int i = 0; i < ALLOY_MERGE_METHOD_COUNT; i++)
            snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", method_names[i]);
        return fail_at(p, method, "unknown merge_method \"%s\" (alloy merge knows: %s)", scalar(method) ? scalar(method) : "",
                       known);
    }
    const yaml_node_t *models = NULL, *slices = NULL;
    for (yaml_node_pair_t *a = root->data.mapping.pairs.start; !s && a < root->data.mapping.pairs.top; a++) {
        const yaml_node_t *k = node_at(p, a->key), *v = node_at(p, a->value);
        const char *key = scalar(k);
        if (!strcmp(key, "merge_method")) {
        } else if (!strcmp(key, "models")) {
            models = v;
        } else if (!strcmp(key, "slices")) {
            slices = v;
        } else if (!strcmp(key, "base_model")) {
            r->base_line = line_of(v);
            s = is_null(v) ? ALLOY_STATUS_OK : get_string(p, v, "base_model", &r->base_model);
        } else if (!strcmp(key, "parameters")) {
            s = is_null(v) ? ALLOY_STATUS_OK : parse_params(p, v, SCOPE_MODEL | SCOPE_GLOBAL, &r->params);
        } else if (!strcmp(key, "dtype")) {
            const char *d = scalar(v);
            if (!d || (strcmp(d, "float32") && strcmp(d, "bfloat16") && strcmp(d, "float16")))
                s = fail_at(p, v, "dtype must be float32, bfloat16 or float16 (alloy merges in fp32 and writes F32)");
            else s = get_string(p, v, "dtype", &r->dtype);
        } else if (!strcmp(key, "tokenizer_source")) {
            r->tokenizer_line = line_of(v);
            s = is_null(v) ? ALLOY_STATUS_OK : get_string(p, v, "tokenizer_source", &r->tokenizer_source);
        } else if (!strcmp(key, "seed")) {
            const char *d = scalar(v);
            char *end = NULL;
            unsigned long long seed = d && *d >= '0' && *d <= '9' ? strtoull(d, &end, 10) : 0;
            if (!end || *end) s = fail_at(p, v, "seed must be a whole number >= 0");
            else r->seed = (uint64_t)seed;
        } else if (!strcmp(key, "modules") || !strcmp(key, "tokenizer") || !strcmp(key, "chat_template") ||
                   !strcmp(key, "out_dtype")) {
            s = fail_at(p, k, "\"%s\" is not supported by alloy merge", key);
        } else {
            s = fail_at(p, k,
                        "unknown key \"%s\" (a recipe has merge_method, models or slices, base_model, parameters, dtype, "
                        "tokenizer_source, seed)",
                        key);
        }
    }
    if (s) return s;
    if (!models == !slices)
        return fail_at(p, root, models ? "the recipe has both models and slices: give one" : "the recipe has neither models nor slices");
    if (models) {
        r->slices = alloy_calloc(1, sizeof *r->slices);
        if (!r->slices) return ALLOY_STATUS_NOMEM;
        r->n_slices = 1;
        r->slices[0].line = line_of(models);
        s = parse_sources(p, models, false, &r->slices[0]);
    } else {
        r->slices_form = true;
        s = parse_slices(p, slices);
    }
    return s ? s : check_recipe(p, root);
}

/* Replaces *name by the checkpoint folder it names when that is another path (a run folder's
 * latest checkpoint, the folder of a checkpoint's config.json); a name that does not resolve is
 * left as written, for alloy_merge_run to report. Only NOMEM fails. */
static alloy_status resolve_model(char **name) {
    char *dir;
    if (!*name) return ALLOY_STATUS_OK;
    alloy_status s = alloy_checkpoint_resolve(*name, &dir);
    if (s) return s == ALLOY_STATUS_NOMEM ? s : ALLOY_STATUS_OK;
    if (strcmp(dir, *name) != 0) {
        alloy_free(*name);
        *name = dir;
    } else {
        alloy_free(dir);
    }
    return ALLOY_STATUS_OK;
}

/* Resolves every model path of the recipe (resolve_model). */
static alloy_status resolve_models(alloy_merge_recipe *r) {
    alloy_status s = resolve_model(&r->base_model);
    if (!s && r->tokenizer_source && strcmp(r->tokenizer_source, "base") && strcmp(r->tokenizer_source, "union"))
        s = resolve_model(&r->tokenizer_source);
    for (int i = 0; i < r->n_slices && !s; i++) {
        s = resolve_model(&r->slices[i].base_model);
        for (int j = 0; j < r->slices[i].n_sources && !s; j++) s = resolve_model(&r->slices[i].sources[j].model);
    }
    return s;
}

alloy_status alloy_merge_recipe_parse(alloy_merge_recipe **out, const char *text, size_t len, const char *what) {
    *out = NULL;
    alloy_merge_recipe *r = alloy_calloc(1, sizeof *r);
    if (!r) return ALLOY_STATUS_NOMEM;
    r->path = alloy_strdup(what ? what : "<recipe>");
    if (!r->path) {
        alloy_free(r);
        return ALLOY_STATUS_NOMEM;
    }
    parser p = {.what = r->path, .r = r};
    yaml_parser_t yp;
    if (!yaml_parser_initialize(&yp)) {
        alloy_merge_recipe_free(r);
        return alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot start the YAML parser", p.what);
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    alloy_status s = ALLOY_STATUS_OK;
    if (!yaml_parser_load(&yp, &p.doc)) {
        if (yp.error == YAML_MEMORY_ERROR) s = alloy_fail(ALLOY_STATUS_NOMEM, "%s: out of memory parsing YAML", p.what);
        else if (yp.error == YAML_READER_ERROR)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: YAML error at byte %zu: %s", p.what, yp.problem_offset,
                           yp.problem ? yp.problem : "unreadable text");
        else
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s:%zu: YAML syntax error: %s%s%s (column %zu)", p.what,
                           yp.problem_mark.line + 1, yp.problem ? yp.problem : "malformed", yp.context ? " " : "",
                           yp.context ? yp.context : "", yp.problem_mark.column + 1);
        yaml_parser_delete(&yp);
        alloy_merge_recipe_free(r);
        return s;
    }
    yaml_node_t *root = yaml_document_get_root_node(&p.doc);
    if (!root) {
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the recipe is empty", p.what);
    } else {
        s = parse_root(&p, root);
        if (!s) { // a second document would be silently ignored: refuse it
            yaml_document_t next;
            if (yaml_parser_load(&yp, &next)) {
                if (yaml_document_get_root_node(&next))
                    s = alloy_fail(ALLOY_STATUS_FORMAT, "%s:%zu: a second YAML document; a recipe is one document",
                                   p.what, next.start_mark.line + 1);
                yaml_document_delete(&next);
            }
        }
    }
    yaml_document_delete(&p.doc);
    yaml_parser_delete(&yp);
    if (!s) s = resolve_models(r);
    if (s) {
        alloy_merge_recipe_free(r);
        return s;
    }
    *out = r;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_merge_recipe_load(alloy_merge_recipe **out, const char *path) {
    *out = NULL;
    char *text;
    size_t len;
    alloy_status s = alloy_file_read_all(path, &text, &len);
    if (s) return s;
    s = alloy_merge_recipe_parse(out, text, len, path);
    alloy_free(text);
    return s;
}

void alloy_merge_recipe_free(alloy_merge_recipe *r) {
    if (!r) return;
    for (int i = 0; i < r->n_slices; i++) {
        alloy_merge_slice *sl = &r->slices[i];
        for (int j = 0; j < sl->n_sources; j++) {
            alloy_free(sl->sources[j].model);
            params_free(&sl->sources[j].params);
        }
        alloy_free(sl->sources);
        params_free(&sl->params);
        alloy_free(sl->base_model);
    }
    alloy_free(r->slices);
    params_free(&r->params);
    alloy_free(r->base_model);
    alloy_free(r->tokenizer_source);
    alloy_free(r->dtype);
    alloy_free(r->path);
    alloy_free(r);
}

const alloy_merge_param *alloy_merge_params_find(const alloy_merge_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->items[i].name, name)) return &p->items[i];
    return NULL;
}

bool alloy_merge_param_eval(const alloy_merge_param *p, const char *tensor, double t, double *out) {
    for (int i = 0; i < p->n_conds; i++) {
        const alloy_merge_cond *c = &p->conds[i];
        if (c->filter && strcmp(c->filter, "*") && !(tensor && strstr(tensor, c->filter))) continue;
        if (c->n_values == 1) {
            *out = c->values[0];
        } else { // mergekit's gradient: linear between the two neighbouring values at t·(k−1)
            double scaled = t * (double)(c->n_values - 1);
            int i0 = (int)scaled;
            if (i0 < 0) i0 = 0;
            if (i0 > c->n_values - 1) i0 = c->n_values - 1;
            int i1 = i0 + 1 < c->n_values ? i0 + 1 : c->n_values - 1;
            double frac = scaled - (double)i0;
            *out = (1.0 - frac) * c->values[i0] + frac * c->values[i1];
        }
        return true;
    }
    return false;
}
