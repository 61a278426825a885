/*
 * conversation.c — conversation data (alloy/chat.h): each record of alignment examples (a JSONL
 * line or a JSON array's element, read through alloy/records.h: files, folders, gzip, zstd)
 * turned into one example of one or more sequences (prompt + response), rendered through the
 * chat template (chat.c), with a mask of the tokens the objective uses. A record in another
 * layout is first normalised to alloy's fields (layouts.c). alloy/data.h's readers deal in plain
 * text; these examples need the template to decide what a sequence is.
 */
#include "alloy/chat.h"
#include "alloy/records.h"
#include "internal.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *alloy_align_kind_name(alloy_align_kind k) {
    static const char *const names[] = {"sft", "reward", "dpo", "score", "prompt"};
    return k >= ALLOY_ALIGN_SFT && k <= ALLOY_ALIGN_PROMPT ? names[k] : "?";
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
    const char *path;          /* the file of the example being read */
    int64_t line;              /* its line (JSONL) or element (JSON array) */
    const char *where;         /* "FILE:LINE" or "FILE: element N" (alloy_records_where) */
    const alloy_data_fields *fields; /* the layout and field names asked for (NULL: detected, own names) */
    alloy_data_layout layout;  /* the file's layout (AUTO until its first record) */
    const char *layout_file;   /* the file whose first record decided it */
    bool detected;             /* the layout is the first record's (not fields->layout) */
    bool in_record;            /* errors are about a record's fields: they name the layout */
    int32_t eot;               /* <|endoftext|> closes a raw response; -1 if the tokenizer lacks it */
    alloy_ids pids, pmask;     /* scratch: the rendered prompt */
    alloy_ids *sids, *smask;   /* scratch: (seqs_cap) each rendered sequence */
    part *parts;               /* scratch: (seqs_cap) the responses */
    int seqs_cap;
    alloy_chat_message *msgs;  /* scratch: (msgs_cap) messages of one rendering */
    int msgs_cap;
} reader;

/* FORMAT "FILE:LINE: message" ("FILE: element N: message" in a JSON array), and while a
 * record's fields are read " (the file's layout is NAME, ...)" after it. */
static alloy_status bad(const reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static alloy_status bad(const reader *r, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!r->in_record) return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s", r->where, msg);
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s: %s (the file's layout is %s, %s)", r->where, msg, alloy_data_layout_name(r->layout),
                      r->detected ? "from its first record; --layout names another" : "as --layout says");
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
        return t ? chat_push_text(r->tok, t, strlen(t), 0, &r->pids, &r->pmask) : s;
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
        for (size_t i = 0; i < r->pids.n && !s; i++) s = chat_push_id(r->pids.data[i], 0, ids, mask);
        if (!s) s = chat_push_text(r->tok, t, strlen(t), 1, ids, mask);
        if (!s && r->eot >= 0) s = chat_push_id(r->eot, 1, ids, mask);
        return s;
    }
    int n = 0;
    s = add_messages(r, prompt, "user", &n);
    if (!s && resp) s = add_messages(r, resp, "assistant", &n);
    if (!s) s = alloy_chat_render(r->tok, r->msgs, n, false, ids, mask);
    if (s || all_turns) return s;
    if (r->pids.n > ids->n || memcmp(r->pids.data, ids->data, sizeof(int32_t) * r->pids.n) != 0)
        return alloy_fail(ALLOY_STATUS_INTERNAL, "%s: the prompt's rendering is not a prefix of the example's", r->where);
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
        memset(&r->parts[i], 0, sizeof r->parts[i]);
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

/* Makes room for one more example's entries. */
static alloy_status new_example(alloy_align_data *d) {
    if (d->n_examples + 2 <= d->ex_cap) return ALLOY_STATUS_OK;
    int64_t c = d->ex_cap ? 2 * d->ex_cap : 1024;
    alloy_status s = grow((void **)&d->ex_start, d->ex_cap, c, sizeof(int64_t));
    if (!s) s = grow((void **)&d->ex_line, d->ex_cap, c, sizeof(int64_t));
    if (!s) d->ex_cap = c;
    return s;
}

