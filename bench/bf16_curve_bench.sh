#!/usr/bin/env bash
# bf16 training against fp32 on real data: the same run (model, seed, data order, schedule) with
# --dtype f32 and --dtype bf16, 300 steps each, and the two loss curves compared step by step.
# The target of issue 4: bf16's curve stays within 1% of fp32's. Also prints both runs' tokens/s.
#
#   bash bench/bf16_curve_bench.sh            # about 10 minutes on 2 quiet cores
#   STEPS=50 bash bench/bf16_curve_bench.sh   # a quick run
#
# Data: TinyStories (2 MB) and Tiny Shakespeare from ../shared/data, tokenized with GPT-2's
# tokenizer by `alloy prepare`. Model: small-gpt2 (4 layers, C=256, V=50257), B=16, T=128,
# lr 1e-3 with 30 warm-up steps, held-out loss at the end. The comparison is of the training
# loss per step (|bf16 - f32| / f32) and of the held-out loss; a curve that leaves the band, a
# failed run or a bf16 run identical to fp32 (bf16 not used) fails the benchmark.
# Environment: ALLOY (build/alloy), STEPS (300), DATA (../shared/data). Needs avx512_bf16.
set -u
cd "$(dirname "$0")/.."
ALLOY=${ALLOY:-$PWD/${BUILD:-build}/alloy}
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-300}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "bf16_curve_bench: $*" >&2; exit 1; }

[ -x "$ALLOY" ] || fail "no alloy binary at $ALLOY (make first, or set ALLOY)"
for f in stories/tinystories_train_2MB.txt prose/tinyshakespeare.txt gpt2_tokenizer; do
  [ -e "$DATA/$f" ] || fail "missing $DATA/$f"
done
if grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
"$ALLOY" prepare --input "$DATA/stories/tinystories_train_2MB.txt" "$DATA/prose/tinyshakespeare.txt" \
  --tokenizer "$DATA/gpt2_tokenizer" --out "$T/data" >"$T/prepare.log" 2>&1 || fail "prepare failed: $(tail -1 "$T/prepare.log")"
for dt in f32 bf16; do
  "$ALLOY" train --data "$T/data" --out "$T/$dt" --preset small-gpt2 --batch 16 --seq 128 --steps "$STEPS" \
    --lr 1e-3 --warmup 30 --eval-every 0 --eval-batches 20 --ckpt-every 0 --seed 7 --dtype "$dt" --quiet \
    2>"$T/$dt.err" || fail "the $dt run failed: $(tail -1 "$T/$dt.err")"
done
echo "== bf16 against fp32: $STEPS steps of small-gpt2 (B=16, T=128) on TinyStories + Tiny Shakespeare (GPT-2 tokens) =="
echo "kernels:  fp32 OpenBLAS sgemm (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}); bf16 alloy's AVX-512 BF16 gemm, fp32 master weights"
awk '
  FNR == 1 { run++ }
  /"type":"train"/ {
    match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7) + 0
    match($0, /"loss":[0-9.eE+-]+/); l = substr($0, RSTART + 7, RLENGTH - 7) + 0
    match($0, /"tokens_per_s":[0-9.]+/); r = substr($0, RSTART + 15, RLENGTH - 15) + 0
    loss[run, s] = l; if (s > 5) { rate[run] += r; nr[run]++ }; n = s > n ? s : n
  }
  /"type":"eval"/ { match($0, /"val_loss":[0-9.eE+-]+/); val[run] = substr($0, RSTART + 11, RLENGTH - 11) + 0 }
  END {
    worst = 0; same = 0; sum = 0
    for (s = 1; s <= n; s++) {
      d = loss[2, s] - loss[1, s]; d = d < 0 ? -d : d; rel = d / loss[1, s]
      sum += rel; if (rel > worst) { worst = rel; at = s }; if (d == 0) same++
    }
    printf "%8s %12s %12s %10s\n", "step", "f32 loss", "bf16 loss", "rel diff"
    for (s = 1; s <= n; s++)
      if (s == 1 || s % 25 == 0 || s == n)
        printf "%8d %12.4f %12.4f %9.2e\n", s, loss[1, s], loss[2, s], (loss[2, s] - loss[1, s]) / loss[1, s]
    printf "training loss: largest |bf16 - f32| / f32 over %d steps %.2e (step %d), mean %.2e\n", n, worst, at, sum / n
    printf "held-out loss: f32 %.4f, bf16 %.4f (rel diff %.2e)\n", val[1], val[2], (val[2] - val[1]) / val[1]
    printf "speed (steps after 5): f32 %.0f tokens/s, bf16 %.0f tokens/s (%.2fx)\n", rate[1] / nr[1], rate[2] / nr[2], (rate[2] / nr[2]) / (rate[1] / nr[1])
    ok = worst <= 0.01 && same < n
    printf "target: bf16 curve within 1%% of fp32 at every step: %s\n", ok ? "met" : "NOT met"
    if (same == n) print "bf16_curve_bench: the bf16 run equals fp32 bit for bit: bf16 was not used" > "/dev/stderr"
    exit ok ? 0 : 1
  }' "$T/f32/metrics.jsonl" "$T/bf16/metrics.jsonl"
