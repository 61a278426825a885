#!/usr/bin/env bash
# Two labs, one model: the fusion experiment of docs/fusion.md.
#
# A base model is pretrained on a mix of two real corpora (C source code and children's
# stories); two "labs" each continue it on their own domain; the specialists are then fused by
# a linear merge, TIES, a logit ensemble, a Branch-Train-MiX mixture of experts (router tuned,
# experts frozen) and by distilling the ensemble into a student half the base's size. Every
# model is scored by held-out perplexity on both domains; results.md gets the table.
#
#     examples/two-labs/run.sh [WORK_DIR]        (default: runs/two-labs)
#
# Needs ../shared/data (the corpora; see its MANIFEST) or CODE=... STORIES=... pointing at
# text files, python3 for the table, and about 40 minutes on two cores. STEPS_SCALE=0.1 makes a
# quick smoke run of the same pipeline.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
alloy=${ALLOY:-$root/build/alloy}
work=${1:-runs/two-labs}
data=${DATA:-$root/../shared/data}
code_txt=${CODE:-$data/code/c_code_stb_lua.txt}
stories_txt=${STORIES:-$data/stories/tinystories_train_2MB.txt}
scale=${STEPS_SCALE:-1}
threads=${THREADS:-$(nproc)}
seed=${SEED:-1337}

for f in "$code_txt" "$stories_txt"; do
    [[ -r $f ]] || { echo "two-labs: cannot read $f (set DATA, CODE or STORIES)" >&2; exit 1; }
done
[[ -x $alloy ]] || make -C "$root" -s
mkdir -p "$work"
steps() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s + 0.5); print (v < 2 ? 2 : v) }'; }
log() { printf '\n== %s\n' "$*" >&2; }
common=(--seq 128 --batch 16 --threads "$threads" --seed "$seed" --quiet)

# ---- data: one tokenizer for both labs, shards per domain and mixed ----
if [[ ! -f $work/tokenizer.json ]]; then
    log "tokenizer: byte-level BPE, 4096 tokens, on both corpora"
    "$alloy" tokenizer train --input "$code_txt" "$stories_txt" --vocab-size 4096 --out "$work/tokenizer.json" --quiet
fi
prep() { # NAME FLAGS...: token shards
    local name=$1; shift
    [[ -f $work/data-$name/manifest.json ]] && return
    rm -rf "$work/data-$name"
    "$alloy" prepare "$@" --tokenizer "$work/tokenizer.json" --val-fraction 0.05 --seed "$seed" \
        --out "$work/data-$name" --quiet
}
# Documents: a source file of the code corpus (each starts with a "/* ==== file:" line), a story
# of the other. Both are cut at <|endoftext|> so that the same documents are held out of the
# mix as of each domain (held-out documents are chosen by a hash of their text).
log "shards: code, stories, and the mix"
awk 'NR > 1 && /^\/\* ==== file: / { print "<|endoftext|>" } { print }' "$code_txt" > "$work/code.txt"
prep code --input code="$work/code.txt" --separator '<|endoftext|>'
prep stories --input stories="$stories_txt" --separator '<|endoftext|>'
prep mix --input code="$work/code.txt" --input stories="$stories_txt" --separator '<|endoftext|>' --mix code:1,stories:1

ckpt() { echo "$work/$1/$(cat "$work/$1/latest")"; } # a run's last checkpoint
train() { # OUT [flags]: a run unless it finished already
    local out=$1; shift
    [[ -f $work/$out/latest ]] && return
    rm -rf "${work:?}/$out"
    "$alloy" train --out "$work/$out" --eval-every 0 --ckpt-every 0 "${common[@]}" "$@"
}
log "base: small-llama on the mix"
train base --data "$work/data-mix" --preset small-llama --steps "$(steps 800)" --lr 2e-3 --warmup 50
log "lab A: the base's MLPs continued on code; lab B: on stories (attention and embeddings kept)"
# Each lab tunes its MLPs alone: what BTX makes experts of. Labs that tuned everything left the
# MoE attention that neither expert was trained under: with it, even oracle routing was 9% worse
# on code than the lab (see docs/fusion.md). At lr 1e-3 (all tensors) the labs drift so far from
# the base that no merge of them beats it.
train lab-code --data "$work/data-code" --init "$(ckpt base)" --train-only mlp --steps "$(steps 300)" --lr 3e-4 --warmup 20
train lab-stories --data "$work/data-stories" --init "$(ckpt base)" --train-only mlp --steps "$(steps 300)" --lr 3e-4 --warmup 20

