/*
 * cli.h — what the verbs of the alloy command share: a flag parser and error reporting.
 *
 * Each verb declares its flags in a table; cli_parse fills them from argv and reports an
 * unknown flag, a missing value or a bad number as a usage error (exit status 2). Library
 * errors are printed as one line "alloy VERB: error: MESSAGE" and exit with status 1.
 */
#ifndef ALLOY_CLI_H
#define ALLOY_CLI_H

#include "alloy/alloy.h"

typedef enum cli_kind {
    CLI_STR,   /* const char *: the next argument */
    CLI_LIST,  /* cli_list: one or more arguments up to the next flag; repeatable */
    CLI_INT,   /* int */
    CLI_I64,   /* int64_t */
    CLI_U64,   /* uint64_t */
    CLI_DBL,   /* double */
    CLI_FLOAT, /* float */
    CLI_BOOL,  /* bool: set to true, takes no value */
    CLI_OPTION,/* a row of an option schema (alloy/options.h); dst is a cli_option_ref */
} cli_kind;

typedef struct cli_list {
    const char **items;
    int n;
} cli_list;

typedef struct cli_flag {
    const char *name; /* without the leading "--" */
    cli_kind kind;
    void *dst;
    bool seen;        /* set by cli_parse */
} cli_flag;

/* What a CLI_OPTION flag's dst points to: the options struct, its schema and the row. */
typedef struct cli_option_ref {
    const alloy_schema *schema;
    const alloy_option *option;
    void *opts;
} cli_option_ref;

/* Parses argv[1..] (argv[0] is the verb). Positional arguments go to *positional (may be
 * NULL: then none are allowed). Returns 0 to go on, 1 if --help was printed (exit 0), 2 on a
 * usage error (already printed). */
int cli_parse(const char *verb, int argc, char **argv, cli_flag *flags, int n_flags, const char *help,
              cli_list *positional);
