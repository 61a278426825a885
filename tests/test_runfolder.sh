#!/usr/bin/env bash
# Every verb that takes a model takes a run folder wherever it takes a checkpoint folder (issue
# 20): each verb below runs twice, once on run folders and once on the checkpoint folders their
# `latest` names, and must do the same thing both times (the same exit status 0, and the same
# output or the same files written, paths aside). Then the errors of the one resolution: a run
# folder whose `latest` names nothing, a missing folder, a file that is no checkpoint's.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# ---- the models: tiny runs (byte tokenizer), a chat model (sft) and a reward model ----
tiny_model "$T/run" 2 && tiny_model "$T/run2" 1 tiny-gpt2 --seed 7 && ok "two tiny runs" || { nok "two tiny runs"; exit 1; }
cat >"$T/sft.jsonl" <<'EOF'
{"prompt": "What is 2+2?", "response": "Four."}
{"prompt": "Say hello.", "response": "Hello!"}
{"prompt": "Capital of France?", "response": "Paris."}
{"prompt": "Opposite of hot?", "response": "Cold."}
EOF
cat >"$T/prefs.jsonl" <<'EOF'
{"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Five."}
{"prompt": "Say hello.", "chosen": "Hello!", "rejected": "Go away."}
{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}
{"prompt": "Opposite of hot?", "chosen": "Cold.", "rejected": "Hot."}
EOF
printf '{"prompt": "What is 2+2?"}\n{"prompt": "Say hello."}\n' >"$T/prompts.jsonl"
"$ALLOY" sft --model "$T/run" --data "$T/sft.jsonl" --out "$T/sft" --steps 2 --batch 2 --quiet >/dev/null 2>&1 &&
  "$ALLOY" reward --model "$T/sft" --data "$T/prefs.jsonl" --out "$T/rm" --steps 2 --batch 2 --quiet >/dev/null 2>&1 &&
  ok "a chat model and a reward model" || { nok "a chat model and a reward model"; exit 1; }

# latest_of RUN: the checkpoint folder RUN/latest names
latest_of() { echo "$1/$(head -1 "$1/latest")"; }
M=$T/run M2=$T/run2 S=$T/sft RM=$T/rm
CM=$(latest_of "$M") CM2=$(latest_of "$M2") CS=$(latest_of "$S") CRM=$(latest_of "$RM")

# fill FORM ARG...: the arguments with @M@ @M2@ @S@ @RM@ as run folders (FORM run) or as their
# checkpoint folders (FORM ck), and @O@ as $T/o-FORM-$name
fill() {
  local form=$1; shift
  args=()
  for a in "$@"; do
    if [ "$form" = run ]; then a=${a//@M2@/$M2}; a=${a//@M@/$M}; a=${a//@S@/$S}; a=${a//@RM@/$RM}
    else a=${a//@M2@/$CM2}; a=${a//@M@/$CM}; a=${a//@S@/$CS}; a=${a//@RM@/$CRM}; fi
    a=${a//@FORM@/$form}
    args+=("${a//@O@/$T/o-$form-$name}")
  done
}
# norm FILE: the output with the folders of either form, timings and speeds made alike
norm() {
  sed -e "s#$CM2#M2#g; s#$CM#M#g; s#$CS#S#g; s#$CRM#RM#g; s#$M2#M2#g; s#$M#M#g; s#$S#S#g; s#$RM#RM#g" \
      -e "s#$T/o-[a-z]*-#OUT-#g" -e 's/[0-9.]* *s\b/Ts/g; s/[0-9.]* tokens\/s/N tokens\/s/g; s/"tokens_per_s":[0-9.e+-]*//g' "$1"
}
# fail MESSAGE: a "not ok" line
fail() { nok "$*"; }
# both MODE NAME ARG...: runs `alloy ARG...` in both forms (stdin from $T/stdin when it exists).
# MODE: exit (both exit 0), out (and the same output), tree (and the same files under @O@),
# files (the same, @O@ made first: a verb writing one file names it inside), weights (and the
# same weights in @O@'s latest checkpoint: training runs).
both() {
  local mode=$1 rc=() f; name=$2; shift 2
  for f in run ck; do
    [ "$mode" = files ] && mkdir -p "$T/o-$f-$name"
    fill $f "$@"
    if [ -f "$T/stdin" ]; then "$ALLOY" "${args[@]}" <"$T/stdin" >"$T/out-$f" 2>"$T/err-$f"
    else "$ALLOY" "${args[@]}" </dev/null >"$T/out-$f" 2>"$T/err-$f"; fi
    rc+=($?)
  done
  if [ "${rc[0]}" -ne 0 ] || [ "${rc[1]}" -ne 0 ]; then
    fail "$name: exit ${rc[0]} on run folders, ${rc[1]} on checkpoint folders: $(head -c 300 "$T/err-run") | $(head -c 300 "$T/err-ck")"
    return
  fi
  case $mode in
  out) if ! diff <(norm "$T/out-run") <(norm "$T/out-ck") >/dev/null; then
         fail "$name: the outputs differ: $(diff <(norm "$T/out-run") <(norm "$T/out-ck") | head -c 400)"; return; fi ;;
  tree|files) if [ "$(tree_sum "$T/o-run-$name")" != "$(tree_sum "$T/o-ck-$name")" ]; then
          fail "$name: the files written differ"; return; fi ;;
  weights) local a b; a=$(latest_of "$T/o-run-$name")/model.safetensors b=$(latest_of "$T/o-ck-$name")/model.safetensors
           if ! cmp -s "$a" "$b"; then fail "$name: the trained weights differ"; return; fi ;;
  esac
  ok "$name: a run folder as its checkpoint folder"
}
D=(--data "$T/data" --batch 2 --seq 32 --steps 1 --quiet)

