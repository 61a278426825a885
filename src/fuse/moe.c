/*
 * moe.c — a mixture of experts from dense models (Branch-Train-MiX): the experts' MLPs become
 * the experts of each layer, the rest is averaged or taken from a base, and the routers are
 * drawn at random or set from hidden states (alloy/moe.h says exactly how).
 */
#include "alloy/options.h"
#include "alloy/moe.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

alloy_moe_options alloy_moe_defaults(void) {
    alloy_moe_options o;
    memset(&o, 0, sizeof o);
    o.top_k = 2;
    o.router = ALLOY_MOE_ROUTER_RANDOM;
    o.seed = 1337;
    o.aux_loss_coef = 0.001;
    o.router_l2 = 1e-3;
    return o;
}

const char *alloy_moe_router_name(alloy_moe_router r) {
    return r == ALLOY_MOE_ROUTER_HIDDEN ? "hidden" : r == ALLOY_MOE_ROUTER_CLASSIFIER ? "classifier" : "random";
}

alloy_status alloy_moe_router_parse(const char *name, alloy_moe_router *out) {
    if (!strcmp(name, "random")) *out = ALLOY_MOE_ROUTER_RANDOM;
    else if (!strcmp(name, "hidden")) *out = ALLOY_MOE_ROUTER_HIDDEN;
    else if (!strcmp(name, "classifier")) *out = ALLOY_MOE_ROUTER_CLASSIFIER;
    else return alloy_fail(ALLOY_STATUS_USAGE, "unknown router \"%s\" (known: random, hidden, classifier)", name ? name : "");
    return ALLOY_STATUS_OK;
}

/* b may join a: a dense model of a's family and shapes. `what` names b ("--experts B"). */
static alloy_status check_compatible(const alloy_config *a, const alloy_config *b, const char *what) {
    if (b->n_experts > 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: is already a mixture of experts (%d experts); give dense models", what,
                          b->n_experts);
    if (a->family != b->family)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: family %s differs from the first expert's %s", what,
                          alloy_family_name(b->family), alloy_family_name(a->family));
    struct {
        const char *name;
        double x, y;
    } f[] = {
        {"vocab_size", a->vocab_size, b->vocab_size},     {"max_seq_len", a->max_seq_len, b->max_seq_len},
        {"n_layer", a->n_layer, b->n_layer},              {"n_head", a->n_head, b->n_head},
        {"n_kv_head", a->n_kv_head, b->n_kv_head},        {"d_model", a->d_model, b->d_model},
        {"d_ff", a->d_ff, b->d_ff},                       {"norm_eps", a->norm_eps, b->norm_eps},
        {"rope_theta", a->rope_theta, b->rope_theta},     {"tie_embeddings", a->tie_embeddings, b->tie_embeddings},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].x != f[i].y)
            return alloy_fail(ALLOY_STATUS_USAGE, "%s: %s is %g but the first expert's is %g", what, f[i].name, f[i].y,
                              f[i].x);
    return ALLOY_STATUS_OK;
}

/* The dense mean of the experts: every tensor averaged (in double, in expert order), with
 * activations for one sequence of max_T tokens. */
static alloy_status mean_model(alloy_model **out, alloy_model *const *ex, int E, int max_T) {
    alloy_model *m;
    if (max_T > ex[0]->config.max_seq_len) max_T = ex[0]->config.max_seq_len;
    alloy_status s = alloy_model_create(&m, &ex[0]->config, 1, max_T);
    if (s) return s;
    for (int i = 0; i < m->n_tensors; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        float *dst = m->params_memory + t->offset;
        for (size_t k = 0; k < t->numel; k++) {
            double acc = 0.0;
            for (int e = 0; e < E; e++) acc += ex[e]->params_memory[ex[e]->tensors[i].offset + k];
            dst[k] = (float)(acc / E);
        }
    }
    *out = m;
    return ALLOY_STATUS_OK;
}

/* The prompts of a hidden or classifier router: every expert has one, every prompt is non-empty
 * and in the vocabulary; without prompts, the sampled texts' start token is in the vocabulary. */
