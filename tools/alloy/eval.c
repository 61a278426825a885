/*
 * eval.c — `alloy eval`: held-out loss and perplexity of a model on token shards.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char help[] =
    "usage: alloy eval --model DIR --data SHARDS [flags]\n"
    "\n"
    "Scores a model on token shards (alloy prepare): every window of T + 1 tokens of the split,\n"
    "in order, once; prints the mean loss per target token (nats), the perplexity exp(loss) and\n"
    "the tokens scored, as one JSON line on stdout (with --quiet only that) and a summary on stderr.\n"
    "The result does not depend on --batch.\n"
    "\n"
    "  --model DIR           checkpoint folder or run folder (its latest checkpoint)\n"
    "  --data DIR            token shards: val-*.bin is the held-out split\n"
    "  --split val|train     which split to score (default val)\n"
    "  --val-fraction X      without val-*.bin shards, the share of training windows held out,\n"
    "                        as in alloy train (default 0.05)\n"
    "  --seq T               tokens per window (default: the model's context, at most 1024)\n"
    "  --batch B             windows per forward pass (default 8)\n"
    "  --max-windows N       score only the first N windows (default: all)\n"
    "  --threads N           OpenMP threads (default: all cores)\n"
    "  --quiet               no summary on stderr\n";

/* dir itself when it holds a checkpoint, else a run folder's latest (alloy_free it). */
static alloy_status checkpoint_dir(const char *dir, char **out) {
    char *cfg = alloy_path_join(dir, "config.json");
    alloy_status s = ALLOY_STATUS_OK;
    if (!cfg) return ALLOY_STATUS_NOMEM;
    if (alloy_path_exists(cfg)) *out = alloy_strdup(dir);
    else if (!alloy_path_exists(dir)) s = alloy_fail(ALLOY_STATUS_IO, "%s: no such folder", dir);
    else s = alloy_run_latest(dir, out);
    alloy_free(cfg);
    return s;
}

int cmd_eval(int argc, char **argv) {
    const char *model_dir = NULL, *data = NULL, *split_name = "val";
    int T = 0, B = 8, threads = 0;
    int64_t max_windows = 0;
    double val_fraction = 0.05;
    bool quiet = false;
    cli_flag flags[] = {
        {"model", CLI_STR, &model_dir, false},   {"data", CLI_STR, &data, false},
        {"split", CLI_STR, &split_name, false},  {"val-fraction", CLI_DBL, &val_fraction, false},
        {"seq", CLI_INT, &T, false},             {"batch", CLI_INT, &B, false},
        {"max-windows", CLI_I64, &max_windows, false}, {"threads", CLI_INT, &threads, false},
        {"quiet", CLI_BOOL, &quiet, false},
    };
    int r = cli_parse("eval", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model_dir || !data) return cli_usage("eval", "--model and --data are required");
    bool val = !strcmp(split_name, "val");
    if (!val && strcmp(split_name, "train")) return cli_usage("eval", "--split must be val or train");
    if (B < 1 || T < 0 || max_windows < 0) return cli_usage("eval", "--batch must be >= 1, --seq and --max-windows >= 0");
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) return cli_usage("eval", "--val-fraction must lie in [0, 1)");
    cli_set_threads(threads);

    char *dir = NULL;
    alloy_config cfg;
    alloy_model *m = NULL;
    alloy_dataset *ds = NULL;
    alloy_eval_result res;
    alloy_status s = checkpoint_dir(model_dir, &dir);
    if (!s) {
        char *cp = alloy_path_join(dir, "config.json");
        s = cp ? alloy_config_load(&cfg, cp) : ALLOY_STATUS_NOMEM;
        alloy_free(cp);
    }
    if (!s) {
        if (T == 0) T = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
        if (T > cfg.max_seq_len)
            s = alloy_fail(ALLOY_STATUS_USAGE, "--seq %d exceeds the model's context of %d", T, cfg.max_seq_len);
    }
    if (!s) s = alloy_model_load(&m, dir, B, T);
    if (!s) s = alloy_dataset_open(&ds, data, val_fraction);
    if (!s) s = alloy_eval_lm(m, ds, val ? ALLOY_SPLIT_VAL : ALLOY_SPLIT_TRAIN, B, T, max_windows, &res);
    if (!s) {
        printf("{\"model\":\"%s\",\"data\":\"%s\",\"split\":\"%s\",\"seq\":%d,\"windows\":%lld,\"tokens\":%lld,"
               "\"loss\":%.6f,\"perplexity\":%.4f}\n",
               dir, data, split_name, T, (long long)res.windows, (long long)res.tokens, res.loss, res.perplexity);
        if (!quiet)
            fprintf(stderr, "alloy eval: %s on %s (%s): loss %.4f, perplexity %.3f over %lld tokens\n", dir, data,
                    split_name, res.loss, res.perplexity, (long long)res.tokens);
    }
    alloy_dataset_close(ds);
    alloy_model_destroy(m);
    alloy_free(dir);
    return s ? cli_fail("eval", s) : 0;
}
