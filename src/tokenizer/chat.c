/*
 * chat.c — the chat template (alloy/chat.h): messages rendered into token ids, the tokenizer's
 * chat tokens, the tokenizer and template a model folder carries.
 *
 * ChatML: "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message, "<|im_start|>assistant\n" as the
 * generation prompt. The markers are special tokens; everything else is ordinary text, so a
 * message that contains the text "<|im_end|>" cannot end its turn early. A tokenizer that lacks
 * the markers gets them as new ids after its last one (alloy_chat_tokenizer); the model's
 * vocabulary then grows by alloy_model_resize_vocab (new rows at the mean embedding).
 *
 * It sits in the tokenizer module, below training and inference, because both render through
 * it; conversation.c reads JSONL examples with it.
 */
#include "alloy/chat.h"
#include "internal.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *alloy_chat_template_name(alloy_chat_template t) { return t == ALLOY_CHAT_TEMPLATE_RAW ? "raw" : "chatml"; }

alloy_status alloy_chat_template_parse(const char *name, alloy_chat_template *out) {
    if (!strcmp(name, "chatml")) *out = ALLOY_CHAT_TEMPLATE_CHATML;
    else if (!strcmp(name, "raw")) *out = ALLOY_CHAT_TEMPLATE_RAW;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown chat template \"%s\" (known: chatml, raw)", name);
    return ALLOY_STATUS_OK;
}

int32_t alloy_chat_end_id(const alloy_tokenizer *tok) { return alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_END); }

/* ---- rendering ---- */

alloy_status chat_push_text(const alloy_tokenizer *tok, const char *s, size_t n, int32_t m, alloy_ids *ids, alloy_ids *mask) {
    size_t before = ids->n;
    alloy_status st = alloy_tokenizer_encode(tok, s, n, 0, ids);
    for (size_t i = before; !st && i < ids->n; i++) st = alloy_ids_push(mask, m);
    return st;
}

alloy_status chat_push_id(int32_t id, int32_t m, alloy_ids *ids, alloy_ids *mask) {
    alloy_status s = alloy_ids_push(ids, id);
    return s ? s : alloy_ids_push(mask, m);
}

alloy_status alloy_chat_render(const alloy_tokenizer *tok, const alloy_chat_message *msgs, int n, bool add_generation_prompt,
                               alloy_ids *ids, alloy_ids *mask) {
    int32_t start = alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_START), end = alloy_chat_end_id(tok);
    if (start < 0 || end < 0)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the tokenizer has no %s and %s tokens (the ChatML template needs them)",
                          ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END);
    if (mask->n != ids->n) return alloy_fail(ALLOY_STATUS_USAGE, "chat render: ids and mask differ in length");
    for (int i = 0; i < n; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content;
        if (!role || !*role || strchr(role, '\n') || strlen(role) > 64)
            return alloy_fail(ALLOY_STATUS_USAGE, "message %d: the role must be a non-empty line of at most 64 bytes", i + 1);
        if (!content) return alloy_fail(ALLOY_STATUS_USAGE, "message %d: no content", i + 1);
        int32_t trained = !strcmp(role, "assistant");
        char head[80];
        int hn = snprintf(head, sizeof head, "%s\n", role);
        alloy_status s = chat_push_id(start, 0, ids, mask);
        if (!s) s = chat_push_text(tok, head, (size_t)hn, 0, ids, mask);
        if (!s) s = chat_push_text(tok, content, strlen(content), trained, ids, mask);
        if (!s) s = chat_push_id(end, trained, ids, mask);
        if (!s) s = chat_push_text(tok, "\n", 1, 0, ids, mask);
        if (s) return s;
    }
    if (add_generation_prompt) {
        alloy_status s = chat_push_id(start, 0, ids, mask);
        if (!s) s = chat_push_text(tok, "assistant\n", 10, 0, ids, mask);
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* ---- the tokenizer's chat tokens ---- */

/* The byte tokenizer as a tokenizer.json object: a byte-level BPE without merges in which byte
 * b is token b. */
static cJSON *bytes_tokenizer_json(void) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", "1.0");
    cJSON_AddNullToObject(j, "truncation");
    cJSON_AddNullToObject(j, "padding");
    cJSON_AddArrayToObject(j, "added_tokens");
    cJSON_AddNullToObject(j, "normalizer");
    static const char *const parts[] = {"pre_tokenizer", "post_processor", "decoder"};
    for (int i = 0; i < 3; i++) {
        cJSON *p = cJSON_AddObjectToObject(j, parts[i]);
        cJSON_AddStringToObject(p, "type", "ByteLevel");
        cJSON_AddBoolToObject(p, "add_prefix_space", false);
        cJSON_AddBoolToObject(p, "trim_offsets", true);
        cJSON_AddBoolToObject(p, "use_regex", true);
    }
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) { // each byte in the vocabulary's byte-level form
        char byte = (char)b, u[3];
        alloy_bpe_bytes_to_vocab(&byte, 1, u);
        cJSON_AddNumberToObject(vocab, u, b);
    }
    cJSON_AddArrayToObject(model, "merges");
    return j;
}

/* A temporary file name in $TMPDIR or /tmp (created empty; the caller removes it). */
static alloy_status temp_path(char *buf, size_t size) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, size, "%s/alloy-tokenizer-XXXXXX", base && *base ? base : "/tmp");
    int fd = mkstemp(buf);
    if (fd < 0) return alloy_fail(ALLOY_STATUS_IO, "%s: cannot create a temporary file", buf);
    close(fd);
    return ALLOY_STATUS_OK;
}

