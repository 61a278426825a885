/*
 * test_grow.c — growing models (alloy/grow.h): depth by a layer plan (SOLAR's depth
 * up-scaling) and a function-preserving wider MLP (Net2WiderNet), for GPT-2 and Llama (GQA).
 *
 * Depth: every tensor of the grown model equals the source tensor the plan names, bit for
 * bit; the config changes only in n_layer; the model saves, loads and runs; and its logits
 * match to 1e-5 of their scale those of the model that tests/reference/grow_ref.py builds in
 * PyTorch from the source folder by its own reading of the SOLAR recipe (twin.py's modules).
 * Width: the widened model's logits equal the source's to 1e-5 of scale (in alloy, and in
 * PyTorch on the folder alloy wrote), the copies are what Net2Net says, the test is shown to
 * notice a widening that forgets to share the outgoing weights, noise > 0 moves the logits a
 * little, and a few AdamW steps of the grown models give finite, falling losses. Then bad
 * arguments and out-of-memory paths. The PyTorch part needs PYTHON (harness.h) with torch and
 * skips without it.
 */
#include "alloy/grow.h"
#include "alloy/io.h"
#include "alloy/train.h"
#include "harness.h"

enum { B = 2, T = 16, V = 97 };

/* A source model of `layers` layers from a preset, with weights that make every part of it
 * matter: matrices at 10x the initial scale (the MLP is then far from linear and its output
 * moves the logits) and norms and biases random, so that copying the wrong 1-D tensor shows. */
static alloy_model *make_source(const char *preset, int layers, uint64_t seed) {
    alloy_config c;
    ALLOY_ASSERT(alloy_config_preset(&c, preset, V) == ALLOY_STATUS_OK);
    c.n_layer = layers;
    alloy_model *m;
    if (alloy_model_create(&m, &c, B, T) != ALLOY_STATUS_OK) return NULL;
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed + 1);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        for (size_t k = 0; k < t->numel; k++) p[k] = t->ndim == 2 ? 10.0f * p[k] : p[k] + 0.2f * (float)alloy_rng_normal(&rng);
    }
    return m;
}

/* B·T random token ids below V. */
static void make_tokens(int32_t *tokens, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)alloy_rng_below(&rng, V);
}

/* A copy of the model's logits for tokens (malloc'd), or NULL if the forward fails. */
static float *logits_of(alloy_model *m, const int32_t *tokens) {
    if (alloy_model_forward(m, tokens, B, T) != ALLOY_STATUS_OK) return NULL;
    float *l = malloc(sizeof(float) * B * T * V);
    memcpy(l, alloy_model_logits(m), sizeof(float) * B * T * V);
    return l;
}

/* max |a − b| / max |b|. */
static double err_of_scale(const float *a, const float *b, size_t n) {
    double err = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(b[i]));
        double e = fabs((double)a[i] - b[i]);
        err = isnan(e) ? INFINITY : fmax(err, e);
    }
    return scale > 0 ? err / scale : err;
}

/* A hash of the whole parameter arena (to see that a source is left alone). */
static uint64_t params_hash(const alloy_model *m) {
    return alloy_fnv64(ALLOY_FNV64_INIT, m->params_memory, sizeof(float) * m->num_params);
}

/* The start of per-layer tensor names in m's family. */
static const char *prefix_of(const alloy_model *m) {
    return m->config.family == ALLOY_FAMILY_GPT2 ? "transformer.h." : "model.layers.";
}

/* The configs are equal but for n_layer and d_ff. */
static bool same_config_but(const alloy_config *a, const alloy_config *b) {
    alloy_config x = *a;
    x.n_layer = b->n_layer;
    x.d_ff = b->d_ff;
    return !memcmp(&x, b, sizeof x);
}

/* Every tensor of g equals (name, shape, bits) the tensor of src that plan says it copies.
 * Returns the number that do not (naming the first few on stderr when `loud`). */
static int plan_mismatches(const alloy_model *g, const alloy_model *src, const int *plan, bool loud) {
    const char *prefix = prefix_of(src);
    size_t k = strlen(prefix);
    int bad = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        const alloy_tensor_info *t = &g->tensors[i];
        char name[ALLOY_MAX_NAME];
        snprintf(name, sizeof name, "%s", t->name);
        if (!strncmp(t->name, prefix, k)) {
            char *rest;
            long l = strtol(t->name + k, &rest, 10);
            snprintf(name, sizeof name, "%s%d%s", prefix, plan[l], rest);
        }
        const alloy_tensor_info *s = alloy_model_find_tensor(src, name);
        bool same = s && s->ndim == t->ndim && s->shape[0] == t->shape[0] && s->shape[1] == t->shape[1] &&
                    !memcmp(g->params_memory + t->offset, src->params_memory + s->offset, sizeof(float) * t->numel);
        if (!same) {
            if (loud && bad < 3) fprintf(stderr, "  %s is not a copy of %s\n", t->name, name);
            bad++;
        }
    }
    return bad;
}