static alloy_status check_prompts(const alloy_moe_options *o, int E, int V) {
    if (!o->prompts) {
        if (o->sample_start < 0 || o->sample_start >= V)
            return alloy_fail(ALLOY_STATUS_USAGE, "the prompts' start token %d is outside the vocabulary [0, %d)",
                              o->sample_start, V);
        return ALLOY_STATUS_OK;
    }
    for (int i = 0; i < o->n_prompts; i++) {
        const alloy_moe_prompt *p = &o->prompts[i];
        if (p->expert < 0 || p->expert >= E)
            return alloy_fail_option(ALLOY_STATUS_USAGE, "prompts", ": prompt %d is for expert %d, outside [0, %d]", i + 1,
                              p->expert, E - 1);
        if (p->n < 1) return alloy_fail_option(ALLOY_STATUS_USAGE, "prompts", ": prompt %d is empty", i + 1);
        for (int k = 0; k < p->n; k++)
            if (p->tokens[k] < 0 || p->tokens[k] >= V)
                return alloy_fail_option(ALLOY_STATUS_USAGE, "prompts", ": prompt %d has token %d outside the vocabulary [0, %d)",
                                  i + 1, p->tokens[k], V);
    }
    for (int e = 0; e < E; e++) {
        bool found = false;
        for (int i = 0; i < o->n_prompts && !found; i++) found = o->prompts[i].expert == e;
        if (!found) return alloy_fail_option(ALLOY_STATUS_USAGE, "prompts", ": no prompt for expert %d", e);
    }
    return ALLOY_STATUS_OK;
}

/* Adds, for every layer, the sum over the tokens of the ln2 output of `ref` on tokens (n) into
 * acc (L, C); *count += n. */
static alloy_status add_hidden(alloy_model *ref, const int32_t *tokens, int n, double *acc, int64_t *count) {
    if (n > ref->max_T) n = ref->max_T;
    alloy_status s = alloy_model_forward_ex(ref, tokens, 1, n, false);
    if (s) return s;
    const int L = ref->config.n_layer, C = ref->config.d_model;
    for (int l = 0; l < L; l++) {
        const float *ln2 = alloy_model_mlp_input(ref, l); // (no recompute here: never NULL)
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) acc[(int64_t)l * C + c] += ln2[(int64_t)i * C + c];
    }
    *count += n;
    return ALLOY_STATUS_OK;
}

/* Samples `len` tokens from m after `start`, temperature 1 (the forward runs over the whole
 * prefix each time: a few short texts only). */
static alloy_status sample_text(alloy_model *m, int32_t start, int len, alloy_rng *rng, int32_t *out) {
    const int V = m->config.vocab_size;
    if (len > m->max_T) len = m->max_T;
    out[0] = start;
    for (int t = 1; t < len; t++) {
        alloy_status s = alloy_model_forward(m, out, 1, t);
        if (s) return s;
        const float *z = alloy_model_logits(m) + (int64_t)(t - 1) * V;
        float mx = z[0];
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)(z[v] - mx));
        double u = alloy_rng_uniform(rng) * sum, c = 0.0;
        int pick = V - 1;
        for (int v = 0; v < V; v++) {
            c += exp((double)(z[v] - mx));
            if (u < c) {
                pick = v;
                break;
            }
        }
        out[t] = pick;
    }
    return ALLOY_STATUS_OK;
}

/* The router prompts (checked by check_prompts): o's own, or ALLOY_MOE_SAMPLED_PROMPTS texts
 * sampled from each expert in turn (seeded), each of ALLOY_MOE_SAMPLED_TOKENS tokens or the
 * expert's context if shorter. *prompts (*n) and *sampled (the sampled texts' tokens; NULL with
 * o's prompts) are the caller's to free. */
