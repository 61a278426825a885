/*
 * engine.c — the inference engine's calls: prefill (one or several sequences, in passes of at
 * most max_rows rows), decode, reset, truncate and the engine's info. Each call is checked here,
 * for a model or an ensemble alike, then runs the forward pass (engine_pass.c) or goes to the
 * ensemble's members (ensemble_engine.c, through `ens`). Creation is in engine_create.c.
 */
#include "internal.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The caller's OpenMP thread count, restored when a call returns. */
int engine_caller_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* At the start of a call: the caller's thread count (returned, to restore) bounds the call's. */
static int begin_call(alloy_engine *e) {
    int n = engine_caller_threads();
    e->call_threads = n < 1 ? 1 : n > e->max_threads ? e->max_threads : n;
    return n;
}

/* Sets the OpenMP thread count back to the caller's n. */
static void restore_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Appends the jobs' tokens to their sequences in passes of at most max_rows rows; logits as
 * `rows` says. The jobs have been checked. */
static void run_jobs(alloy_engine *e, float *logits, alloy_logits_rows rows, const job *jobs, int n_jobs) {
    int R = e->opts.max_rows;
    for (int i = 0; i < n_jobs; i++) e->base_len[jobs[i].seq] = e->len[jobs[i].seq];
    int ji = 0, jo = 0;   // the next token: jobs[ji].tokens[jo]
    int64_t out_row = 0;  // the logits row of the next row asked for
    while (ji < n_jobs) {
        int r = 0, n_segs = 0, n_sel = 0;
        while (r < R && ji < n_jobs) {
            const job *j = &jobs[ji];
            int take = j->n - jo < R - r ? j->n - jo : R - r;
            segment *sg = &e->segs[n_segs++];
            sg->row0 = r;
            sg->n = take;
            sg->seq = j->seq;
            sg->pos0 = e->base_len[j->seq] + jo;
            for (int k = 0; k < take; k++, r++) {
                e->row_seq[r] = j->seq;
                e->row_pos[r] = sg->pos0 + k;
                e->row_tok[r] = j->tokens[jo + k];
                bool last = jo + k == j->n - 1;
                if (rows == ALLOY_LOGITS_ALL || (rows == ALLOY_LOGITS_LAST && last)) e->sel[n_sel++] = r;
            }
            jo += take;
            if (jo == j->n) ji++, jo = 0;
        }
        engine_forward_rows(e, r, n_segs, logits ? logits + out_row * e->V : NULL, n_sel);
        out_row += n_sel;
    }
    for (int i = 0; i < n_jobs; i++) e->len[jobs[i].seq] = e->base_len[jobs[i].seq] + jobs[i].n;
}

/* Checks a call's jobs: sequences in range and distinct, counts, tokens, room in the cache. */
static alloy_status check_jobs(alloy_engine *e, const char *what, const job *jobs, int n_jobs) {
    if (n_jobs < 1) return alloy_fail(ALLOY_STATUS_USAGE, "%s: no sequences given", what);
    memset(e->seen, 0, (size_t)e->opts.max_batch);
    for (int i = 0; i < n_jobs; i++) {
        const job *j = &jobs[i];
        if (j->seq < 0 || j->seq >= e->opts.max_batch)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d is outside [0, %d) (max_batch)", what, j->seq,
                              e->opts.max_batch);
        if (e->seen[j->seq]) return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d is named twice", what, j->seq);
        e->seen[j->seq] = 1;
        if (j->n < 1 || !j->tokens)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: sequence %d: no tokens given (%d)", what, j->seq, j->n);
        int held = e->len[j->seq];
        if (j->n > e->opts.max_ctx - held)
            return alloy_fail(ALLOY_STATUS_RANGE,
                              "%s: sequence %d holds %d of %d positions: %d more tokens do not fit (context full)",
                              what, j->seq, held, e->opts.max_ctx, j->n);
        for (int k = 0; k < j->n; k++)
            if (j->tokens[k] < 0 || j->tokens[k] >= e->V)
                return alloy_fail(ALLOY_STATUS_RANGE, "%s: sequence %d: token id %d at %d is outside the vocabulary [0, %d)",
                                  what, j->seq, j->tokens[k], k, e->V);
    }
    return ALLOY_STATUS_OK;
}

