/*
 * train_bench.c — times full training steps of alloy (forward, loss, backward, AdamW) for one
 * configuration per process, and measures the machine's own arithmetic peak. Driven by
 * bench/train_bench.sh, which runs each variant in its own process (so that peak RSS is per
 * run), runs the PyTorch reference (bench/train_ref.py) on the same weights and tokens, and
 * prints the table.
 *
 *   train_bench --model gpt2 --batch 8 --seq 256 [--precision f32|bf16] [--recompute]
 *               [--steps 3] [--warmup 1] [--seed 1337] [--save DIR]
 *   train_bench --peak
 *
 * A training run prints one JSON line on stdout: tokens/s, seconds per step, the loss of every
 * step (warm-up included; every step trains on the same batch, so the loss falls), peak RSS
 * (getrusage ru_maxrss; also before the model is created), parameter count, the bytes of alloy's activation buffers and of the
 * training state (params, grads, AdamW m and v: 16 bytes per parameter in fp32), the share of
 * the machine's CPU time that other processes took during the timed steps, and FLOPs per
 * token = 6·N + 12·L·T·C, where N counts the parameters that enter matrix products (all of
 * them but look-up-only embedding tables: GPT-2's wpe, an untied Llama's embed_tokens; GPT-2's
 * tied wte counts once, as the LM head). A configuration the library refuses (bf16 on a CPU or
 * build without it) prints "status":"n/a" with the library's message and exits 0. --save DIR
 * writes the initial weights (DIR/config.json, DIR/model.safetensors) and the batch
 * (DIR/tokens.bin: (B, T+1) int32, inputs are [:, :T], targets [:, 1:]) before timing, for the
 * reference to start from the same point.
 *
 * --peak measures the fp32 FMA peak (vfmadd231ps zmm, 16 independent chains per thread; on CPUs
 * without AVX-512 vfmadd231ps ymm, 12 chains) and the bf16 dot peak (vdpbf16ps zmm) on all
 * OpenMP threads, best of 3 runs of about 0.5 s each, and prints one JSON line with GFLOP/s.
 * Exit status: 0 on success, 1 on an error, 2 on bad usage.
 */
#include "alloy/io.h"
#include "alloy/model.h"
#include "alloy/train.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct bench_args {
    const char *model;     /* preset name */
    int B, T;              /* batch, sequence length */
    alloy_precision precision;
    bool recompute;
    int steps, warmup;     /* timed steps, untimed steps before them */
    uint64_t seed;         /* weights and tokens */
    const char *save_dir;  /* NULL: no save */
    bool peak;
} bench_args;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long long peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (long long)ru.ru_maxrss * 1024; // Linux reports kilobytes
}

/* CPU seconds that all CPUs of the machine have spent busy (user, nice, system, irq, softirq,
 * steal: /proc/stat), and those of this process (all threads). Their difference over a timed
 * stretch is what other processes took: the machine is shared, and a figure taken while
 * something else ran is not this program's. Returns false where /proc/stat is missing. */
static bool cpu_seconds(double *machine, double *self) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *self = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
            1e-6 * (double)ru.ru_stime.tv_usec;
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                       &v[6], &v[7])
              : 0;
    if (f) fclose(f);
    *machine = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
    return n == 8;
}

/* The share of the machine (0..1) that other processes used between two cpu_seconds readings
 * over `wall` seconds; negative when unknown. */
static double others_share(double m0, double s0, double m1, double s1, double wall, bool ok) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!ok || wall <= 0.0 || ncpu < 1) return -1.0;
    double x = ((m1 - m0) - (s1 - s0)) / (wall * (double)ncpu);
    return x < 0.0 ? 0.0 : x;
}

/* Prints s as a JSON string literal (quotes included). */
static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* ---- the machine's peak ----------------------------------------------------------------- */

#define PEAK_CHAINS 16

