/*
 * test_generate.c — the generation loop's step hook and the chat session (src/infer/generate.c,
 * src/infer/chat_session.c).
 *
 *   - the hook sees every step: each request's tokens, in order, are the ids it ends with, each
 *     drawn (greedy) as the argmax of the row shown with it; a request the hook stops ends there
 *     (finish "stopped", its tokens a prefix of the unhooked run's) while the others run on
 *     unchanged; a hook that returns nonzero ends every request, waiting ones included; seeds
 *     per request replace seed + i;
 *   - the chat session reuses its cache: the first turn prefills the whole rendering, the
 *     second only what follows the common prefix (at most the new messages and the reply's
 *     tokens), the engine's sequence 0 then holds the conversation and the whole reply; a
 *     conversation that fills the context is refused with RANGE;
 *   - requests as files carry them: prompts from text, id lists and JSONL (named FILE:LINE in
 *     errors), their checks, and the JSONL records of results.
 */
#include "alloy/alloy.h"
#include "alloy/chat.h"
#include "alloy/infer.h"
#include "harness.h"
#include "model_util.h"

#include <stdio.h>
#include <string.h>

enum { NP = 3, MAXT = 10 };

/* What the hook saw, per request. */
typedef struct watch {
    int32_t toks[NP][MAXT + 1]; /* the tokens shown, in order */
    int n[NP];
    int steps, bad_argmax, bad_order;
    int stop_req, stop_after;   /* stop request stop_req once it has stop_after tokens (-1: never) */
    int halt_at;                /* return nonzero at this step (-1: never) */
} watch;

static int hook(void *user, alloy_generate_step *st) {
    watch *w = user;
    w->steps++;
    for (int j = 0; j < st->n; j++) {
        int r = st->requests[j];
        if (j > 0 && st->requests[j - 1] >= r) w->bad_order++;
        const float *row = st->logits + (size_t)j * st->vocab_size;
        int best = 0;
        for (int v = 1; v < st->vocab_size; v++)
            if (row[v] > row[best]) best = v;
        if (best != st->tokens[j]) w->bad_argmax++;
        if (w->n[r] <= MAXT) w->toks[r][w->n[r]++] = st->tokens[j];
        if (r == w->stop_req && w->n[r] == w->stop_after) st->stop[j] = true;
    }
    return w->steps == w->halt_at;
}

static alloy_model *tiny_model(int V, int T, uint64_t seed) {
    alloy_config c = tiny_config(ALLOY_FAMILY_GPT2, V, T);
    alloy_model *m = NULL;
    if (alloy_model_create(&m, &c, 1, T)) return NULL;
    alloy_model_init_weights(m, seed);
    for (size_t i = 0; i < m->num_params; i++) m->params_memory[i] *= 4.0f; // away from uniform logits
    return m;
}

