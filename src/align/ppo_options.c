/*
 * ppo_options.c — the options of a PPO run (alloy_ppo_options): TRL's defaults, the schema that
 * saves them with a run and gives `alloy ppo` its flags, reading a run's saved options back, and
 * their checks (alloy/align.h).
 */
#include "alloy/align.h"
#include "alloy/options.h"
#include "internal.h"

#include <cJSON.h>
#include <string.h>

alloy_ppo_options alloy_ppo_defaults(void) {
    alloy_ppo_options o;
    memset(&o, 0, sizeof o);
    o.tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
    o.batch = 128;
    o.mini_batch = 0; // derived: min(128, batch)
    o.ppo_epochs = 4;
    o.gen_batch = 0; // derived: min(16, batch)
    o.max_new_tokens = 64;
    o.temperature = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.lr = 1.41e-5;
    o.adamw = (alloy_adamw_config){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f, .grad_clip = 1.0f};
    o.ppo = alloy_ppo_config_default();
    o.init_kl_coef = 0.2;
    o.kl_target = 6.0;
    o.kl_horizon = 10000.0;
    o.adaptive_kl = true;
    o.seed = 1337;
    o.ckpt_every = 100;
    o.keep_ckpts = 3;
    o.log_every = 1;
    return o;
}

/* ---- the options' schema: trainer_state.json, resume, the command's flags ---- */

static const char *const objectives[] = {"ppo", NULL};
static const char *const templates[] = {"chatml", "raw", NULL};
static const char *const kl_penalties[] = {"kl", "abs", "mse", NULL};

#define ROW(F, K, FL, D) ALLOY_OPT_ROW(alloy_ppo_options, F, K, FL, D)
#define NAMED(F, N, FLAG, K, FL, C, D) ALLOY_OPT_NAMED(alloy_ppo_options, F, N, FLAG, K, FL, C, D)
static const alloy_option ppo_rows[] = {
    NAMED(objective, "objective", NULL, ALLOY_OPT_ENUM, ALLOY_OPT_NOFLAG, objectives, NULL),
    NAMED(model_dir, "model", NULL, ALLOY_OPT_STRING, 0, NULL, "the SFT model: the policy's start and the reference"),
    NAMED(reward_dir, "reward", NULL, ALLOY_OPT_STRING, 0, NULL, "the reward model (alloy reward)"),
    NAMED(prompts_path, "prompts", NULL, ALLOY_OPT_STRING, 0, NULL, "JSONL of {\"prompt\": ...}"),
    ALLOY_OPT_DATA_FIELDS_ROWS(alloy_ppo_options, fields),
    NAMED(out_dir, "out", NULL, ALLOY_OPT_STRING, 0, NULL, "the run folder"),
    NAMED(tmpl, "template", NULL, ALLOY_OPT_ENUM, 0, templates, "chatml or raw"),
    ROW(steps, ALLOY_OPT_INT64, ALLOY_OPT_RESUME, "PPO steps (0: one pass over the prompts)"),
    ROW(batch, ALLOY_OPT_INT, 0, "rollouts per step"),
    ROW(mini_batch, ALLOY_OPT_INT, 0, "rollouts per optimiser step (default min(128, batch))"),
    ROW(ppo_epochs, ALLOY_OPT_INT, 0, "passes over each batch"),
    ROW(gen_batch, ALLOY_OPT_INT, 0, "sequences sampled at once (default min(16, batch))"),
    ROW(max_new_tokens, ALLOY_OPT_INT, 0, "response tokens at most"),
    ROW(seq, ALLOY_OPT_INT, 0, "prompt + response tokens at most"),
    ROW(temperature, ALLOY_OPT_FLOAT, 0, "sampling temperature"),
    ROW(top_k, ALLOY_OPT_INT, 0, "top-k (0: off)"),
    ROW(top_p, ALLOY_OPT_FLOAT, 0, "top-p (1: off)"),
    ROW(lr, ALLOY_OPT_DOUBLE, 0, "constant learning rate"),
    ALLOY_OPT_ADAMW_ROWS(alloy_ppo_options),
    NAMED(ppo.gamma, "gamma", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "discount"),
    NAMED(ppo.lam, "lam", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "GAE lambda"),
    NAMED(ppo.cliprange, "cliprange", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "policy ratio clip"),
    NAMED(ppo.cliprange_value, "cliprange_value", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "value clip"),
    NAMED(ppo.vf_coef, "vf_coef", NULL, ALLOY_OPT_DOUBLE, 0, NULL, "value loss coefficient"),
    NAMED(ppo.kl_penalty, "kl_penalty", NULL, ALLOY_OPT_ENUM, 0, kl_penalties, "kl, abs or mse"),
    NAMED(ppo.whiten, "whiten", NULL, ALLOY_OPT_BOOL, ALLOY_OPT_VALUED, NULL, "whiten advantages: on or off"),
    ROW(init_kl_coef, ALLOY_OPT_DOUBLE, 0, "beta at the start"),
    NAMED(kl_target, "kl_target", "target", ALLOY_OPT_DOUBLE, 0, NULL, "the adaptive controller's target KL"),
    NAMED(kl_horizon, "kl_horizon", "horizon", ALLOY_OPT_DOUBLE, 0, NULL, "the adaptive controller's horizon"),
    ROW(adaptive_kl, ALLOY_OPT_BOOL, ALLOY_OPT_VALUED, "adapt beta: on or off"),
    ROW(missing_eos_penalty, ALLOY_OPT_DOUBLE, ALLOY_OPT_OPTIONAL, "subtracted from a cut-off response's score"),
    ROW(seed, ALLOY_OPT_UINT64, 0, "prompt order, sampling, minibatch order"),
    ALLOY_OPT_CADENCE_ROWS(alloy_ppo_options),
};
#undef ROW
#undef NAMED

