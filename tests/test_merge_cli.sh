#!/usr/bin/env bash
# `alloy merge` end to end: recipes in, checkpoint folders out, and every failure one line on
# stderr naming the recipe line or flag, exit status 1 (2 for usage), nothing written.
set -u
. "$(dirname "$0")/cli_lib.sh"

# ---- three small models of one family: one step of training from three seeds ----
for i in $(seq 1 2000); do echo "line $i: the quick brown fox jumps over the lazy dog"; done >"$T/text.txt"
"$ALLOY" prepare --input "$T/text.txt" --out "$T/data" >/dev/null 2>&1 || nok "prepare"
for s in 1 2 3; do
  "$ALLOY" train --data "$T/data" --out "$T/run$s" --preset tiny-gpt2 --steps 1 --batch 1 --seq 16 --seed $s --threads 1 --quiet \
    >/dev/null 2>&1 || nok "train seed $s"
  cp -r "$T/run$s/checkpoints/step-00000001" "$T/m$s"
done
"$ALLOY" train --data "$T/data" --out "$T/runl" --preset tiny-llama --steps 1 --batch 1 --seq 16 --threads 1 --quiet >/dev/null 2>&1 \
  || nok "train llama"
cp -r "$T/runl/checkpoints/step-00000001" "$T/llama"

# ---- usage errors: exit 2 ----
expect 2 "no flags" "--config and --out are required" "$ALLOY" merge
expect 2 "unknown flag" "unknown flag --method" "$ALLOY" merge --method ties
expect 2 "bad threads" "--threads expects an integer" "$ALLOY" merge --config x --out y --threads many
expect 0 "merge --help" "usage: alloy merge --config RECIPE.yaml --out DIR" "$ALLOY" merge --help
"$ALLOY" --help | grep -q "^  merge " && ok "merge in alloy --help" || nok "merge missing from alloy --help"

# ---- merges that work ----
cat >"$T/ties.yaml" <<EOF
models:
  - model: $T/m2
    parameters: {weight: 0.6, density: [1, 0.5]}
  - model: $T/m3
    parameters:
      weight:
        - filter: mlp
          value: 0.4
        - value: 0.2
merge_method: ties
base_model: $T/m1
parameters: {normalize: true}
dtype: bfloat16
EOF
expect 0 "ties merge" "merged 3 models by ties: [0-9]+ tensors, 2 layers" "$ALLOY" merge --config "$T/ties.yaml" --out "$T/ties" --quiet
grep -qE "^peak RSS [0-9.]+ MB against [0-9.]+ MB of input models" "$T/out" && ok "reports peak RSS against the models" \
  || nok "no peak RSS line: $(cat "$T/out")"
[ -f "$T/ties/model.safetensors" ] && [ -f "$T/ties/config.json" ] && [ "$(ls "$T/ties" | wc -l)" -eq 2 ] \
  && ok "output folder holds model.safetensors and config.json" || nok "output folder: $(ls "$T/ties")"
expect 0 "merged model inspects" "F32" "$ALLOY" inspect "$T/ties"
expect 0 "merged model samples" "." "$ALLOY" sample --model "$T/ties" --prompt "the quick" --tokens 8 --temperature 0
cat >"$T/stack.yaml" <<EOF
slices:
  - sources: [{model: $T/m1, layer_range: [0, 2]}]
  - sources: [{model: $T/m2, layer_range: [1, 2]}]
merge_method: passthrough
EOF
expect 0 "passthrough stacks layers" "merged 2 models by passthrough: [0-9]+ tensors, 3 layers" "$ALLOY" merge --config "$T/stack.yaml" --out "$T/stack"
grep -qE '"n_layer":[[:space:]]*3' "$T/stack/config.json" && ok "config.json has n_layer 3" || nok "config.json n_layer: $(grep n_layer "$T/stack/config.json")"
expect 0 "deeper model samples" "." "$ALLOY" sample --model "$T/stack" --prompt "the" --tokens 4 --temperature 0

# ---- bad recipes and models: exit 1, one line, nothing written ----
expect 1 "missing recipe" "$T/none.yaml: cannot open" "$ALLOY" merge --config "$T/none.yaml" --out "$T/o1"
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: [1, 2}\n' "$T/m1" >"$T/syntax.yaml"
expect 1 "YAML syntax error names the line" "syntax.yaml:4: YAML syntax error" "$ALLOY" merge --config "$T/syntax.yaml" --out "$T/o1"
printf 'merge_method: model_soup\nmodels: [{model: %s}]\n' "$T/m1" >"$T/method.yaml"
expect 1 "unknown method" "method.yaml:1: unknown merge_method \"model_soup\"" "$ALLOY" merge --config "$T/method.yaml" --out "$T/o1"
printf 'merge_method: task_arithmetic\nbase_model: %s\nmodels:\n  - model: %s\n  - model: %s\n    parameters: {weight: 1}\n' \
  "$T/m1" "$T/m2" "$T/m3" >"$T/weight.yaml"
expect 1 "missing weight" "weight.yaml:4: model \".*m2\" has no weight for tensor" "$ALLOY" merge --config "$T/weight.yaml" --out "$T/o1"
printf 'merge_method: linear\nmodels:\n  - model: %s\n    parameters: {weight: 1}\n  - model: %s\n    parameters: {weight: 1}\n' \
  "$T/m1" "$T/llama" >"$T/family.yaml"
expect 1 "different family" "family.yaml:5: model \".*llama\" is of the llama family but \".*m1\" is gpt2" "$ALLOY" merge --config "$T/family.yaml" --out "$T/o1"
printf 'merge_method: linear\nmodels:\n  - model: %s/nothing\n    parameters: {weight: 1}\n' "$T" >"$T/nomodel.yaml"
expect 1 "missing model" "nomodel.yaml:3: model \".*nothing\": no such folder" "$ALLOY" merge --config "$T/nomodel.yaml" --out "$T/o1"
[ ! -e "$T/o1" ] && ok "failed merges create nothing" || nok "failed merges created $T/o1"
before=$(tree_sum "$T/ties")
expect 1 "failure leaves an existing output alone" "weight.yaml:4" "$ALLOY" merge --config "$T/weight.yaml" --out "$T/ties"
[ "$(tree_sum "$T/ties")" = "$before" ] && ok "existing output unchanged" || nok "existing output changed"
before=$(tree_sum "$T/m2")
expect 2 "output folder is an input" "the output folder is model" "$ALLOY" merge --config "$T/ties.yaml" --out "$T/m2"
[ "$(tree_sum "$T/m2")" = "$before" ] && ok "input unchanged" || nok "input changed"
