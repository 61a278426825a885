/*
 * convert.c — `alloy import` and `alloy export`: models between alloy's checkpoint folders and
 * the formats of other tools (Hugging Face folders, GGUF, llm.c and llama2.c files).
 *
 * An alloy checkpoint folder is already a Hugging Face folder (config.json + model.safetensors
 * named as GPT2LMHeadModel / LlamaForCausalLM), with its tokenizer.json beside them.
 */
#include "cli.h"
#include "alloy/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char import_help[] =
    "usage: alloy import SOURCE --out DIR [--tokenizer PATH]\n"
    "\n"
    "Brings a model made elsewhere into an alloy checkpoint folder (config.json,\n"
    "model.safetensors and, when the model has one, tokenizer.json), ready for alloy train\n"
    "--init, sample, generate and export. SOURCE is one of:\n"
    "  a Hugging Face folder   config.json + model.safetensors (or shards listed by\n"
    "                          model.safetensors.index.json; F32, F16 or BF16) of a GPT-2 or\n"
    "                          Llama-family model, with tokenizer.json (or vocab.json + merges.txt\n"
    "                          / encoder.json + vocab.bpe) when present\n"
    "  a GGUF file             llama.cpp's gpt2 or llama architecture (F32, F16, BF16, Q8_0, Q4_0,\n"
    "                          Q4_K tensors, dequantised), with its GPT-2-style tokenizer\n"
    "  an llm.c checkpoint     gpt2_124M.bin-style (versions 3 and 5)\n"
    "  a llama2.c checkpoint   stories260K.bin-style (legacy and version 1); it has no tokenizer,\n"
    "                          so work in token ids (alloy generate --prompt-ids)\n"
    "\n"
    "  --out DIR          the checkpoint folder to write (created; files replaced atomically)\n"
    "  --tokenizer PATH   a tokenizer to store with the model (tokenizer.json, a folder, or\n"
    "                     \"bytes\"); its vocabulary must fit the model's\n";

static const char export_help[] =
    "usage: alloy export --model DIR --format hf|gguf|llmc --out PATH [--type TYPE]\n"
    "\n"
    "Writes an alloy model (a checkpoint folder, or a run folder's latest checkpoint) for other\n"
    "tools:\n"
    "  hf     a Hugging Face folder PATH: config.json, model.safetensors (F32) and tokenizer.json,\n"
    "         loadable by transformers' GPT2LMHeadModel / LlamaForCausalLM\n"
    "  gguf   a GGUF file PATH for llama.cpp (architecture gpt2 or llama, its tensor names and\n"
    "         metadata keys, the tokenizer when it is a byte-level BPE); --type f32, f16, q8_0,\n"
    "         q4_0 or q4_k for the matrices (default f16); norms and biases stay f32, and a\n"
    "         matrix whose rows do not fit the type's blocks is written as f16 (said on stderr)\n"
    "  llmc   an llm.c GPT-2 checkpoint PATH (version 3, fp32; GPT-2 family only)\n"
    "\n"
    "  --model DIR    checkpoint folder or run folder\n"
    "  --format F     hf, gguf or llmc\n"
    "  --out PATH     the file or folder to write (replaced atomically)\n"
    "  --type TYPE    gguf only: f32, f16, q8_0, q4_0, q4_k (default f16)\n";

/* What kind of file path is, from its first bytes. */
typedef enum source_kind { SOURCE_HF, SOURCE_GGUF, SOURCE_LLMC, SOURCE_LLAMA2C_V1, SOURCE_LLAMA2C } source_kind;

static alloy_status detect(const char *path, source_kind *kind) {
    if (alloy_is_dir(path)) {
        *kind = SOURCE_HF;
        return ALLOY_STATUS_OK;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return alloy_fail(ALLOY_STATUS_IO, "%s: %s", path, alloy_path_exists(path) ? "cannot be read" : "no such file or folder");
    unsigned char b[8] = {0};
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    uint32_t w0 = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (n >= 4 && !memcmp(b, "GGUF", 4)) *kind = SOURCE_GGUF;
    else if (n >= 4 && w0 == 20240326u) *kind = SOURCE_LLMC;
    else if (n >= 4 && w0 == 0x616b3432u) *kind = SOURCE_LLAMA2C_V1;
    else *kind = SOURCE_LLAMA2C; // the legacy format has no magic: its sizes are checked instead
    return ALLOY_STATUS_OK;
}

/* The tokenizer of a Hugging Face folder (alloy_tokenizer_load_folder), or NULL when it has none.
 * GPT-2's vocab.json + merges.txt alone are refused by the loader (it names what it reads) rather
 * than dropped. */
static alloy_status folder_tokenizer(const char *dir, alloy_tokenizer **tok) {
    *tok = NULL;
    char *p = alloy_path_join(dir, "vocab.json");
    bool slow_files = p && alloy_path_exists(p);
    alloy_free(p);
    return slow_files ? alloy_tokenizer_load(tok, dir) : alloy_tokenizer_load_folder(tok, dir, NULL);
}

/* Writes model (and tok) as a checkpoint folder. */
static alloy_status save_with_tokenizer(alloy_model *m, const alloy_tokenizer *tok, const char *dir) {
    if (tok && alloy_tokenizer_vocab_size(tok) > m->config.vocab_size)
        return alloy_fail(ALLOY_STATUS_MISMATCH, "the tokenizer has %d tokens but the model only %d",
                          alloy_tokenizer_vocab_size(tok), m->config.vocab_size);
    if (tok && !strcmp(alloy_tokenizer_name(tok), "bytes")) snprintf(m->config.tokenizer, sizeof m->config.tokenizer, "bytes");
    alloy_status s = alloy_model_save(m, dir);
    if (s || !tok || !strcmp(alloy_tokenizer_name(tok), "bytes")) return s;
    char *tj = alloy_path_join(dir, "tokenizer.json");
    s = tj ? alloy_tokenizer_save(tok, tj) : ALLOY_STATUS_NOMEM;
    alloy_free(tj);
    return s;
}

static int import_main(const char *src, const char *out, const char *tok_path);

int cmd_import(int argc, char **argv) {
    const char *out = NULL, *tok_path = NULL;
    cli_flag flags[] = {{"out", CLI_STR, &out, false}, {"tokenizer", CLI_STR, &tok_path, false}};
    cli_list pos = {0};
    int r = cli_parse("import", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), import_help, &pos);
    if (!r && pos.n != 1) r = cli_usage("import", "give exactly one SOURCE (a folder or a file)");
    else if (!r && !out) r = cli_usage("import", "--out is required");
    else if (!r) r = import_main(pos.items[0], out, tok_path);
    else if (r == 1) r = 0;
    free(pos.items);
    return r;
}