static alloy_status router_prompts(alloy_model *const *ex, int E, const alloy_moe_options *o, alloy_moe_prompt **prompts,
                                   int *n, int32_t **sampled) {
    *n = o->prompts ? o->n_prompts : E * ALLOY_MOE_SAMPLED_PROMPTS;
    *prompts = alloy_calloc((size_t)*n, sizeof **prompts);
    *sampled = o->prompts ? NULL : alloy_calloc((size_t)*n * ALLOY_MOE_SAMPLED_TOKENS, sizeof(int32_t));
    if (!*prompts || (!o->prompts && !*sampled)) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the router prompts");
    if (o->prompts) {
        memcpy(*prompts, o->prompts, sizeof **prompts * (size_t)*n);
        return ALLOY_STATUS_OK;
    }
    alloy_rng rng;
    alloy_rng_seed(&rng, o->seed ^ 0x70726f6d707473ULL);
    for (int i = 0; i < *n; i++) {
        int e = i / ALLOY_MOE_SAMPLED_PROMPTS;
        int len = ALLOY_MOE_SAMPLED_TOKENS < ex[e]->max_T ? ALLOY_MOE_SAMPLED_TOKENS : ex[e]->max_T;
        int32_t *text = *sampled + (size_t)i * ALLOY_MOE_SAMPLED_TOKENS;
        (*prompts)[i] = (alloy_moe_prompt){e, text, len};
        alloy_status s = sample_text(ex[e], o->sample_start, len, &rng, text);
        if (s) return s;
    }
    return ALLOY_STATUS_OK;
}

/* The hidden-state routers: router (L, E, C) from the reference model's ln2 means. */
static alloy_status hidden_routers(float *router, alloy_model *const *ex, int E, alloy_model *ref,
                                   const alloy_moe_options *o) {
    const int L = ref->config.n_layer, C = ref->config.d_model, V = ref->config.vocab_size;
    double *mean = alloy_calloc((size_t)E * (size_t)L * (size_t)C, sizeof(double));
    int64_t *count = alloy_calloc((size_t)E, sizeof(int64_t));
    alloy_moe_prompt *pr = NULL;
    int32_t *sampled = NULL;
    int n = 0;
    alloy_status s = (!mean || !count) ? alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the hidden router")
                                       : check_prompts(o, E, V);
    if (!s) s = router_prompts(ex, E, o, &pr, &n, &sampled);
    for (int i = 0; i < n && !s; i++)
        s = add_hidden(ref, pr[i].tokens, pr[i].n, mean + (size_t)pr[i].expert * L * C, &count[pr[i].expert]);
    for (int l = 0; l < L && !s; l++) {
        double *centre = alloy_calloc((size_t)C, sizeof(double));
        if (!centre) {
            s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the hidden router");
            break;
        }
        for (int e = 0; e < E; e++)
            for (int c = 0; c < C; c++) centre[c] += mean[((size_t)e * L + l) * C + c] / (double)count[e] / E;
        for (int e = 0; e < E; e++) {
            const double *mu = mean + ((size_t)e * L + l) * C;
            double n2 = 0.0, raw2 = 0.0;
            for (int c = 0; c < C; c++) {
                double x = mu[c] / (double)count[e];
                n2 += (x - centre[c]) * (x - centre[c]);
                raw2 += x * x;
            }
            bool centred = n2 > 1e-12 * raw2 && n2 > 0.0;
            double norm = sqrt(centred ? n2 : raw2);
            float *dst = router + ((size_t)l * E + e) * C;
            for (int c = 0; c < C; c++) {
                double x = mu[c] / (double)count[e] - (centred ? centre[c] : 0.0);
                dst[c] = norm > 0.0 ? (float)(x / norm) : 0.0f;
            }
        }
        alloy_free(centre);
    }
    alloy_free(mean);
    alloy_free(count);
    alloy_free(pr);
    alloy_free(sampled);
    return s;
}

/* ---- the classifier router ---- */

