/*
 * chat.c — `alloy chat`: an interactive conversation with a chat model in the terminal.
 *
 * Each turn renders the whole conversation with the model's chat template (ChatML, as alloy
 * sft stores it), keeps the KV cache of the part already seen (only the new tokens are
 * prefilled), and streams the reply as it is sampled until <|im_end|>, the token limit or a full
 * context. Several models that share a tokenizer talk as one ensemble engine.
 */
#include "cli.h"
#include "alloy/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
    "usage: alloy chat --model DIR [DIR ...] [flags]\n"
    "\n"
    "Talks with a chat model (one trained with alloy sft, or any model folder whose config.json\n"
    "names chat_template \"chatml\" and whose tokenizer has <|im_start|> and <|im_end|>). Reads one\n"
    "message per line from standard input and streams each reply to standard output. The\n"
    "conversation is kept: only its new tokens are run through the model each turn. Lines\n"
    "\"/reset\" (start over) and \"/quit\" are commands; end of input quits. Several models (sharing\n"
    "the vocabulary and tokenizer; the first's chat template is used) answer as one ensemble:\n"
    "each token is sampled from their mixture of probabilities (--ensemble probs) or from the\n"
    "softmax of their weighted logits (--ensemble logits), the sampling flags acting on the mixture.\n"
    "\n"
    "  --model DIR ...         checkpoint folders or run folders (their latest checkpoint; two or\n"
    "                          more: an ensemble)\n"
    "  --member-weights W ...  ensemble weights, one per model (default equal; normalised)\n"
    "  --ensemble MODE         probs (default: Σ wᵢ·pᵢ) or logits (softmax of Σ wᵢ·zᵢ)\n"
    "  --system TEXT           a system message that opens the conversation\n"
    "  --max-tokens N          longest reply in tokens (default 512)\n"
    "  --weights F             f32 (default), f16, q8_0, q4_0 or q4_k (every model alike)\n"
    "  --temperature X         (default 0.7; 0 = greedy)\n"
    "  --top-k K --top-p P --min-p P --repeat-penalty R   as alloy generate (defaults 40, 0.95,\n"
    "                          0.05, 1.0)\n"
    "  --seed S                sampling seed (default 1337)\n"
    "  --threads N             OpenMP threads (default: all cores)\n";

typedef struct chat {
    alloy_model *ms[ALLOY_ENGINE_MAX_MEMBERS]; /* (n_models) the models; ms[0] gives the tokenizer */
    char *dirs[ALLOY_ENGINE_MAX_MEMBERS];      /* (n_models) their checkpoint folders */
    int n_models;
    alloy_checkpoint *ck;                      /* the first model's checkpoint */
    const alloy_tokenizer *tok;                /* its tokenizer (owned by ck) */
    alloy_engine *e;
    alloy_sampler *smp;
    alloy_chat_message *msgs; /* (n, cap): role and content strings owned here */
    int n, cap;
    int32_t *seen;            /* the ids the cache holds, (n_seen) */
    int n_seen;
    float *logits;            /* (V) */
} chat;

static alloy_status add_message(chat *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        alloy_chat_message *m = alloy_realloc(c->msgs, sizeof *m * (size_t)c->cap, sizeof *m * (size_t)cap);
        if (!m) return ALLOY_STATUS_NOMEM;
        c->msgs = m;
        c->cap = cap;
    }
    char *r = alloy_strdup(role), *t = alloy_malloc(len + 1);
    if (!r || !t) {
        alloy_free(r);
        alloy_free(t);
        return ALLOY_STATUS_NOMEM;
    }
    memcpy(t, content, len);
    t[len] = '\0';
    c->msgs[c->n++] = (alloy_chat_message){r, t};
    return ALLOY_STATUS_OK;
}

static void clear_messages(chat *c, int keep) {
    for (int i = keep; i < c->n; i++) {
        alloy_free((char *)c->msgs[i].role);
        alloy_free((char *)c->msgs[i].content);
    }
    c->n = keep;
}

/* Brings the cache to ids (n): keeps the common prefix with what it holds, prefills the rest,
 * and leaves the logits after the last id in c->logits. */
