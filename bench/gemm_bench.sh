#!/usr/bin/env bash
# Matrix products of GPT-2 124M training (2048 tokens): OpenBLAS cblas_sgemm (fp32) against
# alloy's own gemm_bf16 (AVX-512 BF16: inputs rounded to bf16, fp32 sums), in GFLOP/s.
#
#   bash bench/gemm_bench.sh [--quick] [--reps N]
#
# build/bench/gemm_bench checks every shape's bf16 result against a double-precision reference
# of the bf16-rounded inputs before timing it; a mismatch fails the benchmark. --quick leaves
# out the three LM-head products (the largest: 0.16 TFLOP each). OpenBLAS picks its kernels
# from OPENBLAS_CORETYPE: on AVX-512 CPUs this script sets SkylakeX (its AVX-512 sgemm, the
# fastest it has here; the environment's default Haswell is slower) and says which it used;
# GEMM_BENCH_CORETYPE overrides that choice.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$PWD/$BUILD/bench/gemm_bench
fail() { echo "gemm_bench: $*" >&2; exit 1; }

[ -x "$BIN" ] || fail "no $BIN (make $BUILD/bench/gemm_bench first)"
flags=$(grep -m1 '^flags' /proc/cpuinfo)
has() { [[ " $flags " == *" $1 "* ]]; }
if [ -n "${GEMM_BENCH_CORETYPE:-}" ]; then export OPENBLAS_CORETYPE=$GEMM_BENCH_CORETYPE
elif has avx512f; then export OPENBLAS_CORETYPE=SkylakeX; fi
if ! has avx512_bf16; then
  echo "gemm_bench: this CPU lacks avx512_bf16, so gemm_bf16 cannot run: skipped"
  exit 0
fi

blas=$(ldd "$BIN" 2>/dev/null | awk '/libopenblas/ {print $3}')
blas_real=$(readlink -f "$blas" 2>/dev/null)
blas_pkg=$(dpkg -S "$blas_real" 2>/dev/null | cut -d: -f1-2)
[ -n "$blas_pkg" ] && blas_pkg="$blas_pkg $(dpkg-query -W -f='${Version}' "${blas_pkg%%:*}" 2>/dev/null)"
echo "== matrix products of GPT-2 124M training, 2048 tokens: OpenBLAS sgemm (fp32) against gemm_bf16 =="
echo "machine:   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus, threads ${OMP_NUM_THREADS:-all}"
echo "sgemm:     ${blas_real:-OpenBLAS}${blas_pkg:+ ($blas_pkg)}, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (auto)}"
echo "bf16:      alloy gemm_bf16, AVX-512 BF16 (vdpbf16ps, 8x48 tiles of fp32 accumulators)"
echo "GFLOP/s:   2·M·N·K / seconds; ratio = sgemm time / bf16 time"
"$BIN" "$@" || fail "gemm_bf16 disagrees with its reference (or the benchmark failed)"
