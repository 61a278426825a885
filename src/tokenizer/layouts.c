/*
 * layouts.c — records in the layouts people have (Alpaca, ShareGPT, OpenAI messages, TRL's
 * preferences, Anthropic's hh-rlhf) normalised to alloy's own fields (alloy/chat.h), which
 * conversation.c then reads: detecting a record's layout, naming it, and rewriting a record.
 * A layout of alloy's own fields under their own names costs nothing: the record is used as it
 * is. Messages are in the layout's own terms, without a file or line (the reader adds them).
 */
#include "alloy/chat.h"

#include <cJSON.h>
#include <stdarg.h>
#include <string.h>

const char *const alloy_data_layout_names[] = {"auto", "alloy", "alpaca", "sharegpt", "openai", "trl", "hh-rlhf", NULL};

const char *alloy_data_layout_name(alloy_data_layout layout) {
    return layout >= ALLOY_LAYOUT_AUTO && layout <= ALLOY_LAYOUT_HH_RLHF ? alloy_data_layout_names[layout] : "?";
}

alloy_status alloy_data_layout_parse(const char *name, alloy_data_layout *out) {
    for (int i = 0; alloy_data_layout_names[i]; i++)
        if (!strcmp(name, alloy_data_layout_names[i])) {
            *out = (alloy_data_layout)i;
            return ALLOY_STATUS_OK;
        }
    return alloy_fail(ALLOY_STATUS_USAGE, "unknown layout \"%s\" (auto, alloy, alpaca, sharegpt, openai, trl or hh-rlhf)", name);
}

/* The schema of alloy_data_fields alone: the rows of a struct whose first member it is. */
typedef struct fields_opts {
    alloy_data_fields fields;
} fields_opts;
static const alloy_option field_rows[] = {ALLOY_OPT_DATA_FIELDS_ROWS(fields_opts, fields)};

const alloy_schema *alloy_data_fields_schema(void) {
    static const alloy_schema s = {field_rows, (int)(sizeof field_rows / sizeof field_rows[0])};
    return &s;
}

/* ---- field names ---- */

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* The name a role goes by: the one given, else the layout's own. */
static const char *role_name(const char *given, const char *own) { return given && given[0] ? given : own; }

/* The fields' names, with f NULL meaning the layouts' own. */
typedef struct names {
    const char *prompt, *response, *chosen, *rejected, *messages; /* "" for the layout's own */
} names;

static names names_of(const alloy_data_fields *f) {
    if (!f) return (names){"", "", "", "", ""};
    return (names){f->prompt, f->response, f->chosen, f->rejected, f->messages};
}

static bool renamed(const names *n) {
    return n->prompt[0] || n->response[0] || n->chosen[0] || n->rejected[0] || n->messages[0];
}

