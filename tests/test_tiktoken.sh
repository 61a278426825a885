#!/usr/bin/env bash
# alloy's GPT-2 encoding against an outside oracle, js-tiktoken 1.0.21 (getEncoding("gpt2")):
# the ids must be equal byte for byte, as JSON arrays, on every corpus of the shared corpora
# ($ALLOY_SHARED_DATA, default ../shared/data; a missing one is a "# SKIP data:" line, and without
# GPT-2's tokenizer there the whole test is one) and on
# the stress files of tests/stress_text.py (every Unicode category, spaces, emoji, scripts,
# invalid UTF-8 of every kind, long runs, contractions, controls, <|endoftext|>, random bytes).
#
#   1. encode             alloy tokenizer encode  ==  js-tiktoken encode(text, [], [])
#   2. --allow-special    on the files holding <|endoftext|>  ==  encode(text, "all")
#   3. --threads 2        ==  the one-thread ids (stress files join into one > 1 MiB input, the
#                         size from which alloy really cuts the text); --threads 5 too (other
#                         cuts) on the inputs of 1 MiB or more, and --allow-special with 2
#   4. round trip         alloy tokenizer decode of the ids  ==  the file, for valid UTF-8; for
#                         invalid UTF-8, == the file with U+FFFD by maximal subparts (Python's
#                         errors="replace", which is also what both encoders see)
#
# One "ok"/"not ok" line per file and check; a mismatch prints the first differing token, its
# byte offset and the text around it. js-tiktoken is installed with npm when missing; if node
# ($ALLOY_TEST_NODE, default node) or the package is still missing, the test prints one
# "ok - ... # SKIP oracle: ..." line and stops (tests/run.sh counts it as skipped, and as failed
# under CI's ALLOY_REQUIRE_ORACLES=1). ALLOY_TEST_SLOW=1 adds runs of 100,000 digits,
# newlines and letters, which take js-tiktoken about 25 minutes (its merge loop is O(n^2) per
# piece: 100,000 digits alone take 840 s).
set -u
ALLOY=${ALLOY:-build/alloy}
ROOT=${ALLOY_ROOT:-.}
DATA=${ALLOY_SHARED_DATA:-$ROOT/../shared/data}
TOK="$DATA/gpt2_tokenizer"
JS="$ROOT/tests/js"
PY=/usr/bin/python3 # Debian's: unicodedata 14.0, the Unicode of PCRE2 10.42 (tests/stress_text.py)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
NODE=${ALLOY_TEST_NODE:-node}
ok() { echo "ok - $*"; }
nok() { echo "not ok - $*"; fails=$((fails + 1)); }
skip() { local name=$1; shift; echo "ok - $name # SKIP $*"; }
fails=0
t_start=$(date +%s)

# ---- the oracle ----
if ! "$NODE" --version >/dev/null 2>&1; then skip "js-tiktoken parity" "oracle: $NODE does not run (js-tiktoken needs Node.js)"; exit 0; fi
if [ ! -f "$JS/node_modules/js-tiktoken/package.json" ]; then
  echo "# installing js-tiktoken in $JS"
  (cd "$JS" && npm install --no-audit --no-fund) >"$T/npm.log" 2>&1 || { sed 's/^/# /' "$T/npm.log" | tail -20; }
fi
jsver=$("$NODE" -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).version' "$JS/node_modules/js-tiktoken/package.json" 2>/dev/null)
if [ "$jsver" != "1.0.21" ]; then
  skip "js-tiktoken parity" "oracle: js-tiktoken 1.0.21 is not installed in $JS/node_modules (found '${jsver:-nothing}'): run npm install --no-audit --no-fund in tests/js"
  exit 0
fi
ok "oracle: js-tiktoken $jsver on node $("$NODE" --version)"
for f in "$TOK/encoder.json" "$TOK/vocab.bpe"; do
  [ -f "$f" ] || { skip "js-tiktoken parity" "data: $f is absent (GPT-2's tokenizer)"; exit 0; }
done

# ---- the inputs: NAME<TAB>PATH ----
: >"$T/inputs"
add() { printf '%s\t%s\n' "$1" "$2" >>"$T/inputs"; }
for f in prose/tinyshakespeare.txt stories/tinystories_train_2MB.txt stories/tinystories_valid.txt \
  code/c_code_stb_lua.txt instruct/gpteacher_codegen_instruct.json instruct/gpteacher_roleplay_instruct.json \
  instruct/gpteacher_toolformer_sim06.json; do
  if [ -f "$DATA/$f" ]; then add "$f" "$DATA/$f"; else skip "corpus $f" "data: $DATA/$f is absent"; fi
done
HH=preference/hh-rlhf-harmless-base-test.jsonl.gz
if [ ! -e "$DATA/$HH" ]; then
  skip "corpus $HH" "data: $DATA/$HH is absent"
