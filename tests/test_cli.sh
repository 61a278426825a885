#!/usr/bin/env bash
# The alloy command end to end: usage errors, bad files, and crash safety of training.
# Every failure must be one line on stderr naming the file or flag, exit status 1 (2 for
# usage), no sanitizer report, and nothing already on disk changed.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt stories/tinystories_valid.txt
n=0

# ---- data to work with ----
mkdir -p "$T/src"
head -c 300000 "$SHARED/prose/tinyshakespeare.txt" >"$T/src/a.txt"
head -c 100000 "$SHARED/stories/tinystories_valid.txt" >"$T/src/b.txt"
printf 'bin\0ary' >"$T/src/c.bin"
expect 0 "prepare writes shards" "prepared .*2 files \(1 binary skipped\)" "$ALLOY" prepare --input "$T/src" --out "$T/data"
[ -f "$T/data/train-00000.bin" ] && [ -f "$T/data/val-00000.bin" ] && [ -f "$T/data/manifest.json" ] \
  && ok "prepare layout" || nok "prepare layout"

# ---- prepare: a progress line when stderr is not a terminal; Ctrl-C leaves nothing behind ----
mkdir -p "$T/big"
awk 'BEGIN { for (i = 0; i < 900000; i++) printf "line %d of a generated text, with words enough to tokenize %d\n", i, i * 7 }' >"$T/big/a.txt"
"$ALLOY" prepare --input "$T/big" --out "$T/bigout" --progress-every 0.001 2>"$T/big.err" &
pid=$!
for i in $(seq 1 1000); do [ -s "$T/bigout/.prepare-tmp/0.train.tokens" ] && break; sleep 0.01; done
kill -INT $pid; wait $pid; rc=$?
grep -qE '^prepare: source 1/1 big: [0-9]+ docs, [0-9.]+ MB \([0-9.]+ MB/s\)' "$T/big.err" \
  && ok "prepare prints progress lines when not on a terminal" || nok "prepare progress: $(head -c 300 "$T/big.err")"
[ $rc -eq 130 ] && [ "$(tail -1 "$T/big.err")" = "alloy prepare: interrupted; nothing written" ] && [ ! -e "$T/bigout" ] \
  && ok "prepare stopped by Ctrl-C: exit 130, says so, nothing left (no .prepare-tmp)" \
  || nok "prepare Ctrl-C: rc=$rc, $(tail -1 "$T/big.err"), left: $(ls -a "$T/bigout" 2>&1 | tr '\n' ' ')"
rm -rf "$T/big"

