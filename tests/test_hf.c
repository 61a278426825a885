/*
 * test_hf.c — model folders as the Hugging Face hub stores them, imported by alloy_model_load.
 *
 * tests/reference/hf_hub.py (PyTorch, the twin of tests/reference/twin.py) writes folders the
 * way the hub does — GPT-2 as GPT2Model files (names without "transformer.", no lm_head, the
 * causal-mask buffers), Llama with GQA and an untied head, weights in F32, F16 or BF16, one file
 * or shards with model.safetensors.index.json — and the logits it computes from them. alloy
 * loads each folder and its logits must match to 1e-5 of their scale. Then broken folders
 * (a shard missing, a bad index, only pytorch_model.bin, rope_scaling) must be refused with a
 * message that names the problem. Needs PYTHON (harness.h) with torch: the cases skip without it.
 */
#include "alloy/io.h"
#include "harness.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

/* Writes a hub folder with hf_hub.py and its logits beside it (path in logits); false on failure. */
static bool write_hub(const char *dir, const char *family, const char *dtype, int shards, char *logits,
                      size_t size) {
    snprintf(logits, size, "%s.logits.safetensors", dir);
    return harness_reference("torch, numpy", "hf_hub.py", "--family %s --dtype %s --shards %d --out '%s' --logits '%s'",
                             family, dtype, shards, dir, logits) == 0;
}

