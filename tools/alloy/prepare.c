/*
 * prepare.c — `alloy prepare`: sources of text in, clean, deduplicated, mixed token shards out.
 */
#include "cli.h"
#include "alloy/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy prepare --input [NAME=]PATH... --out DIR [flags]\n"
    "\n"
    "Reads text, normalises it, drops duplicates, holds some out, tokenizes, mixes the sources and\n"
    "writes DIR/train-NNNNN.bin, DIR/val-NNNNN.bin, DIR/manifest.json (every count, what was dropped,\n"
    "the tokenizer's fingerprint) and, for a BPE tokenizer, DIR/tokenizer.json. DIR must not hold\n"
    "shards yet.\n"
    "\n"
    "inputs:\n"
    "  --input [NAME=]PATH...  files or folders (searched recursively, binary files skipped; gzip\n"
    "                        and zstd files decompressed); NAME groups them into a source (default:\n"
    "                        the file name without extension)\n"
    "  --format F            auto (default: .jsonl, .ndjson and .json, less a .gz/.zst suffix, are\n"
    "                        JSON: an array if the file opens with '[', else JSONL; other files\n"
    "                        text), text, jsonl, json\n"
    "  --field F[,F...]      JSON: the string field(s) holding the text, joined by a blank line\n"
    "                        (default: text). Lines that are not objects, or lack the field, are\n"
    "                        skipped and counted in the manifest\n"
    "  --separator STR       text: cut files into documents at STR (\\n and \\t understood), e.g.\n"
    "                        '<|endoftext|>'; without it a file is a document\n"
    "cleaning:\n"
    "  --normalize F         nfc (default), nfkc or none; invalid UTF-8 always becomes U+FFFD, CR LF\n"
    "                        becomes LF, control characters other than TAB and LF are removed\n"
    "  --dedup KINDS         exact, minhash, exact,minhash or none (default): across all sources,\n"
    "                        the first copy is kept\n"
    "  --minhash-shingle N   words per shingle (default 5)\n"
    "  --minhash-perm N      signature length (default 128)\n"
    "  --minhash-bands N     LSH bands; rows = perm / bands (default 16)\n"
    "  --minhash-threshold X Jaccard similarity from which documents are duplicates (default 0.8)\n"
    "  --dedup-log FILE      JSONL: every dropped document and the one it duplicates\n"
    "tokens and shards:\n"
    "  --tokenizer PATH      bytes (default), a tokenizer.json, or a folder with one or with GPT-2's\n"
    "                        encoder.json + vocab.bpe\n"
    "  --no-eot              no <|endoftext|> after each document (default: one, if the tokenizer has it)\n"
    "  --mix NAME:W,...      mix the sources by these weights (default: as they come, by size)\n"
    "  --mix-tokens N        with --mix: training tokens to write (default: all that the weights\n"
    "                        allow without repeating a source; more repeats the smaller ones)\n"
    "  --val-fraction X      held out (default 0.05): documents by a hash of their text; documents\n"
    "                        of 64 KiB or more give the tail X of their text\n"
    "  --seed S              held-out choice, document order and mix (default 1337)\n"
    "  --shard-tokens N      tokens per shard at most (default 100000000)\n"
    "  --progress-every S    when stderr is not a terminal, a progress line every S seconds\n"
    "                        (default 5; on a terminal the line is redrawn in place)\n"
    "  --quiet               no progress\n"
    "Ctrl-C stops it: the temporary files (OUT/.prepare-tmp) and any shard written are removed.\n";

/* Copies s with \n, \t and \\ turned into their characters. */
static char *unescape(const char *s) {
    char *o = malloc(strlen(s) + 1), *p = o;
    if (!o) return NULL;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == 'n' || s[1] == 't' || s[1] == '\\')) {
            *p++ = s[1] == 'n' ? '\n' : s[1] == 't' ? '\t' : '\\';
            s++;
        } else {
            *p++ = *s;
        }
    }
    *p = '\0';
    return o;
}

/* The flags that are not fields of alloy_prepare_options. */
typedef struct prep_args {
    cli_list inputs;
    const char *out, *tokname, *format, *field, *separator, *norm, *dedup, *mix, *dedup_log;
    bool no_eot;
} prep_args;

/* A usage error from one of the library's option parsers (its message starts with the option). */
static int spec_usage(void) { return cli_usage("prepare", "--%s", alloy_last_error()); }