/* Closes the example whose K sequences were just stored (new_example made room). */
static void end_example(reader *r, int K) {
    alloy_align_data *d = r->d;
    d->ex_line[d->n_examples] = r->line;
    d->ex_start[++d->n_examples] = d->n_seqs;
    if (K > d->max_seqs) d->max_seqs = K;
}

/* Checking only (a reader without a tokenizer: alloy_align_data_check): the parts of an example
 * (the prompt pp, then r->parts[0 .. K-1]; a conversation's messages alone) as rendering would
 * take them, and the example counted. */
static alloy_status check_example(reader *r, const part *pp, int K, bool conv) {
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = -1; i < (conv ? 0 : K) && !s; i++) {
        const part *p = i < 0 ? pp : &r->parts[i];
        int n = 0;
        if (r->tmpl == ALLOY_CHAT_TEMPLATE_RAW) raw_text(r, p, i < 0 ? "prompt" : "response", &s);
        else s = add_messages(r, p, i < 0 ? "user" : "assistant", &n);
    }
    if (!s) r->d->n_examples++;
    return s;
}

/* A PPO prompt: the rendered prompt (ChatML: with the generation prompt), its end kept when
 * it is longer than max_len; mask 0 throughout (nothing in it is trained on). */
static alloy_status read_prompt(reader *r, const cJSON *prompt) {
    if (!prompt) return bad(r, "needs \"prompt\"");
    if (!cJSON_IsString(prompt) && !(cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) > 0))
        return bad(r, "\"prompt\" must be a string or a non-empty list of messages");
    part pp = json_part(prompt);
    if (!r->tok) return check_example(r, &pp, 0, false);
    alloy_status s = render_prompt(r, &pp, true);
    if (!s && r->pids.n == 0) s = bad(r, "renders to no tokens");
    if (!s) s = new_example(r->d);
    if (!s) {
        int64_t n = (int64_t)r->pids.n, drop = n > r->max_len ? n - r->max_len : 0;
        r->d->truncated += drop > 0;
        s = store_seq(r->d, &r->pids, &r->pmask, drop, n);
    }
    if (!s) end_example(r, 1);
    return s;
}

/* The fields of a line that can make an example. */
typedef struct own_fields {
    const cJSON *prompt, *messages, *chosen, *rejected, *responses;
    const cJSON *response; /* "response", or else "completion" */
    const char *resp_name; /* which of the two */
} own_fields;

/* Which fields make the example for r->kind: *K gets its number of sequences, *conv whether it
 * is one conversation ("messages", every assistant turn trained). FORMAT "FILE:LINE: ..." naming
 * what the kind needs otherwise. */