# ---- usage errors: exit 2 ----
expect 2 "no verb" "usage: alloy <verb>" "$ALLOY"
expect 2 "unknown verb" "unknown verb 'frobnicate'" "$ALLOY" frobnicate
expect 2 "unknown flag" "unknown flag --bogus" "$ALLOY" train --bogus 3
expect 2 "missing value" "--steps needs a value" "$ALLOY" train --data "$T/data" --steps
expect 2 "bad integer" "--steps expects an integer, got 'ten'" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --steps ten
expect 2 "bad number" "--lr expects a number" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --lr 1e-3x
expect 2 "two models" "exactly one of --preset, --config or --init" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --config x.json
expect 2 "unknown preset" "unknown preset 'gpt5'" "$ALLOY" train --data "$T/data" --out "$T/r" --preset gpt5
expect 2 "seq too long" "--seq 4096 exceeds the model's maximum sequence length 128" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --seq 4096
expect 2 "negative steps" "--steps must be at least 1" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --steps -5
expect 2 "bad dtype" "--dtype must be f32 or bf16, not \"f16\"" "$ALLOY" train --data "$T/data" --out "$T/r" --preset tiny-gpt2 --dtype f16
expect 2 "prepare without out" "--input and --out are required" "$ALLOY" prepare --input "$T/src"
expect 2 "prepare into shards" "already holds token shards" "$ALLOY" prepare --input "$T/src" --out "$T/data"
expect 2 "inspect two paths" "expects one PATH" "$ALLOY" inspect a b
expect 2 "sample bad temperature" "--temperature expects a number" "$ALLOY" sample --model x --temperature hot
for v in prepare train sample inspect; do expect 0 "$v --help" "usage: alloy $v" "$ALLOY" $v --help; done
expect 2 "unknown flag: the nearest known one" "^alloy train: unknown flag --step \(did you mean --steps\?\)" "$ALLOY" train --step 3
expect 2 "unknown flag: a unique prefix" "unknown flag --eval-b \(did you mean --eval-batches\?\)" "$ALLOY" train --eval-b 3
expect 2 "unknown flag: letters swapped" "unknown flag --temprature \(did you mean --temperature\?\)" "$ALLOY" sample --temprature 1
expect 2 "unknown flag: two as near" "unknown flag --beta \(did you mean --beta1 or --beta2\?\)" "$ALLOY" train --beta 3
expect 2 "unknown flag: nothing near" "unknown flag --bogus \(see: alloy train --help\)" "$ALLOY" train --bogus 3
expect 0 "alloy --help: prepare takes a tokenizer" "^  prepare   text, JSONL or JSON files or folders -> token shards \(bytes, or a BPE tokenizer\)$" "$ALLOY" --help
expect 0 "tokenizer --help: what info prints" "^info     prints the kind, vocabulary size, fingerprint, pre-tokenizer regex and special tokens$" "$ALLOY" tokenizer --help

# ---- missing and bad files: exit 1 ----
expect 1 "missing input" "$T/nope.txt: No such file" "$ALLOY" prepare --input "$T/nope.txt" --out "$T/d2"
expect 1 "missing data folder" "$T/nodata: no such folder" "$ALLOY" train --data "$T/nodata" --out "$T/r" --preset tiny-gpt2
mkdir -p "$T/empty"
expect 1 "data folder without shards" "no token shards" "$ALLOY" train --data "$T/empty" --out "$T/r" --preset tiny-gpt2
expect 1 "train --data of a text file" "$T/src/a.txt: not a folder of token shards; make them with alloy prepare \(--input $T/src/a.txt --out DIR\)$" \
  "$ALLOY" train --data "$T/src/a.txt" --out "$T/r" --preset tiny-gpt2
cp -r "$T/data" "$T/trunc"; truncate -s -1000 "$T/trunc/train-00000.bin"
expect 1 "truncated shard" "train-00000.bin: header says .* \(truncated\?\)" "$ALLOY" train --data "$T/trunc" --out "$T/r" --preset tiny-gpt2
cp -r "$T/data" "$T/flip"; printf '\x41' | dd of="$T/flip/train-00000.bin" bs=1 seek=5000 conv=notrunc 2>/dev/null
expect 1 "corrupted shard" "train-00000.bin: checksum mismatch" "$ALLOY" train --data "$T/flip" --out "$T/r" --preset tiny-gpt2
cp -r "$T/data" "$T/magic"; printf 'XXXX' | dd of="$T/magic/val-00000.bin" bs=1 seek=0 conv=notrunc 2>/dev/null
expect 1 "bad shard magic" "val-00000.bin: not a token shard \(bad magic\)" "$ALLOY" inspect "$T/magic/val-00000.bin"
expect 1 "inspect garbage" "garbage.safetensors: (too short|header length)" bash -c "printf 'hello world' >'$T/garbage.safetensors'; '$ALLOY' inspect '$T/garbage.safetensors'"

# ---- the data pipeline and tokenizers through the command ----
printf '{"text": "one"}\nnot json\n{"body": "x"}\n{"text": "caf\xff\xfe two"}\n' >"$T/bad.jsonl"
expect 0 "prepare counts malformed JSONL" "2 documents.*skipped 2 malformed records" "$ALLOY" prepare --input "$T/bad.jsonl" --out "$T/dj" --val-fraction 0
grep -q '"first_skipped":[[:space:]]*".*bad.jsonl:2: not valid JSON"' "$T/dj/manifest.json" && ok "manifest names the first skipped line" \
  || nok "manifest lacks first_skipped"
