/*
 * test_model.c — the transformer against its PyTorch twin (tests/reference/twin.py).
 *
 * For three configurations — a small GPT-2, a small Llama with grouped-query attention and an
 * untied head, and an "odd" tied Llama (C = 60 not a multiple of 8, head_dim 10, 6 query heads
 * over 2 KV heads, non-default epsilon and rope theta) — the test saves a seeded model with
 * alloy_model_save, runs the twin once on that folder for two batches (all tokens counted; a
 * weighted mask with zeros and a negative target), loads the folder back with alloy_model_load
 * for each batch, and compares:
 *   - the logits and the final hidden states (also from a forward that skips the logits),
 *   - the per-token losses and the mean loss,
 *   - the gradient of every parameter,
 *   - 10 AdamW steps (warm-up + cosine schedule, weight decay on matrices and embeddings,
 *     global-norm clipping that binds in some steps): the loss and gradient norm of each step.
 *   - the chunked loss of the training path (ragged 3-row chunks, the head's backward fused in):
 *     the same loss and gradients;
 *   - the bf16 path (--dtype bf16) against the twin under torch.autocast(bfloat16), with
 *     tolerances stated below.
 * The twin loads the checkpoint strictly and names its gradients as its parameters, so the
 * parameter table's names and shapes are checked against the Hugging Face layouts both ways;
 * a last case checks that the twin does refuse a wrong name. The largest errors are printed
 * per configuration ("# ..." lines).
 *
 * The twin needs PYTHON (harness.h) with torch and numpy (Debian: python3-torch). Without them
 * the cases skip ("# SKIP oracle: ..."), which tests/run.sh under CI (ALLOY_REQUIRE_ORACLES=1)
 * counts as failed: the model would otherwise go unchecked.
 */
#include "alloy/alloy.h"
#include "harness.h"
#include "model_util.h"

#include <math.h>
#include <string.h>
#include <sys/wait.h>

#define MAX_B 3
#define MAX_T 16
#define STEPS 10

/* Tolerances. fp32 rounding, on our side and the twin's, leaves an absolute error of a few
 * ulps of a tensor's own scale in every element — measured max|a - b| <= 1.0e-6 · max|b| for
 * every tensor compared here — whatever the element's own size: an element that is small
 * through cancellation carries the same absolute error as a large one. A fixed absolute floor
 * cannot serve tensors whose scales range from 1e-2 (some gradients) to 4 (hidden states), so
 * each comparison allows, per element,
 *     |a - b| <= rtol · |b| + ALLOWANCE · max|b|,
 * ALLOWANCE = 5e-6 being ~40 ulps of the tensor's scale (5x the worst rounding measured).
 * It is computed as harness_max_rel with floor ALLOWANCE · max|b| / rtol (<= rtol passes):
 * elements above half the tensor's largest value (forward, rtol 1e-5) or 5% of it (gradients,
 * rtol 1e-4) are held to rtol relative, smaller ones to the allowance. Real errors move
 * elements by far more: a rotary rotation in the wrong direction, a wrong KV-head mapping, an
 * RMSNorm epsilon of 1e-6 instead of 2e-6, GELU erf instead of tanh each fail dozens of checks
 * (tried by mutating the twin). */
static double ALLOWANCE = 5e-6;
static double TOL_FWD = 1e-5;   /* logits, hidden states, per-token losses, mean loss */
static double TOL_GRAD = 1e-4;  /* every parameter gradient */
static double TOL_TRAIN = 1e-4; /* loss and gradient norm of each of the 10 AdamW steps */
static double TOL_NORM = 1e-4;  /* the gradient norm of each step (bf16 loosens it alone) */

/* bf16 (test_bf16_autocast): our matrix products round their inputs to bf16 (8 significant
 * bits: a relative rounding of up to 2^-9 ≈ 2e-3 per input) and sum in fp32; the twin runs
 * under torch.autocast, which also rounds each product's OUTPUT to bf16 and runs what follows
 * (GELU, softmax inputs, residual adds of bf16 tensors) on those. The two sides therefore differ
 * by a few bf16 roundings per layer; the tolerances below are ~2.5x the largest differences
 * measured. They catch what breaks a bf16 path in the model — a transposed or wrongly packed
 * operand, a tail dropped, a product left out — which moves results by O(1); that the inputs
 * are rounded exactly as bf16 is checked bit for bit in tests/test_gemm_bf16.c. */
