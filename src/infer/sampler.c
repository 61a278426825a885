/*
 * sampler.c — turning a row of logits into the next token: logit bias, repetition / presence /
 * frequency penalties, greedy, top-k, top-p, min-p, temperature and the draw, in the order
 * documented in alloy/infer.h (llama.cpp's default chain). tests/reference/infer_ref.py
 * implements the same chain in numpy; tests/test_infer.c compares the two stage by stage.
 *
 * The candidates are (logit, id) pairs, indexed by id until a stage sorts them (top-k, top-p:
 * largest logit first, the lower id first among equals). Probabilities are computed in double
 * precision and handed out as floats.
 */
#include "alloy/infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct alloy_sampler {
    alloy_sampler_params p;   /* logit_bias points at bias below */
    alloy_logit_bias *bias;   /* (p.n_logit_bias) own copy */
    int V;                    /* length of a row of logits */
    int nv;                   /* candidates are ids below this */
    alloy_rng rng;
    int32_t *hist;            /* the history: a ring of repeat_last_n tokens, or all of them (-1) */
    size_t hist_cap;          /* slots in hist */
    size_t hist_n;            /* tokens accepted since the reset */
    int *counts;              /* (V) zero between calls */
    cand *c;                  /* (V) the candidates */
    int n;                    /* candidates left */
    int32_t *ids;             /* (V) the handed-out view */
    float *probs;             /* (V) */
    double *pd;               /* (V) probabilities in double precision */
};

void alloy_sampler_params_default(alloy_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->repeat_last_n = 64;
    p->seed = 1337;
    p->n_vocab = 0;
}

static alloy_status check_params(const alloy_sampler_params *p, int V) {
    if (V < 1) return alloy_fail(ALLOY_STATUS_USAGE, "sampler: vocabulary size %d", V);
    if (isnan(p->temperature)) return alloy_fail(ALLOY_STATUS_USAGE, "sampler: temperature is NaN");
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: top_p %g is outside [0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: min_p %g is outside [0, 1]", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: repeat_penalty %g must be a positive number",
                          (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: presence_penalty and frequency_penalty must be finite");
    if (p->repeat_last_n < -1)
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: repeat_last_n %d (0: off, -1: the whole history)",
                          p->repeat_last_n);
    if (p->n_vocab < 0 || p->n_vocab > V)
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: n_vocab %d is outside [0, %d]", p->n_vocab, V);
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && !p->logit_bias))
        return alloy_fail(ALLOY_STATUS_USAGE, "sampler: %d logit biases but no array", p->n_logit_bias);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const alloy_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= V)
            return alloy_fail(ALLOY_STATUS_USAGE, "sampler: logit bias for token %d, outside the vocabulary [0, %d)",
                              b->token, V);
        if (isnan(b->bias) || b->bias == INFINITY)
            return alloy_fail(ALLOY_STATUS_USAGE, "sampler: logit bias %g for token %d (finite, or -inf to ban it)",
                              (double)b->bias, b->token);
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_sampler_create(alloy_sampler **out, const alloy_sampler_params *p, int V) {
    *out = NULL;
    alloy_status st = check_params(p, V);
    if (st) return st;
    alloy_sampler *s = alloy_calloc(1, sizeof *s);
    if (!s) return ALLOY_STATUS_NOMEM;
    s->p = *p;
    s->V = V;
    s->nv = p->n_vocab > 0 ? p->n_vocab : V;
    s->hist_cap = p->repeat_last_n > 0 ? (size_t)p->repeat_last_n : 64;
    s->hist = alloy_malloc(sizeof(int32_t) * s->hist_cap);
    s->counts = alloy_calloc((size_t)V, sizeof(int));
    s->c = alloy_malloc(sizeof(cand) * (size_t)V);
    s->ids = alloy_malloc(sizeof(int32_t) * (size_t)V);
    s->probs = alloy_malloc(sizeof(float) * (size_t)V);
    s->pd = alloy_malloc(sizeof(double) * (size_t)V);
    if (p->n_logit_bias > 0) {
        s->bias = alloy_malloc(sizeof(alloy_logit_bias) * (size_t)p->n_logit_bias);
        if (s->bias) memcpy(s->bias, p->logit_bias, sizeof(alloy_logit_bias) * (size_t)p->n_logit_bias);
    }
    s->p.logit_bias = s->bias;
    if (!s->hist || !s->counts || !s->c || !s->ids || !s->probs || !s->pd || (p->n_logit_bias > 0 && !s->bias)) {
        alloy_sampler_destroy(s);
        return alloy_fail(ALLOY_STATUS_NOMEM, "sampler: out of memory for a vocabulary of %d", V);
    }
    alloy_rng_seed(&s->rng, p->seed);
    *out = s;
    return ALLOY_STATUS_OK;
}

