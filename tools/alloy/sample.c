/*
 * sample.c — `alloy sample`: plain sampling from a checkpoint (greedy, or temperature with
 * top-k), through the inference engine of src/infer/ (a KV cache: each token costs one step).
 * `alloy generate` has the whole sampling chain, quantised weights and batches of prompts.
 */
#include "cli.h"
#include "alloy/infer.h"
#include "alloy/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy sample --model DIR --prompt TEXT [--tokens N] [flags]\n"
    "\n"
    "Generates text from a model: DIR is a checkpoint folder or a run folder (its latest\n"
    "checkpoint), with its tokenizer.json (or the byte tokenizer). Prints the prompt, then the\n"
    "continuation as it is sampled; stops early if the model produces <|endoftext|> or when the\n"
    "prompt and the continuation fill the model's context. (alloy generate has top-p, min-p,\n"
    "penalties, stop strings, quantised weights and batches.)\n"
    "\n"
    "  --model DIR           checkpoint or run folder\n"
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

int cmd_sample(int argc, char **argv) {
    const char *model_dir = NULL, *prompt = "\n";
    int n_tokens = 200, top_k = 40, threads = 0;
    float temperature = 0.8f;
    uint64_t seed = 1337;
    cli_flag flags[] = {
        {"model", CLI_STR, &model_dir, false},     {"prompt", CLI_STR, &prompt, false},
        {"tokens", CLI_INT, &n_tokens, false},     {"temperature", CLI_FLOAT, &temperature, false},
        {"top-k", CLI_INT, &top_k, false},         {"seed", CLI_U64, &seed, false},
        {"threads", CLI_INT, &threads, false},
    };
    int r = cli_parse("sample", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dir) return cli_usage("sample", "--model is required");
    if (n_tokens < 0) return cli_usage("sample", "--tokens must be >= 0");
    if (top_k < 0) return cli_usage("sample", "--top-k must be >= 0");
    if (!(temperature >= 0.0f)) return cli_usage("sample", "--temperature must be >= 0");
    cli_set_threads(threads);

    char *dir = NULL;
    alloy_status s = alloy_checkpoint_resolve(model_dir, &dir);
    if (s) return cli_fail("sample", s);
    alloy_model *m;
    s = alloy_model_load(&m, dir, 1, 1); // the engine keeps its own activations
    if (s) {
        alloy_free(dir);
        return cli_fail("sample", s);
    }
    const alloy_config *c = &m->config;
    // the checkpoint's tokenizer.json, or the byte tokenizer its config names
    alloy_tokenizer *tok = NULL;
    char *tj = alloy_path_join(dir, "tokenizer.json");
    if (tj && alloy_path_exists(tj)) s = alloy_tokenizer_load(&tok, tj);
    else if (!strcmp(c->tokenizer, "bytes")) s = alloy_tokenizer_create(&tok, "bytes");
    else s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: no tokenizer.json and config.json names no tokenizer", dir);
    alloy_free(tj);
    if (!s && alloy_tokenizer_vocab_size(tok) > c->vocab_size)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has %d tokens but the model only %d", dir,
                       alloy_tokenizer_vocab_size(tok), c->vocab_size);
    alloy_ids enc = {0};
    if (!s) s = alloy_tokenizer_encode(tok, prompt, strlen(prompt), 0, &enc);
    if (!s && enc.n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "--prompt: encodes to no tokens");
    if (!s && enc.n > (size_t)c->max_seq_len)
        s = alloy_fail(ALLOY_STATUS_RANGE, "--prompt: %zu tokens, more than the model's context of %d", enc.n,
                       c->max_seq_len);
    alloy_engine *e = NULL;
    if (!s) s = alloy_engine_create(&e, m, &(alloy_engine_options){.weights = ALLOY_QTYPE_F32});
    if (!s) {
        alloy_generate_options o;
        alloy_generate_options_default(&o);
        o.sampling.temperature = temperature; // temperature and top-k only, as this verb always did
        o.sampling.top_k = top_k;
        o.sampling.top_p = 1.0f;
        o.sampling.min_p = 0.0f;
        o.sampling.seed = seed;
        o.sampling.n_vocab = alloy_tokenizer_vocab_size(tok); // only ids the tokenizer knows
        o.max_tokens = n_tokens;
        o.tokenizer = tok;
        int32_t eot = alloy_tokenizer_special_id(tok, "<|endoftext|>");
        if (eot >= 0) o.eos = &eot, o.n_eos = 1;
        fwrite(prompt, 1, strlen(prompt), stdout);
        fflush(stdout);
        const int32_t *ids = enc.data;
        int n_ids = (int)enc.n;
        alloy_generation g = {0};
        s = alloy_generate(e, &g, &ids, &n_ids, 1, &o, print_text, NULL);
        putchar('\n');
        alloy_generation_free(&g);
    }
    alloy_engine_destroy(e);
    alloy_ids_free(&enc);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(dir);
    return s ? cli_fail("sample", s) : 0;
}
