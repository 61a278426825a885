#!/usr/bin/env bash
# Runs every test program (build/tests/test_*) and test script (tests/test_*.sh) from the
# repository root, and ends with one summary line "N passed, N failed, N skipped" counting test
# cases (the "ok -" / "not ok -" lines they print). A program that crashes or exits non-zero
# without reporting a failed case counts as one failed case.
#
# Skips: a case that could not check what it is for prints "ok - NAME # SKIP REASON" and counts
# as skipped, not passed; the skipped cases are listed with their reasons before the summary.
# REASON starts with what was missing:
#   oracle: an outside reference — the interpreter that runs tests/reference (PyTorch, NumPy,
#           PyYAML: Debian's python3-torch, python3-numpy, python3-yaml), or node and the npm
#           packages of tests/js (scripts/install-deps.sh --test installs them all)
#   cpu:    a CPU feature the code under test needs (avx512_bf16, AVX2, ...)
#   data:   files of the shared corpora (ALLOY_SHARED_DATA, default ../shared/data beside the
#           clone): a clone elsewhere skips the cases that read them
# Environment:
#   ALLOY_REQUIRE_ORACLES=1   an "oracle:" skip counts as failed (CI sets it, .ci/run: there a
#                             missing oracle is an install bug); cpu and data skips stay skips.
#                             make test leaves it unset.
#   ALLOY_TEST_PYTHON=PATH    the oracle interpreter (default /usr/bin/python3); ALLOY_TEST_NODE
#                             the node (default node on PATH). Pointing them at /bin/false shows
#                             every case that needs them skip.
#   ALLOY_SHARED_DATA=DIR     the shared corpora (default ../shared/data); =/nonexistent shows
#                             every case that needs them skip with a "data:" reason
#   BUILD                     the build folder (default build)
#   TESTS="NAME ..."          run only these (test_kernels, test_cli.sh, ...; make check sets
#                             it); a name that is neither a built test nor a script fails
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
strict=${ALLOY_REQUIRE_ORACLES:-0}
[ "$strict" = 0 ] && strict=
passed=0; failed=0; skipped=0; failed_names=(); skip_lines=()
logdir=$(mktemp -d)
start=$(date +%s)
run_one() {
  local name=$1; shift
  local log="$logdir/$name.log" t0=$(date +%s)
  "$@" >"$log" 2>&1
  local rc=$?
  local skip_re='^ok - .*# SKIP'
  local all=$(grep -c '^ok - ' "$log"); local nok=$(grep -c '^not ok - ' "$log")
  local sk=$(grep -c "$skip_re" "$log") hard=0
  # with ALLOY_REQUIRE_ORACLES an oracle skip is a failure
  [ -n "$strict" ] && hard=$(grep -c '^ok - .*# SKIP oracle:' "$log")
  if [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then nok=1; echo "not ok - $name exited with status $rc" >>"$log"; fi
  local ok=$((all - sk))
  sk=$((sk - hard)); nok=$((nok + hard))
  passed=$((passed + ok)); failed=$((failed + nok)); skipped=$((skipped + sk))
  printf '%-28s %4d passed %3d failed %3d skipped  (%ds)\n' "$name" "$ok" "$nok" "$sk" "$(( $(date +%s) - t0 ))"
  local line
  while IFS= read -r line; do
    [ -n "$strict" ] && [[ $line == *"# SKIP oracle:"* ]] && continue
    skip_lines+=("$name: ${line#ok - }")
  done < <(grep "$skip_re" "$log")
  if [ "$nok" -ne 0 ]; then
    failed_names+=("$name")
    [ "$hard" -ne 0 ] && echo "    (ALLOY_REQUIRE_ORACLES is set: each \"# SKIP oracle:\" below counts as failed)"
    sed 's/^/    /' "$log" | grep -v '^    ok - ' | tail -40
    [ "$hard" -ne 0 ] && grep '^ok - .*# SKIP oracle:' "$log" | sed 's/^/    /'
  fi
}
only=" ${TESTS:-} "
chosen() { [ -z "${TESTS:-}" ] || [[ $only == *" $1 "* ]]; }
for name in ${TESTS:-}; do
  if [ ! -x "$BUILD/tests/$name" ] && [ ! -f "tests/$name" ]; then
    failed=$((failed + 1)); failed_names+=("$name")
    echo "not ok - TESTS names $name: neither $BUILD/tests/$name nor tests/$name exists"
  fi
done
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] && chosen "$(basename "$t")" || continue
  run_one "$(basename "$t")" "$t"
done
for s in tests/test_*.sh; do
  [ -f "$s" ] && chosen "$(basename "$s")" || continue
  run_one "$(basename "$s")" bash "$s"
done
rm -rf "$logdir"
if [ "${#skip_lines[@]}" -ne 0 ]; then
  echo "# skipped:"
  printf '#   %s\n' "${skip_lines[@]}"
fi
echo "# $(( $(date +%s) - start ))s in all${failed_names:+; failed: ${failed_names[*]}}"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