void alloy_sampler_destroy(alloy_sampler *s) {
    if (!s) return;
    alloy_free(s->bias);
    alloy_free(s->hist);
    alloy_free(s->counts);
    alloy_free(s->c);
    alloy_free(s->ids);
    alloy_free(s->probs);
    alloy_free(s->pd);
    alloy_free(s);
}

void alloy_sampler_reset(alloy_sampler *s, uint64_t seed) {
    s->hist_n = 0;
    alloy_rng_seed(&s->rng, seed);
}

alloy_status alloy_sampler_accept(alloy_sampler *s, int32_t token) {
    if (token < 0 || token >= s->V || s->p.repeat_last_n == 0) return ALLOY_STATUS_OK;
    if (s->p.repeat_last_n > 0) { // a ring of the last repeat_last_n
        s->hist[s->hist_n % s->hist_cap] = token;
        s->hist_n++;
        return ALLOY_STATUS_OK;
    }
    if (s->hist_n == s->hist_cap) { // the whole history: grow
        size_t cap = s->hist_cap * 2;
        int32_t *h = alloy_realloc(s->hist, sizeof(int32_t) * s->hist_cap, sizeof(int32_t) * cap);
        if (!h) return alloy_fail(ALLOY_STATUS_NOMEM, "sampler: out of memory for a history of %zu tokens", cap);
        s->hist = h;
        s->hist_cap = cap;
    }
    s->hist[s->hist_n++] = token;
    return ALLOY_STATUS_OK;
}

/* The k-th token of the penalty window (the ring's oldest first). */
static inline int32_t window_at(const alloy_sampler *s, size_t k, size_t n_win) {
    if (s->p.repeat_last_n < 0) return s->hist[s->hist_n - n_win + k];
    return s->hist[(s->hist_n - n_win + k) % s->hist_cap];
}

/* Stage 2: repetition, frequency and presence penalties over the window (candidates by id). */
static void apply_penalties(alloy_sampler *s) {
    const alloy_sampler_params *p = &s->p;
    if (p->repeat_last_n == 0 || s->hist_n == 0) return;
    if (p->repeat_penalty == 1.0f && p->frequency_penalty == 0.0f && p->presence_penalty == 0.0f) return;
    size_t n_win = p->repeat_last_n < 0 || s->hist_n < (size_t)p->repeat_last_n ? s->hist_n : (size_t)p->repeat_last_n;
    for (size_t k = 0; k < n_win; k++) s->counts[window_at(s, k, n_win)]++;
    for (size_t k = 0; k < n_win; k++) {
        int32_t t = window_at(s, k, n_win);
        int count = s->counts[t];
        if (count == 0) continue; // done already
        s->counts[t] = 0;
        if (t >= s->nv) continue;
        float l = s->c[t].logit;
        l = l > 0.0f ? l / p->repeat_penalty : l * p->repeat_penalty;
        l -= (float)count * p->frequency_penalty + p->presence_penalty;
        s->c[t].logit = l;
    }
}

/* Largest logit first; the lower id first among equals. */
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* x ranks below y in cand_cmp's order */
static inline bool worse(const cand *x, const cand *y) {
    return x->logit < y->logit || (x->logit == y->logit && x->id > y->id);
}

