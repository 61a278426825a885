/*
 * test_llmc.c — llm.c and llama2.c checkpoint files (src/io/llmc.c) against an independent
 * reader and forward of each format, tests/reference/llmc_ref.py.
 *
 * llama2.c:
 *   - stories260K.bin (../shared/data/models; a real Llama trained on TinyStories, 8 heads over
 *     4 KV heads, shared classifier): the config, alloy's logits on a 100-token sequence
 *     against the reference's run.c forward, and 200 greedy steps from token 1 — alloy's full
 *     recompute against the reference's KV-cached steps and against the ids recorded below
 *     (which llama2.c's own run.c gives too, checked when they were recorded). Skipped ("# SKIP
 *     data: ...") when the data is absent.
 *   - synthetic files the reference writes: shared and unshared classifier, n_kv_heads equal to,
 *     below, and 1 of n_heads, legacy and version-1 layouts; logits over the whole seq_len, and
 *     the tensor mapping itself read back from the file (v_proj as is, q_proj/k_proj rows
 *     permuted from interleaved rotary pairs to rotate-half, the classifier tied or not).
 *   - corrupt files: each refused with one line naming the file and the problem; a header
 *     fuzz; out-of-memory at every allocation of an import.
 * llm.c:
 *   - a seeded GPT-2 exported and imported back: bitwise equal weights and config, the same
 *     file again on re-export, the header, the zero padding of the vocabulary, the transposed
 *     layout, atomic replacement, refusals of models llm.c cannot hold;
 *   - the reference reads the exported file as train_gpt2.c lays it out and runs GPT-2 in torch:
 *     alloy's logits from the imported model must agree;
 *   - version 5: the reference rewrites the file in bf16 as train_gpt2.py does; the import must
 *     give exactly the bf16-rounded weights and the logits of the reference on that file;
 *   - corrupt files (truncated, bad magic, bad version, sizes that disagree with the length,
 *     vocab_size > padded_vocab_size, zero and negative sizes), a fuzz, out-of-memory in import
 *     and export.
 * Logits must agree to max|a - b| <= 1e-4 · max|reference| (fp32 on both sides; measured
 * figures are printed on "# " lines).
 *
 * The reference needs PYTHON (harness.h) with numpy and torch (Debian: python3-numpy,
 * python3-torch). Without them the comparisons skip ("# SKIP oracle: ..."), as in test_model.c.
 */
#include "alloy/llmc.h"
#include "alloy/model.h"
#include "io_util.h"

#include <limits.h>
#include <sys/wait.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LOGIT_TOL 1e-4 /* max|a - b| / max|b| */
#define GREEDY_STEPS 200

/* stories260K.bin, greedy from token 1 (llama2.c's BOS), 200 steps: as llama2.c's run.c
 * prints them with -t 0 (and as tests/reference/llmc_ref.py computes them). */
static const int32_t stories_greedy[GREEDY_STEPS] = {
    461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283, 452, 288, 13,
    431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 293, 430, 417, 363, 416, 315, 342,
    418, 424, 400, 442, 402, 303, 266, 299, 374, 466, 396, 303, 271, 362, 390, 469, 306, 469, 423, 314,
    347, 305, 356, 333, 333, 333, 333, 425, 377, 354, 304, 304, 304, 304, 304, 330, 341, 382, 468, 473,
    473, 402, 402, 299, 299, 483, 456, 473, 456, 473, 465, 465, 465, 341, 317, 436, 363, 454, 315, 377,
    360, 408, 472, 453, 327, 316, 266, 417, 277, 299, 369, 283, 266, 417, 264, 277, 277, 277, 439, 456,
    407, 407, 309, 341, 436, 330, 466, 377, 422, 436, 472, 465, 466, 407, 407, 407, 407, 407, 465, 466,
    473, 330, 330, 386, 431, 304, 304, 472, 453, 380, 299, 299, 483, 475, 452, 477, 295, 412, 302, 330,
    275, 377, 271, 341, 438, 452, 287, 302, 341, 438, 303, 303, 303, 283, 266, 417, 277, 277, 277, 409,
    281, 303, 303, 462, 402, 402, 402, 402, 299, 299, 277, 333, 333, 333, 333, 333, 299, 299, 299, 292,
};

/* ---- helpers ---------------------------------------------------------------------------- */

/* What llmc_ref.py imports (harness_need_python). */
#define REF_MODULES "numpy, torch"

/* Runs llmc_ref.py with `args` (printf-style); returns its exit status (-1: the case skips, the
 * oracle is missing). */
