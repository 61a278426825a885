#!/usr/bin/env python3
"""train_ref.py — the PyTorch reference of bench/train_bench: full training steps (forward,
cross-entropy, backward, clip_grad_norm_(1.0), AdamW) of the PyTorch twin of alloy's models
(tests/reference/twin.py), timed the same way, one configuration per process.

    /usr/bin/python3 bench/train_ref.py --load DIR --threads 2 --steps 3 --warmup 1
    /usr/bin/python3 bench/train_ref.py --model gpt2 --batch 4 --seq 64 --threads 2

--load DIR starts from what `train_bench --save DIR` wrote: config.json, model.safetensors (the
initial weights) and tokens.bin ((B, T+1) int32; inputs [:, :T], targets [:, 1:]), so that the
loss of every step can be compared with alloy's. Without it, the model is built from alloy's
preset table (the same sizes as src/model/config.c) with GPT-2-style random initial weights and
random tokens. Every step trains on the same batch, as train_bench does, with alloy's defaults:
lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on tensors of two dimensions or more,
global gradient-norm clip 1.0, no schedule.

Prints one JSON line on stdout (the keys of train_bench's): tokens/s, seconds per step, the loss
of every step, peak RSS (getrusage ru_maxrss), the share of the machine's CPU time that other
processes took during the timed steps (/proc/stat less our own), parameter count, FLOPs per token
(6·N + 12·L·T·C, N as in train_bench: parameters in matrix products). Weights are read straight
into the parameters (no second copy), so the peak RSS is that of training. Run with Debian's
/usr/bin/python3 (python3-torch); the thread count is set with torch.set_num_threads, and
OMP_NUM_THREADS / OPENBLAS_CORETYPE should be set in the environment before start, as for alloy.
Exit status 0 on success, 1 with a message on stderr on any problem.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:
    sys.stderr.write("train_ref.py: needs PyTorch and NumPy (%s); on Debian/Ubuntu: "
                     "apt-get install python3-torch python3-numpy, and run with /usr/bin/python3\n" % e)
    sys.exit(1)
import twin  # noqa: E402  (imports torch too; sets no global modes at import)

# alloy's presets (src/model/config.c): family, max T, L, H, KV, C, F
PRESETS = {
    "tiny-gpt2": ("gpt2", 128, 2, 4, 4, 64, 256),
    "tiny-llama": ("llama", 128, 2, 4, 2, 64, 176),
    "small-gpt2": ("gpt2", 256, 4, 4, 4, 256, 1024),
    "small-llama": ("llama", 256, 4, 8, 4, 256, 688),
    "gpt2": ("gpt2", 1024, 12, 12, 12, 768, 3072),
    "gpt2-medium": ("gpt2", 1024, 24, 16, 16, 1024, 4096),
    "llama-110m": ("llama", 1024, 12, 12, 4, 768, 2048),
}


def fail(msg):
    sys.stderr.write("train_ref.py: %s\n" % msg)
    sys.exit(1)


def preset_config(name):
    """A Hugging Face config dict for one of alloy's presets (vocab as train_bench chooses)."""
    if name not in PRESETS:
        fail("--model: unknown preset %r (known: %s)" % (name, ", ".join(PRESETS)))
    fam, maxT, L, H, KV, C, Fd = PRESETS[name]
    if fam == "gpt2":
        return {"model_type": "gpt2", "vocab_size": 50257, "n_positions": maxT, "n_layer": L, "n_head": H,
                "n_embd": C, "n_inner": Fd, "layer_norm_epsilon": 1e-5}
    return {"model_type": "llama", "vocab_size": 32000, "max_position_embeddings": maxT, "num_hidden_layers": L,
            "num_attention_heads": H, "num_key_value_heads": KV, "hidden_size": C, "intermediate_size": Fd,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False}


def build(cfg):
    if cfg.get("model_type") == "gpt2":
        return twin.GPT2LMHeadModel(cfg)
    if cfg.get("model_type") == "llama":
        return twin.LlamaForCausalLM(cfg)
    fail("unsupported model_type %r" % cfg.get("model_type"))