alloy_status alloy_chat_tokenizer(const alloy_tokenizer *tok, alloy_tokenizer **out, char **json, size_t *len, int *added) {
    *out = NULL;
    if (json) *json = NULL;
    if (len) *len = 0;
    if (added) *added = 0;
    static const char *const marks[2] = {ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END};
    char path[512];
    alloy_status s = temp_path(path, sizeof path);
    if (s) return s;
    cJSON *j = NULL;
    if (!strcmp(alloy_tokenizer_name(tok), "bytes")) {
        if (!(j = bytes_tokenizer_json())) s = ALLOY_STATUS_NOMEM;
    } else {
        s = alloy_tokenizer_save(tok, path);
        if (!s) s = alloy_json_read_file(path, &j);
    }
    cJSON *list = j ? cJSON_GetObjectItemCaseSensitive(j, "added_tokens") : NULL;
    if (!s && !cJSON_IsArray(list)) s = alloy_fail(ALLOY_STATUS_INTERNAL, "tokenizer.json without added_tokens");
    int32_t next = alloy_tokenizer_vocab_size(tok), n_added = 0;
    for (int i = 0; i < 2 && !s; i++) {
        if (alloy_tokenizer_special_id(tok, marks[i]) >= 0) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", next++);
        cJSON_AddStringToObject(a, "content", marks[i]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(list, a);
        n_added++;
    }
    char *text = NULL;
    if (!s && !(text = cJSON_PrintUnformatted(j))) s = ALLOY_STATUS_NOMEM;
    if (!s) s = alloy_write_file_atomic(path, text, strlen(text));
    if (!s) s = alloy_tokenizer_load(out, path);
    if (!s && json) {
        size_t n = strlen(text);
        if (!(*json = alloy_malloc(n + 1))) s = ALLOY_STATUS_NOMEM;
        else memcpy(*json, text, n + 1);
        if (len) *len = n;
    }
    if (!s && added) *added = n_added;
    if (s) {
        alloy_tokenizer_destroy(*out);
        *out = NULL;
    }
    cJSON_free(text);
    cJSON_Delete(j);
    unlink(path);
    return s;
}

alloy_status alloy_align_load_tokenizer(const char *dir, const alloy_config *cfg, alloy_tokenizer **out) {
    *out = NULL;
    char *tj = alloy_path_join(dir, "tokenizer.json"), *enc = alloy_path_join(dir, "encoder.json");
    alloy_status s = (!tj || !enc) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    if (s) {
    } else if (alloy_path_exists(tj) || alloy_path_exists(enc)) {
        s = alloy_tokenizer_load(out, dir);
    } else if (!strcmp(cfg->tokenizer, "bytes") || !cfg->tokenizer[0]) {
        s = alloy_tokenizer_create(out, "bytes");
    } else {
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: config.json names the tokenizer \"%s\" but the folder has no tokenizer.json",
                       dir, cfg->tokenizer);
    }
    if (!s && alloy_tokenizer_vocab_size(*out) > cfg->vocab_size)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has %d tokens but the model only %d", dir,
                       alloy_tokenizer_vocab_size(*out), cfg->vocab_size);
    if (s) {
        alloy_tokenizer_destroy(*out);
        *out = NULL;
    }
    alloy_free(tj);
    alloy_free(enc);
    return s;
}

alloy_status alloy_chat_template_of(const char *dir, alloy_chat_template *out, bool *found) {
    *found = false;
    char *cp = alloy_path_join(dir, "config.json");
    if (!cp) return ALLOY_STATUS_NOMEM;
    cJSON *j = NULL;
    alloy_status s = alloy_json_read_file(cp, &j);
    const cJSON *t = s ? NULL : cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (t && !cJSON_IsString(t)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: field \"chat_template\" must be a string", cp);
    else if (t && alloy_chat_template_parse(t->valuestring, out))
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: unknown chat_template \"%s\" (known: chatml, raw)", cp, t->valuestring);
    else if (t) *found = true;
    cJSON_Delete(j);
    alloy_free(cp);
    return s;
}

/* ChatML as a Jinja template, the form transformers' apply_chat_template reads. */
static const char chatml_jinja[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

alloy_status alloy_chat_save_template(const char *dir, alloy_chat_template t) {
    char *cp = alloy_path_join(dir, "config.json"), *tp = alloy_path_join(dir, "tokenizer_config.json");
    cJSON *j = NULL, *tc = NULL;
    alloy_status s = (!cp || !tp) ? ALLOY_STATUS_NOMEM : alloy_json_read_file(cp, &j);
    if (!s) {
        cJSON_DeleteItemFromObjectCaseSensitive(j, "chat_template");
        cJSON_AddStringToObject(j, "chat_template", alloy_chat_template_name(t));
        s = alloy_json_write_file(cp, j);
    }
    if (!s && t == ALLOY_CHAT_TEMPLATE_CHATML) {
        tc = cJSON_CreateObject();
        cJSON_AddStringToObject(tc, "tokenizer_class", "PreTrainedTokenizerFast");
        cJSON_AddStringToObject(tc, "chat_template", chatml_jinja);
        cJSON_AddStringToObject(tc, "eos_token", ALLOY_CHAT_IM_END);
        cJSON_AddBoolToObject(tc, "clean_up_tokenization_spaces", false);
        s = alloy_json_write_file(tp, tc);
    }
    cJSON_Delete(j);
    cJSON_Delete(tc);
    alloy_free(cp);
    alloy_free(tp);
    return s;
}
