#!/usr/bin/env bash
# The alignment verbs end to end: alloy sft, reward, score, dpo and ppo. Usage errors exit 2 and bad
# files exit 1, each with one line on stderr naming the flag or FILE:LINE and no sanitizer
# report; then a 5-step run of each verb, a resume, scores, and the checkpoints a chat model
# needs (its tokens in tokenizer.json, chat_template in config.json).
set -u
. "$(dirname "$0")/cli_lib.sh"
# tiny models: one thread each (more only synchronise, and spin on a busy machine)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# count PATTERN FILE: lines of FILE matching PATTERN
count() { grep -cE -- "$1" "$2" 2>/dev/null || true; }

# ---- a small base model (the byte tokenizer, no chat tokens) ----
mkdir -p "$T/src"
for i in $(seq 1 1500); do echo "Line $i: the quick brown fox jumps over the lazy dog, and the dog sleeps."; done >"$T/src/a.txt"
"$ALLOY" prepare --input "$T/src" --out "$T/data" >/dev/null 2>&1 &&
  "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --out "$T/base" --steps 2 --batch 2 --seq 96 --quiet 2>"$T/err" \
  && ok "a base model to align" || { nok "a base model to align: $(cat "$T/err")"; exit 1; }

cat >"$T/sft.jsonl" <<'EOF'
{"prompt": "What is 2+2?", "response": "Four."}
{"prompt": "Say hello.", "response": "Hello!"}
{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A color?"}, {"role": "assistant", "content": "Blue."}]}
{"prompt": [{"role": "user", "content": "Capital of France?"}], "completion": "Paris."}
{"prompt": "Count to three.", "response": "One, two, three."}
{"prompt": "Opposite of hot?", "response": "Cold."}
EOF
cat >"$T/prefs.jsonl" <<'EOF'
{"prompt": "What is 2+2?", "chosen": "Four.", "rejected": "Five."}
{"prompt": "Say hello.", "chosen": "Hello!", "rejected": "Go away."}
{"prompt": "Rank these.", "responses": ["A full answer.", "An answer.", "Hmm.", "No."]}
{"chosen": "\n\nHuman: hi\n\nAssistant: Hello, how can I help?", "rejected": "\n\nHuman: hi\n\nAssistant: What?"}
{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."}
{"prompt": "Opposite of hot?", "chosen": "Cold.", "rejected": "Hot."}
EOF
grep -v responses "$T/prefs.jsonl" >"$T/pairs.jsonl"
printf '{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": }\n' >"$T/bad.jsonl"
printf '{"prompt": "a", "response": "b"}\n' >"$T/one.jsonl"

# ---- usage errors: exit 2 ----
expect 2 "sft without a model" "--model, --data and --out are required" "$ALLOY" sft --data "$T/sft.jsonl" --out "$T/r"
expect 2 "sft bad template" "--template must be chatml or raw, not \"jinja\"" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --template jinja
expect 2 "sft zero steps" "--steps must be at least 1" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --steps 0
expect 2 "sft bad number" "--lr expects a number, got 'fast'" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --lr fast
expect 2 "reward has no --beta" "unknown flag --beta" "$ALLOY" reward --model "$T/base" --data "$T/prefs.jsonl" --out "$T/r" --beta 0.1
expect 2 "dpo bad loss" "--loss must be sigmoid or ipo, not \"hinge\"" "$ALLOY" dpo --model "$T/base" --data "$T/pairs.jsonl" --out "$T/r" --loss hinge
expect 2 "dpo label smoothing out of range" "--label-smoothing must lie in \[0, 0.5\)" "$ALLOY" dpo --model "$T/base" --data "$T/pairs.jsonl" --out "$T/r" --label-smoothing 0.7
expect 2 "sft seq beyond the model" "--seq 4096 exceeds the model's maximum sequence length 96" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --seq 4096
expect 2 "score without data" "--model and --data are required" "$ALLOY" score --model "$T/base"
for v in sft reward score dpo; do expect 0 "$v --help" "usage: alloy $v" "$ALLOY" $v --help; done
expect 0 "dpo --help: --seed names no reward head of its own" "^  --seed S +data order and held-out choice; reward: a new score head \(default 1337\)$" "$ALLOY" dpo --help
grep -q "a new reward head" "$T/out" && nok "dpo --help speaks of a new reward head" || ok "dpo --help: no new reward head"
"$ALLOY" sft --help | grep -q "not packed" && ok "sft --help says examples are not packed" || nok "sft --help is silent on packing"

# ---- bad files: exit 1 ----
expect 1 "sft malformed line" "bad.jsonl:2: not valid JSON" "$ALLOY" sft --model "$T/base" --data "$T/bad.jsonl" --out "$T/r"
expect 1 "dpo on a ranking" "prefs.jsonl:3: needs \"chosen\" and \"rejected\"" "$ALLOY" dpo --model "$T/base" --data "$T/prefs.jsonl" --out "$T/r"
expect 1 "missing data file" "nope.jsonl" "$ALLOY" sft --model "$T/base" --data "$T/nope.jsonl" --out "$T/r"
expect 1 "missing model" "$T/nomodel: no such folder" "$ALLOY" sft --model "$T/nomodel" --data "$T/sft.jsonl" --out "$T/r"
expect 1 "raw template with messages" "sft.jsonl:3: \"messages\" needs the chatml template" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --template raw
expect 1 "score of a language model" "not a reward model" "$ALLOY" score --model "$T/base" --data "$T/prefs.jsonl" --template raw
gzip -c "$T/sft.jsonl" >"$T/sft.jsonl.gz"
head -c 100 "$T/sft.jsonl.gz" >"$T/cut.jsonl.gz"
printf '[{"prompt": "a", "response": "b"},\n {"prompt": "a"}]\n' >"$T/arr.json"
expect 1 "sft on a truncated .gz" "cut.jsonl.gz: truncated gzip data" "$ALLOY" sft --model "$T/base" --data "$T/cut.jsonl.gz" --out "$T/r"
expect 1 "sft: an array element without its fields" 'arr.json: element 2: needs "prompt" and "response"' "$ALLOY" sft --model "$T/base" --data "$T/arr.json" --out "$T/r"
[ ! -e "$T/r" ] && ok "failed runs leave nothing on disk" || nok "a failed run wrote $T/r"

# ---- data in the shapes people have: a .jsonl.gz, a folder (JSONL, a JSON array, a binary file) ----
losses() { sed -n 's/.*"type":"train".*\("loss":[0-9.]*\).*\("grad_norm":[0-9.]*\).*/\1 \2/p' "$1/metrics.jsonl" 2>/dev/null; }
mkdir -p "$T/sftdir/more" && head -n 3 "$T/sft.jsonl" >"$T/sftdir/a.jsonl"
{ echo '['; tail -n 3 "$T/sft.jsonl" | sed '$!s/$/,/'; echo ']'; } >"$T/sftdir/more/b.json"
printf 'x\0y' >"$T/sftdir/c.bin"
for d in sft.jsonl sft.jsonl.gz sftdir; do
  expect 0 "sft on $d" "sft step 2/2" "$ALLOY" sft --model "$T/base" --data "$T/$d" --out "$T/shape-$d" --steps 2 --batch 2 --lr 1e-3
done
want=$(losses "$T/shape-sft.jsonl")
[ -n "$want" ] && [ "$want" = "$(losses "$T/shape-sft.jsonl.gz")" ] && [ "$want" = "$(losses "$T/shape-sftdir")" ] \
  && grep -q '"train_examples":5,"val_examples":1' "$T/shape-sftdir/metrics.jsonl" \
  && ok "sft trains alike on a .jsonl, its .jsonl.gz and a folder of the same examples" \
  || nok "sft on other shapes: '$want' vs '$(losses "$T/shape-sft.jsonl.gz")' vs '$(losses "$T/shape-sftdir")'"

# ---- sft: 5 steps, a chat model, resume ----
expect 0 "sft 5 steps" "sft step 5/5" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/sft" --steps 5 --batch 2 --lr 1e-3 --eval-every 2 --ckpt-every 3
[ "$(count '"type":"train"' "$T/sft/metrics.jsonl")" = 5 ] && [ "$(count '"type":"eval".*"val_loss"' "$T/sft/metrics.jsonl")" = 3 ] \
  && ok "sft metrics: 5 steps, 3 evaluations" || nok "sft metrics: $(cat "$T/sft/metrics.jsonl")"
C="$T/sft/checkpoints/step-00000005"
grep -q '"chat_template":[[:space:]]*"chatml"' "$C/config.json" && grep -q '"vocab_size":[[:space:]]*258' "$C/config.json" \
  && grep -q '<|im_start|>' "$C/tokenizer.json" && grep -q 'im_start' "$C/tokenizer_config.json" \
  && ok "the sft checkpoint is a chat model (template, 2 new tokens)" || nok "sft checkpoint: $(cat "$C/config.json")"
expect 0 "sample from the sft model" "." "$ALLOY" sample --model "$T/sft" --prompt "hi" --tokens 5 --temperature 0
expect 2 "sft --out holds a run" "already holds a run" "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/sft"
expect 2 "resume cannot change lr" "--lr cannot change when resuming" "$ALLOY" sft --resume "$T/sft" --lr 1
expect 2 "dpo cannot resume an sft run" "an alloy sft run" "$ALLOY" dpo --resume "$T/sft" --steps 7
expect 2 "resume of a finished run" "already at step 5 of 5" "$ALLOY" sft --resume "$T/sft" --quiet
expect 0 "sft resume to 7" "sft step 7/7" "$ALLOY" sft --resume "$T/sft" --steps 7
grep -q 'step-00000007' "$T/sft/latest" && [ "$(count '"type":"train"' "$T/sft/metrics.jsonl")" = 7 ] \
  && ok "resumed run: latest is step 7, 7 train lines" || nok "resume: $(cat "$T/sft/latest")"

# ---- reward and score ----
expect 0 "reward 5 steps (pairs and a K=4 ranking)" "reward step 5/5" "$ALLOY" reward --model "$T/sft" --data "$T/prefs.jsonl" --out "$T/rm" --steps 5 --batch 2 --lr 1e-3 --val-fraction 0.3
grep -q '"type":"eval".*"val_accuracy":[0-9.]*' "$T/rm/metrics.jsonl" && grep -q 'score.weight' "$T/rm/checkpoints/step-00000005/model.safetensors" \
  && grep -q 'ForSequenceClassification' "$T/rm/checkpoints/step-00000005/config.json" \
  && ok "reward model: held-out pair accuracy, score.weight, ForSequenceClassification" || nok "reward run: $(tail -2 "$T/rm/metrics.jsonl")"
expect 0 "score" '"line":3,"scores":\[[^,]+,[^,]+,[^,]+,[^,]+\]' "$ALLOY" score --model "$T/rm" --data "$T/prefs.jsonl"
[ "$(count '^\{"line":[0-9]+,"scores":\[' "$T/out")" = 6 ] && ok "score: one line per example" || nok "score output: $(cat "$T/out")"
# log-probabilities under a language model: one per response, negative, the same in any batch size
expect 0 "score --logprobs" '"line":3,"logps":\[-[0-9.e+-]+(,-[0-9.e+-]+){3}\],"tokens":\[[0-9]+(,[0-9]+){3}\]' \
  "$ALLOY" score --model "$T/sft" --logprobs --data "$T/prefs.jsonl" --batch 4
cp "$T/out" "$T/logps4"
"$ALLOY" score --model "$T/sft" --logprobs --data "$T/prefs.jsonl" --batch 1 >"$T/logps1" 2>/dev/null
# (padding to a batch's longest row changes the products' blocking: equal to 1e-6, not bitwise)
paste -d' ' <(tr -c '0-9.e+-' '\n' <"$T/logps1" | grep '[0-9]') <(tr -c '0-9.e+-' '\n' <"$T/logps4" | grep '[0-9]') \
  | awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * (($1 < 0 ? -$1 : $1) + 1)) bad++ } END { exit bad > 0 || NR < 30 }' \
  && [ "$(count '"logps"' "$T/logps1")" = 6 ] && ok "score --logprobs: the same figures with --batch 1 and 4" \
  || nok "score --logprobs batch dependence: $(diff "$T/logps1" "$T/logps4" | head -4)"
