#!/usr/bin/env bash
# Installs the Debian 12 packages alloy needs to build, run and test.
# A no-op when everything is present. Needs root (or sudo) only when something is missing.
#
#   scripts/install-deps.sh          build + run dependencies (make, make demo)
#   scripts/install-deps.sh --test   also the test oracles: PyTorch from Debian, man-db, js-tiktoken from npm
set -euo pipefail

pkgs=(
  build-essential pkg-config
  libopenblas-openmp-dev    # GEMM (OpenMP flavour, so BLAS and our kernels share one thread pool)
  libcjson-dev              # JSON (config.json, safetensors headers, metrics)
  libpcre2-dev              # pre-tokenizer regex
  libutf8proc-dev           # Unicode normalisation
  libyaml-dev               # merge recipes (alloy merge)
  zlib1g-dev libzstd-dev    # gzip and zstd data files (alloy prepare, sft, reward, ...)
  jargon-text bible-kjv     # public-domain text for the demo
)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(python3 python3-torch python3-numpy python3-yaml)   # PyTorch twins and NumPy references in tests/reference
  pkgs+=(man-db)            # renders the man page in tests/test_manpage.sh (man -l; brings groff-base)
fi

if [ "${1:-}" = "--test" ] && ! command -v node >/dev/null 2>&1; then
  pkgs+=(nodejs npm)   # Debian's, when the machine has no Node.js of its own
fi

# npm oracles for the tests (js-tiktoken, @huggingface/gguf), pinned by tests/js/package-lock.json
npm_oracles() {
  [ "${1:-}" = "--test" ] || return 0
  local here; here=$(cd "$(dirname "$0")/.." && pwd)
  [ -d "$here/tests/js/node_modules/js-tiktoken" ] && [ -d "$here/tests/js/node_modules/@huggingface/gguf" ] && return 0
  echo "install-deps: npm ci in tests/js" >&2
  (cd "$here/tests/js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_oracles "${1:-}"
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "install-deps: missing packages (${missing[*]}); run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_oracles "${1:-}"
