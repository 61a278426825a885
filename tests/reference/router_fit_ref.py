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
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twin import st_read, st_write, torch  # noqa: E402  (exits with a message when torch is missing)


def main():
    t, _ = st_read(sys.argv[1])
    x = t["x"].double()
    y = t["y"].long()
    l2 = float(t["l2"][0])
    E = t["w"].shape[0]
    counts = torch.bincount(y, minlength=E).double()
    wi = 1.0 / (E * counts[y])

    def J(W):
        logp = torch.log_softmax(x @ W.T, dim=1)
        return -(wi * logp[torch.arange(len(y)), y]).sum() + 0.5 * l2 * (W * W).sum()

    W = t["w"].double().requires_grad_(True)
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
    f32 = lambda a: a.detach().float()  # computed in float64, stored as F32
    st_write(sys.argv[2], {"value": f32(value).reshape(1), "grad": f32(W.grad), "w_opt": f32(Wopt)})


if __name__ == "__main__":
    main()