expect 1 "sft cannot start from a reward model" "unexpected tensor \"score.weight\"" "$ALLOY" sft --model "$T/rm" --data "$T/sft.jsonl" --out "$T/r2"

# ---- dpo ----
expect 0 "dpo 5 steps (sigmoid)" "dpo step 5/5" "$ALLOY" dpo --model "$T/sft" --data "$T/pairs.jsonl" --out "$T/dpo" --steps 5 --batch 2 --lr 1e-3 --val-fraction 0.2
head -2 "$T/dpo/metrics.jsonl" | grep -q '"step":1,"loss":0.69314[67]' && grep -q '"val_rewards_margin"' "$T/dpo/metrics.jsonl" \
  && ok "dpo: first loss log 2, rewards logged" || nok "dpo metrics: $(head -3 "$T/dpo/metrics.jsonl")"
expect 0 "dpo 5 steps (ipo, --ref)" "dpo step 5/5" "$ALLOY" dpo --model "$T/sft" --ref "$T/sft" --data "$T/pairs.jsonl" --out "$T/ipo" --steps 5 --batch 2 --loss ipo --beta 0.2
expect 0 "dpo 5 steps (conservative)" "dpo step 5/5" "$ALLOY" dpo --model "$T/sft" --data "$T/pairs.jsonl" --out "$T/cdpo" --steps 5 --batch 2 --label-smoothing 0.1 --template chatml

