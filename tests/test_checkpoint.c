/*
 * test_checkpoint.c — model checkpoint folders: bitwise roundtrip, config/weights
 * disagreement, missing and corrupt files, corrupt config.json, failed saves, Hugging Face
 * extras; model paths (alloy_checkpoint_resolve) and the checkpoint object: each kind of path,
 * tokenizer compatibility, one-line errors for bad paths.
 */
#include "io_util.h"
#include "alloy/checkpoint.h"

#include <cJSON.h>

/* ---- model checkpoints ------------------------------------------------------------------ */

static alloy_model *make_model(const char *preset, uint64_t seed) {
    alloy_config c;
    ALLOY_ASSERT(alloy_config_preset(&c, preset, 256) == ALLOY_STATUS_OK);
    alloy_model *m;
    if (alloy_model_create(&m, &c, 1, 16) != ALLOY_STATUS_OK) return NULL;
    alloy_model_init_weights(m, seed);
    return m;
}

/* Number of tensors whose name, shape or bytes differ between two models. */
static int model_diff(const alloy_model *a, const alloy_model *b) {
    if (a->n_tensors != b->n_tensors) return -1;
    int diff = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const alloy_tensor_info *x = &a->tensors[i], *y = &b->tensors[i];
        bool same = !strcmp(x->name, y->name) && x->ndim == y->ndim && x->numel == y->numel &&
                    x->shape[0] == y->shape[0] && x->shape[1] == y->shape[1] &&
                    !memcmp(a->params_memory + x->offset, b->params_memory + y->offset, sizeof(float) * x->numel);
        diff += !same;
    }
    return diff;
}

