/*
 * ppo_setup.c — what a PPO run sets up before it trains: the SFT model's template and tokenizer,
 * the reward model (the same tokens and template), the prompts, the frozen reference, the policy
 * with its value head, the buffers of a batch of rollouts, and the order of the prompts.
 */
#include "alloy/infer.h"
#include "alloy/io.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Draws pass e's order of the prompts from (seed, e). */
void ppo_shuffle(ppo_run *r) {
    alloy_rng g;
    alloy_rng_seed(&g, r->opt.seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(r->epoch + 1)));
    int64_t n = r->data.n_examples;
    for (int64_t i = 0; i < n; i++) r->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)alloy_rng_below(&g, (uint64_t)(i + 1));
        int64_t t = r->perm[i];
        r->perm[i] = r->perm[j];
        r->perm[j] = t;
    }
}

/* ---- set-up ---- */

/* MISMATCH unless the reward model's folder reads text as the policy does: the same tokens under
 * the same ids, and the same chat template when it names one. */
static alloy_status check_reward_model(ppo_run *r, const char *rdir, const alloy_config *rcfg) {
    alloy_tokenizer *rt = NULL;
    alloy_status s = alloy_align_load_tokenizer(rdir, rcfg, &rt);
    if (s) return s;
    int a = alloy_tokenizer_vocab_size(r->tok), b = alloy_tokenizer_vocab_size(rt);
    if (a != b)
        s = alloy_fail(ALLOY_STATUS_MISMATCH,
                       "reward model %s: its tokenizer has %d tokens, the policy's %d: train the reward model from the "
                       "policy's SFT model (alloy reward --model SFT)", rdir, b, a);
    if (!s && alloy_tokenizer_hash(r->tok) != alloy_tokenizer_hash(rt)) // the one identity (alloy/tokenizer.h)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "reward model %s: its tokenizer differs from the policy's: train the reward model "
                       "from the policy's SFT model (alloy reward --model SFT)", rdir);
    if (!s && rcfg->vocab_size < a)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "reward model %s: vocabulary of %d rows for a tokenizer of %d tokens", rdir,
                       rcfg->vocab_size, a);
    bool found = false;
    alloy_chat_template t = r->opt.tmpl;
    if (!s) s = alloy_chat_template_of(rdir, &t, &found);
    if (!s && found && t != r->opt.tmpl)
        s = alloy_fail(ALLOY_STATUS_MISMATCH, "reward model %s was trained with the %s template, the policy samples with %s", rdir,
                       alloy_chat_template_name(t), alloy_chat_template_name(r->opt.tmpl));
    alloy_tokenizer_destroy(rt);
    return s;
}

