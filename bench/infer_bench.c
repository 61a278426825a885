/*
 * infer_bench.c — inference speed of the engine (src/infer/): prefill and decode tokens/s per
 * weight format and thread count, against the memory-bandwidth limit measured in the same run.
 *
 *   build/bench/infer_bench [--preset gpt2] [--formats f32,q8_0,q4_0] [--threads 1,2]
 *                           [--prefill 512] [--decode 128] [--reps 2] [--save DIR]
 *                           [--fixed-threads] [--batch B]
 *
 * The model is the preset (GPT-2 124M by default, vocabulary 50257) with GPT-2's random
 * initialisation from seed 1. Before anything is timed, the fp32 engine's logits of 16 tokens
 * are checked against the model's own full forward (alloy_model_forward) and each quantised
 * engine's against the fp32 engine's (relative L2 error within the tolerances of
 * tests/test_infer.c); a mismatch exits 1.
 *
 * Prefill: one sequence of --prefill tokens in one call (matrix-matrix products). Decode:
 * --decode steps of one token after a one-token prompt (as llama-bench's tg), feeding fixed
 * tokens (no sampling). --batch B (B > 1): also B sequences decoded together, 32 steps (one
 * product over the B rows per matrix), in tokens/s over all of them. --reps rounds, each over
 * every (format, threads) in turn; the best of the rounds is printed (on a shared machine, the
 * least disturbed). Threads: OpenMP's, set per run; the engine picks fewer for products too
 * small to share (options.threads = 0, as `alloy generate` does), or with --fixed-threads uses
 * them all for every step (options.threads = n).
 *
 * The bandwidth: the best of 3 reads of a 512 MB buffer (sum, 16 lanes) per thread count and
 * round, the best over the rounds. The bandwidth limit of decode is that divided by the bytes one token reads (the
 * matrices in their format, the fp32 norms and biases, one embedding row; the KV cache of a
 * short context is negligible). Printed: tokens/s, GB/s of weights read, and the fraction of the
 * limit; never asserted. On a machine whose memory other tenants share, the bandwidth moves
 * (34 to 64 GB/s between runs seen here) and the best of each side may come from different
 * moments, so the decode is also measured in slices of PAIR_SLICE steps, each between two
 * reads of the first 256 MB of the buffer: "paired" is the median over every slice of every
 * round of the slice's bytes/s over the mean of the reads either side of it. --save DIR writes the model (alloy_model_save) plus DIR/check.bin
 * (int32 n, int32 tokens (n), float logits of the fp32 engine (n, V)) and DIR/tokens.bin (the
 * prefill tokens) for bench/infer_bench.sh's PyTorch run. A JSON line per result goes to stdout
 * ("RESULT {...}") for the script.
 */
#include "alloy/alloy.h"
#include "alloy/infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CHECK_T 16
#define PAIR_SLICE 16 /* decode steps between two bandwidth reads */
#define MAX_PAIRS 4096

static void die(const char *what) {
    fprintf(stderr, "infer_bench: %s: %s\n", what, alloy_last_error());
    exit(1);
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static volatile float bw_sink;

/* Read bandwidth in bytes/s of one sum over the n floats of buf (16 lanes, the threads each a
 * contiguous part). */
static double read_once(const float *buf, size_t n) {
    double t0 = alloy_time_now();
    float total = 0.0f;
#pragma omp parallel reduction(+ : total)
    {
        float acc[16] = {0};
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i += 16)
            for (int j = 0; j < 16; j++) acc[j] += buf[i + j];
        for (int j = 0; j < 16; j++) total += acc[j];
    }
    double dt = alloy_time_now() - t0;
    bw_sink += total;
    return n * sizeof(float) / dt;
}

