/*
 * align.c — `alloy sft`, `alloy reward`, `alloy dpo` (the command face of alloy_align_run, with
 * --resume and a clean stop on Ctrl-C) and `alloy score` (a reward model's score per response).
 */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define COMMON_RUN_HELP                                                                                      \
    "run and data:\n"                                                                                        \
    "  --model DIR           the model to start from (a checkpoint or run folder)\n"                         \
    "  --data PATH           training examples: a JSONL file (one JSON object per line) or a JSON\n"        \
    "                        array, either plain, gzip or zstd compressed, or a folder of such files\n"    \
    "  --val PATH            held-out examples (default: hold out --val-fraction of --data)\n"               \
    "  --val-fraction X      share of --data held out, by a hash of each example (default 0.05)\n"           \
    "  --out DIR             run folder: metrics.jsonl, checkpoints/step-N/, latest\n"                       \
    CLI_DATA_FIELDS_HELP                                                                                     \
    "  --template NAME       chatml (<|im_start|>role\\ncontent<|im_end|>\\n) or raw (prompt text,\n"        \
    "                        response text, <|endoftext|>); default: the model's own, else chatml.\n"        \
    "                        ChatML's two tokens are added to the tokenizer and the embedding (new\n"        \
    "                        rows at the mean embedding) when the model lacks them\n"                        \
    "  --steps N             optimiser steps (default: --epochs over the training examples)\n"               \
    "  --epochs X            (default 3)\n"                                                                   \
    "  --batch B             examples per micro-batch (default 8)\n"                                          \
    "  --seq T               tokens per sequence at most (default: the model's context, at most 1024)\n"     \
    "  --grad-accum K        micro-batches per step (default 1)\n"                                            \
    "  --seed S              data order and held-out choice; reward: a new score head (default 1337)\n"  \
    "optimiser (AdamW, linear warm-up then cosine decay):\n"                                                 \
    "  --lr X --min-lr X     peak and final learning rate (min-lr default lr/10)\n"                          \
    "  --warmup N            warm-up steps (default 0)\n"                                                     \
    "  --weight-decay X      on matrices and embeddings (default 0)\n"                                        \
    "  --beta1 X --beta2 X   (default 0.9, 0.999)\n"                                                          \
    "  --eps X               (default 1e-8)\n"                                                                \
    "  --grad-clip X         global gradient norm limit, 0 = off (default 1.0)\n"                            \
    "evaluation, checkpoints, output:\n"                                                                     \
    "  --eval-every N        steps between held-out evaluations (default 100; 0 = at the end)\n"             \
    "  --eval-batches N      micro-batches per evaluation (default 0 = the whole held-out set)\n"            \
    "  --ckpt-every N        steps between checkpoints (default 500; 0 = at the end)\n"                      \
    "  --keep N              checkpoints kept (default 3)\n"                                                  \
    "  --log-every N         progress line every N steps when not on a terminal (default 10)\n"              \
    "  --threads N           OpenMP threads (default: all cores)\n"                                           \
    "  --quiet               no progress output\n"                                                            \
    "  --resume DIR          continue a run (its folder, or one checkpoint folder); only --steps,\n"         \
    "                        --threads and the logging, evaluation and checkpoint cadence may change\n"    \
    "  --rewind              with --resume of a checkpoint older than the run's newest: set the newer\n" \
    "                        checkpoints and metrics.jsonl aside in RUN/rewound-N (nothing is deleted)\n" \
    "                        and continue from it (without it such a resume is refused)\n"            \
    "  --branch-from CKPT    continue from CKPT in a new run folder (--out), the source run untouched\n"

static const char sft_help[] =
    "usage: alloy sft --model DIR --data DATA --out RUN [flags]\n"
    "       alloy sft --resume RUN [--steps N] [--threads N]\n"
    "\n"
    "Supervised fine-tuning: the language-model loss on the response (assistant) tokens only;\n"
    "prompt tokens are context, never targets. Each example of DATA (a line of JSONL, an element\n"
    "of a JSON array) is\n"
    "  {\"prompt\": \"...\", \"response\": \"...\"}   (\"completion\" also; a prompt may be a list of messages)\n"
    "  {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, {\"role\": \"assistant\", ...}, ...]}\n"
    "(every assistant message is trained on), or a record in another layout (--layout): Alpaca's\n"
    "{\"instruction\", \"input\", \"output\"} (GPTeacher's \"response\"), ShareGPT's \"conversations\",\n"
    "OpenAI's \"messages\". Examples are not packed: each is one row, padded to the longest in its\n"
    "batch, so attention never crosses examples; longer ones lose their end.\n"
    "Defaults follow TRL's SFTTrainer (lr 2e-5, 3 epochs, batch 8, at most 1024 tokens).\n"
    "Writes RUN as alloy train does; each checkpoint is a chat model (config.json names its\n"
    "chat_template; tokenizer.json has its tokens). metrics.jsonl: loss and perplexity of the\n"
    "response tokens, train and held out.\n"
    "\n" COMMON_RUN_HELP;