/* Class weights: 1 / (E · the tokens of class e); USAGE when a class has none. */
static alloy_status class_weights(const int32_t *y, int64_t N, int E, double *cw) {
    for (int e = 0; e < E; e++) cw[e] = 0.0;
    for (int64_t i = 0; i < N; i++) {
        if (y[i] < 0 || y[i] >= E)
            return alloy_fail(ALLOY_STATUS_USAGE, "router fit: token %lld has class %d, outside [0, %d]", (long long)i,
                              y[i], E - 1);
        cw[y[i]] += 1.0;
    }
    for (int e = 0; e < E; e++) {
        if (cw[e] == 0.0) return alloy_fail(ALLOY_STATUS_USAGE, "router fit: no token of class %d", e);
        cw[e] = 1.0 / (E * cw[e]);
    }
    return ALLOY_STATUS_OK;
}

/* J(W) with its gradient into G (E, C); Z (N, E) is scratch. */
static double objective(const float *W, const float *X, const int32_t *y, const double *cw, int64_t N, int C, int E,
                        double l2, float *Z, float *G) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, E, C, 1.0f, X, C, W, C, 0.0f, Z, E);
    double loss = 0.0;
    for (int64_t i = 0; i < N; i++) {
        float *z = Z + i * E;
        double mx = z[0], sum = 0.0;
        for (int e = 1; e < E; e++) mx = z[e] > mx ? z[e] : mx;
        for (int e = 0; e < E; e++) sum += exp((double)z[e] - mx);
        double w = cw[y[i]];
        loss += w * (mx + log(sum) - z[y[i]]);
        for (int e = 0; e < E; e++) z[e] = (float)(w * (exp((double)z[e] - mx) / sum - (e == y[i])));
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, E, C, (int)N, 1.0f, Z, E, X, C, 0.0f, G, C);
    for (int64_t k = 0; k < (int64_t)E * C; k++) {
        loss += 0.5 * l2 * (double)W[k] * W[k];
        G[k] += (float)(l2 * W[k]);
    }
    return loss;
}

/* The fit's arguments, and the class weights cw (E) of its tokens. */
static alloy_status check_fit_args(const int32_t *y, int64_t N, int C, int E, double l2, double *cw) {
    if (N < 1 || N > INT32_MAX) return alloy_fail(ALLOY_STATUS_USAGE, "router fit: %lld tokens (need 1 .. 2^31-1)", (long long)N);
    if (C < 1 || E < 2) return alloy_fail(ALLOY_STATUS_USAGE, "router fit: width %d and %d classes (need >= 1 and >= 2)", C, E);
    if (E > ALLOY_MAX_EXPERTS) return alloy_fail(ALLOY_STATUS_USAGE, "router fit: at most %d classes", ALLOY_MAX_EXPERTS);
    if (!(l2 > 0.0 && l2 < 1e6)) return alloy_fail(ALLOY_STATUS_USAGE, "router fit: the L2 weight %g must be > 0", l2);
    return class_weights(y, N, E, cw);
}

alloy_status alloy_moe_router_objective(const float *W, const float *X, const int32_t *y, int64_t N, int C, int E,
                                        double l2, double *value, float *grad) {
    double cw[ALLOY_MAX_EXPERTS];
    alloy_status s = check_fit_args(y, N, C, E, l2, cw);
    if (s) return s;
    float *Z = alloy_malloc(sizeof(float) * (size_t)N * (size_t)E), *G = grad ? grad : alloy_malloc(sizeof(float) * (size_t)E * C);
    if (!Z || !G) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the router fit");
    if (!s) *value = objective(W, X, y, cw, N, C, E, l2, Z, G);
    alloy_free(Z);
    if (!grad) alloy_free(G);
    return s;
}

static double norm2(const float *v, int64_t n) {
    double s = 0.0;
    for (int64_t k = 0; k < n; k++) s += (double)v[k] * v[k];
    return sqrt(s);
}

/* Nesterov's accelerated gradient for a smooth, l2-strongly convex objective, with the step
 * 1/Lip from a bound on the curvature (the softmax's Hessian in the logits is at most 1/2, so
 * Lip <= λmax(Σ w_i x_i x_iᵀ)/2 + l2, λmax by power iteration) and a restart of the momentum
 * whenever the step goes against it (O'Donoghue and Candès 2015). */