static void test_hook_sees_every_step(void) {
    alloy_model *m = tiny_model(64, 64, 5);
    REQUIRE(m, "%s", alloy_last_error());
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = NP}), "%s", alloy_last_error());
    int32_t p0[] = {1, 2, 3}, p1[] = {7, 8, 9, 10, 11}, p2[] = {4};
    const int32_t *pp[NP] = {p0, p1, p2};
    int lens[NP] = {3, 5, 1};
    alloy_generate_options o;
    alloy_generate_options_default(&o);
    o.sampling.temperature = 0.0f;
    o.max_tokens = MAXT;
    alloy_generation ref[NP], got[NP];
    REQUIRE(!alloy_generate(e, ref, pp, lens, NP, &o, NULL, NULL), "%s", alloy_last_error());

    // a hook that watches and stops request 1 after its 4th token
    watch w = {.stop_req = 1, .stop_after = 4, .halt_at = -1};
    o.hook = hook;
    o.hook_user = &w;
    REQUIRE(!alloy_generate(e, got, pp, lens, NP, &o, NULL, NULL), "%s", alloy_last_error());
    EXPECT(w.bad_argmax == 0 && w.bad_order == 0, "%d rows whose token is not their argmax, %d out of order", w.bad_argmax,
           w.bad_order);
    EXPECT(w.steps == MAXT, "%d steps seen, %d expected", w.steps, MAXT);
    for (int r = 0; r < NP; r++) {
        int want = r == 1 ? 4 : (int)ref[r].ids.n;
        EXPECT((int)got[r].ids.n == want && w.n[r] == want, "request %d: %zu tokens, hook saw %d, %d expected", r,
               got[r].ids.n, w.n[r], want);
        EXPECT(got[r].finish == (r == 1 ? ALLOY_FINISH_HOOK : ref[r].finish), "request %d finished %s", r,
               alloy_finish_name(got[r].finish));
        for (int k = 0; k < want && k < (int)got[r].ids.n; k++)
            EXPECT(got[r].ids.data[k] == ref[r].ids.data[k] && w.toks[r][k] == got[r].ids.data[k],
                   "request %d token %d: %d, unhooked %d, hook saw %d", r, k, got[r].ids.data[k], ref[r].ids.data[k],
                   w.toks[r][k]);
    }
    EXPECT(!strcmp(alloy_finish_name(ALLOY_FINISH_HOOK), "stopped"), "name %s", alloy_finish_name(ALLOY_FINISH_HOOK));
    for (int r = 0; r < NP; r++) alloy_generation_free(&got[r]);
    alloy_engine_destroy(e);

    // a hook that ends everything at its 3rd step, with request 2 still waiting for a slot
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2}), "%s", alloy_last_error());
    watch h = {.stop_req = -1, .halt_at = 3};
    o.hook_user = &h;
    REQUIRE(!alloy_generate(e, got, pp, lens, NP, &o, NULL, NULL), "%s", alloy_last_error());
    EXPECT(got[0].ids.n == 3 && got[1].ids.n == 3 && got[2].ids.n == 0 && h.steps == 3, "halt: %zu %zu %zu tokens, %d steps",
           got[0].ids.n, got[1].ids.n, got[2].ids.n, h.steps);
    for (int r = 0; r < NP; r++)
        EXPECT(got[r].finish == ALLOY_FINISH_HOOK && got[r].prompt_tokens == lens[r], "halt: request %d %s", r,
               alloy_finish_name(got[r].finish));
    for (int r = 0; r < NP; r++) alloy_generation_free(&got[r]);
    alloy_engine_destroy(e);

    // seeds per request: request i with seeds[i] draws as a lone request with sampling.seed =
    // seeds[i] (Q8_0 weights: a row's logits do not depend on the batch)
    REQUIRE(!alloy_engine_create(&e, m, &(alloy_engine_options){.max_batch = 2, .weights = ALLOY_QTYPE_Q8_0}), "%s",
            alloy_last_error());
    uint64_t seeds[NP] = {99, 12345, 7};
    alloy_generate_options_default(&o);
    o.max_tokens = MAXT;
    o.seeds = seeds;
    REQUIRE(!alloy_generate(e, got, pp, lens, 2, &o, NULL, NULL), "%s", alloy_last_error());
    alloy_generate_options one = o;
    one.seeds = NULL;
    one.sampling.seed = seeds[1];
    alloy_generation g1;
    REQUIRE(!alloy_generate(e, &g1, &pp[1], &lens[1], 1, &one, NULL, NULL), "%s", alloy_last_error());
    EXPECT(g1.ids.n == got[1].ids.n && !memcmp(g1.ids.data, got[1].ids.data, sizeof(int32_t) * g1.ids.n),
           "request 1 with seeds[1] differs from a lone run with that seed");
    alloy_generation_free(&g1);
    for (int r = 0; r < 2; r++) alloy_generation_free(&got[r]);
    for (int r = 0; r < NP; r++) alloy_generation_free(&ref[r]);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
}

static void on_text(void *user, const char *text, size_t len) {
    (void)text;
    *(size_t *)user += len;
}

