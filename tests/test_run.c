/*
 * test_run.c — the one run (src/train/run.c) through the library alone, as a C program that
 * links liballoy would use it: for every objective (lm, distill, sft, reward, dpo, ppo, the
 * learned combiner), with the
 * library's defaults and only the paths and sizes set, a run starts, a second new run into its
 * folder is refused with nothing changed, the run resumes and finishes, a finished run refuses to
 * go on, and a resume from an older checkpoint is refused unless it rewinds (which keeps every
 * checkpoint and metrics line on disk).
 */
#include "alloy/alloy.h"
#include "harness.h"

#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static char base_dir[300];  /* a tiny trained model the alignment runs start from */
static char data_dir[300];  /* random token shards */
static char jsonl[3][320];  /* sft, preference pairs, prompts */
static char sft_dir[400], rm_dir[400]; /* the sft and reward cases' runs, for PPO */

/* Every file's size and bytes under dir folded into one number (to show nothing changed). */
static uint64_t tree_hash_acc;
static int tree_hash_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)ftw;
    tree_hash_acc = alloy_fnv64(tree_hash_acc, path, strlen(path));
    if (flag != FTW_F) return 0;
    char *text = NULL;
    size_t n = 0;
    if (alloy_file_read_all(path, &text, &n) == ALLOY_STATUS_OK) tree_hash_acc = alloy_fnv64(tree_hash_acc, text, n);
    alloy_free(text);
    return 0;
}
static uint64_t tree_hash(const char *dir) {
    tree_hash_acc = ALLOY_FNV64_INIT;
    nftw(dir, tree_hash_one, 16, FTW_PHYS);
    return tree_hash_acc;
}

static int count_lines(const char *path, const char *needle) {
    char *text = NULL;
    int n = 0;
    if (alloy_file_read_all(path, &text, NULL)) return -1;
    for (char *p = text; (p = strstr(p, needle)) != NULL; p++) n++;
    alloy_free(text);
    return n;
}

