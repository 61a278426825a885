/*
 * ppo_state.c — what a PPO checkpoint holds besides the run's own (alloy/train.h): the policy as
 * a language model any verb loads, the chat template, the value head and the tokenizer; and in
 * trainer_state.json the position in the prompts, the KL coefficient (exactly), the prompts'
 * fingerprint and the options to resume with.
 */
#include "alloy/io.h"
#include "alloy/options.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

alloy_status ppo_state_save(void *ctx, cJSON *j) {
    ppo_run *r = ctx;
    char buf[64];
    snprintf(buf, sizeof buf, "%a", r->kl.value); // exact
    cJSON_AddStringToObject(j, "kl_coef", buf);
    cJSON_AddNumberToObject(j, "kl_coef_value", r->kl.value);
    return alloy_run_state_put_data(j, r->epoch, r->cursor, r->data.fingerprint, alloy_options_save(alloy_ppo_schema(), &r->opt));
}

alloy_status ppo_state_load(void *ctx, const cJSON *j, const char *what) {
    ppo_run *r = ctx;
    const char *klc = NULL;
    alloy_status s = alloy_run_state_get_data(j, what, r->opt.prompts_path, r->data.fingerprint, r->data.n_examples, &r->epoch,
                                              &r->cursor);
    if (!s) s = alloy_json_get_string(j, "kl_coef", what, &klc);
    if (!s) {
        char *end;
        r->kl.value = strtod(klc, &end);
        if (*end || !*klc || !isfinite(r->kl.value) || r->kl.value < 0)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"kl_coef\" is not a KL coefficient", what);
    }
    if (!s) ppo_shuffle(r); // the order of the pass the run is in
    return s;
}

/* The model's files of a PPO checkpoint: the policy (a language model any verb loads), the chat
 * template, the value head, the tokenizer (the value head's optimiser state is the run's). */
alloy_status ppo_save(void *ctx, const char *dir) {
    ppo_run *r = ctx;
    alloy_status s = alloy_model_save(r->pv->model, dir);
    if (!s) s = alloy_chat_save_template(dir, r->opt.tmpl);
    char *p = s ? NULL : alloy_path_join(dir, "value_head.safetensors");
    if (!s) s = p ? alloy_ppo_value_head_save(r->pv, p) : ALLOY_STATUS_NOMEM;
    alloy_free(p);
    if (!s && r->tok_json) {
        p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, r->tok_json, r->tok_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

alloy_status ppo_load(void *ctx, const char *dir) {
    ppo_run *r = ctx;
    char *p = alloy_path_join(dir, "value_head.safetensors");
    alloy_status s = p ? alloy_ppo_value_head_load(r->pv, p) : ALLOY_STATUS_NOMEM;
    alloy_free(p);
    return s;
}