# ---- inference and inspection ----
both out sample sample --model @M@ --prompt ROMEO --tokens 8 --seed 3
both out "sample (ensemble)" sample --model @M@ @M2@ --prompt ROMEO --tokens 8 --seed 3
both out generate generate --model @M@ --prompt ROMEO --tokens 8 --seed 3
both out "generate (ensemble)" generate --model @M@ @M2@ --prompt ROMEO --tokens 8 --seed 3 --ensemble logits
printf 'hello\n' >"$T/stdin"
both out chat chat --model @S@ --max-tokens 6 --seed 3
rm -f "$T/stdin"
both out eval eval --model @M@ --data "$T/data" --seq 32 --max-windows 4 --quiet
both out "eval (ensemble)" eval --model @M@ @M2@ --data "$T/data" --seq 32 --max-windows 4 --quiet
both out "eval (engine)" eval --model @M@ --weights q8_0 --data "$T/data" --seq 32 --max-windows 4 --quiet
both out "tokenizer info" tokenizer info --tokenizer @S@
both out "tokenizer encode" tokenizer encode --tokenizer @M@ --input "$T/sft.jsonl"
both exit inspect inspect @M@
both out score score --model @RM@ --data "$T/prefs.jsonl"

# ---- export and fusion ----
both tree "export hf" export --model @M@ --format hf --out @O@
both files "export gguf" export --model @M@ --format gguf --out @O@/model.gguf
both files "export llmc" export --model @M@ --format llmc --out @O@/model.bin
both tree grow grow --model @M@ --depth-upscale 1 --out @O@
both tree moe moe --experts @M@ @M2@ --top-k 1 --out @O@
printf 'merge_method: linear\nmodels:\n  - model: @M@\n    parameters: {weight: 0.5}\n  - model: @M2@\n    parameters: {weight: 0.5}\n' \
  >"$T/recipe.in"
fill run "$(cat "$T/recipe.in")"; printf '%s\n' "${args[0]}" >"$T/recipe-run.yaml"
fill ck "$(cat "$T/recipe.in")"; printf '%s\n' "${args[0]}" >"$T/recipe-ck.yaml"
both tree merge merge --config "$T/recipe-@FORM@.yaml" --out @O@

# ---- training from a model ----
both weights "train --init" train --init @M@ --out @O@ "${D[@]}"
both weights "distill --student (a checkpoint)" distill --teacher @M@ --student @M2@ --out @O@ "${D[@]}"
both weights "distill --teacher" distill --teacher @M@ --student tiny-gpt2 --out @O@ "${D[@]}"
both out "ensemble train" ensemble train --model @M@ @M2@ --data "$T/data" --steps 1 --batch 2 --seq 32 --out @O@ --quiet
both weights "sft --model" sft --model @M@ --data "$T/sft.jsonl" --steps 1 --batch 2 --out @O@ --quiet
both weights "dpo --model" dpo --model @S@ --data "$T/prefs.jsonl" --steps 1 --batch 2 --out @O@ --quiet
both weights "dpo --ref" dpo --model @S@ --ref @S@ --data "$T/prefs.jsonl" --steps 1 --batch 2 --out @O@ --quiet
both weights "reward --model" reward --model @S@ --data "$T/prefs.jsonl" --steps 1 --batch 2 --out @O@ --quiet
both weights "ppo --model --reward" ppo --model @S@ --reward @RM@ --prompts "$T/prompts.jsonl" --batch 2 --mini-batch 2 \
  --max-new-tokens 4 --steps 1 --out @O@ --quiet

# ---- a checkpoint's own file names its folder ----
expect 0 "sample --model config.json" "^ROMEO" "$ALLOY" sample --model "$CM/config.json" --prompt ROMEO --tokens 4
expect 0 "eval --model model.safetensors" '"loss":' "$ALLOY" eval --model "$CM/model.safetensors" --data "$T/data" --seq 32 --max-windows 2 --quiet

# ---- the errors of the resolution: one line naming the path ----
mkdir -p "$T/broken" && echo "checkpoints/step-00000099" >"$T/broken/latest"
for v in "sample --prompt a" "generate --prompt a" "eval --data $T/data" "grow --depth-upscale 1 --out $T/g" \
         "export --format hf --out $T/x"; do
  set -- $v
  expect 1 "$1: a latest naming nothing" "broken/latest: names .*step-00000099, which does not exist" "$ALLOY" "$@" --model "$T/broken"
done
expect 1 "tokenizer info: a latest naming nothing" "broken/latest: names" "$ALLOY" tokenizer info --tokenizer "$T/broken"
mkdir -p "$T/empty"
expect 1 "a folder with neither checkpoint nor latest" "empty: no checkpoint here" "$ALLOY" sample --model "$T/empty" --prompt a
expect 1 "a file that is no checkpoint's" "a.txt: not a folder" "$ALLOY" sample --model "$T/src/a.txt" --prompt a
printf 'merge_method: linear\nmodels:\n  - model: %s\n  - model: %s\n' "$T/broken" "$M" >"$T/broken.yaml"
expect 1 "merge: a run folder whose latest names nothing" "broken.yaml:3: model \".*broken\"" "$ALLOY" merge --config "$T/broken.yaml" --out "$T/mb"
