#!/usr/bin/env bash
# Quantised matrix-vector and matrix-matrix products (Q8_0, Q4_0, Q4_K, F16, F32 weights) on
# Llama-7B layer shapes against OpenBLAS sgemv/sgemm in the same run, in GB/s of weights and
# GFLOP/s; every format's result is checked against a reference before it is timed.
#
#   bash bench/quant_bench.sh [--quick] [--reps N]
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$PWD/$BUILD/bench/quant_bench
[ -x "$BIN" ] || { echo "quant_bench: no $BIN (make $BUILD/bench/quant_bench first)" >&2; exit 1; }
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qm1 avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi
echo "quant_bench: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}, $(nproc) cores"
exec "$BIN" "$@"