static void check_case(const char *family, const char *dtype, int shards) {
    char dir[512], logits[600];
    snprintf(dir, sizeof dir, "%s/%s-%s-%d", harness_tmpdir(), family, dtype, shards);
    REQUIRE(write_hub(dir, family, dtype, shards, logits, sizeof logits), "hf_hub.py failed for %s", dir);
    alloy_safetensors *ref;
    REQUIRE(alloy_safetensors_open(&ref, logits) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const alloy_st_tensor *tt = alloy_safetensors_find(ref, "tokens"), *tl = alloy_safetensors_find(ref, "logits");
    REQUIRE(tt && tl && tt->ndim == 2 && tl->ndim == 3, "reference file lacks tokens/logits");
    int B = (int)tt->shape[0], T = (int)tt->shape[1], V = (int)tl->shape[2];
    int32_t *tokens = malloc(tt->nbytes);
    float *want = malloc(sizeof(float) * tl->numel);
    memcpy(tokens, tt->data, tt->nbytes);
    alloy_st_tensor_to_f32(ref, tl, want);
    alloy_model *m = NULL;
    alloy_status s = alloy_model_load(&m, dir, B, T);
    EXPECT(s == ALLOY_STATUS_OK, "%s: %s", dir, alloy_last_error());
    if (!s) {
        EXPECT(m->config.vocab_size == V, "vocab %d vs %d", m->config.vocab_size, V);
        s = alloy_model_forward(m, tokens, B, T);
        EXPECT(s == ALLOY_STATUS_OK, "%s", alloy_last_error());
        double scale = 0, err = 0;
        for (size_t i = 0; i < tl->numel; i++) {
            scale = fmax(scale, fabs(want[i]));
            err = fmax(err, fabs((double)alloy_model_logits(m)[i] - want[i]));
        }
        printf("# %s %s, %d shard(s): max |logit error| %.2e of scale %.2f\n", family, dtype, shards, err / scale, scale);
        EXPECT(err <= 1e-5 * scale, "%s %s: logits differ by %.3g (scale %.3g)", family, dtype, err, scale);
    }
    alloy_model_destroy(m);
    alloy_safetensors_close(ref);
    free(tokens);
    free(want);
}

static void test_hub_gpt2(void) {
    NEED_PYTHON("torch, numpy");
    check_case("gpt2", "f32", 1);
    check_case("gpt2", "f16", 1);
    check_case("gpt2", "f32", 3);
}

static void test_hub_llama(void) {
    NEED_PYTHON("torch, numpy");
    check_case("llama", "bf16", 2);
    check_case("llama", "f16", 1);
    check_case("llama", "f32", 4);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Loading dir must fail with a message containing `expect`. */
static void expect_refused(const char *dir, const char *expect) {
    alloy_model *m = NULL;
    alloy_status s = alloy_model_load(&m, dir, 1, 8);
    EXPECT(s != ALLOY_STATUS_OK && !m, "%s loaded", dir);
    EXPECT(s == ALLOY_STATUS_OK || strstr(alloy_last_error(), expect), "%s: message \"%s\" lacks \"%s\"", dir,
           alloy_last_error(), expect);
    alloy_model_destroy(m);
}

static void test_hub_broken(void) {
    NEED_PYTHON("torch, numpy");
    char dir[512], logits[600], path[700], cmd[4096];
    snprintf(dir, sizeof dir, "%s/broken", harness_tmpdir());
    REQUIRE(write_hub(dir, "llama", "f32", 2, logits, sizeof logits), "hf_hub.py failed");
    // a shard missing
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(cmd, sizeof cmd, "mv '%s' '%s.away'", path, path);
    REQUIRE(system(cmd) == 0, "mv");
    expect_refused(dir, "model-00002-of-00002.safetensors");
    snprintf(cmd, sizeof cmd, "mv '%s.away' '%s'", path, path);
    REQUIRE(system(cmd) == 0, "mv back");
    // an index naming a file outside the folder, an index without a map, a tensor missing
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    cJSON *idx = NULL;
    REQUIRE(alloy_json_read_file(path, &idx) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *good = cJSON_PrintUnformatted(idx);
    cJSON *map = cJSON_GetObjectItem(idx, "weight_map");
    cJSON_ReplaceItemInObject(map, "model.norm.weight", cJSON_CreateString("../model-00001-of-00002.safetensors"));
    char *bad = cJSON_PrintUnformatted(idx);
    write_text(path, bad);
    expect_refused(dir, "bad file name");
    write_text(path, "{\"metadata\": {}}");
    expect_refused(dir, "weight_map");
    write_text(path, "{\"weight_map\": {\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}");
    expect_refused(dir, "missing tensor");
    write_text(path, good);
    alloy_model *m = NULL;
    EXPECT(alloy_model_load(&m, dir, 1, 8) == ALLOY_STATUS_OK, "restored index: %s", alloy_last_error());
    alloy_model_destroy(m);
    free(good);
    free(bad);
    cJSON_Delete(idx);
    // rope_scaling and biases are refused, not ignored
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *cfg = NULL;
    REQUIRE(alloy_json_read_file(path, &cfg) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *cfg_good = cJSON_PrintUnformatted(cfg);
    cJSON_ReplaceItemInObject(cfg, "rope_scaling", cJSON_CreateRaw("{\"type\": \"linear\", \"factor\": 2.0}"));
    char *cfg_bad = cJSON_PrintUnformatted(cfg);
    write_text(path, cfg_bad);
    expect_refused(dir, "rope_scaling");
    cJSON_ReplaceItemInObject(cfg, "rope_scaling", cJSON_CreateNull());
    cJSON_ReplaceItemInObject(cfg, "attention_bias", cJSON_CreateTrue());
    free(cfg_bad);
    cfg_bad = cJSON_PrintUnformatted(cfg);
    write_text(path, cfg_bad);
    expect_refused(dir, "attention_bias");
    write_text(path, cfg_good);
    free(cfg_good);
    free(cfg_bad);
    cJSON_Delete(cfg);
    // no weights at all but a pickle
    char only_bin[600];
    snprintf(only_bin, sizeof only_bin, "%s/only-bin", harness_tmpdir());
    mkdir(only_bin, 0755);
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/' && echo pickle > '%s/pytorch_model.bin'", dir, only_bin, only_bin);
    REQUIRE(system(cmd) == 0, "cp");
    expect_refused(only_bin, "pytorch_model.bin");
}

int main(void) {
    RUN(test_hub_gpt2);
    RUN(test_hub_llama);
    RUN(test_hub_broken);
    return harness_exit();
}
