/*
 * bytes.c — the byte-level tokenizer: each byte is one token (vocabulary 256).
 */
#include "alloy/tokenizer.h"

#include <string.h>

struct alloy_tokenizer {
    int vocab_size; /* 256 */
};

alloy_status alloy_tokenizer_create(alloy_tokenizer **out, const char *name) {
    *out = NULL;
    if (strcmp(name, "bytes") != 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "unknown tokenizer '%s' (available: bytes)", name);
    alloy_tokenizer *t = alloy_calloc(1, sizeof *t);
    if (!t) return ALLOY_STATUS_NOMEM;
    t->vocab_size = 256;
    *out = t;
    return ALLOY_STATUS_OK;
}

void alloy_tokenizer_destroy(alloy_tokenizer *tok) { alloy_free(tok); }
const char *alloy_tokenizer_name(const alloy_tokenizer *tok) { return "bytes"; }
int alloy_tokenizer_vocab_size(const alloy_tokenizer *tok) { return tok->vocab_size; }

alloy_status alloy_tokenizer_encode(const alloy_tokenizer *tok, const char *text, size_t n, int32_t **ids,
                                    size_t *n_ids) {
    *ids = alloy_malloc(sizeof(int32_t) * (n ? n : 1));
    if (!*ids) return ALLOY_STATUS_NOMEM;
    for (size_t i = 0; i < n; i++) (*ids)[i] = (uint8_t)text[i];
    *n_ids = n;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_tokenizer_decode(const alloy_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                                    size_t *len) {
    char *s = alloy_malloc(n + 1);
    if (!s) return ALLOY_STATUS_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->vocab_size) {
            alloy_free(s);
            return alloy_fail(ALLOY_STATUS_RANGE, "token id %d is outside the byte vocabulary [0, 256)", ids[i]);
        }
        s[i] = (char)(uint8_t)ids[i];
    }
    s[n] = '\0';
    *text = s;
    if (len) *len = n;
    return ALLOY_STATUS_OK;
}
