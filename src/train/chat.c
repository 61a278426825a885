/*
 * chat.c — the chat template, and alignment data (JSONL) rendered through it into tokens.
 *
 * ChatML: "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message, "<|im_start|>assistant\n" as the
 * generation prompt. The markers are special tokens; everything else is ordinary text, so a
 * message that contains the text "<|im_end|>" cannot end its turn early. A tokenizer that lacks
 * the markers gets them as new ids after its last one (alloy_chat_tokenizer); the model's
 * vocabulary then grows by alloy_model_resize_vocab (new rows at the mean embedding).
 *
 * The data reader turns each JSONL line into one example of one or more sequences (prompt +
 * response) with a mask of the tokens the objective uses. It sits in src/train/ because the
 * template and the objectives decide what a sequence is; alloy/data.h's readers deal in text.
 */
#include "alloy/align.h"

#include <cJSON.h>
#include <stdarg.h>
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

const char *alloy_align_kind_name(alloy_align_kind k) {
    static const char *const names[] = {"sft", "reward", "dpo", "score", "prompt"};
    return k >= ALLOY_ALIGN_SFT && k <= ALLOY_ALIGN_PROMPT ? names[k] : "?";
}

int32_t alloy_chat_end_id(const alloy_tokenizer *tok) { return alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_END); }

/* ---- rendering ---- */

/* Appends the ordinary-text encoding of s (n bytes) to ids, and the mask value m for each new id. */
static alloy_status push_text(const alloy_tokenizer *tok, const char *s, size_t n, int32_t m, alloy_ids *ids, alloy_ids *mask) {
    size_t before = ids->n;
    alloy_status st = alloy_tokenizer_encode(tok, s, n, 0, ids);
    for (size_t i = before; !st && i < ids->n; i++) st = alloy_ids_push(mask, m);
    return st;
}

/* Appends one id (a marker) with mask value m. */
static alloy_status push_id(int32_t id, int32_t m, alloy_ids *ids, alloy_ids *mask) {
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
        alloy_status s = push_id(start, 0, ids, mask);
        if (!s) s = push_text(tok, head, (size_t)hn, 0, ids, mask);
        if (!s) s = push_text(tok, content, strlen(content), trained, ids, mask);
        if (!s) s = push_id(end, trained, ids, mask);
        if (!s) s = push_text(tok, "\n", 1, 0, ids, mask);
        if (s) return s;
    }
    if (add_generation_prompt) {
        alloy_status s = push_id(start, 0, ids, mask);
        if (!s) s = push_text(tok, "assistant\n", 10, 0, ids, mask);
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* ---- the tokenizer's chat tokens ---- */

/* GPT-2's bytes_to_unicode: the code point that stands for byte b in tokenizer files. */
static uint32_t byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    uint32_t n = 0; // the non-printable bytes map to 256, 257, ... in byte order
    for (int k = 0; k < b; k++)
        if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF))) n++;
    return 256 + n;
}

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
    for (int b = 0; b < 256; b++) {
        uint32_t cp = byte_char(b);
        char u[3];
        if (cp < 0x80) u[0] = (char)cp, u[1] = 0;
        else u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), u[2] = 0; // cp < 0x800
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

/* ---- reading examples ---- */

/* A prompt or a response as the line gives it: a string, messages [first, first + count) of a
 * list, or owned text (an implicit prompt's parts; NULL text: no prompt). */
typedef struct part {
    const cJSON *json; /* a string or an array of messages; NULL: `text` */
    int first, count;  /* the messages of an array that belong to the part */
    char *text;        /* owned, when json is NULL */
} part;

