#!/usr/bin/env python3
"""
distill_hidden_ref.py — the hidden-state matching term of distillation and its gradients by
PyTorch autograd in float64, for tests/test_distill.c, written from its definition:
    loss = weight · (1/N) · Σ_r ‖P·hs_r − ht_r‖²

    /usr/bin/python3 tests/reference/distill_hidden_ref.py IN.safetensors OUT.safetensors

IN: "hs" (N, Cs) student hidden states, "ht" (N, Ct) teacher's, "proj" (Ct, Cs), "params" [weight].
OUT: "loss" (1), "dhs" (N, Cs), "dproj" (Ct, Cs).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read, write  # noqa: E402


def main():
    t = {k: v.astype(np.float64) for k, v in read(sys.argv[1])[0].items()}
    hs = torch.tensor(t["hs"], requires_grad=True)
    P = torch.tensor(t["proj"], requires_grad=True)
    ht = torch.tensor(t["ht"])
    w = float(t["params"][0])
    loss = w * ((hs @ P.T - ht) ** 2).sum(dim=1).mean()
    loss.backward()
    out = {"loss": loss.detach().numpy().reshape(1), "dhs": hs.grad.numpy(), "dproj": P.grad.numpy()}
    write(sys.argv[2], {k: v.astype(np.float32) for k, v in out.items()})


if __name__ == "__main__":
    main()