# ---- ppo: errors, 3 steps, metrics, resume ----
printf '{"prompt": "What is 2+2?"}\n{"prompt": "Say hello."}\n{"prompt": [{"role": "user", "content": "Capital of France?"}]}\n{"prompt": "Opposite of hot?"}\n{"prompt": "Name a color."}\n' >"$T/prompts.jsonl"
printf '{"prompt": "a"}\n{"prompt": }\n' >"$T/badprompts.jsonl"
PPO=(--prompts "$T/prompts.jsonl" --batch 4 --mini-batch 2 --max-new-tokens 12 --lr 1e-3)
PPO1=(--batch 4 --max-new-tokens 12)
expect 0 "ppo --help" "usage: alloy ppo" "$ALLOY" ppo --help
expect 2 "ppo without a reward model" "--model, --reward, --prompts and --out are required" "$ALLOY" ppo --model "$T/sft" --prompts "$T/prompts.jsonl" --out "$T/p"
expect 2 "ppo bad kl penalty" "--kl-penalty must be kl, abs or mse" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/p" "${PPO[@]}" --kl-penalty full
expect 2 "ppo mini-batch above batch" "--mini-batch must lie in \[1, batch\]" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/p" "${PPO1[@]}" --prompts "$T/prompts.jsonl" --mini-batch 9
expect 2 "ppo negative missing-eos penalty" "--missing-eos-penalty must be >= 0" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/p" "${PPO[@]}" --missing-eos-penalty -1
expect 1 "ppo: missing reward model" "reward model: .*nope: no such folder" "$ALLOY" ppo --model "$T/sft" --reward "$T/nope" --out "$T/p" "${PPO[@]}"
expect 1 "ppo: a language model as reward model" "not a reward model" "$ALLOY" ppo --model "$T/sft" --reward "$T/sft" --out "$T/p" "${PPO[@]}"
expect 1 "ppo: malformed prompts line" "badprompts.jsonl:2: not valid JSON" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/p" "${PPO1[@]}" --prompts "$T/badprompts.jsonl"
"$ALLOY" reward --model "$T/base" --data "$T/pairs.jsonl" --out "$T/rawrm" --steps 1 --batch 2 --template raw --quiet 2>/dev/null
expect 1 "ppo: reward model of another tokenizer" "its tokenizer has 256 tokens, the policy's 258" "$ALLOY" ppo --model "$T/sft" --reward "$T/rawrm" --out "$T/p" "${PPO[@]}"
[ ! -e "$T/p" ] && ok "failed ppo runs leave nothing on disk" || nok "a failed ppo run wrote $T/p"
expect 0 "ppo 3 steps" "ppo step 3/3 \| reward [-0-9.]+ \| kl [-0-9.]+ \| beta" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/ppo" "${PPO[@]}" --steps 3 --ckpt-every 2
keys_ok=1
for k in reward kl entropy clipfrac value_loss policy_loss approx_kl response_length beta tokens_per_s; do
  [ "$(count "\"type\":\"train\".*\"$k\":-?[0-9]" "$T/ppo/metrics.jsonl")" = 3 ] || keys_ok=0