grep -q '"invalid_utf8_replaced":[[:space:]]*2' "$T/dj/manifest.json" && ok "invalid UTF-8 counted (2 bytes, 2 U+FFFD)" || nok "invalid UTF-8 not counted"
: >"$T/empty.txt"
expect 2 "prepare of empty input" "no text left to train on" "$ALLOY" prepare --input "$T/empty.txt" --out "$T/de"
echo '{"model": {"type": "WordPiece", "vocab": {}}}' >"$T/wp.json"
expect 1 "tokenizer of the wrong kind" "wp.json: a WordPiece model, not byte-level BPE" "$ALLOY" prepare --input "$T/src" --out "$T/dw" --tokenizer "$T/wp.json"
expect 2 "mix names an unknown source" "--mix names zz" "$ALLOY" prepare --input a="$T/src" --mix zz:1 --out "$T/dm"
expect 0 "tokenizer train" "vocabulary 300 \(256 bytes, 43 merges, 1 special\)" "$ALLOY" tokenizer train --input "$T/src" --vocab-size 300 --out "$T/tok.json" --quiet
expect 0 "tokenizer info prints what its help says" "^pre-tokenizer regex: " "$ALLOY" tokenizer info --tokenizer "$T/tok.json"
printf 'Hello, world! <|endoftext|> again' >"$T/hello.txt"
"$ALLOY" tokenizer encode --tokenizer "$T/tok.json" --input "$T/hello.txt" --allow-special >"$T/ids.json" 2>"$T/err" &&
  "$ALLOY" tokenizer decode --tokenizer "$T/tok.json" --input "$T/ids.json" >"$T/back.txt" 2>>"$T/err" &&
  cmp -s "$T/hello.txt" "$T/back.txt" && grep -q ',299,' "$T/ids.json" && ok "encode/decode round trip, special id 299" || nok "round trip: $(cat "$T/err")"
echo '[1, "x"]' >"$T/badids.json"
expect 1 "decode of a bad id list" "badids.json: element 1 is not an integer id" "$ALLOY" tokenizer decode --tokenizer "$T/tok.json" --input "$T/badids.json"
expect 1 "decode of an id out of range" "token id 300 at position 0 is outside the vocabulary" bash -c "echo '[300]' | '$ALLOY' tokenizer decode --tokenizer '$T/tok.json'"
expect 2 "tokenizer without a subcommand" "expects encode, decode, train or info" "$ALLOY" tokenizer

# ---- a short run to have checkpoints ----
expect 0 "train tiny" "held-out loss" "$ALLOY" train --data "$T/data" --out "$T/run" --preset tiny-gpt2 --steps 6 --batch 2 --seq 32 --eval-every 3 --ckpt-every 3 --threads 1
# the held-out loss says what it covers; the summary line ends the run
nwin=$(grep -o '"val_windows_total":[0-9]*' "$T/run/metrics.jsonl" | head -1 | cut -d: -f2)
cp "$T/err" "$T/train.err"
expect 0 "held-out loss labelled with its windows" "^step 6: held-out loss [0-9.]+ over the first 40 of $nwin windows \(perplexity" cat "$T/train.err"
expect 0 "summary line: steps, time, checkpoint, held-out loss and what it covers" \
  "^done: 6 steps in [0-9]+s; final checkpoint $T/run/checkpoints/step-00000006; held-out loss [0-9.]+ over the first 40 of $nwin windows \(the whole split, $nwin windows, is more than 10 evaluations' worth: alloy eval --seq 32 scores it\)$" cat "$T/train.err"
