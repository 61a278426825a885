#!/usr/bin/env bash
# The main job on data every Debian machine can have: public-domain text from Debian packages
# (the Jargon File, the King James Bible) and the C library's headers, made into byte-level
# token shards; a small GPT-2-family model trained on them (about 3 minutes on 2 quiet cores); samples. It ends
# with commands to try on the model, printed so that they work as printed from the folder the
# demo was started in.
#
#   DEMO_OUT=runs/demo DEMO_STEPS=600 DEMO_PRESET=small-gpt2 bash scripts/demo.sh
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
ALLOY=${ALLOY:-build/alloy}
OUT=${DEMO_OUT:-runs/demo}
STEPS=${DEMO_STEPS:-450}
PRESET=${DEMO_PRESET:-small-gpt2}
VOCAB=${DEMO_VOCAB:-4096}

echo "== make demo: text from jargon-text, bible-kjv and /usr/include -> a BPE tokenizer -> token shards"
echo "   -> a $PRESET model trained for $STEPS steps -> samples, in $OUT/."
echo "   With the defaults (small-gpt2, 450 steps) about 3 minutes on 2 quiet cores, longer when other"
echo "   work shares them. The training's progress line shows its ETA."
rm -rf "$OUT"
mkdir -p "$OUT/text"
echo "== gathering text (jargon-text, bible-kjv, /usr/include)"
zcat /usr/share/doc/jargon-text/jargon.txt.gz >"$OUT/text/jargon.txt"
bible 'gen1:1-rev22:21' >"$OUT/text/bible-kjv.txt"
mkdir -p "$OUT/text/include"
cp /usr/include/stdio.h /usr/include/stdlib.h /usr/include/string.h /usr/include/math.h /usr/include/unistd.h \
   /usr/include/signal.h /usr/include/time.h /usr/include/pthread.h /usr/include/fcntl.h /usr/include/errno.h \
   /usr/include/ctype.h /usr/include/wchar.h /usr/include/locale.h /usr/include/setjmp.h /usr/include/stdint.h \
   "$OUT/text/include/" 2>/dev/null || true

echo "== alloy tokenizer train (byte-level BPE, $VOCAB tokens)"
"$ALLOY" tokenizer train --input "$OUT/text" --vocab-size "$VOCAB" --out "$OUT/tokenizer.json" --quiet

echo "== alloy prepare (normalise, deduplicate, tokenize, mix)"
"$ALLOY" prepare --input jargon="$OUT/text/jargon.txt" bible="$OUT/text/bible-kjv.txt" headers="$OUT/text/include" \
  --tokenizer "$OUT/tokenizer.json" --dedup exact,minhash --out "$OUT/data"

echo "== alloy train ($PRESET, $STEPS steps)"
"$ALLOY" train --data "$OUT/data" --preset "$PRESET" --out "$OUT/run" --steps "$STEPS" --batch 16 --seq 128 \
  --lr 2e-3 --warmup 50 --eval-every 100 --eval-batches 20 --ckpt-every 200

echo "== alloy sample"
for prompt in "And God said unto Moses" "The hacker" "#include"; do
  echo "--- prompt: $prompt"
  "$ALLOY" sample --model "$OUT/run" --prompt "$prompt" --tokens 80 --temperature 0.7 --top-k 20
done

echo "== result"
val=$(awk -F'"val_loss":' '/"type":"eval"/ { split($2, a, ","); v = a[1] } END { print v }' "$OUT/run/metrics.jsonl")
covers=$(awk -F'"val_windows":' '/"type":"eval"/ { split($2, a, ","); w = a[1]; split($0, b, "\"val_windows_total\":"); split(b[2], c, ","); n = c[1] }
  END { print (w + 0 < n + 0 ? "the first " w " of " n : "all " n) " held-out windows" }' "$OUT/run/metrics.jsonl")
first=$(awk -F'"loss":' '/"type":"train"/ { split($2, a, ","); print a[1]; exit }' "$OUT/run/metrics.jsonl")
uni=$(awk -F'"unigram_entropy":' '/"type":"start"/ { split($2, a, ","); print a[1]; exit }' "$OUT/run/metrics.jsonl")
awk -v v="$val" -v f="$first" -v u="$uni" -v c="$covers" 'BEGIN {
  printf "held-out loss %.3f nats/token over %s, from %.3f at the first step;\n", v, c, f
  printf "the unigram entropy of the data is %.3f nats/token: the model is %.2f nats below what token frequencies alone give.\n", u, u - v }'
# a path as the caller can type it: relative to the folder the demo was started in when it lies
# below it, else absolute (a command name such as alloy stays as it is)
shown() {
  case $1 in */*) ;; *) echo "$1"; return ;; esac
  local rel; rel=$(realpath -m --relative-to="$caller" "$1")
  case $rel in ../*) realpath -m "$1" ;; *) echo "$rel" ;; esac
}
run=$(shown "$OUT/run"); cmd=$(shown "$ALLOY")
echo "Metrics: $run/metrics.jsonl; model: $run. Try:"
echo "  $cmd sample --model $run --prompt 'And God said' --tokens 100"
echo "  $cmd inspect $run"
echo "(make install puts alloy on your PATH; docs/getting-started.md goes from text to a chat model)"
