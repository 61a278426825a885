/*
 * alloy/grow.h — growing a trained model into a larger one that starts where it left off.
 *
 * Depth: a new stack of layers, each a copy of one layer of the source (a "layer plan").
 *   Depth up-scaling (Kim et al. 2023, "SOLAR 10.7B: Scaling Large Language Models with Simple
 *   yet Effective Depth Up-Scaling") takes two copies of an n-layer model, drops the last m
 *   layers of the first and the first m layers of the second and stacks them: the plan
 *   0 .. n-m-1, m .. n-1, 2·(n − m) layers (SOLAR: n = 32, m = 8 -> 48). The grown model does
 *   not compute the source's function; continued pretraining (alloy train --init) recovers it.
 * Width: the MLP's hidden layer F -> F2 > F units in every layer, preserving the function
 *   (Chen et al. 2016, "Net2Net: Accelerating Learning via Knowledge Transfer", Net2WiderNet):
 *   units F .. F2-1 copy units g(j) drawn uniformly from 0 .. F-1 (seeded); a copied unit and
 *   its copies keep the unit's incoming weights (GPT-2: c_fc column and bias; Llama: gate_proj
 *   and up_proj rows, since silu(g)·u is computed unit by unit) and share its outgoing weights
 *   (c_proj row / down_proj column), each divided by the number of copies, so the sum into the
 *   residual stream is unchanged. Replicas receive equal gradients, so they stay equal in
 *   training unless something breaks the symmetry: `noise` > 0 adds N(0, (noise·rms)²) to the
 *   incoming weight matrices' entries of the new units (rms: of that source matrix; GPT-2's
 *   c_fc bias is copied as it is), as Net2Net suggests, and the function is then preserved
 *   only approximately.
 * Everything else (embeddings, positions, attention, norms, final norm, head) is copied bit for
 * bit. The result is an ordinary model: save it with alloy_model_save and train it.
 *
 *     alloy_model *src, *deep, *wide;
 *     alloy_model_load(&src, "runs/demo/run/checkpoints/step-00000450", 1, 0); // make demo's
 *     alloy_grow_depth_upscale(&deep, src, 1);              // its 4 layers -> 2·(4 − 1) = 6
 *     alloy_grow_ffn(&wide, deep, 2 * deep->config.d_ff, 1337, 0.0f);
 *     alloy_model_save(wide, "runs/grown");                 // then: alloy train --init runs/grown
 *     alloy_model_destroy(wide); alloy_model_destroy(deep); alloy_model_destroy(src);
 *
 * Every function only reads the source (several may grow one source at once, from several
 * threads) and gives a new model (alloy_model_destroy it) with the source's activation sizes
 * (max_B, max_T) and options; on failure *out is NULL and the message names the flag of
 * `alloy grow` that the argument stands for.
 */
#ifndef ALLOY_GROW_H
#define ALLOY_GROW_H

#include "alloy/base.h"
#include "alloy/model.h"

ALLOY_BEGIN_DECLS

/* Parses a layer plan "0-5,3-8" (comma-separated items, each a layer index or an ascending
 * inclusive range a-b) for a source of src_layers layers. *plan (alloy_free it) gets the
 * source layer of each new layer, *n_layers their count. USAGE for an empty item, a non-number,
 * a descending range, an index outside [0, src_layers) or more than 1024 layers. */
alloy_status alloy_grow_parse_layers(const char *spec, int src_layers, int **plan, int *n_layers);

/* A model whose layer i is a copy of src's layer layer_plan[i] (0 <= i < n_layers, n_layers
 * in [1, 1024]); everything outside the layers is copied. Tensors equal the source's bitwise.
 * USAGE for an empty plan or an index outside [0, src->config.n_layer). */
alloy_status alloy_grow_depth(alloy_model **out, const alloy_model *src, const int *layer_plan, int n_layers);

/* SOLAR's depth up-scaling: alloy_grow_depth with the plan 0 .. n-m-1, m .. n-1 (n the source's
 * layers), 2·(n − m) layers. USAGE unless 0 <= m < n (m = 0 stacks two whole copies). */
alloy_status alloy_grow_depth_upscale(alloy_model **out, const alloy_model *src, int m);

/* Net2WiderNet on every layer's MLP: d_ff F -> new_ff, with the copied units chosen from
 * `seed` (the same seed gives the same model; the choice does not depend on noise) and noise
 * >= 0 as above (0: the function is preserved up to float rounding). USAGE unless
 * new_ff > F (and <= 1048576), or for a negative or non-finite noise. */
alloy_status alloy_grow_ffn(alloy_model **out, const alloy_model *src, int new_ff, uint64_t seed, float noise);

ALLOY_END_DECLS
#endif /* ALLOY_GROW_H */