/* Saves m to dir, loads it back: the same config and bits. */
static void check_roundtrip(const alloy_model *m, const char *dir) {
    REQUIRE(alloy_model_save(m, dir) == ALLOY_STATUS_OK, "save %s: %s", dir, alloy_last_error());
    alloy_model *l = NULL;
    REQUIRE(alloy_model_load(&l, dir, B, T) == ALLOY_STATUS_OK, "load %s: %s", dir, alloy_last_error());
    EXPECT(!memcmp(&l->config, &m->config, sizeof m->config), "%s: the config changed in the roundtrip", dir);
    EXPECT(l->num_params == m->num_params && params_hash(l) == params_hash(m), "%s: the weights changed in the roundtrip", dir);
    alloy_model_destroy(l);
}

/* ---- depth ---------------------------------------------------------------------------- */

/* Depth growth of one family: SOLAR up-scaling (m = 1 and 0) and explicit plans. */
static void depth_family(const char *preset) {
    alloy_model *src = make_source(preset, 4, 11);
    REQUIRE(src, "%s: %s", preset, alloy_last_error());
    uint64_t before = params_hash(src);
    // SOLAR with n = 4, m = 1: layers 0 1 2 of the first copy, 1 2 3 of the second
    alloy_model *g = NULL;
    alloy_status s = alloy_grow_depth_upscale(&g, src, 1);
    EXPECT(s == ALLOY_STATUS_OK && g, "%s: upscale: %s", preset, alloy_last_error());
    if (g) {
        static const int plan[] = {0, 1, 2, 1, 2, 3};
        EXPECT(g->config.n_layer == 6 && same_config_but(&src->config, &g->config), "%s: config after upscaling", preset);
        EXPECT(g->max_B == src->max_B && g->max_T == src->max_T, "%s: activation sizes", preset);
        EXPECT(g->n_tensors == src->n_tensors + 2 * (src->n_tensors - (g->config.family == ALLOY_FAMILY_GPT2 ? 4 : 3)) / 4,
               "%s: %d tensors", preset, g->n_tensors);
        EXPECT(plan_mismatches(g, src, plan, true) == 0, "%s: upscaled tensors are not the planned copies", preset);
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s-up", harness_tmpdir(), preset);
        check_roundtrip(g, dir);
        int32_t tokens[B * T];
        make_tokens(tokens, 5);
        float *l = logits_of(g, tokens);
        EXPECT(l != NULL, "%s: forward: %s", preset, alloy_last_error());
        bool finite = l != NULL;
        for (int i = 0; l && i < B * T * V; i++) finite &= isfinite(l[i]) != 0;
        EXPECT(finite, "%s: the grown model's logits are not finite", preset);
        free(l);
    }
    alloy_model_destroy(g);
    // m = 0 stacks two whole copies
    s = alloy_grow_depth_upscale(&g, src, 0);
    EXPECT(s == ALLOY_STATUS_OK && g && g->config.n_layer == 8, "%s: m = 0: %s", preset, alloy_last_error());
    static const int twice[] = {0, 1, 2, 3, 0, 1, 2, 3};
    if (g) EXPECT(plan_mismatches(g, src, twice, true) == 0, "%s: m = 0 is not two copies", preset);
    alloy_model_destroy(g);
    // an explicit plan, parsed: any order, repeats, a shallower model
    int *plan = NULL, n = 0;
    s = alloy_grow_parse_layers("3, 0-1 ,3,2-2", 4, &plan, &n);
    static const int want[] = {3, 0, 1, 3, 2};
    EXPECT(s == ALLOY_STATUS_OK && n == 5 && !memcmp(plan, want, sizeof want), "%s: parse: %s", preset, alloy_last_error());
    if (!s) {
        s = alloy_grow_depth(&g, src, plan, n);
        EXPECT(s == ALLOY_STATUS_OK && g && g->config.n_layer == 5, "%s: plan: %s", preset, alloy_last_error());
        if (g) EXPECT(plan_mismatches(g, src, plan, true) == 0, "%s: planned tensors are not the copies", preset);
        alloy_model_destroy(g);
        g = NULL;
        static const int one[] = {2};
        s = alloy_grow_depth(&g, src, one, 1);
        EXPECT(s == ALLOY_STATUS_OK && g && g->config.n_layer == 1 && plan_mismatches(g, src, one, true) == 0,
               "%s: a one-layer plan: %s", preset, alloy_last_error());
        alloy_model_destroy(g);
    }
    alloy_free(plan);
    EXPECT(params_hash(src) == before, "%s: growing changed the source", preset);
    alloy_model_destroy(src);
}

