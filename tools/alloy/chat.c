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
    alloy_chat_session *cs;                    /* the conversation */
} chat;

/* Prints a reply's text as it comes. */
static void print_text(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

/* One user message and the reply (a full context ends the turn, not the chat). */
static alloy_status turn(chat *c, const char *line, size_t n) {
    alloy_chat_reply rep;
    alloy_status s = alloy_chat_session_add(c->cs, "user", line, n);
    if (!s) s = alloy_chat_session_reply(c->cs, &rep, print_text, NULL);
    if (!s) {
        printf("%s\n", rep.finish == ALLOY_FINISH_LENGTH    ? " [reply cut at --max-tokens]"
                       : rep.finish == ALLOY_FINISH_CONTEXT ? " [context full]"
                                                            : "");
        fflush(stdout);
    }
    if (s == ALLOY_STATUS_RANGE) {
        fprintf(stderr, "alloy chat: %s: /reset to start over\n", alloy_last_error());
        alloy_chat_session_truncate(c->cs, alloy_chat_session_count(c->cs) - 1);
        s = ALLOY_STATUS_OK;
    }
    return s;
}

/* Reads the user's lines until end of input or /quit; /reset keeps the first `keep` messages. */
static alloy_status converse(chat *c, int keep, bool tty) {
    char *line = NULL;
    size_t cap = 0;
    alloy_status s = ALLOY_STATUS_OK;
    while (!s) {
        if (tty) fputs("> ", stdout), fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (n == 0) continue;
        if (!strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) alloy_chat_session_truncate(c->cs, keep);
        else s = turn(c, line, (size_t)n);
    }
    free(line);
    return s;
}

/* Loads the models (checking the first is a ChatML model with a tokenizer) and their engine. */
static alloy_status open_models(chat *c, const cli_list *model_dirs, const alloy_engine_options *eo, const float *member_w,
                                alloy_ensemble_mode mode) {
    alloy_engine_options o = *eo;
    alloy_status s = cli_load_members(model_dirs, c->dirs, c->ms, &c->n_models, &o.max_ctx, &c->ck);
    const char *dir = c->dirs[0];
    alloy_chat_template tmpl;
    bool found = false;
    if (!s) s = alloy_chat_template_of(dir, &tmpl, &found);
    if (!s && (!found || tmpl != ALLOY_CHAT_TEMPLATE_CHATML))
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: not a chat model (config.json names no chat_template \"chatml\"; make one with alloy sft)",
                       dir);
    if (!s) s = alloy_checkpoint_tokenizer(c->ck, &c->tok);
    if (!s && !c->tok) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no tokenizer.json and config.json names no tokenizer", dir);
    if (!s && alloy_chat_end_id(c->tok) < 0) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has no <|im_end|>", dir);
    if (!s) s = cli_engine_create(&c->e, c->ms, c->n_models, &o, member_w, mode);
    return s;
}

static void close_chat(chat *c) {
    alloy_chat_session_destroy(c->cs);
    alloy_engine_destroy(c->e);
    alloy_checkpoint_close(c->ck);
    for (int i = 0; i < c->n_models; i++) {
        alloy_model_destroy(c->ms[i]);
        alloy_free(c->dirs[i]);
    }
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
    int threads = 0;
    alloy_chat_session_options co;
    alloy_chat_session_options_default(&co);
    alloy_sampler_params *sp = &co.sampling;
    cli_flag flags[] = {
        {"model", CLI_LIST, model_dirs, false},      {"system", CLI_STR, &system_msg, false},
        {"member-weights", CLI_LIST, weight_args, false}, {"ensemble", CLI_STR, &mode_name, false},
        {"max-tokens", CLI_INT, &co.max_tokens, false},  {"weights", CLI_STR, &weights, false},
        {"temperature", CLI_FLOAT, &sp->temperature, false}, {"top-k", CLI_INT, &sp->top_k, false},
        {"top-p", CLI_FLOAT, &sp->top_p, false},       {"min-p", CLI_FLOAT, &sp->min_p, false},
        {"repeat-penalty", CLI_FLOAT, &sp->repeat_penalty, false}, {"seed", CLI_U64, &sp->seed, false},
        {"threads", CLI_INT, &threads, false},
    };
    int r = cli_parse("chat", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dirs->n) return cli_usage("chat", "--model is required");
    if (co.max_tokens < 1) return cli_usage("chat", "--max-tokens must be at least 1");
    alloy_qtype qt;
    if (alloy_qtype_parse(weights, &qt)) return cli_usage("chat", "--weights must be f32, f16, q8_0, q4_0 or q4_k");
    float member_w[ALLOY_ENGINE_MAX_MEMBERS];
    alloy_ensemble_mode mode;
    r = cli_ensemble_options("chat", model_dirs->n, weight_args, mode_name, member_w, &mode);
    if (r) return r;
    cli_set_threads(threads);

    chat c = {0};
    alloy_status s = open_models(&c, model_dirs, &(alloy_engine_options){.weights = qt}, weight_args->n ? member_w : NULL, mode);
    if (!s) s = alloy_chat_session_create(&c.cs, c.e, c.tok, &co);
    if (!s && system_msg) s = alloy_chat_session_add(c.cs, "system", system_msg, strlen(system_msg));
    bool tty = isatty(0) && isatty(1);
    if (!s && tty) {
        alloy_engine_info info;
        alloy_engine_get_info(c.e, &info);
        fprintf(stderr, "alloy chat: %s%s (%s weights, context %d); /reset starts over, /quit or Ctrl-D ends\n", c.dirs[0],
                c.n_models > 1 ? " and the other members" : "", alloy_qtype_name(qt), info.max_ctx);
    }
    if (!s) s = converse(&c, alloy_chat_session_count(c.cs), tty); // /reset keeps the system message
    close_chat(&c);
    return s ? cli_fail("chat", s) : 0;
}