typedef struct reader {
    alloy_align_data *d;
    const alloy_tokenizer *tok;
    alloy_align_kind kind;
    alloy_chat_template tmpl;
    int max_len;
    const char *path;
    int64_t line;
    int32_t eot;               /* <|endoftext|> closes a raw response; -1 if the tokenizer lacks it */
    alloy_ids pids, pmask;     /* scratch: the rendered prompt */
    alloy_ids *sids, *smask;   /* scratch: (seqs_cap) each rendered sequence */
    part *parts;               /* scratch: (seqs_cap) the responses */
    int seqs_cap;
    alloy_chat_message *msgs;  /* scratch: (msgs_cap) messages of one rendering */
    int msgs_cap;
} reader;

/* FORMAT "FILE:LINE: message". */
static alloy_status bad(const reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static alloy_status bad(const reader *r, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s:%lld: %s", r->path, (long long)r->line, msg);
}

static part json_part(const cJSON *v) {
    return (part){.json = v, .first = 0, .count = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1};
}

/* A response must be a string or a non-empty list of messages. */
static bool is_response(const cJSON *v) { return cJSON_IsString(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0); }

/* The message at index i of a list, checked; NULL after setting the error. */
static const cJSON *message_at(const reader *r, const cJSON *list, int i, alloy_status *s) {
    const cJSON *e = cJSON_GetArrayItem(list, i);
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(e, "role"), *co = cJSON_GetObjectItemCaseSensitive(e, "content");
    char num[16];
    snprintf(num, sizeof num, "%d", i + 1);
    if (!cJSON_IsObject(e) || !cJSON_IsString(ro) || !cJSON_IsString(co)) {
        *s = bad(r, "message %s needs \"role\" and \"content\" strings", num);
        return NULL;
    }
    if (!*ro->valuestring || strchr(ro->valuestring, '\n') || strlen(ro->valuestring) > 64) {
        *s = bad(r, "message %s: the role must be a non-empty line of at most 64 bytes", num);
        return NULL;
    }
    return e;
}

/* Appends the messages of a part to r->msgs from index *n: a string is one message of
 * `role`. */
static alloy_status add_messages(reader *r, const part *p, const char *role, int *n) {
    int need = *n + (p->json ? p->count : 1);
    if (need > r->msgs_cap) {
        int cap = need < 16 ? 16 : 2 * need;
        alloy_chat_message *m = alloy_realloc(r->msgs, sizeof *m * (size_t)r->msgs_cap, sizeof *m * (size_t)cap);
        if (!m) return ALLOY_STATUS_NOMEM;
        r->msgs = m;
        r->msgs_cap = cap;
    }
    if (!p->json) {
        if (p->text) r->msgs[(*n)++] = (alloy_chat_message){role, p->text};
        return ALLOY_STATUS_OK;
    }
    if (cJSON_IsString(p->json)) {
        r->msgs[(*n)++] = (alloy_chat_message){role, p->json->valuestring};
        return ALLOY_STATUS_OK;
    }
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = p->first; i < p->first + p->count; i++) {
        const cJSON *e = message_at(r, p->json, i, &s);
        if (!e) return s;
        r->msgs[(*n)++] = (alloy_chat_message){cJSON_GetObjectItemCaseSensitive(e, "role")->valuestring,
                                               cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring};
    }
    return ALLOY_STATUS_OK;
}

/* The text of a part for the raw template; NULL (with the error set) for a list of messages. */
static const char *raw_text(const reader *r, const part *p, const char *field, alloy_status *s) {
    if (!p->json) return p->text ? p->text : "";
    if (cJSON_IsString(p->json)) return p->json->valuestring;
    *s = bad(r, "\"%s\" must be a string with the raw template (lists of messages need chatml)", field);
    return NULL;
}

/* Whether a response begins with an assistant message (then the prompt's rendering ends with
 * the generation prompt, which the response's rendering continues). */
static bool starts_as_assistant(const part *p) {
    if (!p->json || cJSON_IsString(p->json)) return true;
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(p->json, p->first), "role");
    return cJSON_IsString(ro) && !strcmp(ro->valuestring, "assistant");
}