static alloy_status example_shape(const reader *r, const own_fields *f, int *K, bool *conv) {
    alloy_align_kind k = r->kind;
    bool pair = f->chosen || f->rejected;
    *K = 0;
    *conv = false;
    if (f->messages && (k == ALLOY_ALIGN_SFT || k == ALLOY_ALIGN_SCORE) && !f->prompt && !f->response && !pair &&
        !f->responses) {
        if (!cJSON_IsArray(f->messages) || cJSON_GetArraySize(f->messages) == 0)
            return bad(r, "\"messages\" must be a non-empty list of messages");
        if (r->tmpl == ALLOY_CHAT_TEMPLATE_RAW)
            return bad(r, "\"messages\" needs the chatml template (the raw template renders prompt and response strings)");
        *conv = true;
        *K = 1;
    } else if (k == ALLOY_ALIGN_SFT) {
        if (!f->prompt || !f->response) return bad(r, "needs \"prompt\" and \"response\" (or \"messages\")");
        *K = 1;
    } else if (f->responses && (k == ALLOY_ALIGN_REWARD || k == ALLOY_ALIGN_SCORE) && !pair && !f->response) {
        int min = k == ALLOY_ALIGN_REWARD ? 2 : 1;
        if (!cJSON_IsArray(f->responses) || cJSON_GetArraySize(f->responses) < min)
            return bad(r, "\"responses\" must be a list of at least %d response%s", min,
                       min > 1 ? "s, best first" : "");
        if (!f->prompt) return bad(r, "\"responses\" needs a \"prompt\"");
        *K = cJSON_GetArraySize(f->responses);
    } else if (pair && !f->response && !f->responses) {
        if (!f->chosen || !f->rejected) return bad(r, "needs both \"chosen\" and \"rejected\"");
        *K = 2;
    } else if (k == ALLOY_ALIGN_SCORE && f->response && f->prompt && !pair && !f->responses) {
        *K = 1;
    } else {
        static const char *const need[] = {
            "", "needs \"chosen\" and \"rejected\" (with or without \"prompt\"), or \"prompt\" and a ranking \"responses\"",
            "needs \"chosen\" and \"rejected\" (with or without \"prompt\")",
            "needs \"prompt\" and \"response\" or \"responses\", \"chosen\" and \"rejected\", or \"messages\""};
        return bad(r, "%s", need[k]);
    }
    if (f->prompt && !cJSON_IsString(f->prompt) && !cJSON_IsArray(f->prompt))
        return bad(r, "\"prompt\" must be a string or a list of messages");
    return ALLOY_STATUS_OK;
}

/* The example's parts: the prompt (*pp; a conversation's messages) and its K responses
 * r->parts[0 .. K-1]. Text it allocates (an implicit prompt's) is owned by *pp and the parts,
 * even on failure. */
static alloy_status example_parts(reader *r, const own_fields *f, int K, bool conv, part *pp) {
    if (conv) {
        *pp = json_part(f->messages);
    } else if (K == 2 && (f->chosen || f->rejected)) {
        if (!is_response(f->chosen) || !is_response(f->rejected))
            return bad(r, "\"chosen\" and \"rejected\" must be strings or non-empty lists of messages");
        if (!f->prompt) {
            memset(r->parts, 0, 2 * sizeof *r->parts);
            return implicit_prompt(r, f->chosen, f->rejected, pp, &r->parts[0], &r->parts[1]);
        }
        *pp = json_part(f->prompt);
        r->parts[0] = json_part(f->chosen);
        r->parts[1] = json_part(f->rejected);
    } else if (f->responses) {
        *pp = json_part(f->prompt);
        int i = 0;
        for (const cJSON *e = f->responses->child; e; e = e->next, i++) {
            if (!is_response(e)) return bad(r, "every entry of \"responses\" must be a string or a non-empty list of messages");
            r->parts[i] = json_part(e);
        }
    } else {
        if (!is_response(f->response))
            return bad(r, "\"%s\" must be a string or a non-empty list of messages", f->resp_name);
        *pp = json_part(f->prompt);
        r->parts[0] = json_part(f->response);
    }
    return ALLOY_STATUS_OK;
}

/* Renders the example's K sequences into r->sids / r->smask; *Lp gets the rendered prompt's
 * length (0 for a conversation). */
static alloy_status render_example(reader *r, const part *pp, int K, bool conv, int64_t *Lp) {
    alloy_status s;
    *Lp = 0;
    if (conv) {
        s = render_seq(r, pp, NULL, true, &r->sids[0], &r->smask[0]);
    } else {
        s = render_prompt(r, pp, starts_as_assistant(&r->parts[0]));
        *Lp = (int64_t)r->pids.n;
        for (int i = 0; i < K && !s; i++) s = render_seq(r, pp, &r->parts[i], false, &r->sids[i], &r->smask[i]);
    }
    for (int i = 0; i < K && !s; i++)
        if (r->sids[i].n == 0) s = bad(r, "renders to no tokens");
    return s;
}

