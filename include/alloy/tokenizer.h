/*
 * alloy/tokenizer.h — text to token ids and back: the byte tokenizer and byte-level BPE.
 *
 * Byte-level BPE as GPT-2 defines it: text is split into pieces by a pre-tokenizer regex (run by
 * PCRE2 with JIT), each piece's UTF-8 bytes start as one token per byte, and the merges are
 * applied lowest rank first (leftmost first among equals). Loads GPT-2's encoder.json + vocab.bpe
 * and Hugging Face tokenizer.json (byte-level BPE models); saves tokenizer.json. Encodes exactly as
 * js-tiktoken's "gpt2" encoding (tests/test_tiktoken.sh).
 *
 * Input rules: invalid UTF-8 is replaced by U+FFFD first (alloy_utf8_repair, as JavaScript and
 * Python decode text). Special tokens (<|endoftext|>, chat markers) come out of text only with
 * ALLOY_ENCODE_ALLOW_SPECIAL; otherwise their text is encoded like any other text (tiktoken's
 * encode_ordinary).
 *
 *     alloy_tokenizer *tok;
 *     alloy_tokenizer_load(&tok, "gpt2/");               // encoder.json + vocab.bpe
 *     alloy_ids ids = {0};
 *     alloy_tokenizer_encode(tok, "Hello world", 11, 0, &ids);   // 15496 995
 *     alloy_ids_free(&ids);
 *     alloy_tokenizer_destroy(tok);
 */
#ifndef ALLOY_TOKENIZER_H
#define ALLOY_TOKENIZER_H

#include "alloy/base.h"

ALLOY_BEGIN_DECLS

typedef struct alloy_tokenizer alloy_tokenizer;

/* A growable array of token ids. Zero-initialise; alloy_ids_free releases it. */
typedef struct alloy_ids {
    int32_t *data; /* (n) */
    size_t n;      /* ids stored */
    size_t cap;    /* ids allocated */
} alloy_ids;

alloy_status alloy_ids_reserve(alloy_ids *ids, size_t n);
alloy_status alloy_ids_push(alloy_ids *ids, int32_t id);
void alloy_ids_free(alloy_ids *ids);

/* "bytes": the byte tokenizer (vocabulary 256, id = byte). */
alloy_status alloy_tokenizer_create(alloy_tokenizer **out, const char *name);
/* "bytes", a tokenizer.json, or a folder holding tokenizer.json or encoder.json + vocab.bpe.
 * A file of another kind (WordPiece, Unigram, a BPE that is not byte-level) is refused with a
 * message that says what it is. */
alloy_status alloy_tokenizer_load(alloy_tokenizer **out, const char *path);
/* The tokenizer file a model folder holds (alloy_free *file): dir/tokenizer.json, else
 * dir/encoder.json (GPT-2's pair, with vocab.bpe beside it); NULL (and OK) when it holds neither. */
alloy_status alloy_tokenizer_folder_file(const char *dir, char **file);
/* The tokenizer a model folder carries, alloy's one answer to "which tokenizer does this folder
 * carry?": its tokenizer file (alloy_tokenizer_folder_file), else the byte tokenizer when
 * `named` (its config.json's tokenizer name; NULL or "" for none) is "bytes". *out is NULL (and
 * the status OK) when the folder has no file and names none; MISMATCH naming dir when it names
 * another tokenizer ("bpe") but has no file. */
alloy_status alloy_tokenizer_load_folder(alloy_tokenizer **out, const char *dir, const char *named);
/* Writes a Hugging Face tokenizer.json (atomically). BPE only. */
alloy_status alloy_tokenizer_save(const alloy_tokenizer *tok, const char *path);
void alloy_tokenizer_destroy(alloy_tokenizer *tok);

const char *alloy_tokenizer_name(const alloy_tokenizer *tok); /* "bytes" or "bpe" */
int alloy_tokenizer_vocab_size(const alloy_tokenizer *tok);
/* The tokenizer's identity: a fingerprint of everything that decides the encoding (its kind,
 * every token's bytes and whether it is special, the merges in rank order, the pre-tokenizer
 * regex, add_prefix_space), not of the file it was read from. This is alloy's one answer to "do
 * these share a tokenizer?": equal hashes (merge, ensembles, distillation, moe, training from a
 * model all compare it, through alloy_checkpoint_compatible where they hold checkpoints). */
