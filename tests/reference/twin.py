#!/usr/bin/python3
"""PyTorch twins of alloy's two model families, used as the oracle of tests/test_model.c.

Written from the Hugging Face conventions, not from alloy's code: it reads a checkpoint folder
(config.json with Hugging Face keys + model.safetensors, parsed here from the format's spec)
and builds GPT2LMHeadModel-style or LlamaForCausalLM-style computations with plain torch ops
and autograd. Given inputs (tokens, targets, an optional mask, and a batch per training step),
it writes a safetensors file with:

  logits (B,T,V), hidden (B,T,C) final hidden states, loss (1), masked_loss (1),
  grad.<param> for every parameter (of the plain loss), traj_losses (S): the losses of S
  AdamW steps (torch.optim.AdamW, decay on tensors with ndim >= 2, clip_grad_norm_,
  linear warm-up then cosine decay as alloy_schedule_lr).

Run with Debian's PyTorch: /usr/bin/python3 tests/reference/twin.py --model DIR --inputs F --out F
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().cpu().contiguous().numpy()
        dt = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[a.dtype]
        raw = a.tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def causal_attention(q, k, v):
    # q (B,H,T,hd), k/v (B,H,T,hd)
    T, hd = q.shape[2], q.shape[3]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    att = att.masked_fill(~mask, float("-inf"))
    return torch.softmax(att, dim=-1) @ v


class GPT2Twin:
    """GPT2LMHeadModel: Conv1D weights (in, out), LayerNorm with bias, learned positions, tied head."""

    def __init__(self, cfg, p):
        self.c, self.p = cfg, p
        self.L, self.H, self.C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
        self.eps = cfg.get("layer_norm_epsilon", 1e-5)
        expected = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
        for l in range(self.L):
            for s in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                      "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                      "mlp.c_proj.weight", "mlp.c_proj.bias"]:
                expected.append(f"transformer.h.{l}.{s}")
        check_names(p, expected)

    def forward(self, tok):
        p, B, T = self.p, tok.shape[0], tok.shape[1]
        x = p["transformer.wte.weight"][tok] + p["transformer.wpe.weight"][:T][None]
        hd = self.C // self.H
        for l in range(self.L):
            g = lambda s: p[f"transformer.h.{l}.{s}"]
            h = torch.nn.functional.layer_norm(x, (self.C,), g("ln_1.weight"), g("ln_1.bias"), self.eps)
            qkv = h @ g("attn.c_attn.weight") + g("attn.c_attn.bias")
            q, k, v = qkv.split(self.C, dim=2)
            heads = lambda t: t.view(B, T, self.H, hd).transpose(1, 2)
            y = causal_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(B, T, self.C)
            x = x + y @ g("attn.c_proj.weight") + g("attn.c_proj.bias")
            h = torch.nn.functional.layer_norm(x, (self.C,), g("ln_2.weight"), g("ln_2.bias"), self.eps)
            x = x + gelu_new(h @ g("mlp.c_fc.weight") + g("mlp.c_fc.bias")) @ g("mlp.c_proj.weight") + g("mlp.c_proj.bias")
        hidden = torch.nn.functional.layer_norm(x, (self.C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], self.eps)
        return hidden @ p["transformer.wte.weight"].T, hidden


def rms_norm(x, w, eps):
    # LlamaRMSNorm
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaTwin:
    """LlamaForCausalLM: Linear weights (out, in), RMSNorm, rotary (rotate-half), SwiGLU, GQA."""

    def __init__(self, cfg, p):
        self.c, self.p = cfg, p
        self.L, self.H, self.C = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]
        self.KV = cfg.get("num_key_value_heads", self.H)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.theta = cfg.get("rope_theta", 10000.0)
        self.tied = cfg.get("tie_word_embeddings", False)
        expected = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if self.tied else ["lm_head.weight"])
        for l in range(self.L):
            for s in ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                      "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]:
                expected.append(f"model.layers.{l}.{s}")
        check_names(p, expected)

    def forward(self, tok):
        p, B, T = self.p, tok.shape[0], tok.shape[1]
        H, KV, hd = self.H, self.KV, self.C // self.H
        x = p["model.embed_tokens.weight"][tok]
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        for l in range(self.L):
            g = lambda s: p[f"model.layers.{l}.{s}"]
            h = rms_norm(x, g("input_layernorm.weight"), self.eps)
            q = (h @ g("self_attn.q_proj.weight").T).view(B, T, H, hd).transpose(1, 2)
            k = (h @ g("self_attn.k_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
            v = (h @ g("self_attn.v_proj.weight").T).view(B, T, KV, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(H // KV, dim=1)  # query head h reads kv head h // (H/KV)
            v = v.repeat_interleave(H // KV, dim=1)
            y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + y @ g("self_attn.o_proj.weight").T
            h = rms_norm(x, g("post_attention_layernorm.weight"), self.eps)
            gate, up = h @ g("mlp.gate_proj.weight").T, h @ g("mlp.up_proj.weight").T
            x = x + (torch.nn.functional.silu(gate) * up) @ g("mlp.down_proj.weight").T
        hidden = rms_norm(x, p["model.norm.weight"], self.eps)
        head = p["model.embed_tokens.weight"] if self.tied else p["lm_head.weight"]
        return hidden @ head.T, hidden


def check_names(p, expected):
    missing = sorted(set(expected) - set(p))
    extra = sorted(set(p) - set(expected))
    if missing or extra:
        sys.exit(f"twin.py: checkpoint names do not match the Hugging Face layout: missing {missing}, unexpected {extra}")


def lm_loss(logits, targets, mask=None):
    V = logits.shape[-1]
    per = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), reduction="none",
                                            ignore_index=-1)
    w = (targets.reshape(-1) >= 0).float()
    if mask is not None:
        w = w * mask.reshape(-1)
    return (per * w).sum() / w.sum()


def schedule(step, max_lr, min_lr, warmup, total):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    decay = total - warmup
    if decay <= 1:
        return max_lr
    prog = min((step - warmup) / (decay - 1), 1.0)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * prog))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--min-lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    cfg = json.load(open(f"{a.model}/config.json"))
    weights = read_safetensors(f"{a.model}/model.safetensors")
    params = {k: v.float().clone().requires_grad_(True) for k, v in weights.items()}
    Twin = {"gpt2": GPT2Twin, "llama": LlamaTwin}[cfg["model_type"]]
    model = Twin(cfg, params)
    inp = read_safetensors(a.inputs)
    tok, tgt = inp["tokens"].long(), inp["targets"]
    out = {}

    logits, hidden = model.forward(tok)
    loss = lm_loss(logits, tgt)
    loss.backward()
    out["logits"], out["hidden"], out["loss"] = logits, hidden, loss.reshape(1)
    for k, v in params.items():
        out["grad." + k] = v.grad.clone()
        v.grad = None
    with torch.no_grad():
        out["masked_loss"] = lm_loss(model.forward(tok)[0], inp["mask_targets"], inp["mask"]).reshape(1)

    # the AdamW trajectory
    traj_tok, traj_tgt = inp["traj_tokens"].long(), inp["traj_targets"]
    S = traj_tok.shape[0]
    decay = [v for v in params.values() if v.ndim >= 2]
    no_decay = [v for v in params.values() if v.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    losses, norms = [], []
    for s in range(S):
        lr = schedule(s, a.lr, a.min_lr, a.warmup, S)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        l = lm_loss(model.forward(traj_tok[s])[0], traj_tgt[s])
        l.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip)))
        opt.step()
        losses.append(float(l))
    out["traj_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["traj_norms"] = torch.tensor(norms, dtype=torch.float32)
    write_safetensors(a.out, out)


if __name__ == "__main__":
    main()
