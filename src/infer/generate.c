/*
 * generate.c — whole requests through an engine: continuous batching over the engine's
 * sequences, a sampler per request, and the finish conditions (end-of-text tokens, stop
 * strings on the decoded text across token boundaries, a token budget, the context).
 *
 * Each engine sequence is a slot. A loop admits waiting prompts into free slots (prefilled
 * together, one logits row each), then runs one decode step over every live slot; a request
 * that finishes frees its slot for the next prompt at the following turn. Stop strings are
 * searched in the text decoded so far, from where a match could first overlap the newest
 * bytes; streamed text holds back the longest tail that could still begin a stop string.
 */
#include "alloy/infer.h"

#include <string.h>

/* One engine sequence and the request it serves. */
typedef struct slot {
    int seq;             /* its engine sequence */
    int req;             /* the request, -1 when free */
    alloy_sampler *smp;  /* its sampler (created once per slot, reset per request) */
    int32_t next;        /* the token to feed at the next decode step */
    int prompt_len;
    double t0;           /* when the request was admitted */
    char *text;          /* the text decoded so far (before any cut) */
    size_t len, cap;     /* bytes of text, allocated */
    size_t emitted;      /* bytes of text already streamed */
} slot;

/* One alloy_generate call. */
typedef struct run {
    alloy_engine *e;                 /* the engine */
    const alloy_generate_options *o; /* the options */
    alloy_generation *results;       /* (n) */
    alloy_stream_fn stream;          /* may be NULL */
    void *user;                      /* for stream */
    int ctx;                         /* positions per sequence */
    size_t V;                        /* a row of logits */
    int B;                           /* slots */
    slot *slots;                     /* (B) */
    float *logits;                   /* (B, V) a step's rows */
    int *seqs, *which, *plens, *reqs;/* (B) a step's sequences, slots, prompt lengths, requests */
    int32_t *toks;                   /* (B) a step's tokens */
    bool *stop;                      /* (B) the hook's verdicts */
    const int32_t **pp;              /* (B) a prefill's prompts */
    int next_req, live;              /* the next request to admit; requests in slots */
    bool halted;                     /* the hook ended the generation */
} run;

const char *alloy_finish_name(alloy_finish_reason f) {
    switch (f) {
    case ALLOY_FINISH_EOS: return "eos";
    case ALLOY_FINISH_STOP: return "stop";
    case ALLOY_FINISH_LENGTH: return "length";
    case ALLOY_FINISH_CONTEXT: return "context_full";
    case ALLOY_FINISH_HOOK: return "stopped";
    default: return "running";
    }
}

void alloy_generate_options_default(alloy_generate_options *o) {
    memset(o, 0, sizeof *o);
    alloy_sampler_params_default(&o->sampling);
    o->max_tokens = 128;
}

void alloy_generate_options_use_tokenizer(alloy_generate_options *o, const alloy_tokenizer *tok) {
    o->tokenizer = tok;
    o->sampling.n_vocab = alloy_tokenizer_vocab_size(tok);
    o->end_of_text = alloy_tokenizer_special_id(tok, "<|endoftext|>");
    o->eos = o->end_of_text >= 0 ? &o->end_of_text : NULL;
    o->n_eos = o->end_of_text >= 0 ? 1 : 0;
}

void alloy_generation_free(alloy_generation *g) {
    if (!g) return;
    alloy_ids_free(&g->ids);
    alloy_free(g->text);
    memset(g, 0, sizeof *g);
}

/* Calls the stream callback, if any, with one event. */
static void emit(const run *r, int req, int32_t token, const char *text, size_t len, alloy_finish_reason f) {
    if (!r->stream) return;
    alloy_stream_event ev = {.request = req, .token = token, .text = text, .len = len, .finish = f};
    r->stream(r->user, &ev);
}

/* Appends n bytes to the slot's text (kept NUL-terminated); NOMEM if it cannot grow. */
static alloy_status text_append(slot *s, const char *bytes, size_t n) {
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1) cap *= 2;
        char *t = alloy_realloc(s->text, s->cap, cap);
        if (!t) return alloy_fail(ALLOY_STATUS_NOMEM, "generate: out of memory for %zu bytes of text", cap);
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->len, bytes, n);
    s->len += n;
    s->text[s->len] = '\0';
    return ALLOY_STATUS_OK;
}

