/*
 * grow.c — `alloy grow`: a larger model from a trained one, to continue pretraining with
 * `alloy train --init`: deeper by a plan of source layers (SOLAR's depth up-scaling, or any
 * stacking) and/or a wider MLP that computes the same function (Net2WiderNet). The work is
 * alloy/grow.h's; this file reads the flags, loads, saves and reports.
 */
#include "cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: alloy grow --model DIR (--depth-upscale M | --layers PLAN) [--ffn-width F2] --out DIR\n"
    "       alloy grow --model DIR --ffn-width F2 [--seed S] [--noise X] --out DIR\n"
    "\n"
    "Writes a larger model, initialised from a trained one, as a checkpoint folder (config.json,\n"
    "model.safetensors and the source's tokenizer.json) for alloy train --init. Embeddings,\n"
    "positions, the final norm and the head are copied. Either family (GPT-2, Llama).\n"
    "\n"
    "  --model DIR          checkpoint folder or run folder (its latest checkpoint)\n"
    "  --out DIR            the checkpoint folder to write (created; files replaced atomically;\n"
    "                       not the source folder)\n"
    "  --depth-upscale M    depth up-scaling as in SOLAR 10.7B (Kim et al. 2023): two copies of\n"
    "                       the n layers, the first without its last M, the second without its\n"
    "                       first M, stacked: 2·(n − M) layers (n = 32, M = 8 -> 48; n = 4, M = 1\n"
    "                       -> 6); 0 <= M < n, deeper than the source only for M < n/2 (else a\n"
    "                       warning). The grown model must be trained again (continued pretraining).\n"
    "  --layers PLAN        any stacking: source layers by index and inclusive range, in order,\n"
    "                       e.g. 0-5,3-8 (layers 0..5, then 3..8: 12 layers)\n"
    "  --ffn-width F2       every layer's MLP widened from F to F2 > F hidden units, computing the\n"
    "                       same function (Net2WiderNet, Chen et al. 2016): new units copy randomly\n"
    "                       chosen units, whose outgoing weights the copies share (divided by the\n"
    "                       number of copies); applied after the depth change\n"
    "  --seed S             which units are copied (default 1337)\n"
    "  --noise X            adds N(0, (X·rms)²) to the copies' incoming weights (rms of each\n"
    "                       tensor), as Net2Net suggests, so that the copies can learn apart; with\n"
    "                       X > 0 the function is preserved only approximately (default 0: exactly,\n"
    "                       up to float rounding, but the copies stay equal in training)\n";

