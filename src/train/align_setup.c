/*
 * align_setup.c — what an SFT, reward or DPO run sets up before it trains: the model's folder,
 * its chat template and tokenizer (with the ChatML tokens when the template needs them), the
 * data read through the template, the held-out split, the order of examples, DPO's frozen
 * reference log-probabilities (computed once, in a fixed order, so a resume gets the same), and
 * the model to train with its vocabulary grown to the tokenizer's.
 */
#include "align_internal.h"
#include "alloy/io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Draws epoch e's order of the training examples from (seed, e). */
void align_shuffle(align_run *r) {
    alloy_rng g;
    alloy_rng_seed(&g, r->opt.seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(r->epoch + 1)));
    for (int64_t i = 0; i < r->n_train; i++) r->perm[i] = r->train_idx[i];
    for (int64_t i = r->n_train - 1; i > 0; i--) {
        int64_t j = (int64_t)alloy_rng_below(&g, (uint64_t)(i + 1));
        int64_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
}

/* The held-out split of one file: an example is held out when a hash of its tokens and the seed
 * falls below val_fraction (at least one example when the fraction is > 0 and there are two). */
static alloy_status split(align_run *r) {
    const alloy_align_data *d = &r->data;
    int64_t n = d->n_examples;
    r->train_idx = alloy_malloc(sizeof(int64_t) * (size_t)n);
    r->val_idx = alloy_malloc(sizeof(int64_t) * (size_t)(r->opt.val_path[0] ? r->vdata.n_examples : n));
    if (!r->train_idx || !r->val_idx) return ALLOY_STATUS_NOMEM;
    if (r->opt.val_path[0]) {
        for (int64_t e = 0; e < n; e++) r->train_idx[e] = e;
        for (int64_t e = 0; e < r->vdata.n_examples; e++) r->val_idx[e] = e;
        r->n_train = n;
        r->n_val = r->vdata.n_examples;
        return ALLOY_STATUS_OK;
    }
    uint64_t best = UINT64_MAX;
    int64_t best_e = -1;
    for (int64_t e = 0; e < n; e++) {
        int64_t a = d->seq_start[d->ex_start[e]], b = d->seq_start[d->ex_start[e + 1]];
        uint64_t h = alloy_fnv64(ALLOY_FNV64_INIT, &r->opt.seed, sizeof r->opt.seed);
        h = alloy_fnv64(h, d->tokens + a, sizeof(int32_t) * (size_t)(b - a));
        h ^= h >> 29; // FNV's low bits mix poorly: fold the high ones in
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 32;
        if (h < best) best = h, best_e = e;
        if ((double)(h >> 11) * 0x1.0p-53 < r->opt.val_fraction) r->val_idx[r->n_val++] = e;
        else r->train_idx[r->n_train++] = e;
    }
    if (r->n_val == 0 && r->opt.val_fraction > 0.0 && n >= 2) { // the example of the smallest hash
        r->n_train = 0;
        for (int64_t e = 0; e < n; e++)
            if (e != best_e) r->train_idx[r->n_train++] = e;
        r->val_idx[r->n_val++] = best_e;
    }
    if (r->n_train == 0)
        return alloy_fail(ALLOY_STATUS_USAGE, "%s: no training examples left after holding out --val-fraction %g",
                          r->opt.data_path, r->opt.val_fraction);
    return ALLOY_STATUS_OK;
}

/* A checkpoint folder for --model: the folder itself if it holds model.safetensors (or an index),
 * else a run folder's latest checkpoint. *out: alloy_free it. */
static alloy_status resolve_model_dir(const char *dir, char **out) { return alloy_checkpoint_resolve(dir, out); }

/* Sets the embedding rows (and untied head rows) of ids[0..k) to the mean of rows [0, n). */
static void mean_rows(alloy_model *m, const int32_t *ids, int k, int n) {
    int C = m->config.d_model;
    for (int which = 0; which < (m->config.tie_embeddings ? 1 : 2); which++) {
        float *w = which ? m->params.lm_head : m->params.wte;
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int v = 0; v < n; v++) sum += w[(size_t)v * C + c];
            for (int i = 0; i < k; i++) w[(size_t)ids[i] * C + c] = (float)(sum / n);
        }
    }
}

/* When the folder's own tokenizer lacks the ChatML tokens the run added, their rows start at
 * the mean of the rows of the tokenizer's tokens: rows that resize_vocab just made, or rows a
 * padded vocabulary (llm.c's 50304 for GPT-2's 50257) held unused. */