grep -q '"type":"eval","step":6,"val_loss":[0-9.]*,"val_ppl":[0-9.]*,"val_windows":40,"val_windows_total":'"$nwin"',' "$T/run/metrics.jsonl" \
  && grep -q '^{"type":"end","step":6,"elapsed_s":[0-9.]*,"checkpoint":"checkpoints/step-00000006","val_loss":[0-9.]*}$' "$T/run/metrics.jsonl" \
  && ok "metrics: the windows an evaluation covered, the end line" || nok "metrics: $(tail -2 "$T/run/metrics.jsonl")"
# evaluations of 100 x 2 windows: at the end the whole split too, as alloy eval scores it
expect 0 "summary line with the whole split" "^done: 2 steps in [0-9]+s; final checkpoint $T/whole/checkpoints/step-00000002; held-out loss [0-9.]+ over the first 200 of $nwin windows, [0-9.]+ over all $nwin windows$" \
  "$ALLOY" train --data "$T/data" --out "$T/whole" --preset tiny-gpt2 --steps 2 --batch 2 --seq 32 --eval-batches 100 --threads 1
all=$(grep -o '"val_loss_all":[0-9.]*' "$T/whole/metrics.jsonl" | cut -d: -f2)
ev=$("$ALLOY" eval --model "$T/whole" --data "$T/data" --seq 32 --quiet | grep -o '"loss":[0-9.]*' | cut -d: -f2)
awk -v a="$all" -v b="$ev" 'BEGIN { d = a - b; exit !(a != "" && d < 1e-5 && d > -1e-5) }' \
  && ok "the run's whole-split loss is alloy eval's ($all, $ev)" || nok "whole split: run $all, alloy eval $ev"
expect 0 "alloy eval says what it covers" "over the first 7 of $nwin windows of 33 tokens \(224 tokens\)" \
  "$ALLOY" eval --model "$T/whole" --data "$T/data" --seq 32 --max-windows 7
grep -q '"windows":7,"windows_total":'"$nwin"',' "$T/out" && ok "alloy eval's JSON: windows and windows_total" || nok "eval JSON: $(cat "$T/out")"
expect 2 "out holds a run" "already holds a run; continue it with --resume" "$ALLOY" train --data "$T/data" --out "$T/run" --preset tiny-gpt2
expect 2 "resume cannot change lr" "--lr cannot change when resuming" "$ALLOY" train --resume "$T/run" --lr 0.1
expect 2 "resume at the end" "already at step 6 of 6" "$ALLOY" train --resume "$T/run"
expect 2 "resume cannot change dtype" "--dtype cannot change when resuming" "$ALLOY" train --resume "$T/run" --dtype bf16
# --recompute may change on resume and changes nothing in the results
cp -r "$T/run" "$T/run_rc"; cp -r "$T/run" "$T/run_norc"
expect 0 "resume with recompute" "held-out loss" "$ALLOY" train --resume "$T/run_rc" --steps 8 --recompute --threads 1
expect 0 "resume without recompute" "held-out loss" "$ALLOY" train --resume "$T/run_norc" --steps 8 --threads 1
if cmp -s "$T/run_rc/checkpoints/step-00000008/model.safetensors" "$T/run_norc/checkpoints/step-00000008/model.safetensors"; then
  ok "recompute: weights bitwise equal"
else
  nok "recompute: weights differ from the run without it"
fi
CK="$T/run/checkpoints/step-00000006"
expect 0 "sample" "ROMEO" "$ALLOY" sample --model "$T/run" --prompt "ROMEO" --tokens 5
expect 0 "inspect run" "transformer.h.1.mlp.c_proj.weight +F32 +\[256, 64\]" "$ALLOY" inspect "$T/run"
expect 0 "inspect shard" "token shard v1, [0-9]+ tokens of 2 bytes" "$ALLOY" inspect "$T/data/train-00000.bin"

