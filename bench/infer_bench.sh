#!/usr/bin/env bash
# Inference speed: the engine of src/infer/ (bench/infer_bench: prefill and decode tokens/s for
# f32, q8_0 and q4_0 weights on 1 and 2 threads, the read bandwidth it measures and the decode
# limit that implies) against PyTorch running a KV-cache GPT-2 on the same weights and tokens in
# the same run, printed as ratios (never asserted). "of limit" is the best decode against the best
# bandwidth of the run; "paired" the median, over 16-step slices of decode, of each slice against
# the bandwidth read just before and after it (the figure to trust where the bandwidth moves).
#
#   bash bench/infer_bench.sh                       # GPT-2 124M: about 2 minutes on 2 quiet cores
#   PREFILL=128 DECODE=32 bash bench/infer_bench.sh # a quick run
#
# The C bench checks every engine's logits (fp32 against the model's own forward, the quantised
# ones against fp32) before timing and writes the model, the check tokens and the fp32 logits;
# the PyTorch side loads that model.safetensors and must reproduce those logits (relative L2
# error < 1e-4) before it is timed. PyTorch: prefill = one forward over PREFILL tokens; decode =
# DECODE steps of one token each with a preallocated KV cache, after a one-token prompt, as the
# C bench does (torch.inference_mode; attention as matmul, mask, softmax, matmul: Debian's torch
# 1.13 has no fused attention).
#
# Environment: BUILD (build), PRESET (gpt2), FORMATS (f32,q8_0,q4_0), THREADS (1,2), PREFILL
# (512), DECODE (128), REPS (3: rounds over every variant, the best kept), BATCH (8: also that
# many sequences decoded together, alloy only; 0 skips it), PYTHON (/usr/bin/python3, with torch). OPENBLAS_CORETYPE is set
# to SkylakeX on AVX-512 CPUs (OpenBLAS 0.3.21 would take Haswell's kernels). On a shared machine
# take /tmp/alloy-bench.lock around the whole script (flock), not inside.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${INFER_BENCH:-$PWD/$BUILD/bench/infer_bench}
PY=${PYTHON:-/usr/bin/python3}
PRESET=${PRESET:-gpt2}
FORMATS=${FORMATS:-f32,q8_0,q4_0}
THREADS=${THREADS:-1,2}
PREFILL=${PREFILL:-512}
DECODE=${DECODE:-128}
REPS=${REPS:-3}
BATCH=${BATCH:-8}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "infer_bench: $*" >&2; exit 1; }

if [ ! -x "$BIN" ]; then
  make -s BUILD="$BUILD" "$BUILD/bench/infer_bench" >&2 || fail "cannot build $BIN"
fi
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qm1 avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
if [ "${OPENBLAS_CORETYPE:-}" != SkylakeX ] && grep -qm1 avx512f /proc/cpuinfo; then
  echo "infer_bench: note: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE was set before this script on an AVX-512 CPU; prefill runs OpenBLAS's AVX2 kernels (unset it, or set SkylakeX, for the AVX-512 ones)" >&2
fi
echo "infer_bench: $PRESET, prefill $PREFILL, decode $DECODE, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

"$BIN" --preset "$PRESET" --formats "$FORMATS" --threads "$THREADS" --prefill "$PREFILL" --decode "$DECODE" \
  --reps "$REPS" --batch "$BATCH" --save "$T/model" | tee "$T/alloy.txt" | grep -v '^RESULT' || fail "the C bench failed"
grep '^RESULT' "$T/alloy.txt" | sed 's/^RESULT //' >"$T/results.jsonl"

if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
  echo "infer_bench: $PY cannot import torch: no PyTorch comparison (apt-get install python3-torch)"
  exit 0
fi
"$PY" - "$T/model" "$THREADS" "$PREFILL" "$DECODE" "$REPS" >>"$T/results.jsonl" <<'EOF' || fail "the PyTorch side failed"
import json, math, os, struct, sys, time
import numpy as np
import torch
import torch.nn.functional as F

d, threads, n_pre, n_dec, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cfg = json.load(open(os.path.join(d, "config.json")))
if cfg.get("model_type") != "gpt2":
    sys.exit("infer_bench: the PyTorch side runs GPT-2 models only")
