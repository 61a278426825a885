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
 * Data: records, one example each (JSONL lines, a JSON array's elements; plain, gzip or zstd; a
 * folder of such files: alloy/records.h); a malformed one is an error naming FILE:LINE
 * (docs/alignment.md). P below is a string (one user message) or a list of messages
 * [{"role": "system"|"user"|"assistant"|..., "content": "..."}], R a string (one assistant
 * message) or a list of messages:
 *   sft      {"prompt": P, "response": R} ("completion" also), or {"messages": [...]} where every
 *            assistant message is trained on;
 *   reward   {"prompt": P, "chosen": R, "rejected": R}, or a ranking
 *            {"prompt": P, "responses": [R_best, ..., R_worst]} (K >= 2);
 *   dpo      {"prompt": P, "chosen": R, "rejected": R};
 *   score    any of these ("response", "responses", "chosen"/"rejected", "messages");
 *   prompt   {"prompt": P} (PPO's prompts; other fields are ignored).
 * Without "prompt", the common beginning of "chosen" and "rejected" is the prompt (as TRL does).
 * Records in other layouts (Alpaca, ShareGPT, OpenAI messages, TRL, hh-rlhf) are normalised to
 * these fields first (below).
 *
 *     alloy_tokenizer *tok;       // dir: a checkpoint folder, e.g. alloy_checkpoint_resolve("runs/sft", &dir)
 *     alloy_align_load_tokenizer(dir, &model->config, &tok);
 *     alloy_chat_message msgs[] = {{"system", "Be brief."}, {"user", "Hello"}};
 *     alloy_ids ids = {0}, mask = {0};
 *     alloy_chat_render(tok, msgs, 2, true, &ids, &mask);  // ends with "<|im_start|>assistant\n"
 *     ...                                                   // sample until alloy_chat_end_id(tok)
 *     alloy_align_data d;
 *     alloy_align_data_read(&d, "chat.jsonl", tok, ALLOY_ALIGN_SFT, ALLOY_CHAT_TEMPLATE_CHATML, 1024, NULL);
 *     alloy_align_data_free(&d);
 */
#ifndef ALLOY_CHAT_H
#define ALLOY_CHAT_H

#include "alloy/base.h"
#include "alloy/model.h"
#include "alloy/options.h"
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

/* ---- layouts of records (src/tokenizer/layouts.c) ----
 *
 * A file of records in another layout is read as if it were in alloy's own: each record is
 * normalised to alloy's fields first. The layout is detected from a file's first record (or
 * chosen) and every record is checked against it.
 *   alloy     alloy's own fields, as above;
 *   alpaca    {"instruction", "input" (optional, may be ""), "output" (or "response")}: the
 *             prompt is the instruction, + "\n\n" + the input when it is not empty (Alpaca,
 *             GPTeacher);
 *   sharegpt  {"conversations": [{"from": "human"|"gpt"|"system"|..., "value": "..."}]}: the
 *             messages (human -> user, gpt -> assistant); with "chosen" and "rejected" (a
 *             {"from", "value"} turn or a string each), a preference pair after the conversation;
 *   openai    {"messages": [{"role", "content"}]}, content a string or a list of text parts
 *             [{"type": "text", "text": "..."}];
 *   trl       TRL's preference data {"prompt", "chosen", "rejected"}: strings, or (conversational)
 *             a list of messages and lists of assistant messages;
 *   hh-rlhf   {"chosen", "rejected"}: whole transcripts "\n\nHuman: ...\n\nAssistant: ..."
 *             (Anthropic's hh-rlhf). Their shared beginning up to and including its last
 *             "\n\nAssistant:" is the prompt, as user and assistant messages (the raw template:
 *             that text), the rest of each the reply.
 * For PPO's prompts (ALLOY_ALIGN_PROMPT) a conversation's prompt is its messages before its
 * last assistant messages. alloy, openai and trl are alloy's own fields: their lines may mix
 * alloy's forms as an alloy file's may. */

typedef enum alloy_data_layout {
    ALLOY_LAYOUT_AUTO = 0,     /* detected from a file's first record */
    ALLOY_LAYOUT_ALLOY = 1,    /* alloy's own fields */
    ALLOY_LAYOUT_ALPACA = 2,   /* instruction, input, output (or response) */
    ALLOY_LAYOUT_SHAREGPT = 3, /* conversations of {from, value} */
    ALLOY_LAYOUT_OPENAI = 4,   /* messages of {role, content} */
    ALLOY_LAYOUT_TRL = 5,      /* prompt, chosen, rejected */
    ALLOY_LAYOUT_HH_RLHF = 6,  /* chosen, rejected transcripts of Human: / Assistant: turns */
} alloy_data_layout;

/* The names of the layouts by value ("auto", "alloy", "alpaca", "sharegpt", "openai", "trl",
 * "hh-rlhf"), NULL-terminated: an option schema's choices. */
extern const char *const alloy_data_layout_names[];

/* How records are read: their layout and the fields that play alloy's roles. A field name ""
 * means the layout's own: prompt ("prompt"; alpaca: "instruction"), response ("response" or
 * "completion"; alpaca: "output" or "response"), chosen, rejected, messages ("messages";
 * sharegpt: "conversations"). Zero-initialised: detected layout, the layouts' own names. */
typedef struct alloy_data_fields {
    alloy_data_layout layout; /* AUTO: each file's first record decides */
    char prompt[64];          /* the field that holds the prompt (alpaca: the instruction) */
    char response[64];        /* the response (alpaca: the output) */
    char chosen[64];          /* the preferred response (hh-rlhf: transcript) */
    char rejected[64];        /* the other one */
    char messages[64];        /* the conversation (sharegpt: its turns) */
} alloy_data_fields;

/* The rows of an alloy_data_fields member M of an options struct TYPE: "layout",
 * "prompt_field", "response_field", "chosen_field", "rejected_field", "messages_field" (flags
 * --layout, --prompt-field, ...). Saved with a run and fixed on resume, as the data path is;
 * OPTIONAL for runs saved before they existed (include alloy/options.h to use it). */
#define ALLOY_OPT_DATA_FIELDS_ROWS(TYPE, M)                                                                              \
    ALLOY_OPT_NAMED(TYPE, M.layout, "layout", NULL, ALLOY_OPT_ENUM, ALLOY_OPT_OPTIONAL, alloy_data_layout_names,          \
                    "the records' layout: auto, alloy, alpaca, sharegpt, openai, trl or hh-rlhf"),                     \
    ALLOY_OPT_NAMED(TYPE, M.prompt, "prompt_field", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL, NULL,                   \
                    "the records' field that holds the prompt"),                                                        \
    ALLOY_OPT_NAMED(TYPE, M.response, "response_field", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL, NULL,               \
                    "the records' field that holds the response"),                                                      \
    ALLOY_OPT_NAMED(TYPE, M.chosen, "chosen_field", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL, NULL,                   \
                    "the records' field that holds the chosen response"),                                               \
    ALLOY_OPT_NAMED(TYPE, M.rejected, "rejected_field", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL, NULL,               \
                    "the records' field that holds the rejected response"),                                             \
    ALLOY_OPT_NAMED(TYPE, M.messages, "messages_field", NULL, ALLOY_OPT_STRING, ALLOY_OPT_OPTIONAL, NULL,               \
                    "the records' field that holds the conversation")

/* The schema of alloy_data_fields alone (for a verb without an options struct of its own). */
const alloy_schema *alloy_data_fields_schema(void);

/* The layout's name ("alpaca", ...; "?" for none). */
const char *alloy_data_layout_name(alloy_data_layout layout);
/* The layout of that name; USAGE naming the known ones otherwise. */
alloy_status alloy_data_layout_parse(const char *name, alloy_data_layout *out);

/* The layout a record is in (never AUTO): the first that fits, in this order: sharegpt
 * ("conversations", or "messages" of {"from", "value"}), openai ("messages" and none of alloy's
 * other fields), hh-rlhf ("chosen" and "rejected" transcripts without "prompt"), alpaca
 * ("instruction", "input" or "output", without "prompt" and "chosen"), trl ("prompt", "chosen",
 * "rejected"), else alloy. The fields of f (may be NULL) replace the names they stand for
 * (alpaca's are told by their own names). */
alloy_data_layout alloy_data_layout_detect(const struct cJSON *record, const alloy_data_fields *f);

/* Normalises a record of `layout` (AUTO: detected) into alloy's fields for examples of `kind`:
 * *out gets a new object (cJSON_Delete it), or NULL when the record is already what alloy's
 * reader reads (alloy's fields under their own names). tmpl decides hh-rlhf's form (messages
 * for ChatML, the transcript's text for raw). FORMAT with a message in the layout's own terms
 * (without a file or line: the caller adds them) when the record does not fit the layout. */
alloy_status alloy_data_layout_normalize(alloy_data_layout layout, const struct cJSON *record, const alloy_data_fields *f,
                                         alloy_align_kind kind, alloy_chat_template tmpl, struct cJSON **out);

/* Tokenized examples, every sequence's tokens one after another. A sequence is the rendered
 * prompt followed by one response; its mask marks the tokens the objective uses (SFT: the
 * assistant tokens; reward, DPO: the response's tokens). */
typedef struct alloy_align_data {
    char *path;           /* the file or folder read */
    int32_t *tokens;      /* (n_tokens) */
    uint8_t *mask;        /* (n_tokens) 1: trained on / scored */
    int64_t n_tokens, tokens_cap;
    int64_t *seq_start;   /* (n_seqs + 1) first token of each sequence */
    int64_t n_seqs, seqs_cap;
    int64_t *ex_start;    /* (n_examples + 1) first sequence of each example */
    int64_t *ex_line;     /* (n_examples) the example's line (JSONL) or element (array) in its
                             file, 1-based */
    alloy_data_layout layout; /* the layout of the (first) file's records: its first record's, or the one given */
    int64_t n_examples, ex_cap;
    int max_seqs;         /* the most sequences of one example */
    int max_len;          /* the longest sequence after truncation */
    int64_t truncated;    /* sequences cut to max_len */
    uint64_t fingerprint; /* FNV-1a over the tokens, masks and layout: a resumed run checks it */
} alloy_align_data;

/* Reads examples for `kind` and tokenizes them with `tmpl` (ChatML needs the tokenizer's chat
 * tokens) into sequences of at most max_len tokens. `path` is a JSONL file, a JSON array of
 * examples, either compressed with gzip or zstd, or a folder of such files (in name order;
 * binary files skipped): alloy/records.h reads them. fields (NULL: detected layouts, the
 * layouts' own names) says how records map to alloy's fields: each record is normalised with
 * alloy_data_layout_normalize, the layout detected from each file's first record when
 * fields->layout is AUTO. Too long: SFT keeps the beginning (the end is cut, as TRL); a prompt
 * keeps its end; reward, DPO and score keep the end of the prompt (its beginning is dropped,
 * down to max_len/2 tokens if the responses need that much) and cut the responses' ends only if
 * they alone do not fit. Blank lines are skipped. A line that is not a JSON object fails with
 * FORMAT "FILE:LINE: what is wrong" ("FILE: element N: ..." in an array); one that lacks the
 * fields of `kind`, has fields of the wrong type or does not fit the file's layout with FORMAT
 * "FILE:LINE: what is wrong (the file's layout is NAME, ...)"; a path without examples fails
 * too. On failure *d is empty. */
alloy_status alloy_align_data_read(alloy_align_data *d, const char *path, const alloy_tokenizer *tok,
                                   alloy_align_kind kind, alloy_chat_template tmpl, int max_len,
                                   const alloy_data_fields *fields);
void alloy_align_data_free(alloy_align_data *d);

/* What a file (or folder) of examples is, without tokenizing it: alloy_align_data_check. */
typedef struct alloy_data_report {
    uint64_t files;           /* files read */
    int64_t records;          /* records read (up to one that is not valid JSON) */
    alloy_data_layout layout; /* the first file's layout (AUTO: no records) */
    unsigned layouts;         /* bit l set: some file is in layout l */
    unsigned kinds;           /* bit k set: every record makes an example of alloy_align_kind k */
    char problem[1024];       /* "" or the first problem, "FILE:LINE: what ...": a record that is not
                                 valid JSON, one that a kind which read the records before it cannot
                                 read, or, when no kind reads the first record, why not */
} alloy_data_report;

/* Reads the records of path as alloy_align_data_read would (with fields and tmpl) for every
 * kind at once, checking each record's fields and messages but rendering nothing: which kinds
 * read every record, the layouts, the counts and the first problem (a bad record is reported,
 * not returned). Errors: IO for a path that cannot be read, USAGE for a bad fields->layout,
 * NOMEM, a stream's (truncated gzip data, ...). */
alloy_status alloy_align_data_check(const char *path, const alloy_data_fields *fields, alloy_chat_template tmpl,
                                    alloy_data_report *out);

ALLOY_END_DECLS
#endif /* ALLOY_CHAT_H */
