/*
 * generate.c — `alloy generate`: text or token ids from a model through the inference engine
 * (src/infer/): a KV cache, fp32 or quantised weights, the sampling chain, stop strings, and
 * batches of prompts from a JSONL file. Several models that share a tokenizer generate as one
 * ensemble engine.
 */
#include "cli.h"
#include "alloy/infer.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


static const char help[] =
    "usage: alloy generate --model DIR [DIR ...] (--prompt TEXT | --prompts PATH | --prompt-ids \"1 2 3\")\n"
    "                      [flags]\n"
    "\n"
    "Continues prompts with a model (a checkpoint folder, or a run folder: its latest checkpoint),\n"
    "keeping a KV cache, so each new token costs one step of the model.\n"
    "  --prompt TEXT        prints the prompt, then streams the continuation to the terminal;\n"
    "  --prompt-ids IDS     token ids (spaces or commas; for models without a tokenizer, e.g. a\n"
    "                       llama2.c import): prints the generated ids as they come;\n"
    "  --prompts PATH       {\"prompt\": TEXT} or {\"prompt_ids\": [ids]} records (JSONL, one per line, or\n"
    "                       a JSON array; plain, .gz or .zst; or a folder of such files): writes\n"
    "                       one record per prompt, in order, to --out (or stdout): {\"prompt\" or\n"
    "                       \"prompt_ids\", \"text\", \"ids\", \"finish_reason\", \"tokens\",\n"
    "                       \"tokens_per_s\"}; prompts run --batch at a time.\n"
    "The text needs the checkpoint's tokenizer.json (or the byte tokenizer its config names).\n"
    "A continuation ends at <|endoftext|> (finish_reason \"eos\"), at a stop string (\"stop\"; the text\n"
    "is cut before it), after --tokens tokens (\"length\") or when prompt + continuation fill the\n"
    "context (\"context_full\"; stderr says \"stopped: context full\").\n"
    "Several models (sharing the vocabulary and tokenizer; the first's tokenizer is used) generate\n"
    "as one ensemble: each step runs every model and samples from their mixture of probabilities\n"
    "Σ wᵢ·pᵢ (--ensemble probs) or from the softmax of Σ wᵢ·zᵢ (--ensemble logits); the sampling\n"
    "chain below, temperature included, acts on the combined distribution.\n"
    "\n"
    "Sampling, in this order (llama.cpp's chain and defaults):\n"
    "  1. --logit-bias ID=BIAS ...  added to those logits (-inf bans a token)\n"
    "  2. penalties over the last --repeat-last-n tokens, prompt included (default 64; 0 off,\n"
    "     -1 all): a seen token's logit is divided by --repeat-penalty (multiplied if negative;\n"
    "     default 1.0 = off), then lowered by --frequency-penalty x its count + --presence-penalty\n"
    "     (defaults 0)\n"
    "  3. --temperature 0: greedy, the most likely token (the rest is skipped)\n"
    "  4. --top-k K: the K most likely (default 40; 0 off)\n"
    "  5. --top-p P: the fewest most likely whose probabilities reach P (default 0.95; 1 off)\n"
    "  6. --min-p P: drops tokens less likely than P x the most likely (default 0.05; 0 off)\n"
    "  7. --temperature T: logits / T (default 0.8); stages 4-6 see temperature 1\n"
    "  8. a draw from the softmax, seeded by --seed (default 1337; prompt i of a file uses seed + i)\n"
    "\n"
    "  --model DIR ...         checkpoint or run folders (two or more: an ensemble)\n"
    "  --member-weights W ...  ensemble weights, one per model (default equal; normalised)\n"
    "  --ensemble MODE         probs (default: mixture of probabilities) or logits (weighted logits)\n"
    "  --tokens N              tokens to generate at most (default 128; -1: until the context is full)\n"
    "  --stop STR ...          stop strings, matched on the text across token boundaries\n"
    "  --weights F             f32 (default), f16, q8_0, q4_0 or q4_k: matrices quantised as loaded\n"
    "                          (norms, biases and embeddings stay fp32; every model alike)\n"
    "  --batch N               sequences decoded together with --prompts (default 8)\n"
    "  --ctx N                 positions per sequence (default and at most the model's context; an\n"
    "                          ensemble's: its members' least)\n"
    "  --out FILE.jsonl        where --prompts records go (default stdout), written atomically\n"
    "  --threads N             at most N threads (default: all cores; small products use fewer)\n"
    "  --quiet                 no summary or progress on stderr\n";

