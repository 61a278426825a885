#!/usr/bin/env bash
# make install and make uninstall, into a folder of the test's own (PREFIX, and DESTDIR as a
# packager uses it): the command, the library, the headers, alloy.pc naming the PREFIX installed
# to (not the one make was first run with), the man page and the bash completion; a C program
# built with `pkg-config --cflags --libs alloy` links and runs; uninstall removes every file.
set -u
. "$(dirname "$0")/cli_lib.sh"
BUILD_DIR=${ALLOY_BUILD:-build}
# a make of our own, not a job of the make that may be running the tests
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory -C "$ROOT" BUILD="$BUILD_DIR" "$@"; }
if ! command -v pkg-config >/dev/null || ! command -v cc >/dev/null; then
  skip "install" "oracle: pkg-config and cc are needed (scripts/install-deps.sh)"; exit 0
fi

P="$T/prefix"
if mk install PREFIX="$P" >"$T/out" 2>&1; then ok "make install PREFIX=..."; else nok "make install: $(tail -c 400 "$T/out")"; exit 1; fi
missing=""
for f in bin/alloy lib/liballoy.a lib/liballoy.so lib/liballoy.so.0 lib/pkgconfig/alloy.pc include/alloy/alloy.h \
         include/alloy/train.h share/man/man1/alloy.1 share/bash-completion/completions/alloy; do
  [ -e "$P/$f" ] || missing+=" $f"
done
[ -z "$missing" ] && ok "installs the command, library, headers, alloy.pc, man page, completion" || nok "not installed:$missing"
"$P/bin/alloy" --version | grep -q '^alloy [0-9]' && ok "the installed command runs" || nok "$P/bin/alloy --version"
grep -qx "prefix=$P" "$P/lib/pkgconfig/alloy.pc" && ok "alloy.pc names the PREFIX installed to" \
  || nok "alloy.pc: $(head -1 "$P/lib/pkgconfig/alloy.pc")"
cat >"$T/prog.c" <<'C'
#include <alloy/alloy.h>
#include <stdio.h>
int main(void) {
    alloy_train_options o = alloy_train_defaults();
    printf("steps %lld\n", (long long)o.steps);
    return 0;
}
C
san=""; [ -n "${ALLOY_ASAN:-}" ] && san="-fsanitize=address,undefined" # the library was built with them
if flags=$(PKG_CONFIG_PATH="$P/lib/pkgconfig" pkg-config --cflags --libs alloy 2>"$T/err") &&
   cc -std=c11 $san "$T/prog.c" $flags -o "$T/prog" 2>>"$T/err" &&
   LD_LIBRARY_PATH="$P/lib" "$T/prog" >"$T/out" 2>>"$T/err" && grep -q "steps 1000" "$T/out"; then
  ok "a C program links with pkg-config --cflags --libs alloy and runs"
else
  nok "a C program with pkg-config: $(head -c 300 "$T/err")"
fi
MANPATH="$P/share/man" man -w alloy 2>/dev/null | grep -q "$P/share/man/man1/alloy.1" && ok "man finds the installed page" \
  || { command -v man >/dev/null && nok "MANPATH=$P/share/man man -w alloy" || skip "man finds the page" "oracle: man-db is not installed"; }
( . "$P/share/bash-completion/completions/alloy" && COMP_WORDS=("$P/bin/alloy" gen) && COMP_CWORD=1 && _alloy &&
  [ "${COMPREPLY[*]}" = generate ] ) && ok "the installed completion completes" || nok "the installed completion"
mk uninstall PREFIX="$P" >"$T/out" 2>&1 || nok "make uninstall: $(tail -c 300 "$T/out")"
left=$(find "$P" ! -type d | head -5)
[ -z "$left" ] && ok "make uninstall removes every file" || nok "left after uninstall: $left"

# a packager's staged install: DESTDIR in front of every path, PREFIX in alloy.pc
mk install DESTDIR="$T/stage" PREFIX=/usr >"$T/out" 2>&1 && [ -x "$T/stage/usr/bin/alloy" ] \
  && [ -f "$T/stage/usr/share/man/man1/alloy.1" ] && grep -qx "prefix=/usr" "$T/stage/usr/lib/pkgconfig/alloy.pc" \
  && ok "DESTDIR stages an install for PREFIX" || nok "make install DESTDIR: $(tail -c 300 "$T/out")"
mk uninstall DESTDIR="$T/stage" PREFIX=/usr >"$T/out" 2>&1 && [ -z "$(find "$T/stage" ! -type d)" ] \
  && ok "make uninstall with DESTDIR" || nok "make uninstall DESTDIR: $(find "$T/stage" ! -type d | head -3)"