static int import_main(const char *src, const char *out, const char *tok_path) {
    source_kind kind = SOURCE_HF;
    alloy_status s = detect(src, &kind);
    alloy_model *m = NULL;
    alloy_tokenizer *tok = NULL;
    static const char *const kind_names[] = {"Hugging Face folder", "GGUF file", "llm.c checkpoint",
                                             "llama2.c checkpoint (version 1)", "llama2.c checkpoint"};
    if (!s) {
        switch (kind) { // activations for one token: the folder written holds weights only
        case SOURCE_HF:
            s = alloy_model_load(&m, src, 1, 1);
            if (!s && !tok_path) s = folder_tokenizer(src, &tok);
            break;
        case SOURCE_GGUF: s = alloy_gguf_import_model_ex(&m, tok_path ? NULL : &tok, src, 1, 1); break;
        case SOURCE_LLMC: s = alloy_llmc_import_ex(&m, src, 1, 1); break;
        case SOURCE_LLAMA2C_V1:
        case SOURCE_LLAMA2C: s = alloy_llama2c_import_ex(&m, src, 1, 1); break;
        }
        if (s && kind == SOURCE_LLAMA2C) { // no magic matched: say so before the legacy reader's complaint
            char why[512];
            const char *e = alloy_last_error();
            size_t k = strlen(src);
            snprintf(why, sizeof why, "%s", !strncmp(e, src, k) && !strncmp(e + k, ": ", 2) ? e + k + 2 : e);
            s = alloy_fail(s, "%s: not a GGUF, llm.c or llama2.c version 1 file (no known magic), nor a legacy llama2.c file (%s)",
                           src, why);
        }
    }
    if (!s && tok_path) s = !strcmp(tok_path, "bytes") ? alloy_tokenizer_create(&tok, "bytes") : alloy_tokenizer_load(&tok, tok_path);
    if (!s) s = save_with_tokenizer(m, tok, out);
    if (!s) {
        const alloy_config *c = &m->config;
        printf("imported %s %s: %s, %zu parameters (L=%d, C=%d, H=%d, KV=%d, V=%d, T=%d), tokenizer %s -> %s\n",
               kind_names[kind], src, alloy_family_name(c->family), m->num_params, c->n_layer, c->d_model, c->n_head,
               c->n_kv_head, c->vocab_size, c->max_seq_len, tok ? alloy_tokenizer_name(tok) : "none (token ids only)",
               out);
    }
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    return s ? cli_fail("import", s) : 0;
}

int cmd_export(int argc, char **argv) {
    const char *model_dir = NULL, *format = NULL, *out = NULL, *type_name = "f16";
    cli_flag flags[] = {{"model", CLI_STR, &model_dir, false},
                        {"format", CLI_STR, &format, false},
                        {"out", CLI_STR, &out, false},
                        {"type", CLI_STR, &type_name, false}};
    int r = cli_parse("export", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), export_help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dir || !format || !out) return cli_usage("export", "--model, --format and --out are required");
    bool hf = !strcmp(format, "hf"), gguf = !strcmp(format, "gguf"), llmc = !strcmp(format, "llmc");
    if (!hf && !gguf && !llmc) return cli_usage("export", "--format must be hf, gguf or llmc, not '%s'", format);
    alloy_qtype type;
    if (alloy_qtype_parse(type_name, &type)) return cli_usage("export", "--type must be f32, f16, q8_0, q4_0 or q4_k");
    if (flags[3].seen && !gguf) return cli_usage("export", "--type applies to --format gguf only");

    char *dir = NULL;
    alloy_status s = alloy_checkpoint_resolve(model_dir, &dir);
    alloy_model *m = NULL;
    alloy_tokenizer *tok = NULL;
    if (!s) s = alloy_model_load(&m, dir, 1, 1);
    if (!s) s = folder_tokenizer(dir, &tok);
    if (!s && !tok && !strcmp(m->config.tokenizer, "bytes")) s = alloy_tokenizer_create(&tok, "bytes");
    if (!s) {
        if (hf) {
            s = save_with_tokenizer(m, tok, out);
        } else if (gguf) {
            alloy_gguf_export_report rep;
            s = alloy_gguf_export_model_ex(m, tok, out, type, &rep);
            if (!s && rep.note[0]) fprintf(stderr, "alloy export: %s\n", rep.note);
        } else {
            s = alloy_llmc_export(m, out);
        }
    }
    if (!s)
        printf("exported %s (%s, %zu parameters) as %s%s%s -> %s\n", dir, alloy_family_name(m->config.family),
               m->num_params, format, gguf ? " " : "", gguf ? alloy_qtype_name(type) : "", out);
    alloy_tokenizer_destroy(tok);
    alloy_model_destroy(m);
    alloy_free(dir);
    return s ? cli_fail("export", s) : 0;
}
