/*
 * sample.c — `alloy sample`: plain sampling from a checkpoint (greedy, or temperature with
 * top-k), through the inference engine of src/infer/ (a KV cache: each token costs one step).
 * `alloy generate` has the whole sampling chain, quantised weights and batches of prompts.
 * Several models that share a tokenizer sample as one ensemble engine.
 */
#include "cli.h"
#include "alloy/infer.h"
#include "alloy/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy sample --model DIR [DIR ...] --prompt TEXT [--tokens N] [flags]\n"
    "\n"
    "Generates text from a model: DIR is a checkpoint folder or a run folder (its latest\n"
    "checkpoint), with its tokenizer.json (or the byte tokenizer). Prints the prompt, then the\n"
    "continuation as it is sampled; stops early if the model produces <|endoftext|> or when the\n"
    "prompt and the continuation fill the model's context. (alloy generate has top-p, min-p,\n"
    "penalties, stop strings, quantised weights and batches.) Several models (sharing the\n"
    "vocabulary and tokenizer; the first's is used) sample as one ensemble: from their mixture of\n"
    "probabilities (--ensemble probs) or the softmax of their weighted logits (--ensemble logits),\n"
    "temperature and top-k applied to the combined distribution.\n"
    "\n"
    "  --model DIR ...       checkpoint or run folders (two or more: an ensemble)\n"
    "  --member-weights W ...  ensemble weights, one per model (default equal; normalised)\n"
    "  --ensemble MODE       probs (default: Σ wᵢ·pᵢ) or logits (softmax of Σ wᵢ·zᵢ)\n"
    "  --prompt TEXT         text to continue (default: a newline)\n"
    "  --tokens N            tokens to generate (default 200)\n"
    "  --temperature X       0 = greedy (default 0.8)\n"
    "  --top-k K             sample among the K most likely tokens, 0 = all (default 40)\n"
    "  --seed S              sampling seed (default 1337)\n"
    "  --threads N           OpenMP threads (default: all cores)\n";

/* Prints the text of each token as it is drawn. */
static void print_text(void *user, const alloy_stream_event *ev) {
    (void)user;
    if (ev->len) {
        fwrite(ev->text, 1, ev->len, stdout);
        fflush(stdout);
    }
}

static int sample_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args);

int cmd_sample(int argc, char **argv) {
    cli_list model_dirs = {0}, weight_args = {0};
    int rc = sample_main(argc, argv, &model_dirs, &weight_args);
    free(model_dirs.items);
    free(weight_args.items);
    return rc;
}

/* cmd_sample's body; cli_parse fills the caller's lists, which the caller frees. */
static int sample_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args) {
    const char *prompt = "\n", *mode_name = "probs";
    int n_tokens = 200, top_k = 40, threads = 0;
    float temperature = 0.8f;
    uint64_t seed = 1337;
    cli_flag flags[] = {
        {"model", CLI_LIST, model_dirs, false},   {"prompt", CLI_STR, &prompt, false},
        {"member-weights", CLI_LIST, weight_args, false}, {"ensemble", CLI_STR, &mode_name, false},
        {"tokens", CLI_INT, &n_tokens, false},     {"temperature", CLI_FLOAT, &temperature, false},
        {"top-k", CLI_INT, &top_k, false},         {"seed", CLI_U64, &seed, false},
        {"threads", CLI_INT, &threads, false},
    };
    int r = cli_parse("sample", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dirs->n) return cli_usage("sample", "--model is required");
    if (n_tokens < 0) return cli_usage("sample", "--tokens must be >= 0");
    if (top_k < 0) return cli_usage("sample", "--top-k must be >= 0");
    if (!(temperature >= 0.0f)) return cli_usage("sample", "--temperature must be >= 0");
    float member_w[ALLOY_ENGINE_MAX_MEMBERS];
    alloy_ensemble_mode mode;
    r = cli_ensemble_options("sample", model_dirs->n, weight_args, mode_name, member_w, &mode);
    if (r) return r;
    cli_set_threads(threads);

    int n = 0, least_ctx = 0; // the members loaded, their least context
    char *dirs[ALLOY_ENGINE_MAX_MEMBERS] = {0};
    alloy_model *ms[ALLOY_ENGINE_MAX_MEMBERS] = {0};
    alloy_checkpoint *ck = NULL;
    alloy_status s = cli_load_members(model_dirs, dirs, ms, &n, &least_ctx, &ck);
    // the (first) checkpoint's tokenizer: its tokenizer file, or the byte tokenizer its config names
    const alloy_tokenizer *tok = NULL;
    if (!s) s = alloy_checkpoint_tokenizer(ck, &tok);
    if (!s && !tok) s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no tokenizer.json and config.json names no tokenizer", ck->dir);
    alloy_ids enc = {0};
    if (!s) s = alloy_tokenizer_encode(tok, prompt, strlen(prompt), 0, &enc);
    if (!s && enc.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "--prompt: encodes to no tokens");
    if (!s && enc.n > (size_t)least_ctx)
        s = alloy_fail(ALLOY_STATUS_RANGE, "--prompt: %zu tokens, more than the %s context of %d", enc.n,
                       n > 1 ? "models' least" : "model's", least_ctx);
    alloy_engine *e = NULL;
    alloy_engine_options eo = {.weights = ALLOY_QTYPE_F32, .max_ctx = least_ctx};
    if (!s) s = cli_engine_create(&e, ms, n, &eo, weight_args->n ? member_w : NULL, mode);
    if (!s) {
        alloy_generate_options o;
        alloy_generate_options_default(&o);
        o.sampling.temperature = temperature; // temperature and top-k only, as this verb always did
        o.sampling.top_k = top_k;
        o.sampling.top_p = 1.0f;
        o.sampling.min_p = 0.0f;
        o.sampling.seed = seed;
        o.max_tokens = n_tokens;
        alloy_generate_options_use_tokenizer(&o, tok); // only ids the tokenizer knows; its <|endoftext|> ends
        fwrite(prompt, 1, strlen(prompt), stdout);
        fflush(stdout);
        const int32_t *ids = enc.data;
        int n_ids = (int)enc.n;
        alloy_generation g = {0};
        s = alloy_generate(e, &g, &ids, &n_ids, 1, &o, print_text, NULL);
        putchar('\n');
        if (!s && g.finish == ALLOY_FINISH_CONTEXT)
            fprintf(stderr, "alloy sample: stopped after %zu of %d tokens: with the %d-token prompt they fill the %s context of %d tokens\n",
                    g.ids.n, n_tokens, n_ids, n > 1 ? "models' least" : "model's", least_ctx);
        alloy_generation_free(&g);
    }
    alloy_engine_destroy(e);
    alloy_ids_free(&enc);
    alloy_checkpoint_close(ck);
    for (int i = 0; i < n; i++) {
        alloy_model_destroy(ms[i]);
        alloy_free(dirs[i]);
    }
    return s ? cli_fail("sample", s) : 0;
}
