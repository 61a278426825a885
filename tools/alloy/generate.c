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
    "usage: alloy generate --model DIR [DIR ...] (--prompt TEXT | --prompts FILE.jsonl | --prompt-ids \"1 2 3\")\n"
    "                      [flags]\n"
    "\n"
    "Continues prompts with a model (a checkpoint folder, or a run folder: its latest checkpoint),\n"
    "keeping a KV cache, so each new token costs one step of the model.\n"
    "  --prompt TEXT        prints the prompt, then streams the continuation to the terminal;\n"
    "  --prompt-ids IDS     token ids (spaces or commas; for models without a tokenizer, e.g. a\n"
    "                       llama2.c import): prints the generated ids as they come;\n"
    "  --prompts FILE       JSONL, one {\"prompt\": TEXT} or {\"prompt_ids\": [ids]} per line: writes\n"
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
    int n_models;
    alloy_checkpoint *ck;                      /* the first model's checkpoint */
    const alloy_tokenizer *tok;                /* its tokenizer (owned by ck), NULL if it has none */
    alloy_engine *e;                           /* over one model, or an ensemble of them */
    int32_t **prompts;   /* (n) */
    int *lens;           /* (n) */
    int *lines;          /* (n) line numbers in the file */
    char **texts;        /* (n) prompt text, or NULL for ids */
    int n, cap;
    alloy_generation *results;
    alloy_logit_bias *bias;
    bool quiet;
    alloy_progress prog;
    int done;            /* requests finished (progress) */
} gen;

static void gen_free(gen *g) {
    for (int i = 0; i < g->n; i++) {
        alloy_free(g->prompts[i]);
        alloy_free(g->texts[i]);
        if (g->results) alloy_generation_free(&g->results[i]);
    }
    alloy_free(g->prompts);
    alloy_free(g->lens);
    alloy_free(g->lines);
    alloy_free(g->texts);
    alloy_free(g->results);
    alloy_free(g->bias);
    alloy_engine_destroy(g->e);
    alloy_checkpoint_close(g->ck);
    for (int i = 0; i < g->n_models; i++) {
        alloy_model_destroy(g->ms[i]);
        alloy_free(g->dirs[i]);
    }
}

/* Adds a prompt (takes ids and text). */
static alloy_status add_prompt(gen *g, int32_t *ids, int n, char *text, int line) {
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 16;
        int32_t **p = alloy_realloc(g->prompts, sizeof(int32_t *) * (size_t)g->cap, sizeof(int32_t *) * (size_t)cap);
        if (p) g->prompts = p;
        int *l = p ? alloy_realloc(g->lens, sizeof(int) * (size_t)g->cap, sizeof(int) * (size_t)cap) : NULL;
        if (l) g->lens = l;
        int *ln = l ? alloy_realloc(g->lines, sizeof(int) * (size_t)g->cap, sizeof(int) * (size_t)cap) : NULL;
        if (ln) g->lines = ln;
        char **t = ln ? alloy_realloc(g->texts, sizeof(char *) * (size_t)g->cap, sizeof(char *) * (size_t)cap) : NULL;
        if (!t) {
            alloy_free(ids);
            alloy_free(text);
            return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for %d prompts", cap);
        }
        g->texts = t;
        g->cap = cap;
    }
    g->prompts[g->n] = ids;
    g->lens[g->n] = n;
    g->lines[g->n] = line;
    g->texts[g->n] = text;
    g->n++;
    return ALLOY_STATUS_OK;
}

/* Encodes text into a new prompt; `what` names it in errors. */
static alloy_status add_text_prompt(gen *g, const char *text, size_t len, int line, const char *what) {
    if (!g->tok)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the model %s has no tokenizer.json and its config names none: give token ids",
                          what, g->dirs[0]);
    alloy_ids ids = {0};
    alloy_status s = alloy_tokenizer_encode(g->tok, text, len, 0, &ids);
    if (!s && ids.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: the prompt encodes to no tokens", what);
    char *copy = s ? NULL : alloy_malloc(len + 1);
    if (!s && !copy) s = ALLOY_STATUS_NOMEM;
    if (s) {
        alloy_ids_free(&ids);
        return s;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    return add_prompt(g, ids.data, (int)ids.n, copy, line);
}

/* "1 2 3" or "1,2,3" into a new prompt. */
static alloy_status add_id_prompt(gen *g, const char *list) {
    alloy_ids ids = {0};
    const char *p = list;
    alloy_status s = ALLOY_STATUS_OK;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "--prompt-ids: '%s' is not a list of token ids", list);
            break;
        }
        s = alloy_ids_push(&ids, (int32_t)v);
        if (s) break;
        p = end;
    }
    if (!s && ids.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "--prompt-ids: no ids given");
    if (s) {
        alloy_ids_free(&ids);
        return s;
    }
    return add_prompt(g, ids.data, (int)ids.n, NULL, 0);
}

