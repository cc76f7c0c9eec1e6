#!/usr/bin/env bash
# Refresh requirements/lock.txt: one command.
#   1. a brand-new environment (.venv-lock) gets the newest releases the ranges in
#      pyproject.toml allow (TL_GLASSES_LOCK=none bash scripts/setup.sh);
#   2. the whole suite runs in it (scripts/test.sh: tests, notebooks, docs build, report
#      in Chromium, the TransformerLens 3.9 compatibility suite);
#   3. only if everything passed, its `pip freeze` becomes requirements/lock.txt.
# To move past an upper bound in pyproject.toml, raise the bound first (ci/latest.sh
# shows whether the newest releases pass the equality tests), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lock
rm -rf "$VENV"
TL_GLASSES_VENV=$VENV TL_GLASSES_LOCK=none bash scripts/setup.sh
cand=$(mktemp -t lock-XXXXXX.txt)
{
  echo "# The tested environment: exact versions of everything scripts/setup.sh installs by default."
  echo "# Passed to pip as a constraints file (-c). Refresh with: bash scripts/lock.sh (see docs/install.md)."
  echo "# torch is the CPU build from the local index (X+cpu satisfies ==X)."
  "$VENV/bin/pip" freeze --exclude-editable | grep -v "^tl-glasses" | sed -E 's/^(torch==[^+]+)\+cpu$/\1/'
} >"$cand"
TL_GLASSES_VENV=$VENV TL_GLASSES_LOCK=$cand bash scripts/test.sh
diff -u requirements/lock.txt "$cand" || true
cp "$cand" requirements/lock.txt
rm -f "$cand"
echo "requirements/lock.txt refreshed: the suite passed on exactly these versions"
