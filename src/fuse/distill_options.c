/*
 * distill_options.c — distillation's settings (alloy_distill_options): the defaults, the
 * divergences' names, and the JSON text a run saves them as (alloy_train_options.objective_json).
 */
#include "alloy/distill.h"

#include <cJSON.h>
#include <string.h>
#include "alloy/ensemble.h"
#include "alloy/io.h"


alloy_distill_options alloy_distill_defaults(void) {
    alloy_distill_options d;
    memset(&d, 0, sizeof d);
    d.divergence = ALLOY_DIVERGENCE_FORWARD_KL;
    d.temperature = 2.0f;
    d.alpha = 0.5f;
    d.beta = 0.5f;
    return d;
}

static const char *const divergence_names[] = {"forward_kl", "reverse_kl", "jsd"};

const char *alloy_divergence_name(alloy_divergence d) {
    return (unsigned)d < 3 ? divergence_names[d] : "?";
}

alloy_status alloy_divergence_parse(const char *name, alloy_divergence *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, divergence_names[i])) {
            *out = (alloy_divergence)i;
            return ALLOY_STATUS_OK;
        }
    return alloy_fail(ALLOY_STATUS_USAGE, "unknown divergence \"%s\" (known: forward_kl, reverse_kl, jsd)", name ? name : "");
}

alloy_status alloy_distill_to_json(const alloy_distill_options *d, char *out, size_t size) {
    cJSON *j = cJSON_CreateObject(), *t = cJSON_AddArrayToObject(j, "teachers");
    for (int i = 0; i < d->n_teachers; i++) cJSON_AddItemToArray(t, cJSON_CreateString(d->teachers[i]));
    cJSON_AddStringToObject(j, "kind", "distill");
    cJSON_AddStringToObject(j, "divergence", alloy_divergence_name(d->divergence));
    cJSON_AddNumberToObject(j, "temperature", d->temperature);
    cJSON_AddNumberToObject(j, "alpha", d->alpha);
    cJSON_AddNumberToObject(j, "beta", d->beta);
    if (d->combiner[0]) cJSON_AddStringToObject(j, "combiner", d->combiner);
    if (d->hidden_weight != 0.0f) cJSON_AddNumberToObject(j, "hidden_weight", d->hidden_weight);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    alloy_status s = ALLOY_STATUS_OK;
    if (!text) s = ALLOY_STATUS_NOMEM;
    else if (strlen(text) >= size) s = alloy_fail(ALLOY_STATUS_USAGE, "the teachers' paths are too long to record");
    else strcpy(out, text);
    cJSON_free(text);
    return s;
}

alloy_status alloy_distill_from_json(alloy_distill_options *d, const char *json, const char *what) {
    *d = alloy_distill_defaults();
    cJSON *j = cJSON_Parse(json);
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "teachers") : NULL;
    const cJSON *dv = j ? cJSON_GetObjectItemCaseSensitive(j, "divergence") : NULL;
    alloy_status s = ALLOY_STATUS_OK;
    double x;
    if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) < 1 || cJSON_GetArraySize(t) > ALLOY_MAX_TEACHERS || !cJSON_IsString(dv) ||
        alloy_divergence_parse(dv->valuestring, &d->divergence))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the distillation settings are malformed", what);
    for (const cJSON *e = t ? t->child : NULL; !s && e; e = e->next) {
        if (!cJSON_IsString(e) || strlen(e->valuestring) >= ALLOY_PATH_MAX)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: a teacher's path is malformed", what);
        else strcpy(d->teachers[d->n_teachers++], e->valuestring);
    }
    if (!s && !(s = alloy_json_get_double(j, "temperature", what, &x))) d->temperature = (float)x;
    if (!s && !(s = alloy_json_get_double(j, "alpha", what, &x))) d->alpha = (float)x;
    if (!s && !(s = alloy_json_get_double(j, "beta", what, &x))) d->beta = (float)x;
    // runs saved before these existed had neither a combiner nor hidden-state matching
    x = 0.0;
    if (!s && !(s = alloy_json_opt_double(j, "hidden_weight", what, &x))) d->hidden_weight = (float)x;
    const cJSON *cb = j ? cJSON_GetObjectItemCaseSensitive(j, "combiner") : NULL;
    if (!s && cb && (!cJSON_IsString(cb) || strlen(cb->valuestring) >= ALLOY_PATH_MAX))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: the combiner's path is malformed", what);
    else if (!s && cb) strcpy(d->combiner, cb->valuestring);
    cJSON_Delete(j);
    return s;
}