uint64_t alloy_tokenizer_hash(const alloy_tokenizer *tok);
/* The id of a special token by its text, or -1. */
int32_t alloy_tokenizer_special_id(const alloy_tokenizer *tok, const char *text);
/* The bytes of token id (*len of them), or NULL for an id outside the vocabulary. */
const char *alloy_tokenizer_token(const alloy_tokenizer *tok, int32_t id, size_t *len);
/* The pre-tokenizer's regex (PCRE2 syntax), or NULL for the byte tokenizer. */
const char *alloy_tokenizer_pattern(const alloy_tokenizer *tok);

/* Whether token id is a special token (written as its text; false outside the vocabulary). */
bool alloy_tokenizer_is_special(const alloy_tokenizer *tok, int32_t id);
/* The number of merges (0 for the byte tokenizer). */
int32_t alloy_tokenizer_n_merges(const alloy_tokenizer *tok);
/* Merge `rank` (0 first): the ids of the tokens it joins; false for a rank out of range. */
bool alloy_tokenizer_merge(const alloy_tokenizer *tok, int32_t rank, int32_t *left, int32_t *right);
/* Whether a space is put before text that does not start with one. */
bool alloy_tokenizer_add_prefix_space(const alloy_tokenizer *tok);
/* GPT-2's pre-tokenizer regex, as alloy spells it (the default of a BPE without its own). */
const char *alloy_tokenizer_gpt2_pattern(void);

#define ALLOY_ENCODE_ALLOW_SPECIAL 1u

/* Encodes n bytes of text, appending ids. Thread-safe (each call has its own state); for many
 * calls from one thread an alloy_encoder is faster. */
alloy_status alloy_tokenizer_encode(const alloy_tokenizer *tok, const char *text, size_t n, unsigned flags,
                                    alloy_ids *ids);
/* Encodes a large text with `threads` OpenMP threads (0: the default), cutting it only where
 * the pieces cannot change; the result equals alloy_tokenizer_encode's. */
alloy_status alloy_tokenizer_encode_parallel(const alloy_tokenizer *tok, const char *text, size_t n,
                                             unsigned flags, int threads, alloy_ids *ids);
/* The first position >= from where text may be cut without changing the pieces of GPT-2's
 * pre-tokenizer on either side (just after a newline with a printable ASCII character on each
 * side), or n if there is none. Used to split large texts for threads, units and blocks. */
size_t alloy_tokenizer_safe_cut(const char *text, size_t n, size_t from);
/* Decodes ids into a new NUL-terminated buffer (alloy_free it) of *len bytes; RANGE for an id
 * outside the vocabulary. */
alloy_status alloy_tokenizer_decode(const alloy_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                                    size_t *len);

/* Ids as a compact JSON array, "[1,2,3]" (as JavaScript's JSON.stringify), in a new
 * NUL-terminated buffer (alloy_free it) of *len bytes. */
alloy_status alloy_ids_to_json(const int32_t *ids, size_t n, char **out, size_t *len);
/* Appends the ids of a JSON array of integers to *out; FORMAT naming `what` for anything else. */
alloy_status alloy_ids_from_json(const char *text, size_t n, const char *what, alloy_ids *out);
/* A description of tok in lines "kind: K", "vocabulary: V", "fingerprint: F" (alloy_tokenizer_hash,
 * 16 hex digits), "pre-tokenizer regex: R" (if any) and "special token ID: TEXT" per special
 * token (shorter than 64 bytes) in id order, in a new NUL-terminated buffer (alloy_free it). */
alloy_status alloy_tokenizer_describe(const alloy_tokenizer *tok, char **out);

/* Per-thread encoding state: regex match data and a cache of encoded pieces. */
typedef struct alloy_encoder alloy_encoder;
alloy_status alloy_encoder_create(alloy_encoder **out, const alloy_tokenizer *tok);
void alloy_encoder_destroy(alloy_encoder *enc);
alloy_status alloy_encoder_encode(alloy_encoder *enc, const char *text, size_t n, unsigned flags, alloy_ids *ids);

/* ---- building a byte-level BPE from its parts (for file formats read outside this module) ---- */

