/*
 * moe.c — `alloy moe`: a mixture of experts from dense models (Branch-Train-MiX). The work is
 * alloy/moe.h's; this file reads the flags and the prompts file, loads the models, checks that
 * they share a tokenizer, saves the result with the tokenizer and reports.
 */
#include "cli.h"
#include "alloy/moe.h"
#include "alloy/tokenizer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy moe --experts A B [C ...] --top-k K --out DIR [--base BASE] [--router MODE]\n"
    "                 [--prompts FILE] [--router-l2 X] [--seed S] [--aux-loss-coef X] [--verbose]\n"
    "\n"
    "Builds a mixture-of-experts model from dense models of one family, shape and tokenizer\n"
    "(Branch-Train-MiX): layer l's expert e is model e's MLP of layer l; attention, norms,\n"
    "embeddings and head are the mean of the experts' (or BASE's); each layer gets a router that\n"
    "sends every token to its K best experts. Writes a checkpoint folder (config.json,\n"
    "model.safetensors, the experts' tokenizer.json) for alloy train --init (add --train-only\n"
    "router to tune the routers alone), alloy eval and alloy sample. A Llama-family result is\n"
    "saved as transformers' Mixtral (model_type mixtral); a GPT-2 one in alloy's own layout.\n"
    "\n"
    "  --experts A B ...     expert checkpoint or run folders (2 to 256), expert e = the e-th (from 0)\n"
    "  --top-k K             experts per token, 1 <= K <= the number of experts. The K gates are\n"
    "                        renormalised to sum to 1 (Mixtral's rule), so with K = 1 the gate\n"
    "                        is always 1 and tuning the router learns from the load-balancing\n"
    "                        loss alone; K >= 2 lets the LM loss move it\n"
    "  --out DIR             the checkpoint folder to write (created; files replaced atomically;\n"
    "                        not one of the inputs)\n"
    "  --base BASE           take attention, norms, embeddings and head from BASE (the model the\n"
    "                        experts were branched from) instead of averaging the experts'\n"
    "  --router MODE         random (default): N(0, 0.02^2) from --seed; hidden: as mergekit-moe's\n"
    "                        hidden gate mode, row e of each layer's router is the mean ln2\n"
    "                        hidden state (the router's input) of expert e's prompts, run through\n"
    "                        BASE (or the experts' average), minus the mean of the rows, unit length;\n"
    "                        classifier: layer by layer, the MoE itself runs the prompts and each\n"
    "                        router is fitted as a softmax classifier (L2-regularised, each expert's\n"
    "                        prompts weighted alike) telling from a token's ln2 state which\n"
    "                        expert's prompt it came from: gates are its posterior, sharp where the\n"
    "                        domain is clear (see alloy/moe.h)\n"
    "  --prompts FILE        hidden or classifier router prompts: one per line, EXPERT<TAB>TEXT (EXPERT an index\n"
    "                        into --experts from 0; every expert needs one; empty lines and lines\n"
    "                        starting with # are skipped). Without it each expert writes its own:\n"
    "                        4 texts of 32 tokens sampled from it after a newline (seeded)\n"
    "  --router-l2 X         classifier: the L2 weight on the router (default 1e-3; larger: softer\n"
    "                        gates)\n"
    "  --verbose             classifier: print each layer's fit (iterations, accuracy) on stderr\n"
    "  --seed S              the random router and the sampled prompts (default 1337)\n"
    "  --aux-loss-coef X     router_aux_loss_coef of the result: the weight of the load-balancing\n"
    "                        loss when it is trained (default 0.001, Mixtral's)\n"
    "  --threads N           OpenMP threads (default: all cores)\n";

#define MAX_MODELS 257 /* the experts and a base */