alloy_status alloy_moe_fit_router(float *W, const float *X, const int32_t *y, int64_t N, int C, int E, double l2,
                                  int max_iter, double tol, alloy_moe_fit_report *report) {
    double cw[ALLOY_MAX_EXPERTS];
    alloy_status s = check_fit_args(y, N, C, E, l2, cw);
    if (s) return s;
    const int64_t P = (int64_t)E * C;
    float *Z = alloy_malloc(sizeof(float) * (size_t)N * (size_t)E), *G = alloy_malloc(sizeof(float) * (size_t)P),
          *Y = alloy_calloc((size_t)P, sizeof(float)), *prev = alloy_calloc((size_t)P, sizeof(float)),
          *v = alloy_malloc(sizeof(float) * (size_t)C), *u = alloy_malloc(sizeof(float) * (size_t)N);
    if (!Z || !G || !Y || !prev || !v || !u) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the router fit");
    double lip = l2, value = 0.0, gn = 0.0, g0 = 0.0;
    int it = 0;
    if (!s) {
        // λmax of Σ_i w_i x_i x_iᵀ: v <- Xᵀ (w ⊙ X v), normalised
        for (int c = 0; c < C; c++) v[c] = 1.0f / sqrtf((float)C) * (1.0f + 0.01f * (float)(c % 7));
        double lam = 0.0;
        for (int k = 0; k < 50; k++) {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, C, 1.0f, X, C, v, 1, 0.0f, u, 1);
            for (int64_t i = 0; i < N; i++) u[i] *= (float)cw[y[i]];
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)N, C, 1.0f, X, C, u, 1, 0.0f, v, 1);
            lam = norm2(v, C);
            if (!(lam > 0.0)) break;
            for (int c = 0; c < C; c++) v[c] = (float)(v[c] / lam);
        }
        lip = 0.5 * lam * 1.05 + l2; // 5% margin on a power-iteration estimate from below
        double q = sqrt(l2 / lip), beta = (1.0 - q) / (1.0 + q);
        memset(W, 0, sizeof(float) * (size_t)P); // and Y, the look-ahead point, starts at 0 too
        for (it = 0; it < max_iter; it++) {
            value = objective(Y, X, y, cw, N, C, E, l2, Z, G); // at the look-ahead point Y
            gn = norm2(G, P);
            if (it == 0) g0 = gn;
            if (gn <= tol * g0) {
                memcpy(W, Y, sizeof(float) * (size_t)P);
                break;
            }
            double along = 0.0;
            for (int64_t k = 0; k < P; k++) {
                prev[k] = W[k];
                W[k] = (float)(Y[k] - G[k] / lip);
                along += (double)G[k] * (W[k] - prev[k]);
            }
            double b = along > 0.0 ? 0.0 : beta;
            for (int64_t k = 0; k < P; k++) Y[k] = (float)(W[k] + b * (W[k] - prev[k]));
        }
        if (it == max_iter) {
            value = objective(W, X, y, cw, N, C, E, l2, Z, G);
            gn = norm2(G, P);
        }
        if (report) {
            report->iterations = it;
            report->objective = value;
            report->grad_norm = gn;
            report->grad_norm0 = g0;
            int64_t right = 0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, E, C, 1.0f, X, C, W, C, 0.0f, Z, E);
            for (int64_t i = 0; i < N; i++) {
                int best = 0;
                for (int e = 1; e < E; e++) best = Z[i * E + e] > Z[i * E + best] ? e : best;
                right += best == y[i];
            }
            report->accuracy = (double)right / (double)N;
        }
    }
    alloy_free(Z);
    alloy_free(G);
    alloy_free(Y);
    alloy_free(prev);
    alloy_free(v);
    alloy_free(u);
    return s;
}

/* The classifier routers of m (all else set): layer by layer, m's own ln2 outputs on every
 * prompt (its routers below l already fitted) train layer l's router as a softmax classifier
 * of which expert's prompt a token came from. */
