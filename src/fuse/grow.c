/*
 * grow.c — growing a model: a deeper stack from a plan of source layers (SOLAR's depth
 * up-scaling is one such plan) and a wider MLP that computes the same function (Net2WiderNet).
 *
 * Both work on the parameter table: every tensor of the new model is found by name in the
 * source (for depth, under the name of the layer it copies) and copied, except the MLP
 * tensors that widening rebuilds unit by unit. Nothing here knows more of the architecture
 * than the names of the MLP's tensors and which axis holds its hidden units.
 */
#include "alloy/options.h"
#include "alloy/grow.h"

#include <math.h>
#include <string.h>

#define GROW_MAX_LAYERS 1024    /* alloy_config_validate's bound on n_layer */
#define GROW_MAX_FF (1 << 20)   /* and on d_ff */

/* The start of every per-layer tensor name in the family's Hugging Face layout. */
static const char *layer_prefix(alloy_family family) {
    return family == ALLOY_FAMILY_GPT2 ? "transformer.h." : "model.layers.";
}

/* The layer index of a per-layer tensor name ("model.layers.12.mlp..." -> 12, *rest ->
 * ".mlp..."), or -1 for a tensor outside the layers. */
static int layer_of(const char *name, const char *prefix, const char **rest) {
    size_t k = strlen(prefix);
    if (strncmp(name, prefix, k) != 0) return -1;
    const char *p = name + k;
    int l = 0;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        l = l * 10 + (*p - '0');
        if (l > GROW_MAX_LAYERS) return -1; // not a name of ours
    }
    if (*p != '.') return -1;
    *rest = p;
    return l;
}

/* m's tensor called `name`, tried first at index `hint` (tables of the same family line up,
 * so the hint is almost always right and the lookup linear in the table), or NULL. */
static const alloy_tensor_info *find_near(const alloy_model *m, const char *name, int hint) {
    if (hint >= 0 && hint < m->n_tensors && !strcmp(m->tensors[hint].name, name)) return &m->tensors[hint];
    return alloy_model_find_tensor(m, name);
}