/* GPT-2's byte-level vocabulary form, as tokenizer.json, vocab.bpe and GGUF write tokens: each
 * byte stands as one printable character (bytes_to_unicode; a space is "Ġ").
 * alloy_bpe_bytes_to_vocab writes the form of n bytes, NUL-terminated, into out (2·n + 1 bytes)
 * and returns its length; alloy_bpe_vocab_to_bytes decodes a form of n bytes into out (n bytes),
 * false if it is empty or holds a character that stands for no byte. */
size_t alloy_bpe_bytes_to_vocab(const char *bytes, size_t n, char *out);
bool alloy_bpe_vocab_to_bytes(const char *s, size_t n, char *out, size_t *out_n);

/* A BPE under construction: create it with the vocabulary size, set the tokens, end the
 * tokens, add the merges in rank order, then finish. Every step's error names `what`.
 *
 *     alloy_bpe_builder *b;
 *     alloy_bpe_builder_create(&b, n, path);
 *     alloy_bpe_builder_set_token(b, id, bytes, len, false);       // for each id used
 *     alloy_bpe_builder_end_tokens(b);
 *     alloy_bpe_builder_add_merge(b, left, right);                 // for each merge
 *     alloy_bpe_builder_finish(b, NULL, false, &tok);
 *     alloy_bpe_builder_destroy(b);                                // always */
typedef struct alloy_bpe_builder alloy_bpe_builder;
/* n_tokens ids (256 to 2^24); `what` (copied) names the source in error messages. */
alloy_status alloy_bpe_builder_create(alloy_bpe_builder **out, int32_t n_tokens, const char *what);
/* Token id is n bytes (1 to 65536); a special token's bytes are its text. Each id at most once;
 * ids never set are gaps in the vocabulary. */
alloy_status alloy_bpe_builder_set_token(alloy_bpe_builder *b, int32_t id, const char *bytes, size_t n, bool special);
/* Ends the vocabulary: indexes it, refusing two ordinary tokens with the same bytes or a byte
 * without its own token. After it, lookup works and merges may be added. */
alloy_status alloy_bpe_builder_end_tokens(alloy_bpe_builder *b);
/* The id of the ordinary token with these bytes, or -1 (after end_tokens). */
int32_t alloy_bpe_builder_lookup(const alloy_bpe_builder *b, const char *bytes, size_t n);
/* Appends the merge (left, right) with the next rank. */
alloy_status alloy_bpe_builder_add_merge(alloy_bpe_builder *b, int32_t left, int32_t right);
/* Checks the merges, sets the pre-tokenizer (pattern NULL: GPT-2's) and hands the tokenizer to
 * *out; the builder must still be destroyed. */
alloy_status alloy_bpe_builder_finish(alloy_bpe_builder *b, const char *pattern, bool add_prefix_space,
                                      alloy_tokenizer **out);
/* Frees the builder and the tokenizer it holds, if finish did not hand it over. */
void alloy_bpe_builder_destroy(alloy_bpe_builder *b);

/* ---- training ---- */

typedef struct alloy_bpe_train_options {
    int vocab_size;                   /* final size, special tokens included (>= 256 + specials) */
    const char *const *special_tokens;/* added after the merges, in order (may be NULL) */
    int n_special;
    int min_frequency;                /* a pair must occur this often to be merged (default 2) */
    bool quiet;                       /* no progress on stderr */
} alloy_bpe_train_options;

/* Collects pre-tokenized piece counts from text fed to it, then learns merges. */
typedef struct alloy_bpe_trainer alloy_bpe_trainer;
alloy_status alloy_bpe_trainer_create(alloy_bpe_trainer **out, const alloy_bpe_train_options *opt);
alloy_status alloy_bpe_trainer_feed(alloy_bpe_trainer *tr, const char *text, size_t n);
/* Learns the merges and builds the tokenizer; deterministic for the same text and options. */
alloy_status alloy_bpe_trainer_finish(alloy_bpe_trainer *tr, alloy_tokenizer **out);
/* What the trainer has seen and done (any pointer may be NULL): bytes fed, distinct pieces,
 * merges learned (after finish). */
void alloy_bpe_trainer_stats(const alloy_bpe_trainer *tr, uint64_t *bytes_fed, uint64_t *distinct_pieces, int *merges);
void alloy_bpe_trainer_destroy(alloy_bpe_trainer *tr);

ALLOY_END_DECLS
#endif /* ALLOY_TOKENIZER_H */