/* The earliest start of a stop string in text that ends after `from` bytes, or -1. */
static int64_t find_stop(const run *r, const char *text, size_t len, size_t from) {
    int64_t best = -1;
    for (int i = 0; i < r->o->n_stop; i++) {
        const char *st = r->o->stop[i];
        size_t m = strlen(st);
        if (m > len) continue;
        size_t start = from + 1 > m ? from + 1 - m : 0; // a new match ends past `from`
        const char *hit = memmem(text + start, len - start, st, m);
        if (hit && (best < 0 || hit - text < best)) best = hit - text;
    }
    return best;
}

/* Bytes at the end of text that could still begin a stop string (the longest such tail). */
static size_t held_tail(const run *r, const char *text, size_t len) {
    size_t held = 0;
    for (int i = 0; i < r->o->n_stop; i++) {
        const char *st = r->o->stop[i];
        size_t m = strlen(st);
        for (size_t k = m - 1 < len ? m - 1 : len; k > held; k--)
            if (memcmp(text + len - k, st, k) == 0) {
                held = k;
                break;
            }
    }
    return held;
}

/* Ends slot s's request: the text it keeps (keep bytes), the closing event, the slot freed.
 * NOMEM when the result's text cannot be allocated (the request is finished all the same). */
static alloy_status finish(run *r, slot *s, alloy_finish_reason why, size_t keep) {
    alloy_generation *g = &r->results[s->req];
    g->finish = why;
    g->seconds = alloy_time_now() - s->t0;
    const char *rest = NULL;
    size_t n_rest = 0;
    if (r->o->tokenizer) {
        if (s->emitted < keep) rest = s->text + s->emitted, n_rest = keep - s->emitted;
        g->text = alloy_malloc(keep + 1);
        if (g->text) {
            if (keep) memcpy(g->text, s->text, keep);
            g->text[keep] = '\0';
            g->text_len = keep;
        }
    }
    emit(r, s->req, -1, rest ? rest : (r->o->tokenizer ? "" : NULL), n_rest, why);
    if (!r->o->keep_cache) alloy_engine_reset(r->e, s->seq);
    s->req = -1;
    r->live--;
    if (r->o->tokenizer && !g->text)
        return alloy_fail(ALLOY_STATUS_NOMEM, "generate: out of memory for %zu bytes of text", keep + 1);
    return ALLOY_STATUS_OK;
}

/* Takes the token drawn for slot s: EOS, or a new token with its text, stop strings, the
 * hook's stop, budget and context. */
static alloy_status take_token(run *r, slot *s, int32_t tok, bool stopped) {
    const alloy_generate_options *o = r->o;
    alloy_generation *g = &r->results[s->req];
    for (int i = 0; i < o->n_eos; i++)
        if (tok == o->eos[i]) return finish(r, s, ALLOY_FINISH_EOS, s->len);
    alloy_status st = alloy_ids_push(&g->ids, tok);
    if (!st) st = alloy_sampler_accept(s->smp, tok);
    if (st) return st;
    s->next = tok;
    if (o->tokenizer) {
        size_t n;
        const char *bytes = alloy_tokenizer_token(o->tokenizer, tok, &n);
        size_t before = s->len;
        if (bytes && n) st = text_append(s, bytes, n);
        if (st) return st;
        if (o->n_stop > 0 && s->len > before) {
            int64_t at = find_stop(r, s->text, s->len, before);
            if (at >= 0) {
                size_t cut = (size_t)at;
                emit(r, s->req, tok, s->text + s->emitted, cut - s->emitted, ALLOY_FINISH_NONE);
                s->emitted = cut;
                return finish(r, s, ALLOY_FINISH_STOP, cut);
            }
        }
        size_t safe = s->len - held_tail(r, s->text, s->len);
        if (safe < s->emitted) safe = s->emitted;
        emit(r, s->req, tok, s->text + s->emitted, safe - s->emitted, ALLOY_FINISH_NONE);
        s->emitted = safe;
    } else {
        emit(r, s->req, tok, NULL, 0, ALLOY_FINISH_NONE);
    }
    int generated = (int)g->ids.n;
    alloy_finish_reason why = ALLOY_FINISH_NONE;
    if (stopped) why = ALLOY_FINISH_HOOK;
    else if (o->max_tokens >= 0 && generated >= o->max_tokens) why = ALLOY_FINISH_LENGTH;
    else if (s->prompt_len + generated >= r->ctx) why = ALLOY_FINISH_CONTEXT;
    if (why == ALLOY_FINISH_NONE) return ALLOY_STATUS_OK;
    return finish(r, s, why, s->len);
}