static bool bf16_mode;
#define BF16_ALLOWANCE 2.5e-2
#define BF16_TOL_FWD 5e-2
#define BF16_TOL_GRAD 1e-1
#define BF16_TOL_TRAIN 2e-2
/* the gradient norm after several steps at lr 1e-2 is the most sensitive figure: the two sides'
 * weights drift apart by the bf16 differences of every earlier step (measured 8.8e-2 at most) */
#define BF16_TOL_NORM 0.25

/* The optimiser and schedule of the 10-step run. clip = 1.5 binds while the gradient norm is
 * high (the first steps, norms 2 to 7 with the scaled-up initialisation) and not once the
 * loss has dropped, so both sides of clip_grad_norm_'s min(1, ...) are exercised.
 * eps = 1e-6 rather than the usual 1e-8: Adam's first update is lr·g / (|g| + eps), about
 * lr·sign(g) for every |g| above eps, so with 1e-8 the elements whose gradient is rounding
 * noise (|g| <~ 1e-7 here, where the two sides' noise differs) move by a good part of lr in
 * directions the noise decides; over 10 steps at lr 1e-2 that grows 1e-7 differences to 1e-5
 * in the loss and 1e-4 in the gradient norm (measured; our own runs with 1 and 2 threads
 * differ as much). With 1e-6 the worst is 7e-7 and 3e-6, so that a tolerance of 1e-4 keeps a
 * wide margin and still catches any real difference in the optimiser or the schedule. */
static const alloy_adamw_config adamw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-6f, .weight_decay = 0.1f,
                                         .grad_clip = 1.5f};
static const alloy_schedule sched = {.max_lr = 1e-2, .min_lr = 1e-3, .warmup_steps = 3, .total_steps = STEPS};


/* The largest errors seen, per configuration, for the closing report. */
typedef struct errors {
    double logits, hidden, losses, loss, grads, train_loss, train_norm; /* as checked */
    double aux;                                                         /* MoE: the load-balancing loss */
    double logits_scale, hidden_scale, grads_scale;                     /* max|a - b| / max|b| */
    char worst_grad[ALLOY_MAX_NAME];
    int compared;      /* cases that got as far as a reference */
    int clipped, steps;
} errors;

static void note(double *worst, double e) {
    if (e > *worst || isnan(e)) *worst = isnan(e) ? INFINITY : e;
}

/* Ours (a) against the twin's (b), n values: max_i |a_i - b_i| / (floor + |b_i|) with floor =
 * ALLOWANCE · max|b| / rtol, so that a result <= rtol means every element is within
 * rtol·|b| + ALLOWANCE·max|b|. *scale_err gets max|a - b| / max|b|. */
static double compare(const float *a, const float *b, size_t n, double rtol, double *scale_err) {
    double bmax = 0.0, dmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > dmax || isnan(d)) dmax = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > bmax) bmax = fabs((double)b[i]);
    }
    if (bmax == 0.0) { // an all-zero reference: only exact zeros pass
        *scale_err = dmax == 0.0 ? 0.0 : INFINITY;
        return *scale_err;
    }
    *scale_err = dmax / bmax;
    return harness_max_rel(a, b, n, ALLOWANCE * bmax / rtol);
}

/* What twin.py imports (harness_need_python). */
#define TWIN_MODULES "torch, numpy"

static void test_twin_available(void) { NEED_PYTHON(TWIN_MODULES); }

/* A fresh model from a seed, moved away from the defaults so that every parameter matters:
 * matrices scaled 4x (std 0.08: attention is far from uniform, the loss far from log V), norm
 * weights 1 + N(0, 0.2²), biases N(0, 0.1²). */