static int run_ref(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_ref(const char *fmt, ...) {
    char args[6144];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    ALLOY_ASSERT(n > 0 && (size_t)n < sizeof args);
    return harness_reference(REF_MODULES, "llmc_ref.py", "%s", args);
}

/* Commands for one run of llmc_ref.py (its "batch" command): NumPy and torch start once. */
typedef struct batch {
    char text[32768]; /* one command line per line */
    size_t n;
} batch;

static void batch_add(batch *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void batch_add(batch *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->text + b->n, sizeof b->text - b->n, fmt, ap);
    va_end(ap);
    ALLOY_ASSERT(k > 0 && b->n + (size_t)k + 1 < sizeof b->text);
    b->n += (size_t)k;
    b->text[b->n++] = '\n';
    b->text[b->n] = '\0';
}

/* Writes the batch into dir and runs it; returns the exit status. */
static int batch_run(const batch *b, const char *dir) {
    char path[320];
    snprintf(path, sizeof path, "%s/batch.txt", dir);
    write_bytes(path, b->text, b->n);
    return run_ref("batch '%s'", path);
}

/* "1,2,3" into buf. */
static const char *token_list(char *buf, size_t size, const int32_t *tokens, int n) {
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && k < size; i++) k += (size_t)snprintf(buf + k, size - k, "%s%d", i ? "," : "", tokens[i]);
    ALLOY_ASSERT(k < size);
    return buf;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float lef32(const uint8_t *p) {
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void set_le32(uint8_t *p, int32_t v) {
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

/* A raw little-endian file of exactly n 4-byte values (floats or int32) into a malloc'd
 * array; NULL (with a failed check) otherwise. */
static void *read_raw4(const char *path, size_t n) {
    size_t size;
    uint8_t *b = read_bytes(path, &size);
    if (!b || size != 4 * n) {
        EXPECT(0, "%s: expected %zu bytes, got %zu", path, 4 * n, b ? size : 0);
        free(b);
        return NULL;
    }
    uint32_t *out = malloc(4 * n);
    for (size_t i = 0; i < n; i++) out[i] = le32(b + 4 * i);
    free(b);
    return out;
}

/* max|a - b| / max|b| over n values. */
static double scaled_diff(const float *a, const float *b, size_t n, double *scale) {
    double dmax = 0.0, bmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > dmax || isnan(d)) dmax = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    *scale = bmax;
    return bmax > 0.0 ? dmax / bmax : (dmax == 0.0 ? 0.0 : INFINITY);
}

/* Tensors whose name, shape or bytes differ between two models (-1: different tables). */
static int model_diff(const alloy_model *a, const alloy_model *b) {
    if (a->n_tensors != b->n_tensors) return -1;
    int diff = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const alloy_tensor_info *x = &a->tensors[i], *y = &b->tensors[i];
        bool same = !strcmp(x->name, y->name) && x->ndim == y->ndim && x->numel == y->numel &&
                    x->shape[0] == y->shape[0] && x->shape[1] == y->shape[1] &&
                    !memcmp(a->params_memory + x->offset, b->params_memory + y->offset, sizeof(float) * x->numel);
        diff += !same;
    }
    return diff;
}

static const float *param(const alloy_model *m, const char *name) {
    const alloy_tensor_info *t = alloy_model_find_tensor(m, name);
    ALLOY_ASSERT(t);
    return m->params_memory + t->offset;
}

/* The failure of an import or export: a status other than OK, no model, one line naming the
 * file and containing `needle`. */
#define EXPECT_REFUSED(s, m, path, needle, label)                                                        \
    do {                                                                                                 \
        EXPECT((s) != ALLOY_STATUS_OK && (m) == NULL, "%s: accepted", label);                            \
        EXPECT(one_line() && says(path) && says(needle), "%s: message \"%s\" should name %s and say \"%s\"", \
               label, alloy_last_error(), path, needle);                                                 \
    } while (0)

/* Runs the model on tokens (1, T) and copies the logits (T, V) out. */
static float *logits_of(alloy_model *m, const int32_t *tokens, int T) {
    alloy_status s = alloy_model_forward(m, tokens, 1, T);
    EXPECT(s == ALLOY_STATUS_OK, "forward: %s", alloy_last_error());
    if (s) return NULL;
    size_t n = (size_t)T * (size_t)m->config.vocab_size;
    float *out = malloc(sizeof(float) * n);
    memcpy(out, alloy_model_logits(m), sizeof(float) * n);
    return out;
}

static int argmax_row(const float *row, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

static void random_tokens(int32_t *t, int n, int V, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) t[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
}

static void test_reference_available(void) { NEED_PYTHON(REF_MODULES); }

/* ---- llama2.c: the real model ----------------------------------------------------------- */

static void test_llama2c_stories260k(void) {
    char path[512];
    NEED_DATA(path, "models/stories260K.bin");
    alloy_model *m;
    REQUIRE(alloy_llama2c_import(&m, path) == ALLOY_STATUS_OK, "%s", alloy_last_error());
    const alloy_config *c = &m->config;
    EXPECT(c->family == ALLOY_FAMILY_LLAMA && c->d_model == 64 && c->d_ff == 172 && c->n_layer == 5 &&
               c->n_head == 8 && c->n_kv_head == 4 && c->vocab_size == 512 && c->max_seq_len == 512 &&
               c->tie_embeddings && c->norm_eps == 1e-5 && c->rope_theta == 10000.0,
           "config: C %d F %d L %d H %d KV %d V %d T %d tied %d eps %g theta %g", c->d_model, c->d_ff, c->n_layer,
           c->n_head, c->n_kv_head, c->vocab_size, c->max_seq_len, c->tie_embeddings, c->norm_eps, c->rope_theta);
    EXPECT(m->max_B == 1 && m->max_T == 512 && m->params.lm_head == m->params.wte, "buffers and tied head");

    // alloy's greedy continuation: full recompute, argmax of the last position (one thread: on
    // a model this small, threads cost more than they give)
    int32_t seq[GREEDY_STEPS + 1] = {1};
    int steps = 0;
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    for (; steps < GREEDY_STEPS; steps++) {
        if (alloy_model_forward(m, seq, 1, steps + 1)) break;
        seq[steps + 1] = argmax_row(alloy_model_logits(m) + (size_t)steps * 512, 512);
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    EXPECT(steps == GREEDY_STEPS, "forward: %s", alloy_last_error());
    int same_recorded = 0;
    while (same_recorded < GREEDY_STEPS && seq[same_recorded + 1] == stories_greedy[same_recorded]) same_recorded++;
    EXPECT(same_recorded == GREEDY_STEPS, "greedy: id %d is %d, recorded %d", same_recorded,
           seq[same_recorded + 1], stories_greedy[same_recorded]);
    char first[256];
    token_list(first, sizeof first, seq + 1, 30);
    printf("# stories260K greedy from 1: %d of %d ids as recorded; first 30: %s\n", same_recorded, GREEDY_STEPS,
           first);

    NEED_PYTHON(REF_MODULES);
    enum { T = 100 };
    int32_t tokens[T];
    random_tokens(tokens, T, 512, 260);
    tokens[0] = 1;
    char dir[256], lpath[320], ipath[320], list[1024];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(lpath, sizeof lpath, "%s/logits.bin", dir);
    snprintf(ipath, sizeof ipath, "%s/ids.bin", dir);
    int rc = run_ref("llama2c-run '%s' --tokens %s --logits '%s' --greedy %d --start 1 --ids '%s'", path,
                     token_list(list, sizeof list, tokens, T), lpath, GREEDY_STEPS, ipath);
    REQUIRE(rc == 0, "llmc_ref.py failed with status %d (its message is above)", rc);
    float *ref = read_raw4(lpath, (size_t)T * 512);
    int32_t *ids = read_raw4(ipath, GREEDY_STEPS);
    float *ours = logits_of(m, tokens, T);
    if (ref && ours) {
        double scale, e = scaled_diff(ours, ref, (size_t)T * 512, &scale);
        EXPECT(e <= LOGIT_TOL, "logits differ: %.3g of their scale %.3g", e, scale);
        printf("# stories260K logits over %d tokens: max|alloy - run.c reference| = %.2e of their scale %.2f\n", T,
               e, scale);
    }
    if (ids) {
        int same = 0;
        while (same < GREEDY_STEPS && ids[same] == seq[same + 1]) same++;
        EXPECT(same == GREEDY_STEPS, "greedy: step %d: alloy %d, reference %d", same, seq[same + 1], ids[same]);
        printf("# stories260K greedy: alloy and the reference agree on %d of %d ids\n", same, GREEDY_STEPS);
    }
    free(ref);
    free(ids);
    free(ours);
    alloy_model_destroy(m);
}

/* ---- llama2.c: synthetic files ---------------------------------------------------------- */

typedef struct l2c_case {
    const char *label;
    int dim, hidden, layers, heads, kv_heads, vocab, seq_len;
    bool unshared;
    int version;
} l2c_case;

static const l2c_case l2c_cases[] = {
    {"legacy, shared, KV = H", 48, 100, 2, 4, 4, 67, 32, false, 0},
    {"legacy, unshared, GQA 8/2", 64, 96, 3, 8, 2, 71, 40, true, 0},
    {"legacy, shared, MQA 4/1", 32, 64, 2, 4, 1, 50, 24, false, 0},
    {"version 1, unshared, GQA 4/2", 32, 72, 2, 4, 2, 50, 24, true, 1},
    {"version 1, shared, hd 12", 24, 40, 1, 2, 2, 30, 16, false, 1},
};

#define N_CASES_L2C ((int)(sizeof l2c_cases / sizeof l2c_cases[0]))

/* Checks the mapping of layer 0's attention tensors and the classifier against the bytes of
 * a legacy file (offsets computed here from run.c's order). */
static void check_legacy_mapping(const alloy_model *m, const l2c_case *k, const char *path) {
    size_t size;
    uint8_t *b = read_bytes(path, &size);
    REQUIRE(b, "%s", path);
    const size_t C = (size_t)k->dim, L = (size_t)k->layers, hd = C / (size_t)k->heads, KVD = hd * (size_t)k->kv_heads;
    const size_t F = (size_t)k->hidden, V = (size_t)k->vocab, S = (size_t)k->seq_len;
    size_t emb = 28, rms = emb + 4 * V * C, wq = rms + 4 * L * C, wk = wq + 4 * L * C * C, wv = wk + 4 * L * KVD * C;
    size_t wcls = wv + 4 * (L * KVD * C + L * C * C + L * C + 3 * L * F * C + C + S * hd);
    EXPECT(wcls + (k->unshared ? 4 * V * C : 0) == size, "%s: layout arithmetic (%zu vs %zu bytes)", k->label,
           wcls + (k->unshared ? 4 * V * C : 0), size);
    const float *q = param(m, "model.layers.0.self_attn.q_proj.weight");
    const float *kk = param(m, "model.layers.0.self_attn.k_proj.weight");
    const float *v = param(m, "model.layers.0.self_attn.v_proj.weight");
    int bad_q = 0, bad_k = 0, bad_v = 0, bad_cls = 0;
    for (size_t r = 0; r < C; r++) {
        size_t h = r / hd, a = (r % hd) / (hd / 2), j = r % (hd / 2);
        size_t src = h * hd + 2 * j + a; // our rotate-half row r holds the file's interleaved row src
        for (size_t c = 0; c < C; c++) {
            bad_q += q[r * C + c] != lef32(b + wq + 4 * (src * C + c));
            if (r < KVD) {
                bad_k += kk[r * C + c] != lef32(b + wk + 4 * (src * C + c));
                bad_v += v[r * C + c] != lef32(b + wv + 4 * (r * C + c));
            }
        }
    }
    if (k->unshared) {
        const float *cls = param(m, "lm_head.weight");
        for (size_t i = 0; i < V * C; i++) bad_cls += cls[i] != lef32(b + wcls + 4 * i);
    } else {
        bad_cls = m->params.lm_head != m->params.wte || alloy_model_find_tensor(m, "lm_head.weight") != NULL;
    }
    EXPECT(!bad_q && !bad_k && !bad_v && !bad_cls, "%s: %d q, %d k, %d v, %d classifier values misplaced", k->label,
           bad_q, bad_k, bad_v, bad_cls);
    free(b);
}

static void test_llama2c_synthetic(void) {
    NEED_PYTHON(REF_MODULES);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    static char path[N_CASES_L2C][320], lpath[N_CASES_L2C][320];
    static int32_t tokens[N_CASES_L2C][64];
    static batch bt;
    bt.n = 0;
    for (int i = 0; i < N_CASES_L2C; i++) {
        const l2c_case *k = &l2c_cases[i];
        char list[1024];
        snprintf(path[i], sizeof path[i], "%s/l2c-%d.bin", dir, i);
        snprintf(lpath[i], sizeof lpath[i], "%s/l2c-%d.logits", dir, i);
        // every position up to seq_len: rotary angles at all of them
        ALLOY_ASSERT(k->seq_len <= 64);
        random_tokens(tokens[i], k->seq_len, k->vocab, 500 + (uint64_t)i);
        batch_add(&bt, "llama2c-make '%s' --dim %d --hidden %d --layers %d --heads %d --kv-heads %d --vocab %d "
                  "--seq-len %d --seed %d --version %d%s", path[i], k->dim, k->hidden, k->layers, k->heads,
                  k->kv_heads, k->vocab, k->seq_len, 100 + i, k->version, k->unshared ? " --unshared" : "");
        batch_add(&bt, "llama2c-run '%s' --tokens %s --logits '%s'", path[i],
                  token_list(list, sizeof list, tokens[i], k->seq_len), lpath[i]);
    }
    int rc = batch_run(&bt, dir);
    REQUIRE(rc == 0, "llmc_ref.py failed with status %d (its message is above)", rc);
    double worst = 0.0;
    for (int i = 0; i < N_CASES_L2C; i++) {
        const l2c_case *k = &l2c_cases[i];
        alloy_model *m;
        alloy_status s = alloy_llama2c_import(&m, path[i]);
        EXPECT(s == ALLOY_STATUS_OK, "%s: %s", k->label, alloy_last_error());
        if (s) continue;
        const alloy_config *c = &m->config;
        EXPECT(c->family == ALLOY_FAMILY_LLAMA && c->d_model == k->dim && c->d_ff == k->hidden &&
                   c->n_layer == k->layers && c->n_head == k->heads && c->n_kv_head == k->kv_heads &&
                   c->vocab_size == k->vocab && c->max_seq_len == k->seq_len && c->tie_embeddings == !k->unshared &&
                   c->norm_eps == 1e-5 && c->rope_theta == 10000.0,
               "%s: config", k->label);
        if (k->version == 0) check_legacy_mapping(m, k, path[i]);
        int T = k->seq_len;
        float *ref = read_raw4(lpath[i], (size_t)T * (size_t)k->vocab);
        float *ours = logits_of(m, tokens[i], T);
        if (ref && ours) {
            double scale, e = scaled_diff(ours, ref, (size_t)T * (size_t)k->vocab, &scale);
            EXPECT(e <= LOGIT_TOL, "%s: logits differ: %.3g of their scale %.3g", k->label, e, scale);
            if (e > worst) worst = e;
        }
        free(ref);
        free(ours);
        alloy_model_destroy(m);
    }
    printf("# llama2.c synthetic (%d files: shared/unshared, KV = H, GQA, MQA, legacy and version 1): max|alloy - "
           "reference| = %.2e of the logit scale\n", N_CASES_L2C, worst);
}

/* ---- llama2.c: corrupt files ------------------------------------------------------------ */

/* Lengths of the corrupt-file tables: the whole file, or all but k bytes. */
#define ALL LONG_MAX
#define LESS(k) (-(long)(k))

/* A valid legacy file in memory: header h[7] and seeded values; *n gets its length. */
static uint8_t *legacy_bytes(const int32_t h[7], uint64_t seed, size_t *n) {
    size_t C = (size_t)h[0], F = (size_t)h[1], L = (size_t)h[2], hd = C / (size_t)h[3], KVD = hd * (size_t)h[4];
    size_t V = (size_t)(h[5] < 0 ? -h[5] : h[5]), S = (size_t)h[6];
    size_t floats = V * C + L * C + L * C * C + 2 * L * KVD * C + L * C * C + L * C + 3 * L * F * C + C + S * hd +
                    (h[5] < 0 ? V * C : 0);
    *n = 28 + 4 * floats;
    uint8_t *b = malloc(*n);
    for (int i = 0; i < 7; i++) set_le32(b + 4 * i, h[i]);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    for (size_t i = 0; i < floats; i++) {
        float x = (float)(0.2 * alloy_rng_normal(&rng));
        memcpy(b + 28 + 4 * i, &x, 4);
    }
    return b;
}

/* Imports `bytes` written to `path` with alloy_llama2c_import (or llm.c's importer). */
static alloy_status import_bytes(const char *path, const uint8_t *bytes, size_t n, bool llmc, alloy_model **m) {
    write_bytes(path, bytes, n);
    return llmc ? alloy_llmc_import(m, path) : alloy_llama2c_import(m, path);
}

/* Random header mutations and truncations: never a crash; a refusal is one line naming the
 * file; an acceptance gives a usable model. */
static void fuzz_headers(const char *path, const uint8_t *good, size_t n, size_t header_ints, bool llmc,
                         uint64_t seed, int rounds) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    uint8_t *b = malloc(n + 8);
    int accepted = 0, refused = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(b, good, n);
        size_t len = n;
        int kind = (int)alloy_rng_below(&rng, 4);
        if (kind == 0) { // one field to a value from a menu of edges
            static const int32_t edges[] = {0, -1, 1, 2, 3, 7, 128, 1 << 16, 1 << 20, 1 << 24, INT_MAX, INT_MIN};
            size_t f = alloy_rng_below(&rng, header_ints);
            set_le32(b + 4 * f, edges[alloy_rng_below(&rng, sizeof edges / sizeof edges[0])]);
        } else if (kind == 1) { // one field nudged
            size_t f = alloy_rng_below(&rng, header_ints);
            set_le32(b + 4 * f, (int32_t)le32(b + 4 * f) + (int32_t)alloy_rng_below(&rng, 5) - 2);
        } else if (kind == 2) { // random header bytes
            for (int i = 0; i < 3; i++) b[alloy_rng_below(&rng, 4 * header_ints)] = (uint8_t)alloy_rng_u64(&rng);
        } else { // truncated or extended
            len = alloy_rng_below(&rng, n + 8);
        }
        alloy_model *m = NULL;
        alloy_status s = import_bytes(path, b, len, llmc, &m);
        if (s == ALLOY_STATUS_OK) {
            accepted++;
            EXPECT(m && alloy_model_forward(m, (int32_t[]){0}, 1, 1) == ALLOY_STATUS_OK, "fuzz %d: accepted model "
                   "does not run", r);
            alloy_model_destroy(m);
        } else {
            refused++;
            EXPECT(m == NULL && one_line() && says(path), "fuzz %d: message \"%s\"", r, alloy_last_error());
        }
    }
    free(b);
    printf("# %s header fuzz: %d refused, %d accepted (mutations that left the file consistent)\n",
           llmc ? "llm.c" : "llama2.c", refused, accepted);
}

/* Out of memory at the k-th allocation of an import, for every k until it succeeds: NOMEM and
 * no model each time (LeakSanitizer checks that nothing leaks). */
static void oom_import(const char *path, bool llmc) {
    int k = 1;
    for (; k < 500; k++) {
        alloy_model *m = NULL;
        alloy_alloc_fail_after(k);
        alloy_status s = llmc ? alloy_llmc_import(&m, path) : alloy_llama2c_import(&m, path);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) {
            alloy_model_destroy(m);
            break;
        }
        EXPECT(s == ALLOY_STATUS_NOMEM && m == NULL, "allocation %d failing: status %s, %s", k, alloy_status_name(s),
               alloy_last_error());
    }
    EXPECT(k > 1 && k < 500, "the import never succeeded under allocation failures (k = %d)", k);
}

