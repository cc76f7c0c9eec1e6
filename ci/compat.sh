#!/usr/bin/env bash
# The TransformerLens 3.x compatibility suite, in an environment of its own:
# transformer-lens 3.9.0 (the last release with HookedTransformer), pinned by
# ci/requirements-tl3.txt, and tl_glasses from this working tree.
#
#   bash ci/compat.sh            # fresh environment (removes and recreates $TL3_VENV)
#   bash ci/compat.sh --reuse    # keep an existing environment (local iteration)
#
# Fails when a test fails, when no test ran, or when any test was skipped.
# Environment: TL3_VENV (default .venv-tl3, ignored by git), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${TL3_VENV:-.venv-tl3}
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TL_GLASSES_COMPAT=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1

reuse=0
[ "${1:-}" = "--reuse" ] && reuse=1
start=$(date +%s)

if [ "$reuse" = 0 ] || [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    # torch first: the CPU build of this machine's disk; nothing later may replace it.
    # The requirements file is a complete lock: --no-deps skips resolving it again,
    # --no-compile skips byte-compiling ~100 packages (only what is imported gets compiled).
    "$VENV/bin/pip" install -q --no-compile torch==2.13.0
    "$VENV/bin/pip" install -q --no-compile --no-deps -r ci/requirements-tl3.txt
fi
"$VENV/bin/pip" install -q --no-deps -e .
# the lock is consistent (tl-glasses itself declares transformer-lens>=4: expected)
problems=$("$VENV/bin/pip" check 2>&1 | grep -v "^tl-glasses" || true)
if [ -n "$problems" ]; then
    echo "$problems"; echo "ci/requirements-tl3.txt is inconsistent (above)"; exit 1
fi
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
tl, torch = version("transformer-lens"), version("torch")
assert tl.startswith("3."), f"compat env has transformer-lens {tl}, expected 3.x"
assert torch.startswith("2.13.0"), f"compat env has torch {torch}, expected 2.13.0"
from transformer_lens import HookedTransformer  # noqa: F401
import tl_glasses
print(f"compat env: transformer-lens {tl}, torch {torch}, tl_glasses {tl_glasses.__version__}")
EOF
echo "compat env ready in $(( $(date +%s) - start )) s"

report=$(mktemp -t tl3-junit-XXXXXX.xml)
trap 'rm -f "$report"' EXIT
set +e
"$VENV/bin/python" -m pytest tests/compat -q -rs -p no:cacheprovider --junitxml="$report"
rc=$?
set -e
[ "$rc" = 0 ] || { echo "compat suite FAILED (pytest exit $rc)"; exit "$rc"; }
"$VENV/bin/python" - "$report" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = root if root.tag == "testsuite" else root.find("testsuite")
n, skipped = int(s.get("tests", 0)), int(s.get("skipped", 0))
bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
ran = n - skipped
if ran == 0 or skipped or bad:
    sys.exit(f"compat suite: {ran} ran, {skipped} skipped, {bad} failed: not a pass")
print(f"compat suite: {ran} passed under transformer-lens 3.9")
EOF
echo "ci/compat.sh done in $(( $(date +%s) - start )) s"
