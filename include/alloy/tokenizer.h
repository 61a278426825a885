/*
 * alloy/tokenizer.h — turning text into token ids and back.
 *
 * For now one kind: the byte-level tokenizer (vocabulary 256, id = byte value), which needs
 * no files and round-trips any byte string. Byte-level BPE (GPT-2) joins it later behind the
 * same interface.
 *
 *     alloy_tokenizer *tok;
 *     alloy_tokenizer_create(&tok, "bytes");
 *     int32_t *ids; size_t n;
 *     alloy_tokenizer_encode(tok, "hello", 5, &ids, &n);   // 104 101 108 108 111
 *     alloy_free(ids);
 *     alloy_tokenizer_destroy(tok);
 */
#ifndef ALLOY_TOKENIZER_H
#define ALLOY_TOKENIZER_H

#include "alloy/base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct alloy_tokenizer alloy_tokenizer;

/* Creates a tokenizer by name ("bytes"). USAGE for an unknown name. */
alloy_status alloy_tokenizer_create(alloy_tokenizer **out, const char *name);
void alloy_tokenizer_destroy(alloy_tokenizer *tok);
const char *alloy_tokenizer_name(const alloy_tokenizer *tok);
int alloy_tokenizer_vocab_size(const alloy_tokenizer *tok);
/* Encodes n bytes of text into a new array of ids (alloy_free it). */
alloy_status alloy_tokenizer_encode(const alloy_tokenizer *tok, const char *text, size_t n, int32_t **ids,
                                    size_t *n_ids);
/* Decodes ids into a new NUL-terminated buffer of *len bytes (alloy_free it); RANGE for an id
 * outside the vocabulary. */
alloy_status alloy_tokenizer_decode(const alloy_tokenizer *tok, const int32_t *ids, size_t n, char **text,
                                    size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* ALLOY_TOKENIZER_H */