static void test_depth_gpt2(void) { depth_family("tiny-gpt2"); }
static void test_depth_llama(void) { depth_family("tiny-llama"); }

/* ---- width ---------------------------------------------------------------------------- */

/* The Net2WiderNet structure of layer l: each wide unit's incoming weights equal some source
 * unit's (bitwise: the unit map is read off them), the first F units are the source's own,
 * and the outgoing weights of each source unit's copies add up to its own. Returns the number
 * of source units with more than one copy, or -1 on a violation. */
static int check_net2net(const alloy_model *w, const alloy_model *src, int l) {
    int F = src->config.d_ff, F2 = w->config.d_ff, C = src->config.d_model;
    bool gpt2 = src->config.family == ALLOY_FAMILY_GPT2;
    const alloy_layer_params *a = &src->params.layers[l], *b = &w->params.layers[l];
    int *map = malloc(sizeof(int) * (size_t)F2), *count = calloc((size_t)F, sizeof(int));
    int result = 0;
    for (int j = 0; j < F2 && result >= 0; j++) {
        map[j] = -1;
        for (int u = (j < F ? j : 0); u < (j < F ? j + 1 : F) && map[j] < 0; u++) {
            bool same = true;
            for (int c = 0; c < C && same; c++) {
                if (gpt2) same = b->up_w[(size_t)c * F2 + j] == a->up_w[(size_t)c * F + u];
                else same = b->up_w[(size_t)j * C + c] == a->up_w[(size_t)u * C + c] &&
                            b->up_w[((size_t)F2 + j) * C + c] == a->up_w[((size_t)F + u) * C + c]; // gate, then up
            }
            if (same && gpt2) same = b->up_b[j] == a->up_b[u];
            if (same) map[j] = u;
        }
        if (map[j] < 0) result = -1;
        else count[map[j]]++;
    }
    for (int u = 0; u < F && result >= 0; u++) {
        result += count[u] > 1;
        for (int c = 0; c < C; c++) {
            double sum = 0;
            for (int j = 0; j < F2; j++)
                if (map[j] == u) sum += gpt2 ? b->down_w[(size_t)j * C + c] : b->down_w[(size_t)c * F2 + j];
            double want = gpt2 ? a->down_w[(size_t)u * C + c] : a->down_w[(size_t)c * F + u];
            if (fabs(sum - want) > 1e-6 * fabs(want) + 1e-12) result = -1;
        }
    }
    free(map);
    free(count);
    return result;
}