static const char reward_help[] =
    "usage: alloy reward --model DIR --data PREFS --out RUN [flags]\n"
    "       alloy reward --resume RUN [--steps N] [--threads N]\n"
    "\n"
    "Trains a reward model: a scalar head (score.weight, score.bias, as Hugging Face's\n"
    "*ForSequenceClassification) on the final hidden state of the last token of prompt +\n"
    "response, with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). Each example is\n"
    "  {\"prompt\": \"...\", \"chosen\": \"...\", \"rejected\": \"...\"}   (without \"prompt\": the common beginning)\n"
    "  {\"prompt\": \"...\", \"responses\": [\"best\", ..., \"worst\"]}  (all K(K-1)/2 pairs, in one batch,\n"
    "                                                        averaged per prompt as InstructGPT)\n"
    "or TRL's preference records (a prompt and chosen/rejected as lists of messages), hh-rlhf's\n"
    "{\"chosen\", \"rejected\"} transcripts, ShareGPT's conversations with \"chosen\" and \"rejected\".\n"
    "A language model gets a new head (seeded); a reward model continues with its own.\n"
    "metrics.jsonl: loss, pair accuracy and margin, train and held out. Defaults: TRL's\n"
    "RewardTrainer (lr 1e-4, 3 epochs, batch 8).\n"
    "\n" COMMON_RUN_HELP;

static const char dpo_help[] =
    "usage: alloy dpo --model SFT --data PREFS --out RUN [--beta 0.1] [--loss sigmoid|ipo]\n"
    "                 [--label-smoothing 0] [--ref DIR] [flags]\n"
    "       alloy dpo --resume RUN [--steps N] [--threads N]\n"
    "\n"
    "Direct preference optimisation of a policy (initialised from --model) against a frozen\n"
    "reference (the same weights, or --ref DIR), on {\"prompt\", \"chosen\", \"rejected\"} examples\n"
    "(without \"prompt\": the common beginning), TRL's preference records or hh-rlhf's transcripts\n"
    "(--layout). Log-probabilities are summed over the response's tokens; the reference's are\n"
    "computed once, before training. With D = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)):\n"
    "  --loss sigmoid        -(1-e)·log sigmoid(beta·D) - e·log sigmoid(-beta·D)  (DPO; e = --label-smoothing:\n"
    "                        conservative DPO)\n"
    "  --loss ipo            (D' - 1/(2·beta))², D' from per-token average log-probabilities (IPO)\n"
    "  --beta X              (default 0.1)\n"
    "  --label-smoothing X   in [0, 0.5) (default 0)\n"
    "  --ref DIR             the reference model (default: --model)\n"
    "metrics.jsonl: loss, rewards (beta·(log pi - log ref)) of chosen and rejected responses, their\n"
    "margin and accuracy, log-probabilities. Defaults: TRL's DPOTrainer (lr 1e-6, 3 epochs, batch 8).\n"
    "\n" COMMON_RUN_HELP;

