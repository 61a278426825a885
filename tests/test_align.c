/*
 * test_align.c — the alignment objectives (alloy/align.h): chat template, data, SFT, reward
 * models, DPO, and the alignment run.
 *
 *   - the ChatML template renders the expected text, masks exactly the assistant tokens, keeps
 *     special-token text in messages as text, and a prompt's rendering is a prefix of the
 *     prompt + reply's; the chat tokens are added to byte and BPE tokenizers (ids after the
 *     last), and a model's vocabulary grows with new rows at the mean embedding;
 *   - the JSONL reader: every format, the implicit prompt of hh-rlhf style pairs, truncation,
 *     and malformed lines refused with FILE:LINE;
 *   - the layouts (Alpaca, ShareGPT, OpenAI messages, TRL, hh-rlhf): each file's tokens equal
 *     those of the same examples in alloy's fields; detection; field names given; a record that
 *     does not fit its file's layout refused with the exact message; alloy_align_data_check;
 *   - each objective's loss and every parameter gradient against the PyTorch references of
 *     tests/reference/align_ref.py (twin.py's models): SFT, the pairwise and K-wise reward loss
 *     with its scalar head, DPO sigmoid, conservative DPO (label smoothing) and IPO, for the
 *     GPT-2 and Llama families, on batches read from JSONL through the template;
 *   - SFT's gradient does not depend on the prompt's targets (bitwise);
 *   - a short SFT run lowers the held-out response loss; DPO's first loss is log 2 (policy =
 *     reference) and falls; a reward model trains on real preference data (../shared/data,
 *     skipped when absent) and reports held-out pair accuracy;
 *   - resume is exact (bitwise, one thread) for sft, reward and dpo runs.
 * The references need PYTHON (harness.h) with torch and numpy; without them that case skips.
 */
#include "alloy/alloy.h"
#include "harness.h"
#include "model_util.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Tolerances, as test_model.c: per element |a - b| <= rtol·|b| + ALLOWANCE·max|b| (fp32 rounding
 * on both sides leaves errors of a few ulps of a tensor's scale in every element). */
#define ALLOWANCE 5e-6
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4
/* A reward model's rewards are shift-invariant, so the gradients of score.bias and of GPT-2's
 * final LayerNorm bias vanish identically (the reference, in float64, gives ~1e-17). Such a
 * tensor (reference below VANISHING of the case's largest gradient) is checked to be within
 * VANISH_TOL of that scale: float32 rounding leaves ~1e-8 there. */
#define VANISHING 1e-9
#define VANISH_TOL 1e-6

/* max_i |a_i - b_i| / (floor + |b_i|), floor = ALLOWANCE·max|b| / rtol (<= rtol passes). */
static double compare(const float *a, const float *b, size_t n, double rtol) {
    double bmax = 0.0, dmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > dmax || isnan(d)) dmax = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    if (bmax == 0.0) return dmax == 0.0 ? 0.0 : INFINITY;
    return harness_max_rel(a, b, n, ALLOWANCE * bmax / rtol);
}

static bool write_text(const char *path, const char *text) {
    return alloy_write_file_atomic(path, text, strlen(text)) == ALLOY_STATUS_OK;
}

/* The byte tokenizer with the ChatML tokens (ids 256, 257). */
static alloy_tokenizer *chat_tokenizer(void) {
    alloy_tokenizer *bytes = NULL, *tok = NULL;
    if (alloy_tokenizer_create(&bytes, "bytes") || alloy_chat_tokenizer(bytes, &tok, NULL, NULL, NULL)) tok = NULL;
    alloy_tokenizer_destroy(bytes);
    return tok;
}

/* A seeded model moved away from the defaults so that every parameter matters (as
 * test_model.c): matrices x scale, norm weights 1 + N(0, 0.2²), biases N(0, 0.1²). */
static alloy_model *make_model(const alloy_config *cfg, int B, int T, uint64_t seed, float scale) {
    alloy_model *m;
    if (alloy_model_create(&m, cfg, B, T)) return NULL;
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed * 7919 + 1);
    for (int i = 0; i < m->n_tensors && scale != 1.0f; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        bool bias = strstr(t->name, ".bias") != NULL;
        for (size_t k = 0; k < t->numel; k++) {
            if (t->ndim == 2) p[k] *= scale;
            else if (bias) p[k] = 0.1f * (float)alloy_rng_normal(&rng);
            else p[k] = 1.0f + 0.2f * (float)alloy_rng_normal(&rng);
        }
    }
    return m;
}

/* Decodes the ids (n) for which keep[i] != 0 (keep NULL: all) into buf. */
static void decode_some(const alloy_tokenizer *tok, const int32_t *ids, const int32_t *keep, size_t n, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (keep && !keep[i]) continue;
        size_t len;
        const char *t = alloy_tokenizer_token(tok, ids[i], &len);
        if (!t || k + len + 1 > cap) break;
        memcpy(buf + k, t, len);
        k += len;
        buf[k] = '\0';
    }
}

/* ---- the chat template and tokenizers ---- */

static void test_chat_template(void) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "chat tokenizer: %s", alloy_last_error());
    int32_t start = alloy_tokenizer_special_id(tok, ALLOY_CHAT_IM_START), end = alloy_chat_end_id(tok);
    EXPECT(start == 256 && end == 257 && alloy_tokenizer_vocab_size(tok) == 258, "ids %d %d, vocabulary %d", start, end,
           alloy_tokenizer_vocab_size(tok));
    alloy_chat_message msgs[] = {{"system", "Be brief."}, {"user", "Hi <|im_end|> there"}, {"assistant", "Hello!"}};
    alloy_ids ids = {0}, mask = {0};
    REQUIRE(alloy_chat_render(tok, msgs, 3, false, &ids, &mask) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char text[1024], masked[256];
    decode_some(tok, ids.data, NULL, ids.n, text, sizeof text);
    const char *want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi <|im_end|> there<|im_end|>\n"
                       "<|im_start|>assistant\nHello!<|im_end|>\n";
    EXPECT(!strcmp(text, want), "rendered:\n%s", text);
    EXPECT(mask.n == ids.n, "mask of %zu for %zu ids", mask.n, ids.n);
    decode_some(tok, ids.data, mask.data, ids.n, masked, sizeof masked);
    EXPECT(!strcmp(masked, "Hello!<|im_end|>"), "masked tokens: \"%s\"", masked);
    int n_start = 0, n_end = 0;
    for (size_t i = 0; i < ids.n; i++) n_start += ids.data[i] == start, n_end += ids.data[i] == end;
    EXPECT(n_start == 3 && n_end == 3, "a message's \"<|im_end|>\" text became a marker: %d starts, %d ends", n_start, n_end);
    // the prompt with the generation prompt is a prefix of the prompt and the reply
    alloy_ids pids = {0}, pmask = {0};
    REQUIRE(alloy_chat_render(tok, msgs, 2, true, &pids, &pmask) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    decode_some(tok, pids.data, NULL, pids.n, text, sizeof text);
    EXPECT(strlen(text) > 22 && !strcmp(text + strlen(text) - 22, "<|im_start|>assistant\n"), "generation prompt: %s", text);
    EXPECT(pids.n < ids.n && !memcmp(pids.data, ids.data, sizeof(int32_t) * pids.n), "the prompt is not a prefix");
    int any = 0;
    for (size_t i = 0; i < pmask.n; i++) any |= pmask.data[i];
    EXPECT(!any, "the prompt has trained tokens");
    // two assistant turns: both masked in
    alloy_chat_message two[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "d"}};
    ids.n = mask.n = 0;
    REQUIRE(alloy_chat_render(tok, two, 4, false, &ids, &mask) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    decode_some(tok, ids.data, mask.data, ids.n, masked, sizeof masked);
    EXPECT(!strcmp(masked, "b<|im_end|>d<|im_end|>"), "two turns: \"%s\"", masked);
    alloy_chat_message badrole[] = {{"us\ner", "x"}};
    EXPECT(alloy_chat_render(tok, badrole, 1, false, &ids, &mask) == ALLOY_STATUS_USAGE && says("message 1"), "bad role accepted");
    alloy_ids_free(&ids);
    alloy_ids_free(&mask);
    alloy_ids_free(&pids);
    alloy_ids_free(&pmask);
    // a tokenizer without the markers is refused; one with them gets nothing added
    alloy_tokenizer *bytes = NULL, *again = NULL;
    alloy_tokenizer_create(&bytes, "bytes");
    alloy_ids a = {0}, b = {0}, x = {0}, y = {0};
    EXPECT(alloy_chat_render(bytes, msgs, 1, false, &x, &y) == ALLOY_STATUS_MISMATCH && says("<|im_start|>"), "bytes accepted");
    int added = -1;
    char *json = NULL;
    EXPECT(alloy_chat_tokenizer(tok, &again, &json, NULL, &added) == ALLOY_STATUS_OK && added == 0 && json &&
               alloy_tokenizer_vocab_size(again) == 258,
           "re-adding: %d added (%s)", added, alloy_last_error());
    const char *s = "caf\xc3\xa9 \xe2\x82\xac and bytes";
    alloy_tokenizer_encode(bytes, s, strlen(s), 0, &a);
    alloy_tokenizer_encode(tok, s, strlen(s), 0, &b);
    EXPECT(a.n == b.n && !memcmp(a.data, b.data, sizeof(int32_t) * a.n), "the converted byte tokenizer encodes differently");
    alloy_ids_free(&a);
    alloy_ids_free(&b);
    alloy_free(json);
    alloy_tokenizer_destroy(again);
    alloy_tokenizer_destroy(bytes);
    // GPT-2's BPE (the shared corpora): the markers go after <|endoftext|> and nothing else changes
    char dir[512];
    harness_data_path(dir, sizeof dir, "gpt2_tokenizer");
    alloy_tokenizer *g = NULL, *gc = NULL;
    if (access(dir, F_OK) != 0) {
        harness_skip("data: %s is absent (the rest of the case ran)", dir);
    } else if (alloy_tokenizer_load(&g, dir) == ALLOY_STATUS_OK) {
        EXPECT(alloy_chat_tokenizer(g, &gc, NULL, NULL, &added) == ALLOY_STATUS_OK && added == 2, "%s", alloy_last_error());
        if (gc) {
            EXPECT(alloy_tokenizer_special_id(gc, ALLOY_CHAT_IM_START) == 50257 && alloy_chat_end_id(gc) == 50258 &&
                       alloy_tokenizer_special_id(gc, "<|endoftext|>") == 50256,
                   "GPT-2 ids");
            alloy_tokenizer_encode(gc, "Hello world", 11, 0, &a);
            EXPECT(a.n == 2 && a.data[0] == 15496 && a.data[1] == 995, "GPT-2 encodes \"Hello world\" differently");
            alloy_ids_free(&a);
        }
    } else {
        EXPECT(false, "%s", alloy_last_error());
    }
    alloy_tokenizer_destroy(g);
    alloy_tokenizer_destroy(gc);
    alloy_tokenizer_destroy(tok);
}

static void test_resize_vocab(void) {
    for (int f = 0; f < 2; f++) {
        alloy_config c = tiny_config(f ? ALLOY_FAMILY_LLAMA : ALLOY_FAMILY_GPT2, 256, 16);
        alloy_model *m = make_model(&c, 2, 8, 3 + (uint64_t)f, 4.0f), *old = make_model(&c, 2, 8, 3 + (uint64_t)f, 4.0f);
        REQUIRE(m && old, "models");
        int32_t tokens[16];
        for (int i = 0; i < 16; i++) tokens[i] = (i * 37) % 256;
        REQUIRE(alloy_model_resize_vocab(&m, 258) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(m->config.vocab_size == 258 && m->max_B == 2 && m->max_T == 8, "resized config");
        int C = c.d_model;
        for (int which = 0; which < (c.tie_embeddings ? 1 : 2); which++) {
            const float *n = which ? m->params.lm_head : m->params.wte, *o = which ? old->params.lm_head : old->params.wte;
            EXPECT(!memcmp(n, o, sizeof(float) * 256 * (size_t)C), "old rows changed");
            double worst = 0;
            for (int k = 0; k < C; k++) {
                double mean = 0;
                for (int v = 0; v < 256; v++) mean += o[v * C + k];
                mean /= 256;
                for (int v = 256; v < 258; v++) worst = fmax(worst, fabs(n[v * C + k] - mean));
            }
            EXPECT(worst < 1e-6, "new rows are not the mean row (%g)", worst);
        }
        // the same hidden states; the logits of the old ids barely move (another matrix width)
        REQUIRE(alloy_model_forward(m, tokens, 2, 8) == ALLOY_STATUS_OK && alloy_model_forward(old, tokens, 2, 8) == ALLOY_STATUS_OK,
                "%s", alloy_last_error());
        EXPECT(!memcmp(alloy_model_hidden(m), alloy_model_hidden(old), sizeof(float) * 16 * (size_t)C), "hidden states changed");
        double e = 0;
        for (int r = 0; r < 16; r++)
            for (int v = 0; v < 256; v++) e = fmax(e, fabs(alloy_model_logits(m)[r * 258 + v] - alloy_model_logits(old)[r * 256 + v]));
        EXPECT(e < 1e-4, "logits of the old ids moved by %g", e);
        alloy_model_destroy(m);
        alloy_model_destroy(old);
    }
}

/* ---- data ---- */

/* Reads text as a JSONL file of `kind`. */
static alloy_status read_text(alloy_align_data *d, const char *dir, const char *name, const char *text, const alloy_tokenizer *tok,
                              alloy_align_kind kind, alloy_chat_template tmpl, int max_len) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!write_text(path, text)) return ALLOY_STATUS_IO;
    return alloy_align_data_read(d, path, tok, kind, tmpl, max_len, NULL);
}

