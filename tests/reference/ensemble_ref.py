#!/usr/bin/env python3
"""
ensemble_ref.py — the ensemble's log-probabilities in float64 from its members' logits, for
tests/test_ensemble.c, written from the definitions (not from alloy's code):
  probs:  log Σᵢ wᵢ softmax(zᵢ)        logits: log softmax(Σᵢ wᵢ zᵢ)     (w normalised to sum 1)

    /usr/bin/python3 tests/reference/ensemble_ref.py IN.safetensors OUT.safetensors

IN holds "logits.0" ... "logits.{n-1}" (f32, (N, V)) and "weights" (f32, (n)); OUT gets
"probs" and "logits" ((N, V), computed in float64, stored as F32).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read, write  # noqa: E402


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def main():
    t = {k: v.astype(np.float64) for k, v in read(sys.argv[1])[0].items()}
    w = t["weights"] / t["weights"].sum()
    zs = [t["logits.%d" % i] for i in range(len(w))]
    mix = sum(wi * np.exp(log_softmax(z)) for wi, z in zip(w, zs))
    poe = log_softmax(sum(wi * z for wi, z in zip(w, zs)))
    write(sys.argv[2], {"probs": np.log(mix).astype(np.float32), "logits": poe.astype(np.float32)})  # float64 stored as F32


if __name__ == "__main__":
    main()
