#!/usr/bin/env bash
# `alloy moe` end to end: two Llama experts trained apart (prose, code) from one base become a
# Mixtral-layout MoE (random and hidden routers, with and without --base); usage errors and bad
# inputs (one line on stderr, exit 2 or 1, nothing written); `alloy train --init MOE
# --train-only router` changes the routers and nothing else, logs the routing, and resumes;
# `alloy eval` scores the MoE, through the inference engine too (--weights f32 as the training
# forward, q8_0 close to it); greedy `alloy generate` / `alloy sample` run it, batches equal
# single runs; GGUF export as llama.cpp's Mixtral and import back; a GPT-2 MoE in alloy's own
# layout, scored and generated from as well (its GGUF export refused).
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt code/c_code_stb_lua.txt

TRAIN=(--batch 2 --seq 32 --eval-every 2 --eval-batches 2 --threads 1)
ck() { ls -d "$1"/checkpoints/step-* | tail -1; } # a run's latest checkpoint folder

# ---- data (bytes), a base and two experts branched from it ----
mkdir -p "$T/prose" "$T/code"
head -c 60000 "$SHARED/prose/tinyshakespeare.txt" >"$T/prose/a.txt"
head -c 60000 "$SHARED/code/c_code_stb_lua.txt" >"$T/code/a.c"
expect 0 "prepare prose" "prepared" "$ALLOY" prepare --input "$T/prose" --out "$T/dprose"
expect 0 "prepare code" "prepared" "$ALLOY" prepare --input "$T/code" --out "$T/dcode"
cat >"$T/llama.json" <<'EOF'
{"model_type": "llama", "vocab_size": 256, "max_position_embeddings": 32, "hidden_size": 32,
 "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "alloy_tokenizer": "bytes"}
EOF
expect 0 "train the base" "held-out loss" "$ALLOY" train --data "$T/dprose" --out "$T/base" --config "$T/llama.json" --steps 2 "${TRAIN[@]}"
BASE=$(ck "$T/base")
expect 0 "branch: prose expert" "held-out loss" "$ALLOY" train --data "$T/dprose" --out "$T/ea" --init "$BASE" --steps 2 "${TRAIN[@]}"
expect 0 "branch: code expert" "held-out loss" "$ALLOY" train --data "$T/dcode" --out "$T/eb" --init "$BASE" --steps 2 "${TRAIN[@]}"
expect 0 "gpt2 model" "held-out loss" "$ALLOY" train --data "$T/dprose" --out "$T/g" --preset tiny-gpt2 --steps 1 "${TRAIN[@]}"
EA=$(ck "$T/ea"); EB=$(ck "$T/eb")
before=$(tree_sum "$T/ea")

# ---- usage errors: exit 2 ----
expect 0 "moe --help" "usage: alloy moe --experts A B" "$ALLOY" moe --help
expect 0 "moe is listed" "moe +dense models -> one mixture of experts" "$ALLOY" --help
expect 2 "no out" "--experts, --top-k and --out are required" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1
expect 2 "one expert" "--experts: give at least 2 expert models \(got 1\)" "$ALLOY" moe --experts "$T/ea" --top-k 1 --out "$T/m"
expect 2 "K > E" "--top-k 3: must lie in \[1, 2\]" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 3 --out "$T/m"
expect 2 "bad router" "--router must be random, hidden or classifier, not \"learned\"" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router learned --out "$T/m"
expect 2 "prompts without hidden" "--prompts applies to --router hidden or classifier only" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --prompts x --out "$T/m"
expect 2 "mismatched experts" "--experts: model 2: family gpt2 differs from the first expert's llama" "$ALLOY" moe --experts "$T/ea" "$T/g" --top-k 1 --out "$T/m"
expect 2 "out is an input" "is one of the inputs" "$ALLOY" moe --experts "$EA" "$T/eb" --top-k 1 --out "$EA"
printf '0\tto be or not\n5\tint main\n' >"$T/bad_prompts.txt"
expect 2 "prompt expert out of range" "bad_prompts.txt:2: expert 5 is outside \[0, 1\]" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router hidden --prompts "$T/bad_prompts.txt" --out "$T/m"
printf '0\tto be or not\n' >"$T/one_prompt.txt"
expect 2 "an expert without prompts" "--prompts: no prompt for expert 1" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router hidden --prompts "$T/one_prompt.txt" --out "$T/m"
# ---- bad inputs: exit 1 ----
expect 1 "missing expert" "$T/nomodel: no such folder" "$ALLOY" moe --experts "$T/ea" "$T/nomodel" --top-k 1 --out "$T/m"
expect 1 "missing prompts file" "$T/nofile.txt" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router hidden --prompts "$T/nofile.txt" --out "$T/m"
[ ! -e "$T/m" ] && ok "failures wrote nothing" || nok "a failed moe left $T/m"
[ "$(tree_sum "$T/ea")" = "$before" ] && ok "inputs unchanged" || nok "an input changed"

# ---- a Mixtral from the two experts ----
expect 0 "moe random router" "built a mixture of 2 experts \(llama, 2 layers, d_ff 48, top-1, random router, shared layers averaged\) -> $T/moe" \
  "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --out "$T/moe"
grep -q "^alloy moe: warning: with --top-k 1 each token's one gate is 1, so the LM loss gives the routers no gradient" "$T/err" \
  && ok "moe --top-k 1 warns that the routers get no gradient from the LM loss" || nok "moe top-1 warning: $(cat "$T/err")"
grep -q '"model_type":[[:space:]]*"mixtral"' "$T/moe/config.json" && grep -q 'MixtralForCausalLM' "$T/moe/config.json" \
  && grep -q '"num_local_experts":[[:space:]]*2' "$T/moe/config.json" && grep -q '"num_experts_per_tok":[[:space:]]*1' "$T/moe/config.json" \
  && ok "config.json is Mixtral's" || nok "config: $(tr -d '\n' <"$T/moe/config.json")"
expect 0 "inspect: Mixtral names" "model.layers.1.block_sparse_moe.experts.1.w2.weight +F32 +\[32, 48\]" "$ALLOY" inspect "$T/moe"
expect 0 "inspect: router" "model.layers.0.block_sparse_moe.gate.weight +F32 +\[2, 32\]" "$ALLOY" inspect "$T/moe"
printf '# prose, then code\n0\tTo be, or not to be, that is the question\n0\tROMEO: But soft, what light\n1\tint main(void) { return 0; }\n1\tstatic void f(int *p) { *p = 1; }\n' >"$T/prompts.txt"
expect 0 "moe hidden router with a base" "top-2, hidden router from --prompts, shared layers from --base" \
  "$ALLOY" moe --experts "$T/ea" "$T/eb" --base "$T/base" --top-k 2 --router hidden --prompts "$T/prompts.txt" --out "$T/moe_h"
expect 0 "moe hidden router, sampled prompts" "hidden router from sampled prompts" \
  "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router hidden --seed 3 --out "$T/moe_s"
expect 0 "moe classifier router" "top-2, classifier router from --prompts, shared layers averaged" \
  "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 2 --router classifier --prompts "$T/prompts.txt" --out "$T/moe_c"
expect 0 "classifier fit report" "router 1: [0-9]+ tokens, [0-9]+ iterations, objective [0-9.]+, \|grad\| .*accuracy [01][.][0-9]+" \
  "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router classifier --verbose --out "$T/moe_c1"
expect 2 "bad router l2" "--router-l2 must be > 0" "$ALLOY" moe --experts "$T/ea" "$T/eb" --top-k 1 --router classifier --router-l2 0 --out "$T/m2"

# the experts are the models' MLPs, bit for bit; with --base the attention is the base's
$PY - "$T/moe" "$EA" "$EB" "$T/moe_h" "$BASE" <<'EOF' && ok "experts copied, shared tensors averaged or from the base" || nok "expert or shared tensors wrong"
import json, struct, sys
import numpy as np
def load(d):
    raw = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]], "<f4").reshape(v["shape"]) for k, v in h.items()}
