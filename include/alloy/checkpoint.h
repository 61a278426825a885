/*
 * alloy/checkpoint.h — what a model path names, resolved once, and the checkpoint it names as
 * one object: config, weights, tokenizer, chat template and fingerprint.
 *
 * A model path is any of
 *   - a run folder (alloy train, sft, ...): RUN/latest names its newest checkpoint,
 *     "checkpoints/step-NNNNNNNN", a folder inside RUN;
 *   - a checkpoint folder, or a Hugging Face folder: config.json with model.safetensors or
 *     model.safetensors.index.json and its shards (alloy writes the same layout);
 *   - a file inside such a folder: its config.json, model.safetensors or
 *     model.safetensors.index.json (the folder is meant).
 * Every verb that takes a model, and merge recipes, resolve it with alloy_checkpoint_resolve,
 * so a run folder is taken wherever a checkpoint folder is.
 *
 *     alloy_checkpoint *a, *b;
 *     if (alloy_checkpoint_open(&a, "runs/demo/run") || alloy_checkpoint_open(&b, "runs/other")) ...
 *     char why[512];
 *     if (!alloy_checkpoint_compatible(a, b, why, sizeof why)) fprintf(stderr, "%s\n", why);
 *     alloy_model *m;
 *     alloy_model_load(&m, a->dir, 1, 0);   // the resolved folder
 *     alloy_checkpoint_close(a);
 */
#ifndef ALLOY_CHECKPOINT_H
#define ALLOY_CHECKPOINT_H

#include "alloy/base.h"
#include "alloy/io.h"
#include "alloy/model.h"
#include "alloy/tokenizer.h"

ALLOY_BEGIN_DECLS

/* ---- the one resolution of a model path ---- */

/* The checkpoint folder `path` names (alloy_free *ckpt): path itself when it is a folder holding
 * config.json, model.safetensors or model.safetensors.index.json (loading then names what is
 * missing); the folder of a config.json, model.safetensors or model.safetensors.index.json file;
 * else a run folder's latest checkpoint (alloy_run_latest). IO naming path when it does not
 * exist, is another kind of file, or is a folder that is none of these. */
alloy_status alloy_checkpoint_resolve(const char *path, char **ckpt);
/* The run folder's latest checkpoint folder (alloy_free *ckpt): RUN/latest holds a path relative
 * to RUN (no "..", not absolute) of a folder that exists. IO naming the folder when it has no
 * `latest`; FORMAT or IO naming RUN/latest when it names nothing usable. */
alloy_status alloy_run_latest(const char *run_dir, char **ckpt);

/* ---- the checkpoint object ---- */

/* A checkpoint opened from a model path. The fields are read-only for the caller; the
 * tokenizer and the fingerprint are computed on first use (alloy_checkpoint_tokenizer,
 * alloy_checkpoint_fingerprint) and cached, so an object is not thread-safe. */
typedef struct alloy_checkpoint {
    char *path;                   /* the path as given */
    char *dir;                    /* the checkpoint folder it resolved to */
    bool from_run;                /* path was a run folder: dir is its `latest` checkpoint */
    alloy_config config;          /* dir/config.json */
    alloy_weight_files weights;   /* dir's safetensors files (one, or an index's shards), mapped */
    char *tokenizer_file;         /* dir/tokenizer.json or dir/encoder.json (+ vocab.bpe); NULL:
                                     none, and config.tokenizer names the tokenizer ("bytes") */
    char chat_template[32];       /* config.json's "chat_template" ("chatml", "raw"); "" if none */
    /* cached, private: */
    alloy_tokenizer *tok;         /* loaded by alloy_checkpoint_tokenizer */
    bool tok_loaded;              /* tok is final (it may be NULL: the folder carries none) */
    uint64_t fingerprint;         /* valid when fingerprinted */
    bool fingerprinted;
} alloy_checkpoint;

/* Resolves path (alloy_checkpoint_resolve) once, reads config.json and the chat template,
 * opens the weights (alloy_weight_files_open) and notes the tokenizer file. Errors name the
 * file and the problem in one line (a missing folder, a `latest` naming nothing, a malformed
 * config.json, missing weights). */
alloy_status alloy_checkpoint_open(alloy_checkpoint **out, const char *path);
void alloy_checkpoint_close(alloy_checkpoint *ck);

/* The checkpoint's tokenizer, owned by ck (alloy_tokenizer_load_folder on its folder and
 * config.json's tokenizer name): *tok is NULL when the folder carries none and its config names
 * none. MISMATCH when the tokenizer has more tokens than the model's vocabulary. */
alloy_status alloy_checkpoint_tokenizer(alloy_checkpoint *ck, const alloy_tokenizer **tok);

/* A 64-bit fingerprint of the weights: FNV-1a over the bytes of each safetensors file (header
 * and data) in order, so that two checkpoints with the same fingerprint hold the same tensors
 * byte for byte (and any change to a tensor, name, dtype or shape changes it). Reads every
 * byte of the weights on first use. */
alloy_status alloy_checkpoint_fingerprint(alloy_checkpoint *ck, uint64_t *fp);

/* Whether b can be ensembled, merged, distilled into or combined with a: the same vocabulary
 * size and the same tokenizer (alloy_tokenizer_hash of their tokenizers; when neither folder
 * carries a tokenizer file, the same tokenizer name in config.json). When not, why (n bytes,
 * may be NULL) gets the reason in one line naming both, e.g. "B/tokenizer.json differs from
 * A/tokenizer.json". A tokenizer that fails to load makes them incompatible, with its error. */
bool alloy_checkpoint_compatible(alloy_checkpoint *a, alloy_checkpoint *b, char *why, size_t n);

/* The tokenizer a tokenizer path or a model path carries (alloy_tokenizer_destroy it): a
 * tokenizer.json or encoder.json file, or a folder holding one, is read as it is
 * (alloy_tokenizer_load); any other path is resolved as a model path and its folder's tokenizer
 * is loaded (alloy_tokenizer_load_folder with its config.json's name). USAGE naming the path
 * when it carries none. */
alloy_status alloy_checkpoint_load_tokenizer(const char *path, alloy_tokenizer **out);

ALLOY_END_DECLS
#endif /* ALLOY_CHECKPOINT_H */
