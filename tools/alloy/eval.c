/*
 * eval.c — `alloy eval`: held-out loss and perplexity of a model on token shards.
 */
#include "cli.h"
#include "alloy/ensemble.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy eval --model DIR [DIR ...] --data SHARDS [flags]\n"
    "\n"
    "Scores a model on token shards (alloy prepare): every window of T + 1 tokens of the split,\n"
    "in order, once; prints the mean loss per target token (nats), the perplexity exp(loss), the\n"
    "windows scored of the split's (\"windows\", \"windows_total\") and the tokens, as one JSON line\n"
    "on stdout (with --quiet only that) and a summary on stderr. (alloy train's periodic held-out\n"
    "loss covers the first --eval-batches x --batch windows; this scores them all.)\n"
    "The result does not depend on --batch. Several models are scored as one ensemble (they must\n"
    "share the vocabulary and tokenizer): a mixture of their probabilities, or one softmax of\n"
    "their weighted logits, or with per-token weights from a learned combiner (alloy ensemble train).\n"
    "With --weights an ensemble (probs or logits) is scored as generate runs one: an ensemble engine\n"
    "over one inference engine per model, every member's matrices in that format.\n"
    "\n"
    "  --model DIR ...       checkpoint folders or run folders (their latest checkpoint)\n"
    "  --member-weights W ...  ensemble weights, one per model (default equal; normalised)\n"
    "  --ensemble MODE       probs (default: Σ wᵢ·pᵢ), logits (softmax of Σ wᵢ·zᵢ) or learned\n"
    "                        (Σ gᵢ·pᵢ, g per token from --combiner's gate over the hidden states)\n"
    "  --combiner DIR        the learned combiner (alloy ensemble train) for --ensemble learned; the\n"
    "                        models must be its members, in its order\n"
    "  --weights FORMAT      score through the inference engine with the matrices in FORMAT: f32,\n"
    "                        f16, q8_0, q4_0 or q4_k (as alloy generate --weights), for one model or\n"
    "                        every member of a probs or logits ensemble (not learned). Without it\n"
    "                        the training forward (fp32) scores the models\n"
    "  --data DIR            token shards: val-*.bin is the held-out split\n"
    "  --split val|train     which split to score (default val)\n"
    "  --val-fraction X      without val-*.bin shards, the share of training windows held out,\n"
    "                        as in alloy train (default 0.05)\n"
    "  --seq T               tokens per window (default: the model's context, at most 1024)\n"
    "  --batch B             windows per forward pass (default 8; 1 for an ensemble, whose members\n"
    "                        each hold B·T·V logits; with --weights the engine takes one at a time)\n"
    "  --max-windows N       score only the first N windows (default: all)\n"
    "  --threads N           OpenMP threads (default: all cores)\n"
    "  --quiet               no summary on stderr\n";

#define MAX_MEMBERS ALLOY_ENGINE_MAX_MEMBERS

/* How the models are scored: through the engine (format), alone, or as an ensemble. */
typedef struct eval_how {
    const char *format;     /* --weights, or NULL: the training forward */
    alloy_qtype qtype;      /* its format */
    const float *weights;   /* --member-weights (n), or NULL: equal */
    alloy_ensemble_mode mode;
    const char *combiner;   /* --combiner DIR (mode LEARNED), or NULL */
} eval_how;

static int eval_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args);

int cmd_eval(int argc, char **argv) {
    cli_list model_dirs = {0}, weight_args = {0};
    int rc = eval_main(argc, argv, &model_dirs, &weight_args);
    free(model_dirs.items);
    free(weight_args.items);
    return rc;
}

/* Opens the n checkpoints into cks (the caller closes them) and loads their models into ms
 * (the caller destroys them), for an engine (one row: it keeps its own activations) or for
 * the training forward (B x *T). *T: --seq, or member 0's context (at most 1024) if 0. */
static alloy_status open_members(alloy_checkpoint **cks, alloy_model **ms, const cli_list *model_dirs, bool engine,
                                 int B, int *T) {
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < model_dirs->n && !s; i++) {
        s = alloy_checkpoint_open(&cks[i], model_dirs->items[i]);
        if (s) break;
        const alloy_config *cfg = &cks[i]->config;
        if (!*T) *T = cfg->max_seq_len < 1024 ? cfg->max_seq_len : 1024;
        if (*T > cfg->max_seq_len)
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: --seq %d exceeds the model's context of %d", cks[i]->dir, *T,
                           cfg->max_seq_len);
        if (!s) s = engine ? alloy_model_load(&ms[i], cks[i]->dir, 1, 1) : alloy_model_load(&ms[i], cks[i]->dir, B, *T);
        if (!s && i) s = cli_check_member(cks[0], cks[i]);
    }
    return s;
}