static void test_chat_session_prefix(void) {
    alloy_tokenizer *bytes = NULL, *tok = NULL;
    REQUIRE(!alloy_tokenizer_create(&bytes, "bytes") && !alloy_chat_tokenizer(bytes, &tok, NULL, NULL, NULL), "%s",
            alloy_last_error());
    int V = alloy_tokenizer_vocab_size(tok), T = 160;
    alloy_model *m = tiny_model(V, T, 11);
    REQUIRE(m, "%s", alloy_last_error());
    alloy_engine *e;
    REQUIRE(!alloy_engine_create(&e, m, NULL), "%s", alloy_last_error());
    alloy_chat_session_options co;
    alloy_chat_session_options_default(&co);
    co.max_tokens = 12;
    alloy_chat_session *cs;
    REQUIRE(!alloy_chat_session_create(&cs, e, tok, &co), "%s", alloy_last_error());
    REQUIRE(!alloy_chat_session_add(cs, "system", "be brief", 8) && !alloy_chat_session_add(cs, "user", "hello", 5), "%s",
            alloy_last_error());
    alloy_chat_reply r1, r2;
    size_t streamed = 0;
    REQUIRE(!alloy_chat_session_reply(cs, &r1, on_text, &streamed), "%s", alloy_last_error());
    EXPECT(r1.prefilled == r1.prompt_tokens && r1.tokens >= 1 && alloy_chat_session_count(cs) == 3,
           "turn 1: %d of %d prefilled, %d tokens, %d messages", r1.prefilled, r1.prompt_tokens, r1.tokens,
           alloy_chat_session_count(cs));
    EXPECT(alloy_engine_seq_len(e, 0) == r1.prompt_tokens + r1.tokens, "cache holds %d, not %d + %d",
           alloy_engine_seq_len(e, 0), r1.prompt_tokens, r1.tokens);
    EXPECT(streamed > 0, "nothing streamed");
    REQUIRE(!alloy_chat_session_add(cs, "user", "and again", 9), "%s", alloy_last_error());
    REQUIRE(!alloy_chat_session_reply(cs, &r2, NULL, NULL), "%s", alloy_last_error());
    // the second rendering starts with the first (a prompt's rendering prefixes the one with its
    // reply), and the cache holds the first and the reply's tokens
    int lo = r2.prompt_tokens - r1.prompt_tokens - r1.tokens, hi = r2.prompt_tokens - r1.prompt_tokens;
    EXPECT(r2.prefilled >= lo && r2.prefilled <= hi && r2.prefilled < r2.prompt_tokens,
           "turn 2: %d of %d prefilled, expected %d to %d", r2.prefilled, r2.prompt_tokens, lo, hi);
    EXPECT(alloy_engine_seq_len(e, 0) == r2.prompt_tokens + r2.tokens, "cache holds %d after turn 2",
           alloy_engine_seq_len(e, 0));

    // back to the system message: only what follows the common prefix runs again
    alloy_chat_session_truncate(cs, 1);
    alloy_chat_reply r3;
    REQUIRE(!alloy_chat_session_add(cs, "user", "hello", 5) && !alloy_chat_session_reply(cs, &r3, NULL, NULL), "%s",
            alloy_last_error());
    EXPECT(r3.prompt_tokens == r1.prompt_tokens && r3.prefilled == 1, "turn 3: %d of %d prefilled", r3.prefilled,
           r3.prompt_tokens);

    // a conversation that fills the context
    char big[200];
    memset(big, 'a', sizeof big);
    REQUIRE(!alloy_chat_session_add(cs, "user", big, sizeof big), "%s", alloy_last_error());
    int n = alloy_chat_session_count(cs);
    EXPECT(alloy_chat_session_reply(cs, NULL, NULL, NULL) == ALLOY_STATUS_RANGE && says("fills the context") &&
               alloy_chat_session_count(cs) == n,
           "%s", alloy_last_error());
    co.max_tokens = 0;
    alloy_chat_session *bad = NULL;
    EXPECT(alloy_chat_session_create(&bad, e, tok, &co) == ALLOY_STATUS_USAGE && !bad, "max_tokens 0 accepted");
    co.max_tokens = 12;
    EXPECT(alloy_chat_session_create(&bad, e, bytes, &co) != ALLOY_STATUS_OK && !bad, "a tokenizer without ChatML accepted");
    alloy_chat_session_destroy(cs);
    alloy_engine_destroy(e);
    alloy_model_destroy(m);
    alloy_tokenizer_destroy(tok);
    alloy_tokenizer_destroy(bytes);
}

