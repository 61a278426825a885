#!/usr/bin/env bash
# Threads on a shared machine (issue 21): generate (q8_0 weights), eval and 20 training steps of
# the demo's model size, each at the default settings and with --threads 1 and --threads 2,
# first on the machine as it is, then with two busy-loop processes beside them. Prints each
# time and the ratio of the default to the best of --threads 1 and --threads 2 measured in the
# same run; the target is a ratio of at most 1.5 with the busy loops, and (against a figure from
# before the change, run on a quiet machine) no regression without them.
#
#   bash bench/contention.sh                 all of it (about 3 minutes on 2 quiet cores)
#   CONTENTION_BUSY=4 bash bench/contention.sh   more busy loops
#   CONTENTION_QUIET=0 / CONTENTION_LOADED=0     skip a phase
#   CONTENTION_REPEAT=N                      runs of each (default 3; the median is reported)
#   ALLOY_BASELINE=OLD/alloy                 also time an earlier build's default on the quiet
#                                            machine: the "no regression" ratio, new / old
#
# Exits non-zero when a command fails or a loaded ratio exceeds CONTENTION_LIMIT (default 1.5).
set -euo pipefail
cd "$(dirname "$0")/.."
ALLOY=${ALLOY:-$PWD/build/alloy}
BUSY=${CONTENTION_BUSY:-2}
REPEAT=${CONTENTION_REPEAT:-3}
LIMIT=${CONTENTION_LIMIT:-1.5}
work=$(mktemp -d)
busy_pids=()
stop_busy() {
  local p
  for p in "${busy_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${busy_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  busy_pids=()
}
trap 'stop_busy; rm -rf "$work"' EXIT

echo "cores: $(nproc); ALLOY_THREADS=${ALLOY_THREADS:-unset} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-unset} OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
echo "load before: $(cut -d' ' -f1-4 /proc/loadavg)"

# ---- a model of the demo's size (small-gpt2), trained a few steps on Debian text ----
{
  if [ -r /usr/share/doc/jargon-text/jargon.txt.gz ]; then zcat /usr/share/doc/jargon-text/jargon.txt.gz
  else cat /usr/include/*.h; fi
} | head -c 3000000 >"$work/text.txt"
"$ALLOY" tokenizer train --input "$work/text.txt" --vocab-size 2048 --out "$work/tok.json" --quiet
"$ALLOY" prepare --input "$work/text.txt" --tokenizer "$work/tok.json" --out "$work/data" >/dev/null 2>&1
"$ALLOY" train --data "$work/data" --preset small-gpt2 --out "$work/run" --steps 10 --batch 8 --seq 128 \
  --eval-every 0 >/dev/null 2>&1
for p in "The hacker" "In the beginning" "A program" "The system" "When the" "It is" "Unix" "#include"; do
  printf '{"prompt": "%s"}\n' "$p"
done >"$work/prompts.jsonl" # each continued until the context (128) is full

# the seconds one command takes (wall clock)
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err" || { echo "failed: $*" >&2; cat "$work/err" >&2; return 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# job NAME THREADS_FLAGS...: the median seconds of REPEAT runs (of $BIN, default $ALLOY)
job() {
  local name=$1; shift
  local ALLOY=${BIN:-$ALLOY}
  local times=() r
  for ((r = 0; r < REPEAT; r++)); do
    case $name in
      generate) times+=("$(seconds "$ALLOY" generate --model "$work/run" --prompts "$work/prompts.jsonl" --weights q8_0 \
                  --tokens -1 --batch 1 --temperature 0 "$@")") ;;
      eval)     times+=("$(seconds "$ALLOY" eval --model "$work/run" --data "$work/data" --seq 128 --batch 8 "$@")") ;;
      train)    rm -rf "$work/t"
                times+=("$(seconds "$ALLOY" train --data "$work/data" --preset small-gpt2 --out "$work/t" --steps 20 \
                  --batch 8 --seq 128 --eval-every 0 --ckpt-every 0 "$@")") ;;
    esac
  done
  echo "${times[*]}" | median
}

failed=0
phase() {
  local label=$1
  echo
  echo "== $label (median of $REPEAT; seconds)"
  printf '%-9s %9s %9s %9s %9s\n' job default threads1 threads2 ratio
  local j d t1 t2
  for j in generate eval train; do
    d=$(job "$j"); t1=$(job "$j" --threads 1); t2=$(job "$j" --threads 2)
    local ratio
    ratio=$(awk -v d="$d" -v a="$t1" -v b="$t2" 'BEGIN { m = a < b ? a : b; printf "%.2f", d / m }')
    printf '%-9s %9s %9s %9s %9s\n' "$j" "$d" "$t1" "$t2" "$ratio"
    echo "{\"phase\":\"$label\",\"job\":\"$j\",\"default_s\":$d,\"threads1_s\":$t1,\"threads2_s\":$t2,\"ratio\":$ratio}" >>"$work/results.jsonl"
    if [ "$label" = quiet ] && [ -n "${ALLOY_BASELINE:-}" ]; then
      local old
      old=$(BIN=$ALLOY_BASELINE job "$j")
      printf '%-9s %9s  (the baseline build at its default; new/old %s)\n' "" "$old" \
        "$(awk -v d="$d" -v o="$old" 'BEGIN { printf "%.3f", d / o }')"
    fi
    if [ "$label" = loaded ] && awk -v r="$ratio" -v l="$LIMIT" 'BEGIN { exit !(r > l) }'; then
      echo "   ^ over the target: default more than ${LIMIT}x the best fixed thread count" >&2
      failed=1
    fi
  done
}

[ "${CONTENTION_QUIET:-1}" = 0 ] || phase quiet
if [ "${CONTENTION_LOADED:-1}" != 0 ]; then
  for ((i = 0; i < BUSY; i++)); do
    (while :; do :; done) &
    busy_pids+=($!)
  done
  sleep 1
  phase loaded
  stop_busy
fi
echo
echo "ratio = default / best of --threads 1 and --threads 2 (target with $BUSY busy loops: <= $LIMIT)"
[ "$failed" -eq 0 ]