static alloy_status alloc_buffers(ppo_run *r) {
    const alloy_ppo_options *o = &r->opt;
    size_t B = (size_t)o->batch, R = (size_t)o->max_new_tokens, G = (size_t)o->gen_batch;
    size_t T = (size_t)o->seq + r->suffix.n, F = (size_t)r->fwd;
    r->perm = alloy_malloc(sizeof(int64_t) * (size_t)r->data.n_examples);
    r->ex = alloy_malloc(sizeof(int64_t) * B);
    r->resp = alloy_malloc(sizeof(int32_t) * B * R);
    r->resp_len = alloy_calloc(B, sizeof(int));
    r->off = alloy_calloc(B + 1, sizeof(int64_t));
    float **f[] = {&r->logp, &r->ref_logp, &r->values, &r->rewards, &r->kl_tok, &r->adv, &r->ret};
    bool ok = r->perm && r->ex && r->resp && r->resp_len && r->off;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) ok = ok && (*f[i] = alloy_calloc(B * R, sizeof(float)));
    r->scores = alloy_calloc(B, sizeof(float));
    r->idx = alloy_malloc(sizeof(int64_t) * B);
    r->mb = alloy_malloc(sizeof(float) * 4 * (size_t)o->mini_batch * R);
    r->gens = alloy_calloc(G, sizeof *r->gens);
    r->seeds = alloy_malloc(sizeof(uint64_t) * G);
    alloy_align_batch *b = &r->batch;
    b->ex_row = alloy_malloc(sizeof(int) * (F + 1));
    b->tokens = alloy_malloc(sizeof(int32_t) * F * T);
    b->targets = alloy_malloc(sizeof(int32_t) * F * T);
    b->last = alloy_malloc(sizeof(int64_t) * F);
    b->len = alloy_malloc(sizeof(int32_t) * F);
    b->rows_cap = (int)F, b->cols_cap = (int)T, b->ex_cap = (int)F + 1;
    ok = ok && r->scores && r->idx && r->mb && r->gens && r->seeds && b->ex_row &&
         b->tokens && b->targets && b->last && b->len;
    if (!ok) return alloy_fail(ALLOY_STATUS_NOMEM, "out of memory for a batch of %zu rollouts", B);
    alloy_generate_options *g = &r->gen;
    alloy_generate_options_default(g);
    g->sampling.temperature = o->temperature;
    g->sampling.top_k = o->top_k;
    g->sampling.top_p = o->top_p;
    g->sampling.min_p = 0.0f;
    g->sampling.repeat_last_n = 0;
    g->sampling.n_vocab = alloy_tokenizer_vocab_size(r->tok);
    g->seeds = r->seeds;
    g->max_tokens = o->max_new_tokens;
    g->eos = &r->stop_id;
    g->n_eos = r->stop_id >= 0 ? 1 : 0;
    g->hook = ppo_rollout_entropy;
    g->hook_user = r;
    return ALLOY_STATUS_OK;
}

void ppo_free(ppo_run *r) {
    alloy_tokenizer_destroy(r->tok);
    alloy_free(r->tok_json);
    alloy_align_data_free(&r->data);
    alloy_free(r->perm);
    alloy_reward_model_destroy(r->pv);
    alloy_model_destroy(r->ref);
    alloy_reward_model_destroy(r->rm);
    alloy_ids_free(&r->suffix);
    alloy_free(r->ex);
    alloy_free(r->resp);
    alloy_free(r->resp_len);
    alloy_free(r->off);
    float *f[] = {r->logp, r->ref_logp, r->values, r->rewards, r->kl_tok, r->adv, r->ret, r->scores, r->mb};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) alloy_free(f[i]);
    alloy_free(r->idx);
    alloy_free(r->gens);
    alloy_free(r->seeds);
    alloy_align_batch_free(&r->batch);
}

/* The config.json of a checkpoint folder. */
static alloy_status load_config(const char *dir, alloy_config *cfg) {
    char *cp = alloy_path_join(dir, "config.json");
    alloy_status s = cp ? alloy_config_load(cfg, cp) : ALLOY_STATUS_NOMEM;
    alloy_free(cp);
    return s;
}

/* The SFT model's config, template and tokenizer, the reward model (checked against them), the
 * prompts, the frozen reference, the policy with its value head, the buffers; pass 0's order. */