/* Scores the split with one next-token log-probability source (alloy/eval.h): the engine over
 * the models (how->format; one window at a time), the model's training forward (one model), or
 * the fp32 ensemble (probs, logits, or learned with how->combiner), B windows at a time. */
static alloy_status eval_score(alloy_model **ms, int n, const eval_how *how, const alloy_dataset *ds, alloy_split split,
                               int B, int T, int64_t max_windows, alloy_eval_result *res) {
    alloy_engine *engine = NULL;
    alloy_ensemble *ens = NULL;
    alloy_combiner *comb = NULL;
    alloy_logprob_source src = {0};
    alloy_status s = ALLOY_STATUS_OK;
    if (how->format) {
        alloy_engine_options eo = {.weights = how->qtype, .max_ctx = T, .max_rows = T};
        s = cli_engine_create(&engine, ms, n, &eo, how->weights, how->mode);
        if (!s) s = alloy_engine_logprob_source(&src, engine);
        B = 1;
    } else if (n == 1) {
        s = alloy_model_logprob_source(&src, ms[0]);
    } else {
        if (how->combiner) {
            s = alloy_combiner_load(&comb, how->combiner);
            if (!s) s = alloy_ensemble_create_learned(&ens, ms, n, comb);
            if (s) alloy_error_prefix("--combiner %s", how->combiner);
        } else {
            s = alloy_ensemble_create(&ens, ms, how->weights, n, how->mode);
        }
        if (!s) s = alloy_ensemble_logprob_source(&src, ens, B, T);
    }
    if (!s) s = alloy_eval_source(&src, ds, split, B, T, max_windows, res);
    alloy_logprob_source_release(&src);
    alloy_ensemble_destroy(ens);
    alloy_combiner_destroy(comb);
    alloy_engine_destroy(engine);
    return s;
}

/* The JSON line on stdout and, unless quiet, the summary on stderr. */
static void print_result(const eval_how *how, const char *const *dirs, int n, const char *mode_name, const char *data,
                         const char *split_name, int T, const alloy_eval_result *res, bool quiet) {
    printf("{\"model\":\"%s\",", dirs[0]);
    if (how->format) printf("\"weights\":\"%s\",", alloy_qtype_name(how->qtype));
    if (n > 1) {
        printf("\"ensemble\":\"%s\",", mode_name);
        if (how->combiner) printf("\"combiner\":\"%s\",", how->combiner);
        double total = 0.0; // normalised as alloy_ensemble_create and the ensemble engine do
        for (int i = 0; i < n; i++) total += how->weights ? how->weights[i] : 1.0;
        printf("\"members\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"model\":\"%s\"", i ? "," : "", dirs[i]);
            if (!how->combiner) printf(",\"weight\":%.6g", (how->weights ? how->weights[i] : 1.0) / total);
            printf("}");
        }
        printf("],");
    }
    printf("\"data\":\"%s\",\"split\":\"%s\",\"seq\":%d,\"windows\":%lld,\"windows_total\":%lld,\"tokens\":%lld,"
           "\"loss\":%.6f,\"perplexity\":%.4f}\n",
           data, split_name, T, (long long)res->windows, (long long)res->split_windows, (long long)res->tokens, res->loss,
           res->perplexity);
    if (quiet) return;
    char covers[96];
    if (res->windows < res->split_windows)
        snprintf(covers, sizeof covers, "the first %lld of %lld windows", (long long)res->windows, (long long)res->split_windows);
    else
        snprintf(covers, sizeof covers, "all %lld windows", (long long)res->windows);
    fprintf(stderr, "alloy eval: %s%s on %s (%s): loss %.4f, perplexity %.3f over %s of %d tokens (%lld tokens)\n", dirs[0],
            n > 1 ? " and the other members" : "", data, split_name, res->loss, res->perplexity, covers, T + 1,
            (long long)res->tokens);
}

