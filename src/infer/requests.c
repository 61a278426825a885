/*
 * requests.c — generation requests as files and arguments carry them (alloy_prompts of
 * alloy/infer.h): prompts from text, from a list of ids, or from records {"prompt": TEXT} or
 * {"prompt_ids": [ids]} (JSONL, a JSON array, compressed, a folder: alloy/records.h); their
 * checks against a model; and the results of
 * alloy_generate written back as one JSONL record per prompt.
 *
 * Every prompt carries a name for errors: the one its caller gave ("--prompt"), or FILE:LINE.
 */
#include "alloy/infer.h"
#include "alloy/records.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void alloy_prompts_free(alloy_prompts *p) {
    for (int i = 0; i < p->n; i++) {
        alloy_free(p->ids[i]);
        alloy_free(p->texts[i]);
        alloy_free(p->names[i]);
    }
    alloy_free(p->ids);
    alloy_free(p->lens);
    alloy_free(p->texts);
    alloy_free(p->names);
    memset(p, 0, sizeof *p);
}

/* Adds a prompt: takes ids and text (freed on failure), copies name. */
static alloy_status add_prompt(alloy_prompts *p, int32_t *ids, int n, char *text, const char *name) {
    char *nm = alloy_strdup(name);
    if (nm && p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        size_t was = (size_t)p->cap, now = (size_t)cap;
        int32_t **v = alloy_realloc(p->ids, sizeof(int32_t *) * was, sizeof(int32_t *) * now);
        if (v) p->ids = v;
        int *l = v ? alloy_realloc(p->lens, sizeof(int) * was, sizeof(int) * now) : NULL;
        if (l) p->lens = l;
        char **t = l ? alloy_realloc(p->texts, sizeof(char *) * was, sizeof(char *) * now) : NULL;
        if (t) p->texts = t;
        char **m = t ? alloy_realloc(p->names, sizeof(char *) * was, sizeof(char *) * now) : NULL;
        if (m) p->names = m, p->cap = cap;
    }
    if (!nm || p->n == p->cap) {
        alloy_free(nm);
        alloy_free(ids);
        alloy_free(text);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for %d prompts", p->n + 1);
    }
    p->ids[p->n] = ids;
    p->lens[p->n] = n;
    p->texts[p->n] = text;
    p->names[p->n] = nm;
    p->n++;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_prompts_add_text(alloy_prompts *p, const alloy_tokenizer *tok, const char *text, size_t len,
                                    const char *name) {
    if (!tok) return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the model has no tokenizer to encode text with: give token ids", name);
    alloy_ids ids = {0};
    alloy_status s = alloy_tokenizer_encode(tok, text, len, 0, &ids);
    if (!s && ids.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the prompt encodes to no tokens", name);
    char *copy = s ? NULL : alloy_malloc(len + 1);
    if (!s && !copy) s = ALLOY_STATUS_NOMEM;
    if (s) {
        alloy_ids_free(&ids);
        return s;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    return add_prompt(p, ids.data, (int)ids.n, copy, name);
}

/* Whether c separates ids in a list. */
static bool is_sep(char c) { return c == ' ' || c == ',' || c == '\t' || c == '\n'; }

alloy_status alloy_prompts_add_id_list(alloy_prompts *p, const char *list, const char *name) {
    alloy_ids ids = {0};
    const char *q = list;
    alloy_status s = ALLOY_STATUS_OK;
    for (;;) {
        while (is_sep(*q)) q++;
        if (!*q) break;
        char *end;
        errno = 0;
        long v = strtol(q, &end, 10);
        if (end == q || errno || v < 0 || v > INT32_MAX || (*end && !is_sep(*end))) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: '%s' is not a list of token ids", name, list);
            break;
        }
        s = alloy_ids_push(&ids, (int32_t)v);
        if (s) break;
        q = end;
    }
    if (!s && ids.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: no ids given", name);
    if (s) {
        alloy_ids_free(&ids);
        return s;
    }
    return add_prompt(p, ids.data, (int)ids.n, NULL, name);
}

/* A JSON array of token ids into a new prompt. */
static alloy_status add_json_ids(alloy_prompts *p, const cJSON *ids, const char *what) {
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) == 0)
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt_ids\" is not a non-empty array", what);
    int n = cJSON_GetArraySize(ids);
    int32_t *v = alloy_malloc(sizeof(int32_t) * (size_t)n);
    if (!v) return ALLOY_STATUS_NOMEM;
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, ids) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
        if (!(d >= 0 && d <= INT32_MAX && d == floor(d))) {
            alloy_free(v);
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt_ids\"[%d] is not a token id", what, k);
        }
        v[k++] = (int32_t)d;
    }
    return add_prompt(p, v, n, NULL, what);
}

