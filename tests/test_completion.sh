#!/usr/bin/env bash
# bash completion (scripts/alloy.bash-completion), driven as bash drives it: COMP_WORDS and
# COMP_CWORD set, the completion function called, COMPREPLY checked. Verbs after alloy, the
# sub-verbs of tokenizer, a verb's flags from its --help (and not another verb's that the help
# mentions), file names for a flag's value, and the function bound to the name alloy.
set -u
. "$(dirname "$0")/cli_lib.sh"
. "$ROOT/scripts/alloy.bash-completion"

# complete WORD... : COMPREPLY for the command line WORD... with the cursor on the last word,
# one line, sorted
complete_line() {
  COMP_WORDS=("$ALLOY" "$@"); COMP_CWORD=$#; COMPREPLY=()
  _alloy
  printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}
check() {
  local name=$1 want=$2; shift 2
  local got; got=$(complete_line "$@")
  [ "$got" = "$want" ] && ok "$name" || nok "$name: alloy $* -> '$got', expected '$want'"
}

complete -p alloy 2>/dev/null | grep -q -- '-F _alloy alloy$' && ok "bound to alloy" || nok "complete -p alloy: $(complete -p alloy 2>&1)"
check "verb prefix" "train" tr
check "verb prefix with three matches" "sample score sft" s
all=$(complete_line "")
[ "$all" = "$("$ALLOY" --help | sed -nE 's/^  ([a-z]+) +[^ -].*/\1/p' | sort | tr '\n' ' ' | sed 's/ $//')" ] \
  && [ "$(wc -w <<<"$all")" -ge 20 ] && ok "every verb of alloy --help" || nok "verbs: '$all'"
check "--help and --version" "--version" --v
check "tokenizer's sub-verbs" "decode encode info train" tokenizer ""
check "flag prefix" "--steps" train --ste
check "flag prefix with two matches" "--eval-batches --eval-every" train --eval-
check "a flag of generate's sampling chain" "--repeat-last-n --repeat-penalty" generate --repeat
check "flags after other words" "--weights" generate --model run --we
check "--help for every verb" "--help" inspect --h
# ensemble's help shows "alloy distill --teacher ..." and grow's "alloy train --init": not theirs
check "not a flag of an example of another verb" "" ensemble train --tea
check "not a flag of a cross-reference" "" grow --ini
bad=""
for v in $all; do  # a verb whose help names flags completes some besides --help
  "$ALLOY" "$v" --help | grep -q -- '--[a-z]' || continue
  [ "$(complete_line "$v" -- | wc -w)" -ge 2 ] || bad+=" $v"
done
[ -z "$bad" ] && ok "every verb with flags completes them" || nok "no flags completed for:$bad"

mkdir -p "$T/files/data-a" && touch "$T/files/data.txt" "$T/files/other"
check "file names for a flag's value" "$T/files/data-a $T/files/data.txt" train --data "$T/files/da"
check "file names for an input" "$T/files/other" inspect "$T/files/o"