# ---- fusions ----
merge() { # OUT METHOD: merge the two labs (TIES: task vectors from the base, scaled by lambda 0.6)
    local out=$1 method=$2
    [[ -f $work/$out/config.json ]] && return
    {
        echo "merge_method: $method"
        echo "base_model: $(ckpt base)"
        [[ $method == ties ]] && printf 'parameters:\n  lambda: 0.6\n'
        echo "models:"
        for lab in lab-code lab-stories; do
            echo "  - model: $(ckpt $lab)"
            echo "    parameters:"
            echo "      weight: 0.5"
            [[ $method == ties ]] && echo "      density: 0.5"
        done
    } > "$work/$out.yaml"
    "$alloy" merge --config "$work/$out.yaml" --out "$work/$out" --quiet
}
log "linear merge and TIES of the two labs"
merge merge-linear linear
merge merge-ties ties

log "BTX: the labs' MLPs as the experts of each layer (top-2), attention and embeddings averaged;"
log "     each layer's router is fitted as a classifier of the domain of 128 passages of each"
log "     (the MoE's own hidden states), then tuned on the mix (experts and everything else frozen)"
prompts() { # FILE N LEN: N passages of LEN characters of each domain, at evenly spaced offsets
    local f=$1 n=$2 len=$3 dom src size off i
    : > "$f.tmp"
    for dom in 0 1; do
        src=$work/code.txt
        [[ $dom == 1 ]] && src=$stories_txt
        size=$(stat -c %s "$src")
        for ((i = 0; i < n; i++)); do
            off=$(((size - 2 * len) * i / n))
            printf '%s\t%s\n' "$dom" "$(tail -c +$((off + 1)) "$src" | head -c "$len" | tr '\n\t\r' '   ' |
                iconv -c -f utf-8 -t utf-8 2>/dev/null || true)" >> "$f.tmp"
        done
    done
    mv "$f.tmp" "$f"
}
if [[ ! -f $work/moe/config.json ]]; then
    prompts "$work/moe-prompts.txt" 128 400
    "$alloy" moe --experts "$(ckpt lab-code)" "$(ckpt lab-stories)" --top-k 2 --router classifier \
        --prompts "$work/moe-prompts.txt" --seed "$seed" --out "$work/moe" --threads "$threads" > /dev/null
fi
# At lr 1e-3 the tuning undoes part of the fit (code 1.023x -> 1.032x of lab-code); at 1e-4 it
# refines it (see docs/fusion.md).
train moe-tuned --data "$work/data-mix" --init "$work/moe" --train-only router --steps "$(steps 200)" \
    --lr 1e-4 --warmup 10 --weight-decay 0
log "     and, for comparison, the whole mixture tuned (BTX's MoE fine-tuning) for as many steps"
train moe-all --data "$work/data-mix" --init "$work/moe" --train-only all --steps "$(steps 200)" \
    --lr 1e-4 --warmup 10

log "student: half the base's parameters, distilled from the labs' ensemble on the mix"
cat > "$work/student.json" <<JSON
{"model_type": "llama", "vocab_size": 4096, "max_position_embeddings": 128, "hidden_size": 192,
 "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 6,
 "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "rope_theta": 10000,
 "tie_word_embeddings": true}
JSON
if [[ ! -f $work/student/latest ]]; then
    rm -rf "$work/student"
    "$alloy" distill --teacher "$(ckpt lab-code)" --teacher "$(ckpt lab-stories)" --config "$work/student.json" \
        --data "$work/data-mix" --out "$work/student" --steps "$(steps 1200)" --lr 3e-3 --warmup 50 \
        --temperature 1 --alpha 0.2 --eval-every 0 --ckpt-every 0 "${common[@]}"
fi

# ---- held-out perplexity of every model on both domains ----
log "held-out perplexity on code and on stories"
results=$work/results.jsonl
: > "$results.tmp"
score() { # NAME MODEL_ARGS...
    local name=$1; shift
    local line="{\"model\": \"$name\""
    for dom in code stories; do
        local r
        r=$("$alloy" eval "$@" --data "$work/data-$dom" --seq 128 --batch 8 --threads "$threads" --quiet)
        line+=", \"$dom\": $r"
    done
    echo "$line}" >> "$results.tmp"
    echo "  $name done" >&2
}
score base --model "$(ckpt base)"
score lab-code --model "$(ckpt lab-code)"
score lab-stories --model "$(ckpt lab-stories)"
score merge-linear --model "$work/merge-linear"
score merge-ties --model "$work/merge-ties"
score ensemble --model "$(ckpt lab-code)" "$(ckpt lab-stories)" --ensemble probs
[[ -f $work/moe-tuned/latest ]] && score moe --model "$(ckpt moe-tuned)"
[[ -f $work/moe-all/latest ]] && score moe-all --model "$(ckpt moe-all)"
score student --model "$(ckpt student)"
mv "$results.tmp" "$results"
python3 "$here/report.py" "$results" > "$work/results.md"
cat "$work/results.md"