/* Frees the items of every CLI_LIST flag of the table (cli_parse allocates them). */
void cli_free_lists(cli_flag *flags, int n_flags);
/* The flag of that name (to ask whether it was given). */
const cli_flag *cli_find(const cli_flag *flags, int n_flags, const char *name);
/* Prints "alloy VERB: error: <last error>" and returns the exit status for the status. */
int cli_fail(const char *verb, alloy_status s);
/* Prints a usage error and returns 2. */
int cli_usage(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ---- flags from the library's option schemas (cli_schema.c) ---- */

/* Appends to flags[*n .. cap) a flag for every row of s that has one, writing into opts (the
 * library parses the value: alloy_options_set). Error messages about an option of s then show
 * its flag. */
void cli_schema_flags(const alloy_schema *s, void *opts, cli_flag *flags, int *n, int cap);
/* set[i]: whether the flag of row i of s was given. */
void cli_schema_given(const alloy_schema *s, const cli_flag *flags, int n, bool *set);
/* On --resume: saved takes what the flags given may change (the library decides which); the
 * option `except` (may be NULL) is left out. 0, or the exit status of the error (printed). */
int cli_schema_resume(const char *verb, const alloy_schema *s, void *saved, const void *given, const cli_flag *flags,
                      int n, const char *except);
/* The last error's message, an option's name shown as its flag ("--lr must ..."); buf holds it. */
const char *cli_error_text(char *buf, size_t size);

/* --help of the data-layout flags (alloy_data_fields: sft, reward, dpo, score, ppo). */
#define CLI_DATA_FIELDS_HELP                                                                                 \
    "  --layout NAME         the records' layout (default auto: each file's first record decides):\n"        \
    "                        alloy (prompt/response, messages, chosen/rejected, responses), alpaca\n"     \
    "                        (instruction, input, output or response), sharegpt (conversations of\n"      \
    "                        from/value), openai (messages of role/content), trl (prompt, chosen,\n"      \
    "                        rejected) or hh-rlhf (chosen and rejected \"\\n\\nHuman: ...\\n\\nAssistant: ...\"\n" \
    "                        transcripts: their shared dialogue is the prompt)\n"                         \
    "  --prompt-field NAME   the records' field that holds the prompt (alpaca: the instruction)\n"        \
    "  --response-field NAME the response (alpaca: the output)\n"                                         \
    "  --chosen-field NAME   the preferred response (hh-rlhf: its transcript)\n"                          \
    "  --rejected-field NAME the other one\n"                                                             \
    "  --messages-field NAME the conversation (sharegpt: its turns)\n"

/* From now on SIGINT and SIGTERM set the flag returned (a run stops after its step, with a
 * checkpoint; the verb then exits 130). */
volatile int *cli_catch_stop(void);
/* The default thread count, before a verb runs: OMP_NUM_THREADS when set, else the cores free
 * now (alloy_threads_use), saying so on a terminal when that is fewer than all. */
void cli_default_threads(void);
/* Applies --threads (0: leave the default). */
void cli_set_threads(int threads);

/* Ensembles where a model is sampled (generate, sample, chat: --model A B ... --member-weights
 * W ... --ensemble probs|logits). */
/* Checks the model count (at most ALLOY_ENGINE_MAX_MEMBERS), parses --member-weights (one
 * number >= 0 per model, or none: equal) into weights and --ensemble into *mode (probs or
 * logits). Returns 0, or 2 after printing the usage error. */
int cli_ensemble_options(const char *verb, int n_models, const cli_list *weight_args, const char *mode_name,
                         float *weights, alloy_ensemble_mode *mode);
/* MISMATCH, naming both, unless ck can join an ensemble with first (alloy_checkpoint_compatible:
 * the same vocabulary size and tokenizer). */
alloy_status cli_check_member(alloy_checkpoint *first, alloy_checkpoint *ck);
/* Opens each of paths (any model path: alloy_checkpoint_open) into dirs[i], its checkpoint
 * folder, loads its model for an engine (one row of activations: the engine keeps its own) into
 * ms[i] and checks every member after the first against it (cli_check_member). *n is how many
 * were tried, on failure too (the dirs and models to free); *least_ctx the members' least
 * max_seq_len; *first the first member's checkpoint (its tokenizer and template), NULL if it did
 * not open: alloy_checkpoint_close it, on failure too. At most ALLOY_ENGINE_MAX_MEMBERS paths
 * (cli_ensemble_options checks). */
alloy_status cli_load_members(const cli_list *paths, char **dirs, alloy_model **ms, int *n, int *least_ctx,
                              alloy_checkpoint **first);
/* An engine with options eo over the model ms[0] (n = 1), or an ensemble engine over one such
 * engine per model of ms (n >= 2) combined as weights (NULL: equal) and mode say. */
alloy_status cli_engine_create(alloy_engine **out, alloy_model *const *ms, int n, const alloy_engine_options *eo,
                               const float *weights, alloy_ensemble_mode mode);

int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_distill(int argc, char **argv); /* train.c */
int cmd_sample(int argc, char **argv);
int cmd_generate(int argc, char **argv); /* generate.c */
int cmd_chat(int argc, char **argv);     /* chat.c */
int cmd_inspect(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_import(int argc, char **argv);  /* convert.c */
int cmd_export(int argc, char **argv);  /* convert.c */
int cmd_sft(int argc, char **argv);     /* align.c */
int cmd_reward(int argc, char **argv);  /* align.c */
int cmd_dpo(int argc, char **argv);     /* align.c */
int cmd_score(int argc, char **argv);   /* align.c */
int cmd_ppo(int argc, char **argv);     /* ppo.c */
int cmd_merge(int argc, char **argv);   /* merge.c */
int cmd_grow(int argc, char **argv);
int cmd_moe(int argc, char **argv);    /* moe.c */
int cmd_ensemble(int argc, char **argv); /* ensemble.c: alloy ensemble train */
/* `alloy tokenizer train`: learns a BPE from the files and folders given (tokenizer_train.c). */
int cmd_tokenizer_train(const char *const *inputs, int n_inputs, int vocab_size, const char *const *specials, int n_specials,
                        int min_frequency, bool quiet, const char *out);

/* --rewind and --branch-from: how `verb` resumes from a checkpoint older than its run's newest.
 * A branch resumes from `branch` into the new run folder `out` (*resume becomes branch). Returns 0,
 * or the exit code of a usage error (printed). */
int cli_resume_mode(const char *verb, const char **resume, const char *branch, bool rewind, const char *out,
                    alloy_resume_mode *mode);
/* Copies --out into dst (cap bytes); the exit code of a usage error when it does not fit. */
int put_out(const char *verb, const char *out, char *dst, size_t cap);

#endif
