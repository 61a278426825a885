/*
 * main.c — the alloy command: dispatches `alloy VERB ...` to one file per verb.
 *
 * Two settings are read only as a library loads, before main, so the command sets them and
 * re-executes itself once when they are unset (ALLOY_NO_REEXEC=1 turns this off):
 *   - OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512: OpenBLAS (0.3.21) takes modern
 *     AVX-512 CPUs for Haswell and runs its AVX2 kernels;
 *   - GOMP_SPINCOUNT=ALLOY_SPINCOUNT when neither it nor OMP_WAIT_POLICY is set: an OpenMP
 *     thread that waits for a core held by another process then sleeps after a short spin
 *     instead of spinning for milliseconds (4x to 50x slower on a busy machine).
 * Then the thread count: the cores free now, unless OMP_NUM_THREADS or --threads says
 * (cli_default_threads).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALLOY_VERSION "0.1.0"

static const char usage[] =
    "usage: alloy <verb> [flags]    (alloy <verb> --help for each)\n"
    "\n"
    "  prepare   text, JSONL or JSON files or folders -> token shards (bytes, or a BPE tokenizer)\n"
    "  train     train a GPT-2 or Llama-family model on token shards (resumable)\n"
    "  distill   train a student to match a teacher or an ensemble (KL, reverse KL, JSD)\n"
    "  sft       supervised fine-tuning on prompt/response or chat JSONL (loss on responses only)\n"
    "  reward    train a reward model (scalar head) on preference pairs or rankings\n"
    "  score     a reward model's score of each response in a JSONL file\n"
    "  dpo       direct preference optimisation (sigmoid, IPO, label smoothing) against a frozen reference\n"
    "  ppo       RLHF with PPO: rollouts with the KV cache, a reward model, a KL penalty, a value head\n"
    "  sample    generate text from a trained model\n"
    "  generate  continue prompts with a KV cache: quantised weights, samplers, stop strings, batches\n"
    "  chat      talk with a chat model in the terminal (streams replies, keeps the KV cache)\n"
    "  inspect   what a checkpoint, safetensors file, shard or data file holds (a data file: its layout, verbs)\n"
    "  tokenizer encode, decode, train or describe a tokenizer (byte-level BPE, GPT-2's)\n"
    "  eval      held-out loss and perplexity of a model on token shards\n"
    "  import    a Hugging Face folder, GGUF, llm.c or llama2.c file -> a checkpoint folder\n"
    "  export    a checkpoint -> a Hugging Face folder, GGUF (f32 ... q4_k) or llm.c file\n"
    "  merge     models -> one model by a mergekit-style YAML recipe (linear, slerp, ties, dare, ...)\n"
    "  grow      a deeper (SOLAR depth up-scaling, any layer plan) or wider-MLP (Net2Net) model\n"
    "  moe       dense models -> one mixture of experts (Branch-Train-MiX; Mixtral layout for Llama)\n"
    "  ensemble  train a learned combiner: per-token mixing weights over models from their hidden states\n"
    "\n"
    "  alloy --version\n";

static void set_loader_env(char **argv) {
    if (getenv("ALLOY_NO_REEXEC")) return;
    bool again = false;
    __builtin_cpu_init();
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f")) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        again = true;
    }
    if (!getenv("GOMP_SPINCOUNT") && !getenv("OMP_WAIT_POLICY")) {
        setenv("GOMP_SPINCOUNT", ALLOY_SPINCOUNT, 1);
        again = true;
    }
    if (again) execv("/proc/self/exe", argv); // only returns on failure: then run with the defaults
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs("usage: alloy <verb> [flags] (alloy --help lists the verbs)\n", stderr);
        return 2;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(verb, "--version")) {
        printf("alloy %s\n", ALLOY_VERSION);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } verbs[] = {{"prepare", cmd_prepare}, {"train", cmd_train}, {"distill", cmd_distill}, {"sft", cmd_sft}, {"reward", cmd_reward}, {"score", cmd_score}, {"dpo", cmd_dpo}, {"ppo", cmd_ppo}, {"sample", cmd_sample}, {"generate", cmd_generate}, {"chat", cmd_chat}, {"inspect", cmd_inspect}, {"tokenizer", cmd_tokenizer},
                 {"eval", cmd_eval}, {"import", cmd_import}, {"export", cmd_export}, {"merge", cmd_merge}, {"grow", cmd_grow}, {"moe", cmd_moe}, {"ensemble", cmd_ensemble}};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (!strcmp(verb, verbs[i].name)) {
            set_loader_env(argv);
            cli_default_threads();
            return verbs[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "alloy: unknown verb '%s' (alloy --help lists the verbs)\n", verb);
    return 2;
}