/* FORMAT with the message alone (the reader adds FILE:LINE and the layout). */
static alloy_status nope(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static alloy_status nope(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return alloy_fail(ALLOY_STATUS_FORMAT, "%s", msg);
}

/* ---- detection ---- */

static const char HH_HUMAN[] = "\n\nHuman:", HH_ASSISTANT[] = "\n\nAssistant:";

/* Whether s reads as an hh-rlhf transcript: "Human:" after leading blanks, an Assistant turn. */
static bool is_transcript(const cJSON *v) {
    if (!cJSON_IsString(v)) return false;
    const char *s = v->valuestring;
    while (*s == '\n' || *s == ' ' || *s == '\r' || *s == '\t') s++;
    return !strncmp(s, "Human:", 6) && strstr(s, HH_ASSISTANT) != NULL;
}

/* Whether v is a list whose first entry is a ShareGPT turn ({"from", ...}). */
static bool sharegpt_list(const cJSON *v) {
    return cJSON_IsArray(v) && cJSON_IsObject(v->child) && get(v->child, "from") != NULL;
}

alloy_data_layout alloy_data_layout_detect(const cJSON *rec, const alloy_data_fields *f) {
    names n = names_of(f);
    const char *P = role_name(n.prompt, "prompt"), *C = role_name(n.chosen, "chosen"), *J = role_name(n.rejected, "rejected");
    const cJSON *conv = get(rec, role_name(n.messages, "conversations"));
    const cJSON *msgs = get(rec, role_name(n.messages, "messages"));
    if ((conv && (!n.messages[0] || sharegpt_list(conv))) || sharegpt_list(msgs)) return ALLOY_LAYOUT_SHAREGPT;
    bool others = get(rec, P) || get(rec, role_name(n.response, "response")) || get(rec, "completion") || get(rec, C) ||
                  get(rec, J) || get(rec, "responses");
    if (msgs && !others) return ALLOY_LAYOUT_OPENAI;
    if (!get(rec, P) && is_transcript(get(rec, C)) && is_transcript(get(rec, J))) return ALLOY_LAYOUT_HH_RLHF;
    if ((get(rec, "instruction") || get(rec, "input") || get(rec, "output")) && !get(rec, "prompt") && !get(rec, C))
        return ALLOY_LAYOUT_ALPACA;
    if (get(rec, P) && get(rec, C) && get(rec, J)) return ALLOY_LAYOUT_TRL;
    return ALLOY_LAYOUT_ALLOY;
}

/* ---- building alloy's record ---- */

/* Adds v to o under key k as a reference (o does not own v); v NULL: nothing. */
static bool add_ref(cJSON *o, const char *k, const cJSON *v) {
    return !v || cJSON_AddItemReferenceToObject(o, k, (cJSON *)v);
}

static bool add_string(cJSON *o, const char *k, const char *text) { return cJSON_AddStringToObject(o, k, text) != NULL; }

/* {"role": role, "content": content[0, n)} appended to list. */
static bool add_message(cJSON *list, const char *role, const char *content, size_t n) {
    cJSON *m = cJSON_CreateObject();
    char *c = alloy_malloc(n + 1);
    bool ok = m && c && cJSON_AddItemToArray(list, m);
    if (!ok) {
        cJSON_Delete(m);
        alloy_free(c);
        return false;
    }
    memcpy(c, content, n);
    c[n] = '\0';
    ok = add_string(m, "role", role) && add_string(m, "content", c);
    alloy_free(c);
    return ok;
}

/* How many messages of a conversation come before its last assistant messages (a PPO
 * prompt's). */
static int prompt_length(const cJSON *msgs) {
    int n = cJSON_GetArraySize(msgs);
    while (n > 0) {
        const cJSON *ro = get(cJSON_GetArrayItem(msgs, n - 1), "role");
        if (!cJSON_IsString(ro) || strcmp(ro->valuestring, "assistant")) break;
        n--;
    }
    return n;
}

/* out[key] = msgs, or for kind PROMPT out["prompt"] = its messages before its last assistant
 * messages. out owns msgs (a new list) when own, else refers to it. */
static alloy_status put_conversation(cJSON *out, cJSON *msgs, bool own, alloy_align_kind kind, const char *key) {
    cJSON *v = msgs;
    if (kind == ALLOY_ALIGN_PROMPT && cJSON_IsArray(msgs)) {
        int n = prompt_length(msgs);
        if (n == 0) {
            if (own) cJSON_Delete(msgs);
            return nope("the conversation has no message before its replies to prompt with");
        }
        key = "prompt";
        if (own) {
            while (cJSON_GetArraySize(msgs) > n) cJSON_DeleteItemFromArray(msgs, n);
        } else { // a list of references to its first n messages
            v = cJSON_CreateArray();
            for (int i = 0; v && i < n; i++)
                if (!cJSON_AddItemReferenceToArray(v, cJSON_GetArrayItem(msgs, i))) {
                    cJSON_Delete(v);
                    v = NULL;
                }
            own = true;
            if (!v) return ALLOY_STATUS_NOMEM;
        }
    }
    if (!own) return add_ref(out, key, v) ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (cJSON_AddItemToObject(out, key, v)) return ALLOY_STATUS_OK;
    cJSON_Delete(v);
    return ALLOY_STATUS_NOMEM;
}

/* ---- alloy, openai, trl: alloy's fields, perhaps renamed ---- */

/* A message's content as OpenAI gives it: a string, or a list of text parts joined. *text gets
 * an allocated string (NULL: the content is a string and stays as it is). */
static alloy_status content_text(const cJSON *c, int i, char **text) {
    *text = NULL;
    if (cJSON_IsString(c)) return ALLOY_STATUS_OK;
    if (!cJSON_IsArray(c)) return nope("message %d: \"content\" must be a string or a list of text parts", i + 1);
    size_t len = 0;
    for (const cJSON *p = c->child; p; p = p->next) {
        const cJSON *ty = get(p, "type"), *tx = get(p, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx))
            return nope("message %d: every part of \"content\" must be {\"type\": \"text\", \"text\": \"...\"}", i + 1);
        len += strlen(tx->valuestring);
    }
    if (!(*text = alloy_malloc(len + 1))) return ALLOY_STATUS_NOMEM;
    size_t k = 0;
    for (const cJSON *p = c->child; p; p = p->next) {
        size_t n = strlen(get(p, "text")->valuestring);
        memcpy(*text + k, get(p, "text")->valuestring, n);
        k += n;
    }
    (*text)[k] = '\0';
    return ALLOY_STATUS_OK;
}

