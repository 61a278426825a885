/*
 * train.c — `alloy train`: the command face of alloy_train_run, with --resume and a clean
 * stop on Ctrl-C (finish the step, save a checkpoint, exit).
 */
#include "cli.h"
#include "alloy/distill.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy train --data DIR (--preset NAME | --config config.json | --init CKPT) --out DIR [flags]\n"
    "       alloy train --resume RUN_OR_CKPT [--steps N] [--threads N]\n"
    "\n"
    "Trains a decoder-only transformer on token shards (alloy prepare). Writes RUN/metrics.jsonl\n"
    "(one JSON object per step and per evaluation), checkpoints RUN/checkpoints/step-N/\n"
    "(model.safetensors, config.json, optimizer.safetensors, trainer_state.json) and RUN/latest.\n"
    "Ctrl-C stops after the current step with a checkpoint. A resumed run continues exactly where\n"
    "the interrupted one would have gone (bitwise with --threads 1).\n"
    "\n"
    "model (exactly one):\n"
    "  --preset NAME         tiny-gpt2, tiny-llama, small-gpt2, small-llama, gpt2 (124M),\n"
    "                        gpt2-medium, llama-110m; the vocabulary is taken from the data and\n"
    "                        the context length is --seq (at most the preset's)\n"
    "  --config FILE         a Hugging Face style config.json (model_type gpt2 or llama)\n"
    "  --init CKPT           start from a checkpoint's weights (continued pretraining)\n"
    "data and run:\n"
    "  --data DIR            token shards (train-*.bin; val-*.bin held out)\n"
    "  --out DIR             run folder\n"
    "  --steps N             optimiser steps (default 1000)\n"
    "  --batch B             sequences per micro-batch (default 8)\n"
    "  --seq T               tokens per sequence (default 128)\n"
    "  --grad-accum K        micro-batches per step (default 1)\n"
    "  --seed S              initialisation and data order (default 1337)\n"
    "  --dtype f32|bf16      precision of the matrix products (default f32); bf16 rounds their\n"
    "                        inputs to bfloat16 and sums in fp32, with fp32 master weights and\n"
    "                        optimiser state; needs a CPU with avx512_bf16\n"
    "  --recompute           keep only each layer's output and recompute the rest in the\n"
    "                        backward: about 1/3 more compute, far less activation memory, the\n"
    "                        same results bit for bit (may change on --resume)\n"
    "  --val-fraction X      held-out share when the data has no val shards (default 0.05)\n"
    "  --train-only WHAT     all (default); router: an MoE's routers alone; mlp: the MLPs alone\n"
    "                        (a dense model's feed-forward layers, an MoE's experts). Every other\n"
    "                        tensor is frozen (no update, no weight decay; its gradient left out\n"
    "                        of the norm)\n"
    "mixture of experts (a model from alloy moe, or a config with num_local_experts):\n"
    "  --aux-loss-coef X     weight of the load-balancing loss (router_aux_loss_coef; default: the\n"
    "                        model's config.json; 0 turns it off). metrics.jsonl gets each step's\n"
    "                        aux_loss and the tokens routed to each expert\n"
    "optimiser (AdamW, linear warm-up then cosine decay):\n"
    "  --lr X                peak learning rate (default 1e-3)\n"
    "  --min-lr X            final learning rate (default lr/10)\n"
    "  --warmup N            warm-up steps (default 100, at most steps/10 by default)\n"
    "  --weight-decay X      on matrices and embeddings, not norms or biases (default 0.1)\n"
    "  --beta1 X --beta2 X   (default 0.9, 0.95)\n"
    "  --eps X               (default 1e-8)\n"
    "  --grad-clip X         global gradient norm limit, 0 = off (default 1.0)\n"
    "evaluation, checkpoints, output:\n"
    "  --eval-every N        steps between held-out evaluations (default 100; 0 = at the end)\n"
    "  --eval-batches N      batches per evaluation (default 20)\n"
    "  --ckpt-every N        steps between checkpoints (default 500; 0 = at the end)\n"
    "  --keep N              checkpoints kept (default 3)\n"
    "  --log-every N         progress line every N steps when not on a terminal (default 10)\n"
    "  --threads N           OpenMP threads (default: all cores)\n"
    "  --quiet               no progress output\n"
    "  --resume DIR          continue a run (its folder, or one checkpoint folder)\n"
    "  --rewind              with --resume of a checkpoint older than the run's newest: set the newer\n"
    "                        checkpoints and metrics.jsonl aside in RUN/rewound-N (nothing is deleted)\n"
    "                        and continue from it (without it such a resume is refused)\n"
    "  --branch-from CKPT    continue from CKPT in a new run folder (--out), the source run untouched\n";

