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
    "  --input [NAME=]PATH...  files or folders (searched recursively, binary files skipped); NAME\n"
    "                        groups them into a source (default: the file name without extension)\n"
    "  --format F            auto (default: .jsonl JSONL, .json a JSON array, else text), text,\n"
    "                        jsonl, json\n"
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
    "  --quiet               no progress\n";

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

/* The default name of a source: the file or folder name without its extension. */
static void default_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *b = path;
    for (size_t i = 0; i < n; i++)
        if (path[i] == '/') b = path + i + 1;
    size_t len = (size_t)(path + n - b);
    const char *dot = memchr(b, '.', len);
    if (dot && dot > b) len = (size_t)(dot - b);
    if (len >= cap) len = cap - 1;
    memcpy(out, b, len);
    out[len] = '\0';
}

typedef struct srcs {
    alloy_prepare_source *v;
    char (*names)[128];
    const char ***paths;
    int n;
} srcs;

static int find_source(const srcs *s, const char *name) {
    for (int k = 0; k < s->n; k++)
        if (!strcmp(s->names[k], name)) return k;
    return -1;
}

int cmd_prepare(int argc, char **argv) {
    alloy_prepare_options o = alloy_prepare_defaults();
    cli_list inputs = {0};
    const char *out = NULL, *tokname = "bytes", *format = "auto", *field = NULL, *separator = NULL, *norm = "nfc";
    const char *dedup = "none", *mix = NULL, *dedup_log = NULL;
    bool no_eot = false;
    cli_flag flags[] = {
        {"input", CLI_LIST, &inputs, false},
        {"out", CLI_STR, &out, false},
        {"tokenizer", CLI_STR, &tokname, false},
        {"format", CLI_STR, &format, false},
        {"field", CLI_STR, &field, false},
        {"separator", CLI_STR, &separator, false},
        {"normalize", CLI_STR, &norm, false},
        {"dedup", CLI_STR, &dedup, false},
        {"minhash-shingle", CLI_INT, &o.dedup.shingle, false},
        {"minhash-perm", CLI_INT, &o.dedup.permutations, false},
        {"minhash-bands", CLI_INT, &o.dedup.bands, false},
        {"minhash-threshold", CLI_DBL, &o.dedup.threshold, false},
        {"dedup-log", CLI_STR, &dedup_log, false},
        {"no-eot", CLI_BOOL, &no_eot, false},
        {"mix", CLI_STR, &mix, false},
        {"mix-tokens", CLI_U64, &o.mix_tokens, false},
        {"val-fraction", CLI_DBL, &o.val_fraction, false},
        {"seed", CLI_U64, &o.seed, false},
        {"shard-tokens", CLI_U64, &o.shard_tokens, false},
        {"quiet", CLI_BOOL, &o.quiet, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    srcs S = {0};
    char *sep = NULL;
    alloy_tokenizer *tok = NULL;
    int rc = cli_parse("prepare", argc, argv, flags, nf, help, NULL);
    if (rc) {
        rc = rc == 1 ? 0 : rc;
        goto done;
    }
    if (!inputs.n || !out) {
        rc = cli_usage("prepare", "--input and --out are required");
        goto done;
    }
    // sources: NAME=PATH groups paths under NAME, in order of first appearance
    S.v = calloc((size_t)inputs.n, sizeof *S.v);
    S.names = calloc((size_t)inputs.n, sizeof *S.names);
    S.paths = calloc((size_t)inputs.n, sizeof *S.paths);
    for (int i = 0; i < inputs.n; i++) {
        const char *arg = inputs.items[i], *eq = strchr(arg, '='), *path = arg;
        char name[128];
        if (eq && eq > arg && (size_t)(eq - arg) < sizeof name && !memchr(arg, '/', (size_t)(eq - arg))) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = '\0';
            path = eq + 1;
        } else {
            default_name(arg, name, sizeof name);
        }
        int k = find_source(&S, name);
        if (k < 0) {
            k = S.n++;
            strcpy(S.names[k], name);
            S.paths[k] = calloc((size_t)inputs.n, sizeof(char *));
            S.v[k].name = S.names[k];
            S.v[k].paths = S.paths[k];
        }
        S.paths[k][S.v[k].n_paths++] = path;
    }
    if (mix) { // NAME:W,NAME:W
        o.mix = true;
        for (const char *p = mix; *p;) {
            const char *colon = strchr(p, ':'), *comma = strchr(p, ',');
            if (!colon || (comma && comma < colon)) {
                rc = cli_usage("prepare", "--mix expects NAME:WEIGHT,NAME:WEIGHT (got '%s')", mix);
                goto done;
            }
            char name[128];
            size_t nl = (size_t)(colon - p);
            if (nl >= sizeof name) nl = sizeof name - 1;
            memcpy(name, p, nl);
            name[nl] = '\0';
            char *end;
            double wgt = strtod(colon + 1, &end);
            if (end == colon + 1 || (*end && *end != ',') || !(wgt >= 0) || !isfinite(wgt)) {
                rc = cli_usage("prepare", "--mix: weight of %s is not a number >= 0", name);
                goto done;
            }
            int k = find_source(&S, name);
            if (k < 0) {
                rc = cli_usage("prepare", "--mix names %s, which is not a source (NAME=PATH in --input)", name);
                goto done;
            }
            S.v[k].weight = wgt;
            p = *end ? end + 1 : end;
        }
        double total = 0;
        for (int k = 0; k < S.n; k++) total += S.v[k].weight;
        if (!(total > 0)) {
            rc = cli_usage("prepare", "--mix: the weights add up to 0");
            goto done;
        }
    } else if (cli_find(flags, nf, "mix-tokens")->seen) {
        rc = cli_usage("prepare", "--mix-tokens needs --mix");
        goto done;
    }
    if (!strcmp(format, "auto")) o.reader.format = ALLOY_DOC_AUTO;
    else if (!strcmp(format, "text")) o.reader.format = ALLOY_DOC_TEXT;
    else if (!strcmp(format, "jsonl")) o.reader.format = ALLOY_DOC_JSONL;
    else if (!strcmp(format, "json")) o.reader.format = ALLOY_DOC_JSON;
    else {
        rc = cli_usage("prepare", "--format must be auto, text, jsonl or json");
        goto done;
    }
    o.reader.field = field;
    if (separator) {
        sep = unescape(separator);
        o.reader.separator = sep;
    }
    if (!strcmp(norm, "nfc")) o.norm = ALLOY_NORM_NFC;
    else if (!strcmp(norm, "nfkc")) o.norm = ALLOY_NORM_NFKC;
    else if (!strcmp(norm, "none")) o.norm = ALLOY_NORM_NONE;
    else {
        rc = cli_usage("prepare", "--normalize must be nfc, nfkc or none");
        goto done;
    }
    if (strcmp(dedup, "none")) {
        for (const char *p = dedup; *p;) {
            size_t l = strcspn(p, ",");
            if (l == 5 && !strncmp(p, "exact", 5)) o.dedup_exact = true;
            else if (l == 7 && !strncmp(p, "minhash", 7)) o.dedup_minhash = true;
            else {
                rc = cli_usage("prepare", "--dedup takes exact, minhash, both (exact,minhash) or none");
                goto done;
            }
            p += l + (p[l] == ',');
        }
    }
    if (cli_find(flags, nf, "minhash-perm")->seen && !cli_find(flags, nf, "minhash-bands")->seen) {
        // keep 8 rows per band unless told otherwise
        o.dedup.bands = o.dedup.permutations % 8 == 0 ? o.dedup.permutations / 8 : o.dedup.permutations;
    }
    if (o.dedup.bands > 0) o.dedup.rows = o.dedup.permutations / o.dedup.bands;
    if (o.dedup.bands <= 0 || o.dedup.rows * o.dedup.bands != o.dedup.permutations) {
        rc = cli_usage("prepare", "--minhash-bands must divide --minhash-perm (%d)", o.dedup.permutations);
        goto done;
    }
    o.dedup_log = dedup_log;
    o.eot = !no_eot;
    o.sources = S.v;
    o.n_sources = S.n;
    o.out_dir = out;
    alloy_status s = alloy_tokenizer_load(&tok, tokname);
    if (s) {
        rc = cli_fail("prepare", s);
        goto done;
    }
    alloy_prepare_report rep;
    s = alloy_prepare(&o, tok, &rep);
    if (s) {
        rc = cli_fail("prepare", s);
        goto done;
    }
    fprintf(stderr,
            "prepared %s: %llu files (%llu binary skipped), %llu documents, %.2f MB; dropped %llu empty, %llu exact and "
            "%llu near duplicates, skipped %llu malformed records; %llu training tokens in %d shard(s), %llu held-out "
            "tokens in %d shard(s) (%.1f s, %.1f MB/s)\n",
            out, (unsigned long long)rep.files, (unsigned long long)rep.skipped_files, (unsigned long long)rep.docs,
            rep.bytes / 1e6, (unsigned long long)rep.dropped_empty, (unsigned long long)rep.dropped_exact,
            (unsigned long long)rep.dropped_near, (unsigned long long)rep.malformed, (unsigned long long)rep.train_tokens,
            rep.train_shards, (unsigned long long)rep.val_tokens, rep.val_shards, rep.seconds,
            rep.bytes / 1e6 / (rep.seconds + 1e-9));
done:
    alloy_tokenizer_destroy(tok);
    for (int k = 0; k < S.n; k++) free(S.paths[k]);
    free(S.paths);
    free(S.names);
    free(S.v);
    free(sep);
    free(inputs.items);
    return rc;
}
