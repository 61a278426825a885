#!/usr/bin/env python3
"""llmc_ref.py — independent readers and forwards of the llama2.c and llm.c checkpoint files,
the oracle of tests/test_llmc.c.

Written from the two formats as their own programs lay them out, without alloy:

  llama2.c (karpathy/llama2.c run.c, export.py): the legacy file is a header of 7 int32
  (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; vocab_size < 0 means an
  unshared classifier), then fp32 tensors in the order run.c maps them: token embedding (V, dim),
  rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim),
  rms_ffn (L, dim), w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final
  (dim), the old freq_cis tables (2 x (seq_len, head_size/2), skipped), then wcls (V, dim) when
  unshared. Version 1 ("ak42" magic, export.py's version1_export): a 256-byte header (magic,
  version, the 7 ints, a shared-classifier byte) and the tensors in the order rms_att, rms_ffn,
  rms_final, embedding, wq, wk, wv, wo, w1, w2, w3, [wcls]. The forward is run.c's, token by token
  with a KV cache, in float32: RMSNorm with eps 1e-5, RoPE on interleaved pairs (i, i+1) of each
  head with frequency 10000^(-(i mod head_size)/head_size), grouped-query attention (query head h
  reads KV head h / (n_heads / n_kv_heads)), SwiGLU w2(silu(w1 x) * w3 x), classifier.

  llm.c (karpathy/llm.c train_gpt2.c, train_gpt2.py): a header of 256 int32 (magic 20240326,
  version 3 = fp32 or 5 = bf16, max_seq_len, vocab_size V, num_layers, num_heads, channels C,
  padded_vocab_size Vp), then wte (Vp, C), wpe (maxT, C), ln1w (L, C), ln1b (L, C), qkvw
  (L, 3C, C), qkvb (L, 3C), attprojw (L, C, C), attprojb (L, C), ln2w, ln2b (L, C), fcw
  (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C), lnfw (C), lnfb (C); matrices are
  (out, in) as torch.nn.Linear. The forward is GPT-2's in torch (LayerNorm eps 1e-5, GELU tanh,
  causal attention), float32, logits over the first V rows of wte.

Commands (every output file is raw little-endian, written atomically):

  llama2c-make OUT --dim D --hidden F --layers L --heads H --kv-heads KV --vocab V --seq-len S
               [--unshared] [--version 0|1] --seed N
      a random model file (norm weights around 1, matrices N(0, 0.15^2)) as export.py writes it
  llama2c-run MODEL --tokens 1,2,3 --logits OUT      logits (T, V) float32 of every position
              [--greedy N --start ID --ids OUT]      and/or N greedy ids from ID (int32, N) with
                                                     the smallest top-1/top-2 margin on stderr
  gpt2-run MODEL --tokens 1,2,3 --logits OUT         logits (T, V) float32
  gpt2-bf16 IN OUT                                   a version 3 file as version 5 (bf16 by
                                                     torch's rounding, as train_gpt2.py writes)
  batch FILE                                         the commands above, one per line of FILE
                                                     (shell quoting), in one process: NumPy and
                                                     torch start once

Exit status 0 on success; 1 with a one-line message on stderr for any problem.
"""
import argparse
import math
import os
import struct
import sys


def fail(msg):
    sys.stderr.write("llmc_ref.py: %s\n" % msg)
    sys.exit(1)


# one thread: the products here are small, and threads only add start-up and spinning
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:
    import numpy as np
except ImportError as e:
    fail("needs NumPy (%s); on Debian/Ubuntu: apt-get install python3-numpy" % e)


def write_atomic(path, data):
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def parse_tokens(text):
    try:
        return [int(x) for x in text.split(",") if x != ""]
    except ValueError:
        fail("--tokens must be a comma-separated list of integers")


# ---- llama2.c ------------------------------------------------------------------------------

AK42 = 0x616B3432  # "ak42" read as a little-endian uint32: export.py's version-1 magic


