/*
 * ensemble.c — `alloy ensemble train`: learns the per-token gate of an ensemble (a combiner,
 * alloy/ensemble.h) on held-out token shards, the members frozen, and saves it as a folder for
 * alloy eval --ensemble learned and alloy distill --combiner.
 */
#include "cli.h"
#include "alloy/ensemble.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy ensemble train --model A B [C ...] --data DIR --out COMB [flags]\n"
    "\n"
    "Trains a learned combiner: per token, mixing weights g = softmax(W·[h_1; ...; h_N] + b) over\n"
    "the models from their final hidden states h_i (after the final norm), and the ensemble's\n"
    "distribution is the mixture sum_i g_i·p_i. W and b start at 0 (equal weights) and are trained\n"
    "by AdamW on the next-token cross-entropy of the mixture over the training split of DIR; the\n"
    "models stay frozen (forward passes only). DIR should hold text the models were not trained\n"
    "on (a held-out part of their data): a gate fitted on their own training text learns to trust\n"
    "whichever memorised it. The models must share the vocabulary and tokenizer.\n"
    "COMB is a run folder, as every training verb writes: each checkpoint COMB/checkpoints/step-N\n"
    "holds combiner.safetensors (gate.weight (N, sum of widths), gate.bias (N)), combiner.json\n"
    "(the members' paths, fingerprints and widths, and how it was trained) and the optimiser state;\n"
    "COMB/latest names the newest; COMB/metrics.jsonl has one line per step, then the held-out\n"
    "evaluation. --combiner COMB takes the run folder or one checkpoint. At the end it scores\n"
    "the val split of DIR: each model alone, the uniform mixture and the learned gate, printed as\n"
    "one JSON line on stdout. Use it with the same models in the same order:\n"
    "    alloy eval --model A B --ensemble learned --combiner COMB --data ...\n"
    "    alloy distill --teacher A --teacher B --combiner COMB ...\n"
    "\n"
    "  --model DIR ...       2 to 16 checkpoint or run folders, the ensemble's members in order\n"
    "  --data DIR            token shards (alloy prepare): train-*.bin trains the gate, val-*.bin\n"
    "                        (or --val-fraction of it) scores it\n"
    "  --out COMB            the run folder to write (refused if it holds a run)\n"
    "  --steps N             AdamW steps (default 200)\n"
    "  --lr X                peak learning rate (default 1e-2; warm-up over steps/10, cosine to lr/10)\n"
    "  --weight-decay X      on W (default 0)\n"
    "  --batch B             windows per step (default 8)\n"
    "  --seq T               tokens per window (default: 128, at most the models' context)\n"
    "  --seed S              data order (default 1337)\n"
    "  --ckpt-every N        steps between checkpoints (default 0: at the end and on Ctrl-C)\n"
    "  --keep N              checkpoints kept (default 3)\n"
    "  --val-fraction X      without val-*.bin shards, the share of windows held out (default 0.05)\n"
    "  --eval-windows N      held-out windows scored at the end (default 0: all)\n"
    "  --log-every N         progress line every N steps when not on a terminal (default 10)\n"
    "  --threads N           OpenMP threads (default: all cores)\n"
    "  --quiet               no progress on stderr\n";

static int ensemble_train(int argc, char **argv, cli_list *models_);

int cmd_ensemble(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(help, stdout);
        return 0;
    }
    if (argc < 2) return cli_usage("ensemble", "give a subcommand: alloy ensemble train");
    if (strcmp(argv[1], "train")) return cli_usage("ensemble", "unknown subcommand '%s' (alloy ensemble train)", argv[1]);
    cli_list models = {0};
    int rc = ensemble_train(argc - 1, argv + 1, &models);
    free(models.items);
    return rc;
}