/* The masked-in text of sequence q. */
static void seq_text(const alloy_tokenizer *tok, const alloy_align_data *d, int64_t q, bool masked, char *buf, size_t cap) {
    int64_t a = d->seq_start[q], n = d->seq_start[q + 1] - a;
    int32_t keep[4096];
    for (int64_t i = 0; i < n && i < 4096; i++) keep[i] = masked ? d->mask[a + i] : 1;
    decode_some(tok, d->tokens + a, keep, (size_t)(n < 4096 ? n : 4096), buf, cap);
}

static void test_data_formats(void) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    char dir[300], buf[2048];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    alloy_align_data d;
    // SFT: prompt/response, completion, messages, a prompt given as messages
    const char *sft = "{\"prompt\": \"What is 2+2?\", \"response\": \"Four.\"}\n"
                      "\n"
                      "{\"prompt\": \"Hi\", \"completion\": \"Hello\"}\n"
                      "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"},"
                      " {\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", \"content\": \"d\"}]}\n"
                      "{\"prompt\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"U\"}], \"response\": \"R\"}\n";
    REQUIRE(read_text(&d, dir, "sft.jsonl", sft, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 512) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    EXPECT(d.n_examples == 4 && d.n_seqs == 4 && d.max_seqs == 1 && d.truncated == 0, "%lld examples", (long long)d.n_examples);
    EXPECT(d.ex_line[1] == 3 && d.ex_line[3] == 5, "lines %lld %lld", (long long)d.ex_line[1], (long long)d.ex_line[3]);
    static const char *const want[] = {"Four.<|im_end|>", "Hello<|im_end|>", "b<|im_end|>d<|im_end|>", "R<|im_end|>"};
    for (int q = 0; q < 4; q++) {
        seq_text(tok, &d, q, true, buf, sizeof buf);
        EXPECT(!strcmp(buf, want[q]), "example %d trains on \"%s\"", q, buf);
    }
    seq_text(tok, &d, 3, false, buf, sizeof buf);
    EXPECT(!strcmp(buf, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nR<|im_end|>\n"),
           "rendered %s", buf);
    alloy_align_data_free(&d);
    // SFT too long: the beginning is kept
    REQUIRE(read_text(&d, dir, "long.jsonl", "{\"prompt\": \"0123456789012345678901234567890123456789\", \"response\": \"xyz\"}\n", tok,
                      ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 20) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    seq_text(tok, &d, 0, false, buf, sizeof buf);
    EXPECT(d.truncated == 1 && d.max_len == 20 && !strcmp(buf, "<|im_start|>user\n01234567890123"), "cut SFT: %s", buf);
    alloy_align_data_free(&d);
    // preferences: explicit, ranking, implicit prompt (hh-rlhf), messages
    const char *prefs =
        "{\"prompt\": \"Q\", \"chosen\": \"good\", \"rejected\": \"bad\"}\n"
        "{\"prompt\": \"Rank\", \"responses\": [\"r1\", \"r2\", \"r3\", \"r4\"]}\n"
        "{\"chosen\": \"\\n\\nHuman: hi\\n\\nAssistant: Hello there\", \"rejected\": \"\\n\\nHuman: hi\\n\\nAssistant: Go away\"}\n"
        "{\"chosen\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}],"
        " \"rejected\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"z\"}]}\n";
    REQUIRE(read_text(&d, dir, "prefs.jsonl", prefs, tok, ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_RAW, 512) != ALLOY_STATUS_OK &&
                says("prefs.jsonl:4:") && says("raw template"),
            "raw template with messages: %s", alloy_last_error());
    REQUIRE(read_text(&d, dir, "prefs.jsonl", prefs, tok, ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_CHATML, 512) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    EXPECT(d.n_examples == 4 && d.n_seqs == 10 && d.max_seqs == 4 && d.ex_start[2] == 6, "%lld sequences", (long long)d.n_seqs);
    seq_text(tok, &d, 4, true, buf, sizeof buf);
    EXPECT(!strcmp(buf, "r3<|im_end|>"), "ranking: %s", buf);
    seq_text(tok, &d, 6, true, buf, sizeof buf);
    EXPECT(!strcmp(buf, " Hello there<|im_end|>"), "implicit prompt, chosen: \"%s\"", buf);
    seq_text(tok, &d, 7, false, buf, sizeof buf);
    EXPECT(!strcmp(buf, "<|im_start|>user\n\n\nHuman: hi\n\nAssistant:<|im_end|>\n<|im_start|>assistant\n Go away<|im_end|>\n"),
           "implicit prompt, rejected: %s", buf);
    seq_text(tok, &d, 9, true, buf, sizeof buf);
    EXPECT(!strcmp(buf, "z<|im_end|>"), "implicit prompt of messages: %s", buf);
    alloy_align_data_free(&d);
    // raw template: prompt bytes, then the response (the tokenizer has no <|endoftext|>)
    REQUIRE(read_text(&d, dir, "raw.jsonl", "{\"prompt\": \"Q: 2+2?\\nA:\", \"chosen\": \" 4\", \"rejected\": \" 5\"}\n", tok,
                      ALLOY_ALIGN_DPO, ALLOY_CHAT_TEMPLATE_RAW, 512) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    seq_text(tok, &d, 1, false, buf, sizeof buf);
    char m[64];
    seq_text(tok, &d, 1, true, m, sizeof m);
    EXPECT(!strcmp(buf, "Q: 2+2?\nA: 5") && !strcmp(m, " 5"), "raw: \"%s\" / \"%s\"", buf, m);
    alloy_align_data_free(&d);
    // a long prompt with pairs: the end of the prompt and the whole responses are kept
    REQUIRE(read_text(&d, dir, "lp.jsonl", "{\"prompt\": \"0123456789abcdefghij0123456789ABCDEFGHIJ\", \"chosen\": \"yes\", \"rejected\": \"no!!\"}\n",
                      tok, ALLOY_ALIGN_DPO, ALLOY_CHAT_TEMPLATE_RAW, 24) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    seq_text(tok, &d, 0, false, buf, sizeof buf);
    seq_text(tok, &d, 1, false, m, sizeof m);
    EXPECT(d.truncated == 2 && !strcmp(buf, "0123456789ABCDEFGHIJyes") && !strcmp(m, "0123456789ABCDEFGHIJno!!"), "kept \"%s\", \"%s\"", buf, m);
    alloy_align_data_free(&d);
    alloy_tokenizer_destroy(tok);
}

static void test_malformed_lines(void) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    static const struct {
        alloy_align_kind kind;
        const char *text, *where, *what;
    } cases[] = {
        {ALLOY_ALIGN_SFT, "{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"prompt\": oops}\n", ":3:", "not valid JSON"},
        {ALLOY_ALIGN_SFT, "{\"prompt\": \"a\", \"response\": \"b\"}\n[1, 2]\n", ":2:", "not a JSON object"},
        {ALLOY_ALIGN_SFT, "[1, 2]\n", ": element 1:", "not a JSON object"}, // a file that opens with '[' is an array
        {ALLOY_ALIGN_SFT, "{\"prompt\": \"a\", \"response\": \"b\"} trailing\n", ":1:", "not valid JSON"},
        {ALLOY_ALIGN_SFT, "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"}\n", ":2:", "needs \"prompt\" and \"response\""},
        {ALLOY_ALIGN_SFT, "{\"prompt\": \"a\", \"response\": 7}\n", ":1:", "\"response\" must be a string"},
        {ALLOY_ALIGN_SFT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}\n", ":1:",
         "message 2 needs \"role\" and \"content\""},
        {ALLOY_ALIGN_REWARD, "{\"prompt\": \"a\", \"responses\": [\"only\"]}\n", ":1:", "at least 2 responses"},
        {ALLOY_ALIGN_REWARD, "{\"prompt\": \"a\", \"chosen\": \"b\"}\n", ":1:", "needs both \"chosen\" and \"rejected\""},
        {ALLOY_ALIGN_REWARD, "{\"prompt\": \"a\", \"chosen\": 1, \"rejected\": \"c\"}\n", ":1:", "must be strings or non-empty lists"},
        {ALLOY_ALIGN_REWARD, "{\"chosen\": \"b\", \"rejected\": [{\"role\": \"assistant\", \"content\": \"c\"}]}\n", ":1:",
         "must both be strings or both lists"},
        {ALLOY_ALIGN_DPO, "{\"prompt\": \"a\", \"responses\": [\"x\", \"y\"]}\n", ":1:", "needs \"chosen\" and \"rejected\""},
        {ALLOY_ALIGN_DPO, "{\"prompt\": 3, \"chosen\": \"x\", \"rejected\": \"y\"}\n", ":1:", "\"prompt\" must be a string or a list"},
        {ALLOY_ALIGN_SFT, "\n  \n", "", "no examples"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        alloy_align_data d;
        char name[32], want[64];
        snprintf(name, sizeof name, "bad%zu.jsonl", i);
        snprintf(want, sizeof want, "bad%zu.jsonl%s", i, cases[i].where);
        alloy_status s = read_text(&d, dir, name, cases[i].text, tok, cases[i].kind, ALLOY_CHAT_TEMPLATE_CHATML, 256);
        EXPECT(s == ALLOY_STATUS_FORMAT && says(want) && says(cases[i].what) && !strchr(alloy_last_error(), '\n'),
               "case %zu: status %d, message \"%s\"", i, s, alloy_last_error());
        EXPECT(d.n_examples == 0 && d.tokens == NULL, "case %zu: data left after a failure", i);
    }
    alloy_tokenizer_destroy(tok);
}

/* ---- layouts of records ---- */

/* Reads `text` (in some layout, with `f`) and `own` (alloy's fields, read as alloy's layout)
 * for `kind`: the same examples, token for token and mask for mask, and the layout `want`. */
static void same_tokens(const char *label, const char *text, const alloy_data_fields *f, const char *own, alloy_align_kind kind,
                        alloy_chat_template tmpl, alloy_data_layout want) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    const char *dir = harness_tmpdir();
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/layout.jsonl", dir);
    snprintf(b, sizeof b, "%s/own.jsonl", dir);
    alloy_data_fields alloy = {.layout = ALLOY_LAYOUT_ALLOY};
    alloy_align_data x, y;
    REQUIRE(write_text(a, text) && write_text(b, own), "files");
    alloy_status s = alloy_align_data_read(&x, a, tok, kind, tmpl, 512, f);
    EXPECT(s == ALLOY_STATUS_OK, "%s: %s", label, alloy_last_error());
    alloy_status t = alloy_align_data_read(&y, b, tok, kind, tmpl, 512, &alloy);
    EXPECT(t == ALLOY_STATUS_OK, "%s, alloy's record: %s", label, alloy_last_error());
    if (!s && !t) {
        EXPECT(x.layout == want && y.layout == ALLOY_LAYOUT_ALLOY, "%s: read as %s", label, alloy_data_layout_name(x.layout));
        bool same = x.n_examples == y.n_examples && x.n_seqs == y.n_seqs && x.n_tokens == y.n_tokens &&
                    !memcmp(x.tokens, y.tokens, sizeof(int32_t) * (size_t)x.n_tokens) && !memcmp(x.mask, y.mask, (size_t)x.n_tokens) &&
                    !memcmp(x.seq_start, y.seq_start, sizeof(int64_t) * (size_t)(x.n_seqs + 1)) &&
                    !memcmp(x.ex_start, y.ex_start, sizeof(int64_t) * (size_t)(x.n_examples + 1)) && x.fingerprint == y.fingerprint;
        char bx[1024] = "", by[1024] = "";
        if (!same && x.n_seqs > 0 && y.n_seqs > 0) {
            seq_text(tok, &x, 0, false, bx, sizeof bx);
            seq_text(tok, &y, 0, false, by, sizeof by);
        }
        EXPECT(same && x.n_examples > 0, "%s: %lld/%lld examples, %lld/%lld tokens differ; first: \"%s\" / \"%s\"", label,
               (long long)x.n_examples, (long long)y.n_examples, (long long)x.n_tokens, (long long)y.n_tokens, bx, by);
    }
    if (!s) alloy_align_data_free(&x);
    if (!t) alloy_align_data_free(&y);
    alloy_tokenizer_destroy(tok);
}

#define M(role, text) "{\"role\": \"" role "\", \"content\": \"" text "\"}"
#define T(from, text) "{\"from\": \"" from "\", \"value\": \"" text "\"}"
#define HH(tail) "\"\\n\\nHuman: Hi there\\n\\nAssistant: Hello.\\n\\nHuman: A colour?\\n\\nAssistant:" tail "\""

static void test_layout_alpaca(void) {
    const char *alpaca = "{\"instruction\": \"Add 2 and 2.\", \"input\": \"\", \"output\": \"4\"}\n"
                         "{\"instruction\": \"Translate to French.\", \"input\": \"cat\", \"output\": \"chat\"}\n"
                         "{\"instruction\": \"Name a colour.\", \"response\": \"Blue.\"}\n" // GPTeacher's
                         "{\"instruction\": \"Shout.\", \"input\": null, \"output\": \"HEY\", \"text\": \"ignored\"}\n";
    const char *own = "{\"prompt\": \"Add 2 and 2.\", \"response\": \"4\"}\n"
                      "{\"prompt\": \"Translate to French.\\n\\ncat\", \"response\": \"chat\"}\n"
                      "{\"prompt\": \"Name a colour.\", \"response\": \"Blue.\"}\n"
                      "{\"prompt\": \"Shout.\", \"response\": \"HEY\"}\n";
    same_tokens("alpaca, chatml", alpaca, NULL, own, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_ALPACA);
    same_tokens("alpaca, raw", alpaca, NULL, own, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_RAW, ALLOY_LAYOUT_ALPACA);
    same_tokens("alpaca, PPO prompts", "{\"instruction\": \"Translate.\", \"input\": \"dog\"}\n", NULL,
                "{\"prompt\": \"Translate.\\n\\ndog\"}\n", ALLOY_ALIGN_PROMPT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_ALPACA);
}

static void test_layout_sharegpt(void) {
    const char *sg = "{\"conversations\": [" T("system", "Be brief.") ", " T("human", "Hi") ", " T("gpt", "Hello") ", "
                     T("human", "Bye") ", " T("gpt", "Bye now") "]}\n"
                     "{\"messages\": [" T("user", "a") ", " T("assistant", "b") "]}\n";
    const char *own = "{\"messages\": [" M("system", "Be brief.") ", " M("user", "Hi") ", " M("assistant", "Hello") ", "
                      M("user", "Bye") ", " M("assistant", "Bye now") "]}\n"
                      "{\"messages\": [" M("user", "a") ", " M("assistant", "b") "]}\n";
    same_tokens("sharegpt", sg, NULL, own, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_SHAREGPT);
    same_tokens("sharegpt, PPO prompts", sg, NULL,
                "{\"prompt\": [" M("system", "Be brief.") ", " M("user", "Hi") ", " M("assistant", "Hello") ", " M("user", "Bye") "]}\n"
                "{\"prompt\": [" M("user", "a") "]}\n",
                ALLOY_ALIGN_PROMPT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_SHAREGPT);
    // preferences after a conversation (a turn or a string each)
    same_tokens("sharegpt preferences",
                "{\"conversations\": [" T("human", "Q") "], \"chosen\": " T("gpt", "good") ", \"rejected\": \"bad\"}\n", NULL,
                "{\"prompt\": [" M("user", "Q") "], \"chosen\": \"good\", \"rejected\": \"bad\"}\n", ALLOY_ALIGN_DPO,
                ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_SHAREGPT);
}

static void test_layout_openai(void) {
    const char *oa = "{\"messages\": [" M("system", "S") ", " M("user", "Hi") ", {\"role\": \"assistant\", \"content\": "
                     "[{\"type\": \"text\", \"text\": \"Hel\"}, {\"type\": \"text\", \"text\": \"lo\"}]}], \"weight\": 1}\n"
                     "{\"messages\": [" M("user", "a") ", " M("assistant", "b") "]}\n";
    const char *own = "{\"messages\": [" M("system", "S") ", " M("user", "Hi") ", " M("assistant", "Hello") "]}\n"
                      "{\"messages\": [" M("user", "a") ", " M("assistant", "b") "]}\n";
    same_tokens("openai", oa, NULL, own, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_OPENAI);
    same_tokens("openai, PPO prompts", oa, NULL, "{\"prompt\": [" M("system", "S") ", " M("user", "Hi") "]}\n{\"prompt\": \"a\"}\n",
                ALLOY_ALIGN_PROMPT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_OPENAI);
}

static void test_layout_trl(void) {
    // conversational: a list of messages and lists of assistant messages, as the strings are read
    const char *trl = "{\"prompt\": [" M("user", "Is water wet?") "], \"chosen\": [" M("assistant", "Yes.") "], \"rejected\": ["
                      M("assistant", "No.") "]}\n"
                      "{\"prompt\": \"Say hi.\", \"chosen\": \"Hi!\", \"rejected\": \"No.\"}\n";
    const char *own = "{\"prompt\": \"Is water wet?\", \"chosen\": \"Yes.\", \"rejected\": \"No.\"}\n"
                      "{\"prompt\": \"Say hi.\", \"chosen\": \"Hi!\", \"rejected\": \"No.\"}\n";
    same_tokens("trl", trl, NULL, own, ALLOY_ALIGN_DPO, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_TRL);
    same_tokens("trl, reward", trl, NULL, own, ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_TRL);
}

static void test_layout_hh_rlhf(void) {
    const char *hh = "{\"chosen\": " HH(" Blue, like the sky.") ", \"rejected\": " HH(" I won't say.") "}\n"
                     // the replies part before the last turn: each goes on as messages
                     "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant: d\", "
                     "\"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: x\"}\n";
    const char *own = "{\"prompt\": [" M("user", "Hi there") ", " M("assistant", "Hello.") ", " M("user", "A colour?") "], "
                      "\"chosen\": \"Blue, like the sky.\", \"rejected\": \"I won't say.\"}\n"
                      "{\"prompt\": [" M("user", "a") "], \"chosen\": [" M("assistant", "b") ", " M("user", "c") ", "
                      M("assistant", "d") "], \"rejected\": \"x\"}\n";
    same_tokens("hh-rlhf, chatml", hh, NULL, own, ALLOY_ALIGN_DPO, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_HH_RLHF);
    same_tokens("hh-rlhf, PPO prompts", hh, NULL,
                "{\"prompt\": [" M("user", "Hi there") ", " M("assistant", "Hello.") ", " M("user", "A colour?") "]}\n"
                "{\"prompt\": [" M("user", "a") "]}\n",
                ALLOY_ALIGN_PROMPT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_HH_RLHF);
    // raw: the text up to and including the last shared "\n\nAssistant:", then the replies' text
    same_tokens("hh-rlhf, raw", hh, NULL,
                "{\"prompt\": \"\\n\\nHuman: Hi there\\n\\nAssistant: Hello.\\n\\nHuman: A colour?\\n\\nAssistant:\", "
                "\"chosen\": \" Blue, like the sky.\", \"rejected\": \" I won't say.\"}\n"
                "{\"prompt\": \"\\n\\nHuman: a\\n\\nAssistant:\", \"chosen\": \" b\\n\\nHuman: c\\n\\nAssistant: d\", "
                "\"rejected\": \" x\"}\n",
                ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_RAW, ALLOY_LAYOUT_HH_RLHF);
    // read as alloy's own, the same lines keep their implicit prompt (the common beginning)
    alloy_data_fields alloy = {.layout = ALLOY_LAYOUT_ALLOY};
    same_tokens("hh-rlhf as alloy's own", hh, &alloy,
                "{\"chosen\": " HH(" Blue, like the sky.") ", \"rejected\": " HH(" I won't say.") "}\n"
                "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant: d\", "
                "\"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: x\"}\n",
                ALLOY_ALIGN_DPO, ALLOY_CHAT_TEMPLATE_RAW, ALLOY_LAYOUT_ALLOY);
}

static void test_layout_fields(void) {
    alloy_data_fields qa = {.prompt = "question", .response = "answer"};
    same_tokens("--prompt-field, --response-field", "{\"question\": \"Why?\", \"answer\": \"Because.\", \"prompt\": \"no\"}\n", &qa,
                "{\"prompt\": \"Why?\", \"response\": \"Because.\"}\n", ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_ALLOY);
    alloy_data_fields pn = {.prompt = "query", .chosen = "pos", .rejected = "neg"};
    same_tokens("--chosen-field, --rejected-field", "{\"query\": \"Q\", \"pos\": \"good\", \"neg\": \"bad\"}\n", &pn,
                "{\"prompt\": \"Q\", \"chosen\": \"good\", \"rejected\": \"bad\"}\n", ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_CHATML,
                ALLOY_LAYOUT_TRL);
    alloy_data_fields dialog = {.messages = "dialog"};
    same_tokens("--messages-field (sharegpt turns)", "{\"dialog\": [" T("human", "a") ", " T("gpt", "b") "]}\n", &dialog,
                "{\"messages\": [" M("user", "a") ", " M("assistant", "b") "]}\n", ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML,
                ALLOY_LAYOUT_SHAREGPT);
    same_tokens("--messages-field (messages)", "{\"dialog\": [" M("user", "a") ", " M("assistant", "b") "]}\n", &dialog,
                "{\"messages\": [" M("user", "a") ", " M("assistant", "b") "]}\n", ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML,
                ALLOY_LAYOUT_OPENAI);
    alloy_data_fields alp = {.layout = ALLOY_LAYOUT_ALPACA, .prompt = "task", .response = "answer"};
    same_tokens("--layout alpaca with fields", "{\"task\": \"Do it.\", \"input\": \"now\", \"answer\": \"Done.\"}\n", &alp,
                "{\"prompt\": \"Do it.\\n\\nnow\", \"response\": \"Done.\"}\n", ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML,
                ALLOY_LAYOUT_ALPACA);
    alloy_data_fields hc = {.chosen = "good", .rejected = "bad"};
    same_tokens("hh-rlhf with fields", "{\"good\": " HH(" Blue.") ", \"bad\": " HH(" No.") "}\n", &hc,
                "{\"prompt\": [" M("user", "Hi there") ", " M("assistant", "Hello.") ", " M("user", "A colour?") "], "
                "\"chosen\": \"Blue.\", \"rejected\": \"No.\"}\n",
                ALLOY_ALIGN_REWARD, ALLOY_CHAT_TEMPLATE_CHATML, ALLOY_LAYOUT_HH_RLHF);
    // the options' schema: saved with a run, fixed on resume
    const alloy_schema *sc = alloy_align_schema();
    alloy_align_options o = alloy_align_defaults(ALLOY_ALIGN_SFT), back = alloy_align_defaults(ALLOY_ALIGN_SFT);
    EXPECT(o.fields.layout == ALLOY_LAYOUT_AUTO && !o.fields.prompt[0], "defaults");
    EXPECT(alloy_options_set(sc, &o, "layout", "sharegpt") == ALLOY_STATUS_OK && o.fields.layout == ALLOY_LAYOUT_SHAREGPT &&
               alloy_options_set(sc, &o, "prompt-field", "q") == ALLOY_STATUS_OK && !strcmp(o.fields.prompt, "q"),
           "%s", alloy_last_error());
    EXPECT(alloy_options_set(sc, &o, "layout", "csv") == ALLOY_STATUS_USAGE && says("layout must be auto, alloy, alpaca"), "%s",
           alloy_last_error());
    cJSON *j = alloy_options_save(sc, &o);
    EXPECT(j && alloy_options_load(sc, &back, j, "state") == ALLOY_STATUS_OK && !memcmp(&back.fields, &o.fields, sizeof o.fields),
           "round trip: %s", alloy_last_error());
    cJSON_Delete(j);
    bool set[256] = {0};
    set[alloy_schema_find(sc, "layout") - sc->rows] = true;
    EXPECT(alloy_options_resume(sc, &back, &o, set) == ALLOY_STATUS_USAGE && says("layout cannot change when resuming"), "%s",
           alloy_last_error());
    EXPECT(alloy_schema_find(alloy_ppo_schema(), "messages-field") && alloy_schema_find(alloy_data_fields_schema(), "rejected_field"),
           "the PPO and score schemas lack the fields");
}

static void test_layout_detect(void) {
    static const struct {
        const char *json;
        alloy_data_fields f;
        alloy_data_layout want;
    } cases[] = {
        {"{\"prompt\": \"a\", \"response\": \"b\"}", {0}, ALLOY_LAYOUT_ALLOY},
        {"{\"prompt\": \"a\", \"responses\": [\"b\", \"c\"]}", {0}, ALLOY_LAYOUT_ALLOY},
        {"{\"chosen\": \"a b\", \"rejected\": \"a c\"}", {0}, ALLOY_LAYOUT_ALLOY},
        {"{\"prompt\": \"a\", \"response\": \"b\", \"input\": \"c\"}", {0}, ALLOY_LAYOUT_ALLOY},
        {"{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}", {0}, ALLOY_LAYOUT_ALPACA},
        {"{\"instruction\": \"a\"}", {0}, ALLOY_LAYOUT_ALPACA},
        {"{\"conversations\": []}", {0}, ALLOY_LAYOUT_SHAREGPT},
        {"{\"messages\": [{\"from\": \"human\", \"value\": \"a\"}]}", {0}, ALLOY_LAYOUT_SHAREGPT},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", {0}, ALLOY_LAYOUT_OPENAI},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"prompt\": \"p\"}", {0}, ALLOY_LAYOUT_ALLOY},
        {"{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}", {0}, ALLOY_LAYOUT_TRL},
        {"{\"chosen\": " HH(" x") ", \"rejected\": " HH(" y") "}", {0}, ALLOY_LAYOUT_HH_RLHF},
        {"{\"chosen\": \"Human: a\\n\\nAssistant: b\", \"rejected\": \"Human: a\\n\\nAssistant: c\"}", {0}, ALLOY_LAYOUT_HH_RLHF},
        {"{\"prompt\": \"p\", \"chosen\": " HH(" x") ", \"rejected\": " HH(" y") "}", {0}, ALLOY_LAYOUT_TRL},
        {"{\"q\": \"a\", \"pos\": \"b\", \"neg\": \"c\"}", {.prompt = "q", .chosen = "pos", .rejected = "neg"}, ALLOY_LAYOUT_TRL},
        {"{\"dialog\": [{\"from\": \"human\", \"value\": \"a\"}]}", {.messages = "dialog"}, ALLOY_LAYOUT_SHAREGPT},
        {"{\"dialog\": [{\"role\": \"user\", \"content\": \"a\"}]}", {.messages = "dialog"}, ALLOY_LAYOUT_OPENAI},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = cJSON_Parse(cases[i].json);
        alloy_data_layout got = alloy_data_layout_detect(j, &cases[i].f);
        EXPECT(j && got == cases[i].want, "case %zu: %s, want %s", i, alloy_data_layout_name(got), alloy_data_layout_name(cases[i].want));
        cJSON_Delete(j);
    }
    for (int l = ALLOY_LAYOUT_AUTO; l <= ALLOY_LAYOUT_HH_RLHF; l++) {
        alloy_data_layout back = ALLOY_LAYOUT_AUTO;
        EXPECT(alloy_data_layout_parse(alloy_data_layout_name((alloy_data_layout)l), &back) == ALLOY_STATUS_OK && (int)back == l,
               "layout %d", l);
    }
    alloy_data_layout x;
    EXPECT(alloy_data_layout_parse("csv", &x) == ALLOY_STATUS_USAGE && says("unknown layout \"csv\""), "%s", alloy_last_error());
}

/* A record that does not fit the file's layout: exactly this message. */
static void test_layout_mismatch(void) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    const char *dir = harness_tmpdir();
    alloy_data_fields alpaca = {.layout = ALLOY_LAYOUT_ALPACA};
    static const char auto_note[] = "from its first record; --layout names another";
    static const struct {
        alloy_align_kind kind;
        bool forced;
        const char *text, *where, *msg, *note;
    } cases[] = {
        {ALLOY_ALIGN_SFT, false, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n", ":2",
         "needs \"output\" (or \"response\") (the file's layout is alpaca, ", auto_note},
        {ALLOY_ALIGN_SFT, false, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"prompt\": \"a\", \"response\": \"b\"}\n", ":2",
         "needs \"instruction\" (the file's layout is alpaca, ", auto_note},
        {ALLOY_ALIGN_SFT, false, "{\"conversations\": [" T("human", "a") "]}\n{\"conversations\": [{\"from\": \"gpt\"}]}\n", ":2",
         "turn 1 of \"conversations\" needs \"from\" and \"value\" strings (the file's layout is sharegpt, ", auto_note},
        {ALLOY_ALIGN_DPO, false, "{\"chosen\": " HH(" x") ", \"rejected\": " HH(" y") "}\n{\"chosen\": \"a b\", \"rejected\": \"a c\"}\n",
         ":2", "\"chosen\" and \"rejected\" share no dialogue up to an \"\\n\\nAssistant:\" (the file's layout is hh-rlhf, ", auto_note},
        {ALLOY_ALIGN_SFT, false, "{\"messages\": [" M("user", "a") "]}\n{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
         "\"image_url\"}]}]}\n", ":2",
         "message 1: every part of \"content\" must be {\"type\": \"text\", \"text\": \"...\"} (the file's layout is openai, ", auto_note},
        {ALLOY_ALIGN_SFT, false, "{\"messages\": [{}, {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}]}]}\n",
         ":1", "message 1 needs a \"role\" string (the file's layout is openai, ", auto_note},
        {ALLOY_ALIGN_DPO, false, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"response\": \"b\"}\n",
         ":2", "needs \"chosen\" and \"rejected\" (with or without \"prompt\") (the file's layout is trl, ", auto_note},
        {ALLOY_ALIGN_SFT, true, "{\"prompt\": \"a\", \"response\": \"b\"}\n", ":1", "needs \"instruction\" (the file's layout is alpaca, ",
         "as --layout says"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32], path[400], want[1024];
        snprintf(name, sizeof name, "mis%zu.jsonl", i);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        snprintf(want, sizeof want, "%s%s: %s%s)", path, cases[i].where, cases[i].msg, cases[i].note);
        alloy_align_data d;
        REQUIRE(write_text(path, cases[i].text), "%s", path);
        alloy_status s = alloy_align_data_read(&d, path, tok, cases[i].kind, ALLOY_CHAT_TEMPLATE_CHATML, 256,
                                               cases[i].forced ? &alpaca : NULL);
        EXPECT(s == ALLOY_STATUS_FORMAT && !strcmp(alloy_last_error(), want), "case %zu: status %d,\n  got  \"%s\"\n  want \"%s\"", i,
               s, alloy_last_error(), want);
    }
    alloy_tokenizer_destroy(tok);
}