static void setup(void) {
    const char *tmp = harness_tmpdir();
    snprintf(data_dir, sizeof data_dir, "%s/data", tmp);
    snprintf(base_dir, sizeof base_dir, "%s/base", tmp);
    REQUIRE(alloy_mkdir_p(data_dir) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    REQUIRE(harness_random_dataset(data_dir, 256, 20000, 7) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    alloy_train_options o = alloy_train_defaults();
    snprintf(o.data_dir, sizeof o.data_dir, "%s", data_dir);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", base_dir);
    snprintf(o.preset, sizeof o.preset, "tiny-gpt2");
    o.steps = 2, o.batch = 2, o.seq = 64, o.quiet = true;
    REQUIRE(alloy_train_run(&o, NULL, NULL) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    static const char *names[3] = {"sft.jsonl", "pairs.jsonl", "prompts.jsonl"};
    for (int k = 0; k < 3; k++) {
        snprintf(jsonl[k], sizeof jsonl[k], "%s/%s", tmp, names[k]);
        FILE *f = fopen(jsonl[k], "w");
        REQUIRE(f, "cannot write %s", jsonl[k]);
        for (int i = 0; i < 12; i++) {
            if (k == 0) fprintf(f, "{\"prompt\": \"What is %d+%d?\", \"response\": \"%d.\"}\n", i, i, 2 * i);
            else if (k == 2) fprintf(f, "{\"prompt\": \"What is %d+%d?\"}\n", i, i);
            else fprintf(f, "{\"prompt\": \"What is %d+%d?\", \"chosen\": \"%d.\", \"rejected\": \"%d.\"}\n", i, i, 2 * i, 2 * i + 1);
        }
        fclose(f);
    }
}

/* One objective's run, through callbacks that set its options and run it. */
typedef struct objective_case {
    const char *name;
    alloy_status (*start)(const char *out, int64_t steps);                  /* a new run */
    alloy_status (*resume)(const char *dir, int64_t steps, alloy_resume_mode mode); /* from a run or checkpoint folder */
} objective_case;

static alloy_status lm_start_with(const char *out, int64_t steps, bool distill) {
    alloy_train_options o = alloy_train_defaults();
    snprintf(o.data_dir, sizeof o.data_dir, "%s", data_dir);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    snprintf(o.preset, sizeof o.preset, "tiny-llama");
    o.steps = steps, o.batch = 2, o.seq = 32, o.ckpt_every = 2, o.keep_ckpts = 10, o.quiet = true;
    if (!distill) return alloy_train_run(&o, NULL, NULL);
    alloy_distill_options d = alloy_distill_defaults();
    snprintf(d.teachers[0], sizeof d.teachers[0], "%s", base_dir);
    d.n_teachers = 1;
    return alloy_distill_run(&o, &d, NULL, NULL);
}
static alloy_status lm_resume_with(const char *dir, int64_t steps, alloy_resume_mode mode, bool distill) {
    alloy_train_options o = alloy_train_defaults();
    char *ck = NULL;
    alloy_status s = alloy_train_resume_options(dir, &o, &ck);
    if (s) return s;
    o.steps = steps, o.quiet = true, o.resume_mode = mode;
    alloy_distill_options d;
    if (!distill) s = alloy_train_run(&o, ck, NULL);
    else if (!(s = alloy_distill_from_json(&d, o.objective_json, dir))) s = alloy_distill_run(&o, &d, ck, NULL);
    alloy_free(ck);
    return s;
}
static alloy_status lm_start(const char *out, int64_t steps) { return lm_start_with(out, steps, false); }
static alloy_status lm_resume(const char *d, int64_t steps, alloy_resume_mode m) { return lm_resume_with(d, steps, m, false); }
static alloy_status distill_start(const char *out, int64_t steps) { return lm_start_with(out, steps, true); }
static alloy_status distill_resume(const char *d, int64_t steps, alloy_resume_mode m) { return lm_resume_with(d, steps, m, true); }

static alloy_status align_start(alloy_align_kind kind, const char *out, int64_t steps) {
    alloy_align_options o = alloy_align_defaults(kind);
    snprintf(o.model_dir, sizeof o.model_dir, "%s", base_dir);
    snprintf(o.data_path, sizeof o.data_path, "%s", jsonl[kind == ALLOY_ALIGN_SFT ? 0 : 1]);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.steps = steps, o.batch = 2, o.ckpt_every = 2, o.keep_ckpts = 10, o.quiet = true;
    return alloy_align_run(&o, NULL, NULL);
}
static alloy_status align_resume(const char *dir, int64_t steps, alloy_resume_mode mode) {
    alloy_align_options o = alloy_align_defaults(ALLOY_ALIGN_SFT);
    char *ck = NULL;
    alloy_status s = alloy_align_resume_options(dir, &o, &ck);
    if (s) return s;
    o.steps = steps, o.quiet = true, o.resume_mode = mode;
    s = alloy_align_run(&o, ck, NULL);
    alloy_free(ck);
    return s;
}
static alloy_status sft_start(const char *out, int64_t steps) {
    snprintf(sft_dir, sizeof sft_dir, "%s", out);
    return align_start(ALLOY_ALIGN_SFT, out, steps);
}
static alloy_status reward_start(const char *out, int64_t steps) {
    snprintf(rm_dir, sizeof rm_dir, "%s", out);
    return align_start(ALLOY_ALIGN_REWARD, out, steps);
}
static alloy_status dpo_start(const char *out, int64_t steps) { return align_start(ALLOY_ALIGN_DPO, out, steps); }

static alloy_status ppo_start(const char *out, int64_t steps) {
    alloy_ppo_options o = alloy_ppo_defaults();
    snprintf(o.model_dir, sizeof o.model_dir, "%s", sft_dir);
    snprintf(o.reward_dir, sizeof o.reward_dir, "%s", rm_dir);
    snprintf(o.prompts_path, sizeof o.prompts_path, "%s", jsonl[2]);
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.steps = steps, o.batch = 2, o.max_new_tokens = 4, o.ppo_epochs = 1, o.ckpt_every = 2, o.keep_ckpts = 10, o.quiet = true;
    return alloy_ppo_run(&o, NULL);
}
static alloy_status ppo_resume(const char *dir, int64_t steps, alloy_resume_mode mode) {
    alloy_ppo_options o = alloy_ppo_defaults();
    char *ck = NULL;
    alloy_status s = alloy_ppo_resume_options(dir, &o, &ck);
    if (s) return s;
    o.steps = steps, o.quiet = true, o.resume_mode = mode;
    s = alloy_ppo_run(&o, ck);
    alloy_free(ck);
    return s;
}

/* The learned combiner over two members (the lm case's base model and a second one). */
static alloy_status combiner_run(const char *out, int64_t steps, const char *resume, alloy_resume_mode mode) {
    alloy_model *ms[2] = {NULL, NULL};
    alloy_dataset *ds = NULL;
    alloy_combiner *c = NULL;
    char *base = NULL;
    alloy_status s = alloy_checkpoint_resolve(base_dir, &base);
    if (!s) s = alloy_model_load(&ms[0], base, 2, 32);
    if (!s) s = alloy_model_load(&ms[1], base, 2, 32);
    alloy_free(base);
    if (!s) s = alloy_dataset_open(&ds, data_dir, 0.1);
    if (!s) s = alloy_combiner_create(&c, ms, NULL, 2);
    alloy_combiner_train_options o = alloy_combiner_train_defaults();
    snprintf(o.out_dir, sizeof o.out_dir, "%s", out);
    o.steps = steps, o.batch = 2, o.seq = 32, o.ckpt_every = 2, o.keep_ckpts = 10, o.eval_windows = 4, o.quiet = true;
    o.resume_mode = mode;
    if (!s) s = alloy_combiner_train(c, ms, 2, ds, &o, resume, NULL);
    alloy_combiner_destroy(c);
    alloy_dataset_close(ds);
    alloy_model_destroy(ms[0]);
    alloy_model_destroy(ms[1]);
    return s;
}
static alloy_status combiner_start(const char *out, int64_t steps) { return combiner_run(out, steps, NULL, ALLOY_RESUME_REFUSE); }
/* A run folder resumes from its latest checkpoint; the run folder a checkpoint belongs to is two up. */
static alloy_status combiner_resume(const char *dir, int64_t steps, alloy_resume_mode mode) {
    char run[400], *ck = NULL;
    snprintf(run, sizeof run, "%s", dir);
    char *cut = strstr(run, "/checkpoints/");
    if (cut) *cut = '\0';
    alloy_status s = cut ? ALLOY_STATUS_OK : alloy_run_latest(dir, &ck);
    if (!s) s = combiner_run(run, steps, cut ? dir : ck, mode);
    alloy_free(ck);
    return s;
}

static const objective_case cases[] = {
    {"lm", lm_start, lm_resume},
    {"distill", distill_start, distill_resume},
    {"sft", sft_start, align_resume},
    {"reward", reward_start, align_resume},
    {"dpo", dpo_start, align_resume},
    {"ppo", ppo_start, ppo_resume},
    {"combiner", combiner_start, combiner_resume},
};

static void run_case(const objective_case *c) {
    char out[400], ck2[480], latest[480], metrics[480];
    snprintf(out, sizeof out, "%s/%s", harness_tmpdir(), c->name);
    snprintf(ck2, sizeof ck2, "%s/checkpoints/step-00000002", out);
    snprintf(latest, sizeof latest, "%s/latest", out);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    // start
    REQUIRE(c->start(out, 4) == ALLOY_STATUS_OK, "%s: start: %s", c->name, alloy_last_error());
    EXPECT(count_lines(latest, "step-00000004") == 1, "%s: latest names step 4", c->name);
    // refuse to overwrite
    uint64_t before = tree_hash(out);
    EXPECT(c->start(out, 4) == ALLOY_STATUS_USAGE && says("already holds a run"), "%s: a second new run: %s", c->name,
           alloy_last_error());
    EXPECT(tree_hash(out) == before, "%s: the refused run changed its folder", c->name);
    // resume and finish
    REQUIRE(c->resume(out, 6, ALLOY_RESUME_REFUSE) == ALLOY_STATUS_OK, "%s: resume: %s", c->name, alloy_last_error());
    EXPECT(count_lines(latest, "step-00000006") == 1, "%s: the resumed run reached step 6", c->name);
    EXPECT(count_lines(metrics, "\"type\":\"train\"") == 6, "%s: six train lines", c->name);
    EXPECT(c->resume(out, 6, ALLOY_RESUME_REFUSE) == ALLOY_STATUS_USAGE && says("already at step 6"), "%s: %s", c->name,
           alloy_last_error());
    // an older checkpoint: refused with nothing changed, then a rewind that keeps everything
    before = tree_hash(out);
    EXPECT(c->resume(ck2, 7, ALLOY_RESUME_REFUSE) == ALLOY_STATUS_USAGE && says("which resuming would lose"), "%s: %s",
           c->name, alloy_last_error());
    EXPECT(tree_hash(out) == before, "%s: the refused resume changed the run folder", c->name);
    REQUIRE(c->resume(ck2, 3, ALLOY_RESUME_REWIND) == ALLOY_STATUS_OK, "%s: rewind: %s", c->name, alloy_last_error());
    char aside[520];
    snprintf(aside, sizeof aside, "%s/rewound-1/checkpoints/step-00000006", out);
    EXPECT(alloy_is_dir(aside), "%s: step 6 set aside", c->name);
    snprintf(aside, sizeof aside, "%s/rewound-1/metrics.jsonl", out);
    EXPECT(count_lines(aside, "\"type\":\"train\"") == 6, "%s: the six train lines set aside", c->name);
    EXPECT(count_lines(metrics, "\"type\":\"train\"") == 3, "%s: the rewound run has three", c->name);
}

static void test_setup(void) { setup(); }
static void test_lm(void) { run_case(&cases[0]); }
static void test_distill(void) { run_case(&cases[1]); }
static void test_sft(void) { run_case(&cases[2]); }
static void test_reward(void) { run_case(&cases[3]); }
static void test_dpo(void) { run_case(&cases[4]); }
static void test_ppo(void) { run_case(&cases[5]); }
static void test_combiner(void) { run_case(&cases[6]); }

int main(void) {
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    RUN(test_setup);
    RUN(test_lm);
    RUN(test_distill);
    RUN(test_sft);
    RUN(test_reward);
    RUN(test_dpo);
    RUN(test_ppo);
    RUN(test_combiner);
    return harness_exit();
}