done
[ $keys_ok = 1 ] && grep -q '"step":1,"reward":[-0-9.]*,"reward_std":[0-9.]*,"kl":0.000000' "$T/ppo/metrics.jsonl" \
  && ok "ppo metrics: 3 steps with reward, kl (0 at the first), entropy, clip fraction, losses, length, beta, speed" \
  || nok "ppo metrics: $(cat "$T/ppo/metrics.jsonl")"
C="$T/ppo/checkpoints/step-00000003"
[ -f "$C/value_head.safetensors" ] && [ -f "$C/value_head_optimizer.safetensors" ] && grep -q '"kl_coef"' "$C/trainer_state.json" \
  && grep -q '"chat_template":[[:space:]]*"chatml"' "$C/config.json" \
  && ok "ppo checkpoint: policy, value head, optimisers, KL coefficient, template" || nok "ppo checkpoint: $(ls "$C")"
expect 0 "sample from the ppo policy" "." "$ALLOY" sample --model "$T/ppo" --prompt "hi" --tokens 5 --temperature 0
expect 2 "ppo resume cannot change lr" "--lr cannot change when resuming" "$ALLOY" ppo --resume "$T/ppo" --lr 1
expect 0 "ppo resume to 5" "ppo step 5/5" "$ALLOY" ppo --resume "$T/ppo" --steps 5
grep -q 'step-00000005' "$T/ppo/latest" && [ "$(count '"type":"train"' "$T/ppo/metrics.jsonl")" = 5 ] \
  && ok "resumed ppo run: latest is step 5, 5 train lines" || nok "ppo resume: $(cat "$T/ppo/latest")"