/* alloy_align_data_check: the layout, the records, the kinds that read them all, the first problem. */
static void test_layout_check(void) {
    const char *dir = harness_tmpdir();
    char a[400], h[400], want[1024];
    snprintf(a, sizeof a, "%s/check-alpaca.jsonl", dir);
    snprintf(h, sizeof h, "%s/check-hh.json", dir);
    REQUIRE(write_text(a, "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": \"d\"}\n{\"instruction\": \"e\"}\n") &&
                write_text(h, "[{\"chosen\": " HH(" x") ", \"rejected\": " HH(" y") "}]"),
            "files");
    alloy_data_report r;
    REQUIRE(alloy_align_data_check(a, NULL, ALLOY_CHAT_TEMPLATE_CHATML, &r) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    snprintf(want, sizeof want, "%s:3: needs \"output\" (or \"response\") (the file's layout is alpaca, from its first record; "
             "--layout names another)", a);
    EXPECT(r.records == 3 && r.files == 1 && r.layout == ALLOY_LAYOUT_ALPACA && r.layouts == 1u << ALLOY_LAYOUT_ALPACA &&
               r.kinds == 1u << ALLOY_ALIGN_PROMPT && !strcmp(r.problem, want),
           "alpaca: %lld records, layout %d, kinds %x, problem \"%s\"", (long long)r.records, r.layout, r.kinds, r.problem);
    REQUIRE(alloy_align_data_check(h, NULL, ALLOY_CHAT_TEMPLATE_RAW, &r) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    unsigned prefs = 1u << ALLOY_ALIGN_REWARD | 1u << ALLOY_ALIGN_DPO | 1u << ALLOY_ALIGN_SCORE | 1u << ALLOY_ALIGN_PROMPT;
    EXPECT(r.records == 1 && r.layout == ALLOY_LAYOUT_HH_RLHF && r.kinds == prefs && !r.problem[0], "hh-rlhf: kinds %x, \"%s\"",
           r.kinds, r.problem);
    alloy_data_fields alpaca = {.layout = ALLOY_LAYOUT_ALPACA};
    REQUIRE(alloy_align_data_check(h, &alpaca, ALLOY_CHAT_TEMPLATE_CHATML, &r) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    snprintf(want, sizeof want, "%s: element 1: needs \"instruction\" (the file's layout is alpaca, as --layout says)", h);
    EXPECT(r.kinds == 0 && !strcmp(r.problem, want), "hh-rlhf as alpaca: kinds %x, \"%s\"", r.kinds, r.problem);
    snprintf(a, sizeof a, "%s/nothing-here", dir);
    EXPECT(alloy_align_data_check(a, NULL, ALLOY_CHAT_TEMPLATE_CHATML, &r) == ALLOY_STATUS_IO, "a missing file: %s", alloy_last_error());
}

#undef M
#undef T
#undef HH

/* ---- the objectives against the PyTorch references ---- */

static const char *const sft_jsonl =
    "{\"prompt\": \"What is 2+2?\", \"response\": \"Four, of course.\"}\n"
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Name a color.\"},"
    " {\"role\": \"assistant\", \"content\": \"Blue.\"}, {\"role\": \"user\", \"content\": \"Another?\"},"
    " {\"role\": \"assistant\", \"content\": \"Red, then.\"}]}\n"
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi!\"}], \"response\": \"Hello, friend. How are you?\"}\n";

static const char *const reward_jsonl =
    "{\"prompt\": \"Is water wet?\", \"chosen\": \"Yes, in the usual sense.\", \"rejected\": \"No.\"}\n"
    "{\"prompt\": \"Rank the replies.\", \"responses\": [\"A careful answer.\", \"An answer.\", \"Hmm.\", \"No idea, go away.\"]}\n"
    "{\"chosen\": \"\\n\\nHuman: hi\\n\\nAssistant: Hello! How can I help?\", \"rejected\": \"\\n\\nHuman: hi\\n\\nAssistant: What?\"}\n";

static const char *const dpo_jsonl =
    "{\"prompt\": \"Is water wet?\", \"chosen\": \"Yes, in the usual sense.\", \"rejected\": \"No.\"}\n"
    "{\"prompt\": \"Say something kind.\", \"chosen\": \"You are doing well.\", \"rejected\": \"Whatever.\"}\n"
    "{\"chosen\": \"\\n\\nHuman: hi\\n\\nAssistant: Hello! How can I help?\", \"rejected\": \"\\n\\nHuman: hi\\n\\nAssistant: What?\"}\n";

typedef struct twin_case {
    char label[96];
    alloy_align_kind kind;
    alloy_family family;
    alloy_dpo_config dpo;
    char model[400], ref[400], in[400], out[400];
    alloy_align_data data;
    alloy_align_batch batch;
} twin_case;

/* Writes a case's model folder(s) and inputs file for align_ref.py. */
static bool prepare_case(twin_case *c, const char *dir, int idx, const alloy_tokenizer *tok, uint64_t seed) {
    snprintf(c->model, sizeof c->model, "%s/model-%d", dir, idx);
    snprintf(c->ref, sizeof c->ref, "%s/ref-%d", dir, idx);
    snprintf(c->in, sizeof c->in, "%s/case-%d.safetensors", dir, idx);
    snprintf(c->out, sizeof c->out, "%s/ref-out-%d.safetensors", dir, idx);
    const char *text = c->kind == ALLOY_ALIGN_SFT ? sft_jsonl : c->kind == ALLOY_ALIGN_REWARD ? reward_jsonl : dpo_jsonl;
    char name[32];
    snprintf(name, sizeof name, "data-%d.jsonl", idx);
    if (read_text(&c->data, dir, name, text, tok, c->kind, ALLOY_CHAT_TEMPLATE_CHATML, 128)) return false;
    int64_t all[8];
    for (int64_t e = 0; e < c->data.n_examples; e++) all[e] = e;
    if (alloy_align_batch_make(&c->batch, &c->data, all, (int)c->data.n_examples)) return false;
    alloy_config cfg = tiny_config(c->family, 258, 128);
    alloy_model *m = make_model(&cfg, c->batch.B, c->batch.T, seed, 4.0f);
    if (!m) return false;
    alloy_status s;
    if (c->kind == ALLOY_ALIGN_REWARD) {
        alloy_reward_model *rm = NULL;
        s = alloy_reward_model_create(&rm, m, seed);
        if (!s) {
            for (size_t k = 0; k < rm->head_tensors[0].numel; k++) rm->head[k] *= 10.0f; // rewards of order 1
            rm->head[rm->head_tensors[1].offset] = 0.3f;
            s = alloy_reward_model_save(rm, c->model);
        }
        alloy_reward_model_destroy(rm);
    } else {
        s = alloy_model_save(m, c->model);
        if (!s && c->kind == ALLOY_ALIGN_DPO) { // the reference: the policy, perturbed
            alloy_rng rng;
            alloy_rng_seed(&rng, seed + 99);
            for (size_t k = 0; k < m->num_params; k++) m->params_memory[k] += 0.02f * (float)alloy_rng_normal(&rng);
            s = alloy_model_save(m, c->ref);
        }
        alloy_model_destroy(m);
    }
    if (s) return false;
    const alloy_align_batch *b = &c->batch;
    alloy_st_entry e[4] = {
        {.name = "tokens", .dtype = ALLOY_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tokens},
        {.name = "targets", .dtype = ALLOY_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->targets},
        {.name = "last", .dtype = ALLOY_DTYPE_I64, .ndim = 1, .shape = {b->B}, .data = b->last},
        {.name = "ex_row", .dtype = ALLOY_DTYPE_I32, .ndim = 1, .shape = {b->n_examples + 1}, .data = b->ex_row},
    };
    char beta[32], ls[32];
    snprintf(beta, sizeof beta, "%.17g", c->dpo.beta);
    snprintf(ls, sizeof ls, "%.17g", c->dpo.label_smoothing);
    const char *meta[] = {"objective", alloy_align_kind_name(c->kind), "model", c->model, "ref", c->ref, "beta", beta,
                          "loss", alloy_dpo_loss_name(c->dpo.loss), "label_smoothing", ls, NULL};
    return alloy_safetensors_write(c->in, e, 4, meta) == ALLOY_STATUS_OK;
}

/* The reference tensor `name` (numel floats) into buf, or NULL. */
static const float *ref_tensor(const alloy_safetensors *st, const char *name, size_t numel, float *buf) {
    const alloy_st_tensor *t = alloy_safetensors_find(st, name);
    if (!t || t->numel != numel || alloy_st_tensor_to_f32(st, t, buf)) return NULL;
    return buf;
}

/* Compares one table's gradients with the reference's (gmax: the case's largest reference
 * gradient); returns the worst error and names it. */
static double compare_grads(const char *label, const alloy_tensor_info *tab, int n, const float *grads,
                            const alloy_safetensors *ref, float *buf, double gmax, char *worst_name) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const float *r = ref_tensor(ref, tab[i].name, tab[i].numel, buf);
        EXPECT(r, "%s: the reference lacks the gradient of %s", label, tab[i].name);
        if (!r) continue;
        double rmax = 0, amax = 0;
        for (size_t k = 0; k < tab[i].numel; k++) {
            rmax = fmax(rmax, fabs(r[k]));
            amax = fmax(amax, fabs(grads[tab[i].offset + k]));
        }
        if (rmax <= VANISHING * gmax) { // zero in exact arithmetic: ours must be rounding-small
            EXPECT(amax <= VANISH_TOL * gmax, "%s: gradient of %s should vanish: %.3g (of a scale of %.3g)", label, tab[i].name,
                   amax, gmax);
            continue;
        }
        double e = compare(grads + tab[i].offset, r, tab[i].numel, TOL_GRAD);
        EXPECT(e <= TOL_GRAD, "%s: gradient of %s differs: %.3g", label, tab[i].name, e);
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            snprintf(worst_name, ALLOY_MAX_NAME, "%.80s", tab[i].name);
        }
    }
    return worst;
}

