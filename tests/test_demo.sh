#!/usr/bin/env bash
# scripts/demo.sh (make demo) at a toy size (tiny-gpt2, a few steps): it runs to its result, and
# the commands it prints at the end work as printed, typed in the folder it was started from —
# the source tree, as make demo starts it, and another folder.
set -u
. "$(dirname "$0")/cli_lib.sh"
if ! command -v bible >/dev/null || [ ! -f /usr/share/doc/jargon-text/jargon.txt.gz ]; then
  skip "demo" "data: the demo's text comes from Debian's jargon-text and bible-kjv (scripts/install-deps.sh)"
  exit 0
fi
abs_alloy=$(cd "$(dirname "$ALLOY")" && pwd)/$(basename "$ALLOY")

# demo FROM OUT: runs the demo from folder FROM into OUT, then each printed "  ALLOY ..." line there
demo() {
  local from=$1 out=$2 name=$3
  if ! (cd "$from" && ALLOY="$abs_alloy" DEMO_OUT="$out" DEMO_STEPS=4 DEMO_PRESET=tiny-gpt2 DEMO_VOCAB=512 \
        OMP_NUM_THREADS=1 bash "$ROOT/scripts/demo.sh") >"$T/demo.log" 2>&1; then
    nok "$name: the demo failed: $(tail -5 "$T/demo.log")"; return
  fi
  grep -q '^held-out loss [0-9.]* nats/token' "$T/demo.log" && ok "$name: the demo ends with its result" \
    || nok "$name: no result line: $(tail -5 "$T/demo.log")"
  local n=0 line
  while IFS= read -r line; do
    n=$((n + 1))
    if (cd "$from" && OMP_NUM_THREADS=1 bash -c "$line") >"$T/cmd.log" 2>&1; then ok "$name: printed command works: $line"
    else nok "$name: printed command fails: $line: $(tail -3 "$T/cmd.log")"; fi
  done < <(sed -n '/^Metrics: /,$p' "$T/demo.log" | grep -E '^  [^ ]*alloy ' | sed 's/^  //')
  [ "$n" -ge 2 ] && ok "$name: prints $n commands to try" || nok "$name: printed $n commands: $(tail -5 "$T/demo.log")"
}
demo "$ROOT" "$T/from-root" "from the source tree"
mkdir -p "$T/elsewhere"
demo "$T/elsewhere" "$T/elsewhere/demo" "from another folder"
