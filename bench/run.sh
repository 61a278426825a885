#!/usr/bin/env bash
# Runs every benchmark bench/*_bench.sh from the repository root (`make bench`), one after the
# other, and ends with "N benchmarks, N failed". A benchmark checks its variants against its
# reference before timing them and exits non-zero on a mismatch or an error.
# ALLOY (default: $BUILD/alloy, BUILD default build) is the alloy binary they time.
set -u
cd "$(dirname "$0")/.."
export ALLOY=${ALLOY:-$PWD/${BUILD:-build}/alloy}
n=0; failed=0; names=()
for b in bench/*_bench.sh; do
  [ -f "$b" ] || continue
  n=$((n + 1))
  echo "### $b"
  t0=$(date +%s)
  if ! bash "$b"; then failed=$((failed + 1)); names+=("$b"); fi
  echo "### $b: $(( $(date +%s) - t0 ))s"
  echo
done
echo "$n benchmarks, $failed failed${names:+: ${names[*]}}"
[ "$failed" -eq 0 ]