/* Checks the options and every prompt before anything runs. */
static alloy_status check_requests(const run *r, const int32_t *const *prompts, const int *lens, int n, int V) {
    const alloy_generate_options *o = r->o;
    if (n < 0 || (n > 0 && (!prompts || !lens)))
        return alloy_fail(ALLOY_STATUS_USAGE, "generate: %d prompts given", n);
    if (o->n_stop < 0 || (o->n_stop > 0 && !o->stop) || o->n_eos < 0 || (o->n_eos > 0 && !o->eos))
        return alloy_fail(ALLOY_STATUS_USAGE, "generate: stop strings or end-of-text ids counted but not given");
    if (o->n_stop > 0 && !o->tokenizer)
        return alloy_fail(ALLOY_STATUS_USAGE, "generate: stop strings need a tokenizer to decode the text");
    for (int i = 0; i < o->n_stop; i++)
        if (!o->stop[i] || !o->stop[i][0]) return alloy_fail(ALLOY_STATUS_USAGE, "generate: stop string %d is empty", i);
    if (o->keep_cache && n > r->B)
        return alloy_fail(ALLOY_STATUS_USAGE, "generate: %d prompts to continue in an engine of %d sequences", n, r->B);
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1 || !prompts[i]) return alloy_fail(ALLOY_STATUS_USAGE, "generate: prompt %d is empty", i);
        if (o->keep_cache && alloy_engine_seq_len(r->e, i) >= lens[i])
            return alloy_fail(ALLOY_STATUS_USAGE, "generate: sequence %d holds %d tokens, not fewer than prompt %d's %d", i,
                              alloy_engine_seq_len(r->e, i), i, lens[i]);
        if (lens[i] > r->ctx)
            return alloy_fail(ALLOY_STATUS_RANGE, "generate: prompt %d has %d tokens, more than the context of %d", i,
                              lens[i], r->ctx);
        for (int k = 0; k < lens[i]; k++)
            if (prompts[i][k] < 0 || prompts[i][k] >= V)
                return alloy_fail(ALLOY_STATUS_RANGE,
                                  "generate: prompt %d: token id %d at %d is outside the vocabulary [0, %d)", i,
                                  prompts[i][k], k, V);
    }
    return ALLOY_STATUS_OK;
}

/* Puts request req into slot s: its sampler reset and fed the prompt, its sequence emptied
 * (kept with keep_cache). */
static alloy_status admit(run *r, slot *s, int req, const int32_t *prompt, int len) {
    s->req = req;
    s->prompt_len = len;
    s->len = s->emitted = 0;
    s->t0 = alloy_time_now();
    r->live++;
    r->results[req].prompt_tokens = len;
    if (!r->o->keep_cache) alloy_engine_reset(r->e, s->seq);
    alloy_sampler_reset(s->smp, r->o->seeds ? r->o->seeds[req] : r->o->sampling.seed + (uint64_t)req);
    alloy_status st = ALLOY_STATUS_OK;
    for (int k = 0; k < len && !st; k++) st = alloy_sampler_accept(s->smp, prompt[k]);
    return st;
}

/* Samples rows 0..k) of r->logits (slots r->which), shows the step to the hook and takes the
 * tokens. */
static alloy_status sample_step(run *r, int k) {
    alloy_status st = ALLOY_STATUS_OK;
    for (int j = 0; j < k && !st; j++) {
        slot *s = &r->slots[r->which[j]];
        r->reqs[j] = s->req;
        r->stop[j] = false;
        st = alloy_sampler_sample(s->smp, &r->toks[j], r->logits + (size_t)j * r->V);
    }
    if (!st && r->o->hook) {
        alloy_generate_step step = {.n = k, .requests = r->reqs, .logits = r->logits, .tokens = r->toks,
                                    .vocab_size = (int)r->V, .stop = r->stop};
        if (r->o->hook(r->o->hook_user, &step)) r->halted = true;
    }
    for (int j = 0; j < k && !st; j++) st = take_token(r, &r->slots[r->which[j]], r->toks[j], r->stop[j] || r->halted);
    return st;
}

/* Admits waiting prompts into free slots (all of them, finished at once, once halted), prefills
 * them together and samples their first tokens. */
