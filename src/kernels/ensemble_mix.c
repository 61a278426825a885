/*
 * ensemble_mix.c — ensemble mixing, written once (alloy/kernels.h): the mixture of the members'
 * next-token distributions, log Σᵢ wᵢ·pᵢ, over a row of V tokens or at one token, and the
 * weighted sum of logits of a product of experts.
 *
 * A mixture is a log-sum-exp over members of the terms log wᵢ + log pᵢ, taken in double around
 * the largest term, so a token keeps a finite log-probability however small every pᵢ is (a sum
 * of probabilities in float would round them to 0, and their log to −inf). Members run in
 * order, so the result does not depend on how the caller splits rows among threads.
 */
#include "alloy/kernels.h"

#include <math.h>

/* log Σᵢ exp(t[i]) over n terms, around the largest; −inf when every term is −inf. */
static double log_sum_exp(const double *t, int n) {
    if (n == 1) return t[0]; // what the sum below gives (exp(0) = 1, log 1 = 0), without the work
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < n; i++) mx = t[i] > mx ? t[i] : mx;
    if (mx == -INFINITY) return -INFINITY;
    for (int i = 0; i < n; i++) s += exp(t[i] - mx);
    return mx + log(s);
}

/* log Σ_v exp(z[v]) of one row, in double; −inf when every logit is −inf. */
static double row_logsumexp(const float *z, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    if (mx == -INFINITY) return -INFINITY;
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return mx + log(s);
}

void ensemble_mix_forward(float *out_logp, const float *const *logits, const double *log_w, int n, int V) {
    ALLOY_ASSERT(n >= 1 && n <= ALLOY_ENSEMBLE_MAX_MEMBERS);
    const float *z[ALLOY_ENSEMBLE_MAX_MEMBERS];
    double shift[ALLOY_ENSEMBLE_MAX_MEMBERS]; // log wᵢ − lseᵢ of the members that contribute
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (log_w[i] == -INFINITY) continue; // weight 0: nothing (and no −inf − −inf)
        double lse = row_logsumexp(logits[i], V);
        if (lse == -INFINITY) continue;      // no distribution to add
        z[m] = logits[i];
        shift[m++] = log_w[i] - lse;
    }
    for (int v = 0; v < V; v++) {
        double t[ALLOY_ENSEMBLE_MAX_MEMBERS];
        for (int k = 0; k < m; k++) t[k] = (double)z[k][v] + shift[k];
        out_logp[v] = (float)log_sum_exp(t, m);
    }
}

double ensemble_mix_target_forward(double *post, const double *logp, const double *log_w, int n) {
    ALLOY_ASSERT(n >= 1 && n <= ALLOY_ENSEMBLE_MAX_MEMBERS);
    double t[ALLOY_ENSEMBLE_MAX_MEMBERS];
    for (int i = 0; i < n; i++) t[i] = log_w[i] + logp[i];
    double lmix = log_sum_exp(t, n);
    if (post)
        for (int i = 0; i < n; i++) post[i] = lmix == -INFINITY ? 0.0 : exp(t[i] - lmix);
    return lmix;
}

void ensemble_logits_forward(float *out, const float *const *logits, const double *w, int n, int V) {
    for (int v = 0; v < V; v++) {
        // member by member, each term added in double and the sum kept as a float between
        // members: the order the fp32 ensemble and the ensemble engine summed in before they
        // shared this kernel (their logits results are unchanged by it)
        float acc = 0.0f;
        for (int i = 0; i < n; i++)
            if (w[i] != 0.0) acc = (float)((double)acc + w[i] * logits[i][v]); // 0·(±inf) would be NaN
        out[v] = acc;
    }
}
