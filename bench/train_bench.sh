#!/usr/bin/env bash
# Training speed: full steps (forward, cross-entropy, backward, gradient clip, AdamW) of alloy
# (fp32, bf16, fp32 with recomputation) against the PyTorch reference (Debian's python3-torch
# running tests/reference/twin.py's models) on the same configuration, batch, weights and thread
# count, for GPT-2 124M at B=4,T=64 and B=8,T=256 and Llama 110M at B=8,T=256.
#
#   bash bench/train_bench.sh                 # about 8 minutes on 2 quiet cores
#   CONFIGS="small-gpt2:2:32" STEPS=2 bash bench/train_bench.sh   # a quick run
#
# Each variant runs in its own process (bench/train_bench for alloy, bench/train_ref.py for
# PyTorch), so that its peak RSS (getrusage) is its own. The alloy fp32 run writes its initial
# weights and batch, and the other runs start from them; every run trains on that one batch, and
# the loss of every step is checked against PyTorch's (bf16 against alloy fp32's, looser) before
# any figure is printed: a mismatch or a crash fails the benchmark. A variant the library refuses
# (bf16 without its kernels) is shown as n/a with the library's message. The machine's fp32 FMA
# peak is measured first (train_bench --peak); MFU is achieved FLOP/s against it, with
# FLOPs/token = 6·N + 12·L·T·C. Targets (fp32 MFU, ratio to PyTorch, bf16 gain, memory) are
# printed with whether they are met, not asserted.
#
# Environment: BUILD (build), CONFIGS ("preset:B:T ..."), VARIANTS ("f32 bf16 f32-recompute
# pytorch"), STEPS / WARMUP (timed / untimed steps, default per config), THREADS (nproc),
# PYTHON (/usr/bin/python3, which must have torch). OPENBLAS_CORETYPE is set to SkylakeX for
# both alloy and PyTorch when the CPU has avx512f (OpenBLAS 0.3.21 takes Zen 4/5 for Haswell).
# Take /tmp/alloy-bench.lock around the whole script on a shared machine (flock), not inside.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BENCH=${TRAIN_BENCH:-$PWD/$BUILD/bench/train_bench}
PY=${PYTHON:-/usr/bin/python3}
CONFIGS=${CONFIGS:-"gpt2:4:64 gpt2:8:256 llama-110m:8:256"}
VARIANTS=${VARIANTS:-"f32 bf16 f32-recompute pytorch"}
THREADS=${THREADS:-$(nproc)}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "train_bench: $*" >&2; exit 1; }

if [ ! -x "$BENCH" ]; then
  make -s BUILD="$BUILD" "$BUILD/bench/train_bench" >&2 || fail "cannot build $BENCH (make BUILD=$BUILD $BUILD/bench/train_bench)"
fi
[ -x "$PY" ] || fail "no $PY: the PyTorch reference needs Debian's python3 with python3-torch (apt-get install python3-torch python3-numpy)"
"$PY" -c 'import torch, numpy' 2>/dev/null \
  || fail "$PY cannot import torch and numpy: apt-get install python3-torch python3-numpy (or set PYTHON to an interpreter with torch)"

export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
coretype_note="left as found"
if grep -qw avx512f /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
  coretype_note="set by this script: the CPU has avx512f, OpenBLAS 0.3.21 would pick Haswell (AVX2) kernels"
fi

# One process; its JSON line goes to results.jsonl, its progress to a log shown on failure.
run() { # LOG CMD...
  local log=$1; shift
  local out
  out=$("$@" 2>"$T/$log.err") || fail "$log failed (exit $?): $(tail -5 "$T/$log.err") $out"
  echo "$out" | grep -q '^{' || fail "$log printed no result: $(tail -5 "$T/$log.err")"
  echo "$out" | grep '^{' | tail -1 >>"$T/results.jsonl"
}

