#!/usr/bin/env python3
"""twin.py — a PyTorch twin of alloy's two model families, the oracle of tests/test_model.c.

Written from scratch on torch alone (no `transformers`, no `safetensors` package), in the
conventions of Hugging Face's GPT2LMHeadModel and LlamaForCausalLM: the modules are named so
that named_parameters() yields the Hugging Face tensor names, and the model is built from the
Hugging Face keys of config.json. It loads a checkpoint folder written by alloy
(config.json + model.safetensors) strictly — a missing, unexpected or misshapen tensor is an
error — and writes a safetensors file of reference outputs for one batch:

    logits            (B, T, V)  F32
    hidden            (B, T, C)  F32   final hidden states (output of the final norm)
    losses            (B, T)     F32   per-token cross-entropy, 0 where the target is negative
    loss              (1)        F32   mean loss over counted tokens (mask-weighted)
    <parameter name>  as stored  F32   d loss / d parameter, for every parameter
    aux_loss          (1)        F32   MoE only: the load-balancing loss (transformers'
                                       load_balancing_loss_func); the gradients and the training
                                       run are of loss + router_aux_loss_coef · aux_loss
    expert_counts     (L, E)     F32   MoE only: (token, k) assignments per layer and expert
    train_losses      (steps)    F32   loss before each AdamW step, on the same batch
    train_grad_norms  (steps)    F32   global gradient norm before clipping
    train_lrs         (steps)    F32   learning rate of each step

An inputs file holds tokens (B, T) I32, targets (B, T) I32 (negative: ignored) and optionally
mask (B, T) F32 (per-token weights; 0 drops a token). Several --inputs (with as many --out) run
in turn, each from the checkpoint's weights, so that one start-up of torch serves them all.

Training: torch.optim.AdamW (decoupled decay) with two parameter groups — weight decay on
tensors with ndim >= 2, none on the rest — torch.nn.utils.clip_grad_norm_, and alloy's schedule
(linear warm-up, then cosine decay to --min-lr over --total-steps). Hyperparameters are rounded
to float32, as alloy's C API receives them.

    /usr/bin/python3 tests/reference/twin.py --model DIR --inputs in.safetensors [...] \
        --out ref.safetensors [...] --steps 10 --lr 1e-2 --min-lr 1e-3 --warmup 3 --wd 0.1 \
        --clip 1.0 --beta1 0.9 --beta2 0.95 --eps 1e-8

Exit status 0 on success; 1 with a message on stderr for any problem (bad checkpoint,
missing torch, ...). Deterministic: one thread, deterministic algorithms, float32 throughout.
"""
import argparse
import json
import math
import os
import sys


def fail(msg):
    sys.stderr.write("twin.py: %s\n" % msg)
    sys.exit(1)


try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the C test shows this message when the twin cannot run
    fail("needs PyTorch and NumPy (%s); on Debian/Ubuntu: apt-get install python3-torch python3-numpy" % e)


# ---- safetensors: st_io.py's reader and writer, with torch tensors ----

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st_io  # noqa: E402

ST_DTYPES, NP_TO_ST = st_io.DTYPES, st_io.NP_TO_ST


def st_read(path):
    """Returns ({name: torch tensor}, metadata dict), checking the layout against the file."""
    arrays, meta = st_io.read(path)
    return {name: torch.from_numpy(a) for name, a in arrays.items()}, meta


def st_write(path, tensors, meta=None):
    """Writes {name: tensor} in insertion order (atomically: temporary file, then rename)."""
    st_io.write(path, tensors, meta)


# ---- GPT-2, as transformers' GPT2LMHeadModel (no dropout) ----

