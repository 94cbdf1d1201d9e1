#!/usr/bin/env bash
# Feast for bench/feast/compare.py only: its own virtual environment, .local/venvs/feast, built the
# first time the comparison runs (or when FEAST_SPEC changes). Nothing of Feast is committed or
# imported by the project; the comparison drives its command line and its feature server.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
# The newest Feast PyPI serves here (the issue measured 0.67), with its Redis online store.
FEAST_SPEC=${FEAST_SPEC:-"feast[redis]==0.67.0"}
venv=.local/venvs/feast
mkdir -p .local/venvs
if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$FEAST_SPEC" ] && "$venv/bin/feast" version >/dev/null 2>&1; then
  exit 0
fi
echo "[feast] building $venv with $FEAST_SPEC (a few minutes, once)" >&2
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# shellcheck disable=SC2086
"$venv/bin/pip" install -q $FEAST_SPEC
echo "$FEAST_SPEC" > "$venv/.stamp"
