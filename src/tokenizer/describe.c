/*
 * describe.c — token ids and tokenizers as text: ids to and from JSON arrays (what `alloy
 * tokenizer encode` prints and `decode` reads) and a tokenizer's description (kind, vocabulary,
 * fingerprint, pre-tokenizer, special tokens).
 */
#include "alloy/tokenizer.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Appends the formatted text to *buf (len, cap), growing it; false when out of memory. */
static bool put(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static bool put(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    char piece[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(piece, sizeof piece, fmt, ap);
    va_end(ap);
    if (n < 0) return false;
    size_t need = *len + (size_t)n + 1;
    if (need > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < need) c *= 2;
        char *b = alloy_realloc(*buf, *cap, c);
        if (!b) return false;
        *buf = b;
        *cap = c;
    }
    if ((size_t)n < sizeof piece) memcpy(*buf + *len, piece, (size_t)n + 1);
    else {
        va_start(ap, fmt);
        vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    *len += (size_t)n;
    return true;
}

alloy_status alloy_ids_to_json(const int32_t *ids, size_t n, char **out, size_t *len) {
    char *buf = NULL;
    size_t l = 0, cap = 0;
    bool ok = put(&buf, &l, &cap, "[");
    for (size_t i = 0; ok && i < n; i++) ok = put(&buf, &l, &cap, i ? ",%d" : "%d", ids[i]);
    ok = ok && put(&buf, &l, &cap, "]");
    if (!ok) {
        alloy_free(buf);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the JSON of %zu ids", n);
    }
    *out = buf;
    *len = l;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_ids_from_json(const char *text, size_t n, const char *what, alloy_ids *out) {
    cJSON *arr = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: expected a JSON array of token ids", what);
    }
    alloy_status s = ALLOY_STATUS_OK;
    size_t i = 0;
    for (const cJSON *it = arr->child; it && !s; it = it->next, i++) {
        if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int32_t)it->valuedouble)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: element %zu is not an integer id", what, i);
        else s = alloy_ids_push(out, (int32_t)it->valuedouble);
    }
    cJSON_Delete(arr);
    return s;
}

alloy_status alloy_tokenizer_describe(const alloy_tokenizer *tok, char **out) {
    char *buf = NULL;
    size_t l = 0, cap = 0;
    bool ok = put(&buf, &l, &cap, "kind: %s\nvocabulary: %d\nfingerprint: %016llx\n", alloy_tokenizer_name(tok),
                  alloy_tokenizer_vocab_size(tok), (unsigned long long)alloy_tokenizer_hash(tok));
    const char *pat = alloy_tokenizer_pattern(tok);
    if (ok && pat) ok = put(&buf, &l, &cap, "pre-tokenizer regex: %s\n", pat);
    bool any_empty = alloy_tokenizer_special_id(tok, "") >= 0;
    for (int32_t id = 0; ok && !any_empty && id < alloy_tokenizer_vocab_size(tok); id++) {
        size_t len;
        const char *b = alloy_tokenizer_token(tok, id, &len);
        if (!b || len >= 64) continue;
        char txt[65];
        memcpy(txt, b, len);
        txt[len] = '\0';
        if (alloy_tokenizer_special_id(tok, txt) == id) ok = put(&buf, &l, &cap, "special token %d: %s\n", id, txt);
    }
    if (!ok) {
        alloy_free(buf);
        return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a tokenizer's description");
    }
    *out = buf;
    return ALLOY_STATUS_OK;
}