static void test_llama2c_corrupt(void) {
    char dir[256], path[320];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(path, sizeof path, "%s/model.bin", dir);
    const int32_t good[7] = {16, 24, 2, 4, 2, 20, 8}; // dim, hidden, layers, heads, kv_heads, vocab, seq_len
    size_t n;
    uint8_t *b = legacy_bytes(good, 1, &n);
    alloy_model *m = NULL;
    REQUIRE(import_bytes(path, b, n, false, &m) == ALLOY_STATUS_OK, "the valid file: %s", alloy_last_error());
    alloy_model_destroy(m);

    char missing[320];
    snprintf(missing, sizeof missing, "%s/absent.bin", dir);
    m = NULL;
    alloy_status s = alloy_llama2c_import(&m, missing);
    EXPECT_REFUSED(s, m, missing, "No such file", "missing file");
    EXPECT(s == ALLOY_STATUS_IO, "missing file: status %s", alloy_status_name(s));
    s = alloy_llama2c_import(&m, dir);
    EXPECT_REFUSED(s, m, dir, "folder", "a folder");

    struct {
        const char *label;
        long len;       /* bytes of the file kept; ALL, or LESS(k): all but k */
        int field;      /* header field to set, -1: none */
        int32_t value;
        const char *needle;
    } cases[] = {
        {"empty", 0, -1, 0, "too short"},
        {"27 bytes", 27, -1, 0, "too short"},
        {"header only", 28, -1, 0, "truncated"},
        {"one float short", LESS(4), -1, 0, "truncated"},
        {"one byte short", LESS(1), -1, 0, "truncated"},
        {"dim 0", ALL, 0, 0, "dim is 0"},
        {"dim -16", ALL, 0, -16, "dim is -16"},
        {"dim absurd", ALL, 0, 1 << 30, "beyond alloy's limit"},
        {"hidden_dim 0", ALL, 1, 0, "hidden_dim is 0"},
        {"hidden_dim -24", ALL, 1, -24, "hidden_dim is -24"},
        {"hidden_dim changed", ALL, 1, 25, "header's sizes imply"},
        {"n_layers 0", ALL, 2, 0, "n_layers is 0"},
        {"n_layers -2", ALL, 2, -2, "n_layers is -2"},
        {"n_layers 3", ALL, 2, 3, "truncated"},
        {"n_heads 0", ALL, 3, 0, "n_heads is 0"},
        {"n_heads 3", ALL, 3, 3, "not a multiple of n_heads"},
        {"n_heads 16 (odd head size)", ALL, 3, 16, "odd"},
        {"n_kv_heads 0", ALL, 4, 0, "n_kv_heads is 0"},
        {"n_kv_heads -2", ALL, 4, -2, "n_kv_heads is -2"},
        {"n_kv_heads > n_heads", ALL, 4, 8, "not a multiple of n_kv_heads"},
        {"n_kv_heads 3", ALL, 4, 3, "not a multiple of n_kv_heads"},
        {"vocab_size 0", ALL, 5, 0, "vocab_size is 0"},
        {"vocab_size INT_MIN", ALL, 5, INT_MIN, "vocab_size"},
        {"vocab_size negative: unshared, classifier missing", ALL, 5, -20, "truncated"},
        {"vocab_size absurd", ALL, 5, INT_MAX, "beyond alloy's limit"},
        {"seq_len 0", ALL, 6, 0, "seq_len is 0"},
        {"seq_len -8", ALL, 6, -8, "seq_len is -8"},
        {"seq_len 9", ALL, 6, 9, "truncated"},
        {"seq_len 7", ALL, 6, 7, "extra bytes"},
        {"llm.c magic", ALL, 0, ALLOY_LLMC_MAGIC, "llm.c"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = malloc(n);
        memcpy(c, b, n);
        size_t len = cases[i].len == ALL ? n : cases[i].len < 0 ? n - (size_t)(-cases[i].len) : (size_t)cases[i].len;
        if (cases[i].field >= 0) set_le32(c + 4 * cases[i].field, cases[i].value);
        m = NULL;
        s = import_bytes(path, c, len, false, &m);
        EXPECT_REFUSED(s, m, path, cases[i].needle, cases[i].label);
        EXPECT(s == ALLOY_STATUS_FORMAT, "%s: status %s", cases[i].label, alloy_status_name(s));
        free(c);
    }
    // four bytes too many
    uint8_t *longer = calloc(1, n + 4);
    memcpy(longer, b, n);
    m = NULL;
    s = import_bytes(path, longer, n + 4, false, &m);
    EXPECT_REFUSED(s, m, path, "extra bytes", "4 bytes appended");
    free(longer);
    // version 1 magic: a quantized version 2, a truncated header
    uint8_t v1[300] = {0};
    set_le32(v1, (int32_t)ALLOY_LLAMA2C_MAGIC);
    set_le32(v1 + 4, 2);
    m = NULL;
    s = import_bytes(path, v1, sizeof v1, false, &m);
    EXPECT_REFUSED(s, m, path, "version 2 is not supported", "version 2");
    set_le32(v1 + 4, 1);
    s = import_bytes(path, v1, 100, false, &m);
    EXPECT_REFUSED(s, m, path, "too short", "version 1, 100 bytes");
    for (int f = 0; f < 7; f++) set_le32(v1 + 8 + 4 * f, good[f]);
    s = import_bytes(path, v1, sizeof v1, false, &m);
    EXPECT_REFUSED(s, m, path, "truncated", "version 1 without tensors");
    set_le32(v1 + 8 + 20, -20);
    s = import_bytes(path, v1, sizeof v1, false, &m);
    EXPECT_REFUSED(s, m, path, "vocab_size is -20", "version 1, negative vocab_size");
    // a sequence longer than the file's seq_len
    write_bytes(path, b, n);
    m = NULL;
    s = alloy_llama2c_import_ex(&m, path, 1, 9);
    EXPECT_REFUSED(s, m, path, "exceeds", "max_T beyond seq_len");
    EXPECT(s == ALLOY_STATUS_USAGE, "max_T beyond seq_len: status %s", alloy_status_name(s));
    s = alloy_llama2c_import_ex(&m, path, 2, 4);
    EXPECT(s == ALLOY_STATUS_OK && m && m->max_B == 2 && m->max_T == 4, "import_ex 2 x 4: %s", alloy_last_error());
    alloy_model_destroy(m);

    fuzz_headers(path, b, n, 7, false, 42, 400);
    write_bytes(path, b, n);
    oom_import(path, false);
    free(b);
}

/* ---- llm.c ------------------------------------------------------------------------------ */

static alloy_config gpt2_config(int V, int T, int L, int H, int C) {
    alloy_config c = {.family = ALLOY_FAMILY_GPT2, .vocab_size = V, .max_seq_len = T, .n_layer = L, .n_head = H,
                      .n_kv_head = H, .d_model = C, .d_ff = 4 * C, .norm_eps = 1e-5, .rope_theta = 10000.0,
                      .tie_embeddings = true};
    return c;
}

/* A seeded model with every parameter away from its default: matrices 4x the initialisation,
 * norm weights 1 + N(0, 0.2^2), biases N(0, 0.1^2). */
static alloy_model *make_model(const alloy_config *cfg, uint64_t seed) {
    alloy_model *m;
    if (alloy_model_create(&m, cfg, 1, cfg->max_seq_len)) {
        EXPECT(0, "create: %s", alloy_last_error());
        return NULL;
    }
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed + 1);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *p = m->params_memory + t->offset;
        bool bias = strstr(t->name, ".bias") != NULL;
        for (size_t k = 0; k < t->numel; k++) {
            if (t->ndim == 2) p[k] *= 4.0f;
            else if (bias) p[k] = 0.1f * (float)alloy_rng_normal(&rng);
            else p[k] = 1.0f + 0.2f * (float)alloy_rng_normal(&rng);
        }
    }
    return m;
}