/* Reads the JSONL prompts file; errors name the file and line. */
static alloy_status read_prompts(gen *g, const char *path) {
    char *data;
    size_t size;
    alloy_status s = alloy_file_read_all(path, &data, &size);
    if (s) return s;
    int line = 0;
    char *p = data, *end = data + size;
    while (!s && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *stop = nl ? nl : end;
        line++;
        char *q = p;
        while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < stop) {
            char what[600];
            snprintf(what, sizeof what, "%s:%d", path, line);
            cJSON *j = cJSON_ParseWithLength(p, (size_t)(stop - p));
            const cJSON *text = j ? cJSON_GetObjectItemCaseSensitive(j, "prompt") : NULL;
            const cJSON *ids = j ? cJSON_GetObjectItemCaseSensitive(j, "prompt_ids") : NULL;
            if (!j) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: invalid JSON", what);
            else if (!cJSON_IsObject(j)) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: not a JSON object", what);
            else if ((text != NULL) == (ids != NULL))
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: needs exactly one of \"prompt\" and \"prompt_ids\"", what);
            else if (text && !cJSON_IsString(text))
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt\" is not a string", what);
            else if (text)
                s = add_text_prompt(g, text->valuestring, strlen(text->valuestring), line, what);
            else if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) == 0)
                s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt_ids\" is not a non-empty array", what);
            else {
                int n = cJSON_GetArraySize(ids);
                int32_t *v = alloy_malloc(sizeof(int32_t) * (size_t)n);
                if (!v) s = ALLOY_STATUS_NOMEM;
                int k = 0;
                const cJSON *it;
                cJSON_ArrayForEach(it, ids) {
                    if (s) break;
                    double d = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
                    if (!(d >= 0 && d <= INT32_MAX && d == floor(d)))
                        s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: \"prompt_ids\"[%d] is not a token id", what, k);
                    else v[k++] = (int32_t)d;
                }
                if (s) alloy_free(v);
                else s = add_prompt(g, v, n, NULL, line);
            }
            cJSON_Delete(j);
        }
        p = stop + 1;
    }
    alloy_free(data);
    if (!s && g->n == 0) s = alloy_fail(ALLOY_STATUS_FORMAT, "%s: no prompts in the file", path);
    return s;
}

/* Loads the model folders (or runs' latest checkpoints), checks that they can form an ensemble,
 * and loads the first one's tokenizer, if any; *least_ctx is the members' least context. */
static alloy_status load_models(gen *g, const cli_list *model_dirs, int *least_ctx) {
    alloy_status s = cli_load_members(model_dirs, g->dirs, g->ms, &g->n_models, least_ctx, &g->ck);
    return s ? s : alloy_checkpoint_tokenizer(g->ck, &g->tok);
}

static const char *finish_words(alloy_finish_reason f) {
    switch (f) {
    case ALLOY_FINISH_EOS: return "end of text";
    case ALLOY_FINISH_STOP: return "stop string";
    case ALLOY_FINISH_LENGTH: return "token limit";
    case ALLOY_FINISH_CONTEXT: return "context full";
    default: return "unfinished";
    }
}

/* The stream of a single prompt: text, or ids when there is no text to show. */
static void stream_one(void *user, const alloy_stream_event *ev) {
    const bool *ids_mode = user;
    if (*ids_mode) {
        if (ev->token >= 0) {
            static bool first = true;
            printf(first ? "%d" : " %d", (int)ev->token);
            first = false;
        }
    } else if (ev->len) {
        fwrite(ev->text, 1, ev->len, stdout);
    }
    fflush(stdout);
}

