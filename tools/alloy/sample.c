/*
 * sample.c — `alloy sample`: plain autoregressive sampling from a checkpoint (greedy,
 * temperature, top-k). Each new token re-runs the model over the context; the KV-cache engine
 * of src/infer/ replaces this later.
 */
#include "cli.h"
#include "alloy/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy sample --model DIR --prompt TEXT [--tokens N] [flags]\n"
    "\n"
    "Generates text from a model: DIR is a checkpoint folder or a run folder (its latest\n"
    "checkpoint), with its tokenizer.json (or the byte tokenizer). Prints the prompt, then the\n"
    "continuation as it is sampled; stops early if the model produces <|endoftext|>.\n"
    "\n"
    "  --model DIR           checkpoint or run folder\n"
    "  --prompt TEXT         text to continue (default: a newline)\n"
    "  --tokens N            tokens to generate (default 200)\n"
    "  --temperature X       0 = greedy (default 0.8)\n"
    "  --top-k K             sample among the K most likely tokens, 0 = all (default 40)\n"
    "  --seed S              sampling seed (default 1337)\n"
    "  --threads N           OpenMP threads (default: all cores)\n";

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Picks the next token from logits (V): greedy, or temperature + top-k sampling. */
static int32_t pick(const float *logits, int V, float temperature, int top_k, alloy_rng *rng, float *probs, float *sorted) {
    if (temperature <= 0.0f) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    softmax_forward(probs, logits, V, temperature);
    if (top_k > 0 && top_k < V) {
        memcpy(sorted, probs, sizeof(float) * (size_t)V);
        qsort(sorted, (size_t)V, sizeof(float), cmp_desc);
        float cut = sorted[top_k - 1];
        for (int v = 0; v < V; v++)
            if (probs[v] < cut) probs[v] = 0.0f;
    }
    double total = 0.0;
    for (int v = 0; v < V; v++) total += probs[v];
    double u = alloy_rng_uniform(rng) * total, acc = 0.0;
    for (int v = 0; v < V; v++) {
        acc += probs[v];
        if (u < acc && probs[v] > 0.0f) return v;
    }
    for (int v = V - 1; v >= 0; v--)
        if (probs[v] > 0.0f) return v;
    return 0;
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
    char *wp = alloy_path_join(model_dir, "model.safetensors");
    alloy_status s = ALLOY_STATUS_OK;
    if (wp && alloy_path_exists(wp)) dir = alloy_strdup(model_dir);
    else if (!alloy_path_exists(model_dir)) s = alloy_fail(ALLOY_STATUS_IO, "%s: no such folder", model_dir);
    else s = alloy_run_latest(model_dir, &dir);
    alloy_free(wp);
    if (s) return cli_fail("sample", s);
    alloy_model *m;
    s = alloy_model_load(&m, dir, 1, 0);
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
    int32_t *ids = enc.data;
    size_t n_ids = enc.n;
    if (!s && n_ids == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "--prompt: encodes to no tokens");
    size_t cap = n_ids + (size_t)n_tokens;
    int32_t *seq = s ? NULL : alloy_malloc(sizeof(int32_t) * cap);
    float *probs = alloy_malloc(sizeof(float) * (size_t)c->vocab_size);
    float *sorted = alloy_malloc(sizeof(float) * (size_t)c->vocab_size);
    if (!s && (!seq || !probs || !sorted)) s = ALLOY_STATUS_NOMEM;
    if (!s) {
        memcpy(seq, ids, sizeof(int32_t) * n_ids);
        fwrite(prompt, 1, strlen(prompt), stdout);
        fflush(stdout);
        alloy_rng rng;
        alloy_rng_seed(&rng, seed);
        int32_t eot = alloy_tokenizer_special_id(tok, "<|endoftext|>");
        size_t n = n_ids;
        for (int k = 0; k < n_tokens && !s; k++) {
            // the model sees at most its context length: the most recent tokens
            size_t T = n < (size_t)m->max_T ? n : (size_t)m->max_T;
            s = alloy_model_forward(m, seq + n - T, 1, (int)T);
            if (s) break;
            const float *logits = m->acts.logits + (T - 1) * (size_t)c->vocab_size;
            // only ids the tokenizer knows (a model's vocabulary may be padded beyond it)
            int32_t next = pick(logits, alloy_tokenizer_vocab_size(tok), temperature, top_k, &rng, probs, sorted);
            if (next == eot) break; // the model ended the text
            seq[n++] = next;
            char *text;
            size_t len;
            s = alloy_tokenizer_decode(tok, &next, 1, &text, &len);
            if (!s) {
                fwrite(text, 1, len, stdout);
                fflush(stdout);
                alloy_free(text);
            }
        }
        putchar('\n');
    }
    alloy_free(seq);
    alloy_ids_free(&enc);
    alloy_free(probs);
    alloy_free(sorted);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(dir);
    return s ? cli_fail("sample", s) : 0;
}