/* OpenAI messages with every content a string: msgs itself (*own false), or a copy with the
 * text parts joined (*own true). Other checks are alloy's reader's. */
static alloy_status openai_messages(const cJSON *msgs, const cJSON **out, bool *own) {
    *out = msgs;
    *own = false;
    if (!cJSON_IsArray(msgs)) return ALLOY_STATUS_OK;
    bool parts = false;
    for (const cJSON *m = msgs->child; m; m = m->next) parts |= cJSON_IsArray(get(m, "content"));
    if (!parts) return ALLOY_STATUS_OK;
    cJSON *copy = cJSON_CreateArray();
    alloy_status s = copy ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    int i = 0;
    for (const cJSON *m = msgs->child; m && !s; m = m->next, i++) {
        const cJSON *ro = get(m, "role");
        char *text = NULL;
        if (!cJSON_IsString(ro)) s = nope("message %d needs a \"role\" string", i + 1);
        if (!s) s = content_text(get(m, "content"), i, &text);
        const char *c = s ? NULL : text ? text : get(m, "content")->valuestring;
        if (c && !add_message(copy, ro->valuestring, c, strlen(c))) s = ALLOY_STATUS_NOMEM;
        alloy_free(text);
    }
    if (s) {
        cJSON_Delete(copy);
        return s;
    }
    *out = copy;
    *own = true;
    return ALLOY_STATUS_OK;
}

/* alloy's fields under the names given: a new record of references (NULL when nothing is
 * renamed and no content needs joining). */
static alloy_status normalize_own(alloy_data_layout layout, const cJSON *rec, const names *n, alloy_align_kind kind, cJSON **out) {
    const cJSON *msgs = get(rec, role_name(n->messages, "messages")), *m = msgs;
    bool own = false;
    alloy_status s = layout == ALLOY_LAYOUT_OPENAI ? openai_messages(msgs, &m, &own) : ALLOY_STATUS_OK;
    bool conversation_prompt = layout == ALLOY_LAYOUT_OPENAI && kind == ALLOY_ALIGN_PROMPT && !get(rec, "prompt");
    if (s || (!renamed(n) && !own && !conversation_prompt)) return s;
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (ok && n->response[0]) ok = add_ref(o, "response", get(rec, n->response));
    else if (ok) ok = add_ref(o, "response", get(rec, "response")) && add_ref(o, "completion", get(rec, "completion"));
    ok = ok && add_ref(o, "prompt", get(rec, role_name(n->prompt, "prompt"))) &&
         add_ref(o, "chosen", get(rec, role_name(n->chosen, "chosen"))) &&
         add_ref(o, "rejected", get(rec, role_name(n->rejected, "rejected"))) && add_ref(o, "responses", get(rec, "responses"));
    s = ok ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (m && !s) s = put_conversation(o, (cJSON *)m, own, conversation_prompt ? kind : ALLOY_ALIGN_SFT, "messages");
    else if (own) cJSON_Delete((cJSON *)m);
    if (s) cJSON_Delete(o);
    else *out = o;
    return s;
}