static void stream_progress(void *user, const alloy_stream_event *ev) {
    gen *g = user;
    if (ev->token >= 0) return;
    g->done++;
    if (!g->quiet && g->prog.tty) alloy_progress_update(&g->prog, "generate: %d of %d prompts done", g->done, g->n);
}

/* One JSONL record per prompt, in order, to path (atomically) or stdout. */
static alloy_status write_records(gen *g, const char *path) {
    alloy_atomic_file f;
    alloy_status s = ALLOY_STATUS_OK;
    if (path && (s = alloy_atomic_open(&f, path))) return s;
    for (int i = 0; i < g->n && !s; i++) {
        const alloy_generation *r = &g->results[i];
        cJSON *o = cJSON_CreateObject();
        if (g->texts[i]) {
            cJSON_AddStringToObject(o, "prompt", g->texts[i]);
        } else {
            cJSON *a = cJSON_AddArrayToObject(o, "prompt_ids");
            for (int k = 0; k < g->lens[i]; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(g->prompts[i][k]));
        }
        if (r->text) { // as valid UTF-8 (a token may end inside a character)
            char *fixed = alloy_malloc(3 * r->text_len + 1);
            if (fixed) {
                size_t n = alloy_utf8_repair(r->text, r->text_len, fixed, NULL);
                fixed[n] = '\0';
                cJSON_AddStringToObject(o, "text", fixed);
                alloy_free(fixed);
            }
        }
        cJSON *a = cJSON_AddArrayToObject(o, "ids");
        for (size_t k = 0; k < r->ids.n; k++) cJSON_AddItemToArray(a, cJSON_CreateNumber(r->ids.data[k]));
        cJSON_AddStringToObject(o, "finish_reason", alloy_finish_name(r->finish));
        cJSON_AddNumberToObject(o, "tokens", (double)r->ids.n);
        cJSON_AddNumberToObject(o, "tokens_per_s", r->seconds > 0 ? round(r->ids.n / r->seconds * 10) / 10 : 0.0);
        char *line = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!line) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a record");
        else if (path) s = alloy_atomic_printf(&f, "%s\n", line);
        else printf("%s\n", line);
        free(line);
    }
    if (path) {
        if (s) alloy_atomic_abort(&f);
        else s = alloy_atomic_commit(&f);
    }
    return s;
}