/* cmd_eval's body; cli_parse fills the caller's lists, which the caller frees. */
static int eval_main(int argc, char **argv, cli_list *model_dirs, cli_list *weight_args) {
    const char *data = NULL, *split_name = "val", *mode_name = "probs", *format = NULL, *combiner = NULL;
    int T = 0, B = 8, threads = 0;
    int64_t max_windows = 0;
    double val_fraction = 0.05;
    bool quiet = false;
    cli_flag flags[] = {
        {"model", CLI_LIST, model_dirs, false}, {"data", CLI_STR, &data, false},
        {"member-weights", CLI_LIST, weight_args, false},
        {"weights", CLI_STR, &format, false}, {"ensemble", CLI_STR, &mode_name, false},
        {"combiner", CLI_STR, &combiner, false},
        {"split", CLI_STR, &split_name, false},  {"val-fraction", CLI_DBL, &val_fraction, false},
        {"seq", CLI_INT, &T, false},             {"batch", CLI_INT, &B, false},
        {"max-windows", CLI_I64, &max_windows, false}, {"threads", CLI_INT, &threads, false},
        {"quiet", CLI_BOOL, &quiet, false},
    };
    int r = cli_parse("eval", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (model_dirs->n == 0 || !data) return cli_usage("eval", "--model and --data are required");
    int n = model_dirs->n;
    if (n > MAX_MEMBERS) return cli_usage("eval", "at most %d models", MAX_MEMBERS);
    if (n > 1 && !cli_find(flags, (int)(sizeof flags / sizeof flags[0]), "batch")->seen)
        B = 1; // each member holds B·T·V logits, and the ensemble as many log-probabilities
    eval_how how = {.format = format, .qtype = ALLOY_QTYPE_F32, .combiner = combiner};
    if (format && alloy_qtype_parse(format, &how.qtype))
        return cli_usage("eval", "--weights must be f32, f16, q8_0, q4_0 or q4_k, not '%s'", format);
    if (alloy_ensemble_mode_parse(mode_name, &how.mode)) return cli_usage("eval", "--ensemble must be probs or logits (or learned, with --combiner)");
    if (how.mode == ALLOY_ENSEMBLE_LEARNED && format)
        return cli_usage("eval", "--ensemble learned scores through the training forward (fp32): it takes no --weights "
                                 "(the engine keeps no hidden states for the combiner)");
    if ((how.mode == ALLOY_ENSEMBLE_LEARNED) != (combiner != NULL))
        return cli_usage("eval", "--ensemble learned and --combiner DIR go together");
    if (combiner && (n < 2 || weight_args->n))
        return cli_usage("eval", "--combiner needs its 2 or more member models and no --member-weights");
    float weights[MAX_MEMBERS];
    if (!combiner && (r = cli_ensemble_options("eval", n, weight_args, mode_name, weights, &how.mode)))
        return r; // the same checks and parse as generate's
    if (weight_args->n) how.weights = weights;
    bool val = !strcmp(split_name, "val");
    if (!val && strcmp(split_name, "train")) return cli_usage("eval", "--split must be val or train");
    if (B < 1 || T < 0 || max_windows < 0) return cli_usage("eval", "--batch must be >= 1, --seq and --max-windows >= 0");
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) return cli_usage("eval", "--val-fraction must lie in [0, 1)");
    cli_set_threads(threads);

    alloy_checkpoint *cks[MAX_MEMBERS] = {0};
    alloy_model *ms[MAX_MEMBERS] = {0};
    alloy_dataset *ds = NULL;
    alloy_eval_result res;
    // T: --seq, else member 0's context (at most 1024); every member scores the same windows
    alloy_status s = open_members(cks, ms, model_dirs, format != NULL, B, &T);
    if (!s) s = alloy_dataset_open(&ds, data, val_fraction);
    if (!s) s = eval_score(ms, n, &how, ds, val ? ALLOY_SPLIT_VAL : ALLOY_SPLIT_TRAIN, B, T, max_windows, &res);
    if (!s) {
        const char *dirs[MAX_MEMBERS]; // the checkpoint folders (owned by cks)
        for (int i = 0; i < n; i++) dirs[i] = cks[i]->dir;
        print_result(&how, dirs, n, mode_name, data, split_name, T, &res, quiet);
    }
    alloy_dataset_close(ds);
    for (int i = 0; i < n; i++) {
        alloy_model_destroy(ms[i]);
        alloy_checkpoint_close(cks[i]);
    }
    return s ? cli_fail("eval", s) : 0;
}