moe, a, b, moe_h, base = (load(d) for d in sys.argv[1:])
for l in range(2):
    for e, src in enumerate((a, b)):
        for w, dense in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            assert np.array_equal(moe["model.layers.%d.block_sparse_moe.experts.%d.%s.weight" % (l, e, w)],
                                  src["model.layers.%d.mlp.%s.weight" % (l, dense)]), (l, e, w)
q = "model.layers.1.self_attn.q_proj.weight"
assert np.allclose(moe[q], (a[q].astype(np.float64) + b[q]) / 2, atol=1e-7)
assert np.array_equal(moe_h[q], base[q])
r = moe_h["model.layers.0.block_sparse_moe.gate.weight"]
assert np.allclose(np.linalg.norm(r, axis=1), 1, atol=1e-5) and np.allclose(r[0], -r[1], atol=1e-6)
EOF

# ---- router-only training: the routers change, nothing else; the routing is logged ----
expect 0 "train --train-only router" "training the routers only" "$ALLOY" train --data "$T/dprose" --out "$T/rt" --init "$T/moe" --train-only router --steps 3 --aux-loss-coef 0.01 "${TRAIN[@]}"
grep -q "^warning: with 1 expert per token each gate is 1, so the LM loss gives the routers no gradient: they learn from the load-balancing loss alone (coefficient 0.01)$" "$T/err" \
  && ok "train --train-only router of a top-1 mixture warns" || nok "top-1 router training warning: $(head -c 600 "$T/err")"
