#!/usr/bin/env bash
# Ensembles where a model is sampled: `alloy generate` and `alloy sample` with --model A B ...,
# --member-weights and --ensemble probs|logits, on two tiny models trained here (GPT-2 and Llama,
# byte tokenizer, context 32). An ensemble of a model with itself generates what the model does
# (greedy in both modes; sampled in logits mode, whose logits are then the model's own); weights
# (1, 0) in logits mode are the first model; two different models give records of the same form;
# members whose tokenizers differ are refused in one line (exit 1), bad flags with exit 2.
# `alloy eval --weights FORMAT` scores an ensemble through the ensemble engine: A with itself
# scores as A, A and B as the training forward's ensemble, q8_0 within 1% of f32.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt

# ---- two models to work with ----
tiny_model "$T/a" 20 && tiny_model "$T/b" 20 tiny-llama --seed 5 || { nok "could not train the models to test with"; exit 1; }
A="$T/a" B="$T/b"

# ---- help and usage errors: exit 2 ----
expect 0 "generate --help names ensembles" "--member-weights W" "$ALLOY" generate --help
expect 0 "sample --help names ensembles" "--ensemble MODE" "$ALLOY" sample --help
expect 0 "chat --help names ensembles" "--ensemble MODE" "$ALLOY" chat --help
expect 2 "a weight per model" "--member-weights needs one weight per model \(2\)" \
  "$ALLOY" generate --model "$A" "$B" --member-weights 1 --prompt a
expect 2 "sample: a weight per model" "--member-weights needs one weight per model \(2\)" \
  "$ALLOY" sample --model "$A" "$B" --member-weights 1 2 3 --prompt a
expect 2 "a weight that is no number" "--member-weights: 'x' is not a number >= 0" \
  "$ALLOY" generate --model "$A" "$B" --member-weights 1 x --prompt a
expect 2 "a negative weight" "--member-weights: '-1' is not a number >= 0" \
  "$ALLOY" generate --model "$A" "$B" --member-weights 1 -1 --prompt a
expect 2 "learned is not for generation" "--ensemble must be probs or logits" \
  "$ALLOY" generate --model "$A" "$B" --ensemble learned --prompt a
expect 2 "unknown mode" "--ensemble must be probs or logits" "$ALLOY" sample --model "$A" "$B" --ensemble median
expect 2 "all weights 0" "ensemble engine: the weights are all 0" \
  "$ALLOY" generate --model "$A" "$B" --member-weights 0 0 --prompt a
many=(); for i in $(seq 17); do many+=("$A"); done
expect 2 "17 models" "at most 16 models" "$ALLOY" generate --model "${many[@]}" --prompt a
expect 2 "ctx beyond the least context" "--ctx 64 exceeds the models' least context of 32" \
  "$ALLOY" generate --model "$A" "$B" --prompt a --ctx 64

# ---- tokenizers: the same bytes, or refused in one line ----
ck=$(ls -d "$A"/checkpoints/step-* | tail -1)
cp -r "$ck" "$T/ta" && cp -r "$ck" "$T/tb" && cp -r "$ck" "$T/tc"
$PY - "$T/ta/tokenizer.json" "$T/tb/tokenizer.json" "$T/tc/tokenizer.json" <<'EOF'
# the byte tokenizer as a tokenizer.json (GPT-2's byte-to-character map, no merges); tb's has the
# ids of "a" and "b" swapped: the same size, other content
import json, sys
bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + n); n += 1
vocab = {chr(c): b for b, c in zip(bs, cs)}
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
def tok(v): return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
                    "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
                    "model": {"type": "BPE", "byte_fallback": False, "vocab": v, "merges": []}}
swapped = dict(vocab); swapped["a"], swapped["b"] = vocab["b"], vocab["a"]
for path, v in zip(sys.argv[1:], [vocab, swapped, vocab]): json.dump(tok(v), open(path, "w"))
EOF
expect 1 "different tokenizer.json refused" "tb/tokenizer.json differs from .*ta/tokenizer.json: ensemble members must share a tokenizer" \
  "$ALLOY" generate --model "$T/ta" "$T/tb" --prompt ROMEO --tokens 4
