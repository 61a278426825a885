#!/usr/bin/env bash
# `alloy generate` and `alloy sample` end to end, on a tiny model trained here for 3 steps (byte
# tokenizer, context 32): usage errors, bad prompt files naming file and line, the context limit,
# stop strings, logit bias, seeds, quantised weights, JSONL records. Failures must be one line on
# stderr with exit status 1 (2 for usage) and no sanitizer report.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt

# ---- a model to work with ----
tiny_model "$T/run" 3 || { nok "could not train the model to test with"; exit 1; }
M="$T/run"

# ---- help and usage errors: exit 2 ----
expect 0 "alloy --help lists generate" "generate +continue prompts" "$ALLOY" --help
expect 0 "generate --help" "usage: alloy generate" "$ALLOY" generate --help
expect 0 "generate --help states the sampling order" "4. --top-k K.*" "$ALLOY" generate --help
expect 2 "no prompt" "exactly one of --prompt, --prompts and --prompt-ids" "$ALLOY" generate --model "$M"
expect 2 "two prompts" "exactly one of --prompt" "$ALLOY" generate --model "$M" --prompt a --prompt-ids 1
expect 2 "no model" "--model is required" "$ALLOY" generate --prompt a
expect 2 "bad weights" "--weights must be f32, f16, q8_0, q4_0 or q4_k, not \"q3\"" "$ALLOY" generate --model "$M" --prompt a --weights q3
expect 2 "bad logit bias" "--logit-bias expects ID=BIAS, got '65:3'" "$ALLOY" generate --model "$M" --prompt a --logit-bias 65:3
expect 2 "bad top-p" "--top-p must be in \[0, 1\]" "$ALLOY" generate --model "$M" --prompt a --top-p 1.5
expect 2 "out without prompts" "--out goes with --prompts" "$ALLOY" generate --model "$M" --prompt a --out "$T/x.jsonl"
expect 2 "ctx beyond the model" "--ctx 64 exceeds the model's context of 32" "$ALLOY" generate --model "$M" --prompt a --ctx 64
expect 2 "bad prompt ids" "--prompt-ids: 'a b' is not a list of token ids" "$ALLOY" generate --model "$M" --prompt-ids "a b"

# ---- bad inputs: exit 1 ----
expect 1 "missing model" "$T/nomodel: no such folder" "$ALLOY" generate --model "$T/nomodel" --prompt a
expect 1 "id outside the vocabulary" "--prompt-ids: token id 300 is outside the model's vocabulary \[0, 256\)" "$ALLOY" generate --model "$M" --prompt-ids "1 300"
expect 1 "prompt longer than the context" "--prompt: the prompt has 40 tokens, more than the context of 32" "$ALLOY" generate --model "$M" --prompt "$(printf 'x%.0s' $(seq 40))"
expect 1 "prompt longer than --ctx" "more than the context of 8" "$ALLOY" generate --model "$M" --prompt "0123456789" --ctx 8
printf '{"prompt": "ROMEO:"}\n{"prompt_ids": [65, 66\n' >"$T/bad1.jsonl"
expect 1 "malformed JSONL line" "bad1.jsonl:2: not valid JSON" "$ALLOY" generate --model "$M" --prompts "$T/bad1.jsonl"
# a pipe is read as it flows (a named pipe, gzip through it too)
n=$(printf '{"prompt": "a"}\n{"prompt": "b"}\n' | gzip -c | "$ALLOY" generate --model "$M" --prompts /dev/stdin --tokens 2 --quiet | wc -l)
[ "$n" = 2 ] && ok "prompts from a pipe" || nok "prompts from a pipe: $n records"
printf '{"prompt": "a"}\n\n{"text": "b"}\n' >"$T/bad2.jsonl"
expect 1 "JSONL line without a prompt" "bad2.jsonl:3: needs exactly one of \"prompt\" and \"prompt_ids\"" "$ALLOY" generate --model "$M" --prompts "$T/bad2.jsonl"
printf '{"prompt_ids": [1, -4]}\n' >"$T/bad3.jsonl"
expect 1 "JSONL bad id" "bad3.jsonl:1: \"prompt_ids\"\[1\] is not a token id" "$ALLOY" generate --model "$M" --prompts "$T/bad3.jsonl"
printf '{"prompt_ids": [1, 299]}\n' >"$T/bad4.jsonl"
expect 1 "JSONL id outside the vocabulary" "bad4.jsonl:1: token id 299 is outside" "$ALLOY" generate --model "$M" --prompts "$T/bad4.jsonl"
: >"$T/empty.jsonl"
expect 1 "empty prompts file" "empty.jsonl: no prompts in the file" "$ALLOY" generate --model "$M" --prompts "$T/empty.jsonl"
expect 1 "missing prompts file" "nofile.jsonl" "$ALLOY" generate --model "$M" --prompts "$T/nofile.jsonl"

