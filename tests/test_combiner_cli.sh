#!/usr/bin/env bash
# `alloy ensemble train` end to end: two tiny models trained apart (prose, code) get a learned
# combiner on held-out text of both kinds; it beats the uniform mixture, `alloy eval --ensemble
# learned` scores it the same way, members in the wrong order or a missing combiner are refused
# in one line; `alloy distill` takes it as the teacher with hidden-state matching, saves the
# projection in its checkpoints and resumes.
set -u
. "$(dirname "$0")/cli_lib.sh"
need_data prose/tinyshakespeare.txt code/c_code_stb_lua.txt

TRAIN=(--batch 4 --seq 32 --eval-every 0 --eval-batches 2 --threads 1)
ck() { ls -d "$1"/checkpoints/step-* | tail -1; }

mkdir -p "$T/prose" "$T/code" "$T/mix"
head -c 40000 "$SHARED/prose/tinyshakespeare.txt" >"$T/prose/a.txt"
head -c 40000 "$SHARED/code/c_code_stb_lua.txt" >"$T/code/a.c"
tail -c 20000 "$SHARED/prose/tinyshakespeare.txt" >"$T/mix/b.txt"
tail -c 20000 "$SHARED/code/c_code_stb_lua.txt" >"$T/mix/b.c"
expect 0 "prepare prose" "prepared" "$ALLOY" prepare --input "$T/prose" --out "$T/dprose"
expect 0 "prepare code" "prepared" "$ALLOY" prepare --input "$T/code" --out "$T/dcode"
expect 0 "prepare held-out mix" "prepared" "$ALLOY" prepare --input "$T/mix" --out "$T/dmix" --val-fraction 0.3
expect 0 "train on prose" "held-out loss" "$ALLOY" train --data "$T/dprose" --out "$T/a" --preset tiny-gpt2 --steps 40 --lr 3e-3 "${TRAIN[@]}"
expect 0 "train on code" "held-out loss" "$ALLOY" train --data "$T/dcode" --out "$T/b" --preset tiny-llama --steps 40 --lr 3e-3 "${TRAIN[@]}"

# ---- usage errors: exit 2, one line ----
expect 0 "ensemble --help" "usage: alloy ensemble train --model A B" "$ALLOY" ensemble train --help
expect 0 "ensemble is listed" "ensemble +train a learned combiner" "$ALLOY" --help
expect 2 "one model" "give 2 to 16 --model folders" "$ALLOY" ensemble train --model "$T/a" --data "$T/dmix" --out "$T/c"
expect 2 "no out" "--model, --data and --out are required" "$ALLOY" ensemble train --model "$T/a" "$T/b" --data "$T/dmix"
expect 2 "unknown subcommand" "unknown subcommand 'fit'" "$ALLOY" ensemble fit
expect 2 "bad lr" "--lr must lie in" "$ALLOY" ensemble train --model "$T/a" "$T/b" --data "$T/dmix" --out "$T/c" --lr 0
expect 2 "learned without combiner" "--ensemble learned and --combiner DIR go together" \
  "$ALLOY" eval --model "$T/a" "$T/b" --data "$T/dmix" --ensemble learned
[ ! -e "$T/c" ] && ok "nothing written on usage errors" || nok "nothing written on usage errors"

# ---- train the combiner ----
expect 0 "ensemble train" "learned_loss" "$ALLOY" ensemble train --model "$T/a" "$T/b" --data "$T/dmix" --out "$T/c" \
  --steps 40 --batch 4 --seq 32 --lr 3e-2 --threads 1
cp "$T/out" "$T/train.json"
CK="$T/c/$(cat "$T/c/latest" 2>/dev/null)"
for f in "$CK/combiner.safetensors" "$CK/combiner.json" "$CK/optimizer.safetensors" "$T/c/metrics.jsonl"; do
  [ -s "$f" ] && ok "writes ${f#$T/c/}" || nok "writes ${f#$T/c/}"
done
[ "$(grep -c '"type":"train"' "$T/c/metrics.jsonl")" = 40 ] && ok "a metrics line per step" || nok "a metrics line per step"
# (that a gate beats fixed weights is shown in tests/test_combiner.c on two clear specialists;
# these barely trained models are not)
$PY - "$T/train.json" "$CK/combiner.json" <<'PYEOF' && ok "held-out scores reported and recorded" || nok "held-out scores reported and recorded: $(cat "$T/train.json")"
import json, math, sys
r, c = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ok = all(math.isfinite(r[k]) and r[k] > 0 for k in ("learned_loss", "uniform_loss")) and len(r["member_loss"]) == 2
ok = ok and abs(c["training"]["val_learned_loss"] - r["learned_loss"]) < 1e-5 and len(c["members"]) == 2
sys.exit(0 if ok else 1)
PYEOF
expect 0 "eval learned" '"ensemble":"learned"' "$ALLOY" eval --model "$T/a" "$T/b" --data "$T/dmix" --ensemble learned \
  --combiner "$T/c" --seq 32 --quiet
$PY - "$T/train.json" "$T/out" <<'PYEOF' && ok "eval agrees with training's held-out score" || nok "eval agrees with training's held-out score"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
sys.exit(0 if abs(a["learned_loss"] - b["loss"]) < 1e-4 * a["learned_loss"] else 1)
PYEOF
expect 1 "members swapped" "ensemble member 0 (.* is not the combiner's member 0|has other weights)" "$ALLOY" eval --model "$T/b" "$T/a" --data "$T/dmix" \
  --ensemble learned --combiner "$T/c" --seq 32
expect 1 "not a combiner" "not a combiner folder" "$ALLOY" eval --model "$T/a" "$T/b" --data "$T/dmix" --ensemble learned \
  --combiner "$T/a" --seq 32

# ---- distillation from the learned ensemble, with hidden-state matching ----
D=(--data "$T/dmix" --student tiny-gpt2 --batch 2 --seq 32 --eval-every 0 --eval-batches 1 --ckpt-every 2 --threads 1)
expect 0 "distill from the learned ensemble" "held-out CE" "$ALLOY" distill --teacher "$T/a" --teacher "$T/b" \
  --combiner "$T/c" --hidden-weight 0.05 --out "$T/d" --steps 2 "${D[@]}"
[ -s "$(ck "$T/d")/distill_projection.safetensors" ] && ok "checkpoint holds the projection" || nok "checkpoint holds the projection"
expect 0 "distill resumes" "held-out CE" "$ALLOY" distill --resume "$T/d" --steps 4 --threads 1
grep -q 'hidden_weight' "$(ck "$T/d")/trainer_state.json" && ok "the run records hidden_weight" || nok "the run records hidden_weight"
expect 1 "distill with the wrong teachers" "is not the combiner's member|other weights" "$ALLOY" distill --teacher "$T/b" \
  --teacher "$T/a" --combiner "$T/c" --out "$T/e" --steps 1 "${D[@]}"
expect 2 "negative hidden weight" "--hidden-weight must be >= 0" "$ALLOY" distill --teacher "$T/a" --hidden-weight -1 \
  --out "$T/e" --steps 1 "${D[@]}"
