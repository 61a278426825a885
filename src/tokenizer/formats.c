/*
 * formats.c — tokenizer files: GPT-2's encoder.json + vocab.bpe, and Hugging Face's
 * tokenizer.json (byte-level BPE), read strictly and written so that transformers reads them.
 *
 * In both, a token is written as the string of its bytes mapped through GPT-2's
 * bytes_to_unicode (space is "Ġ"); special tokens (added_tokens) are written as their text.
 */
#include "internal.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Sets the tokens of a vocab object {"string": id, ...}. */
static alloy_status set_vocab(alloy_tokenizer *t, const cJSON *vocab, const char *what) {
    for (const cJSON *it = vocab->child; it; it = it->next) {
        size_t n;
        if (!cJSON_IsNumber(it))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocabulary entry \"%.40s\" has no integer id", what, it->string);
        char *buf = alloy_malloc(strlen(it->string) + 1);
        if (!buf) return ALLOY_STATUS_NOMEM;
        alloy_status s = ALLOY_STATUS_OK;
        if (alloy_bpe_vocab_to_bytes(it->string, strlen(it->string), buf, &n))
            s = tok_set(t, (int32_t)it->valuedouble, buf, n, false, what);
        alloy_free(buf); // a string not in byte-level form is skipped: the caller checks coverage
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* Parses "a b" (or ["a", "b"]) and adds the merge. */
static alloy_status add_merge_text(alloy_tokenizer *t, const char *a, size_t na, const char *b, size_t nb, long line,
                                   const char *what) {
    if (na == 0 || nb == 0) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %ld is malformed", what, line);
    char *x = alloy_malloc(na + 1), *y = alloy_malloc(nb + 1), *bx = alloy_malloc(na + 1), *by = alloy_malloc(nb + 1);
    alloy_status s = (!x || !y || !bx || !by) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    size_t nx, ny;
    if (!s) {
        memcpy(x, a, na);
        x[na] = '\0';
        memcpy(y, b, nb);
        y[nb] = '\0';
        if (!alloy_bpe_vocab_to_bytes(x, strlen(x), bx, &nx) || !alloy_bpe_vocab_to_bytes(y, strlen(y), by, &ny))
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %ld (\"%.64s %.64s\") is not in byte-level form", what, line, x, y);
    }
    if (!s) {
        int32_t l = tok_lookup(t, bx, nx), r = tok_lookup(t, by, ny);
        if (l < 0 || r < 0)
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %ld (\"%.64s %.64s\") names a token that is not in the vocabulary",
                           what, line, x, y);
        else s = tok_add_merge(t, l, r, what);
    }
    alloy_free(x);
    alloy_free(y);
    alloy_free(bx);
    alloy_free(by);
    return s;
}

static int32_t max_id(const cJSON *vocab, const cJSON *added) {
    double m = -1;
    for (const cJSON *it = vocab ? vocab->child : NULL; it; it = it->next)
        if (cJSON_IsNumber(it) && it->valuedouble > m) m = it->valuedouble;
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsNumber(id) && id->valuedouble > m) m = id->valuedouble;
    }
    return m < 0 || m > (1 << 24) ? -1 : (int32_t)m;
}

/* GPT-2's files: encoder.json (vocabulary) and vocab.bpe (merges, one "a b" per line). */
static alloy_status load_gpt2_pair(alloy_tokenizer **out, const char *enc_path, const char *bpe_path) {
    cJSON *enc;
    alloy_status s = alloy_json_read_file(enc_path, &enc);
    if (s) return s;
    alloy_tokenizer *t = NULL;
    char *text = NULL;
    if (!cJSON_IsObject(enc) || !enc->child) {
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: not an encoder.json (an object of token: id)", enc_path);
        goto done;
    }
    int32_t m = max_id(enc, NULL);
    if (m < 0) {
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: token ids out of range", enc_path);
        goto done;
    }
    if ((s = tok_init_bpe(&t, m + 1, enc_path))) goto done;
    if ((s = set_vocab(t, enc, enc_path))) goto done;
    int32_t eot = -1;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(enc, "<|endoftext|>");
    if (cJSON_IsNumber(e)) eot = (int32_t)e->valuedouble; // GPT-2's one special token
    if (eot >= 0) t->flags[eot] |= TOKEN_SPECIAL;
    if ((s = tok_index(t, enc_path))) goto done;
    size_t n;
    if ((s = alloy_file_read_all(bpe_path, &text, &n))) goto done;
    long line = 0;
    for (char *p = text, *nl; p && *p; p = nl) {
        nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (nl) nl++;
        line++;
        if (len && p[len - 1] == '\r') len--;
        if (len == 0 || !strncmp(p, "#version", 8)) continue;
        char *sp = memchr(p, ' ', len);
        if (!sp) {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: line %ld is not \"a b\"", bpe_path, line);
            goto done;
        }
        if ((s = add_merge_text(t, p, (size_t)(sp - p), sp + 1, len - (size_t)(sp - p) - 1, line, bpe_path))) goto done;
    }
    s = tok_finish(t, NULL, false, enc_path);
