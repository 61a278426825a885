/*
 * chat_session.c — a conversation with a ChatML model through an engine (alloy_chat_session of
 * alloy/infer.h): the messages, the cache of engine sequence 0 kept for the common prefix of
 * each turn's rendering, and the reply sampled by alloy_generate.
 *
 * A turn renders the whole conversation (alloy_chat_render, with the generation prompt), keeps
 * the longest prefix of it the cache already holds (at least one token is run again, for the
 * logits after the last), and lets alloy_generate prefill the rest (keep_cache) and sample the
 * reply. Its step hook streams the text: the reply's tokens are decoded whole after each one
 * and the new complete part is passed on (a trailing U+FFFD may be half a character still to
 * come). Every token drawn but <|im_end|> ends up in the cache, so the next turn, whose
 * rendering repeats the reply, prefills from where the tokenisation first differs.
 */
#include "alloy/chat.h"
#include "alloy/infer.h"

#include <string.h>

struct alloy_chat_session {
    alloy_engine *e;                 /* borrowed; its sequence 0 is the conversation's */
    const alloy_tokenizer *tok;      /* borrowed */
    alloy_chat_session_options o;    /* n_vocab resolved */
    int32_t end_id;                  /* <|im_end|> */
    int max_ctx, V;                  /* the engine's */
    alloy_chat_message *msgs;        /* (n, cap): role and content strings owned here */
    int n, cap;
    alloy_ids seen;                  /* the ids sequence 0's cache holds */
    float *logits;                   /* (V) scratch */
    // one reply
    alloy_ids out;                   /* the tokens drawn */
    size_t printed;                  /* bytes of their text passed on */
    alloy_chat_text_fn text_fn;      /* may be NULL */
    void *user;                      /* for text_fn */
    alloy_status err;                /* a failure inside the hook */
};

void alloy_chat_session_options_default(alloy_chat_session_options *o) {
    memset(o, 0, sizeof *o);
    alloy_sampler_params_default(&o->sampling);
    o->sampling.temperature = 0.7f;
    o->max_tokens = 512;
}

alloy_status alloy_chat_session_create(alloy_chat_session **out, alloy_engine *e, const alloy_tokenizer *tok,
                                       const alloy_chat_session_options *o) {
    *out = NULL;
    if (!e || !tok || !o) return alloy_fail(ALLOY_STATUS_USAGE, "chat session: no engine, tokenizer or options");
    if (o->max_tokens < 1) return alloy_fail(ALLOY_STATUS_USAGE, "chat session: max_tokens must be at least 1");
    int32_t end_id = alloy_chat_end_id(tok);
    if (end_id < 0) return alloy_fail(ALLOY_STATUS_MISMATCH, "chat session: the tokenizer has no <|im_end|>");
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    alloy_chat_session_options opt = *o;
    if (opt.sampling.n_vocab == 0) opt.sampling.n_vocab = alloy_tokenizer_vocab_size(tok);
    alloy_sampler *smp = NULL; // checks the sampling parameters now rather than at the first reply
    alloy_status s = alloy_sampler_create(&smp, &opt.sampling, info.vocab_size);
    alloy_sampler_destroy(smp);
    if (s) return s;
    alloy_chat_session *cs = alloy_calloc(1, sizeof *cs);
    float *logits = alloy_malloc(sizeof(float) * (size_t)info.vocab_size);
    if (!cs || !logits) {
        alloy_free(cs);
        alloy_free(logits);
        return alloy_fail(ALLOY_STATUS_NOMEM, "chat session: out of memory");
    }
    *cs = (alloy_chat_session){.e = e, .tok = tok, .o = opt, .end_id = end_id, .max_ctx = info.max_ctx,
                               .V = info.vocab_size, .logits = logits};
    alloy_engine_reset(e, 0);
    *out = cs;
    return ALLOY_STATUS_OK;
}

void alloy_chat_session_destroy(alloy_chat_session *cs) {
    if (!cs) return;
    alloy_chat_session_truncate(cs, 0);
    alloy_free(cs->msgs);
    alloy_ids_free(&cs->seen);
    alloy_ids_free(&cs->out);
    alloy_free(cs->logits);
    alloy_free(cs);
}

alloy_status alloy_chat_session_add(alloy_chat_session *cs, const char *role, const char *content, size_t len) {
    if (!role || !role[0] || (len && !content)) return alloy_fail(ALLOY_STATUS_USAGE, "chat session: a message needs a role");
    if (cs->n == cs->cap) {
        int cap = cs->cap ? 2 * cs->cap : 8;
        alloy_chat_message *m = alloy_realloc(cs->msgs, sizeof *m * (size_t)cs->cap, sizeof *m * (size_t)cap);
        if (!m) return alloy_fail(ALLOY_STATUS_NOMEM, "chat session: out of memory for %d messages", cap);
        cs->msgs = m;
        cs->cap = cap;
    }
    char *r = alloy_strdup(role), *t = alloy_malloc(len + 1);
    if (!r || !t) {
        alloy_free(r);
        alloy_free(t);
        return alloy_fail(ALLOY_STATUS_NOMEM, "chat session: out of memory for a message of %zu bytes", len);
    }
    if (len) memcpy(t, content, len);
    t[len] = '\0';
    cs->msgs[cs->n++] = (alloy_chat_message){r, t};
    return ALLOY_STATUS_OK;
}

void alloy_chat_session_truncate(alloy_chat_session *cs, int n) {
    if (n < 0) n = 0;
    for (int i = n; i < cs->n; i++) {
        alloy_free((char *)cs->msgs[i].role);
        alloy_free((char *)cs->msgs[i].content);
    }
    if (n < cs->n) cs->n = n;
}