before=$(tree_sum "$T/run")
cp -r "$CK" "$T/ck_trunc"; truncate -s 10000 "$T/ck_trunc/model.safetensors"
expect 1 "truncated checkpoint" "ck_trunc/model.safetensors: tensor .* lies outside" "$ALLOY" sample --model "$T/ck_trunc" --prompt x
cp -r "$CK" "$T/ck_cfg"; sed -i 's/"n_layer":[[:space:]]*2/"n_layer": 3/' "$T/ck_cfg/config.json"
expect 1 "config does not match weights" "missing tensor \"transformer.h.2.ln_1.weight\"" "$ALLOY" sample --model "$T/ck_cfg" --prompt x
cp -r "$CK" "$T/ck_emb"; sed -i 's/"n_embd":[[:space:]]*64/"n_embd": 32/' "$T/ck_emb/config.json"
expect 1 "config shape mismatch" "has shape \[256, 64\] but config.json implies \[256, 32\]" "$ALLOY" sample --model "$T/ck_emb" --prompt x
cp -r "$CK" "$T/ck_json"; echo '{"model_type": "gpt2", ' >"$T/ck_json/config.json"
expect 1 "corrupt config.json" "ck_json/config.json: invalid JSON" "$ALLOY" sample --model "$T/ck_json" --prompt x
cp -r "$CK" "$T/ck_nocfg"; rm "$T/ck_nocfg/config.json"
expect 1 "missing config.json" "ck_nocfg/config.json: cannot open" "$ALLOY" sample --model "$T/ck_nocfg" --prompt x
expect 1 "missing model" "$T/nomodel: no such folder" "$ALLOY" sample --model "$T/nomodel" --prompt x
cp -r "$T/run" "$T/run_opt"; truncate -s 100 "$T/run_opt/checkpoints/step-00000006/optimizer.safetensors"
sum_opt=$(tree_sum "$T/run_opt")
expect 1 "truncated optimizer state" "optimizer.safetensors: header length" "$ALLOY" train --resume "$T/run_opt" --steps 9
[ "$(tree_sum "$T/run_opt")" = "$sum_opt" ] && ok "failed resume leaves the run untouched" || nok "failed resume changed the run"
cp -r "$T/run" "$T/run_state"; echo '{"step": 6}' >"$T/run_state/checkpoints/step-00000006/trainer_state.json"
expect 1 "bad trainer_state.json" "trainer_state.json: missing \"options\"" "$ALLOY" train --resume "$T/run_state" --steps 9
cp -r "$T/run" "$T/run_data"; 
expect 1 "resume with changed data" "the data in .* has changed" bash -c "sed -i 's#\"data\":[[:space:]]*\"[^\"]*\"#\"data\": \"$T/flip2\"#' '$T/run_data/checkpoints/step-00000006/trainer_state.json'; cp -r '$T/data' '$T/flip2'; rm '$T/flip2/val-00000.bin'; '$ALLOY' train --resume '$T/run_data' --steps 9"
cp -r "$T/data" "$T/bigvocab"
expect 1 "token id out of range for the model" "data's vocabulary \(256\) is larger than the model's \(100\)" bash -c "sed -e 's/\"vocab_size\":[[:space:]]*256/\"vocab_size\": 100/' '$CK/config.json' >'$T/small.json'; '$ALLOY' train --data '$T/bigvocab' --out '$T/r3' --config '$T/small.json' --steps 2"
[ "$(tree_sum "$T/run")" = "$before" ] && ok "bad inputs left the run untouched" || nok "a bad input changed the run"

