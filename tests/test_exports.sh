#!/usr/bin/env bash
# liballoy.so exports the public API and nothing else: every symbol it defines for other
# programs is named alloy_* (the library is built with -fvisibility=hidden; its headers declare
# the API between ALLOY_BEGIN_DECLS and ALLOY_END_DECLS), and the names a C program needs from
# each layer are there.
set -u
. "$(dirname "$0")/cli_lib.sh"
SO="$ROOT/${ALLOY_BUILD:-build}/liballoy.so"
if ! command -v nm >/dev/null; then echo "ok - exports # SKIP tool: nm (binutils) is not installed"; exit 0; fi
[ -f "$SO" ] || { nok "no $SO"; exit 1; }
nm -D --defined-only "$SO" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort -u >"$T/exports"
others=$(grep -v '^alloy_' "$T/exports" | grep -v '^_' | head -20 | tr '\n' ' ')
[ -z "$others" ] && ok "every exported symbol is alloy_* ($(wc -l <"$T/exports") of them)" || nok "exported without the prefix: $others"
for f in alloy_run_execute alloy_train_run alloy_align_run alloy_ppo_run alloy_options_save alloy_checkpoint_open \
         alloy_model_forward_ex alloy_engine_create alloy_tokenizer_load alloy_gguf_open alloy_merge_run; do
  grep -qx "$f" "$T/exports" && ok "exports $f" || nok "does not export $f"
done
# a C program linked against the shared library alone finds the API
cat >"$T/prog.c" <<'C'
#include <alloy/alloy.h>
#include <stdio.h>
int main(void) {
    alloy_train_options o = alloy_train_defaults();
    const alloy_schema *s = alloy_train_schema();
    printf("%d options, steps %lld\n", s->n, (long long)o.steps);
    return 0;
}
C
mkdir -p "$T/lib" && cp "$SO" "$T/lib/liballoy.so.0" && ln -s liballoy.so.0 "$T/lib/liballoy.so"
san=""; [ -n "${ALLOY_ASAN:-}" ] && san="-fsanitize=address,undefined" # the library was built with them
if cc -std=c11 $san -I"$ROOT/include" $(pkg-config --cflags libcjson 2>/dev/null) "$T/prog.c" -L"$T/lib" -lalloy -o "$T/prog" 2>"$T/err" &&
   LD_LIBRARY_PATH="$T/lib" "$T/prog" >"$T/out" 2>>"$T/err" && grep -q "options, steps 1000" "$T/out"; then
  ok "a C program links liballoy.so and calls it"
else
  nok "a C program against liballoy.so: $(head -c 300 "$T/err")"
fi