/* Truncates the K rendered sequences (prompt length Lp) to max_len as alloy_align_data_read
 * says and stores them as one example. */
static alloy_status store_example(reader *r, int K, bool conv, int64_t Lp) {
    alloy_align_data *d = r->d;
    int64_t M = r->max_len;
    alloy_status s = new_example(d);
    if (s) return s;
    int64_t rmax = 0;
    for (int i = 0; i < K; i++)
        if ((int64_t)r->sids[i].n - Lp > rmax) rmax = (int64_t)r->sids[i].n - Lp;
    int64_t drop = 0; // tokens cut from the start of every sequence
    if (r->kind != ALLOY_ALIGN_SFT && Lp + rmax > M) {
        int64_t keep = M - rmax, half = Lp < M / 2 ? Lp : M / 2;
        if (keep < half) keep = half;
        drop = Lp - keep;
    }
    if (conv && r->kind == ALLOY_ALIGN_SCORE && (int64_t)r->sids[0].n > M) drop = (int64_t)r->sids[0].n - M; // score the end
    for (int i = 0; i < K && !s; i++) {
        int64_t n = (int64_t)r->sids[i].n, to = n - drop > M ? drop + M : n;
        d->truncated += drop > 0 || to < n;
        s = store_seq(d, &r->sids[i], &r->smask[i], drop, to);
    }
    if (!s) end_example(r, K);
    return s;
}

/* A record in alloy's fields: its parts, rendered, truncated and stored. */
static alloy_status read_fields(reader *r, const cJSON *o) {
    own_fields f = {.prompt = field(o, "prompt"), .messages = field(o, "messages"), .chosen = field(o, "chosen"),
                    .rejected = field(o, "rejected"), .responses = field(o, "responses")};
    f.response = field(o, "response") ? field(o, "response") : field(o, "completion");
    f.resp_name = field(o, "response") ? "response" : "completion";
    if (r->kind == ALLOY_ALIGN_PROMPT) return read_prompt(r, f.prompt);
    int K;
    bool conv;
    alloy_status s = example_shape(r, &f, &K, &conv);
    if (!s) s = reserve_seqs(r, K);
    if (s) return s;
    part pp = {0};
    int64_t Lp = 0;
    s = example_parts(r, &f, K, conv, &pp);
    if (!s && !r->tok) s = check_example(r, &pp, K, conv);
    else if (!s) s = render_example(r, &pp, K, conv, &Lp);
    if (!s && r->tok) s = store_example(r, K, conv, Lp);
    alloy_free(pp.text);
    for (int i = 0; i < K; i++)
        if (!r->parts[i].json) {
            alloy_free(r->parts[i].text);
            r->parts[i].text = NULL; // a later example may leave this part unset (a conversation has none)
        }
    return s;
}

/* One record's example: the record normalised to alloy's fields in its file's layout (detected
 * from the file's first record unless one was asked for), then read. */
static alloy_status read_example(reader *r, const cJSON *rec) {
    if (r->detected && r->path != r->layout_file) r->layout = ALLOY_LAYOUT_AUTO; // a folder's next file decides anew
    if (r->layout == ALLOY_LAYOUT_AUTO) {
        r->layout = alloy_data_layout_detect(rec, r->fields);
        r->layout_file = r->path;
        r->detected = true;
        if (r->d->layout == ALLOY_LAYOUT_AUTO) r->d->layout = r->layout;
    }
    cJSON *own = NULL;
    r->in_record = true;
    alloy_status s = alloy_data_layout_normalize(r->layout, rec, r->fields, r->kind, r->tmpl, &own);
    if (s == ALLOY_STATUS_FORMAT) s = bad(r, "%s", alloy_last_error());
    if (!s) s = read_fields(r, own ? own : rec);
    r->in_record = false;
    cJSON_Delete(own);
    return s;
}

