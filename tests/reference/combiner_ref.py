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
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read, write  # noqa: E402


def main():
    t, _ = read(sys.argv[1])
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
    out = {"gates": g.detach().numpy(), "logp": logp.detach().numpy(), "loss": loss.detach().numpy().reshape(1),
           "dweight": W.grad.numpy(), "dbias": b.grad.numpy()}
    write(sys.argv[2], {k: v.astype(np.float32) for k, v in out.items()})  # computed in float64, stored as F32


if __name__ == "__main__":
    main()