static alloy_status init_chat_rows(align_run *r, const char *dir, const alloy_config *cfg, alloy_model *m) {
    if (r->opt.tmpl != ALLOY_CHAT_TEMPLATE_CHATML) return ALLOY_STATUS_OK;
    alloy_tokenizer *own = NULL;
    alloy_status s = alloy_align_load_tokenizer(dir, cfg, &own);
    if (s) return s;
    int32_t ids[2] = {alloy_tokenizer_special_id(r->tok, ALLOY_CHAT_IM_START), alloy_chat_end_id(r->tok)};
    int first = alloy_tokenizer_vocab_size(own);
    if (alloy_tokenizer_special_id(own, ALLOY_CHAT_IM_START) < 0 && ids[0] >= first && ids[1] >= first && first > 0)
        mean_rows(m, ids, 2, first);
    alloy_tokenizer_destroy(own);
    return ALLOY_STATUS_OK;
}

/* Loads the model of a checkpoint folder for the run's batches, as a language model (sft, dpo)
 * or a reward model (reward; a language model gets a new head), its vocabulary grown to the
 * tokenizer's, the chat tokens' rows at the mean embedding when the folder lacked them. */
static alloy_status load_model(align_run *r, const char *dir, int rows, alloy_model **lm, alloy_reward_model **rm) {
    alloy_status s;
    int V = alloy_tokenizer_vocab_size(r->tok);
    if (rm) {
        s = alloy_reward_model_load(rm, dir, rows, r->opt.seq, false, r->opt.seed);
        if (!s && (*rm)->model->config.vocab_size < V) s = alloy_model_resize_vocab(&(*rm)->model, V);
        if (!s) (*rm)->head_view.config = (*rm)->model->config;
        if (s) {
            alloy_reward_model_destroy(*rm);
            *rm = NULL;
        }
    } else {
        s = alloy_model_load(lm, dir, rows, r->opt.seq);
        if (!s && (*lm)->config.vocab_size < V) s = alloy_model_resize_vocab(lm, V);
        if (s) {
            alloy_model_destroy(*lm);
            *lm = NULL;
        }
    }
    if (!s) {
        alloy_model *m = rm ? (*rm)->model : *lm;
        alloy_config own = m->config; // the folder's, before the tokenizer name changes
        snprintf(m->config.tokenizer, sizeof m->config.tokenizer, "%s", r->tok_json ? "bpe" : "bytes");
        if ((s = init_chat_rows(r, dir, &own, m))) {
            if (rm) alloy_reward_model_destroy(*rm);
            else alloy_model_destroy(*lm);
            if (rm) *rm = NULL;
            else *lm = NULL;
        }
    }
    return s;
}

/* The reference's log-probability of every sequence of d, in batches of the run's size, in
 * order (so that a resumed run computes the same values). */
static alloy_status reference_logps(align_run *r, alloy_model *ref, const alloy_align_data *d, double **out) {
    *out = alloy_malloc(sizeof(double) * (size_t)(d->n_seqs > 0 ? d->n_seqs : 1));
    if (!*out) return ALLOY_STATUS_NOMEM;
    alloy_status s = ALLOY_STATUS_OK;
    for (int64_t e0 = 0; e0 < d->n_examples && !s; e0 += r->opt.batch) {
        int n = (int)(d->n_examples - e0 < r->opt.batch ? d->n_examples - e0 : r->opt.batch);
        for (int i = 0; i < n; i++) r->ex_buf[i] = e0 + i;
        s = alloy_align_batch_make(&r->batch, d, r->ex_buf, n);
        if (!s) s = alloy_dpo_logps(ref, &r->batch, *out + d->ex_start[e0], NULL);
    }
    return s;
}

/* Loads the tokenizer (with the ChatML tokens when the template needs them) and keeps its
 * tokenizer.json for the checkpoints. */
static alloy_status setup_tokenizer(align_run *r, const char *dir, const alloy_config *cfg, int *added) {
    alloy_tokenizer *base = NULL;
    alloy_status s = alloy_align_load_tokenizer(dir, cfg, &base);
    *added = 0;
    if (s) return s;
    char *tj = alloy_path_join(dir, "tokenizer.json");
    bool has_file = tj && alloy_path_exists(tj);
    if (!tj) s = ALLOY_STATUS_NOMEM;
    else if (r->opt.tmpl == ALLOY_CHAT_TEMPLATE_CHATML) {
        s = alloy_chat_tokenizer(base, &r->tok, &r->tok_json, &r->tok_len, added);
        if (!s && *added == 0 && has_file) { // the folder's own file, byte for byte
            alloy_free(r->tok_json);
            r->tok_json = NULL;
            s = alloy_file_read_all(tj, &r->tok_json, &r->tok_len);
        }
    } else {
        if (has_file) s = alloy_file_read_all(tj, &r->tok_json, &r->tok_len);
        else if (strcmp(alloy_tokenizer_name(base), "bytes"))
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the raw template needs the model's tokenizer as tokenizer.json", dir);
        if (!s) {
            r->tok = base;
            base = NULL;
        }
    }
    alloy_tokenizer_destroy(base);
    alloy_free(tj);
    return s;
}

