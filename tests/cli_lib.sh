# cli_lib.sh — what the command-level tests (tests/test_*.sh) share; sourced, not run.
#
#   ALLOY     the alloy binary under test (default build/alloy)
#   ROOT      the repository root (ALLOY_ROOT, default .)
#   SHARED    the shared corpora: ALLOY_SHARED_DATA, default $ROOT/../shared/data (point it at a
#             folder that does not exist to see every case that needs them skip)
#   T         a temporary folder, removed at exit
#   PY        /usr/bin/python3, Debian's, for the checks that read JSON or safetensors output
#             (the standard library; numpy in test_moe_cli.sh). A tool like grep, not an oracle:
#             without it those checks fail
#   ok NAME / nok NAME      print a TAP line (tests/run.sh counts them)
#   skip NAME REASON        "ok - NAME # SKIP REASON", REASON "oracle: ...", "cpu: ..." or
#                           "data: ..." (tests/run.sh counts it as skipped, not passed)
#   expect CODE NAME PATTERN cmd...
#             runs cmd: exit status CODE, no sanitizer report, exactly one line on stderr when
#             CODE is not 0, and PATTERN (extended regex) somewhere in its stdout or stderr
#   need_data FILE...       FILEs are paths under $SHARED; when one is absent, the whole script
#                           is one "ok - SCRIPT # SKIP data: PATH is absent" and exits 0
#   tree_sum DIR            one checksum of every file under DIR (to show nothing changed)
#   tiny_model OUT STEPS [PRESET [flags...]]
#             trains a tiny model (PRESET, default tiny-gpt2: byte tokenizer, context 32) for
#             STEPS steps into the run folder OUT, batch 2, windows of 32, on the first 100 kB of
#             tinyshakespeare, prepared into $T/data by the first call; flags go to alloy train.
#             Scripts that call it start with need_data prose/tinyshakespeare.txt.
#             Status 0 when OUT has a checkpoint
ALLOY=${ALLOY:-build/alloy}
ROOT=${ALLOY_ROOT:-.}
SHARED=${ALLOY_SHARED_DATA:-$ROOT/../shared/data}
PY=/usr/bin/python3
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
ok() { echo "ok - $*"; }
nok() { echo "not ok - $*"; }
skip() { local name=$1; shift; echo "ok - $name # SKIP $*"; }
expect() {
  local code=$1 name=$2 pat=$3; shift 3
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  local lines=$(grep -vc '^$' "$T/err")
  if [ "$rc" -ne "$code" ]; then nok "$name: exit $rc, expected $code: $(head -c 300 "$T/err")"; return; fi
  if grep -qE 'Sanitizer|runtime error|Segmentation|core dumped' "$T/err"; then nok "$name: sanitizer report"; return; fi
  if [ "$code" -ne 0 ] && [ "$lines" -ne 1 ]; then nok "$name: $lines lines on stderr: $(head -c 300 "$T/err")"; return; fi
  if ! grep -qE -- "$pat" "$T/err" "$T/out"; then nok "$name: output lacks /$pat/: $(head -c 300 "$T/err") $(head -c 300 "$T/out")"; return; fi
  ok "$name"
}
need_data() {
  local f
  for f in "$@"; do
    [ -e "$SHARED/$f" ] && continue
    skip "$(basename "$0"): every case" "data: $SHARED/$f is absent"
    exit 0
  done
}
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum; }
tiny_model() {
  local out=$1 steps=$2 preset=${3:-tiny-gpt2}; shift $(($# < 3 ? $# : 3))
  if [ ! -d "$T/data" ]; then
    mkdir -p "$T/src" && head -c 100000 "$SHARED/prose/tinyshakespeare.txt" >"$T/src/a.txt" &&
      "$ALLOY" prepare --input "$T/src" --out "$T/data" --quiet >/dev/null 2>&1 || return 1
  fi
  "$ALLOY" train --data "$T/data" --preset "$preset" --out "$out" --steps "$steps" --batch 2 --seq 32 --quiet "$@" \
    >/dev/null 2>&1 && [ -f "$out/latest" ]
}