/* Renders the prompt alone into r->pids / r->pmask. */
static alloy_status render_prompt(reader *r, const part *prompt, bool gen) {
    r->pids.n = r->pmask.n = 0;
    alloy_status s = ALLOY_STATUS_OK;
    if (r->tmpl == ALLOY_CHAT_TEMPLATE_RAW) {
        const char *t = raw_text(r, prompt, "prompt", &s);
        return t ? push_text(r->tok, t, strlen(t), 0, &r->pids, &r->pmask) : s;
    }
    int n = 0;
    s = add_messages(r, prompt, "user", &n);
    if (!s) s = alloy_chat_render(r->tok, r->msgs, n, gen, &r->pids, &r->pmask);
    return s;
}

/* Renders prompt + response into ids / mask. The mask keeps the response's trained tokens
 * (after the prompt's rendering), or every assistant message's with all_turns. */
static alloy_status render_seq(reader *r, const part *prompt, const part *resp, bool all_turns, alloy_ids *ids,
                               alloy_ids *mask) {
    ids->n = mask->n = 0;
    alloy_status s = ALLOY_STATUS_OK;
    if (r->tmpl == ALLOY_CHAT_TEMPLATE_RAW) {
        const char *t = raw_text(r, resp, "response", &s);
        if (!t) return s;
        for (size_t i = 0; i < r->pids.n && !s; i++) s = push_id(r->pids.data[i], 0, ids, mask);
        if (!s) s = push_text(r->tok, t, strlen(t), 1, ids, mask);
        if (!s && r->eot >= 0) s = push_id(r->eot, 1, ids, mask);
        return s;
    }
    int n = 0;
    s = add_messages(r, prompt, "user", &n);
    if (!s && resp) s = add_messages(r, resp, "assistant", &n);
    if (!s) s = alloy_chat_render(r->tok, r->msgs, n, false, ids, mask);
    if (s || all_turns) return s;
    if (r->pids.n > ids->n || memcmp(r->pids.data, ids->data, sizeof(int32_t) * r->pids.n) != 0)
        return alloy_fail(ALLOY_STATUS_INTERNAL, "%s:%lld: the prompt's rendering is not a prefix of the example's", r->path,
                          (long long)r->line);
    for (size_t i = 0; i < r->pids.n; i++) mask->data[i] = 0;
    return ALLOY_STATUS_OK;
}

static alloy_status grow(void **p, int64_t cap, int64_t c, size_t elem) {
    void *q = alloy_realloc(*p, elem * (size_t)cap, elem * (size_t)c);
    if (!q) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory reading alignment data (%lld items)", (long long)c);
    *p = q;
    return ALLOY_STATUS_OK;
}

/* Appends ids[from, to) with their mask as a sequence of the current example. */
static alloy_status store_seq(alloy_align_data *d, const alloy_ids *ids, const alloy_ids *mask, int64_t from, int64_t to) {
    int64_t n = to - from;
    if (d->n_tokens + n > d->tokens_cap) {
        int64_t c = d->tokens_cap ? d->tokens_cap : 4096;
        while (c < d->n_tokens + n) c *= 2;
        alloy_status s = grow((void **)&d->tokens, d->tokens_cap, c, sizeof(int32_t));
        if (!s) s = grow((void **)&d->mask, d->tokens_cap, c, 1);
        if (s) return s;
        d->tokens_cap = c;
    }
    if (d->n_seqs + 2 > d->seqs_cap) {
        int64_t c = d->seqs_cap ? 2 * d->seqs_cap : 1024;
        alloy_status s = grow((void **)&d->seq_start, d->seqs_cap, c, sizeof(int64_t));
        if (s) return s;
        d->seqs_cap = c;
    }
    for (int64_t i = 0; i < n; i++) {
        d->tokens[d->n_tokens + i] = ids->data[from + i];
        d->mask[d->n_tokens + i] = (uint8_t)(mask->data[from + i] != 0);
    }
    d->n_tokens += n;
    d->seq_start[++d->n_seqs] = d->n_tokens;
    if (n > d->max_len) d->max_len = (int)n;
    return ALLOY_STATUS_OK;
}