static alloy_status sync_cache(chat *c, const int32_t *ids, int n) {
    int keep = 0;
    while (keep < n && keep < c->n_seen && ids[keep] == c->seen[keep]) keep++;
    if (keep == n && keep > 0) keep--; // recompute the last token to get its logits
    alloy_status s = alloy_engine_truncate(c->e, 0, keep);
    if (!s) s = alloy_engine_prefill(c->e, c->logits, 0, ids + keep, n - keep);
    if (s) {
        alloy_engine_reset(c->e, 0);
        c->n_seen = 0;
        return s;
    }
    int32_t *seen = alloy_realloc(c->seen, sizeof(int32_t) * (size_t)c->n_seen, sizeof(int32_t) * (size_t)n);
    if (!seen) return ALLOY_STATUS_NOMEM;
    memcpy(seen, ids, sizeof(int32_t) * (size_t)n);
    c->seen = seen;
    c->n_seen = n;
    return ALLOY_STATUS_OK;
}

/* Samples a reply after the conversation, streaming its text; appends it as the assistant's. */
static alloy_status reply(chat *c, int max_tokens, int32_t end_id, int max_ctx) {
    alloy_ids ids = {0}, mask = {0};
    alloy_status s = alloy_chat_render(c->tok, c->msgs, c->n, true, &ids, &mask);
    if (!s && (int)ids.n >= max_ctx)
        s = alloy_fail(ALLOY_STATUS_RANGE, "the conversation (%zu tokens) fills the context of %d: /reset to start over",
                       ids.n, max_ctx);
    if (!s) s = sync_cache(c, ids.data, (int)ids.n);
    alloy_sampler_reset(c->smp, 0); // the penalties see the conversation, not earlier draws
    for (size_t i = 0; !s && i < ids.n; i++) s = alloy_sampler_accept(c->smp, ids.data[i]);
    int32_t *out = alloy_malloc(sizeof(int32_t) * (size_t)(max_tokens > 0 ? max_tokens : 1));
    if (!s && !out) s = ALLOY_STATUS_NOMEM;
    int n_out = 0;
    size_t printed = 0;
    const char *why = "";
    while (!s) {
        if (n_out == max_tokens) {
            why = " [reply cut at --max-tokens]";
            break;
        }
        if (c->n_seen >= max_ctx) {
            why = " [context full]";
            break;
        }
        int32_t t;
        s = alloy_sampler_sample(c->smp, &t, c->logits);
        if (s || t == end_id) break;
        out[n_out++] = t;
        if (!s) s = alloy_sampler_accept(c->smp, t);
        int seq = 0;
        if (!s) s = alloy_engine_decode(c->e, c->logits, &seq, &t, 1);
        if (!s) {
            int32_t *seen = alloy_realloc(c->seen, sizeof(int32_t) * (size_t)c->n_seen, sizeof(int32_t) * (size_t)(c->n_seen + 1));
            if (!seen) s = ALLOY_STATUS_NOMEM;
            else {
                seen[c->n_seen++] = t;
                c->seen = seen;
            }
        }
        // stream what is complete: a trailing U+FFFD may be half a character still to come
        char *text;
        size_t len;
        if (!s && !(s = alloy_tokenizer_decode(c->tok, out, (size_t)n_out, &text, &len))) {
            size_t upto = len >= 3 && !memcmp(text + len - 3, "\xEF\xBF\xBD", 3) ? len - 3 : len;
            if (upto > printed) {
                fwrite(text + printed, 1, upto - printed, stdout);
                fflush(stdout);
                printed = upto;
            }
            alloy_free(text);
        }
    }
    char *text = NULL;
    size_t len = 0;
    if (!s) s = alloy_tokenizer_decode(c->tok, out, (size_t)n_out, &text, &len);
    if (!s) {
        if (len > printed) fwrite(text + printed, 1, len - printed, stdout);
        printf("%s\n", why);
        fflush(stdout);
        s = add_message(c, "assistant", text, len);
    }
    alloy_free(text);
    alloy_free(out);
    alloy_ids_free(&ids);
    alloy_ids_free(&mask);
    return s;
}

static int chat_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args);

int cmd_chat(int argc, char **argv) {
    cli_list model_dirs = {0}, weight_args = {0};
    int rc = chat_main(argc, argv, &model_dirs, &weight_args);
    free(model_dirs.items);
    free(weight_args.items);
    return rc;
}