static void check_case(twin_case *c) {
    alloy_safetensors *ref = NULL;
    REQUIRE(alloy_safetensors_open(&ref, c->out) == ALLOY_STATUS_OK, "%s: %s", c->label, alloy_last_error());
    const alloy_align_batch *b = &c->batch;
    alloy_model *m = NULL, *refm = NULL;
    alloy_reward_model *rm = NULL;
    alloy_status s;
    alloy_align_stats st = {0};
    double rows[64], refrows[64];
    float *buf = NULL, rew[64];
    char worst[ALLOY_MAX_NAME] = "";
    double ew = 0, el = 0, eo = 0;
    if (c->kind == ALLOY_ALIGN_REWARD) {
        s = alloy_reward_model_load(&rm, c->model, b->B, b->T, true, 0);
        if (!s) m = rm->model;
    } else {
        s = alloy_model_load(&m, c->model, b->B, b->T);
    }
    if (s) {
        EXPECT(0, "%s: load: %s", c->label, alloy_last_error());
        goto done;
    }
    buf = malloc(sizeof(float) * m->num_params);
    if (c->kind == ALLOY_ALIGN_SFT) {
        alloy_model_zero_grad(m);
        s = alloy_sft_step(m, b, 1.0f, &st);
    } else if (c->kind == ALLOY_ALIGN_REWARD) {
        s = alloy_reward_scores(rm, b, rew);
        const float *r = s ? NULL : ref_tensor(ref, "rewards", (size_t)b->B, buf);
        if (r) eo = compare(rew, r, (size_t)b->B, TOL_LOSS);
        EXPECT(r && eo <= TOL_LOSS, "%s: rewards differ (%.3g)", c->label, eo);
        alloy_reward_model_zero_grad(rm);
        if (!s) s = alloy_reward_step(rm, b, 1.0f, &st);
    } else {
        s = alloy_model_load(&refm, c->ref, b->B, b->T);
        if (!s) s = alloy_dpo_logps(refm, b, refrows, NULL);
        if (!s) s = alloy_dpo_logps(m, b, rows, NULL);
        float ours[64], mine[64];
        for (int i = 0; i < b->B; i++) ours[i] = (float)refrows[i], mine[i] = (float)rows[i];
        const float *r = s ? NULL : ref_tensor(ref, "ref_logps", (size_t)b->B, buf);
        if (r) eo = compare(ours, r, (size_t)b->B, TOL_LOSS);
        EXPECT(r && eo <= TOL_LOSS, "%s: reference log-probabilities differ (%.3g)", c->label, eo);
        r = s ? NULL : ref_tensor(ref, "logps", (size_t)b->B, buf);
        double e2 = r ? compare(mine, r, (size_t)b->B, TOL_LOSS) : INFINITY;
        EXPECT(e2 <= TOL_LOSS, "%s: policy log-probabilities differ (%.3g)", c->label, e2);
        eo = fmax(eo, e2);
        alloy_model_zero_grad(m);
        if (!s) s = alloy_dpo_step(m, b, refrows, &c->dpo, 1.0f, &st);
    }
    if (s) {
        EXPECT(0, "%s: %s", c->label, alloy_last_error());
        goto done;
    }
    float loss = (float)(st.loss_sum / st.weight);
    const float *r = ref_tensor(ref, "loss", 1, buf);
    el = r ? harness_max_rel(&loss, r, 1, 0.0) : INFINITY;
    EXPECT(el <= TOL_LOSS, "%s: loss %.8g vs reference %.8g", c->label, loss, r ? r[0] : NAN);
    double gmax = 0;
    for (int pass = 0; pass < (rm ? 2 : 1); pass++) {
        const alloy_tensor_info *tab = pass ? rm->head_tensors : m->tensors;
        for (int i = 0; i < (pass ? 2 : m->n_tensors); i++) {
            const float *g = ref_tensor(ref, tab[i].name, tab[i].numel, buf);
            for (size_t k = 0; g && k < tab[i].numel; k++) gmax = fmax(gmax, fabs(g[k]));
        }
    }
    ew = compare_grads(c->label, m->tensors, m->n_tensors, m->grads_memory, ref, buf, gmax, worst);
    if (rm) {
        char w2[ALLOY_MAX_NAME];
        double e = compare_grads(c->label, rm->head_tensors, 2, rm->head_grad, ref, buf, gmax, w2);
        if (e > ew) ew = e, snprintf(worst, sizeof worst, "%s", w2);
    }
    printf("# %s: loss %.6f (error %.2e), %s %.2e, gradients %.2e (worst %s)\n", c->label, (double)loss, el,
           c->kind == ALLOY_ALIGN_DPO ? "log-probabilities" : c->kind == ALLOY_ALIGN_REWARD ? "rewards" : "-", eo, ew, worst);
done:
    free(buf);
    if (rm) alloy_reward_model_destroy(rm);
    else alloy_model_destroy(m);
    alloy_model_destroy(refm);
    alloy_safetensors_close(ref);
}