static alloy_model *make_model(const alloy_config *cfg, uint64_t seed) {
    alloy_model *m;
    if (alloy_model_create(&m, cfg, MAX_B, MAX_T)) {
        fprintf(stderr, "  alloy_model_create: %s\n", alloy_last_error());
        return NULL;
    }
    alloy_model_init_weights(m, seed);
    alloy_rng rng;
    alloy_rng_seed(&rng, seed * 7919 + 1);
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

/* One batch: random tokens and targets (B, T); if masked, per-token weights in {0, 0.5, 1, 2}
 * (at least one 0) and one negative target, else no mask (all weights 1). */
typedef struct batch {
    int B, T;
    bool masked;
    int32_t tokens[MAX_B * MAX_T];
    int32_t targets[MAX_B * MAX_T];
    float mask[MAX_B * MAX_T];
} batch;

static void make_batch(batch *b, int V, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed);
    static const float weights[] = {0.0f, 0.5f, 1.0f, 1.0f, 2.0f};
    for (int i = 0; i < b->B * b->T; i++) {
        b->tokens[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
        b->targets[i] = (int32_t)alloy_rng_below(&rng, (uint64_t)V);
        b->mask[i] = b->masked ? weights[alloy_rng_below(&rng, 5)] : 1.0f;
    }
    if (b->masked) {
        b->mask[1] = 0.0f;
        b->targets[b->T + 2] = -1;
    }
}

/* The batch as the twin's inputs file: tokens, targets and (if masked) mask. */
static alloy_status write_batch(const batch *b, const char *path) {
    alloy_st_entry in[3] = {
        {.name = "tokens", .dtype = ALLOY_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->tokens},
        {.name = "targets", .dtype = ALLOY_DTYPE_I32, .ndim = 2, .shape = {b->B, b->T}, .data = b->targets},
        {.name = "mask", .dtype = ALLOY_DTYPE_F32, .ndim = 2, .shape = {b->B, b->T}, .data = b->mask},
    };
    return alloy_safetensors_write(path, in, b->masked ? 3 : 2, NULL);
}

/* The reference tensor `name` as floats, checked against the expected element count. */
static const float *ref_tensor(const alloy_safetensors *st, const char *name, size_t numel, float *buf) {
    const alloy_st_tensor *t = alloy_safetensors_find(st, name);
    if (!t || t->dtype != ALLOY_DTYPE_F32 || t->numel != numel) {
        fprintf(stderr, "  reference: tensor \"%s\" missing or not %zu floats\n", name, numel);
        return NULL;
    }
    if (alloy_st_tensor_to_f32(st, t, buf)) return NULL;
    return buf;
}

static bool is_output_name(const char *name) {
    static const char *const outs[] = {"logits",    "hidden",           "losses",    "loss",         "train_losses",
                                       "train_grad_norms", "train_lrs", "aux_loss", "expert_counts"};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        if (!strcmp(name, outs[i])) return true;
    return false;
}

/* Runs the twin on the checkpoint folder `model_dir` for n inputs files, writing n reference
 * files; `steps` 0 skips the training run; stderr goes to `stderr_path` if not NULL. Returns
 * the exit status (-1: the oracle is missing and the case skips). */
static int run_twin(const char *model_dir, const char *const *inputs, const char *const *refs, int n, int steps,
                    const char *stderr_path) {
    char args[8192];
    size_t k = (size_t)snprintf(args, sizeof args, "--model '%s' --inputs", model_dir);
    for (int i = 0; i < n && k < sizeof args; i++) k += (size_t)snprintf(args + k, sizeof args - k, " '%s'", inputs[i]);
    if (k < sizeof args) k += (size_t)snprintf(args + k, sizeof args - k, " --out");
    for (int i = 0; i < n && k < sizeof args; i++) k += (size_t)snprintf(args + k, sizeof args - k, " '%s'", refs[i]);
    if (k < sizeof args)
        k += (size_t)snprintf(args + k, sizeof args - k,
                              " --steps %d --lr %.9g --min-lr %.9g --warmup %lld --total-steps %lld --wd %.9g "
                              "--clip %.9g --beta1 %.9g --beta2 %.9g --eps %.9g",
                              steps, sched.max_lr, sched.min_lr, (long long)sched.warmup_steps,
                              (long long)sched.total_steps, (double)adamw.weight_decay, (double)adamw.grad_clip,
                              (double)adamw.beta1, (double)adamw.beta2, (double)adamw.eps);
    if (bf16_mode && k < sizeof args) k += (size_t)snprintf(args + k, sizeof args - k, " --autocast bf16");
    if (stderr_path && k < sizeof args) k += (size_t)snprintf(args + k, sizeof args - k, " 2>'%s'", stderr_path);
    ALLOY_ASSERT(k < sizeof args);
    return harness_reference(TWIN_MODULES, "twin.py", "%s", args);
}

/* Our model, loaded from the checkpoint folder the twin read, against the twin's reference
 * file for one batch; the largest errors go into *err. */
static void compare_case(const char *label, const char *model_dir, const char *ref_path, const batch *b,
                         errors *err) {
    alloy_model *m;
    REQUIRE(alloy_model_load(&m, model_dir, MAX_B, MAX_T) == ALLOY_STATUS_OK, "%s: %s", label, alloy_last_error());
    if (bf16_mode) m->opts.precision = ALLOY_PRECISION_BF16; // changes the products only, no buffers
    alloy_safetensors *ref;
    if (alloy_safetensors_open(&ref, ref_path)) {
        EXPECT(0, "%s: reference: %s", label, alloy_last_error());
        alloy_model_destroy(m);
        return;
    }
    const int B = b->B, T = b->T, V = m->config.vocab_size, C = m->config.d_model;
    const size_t N = (size_t)B * T;
    const int32_t *tokens = b->tokens, *targets = b->targets;
    const float *const mk = b->masked ? b->mask : NULL;
    alloy_status s;
    err->compared++;

    // the parameter names: the twin writes one gradient per parameter of its Hugging Face
    // layout, named as the parameter; it must be exactly our table
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        const alloy_st_tensor *t = alloy_safetensors_find(ref, ti->name);
        bool same = t && t->ndim == ti->ndim;
        for (int d = 0; same && d < ti->ndim; d++) same = t->shape[d] == ti->shape[d];
        EXPECT(same, "%s: the twin has no parameter \"%s\" of the table's shape", label, ti->name);
    }
    for (int i = 0; i < ref->n_tensors; i++) {
        const char *name = ref->tensors[i].name;
        EXPECT(is_output_name(name) || alloy_model_find_tensor(m, name), "%s: the twin has a parameter \"%s\" "
               "that the table lacks", label, name);
    }

    size_t biggest = N * (size_t)V > m->num_params ? N * (size_t)V : m->num_params;
    float *buf = malloc(sizeof(float) * biggest);
    float *logits = malloc(sizeof(float) * N * (size_t)V);
    float *lnf = malloc(sizeof(float) * N * (size_t)C);
    const float *r;
    if (!buf || !logits || !lnf) {
        EXPECT(0, "out of memory");
        goto done;
    }

    // forward: logits, final hidden states, losses
    s = alloy_model_forward(m, tokens, B, T);
    EXPECT(s == ALLOY_STATUS_OK, "%s: forward: %s", label, alloy_last_error());
    memcpy(logits, alloy_model_logits(m), sizeof(float) * N * (size_t)V);
    memcpy(lnf, alloy_model_hidden(m), sizeof(float) * N * (size_t)C);
    if ((r = ref_tensor(ref, "logits", N * (size_t)V, buf))) {
        double sc, e = compare(logits, r, N * (size_t)V, TOL_FWD, &sc);
        note(&err->logits, e);
        note(&err->logits_scale, sc);
        EXPECT(e <= TOL_FWD, "%s: logits differ: error %.3g (%.3g of their scale)", label, e, sc);
    } else EXPECT(0, "%s: no reference logits", label);
    if ((r = ref_tensor(ref, "hidden", N * (size_t)C, buf))) {
        double sc, e = compare(lnf, r, N * (size_t)C, TOL_FWD, &sc);
        note(&err->hidden, e);
        note(&err->hidden_scale, sc);
        EXPECT(e <= TOL_FWD, "%s: final hidden states differ: error %.3g (%.3g of their scale)", label, e, sc);
    } else EXPECT(0, "%s: no reference hidden states", label);
    float loss = 0.0f;
    s = alloy_lm_loss(m, targets, mk, B, T, 1.0f, alloy_model_logits(m), &loss);
    EXPECT(s == ALLOY_STATUS_OK, "%s: loss: %s", label, alloy_last_error());
    if ((r = ref_tensor(ref, "losses", N, buf))) {
        double sc, e = compare(alloy_model_token_losses(m), r, N, TOL_FWD, &sc);
        note(&err->losses, e);
        EXPECT(e <= TOL_FWD, "%s: per-token losses differ: error %.3g (%.3g of their scale)", label, e, sc);
    } else EXPECT(0, "%s: no reference losses", label);
    if ((r = ref_tensor(ref, "loss", 1, buf))) {
        double e = harness_max_rel(&loss, r, 1, 0.0);
        note(&err->loss, e);
        EXPECT(e <= TOL_FWD, "%s: loss %.8g vs twin %.8g (rel error %.3g)", label, loss, r[0], e);
    } else EXPECT(0, "%s: no reference loss", label);

    // MoE: the load-balancing loss and each layer's routing counts (exact)
    if (m->config.n_experts > 0) {
        const size_t LE = (size_t)m->config.n_layer * (size_t)m->config.n_experts;
        if ((r = ref_tensor(ref, "aux_loss", 1, buf))) {
            float aux = alloy_model_aux_loss(m);
            double e = harness_max_rel(&aux, r, 1, 0.0);
            note(&err->aux, e);
            EXPECT(e <= TOL_FWD, "%s: aux loss %.8g vs twin %.8g (rel error %.3g)", label, (double)aux, r[0], e);
        } else EXPECT(0, "%s: no reference aux loss", label);
        if ((r = ref_tensor(ref, "expert_counts", LE, buf))) {
            size_t bad = 0;
            for (size_t i = 0; i < LE; i++) bad += (float)alloy_model_expert_tokens(m)[i] != r[i];
            EXPECT(bad == 0, "%s: %zu of %zu per-layer expert token counts differ from the twin's", label, bad, LE);
        } else EXPECT(0, "%s: no reference expert counts", label);
    }

    // backward: every parameter's gradient
    alloy_model_zero_grad(m);
    s = alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
    EXPECT(s == ALLOY_STATUS_OK, "%s: backward: %s", label, alloy_last_error());
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        if (!(r = ref_tensor(ref, ti->name, ti->numel, buf))) continue; // reported above
        double sc, e = compare(m->grads_memory + ti->offset, r, ti->numel, TOL_GRAD, &sc);
        if (e > err->grads || isnan(e)) snprintf(err->worst_grad, sizeof err->worst_grad, "%s", ti->name);
        note(&err->grads, e);
        note(&err->grads_scale, sc);
        EXPECT(e <= TOL_GRAD, "%s: gradient of %s differs: error %.3g (%.3g of its scale)", label, ti->name, e,
               sc);
    }

    // a forward without the LM head leaves the same final hidden states
    s = alloy_model_forward_ex(m, tokens, B, T, false);
    EXPECT(s == ALLOY_STATUS_OK, "%s: forward without logits: %s", label, alloy_last_error());
    EXPECT(!memcmp(lnf, alloy_model_hidden(m), sizeof(float) * N * (size_t)C),
           "%s: skipping the logits changed the final hidden states", label);
    if ((r = ref_tensor(ref, "hidden", N * (size_t)C, buf))) {
        double sc, e = compare(alloy_model_hidden(m), r, N * (size_t)C, TOL_FWD, &sc);
        note(&err->hidden, e);
        note(&err->hidden_scale, sc);
        EXPECT(e <= TOL_FWD, "%s: hidden states without logits differ: error %.3g", label, e);
    }

    // the chunked loss (the training path: no logits buffer; the head's backward fused in), in
    // ragged chunks of 3 rows: the same loss and every gradient
    m->loss_chunk_rows = 3;
    alloy_model_zero_grad(m);
    s = alloy_model_forward_ex(m, tokens, B, T, false);
    float closs = 0.0f;
    if (!s) s = alloy_lm_loss_chunked(m, targets, mk, B, T, 1.0f, alloy_model_dhidden_buffer(m), &closs);
    if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dhidden = alloy_model_dhidden_buffer(m), .aux_scale = 1.0f});
    EXPECT(s == ALLOY_STATUS_OK, "%s: chunked loss and backward: %s", label, alloy_last_error());
    if ((r = ref_tensor(ref, "loss", 1, buf))) {
        double e = harness_max_rel(&closs, r, 1, 0.0);
        note(&err->loss, e);
        EXPECT(e <= TOL_FWD, "%s: chunked loss %.8g vs twin %.8g (rel error %.3g)", label, closs, r[0], e);
    }
    if ((r = ref_tensor(ref, "losses", N, buf))) {
        double sc, e = compare(alloy_model_token_losses(m), r, N, TOL_FWD, &sc);
        note(&err->losses, e);
        EXPECT(e <= TOL_FWD, "%s: chunked per-token losses differ: error %.3g", label, e);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *ti = &m->tensors[i];
        if (!(r = ref_tensor(ref, ti->name, ti->numel, buf))) continue;
        double sc, e = compare(m->grads_memory + ti->offset, r, ti->numel, TOL_GRAD, &sc);
        note(&err->grads, e);
        EXPECT(e <= TOL_GRAD, "%s: chunked loss: gradient of %s differs: error %.3g", label, ti->name, e);
    }
    m->loss_chunk_rows = ALLOY_LOSS_CHUNK_ROWS;

    // 10 AdamW steps on the same batch
    float ref_losses[STEPS], ref_norms[STEPS], ref_lrs[STEPS];
    if (ref_tensor(ref, "train_losses", STEPS, ref_losses) && ref_tensor(ref, "train_grad_norms", STEPS, ref_norms) &&
        ref_tensor(ref, "train_lrs", STEPS, ref_lrs)) {
        alloy_optimizer *opt;
        s = alloy_optimizer_create(&opt, m, &adamw);
        EXPECT(s == ALLOY_STATUS_OK, "%s: optimiser: %s", label, alloy_last_error());
        for (int k = 0; k < STEPS && !s; k++) {
            float l = 0.0f, norm = 0.0f;
            float lr = (float)alloy_schedule_lr(&sched, k);
            s = alloy_model_forward(m, tokens, B, T);
            if (!s) s = alloy_lm_loss(m, targets, mk, B, T, 1.0f, alloy_model_logits(m), &l);
            alloy_model_zero_grad(m);
            if (!s) s = alloy_model_backward(m, &(alloy_backward_in){.dlogits = alloy_model_logits(m), .aux_scale = 1.0f});
            if (!s) s = alloy_optimizer_step(opt, m, lr, &norm);
            EXPECT(s == ALLOY_STATUS_OK, "%s: step %d: %s", label, k, alloy_last_error());
            EXPECT(lr == ref_lrs[k], "%s: step %d: learning rate %.9g vs twin %.9g", label, k, lr, ref_lrs[k]);
            double el = harness_max_rel(&l, &ref_losses[k], 1, 0.0);
            double en = harness_max_rel(&norm, &ref_norms[k], 1, 0.0);
            note(&err->train_loss, el);
            note(&err->train_norm, en);
            EXPECT(el <= TOL_TRAIN, "%s: step %d: loss %.8g vs twin %.8g (rel error %.3g)", label, k, l,
                   ref_losses[k], el);
            EXPECT(en <= TOL_NORM, "%s: step %d: gradient norm %.8g vs twin %.8g (rel error %.3g)", label, k,
                   norm, ref_norms[k], en);
            err->clipped += norm > adamw.grad_clip;
            err->steps++;
        }
        EXPECT(ref_losses[STEPS - 1] < ref_losses[0] - 0.1f, "%s: the twin's loss did not fall (%g -> %g)", label,
               ref_losses[0], ref_losses[STEPS - 1]);
        alloy_optimizer_destroy(opt);
    } else {
        EXPECT(0, "%s: no reference training run", label);
    }