/* ---- alpaca ---- */

static alloy_status normalize_alpaca(const cJSON *rec, const names *n, alloy_align_kind kind, cJSON **out) {
    const char *I = role_name(n->prompt, "instruction");
    const cJSON *ins = get(rec, I), *in = get(rec, "input"), *o = get(rec, role_name(n->response, "output"));
    if (!o && !n->response[0]) o = get(rec, "response");
    if (!ins) return nope("needs \"%s\"", I);
    if (!cJSON_IsString(ins)) return nope("\"%s\" must be a string", I);
    if (in && !cJSON_IsString(in) && !cJSON_IsNull(in)) return nope("\"input\" must be a string");
    if (!o && kind != ALLOY_ALIGN_PROMPT)
        return n->response[0] ? nope("needs \"%s\"", n->response) : nope("needs \"output\" (or \"response\")");
    if (o && !cJSON_IsString(o)) return nope("\"%s\" must be a string", o->string);
    const char *x = cJSON_IsString(in) ? in->valuestring : "";
    size_t a = strlen(ins->valuestring), b = strlen(x);
    char *prompt = alloy_malloc(a + b + 3);
    cJSON *r = prompt ? cJSON_CreateObject() : NULL;
    if (r) { // the instruction, then a blank line and the input when there is one
        memcpy(prompt, ins->valuestring, a);
        if (b) {
            memcpy(prompt + a, "\n\n", 2);
            memcpy(prompt + a + 2, x, b);
        }
        prompt[a + (b ? b + 2 : 0)] = '\0';
    }
    bool ok = r && add_string(r, "prompt", prompt) && (!o || add_string(r, "response", o->valuestring));
    alloy_free(prompt);
    if (!ok) {
        cJSON_Delete(r);
        return ALLOY_STATUS_NOMEM;
    }
    *out = r;
    return ALLOY_STATUS_OK;
}

/* ---- sharegpt ---- */

