#!/usr/bin/env python3
"""ppo_ref.py — a PyTorch reference of alloy's PPO objective, the oracle of tests/test_ppo.c.

Written after TRL's PPOTrainer (compute_rewards, compute_advantages, masked_whiten, loss) on
padded (n, L) tensors with a mask, independently of the C code's ragged arrays:

    kl_t      = logp_old_t - ref_t;  penalty "kl": kl, "abs": |kl|, "mse": kl²/2
    reward_t  = -beta·penalty_t, plus the sequence's score on its last token
    GAE       delta_t = r_t + gamma·V_{t+1} - V_t (V = 0 past the end), A_t = delta_t + gamma·lam·A_{t+1}
    returns   = A + V (before whitening);  A whitened over all tokens (unbiased variance, eps 1e-8)
    loss      = mean max(-A·ratio, -A·clamp(ratio, 1-eps, 1+eps))
              + vf_coef · ½ mean max((v - R)², (clamp(v, v_old - eps_v, v_old + eps_v) - R)²)
with ratio = exp(logp - logp_old); logp and v are the leaves whose gradients are returned.

    /usr/bin/python3 tests/reference/ppo_ref.py CASE.safetensors OUT.safetensors [CASE OUT ...]

A case file holds logp, old_logp, ref_logp, values, old_values (N) F32, scores (n) F32 and
off (n + 1) I64 (sequence i's tokens are off[i] .. off[i+1]-1), and metadata beta, gamma, lam,
cliprange, cliprange_value, vf_coef, kl_penalty, whiten. The output holds loss, pg_loss,
vf_loss, clipfrac, vf_clipfrac, approx_kl (1), rewards, advantages, returns, dlogp, dvalues (N).
Computed in float64, written as float32. Exit status 0, or 1 with a message on stderr.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twin import fail, st_read, st_write, torch  # noqa: E402


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_whiten(x, mask, shift_mean=True):
    mean = masked_mean(x, mask)
    centred = x - mean
    var = masked_mean(centred ** 2, mask) * (mask.sum() / (mask.sum() - 1))  # unbiased, as TRL's masked_var
    white = (x - mean) * torch.rsqrt(var + 1e-8)
    return white if shift_mean else white + mean


def run_case(case_path, out_path):
    t, meta = st_read(case_path)
    for key in ("logp", "old_logp", "ref_logp", "values", "old_values", "scores", "off"):
        if key not in t:
            fail("%s: needs a tensor %r" % (case_path, key))
    off = [int(x) for x in t["off"]]
    n = len(off) - 1
    L = max(off[i + 1] - off[i] for i in range(n))
    beta, gamma, lam = float(meta["beta"]), float(meta["gamma"]), float(meta["lam"])
    eps, eps_v, vf_coef = float(meta["cliprange"]), float(meta["cliprange_value"]), float(meta["vf_coef"])

    def pad(flat):
        out = torch.zeros(n, L, dtype=torch.float64)
        for i in range(n):
            out[i, : off[i + 1] - off[i]] = flat[off[i]: off[i + 1]].double()
        return out

    mask = pad(torch.ones(off[-1]))
    logp_old, ref, v_old = pad(t["old_logp"]), pad(t["ref_logp"]), pad(t["old_values"])
    # rewards (compute_rewards)
    kl = logp_old - ref
    penalty = {"kl": kl, "abs": kl.abs(), "mse": 0.5 * kl ** 2}[meta["kl_penalty"]]
    rewards = -beta * penalty
    for i in range(n):
        rewards[i, off[i + 1] - off[i] - 1] += float(t["scores"][i])
    rewards = rewards * mask
    # advantages (compute_advantages)
    values = v_old * mask
    last = torch.zeros(n, dtype=torch.float64)
    rev = []
    for k in reversed(range(L)):
        nextv = values[:, k + 1] if k < L - 1 else 0.0
        delta = rewards[:, k] + gamma * nextv - values[:, k]
        last = delta + gamma * lam * last
        rev.append(last)
    adv = torch.stack(rev[::-1]).transpose(0, 1)
    returns = adv + values
    if meta["whiten"] == "true":
        adv = masked_whiten(adv, mask)
    adv = adv.detach()
    # the loss, on leaves logp and v
    logp = pad(t["logp"]).requires_grad_(True)
    vpred = pad(t["values"]).requires_grad_(True)
    vclip = torch.max(torch.min(vpred, values + eps_v), values - eps_v)
    vf1, vf2 = (vpred - returns) ** 2, (vclip - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf1, vf2), mask)
    vf_clipfrac = masked_mean(torch.gt(vf2, vf1).double(), mask)
    ratio = torch.exp(logp - logp_old)
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps)
    pg_loss = masked_mean(torch.max(pg1, pg2), mask)
    clipfrac = masked_mean(torch.gt(pg2, pg1).double(), mask)
    loss = pg_loss + vf_coef * vf_loss
    loss.backward()
    approx_kl = 0.5 * masked_mean((logp - logp_old) ** 2, mask)

    def unpad(x):
        return torch.cat([x[i, : off[i + 1] - off[i]] for i in range(n)])

    out = {
        "loss": loss.detach().reshape(1), "pg_loss": pg_loss.detach().reshape(1), "vf_loss": vf_loss.detach().reshape(1),
        "clipfrac": clipfrac.reshape(1), "vf_clipfrac": vf_clipfrac.reshape(1), "approx_kl": approx_kl.detach().reshape(1),
        "rewards": unpad(rewards), "advantages": unpad(adv), "returns": unpad(returns),
        "dlogp": unpad(logp.grad), "dvalues": unpad(vpred.grad),
    }
    st_write(out_path, {k: v.float() for k, v in out.items()}, {"producer": "tests/reference/ppo_ref.py", "torch": torch.__version__})


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        fail("usage: ppo_ref.py CASE.safetensors OUT.safetensors [CASE OUT ...]")
    torch.set_num_threads(1)
    for i in range(0, len(args), 2):
        run_case(args[i], args[i + 1])


if __name__ == "__main__":
    main()