/* One record of a prompts file, a JSON object (what: FILE:LINE). */
static alloy_status add_json_record(alloy_prompts *p, const alloy_tokenizer *tok, const cJSON *j, const char *what) {
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "prompt_ids");
    if ((text != NULL) == (ids != NULL))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: needs exactly one of \"prompt\" and \"prompt_ids\"", what);
    if (text && !cJSON_IsString(text)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt\" is not a string", what);
    if (text) return alloy_prompts_add_text(p, tok, text->valuestring, strlen(text->valuestring), what);
    return add_json_ids(p, ids, what);
}

alloy_status alloy_prompts_read_jsonl(alloy_prompts *p, const char *path, const alloy_tokenizer *tok) {
    alloy_records *r;
    alloy_records_options o = {.objects = true};
    alloy_status s = alloy_records_open(&r, path, &o);
    int before = p->n;
    for (bool end = false; !s;) {
        const cJSON *j;
        if ((s = alloy_records_next(r, &j, &end)) || end) break;
        s = add_json_record(p, tok, j, alloy_records_where(r));
    }
    alloy_records_close(r);
    if (!s && p->n == before) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: no prompts in the file", path);
    return s;
}

alloy_status alloy_prompts_check(const alloy_prompts *p, int vocab_size, int ctx) {
    for (int i = 0; i < p->n; i++) {
        for (int k = 0; k < p->lens[i]; k++)
            if (p->ids[i][k] >= vocab_size)
                return alloy_fail(ALLOY_STATUS_RANGE, "%s: token id %d is outside the model's vocabulary [0, %d)", p->names[i],
                                  p->ids[i][k], vocab_size);
        if (p->lens[i] > ctx)
            return alloy_fail(ALLOY_STATUS_RANGE, "%s: the prompt has %d tokens, more than the context of %d", p->names[i],
                              p->lens[i], ctx);
    }
    return ALLOY_STATUS_OK;
}

/* n ids as a JSON array named key of o. */
static void add_id_array(cJSON *o, const char *key, const int32_t *ids, size_t n) {
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (size_t k = 0; k < n; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[k]));
}

/* Prompt i's record, one line of JSON (free() it); NULL when out of memory. */
static char *record(const alloy_prompts *p, const alloy_generation *r, int i) {
    cJSON *o = cJSON_CreateObject();
    if (p->texts[i]) cJSON_AddStringToObject(o, "prompt", p->texts[i]);
    else add_id_array(o, "prompt_ids", p->ids[i], (size_t)p->lens[i]);
    if (r->text) { // as valid UTF-8 (a token may end inside a character)
        char *fixed = alloy_malloc(3 * r->text_len + 1);
        if (fixed) {
            size_t n = alloy_utf8_repair(r->text, r->text_len, fixed, NULL);
            fixed[n] = '\0';
            cJSON_AddStringToObject(o, "text", fixed);
            alloy_free(fixed);
        }
    }
    add_id_array(o, "ids", r->ids.data, r->ids.n);
    cJSON_AddStringToObject(o, "finish_reason", alloy_finish_name(r->finish));
    cJSON_AddNumberToObject(o, "tokens", (double)r->ids.n);
    cJSON_AddNumberToObject(o, "tokens_per_s", r->seconds > 0 ? round(r->ids.n / r->seconds * 10) / 10 : 0.0);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return line;
}

alloy_status alloy_generation_write_jsonl(const alloy_prompts *p, const alloy_generation *results, const char *path) {
    alloy_atomic_file f;
    alloy_status s = ALLOY_STATUS_OK;
    if (path && (s = alloy_atomic_open(&f, path))) return s;
    for (int i = 0; i < p->n && !s; i++) {
        char *line = record(p, &results[i], i);
        if (!line) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a record");
        else if (path) s = alloy_atomic_printf(&f, "%s\n", line);
        else printf("%s\n", line);
        free(line);
    }
    if (path) {
        if (s) alloy_atomic_abort(&f);
        else s = alloy_atomic_commit(&f);
    }
    return s;
}