/* A ShareGPT speaker's role: human -> user, gpt -> assistant, the others as they are. */
static const char *sharegpt_role(const char *from) {
    static const char *const map[][2] = {{"human", "user"},     {"user", "user"},           {"gpt", "assistant"},
                                         {"chatgpt", "assistant"}, {"bing", "assistant"},   {"bard", "assistant"},
                                         {"model", "assistant"}, {"assistant", "assistant"}, {"system", "system"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(from, map[i][0])) return map[i][1];
    return from;
}

/* Appends the ShareGPT turn t (number i + 1 of `what`) to list as a message. */
static alloy_status sharegpt_turn(cJSON *list, const cJSON *t, int i, const char *what) {
    const cJSON *from = get(t, "from"), *value = get(t, "value");
    if (!cJSON_IsObject(t) || !cJSON_IsString(from) || !cJSON_IsString(value))
        return nope("turn %d of \"%s\" needs \"from\" and \"value\" strings", i + 1, what);
    const char *v = value->valuestring;
    return add_message(list, sharegpt_role(from->valuestring), v, strlen(v)) ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
}

/* A ShareGPT reply ("chosen", "rejected"): a turn, or a string as it is. */
static alloy_status sharegpt_reply(cJSON *o, const char *key, const cJSON *v, const char *field) {
    if (cJSON_IsString(v)) return add_ref(o, key, v) ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    cJSON *list = cJSON_CreateArray();
    if (!list || !cJSON_AddItemToObject(o, key, list)) {
        cJSON_Delete(list);
        return ALLOY_STATUS_NOMEM;
    }
    if (!cJSON_IsObject(v)) return nope("\"%s\" must be a {\"from\", \"value\"} turn or a string", field);
    return sharegpt_turn(list, v, 0, field);
}

static alloy_status normalize_sharegpt(const cJSON *rec, const names *n, alloy_align_kind kind, cJSON **out) {
    const char *M = n->messages[0] ? n->messages : get(rec, "conversations") ? "conversations" : "messages";
    const char *C = role_name(n->chosen, "chosen"), *J = role_name(n->rejected, "rejected");
    const cJSON *conv = get(rec, M), *c = get(rec, C), *j = get(rec, J);
    if (!conv) return nope("needs \"%s\"", M);
    if (!cJSON_IsArray(conv) || cJSON_GetArraySize(conv) == 0) return nope("\"%s\" must be a non-empty list of turns", M);
    cJSON *msgs = cJSON_CreateArray(), *o = cJSON_CreateObject();
    alloy_status s = msgs && o ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    int i = 0;
    for (const cJSON *t = conv->child; t && !s; t = t->next, i++) s = sharegpt_turn(msgs, t, i, M);
    if (!s && (c || j) && kind != ALLOY_ALIGN_PROMPT) { // a preference pair after the conversation
        s = put_conversation(o, msgs, true, ALLOY_ALIGN_SFT, "prompt"); // o owns msgs from here
        if (!s && (!c || !j)) s = nope("needs both \"%s\" and \"%s\"", C, J);
        if (!s) s = sharegpt_reply(o, "chosen", c, C);
        if (!s) s = sharegpt_reply(o, "rejected", j, J);
    } else if (!s) {
        s = put_conversation(o, msgs, true, kind, "messages");
    } else {
        cJSON_Delete(msgs);
    }
    if (s) cJSON_Delete(o);
    else *out = o;
    return s;
}

/* ---- hh-rlhf ---- */

/* The end of the last "\n\nAssistant:" within s[0, n), or 0. */
static size_t last_assistant_end(const char *s, size_t n) {
    size_t k = sizeof HH_ASSISTANT - 1;
    for (size_t e = n; e >= k; e--)
        if (!memcmp(s + e - k, HH_ASSISTANT, k)) return e;
    return 0;
}

/* The next Human or Assistant marker in s at or after `from`: its start (or strlen(s)); *role
 * gets "user" or "assistant", *len the marker's length. */
static size_t next_marker(const char *s, size_t from, const char **role, size_t *len) {
    const char *h = strstr(s + from, HH_HUMAN), *a = strstr(s + from, HH_ASSISTANT);
    if (!h && !a) return strlen(s);
    bool human = h && (!a || h < a);
    *role = human ? "user" : "assistant";
    *len = human ? sizeof HH_HUMAN - 1 : sizeof HH_ASSISTANT - 1;
    return (size_t)((human ? h : a) - s);
}

static bool blank(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Appends s[a, b) without its surrounding blanks as a message of `role`. */
static bool add_turn(cJSON *list, const char *role, const char *s, size_t a, size_t b) {
    while (a < b && blank(s[a])) a++;
    while (b > a && blank(s[b - 1])) b--;
    return add_message(list, role, s + a, b - a);
}

/* The turns of a transcript s as messages. A reply (lead_role "assistant") begins with its
 * first turn's text. A prompt (lead_role NULL) begins with "Human:" (after blanks) or a marker,
 * any other text before the first marker being a user turn; the empty Assistant turn that ends
 * it is left out. */
static cJSON *hh_messages(const char *s, const char *lead_role) {
    cJSON *list = cJSON_CreateArray();
    const char *role = lead_role ? lead_role : "user";
    size_t at = 0, mlen = 0, k = 0;
    while (!lead_role && blank(s[k])) k++;
    if (!lead_role && !strncmp(s + k, "Human:", 6)) at = k + 6;
    for (bool first = true; list; first = false) {
        const char *next_role = NULL;
        size_t m = next_marker(s, at, &next_role, &mlen), e = at;
        while (e < m && blank(s[e])) e++;
        bool end = !s[m], empty = e == m;
        bool skip = !lead_role && empty && ((first && at == 0) || (end && !strcmp(role, "assistant")));
        if (!skip && !add_turn(list, role, s, at, m)) break;
        if (end) return list;
        role = next_role;
        at = m + mlen;
    }
    cJSON_Delete(list);
    return NULL;
}

/* A reply (the transcript after the prompt): one string, or messages when it goes on. */
static alloy_status hh_reply(cJSON *o, const char *key, const char *s) {
    cJSON *turns = hh_messages(s, "assistant");
    if (!turns) return ALLOY_STATUS_NOMEM;
    bool ok;
    if (cJSON_GetArraySize(turns) == 1) {
        ok = add_string(o, key, get(turns->child, "content")->valuestring);
        cJSON_Delete(turns);
    } else {
        ok = cJSON_AddItemToObject(o, key, turns);
        if (!ok) cJSON_Delete(turns);
    }
    return ok ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
}

static alloy_status normalize_hh(const cJSON *rec, const names *n, alloy_align_kind kind, alloy_chat_template tmpl, cJSON **out) {
    const char *C = role_name(n->chosen, "chosen"), *J = role_name(n->rejected, "rejected");
    const cJSON *c = get(rec, C), *j = get(rec, J);
    if (!c || !j) return nope("needs \"%s\" and \"%s\"", C, J);
    if (!cJSON_IsString(c) || !cJSON_IsString(j)) return nope("\"%s\" and \"%s\" must be strings", C, J);
    const char *a = c->valuestring, *b = j->valuestring;
    size_t p = 0;
    while (a[p] && a[p] == b[p]) p++;
    size_t cut = last_assistant_end(a, p);
    if (cut == 0) return nope("\"%s\" and \"%s\" share no dialogue up to an \"\\n\\nAssistant:\"", C, J);
    char *prompt = alloy_malloc(cut + 1);
    cJSON *o = prompt ? cJSON_CreateObject() : NULL;
    alloy_status s = o ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    if (!s) {
        memcpy(prompt, a, cut);
        prompt[cut] = '\0';
    }
    if (!s && tmpl == ALLOY_CHAT_TEMPLATE_RAW) { // the text as it is
        bool ok = add_string(o, "prompt", prompt) && (kind == ALLOY_ALIGN_PROMPT ||
                                                       (add_string(o, "chosen", a + cut) && add_string(o, "rejected", b + cut)));
        s = ok ? ALLOY_STATUS_OK : ALLOY_STATUS_NOMEM;
    } else if (!s) {
        cJSON *turns = hh_messages(prompt, NULL);
        if (!turns || !cJSON_AddItemToObject(o, "prompt", turns)) {
            cJSON_Delete(turns);
            s = ALLOY_STATUS_NOMEM;
        }
        if (!s && kind != ALLOY_ALIGN_PROMPT) s = hh_reply(o, "chosen", a + cut);
        if (!s && kind != ALLOY_ALIGN_PROMPT) s = hh_reply(o, "rejected", b + cut);
    }
    alloy_free(prompt);
    if (s) cJSON_Delete(o);
    else *out = o;
    return s;
}

alloy_status alloy_data_layout_normalize(alloy_data_layout layout, const cJSON *rec, const alloy_data_fields *f,
                                         alloy_align_kind kind, alloy_chat_template tmpl, cJSON **out) {
    *out = NULL;
    if (!cJSON_IsObject(rec)) return nope("not a JSON object");
    if (layout == ALLOY_LAYOUT_AUTO) layout = alloy_data_layout_detect(rec, f);
    names n = names_of(f);
    switch (layout) {
    case ALLOY_LAYOUT_ALPACA: return normalize_alpaca(rec, &n, kind, out);
    case ALLOY_LAYOUT_SHAREGPT: return normalize_sharegpt(rec, &n, kind, out);
    case ALLOY_LAYOUT_HH_RLHF: return normalize_hh(rec, &n, kind, tmpl, out);
    case ALLOY_LAYOUT_ALLOY:
    case ALLOY_LAYOUT_OPENAI:
    case ALLOY_LAYOUT_TRL: return normalize_own(layout, rec, &n, kind, out);
    default: return alloy_fail(ALLOY_STATUS_USAGE, "unknown layout %d", (int)layout);
    }
}
