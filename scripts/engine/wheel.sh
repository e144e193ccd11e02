#!/usr/bin/env bash
# Build (once) llama-cpp-python 0.3.36 with warmlm's patch to llama.cpp's CPU flash attention
# (scripts/engine/README.md) and print the wheel's path. The wheel is kept in the cache dir,
# keyed by the patch's hash, so only the first install on a machine compiles (~5 min).
# usage: scripts/engine/wheel.sh PYTHON
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:?usage: wheel.sh PYTHON}"
version=0.3.36
patch_file="$here/llama-cpp-python-$version-warmlm.patch"
key="$(sha256sum "$patch_file" | cut -c1-12)"
cache="${WARMLM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warmlm}/engine/$key"
wheel="$(ls "$cache"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)"
if [ -n "$wheel" ]; then
  echo "$wheel"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "warmlm: compiling llama-cpp-python $version with warmlm's patch (~5 min, once) ..." >&2
"$py" -m pip download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
patch --quiet -p1 -d "$work/llama_cpp_python-$version" < "$patch_file"
mkdir -p "$cache"
"$py" -m pip wheel --quiet --no-deps -w "$work/dist" "$work/llama_cpp_python-$version" >&2
mv "$work"/dist/llama_cpp_python-*.whl "$cache/"
ls "$cache"/llama_cpp_python-*.whl | head -n1