/* Fills o from the flags: sources into S, the unescaped separator into *sep. 0 or the exit status. */
static int fill_options(alloy_prepare_options *o, const prep_args *a, cli_flag *flags, int nf, alloy_prepare_sources *S,
                        char **sep) {
    if (!a->inputs.n || !a->out) return cli_usage("prepare", "--input and --out are required");
    alloy_status s = alloy_prepare_sources_parse(S, a->inputs.items, a->inputs.n);
    if (s) return cli_fail("prepare", s);
    if (a->mix && alloy_prepare_mix_parse(S, a->mix)) return spec_usage();
    if (!a->mix && cli_find(flags, nf, "mix-tokens")->seen) return cli_usage("prepare", "--mix-tokens needs --mix");
    if (alloy_doc_format_parse(a->format, &o->reader.format) || alloy_norm_form_parse(a->norm, &o->norm) ||
        alloy_prepare_dedup_parse(o, a->dedup))
        return spec_usage();
    if (a->separator && !(*sep = unescape(a->separator))) return cli_fail("prepare", ALLOY_STATUS_NOMEM);
    if (cli_find(flags, nf, "minhash-perm")->seen && !cli_find(flags, nf, "minhash-bands")->seen) {
        // keep 8 rows per band unless told otherwise
        o->dedup.bands = o->dedup.permutations % 8 == 0 ? o->dedup.permutations / 8 : o->dedup.permutations;
    }
    if (o->dedup.bands > 0) o->dedup.rows = o->dedup.permutations / o->dedup.bands;
    if (o->dedup.bands <= 0 || o->dedup.rows * o->dedup.bands != o->dedup.permutations)
        return cli_usage("prepare", "--minhash-bands must divide --minhash-perm (%d)", o->dedup.permutations);
    o->mix = a->mix != NULL;
    o->reader.field = a->field;
    o->reader.separator = *sep;
    o->dedup_log = a->dedup_log;
    o->eot = !a->no_eot;
    o->sources = S->v;
    o->n_sources = S->n;
    o->out_dir = a->out;
    return 0;
}

/* Tokenizes and writes the shards; prints the report (*halted: a stop ended it, nothing written). */
static alloy_status run_prepare(const alloy_prepare_options *o, const char *tokname, bool *halted) {
    alloy_tokenizer *tok = NULL;
    alloy_prepare_report rep;
    alloy_status s = alloy_tokenizer_load(&tok, tokname);
    if (!s) s = alloy_prepare(o, tok, &rep);
    alloy_tokenizer_destroy(tok);
    if (s) return s;
    if ((*halted = rep.stopped)) {
        fprintf(stderr, "alloy prepare: interrupted; nothing written\n");
        return ALLOY_STATUS_OK;
    }
    fprintf(stderr,
            "prepared %s: %llu files (%llu binary skipped), %llu documents, %.2f MB; dropped %llu empty, %llu exact and "
            "%llu near duplicates, skipped %llu malformed records; %llu training tokens in %d shard(s), %llu held-out "
            "tokens in %d shard(s) (%.1f s, %.1f MB/s)\n",
            o->out_dir, (unsigned long long)rep.files, (unsigned long long)rep.skipped_files, (unsigned long long)rep.docs,
            rep.bytes / 1e6, (unsigned long long)rep.dropped_empty, (unsigned long long)rep.dropped_exact,
            (unsigned long long)rep.dropped_near, (unsigned long long)rep.malformed, (unsigned long long)rep.train_tokens,
            rep.train_shards, (unsigned long long)rep.val_tokens, rep.val_shards, rep.seconds,
            rep.bytes / 1e6 / (rep.seconds + 1e-9));
    return ALLOY_STATUS_OK;
}

int cmd_prepare(int argc, char **argv) {
    alloy_prepare_options o = alloy_prepare_defaults();
    prep_args a = {.tokname = "bytes", .format = "auto", .norm = "nfc", .dedup = "none"};
    cli_flag flags[] = {
        {"input", CLI_LIST, &a.inputs, false},     {"out", CLI_STR, &a.out, false},
        {"tokenizer", CLI_STR, &a.tokname, false}, {"format", CLI_STR, &a.format, false},
        {"field", CLI_STR, &a.field, false},       {"separator", CLI_STR, &a.separator, false},
        {"normalize", CLI_STR, &a.norm, false},    {"dedup", CLI_STR, &a.dedup, false},
        {"minhash-shingle", CLI_INT, &o.dedup.shingle, false}, {"minhash-perm", CLI_INT, &o.dedup.permutations, false},
        {"minhash-bands", CLI_INT, &o.dedup.bands, false}, {"minhash-threshold", CLI_DBL, &o.dedup.threshold, false},
        {"dedup-log", CLI_STR, &a.dedup_log, false}, {"no-eot", CLI_BOOL, &a.no_eot, false},
        {"mix", CLI_STR, &a.mix, false},           {"mix-tokens", CLI_U64, &o.mix_tokens, false},
        {"val-fraction", CLI_DBL, &o.val_fraction, false}, {"seed", CLI_U64, &o.seed, false},
        {"shard-tokens", CLI_U64, &o.shard_tokens, false}, {"quiet", CLI_BOOL, &o.quiet, false},
        {"progress-every", CLI_DBL, &o.progress_seconds, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    alloy_prepare_sources S = {0};
    char *sep = NULL;
    int r = cli_parse("prepare", argc, argv, flags, nf, help, NULL);
    int rc = r ? (r == 1 ? 0 : r) : fill_options(&o, &a, flags, nf, &S, &sep);
    if (!r && !rc && !(o.progress_seconds >= 0.0)) rc = cli_usage("prepare", "--progress-every must be >= 0");
    if (!r && !rc) {
        o.stop = cli_catch_stop();
        bool halted = false;
        alloy_status s = run_prepare(&o, a.tokname, &halted);
        if (s) rc = cli_fail("prepare", s);
        else if (halted) rc = 130;
    }
    alloy_prepare_sources_free(&S);
    free(sep);
    cli_free_lists(flags, nf);
    return rc;
}
