/*
 * alloy/chat.h — chat templates and conversation data: messages rendered into token ids, the
 * tokenizer's chat tokens, the template a model folder was aligned with, and JSONL files of
 * examples (prompts, responses, preference pairs, rankings) read into token sequences with the
 * mask of the tokens an objective uses. Training (alloy/align.h) and inference (a chat session,
 * the server) both render through these, so a model is sampled in the form it was trained on.
 *
 * The ChatML template renders each message as "<|im_start|>ROLE\nCONTENT<|im_end|>\n" and the
 * generation prompt as "<|im_start|>assistant\n"; "raw" renders a string prompt followed by the
 * response and the tokenizer's <|endoftext|> (if it has one). The template's name is stored in
 * each checkpoint's config.json ("chat_template") and, for ChatML, as a Jinja template in
 * tokenizer_config.json, so that sampling, serving and transformers render the same text.
 *
 * Data: JSONL, one example per line (docs/alignment.md); a malformed line is an error naming
 * FILE:LINE. P below is a string (one user message) or a list of messages
 * [{"role": "system"|"user"|"assistant"|..., "content": "..."}], R a string (one assistant
 * message) or a list of messages:
 *   sft      {"prompt": P, "response": R} ("completion" also), or {"messages": [...]} where every
 *            assistant message is trained on;
 *   reward   {"prompt": P, "chosen": R, "rejected": R}, or a ranking
 *            {"prompt": P, "responses": [R_best, ..., R_worst]} (K >= 2);
 *   dpo      {"prompt": P, "chosen": R, "rejected": R};
 *   score    any of these ("response", "responses", "chosen"/"rejected", "messages");
 *   prompt   {"prompt": P} (PPO's prompts; other fields are ignored).
 * Without "prompt", the common beginning of "chosen" and "rejected" is the prompt (as TRL does
 * for Anthropic's hh-rlhf).
 *
 *     alloy_tokenizer *tok;       // dir: a checkpoint folder, e.g. alloy_checkpoint_resolve("runs/sft", &dir)
 *     alloy_align_load_tokenizer(dir, &model->config, &tok);
 *     alloy_chat_message msgs[] = {{"system", "Be brief."}, {"user", "Hello"}};
 *     alloy_ids ids = {0}, mask = {0};
 *     alloy_chat_render(tok, msgs, 2, true, &ids, &mask);  // ends with "<|im_start|>assistant\n"
 *     ...                                                   // sample until alloy_chat_end_id(tok)
 *     alloy_align_data d;
 *     alloy_align_data_read(&d, "chat.jsonl", tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 1024);
 *     alloy_align_data_free(&d);
 */
#ifndef ALLOY_CHAT_H
#define ALLOY_CHAT_H

#include "alloy/base.h"
#include "alloy/model.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

/* ---- the chat template (src/tokenizer/chat.c) ---- */

#define ALLOY_CHAT_IM_START "<|im_start|>"
#define ALLOY_CHAT_IM_END "<|im_end|>"

typedef enum alloy_chat_template {
    ALLOY_CHAT_TEMPLATE_CHATML = 0, /* <|im_start|>role\ncontent<|im_end|>\n */
    ALLOY_CHAT_TEMPLATE_RAW = 1,    /* prompt text, response text, <|endoftext|> */
} alloy_chat_template;

/* "chatml" or "raw". */
const char *alloy_chat_template_name(alloy_chat_template t);
/* The template of that name; USAGE naming the known ones otherwise. */
alloy_status alloy_chat_template_parse(const char *name, alloy_chat_template *out);

typedef struct alloy_chat_message {
    const char *role;    /* "system", "user", "assistant", ...: non-empty, no newline */
    const char *content; /* UTF-8 text; special-token text in it is encoded as ordinary text */
} alloy_chat_message;

/* Renders n messages in ChatML and APPENDS their token ids to *ids and, parallel to them, a mask
 * to *mask (zero-initialise both, or pass arrays to extend): 1 for the tokens an assistant
 * message contributes to training (its content and its <|im_end|>), 0 for the rest (markers,
 * roles, newlines, other messages). add_generation_prompt appends "<|im_start|>assistant\n"
 * (mask 0). Each part (marker, "role\n", content, "\n") is encoded on its own, so the
 * rendering of the messages of a prompt is a prefix of the rendering with a reply added.
 * MISMATCH if tok lacks <|im_start|> or <|im_end|> (alloy_chat_tokenizer adds them), USAGE for
 * a bad role. Thread-safe. */
alloy_status alloy_chat_render(const alloy_tokenizer *tok, const alloy_chat_message *messages, int n,
                               bool add_generation_prompt, alloy_ids *ids, alloy_ids *mask);

/* The id of <|im_end|> (where a chat model's reply ends), or -1. */
int32_t alloy_chat_end_id(const alloy_tokenizer *tok);