/* n iterations of 16 independent vfmadd231ps chains: 16 · 16 lanes · 2 FLOPs each. The
 * multiplier is just below one so that the chains neither overflow nor become denormal. */
__attribute__((target("avx512f"), noinline)) static float fma_loop(long n) {
    __m512 acc[PEAK_CHAINS];
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_set1_ps(1.0f + 0.01f * (float)i);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
    for (long it = 0; it < n; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

/* The same on CPUs without AVX-512: 12 independent vfmadd231ps ymm chains (12 · 8 lanes · 2
 * FLOPs an iteration; 12 accumulators and the two constants fit the 16 ymm registers). */
#define PEAK_CHAINS_AVX2 12
__attribute__((target("avx2,fma"), noinline)) static float fma_loop_avx2(long n) {
    __m256 acc[PEAK_CHAINS_AVX2];
    for (int i = 0; i < PEAK_CHAINS_AVX2; i++) acc[i] = _mm256_set1_ps(1.0f + 0.01f * (float)i);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
    for (long it = 0; it < n; it++) {
#pragma GCC unroll 12
        for (int i = 0; i < PEAK_CHAINS_AVX2; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    __m256 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS_AVX2; i++) s = _mm256_add_ps(s, acc[i]);
    float l[8];
    _mm256_storeu_ps(l, s);
    return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}

static bool have_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* n iterations of 16 independent vdpbf16ps chains: each adds 32 products to 16 fp32 lanes,
 * 64 FLOPs. Small inputs keep the sums finite. */
__attribute__((target("avx512f,avx512bf16"), noinline)) static float dpbf16_loop(long n) {
    __m512 acc[PEAK_CHAINS];
    for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_setzero_ps();
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
    for (long it = 0; it < n; it++) {
#pragma GCC unroll 16
        for (int i = 0; i < PEAK_CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

/* Seconds for every thread to run n iterations of the loop at the same time. */
static double time_parallel(bool bf16, long n, volatile float *sink) {
    double t0 = 0.0, t1 = 0.0;
#pragma omp parallel
    {
#pragma omp barrier
#pragma omp master
        t0 = now_s();
        float r = bf16 ? dpbf16_loop(n) : have_avx512() ? fma_loop(n) : fma_loop_avx2(n);
#pragma omp critical
        *sink += r;
#pragma omp barrier
#pragma omp master
        t1 = now_s();
    }
    return t1 - t0;
}

/* GFLOP/s of all threads: calibrates to about 0.5 s a run, best of 3. */
static double measure_peak(bool bf16, int threads) {
    volatile float sink = 0.0f;
    double flops_per_iter = bf16 ? PEAK_CHAINS * 64.0 : have_avx512() ? PEAK_CHAINS * 32.0 : PEAK_CHAINS_AVX2 * 16.0;
    long n = 1 << 16;
    double t = time_parallel(bf16, n, &sink);
    while (t < 0.05) {
        n *= 4;
        t = time_parallel(bf16, n, &sink);
    }
    n = (long)((double)n * 0.5 / t);
    double best = 0.0;
    for (int r = 0; r < 3; r++) {
        t = time_parallel(bf16, n, &sink);
        double g = flops_per_iter * (double)n * threads / t / 1e9;
        if (g > best) best = g;
    }
    return best;
}

static int run_peak(void) {
    __builtin_cpu_init();
    if (!have_avx512() && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        printf("{\"mode\":\"peak\",\"status\":\"n/a\",\"error\":\"this CPU has neither AVX-512 nor AVX2 with FMA\"}\n");
        return 0;
    }
    int threads = omp_get_max_threads();
    double m0, s0, m1, s1, t0 = now_s();
    bool ok = cpu_seconds(&m0, &s0);
    double fp32 = measure_peak(false, threads);
    printf("{\"mode\":\"peak\",\"status\":\"ok\",\"threads\":%d,\"fp32_fma_gflops\":%.1f,\"fma_loop\":\"%s\"", threads, fp32,
           have_avx512() ? "vfmadd231ps zmm, 16 chains a thread" : "vfmadd231ps ymm, 12 chains a thread");
    if (__builtin_cpu_supports("avx512bf16"))
        printf(",\"bf16_dot_gflops\":%.1f", measure_peak(true, threads));
    else
        printf(",\"bf16_dot_gflops\":null");
    ok &= cpu_seconds(&m1, &s1);
    printf(",\"others_cpu_share\":%.3f}\n", others_share(m0, s0, m1, s1, now_s() - t0, ok));
    return 0;
}

/* The activations a training step of this config needs: the tensors the backward reads, as
 * counted by Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
 * Models", §4.1) in fp32, without dropout masks, with an attention that keeps each row's
 * log-sum-exp instead of the T×T probabilities, and no full logits (the loss is chunked). Per
 * token and layer: the block's input, the norm's output, Q, K, V, the attention output, the
 * MLP block's input, its norm's output, the up projection(s) and the activation's output
 *     5·C + QKV + FF + F floats  (16·C for GPT-2),  + H log-sum-exps + the norms' statistics
 * and per token outside the layers: the final norm's input and output and statistics. */
static double needed_activation_bytes(const alloy_config *c, int B, int T) {
    int hd = c->d_model / c->n_head, F = c->d_ff;
    bool gpt2 = c->family == ALLOY_FAMILY_GPT2;
    double QKV = (double)(c->n_head + 2 * c->n_kv_head) * hd, FF = gpt2 ? F : 2.0 * F, stats = gpt2 ? 2 : 1;
    double layer = 5.0 * c->d_model + QKV + FF + F + c->n_head + 2 * stats;
    return 4.0 * B * T * (c->n_layer * layer + 2.0 * c->d_model + stats);
}

/* ---- training steps --------------------------------------------------------------------- */

/* Parameters that enter matrix products (see the file comment). */
static size_t matmul_params(const alloy_model *m) {
    size_t n = m->num_params;
    const char *lookup = m->config.family == ALLOY_FAMILY_GPT2 ? "transformer.wpe.weight"
                         : m->config.tie_embeddings           ? NULL
                                                              : "model.embed_tokens.weight";
    const alloy_tensor_info *t = lookup ? alloy_model_find_tensor(m, lookup) : NULL;
    if (t) n -= t->numel;
    return n;
}

static void print_head(const bench_args *a, const char *status) {
    printf("{\"impl\":\"alloy\",\"model\":");
    json_string(a->model);
    printf(",\"B\":%d,\"T\":%d,\"precision\":\"%s\",\"recompute\":%s,\"threads\":%d,\"status\":\"%s\"", a->B, a->T,
           a->precision == ALLOY_PRECISION_BF16 ? "bf16" : "f32", a->recompute ? "true" : "false",
           omp_get_max_threads(), status);
}

/* Writes DIR/tokens.bin: the (B, T+1) int32 batch. */
static alloy_status save_tokens(const char *dir, const int32_t *tok, size_t n) {
    char *path = alloy_path_join(dir, "tokens.bin");
    if (!path) return ALLOY_STATUS_NOMEM;
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(tok, sizeof *tok, n, f) == n;
    if (f && fclose(f)) ok = false;
    alloy_status s = ok ? ALLOY_STATUS_OK : alloy_fail(ALLOY_STATUS_IO, "%s: cannot write", path);
    alloy_free(path);
    return s;
}

static int run_train(const bench_args *a) {
    alloy_config cfg;
    alloy_status s = alloy_config_preset(&cfg, a->model, 1);
    if (s) {
        fprintf(stderr, "train_bench: %s\n", alloy_last_error());
        return 2;
    }
    // the tokenizers of the families: GPT-2's BPE, Llama's SentencePiece
    int vocab = cfg.vocab_size = cfg.family == ALLOY_FAMILY_GPT2 ? 50257 : 32000;
    long long rss_base = peak_rss_bytes(); // the process before the model: code, libraries
    alloy_model_options opts = {.precision = a->precision, .recompute = a->recompute};
    alloy_model *m = NULL;
    s = alloy_model_create_ex(&m, &cfg, a->B, a->T, &opts);
    if (s) {
        // the library refuses this configuration: a row of the table, not a failure
        print_head(a, "n/a");
        printf(",\"error\":");
        json_string(alloy_last_error());
        printf("}\n");
        return 0;
    }
    alloy_model_init_weights(m, a->seed);
    alloy_adamw_config oc = alloy_adamw_defaults();
    alloy_optimizer *opt = NULL;
    size_t BT = (size_t)a->B * (size_t)a->T, row = (size_t)a->T + 1;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)a->B * row);
    int32_t *inputs = malloc(sizeof(int32_t) * BT), *targets = malloc(sizeof(int32_t) * BT);
    int total = a->warmup + a->steps;
    float *losses = malloc(sizeof(float) * (size_t)total);
    double *secs = malloc(sizeof(double) * (size_t)total);
    if (!tok || !inputs || !targets || !losses || !secs) {
        s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the batch");
        goto done;
    }
    if ((s = alloy_optimizer_create(&opt, m, &oc))) goto done;
    alloy_rng rng;
    alloy_rng_seed(&rng, a->seed ^ 0x746f6b656e73ULL);
    for (size_t i = 0; i < (size_t)a->B * row; i++) tok[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)vocab);
    for (int b = 0; b < a->B; b++)
        for (int t = 0; t < a->T; t++) {
            inputs[(size_t)b * a->T + t] = tok[(size_t)b * row + t];
            targets[(size_t)b * a->T + t] = tok[(size_t)b * row + t + 1];
        }
    if (a->save_dir && ((s = alloy_model_save(m, a->save_dir)) || (s = save_tokens(a->save_dir, tok, a->B * row))))
        goto done;

    const float lr = 3e-4f;
    double m0 = 0, s0 = 0, m1, s1, w0 = 0;
    bool cpu_ok = true;
    for (int step = 0; step < total; step++) {
        if (step == a->warmup) {
            cpu_ok = cpu_seconds(&m0, &s0);
            w0 = now_s();
        }
        double t0 = now_s();
        float loss = 0.0f, gnorm = 0.0f;
        alloy_model_zero_grad(m);
        // the training path of alloy train: no (B·T, V) logits, the head's backward in the loss
        alloy_backward_in grad = {.dhidden = alloy_model_dhidden_buffer(m), .aux_scale = 1.0f};
        if ((s = alloy_model_forward_ex(m, inputs, a->B, a->T, false)) ||
            (s = alloy_lm_loss_chunked(m, targets, NULL, a->B, a->T, 1.0f, alloy_model_dhidden_buffer(m), &loss)) ||
            (s = alloy_model_backward(m, &grad)) || (s = alloy_optimizer_step(opt, m, lr, &gnorm)))
            goto done;
        secs[step] = now_s() - t0;
        losses[step] = loss;
        fprintf(stderr, "train_bench: %s B=%d T=%d step %d/%d%s: loss %.5f, %.3f s\n", a->model, a->B, a->T,
                step + 1, total, step < a->warmup ? " (warm-up)" : "", (double)loss, secs[step]);
    }
    cpu_ok &= cpu_seconds(&m1, &s1);
    double others = others_share(m0, s0, m1, s1, now_s() - w0, cpu_ok);
    double sum = 0.0, best = INFINITY;
    for (int i = a->warmup; i < total; i++) {
        sum += secs[i];
        if (secs[i] < best) best = secs[i];
    }
    double mean = sum / a->steps;
    const alloy_config *c = &m->config;
    size_t n_mm = matmul_params(m);
    double flops_tok = 6.0 * (double)n_mm + 12.0 * c->n_layer * (double)a->T * c->d_model;
    print_head(a, "ok");
    printf(",\"family\":\"%s\",\"L\":%d,\"C\":%d,\"V\":%d,\"params\":%zu,\"params_matmul\":%zu", alloy_family_name(c->family),
           c->n_layer, c->d_model, c->vocab_size, m->num_params, n_mm);
    printf(",\"flops_per_token\":%.0f,\"acts_bytes\":%zu,\"acts_needed_bytes\":%.0f,\"state_bytes\":%zu", flops_tok,
           alloy_model_activation_bytes(m), needed_activation_bytes(c, a->B, a->T), 16 * m->num_params);
    printf(",\"warmup\":%d,\"steps\":%d,\"sec_per_step\":%.4f,\"sec_min\":%.4f,\"tokens_per_s\":%.2f", a->warmup,
           a->steps, mean, best, (double)BT / mean);
    printf(",\"others_cpu_share\":%.3f", others);
    printf(",\"secs\":[");
    for (int i = 0; i < total; i++) printf("%s%.4f", i ? "," : "", secs[i]);
    printf("],\"losses\":[");
    for (int i = 0; i < total; i++) printf("%s%.6f", i ? "," : "", (double)losses[i]);
    printf("],\"peak_rss_bytes\":%lld,\"rss_base_bytes\":%lld,\"openblas_coretype\":", peak_rss_bytes(), rss_base);
    json_string(getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "");
    printf("}\n");
done:
    if (s) {
        print_head(a, "error");
        printf(",\"error\":");
        json_string(alloy_last_error());
        printf("}\n");
        fprintf(stderr, "train_bench: %s\n", alloy_last_error());
    }
    free(tok);
    free(inputs);
    free(targets);
    free(losses);
    free(secs);
    alloy_optimizer_destroy(opt);
    alloy_model_destroy(m);
    return s ? 1 : 0;
}

/* ---- command line ----------------------------------------------------------------------- */

static int usage(const char *msg) {
    if (msg) fprintf(stderr, "train_bench: %s\n", msg);
    fprintf(stderr,
            "usage: train_bench --model PRESET --batch B --seq T [--precision f32|bf16] [--recompute]\n"
            "                   [--steps N] [--warmup W] [--seed S] [--save DIR]\n"
            "       train_bench --peak\n");
    return 2;
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv) {
    bench_args a = {.model = NULL, .B = 4, .T = 64, .steps = 3, .warmup = 1, .seed = 1337};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(f, "--peak")) a.peak = true;
        else if (!strcmp(f, "--recompute")) a.recompute = true;
        else if (!v) return usage("a flag is missing its value");
        else {
            i++;
            if (!strcmp(f, "--model")) a.model = v;
            else if (!strcmp(f, "--batch")) ok = parse_int(v, 1, 1 << 16, &a.B);
            else if (!strcmp(f, "--seq")) ok = parse_int(v, 1, 1 << 20, &a.T);
            else if (!strcmp(f, "--steps")) ok = parse_int(v, 1, 1 << 20, &a.steps);
            else if (!strcmp(f, "--warmup")) ok = parse_int(v, 0, 1 << 20, &a.warmup);
            else if (!strcmp(f, "--save")) a.save_dir = v;
            else if (!strcmp(f, "--seed")) {
                char *end;
                a.seed = strtoull(v, &end, 10);
                ok = end != v && !*end;
            } else if (!strcmp(f, "--precision")) {
                if (!strcmp(v, "f32")) a.precision = ALLOY_PRECISION_F32;
                else if (!strcmp(v, "bf16")) a.precision = ALLOY_PRECISION_BF16;
                else ok = false;
            } else
                return usage("unknown flag");
        }
        if (!ok) return usage("a flag has a bad value");
    }
    if (a.peak) return run_peak();
    if (!a.model) return usage("--model is required");
    return run_train(&a);
}