void align_free(align_run *r) {
    alloy_tokenizer_destroy(r->tok);
    alloy_free(r->tok_json);
    alloy_align_data_free(&r->data);
    alloy_align_data_free(&r->vdata);
    alloy_free(r->train_idx);
    alloy_free(r->val_idx);
    alloy_free(r->perm);
    if (r->rm) alloy_reward_model_destroy(r->rm);
    else alloy_model_destroy(r->model);
    alloy_free(r->ref);
    alloy_free(r->vref);
    alloy_free(r->ref_rows);
    alloy_align_batch_free(&r->batch);
    alloy_free(r->ex_buf);
}

alloy_status align_setup(align_run *r, const char *resume) {
    alloy_align_options *o = &r->opt;
    alloy_status s = ALLOY_STATUS_OK;
    char *init = NULL, *ref_dir = NULL;
    alloy_config cfg;
    // the model's folder, its config and tokenizer, the template
    if ((s = resolve_model_dir(resume ? resume : o->model_dir, &init))) goto done;
    if (!resume) {
        if (strlen(init) >= sizeof o->model_dir) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", init);
            goto done;
        }
        strcpy(o->model_dir, init); // a run folder's checkpoint of today, not of a later resume
    }
    {
        char *cp = alloy_path_join(init, "config.json");
        s = cp ? alloy_config_load(&cfg, cp) : ALLOY_STATUS_NOMEM;
        alloy_free(cp);
        if (s) goto done;
    }
    if (!o->tmpl_set) {
        bool found = false;
        if ((s = alloy_chat_template_of(init, &o->tmpl, &found))) goto done;
        if (!found) o->tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
        o->tmpl_set = true;
    }
    if (o->seq == 0) o->seq = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
    if (o->seq > cfg.max_seq_len) {
        s = alloy_fail_option(ALLOY_STATUS_USAGE, "seq", "%d exceeds the model's maximum sequence length %d", o->seq, cfg.max_seq_len);
        goto done;
    }
    if ((s = setup_tokenizer(r, init, &cfg, &r->added))) goto done;
    // the data
    alloy_align_kind dk = o->kind;
    if ((s = alloy_align_data_read(&r->data, o->data_path, r->tok, dk, o->tmpl, o->seq, &o->fields))) goto done;
    r->vd = &r->data;
    if (o->val_path[0]) {
        if ((s = alloy_align_data_read(&r->vdata, o->val_path, r->tok, dk, o->tmpl, o->seq, &o->fields))) goto done;
        r->vd = &r->vdata;
    }
    if ((s = split(r))) goto done;
    if (o->steps == 0) {
        double per_step = (double)o->batch * o->grad_accum;
        o->steps = (int64_t)ceil(o->epochs * (double)r->n_train / per_step);
        if (o->steps < 1) o->steps = 1;
    }
    int max_seqs = r->data.max_seqs > r->vdata.max_seqs ? r->data.max_seqs : r->vdata.max_seqs;
    int rows = o->batch * max_seqs;
    r->perm = alloy_malloc(sizeof(int64_t) * (size_t)r->n_train);
    r->ex_buf = alloy_malloc(sizeof(int64_t) * (size_t)o->batch);
    r->ref_rows = alloy_malloc(sizeof(double) * (size_t)rows);
    if (!r->perm || !r->ex_buf || !r->ref_rows) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    // DPO: the frozen reference's log-probabilities, before the policy is loaded
    if (o->kind == ALLOY_ALIGN_DPO) {
        if ((s = resolve_model_dir(o->ref_dir[0] ? o->ref_dir : o->model_dir, &ref_dir))) goto done;
        if (!resume && o->ref_dir[0]) snprintf(o->ref_dir, sizeof o->ref_dir, "%s", ref_dir);
        alloy_model *ref = NULL;
        s = load_model(r, ref_dir, rows, &ref, NULL);
        if (!s) s = reference_logps(r, ref, &r->data, &r->ref);
        if (!s && r->vd == &r->vdata) s = reference_logps(r, ref, &r->vdata, &r->vref);
        alloy_model_destroy(ref);
        if (s) {
            alloy_error_prefix("reference model %s", ref_dir);
            goto done;
        }
    }
    // the model and its optimiser state
    if (o->kind == ALLOY_ALIGN_REWARD) {
        if ((s = load_model(r, init, rows, NULL, &r->rm))) goto done;
        r->model = r->rm->model;
    } else if ((s = load_model(r, init, rows, &r->model, NULL))) {
        goto done;
    }
    align_shuffle(r); // epoch 0's order (a resume restores its epoch's)
done:
    alloy_free(init);
    alloy_free(ref_dir);
    return s;
}