/* Makes room for k sequences in the reader's scratch. */
static alloy_status reserve_seqs(reader *r, int k) {
    if (k <= r->seqs_cap) return ALLOY_STATUS_OK;
    int cap = k < 8 ? 8 : 2 * k;
    alloy_ids *a = alloy_realloc(r->sids, sizeof *a * (size_t)r->seqs_cap, sizeof *a * (size_t)cap);
    if (a) r->sids = a;
    alloy_ids *b = a ? alloy_realloc(r->smask, sizeof *b * (size_t)r->seqs_cap, sizeof *b * (size_t)cap) : NULL;
    if (b) r->smask = b;
    part *c = b ? alloy_realloc(r->parts, sizeof *c * (size_t)r->seqs_cap, sizeof *c * (size_t)cap) : NULL;
    if (!c) return ALLOY_STATUS_NOMEM;
    r->parts = c;
    for (int i = r->seqs_cap; i < cap; i++) {
        memset(&r->sids[i], 0, sizeof r->sids[i]);
        memset(&r->smask[i], 0, sizeof r->smask[i]);
    }
    r->seqs_cap = cap;
    return ALLOY_STATUS_OK;
}

/* Without "prompt": the common beginning of chosen and rejected (both strings, or both lists of
 * messages) becomes the prompt, the rest the responses. A space just before the cut goes with
 * the responses, as TRL does. */
static alloy_status implicit_prompt(reader *r, const cJSON *c, const cJSON *j, part *prompt, part *pc, part *pj) {
    if (cJSON_IsString(c) && cJSON_IsString(j)) {
        const char *a = c->valuestring, *b = j->valuestring;
        size_t p = 0;
        while (a[p] && a[p] == b[p]) p++;
        while (p > 0 && ((unsigned char)a[p] & 0xC0) == 0x80) p--; // a whole character
        if (p > 0 && a[p - 1] == ' ') p--;
        prompt->text = alloy_malloc(p + 1);
        pc->text = alloy_strdup(a + p);
        pj->text = alloy_strdup(b + p);
        if (!prompt->text || !pc->text || !pj->text) return ALLOY_STATUS_NOMEM;
        memcpy(prompt->text, a, p);
        prompt->text[p] = '\0';
        return ALLOY_STATUS_OK;
    }
    if (cJSON_IsArray(c) && cJSON_IsArray(j)) {
        int nc = cJSON_GetArraySize(c), nj = cJSON_GetArraySize(j), q = 0;
        alloy_status s = ALLOY_STATUS_OK;
        while (q < nc - 1 && q < nj - 1) { // each response keeps at least its last message
            const cJSON *x = message_at(r, c, q, &s), *y = x ? message_at(r, j, q, &s) : NULL;
            if (!y) return s;
            const char *rx = cJSON_GetObjectItemCaseSensitive(x, "role")->valuestring;
            const char *ry = cJSON_GetObjectItemCaseSensitive(y, "role")->valuestring;
            const char *cx = cJSON_GetObjectItemCaseSensitive(x, "content")->valuestring;
            const char *cy = cJSON_GetObjectItemCaseSensitive(y, "content")->valuestring;
            if (strcmp(rx, ry) || strcmp(cx, cy)) break;
            q++;
        }
        *prompt = (part){.json = c, .first = 0, .count = q};
        *pc = (part){.json = c, .first = q, .count = nc - q};
        *pj = (part){.json = j, .first = q, .count = nj - q};
        return ALLOY_STATUS_OK;
    }
    return bad(r, "\"chosen\" and \"rejected\" must both be strings or both lists of messages");
}