C, L, H, V, maxT = cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"], cfg["n_positions"]
eps, hd = cfg["layer_norm_epsilon"], cfg["n_embd"] // cfg["n_head"]
W = {}
with open(os.path.join(d, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    base = 8 + n
    for name, info in header.items():
        a, b = info["data_offsets"]
        f.seek(base + a)
        W[name] = torch.from_numpy(np.frombuffer(f.read(b - a), dtype=np.float32).reshape(info["shape"]).copy())
p = lambda s: W["transformer." + s]

def attend(q, k, v, pos0):
    """softmax(q·kᵀ/√hd)·v with the causal mask of queries at positions pos0..: (H, T, hd)."""
    s = torch.matmul(q, k.transpose(1, 2)) * (1.0 / math.sqrt(hd))
    T, n = q.shape[1], k.shape[1]
    if T > 1:
        mask = torch.arange(n)[None, :] > (pos0 + torch.arange(T))[:, None]
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)

def forward(idx, pos0, K, Vc, last_only):
    T = idx.shape[0]
    x = p("wte.weight")[idx] + p("wpe.weight")[pos0:pos0 + T]
    for l in range(L):
        h = F.layer_norm(x, (C,), p(f"h.{l}.ln_1.weight"), p(f"h.{l}.ln_1.bias"), eps)
        qkv = torch.addmm(p(f"h.{l}.attn.c_attn.bias"), h, p(f"h.{l}.attn.c_attn.weight"))
        q, k, v = qkv.split(C, dim=1)
        K[l][:, pos0:pos0 + T] = k.view(T, H, hd).transpose(0, 1)
        Vc[l][:, pos0:pos0 + T] = v.view(T, H, hd).transpose(0, 1)
        y = attend(q.view(T, H, hd).transpose(0, 1), K[l][:, :pos0 + T], Vc[l][:, :pos0 + T], pos0)
        x = torch.addmm(x, y.transpose(0, 1).reshape(T, C), p(f"h.{l}.attn.c_proj.weight")) + p(f"h.{l}.attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p(f"h.{l}.ln_2.weight"), p(f"h.{l}.ln_2.bias"), eps)
        u = F.gelu(torch.addmm(p(f"h.{l}.mlp.c_fc.bias"), h, p(f"h.{l}.mlp.c_fc.weight")), approximate="tanh")
        x = torch.addmm(x, u, p(f"h.{l}.mlp.c_proj.weight")) + p(f"h.{l}.mlp.c_proj.bias")
    if last_only:
        x = x[-1:]
    x = F.layer_norm(x, (C,), p("ln_f.weight"), p("ln_f.bias"), eps)
    return x @ p("wte.weight").t()

def new_cache():
    return [torch.zeros(H, maxT, hd) for _ in range(L)], [torch.zeros(H, maxT, hd) for _ in range(L)]

with open(os.path.join(d, "check.bin"), "rb") as f:
    n = struct.unpack("<i", f.read(4))[0]
    toks = torch.from_numpy(np.frombuffer(f.read(4 * n), dtype=np.int32).astype(np.int64))
    ref = np.frombuffer(f.read(), dtype=np.float32).reshape(n, V)
with open(os.path.join(d, "tokens.bin"), "rb") as f:
    n = struct.unpack("<i", f.read(4))[0]
    tokens = torch.from_numpy(np.frombuffer(f.read(4 * n), dtype=np.int32).astype(np.int64))
with torch.inference_mode():
    K, Vc = new_cache()
    out = forward(toks, 0, K, Vc, False).numpy()
    err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
    # and token by token through the cache
    K, Vc = new_cache()
    step = np.stack([forward(toks[i:i + 1], i, K, Vc, True).numpy()[0] for i in range(len(toks))])
    err2 = float(np.linalg.norm(step - ref) / np.linalg.norm(ref))
    print("# PyTorch %s: logits against alloy's fp32 engine: rel L2 %.2e (prefill), %.2e (decode)" % (torch.__version__, err, err2),
          file=sys.stderr)
    if err > 1e-4 or err2 > 1e-4:
        sys.exit("infer_bench: PyTorch's logits differ from alloy's")
    ts = [int(x) for x in threads.split(",")]
    best_p, best_d = {t: 1e30 for t in ts}, {t: 1e30 for t in ts}
    for _ in range(reps):  # rounds over the thread counts, as the C bench
        for t in ts:
            torch.set_num_threads(t)
            K, Vc = new_cache()
            t0 = time.perf_counter()
            forward(tokens[:n_pre], 0, K, Vc, True)
            best_p[t] = min(best_p[t], time.perf_counter() - t0)
            K, Vc = new_cache()
            forward(tokens[:1], 0, K, Vc, True)
            t0 = time.perf_counter()
            for k in range(n_dec):
                forward(tokens[1 + k:2 + k], 1 + k, K, Vc, True)
            best_d[t] = min(best_d[t], time.perf_counter() - t0)
    for t in ts:
        print(json.dumps({"impl": "pytorch", "format": "f32", "threads": t, "prefill_tps": n_pre / best_p[t],
                          "decode_tps": n_dec / best_d[t]}))
EOF

"$PY" - "$T/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = {r["threads"]: r for r in rows if r["impl"] == "pytorch"}
print()
print("%-22s %3s  %11s %8s  %10s %8s  %9s  %7s  %s" % ("", "thr", "prefill t/s", "x torch", "decode t/s", "x torch",
                                                       "of limit", "paired", "batch decode t/s"))
for r in rows:
    t = torch.get(r["threads"])
    name = "alloy %s" % r["format"] if r["impl"] == "alloy" else "pytorch f32"
    lim = r["bandwidth"] / r["bytes_per_token"] if "bandwidth" in r else None
    print("%-22s %3d  %11.1f %8s  %10.1f %8s  %9s  %7s  %s" % (
        name, r["threads"], r["prefill_tps"], "%.2fx" % (r["prefill_tps"] / t["prefill_tps"]) if t else "-",
        r["decode_tps"], "%.2fx" % (r["decode_tps"] / t["decode_tps"]) if t else "-",
        "%.0f%%" % (100 * r["decode_tps"] / lim) if lim else "-",
        "%.0f%%" % (100 * r["paired_fraction"]) if r.get("pairs") else "-",
        "%.1f (B=%d)" % (r["batch_decode_tps"], r["batch"]) if r.get("batch", 0) > 1 else "-"))
print("\nreference figures for llama.cpp on this machine, GPT-2 124M, 2 threads (not measured here): prefill 512\n"
      "tokens ~850 t/s (f32), ~870 (q8_0); decode ~84 t/s (f32), ~137 (f16), ~166 (q8_0)")
EOF