static void test_objectives_vs_pytorch(void) {
    NEED_PYTHON("torch, numpy");
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    static twin_case cases[7];
    const alloy_dpo_config sig = {0.1, ALLOY_DPO_SIGMOID, 0.0}, cdpo = {0.5, ALLOY_DPO_SIGMOID, 0.2}, ipo = {0.1, ALLOY_DPO_IPO, 0.0};
    struct {
        const char *label;
        alloy_align_kind kind;
        alloy_family fam;
        alloy_dpo_config dpo;
    } spec[7] = {
        {"sft gpt2", ALLOY_ALIGN_SFT, ALLOY_FAMILY_GPT2, sig},
        {"sft llama", ALLOY_ALIGN_SFT, ALLOY_FAMILY_LLAMA, sig},
        {"reward gpt2 (pair, K=4 ranking, implicit prompt)", ALLOY_ALIGN_REWARD, ALLOY_FAMILY_GPT2, sig},
        {"reward llama (pair, K=4 ranking, implicit prompt)", ALLOY_ALIGN_REWARD, ALLOY_FAMILY_LLAMA, sig},
        {"dpo sigmoid gpt2 (beta 0.1)", ALLOY_ALIGN_DPO, ALLOY_FAMILY_GPT2, sig},
        {"dpo conservative llama (beta 0.5, label smoothing 0.2)", ALLOY_ALIGN_DPO, ALLOY_FAMILY_LLAMA, cdpo},
        {"dpo ipo gpt2 (beta 0.1)", ALLOY_ALIGN_DPO, ALLOY_FAMILY_GPT2, ipo},
    };
    char args[8192];
    size_t k = 0;
    bool ok = true;
    for (int i = 0; i < 7 && ok; i++) {
        twin_case *c = &cases[i];
        memset(c, 0, sizeof *c);
        snprintf(c->label, sizeof c->label, "%s", spec[i].label);
        c->kind = spec[i].kind;
        c->family = spec[i].fam;
        c->dpo = spec[i].dpo;
        ok = prepare_case(c, dir, i, tok, 100 + (uint64_t)i);
        EXPECT(ok, "%s: preparing the case: %s", c->label, alloy_last_error());
        k += (size_t)snprintf(args + k, sizeof args - k, " '%s' '%s'", c->in, c->out);
    }
    if (ok) {
        int rc = harness_reference("torch, numpy", "align_ref.py", "%s", args);
        EXPECT(rc == 0, "align_ref.py failed with status %d (its message is above)", rc);
        for (int i = 0; i < 7 && rc == 0; i++) check_case(&cases[i]);
    }
    for (int i = 0; i < 7; i++) {
        alloy_align_data_free(&cases[i].data);
        alloy_align_batch_free(&cases[i].batch);
    }
    alloy_tokenizer_destroy(tok);
}

