#!/usr/bin/env bash
# The test command (README): install what the tests need, then run the whole suite on two workers (see
# tests/conftest.py for which tests go where). Usage: scripts/test.sh [pytest arguments]; -n 0 runs it serially.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# pymatting compiles its numba kernels when first imported (about 30 s of one core) and caches them beside the
# package: pay that once here, as part of installing it, rather than in the first tests (and app) to import it.
python3 -c "import pymatting"

# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and apt-get is not available: browser tests will be skipped" >&2
  fi
fi

export TF_CPP_MIN_LOG_LEVEL=2 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
exec python3 -m pytest -q -n 2 --dist loadgroup "$@"
