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
    "  --eval-batches N      batches per evaluation (default 20): the held-out loss covers the\n"
    "                        first N x B windows of the held-out split (the progress line says how\n"
    "                        many of how many); at the end the whole split is scored too, as alloy\n"
    "                        eval does, when it is at most 10 evaluations' worth\n"
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
    "checkpoints, metrics, held-out evaluation, exact resume — is as in alloy train, whose flags\n"
    "all apply (alloy train --help). The progress line's \"distill-loss\" is the loss above; the\n"
    "evaluations' \"held-out CE\" is the student's plain cross-entropy on the held-out split.\n"
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

/* The distillation flags into dopt (a new run), the student as the model to start from. */
static int distill_flags(const char *verb, alloy_train_options *o, alloy_distill_options *dopt, const cli_list *teachers,
                         const char *student, const char *divergence, const char *combiner) {
    if (teachers->n < 1 || teachers->n > ALLOY_MAX_TEACHERS) return cli_usage(verb, "give 1 to %d --teacher folders", ALLOY_MAX_TEACHERS);
    for (int i = 0; i < teachers->n; i++) {
        if (strlen(teachers->items[i]) >= ALLOY_PATH_MAX) return cli_usage(verb, "--teacher: path too long");
        strcpy(dopt->teachers[i], teachers->items[i]);
    }
    dopt->n_teachers = teachers->n;
    if (combiner && strlen(combiner) >= sizeof dopt->combiner) return cli_usage(verb, "--combiner: path too long");
    if (combiner) strcpy(dopt->combiner, combiner);
    if (!(dopt->hidden_weight >= 0.0f)) return cli_usage(verb, "--hidden-weight must be >= 0");
    if (divergence && alloy_divergence_parse(divergence, &dopt->divergence))
        return cli_usage(verb, "--divergence must be forward_kl, reverse_kl or jsd, not \"%s\"", divergence);
    if (!student) return 0;
    if (o->preset[0] || o->config_path[0] || o->init_dir[0]) return cli_usage(verb, "give --student or one of --preset, --config, --init");
    bool folder = alloy_is_dir(student); // a checkpoint or run folder, else a preset's name
    char *dst = folder ? o->init_dir : o->preset;
    size_t cap = folder ? sizeof o->init_dir : sizeof o->preset;
    if (strlen(student) >= cap) return cli_usage(verb, "--student: value too long");
    strcpy(dst, student);
    return 0;
}

/* --resume, --rewind, --branch-from: the saved options of the run (and of its distillation),
 * with what the flags may change; *ckpt the checkpoint to resume from. */
static int resume_flags(const char *verb, bool distill, const char *resume, alloy_resume_mode mode, const char *out,
                        alloy_train_options *o, alloy_distill_options *dopt, const cli_flag *flags, int nf, char **ckpt) {
    alloy_train_options saved = alloy_train_defaults();
    alloy_status s = alloy_train_resume_options(resume, &saved, ckpt);
    if (!s && distill && !saved.objective_json[0])
        s = alloy_fail(ALLOY_STATUS_USAGE, "%s is an alloy train run; continue it with alloy train --resume %s", resume, resume);
    if (!s && !distill && saved.objective_json[0])
        s = alloy_fail(ALLOY_STATUS_USAGE, "%s is an alloy distill run; continue it with alloy distill --resume %s", resume, resume);
    if (!s && distill) s = alloy_distill_from_json(dopt, saved.objective_json, resume);
    int r = s ? cli_fail(verb, s) : 0;
    if (!r) r = cli_schema_resume(verb, alloy_train_schema(), &saved, o, flags, nf, mode == ALLOY_RESUME_BRANCH ? "out" : NULL);
    if (!r && mode == ALLOY_RESUME_BRANCH) r = put_out(verb, out, saved.out_dir, sizeof saved.out_dir);
    if (r) {
        alloy_free(*ckpt);
        *ckpt = NULL;
        return r;
    }
    saved.resume_mode = mode;
    *o = saved;
    return 0;
}

/* The body of both verbs; the list cli_parse fills is the caller's to free. */
static int train_main(const char *verb, int argc, char **argv, cli_list *teachers_) {
    bool distill = !strcmp(verb, "distill");
    alloy_distill_options dopt = alloy_distill_defaults();
    alloy_train_options o = alloy_train_defaults();
    cli_list teachers = {0};
    const char *student = NULL, *divergence = NULL, *combiner = NULL, *resume = NULL, *branch = NULL;
    int threads = 0;
    bool rewind = false;
    cli_flag flags[80] = {
        {"resume", CLI_STR, &resume, false},
        {"rewind", CLI_BOOL, &rewind, false},
        {"branch-from", CLI_STR, &branch, false},
        {"threads", CLI_INT, &threads, false},
        // distill only (cut for train)
        {"teacher", CLI_LIST, &teachers, false},
        {"student", CLI_STR, &student, false},
        {"divergence", CLI_STR, &divergence, false},
        {"temperature", CLI_FLOAT, &dopt.temperature, false},
        {"alpha", CLI_FLOAT, &dopt.alpha, false},
        {"jsd-beta", CLI_FLOAT, &dopt.beta, false},
        {"combiner", CLI_STR, &combiner, false},
        {"hidden-weight", CLI_FLOAT, &dopt.hidden_weight, false},
    };
    int nf = distill ? 12 : 4;
    cli_schema_flags(alloy_train_schema(), &o, flags, &nf, 80);
    int r = cli_parse(verb, argc, argv, flags, nf, distill ? distill_help : help, NULL);
    *teachers_ = teachers;
    if (r) return r == 1 ? 0 : r;
    if (threads < 0) return cli_usage(verb, "--threads must be >= 0");
    cli_set_threads(threads);
    alloy_resume_mode mode;
    if ((r = cli_resume_mode(verb, &resume, branch, rewind, o.out_dir[0] ? o.out_dir : NULL, &mode))) return r;
    char *ckpt = NULL;
    if (resume) r = resume_flags(verb, distill, resume, mode, o.out_dir, &o, &dopt, flags, nf, &ckpt);
    else if (!o.data_dir[0] || !o.out_dir[0]) r = cli_usage(verb, "--data and --out are required (or --resume)");
    else if (distill) r = distill_flags(verb, &o, &dopt, &teachers, student, divergence, combiner);
    if (r) return r;
    o.stop = cli_catch_stop();
    float val = 0.0f;
    alloy_status s = distill ? alloy_distill_run(&o, &dopt, ckpt, &val) : alloy_train_run(&o, ckpt, &val);
    alloy_free(ckpt);
    if (s) return cli_fail(verb, s);
    return *o.stop ? 130 : 0;
}
