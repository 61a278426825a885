#!/usr/bin/env bash
# docs/getting-started.md stays true: its ```sh blocks are taken out of the file, in order, and
# run one by one, as a reader would type them, in one empty folder with the build's alloy first
# on PATH (each block with bash -e -o pipefail: a command that fails fails its block). One case
# per block, named by its line in the file; the first failing block stops the run and shows
# what it printed. ```text blocks (output shown to the reader) are not run.
#
# The guide is checked for being right, not for speed: OpenMP gets one thread and passive
# waiting, so that other work on a shared machine cannot make it crawl.
set -u
. "$(dirname "$0")/cli_lib.sh"
GUIDE="$ROOT/docs/getting-started.md"
[ -f "$GUIDE" ] || { nok "no $GUIDE"; exit 1; }
if ! command -v bible >/dev/null || [ ! -f /usr/share/doc/jargon-text/jargon.txt.gz ]; then
  skip "getting-started.md" "data: the guide's text comes from Debian's jargon-text and bible-kjv (scripts/install-deps.sh)"
  exit 0
fi

# the blocks: $T/blocks/NNN.sh, each starting with "# LINE" (the line of its opening fence)
mkdir -p "$T/blocks" "$T/work"
awk -v dir="$T/blocks" '
  /^```/ && open { open = 0; close(f); next }
  /^```sh[[:space:]]*$/ { open = 1; n++; f = sprintf("%s/%03d.sh", dir, n); print "# " NR > f; next }
  open { print > f }' "$GUIDE"
n=$(ls "$T/blocks" | wc -l)
[ "$n" -ge 8 ] && ok "the guide has $n sh blocks" || nok "the guide has $n sh blocks, expected at least 8"

bin=$(cd "$(dirname "$ALLOY")" && pwd)
for b in "$T"/blocks/*.sh; do
  line=$(head -1 "$b" | cut -c3-)
  first=$(sed -n '2p' "$b" | cut -c1-60)
  if (cd "$T/work" && PATH="$bin:$PATH" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive bash -e -o pipefail "$b") >"$T/log" 2>&1; then
    ok "getting-started.md:$line: $first"
  else
    nok "getting-started.md:$line: the block failed (exit $?): $first"
    tail -15 "$T/log" | sed 's/^/    /'
    exit 1
  fi
done
