#!/usr/bin/env python3
"""align_ref.py — PyTorch references of alloy's alignment objectives, the oracle of tests/test_align.c.

The models are twin.py's (imported as a module: GPT2LMHeadModel, LlamaForCausalLM, safetensors
I/O), loaded from checkpoint folders written by alloy. The objectives are written here from
their papers, on torch autograd, independently of the C code:

    sft     mean cross-entropy over the tokens whose target is >= 0 (the response tokens);
    reward  r = final hidden state of each sequence's last token · score.weight + score.bias;
            per example (rows ex_row[e] .. ex_row[e+1]-1, best first) the mean over pairs i < j
            of -log sigmoid(r_i - r_j); the mean over examples (InstructGPT);
    dpo     per row the sum of log softmax(logits)[target] over targets >= 0, under the policy
            (--model) and the reference (a second folder); rows 2e, 2e+1 are chosen, rejected;
            sigmoid: -(1-e)·logsigmoid(beta·D) - e·logsigmoid(-beta·D), ipo: (D' - 1/(2 beta))²
            with D' from per-token averages; the mean over pairs.

A reward model's folder holds the backbone's tensors and score.weight (1, C) / score.bias (1),
loaded strictly (any other missing or unexpected name is an error).

    /usr/bin/python3 tests/reference/align_ref.py CASE.safetensors OUT.safetensors [CASE OUT ...]

A case file holds tokens (B, T) I32, targets (B, T) I32, last (B) I64 (row b·T + t of each
sequence's last token), ex_row (n+1) I32, and metadata: objective, model, and for dpo: ref,
beta, loss, label_smoothing. The output holds loss (1), the gradient of every parameter under
its name (score.weight and score.bias for a reward model), rewards (B) for a reward model,
logps and ref_logps (B) for dpo. Everything is computed in float64 from the float32 weights, so
that a comparison measures alloy's own float32 rounding, and written as float32. Exit status 0,
or 1 with a message on stderr. One thread, deterministic algorithms.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import twin  # noqa: E402  (exits with a message when torch is missing)
from twin import F, fail, np, st_read, st_write, torch  # noqa: E402,F401


def load_folder(folder):
    """The twin of a checkpoint folder and its score head (None for a language model)."""
    cpath = os.path.join(folder, "config.json")
    try:
        with open(cpath) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail("%s: %s" % (cpath, e))
    kind = cfg.get("model_type")
    model = twin.GPT2LMHeadModel(cfg) if kind == "gpt2" else twin.LlamaForCausalLM(cfg) if kind == "llama" else None
    if model is None:
        fail("%s: unsupported model_type %r" % (cpath, kind))
    wpath = os.path.join(folder, "model.safetensors")
    weights, _ = st_read(wpath)
    head = None
    if "score.weight" in weights:
        C = int(cfg["n_embd"] if kind == "gpt2" else cfg["hidden_size"])
        w = weights.pop("score.weight")
        b = weights.pop("score.bias", torch.zeros(1))
        if tuple(w.shape) != (1, C) or tuple(b.shape) != (1,):
            fail("%s: score.weight %s / score.bias %s, expected (1, %d) / (1,)" % (wpath, list(w.shape), list(b.shape), C))
        head = (torch.nn.Parameter(w.double()), torch.nn.Parameter(b.double()))
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        fail("%s: tensor names do not match: missing %s, unexpected %s" % (wpath, missing or "none", unexpected or "none"))
    with torch.no_grad():
        for name, p in params.items():
            if tuple(weights[name].shape) != tuple(p.shape):
                fail("%s: tensor %r has shape %s, expected %s" % (wpath, name, list(weights[name].shape), list(p.shape)))
            p.copy_(weights[name])
    return model.double(), head


def token_logps(model, tokens, targets):
    """Per row: the summed log-probability of the targets >= 0, and their count."""
    _, logits = model(tokens)
    logp = F.log_softmax(logits, dim=-1)
    valid = targets >= 0
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
    return picked.sum(-1), valid.sum(-1)


def run_case(case_path, out_path):
    torch.manual_seed(0)
    inputs, meta = st_read(case_path)
    for key in ("tokens", "targets", "last", "ex_row"):
        if key not in inputs:
            fail("%s: needs a tensor %r" % (case_path, key))
    tokens, targets = inputs["tokens"].long(), inputs["targets"].long()
    last, ex_row = inputs["last"].long(), [int(x) for x in inputs["ex_row"]]
    objective = meta.get("objective")
    model, head = load_folder(meta["model"])
    out = {}
    if objective == "sft":
        _, logits = model(tokens)
        loss, _ = twin.lm_loss(logits, targets, None)
    elif objective == "reward":
        if head is None:
            fail("%s: not a reward model (no score.weight)" % meta["model"])
        hidden, _ = model(tokens)
        h = hidden.reshape(-1, hidden.size(-1))[last]
        r = (h @ head[0].t()).squeeze(-1) + head[1]
        per_example = []
        for e in range(len(ex_row) - 1):
            a, K = ex_row[e], ex_row[e + 1] - ex_row[e]
            pairs = [-F.logsigmoid(r[a + i] - r[a + j]) for i in range(K) for j in range(i + 1, K)]
            per_example.append(torch.stack(pairs).mean())
        loss = torch.stack(per_example).mean()
        out["rewards"] = r.detach()
    elif objective == "dpo":
        ref, _ = load_folder(meta["ref"])
        with torch.no_grad():
            ref_logps, _ = token_logps(ref, tokens, targets)
        logps, counts = token_logps(model, tokens, targets)
        beta, eps = float(meta["beta"]), float(meta["label_smoothing"])
        pc, pr, rc, rr = logps[0::2], logps[1::2], ref_logps[0::2], ref_logps[1::2]
        if meta["loss"] == "ipo":
            nc, nr = counts[0::2].clamp(min=1).double(), counts[1::2].clamp(min=1).double()
            d = (pc - rc) / nc - (pr - rr) / nr
            losses = (d - 1.0 / (2.0 * beta)) ** 2
        else:
            d = (pc - rc) - (pr - rr)
            losses = -(1.0 - eps) * F.logsigmoid(beta * d) - eps * F.logsigmoid(-beta * d)
        loss = losses.mean()
        out["logps"] = logps.detach()
        out["ref_logps"] = ref_logps.detach()
    else:
        fail("%s: unknown objective %r" % (case_path, objective))
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    for name, p in model.named_parameters():
        out[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    if head is not None and objective == "reward":
        out["score.weight"] = head[0].grad.detach().clone()
        out["score.bias"] = head[1].grad.detach().clone()
    out = {k: v.float() for k, v in out.items()}
    st_write(out_path, out, {"producer": "tests/reference/align_ref.py", "torch": torch.__version__})


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        fail("usage: align_ref.py CASE.safetensors OUT.safetensors [CASE OUT ...]")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for i in range(0, len(args), 2):
        run_case(args[i], args[i + 1])


if __name__ == "__main__":
    main()
