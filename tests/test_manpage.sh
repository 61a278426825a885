#!/usr/bin/env bash
# The man page, alloy.1, made by scripts/manpage.sh from the command's --help texts: it renders
# with man (man-db) without a warning, has NAME, SYNOPSIS, DESCRIPTION, a subsection for every
# verb that alloy --help lists, and every flag that a verb's --help names appears, as it is
# typed, in that verb's subsection of the rendered page. make's build/alloy.1 is the script's
# output for the command it built; a command that fails gives no page.
set -u
. "$(dirname "$0")/cli_lib.sh"

if command -v man >/dev/null 2>&1; then
  render() { MANWIDTH=120 LC_ALL=C.UTF-8 man -l "$1"; }
elif command -v groff >/dev/null 2>&1; then
  render() { preconv "$1" | LC_ALL=C.UTF-8 groff -man -Tutf8 -P-cbou; }
else
  skip "man page renders" "oracle: neither man (man-db) nor groff is installed (scripts/install-deps.sh --test)"
  exit 0
fi

bash "$ROOT/scripts/manpage.sh" "$ALLOY" "$T/alloy.1" 2>"$T/err" && [ ! -s "$T/err" ] && grep -q '^\.TH ALLOY 1' "$T/alloy.1" \
  && ok "manpage.sh writes the page" || { nok "manpage.sh: $(head -c 300 "$T/err")"; exit 1; }
render "$T/alloy.1" >"$T/page" 2>"$T/warn"
if [ $? -eq 0 ] && [ ! -s "$T/warn" ] && [ -s "$T/page" ]; then ok "man -l renders it"; else nok "rendering: $(head -c 300 "$T/warn")"; fi
if command -v groff >/dev/null 2>&1; then
  preconv "$T/alloy.1" | groff -man -Tutf8 -ww -z 2>"$T/warn"
  [ ! -s "$T/warn" ] && ok "groff -ww: no warnings" || nok "groff -ww: $(head -c 300 "$T/warn")"
fi
missing=""
for section in NAME SYNOPSIS DESCRIPTION VERBS "EXIT STATUS"; do grep -qx "$section" "$T/page" || missing+=" $section"; done
[ -z "$missing" ] && ok "sections NAME, SYNOPSIS, DESCRIPTION, VERBS, EXIT STATUS" || nok "sections missing:$missing"

verbs=$("$ALLOY" --help | sed -nE 's/^  ([a-z]+) +[^ -].*/\1/p')
n=$(wc -w <<<"$verbs")
[ "$n" -ge 20 ] && grep -qw sft <<<"$verbs" && ok "alloy --help lists $n verbs" || nok "verbs read from alloy --help: $verbs"
# one verb's subsection of the rendered page: from its "alloy VERB" heading to the next heading
subsection() { awk -v h="   alloy $1" '$0 == h { on = 1; next } /^(   alloy [a-z]+|[A-Z][A-Z ]*)$/ { on = 0 } on'; }
bad=""; flags=0
for v in $verbs; do
  subsection "$v" <"$T/page" >"$T/sub"
  [ -s "$T/sub" ] || { bad+=" $v (no subsection)"; continue; }
  for f in $("$ALLOY" "$v" --help | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u); do
    flags=$((flags + 1))
    grep -qF -- "$f" "$T/sub" || bad+=" $v $f"
  done
  grep -qF -- "$("$ALLOY" "$v" --help | head -1)" "$T/sub" || bad+=" $v (usage line)"
  grep -qE "^       alloy $v " <(sed -n '/^SYNOPSIS$/,/^DESCRIPTION$/p' "$T/page") || bad+=" $v (not in SYNOPSIS)"
  grep -qE "^       $v +[^ ]" <(sed -n '/^DESCRIPTION$/,/^VERBS$/p' "$T/page") || bad+=" $v (not in DESCRIPTION)"
done
[ -z "$bad" ] && ok "every verb has its subsection, usage and all $flags flags its --help names" || nok "missing from the page:$bad"

if [ -f "$ROOT/${ALLOY_BUILD:-build}/alloy.1" ]; then
  cmp -s "$T/alloy.1" "$ROOT/${ALLOY_BUILD:-build}/alloy.1" && ok "make's alloy.1 is current" \
    || nok "${ALLOY_BUILD:-build}/alloy.1 differs from scripts/manpage.sh's page for $ALLOY"
fi
expect 1 "a failing command gives no page" "manpage.sh: /bin/false --help failed" bash "$ROOT/scripts/manpage.sh" /bin/false "$T/none.1"
[ ! -e "$T/none.1" ] && ok "nothing written on failure" || nok "$T/none.1 written by a failed run"
