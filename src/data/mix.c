/*
 * mix.c — the second pass of prepare: documents from every source, interleaved by weight and
 * seed, into numbered shards.
 *
 * Each split's total T is the most tokens the weights allow without repeating a source
 * (min over sources of tokens / weight), or --mix-tokens for training. Source k gets the
 * quota w_k·T; the next document always comes from a source drawn with probability
 * proportional to its remaining quota, so every stretch of a shard has the mix's proportions.
 * Within a source, documents come in a shuffled order (a fresh one each epoch).
 */
#include "alloy/options.h"
#include "prepare_internal.h"

#include <cJSON.h>
#include <string.h>
#include <unistd.h>

static alloy_status split_close(split_out *so) {
    if (!so->open) return ALLOY_STATUS_OK;
    so->open = false;
    uint64_t count = so->w.count, sum = so->w.checksum;
    char name[64], hex[20];
    snprintf(name, sizeof name, "%s-%05d.bin", so->prefix, so->n_shards - 1);
    alloy_status s = alloy_shard_writer_close(&so->w);
    if (s) return s;
    cJSON *e = cJSON_CreateObject();
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
    cJSON_AddStringToObject(e, "file", name);
    cJSON_AddNumberToObject(e, "tokens", (double)count);
    cJSON_AddStringToObject(e, "checksum_fnv1a64", hex);
    cJSON_AddItemToArray(so->shards, e);
    return ALLOY_STATUS_OK;
}

static alloy_status split_add(split_out *so, const int32_t *ids, size_t n) {
    while (n > 0) {
        if (so->open && so->w.count >= so->max_tokens) {
            alloy_status s = split_close(so);
            if (s) return s;
        }
        if (!so->open) {
            char name[64];
            snprintf(name, sizeof name, "%s-%05d.bin", so->prefix, so->n_shards);
            char *p = alloy_path_join(so->dir, name);
            alloy_status s = p ? alloy_shard_writer_open(&so->w, p, so->vocab) : ALLOY_STATUS_NOMEM;
            alloy_free(p);
            if (s) return s;
            so->open = true;
            so->n_shards++;
        }
        size_t room = (size_t)(so->max_tokens - so->w.count);
        size_t k = n < room ? n : room;
        alloy_status s = alloy_shard_writer_add(&so->w, ids, k);
        if (s) return s;
        so->tokens += k;
        ids += k;
        n -= k;
    }
    return ALLOY_STATUS_OK;
}

/* One source's documents in a shuffled order, epoch after epoch. */
typedef struct doc_order {
    size_t *perm;      /* (n_docs) */
    size_t cursor;
    uint64_t epoch;
} doc_order;

static void reshuffle(doc_order *d, size_t n, uint64_t seed) {
    alloy_rng rng;
    alloy_rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ULL * (d->epoch + 1)));
    for (size_t i = 0; i < n; i++) d->perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)alloy_rng_below(&rng, i);
        size_t t = d->perm[i - 1];
        d->perm[i - 1] = d->perm[j];
        d->perm[j] = t;
    }
    d->cursor = 0;
}