expect 0 "ppo fixed beta, abs penalty" "ppo step 2/2" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/ppo2" "${PPO[@]}" --steps 2 --adaptive-kl off --init-kl-coef 0.05 --kl-penalty abs
[ "$(count '"beta":0.05,' "$T/ppo2/metrics.jsonl")" = 2 ] && ok "ppo --adaptive-kl off keeps beta" || nok "fixed beta: $(cat "$T/ppo2/metrics.jsonl")"
# the same first step with and without the penalty samples the same responses; cut-off ones lose 100
for pen in 0 100; do
  expect 0 "ppo --missing-eos-penalty $pen" "ppo step 1/1" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/eos$pen" \
    --prompts "$T/prompts.jsonl" --batch 4 --mini-batch 4 --max-new-tokens 2 --steps 1 --missing-eos-penalty $pen
done
reward_of() { sed -n 's/.*"type":"train".*"reward":\([-0-9.]*\),.*/\1/p' "$1/metrics.jsonl"; }
awk -v a="$(reward_of "$T/eos0")" -v b="$(reward_of "$T/eos100")" 'BEGIN { d = (a - b) / 25; k = int(d + 0.5);
  exit !(k >= 1 && k <= 4 && d - k < 1e-3 && k - d < 1e-3) }' \
  && grep -rqE '"missing_eos_penalty":[[:space:]]*100' "$T/eos100/checkpoints" \
  && ok "ppo --missing-eos-penalty: 100 off each cut-off response's score, saved with the run" \
  || nok "missing-eos-penalty: $(cat "$T/eos0/metrics.jsonl" "$T/eos100/metrics.jsonl" | tr "\n" " ")"

# ---- a run resumed by the wrong verb: the message names the verb that made it ----
expect 2 "train --resume of an sft run" "$T/sft is an alloy sft run; continue it with alloy sft --resume $T/sft\$" "$ALLOY" train --resume "$T/sft"
expect 2 "distill --resume of a reward run" "is an alloy reward run; continue it with alloy reward --resume" "$ALLOY" distill --resume "$T/rm"
expect 2 "sft --resume of a ppo run" "is an alloy ppo run; continue it with alloy ppo --resume" "$ALLOY" sft --resume "$T/ppo"
expect 2 "ppo --resume of a dpo run" "is an alloy dpo run; continue it with alloy dpo --resume" "$ALLOY" ppo --resume "$T/dpo"
expect 2 "reward --resume of a train run" "$T/base is an alloy train run; continue it with alloy train --resume" "$ALLOY" reward --resume "$T/base"
expect 2 "ppo --resume of a train run" "$T/base is an alloy train run; continue it with alloy train --resume" "$ALLOY" ppo --resume "$T/base"
"$ALLOY" export --model "$T/base" --format hf --out "$T/hfbase" >/dev/null 2>&1
expect 2 "train --resume of a model folder" "$T/hfbase is a model folder, not a training run \(no trainer_state.json, no \`latest\`\): --resume continues a run; start a new one from these weights with --init $T/hfbase" \
  "$ALLOY" train --resume "$T/hfbase"
expect 2 "sft --resume of a model folder" "is a model folder, not a training run .*with --model $T/hfbase" "$ALLOY" sft --resume "$T/hfbase"