echo "measuring the fp32 FMA peak ($THREADS threads)..." >&2
run peak "$BENCH" --peak
for cfg in $CONFIGS; do
  IFS=: read -r model B S <<<"$cfg"
  [ -n "$model" ] && [ -n "$B" ] && [ -n "$S" ] || fail "CONFIGS: '$cfg' is not preset:B:T"
  # 2 warm-up steps (PyTorch's first steps are slow: AdamW state is created lazily and its
  # allocator settles only after the first step's buffers have been freed and taken again), then
  # 3 timed steps for small batches and 2 for large ones (a PyTorch step of GPT-2 124M at
  # B=8,T=256 takes about 13 s here)
  steps=${STEPS:-$([ $((B * S)) -le 512 ] && echo 3 || echo 2)}
  warm=${WARMUP:-2}
  common=(--model "$model" --batch "$B" --seq "$S" --steps "$steps" --warmup "$warm")
  save="$T/$model-$B-$S"
  for v in $VARIANTS; do
    echo "$model B=$B T=$S: $v..." >&2
    case $v in
      f32) run "$model-$B-$S-$v" "$BENCH" "${common[@]}" --precision f32 --save "$save" ;;
      bf16) run "$model-$B-$S-$v" "$BENCH" "${common[@]}" --precision bf16 ;;
      f32-recompute) run "$model-$B-$S-$v" "$BENCH" "${common[@]}" --precision f32 --recompute ;;
      bf16-recompute) run "$model-$B-$S-$v" "$BENCH" "${common[@]}" --precision bf16 --recompute ;;
      pytorch)
        if [ -d "$save" ]; then
          run "$model-$B-$S-$v" "$PY" bench/train_ref.py --load "$save" --model "$model" --batch "$B" --threads "$THREADS" \
            --steps "$steps" --warmup "$warm"
        else # no alloy fp32 run to start from: random weights, no loss check
          run "$model-$B-$S-$v" "$PY" bench/train_ref.py --model "$model" --batch "$B" --seq "$S" \
            --threads "$THREADS" --steps "$steps" --warmup "$warm"
        fi ;;
      *) fail "VARIANTS: unknown variant '$v' (f32 bf16 f32-recompute bf16-recompute pytorch)" ;;
    esac
  done
  rm -rf "$save"
done

blas=$(ldd "$BENCH" 2>/dev/null | awk '/libopenblas/ {print $3}')
blas_real=$(readlink -f "$blas" 2>/dev/null)
blas_pkg=$(dpkg -S "$blas_real" 2>/dev/null | cut -d: -f1-2)
[ -n "$blas_pkg" ] && blas_pkg="$blas_pkg $(dpkg-query -W -f='${Version}' "${blas_pkg%%:*}" 2>/dev/null)"
torch_blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null)
echo "== training steps: alloy against PyTorch (forward, loss, backward, clip, AdamW) =="
echo "machine:  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus;" \
  "$THREADS threads (OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=$THREADS, torch.set_num_threads($THREADS))"
echo "kernels:  alloy f32: OpenBLAS sgemm, ${blas_real:-not linked}${blas_pkg:+ ($blas_pkg)};"
echo "          alloy bf16: alloy's own AVX-512 BF16 gemm (vdpbf16ps, fp32 accumulation), OpenBLAS elsewhere;"
echo "          PyTorch $("$PY" -c 'import torch; print(torch.__version__)') (Debian python3-torch): BLAS through" \
  "${torch_blas:-libblas.so.3}, eager mode;"
echo "          OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} for both ($coretype_note)"
HAS_BF16=$(grep -qw avx512_bf16 /proc/cpuinfo && echo 1 || echo 0) "$PY" - "$T/results.jsonl" <<'EOF'
import json, os, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
peak = next(r for r in rows if r.get("mode") == "peak")
runs = [r for r in rows if r.get("mode") != "peak"]
P = peak.get("fp32_fma_gflops")
BUSY = 0.10  # a run during which other processes took more of the machine than this is flagged
print("peak:     fp32 FMA %s GFLOP/s measured now (%s, %s threads, best of 3 x 0.5 s);"
      % (P, peak.get("fma_loop", "vfmadd231ps zmm, 16 chains a thread"), peak.get("threads")))
