#!/usr/bin/env bash
# Resuming never destroys (the one run, src/train/run.c): a resume from a checkpoint older than
# the run's newest is refused with nothing on disk changed; --rewind sets the newer checkpoints
# and the metrics so far aside (every checkpoint and metrics line still on disk afterwards);
# --branch-from continues in a new run folder and leaves the source untouched; --keep never
# deletes what it did not write; a new run refuses a folder that holds one. For train and sft.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ck() { echo "$1/checkpoints/step-$(printf %08d "$2")"; }
lines() { grep -c '"type":"train"' "$1/metrics.jsonl"; }

tiny_model "$T/run" 30 tiny-gpt2 --ckpt-every 10 --keep 5 --eval-every 10 && ok "a 30-step run with checkpoints at 10, 20, 30" \
  || { nok "a 30-step run"; exit 1; }
before=$(tree_sum "$T/run")
cp "$T/run/metrics.jsonl" "$T/metrics.before"
for s in 20 30; do tree_sum "$(ck "$T/run" $s)" >"$T/sum.$s"; done

# ---- refused: nothing changes ----
expect 2 "resume from an older checkpoint is refused" "has checkpoints up to step 30, which resuming would lose.*--branch-from.*--rewind" \
  "$ALLOY" train --resume "$(ck "$T/run" 10)" --steps 31 --quiet
[ "$(tree_sum "$T/run")" = "$before" ] && ok "the refusal changed nothing on disk" || nok "the refusal changed the run folder"
expect 2 "--rewind needs --resume" "--rewind goes with --resume" "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --out "$T/x" --rewind
expect 2 "--branch-from needs --out" "--branch-from needs --out" "$ALLOY" train --branch-from "$(ck "$T/run" 10)"
expect 2 "a new run refuses a run folder" "already holds a run" "$ALLOY" train --data "$T/data" --preset tiny-gpt2 --out "$T/run" --steps 5
[ "$(tree_sum "$T/run")" = "$before" ] && ok "the refused new run changed nothing on disk" || nok "a refused new run changed the run folder"

# ---- branch: a new folder, the source untouched ----
expect 0 "branch from step 10 into a new folder" "step 15/15" "$ALLOY" train --branch-from "$(ck "$T/run" 10)" --out "$T/branch" --steps 15 --log-every 1
[ "$(tree_sum "$T/run")" = "$before" ] && ok "the branch left the source run untouched" || nok "the branch changed the source run"
[ "$(lines "$T/branch")" = 15 ] && grep -q 'step-00000015' "$T/branch/latest" \
  && ok "the branch's metrics hold steps 1-10 of the source and 11-15 of its own" || nok "branch metrics: $(lines "$T/branch") train lines"
head -n "$(grep -n '"step":10,' "$T/metrics.before" | tail -1 | cut -d: -f1)" "$T/metrics.before" | grep '"type":"train"' >"$T/first10"
[ "$(grep '"type":"train"' "$T/branch/metrics.jsonl" | head -10)" = "$(cat "$T/first10")" ] \
  && ok "the branch's first ten lines are the source's" || nok "the branch's first ten lines differ"
expect 2 "a branch refuses a folder that holds a run" "already holds a run" "$ALLOY" train --branch-from "$(ck "$T/run" 10)" --out "$T/branch" --steps 15

# ---- rewind: newer checkpoints and the metrics set aside, nothing deleted ----
expect 0 "rewind to step 10" "set aside in .*rewound-1" "$ALLOY" train --resume "$(ck "$T/run" 10)" --steps 12 --rewind --log-every 1
ok_all=1
for s in 20 30; do [ "$(tree_sum "$(ck "$T/run/rewound-1" $s)")" = "$(cat "$T/sum.$s")" ] || ok_all=0; done
[ $ok_all = 1 ] && ok "checkpoints 20 and 30 are set aside whole" || nok "checkpoints 20 and 30 were not kept whole"
cmp -s "$T/run/rewound-1/metrics.jsonl" "$T/metrics.before" && ok "every metrics line of before the rewind is kept" \
  || nok "metrics lines were lost in the rewind"
[ -d "$(ck "$T/run" 10)" ] && grep -q 'step-00000012' "$T/run/latest" && [ "$(lines "$T/run")" = 12 ] \
  && ok "the rewound run continues: latest is step 12, 12 train lines" || nok "rewound run: $(cat "$T/run/latest")"

# ---- --keep deletes only the run's own older checkpoints ----
expect 0 "resume with --keep 1" "step 14/14" "$ALLOY" train --resume "$T/run" --steps 14 --keep 1 --ckpt-every 1 --log-every 1
[ "$(ls "$T/run/checkpoints")" = "step-00000014" ] && [ -d "$(ck "$T/run/rewound-1" 30)" ] \
  && ok "--keep 1 kept the newest; what was set aside is untouched" || nok "--keep: $(ls "$T/run/checkpoints")"

# ---- the same for an alignment run ----
printf '{"prompt": "a%s", "response": "b"}\n' 1 2 3 4 5 6 7 8 >"$T/sft.jsonl"
expect 0 "sft 6 steps" "sft step 6/6" "$ALLOY" sft --model "$T/run" --data "$T/sft.jsonl" --out "$T/sft" --steps 6 --batch 2 --ckpt-every 3
sb=$(tree_sum "$T/sft")
expect 2 "sft: resume from an older checkpoint is refused" "which resuming would lose" "$ALLOY" sft --resume "$(ck "$T/sft" 3)" --steps 7
[ "$(tree_sum "$T/sft")" = "$sb" ] && ok "sft: the refusal changed nothing" || nok "sft: the refusal changed the run"
expect 0 "sft: branch from step 3" "sft step 5/5" "$ALLOY" sft --branch-from "$(ck "$T/sft" 3)" --out "$T/sftb" --steps 5
[ "$(tree_sum "$T/sft")" = "$sb" ] && ok "sft: the branch left the source untouched" || nok "sft: the branch changed the source"
expect 0 "sft: rewind to step 3" "set aside" "$ALLOY" sft --resume "$(ck "$T/sft" 3)" --steps 4 --rewind
[ -d "$(ck "$T/sft/rewound-1" 6)" ] && ok "sft: step 6 set aside" || nok "sft: step 6 not set aside"

# ---- a crash between a checkpoint's rename and the update of `latest` ----
# leaves a whole checkpoint newer than `latest`: resuming the run folder continues (it is the
# run's own step, not newer work), sets it aside rather than deleting it, and writes it again
tiny_model "$T/crash" 12 tiny-gpt2 --ckpt-every 4 --keep 5 && cp -r "$(ck "$T/crash" 12)" "$T/crash12" \
  && echo checkpoints/step-00000008 >"$T/crash/latest" && ok "a run whose latest lags its newest checkpoint" \
  || nok "setting up the crash case"
expect 0 "resuming the crashed run continues" "step 12/12" "$ALLOY" train --resume "$T/crash" --log-every 1
cmp -s "$T/crash12/model.safetensors" "$(ck "$T/crash" 12)/model.safetensors" && [ -d "$(ck "$T/crash/rewound-1" 12)" ] \
  && ok "the crash's checkpoint is set aside and step 12 written again, bitwise the same" || nok "crash resume: step 12 differs or was lost"
