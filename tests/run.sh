#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and test script (tests/test_*.sh) from the
# repository root, and ends with one summary line "N passed, N failed" counting test cases
# (the "ok -" / "not ok -" lines they print). A program that crashes or exits non-zero
# without reporting a failed case counts as one failed case.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export ALLOY="$PWD/$BUILD/alloy"
export ALLOY_ROOT="$PWD"
export ALLOY_BUILD="$BUILD"
if [ -n "${ALLOY_ASAN:-}" ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=99"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
passed=0; failed=0; failed_names=()
logdir=$(mktemp -d)
start=$(date +%s)
run_one() {
  local name=$1; shift
  local log="$logdir/$name.log" t0=$(date +%s)
  "$@" >"$log" 2>&1
  local rc=$?
  local ok=$(grep -c '^ok - ' "$log"); local nok=$(grep -c '^not ok - ' "$log")
  if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then nok=1; echo "not ok - $name exited with status $rc" >>"$log"; fi
  passed=$((passed + ok)); failed=$((failed + nok))
  printf '%-28s %4d passed %3d failed  (%ds)\n' "$name" "$ok" "$nok" "$(( $(date +%s) - t0 ))"
  if [ "$nok" -ne 0 ]; then
    failed_names+=("$name")
    sed 's/^/    /' "$log" | grep -v '^    ok - ' | tail -40
  fi
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
for s in tests/test_*.sh; do
  [ -f "$s" ] || continue
  run_one "$(basename "$s")" bash "$s"
done
rm -rf "$logdir"
echo "# $(( $(date +%s) - start ))s in all${failed_names:+; failed: ${failed_names[*]}}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
