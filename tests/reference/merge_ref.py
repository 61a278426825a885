#!/usr/bin/python3
"""merge_ref.py — an independent numpy reference of weight merges, for tests/test_merge.c.

Written from the papers and from mergekit's description of its recipes and methods, not from
alloy's C code:
  linear           Σ wᵢθᵢ (/ Σ wᵢ when normalize, default true)           (Wortsman et al. 2022)
  slerp            on the flattened tensors, from base (t=0) to the other (t=1); directions
                   with norm > 1e-8 normalised; |cos| > 0.9995 falls back to lerp   (mergekit)
  task_arithmetic  base + λ Σ wᵢ δᵢ, δᵢ = θᵢ − base (in float32)           (Ilharco et al. 2023)
  ties             δᵢ trimmed to its top int(density·n) by |δᵢ| (stable order: lower index first
                   among equals), elected sign = sign of Σ wᵢδᵢ (+ at 0), mean over the entries
                   whose wᵢδᵢ has that sign weighted by wᵢ (normalize, default true), × λ
                                                                          (Yadav et al. 2023)
  dare_*           δᵢ entry kept with probability density (xoshiro256** uniform < density),
                   kept entries / density (rescale, default true), then summed (dare_linear) or
                   TIES-elected (dare_ties); normalize default false        (Yu et al. 2023)
  passthrough      slices of layers stacked and renumbered, optional per-tensor scale
Recipes (mergekit's config.py rules): a setting is a number, a gradient list interpolated at
t = layer/(layers in slice − 1) (1 when the slice has one layer; 0 for tensors outside layers),
or a list of {filter, value} of which the first with filter ⊂ tensor name (or no filter) wins;
per-model settings look at the source, then the slice, then the top level; models: becomes one
slice of every layer, with the base appended when the method needs it and it is not listed.
Embeddings come from the first slice's sources, the final norm and head from the last one's.

DARE's masks: one generator per output tensor, alloy_rng_seed(fnv64(fnv64(FNV_INIT, name),
seed as 8 little-endian bytes)) — splitmix64 seeding of xoshiro256** as include/alloy/base.h
documents — drawn input by input (non-base sources in recipe order, skipping density ≥ 1),
entry by entry: keep when (u64 >> 11)·2⁻⁵³ < density.

    /usr/bin/python3 tests/reference/merge_ref.py RECIPE.yaml OUT.safetensors

writes the merged tensors (F32) with "__metadata__": {"n_layer": "<layers of the output>"}.
"""
import json
import os
import re
import struct
import sys

import numpy as np
import yaml

F32, F64 = np.float32, np.float64
MASK64 = (1 << 64) - 1