/* Everything the verb holds, freed in one place. */
typedef struct gen {
    alloy_model *ms[ALLOY_ENGINE_MAX_MEMBERS]; /* (n_models) the models; ms[0] gives the tokenizer */
    char *dirs[ALLOY_ENGINE_MAX_MEMBERS];      /* (n_models) their checkpoint folders */
    int n_models, least_ctx;                   /* models loaded, their least context */
    alloy_checkpoint *ck;                      /* the first model's checkpoint */
    const alloy_tokenizer *tok;                /* its tokenizer (owned by ck), NULL if it has none */
    alloy_engine *e;                           /* over one model, or an ensemble of them */
    alloy_engine_options eo;                   /* how it was made */
    alloy_prompts p;                           /* the prompts */
    alloy_generation *results;                 /* (p.n) */
    alloy_logit_bias *bias;                    /* (n_bias) --logit-bias */
    int n_bias;
    bool quiet;
    alloy_progress prog;
    int done;                                  /* requests finished (progress) */
} gen;

/* The flags. */
typedef struct gen_args {
    const char *prompt, *prompts_file, *prompt_ids, *weights, *out, *mode_name;
    int n_tokens, batch, ctx, threads;
    alloy_sampler_params sp;
    cli_list bias_list, stop_list, model_dirs, weight_args;
    float member_w[ALLOY_ENGINE_MAX_MEMBERS];
    alloy_ensemble_mode mode;
} gen_args;

static void gen_free(gen *g) {
    for (int i = 0; g->results && i < g->p.n; i++) alloy_generation_free(&g->results[i]);
    alloy_prompts_free(&g->p);
    alloy_free(g->results);
    alloy_free(g->bias);
    alloy_engine_destroy(g->e);
    alloy_checkpoint_close(g->ck);
    for (int i = 0; i < g->n_models; i++) {
        alloy_model_destroy(g->ms[i]);
        alloy_free(g->dirs[i]);
    }
}

/* Why a request stopped, in the summary's words (by alloy_finish_reason). */
static const char *const finish_words[] = {"unfinished", "end of text", "stop string", "token limit", "context full",
                                           "stopped"};

/* The stream of a single prompt: text, or (user points to true) ids when there is no text to show. */
static void stream_one(void *user, const alloy_stream_event *ev) {
    static bool first = true;
    if (*(const bool *)user && ev->token >= 0) printf(first ? "%d" : " %d", (int)ev->token), first = false;
    else if (!*(const bool *)user && ev->len) fwrite(ev->text, 1, ev->len, stdout);
    fflush(stdout);
}

static void stream_progress(void *user, const alloy_stream_event *ev) {
    gen *g = user;
    if (ev->token >= 0) return;
    g->done++;
    if (!g->quiet && g->prog.tty) alloy_progress_update(&g->prog, "generate: %d of %d prompts done", g->done, g->p.n);
}

/* --logit-bias ID=BIAS items into g->bias. */
static int parse_bias(gen *g, const cli_list *l) {
    if (l->n && !(g->bias = alloy_malloc(sizeof(alloy_logit_bias) * (size_t)l->n))) return cli_fail("generate", ALLOY_STATUS_NOMEM);
    for (g->n_bias = 0; g->n_bias < l->n; g->n_bias++) {
        const char *it = l->items[g->n_bias], *eq = strchr(it, '=');
        char *end;
        errno = 0;
        long id = eq ? strtol(it, &end, 10) : -1;
        if (!eq || end != eq || errno || id < 0 || id > INT32_MAX)
            return cli_usage("generate", "--logit-bias expects ID=BIAS, got '%s'", it);
        double b = strtod(eq + 1, &end);
        if (!eq[1] || *end || isnan(b) || b == INFINITY)
            return cli_usage("generate", "--logit-bias expects ID=BIAS with a number or -inf, got '%s'", it);
        g->bias[g->n_bias] = (alloy_logit_bias){.token = (int32_t)id, .bias = (float)b};
    }
    return 0;
}