# ---- kill -9 during training, then resume: bitwise equal to an uninterrupted run ----
TR=(train --data "$T/data" --preset tiny-llama --batch 4 --seq 32 --steps 40 --eval-every 10 --ckpt-every 4 --keep 2 --threads 1 --quiet)
OMP_NUM_THREADS=1 "$ALLOY" "${TR[@]}" --out "$T/full" 2>/dev/null
OMP_NUM_THREADS=1 "$ALLOY" "${TR[@]}" --out "$T/killed" 2>/dev/null &
pid=$!
for i in $(seq 1 400); do  # wait for a checkpoint past step 8, then kill at once
  if grep -qE 'step-000000(1[2-9]|[2-3][0-9])' "$T/killed/latest" 2>/dev/null; then break; fi
  sleep 0.02
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if grep -q 'step-00000040' "$T/killed/latest" 2>/dev/null; then
  nok "kill -9: the run finished before it could be killed"
else
  ok "kill -9 landed at $(cat "$T/killed/latest")"
fi
expect 0 "latest checkpoint after kill -9 is whole" "checkpoint, llama family" "$ALLOY" inspect "$T/killed"
OMP_NUM_THREADS=1 "$ALLOY" train --resume "$T/killed" --quiet 2>/dev/null
cmp -s "$T/full/checkpoints/step-00000040/model.safetensors" "$T/killed/checkpoints/step-00000040/model.safetensors" \
  && ok "kill -9 + resume: weights bitwise equal" || nok "kill -9 + resume: weights differ"
cmp -s "$T/full/checkpoints/step-00000040/optimizer.safetensors" "$T/killed/checkpoints/step-00000040/optimizer.safetensors" \
  && ok "kill -9 + resume: optimizer state bitwise equal" || nok "kill -9 + resume: optimizer state differs"
diff -q <(grep -o '"step":[0-9]*,"loss":[0-9.]*' "$T/full/metrics.jsonl") <(grep -o '"step":[0-9]*,"loss":[0-9.]*' "$T/killed/metrics.jsonl") >/dev/null \
  && ok "kill -9 + resume: the same 40 losses, each step once" || nok "kill -9 + resume: loss history differs"

# ---- killed while writing a checkpoint: the last good one survives ----
{ OMP_NUM_THREADS=1 ALLOY_TEST_CRASH_IN_CHECKPOINT=12 "$ALLOY" "${TR[@]}" --out "$T/mid"; rc=$?; } 2>/dev/null
[ $rc -eq 137 ] && [ "$(cat "$T/mid/latest")" = "checkpoints/step-00000008" ] && [ -d "$T/mid/checkpoints/.tmp-step-00000012" ] \
  && ok "crash inside checkpoint 12: latest still names step 8" || nok "crash inside checkpoint: rc=$rc latest=$(cat "$T/mid/latest" 2>&1)"
expect 0 "checkpoint 8 is whole after the crash" "trainer_state.json" "$ALLOY" inspect "$T/mid"
OMP_NUM_THREADS=1 "$ALLOY" train --resume "$T/mid" --quiet 2>/dev/null
cmp -s "$T/full/checkpoints/step-00000040/model.safetensors" "$T/mid/checkpoints/step-00000040/model.safetensors" \
  && ok "crash in checkpoint + resume: weights bitwise equal" || nok "crash in checkpoint + resume: weights differ"
[ ! -e "$T/mid/checkpoints/.tmp-step-00000012" ] && [ "$(ls "$T/mid/checkpoints" | wc -l)" -eq 2 ] \
  && ok "leftovers pruned, --keep 2 honoured" || nok "checkpoints folder: $(ls -a "$T/mid/checkpoints")"