/* a and b name the same existing folder. */
static bool same_folder(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

/* One input: its checkpoint, model, and tokenizer.json text (NULL if none). */
typedef struct input {
    const char *flag;   /* how the messages name it */
    alloy_checkpoint *ck;
    const char *dir;    /* ck->dir, its checkpoint folder */
    alloy_model *m;
    char *tok_json;
    size_t tok_size;
} input;

/* Opens arg (any model path) and loads its model with activations for one sequence of up to T
 * tokens (clamped to its context) and its tokenizer.json. */
static alloy_status load_input(input *in, const char *arg, int T) {
    alloy_status s = alloy_checkpoint_open(&in->ck, arg);
    if (!s) {
        in->dir = in->ck->dir;
        int ctx = in->ck->config.max_seq_len;
        s = alloy_model_load(&in->m, in->dir, 1, T < ctx ? T : ctx);
    }
    char *tp = s ? NULL : alloy_path_join(in->dir, "tokenizer.json");
    if (!s && !tp) s = ALLOY_STATUS_NOMEM;
    if (!s && alloy_path_exists(tp)) s = alloy_file_read_all(tp, &in->tok_json, &in->tok_size);
    alloy_free(tp);
    return s;
}

/* Every input must be compatible with the first (alloy_checkpoint_compatible: the same
 * vocabulary and tokenizer). */
static alloy_status check_tokenizers(const input *in, int n) {
    char why[2048];
    for (int i = 1; i < n; i++)
        if (!alloy_checkpoint_compatible(in[0].ck, in[i].ck, why, sizeof why))
            return alloy_fail(ALLOY_STATUS_MISMATCH, "%s %s: %s: the experts must share a tokenizer", in[i].flag,
                              in[i].ck->path, why);
    return ALLOY_STATUS_OK;
}

/* The tokenizer of the first input (*own when it is made here: a folder that carries none and
 * names none is read with the byte tokenizer). */
static alloy_status input_tokenizer(const input *in, const alloy_tokenizer **tok, alloy_tokenizer **own) {
    alloy_status s = alloy_checkpoint_tokenizer(in->ck, tok);
    if (!s && !*tok && !(s = alloy_tokenizer_create(own, "bytes"))) *tok = *own;
    return s;
}

/* The flags that are not fields of alloy_moe_options. */
typedef struct moe_args {
    cli_list experts;
    const char *base, *out, *router, *prompts;
    int top_k, threads;
} moe_args;

/* Everything the verb loads and makes, freed in one place. */
typedef struct moe_job {
    input *in;                     /* (n_in) the experts, then the base if any */
    int n_in;
    alloy_model **ex;              /* (experts.n) the experts' models */
    const alloy_tokenizer *tok;    /* the first input's tokenizer (hidden and classifier routers) */
    alloy_tokenizer *own_tok;      /* tok when made here */
    alloy_moe_prompt_set prompts;  /* --prompts */
    alloy_model *moe;              /* the result */
} moe_job;

/* The checks of the flags on their own; 0 or the exit status. */
static int check_args(const moe_args *a, alloy_moe_options *o, cli_flag *flags, int nf) {
    int n = a->experts.n;
    if (!n || !a->out || !cli_find(flags, nf, "top-k")->seen)
        return cli_usage("moe", "--experts, --top-k and --out are required");
    if (n < 2) return cli_usage("moe", "--experts: give at least 2 expert models (got %d)", n);
    if (n > ALLOY_MAX_EXPERTS) return cli_usage("moe", "--experts: at most %d models", ALLOY_MAX_EXPERTS);
    if (a->top_k < 1 || a->top_k > n)
        return cli_usage("moe", "--top-k %d: must lie in [1, %d] (the number of experts)", a->top_k, n);
    if (a->router && alloy_moe_router_parse(a->router, &o->router))
        return cli_usage("moe", "--router must be random, hidden or classifier, not \"%s\"", a->router);
    bool from_prompts = o->router == ALLOY_MOE_ROUTER_HIDDEN || o->router == ALLOY_MOE_ROUTER_CLASSIFIER;
    if (a->prompts && !from_prompts) return cli_usage("moe", "--prompts applies to --router hidden or classifier only");
    if (!(o->router_l2 > 0.0 && o->router_l2 < 1e6)) return cli_usage("moe", "--router-l2 must be > 0");
    if (!(o->aux_loss_coef >= 0.0)) return cli_usage("moe", "--aux-loss-coef must be >= 0");
    if (a->threads < 0) return cli_usage("moe", "--threads must be >= 0");
    o->top_k = a->top_k;
    return 0;
}

/* Loads the experts and the base (activations: none for a random router, the prompts' length
 * for the others) and checks that they share a tokenizer. */
static alloy_status load_inputs(moe_job *j, const moe_args *a, bool from_prompts) {
    int n = a->experts.n;
    j->n_in = n + (a->base ? 1 : 0);
    j->in = alloy_calloc((size_t)j->n_in, sizeof *j->in);
    j->ex = alloy_calloc((size_t)n, sizeof *j->ex);
    alloy_status s = (!j->in || !j->ex) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    for (int i = 0; i < j->n_in && !s; i++) {
        input *in = &j->in[i];
        const char *arg = i < n ? a->experts.items[i] : a->base;
        in->flag = i < n ? "--experts" : "--base";
        s = load_input(in, arg, from_prompts ? 1 << 20 : 1);
        if (!s && same_folder(in->dir, a->out))
            s = alloy_fail(ALLOY_STATUS_USAGE, "--out %s: is one of the inputs; write the MoE elsewhere", a->out);
        if (s && !strstr(alloy_last_error(), arg)) alloy_error_prefix("%s %s", in->flag, arg);
        if (!s && i < n) j->ex[i] = in->m;
    }
    return s ? s : check_tokenizers(j->in, j->n_in);
}

/* The hidden and classifier routers' prompts: the file's, or sampled texts that start with "\n". */
static alloy_status router_prompts(moe_job *j, const moe_args *a, alloy_moe_options *o) {
    alloy_status s = input_tokenizer(&j->in[0], &j->tok, &j->own_tok);
    if (!s && a->prompts) {
        s = alloy_moe_prompts_read(&j->prompts, a->prompts, j->tok, a->experts.n);
        o->prompts = j->prompts.v;
        o->n_prompts = j->prompts.n;
    } else if (!s) {
        alloy_ids nl = {0};
        if (alloy_tokenizer_encode(j->tok, "\n", 1, 0, &nl) == ALLOY_STATUS_OK && nl.n > 0) o->sample_start = nl.data[0];
        alloy_ids_free(&nl);
    }
    return s;
}

/* Saves the MoE with the tokenizer.json of the base (or the first expert) and reports. */
static alloy_status save(const moe_job *j, const moe_args *a, const alloy_moe_options *o, bool from_prompts) {
    const input *tsrc = a->base ? &j->in[j->n_in - 1] : &j->in[0];
    alloy_status s = alloy_model_save(j->moe, a->out);
    if (!s && tsrc->tok_json) {
        char *tpath = alloy_path_join(a->out, "tokenizer.json");
        s = tpath ? alloy_write_file_atomic(tpath, tsrc->tok_json, tsrc->tok_size) : ALLOY_STATUS_NOMEM;
        alloy_free(tpath);
    }
    if (s) return s;
    const alloy_config *c = &j->moe->config;
    printf("built a mixture of %d experts (%s, %d layers, d_ff %d, top-%d, %s router%s%s) -> %s: %zu parameters%s\n",
           c->n_experts, alloy_family_name(c->family), c->n_layer, c->d_ff, c->top_k, alloy_moe_router_name(o->router),
           from_prompts ? (a->prompts ? " from --prompts" : " from sampled prompts") : "",
           a->base ? ", shared layers from --base" : ", shared layers averaged", a->out, j->moe->num_params,
           tsrc->tok_json ? ", tokenizer.json copied" : "");
    if (c->top_k == 1)
        fprintf(stderr, "alloy moe: warning: with --top-k 1 each token's one gate is 1, so the LM loss gives the routers no "
                        "gradient: alloy train --train-only router would learn from the load-balancing loss alone "
                        "(--top-k 2 lets the LM loss tune them)\n");
    return ALLOY_STATUS_OK;
}

static void job_free(moe_job *j) {
    alloy_moe_prompts_free(&j->prompts);
    alloy_tokenizer_destroy(j->own_tok);
    alloy_model_destroy(j->moe);
    for (int i = 0; j->in && i < j->n_in; i++) {
        alloy_checkpoint_close(j->in[i].ck);
        alloy_model_destroy(j->in[i].m);
        alloy_free(j->in[i].tok_json);
    }
    alloy_free(j->in);
    alloy_free(j->ex);
}

int cmd_moe(int argc, char **argv) {
    moe_args a = {0};
    alloy_moe_options o = alloy_moe_defaults();
    cli_flag flags[] = {
        {"experts", CLI_LIST, &a.experts, false}, {"base", CLI_STR, &a.base, false},
        {"top-k", CLI_INT, &a.top_k, false},      {"out", CLI_STR, &a.out, false},
        {"router", CLI_STR, &a.router, false},    {"prompts", CLI_STR, &a.prompts, false},
        {"seed", CLI_U64, &o.seed, false},        {"aux-loss-coef", CLI_DBL, &o.aux_loss_coef, false},
        {"threads", CLI_INT, &a.threads, false},  {"router-l2", CLI_DBL, &o.router_l2, false},
        {"verbose", CLI_BOOL, &o.verbose, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("moe", argc, argv, flags, nf, help, NULL);
    int rc = r ? (r == 1 ? 0 : r) : check_args(&a, &o, flags, nf);
    if (!r && !rc) {
        cli_set_threads(a.threads);
        bool from_prompts = o.router == ALLOY_MOE_ROUTER_HIDDEN || o.router == ALLOY_MOE_ROUTER_CLASSIFIER;
        moe_job j = {0};
        alloy_status s = load_inputs(&j, &a, from_prompts);
        if (!s && from_prompts) s = router_prompts(&j, &a, &o);
        if (!s) s = alloy_moe_build(&j.moe, j.ex, a.experts.n, a.base ? j.in[j.n_in - 1].m : NULL, &o);
        if (!s) s = save(&j, &a, &o, from_prompts);
        job_free(&j);
        rc = s ? cli_fail("moe", s) : 0;
    }
    cli_free_lists(flags, nf);
    return rc;
}