/* The body of `alloy ensemble train`; the list cli_parse fills is the caller's to free. */
static int ensemble_train(int argc, char **argv, cli_list *models_) {
    cli_list models = {0};
    const char *data = NULL, *out = NULL;
    int64_t ckpt_every = 0;
    alloy_combiner_train_options o = alloy_combiner_train_defaults();
    double val_fraction = 0.05;
    int threads = 0;
    cli_flag flags[] = {
        {"model", CLI_LIST, &models, false},   {"data", CLI_STR, &data, false},
        {"out", CLI_STR, &out, false},         {"steps", CLI_I64, &o.steps, false},
        {"lr", CLI_DBL, &o.lr, false},         {"weight-decay", CLI_FLOAT, &o.weight_decay, false},
        {"batch", CLI_INT, &o.batch, false},   {"seq", CLI_INT, &o.seq, false},
        {"seed", CLI_U64, &o.seed, false},     {"val-fraction", CLI_DBL, &val_fraction, false},
        {"eval-windows", CLI_I64, &o.eval_windows, false}, {"log-every", CLI_INT, &o.log_every, false},
        {"threads", CLI_INT, &threads, false}, {"quiet", CLI_BOOL, &o.quiet, false},
        {"ckpt-every", CLI_I64, &ckpt_every, false}, {"keep", CLI_INT, &o.keep_ckpts, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("ensemble train", argc, argv, flags, nf, help, NULL);
    *models_ = models;
    if (r) return r == 1 ? 0 : r;
    int n = models.n;
    if (!data || !out || n == 0) return cli_usage("ensemble train", "--model, --data and --out are required");
    if (n < 2 || n > ALLOY_COMBINER_MAX) return cli_usage("ensemble train", "give 2 to %d --model folders", ALLOY_COMBINER_MAX);
    if (o.steps < 1 || o.batch < 1 || o.seq < 0 || o.eval_windows < 0 || o.log_every < 1 || threads < 0)
        return cli_usage("ensemble train", "--steps, --batch and --log-every must be >= 1; --seq, --eval-windows, --threads >= 0");
    if (!(o.lr > 0.0 && o.lr < 10.0)) return cli_usage("ensemble train", "--lr must lie in (0, 10)");
    if (!(o.weight_decay >= 0.0f)) return cli_usage("ensemble train", "--weight-decay must be >= 0");
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) return cli_usage("ensemble train", "--val-fraction must lie in [0, 1)");
    if (strlen(out) >= sizeof o.out_dir) return cli_usage("ensemble train", "--out: path too long");
    strcpy(o.out_dir, out);
    o.ckpt_every = ckpt_every;
    bool seq_given = cli_find(flags, nf, "seq")->seen;
    cli_set_threads(threads);

    alloy_checkpoint *cks[ALLOY_COMBINER_MAX] = {0};
    const char *dirs[ALLOY_COMBINER_MAX] = {0}; // their checkpoint folders (owned by cks)
    alloy_model *ms[ALLOY_COMBINER_MAX] = {0};
    alloy_dataset *ds = NULL;
    alloy_combiner *c = NULL;
    alloy_combiner_report rep;
    alloy_status s = ALLOY_STATUS_OK;
    for (int i = 0; i < n && !s; i++) { // --seq defaults to 128, cut to the shortest context
        s = alloy_checkpoint_open(&cks[i], models.items[i]);
        if (!s) dirs[i] = cks[i]->dir;
        if (!s && i) s = cli_check_member(cks[0], cks[i]);
        if (!s && cks[i]->config.max_seq_len < o.seq) {
            if (seq_given)
                s = alloy_fail(ALLOY_STATUS_USAGE, "%s: --seq %d exceeds the model's context of %d", dirs[i], o.seq,
                               cks[i]->config.max_seq_len);
            else o.seq = cks[i]->config.max_seq_len;
        }
    }
    if (!s && o.seq == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "--seq must be at least 1");
    for (int i = 0; i < n && !s; i++) s = alloy_model_load(&ms[i], dirs[i], o.batch, o.seq);
    if (!s) s = alloy_dataset_open(&ds, data, val_fraction);
    if (!s) s = alloy_combiner_create(&c, ms, (const char *const *)dirs, n);
    if (!s) s = alloy_run_check_new(out);
    if (!s && !o.quiet)
        fprintf(stderr, "alloy ensemble train: a gate over %d models (input width %d) on %s, %lld steps of %d x %d tokens\n", n,
                c->D, data, (long long)o.steps, o.batch, o.seq);
    o.stop = cli_catch_stop();
    if (!s) s = alloy_combiner_train(c, ms, n, ds, &o, NULL, &rep);
    if (!s) {
        printf("{\"combiner\":\"%s\",\"data\":\"%s\",\"steps\":%lld,\"val_tokens\":%lld,\"member_loss\":[", out, data,
               (long long)o.steps, (long long)rep.tokens);
        int best = 0;
        for (int i = 0; i < n; i++) {
            printf("%s%.6f", i ? "," : "", rep.member_loss[i]);
            if (rep.member_loss[i] < rep.member_loss[best]) best = i;
        }
        printf("],\"uniform_loss\":%.6f,\"learned_loss\":%.6f}\n", rep.uniform_loss, rep.learned_loss);
        if (!o.quiet)
            fprintf(stderr, "alloy ensemble train: held-out loss %.4f learned vs %.4f uniform mixture and %.4f for the best "
                            "model alone (%s); saved %s\n", rep.learned_loss, rep.uniform_loss, rep.member_loss[best], dirs[best], out);
    }
    alloy_combiner_destroy(c);
    alloy_dataset_close(ds);
    for (int i = 0; i < n; i++) {
        alloy_model_destroy(ms[i]);
        alloy_checkpoint_close(cks[i]);
    }
    return s ? cli_fail("ensemble", s) : *o.stop ? 130 : 0;
}
