#!/usr/bin/env bash
# `alloy grow` end to end: usage errors and bad sources (one line on stderr, exit 2 or 1,
# nothing written, the source untouched), then models grown from short runs of both families
# (SOLAR depth up-scaling with a widened MLP on a Llama with GQA, an explicit layer plan on
# GPT-2) whose folders carry the data's BPE tokenizer.json, so that `alloy train --init`
# accepts them and trains two steps.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt

TRAIN=(--steps 2 --batch 2 --seq 32 --eval-every 2 --threads 1)

# ---- data with a BPE tokenizer and two short runs to grow ----
mkdir -p "$T/src"
head -c 200000 "$SHARED/prose/tinyshakespeare.txt" >"$T/src/a.txt"
expect 0 "tokenizer train" "vocabulary 300" "$ALLOY" tokenizer train --input "$T/src" --vocab-size 300 --out "$T/tok.json" --quiet
expect 0 "prepare with the tokenizer" "prepared" "$ALLOY" prepare --input "$T/src" --tokenizer "$T/tok.json" --out "$T/data"
cat >"$T/llama.json" <<'EOF'
{"model_type": "llama", "vocab_size": 300, "max_position_embeddings": 64, "hidden_size": 64,
 "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2}
EOF
expect 0 "train a Llama source" "held-out loss" "$ALLOY" train --data "$T/data" --out "$T/llama" --config "$T/llama.json" "${TRAIN[@]}"
expect 0 "train a GPT-2 source" "held-out loss" "$ALLOY" train --data "$T/data" --out "$T/gpt2" --preset tiny-gpt2 "${TRAIN[@]}"
CK=$(ls -d "$T"/gpt2/checkpoints/step-* | tail -1)
before_llama=$(tree_sum "$T/llama"); before_gpt2=$(tree_sum "$T/gpt2")

# ---- usage errors: exit 2 ----
expect 0 "grow --help" "usage: alloy grow" "$ALLOY" grow --help
expect 0 "grow is listed" "grow +a deeper" "$ALLOY" --help
expect 2 "no out" "--model and --out are required" "$ALLOY" grow --model "$T/gpt2" --depth-upscale 1
expect 2 "no operation" "give --depth-upscale, --layers or --ffn-width" "$ALLOY" grow --model "$T/gpt2" --out "$T/g"
expect 2 "two depth flags" "give --depth-upscale or --layers, not both" "$ALLOY" grow --model "$T/gpt2" --depth-upscale 1 --layers 0-1 --out "$T/g"
expect 2 "noise without widening" "--seed and --noise apply to --ffn-width only" "$ALLOY" grow --model "$T/gpt2" --depth-upscale 0 --noise 0.1 --out "$T/g"
expect 2 "not a number" "--depth-upscale expects an integer, got 'x'" "$ALLOY" grow --model "$T/gpt2" --depth-upscale x --out "$T/g"
expect 2 "m >= n" "--depth-upscale 2: must lie in \[0, 1\] \(the model has 2 layers" "$ALLOY" grow --model "$T/gpt2" --depth-upscale 2 --out "$T/g"
expect 2 "negative m" "--depth-upscale -1: must lie in \[0, 3\]" "$ALLOY" grow --model "$T/llama" --depth-upscale -1 --out "$T/g"
expect 2 "plan out of range" "--layers \"0-2\": layer 2 is out of range \(the model has layers 0-1\)" "$ALLOY" grow --model "$T/gpt2" --layers 0-2 --out "$T/g"
expect 2 "descending range" "--layers \"1-0\": the range 1-0 descends" "$ALLOY" grow --model "$T/gpt2" --layers 1-0 --out "$T/g"
expect 2 "plan syntax" "--layers \"0-1;1\": expected ',' or the end at \";1\"" "$ALLOY" grow --model "$T/gpt2" --layers "0-1;1" --out "$T/g"
expect 2 "narrower MLP" "--ffn-width 96: must exceed the model's MLP width 96" "$ALLOY" grow --model "$T/llama" --ffn-width 96 --out "$T/g"
expect 2 "negative noise" "--noise -0.5: must be a finite number >= 0" "$ALLOY" grow --model "$T/llama" --ffn-width 128 --noise -0.5 --out "$T/g"
expect 2 "out is the source" "is the source checkpoint" "$ALLOY" grow --model "$CK" --depth-upscale 0 --out "$CK"
expect 0 "grow warns when it deepens nothing" "^alloy grow: warning: the grown model has 2 layers, the source 2: --depth-upscale M gives 2·\(n − M\) layers, more than n only for M < n/2$" \
  "$ALLOY" grow --model "$T/gpt2" --depth-upscale 1 --out "$T/same"
rm -rf "$T/same"
# ---- bad sources: exit 1 ----
expect 1 "missing model" "$T/nomodel: no such folder" "$ALLOY" grow --model "$T/nomodel" --depth-upscale 1 --out "$T/g"
cp -r "$CK" "$T/trunc"; truncate -s 5000 "$T/trunc/model.safetensors"
expect 1 "truncated source" "trunc/model.safetensors: " "$ALLOY" grow --model "$T/trunc" --depth-upscale 1 --out "$T/g"
[ ! -e "$T/g" ] && ok "failures wrote nothing" || nok "a failed grow left $T/g"
[ "$(tree_sum "$T/llama")" = "$before_llama" ] && [ "$(tree_sum "$T/gpt2")" = "$before_gpt2" ] \
  && ok "sources unchanged by failures" || nok "a failed grow changed a source"

# ---- SOLAR depth up-scaling and a wider MLP on the Llama (GQA) run, then continued pretraining ----
expect 0 "grow llama" "-> $T/deep: 6 layers, layers 0-2,1-3 \(depth up-scaling, m = 1\), d_ff 128 \(Net2WiderNet, seed 5, noise 0.01\).*tokenizer.json copied" \
  "$ALLOY" grow --model "$T/llama" --depth-upscale 1 --ffn-width 128 --seed 5 --noise 0.01 --out "$T/deep"
grep -q '"num_hidden_layers":[[:space:]]*6' "$T/deep/config.json" && grep -q '"intermediate_size":[[:space:]]*128' "$T/deep/config.json" \
  && grep -q '"num_key_value_heads":[[:space:]]*2' "$T/deep/config.json" && ok "llama config: 6 layers, d_ff 128, GQA kept" \
  || nok "llama config: $(tr -d '\n' <"$T/deep/config.json")"
LCK=$(ls -d "$T"/llama/checkpoints/step-* | tail -1)
cmp -s "$LCK/tokenizer.json" "$T/deep/tokenizer.json" && ok "tokenizer.json copied" || nok "tokenizer.json not copied"
expect 0 "inspect grown" "model.layers.5.mlp.down_proj.weight +F32 +\[64, 128\]" "$ALLOY" inspect "$T/deep"
expect 0 "train --init the grown llama" "held-out loss" "$ALLOY" train --data "$T/data" --out "$T/run_deep" --init "$T/deep" "${TRAIN[@]}"
# the same flags give the same files
expect 0 "grow again" "grew" "$ALLOY" grow --model "$T/llama" --depth-upscale 1 --ffn-width 128 --seed 5 --noise 0.01 --out "$T/deep2"
cmp -s "$T/deep/model.safetensors" "$T/deep2/model.safetensors" && ok "grow is deterministic" || nok "two grows differ"

# ---- an explicit layer plan on GPT-2 (from the checkpoint folder itself) ----
expect 0 "grow gpt2 by plan" "2 layers, d_ff 256, .* -> $T/planned: 5 layers, layers 0-1,1,0-1, d_ff 256, " \
  "$ALLOY" grow --model "$CK" --layers 0-1,1,0-1 --out "$T/planned"
grep -q '"n_layer":[[:space:]]*5' "$T/planned/config.json" && ok "gpt2 config: 5 layers" || nok "gpt2 config"
expect 0 "train --init the planned gpt2" "held-out loss" "$ALLOY" train --data "$T/data" --out "$T/run_planned" --init "$T/planned" "${TRAIN[@]}"
[ "$(tree_sum "$T/llama")" = "$before_llama" ] && [ "$(tree_sum "$T/gpt2")" = "$before_gpt2" ] \
  && ok "sources unchanged" || nok "growing changed a source"
