#!/usr/bin/env python3
"""grow_ref.py — the PyTorch oracle of tests/test_grow.c: grown models built in torch.

Reads a checkpoint folder with tests/reference/twin.py (the PyTorch twin of alloy's GPT-2 and
Llama models, strict about names and shapes) and grows it in torch by its own reading of the
recipes, without alloy's code:

  --upscale M    depth up-scaling as SOLAR 10.7B describes it (Kim et al. 2023, section 2): two
                 copies of the n-layer base model; the final M layers are removed from the
                 original and the initial M layers from the duplicate; the two are concatenated
                 into 2·(n − M) layers. Embeddings, final norm and head are the base model's.
  --layers SPEC  any stacking: "0-5,3-8" is layers 0..5 then 3..8 of the source (inclusive).

and writes, for the int32 tokens (B, T) in --tokens, a safetensors file --out with

    source_logits  (B, T, V)  the source model's logits
    grown_logits   (B, T, V)  the grown model's (with --upscale or --layers)
    folder_<i>     (B, T, V)  the logits of the i-th folder of --folders, loaded as it is
                              (e.g. a model that alloy widened: its logits should equal the
                              source's)

    /usr/bin/python3 tests/reference/grow_ref.py --source DIR --tokens tokens.safetensors \
        --out ref.safetensors [--upscale M | --layers SPEC] [--folders DIR ...]

Exit status 0 on success, 1 with a message on stderr. float32, one thread, deterministic.
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402  (exits with a message when torch or numpy is missing)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def layer_list(model):
    """The model's nn.ModuleList of decoder layers and a setter for a new one."""
    if isinstance(model, twin.GPT2LMHeadModel):
        def put(layers):
            model.transformer.h = layers
        return model.transformer.h, put

    def put(layers):
        model.model.layers = layers
    return model.model.layers, put


def parse_layers(spec, n):
    plan = []
    for item in spec.split(","):
        a, _, b = item.strip().partition("-")
        a = int(a)
        b = int(b) if b else a
        if not (0 <= a <= b < n):
            twin.fail("--layers %r: bad item %r for %d layers" % (spec, item, n))
        plan.extend(range(a, b + 1))
    return plan


def grow(model, upscale, layers_spec):
    """A new model: the source's embeddings, norm and head, and the decoder layers per the recipe."""
    grown = copy.deepcopy(model)
    base, put = layer_list(grown)
    n = len(base)
    if upscale is not None:
        m = upscale
        if not 0 <= m < n:
            twin.fail("--upscale %d: needs 0 <= m < %d" % (m, n))
        original = [copy.deepcopy(layer) for layer in base]
        duplicate = [copy.deepcopy(layer) for layer in base]
        stacked = original[: n - m] + duplicate[m:]
    else:
        stacked = [copy.deepcopy(base[i]) for i in parse_layers(layers_spec, n)]
    put(nn.ModuleList(stacked))
    return grown


def logits_of(model, tokens):
    with torch.no_grad():
        _, logits = model(tokens)
    return logits.float()


def main():
    ap = argparse.ArgumentParser(description="grown models in PyTorch, for tests/test_grow.c")
    ap.add_argument("--source", required=True, help="checkpoint folder of the source model")
    ap.add_argument("--tokens", required=True, help="safetensors with int32 tokens (B, T)")
    ap.add_argument("--out", required=True, help="safetensors of logits to write")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--upscale", type=int, help="SOLAR depth up-scaling: layers dropped from each copy")
    how.add_argument("--layers", help="explicit layer plan, e.g. 0-5,3-8")
    ap.add_argument("--folders", nargs="*", default=[], help="more checkpoint folders to run as they are")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)

    inputs, _ = twin.st_read(args.tokens)
    if "tokens" not in inputs or inputs["tokens"].dim() != 2:
        twin.fail("%s: needs a 2-D tensor 'tokens'" % args.tokens)
    tokens = inputs["tokens"].long()
    source = twin.build_model(args.source)
    out = {"source_logits": logits_of(source, tokens)}
    if args.upscale is not None or args.layers is not None:
        out["grown_logits"] = logits_of(grow(source, args.upscale, args.layers), tokens)
    for i, folder in enumerate(args.folders):
        out["folder_%d" % i] = logits_of(twin.build_model(folder), tokens)
    twin.st_write(args.out, out, {"producer": "tests/reference/grow_ref.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
