#!/usr/bin/env python3
"""
combiner_ref.py — the learned ensemble combiner by PyTorch autograd in float64, for
tests/test_combiner.c, written from its definition (not from alloy's code):
    g = softmax(W · concat(h_1, ..., h_n) + b)          per row, over the n members
    p_mix(y) = Σ_i g_i · softmax(z_i)(y)
    loss = mean over rows of −log p_mix(target)

    /usr/bin/python3 tests/reference/combiner_ref.py IN.safetensors OUT.safetensors

IN: "hidden.i" (N, C_i) and "logits.i" (N, V) for each member i, "targets" (N) int32,
"weight" (n, ΣC_i), "bias" (n). OUT: "gates" (N, n), "logp" (N, V) the mixture's
log-probabilities, "loss" (1), "dweight" (n, ΣC_i) and "dbias" (n), gradients of the loss.
"""
import json
import struct
import sys

import numpy as np
import torch


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body, out = data[8 + n:], {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4"}[h["dtype"]]
        out[name] = np.frombuffer(body[b:e], dtype=dt).reshape(h["shape"])
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


def main():
    t = read(sys.argv[1])
    n = t["bias"].shape[0]
    f64 = lambda a: torch.tensor(np.array(a, dtype=np.float64))
    hidden = torch.cat([f64(t["hidden.%d" % i]) for i in range(n)], dim=1)
    logits = [f64(t["logits.%d" % i]) for i in range(n)]
    y = torch.tensor(np.array(t["targets"], dtype=np.int64))
    W = f64(t["weight"]).requires_grad_(True)
    b = f64(t["bias"]).requires_grad_(True)
    g = torch.softmax(hidden @ W.T + b, dim=1)
    mix = sum(g[:, i:i + 1] * torch.softmax(logits[i], dim=1) for i in range(n))
    logp = torch.log(mix)
    loss = -logp[torch.arange(len(y)), y].mean()
    loss.backward()
    write(sys.argv[2], {"gates": g.detach().numpy(), "logp": logp.detach().numpy(),
                        "loss": loss.detach().numpy().reshape(1), "dweight": W.grad.numpy(),
                        "dbias": b.grad.numpy()})


if __name__ == "__main__":
    main()