done:
    alloy_free(text);
    cJSON_Delete(enc);
    if (s) alloy_tokenizer_destroy(t);
    else *out = t;
    return s;
}

static const char *type_of(const cJSON *obj) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

/* The pre-tokenizer: ByteLevel (GPT-2's regex) or Sequence[Split(regex, Isolated), ByteLevel]. */
static alloy_status read_pretok(const cJSON *pt, const char *what, const char **pattern, bool *prefix) {
    const char *ty = pt ? type_of(pt) : NULL;
    *pattern = NULL;
    *prefix = false;
    if (!ty) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: no pre_tokenizer: not a byte-level BPE tokenizer", what);
    if (!strcmp(ty, "ByteLevel")) {
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        if (cJSON_IsFalse(ur))
            return alloy_fail(ALLOY_STATUS_FORMAT, "%s: ByteLevel pre_tokenizer without a regex is not supported", what);
        *prefix = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(pt, "add_prefix_space"));
        return ALLOY_STATUS_OK;
    }
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        bool bytelevel = false;
        for (const cJSON *p = cJSON_IsArray(list) ? list->child : NULL; p; p = p->next) {
            const char *t = type_of(p);
            if (t && !strcmp(t, "ByteLevel")) {
                bytelevel = true;
                *prefix = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space"));
                if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(p, "use_regex")) && !*pattern) *pattern = NULL;
            } else if (t && !strcmp(t, "Split")) {
                const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
                const cJSON *re = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
                const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
                if (!cJSON_IsString(re) || !cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") ||
                    cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "invert")))
                    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: only a Split by Regex with behavior Isolated is supported", what);
                *pattern = re->valuestring;
            } else {
                return alloy_fail(ALLOY_STATUS_FORMAT, "%s: pre_tokenizer %s is not supported", what, t ? t : "(untyped)");
            }
        }
        if (!bytelevel) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: the pre_tokenizer has no ByteLevel step: not byte-level BPE", what);
        return ALLOY_STATUS_OK;
    }
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: pre_tokenizer %s: not a byte-level BPE tokenizer", what, ty);
}

static alloy_status load_tokenizer_json(alloy_tokenizer **out, const cJSON *j, const char *what) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsObject(model)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: no \"model\": not a tokenizer.json", what);
    const char *mt = type_of(model);
    if (mt && strcmp(mt, "BPE"))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: a %s model, not byte-level BPE", what, mt);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: a BPE with byte fallback (sentencepiece style), not byte-level BPE", what);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(j, "normalizer");
    if (norm && !cJSON_IsNull(norm))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: normalizer %s is not supported", what, type_of(norm) ? type_of(norm) : "?");
    const char *pattern;
    bool prefix;
    alloy_status s = read_pretok(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), what, &pattern, &prefix);
    if (s) return s;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return alloy_fail(ALLOY_STATUS_FORMAT, "%s: model needs a \"vocab\" object and a \"merges\" array", what);
    if (added && !cJSON_IsArray(added)) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: added_tokens is not an array", what);
    int32_t m = max_id(vocab, added);
    if (m < 0) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: token ids missing or out of range", what);
    alloy_tokenizer *t;
    if ((s = tok_init_bpe(&t, m + 1, what))) return s;
    // added tokens first (their text is raw, not byte-level form); then the vocabulary
    for (const cJSON *a = added ? added->child : NULL; a && !s; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id"), *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content)) {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: an added token lacks \"id\" or \"content\"", what);
            break;
        }
        bool special = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(a, "special"));
        s = tok_set(t, (int32_t)id->valuedouble, content->valuestring, strlen(content->valuestring), special, what);
    }
    for (const cJSON *it = vocab->child; it && !s; it = it->next) { // skip ids the added tokens took
        if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < t->n_tokens &&
            (t->flags[(int32_t)it->valuedouble] & TOKEN_USED))
            continue;
        size_t n;
        char *buf = alloy_malloc(strlen(it->string) + 1);
        if (!buf) s = ALLOY_STATUS_NOMEM;
        else if (!cJSON_IsNumber(it)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocabulary entry \"%.40s\" has no id", what, it->string);
        else if (!alloy_bpe_vocab_to_bytes(it->string, strlen(it->string), buf, &n))
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: vocabulary entry \"%.40s\" is not in byte-level form", what, it->string);
        else s = tok_set(t, (int32_t)it->valuedouble, buf, n, false, what);
        alloy_free(buf);
    }
    if (!s) s = tok_index(t, what);
    long line = 0;
    for (const cJSON *mg = merges->child; mg && !s; mg = mg->next) {
        line++;
        if (cJSON_IsString(mg)) {
            const char *sp = strchr(mg->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %ld is not \"a b\"", what, line);
            else s = add_merge_text(t, mg->valuestring, (size_t)(sp - mg->valuestring), sp + 1, strlen(sp + 1), line, what);
        } else if (cJSON_IsArray(mg) && cJSON_GetArraySize(mg) == 2 && cJSON_IsString(mg->child) &&
                   cJSON_IsString(mg->child->next)) {
            const char *a = mg->child->valuestring, *b = mg->child->next->valuestring;
            s = add_merge_text(t, a, strlen(a), b, strlen(b), line, what);
        } else {
            s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: merge %ld is neither \"a b\" nor [\"a\", \"b\"]", what, line);
        }
    }
    if (!s) s = tok_finish(t, pattern, prefix, what);
    if (s) {
        alloy_tokenizer_destroy(t);
        return s;
    }
    *out = t;
    return ALLOY_STATUS_OK;
}