int alloy_chat_session_count(const alloy_chat_session *cs) { return cs->n; }

/* Passes on the reply's text that became final: all of it when final, else all but a trailing
 * U+FFFD. */
static alloy_status pass_text(alloy_chat_session *cs, bool final, char **text, size_t *len) {
    alloy_status s = alloy_tokenizer_decode(cs->tok, cs->out.data, cs->out.n, text, len);
    if (s) return s;
    size_t upto = !final && *len >= 3 && !memcmp(*text + *len - 3, "\xEF\xBF\xBD", 3) ? *len - 3 : *len;
    if (upto > cs->printed) {
        if (cs->text_fn) cs->text_fn(cs->user, *text + cs->printed, upto - cs->printed);
        cs->printed = upto;
    }
    return ALLOY_STATUS_OK;
}

/* alloy_generate's hook: keeps the token drawn (unless <|im_end|>) and streams the new text;
 * a failure ends the generation and is kept in cs->err. */
static int stream_reply(void *user, alloy_generate_step *step) {
    alloy_chat_session *cs = user;
    if (step->tokens[0] == cs->end_id) return 0;
    char *text = NULL;
    size_t len;
    alloy_status s = alloy_ids_push(&cs->out, step->tokens[0]);
    if (!s) s = pass_text(cs, false, &text, &len);
    alloy_free(text);
    cs->err = s;
    return s != ALLOY_STATUS_OK;
}

/* Truncates sequence 0 to the longest prefix of ids (n >= 1) it holds, less one token when it
 * holds them all (their logits are needed); returns the tokens kept in *keep. */
static alloy_status reuse_prefix(alloy_chat_session *cs, const int32_t *ids, int n, int *keep) {
    int k = 0;
    while (k < n && (size_t)k < cs->seen.n && ids[k] == cs->seen.data[k]) k++;
    if (k == n) k--;
    alloy_status s = alloy_engine_truncate(cs->e, 0, k);
    cs->seen.n = s ? 0 : (size_t)k;
    if (s) alloy_engine_reset(cs->e, 0);
    *keep = s ? 0 : k;
    return s;
}

/* After the reply: the last token drawn is fed too (unless the reply ended with <|im_end|>, which
 * never enters the cache), so the cache holds the conversation and the whole reply. */
static alloy_status settle_cache(alloy_chat_session *cs, const alloy_ids *ids, alloy_finish_reason why) {
    alloy_status s = ALLOY_STATUS_OK;
    if (why != ALLOY_FINISH_EOS && cs->out.n > 0) {
        int seq = 0;
        s = alloy_engine_decode(cs->e, cs->logits, &seq, &cs->out.data[cs->out.n - 1], 1);
    }
    cs->seen.n = 0;
    if (!s) s = alloy_ids_reserve(&cs->seen, ids->n + cs->out.n);
    if (s) {
        alloy_engine_reset(cs->e, 0);
        return s;
    }
    memcpy(cs->seen.data, ids->data, sizeof(int32_t) * ids->n);
    memcpy(cs->seen.data + ids->n, cs->out.data, sizeof(int32_t) * cs->out.n);
    cs->seen.n = ids->n + cs->out.n;
    return ALLOY_STATUS_OK;
}

/* Samples the reply after ids (the rendered conversation, already checked to fit). */
static alloy_status sample_reply(alloy_chat_session *cs, const alloy_ids *ids, alloy_chat_reply *rep) {
    int keep = 0, n = (int)ids->n;
    alloy_status s = reuse_prefix(cs, ids->data, n, &keep);
    if (s) return s;
    rep->prompt_tokens = n;
    rep->prefilled = n - keep;
    alloy_generate_options go;
    alloy_generate_options_default(&go);
    go.sampling = cs->o.sampling;
    go.max_tokens = cs->o.max_tokens;
    go.eos = &cs->end_id;
    go.n_eos = 1;
    go.hook = stream_reply;
    go.hook_user = cs;
    go.keep_cache = true;
    alloy_generation g = {0};
    const int32_t *prompt = ids->data;
    cs->out.n = 0;
    cs->printed = 0;
    cs->err = ALLOY_STATUS_OK;
    s = alloy_generate(cs->e, &g, &prompt, &n, 1, &go, NULL, NULL);
    if (!s) s = cs->err;
    rep->finish = g.finish;
    rep->tokens = (int)cs->out.n;
    alloy_generation_free(&g);
    if (s) { // the cache no longer matches what is known of it
        alloy_engine_reset(cs->e, 0);
        cs->seen.n = 0;
        return s;
    }
    return settle_cache(cs, ids, rep->finish);
}

alloy_status alloy_chat_session_reply(alloy_chat_session *cs, alloy_chat_reply *out, alloy_chat_text_fn text_fn,
                                      void *user) {
    alloy_chat_reply rep = {0};
    alloy_ids ids = {0}, mask = {0};
    alloy_status s = alloy_chat_render(cs->tok, cs->msgs, cs->n, true, &ids, &mask);
    if (!s && (int)ids.n >= cs->max_ctx)
        s = alloy_fail(ALLOY_STATUS_RANGE, "the conversation (%zu tokens) fills the context of %d",
                       ids.n, cs->max_ctx);
    cs->text_fn = text_fn;
    cs->user = user;
    if (!s) s = sample_reply(cs, &ids, &rep);
    char *text = NULL;
    size_t len = 0;
    if (!s) s = pass_text(cs, true, &text, &len);
    if (!s) s = alloy_chat_session_add(cs, "assistant", text, len);
    alloy_free(text);
    alloy_ids_free(&ids);
    alloy_ids_free(&mask);
    if (out) *out = rep;
    return s;
}
