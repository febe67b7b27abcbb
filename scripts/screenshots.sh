#!/usr/bin/env bash
# `make screenshots`: the browser tests that take the operator's guide's screenshots, run on
# the real stack (scripts/test.sh) with VDI_SCREENSHOT_DIR=docs/screenshots. Every test file
# that saves screenshots is run: those using tests/support/screenshots.py, and any other that
# reads VDI_SCREENSHOT_DIR itself (the admin dashboard's browser test).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

export VDI_SCREENSHOT_DIR="$ROOT/docs/screenshots"
mkdir -p "$VDI_SCREENSHOT_DIR"
mapfile -t tests < <(grep -rlE --include='test_*.py' 'save_screenshot|VDI_SCREENSHOT_DIR' tests | sort)
if [ "${#tests[@]}" -eq 0 ]; then
  echo "no browser test takes screenshots" >&2
  exit 1
fi
say "taking screenshots into docs/screenshots/ with: ${tests[*]}"
"$ROOT/scripts/test.sh" "${tests[@]}" -q "$@"
ls -l "$VDI_SCREENSHOT_DIR"
