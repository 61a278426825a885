/*
 * alloy/llmc.h — the checkpoint files of karpathy's llm.c (GPT-2) and llama2.c (Llama).
 *
 *     alloy_model *m;
 *     if (alloy_llama2c_import(&m, "stories260K.bin")) { puts(alloy_last_error()); ... }
 *     alloy_model_forward(m, tokens, 1, T);            // alloy_model_logits(m): (T, V)
 *     alloy_model_destroy(m);
 *
 *     if (alloy_llmc_export(gpt2, "gpt2_124M.bin")) { puts(alloy_last_error()); ... }
 *
 * All integers and floats in both formats are little-endian.
 *
 * llm.c GPT-2 checkpoint (train_gpt2.c gpt2_build_from_checkpoint, train_gpt2.py write_model):
 *   bytes [0, 1024)   256 int32: [0] magic 20240326, [1] version (3: fp32 tensors, 5: bf16
 *                     tensors), [2] max_seq_len maxT, [3] vocab_size V, [4] num_layers L,
 *                     [5] num_heads NH, [6] channels C, [7] padded_vocab_size Vp >= V (llm.c
 *                     rounds V up to a multiple of 128); the rest are zero.
 *   bytes [1024, end) the tensors, each row-major, fp32 (4 bytes) or bf16 (2 bytes: the top
 *                     half of an fp32), in this order, nothing between or after them:
 *                       wte (Vp, C)  wpe (maxT, C)  ln1w (L, C)  ln1b (L, C)
 *                       qkvw (L, 3C, C)  qkvb (L, 3C)  attprojw (L, C, C)  attprojb (L, C)
 *                       ln2w (L, C)  ln2b (L, C)  fcw (L, 4C, C)  fcb (L, 4C)
 *                       fcprojw (L, C, 4C)  fcprojb (L, C)  lnfw (C)  lnfb (C)
 *                     Matrices are (out, in) as torch.nn.Linear — the transpose of Hugging
 *                     Face's GPT-2 Conv1D (in, out) that alloy stores. The rows of wte past V
 *                     are padding (zero when written by llm.c or alloy). The MLP width is 4C,
 *                     the LayerNorm epsilon 1e-5 and GELU the tanh form: fixed by llm.c.
 *
 * llama2.c checkpoint, legacy version 0 (run.c read_checkpoint and memory_map_weights,
 * export.py legacy_export):
 *   bytes [0, 28)     7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *                     seq_len; a negative vocab_size says the classifier is not shared with
 *                     the token embedding (|vocab_size| is the vocabulary).
 *   bytes [28, end)   fp32 tensors, row-major, (out, in) matrices, hd = dim / n_heads,
 *                     kv = n_kv_heads · hd:
 *                       token_embedding (V, dim)  rms_att (L, dim)  wq (L, dim, dim)
 *                       wk (L, kv, dim)  wv (L, kv, dim)  wo (L, dim, dim)  rms_ffn (L, dim)
 *                       w1 (L, hidden, dim)  w2 (L, dim, hidden)  w3 (L, hidden, dim)
 *                       rms_final (dim)  freq_cis_real (seq_len, hd/2)
 *                       freq_cis_imag (seq_len, hd/2)  [wcls (V, dim) when not shared]
 *                     The two freq_cis tables are an old cache of the rotary angles; run.c
 *                     skips them, and so does alloy.
 * llama2.c version 1 (export.py version1_export):
 *   bytes [0, 256)    uint32 magic 0x616b3432 ("ak42"), int32 version 1, the 7 int32 above
 *                     (vocab_size positive), uint8 shared_classifier, zero padding.
 *   bytes [256, end)  fp32 tensors: rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv,
 *                     wo, w1, w2, w3, [wcls when not shared], shaped as above.
 *   (Version 2, int8-quantized, is refused.)
 * The llama2.c model: RMSNorm with epsilon 1e-5, SwiGLU w2(silu(w1·x) * w3·x), grouped-query
 * attention (query head h reads KV head h / (n_heads / n_kv_heads)), and rotary positions on
 * interleaved pairs (2j, 2j+1) of each head with angle pos · 10000^(-2j/hd). alloy's Llama
 * (like Hugging Face's) rotates pairs (j, j + hd/2) with the same angles, so the import permutes
 * the rows of wq and wk within each head — row 2j + a goes to row a·hd/2 + j, as Hugging Face's
 * convert_llama_weights_to_hf does — which gives the same attention scores.
 *
 * The readers check the magic, the version and every size (positive, within alloy's limits,
 * consistent, overflow-safe) and refuse a file whose length is not exactly what its header
 * implies, before reading any tensor. Errors name the file.
 */
#ifndef ALLOY_LLMC_H
#define ALLOY_LLMC_H

#include "alloy/base.h"
#include "alloy/model.h"

ALLOY_BEGIN_DECLS

#define ALLOY_LLMC_MAGIC 20240326
#define ALLOY_LLMC_HEADER_INTS 256
#define ALLOY_LLMC_VOCAB_MULTIPLE 128 /* the vocabulary padding of alloy_llmc_export, as llm.c's */
#define ALLOY_LLAMA2C_MAGIC 0x616b3432u /* "ak42", version 1 files */

/* Reads an llm.c GPT-2 checkpoint (version 3 or 5) into a new GPT-2 model with room for
 * max_B x max_T tokens (max_T 0: the file's max_seq_len): the padded vocabulary rows are
 * dropped, the matrices transposed to alloy's (in, out) layout, bf16 widened exactly. The model
 * is the caller's (alloy_model_destroy). On failure *out is NULL. */
alloy_status alloy_llmc_import_ex(alloy_model **out, const char *path, int max_B, int max_T);
/* The same for one sequence of up to max_seq_len tokens (max_B 1, max_T 0). */
alloy_status alloy_llmc_import(alloy_model **out, const char *path);

/* Writes a GPT-2 model as an llm.c version 3 (fp32) checkpoint, atomically (temporary file,
 * fsync, rename), the vocabulary padded with zero rows to a multiple of 128. Fails with USAGE
 * for a model llm.c cannot hold: a Llama, an MLP width other than 4C, a LayerNorm epsilon other
 * than 1e-5. */
alloy_status alloy_llmc_export(const alloy_model *m, const char *path);

/* Reads a llama2.c checkpoint (legacy version 0, or version 1) into a new Llama model with room
 * for max_B x max_T tokens (max_T 0: the file's seq_len): heads and KV heads as in the file,
 * the classifier tied to the embedding when the file shares it, epsilon 1e-5, rope theta
 * 10000, max_seq_len = seq_len, and the rows of wq and wk permuted from interleaved rotary pairs
 * to alloy's rotate-half. The model is the caller's. On failure *out is NULL. */
alloy_status alloy_llama2c_import_ex(alloy_model **out, const char *path, int max_B, int max_T);
/* The same for one sequence of up to seq_len tokens (max_B 1, max_T 0). */
alloy_status alloy_llama2c_import(alloy_model **out, const char *path);

ALLOY_END_DECLS
#endif /* ALLOY_LLMC_H */