/* The checks of the flags on their own; 0 or the exit status. */
static int check_args(gen *g, gen_args *a) {
    if (!a->model_dirs.n) return cli_usage("generate", "--model is required");
    if ((a->prompt != NULL) + (a->prompts_file != NULL) + (a->prompt_ids != NULL) != 1)
        return cli_usage("generate", "give exactly one of --prompt, --prompts and --prompt-ids");
    if (a->n_tokens < -1) return cli_usage("generate", "--tokens must be >= 0 (or -1: until the context is full)");
    if (a->batch < 1 || a->batch > 4096) return cli_usage("generate", "--batch must be in [1, 4096]");
    if (a->ctx < 0) return cli_usage("generate", "--ctx must be >= 1");
    if (a->threads < 0) return cli_usage("generate", "--threads must be >= 0");
    if (alloy_qtype_parse(a->weights, &g->eo.weights))
        return cli_usage("generate", "--weights must be f32, f16, q8_0, q4_0 or q4_k, not \"%s\"", a->weights);
    if (a->out && !a->prompts_file) return cli_usage("generate", "--out goes with --prompts");
    if (!(a->sp.temperature >= 0.0f)) return cli_usage("generate", "--temperature must be >= 0");
    if (!(a->sp.top_p >= 0.0f && a->sp.top_p <= 1.0f)) return cli_usage("generate", "--top-p must be in [0, 1]");
    if (!(a->sp.min_p >= 0.0f && a->sp.min_p <= 1.0f)) return cli_usage("generate", "--min-p must be in [0, 1]");
    if (!(a->sp.repeat_penalty > 0.0f)) return cli_usage("generate", "--repeat-penalty must be > 0");
    if (a->sp.repeat_last_n < -1) return cli_usage("generate", "--repeat-last-n must be >= -1");
    int rc = cli_ensemble_options("generate", a->model_dirs.n, &a->weight_args, a->mode_name, a->member_w, &a->mode);
    if (!rc) rc = parse_bias(g, &a->bias_list);
    for (int i = 0; !rc && i < a->stop_list.n; i++)
        if (!a->stop_list.items[i][0]) rc = cli_usage("generate", "--stop: an empty stop string");
    return rc;
}

/* Loads the models and the prompts, checks them together, makes the engine. */
static alloy_status open_all(gen *g, const gen_args *a) {
    alloy_status s = cli_load_members(&a->model_dirs, g->dirs, g->ms, &g->n_models, &g->least_ctx, &g->ck);
    if (!s) s = alloy_checkpoint_tokenizer(g->ck, &g->tok);
    if (!s && a->ctx > g->least_ctx)
        s = alloy_fail(ALLOY_STATUS_USAGE, "--ctx %d exceeds the %s context of %d", a->ctx,
                       g->n_models > 1 ? "models' least" : "model's", g->least_ctx);
    if (!s && a->prompt) s = alloy_prompts_add_text(&g->p, g->tok, a->prompt, strlen(a->prompt), "--prompt");
    else if (!s && a->prompt_ids) s = alloy_prompts_add_id_list(&g->p, a->prompt_ids, "--prompt-ids");
    else if (!s) s = alloy_prompts_read_jsonl(&g->p, a->prompts_file, g->tok);
    g->eo.max_ctx = a->ctx > 0 ? a->ctx : g->least_ctx;
    g->eo.max_batch = a->prompts_file ? (a->batch < g->p.n ? a->batch : g->p.n) : 1;
    if (!s) s = alloy_prompts_check(&g->p, g->ms[0]->config.vocab_size, g->eo.max_ctx);
    if (!s) s = cli_engine_create(&g->e, g->ms, g->n_models, &g->eo, a->weight_args.n ? a->member_w : NULL, a->mode);
    if (!s && !(g->results = alloy_calloc((size_t)g->p.n, sizeof(alloy_generation)))) s = ALLOY_STATUS_NOMEM;
    return s;
}

/* Generates: a single prompt streamed to stdout, a file's prompts as JSONL records. */
static alloy_status run(gen *g, gen_args *a) {
    alloy_generate_options go;
    alloy_generate_options_default(&go);
    go.sampling = a->sp;
    go.sampling.logit_bias = g->bias;
    go.sampling.n_logit_bias = g->n_bias;
    go.max_tokens = a->n_tokens;
    go.stop = a->stop_list.items;
    go.n_stop = a->stop_list.n;
    if (g->tok) alloy_generate_options_use_tokenizer(&go, g->tok);
    const int32_t *const *pp = (const int32_t *const *)g->p.ids;
    if (a->prompts_file) {
        alloy_progress_init(&g->prog, stderr, 10);
        alloy_status s = alloy_generate(g->e, g->results, pp, g->p.lens, g->p.n, &go, stream_progress, g);
        if (!g->quiet && g->prog.tty) alloy_progress_done(&g->prog);
        return s ? s : alloy_generation_write_jsonl(&g->p, g->results, a->out);
    }
    if (a->prompt) fputs(a->prompt, stdout), fflush(stdout);
    bool ids_mode = a->prompt_ids != NULL;
    alloy_status s = alloy_generate(g->e, g->results, pp, g->p.lens, 1, &go, stream_one, &ids_mode);
    putchar('\n');
    fflush(stdout);
    return s;
}

