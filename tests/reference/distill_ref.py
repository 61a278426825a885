#!/usr/bin/env python3
"""
distill_ref.py — distillation losses and their gradients by PyTorch autograd, for
tests/test_distill.c, written from the definitions (Hinton et al. 2015; GKD, Agarwal et al.
2024 for the generalised JSD), not from alloy's code.

    /usr/bin/python3 tests/reference/distill_ref.py IN.safetensors OUT.safetensors

IN: "logits" (N, V) student, "teacher" (N, V) teacher logits, "targets" (N) int32 (negative:
no hard label), "params" f32 [kind, temperature, alpha, beta] with kind 0 forward KL, 1 reverse
KL, 2 JSD. OUT: "losses" (N) and "dlogits" (N, V) = d(Σ losses)/d(logits), float64 math.
The teacher's distribution is log_softmax(teacher / temperature).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read, write  # noqa: E402


def main():
    t, _ = read(sys.argv[1])
    kind, tau, alpha, beta = (float(x) for x in t["params"])
    z = torch.tensor(t["logits"], dtype=torch.float64, requires_grad=True)
    lq = F.log_softmax(torch.tensor(t["teacher"], dtype=torch.float64) / tau, dim=-1)
    y = torch.tensor(t["targets"], dtype=torch.int64)
    lp = F.log_softmax(z / tau, dim=-1)
    p, q = lp.exp(), lq.exp()
    if kind == 0:
        d = (q * (lq - lp)).sum(-1)
    elif kind == 1:
        d = (p * (lp - lq)).sum(-1)
    else:
        m = beta * q + (1 - beta) * p
        d = beta * (q * (lq - m.log())).sum(-1) + (1 - beta) * (p * (lp - m.log())).sum(-1)
    loss = (1 - alpha) * tau * tau * d
    hard = y >= 0
    ce = F.cross_entropy(z, y.clamp(min=0), reduction="none")
    loss = loss + torch.where(hard, alpha * ce, torch.zeros_like(ce))
    loss.sum().backward()
    write(sys.argv[2], {"losses": loss.detach().numpy().astype(np.float32), "dlogits": z.grad.numpy().astype(np.float32)})


if __name__ == "__main__":
    main()