static const char score_help[] =
    "usage: alloy score --model RM --data DATA [--batch B] [--seq T] [--template NAME] [--threads N]\n"
    "       alloy score --model LM --logprobs --data DATA [flags]\n"
    "\n"
    "Prints a reward model's score of every response, one JSON line per example (N: its line, or\n"
    "its element in a JSON array, in its file):\n"
    "  {\"line\": N, \"scores\": [r1, ...]}\n"
    "in the line's order: \"response\", each of \"responses\", \"chosen\" then \"rejected\", or the whole\n"
    "\"messages\" conversation. The template defaults to the model's own (config.json).\n"
    "With --logprobs, the model is a language model and each response gets the sum of its tokens'\n"
    "log-probabilities given the prompt (nats; the closing end-of-turn token included, as SFT and\n"
    "DPO count it) and their number:\n"
    "  {\"line\": N, \"logps\": [l1, ...], \"tokens\": [n1, ...]}\n"
    "(the mean over a policy's own samples of its logps minus a reference's estimates KL(policy||ref)).\n"
    "\n"
    "  --model DIR           a reward model (checkpoint or run folder of alloy reward)\n"
    "  --logprobs            score by log-probability under a language model instead\n"
    "  --data PATH           prompts and responses: JSONL or a JSON array, plain, .gz or .zst, or a\n"
    "                        folder of such files\n"
    "  --batch B             lines per forward pass (default 8)\n"
    "  --seq T               tokens per sequence at most (default: the model's context, at most 1024);\n"
    "                        longer prompts lose their beginning\n"
    "  --template NAME       chatml or raw\n"
    CLI_DATA_FIELDS_HELP
    "  --threads N           OpenMP threads (default: all cores)\n";

/* --resume, --rewind, --branch-from: the run's saved options with what the flags may change. */
static int resume_flags(const char *verb, alloy_align_kind kind, const char *resume, alloy_resume_mode mode,
                        alloy_align_options *o, const cli_flag *flags, int nf, char **ckpt) {
    alloy_align_options saved = alloy_align_defaults(kind);
    alloy_status s = alloy_align_resume_options(resume, &saved, ckpt);
    int r = s ? cli_fail(verb, s) : 0;
    if (!r && saved.kind != kind)
        r = cli_usage(verb, "%s is an alloy %s run; continue it with alloy %s --resume", resume, alloy_align_kind_name(saved.kind),
                      alloy_align_kind_name(saved.kind));
    if (!r) r = cli_schema_resume(verb, alloy_align_schema(), &saved, o, flags, nf, mode == ALLOY_RESUME_BRANCH ? "out" : NULL);
    if (!r && mode == ALLOY_RESUME_BRANCH) r = put_out(verb, o->out_dir, saved.out_dir, sizeof saved.out_dir);
    if (r) {
        alloy_free(*ckpt);
        *ckpt = NULL;
        return r;
    }
    saved.resume_mode = mode;
    *o = saved;
    return 0;
}