/* a and b have the same dimensions. */
static bool same_shape(const alloy_tensor_info *a, const alloy_tensor_info *b) {
    if (a->ndim != b->ndim || a->numel != b->numel) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* A model for cfg with src's activation sizes and options, weights still zero. */
static alloy_status create_like(alloy_model **out, const alloy_model *src, const alloy_config *cfg) {
    return alloy_model_create_ex(out, cfg, src->max_B, src->max_T, &src->opts);
}

/* Copies src's tensor `name` into dst's tensor t (same shape, else a bug). */
static alloy_status copy_tensor(alloy_model *dst, const alloy_tensor_info *t, const alloy_model *src, const char *name,
                                int hint) {
    const alloy_tensor_info *s = find_near(src, name, hint);
    if (!s || !same_shape(s, t))
        return alloy_fail(ALLOY_STATUS_INTERNAL, "grow: the source model has no tensor \"%s\" shaped as \"%s\"", name,
                          t->name);
    memcpy(dst->params_memory + t->offset, src->params_memory + s->offset, sizeof(float) * t->numel);
    return ALLOY_STATUS_OK;
}

/* ---- depth ------------------------------------------------------------------------------ */

alloy_status alloy_grow_parse_layers(const char *spec, int src_layers, int **plan, int *n_layers) {
    *plan = NULL;
    *n_layers = 0;
    if (!spec || !*spec) return alloy_fail_option(ALLOY_STATUS_USAGE, "layers", ": the plan is empty (give e.g. 0-5,3-8)");
    int *p = alloy_malloc(sizeof(int) * GROW_MAX_LAYERS);
    if (!p) return ALLOY_STATUS_NOMEM;
    alloy_status st = ALLOY_STATUS_OK;
    int n = 0;
    const char *s = spec;
    char shown[48]; // the spec as messages quote it: a long one cut short
    snprintf(shown, sizeof shown, "%.40s%s", spec, strlen(spec) > 40 ? "..." : "");
    while (!st) {
        long ab[2] = {0, 0};
        int parts = 0;
        for (; parts < 2; parts++) {
            while (*s == ' ') s++;
            if (*s < '0' || *s > '9') {
                st = *s ? alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": expected a layer index at \"%.24s\"", shown, s)
                        : alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": expected a layer index at the end", shown);
                break;
            }
            for (; *s >= '0' && *s <= '9'; s++) ab[parts] = ab[parts] < 100000000 ? ab[parts] * 10 + (*s - '0') : ab[parts];
            while (*s == ' ') s++;
            if (parts == 1 || *s != '-') break;
            s++; // a range a-b
        }
        if (st) break;
        if (parts == 0) ab[1] = ab[0];
        if (ab[0] > ab[1]) {
            st = alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": the range %ld-%ld descends (write the layers one by one)",
                            shown, ab[0], ab[1]);
            break;
        }
        if (ab[1] >= src_layers) {
            st = alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": layer %ld is out of range (the model has layers 0-%d)", shown,
                            ab[1], src_layers - 1);
            break;
        }
        for (long k = ab[0]; k <= ab[1] && !st; k++) {
            if (n == GROW_MAX_LAYERS)
                st = alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": more than %d layers", shown, GROW_MAX_LAYERS);
            else p[n++] = (int)k;
        }
        if (st || !*s) break;
        if (*s != ',')
            st = alloy_fail_option(ALLOY_STATUS_USAGE, "layers", "\"%s\": expected ',' or the end at \"%.24s\"", shown, s);
        else s++;
    }
    if (st) {
        alloy_free(p);
        return st;
    }
    *plan = p;
    *n_layers = n;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_grow_depth(alloy_model **out, const alloy_model *src, const int *layer_plan, int n_layers) {
    *out = NULL;
    int L = src->config.n_layer;
    if (n_layers < 1 || n_layers > GROW_MAX_LAYERS || !layer_plan)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "layers", ": a plan of %d layers; it needs 1 to %d", n_layers, GROW_MAX_LAYERS);
    for (int i = 0; i < n_layers; i++)
        if (layer_plan[i] < 0 || layer_plan[i] >= L)
            return alloy_fail_option(ALLOY_STATUS_USAGE, "layers", ": new layer %d would copy layer %d, but the model has layers 0-%d",
                              i, layer_plan[i], L - 1);
    alloy_config cfg = src->config;
    cfg.n_layer = n_layers;
    alloy_model *m;
    alloy_status s = create_like(&m, src, &cfg);
    if (s) return s;
    // where the layers start in the table and how many tensors each has, for the lookup hints
    const char *prefix = layer_prefix(cfg.family), *rest;
    int first = -1, in_layers = 0;
    for (int i = 0; i < src->n_tensors; i++) {
        if (layer_of(src->tensors[i].name, prefix, &rest) < 0) continue;
        if (first < 0) first = i;
        in_layers++;
    }
    int per = in_layers / L;
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        int l = layer_of(t->name, prefix, &rest);
        if (l < 0) {
            s = copy_tensor(m, t, src, t->name, i < first ? i : i - (n_layers - L) * per);
            continue;
        }
        char name[ALLOY_MAX_NAME];
        snprintf(name, sizeof name, "%s%d%s", prefix, layer_plan[l], rest);
        s = copy_tensor(m, t, src, name, first + layer_plan[l] * per + (i - first - l * per));
    }
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_grow_depth_upscale(alloy_model **out, const alloy_model *src, int m) {
    *out = NULL;
    int n = src->config.n_layer;
    if (m < 0 || m >= n)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "depth_upscale",
                                 "%d: must lie in [0, %d] (the model has %d layers; each of the two copies loses m)", m, n - 1, n);
    if (2 * (n - m) > GROW_MAX_LAYERS)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "depth_upscale", "%d: 2*(%d - %d) = %d layers exceed %d", m, n, m, 2 * (n - m),
                          GROW_MAX_LAYERS);
    int *plan = alloy_malloc(sizeof(int) * (size_t)(2 * (n - m)));
    if (!plan) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n - m; i++) {
        plan[i] = i;              // the first copy without its last m layers
        plan[n - m + i] = m + i;  // the second copy without its first m layers
    }
    alloy_status s = alloy_grow_depth(out, src, plan, 2 * (n - m));
    alloy_free(plan);
    return s;
}