$PY - "$T/moe" "$(ck "$T/rt")" <<'EOF' && ok "only the routers changed" || nok "router-only training changed other tensors (or not the routers)"
import json, struct, sys
import numpy as np
def load(d):
    raw = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]], "<f4") for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys()
changed = sorted(k for k in a if not np.array_equal(a[k], b[k]))
assert changed == ["model.layers.%d.block_sparse_moe.gate.weight" % l for l in range(2)], changed
EOF
grep '"type":"train"' "$T/rt/metrics.jsonl" | tail -1 | grep -qE '"aux_loss":[0-9.]+,"expert_tokens":\[[0-9]+,[0-9]+\],"expert_tokens_per_layer":\[\[[0-9]+,[0-9]+\],\[[0-9]+,[0-9]+\]\]' \
  && ok "metrics: aux loss and expert token counts" || nok "metrics: $(grep '"type":"train"' "$T/rt/metrics.jsonl" | tail -1)"
$PY -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if "\"train\"" in l][-1]; assert sum(r["expert_tokens"]) == 2*32*2*1, r' "$T/rt/metrics.jsonl" \
  && ok "every token routed once per layer (top-1)" || nok "token counts do not add up"
grep -q '"train_only":"router"' "$T/rt/metrics.jsonl" && grep -q '"router_aux_loss_coef":[[:space:]]*0.01' "$(ck "$T/rt")/config.json" \
  && ok "train_only logged, coefficient saved" || nok "train_only or coefficient missing"
expect 0 "resume keeps --train-only router" "resuming from" "$ALLOY" train --resume "$T/rt" --steps 4 --threads 1
$PY - "$T/moe" "$(ck "$T/rt")" <<'EOF' && ok "resumed: still only the routers" || nok "resume lost --train-only router"
import json, struct, sys
import numpy as np
def load(d):
    raw = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]], "<f4") for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert all(np.array_equal(a[k], b[k]) for k in a if not k.endswith("block_sparse_moe.gate.weight"))