static alloy_status admit_step(run *r, const int32_t *const *prompts, const int *lens, int n) {
    const alloy_generate_options *o = r->o;
    alloy_status st = ALLOY_STATUS_OK;
    int k = 0;
    for (int i = 0; i < r->B && r->next_req < n && !st; i++) {
        slot *s = &r->slots[i];
        if (s->req >= 0) continue;
        int req = r->next_req++;
        st = admit(r, s, req, prompts[req], lens[req]);
        if (st) break;
        if (r->halted || lens[req] >= r->ctx || o->max_tokens == 0) { // nothing to generate
            alloy_finish_reason why = r->halted            ? ALLOY_FINISH_HOOK
                                      : o->max_tokens == 0 ? ALLOY_FINISH_LENGTH
                                                           : ALLOY_FINISH_CONTEXT;
            st = finish(r, s, why, 0);
            i--; // the slot is free again
            continue;
        }
        int held = o->keep_cache ? alloy_engine_seq_len(r->e, s->seq) : 0;
        r->which[k] = i;
        r->seqs[k] = s->seq;
        r->pp[k] = prompts[req] + held;
        r->plens[k] = lens[req] - held;
        k++;
    }
    if (st || k == 0) return st;
    st = alloy_engine_prefill_batch(r->e, r->logits, ALLOY_LOGITS_LAST, r->seqs, r->pp, r->plens, k);
    return st ? st : sample_step(r, k);
}

/* One decode step over every live slot, and its draw (once halted: every live slot finished). */
static alloy_status decode_step(run *r) {
    int k = 0;
    alloy_status st = ALLOY_STATUS_OK;
    for (int i = 0; i < r->B; i++) {
        if (r->slots[i].req < 0) continue;
        if (r->halted) {
            alloy_status f = finish(r, &r->slots[i], ALLOY_FINISH_HOOK, r->slots[i].len);
            if (!st) st = f;
            continue;
        }
        r->which[k] = i;
        r->seqs[k] = r->slots[i].seq;
        r->toks[k] = r->slots[i].next;
        k++;
    }
    if (st || k == 0) return st;
    st = alloy_engine_decode(r->e, r->logits, r->seqs, r->toks, k);
    return st ? st : sample_step(r, k);
}

/* The buffers of a run of n requests and a sampler per slot. */
static alloy_status run_init(run *r, int n, const alloy_engine_info *info) {
    r->B = info->max_batch < n ? info->max_batch : n;
    size_t B = (size_t)r->B;
    r->slots = alloy_calloc(B, sizeof(slot));
    r->logits = alloy_malloc(sizeof(float) * r->V * B);
    r->seqs = alloy_malloc(sizeof(int) * B);
    r->which = alloy_malloc(sizeof(int) * B);
    r->plens = alloy_malloc(sizeof(int) * B);
    r->reqs = alloy_malloc(sizeof(int) * B);
    r->toks = alloy_malloc(sizeof(int32_t) * B);
    r->stop = alloy_malloc(sizeof(bool) * B);
    r->pp = alloy_malloc(sizeof(int32_t *) * B);
    if (!r->slots || !r->logits || !r->seqs || !r->which || !r->plens || !r->reqs || !r->toks || !r->stop || !r->pp)
        return alloy_fail(ALLOY_STATUS_NOMEM, "generate: out of memory for %d sequences", r->B);
    alloy_status st = ALLOY_STATUS_OK;
    for (int i = 0; i < r->B && !st; i++) {
        r->slots[i].seq = i;
        r->slots[i].req = -1;
        st = alloy_sampler_create(&r->slots[i].smp, &r->o->sampling, info->vocab_size);
    }
    return st;
}

static void run_free(run *r) {
    for (int i = 0; r->slots && i < r->B; i++) {
        alloy_sampler_destroy(r->slots[i].smp);
        alloy_free(r->slots[i].text);
    }
    alloy_free(r->slots);
    alloy_free(r->logits);
    alloy_free(r->seqs);
    alloy_free(r->which);
    alloy_free(r->plens);
    alloy_free(r->reqs);
    alloy_free(r->toks);
    alloy_free(r->stop);
    alloy_free(r->pp);
}

alloy_status alloy_generate(alloy_engine *e, alloy_generation *results, const int32_t *const *prompts,
                            const int *lens, int n, const alloy_generate_options *o, alloy_stream_fn stream,
                            void *user) {
    if (!o) return alloy_fail(ALLOY_STATUS_USAGE, "generate: no options");
    alloy_engine_info info;
    alloy_engine_get_info(e, &info);
    run r = {.e = e, .o = o, .results = results, .stream = stream, .user = user, .ctx = info.max_ctx,
             .V = (size_t)info.vocab_size, .B = info.max_batch};
    alloy_status st = check_requests(&r, prompts, lens, n, info.vocab_size);
    if (st) return st;
    if (n == 0) return ALLOY_STATUS_OK;
    memset(results, 0, sizeof(alloy_generation) * (size_t)n);
    st = run_init(&r, n, &info);
    // each turn: admit waiting prompts into free slots, then one decode step over every live slot
    while (!st && (r.next_req < n || r.live > 0)) {
        st = admit_step(&r, prompts, lens, n);
        if (!st) st = decode_step(&r);
    }
    run_free(&r);
    return st;
}