def init_random(model, L, seed):
    """GPT-2-style initial weights, as alloy_model_init_weights (not the same numbers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(0.0 if name.endswith(".bias") else 1.0)
            else:
                resid = name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight", "o_proj.weight", "down_proj.weight"))
                p.normal_(0.0, 0.02 / math.sqrt(2 * L) if resid else 0.02, generator=g)


def load_weights(model, path):
    """Reads model.safetensors (F32, as alloy_model_save writes it) into the parameters in place."""
    params = dict(model.named_parameters())
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n).decode("utf-8"))
        header.pop("__metadata__", None)
        base = 8 + n
        if set(header) != set(params):
            fail("%s: tensor names differ from the twin's: %s" % (path, sorted(set(header) ^ set(params))))
        for name, info in header.items():
            p = params[name]
            begin, end = info["data_offsets"]
            if info["dtype"] != "F32" or list(info["shape"]) != list(p.shape) or end - begin != p.numel() * 4:
                fail("%s: tensor %r is %s %s, expected F32 %s" % (path, name, info["dtype"], info["shape"],
                                                                   list(p.shape)))
            f.seek(base + begin)
            buf = p.data.numpy().reshape(-1).view(np.uint8)
            if f.readinto(buf) != buf.nbytes:
                fail("%s: truncated at tensor %r" % (path, name))


def matmul_params(model, cfg):
    """Parameters in matrix products: all but look-up-only embedding tables (GPT-2's wpe, an untied
    Llama's embed_tokens); a tied GPT-2 wte is counted once (named_parameters yields it once)."""
    n = 0
    for name, p in model.named_parameters():
        if name == "transformer.wpe.weight":
            continue
        if name == "model.embed_tokens.weight" and not cfg.get("tie_word_embeddings", False):
            continue
        n += p.numel()
    return n


def cpu_seconds():
    """(busy CPU seconds of the whole machine from /proc/stat, CPU seconds of this process)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        machine = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        machine = None
    return machine, ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference of bench/train_bench")
    ap.add_argument("--load", help="folder written by train_bench --save (weights and batch)")
    ap.add_argument("--model", help="alloy preset (with --load: only the name reported)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        fail("--steps must be >= 1, --warmup >= 0, --threads >= 1")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.load:
        try:
            with open(os.path.join(args.load, "config.json")) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            fail("%s: %s" % (args.load, e))
        model = build(cfg)
        load_weights(model, os.path.join(args.load, "model.safetensors"))
        tok = np.fromfile(os.path.join(args.load, "tokens.bin"), dtype="<i4")
        B = args.batch
        if tok.size % B:
            fail("%s/tokens.bin: %d tokens do not make %d rows" % (args.load, tok.size, B))
        tok = torch.from_numpy(tok.astype(np.int64).reshape(B, -1))
        T = tok.shape[1] - 1
        name = args.model or os.path.basename(os.path.normpath(args.load))
    else:
        if not args.model:
            fail("give --load DIR or --model PRESET")
        cfg = preset_config(args.model)
        model = build(cfg)
        B, T = args.batch, args.seq
        L = int(cfg.get("n_layer") or cfg.get("num_hidden_layers"))
        init_random(model, L, args.seed)
        tok = torch.randint(0, int(cfg["vocab_size"]), (B, T + 1))
        name = args.model
    inputs, targets = tok[:, :T].contiguous(), tok[:, 1:].contiguous()
    gpt2 = cfg["model_type"] == "gpt2"
    L = int(cfg["n_layer"] if gpt2 else cfg["num_hidden_layers"])
    C = int(cfg["n_embd"] if gpt2 else cfg["hidden_size"])
    V = int(cfg["vocab_size"])

    params = dict(model.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    plist = list(params.values())
    losses, secs = [], []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            m0, s0 = cpu_seconds()
            w0 = time.perf_counter()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0)
        opt.step()
        lv = loss.item()
        secs.append(time.perf_counter() - t0)
        losses.append(lv)
        sys.stderr.write("train_ref.py: %s B=%d T=%d step %d/%d%s: loss %.5f, %.3f s\n"
                         % (name, B, T, step + 1, args.warmup + args.steps,
                            " (warm-up)" if step < args.warmup else "", lv, secs[-1]))
    m1, s1 = cpu_seconds()
    wall = time.perf_counter() - w0
    others = -1.0
    if m0 is not None and m1 is not None:
        others = max(0.0, ((m1 - m0) - (s1 - s0)) / (wall * os.cpu_count()))
    timed = secs[args.warmup:]
    mean = sum(timed) / len(timed)
    n_all = sum(p.numel() for p in plist)
    n_mm = matmul_params(model, cfg)
    out = {
        "impl": "pytorch", "model": name, "B": B, "T": T, "precision": "f32", "recompute": False,
        "threads": torch.get_num_threads(), "status": "ok", "family": cfg["model_type"], "L": L, "C": C, "V": V,
        "params": n_all, "params_matmul": n_mm, "flops_per_token": 6 * n_mm + 12 * L * T * C,
        "warmup": args.warmup, "steps": args.steps, "sec_per_step": round(mean, 4), "sec_min": round(min(timed), 4),
        "tokens_per_s": round(B * T / mean, 2), "others_cpu_share": round(others, 3),
        "secs": [round(x, 4) for x in secs],
        "losses": [round(x, 6) for x in losses],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""), "torch": torch.__version__,
        "loaded": bool(args.load),
    }
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