class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out); y = x·W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.zeros(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        shape = x.shape[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(shape)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def causal_attention(q, k, v):
    """q, k, v (B, H, T, hd) -> (B, H, T, hd): eager softmax attention with a causal mask."""
    T, hd = q.size(-2), q.size(-1)
    w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
    return torch.matmul(F.softmax(w, dim=-1), v)


class GPT2Attention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H, self.hd = H, C // H
        self.c_attn = Conv1D(3 * C, C)
        self.c_proj = Conv1D(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)

        def heads(t):
            return t.view(B, T, self.H, self.hd).permute(0, 2, 1, 3)

        y = causal_attention(heads(q), heads(k), heads(v))
        return self.c_proj(y.permute(0, 2, 1, 3).contiguous().view(B, T, C))


class GPT2MLP(nn.Module):
    def __init__(self, C, Fd):
        super().__init__()
        self.c_fc = Conv1D(Fd, C)
        self.c_proj = Conv1D(C, Fd)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class SparseMoe(nn.Module):
    """A mixture of E experts as transformers' MixtralSparseMoeBlock: the router ("gate", a
    Linear without bias), softmax in float32, top-k, the chosen weights renormalised to sum 1,
    each expert run on the rows routed to it and its output added in by index_add_. The router
    logits of the last forward stay in self.logits for the load-balancing loss."""

    def __init__(self, C, E, K, make_expert):
        super().__init__()
        self.E, self.K = E, K
        self.gate = nn.Linear(C, E, bias=False)
        self.experts = nn.ModuleList([make_expert() for _ in range(E)])
        self.logits = None

    def forward(self, x):
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        logits = self.gate(h)
        self.logits = logits
        w = F.softmax(logits, dim=1, dtype=torch.float)
        w, sel = torch.topk(w, self.K, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        w = w.to(h.dtype)
        out = torch.zeros_like(h)
        mask = F.one_hot(sel, num_classes=self.E).permute(2, 1, 0)  # (E, K, N)
        for e in range(self.E):
            idx, rows = torch.where(mask[e])
            if rows.numel() == 0:
                continue
            y = self.experts[e](h[rows]) * w[rows, idx, None]
            out.index_add_(0, rows, y.to(h.dtype))
        return out.reshape(shape)


def load_balancing_loss(logits_per_layer, E, K):
    """transformers' load_balancing_loss_func without an attention mask: the layers' router
    logits concatenated (L·N rows); E · Σ_e (Σ_k fraction of rows whose k-th choice is e) ·
    (mean probability of e). Also returns the (token, k) counts per layer and expert."""
    cat = torch.cat(logits_per_layer, dim=0)
    probs = F.softmax(cat, dim=-1)
    _, sel = torch.topk(probs, K, dim=-1)
    mask = F.one_hot(sel, E)
    tokens_per_expert = torch.mean(mask.float(), dim=0)
    prob_per_expert = torch.mean(probs, dim=0)
    aux = torch.sum(tokens_per_expert * prob_per_expert.unsqueeze(0)) * E
    counts = torch.stack([F.one_hot(torch.topk(F.softmax(g, dim=-1), K, dim=-1)[1], E).sum(dim=(0, 1))
                          for g in logits_per_layer]).float()
    return aux, counts


class GPT2Block(nn.Module):
    def __init__(self, C, H, Fd, eps, E=0, K=0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = GPT2Attention(C, H)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        # alloy's own GPT-2 MoE layout: mlp.gate.weight (E, C), mlp.experts.N.{c_fc,c_proj}
        self.mlp = SparseMoe(C, E, K, lambda: GPT2MLP(C, Fd)) if E > 0 else GPT2MLP(C, Fd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, V, maxT, L, C, H, Fd, eps, E=0, K=0):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(maxT, C)
        self.h = nn.ModuleList([GPT2Block(C, H, Fd, eps, E, K) for _ in range(L)])
        self.ln_f = nn.LayerNorm(C, eps=eps)

    def forward(self, tokens):
        pos = torch.arange(tokens.size(1), dtype=torch.long)
        x = self.wte(tokens) + self.wpe(pos)[None]
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        need = ["vocab_size", "n_positions", "n_layer", "n_head", "n_embd"]
        V, maxT, L, H, C = (int(cfg[k]) for k in need)
        Fd = cfg.get("n_inner")
        Fd = 4 * C if Fd is None else int(Fd)
        if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            fail("config.json: unsupported activation_function %r" % cfg["activation_function"])
        if not cfg.get("tie_word_embeddings", True):
            fail("config.json: the GPT-2 twin expects tied embeddings")
        if C % H:
            fail("config.json: n_embd %d is not a multiple of n_head %d" % (C, H))
        E, K = moe_config(cfg, False)
        self.transformer = GPT2Model(V, maxT, L, C, H, Fd, float(cfg.get("layer_norm_epsilon", 1e-5)), E, K)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.moe = [b.mlp for b in self.transformer.h] if E > 0 else []

    def forward(self, tokens):
        hidden = self.transformer(tokens)
        return hidden, self.lm_head(hidden)


# ---- Llama, as transformers' LlamaForCausalLM ----

class LlamaRMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(T, hd, theta):
    """cos, sin (T, hd) as LlamaRotaryEmbedding: inv_freq = 1 / theta^(2i/hd), angles duplicated."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq)  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class LlamaAttention(nn.Module):
    def __init__(self, C, H, KV, theta):
        super().__init__()
        self.H, self.KV, self.hd, self.theta = H, KV, C // H, theta
        self.q_proj = nn.Linear(C, H * self.hd, bias=False)
        self.k_proj = nn.Linear(C, KV * self.hd, bias=False)
        self.v_proj = nn.Linear(C, KV * self.hd, bias=False)
        self.o_proj = nn.Linear(H * self.hd, C, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        cos, sin = rope_cos_sin(T, self.hd, self.theta)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: query head h reads kv head h // (H / KV)
        rep = self.H // self.KV
        k = k[:, :, None].expand(B, self.KV, rep, T, self.hd).reshape(B, self.H, T, self.hd)
        v = v[:, :, None].expand(B, self.KV, rep, T, self.hd).reshape(B, self.H, T, self.hd)
        y = causal_attention(q, k, v)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.hd))


class LlamaMLP(nn.Module):
    def __init__(self, C, Fd):
        super().__init__()
        self.gate_proj = nn.Linear(C, Fd, bias=False)
        self.up_proj = nn.Linear(C, Fd, bias=False)
        self.down_proj = nn.Linear(Fd, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MixtralExpert(nn.Module):
    """transformers' MixtralBlockSparseTop2MLP: w2(silu(w1(x)) · w3(x))."""

    def __init__(self, C, Fd):
        super().__init__()
        self.w1 = nn.Linear(C, Fd, bias=False)
        self.w2 = nn.Linear(Fd, C, bias=False)
        self.w3 = nn.Linear(C, Fd, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, C, H, KV, Fd, eps, theta, E=0, K=0):
        super().__init__()
        self.self_attn = LlamaAttention(C, H, KV, theta)
        if E > 0:  # MixtralDecoderLayer
            self.block_sparse_moe = SparseMoe(C, E, K, lambda: MixtralExpert(C, Fd))
        else:
            self.mlp = LlamaMLP(C, Fd)
        self.input_layernorm = LlamaRMSNorm(C, eps)
        self.post_attention_layernorm = LlamaRMSNorm(C, eps)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        mlp = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, V, L, C, H, KV, Fd, eps, theta, E=0, K=0):
        super().__init__()
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList([LlamaDecoderLayer(C, H, KV, Fd, eps, theta, E, K) for _ in range(L)])
        self.norm = LlamaRMSNorm(C, eps)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        need = ["vocab_size", "max_position_embeddings", "num_hidden_layers", "num_attention_heads",
                "hidden_size", "intermediate_size"]
        V, _, L, H, C, Fd = (int(cfg[k]) for k in need)
        KV = int(cfg.get("num_key_value_heads") or H)
        if cfg.get("hidden_act", "silu") != "silu":
            fail("config.json: unsupported hidden_act %r" % cfg["hidden_act"])
        if cfg.get("attention_bias", False) or cfg.get("mlp_bias", False):
            fail("config.json: the twin has no attention or MLP biases")
        if C % H or H % KV or (C // H) % 2:
            fail("config.json: hidden_size %d, heads %d, kv heads %d do not fit together" % (C, H, KV))
        if cfg.get("head_dim") not in (None, C // H):
            fail("config.json: head_dim %r is not hidden_size / num_attention_heads" % cfg["head_dim"])
        if cfg.get("rope_scaling"):
            fail("config.json: rope_scaling is not supported")
        E, K = moe_config(cfg, cfg.get("model_type") == "mixtral")
        self.model = LlamaModel(V, L, C, H, KV, Fd, float(cfg.get("rms_norm_eps", 1e-6)),
                                float(cfg.get("rope_theta", 10000.0)), E, K)
        self.lm_head = nn.Linear(C, V, bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight
        self.moe = [layer.block_sparse_moe for layer in self.model.layers] if E > 0 else []

    def forward(self, tokens):
        hidden = self.model(tokens)
        return hidden, self.lm_head(hidden)


def moe_config(cfg, mixtral):
    """(E, K) from MixtralConfig's keys, with its defaults for model_type mixtral; (0, 0) dense."""
    E = int(cfg.get("num_local_experts", 8 if mixtral else 0) or 0)
    if E == 0:
        return 0, 0
    K = int(cfg.get("num_experts_per_tok", 2))
    if not 1 <= K <= E:
        fail("config.json: num_experts_per_tok %d must lie in [1, %d]" % (K, E))
    return E, K


def build_model(folder):
    """The twin of the checkpoint folder, its weights loaded; any name or shape mismatch fails."""
    cpath = os.path.join(folder, "config.json")
    try:
        with open(cpath) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        fail("%s: %s" % (cpath, e))
    kind = cfg.get("model_type")
    try:
        if kind == "gpt2":
            model = GPT2LMHeadModel(cfg)
        elif kind in ("llama", "mixtral"):
            model = LlamaForCausalLM(cfg)
        else:
            fail("%s: unsupported model_type %r" % (cpath, kind))
    except (KeyError, TypeError, ValueError) as e:
        fail("%s: missing or bad field (%s)" % (cpath, e))
    wpath = os.path.join(folder, "model.safetensors")
    weights, _ = st_read(wpath)
    params = dict(model.named_parameters())  # a tied weight appears once, under its first name
    missing = [n for n in params if n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        fail("%s: tensor names do not match the %s layout: missing %s, unexpected %s"
             % (wpath, kind, missing or "none", unexpected or "none"))
    with torch.no_grad():
        for name, p in params.items():
            w = weights[name]
            if w.dtype != torch.float32 or tuple(w.shape) != tuple(p.shape):
                fail("%s: tensor %r is %s %s, expected float32 %s"
                     % (wpath, name, w.dtype, list(w.shape), list(p.shape)))
            p.copy_(w)
    model.aux_coef = float(cfg.get("router_aux_loss_coef", 0.001)) if model.moe else 0.0
    return model


# ---- loss, schedule, training ----

def lm_loss(logits, targets, mask):
    """Mean cross-entropy over counted tokens, weighted by mask (1 if None) and 0 for negative
    targets. Returns (mean loss, per-token losses with 0 where the target is negative)."""
    V = logits.size(-1)
    valid = (targets >= 0).float()
    w = valid if mask is None else valid * mask
    ce = F.cross_entropy(logits.reshape(-1, V), targets.clamp(min=0).reshape(-1), reduction="none")
    ce = ce.view(targets.shape) * valid
    count = w.sum()
    loss = (ce * w).sum() / count if count.item() > 0 else (ce * 0.0).sum()
    return loss, ce


def schedule_lr(step, max_lr, min_lr, warmup, total):
    """alloy_schedule_lr: linear warm-up (step+1)/warmup, then cosine to min_lr at the last step."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    decay_steps = total - warmup
    if decay_steps <= 1:
        return max_lr
    progress = min(1.0, (step - warmup) / (decay_steps - 1))
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def f32(x):
    return float(np.float32(x))


def main():
    ap = argparse.ArgumentParser(description="PyTorch twin of alloy's GPT-2 and Llama models")
    ap.add_argument("--model", required=True, help="checkpoint folder (config.json + model.safetensors)")
    ap.add_argument("--inputs", required=True, nargs="+",
                    help="safetensors with tokens, targets[, mask]; several: one run each, from the checkpoint")
    ap.add_argument("--out", required=True, nargs="+", help="safetensors of reference outputs, one per --inputs")
    ap.add_argument("--steps", type=int, default=0, help="AdamW steps on the batch (0: none)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    ap.add_argument("--min-lr", type=float, default=0.0, help="learning rate at the last step")
    ap.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    ap.add_argument("--total-steps", type=int, default=0, help="schedule length (0: --steps)")
    ap.add_argument("--wd", type=float, default=0.1, help="weight decay of tensors with ndim >= 2")
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: off)")
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--autocast", choices=("off", "bf16"), default="off",
                    help="bf16: the model's forward under torch.autocast('cpu', torch.bfloat16) (matrix "
                         "products in bf16), the loss in fp32 on the logits cast back")
    args = ap.parse_args()

    if len(args.inputs) != len(args.out):
        fail("--inputs and --out need the same number of files")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    for inputs, out in zip(args.inputs, args.out):
        run(args, inputs, out)


def run(args, inputs_path, out_path):
    """One batch: forward, backward and the training run, from the checkpoint's weights."""
    torch.manual_seed(0)  # module construction draws initial values; all are overwritten
    model = build_model(args.model)
    inputs, _ = st_read(inputs_path)
    for key in ("tokens", "targets"):
        if key not in inputs or inputs[key].dim() != 2:
            fail("%s: needs a 2-D tensor %r" % (inputs_path, key))
    tokens = inputs["tokens"].long()
    targets = inputs["targets"].long()
    mask = inputs.get("mask")
    if targets.shape != tokens.shape or (mask is not None and mask.shape != tokens.shape):
        fail("%s: tokens, targets and mask must share one shape" % inputs_path)
    if mask is not None:
        mask = mask.float()

    params = dict(model.named_parameters())
    out = {}

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast == "bf16"):
            hidden, logits = model(tokens)
        return hidden.float(), logits.float()

    def aux_loss():
        """The load-balancing loss of an MoE model's last forward, and its counts (None: dense)."""
        if not model.moe:
            return None, None
        first = model.moe[0]
        return load_balancing_loss([b.logits for b in model.moe], first.E, first.K)

    hidden, logits = forward()
    loss, losses = lm_loss(logits, targets, mask)
    aux, counts = aux_loss()
    # the gradient of Mixtral's training loss: lm + router_aux_loss_coef · aux
    (loss if aux is None else loss + model.aux_coef * aux).backward()
    if aux is not None:
        out["aux_loss"] = aux.detach().reshape(1)
        out["expert_counts"] = counts
    out["logits"] = logits.detach()
    out["hidden"] = hidden.detach()
    out["losses"] = losses.detach()
    out["loss"] = loss.detach().reshape(1)
    for name, p in params.items():
        if name in out:
            fail("parameter name %r collides with an output" % name)
        out[name] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)

    if args.steps > 0:
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": f32(args.wd)}, {"params": no_decay, "weight_decay": 0.0}],
            lr=f32(args.lr), betas=(f32(args.beta1), f32(args.beta2)), eps=f32(args.eps), foreach=False)
        total = args.total_steps or args.steps
        tl, tn, tr = [], [], []
        for step in range(args.steps):
            lr = f32(schedule_lr(step, args.lr, args.min_lr, args.warmup, total))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            _, logits = forward()
            loss, _ = lm_loss(logits, targets, mask)
            aux, _ = aux_loss()
            (loss if aux is None else loss + model.aux_coef * aux).backward()
            for p in params.values():
                # an expert that no token chose has no gradient in torch, and AdamW would skip it;
                # alloy's gradient arena holds zeros for it, so that it decays and its moments
                # move on like any other parameter's: the same here
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if args.clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(list(params.values()), f32(args.clip))
            else:
                norm = torch.norm(torch.stack([torch.norm(p.grad, 2.0) for p in params.values()]), 2.0)
            opt.step()
            tl.append(loss.item())
            tn.append(float(norm))
            tr.append(lr)
        out["train_losses"] = torch.tensor(tl, dtype=torch.float32)
        out["train_grad_norms"] = torch.tensor(tn, dtype=torch.float32)
        out["train_lrs"] = torch.tensor(tr, dtype=torch.float32)

    st_write(out_path, out, {"producer": "tests/reference/twin.py", "torch": torch.__version__})

if __name__ == "__main__":
    main()