alloy_status alloy_engine_prefill_batch(alloy_engine *e, float *logits, alloy_logits_rows rows, const int *seqs,
                                        const int32_t *const *tokens, const int *lens, int n_seqs) {
    if (rows != ALLOY_LOGITS_LAST && rows != ALLOY_LOGITS_ALL && rows != ALLOY_LOGITS_NONE)
        return alloy_fail(ALLOY_STATUS_USAGE, "prefill: rows is %d, not one of LAST, ALL, NONE", (int)rows);
    if (rows != ALLOY_LOGITS_NONE && !logits) return alloy_fail(ALLOY_STATUS_USAGE, "prefill: logits is NULL");
    if (n_seqs < 1 || n_seqs > e->opts.max_batch || !seqs || !tokens || !lens)
        return alloy_fail(ALLOY_STATUS_USAGE, "prefill: %d sequences given (1 to %d)", n_seqs, e->opts.max_batch);
    job jobs_small[16];
    job *jobs = n_seqs <= 16 ? jobs_small : alloy_malloc(sizeof(job) * (size_t)n_seqs);
    if (!jobs) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n_seqs; i++) jobs[i] = (job){.seq = seqs[i], .tokens = tokens[i], .n = lens[i]};
    alloy_status s = check_jobs(e, "prefill", jobs, n_seqs);
    if (!s && e->ens) {
        s = ensemble_engine_prefill(e->ens, logits, rows, seqs, tokens, lens, n_seqs);
        for (int i = 0; !s && i < n_seqs; i++) e->len[seqs[i]] += lens[i];
    } else if (!s) {
        int saved = begin_call(e);
        run_jobs(e, rows == ALLOY_LOGITS_NONE ? NULL : logits, rows, jobs, n_seqs);
        restore_threads(saved);
    }
    if (jobs != jobs_small) alloy_free(jobs);
    return s;
}

alloy_status alloy_engine_prefill(alloy_engine *e, float *logits, int seq, const int32_t *tokens, int n) {
    return alloy_engine_prefill_batch(e, logits, logits ? ALLOY_LOGITS_LAST : ALLOY_LOGITS_NONE, &seq, &tokens, &n, 1);
}

alloy_status alloy_engine_decode(alloy_engine *e, float *logits, const int *seqs, const int32_t *tokens, int n) {
    if (!logits) return alloy_fail(ALLOY_STATUS_USAGE, "decode: logits is NULL");
    if (n < 1 || n > e->opts.max_batch || !seqs || !tokens)
        return alloy_fail(ALLOY_STATUS_USAGE, "decode: %d sequences given (1 to %d)", n, e->opts.max_batch);
    job jobs_small[16];
    job *jobs = n <= 16 ? jobs_small : alloy_malloc(sizeof(job) * (size_t)n);
    if (!jobs) return ALLOY_STATUS_NOMEM;
    for (int i = 0; i < n; i++) jobs[i] = (job){.seq = seqs[i], .tokens = tokens + i, .n = 1};
    alloy_status s = check_jobs(e, "decode", jobs, n);
    if (!s && e->ens) {
        s = ensemble_engine_decode(e->ens, logits, seqs, tokens, n);
        for (int i = 0; !s && i < n; i++) e->len[seqs[i]]++;
    } else if (!s) {
        int saved = begin_call(e);
        run_jobs(e, logits, ALLOY_LOGITS_LAST, jobs, n);
        restore_threads(saved);
    }
    if (jobs != jobs_small) alloy_free(jobs);
    return s;
}

void alloy_engine_reset(alloy_engine *e, int seq) {
    if (seq < 0 || seq >= e->opts.max_batch) return;
    e->len[seq] = 0;
    if (e->ens) ensemble_engine_reset(e->ens, seq);
}

alloy_status alloy_engine_truncate(alloy_engine *e, int seq, int len) {
    if (seq < 0 || seq >= e->opts.max_batch)
        return alloy_fail(ALLOY_STATUS_USAGE, "truncate: sequence %d is outside [0, %d)", seq, e->opts.max_batch);
    if (len < 0 || len > e->len[seq])
        return alloy_fail(ALLOY_STATUS_USAGE, "truncate: sequence %d holds %d tokens, cannot keep %d", seq, e->len[seq],
                          len);
    if (e->ens) {
        alloy_status s = ensemble_engine_truncate(e->ens, seq, len);
        if (s) return s;
    }
    e->len[seq] = len;
    return ALLOY_STATUS_OK;
}

int alloy_engine_seq_len(const alloy_engine *e, int seq) {
    return seq >= 0 && seq < e->opts.max_batch ? e->len[seq] : -1;
}

void alloy_engine_get_info(const alloy_engine *e, alloy_engine_info *info) {
    memset(info, 0, sizeof *info);
    info->max_batch = e->opts.max_batch;
    info->max_ctx = e->opts.max_ctx;
    info->max_rows = e->opts.max_rows;
    info->vocab_size = e->V;
    info->weights = e->opts.weights;
    memcpy(info->n_matrices, e->n_matrices, sizeof info->n_matrices);
    info->weight_bytes = e->weight_bytes;
    info->other_bytes = e->other_bytes;
    info->cache_bytes = 2 * e->cache_floats * sizeof(float);
    if (e->ens) ensemble_engine_info(e->ens, info); // the members' matrices and bytes
}