if peak.get("others_cpu_share", 0) > BUSY:
    print("          CONTENDED: other processes took %.0f%% of the machine while it was measured; MFU is overstated"
          % (100 * peak["others_cpu_share"]))
print("          bf16 dot %s GFLOP/s (vdpbf16ps zmm), for information" % peak.get("bf16_dot_gflops"))
print("FLOPs:    per token = 6·N + 12·L·T·C, N = parameters in matrix products (all but look-up-only")
print("          embeddings: GPT-2's wpe, Llama's untied embed_tokens; GPT-2's tied wte counts once)")
seen = set()
for r in runs:
    if r["status"] != "ok" or (r["model"], r["T"]) in seen or r["impl"] != "alloy":
        continue
    seen.add((r["model"], r["T"]))
    print("          %s T=%d: 6 x %d + 12 x %d x %d x %d = %.4g FLOPs/token (%d parameters in all)"
          % (r["model"], r["T"], r["params_matmul"], r["L"], r["T"], r["C"], r["flops_per_token"], r["params"]))
print("MFU:      achieved GFLOP/s (tokens/s x FLOPs/token) / the measured fp32 FMA peak (bf16 rows too)")
print("timing:   steps W+N: W untimed warm-up steps, then s/step = the mean of N timed steps; every step trains on one")
print("          batch of random tokens; alloy's weights are GPT-2-style random, PyTorch starts from the same")
print("others:   the share of the machine's CPU time other processes took during the timed steps (/proc/stat")
print("          less the run's own); over %.0f%% the row is marked * and its figures are not this program's alone" % (100 * BUSY))
print("check:    loss of every step against PyTorch's: f32 and recompute within 1e-3 relative, bf16 within")
print("          2e-2 of alloy f32's")
print()

configs = []
for r in runs:
    key = (r["model"], r["B"], r["T"])
    if key not in configs:
        configs.append(key)

def variant(r):
    if r["impl"] == "pytorch":
        return "PyTorch f32"
    return "alloy " + r["precision"] + (" recompute" if r["recompute"] else "")

def find(key, impl, precision="f32", recompute=False):
    for r in runs:
        if (r["model"], r["B"], r["T"]) == key and r["impl"] == impl and r["precision"] == precision \
                and r["recompute"] == recompute:
            return r
    return None

def rel_diff(a, b):
    return max(abs(x - y) / max(abs(y), 1e-6) for x, y in zip(a, b))

failures, mem_lines, ratio_lines, summary = [], [], [], {}
hdr = "%-20s %-21s %5s %7s %7s %9s %8s %6s %9s %9s %7s %15s  %s" % (
    "config", "impl", "steps", "others", "s/step", "tokens/s", "GFLOP/s", "MFU %", "xPyTorch", "RSS MB", "B/param", "loss first>last",
    "check")
