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

/* The prompts file: EXPERT<TAB>TEXT per line, tokenized. The caller frees ids and prompts. */
static alloy_status read_prompts(const char *path, const alloy_tokenizer *tok, int n_experts, alloy_ids **ids_out,
                                 alloy_moe_prompt **out, int *n_out) {
    char *text;
    size_t size;
    alloy_status s = alloy_file_read_all(path, &text, &size);
    if (s) return s;
    int cap = 1;
    for (size_t i = 0; i < size; i++) cap += text[i] == '\n';
    alloy_ids *ids = alloy_calloc((size_t)cap, sizeof *ids);
    alloy_moe_prompt *p = alloy_calloc((size_t)cap, sizeof *p);
    int n = 0, line_no = 0;
    if (!ids || !p) s = ALLOY_STATUS_NOMEM;
    for (char *line = text, *next; !s && line && *line; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (!len || line[0] == '#') continue;
        char *tab = strchr(line, '\t'), *end;
        long e = tab ? strtol(line, &end, 10) : -1;
        if (!tab || end != tab || end == line)
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: expected EXPERT<TAB>TEXT (EXPERT a number)", path, line_no);
        else if (e < 0 || e >= n_experts)
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: expert %ld is outside [0, %d] (the --experts given)", path, line_no,
                           e, n_experts - 1);
        else if (!tab[1])
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: the prompt is empty", path, line_no);
        if (!s) s = alloy_tokenizer_encode(tok, tab + 1, strlen(tab + 1), 0, &ids[n]);
        if (!s && ids[n].n == 0) {
            alloy_ids_free(&ids[n]);
            s = alloy_fail(ALLOY_STATUS_USAGE, "%s:%d: the prompt has no tokens", path, line_no);
        }
        if (!s) {
            p[n] = (alloy_moe_prompt){.expert = (int)e, .tokens = ids[n].data, .n = (int)ids[n].n};
            n++;
        }
    }
    if (!s && n == 0) s = alloy_fail(ALLOY_STATUS_USAGE, "%s: no prompts", path);
    alloy_free(text);
    *ids_out = ids;
    *out = p;
    *n_out = n;
    return s;
}

static int moe_main(int argc, char **argv, cli_list *experts_);

int cmd_moe(int argc, char **argv) {
    cli_list experts = {0};
    int rc = moe_main(argc, argv, &experts);
    free(experts.items);
    return rc;
}