/* --logit-bias ID=BIAS items into an array. */
static int parse_bias(gen *g, const cli_list *l) {
    if (l->n == 0) return 0;
    g->bias = alloy_malloc(sizeof(alloy_logit_bias) * (size_t)l->n);
    if (!g->bias) return cli_fail("generate", ALLOY_STATUS_NOMEM);
    for (int i = 0; i < l->n; i++) {
        const char *it = l->items[i], *eq = strchr(it, '=');
        char *end;
        errno = 0;
        long id = eq ? strtol(it, &end, 10) : -1;
        if (!eq || end != eq || errno || id < 0 || id > INT32_MAX)
            return cli_usage("generate", "--logit-bias expects ID=BIAS, got '%s'", it);
        double b = strtod(eq + 1, &end);
        if (!eq[1] || *end || isnan(b) || b == INFINITY)
            return cli_usage("generate", "--logit-bias expects ID=BIAS with a number or -inf, got '%s'", it);
        g->bias[i] = (alloy_logit_bias){.token = (int32_t)id, .bias = (float)b};
    }
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *prompt = NULL, *prompts_file = NULL, *prompt_ids = NULL, *weights = "f32", *out = NULL,
               *mode_name = "probs";
    int n_tokens = 128, batch = 8, ctx = 0, threads = 0;
    alloy_sampler_params sp;
    alloy_sampler_params_default(&sp);
    cli_list bias_list = {0}, stop_list = {0}, model_dirs = {0}, weight_args = {0};
    float member_w[ALLOY_ENGINE_MAX_MEMBERS];
    alloy_ensemble_mode mode = ALLOY_ENSEMBLE_PROBS;
    gen g = {0};
    cli_flag flags[] = {
        {"model", CLI_LIST, &model_dirs, false},
        {"member-weights", CLI_LIST, &weight_args, false},
        {"ensemble", CLI_STR, &mode_name, false},
        {"prompt", CLI_STR, &prompt, false},
        {"prompts", CLI_STR, &prompts_file, false},
        {"prompt-ids", CLI_STR, &prompt_ids, false},
        {"tokens", CLI_INT, &n_tokens, false},
        {"temperature", CLI_FLOAT, &sp.temperature, false},
        {"top-k", CLI_INT, &sp.top_k, false},
        {"top-p", CLI_FLOAT, &sp.top_p, false},
        {"min-p", CLI_FLOAT, &sp.min_p, false},
        {"repeat-penalty", CLI_FLOAT, &sp.repeat_penalty, false},
        {"presence-penalty", CLI_FLOAT, &sp.presence_penalty, false},
        {"frequency-penalty", CLI_FLOAT, &sp.frequency_penalty, false},
        {"repeat-last-n", CLI_INT, &sp.repeat_last_n, false},
        {"logit-bias", CLI_LIST, &bias_list, false},
        {"stop", CLI_LIST, &stop_list, false},
        {"seed", CLI_U64, &sp.seed, false},
        {"weights", CLI_STR, &weights, false},
        {"batch", CLI_INT, &batch, false},
        {"ctx", CLI_INT, &ctx, false},
        {"out", CLI_STR, &out, false},
        {"threads", CLI_INT, &threads, false},
        {"quiet", CLI_BOOL, &g.quiet, false},
    };
    int r = cli_parse("generate", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    int rc = 0;
    if (r) {
        rc = r == 1 ? 0 : r;
        goto done;
    }
    alloy_qtype qt;
    if (!model_dirs.n) rc = cli_usage("generate", "--model is required");
    else if ((prompt != NULL) + (prompts_file != NULL) + (prompt_ids != NULL) != 1)
        rc = cli_usage("generate", "give exactly one of --prompt, --prompts and --prompt-ids");
    else if (n_tokens < -1) rc = cli_usage("generate", "--tokens must be >= 0 (or -1: until the context is full)");
    else if (batch < 1 || batch > 4096) rc = cli_usage("generate", "--batch must be in [1, 4096]");
    else if (ctx < 0) rc = cli_usage("generate", "--ctx must be >= 1");
    else if (threads < 0) rc = cli_usage("generate", "--threads must be >= 0");
    else if (!alloy_qtype_parse(weights, &qt))
        rc = cli_usage("generate", "--weights must be f32, f16, q8_0, q4_0 or q4_k, not \"%s\"", weights);
    else if (out && !prompts_file) rc = cli_usage("generate", "--out goes with --prompts");
    else if (!(sp.temperature >= 0.0f)) rc = cli_usage("generate", "--temperature must be >= 0");
    else if (!(sp.top_p >= 0.0f && sp.top_p <= 1.0f)) rc = cli_usage("generate", "--top-p must be in [0, 1]");
    else if (!(sp.min_p >= 0.0f && sp.min_p <= 1.0f)) rc = cli_usage("generate", "--min-p must be in [0, 1]");
    else if (!(sp.repeat_penalty > 0.0f)) rc = cli_usage("generate", "--repeat-penalty must be > 0");
    else if (sp.repeat_last_n < -1) rc = cli_usage("generate", "--repeat-last-n must be >= -1");
    if (!rc) rc = cli_ensemble_options("generate", model_dirs.n, &weight_args, mode_name, member_w, &mode);
    if (!rc) rc = parse_bias(&g, &bias_list);
    for (int i = 0; !rc && i < stop_list.n; i++)
        if (!stop_list.items[i][0]) rc = cli_usage("generate", "--stop: an empty stop string");
    if (rc) goto done;
    cli_set_threads(threads);

    int least_ctx = 0; // the members' least context
    alloy_status s = load_models(&g, &model_dirs, &least_ctx);
    const alloy_config *c = s ? NULL : &g.ms[0]->config;
    if (!s && ctx > least_ctx)
        s = alloy_fail(ALLOY_STATUS_USAGE, "--ctx %d exceeds the %s context of %d", ctx,
                       g.n_models > 1 ? "models' least" : "model's", least_ctx);
    if (!s && stop_list.n > 0 && !g.tok)
        s = alloy_fail(ALLOY_STATUS_USAGE, "--stop: the model %s has no tokenizer to decode text with", g.dirs[0]);
    if (!s) {
        if (prompt) s = add_text_prompt(&g, prompt, strlen(prompt), 0, "--prompt");
        else if (prompt_ids) s = add_id_prompt(&g, prompt_ids);
        else s = read_prompts(&g, prompts_file);
    }
    int max_ctx = ctx > 0 ? ctx : least_ctx;
    for (int i = 0; !s && i < g.n; i++) { // name the prompt as the user knows it
        char what[600];
        if (prompts_file) snprintf(what, sizeof what, "%s:%d", prompts_file, g.lines[i]);
        else snprintf(what, sizeof what, "%s", prompt ? "--prompt" : "--prompt-ids");
        for (int k = 0; k < g.lens[i] && !s; k++)
            if (g.prompts[i][k] >= c->vocab_size)
                s = alloy_fail(ALLOY_STATUS_RANGE, "%s: token id %d is outside the model's vocabulary [0, %d)", what,
                               g.prompts[i][k], c->vocab_size);
        if (!s && g.lens[i] > max_ctx)
            s = alloy_fail(ALLOY_STATUS_RANGE, "%s: the prompt has %d tokens, more than the context of %d", what,
                           g.lens[i], max_ctx);
    }
    alloy_engine_options eo = {.weights = qt, .max_batch = prompts_file ? (batch < g.n ? batch : g.n) : 1,
                               .max_ctx = max_ctx, .threads = 0};
    if (!s) s = cli_engine_create(&g.e, g.ms, g.n_models, &eo, weight_args.n ? member_w : NULL, mode);
    if (!s && !(g.results = alloy_calloc((size_t)g.n, sizeof(alloy_generation)))) s = ALLOY_STATUS_NOMEM;
    if (s) {
        rc = cli_fail("generate", s);
        goto done;
    }

    alloy_generate_options go;
    alloy_generate_options_default(&go);
    sp.logit_bias = g.bias;
    sp.n_logit_bias = bias_list.n;
    if (g.tok) sp.n_vocab = alloy_tokenizer_vocab_size(g.tok); // never a padding id
    go.sampling = sp;
    go.max_tokens = n_tokens;
    go.stop = stop_list.items;
    go.n_stop = stop_list.n;
    go.tokenizer = g.tok;
    int32_t eot = g.tok ? alloy_tokenizer_special_id(g.tok, "<|endoftext|>") : -1;
    if (eot >= 0) go.eos = &eot, go.n_eos = 1;

    double t0 = alloy_time_now();
    bool ids_mode = prompt_ids != NULL;
    if (prompts_file) {
        alloy_progress_init(&g.prog, stderr, 10);
        s = alloy_generate(g.e, g.results, (const int32_t *const *)g.prompts, g.lens, g.n, &go, stream_progress, &g);
        if (!g.quiet && g.prog.tty) alloy_progress_done(&g.prog);
        if (!s) s = write_records(&g, out);
    } else {
        if (prompt) {
            fputs(prompt, stdout);
            fflush(stdout);
        }
        s = alloy_generate(g.e, g.results, (const int32_t *const *)g.prompts, g.lens, 1, &go, stream_one, &ids_mode);
        putchar('\n');
        fflush(stdout);
    }
    double dt = alloy_time_now() - t0;
    if (s) {
        rc = cli_fail("generate", s);
        goto done;
    }
    if (!g.quiet) {
        char what[64]; // the weights, and the ensemble
        if (g.n_models > 1)
            snprintf(what, sizeof what, "%s weights, an ensemble of %d (%s)", alloy_qtype_name(qt), g.n_models, mode_name);
        else
            snprintf(what, sizeof what, "%s weights", alloy_qtype_name(qt));
        size_t total = 0;
        for (int i = 0; i < g.n; i++) total += g.results[i].ids.n;
        if (g.n == 1)
            fprintf(stderr, "alloy generate: stopped: %s after %zu tokens (prompt %d) in %.2f s, %.1f tokens/s, %s\n",
                    finish_words(g.results[0].finish), total, g.lens[0], dt, dt > 0 ? total / dt : 0.0, what);
        else
            fprintf(stderr, "alloy generate: %d prompts, %zu tokens in %.2f s, %.1f tokens/s (batch %d, %s)\n", g.n,
                    total, dt, dt > 0 ? total / dt : 0.0, eo.max_batch, what);
    }
done:
    free(bias_list.items);
    free(stop_list.items);
    free(model_dirs.items);
    free(weight_args.items);
    gen_free(&g);
    return rc;
}
