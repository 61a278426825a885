/*
 * merge.c — `alloy merge`: several models of one family into one, by a mergekit-style YAML
 * recipe (alloy/fuse.h does the work; docs/fusion.md describes the recipes).
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char merge_help[] =
    "usage: alloy merge --config RECIPE.yaml --out DIR [--threads N] [--quiet]\n"
    "\n"
    "Merges checkpoint folders (or Hugging Face folders) of one family into a new checkpoint\n"
    "folder DIR: model.safetensors (F32), config.json and tokenizer.json. The recipe is the YAML\n"
    "mergekit reads:\n"
    "  merge_method: linear | slerp | task_arithmetic | ties | dare_linear | dare_ties | passthrough\n"
    "  base_model: PATH\n"
    "  models:                       # or slices: [{sources: [{model, layer_range: [a, b]}]}]\n"
    "    - model: PATH\n"
    "      parameters: {weight: 0.5, density: 0.7}\n"
    "  parameters: {t: [0, 0.5, 1], normalize: true, lambda: 1.0}\n"
    "  dtype: float32                # bfloat16, float16 accepted; alloy computes in fp32\n"
    "  tokenizer_source: base        # or a model; needed when the tokenizers differ\n"
    "  seed: 0                       # DARE's random masks\n"
    "A parameter may be a gradient over the layers ([0, 0.5, 1]) or a list of\n"
    "{filter: NAME_PART, value: V} alternatives. Models are streamed in chunks: memory holds\n"
    "a few 4 MB buffers, not the models. See docs/fusion.md.\n"
    "\n"
    "  --config FILE   the recipe\n"
    "  --out DIR       the folder to write (created; files replaced atomically)\n"
    "  --threads N     OpenMP threads (default: all cores)\n"
    "  --quiet         no progress line\n";

int cmd_merge(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    int threads = 0;
    bool quiet = false;
    cli_flag flags[] = {{"config", CLI_STR, &config, false},
                        {"out", CLI_STR, &out, false},
                        {"threads", CLI_INT, &threads, false},
                        {"quiet", CLI_BOOL, &quiet, false}};
    int r = cli_parse("merge", argc, argv, flags, (int)(sizeof flags / sizeof flags[0]), merge_help, NULL);
    if (r) return r == 1 ? 0 : r;
    if (!config || !out) return cli_usage("merge", "--config and --out are required");
    if (threads < 0) return cli_usage("merge", "--threads must be at least 0");
    cli_set_threads(threads);
    alloy_merge_recipe *recipe = NULL;
    alloy_status s = alloy_merge_recipe_load(&recipe, config);
    alloy_merge_report rep;
    alloy_progress prog;
    alloy_progress_init(&prog, stderr, 1 << 30); // only on a terminal: logs get the summary alone
    if (!s) s = alloy_merge_run(recipe, out, quiet || !prog.tty ? NULL : &prog, &rep);
    if (!s) {
        printf("merged %d model%s by %s: %d tensors, %d layers, %zu parameters -> %s (%.1f MB in %.1fs)%s%s\n",
               rep.n_models, rep.n_models == 1 ? "" : "s", alloy_merge_method_name(recipe->method), rep.n_tensors,
               rep.n_layer, rep.n_params, out, (double)rep.output_bytes / 1e6, rep.seconds,
               rep.tokenizer_from[0] ? ", tokenizer from " : "", rep.tokenizer_from);
        printf("peak RSS %.1f MB against %.1f MB of input models (%.0f%%); working buffers %.1f MB\n",
               (double)rep.peak_rss / 1e6, (double)rep.input_bytes / 1e6,
               rep.input_bytes ? 100.0 * (double)rep.peak_rss / (double)rep.input_bytes : 0.0, (double)rep.buffer_bytes / 1e6);
    }
    alloy_merge_recipe_free(recipe);
    return s ? cli_fail("merge", s) : 0;
}