/* Read bandwidth in bytes/s: the best of 3 sums over the buffer (after one that touches it). */
static double read_bandwidth(const float *buf, size_t n) {
    double best = 0.0;
    for (int rep = 0; rep < 4; rep++) {
        double b = read_once(buf, n);
        if (rep > 0 && b > best) best = b;
    }
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ‖a - b‖ / ‖b‖ */
static double rel_l2(const float *a, const float *b, size_t n) {
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}

static int parse_list(const char *s, char items[][16], int max) {
    int n = 0;
    while (*s && n < max) {
        const char *c = strchr(s, ',');
        size_t len = c ? (size_t)(c - s) : strlen(s);
        if (len >= 16) len = 15;
        memcpy(items[n], s, len);
        items[n][len] = '\0';
        n++;
        s += len + (c ? 1 : 0);
        if (!c) break;
    }
    return n;
}

/* Logits (CHECK_T, V) of the check tokens through an engine of format t. */
static float *engine_check(alloy_model *m, alloy_qtype t, const int32_t *tokens) {
    alloy_engine *e;
    if (alloy_engine_create(&e, m, &(alloy_engine_options){.weights = t, .max_ctx = 64})) die("engine");
    size_t V = (size_t)m->config.vocab_size;
    float *out = malloc(sizeof(float) * CHECK_T * V);
    int seq = 0, n = CHECK_T;
    if (alloy_engine_prefill_batch(e, out, ALLOY_LOGITS_ALL, &seq, &tokens, &n, 1)) die("prefill");
    alloy_engine_destroy(e);
    return out;
}

int main(int argc, char **argv) {
    const char *preset = "gpt2", *formats = "f32,q8_0,q4_0", *threads = "1,2", *save = NULL;
    int n_prefill = 512, n_decode = 128, reps = 2;
    bool fixed = false;
    int batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") && v) preset = v, i++;
        else if (!strcmp(a, "--formats") && v) formats = v, i++;
        else if (!strcmp(a, "--threads") && v) threads = v, i++;
        else if (!strcmp(a, "--prefill") && v) n_prefill = atoi(v), i++;
        else if (!strcmp(a, "--decode") && v) n_decode = atoi(v), i++;
        else if (!strcmp(a, "--reps") && v) reps = atoi(v), i++;
        else if (!strcmp(a, "--save") && v) save = v, i++;
        else if (!strcmp(a, "--fixed-threads")) fixed = true;
        else if (!strcmp(a, "--batch") && v) batch = atoi(v), i++;
        else {
            fprintf(stderr, "usage: infer_bench [--preset P] [--formats f32,q8_0,q4_0] [--threads 1,2] [--prefill N] "
                            "[--decode N] [--reps N] [--save DIR] [--fixed-threads] [--batch B]\n");
            return 2;
        }
    }
    if (n_prefill < 1 || n_decode < 1 || reps < 1 || batch < 0 || batch > 64) {
        fprintf(stderr, "infer_bench: --prefill, --decode and --reps must be >= 1, --batch in [0, 64]\n");
        return 2;
    }
    char fmt[8][16], thr[8][16];
    int n_fmt = parse_list(formats, fmt, 8), n_thr = parse_list(threads, thr, 8);
    alloy_config cfg;
    if (alloy_config_preset(&cfg, preset, 50257)) die("--preset");
    if (n_prefill + n_decode + 1 > cfg.max_seq_len) {
        fprintf(stderr, "infer_bench: --prefill + --decode exceed the context of %d\n", cfg.max_seq_len);
        return 2;
    }
    alloy_model *m;
    if (alloy_model_create(&m, &cfg, 1, CHECK_T)) die("model");
    alloy_model_init_weights(m, 1);
    size_t V = (size_t)cfg.vocab_size;
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(n_prefill + n_decode + 1));
    alloy_rng rng;
    alloy_rng_seed(&rng, 2);
    for (int i = 0; i < n_prefill + n_decode + 1; i++) tokens[i] = (int32_t)alloy_rng_below(&rng, V);

    // the reference: the model's own forward, then the fp32 engine, then each format
    if (alloy_model_forward(m, tokens, 1, CHECK_T)) die("forward");
    float *ref = engine_check(m, ALLOY_QTYPE_F32, tokens);
    double e0 = rel_l2(ref, alloy_model_logits(m), CHECK_T * V);
    printf("# %s (%zu parameters): f32 engine against the model's forward: rel L2 %.2e\n", preset, m->num_params, e0);
    if (e0 > 1e-5) {
        fprintf(stderr, "infer_bench: the f32 engine's logits differ from the forward's (%.3g)\n", e0);
        return 1;
    }
    static const double tol[ALLOY_QTYPE_COUNT] = {1e-5, 1e-3, 4e-2, 0.45, 0.4};
    alloy_qtype types[8];
    for (int f = 0; f < n_fmt; f++) {
        if (alloy_qtype_parse(fmt[f], &types[f])) {
            fprintf(stderr, "infer_bench: unknown format '%s'\n", fmt[f]);
            return 2;
        }
        float *q = engine_check(m, types[f], tokens);
        double err = rel_l2(q, ref, CHECK_T * V);
        printf("# %s engine against f32: rel L2 %.2e (tolerance %.0e)\n", fmt[f], err, tol[types[f]]);
        free(q);
        if (err > tol[types[f]]) {
            fprintf(stderr, "infer_bench: %s logits are off (%.3g)\n", fmt[f], err);
            return 1;
        }
    }
    if (save) {
        if (alloy_model_save(m, save)) die("--save");
        char path[1024];
        snprintf(path, sizeof path, "%s/check.bin", save);
        FILE *f = fopen(path, "wb");
        int32_t n = CHECK_T;
        if (!f || fwrite(&n, 4, 1, f) != 1 || fwrite(tokens, 4, CHECK_T, f) != CHECK_T ||
            fwrite(ref, sizeof(float), CHECK_T * V, f) != CHECK_T * V || fclose(f)) {
            fprintf(stderr, "infer_bench: cannot write %s\n", path);
            return 1;
        }
        snprintf(path, sizeof path, "%s/tokens.bin", save);
        f = fopen(path, "wb");
        int32_t np = n_prefill + n_decode + 1;
        if (!f || fwrite(&np, 4, 1, f) != 1 || fwrite(tokens, 4, (size_t)np, f) != (size_t)np || fclose(f)) {
            fprintf(stderr, "infer_bench: cannot write %s\n", path);
            return 1;
        }
    }
    free(ref);

    // every engine once; then rounds over (format, threads), the bandwidth measured in each
    // round too: on a shared machine the best of the rounds is the least disturbed figure
    alloy_engine *eng[8];
    alloy_engine_info info[8];
    for (int f = 0; f < n_fmt; f++) {
        if (alloy_engine_create(&eng[f], m,
                                &(alloy_engine_options){.weights = types[f], .threads = 0, .max_batch = batch ? batch : 1}))
            die("engine");
        alloy_engine_get_info(eng[f], &info[f]);
    }
    size_t bw_n = (size_t)128 << 20; // 512 MB of floats
    float *buf = alloy_pages_alloc(bw_n * sizeof(float));
    if (!buf) die("bandwidth buffer");
    for (size_t i = 0; i < bw_n; i++) buf[i] = (float)(i & 7);
    size_t pair_n = (size_t)64 << 20; // the first 256 MB: one read between decode slices
    double bw[8] = {0}, best_p[8][8], best_d[8][8], best_b[8][8];
    static double pairs[8][8][MAX_PAIRS];
    int n_pairs[8][8] = {{0}};
    for (int f = 0; f < n_fmt; f++)
        for (int t = 0; t < n_thr; t++) best_p[f][t] = best_d[f][t] = best_b[f][t] = 1e30;
    float *logits = malloc(sizeof(float) * V * (size_t)(batch > 1 ? batch : 1));
    int seqs[64];
    int32_t btok[64];
    for (int b = 0; b < 64; b++) seqs[b] = b;
    for (int r = 0; r < reps; r++) {
        for (int t = 0; t < n_thr; t++) {
            set_threads(atoi(thr[t]));
            double b = read_bandwidth(buf, bw_n);
            if (b > bw[t]) bw[t] = b;
        }
        for (int f = 0; f < n_fmt; f++) {
            alloy_engine *e = eng[f];
            for (int t = 0; t < n_thr; t++) {
                int nt = atoi(thr[t]);
                set_threads(nt);
                if (fixed) { // every step on nt threads: a new engine with options.threads = nt
                    alloy_engine_destroy(e);
                    if (alloy_engine_create(&e, m, &(alloy_engine_options){.weights = types[f], .threads = nt,
                                                                            .max_batch = batch ? batch : 1}))
                        die("engine");
                    eng[f] = e;
                }
                alloy_engine_reset(e, 0);
                double t0 = alloy_time_now();
                if (alloy_engine_prefill(e, logits, 0, tokens, n_prefill)) die("prefill");
                double dt = alloy_time_now() - t0;
                if (dt < best_p[f][t]) best_p[f][t] = dt;
                alloy_engine_reset(e, 0);
                if (alloy_engine_prefill(e, logits, 0, tokens, 1)) die("prefill");
                int seq = 0;
                // in slices of PAIR_SLICE steps, each between two reads of the bandwidth
                // buffer: the slice's bytes/s over the mean of the two (one pair per slice)
                double bytes_tok = (double)info[f].weight_bytes + (double)info[f].other_bytes;
                double decode_time = 0.0, bw_prev = read_once(buf, pair_n);
                for (int k0 = 0; k0 < n_decode; k0 += PAIR_SLICE) {
                    int k1 = k0 + PAIR_SLICE < n_decode ? k0 + PAIR_SLICE : n_decode;
                    t0 = alloy_time_now();
                    for (int k = k0; k < k1; k++)
                        if (alloy_engine_decode(e, logits, &seq, tokens + 1 + k, 1)) die("decode");
                    dt = alloy_time_now() - t0;
                    decode_time += dt;
                    double bw_next = read_once(buf, pair_n);
                    if (n_pairs[f][t] < MAX_PAIRS)
                        pairs[f][t][n_pairs[f][t]++] = (k1 - k0) * bytes_tok / dt / (0.5 * (bw_prev + bw_next));
                    bw_prev = bw_next;
                }
                if (decode_time < best_d[f][t]) best_d[f][t] = decode_time;
                if (batch > 1) { // batch sequences decoded together, 32 steps after one-token prompts
                    for (int b = 0; b < batch; b++) {
                        alloy_engine_reset(e, b);
                        if (alloy_engine_prefill(e, NULL, b, tokens + b, 1)) die("prefill");
                    }
                    t0 = alloy_time_now();
                    for (int k = 0; k < 32; k++) {
                        for (int b = 0; b < batch; b++) btok[b] = tokens[1 + k + b];
                        if (alloy_engine_decode(e, logits, seqs, btok, batch)) die("decode");
                    }
                    dt = alloy_time_now() - t0;
                    if (dt < best_b[f][t]) best_b[f][t] = dt;
                    for (int b = 0; b < batch; b++) alloy_engine_reset(e, b);
                }
            }
        }
        fprintf(stderr, "infer_bench: round %d of %d done\n", r + 1, reps);
    }
    alloy_pages_free(buf, bw_n * sizeof(float));
    for (int t = 0; t < n_thr; t++) printf("# read bandwidth, %s threads: %.1f GB/s\n", thr[t], bw[t] / 1e9);
    printf("%-6s %3s  %12s  %12s  %10s  %12s  %8s  %8s", "format", "thr", "prefill t/s", "decode t/s", "MB/token",
           "limit t/s", "of limit", "paired");
    if (batch > 1) printf("  %8s%-3d", "batch ", batch);
    printf("\n");
    for (int f = 0; f < n_fmt; f++) {
        for (int t = 0; t < n_thr; t++) {
            int nt = atoi(thr[t]);
            double bytes = (double)info[f].weight_bytes + (double)info[f].other_bytes;
            double pre = n_prefill / best_p[f][t], dec = n_decode / best_d[f][t], limit = bw[t] / bytes;
            double bdec = batch > 1 ? 32.0 * batch / best_b[f][t] : 0.0;
            int np = n_pairs[f][t];
            qsort(pairs[f][t], (size_t)np, sizeof(double), cmp_double);
            double paired = np ? (np % 2 ? pairs[f][t][np / 2] : 0.5 * (pairs[f][t][np / 2 - 1] + pairs[f][t][np / 2])) : 0.0;
            printf("%-6s %3d  %12.1f  %12.1f  %10.1f  %12.1f  %7.0f%%  %7.0f%%", fmt[f], nt, pre, dec, bytes / 1e6, limit,
                   100.0 * dec / limit, 100.0 * paired);
            if (batch > 1) printf("  %11.1f", bdec);
            printf("\n");
            printf("RESULT {\"impl\": \"alloy\", \"format\": \"%s\", \"threads\": %d, \"prefill_tps\": %.2f, "
                   "\"decode_tps\": %.2f, \"bytes_per_token\": %.0f, \"bandwidth\": %.0f, \"batch\": %d, "
                   "\"batch_decode_tps\": %.2f, \"paired_fraction\": %.4f, \"pairs\": %d}\n",
                   fmt[f], nt, pre, dec, bytes, bw[t], batch, bdec, paired, np);
        }
        alloy_engine_destroy(eng[f]);
    }
    free(logits);
    free(tokens);
    alloy_model_destroy(m);
    return 0;
}