def llama2c_read(path):
    """Returns (config dict, {name: float32 array}) with shapes as run.c uses them."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) >= 8 and struct.unpack("<I", raw[:4])[0] == AK42:
        version = struct.unpack("<i", raw[4:8])[0]
        if version != 1:
            fail("%s: llama2.c version %d not supported here" % (path, version))
        dim, hidden, L, H, KV, V, S = struct.unpack("<7i", raw[8:36])
        shared = raw[36] != 0
        pos = 256
    else:
        dim, hidden, L, H, KV, V, S = struct.unpack("<7i", raw[:28])
        version = 0
        shared = V > 0
        V = abs(V)
        pos = 28
    hs = dim // H
    kvd = dim * KV // H
    cfg = dict(dim=dim, hidden=hidden, L=L, H=H, KV=KV, V=V, S=S, hs=hs, kvd=kvd, shared=shared, version=version)
    w = {}

    def take(name, *shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + 4 * n > len(raw):
            fail("%s: truncated at %s" % (path, name))
        a = np.frombuffer(raw, dtype="<f4", count=n, offset=pos).astype(np.float32).reshape(shape)
        pos += 4 * n
        if name:
            w[name] = a

    if version == 0:  # run.c's memory_map_weights
        take("emb", V, dim)
        take("rms_att", L, dim)
        take("wq", L, dim, dim)
        take("wk", L, kvd, dim)
        take("wv", L, kvd, dim)
        take("wo", L, dim, dim)
        take("rms_ffn", L, dim)
        take("w1", L, hidden, dim)
        take("w2", L, dim, hidden)
        take("w3", L, hidden, dim)
        take("rms_final", dim)
        take(None, S, hs // 2)  # freq_cis_real
        take(None, S, hs // 2)  # freq_cis_imag
    else:  # export.py's version1_export
        take("rms_att", L, dim)
        take("rms_ffn", L, dim)
        take("rms_final", dim)
        take("emb", V, dim)
        take("wq", L, dim, dim)
        take("wk", L, kvd, dim)
        take("wv", L, kvd, dim)
        take("wo", L, dim, dim)
        take("w1", L, hidden, dim)
        take("w2", L, dim, hidden)
        take("w3", L, hidden, dim)
    if shared:
        w["wcls"] = w["emb"]
    else:
        take("wcls", V, dim)
    if pos != len(raw):
        fail("%s: %d bytes left after the weights" % (path, len(raw) - pos))
    return cfg, w


def rmsnorm(x, weight):
    ss = np.float32(np.dot(x, x)) / np.float32(x.shape[0]) + np.float32(1e-5)
    return weight * (x * np.float32(1.0 / math.sqrt(float(ss))))


class Llama2cRunner:
    """run.c's forward(token, pos): one token at a time, keys and values cached."""

    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        L, S, kvd = cfg["L"], cfg["S"], cfg["kvd"]
        self.kcache = np.zeros((L, S, kvd), np.float32)
        self.vcache = np.zeros((L, S, kvd), np.float32)
        hs = cfg["hs"]
        # per pair i (even index within the head): freq = 1 / 10000^(i / head_size), in float32
        i = np.arange(0, hs, 2, dtype=np.float32)
        self.kv_of_head = np.arange(cfg["H"]) // (cfg["H"] // cfg["KV"])
        self.freq = (np.float32(1.0) / np.power(np.float32(10000.0), i / np.float32(hs))).astype(np.float32)

    def rope(self, vec, pos, nheads):
        hs = self.c["hs"]
        v = vec.reshape(nheads, hs // 2, 2)
        val = (np.float32(pos) * self.freq).astype(np.float32)
        fcr, fci = np.cos(val).astype(np.float32), np.sin(val).astype(np.float32)
        v0, v1 = v[:, :, 0].copy(), v[:, :, 1].copy()
        v[:, :, 0] = v0 * fcr - v1 * fci
        v[:, :, 1] = v0 * fci + v1 * fcr
        return v.reshape(-1)

    def forward(self, token, pos):
        c, w = self.c, self.w
        dim, H, KV, hs = c["dim"], c["H"], c["KV"], c["hs"]
        x = w["emb"][token].copy()
        for l in range(c["L"]):
            xb = rmsnorm(x, w["rms_att"][l])
            q = w["wq"][l] @ xb
            k = w["wk"][l] @ xb
            v = w["wv"][l] @ xb
            q = self.rope(q, pos, H)
            k = self.rope(k, pos, KV)
            self.kcache[l, pos] = k
            self.vcache[l, pos] = v
            # every query head h at once, reading KV head h // (H / KV)
            qh = q.reshape(H, hs)
            keys = self.kcache[l, :pos + 1].reshape(pos + 1, KV, hs)[:, self.kv_of_head]  # (t, H, hs)
            vals = self.vcache[l, :pos + 1].reshape(pos + 1, KV, hs)[:, self.kv_of_head]
            att = np.einsum("hd,thd->ht", qh, keys).astype(np.float32) / np.float32(math.sqrt(hs))
            att = np.exp(att - att.max(axis=1, keepdims=True)).astype(np.float32)
            att /= att.sum(axis=1, keepdims=True)
            out = np.einsum("ht,thd->hd", att, vals).astype(np.float32).reshape(dim)
            x = x + w["wo"][l] @ out
            xb = rmsnorm(x, w["rms_ffn"][l])
            h1 = w["w1"][l] @ xb
            h3 = w["w3"][l] @ xb
            hb = h1 * (np.float32(1.0) / (np.float32(1.0) + np.exp(-h1))) * h3
            x = x + w["w2"][l] @ hb.astype(np.float32)
        x = rmsnorm(x, w["rms_final"])
        return (w["wcls"] @ x).astype(np.float32)


def cmd_llama2c_make(a):
    rng = np.random.default_rng(a.seed)
    dim, hidden, L, H, KV, V, S = a.dim, a.hidden, a.layers, a.heads, a.kv_heads, a.vocab, a.seq_len
    if dim % H or H % KV or (dim // H) % 2:
        fail("llama2c-make: inconsistent sizes")
    hs, kvd = dim // H, dim * KV // H

    def mat(*shape):
        return (0.15 * rng.standard_normal(shape)).astype(np.float32)

    def norm(*shape):
        return (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)

    t = dict(emb=(0.5 * rng.standard_normal((V, dim))).astype(np.float32), rms_att=norm(L, dim),
             wq=mat(L, dim, dim), wk=mat(L, kvd, dim), wv=mat(L, kvd, dim), wo=mat(L, dim, dim),
             rms_ffn=norm(L, dim), w1=mat(L, hidden, dim), w2=mat(L, dim, hidden), w3=mat(L, hidden, dim),
             rms_final=norm(dim))
    wcls = None if not a.unshared else (0.5 * rng.standard_normal((V, dim))).astype(np.float32)
    parts = []
    f32 = lambda arr: np.ascontiguousarray(arr, dtype="<f4").tobytes()
    if a.version == 0:
        parts.append(struct.pack("<7i", dim, hidden, L, H, KV, -V if a.unshared else V, S))
        for name in ("emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"):
            parts.append(f32(t[name]))
        # the legacy freq_cis tables, as model.py's precompute_freqs_cis makes them
        freqs = 1.0 / (10000.0 ** (np.arange(0, hs, 2)[: hs // 2].astype(np.float32) / hs))
        ang = np.outer(np.arange(S), freqs).astype(np.float32)
        parts.append(f32(np.cos(ang)))
        parts.append(f32(np.sin(ang)))
    else:
        head = struct.pack("<Ii7iB", AK42, 1, dim, hidden, L, H, KV, V, S, 0 if a.unshared else 1)
        parts.append(head + b"\0" * (256 - len(head)))
        for name in ("rms_att", "rms_ffn", "rms_final", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            parts.append(f32(t[name]))
    if wcls is not None:
        parts.append(f32(wcls))
    write_atomic(a.out, b"".join(parts))


def cmd_llama2c_run(a):
    cfg, w = llama2c_read(a.model)
    if a.tokens is not None:
        toks = parse_tokens(a.tokens)
        if not toks or len(toks) > cfg["S"] or min(toks) < 0 or max(toks) >= cfg["V"]:
            fail("--tokens: empty, longer than seq_len or outside the vocabulary")
        r = Llama2cRunner(cfg, w)
        logits = np.stack([r.forward(t, p) for p, t in enumerate(toks)])
        write_atomic(a.logits, np.ascontiguousarray(logits, dtype="<f4").tobytes())
    if a.greedy:
        if a.greedy >= cfg["S"]:
            fail("--greedy %d does not fit seq_len %d" % (a.greedy, cfg["S"]))
        r = Llama2cRunner(cfg, w)
        token, ids, margin, where = a.start, [], float("inf"), -1
        for pos in range(a.greedy):
            logits = r.forward(token, pos)
            top2 = np.sort(logits)[-2:]
            if top2[1] - top2[0] < margin:
                margin, where = float(top2[1] - top2[0]), pos
            token = int(np.argmax(logits))  # the first of equal maxima, as run.c's argmax
            ids.append(token)
        write_atomic(a.ids, np.asarray(ids, dtype="<i4").tobytes())
        sys.stderr.write("llmc_ref.py: greedy: smallest top-1/top-2 logit margin %.3g at step %d\n" % (margin, where))


# ---- llm.c GPT-2 ---------------------------------------------------------------------------

def gpt2_read(path):
    """Returns (config dict, {name: float32 torch tensor}) as train_gpt2.c lays the file out."""
    import torch
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 1024:
        fail("%s: shorter than the 1024-byte header" % path)
    header = np.frombuffer(raw, dtype="<i4", count=256)
    if header[0] != 20240326:
        fail("%s: bad magic %d" % (path, header[0]))
    version = int(header[1])
    if version not in (3, 5):
        fail("%s: unsupported version %d" % (path, version))
    maxT, V, L, NH, C, Vp = (int(x) for x in header[2:8])
    esize = 4 if version == 3 else 2
    shapes = [("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
              ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)),
              ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
              ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)), ("lnfw", (C,)), ("lnfb", (C,))]
    pos, w = 1024, {}
    for name, shape in shapes:
        n = int(np.prod(shape))
        if pos + esize * n > len(raw):
            fail("%s: truncated at %s" % (path, name))
        if version == 3:
            a = np.frombuffer(raw, dtype="<f4", count=n, offset=pos).astype(np.float32)
        else:  # bf16: the top 16 bits of a float32
            u = np.frombuffer(raw, dtype="<u2", count=n, offset=pos).astype(np.uint32) << 16
            a = u.view(np.float32)
        w[name] = torch.from_numpy(a.reshape(shape).copy())
        pos += esize * n
    if pos != len(raw):
        fail("%s: %d bytes left after the weights" % (path, len(raw) - pos))
    return dict(maxT=maxT, V=V, L=L, NH=NH, C=C, Vp=Vp, version=version), w


def gpt2_forward(cfg, w, tokens):
    import torch
    import torch.nn.functional as F
    V, C, NH, L = cfg["V"], cfg["C"], cfg["NH"], cfg["L"]
    T = len(tokens)
    idx = torch.tensor(tokens, dtype=torch.long)
    x = w["wte"][idx] + w["wpe"][:T]
    hd = C // NH
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = F.layer_norm(x, (C,), w["ln1w"][l], w["ln1b"][l], eps=1e-5)
        qkv = h @ w["qkvw"][l].T + w["qkvb"][l]
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(T, NH, hd).transpose(0, 1)
        k = k.view(T, NH, hd).transpose(0, 1)
        v = v.view(T, NH, hd).transpose(0, 1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + y @ w["attprojw"][l].T + w["attprojb"][l]
        h = F.layer_norm(x, (C,), w["ln2w"][l], w["ln2b"][l], eps=1e-5)
        h = h @ w["fcw"][l].T + w["fcb"][l]
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h.pow(3))))
        x = x + h @ w["fcprojw"][l].T + w["fcprojb"][l]
    x = F.layer_norm(x, (C,), w["lnfw"], w["lnfb"], eps=1e-5)
    return x @ w["wte"][:V].T


def need_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        fail("needs PyTorch (%s); on Debian/Ubuntu: apt-get install python3-torch" % e)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def cmd_gpt2_run(a):
    need_torch()
    import torch
    cfg, w = gpt2_read(a.model)
    toks = parse_tokens(a.tokens)
    if not toks or len(toks) > cfg["maxT"] or min(toks) < 0 or max(toks) >= cfg["V"]:
        fail("--tokens: empty, longer than max_seq_len or outside the vocabulary")
    with torch.no_grad():
        logits = gpt2_forward(cfg, w, toks)
    write_atomic(a.logits, logits.numpy().astype("<f4").tobytes())


def cmd_gpt2_bf16(a):
    need_torch()
    import torch
    with open(a.input, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, dtype="<i4", count=256).copy()
    if header[0] != 20240326 or header[1] != 3:
        fail("%s: not an llm.c version 3 file" % a.input)
    header[1] = 5
    w32 = torch.from_numpy(np.frombuffer(raw, dtype="<f4", offset=1024).copy())
    b16 = w32.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")  # train_gpt2.py's write_bf16
    write_atomic(a.out, header.astype("<i4").tobytes() + b16.tobytes())


COMMANDS = {"llama2c-make": cmd_llama2c_make, "llama2c-run": cmd_llama2c_run, "gpt2-run": cmd_gpt2_run,
            "gpt2-bf16": cmd_gpt2_bf16}


def cmd_batch(parser, a):
    import shlex
    try:
        with open(a.file) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except OSError as e:
        fail(str(e))
    for i, line in enumerate(lines):
        sub = parser.parse_args(shlex.split(line))
        if sub.cmd == "batch":
            fail("%s:%d: a batch cannot run a batch" % (a.file, i + 1))
        COMMANDS[sub.cmd](sub)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("llama2c-make")
    m.add_argument("out")
    for k in ("dim", "hidden", "layers", "heads", "kv-heads", "vocab", "seq-len", "seed"):
        m.add_argument("--" + k, type=int, required=True)
    m.add_argument("--unshared", action="store_true")
    m.add_argument("--version", type=int, choices=(0, 1), default=0)
    r = sub.add_parser("llama2c-run")
    r.add_argument("model")
    r.add_argument("--tokens")
    r.add_argument("--logits")
    r.add_argument("--greedy", type=int, default=0)
    r.add_argument("--start", type=int, default=1)
    r.add_argument("--ids")
    g = sub.add_parser("gpt2-run")
    g.add_argument("model")
    g.add_argument("--tokens", required=True)
    g.add_argument("--logits", required=True)
    b = sub.add_parser("gpt2-bf16")
    b.add_argument("input")
    b.add_argument("out")
    t = sub.add_parser("batch")
    t.add_argument("file")
    a = p.parse_args()
    try:
        if a.cmd == "batch":
            cmd_batch(p, a)
        else:
            COMMANDS[a.cmd](a)
    except OSError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