/* a and b name the same existing folder. */
static bool same_folder(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

/* The source's tokenizer.json (alloy_free *data), or *data NULL when it has none. */
static alloy_status read_tokenizer(const char *dir, char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    char *p = alloy_path_join(dir, "tokenizer.json");
    if (!p) return ALLOY_STATUS_NOMEM;
    alloy_status s = alloy_path_exists(p) ? alloy_file_read_all(p, data, size) : ALLOY_STATUS_OK;
    alloy_free(p);
    return s;
}

/* `alloy grow`: loads the source, grows it (depth first, then width), writes --out; returns the
 * exit status (2 for a usage error, 1 for any other failure, after one line on stderr). */
int cmd_grow(int argc, char **argv) {
    const char *model_dir = NULL, *out = NULL, *layers = NULL;
    int upscale = 0, ffn = 0;
    uint64_t seed = 1337;
    float noise = 0.0f;
    cli_flag flags[] = {
        {"model", CLI_STR, &model_dir, false},    {"out", CLI_STR, &out, false},
        {"depth-upscale", CLI_INT, &upscale, false}, {"layers", CLI_STR, &layers, false},
        {"ffn-width", CLI_INT, &ffn, false},      {"seed", CLI_U64, &seed, false},
        {"noise", CLI_FLOAT, &noise, false},
    };
    int nf = (int)(sizeof flags / sizeof flags[0]);
    int r = cli_parse("grow", argc, argv, flags, nf, help, NULL);
    if (r) return r == 1 ? 0 : r;
    bool by_upscale = cli_find(flags, nf, "depth-upscale")->seen, by_plan = cli_find(flags, nf, "layers")->seen;
    bool widen = cli_find(flags, nf, "ffn-width")->seen;
    if (!model_dir || !out) return cli_usage("grow", "--model and --out are required");
    if (by_upscale && by_plan) return cli_usage("grow", "give --depth-upscale or --layers, not both");
    if (!by_upscale && !by_plan && !widen) return cli_usage("grow", "give --depth-upscale, --layers or --ffn-width");
    if (!widen && (cli_find(flags, nf, "seed")->seen || cli_find(flags, nf, "noise")->seen))
        return cli_usage("grow", "--seed and --noise apply to --ffn-width only");

    char *dir = NULL, *tok = NULL, *tpath = NULL;
    size_t tok_size = 0;
    int *plan = NULL, n_plan = 0;
    alloy_model *src = NULL, *deep = NULL, *wide = NULL;
    alloy_status s = alloy_checkpoint_resolve(model_dir, &dir);
    if (!s && same_folder(dir, out))
        s = alloy_fail(ALLOY_STATUS_USAGE, "--out %s: is the source checkpoint; write the grown model elsewhere", out);
    if (!s) s = alloy_model_load(&src, dir, 1, 1); // activations for one token: only weights are written
    if (!s) s = read_tokenizer(dir, &tok, &tok_size);
    if (!s && by_plan) s = alloy_grow_parse_layers(layers, src->config.n_layer, &plan, &n_plan);
    if (!s && by_plan) s = alloy_grow_depth(&deep, src, plan, n_plan);
    if (!s && by_upscale) s = alloy_grow_depth_upscale(&deep, src, upscale);
    if (!s && widen) s = alloy_grow_ffn(&wide, deep ? deep : src, ffn, seed, noise);
    const alloy_model *grown = wide ? wide : deep;
    if (!s) s = alloy_model_save(grown, out);
    if (!s && tok) {
        tpath = alloy_path_join(out, "tokenizer.json");
        s = tpath ? alloy_write_file_atomic(tpath, tok, tok_size) : ALLOY_STATUS_NOMEM;
    }
    if (!s && deep && deep->config.n_layer <= src->config.n_layer) // a deepening that deepens nothing
        fprintf(stderr, "alloy grow: warning: the grown model has %d layers, the source %d: %s\n", deep->config.n_layer,
                src->config.n_layer,
                by_upscale ? "--depth-upscale M gives 2·(n − M) layers, more than n only for M < n/2"
                           : "the --layers plan adds no layer");
    if (!s) {
        const alloy_config *a = &src->config, *b = &grown->config;
        char how[160] = "";
        if (by_upscale)
            snprintf(how, sizeof how, ", layers 0-%d,%d-%d (depth up-scaling, m = %d)", a->n_layer - upscale - 1, upscale,
                     a->n_layer - 1, upscale);
        else if (by_plan)
            snprintf(how, sizeof how, ", layers %.100s", layers);
        char width[96] = "";
        if (widen) snprintf(width, sizeof width, " (Net2WiderNet, seed %llu, noise %g)", (unsigned long long)seed, (double)noise);
        printf("grew %s (%s, %d layers, d_ff %d, %zu parameters) -> %s: %d layers%s, d_ff %d%s, %zu parameters%s\n", dir,
               alloy_family_name(a->family), a->n_layer, a->d_ff, src->num_params, out, b->n_layer, how, b->d_ff, width,
               grown->num_params, tok ? ", tokenizer.json copied" : "");
    }
    alloy_free(tpath);
    alloy_free(tok);
    alloy_free(plan);
    alloy_free(dir);
    alloy_model_destroy(wide);
    alloy_model_destroy(deep);
    alloy_model_destroy(src);
    return s ? cli_fail("grow", s) : 0;
}