static void test_model_roundtrip(void) {
    const char *presets[] = {"tiny-gpt2", "tiny-llama"};
    char *dir = copy_tmpdir();
    for (int p = 0; p < 2; p++) {
        alloy_model *m = make_model(presets[p], 1000 + (uint64_t)p);
        REQUIRE(m, "create %s: %s", presets[p], alloy_last_error());
        snprintf(m->config.tokenizer, sizeof m->config.tokenizer, "bytes");
        char *ck = alloy_path_join(dir, presets[p]);
        char *nested = alloy_path_join(ck, "deeper/final");
        REQUIRE(alloy_model_save(m, nested) == ALLOY_STATUS_OK, "save %s: %s", presets[p], alloy_last_error());
        EXPECT(harness_count_entries(nested) == 2, "%s: %d files in the checkpoint", presets[p], harness_count_entries(nested));
        alloy_model *l = NULL;
        REQUIRE(alloy_model_load(&l, nested, 1, 0) == ALLOY_STATUS_OK, "load %s: %s", presets[p], alloy_last_error());
        const alloy_config *a = &m->config, *b = &l->config;
        EXPECT(a->family == b->family && a->vocab_size == b->vocab_size && a->max_seq_len == b->max_seq_len &&
                   a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_kv_head == b->n_kv_head &&
                   a->d_model == b->d_model && a->d_ff == b->d_ff && a->norm_eps == b->norm_eps &&
                   a->rope_theta == b->rope_theta && a->tie_embeddings == b->tie_embeddings &&
                   !strcmp(a->tokenizer, b->tokenizer),
               "%s: the config changed in the roundtrip", presets[p]);
        EXPECT(!memcmp(a, b, sizeof *a), "%s: the config struct differs after the roundtrip", presets[p]);
        EXPECT(l->max_T == a->max_seq_len, "%s: max_T 0 means the config's maximum (%d)", presets[p], l->max_T);
        int d = model_diff(m, l);
        EXPECT(d == 0, "%s: %d tensors differ after the roundtrip", presets[p], d);
        // the weights file is a plain safetensors file with the Hugging Face names
        char *w = alloy_path_join(nested, "model.safetensors");
        alloy_safetensors *st;
        REQUIRE(alloy_safetensors_open(&st, w) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(st->n_tensors == m->n_tensors, "%s: %d tensors in the file", presets[p], st->n_tensors);
        const char *prod = alloy_safetensors_meta(st, "format");
        EXPECT(prod && !strcmp(prod, "pt"), "%s: metadata format", presets[p]);
        EXPECT(alloy_safetensors_find(st, p ? "model.layers.1.mlp.down_proj.weight" : "transformer.h.1.mlp.c_fc.bias"),
               "%s: Hugging Face names", presets[p]);
        EXPECT(p == 1 || !alloy_safetensors_find(st, "lm_head.weight"), "tied GPT-2 must write no lm_head.weight");
        EXPECT(p == 0 || alloy_safetensors_find(st, "lm_head.weight"), "untied Llama must write lm_head.weight");
        alloy_safetensors_close(st);
        // saving over an existing checkpoint replaces it
        alloy_model_init_weights(m, 77);
        REQUIRE(alloy_model_save(m, nested) == ALLOY_STATUS_OK, "resave: %s", alloy_last_error());
        alloy_model_destroy(l);
        REQUIRE(alloy_model_load(&l, nested, 2, 8) == ALLOY_STATUS_OK, "reload: %s", alloy_last_error());
        EXPECT(model_diff(m, l) == 0 && l->max_B == 2 && l->max_T == 8, "%s: resave", presets[p]);
        EXPECT(harness_count_entries(nested) == 2, "%s: %d files after a resave", presets[p], harness_count_entries(nested));
        alloy_model_destroy(l);
        alloy_model_destroy(m);
        alloy_free(w);
        alloy_free(ck);
        alloy_free(nested);
    }
    alloy_free(dir);
}

/* Saves a checkpoint of `preset` in <dir>/<name> and returns its path (alloy_free). */
static char *save_checkpoint(const char *dir, const char *name, const char *preset, uint64_t seed) {
    alloy_model *m = make_model(preset, seed);
    ALLOY_ASSERT(m);
    char *ck = alloy_path_join(dir, name);
    ALLOY_ASSERT(alloy_model_save(m, ck) == ALLOY_STATUS_OK);
    alloy_model_destroy(m);
    return ck;
}

/* Sets (value: JSON text) or deletes (value NULL) one field of a JSON object. */
static void set_field(cJSON *j, const char *key, const char *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(j, key);
    if (value) {
        cJSON *v = cJSON_Parse(value);
        ALLOY_ASSERT(v);
        cJSON_AddItemToObject(j, key, v);
    }
}

/* A copy of checkpoint `src` in <dir>/<name> with one or two config.json fields changed
 * (key2 NULL: one). Returns the folder (alloy_free). Written without fsync: test files. */
static char *variant2(const char *dir, const char *name, const char *src, const char *key, const char *value,
                      const char *key2, const char *value2) {
    char *out = alloy_path_join(dir, name);
    ALLOY_ASSERT(alloy_mkdir_p(out) == ALLOY_STATUS_OK);
    char *sw = alloy_path_join(src, "model.safetensors"), *dw = alloy_path_join(out, "model.safetensors");
    char *sc = alloy_path_join(src, "config.json"), *dc = alloy_path_join(out, "config.json");
    size_t n;
    uint8_t *bytes = read_bytes(sw, &n);
    ALLOY_ASSERT(bytes);
    write_bytes(dw, bytes, n);
    free(bytes);
    cJSON *j;
    ALLOY_ASSERT(alloy_json_read_file(sc, &j) == ALLOY_STATUS_OK);
    set_field(j, key, value);
    if (key2) set_field(j, key2, value2);
    char *text = cJSON_Print(j);
    ALLOY_ASSERT(text);
    write_bytes(dc, text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(j);
    alloy_free(sw);
    alloy_free(dw);
    alloy_free(sc);
    alloy_free(dc);
    return out;
}

static char *variant(const char *dir, const char *name, const char *src, const char *key, const char *value) {
    return variant2(dir, name, src, key, value, NULL, NULL);
}

static void test_model_mismatch(void) {
    char *dir = copy_tmpdir();
    char *g = save_checkpoint(dir, "gpt2", "tiny-gpt2", 1);
    char *l = save_checkpoint(dir, "llama", "tiny-llama", 2);
    struct {
        const char *src, *key, *value, *expect;
    } cases[] = {
        {g, "n_layer", "3", "missing tensor \"transformer.h.2.ln_1.weight\""},
        {g, "n_layer", "1", "unexpected tensor \"transformer.h.1.ln_1.weight\""},
        {g, "n_embd", "32", "tensor \"transformer.wte.weight\" has shape [256, 64] but config.json implies [256, 32]"},
        {g, "vocab_size", "300", "tensor \"transformer.wte.weight\" has shape [256, 64]"},
        {g, "n_positions", "64", "tensor \"transformer.wpe.weight\""},
        {g, "n_inner", "128", "tensor \"transformer.h.0.mlp.c_fc.weight\""},
        {l, "num_hidden_layers", "4", "missing tensor \"model.layers.2.input_layernorm.weight\""},
        {l, "hidden_size", "32", "tensor \"model.embed_tokens.weight\""},
        {l, "num_key_value_heads", "4", "tensor \"model.layers.0.self_attn.k_proj.weight\" has shape [32, 64]"},
        {l, "intermediate_size", "128", "tensor \"model.layers.0.mlp.gate_proj.weight\""},
        {l, "tie_word_embeddings", "true", "unexpected tensor \"lm_head.weight\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "v%zu", i);
        char *v = variant(dir, name, cases[i].src, cases[i].key, cases[i].value);
        alloy_model *m = (alloy_model *)1;
        alloy_status s = alloy_model_load(&m, v, 1, 0);
        EXPECT(s == ALLOY_STATUS_MISMATCH && m == NULL, "%s = %s: status %s '%s'", cases[i].key, cases[i].value,
               alloy_status_name(s), alloy_last_error());
        EXPECT(says(cases[i].expect) && says(v) && one_line(), "%s = %s: message '%s' lacks '%s'", cases[i].key,
               cases[i].value, alloy_last_error(), cases[i].expect);
        if (s == ALLOY_STATUS_OK) alloy_model_destroy(m);
        alloy_free(v);
    }
    alloy_free(g);
    alloy_free(l);
    alloy_free(dir);
}

static void test_model_missing_files(void) {
    char *dir = copy_tmpdir();
    char *g = save_checkpoint(dir, "good", "tiny-gpt2", 3);
    char *cfg = alloy_path_join(g, "config.json"), *wts = alloy_path_join(g, "model.safetensors");
    size_t ncfg, nwts;
    uint8_t *cfg_bytes = read_bytes(cfg, &ncfg), *wts_bytes = read_bytes(wts, &nwts);
    REQUIRE(cfg_bytes && wts_bytes, "read the checkpoint");
    alloy_model *m = (alloy_model *)1;

    // no folder; a file where the folder should be
    char *none = alloy_path_join(dir, "no-such-checkpoint");
    alloy_status s = alloy_model_load(&m, none, 1, 0);
    EXPECT(s == ALLOY_STATUS_IO && m == NULL && says(none) && says("no such folder"), "missing folder: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    s = alloy_model_load(&m, cfg, 1, 0);
    EXPECT(s == ALLOY_STATUS_IO && says(cfg) && says("not a folder"), "a file as folder: %s '%s'",
           alloy_status_name(s), alloy_last_error());

    // only config.json
    char *only_cfg = alloy_path_join(dir, "only-config"), *oc = alloy_path_join(only_cfg, "config.json");
    alloy_mkdir_p(only_cfg);
    write_bytes(oc, cfg_bytes, ncfg);
    s = alloy_model_load(&m, only_cfg, 1, 0);
    EXPECT(s == ALLOY_STATUS_IO && m == NULL && says("model.safetensors") && says(only_cfg) && one_line(),
           "missing weights: %s '%s'", alloy_status_name(s), alloy_last_error());

    // only model.safetensors
    char *only_w = alloy_path_join(dir, "only-weights"), *ow = alloy_path_join(only_w, "model.safetensors");
    alloy_mkdir_p(only_w);
    write_bytes(ow, wts_bytes, nwts);
    s = alloy_model_load(&m, only_w, 1, 0);
    EXPECT(s == ALLOY_STATUS_IO && m == NULL && says("config.json") && says(only_w) && one_line(),
           "missing config: %s '%s'", alloy_status_name(s), alloy_last_error());

    // truncated weights: FORMAT naming the weights file
    char *trunc = alloy_path_join(dir, "truncated"), *tc = alloy_path_join(trunc, "config.json"),
         *tw = alloy_path_join(trunc, "model.safetensors");
    alloy_mkdir_p(trunc);
    write_bytes(tc, cfg_bytes, ncfg);
    size_t cuts[] = {nwts - 1, nwts / 2, 100, 5};
    for (int i = 0; i < 4; i++) {
        write_bytes(tw, wts_bytes, cuts[i]);
        s = alloy_model_load(&m, trunc, 1, 0);
        EXPECT(s == ALLOY_STATUS_FORMAT && m == NULL && says(tw) && one_line(), "weights cut to %zu: %s '%s'", cuts[i],
               alloy_status_name(s), alloy_last_error());
    }
    // weights of the wrong dtype with the right shapes
    alloy_model *ref = make_model("tiny-gpt2", 3);
    REQUIRE(ref, "create");
    alloy_st_entry *e = calloc((size_t)ref->n_tensors, sizeof *e);
    for (int i = 0; i < ref->n_tensors; i++) {
        const alloy_tensor_info *t = &ref->tensors[i];
        e[i] = (alloy_st_entry){t->name, i == 3 ? ALLOY_DTYPE_I32 : ALLOY_DTYPE_F32, t->ndim, {t->shape[0], t->shape[1]},
                                ref->params_memory + t->offset};
    }
    REQUIRE(alloy_safetensors_write(tw, e, ref->n_tensors, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    s = alloy_model_load(&m, trunc, 1, 0);
    EXPECT(s == ALLOY_STATUS_FORMAT && says(tw) && says(ref->tensors[3].name) && says("I32"), "I32 weights: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    free(e);
    alloy_model_destroy(ref);

    free(cfg_bytes);
    free(wts_bytes);
    alloy_free(none);
    alloy_free(only_cfg);
    alloy_free(oc);
    alloy_free(only_w);
    alloy_free(ow);
    alloy_free(trunc);
    alloy_free(tc);
    alloy_free(tw);
    alloy_free(cfg);
    alloy_free(wts);
    alloy_free(g);
    alloy_free(dir);
}

/* Loading checkpoint folder v fails with FORMAT and a one-line message naming its
 * config.json and containing `expect`. */
static void expect_config_rejected(const char *v, const char *key, const char *value, const char *expect) {
    char *cpath = alloy_path_join(v, "config.json");
    alloy_model *m = (alloy_model *)1;
    alloy_status s = alloy_model_load(&m, v, 1, 0);
    EXPECT(s == ALLOY_STATUS_FORMAT && m == NULL, "%s = %s: status %s '%s'", key, value ? value : "(deleted)",
           alloy_status_name(s), alloy_last_error());
    EXPECT(says(cpath) && says(expect) && one_line(), "%s = %s: message '%s' lacks '%s'", key,
           value ? value : "(deleted)", alloy_last_error(), expect);
    if (s == ALLOY_STATUS_OK) alloy_model_destroy(m);
    alloy_free(cpath);
}

static void test_config_corrupt(void) {
    char *dir = copy_tmpdir();
    char *g = save_checkpoint(dir, "gpt2", "tiny-gpt2", 4);
    char *l = save_checkpoint(dir, "llama", "tiny-llama", 5);
    struct {
        const char *src, *key, *value, *expect;
    } cases[] = {
        {g, "model_type", "\"bert\"", "unsupported model_type \"bert\""},
        {g, "model_type", "7", "\"model_type\" must be a string"},
        {g, "model_type", NULL, "missing field \"model_type\""},
        {g, "n_embd", "66", "d_model 66 is not a multiple of n_head 4"},
        {g, "n_head", "0", "n_head 0 out of range"},
        {g, "n_layer", "-1", "\"n_layer\" out of range"},
        {g, "vocab_size", "-256", "\"vocab_size\" out of range"},
        {g, "vocab_size", "0", "vocab_size 0 out of range"},
        {g, "n_positions", "0", "max sequence length 0"},
        {g, "n_embd", "\"64\"", "\"n_embd\" must be a number"},
        {g, "n_layer", "2.5", "\"n_layer\" must be an integer"},
        {g, "n_layer", "true", "\"n_layer\" must be a number"},
        {g, "n_layer", NULL, "missing field \"n_layer\""},
        {g, "n_layer", "1e300", "\"n_layer\" must be an integer"},
        {g, "n_embd", "1073741824", "d_model 1073741824 out of range"},
        {g, "n_inner", "0", "d_ff 0 out of range"},
        {g, "tie_word_embeddings", "false", "tie_word_embeddings must be true"},
        {g, "tie_word_embeddings", "\"yes\"", "must be true or false"},
        {g, "layer_norm_epsilon", "0", "norm epsilon"},
        {g, "layer_norm_epsilon", "\"small\"", "\"layer_norm_epsilon\" must be a number"},
        {g, "activation_function", "\"relu\"", "activation_function"},
        {g, "alloy_tokenizer", "5", "alloy_tokenizer"},
        {g, "alloy_tokenizer", "\"a-very-long-tokenizer-name-beyond-32-bytes\"", "alloy_tokenizer"},
        {l, "num_key_value_heads", "3", "n_head 4 is not a multiple of n_kv_head 3"},
        {l, "num_key_value_heads", "0", "n_kv_head 0"},
        {l, "hidden_size", "66", "d_model 66 is not a multiple of n_head 4"},
        {l, "hidden_size", "60", "head dimension 15 must be even"},
        {l, "intermediate_size", "-5", "\"intermediate_size\" out of range"},
        {l, "num_attention_heads", "\"4\"", "\"num_attention_heads\" must be a number"},
        {l, "rope_theta", "0.5", "rope_theta"},
        {l, "rms_norm_eps", "-1e-5", "norm epsilon"},
        {l, "hidden_act", "\"gelu\"", "hidden_act must be \"silu\""},
        {l, "head_dim", "8", "head_dim must equal"},
        {l, "head_dim", "1e300", "head_dim must equal"},
        {l, "head_dim", "1000000000", "head_dim must equal"},
        {l, "head_dim", "16.5", "head_dim must equal"},
        {l, "max_position_embeddings", NULL, "missing field \"max_position_embeddings\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "c%zu", i);
        char *v = variant(dir, name, cases[i].src, cases[i].key, cases[i].value);
        expect_config_rejected(v, cases[i].key, cases[i].value, cases[i].expect);
        alloy_free(v);
    }
    // n_embd so large that the default n_inner (4·n_embd) would overflow int
    const char *huge[] = {"1073741824", "300000000"};
    for (int i = 0; i < 2; i++) {
        char name[32], expect[64];
        snprintf(name, sizeof name, "huge%d", i);
        snprintf(expect, sizeof expect, "d_model %s out of range", huge[i]);
        char *v = variant2(dir, name, g, "n_embd", huge[i], "n_inner", NULL);
        expect_config_rejected(v, "n_embd (no n_inner)", huge[i], expect);
        alloy_free(v);
    }
    // config.json that is not a JSON object at all
    const char *texts[] = {"", "[1, 2]", "{\"model_type\": \"gpt2\",", "null", "\"gpt2\""};
    char *v = variant(dir, "raw", g, "n_layer", "2");
    char *cpath = alloy_path_join(v, "config.json");
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        write_bytes(cpath, texts[i], strlen(texts[i]));
        alloy_model *m = (alloy_model *)1;
        alloy_status s = alloy_model_load(&m, v, 1, 0);
        EXPECT(s == ALLOY_STATUS_FORMAT && m == NULL && says(cpath) && one_line(), "config '%s': %s '%s'", texts[i],
               alloy_status_name(s), alloy_last_error());
    }
    // the unchanged variant loads (the harness above is not rejecting everything)
    alloy_free(v);
    alloy_free(cpath);
    const char *fine[][5] = {
        {"llama", "rope_theta", "10000.0", NULL, NULL},
        {"llama", "head_dim", "16", NULL, NULL},
        {"llama", "head_dim", "null", NULL, NULL},
        {"gpt2", "n_inner", NULL, NULL, NULL}, // absent: 4·n_embd = 256, as saved
        {"gpt2", "n_inner", "null", "activation_function", "\"gelu_pytorch_tanh\""},
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "fine%zu", i);
        v = variant2(dir, name, strcmp(fine[i][0], "gpt2") ? l : g, fine[i][1], fine[i][2], fine[i][3], fine[i][4]);
        alloy_model *m = NULL;
        EXPECT(alloy_model_load(&m, v, 1, 0) == ALLOY_STATUS_OK, "%s %s = %s must load: %s", fine[i][0], fine[i][1],
               fine[i][2] ? fine[i][2] : "(deleted)", alloy_last_error());
        alloy_model_destroy(m);
        alloy_free(v);
    }
    alloy_free(g);
    alloy_free(l);
    alloy_free(dir);
}

static void test_model_failed_save(void) {
    char *dir = copy_tmpdir();
    alloy_model *m = make_model("tiny-llama", 6);
    REQUIRE(m, "create");
    char *good = alloy_path_join(dir, "good");
    REQUIRE(alloy_model_save(m, good) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *gw = alloy_path_join(good, "model.safetensors"), *gc = alloy_path_join(good, "config.json");
    size_t nw, nc;
    uint8_t *w = read_bytes(gw, &nw), *c = read_bytes(gc, &nc);
    REQUIRE(w && c, "read");

    alloy_model_init_weights(m, 7); // different weights for the failing saves
    // the target is an existing regular file
    char *file = alloy_path_join(dir, "a-file");
    write_bytes(file, "keep", 4);
    alloy_status s = alloy_model_save(m, file);
    EXPECT(s == ALLOY_STATUS_IO && says(file) && one_line(), "save onto a file: %s '%s'", alloy_status_name(s),
           alloy_last_error());
    EXPECT(same_file(file, (const uint8_t *)"keep", 4), "the file in the way must be untouched");
    // the target is under a regular file
    char *under = alloy_path_join(file, "ck");
    s = alloy_model_save(m, under);
    EXPECT(s == ALLOY_STATUS_IO && says(file), "save under a file: %s '%s'", alloy_status_name(s), alloy_last_error());
    // the target folder holds a folder where model.safetensors should go
    char *blocked = alloy_path_join(dir, "blocked"), *bw = alloy_path_join(blocked, "model.safetensors");
    REQUIRE(alloy_mkdir_p(bw) == ALLOY_STATUS_OK, "mkdir");
    s = alloy_model_save(m, blocked);
    EXPECT(s == ALLOY_STATUS_IO && says(bw), "save over a folder named model.safetensors: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    EXPECT(harness_count_entries(blocked) == 1 && alloy_is_dir(bw), "the blocked save left %d entries", harness_count_entries(blocked));
    // the good checkpoint elsewhere is untouched by the failed saves and loads as the first weights
    EXPECT(same_file(gw, w, nw) && same_file(gc, c, nc) && harness_count_entries(good) == 2,
           "failed saves elsewhere changed the good checkpoint");
    alloy_model *l = NULL, *first = make_model("tiny-llama", 6);
    REQUIRE(first, "create");
    s = alloy_model_load(&l, good, 1, 0);
    EXPECT(s == ALLOY_STATUS_OK && model_diff(l, first) == 0, "the good checkpoint: %s", alloy_last_error());
    alloy_model_destroy(l);
    alloy_model_destroy(first);
    // out of memory at each allocation of a save over the good checkpoint: each file stays
    // whole (old or new: the two files are replaced one after the other, not as a pair), no
    // temporary file is left, and the folder loads
    char *fresh = alloy_path_join(dir, "fresh"), *fw = alloy_path_join(fresh, "model.safetensors");
    REQUIRE(alloy_model_save(m, fresh) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    size_t nw2;
    uint8_t *w2 = read_bytes(fw, &nw2);
    REQUIRE(w2, "read");
    int k, fails = 0;
    for (k = 1; k < 40; k++) {
        alloy_alloc_fail_after(k);
        s = alloy_model_save(m, good);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) break;
        fails++;
        EXPECT(s == ALLOY_STATUS_NOMEM, "save, allocation %d: %s '%s'", k, alloy_status_name(s), alloy_last_error());
        EXPECT(harness_count_entries(good) == 2, "save, allocation %d: %d files", k, harness_count_entries(good));
        EXPECT((same_file(gw, w, nw) || same_file(gw, w2, nw2)) && same_file(gc, c, nc),
               "save, allocation %d: a file of the checkpoint is neither the old nor the new one", k);
        alloy_model *any = NULL;
        EXPECT(alloy_model_load(&any, good, 1, 8) == ALLOY_STATUS_OK, "save, allocation %d: %s", k, alloy_last_error());
        alloy_model_destroy(any);
    }
    free(w2);
    alloy_free(fw);
    alloy_free(fresh);
    EXPECT(fails >= 2 && k < 40, "%d failed saves before one succeeded", fails);
    // the save that finally succeeded is what loads
    l = NULL;
    s = alloy_model_load(&l, good, 1, 0);
    EXPECT(s == ALLOY_STATUS_OK && model_diff(l, m) == 0, "after the successful save: %s", alloy_last_error());
    alloy_model_destroy(l);
    free(w);
    free(c);
    alloy_free(gw);
    alloy_free(gc);
    alloy_free(file);
    alloy_free(under);
    alloy_free(blocked);
    alloy_free(bw);
    alloy_free(good);
    alloy_model_destroy(m);
    alloy_free(dir);
}

/* A file as transformers' GPT2LMHeadModel writes it: causal-mask buffers (.attn.bias,
 * .attn.masked_bias) and a copy of the tied lm_head.weight, in another order; then a Llama
 * file in BF16 with rotary_emb.inv_freq buffers. */
static void test_model_hf_extras(void) {
    char *dir = copy_tmpdir();
    alloy_model *m = make_model("tiny-gpt2", 8);
    REQUIRE(m, "create");
    int L = m->config.n_layer, T = m->config.max_seq_len, n = m->n_tensors;
    int total = n + 2 * L + 1;
    alloy_st_entry *e = calloc((size_t)total, sizeof *e);
    char (*names)[64] = calloc((size_t)(2 * L), 64);
    float *mask = malloc(sizeof(float) * (size_t)T * (size_t)T);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) mask[(size_t)i * T + j] = j <= i;
    float masked = -1e4f;
    int k = 0;
    e[k++] = (alloy_st_entry){"lm_head.weight", ALLOY_DTYPE_F32, 2, {m->tensors[0].shape[0], m->tensors[0].shape[1]},
                              m->params_memory + m->tensors[0].offset};
    for (int i = n - 1; i >= 0; i--) { // reverse order
        const alloy_tensor_info *t = &m->tensors[i];
        e[k++] = (alloy_st_entry){t->name, ALLOY_DTYPE_F32, t->ndim, {t->shape[0], t->shape[1]},
                                  m->params_memory + t->offset};
    }
    for (int l = 0; l < L; l++) {
        snprintf(names[2 * l], 64, "transformer.h.%d.attn.bias", l);
        snprintf(names[2 * l + 1], 64, "transformer.h.%d.attn.masked_bias", l);
        e[k++] = (alloy_st_entry){names[2 * l], ALLOY_DTYPE_F32, 4, {1, 1, T, T}, mask};
        e[k++] = (alloy_st_entry){names[2 * l + 1], ALLOY_DTYPE_F32, 0, {0}, &masked};
    }
    ALLOY_ASSERT(k == total);
    char *path = alloy_path_join(dir, "hf.safetensors");
    const char *meta[] = {"format", "pt", NULL};
    REQUIRE(alloy_safetensors_write(path, e, total, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_config c = m->config;
    alloy_model *l = NULL;
    REQUIRE(alloy_model_create(&l, &c, 1, 8) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_status s = alloy_model_load_weights(l, path);
    EXPECT(s == ALLOY_STATUS_OK, "HF GPT-2 file: %s", alloy_last_error());
    EXPECT(model_diff(m, l) == 0, "HF GPT-2 file: weights differ");

    // an extra tensor the family does not know is refused
    alloy_st_entry *e2 = calloc((size_t)total + 1, sizeof *e2);
    memcpy(e2, e, sizeof *e * (size_t)total);
    e2[total] = (alloy_st_entry){"transformer.h.0.attn.rotary", ALLOY_DTYPE_F32, 0, {0}, &masked};
    REQUIRE(alloy_safetensors_write(path, e2, total + 1, meta) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    s = alloy_model_load_weights(l, path);
    EXPECT(s == ALLOY_STATUS_MISMATCH && says("\"transformer.h.0.attn.rotary\"") && says(path),
           "unknown extra tensor: %s '%s'", alloy_status_name(s), alloy_last_error());
    // a missing tensor is refused
    // (e + 2: no lm_head, no ln_f.bias, the last of the table; no buffers)
    s = alloy_safetensors_write(path, e + 2, total - 2 - 2 * L, meta);
    REQUIRE(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
    s = alloy_model_load_weights(l, path);
    EXPECT(s == ALLOY_STATUS_MISMATCH && says("missing tensor \"transformer.ln_f.bias\""), "missing tensor: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    free(e2);
    free(e);
    free(names);
    free(mask);
    alloy_model_destroy(l);
    alloy_model_destroy(m);

    // Llama in BF16 with inv_freq buffers: loads as the BF16 values
    m = make_model("tiny-llama", 9);
    REQUIRE(m, "create");
    n = m->n_tensors;
    L = m->config.n_layer;
    int hd = alloy_config_head_dim(&m->config);
    e = calloc((size_t)(n + L), sizeof *e);
    uint16_t *half = malloc(sizeof(uint16_t) * m->num_params);
    float *inv = malloc(sizeof(float) * (size_t)(hd / 2));
    for (int i = 0; i < hd / 2; i++) inv[i] = powf(10000.0f, -2.0f * (float)i / (float)hd);
    char (*inames)[80] = calloc((size_t)L, 80);
    for (size_t i = 0; i < m->num_params; i++) {
        uint32_t bits;
        memcpy(&bits, &m->params_memory[i], 4);
        half[i] = (uint16_t)(bits >> 16); // truncation: exactly representable back
        bits &= 0xffff0000u;
        memcpy(&m->params_memory[i], &bits, 4);
    }
    for (int i = 0; i < n; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        e[i] = (alloy_st_entry){t->name, ALLOY_DTYPE_BF16, t->ndim, {t->shape[0], t->shape[1]}, half + t->offset};
    }
    for (int i = 0; i < L; i++) {
        snprintf(inames[i], 80, "model.layers.%d.self_attn.rotary_emb.inv_freq", i);
        e[n + i] = (alloy_st_entry){inames[i], ALLOY_DTYPE_F32, 1, {hd / 2}, inv};
    }
    REQUIRE(alloy_safetensors_write(path, e, n + L, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    c = m->config;
    REQUIRE(alloy_model_create(&l, &c, 1, 8) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    s = alloy_model_load_weights(l, path);
    EXPECT(s == ALLOY_STATUS_OK, "BF16 Llama file: %s", alloy_last_error());
    EXPECT(model_diff(m, l) == 0, "BF16 Llama file: weights differ from the BF16 values");
    free(inames);
    free(inv);
    free(half);
    free(e);
    alloy_model_destroy(l);
    alloy_model_destroy(m);
    alloy_free(path);
    alloy_free(dir);
}

/* ---- model paths and the checkpoint object ------------------------------------------------ */

/* Writes text to dir/name. */
static void write_text(const char *dir, const char *name, const char *text) {
    char *p = alloy_path_join(dir, name);
    write_bytes(p, text, strlen(text));
    alloy_free(p);
}

/* A byte-level BPE of `vocab` tokens learned from text, saved as dir/tokenizer.json. */
static void write_bpe(const char *dir, const char *text, int vocab) {
    alloy_bpe_train_options o = {.vocab_size = vocab, .min_frequency = 2, .quiet = true};
    alloy_bpe_trainer *tr;
    alloy_tokenizer *tok;
    ALLOY_ASSERT(alloy_bpe_trainer_create(&tr, &o) == ALLOY_STATUS_OK);
    for (int i = 0; i < 50; i++) ALLOY_ASSERT(alloy_bpe_trainer_feed(tr, text, strlen(text)) == ALLOY_STATUS_OK);
    ALLOY_ASSERT(alloy_bpe_trainer_finish(tr, &tok) == ALLOY_STATUS_OK);
    alloy_bpe_trainer_destroy(tr);
    char *p = alloy_path_join(dir, "tokenizer.json");
    ALLOY_ASSERT(alloy_tokenizer_save(tok, p) == ALLOY_STATUS_OK);
    alloy_tokenizer_destroy(tok);
    alloy_free(p);
}

/* Opens path: the status, and *dir the folder it resolved to (alloy_free; NULL on failure). */
static alloy_status open_dir(const char *path, char **dir, bool *from_run) {
    alloy_checkpoint *ck;
    alloy_status s = alloy_checkpoint_open(&ck, path);
    *dir = s ? NULL : alloy_strdup(ck->dir);
    if (!s && from_run) *from_run = ck->from_run;
    alloy_checkpoint_close(ck);
    return s;
}

static void test_checkpoint_paths(void) {
    char *dir = copy_tmpdir();
    char *g = save_checkpoint(dir, "plain", "tiny-gpt2", 3);
    char *got = NULL;
    bool from_run = true;
    // a checkpoint folder, and its own files
    EXPECT(!open_dir(g, &got, &from_run) && !strcmp(got, g) && !from_run, "checkpoint folder: %s", alloy_last_error());
    alloy_free(got);
    static const char *const own[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *f = alloy_path_join(g, own[i]);
        EXPECT(!open_dir(f, &got, &from_run) && !strcmp(got, g) && !from_run, "%s: %s", own[i], alloy_last_error());
        alloy_free(got);
        alloy_free(f);
    }
    // a run folder: `latest` names checkpoints/step-N
    char *run = alloy_path_join(dir, "run"), *ckdir = alloy_path_join(run, "checkpoints");
    alloy_mkdir_p(ckdir);
    char *step = save_checkpoint(ckdir, "step-00000007", "tiny-gpt2", 3);
    write_text(run, "latest", "checkpoints/step-00000007\n");
    EXPECT(!open_dir(run, &got, &from_run) && !strcmp(got, step) && from_run, "run folder: %s", alloy_last_error());
    alloy_free(got);
    char *r = NULL;
    EXPECT(!alloy_checkpoint_resolve(run, &r) && !strcmp(r, step), "resolve of a run folder: %s", alloy_last_error());
    alloy_free(r);
    // a Hugging Face folder with an index of shards
    char *hf = alloy_path_join(dir, "hf"), *w = alloy_path_join(g, "model.safetensors");
    alloy_mkdir_p(hf);
    size_t n;
    uint8_t *bytes = read_bytes(w, &n);
    char *shard = alloy_path_join(hf, "model-00001-of-00001.safetensors"), *c = alloy_path_join(g, "config.json");
    write_bytes(shard, bytes, n);
    free(bytes);
    bytes = read_bytes(c, &n);
    char *hc = alloy_path_join(hf, "config.json");
    write_bytes(hc, bytes, n);
    free(bytes);
    write_text(hf, "model.safetensors.index.json", "{\"weight_map\": {\"transformer.wte.weight\": \"model-00001-of-00001.safetensors\"}}");
    alloy_checkpoint *ck = NULL;
    alloy_status s = alloy_checkpoint_open(&ck, hf);
    EXPECT(!s && !strcmp(ck->dir, hf) && ck->weights.n == 1 && !ck->tokenizer_file && !ck->chat_template[0],
           "an indexed folder: %s", alloy_last_error());
    // the fingerprint is the weights' bytes: the shard holds plain's bytes
    alloy_checkpoint *a = NULL, *b = NULL, *other = NULL;
    char *g2 = save_checkpoint(dir, "other", "tiny-gpt2", 4);
    uint64_t fa = 0, fb = 1, fh = 2, fo = 3;
    EXPECT(!alloy_checkpoint_open(&a, g) && !alloy_checkpoint_open(&b, run) && !alloy_checkpoint_open(&other, g2),
           "open: %s", alloy_last_error());
    if (a && b && other && ck) {
        alloy_checkpoint_fingerprint(a, &fa);
        alloy_checkpoint_fingerprint(b, &fb);
        alloy_checkpoint_fingerprint(ck, &fh);
        alloy_checkpoint_fingerprint(other, &fo);
        EXPECT(fa == fb && fa == fh && fa != fo, "fingerprints %llx %llx %llx %llx", (unsigned long long)fa,
               (unsigned long long)fb, (unsigned long long)fh, (unsigned long long)fo);
    }
    alloy_checkpoint_close(a);
    alloy_checkpoint_close(b);
    alloy_checkpoint_close(other);
    alloy_checkpoint_close(ck);
    // the chat template recorded in config.json
    char *chat = variant(dir, "chat", g, "chat_template", "\"chatml\"");
    ck = NULL;
    EXPECT(!alloy_checkpoint_open(&ck, chat) && !strcmp(ck->chat_template, "chatml"), "chat template: %s",
           ck ? ck->chat_template : alloy_last_error());
    alloy_checkpoint_close(ck);
    // a tokenizer through a model path: the byte tokenizer its config names, from the run folder
    char *named = variant(ckdir, "step-00000008", step, "alloy_tokenizer", "\"bytes\"");
    write_text(run, "latest", "checkpoints/step-00000008\n");
    alloy_tokenizer *tok = NULL;
    s = alloy_checkpoint_load_tokenizer(run, &tok);
    EXPECT(!s && tok && !strcmp(alloy_tokenizer_name(tok), "bytes"), "tokenizer of a run folder: %s", alloy_last_error());
    alloy_tokenizer_destroy(tok);
    s = alloy_checkpoint_load_tokenizer(g, &tok); // names none, has none
    EXPECT(s == ALLOY_STATUS_USAGE && says(g) && says("names no tokenizer") && one_line(), "no tokenizer: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    alloy_free(named);
    alloy_free(chat);
    alloy_free(g2);
    alloy_free(hc);
    alloy_free(c);
    alloy_free(shard);
    alloy_free(w);
    alloy_free(hf);
    alloy_free(step);
    alloy_free(ckdir);
    alloy_free(run);
    alloy_free(g);
    alloy_free(dir);
}

/* A checkpoint folder <dir>/<name> of vocabulary V, with a BPE learned from text (NULL: none). */
static char *save_vocab(const char *dir, const char *name, int V, const char *text) {
    alloy_config cfg;
    ALLOY_ASSERT(alloy_config_preset(&cfg, "tiny-gpt2", V) == ALLOY_STATUS_OK);
    alloy_model *m;
    ALLOY_ASSERT(alloy_model_create(&m, &cfg, 1, 16) == ALLOY_STATUS_OK);
    alloy_model_init_weights(m, 1);
    char *ck = alloy_path_join(dir, name);
    ALLOY_ASSERT(alloy_model_save(m, ck) == ALLOY_STATUS_OK);
    alloy_model_destroy(m);
    if (text) write_bpe(ck, text, V);
    return ck;
}

static void test_checkpoint_compatible(void) {
    char *dir = copy_tmpdir();
    char *a = save_vocab(dir, "a", 264, "the cat sat on the mat, the cat sat on the mat. ");
    char *a2 = save_vocab(dir, "a2", 264, "the cat sat on the mat, the cat sat on the mat. ");
    char *b = save_vocab(dir, "b", 264, "zzyzx quux zzyzx quux plugh xyzzy plugh xyzzy. ");
    char *none = save_vocab(dir, "none", 264, NULL), *none2 = save_vocab(dir, "none2", 264, NULL);
    char *small = save_vocab(dir, "small", 256, NULL);
    alloy_checkpoint *ca, *ca2, *cb, *cn, *cn2, *cs;
    REQUIRE(!alloy_checkpoint_open(&ca, a) && !alloy_checkpoint_open(&ca2, a2) && !alloy_checkpoint_open(&cb, b) &&
                !alloy_checkpoint_open(&cn, none) && !alloy_checkpoint_open(&cn2, none2) && !alloy_checkpoint_open(&cs, small),
            "open: %s", alloy_last_error());
    char why[1024];
    EXPECT(alloy_checkpoint_compatible(ca, ca2, why, sizeof why), "the same tokenizer refused: %s", why);
    EXPECT(alloy_checkpoint_compatible(cn, cn2, why, sizeof why), "two without a tokenizer refused: %s", why);
    bool ok = alloy_checkpoint_compatible(ca, cb, why, sizeof why);
    EXPECT(!ok && strstr(why, "b/tokenizer.json differs from") && strstr(why, "a/tokenizer.json") && !strchr(why, '\n'),
           "two tokenizers: '%s'", why);
    ok = alloy_checkpoint_compatible(cn, ca, why, sizeof why);
    EXPECT(!ok && strstr(why, "none has no tokenizer.json but") && strstr(why, "a/tokenizer.json"), "one without: '%s'", why);
    ok = alloy_checkpoint_compatible(cn, cs, why, sizeof why);
    EXPECT(!ok && strstr(why, "vocabulary of 256") && strstr(why, "264"), "vocabularies: '%s'", why);
    const alloy_tokenizer *ta, *tb;
    EXPECT(!alloy_checkpoint_tokenizer(ca, &ta) && !alloy_checkpoint_tokenizer(ca2, &tb) && ta && tb &&
               alloy_tokenizer_hash(ta) == alloy_tokenizer_hash(tb),
           "one identity for one tokenizer");
    alloy_checkpoint_close(ca);
    alloy_checkpoint_close(ca2);
    alloy_checkpoint_close(cb);
    alloy_checkpoint_close(cn);
    alloy_checkpoint_close(cn2);
    alloy_checkpoint_close(cs);
    alloy_free(a);
    alloy_free(a2);
    alloy_free(b);
    alloy_free(none);
    alloy_free(none2);
    alloy_free(small);
    alloy_free(dir);
}

static void test_checkpoint_bad_paths(void) {
    char *dir = copy_tmpdir();
    char *g = save_checkpoint(dir, "good", "tiny-gpt2", 3);
    alloy_checkpoint *ck = (alloy_checkpoint *)1;
    // a missing folder
    char *missing = alloy_path_join(dir, "missing");
    alloy_status s = alloy_checkpoint_open(&ck, missing);
    EXPECT(s == ALLOY_STATUS_IO && !ck && says(missing) && says("no such folder") && one_line(), "missing: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    // a run folder whose latest names nothing, or climbs out
    char *run = alloy_path_join(dir, "run");
    alloy_mkdir_p(run);
    write_text(run, "latest", "checkpoints/step-00000009\n");
    s = alloy_checkpoint_open(&ck, run);
    EXPECT(s == ALLOY_STATUS_IO && says("latest: names") && says("step-00000009, which does not exist") && one_line(),
           "latest naming nothing: %s '%s'", alloy_status_name(s), alloy_last_error());
    write_text(run, "latest", "../good\n");
    s = alloy_checkpoint_open(&ck, run);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("latest: does not name a checkpoint folder") && one_line(), "latest with ..: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    // a folder that is neither, a file that is no checkpoint's
    char *empty = alloy_path_join(dir, "empty");
    alloy_mkdir_p(empty);
    s = alloy_checkpoint_open(&ck, empty);
    EXPECT(s == ALLOY_STATUS_IO && says(empty) && says("no checkpoint here") && one_line(), "empty: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    write_text(dir, "notes.txt", "hello");
    char *notes = alloy_path_join(dir, "notes.txt");
    s = alloy_checkpoint_open(&ck, notes);
    EXPECT(s == ALLOY_STATUS_IO && says(notes) && says("not a folder") && one_line(), "a file: %s '%s'", alloy_status_name(s),
           alloy_last_error());
    // a malformed config.json, a chat template that is not a string
    char *bad = variant(dir, "bad", g, "n_layer", NULL), *cfg = alloy_path_join(bad, "config.json");
    write_text(bad, "config.json", "{\"model_type\": \"gpt2\", ");
    s = alloy_checkpoint_open(&ck, bad);
    EXPECT(s == ALLOY_STATUS_FORMAT && says(cfg) && one_line(), "malformed config.json: %s '%s'", alloy_status_name(s),
           alloy_last_error());
    char *tmpl = variant(dir, "tmpl", g, "chat_template", "3");
    s = alloy_checkpoint_open(&ck, tmpl);
    EXPECT(s == ALLOY_STATUS_FORMAT && says("chat_template") && says(tmpl) && one_line(), "chat_template 3: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    // config.json without weights
    char *bare = alloy_path_join(dir, "bare");
    alloy_mkdir_p(bare);
    char *gc = alloy_path_join(g, "config.json");
    size_t n;
    uint8_t *bytes = read_bytes(gc, &n);
    char *bc = alloy_path_join(bare, "config.json");
    write_bytes(bc, bytes, n);
    free(bytes);
    s = alloy_checkpoint_open(&ck, bare);
    EXPECT(s == ALLOY_STATUS_IO && says(bare) && says("model.safetensors") && one_line(), "no weights: %s '%s'",
           alloy_status_name(s), alloy_last_error());
    alloy_free(bc);
    alloy_free(gc);
    alloy_free(bare);
    alloy_free(tmpl);
    alloy_free(cfg);
    alloy_free(bad);
    alloy_free(notes);
    alloy_free(empty);
    alloy_free(run);
    alloy_free(missing);
    alloy_free(g);
    alloy_free(dir);
}

int main(void) {
    RUN(test_model_roundtrip);
    RUN(test_model_mismatch);
    RUN(test_model_missing_files);
    RUN(test_config_corrupt);
    RUN(test_model_failed_save);
    RUN(test_model_hf_extras);
    RUN(test_checkpoint_paths);
    RUN(test_checkpoint_compatible);
    RUN(test_checkpoint_bad_paths);
    return harness_exit();
}