alloy_status alloy_tokenizer_load(alloy_tokenizer **out, const char *path) {
    *out = NULL;
    if (!strcmp(path, "bytes")) return alloy_tokenizer_create(out, "bytes");
    char *tj = NULL, *enc = NULL, *bpe = NULL;
    alloy_status s = ALLOY_STATUS_OK;
    if (alloy_is_dir(path)) {
        tj = alloy_path_join(path, "tokenizer.json");
        enc = alloy_path_join(path, "encoder.json");
        bpe = alloy_path_join(path, "vocab.bpe");
        if (!tj || !enc || !bpe) s = ALLOY_STATUS_NOMEM;
        else if (alloy_path_exists(tj)) {
            alloy_free(enc);
            enc = NULL;
        } else if (alloy_path_exists(enc) && alloy_path_exists(bpe)) {
            alloy_free(tj);
            tj = NULL;
        } else {
            s = alloy_fail(ALLOY_STATUS_IO, "%s: holds neither tokenizer.json nor encoder.json + vocab.bpe", path);
        }
    } else if (!alloy_path_exists(path)) {
        s = alloy_fail(ALLOY_STATUS_IO, "%s: no such file or folder", path);
    } else {
        tj = alloy_strdup(path);
        if (!tj) s = ALLOY_STATUS_NOMEM;
    }
    if (!s && tj) {
        cJSON *j;
        s = alloy_json_read_file(tj, &j);
        if (!s) {
            if (cJSON_IsObject(j) && cJSON_GetObjectItemCaseSensitive(j, "model")) {
                s = load_tokenizer_json(out, j, tj);
            } else if (cJSON_IsObject(j)) { // an encoder.json named directly: its vocab.bpe sits beside it
                const char *slash = strrchr(tj, '/');
                char *dir = slash ? alloy_strdup(tj) : alloy_strdup(".");
                if (dir && slash) dir[slash - tj] = '\0';
                char *pair = dir ? alloy_path_join(dir, "vocab.bpe") : NULL;
                if (pair && alloy_path_exists(pair)) s = load_gpt2_pair(out, tj, pair);
                else s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a tokenizer.json (no \"model\")", tj);
                alloy_free(pair);
                alloy_free(dir);
            } else {
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a tokenizer.json (not a JSON object)", tj);
            }
            cJSON_Delete(j);
        }
    } else if (!s) {
        s = load_gpt2_pair(out, enc, bpe);
    }
    alloy_free(tj);
    alloy_free(enc);
    alloy_free(bpe);
    return s;
}

