#!/usr/bin/env bash
# RLHF end to end on a preference a program can judge: story continuations should mention a
# colour (examples/rlhf/rule.py). The pretrained model follows it about 9% of the time.
#
#   1. pretrain small-llama on TinyStories (a 2 MB sample), with its own 2048-token BPE;
#   2. SFT: first sentence of a story -> its next two sentences (raw template);
#   3. sample 4 continuations of 1200 training prompts from the SFT model and judge them by the
#      rule. The reward model's pairs (from the first 2 samples): each continuation against its
#      minimal edit of the same length (a colour against a plain adjective), a quarter of them
#      also against the empty response (any continuation beats none), and where a prompt
#      got one continuation that follows the rule and one that does not, those two; DPO's pairs
#      are these natural pairs alone, from all 4 samples;
#   4. a reward model from the SFT model on its pairs (held-out pair accuracy reported);
#   5. PPO from the SFT model against that reward model, with a KL penalty to the SFT model and
#      a penalty on responses cut off before their end (whose scores the reward model never
#      learned);
#   6. DPO from the SFT model on the natural pairs;
#   7. the true score (share of continuations of 300 held-out prompts that mention a colour)
#      and the KL to the SFT model, for SFT, PPO and DPO; results.md gets the table;
#   8. for the record, a reward model from the pretrained model on real human preferences
#      (Anthropic's hh-rlhf, harmless-base test sample in ../shared/data): its held-out pair
#      accuracy (HH=0 skips it).
#
#     examples/rlhf/run.sh [WORK_DIR]     (default: runs/rlhf)
#
# Needs ../shared/data's TinyStories (or STORIES=train.txt VALID=valid.txt) and python3 for the
# rule; under 30 minutes on two cores. STEPS_SCALE=0.05 makes a quick smoke run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
alloy=${ALLOY:-$root/build/alloy}
work=${1:-runs/rlhf}
data=${DATA:-$root/../shared/data}
train_txt=${STORIES:-$data/stories/tinystories_train_2MB.txt}
valid_txt=${VALID:-$data/stories/tinystories_valid.txt}
scale=${STEPS_SCALE:-1}
threads=${THREADS:-$(nproc)}
seed=${SEED:-1337}
rule=(python3 "$here/rule.py")

for f in "$train_txt" "$valid_txt"; do
    [[ -r $f ]] || { echo "rlhf: cannot read $f (set DATA, STORIES or VALID)" >&2; exit 1; }
done
[[ -x $alloy ]] || make -C "$root" -s
mkdir -p "$work"
SECONDS=0
steps() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s + 0.5); print (v < 2 ? 2 : v) }'; }
count() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s + 0.5); print (v < 16 ? 16 : v) }'; }
log() { printf '\n== [%s] %s\n' "$(date +%T)" "$*" >&2; }
ckpt() { echo "$work/$1/$(cat "$work/$1/latest")"; }
done_run() { [[ -f $work/$1/latest ]]; }
# pure sampling (temperature 1, no truncation): what PPO optimises and what the score measures
sampling=(--temperature 1 --top-k 0 --top-p 1 --min-p 0 --tokens 48 --batch 16 --threads "$threads" --quiet)

log "data: tokenizer, shards, SFT examples and prompts"
[[ -f $work/tokenizer.json ]] ||
    "$alloy" tokenizer train --input "$train_txt" --vocab-size 2048 --out "$work/tokenizer.json" --quiet
[[ -f $work/shards/manifest.json ]] || { rm -rf "$work/shards";
    "$alloy" prepare --input "$train_txt" --separator '<|endoftext|>' --tokenizer "$work/tokenizer.json" \
        --out "$work/shards" --quiet; }
"${rule[@]}" sft "$train_txt" "$work/sft.jsonl"
"${rule[@]}" prompts "$train_txt" "$work/train_prompts.jsonl" "$(count 1200)"
"${rule[@]}" prompts "$valid_txt" "$work/eval_prompts.jsonl" "$(count 300)"

log "pretrain small-llama"
done_run pretrain || "$alloy" train --data "$work/shards" --preset small-llama --seq 128 --batch 16 \
    --steps "$(steps 400)" --lr 2e-3 --warmup 40 --eval-every 0 --ckpt-every 0 --seed "$seed" \
    --threads "$threads" --out "$work/pretrain" --quiet

log "SFT"
done_run sft || "$alloy" sft --model "$work/pretrain" --data "$work/sft.jsonl" --template raw --epochs 2 \
    --steps "$(steps 274)" --batch 16 --lr 5e-4 --seq 128 --eval-every 0 --seed "$seed" --threads "$threads" \
    --out "$work/sft" --quiet