/* Net2WiderNet of one family to three widths: structure, function, seeds, noise. */
static void width_family(const char *preset) {
    alloy_model *src = make_source(preset, 2, 21);
    REQUIRE(src, "%s: %s", preset, alloy_last_error());
    int F = src->config.d_ff;
    uint64_t before = params_hash(src);
    int32_t tokens[B * T];
    make_tokens(tokens, 6);
    float *want = logits_of(src, tokens);
    REQUIRE(want, "%s: forward: %s", preset, alloy_last_error());
    const int widths[] = {F + 37, 2 * F + 13, 4 * F};
    for (int k = 0; k < 3; k++) {
        alloy_model *w = NULL;
        alloy_status s = alloy_grow_ffn(&w, src, widths[k], 7, 0.0f);
        EXPECT(s == ALLOY_STATUS_OK && w, "%s: widen to %d: %s", preset, widths[k], alloy_last_error());
        if (!w) continue;
        EXPECT(w->config.d_ff == widths[k] && w->config.n_layer == src->config.n_layer &&
                   same_config_but(&src->config, &w->config),
               "%s: config after widening", preset);
        int shared = 0;
        for (int l = 0; l < w->config.n_layer; l++) {
            int r = check_net2net(w, src, l);
            EXPECT(r >= 0, "%s -> %d: layer %d is not a Net2WiderNet widening", preset, widths[k], l);
            shared += r;
        }
        EXPECT(shared > 0, "%s: no unit was copied", preset);
        // tensors outside the MLP are copies (the plan of a depth growth that keeps every layer)
        int ident[2] = {0, 1};
        int diff = plan_mismatches(w, src, ident, false); // the MLP's 3 (GPT-2: c_fc weight, bias, c_proj) per layer differ
        EXPECT(diff == 2 * 3, "%s: %d tensors differ from the source (want the 6 of the MLPs)", preset, diff);
        float *got = logits_of(w, tokens);
        double e = got ? err_of_scale(got, want, B * T * V) : INFINITY;
        printf("# %s d_ff %d -> %d: max |logit change| %.2e of scale\n", preset, F, widths[k], e);
        EXPECT(e <= 1e-5, "%s -> %d: the widened model's logits differ by %.3g of scale", preset, widths[k], e);
        free(got);
        if (k == 0) {
            // the test notices a widening that does not share the outgoing weights among copies:
            // undo the division for the last unit
            int j = widths[k] - 1;
            const alloy_layer_params *b = &w->params.layers[0];
            int C = w->config.d_model, F2 = widths[k];
            for (int c = 0; c < C; c++) {
                if (w->config.family == ALLOY_FAMILY_GPT2) b->down_w[(size_t)j * C + c] *= 2.0f;
                else b->down_w[(size_t)c * F2 + j] *= 2.0f;
            }
            got = logits_of(w, tokens);
            double broken = got ? err_of_scale(got, want, B * T * V) : 0;
            EXPECT(broken > 1e-3, "%s: a broken widening changes the logits by only %.3g of scale", preset, broken);
            free(got);
            // the same seed gives the same model, another seed another
            alloy_model *w2 = NULL, *w3 = NULL;
            EXPECT(alloy_grow_ffn(&w2, src, widths[k], 7, 0.0f) == ALLOY_STATUS_OK, "%s", alloy_last_error());
            EXPECT(alloy_grow_ffn(&w3, src, widths[k], 8, 0.0f) == ALLOY_STATUS_OK, "%s", alloy_last_error());
            if (w2 && w3) {
                alloy_model *fresh = NULL;
                alloy_grow_ffn(&fresh, src, widths[k], 7, 0.0f);
                EXPECT(fresh && params_hash(fresh) == params_hash(w2), "%s: the same seed gives another model", preset);
                EXPECT(params_hash(w3) != params_hash(w2), "%s: another seed gives the same model", preset);
                alloy_model_destroy(fresh);
            }
            alloy_model_destroy(w2);
            alloy_model_destroy(w3);
        }
        if (k == 1) {
            char dir[512];
            snprintf(dir, sizeof dir, "%s/%s-wide", harness_tmpdir(), preset);
            check_roundtrip(w, dir);
        }
        alloy_model_destroy(w);
    }
    // noise: the original units stay, the copies move a little, the function nearly stays
    alloy_model *w0 = NULL, *wn = NULL;
    REQUIRE(alloy_grow_ffn(&w0, src, F + 64, 7, 0.0f) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_status s = alloy_grow_ffn(&wn, src, F + 64, 7, 0.01f);
    EXPECT(s == ALLOY_STATUS_OK && wn, "%s: noise: %s", preset, alloy_last_error());
    if (wn) {
        const alloy_layer_params *a = &w0->params.layers[1], *b = &wn->params.layers[1];
        int C = src->config.d_model, F2 = F + 64;
        size_t n_up = (size_t)C * F2 * (src->config.family == ALLOY_FAMILY_GPT2 ? 1 : 2);
        int same_old = 0, moved_new = 0;
        for (size_t i = 0; i < n_up; i++) {
            // GPT-2 (C, F2): unit i % F2; Llama [gate; up] (2·F2, C): unit (i / C) % F2
            size_t unit = src->config.family == ALLOY_FAMILY_GPT2 ? i % (size_t)F2 : (i / (size_t)C) % (size_t)F2;
            if (unit < (size_t)F) same_old += a->up_w[i] == b->up_w[i];
            else moved_new += a->up_w[i] != b->up_w[i];
        }
        EXPECT((size_t)same_old == n_up / F2 * F, "%s: noise changed original units", preset);
        // (a draw smaller than half an ulp of the weight leaves it alone: allow 1%)
        EXPECT((size_t)moved_new >= n_up / F2 * 64 * 99 / 100, "%s: noise left %zu new weights alone", preset,
               n_up / F2 * 64 - (size_t)moved_new);
        EXPECT(!memcmp(a->down_w, b->down_w, sizeof(float) * (size_t)C * F2), "%s: noise changed the outgoing weights", preset);
        float *got = logits_of(wn, tokens);
        double e = got ? err_of_scale(got, want, B * T * V) : INFINITY;
        printf("# %s d_ff %d -> %d, noise 0.01: max |logit change| %.2e of scale\n", preset, F, F2, e);
        EXPECT(e > 1e-5 && e < 0.05, "%s: with noise 0.01 the logits change by %.3g of scale", preset, e);
        free(got);
    }
    alloy_model_destroy(w0);
    alloy_model_destroy(wn);
    EXPECT(params_hash(src) == before, "%s: widening changed the source", preset);
    free(want);
    alloy_model_destroy(src);
}

static void test_width_gpt2(void) { width_family("tiny-gpt2"); }
static void test_width_llama(void) { width_family("tiny-llama"); }

/* ---- against PyTorch -------------------------------------------------------------------- */

/* Runs grow_ref.py on the source folder with `how` ("--upscale 1", "--layers ...") and the
 * extra folder, and returns its output file (opened) or NULL. */
static alloy_safetensors *run_ref(const char *dir, const char *src_dir, const char *tok_path, const char *how,
                                  const char *extra, int tag) {
    char out[600];
    snprintf(out, sizeof out, "%s/ref-%d.safetensors", dir, tag);
    if (harness_reference("torch, numpy", "grow_ref.py", "--source '%s' --tokens '%s' --out '%s' %s%s%s%s", src_dir, tok_path,
                          out, how, extra ? " --folders '" : "", extra ? extra : "", extra ? "'" : "") != 0)
        return NULL;
    alloy_safetensors *st = NULL;
    if (alloy_safetensors_open(&st, out)) return NULL;
    return st;
}

/* The reference tensor `name` as B·T·V floats (malloc'd), or NULL. */
static float *ref_logits(const alloy_safetensors *st, const char *name) {
    const alloy_st_tensor *t = alloy_safetensors_find(st, name);
    if (!t || t->numel != (size_t)B * T * V) return NULL;
    float *x = malloc(sizeof(float) * t->numel);
    if (alloy_st_tensor_to_f32(st, t, x)) {
        free(x);
        return NULL;
    }
    return x;
}

/* One family against grow_ref.py: SOLAR up-scaling, a plan, and a widened folder. */
static void torch_family(const char *preset) {
    NEED_PYTHON("torch, numpy");
    char dir[512], src_dir[600], wide_dir[600], tok_path[600];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(src_dir, sizeof src_dir, "%s/source", dir);
    snprintf(wide_dir, sizeof wide_dir, "%s/wide", dir);
    snprintf(tok_path, sizeof tok_path, "%s/tokens.safetensors", dir);
    alloy_model *src = make_source(preset, 4, 31);
    REQUIRE(src, "%s", alloy_last_error());
    int32_t tokens[B * T];
    make_tokens(tokens, 9);
    alloy_st_entry e = {.name = "tokens", .dtype = ALLOY_DTYPE_I32, .ndim = 2, .shape = {B, T}, .data = tokens};
    alloy_model *up = NULL, *planned = NULL, *wide = NULL;
    int *plan = NULL, n = 0;
    bool ok = alloy_model_save(src, src_dir) == ALLOY_STATUS_OK && alloy_safetensors_write(tok_path, &e, 1, NULL) == ALLOY_STATUS_OK &&
              alloy_grow_depth_upscale(&up, src, 1) == ALLOY_STATUS_OK &&
              alloy_grow_parse_layers("0-2,1-3,3", 4, &plan, &n) == ALLOY_STATUS_OK &&
              alloy_grow_depth(&planned, src, plan, n) == ALLOY_STATUS_OK &&
              alloy_grow_ffn(&wide, src, src->config.d_ff * 2 + 5, 3, 0.0f) == ALLOY_STATUS_OK &&
              alloy_model_save(wide, wide_dir) == ALLOY_STATUS_OK;
    EXPECT(ok, "%s: %s", preset, alloy_last_error());
    alloy_safetensors *r1 = ok ? run_ref(dir, src_dir, tok_path, "--upscale 1", wide_dir, 1) : NULL;
    alloy_safetensors *r2 = ok ? run_ref(dir, src_dir, tok_path, "--layers 0-2,1-3,3", NULL, 2) : NULL;
    EXPECT(!ok || (r1 && r2), "%s: grow_ref.py failed", preset);
    if (r1 && r2) {
        float *t_src = ref_logits(r1, "source_logits"), *t_up = ref_logits(r1, "grown_logits");
        float *t_wide = ref_logits(r1, "folder_0"), *t_plan = ref_logits(r2, "grown_logits");
        EXPECT(t_src && t_up && t_wide && t_plan, "%s: the reference lacks logits", preset);
        float *a_src = logits_of(src, tokens), *a_up = logits_of(up, tokens), *a_plan = logits_of(planned, tokens);
        float *a_wide = logits_of(wide, tokens);
        EXPECT(a_src && a_up && a_plan && a_wide, "%s: forward: %s", preset, alloy_last_error());
        if (t_src && t_up && t_wide && t_plan && a_src && a_up && a_plan && a_wide) {
            double e_src = err_of_scale(a_src, t_src, B * T * V), e_up = err_of_scale(a_up, t_up, B * T * V);
            double e_plan = err_of_scale(a_plan, t_plan, B * T * V), e_wide = err_of_scale(t_wide, t_src, B * T * V);
            double e_aw = err_of_scale(a_wide, t_src, B * T * V), moved = err_of_scale(t_up, t_src, B * T * V);
            printf("# %s vs PyTorch, of scale: source %.2e, upscaled %.2e, plan 0-2,1-3,3 %.2e; torch on alloy's widened "
                   "folder vs torch source %.2e, alloy widened vs torch source %.2e\n",
                   preset, e_src, e_up, e_plan, e_wide, e_aw);
            EXPECT(e_src <= 1e-5, "%s: source logits differ from PyTorch by %.3g of scale", preset, e_src);
            EXPECT(e_up <= 1e-5, "%s: upscaled logits differ from PyTorch's SOLAR model by %.3g of scale", preset, e_up);
            EXPECT(e_plan <= 1e-5, "%s: planned logits differ from PyTorch by %.3g of scale", preset, e_plan);
            EXPECT(e_wide <= 1e-5, "%s: PyTorch finds the widened folder's function changed by %.3g of scale", preset, e_wide);
            EXPECT(e_aw <= 1e-5, "%s: the widened model differs from PyTorch's source by %.3g of scale", preset, e_aw);
            EXPECT(moved > 1e-3, "%s: up-scaling left the logits unchanged (%.3g): the comparison tells nothing", preset, moved);
        }
        float *bufs[] = {t_src, t_up, t_wide, t_plan, a_src, a_up, a_plan, a_wide};
        for (int i = 0; i < 8; i++) free(bufs[i]);
    }
    alloy_safetensors_close(r1);
    alloy_safetensors_close(r2);
    alloy_free(plan);
    alloy_model_destroy(up);
    alloy_model_destroy(planned);
    alloy_model_destroy(wide);
    alloy_model_destroy(src);
}

static void test_torch_gpt2(void) { torch_family("tiny-gpt2"); }
static void test_torch_llama(void) { torch_family("tiny-llama"); }

/* ---- training the grown model ------------------------------------------------------------ */

/* Steps of AdamW on one batch (next-token targets): the losses (steps of them) are finite and
 * the last is below the first. */
static void train_steps(alloy_model *m, const char *what) {
    int32_t tokens[B * T], targets[B * T];
    make_tokens(tokens, 4);
    for (int i = 0; i < B * T; i++) targets[i] = (i + 1) % T ? tokens[i + 1] : -1;
    alloy_adamw_config ac = alloy_adamw_defaults();
    alloy_optimizer *opt = NULL;
    REQUIRE(alloy_optimizer_create(&opt, m, &ac) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    float losses[4];
    alloy_status s = ALLOY_STATUS_OK;
    for (int step = 0; step < 4 && !s; step++) {
        s = alloy_model_forward(m, tokens, B, T);
        if (!s) s = alloy_lm_loss(m, targets, NULL, B, T, 1.0f, alloy_model_logits(m), &losses[step]);
        alloy_model_zero_grad(m);
        if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
        if (!s) s = alloy_optimizer_step(opt, m, 1e-3f, NULL);
    }
    EXPECT(s == ALLOY_STATUS_OK, "%s: a training step failed: %s", what, alloy_last_error());
    if (!s) {
        printf("# %s: losses %.4f %.4f %.4f %.4f\n", what, losses[0], losses[1], losses[2], losses[3]);
        EXPECT(isfinite(losses[0]) && isfinite(losses[3]) && losses[3] < losses[0], "%s: losses %g ... %g", what,
               losses[0], losses[3]);
    }
    alloy_optimizer_destroy(opt);
}

/* A model grown deeper and wider, and one widened with noise, train (both families). */
static void test_grown_trains(void) {
    const char *presets[] = {"tiny-gpt2", "tiny-llama"};
    for (int p = 0; p < 2; p++) {
        alloy_model *src = make_source(presets[p], 3, 41);
        REQUIRE(src, "%s", alloy_last_error());
        // the weights of make_source are large for training: the model's own initialisation
        alloy_model_init_weights(src, 41);
        alloy_model *deep = NULL, *wide = NULL, *noisy = NULL;
        alloy_status s = alloy_grow_depth_upscale(&deep, src, 1);
        if (!s) s = alloy_grow_ffn(&wide, deep, src->config.d_ff + 40, 1, 0.0f);
        if (!s) s = alloy_grow_ffn(&noisy, src, 2 * src->config.d_ff, 1, 0.01f);
        EXPECT(s == ALLOY_STATUS_OK, "%s: %s", presets[p], alloy_last_error());
        if (!s) {
            EXPECT(wide->config.n_layer == 4 && wide->config.d_ff == src->config.d_ff + 40, "%s: deep and wide config", presets[p]);
            char what[64];
            snprintf(what, sizeof what, "%s upscaled and widened", presets[p]);
            train_steps(wide, what);
            snprintf(what, sizeof what, "%s widened with noise", presets[p]);
            train_steps(noisy, what);
        }
        alloy_model_destroy(deep);
        alloy_model_destroy(wide);
        alloy_model_destroy(noisy);
        alloy_model_destroy(src);
    }
}

/* ---- refusals --------------------------------------------------------------------------- */

/* The call failed with USAGE, left *out NULL and said one line containing `needle`. */
#define REFUSED(call, out, needle)                                                                         \
    do {                                                                                                   \
        alloy_status s_ = (call);                                                                          \
        EXPECT(s_ == ALLOY_STATUS_USAGE && (out) == NULL, "%s: status %d", #call, (int)s_);                \
        EXPECT(says(needle) && !strchr(alloy_last_error(), '\n'), "%s: message \"%s\" lacks \"%s\"", #call, \
               alloy_last_error(), needle);                                                                \
    } while (0)

/* Bad arguments: USAGE, one line naming the flag, nothing made, the source untouched. */
static void test_refusals(void) {
    alloy_model *src = make_source("tiny-llama", 4, 51);
    REQUIRE(src, "%s", alloy_last_error());
    uint64_t before = params_hash(src);
    alloy_model *g = NULL;
    REFUSED(alloy_grow_depth_upscale(&g, src, 4), g, "depth_upscale 4: must lie in [0, 3]");
    REFUSED(alloy_grow_depth_upscale(&g, src, 7), g, "the model has 4 layers");
    REFUSED(alloy_grow_depth_upscale(&g, src, -1), g, "depth_upscale -1");
    const int bad_hi[] = {0, 4}, bad_lo[] = {-1};
    REFUSED(alloy_grow_depth(&g, src, bad_hi, 2), g, "new layer 1 would copy layer 4, but the model has layers 0-3");
    REFUSED(alloy_grow_depth(&g, src, bad_lo, 1), g, "layer -1");
    REFUSED(alloy_grow_depth(&g, src, bad_hi, 0), g, "a plan of 0 layers");
    int *big = calloc(1025, sizeof(int));
    REFUSED(alloy_grow_depth(&g, src, big, 1025), g, "a plan of 1025 layers; it needs 1 to 1024");
    free(big);
    int F = src->config.d_ff;
    REFUSED(alloy_grow_ffn(&g, src, F, 1, 0.0f), g, "ffn_width 176: must exceed the model's MLP width 176");
    REFUSED(alloy_grow_ffn(&g, src, F - 1, 1, 0.0f), g, "must exceed");
    REFUSED(alloy_grow_ffn(&g, src, 0, 1, 0.0f), g, "ffn_width 0");
    REFUSED(alloy_grow_ffn(&g, src, (1 << 20) + 1, 1, 0.0f), g, "at most 1048576");
    REFUSED(alloy_grow_ffn(&g, src, 2 * F, 1, -0.1f), g, "noise -0.1: must be a finite number >= 0");
    REFUSED(alloy_grow_ffn(&g, src, 2 * F, 1, NAN), g, "noise");
    REFUSED(alloy_grow_ffn(&g, src, 2 * F, 1, INFINITY), g, "noise inf");
    EXPECT(params_hash(src) == before, "a refusal changed the source");
    // 2·(n − m) layers beyond config's bound of 1024: a source of 600 small layers
    alloy_config c = {.family = ALLOY_FAMILY_GPT2, .vocab_size = 16, .max_seq_len = 4, .n_layer = 600, .n_head = 1,
                      .n_kv_head = 1, .d_model = 8, .d_ff = 8, .norm_eps = 1e-5, .tie_embeddings = true};
    alloy_model *tall = NULL;
    EXPECT(alloy_model_create(&tall, &c, 1, 1) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    if (tall) {
        REFUSED(alloy_grow_depth_upscale(&g, tall, 0), g, "depth_upscale 0: 2*(600 - 0) = 1200 layers exceed 1024");
        EXPECT(alloy_grow_depth_upscale(&g, tall, 100) == ALLOY_STATUS_OK && g && g->config.n_layer == 1000, "%s",
               alloy_last_error());
        alloy_model_destroy(g);
        g = NULL;
    }
    alloy_model_destroy(tall);

    // layer plans
    static const struct {
        const char *spec, *needle;
    } bad[] = {
        {"", "layers: the plan is empty"},
        {"x", "layers \"x\": expected a layer index at \"x\""},
        {"0-", "layers \"0-\": expected a layer index at the end"},
        {"0-2,", "expected a layer index at the end"},
        {"0,,1", "expected a layer index at \",1\""},
        {"-1", "expected a layer index at \"-1\""},
        {"3-1", "the range 3-1 descends"},
        {"0-4", "layer 4 is out of range (the model has layers 0-3)"},
        {"2,99999999999", "layer 999999999 is out of range"},
        {"0;1", "expected ',' or the end at \";1\""},
        {"1-2-3", "expected ',' or the end at \"-3\""},
        {"0 1", "expected ',' or the end at \"1\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int *plan = (int *)&bad, n = 7;
        alloy_status s = alloy_grow_parse_layers(bad[i].spec, 4, &plan, &n);
        EXPECT(s == ALLOY_STATUS_USAGE && !plan && n == 0, "\"%s\" was accepted", bad[i].spec);
        EXPECT(says(bad[i].needle) && !strchr(alloy_last_error(), '\n'), "\"%s\": message \"%s\" lacks \"%s\"", bad[i].spec,
               alloy_last_error(), bad[i].needle);
    }
    char many[8192] = "0-3";
    for (int i = 0; i < 300; i++) strcat(many, ",0-3");
    int *plan = NULL, n = 0;
    EXPECT(alloy_grow_parse_layers(many, 4, &plan, &n) == ALLOY_STATUS_USAGE && says("more than 1024 layers") &&
               says("\"0-3,0-3,0-3,0-3,0-3,0-3,0-3,0-3,0-3,0-3,...\"") && strlen(alloy_last_error()) < 120,
           "1204 layers: a long plan is quoted cut short: %s", alloy_last_error());
    alloy_free(plan);
    EXPECT(alloy_grow_parse_layers("0-3,0-3", 4, &plan, &n) == ALLOY_STATUS_OK && n == 8 && plan[7] == 3, "%s",
           alloy_last_error());
    alloy_free(plan);
    alloy_model_destroy(src);
}

/* Every allocation failing in turn: NOMEM with a message and nothing leaked or half-made,
 * until the calls succeed. */
static void test_out_of_memory(void) {
    alloy_model *src = make_source("tiny-gpt2", 2, 61);
    REQUIRE(src, "%s", alloy_last_error());
    for (int which = 0; which < 3; which++) {
        bool done = false;
        for (long k = 1; k < 200 && !done; k++) {
            alloy_model *g = NULL;
            int *plan = NULL, n = 0;
            alloy_alloc_fail_after(k);
            alloy_status s = which == 0   ? alloy_grow_depth_upscale(&g, src, 1)
                             : which == 1 ? alloy_grow_ffn(&g, src, 300, 1, 0.1f)
                                          : alloy_grow_parse_layers("0-1,1", 2, &plan, &n);
            alloy_alloc_fail_after(0);
            if (s == ALLOY_STATUS_OK) {
                done = true;
                EXPECT(k > 1, "case %d: no allocation to fail", which);
            } else {
                EXPECT(s == ALLOY_STATUS_NOMEM && !g && !plan && alloy_last_error()[0], "case %d, allocation %ld: status %d, %s",
                       which, k, (int)s, alloy_last_error());
            }
            alloy_model_destroy(g);
            alloy_free(plan);
        }
        EXPECT(done, "case %d never succeeded", which);
    }
    alloy_model_destroy(src);
}

int main(void) {
    RUN(test_depth_gpt2);
    RUN(test_depth_llama);
    RUN(test_width_gpt2);
    RUN(test_width_llama);
    RUN(test_torch_gpt2);
    RUN(test_torch_llama);
    RUN(test_grown_trains);
    RUN(test_refusals);
    RUN(test_out_of_memory);
    return harness_exit();
}