/* The SFT gradient with prompt targets dropped equals the masked LM loss's with the prompt's
 * targets set to anything and weight 0: the prompt's targets do not matter. */
static void test_sft_ignores_prompt_targets(void) {
    alloy_tokenizer *tok = chat_tokenizer();
    REQUIRE(tok, "tokenizer");
    char dir[300];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    alloy_align_data d;
    REQUIRE(read_text(&d, dir, "sft.jsonl", sft_jsonl, tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 128) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    alloy_align_batch b = {0};
    int64_t all[3] = {0, 1, 2};
    REQUIRE(alloy_align_batch_make(&b, &d, all, 3) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_config cfg = tiny_config(ALLOY_FAMILY_LLAMA, 258, 128);
    alloy_model *m = make_model(&cfg, b.B, b.T, 5, 4.0f);
    REQUIRE(m, "model");
    size_t N = (size_t)b.B * b.T;
    float *g1 = malloc(sizeof(float) * m->num_params), *mask = malloc(sizeof(float) * N);
    int32_t *targets = malloc(sizeof(int32_t) * N);
    alloy_rng rng;
    alloy_rng_seed(&rng, 9);
    int counted = 0, prompt = 0;
    for (size_t i = 0; i < N; i++) {
        int t = (int)(i % (size_t)b.T), row = (int)(i / (size_t)b.T);
        bool trained = b.targets[i] >= 0;
        counted += trained;
        bool in_seq = t + 1 < b.len[row];
        prompt += !trained && in_seq;
        // the true next token of every position, or a random one: either way with weight 0
        targets[i] = trained ? b.targets[i] : in_seq && (i % 2) ? b.tokens[i + 1] : (int32_t)alloy_rng_below(&rng, 258);
        mask[i] = trained ? 1.0f : 0.0f;
    }
    EXPECT(counted > 10 && prompt > 50, "%d trained and %d prompt targets", counted, prompt);
    alloy_model_zero_grad(m);
    alloy_align_stats st = {0};
    REQUIRE(alloy_sft_step(m, &b, 1.0f, &st) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    memcpy(g1, m->grads_memory, sizeof(float) * m->num_params);
    float l2 = 0;
    alloy_model_zero_grad(m);
    REQUIRE(alloy_model_forward_ex(m, b.tokens, b.B, b.T, false) == ALLOY_STATUS_OK &&
                alloy_lm_loss_chunked(m, targets, mask, b.B, b.T, 1.0f, alloy_model_dhidden_buffer(m), &l2) == ALLOY_STATUS_OK &&
                alloy_model_backward(m, &(alloy_backward_in){.dhidden = alloy_model_dhidden_buffer(m), .aux_scale = 1.0f}) == ALLOY_STATUS_OK,
            "%s", alloy_last_error());
    EXPECT(st.weight == counted && fabs(st.loss_sum / st.weight - l2) < 1e-7, "loss %.9g vs %.9g", st.loss_sum / st.weight, (double)l2);
    EXPECT(!memcmp(g1, m->grads_memory, sizeof(float) * m->num_params), "the prompt's targets changed the gradient");
    free(g1);
    free(mask);
    free(targets);
    alloy_model_destroy(m);
    alloy_align_batch_free(&b);
    alloy_align_data_free(&d);
    alloy_tokenizer_destroy(tok);
}

/* ---- runs ---- */

/* A model folder with the byte tokenizer (no chat tokens: the run adds them). */
static bool base_model(const char *dir, alloy_family f, uint64_t seed) {
    alloy_config cfg = tiny_config(f, 256, 128);
    cfg.d_model = 64;
    cfg.d_ff = f == ALLOY_FAMILY_GPT2 ? 256 : 176;
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "bytes");
    alloy_model *m = make_model(&cfg, 1, 8, seed, 1.0f);
    bool ok = m && alloy_model_save(m, dir) == ALLOY_STATUS_OK;
    alloy_model_destroy(m);
    return ok;
}

static const char *const countries[][2] = {{"France", "Paris"}, {"Italy", "Rome"},      {"Spain", "Madrid"},
                                           {"Japan", "Tokyo"},  {"Egypt", "Cairo"},     {"Peru", "Lima"},
                                           {"Kenya", "Nairobi"}, {"Chile", "Santiago"}, {"Cuba", "Havana"},
                                           {"Iran", "Tehran"},  {"Nepal", "Kathmandu"}, {"Ghana", "Accra"}};

/* n SFT examples about capitals, from index `from` (wrapping), as JSONL. */
static bool capitals_jsonl(const char *path, int from, int n) {
    char *buf = malloc(65536);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const char *const *c = countries[(from + i) % 12];
        if (i % 3 == 2)
            k += (size_t)snprintf(buf + k, 65536 - k, "{\"messages\": [{\"role\": \"user\", \"content\": \"Capital of %s?\"}, "
                                  "{\"role\": \"assistant\", \"content\": \"The capital of %s is %s.\"}]}\n", c[0], c[0], c[1]);
        else
            k += (size_t)snprintf(buf + k, 65536 - k, "{\"prompt\": \"What is the capital of %s?\", \"response\": "
                                  "\"The capital of %s is %s.\"}\n", c[0], c[0], c[1]);
    }
    bool ok = alloy_write_file_atomic(path, buf, k) == ALLOY_STATUS_OK;
    free(buf);
    return ok;
}

/* Preference pairs about capitals (chosen: a helpful answer, rejected: a rude one) and, with
 * rankings, a few K = 3 rankings (helpful, a guess, rude). */
static bool capital_prefs_jsonl(const char *path, int n, bool rankings) {
    static const char *const rude[] = {"Who cares?", "No idea.", "Go away."};
    char *buf = malloc(65536);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const char *const *c = countries[i % 12], *const *w = countries[(i + 5) % 12];
        if (rankings && i % 4 == 3)
            k += (size_t)snprintf(buf + k, 65536 - k, "{\"prompt\": \"Capital of %s?\", \"responses\": [\"The capital of %s is %s.\", "
                                  "\"Maybe %s.\", \"%s\"]}\n", c[0], c[0], c[1], w[1], rude[i % 3]);
        else
            k += (size_t)snprintf(buf + k, 65536 - k, "{\"prompt\": \"Capital of %s?\", \"chosen\": \"The capital of %s is %s.\", "
                                  "\"rejected\": \"%s\"}\n", c[0], c[0], c[1], rude[i % 3]);
    }
    bool ok = alloy_write_file_atomic(path, buf, k) == ALLOY_STATUS_OK;
    free(buf);
    return ok;
}

