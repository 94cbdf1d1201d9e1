#!/usr/bin/env bash
# Installs everything the project runs with, idempotently:
#   .venv                 the package (editable) with its dev extras
#   .local/venvs/bq       the BigQuery emulator (bqemulator + DuckDB's spatial extension, offline)
#   .local/venvs/wf       workflows-emulator (its pins conflict with bqemulator's)
# Each virtual environment is rebuilt only when missing or when its inputs changed. They are independent,
# so they are built side by side (pip spends most of its time waiting on downloads and unpacking); the
# script fails if any of them failed, after all have finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
mkdir -p .local/venvs

stamp_ok() { [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]; }

pids=()
main_inputs=$(sha256sum pyproject.toml | cut -c1-16)
if [ -L .venv ]; then
  # A worktree borrowing another checkout's environment: reinstalling here would point that
  # environment's editable install at this checkout, under everyone else using it.
  echo "[install] .venv is a link to $(readlink .venv): left as it is (run with PYTHONPATH=$PWD/shared)"
elif ! stamp_ok .venv "$main_inputs"; then
  (
    echo "[install] .venv (feature_store + dev extras)"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$main_inputs" > .venv/.stamp
  ) &
  pids+=($!)
fi

# A venv holding exactly PINS, built in the background: pinned_venv DIR LABEL PINS
pinned_venv() {
  local dir="$1" label="$2" pins="$3"
  stamp_ok "$dir" "$pins" && return 0
  (
    echo "[install] $dir ($label)"
    [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
    # shellcheck disable=SC2086
    "$dir/bin/pip" install -q $pins
    echo "$pins" > "$dir/.stamp"
  ) &
  pids+=($!)
}
pinned_venv .local/venvs/bq "BigQuery emulator" "bqemulator==1.4.* duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy"
# workflows-emulator's pins conflict with bqemulator's: a venv of its own.
pinned_venv .local/venvs/wf "workflows-emulator" "workflows-emulator==1.10.* uvicorn"
# python-hcl2, checkov and protoc (the Terraform checks in tests/infra, make proto) each in a venv of their own.
bash .ci/setup_infra_venvs.sh &
pids+=($!)
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "[install] FAILED: a virtual environment could not be built (its pip output is above)" >&2
  exit 1
fi
echo "[install] done"