# ---- import and export between formats ----
expect 2 "import needs one source" "exactly one SOURCE" "$ALLOY" import --out "$T/imp"
expect 2 "export --format checked" "--format must be hf, gguf or llmc" "$ALLOY" export --model "$T/imp" --format onnx --out "$T/x"
expect 1 "import of a missing file" "no such file or folder" "$ALLOY" import "$T/nope.bin" --out "$T/imp"
head -c 4096 /dev/urandom >"$T/junk.bin"
expect 1 "import of an unknown file" "junk.bin.*no known magic" "$ALLOY" import "$T/junk.bin" --out "$T/imp"
[ ! -e "$T/imp" ] && ok "failed imports write nothing" || nok "failed import left $T/imp"
if [ -f "$SHARED/models/stories260K.bin" ]; then
  expect 0 "import llama2.c stories260K" "llama, 260032 parameters.*KV=4" "$ALLOY" import "$SHARED/models/stories260K.bin" --out "$T/st"
  expect 0 "export GGUF q8_0" "as gguf q8_0" "$ALLOY" export --model "$T/st" --format gguf --type q8_0 --out "$T/st.gguf"
  expect 0 "import GGUF back" "GGUF file.*260032 parameters" "$ALLOY" import "$T/st.gguf" --out "$T/st2"
  expect 0 "export f32 GGUF" "as gguf f32" "$ALLOY" export --model "$T/st" --format gguf --type f32 --out "$T/st32.gguf"
  expect 0 "import f32 GGUF back" "GGUF file" "$ALLOY" import "$T/st32.gguf" --out "$T/st3"
  cmp -s "$T/st/model.safetensors" "$T/st3/model.safetensors" \
    && ok "llama2.c -> alloy -> GGUF f32 -> alloy: weights bitwise equal" || nok "GGUF f32 round trip changed the weights"
  expect 2 "llm.c export refuses a Llama" "llm.c checkpoints hold GPT-2 models" "$ALLOY" export --model "$T/st" --format llmc --out "$T/st.bin"
else
  skip "import and export of llama2.c stories260K" "data: $SHARED/models/stories260K.bin is absent"
fi
OMP_NUM_THREADS=1 "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --steps 2 --batch 2 --seq 32 --out "$T/g2run" --quiet 2>/dev/null \
  && ok "train a tiny GPT-2 to export" || nok "train a tiny GPT-2 to export"
expect 0 "export llm.c" "as llmc" "$ALLOY" export --model "$T/g2run" --format llmc --out "$T/g2.bin"
expect 0 "import llm.c back" "llm.c checkpoint.*gpt2" "$ALLOY" import "$T/g2.bin" --out "$T/g2b" --tokenizer bytes
expect 0 "export hf" "as hf" "$ALLOY" export --model "$T/g2b" --format hf --out "$T/g2hf"
expect 0 "import hf back" "Hugging Face folder.*tokenizer bytes" "$ALLOY" import "$T/g2hf" --out "$T/g2c" --tokenizer bytes
cmp -s "$T/g2b/model.safetensors" "$T/g2c/model.safetensors" \
  && ok "alloy -> llm.c -> alloy -> hf -> alloy: weights bitwise equal" || nok "llm.c/hf round trip changed the weights"

# ---- eval ----
expect 0 "eval prints loss and perplexity" '"loss":[0-9.]+,"perplexity":[0-9.]+' "$ALLOY" eval --model "$T/g2run" --data "$T/data" --seq 32 --quiet
expect 2 "eval --split checked" "--split must be val or train" "$ALLOY" eval --model "$T/g2run" --data "$T/data" --split test
expect 2 "eval --seq beyond the context" "exceeds the model's context" "$ALLOY" eval --model "$T/g2run" --data "$T/data" --seq 100000
expect 1 "eval of a missing model" "no such folder" "$ALLOY" eval --model "$T/none" --data "$T/data"
OMP_NUM_THREADS=1 "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --steps 3 --batch 2 --seq 32 --seed 9 --out "$T/g2run2" --quiet 2>/dev/null
expect 0 "eval of an ensemble of two" '"ensemble":"probs","members":\[.*"weight":0.75.*"weight":0.25.*"perplexity"' \
  "$ALLOY" eval --model "$T/g2run" "$T/g2run2" --member-weights 3 1 --data "$T/data" --seq 32 --quiet