alloy_status ppo_setup(ppo_run *r, const char *resume) {
    alloy_ppo_options *o = &r->opt;
    alloy_status s = ALLOY_STATUS_OK;
    char *init = NULL, *rdir = NULL, *p = NULL;
    alloy_config cfg, rcfg;
    // the SFT model: its config, template and tokenizer
    if ((s = alloy_checkpoint_resolve(o->model_dir, &init))) goto done;
    if (!resume) {
        if (strlen(init) >= sizeof o->model_dir) {
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s: path too long", init);
            goto done;
        }
        strcpy(o->model_dir, init); // the reference of every later resume
    }
    if ((s = load_config(init, &cfg))) goto done;
    if (!o->tmpl_set) {
        bool found = false;
        if ((s = alloy_chat_template_of(init, &o->tmpl, &found))) goto done;
        if (!found) o->tmpl = ALLOY_CHAT_TEMPLATE_CHATML;
        o->tmpl_set = true;
    }
    if ((s = alloy_align_load_tokenizer(init, &cfg, &r->tok))) goto done;
    if (!(p = alloy_path_join(init, "tokenizer.json"))) {
        s = ALLOY_STATUS_NOMEM;
        goto done;
    }
    if (alloy_path_exists(p) && (s = alloy_file_read_all(p, &r->tok_json, &r->tok_len))) goto done;
    if (o->tmpl == ALLOY_CHAT_TEMPLATE_CHATML) {
        r->stop_id = alloy_chat_end_id(r->tok);
        if (r->stop_id < 0 || alloy_tokenizer_special_id(r->tok, ALLOY_CHAT_IM_START) < 0) {
            s = alloy_fail(ALLOY_STATUS_MISMATCH, "%s: the tokenizer has no %s and %s tokens: PPO starts from a chat model "
                           "(alloy sft), or use --template raw", init, ALLOY_CHAT_IM_START, ALLOY_CHAT_IM_END);
            goto done;
        }
        if ((s = alloy_tokenizer_encode(r->tok, "\n", 1, 0, &r->suffix))) goto done;
    } else {
        r->stop_id = alloy_tokenizer_special_id(r->tok, "<|endoftext|>");
    }
    // the reward model: same tokens, same template, room for the longest sequence
    if ((s = alloy_checkpoint_resolve(o->reward_dir, &rdir)) || (s = load_config(rdir, &rcfg))) {
        alloy_error_prefix("reward model");
        goto done;
    }
    if ((s = check_reward_model(r, rdir, &rcfg))) goto done;
    if (o->seq == 0) { // the longest that policy and reward model (with the suffix) both take
        o->seq = cfg.max_seq_len < 1024 ? cfg.max_seq_len : 1024;
        if (o->seq > rcfg.max_seq_len - (int)r->suffix.n) o->seq = rcfg.max_seq_len - (int)r->suffix.n;
    }
    if (o->seq > cfg.max_seq_len) {
        s = alloy_fail_option(ALLOY_STATUS_USAGE, "seq", "%d exceeds the model's maximum sequence length %d", o->seq, cfg.max_seq_len);
        goto done;
    }
    if (o->seq - o->max_new_tokens < 2) {
        s = alloy_fail_option(ALLOY_STATUS_USAGE, "max_new_tokens", "%d leaves no room for a prompt in seq %d", o->max_new_tokens,
                       o->seq);
        goto done;
    }
    // the prompts
    if ((s = alloy_align_data_read(&r->data, o->prompts_path, r->tok, ALLOY_ALIGN_PROMPT, o->tmpl,
                                   o->seq - o->max_new_tokens, &o->fields)))
        goto done;
    if (o->steps == 0) o->steps = (r->data.n_examples + o->batch - 1) / o->batch;
    if (o->seq + (int)r->suffix.n > rcfg.max_seq_len) {
        s = alloy_fail_option(ALLOY_STATUS_USAGE, "seq", "%d (+%zu) exceeds the reward model's maximum sequence length %d", o->seq,
                       r->suffix.n, rcfg.max_seq_len);
        goto done;
    }
    r->fwd = o->mini_batch;
    if ((s = alloy_reward_model_load(&r->rm, rdir, r->fwd, o->seq + (int)r->suffix.n, true, 0))) goto done;
    // the reference (always the SFT weights) and the policy (the SFT weights, or the checkpoint's)
    if ((s = alloy_model_load(&r->ref, o->model_dir, r->fwd, o->seq))) {
        alloy_error_prefix("reference model %s", o->model_dir);
        goto done;
    }
    {
        alloy_model *pm = NULL;
        if ((s = alloy_model_load(&pm, resume ? resume : init, r->fwd, o->seq))) goto done;
        if ((s = alloy_ppo_value_model_create(&r->pv, pm))) goto done;
    }
    r->kl = (alloy_kl_controller){.value = o->init_kl_coef, .target = o->kl_target, .horizon = o->kl_horizon,
                                 .adaptive = o->adaptive_kl};
    if ((s = alloc_buffers(r))) goto done;
    ppo_shuffle(r); // pass 0's order (a resume restores its pass's)
done:
    alloy_free(init);
    alloy_free(rdir);
    alloy_free(p);
    return s;
}