static void sift_down(cand *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Stage 5: keeps the k best candidates, sorted (a heap of the k best, worst on top). */
static void top_k(alloy_sampler *s, int k) {
    cand *c = s->c;
    if (k * 4 >= s->n) {
        qsort(c, (size_t)s->n, sizeof(cand), cand_cmp);
        s->n = k;
        return;
    }
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(c, k, i);
    for (int i = k; i < s->n; i++) {
        if (worse(&c[0], &c[i])) {
            c[0] = c[i];
            sift_down(c, k, 0);
        }
    }
    qsort(c, (size_t)k, sizeof(cand), cand_cmp);
    s->n = k;
}

/* pd (n) = softmax of the candidates' logits / temp, in double precision. */
static void softmax_cands(alloy_sampler *s, double temp) {
    double mx = -INFINITY;
    for (int i = 0; i < s->n; i++) mx = s->c[i].logit > mx ? s->c[i].logit : mx;
    double sum = 0.0;
    for (int i = 0; i < s->n; i++) {
        s->pd[i] = exp(((double)s->c[i].logit - mx) / temp);
        sum += s->pd[i];
    }
    for (int i = 0; i < s->n; i++) s->pd[i] /= sum;
}

alloy_status alloy_sampler_candidates(alloy_sampler *s, alloy_candidates *out, const float *logits) {
    const alloy_sampler_params *p = &s->p;
    cand *c = s->c;
    // 0-1: the candidates, by id; NaN counts as -inf; the logit bias
    s->n = s->nv;
    for (int i = 0; i < s->nv; i++) {
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
        c[i].id = i;
    }
    for (int i = 0; i < p->n_logit_bias; i++)
        if (s->bias[i].token < s->nv) c[s->bias[i].token].logit += s->bias[i].bias;
    // 2: penalties
    apply_penalties(s);
    // 3: greedy
    if (!(p->temperature > 0.0f)) {
        int best = 0;
        for (int i = 1; i < s->n; i++)
            if (c[i].logit > c[best].logit) best = i;
        if (c[best].logit == -INFINITY) return alloy_fail(ALLOY_STATUS_RANGE, "sampler: every token is banned (-inf)");
        s->ids[0] = c[best].id;
        s->probs[0] = 1.0f;
        s->pd[0] = 1.0;
        *out = (alloy_candidates){.ids = s->ids, .probs = s->probs, .n = 1};
        return ALLOY_STATUS_OK;
    }
    // 4: drop what is banned
    int n = 0;
    for (int i = 0; i < s->n; i++)
        if (c[i].logit > -INFINITY) c[n++] = c[i];
    s->n = n;
    if (n == 0) return alloy_fail(ALLOY_STATUS_RANGE, "sampler: every token is banned (-inf)");
    bool sorted = false;
    // 5: top-k
    if (p->top_k > 0 && p->top_k < s->n) {
        top_k(s, p->top_k);
        sorted = true;
    }
    // 6: top-p, on the probabilities at temperature 1
    if (p->top_p < 1.0f) {
        if (!sorted) qsort(c, (size_t)s->n, sizeof(cand), cand_cmp);
        sorted = true;
        softmax_cands(s, 1.0);
        double cum = 0.0;
        int keep = s->n;
        for (int i = 0; i < s->n; i++) {
            cum += s->pd[i];
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        s->n = keep;
    }
    // 7: min-p, relative to the most likely token, at temperature 1
    if (p->min_p > 0.0f) {
        float mx = -INFINITY;
        for (int i = 0; i < s->n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
        double threshold = (double)mx + log((double)p->min_p);
        int k = 0;
        for (int i = 0; i < s->n; i++)
            if ((double)c[i].logit >= threshold) c[k++] = c[i];
        s->n = k;
    }
    // 8: temperature, and the probabilities the draw uses
    softmax_cands(s, (double)p->temperature);
    for (int i = 0; i < s->n; i++) {
        s->ids[i] = c[i].id;
        s->probs[i] = (float)s->pd[i];
    }
    *out = (alloy_candidates){.ids = s->ids, .probs = s->probs, .n = s->n};
    return ALLOY_STATUS_OK;
}

alloy_status alloy_sampler_sample(alloy_sampler *s, int32_t *out, const float *logits) {
    alloy_candidates cands;
    alloy_status st = alloy_sampler_candidates(s, &cands, logits);
    if (st) return st;
    if (!(s->p.temperature > 0.0f)) {
        *out = cands.ids[0];
        return ALLOY_STATUS_OK;
    }
    // 9: the draw: the first candidate whose cumulative probability exceeds u
    double u = alloy_rng_uniform(&s->rng), acc = 0.0;
    int pick = cands.n - 1;
    for (int i = 0; i < cands.n; i++) {
        acc += s->pd[i];
        if (u < acc) {
            pick = i;
            break;
        }
    }
    *out = cands.ids[pick];
    return ALLOY_STATUS_OK;
}