static alloy_status classifier_routers(alloy_model *m, alloy_model *const *ex, int E, const alloy_moe_options *o) {
    const int L = m->config.n_layer, C = m->config.d_model, V = m->config.vocab_size;
    alloy_moe_prompt *pr = NULL;
    int32_t *sampled = NULL;
    int n = 0, maxT = 1;
    alloy_status s = check_prompts(o, E, V);
    if (!s) s = router_prompts(ex, E, o, &pr, &n, &sampled);
    int64_t N = 0;
    for (int i = 0; i < n && !s; i++) {
        if (pr[i].n > m->config.max_seq_len) pr[i].n = m->config.max_seq_len;
        maxT = pr[i].n > maxT ? pr[i].n : maxT;
        N += pr[i].n;
    }
    alloy_model *w = NULL;
    if (!s) s = alloy_model_create(&w, &m->config, 1, maxT);
    float *X = NULL;
    int32_t *y = NULL;
    if (!s) {
        X = alloy_malloc(sizeof(float) * (size_t)N * (size_t)C);
        y = alloy_malloc(sizeof(int32_t) * (size_t)N);
        if (!X || !y) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the router fit (%lld tokens)", (long long)N);
    }
    if (!s) {
        memcpy(w->params_memory, m->params_memory, sizeof(float) * m->num_params);
        for (int l = 0; l < L; l++) memset(w->params.layers[l].router_w, 0, sizeof(float) * (size_t)E * C);
    }
    for (int l = 0; l < L && !s; l++) {
        int64_t at = 0;
        for (int i = 0; i < n && !s; i++) {
            s = alloy_model_forward_ex(w, pr[i].tokens, 1, pr[i].n, false);
            if (s) break;
            memcpy(X + at * C, alloy_model_mlp_input(w, l), sizeof(float) * (size_t)pr[i].n * C);
            for (int k = 0; k < pr[i].n; k++) y[at + k] = pr[i].expert;
            at += pr[i].n;
        }
        alloy_moe_fit_report r;
        if (!s) s = alloy_moe_fit_router(w->params.layers[l].router_w, X, y, N, C, E, o->router_l2, 2000, 1e-4, &r);
        if (!s && o->verbose)
            fprintf(stderr, "router %d: %lld tokens, %d iterations, objective %.4f, |grad| %.2e of %.2e, accuracy %.4f\n",
                    l, (long long)N, r.iterations, r.objective, r.grad_norm, r.grad_norm0, r.accuracy);
        if (!s) memcpy(m->params.layers[l].router_w, w->params.layers[l].router_w, sizeof(float) * (size_t)E * C);
    }
    alloy_model_destroy(w);
    alloy_free(X);
    alloy_free(y);
    alloy_free(pr);
    alloy_free(sampled);
    return s;
}