/* cmd_chat's body; cli_parse fills the caller's lists, which the caller frees. */
static int chat_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args) {
    const char *system_msg = NULL, *weights = "f32", *mode_name = "probs";
    int max_tokens = 512, threads = 0;
    alloy_sampler_params sp;
    alloy_sampler_params_default(&sp);
    sp.temperature = 0.7f;
    cli_flag flags[] = {
        {"model", CLI_LIST, model_dirs, false},      {"system", CLI_STR, &system_msg, false},
        {"member-weights", CLI_LIST, weight_args, false}, {"ensemble", CLI_STR, &mode_name, false},
        {"max-tokens", CLI_INT, &max_tokens, false},  {"weights", CLI_STR, &weights, false},
        {"temperature", CLI_FLOAT, &sp.temperature, false}, {"top-k", CLI_INT, &sp.top_k, false},
        {"top-p", CLI_FLOAT, &sp.top_p, false},       {"min-p", CLI_FLOAT, &sp.min_p, false},
        {"repeat-penalty", CLI_FLOAT, &sp.repeat_penalty, false}, {"seed", CLI_U64, &sp.seed, false},
        {"threads", CLI_INT, &threads, false},
    };
    int r = cli_parse("chat", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dirs->n) return cli_usage("chat", "--model is required");
    if (max_tokens < 1) return cli_usage("chat", "--max-tokens must be at least 1");
    alloy_qtype qt;
    if (!alloy_qtype_parse(weights, &qt)) return cli_usage("chat", "--weights must be f32, f16, q8_0, q4_0 or q4_k");
    float member_w[ALLOY_ENGINE_MAX_MEMBERS];
    alloy_ensemble_mode mode;
    r = cli_ensemble_options("chat", model_dirs->n, weight_args, mode_name, member_w, &mode);
    if (r) return r;
    cli_set_threads(threads);

    chat c = {0};
    int max_ctx = 0; // the members' least context; they share the first one's tokenizer
    alloy_status s = cli_load_members(model_dirs, c.dirs, c.ms, &c.n_models, &max_ctx, &c.ck);
    const char *dir = c.dirs[0];
    alloy_chat_template tmpl;
    bool found = false;
    if (!s) s = alloy_chat_template_of(dir, &tmpl, &found);
    if (!s && (!found || tmpl != ALLOY_CHAT_TEMPLATE_CHATML))
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: not a chat model (config.json names no chat_template \"chatml\"; make one with alloy sft)",
                       dir);
    if (!s) s = alloy_checkpoint_tokenizer(c.ck, &c.tok);
    if (!s && !c.tok) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no tokenizer.json and config.json names no tokenizer", dir);
    int32_t end_id = !s ? alloy_chat_end_id(c.tok) : -1;
    if (!s && end_id < 0) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has no <|im_end|>", dir);
    if (!s)
        s = cli_engine_create(&c.e, c.ms, c.n_models, &(alloy_engine_options){.weights = qt, .max_ctx = max_ctx},
                              weight_args->n ? member_w : NULL, mode);
    int V = c.ms[0] ? c.ms[0]->config.vocab_size : 0;
    sp.n_vocab = c.tok ? alloy_tokenizer_vocab_size(c.tok) : 0;
    if (!s) s = alloy_sampler_create(&c.smp, &sp, V);
    if (!s && !(c.logits = alloy_malloc(sizeof(float) * (size_t)V))) s = ALLOY_STATUS_NOMEM;
    if (!s && system_msg) s = add_message(&c, "system", system_msg, strlen(system_msg));
    int keep = c.n; // /reset keeps the system message
    bool tty = isatty(0) && isatty(1);
    if (!s && tty)
        fprintf(stderr, "alloy chat: %s%s (%s weights, context %d); /reset starts over, /quit or Ctrl-D ends\n", dir,
                c.n_models > 1 ? " and the other members" : "", alloy_qtype_name(qt), max_ctx);
    char *line = NULL;
    size_t cap = 0;
    while (!s) {
        if (tty) fputs("> ", stdout), fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        if (!strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            clear_messages(&c, keep);
            continue;
        }
        s = add_message(&c, "user", line, (size_t)n);
        if (!s) s = reply(&c, max_tokens, end_id, max_ctx);
        if (s == ALLOY_STATUS_RANGE) { // a full context ends the turn, not the chat
            fprintf(stderr, "alloy chat: %s\n", alloy_last_error());
            clear_messages(&c, c.n - 1);
            s = ALLOY_STATUS_OK;
        }
    }
    free(line);
    clear_messages(&c, 0);
    alloy_free(c.msgs);
    alloy_free(c.seen);
    alloy_free(c.logits);
    alloy_sampler_destroy(c.smp);
    alloy_engine_destroy(c.e);
    alloy_checkpoint_close(c.ck);
    for (int i = 0; i < c.n_models; i++) {
        alloy_model_destroy(c.ms[i]);
        alloy_free(c.dirs[i]);
    }
    return s ? cli_fail("chat", s) : 0;
}