expect 2 "eval --member-weights counted" "one weight per model" "$ALLOY" eval --model "$T/g2run" "$T/g2run2" --member-weights 1 --data "$T/data"
expect 0 "eval through the engine, q8_0 weights" '"weights":"q8_0".*"perplexity"' "$ALLOY" eval --model "$T/g2run" --data "$T/data" --seq 32 --weights q8_0 --quiet
expect 2 "eval --weights checked" "--weights must be f32, f16" "$ALLOY" eval --model "$T/g2run" --data "$T/data" --weights q3
expect 2 "eval --ensemble checked" "--ensemble must be probs or logits" "$ALLOY" eval --model "$T/g2run" "$T/g2run2" --ensemble vote --data "$T/data"

# ---- distill: a student trained on a teacher's distribution, resumed exactly ----
DT=(--teacher "$T/g2run" --student tiny-gpt2 --data "$T/data" --batch 2 --seq 32 --divergence jsd --temperature 1.5 --alpha 0.3 --quiet)
OMP_NUM_THREADS=1 "$ALLOY" distill "${DT[@]}" --steps 6 --ckpt-every 3 --out "$T/dist" 2>"$T/err" \
  && grep -q '"objective":.*teachers.*jsd' "$T/dist/checkpoints/step-00000006/trainer_state.json" \
  && ok "distill runs and records its settings" || nok "distill: $(head -c 300 "$T/err")"
cp -r "$T/dist" "$T/dist2" && rm -rf "$T/dist2/checkpoints/step-00000006" && echo checkpoints/step-00000003 >"$T/dist2/latest"
OMP_NUM_THREADS=1 "$ALLOY" distill --resume "$T/dist2" --quiet 2>/dev/null
cmp -s "$T/dist/checkpoints/step-00000006/model.safetensors" "$T/dist2/checkpoints/step-00000006/model.safetensors" \
  && ok "distill resume: weights bitwise equal to an uninterrupted run" || nok "distill resume: weights differ"
# distill's progress names its loss apart from the held-out cross-entropy
OMP_NUM_THREADS=1 "$ALLOY" distill --teacher "$T/g2run" --student tiny-gpt2 --data "$T/data" --batch 2 --seq 32 --steps 2 \
  --out "$T/dlab" 2>"$T/dlab.err" >/dev/null
grep -qE '^step 2/2 \| distill-loss [0-9.]+ \| lr ' "$T/dlab.err" && grep -qE '^step 2: held-out CE [0-9.]+ over the first 40 of' "$T/dlab.err" \
  && grep -qE '^done: 2 steps in .*; held-out CE [0-9.]+ over the first 40 of' "$T/dlab.err" \
  && ok "distill labels distill-loss and held-out CE" || nok "distill labels: $(head -c 600 "$T/dlab.err")"
expect 2 "distill needs a teacher" "give 1 to 8 --teacher" "$ALLOY" distill --student tiny-gpt2 --data "$T/data" --out "$T/d3"
expect 2 "distill --divergence checked" "--divergence must be" "$ALLOY" distill --teacher "$T/g2run" --student tiny-gpt2 --data "$T/data" --out "$T/d3" --divergence tv
expect 1 "distill: a missing teacher" "teacher $T/nope: .*no such folder" "$ALLOY" distill --teacher "$T/nope" --student tiny-gpt2 --data "$T/data" --out "$T/d3"
expect 2 "train --resume refuses a distillation run" "alloy distill --resume" "$ALLOY" train --resume "$T/dist2"
expect 2 "distill --resume refuses a plain run" "alloy train --resume" "$ALLOY" distill --resume "$T/g2run"
first=$(grep -o '"type":"train","step":1,"loss":[0-9.]*' "$T/dist/metrics.jsonl" | grep -o '[0-9.]*$')
last=$(grep -o '"type":"train","step":6,"loss":[0-9.]*' "$T/dist/metrics.jsonl" | grep -o '[0-9.]*$')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' && ok "distill: the loss falls ($first -> $last)" || nok "distill: loss $first -> $last"