static alloy_align_options run_options(alloy_align_kind kind, const char *model, const char *data, const char *out) {
    alloy_align_options o = alloy_align_defaults(kind);
    snprintf(o.model_dir, sizeof o.model_dir, "%s", model);
    snprintf(o.data_path, sizeof o.data_path, "%s", data);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.batch = 4;
    o.seq = 96;
    o.lr = 3e-3;
    o.min_lr = 3e-4;
    o.warmup = 2;
    o.eval_every = 0;
    o.quiet = true;
    return o;
}

/* The value of `key` in the last (first: !last) metrics line of `type`, or NAN. */
static double metric(const char *run_dir, const char *type, const char *key, bool last) {
    char path[600], *text = NULL;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (alloy_file_read_all(path, &text, NULL)) return NAN;
    double v = NAN;
    char want[64], k[80];
    snprintf(want, sizeof want, "\"type\":\"%s\"", type);
    snprintf(k, sizeof k, "\"%s\":", key);
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        char *p;
        if (strstr(line, want) && (p = strstr(line, k))) {
            v = strtod(p + strlen(k), NULL);
            if (!last) break;
        }
        line = nl ? nl + 1 : NULL;
    }
    alloy_free(text);
    return v;
}

static void test_sft_learns(void) {
    char dir[300], base[400], data[400], val[400], out[400];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(data, sizeof data, "%s/train.jsonl", dir);
    snprintf(val, sizeof val, "%s/val.jsonl", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    REQUIRE(base_model(base, ALLOY_FAMILY_GPT2, 1) && capitals_jsonl(data, 0, 40) && capitals_jsonl(val, 3, 6), "setup");
    alloy_align_options o = run_options(ALLOY_ALIGN_SFT, base, data, out);
    snprintf(o.val_path, sizeof o.val_path, "%s", val);
    o.steps = 60;
    o.eval_every = 1;
    o.ckpt_every = 0;
    alloy_align_stats fv;
    REQUIRE(alloy_align_run(&o, NULL, &fv) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double first = metric(out, "eval", "val_loss", false), last = metric(out, "eval", "val_loss", true);
    double t0 = metric(out, "train", "loss", false), t1 = metric(out, "train", "loss", true);
    printf("# sft, 60 steps of 4 examples: held-out response loss %.3f after step 1 -> %.3f (train %.3f -> %.3f)\n", first, last,
           t0, t1);
    EXPECT(last < first - 1.5, "the held-out response loss fell only from %.3f to %.3f", first, last);
    EXPECT(fabs(last - fv.loss_sum / fv.weight) < 1e-5, "final_val %.6f vs metrics %.6f", fv.loss_sum / fv.weight, last);
    // the checkpoint is a chat model
    char *ck = NULL;
    REQUIRE(alloy_run_latest(out, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_chat_template t = ALLOY_CHAT_TEMPLATE_RAW;
    bool found = false;
    EXPECT(alloy_chat_template_of(ck, &t, &found) == ALLOY_STATUS_OK && found && t == ALLOY_CHAT_TEMPLATE_CHATML, "template");
    alloy_model *m = NULL;
    alloy_tokenizer *tok = NULL;
    EXPECT(alloy_model_load(&m, ck, 1, 0) == ALLOY_STATUS_OK && m->config.vocab_size == 258, "model: %s", alloy_last_error());
    EXPECT(m && alloy_align_load_tokenizer(ck, &m->config, &tok) == ALLOY_STATUS_OK && alloy_chat_end_id(tok) == 257,
           "tokenizer: %s", alloy_last_error());
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", ck);
    EXPECT(alloy_path_exists(p), "no tokenizer_config.json");
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(ck);
}

/* A model whose vocabulary is padded beyond its tokenizer (as llm.c's GPT-2) keeps its size;
 * the chat tokens take the next ids and their rows start at the mean of the tokenizer's rows. */
static void test_chat_rows_in_padded_vocab(void) {
    char dir[300], base[400], data[400], out[400];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(data, sizeof data, "%s/train.jsonl", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    alloy_config cfg = tiny_config(ALLOY_FAMILY_LLAMA, 300, 128);
    snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "bytes");
    alloy_model *m = make_model(&cfg, 1, 8, 4, 1.0f);
    REQUIRE(m && alloy_model_save(m, base) == ALLOY_STATUS_OK && capitals_jsonl(data, 0, 4), "setup");
    alloy_align_options o = run_options(ALLOY_ALIGN_SFT, base, data, out);
    o.steps = 1;
    o.lr = 1e-12; // the step leaves the rows where they started
    o.min_lr = 0;
    o.warmup = 0;
    o.val_fraction = 0;
    REQUIRE(alloy_align_run(&o, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    char *ck = NULL;
    alloy_model *t = NULL;
    REQUIRE(alloy_run_latest(out, &ck) == ALLOY_STATUS_OK && alloy_model_load(&t, ck, 1, 0) == ALLOY_STATUS_OK, "%s",
            alloy_last_error());
    EXPECT(t->config.vocab_size == 300, "vocabulary %d", t->config.vocab_size);
    int C = cfg.d_model;
    double worst = 0;
    for (int which = 0; which < 2; which++) {
        const float *w = which ? t->params.lm_head : t->params.wte, *w0 = which ? m->params.lm_head : m->params.wte;
        for (int c = 0; c < C; c++) {
            double mean = 0;
            for (int v = 0; v < 256; v++) mean += w0[v * C + c];
            mean /= 256;
            for (int v = 256; v < 258; v++) worst = fmax(worst, fabs(w[v * C + c] - mean));
            worst = fmax(worst, fabs(w[258 * C + c] - w0[258 * C + c])); // padding rows untouched
        }
    }
    EXPECT(worst < 1e-6, "the chat rows are %g from the mean row", worst);
    alloy_model_destroy(t);
    alloy_model_destroy(m);
    alloy_free(ck);
}

/* DPO from an SFT-like start: the first loss is log 2 (policy = reference), and it falls. */
static void test_dpo_learns(void) {
    char dir[300], base[400], data[400], out[400];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(data, sizeof data, "%s/prefs.jsonl", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    REQUIRE(base_model(base, ALLOY_FAMILY_LLAMA, 2) && capital_prefs_jsonl(data, 24, false), "setup");
    alloy_align_options o = run_options(ALLOY_ALIGN_DPO, base, data, out);
    o.steps = 30;
    o.lr = 1e-3;
    o.val_fraction = 0.0;
    REQUIRE(alloy_align_run(&o, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double l0 = metric(out, "train", "loss", false), l1 = metric(out, "train", "loss", true);
    double acc = metric(out, "train", "rewards_accuracy", true), margin = metric(out, "train", "rewards_margin", true);
    printf("# dpo, 30 steps: loss %.6f -> %.4f, accuracy %.2f, margin %.3f\n", l0, l1, acc, margin);
    EXPECT(fabs(l0 - log(2.0)) < 1e-5, "the first loss %.7f is not log 2: the reference differs from the initial policy", l0);
    EXPECT(l1 < 0.5 && margin > 0.5, "DPO did not learn the preferences (loss %.4f, margin %.3f)", l1, margin);
}

static bool same_file(const char *a, const char *b) {
    alloy_file_map x, y;
    if (alloy_file_map_open(&x, a)) return false;
    if (alloy_file_map_open(&y, b)) {
        alloy_file_map_close(&x);
        return false;
    }
    bool same = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
    alloy_file_map_close(&x);
    alloy_file_map_close(&y);
    return same;
}

/* 6 steps straight, against 3 steps and a resume to 6 from a copy of the step-3 checkpoint:
 * bitwise equal with one thread (main sets it), for each objective. */
static void test_resume_exact(void) {
    static const alloy_align_kind kinds[3] = {ALLOY_ALIGN_SFT, ALLOY_ALIGN_REWARD, ALLOY_ALIGN_DPO};
    for (int i = 0; i < 3; i++) {
        alloy_align_kind kind = kinds[i];
        char dir[300], base[400], data[400], a[400], b[400], p[700], q[700];
        snprintf(dir, sizeof dir, "%s", harness_tmpdir());
        snprintf(base, sizeof base, "%s/base", dir);
        snprintf(data, sizeof data, "%s/data.jsonl", dir);
        snprintf(a, sizeof a, "%s/a", dir);
        snprintf(b, sizeof b, "%s/b", dir);
        bool ok = base_model(base, i == 1 ? ALLOY_FAMILY_GPT2 : ALLOY_FAMILY_LLAMA, 7) &&
                  (kind == ALLOY_ALIGN_SFT ? capitals_jsonl(data, 0, 14) : capital_prefs_jsonl(data, 14, kind == ALLOY_ALIGN_REWARD));
        REQUIRE(ok, "setup");
        alloy_align_options o = run_options(kind, base, data, a);
        o.steps = 6;
        o.batch = 3;
        o.grad_accum = 2; // 6 examples a step: the third step crosses into the second epoch
        o.ckpt_every = 3;
        o.eval_every = 2;
        REQUIRE(alloy_align_run(&o, NULL, NULL) == ALLOY_STATUS_OK, "%s: %s", alloy_align_kind_name(kind), alloy_last_error());
        static const char *const files[] = {"model.safetensors", "optimizer.safetensors", "score_optimizer.safetensors",
                                            "trainer_state.json", "config.json", "tokenizer.json", "tokenizer_config.json"};
        snprintf(p, sizeof p, "%s/checkpoints/step-00000003", b);
        alloy_mkdir_p(p);
        for (int f = 0; f < 7; f++) {
            if (f == 2 && kind != ALLOY_ALIGN_REWARD) continue;
            snprintf(p, sizeof p, "%s/checkpoints/step-00000003/%s", a, files[f]);
            snprintf(q, sizeof q, "%s/checkpoints/step-00000003/%s", b, files[f]);
            alloy_file_map x;
            REQUIRE(alloy_file_map_open(&x, p) == ALLOY_STATUS_OK, "%s", alloy_last_error());
            alloy_write_file_atomic(q, x.data, x.size);
            alloy_file_map_close(&x);
        }
        snprintf(p, sizeof p, "%s/latest", b);
        write_text(p, "checkpoints/step-00000003\n");
        alloy_align_options r = alloy_align_defaults(ALLOY_ALIGN_SFT);
        char *ck = NULL;
        REQUIRE(alloy_align_resume_options(b, &r, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        EXPECT(r.kind == kind && r.steps == 6 && r.batch == 3 && r.grad_accum == 2 && r.tmpl == ALLOY_CHAT_TEMPLATE_CHATML &&
                   !strcmp(r.out_dir, b),
               "%s: saved options", alloy_align_kind_name(kind));
        r.quiet = true;
        alloy_status s = alloy_align_run(&r, ck, NULL);
        alloy_free(ck);
        REQUIRE(s == ALLOY_STATUS_OK, "%s resume: %s", alloy_align_kind_name(kind), alloy_last_error());
        for (int f = 0; f < 3; f++) {
            if (f == 2 && kind != ALLOY_ALIGN_REWARD) continue;
            snprintf(p, sizeof p, "%s/checkpoints/step-00000006/%s", a, files[f]);
            snprintf(q, sizeof q, "%s/checkpoints/step-00000006/%s", b, files[f]);
            EXPECT(same_file(p, q), "%s: the resumed %s differs from the uninterrupted run's", alloy_align_kind_name(kind), files[f]);
        }
        double la = metric(a, "eval", "val_loss", true), lb = metric(b, "eval", "val_loss", true);
        EXPECT(la == lb, "%s: held-out loss %.9g vs %.9g", alloy_align_kind_name(kind), la, lb);
        // the run is complete: resuming it again asks for more steps
        r = alloy_align_defaults(ALLOY_ALIGN_SFT);
        REQUIRE(alloy_align_resume_options(b, &r, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
        r.quiet = true;
        EXPECT(alloy_align_run(&r, ck, NULL) == ALLOY_STATUS_USAGE && says("already at step 6"), "%s", alloy_last_error());
        alloy_free(ck);
    }
}

/* A reward model on real preference data (Anthropic's hh-rlhf, ../shared/data), raw template:
 * it trains and reports held-out pair accuracy; alloy_reward_model_load reads it back. */
static void test_reward_on_hh_rlhf(void) {
    char src[600], dir[300], data[400], base[400], out[400], cmd[1600];
    NEED_DATA(src, "preference/hh-rlhf-harmless-base-test.jsonl.gz");
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(data, sizeof data, "%s/hh.jsonl", dir);
    snprintf(base, sizeof base, "%s/base", dir);
    snprintf(out, sizeof out, "%s/rm", dir);
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' | head -n 120 > '%s'", src, data);
    REQUIRE(harness_command(cmd) == 0 && base_model(base, ALLOY_FAMILY_GPT2, 3), "setup");
    alloy_align_options o = run_options(ALLOY_ALIGN_REWARD, base, data, out);
    o.tmpl = ALLOY_CHAT_TEMPLATE_RAW;
    o.tmpl_set = true;
    o.steps = 12;
    o.batch = 8;
    o.seq = 128;
    o.lr = 1e-3;
    o.val_fraction = 0.2;
    alloy_align_stats v;
    REQUIRE(alloy_align_run(&o, NULL, &v) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    double acc = metric(out, "eval", "val_accuracy", true), pairs = metric(out, "eval", "val_pairs", true);
    double n_train = metric(out, "start", "train_examples", false), cut = metric(out, "start", "truncated", false);
    printf("# reward model on 120 hh-rlhf pairs (%.0f trained, %.0f sequences cut to 128 tokens): held-out pair accuracy %.3f "
           "over %.0f pairs, loss %.4f\n", n_train, cut, acc, pairs, v.loss_sum / v.weight);
    EXPECT(acc >= 0.0 && acc <= 1.0 && pairs >= 10 && pairs == v.pairs, "held-out accuracy %g over %g pairs", acc, pairs);
    char *ck = NULL;
    alloy_reward_model *rm = NULL;
    REQUIRE(alloy_run_latest(out, &ck) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    EXPECT(alloy_reward_model_load(&rm, ck, 2, 64, true, 0) == ALLOY_STATUS_OK && rm->head[0] != 0.0f, "%s", alloy_last_error());
    alloy_reward_model_destroy(rm);
    alloy_model *lm = NULL;
    EXPECT(alloy_model_load(&lm, ck, 1, 0) == ALLOY_STATUS_MISMATCH && says("score.weight"), "a reward model loads as an LM");
    alloy_model_destroy(lm);
    EXPECT(alloy_reward_model_load(&rm, base, 1, 0, true, 0) == ALLOY_STATUS_MISMATCH && says("not a reward model"),
           "a language model loads as a reward model");
    alloy_free(ck);
}

int main(void) {
    // the models here are tiny: more threads only add synchronisation (and, on a busy machine,
    // spinning); the PyTorch comparisons run with the default thread count
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    RUN(test_chat_template);
    RUN(test_resize_vocab);
    RUN(test_data_formats);
    RUN(test_malformed_lines);
    RUN(test_layout_alpaca);
    RUN(test_layout_sharegpt);
    RUN(test_layout_openai);
    RUN(test_layout_trl);
    RUN(test_layout_hh_rlhf);
    RUN(test_layout_fields);
    RUN(test_layout_detect);
    RUN(test_layout_mismatch);
    RUN(test_layout_check);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    RUN(test_objectives_vs_pytorch);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    RUN(test_sft_ignores_prompt_targets);
    RUN(test_sft_learns);
    RUN(test_chat_rows_in_padded_vocab);
    RUN(test_dpo_learns);
    RUN(test_resume_exact);
    RUN(test_reward_on_hh_rlhf);
    return harness_exit();
}
