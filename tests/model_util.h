/*
 * model_util.h — the tiny model configurations that several tests build their models from.
 *
 *   tiny_config(family, V, T)   the small GPT-2 / Llama pair of test_model.c and test_align.c:
 *                               2 layers, 4 heads, C 32; GPT-2 tied with F 128, Llama with
 *                               2 KV heads (GQA), F 88 and an untied head
 *   odd_llama_config(T)         test_model.c's and test_infer.c's awkward Llama: C 60 (not a
 *                               multiple of 8), head_dim 10 (rotary pairs (i, i+5)), 6 query
 *                               heads over 2 KV heads, F 100, tied, and an epsilon (2e-6) and
 *                               theta (500) that readers must take from config.json
 *
 * Configurations that only one test uses stay in that test (test_infer.c's C 64 pair,
 * test_llmc.c's llm.c shapes, test_moe.c's experts).
 */
#ifndef ALLOY_TEST_MODEL_UTIL_H
#define ALLOY_TEST_MODEL_UTIL_H

#include "alloy/alloy.h"

static inline alloy_config tiny_config(alloy_family f, int V, int T) {
    alloy_config c = {.family = f, .vocab_size = V, .max_seq_len = T, .n_layer = 2, .n_head = 4,
                      .n_kv_head = f == ALLOY_FAMILY_GPT2 ? 4 : 2, .d_model = 32, .d_ff = f == ALLOY_FAMILY_GPT2 ? 128 : 88,
                      .norm_eps = 1e-5, .rope_theta = 10000.0, .tie_embeddings = f == ALLOY_FAMILY_GPT2};
    return c;
}

static inline alloy_config odd_llama_config(int T) {
    alloy_config c = {.family = ALLOY_FAMILY_LLAMA, .vocab_size = 61, .max_seq_len = T, .n_layer = 2,
                      .n_head = 6, .n_kv_head = 2, .d_model = 60, .d_ff = 100, .norm_eps = 2e-6,
                      .rope_theta = 500.0, .tie_embeddings = true};
    return c;
}

#endif /* ALLOY_TEST_MODEL_UTIL_H */