# ---- real preference data (Anthropic hh-rlhf), raw template ----
if [ -f "$SHARED/preference/hh-rlhf-harmless-base-test.jsonl.gz" ]; then
  gzip -dc "$SHARED/preference/hh-rlhf-harmless-base-test.jsonl.gz" | head -n 40 >"$T/hh.jsonl"
  expect 0 "reward on hh-rlhf (raw template)" "reward step 5/5" "$ALLOY" reward --model "$T/base" --data "$T/hh.jsonl" --out "$T/hh" --steps 5 --batch 4 --template raw --val-fraction 0.2
  expect 0 "score hh-rlhf pairs" '"line":40,"scores":\[' "$ALLOY" score --model "$T/hh" --data "$T/hh.jsonl"
  # the file as published: gzip, 2,312 pairs
  expect 0 "reward reads hh-rlhf's .jsonl.gz as published" "reward step 1/1" "$ALLOY" reward --model "$T/base" --data "$SHARED/preference/hh-rlhf-harmless-base-test.jsonl.gz" --out "$T/hhgz" --steps 1 --batch 2 --seq 64 --template raw
  sed -n 's/.*"train_examples":\([0-9]*\),"val_examples":\([0-9]*\).*/\1 \2/p' "$T/hhgz/metrics.jsonl" | awk '{ exit $1 + $2 != 2312 }' \
    && ok "hh-rlhf: 2312 pairs read from the .jsonl.gz" || nok "hh-rlhf .gz: $(head -1 "$T/hhgz/metrics.jsonl")"
else
  skip "reward and score on hh-rlhf" "data: $SHARED/preference is absent"
fi

# ---- records in other layouts (Alpaca, hh-rlhf, ...), field mapping, --layout ----
cat >"$T/alpaca.jsonl" <<'EOF'
{"instruction": "What is 2+2?", "input": "", "output": "Four."}
{"instruction": "Translate to French.", "input": "cat", "output": "chat"}
{"instruction": "Say hello.", "input": "", "output": "Hello!"}
{"instruction": "Opposite of hot?", "input": "", "output": "Cold."}
EOF
H='\n\nHuman: '; A='\n\nAssistant:'
for i in 1 2 3 4 5 6; do
  printf '{"chosen": "%sQuestion %s?%s Answer %s.%sThanks.%s Good.", "rejected": "%sQuestion %s?%s Answer %s.%sThanks.%s Go away."}\n' \
    "$H" $i "$A" $i "$H" "$A" "$H" $i "$A" $i "$H" "$A"
done >"$T/hh6.jsonl"
printf '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n' >"$T/alpaca_bad.jsonl"
printf '{"q": "What is 2+2?", "a": "Four."}\n{"q": "Say hello.", "a": "Hello!"}\n' >"$T/qa.jsonl"
expect 0 "sft on Alpaca records" "sft step 2/2" "$ALLOY" sft --model "$T/base" --data "$T/alpaca.jsonl" --out "$T/alp" --steps 2 --batch 2 --val-fraction 0
grep -q '"type":"start".*"layout":"alpaca"' "$T/alp/metrics.jsonl" && ok "the sft run names the alpaca layout" \
  || nok "alpaca start line: $(head -1 "$T/alp/metrics.jsonl")"
expect 2 "resume cannot change --layout" "--layout cannot change when resuming" "$ALLOY" sft --resume "$T/alp" --steps 3 --layout alloy
expect 2 "bad --layout" "--layout must be auto, alloy, alpaca, sharegpt, openai, trl or hh-rlhf, not \"csv\"" \
  "$ALLOY" sft --model "$T/base" --data "$T/alpaca.jsonl" --out "$T/r" --layout csv
expect 1 "a record that does not fit the file's layout" \
  "alpaca_bad.jsonl:2: needs \"output\" \(or \"response\"\) \(the file's layout is alpaca, from its first record; --layout names another\)$" \
  "$ALLOY" sft --model "$T/base" --data "$T/alpaca_bad.jsonl" --out "$T/r"
expect 1 "--layout given" "sft.jsonl:1: needs \"instruction\" \(the file's layout is alpaca, as --layout says\)$" \
  "$ALLOY" sft --model "$T/base" --data "$T/sft.jsonl" --out "$T/r" --layout alpaca