expect 1 "sample: different tokenizer.json refused" "tb/tokenizer.json differs from" \
  "$ALLOY" sample --model "$T/ta" "$T/tb" --prompt ROMEO --tokens 4
expect 1 "a tokenizer.json against none refused" "has no tokenizer.json but .*ta/tokenizer.json has" \
  "$ALLOY" generate --model "$A" "$T/ta" --prompt ROMEO --tokens 4
expect 0 "identical tokenizer.json files accepted" "an ensemble of 2" \
  "$ALLOY" generate --model "$T/ta" "$T/tc" --prompt ROMEO --tokens 4

# ---- an ensemble of a model with itself is the model ----
printf '{"prompt": "ROMEO:"}\n{"prompt_ids": [65, 66, 67]}\n{"prompt": "JULIET"}\n' >"$T/p.jsonl"
same() { # the records of two runs agree but for their speed
  $PY - "$1" "$2" <<'EOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]; b = [json.loads(l) for l in open(sys.argv[2])]
for r in a + b: r.pop("tokens_per_s")
sys.exit(not (len(a) == 3 and a == b))
EOF
}
"$ALLOY" generate --model "$A" --prompts "$T/p.jsonl" --tokens 16 --temperature 0 --quiet >"$T/single0.jsonl"
"$ALLOY" generate --model "$A" --prompts "$T/p.jsonl" --tokens 16 --seed 3 --quiet >"$T/single.jsonl"
for mode in probs logits; do
  expect 0 "generate --model A A --ensemble $mode" "an ensemble of 2 \($mode\)" "$ALLOY" generate --model "$A" "$A" \
    --ensemble "$mode" --prompts "$T/p.jsonl" --tokens 16 --temperature 0 --batch 2 --out "$T/self-$mode.jsonl"
  same "$T/single0.jsonl" "$T/self-$mode.jsonl" && ok "greedy, $mode: A with itself generates what A does" \
    || nok "greedy, $mode: $(head -c 300 "$T/single0.jsonl") vs $(head -c 300 "$T/self-$mode.jsonl")"
done
"$ALLOY" generate --model "$A" "$A" --ensemble logits --prompts "$T/p.jsonl" --tokens 16 --seed 3 --quiet >"$T/self.jsonl"
same "$T/single.jsonl" "$T/self.jsonl" && ok "sampled, logits: A with itself draws what A draws" || nok "sampled self-ensemble differs"
# probs: the log-probabilities are the logits shifted per row, so the chain (top-k, top-p, min-p,
# temperature) sees the same distribution up to rounding, far below where a draw would change
"$ALLOY" generate --model "$A" "$A" --prompts "$T/p.jsonl" --tokens 16 --seed 3 --quiet >"$T/selfp.jsonl"
same "$T/single.jsonl" "$T/selfp.jsonl" && ok "sampled, probs: A with itself draws what A draws" || nok "sampled probs self-ensemble differs"
"$ALLOY" generate --model "$A" "$B" --ensemble logits --member-weights 1 0 --prompts "$T/p.jsonl" --tokens 16 --seed 3 \
  --quiet >"$T/w10.jsonl"
same "$T/single.jsonl" "$T/w10.jsonl" && ok "weights 1 0 (logits): the first model alone" || nok "weights 1 0 differ from A"
s1=$("$ALLOY" sample --model "$A" --prompt ROMEO --tokens 24 --seed 9 2>/dev/null)
s2=$("$ALLOY" sample --model "$A" "$A" --ensemble logits --prompt ROMEO --tokens 24 --seed 9 2>/dev/null)
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok "sample: A with itself samples what A does" || nok "sample: '$s1' vs '$s2'"

# ---- two different models ----
for mode in probs logits; do
  expect 0 "two models, $mode" "3 prompts, .*an ensemble of 2 \($mode\)" "$ALLOY" generate --model "$A" "$B" \
    --ensemble "$mode" --member-weights 0.6 0.4 --prompts "$T/p.jsonl" --tokens 12 --batch 2 --out "$T/ab-$mode.jsonl"