# ---- generation ----
expect 0 "sample still works" "ROMEO" "$ALLOY" sample --model "$M" --prompt "ROMEO" --tokens 5
expect 0 "text prompt streams" "^ROMEO" "$ALLOY" generate --model "$M" --prompt "ROMEO" --tokens 5
expect 0 "context full" "stopped: context full after 26 tokens generated from a 6-token prompt \(together they fill the model's context of 32 tokens\) in" "$ALLOY" generate --model "$M" --prompt "ROMEO:" --tokens 100
expect 0 "token limit: the prompt's length" "stopped: token limit after 7 tokens generated from a 3-token prompt in" "$ALLOY" generate --model "$M" --prompt-ids "1 2 3" --tokens 7
expect 0 "sample says it stopped at the context" "^alloy sample: stopped after 26 of 500 tokens: with the 6-token prompt they fill the model's context of 32 tokens$" "$ALLOY" sample --model "$M" --prompt "ROMEO:" --tokens 500
expect 0 "token limit" "stopped: token limit after 7 tokens" "$ALLOY" generate --model "$M" --prompt-ids "1 2 3" --tokens 7
[ "$(wc -w <"$T/out")" -eq 7 ] && ok "prompt ids: 7 ids printed" || nok "prompt ids: $(cat "$T/out")"
expect 0 "logit bias forces a token" "stopped" "$ALLOY" generate --model "$M" --prompt-ids 1 --tokens 5 --temperature 0 --logit-bias 65=100
[ "$(cat "$T/out")" = "65 65 65 65 65" ] && ok "logit bias: 65 five times" || nok "logit bias: $(cat "$T/out")"
g1=$("$ALLOY" generate --model "$M" --prompt-ids 1 --tokens 1 --temperature 0 --quiet)
expect 0 "logit bias -inf bans" "stopped" "$ALLOY" generate --model "$M" --prompt-ids 1 --tokens 1 --temperature 0 --logit-bias "$g1=-inf"
[ -n "$g1" ] && [ "$(cat "$T/out")" != "$g1" ] && ok "the banned greedy token is not drawn" || nok "ban: $g1 / $(cat "$T/out")"
a=$("$ALLOY" generate --model "$M" --prompt-ids "5 6" --tokens 20 --seed 11 --quiet)
b=$("$ALLOY" generate --model "$M" --prompt-ids "5 6" --tokens 20 --seed 11 --quiet)
c=$("$ALLOY" generate --model "$M" --prompt-ids "5 6" --tokens 20 --seed 12 --quiet)
[ "$a" = "$b" ] && [ "$a" != "$c" ] && ok "a seed reproduces a run" || nok "seeds: '$a' '$b' '$c'"
for w in f16 q8_0 q4_0 q4_k; do
  expect 0 "weights $w" "stopped: token limit after 12 tokens.*$w weights" "$ALLOY" generate --model "$M" --prompt-ids "1 2" --tokens 12 --weights "$w"
done

# ---- JSONL: records in order, stop strings, context ----
printf '{"prompt": "ROMEO:"}\n{"prompt_ids": [65, 66, 67]}\n\n{"prompt": "JULIET"}\n{"prompt_ids": [70]}\n{"prompt": "0123456789012345678901234567"}\n' >"$T/p.jsonl"
expect 0 "prompts file" "5 prompts, .* tokens" "$ALLOY" generate --model "$M" --prompts "$T/p.jsonl" --tokens 8 --batch 2 --out "$T/r.jsonl" --temperature 0
$PY - "$T/r.jsonl" <<'EOF' && ok "records: one per prompt, in order, complete" || nok "records"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 5, len(recs)
assert recs[0]["prompt"] == "ROMEO:" and recs[1]["prompt_ids"] == [65, 66, 67] and recs[2]["prompt"] == "JULIET"
for r in recs:
    assert set(r) >= {"text", "ids", "finish_reason", "tokens", "tokens_per_s"}, r
    assert r["tokens"] == len(r["ids"])
assert [r["finish_reason"] for r in recs] == ["length"] * 4 + ["context_full"], [r["finish_reason"] for r in recs]
assert recs[4]["tokens"] == 4  # 28 prompt tokens in a context of 32
EOF
# the same prompts sampled in batches of 3 and one at a time: the same tokens (q8_0 products of
# several rows equal those of one row bitwise; prompt i draws with seed + i either way)
for b in 3 1; do
  expect 0 "prompts file, q8_0, batch $b" "5 prompts" "$ALLOY" generate --model "$M" --prompts "$T/p.jsonl" --tokens 8 \
    --batch $b --out "$T/q$b.jsonl" --weights q8_0 --seed 5
done
$PY -c "import json,sys; a=[json.loads(l)['ids'] for l in open(sys.argv[1])]; b=[json.loads(l)['ids'] for l in open(sys.argv[2])]; sys.exit(a!=b)" \
  "$T/q3.jsonl" "$T/q1.jsonl" && ok "batch 3 and batch 1 agree" || nok "batch 3 and batch 1 differ"
# a stop string taken from the middle of the greedy text: the text ends just before it (newlines
# and bytes >= 128 banned, so that the text is plain ASCII and the stop string one shell word)
printf '{"prompt": "ROMEO:"}\n' >"$T/one.jsonl"
ban=(--logit-bias 10=-inf $(seq -f '%g=-inf' 128 255))
"$ALLOY" generate --model "$M" --prompts "$T/one.jsonl" --tokens 20 --temperature 0 "${ban[@]}" --quiet >"$T/g.jsonl"
stop=$($PY -c "import json,sys; t=json.loads(open(sys.argv[1]).readline())['text']; print(t[5:8], end='')" "$T/g.jsonl")
"$ALLOY" generate --model "$M" --prompts "$T/one.jsonl" --tokens 20 --temperature 0 "${ban[@]}" --stop="$stop" --quiet >"$T/s.jsonl"
$PY - "$T/g.jsonl" "$T/s.jsonl" "$stop" <<'EOF' && ok "stop string cuts the text" || nok "stop string: '$stop'"
import json, sys
g = json.loads(open(sys.argv[1]).readline()); s = json.loads(open(sys.argv[2]).readline()); stop = sys.argv[3]
assert len(stop) == 3 and stop in g["text"], (stop, g["text"])
assert s["finish_reason"] == "stop", s
assert s["text"] == g["text"][:g["text"].index(stop)], (s["text"], g["text"])
assert s["ids"] == g["ids"][:len(s["ids"])]
EOF
