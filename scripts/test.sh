#!/usr/bin/env bash
# The test command: set up (idempotent), then run the whole suite offline.
#   main suite on TransformerLens 4.x (tests/, examples executed as notebooks,
#   docs build, browser test of the report) and the TransformerLens 3.9
#   compatibility suite in a second environment (ci/compat.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
bash scripts/setup.sh
# Headless Chromium for the report's browser test (Debian packages; needs root).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
. "${TL_GLASSES_VENV:-.venv}/bin/activate"
rc=0
python -m pytest -q -p no:cacheprovider "$@" || rc=$?
if [ "$rc" = 5 ]; then echo "no tests were collected: failing"; exit 1; fi
[ "$rc" = 0 ] || exit "$rc"
if [ -f ci/compat.sh ]; then
  bash ci/compat.sh
fi