print(hdr)
print("-" * len(hdr))
for key in configs:
    model, B, T = key
    name = "%s B=%d T=%d" % key
    ref = find(key, "pytorch")
    f32 = find(key, "alloy")
    for r in [x for x in runs if (x["model"], x["B"], x["T"]) == key]:
        if r["status"] != "ok":
            msg = r.get("error", "")
            if r["precision"] == "bf16" and os.environ.get("HAS_BF16") == "1" and "lacks" in msg:
                msg += " [the CPU has avx512_bf16: this build's gemm_bf16 reports no support]"
            print("%-20s %-21s %5s %7s %7s   n/a: %s" % (name, variant(r), "", "", "n/a", msg))
            summary[(key, variant(r))] = None
            continue
        tps = r["tokens_per_s"]
        gf = tps * r["flops_per_token"] / 1e9
        mfu = 100.0 * gf / P if P else float("nan")
        x = tps / ref["tokens_per_s"] if ref and ref["status"] == "ok" else None
        # the check: against PyTorch (same weights and batch) for fp32, against alloy fp32 for bf16
        if r["impl"] == "pytorch":
            check = "reference"
        else:
            base = ref if r["precision"] == "f32" else f32
            tol = 1e-3 if r["precision"] == "f32" else 2e-2
            if base is None or base.get("status") != "ok" or base is r:
                base = ref if r["precision"] == "bf16" else None
            if base is ref and ref is not None and not ref.get("loaded"):
                base = None  # PyTorch started from its own random weights
            if r["precision"] == "f32" and (ref is None or not ref.get("loaded")):
                check = "unchecked (no PyTorch run)"
            elif base is None or not base.get("losses"):
                check = "unchecked"
            elif len(base["losses"]) != len(r["losses"]) or base["flops_per_token"] != r["flops_per_token"]:
                check = "MISMATCH (different steps or model)"
                failures.append("%s %s: steps or model differ from %s" % (name, variant(r), variant(base)))
            else:
                d = rel_diff(r["losses"], base["losses"])
                ok = d <= tol
                check = "%s (%.1e vs %s)" % ("ok" if ok else "MISMATCH", d, "PyTorch" if base is ref else "f32")
                if r["precision"] == "bf16" and base is f32 and d == 0.0:
                    check += ", bitwise f32: bf16 unused?"
                if not ok:
                    failures.append("%s %s: losses %s differ from %s's %s by %.2e relative (tolerance %g)"
                                    % (name, variant(r), r["losses"], variant(base), base["losses"], d, tol))
        rss = r["peak_rss_bytes"]
        oth = r.get("others_cpu_share", -1)
        print("%-20s %-21s %5s %7s %7.3f %9.1f %8.1f %6.1f %9s %9.0f %7.1f %7.3f>%-7.3f  %s" % (
            name, variant(r), "%d+%d" % (r["warmup"], r["steps"]),
            "?" if oth < 0 else "%3.0f%%%s" % (100 * oth, "*" if oth > BUSY else " "), r["sec_per_step"], tps, gf, mfu, "%.2fx" % x if x else "-", rss / 2**20,
            rss / r["params"], r["losses"][0], r["losses"][-1], check))
        summary[(key, variant(r))] = dict(r, gflops=gf, mfu=mfu, x=x)
    if f32 and f32["status"] == "ok":
        need = f32.get("acts_needed_bytes", f32["acts_bytes"])
        bound = f32["state_bytes"] + need
        rss = f32["peak_rss_bytes"]
        mem_lines.append("  %s: 16 x %d + %.0f MB activations needed = %.0f MB; alloy f32 peak RSS %.0f MB (%.2f of the bound, %s);"
                         % (name, f32["params"], need / 2**20, bound / 2**20, rss / 2**20, rss / bound,
                            "within" if rss <= bound else "OVER"))
        mem_lines.append("  %s  activations needed %.1f KB/token, alloy's activation buffers %.1f KB/token (%.0f MB); %.1f bytes/param all told;"
                         % (" " * len(name), need / (B * T) / 1024, f32["acts_bytes"] / (B * T) / 1024, f32["acts_bytes"] / 2**20,
                            rss / f32["params"]))
        mem_lines.append("  %s  the process before the model (code, libraries) %.0f MB; beyond 16 B/param and alloy's buffers %+.0f MB (BLAS buffers, code)"
                         % (" " * len(name), f32.get("rss_base_bytes", 0) / 2**20,
                            (rss - f32["state_bytes"] - f32["acts_bytes"]) / 2**20))
        rc = find(key, "alloy", "f32", True)
        if rc and rc["status"] == "ok":
            mem_lines.append("  %s  with --recompute: activations %.0f MB, peak RSS %.0f MB%s"
                             % (" " * len(name), rc["acts_bytes"] / 2**20, rc["peak_rss_bytes"] / 2**20,
                                " (the same buffers: recompute changes nothing yet)" if rc["acts_bytes"] >= f32["acts_bytes"] else ""))
        bf = find(key, "alloy", "bf16")
        ratio_lines.append("  %s: bf16 / f32 tokens/s = %s" % (
            name, "%.2fx" % (bf["tokens_per_s"] / f32["tokens_per_s"]) if bf and bf["status"] == "ok" else "n/a (no bf16 run)"))