elif zcat "$DATA/$HH" >"$T/hh-rlhf-harmless-base-test.jsonl" 2>/dev/null; then
  add "${HH%.gz}" "$T/hh-rlhf-harmless-base-test.jsonl"
else
  nok "corpus $DATA/$HH is not gzip"
fi
long=; [ -n "${ALLOY_TEST_SLOW:-}" ] && long=--long
if ! "$PY" "$ROOT/tests/stress_text.py" "$T/stress" $long >"$T/gen.log" 2>&1; then
  nok "tests/stress_text.py failed: $(tail -3 "$T/gen.log")"
  exit 1
fi
ok "$(cat "$T/gen.log")"
for f in "$T"/stress/valid/* "$T"/stress/invalid/* "$T"/stress/concat_all.bin "$T"/stress/long/*; do
  [ -f "$f" ] && add "stress/${f#"$T/stress/"}" "$f"
done
mkdir -p "$T/out"
n_in=0; n_special=0; : >"$T/batch"; : >"$T/batch_special"
while IFS=$'\t' read -r name path; do
  n_in=$((n_in + 1))
  printf '%s\t%s\n' "$path" "$T/out/$n_in.js" >>"$T/batch"
  if grep -qF '<|endoftext|>' "$path"; then
    printf '%s\t%s\n' "$path" "$T/out/$n_in.sjs" >>"$T/batch_special"
    n_special=$((n_special + 1))
  fi
done <"$T/inputs"

# js-tiktoken works through both batches on one core while alloy runs on the other.
# --stack-size: 200,000 spaces are one piece of 200,000 tokens, pushed as arguments.
(
  "$NODE" --stack-size=4000 "$JS/encode.js" --batch "$T/batch"
  "$NODE" --stack-size=4000 "$JS/encode.js" --batch "$T/batch_special" --allow-special
) >"$T/js.log" 2>&1 &
js_pid=$!

# Explains the first difference of two id arrays: token index, byte offset, text around it.
explain() { # EXPECTED ACTUAL INPUT
  "$PY" - "$1" "$2" "$3" "$TOK" <<'EOF'
import json, sys
exp, act, inp, tok = sys.argv[1:5]
try:
    a = json.load(open(exp)); b = json.load(open(act))
except Exception as e:
    print("# cannot compare: %s" % e); sys.exit()
enc = json.load(open(tok + "/encoder.json"))
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]; n = 0
for x in range(256):
    if x not in bs: bs.append(x); cs.append(256 + n); n += 1
u2b = {chr(c): x for x, c in zip(bs, cs)}
dec = {v: (bytes(u2b[ch] for ch in k) if k != "<|endoftext|>" else k.encode()) for k, v in enc.items()}
i = 0
while i < min(len(a), len(b)) and a[i] == b[i]: i += 1
off = sum(len(dec.get(t, b"")) for t in a[:i])
text = open(inp, "rb").read().decode("utf-8", "replace").encode()
print("# %d ids expected (js-tiktoken), %d from alloy; first difference at token %d, byte %d of the repaired text" % (len(a), len(b), i, off))
print("#   js-tiktoken: %s" % a[max(0, i - 3):i + 6])
print("#   alloy:       %s" % b[max(0, i - 3):i + 6])
print("#   pieces js:   %r" % [dec.get(t) for t in a[i:i + 6]])
print("#   pieces alloy:%r" % [dec.get(t) for t in b[i:i + 6]])
print("#   text: %r" % text[max(0, off - 40):off + 60])
EOF
}

# ---- alloy: one thread, two threads, --allow-special, round trip ----
enc() { "$ALLOY" tokenizer encode --tokenizer "$TOK" "$@"; }
i=0
while IFS=$'\t' read -r name path; do
  i=$((i + 1))
  if ! enc --input "$path" >"$T/out/$i.a1" 2>"$T/err"; then nok "encode $name: alloy failed: $(head -c 300 "$T/err")"; continue; fi
  if ! enc --input "$path" --threads 2 >"$T/out/$i.a2" 2>"$T/err"; then nok "--threads 2 $name: alloy failed: $(head -c 300 "$T/err")"
  elif cmp -s "$T/out/$i.a1" "$T/out/$i.a2"; then ok "--threads 2 $name: the one-thread ids"
  else nok "--threads 2 $name: ids differ from one thread"; explain "$T/out/$i.a1" "$T/out/$i.a2" "$path"; fi
  if [ "$(stat -c %s "$path")" -ge 1048576 ]; then # other cuts: 8 blocks a thread
    if ! enc --input "$path" --threads 5 >"$T/out/$i.a5" 2>"$T/err"; then nok "--threads 5 $name: alloy failed: $(head -c 300 "$T/err")"
    elif cmp -s "$T/out/$i.a1" "$T/out/$i.a5"; then ok "--threads 5 $name: the one-thread ids"
    else nok "--threads 5 $name: ids differ from one thread"; explain "$T/out/$i.a1" "$T/out/$i.a5" "$path"; fi
  fi
  if grep -qF '<|endoftext|>' "$path"; then
    if ! enc --input "$path" --allow-special >"$T/out/$i.sa" 2>"$T/err"; then
      nok "--allow-special $name: alloy failed: $(head -c 300 "$T/err")"
    else
      enc --input "$path" --allow-special --threads 2 >"$T/out/$i.sa2" 2>&1
      cmp -s "$T/out/$i.sa" "$T/out/$i.sa2" && ok "--allow-special --threads 2 $name: the one-thread ids" \
        || nok "--allow-special --threads 2 $name: ids differ from one thread"
      "$ALLOY" tokenizer decode --tokenizer "$TOK" --input "$T/out/$i.sa" >"$T/dec" 2>&1
      "$PY" -c 'import sys; sys.exit(open(sys.argv[1], "rb").read().decode("utf-8", "replace").encode() != open(sys.argv[2], "rb").read())' "$path" "$T/dec" \
        && ok "--allow-special round trip $name: decode gives back the text, <|endoftext|> included" \
        || nok "--allow-special round trip $name: decode does not give back the text"
    fi
  fi
  # round trip: the decoded ids give back the text (repaired, for invalid UTF-8)
  if ! "$ALLOY" tokenizer decode --tokenizer "$TOK" --input "$T/out/$i.a1" >"$T/dec" 2>"$T/err"; then
    nok "round trip $name: decode failed: $(head -c 300 "$T/err")"
  elif cmp -s "$T/dec" "$path"; then ok "round trip $name: decode(encode(x)) == x ($(stat -c %s "$path") bytes)"
  elif "$PY" -c 'import sys; d = open(sys.argv[1], "rb").read(); d.decode("utf-8")' "$path" 2>/dev/null; then
    nok "round trip $name: decode(encode(x)) != x: $(cmp "$T/dec" "$path" 2>&1 | head -c 200)"
  elif "$PY" -c 'import sys; d = open(sys.argv[1], "rb").read(); sys.exit(d.decode("utf-8", "replace").encode() != open(sys.argv[2], "rb").read())' "$path" "$T/dec"; then
    ok "round trip $name: decode(encode(x)) == x with U+FFFD for invalid UTF-8"
  else
    nok "round trip $name: decode(encode(x)) is not x with U+FFFD for invalid UTF-8"
  fi
done <"$T/inputs"
t_alloy=$(date +%s)

# ---- against js-tiktoken ----
count_ids() { if [ "$(head -c 2 "$1")" = "[]" ]; then echo 0; else echo $(($(tr -cd , <"$1" | wc -c) + 1)); fi; }
wait $js_pid
[ -s "$T/js.log" ] && sed 's/^/# /' "$T/js.log" | head -20
i=0; bytes=0; n_same=0; n_ssame=0
while IFS=$'\t' read -r name path; do
  i=$((i + 1))
  [ -f "$T/out/$i.a1" ] || continue
  size=$(stat -c %s "$path"); bytes=$((bytes + size))
  if [ ! -f "$T/out/$i.js" ]; then nok "encode $name: js-tiktoken failed (see above)"
  elif cmp -s "$T/out/$i.js" "$T/out/$i.a1"; then ok "encode $name: $size bytes, $(count_ids "$T/out/$i.a1") ids, as js-tiktoken"; n_same=$((n_same + 1))
  else nok "encode $name: ids differ from js-tiktoken's"; explain "$T/out/$i.js" "$T/out/$i.a1" "$path"; fi
  if [ -f "$T/out/$i.sa" ]; then
    if [ ! -f "$T/out/$i.sjs" ]; then nok "--allow-special $name: js-tiktoken failed (see above)"
    elif cmp -s "$T/out/$i.sjs" "$T/out/$i.sa"; then ok "--allow-special $name: as js-tiktoken's encode(text, \"all\")"; n_ssame=$((n_ssame + 1))
    else nok "--allow-special $name: ids differ from js-tiktoken's encode(text, \"all\")"; explain "$T/out/$i.sjs" "$T/out/$i.sa" "$path"; fi
  fi
done <"$T/inputs"
t_end=$(date +%s)
echo "# $n_same of $n_in inputs ($bytes bytes) equal to js-tiktoken, $n_ssame of $n_special with --allow-special;" \
  "alloy $((t_alloy - t_start))s, js-tiktoken finished at $((t_end - t_start))s"
[ "$fails" -eq 0 ]