static const cJSON *field(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static alloy_status new_example(alloy_align_data *d);

/* A PPO prompt: the rendered prompt (ChatML: with the generation prompt), its end kept when
 * it is longer than max_len; mask 0 throughout (nothing in it is trained on). */
static alloy_status read_prompt(reader *r, const cJSON *prompt) {
    if (!prompt) return bad(r, "needs \"prompt\"");
    if (!cJSON_IsString(prompt) && !(cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) > 0))
        return bad(r, "\"prompt\" must be a string or a non-empty list of messages");
    part pp = json_part(prompt);
    alloy_status s = render_prompt(r, &pp, true);
    if (!s && r->pids.n == 0) s = bad(r, "renders to no tokens");
    if (!s) s = new_example(r->d);
    if (!s) {
        int64_t n = (int64_t)r->pids.n, drop = n > r->max_len ? n - r->max_len : 0;
        r->d->truncated += drop > 0;
        s = store_seq(r->d, &r->pids, &r->pmask, drop, n);
    }
    if (!s) {
        alloy_align_data *d = r->d;
        d->ex_line[d->n_examples] = r->line;
        d->ex_start[++d->n_examples] = d->n_seqs;
        if (d->max_seqs < 1) d->max_seqs = 1;
    }
    return s;
}

/* Makes room for one more example's entries. */
static alloy_status new_example(alloy_align_data *d) {
    if (d->n_examples + 2 <= d->ex_cap) return ALLOY_STATUS_OK;
    int64_t c = d->ex_cap ? 2 * d->ex_cap : 1024;
    alloy_status s = grow((void **)&d->ex_start, d->ex_cap, c, sizeof(int64_t));
    if (!s) s = grow((void **)&d->ex_line, d->ex_cap, c, sizeof(int64_t));
    if (!s) d->ex_cap = c;
    return s;
}