alloy_status alloy_moe_build(alloy_model **out, alloy_model *const *ex, int E, alloy_model *base,
                             const alloy_moe_options *o) {
    *out = NULL;
    if (E < 2) return alloy_fail_option(ALLOY_STATUS_USAGE, "experts", ": give at least 2 expert models (got %d)", E);
    if (E > ALLOY_MAX_EXPERTS)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "experts", ": at most %d expert models (got %d)", ALLOY_MAX_EXPERTS, E);
    if (o->top_k < 1 || o->top_k > E)
        return alloy_fail_option(ALLOY_STATUS_USAGE, "top_k", "%d: must lie in [1, %d] (the number of experts)", o->top_k, E);
    if (!(o->aux_loss_coef >= 0.0 && o->aux_loss_coef < 1e6))
        return alloy_fail(ALLOY_STATUS_USAGE, "the aux loss coefficient %g must be >= 0", o->aux_loss_coef);
    alloy_status s = ALLOY_STATUS_OK;
    char what[64];
    for (int e = 0; e < E && !s; e++) {
        snprintf(what, sizeof what, "--experts: model %d", e + 1);
        s = check_compatible(&ex[0]->config, &ex[e]->config, what);
    }
    if (!s && base) s = check_compatible(&ex[0]->config, &base->config, "--base");
    if (s) return s;

    alloy_config cfg = ex[0]->config;
    cfg.n_experts = E;
    cfg.top_k = o->top_k;
    cfg.router_aux_loss_coef = o->aux_loss_coef;
    alloy_model *m = NULL, *mean = NULL;
    float *router = NULL;
    const int L = cfg.n_layer, C = cfg.d_model;
    if ((s = alloy_model_create(&m, &cfg, 1, 1))) return s;
    if (o->router == ALLOY_MOE_ROUTER_HIDDEN) {
        router = alloy_malloc(sizeof(float) * (size_t)L * (size_t)E * (size_t)C);
        if (!router) s = alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for the routers");
        int T = ALLOY_MOE_SAMPLED_TOKENS;
        for (int i = 0; o->prompts && i < o->n_prompts; i++) T = o->prompts[i].n > T ? o->prompts[i].n : T;
        if (!s && !base) s = mean_model(&mean, ex, E, T);
        if (!s) s = hidden_routers(router, ex, E, base ? base : mean, o);
    } else if (o->router == ALLOY_MOE_ROUTER_RANDOM) {
        alloy_model_init_weights(m, o->seed); // the routers' draws; every other tensor is set below
    } // classifier: fitted at the end, on the finished model's own hidden states
    for (int i = 0; i < m->n_tensors && !s; i++) {
        const alloy_tensor_info *t = &m->tensors[i];
        if (alloy_tensor_is_router(t->name) || strstr(t->name, ".experts.")) continue;
        float *dst = m->params_memory + t->offset;
        if (base) {
            const alloy_tensor_info *b = alloy_model_find_tensor(base, t->name);
            ALLOY_ASSERT(b && b->numel == t->numel);
            memcpy(dst, base->params_memory + b->offset, sizeof(float) * t->numel);
            continue;
        }
        const alloy_tensor_info *src[ALLOY_MAX_EXPERTS];
        for (int e = 0; e < E; e++) {
            src[e] = alloy_model_find_tensor(ex[e], t->name);
            ALLOY_ASSERT(src[e] && src[e]->numel == t->numel);
        }
        for (size_t k = 0; k < t->numel; k++) {
            double acc = 0.0;
            for (int e = 0; e < E; e++) acc += ex[e]->params_memory[src[e]->offset + k];
            dst[k] = (float)(acc / E);
        }
    }
    // the experts: each model's MLP, bit for bit (Llama's gate and up are one stacked matrix on
    // both sides: gate_proj, up_proj -> w1, w3)
    size_t FF = (size_t)(cfg.family == ALLOY_FAMILY_GPT2 ? cfg.d_ff : 2 * cfg.d_ff), F = (size_t)cfg.d_ff;
    for (int l = 0; l < L && !s; l++) {
        alloy_layer_params *lp = &m->params.layers[l];
        for (int e = 0; e < E; e++) {
            const alloy_layer_params *sp = &ex[e]->params.layers[l];
            alloy_expert_params *ep = &lp->experts[e];
            memcpy(ep->up_w, sp->up_w, sizeof(float) * FF * (size_t)C);
            memcpy(ep->down_w, sp->down_w, sizeof(float) * F * (size_t)C);
            if (ep->up_b) memcpy(ep->up_b, sp->up_b, sizeof(float) * F);
            if (ep->down_b) memcpy(ep->down_b, sp->down_b, sizeof(float) * (size_t)C);
        }
        if (router) memcpy(lp->router_w, router + (size_t)l * E * C, sizeof(float) * (size_t)E * (size_t)C);
    }
    if (!s && o->router == ALLOY_MOE_ROUTER_CLASSIFIER) s = classifier_routers(m, ex, E, o);
    alloy_free(router);
    alloy_model_destroy(mean);
    if (s) {
        alloy_model_destroy(m);
        return s;
    }
    *out = m;
    return ALLOY_STATUS_OK;
}