/* A tokenizer with the ChatML tokens: tok's tokenizer.json with <|im_start|> and <|im_end|>
 * added as special tokens after its last id where missing, loaded into *out (destroy it).
 * The byte tokenizer becomes a byte-level BPE without merges (byte b keeps id b, so every text
 * encodes to the same ids, except that invalid UTF-8 is first replaced by U+FFFD as BPE does).
 * *json (alloy_free it; may be NULL) gets the tokenizer.json text, *len its length; *added
 * (may be NULL) how many tokens were added (0: *out encodes as tok). Uses a temporary file in
 * $TMPDIR (or /tmp), removed before it returns. */
alloy_status alloy_chat_tokenizer(const alloy_tokenizer *tok, alloy_tokenizer **out, char **json, size_t *len,
                                  int *added);

/* The tokenizer a model folder carries: its tokenizer.json, GPT-2's encoder.json + vocab.bpe,
 * or the byte tokenizer when config.json names "bytes" (or names none and the folder has no
 * tokenizer file). MISMATCH if config.json names "bpe" but no file is there, or if the
 * tokenizer has more tokens than cfg's vocabulary. */
alloy_status alloy_align_load_tokenizer(const char *model_dir, const alloy_config *cfg, alloy_tokenizer **out);

/* The template a model folder was aligned with: config.json's "chat_template". *found is false
 * (and *out untouched) when the key is absent; FORMAT for an unknown name. */
alloy_status alloy_chat_template_of(const char *model_dir, alloy_chat_template *out, bool *found);

/* Records the template in dir (a checkpoint folder that holds config.json): adds
 * "chat_template" to config.json and, for ChatML, writes tokenizer_config.json with the
 * equivalent Jinja template and eos_token <|im_end|> for transformers. Atomic writes. */
alloy_status alloy_chat_save_template(const char *dir, alloy_chat_template t);

/* ---- conversation data: JSONL -> token sequences (src/tokenizer/conversation.c) ---- */

typedef enum alloy_align_kind {
    ALLOY_ALIGN_SFT = 0,    /* one sequence per example */
    ALLOY_ALIGN_REWARD = 1, /* K >= 2 sequences, best first */
    ALLOY_ALIGN_DPO = 2,    /* two sequences: chosen, rejected */
    ALLOY_ALIGN_SCORE = 3,  /* K >= 1 sequences to score, in the line's order */
    ALLOY_ALIGN_PROMPT = 4, /* PPO: one sequence, the rendered prompt (with the generation prompt) */
} alloy_align_kind;

/* "sft", "reward", "dpo", "score", "prompt". */
const char *alloy_align_kind_name(alloy_align_kind k);

/* Tokenized examples, every sequence's tokens one after another. A sequence is the rendered
 * prompt followed by one response; its mask marks the tokens the objective uses (SFT: the
 * assistant tokens; reward, DPO: the response's tokens). */
typedef struct alloy_align_data {
    char *path;           /* the file read */
    int32_t *tokens;      /* (n_tokens) */
    uint8_t *mask;        /* (n_tokens) 1: trained on / scored */
    int64_t n_tokens, tokens_cap;
    int64_t *seq_start;   /* (n_seqs + 1) first token of each sequence */
    int64_t n_seqs, seqs_cap;
    int64_t *ex_start;    /* (n_examples + 1) first sequence of each example */
    int64_t *ex_line;     /* (n_examples) the example's line in the file (1-based) */
    int64_t n_examples, ex_cap;
    int max_seqs;         /* the most sequences of one example */
    int max_len;          /* the longest sequence after truncation */
    int64_t truncated;    /* sequences cut to max_len */
    uint64_t fingerprint; /* FNV-1a over the tokens, masks and layout: a resumed run checks it */
} alloy_align_data;

/* Reads a JSONL file of examples for `kind` and tokenizes them with `tmpl` (ChatML needs the
 * tokenizer's chat tokens) into sequences of at most max_len tokens. Too long: SFT keeps the
 * beginning (the end is cut, as TRL); a prompt keeps its end; reward, DPO and score keep the end of the prompt (its
 * beginning is dropped, down to max_len/2 tokens if the responses need that much) and cut the
 * responses' ends only if they alone do not fit. Blank lines are skipped. A line that is not a
 * JSON object, lacks the fields of `kind` or has fields of the wrong type fails with FORMAT
 * "FILE:LINE: what is wrong"; a file without examples fails too. On failure *d is empty. */
alloy_status alloy_align_data_read(alloy_align_data *d, const char *path, const alloy_tokenizer *tok,
                                   alloy_align_kind kind, alloy_chat_template tmpl, int max_len);
void alloy_align_data_free(alloy_align_data *d);

ALLOY_END_DECLS
#endif /* ALLOY_CHAT_H */