done:
    free(buf);
    free(logits);
    free(lnf);
    alloy_safetensors_close(ref);
    alloy_model_destroy(m);
}

static void report(const char *name, const errors *e) {
    printf("# %s: logits %.2e (of scale %.2e), hidden %.2e (%.2e), token losses %.2e, loss %.2e, "
           "gradients %.2e (%.2e; worst %s), 10-step losses %.2e, gradient norms %.2e; clipping bound in %d of "
           "%d steps\n",
           name, e->logits, e->logits_scale, e->hidden, e->hidden_scale, e->losses, e->loss, e->grads,
           e->grads_scale, e->worst_grad, e->train_loss, e->train_norm, e->clipped, e->steps);
    if (e->aux > 0.0) printf("# %s: aux loss %.2e\n", name, e->aux);
}

/* One configuration: a model from `seed` saved as a checkpoint folder, a plain batch (B1, T1)
 * and a masked one (B2, T2), one run of the twin for both, the comparisons, the report. */
static void check_config(const char *name, const alloy_config *cfg, uint64_t seed, int B1, int T1, int B2, int T2) {
    NEED_PYTHON(TWIN_MODULES);
    static batch b[2]; // static: 2 x 3 x 16 tokens are small, but keep them off the stack anyway
    b[0] = (batch){.B = B1, .T = T1, .masked = false};
    b[1] = (batch){.B = B2, .T = T2, .masked = true};
    char dir[256], model_dir[300], inputs[2][320], refs[2][320];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    alloy_model *m = make_model(cfg, seed);
    REQUIRE(m, "%s: model", name);
    alloy_status s = alloy_model_save(m, model_dir);
    alloy_model_destroy(m);
    for (int c = 0; c < 2 && !s; c++) {
        make_batch(&b[c], cfg->vocab_size, seed + 100 + (uint64_t)c);
        snprintf(inputs[c], sizeof inputs[c], "%s/inputs-%d.safetensors", dir, c);
        snprintf(refs[c], sizeof refs[c], "%s/ref-%d.safetensors", dir, c);
        s = write_batch(&b[c], inputs[c]);
    }
    REQUIRE(s == ALLOY_STATUS_OK, "%s: writing the checkpoint and inputs: %s", name, alloy_last_error());
    const char *in_list[2] = {inputs[0], inputs[1]}, *ref_list[2] = {refs[0], refs[1]};
    int rc = run_twin(model_dir, in_list, ref_list, 2, STEPS, NULL);
    REQUIRE(rc == 0, "%s: twin.py failed with status %d (its message is above)", name, rc);

    errors e = {0};
    for (int c = 0; c < 2; c++) {
        char label[160];
        snprintf(label, sizeof label, "%s, B=%d T=%d%s", name, b[c].B, b[c].T, b[c].masked ? " masked" : "");
        compare_case(label, model_dir, refs[c], &b[c], &e);
    }
    if (e.compared) report(name, &e);
    if (e.steps) {
        EXPECT(e.clipped > 0, "%s: clipping never bound: the test does not exercise it", name);
        EXPECT(e.clipped < e.steps, "%s: clipping bound in every step", name);
    }
}

