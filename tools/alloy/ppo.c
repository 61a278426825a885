/*
 * ppo.c — `alloy ppo`: RLHF with PPO (the command face of alloy_ppo_run, with --resume and a
 * clean stop on Ctrl-C).
 */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char ppo_help[] =
    "usage: alloy ppo --model SFT --reward RM --prompts PROMPTS --out RUN [flags]\n"
    "       alloy ppo --resume RUN [--steps N] [--threads N]\n"
    "\n"
    "RLHF with PPO (InstructGPT's third stage, as TRL's PPOTrainer). The policy starts from the SFT\n"
    "model, with a value head on its final hidden states (v_head, zero at the start, trained with\n"
    "it); a frozen copy of the SFT weights is the reference. Each step samples a response to each of\n"
    "--batch prompts with the KV-cache engine (until the end-of-turn token or --max-new-tokens),\n"
    "scores prompt + response with the reward model RM (alloy reward; same tokenizer and template),\n"
    "gives each response token the reward -beta·(log pi - log ref) and the last one the score too,\n"
    "estimates advantages by GAE (gamma, lam) and whitens them, then runs --ppo-epochs passes of\n"
    "minibatches: the clipped surrogate plus vf_coef times the clipped value loss, one AdamW step\n"
    "each. beta follows the adaptive KL controller (Ziegler et al.) unless --adaptive-kl off.\n"
    "Each example of PROMPTS is {\"prompt\": \"...\"} (or a list of messages), rendered with the\n"
    "model's chat template and its generation prompt; longer prompts lose their beginning. Records\n"
    "of the other layouts give their prompt: Alpaca's instruction and input, a conversation's\n"
    "messages before its last reply, the dialogue of hh-rlhf's transcripts.\n"
    "\n"
    "  --model DIR           the SFT model (checkpoint or run folder): policy start and reference\n"
    "  --reward DIR          the reward model (checkpoint or run folder of alloy reward)\n"
    "  --prompts PATH        prompts: JSONL (one JSON object per line) or a JSON array, plain, .gz\n"
    "                        or .zst, or a folder of such files\n"
    "  --out DIR             run folder: metrics.jsonl, checkpoints/step-N/, latest\n"
    CLI_DATA_FIELDS_HELP
    "  --template NAME       chatml or raw (default: the model's own)\n"
    "  --steps N             PPO steps, each a batch of rollouts (default: one pass over the prompts)\n"
    "  --batch B             rollouts per step (default 128)\n"
    "  --mini-batch M        rollouts per optimiser step (default 128)\n"
    "  --ppo-epochs K        passes over each batch of rollouts (default 4)\n"
    "  --max-new-tokens N    response tokens at most (default 64)\n"
    "  --seq T               prompt + response tokens at most (default: the model's context, at most 1024)\n"
    "  --gen-batch G         sequences the engine samples at once (default 16)\n"
    "  --temperature X       sampling temperature (default 1)\n"
    "  --top-k K             (default 0: off)\n"
    "  --top-p X             (default 1: off)\n"
    "  --lr X                constant learning rate (default 1.41e-5)\n"
    "  --grad-clip X         global gradient norm limit of policy and value head, 0 = off (default 1.0)\n"
    "  --weight-decay X --beta1 X --beta2 X --eps X   AdamW (default 0, 0.9, 0.999, 1e-8)\n"
    "  --gamma X --lam X     GAE (default 1, 0.95)\n"
    "  --cliprange X         policy ratio clip (default 0.2)\n"
    "  --cliprange-value X   value clip around the rollout's values (default 0.2)\n"
    "  --vf-coef X           value loss weight (default 0.1)\n"
    "  --kl-penalty NAME     kl (log pi - log ref), abs or mse (default kl)\n"
    "  --init-kl-coef X      beta at the start (default 0.2)\n"
    "  --adaptive-kl on|off  adapt beta towards --target (default on)\n"
    "  --target X            KL target of the adaptive controller (default 6)\n"
    "  --horizon X           its horizon (default 10000)\n"
    "  --whiten on|off       whiten advantages over the batch (default on)\n"
    "  --missing-eos-penalty X  subtracted from the score of a response that --max-new-tokens cut\n"
    "                        off before its end-of-turn token (default 0: off; TRL's option): the\n"
    "                        reward model never saw unfinished responses, and their scores can\n"
    "                        teach the policy to stop ending them\n"
    "  --seed S              prompt order, sampling, minibatch order (default 1337)\n"
    "  --ckpt-every N        steps between checkpoints (default 100; 0 = at the end)\n"
    "  --keep N              checkpoints kept (default 3)\n"
    "  --log-every N         progress line every N steps when not on a terminal (default 1)\n"
    "  --threads N           OpenMP threads (default: all cores)\n"
    "  --quiet               no progress output\n"
    "  --rewind              with --resume of a checkpoint older than the run's newest: set the newer\n"
    "                        checkpoints and metrics.jsonl aside in RUN/rewound-N (nothing is deleted)\n"
    "                        and continue from it (without it such a resume is refused)\n"
    "  --branch-from CKPT    continue from CKPT in a new run folder (--out), the source run untouched\n"
    "  --resume DIR          continue a run (its folder, or one checkpoint folder); only --steps,\n"
    "                        --threads and the logging and checkpoint cadence may change\n"
    "metrics.jsonl, one line per step: reward (mean score), kl (mean over responses of the summed\n"
    "log pi - log ref), entropy (nats per sampled token), response_length, beta, policy_loss,\n"
    "value_loss, clipfrac, vf_clipfrac, approx_kl, tokens_per_s and more. Defaults: TRL's PPOConfig\n"
    "(see docs/alignment.md for the differences).\n";

