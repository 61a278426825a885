/*
 * tokenizer.c — `alloy tokenizer encode | decode | train | info`.
 */
#include "cli.h"
#include "alloy/data.h"
#include "alloy/tokenizer.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
    "usage: alloy tokenizer encode --tokenizer PATH [--input FILE] [--allow-special] [--threads N]\n"
    "       alloy tokenizer decode --tokenizer PATH [--input FILE]\n"
    "       alloy tokenizer train --input PATH... --vocab-size N --out tokenizer.json [flags]\n"
    "       alloy tokenizer info --tokenizer PATH\n"
    "\n"
    "PATH is a tokenizer.json, a folder holding tokenizer.json or GPT-2's encoder.json + vocab.bpe,\n"
    "\"bytes\", or a model: a checkpoint folder or a run folder (its latest checkpoint), whose\n"
    "tokenizer is used. Text is read as bytes; invalid UTF-8 is replaced by U+FFFD before encoding.\n"
    "\n"
    "encode   prints the ids of FILE (default: standard input) as one JSON array\n"
    "  --allow-special       special tokens in the text (<|endoftext|>) become their ids; without it\n"
    "                        their text is encoded like any other text\n"
    "  --threads N           encode a large input with N threads (same ids)\n"
    "decode   reads a JSON array of ids from FILE (default: standard input), prints the text\n"
    "train    learns a byte-level BPE (GPT-2's pre-tokenizer) from files or folders\n"
    "  --vocab-size N        final vocabulary, special tokens included\n"
    "  --special TEXT...     special tokens to add (default: <|endoftext|>; --special \"\" for none)\n"
    "  --min-frequency N     merge only pairs seen this often (default 2)\n"
    "  --quiet               no progress\n"
    "info     prints the kind, vocabulary size, fingerprint, pre-tokenizer regex and special tokens\n"
    "         (the merges are in the tokenizer's file)\n";

