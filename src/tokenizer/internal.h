/*
 * internal.h — the tokenizer's representation, shared by the files of src/tokenizer/.
 */
#ifndef ALLOY_TOKENIZER_INTERNAL_H
#define ALLOY_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "alloy/tokenizer.h"

enum { TOK_BYTES = 0, TOK_BPE = 1 };
enum { TOKEN_USED = 1, TOKEN_SPECIAL = 2 };

struct alloy_tokenizer {
    int kind;               /* TOK_BYTES or TOK_BPE */
    int32_t n_tokens;       /* vocabulary size: ids 0 .. n_tokens-1 */
    char **bytes;           /* (n_tokens) each token's bytes (specials: their text) */
    uint32_t *len;          /* (n_tokens) */
    uint8_t *flags;         /* (n_tokens) TOKEN_USED | TOKEN_SPECIAL */
    int32_t *index;         /* (index_cap) bytes -> id of ordinary tokens; -1 empty */
    size_t index_cap;
    int32_t byte_id[256];   /* the token of each single byte */
    alloy_map64 merges;     /* (left << 32 | right) -> (rank << 32 | merged id) */
    int32_t *merge_pairs;   /* (2 · n_merges) left, right in rank order */
    int32_t n_merges, merges_cap;
    int32_t *specials;      /* (n_specials) ids of special tokens, longest text first */
    int n_specials;
    char *pattern;          /* pre-tokenizer regex, PCRE2 syntax */
    bool add_prefix_space;  /* a space is put before text that does not start with one */
    pcre2_code *re;         /* compiled pattern (JIT), shared read-only by encoders */
    uint64_t hash;          /* fingerprint of all the above */
};

/* GPT-2's pre-tokenizer pattern with JavaScript's \s spelled out, so that whitespace means what
 * it means to js-tiktoken (Unicode spaces and U+FEFF, not U+0085). */
extern const char tok_gpt2_pattern[];

/* Building a BPE tokenizer: create with the vocabulary size, set every token, add merges in
 * rank order, then finish (indexes, checks, compiles the pattern). `what` names the source in
 * error messages. */
alloy_status tok_init_bpe(alloy_tokenizer **out, int32_t n_tokens, const char *what);
alloy_status tok_set(alloy_tokenizer *t, int32_t id, const char *bytes, size_t len, bool special, const char *what);
/* Indexes the tokens set so far (tok_lookup works after it); tok_finish calls it if needed. */
alloy_status tok_index(alloy_tokenizer *t, const char *what);
alloy_status tok_add_merge(alloy_tokenizer *t, int32_t left, int32_t right, const char *what);
alloy_status tok_finish(alloy_tokenizer *t, const char *pattern, bool add_prefix_space, const char *what);
/* The id of an ordinary token with these bytes, or -1. */
int32_t tok_lookup(const alloy_tokenizer *t, const char *bytes, size_t len);

/* chat.c, for conversation.c: append the ordinary-text encoding of s (n bytes), or one id (a
 * marker), to ids, and the mask value m for each new id to mask. */
alloy_status chat_push_text(const alloy_tokenizer *tok, const char *s, size_t n, int32_t m, alloy_ids *ids, alloy_ids *mask);
alloy_status chat_push_id(int32_t id, int32_t m, alloy_ids *ids, alloy_ids *mask);

#endif