/* --resume, --rewind, --branch-from: the run's saved options with what the flags may change. */
static int resume_flags(const char *resume, alloy_resume_mode mode, alloy_ppo_options *o, const cli_flag *flags, int nf,
                        char **ckpt) {
    alloy_ppo_options saved = alloy_ppo_defaults();
    alloy_status s = alloy_ppo_resume_options(resume, &saved, ckpt);
    int r = s ? cli_fail("ppo", s) : 0;
    if (!r) r = cli_schema_resume("ppo", alloy_ppo_schema(), &saved, o, flags, nf, mode == ALLOY_RESUME_BRANCH ? "out" : NULL);
    if (!r && mode == ALLOY_RESUME_BRANCH) r = put_out("ppo", o->out_dir, saved.out_dir, sizeof saved.out_dir);
    if (r) {
        alloy_free(*ckpt);
        *ckpt = NULL;
        return r;
    }
    saved.resume_mode = mode;
    *o = saved;
    return 0;
}

int cmd_ppo(int argc, char **argv) {
    alloy_ppo_options o = alloy_ppo_defaults();
    const char *resume = NULL, *branch = NULL;
    bool rewind = false;
    int threads = 0;
    cli_flag flags[64] = {
        {"resume", CLI_STR, &resume, false},
        {"rewind", CLI_BOOL, &rewind, false},
        {"branch-from", CLI_STR, &branch, false},
        {"threads", CLI_INT, &threads, false},
    };
    int nf = 4;
    cli_schema_flags(alloy_ppo_schema(), &o, flags, &nf, 64);
    int r = cli_parse("ppo", argc, argv, flags, nf, ppo_help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (threads < 0) return cli_usage("ppo", "--threads must be >= 0");
    cli_set_threads(threads);
    alloy_resume_mode mode;
    if ((r = cli_resume_mode("ppo", &resume, branch, rewind, o.out_dir[0] ? o.out_dir : NULL, &mode))) return r;
    char *ckpt = NULL;
    if (resume) {
        if ((r = resume_flags(resume, mode, &o, flags, nf, &ckpt))) return r;
    } else {
        if (!o.model_dir[0] || !o.reward_dir[0] || !o.prompts_path[0] || !o.out_dir[0])
            return cli_usage("ppo", "--model, --reward, --prompts and --out are required (or --resume)");
        o.tmpl_set = cli_find(flags, nf, "template")->seen;
        // 0 means "one pass" and "the models' context" to the library, not to the flags
        if (cli_find(flags, nf, "steps")->seen && o.steps < 1) return cli_usage("ppo", "--steps must be at least 1");
        if (cli_find(flags, nf, "seq")->seen && o.seq < 2) return cli_usage("ppo", "--seq must be at least 2");
    }
    o.stop = cli_catch_stop();
    alloy_status s = alloy_ppo_run(&o, ckpt);
    alloy_free(ckpt);
    if (s) return cli_fail("ppo", s);
    return *o.stop ? 130 : 0;
}