static int run_verb(const char *verb, alloy_align_kind kind, int argc, char **argv, const char *help) {
    alloy_align_options o = alloy_align_defaults(kind);
    const char *resume = NULL, *branch = NULL;
    bool rewind = false;
    int threads = 0;
    cli_flag flags[64] = {
        {"resume", CLI_STR, &resume, false},
        {"rewind", CLI_BOOL, &rewind, false},
        {"branch-from", CLI_STR, &branch, false},
        {"threads", CLI_INT, &threads, false},
    };
    int nf = 4, all = 4;
    cli_schema_flags(alloy_align_schema(), &o, flags, &all, 64);
    for (int k = 4; k < all; k++) { // the DPO flags are dpo's alone
        const char *n = flags[k].name;
        bool dpo_only = !strcmp(n, "ref") || !strcmp(n, "beta") || !strcmp(n, "loss") || !strcmp(n, "label-smoothing");
        if (kind == ALLOY_ALIGN_DPO || !dpo_only) flags[nf++] = flags[k];
    }
    int r = cli_parse(verb, argc, argv, flags, nf, help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (threads < 0) return cli_usage(verb, "--threads must be >= 0");
    cli_set_threads(threads);
    alloy_resume_mode mode;
    if ((r = cli_resume_mode(verb, &resume, branch, rewind, o.out_dir[0] ? o.out_dir : NULL, &mode))) return r;
    char *ckpt = NULL;
    if (resume) {
        if ((r = resume_flags(verb, kind, resume, mode, &o, flags, nf, &ckpt))) return r;
    } else {
        if (!o.model_dir[0] || !o.data_path[0] || !o.out_dir[0])
            return cli_usage(verb, "--model, --data and --out are required (or --resume)");
        o.tmpl_set = cli_find(flags, nf, "template")->seen;
        // 0 means "from epochs" and "the model's context" to the library, not to the flags
        if (cli_find(flags, nf, "steps")->seen && o.steps < 1) return cli_usage(verb, "--steps must be at least 1");
        if (cli_find(flags, nf, "seq")->seen && o.seq < 2) return cli_usage(verb, "--seq must be at least 2");
    }
    o.stop = cli_catch_stop();
    alloy_status s = alloy_align_run(&o, ckpt, NULL);
    alloy_free(ckpt);
    if (s) return cli_fail(verb, s);
    return *o.stop ? 130 : 0;
}

int cmd_sft(int argc, char **argv) { return run_verb("sft", ALLOY_ALIGN_SFT, argc, argv, sft_help); }
int cmd_reward(int argc, char **argv) { return run_verb("reward", ALLOY_ALIGN_REWARD, argc, argv, reward_help); }
int cmd_dpo(int argc, char **argv) { return run_verb("dpo", ALLOY_ALIGN_DPO, argc, argv, dpo_help); }

/* One JSON line per example: {"line": N, "scores": [...]} or {"line": N, "logps": [...], "tokens": [...]}. */
static void print_scores(void *user, int64_t line, const double *values, const int *tokens, int n) {
    bool logprobs = *(const bool *)user;
    printf("{\"line\":%lld,\"%s\":[", (long long)line, logprobs ? "logps" : "scores");
    for (int k = 0; k < n; k++) printf(logprobs ? "%s%.8g" : "%s%.6g", k ? "," : "", logprobs ? values[k] : (double)(float)values[k]);
    if (tokens) {
        printf("],\"tokens\":[");
        for (int k = 0; k < n; k++) printf("%s%d", k ? "," : "", tokens[k]);
    }
    printf("]}\n");
    fflush(stdout);
}

int cmd_score(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *tmpl_name = NULL;
    int batch = 8, seq = 0, threads = 0;
    bool logprobs = false;
    alloy_data_fields fields = {0};
    cli_flag flags[16] = {
        {"model", CLI_STR, &model, false}, {"data", CLI_STR, &data, false},     {"template", CLI_STR, &tmpl_name, false},
        {"batch", CLI_INT, &batch, false}, {"seq", CLI_INT, &seq, false},       {"threads", CLI_INT, &threads, false},
        {"logprobs", CLI_BOOL, &logprobs, false},
    };
    int nf = 7;
    cli_schema_flags(alloy_data_fields_schema(), &fields, flags, &nf, 16);
    int r = cli_parse("score", argc, argv, flags, nf, score_help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!model || !data) return cli_usage("score", "--model and --data are required");
    if (batch < 1 || batch > 65536) return cli_usage("score", "--batch must lie in [1, 65536]");
    if (flags[4].seen && seq < 2) return cli_usage("score", "--seq must be at least 2");
    if (threads < 0) return cli_usage("score", "--threads must be >= 0");
    alloy_chat_template tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
    bool have_tmpl = tmpl_name != NULL;
    if (tmpl_name && alloy_chat_template_parse(tmpl_name, &tmpl))
        return cli_usage("score", "--template must be chatml or raw, not \"%s\"", tmpl_name);
    cli_set_threads(threads);

    // the checkpoint folder: as given, or a run folder's latest
    char *dir = NULL;
    alloy_status s = alloy_checkpoint_resolve(model, &dir);
    alloy_config cfg;
    alloy_tokenizer *tok = NULL;
    alloy_reward_model *rm = NULL;
    alloy_align_data d = {0};
    if (!s) {
        char *cp = alloy_path_join(dir, "config.json");
        s = cp ? alloy_config_load(&cfg, cp) : ALLOY_STATUS_NOMEM;
        alloy_free(cp);
    }
    if (!s && !have_tmpl) {
        bool found;
        s = alloy_chat_template_of(dir, &tmpl, &found);
    }
    if (!s && seq == 0) seq = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
    if (!s && seq > cfg.max_seq_len)
        s = alloy_fail(ALLOY_STATUS_USAGE, "--seq %d exceeds the model's maximum sequence length %d", seq, cfg.max_seq_len);
    if (!s) s = alloy_align_load_tokenizer(dir, &cfg, &tok);
    if (!s) s = alloy_align_data_read(&d, data, tok, ALLOY_ALIGN_SCORE, tmpl, seq, &fields);
    // a language model (--logprobs) is loaded the same way: its unused head is a new one
    if (!s) s = alloy_reward_model_load(&rm, dir, batch * d.max_seqs, seq, !logprobs, 0);
    bool lp = logprobs;
    if (!s) s = alloy_align_score(rm, &d, batch, logprobs, print_scores, &lp);
    alloy_align_data_free(&d);
    alloy_reward_model_destroy(rm);
    alloy_tokenizer_destroy(tok);
    alloy_free(dir);
    return s ? cli_fail("score", s) : 0;
}