/* ---- width (Net2WiderNet) --------------------------------------------------------------- */

typedef enum unit_role {
    UNITS_IN,  /* computes the hidden units: new units copy their source unit (+ noise) */
    UNITS_OUT, /* reads the hidden units: a unit's weights are shared among its copies */
} unit_role;

/* The MLP tensors that widening rebuilds, by the name after "<prefix>N", and the axis of
 * their stored shape that runs over the F hidden units. */
typedef struct mlp_tensor {
    const char *rest;
    unit_role role;
    int axis;
} mlp_tensor;

static const mlp_tensor gpt2_mlp[] = {
    {".mlp.c_fc.weight", UNITS_IN, 1},   /* (C, F): Conv1D, stored (in, out) */
    {".mlp.c_fc.bias", UNITS_IN, 0},     /* (F) */
    {".mlp.c_proj.weight", UNITS_OUT, 0}, /* (F, C) */
};
static const mlp_tensor llama_mlp[] = {
    {".mlp.gate_proj.weight", UNITS_IN, 0}, /* (F, C): Linear, stored (out, in) */
    {".mlp.up_proj.weight", UNITS_IN, 0},   /* (F, C) */
    {".mlp.down_proj.weight", UNITS_OUT, 1}, /* (C, F) */
};

/* The MLP tensor entry for a per-layer name's rest (".mlp.c_fc.weight"), or NULL when widening
 * copies that tensor as it is. */
static const mlp_tensor *mlp_role(alloy_family family, const char *rest) {
    const mlp_tensor *t = family == ALLOY_FAMILY_GPT2 ? gpt2_mlp : llama_mlp;
    for (int i = 0; i < 3; i++)
        if (!strcmp(t[i].rest, rest)) return &t[i];
    return NULL;
}

/* One layer's choice of units: unit j of the wide layer copies unit map[j] of the source
 * (map[j] = j for j < F), and count[u] is how many wide units copy source unit u. */
typedef struct unit_map {
    int layer;      /* the layer it was drawn for, -1 before any */
    int32_t *map;   /* (F2) */
    int32_t *count; /* (F) */
} unit_map;

/* Draws layer l's map from its own stream (seed, l): the same whatever order the tensors come in. */
static void draw_map(unit_map *um, int l, int F, int F2, uint64_t seed) {
    alloy_rng rng;
    uint64_t key = (uint64_t)l;
    alloy_rng_seed(&rng, seed ^ alloy_fnv64(ALLOY_FNV64_INIT, &key, sizeof key));
    for (int u = 0; u < F; u++) {
        um->map[u] = u;
        um->count[u] = 1;
    }
    for (int j = F; j < F2; j++) {
        um->map[j] = (int32_t)alloy_rng_below(&rng, (uint64_t)F);
        um->count[um->map[j]]++;
    }
    um->layer = l;
}

/* Root mean square of a tensor's values (the noise's scale). */
static double tensor_rms(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return n ? sqrt(s / (double)n) : 0.0;
}

/* Fills the wide tensor d from the source tensor s (shapes differing only along mt->axis,
 * F -> F2) unit by unit per um: incoming weights copied (new units' weights plus
 * N(0, (noise·rms(s))²) from a stream of (seed, name) when noise > 0 and the tensor is a
 * matrix), outgoing weights divided by the unit's number of copies. */