/* Frees a reader's scratch. */
static void reader_free(reader *r) {
    alloy_ids_free(&r->pids);
    alloy_ids_free(&r->pmask);
    for (int i = 0; i < r->seqs_cap; i++) {
        alloy_ids_free(&r->sids[i]);
        alloy_ids_free(&r->smask[i]);
    }
    alloy_free(r->sids);
    alloy_free(r->smask);
    alloy_free(r->parts);
    alloy_free(r->msgs);
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
                                   alloy_chat_template tmpl, int max_len, const alloy_data_fields *fields) {
    memset(d, 0, sizeof *d);
    if (max_len < 2) return alloy_fail(ALLOY_STATUS_USAGE, "sequences must be allowed at least 2 tokens (got %d)", max_len);
    if (kind < ALLOY_ALIGN_SFT || kind > ALLOY_ALIGN_PROMPT) return alloy_fail(ALLOY_STATUS_USAGE, "unknown alignment data kind");
    if (fields && (fields->layout < ALLOY_LAYOUT_AUTO || fields->layout > ALLOY_LAYOUT_HH_RLHF))
        return alloy_fail_option(ALLOY_STATUS_USAGE, "layout", "is not a known layout (%d)", (int)fields->layout);
    if (tmpl == ALLOY_CHAT_TEMPLATE_CHATML && (alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_START) < 0 || alloy_chat_end_id(tok) < 0))
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the tokenizer has no %s and %s tokens (the ChatML template needs them)",
                          ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END);
    alloy_records *rec = NULL;
    alloy_records_options ro = {.objects = true}; // strict: a bad line stops the run
    alloy_status s = alloy_records_open(&rec, path, &ro);
    if (s) return s;
    reader r = {.d = d, .tok = tok, .kind = kind, .tmpl = tmpl, .max_len = max_len, .path = path, .fields = fields,
                .layout = fields ? fields->layout : ALLOY_LAYOUT_AUTO, .eot = alloy_tokenizer_special_id(tok, "<|endoftext|>")};
    d->layout = r.layout;
    d->path = alloy_strdup(path);
    d->seq_start = alloy_calloc(1024, sizeof(int64_t));
    d->ex_start = alloy_calloc(1024, sizeof(int64_t));
    d->ex_line = alloy_calloc(1024, sizeof(int64_t));
    d->seqs_cap = d->ex_cap = 1024;
    if (!d->path || !d->seq_start || !d->ex_start || !d->ex_line) s = ALLOY_STATUS_NOMEM;
    for (bool end = false; !s;) {
        const cJSON *o;
        if ((s = alloy_records_next(rec, &o, &end)) || end) break;
        r.path = alloy_records_file(rec);
        r.line = alloy_records_line(rec);
        r.where = alloy_records_where(rec);
        s = read_example(&r, o);
    }
    if (!s && d->n_examples == 0) {
        char note[64] = "";
        uint64_t binary = alloy_records_get_stats(rec)->skipped_binary;
        if (binary) snprintf(note, sizeof note, " (%llu binary file(s) skipped)", (unsigned long long)binary);
        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: no examples%s", path, note);
    }
    if (!s) {
        uint64_t h = ALLOY_FNV64_INIT;
        h = alloy_fnv64(h, d->tokens, sizeof(int32_t) * (size_t)d->n_tokens);
        h = alloy_fnv64(h, d->mask, (size_t)d->n_tokens);
        h = alloy_fnv64(h, d->seq_start, sizeof(int64_t) * (size_t)(d->n_seqs + 1));
        h = alloy_fnv64(h, d->ex_start, sizeof(int64_t) * (size_t)(d->n_examples + 1));
        d->fingerprint = h;
    }
    reader_free(&r);
    alloy_records_close(rec);
    if (s) alloy_align_data_free(d);
    return s;
}

/* ---- checking records without a tokenizer (alloy inspect) ---- */

