#!/usr/bin/env python3
"""
router_fit_ref.py — the classifier router's objective and its minimum, by PyTorch in float64,
for tests/test_moe.c, written from its definition in alloy/moe.h (not from alloy's code):
    J(W) = Σ_i w_i · (−log softmax(W x_i)_{y_i}) + (l2/2)·‖W‖²,   w_i = 1 / (E · n_{y_i})

    /usr/bin/python3 tests/reference/router_fit_ref.py IN.safetensors OUT.safetensors

IN: "x" (N, C), "y" (N) int32, "w" (E, C) a point, "l2" (1). OUT: "value" (1) and "grad"
(E, C): J and ∇J at w by autograd; "w_opt" (E, C): the minimiser, by L-BFGS from zero to a
gradient norm below 1e-8 (W within 1e-8 / l2 of it).
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
    x = torch.tensor(np.array(t["x"], dtype=np.float64))
    y = torch.tensor(np.array(t["y"], dtype=np.int64))
    l2 = float(t["l2"][0])
    E = t["w"].shape[0]
    counts = torch.bincount(y, minlength=E).double()
    wi = 1.0 / (E * counts[y])

    def J(W):
        logp = torch.log_softmax(x @ W.T, dim=1)
        return -(wi * logp[torch.arange(len(y)), y]).sum() + 0.5 * l2 * (W * W).sum()

    W = torch.tensor(np.array(t["w"], dtype=np.float64), requires_grad=True)
    value = J(W)
    value.backward()
    Wopt = torch.zeros_like(W, requires_grad=True)
    opt = torch.optim.LBFGS([Wopt], lr=1, max_iter=5000, tolerance_grad=1e-12, tolerance_change=0,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = J(Wopt)
        v.backward()
        return v

    for _ in range(5):
        opt.step(closure)
    closure()
    assert Wopt.grad.norm() < 1e-8, "L-BFGS did not converge: |grad| %g" % float(Wopt.grad.norm())
    write(sys.argv[2], {"value": value.detach().numpy().reshape(1), "grad": W.grad.numpy(),
                        "w_opt": Wopt.detach().numpy()})


if __name__ == "__main__":
    main()