/* cmd_moe's body; the list cli_parse fills is the caller's to free. */
static int moe_main(int argc, char **argv, cli_list *experts_) {
    cli_list experts = {0};
    const char *base = NULL, *out = NULL, *router = NULL, *prompts = NULL;
    int top_k = 0, threads = 0;
    alloy_moe_options o = alloy_moe_defaults();
    cli_flag flags[] = {
        {"experts", CLI_LIST, &experts, false}, {"base", CLI_STR, &base, false},
        {"top-k", CLI_INT, &top_k, false},      {"out", CLI_STR, &out, false},
        {"router", CLI_STR, &router, false},    {"prompts", CLI_STR, &prompts, false},
        {"seed", CLI_U64, &o.seed, false},      {"aux-loss-coef", CLI_DBL, &o.aux_loss_coef, false},
        {"threads", CLI_INT, &threads, false},  {"router-l2", CLI_DBL, &o.router_l2, false},
        {"verbose", CLI_BOOL, &o.verbose, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("moe", argc, argv, flags, nf, help, NULL);
    *experts_ = experts;
    if (r) return r == 1 ? 0 : r;
    if (!experts.n || !out || !cli_find(flags, nf, "top-k")->seen)
        return cli_usage("moe", "--experts, --top-k and --out are required");
    if (experts.n < 2) return cli_usage("moe", "--experts: give at least 2 expert models (got %d)", experts.n);
    if (experts.n > ALLOY_MAX_EXPERTS) return cli_usage("moe", "--experts: at most %d models", ALLOY_MAX_EXPERTS);
    if (top_k < 1 || top_k > experts.n)
        return cli_usage("moe", "--top-k %d: must lie in [1, %d] (the number of experts)", top_k, experts.n);
    if (router && !alloy_moe_router_parse(router, &o.router))
        return cli_usage("moe", "--router must be random, hidden or classifier, not \"%s\"", router);
    bool from_prompts = o.router == ALLOY_MOE_ROUTER_HIDDEN || o.router == ALLOY_MOE_ROUTER_CLASSIFIER;
    if (prompts && !from_prompts) return cli_usage("moe", "--prompts applies to --router hidden or classifier only");
    if (!(o.router_l2 > 0.0 && o.router_l2 < 1e6)) return cli_usage("moe", "--router-l2 must be > 0");
    if (!(o.aux_loss_coef >= 0.0)) return cli_usage("moe", "--aux-loss-coef must be >= 0");
    if (threads < 0) return cli_usage("moe", "--threads must be >= 0");
    cli_set_threads(threads);
    o.top_k = top_k;

    int n_in = experts.n + (base ? 1 : 0);
    input *in = alloy_calloc((size_t)n_in, sizeof *in);
    alloy_model **ex = alloy_calloc((size_t)experts.n, sizeof *ex);
    const alloy_tokenizer *tok = NULL;
    alloy_tokenizer *own_tok = NULL;
    alloy_ids *ids = NULL;
    alloy_moe_prompt *plist = NULL;
    int n_prompts = 0;
    alloy_model *moe = NULL;
    char *tpath = NULL;
    alloy_status s = (!in || !ex) ? ALLOY_STATUS_NOMEM : ALLOY_STATUS_OK;
    // activations: none needed for a random router; the prompts' length for a hidden one
    int T = from_prompts ? 1 << 20 : 1;
    for (int i = 0; i < n_in && !s; i++) {
        in[i].flag = i < experts.n ? "--experts" : "--base";
        s = load_input(&in[i], i < experts.n ? experts.items[i] : base, T);
        if (!s && same_folder(in[i].dir, out))
            s = alloy_fail(ALLOY_STATUS_USAGE, "--out %s: is one of the inputs; write the MoE elsewhere", out);
        if (s && !strstr(alloy_last_error(), i < experts.n ? experts.items[i] : base))
            alloy_error_prefix("%s %s", in[i].flag, i < experts.n ? experts.items[i] : base);
        if (!s && i < experts.n) ex[i] = in[i].m;
    }
    if (!s) s = check_tokenizers(in, n_in);
    if (!s && from_prompts) {
        s = input_tokenizer(&in[0], &tok, &own_tok);
        if (!s && prompts) {
            s = read_prompts(prompts, tok, experts.n, &ids, &plist, &n_prompts);
            o.prompts = plist;
            o.n_prompts = n_prompts;
        } else if (!s) {
            alloy_ids nl = {0};
            if (alloy_tokenizer_encode(tok, "\n", 1, 0, &nl) == ALLOY_STATUS_OK && nl.n > 0) o.sample_start = nl.data[0];
            alloy_ids_free(&nl);
        }
    }
    if (!s) s = alloy_moe_build(&moe, ex, experts.n, base ? in[n_in - 1].m : NULL, &o);
    if (!s) s = alloy_model_save(moe, out);
    const input *tsrc = base ? &in[n_in - 1] : &in[0];
    if (!s && tsrc->tok_json) {
        tpath = alloy_path_join(out, "tokenizer.json");
        s = tpath ? alloy_write_file_atomic(tpath, tsrc->tok_json, tsrc->tok_size) : ALLOY_STATUS_NOMEM;
    }
    if (!s) {
        const alloy_config *c = &moe->config;
        printf("built a mixture of %d experts (%s, %d layers, d_ff %d, top-%d, %s router%s%s) -> %s: %zu parameters%s\n",
               c->n_experts, alloy_family_name(c->family), c->n_layer, c->d_ff, c->top_k,
               alloy_moe_router_name(o.router),
               from_prompts ? (prompts ? " from --prompts" : " from sampled prompts") : "",
               base ? ", shared layers from --base" : ", shared layers averaged", out, moe->num_params,
               tsrc->tok_json ? ", tokenizer.json copied" : "");
    }
    for (int i = 0; ids && i < n_prompts; i++) alloy_ids_free(&ids[i]);
    alloy_free(ids);
    alloy_free(plist);
    alloy_free(tpath);
    alloy_tokenizer_destroy(own_tok);
    alloy_model_destroy(moe);
    for (int i = 0; in && i < n_in; i++) {
        alloy_checkpoint_close(in[i].ck);
        alloy_model_destroy(in[i].m);
        alloy_free(in[i].tok_json);
    }
    alloy_free(in);
    alloy_free(ex);
    return s ? cli_fail("moe", s) : 0;
}