done
$PY - "$T/single.jsonl" "$T/ab-probs.jsonl" "$T/ab-logits.jsonl" <<'EOF' && ok "two models: records as one model's" || nok "two-model records"
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
for path in sys.argv[2:]:
    recs = [json.loads(l) for l in open(path)]
    assert len(recs) == 3 and [set(r) for r in recs] == [set(r) for r in one], path
    assert all(r["tokens"] == len(r["ids"]) and r["finish_reason"] == "length" for r in recs), path
EOF
expect 0 "two models, q8_0, one prompt" "token limit after 10 tokens .*q8_0 weights, an ensemble of 2 \(probs\)" \
  "$ALLOY" generate --model "$A" "$B" --weights q8_0 --prompt-ids "1 2" --tokens 10
expect 0 "sample with two models" "^ROMEO" "$ALLOY" sample --model "$A" "$B" --prompt ROMEO --tokens 10

# ---- eval through the ensemble engine (--weights) ----
EV=(--data "$T/data" --seq 32 --max-windows 20 --threads 1 --quiet)
expect 0 "eval --help: --weights for ensembles" "every member of a probs or logits ensemble" "$ALLOY" eval --help
expect 2 "eval: learned takes no --weights" "--ensemble learned scores through the training forward \(fp32\): it takes no --weights" \
  "$ALLOY" eval --model "$A" "$B" --ensemble learned --combiner "$T/none" --weights q8_0 "${EV[@]}"
expect 2 "eval --weights: a weight per model" "--member-weights needs one weight per model \(2\)" \
  "$ALLOY" eval --model "$A" "$B" --member-weights 1 --weights f32 "${EV[@]}"
expect 1 "eval --weights: different tokenizer.json refused" "tb/tokenizer.json differs from" \
  "$ALLOY" eval --model "$T/ta" "$T/tb" --weights f32 "${EV[@]}"
ev() { # NAME FLAGS...: the eval's JSON line into $T/ev-NAME.json
  local name=$1; shift
  expect 0 "eval $name" '"loss":[0-9.]+' "$ALLOY" eval "$@" "${EV[@]}"
  cp "$T/out" "$T/ev-$name.json"
}
ev a-f32 --model "$A" --weights f32
ev aa-f32 --model "$A" "$A" --weights f32
ev ab-fwd --model "$A" "$B" --ensemble probs
ev ab-f32 --model "$A" "$B" --ensemble probs --weights f32
ev ab-q8 --model "$A" "$B" --ensemble probs --weights q8_0
ev abl-fwd --model "$A" "$B" --ensemble logits --member-weights 3 1
ev abl-f32 --model "$A" "$B" --ensemble logits --member-weights 3 1 --weights f32
$PY - "$T" <<'EOF' && ok "eval --weights: A A is A, A B as the training forward, q8_0 within 1%" || nok "eval --weights: $(cat "$T"/ev-*.json)"
import json, sys
r = {n: json.load(open("%s/ev-%s.json" % (sys.argv[1], n))) for n in
     ("a-f32", "aa-f32", "ab-fwd", "ab-f32", "ab-q8", "abl-fwd", "abl-f32")}
loss = {n: v["loss"] for n, v in r.items()}
print("# eval losses: " + ", ".join("%s %.6f" % kv for kv in sorted(loss.items())))
assert r["ab-q8"]["weights"] == "q8_0" and r["ab-q8"]["ensemble"] == "probs", r["ab-q8"]
assert [m["weight"] for m in r["abl-f32"]["members"]] == [0.75, 0.25], r["abl-f32"]
assert all(v["tokens"] == r["a-f32"]["tokens"] > 0 for v in r.values())
assert abs(loss["aa-f32"] - loss["a-f32"]) <= 2e-6          # the print's precision
assert abs(loss["ab-f32"] - loss["ab-fwd"]) <= 1e-4
assert abs(loss["abl-f32"] - loss["abl-fwd"]) <= 1e-4
assert abs(loss["ab-q8"] - loss["ab-f32"]) <= 0.01 * loss["ab-f32"]
EOF