/* Floats of an llm.c file's tensors for a config, with the padded vocabulary. */
static size_t llmc_floats(const alloy_config *c, size_t Vp) {
    size_t C = (size_t)c->d_model, L = (size_t)c->n_layer, T = (size_t)c->max_seq_len;
    return Vp * C + T * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C) +
           2 * C;
}

static void test_llmc_roundtrip(void) {
    char dir[256], path[320], path2[320];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(path, sizeof path, "%s/gpt2.bin", dir);
    snprintf(path2, sizeof path2, "%s/again.bin", dir);
    alloy_config cfg = gpt2_config(67, 24, 2, 4, 32);
    alloy_model *m = make_model(&cfg, 7);
    REQUIRE(m, "model");
    REQUIRE(alloy_llmc_export(m, path) == ALLOY_STATUS_OK, "export: %s", alloy_last_error());
    EXPECT(harness_count_entries(dir) == 1, "%d files in the folder after the export (a temporary left?)",
           harness_count_entries(dir));
    size_t size;
    uint8_t *b = read_bytes(path, &size);
    REQUIRE(b, "read back");
    const size_t Vp = 128, C = 32;
    EXPECT(size == 1024 + 4 * llmc_floats(&cfg, Vp), "file size %zu, expected %zu", size,
           1024 + 4 * llmc_floats(&cfg, Vp));
    int32_t want[8] = {20240326, 3, 24, 67, 2, 4, 32, 128};
    int bad_header = 0;
    for (int i = 0; i < 256; i++) bad_header += (int32_t)le32(b + 4 * i) != (i < 8 ? want[i] : 0);
    EXPECT(!bad_header, "%d header ints differ from llm.c's", bad_header);
    // wte's rows 67..127 are zero padding; the rest of wte is ours as is
    int bad_pad = 0, bad_wte = 0;
    for (size_t i = 67 * C; i < Vp * C && 1024 + 4 * i + 4 <= size; i++) bad_pad += le32(b + 1024 + 4 * i) != 0;
    for (size_t i = 0; i < 67 * C; i++) bad_wte += lef32(b + 1024 + 4 * i) != m->params.wte[i];
    EXPECT(!bad_pad && !bad_wte, "%d padding values not zero, %d wte values differ", bad_pad, bad_wte);
    // qkvw of layer 0 is (3C, C) = (out, in): the transpose of our c_attn (C, 3C)
    size_t qkvw = 1024 + 4 * (Vp * C + 24 * C + 2 * 2 * C);
    const float *cattn = param(m, "transformer.h.0.attn.c_attn.weight");
    int bad_t = 0;
    for (size_t o = 0; o < 3 * C; o++)
        for (size_t i = 0; i < C; i++) bad_t += lef32(b + qkvw + 4 * (o * C + i)) != cattn[i * 3 * C + o];
    EXPECT(!bad_t, "%d values of qkvw are not the transpose of c_attn", bad_t);

    alloy_model *l = NULL;
    REQUIRE(alloy_llmc_import(&l, path) == ALLOY_STATUS_OK, "import: %s", alloy_last_error());
    EXPECT(!memcmp(&l->config, &m->config, sizeof cfg), "the config changed in the roundtrip");
    EXPECT(model_diff(m, l) == 0, "%d tensors differ after the roundtrip", model_diff(m, l));
    EXPECT(l->max_B == 1 && l->max_T == 24, "import's buffers %d x %d", l->max_B, l->max_T);
    REQUIRE(alloy_llmc_export(l, path2) == ALLOY_STATUS_OK, "re-export: %s", alloy_last_error());
    EXPECT(same_file(path2, b, size), "the re-exported file differs from the first");
    free(b);
    alloy_model_destroy(l);

    // exporting over an existing file replaces it
    alloy_model *m2 = make_model(&cfg, 8);
    REQUIRE(m2, "model 2");
    REQUIRE(alloy_llmc_export(m2, path) == ALLOY_STATUS_OK, "export over: %s", alloy_last_error());
    REQUIRE(alloy_llmc_import(&l, path) == ALLOY_STATUS_OK, "import: %s", alloy_last_error());
    EXPECT(model_diff(m2, l) == 0, "the replaced file does not hold the second model");
    EXPECT(harness_count_entries(dir) == 2, "%d files in the folder", harness_count_entries(dir));
    alloy_model_destroy(l);
    alloy_model_destroy(m2);

    // a vocabulary already a multiple of 128 is not padded
    alloy_config c256 = gpt2_config(256, 8, 1, 2, 16);
    alloy_model *m3 = make_model(&c256, 9);
    REQUIRE(m3, "model 3");
    REQUIRE(alloy_llmc_export(m3, path2) == ALLOY_STATUS_OK, "export V=256: %s", alloy_last_error());
    b = read_bytes(path2, &size);
    EXPECT(b && size == 1024 + 4 * llmc_floats(&c256, 256) && le32(b + 28) == 256, "V = 256: Vp %u, %zu bytes",
           b ? le32(b + 28) : 0, size);
    free(b);
    REQUIRE(alloy_llmc_import(&l, path2) == ALLOY_STATUS_OK, "import V=256: %s", alloy_last_error());
    EXPECT(model_diff(m3, l) == 0, "V = 256: tensors differ");
    alloy_model_destroy(l);
    alloy_model_destroy(m3);

    // what llm.c cannot hold is refused, and nothing is written
    char refused[320];
    snprintf(refused, sizeof refused, "%s/refused.bin", dir);
    alloy_config lc;
    alloy_config_preset(&lc, "tiny-llama", 64);
    alloy_model *lm;
    REQUIRE(alloy_model_create(&lm, &lc, 1, 4) == ALLOY_STATUS_OK, "llama: %s", alloy_last_error());
    alloy_status s = alloy_llmc_export(lm, refused);
    EXPECT(s == ALLOY_STATUS_USAGE && one_line() && says(refused) && says("llama"), "a Llama: %s", alloy_last_error());
    alloy_model_destroy(lm);
    alloy_config odd = cfg;
    odd.d_ff = 100;
    REQUIRE(alloy_model_create(&lm, &odd, 1, 4) == ALLOY_STATUS_OK, "gpt2 F=100: %s", alloy_last_error());
    s = alloy_llmc_export(lm, refused);
    EXPECT(s == ALLOY_STATUS_USAGE && one_line() && says("MLP width"), "d_ff 100: %s", alloy_last_error());
    alloy_model_destroy(lm);
    odd = cfg;
    odd.norm_eps = 1e-6;
    REQUIRE(alloy_model_create(&lm, &odd, 1, 4) == ALLOY_STATUS_OK, "gpt2 eps: %s", alloy_last_error());
    s = alloy_llmc_export(lm, refused);
    EXPECT(s == ALLOY_STATUS_USAGE && one_line() && says("epsilon"), "eps 1e-6: %s", alloy_last_error());
    alloy_model_destroy(lm);
    EXPECT(!alloy_path_exists(refused), "a refused export left a file");
    char nodir[320];
    snprintf(nodir, sizeof nodir, "%s/no/such/folder/x.bin", dir);
    s = alloy_llmc_export(m, nodir);
    EXPECT(s == ALLOY_STATUS_IO && one_line() && says(nodir), "export into a missing folder: %s", alloy_last_error());

    // out of memory at every allocation of an export: NOMEM, the old file intact, no temporary
    b = read_bytes(path, &size);
    int k = 1;
    for (; k < 100; k++) {
        alloy_alloc_fail_after(k);
        s = alloy_llmc_export(m, path);
        alloy_alloc_fail_after(0);
        if (s == ALLOY_STATUS_OK) break;
        EXPECT(s == ALLOY_STATUS_NOMEM, "export, allocation %d failing: %s", k, alloy_last_error());
        EXPECT(same_file(path, b, size), "export, allocation %d failing: the old file changed", k);
    }
    EXPECT(k > 1 && k < 100, "the export never succeeded under allocation failures");
    EXPECT(harness_count_entries(dir) == 2, "%d files in the folder after failed exports", harness_count_entries(dir));
    free(b);
    alloy_model_destroy(m);
}