EOF
expect 2 "train-only bad value" "--train-only must be all, router or mlp, not \"experts\"" "$ALLOY" train --data "$T/dprose" --out "$T/rx" --init "$T/moe" --train-only experts --steps 1
expect 2 "train-only router on a dense model" "--train-only router: the model has no experts" "$ALLOY" train --data "$T/dprose" --out "$T/rx" --init "$BASE" --train-only router --steps 1 --batch 2 --seq 32
# ---- MLP-only training of a dense model: its feed-forward tensors change, nothing else ----
expect 0 "train --train-only mlp (dense)" "training the MLPs only" "$ALLOY" train --data "$T/dcode" --out "$T/rm" --init "$BASE" --train-only mlp --steps 2 --batch 2 --seq 32 --threads 1
$PY - "$BASE" "$(ck "$T/rm")" <<'EOF' && ok "only the MLPs changed" || nok "MLP-only training changed other tensors (or not the MLPs)"
import json, os, struct, sys
import numpy as np
def load(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n]); h.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]], "<f4") for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
changed = sorted(k for k in a if not np.array_equal(a[k], b[k]))
assert changed and all(".mlp." in k for k in changed), changed
assert len(changed) == sum(".mlp." in k for k in a), (len(changed), changed)
EOF
grep -q '"train_only":"mlp"' "$T/rm/metrics.jsonl" && ok "train_only mlp logged" || nok "train_only mlp not in metrics.jsonl"
expect 0 "train all of the MoE" "training every parameter" "$ALLOY" train --data "$T/dcode" --out "$T/rall" --init "$T/moe_h" --train-only all --steps 2 "${TRAIN[@]}"

# ---- eval on the MoE: the training forward and the inference engine ----
expect 0 "eval the MoE" '"perplexity":' "$ALLOY" eval --model "$T/rt" --data "$T/dprose" --seq 32 --max-windows 4 --quiet
for w in none f32 q8_0; do
  flag=(); [ "$w" = none ] || flag=(--weights "$w")
  "$ALLOY" eval --model "$T/rall" --data "$T/dprose" --seq 32 --max-windows 4 --quiet "${flag[@]}" >"$T/eval_$w.json" 2>"$T/eval_$w.err" \
    || nok "eval --weights $w: $(cat "$T/eval_$w.err")"
done
$PY - "$T"/eval_none.json "$T"/eval_f32.json "$T"/eval_q8_0.json <<'EOF' && ok "eval --weights f32 equals the training forward, q8_0 within 0.2%" || nok "engine eval of the MoE: $(cat "$T"/eval_*.json)"
import json, sys
ref, f32, q8 = (json.loads(open(p).read().strip().splitlines()[-1])["loss"] for p in sys.argv[1:])
print("# MoE eval loss: forward %.6f, engine f32 %.6f, q8_0 %.6f" % (ref, f32, q8))
assert abs(f32 - ref) <= 1e-4 * ref, (ref, f32)
assert abs(q8 - ref) <= 2e-3 * ref, (ref, q8)
EOF
expect 0 "sample the MoE" "" "$ALLOY" sample --model "$T/moe_h" --tokens 8
a=$("$ALLOY" generate --model "$T/rall" --prompt-ids "65 66 67" --tokens 12 --temperature 0 --quiet)
b=$("$ALLOY" generate --model "$T/rall" --prompt-ids "65 66 67" --tokens 12 --temperature 0 --quiet)
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$(echo $a | wc -w)" = 12 ] && ok "greedy generate on the MoE: 12 tokens, reproducible" || nok "greedy: '$a' '$b'"
expect 0 "generate the MoE, q4_k" "stopped: token limit after 10 tokens.*q4_k weights" "$ALLOY" generate --model "$T/moe_h" --prompt-ids "1 2" --tokens 10 --weights q4_k
# decode steps of several sequences group their rows by expert: a batch gives each prompt what it
# gets alone (q8_0: the products are the same bits for any number of rows)
printf '{"prompt_ids": [65, 66, 67]}\n{"prompt_ids": [105, 110, 116, 32]}\n{"prompt": "ROMEO:"}\n' >"$T/mp.jsonl"
for bs in 1 3; do
  expect 0 "generate batch $bs" "3 prompts" "$ALLOY" generate --model "$T/moe_h" --prompts "$T/mp.jsonl" --tokens 10 --batch $bs --temperature 0 --weights q8_0 --out "$T/mb$bs.jsonl"