/* Writes text to dir/name; the path in a static buffer. */
static const char *write_text(const char *dir, const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* Prompts from text, id lists and JSONL, their checks and the records written back. */
static void test_prompts_and_records(void) {
    alloy_tokenizer *tok;
    REQUIRE(!alloy_tokenizer_create(&tok, "bytes"), "%s", alloy_last_error());
    const char *dir = harness_tmpdir();
    alloy_prompts p = {0};
    EXPECT(!alloy_prompts_add_text(&p, tok, "hi", 2, "--prompt") && !alloy_prompts_add_id_list(&p, "1, 2 3", "--ids"),
           "%s", alloy_last_error());
    const char *path = write_text(dir, "p.jsonl", "{\"prompt\": \"AB\"}\n\n  \n{\"prompt_ids\": [7, 8]}\n");
    REQUIRE(!alloy_prompts_read_jsonl(&p, path, tok), "%s", alloy_last_error());
    EXPECT(p.n == 4 && p.lens[0] == 2 && p.lens[1] == 3 && p.ids[1][2] == 3 && !strcmp(p.texts[2], "AB") && !p.texts[3] &&
               p.ids[3][1] == 8,
           "%d prompts", p.n);
    char want[600];
    snprintf(want, sizeof want, "%s:4", path);
    EXPECT(p.n == 4 && !strcmp(p.names[0], "--prompt") && !strcmp(p.names[3], want), "names %s, %s", p.names[0], p.names[3]);
    EXPECT(!alloy_prompts_check(&p, 256, 8), "%s", alloy_last_error());
    EXPECT(alloy_prompts_check(&p, 8, 8) == ALLOY_STATUS_RANGE && says("--prompt: token id 104 is outside"), "%s",
           alloy_last_error());
    EXPECT(alloy_prompts_check(&p, 256, 2) == ALLOY_STATUS_RANGE && says("--ids: the prompt has 3 tokens"), "%s",
           alloy_last_error());
    EXPECT(alloy_prompts_add_id_list(&p, "1 x", "--ids") == ALLOY_STATUS_USAGE && says("--ids: '1 x' is not a list"), "%s",
           alloy_last_error());
    EXPECT(alloy_prompts_add_text(&p, NULL, "a", 1, "--prompt") == ALLOY_STATUS_MISMATCH, "text without a tokenizer");
    const char *bad = write_text(dir, "bad.jsonl", "{\"prompt_ids\": [1, -4]}\n");
    EXPECT(alloy_prompts_read_jsonl(&p, bad, tok) == ALLOY_STATUS_FORMAT && says(":1: \"prompt_ids\"[1] is not a token id"),
           "%s", alloy_last_error());
    EXPECT(alloy_prompts_read_jsonl(&p, write_text(dir, "e.jsonl", "\n"), tok) == ALLOY_STATUS_FORMAT && says("no prompts"),
           "%s", alloy_last_error());
    EXPECT(p.n == 4, "failed reads added prompts: %d", p.n);

    // records: one line per prompt, text or ids as given
    alloy_generation res[4] = {0};
    for (int i = 0; i < 4; i++) {
        alloy_ids_push(&res[i].ids, 65 + i);
        res[i].finish = ALLOY_FINISH_LENGTH;
    }
    char out[512];
    snprintf(out, sizeof out, "%s/out.jsonl", dir);
    REQUIRE(!alloy_generation_write_jsonl(&p, res, out), "%s", alloy_last_error());
    char *text;
    size_t n;
    REQUIRE(!alloy_file_read_all(out, &text, &n), "%s", alloy_last_error());
    const char *head = "{\"prompt\":\"hi\",\"ids\":[65],\"finish_reason\":\"length\",\"tokens\":1,\"tokens_per_s\":0}\n"
                       "{\"prompt_ids\":[1,2,3],\"ids\":[66]";
    EXPECT(!strncmp(text, head, strlen(head)), "%s", text);
    alloy_free(text);
    for (int i = 0; i < 4; i++) alloy_generation_free(&res[i]);
    alloy_prompts_free(&p);
    alloy_tokenizer_destroy(tok);
}

int main(void) {
    RUN(test_hook_sees_every_step);
    RUN(test_chat_session_prefix);
    RUN(test_prompts_and_records);
    return harness_exit();
}