/* One line's example: its parts, rendered, truncated and stored. */
static alloy_status read_example(reader *r, const cJSON *o) {
    const cJSON *prompt = field(o, "prompt"), *messages = field(o, "messages"), *chosen = field(o, "chosen"),
                *rejected = field(o, "rejected"), *responses = field(o, "responses");
    const cJSON *response = field(o, "response") ? field(o, "response") : field(o, "completion");
    const char *resp_name = field(o, "response") ? "response" : "completion";
    alloy_align_kind k = r->kind;
    bool pair = chosen || rejected, conv = false;
    int K = 0;
    part pp = {0};
    alloy_status s = ALLOY_STATUS_OK;
    if (k == ALLOY_ALIGN_PROMPT) return read_prompt(r, prompt);
    // which fields make the example
    if (messages && (k == ALLOY_ALIGN_SFT || k == ALLOY_ALIGN_SCORE) && !prompt && !response && !pair && !responses) {
        if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
            return bad(r, "\"messages\" must be a non-empty list of messages");
        if (r->tmpl == ALLOY_CHAT_TEMPLATE_RAW)
            return bad(r, "\"messages\" needs the chatml template (the raw template renders prompt and response strings)");
        conv = true;
        K = 1;
    } else if (k == ALLOY_ALIGN_SFT) {
        if (!prompt || !response) return bad(r, "needs \"prompt\" and \"response\" (or \"messages\")");
        K = 1;
    } else if (responses && (k == ALLOY_ALIGN_REWARD || k == ALLOY_ALIGN_SCORE) && !pair && !response) {
        int min = k == ALLOY_ALIGN_REWARD ? 2 : 1;
        if (!cJSON_IsArray(responses) || cJSON_GetArraySize(responses) < min)
            return bad(r, "\"responses\" must be a list of at least %d response%s", min,
                       min > 1 ? "s, best first" : "");
        if (!prompt) return bad(r, "\"responses\" needs a \"prompt\"");
        K = cJSON_GetArraySize(responses);
    } else if (pair && !response && !responses) {
        if (!chosen || !rejected) return bad(r, "needs both \"chosen\" and \"rejected\"");
        K = 2;
    } else if (k == ALLOY_ALIGN_SCORE && response && prompt && !pair && !responses) {
        K = 1;
    } else {
        static const char *const need[] = {
            "", "needs \"chosen\" and \"rejected\" (with or without \"prompt\"), or \"prompt\" and a ranking \"responses\"",
            "needs \"chosen\" and \"rejected\" (with or without \"prompt\")",
            "needs \"prompt\" and \"response\" or \"responses\", \"chosen\" and \"rejected\", or \"messages\""};
        return bad(r, "%s", need[k]);
    }
    if (prompt && !cJSON_IsString(prompt) && !cJSON_IsArray(prompt))
        return bad(r, "\"prompt\" must be a string or a list of messages");
    if ((s = reserve_seqs(r, K))) return s;
    // the parts
    if (conv) {
        pp = json_part(messages);
    } else if (K == 2 && pair) {
        if (!is_response(chosen) || !is_response(rejected))
            return bad(r, "\"chosen\" and \"rejected\" must be strings or non-empty lists of messages");
        if (prompt) {
            pp = json_part(prompt);
            r->parts[0] = json_part(chosen);
            r->parts[1] = json_part(rejected);
        } else {
            memset(r->parts, 0, 2 * sizeof *r->parts);
            s = implicit_prompt(r, chosen, rejected, &pp, &r->parts[0], &r->parts[1]);
        }
    } else if (responses) {
        pp = json_part(prompt);
        int i = 0;
        for (const cJSON *e = responses->child; e; e = e->next, i++) {
            if (!is_response(e)) return bad(r, "every entry of \"responses\" must be a string or a non-empty list of messages");
            r->parts[i] = json_part(e);
        }
    } else {
        if (!is_response(response)) return bad(r, "\"%s\" must be a string or a non-empty list of messages", resp_name);
        pp = json_part(prompt);
        r->parts[0] = json_part(response);
    }
    // render
    int64_t Lp = 0;
    if (!s && conv) {
        Lp = 0;
        s = render_seq(r, &pp, NULL, true, &r->sids[0], &r->smask[0]);
    } else if (!s) {
        s = render_prompt(r, &pp, starts_as_assistant(&r->parts[0]));
        Lp = (int64_t)r->pids.n;
        for (int i = 0; i < K && !s; i++) s = render_seq(r, &pp, &r->parts[i], false, &r->sids[i], &r->smask[i]);
    }
    if (!s) {
        for (int i = 0; i < K; i++)
            if (r->sids[i].n == 0) s = bad(r, "renders to no tokens");
    }
    // truncate and store
    alloy_align_data *d = r->d;
    int64_t M = r->max_len;
    if (!s) s = new_example(d);
    if (!s) {
        int64_t rmax = 0;
        for (int i = 0; i < K; i++)
            if ((int64_t)r->sids[i].n - Lp > rmax) rmax = (int64_t)r->sids[i].n - Lp;
        int64_t drop = 0; // tokens cut from the start of every sequence
        if (k != ALLOY_ALIGN_SFT && Lp + rmax > M) {
            int64_t keep = M - rmax, half = Lp < M / 2 ? Lp : M / 2;
            if (keep < half) keep = half;
            drop = Lp - keep;
        }
        if (conv && k == ALLOY_ALIGN_SCORE && (int64_t)r->sids[0].n > M) drop = (int64_t)r->sids[0].n - M; // score the end
        for (int i = 0; i < K && !s; i++) {
            int64_t n = (int64_t)r->sids[i].n, to = n - drop > M ? drop + M : n;
            d->truncated += drop > 0 || to < n;
            s = store_seq(d, &r->sids[i], &r->smask[i], drop, to);
        }
    }
    if (!s) {
        d->ex_line[d->n_examples] = r->line;
        d->ex_start[++d->n_examples] = d->n_seqs;
        if (K > d->max_seqs) d->max_seqs = K;
    }
    alloy_free(pp.text);
    for (int i = 0; i < K; i++)
        if (!r->parts[i].json) alloy_free(r->parts[i].text);
    return s;
}