static volatile int stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static const char distill_help[] =
    "usage: alloy distill --teacher DIR [--teacher DIR ...] --student PRESET|CKPT --data DIR --out DIR [flags]\n"
    "       alloy distill --resume RUN [--steps N] [--threads N]\n"
    "\n"
    "Trains a student to match a teacher, or an ensemble of teachers (the mixture of their\n"
    "probabilities), on token shards. Per token the loss is\n"
    "    alpha * CE(student, next token) + (1 - alpha) * T^2 * D(teacher || student)\n"
    "on distributions softened by the temperature T, with D the forward KL (Hinton et al.), the\n"
    "reverse KL, or the generalised Jensen-Shannon divergence of GKD. The teachers stay frozen\n"
    "and must share the student's vocabulary and tokenizer. Everything else — run folder,\n"
    "checkpoints, metrics, held-out evaluation (the student's plain loss), exact resume — is as in\n"
    "alloy train, whose flags all apply (alloy train --help).\n"
    "\n"
    "  --teacher DIR ...      teacher checkpoint or run folders (up to 8)\n"
    "  --student S            a preset name (a new student, e.g. small-gpt2) or a checkpoint folder\n"
    "                         to start from (or use --preset, --config or --init)\n"
    "  --divergence D         forward_kl (default), reverse_kl or jsd\n"
    "  --temperature X        softening temperature (default 2)\n"
    "  --alpha X              weight of the hard-label cross-entropy (default 0.5)\n"
    "  --jsd-beta X           the JSD's beta in (0, 1) (default 0.5)\n"
    "  --combiner COMB        mix the teachers per token with a learned combiner (alloy ensemble\n"
    "                         train) instead of equal weights; the teachers must be its members, in\n"
    "                         its order\n"
    "  --hidden-weight W      add W * mean over tokens of |P h_student - h_teacher|^2 on the final\n"
    "                         hidden states (after the final norm), h_teacher the first teacher's;\n"
    "                         P (teacher width x student width) is learned with the student (identity\n"
    "                         at first when the widths match, else small random) and saved in each\n"
    "                         checkpoint (default 0: off)\n";

static int train_main(const char *verb, int argc, char **argv, cli_list *teachers_);

static int train_verb(const char *verb, int argc, char **argv) {
    cli_list teachers = {0};
    int rc = train_main(verb, argc, argv, &teachers);
    free(teachers.items);
    return rc;
}

int cmd_train(int argc, char **argv) { return train_verb("train", argc, argv); }
int cmd_distill(int argc, char **argv) { return train_verb("distill", argc, argv); }

