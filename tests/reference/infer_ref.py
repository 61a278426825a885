#!/usr/bin/env python3
"""infer_ref.py — the sampling chain of alloy/infer.h in numpy, the oracle of tests/test_infer.c.

    infer_ref.py CASES.json OUT.json

CASES.json: {"cases": [{"name", "logits": [V floats], "history": [ids], "params": {temperature,
top_k, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty, repeat_last_n,
logit_bias: [[id, bias], ...], n_vocab}}]}. OUT.json: {"results": [{"ids": [...], "probs":
[...]} or {"error": "..."}]}, one per case: the candidates left before the draw, in the chain's
order, with their probabilities.

Written from the documentation in include/alloy/infer.h, not from sampler.c. The steps that
alloy does in fp32 (the bias, the penalties, the comparisons of logits) are done here in
float32 as well, so that both sides see the same logits bit for bit; probabilities are float64.
"""
import json
import math
import sys
from collections import Counter

import numpy as np

f32 = np.float32


def softmax64(logits, temp):
    x = np.array([float(v) for v in logits], dtype=np.float64)
    mx = x.max()
    e = np.exp((x - mx) / float(f32(temp)))
    return e / e.sum()


def chain(logits, history, p):
    V = len(logits)
    nv = p["n_vocab"] or V
    l = np.array(logits[:nv], dtype=np.float32)
    l[np.isnan(l)] = -np.inf
    # 1. logit bias
    for tok, bias in p["logit_bias"]:
        if tok < nv:
            l[tok] = f32(l[tok] + f32(bias))
    # 2. penalties over the last repeat_last_n tokens of the history
    n = p["repeat_last_n"]
    rp, fp, pp = f32(p["repeat_penalty"]), f32(p["frequency_penalty"]), f32(p["presence_penalty"])
    if n != 0 and history and not (rp == 1 and fp == 0 and pp == 0):
        window = history if n < 0 else history[-n:]
        for tok, count in Counter(window).items():
            if tok >= nv:
                continue
            x = l[tok]
            x = f32(x / rp) if x > 0 else f32(x * rp)
            x = f32(x - f32(f32(f32(count) * fp) + pp))
            l[tok] = x
    # 3. greedy
    if not (p["temperature"] > 0):
        best = int(np.argmax(l))  # the first of equal maxima
        if l[best] == -np.inf:
            return {"error": "every token is banned"}
        return {"ids": [best], "probs": [1.0]}
    # 4. drop -inf
    cand = [(l[i], i) for i in range(nv) if l[i] > -np.inf]
    if not cand:
        return {"error": "every token is banned"}
    key = lambda c: (-float(c[0]), c[1])
    is_sorted = False
    # 5. top-k
    k = p["top_k"]
    if 0 < k < len(cand):
        cand = sorted(cand, key=key)[:k]
        is_sorted = True
    # 6. top-p at temperature 1
    if p["top_p"] < 1:
        if not is_sorted:
            cand = sorted(cand, key=key)
            is_sorted = True
        probs = softmax64([c[0] for c in cand], 1.0)
        cum, keep = 0.0, len(cand)
        for i, q in enumerate(probs):
            cum += q
            if cum >= float(f32(p["top_p"])):
                keep = i + 1
                break
        cand = cand[:keep]
    # 7. min-p at temperature 1
    if p["min_p"] > 0:
        mx = max(float(c[0]) for c in cand)
        threshold = mx + math.log(float(f32(p["min_p"])))
        cand = [c for c in cand if float(c[0]) >= threshold]
    # 8. temperature
    probs = softmax64([c[0] for c in cand], p["temperature"])
    return {"ids": [int(c[1]) for c in cand], "probs": [float(q) for q in probs]}


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)["cases"]
    results = [chain(c["logits"], c["history"], c["params"]) for c in cases]
    with open(sys.argv[2], "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