alloy_status alloy_tokenizer_save(const alloy_tokenizer *t, const char *path) {
    if (t->kind != TOK_BPE) return alloy_fail(ALLOY_STATUS_USAGE, "%s: the byte tokenizer has no tokenizer.json", path);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", "1.0");
    cJSON_AddNullToObject(j, "truncation");
    cJSON_AddNullToObject(j, "padding");
    cJSON *added = cJSON_AddArrayToObject(j, "added_tokens");
    for (int32_t id = 0; id < t->n_tokens; id++) {
        if (!(t->flags[id] & TOKEN_SPECIAL)) continue;
        cJSON *a = cJSON_CreateObject();
        char *text = alloy_malloc(t->len[id] + 1);
        if (!text) {
            cJSON_Delete(a);
            cJSON_Delete(j);
            return ALLOY_STATUS_NOMEM;
        }
        memcpy(text, t->bytes[id], t->len[id]);
        text[t->len[id]] = '\0';
        cJSON_AddNumberToObject(a, "id", id);
        cJSON_AddStringToObject(a, "content", text);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(added, a);
        alloy_free(text);
    }
    cJSON_AddNullToObject(j, "normalizer");
    bool gpt2 = !strcmp(t->pattern, tok_gpt2_pattern);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddBoolToObject(bl, "add_prefix_space", t->add_prefix_space);
    cJSON_AddBoolToObject(bl, "trim_offsets", true);
    cJSON_AddBoolToObject(bl, "use_regex", gpt2);
    if (gpt2) {
        cJSON_AddItemToObject(j, "pre_tokenizer", bl);
    } else {
        cJSON *seq = cJSON_AddObjectToObject(j, "pre_tokenizer");
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
        cJSON *split = cJSON_CreateObject();
        cJSON_AddStringToObject(split, "type", "Split");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", t->pattern);
        cJSON_AddStringToObject(split, "behavior", "Isolated");
        cJSON_AddBoolToObject(split, "invert", false);
        cJSON_AddItemToArray(list, split);
        cJSON_AddItemToArray(list, bl);
    }
    cJSON *pp = cJSON_AddObjectToObject(j, "post_processor");
    cJSON_AddStringToObject(pp, "type", "ByteLevel");
    cJSON_AddBoolToObject(pp, "add_prefix_space", true);
    cJSON_AddBoolToObject(pp, "trim_offsets", false);
    cJSON_AddBoolToObject(pp, "use_regex", true);
    cJSON *dec = cJSON_AddObjectToObject(j, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON_AddBoolToObject(dec, "add_prefix_space", true);
    cJSON_AddBoolToObject(dec, "trim_offsets", true);
    cJSON_AddBoolToObject(dec, "use_regex", true);
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    char *buf = alloy_malloc(4 * 65536 + 2); // two tokens of up to 65536 bytes, 2 UTF-8 bytes each
    if (!buf) {
        cJSON_Delete(j);
        return ALLOY_STATUS_NOMEM;
    }
    for (int32_t id = 0; id < t->n_tokens; id++) {
        if (!(t->flags[id] & TOKEN_USED) || (t->flags[id] & TOKEN_SPECIAL)) continue;
        alloy_bpe_bytes_to_vocab(t->bytes[id], t->len[id], buf);
        cJSON_AddNumberToObject(vocab, buf, id);
    }
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (int32_t r = 0; r < t->n_merges; r++) {
        int32_t a = t->merge_pairs[2 * r], b = t->merge_pairs[2 * r + 1];
        alloy_bpe_bytes_to_vocab(t->bytes[a], t->len[a], buf);
        size_t k = strlen(buf);
        buf[k] = ' ';
        alloy_bpe_bytes_to_vocab(t->bytes[b], t->len[b], buf + k + 1);
        cJSON_AddItemToArray(merges, cJSON_CreateString(buf));
    }
    alloy_free(buf);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return alloy_fail(ALLOY_STATUS_NOMEM, "%s: cannot format the tokenizer", path);
    alloy_status s = alloy_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
    return s;
}

/* ---- the tokenizer a model folder carries ---- */

alloy_status alloy_tokenizer_folder_file(const char *dir, char **file) {
    *file = NULL;
    static const char *const names[] = {"tokenizer.json", "encoder.json"}; // in this order of preference
    for (int i = 0; i < 2; i++) {
        char *p = alloy_path_join(dir, names[i]);
        if (!p) return ALLOY_STATUS_NOMEM;
        if (alloy_path_exists(p)) {
            *file = p;
            return ALLOY_STATUS_OK;
        }
        alloy_free(p);
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_tokenizer_load_folder(alloy_tokenizer **out, const char *dir, const char *named) {
    *out = NULL;
    char *file;
    alloy_status s = alloy_tokenizer_folder_file(dir, &file);
    if (s) return s;
    if (file) s = alloy_tokenizer_load(out, dir); // tokenizer.json first, else encoder.json + vocab.bpe
    else if (named && !strcmp(named, "bytes")) s = alloy_tokenizer_create(out, "bytes");
    else if (named && *named)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: config.json names the tokenizer \"%s\" but the folder has no tokenizer.json",
                       dir, named);
    alloy_free(file);
    return s;
}
