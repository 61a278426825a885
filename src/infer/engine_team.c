/*
 * engine_team.c — the inference engine's one-team decode step: a single row's forward pass in one
 * parallel region, the products split as the step-by-step pass splits them (the same sums, so
 * the same bits), the steps that read no matrix on thread 0 while the others prefetch.
 */
#include "internal.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Bytes of the next matrix each thread prefetches before a step that does not read memory. */
#define TEAM_PREFETCH_BYTES 8192

/* The threads of a team decode (0: take the step-by-step pass): a single row, team_ok (dense
 * MLPs, and the knob ALLOY_TEAM_DECODE=0 not set at creation; the tests compare the two paths),
 * and a model wide enough that engine_threads_for gives its products two threads or more. */
int engine_team_threads(const alloy_engine *e, int R) {
    if (R != 1 || !e->team_ok) return 0;
    int nt = engine_threads_for(e, 2.0 * e->C * e->C);
    return nt >= 2 ? nt : 0;
}

/* out = [out +] in · Wᵀ + bias, one row, by the calling team: the sums of engine_linear(). */
static void team_linear(const alloy_engine *e, float *out, const float *in, const matrix *w, bool acc) {
    if (w->type == ALLOY_QTYPE_F32) {
        matvec_forward_team(out, in, w->w, w->bias, w->in, w->out, w->layout, acc ? 1.0f : 0.0f, e->mv);
        return;
    }
    float *dst = acc ? e->tmp : out;
    alloy_quant_matvec_team(w->type, dst, w->q, in, w->out, w->in, e->qteam);
    if (!acc && !w->bias) return;
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    engine_add_product(out, dst, w->bias, acc, (int)((int64_t)w->out * t / n), (int)((int64_t)w->out * (t + 1) / n));
#pragma omp barrier
}

/* Prefetches the start of the calling thread's share of w's product. */
static void team_prefetch(const matrix *w) {
    if (w->type == ALLOY_QTYPE_F32) matvec_prefetch_team(w->w, w->in, w->out, w->layout, TEAM_PREFETCH_BYTES);
    else alloy_quant_prefetch_team(w->type, w->q, w->out, w->in, TEAM_PREFETCH_BYTES);
}

/* engine_forward_rows for one row (R = 1, segment 0, embedded) in a single parallel region of
 * nt threads instead of one per step: the products split as matvec_forward / alloy_quant_matvec
 * split them (the same sums), attention split by heads, the steps that read no matrix — norms,
 * RoPE, the cache, the activation, a few microseconds each — on thread 0 while every thread has
 * prefetched the start of its share of the next matrix. Each step ends at a barrier. A decode
 * step opens one region, not five to six per layer, and no product begins with its first lines
 * still in DRAM. */
void engine_decode_team(alloy_engine *e, float *logits, int n_sel, int nt) {
    const alloy_params *p = &e->m->params;
    const int H = e->H, hd = e->hd, group = e->H / e->KV, pos = e->row_pos[0], seq = e->row_seq[0];
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel num_threads(nt)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        for (int l = 0; l < e->L; l++) {
            const alloy_layer_params *lp = &p->layers[l];
            const layer_matrices *lw = &e->layers[l];
            team_prefetch(&lw->qkv);
            if (t == 0) engine_norm_rows(e, e->xn, e->x, lp->ln1_w, lp->ln1_b, 1);
#pragma omp barrier
            team_linear(e, e->qkv, e->xn, &lw->qkv, false);
            team_prefetch(&lw->o);
            if (t == 0) {
                if (!e->gpt2) engine_rope_row(e, 0);
                engine_store_kv(e, l, 1);
            }
#pragma omp barrier
            int h0 = (int)((int64_t)H * t / n), h1 = (int)((int64_t)H * (t + 1) / n);
            float *sc = e->scores + (size_t)t * e->opts.max_ctx;
            for (int h = h0; h < h1; h++) {
                size_t off = engine_cache_offset(e, l, seq, h / group);
                engine_attend_one(e->att + (size_t)h * hd, e->qkv + (size_t)h * hd, e->kc + off, e->vc + off, pos + 1, hd,
                           (size_t)e->opts.max_ctx, scale, sc);
            }
#pragma omp barrier
            team_linear(e, e->x, e->att, &lw->o, true);
            team_prefetch(&lw->up);
            if (t == 0) engine_norm_rows(e, e->xn, e->x, lp->ln2_w, lp->ln2_b, 1);
#pragma omp barrier
            team_linear(e, e->fc, e->xn, &lw->up, false);
            team_prefetch(&lw->down);
            if (t == 0) engine_activate(e, 1);
#pragma omp barrier
            team_linear(e, e->x, e->act, &lw->down, true);
        }
        if (n_sel) {
            team_prefetch(&e->head);
            if (t == 0) engine_norm_rows(e, e->xn, e->x, p->lnf_w, p->lnf_b, 1);
#pragma omp barrier
            team_linear(e, logits, e->xn, &e->head, false);
        }
    }
}
