#!/usr/bin/env bash
# GPT-2 BPE encode throughput: alloy (1 and 2 threads) against js-tiktoken 1.0.21, the
# reference, on the same text. The ids of every variant are checked against js-tiktoken's
# before any figure is printed; a mismatch fails the benchmark.
#
#   bash bench/tokenizer_bench.sh [FILE]
#
# FILE defaults to the seven text corpora of ../shared/data joined (about 11.9 MB: prose,
# stories, code, instruct). Timings are of the encode alone, in-process, best of 3 after a
# warm-up run: js-tiktoken's encode() (bench/js/tiktoken_bench.js) and alloy's
# alloy_tokenizer_encode_parallel (the hidden flag `alloy tokenizer encode --bench 3`); neither
# counts reading the file, loading the vocabulary or printing. MB = 10^6 bytes of the file.
set -u
cd "$(dirname "$0")/.."
ALLOY=${ALLOY:-$PWD/${BUILD:-build}/alloy}
DATA=../shared/data
TOK=$DATA/gpt2_tokenizer
REPS=3
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "tokenizer_bench: $*" >&2; exit 1; }

[ -x "$ALLOY" ] || fail "no alloy binary at $ALLOY (make first, or set ALLOY)"
command -v node >/dev/null || fail "node is not installed"
if [ ! -f tests/js/node_modules/js-tiktoken/package.json ]; then
  (cd tests/js && npm install --no-audit --no-fund >/dev/null 2>&1) || fail "npm install in tests/js failed"
fi
if [ $# -ge 1 ]; then
  TEXT=$1; what="$1"
  [ -f "$TEXT" ] || fail "$TEXT: no such file"
else
  TEXT=$T/corpora.txt
  for f in prose/tinyshakespeare.txt stories/tinystories_train_2MB.txt stories/tinystories_valid.txt code/c_code_stb_lua.txt \
    instruct/gpteacher_codegen_instruct.json instruct/gpteacher_roleplay_instruct.json instruct/gpteacher_toolformer_sim06.json; do
    [ -f "$DATA/$f" ] || fail "missing corpus $DATA/$f"
    cat "$DATA/$f" >>"$TEXT"
  done
  what="the 7 text corpora of ../shared/data joined"
fi
bytes=$(stat -c %s "$TEXT")

js_line=$(node bench/js/tiktoken_bench.js "$TEXT" --reps $REPS --ids "$T/js.ids") || fail "js-tiktoken failed"
run_alloy() { # THREADS
  "$ALLOY" tokenizer encode --tokenizer "$TOK" --input "$TEXT" --threads "$1" --bench $REPS >"$T/alloy$1.ids" 2>"$T/alloy$1.err" \
    || fail "alloy --threads $1 failed: $(cat "$T/alloy$1.err")"
  cmp -s "$T/alloy$1.ids" "$T/js.ids" || fail "alloy --threads $1: ids differ from js-tiktoken's (run tests/test_tiktoken.sh)"
  grep '^bench:' "$T/alloy$1.err"
}
a1_line=$(run_alloy 1) || exit 1
a2_line=$(run_alloy 2) || exit 1
n_ids=$(echo "$js_line" | sed -E 's/.* ([0-9]+) ids.*/\1/')
secs() { echo "$1" | sed -E 's/.*best ([0-9.]+) s.*/\1/'; }
js_s=$(secs "$js_line"); a1_s=$(secs "$a1_line"); a2_s=$(secs "$a2_line")

blas=$(ldd "$ALLOY" 2>/dev/null | awk '/libopenblas/ {print $3}')
blas_real=$(readlink -f "$blas" 2>/dev/null)
blas_pkg=$(dpkg -S "$blas_real" 2>/dev/null | cut -d: -f1-2)
[ -n "$blas_pkg" ] && blas_pkg="$blas_pkg $(dpkg-query -W -f='${Version}' "${blas_pkg%%:*}" 2>/dev/null)"
echo "== tokenizer encode, GPT-2 byte-level BPE: alloy against js-tiktoken =="
echo "text:      $what, $bytes bytes, $n_ids ids"
echo "check:     ids of alloy (1 and 2 threads) == js-tiktoken's: yes"
echo "machine:   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cpus; node $(node --version)"
echo "timing:    encode only, in-process, best of $REPS after a warm-up; MB = 10^6 bytes"
awk -v b="$bytes" -v js="$js_s" -v a1="$a1_s" -v a2="$a2_s" 'BEGIN {
  printf "%-30s %10s %10s %18s\n", "encoder", "best s", "MB/s", "alloy/js-tiktoken"
  printf "%-30s %10.4f %10.2f %17.2fx\n", "js-tiktoken 1.0.21 (reference)", js, b / js / 1e6, 1
  printf "%-30s %10.4f %10.2f %17.2fx\n", "alloy, 1 thread", a1, b / a1 / 1e6, js / a1
  printf "%-30s %10.4f %10.2f %17.2fx\n", "alloy, 2 threads", a2, b / a2 / 1e6, js / a2
}'
echo "OpenBLAS:  ${blas_real:-not linked}${blas_pkg:+ ($blas_pkg)} is linked into alloy but irrelevant here:"
echo "           encoding is regex matching (PCRE2 JIT) and integer merges, no BLAS call, so"
echo "           OPENBLAS_CORETYPE (now '${OPENBLAS_CORETYPE:-unset}') and OPENBLAS_NUM_THREADS do not matter for this benchmark."