expect 0 "sft with --prompt-field and --response-field" "sft step 1/1" \
  "$ALLOY" sft --model "$T/base" --data "$T/qa.jsonl" --out "$T/qa" --steps 1 --batch 2 --val-fraction 0 --prompt-field q --response-field a
grep -qE '"prompt_field":[[:space:]]*"q"' "$T/qa/checkpoints/step-00000001/trainer_state.json" \
  && ok "the field names are saved with the run" || nok "prompt_field not saved"
expect 0 "reward on hh-rlhf transcripts" "reward step 2/2" "$ALLOY" reward --model "$T/sft" --data "$T/hh6.jsonl" --out "$T/hhrm" --steps 2 --batch 2 --val-fraction 0.3
grep -q '"type":"start".*"layout":"hh-rlhf"' "$T/hhrm/metrics.jsonl" && ok "the reward run names the hh-rlhf layout" \
  || nok "hh-rlhf start line: $(head -1 "$T/hhrm/metrics.jsonl")"
expect 0 "dpo on hh-rlhf transcripts" "dpo step 2/2" "$ALLOY" dpo --model "$T/sft" --data "$T/hh6.jsonl" --out "$T/hhdpo" --steps 2 --batch 2 --val-fraction 0.3
expect 0 "score hh-rlhf transcripts" '"line":6,"scores":\[[^,]+,[^,]+\]' "$ALLOY" score --model "$T/hhrm" --data "$T/hh6.jsonl"
expect 1 "score --layout" "hh6.jsonl:1: needs \"instruction\"" "$ALLOY" score --model "$T/hhrm" --data "$T/hh6.jsonl" --layout alpaca
# a run saved before layouts existed reads alloy's own fields when resumed (its saved options
# lack them): made with --layout alloy, those keys removed, it resumes on the same tokens
expect 0 "reward on hh-rlhf lines as alloy's own" "reward step 2/2" "$ALLOY" reward --model "$T/sft" --data "$T/hh6.jsonl" --out "$T/hhold" --steps 2 --batch 2 --layout alloy
for f in "$T"/hhold/checkpoints/*/trainer_state.json; do
  sed -i -E 's/"(layout|prompt_field|response_field|chosen_field|rejected_field|messages_field)":[[:space:]]*"[^"]*",?//g' "$f"
done
if ! grep -q '"layout"' "$T"/hhold/checkpoints/*/trainer_state.json && grep -q '"data"' "$T"/hhold/checkpoints/*/trainer_state.json; then
  expect 0 "an older run resumes (alloy's fields)" "reward step 3/3" "$ALLOY" reward --resume "$T/hhold" --steps 3
else
  nok "an older run's saved state: $(head -c 300 "$T"/hhold/checkpoints/*/trainer_state.json)"
fi
expect 0 "ppo on Alpaca prompts" "ppo step 1/1" "$ALLOY" ppo --model "$T/sft" --reward "$T/rm" --out "$T/alppo" --prompts "$T/alpaca.jsonl" --batch 2 --max-new-tokens 4 --steps 1
grep -q '"type":"start".*"layout":"alpaca"' "$T/alppo/metrics.jsonl" && ok "the ppo run names the alpaca layout" \
  || nok "ppo start line: $(head -1 "$T/alppo/metrics.jsonl")"

# Alpaca records in a JSON array (GPTeacher's files are), and alloy inspect on data
printf '[{"instruction": "What is 2+2?", "input": "", "response": "Four."},\n {"instruction": "Say hello.", "input": "", "response": "Hello!"}]\n' >"$T/teacher.json"
expect 0 "sft on a JSON array of Alpaca records" "sft step 1/1" "$ALLOY" sft --model "$T/base" --data "$T/teacher.json" --out "$T/teach" --steps 1 --batch 2 --val-fraction 0
expect 0 "inspect Alpaca records" "alpaca.jsonl: alignment data, 4 records, alpaca layout$" "$ALLOY" inspect "$T/alpaca.jsonl"
grep -q '^  verbs: sft, ppo --prompts, score$' "$T/out" && grep -q '^  first problem: none$' "$T/out" \
  && ok "inspect: sft, ppo and score read Alpaca records" || nok "inspect alpaca: $(cat "$T/out")"
expect 0 "inspect hh-rlhf transcripts" "hh6.jsonl: alignment data, 6 records, hh-rlhf layout$" "$ALLOY" inspect "$T/hh6.jsonl"
grep -q '^  verbs: reward, dpo, ppo --prompts, score$' "$T/out" && ok "inspect: reward and dpo train on hh-rlhf transcripts" \
  || nok "inspect hh-rlhf: $(cat "$T/out")"