done
$PY - "$T/mb1.jsonl" "$T/mb3.jsonl" <<'EOF' && ok "MoE batch of 3 equals single runs" || nok "MoE batch differs"
import json, sys
a, b = ([json.loads(l)["ids"] for l in open(p)] for p in sys.argv[1:])
assert a == b and all(len(x) == 10 for x in a), (a, b)
EOF
expect 0 "ensemble of the MoE and an expert" '"perplexity":' "$ALLOY" eval --model "$T/moe" "$T/ea" --data "$T/dprose" --seq 32 --max-windows 2 --quiet

# ---- GPT-2: alloy's own layout ----
expect 0 "train a second gpt2" "held-out loss" "$ALLOY" train --data "$T/dcode" --out "$T/g2" --init "$(ck "$T/g")" --steps 1 "${TRAIN[@]}"
expect 0 "gpt2 moe" "built a mixture of 2 experts \(gpt2" "$ALLOY" moe --experts "$T/g" "$T/g2" --top-k 2 --out "$T/gmoe"
expect 0 "inspect gpt2 moe" "transformer.h.1.mlp.experts.1.c_fc.bias +F32 +\[256\]" "$ALLOY" inspect "$T/gmoe"
expect 0 "train the gpt2 moe" "training the routers only" "$ALLOY" train --data "$T/dprose" --out "$T/grt" --init "$T/gmoe" --train-only router --steps 1 "${TRAIN[@]}"
# ---- GGUF: the Mixtral exports as llama.cpp's (stacked experts) and imports back ----
expect 0 "export the MoE as GGUF" "as gguf q8_0" "$ALLOY" export --model "$T/moe_h" --format gguf --type q8_0 --out "$T/moe.gguf"
expect 0 "import the MoE GGUF" "GGUF file" "$ALLOY" import "$T/moe.gguf" --out "$T/moe_gg"
grep -q '"num_local_experts":[[:space:]]*2' "$T/moe_gg/config.json" && grep -q '"num_experts_per_tok":[[:space:]]*2' "$T/moe_gg/config.json" \
  && ok "imported GGUF is a Mixtral" || nok "imported config: $(tr -d '\n' <"$T/moe_gg/config.json")"
expect 0 "generate from the imported MoE" "stopped: token limit after 5 tokens" "$ALLOY" generate --model "$T/moe_gg" --prompt-ids "1 2" --tokens 5
expect 2 "gpt2 MoE GGUF export refused" "GGUF export of a GPT-2 mixture of experts is not supported" "$ALLOY" export --model "$T/gmoe" --format gguf --out "$T/gmoe.gguf"
expect 0 "generate the gpt2 moe" "stopped: token limit after 6 tokens" "$ALLOY" generate --model "$T/grt" --prompt-ids "1 2 3" --tokens 6 --temperature 0
"$ALLOY" eval --model "$T/grt" --data "$T/dprose" --seq 32 --max-windows 2 --quiet >"$T/geval_none.json" 2>/dev/null
"$ALLOY" eval --model "$T/grt" --data "$T/dprose" --seq 32 --max-windows 2 --quiet --weights f32 >"$T/geval_f32.json" 2>/dev/null
$PY - "$T/geval_none.json" "$T/geval_f32.json" <<'EOF' && ok "gpt2 MoE: engine eval equals the training forward" || nok "gpt2 MoE engine eval: $(cat "$T"/geval_*.json)"
import json, sys
a, b = (json.loads(open(p).read().strip().splitlines()[-1])["loss"] for p in sys.argv[1:])
assert abs(a - b) <= 1e-4 * a, (a, b)
EOF