/* model_util.h's configurations at V = 67 (61 for the odd Llama), T = 32. */
static alloy_config gpt2_config(void) { return tiny_config(ALLOY_FAMILY_GPT2, 67, 32); }
static alloy_config llama_config(void) { return tiny_config(ALLOY_FAMILY_LLAMA, 67, 32); }

/* C = 60 (not a multiple of 8), head_dim 10 (rotary pairs (i, i+5)), 6 query heads over 2 KV
 * heads (groups of 3), tied head, and an epsilon and theta that the twin must read from
 * config.json rather than assume. */
static alloy_config odd_config(void) { return odd_llama_config(32); }

static void test_gpt2(void) {
    alloy_config c = gpt2_config();
    check_config("gpt2 (V=67 L=2 H=4 C=32 F=128)", &c, 11, 2, 16, 3, 9);
}

static void test_llama_gqa(void) {
    alloy_config c = llama_config();
    check_config("llama GQA (V=67 L=2 H=4 KV=2 C=32 F=88 untied)", &c, 23, 3, 7, 2, 16);
}

/* The bf16 path (--dtype bf16) against the twin under torch.autocast(bfloat16), for both
 * families, with the bf16 tolerances above. */
static void test_bf16_autocast(void) {
    if (!gemm_bf16_supported()) SKIP("cpu: no avx512_bf16, so there is no bf16 path to check");
    double saved[5] = {ALLOWANCE, TOL_FWD, TOL_GRAD, TOL_TRAIN, TOL_NORM};
    bf16_mode = true;
    ALLOWANCE = BF16_ALLOWANCE, TOL_FWD = BF16_TOL_FWD, TOL_GRAD = BF16_TOL_GRAD, TOL_TRAIN = BF16_TOL_TRAIN;
    TOL_NORM = BF16_TOL_NORM;
    alloy_config c = gpt2_config();
    check_config("bf16 gpt2 (V=67 L=2 H=4 C=32 F=128)", &c, 11, 2, 16, 3, 9);
    c = llama_config();
    check_config("bf16 llama GQA (V=67 L=2 H=4 KV=2 C=32 F=88 untied)", &c, 23, 3, 7, 2, 16);
    bf16_mode = false;
    ALLOWANCE = saved[0], TOL_FWD = saved[1], TOL_GRAD = saved[2], TOL_TRAIN = saved[3], TOL_NORM = saved[4];
}

