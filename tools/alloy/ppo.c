/*
 * ppo.c — `alloy ppo`: RLHF with PPO (the command face of alloy_ppo_run, with --resume and a
 * clean stop on Ctrl-C).
 */
#include "cli.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char ppo_help[] =
    "usage: alloy ppo --model SFT --reward RM --prompts FILE.jsonl --out RUN [flags]\n"
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
    "Each line of FILE.jsonl is {\"prompt\": \"...\"} (or a list of messages), rendered with the\n"
    "model's chat template and its generation prompt; longer prompts lose their beginning.\n"
    "\n"
    "  --model DIR           the SFT model (checkpoint or run folder): policy start and reference\n"
    "  --reward DIR          the reward model (checkpoint or run folder of alloy reward)\n"
    "  --prompts FILE.jsonl  prompts, one JSON object per line\n"
    "  --out DIR             run folder: metrics.jsonl, checkpoints/step-N/, latest\n"
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

static volatile int stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int put(const char *flag, const char *v, char *dst, size_t cap) {
    if (!v) return 0;
    if (strlen(v) >= cap) return cli_usage("ppo", "--%s: value too long", flag);
    strcpy(dst, v);
    return 0;
}

static int on_off(const char *flag, const char *v, bool *out) {
    if (!v) return 0;
    if (!strcmp(v, "on")) *out = true;
    else if (!strcmp(v, "off")) *out = false;
    else return cli_usage("ppo", "--%s must be on or off, not \"%s\"", flag, v);
    return 0;
}

