#!/usr/bin/env python3
"""
ensemble_ref.py — the ensemble's log-probabilities in float64 from its members' logits, for
tests/test_ensemble.c, written from the definitions (not from alloy's code):
  probs:  log Σᵢ wᵢ softmax(zᵢ)        logits: log softmax(Σᵢ wᵢ zᵢ)     (w normalised to sum 1)

    /usr/bin/python3 tests/reference/ensemble_ref.py IN.safetensors OUT.safetensors

IN holds "logits.0" ... "logits.{n-1}" (f32, (N, V)) and "weights" (f32, (n)); OUT gets
"probs" and "logits" ((N, V), computed in float64, stored as F32).
"""
import json
import struct
import sys

import numpy as np


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        assert h["dtype"] == "F32", h
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(body[b:e], dtype="<f4").reshape(h["shape"]).astype(np.float64)
    return out


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()  # computed in float64, stored as F32
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def main():
    t = read(sys.argv[1])
    w = t["weights"] / t["weights"].sum()
    zs = [t["logits.%d" % i] for i in range(len(w))]
    mix = sum(wi * np.exp(log_softmax(z)) for wi, z in zip(w, zs))
    poe = log_softmax(sum(wi * z for wi, z in zip(w, zs)))
    write(sys.argv[2], {"probs": np.log(mix), "logits": poe})


if __name__ == "__main__":
    main()