/* bf16 by round-to-nearest-even, as torch's float -> bfloat16 (finite values). */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* Our logits from the imported model against the reference's (T, V) in lpath. */
static double gpt2_vs_reference(alloy_model *m, const char *lpath, const int32_t *tokens, int T, const char *label) {
    size_t n = (size_t)T * (size_t)m->config.vocab_size;
    float *ref = read_raw4(lpath, n);
    float *ours = logits_of(m, tokens, T);
    double scale = 0.0, e = INFINITY;
    if (ref && ours) {
        e = scaled_diff(ours, ref, n, &scale);
        EXPECT(e <= LOGIT_TOL, "%s: logits differ: %.3g of their scale %.3g", label, e, scale);
    }
    free(ref);
    free(ours);
    return e;
}

static void test_llmc_reference(void) {
    NEED_PYTHON(REF_MODULES);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    enum { N = 2 };
    const alloy_config cfgs[N] = {gpt2_config(67, 24, 2, 4, 32), gpt2_config(300, 20, 3, 2, 16)};
    static char path[N][320], path5[N][320], lpath[N][320], lpath5[N][320];
    static int32_t tokens[N][32];
    alloy_model *m[N] = {0};
    static batch bt;
    bt.n = 0;
    for (int i = 0; i < N; i++) {
        const alloy_config *cfg = &cfgs[i];
        snprintf(path[i], sizeof path[i], "%s/gpt2-%d.bin", dir, i);
        snprintf(path5[i], sizeof path5[i], "%s/gpt2-%d-bf16.bin", dir, i);
        snprintf(lpath[i], sizeof lpath[i], "%s/gpt2-%d.logits", dir, i);
        snprintf(lpath5[i], sizeof lpath5[i], "%s/gpt2-%d-bf16.logits", dir, i);
        random_tokens(tokens[i], cfg->max_seq_len, cfg->vocab_size, 77 + (uint64_t)i);
        m[i] = make_model(cfg, 11 + (uint64_t)i);
        REQUIRE(m[i], "model");
        REQUIRE(alloy_llmc_export(m[i], path[i]) == ALLOY_STATUS_OK, "export: %s", alloy_last_error());
        char list[1024];
        token_list(list, sizeof list, tokens[i], cfg->max_seq_len);
        // the fp32 file, the same file in bf16 as train_gpt2.py writes it, and that file
        batch_add(&bt, "gpt2-run '%s' --tokens %s --logits '%s'", path[i], list, lpath[i]);
        batch_add(&bt, "gpt2-bf16 '%s' '%s'", path[i], path5[i]);
        batch_add(&bt, "gpt2-run '%s' --tokens %s --logits '%s'", path5[i], list, lpath5[i]);
    }
    int rc = batch_run(&bt, dir);
    EXPECT(rc == 0, "llmc_ref.py failed with status %d (its message is above)", rc);
    for (int i = 0; i < N && rc == 0; i++) {
        const alloy_config *cfg = &cfgs[i];
        const int T = cfg->max_seq_len;
        char label[64];
        snprintf(label, sizeof label, "gpt2 V=%d T=%d L=%d H=%d C=%d", cfg->vocab_size, T, cfg->n_layer, cfg->n_head,
                 cfg->d_model);
        alloy_model *l = NULL, *l5 = NULL;
        alloy_status s = alloy_llmc_import(&l, path[i]);
        EXPECT(s == ALLOY_STATUS_OK, "%s: %s", label, alloy_last_error());
        double e3 = INFINITY, e5 = INFINITY;
        if (!s) {
            // the same weights as the exported model, so the same logits bit for bit
            float *orig = logits_of(m[i], tokens[i], T), *back = logits_of(l, tokens[i], T);
            EXPECT(orig && back && !memcmp(orig, back, sizeof(float) * (size_t)T * (size_t)cfg->vocab_size),
                   "%s: the imported model's logits are not the original's", label);
            free(orig);
            free(back);
            e3 = gpt2_vs_reference(l, lpath[i], tokens[i], T, label);
        }
        // version 5: exactly the bf16 rounding of every weight, and the reference's logits
        size_t size = 0;
        uint8_t *b = read_bytes(path5[i], &size);
        size_t Vp = ((size_t)cfg->vocab_size + 127) / 128 * 128;
        EXPECT(b && size == 1024 + 2 * llmc_floats(cfg, Vp) && le32(b + 4) == 5, "%s: the bf16 file: %zu bytes",
               label, size);
        free(b);
        s = alloy_llmc_import(&l5, path5[i]);
        EXPECT(s == ALLOY_STATUS_OK, "%s: bf16 import: %s", label, alloy_last_error());
        if (!s) {
            size_t bad = 0, total = 0;
            for (int t = 0; t < m[i]->n_tensors; t++) {
                const alloy_tensor_info *ti = &m[i]->tensors[t];
                const float *a = m[i]->params_memory + ti->offset, *b5 = l5->params_memory + ti->offset;
                for (size_t k = 0; k < ti->numel; k++, total++) bad += b5[k] != round_bf16(a[k]);
            }
            EXPECT(bad == 0, "%s: bf16 import: %zu of %zu weights are not the bf16 rounding of the original", label,
                   bad, total);
            e5 = gpt2_vs_reference(l5, lpath5[i], tokens[i], T, label);
        }
        printf("# %s: max|alloy - torch reference| = %.2e of the logit scale (fp32 file), %.2e (bf16 file)\n", label,
               e3, e5);
        alloy_model_destroy(l5);
        alloy_model_destroy(l);
    }
    for (int i = 0; i < N; i++) alloy_model_destroy(m[i]);
}