int cmd_ppo(int argc, char **argv) {
    alloy_ppo_options o = alloy_ppo_defaults();
    const char *model = NULL, *reward = NULL, *prompts = NULL, *out = NULL, *tmpl = NULL, *resume = NULL;
    const char *klp = NULL, *adaptive = NULL, *whiten = NULL, *branch = NULL;
    bool rewind = false;
    int threads = 0;
    cli_flag flags[] = {
        {"model", CLI_STR, &model, false},
        {"reward", CLI_STR, &reward, false},
        {"prompts", CLI_STR, &prompts, false},
        {"out", CLI_STR, &out, false},
        {"template", CLI_STR, &tmpl, false},
        {"resume", CLI_STR, &resume, false},
        {"rewind", CLI_BOOL, &rewind, false},
        {"branch-from", CLI_STR, &branch, false},
        {"steps", CLI_I64, &o.steps, false},
        {"batch", CLI_INT, &o.batch, false},
        {"mini-batch", CLI_INT, &o.mini_batch, false},
        {"ppo-epochs", CLI_INT, &o.ppo_epochs, false},
        {"max-new-tokens", CLI_INT, &o.max_new_tokens, false},
        {"seq", CLI_INT, &o.seq, false},
        {"gen-batch", CLI_INT, &o.gen_batch, false},
        {"temperature", CLI_FLOAT, &o.temperature, false},
        {"top-k", CLI_INT, &o.top_k, false},
        {"top-p", CLI_FLOAT, &o.top_p, false},
        {"lr", CLI_DBL, &o.lr, false},
        {"grad-clip", CLI_FLOAT, &o.adamw.grad_clip, false},
        {"weight-decay", CLI_FLOAT, &o.adamw.weight_decay, false},
        {"beta1", CLI_FLOAT, &o.adamw.beta1, false},
        {"beta2", CLI_FLOAT, &o.adamw.beta2, false},
        {"eps", CLI_FLOAT, &o.adamw.eps, false},
        {"gamma", CLI_DBL, &o.ppo.gamma, false},
        {"lam", CLI_DBL, &o.ppo.lam, false},
        {"cliprange", CLI_DBL, &o.ppo.cliprange, false},
        {"cliprange-value", CLI_DBL, &o.ppo.cliprange_value, false},
        {"vf-coef", CLI_DBL, &o.ppo.vf_coef, false},
        {"kl-penalty", CLI_STR, &klp, false},
        {"init-kl-coef", CLI_DBL, &o.init_kl_coef, false},
        {"adaptive-kl", CLI_STR, &adaptive, false},
        {"target", CLI_DBL, &o.kl_target, false},
        {"horizon", CLI_DBL, &o.kl_horizon, false},
        {"whiten", CLI_STR, &whiten, false},
        {"missing-eos-penalty", CLI_DBL, &o.missing_eos_penalty, false},
        {"seed", CLI_U64, &o.seed, false},
        {"ckpt-every", CLI_I64, &o.ckpt_every, false},
        {"keep", CLI_INT, &o.keep_ckpts, false},
        {"log-every", CLI_INT, &o.log_every, false},
        {"threads", CLI_INT, &threads, false},
        {"quiet", CLI_BOOL, &o.quiet, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("ppo", argc, argv, flags, nf, ppo_help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (threads < 0) return cli_usage("ppo", "--threads must be >= 0");
    if (o.log_every < 1) return cli_usage("ppo", "--log-every must be at least 1");
    cli_set_threads(threads);
    alloy_resume_mode mode;
    if ((r = cli_resume_mode("ppo", &resume, branch, rewind, out, &mode))) return r;
    char *ckpt = NULL;
    if (resume) {
        static const char *const may_change[] = {"resume", "rewind", "branch-from", "steps", "threads", "quiet",
                                                 "log-every", "ckpt-every", "keep"};
        for (int i = 0; i < nf; i++) {
            bool ok = false;
            for (size_t k = 0; k < sizeof may_change / sizeof may_change[0]; k++) ok |= !strcmp(flags[i].name, may_change[k]);
            ok |= mode == ALLOY_RESUME_BRANCH && !strcmp(flags[i].name, "out");
            if (flags[i].seen && !ok)
                return cli_usage("ppo", "--%s cannot change when resuming (the run's saved settings apply)", flags[i].name);
        }
        alloy_ppo_options saved = alloy_ppo_defaults();
        alloy_status s = alloy_ppo_resume_options(resume, &saved, &ckpt);
        if (s) return cli_fail("ppo", s);
        saved.quiet = o.quiet;
        saved.log_every = o.log_every;
        if (cli_find(flags, nf, "steps")->seen) saved.steps = o.steps;
        if (cli_find(flags, nf, "ckpt-every")->seen) saved.ckpt_every = o.ckpt_every;
        if (cli_find(flags, nf, "keep")->seen) saved.keep_ckpts = o.keep_ckpts;
        o = saved;
        o.resume_mode = mode;
        if (mode == ALLOY_RESUME_BRANCH && (r = put_out("ppo", out, o.out_dir, sizeof o.out_dir))) {
            alloy_free(ckpt);
            return r;
        }
    } else {
        if (!model || !reward || !prompts || !out)
            return cli_usage("ppo", "--model, --reward, --prompts and --out are required (or --resume)");
        if ((r = put("model", model, o.model_dir, sizeof o.model_dir)) ||
            (r = put("reward", reward, o.reward_dir, sizeof o.reward_dir)) ||
            (r = put("prompts", prompts, o.prompts_path, sizeof o.prompts_path)) ||
            (r = put("out", out, o.out_dir, sizeof o.out_dir)) || (r = on_off("adaptive-kl", adaptive, &o.adaptive_kl)) ||
            (r = on_off("whiten", whiten, &o.ppo.whiten)))
            return r;
        if (tmpl) {
            if (alloy_chat_template_parse(tmpl, &o.tmpl)) return cli_usage("ppo", "--template must be chatml or raw, not \"%s\"", tmpl);
            o.tmpl_set = true;
        }
        if (klp && alloy_kl_penalty_parse(klp, &o.ppo.kl_penalty))
            return cli_usage("ppo", "--kl-penalty must be kl, abs or mse, not \"%s\"", klp);
        if (cli_find(flags, nf, "steps")->seen && o.steps < 1) return cli_usage("ppo", "--steps must be at least 1");
        if (cli_find(flags, nf, "seq")->seen && o.seq < 2) return cli_usage("ppo", "--seq must be at least 2");
        if (!cli_find(flags, nf, "mini-batch")->seen && o.mini_batch > o.batch) o.mini_batch = o.batch;
        if (!cli_find(flags, nf, "gen-batch")->seen && o.gen_batch > o.batch) o.gen_batch = o.batch;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.stop = &stop_requested;
    alloy_status s = alloy_ppo_run(&o, ckpt);
    alloy_free(ckpt);
    if (s) return cli_fail("ppo", s);
    return stop_requested ? 130 : 0;
}
