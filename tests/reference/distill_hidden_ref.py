#!/usr/bin/env python3
"""
distill_hidden_ref.py — the hidden-state matching term of distillation and its gradients by
PyTorch autograd in float64, for tests/test_distill.c, written from its definition:
    loss = weight · (1/N) · Σ_r ‖P·hs_r − ht_r‖²

    /usr/bin/python3 tests/reference/distill_hidden_ref.py IN.safetensors OUT.safetensors

IN: "hs" (N, Cs) student hidden states, "ht" (N, Ct) teacher's, "proj" (Ct, Cs), "params" [weight].
OUT: "loss" (1), "dhs" (N, Cs), "dproj" (Ct, Cs).
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
        assert h["dtype"] == "F32", h
        out[name] = np.frombuffer(body[b:e], dtype="<f4").reshape(h["shape"]).astype(np.float64)
    return out


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    t = read(sys.argv[1])
    hs = torch.tensor(t["hs"], requires_grad=True)
    P = torch.tensor(t["proj"], requires_grad=True)
    ht = torch.tensor(t["ht"])
    w = float(t["params"][0])
    loss = w * ((hs @ P.T - ht) ** 2).sum(dim=1).mean()
    loss.backward()
    write(sys.argv[2], {"loss": loss.detach().numpy().reshape(1), "dhs": hs.grad.numpy(), "dproj": P.grad.numpy()})


if __name__ == "__main__":
    main()
