/*
 * prepare.c — `alloy prepare`: text files or folders in, token shards out.
 */
#include "cli.h"
#include "alloy/data.h"

#include <stdlib.h>

static const char help[] =
    "usage: alloy prepare --input PATH... --out DIR [flags]\n"
    "\n"
    "Tokenizes text into token shards for `alloy train`. Each PATH is a file or a folder\n"
    "(searched recursively in name order; binary files are skipped). The tail of each file\n"
    "(--val-fraction of its bytes, cut at a line end) goes to held-out shards.\n"
    "Writes DIR/train-NNNNN.bin, DIR/val-NNNNN.bin and DIR/manifest.json; DIR must not\n"
    "already hold shards.\n"
    "\n"
    "  --input PATH...       files or folders (repeatable)\n"
    "  --out DIR             output folder\n"
    "  --tokenizer NAME      bytes (default; vocabulary 256)\n"
    "  --val-fraction X      held-out share of each file (default 0.05)\n"
    "  --shard-tokens N      tokens per shard at most (default 100000000)\n"
    "  --quiet               no progress\n";

int cmd_prepare(int argc, char **argv) {
    cli_list inputs = {0};
    const char *out = NULL, *tokname = "bytes";
    double val_fraction = 0.05;
    uint64_t shard_tokens = 100000000ULL;
    bool quiet = false;
    cli_flag flags[] = {
        {"input", CLI_LIST, &inputs, false},       {"out", CLI_STR, &out, false},
        {"tokenizer", CLI_STR, &tokname, false},   {"val-fraction", CLI_DBL, &val_fraction, false},
        {"shard-tokens", CLI_U64, &shard_tokens, false}, {"quiet", CLI_BOOL, &quiet, false},
    };
    int r = cli_parse("prepare", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) {
        free(inputs.items);
        return r == 1 ? 0 : r;
    }
    if (!inputs.n || !out) {
        free(inputs.items);
        return cli_usage("prepare", "--input and --out are required");
    }
    alloy_tokenizer *tok;
    alloy_status s = alloy_tokenizer_create(&tok, tokname);
    if (s) {
        free(inputs.items);
        return cli_fail("prepare", s);
    }
    alloy_prepare_options opt = {inputs.items, inputs.n, out, val_fraction, shard_tokens, quiet};
    alloy_prepare_report rep;
    double t0 = alloy_time_now();
    s = alloy_prepare(&opt, tok, &rep);
    alloy_tokenizer_destroy(tok);
    free(inputs.items);
    if (s) return cli_fail("prepare", s);
    fprintf(stderr,
            "prepared %s: %llu files (%llu skipped as binary or empty), %.2f MB -> %llu train tokens in %d shard(s), "
            "%llu held-out tokens in %d shard(s) (%.1f s)\n",
            out, (unsigned long long)rep.files, (unsigned long long)rep.skipped_files, rep.bytes / 1e6,
            (unsigned long long)rep.train_tokens, rep.train_shards, (unsigned long long)rep.val_tokens, rep.val_shards,
            alloy_time_now() - t0);
    return 0;
}