void alloy_align_data_free(alloy_align_data *d) {
    alloy_free(d->path);
    alloy_free(d->tokens);
    alloy_free(d->mask);
    alloy_free(d->seq_start);
    alloy_free(d->ex_start);
    alloy_free(d->ex_line);
    memset(d, 0, sizeof *d);
}

alloy_status alloy_align_data_read(alloy_align_data *d, const char *path, const alloy_tokenizer *tok, alloy_align_kind kind,
                                   alloy_chat_template tmpl, int max_len) {
    memset(d, 0, sizeof *d);
    if (max_len < 2) return alloy_fail(ALLOY_STATUS_USAGE, "sequences must be allowed at least 2 tokens (got %d)", max_len);
    if (kind < ALLOY_ALIGN_SFT || kind > ALLOY_ALIGN_PROMPT) return alloy_fail(ALLOY_STATUS_USAGE, "unknown alignment data kind");
    if (tmpl == ALLOY_CHAT_TEMPLATE_CHATML && (alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_START) < 0 || alloy_chat_end_id(tok) < 0))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the tokenizer has no %s and %s tokens (the ChatML template needs them)",
                          ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END);
    alloy_file_map map;
    alloy_status s = alloy_file_map_open(&map, path);
    if (s) return s;
    reader r = {.d = d, .tok = tok, .kind = kind, .tmpl = tmpl, .max_len = max_len, .path = path,
                .eot = alloy_tokenizer_special_id(tok, "<|endoftext|>")};
    d->path = alloy_strdup(path);
    d->seq_start = alloy_calloc(1024, sizeof(int64_t));
    d->ex_start = alloy_calloc(1024, sizeof(int64_t));
    d->ex_line = alloy_calloc(1024, sizeof(int64_t));
    d->seqs_cap = d->ex_cap = 1024;
    if (!d->path || !d->seq_start || !d->ex_start || !d->ex_line) s = ALLOY_STATUS_NOMEM;
    const char *p = (const char *)map.data, *end = p ? p + map.size : p;
    while (!s && p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        r.line++;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < le) {
            const char *parse_end = NULL;
            cJSON *o = cJSON_ParseWithLengthOpts(p, (size_t)(le - p), &parse_end, 0);
            if (o && parse_end) { // only whitespace may follow the value on its line
                for (const char *t = parse_end; t < le; t++)
                    if (*t != ' ' && *t != '\t' && *t != '\r') {
                        cJSON_Delete(o);
                        o = NULL;
                        break;
                    }
            }
            if (!o) s = bad(&r, "not valid JSON");
            else if (!cJSON_IsObject(o)) s = bad(&r, "not a JSON object");
            else s = read_example(&r, o);
            cJSON_Delete(o);
        }
        p = nl ? nl + 1 : end;
    }
    if (!s && d->n_examples == 0) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: no examples", path);
    if (!s) {
        uint64_t h = ALLOY_FNV64_INIT;
        h = alloy_fnv64(h, d->tokens, sizeof(int32_t) * (size_t)d->n_tokens);
        h = alloy_fnv64(h, d->mask, (size_t)d->n_tokens);
        h = alloy_fnv64(h, d->seq_start, sizeof(int64_t) * (size_t)(d->n_seqs + 1));
        h = alloy_fnv64(h, d->ex_start, sizeof(int64_t) * (size_t)(d->n_examples + 1));
        d->fingerprint = h;
    }
    alloy_ids_free(&r.pids);
    alloy_ids_free(&r.pmask);
    for (int i = 0; i < r.seqs_cap; i++) {
        alloy_ids_free(&r.sids[i]);
        alloy_ids_free(&r.smask[i]);
    }
    alloy_free(r.sids);
    alloy_free(r.smask);
    alloy_free(r.parts);
    alloy_free(r.msgs);
    alloy_file_map_close(&map);
    if (s) alloy_align_data_free(d);
    return s;
}