static void widen_tensor(float *d, const float *s, const alloy_tensor_info *st, const mlp_tensor *mt, const unit_map *um,
                         int F, int F2, uint64_t seed, float noise, const char *name) {
    // view both as (rows, cols) with the units along one axis; a bias (F) is (F, 1)
    size_t rows = (size_t)st->shape[0], cols = st->ndim == 2 ? (size_t)st->shape[1] : 1;
    bool by_row = mt->axis == 0;
    size_t d_rows = by_row ? (size_t)F2 : rows, d_cols = by_row ? cols : (size_t)F2;
    for (size_t r = 0; r < d_rows; r++) {
        for (size_t c = 0; c < d_cols; c++) {
            size_t j = by_row ? r : c;          // the wide unit
            size_t u = (size_t)um->map[j];      // the source unit it copies
            float v = by_row ? s[u * cols + c] : s[r * cols + u];
            if (mt->role == UNITS_OUT) v = v / (float)um->count[u];
            d[r * d_cols + c] = v;
        }
    }
    if (mt->role != UNITS_IN || !(noise > 0.0f) || st->ndim != 2) return;
    alloy_rng rng;
    alloy_rng_seed(&rng, (seed ^ 0x6e6f697365ULL) ^ alloy_fnv64(ALLOY_FNV64_INIT, name, strlen(name)));
    double sigma = (double)noise * tensor_rms(s, st->numel);
    if (by_row) {
        for (size_t j = (size_t)F; j < (size_t)F2; j++)
            for (size_t c = 0; c < cols; c++) d[j * cols + c] += (float)(sigma * alloy_rng_normal(&rng));
    } else {
        for (size_t r = 0; r < rows; r++)
            for (size_t j = (size_t)F; j < (size_t)F2; j++) d[r * d_cols + j] += (float)(sigma * alloy_rng_normal(&rng));
    }
}

alloy_status alloy_grow_ffn(alloy_model **out, const alloy_model *src, int new_ff, uint64_t seed, float noise) {
    *out = NULL;
    int F = src->config.d_ff;
    if (new_ff <= F || new_ff > GROW_MAX_FF)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "ffn_width", "%d: must exceed the model's MLP width %d (and be at most %d)",
                          new_ff, F, GROW_MAX_FF);
    if (!(noise >= 0.0f) || !isfinite(noise))
        return alloy_fail_option(ALLOY_STATUS_USAGE, "noise", "%g: must be a finite number >= 0", (double)noise);
    if (src->config.n_experts > 0)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "ffn_width", ": widening a mixture of experts is not supported");
    alloy_config cfg = src->config;
    cfg.d_ff = new_ff;
    alloy_model *m;
    alloy_status s = create_like(&m, src, &cfg);
    if (s) return s;
    unit_map um = {.layer = -1};
    um.map = alloy_malloc(sizeof(int32_t) * (size_t)new_ff);
    um.count = alloy_malloc(sizeof(int32_t) * (size_t)F);
    if (!um.map || !um.count) s = ALLOY_STATUS_NOMEM;
    const char *prefix = layer_prefix(cfg.family);
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        const char *rest;
        int l = layer_of(t->name, prefix, &rest);
        const mlp_tensor *mt = l >= 0 ? mlp_role(cfg.family, rest) : NULL;
        if (!mt) {
            s = copy_tensor(m, t, src, t->name, i);
            continue;
        }
        const alloy_tensor_info *st = find_near(src, t->name, i);
        bool fits = st && st->ndim == t->ndim && st->shape[mt->axis] == F && t->shape[mt->axis] == new_ff;
        for (int d = 0; fits && d < t->ndim; d++) fits = d == mt->axis || st->shape[d] == t->shape[d];
        if (!fits) {
            s = alloy_fail(ALLOY_STATUS_INTERNAL, "grow: the source model's tensor \"%s\" does not have %d units on axis %d",
                           t->name, F, mt->axis);
            break;
        }
        if (um.layer != l) draw_map(&um, l, F, new_ff, seed);
        widen_tensor(m->params_memory + t->offset, src->params_memory + st->offset, st, mt, &um, F, new_ff, seed, noise,
                     t->name);
    }
    alloy_free(um.map);
    alloy_free(um.count);
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}