const alloy_schema *alloy_ppo_schema(void) {
    static const alloy_schema s = {ppo_rows, (int)(sizeof ppo_rows / sizeof ppo_rows[0])};
    return &s;
}

alloy_status alloy_ppo_resume_options(const char *dir, alloy_ppo_options *o, char **ckpt) {
    o->missing_eos_penalty = 0.0; // absent from runs saved before it existed
    o->fields.layout = ALLOY_LAYOUT_ALLOY; // and so were layouts: such a run read alloy's fields alone
    alloy_status s = alloy_run_resume_options(dir, ckpt, alloy_ppo_schema(), "ppo", o, o->out_dir, sizeof o->out_dir);
    if (!s) o->tmpl_set = true; // the run's own
    return s;
}

#define BAD(opt, ...) alloy_fail_option(ALLOY_STATUS_USAGE, opt, __VA_ARGS__)
alloy_status ppo_check_options(const alloy_ppo_options *o) {
    if (!o->model_dir[0]) return BAD("model", "is required");
    if (!o->reward_dir[0]) return BAD("reward", "is required");
    if (!o->prompts_path[0]) return BAD("prompts", "is required");
    if (!o->out_dir[0]) return BAD("out", "is required");
    if (o->steps < 0) return BAD("steps", "must be at least 1");
    if (o->batch < 1 || o->batch > 65536) return BAD("batch", "must lie in [1, 65536]");
    if (o->mini_batch < 1 || o->mini_batch > o->batch) return BAD("mini_batch", "must lie in [1, batch]");
    if (o->ppo_epochs < 1 || o->ppo_epochs > 1000) return BAD("ppo_epochs", "must lie in [1, 1000]");
    if (o->gen_batch < 1 || o->gen_batch > 4096) return BAD("gen_batch", "must lie in [1, 4096]");
    if (o->max_new_tokens < 1) return BAD("max_new_tokens", "must be at least 1");
    if (o->seq < 0 || o->seq > (1 << 20)) return BAD("seq", "must lie in [2, 1048576]");
    if (!(o->temperature > 0.0f && o->temperature < 100.0f)) return BAD("temperature", "must lie in (0, 100)");
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f)) return BAD("top_p", "must lie in (0, 1]");
    if (!(o->lr > 0.0 && o->lr < 10.0)) return BAD("lr", "must lie in (0, 10)");
    if (!(o->ppo.gamma >= 0.0 && o->ppo.gamma <= 1.0)) return BAD("gamma", "must lie in [0, 1]");
    if (!(o->ppo.lam >= 0.0 && o->ppo.lam <= 1.0)) return BAD("lam", "must lie in [0, 1]");
    if (!(o->ppo.cliprange > 0.0 && o->ppo.cliprange < 10.0)) return BAD("cliprange", "must lie in (0, 10)");
    if (!(o->ppo.cliprange_value > 0.0 && o->ppo.cliprange_value < 1e6))
        return BAD("cliprange_value", "must be > 0");
    if (!(o->ppo.vf_coef >= 0.0 && o->ppo.vf_coef < 1e6)) return BAD("vf_coef", "must be >= 0");
    if (!(o->init_kl_coef >= 0.0 && o->init_kl_coef < 1e6)) return BAD("init_kl_coef", "must be >= 0");
    if (o->adaptive_kl && !(o->kl_target > 0.0 && o->kl_horizon > 0.0))
        return BAD("kl_target", "and the horizon must be > 0");
    if (!(o->missing_eos_penalty >= 0.0 && o->missing_eos_penalty < 1e6))
        return BAD("missing_eos_penalty", "must be >= 0");
    if (o->ckpt_every < 0) return BAD("ckpt_every", "must be >= 0");
    if (o->keep_ckpts < 1) return BAD("keep_ckpts", "must be at least 1");
    if (o->log_every < 1) return BAD("log_every", "must be at least 1");
    return ALLOY_STATUS_OK;
}
#undef BAD