/* The summary line on stderr. */
static void report(const gen *g, const gen_args *a, double dt) {
    char what[64]; // the weights, and the ensemble
    const char *q = alloy_qtype_name(g->eo.weights);
    if (g->n_models > 1) snprintf(what, sizeof what, "%s weights, an ensemble of %d (%s)", q, g->n_models, a->mode_name);
    else snprintf(what, sizeof what, "%s weights", q);
    size_t total = 0;
    for (int i = 0; i < g->p.n; i++) total += g->results[i].ids.n;
    char full[96] = "";
    if (g->p.n == 1 && g->results[0].finish == ALLOY_FINISH_CONTEXT)
        snprintf(full, sizeof full, " (together they fill the model's context of %d tokens)", g->eo.max_ctx);
    if (g->p.n == 1)
        fprintf(stderr, "alloy generate: stopped: %s after %zu tokens generated from a %d-token prompt%s in %.2f s, %.1f tokens/s, %s\n",
                finish_words[g->results[0].finish], total, g->p.lens[0], full, dt, dt > 0 ? total / dt : 0.0, what);
    else
        fprintf(stderr, "alloy generate: %d prompts, %zu tokens in %.2f s, %.1f tokens/s (batch %d, %s)\n", g->p.n, total,
                dt, dt > 0 ? total / dt : 0.0, g->eo.max_batch, what);
}

int cmd_generate(int argc, char **argv) {
    gen_args a = {.weights = "f32", .mode_name = "probs", .n_tokens = 128, .batch = 8, .mode = ALLOY_ENSEMBLE_PROBS};
    alloy_sampler_params_default(&a.sp);
    gen g = {0};
    cli_flag flags[] = {
        {"model", CLI_LIST, &a.model_dirs, false},   {"member-weights", CLI_LIST, &a.weight_args, false},
        {"ensemble", CLI_STR, &a.mode_name, false},  {"prompt", CLI_STR, &a.prompt, false},
        {"prompts", CLI_STR, &a.prompts_file, false}, {"prompt-ids", CLI_STR, &a.prompt_ids, false},
        {"tokens", CLI_INT, &a.n_tokens, false},     {"temperature", CLI_FLOAT, &a.sp.temperature, false},
        {"top-k", CLI_INT, &a.sp.top_k, false},      {"top-p", CLI_FLOAT, &a.sp.top_p, false},
        {"min-p", CLI_FLOAT, &a.sp.min_p, false},    {"repeat-penalty", CLI_FLOAT, &a.sp.repeat_penalty, false},
        {"presence-penalty", CLI_FLOAT, &a.sp.presence_penalty, false},
        {"frequency-penalty", CLI_FLOAT, &a.sp.frequency_penalty, false},
        {"repeat-last-n", CLI_INT, &a.sp.repeat_last_n, false}, {"logit-bias", CLI_LIST, &a.bias_list, false},
        {"stop", CLI_LIST, &a.stop_list, false},     {"seed", CLI_U64, &a.sp.seed, false},
        {"weights", CLI_STR, &a.weights, false},     {"batch", CLI_INT, &a.batch, false},
        {"ctx", CLI_INT, &a.ctx, false},             {"out", CLI_STR, &a.out, false},
        {"threads", CLI_INT, &a.threads, false},     {"quiet", CLI_BOOL, &g.quiet, false},
    };
    int r = cli_parse("generate", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    int rc = r ? (r == 1 ? 0 : r) : check_args(&g, &a);
    if (!r && !rc) {
        cli_set_threads(a.threads);
        double t0 = alloy_time_now();
        alloy_status s = open_all(&g, &a);
        if (!s) t0 = alloy_time_now(), s = run(&g, &a);
        if (s) rc = cli_fail("generate", s);
        else if (!g.quiet) report(&g, &a, alloy_time_now() - t0);
    }
    gen_free(&g);
    cli_free_lists(flags, (int)(sizeof flags / sizeof flags[0]));
    return rc;
}