static void test_llama_odd(void) {
    alloy_config c = odd_config();
    check_config("llama odd (V=61 L=2 H=6 KV=2 C=60 hd=10 F=100 tied)", &c, 37, 2, 13, 3, 11);
}

/* Mixtures of experts (coefficient 0.5 on the load-balancing loss so that its gradient
 * weighs in every router's): GPT-2 with 4 experts, top-2 (alloy's layout); Mixtral (the Llama
 * family saved as model_type mixtral) with GQA, 3 experts, top-2, untied; and a tied Mixtral
 * with top-1 routing, where every gate is 1 and the router learns from the aux loss alone. */
static void test_moe(void) {
    alloy_config c = gpt2_config();
    c.d_ff = 64, c.n_experts = 4, c.top_k = 2, c.router_aux_loss_coef = 0.5;
    check_config("moe gpt2 (E=4 K=2 C=32 F=64)", &c, 41, 2, 16, 3, 9);
    c = llama_config();
    c.d_ff = 48, c.n_experts = 3, c.top_k = 2, c.router_aux_loss_coef = 0.5;
    check_config("mixtral GQA (E=3 K=2 C=32 F=48 untied)", &c, 43, 3, 7, 2, 16);
    c = odd_config();
    c.d_ff = 40, c.n_experts = 4, c.top_k = 1, c.router_aux_loss_coef = 0.5;
    check_config("mixtral top-1 (E=4 K=1 C=60 F=40 tied)", &c, 47, 2, 13, 3, 11);
}