noisy = []
for r in runs:
    t = r.get("secs", [])[r.get("warmup", 0):]
    if r.get("status") == "ok" and len(t) > 1 and max(t) > 1.1 * min(t):
        noisy.append("%s B=%d T=%d %s: timed steps %s s" % (r["model"], r["B"], r["T"], variant(r),
                                                           ", ".join("%.3f" % x for x in t)))
if noisy:
    print("noise:    step times spread over 10% (another process on the machine?):")
    for l in noisy:
        print("          " + l)
print()
print("memory:   bound = 16 bytes/param (params, grads, AdamW m and v, fp32) + the activations the config needs: the tensors")
print("          a backward reads (Korthikanti et al. 2022, fp32, no dropout, log-sum-exp attention, chunked loss), 4 bytes x B.T x")
print("          [L.(5C + QKV + FF + F + H + 2 norms' statistics) + 2C + statistics]  (16C + H + 4 per layer for GPT-2);")
print("          alloy's own buffers (alloy_model_activation_bytes) keep the MLP's activation output for one layer only (it is")
print("          recomputed in the backward) and add the backward's working gradients and one 256-row chunk of logits:")
for l in mem_lines:
    print(l)
print("bf16:")
for l in ratio_lines:
    print(l)

print("targets (printed, not asserted):")
key = ("gpt2", 8, 256)
a, bf = summary.get((key, "alloy f32")), summary.get((key, "alloy bf16"))
def met(ok, *rs):
    busy = [r for r in rs if r and r.get("others_cpu_share", 0) > BUSY]
    if peak.get("others_cpu_share", 0) > BUSY:
        busy.append(peak)
    return ("met" if ok else "NOT met") + (" (but measured while other processes ran: not valid)" if busy else "")
if a:
    ref = summary.get((key, "PyTorch f32"))
    print("  fp32 MFU >= 60%% at gpt2 B=8 T=256: %.1f%% — %s" % (a["mfu"], met(a["mfu"] >= 60, a)))
    print("  fp32 tokens/s >= 3x PyTorch at gpt2 B=8 T=256: %s" % (
        "%.2fx — %s" % (a["x"], met(a["x"] >= 3, a, ref)) if a["x"] else "n/a (no PyTorch run)"))
    print("  bf16 tokens/s >= 1.6x alloy fp32 at gpt2 B=8 T=256: %s" % (
        "%.2fx — %s" % (bf["tokens_per_s"] / a["tokens_per_s"], met(bf["tokens_per_s"] >= 1.6 * a["tokens_per_s"], a, bf))
        if bf else "n/a (bf16 did not run)"))
    bound = a["state_bytes"] + a.get("acts_needed_bytes", a["acts_bytes"])
    print("  peak RSS <= 16 B/param + activations needed at gpt2 B=8 T=256 fp32: %.0f MB vs %.0f MB — %s" % (
        a["peak_rss_bytes"] / 2**20, bound / 2**20, met(a["peak_rss_bytes"] <= bound)))
else:
    print("  (the targets are for gpt2 B=8 T=256 fp32, which this run did not include)")
if failures:
    print()
    for f in failures:
        print("train_bench: check failed: " + f, file=sys.stderr)
    sys.exit(1)
EOF