static alloy_status mix_split(const alloy_prepare_options *o, source_state *ss, int sp, split_out *out, mix_plan *plan) {
    int n = o->n_sources;
    double *w = alloy_calloc((size_t)n, sizeof(double)), *rem = alloy_calloc((size_t)n, sizeof(double));
    doc_order *ord = alloy_calloc((size_t)n, sizeof(doc_order));
    alloy_ids buf = {0};
    alloy_status s = (!w || !rem || !ord) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    double wsum = 0.0, T = -1.0;
    for (int k = 0; k < n && !s; k++) {
        uint64_t avail = ss[k].split[sp].tokens;
        w[k] = o->mix ? ss[k].src->weight : (double)avail;
        if (avail == 0) {
            if (o->mix && w[k] > 0 && sp == SPLIT_TRAIN)
                s = alloy_fail_option(ALLOY_STATUS_USAGE, "mix", "gives %s a weight but it has no training text", ss[k].src->name);
            w[k] = 0.0; // a source without held-out text leaves the held-out mix
        }
        wsum += w[k];
    }
    for (int k = 0; k < n && !s; k++) {
        w[k] = wsum > 0 ? w[k] / wsum : 0.0;
        if (w[k] > 0) {
            double t = (double)ss[k].split[sp].tokens / w[k];
            if (T < 0 || t < T) T = t;
        }
    }
    if (!s && sp == SPLIT_TRAIN) {
        if (o->mix && o->mix_tokens) T = (double)o->mix_tokens;
        for (int k = 0; k < n; k++) plan->weight[k] = w[k];
    }
    for (int k = 0; k < n && !s; k++) {
        rem[k] = w[k] * (T > 0 ? T : 0);
        size_t nd = ss[k].split[sp].n_docs;
        ord[k].perm = alloy_malloc(sizeof(size_t) * (nd ? nd : 1));
        if (!ord[k].perm) s = ALLOY_STATUS_NOMEM;
        else reshuffle(&ord[k], nd, o->seed ^ ((uint64_t)k << 32) ^ (uint64_t)sp);
        if (!s && ss[k].split[sp].fp && fflush(ss[k].split[sp].fp) != 0)
            s = alloy_fail(ALLOY_STATUS_IO, "%s: write failed", ss[k].split[sp].path);
    }
    alloy_rng rng;
    alloy_rng_seed(&rng, o->seed ^ 0x6d6978ULL ^ (uint64_t)sp);
    while (!s) {
        double total = 0.0;
        for (int k = 0; k < n; k++) total += rem[k] > 0 ? rem[k] : 0;
        if (total <= 0.5) break;
        double u = alloy_rng_uniform(&rng) * total;
        int k = 0;
        for (; k < n - 1; k++) {
            double r = rem[k] > 0 ? rem[k] : 0;
            if (u < r) break;
            u -= r;
        }
        while (rem[k] <= 0) k = (k + 1) % n; // rounding at the edge
        tokfile *f = &ss[k].split[sp];
        if (ord[k].cursor == f->n_docs) { // asked for more than the source has: another epoch
            ord[k].epoch++;
            reshuffle(&ord[k], f->n_docs, o->seed ^ ((uint64_t)k << 32) ^ (uint64_t)sp);
        }
        size_t d = ord[k].perm[ord[k].cursor++];
        uint64_t begin = d ? f->doc_end[d - 1] : 0, end = f->doc_end[d];
        size_t len = (size_t)(end - begin);
        if ((s = alloy_ids_reserve(&buf, len))) break;
        ssize_t got = pread(fileno(f->fp), buf.data, len * sizeof(int32_t), (off_t)(begin * sizeof(int32_t)));
        if (got != (ssize_t)(len * sizeof(int32_t))) {
            s = alloy_fail(ALLOY_STATUS_IO, "%s: read failed", f->path);
            break;
        }
        s = split_add(out, buf.data, len);
        plan->written[sp][k] += len;
        rem[k] -= (double)len;
    }
    if (!s) s = split_close(out);
    else if (out->open) alloy_shard_writer_abort(&out->w);
    for (int k = 0; ord && k < n; k++) alloy_free(ord[k].perm);
    alloy_free(ord);
    alloy_free(w);
    alloy_free(rem);
    alloy_ids_free(&buf);
    return s;
}

alloy_status prep_mix(const alloy_prepare_options *o, source_state *ss, split_out *train, split_out *val, mix_plan *plan) {
    plan->weight = alloy_calloc((size_t)o->n_sources, sizeof(double));
    plan->written[0] = alloy_calloc((size_t)o->n_sources, sizeof(uint64_t));
    plan->written[1] = alloy_calloc((size_t)o->n_sources, sizeof(uint64_t));
    if (!plan->weight || !plan->written[0] || !plan->written[1]) return ALLOY_STATUS_NOMEM;
    alloy_status s = mix_split(o, ss, SPLIT_TRAIN, train, plan);
    if (!s) s = mix_split(o, ss, SPLIT_VAL, val, plan);
    return s;
}

void prep_mix_plan_free(mix_plan *plan) {
    alloy_free(plan->weight);
    alloy_free(plan->written[0]);
    alloy_free(plan->written[1]);
}