expect 0 "inspect a record that does not fit" "first problem: .*alpaca_bad.jsonl:2: needs \"output\" \(or \"response\"\) \(the file's layout is alpaca" \
  "$ALLOY" inspect "$T/alpaca_bad.jsonl"
grep -q '^  verbs: ppo --prompts$' "$T/out" && ok "inspect: only ppo reads instructions without outputs" || nok "inspect bad: $(cat "$T/out")"
expect 0 "inspect with --layout" "sft.jsonl:1: needs \"instruction\" \(the file's layout is alpaca, as --layout says\)" "$ALLOY" inspect "$T/sft.jsonl" --layout alpaca
mkdir -p "$T/mixed" && cp "$T/teacher.json" "$T/mixed/a.json" && cp "$T/sft.jsonl" "$T/mixed/b.jsonl"
expect 0 "inspect a folder of data files" "mixed: alignment data, 8 records in 2 files, alpaca layout \(and alloy in some files\)$" "$ALLOY" inspect "$T/mixed"
grep -q '^  verbs: sft, score$' "$T/out" && ok "inspect: a folder's verbs are those that read every file" || nok "inspect folder: $(cat "$T/out")"
if [ -f "$SHARED/instruct/gpteacher_roleplay_instruct.json" ] && [ -f "$SHARED/preference/hh-rlhf-harmless-base-test.jsonl.gz" ]; then
  expect 0 "inspect GPTeacher's roleplay file" "gpteacher_roleplay_instruct.json: alignment data, 1923 records, alpaca layout$" \
    "$ALLOY" inspect "$SHARED/instruct/gpteacher_roleplay_instruct.json"
  expect 0 "inspect Anthropic's hh-rlhf" "jsonl.gz: alignment data, 2312 records, hh-rlhf layout$" \
    "$ALLOY" inspect "$SHARED/preference/hh-rlhf-harmless-base-test.jsonl.gz"
  grep -q '^  verbs: reward, dpo, ppo --prompts, score$' "$T/out" && ok "inspect: hh-rlhf trains reward and dpo" || nok "inspect hh: $(cat "$T/out")"
else
  skip "inspect GPTeacher and hh-rlhf files" "data: $SHARED/instruct or $SHARED/preference is absent"
fi

# ---- alloy chat on the SFT model: replies streamed, the conversation kept, commands ----
printf 'hello there\nand again\n/reset\nonce more\n/quit\nnever read\n' >"$T/chat.in"
"$ALLOY" chat --model "$T/sft" --max-tokens 8 --temperature 0 --system "be brief" <"$T/chat.in" >"$T/chat.out" 2>"$T/chat.err"; rc=$?
[ $rc -eq 0 ] && [ "$(wc -l <"$T/chat.out")" -eq 3 ] && [ ! -s "$T/chat.err" ] \
  && ok "chat: three replies, one line each, /quit stops" || nok "chat: rc=$rc, $(wc -l <"$T/chat.out") lines, stderr $(head -c 300 "$T/chat.err")"
"$ALLOY" chat --model "$T/sft" --max-tokens 8 --temperature 0 --system "be brief" < <(printf 'once more\n') >"$T/chat2.out" 2>/dev/null
[ "$(sed -n 3p "$T/chat.out")" = "$(cat "$T/chat2.out")" ] \
  && ok "chat: /reset starts over (the same reply as a fresh chat)" || nok "chat: after /reset '$(sed -n 3p "$T/chat.out")' vs fresh '$(cat "$T/chat2.out")'"
"$ALLOY" chat --model "$T/sft" "$T/sft" --ensemble logits --max-tokens 8 --temperature 0 --system "be brief" <"$T/chat.in" >"$T/chat3.out" 2>/dev/null
cmp -s "$T/chat.out" "$T/chat3.out" && ok "chat: an ensemble of the model with itself replies as the model" \
  || nok "chat ensemble: '$(head -c 200 "$T/chat3.out")' vs '$(head -c 200 "$T/chat.out")'"
expect 1 "chat refuses a model without a chat template" "not a chat model" "$ALLOY" chat --model "$T/base" </dev/null
expect 2 "chat --weights checked" "--weights must be" "$ALLOY" chat --model "$T/sft" --weights q2