/* The kind whose needs describe a layout's records best (when no kind reads them). */
static alloy_align_kind main_kind(alloy_data_layout l) {
    if (l == ALLOY_LAYOUT_TRL || l == ALLOY_LAYOUT_HH_RLHF) return ALLOY_ALIGN_DPO;
    return l == ALLOY_LAYOUT_ALLOY ? ALLOY_ALIGN_SCORE : ALLOY_ALIGN_SFT;
}

/* Gives one record to every kind's reader still reading (alive[k]): a kind that cannot read it
 * stops, its message kept in why[k] when it is the kind's first record, else the report's problem
 * when that is still empty. */
static alloy_status check_record(reader *rs, bool *alive, int64_t *read, char (*why)[512], const cJSON *o, alloy_records *rec,
                                 alloy_data_report *out) {
    for (int k = 0; k <= ALLOY_ALIGN_PROMPT; k++) {
        if (!alive[k]) continue;
        rs[k].path = alloy_records_file(rec);
        rs[k].line = alloy_records_line(rec);
        rs[k].where = alloy_records_where(rec);
        alloy_status s = read_example(&rs[k], o);
        if (s && s != ALLOY_STATUS_FORMAT) return s;
        if (!s) {
            read[k]++;
            continue;
        }
        alive[k] = false;
        if (read[k] == 0) snprintf(why[k], sizeof why[k], "%s", alloy_last_error());
        else if (!out->problem[0]) snprintf(out->problem, sizeof out->problem, "%s", alloy_last_error());
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_align_data_check(const char *path, const alloy_data_fields *fields, alloy_chat_template tmpl,
                                    alloy_data_report *out) {
    memset(out, 0, sizeof *out);
    alloy_data_layout given = fields ? fields->layout : ALLOY_LAYOUT_AUTO;
    if (given < ALLOY_LAYOUT_AUTO || given > ALLOY_LAYOUT_HH_RLHF)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "layout", "is not a known layout (%d)", (int)given);
    enum { NK = ALLOY_ALIGN_PROMPT + 1 };
    reader rs[NK];
    alloy_align_data ds[NK];
    bool alive[NK];
    int64_t read[NK] = {0};
    char why[NK][512];
    for (int k = 0; k < NK; k++) {
        memset(&ds[k], 0, sizeof ds[k]);
        rs[k] = (reader){.d = &ds[k], .kind = (alloy_align_kind)k, .tmpl = tmpl, .max_len = 2, .path = path, .fields = fields,
                         .layout = given, .eot = -1};
        alive[k] = true;
        why[k][0] = '\0';
    }
    alloy_records *rec = NULL;
    alloy_records_options ro = {.objects = true};
    alloy_status s = alloy_records_open(&rec, path, &ro);
    const char *file = NULL;
    for (bool end = false; !s;) {
        const cJSON *o;
        if ((s = alloy_records_next(rec, &o, &end)) == ALLOY_STATUS_FORMAT) { // no verb reads past it
            snprintf(out->problem, sizeof out->problem, "%s", alloy_last_error());
            memset(alive, 0, sizeof alive);
            s = ALLOY_STATUS_OK;
            break;
        }
        if (s || end) break;
        out->records++;
        if (alloy_records_file(rec) != file) { // a file's first record: its layout
            file = alloy_records_file(rec);
            alloy_data_layout l = given ? given : alloy_data_layout_detect(o, fields);
            if (!out->layouts) out->layout = l;
            out->layouts |= 1u << l;
        }
        s = check_record(rs, alive, read, why, o, rec, out);
    }
    if (rec) out->files = alloy_records_get_stats(rec)->files;
    for (int k = 0; k < NK; k++) {
        if (alive[k] && read[k] > 0) out->kinds |= 1u << k;
        reader_free(&rs[k]);
    }
    if (!s && out->records > 0 && !out->kinds && !out->problem[0])
        snprintf(out->problem, sizeof out->problem, "%.511s", why[main_kind(out->layout)]);
    alloy_records_close(rec);
    return s;
}