/* The body of both verbs; the list cli_parse fills is the caller's to free. */
static int train_main(const char *verb, int argc, char **argv, cli_list *teachers_) {
    bool distill = !strcmp(verb, "distill");
    alloy_distill_options dopt = alloy_distill_defaults();
    cli_list teachers = {0};
    const char *student = NULL, *divergence = NULL, *combiner = NULL;
    alloy_train_options o = alloy_train_defaults();
    const char *data = NULL, *out = NULL, *preset = NULL, *config = NULL, *init = NULL, *resume = NULL;
    int threads = 0;
    const char *dtype = NULL, *train_only = NULL;
    bool recompute = false;
    bool rewind = false;
    const char *branch = NULL;
    cli_flag flags[] = {
        {"train-only", CLI_STR, &train_only, false},
        {"aux-loss-coef", CLI_DBL, &o.aux_loss_coef, false},
        {"dtype", CLI_STR, &dtype, false},
        {"recompute", CLI_BOOL, &recompute, false},
        {"data", CLI_STR, &data, false},
        {"out", CLI_STR, &out, false},
        {"preset", CLI_STR, &preset, false},
        {"config", CLI_STR, &config, false},
        {"init", CLI_STR, &init, false},
        {"resume", CLI_STR, &resume, false},
        {"steps", CLI_I64, &o.steps, false},
        {"batch", CLI_INT, &o.batch, false},
        {"seq", CLI_INT, &o.seq, false},
        {"grad-accum", CLI_INT, &o.grad_accum, false},
        {"seed", CLI_U64, &o.seed, false},
        {"val-fraction", CLI_DBL, &o.val_fraction, false},
        {"lr", CLI_DBL, &o.lr, false},
        {"min-lr", CLI_DBL, &o.min_lr, false},
        {"warmup", CLI_I64, &o.warmup, false},
        {"weight-decay", CLI_FLOAT, &o.adamw.weight_decay, false},
        {"beta1", CLI_FLOAT, &o.adamw.beta1, false},
        {"beta2", CLI_FLOAT, &o.adamw.beta2, false},
        {"eps", CLI_FLOAT, &o.adamw.eps, false},
        {"grad-clip", CLI_FLOAT, &o.adamw.grad_clip, false},
        {"eval-every", CLI_I64, &o.eval_every, false},
        {"eval-batches", CLI_INT, &o.eval_batches, false},
        {"ckpt-every", CLI_I64, &o.ckpt_every, false},
        {"keep", CLI_INT, &o.keep_ckpts, false},
        {"log-every", CLI_INT, &o.log_every, false},
        {"threads", CLI_INT, &threads, false},
        {"quiet", CLI_BOOL, &o.quiet, false},
        {"rewind", CLI_BOOL, &rewind, false},
        {"branch-from", CLI_STR, &branch, false},
        // distill only (kept last: train leaves them out)
        {"teacher", CLI_LIST, &teachers, false},
        {"student", CLI_STR, &student, false},
        {"divergence", CLI_STR, &divergence, false},
        {"temperature", CLI_FLOAT, &dopt.temperature, false},
        {"alpha", CLI_FLOAT, &dopt.alpha, false},
        {"jsd-beta", CLI_FLOAT, &dopt.beta, false},
        {"combiner", CLI_STR, &combiner, false},
        {"hidden-weight", CLI_FLOAT, &dopt.hidden_weight, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]) - (distill ? 0 : 8);
    int r = cli_parse(verb, argc, argv, flags, nf, distill ? distill_help : help, NULL);
    *teachers_ = teachers;
    if (r) return r == 1 ? 0 : r;
    if (threads < 0) return cli_usage(verb, "--threads must be >= 0");
    if (o.log_every < 1) return cli_usage(verb, "--log-every must be at least 1");
    cli_set_threads(threads);
    alloy_resume_mode mode;
    if ((r = cli_resume_mode(verb, &resume, branch, rewind, out, &mode))) return r;

    char *ckpt = NULL;
    if (resume) {
        // everything comes from the run; only these may change on resume
        static const char *const may_change[] = {"resume", "rewind", "branch-from", "steps", "threads", "quiet", "log-every",
                                                 "eval-every", "eval-batches", "ckpt-every", "keep",
                                                 "recompute"};
        for (int i = 0; i < nf; i++) {
            bool ok = false;
            for (size_t k = 0; k < sizeof may_change / sizeof may_change[0]; k++) ok |= !strcmp(flags[i].name, may_change[k]);
            ok |= mode == ALLOY_RESUME_BRANCH && !strcmp(flags[i].name, "out");
            if (flags[i].seen && !ok)
                return cli_usage(verb, "--%s cannot change when resuming (the run's saved settings apply)", flags[i].name);
        }
        alloy_train_options saved = alloy_train_defaults();
        alloy_status s = alloy_train_resume_options(resume, &saved, &ckpt);
        if (!s && distill && !saved.objective_json[0])
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s is a plain training run: continue it with alloy train --resume", resume);
        if (!s && !distill && saved.objective_json[0])
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s is a distillation run: continue it with alloy distill --resume", resume);
        if (!s && distill) s = alloy_distill_from_json(&dopt, saved.objective_json, resume);
        if (s) {
            alloy_free(ckpt);
            return cli_fail(verb, s);
        }
        saved.quiet = o.quiet;
        saved.log_every = o.log_every;
        if (cli_find(flags, nf, "steps")->seen) saved.steps = o.steps;
        if (cli_find(flags, nf, "eval-every")->seen) saved.eval_every = o.eval_every;
        if (cli_find(flags, nf, "eval-batches")->seen) saved.eval_batches = o.eval_batches;
        if (cli_find(flags, nf, "ckpt-every")->seen) saved.ckpt_every = o.ckpt_every;
        if (cli_find(flags, nf, "keep")->seen) saved.keep_ckpts = o.keep_ckpts;
        if (cli_find(flags, nf, "recompute")->seen) saved.recompute = recompute;
        o = saved;
        o.resume_mode = mode;
        if (mode == ALLOY_RESUME_BRANCH && (r = put_out(verb, out, o.out_dir, sizeof o.out_dir))) {
            alloy_free(ckpt);
            return r;
        }
    } else {
        struct {
            const char *v;
            char *dst;
            size_t cap;
            const char *flag;
        } strs[] = {{data, o.data_dir, sizeof o.data_dir, "data"},
                    {out, o.out_dir, sizeof o.out_dir, "out"},
                    {preset, o.preset, sizeof o.preset, "preset"},
                    {config, o.config_path, sizeof o.config_path, "config"},
                    {init, o.init_dir, sizeof o.init_dir, "init"}};
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
            if (!strs[i].v) continue;
            if (strlen(strs[i].v) >= strs[i].cap) return cli_usage(verb, "--%s: value too long", strs[i].flag);
            strcpy(strs[i].dst, strs[i].v);
        }
        if (!data || !out) return cli_usage(verb, "--data and --out are required (or --resume)");
        if (distill) {
            if (teachers.n < 1 || teachers.n > ALLOY_MAX_TEACHERS)
                return cli_usage(verb, "give 1 to %d --teacher folders", ALLOY_MAX_TEACHERS);
            for (int i = 0; i < teachers.n; i++) {
                if (strlen(teachers.items[i]) >= ALLOY_PATH_MAX) return cli_usage(verb, "--teacher: path too long");
                strcpy(dopt.teachers[i], teachers.items[i]);
            }
            dopt.n_teachers = teachers.n;
            if (combiner && strlen(combiner) >= sizeof dopt.combiner) return cli_usage(verb, "--combiner: path too long");
            if (combiner) strcpy(dopt.combiner, combiner);
            if (!(dopt.hidden_weight >= 0.0f)) return cli_usage(verb, "--hidden-weight must be >= 0");
            if (divergence && !alloy_divergence_parse(divergence, &dopt.divergence))
                return cli_usage(verb, "--divergence must be forward_kl, reverse_kl or jsd, not \"%s\"", divergence);
            if (student && (preset || config || init)) return cli_usage(verb, "give --student or one of --preset, --config, --init");
            if (student) {
                bool ckpt_dir = alloy_is_dir(student); // a checkpoint or run folder, else a preset's name
                char *dst = ckpt_dir ? o.init_dir : o.preset;
                size_t cap = ckpt_dir ? sizeof o.init_dir : sizeof o.preset;
                if (strlen(student) >= cap) return cli_usage(verb, "--student: value too long");
                strcpy(dst, student);
                if (ckpt_dir) init = student;
                else preset = student;
            }
        }
        if (train_only && !alloy_train_only_parse(train_only, &o.train_only))
            return cli_usage(verb, "--train-only must be all, router or mlp, not \"%s\"", train_only);
        if (cli_find(flags, nf, "aux-loss-coef")->seen && !(o.aux_loss_coef >= 0.0))
            return cli_usage(verb, "--aux-loss-coef must be >= 0");
        if (dtype && !strcmp(dtype, "bf16")) o.precision = ALLOY_PRECISION_BF16;
        else if (dtype && strcmp(dtype, "f32")) return cli_usage(verb, "--dtype must be f32 or bf16, not \"%s\"", dtype);
        o.recompute = recompute;
        if (!!preset + !!config + !!init != 1) return cli_usage(verb, "give exactly one of --preset, --config or --init");
        if (!cli_find(flags, nf, "min-lr")->seen) o.min_lr = o.lr / 10.0;
        if (!cli_find(flags, nf, "warmup")->seen) o.warmup = o.steps / 10 < 100 ? o.steps / 10 : 100;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop = &stop_requested;
    float val = 0.0f;
    alloy_status s = distill ? alloy_distill_run(&o, &dopt, ckpt, &val) : alloy_train_run(&o, ckpt, &val);
    alloy_free(ckpt);
    if (s) return cli_fail(verb, s);
    return stop_requested ? 130 : 0;
}