# ---- safetensors -------------------------------------------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = data[b:e]
        shape = info["shape"]
        if info["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(F32)
        elif info["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(F32)
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(F32)
        else:
            raise SystemExit(f"{path}: dtype {info['dtype']}")
        out[name] = a.reshape(shape)
    return out


def write_safetensors(path, tensors, meta):
    header = {"__metadata__": meta}
    off = 0
    blobs = []
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def load_model(folder):
    """config dict and {canonical name: float32 array} in file order."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        files = [single]
    else:
        with open(os.path.join(folder, "model.safetensors.index.json")) as f:
            wm = json.load(f)["weight_map"]
        files = []
        for v in wm.values():
            p = os.path.join(folder, v)
            if p not in files:
                files.append(p)
    gpt2 = cfg.get("model_type") == "gpt2"
    tensors = {}
    for p in files:
        for name, a in read_safetensors(p).items():
            if gpt2 and (name.endswith(".attn.bias") or name.endswith(".attn.masked_bias") or name == "lm_head.weight"):
                continue
            if not gpt2 and name.endswith(".rotary_emb.inv_freq"):
                continue
            if gpt2 and not name.startswith("transformer."):
                name = "transformer." + name
            tensors[name] = a
    n_layer = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    return cfg, tensors, n_layer


LAYER_RE = re.compile(r"(^|\.)(h|layers)\.(\d+)\.")


def split_layer(name):
    """(prefix up to and including 'layers.', layer, rest) or None."""
    m = LAYER_RE.search(name)
    if not m:
        return None
    return name[:m.start(3)], int(m.group(3)), name[m.end(3) + 1:]


# ---- settings (mergekit's evaluate_setting) ---------------------------------------------------

def evaluate(setting, tensor, t):
    if isinstance(setting, (bool, int, float)):
        return float(setting)
    if isinstance(setting, dict):
        setting = [setting]
    if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        flt = cond.get("filter")
        if flt is None or flt == "*" or flt in tensor:
            return evaluate(cond["value"], tensor, t)
    return None


def parameter(recipe, slice_def, source_def, name, tensor, t):
    levels = []
    if source_def is not None:
        levels.append(source_def.get("parameters") or {})
    levels.append(slice_def.get("parameters") or {})
    levels.append(recipe.get("parameters") or {})
    for lv in levels:
        if name in lv:
            v = evaluate(lv[name], tensor, t)
            if v is not None:
                return v
    return None


# ---- DARE's generator (include/alloy/base.h: xoshiro256** seeded by splitmix64) ---------------

def fnv64(h, data):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


class Rng:
    def __init__(self, seed):
        x = seed
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    def uniforms(self, n):
        s0, s1, s2, s3 = self.s
        out = np.empty(n, dtype=F64)
        for i in range(n):
            r = (((s1 * 5) & MASK64) << 7 | ((s1 * 5) & MASK64) >> 57) & MASK64
            r = (r * 9) & MASK64
            t = (s1 << 17) & MASK64
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = ((s3 << 45) | (s3 >> 19)) & MASK64
            out[i] = (r >> 11) * 2.0 ** -53
        self.s = [s0, s1, s2, s3]
        return out


# ---- methods -----------------------------------------------------------------------------------

def slerp(t, a, b):
    a64, b64 = a.astype(F64).ravel(), b.astype(F64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    ua = a64 / na if na > 1e-8 else a64
    ub = b64 / nb if nb > 1e-8 else b64
    dot = float(np.sum(ua * ub))
    if abs(dot) > 0.9995:
        res = (1 - t) * a64 + t * b64
    else:
        th = np.arccos(dot)
        res = np.sin(th * (1 - t)) / np.sin(th) * a64 + np.sin(th * t) / np.sin(th) * b64
    return res.reshape(a.shape)


def delta_merge(method, base, xs, weights, densities, opts, rng):
    deltas = []
    for x, d in zip(xs, densities):
        delta = (x.astype(F32) - base.astype(F32)).ravel()  # the task vector in fp32
        keep = np.ones(delta.size, dtype=bool)
        if method == "ties" and d < 1:
            k = int(d * delta.size)
            order = np.argsort(-np.abs(delta), kind="stable")
            keep[:] = False
            keep[order[:k]] = True
        dd = delta.astype(F64)
        if method.startswith("dare") and d < 1:
            keep = rng.uniforms(delta.size) < d
            if opts["rescale"]:
                dd = dd / d
        deltas.append(np.where(keep, dd, 0.0))
    w = np.array(weights, dtype=F64)[:, None]
    wd = np.stack(deltas) * w
    if method in ("ties", "dare_ties"):
        elected = np.where(wd.sum(axis=0) >= 0, 1.0, -1.0)
        agree = np.sign(wd) == elected
        mixed = (wd * agree).sum(axis=0)
        div = (w * agree).sum(axis=0)
        div[div == 0] = 1.0
    else:
        mixed = wd.sum(axis=0)
        div = float(w.sum())
        if abs(div) < 1e-8:
            div = 1.0
    if opts["normalize"]:
        mixed = mixed / div
    mixed = mixed * opts["lambda"]
    return (base.astype(F64).ravel() + mixed).reshape(base.shape)


def main():
    recipe_path, out_path = sys.argv[1], sys.argv[2]
    with open(recipe_path) as f:
        recipe = yaml.safe_load(f)
    method = recipe["merge_method"]
    base_name = recipe.get("base_model")
    seed = int(recipe.get("seed", 0))
    needs_base = method not in ("linear", "passthrough")
    models = {}

    def model(name):
        if name not in models:
            models[name] = load_model(name)
        return models[name]

    # slices with their sources: (model name, begin, end, source definition or None)
    if "models" in recipe:
        srcs = [(m["model"], m) for m in recipe["models"]]
        if needs_base and base_name not in [s[0] for s in srcs]:
            srcs.append((base_name, None))
        slices = [({}, [(name, 0, model(name)[2], d) for name, d in srcs], base_name)]
    else:
        slices = []
        for sl in recipe["slices"]:
            src = [(s["model"], s["layer_range"][0], s["layer_range"][1], s) for s in sl["sources"]]
            slices.append((sl, src, sl.get("base_model", base_name)))

    first = model(slices[0][1][0][0])
    ref_tensors = first[1]
    out = []

    def merge(out_name, slice_index, in_names, t):
        sl_def, srcs, base = slices[slice_index]
        xs = [model(s[0])[1][n] for s, n in zip(srcs, in_names)]

        def g(p):  # a parameter of the whole merge: looked up by the output's name
            return parameter(recipe, sl_def, None, p, out_name, t)

        def per(j, p):  # a parameter of source j: looked up by the input's name
            return parameter(recipe, sl_def, srcs[j][3], p, in_names[j], t)

        if method == "linear":
            w = [per(j, "weight") for j in range(len(xs))]
            normalize = g("normalize")
            normalize = True if normalize is None else bool(normalize)
            acc = sum(wi * x.astype(F64) for wi, x in zip(w, xs))
            return acc / sum(w) if normalize else acc
        if method == "passthrough":
            scale = per(0, "scale")
            return xs[0] if scale is None else xs[0].astype(F32) * F32(scale)
        bi = [s[0] for s in srcs].index(base)
        if method == "slerp":
            return slerp(g("t"), xs[bi], xs[1 - bi])
        task = [j for j in range(len(xs)) if j != bi]
        if not task:
            return xs[bi]
        normalize = g("normalize")
        opts = {
            "normalize": (method == "ties") if normalize is None else bool(normalize),
            "rescale": True if g("rescale") is None else bool(g("rescale")),
            "lambda": 1.0 if g("lambda") is None else g("lambda"),
        }
        dens = [per(j, "density") for j in task]
        dens = [1.0 if d is None else d for d in dens]
        key = fnv64(fnv64(0xCBF29CE484222325, out_name.encode()), seed.to_bytes(8, "little"))
        return delta_merge(method, xs[bi], [xs[j] for j in task], [per(j, "weight") for j in task], dens, opts, Rng(key))

    def emit(out_name, slice_index, in_names, t):
        out.append((out_name, np.asarray(merge(out_name, slice_index, in_names, t), dtype=F64).astype(F32)))

    plain = [n for n in ref_tensors if split_layer(n) is None]
    layer0 = [n for n in ref_tensors if split_layer(n) is not None and split_layer(n)[1] == 0]
    embeds = [n for n in plain if "embed" in n or "wte" in n or "wpe" in n]
    for n in embeds:
        emit(n, 0, [n] * len(slices[0][1]), 0.0)
    out_layer = 0
    for si, (_, srcs, _) in enumerate(slices):
        length = srcs[0][2] - srcs[0][1]
        for k in range(length):
            t = k / (length - 1) if length > 1 else 1.0
            for n in layer0:
                prefix, _, rest = split_layer(n)
                emit(f"{prefix}{out_layer}.{rest}", si, [f"{prefix}{s[1] + k}.{rest}" for s in srcs], t)
            out_layer += 1
    for n in plain:
        if n not in embeds:
            emit(n, len(slices) - 1, [n] * len(slices[-1][1]), 0.0)
    write_safetensors(out_path, out, {"n_layer": str(out_layer)})


if __name__ == "__main__":
    main()