static void test_llmc_corrupt(void) {
    char dir[256], path[320], good_path[320];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(path, sizeof path, "%s/bad.bin", dir);
    snprintf(good_path, sizeof good_path, "%s/good.bin", dir);
    alloy_config cfg = gpt2_config(67, 8, 2, 4, 16);
    alloy_model *m = make_model(&cfg, 3);
    REQUIRE(m, "model");
    REQUIRE(alloy_llmc_export(m, good_path) == ALLOY_STATUS_OK, "export: %s", alloy_last_error());
    alloy_model_destroy(m);
    size_t n;
    uint8_t *b = read_bytes(good_path, &n);
    REQUIRE(b, "read");

    struct {
        const char *label;
        long len;    /* bytes kept; ALL, or LESS(k): all but k */
        int field;   /* header int to set, -1: none */
        int32_t value;
        const char *needle;
    } cases[] = {
        {"100 bytes", 100, -1, 0, "too short"},
        {"1023 bytes", 1023, -1, 0, "too short"},
        {"header only", 1024, -1, 0, "truncated"},
        {"one byte short", LESS(1), -1, 0, "truncated"},
        {"one float short", LESS(4), -1, 0, "truncated"},
        {"half the file", 1024 + 2 * 1000, -1, 0, "truncated"},
        {"bad magic", ALL, 0, 20240327, "not an llm.c"},
        {"zero magic", ALL, 0, 0, "not an llm.c"},
        {"version 1", ALL, 1, 1, "version 1 is not supported"},
        {"version 2", ALL, 1, 2, "version 2 is not supported"},
        {"version 4", ALL, 1, 4, "version 4 is not supported"},
        {"version -3", ALL, 1, -3, "version -3 is not supported"},
        {"version 5 on fp32 data", ALL, 1, 5, "extra bytes"},
        {"max_seq_len 0", ALL, 2, 0, "max_seq_len is 0"},
        {"max_seq_len -8", ALL, 2, -8, "max_seq_len is -8"},
        {"max_seq_len 9", ALL, 2, 9, "truncated"},
        {"max_seq_len at alloy's limit", ALL, 2, 1 << 20, "truncated"},
        {"vocab_size 0", ALL, 3, 0, "vocab_size is 0"},
        {"vocab_size -67", ALL, 3, -67, "vocab_size is -67"},
        {"vocab_size > padded", ALL, 3, 129, "smaller than vocab_size"},
        {"num_layers 0", ALL, 4, 0, "num_layers is 0"},
        {"num_layers -2", ALL, 4, -2, "num_layers is -2"},
        {"num_layers 1000", ALL, 4, 1000, "truncated"},
        {"num_heads 0", ALL, 5, 0, "num_heads is 0"},
        {"num_heads -4", ALL, 5, -4, "num_heads is -4"},
        {"num_heads 3", ALL, 5, 3, "not a multiple of num_heads"},
        {"num_heads 8 (same size)", ALL, 5, 8, ""},
        {"channels 0", ALL, 6, 0, "channels is 0"},
        {"channels -16", ALL, 6, -16, "channels is -16"},
        {"channels absurd", ALL, 6, 1 << 30, "beyond alloy's limit"},
        {"channels 32", ALL, 6, 32, "truncated"},
        {"padded_vocab_size 0", ALL, 7, 0, "padded_vocab_size is 0"},
        {"padded_vocab_size -128", ALL, 7, -128, "padded_vocab_size is -128"},
        {"padded_vocab_size 64 < vocab_size", ALL, 7, 64, "smaller than vocab_size"},
        {"padded_vocab_size INT_MAX", ALL, 7, INT_MAX, "truncated"},
        {"padded_vocab_size 67 (unpadded)", ALL, 7, 67, "extra bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *c = malloc(n);
        memcpy(c, b, n);
        size_t len = cases[i].len == ALL ? n : cases[i].len < 0 ? n - (size_t)(-cases[i].len) : (size_t)cases[i].len;
        if (cases[i].field >= 0) set_le32(c + 4 * cases[i].field, cases[i].value);
        alloy_model *bad = NULL;
        alloy_status s = import_bytes(path, c, len, true, &bad);
        if (!*cases[i].needle) { // a consistent header (heads only regroup the same widths) is accepted
            EXPECT(s == ALLOY_STATUS_OK && bad && bad->config.n_head == 8, "%s: %s", cases[i].label,
                   alloy_last_error());
            alloy_model_destroy(bad);
        } else {
            EXPECT_REFUSED(s, bad, path, cases[i].needle, cases[i].label);
            EXPECT(s == ALLOY_STATUS_FORMAT, "%s: status %s", cases[i].label, alloy_status_name(s));
        }
        free(c);
    }
    alloy_model *bad = NULL;
    uint8_t *longer = calloc(1, n + 4);
    memcpy(longer, b, n);
    alloy_status s = import_bytes(path, longer, n + 4, true, &bad);
    EXPECT_REFUSED(s, bad, path, "extra bytes", "4 bytes appended");
    free(longer);
    s = import_bytes(path, b, 0, true, &bad);
    EXPECT_REFUSED(s, bad, path, "too short", "empty file");
    // a llama2.c file given to the llm.c reader, and the other way round
    const int32_t l2c[7] = {16, 24, 2, 4, 2, 20, 8};
    size_t ln;
    uint8_t *lb = legacy_bytes(l2c, 2, &ln);
    s = import_bytes(path, lb, ln, true, &bad);
    EXPECT_REFUSED(s, bad, path, "not an llm.c", "a llama2.c file");
    free(lb);
    s = alloy_llama2c_import(&bad, good_path);
    EXPECT_REFUSED(s, bad, good_path, "llm.c GPT-2 checkpoint", "an llm.c file to the llama2.c reader");
    s = alloy_llmc_import_ex(&bad, good_path, 1, 9);
    EXPECT_REFUSED(s, bad, good_path, "exceeds", "max_T beyond max_seq_len");
    s = alloy_llmc_import_ex(&bad, good_path, 0, 4);
    EXPECT_REFUSED(s, bad, good_path, "at least 1", "max_B 0");

    fuzz_headers(path, b, n, 8, true, 43, 400);
    oom_import(good_path, true);
    free(b);
}

int main(void) {
    RUN(test_reference_available);
    RUN(test_llama2c_stories260k);
    RUN(test_llama2c_synthetic);
    RUN(test_llama2c_corrupt);
    RUN(test_llmc_roundtrip);
    RUN(test_llmc_reference);
    RUN(test_llmc_corrupt);
    return harness_exit();
}
