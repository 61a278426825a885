#!/usr/bin/env bash
# A smoke test of the command, quick enough for make check: the main path once, on text the
# project ships (its own README and docs), with the byte tokenizer and a tiny model: prepare,
# train a few steps, inspect, sample, generate with quantised weights, eval, export to GGUF and
# import it back. Each verb's details are tested in its own test; this says the pieces still
# fit together.
set -u
. "$(dirname "$0")/cli_lib.sh"

mkdir -p "$T/text"
cp "$ROOT/README.md" "$ROOT"/docs/*.md "$T/text/"
expect 0 "prepare" "prepared $T/data" "$ALLOY" prepare --input "$T/text" --out "$T/data" --quiet
expect 0 "train" "held-out loss" "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --out "$T/run" \
  --steps 4 --batch 2 --seq 32 --eval-every 4 --eval-batches 2 --threads 1
expect 0 "inspect the run" "transformer.h.1.mlp.c_proj.weight" "$ALLOY" inspect "$T/run"
expect 0 "sample" "^The model" "$ALLOY" sample --model "$T/run" --prompt "The model" --tokens 8 --threads 1
echo '{"prompt": "alloy"}' >"$T/prompts.jsonl"
expect 0 "generate with q8_0 weights" "finish_reason" "$ALLOY" generate --model "$T/run" --prompts "$T/prompts.jsonl" \
  --tokens 8 --weights q8_0 --threads 1 --quiet
expect 0 "eval" '"perplexity"' "$ALLOY" eval --model "$T/run" --data "$T/data" --max-windows 4 --threads 1 --quiet
expect 0 "export gguf" "as gguf q8_0 -> $T/model.gguf" "$ALLOY" export --model "$T/run" --format gguf --type q8_0 --out "$T/model.gguf"
expect 0 "import the gguf" "imported GGUF file $T/model.gguf: gpt2" "$ALLOY" import "$T/model.gguf" --out "$T/back"
expect 0 "sample the imported model" "^The model" "$ALLOY" sample --model "$T/back" --prompt "The model" --tokens 8 --threads 1
