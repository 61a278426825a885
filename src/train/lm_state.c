/*
 * lm_state.c — what an LM run's checkpoint holds besides the run's own (alloy/train.h): the
 * model's files, a loss's own state (distillation's projection), the data's tokenizer; and in
 * trainer_state.json the loader's position, the data's fingerprint and the options to resume with.
 */
#include "alloy/io.h"
#include "alloy/options.h"
#include "alloy/train.h"
#include "internal.h"

#include <cJSON.h>
#include <inttypes.h>
#include <string.h>

/* The model's files, the loss's own state (alloy_train_loss.save), the data's tokenizer. */
alloy_status lm_save(void *ctx, const char *dir) {
    lm_obj *c = ctx;
    const alloy_train_loss *l = c->opt->objective;
    alloy_status s = alloy_model_save(c->model, dir);
    if (!s && l && l->save) s = l->save(l->ctx, dir);
    if (!s && c->tokenizer_json) {
        char *p = alloy_path_join(dir, "tokenizer.json");
        s = p ? alloy_write_file_atomic(p, c->tokenizer_json, c->tokenizer_len) : ALLOY_STATUS_NOMEM;
        alloy_free(p);
    }
    return s;
}

alloy_status lm_load(void *ctx, const char *dir) {
    const alloy_train_loss *l = ((lm_obj *)ctx)->opt->objective;
    return l && l->load ? l->load(l->ctx, dir) : ALLOY_STATUS_OK;
}

alloy_status lm_state_save(void *ctx, cJSON *j) {
    lm_obj *c = ctx;
    return alloy_run_state_put_data(j, c->train->epoch, c->train->cursor, c->ds->fingerprint,
                                    alloy_options_save(alloy_train_schema(), c->opt));
}

alloy_status lm_state_load(void *ctx, const cJSON *j, const char *what) {
    lm_obj *c = ctx;
    int64_t epoch = 0, cursor = 0;
    alloy_status s = alloy_run_state_get_data(j, what, c->ds->dir, c->ds->fingerprint, -1, &epoch, &cursor);
    if (!s && (s = alloy_loader_seek(c->train, epoch, cursor))) alloy_error_prefix("%s", what);
    return s;
}