log "preference pairs from the SFT model's samples"
for s in 1 2 3 4; do
    [[ -f $work/samples-$s.jsonl ]] ||
        "$alloy" generate --model "$work/sft" --prompts "$work/train_prompts.jsonl" --seed "$s$seed" \
            "${sampling[@]}" --out "$work/samples-$s.jsonl"
done
"${rule[@]}" pairs "$work"/samples-[12].jsonl "$work/pairs.jsonl"
"${rule[@]}" pairs --natural "$work"/samples-[1234].jsonl "$work/natural-pairs.jsonl"

log "reward model (held-out pair accuracy in rm/metrics.jsonl)"
done_run rm || "$alloy" reward --model "$work/sft" --data "$work/pairs.jsonl" --val-fraction 0.1 --epochs 1 \
    --steps "$(steps 168)" --batch 16 --lr 1e-4 --eval-every 0 --seed "$seed" --threads "$threads" --out "$work/rm" --quiet

log "PPO from the SFT model against the reward model"
"${rule[@]}" prompts "$train_txt" "$work/ppo_prompts.jsonl"
done_run ppo || "$alloy" ppo --model "$work/sft" --reward "$work/rm" --prompts "$work/ppo_prompts.jsonl" \
    --steps "$(steps 50)" --batch 32 --mini-batch 16 --max-new-tokens 48 --lr 1e-4 --init-kl-coef 0.3 --missing-eos-penalty 4 \
    --ckpt-every 0 --seed "$seed" \
    --threads "$threads" --out "$work/ppo" --quiet

log "DPO from the SFT model on the natural pairs"
done_run dpo || "$alloy" dpo --model "$work/sft" --data "$work/natural-pairs.jsonl" --epochs 4 --steps "$(steps 96)" \
    --batch 16 --lr 1e-4 --beta 0.1 --eval-every 0 --ckpt-every 0 --seed "$seed" --threads "$threads" \
    --out "$work/dpo" --quiet

log "true score and KL to the SFT model on held-out prompts"
: > "$work/results.jsonl.tmp"
for m in sft ppo dpo; do
    "$alloy" generate --model "$work/$m" --prompts "$work/eval_prompts.jsonl" --seed 7 "${sampling[@]}" \
        --out "$work/eval-$m.jsonl"
    "${rule[@]}" responses "$work/eval-$m.jsonl" "$work/eval-$m-pr.jsonl"
    "$alloy" score --model "$work/$m" --logprobs --data "$work/eval-$m-pr.jsonl" --batch 16 --threads "$threads" \
        > "$work/logp-$m-self.jsonl"
    "$alloy" score --model "$work/sft" --logprobs --data "$work/eval-$m-pr.jsonl" --batch 16 --threads "$threads" \
        > "$work/logp-$m-sft.jsonl"
    python3 - "$m" <<PY >> "$work/results.jsonl.tmp"
import json, subprocess, sys
run = lambda *a: json.loads(subprocess.check_output(["python3", "$here/rule.py", *a]))
s = run("score", "$work/eval-$m.jsonl")
k = run("kl", "$work/logp-$m-self.jsonl", "$work/logp-$m-sft.jsonl")
print(json.dumps({"model": sys.argv[1], "score": s["score"], "kl": k["kl"], "mean_tokens": s["mean_tokens"]}))
PY
done
mv "$work/results.jsonl.tmp" "$work/results.jsonl"
"${rule[@]}" report "$work/results.jsonl" > "$work/results.md"
echo "
Reward model: $("${rule[@]}" accuracy "$work/rm/metrics.jsonl")." >> "$work/results.md"

if [[ ${HH:-1} != 0 && -r $data/preference/hh-rlhf-harmless-base-test.jsonl.gz ]]; then
    log "reward model on real preferences: hh-rlhf harmless-base (test sample), from the pretrained model"
    gzip -dc "$data/preference/hh-rlhf-harmless-base-test.jsonl.gz" > "$work/hh-rlhf.jsonl"
    done_run rm-hh || "$alloy" reward --model "$work/pretrain" --data "$work/hh-rlhf.jsonl" --template raw \
        --val-fraction 0.1 --epochs 1 --steps "$(steps 130)" --batch 16 --lr 1e-4 --eval-every 0 --ckpt-every 0 \
        --seed "$seed" --threads "$threads" --out "$work/rm-hh" --quiet
    echo "
Reward model on hh-rlhf (harmless-base test sample, 128-token window, from the pretrained model):
$("${rule[@]}" accuracy "$work/rm-hh/metrics.jsonl")." >> "$work/results.md"
fi
echo "
Wall time of this run: $((SECONDS / 60)) min $((SECONDS % 60)) s on $threads threads (steps already done are skipped)." >> "$work/results.md"
cat "$work/results.md"