/* The twin must refuse a checkpoint whose names do not match the family's layout, naming the
 * missing and the unexpected tensor — otherwise the name check above would prove nothing. */
static void test_twin_rejects_wrong_names(void) {
    NEED_PYTHON(TWIN_MODULES);
    alloy_config c = llama_config();
    alloy_model *m = make_model(&c, 5);
    REQUIRE(m, "model");
    char dir[256], path[512], errpath[512];
    snprintf(dir, sizeof dir, "%s", harness_tmpdir());
    snprintf(path, sizeof path, "%s/model", dir);
    alloy_status s = alloy_model_save(m, path);
    // the same weights, one of them renamed
    alloy_st_entry e[32];
    ALLOY_ASSERT(m->n_tensors <= 32);
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        e[i] = (alloy_st_entry){.name = t->name, .dtype = ALLOY_DTYPE_F32, .ndim = t->ndim,
                                .data = m->params_memory + t->offset};
        if (!strcmp(t->name, "model.layers.1.mlp.up_proj.weight")) e[i].name = "model.layers.1.mlp.upproj.weight";
        for (int d = 0; d < t->ndim; d++) e[i].shape[d] = t->shape[d];
    }
    snprintf(path, sizeof path, "%s/model/model.safetensors", dir);
    if (!s) s = alloy_safetensors_write(path, e, m->n_tensors, NULL);
    batch b = {.B = 1, .T = 4};
    make_batch(&b, c.vocab_size, 6);
    char inputs[512], refpath[512], model_dir[512];
    snprintf(inputs, sizeof inputs, "%s/inputs.safetensors", dir);
    snprintf(refpath, sizeof refpath, "%s/ref.safetensors", dir);
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    if (!s) s = write_batch(&b, inputs);
    alloy_model_destroy(m);
    REQUIRE(s == ALLOY_STATUS_OK, "writing the checkpoint: %s", alloy_last_error());
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    const char *in_list[1] = {inputs}, *ref_list[1] = {refpath};
    int rc = run_twin(model_dir, in_list, ref_list, 1, 0, errpath);
    EXPECT(rc == 1, "the twin accepted a checkpoint with a wrong tensor name (status %d)", rc);
    char msg[4096] = "";
    FILE *f = fopen(errpath, "r");
    if (f) {
        size_t n = fread(msg, 1, sizeof msg - 1, f);
        msg[n] = '\0';
        fclose(f);
    }
    EXPECT(strstr(msg, "model.layers.1.mlp.up_proj.weight") && strstr(msg, "model.layers.1.mlp.upproj.weight"),
           "the twin's message does not name the missing and the unexpected tensor: %s", msg);
}

int main(void) {
    RUN(test_twin_available);
    RUN(test_gpt2);
    RUN(test_llama_gqa);
    RUN(test_llama_odd);
    RUN(test_bf16_autocast);
    RUN(test_moe);
    RUN(test_twin_rejects_wrong_names);
    return harness_exit();
}