/* The whole of FILE, or of standard input when path is NULL or "-". */
static alloy_status read_input(const char *path, char **text, size_t *n) {
    if (path && strcmp(path, "-") != 0) return alloy_file_read_all(path, text, n);
    size_t cap = 1 << 16, len = 0;
    char *buf = alloy_malloc(cap);
    if (!buf) return ALLOY_STATUS_NOMEM;
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = alloy_realloc(buf, len, 2 * cap);
            if (!nb) {
                alloy_free(buf);
                return ALLOY_STATUS_NOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(0, buf + len, cap - len - 1);
        if (r < 0) {
            alloy_free(buf);
            return alloy_fail(ALLOY_STATUS_IO, "standard input: read error");
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    *text = buf;
    *n = len;
    return ALLOY_STATUS_OK;
}

/* Encodes the input and prints the ids. With bench > 0 (the hidden --bench N of
 * bench/tokenizer_bench.sh) it first encodes once to warm up, then N more times, and reports the
 * best time of the encode alone (no reading, loading or printing) on stderr:
 * "bench: T threads, B bytes, N ids, best S s of N, M MB/s" (MB = 10^6 bytes). */
static int do_encode(alloy_tokenizer *tok, const char *input, bool allow_special, int threads, int bench) {
    char *text;
    size_t n;
    alloy_status s = read_input(input, &text, &n);
    if (s) return cli_fail("tokenizer", s);
    unsigned flags = allow_special ? ALLOY_ENCODE_ALLOW_SPECIAL : 0;
    alloy_ids ids = {0};
    double best = 0;
    for (int rep = 0; rep <= bench && !s; rep++) { // rep 0 is the warm-up; the last rep is printed
        alloy_ids_free(&ids); // each rep grows its own array, as a real call would
        double t0 = alloy_time_now();
        s = alloy_tokenizer_encode_parallel(tok, text, n, flags, threads, &ids);
        double dt = alloy_time_now() - t0;
        if (rep == 1 || (rep > 1 && dt < best)) best = dt;
    }
    alloy_free(text);
    if (s) {
        alloy_ids_free(&ids);
        return cli_fail("tokenizer", s);
    }
    if (bench > 0)
        fprintf(stderr, "bench: %d threads, %zu bytes, %zu ids, best %.4f s of %d, %.3f MB/s\n", threads, n, ids.n, best,
                bench, best > 0 ? (double)n / best / 1e6 : 0.0);
    char *json;
    size_t len;
    s = alloy_ids_to_json(ids.data, ids.n, &json, &len);
    alloy_ids_free(&ids);
    if (s) return cli_fail("tokenizer", s);
    fwrite(json, 1, len, stdout);
    putchar('\n');
    alloy_free(json);
    return 0;
}

static int do_decode(alloy_tokenizer *tok, const char *input) {
    char *text, *out = NULL;
    size_t n, len = 0;
    alloy_status s = read_input(input, &text, &n);
    if (s) return cli_fail("tokenizer", s);
    alloy_ids ids = {0};
    s = alloy_ids_from_json(text, n, input && strcmp(input, "-") ? input : "standard input", &ids);
    alloy_free(text);
    if (!s) s = alloy_tokenizer_decode(tok, ids.data, ids.n, &out, &len);
    alloy_ids_free(&ids);
    if (s) return cli_fail("tokenizer", s);
    fwrite(out, 1, len, stdout);
    alloy_free(out);
    return 0;
}

static int do_info(const alloy_tokenizer *tok) {
    char *text;
    alloy_status s = alloy_tokenizer_describe(tok, &text);
    if (s) return cli_fail("tokenizer", s);
    fputs(text, stdout);
    alloy_free(text);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            fputs(help, stdout);
            return 0;
        }
        return cli_usage("tokenizer", "expects encode, decode, train or info");
    }
    const char *sub = argv[1];
    const char *tok_path = NULL, *out = NULL;
    bool allow_special = false, quiet = false;
    int threads = 0, vocab_size = 0, min_freq = 2, bench = 0;
    cli_list inputs = {0}, specials = {0};
    cli_flag flags[] = {
        {"tokenizer", CLI_STR, &tok_path, false}, {"input", CLI_LIST, &inputs, false},
        {"allow-special", CLI_BOOL, &allow_special, false}, {"threads", CLI_INT, &threads, false},
        {"out", CLI_STR, &out, false},            {"vocab-size", CLI_INT, &vocab_size, false},
        {"special", CLI_LIST, &specials, false},  {"min-frequency", CLI_INT, &min_freq, false},
        {"quiet", CLI_BOOL, &quiet, false},       {"bench", CLI_INT, &bench, false}, // hidden: bench/tokenizer_bench.sh
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("tokenizer", argc - 1, argv + 1, flags, nf, help, NULL);
    int rc = r == 1 ? 0 : r;
    if (r) {
    } else if (threads < 0) {
        rc = cli_usage("tokenizer", "--threads must be >= 0");
    } else if (bench < 0 || (bench > 0 && strcmp(sub, "encode"))) {
        rc = cli_usage("tokenizer", "--bench N is for encode, N >= 1");
    } else if (!strcmp(sub, "train")) {
        rc = !inputs.n || !out || vocab_size <= 0
                 ? cli_usage("tokenizer", "train needs --input, --vocab-size and --out")
                 : cmd_tokenizer_train(inputs.items, inputs.n, vocab_size, specials.items, specials.n, min_freq, quiet, out);
    } else if (strcmp(sub, "encode") && strcmp(sub, "decode") && strcmp(sub, "info")) {
        rc = cli_usage("tokenizer", "unknown subcommand '%s' (encode, decode, train, info)", sub);
    } else if (!tok_path) {
        rc = cli_usage("tokenizer", "--tokenizer is required");
    } else if (inputs.n > 1) {
        rc = cli_usage("tokenizer", "%s reads one --input", sub);
    } else {
        alloy_tokenizer *tok = NULL;
        alloy_status s = alloy_checkpoint_load_tokenizer(tok_path, &tok); // a tokenizer, or a model path's
        const char *input = inputs.n ? inputs.items[0] : NULL;
        if (s) rc = cli_fail("tokenizer", s);
        else if (!strcmp(sub, "encode")) rc = do_encode(tok, input, allow_special, threads, bench);
        else if (!strcmp(sub, "decode")) rc = do_decode(tok, input);
        else rc = do_info(tok);
        alloy_tokenizer_destroy(tok);
    }
    cli_free_lists(flags, nf);
    return rc;
}
